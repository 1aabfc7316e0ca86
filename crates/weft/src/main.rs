//! `weft` (also answers to `weave`): the command line users drive the network with, and —
//! as the hidden `weft router` — the router daemon itself.
//!
//! Commands, flags, outputs and exit codes follow Weave Net's `weave` script so that scripts
//! written for it keep working. Top-level dispatch is by hand because Weave's grammar (an
//! unknown command prints `Unknown weave command`, `<cmd> --help` prints the usage) is not
//! clap's; each command's flags are parsed with clap.
// Tests may unwrap: a panic is how they fail.
#![cfg_attr(test, allow(clippy::unwrap_used))]

/// `print!` to stdout, except that a reader that has gone (a closed pipe, as in
/// `weft status | grep -q ready`) is no error: what is left is dropped, with no panic.
macro_rules! out {
    ($($arg:tt)*) => { $crate::emit(&format!($($arg)*)) };
}

/// `println!` to stdout, as [`out!`].
macro_rules! outln {
    () => { $crate::emit("\n") };
    ($($arg:tt)*) => { $crate::emit(&format!("{}\n", format_args!($($arg)*))) };
}

mod client;
mod containers;
mod dns;
mod docker;
mod ipam;
mod launch;
mod parts;
mod proxy;
mod routes;
#[cfg(test)]
mod testing;

use std::process::ExitCode;

use client::Reply;

pub(crate) const USAGE: &str = "Usage:

weft --help | help
     setup
     version

weft launch        <router args> <proxy args> <peer> ...
     launch-router <router args> <peer> ...
     launch-proxy  <proxy args>
     launch-plugin [--no-multicast-route]
     prime

weft status        [targets | connections | peers | dns | ipam]
     report        [-f <format>]

weft connect       [--replace] [<peer> ...]
     forget        <peer> ...

weft run           [<addr> ...] [--without-dns] [--no-rewrite-hosts]
                   [--no-multicast-route] <docker run args> ...
     start         [<addr> ...] <container_id>
     restart       <container_id>

weft attach        [<addr> ...] [--without-dns] [--rewrite-hosts]
                   [--add-host <host>:<ip>] ... [--no-multicast-route] <container>
     detach        [<addr> ...] <container>
     ps            [<container> ...]
     expose        [<addr> ...] [-h <fqdn>] [--without-masquerade]
     hide          [<addr> ...]

weft dns-add       [<ip_address> ...] <container> [-h <fqdn>] |
                   <ip_address> ... -h <fqdn>
     dns-remove    [<ip_address> ...] <container> [-h <fqdn>] |
                   <ip_address> ... -h <fqdn>
     dns-lookup    <unqualified_name>
     dns-args

weft env           [--restore]
     config

weft stop
     stop-router
     stop-proxy
     stop-plugin
     reset         [--force]
     rmpeer        <peer_id> ...

where <router args> =
                   [--password <pass>] [--trusted-subnets <cidr>,...]
                   [--host <ip_address>]
                   [--name <mac>] [--nickname <nickname>]
                   [--no-restart] [--resume] [--no-discovery] [--no-dns]
                   [--conn-limit <n>] [--port <port>] [--no-docker] [--no-plugin]
                   [--log-level debug|info|warning|error]
                   [--ipalloc-range <cidr> [--ipalloc-default-subnet <cidr>]]
                   [--ipalloc-init <mode> | --init-peer-count <n>]
                   [--dns-domain <domain>] [--dns-listen-address <ip>:<port>]
                   [--dns-ttl <seconds>] [--dns-fallback-timeout <ms>]
                   [--resolv-conf <file>] [--proxy=false | --no-proxy]
      <proxy args> =
                   [-H <proxy_addr>]... [--no-default-ipalloc]
                   [--hostname-from-label <label>] [--hostname-match <regexp>]
                   [--hostname-replacement <replacement>] [--rewrite-inspect]
                   [--without-dns] [--no-multicast-route] [--no-rewrite-hosts]
                   [--tls | --tlsverify] [--tlscacert <file>] [--tlscert <file>]
                   [--tlskey <file>] [--no-detect-tls]
      <peer>      = <ip_address_or_fqdn>[:<port>]
      <cidr>      = <ip_address>/<routing_prefix_length>
      <addr>      = [ip:]<cidr> | net:<cidr> | net:default
      <container> = netns:<name> | pid:<pid> | <container_name_or_id>
      <peer_id>   = <nickname> | <weft internal peer ID>
      <mode>      = consensus[=<count>] | seed=<mac>,... | observer
      <proxy_addr> = unix:///<absolute path> | tcp://<host>:<port>

--ipalloc-range (alias --iprange) defaults to 10.32.0.0/12; an empty value turns IP
address allocation off. Without addresses, attach and expose allocate one (net:default).

A Docker container is found through DOCKER_HOST (default unix:///var/run/docker.sock).
The Docker API proxy listens on unix://$WEFT_RUN_DIR/weave.sock unless -H is given
(tcp://0.0.0.0:12375 when DOCKER_HOST is TCP); 'eval $(weft env)' points docker at it.
A container's DNS name is its hostname when that has a domain part (for netns:<name>,
/etc/netns/<name>/hostname).

Every command honours WEFT_STATE_DIR (default /var/lib/weft), WEFT_RUN_DIR (default
/run/weft), WEAVE_HTTP_ADDR (default 127.0.0.1:6784) and WEAVE_STATUS_ADDR
(default 127.0.0.1:6782).
";

/// The name the binary was invoked as, for messages (`weft` or `weave`).
pub(crate) fn prog() -> String {
    std::env::args()
        .next()
        .and_then(|a| {
            std::path::Path::new(&a)
                .file_name()
                .map(|f| f.to_string_lossy().into_owned())
        })
        .filter(|n| n == "weave")
        .unwrap_or_else(|| "weft".into())
}

pub(crate) fn http_addr() -> String {
    std::env::var("WEAVE_HTTP_ADDR").unwrap_or_else(|_| "127.0.0.1:6784".into())
}

/// A command's flags parsed with clap, as `name` takes them; an error is its first line and
/// exit code 1.
pub(crate) fn parse_flags<T: clap::Parser>(
    name: &str,
    args: impl IntoIterator<Item = String>,
) -> Result<T, ExitCode> {
    T::try_parse_from(std::iter::once(name.to_string()).chain(args)).map_err(|e| {
        let msg = e.to_string();
        eprintln!("{}", msg.lines().next().unwrap_or("invalid arguments"));
        ExitCode::from(1)
    })
}

pub(crate) fn usage_error() -> ExitCode {
    eprint!("{USAGE}");
    ExitCode::from(1)
}

/// Prints a reply the way Weave's `http_call` does and returns the exit code.
pub(crate) fn print_reply(r: Reply) -> ExitCode {
    match r {
        Reply::Ok(body) => {
            out!("{body}");
            ExitCode::SUCCESS
        }
        Reply::NotFound => ExitCode::from(4),
        Reply::Failed(_, body) => {
            eprint!("{body}");
            ExitCode::from(1)
        }
        Reply::Down => not_running(),
    }
}

pub(crate) fn not_running() -> ExitCode {
    eprintln!("{} router is not running. Have you launched it?", prog());
    ExitCode::from(1)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(cmd) = args.first() else {
        return usage_error();
    };
    let rest = &args[1..];
    if rest.first().is_some_and(|a| a == "--help")
        && !matches!(
            cmd.as_str(),
            "launch" | "launch-router" | "router" | "version" | "env"
        )
    {
        out!("{USAGE}");
        return ExitCode::SUCCESS;
    }
    match cmd.as_str() {
        "help" | "--help" => {
            out!("{USAGE}");
            ExitCode::SUCCESS
        }
        "router" => launch::router(rest),
        launch::CHECK_STATE_DB => ExitCode::from(weftd::store::check_main()),
        "launch" => launch::launch(rest),
        "launch-router" => launch::launch_router(rest),
        "launch-proxy" => parts::launch_proxy(rest),
        "launch-plugin" => parts::launch_plugin(rest),
        "stop" | "stop-router" => {
            parts::stop_plugin_first();
            proxy::warn_before_stop();
            launch::stop()
        }
        "stop-proxy" => parts::stop("proxy", rest),
        "stop-plugin" => parts::stop("plugin", rest),
        "env" => proxy::env(rest),
        "config" => proxy::config(rest),
        "reset" => launch::reset(rest),
        "version" => version(),
        "status" => status(rest),
        "report" => report(rest),
        "connect" => connect(rest),
        "forget" => forget(rest),
        "attach" => containers::attach(rest),
        "detach" => containers::detach(rest),
        "ps" => containers::ps(rest),
        "expose" => containers::expose(rest),
        "hide" => containers::hide(rest),
        "run" => docker::run(rest),
        "start" | "restart" => docker::start(cmd, rest),
        "dns-add" => dns::dns_add(rest),
        "dns-remove" => dns::dns_remove(rest),
        "dns-lookup" => dns::dns_lookup(rest),
        "dns-args" => dns::dns_args(rest),
        "prime" => ipam::prime(&http_addr(), rest),
        "rmpeer" => ipam::rmpeer(&http_addr(), rest),
        _ => {
            eprintln!("Unknown {} command '{cmd}'", prog());
            usage_error()
        }
    }
}

fn version() -> ExitCode {
    let v = env!("CARGO_PKG_VERSION");
    outln!("{} script {v}", prog());
    match client::get_query(&http_addr(), "/report", &[("format", "{{.Version}}")]) {
        Reply::Ok(rv) => outln!("{} {}", prog(), rv.trim()),
        _ => outln!("{} {v}", prog()),
    }
    ExitCode::SUCCESS
}

fn status(rest: &[String]) -> ExitCode {
    match rest {
        [] => match client::get(&http_addr(), "/status", false) {
            Reply::Ok(body) => {
                out!("\n{body}\n");
                ExitCode::SUCCESS
            }
            other => print_reply(other),
        },
        [sub] => match client::get(&http_addr(), &format!("/status/{sub}"), false) {
            Reply::NotFound => {
                eprintln!("Invalid '{} status' sub-command: {sub}", prog());
                usage_error()
            }
            other => print_reply(other),
        },
        _ => usage_error(),
    }
}

fn report(rest: &[String]) -> ExitCode {
    match rest {
        [] => print_reply(client::get(&http_addr(), "/report", true)),
        [f, tpl] if f == "-f" || f == "--format" => print_reply(client::get_query(
            &http_addr(),
            "/report",
            &[("format", tpl)],
        )),
        [f] if f.starts_with("--format=") => {
            let tpl = &f["--format=".len()..];
            print_reply(client::get_query(
                &http_addr(),
                "/report",
                &[("format", tpl)],
            ))
        }
        _ => usage_error(),
    }
}

fn connect(rest: &[String]) -> ExitCode {
    let (replace, peers) = match rest.split_first() {
        Some((f, peers)) if f == "--replace" => (true, peers),
        _ => (false, rest),
    };
    if peers.is_empty() && !replace {
        return usage_error();
    }
    let mut form: Vec<(&str, &str)> = peers.iter().map(|p| ("peer", p.as_str())).collect();
    if replace {
        form.push(("replace", "true"));
    }
    print_reply(client::post_form(&http_addr(), "/connect", &form))
}

fn forget(rest: &[String]) -> ExitCode {
    if rest.is_empty() {
        return usage_error();
    }
    let form: Vec<(&str, &str)> = rest.iter().map(|p| ("peer", p.as_str())).collect();
    print_reply(client::post_form(&http_addr(), "/forget", &form))
}

/// Writes `text` to stdout in one go (so that short output reaches a pipe whole). A closed
/// pipe ends the output quietly; another write error is reported once on stderr.
fn emit(text: &str) {
    use std::io::Write as _;
    use std::sync::atomic::{AtomicBool, Ordering};
    static FAILED: AtomicBool = AtomicBool::new(false);
    if FAILED.load(Ordering::Relaxed) {
        return;
    }
    let mut out = std::io::stdout().lock();
    if let Err(e) = out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        FAILED.store(true, Ordering::Relaxed);
        if e.kind() != std::io::ErrorKind::BrokenPipe {
            eprintln!("{}: writing output: {e}", prog());
        }
    }
}
