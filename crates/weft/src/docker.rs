//! Weave Net 1.x's Docker commands, which Weave 2.0 removed and weft keeps: `weft run`
//! (`docker run -d` with weftDNS's settings, then attach, rewriting the container's
//! `/etc/hosts` unless `--no-rewrite-hosts`, with the `--add-host` entries given to docker),
//! `weft start` (`docker start`, then attach) and `weft restart` (`docker restart`, then attach
//! again; IPAM gives the container back the addresses it held, which are filed under its ID).
//!
//! They run the `docker` CLI, as Weave's script did: `docker run` takes dozens of flags whose
//! meaning is the CLI's, and passing them through keeps them all working.

use std::process::{Command, ExitCode, Stdio};

use crate::client::{self, Reply};
use crate::containers::{attach_container, resolve, AttachOptions, Host};
use crate::ipam::{split_addrs, AddrArg, Failure};
use crate::{http_addr, usage_error};

/// The longest hostname Docker takes.
const MAX_HOSTNAME: usize = 64;

/// The leading options of run/start/restart that are weft's, not Docker's.
#[derive(Debug, PartialEq, Eq)]
struct Options {
    with_dns: bool,
    multicast: bool,
    /// `weft run` rewrites the container's `/etc/hosts` unless `--no-rewrite-hosts`.
    rewrite_hosts: bool,
}

/// Splits `[addr...] [weft options] <docker args...>`.
fn split(args: &[String]) -> Result<(Vec<AddrArg>, Options, Vec<String>), Failure> {
    let (addrs, rest) = split_addrs(args)?;
    let mut o = Options {
        with_dns: true,
        multicast: true,
        rewrite_hosts: true,
    };
    let mut it = rest.into_iter().peekable();
    while let Some(a) = it.peek() {
        match a.as_str() {
            "--without-dns" => o.with_dns = false,
            "--no-multicast-route" => o.multicast = false,
            "--no-rewrite-hosts" => o.rewrite_hosts = false,
            "--rewrite-hosts" => o.rewrite_hosts = true,
            _ => break,
        }
        it.next();
    }
    Ok((addrs, o, it.collect()))
}

/// Every value of `--add-host` in docker run arguments.
fn add_hosts(args: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if a == "--add-host" {
            out.extend(it.next().cloned());
        } else if let Some(v) = a.strip_prefix("--add-host=") {
            out.push(v.to_string());
        }
    }
    out
}

/// The value of `--name` / `-h` / `--hostname` in docker run arguments.
fn flag_value(args: &[String], names: &[&str]) -> Option<String> {
    let mut it = args.iter();
    while let Some(a) = it.next() {
        for n in names {
            if a == n {
                return it.next().cloned();
            }
            if let Some(v) = a.strip_prefix(&format!("{n}=")) {
                return Some(v.to_string());
            }
        }
    }
    None
}

/// Weave's DNS arguments for `docker run`, given weftDNS's address and domain (`None`: DNS
/// off): `--dns`, a hostname `NAME.<domain>` for a named container that has none (unless it
/// would be too long), and the search domain (`.` when the container has a hostname).
fn dns_args(args: &[String], dns: Option<(String, String)>) -> Vec<String> {
    let Some((addr, domain)) = dns else {
        return Vec::new();
    };
    let mut out = vec![format!("--dns={addr}")];
    let mut has_hostname = flag_value(args, &["-h", "--hostname"]).is_some();
    if !has_hostname {
        if let Some(name) = flag_value(args, &["--name"]) {
            let host = format!("{name}.{}", domain.trim_end_matches('.'));
            if host.len() > MAX_HOSTNAME {
                eprintln!("Container name too long to be used as hostname");
            } else {
                out.push(format!("--hostname={host}"));
                has_hostname = true;
            }
        }
    }
    out.push(if has_hostname {
        "--dns-search=.".to_string()
    } else {
        format!("--dns-search={domain}")
    });
    out
}

/// weftDNS's address and domain, if DNS is on.
fn dns_settings(http: &str) -> Option<(String, String)> {
    match (
        client::get(http, "/dns-address", false),
        client::get(http, "/domain", false),
    ) {
        (Reply::Ok(a), Reply::Ok(d)) => Some((a.trim().to_string(), d.trim().to_string())),
        _ => None,
    }
}

/// Runs the docker CLI; its output when it succeeds, else its exit code (its error already
/// printed on stderr).
fn docker(args: &[String]) -> Result<String, ExitCode> {
    let out = Command::new("docker")
        .args(args)
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| {
            eprintln!("cannot run docker: {e}");
            ExitCode::from(1)
        })?;
    if !out.status.success() {
        let code = out.status.code().and_then(|c| u8::try_from(c).ok());
        return Err(ExitCode::from(code.unwrap_or(1)));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Attaches the container; `hosts`: its `/etc/hosts` rewritten with these `--add-host` entries.
fn attach(
    http: &str,
    addrs: &[AddrArg],
    container: &str,
    o: &Options,
    hosts: Option<Vec<String>>,
) -> Result<(), ExitCode> {
    let o = AttachOptions {
        multicast: o.multicast,
        with_dns: o.with_dns,
        hosts,
    };
    attach_container(&Host, http, addrs, container, &o)
        .map(|_| ())
        .map_err(|f| f.report())
}

/// `weft run [addr...] [--without-dns] [--no-rewrite-hosts] [--no-multicast-route] <docker run
/// args...>`: prints the container's ID.
pub(crate) fn run(args: &[String]) -> ExitCode {
    let (addrs, o, rest) = match split(args) {
        Ok(x) => x,
        Err(f) => return f.report(),
    };
    if rest.is_empty() {
        return usage_error();
    }
    let http = http_addr();
    let dns = if o.with_dns {
        dns_settings(&http)
    } else {
        None
    };
    let mut argv = vec![
        "run".to_string(),
        "-d".into(),
        "-e".into(),
        "WEAVE_CIDR=none".into(),
    ];
    argv.extend(dns_args(&rest, dns));
    let hosts = o.rewrite_hosts.then(|| add_hosts(&rest));
    argv.extend(rest);
    let id = match docker(&argv) {
        Ok(id) => id,
        Err(code) => return code,
    };
    if let Err(code) = attach(&http, &addrs, &id, &o, hosts) {
        return code;
    }
    outln!("{id}");
    ExitCode::SUCCESS
}

/// `weft start [addr...] <container>` and `weft restart [addr...] <container>`.
pub(crate) fn start(verb: &str, args: &[String]) -> ExitCode {
    let (addrs, o, rest) = match split(args) {
        Ok(x) => x,
        Err(f) => return f.report(),
    };
    let [container] = rest.as_slice() else {
        return usage_error();
    };
    if verb == "restart" {
        // The old interface goes first: the stopped container's namespace may outlive its
        // process for a moment and would still answer for the address being given back.
        if let Ok(t) = resolve(container) {
            if let Err(e) = weft_attach::blocking::detach(&t.container, &[]) {
                eprintln!("{e}");
            }
        }
    }
    let out = match docker(&[verb.to_string(), container.clone()]) {
        Ok(out) => out,
        Err(code) => return code,
    };
    if let Err(code) = attach(&http_addr(), &addrs, container, &o, None) {
        return code;
    }
    outln!("{out}");
    ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::strings as s;

    #[test]
    fn weft_options_come_before_dockers() {
        let (addrs, o, rest) =
            split(&s(&["10.2.1.1/24", "--without-dns", "--name", "a", "img"])).unwrap();
        assert_eq!(addrs.len(), 1);
        assert!(!o.with_dns && o.multicast && o.rewrite_hosts);
        assert_eq!(rest, s(&["--name", "a", "img"]));
        let (_, o, _) = split(&s(&["--no-rewrite-hosts", "img"])).unwrap();
        assert!(!o.rewrite_hosts);
        assert_eq!(
            add_hosts(&s(&[
                "--add-host",
                "db:10.0.0.9",
                "--add-host=c:10.0.0.8",
                "img"
            ])),
            s(&["db:10.0.0.9", "c:10.0.0.8"])
        );
    }

    #[test]
    fn dns_arguments_as_weave_1_gives_them() {
        let dns = || Some(("172.17.0.1".to_string(), "weave.local.".to_string()));
        assert_eq!(
            dns_args(&s(&["--name", "web", "img"]), dns()),
            s(&[
                "--dns=172.17.0.1",
                "--hostname=web.weave.local",
                "--dns-search=."
            ])
        );
        assert_eq!(
            dns_args(&s(&["--name=web", "-h", "x.weave.local", "img"]), dns()),
            s(&["--dns=172.17.0.1", "--dns-search=."])
        );
        assert_eq!(
            dns_args(&s(&["img"]), dns()),
            s(&["--dns=172.17.0.1", "--dns-search=weave.local."])
        );
        let long = "x".repeat(60);
        assert_eq!(
            dns_args(&s(&["--name", &long, "img"]), dns()),
            s(&["--dns=172.17.0.1", "--dns-search=weave.local."])
        );
        assert!(dns_args(&s(&["img"]), None).is_empty());
    }
}
