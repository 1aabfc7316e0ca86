//! Privileged tests against the real kernel: bridges, veths, VXLAN, TAP, packet sockets and
//! namespaces.
//!
//! They run only with `WEFT_TEST_ROOT=1` (as root) and otherwise return at once, printing
//! "skipped". Every test works in network namespaces of its own made with [`new_netns`]: they
//! are pinned by nothing but the test's file descriptors, so the kernel deletes them, and every
//! link in them, when the test ends, whether it passed or panicked. The one test that needs a
//! named namespace (`/run/netns/…`) removes it with a drop guard.
#![allow(clippy::unwrap_used)] // tests: a panic is how they fail

mod common;

use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::OwnedFd;
use std::process::Command;
use std::time::Duration;

use common::{dup, index, privileged, run_in};
use weft_netdev::{
    gratuitous_arp_frame, in_netns, new_netns, open_netns, same_netns_as_self, send_gratuitous_arp,
    Netdev, NetdevError, NetnsSpec, PacketSocket, Tap, ETH_P_ARP, MAX_MTU,
};

const PEER_MAC: [u8; 6] = [0x02, 0x77, 0x65, 0x66, 0x74, 0x01];
const PEER_MAC_2: [u8; 6] = [0x02, 0x77, 0x65, 0x66, 0x74, 0x02];
/// How long to wait for a frame before sending it again.
const RETRY: Duration = Duration::from_millis(200);
/// IEEE 802 "local experimental" ethertype: no host stack answers or emits it.
const ETH_P_EXPERIMENTAL: u16 = 0x88b5;

/// Runs a command inside `ns` and returns its stdout; panics if it fails.
fn sh_in(ns: &OwnedFd, args: &[&str]) -> String {
    let args: Vec<String> = args.iter().map(|s| (*s).to_owned()).collect();
    in_netns(ns, move || {
        let out = Command::new(&args[0])
            .args(&args[1..])
            .output()
            .expect("spawn command");
        assert!(
            out.status.success(),
            "{args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    })
    .expect("entering test namespace")
}

fn ip_json(ns: &OwnedFd, dev: &str) -> serde_json::Value {
    let out = sh_in(ns, &["ip", "-d", "-j", "link", "show", "dev", dev]);
    let v: serde_json::Value = serde_json::from_str(&out).expect("ip -j output is JSON");
    v[0].clone()
}

/// Builds the host side of a container attachment in `host` and the container side in
/// `container`, the way `weave attach` does (§3.4): veth on the bridge with hairpin on, peer moved
/// into the container, renamed `ethwe`, address added, up, multicast route last. Returns
/// (host veth index, ethwe index).
fn attach(host: &OwnedFd, container: &OwnedFd, id: &str, addr: Ipv4Addr, prefix: u8) -> (u32, u32) {
    let (host_if, peer_if) = (format!("vethwepl{id}"), format!("vethwepg{id}"));
    let c = dup(container);
    let host_index = run_in(host, move || async move {
        let nd = Netdev::new().await.expect("netlink");
        let bridge = index(&nd, "weave").await;
        nd.create_veth(&host_if, &peer_if, 0)
            .await
            .expect("create veth");
        let h = index(&nd, &host_if).await;
        nd.set_master(h, bridge).await.expect("set master");
        let peer = index(&nd, &peer_if).await;
        nd.move_to_netns(peer, &c).await.expect("move peer");
        assert!(
            nd.link(&peer_if).await.expect("lookup").is_none(),
            "peer left the host"
        );
        nd.set_up(h).await.expect("host end up");
        nd.set_hairpin(h, true).await.expect("hairpin");
        h
    });
    let peer_if = format!("vethwepg{id}");
    let ethwe = run_in(container, move || async move {
        let nd = Netdev::new().await.expect("netlink");
        let i = index(&nd, &peer_if).await;
        nd.rename(i, "ethwe").await.expect("rename");
        assert!(nd
            .add_address(i, IpAddr::V4(addr), prefix)
            .await
            .expect("add address"));
        nd.set_up(i).await.expect("ethwe up");
        nd.add_multicast_route(i).await.expect("multicast route");
        i
    });
    (host_index, ethwe)
}

fn bridge_in(ns: &OwnedFd, mac: [u8; 6], mtu: u32) -> u32 {
    run_in(ns, move || async move {
        let nd = Netdev::new().await.expect("netlink");
        let lo = index(&nd, "lo").await;
        nd.set_up(lo).await.expect("lo up");
        nd.ensure_bridge("weave", mac, mtu)
            .await
            .expect("ensure bridge")
    })
}

#[test]
fn bridge_gets_mac_mtu_and_comes_up() {
    if !privileged() {
        return;
    }
    let ns = new_netns().expect("netns");
    let (first, info, port_mtu, after_port, wrong) = run_in(&ns, || async {
        let nd = Netdev::new().await.expect("netlink");
        let first = nd
            .ensure_bridge("weave", PEER_MAC, MAX_MTU)
            .await
            .expect("create");
        let info = nd.link("weave").await.expect("lookup").expect("exists");
        // Idempotent, and the MTU can be lowered to the fastdp default.
        let again = nd
            .ensure_bridge("weave", PEER_MAC, 1376)
            .await
            .expect("ensure again");
        assert_eq!(again, first);
        // A port with a larger MTU does not change a user-set bridge MTU.
        nd.create_veth("vethwe-bridge", "vethwe-pcap", 1500)
            .await
            .expect("veth");
        let port = index(&nd, "vethwe-bridge").await;
        nd.set_master(port, first).await.expect("enslave");
        let port_mtu = nd
            .link_by_index(port)
            .await
            .expect("lookup")
            .expect("exists")
            .mtu;
        let after_port = nd.link("weave").await.expect("lookup").expect("exists");
        // And it can be raised back to 65535 with a 1500-byte port attached.
        nd.ensure_bridge("weave", PEER_MAC, MAX_MTU)
            .await
            .expect("raise");
        let raised = nd.link("weave").await.expect("lookup").expect("exists");
        assert_eq!(raised.mtu, MAX_MTU);
        let wrong = nd
            .ensure_bridge("vethwe-pcap", PEER_MAC, 1500)
            .await
            .expect_err("a veth");
        (first, info, port_mtu, after_port, wrong)
    });
    assert_eq!(info.index, first);
    assert_eq!(info.kind.as_deref(), Some("bridge"));
    assert_eq!(info.mac, PEER_MAC);
    assert_eq!(info.mtu, 65535);
    assert!(info.up);
    assert_eq!(port_mtu, 1500);
    assert_eq!(after_port.mtu, 1376);
    assert_eq!(
        after_port.mac, PEER_MAC,
        "a port does not replace a set MAC"
    );
    assert!(
        matches!(wrong, NetdevError::WrongKind { .. }),
        "unexpected error {wrong}"
    );
    assert_eq!(
        wrong.to_string(),
        "creating bridge \"vethwe-pcap\": \"vethwe-pcap\" exists but is a veth, not a bridge"
    );

    // Read back independently of our own parser.
    let j = ip_json(&ns, "weave");
    assert_eq!(j["address"], "02:77:65:66:74:01");
    assert_eq!(j["mtu"], 65535);
    assert_eq!(j["linkinfo"]["info_kind"], "bridge");
    assert!(j["flags"]
        .as_array()
        .expect("flags")
        .iter()
        .any(|f| f == "UP"));
    let accept_ra = in_netns(&ns, || {
        std::fs::read_to_string("/proc/sys/net/ipv6/conf/weave/accept_ra")
    })
    .expect("netns");
    if let Ok(v) = accept_ra {
        assert_eq!(v.trim(), "0");
    }
}

#[test]
fn errors_name_object_and_operation() {
    if !privileged() {
        return;
    }
    let ns = new_netns().expect("netns");
    let (exists, missing) = run_in(&ns, || async {
        let nd = Netdev::new().await.expect("netlink");
        nd.create_veth("vethwe-a", "vethwe-b", 0)
            .await
            .expect("veth");
        let exists = nd
            .create_veth("vethwe-a", "vethwe-c", 0)
            .await
            .expect_err("exists");
        let missing = nd.set_mtu(9999, 1400).await.expect_err("no such link");
        (exists, missing)
    });
    assert_eq!(
        exists.to_string(),
        "creating veth \"vethwe-a\" with peer \"vethwe-c\": File exists"
    );
    assert_eq!(exists.errno(), Some(nix::errno::Errno::EEXIST));
    assert_eq!(
        missing.to_string(),
        "setting MTU of link 9999 to 1400: No such device"
    );
}

#[test]
fn veth_moves_into_container_and_is_configured() {
    if !privileged() {
        return;
    }
    let host = new_netns().expect("host netns");
    let container = new_netns().expect("container netns");
    bridge_in(&host, PEER_MAC, MAX_MTU);
    let addr = Ipv4Addr::new(10, 32, 0, 5);
    let (host_veth, ethwe) = attach(&host, &container, "1234", addr, 12);

    let (hinfo, port) = run_in(&host, move || async move {
        let nd = Netdev::new().await.expect("netlink");
        let info = nd
            .link_by_index(host_veth)
            .await
            .expect("lookup")
            .expect("exists");
        let port = nd
            .bridge_port(host_veth)
            .await
            .expect("port flags")
            .expect("a port");
        (info, port)
    });
    let bridge = run_in(&host, || async {
        let nd = Netdev::new().await.expect("netlink");
        index(&nd, "weave").await
    });
    assert_eq!(hinfo.kind.as_deref(), Some("veth"));
    assert_eq!(hinfo.master, Some(bridge));
    assert_eq!(
        hinfo.peer_index,
        Some(ethwe),
        "IFLA_LINK names the peer in the container"
    );
    assert!(hinfo.up);
    assert!(port.hairpin);
    assert!(!port.isolated);

    let (info, addrs, added_again, routes, deleted, deleted_again) =
        run_in(&container, move || async move {
            let nd = Netdev::new().await.expect("netlink");
            let info = nd
                .link("ethwe")
                .await
                .expect("lookup")
                .expect("ethwe exists");
            let addrs = nd.addresses(info.index).await.expect("addresses");
            let added_again = nd
                .add_address(info.index, IpAddr::V4(addr), 12)
                .await
                .expect("add again");
            nd.add_multicast_route(info.index)
                .await
                .expect("existing route is fine");
            let routes = nd.routes_v4().await.expect("routes");
            let extra = IpAddr::V4(Ipv4Addr::new(10, 40, 0, 1));
            assert!(nd
                .add_address(info.index, extra, 24)
                .await
                .expect("add second"));
            let deleted = nd.del_address(info.index, extra, 24).await.expect("del");
            let deleted_again = nd
                .del_address(info.index, extra, 24)
                .await
                .expect("del again");
            (info, addrs, added_again, routes, deleted, deleted_again)
        });
    assert_eq!(info.index, ethwe);
    assert!(info.up);
    assert_eq!(info.peer_index, Some(host_veth));
    assert_eq!(info.mtu, 1500, "MTU 0 at creation means the kernel default");
    assert!(addrs.contains(&(IpAddr::V4(addr), 12)), "{addrs:?}");
    assert!(!added_again);
    assert!(
        routes.contains(&(Ipv4Addr::new(224, 0, 0, 0), 4, Some(ethwe))),
        "{routes:?}"
    );
    assert!(
        routes.contains(&(Ipv4Addr::new(10, 32, 0, 0), 12, Some(ethwe))),
        "{routes:?}"
    );
    assert!(deleted);
    assert!(!deleted_again);

    // The kernel's own view, through iproute2.
    let r = sh_in(&container, &["ip", "-4", "route", "show", "224.0.0.0/4"]);
    assert!(r.contains("dev ethwe") && r.contains("scope link"), "{r}");

    // Namespace identity: the container is not the host, and is itself.
    assert!(!same_netns_as_self(&container).expect("compare"));
    let c = dup(&container);
    assert!(in_netns(&container, move || same_netns_as_self(&c))
        .expect("netns")
        .expect("cmp"));
}

#[test]
fn namespaces_open_by_name_and_by_pid() {
    if !privileged() {
        return;
    }
    struct NamedNs(String);
    impl Drop for NamedNs {
        fn drop(&mut self) {
            let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
        }
    }
    let name = format!("wnd{}n", std::process::id());
    let status = Command::new("ip")
        .args(["netns", "add", &name])
        .status()
        .expect("ip");
    assert!(status.success());
    let guard = NamedNs(name.clone());
    let ns = open_netns(&NetnsSpec::Named(name.clone())).expect("open by name");
    assert!(!same_netns_as_self(&ns).expect("compare"));
    let n = dup(&ns);
    assert!(in_netns(&ns, move || same_netns_as_self(&n))
        .expect("netns")
        .expect("cmp"));
    drop(guard);
    assert_eq!(
        open_netns(&NetnsSpec::Named(name.clone()))
            .expect_err("deleted")
            .to_string(),
        format!("network namespace {name} does not exist")
    );

    // A process started from inside a namespace lives in it.
    let anon = new_netns().expect("netns");
    let mut child = in_netns(&anon, || {
        Command::new("sleep").arg("30").spawn().expect("sleep")
    })
    .expect("netns");
    let by_pid = open_netns(&NetnsSpec::Pid(child.id()));
    let _ = child.kill();
    let _ = child.wait();
    let by_pid = by_pid.expect("open by pid");
    assert!(in_netns(&anon, move || same_netns_as_self(&by_pid))
        .expect("netns")
        .expect("cmp"));
}

#[test]
fn gratuitous_arp_reaches_the_bridge() {
    if !privileged() {
        return;
    }
    let host = new_netns().expect("host netns");
    let container = new_netns().expect("container netns");
    let bridge = bridge_in(&host, PEER_MAC, MAX_MTU);
    let addr = Ipv4Addr::new(10, 32, 0, 9);
    let (_, ethwe) = attach(&host, &container, "arp", addr, 12);
    let mac = run_in(&container, move || async move {
        let nd = Netdev::new().await.expect("netlink");
        nd.link_by_index(ethwe)
            .await
            .expect("lookup")
            .expect("exists")
            .mac
    });
    let expected = gratuitous_arp_frame(mac, addr);
    let c = dup(&container);
    let got = run_in(&host, move || async move {
        let sock = PacketSocket::bind(bridge, ETH_P_ARP).expect("packet socket on bridge");
        let mut buf = [0u8; 2048];
        // Resend while the host veth's bridge port is still waiting for linkwatch to report its
        // carrier (see `tap_frames_cross_the_bridge`).
        tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                in_netns(&c, move || send_gratuitous_arp("ethwe", addr))
                    .expect("netns")
                    .expect("send ARP");
                let got = tokio::time::timeout(RETRY, async {
                    loop {
                        let n = sock.recv(&mut buf).await.expect("recv");
                        if buf.get(6..12) == Some(&mac[..]) {
                            return buf[..n].to_vec();
                        }
                    }
                })
                .await;
                if let Ok(frame) = got {
                    return frame;
                }
            }
        })
        .await
        .expect("gratuitous ARP arrives within 5s")
    });
    assert!(got.len() >= expected.len());
    assert_eq!(&got[..expected.len()], &expected[..]);
}

#[test]
fn vxlan_device_and_fdb_entries() {
    if !privileged() {
        return;
    }
    let ns = new_netns().expect("netns");
    let (a, b) = (Ipv4Addr::new(198, 18, 0, 1), Ipv4Addr::new(198, 18, 0, 2));
    let (vx, info, entries, after) = run_in(&ns, move || async move {
        let nd = Netdev::new().await.expect("netlink");
        let vx = nd
            .create_vxlan("vxlan-6784", 42, 6784, false, 1400)
            .await
            .expect("vxlan");
        let info = nd.link_by_index(vx).await.expect("lookup").expect("exists");
        nd.fdb_append(vx, [0; 6], a).await.expect("append flood a");
        nd.fdb_append(vx, [0; 6], b).await.expect("append flood b");
        nd.fdb_append(vx, PEER_MAC_2, a)
            .await
            .expect("append unicast");
        let entries = nd.fdb_entries(vx).await.expect("fdb");
        nd.fdb_del(vx, [0; 6], b).await.expect("del flood b");
        let after = nd.fdb_entries(vx).await.expect("fdb");
        (vx, info, entries, after)
    });
    assert_eq!(info.kind.as_deref(), Some("vxlan"));
    assert_eq!(info.mtu, 1400);
    let flood =
        |e: &Vec<weft_netdev::FdbEntry>, ip| e.iter().any(|x| x.mac == [0; 6] && x.dst == Some(ip));
    assert!(flood(&entries, a) && flood(&entries, b), "{entries:?}");
    assert!(
        entries
            .iter()
            .any(|x| x.mac == PEER_MAC_2 && x.dst == Some(a)),
        "{entries:?}"
    );
    assert!(flood(&after, a) && !flood(&after, b), "{after:?}");

    let j = ip_json(&ns, "vxlan-6784");
    let data = &j["linkinfo"]["info_data"];
    assert_eq!(data["id"], 42);
    assert_eq!(data["port"], 6784);
    assert_eq!(data["learning"], false);
    assert!(
        data.get("external").is_none_or(|v| v == false),
        "classic, not external: {data}"
    );
    assert!(
        data.get("remote").is_none() && data.get("group").is_none(),
        "{data}"
    );

    let fdb = sh_in(&ns, &["bridge", "-j", "fdb", "show", "dev", "vxlan-6784"]);
    let fdb: serde_json::Value = serde_json::from_str(&fdb).expect("bridge -j output");
    let dsts: Vec<(String, String, bool)> = fdb
        .as_array()
        .expect("array")
        .iter()
        .filter_map(|e| {
            let perm = e["state"] == "permanent";
            Some((
                e["mac"].as_str()?.to_owned(),
                e["dst"].as_str()?.to_owned(),
                perm,
            ))
        })
        .collect();
    assert!(
        dsts.contains(&("00:00:00:00:00:00".into(), "198.18.0.1".into(), true)),
        "{dsts:?}"
    );
    assert!(
        dsts.contains(&("02:77:65:66:74:02".into(), "198.18.0.1".into(), true)),
        "{dsts:?}"
    );
    assert!(!dsts.iter().any(|d| d.1 == "198.18.0.2"), "{dsts:?}");
    let _ = vx;
}

#[test]
fn bridge_port_isolation_flag() {
    if !privileged() {
        return;
    }
    let ns = new_netns().expect("netns");
    let (iso, other, cleared, not_port) = run_in(&ns, || async {
        let nd = Netdev::new().await.expect("netlink");
        let br = nd
            .ensure_bridge("weave", PEER_MAC, MAX_MTU)
            .await
            .expect("bridge");
        nd.create_veth("vethwepl1", "vethwepg1", 0)
            .await
            .expect("veth 1");
        nd.create_veth("vethwepl2", "vethwepg2", 0)
            .await
            .expect("veth 2");
        let p1 = index(&nd, "vethwepl1").await;
        let p2 = index(&nd, "vethwepl2").await;
        nd.set_master(p1, br).await.expect("master 1");
        nd.set_master(p2, br).await.expect("master 2");
        nd.set_bridge_port_isolated(p1, true)
            .await
            .expect("isolate");
        let iso = nd.bridge_port(p1).await.expect("flags").expect("port");
        let other = nd.bridge_port(p2).await.expect("flags").expect("port");
        let j = ip_json_async("vethwepl1");
        assert_eq!(j["linkinfo"]["info_slave_data"]["isolated"], true, "{j}");
        nd.set_bridge_port_isolated(p1, false)
            .await
            .expect("un-isolate");
        let cleared = nd.bridge_port(p1).await.expect("flags").expect("port");
        let g = index(&nd, "vethwepg1").await;
        let not_port = nd.bridge_port(g).await.expect("flags");
        (iso, other, cleared, not_port)
    });
    assert!(iso.isolated);
    assert!(!other.isolated);
    assert!(!cleared.isolated);
    assert_eq!(not_port, None);
}

/// `ip -d -j link show` from a thread that is already inside the namespace.
fn ip_json_async(dev: &str) -> serde_json::Value {
    let out = Command::new("ip")
        .args(["-d", "-j", "link", "show", "dev", dev])
        .output()
        .expect("ip");
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    v[0].clone()
}

#[test]
fn tap_frames_cross_the_bridge() {
    if !privileged() {
        return;
    }
    let ns = new_netns().expect("netns");
    let (tap_kind, tap_master, to_veth, to_tap) = run_in(&ns, || async {
        let nd = Netdev::new().await.expect("netlink");
        let br = nd
            .ensure_bridge("weave", PEER_MAC, MAX_MTU)
            .await
            .expect("bridge");
        let tap = Tap::create("tapwe0").expect("tap");
        assert_eq!(tap.name(), "tapwe0");
        let t = index(&nd, "tapwe0").await;
        nd.set_master(t, br).await.expect("tap master");
        nd.set_up(t).await.expect("tap up");
        nd.create_veth("vethtap", "vethtap-p", 0)
            .await
            .expect("veth");
        let v = index(&nd, "vethtap").await;
        let p = index(&nd, "vethtap-p").await;
        nd.set_master(v, br).await.expect("veth master");
        nd.set_up(v).await.expect("veth up");
        nd.set_up(p).await.expect("peer up");
        let info = nd.link_by_index(t).await.expect("lookup").expect("exists");
        let sock = PacketSocket::bind(p, ETH_P_EXPERIMENTAL).expect("packet socket");

        // The kernel turns a bridge port to forwarding only once its carrier change has gone
        // through linkwatch, which can lag up to a second behind `set_up`: resend until the frame
        // gets through.
        let frame = test_frame(PEER_MAC_2, b"tap->veth");
        let mut buf = [0u8; 2048];
        let to_veth = tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                tap.send(&frame).await.expect("write to tap");
                if let Ok(n) = tokio::time::timeout(RETRY, sock.recv(&mut buf)).await {
                    return buf[..n.expect("recv")].to_vec();
                }
            }
        })
        .await
        .expect("frame reaches the veth within 5s");
        assert_eq!(to_veth, frame);

        let back = test_frame(PEER_MAC, b"veth->tap");
        let to_tap = tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                sock.try_send(&back).expect("send on veth");
                let got = tokio::time::timeout(RETRY, async {
                    loop {
                        let n = tap.recv(&mut buf).await.expect("tap recv");
                        // Skip the bridge's IPv6 neighbour discovery and MLD chatter.
                        if buf.get(12..14) == Some(&ETH_P_EXPERIMENTAL.to_be_bytes()[..]) {
                            return buf[..n].to_vec();
                        }
                    }
                })
                .await;
                if let Ok(frame) = got {
                    return frame;
                }
            }
        })
        .await
        .expect("frame reaches the tap within 5s");
        assert_eq!(to_tap, back);
        (info.kind, info.master, to_veth, to_tap)
    });
    assert_eq!(tap_kind.as_deref(), Some("tun"));
    assert!(tap_master.is_some());
    assert_eq!(to_veth.len(), 60);
    assert_eq!(to_tap.len(), 60);
}

/// A 60-byte broadcast frame of the experimental ethertype carrying `payload`.
fn test_frame(src: [u8; 6], payload: &[u8]) -> Vec<u8> {
    let mut f = vec![0xff; 6];
    f.extend_from_slice(&src);
    f.extend_from_slice(&ETH_P_EXPERIMENTAL.to_be_bytes());
    f.extend_from_slice(payload);
    f.resize(60, 0);
    f
}

#[test]
fn ping_between_bridges_over_vxlan() {
    if !privileged() {
        return;
    }
    let a = new_netns().expect("netns a");
    let b = new_netns().expect("netns b");
    let (ul_a, ul_b) = (Ipv4Addr::new(198, 18, 0, 1), Ipv4Addr::new(198, 18, 0, 2));
    // Underlay: one veth between the two "hosts".
    let bfd = dup(&b);
    run_in(&a, move || async move {
        let nd = Netdev::new().await.expect("netlink");
        nd.create_veth("ul0", "ul1", 0)
            .await
            .expect("underlay veth");
        let ul1 = index(&nd, "ul1").await;
        nd.move_to_netns(ul1, &bfd)
            .await
            .expect("move underlay peer");
    });
    for (ns, ul_name, me, peer, mac, overlay) in [
        (&a, "ul0", ul_a, ul_b, PEER_MAC, Ipv4Addr::new(10, 32, 0, 1)),
        (
            &b,
            "ul1",
            ul_a,
            ul_b,
            PEER_MAC_2,
            Ipv4Addr::new(10, 32, 0, 2),
        ),
    ] {
        let (me, peer) = if ul_name == "ul0" {
            (me, peer)
        } else {
            (peer, me)
        };
        let bridge = bridge_in(ns, mac, 1376);
        run_in(ns, move || async move {
            let nd = Netdev::new().await.expect("netlink");
            let ul = index(&nd, ul_name).await;
            nd.add_address(ul, IpAddr::V4(me), 24)
                .await
                .expect("underlay address");
            nd.set_up(ul).await.expect("underlay up");
            let vx = nd
                .create_vxlan("vxlan-6784", 1, 6784, false, 1450)
                .await
                .expect("vxlan");
            nd.set_master(vx, bridge).await.expect("vxlan on bridge");
            nd.set_up(vx).await.expect("vxlan up");
            nd.fdb_append(vx, [0; 6], peer)
                .await
                .expect("flood to peer");
            nd.add_address(bridge, IpAddr::V4(overlay), 12)
                .await
                .expect("bridge address");
        });
    }
    let out = in_netns(&a, || {
        Command::new("ping")
            // One reply within a 5 s deadline; ping keeps sending until then, which rides out
            // bridge ports still waiting for their carrier and the first ARP exchange.
            .args(["-c", "1", "-i", "0.2", "-w", "5", "10.32.0.2"])
            .output()
            .expect("ping")
    })
    .expect("netns");
    assert!(
        out.status.success(),
        "ping over VXLAN failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // The bridge learned B's bridge MAC behind the VXLAN port.
    let fdb = sh_in(&a, &["bridge", "fdb", "show", "br", "weave"]);
    assert!(fdb.contains("02:77:65:66:74:02"), "{fdb}");
}

#[test]
fn offloaded_tap_takes_frames_behind_a_virtio_header() {
    if !privileged() {
        return;
    }
    let ns = new_netns().expect("netns");
    let (vnet, written, tso) = run_in(&ns, || async {
        let nd = Netdev::new().await.expect("netlink");
        let tap = Tap::create_offloaded("tapwe1").expect("tap");
        let t = index(&nd, "tapwe1").await;
        nd.set_up(t).await.expect("tap up");
        // A plain frame: all-zero virtio_net_hdr (no GSO, checksum complete), then the frame.
        let frame = test_frame(PEER_MAC_2, b"behind a vnet header");
        let hdr = [0u8; 10];
        // Written from the data path's side of the device, which stays open until the end.
        let tap = tap.into_sync();
        let n = tap
            .try_send_parts(&[std::io::IoSlice::new(&hdr), std::io::IoSlice::new(&frame)])
            .expect("write");
        let features = Command::new("ethtool")
            .args(["-k", "tapwe1"])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        (tap.has_vnet_hdr(), n == hdr.len() + frame.len(), features)
    });
    assert!(vnet, "the kernel granted IFF_VNET_HDR");
    assert!(written, "one write took header and frame");
    if !tso.is_empty() {
        assert!(
            tso.contains("tcp-segmentation-offload: on"),
            "TSO offered to the TAP: {tso}"
        );
    }
}
