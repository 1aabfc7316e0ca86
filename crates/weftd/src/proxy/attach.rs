//! The proxy's attach (Weave Net's `Proxy.attach`): a running container whose entrypoint
//! starts with `/w/w` and whose `WEAVE_CIDR` the proxy accepts gets its addresses from weft's
//! IPAM (with check-alive), is attached to the weave bridge (bridge MTU, hairpin, multicast
//! route unless `--no-multicast-route`; the route comes last and is what weavewait waits for),
//! and has its `<Hostname>.<Domainname>` registered in weftDNS for each address (unless
//! `--without-dns`; names outside the DNS domain are not registered). Unless
//! `--no-rewrite-hosts`, its `/etc/hosts` (the host file Docker binds there) is rewritten
//! first, Weave Net's way: its weave addresses with its names, `--add-host` entries, localhost.
//!
//! It runs on every Docker `start` event, for a client's held start call, and for the
//! containers already running whenever the router (re)connects to Docker or the proxy starts
//! (see `docker_watch`). Attaches of one container are serialised, and attaching an
//! attached container changes nothing (IPAM gives the container the addresses it holds).
//! When the attach on a `start` event fails, a held start call kills the container through
//! Docker and answers 500; without one (a restart by Docker itself), the container's process
//! is killed, so that its restart policy tries again.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};

use weft_core::ipam::allocator::AllocError;
use weft_docker::{ContainerInfo, Docker};
use weft_types::Ipv4Cidr;

use super::cidr::{weave_cidrs, CidrArg};
use super::rewrite::WAIT_BIN;
use crate::{dns, ipam};

/// Why an attach failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AttachFailure {
    /// Docker did not answer.
    #[error(transparent)]
    Docker(#[from] weft_docker::DockerError),
    /// A bad `WEAVE_CIDR`.
    #[error(transparent)]
    Cidr(#[from] super::cidr::CidrError),
    /// `net:` items without IPAM.
    #[error("IP address allocation must be enabled to use 'net:'")]
    NoIpam,
    /// IPAM refused.
    #[error("{0}")]
    Ipam(String),
    /// The plumbing failed.
    #[error("{0}")]
    Plumbing(String),
    /// The container stopped before it could be attached.
    #[error("container {0} is not running")]
    NotRunning(String),
}

/// Attaches containers for the proxy; cheap to clone.
#[derive(Debug, Clone)]
pub struct Attacher {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    ipam: Option<ipam::task::Handle>,
    dns: Option<dns::task::Handle>,
    no_default_ipalloc: bool,
    multicast: bool,
    with_dns: bool,
    rewrite_hosts: bool,
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// The clients' start calls being held, by the container as each call names it, with how
    /// many name it so.
    start_calls: Mutex<HashMap<String, usize>>,
}

/// A client's start call, held until its container is attached (see [`Attacher::start_call`]).
#[derive(Debug)]
pub struct StartCall {
    inner: Arc<Inner>,
    named: String,
}

impl Drop for StartCall {
    fn drop(&mut self) {
        let mut calls = lock(&self.inner.start_calls);
        if let Some(n) = calls.get_mut(&self.named) {
            *n -= 1;
            if *n == 0 {
                calls.remove(&self.named);
            }
        }
    }
}

/// What a failed attach on a `start` event does to the container.
#[derive(Debug, PartialEq, Eq)]
enum OnFailure {
    /// Nothing: a client's start call is held, and that call kills the container through
    /// Docker and answers the client with the error.
    LeftToStartCall,
    /// Kills its main process, which Docker takes for a crash: its restart policy applies
    /// (`docker kill` would count as a stop by hand and end the restarts).
    KillProcess(u32),
    /// Nothing: it runs no more.
    Nothing,
}

/// What to do with container `c` (as inspected after the failure) when its attach failed.
fn on_failure(c: &ContainerInfo, start_call_held: bool) -> OnFailure {
    if start_call_held {
        return OnFailure::LeftToStartCall;
    }
    match c.pid.filter(|_| c.running) {
        Some(pid) => OnFailure::KillProcess(pid),
        None => OnFailure::Nothing,
    }
}

/// Whether a start call naming the container `named` (in its URL: the ID, a unique prefix of
/// it, or the name) is about container `c`.
fn names(named: &str, c: &ContainerInfo) -> bool {
    let named = named.trim_start_matches('/');
    !named.is_empty() && (c.id.starts_with(named) || c.name == named)
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Attacher {
    /// An attacher with these tasks and flags.
    pub fn new(
        ipam: Option<ipam::task::Handle>,
        dns: Option<dns::task::Handle>,
        no_default_ipalloc: bool,
        multicast: bool,
        with_dns: bool,
        rewrite_hosts: bool,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                ipam,
                dns,
                no_default_ipalloc,
                multicast,
                with_dns,
                rewrite_hosts,
                locks: Mutex::new(HashMap::new()),
                start_calls: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// Whether the proxy handles container `c` (its entrypoint starts with weavewait and its
    /// `WEAVE_CIDR` is accepted); the addresses to give it.
    pub fn cidrs_of(&self, c: &ContainerInfo) -> Result<Option<Vec<CidrArg>>, AttachFailure> {
        if c.entrypoint.first().map(String::as_str) != Some(WAIT_BIN) {
            return Ok(None);
        }
        match weave_cidrs(&c.network_mode, &c.env, self.inner.no_default_ipalloc) {
            Ok(v) => Ok(Some(v)),
            Err(e) if e.is_left_alone() => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Attaches container `id` if it is the proxy's; returns its addresses (`None`: not the
    /// proxy's, or gone).
    pub async fn attach(
        &self,
        docker: &Docker,
        id: &str,
    ) -> Result<Option<Vec<Ipv4Cidr>>, AttachFailure> {
        let Some(c) = docker.inspect(id).await? else {
            return Ok(None);
        };
        let Some(args) = self.cidrs_of(&c)? else {
            return Ok(None);
        };
        let lock = {
            let mut locks = lock(&self.inner.locks);
            locks.retain(|_, l| Arc::strong_count(l) > 1);
            locks.entry(c.id.clone()).or_default().clone()
        };
        let _held = lock.lock().await;
        // Looked at again under the lock: an attach that waited for another may find the
        // container gone, and must not register names for it after its death.
        let Some(c) = docker.inspect(&c.id).await?.filter(|c| c.running) else {
            return Ok(None);
        };
        let pid = c
            .pid
            .ok_or_else(|| AttachFailure::NotRunning(c.id.clone()))?;
        let cidrs = self.addresses(&c.id, &args).await?;
        if self.inner.rewrite_hosts && !c.hosts_path.is_empty() {
            let ips: Vec<Ipv4Addr> = cidrs.iter().map(Ipv4Cidr::addr).collect();
            let text = weft_docker::hosts::contents(&c, &ips, &c.extra_hosts);
            let path = std::path::PathBuf::from(&c.hosts_path);
            let written =
                tokio::task::spawn_blocking(move || weft_docker::hosts::write(&path, &text)).await;
            // Not fatal, as in Weave Net: Docker's own file serves most containers well enough.
            if let Ok(Err(e)) = written {
                tracing::warn!("[proxy] rewriting /etc/hosts of {}: {e}", short(&c.id));
            }
        }
        let container = weft_attach::Container::Pid(pid);
        let (want, multicast) = (cidrs.clone(), self.inner.multicast);
        // Addresses given in WEAVE_CIDR are checked for duplicates; IPAM's are unique.
        let by_hand: Vec<Ipv4Addr> = args
            .iter()
            .filter_map(|a| match a {
                CidrArg::Address(c) => Some(c.addr()),
                _ => None,
            })
            .collect();
        let plumbed = tokio::task::spawn_blocking(move || {
            weft_attach::blocking::attach(&container, &want, multicast, &by_hand)
        })
        .await
        .map_err(|e| AttachFailure::Plumbing(e.to_string()))?;
        match plumbed {
            Ok(_) => {}
            // The process ended meanwhile (a short command, attached by the other attach):
            // nothing is left to attach. Its namespace goes before Docker or /proc say so.
            Err(weft_attach::AttachError::Netdev(weft_netdev::NetdevError::NoSuchProcess(_))) => {
                return Ok(None)
            }
            Err(e) => {
                let alive = weft_attach::Container::Pid(pid).is_alive();
                return if alive && still_running(docker, &c.id, pid).await {
                    Err(AttachFailure::Plumbing(e.to_string()))
                } else {
                    Ok(None)
                };
            }
        }
        self.register_names(&c, &cidrs).await;
        if !still_running(docker, &c.id, pid).await {
            // It died while its names were being added: they go again, as on its death.
            if let Some(dns) = &self.inner.dns {
                dns.container_died(c.id.clone()).await;
            }
            return Ok(None);
        }
        tracing::info!(
            "[proxy] attached container {} with {}",
            short(&c.id),
            cidrs
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(" ")
        );
        Ok(Some(cidrs))
    }

    /// The addresses for `args`, from IPAM with check-alive.
    async fn addresses(&self, id: &str, args: &[CidrArg]) -> Result<Vec<Ipv4Cidr>, AttachFailure> {
        let ipam = self.inner.ipam.as_ref();
        let mut out = Vec::new();
        for a in args {
            let subnet = match (a, ipam) {
                (CidrArg::Address(c), None) => {
                    out.push(*c);
                    continue;
                }
                (CidrArg::Address(c), Some(i)) => {
                    i.claim(id.to_string(), *c, true, false)
                        .await
                        .map_err(|e| AttachFailure::Ipam(e.to_string()))?
                        .map_err(|e| AttachFailure::Ipam(e.to_string()))?;
                    out.push(*c);
                    continue;
                }
                (_, None) => return Err(AttachFailure::NoIpam),
                (CidrArg::DefaultSubnet, Some(i)) => i.default_subnet,
                (CidrArg::Subnet(s), Some(_)) => *s,
            };
            let Some(i) = ipam else {
                return Err(AttachFailure::NoIpam);
            };
            match i
                .allocate(id.to_string(), subnet, true)
                .await
                .map_err(|e| AttachFailure::Ipam(e.to_string()))?
            {
                Ok(c) => out.push(c),
                Err(AllocError::Cancelled { .. }) => {
                    return Err(AttachFailure::NotRunning(id.to_string()))
                }
                Err(e) => return Err(AttachFailure::Ipam(e.to_string())),
            }
        }
        Ok(out)
    }

    async fn register_names(&self, c: &ContainerInfo, cidrs: &[Ipv4Cidr]) {
        let (Some(dns), true) = (&self.inner.dns, self.inner.with_dns) else {
            return;
        };
        let Some(fqdn) = c.fqdn() else { return };
        let domain = dns.domain.trim_matches('.');
        if !(fqdn == domain || fqdn.ends_with(&format!(".{domain}"))) {
            return;
        }
        for cidr in cidrs {
            if let Err(e) = dns.add(c.id.clone(), cidr.addr(), fqdn.clone(), true).await {
                tracing::info!("[proxy] registering {fqdn} for {}: {e}", short(&c.id));
            }
        }
    }

    /// Registers a client's start (or restart) call of the container it names, from before
    /// Docker is asked (the `start` event may come before Docker answers) until the call is
    /// answered: meanwhile a failed attach on the event is left to the call.
    pub fn start_call(&self, named: &str) -> StartCall {
        *lock(&self.inner.start_calls)
            .entry(named.to_string())
            .or_default() += 1;
        StartCall {
            inner: self.inner.clone(),
            named: named.to_string(),
        }
    }

    fn start_call_held(&self, c: &ContainerInfo) -> bool {
        lock(&self.inner.start_calls).keys().any(|n| names(n, c))
    }

    /// A Docker `start` event: attach. If that fails and no client's start call is held, the
    /// container's process is killed, so that Docker's restart policy, if any, tries again
    /// (Weave Net does the same; see [`OnFailure`]).
    pub async fn on_started(&self, docker: &Docker, id: &str) {
        // The process the attach is for: one that a restart replaced meanwhile is not killed.
        let started = docker.inspect(id).await.ok().flatten().and_then(|c| c.pid);
        let Err(e) = self.attach(docker, id).await else {
            return;
        };
        let c = match docker.inspect(id).await {
            Ok(Some(c)) => c,
            Ok(None) => return,
            Err(k) => {
                tracing::warn!("[proxy] attaching container {}: {e}; {k}", short(id));
                return;
            }
        };
        if c.pid != started {
            tracing::warn!(
                "[proxy] attaching container {}: {e}; it has restarted",
                short(id)
            );
            return;
        }
        match on_failure(&c, self.start_call_held(&c)) {
            OnFailure::LeftToStartCall | OnFailure::Nothing => {
                tracing::warn!("[proxy] attaching container {}: {e}", short(id));
            }
            OnFailure::KillProcess(pid) => {
                tracing::warn!(
                    "[proxy] attaching container {}: {e}; killing its process {pid}",
                    short(id)
                );
                let killed = i32::try_from(pid)
                    .map_err(|_| nix::errno::Errno::ESRCH)
                    .and_then(|p| {
                        nix::sys::signal::kill(
                            nix::unistd::Pid::from_raw(p),
                            nix::sys::signal::Signal::SIGKILL,
                        )
                    });
                if let Err(k) = killed {
                    tracing::warn!("[proxy] killing process {pid}: {k}");
                }
            }
        }
    }

    /// A running container found when the router (re)connects to Docker: attached if it is
    /// the proxy's, and a failure only warns (nothing started it just now).
    pub async fn attach_running(&self, docker: &Docker, id: &str) {
        if let Err(e) = self.attach(docker, id).await {
            tracing::warn!("[proxy] attaching running container {}: {e}", short(id));
        }
    }
}

/// Whether container `id` still runs with process `pid`.
async fn still_running(docker: &Docker, id: &str, pid: u32) -> bool {
    matches!(docker.inspect(id).await, Ok(Some(c)) if c.running && c.pid == Some(pid))
}

/// A container ID as logs show it.
pub(crate) fn short(id: &str) -> &str {
    id.get(..12).unwrap_or(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn container(running: bool) -> ContainerInfo {
        ContainerInfo {
            id: "0123456789abcdef".into(),
            name: "web".into(),
            running,
            pid: running.then_some(4242),
            ..ContainerInfo::default()
        }
    }

    #[test]
    fn a_failed_attach_kills_the_process_unless_a_start_call_is_held() {
        assert_eq!(
            on_failure(&container(true), false),
            OnFailure::KillProcess(4242)
        );
        assert_eq!(
            on_failure(&container(true), true),
            OnFailure::LeftToStartCall
        );
        assert_eq!(on_failure(&container(false), false), OnFailure::Nothing);
    }

    #[test]
    fn start_calls_name_containers_as_docker_does() {
        let c = container(true);
        for named in ["0123456789abcdef", "0123", "web", "/web"] {
            assert!(names(named, &c), "{named}");
        }
        for named in ["", "1234", "we", "webx"] {
            assert!(!names(named, &c), "{named}");
        }
    }

    #[test]
    fn start_calls_are_held_while_their_guards_live() {
        let a = Attacher::new(None, None, false, true, true, true);
        let c = container(true);
        assert!(!a.start_call_held(&c));
        let first = a.start_call("web");
        let second = a.start_call("0123");
        let other = a.start_call("db");
        assert!(a.start_call_held(&c));
        drop(first);
        assert!(a.start_call_held(&c));
        drop(second);
        assert!(!a.start_call_held(&c));
        drop(other);
        assert!(lock(&a.inner.start_calls).is_empty());
    }
}
