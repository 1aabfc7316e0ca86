//! Weave Net 1.x's Docker commands, which Weave 2.0 removed and weft keeps: `weft run`
//! (`docker run -d` with weftDNS's settings, then attach, rewriting the container's
//! `/etc/hosts` unless `--no-rewrite-hosts`, with the `--add-host` entries given to docker),
//! `weft start` (`docker start`, then attach) and `weft restart` (`docker restart`, then attach
//! again with the addresses its weave interface carried: claimed again under its ID, so that
//! `weft run 10.2.1.5/24 …` or `net:10.40.0.0/16` comes back as it was; one that carried none,
//! being stopped, gets `net:default`, where IPAM gives back what it still holds for it).
//!
//! All three need the router: when it does not answer they say so and run nothing, rather than
//! leave a container without its weave interface. A container `weft run` made and could not
//! attach is killed, as Weave Net 1.x did.
//!
//! They run the `docker` CLI, as Weave's script did: `docker run` takes dozens of flags whose
//! meaning is the CLI's, and passing them through keeps them all working. What weft reads of
//! them (`--name`, `-h`, `--dns-search`, `--add-host`) it reads up to the image only, so that
//! the container's own command line is not taken for docker's.

use std::process::{Command, ExitCode, Stdio};

use weft_types::Ipv4Cidr;

use crate::client::{self, Reply};
use crate::containers::{attach_container, resolve, weave_cidrs, AttachOptions, Host};
use crate::ipam::{split_addrs, AddrArg, Failure};
use crate::{http_addr, not_running, usage_error};

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

/// Splits `[addr...] [weft options] <docker args...>`; the addresses and weft's options may
/// come in either order (Weave Net 1.x's usage puts the options first).
fn split(args: &[String]) -> Result<(Vec<AddrArg>, Options, Vec<String>), Failure> {
    let mut o = Options {
        with_dns: true,
        multicast: true,
        rewrite_hosts: true,
    };
    let mut addrs = Vec::new();
    let mut rest = args;
    loop {
        let (more, after) = split_addrs(rest)?;
        addrs.extend(more);
        rest = &rest[rest.len() - after.len()..];
        match rest.first().map(String::as_str) {
            Some("--without-dns") => o.with_dns = false,
            Some("--no-multicast-route") => o.multicast = false,
            Some("--no-rewrite-hosts") => o.rewrite_hosts = false,
            Some("--rewrite-hosts") => o.rewrite_hosts = true,
            _ => break,
        }
        rest = &rest[1..];
    }
    Ok((addrs, o, rest.to_vec()))
}

/// The long options of `docker run` that take a value (Docker 28's, and older spellings such
/// as `--net`); every other option is a switch. The first word that is neither an option nor
/// an option's value is the image, and what follows it is the container's command.
const VALUE_OPTIONS: &[&str] = &[
    "add-host",
    "annotation",
    "attach",
    "blkio-weight",
    "blkio-weight-device",
    "cap-add",
    "cap-drop",
    "cgroup-parent",
    "cgroupns",
    "cidfile",
    "cpu-count",
    "cpu-percent",
    "cpu-period",
    "cpu-quota",
    "cpu-rt-period",
    "cpu-rt-runtime",
    "cpu-shares",
    "cpus",
    "cpuset-cpus",
    "cpuset-mems",
    "credentialspec",
    "detach-keys",
    "device",
    "device-cgroup-rule",
    "device-read-bps",
    "device-read-iops",
    "device-write-bps",
    "device-write-iops",
    "dns",
    "dns-opt",
    "dns-option",
    "dns-search",
    "domainname",
    "entrypoint",
    "env",
    "env-file",
    "expose",
    "gpus",
    "group-add",
    "health-cmd",
    "health-interval",
    "health-retries",
    "health-start-interval",
    "health-start-period",
    "health-timeout",
    "hostname",
    "io-maxbandwidth",
    "io-maxiops",
    "ip",
    "ip6",
    "ipc",
    "isolation",
    "kernel-memory",
    "label",
    "label-file",
    "link",
    "link-local-ip",
    "log-driver",
    "log-opt",
    "mac-address",
    "memory",
    "memory-reservation",
    "memory-swap",
    "memory-swappiness",
    "mount",
    "name",
    "net",
    "net-alias",
    "network",
    "network-alias",
    "oom-score-adj",
    "pid",
    "pids-limit",
    "platform",
    "publish",
    "pull",
    "restart",
    "runtime",
    "security-opt",
    "shm-size",
    "stop-signal",
    "stop-timeout",
    "storage-opt",
    "sysctl",
    "tmpfs",
    "ulimit",
    "user",
    "userns",
    "uts",
    "volume",
    "volume-driver",
    "volumes-from",
    "workdir",
];

/// The one-letter options of `docker run` that take a value: `-e X`, `-eX`, `-e=X`, and last
/// in a group, `-de X`.
const VALUE_LETTERS: &str = "acehlmpuvw";

/// One option given to `docker run`: its name (`--name`, `-h`) and its value, if it takes one.
type RunOption = (String, Option<String>);

/// The options in `docker run` arguments, up to the image.
fn run_options(args: &[String]) -> Vec<RunOption> {
    let mut out = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if a == "--" {
            break;
        }
        if let Some(long) = a.strip_prefix("--") {
            match long.split_once('=') {
                Some((name, v)) => out.push((format!("--{name}"), Some(v.to_string()))),
                None if VALUE_OPTIONS.contains(&long) => out.push((a.clone(), it.next().cloned())),
                None => out.push((a.clone(), None)),
            }
        } else if let Some(letters) = a.strip_prefix('-').filter(|l| !l.is_empty()) {
            for (i, c) in letters.char_indices() {
                if !VALUE_LETTERS.contains(c) {
                    out.push((format!("-{c}"), None));
                    continue;
                }
                let attached = &letters[i + c.len_utf8()..];
                let v = if attached.is_empty() {
                    it.next().cloned()
                } else {
                    Some(attached.strip_prefix('=').unwrap_or(attached).to_string())
                };
                out.push((format!("-{c}"), v));
                break;
            }
        } else {
            break;
        }
    }
    out
}

/// Whether one of `names` was given.
fn given(opts: &[RunOption], names: &[&str]) -> bool {
    opts.iter().any(|(n, _)| names.contains(&n.as_str()))
}

/// The values given to option `name`, in order.
fn values<'a>(opts: &'a [RunOption], name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
    opts.iter()
        .filter(move |(n, _)| n == name)
        .filter_map(|(_, v)| v.as_deref())
}

/// Weave's DNS arguments for `docker run` with options `opts`, given weftDNS's address and
/// domain (`None`: DNS off): `--dns`, a hostname `NAME.<domain>` for a named container that has
/// none (unless it would be too long), and, unless `--dns-search` is given, the search domain
/// (`.` when the container has a hostname).
fn dns_args(opts: &[RunOption], dns: Option<(String, String)>) -> Vec<String> {
    let Some((addr, domain)) = dns else {
        return Vec::new();
    };
    let mut out = vec![format!("--dns={addr}")];
    let mut has_hostname = given(opts, &["-h", "--hostname"]);
    if !has_hostname {
        // Docker takes the last one given.
        if let Some(name) = values(opts, "--name").last() {
            let host = format!("{name}.{}", domain.trim_end_matches('.'));
            if host.len() > MAX_HOSTNAME {
                eprintln!("Container name too long to be used as hostname");
            } else {
                out.push(format!("--hostname={host}"));
                has_hostname = true;
            }
        }
    }
    if !given(opts, &["--dns-search"]) {
        out.push(if has_hostname {
            "--dns-search=.".to_string()
        } else {
            format!("--dns-search={domain}")
        });
    }
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

/// `Err`: the router does not answer (said on stderr, with the exit code).
fn router_running(http: &str) -> Result<(), ExitCode> {
    match client::get(http, "/status", false) {
        Reply::Down => Err(not_running()),
        _ => Ok(()),
    }
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
    if let Err(code) = router_running(&http) {
        return code;
    }
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
    let opts = run_options(&rest);
    argv.extend(dns_args(&opts, dns));
    let hosts = o
        .rewrite_hosts
        .then(|| values(&opts, "--add-host").map(String::from).collect());
    argv.extend(rest);
    let id = match docker(&argv) {
        Ok(id) => id,
        Err(code) => return code,
    };
    if let Err(code) = attach(&http, &addrs, &id, &o, hosts) {
        // Its output is not wanted; its failure would say no more than the attach's.
        let _ = Command::new("docker")
            .args(["kill", &id])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
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
    let http = http_addr();
    if let Err(code) = router_running(&http) {
        return code;
    }
    let mut held = Vec::new();
    if verb == "restart" {
        if let Ok(t) = resolve(container) {
            held = weave_cidrs(&t.container).unwrap_or_default();
            // The old interface goes first: the stopped container's namespace may outlive its
            // process for a moment and would still answer for the address being given back.
            if let Err(e) = weft_attach::blocking::detach(&t.container, &[]) {
                eprintln!("{e}");
            }
        }
    }
    let out = match docker(&[verb.to_string(), container.clone()]) {
        Ok(out) => out,
        Err(code) => return code,
    };
    let addrs = restart_addrs(addrs, &held);
    if let Err(code) = attach(&http, &addrs, container, &o, None) {
        return code;
    }
    outln!("{out}");
    ExitCode::SUCCESS
}

/// What a restart attaches: the addresses given, else those the container carried (claimed
/// again as they are), else none (`net:default`).
fn restart_addrs(given: Vec<AddrArg>, held: &[Ipv4Cidr]) -> Vec<AddrArg> {
    if given.is_empty() {
        held.iter().copied().map(AddrArg::Explicit).collect()
    } else {
        given
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{cidr, strings as s, Canned, FakeRouter};

    #[test]
    fn weft_options_come_before_dockers() {
        let (addrs, o, rest) =
            split(&s(&["10.2.1.1/24", "--without-dns", "--name", "a", "img"])).unwrap();
        assert_eq!(addrs.len(), 1);
        assert!(!o.with_dns && o.multicast && o.rewrite_hosts);
        assert_eq!(rest, s(&["--name", "a", "img"]));
        // Weave Net 1.x's order: options, then addresses.
        let (addrs, o, rest) = split(&s(&[
            "--no-rewrite-hosts",
            "--no-multicast-route",
            "net:10.40.0.0/16",
            "10.2.1.1/24",
            "--without-dns",
            "img",
        ]))
        .unwrap();
        assert_eq!(addrs.len(), 2);
        assert!(!o.with_dns && !o.multicast && !o.rewrite_hosts);
        assert_eq!(rest, s(&["img"]));
    }

    #[test]
    fn docker_options_end_at_the_image() {
        let opts = |a: &[&str]| run_options(&s(a));
        let o = |n: &str, v: Option<&str>| (n.to_string(), v.map(String::from));
        assert_eq!(
            opts(&["--name", "w", "img", "ls", "-h", "/"]),
            vec![o("--name", Some("w"))]
        );
        assert_eq!(
            opts(&["-dit", "--rm", "-e", "A=1", "-eB=2", "-p=80:80", "img", "-h"]),
            vec![
                o("-d", None),
                o("-i", None),
                o("-t", None),
                o("--rm", None),
                o("-e", Some("A=1")),
                o("-e", Some("B=2")),
                o("-p", Some("80:80")),
            ]
        );
        assert_eq!(
            opts(&["-dh", "x", "--net=none", "--add-host", "db:1.2.3.4", "img"]),
            vec![
                o("-d", None),
                o("-h", Some("x")),
                o("--net", Some("none")),
                o("--add-host", Some("db:1.2.3.4")),
            ]
        );
        assert_eq!(opts(&["--", "-h"]), vec![]);
        let given_add_hosts = opts(&["--add-host", "a:1.1.1.1", "--add-host=b:2.2.2.2", "i"]);
        let hosts: Vec<&str> = values(&given_add_hosts, "--add-host").collect();
        assert_eq!(hosts, ["a:1.1.1.1", "b:2.2.2.2"]);
    }

    #[test]
    fn dns_arguments_as_weave_1_gives_them() {
        let dns = || Some(("172.17.0.1".to_string(), "weave.local.".to_string()));
        let args = |a: &[&str]| dns_args(&run_options(&s(a)), dns());
        assert_eq!(
            args(&["--name", "web", "img"]),
            s(&[
                "--dns=172.17.0.1",
                "--hostname=web.weave.local",
                "--dns-search=."
            ])
        );
        assert_eq!(
            args(&["--name=web", "-h", "x.weave.local", "img"]),
            s(&["--dns=172.17.0.1", "--dns-search=."])
        );
        assert_eq!(
            args(&["img"]),
            s(&["--dns=172.17.0.1", "--dns-search=weave.local."])
        );
        // The container's own -h is no hostname for docker.
        assert_eq!(
            args(&["--name", "w", "img", "ls", "-h", "/"]),
            s(&[
                "--dns=172.17.0.1",
                "--hostname=w.weave.local",
                "--dns-search=."
            ])
        );
        // A search domain given is the only one.
        assert_eq!(
            args(&["--dns-search", "x", "--name", "w", "img"]),
            s(&["--dns=172.17.0.1", "--hostname=w.weave.local"])
        );
        assert_eq!(args(&["--dns-search=x", "img"]), s(&["--dns=172.17.0.1"]));
        let long = "x".repeat(60);
        assert_eq!(
            args(&["--name", &long, "img"]),
            s(&["--dns=172.17.0.1", "--dns-search=weave.local."])
        );
        assert!(dns_args(&run_options(&s(&["img"])), None).is_empty());
    }

    #[test]
    fn restart_claims_the_addresses_held() {
        let held = [cidr("10.2.1.5/24"), cidr("10.40.0.1/16")];
        assert_eq!(
            restart_addrs(Vec::new(), &held),
            vec![AddrArg::Explicit(held[0]), AddrArg::Explicit(held[1])]
        );
        let given = vec![AddrArg::Subnet(cidr("10.40.0.0/16"))];
        assert_eq!(restart_addrs(given.clone(), &held), given);
        assert!(restart_addrs(Vec::new(), &[]).is_empty());
    }

    #[test]
    fn nothing_runs_without_a_router() {
        let r = FakeRouter::start(|_| Canned::status(503, "not ready\n"));
        assert!(router_running(r.addr()).is_ok());
        // Nothing answers: the commands stop before running docker.
        assert!(router_running("127.0.0.1:1").is_err());
    }
}
