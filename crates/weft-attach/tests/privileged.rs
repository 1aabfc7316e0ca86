//! Privileged tests of attach, detach and ps against the real kernel.
//!
//! They run only with `WEFT_TEST_ROOT=1` (as root) and otherwise return at once, printing
//! "skipped". The "host" (with its `weave` bridge) is an anonymous namespace that dies with the
//! test; containers are named namespaces (`/run/netns/wta<pid>…`, as `weft attach netns:NAME`
//! needs), removed by a drop guard whether the test passes or panics.
#![allow(clippy::unwrap_used)] // tests: a panic is how they fail

use std::os::fd::OwnedFd;
use std::process::Command;

use weft_attach::{blocking, AttachError, Container, PsEntry, BRIDGE, CONTAINER_IF};
use weft_netdev::{in_netns, new_netns};
use weft_types::Ipv4Cidr;

const BRIDGE_MAC: &str = "02:77:65:66:74:0a";

fn privileged() -> bool {
    if std::env::var("WEFT_TEST_ROOT").as_deref() == Ok("1") {
        true
    } else {
        eprintln!("skipped: set WEFT_TEST_ROOT=1 (as root) to run privileged tests");
        false
    }
}

/// Runs `f` on a thread inside `ns` (the blocking API takes the calling thread's namespace
/// as the host).
fn in_host<T: Send + 'static>(ns: &OwnedFd, f: impl FnOnce() -> T + Send + 'static) -> T {
    in_netns(ns, f).expect("entering test namespace")
}

/// Runs `ip` with `args` inside `ns`; returns whether it succeeded and its stdout.
fn ip_in(ns: &OwnedFd, args: &[&str]) -> (bool, String) {
    let args: Vec<String> = args.iter().map(|s| (*s).to_owned()).collect();
    in_host(ns, move || {
        let out = Command::new("ip").args(&args).output().expect("ip");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    })
}

/// Names of the links in `ns` whose name starts with `prefix` (`ip -o link` lines).
fn links_in(ns: &OwnedFd, args: &[&str], prefix: &str) -> Vec<String> {
    let (ok, out) = ip_in(ns, args);
    assert!(ok, "ip {args:?}");
    out.lines()
        .filter_map(|l| l.split(": ").nth(1))
        .map(|n| n.split('@').next().unwrap_or(n).to_owned())
        .filter(|n| n.starts_with(prefix))
        .collect()
}

/// A named namespace standing in for a container; deleted on drop.
struct NamedNetns(String);

impl NamedNetns {
    fn new(suffix: &str) -> Self {
        let name = format!("wta{}{suffix}", std::process::id());
        let st = Command::new("ip").args(["netns", "add", &name]).status();
        assert!(st.expect("ip netns add").success(), "ip netns add {name}");
        Self(name)
    }

    fn container(&self) -> Container {
        Container::Netns(self.0.clone())
    }

    /// `ip -o -4 addr show` (or another `ip` command) inside the namespace.
    fn ip(&self, args: &[&str]) -> (bool, String) {
        let out = Command::new("ip")
            .args(["-n", &self.0])
            .args(args)
            .output()
            .expect("ip");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    }
}

impl Drop for NamedNetns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

/// A host namespace with an up `weave` bridge.
fn host_with_bridge() -> OwnedFd {
    let host = new_netns().expect("netns");
    let add = [
        "link", "add", BRIDGE, "address", BRIDGE_MAC, "type", "bridge",
    ];
    assert!(ip_in(&host, &add).0, "bridge");
    assert!(ip_in(&host, &["link", "set", BRIDGE, "up"]).0, "bridge up");
    host
}

fn cidrs(v: &[&str]) -> Vec<Ipv4Cidr> {
    v.iter().map(|s| s.parse().unwrap()).collect()
}

fn attach(host: &OwnedFd, c: &Container, v: &[&str]) -> Result<Vec<Ipv4Cidr>, AttachError> {
    let (c, v) = (c.clone(), cidrs(v));
    // Every address is checked for duplicates, as for addresses given by hand.
    let probe: Vec<_> = v.iter().map(Ipv4Cidr::addr).collect();
    in_host(host, move || blocking::attach(&c, &v, true, &probe))
}

fn ps(host: &OwnedFd, cs: &[Container]) -> Vec<PsEntry> {
    let cs: Vec<(String, Container)> = cs.iter().map(|c| (c.id(), c.clone())).collect();
    in_host(host, move || blocking::ps(&cs)).expect("ps")
}

fn addrs(ns: &NamedNetns) -> Vec<String> {
    let (ok, out) = ns.ip(&["-o", "-4", "addr", "show", "dev", CONTAINER_IF]);
    if !ok {
        return Vec::new();
    }
    out.lines()
        .filter_map(|l| l.split_whitespace().nth(3).map(str::to_owned))
        .collect()
}

#[test]
fn attach_ps_detach_round_trip() {
    if !privileged() {
        return;
    }
    let host = host_with_bridge();
    let c1 = NamedNetns::new("a");
    let c = c1.container();

    let done = attach(&host, &c, &["10.9.1.1/24", "10.9.2.1/24"]).expect("attach");
    assert_eq!(done, cidrs(&["10.9.1.1/24", "10.9.2.1/24"]));
    assert_eq!(addrs(&c1), ["10.9.1.1/24", "10.9.2.1/24"]);
    let (_, routes) = c1.ip(&["route", "show"]);
    assert!(
        routes.contains("224.0.0.0/4 dev ethwe"),
        "multicast route: {routes}"
    );
    // Idempotent: attaching an address it has adds nothing and creates no second veth.
    assert_eq!(
        attach(&host, &c, &["10.9.1.1/24"]).expect("again"),
        cidrs(&["10.9.1.1/24"])
    );
    assert_eq!(addrs(&c1).len(), 2);

    let lines = ps(&host, std::slice::from_ref(&c));
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert_eq!(lines[0].id, "weave:expose");
    assert_eq!(weft_netdev::format_mac(&lines[0].mac), BRIDGE_MAC);
    assert_eq!(lines[1].id, c1.0.chars().take(12).collect::<String>());
    assert_eq!(lines[1].cidrs, cidrs(&["10.9.1.1/24", "10.9.2.1/24"]));
    // The host end is a port of the bridge, named after the container.
    let ports = links_in(&host, &["-o", "link", "show", "master", BRIDGE], "");
    assert_eq!(ports.len(), 1, "{ports:?}");
    assert!(ports[0].starts_with("vethwepl"), "{ports:?}");

    let removed = blocking::detach(&c, &cidrs(&["10.9.2.1/24"])).expect("detach one");
    assert_eq!(removed, cidrs(&["10.9.2.1/24"]));
    assert_eq!(addrs(&c1), ["10.9.1.1/24"]);
    let removed = blocking::detach(&c, &[]).expect("detach all");
    assert_eq!(removed, cidrs(&["10.9.1.1/24"]));
    assert!(!c1.ip(&["link", "show", CONTAINER_IF]).0, "ethwe gone");
    assert_eq!(
        ps(&host, std::slice::from_ref(&c)).len(),
        1,
        "only the expose line"
    );
    assert!(matches!(
        blocking::detach(&c, &[]),
        Err(AttachError::NotAttached(id)) if id == c1.0
    ));
}

#[test]
fn an_address_in_use_is_refused_and_nothing_is_left() {
    if !privileged() {
        return;
    }
    let host = host_with_bridge();
    let (c1, c2) = (NamedNetns::new("b"), NamedNetns::new("c"));
    attach(&host, &c1.container(), &["10.9.3.1/24"]).expect("attach");
    match attach(&host, &c2.container(), &["10.9.3.1/24"]) {
        Err(AttachError::InUse { addr, .. }) => assert_eq!(addr.to_string(), "10.9.3.1"),
        other => panic!("expected InUse, got {other:?}"),
    }
    assert!(
        !c2.ip(&["link", "show", CONTAINER_IF]).0,
        "no ethwe in the refused one"
    );
    let veths = links_in(&host, &["-o", "link", "show"], "vethwepl").len();
    assert_eq!(veths, 1, "only the first container's veth");
    // A free address still works.
    attach(&host, &c2.container(), &["10.9.3.2/24"]).expect("free address");
}

#[test]
fn no_bridge_and_missing_container_are_errors() {
    if !privileged() {
        return;
    }
    let bare = new_netns().expect("netns");
    let c1 = NamedNetns::new("d");
    assert!(matches!(
        attach(&bare, &c1.container(), &["10.9.4.1/24"]),
        Err(AttachError::NoBridge)
    ));
    assert!(!c1.ip(&["link", "show", CONTAINER_IF]).0);
    let host = host_with_bridge();
    let gone = Container::Netns(format!("wta{}nope", std::process::id()));
    let e = attach(&host, &gone, &["10.9.4.1/24"]).unwrap_err();
    assert!(e.to_string().contains("does not exist"), "{e}");
}
