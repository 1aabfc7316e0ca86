//! What the plugin does when a container on one of its networks starts (Weave Net's
//! `plugin/net/watcher.go`): with weftDNS on, it registers the container's names for its
//! address on that network — `<Hostname>.<Domainname>` when that is in the DNS domain,
//! `<container name>.<domain>`, and every network alias (in the domain as given, else with the
//! domain added). The names go when the container dies, as for every container. It also gives
//! the container's `ethwe*` interfaces Weave's neighbour settings and sends gratuitous ARPs
//! for their addresses.
//!
//! Beyond Weave Net, a running container connected to one of the networks (`docker network
//! connect [--alias …]`) gets its names for that network the same way, and one disconnected
//! loses the names of the address it had there ([`Registered`] remembers which).

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};

use weft_docker::{ContainerInfo, Docker};

use super::driver::Networks;
use crate::dns;

/// The names to register for container `c` on one network with these aliases.
fn names(c: &ContainerInfo, aliases: &[String], domain: &str) -> Vec<String> {
    let domain = domain.trim_matches('.');
    let in_domain = |n: &str| {
        let n = n.trim_end_matches('.');
        n == domain || n.ends_with(&format!(".{domain}"))
    };
    let mut out = Vec::new();
    if let Some(f) = c.fqdn().filter(|f| in_domain(f)) {
        out.push(f);
    }
    if !c.name.is_empty() {
        out.push(format!("{}.{domain}", c.name));
    }
    for a in aliases {
        if in_domain(a) {
            out.push(a.clone());
        } else if !a.is_empty() {
            out.push(format!("{a}.{domain}"));
        }
    }
    out.sort();
    out.dedup();
    out
}

/// The address under which each container's names were registered on each of our networks
/// (by container ID and network ID), while the container runs.
#[derive(Debug, Clone, Default)]
pub(crate) struct Registered(Arc<Mutex<HashMap<(String, String), Ipv4Addr>>>);

impl Registered {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(String, String), Ipv4Addr>> {
        // A panic while holding the lock leaves a map that is still whole.
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The container died or is gone: its names went with it.
    pub(crate) fn container_gone(&self, container: &str) {
        self.lock().retain(|(c, _), _| c != container);
    }
}

/// The container `container` left the network `network`: the names of the address it had
/// there go.
pub(crate) async fn disconnected(
    container: &str,
    network: &str,
    registered: &Registered,
    dns: Option<&dns::task::Handle>,
) {
    let key = (container.to_string(), network.to_string());
    let Some(ip) = registered.lock().remove(&key) else {
        return;
    };
    if let Some(dns) = dns {
        if let Err(e) = dns.remove(key.0, ip).await {
            tracing::info!("[plugin] removing the names of {container}'s {ip}: {e}");
        }
    }
}

/// For the started container `id` (or, with `only`, the one connected to that network), if
/// it is on one of `networks`: registers its names (with DNS on) and, on a thread of the
/// blocking pool, announces its addresses.
pub(crate) async fn container_started(
    docker: &Docker,
    id: &str,
    only: Option<&str>,
    networks: &Networks,
    registered: &Registered,
    dns: Option<&dns::task::Handle>,
) {
    let c = match docker.inspect(id).await {
        // A container that starts on our networks is connected to them first: its `start`
        // event does the work then, so a `connect` counts only for one already running.
        Ok(Some(c)) if only.is_none() || c.running => c,
        Ok(_) => return,
        Err(e) => {
            tracing::info!("[plugin] inspecting started container {id}: {e}");
            return;
        }
    };
    let mut ours = false;
    for net in &c.networks {
        let Some(ip) = net.ip else { continue };
        if only.is_some_and(|n| n != net.network_id)
            || networks.find(&net.network_id, Some(docker)).await.is_none()
        {
            continue;
        }
        ours = true;
        let Some(dns) = dns else { continue };
        registered
            .lock()
            .insert((c.id.clone(), net.network_id.clone()), ip);
        for name in names(&c, &net.aliases, &dns.domain) {
            if let Err(e) = dns.add(c.id.clone(), ip, name.clone(), false).await {
                tracing::info!("[plugin] registering {name} for {}: {e}", c.id);
            }
        }
    }
    if let (true, Some(pid)) = (ours, c.pid) {
        // Neighbours that knew the address elsewhere learn where it is now.
        tokio::task::spawn_blocking(move || {
            let c = weft_attach::Container::Pid(pid);
            if let Err(e) = weft_attach::announce_interfaces(&c, weft_attach::CONTAINER_IF) {
                tracing::info!("[plugin] announcing the addresses of pid {pid}: {e}");
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_in_the_domain() {
        let c = ContainerInfo {
            id: "0123".into(),
            name: "web".into(),
            pid: Some(1),
            running: true,
            hostname: "x".into(),
            domainname: "weave.local".into(),
            ..ContainerInfo::default()
        };
        assert_eq!(
            names(&c, &["al".into(), "b.weave.local".into()], "weave.local."),
            [
                "al.weave.local",
                "b.weave.local",
                "web.weave.local",
                "x.weave.local"
            ]
        );
        let other = ContainerInfo {
            hostname: "x".into(),
            domainname: "example.com".into(),
            ..c
        };
        assert_eq!(names(&other, &[], "weave.local."), ["web.weave.local"]);
    }
}
