//! weft-docker: what weft asks of a Docker daemon, through the Docker Engine API (bollard):
//! finding a container by name or ID ([`Docker::inspect`]) with what weft needs of it (its
//! full ID, its process, whether it runs, its hostname and domain name).
//!
//! The daemon is `DOCKER_HOST` (`unix:///path` or `tcp://host:port`), by default
//! `unix:///var/run/docker.sock`, as the docker CLI finds it; the API version is negotiated,
//! so older daemons (Debian's 20.10 speaks 1.41) work. [`blocking`] wraps the calls for the
//! synchronous CLI. The router also makes and removes the default network of its Docker network
//! plugin ([`Docker::ensure_network`], [`Docker::remove_network`]); its Docker API proxy lists
//! running containers, kills one whose attach failed, and reads an image's entrypoint and
//! command ([`Docker::running`], [`Docker::kill`], [`Docker::image_command`]). [`hosts`] is
//! the `/etc/hosts` Weave Net writes into the containers it attaches.
// Tests may unwrap: a panic is how they fail.
#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod hosts;

use std::time::Duration;

use std::collections::HashMap;

use bollard::container::InspectContainerOptions;
use bollard::models::{EventMessage, Ipam, IpamConfig};
use bollard::network::{CreateNetworkOptions, InspectNetworkOptions};
use bollard::system::EventsOptions;
use futures_util::{Stream, StreamExt as _};

/// How long one API call may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// The socket the docker CLI uses when `DOCKER_HOST` is not set.
pub const DEFAULT_HOST: &str = "unix:///var/run/docker.sock";

/// Why a call to the Docker daemon failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DockerError {
    /// `DOCKER_HOST` is neither `unix://…` nor `tcp://…`.
    #[error("DOCKER_HOST {0:?}: expected unix:///path/to/socket or tcp://host:port")]
    BadHost(String),
    /// The daemon could not be reached or answered with an error.
    #[error("docker: {0}")]
    Api(String),
    /// The call took longer than it may.
    #[error("docker: no answer from {0} in {CALL_TIMEOUT:?}")]
    Timeout(String),
}

/// What weft needs of a container.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ContainerInfo {
    /// The full 64-hex ID.
    pub id: String,
    /// The name, without Docker's leading `/`.
    pub name: String,
    /// Its main process, while it runs.
    pub pid: Option<u32>,
    /// Whether it runs.
    pub running: bool,
    /// `Config.Hostname`.
    pub hostname: String,
    /// `Config.Domainname`.
    pub domainname: String,
    /// The networks it is connected to (`NetworkSettings.Networks`).
    pub networks: Vec<ContainerNetwork>,
    /// `Config.Entrypoint`.
    pub entrypoint: Vec<String>,
    /// `Config.Env`, as `NAME=value`.
    pub env: Vec<String>,
    /// `HostConfig.NetworkMode`.
    pub network_mode: String,
    /// Where its mounts are, inside it (`Mounts[].Destination`).
    pub mount_destinations: Vec<String>,
    /// The host file Docker binds at its `/etc/hosts` (`HostsPath`).
    pub hosts_path: String,
    /// `HostConfig.ExtraHosts` (`--add-host`), as `name:ip`.
    pub extra_hosts: Vec<String>,
}

/// One network a container is connected to.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ContainerNetwork {
    /// The network's ID.
    pub network_id: String,
    /// Its IPv4 address on the network, if it has one.
    pub ip: Option<std::net::Ipv4Addr>,
    /// The container's aliases on the network.
    pub aliases: Vec<String>,
}

/// What weft needs of a network.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NetworkInfo {
    /// Its ID.
    pub id: String,
    /// Its driver.
    pub driver: String,
    /// Its driver options.
    pub options: Vec<(String, String)>,
    /// The IDs of the containers attached to it.
    pub containers: Vec<String>,
}

/// A network to create: what [`Docker::ensure_network`] asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkSpec {
    /// The network's name.
    pub name: String,
    /// The network driver.
    pub driver: String,
    /// The IPAM driver.
    pub ipam_driver: String,
    /// The subnet, as CIDR text.
    pub subnet: String,
    /// Driver options.
    pub options: Vec<(String, String)>,
}

impl ContainerInfo {
    /// The name weftDNS registers for it, as Weave's script does: `hostname.domainname`, or
    /// the hostname alone when it has a dot; `None` when there is no domain part.
    pub fn fqdn(&self) -> Option<String> {
        let host = self.hostname.trim_end_matches('.');
        let domain = self.domainname.trim_matches('.');
        if !domain.is_empty() && !host.is_empty() {
            return Some(format!("{host}.{domain}"));
        }
        host.contains('.').then(|| host.to_string())
    }
}

/// What happened to a container, as far as weft cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// `start`: it runs (again).
    Started(String),
    /// `die`: its process ended; it may start again.
    Died(String),
    /// `destroy`: it is gone for good.
    Destroyed(String),
    /// A network's `connect`: the container joined the network.
    Connected {
        /// The container's ID.
        container: String,
        /// The network's ID.
        network: String,
    },
    /// A network's `disconnect`: the container left the network.
    Disconnected {
        /// The container's ID.
        container: String,
        /// The network's ID.
        network: String,
    },
}

/// A connection to a Docker daemon.
#[derive(Debug, Clone)]
pub struct Docker {
    api: bollard::Docker,
    host: String,
}

impl Docker {
    /// Connects (lazily: nothing is sent yet) to `DOCKER_HOST`, or the default socket.
    pub fn from_env() -> Result<Self, DockerError> {
        let host = std::env::var("DOCKER_HOST")
            .ok()
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| DEFAULT_HOST.to_string());
        Self::connect(&host)
    }

    /// Connects (lazily) to `host`: `unix:///path` or `tcp://host:port`.
    pub fn connect(host: &str) -> Result<Self, DockerError> {
        let timeout = CALL_TIMEOUT.as_secs();
        let api = if let Some(path) = host.strip_prefix("unix://") {
            bollard::Docker::connect_with_unix(path, timeout, bollard::API_DEFAULT_VERSION)
        } else if let Some(addr) = host.strip_prefix("tcp://") {
            bollard::Docker::connect_with_http(
                &format!("http://{addr}"),
                timeout,
                bollard::API_DEFAULT_VERSION,
            )
        } else {
            return Err(DockerError::BadHost(host.to_string()));
        }
        .map_err(|e| DockerError::Api(e.to_string()))?;
        Ok(Self {
            api,
            host: host.to_string(),
        })
    }

    /// Agrees on an API version the daemon speaks (call once before other calls).
    pub async fn negotiate(self) -> Result<Self, DockerError> {
        let Self { api, host } = self;
        let api = match tokio::time::timeout(CALL_TIMEOUT, api.negotiate_version()).await {
            Ok(r) => r.map_err(|e| DockerError::Api(e.to_string()))?,
            Err(_) => return Err(DockerError::Timeout(host)),
        };
        Ok(Self { api, host })
    }

    /// The container named or identified (full or unique prefix) by `name`; `None` if the
    /// daemon knows no such container.
    pub async fn inspect(&self, name: &str) -> Result<Option<ContainerInfo>, DockerError> {
        let r = self
            .call(
                self.api
                    .inspect_container(name, None::<InspectContainerOptions>),
            )
            .await?;
        let c = match r {
            Ok(c) => c,
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            }) => return Ok(None),
            Err(e) => return Err(DockerError::Api(e.to_string())),
        };
        let state = c.state.unwrap_or_default();
        let config = c.config.unwrap_or_default();
        let host_config = c.host_config.unwrap_or_default();
        let network_mode = host_config.network_mode.unwrap_or_default();
        let extra_hosts = host_config.extra_hosts.unwrap_or_default();
        let mount_destinations = c
            .mounts
            .unwrap_or_default()
            .into_iter()
            .filter_map(|m| m.destination)
            .collect();
        let running = state.running.unwrap_or(false);
        Ok(Some(ContainerInfo {
            id: c.id.unwrap_or_default(),
            name: c
                .name
                .unwrap_or_default()
                .trim_start_matches('/')
                .to_string(),
            pid: state
                .pid
                .and_then(|p| u32::try_from(p).ok())
                .filter(|&p| p > 0 && running),
            running,
            hostname: config.hostname.unwrap_or_default(),
            domainname: config.domainname.unwrap_or_default(),
            networks: c
                .network_settings
                .and_then(|n| n.networks)
                .unwrap_or_default()
                .into_values()
                .map(|e| ContainerNetwork {
                    network_id: e.network_id.unwrap_or_default(),
                    ip: e.ip_address.and_then(|a| a.parse().ok()),
                    aliases: e.aliases.unwrap_or_default(),
                })
                .collect(),
            entrypoint: config.entrypoint.unwrap_or_default(),
            env: config.env.unwrap_or_default(),
            network_mode,
            mount_destinations,
            hosts_path: c.hosts_path.unwrap_or_default(),
            extra_hosts,
        }))
    }

    async fn call<T>(
        &self,
        f: impl std::future::Future<Output = Result<T, bollard::errors::Error>>,
    ) -> Result<Result<T, bollard::errors::Error>, DockerError> {
        tokio::time::timeout(CALL_TIMEOUT, f)
            .await
            .map_err(|_| DockerError::Timeout(self.host.clone()))
    }

    /// Every running container, inspected (one that stops meanwhile is left out).
    pub async fn running(&self) -> Result<Vec<ContainerInfo>, DockerError> {
        let mut out = Vec::new();
        for id in self.running_ids().await? {
            if let Some(c) = self.inspect(&id).await?.filter(|c| c.running) {
                out.push(c);
            }
        }
        Ok(out)
    }

    /// The network named or identified by `name`; `None` if the daemon knows none.
    pub async fn network(&self, name: &str) -> Result<Option<NetworkInfo>, DockerError> {
        let found = self
            .call(
                self.api
                    .inspect_network(name, None::<InspectNetworkOptions<String>>),
            )
            .await?;
        match found {
            Ok(n) => Ok(Some(NetworkInfo {
                id: n.id.unwrap_or_default(),
                driver: n.driver.unwrap_or_default(),
                options: n.options.unwrap_or_default().into_iter().collect(),
                containers: n.containers.unwrap_or_default().into_keys().collect(),
            })),
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            }) => Ok(None),
            Err(e) => Err(DockerError::Api(e.to_string())),
        }
    }

    /// Creates the network `spec` describes unless one of that name exists; returns whether
    /// it created it.
    pub async fn ensure_network(&self, spec: &NetworkSpec) -> Result<bool, DockerError> {
        if self.network(&spec.name).await?.is_some() {
            return Ok(false);
        }
        let create = CreateNetworkOptions {
            name: spec.name.clone(),
            check_duplicate: true,
            driver: spec.driver.clone(),
            ipam: Ipam {
                driver: Some(spec.ipam_driver.clone()),
                config: Some(vec![IpamConfig {
                    subnet: Some(spec.subnet.clone()),
                    ..Default::default()
                }]),
                options: None,
            },
            options: spec.options.iter().cloned().collect(),
            ..Default::default()
        };
        self.call(self.api.create_network(create))
            .await?
            .map_err(|e| DockerError::Api(e.to_string()))?;
        Ok(true)
    }

    /// Removes the network `name`; returns whether there was one.
    pub async fn remove_network(&self, name: &str) -> Result<bool, DockerError> {
        match self.call(self.api.remove_network(name)).await? {
            Ok(()) => Ok(true),
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            }) => Ok(false),
            Err(e) => Err(DockerError::Api(e.to_string())),
        }
    }
}

impl Docker {
    /// The IDs of the running containers.
    pub async fn running_ids(&self) -> Result<Vec<String>, DockerError> {
        let list = self
            .call(
                self.api
                    .list_containers(None::<bollard::container::ListContainersOptions<String>>),
            )
            .await?
            .map_err(|e| DockerError::Api(e.to_string()))?;
        Ok(list.into_iter().filter_map(|c| c.id).collect())
    }

    /// Kills the container `id` (SIGKILL); one that is gone or stopped already is no error.
    pub async fn kill(&self, id: &str) -> Result<(), DockerError> {
        match self
            .call(
                self.api
                    .kill_container(id, None::<bollard::container::KillContainerOptions<String>>),
            )
            .await?
        {
            Ok(())
            | Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404 | 409,
                ..
            }) => Ok(()),
            Err(e) => Err(DockerError::Api(e.to_string())),
        }
    }

    /// An image's `Config.Entrypoint` and `Config.Cmd`; `None` if the daemon has no such
    /// image.
    pub async fn image_command(
        &self,
        name: &str,
    ) -> Result<Option<(Vec<String>, Vec<String>)>, DockerError> {
        match self.call(self.api.inspect_image(name)).await? {
            Ok(i) => {
                let c = i.config.unwrap_or_default();
                Ok(Some((
                    c.entrypoint.unwrap_or_default(),
                    c.cmd.unwrap_or_default(),
                )))
            }
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            }) => Ok(None),
            Err(e) => Err(DockerError::Api(e.to_string())),
        }
    }

    /// The daemon's container events (`start`, `die`, `destroy`) and its network events
    /// `connect` and `disconnect`, from Unix time `since` (the daemon replays those since
    /// then) or from now on; the stream ends (or yields an error) when the daemon goes away.
    pub fn events(
        &self,
        since: Option<i64>,
    ) -> impl Stream<Item = Result<Event, DockerError>> + '_ {
        let strings = |v: &[&str]| v.iter().map(ToString::to_string).collect::<Vec<_>>();
        let filters = HashMap::from([
            ("type".to_string(), strings(&["container", "network"])),
            (
                "event".to_string(),
                strings(&["start", "die", "destroy", "connect", "disconnect"]),
            ),
        ]);
        self.api
            .events(Some(EventsOptions::<String> {
                since: since.map(|t| t.to_string()),
                filters,
                ..Default::default()
            }))
            .filter_map(|m| async move {
                match m {
                    Ok(m) => Event::of(m).map(Ok),
                    Err(e) => Some(Err(DockerError::Api(e.to_string()))),
                }
            })
    }
}

impl Event {
    /// The event weft follows that `m` is, if it is one.
    fn of(m: EventMessage) -> Option<Self> {
        let actor = m.actor?;
        let id = actor.id?;
        // A network event names the container in its attributes.
        let container = || actor.attributes.as_ref()?.get("container").cloned();
        match m.action.as_deref()? {
            "start" => Some(Self::Started(id)),
            "die" => Some(Self::Died(id)),
            "destroy" => Some(Self::Destroyed(id)),
            "connect" => Some(Self::Connected {
                container: container()?,
                network: id,
            }),
            "disconnect" => Some(Self::Disconnected {
                container: container()?,
                network: id,
            }),
            _ => None,
        }
    }
}

/// The calls for a synchronous caller (the CLI): each runs on a runtime of its own.
pub mod blocking {
    use super::{ContainerInfo, Docker, DockerError};

    fn run<T>(
        f: impl std::future::Future<Output = Result<T, DockerError>>,
    ) -> Result<T, DockerError> {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| DockerError::Api(format!("cannot start a runtime: {e}")))?
            .block_on(f)
    }

    /// [`Docker::inspect`] on the daemon at `DOCKER_HOST`.
    pub fn inspect(name: &str) -> Result<Option<ContainerInfo>, DockerError> {
        run(async {
            let d = Docker::from_env()?.negotiate().await?;
            d.inspect(name).await
        })
    }

    /// [`Docker::running`].
    pub fn running() -> Result<Vec<ContainerInfo>, DockerError> {
        run(async { Docker::from_env()?.negotiate().await?.running().await })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bollard::models::EventActor;

    fn message(action: &str, id: &str, container: Option<&str>) -> EventMessage {
        EventMessage {
            action: Some(action.into()),
            actor: Some(EventActor {
                id: Some(id.into()),
                attributes: container
                    .map(|c| HashMap::from([("container".to_string(), c.to_string())])),
            }),
            ..Default::default()
        }
    }

    #[test]
    fn events_weft_follows() {
        assert_eq!(
            Event::of(message("start", "c1", None)),
            Some(Event::Started("c1".into()))
        );
        assert_eq!(
            Event::of(message("connect", "n1", Some("c1"))),
            Some(Event::Connected {
                container: "c1".into(),
                network: "n1".into()
            })
        );
        assert_eq!(
            Event::of(message("disconnect", "n1", Some("c1"))),
            Some(Event::Disconnected {
                container: "c1".into(),
                network: "n1".into()
            })
        );
        // A network event without its container, an action weft ignores, no actor.
        assert_eq!(Event::of(message("connect", "n1", None)), None);
        assert_eq!(Event::of(message("pause", "c1", None)), None);
        assert_eq!(Event::of(EventMessage::default()), None);
    }

    fn info(hostname: &str, domainname: &str) -> ContainerInfo {
        ContainerInfo {
            id: "0123".into(),
            name: "c".into(),
            pid: Some(1),
            running: true,
            hostname: hostname.into(),
            domainname: domainname.into(),
            ..ContainerInfo::default()
        }
    }

    #[test]
    fn fqdn_as_weave_derives_it() {
        assert_eq!(
            info("a", "weave.local").fqdn().as_deref(),
            Some("a.weave.local")
        );
        assert_eq!(
            info("a.weave.local", "").fqdn().as_deref(),
            Some("a.weave.local")
        );
        assert_eq!(info("a", "").fqdn(), None);
        assert_eq!(info("0123abcd", "").fqdn(), None);
    }

    #[test]
    fn hosts_must_be_unix_or_tcp() {
        assert!(Docker::connect("tcp://127.0.0.1:2375").is_ok());
        // A socket that is not there is the daemon's absence, not a bad host.
        assert!(matches!(
            Docker::connect("unix:///nonexistent/docker.sock"),
            Err(DockerError::Api(_)) | Ok(_)
        ));
        assert!(matches!(
            Docker::connect("ssh://x"),
            Err(DockerError::BadHost(_))
        ));
    }
}
