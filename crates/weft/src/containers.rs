//! `weft attach`, `detach`, `ps`, `expose` and `hide`: argument grammar and output as Weave
//! Net's script has them; addresses come from the arguments and from IPAM (`crate::ipam`), the
//! plumbing is weft-attach's, the exposure is the router's.
//!
//! Each command is a function of the router's address and a [`Plumbing`] (the host, or a fake
//! in tests) that returns what to print or a [`Failure`], so that the HTTP calls and their
//! order can be checked without a kernel. An address this command obtained from IPAM and could
//! not put to use is given back before it fails.
//!
//! `attach --rewrite-hosts` (and `weft run`, see `crate::docker`) writes a Docker container's
//! `/etc/hosts` as Weave Net does (`weft_docker::hosts`) between getting the addresses and
//! plumbing them.

use std::net::Ipv4Addr;
use std::process::ExitCode;

use weft_attach::{blocking, Container};
use weft_docker::ContainerInfo;
use weft_types::Ipv4Cidr;

use crate::client::{self, Reply};
use crate::dns;
use crate::ipam::{ips, split_addrs, AddrArg, Failure, Ipam};
use crate::{http_addr, routes, usage_error};

/// The IPAM identity of exposed addresses.
const EXPOSE_IDENT: &str = "weave:expose";

/// The container side of attach and detach.
pub(crate) trait Plumbing {
    /// Whether the container exists.
    fn is_alive(&self, c: &Container) -> bool;
    /// Connects it with these addresses; returns them.
    fn attach(
        &self,
        c: &Container,
        cidrs: &[Ipv4Cidr],
        multicast: bool,
        probe: &[Ipv4Addr],
    ) -> Result<Vec<Ipv4Cidr>, String>;
    /// Removes these addresses (never called with none); returns those it removed.
    fn detach(&self, c: &Container, cidrs: &[Ipv4Cidr]) -> Result<Vec<Ipv4Cidr>, String>;
    /// The addresses its weave interface carries now; `None` when that cannot be told.
    fn configured(&self, c: &Container) -> Option<Vec<Ipv4Cidr>>;
    /// The container a command names: `netns:NAME`, `pid:PID`, or a Docker container's name
    /// or ID.
    fn resolve(&self, arg: &str) -> Result<Target, Failure>;
    /// Writes `text` as the `/etc/hosts` of Docker container `c`.
    fn write_hosts(&self, c: &ContainerInfo, text: &str) -> Result<(), String>;
}

/// A container as a command named it, found: what to plumb, the ident IPAM and DNS file it
/// under (`netns:NAME`, `pid:PID`, or a Docker container's full ID, as Weave Net uses), the
/// name attach registers in DNS, and what Docker says of it (if it is Docker's).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Target {
    pub(crate) container: Container,
    pub(crate) ident: String,
    pub(crate) fqdn: Option<String>,
    pub(crate) docker: Option<ContainerInfo>,
}

/// How attach treats a container beyond its addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct AttachOptions {
    /// The multicast route (unless `--no-multicast-route`).
    pub(crate) multicast: bool,
    /// Its name registered in weftDNS (unless `--without-dns`).
    pub(crate) with_dns: bool,
    /// Its `/etc/hosts` rewritten, with these `--add-host` entries (`name:ip`).
    pub(crate) hosts: Option<Vec<String>>,
}

impl Default for AttachOptions {
    fn default() -> Self {
        Self {
            multicast: true,
            with_dns: true,
            hosts: None,
        }
    }
}

/// Finds what `arg` names on this host: a namespace or process directly, anything else
/// through the Docker daemon (`DOCKER_HOST`), which must know it as a running container.
pub(crate) fn resolve(arg: &str) -> Result<Target, Failure> {
    if let Ok(c) = Container::parse(arg) {
        return Ok(Target {
            ident: c.ident(),
            fqdn: dns::container_fqdn(&c),
            container: c,
            docker: None,
        });
    }
    if arg.starts_with("netns:") || arg.starts_with("pid:") || arg.is_empty() {
        return Err(Failure::Message(format!(
            "invalid container {arg:?}: expected netns:<name>, pid:<pid> or a Docker container"
        )));
    }
    match weft_docker::blocking::inspect(arg) {
        Ok(Some(info)) => match info.pid {
            Some(pid) => Ok(Target {
                container: Container::Pid(pid),
                fqdn: info.fqdn(),
                ident: info.id.clone(),
                docker: Some(info),
            }),
            None => Err(Failure::Message(format!("container {arg} is not running"))),
        },
        Ok(None) => Err(Failure::Message(format!("Error: No such container: {arg}"))),
        Err(e) => Err(Failure::Message(format!(
            "{arg}: not netns:<name> or pid:<pid>, and no Docker container: {e}"
        ))),
    }
}

/// The real thing: weft-attach in this host's namespaces.
pub(crate) struct Host;

impl Plumbing for Host {
    fn is_alive(&self, c: &Container) -> bool {
        c.is_alive()
    }

    fn attach(
        &self,
        c: &Container,
        cidrs: &[Ipv4Cidr],
        multicast: bool,
        probe: &[Ipv4Addr],
    ) -> Result<Vec<Ipv4Cidr>, String> {
        blocking::attach(c, cidrs, multicast, probe).map_err(|e| e.to_string())
    }

    fn detach(&self, c: &Container, cidrs: &[Ipv4Cidr]) -> Result<Vec<Ipv4Cidr>, String> {
        blocking::detach(c, cidrs).map_err(|e| e.to_string())
    }

    fn configured(&self, c: &Container) -> Option<Vec<Ipv4Cidr>> {
        match weave_cidrs(c) {
            Ok(cidrs) => Some(cidrs),
            // No bridge: no container can be attached to it.
            Err(weft_attach::AttachError::NoBridge) => Some(Vec::new()),
            Err(_) => None,
        }
    }

    fn resolve(&self, arg: &str) -> Result<Target, Failure> {
        resolve(arg)
    }

    fn write_hosts(&self, c: &ContainerInfo, text: &str) -> Result<(), String> {
        if c.hosts_path.is_empty() {
            return Err("Docker names no hosts file for it".into());
        }
        weft_docker::hosts::write(std::path::Path::new(&c.hosts_path), text)
            .map_err(|e| format!("{}: {e}", c.hosts_path))
    }
}

/// The addresses the container's weave interface carries now.
pub(crate) fn weave_cidrs(c: &Container) -> Result<Vec<Ipv4Cidr>, weft_attach::AttachError> {
    Ok(blocking::interface(c)?.map(|e| e.cidrs).unwrap_or_default())
}

/// What a container that is not there prints (weft-attach's words for the same case).
fn missing(c: &Container) -> Failure {
    Failure::Message(match c {
        Container::Netns(n) => format!("network namespace {n} does not exist"),
        Container::Pid(p) => format!("process {p} does not exist"),
    })
}

fn fail(e: impl std::fmt::Display) -> ExitCode {
    eprintln!("{e}");
    ExitCode::from(1)
}

/// Prints the command's output line, or its failure.
fn finish(r: Result<String, Failure>) -> ExitCode {
    match r {
        Ok(out) => {
            outln!("{out}");
            ExitCode::SUCCESS
        }
        Err(f) => f.report(),
    }
}

/// The API path that exposes or hides `c`.
fn expose_path(c: &Ipv4Cidr) -> String {
    format!("/expose/{}/{}", c.addr(), c.prefix_len())
}

/// Weave's warning for each address given by hand that lies inside a host route.
fn warn_overlaps(args: &[AddrArg]) {
    let explicit: Vec<Ipv4Cidr> = args
        .iter()
        .filter_map(|a| match a {
            AddrArg::Explicit(c) => Some(*c),
            _ => None,
        })
        .collect();
    if explicit.is_empty() {
        return;
    }
    let table = routes::host_routes();
    for c in explicit {
        if let Some(w) = routes::address_warning(&table, c) {
            eprintln!("{w}");
        }
    }
}

/// What a command decided: a usage error, or its output line or failure.
enum Outcome {
    Usage,
    Done(Result<String, Failure>),
}

fn run(o: Outcome) -> ExitCode {
    match o {
        Outcome::Usage => usage_error(),
        Outcome::Done(r) => finish(r),
    }
}

/// `weft attach [addr...] [--without-dns] [--rewrite-hosts] [--add-host h:ip]...
/// [--no-multicast-route] <container>`.
pub(crate) fn attach(args: &[String]) -> ExitCode {
    run(attach_with(&Host, &http_addr(), args))
}

fn attach_with(p: &impl Plumbing, http: &str, args: &[String]) -> Outcome {
    let (addrs, rest) = match split_addrs(args) {
        Ok(x) => x,
        Err(e) => return Outcome::Done(Err(e)),
    };
    let mut o = AttachOptions::default();
    let mut rewrite_hosts = false;
    let mut add_hosts = Vec::new();
    let mut container = None;
    let mut it = rest.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--without-dns" => o.with_dns = false,
            "--rewrite-hosts" => rewrite_hosts = true,
            "--no-multicast-route" => o.multicast = false,
            "--add-host" => match it.next() {
                Some(h) => add_hosts.push(h.clone()),
                None => return Outcome::Usage,
            },
            s if s.starts_with("--add-host=") => add_hosts.push(s["--add-host=".len()..].into()),
            s if s.starts_with('-') => return Outcome::Usage,
            s if container.is_none() => container = Some(s.to_string()),
            _ => return Outcome::Usage,
        }
    }
    let Some(container) = container else {
        return Outcome::Usage;
    };
    // As in Weave Net, --add-host counts only with --rewrite-hosts.
    o.hosts = rewrite_hosts.then_some(add_hosts);
    Outcome::Done(attach_container(p, http, &addrs, &container, &o))
}

pub(crate) fn attach_container(
    p: &impl Plumbing,
    http: &str,
    addrs: &[AddrArg],
    container: &str,
    o: &AttachOptions,
) -> Result<String, Failure> {
    let Target {
        container: c,
        ident,
        fqdn,
        docker,
    } = p.resolve(container)?;
    // Before asking IPAM, so that a mistyped name allocates nothing.
    if !p.is_alive(&c) {
        return Err(missing(&c));
    }
    let hosts = match (&o.hosts, &docker) {
        (None, _) => None,
        (Some(extra), Some(info)) => Some((extra, info)),
        (Some(_), None) => {
            return Err(Failure::Message(format!(
                "cannot rewrite /etc/hosts of {container}: not a Docker container"
            )))
        }
    };
    let ipam = Ipam::new(http, &ident);
    let mut obtained = Vec::new();
    let give_back = |obtained: &[Ipv4Cidr]| {
        let in_use = if p.is_alive(&c) {
            p.configured(&c)
        } else {
            Some(Vec::new())
        };
        ipam.release_unused(obtained, in_use.as_deref());
    };
    let cidrs = match ipam.allocate(addrs, true, &mut obtained) {
        Ok(c) => c,
        Err(e) => {
            give_back(&obtained);
            return Err(e);
        }
    };
    warn_overlaps(addrs);
    if let Some((extra, info)) = hosts {
        let ips: Vec<Ipv4Addr> = cidrs.iter().map(Ipv4Cidr::addr).collect();
        let text = weft_docker::hosts::contents(info, &ips, extra);
        // Not fatal: Docker's own file serves most containers well enough.
        if let Err(e) = p.write_hosts(info, &text) {
            eprintln!("cannot rewrite /etc/hosts of {container}: {e}");
        }
    }
    // Addresses given by hand are checked for duplicates on the network; IPAM's are unique.
    let by_hand: Vec<Ipv4Addr> = addrs
        .iter()
        .filter_map(|a| match a {
            AddrArg::Explicit(c) => Some(c.addr()),
            _ => None,
        })
        .collect();
    match p.attach(&c, &cidrs, o.multicast, &by_hand) {
        Ok(done) => {
            // The name, as Weave's attach registers it: for each address, checked alive.
            if let Some(fqdn) = fqdn.filter(|_| o.with_dns) {
                if let Err(e) = dns::register(http, &ident, &dns::addrs(&done), &fqdn, true) {
                    eprintln!("cannot register {fqdn} in DNS: {e}");
                }
            }
            Ok(ips(&done))
        }
        Err(e) => {
            give_back(&obtained);
            Err(Failure::Message(e))
        }
    }
}

/// `weft detach [addr...] <container>`.
pub(crate) fn detach(args: &[String]) -> ExitCode {
    run(detach_with(&Host, &http_addr(), args))
}

fn detach_with(p: &impl Plumbing, http: &str, args: &[String]) -> Outcome {
    let (addrs, rest) = match split_addrs(args) {
        Ok(x) => x,
        Err(e) => return Outcome::Done(Err(e)),
    };
    let [container] = rest.as_slice() else {
        return Outcome::Usage;
    };
    Outcome::Done(detach_container(p, http, &addrs, container))
}

fn detach_container(
    p: &impl Plumbing,
    http: &str,
    addrs: &[AddrArg],
    container: &str,
) -> Result<String, Failure> {
    let Target {
        container: c,
        ident,
        ..
    } = p.resolve(container)?;
    let ipam = Ipam::new(http, &ident);
    let targets = ipam.lookup(addrs)?;
    // Nothing to remove; weft-attach would take "none" to mean "all".
    if targets.is_empty() {
        return Ok(String::new());
    }
    let done = p.detach(&c, &targets).map_err(Failure::Message)?;
    // Its names on these addresses go with them (all of them: a name added with dns-add
    // would otherwise point at an address the container no longer has).
    if let Err(e) = dns::deregister(http, &ident, &dns::addrs(&targets), None) {
        eprintln!("cannot remove its DNS names: {e}");
    }
    // The container no longer uses any of them, whether it had them or not.
    ipam.release(&targets)?;
    Ok(ips(&done))
}

/// `weft ps [container...]`: without arguments, every named namespace and every running
/// container of the Docker daemon, if one answers.
pub(crate) fn ps(args: &[String]) -> ExitCode {
    let containers: Vec<(String, Container)> = if args.is_empty() {
        let mut all: Vec<(String, Container)> = weft_attach::named_netns()
            .into_iter()
            .map(|c| (c.id(), c))
            .collect();
        // No daemon, no Docker containers: not an error for ps.
        if let Ok(running) = weft_docker::blocking::running() {
            all.extend(
                running
                    .into_iter()
                    .filter_map(|c| Some((c.id, Container::Pid(c.pid?)))),
            );
        }
        all
    } else {
        match args
            .iter()
            .map(|a| resolve(a))
            .collect::<Result<Vec<_>, _>>()
        {
            Ok(v) => v.into_iter().map(|t| (ps_label(&t), t.container)).collect(),
            Err(e) => return fail(e),
        }
    };
    match blocking::ps(&containers) {
        Ok(lines) => {
            for l in lines {
                outln!("{l}");
            }
            ExitCode::SUCCESS
        }
        Err(e) => fail(e),
    }
}

/// What ps calls a container: a Docker container by its ID, others as weft names them.
fn ps_label(t: &Target) -> String {
    match Container::parse(&t.ident) {
        Ok(c) => c.id(),
        Err(_) => t.ident.clone(),
    }
}

/// `weft expose [addr...] [-h fqdn] [--without-masquerade]`.
pub(crate) fn expose(args: &[String]) -> ExitCode {
    run(expose_with(&http_addr(), args))
}

fn expose_with(http: &str, args: &[String]) -> Outcome {
    let (addrs, rest) = match split_addrs(args) {
        Ok(x) => x,
        Err(e) => return Outcome::Done(Err(e)),
    };
    let mut skip_nat = false;
    let mut fqdn = None;
    let mut it = rest.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--without-masquerade" => skip_nat = true,
            "-h" => match it.next() {
                Some(f) => fqdn = Some(f.as_str()),
                None => return Outcome::Usage,
            },
            _ => return Outcome::Usage,
        }
    }
    Outcome::Done(expose_addrs(http, &addrs, skip_nat, fqdn))
}

fn expose_addrs(
    http: &str,
    addrs: &[AddrArg],
    skip_nat: bool,
    fqdn: Option<&str>,
) -> Result<String, Failure> {
    let ipam = Ipam::new(http, EXPOSE_IDENT);
    let mut obtained = Vec::new();
    // On failure, what the bridge carries is in use; the router's list says what that is.
    let give_back = |obtained: &[Ipv4Cidr]| {
        let exposed = match client::get(http, "/expose", false) {
            Reply::Ok(body) => Some(parse_list(&body)),
            _ => None,
        };
        ipam.release_unused(obtained, exposed.as_deref());
    };
    let cidrs = match ipam.allocate(addrs, false, &mut obtained) {
        Ok(c) => c,
        Err(e) => {
            give_back(&obtained);
            return Err(e);
        }
    };
    warn_overlaps(addrs);
    let form: &[(&str, &str)] = if skip_nat {
        &[("skipNAT", "true")]
    } else {
        &[]
    };
    for c in &cidrs {
        match client::post_form(http, &expose_path(c), form) {
            Reply::Ok(_) => {}
            other => {
                give_back(&obtained);
                return Err(reply_failure(other));
            }
        }
    }
    if let Some(f) = fqdn {
        dns::register(http, EXPOSE_IDENT, &dns::addrs(&cidrs), f, false)?;
    }
    Ok(ips(&cidrs))
}

/// A reply that is not 2xx, as a failure (404: the route is missing).
pub(crate) fn reply_failure(r: Reply) -> Failure {
    match r {
        Reply::Down => Failure::NotRunning,
        Reply::Failed(_, body) | Reply::Ok(body) => Failure::Message(body),
        Reply::NotFound => Failure::Message("the router has no such route (404)".into()),
    }
}

/// Whitespace-separated CIDRs; anything else is skipped.
fn parse_list(body: &str) -> Vec<Ipv4Cidr> {
    body.split_whitespace()
        .filter_map(|s| s.parse().ok())
        .collect()
}

/// `weft hide [addr...]`: without addresses, those IPAM gave `weave:expose` (all exposed
/// addresses when IPAM is off).
pub(crate) fn hide(args: &[String]) -> ExitCode {
    run(hide_with(&http_addr(), args))
}

fn hide_with(http: &str, args: &[String]) -> Outcome {
    let (addrs, rest) = match split_addrs(args) {
        Ok(x) => x,
        Err(e) => return Outcome::Done(Err(e)),
    };
    if !rest.is_empty() {
        return Outcome::Usage;
    }
    Outcome::Done(hide_addrs(http, &addrs))
}

fn hide_addrs(http: &str, addrs: &[AddrArg]) -> Result<String, Failure> {
    let ipam = Ipam::new(http, EXPOSE_IDENT);
    let targets = match ipam.lookup(addrs) {
        Ok(t) => t,
        Err(Failure::NeedIpam) if addrs.is_empty() => match client::get(http, "/expose", false) {
            Reply::Ok(body) => parse_list(&body),
            other => return Err(reply_failure(other)),
        },
        Err(e) => return Err(e),
    };
    for c in &targets {
        match client::delete(http, &expose_path(c)) {
            Reply::Ok(_) => {}
            other => return Err(reply_failure(other)),
        }
    }
    if let Err(e) = dns::deregister(http, EXPOSE_IDENT, &dns::addrs(&targets), None) {
        eprintln!("cannot remove DNS names: {e}");
    }
    ipam.release(&targets)?;
    Ok(ips(&targets))
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;

    use super::*;
    use crate::ipam::NEED_IPAM;
    use crate::testing::{cidr, strings as s, Canned, FakeRouter};

    /// Plumbing that records its calls and fails when told to.
    #[derive(Default)]
    struct Fake {
        dead: bool,
        fail_attach: bool,
        /// What the container carries before, and after a failed attach.
        configured: Vec<Ipv4Cidr>,
        /// Its hostname.
        fqdn: Option<String>,
        /// What Docker says of it, when it is a Docker container.
        docker: Option<ContainerInfo>,
        calls: RefCell<Vec<String>>,
    }

    impl Plumbing for Fake {
        fn is_alive(&self, _: &Container) -> bool {
            !self.dead
        }

        fn attach(
            &self,
            c: &Container,
            cidrs: &[Ipv4Cidr],
            _: bool,
            _: &[Ipv4Addr],
        ) -> Result<Vec<Ipv4Cidr>, String> {
            self.calls
                .borrow_mut()
                .push(format!("attach {} {}", c.ident(), ips(cidrs)));
            if self.fail_attach {
                return Err("address 10.32.0.1 is already in use on the weave network".into());
            }
            Ok(cidrs.to_vec())
        }

        fn detach(&self, c: &Container, cidrs: &[Ipv4Cidr]) -> Result<Vec<Ipv4Cidr>, String> {
            self.calls
                .borrow_mut()
                .push(format!("detach {} {}", c.ident(), ips(cidrs)));
            Ok(cidrs
                .iter()
                .filter(|c| self.configured.contains(c))
                .copied()
                .collect())
        }

        fn configured(&self, _: &Container) -> Option<Vec<Ipv4Cidr>> {
            Some(self.configured.clone())
        }

        fn resolve(&self, arg: &str) -> Result<Target, Failure> {
            let c = Container::parse(arg).map_err(|e| Failure::Message(e.to_string()))?;
            Ok(Target {
                ident: c.ident(),
                fqdn: self.fqdn.clone(),
                container: c,
                docker: self.docker.clone(),
            })
        }

        fn write_hosts(&self, c: &ContainerInfo, text: &str) -> Result<(), String> {
            self.calls
                .borrow_mut()
                .push(format!("hosts {} {text}", c.hosts_path));
            Ok(())
        }
    }

    fn done(o: Outcome) -> Result<String, Failure> {
        match o {
            Outcome::Usage => panic!("usage error"),
            Outcome::Done(r) => r,
        }
    }

    /// IPAM on: net:default gives 10.32.0.1/12, everything else succeeds.
    fn ipam_on() -> FakeRouter {
        FakeRouter::start(|req| match req.method.as_str() {
            "POST" if req.path.starts_with("/ip/") => Canned::ok("10.32.0.1/12"),
            "GET" if req.path == "/ip/netns:c1" => Canned::ok("10.32.0.1/12"),
            "GET" if req.path == "/ip/weave:expose" => Canned::ok("10.32.0.7/12\n"),
            "GET" => Canned::ok(""),
            _ => Canned::status(204, ""),
        })
    }

    /// IPAM off: the /ip routes are missing.
    fn ipam_off() -> FakeRouter {
        FakeRouter::start(|req| match (req.method.as_str(), req.path.as_str()) {
            (_, p) if p.starts_with("/ip") => Canned::status(404, "404 page not found\n"),
            ("GET", "/expose") => Canned::ok("10.2.1.254/24\n10.2.9.254/24\n"),
            _ => Canned::status(204, ""),
        })
    }

    #[test]
    fn attach_registers_the_hostname_unless_without_dns() {
        let r = ipam_on();
        let p = Fake {
            fqdn: Some("c1.weave.local".into()),
            ..Fake::default()
        };
        let out = done(attach_with(&p, r.addr(), &s(&["netns:c1"])));
        assert_eq!(out, Ok("10.32.0.1".into()));
        let out = done(attach_with(
            &p,
            r.addr(),
            &s(&["--without-dns", "netns:c1"]),
        ));
        assert_eq!(out, Ok("10.32.0.1".into()));
        assert_eq!(
            r.requests(),
            vec![
                "POST /ip/netns:c1?check-alive=true",
                "PUT /name/netns:c1/10.32.0.1 <fqdn=c1.weave.local&check-alive=true>",
                "POST /ip/netns:c1?check-alive=true",
            ]
        );
    }

    #[test]
    fn attach_rewrite_hosts_writes_before_plumbing() {
        let r = ipam_on();
        let p = Fake {
            docker: Some(ContainerInfo {
                hostname: "c1".into(),
                domainname: "weave.local".into(),
                hosts_path: "/x/hosts".into(),
                ..ContainerInfo::default()
            }),
            ..Fake::default()
        };
        let out = done(attach_with(
            &p,
            r.addr(),
            &s(&[
                "--rewrite-hosts",
                "--add-host",
                "db:10.0.0.9",
                "--add-host=cache:10.0.0.8",
                "netns:c1",
            ]),
        ));
        assert_eq!(out, Ok("10.32.0.1".into()));
        let calls = p.calls.borrow().clone();
        assert_eq!(calls.len(), 2);
        let hosts = calls[0].strip_prefix("hosts /x/hosts ").unwrap();
        let entries = "10.32.0.1       c1.weave.local c1\n\n\
            # static names added with --add-host\n\
            10.0.0.9        db\n\
            10.0.0.8        cache\n";
        assert!(hosts.contains(entries), "{hosts}");
        assert_eq!(calls[1], "attach netns:c1 10.32.0.1");
        // --add-host alone changes nothing, as in Weave Net.
        done(attach_with(
            &p,
            r.addr(),
            &s(&["--add-host=db:1.2.3.4", "netns:c1"]),
        ))
        .unwrap();
        assert_eq!(p.calls.borrow().len(), 3);
        assert!(matches!(
            attach_with(&p, r.addr(), &s(&["--rewrite-hosts", "--add-host"])),
            Outcome::Usage
        ));
    }

    #[test]
    fn attach_rewrite_hosts_needs_a_docker_container() {
        let r = ipam_on();
        let out = done(attach_with(
            &Fake::default(),
            r.addr(),
            &s(&["--rewrite-hosts", "netns:c1"]),
        ));
        assert_eq!(
            out.unwrap_err().to_string(),
            "cannot rewrite /etc/hosts of netns:c1: not a Docker container"
        );
        assert!(r.requests().is_empty());
    }

    #[test]
    fn attach_allocates_then_plumbs() {
        let r = ipam_on();
        let p = Fake::default();
        let out = done(attach_with(&p, r.addr(), &s(&["netns:c1"])));
        assert_eq!(out, Ok("10.32.0.1".into()));
        assert_eq!(r.requests(), vec!["POST /ip/netns:c1?check-alive=true"]);
        assert_eq!(*p.calls.borrow(), vec!["attach netns:c1 10.32.0.1"]);
        let out = done(attach_with(
            &p,
            r.addr(),
            &s(&[
                "net:10.32.4.0/24",
                "ip:10.2.1.1/24",
                "--no-multicast-route",
                "pid:42",
            ]),
        ));
        assert_eq!(out, Ok("10.32.0.1 10.2.1.1".into()));
        assert_eq!(
            &r.requests()[1..],
            [
                "POST /ip/pid:42/10.32.4.0/24?check-alive=true",
                "PUT /ip/pid:42/10.2.1.1/24?check-alive=true",
            ]
        );
    }

    #[test]
    fn attach_with_ipam_off() {
        let r = ipam_off();
        let p = Fake::default();
        // An explicit address: the 404 on the claim is ignored.
        let out = done(attach_with(&p, r.addr(), &s(&["10.2.1.1/24", "netns:c1"])));
        assert_eq!(out, Ok("10.2.1.1".into()));
        assert_eq!(
            r.requests(),
            vec!["PUT /ip/netns:c1/10.2.1.1/24?check-alive=true"]
        );
        // No address: net:default, which needs IPAM; nothing plumbed.
        let out = done(attach_with(&p, r.addr(), &s(&["netns:c1"])));
        assert_eq!(out.unwrap_err().to_string(), NEED_IPAM);
        assert_eq!(p.calls.borrow().len(), 1);
    }

    #[test]
    fn attach_checks_the_container_before_allocating() {
        let r = ipam_on();
        let p = Fake {
            dead: true,
            ..Fake::default()
        };
        let out = done(attach_with(&p, r.addr(), &s(&["netns:typo"])));
        assert_eq!(
            out.unwrap_err().to_string(),
            "network namespace typo does not exist"
        );
        assert!(r.requests().is_empty());
        assert!(p.calls.borrow().is_empty());
    }

    #[test]
    fn attach_releases_what_it_obtained_when_plumbing_fails() {
        let r = ipam_on();
        let p = Fake {
            fail_attach: true,
            // Had 10.2.1.1 already: that one stays.
            configured: vec![cidr("10.2.1.1/24")],
            ..Fake::default()
        };
        let out = done(attach_with(
            &p,
            r.addr(),
            &s(&["net:default", "10.2.1.1/24", "netns:c1"]),
        ));
        assert_eq!(
            out.unwrap_err().to_string(),
            "address 10.32.0.1 is already in use on the weave network"
        );
        assert_eq!(
            r.requests(),
            vec![
                "POST /ip/netns:c1?check-alive=true",
                "PUT /ip/netns:c1/10.2.1.1/24?check-alive=true",
                "DELETE /ip/netns:c1/10.32.0.1",
            ]
        );
    }

    #[test]
    fn attach_releases_earlier_allocations_when_a_later_one_fails() {
        let r = FakeRouter::start(|req| match req.method.as_str() {
            "POST" => Canned::ok("10.32.0.1/12"),
            "PUT" => Canned::status(
                400,
                "Unable to claim: address 10.32.0.9 is owned by netns:c9\n",
            ),
            _ => Canned::status(204, ""),
        });
        let p = Fake::default();
        let out = done(attach_with(
            &p,
            r.addr(),
            &s(&["net:default", "10.32.0.9/12", "netns:c1"]),
        ));
        assert_eq!(
            out.unwrap_err().to_string(),
            "Unable to claim: address 10.32.0.9 is owned by netns:c9"
        );
        assert_eq!(
            r.requests(),
            vec![
                "POST /ip/netns:c1?check-alive=true",
                "PUT /ip/netns:c1/10.32.0.9/12?check-alive=true",
                "DELETE /ip/netns:c1/10.32.0.1",
            ]
        );
        assert!(p.calls.borrow().is_empty());
    }

    #[test]
    fn attach_cancelled() {
        let r = FakeRouter::start(|_| Canned::ok("cancelled"));
        let out = done(attach_with(&Fake::default(), r.addr(), &s(&["pid:42"])));
        assert_eq!(
            out.unwrap_err().to_string(),
            "IP address allocation for pid:42 was cancelled: the container is not running"
        );
    }

    #[test]
    fn attach_usage() {
        let p = Fake::default();
        for args in [
            &["10.2.1.1/24"][..],
            &["--bogus", "netns:c1"],
            &["netns:a", "netns:b"],
        ] {
            assert!(matches!(
                attach_with(&p, "127.0.0.1:1", &s(args)),
                Outcome::Usage
            ));
        }
    }

    #[test]
    fn detach_looks_up_then_releases() {
        let r = ipam_on();
        let p = Fake {
            configured: vec![cidr("10.32.0.1/12"), cidr("10.2.1.1/24")],
            ..Fake::default()
        };
        let out = done(detach_with(&p, r.addr(), &s(&["netns:c1"])));
        assert_eq!(out, Ok("10.32.0.1".into()));
        let out = done(detach_with(
            &p,
            r.addr(),
            &s(&["10.2.1.1/24", "net:10.40.0.0/16", "netns:c1"]),
        ));
        assert_eq!(out, Ok("10.2.1.1".into()));
        assert_eq!(
            r.requests(),
            vec![
                "GET /ip/netns:c1",
                "DELETE /name/netns:c1/10.32.0.1",
                "DELETE /ip/netns:c1/10.32.0.1",
                "GET /ip/netns:c1/10.40.0.0/16",
                "DELETE /name/netns:c1/10.2.1.1",
                "DELETE /ip/netns:c1/10.2.1.1",
            ]
        );
        assert_eq!(
            *p.calls.borrow(),
            vec!["detach netns:c1 10.32.0.1", "detach netns:c1 10.2.1.1"]
        );
        // Nothing IPAM knows of: nothing detached (not "everything").
        let out = done(detach_with(
            &p,
            r.addr(),
            &s(&["net:10.40.0.0/16", "netns:c1"]),
        ));
        assert_eq!(out, Ok(String::new()));
        assert_eq!(p.calls.borrow().len(), 2);
    }

    #[test]
    fn detach_with_ipam_off() {
        let r = FakeRouter::start(|req| {
            if req.method == "DELETE" && req.path.starts_with("/ip/") {
                Canned::status(400, "Unable to free: Free: address 10.2.1.1 not found\n")
            } else {
                Canned::status(404, "")
            }
        });
        let p = Fake {
            configured: vec![cidr("10.2.1.1/24")],
            ..Fake::default()
        };
        let out = done(detach_with(&p, r.addr(), &s(&["10.2.1.1/24", "netns:c1"])));
        assert_eq!(out, Ok("10.2.1.1".into()));
        assert_eq!(
            r.requests(),
            vec![
                "DELETE /name/netns:c1/10.2.1.1",
                "DELETE /ip/netns:c1/10.2.1.1"
            ]
        );
        let out = done(detach_with(&p, r.addr(), &s(&["netns:c1"])));
        assert_eq!(out.unwrap_err().to_string(), NEED_IPAM);
    }

    #[test]
    fn expose_allocates_for_weave_expose() {
        let r = ipam_on();
        let out = done(expose_with(r.addr(), &s(&["--without-masquerade"])));
        assert_eq!(out, Ok("10.32.0.1".into()));
        let out = done(expose_with(
            r.addr(),
            &s(&["10.2.1.254/24", "-h", "h.weave.local"]),
        ));
        assert_eq!(out, Ok("10.2.1.254".into()));
        assert_eq!(
            r.requests(),
            vec![
                "POST /ip/weave:expose",
                "POST /expose/10.32.0.1/12 <skipNAT=true>",
                "PUT /ip/weave:expose/10.2.1.254/24",
                "POST /expose/10.2.1.254/24",
                "PUT /name/weave:expose/10.2.1.254 <fqdn=h.weave.local>",
            ]
        );
        let off = ipam_off();
        assert_eq!(
            done(expose_with(off.addr(), &[])).unwrap_err().to_string(),
            NEED_IPAM
        );
        assert!(matches!(
            expose_with(off.addr(), &s(&["-h"])),
            Outcome::Usage
        ));
    }

    #[test]
    fn expose_failure_releases_unless_exposed() {
        let r = FakeRouter::start(|req| match (req.method.as_str(), req.path.as_str()) {
            ("POST", "/ip/weave:expose") => Canned::ok("10.32.0.1/12"),
            ("POST", "/expose/10.32.0.1/12") => Canned::status(500, "unable to expose: boom\n"),
            ("GET", "/expose") => Canned::ok("10.2.1.254/24\n"),
            _ => Canned::status(204, ""),
        });
        let out = done(expose_with(r.addr(), &s(&["10.2.1.254/24", "net:default"])));
        assert_eq!(out.unwrap_err().to_string(), "unable to expose: boom");
        assert_eq!(
            r.requests(),
            vec![
                "PUT /ip/weave:expose/10.2.1.254/24",
                "POST /ip/weave:expose",
                "POST /expose/10.2.1.254/24",
                "POST /expose/10.32.0.1/12",
                "GET /expose",
                "DELETE /ip/weave:expose/10.32.0.1",
            ]
        );
    }

    #[test]
    fn hide_looks_up_weave_expose() {
        let r = ipam_on();
        assert_eq!(done(hide_with(r.addr(), &[])), Ok("10.32.0.7".into()));
        assert_eq!(
            done(hide_with(r.addr(), &s(&["10.2.1.254/24"]))),
            Ok("10.2.1.254".into())
        );
        assert_eq!(
            r.requests(),
            vec![
                "GET /ip/weave:expose",
                "DELETE /expose/10.32.0.7/12",
                "DELETE /name/weave:expose/10.32.0.7",
                "DELETE /ip/weave:expose/10.32.0.7",
                "DELETE /expose/10.2.1.254/24",
                "DELETE /name/weave:expose/10.2.1.254",
                "DELETE /ip/weave:expose/10.2.1.254",
            ]
        );
        assert!(matches!(hide_with(r.addr(), &s(&["x"])), Outcome::Usage));
    }

    #[test]
    fn hide_with_ipam_off_hides_everything_exposed() {
        let r = ipam_off();
        assert_eq!(
            done(hide_with(r.addr(), &[])),
            Ok("10.2.1.254 10.2.9.254".into())
        );
        assert_eq!(
            r.requests(),
            vec![
                "GET /ip/weave:expose",
                "GET /expose",
                "DELETE /expose/10.2.1.254/24",
                "DELETE /expose/10.2.9.254/24",
                "DELETE /name/weave:expose/10.2.1.254",
                "DELETE /name/weave:expose/10.2.9.254",
                "DELETE /ip/weave:expose/10.2.1.254",
                "DELETE /ip/weave:expose/10.2.9.254",
            ]
        );
        assert_eq!(
            done(hide_with(r.addr(), &s(&["net:default"])))
                .unwrap_err()
                .to_string(),
            NEED_IPAM
        );
    }
}
