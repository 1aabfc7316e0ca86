//! The client side of the Docker API proxy: `weft env [--restore]` and `weft config` (the
//! proxy's address from the router's `GET /proxyaddrs`, in Weave Net's output forms), and
//! the warning `weft stop` gives when `DOCKER_HOST` points at the proxy; and the proxy's
//! flags, which `weft launch` and `weft launch-proxy` take.

use std::process::ExitCode;

use clap::ArgAction;
use weftd::proxy::{ProxyConfig, ProxyFlags};

use crate::client::{self, Reply};
use crate::{http_addr, not_running, usage_error};

/// The proxy's flags (Weave's names; booleans also as `--flag=true|false`).
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
}

impl ProxyArgs {
    /// The flags as the router takes them, with this shell's `DOCKER_HOST`.
    pub(crate) fn flags(&self) -> ProxyFlags {
        ProxyFlags {
            hosts: self.hosts.clone(),
            upstream: std::env::var("DOCKER_HOST").unwrap_or_default(),
            hostname_from_label: self.hostname_from_label.clone(),
            hostname_match: self.hostname_match.clone(),
            hostname_replacement: self.hostname_replacement.clone(),
            rewrite_inspect: self.rewrite_inspect,
            no_default_ipalloc: self.no_default_ipalloc,
            without_dns: self.without_dns,
            no_multicast_route: self.no_multicast_route,
            no_rewrite_hosts: self.no_rewrite_hosts,
        }
    }

    /// The checked configuration.
    pub(crate) fn config(&self) -> Result<ProxyConfig, String> {
        ProxyConfig::from_flags(&self.flags())
    }
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
                crate::prog()
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
