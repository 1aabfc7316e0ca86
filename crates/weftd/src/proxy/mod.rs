//! The Docker API proxy (Weave Net's `weave proxy`, on unless `--proxy=false`/`--no-proxy`,
//! and never with `--no-docker`): a Docker API endpoint in the router that passes every call
//! to the daemon at `DOCKER_HOST` and changes a few (`calls`, `rewrite`) so that containers
//! created and started through it come up attached to the weave network, with weftDNS, before
//! their own command runs (`attach`). Clients reach it with `eval $(weft env)`.
//!
//! Listening (`-H`): all `unix://` addresses share one real socket, `$WEFT_RUN_DIR/weave.sock`
//! (owner and mode copied from the daemon's socket); any other Unix path asked for is made a
//! symlink to it, removed again when the router stops. Relative Unix paths are refused with
//! Weave's words. `tcp://host:port` listens in the clear, or with TLS under `--tls` or
//! `--tlsverify` (`tls`: the certificate files are read when the proxy starts, if a TCP
//! listener needs them; a connection's handshake is done in its own task, bounded by the time
//! a request head gets).
//!
//! weavewait: the router copies the static `weft-wait` binary (found as `WEFT_WAIT`, or next
//! to the running `weft` binary) into three directories under `$WEFT_RUN_DIR/weavewait/` —
//! `w`, `w-nomcast` and `w-noop`, the last two with a `mode` file naming the variant — and
//! containers get one of them bind-mounted read-only at `/w` (Weave Net used Docker volumes;
//! a host directory needs no volume container and goes with the router's run dir). Without the
//! binary the proxy still passes calls through but refuses to create containers it would
//! handle, saying why.
//!
//! A raw-stream hijack without `Upgrade:` (clients older than Docker 1.12) is passed both ways
//! when it is its connection's first request, as clients send it; a later one on a kept-alive
//! connection passes the daemon's output only.

mod attach;
pub mod calls;
pub mod cidr;
pub mod rewrite;
mod server;
pub mod tls;

use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, UnixListener};
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;
use weft_types::Ipv4Cidr;

pub use attach::Attacher;
pub use rewrite::HostnameRule;
pub use server::Upstream;
pub use tls::TlsSettings;

use crate::{dns, ipam, StartError};

/// The real socket's name in the run dir.
pub const SOCKET: &str = "weave.sock";
/// The default TCP address when `DOCKER_HOST` is TCP.
pub const DEFAULT_TCP: &str = "tcp://0.0.0.0:12375";
/// Connections served at once, over all listeners (attach and `logs -f` hold theirs).
const MAX_CONNECTIONS: usize = 256;
/// Where in the run dir the router puts its copies of weavewait.
pub const WAIT_DIR: &str = "weavewait";
/// The weavewait binary's name.
pub const WAIT_BINARY: &str = "weft-wait";

/// Weave's text for a relative Unix path.
pub const RELATIVE_UNIX: &str =
    "When launching the proxy, unix sockets must be specified as an absolute path.";

/// One `-H` address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListenAddr {
    /// `unix:///abs/path`.
    Unix(PathBuf),
    /// `tcp://host:port`.
    Tcp(String),
}

impl ListenAddr {
    /// Parses a `-H` value.
    pub fn parse(s: &str) -> Result<Self, String> {
        if let Some(p) = s.strip_prefix("unix://") {
            if !p.starts_with('/') {
                return Err(RELATIVE_UNIX.to_string());
            }
            return Ok(Self::Unix(PathBuf::from(p)));
        }
        if let Some(a) = s.strip_prefix("tcp://") {
            if a.rsplit_once(':')
                .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok())
            {
                return Ok(Self::Tcp(a.to_string()));
            }
        }
        Err(format!(
            "invalid proxy address {s:?}: expected unix:///absolute/path or tcp://host:port"
        ))
    }
}

impl std::fmt::Display for ListenAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Unix(p) => write!(f, "unix://{}", p.display()),
            Self::Tcp(a) => write!(f, "tcp://{a}"),
        }
    }
}

/// The proxy's flags as given on a command line, unchecked: what `weft launch-proxy` sends
/// the router (`POST /proxy`) and what [`ProxyConfig::from_flags`] checks.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ProxyFlags {
    /// `-H` values.
    pub hosts: Vec<String>,
    /// `DOCKER_HOST`, or empty for Docker's default socket.
    pub upstream: String,
    /// `--hostname-from-label`.
    pub hostname_from_label: String,
    /// `--hostname-match` (empty: `(.*)`).
    pub hostname_match: String,
    /// `--hostname-replacement` (empty: `$1`).
    pub hostname_replacement: String,
    /// `--rewrite-inspect`.
    pub rewrite_inspect: bool,
    /// `--no-default-ipalloc`.
    pub no_default_ipalloc: bool,
    /// `--without-dns`.
    pub without_dns: bool,
    /// `--no-multicast-route`.
    pub no_multicast_route: bool,
    /// `--no-rewrite-hosts`.
    pub no_rewrite_hosts: bool,
    /// `--tls`.
    pub tls: bool,
    /// `--tlsverify`.
    pub tlsverify: bool,
    /// `--tlscacert`; empty: `ca.pem` in [`tls::default_cert_dir`] (the router's).
    pub tlscacert: String,
    /// `--tlscert`; empty: `cert.pem` there.
    pub tlscert: String,
    /// `--tlskey`; empty: `key.pem` there.
    pub tlskey: String,
}

/// The `Service: proxy` section of `weft status`.
pub fn render_section(addrs: &[String]) -> String {
    let list = if addrs.is_empty() {
        "none".to_string()
    } else {
        addrs.join(", ")
    };
    format!("\n{:>15}: proxy\n{:>15}: {list}\n", "Service", "Address")
}

/// The proxy's checked configuration.
#[derive(Debug, Clone)]
pub struct ProxyConfig {
    /// `-H`; empty: the default for `upstream`.
    pub listen: Vec<ListenAddr>,
    /// `DOCKER_HOST`.
    pub upstream: String,
    /// `--hostname-from-label`, `--hostname-match`, `--hostname-replacement`.
    pub rule: HostnameRule,
    /// `--rewrite-inspect`.
    pub rewrite_inspect: bool,
    /// `--no-default-ipalloc`.
    pub no_default_ipalloc: bool,
    /// `--without-dns`.
    pub without_dns: bool,
    /// `--no-multicast-route`.
    pub no_multicast_route: bool,
    /// `--no-rewrite-hosts`.
    pub no_rewrite_hosts: bool,
    /// The weavewait binary; `None`: look for it.
    pub wait_binary: Option<PathBuf>,
    /// TLS on the TCP listeners (`--tls`, `--tlsverify`); `None`: in the clear.
    pub tls: Option<TlsSettings>,
}

impl ProxyConfig {
    /// Checks `f`: every `-H` address, the hostname expression and `DOCKER_HOST`; the error
    /// is one line naming the flag.
    pub fn from_flags(f: &ProxyFlags) -> Result<Self, String> {
        let listen = f
            .hosts
            .iter()
            .map(|h| ListenAddr::parse(h))
            .collect::<Result<Vec<_>, _>>()?;
        let rule = HostnameRule::new(
            &f.hostname_from_label,
            or(&f.hostname_match, "(.*)"),
            or(&f.hostname_replacement, "$1"),
        )?;
        let upstream = or(&f.upstream, weft_docker::DEFAULT_HOST).to_string();
        Upstream::parse(&upstream)?;
        Ok(Self {
            listen,
            upstream,
            rule,
            rewrite_inspect: f.rewrite_inspect,
            no_default_ipalloc: f.no_default_ipalloc,
            without_dns: f.without_dns,
            no_multicast_route: f.no_multicast_route,
            no_rewrite_hosts: f.no_rewrite_hosts,
            wait_binary: None,
            tls: (f.tls || f.tlsverify)
                .then(|| TlsSettings::new(f.tlsverify, &f.tlscacert, &f.tlscert, &f.tlskey)),
        })
    }

    /// The addresses to listen on: those given, else Weave's default for the daemon's
    /// address (`unix://<run dir>/weave.sock`, or `tcp://0.0.0.0:12375` when `DOCKER_HOST`
    /// is TCP).
    pub fn addresses(&self, run_dir: &Path) -> Vec<ListenAddr> {
        if !self.listen.is_empty() {
            return self.listen.clone();
        }
        if self.upstream.starts_with("tcp://") {
            vec![ListenAddr::Tcp(DEFAULT_TCP["tcp://".len()..].to_string())]
        } else {
            vec![ListenAddr::Unix(run_dir.join(SOCKET))]
        }
    }
}

/// `s`, or `default` when it is empty.
fn or<'a>(s: &'a str, default: &'a str) -> &'a str {
    if s.is_empty() {
        default
    } else {
        s
    }
}

/// Where weavewait is: `WEFT_WAIT`, else `weft-wait` next to this binary (or where a cargo
/// build for the host's target puts it, beside the build's own directory).
pub fn find_wait_binary() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("WEFT_WAIT").filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(p));
    }
    let exe = std::env::current_exe().ok()?;
    let dir = exe.parent()?;
    let mut candidates = vec![dir.join(WAIT_BINARY)];
    if let (Some(profile), Some(target)) = (dir.file_name(), dir.parent()) {
        candidates.push(
            target
                .join("x86_64-unknown-linux-gnu")
                .join(profile)
                .join(WAIT_BINARY),
        );
    }
    candidates.into_iter().find(|p| p.is_file())
}

/// Copies weavewait into the three `/w` directories; returns the default one's path.
fn install_weavewait(run_dir: &Path, binary: Option<&Path>) -> Result<WaitDirs, String> {
    let binary = binary.ok_or_else(|| {
        format!("weavewait is not available: install {WAIT_BINARY} next to weft or set WEFT_WAIT")
    })?;
    let root = run_dir.join(WAIT_DIR);
    let mut dirs = Vec::new();
    for (name, mode) in [
        ("w", None),
        ("w-nomcast", Some("nomcast")),
        ("w-noop", Some("noop")),
    ] {
        let d = root.join(name);
        let placed = (|| {
            std::fs::create_dir_all(&d)?;
            let target = d.join("w");
            let tmp = d.join(".w.new");
            std::fs::copy(binary, &tmp)?;
            std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o755))?;
            std::fs::rename(&tmp, &target)?;
            match mode {
                Some(m) => std::fs::write(d.join("mode"), m),
                None => match std::fs::remove_file(d.join("mode")) {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
                    _ => Ok(()),
                },
            }
        })();
        placed.map_err(|e| format!("weavewait: {} from {}: {e}", d.display(), binary.display()))?;
        dirs.push(d);
    }
    Ok(WaitDirs {
        default: dirs[0].clone(),
        nomcast: dirs[1].clone(),
    })
}

#[derive(Debug, Clone)]
struct WaitDirs {
    default: PathBuf,
    nomcast: PathBuf,
}

/// A container's weave addresses and the MAC of its `ethwe` (for `--rewrite-inspect`).
fn weave_addrs(pid: u32) -> Option<(Vec<Ipv4Cidr>, String)> {
    let e = weft_attach::blocking::interface(&weft_attach::Container::Pid(pid)).ok()??;
    Some((e.cidrs, weft_netdev::format_mac(&e.mac)))
}

/// The running proxy.
#[derive(Debug)]
pub struct Proxy {
    addrs: Vec<ListenAddr>,
    real_socket: Option<PathBuf>,
    links: Vec<PathBuf>,
    tasks: Vec<JoinHandle<()>>,
    /// Attaches containers on Docker `start` events.
    pub attacher: Attacher,
}

impl Proxy {
    /// Binds every listener (a failure undoes the others), installs weavewait, and serves.
    /// `dns_server` is the address containers are given as DNS server.
    pub fn start(
        cfg: ProxyConfig,
        run_dir: &Path,
        ipam: Option<ipam::task::Handle>,
        dns: Option<dns::task::Handle>,
    ) -> Result<Self, StartError> {
        let upstream = Upstream::parse(&cfg.upstream).map_err(StartError::Config)?;
        let addrs = cfg.addresses(run_dir);
        // The certificate files matter to TCP listeners only; read before anything is done.
        let tls = match cfg.tls.as_ref() {
            Some(t) if addrs.iter().any(|a| matches!(a, ListenAddr::Tcp(_))) => {
                Some(t.acceptor().map_err(StartError::Config)?)
            }
            _ => None,
        };
        let binary = cfg.wait_binary.clone().or_else(find_wait_binary);
        let wait_dirs = install_weavewait(run_dir, binary.as_deref());
        if let Err(e) = &wait_dirs {
            tracing::warn!("[proxy] {e}");
        }
        let wait_dir = wait_dirs.map(|d| {
            if cfg.no_multicast_route {
                d.nomcast
            } else {
                d.default
            }
        });
        let dns_settings = match (&dns, cfg.without_dns) {
            (Some(d), false) if !d.listen.ip().is_unspecified() => Some(rewrite::DnsSettings {
                server: d.listen.ip().to_string(),
                domain: d.domain.clone(),
            }),
            _ => None,
        };
        let attacher = Attacher::new(
            ipam,
            dns,
            cfg.no_default_ipalloc,
            !cfg.no_multicast_route,
            !cfg.without_dns,
            !cfg.no_rewrite_hosts,
        );
        let shared = Arc::new(server::Shared {
            upstream: upstream.clone(),
            docker: tokio::sync::OnceCell::new(),
            wait_dir,
            rule: cfg.rule.clone(),
            dns: dns_settings,
            no_default_ipalloc: cfg.no_default_ipalloc,
            rewrite_inspect: cfg.rewrite_inspect,
            attacher: attacher.clone(),
        });
        let mut proxy = Self {
            addrs: addrs.clone(),
            real_socket: None,
            links: Vec::new(),
            tasks: Vec::new(),
            attacher: attacher.clone(),
        };
        let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
        if let Err(e) = proxy.bind_all(run_dir, &upstream, tls.as_ref(), &shared, &slots) {
            proxy.stop_now();
            return Err(e);
        }
        let tls = match (&tls, &cfg.tls) {
            (Some(_), Some(t)) if t.verify => " (TCP with TLS, client certificates verified)",
            (Some(_), _) => " (TCP with TLS)",
            _ => "",
        };
        tracing::info!(
            "[proxy] listening on {}{tls}; Docker at {upstream}",
            addrs
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        );
        Ok(proxy)
    }

    fn bind_all(
        &mut self,
        run_dir: &Path,
        upstream: &Upstream,
        tls: Option<&TlsAcceptor>,
        shared: &Arc<server::Shared>,
        slots: &Arc<tokio::sync::Semaphore>,
    ) -> Result<(), StartError> {
        let real = run_dir.join(SOCKET);
        for a in self.addrs.clone() {
            match a {
                ListenAddr::Unix(path) => {
                    if self.real_socket.is_none() {
                        let _ = std::fs::remove_file(&real);
                        let l = UnixListener::bind(&real).map_err(|e| {
                            StartError::Bind(format!("proxy {}", real.display()), e)
                        })?;
                        copy_owner_and_mode(upstream, &real);
                        self.real_socket = Some(real.clone());
                        let (s, sl) = (shared.clone(), slots.clone());
                        self.tasks
                            .push(tokio::spawn(serve(Listener::Unix(l), s, sl)));
                    }
                    if path != real {
                        link_to(&path, &real).map_err(|e| {
                            StartError::Bind(format!("proxy {}", path.display()), e)
                        })?;
                        self.links.push(path);
                    }
                }
                ListenAddr::Tcp(addr) => {
                    let std = std::net::TcpListener::bind(&addr)
                        .and_then(|l| l.set_nonblocking(true).map(|()| l))
                        .map_err(|e| StartError::Bind(format!("proxy tcp://{addr}"), e))?;
                    let l = TcpListener::from_std(std)
                        .map_err(|e| StartError::Bind(format!("proxy tcp://{addr}"), e))?;
                    let (s, sl) = (shared.clone(), slots.clone());
                    self.tasks
                        .push(tokio::spawn(serve(Listener::Tcp(l, tls.cloned()), s, sl)));
                }
            }
        }
        Ok(())
    }

    /// The addresses it listens on, one a line, for `GET /proxyaddrs`.
    pub fn addresses(&self) -> Vec<String> {
        self.addrs.iter().map(ToString::to_string).collect()
    }

    fn stop_now(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
        for l in &self.links {
            let _ = std::fs::remove_file(l);
        }
        if let Some(s) = &self.real_socket {
            let _ = std::fs::remove_file(s);
        }
    }

    /// Stops listening and removes the socket and its links.
    pub fn stop(mut self) {
        self.stop_now();
    }
}

/// The socket gets the daemon socket's owner and mode, so whoever may use Docker may use it.
fn copy_owner_and_mode(upstream: &Upstream, socket: &Path) {
    let Upstream::Unix(docker) = upstream else {
        return;
    };
    let Ok(m) = std::fs::metadata(docker) else {
        return;
    };
    let _ = std::os::unix::fs::chown(socket, Some(m.uid()), Some(m.gid()));
    let _ = std::fs::set_permissions(socket, std::fs::Permissions::from_mode(m.mode() & 0o777));
}

/// Makes `path` a symlink to `real` (replacing a socket or link left there, never a regular
/// file or directory).
fn link_to(path: &Path, real: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::FileTypeExt as _;
    if let Ok(m) = std::fs::symlink_metadata(path) {
        let t = m.file_type();
        if t.is_symlink() || t.is_socket() {
            std::fs::remove_file(path)?;
        } else {
            return Err(std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                "exists and is not a socket",
            ));
        }
    }
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::os::unix::fs::symlink(real, path)
}

/// A bound listener.
enum Listener {
    Unix(UnixListener),
    /// With TLS when it has an acceptor.
    Tcp(TcpListener, Option<TlsAcceptor>),
}

/// Accepts connections for as long as the proxy runs, each served by a task of its own while
/// a slot is free.
async fn serve(l: Listener, shared: Arc<server::Shared>, slots: Arc<tokio::sync::Semaphore>) {
    loop {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let accepted = match &l {
            Listener::Unix(u) => u
                .accept()
                .await
                .map(|(s, _)| serve_connection(s, shared.clone(), slot)),
            Listener::Tcp(t, None) => t
                .accept()
                .await
                .map(|(s, _)| serve_connection(s, shared.clone(), slot)),
            Listener::Tcp(t, Some(tls)) => t
                .accept()
                .await
                .map(|(s, peer)| serve_tls_connection(s, peer, tls.clone(), shared.clone(), slot)),
        };
        if let Err(e) = accepted {
            tracing::warn!("[proxy] accept: {e}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

fn serve_connection<S>(io: S, shared: Arc<server::Shared>, slot: tokio::sync::OwnedSemaphorePermit)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    tokio::spawn(async move {
        let _slot = slot;
        server::serve_connection(io, shared).await;
    });
}

/// Serves a TCP connection after its TLS handshake, which gets as long as a request head:
/// a client that never finishes it holds its slot no longer, and the accept loop never waits
/// for it.
fn serve_tls_connection(
    io: tokio::net::TcpStream,
    peer: std::net::SocketAddr,
    tls: TlsAcceptor,
    shared: Arc<server::Shared>,
    slot: tokio::sync::OwnedSemaphorePermit,
) {
    tokio::spawn(async move {
        let _slot = slot;
        match tokio::time::timeout(server::HEAD_TIMEOUT, tls.accept(io)).await {
            Ok(Ok(io)) => server::serve_connection(io, shared).await,
            Ok(Err(e)) => tracing::debug!("[proxy] TLS handshake from {peer}: {e}"),
            Err(_) => tracing::debug!("[proxy] TLS handshake from {peer}: timed out"),
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_addresses() {
        assert_eq!(
            ListenAddr::parse("unix:///var/run/weave/weave.sock"),
            Ok(ListenAddr::Unix("/var/run/weave/weave.sock".into()))
        );
        assert_eq!(
            ListenAddr::parse("unix://rel/x.sock"),
            Err(RELATIVE_UNIX.to_string())
        );
        assert_eq!(
            ListenAddr::parse("tcp://0.0.0.0:12375"),
            Ok(ListenAddr::Tcp("0.0.0.0:12375".into()))
        );
        for bad in ["tcp://x", "tcp://:1", "http://a:1", "/abs"] {
            assert!(ListenAddr::parse(bad).is_err(), "{bad}");
        }
        let cfg = ProxyConfig::from_flags(&ProxyFlags::default()).unwrap();
        assert_eq!(cfg.upstream, "unix:///var/run/docker.sock");
        assert_eq!(
            cfg.addresses(Path::new("/run/weft")),
            [ListenAddr::Unix("/run/weft/weave.sock".into())]
        );
        let tcp = ProxyConfig {
            upstream: "tcp://1.2.3.4:2375".into(),
            ..cfg
        };
        assert_eq!(
            tcp.addresses(Path::new("/run/weft"))[0].to_string(),
            "tcp://0.0.0.0:12375"
        );
    }

    #[test]
    fn flags_are_checked() {
        let f = ProxyFlags {
            hosts: vec!["tcp://127.0.0.1:12375".into(), "unix:///tmp/x.sock".into()],
            upstream: "tcp://10.0.0.1:2375".into(),
            hostname_match: "^aaa-(.*)$".into(),
            rewrite_inspect: true,
            ..ProxyFlags::default()
        };
        // What `weft launch-proxy` sends comes back the same.
        let sent: ProxyFlags = serde_json::from_str(&serde_json::to_string(&f).unwrap()).unwrap();
        assert_eq!(sent, f);
        let c = ProxyConfig::from_flags(&sent).unwrap();
        assert_eq!(c.listen.len(), 2);
        assert!(c.rewrite_inspect);
        assert_eq!(c.rule.derive(Some("aaa-web"), None), "web");
        for bad in [
            ProxyFlags {
                hosts: vec!["unix://rel.sock".into()],
                ..ProxyFlags::default()
            },
            ProxyFlags {
                hostname_match: "(".into(),
                ..ProxyFlags::default()
            },
            ProxyFlags {
                upstream: "ssh://host".into(),
                ..ProxyFlags::default()
            },
        ] {
            assert!(ProxyConfig::from_flags(&bad).is_err(), "{bad:?}");
        }
        assert!(serde_json::from_str::<ProxyFlags>(r#"{"tls": true, "x": 1}"#).is_err());
    }

    /// The first line of what the proxy answers to a `GET /_ping` on `io`, or what went
    /// wrong.
    async fn ping<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(mut io: S) -> String {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let asked = async {
            io.write_all(b"GET /_ping HTTP/1.1\r\nHost: d\r\nConnection: close\r\n\r\n")
                .await?;
            io.flush().await?;
            let mut got = Vec::new();
            let mut b = [0; 256];
            while !got.contains(&b'\n') {
                match io.read(&mut b).await? {
                    0 => break,
                    n => got.extend_from_slice(&b[..n]),
                }
            }
            Ok::<_, std::io::Error>(
                String::from_utf8_lossy(&got)
                    .lines()
                    .next()
                    .unwrap_or("")
                    .to_string(),
            )
        };
        match tokio::time::timeout(Duration::from_secs(10), asked).await {
            Ok(Ok(line)) => line,
            Ok(Err(e)) => format!("error: {e}"),
            Err(_) => "timed out".into(),
        }
    }

    #[tokio::test]
    async fn tls_on_tcp_listeners_only() {
        let certs = tls::tests::TestCerts::new("proxy");
        let run_dir = certs.dir.join("run");
        std::fs::create_dir_all(&run_dir).unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let addr = format!("127.0.0.1:{port}");
        let base = ProxyConfig::from_flags(&ProxyFlags {
            // No daemon: every call answers an error, which is all these checks need.
            upstream: format!("unix://{}/no-docker.sock", run_dir.display()),
            ..ProxyFlags::default()
        })
        .unwrap();
        let cfg = ProxyConfig {
            listen: vec![
                ListenAddr::Tcp(addr.clone()),
                ListenAddr::Unix(run_dir.join(SOCKET)),
            ],
            tls: Some(certs.settings(true)),
            ..base.clone()
        };
        let proxy = Proxy::start(cfg, &run_dir, None, None).unwrap();
        let tcp = || tokio::net::TcpStream::connect(&addr);
        let name = || rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
        // A client that never starts its handshake holds up no other.
        let _silent = tcp().await.unwrap();
        let io = certs
            .connector(Some("client"))
            .connect(name(), tcp().await.unwrap())
            .await
            .unwrap();
        assert!(ping(io).await.starts_with("HTTP/1.1 "));
        for who in [None, Some("stranger")] {
            let answer = match certs
                .connector(who)
                .connect(name(), tcp().await.unwrap())
                .await
            {
                Ok(io) => ping(io).await,
                Err(e) => e.to_string(),
            };
            assert!(!answer.starts_with("HTTP/"), "{who:?}: {answer}");
        }
        assert!(!ping(tcp().await.unwrap()).await.starts_with("HTTP/"));
        // The Unix socket stays plain.
        let unix = tokio::net::UnixStream::connect(run_dir.join(SOCKET))
            .await
            .unwrap();
        assert!(ping(unix).await.starts_with("HTTP/1.1 "));
        proxy.stop();

        // A file that cannot be read stops the start, naming flag and file; it is not read
        // when no TCP listener needs it.
        let missing = TlsSettings {
            cert: certs.dir.join("missing.pem"),
            ..certs.settings(false)
        };
        let e = Proxy::start(
            ProxyConfig {
                listen: vec![ListenAddr::Tcp(addr.clone())],
                tls: Some(missing.clone()),
                ..base.clone()
            },
            &run_dir,
            None,
            None,
        )
        .unwrap_err()
        .to_string();
        assert!(e.starts_with("cannot load --tlscert "), "{e}");
        assert!(e.contains("missing.pem"), "{e}");
        let unix_only = ProxyConfig {
            tls: Some(missing),
            ..base
        };
        Proxy::start(unix_only, &run_dir, None, None)
            .unwrap()
            .stop();
    }

    #[test]
    fn tls_flags() {
        let c = ProxyConfig::from_flags(&ProxyFlags {
            tlsverify: true,
            tlscacert: "/c/ca".into(),
            tlscert: "/c/cert".into(),
            tlskey: "/c/key".into(),
            ..ProxyFlags::default()
        })
        .unwrap();
        assert_eq!(
            c.tls,
            Some(TlsSettings {
                verify: true,
                cacert: "/c/ca".into(),
                cert: "/c/cert".into(),
                key: "/c/key".into(),
            })
        );
        let c = ProxyConfig::from_flags(&ProxyFlags {
            tls: true,
            ..ProxyFlags::default()
        })
        .unwrap();
        assert_eq!(c.tls, Some(TlsSettings::new(false, "", "", "")));
        assert_eq!(
            ProxyConfig::from_flags(&ProxyFlags::default()).unwrap().tls,
            None
        );
    }

    #[test]
    fn weavewait_directories() {
        let dir = std::env::temp_dir().join(format!("weft-proxy-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let bin = dir.join("bin");
        std::fs::write(&bin, b"#!/bin/sh\n").unwrap();
        let d = install_weavewait(&dir, Some(&bin)).unwrap();
        assert!(d.default.join("w").is_file());
        assert!(!d.default.join("mode").exists());
        assert_eq!(
            std::fs::read_to_string(d.nomcast.join("mode")).unwrap(),
            "nomcast"
        );
        assert_eq!(
            std::fs::read_to_string(dir.join("weavewait/w-noop/mode")).unwrap(),
            "noop"
        );
        assert!(install_weavewait(&dir, None)
            .unwrap_err()
            .contains("WEFT_WAIT"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
