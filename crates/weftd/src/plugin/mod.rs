//! The legacy Docker network plugin (Weave Net's `--plugin`, on unless `--no-plugin`): two
//! libnetwork remote drivers on unix sockets in Docker's plugin directory
//! (`/run/docker/plugins`, or `WEFT_PLUGINS_DIR`) — `weave.sock` (driver `weave`, scope
//! global, no IPAM) and `weavemesh.sock` (driver `weavemesh`, scope local, with weft's IPAM as
//! IPAM driver). With a Docker daemon, the router makes sure the network `weave` exists
//! (drivers `weavemesh`, the IPAM default subnet, multicast on) once its socket answers, and
//! removes it again when it stops, before the sockets go, since Docker asks the plugin while
//! it removes the network.
//!
//! `driver` holds the protocol, `ipam` the IPAM driver, `endpoint` the veths and `watch` the
//! names of started containers. A network Docker made before the router started (so never
//! announced to it) is looked up in Docker when it is first met. Left out: the v2 managed
//! plugin.

pub mod driver;
mod endpoint;
mod ipam;
pub(crate) mod watch;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::UnixListener;
use tokio::task::JoinHandle;
use weft_types::Ipv4Cidr;

use crate::StartError;
pub use driver::{Networks, Scope};

/// Where Docker looks for plugin sockets.
pub const DEFAULT_DIR: &str = "/run/docker/plugins";
/// The global driver's name (its socket's base name).
pub const GLOBAL_DRIVER: &str = "weave";
/// The local driver's name, also the IPAM driver's.
pub const MESH_DRIVER: &str = "weavemesh";
/// The network the router makes for `docker run --net=weave`.
pub const DEFAULT_NETWORK: &str = "weave";
/// The network option that turns the multicast route on.
pub const MULTICAST_OPTION: &str = "works.weave.multicast";
/// Connections served at once per socket (Docker keeps a few).
const MAX_CONNECTIONS: usize = 64;
/// How long a client may take to send a request's headers: one that connects and sends
/// nothing must not hold one of the [`MAX_CONNECTIONS`] for ever.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// How often the default network is tried again while Docker is not there.
const RETRY: Duration = Duration::from_secs(3);

/// Where the plugin listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginConfig {
    /// The directory of the sockets.
    pub dir: PathBuf,
    /// Whether the network `weave` gets the multicast route (`launch-plugin
    /// --no-multicast-route` turns it off).
    pub multicast: bool,
}

impl PluginConfig {
    /// `WEFT_PLUGINS_DIR`, else Docker's directory.
    pub fn from_env() -> Self {
        let dir = std::env::var_os("WEFT_PLUGINS_DIR")
            .filter(|d| !d.is_empty())
            .map_or_else(|| PathBuf::from(DEFAULT_DIR), PathBuf::from);
        Self {
            dir,
            multicast: true,
        }
    }

    /// The socket of a driver.
    pub fn socket(&self, driver: &str) -> PathBuf {
        self.dir.join(format!("{driver}.sock"))
    }

    /// Removes socket files a plugin that is not running left behind: Docker would hang
    /// trying to reach them.
    pub fn remove_stale_sockets(&self) {
        for d in [GLOBAL_DRIVER, MESH_DRIVER] {
            let _ = std::fs::remove_file(self.socket(d));
        }
    }
}

/// The running plugin.
#[derive(Debug)]
pub struct Plugin {
    cfg: PluginConfig,
    /// The networks of both drivers, for the container watcher.
    pub networks: Networks,
    servers: Vec<JoinHandle<()>>,
    /// Whether the default network is known to exist (so stopping removes it).
    ensured: Arc<AtomicBool>,
    default_network: Option<JoinHandle<()>>,
}

impl Plugin {
    /// Binds both sockets (removing stale ones first) and serves them; with `docker`, makes
    /// sure the default network exists (in the background, once the socket answers).
    pub fn start(
        cfg: PluginConfig,
        ipam: Option<crate::ipam::task::Handle>,
        docker: bool,
    ) -> Result<Self, StartError> {
        std::fs::create_dir_all(&cfg.dir)
            .map_err(|e| StartError::Bind(format!("plugin dir {}", cfg.dir.display()), e))?;
        cfg.remove_stale_sockets();
        let networks = Networks::default();
        let default_subnet = ipam.as_ref().map(|h| h.default_subnet);
        let mut servers = Vec::new();
        for (name, scope) in [(GLOBAL_DRIVER, Scope::Global), (MESH_DRIVER, Scope::Local)] {
            let path = cfg.socket(name);
            let listener = match UnixListener::bind(&path) {
                Ok(l) => l,
                Err(e) => {
                    servers.iter().for_each(JoinHandle::abort);
                    cfg.remove_stale_sockets();
                    return Err(StartError::Bind(format!("plugin {}", path.display()), e));
                }
            };
            let routes = driver::routes(driver::Driver {
                scope,
                networks: networks.clone(),
                ipam: ipam.clone(),
                docker,
            });
            servers.push(tokio::spawn(serve(listener, routes)));
        }
        tracing::info!("[plugin] listening on {}", cfg.dir.display());
        let ensured = Arc::new(AtomicBool::new(false));
        let default_network = match default_subnet {
            Some(subnet) if docker => Some(tokio::spawn(ensure_default_network(
                cfg.socket(MESH_DRIVER),
                subnet,
                cfg.multicast,
                ensured.clone(),
            ))),
            _ => None,
        };
        Ok(Self {
            cfg,
            networks,
            servers,
            ensured,
            default_network,
        })
    }

    /// What it was started with.
    pub fn config(&self) -> &PluginConfig {
        &self.cfg
    }

    /// Removes the default network (while the sockets still answer Docker), then the
    /// sockets. Returns Weave Net's warning when the network stays because containers are
    /// still attached to it.
    pub async fn stop(self) -> Option<String> {
        if let Some(t) = &self.default_network {
            t.abort();
        }
        let warning = if self.ensured.load(Ordering::SeqCst) {
            remove_default_network().await
        } else {
            None
        };
        for s in &self.servers {
            s.abort();
        }
        self.cfg.remove_stale_sockets();
        warning
    }
}

/// Removes the network `weave` (while the plugin's sockets answer Docker); returns Weave Net's
/// warning naming the containers still attached when that is why it stays.
async fn remove_default_network() -> Option<String> {
    let removed = async {
        let docker = weft_docker::Docker::from_env()?.negotiate().await?;
        let removed = docker.remove_network(DEFAULT_NETWORK).await;
        Ok::<_, weft_docker::DockerError>((docker, removed))
    };
    let (docker, e) = match removed.await {
        Ok((_, Ok(_))) => {
            tracing::info!("[plugin] removed network {DEFAULT_NETWORK}");
            return None;
        }
        Ok((docker, Err(e))) => (Some(docker), e),
        Err(e) => (None, e),
    };
    tracing::warn!("[plugin] removing network {DEFAULT_NETWORK}: {e}");
    let attached = docker?.network(DEFAULT_NETWORK).await.ok()??.containers;
    (!attached.is_empty()).then(|| still_attached(&attached))
}

/// For `weft reset` once the router has gone: removes the network `weave` a router that was
/// killed left in Docker. Docker asks the network's drivers while it removes it, so the
/// plugin's sockets are served (without IPAM) for as long as that takes. Returns whether
/// there was one to remove; no daemon is no error.
pub async fn remove_left_network(cfg: &PluginConfig) -> Result<bool, String> {
    let Ok(docker) = weft_docker::Docker::from_env() else {
        return Ok(false);
    };
    let Ok(docker) = docker.negotiate().await else {
        return Ok(false);
    };
    match docker.network(DEFAULT_NETWORK).await {
        Ok(Some(n)) if n.driver == MESH_DRIVER => {}
        _ => return Ok(false),
    }
    let plugin = Plugin::start(cfg.clone(), None, false).map_err(|e| e.to_string())?;
    let removed = docker.remove_network(DEFAULT_NETWORK).await;
    plugin.stop().await;
    removed.map_err(|e| format!("network {DEFAULT_NETWORK}: {e}"))
}

/// Weave Net's warning for a network `weave` that stays because of these containers.
fn still_attached(ids: &[String]) -> String {
    let list: String = ids
        .iter()
        .map(|id| format!("  {} ", id.get(..12).unwrap_or(id)))
        .collect();
    format!(
        "WARNING: the following containers are still attached to network \"{DEFAULT_NETWORK}\":\n{list}\nDocker operations involving those containers may pause or fail\nwhile Weave is not running"
    )
}

/// The `Service: plugin (legacy)` section of `weft status`.
pub fn render_section(driver_name: &str) -> String {
    format!(
        "\n{:>15}: plugin (legacy)\n{:>15}: {driver_name}\n",
        "Service", "DriverName"
    )
}

/// The report's `Plugin` member, in Weave Net's shape.
pub fn report(
    cfg: &PluginConfig,
    dns: bool,
    default_subnet: Option<Ipv4Cidr>,
) -> serde_json::Value {
    let socket = |d: &str| cfg.socket(d).to_string_lossy().into_owned();
    serde_json::json!({
        "Config": {
            "Socket": socket(GLOBAL_DRIVER),
            "MeshSocket": socket(MESH_DRIVER),
            "Enable": true,
            "EnableV2": false,
            "EnableV2Multicast": false,
            "DNS": dns,
            "DefaultSubnet": default_subnet.map(|s| s.to_string()).unwrap_or_default(),
            "ProcPath": "/proc",
        },
        "DriverName": GLOBAL_DRIVER,
        "MeshDriverName": MESH_DRIVER,
    })
}

/// Serves HTTP/1.1 on `listener` with `routes`, a task per connection, at most
/// [`MAX_CONNECTIONS`] at once.
async fn serve(listener: UnixListener, routes: Router) {
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let stream = match listener.accept().await {
            Ok((s, _)) => s,
            Err(e) => {
                tracing::warn!("[plugin] accept: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let service = hyper_util::service::TowerToHyperService::new(routes.clone());
        tokio::spawn(async move {
            let _slot = slot;
            let io = hyper_util::rt::TokioIo::new(stream);
            if let Err(e) = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT)
                .serve_connection(io, service)
                .await
            {
                tracing::debug!("[plugin] connection: {e}");
            }
        });
    }
}

/// Whether the plugin at `path` answers `/Plugin.Activate`.
async fn answers(path: &Path) -> bool {
    let exchange = async {
        let mut s = tokio::net::UnixStream::connect(path).await?;
        s.write_all(
            b"POST /Plugin.Activate HTTP/1.1\r\nHost: plugin\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        )
        .await?;
        let mut reply = Vec::new();
        s.read_to_end(&mut reply).await?;
        Ok::<_, std::io::Error>(reply.starts_with(b"HTTP/1.1 200"))
    };
    matches!(
        tokio::time::timeout(Duration::from_secs(2), exchange).await,
        Ok(Ok(true))
    )
}

/// Makes sure the network `weave` exists once our socket answers and Docker does; waits for
/// both as long as it takes, but tries to create the network only once (Docker itself spends
/// about 15 s looking for a driver it cannot find).
async fn ensure_default_network(
    socket: PathBuf,
    subnet: Ipv4Cidr,
    multicast: bool,
    ensured: Arc<AtomicBool>,
) {
    let spec = weft_docker::NetworkSpec {
        name: DEFAULT_NETWORK.into(),
        driver: MESH_DRIVER.into(),
        ipam_driver: MESH_DRIVER.into(),
        subnet: subnet.to_string(),
        options: if multicast {
            vec![(MULTICAST_OPTION.into(), "true".into())]
        } else {
            Vec::new()
        },
    };
    let mut said = false;
    let docker = loop {
        if answers(&socket).await {
            match weft_docker::Docker::from_env() {
                Ok(d) => match d.negotiate().await {
                    Ok(d) => break d,
                    Err(e) if !said => {
                        tracing::info!(
                            "[plugin] network {DEFAULT_NETWORK}: {e}; waiting for Docker"
                        );
                        said = true;
                    }
                    Err(_) => {}
                },
                Err(e) => {
                    tracing::warn!("[plugin] network {DEFAULT_NETWORK}: {e}");
                    return;
                }
            }
        }
        tokio::time::sleep(RETRY).await;
    };
    match docker.ensure_network(&spec).await {
        Ok(created) => {
            ensured.store(true, Ordering::SeqCst);
            let what = if created { "created" } else { "found" };
            tracing::info!("[plugin] {what} network {DEFAULT_NETWORK} ({subnet})");
        }
        Err(e) => tracing::warn!("[plugin] cannot create network {DEFAULT_NETWORK}: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn still_attached_warning() {
        assert_eq!(
            still_attached(&["0123456789abcdef".into(), "short".into()]),
            "WARNING: the following containers are still attached to network \"weave\":\n  0123456789ab   short \nDocker operations involving those containers may pause or fail\nwhile Weave is not running"
        );
    }

    #[test]
    fn status_section() {
        assert_eq!(
            render_section("weave"),
            "\n        Service: plugin (legacy)\n     DriverName: weave\n"
        );
    }

    /// A client that connects and sends only part of a request is cut off after the header
    /// timeout (time is paused: it passes as soon as everything waits).
    #[tokio::test(start_paused = true)]
    async fn a_silent_client_is_cut_off() {
        let dir = std::env::temp_dir().join(format!("weft-plugin-silent-{}", std::process::id()));
        let cfg = PluginConfig {
            dir: dir.clone(),
            multicast: true,
        };
        let p = Plugin::start(cfg.clone(), None, false).unwrap();
        let mut s = tokio::net::UnixStream::connect(cfg.socket(MESH_DRIVER))
            .await
            .unwrap();
        s.write_all(b"POST /Plugin.Activate HTTP/1.1\r\n")
            .await
            .unwrap();
        let started = tokio::time::Instant::now();
        let mut buf = Vec::new();
        let read = tokio::time::timeout(HEADER_READ_TIMEOUT * 3, s.read_to_end(&mut buf)).await;
        assert!(
            read.is_ok(),
            "still connected after {:?}",
            started.elapsed()
        );
        assert!(started.elapsed() >= HEADER_READ_TIMEOUT);
        p.stop().await;
        let _ = std::fs::remove_dir(&dir);
    }

    #[tokio::test]
    async fn serves_both_sockets_and_removes_them() {
        let dir = std::env::temp_dir().join(format!("weft-plugin-test-{}", std::process::id()));
        let cfg = PluginConfig {
            dir: dir.clone(),
            multicast: true,
        };
        // A stale file is replaced.
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(cfg.socket(MESH_DRIVER), b"").unwrap();
        let p = Plugin::start(cfg.clone(), None, false).unwrap();
        assert!(answers(&cfg.socket(MESH_DRIVER)).await);
        assert!(answers(&cfg.socket(GLOBAL_DRIVER)).await);
        p.stop().await;
        assert!(!cfg.socket(MESH_DRIVER).exists());
        assert!(!cfg.socket(GLOBAL_DRIVER).exists());
        let _ = std::fs::remove_dir(&dir);
    }
}
