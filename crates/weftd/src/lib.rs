//! weftd: the weft router daemon — the tokio drivers around weft-core's state machines, the
//! HTTP API, status formats, metrics and persistent state.
//!
//! [`run`] is what `weft launch` starts in the background (`weft router …`).
// Tests may unwrap: a panic is how they fail.
#![cfg_attr(test, allow(clippy::unwrap_used))]
#![warn(missing_docs)]

pub mod channel_link;
mod conn_io;
pub mod dataplane;
pub mod dataplane_task;
pub mod dns;
pub mod docker_parts;
pub mod docker_watch;
pub mod driver;
pub mod error;
#[cfg(test)]
mod fakes;
#[cfg(any(fuzzing, test))]
pub mod fuzzing;
pub mod http;
pub mod ipam;
mod kernel;
pub mod metrics;
pub mod plugin;
pub mod proxy;
pub mod run_dir;
mod sleeve;
pub mod status;
pub mod store;
pub mod template;

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use rand::Rng;
use tokio::sync::mpsc;
use weft_core::handshake::LocalIdentity;
use weft_core::mesh::{Mesh, MeshConfig};
use weft_wire::PeerName;

use crate::status::RouterInfo;
use crate::store::Store;

/// The largest IP MTU a sleeve record carries in one UDP datagram.
pub const SLEEVE_MAX_MTU: u32 = 65473;

/// Receive and send buffer of the sleeve UDP socket: room for about a hundred 64 KB GSO/GRO
/// runs, so that a burst from a fast sender is not dropped while the router is busy.
const SLEEVE_SOCKET_BUFFER: usize = 8 << 20;

/// Everything the router needs to start.
#[derive(Debug, Clone)]
pub struct RouterConfig {
    /// `--name`; else the persisted name; else a new random one.
    pub name: Option<PeerName>,
    /// `--nickname`.
    pub nickname: String,
    /// `--port`.
    pub port: u16,
    /// `--host`: listen and dial-from address.
    pub host: Option<IpAddr>,
    /// `--conn-limit`.
    pub conn_limit: usize,
    /// `--no-discovery` negated.
    pub discovery: bool,
    /// Peers from the command line.
    pub peers: Vec<String>,
    /// `--resume`: use the persisted targets instead.
    pub resume: bool,
    /// `WEFT_STATE_DIR`.
    pub state_dir: PathBuf,
    /// How the state database is checked before it is opened (see [`store::Check`]).
    pub state_check: store::Check,
    /// `WEFT_RUN_DIR`.
    pub run_dir: PathBuf,
    /// Control API address.
    pub http_addr: SocketAddr,
    /// Status and metrics address.
    pub status_addr: Option<SocketAddr>,
    /// Offer the kernel-VXLAN fast datapath (`--no-fastdp` / `WEAVE_NO_FASTDP` turn it off).
    pub fastdp: bool,
    /// `--mtu` / `WEAVE_MTU`; default 1376 with fastdp, 65535 without.
    pub mtu: Option<u32>,
    /// `--ipalloc-*`; `None` when IPAM is off.
    pub ipam: Option<ipam::IpamConfig>,
    /// `--dns-*`; `None` when DNS is off (`--no-dns`).
    pub dns: Option<dns::DnsConfig>,
    /// Follow the Docker daemon's container events (`--no-docker` turns it off).
    pub docker: bool,
    /// `--password` / `WEAVE_PASSWORD`: encrypt control connections, and the data of
    /// connections not trusted at both ends.
    pub password: Option<Password>,
    /// `--trusted-subnets`: peers in these are trusted (no data encryption if they trust us too).
    pub trusted_subnets: Vec<weft_types::Ipv4Cidr>,
    /// Offer weft's own sleeve encryption (AES-256-GCM) to weft peers; off
    /// (`WEFT_SLEEVE_CRYPTO=nacl`), every encrypted connection uses Weave Net's scheme.
    pub sleeve_aead: bool,
    /// The legacy Docker network plugin; `None` with `--no-plugin`.
    pub plugin: Option<plugin::PluginConfig>,
    /// The Docker API proxy; `None` with `--proxy=false` (and always with `--no-docker`).
    pub proxy: Option<proxy::ProxyConfig>,
}

/// The mesh password. Never shown: its `Debug` says nothing of it, and it is wiped when the
/// last copy goes.
#[derive(Clone)]
pub struct Password(Arc<zeroize::Zeroizing<Vec<u8>>>);

impl Password {
    /// A password from its bytes.
    pub fn new(bytes: Vec<u8>) -> Self {
        Self(Arc::new(zeroize::Zeroizing::new(bytes)))
    }
}

impl std::fmt::Debug for Password {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Password(..)")
    }
}

impl RouterConfig {
    /// The weave bridge MTU. Weave Net's sleeve-only default is 65535, but a sleeve record
    /// must fit one UDP datagram (65507 bytes: 6 sender + 14 record header + frame), so the
    /// largest IP packet sleeve can carry whole is 65473; that is weft's default, and the cap.
    ///
    /// With a password, a sealed datagram is 24 bytes longer, so the cap is that much lower.
    pub fn mtu(&self) -> u32 {
        let cap = if self.password.is_some() {
            SLEEVE_MAX_MTU - 24
        } else {
            SLEEVE_MAX_MTU
        };
        self.mtu
            .unwrap_or(if self.fastdp { 1376 } else { cap })
            .min(cap)
    }
}

/// Why the router could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// State database trouble.
    #[error(transparent)]
    Store(#[from] store::StoreError),
    /// A listener could not be bound.
    #[error("cannot listen on {0}: {1}")]
    Bind(String, std::io::Error),
    /// Flags that contradict each other.
    #[error("{0}")]
    Config(String),
    /// The run dir or a file in it.
    #[error(transparent)]
    RunDir(#[from] run_dir::RunDirError),
    /// Bridge, devices or firewall.
    #[error("data plane: {0}")]
    Dataplane(#[from] dataplane::DataplaneError),
}

/// A locally administered unicast MAC, as Weave Net's generated names are.
fn random_peer_name() -> PeerName {
    let mut b: [u8; 6] = rand::thread_rng().gen();
    b[0] = (b[0] & 0xfe) | 0x02;
    PeerName::from_bytes(&b).unwrap_or(PeerName(0x0200_0000_0001))
}

/// Chooses and persists the peer name: `--name`, else the stored one, else a new one.
pub fn peer_name(cfg_name: Option<PeerName>, store: &Store) -> Result<PeerName, StartError> {
    let name = match cfg_name {
        Some(n) => n,
        None => match store.peer_name()? {
            Some(n) => n,
            None => random_peer_name(),
        },
    };
    store.set_peer_name(name)?;
    Ok(name)
}

/// Runs the router until SIGTERM/SIGINT.
pub async fn run(cfg: RouterConfig) -> Result<(), StartError> {
    if cfg.resume && !cfg.peers.is_empty() {
        return Err(StartError::Config(
            "You must not specify an initial peer list in conjunction with --resume".into(),
        ));
    }
    let store = Arc::new(Store::open(&cfg.state_dir, &cfg.state_check)?);
    let name = peer_name(cfg.name, &store)?;
    let peers = if cfg.resume {
        store.direct_peers()?
    } else {
        cfg.peers.clone()
    };
    let run_dir = run_dir::RunDir::new(&cfg.run_dir);
    run_dir.prepare()?;
    let mut rng = rand::thread_rng();
    let token: String = (0..32)
        .map(|_| format!("{:02x}", rng.gen::<u8>()))
        .collect();
    run_dir.write_token(&token)?;
    let identity = LocalIdentity {
        name,
        nick_name: cfg.nickname.clone(),
        uid: rng.gen_range(1..=u64::MAX),
        short_id: rng.gen_range(0..4096),
        overlays: weft_core::overlay_switch::overlays_feature(cfg.fastdp),
    };
    let listen = SocketAddr::new(cfg.host.unwrap_or(IpAddr::from([0, 0, 0, 0])), cfg.port);
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| StartError::Bind(format!("tcp {listen}"), e))?;
    let udp = tokio::net::UdpSocket::bind(listen)
        .await
        .map_err(|e| StartError::Bind(format!("udp {listen}"), e))?;
    // Coalesced receives (UDP GRO): a run of equal-size datagrams sent with UDP GSO arrives
    // as one buffer. Without it the socket still works, a datagram per read.
    if let Err(e) = weft_netdev::enable_udp_gro(&udp) {
        tracing::info!("{e}");
    }
    if let Err(e) = weft_netdev::set_socket_buffers(&udp, SLEEVE_SOCKET_BUFFER) {
        tracing::info!("{e}");
    }
    let http = tokio::net::TcpListener::bind(cfg.http_addr)
        .await
        .map_err(|e| StartError::Bind(format!("http {}", cfg.http_addr), e))?;
    let status_listener = match cfg.status_addr {
        Some(a) => Some(
            tokio::net::TcpListener::bind(a)
                .await
                .map_err(|e| StartError::Bind(format!("status {a}"), e))?,
        ),
        None => None,
    };
    tracing::info!(
        "Command line peers: {:?}; our name is {}({})",
        peers,
        name,
        cfg.nickname
    );
    let mesh_cfg = MeshConfig {
        identity: identity.clone(),
        port: cfg.port,
        conn_limit: cfg.conn_limit,
        discovery: cfg.discovery,
        fastdp: cfg.fastdp,
        mtu: cfg.mtu(),
        topology_deltas: true,
        gossip_interval: weft_core::mesh::GOSSIP_INTERVAL,
    };
    let mesh = Mesh::new(mesh_cfg, rng.gen(), Instant::now());
    let (cmd_tx, cmd_rx) = mpsc::channel(64);
    // Devices first: `weft launch` returns once the API answers, and `weft attach` right
    // after it must find the bridge.
    let dataplane = dataplane::Dataplane::setup(
        name,
        cfg.mtu(),
        cfg.fastdp,
        cfg.port,
        cfg.http_addr,
        cfg.status_addr,
    )
    .await?;
    tracing::info!(
        "{}",
        if cfg.password.is_some() {
            "Communication between peers via untrusted networks is encrypted."
        } else {
            "Communication between peers is unencrypted."
        }
    );
    dataplane::Dataplane::spawn_docker_forward();
    let info = Arc::new(RouterInfo {
        encryption: cfg.password.is_some(),
        trusted_subnets: cfg.trusted_subnets.iter().map(|c| c.to_string()).collect(),
        interface: dataplane.interface(),
    });
    let mut links = channel_link::Links::default();
    let liveness = channel_link::StartLiveness::query(cfg.docker).await;
    let ipam_handle = match &cfg.ipam {
        Some(ipam_cfg) => {
            let link = links.add(
                weft_core::ipam::channel::is_ipam_channel,
                weft_core::ipam::channel::register,
            );
            let h = ipam::task::spawn(
                ipam_cfg,
                name,
                cfg.nickname.clone(),
                identity.uid,
                store.clone(),
                ipam::task::AtStart {
                    pre_claims: Vec::new(),
                    liveness: &liveness,
                },
                link,
            )
            .ok_or_else(|| {
                StartError::Config(format!("--ipalloc-range {} is not usable", ipam_cfg.range))
            })?;
            Some(h)
        }
        None => None,
    };
    let dns_handle = match &cfg.dns {
        Some(dns_cfg) => {
            let listen = dns_cfg.listen_on(dataplane.docker_bridge_addr);
            let (udp, tcp) = bind_dns(listen, dns_cfg.listen.is_some()).await?;
            let link = links.add(
                weft_core::dns::channel::is_dns_channel,
                weft_core::dns::channel::register,
            );
            let udp = match udp.map(tokio::net::UdpSocket::into_std).transpose() {
                Ok(u) => u,
                Err(e) => return Err(StartError::Bind(format!("dns udp {listen}"), e)),
            };
            let h = dns::task::spawn(dns_cfg, listen, name, store.clone(), &liveness, link, udp);
            if let Some(l) = tcp {
                dns::server::spawn(l, h.clone());
            }
            Some(h)
        }
        None => None,
    };
    let parts = docker_parts::Parts::new(
        ipam_handle.clone(),
        dns_handle.clone(),
        cfg.run_dir.clone(),
        cfg.docker,
    );
    let started = async {
        if let Some(p) = cfg.plugin.clone() {
            parts.start_plugin(p).await?;
        }
        if let Some(p) = cfg.proxy.clone().filter(|_| cfg.docker) {
            parts.start_proxy(p).await?;
        }
        Ok::<_, docker_parts::PartError>(())
    };
    if let Err(e) = started.await {
        parts.stop_all().await;
        return Err(match e {
            docker_parts::PartError::Start(e) => e,
            other => StartError::Config(other.to_string()),
        });
    }
    if cfg.docker {
        docker_watch::spawn(docker_watch::Listeners {
            ipam: ipam_handle.clone(),
            dns: dns_handle.clone(),
            parts: Some(parts.clone()),
            plugin_names: plugin::watch::Registered::default(),
        });
    }
    let api = http::Api {
        commands: cmd_tx,
        info,
        ipam: ipam_handle,
        dns: dns_handle,
        parts: parts.clone(),
        token: Arc::new(token),
        plugin: cfg
            .plugin
            .clone()
            .unwrap_or_else(plugin::PluginConfig::from_env),
    };
    if let Some(l) = status_listener {
        let routes = http::status_routes(api.clone());
        tokio::spawn(async move {
            let _ = axum::serve(l, routes).await;
        });
    }
    tokio::spawn(async move {
        let _ = axum::serve(http, http::control_routes(api)).await;
    });
    let driver = driver::Driver {
        identity,
        password: cfg.password.as_ref().map(|p| p.0.clone()),
        trusted_subnets: cfg.trusted_subnets.clone(),
        sleeve_aead: cfg.sleeve_aead,
        listener,
        udp,
        host: cfg.host,
        store,
        dataplane,
        links,
    };
    // Held open until we return: `weft stop` knows this router by it.
    let _pid_file = run_dir.write_pid()?;
    tokio::select! {
        () = driver.run(mesh, peers, cmd_rx) => {}
        () = shutdown_signal() => tracing::info!("=> shutting down"),
    }
    parts.stop_all().await;
    Ok(())
}

/// The DNS server's sockets. A listen address the user gave must be bound; the default one
/// (the Docker bridge's, or all addresses without one) may be taken by another DNS server,
/// and then weftDNS runs without a server: names are still registered and gossiped.
async fn bind_dns(
    a: SocketAddr,
    given: bool,
) -> Result<
    (
        Option<tokio::net::UdpSocket>,
        Option<tokio::net::TcpListener>,
    ),
    StartError,
> {
    let bound = async {
        let udp = tokio::net::UdpSocket::bind(a)
            .await
            .map_err(|e| StartError::Bind(format!("dns udp {a}"), e))?;
        let tcp = tokio::net::TcpListener::bind(a)
            .await
            .map_err(|e| StartError::Bind(format!("dns tcp {a}"), e))?;
        Ok::<_, StartError>((udp, tcp))
    };
    match bound.await {
        Ok((u, t)) => Ok((Some(u), Some(t))),
        Err(e) if !given => {
            tracing::warn!("[dns] {e}; serving no queries (give --dns-listen-address to choose)");
            Ok((None, None))
        }
        Err(e) => Err(e),
    }
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        std::future::pending::<()>().await;
        return;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}
