//! Weave Net 1.x's commands for the router's Docker-facing parts: `launch-proxy`,
//! `launch-plugin`, `stop-proxy` and `stop-plugin`. The parts run inside the router (see
//! `weftd::docker_parts`), so these start and stop them through its control API and need a
//! router launched first — `weft launch-router` launches one without them.

use std::process::ExitCode;

use clap::Parser;
use weftd::run_dir::{RouterProcess, RunDir};

use crate::client::{self, Reply};
use crate::proxy::ProxyArgs;
use crate::{http_addr, prog};

/// `weft launch-proxy`'s flags.
#[derive(Parser, Debug)]
#[command(
    name = "weft launch-proxy",
    disable_help_flag = true,
    disable_version_flag = true
)]
struct LaunchProxyArgs {
    #[command(flatten)]
    proxy: ProxyArgs,
    #[command(flatten)]
    _compat: Compat,
}

/// `weft launch-plugin`'s flags.
#[derive(Parser, Debug)]
#[command(
    name = "weft launch-plugin",
    disable_help_flag = true,
    disable_version_flag = true
)]
struct LaunchPluginArgs {
    /// The network `weave` gets no multicast route.
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", action = clap::ArgAction::Set, default_value = "false")]
    no_multicast_route: bool,
    #[command(flatten)]
    _compat: Compat,
}

/// Flags 1.x's part launches took that mean nothing here.
#[derive(clap::Args, Debug)]
struct Compat {
    /// Weft never installs a restart policy.
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true", action = clap::ArgAction::Set, default_value = "false")]
    no_restart: bool,
    /// The router's `--log-level` applies.
    #[arg(long)]
    log_level: Option<String>,
}

/// What the launch commands print on success: the process the part runs in, as `weft launch`
/// prints the router's.
fn print_router_pid() -> ExitCode {
    if let Ok(RouterProcess::Running(pid)) = RunDir::new(crate::launch::run_dir()).router() {
        outln!("{pid}");
    }
    ExitCode::SUCCESS
}

/// The router must run before a part can start in it.
fn router_down(part: &str) -> ExitCode {
    eprintln!(
        "ERROR: the {p} router must be running before the {part} can be launched; launch it with '{p} launch-router'",
        p = prog()
    );
    ExitCode::from(1)
}

/// `weft launch-proxy [proxy flags]`.
pub(crate) fn launch_proxy(args: &[String]) -> ExitCode {
    let a = match crate::parse_flags::<LaunchProxyArgs>("weft launch-proxy", args.iter().cloned()) {
        Ok(a) => a,
        Err(code) => return code,
    };
    // Once: the flags carry what was detected of the daemon's TLS (and its warning).
    let flags = a.proxy.flags();
    if let Err(e) = weftd::proxy::ProxyConfig::from_flags(&flags) {
        eprintln!("{e}");
        return ExitCode::from(1);
    }
    let body = match serde_json::to_string(&flags) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("launch-proxy: {e}");
            return ExitCode::from(1);
        }
    };
    let token = match token_for("proxy") {
        Ok(t) => t,
        Err(code) => return code,
    };
    match client::with_token(&http_addr(), "POST", "/proxy", &token, Some(&body)) {
        Reply::Ok(_) => {
            crate::launch::warn_without_weavewait();
            print_router_pid()
        }
        Reply::Down => router_down("proxy"),
        Reply::Failed(409, _) => {
            eprintln!(
                "The proxy is already running; you can stop it with '{} stop-proxy'.",
                prog()
            );
            ExitCode::from(1)
        }
        Reply::Failed(_, body) => {
            eprintln!("{}", body.trim_end());
            ExitCode::from(1)
        }
        Reply::NotFound => {
            eprintln!("The router does not offer the Docker API proxy");
            ExitCode::from(1)
        }
    }
}

/// `weft launch-plugin [--no-multicast-route]`; a plugin already running is no error.
pub(crate) fn launch_plugin(args: &[String]) -> ExitCode {
    let a = match crate::parse_flags::<LaunchPluginArgs>("weft launch-plugin", args.iter().cloned())
    {
        Ok(a) => a,
        Err(code) => return code,
    };
    let body = serde_json::json!({ "no_multicast_route": a.no_multicast_route }).to_string();
    let token = match token_for("plugin") {
        Ok(t) => t,
        Err(code) => return code,
    };
    match client::with_token(&http_addr(), "POST", "/plugin", &token, Some(&body)) {
        Reply::Ok(_) | Reply::Failed(409, _) => print_router_pid(),
        Reply::Down => router_down("plugin"),
        Reply::Failed(_, body) => {
            eprintln!("{}", body.trim_end());
            ExitCode::from(1)
        }
        Reply::NotFound => {
            eprintln!("The router does not offer the Docker network plugin");
            ExitCode::from(1)
        }
    }
}

/// `weft stop-proxy` / `weft stop-plugin`: Weave's `<Part> is not running.` when there is
/// nothing to stop.
pub(crate) fn stop(part: &str, args: &[String]) -> ExitCode {
    if !args.is_empty() {
        return crate::usage_error();
    }
    if part == "proxy" {
        crate::proxy::warn_before_stop();
    }
    let Ok(token) = token() else {
        // No router has run here, or this user may not stop its parts.
        return match client::get(&http_addr(), "/status", false) {
            Reply::Down => {
                eprintln!("{} is not running.", crate::launch::capitalised(part));
                ExitCode::SUCCESS
            }
            _ => no_token(part),
        };
    };
    match client::with_token(&http_addr(), "DELETE", &format!("/{part}"), &token, None) {
        Reply::Ok(warning) => {
            eprint!("{warning}");
            ExitCode::SUCCESS
        }
        Reply::NotFound | Reply::Down => {
            eprintln!("{} is not running.", crate::launch::capitalised(part));
            ExitCode::SUCCESS
        }
        Reply::Failed(_, body) => {
            eprintln!("{}", body.trim_end());
            ExitCode::from(1)
        }
    }
}

/// Before `weft stop`: the plugin goes first, as Weave Net's script removes the network
/// `weave` first, so that its warning about containers still attached reaches the user.
pub(crate) fn stop_plugin_first() {
    // Without the token (not root) the router removes the network itself when it stops.
    let Ok(token) = token() else {
        return;
    };
    if let Reply::Ok(warning) = client::with_token(&http_addr(), "DELETE", "/plugin", &token, None)
    {
        eprint!("{warning}");
    }
}

/// The router's control token, which only its own user (root) can read.
fn token() -> Result<String, weftd::run_dir::RunDirError> {
    RunDir::new(crate::launch::run_dir()).read_token()
}

/// The token for launching `part`; without it, the reason: no router, or not root.
fn token_for(part: &str) -> Result<String, ExitCode> {
    token().map_err(|_| match client::get(&http_addr(), "/status", false) {
        Reply::Down => router_down(part),
        _ => no_token(part),
    })
}

fn no_token(part: &str) -> ExitCode {
    eprintln!(
        "cannot read the router's control token in {}: starting or stopping the {part} needs the router's user (root)",
        crate::launch::run_dir().display()
    );
    ExitCode::from(1)
}
