//! Privileged tests: weft's table applied by the real `nft`, each test inside network namespaces
//! of its own.
//!
//! They run only with `WEFT_TEST_ROOT=1` (as root; `scripts/test.sh` sets it) and otherwise pass
//! without doing anything, so plain `cargo test` stays unprivileged. Each test creates fresh
//! namespaces named `wfw<pid><n>` and reaches them with [`Nft::in_netns`] (`ip netns exec`),
//! so the root namespace's ruleset is never read or written. A guard deletes every namespace
//! when the test ends, also when it fails.
#![allow(clippy::unwrap_used)] // In tests a panic is the failed assertion.

use std::io::Write;
use std::net::Ipv4Addr;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

use serde_json::Value;
use weft_fw::{FwError, IfName, Nft, RuleSet};
use weft_types::Ipv4Cidr;

fn privileged() -> bool {
    let on = std::env::var("WEFT_TEST_ROOT").is_ok_and(|v| v == "1");
    if !on {
        eprintln!("skipped: set WEFT_TEST_ROOT=1 (as root) to run");
    }
    on
}

/// A network namespace that is deleted when dropped.
struct Netns(String);

impl Netns {
    fn new() -> Self {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "wfw{}{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        sh(&["ip", "netns", "add", &name]);
        let ns = Self(name);
        ns.exec(&["ip", "link", "set", "lo", "up"]);
        ns
    }

    fn nft(&self) -> Nft {
        Nft::new().in_netns(&self.0)
    }

    /// Runs a command inside the namespace; panics on failure.
    fn exec(&self, args: &[&str]) -> String {
        let mut all = vec!["ip", "netns", "exec", &self.0];
        all.extend_from_slice(args);
        sh(&all)
    }

    /// A veth from here (`local`, up, with `local_addrs`) to `eth0` in `other` (up, with
    /// `other_addrs`).
    fn veth_to(&self, local: &str, local_addrs: &[&str], other: &Self, other_addrs: &[&str]) {
        self.exec(&[
            "ip", "link", "add", local, "type", "veth", "peer", "name", "eth0", "netns", &other.0,
        ]);
        for (ns, dev, addrs) in [(self, local, local_addrs), (other, "eth0", other_addrs)] {
            for a in addrs {
                ns.exec(&["ip", "addr", "add", a, "dev", dev]);
            }
            ns.exec(&["ip", "link", "set", dev, "up"]);
        }
    }

    /// Runs a command inside the namespace; returns whether it succeeded.
    fn try_exec(&self, args: &[&str]) -> bool {
        Command::new("ip")
            .args(["netns", "exec", &self.0])
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap()
            .success()
    }

    /// Feeds an nft script (text syntax) to `nft -f -` inside the namespace.
    fn nft_text(&self, script: &str) {
        let mut child = Command::new("ip")
            .args(["netns", "exec", &self.0, "nft", "-f", "-"])
            .stdin(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(script.as_bytes())
            .unwrap();
        assert!(child.wait().unwrap().success(), "nft -f failed on {script}");
    }

    fn json(&self, args: &[&str]) -> Value {
        let mut all = vec!["nft", "-j"];
        all.extend_from_slice(args);
        serde_json::from_str(&self.exec(&all)).unwrap()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

fn sh(args: &[&str]) -> String {
    let out = Command::new(args[0]).args(&args[1..]).output().unwrap();
    assert!(
        out.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn name(s: &str) -> IfName {
    IfName::new(s).unwrap()
}

fn cidr(s: &str) -> Ipv4Cidr {
    s.parse().unwrap()
}

/// The rules of an `nft -j list` output as (chain, comment, expr), with handles dropped and
/// counter values zeroed so listings compare with renderings. Rules are grouped by chain name
/// (stable, so the order within a chain is kept): nft lists chains in creation order.
fn listed_rules(listing: &Value) -> Vec<(String, String, Value)> {
    let mut rules = listing["nftables"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|o| o.get("rule"))
        .map(|r| {
            let mut expr = r["expr"].clone();
            for e in expr.as_array_mut().unwrap() {
                if e.get("counter").is_some() {
                    *e = serde_json::json!({"counter": null});
                }
            }
            (
                r["chain"].as_str().unwrap().to_owned(),
                r["comment"].as_str().unwrap_or_default().to_owned(),
                expr,
            )
        })
        .collect::<Vec<_>>();
    rules.sort_by(|a, b| a.0.cmp(&b.0));
    rules
}

/// The same triples, grouped the same way, from a rendering's `add rule` commands.
fn rendered_rules(rs: &RuleSet) -> Vec<(String, String, Value)> {
    let mut rules = rs.to_nft_json()["nftables"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c.get("add").and_then(|a| a.get("rule")))
        .map(|r| {
            (
                r["chain"].as_str().unwrap().to_owned(),
                r["comment"].as_str().unwrap().to_owned(),
                r["expr"].clone(),
            )
        })
        .collect::<Vec<_>>();
    rules.sort_by(|a, b| a.0.cmp(&b.0));
    rules
}

fn installed(ns: &Netns) -> Vec<(String, String, Value)> {
    listed_rules(&serde_json::from_str(&ns.nft().list().unwrap()).unwrap())
}

/// The comments of the installed NAT (postrouting) rules.
fn nat_comments(rules: &[(String, String, Value)]) -> Vec<&String> {
    rules
        .iter()
        .filter(|r| r.0 == "postrouting")
        .map(|r| &r.1)
        .collect()
}

fn sum_counter(ns: &Netns, chain: &str, comment_has: &str) -> u64 {
    let v: Value = serde_json::from_str(&ns.nft().list().unwrap()).unwrap();
    v["nftables"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|o| o.get("rule"))
        .filter(|r| {
            r["chain"] == chain && r["comment"].as_str().unwrap_or("").contains(comment_has)
        })
        .flat_map(|r| r["expr"].as_array().unwrap().iter())
        .filter_map(|e| e.get("counter").map(|c| c["packets"].as_u64().unwrap_or(0)))
        .sum()
}

#[test]
fn apply_reapply_expose_hide_remove_in_own_table() {
    if !privileged() {
        return;
    }
    let ns = Netns::new();
    let nft = ns.nft();
    ns.nft_text(
        "table ip other {\n chain c_fwd { type filter hook forward priority 0; policy accept;\n \
         ip saddr 192.0.2.7 counter drop\n }\n chain c_post { type nat hook postrouting priority \
         srcnat; policy accept;\n oifname \"eth9\" masquerade\n }\n}\n",
    );
    let other = ns.json(&["list", "table", "ip", "other"]);

    assert!(!nft.is_installed().unwrap());
    assert!(matches!(nft.list(), Err(FwError::Rejected(_))));

    let mut rs = RuleSet::new(name("weave"))
        .with_docker_bridge(name("docker0"), Some(Ipv4Addr::new(172, 17, 0, 1)));
    rs.expose(cidr("10.32.0.1/12"), true);
    nft.apply(&rs).unwrap();
    assert!(nft.is_installed().unwrap());
    // nft reads back exactly what was rendered: the JSON is in nft's canonical form.
    assert_eq!(installed(&ns), rendered_rules(&rs));

    // Re-applying replaces, never duplicates.
    nft.apply(&rs).unwrap();
    nft.apply(&rs).unwrap();
    assert_eq!(installed(&ns), rendered_rules(&rs));

    // Expose a second subnet, then hide the first: only those rules change.
    rs.expose(cidr("10.2.1.0/24"), true);
    nft.apply(&rs).unwrap();
    let now = installed(&ns);
    assert_eq!(now, rendered_rules(&rs));
    let nat = nat_comments(&now);
    assert_eq!(nat.len(), 6);
    assert_eq!(nat.iter().filter(|c| c.contains("10.2.1.0/24")).count(), 3);

    rs.hide(cidr("10.32.0.0/12"));
    nft.apply(&rs).unwrap();
    let now = installed(&ns);
    assert_eq!(now, rendered_rules(&rs));
    assert_eq!(nat_comments(&now), ["weft: expose 10.2.1.0/24"; 3]);
    assert!(!now.iter().any(|r| r.1.contains("10.32.0.0/12")));

    // --without-masquerade keeps the accept, drops the NAT.
    rs.expose(cidr("10.2.1.0/24"), false);
    nft.apply(&rs).unwrap();
    let now = installed(&ns);
    assert_eq!(nat_comments(&now).len(), 0);
    assert_eq!(now.iter().filter(|r| r.0 == "expose").count(), 1);

    // The other table was never touched (same handles, same rules, same counters).
    assert_eq!(ns.json(&["list", "table", "ip", "other"]), other);

    nft.remove().unwrap();
    assert!(!nft.is_installed().unwrap());
    nft.remove().unwrap(); // idempotent
    assert!(!nft.is_installed().unwrap());
    assert_eq!(ns.json(&["list", "table", "ip", "other"]), other);
}

#[test]
fn rejected_input_reports_nft_stderr() {
    if !privileged() {
        return;
    }
    let ns = Netns::new();
    // A stale weft chain with another hook makes `add chain` fail: the whole batch is refused.
    ns.nft_text("table inet weft {\n chain input { type filter hook output priority 0; }\n}\n");
    let err = ns.nft().apply(&RuleSet::default()).unwrap_err();
    let FwError::Rejected(msg) = &err else {
        panic!("{err:?}")
    };
    assert!(msg.contains("Error"), "first line of nft's stderr: {msg:?}");
    assert!(!msg.contains('\n'), "{msg:?}");
    // The failed batch left nothing half-applied: the stale chain is still alone.
    assert!(installed(&ns).is_empty());
    // remove() still clears it, after which apply works.
    ns.nft().remove().unwrap();
    ns.nft().apply(&RuleSet::default()).unwrap();
    assert_eq!(installed(&ns), rendered_rules(&RuleSet::default()));

    // A missing nft inside the namespace is reported as such, not as a rejection.
    let err = ns
        .nft()
        .with_program("/nonexistent/weft-test/nft")
        .list()
        .unwrap_err();
    assert!(matches!(err, FwError::NftNotFound), "{err:?}");
}

/// A host namespace with a `weave` bridge (10.32.0.1/12), a container on it (10.32.0.2) and an
/// outside peer (192.168.77.2) on a veth: masquerading is what makes the two reach each other.
#[test]
fn masquerade_rewrites_sources() {
    if !privileged() {
        return;
    }
    let host = Netns::new();
    let ctr = Netns::new();
    let out = Netns::new();
    host.exec(&["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
    host.exec(&["ip", "link", "add", "weave", "type", "bridge"]);
    host.exec(&["ip", "addr", "add", "10.32.0.1/12", "dev", "weave"]);
    host.exec(&["ip", "link", "set", "weave", "up"]);
    host.veth_to("vethc", &[], &ctr, &["10.32.0.2/12"]);
    host.exec(&["ip", "link", "set", "vethc", "master", "weave"]);
    ctr.exec(&["ip", "route", "add", "default", "via", "10.32.0.1"]);
    host.veth_to("ext", &["192.168.77.1/24"], &out, &["192.168.77.2/24"]);
    let ping = |from: &Netns, to: &str| from.try_exec(&["ping", "-c1", "-W1", "-q", to]);

    let nft = host.nft();
    let mut rs = RuleSet::new(name("weave"));
    nft.apply(&rs).unwrap();
    // The outside has no route to 10.32/12, so without NAT its replies go nowhere.
    assert!(ping(&ctr, "10.32.0.1"), "bridge reachable");
    assert!(!ping(&ctr, "192.168.77.2"), "no masquerade yet");

    rs.expose(cidr("10.32.0.1/12"), true);
    nft.apply(&rs).unwrap();
    assert!(
        ping(&ctr, "192.168.77.2"),
        "container → outside, masqueraded to 192.168.77.1"
    );
    assert!(sum_counter(&host, "postrouting", "10.32.0.0/12") >= 1);

    // Inbound: the outside routes to the subnet, the container has no route back except
    // on-link, so replies only work when the source is rewritten to the bridge address.
    ctr.exec(&["ip", "route", "del", "default"]);
    out.exec(&["ip", "route", "add", "10.32.0.0/12", "via", "192.168.77.1"]);
    assert!(
        ping(&out, "10.32.0.2"),
        "outside → container, masqueraded to 10.32.0.1"
    );

    rs.expose(cidr("10.32.0.1/12"), false);
    nft.apply(&rs).unwrap();
    assert!(
        !ping(&out, "10.32.0.2"),
        "without masquerade the container cannot reply"
    );

    nft.remove().unwrap();
    assert!(!nft.is_installed().unwrap());
}

#[test]
fn container_takes_multicast_only_from_its_own_subnets() {
    if !privileged() {
        return;
    }
    let ctr = Netns::new();
    let src = Netns::new();
    ctr.veth_to(
        "ethwe",
        &["10.9.1.1/24"],
        &src,
        &["10.9.1.2/24", "10.9.2.2/24"],
    );
    ctr.exec(&["sysctl", "-qw", "net.ipv4.icmp_echo_ignore_broadcasts=0"]);
    // A way back to the other subnet, so that only the firewall can stop the answer.
    ctr.exec(&["ip", "route", "add", "10.9.2.0/24", "dev", "ethwe"]);
    src.exec(&["ip", "route", "add", "224.0.0.0/4", "dev", "eth0"]);
    // An echo to all-hosts from one source address: answered only if the container took it.
    let answered =
        |from: &str| src.try_exec(&["ping", "-c1", "-W1", "-q", "-I", from, "224.0.0.1"]);
    assert!(
        answered("10.9.2.2"),
        "without weft's rules any subnet gets through"
    );

    let nft = ctr.nft();
    let rs = weft_fw::ContainerRuleSet::new(name("ethwe")).with_subnet(cidr("10.9.1.1/24"));
    nft.apply_container(&rs).unwrap();
    nft.apply_container(&rs).unwrap();
    assert_eq!(
        installed(&ctr).len(),
        2,
        "re-applying does not duplicate rules"
    );
    assert!(answered("10.9.1.2"), "own subnet");
    assert!(!answered("10.9.2.2"), "another subnet");
    assert!(sum_counter(&ctr, "input", "no multicast from other subnets") >= 1);

    nft.remove().unwrap();
    assert!(!nft.is_installed().unwrap());
    assert!(answered("10.9.2.2"), "rules gone with the table");
}

/// A UDP receiver inside a namespace: the source addresses of what reaches `port`, in order,
/// until a datagram arrives on [`MARKER_PORT`] (the end marker, which weft's rules never filter).
struct UdpReceiver {
    child: std::process::Child,
    lines: std::io::Lines<std::io::BufReader<std::process::ChildStdout>>,
}

/// Where the end marker goes; no rule of weft's is about it.
const MARKER_PORT: u16 = 6799;

const RECEIVER: &str = r#"
import select, socket, sys
port, marker = int(sys.argv[1]), int(sys.argv[2])
socks = []
for p in (port, marker):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("0.0.0.0", p))
    socks.append(s)
print("ready", flush=True)
while True:
    r, _, _ = select.select(socks, [], [], 20)
    if not r:
        sys.exit("no end marker")
    if socks[1] in r:
        # Everything sent before the marker is queued by now: drain it, then stop.
        socks[0].setblocking(False)
        try:
            while True:
                print(socks[0].recvfrom(2048)[1][0], flush=True)
        except BlockingIOError:
            pass
        print("end", flush=True)
        sys.exit(0)
    print(socks[0].recvfrom(2048)[1][0], flush=True)
"#;

const SENDER: &str = r#"
import socket, sys
dst, port, marker = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
for src in sys.argv[4:]:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((src, 0))
    s.sendto(b"x", (dst, port))
    s.close()
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.sendto(b"end", (dst, marker))
"#;

impl UdpReceiver {
    fn start(ns: &Netns, port: u16) -> Self {
        use std::io::BufRead;
        let mut child = Command::new("ip")
            .args(["netns", "exec", &ns.0, "python3", "-c", RECEIVER])
            .args([port.to_string(), MARKER_PORT.to_string()])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
        assert_eq!(lines.next().unwrap().unwrap(), "ready");
        Self { child, lines }
    }

    /// Sources of the datagrams received, up to the end marker.
    fn received(mut self) -> Vec<String> {
        let got: Vec<String> = self
            .lines
            .by_ref()
            .map(Result::unwrap)
            .take_while(|l| l != "end")
            .collect();
        assert!(self.child.wait().unwrap().success(), "receiver failed");
        got
    }
}

/// From `sender`, one datagram to `dst:port` from each of `sources`, then the end marker.
/// Returns the sources the receiver in `host` saw.
fn udp_round(host: &Netns, sender: &Netns, dst: &str, port: u16, sources: &[&str]) -> Vec<String> {
    let rx = UdpReceiver::start(host, port);
    let mut args = vec!["python3", "-c", SENDER, dst];
    let (port_s, marker) = (port.to_string(), MARKER_PORT.to_string());
    args.extend([port_s.as_str(), marker.as_str()]);
    args.extend_from_slice(sources);
    sender.exec(&args);
    rx.received()
}

/// The elements of weft's fastdp set as nft lists them.
fn set_elements(ns: &Netns) -> Vec<String> {
    let v = ns.json(&["list", "set", "inet", "weft", "weft_fastdp_peers"]);
    let mut out: Vec<String> = v["nftables"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|o| o.get("set"))
        .flat_map(|s| s["elem"].as_array().cloned().unwrap_or_default())
        .map(|e| e.as_str().unwrap().to_owned())
        .collect();
    out.sort();
    out
}

/// UDP 6784 (the VXLAN port) takes datagrams only from the addresses in the fastdp set, which
/// follows single-element updates and survives re-applying the table; other ports and the
/// rest of the table are untouched by those updates.
#[test]
fn vxlan_port_only_from_fastdp_peers() {
    if !privileged() {
        return;
    }
    let host = Netns::new();
    let out = Netns::new();
    host.veth_to(
        "eth0",
        &["10.9.7.1/24"],
        &out,
        &["10.9.7.2/24", "10.9.7.3/24"],
    );
    let (peer, stranger) = ("10.9.7.2", "10.9.7.3");
    let both = [peer, stranger];
    let dropped = || sum_counter(&host, "input", "VXLAN only from fastdp peers");

    // Before weft's table: anyone gets through (the receiver works).
    assert_eq!(udp_round(&host, &out, "10.9.7.1", 6784, &both), both);

    let nft = host.nft();
    let mut rs = RuleSet::default();
    nft.apply(&rs).unwrap();
    assert!(set_elements(&host).is_empty());
    assert!(udp_round(&host, &out, "10.9.7.1", 6784, &both).is_empty());
    assert_eq!(dropped(), 2);
    // Another UDP port is not filtered.
    assert_eq!(udp_round(&host, &out, "10.9.7.1", 6790, &both), both);
    assert_eq!(dropped(), 2);

    // A peer connects: one element added, nothing else in the table changes.
    let rules_before = installed(&host);
    assert!(rs.add_fastdp_peer(peer.parse().unwrap()));
    nft.set_fastdp_peer(peer.parse().unwrap(), true).unwrap();
    assert_eq!(set_elements(&host), [peer]);
    assert_eq!(installed(&host), rules_before);
    assert_eq!(dropped(), 2, "counters kept: the table was not replaced");
    assert_eq!(udp_round(&host, &out, "10.9.7.1", 6784, &both), [peer]);
    assert_eq!(dropped(), 3);

    // Re-applying the whole table (expose, hide) keeps the model's elements.
    rs.expose(cidr("10.32.0.1/12"), true);
    nft.apply(&rs).unwrap();
    assert_eq!(set_elements(&host), [peer]);
    assert_eq!(installed(&host), rendered_rules(&rs));
    assert_eq!(udp_round(&host, &out, "10.9.7.1", 6784, &both), [peer]);

    // A second peer behind the same address leaves; the address stays until the last one does.
    assert!(!rs.add_fastdp_peer(peer.parse().unwrap()));
    assert!(!rs.remove_fastdp_peer(peer.parse().unwrap()));
    assert_eq!(set_elements(&host), [peer]);
    assert!(rs.remove_fastdp_peer(peer.parse().unwrap()));
    nft.set_fastdp_peer(peer.parse().unwrap(), false).unwrap();
    assert!(set_elements(&host).is_empty());
    assert!(udp_round(&host, &out, "10.9.7.1", 6784, &both).is_empty());

    // Deleting what is not there is refused (the caller then re-applies the table).
    let err = nft
        .set_fastdp_peer(peer.parse().unwrap(), false)
        .unwrap_err();
    assert!(matches!(err, FwError::Rejected(_)), "{err:?}");
    nft.remove().unwrap();
    let err = nft
        .set_fastdp_peer(peer.parse().unwrap(), true)
        .unwrap_err();
    assert!(matches!(err, FwError::Rejected(_)), "{err:?}");
    assert!(
        !nft.is_installed().unwrap(),
        "an element update never creates the table"
    );
}

/// A container on the Docker bridge cannot reach the router's ports on the bridge address
/// (its packets are dropped, not refused); other ports there stay reachable.
#[test]
fn docker_bridge_containers_cannot_reach_the_router() {
    if !privileged() {
        return;
    }
    let host = Netns::new();
    let ctr = Netns::new();
    host.exec(&["ip", "link", "add", "docker0", "type", "bridge"]);
    host.exec(&["ip", "addr", "add", "172.31.0.1/16", "dev", "docker0"]);
    host.exec(&["ip", "link", "set", "docker0", "up"]);
    host.veth_to("vethd", &[], &ctr, &["172.31.0.2/16"]);
    host.exec(&["ip", "link", "set", "vethd", "master", "docker0"]);
    let rs = RuleSet::default()
        .with_docker_bridge(name("docker0"), Some(Ipv4Addr::new(172, 31, 0, 1)))
        .with_status_addr(Some("0.0.0.0:6782".parse().unwrap()));
    host.nft().apply(&rs).unwrap();
    // UDP: the mesh and VXLAN ports are dropped, another port is not.
    for port in [6783, 6784] {
        assert!(
            udp_round(&host, &ctr, "172.31.0.1", port, &["172.31.0.2"]).is_empty(),
            "udp {port}"
        );
    }
    assert_eq!(
        udp_round(&host, &ctr, "172.31.0.1", 6790, &["172.31.0.2"]),
        ["172.31.0.2"]
    );
    assert_eq!(
        sum_counter(&host, "input", "may not reach the router (udp 6783)"),
        1
    );
    // (UDP 6784 from a container meets the VXLAN guard first: not a fastdp peer.)
    assert_eq!(
        sum_counter(&host, "input", "VXLAN only from fastdp peers"),
        1
    );
    // TCP: a SYN to a guarded port is dropped (a closed port would answer RST at once).
    let connect = |port: u16| {
        ctr.try_exec(&[
            "python3",
            "-c",
            "import socket,sys; socket.create_connection(('172.31.0.1', int(sys.argv[1])), 1)",
            &port.to_string(),
        ])
    };
    for port in [6783, 6784, 6782] {
        assert!(!connect(port), "tcp {port}");
        assert!(
            sum_counter(
                &host,
                "input",
                &format!("may not reach the router (tcp {port})")
            ) >= 1,
            "tcp {port} dropped by the guard, not refused"
        );
    }
}
