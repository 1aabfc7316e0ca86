//! A hostile mesh peer for the end-to-end hardening tests (`scripts/e2e.sh`): it connects to a
//! router's mesh port, completes a real intro when the attack needs one, and then misbehaves in
//! one bounded way, so that a test can check that the router stays alive, answers, and stays
//! within its memory limits. Every loop is bounded in count and time; it only ever connects to
//! the address it is given (a router in a test namespace).
//!
//! Usage: `hostile_peer ADDR ATTACK [COUNT] [SIZE] [HOLD_SECS]`, where ATTACK is one of
//! * `digests` — intro as a weft peer, send COUNT empty topology digests, never read;
//! * `unknown-broadcasts` — intro, send COUNT distinct SIZE-byte broadcasts on a gossip
//!   channel nobody implements;
//! * `replayed-broadcasts` — intro, send the same SIZE-byte broadcast COUNT times;
//! * `open-idle` — open COUNT connections and send nothing (intros left hanging);
//! * `big-intro` — a valid header, then a features frame announcing SIZE bytes;
//! * `fake-peers` — intro, then topology broadcasts announcing COUNT made-up peers in a chain
//!   that starts at us (so none is unreachable), SIZE peers per message;
//! * `ipam-rings` — COUNT times: intro, send one hostile `IPallocation` gossip for the universe
//!   172.16.16.0/24 (in turn: garbage, tokens out of order, tokens outside the universe, a ring
//!   claiming every address at huge versions with too much free space, SIZE entries), and wait
//!   for the router to close the connection; prints how many it closed.
//! * `dns-gossip` — COUNT times: intro, send one hostile `nameserver` gossip (in turn:
//!   garbage, a timestamp an hour ahead, a name that is no DNS name, SIZE entries), and wait
//!   for the router to close the connection; prints how many it closed.
//! * `gob-bombs` — COUNT times: a valid header, then a features frame of about SIZE bytes built
//!   as a gob type-definition bomb, and wait for the router to close; prints how many it closed.
//!
//! It then holds its connections for HOLD_SECS (default 5) and exits 0; it exits 2 on a usage
//! error and 1 when the router refused what had to succeed (the intro).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use weft_core::handshake::{Handshake, LocalIdentity};
use weft_core::ipam::allocator::GossipState;
use weft_core::ipam::ring::{Entry, RingSnapshot};
use weft_core::ipam::{wire as ipam_wire, Address};
use weft_core::session::SessionTx;
use weft_wire::gob::hostile;
use weft_wire::protocol::ProtocolMsg;
use weft_wire::topology_delta::{self, Message};
use weft_wire::{header, ConnectionSummary, PeerName, PeerSummary};

/// No attack runs longer than this, whatever it was asked.
const MAX_RUN: Duration = Duration::from_secs(60);
/// The most messages or connections one run makes.
const MAX_COUNT: usize = 100_000;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let usage = "usage: hostile_peer ADDR ATTACK [COUNT] [SIZE] [HOLD_SECS]";
    let (Some(addr), Some(attack)) = (args.get(1), args.get(2)) else {
        eprintln!("{usage}");
        std::process::exit(2);
    };
    let num = |i: usize, default: usize| {
        args.get(i)
            .map_or(Ok(default), |s| s.parse::<usize>())
            .unwrap_or_else(|_| {
                eprintln!("{usage}: argument {i} must be a number");
                std::process::exit(2)
            })
    };
    let Ok(addr) = addr.parse::<SocketAddr>() else {
        eprintln!("{usage}: ADDR must be ip:port");
        std::process::exit(2);
    };
    let count = num(3, 100).min(MAX_COUNT);
    let size = num(4, 1024).min(16 << 20);
    let hold = Duration::from_secs(num(5, 5) as u64).min(MAX_RUN);
    let started = Instant::now();
    let result = match attack.as_str() {
        "digests" => digests(addr, count, hold),
        "unknown-broadcasts" => broadcasts(addr, count, size, false, hold),
        "replayed-broadcasts" => broadcasts(addr, count, size, true, hold),
        "open-idle" => open_idle(addr, count, hold),
        "big-intro" => big_intro(addr, size),
        "fake-peers" => fake_peers(addr, count, size.clamp(1, 10_000), hold),
        "ipam-rings" => ipam_rings(addr, count, size.clamp(1, 100_000)),
        "gob-bombs" => gob_bombs(addr, count, size),
        "dns-gossip" => dns_gossip(addr, count, size.clamp(1, 200_000)),
        other => Err(format!("{usage}: unknown attack {other}")),
    };
    match result {
        Ok(()) => eprintln!("{attack}: done in {:?}", started.elapsed()),
        Err(e) => {
            eprintln!("{attack}: {e}");
            std::process::exit(1);
        }
    }
}

fn connect(addr: SocketAddr) -> Result<TcpStream, String> {
    let s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| e.to_string())?;
    s.set_write_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| e.to_string())?;
    Ok(s)
}

/// Connects and completes a real intro as a weft peer with a random name (returned with the
/// uid it introduced itself with).
fn intro(addr: SocketAddr) -> Result<(TcpStream, PeerName), String> {
    intro_as(addr).map(|(s, name, _, _)| (s, name))
}

/// Also returns our uid and the router's name.
fn intro_as(addr: SocketAddr) -> Result<(TcpStream, PeerName, u64, PeerName), String> {
    let mut s = connect(addr)?;
    let name = PeerName(0x0a00_0000_0000 | (rand::random::<u64>() & 0xff_ffff_ffff));
    let uid: u64 = rand::random();
    let id = LocalIdentity {
        name,
        nick_name: "hostile".into(),
        uid,
        short_id: 1,
        overlays: "sleeve".into(),
    };
    let mut hs = Handshake::new(&id, rand::random(), false);
    if let Some(out) = hs.poll_transmit() {
        s.write_all(&out).map_err(|e| e.to_string())?;
    }
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let deadline = Instant::now() + Duration::from_secs(10);
    let remote = loop {
        if let Some(r) = hs.handle_input(&mut buf).map_err(|e| e.to_string())? {
            break r.name;
        }
        if Instant::now() > deadline {
            return Err("intro timed out".into());
        }
        let n = s.read(&mut chunk).map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("router closed the connection during the intro".into());
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    Ok((s, name, uid, remote))
}

fn send(s: &mut TcpStream, msg: &ProtocolMsg) -> Result<(), String> {
    let mut body = Vec::new();
    msg.encode(&mut body);
    let mut wire = Vec::new();
    SessionTx::default()
        .seal(&body, &mut wire)
        .map_err(|e| e.to_string())?;
    s.write_all(&wire).map_err(|e| e.to_string())
}

fn digests(addr: SocketAddr, count: usize, hold: Duration) -> Result<(), String> {
    let (mut s, name) = intro(addr)?;
    let payload = Message::Digest(Vec::new())
        .encode()
        .map_err(|e| e.to_string())?;
    let msg = ProtocolMsg::Gossip {
        channel: topology_delta::CHANNEL.into(),
        src: name,
        payload,
    };
    for i in 0..count {
        // The router may cut us off: that is what it should do.
        if let Err(e) = send(&mut s, &msg) {
            eprintln!("digests: stopped after {i}: {e}");
            break;
        }
    }
    std::thread::sleep(hold);
    Ok(())
}

fn broadcasts(
    addr: SocketAddr,
    count: usize,
    size: usize,
    replay: bool,
    hold: Duration,
) -> Result<(), String> {
    let (mut s, name) = intro(addr)?;
    let deadline = Instant::now() + MAX_RUN;
    for i in 0..count {
        let mut payload = vec![0x5a; size];
        if !replay {
            payload[..8.min(size)].copy_from_slice(&(i as u64).to_le_bytes()[..8.min(size)]);
        }
        let msg = ProtocolMsg::GossipBroadcast {
            channel: "hostile-unknown".into(),
            src: name,
            payload,
        };
        if Instant::now() > deadline {
            break;
        }
        if let Err(e) = send(&mut s, &msg) {
            eprintln!("broadcasts: stopped after {i}: {e}");
            break;
        }
    }
    std::thread::sleep(hold);
    Ok(())
}

fn open_idle(addr: SocketAddr, count: usize, hold: Duration) -> Result<(), String> {
    let mut held = Vec::new();
    let deadline = Instant::now() + MAX_RUN;
    for _ in 0..count {
        if Instant::now() > deadline {
            break;
        }
        match connect(addr) {
            Ok(s) => held.push(s),
            Err(e) => eprintln!("open-idle: {e}"),
        }
    }
    eprintln!("open-idle: holding {} connections", held.len());
    std::thread::sleep(hold);
    Ok(())
}

fn big_intro(addr: SocketAddr, size: usize) -> Result<(), String> {
    let mut s = connect(addr)?;
    s.write_all(&features_frame_head(size))
        .map_err(|e| e.to_string())?;
    // Send the body in pieces until the router closes on us (or it is all sent).
    let piece = vec![0u8; 64 * 1024];
    let mut sent = 0;
    while sent < size {
        let n = piece.len().min(size - sent);
        if s.write_all(&piece[..n]).is_err() {
            break;
        }
        sent += n;
    }
    eprintln!("big-intro: sent {sent} of {size} bytes before the router closed");
    Ok(())
}

fn fake_peers(
    addr: SocketAddr,
    count: usize,
    per_msg: usize,
    hold: Duration,
) -> Result<(), String> {
    let (mut s, name, uid, router) = intro_as(addr)?;
    let fake = |i: usize| PeerName(0x0e00_0000_0000 | i as u64);
    let link = |to: PeerName| ConnectionSummary {
        name: to,
        remote_tcp_addr: "192.0.2.1:6783".into(),
        outbound: true,
        established: true,
    };
    let summary = |name: PeerName, uid: u64, version: u64| PeerSummary {
        name,
        nick_name: format!("fake-{:x}", name.0),
        uid,
        version,
        short_id: 0,
        has_short_id: false,
    };
    let deadline = Instant::now() + MAX_RUN;
    let mut start = 0;
    // A chain router - us - fake 0 - fake 1 - ...: every made-up peer is reachable and none
    // has more than two connections, so only the router's cap on peers can stop them.
    let at = |i: usize| if i == 0 { name } else { fake(i - 1) };
    while start < count && Instant::now() < deadline {
        let end = (start + per_msg).min(count);
        let mut peers = vec![(summary(name, uid, 10), vec![link(router), link(fake(0))])];
        peers.extend((start..end).map(|i| {
            (
                summary(fake(i), i as u64 + 1, 1),
                vec![link(at(i)), link(fake(i + 1))],
            )
        }));
        let msg = ProtocolMsg::GossipBroadcast {
            channel: weft_core::mesh::TOPOLOGY_CHANNEL.into(),
            src: name,
            payload: weft_wire::topology::encode(&peers),
        };
        if let Err(e) = send(&mut s, &msg) {
            eprintln!("fake-peers: stopped at {start}: {e}");
            break;
        }
        start = end;
    }
    eprintln!("fake-peers: announced {start} peers");
    std::thread::sleep(hold);
    Ok(())
}

/// The hostile IPAM states, in turn; `n` entries for the long one.
fn hostile_ipam_payload(kind: usize, us: PeerName, n: usize) -> Vec<u8> {
    let base = 0xac10_1000u32; // 172.16.16.0
    let entry = |token: u32, version: u32, free: u32| Entry {
        token: Address(token),
        peer: us,
        version,
        free,
    };
    let entries = match kind % 5 {
        0 => return vec![0xff; 64],
        1 => vec![entry(base + 128, 1, 1), entry(base + 5, 1, 1)],
        2 => vec![entry(base - 10, 1, 1), entry(base + 300, 1, 1)],
        3 => vec![entry(base, u32::MAX - 1, 4096)],
        _ => (0..n as u32).map(|i| entry(base + i, 7, 0)).collect(),
    };
    let ring = RingSnapshot {
        start: Address(base),
        end: Address(base + 256),
        peer: us,
        entries,
        seeds: vec![us],
    };
    let state = GossipState {
        nicknames: [(us, "hostile".to_owned())].into(),
        paxos: None,
        ring: Some(ring),
    };
    ipam_wire::encode_gossip(&state, 0)
}

/// Reads (and ignores) what the router sends until it closes the connection: true, or until
/// `wait` has passed: false.
fn closed_within(s: &mut TcpStream, wait: Duration) -> bool {
    let mut chunk = [0u8; 4096];
    let until = Instant::now() + wait;
    while Instant::now() < until {
        match s.read(&mut chunk) {
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Ok(0) | Err(_) => return true,
            Ok(_) => {}
        }
    }
    false
}

/// COUNT times: a valid header, then a features frame of about SIZE bytes that is a gob
/// type-definition bomb (in turn: long-named chains with empty values, with full values, and
/// types too large to expand), and wait for the router to close; prints how many it closed.
fn gob_bombs(addr: SocketAddr, count: usize, size: usize) -> Result<(), String> {
    count_closed(count, |i| {
        let body = match i % 3 {
            0 => hostile::type_bomb(size, (4, 5), 200, 4, false),
            1 => hostile::type_bomb(size, (5, 3), 200, 1 << 20, true),
            _ => hostile::type_bomb(size, (8, 8), 200, 4, false),
        };
        let mut s = connect(addr)?;
        let mut out = features_frame_head(body.len());
        out.extend_from_slice(&body);
        Ok(s.write_all(&out).is_err() || closed_within(&mut s, Duration::from_secs(5)))
    })
}

fn ipam_rings(addr: SocketAddr, count: usize, size: usize) -> Result<(), String> {
    hostile_gossip(addr, count, "IPallocation", |i, name| {
        hostile_ipam_payload(i, name, size)
    })
}

/// COUNT times: intro, one gossip on `channel` with the `i`th payload, and wait for the router
/// to close the connection; prints how many it closed.
fn hostile_gossip(
    addr: SocketAddr,
    count: usize,
    channel: &str,
    payload: impl Fn(usize, PeerName) -> Vec<u8>,
) -> Result<(), String> {
    count_closed(count, |i| {
        let (mut s, name) = intro(addr)?;
        let msg = ProtocolMsg::Gossip {
            channel: channel.into(),
            src: name,
            payload: payload(i, name),
        };
        Ok(send(&mut s, &msg).is_err() || closed_within(&mut s, Duration::from_secs(5)))
    })
}

/// The hostile DNS gossip messages, in turn; `n` entries for the long one.
fn hostile_dns_payload(kind: usize, us: PeerName, n: usize) -> Vec<u8> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    let entry = |i: usize, host: &str| weft_wire::dns::Entry {
        container_id: format!("c{i}"),
        origin: us,
        addr: std::net::Ipv4Addr::from(0x0a05_0000 + i as u32),
        hostname: host.to_string(),
        version: 0,
        tombstone: 0,
    };
    let (timestamp, entries) = match kind % 4 {
        0 => return vec![0xff; 64],
        1 => (now + 3600, vec![entry(0, "skew.weave.local.")]),
        2 => (now, vec![entry(0, "bad name..weave.local.")]),
        _ => (now, (0..n).map(|i| entry(i, "many.weave.local.")).collect()),
    };
    weft_wire::dns::GossipData { timestamp, entries }.encode()
}

fn dns_gossip(addr: SocketAddr, count: usize, size: usize) -> Result<(), String> {
    hostile_gossip(addr, count, "nameserver", |i, name| {
        hostile_dns_payload(i, name, size)
    })
}

/// Runs `attempt` for 0..COUNT (within [`MAX_RUN`]); each says whether the router closed that
/// attempt's connection. Prints how many it closed.
fn count_closed(
    count: usize,
    mut attempt: impl FnMut(usize) -> Result<bool, String>,
) -> Result<(), String> {
    let deadline = Instant::now() + MAX_RUN;
    let mut closed = 0;
    for i in 0..count {
        if Instant::now() > deadline {
            break;
        }
        if attempt(i)? {
            closed += 1;
        }
    }
    println!("closed {closed} of {count}");
    Ok(())
}

/// A valid protocol header, the "no encryption" byte, and the length of a features frame of
/// `len` bytes: what precedes the features in an intro.
fn features_frame_head(len: usize) -> Vec<u8> {
    let mut out = header::encode(1, 2).to_vec();
    out.push(0);
    out.extend_from_slice(&u32::try_from(len).unwrap_or(u32::MAX).to_be_bytes());
    out
}
