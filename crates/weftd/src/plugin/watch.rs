//! What the plugin does when a container on one of its networks starts (Weave Net's
//! `plugin/net/watcher.go`): with weftDNS on, it registers the container's names for its
//! address on that network — `<Hostname>.<Domainname>` when that is in the DNS domain,
//! `<container name>.<domain>`, and every network alias (in the domain as given, else with the
//! domain added). The names go when the container dies, as for every container. It also gives
//! the container's `ethwe*` interfaces Weave's neighbour settings and sends gratuitous ARPs
//! for their addresses.

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

/// For the started container `id`, if it is on one of `networks`: registers its names (with
/// DNS on) and, on a thread of the blocking pool, announces its addresses.
pub(crate) async fn container_started(
    docker: &Docker,
    id: &str,
    networks: &Networks,
    dns: Option<&dns::task::Handle>,
) {
    let c = match docker.inspect(id).await {
        Ok(Some(c)) => c,
        Ok(None) => return,
        Err(e) => {
            tracing::info!("[plugin] inspecting started container {id}: {e}");
            return;
        }
    };
    let mut ours = false;
    for net in &c.networks {
        let Some(ip) = net.ip else { continue };
        if networks.find(&net.network_id, Some(docker)).await.is_none() {
            continue;
        }
        ours = true;
        let Some(dns) = dns else { continue };
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
