//! The sleeve receive shortcut against the real kernel: its verdicts on crafted datagrams (a
//! BPF test run, nothing sent), then the whole path between two namespaces — a datagram it
//! takes comes out of the TAP's ingress, one it leaves goes to the sleeve socket.
//!
//! Privileged: runs only with `WEFT_TEST_ROOT=1`; namespaces are made with [`new_netns`] and
//! vanish with the test.
#![allow(clippy::unwrap_used)] // tests: a panic is how they fail

mod common;

use std::net::{IpAddr, Ipv4Addr, SocketAddrV4, UdpSocket};
use std::time::{Duration, Instant};

use common::{dup, index, privileged, run_in};
use weft_netdev::{
    monotonic_ns, new_netns, Netdev, PacketSocket, SleeveShortcut, Tap, DRAIN_MARGIN_NS,
};

const US: [u8; 6] = [0x0a, 0, 0, 0, 0, 0x01];
const PEER: [u8; 6] = [0x0a, 0, 0, 0, 0, 0x02];
const OTHER: [u8; 6] = [0x0a, 0, 0, 0, 0, 0x03];
const LOCAL_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];
const REMOTE_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x02];
const PORT: u16 = 6783;
const FROM: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
const TO: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
/// IEEE 802 "local experimental" ethertype: nothing in the stack answers it.
const ETH_P_EXPERIMENTAL: u16 = 0x88b5;

/// A 60-byte frame from `src` to `dst` of the experimental ethertype.
fn frame(dst: [u8; 6], src: [u8; 6], tag: u8) -> Vec<u8> {
    let mut f = dst.to_vec();
    f.extend_from_slice(&src);
    f.extend_from_slice(&ETH_P_EXPERIMENTAL.to_be_bytes());
    f.resize(60, tag);
    f
}

/// A sleeve payload: `sender`, then one record per (src, dst, frame).
fn payload(sender: [u8; 6], records: &[([u8; 6], [u8; 6], &[u8])]) -> Vec<u8> {
    let mut p = sender.to_vec();
    for (src, dst, f) in records {
        p.extend_from_slice(src);
        p.extend_from_slice(dst);
        p.extend_from_slice(&(f.len() as u16).to_be_bytes());
        p.extend_from_slice(f);
    }
    p
}

/// The payload in Ethernet + IPv4 + UDP from `FROM:sport` to `TO:dport`.
fn packet(sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let mut p = vec![0x02, 0, 0, 0, 0, 0xbb, 0x02, 0, 0, 0, 0, 0xaa, 0x08, 0x00];
    let total = (20 + 8 + payload.len()) as u16;
    p.extend_from_slice(&[0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, 17, 0, 0]);
    p[16..18].copy_from_slice(&total.to_be_bytes());
    p.extend_from_slice(&FROM.octets());
    p.extend_from_slice(&TO.octets());
    let sum = p[14..34]
        .chunks(2)
        .map(|w| u32::from(u16::from_be_bytes([w[0], w[1]])))
        .sum::<u32>();
    let sum = !(((sum & 0xffff) + (sum >> 16)) as u16);
    p[24..26].copy_from_slice(&sum.to_be_bytes());
    p.extend_from_slice(&sport.to_be_bytes());
    p.extend_from_slice(&dport.to_be_bytes());
    p.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    p.extend_from_slice(&[0, 0]);
    p.extend_from_slice(payload);
    p
}

fn loaded() -> SleeveShortcut {
    let s = SleeveShortcut::load(US, PORT, 1).expect("program loads and passes the verifier");
    s.set_conn(SocketAddrV4::new(FROM, PORT), TO, PEER).unwrap();
    s.set_mac(REMOTE_MAC, PEER).unwrap();
    // Bound to us: behind our bridge.
    s.set_mac(LOCAL_MAC, US).unwrap();
    s
}

/// The data path read the socket empty just now (long enough after what was left up).
fn drain(s: &SleeveShortcut) {
    s.drained(monotonic_ns() + DRAIN_MARGIN_NS);
}

const REDIRECTED: u32 = 7;
const LEFT: u32 = 0;

#[test]
fn takes_a_plain_frame_and_strips_it_to_the_ethernet_frame() {
    if !privileged() {
        return;
    }
    let s = loaded();
    let f = frame(LOCAL_MAC, REMOTE_MAC, 1);
    let (verdict, out) = s
        .test_run(&packet(PORT, PORT, &payload(PEER, &[(PEER, US, &f)])))
        .unwrap();
    assert_eq!(verdict, REDIRECTED);
    assert_eq!(out, f);
    let c = s.counters();
    assert_eq!((c.frames, c.bytes, c.passed), (1, 60, 0));
    // The MAC was seen, for the data path's table.
    let macs = s.macs().unwrap();
    let remote = macs.iter().find(|m| m.mac == REMOTE_MAC).unwrap();
    assert_eq!(remote.peer, PEER);
    assert!(remote.seen > 0);
    let local = macs.iter().find(|m| m.mac == LOCAL_MAC).unwrap();
    assert_eq!(local.seen, 0, "only source MACs are marked seen");
}

#[test]
fn leaves_everything_else_to_the_socket_untouched() {
    if !privileged() {
        return;
    }
    let s = loaded();
    let f = frame(LOCAL_MAC, REMOTE_MAC, 2);
    let bcast = frame([0xff; 6], REMOTE_MAC, 3);
    let stranger = frame(LOCAL_MAC, [0x02, 0, 0, 0, 0, 0x09], 4);
    let elsewhere = frame([0x02, 0, 0, 0, 0, 0x0e], REMOTE_MAC, 4);
    let looped = frame(LOCAL_MAC, LOCAL_MAC, 4);
    let heartbeat = [0u8; 22];
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("unknown connection", {
            let mut p = packet(PORT + 1, PORT, &payload(PEER, &[(PEER, US, &f)]));
            p[34..36].copy_from_slice(&(PORT + 1).to_be_bytes());
            p
        }),
        (
            "sender is not the connection's peer",
            packet(PORT, PORT, &payload(OTHER, &[(PEER, US, &f)])),
        ),
        (
            "for another peer (a relay)",
            packet(PORT, PORT, &payload(PEER, &[(PEER, OTHER, &f)])),
        ),
        (
            "broadcast",
            packet(PORT, PORT, &payload(PEER, &[(PEER, US, &bcast)])),
        ),
        (
            "to a MAC not behind our bridge (the data path floods it on)",
            packet(PORT, PORT, &payload(PEER, &[(PEER, US, &elsewhere)])),
        ),
        (
            "captured by us (looped)",
            packet(PORT, PORT, &payload(PEER, &[(US, US, &looped)])),
        ),
        (
            "MAC not learnt yet",
            packet(PORT, PORT, &payload(PEER, &[(PEER, US, &stranger)])),
        ),
        (
            "MAC bound to another peer",
            packet(PORT, PORT, &payload(PEER, &[(OTHER, US, &f)])),
        ),
        (
            "two records",
            packet(
                PORT,
                PORT,
                &payload(PEER, &[(PEER, US, &f), (PEER, US, &f)]),
            ),
        ),
        (
            "heartbeat",
            packet(PORT, PORT, &payload(PEER, &[(PEER, US, &heartbeat)])),
        ),
        ("record longer than the datagram", {
            let mut p = packet(PORT, PORT, &payload(PEER, &[(PEER, US, &f)]));
            p[60..62].copy_from_slice(&61u16.to_be_bytes());
            p
        }),
        ("trailing bytes", {
            let mut pl = payload(PEER, &[(PEER, US, &f)]);
            pl.extend_from_slice(&[0; 3]);
            packet(PORT, PORT, &pl)
        }),
        ("a first fragment", {
            let mut p = packet(PORT, PORT, &payload(PEER, &[(PEER, US, &f)]));
            p[20] |= 0x20;
            p
        }),
        ("a later fragment, which has no UDP header", {
            let mut p = packet(PORT, 0x1234, &payload(PEER, &[(PEER, US, &f)]));
            p[21] = 0x10;
            p
        }),
        ("IPv4 options", {
            let mut p = packet(PORT, PORT, &payload(PEER, &[(PEER, US, &f)]));
            p[14] = 0x46;
            p
        }),
    ];
    for (i, (what, p)) in cases.iter().enumerate() {
        let (verdict, out) = s.test_run(p).unwrap();
        assert_eq!(verdict, LEFT, "{what}");
        assert_eq!(&out, p, "{what}: packet untouched");
        assert_eq!(s.counters().passed, i as u64 + 1, "{what}: counted");
        // Up-to-date data path, so that only the case itself decides.
        drain(&s);
    }
    // Not sleeve traffic: left alone and not counted.
    let other_port = packet(PORT, 53, &payload(PEER, &[(PEER, US, &f)]));
    let (verdict, out) = s.test_run(&other_port).unwrap();
    assert_eq!((verdict, out), (LEFT, other_port));
    assert_eq!(s.counters().passed, cases.len() as u64);
    assert_eq!(s.counters().frames, 0);
}

#[test]
fn waits_for_the_data_path_to_drain_before_taking_frames_again() {
    if !privileged() {
        return;
    }
    let s = loaded();
    let f = frame(LOCAL_MAC, REMOTE_MAC, 5);
    let good = packet(PORT, PORT, &payload(PEER, &[(PEER, US, &f)]));
    let bcast = frame([0xff; 6], REMOTE_MAC, 6);
    let up = packet(PORT, PORT, &payload(PEER, &[(PEER, US, &bcast)]));
    assert_eq!(s.test_run(&good).unwrap().0, REDIRECTED);
    // A datagram goes up to the socket: until the data path says it read the socket empty
    // after that, frames behind it would overtake it, so they go up too.
    assert_eq!(s.test_run(&up).unwrap().0, LEFT);
    assert!(s.holding_back());
    assert_eq!(s.test_run(&good).unwrap().0, LEFT);
    // A drain right after does not count: the datagram may not be on the socket yet.
    s.drained(monotonic_ns());
    assert!(s.holding_back());
    assert_eq!(s.test_run(&good).unwrap().0, LEFT);
    drain(&s);
    assert!(!s.holding_back());
    assert_eq!(s.test_run(&good).unwrap().0, REDIRECTED);
    assert_eq!(s.counters().frames, 2);
}

#[test]
fn taken_frames_enter_the_tap_and_the_rest_reach_the_socket() {
    if !privileged() {
        return;
    }
    let a = new_netns().expect("netns a");
    let b = new_netns().expect("netns b");
    let bfd = dup(&b);
    run_in(&a, move || async move {
        let nd = Netdev::new().await.unwrap();
        nd.create_veth("ul0", "ul1", 0).await.unwrap();
        let ul0 = index(&nd, "ul0").await;
        let ul1 = index(&nd, "ul1").await;
        nd.move_to_netns(ul1, &bfd).await.unwrap();
        nd.add_address(ul0, IpAddr::V4(FROM), 24).await.unwrap();
        nd.set_up(ul0).await.unwrap();
    });
    let sender = weft_netdev::in_netns(&a, || {
        UdpSocket::bind(SocketAddrV4::new(FROM, PORT)).unwrap()
    })
    .unwrap();
    let (frames, passed, on_socket) = run_in(&b, move || async move {
        let nd = Netdev::new().await.unwrap();
        let ul1 = index(&nd, "ul1").await;
        nd.add_address(ul1, IpAddr::V4(TO), 24).await.unwrap();
        nd.set_up(ul1).await.unwrap();
        let tap = Tap::create("tapwe0").unwrap();
        let t = index(&nd, "tapwe0").await;
        nd.set_up(t).await.unwrap();
        let sock = UdpSocket::bind(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, PORT)).unwrap();
        sock.set_nonblocking(true).unwrap();
        let s = SleeveShortcut::load(US, PORT, t).unwrap();
        assert!(s.attach(ul1).unwrap());
        assert!(!s.attach(ul1).unwrap(), "attached once");
        s.set_conn(SocketAddrV4::new(FROM, PORT), TO, PEER).unwrap();
        s.set_mac(REMOTE_MAC, PEER).unwrap();
        s.set_mac(LOCAL_MAC, US).unwrap();
        let on_tap = PacketSocket::bind(t, ETH_P_EXPERIMENTAL).unwrap();
        let f = frame(LOCAL_MAC, REMOTE_MAC, 7);
        let good = payload(PEER, &[(PEER, US, &f)]);
        let bcast = frame([0xff; 6], REMOTE_MAC, 8);
        let up = payload(PEER, &[(PEER, US, &bcast)]);
        // The veth's carrier comes up through linkwatch: resend until the frame arrives.
        let mut buf = [0u8; 2048];
        let got = tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                sender.send_to(&good, SocketAddrV4::new(TO, PORT)).unwrap();
                let r = tokio::time::timeout(Duration::from_millis(200), on_tap.recv(&mut buf));
                if let Ok(n) = r.await {
                    return buf[..n.unwrap()].to_vec();
                }
            }
        })
        .await
        .expect("the frame comes out of the TAP within 5 s");
        assert_eq!(got, f);
        // A broadcast goes to the socket, as it was sent.
        sender.send_to(&up, SocketAddrV4::new(TO, PORT)).unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        let on_socket = loop {
            match sock.recv(&mut buf) {
                Ok(n) => break buf[..n].to_vec(),
                Err(_) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                Err(e) => panic!("no datagram on the socket: {e}"),
            }
        };
        // Nothing the program took reached the socket.
        assert_eq!(on_socket, up);
        let c = s.counters();
        drop(tap);
        (c.frames, c.passed, on_socket)
    });
    assert!(frames >= 1);
    assert_eq!(passed, 1);
    assert!(!on_socket.is_empty());
}

/// What the program may take, written out plainly: the frame it must hand on, if any.
fn reference(p: &[u8]) -> Option<Vec<u8>> {
    let be16 = |i: usize| usize::from(u16::from_be_bytes([p[i], p[i + 1]]));
    if p.len() < 76 || p[12..14] != [0x08, 0x00] || p[14] != 0x45 || p[23] != 17 {
        return None;
    }
    let len = be16(60);
    let ours = be16(36) == usize::from(PORT)
        && p[20] & 0x3f == 0
        && p[21] == 0
        && len >= 34
        && be16(16) == len + 48
        && be16(38) == len + 28
        && p.len() == len + 62
        && p[26..30] == FROM.octets()
        && p[30..34] == TO.octets()
        && be16(34) == usize::from(PORT)
        && p[42..48] == PEER
        && p[54..60] == US
        && p[62..68] == LOCAL_MAC
        && p[68..74] == REMOTE_MAC
        && p[48..54] == PEER;
    ours.then(|| p[62..].to_vec())
}

#[test]
fn takes_exactly_what_the_plain_rules_allow_under_every_single_byte_change() {
    if !privileged() {
        return;
    }
    let s = loaded();
    let f = frame(LOCAL_MAC, REMOTE_MAC, 9);
    let good = packet(PORT, PORT, &payload(PEER, &[(PEER, US, &f)]));
    let mut taken = 0;
    for i in 0..good.len() {
        for v in [0x00, 0x01, 0x3f, 0x45, 0x80, 0xff, good[i] ^ 0x01] {
            let mut p = good.clone();
            p[i] = v;
            drain(&s);
            let (verdict, out) = s.test_run(&p).unwrap();
            match reference(&p) {
                Some(frame) => {
                    assert_eq!(verdict, REDIRECTED, "byte {i} = {v:#x}");
                    assert_eq!(out, frame, "byte {i} = {v:#x}");
                    taken += 1;
                }
                None => {
                    assert_eq!(verdict, LEFT, "byte {i} = {v:#x}");
                    assert_eq!(out, p, "byte {i} = {v:#x}: untouched");
                }
            }
        }
    }
    // Changes to the frame's body and to unchecked header bytes (TTL, checksums) still pass.
    assert!(taken > 100, "{taken}");
    // Truncated and padded packets are left alone.
    for n in [0, 14, 34, 61, 75, good.len() - 1] {
        assert_eq!(s.test_run(&good[..n]).map(|r| r.0).unwrap_or(LEFT), LEFT);
    }
    let mut padded = good.clone();
    padded.push(0);
    assert_eq!(s.test_run(&padded).unwrap().0, LEFT);
}
