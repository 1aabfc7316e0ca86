//! The client side of the Docker API proxy: `weft env [--restore]` and `weft config` (the
//! proxy's address from the router's `GET /proxyaddrs`, in Weave Net's output forms), and
//! the warning `weft stop` gives when `DOCKER_HOST` points at the proxy; and the proxy's
//! flags, which `weft launch` and `weft launch-proxy` take, with the TLS flags copied from the
//! running Docker daemon when none is given (Weave's TLS detection).

use std::path::Path;
use std::process::ExitCode;

use clap::ArgAction;
use weftd::proxy::tls::{self, DaemonTls};
use weftd::proxy::{ProxyConfig, ProxyFlags};

use crate::client::{self, Reply};
use crate::{http_addr, not_running, prog, usage_error};

/// The proxy's flags (Weave's names; booleans also as `--flag=true|false`). The TLS flags may
/// be repeated, the last winning: `weft launch` puts what it detects before the user's.
#[derive(clap::Args, Debug, Clone)]
pub(crate) struct ProxyArgs {
    /// Where the proxy listens: `unix:///absolute/path` or `tcp://host:port` (repeatable).
    #[arg(short = 'H', action = ArgAction::Append)]
    hosts: Vec<String>,
    /// The label whose value names a container for its hostname.
    #[arg(long, default_value = "")]
    hostname_from_label: String,
    /// A regular expression applied to the name.
    #[arg(long, default_value = "(.*)")]
    hostname_match: String,
    /// What each match of `--hostname-match` becomes.
    #[arg(long, default_value = "$1")]
    hostname_replacement: String,
    /// Container inspection shows the weave address.
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", action = ArgAction::Set, default_value = "false")]
    rewrite_inspect: bool,
    /// Leave the container's /etc/hosts as Docker wrote it.
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", action = ArgAction::Set, default_value = "false")]
    no_rewrite_hosts: bool,
    /// No weftDNS settings or names for its containers.
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", action = ArgAction::Set, default_value = "false")]
    without_dns: bool,
    /// No multicast route in its containers.
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", action = ArgAction::Set, default_value = "false")]
    no_multicast_route: bool,
    /// A container created without `WEAVE_CIDR` gets no address. The proxy is the only thing
    /// it changes, as in Weave Net; `attach` still allocates.
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", action = ArgAction::Set, default_value = "false")]
    pub(crate) no_default_ipalloc: bool,
    /// TCP listeners speak TLS.
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", action = ArgAction::Set, default_value = "false", overrides_with = "tls")]
    tls: bool,
    /// TLS, and clients must show a certificate signed by `--tlscacert`.
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", action = ArgAction::Set, default_value = "false", overrides_with = "tlsverify")]
    tlsverify: bool,
    /// The CA for client certificates (default: `ca.pem` in `$DOCKER_CERT_PATH` or `~/.docker`).
    #[arg(long, overrides_with = "tlscacert")]
    tlscacert: Option<String>,
    /// The proxy's certificate (default: `cert.pem` there).
    #[arg(long, overrides_with = "tlscert")]
    tlscert: Option<String>,
    /// Its key (default: `key.pem` there).
    #[arg(long, overrides_with = "tlskey")]
    tlskey: Option<String>,
    /// Do not copy the TLS flags from the running Docker daemon.
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", action = ArgAction::Set, default_value = "false", overrides_with = "no_detect_tls")]
    no_detect_tls: bool,
}

/// The TLS flags in effect.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Tls {
    on: bool,
    verify: bool,
    /// Absolute paths, the defaults filled in, when `on`.
    cacert: String,
    cert: String,
    key: String,
}

impl ProxyArgs {
    /// The flags as the router takes them, with this shell's `DOCKER_HOST`, and the TLS
    /// flags of the running Docker daemon when none is given and `--no-detect-tls` is not
    /// (a warning on stderr when there is no daemon to be seen).
    pub(crate) fn flags(&self) -> ProxyFlags {
        self.flags_with(self.tls(detect))
    }

    /// The checked configuration (detecting as [`Self::flags`] does).
    pub(crate) fn config(&self) -> Result<ProxyConfig, String> {
        ProxyConfig::from_flags(&self.flags())
    }

    /// Checks the flags as they are given, without looking for the daemon: for when the
    /// proxy may not run at all.
    pub(crate) fn check(&self) -> Result<(), String> {
        ProxyConfig::from_flags(&self.flags_with(self.tls(|| None))).map(drop)
    }

    /// What `weft launch` adds to the router's command line: the TLS flags it detects (see
    /// [`Self::flags`]; the warning goes to the user, not the router's log) and
    /// `--no-detect-tls`, so the router does not look again.
    pub(crate) fn detected_args(&self) -> Vec<String> {
        self.detected_args_with(detect)
    }

    fn detected_args_with(&self, daemon: impl FnOnce() -> Option<DaemonTls>) -> Vec<String> {
        if !self.detects() {
            return Vec::new();
        }
        let t = self.tls(daemon);
        let mut args = Vec::new();
        if t.on {
            args.push(if t.verify { "--tlsverify" } else { "--tls" }.to_string());
            // A path the user gave is on the command line already.
            for (flag, given, path) in [
                ("--tlscacert", &self.tlscacert, &t.cacert),
                ("--tlscert", &self.tlscert, &t.cert),
                ("--tlskey", &self.tlskey, &t.key),
            ] {
                if given.is_none() {
                    args.push(format!("{flag}={path}"));
                }
            }
        }
        args.push("--no-detect-tls".into());
        args
    }

    /// Whether the daemon's TLS flags are looked for: Weave's script looks unless `--tls`,
    /// `--tlsverify` or `--no-detect-tls` is given.
    fn detects(&self) -> bool {
        !(self.tls || self.tlsverify || self.no_detect_tls)
    }

    /// The TLS flags in effect, with `daemon` asked for the daemon's when [`Self::detects`].
    /// Paths given win over the daemon's; they are made absolute here, and the defaults are
    /// this shell's (`DOCKER_CERT_PATH`, `HOME`), since the router may run elsewhere.
    fn tls(&self, daemon: impl FnOnce() -> Option<DaemonTls>) -> Tls {
        let d = if self.detects() {
            daemon().unwrap_or_default()
        } else {
            DaemonTls {
                tls: self.tls,
                tlsverify: self.tlsverify,
                ..DaemonTls::default()
            }
        };
        let on = d.tls || d.tlsverify;
        if !on {
            return Tls::default();
        }
        let pick = |given: &Option<String>, found: &Option<String>| {
            given
                .as_deref()
                .or(found.as_deref())
                .unwrap_or("")
                .to_string()
        };
        let settings = tls::TlsSettings::new(
            d.tlsverify,
            &pick(&self.tlscacert, &d.tlscacert),
            &pick(&self.tlscert, &d.tlscert),
            &pick(&self.tlskey, &d.tlskey),
        );
        let absolute = |p: &Path| {
            std::path::absolute(p)
                .unwrap_or_else(|_| p.to_path_buf())
                .to_string_lossy()
                .into_owned()
        };
        Tls {
            on,
            verify: d.tlsverify,
            cacert: absolute(&settings.cacert),
            cert: absolute(&settings.cert),
            key: absolute(&settings.key),
        }
    }

    fn flags_with(&self, tls: Tls) -> ProxyFlags {
        ProxyFlags {
            hosts: self.hosts.clone(),
            upstream: self.daemon_host(),
            hostname_from_label: self.hostname_from_label.clone(),
            hostname_match: self.hostname_match.clone(),
            hostname_replacement: self.hostname_replacement.clone(),
            rewrite_inspect: self.rewrite_inspect,
            no_default_ipalloc: self.no_default_ipalloc,
            without_dns: self.without_dns,
            no_multicast_route: self.no_multicast_route,
            no_rewrite_hosts: self.no_rewrite_hosts,
            tls: tls.on,
            tlsverify: tls.verify,
            tlscacert: tls.cacert,
            tlscert: tls.cert,
            tlskey: tls.key,
        }
    }
}

impl ProxyArgs {
    /// The Docker daemon the router and its proxy talk to (empty: Docker's default): this
    /// shell's `DOCKER_HOST`, unless that is the proxy itself — after `eval $(weft env)` a
    /// launch would make the proxy its own upstream — and then the `ORIG_DOCKER_HOST` that
    /// `weft env` saved.
    pub(crate) fn daemon_host(&self) -> String {
        daemon_host(
            std::env::var("DOCKER_HOST").ok(),
            std::env::var("ORIG_DOCKER_HOST").ok(),
            &self.hosts,
            &crate::launch::run_dir(),
        )
    }
}

fn daemon_host(
    docker_host: Option<String>,
    orig: Option<String>,
    hosts: &[String],
    run_dir: &Path,
) -> String {
    let usable = |h: &String| !h.is_empty() && !is_proxy(h, hosts, run_dir);
    match docker_host.filter(|h| !h.is_empty()) {
        Some(h) if usable(&h) => h,
        Some(_) => orig.filter(usable).unwrap_or_default(),
        None => String::new(),
    }
}

/// Whether `addr` reaches the proxy these `-H` flags make: its Unix socket or one linked to
/// it, or a TCP address on one of its ports (a client may name the host any way).
fn is_proxy(addr: &str, hosts: &[String], run_dir: &Path) -> bool {
    if let Some(p) = addr.strip_prefix("unix://") {
        let real = run_dir.join(weftd::proxy::SOCKET);
        return Path::new(p) == real || hosts.iter().any(|h| h.strip_prefix("unix://") == Some(p));
    }
    let port = |a: &str| {
        a.strip_prefix("tcp://")
            .and_then(|a| a.trim_end_matches('/').rsplit_once(':'))
            .map(|(_, p)| p.to_string())
    };
    let Some(p) = port(addr) else {
        return false;
    };
    if hosts.is_empty() {
        // Without -H a proxy listens on TCP only when DOCKER_HOST is TCP, on the default port.
        return port(weftd::proxy::DEFAULT_TCP).as_deref() == Some(p.as_str());
    }
    hosts.iter().any(|h| port(h).as_deref() == Some(p.as_str()))
}

/// The running Docker daemon's TLS flags, or Weave's warning on stderr and `None` when no
/// daemon can be seen.
fn detect() -> Option<DaemonTls> {
    let found = tls::detect_daemon_tls(Path::new("/proc"));
    // On a host without Docker the proxy has nothing to pass on, and the warning would only
    // be noise on every launch.
    if found.is_none() && daemon_expected() {
        eprintln!("{}", detect_warning(&prog()));
    }
    found
}

/// Whether a Docker daemon is to be reached: its socket is there, or `DOCKER_HOST` is TCP.
fn daemon_expected() -> bool {
    let host = std::env::var("DOCKER_HOST")
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| weft_docker::DEFAULT_HOST.to_string());
    host.strip_prefix("unix://")
        .is_none_or(|p| Path::new(p).exists())
}

/// Weave's words when the daemon's TLS flags cannot be found.
fn detect_warning(prog: &str) -> String {
    format!("Warning: unable to detect proxy TLS configuration. To enable TLS, launch the proxy with '{prog} launch' and supply TLS options. To suppress this warning, supply the '--no-detect-tls' option.")
}

/// Weave's text when `--restore` has nothing to restore.
const NOTHING_TO_RESTORE: &str = "Nothing to restore. This is most likely because there was no preceding invocation of 'eval $(weave env)' in this shell.";

/// The proxy's first address, with `0.0.0.0` replaced by `proxy_host`.
fn first_address(body: &str, proxy_host: &str) -> Option<String> {
    let first = body.lines().map(str::trim).find(|l| !l.is_empty())?;
    Some(first.replace("0.0.0.0", proxy_host))
}

/// Where clients reach a proxy listening on all addresses: `PROXY_HOST`, else the host of a
/// TCP `DOCKER_HOST`, else the loopback address.
fn proxy_host(env_proxy_host: Option<&str>, docker_host: Option<&str>) -> String {
    if let Some(h) = env_proxy_host.filter(|h| !h.is_empty()) {
        return h.to_string();
    }
    docker_host
        .and_then(|d| d.strip_prefix("tcp://"))
        .and_then(|a| a.rsplit_once(':').map(|(h, _)| h.to_string()))
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "127.0.0.1".into())
}

/// The proxy's address, or the exit code of a failure already reported.
fn address() -> Result<String, ExitCode> {
    let docker_host = std::env::var("DOCKER_HOST").ok();
    let host = proxy_host(
        std::env::var("PROXY_HOST").ok().as_deref(),
        docker_host.as_deref(),
    );
    match client::get(&http_addr(), "/proxyaddrs", false) {
        Reply::Ok(body) => first_address(&body, &host).ok_or_else(|| {
            eprintln!(
                "The Docker API proxy is not running; start it with '{} launch-proxy'",
                prog()
            );
            ExitCode::from(1)
        }),
        Reply::Down => Err(not_running()),
        Reply::NotFound => {
            eprintln!("The router does not offer the Docker API proxy");
            Err(ExitCode::from(1))
        }
        Reply::Failed(_, body) => {
            eprintln!("{}", body.trim_end());
            Err(ExitCode::from(1))
        }
    }
}

/// What `env` prints for proxy address `addr` and the current `DOCKER_HOST`.
fn env_line(addr: &str, docker_host: Option<&str>) -> String {
    match docker_host {
        Some(d) if d == addr => format!("export DOCKER_HOST={addr}"),
        d => format!(
            "export DOCKER_HOST={addr} ORIG_DOCKER_HOST={}",
            d.unwrap_or("")
        ),
    }
}

/// `weft env [--restore]`.
pub(crate) fn env(args: &[String]) -> ExitCode {
    match args {
        [] => match address() {
            Ok(addr) => {
                let d = std::env::var("DOCKER_HOST").ok();
                outln!("{}", env_line(&addr, d.as_deref()));
                ExitCode::SUCCESS
            }
            Err(code) => code,
        },
        [r] if r == "--restore" => match std::env::var("ORIG_DOCKER_HOST") {
            Ok(orig) => {
                outln!("DOCKER_HOST={orig}");
                ExitCode::SUCCESS
            }
            Err(_) => {
                eprintln!("{NOTHING_TO_RESTORE}");
                ExitCode::from(1)
            }
        },
        _ => usage_error(),
    }
}

/// `weft config`.
pub(crate) fn config(args: &[String]) -> ExitCode {
    if !args.is_empty() {
        return usage_error();
    }
    match address() {
        Ok(addr) => {
            outln!("-H={addr}");
            ExitCode::SUCCESS
        }
        Err(code) => code,
    }
}

/// Before `weft stop`: Weave's warning when `DOCKER_HOST` is one of the proxy's addresses.
pub(crate) fn warn_before_stop() {
    let Some(d) = std::env::var("DOCKER_HOST").ok().filter(|d| !d.is_empty()) else {
        return;
    };
    let Reply::Ok(body) = client::get(&http_addr(), "/proxyaddrs", false) else {
        return;
    };
    let host = proxy_host(std::env::var("PROXY_HOST").ok().as_deref(), Some(&d));
    if body
        .lines()
        .any(|l| !l.trim().is_empty() && l.trim().replace("0.0.0.0", &host) == d)
    {
        eprintln!("WARNING: It appears that your environment is configured to use the Weave Docker API proxy. Stopping it will break this and subsequent docker invocations. To restore your environment, run 'eval $(weave env --restore)'.");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_proxy_is_never_its_own_daemon() {
        let run = Path::new("/run/weft");
        let s = |v: &str| Some(v.to_string());
        let none: &[String] = &[];
        assert_eq!(daemon_host(None, None, none, run), "");
        assert_eq!(
            daemon_host(s("unix:///var/run/docker.sock"), None, none, run),
            "unix:///var/run/docker.sock"
        );
        // After `eval $(weft env)`.
        assert_eq!(
            daemon_host(
                s("unix:///run/weft/weave.sock"),
                s("tcp://10.0.0.5:2375"),
                none,
                run
            ),
            "tcp://10.0.0.5:2375"
        );
        assert_eq!(
            daemon_host(s("unix:///run/weft/weave.sock"), s(""), none, run),
            ""
        );
        let linked = ["unix:///tmp/p.sock".to_string()];
        assert_eq!(daemon_host(s("unix:///tmp/p.sock"), None, &linked, run), "");
        assert_eq!(
            daemon_host(
                s("tcp://10.0.0.5:12375"),
                s("tcp://10.0.0.5:2375"),
                none,
                run
            ),
            "tcp://10.0.0.5:2375"
        );
        let tcp = ["tcp://0.0.0.0:4243".to_string()];
        assert_eq!(
            daemon_host(
                s("tcp://127.0.0.1:4243"),
                s("unix:///run/weft/weave.sock"),
                &tcp,
                run
            ),
            ""
        );
        assert_eq!(
            daemon_host(s("tcp://127.0.0.1:12375"), None, &tcp, run),
            "tcp://127.0.0.1:12375"
        );
    }

    #[test]
    fn env_output() {
        let a = "unix:///run/weft/weave.sock";
        assert_eq!(
            env_line(a, None),
            "export DOCKER_HOST=unix:///run/weft/weave.sock ORIG_DOCKER_HOST="
        );
        assert_eq!(
            env_line(a, Some("tcp://1.2.3.4:2375")),
            "export DOCKER_HOST=unix:///run/weft/weave.sock ORIG_DOCKER_HOST=tcp://1.2.3.4:2375"
        );
        assert_eq!(
            env_line(a, Some(a)),
            "export DOCKER_HOST=unix:///run/weft/weave.sock"
        );
    }

    #[derive(clap::Parser)]
    struct Flags {
        #[command(flatten)]
        proxy: ProxyArgs,
    }

    fn parse(args: &[&str]) -> ProxyArgs {
        use clap::Parser as _;
        Flags::try_parse_from(std::iter::once("weft").chain(args.iter().copied()))
            .unwrap()
            .proxy
    }

    fn default_path(file: &str) -> String {
        std::path::absolute(tls::default_cert_dir().join(file))
            .unwrap()
            .to_string_lossy()
            .into_owned()
    }

    fn no_daemon() -> Option<DaemonTls> {
        panic!("looked for the daemon")
    }

    #[test]
    fn tls_flags_given() {
        let f = parse(&["--tlsverify", "--tlscacert", "/c/ca.pem", "--tlscert=c.pem"]).flags();
        assert!(f.tlsverify);
        assert_eq!(f.tlscacert, "/c/ca.pem");
        assert_eq!(
            Path::new(&f.tlscert),
            std::env::current_dir().unwrap().join("c.pem")
        );
        assert_eq!(f.tlskey, default_path("key.pem"));
        let a = parse(&["--tls"]);
        assert_eq!(
            a.tls(no_daemon),
            Tls {
                on: true,
                verify: false,
                cacert: default_path("ca.pem"),
                cert: default_path("cert.pem"),
                key: default_path("key.pem"),
            }
        );
        assert!(a.detected_args_with(no_daemon).is_empty());
        // Paths alone turn nothing on; the last of a repeated flag wins.
        let a = parse(&["--tlscert=/x", "--no-detect-tls"]);
        assert_eq!(a.tls(no_daemon), Tls::default());
        assert!(a.detected_args_with(no_daemon).is_empty());
        assert!(
            !parse(&["--tls", "--tls=false", "--no-detect-tls"])
                .flags()
                .tls
        );
        assert_eq!(
            parse(&["--tlskey=/a", "--tlskey=/b", "--tls"])
                .flags()
                .tlskey,
            "/b"
        );
        assert!(parse(&["--tlsverify", "--tlscacert=/nowhere"])
            .check()
            .is_ok());
    }

    #[test]
    fn tls_flags_detected() {
        let a = parse(&["--tlscert=/mine.pem"]);
        let daemon = || {
            Some(DaemonTls {
                tlsverify: true,
                tlscacert: Some("/d/ca.pem".into()),
                tlscert: Some("/d/cert.pem".into()),
                ..DaemonTls::default()
            })
        };
        assert_eq!(
            a.tls(daemon),
            Tls {
                on: true,
                verify: true,
                cacert: "/d/ca.pem".into(),
                cert: "/mine.pem".into(),
                key: default_path("key.pem"),
            }
        );
        assert_eq!(
            a.detected_args_with(daemon),
            [
                "--tlsverify".to_string(),
                "--tlscacert=/d/ca.pem".into(),
                format!("--tlskey={}", default_path("key.pem")),
                "--no-detect-tls".into(),
            ]
        );
        // A daemon in the clear, or none: the router is told not to look again.
        let a = parse(&[]);
        assert_eq!(a.tls(|| Some(DaemonTls::default())), Tls::default());
        assert_eq!(a.detected_args_with(|| None), ["--no-detect-tls"]);
        // Where they land: before the user's own flags, which win.
        let mut argv = a.detected_args_with(daemon);
        argv.push("--tlsverify=false".into());
        let f = parse(&argv.iter().map(String::as_str).collect::<Vec<_>>()).flags();
        assert!(!f.tls && !f.tlsverify);
        assert_eq!(
            detect_warning("weave"),
            "Warning: unable to detect proxy TLS configuration. To enable TLS, launch the proxy with 'weave launch' and supply TLS options. To suppress this warning, supply the '--no-detect-tls' option."
        );
    }

    #[test]
    fn addresses() {
        assert_eq!(
            first_address("tcp://0.0.0.0:12375\nunix:///x", "10.0.0.1").as_deref(),
            Some("tcp://10.0.0.1:12375")
        );
        assert_eq!(first_address("", "h"), None);
        assert_eq!(proxy_host(Some("p"), None), "p");
        assert_eq!(proxy_host(None, Some("tcp://10.1.1.1:2375")), "10.1.1.1");
        assert_eq!(proxy_host(None, Some("unix:///x")), "127.0.0.1");
    }
}
