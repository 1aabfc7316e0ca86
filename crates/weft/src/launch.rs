//! Starting and stopping the router: `weft launch` (start `weft router` in the background and
//! wait for its API), `weft router` (the daemon in the foreground), `weft stop`, `weft reset`.

use std::net::{IpAddr, SocketAddr};
use std::os::unix::process::CommandExt as _;
use std::path::PathBuf;
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use clap::{ArgAction, Parser};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use weft_types::Ipv4Cidr;
use weft_wire::PeerName;
use weftd::dns::{DnsConfig, DnsConfigError, DnsFlags};
use weftd::ipam::{IpamConfig, IpamConfigError, IpamFlags, DEFAULT_RANGE};
use weftd::run_dir::{RouterProcess, RunDir};

use crate::client::{self, Reply};
use crate::routes::{self, Route};
use crate::{http_addr, prog};

/// The hidden command that checks a state database in a process of its own
/// (`weftd::store::check_main`).
pub(crate) const CHECK_STATE_DB: &str = "check-state-db";

/// Router flags, as `weft launch` and `weft router` take them (Weave's names; both
/// `--flag=value` and `--flag value`; booleans also as `--flag=true|false`).
#[derive(Parser, Debug)]
#[command(
    name = "weft launch",
    disable_help_flag = true,
    disable_version_flag = true
)]
struct RouterArgs {
    /// Peer name (MAC style, `::1` short forms allowed).
    #[arg(long)]
    name: Option<String>,
    /// Nickname; default: the host name.
    #[arg(long)]
    nickname: Option<String>,
    /// Mesh port (TCP and sleeve UDP).
    #[arg(long, env = "WEAVE_PORT", default_value_t = 6783)]
    port: u16,
    /// Address to listen on and dial from.
    #[arg(long)]
    host: Option<IpAddr>,
    /// Maximum number of connections (0 = unlimited).
    #[arg(long, default_value_t = 200)]
    conn_limit: usize,
    /// Only connect to the given targets.
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", action = ArgAction::Set, default_value = "false")]
    no_discovery: bool,
    /// Reconnect to the persisted targets.
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", action = ArgAction::Set, default_value = "false")]
    resume: bool,
    /// Never talk to a Docker daemon.
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", action = ArgAction::Set, default_value = "false")]
    no_docker: bool,
    /// The legacy Docker network plugin (on unless `--no-plugin` or `--plugin=false`).
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", action = ArgAction::Set, default_value = "true")]
    plugin: bool,
    /// No Docker network plugin.
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", action = ArgAction::Set, default_value = "false")]
    no_plugin: bool,
    /// The Docker API proxy (on unless `--proxy=false` or `--no-proxy`).
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", action = ArgAction::Set, default_value = "true")]
    proxy: bool,
    /// No Docker API proxy.
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", action = ArgAction::Set, default_value = "false")]
    no_proxy: bool,
    /// The proxy's own flags.
    #[command(flatten)]
    proxy_args: crate::proxy::ProxyArgs,
    /// Accepted for compatibility: weft never installs a restart policy.
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", action = ArgAction::Set, default_value = "false")]
    no_restart: bool,
    /// Sleeve only: no kernel-VXLAN fast datapath (also `WEAVE_NO_FASTDP`).
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", action = ArgAction::Set, default_value = "false")]
    no_fastdp: bool,
    /// Bridge MTU (also `WEAVE_MTU`); default 1376 with fastdp, 65535 without.
    #[arg(long, env = "WEAVE_MTU", value_parser = clap::value_parser!(u32).range(576..=65535))]
    mtu: Option<u32>,
    /// debug, info, warning or error.
    #[arg(long, default_value = "info")]
    log_level: String,
    /// Control API address.
    #[arg(long, env = "WEAVE_HTTP_ADDR", default_value = "127.0.0.1:6784")]
    http_addr: SocketAddr,
    /// Status and metrics address.
    #[arg(long, env = "WEAVE_STATUS_ADDR", default_value = "127.0.0.1:6782")]
    status_addr: SocketAddr,
    /// IPAM universe (default 10.32.0.0/12); an empty value turns IPAM off.
    #[arg(long, alias = "iprange")]
    ipalloc_range: Option<String>,
    /// Where `net:default` allocates (default: the whole range).
    #[arg(long)]
    ipalloc_default_subnet: Option<String>,
    /// How the IPAM ring starts: consensus[=N], seed=NAME,... or observer.
    #[arg(long)]
    ipalloc_init: Option<String>,
    /// Weave Net 1.x's `--ipalloc-init consensus=N`.
    #[arg(long)]
    init_peer_count: Option<u32>,
    /// No DNS server, no names.
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", action = ArgAction::Set, default_value = "false")]
    no_dns: bool,
    /// The domain weftDNS answers for (default weave.local.).
    #[arg(long)]
    dns_domain: Option<String>,
    /// IP:PORT of the DNS server (default: the Docker bridge's address, port 53).
    #[arg(long)]
    dns_listen_address: Option<String>,
    /// TTL of DNS answers, seconds (default 1).
    #[arg(long)]
    dns_ttl: Option<u32>,
    /// How long each upstream DNS server is given, milliseconds (default 5000).
    #[arg(long)]
    dns_fallback_timeout: Option<u64>,
    /// Where the upstream DNS servers are read from (default /etc/resolv.conf).
    #[arg(long)]
    resolv_conf: Option<String>,
    /// Mesh password: encrypts control connections, and the data of untrusted ones (also
    /// `WEAVE_PASSWORD`; `weft launch` hands it over in the environment, never on a command
    /// line).
    #[arg(long, env = "WEAVE_PASSWORD", hide_env_values = true)]
    password: Option<String>,
    /// Comma-separated CIDRs of peers whose traffic needs no encryption.
    #[arg(long, value_delimiter = ',')]
    trusted_subnets: Vec<String>,
    /// Peers to connect to.
    peers: Vec<String>,
}

pub(crate) fn run_dir() -> PathBuf {
    std::env::var_os("WEFT_RUN_DIR").map_or_else(|| PathBuf::from("/run/weft"), PathBuf::from)
}

fn state_dir() -> PathBuf {
    std::env::var_os("WEFT_STATE_DIR").map_or_else(|| PathBuf::from("/var/lib/weft"), PathBuf::from)
}

impl RouterArgs {
    /// The IPAM configuration the flags ask for; `None`: IPAM off.
    fn ipam(&self) -> Result<Option<IpamConfig>, IpamConfigError> {
        IpamConfig::from_flags(IpamFlags {
            range: self.ipalloc_range.as_deref(),
            default_subnet: self.ipalloc_default_subnet.as_deref(),
            init: self.ipalloc_init.as_deref(),
            init_peer_count: self.init_peer_count,
        })
    }

    /// `--trusted-subnets` as CIDRs.
    fn trusted_subnets(&self) -> Result<Vec<Ipv4Cidr>, String> {
        self.trusted_subnets
            .iter()
            .filter(|s| !s.trim().is_empty())
            .map(|s| {
                s.trim().parse::<Ipv4Cidr>().map_err(|_| {
                    format!(
                        "--trusted-subnets: {s:?} is not an IPv4 CIDR (want e.g. 192.168.48.0/24)"
                    )
                })
            })
            .collect()
    }

    /// The DNS configuration the flags ask for; `None`: DNS off.
    fn dns(&self) -> Result<Option<DnsConfig>, DnsConfigError> {
        DnsConfig::from_flags(&DnsFlags {
            off: self.no_dns,
            domain: self.dns_domain.as_deref(),
            listen: self.dns_listen_address.as_deref(),
            ttl: self.dns_ttl,
            fallback_timeout_ms: self.dns_fallback_timeout,
            resolv_conf: self.resolv_conf.as_deref(),
        })
    }
}

impl RouterArgs {
    fn proxy_on(&self) -> bool {
        self.proxy && !self.no_proxy && !self.no_docker
    }

    /// The proxy's configuration; `None`: off (and then no look for the daemon's TLS flags).
    fn proxy(&self) -> Result<Option<weftd::proxy::ProxyConfig>, String> {
        if !self.proxy_on() {
            return Ok(None);
        }
        self.proxy_args.config().map(Some)
    }
}

fn parse_args(args: &[String]) -> Result<RouterArgs, ExitCode> {
    // Weave's script also takes `-iprange`, which is no clap flag.
    let argv = args.iter().map(|a| {
        if a == "-iprange" || a.starts_with("-iprange=") {
            format!("-{a}")
        } else {
            a.clone()
        }
    });
    let parsed = crate::parse_flags::<RouterArgs>("weft launch", argv)?;
    if let Err(e) = parsed.trusted_subnets() {
        eprintln!("{e}");
        return Err(ExitCode::from(1));
    }
    if let Err(e) = parsed.ipam() {
        eprintln!("{e}");
        return Err(ExitCode::from(1));
    }
    if let Err(e) = parsed.dns() {
        eprintln!("{e}");
        return Err(ExitCode::from(1));
    }
    if let Err(e) = parsed.proxy_args.check() {
        eprintln!("{e}");
        return Err(ExitCode::from(1));
    }
    Ok(parsed)
}

/// Weave's launch-time check of the IPAM range against the host's routes: a clash with the
/// default range is an error (returned as the lines to print), with a range the user chose a
/// warning (returned as `Ok` lines).
fn range_check(
    given: bool,
    ipam: Option<&IpamConfig>,
    host: &[Route],
) -> Result<Vec<String>, Vec<String>> {
    let Some(range) = ipam.and_then(|c| c.range.to_string().parse::<Ipv4Cidr>().ok()) else {
        return Ok(Vec::new());
    };
    if routes::range_clash(host, range).is_none() {
        return Ok(Vec::new());
    }
    if given {
        Ok(vec![
            format!(
                "WARNING: Specified --ipalloc-range {range} overlaps with existing route on host."
            ),
            "Unless this is deliberate, you must pick another range and set it on all hosts."
                .into(),
        ])
    } else {
        Err(vec![
            format!("ERROR: Default --ipalloc-range {DEFAULT_RANGE} overlaps with existing route on host."),
            "You must pick another range and set it on all hosts.".into(),
        ])
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "localhost".into())
}

/// `weft router`: the daemon, in the foreground.
pub(crate) fn router(args: &[String]) -> ExitCode {
    let a = match parse_args(args) {
        Ok(a) => a,
        Err(code) => return code,
    };
    let level = match a.log_level.as_str() {
        "debug" => "debug",
        "info" => "info",
        "warning" | "warn" => "warn",
        "error" => "error",
        other => {
            eprintln!(
                "--log-level: unknown level {other:?}, expected debug, info, warning or error"
            );
            return ExitCode::from(1);
        }
    };
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(level))
        .with_ansi(false)
        .with_target(false)
        .with_writer(std::io::stderr)
        .init();
    let name = match a.name.as_deref().map(str::parse::<PeerName>) {
        None => None,
        Some(Ok(n)) => Some(n),
        Some(Err(e)) => {
            eprintln!("--name: {e}");
            return ExitCode::from(1);
        }
    };
    let ipam = match a.ipam() {
        Ok(i) => i,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(1);
        }
    };
    // parse_args has checked the flags.
    let dns = a.dns().ok().flatten();
    let trusted_subnets = a.trusted_subnets().unwrap_or_default();
    let proxy = match a.proxy() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(1);
        }
    };
    let cfg = weftd::RouterConfig {
        name,
        nickname: a.nickname.unwrap_or_else(hostname),
        port: a.port,
        host: a.host,
        conn_limit: a.conn_limit,
        discovery: !a.no_discovery,
        peers: a.peers,
        resume: a.resume,
        state_dir: state_dir(),
        // This very binary, even if the file was replaced since it started.
        state_check: weftd::store::Check::command("/proc/self/exe", &[CHECK_STATE_DB]),
        run_dir: run_dir(),
        http_addr: a.http_addr,
        status_addr: Some(a.status_addr),
        fastdp: !a.no_fastdp && std::env::var_os("WEAVE_NO_FASTDP").is_none_or(|v| v.is_empty()),
        mtu: a.mtu,
        ipam,
        dns,
        docker: !a.no_docker,
        // An empty password is no password, as in Weave Net.
        password: a
            .password
            .filter(|p| !p.is_empty())
            .map(|p| weftd::Password::new(p.into_bytes())),
        trusted_subnets,
        // For comparing the two schemes between weft peers; Weave Net peers always get theirs.
        sleeve_aead: std::env::var("WEFT_SLEEVE_CRYPTO").map_or(true, |v| v != "nacl"),
        plugin: (a.plugin && !a.no_plugin).then(weftd::plugin::PluginConfig::from_env),
        proxy,
    };
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match rt.block_on(weftd::run(cfg)) {
        Ok(()) => ExitCode::SUCCESS,
        // One line, the last in the log, which `weft launch` repeats.
        Err(e) => {
            eprintln!("{e}");
            ExitCode::from(1)
        }
    }
}

/// `weft launch-router`: the router alone, as in Weave Net 1.x; `launch-proxy` and
/// `launch-plugin` start the other parts in it later.
pub(crate) fn launch_router(args: &[String]) -> ExitCode {
    let mut args = args.to_vec();
    for off in ["--no-proxy", "--no-plugin"] {
        if !args
            .iter()
            .any(|a| a == off || a.starts_with(&format!("{off}=")))
        {
            args.push(off.to_string());
        }
    }
    launch(&args)
}

/// `weft launch`: start the router in the background, return once its API answers.
pub(crate) fn launch(args: &[String]) -> ExitCode {
    let a = match parse_args(args) {
        Ok(a) => a,
        Err(code) => return code,
    };
    if !matches!(client::get(&http_addr(), "/status", false), Reply::Down) {
        eprintln!(
            "{p} is already running; you can stop it with '{p} stop'.",
            p = prog()
        );
        return ExitCode::from(3);
    }
    // parse_args has checked the flags.
    // Not a.proxy(): that would look for the daemon's TLS flags (and warn) a second time.
    if a.proxy_on() {
        warn_without_weavewait();
    }
    let ipam = a.ipam().ok().flatten();
    match range_check(
        a.ipalloc_range.is_some(),
        ipam.as_ref(),
        &routes::host_routes(),
    ) {
        Ok(warnings) => warnings.iter().for_each(|w| eprintln!("{w}")),
        Err(errors) => {
            errors.iter().for_each(|e| eprintln!("{e}"));
            return ExitCode::from(1);
        }
    }
    let run = RunDir::new(run_dir());
    let log_path = run.log_path();
    let log = match run.prepare().and_then(|()| run.open_log()) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(1);
        }
    };
    // Where this router's output starts, to repeat its last word if it dies.
    let log_start = log.metadata().map_or(0, |m| m.len());
    let exe = match std::env::current_exe() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("cannot find own executable: {e}");
            return ExitCode::from(1);
        }
    };
    let stderr = match log.try_clone() {
        Ok(f) => f,
        Err(e) => {
            eprintln!("cannot open {}: {e}", log_path.display());
            return ExitCode::from(1);
        }
    };
    // The password goes in the environment, as Weave Net's script does: a command line is
    // readable by every user of the host.
    let (args, password) = without_password(args);
    // The proxy's TLS detection happens here, where its warning reaches the user.
    let detected = if a.proxy_on() {
        a.proxy_args.detected_args()
    } else {
        Vec::new()
    };
    let mut cmd = Command::new(exe);
    // The router follows this daemon too, never the proxy itself.
    let daemon = a.proxy_args.daemon_host();
    if std::env::var("DOCKER_HOST").unwrap_or_default() != daemon {
        if daemon.is_empty() {
            cmd.env_remove("DOCKER_HOST");
        } else {
            cmd.env("DOCKER_HOST", &daemon);
        }
    }
    if let Some(p) = password {
        cmd.env("WEAVE_PASSWORD", p);
    }
    let mut child = match cmd
        .arg("router")
        .args(detected)
        .args(args)
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(stderr)
        .process_group(0)
        .spawn()
    {
        Ok(c) => c,
        Err(e) => {
            eprintln!("cannot start router: {e}");
            return ExitCode::from(1);
        }
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            // Exit code 1 is a start-up error the router put in one line.
            if status.code() == Some(1) {
                if let Some(line) = run.log_since(log_start).as_deref().and_then(last_line) {
                    eprintln!("{line}");
                    return ExitCode::from(1);
                }
            }
            eprintln!(
                "The {} router has died. Consult the log ({}) for further details.",
                prog(),
                log_path.display()
            );
            return ExitCode::from(1);
        }
        if let Reply::Ok(_) = client::get(&http_addr(), "/status", false) {
            outln!("{}", child.id());
            return ExitCode::SUCCESS;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    eprintln!(
        "The {} router did not answer within 30s; see {}",
        prog(),
        log_path.display()
    );
    ExitCode::from(1)
}

/// Says on stderr when the proxy will have no weavewait to give containers: the router only
/// logs it, and every `docker run` through the proxy would then fail.
pub(crate) fn warn_without_weavewait() {
    use weftd::proxy::{find_wait_binary, WAIT_BINARY};
    if find_wait_binary().is_some_and(|p| p.is_file()) {
        return;
    }
    // Where find_wait_binary looks: WEFT_WAIT if set, else beside this executable.
    let looked = match std::env::var_os("WEFT_WAIT").filter(|p| !p.is_empty()) {
        Some(p) => PathBuf::from(p),
        None => std::env::current_exe()
            .ok()
            .and_then(|e| e.parent().map(|d| d.join(WAIT_BINARY)))
            .unwrap_or_else(|| PathBuf::from(WAIT_BINARY)),
    };
    eprintln!(
        "WARNING: weavewait ({WAIT_BINARY}) not found at {}: containers cannot be created through the proxy until it is installed there",
        looked.display()
    );
}

/// `args` without `--password X` / `--password=X`, and the password they gave (the last).
fn without_password(args: &[String]) -> (Vec<String>, Option<String>) {
    let mut rest = Vec::with_capacity(args.len());
    let mut password = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if a == "--password" {
            password = it.next().cloned();
        } else if let Some(p) = a.strip_prefix("--password=") {
            password = Some(p.to_string());
        } else {
            rest.push(a.clone());
        }
    }
    (rest, password)
}

/// The last non-empty line of `text`.
fn last_line(text: &str) -> Option<&str> {
    text.lines().map(str::trim).rev().find(|l| !l.is_empty())
}

/// `weft stop`: signals the router of this run dir, and only it (see `weftd::run_dir`).
pub(crate) fn stop() -> ExitCode {
    let run = RunDir::new(run_dir());
    let pid = match run.router() {
        Ok(RouterProcess::Running(pid)) => Pid::from_raw(pid),
        Ok(RouterProcess::Absent) => {
            outln!(
                "{} is not running (ignore on Kubernetes).",
                capitalised(&prog())
            );
            return ExitCode::SUCCESS;
        }
        Ok(RouterProcess::Unrelated(pid)) => {
            eprintln!(
                "{} names process {pid}, which is not the {} router of {}; not signalling it",
                run.pid_path().display(),
                prog(),
                run_dir().display()
            );
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(1);
        }
    };
    if kill(pid, Signal::SIGTERM).is_err() {
        return ExitCode::SUCCESS;
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if kill(pid, None).is_err() || is_zombie(pid) {
            return ExitCode::SUCCESS;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let _ = kill(pid, Signal::SIGKILL);
    ExitCode::SUCCESS
}

/// Whether `pid` has exited but is not reaped yet, with all its threads gone: a leader turns
/// zombie while other threads may still be exiting, and the last of them closes the files
/// (the sockets a new router binds, the BPF links) on its way out.
fn is_zombie(pid: Pid) -> bool {
    let zombie = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rsplit_once(") ").map(|(_, r)| r.starts_with('Z')))
        .unwrap_or(false);
    let threads = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Threads:"))
                .and_then(|n| n.trim().parse::<u32>().ok())
        })
        .unwrap_or(1);
    zombie && threads <= 1
}

pub(crate) fn capitalised(s: &str) -> String {
    let mut c = s.chars();
    c.next()
        .map(|f| f.to_uppercase().collect::<String>() + c.as_str())
        .unwrap_or_default()
}

/// What `weft reset` does first, as Weave Net's: a running router hands this peer's address
/// ranges to another (`DELETE /peer`); one that ran here (its state database is there) but does
/// not answer cannot, and without `--force` reset refuses rather than strand those ranges.
#[derive(Debug, PartialEq, Eq)]
enum ResetStart {
    LeaveCluster,
    Refuse,
    /// Nothing to leave: never launched, already reset, or `--force`.
    Proceed,
}

fn reset_start(force: bool, running: bool, has_state: bool) -> ResetStart {
    match (running, force, has_state) {
        (true, _, _) => ResetStart::LeaveCluster,
        (false, false, true) => ResetStart::Refuse,
        _ => ResetStart::Proceed,
    }
}

/// `weft reset [--force]`: leave the cluster, stop, and remove everything weft created.
pub(crate) fn reset(args: &[String]) -> ExitCode {
    let force = match args {
        [] => false,
        [f] if f == "--force" => true,
        _ => return crate::print_reply(Reply::Failed(400, crate::USAGE.into())),
    };
    let http = http_addr();
    let running = !matches!(client::get(&http, "/status", false), Reply::Down);
    let has_state = weftd::store::Store::file(&state_dir()).exists();
    match reset_start(force, running, has_state) {
        ResetStart::LeaveCluster => {
            if let Reply::Ok(_) = client::delete(&http, "/peer") {
                // Weave's pause: time for the news of the handed-over ranges to go out.
                std::thread::sleep(Duration::from_millis(500));
            }
        }
        ResetStart::Refuse => {
            let p = prog();
            eprintln!("ERROR: {p} is not running; unable to remove from cluster.");
            eprintln!("Re-launch {p} before reset or use --force to override.");
            return ExitCode::from(1);
        }
        ResetStart::Proceed => {}
    }
    // Weave's reset runs its stop: the plugin's warning and the proxy's come with it.
    crate::parts::stop_plugin_first();
    crate::proxy::warn_before_stop();
    let code = stop();
    // The proxy's copies of weavewait, which the containers it made bind at /w; a router
    // still running (a stop that did not take) keeps them.
    let router_gone = !matches!(
        RunDir::new(run_dir()).router(),
        Ok(RouterProcess::Running(_))
    ) && matches!(client::get(&http, "/status", false), Reply::Down);
    if router_gone {
        // The directory weftd::proxy installs them in.
        let _ = std::fs::remove_dir_all(run_dir().join(weftd::proxy::WAIT_DIR));
    }
    let plugin = weftd::plugin::PluginConfig::from_env();
    plugin.remove_stale_sockets();
    // The proxy's socket, if a killed router left it behind.
    let _ = std::fs::remove_file(run_dir().join(weftd::proxy::SOCKET));
    weftd::store::Store::remove_files(&state_dir());
    for f in ["weft.pid", "weft.log", weftd::run_dir::TOKEN_FILE] {
        let _ = std::fs::remove_file(run_dir().join(f));
    }
    let torn = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())
        .and_then(|rt| {
            // A network `weave` a killed router left would hang Docker on its driver; a
            // router still running owns the sockets it would be served on.
            if router_gone {
                let left = rt.block_on(async {
                    tokio::time::timeout(
                        Duration::from_secs(30),
                        weftd::plugin::remove_left_network(&plugin),
                    )
                    .await
                });
                match left {
                    Ok(Err(e)) => eprintln!("reset: {e}"),
                    Err(_) => {
                        // Cut off while its sockets were served: they must not stay.
                        plugin.remove_stale_sockets();
                        eprintln!("reset: removing network weave timed out");
                    }
                    Ok(Ok(_)) => {}
                }
            }
            rt.block_on(weftd::dataplane::Dataplane::teardown())
                .map_err(|e| e.to_string())
        });
    if let Err(e) = torn {
        eprintln!("reset: {e}");
        return ExitCode::from(1);
    }
    code
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::strings as args;

    fn ipam(v: &[&str]) -> Option<IpamConfig> {
        parse_args(&args(v)).unwrap().ipam().unwrap()
    }

    #[test]
    fn password_and_trusted_subnets() {
        let (rest, pw) = without_password(&args(&[
            "--password",
            "s3cret",
            "peer1",
            "--password=again",
            "--trusted-subnets=10.0.0.0/8",
        ]));
        assert_eq!(rest, args(&["peer1", "--trusted-subnets=10.0.0.0/8"]));
        assert_eq!(pw.as_deref(), Some("again"));
        let a = parse_args(&args(&["--trusted-subnets", "10.0.0.0/8,192.168.48.0/24"])).unwrap();
        let t: Vec<String> = a
            .trusted_subnets()
            .unwrap()
            .iter()
            .map(|c| c.to_string())
            .collect();
        assert_eq!(t, ["10.0.0.0/8", "192.168.48.0/24"]);
        assert!(parse_args(&args(&["--trusted-subnets", "10.0.0.0/33"])).is_err());
        assert!(parse_args(&args(&["--trusted-subnets", "lan"])).is_err());
    }

    #[test]
    fn ipam_flags() {
        let c = ipam(&[]).unwrap();
        assert_eq!(c.range.to_string(), "10.32.0.0/12");
        for spelling in [
            &["--ipalloc-range", "10.2.0.0/16"][..],
            &["--ipalloc-range=10.2.0.0/16"],
            &["--iprange", "10.2.0.0/16"],
            &["-iprange", "10.2.0.0/16"],
        ] {
            let a = parse_args(&args(spelling)).unwrap();
            assert_eq!(
                a.ipalloc_range.as_deref(),
                Some("10.2.0.0/16"),
                "{spelling:?}"
            );
            assert_eq!(a.ipam().unwrap().unwrap().range.to_string(), "10.2.0.0/16");
        }
        assert_eq!(ipam(&["--ipalloc-range", ""]), None);
        assert_eq!(ipam(&["--ipalloc-range="]), None);
        let c = ipam(&[
            "--ipalloc-range",
            "10.2.0.0/16",
            "--ipalloc-default-subnet",
            "10.2.3.0/24",
            "--init-peer-count",
            "3",
            "peer1",
        ])
        .unwrap();
        assert_eq!(c.default_subnet.to_string(), "10.2.3.0/24");
        // The proxy's flag is taken, as Weave Net's script takes it.
        assert!(
            parse_args(&args(&["--no-default-ipalloc", "peer1"]))
                .unwrap()
                .proxy_args
                .no_default_ipalloc
        );
        assert!(
            !parse_args(&args(&[]))
                .unwrap()
                .proxy_args
                .no_default_ipalloc
        );
        // Errors are refused by the parse, before anything starts.
        for bad in [
            &["--ipalloc-range", "10.2.0.1/16"][..],
            &[
                "--ipalloc-range",
                "10.2.0.0/16",
                "--ipalloc-default-subnet",
                "10.3.0.0/24",
            ],
            &["--ipalloc-init", "paxos"],
            &["--ipalloc-init", "observer", "--init-peer-count", "2"],
            &["--init-peer-count", "x"],
        ] {
            assert!(parse_args(&args(bad)).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn reset_refuses_to_strand_a_stopped_routers_ranges() {
        use ResetStart::*;
        for force in [false, true] {
            for has_state in [false, true] {
                assert_eq!(reset_start(force, true, has_state), LeaveCluster);
            }
            assert_eq!(reset_start(force, false, false), Proceed);
        }
        assert_eq!(reset_start(false, false, true), Refuse);
        assert_eq!(reset_start(true, false, true), Proceed);
    }

    #[test]
    fn range_overlap_with_host_routes() {
        let host = vec![Route {
            iface: "eth1".into(),
            dst: "10.40.0.0/16".parse().unwrap(),
        }];
        let default = ipam(&[]);
        assert_eq!(
            range_check(false, default.as_ref(), &host),
            Err(vec![
                "ERROR: Default --ipalloc-range 10.32.0.0/12 overlaps with existing route on host."
                    .to_string(),
                "You must pick another range and set it on all hosts.".to_string(),
            ])
        );
        assert_eq!(range_check(false, default.as_ref(), &[]), Ok(vec![]));
        let given = ipam(&["--ipalloc-range", "10.40.0.0/14"]);
        assert_eq!(
            range_check(true, given.as_ref(), &host),
            Ok(vec![
                "WARNING: Specified --ipalloc-range 10.40.0.0/14 overlaps with existing route on host."
                    .to_string(),
                "Unless this is deliberate, you must pick another range and set it on all hosts."
                    .to_string(),
            ])
        );
        let elsewhere = ipam(&["--ipalloc-range", "10.64.0.0/12"]);
        assert_eq!(range_check(true, elsewhere.as_ref(), &host), Ok(vec![]));
        assert_eq!(range_check(true, None, &host), Ok(vec![]));
    }
}
