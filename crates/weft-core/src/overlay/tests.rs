//! Unit tests of the forwarding rules against a fake [`Fabric`].
#![allow(clippy::unwrap_used)] // In tests a panic is the failed assertion.

use std::time::{Duration, Instant};

use proptest::prelude::*;
use weft_wire::sleeve::{self, SleeveError};
use weft_wire::PeerName;

use super::*;

pub(super) const A: PeerName = PeerName(0x0a);
pub(super) const B: PeerName = PeerName(0x0b);
pub(super) const C: PeerName = PeerName(0x0c);
pub(super) const D: PeerName = PeerName(0x0d);

pub(super) fn mac(n: u8) -> Mac {
    Mac([0x02, 0, 0, 0, 0, n])
}

/// An Ethernet frame `dst, src, type 0x0800, payload`.
pub(super) fn eth(dst: Mac, src: Mac, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(14 + payload.len());
    f.extend_from_slice(&dst.0);
    f.extend_from_slice(&src.0);
    f.extend_from_slice(&[0x08, 0x00]);
    f.extend_from_slice(payload);
    f
}

fn datagram(sender: PeerName, records: &[(PeerName, PeerName, &[u8])]) -> Vec<u8> {
    let mut d = sender.to_bytes().to_vec();
    for (s, t, f) in records {
        sleeve::encode_frame(*s, *t, f, &mut d).unwrap();
    }
    d
}

type Record = (PeerName, PeerName, Vec<u8>);

/// Parses a datagram built by the forwarder: sender and records.
pub(super) fn records(d: &[u8]) -> (PeerName, Vec<Record>) {
    let (sender, iter) = sleeve::parse(d).unwrap();
    let recs = iter
        .map(|r| r.unwrap())
        .map(|f| (f.src, f.dst, f.data.to_vec()))
        .collect();
    (sender, recs)
}

/// Drains every ready datagram.
fn drain(fwd: &mut Forwarder) -> Vec<(PeerName, Vec<u8>)> {
    let mut out = Vec::new();
    let mut buf = Vec::new();
    while let Some(p) = fwd.poll_datagram(&mut buf) {
        out.push((p, buf.clone()));
    }
    out
}

type FakeFabric = FabricTable;

/// Line A – B – C as seen from `us`.
fn line(us: PeerName) -> FakeFabric {
    let mut f = FakeFabric {
        us,
        known: [A, B, C].into_iter().collect(),
        ..FakeFabric::default()
    };
    match us {
        A => {
            f.unicast = [(B, B), (C, B)].into_iter().collect();
            f.broadcast = [(A, vec![B]), (B, vec![]), (C, vec![])]
                .into_iter()
                .collect();
        }
        B => {
            f.unicast = [(A, A), (C, C)].into_iter().collect();
            f.broadcast = [(A, vec![C]), (B, vec![A, C]), (C, vec![A])]
                .into_iter()
                .collect();
        }
        _ => {
            f.unicast = [(B, B), (A, B)].into_iter().collect();
            f.broadcast = [(C, vec![B]), (A, vec![]), (B, vec![])]
                .into_iter()
                .collect();
        }
    }
    f
}

/// Star with A at the centre and leaves B, C, D, seen from A.
fn star_centre() -> FakeFabric {
    FakeFabric {
        us: A,
        known: [A, B, C, D].into_iter().collect(),
        unicast: [(B, B), (C, C), (D, D)].into_iter().collect(),
        broadcast: [
            (A, vec![B, C, D]),
            (B, vec![C, D]),
            (C, vec![B, D]),
            (D, vec![B, C]),
        ]
        .into_iter()
        .collect(),
        ..FakeFabric::default()
    }
}

/// A datagram's result, injected frames and special frames.
type Collected = (
    Result<Received, SleeveError>,
    Vec<Vec<u8>>,
    Vec<(PeerName, Vec<u8>)>,
);

fn collect(fwd: &mut Forwarder, d: &[u8], fabric: &FakeFabric, now: Instant) -> Collected {
    let mut injected = Vec::new();
    let mut specials = Vec::new();
    let r = fwd.handle_datagram(d, fabric, now, &mut |dl| match dl {
        Delivery::Inject(f) => injected.push(f.to_vec()),
        Delivery::Special { sender, frame } => specials.push((sender, frame.to_vec())),
    });
    (r, injected, specials)
}

#[test]
fn captured_broadcast_floods_our_tree_with_hop_as_destination() {
    let fab = star_centre();
    let mut fwd = Forwarder::new();
    let now = Instant::now();
    let f = eth(Mac::BROADCAST, mac(1), b"arp");
    assert_eq!(
        fwd.handle_captured(&f, &fab, now),
        Verdict::Flooded { copies: 3 }
    );
    let out = drain(&mut fwd);
    assert_eq!(out.len(), 3);
    for (i, hop) in [B, C, D].into_iter().enumerate() {
        assert_eq!(out[i].0, hop);
        assert_eq!(records(&out[i].1), (A, vec![(A, hop, f.clone())]));
    }
    assert_eq!(fwd.mac_cache().lookup(mac(1)), Some(MacOwner::Local));
    // Multicast and unknown unicast flood the same way.
    let f = eth(Mac([0x01, 0, 0x5e, 0, 0, 1]), mac(1), b"mc");
    assert_eq!(
        fwd.handle_captured(&f, &fab, now),
        Verdict::Flooded { copies: 3 }
    );
    let f = eth(mac(99), mac(1), b"unknown");
    assert_eq!(
        fwd.handle_captured(&f, &fab, now),
        Verdict::Flooded { copies: 3 }
    );
    assert_eq!(drain(&mut fwd).len(), 3, "batched per hop");
    assert_eq!(fwd.stats().sent, 9);
}

#[test]
fn captured_unicast_goes_to_next_hop_and_keeps_final_destination() {
    let fab = line(A);
    let mut fwd = Forwarder::new();
    let now = Instant::now();
    // C's container broadcast reached us through B: learn mac(3) at C.
    let bc = eth(Mac::BROADCAST, mac(3), b"hello");
    let (r, inj, _) = collect(&mut fwd, &datagram(B, &[(C, A, &bc)]), &fab, now);
    assert_eq!(r.unwrap().injected, 1);
    assert_eq!(inj, vec![bc]);
    assert_eq!(fwd.mac_cache().lookup(mac(3)), Some(MacOwner::Peer(C)));
    assert!(
        drain(&mut fwd).is_empty(),
        "no onward hops for C's tree at A"
    );

    let f = eth(mac(3), mac(1), b"reply");
    assert_eq!(
        fwd.handle_captured(&f, &fab, now),
        Verdict::Unicast { next_hop: B }
    );
    let out = drain(&mut fwd);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].0, B);
    assert_eq!(records(&out[0].1), (A, vec![(A, C, f)]));
}

#[test]
fn captured_drops() {
    let mut fab = line(A);
    let mut fwd = Forwarder::new();
    let now = Instant::now();
    // Too short, special-looking, group source.
    for f in [
        vec![1u8; 13],
        vec![0u8; 22],
        eth(mac(2), Mac::BROADCAST, b""),
    ] {
        assert_eq!(
            fwd.handle_captured(&f, &fab, now),
            Verdict::Dropped(DropReason::Malformed)
        );
    }
    assert_eq!(
        fwd.handle_captured(&vec![2u8; 65536], &fab, now),
        Verdict::Dropped(DropReason::TooBig)
    );
    // STP: dropped, but the source is learnt first (spec order).
    let stp = eth(Mac::STP, mac(5), b"bpdu");
    assert_eq!(
        fwd.handle_captured(&stp, &fab, now),
        Verdict::Dropped(DropReason::Stp)
    );
    assert_eq!(fwd.mac_cache().lookup(mac(5)), Some(MacOwner::Local));
    // Local destination.
    let f = eth(mac(5), mac(1), b"x");
    assert_eq!(
        fwd.handle_captured(&f, &fab, now),
        Verdict::Dropped(DropReason::LocalDst)
    );
    // Source MAC bound to a remote peer.
    fwd.handle_datagram(
        &datagram(B, &[(B, A, &eth(mac(1), mac(7), b""))]),
        &fab,
        now,
        &mut |_| {},
    )
    .unwrap();
    assert_eq!(fwd.mac_cache().lookup(mac(7)), Some(MacOwner::Peer(B)));
    let f = eth(Mac::BROADCAST, mac(7), b"spoof");
    assert_eq!(
        fwd.handle_captured(&f, &fab, now),
        Verdict::Dropped(DropReason::MacConflict)
    );
    assert_eq!(fwd.mac_cache().lookup(mac(7)), Some(MacOwner::Peer(B)));
    // Known remote, no route.
    fab.unicast.clear();
    let f = eth(mac(7), mac(1), b"x");
    assert_eq!(
        fwd.handle_captured(&f, &fab, now),
        Verdict::Dropped(DropReason::NoRoute)
    );
    assert!(drain(&mut fwd).is_empty());
    let s = fwd.stats();
    assert_eq!(
        (
            s.captured,
            s.dropped_malformed,
            s.dropped_too_big,
            s.dropped_stp,
            s.dropped_local_dst,
            s.dropped_mac_conflict,
            s.dropped_no_route
        ),
        (8, 3, 1, 1, 1, 1, 1)
    );
}

#[test]
fn captured_to_direct_fastdp_peer_is_left_to_the_kernel() {
    let mut fab = line(A);
    fab.fastdp.insert(B);
    let mut fwd = Forwarder::new();
    let now = Instant::now();
    fwd.handle_datagram(
        &datagram(B, &[(B, A, &eth(Mac::BROADCAST, mac(2), b""))]),
        &fab,
        now,
        &mut |_| {},
    )
    .unwrap();
    let f = eth(mac(2), mac(1), b"x");
    assert_eq!(fwd.handle_captured(&f, &fab, now), Verdict::Fastdp);
    // C sits behind B: the kernel cannot relay, so that goes over sleeve to B.
    fwd.handle_datagram(
        &datagram(B, &[(C, A, &eth(Mac::BROADCAST, mac(3), b""))]),
        &fab,
        now,
        &mut |_| {},
    )
    .unwrap();
    let f = eth(mac(3), mac(1), b"x");
    assert_eq!(
        fwd.handle_captured(&f, &fab, now),
        Verdict::Unicast { next_hop: B }
    );
    assert_eq!(fwd.stats().fastdp, 1);
}

#[test]
fn captured_flood_copies_to_fastdp_neighbours_only_when_they_relay() {
    let mut fab = star_centre();
    fab.fastdp = [B, C].into_iter().collect();
    // B has nothing to relay for us; C does.
    fab.onward = Some([(C, A)].into_iter().collect());
    let mut fwd = Forwarder::new();
    let f = eth(Mac::BROADCAST, mac(1), b"arp");
    assert_eq!(
        fwd.handle_captured(&f, &fab, Instant::now()),
        Verdict::Flooded { copies: 2 }
    );
    let hops: Vec<_> = drain(&mut fwd).into_iter().map(|(p, _)| p).collect();
    assert_eq!(hops, vec![C, D]);
}

#[test]
fn received_for_another_peer_is_relayed_unchanged_without_learning() {
    let fab = line(B);
    let mut fwd = Forwarder::new();
    let f = eth(mac(3), mac(1), b"through");
    let (r, inj, _) = collect(&mut fwd, &datagram(A, &[(A, C, &f)]), &fab, Instant::now());
    let r = r.unwrap();
    assert_eq!((r.sender, r.records, r.relayed, r.injected), (A, 1, 1, 0));
    assert!(inj.is_empty());
    assert!(fwd.mac_cache().is_empty());
    let out = drain(&mut fwd);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].0, C);
    assert_eq!(records(&out[0].1), (B, vec![(A, C, f)]));
}

#[test]
fn received_broadcast_is_injected_and_relayed_along_source_tree() {
    let fab = line(B);
    let mut fwd = Forwarder::new();
    let f = eth(Mac::BROADCAST, mac(1), b"arp");
    let (r, inj, _) = collect(&mut fwd, &datagram(A, &[(A, B, &f)]), &fab, Instant::now());
    assert_eq!(r.unwrap().relayed, 1);
    assert_eq!(inj, vec![f.clone()]);
    assert_eq!(fwd.mac_cache().lookup(mac(1)), Some(MacOwner::Peer(A)));
    let out = drain(&mut fwd);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].0, C);
    assert_eq!(records(&out[0].1), (B, vec![(A, C, f)]));
}

#[test]
fn received_unicast_for_local_mac_is_injected_only() {
    let fab = line(B);
    let mut fwd = Forwarder::new();
    let now = Instant::now();
    fwd.handle_captured(&eth(Mac::BROADCAST, mac(2), b""), &fab, now);
    drain(&mut fwd);
    let f = eth(mac(2), mac(1), b"hi");
    let (r, inj, _) = collect(&mut fwd, &datagram(A, &[(A, B, &f)]), &fab, now);
    assert_eq!(r.unwrap().relayed, 0);
    assert_eq!(inj, vec![f]);
    assert!(drain(&mut fwd).is_empty());
    // An unknown destination MAC is flooded on along A's tree.
    let f = eth(mac(9), mac(1), b"who");
    let (r, inj, _) = collect(&mut fwd, &datagram(A, &[(A, B, &f)]), &fab, now);
    assert_eq!(r.unwrap().relayed, 1);
    assert_eq!(inj.len(), 1);
    assert_eq!(drain(&mut fwd)[0].0, C);
}

#[test]
fn broadcast_from_direct_fastdp_source_is_relayed_but_not_injected() {
    let mut fab = line(B);
    fab.fastdp.insert(A);
    let mut fwd = Forwarder::new();
    let f = eth(Mac::BROADCAST, mac(1), b"arp");
    let (r, inj, _) = collect(&mut fwd, &datagram(A, &[(A, B, &f)]), &fab, Instant::now());
    let r = r.unwrap();
    assert_eq!((r.injected, r.relayed), (0, 1));
    assert!(inj.is_empty());
    assert_eq!(fwd.stats().skipped_injection, 1);
    // Still learnt, so replies know where mac(1) is.
    assert_eq!(fwd.mac_cache().lookup(mac(1)), Some(MacOwner::Peer(A)));
    let out = drain(&mut fwd);
    assert_eq!(records(&out[0].1), (B, vec![(A, C, f.clone())]));
    // C is not A's fastdp neighbour: it injects the relayed copy.
    let fab_c = line(C);
    let mut fwd_c = Forwarder::new();
    let (_, inj, _) = collect(&mut fwd_c, &out[0].1, &fab_c, Instant::now());
    assert_eq!(inj, vec![f]);
}

#[test]
fn unknown_peers_and_loops_are_dropped() {
    let fab = line(B);
    let mut fwd = Forwarder::new();
    let f = eth(Mac::BROADCAST, mac(1), b"x");
    let d = datagram(A, &[(D, B, &f), (A, D, &f), (B, C, &f), (A, B, &f)]);
    let (r, inj, _) = collect(&mut fwd, &d, &fab, Instant::now());
    let r = r.unwrap();
    assert_eq!((r.records, r.dropped, r.injected), (4, 3, 1));
    assert_eq!(inj.len(), 1);
    let s = fwd.stats();
    assert_eq!((s.dropped_unknown_peer, s.dropped_looped), (2, 1));
    // No route to a known destination.
    let mut fab = line(B);
    fab.unicast.remove(&C);
    let (r, _, _) = collect(&mut fwd, &datagram(A, &[(A, C, &f)]), &fab, Instant::now());
    assert_eq!(r.unwrap().dropped, 1);
    assert_eq!(fwd.stats().dropped_no_route, 1);
}

#[test]
fn special_frames_go_to_the_control_plane() {
    let fab = line(B);
    let mut fwd = Forwarder::new();
    let hb = sleeve::encode_heartbeat(A, A, B, 42);
    let (r, inj, specials) = collect(&mut fwd, &hb, &fab, Instant::now());
    assert_eq!(r.unwrap().specials, 1);
    assert!(inj.is_empty());
    assert_eq!(specials.len(), 1);
    assert_eq!(specials[0].0, A);
    assert_eq!(sleeve::heartbeat_uid(&specials[0].1), Some(42));
    // A PMTU test frame (zeros of candidate + 14) is special too.
    let (_, _, specials) = collect(
        &mut fwd,
        &datagram(A, &[(A, B, &[0; 1452])]),
        &fab,
        Instant::now(),
    );
    assert_eq!(specials[0].1.len(), 1452);
    // Specials not from the sender to us are neither delivered nor forwarded.
    let d = datagram(A, &[(C, B, &[0; 22]), (A, C, &[0; 22])]);
    let (r, inj, specials) = collect(&mut fwd, &d, &fab, Instant::now());
    assert_eq!(r.unwrap().dropped, 2);
    assert!(inj.is_empty() && specials.is_empty());
    assert!(drain(&mut fwd).is_empty());
}

#[test]
fn malformed_datagrams_deliver_the_records_before_the_error() {
    let fab = line(B);
    let mut fwd = Forwarder::new();
    let now = Instant::now();
    let f = eth(Mac::BROADCAST, mac(1), b"first");
    let mut d = datagram(A, &[(A, B, &f), (A, B, &f)]);
    d.truncate(d.len() - 3);
    let (r, inj, _) = collect(&mut fwd, &d, &fab, now);
    let r = r.unwrap();
    assert_eq!(r.injected, 1);
    assert_eq!(
        r.error,
        Some(SleeveError::FrameTooShort {
            expected: f.len(),
            got: f.len() - 3
        })
    );
    assert_eq!(inj.len(), 1);
    let mut d = datagram(A, &[(A, B, &f)]);
    d.extend_from_slice(&[1, 2, 3, 4, 5]);
    let (r, inj, _) = collect(&mut fwd, &d, &fab, now);
    assert_eq!(r.unwrap().error, Some(SleeveError::TrailingGarbage(5)));
    assert_eq!(inj.len(), 1);
    // A record shorter than an Ethernet header.
    let (r, inj, _) = collect(&mut fwd, &datagram(A, &[(A, B, &[1; 13])]), &fab, now);
    assert_eq!(r.unwrap().dropped, 1);
    assert!(inj.is_empty());
    let (r, _, _) = collect(&mut fwd, &[1, 2, 3], &fab, now);
    assert_eq!(r.unwrap_err(), SleeveError::TooShort(3));
    assert_eq!(fwd.stats().dropped_malformed, 4);
}

#[test]
fn generation_moves_with_bindings_and_refresh_keeps_only_current_ones() {
    let t0 = Instant::now();
    let mut cache = MacCache::new();
    let g0 = cache.generation();
    cache.learn_local(mac(1), t0).unwrap();
    let g0b = cache.generation();
    assert_ne!(g0b, g0, "a new local binding");
    cache
        .learn_local(mac(1), t0 + Duration::from_secs(1))
        .unwrap();
    assert_eq!(cache.generation(), g0b, "a refresh is no change");
    cache.learn_remote(mac(2), B, t0);
    let g1 = cache.generation();
    assert_ne!(g1, g0b, "a new remote binding");
    cache.learn_remote(mac(2), B, t0 + Duration::from_secs(1));
    assert_eq!(cache.generation(), g1, "a refresh is no change");
    cache.learn_remote(mac(2), C, t0);
    let g2 = cache.generation();
    assert_ne!(g2, g1, "a move");

    // A refresh for the peer the MAC moved away from does nothing; for its owner it keeps the
    // binding past the expiry it would have had.
    let late = t0 + MAC_EXPIRY;
    cache.refresh_remote(mac(2), B, late);
    // (mac(1), refreshed a second later, stays.)
    assert_eq!(cache.expire(t0 + MAC_EXPIRY + Duration::from_secs(1)), 1);
    assert_eq!(cache.lookup(mac(2)), None);
    assert_ne!(cache.generation(), g2, "expiry is a change");
    cache.learn_remote(mac(3), C, t0);
    cache.refresh_remote(mac(3), C, late);
    assert_eq!(cache.expire(t0 + MAC_EXPIRY + Duration::from_secs(1)), 0);
    assert_eq!(cache.lookup(mac(3)), Some(MacOwner::Peer(C)));
}

#[test]
fn mac_learning_moves_expiry_and_forget() {
    let t0 = Instant::now();
    let mut cache = MacCache::new();
    assert_eq!(cache.learn_local(mac(1), t0), Ok(Learnt::New));
    assert_eq!(
        cache.learn_remote(mac(1), B, t0),
        Learnt::Moved(MacOwner::Local)
    );
    assert_eq!(cache.learn_remote(mac(1), B, t0), Learnt::Refreshed);
    assert_eq!(
        cache.learn_remote(mac(1), C, t0),
        Learnt::Moved(MacOwner::Peer(B))
    );
    assert_eq!(cache.learn_local(mac(1), t0), Err(C));
    assert_eq!(cache.lookup(mac(1)), Some(MacOwner::Peer(C)));

    cache.learn_local(mac(2), t0).unwrap();
    cache.learn_remote(mac(3), C, t0);
    let t1 = t0 + Duration::from_secs(5 * 60);
    cache.learn_local(mac(2), t1).unwrap();
    assert_eq!(
        cache.expire(t0 + MAC_EXPIRY),
        0,
        "exactly ten minutes is still fresh"
    );
    assert_eq!(cache.expire(t0 + MAC_EXPIRY + Duration::from_secs(1)), 2);
    assert_eq!(
        cache.lookup(mac(2)),
        Some(MacOwner::Local),
        "refreshed at t1"
    );
    assert_eq!(cache.lookup(mac(1)), None);

    cache.learn_remote(mac(4), D, t1);
    cache.learn_remote(mac(5), D, t1);
    cache.learn_remote(mac(6), B, t1);
    assert_eq!(cache.forget_peer(D), 2);
    assert_eq!(cache.len(), 2);

    // Through the forwarder: moves are counted, forget drops MACs and queued output.
    let fab = line(B);
    let mut fwd = Forwarder::new();
    let f = eth(Mac::BROADCAST, mac(7), b"");
    fwd.handle_datagram(&datagram(A, &[(A, B, &f)]), &fab, t0, &mut |_| {})
        .unwrap();
    fwd.handle_datagram(&datagram(C, &[(C, B, &f)]), &fab, t0, &mut |_| {})
        .unwrap();
    assert_eq!(fwd.stats().mac_moves, 1);
    assert_eq!(fwd.mac_cache().lookup(mac(7)), Some(MacOwner::Peer(C)));
    assert_eq!(fwd.queued_frames(A), 1);
    fwd.forget_peer(C);
    fwd.forget_peer(A);
    assert_eq!(fwd.mac_cache().lookup(mac(7)), None);
    assert_eq!(fwd.queued_frames(A), 0);
    assert_eq!(drain(&mut fwd).iter().filter(|(p, _)| *p == A).count(), 0);
    fwd.handle_datagram(&datagram(A, &[(A, B, &f)]), &fab, t0, &mut |_| {})
        .unwrap();
    assert_eq!(fwd.expire(t0 + MAC_EXPIRY + Duration::from_secs(1)), 1);
}

#[test]
fn batching_respects_max_payload_frame_cap_and_queue_cap() {
    let fab = line(A);
    let mut fwd = Forwarder::new();
    let now = Instant::now();
    let f = eth(Mac::BROADCAST, mac(1), &[7; 86]); // 100-byte frame, 114-byte record
    fwd.set_max_payload(B, 6 + 2 * 114);
    assert_eq!(fwd.max_payload(B), 234);
    for _ in 0..5 {
        fwd.handle_captured(&f, &fab, now);
    }
    let out = drain(&mut fwd);
    let sizes: Vec<_> = out.iter().map(|(_, d)| records(d).1.len()).collect();
    assert_eq!(sizes, vec![2, 2, 1]);
    assert!(out.iter().all(|(p, d)| *p == B && d.len() <= 234));

    // A frame bigger than the max payload goes alone.
    let big = eth(Mac::BROADCAST, mac(1), &[7; 500]);
    fwd.handle_captured(&f, &fab, now);
    fwd.handle_captured(&big, &fab, now);
    fwd.handle_captured(&f, &fab, now);
    let sizes: Vec<_> = drain(&mut fwd)
        .iter()
        .map(|(_, d)| records(d).1.len())
        .collect();
    assert_eq!(sizes, vec![1, 1, 1]);

    // At most 100 records per datagram at the default max payload.
    fwd.set_max_payload(B, DEFAULT_MAX_PAYLOAD);
    let small = eth(Mac::BROADCAST, mac(1), b"s");
    for _ in 0..150 {
        fwd.handle_captured(&small, &fab, now);
    }
    let sizes: Vec<_> = drain(&mut fwd)
        .iter()
        .map(|(_, d)| records(d).1.len())
        .collect();
    assert_eq!(sizes, vec![100, 50]);

    // The queue per next hop is bounded when nobody polls.
    for _ in 0..MAX_QUEUED_FRAMES + 10 {
        fwd.handle_captured(&small, &fab, now);
    }
    assert_eq!(fwd.stats().dropped_queue_full, 10);
    assert_eq!(fwd.queued_frames(B), MAX_QUEUED_FRAMES);
    let total: usize = drain(&mut fwd)
        .iter()
        .map(|(_, d)| records(d).1.len())
        .sum();
    assert_eq!(total, MAX_QUEUED_FRAMES);
    assert_eq!(fwd.queued_frames(B), 0);
}

#[test]
fn next_hops_are_served_round_robin() {
    let fab = star_centre();
    let mut fwd = Forwarder::new();
    fwd.set_max_payload(B, 1);
    fwd.set_max_payload(C, 1);
    let f = eth(Mac::BROADCAST, mac(1), b"x");
    let now = Instant::now();
    fwd.handle_captured(&f, &fab, now);
    fwd.handle_captured(&f, &fab, now);
    let order: Vec<_> = drain(&mut fwd).into_iter().map(|(p, _)| p).collect();
    assert_eq!(order, vec![B, C, D, B, C]);
}

/// An IPv4/TCP frame `dst, src` with `payload` bytes (DF set), checksums left zero.
fn tcp_frame(dst: Mac, src: Mac, payload_len: usize, df: bool) -> Vec<u8> {
    let mut ip = Vec::new();
    ip.extend_from_slice(&[0x45, 0]);
    ip.extend_from_slice(&((40 + payload_len) as u16).to_be_bytes());
    ip.extend_from_slice(&[0, 1, if df { 0x40 } else { 0 }, 0, 64, 6, 0, 0]);
    ip.extend_from_slice(&[10, 2, 1, 1, 10, 2, 1, 3]);
    ip.extend_from_slice(&[
        0x80, 0, 0x14, 0x51, 0, 0, 0, 1, 0, 0, 0, 1, 0x50, 0x10, 1, 0,
    ]);
    ip.extend_from_slice(&[0, 0, 0, 0]);
    ip.extend((0..payload_len).map(|i| i as u8));
    eth(dst, src, &ip)
}

/// Teaches `fwd` (at A on the line) that mac(3) lives at C.
fn learn_mac3_at_c(fwd: &mut Forwarder, fab: &FakeFabric, now: Instant) {
    let bc = eth(Mac::BROADCAST, mac(3), b"hello");
    let (r, _, _) = collect(fwd, &datagram(B, &[(C, A, &bc)]), fab, now);
    assert_eq!(r.unwrap().injected, 1);
}

#[test]
fn too_big_df_unicast_asks_for_fragmentation_and_broadcast_is_dropped() {
    let fab = line(A);
    let mut fwd = Forwarder::new();
    let now = Instant::now();
    learn_mac3_at_c(&mut fwd, &fab, now);
    // A 1500-byte underlay: max payload 1472, overlay MTU 1438 (spec §4.6).
    fwd.set_max_payload(B, 1472);
    let fits = tcp_frame(mac(3), mac(1), 1438 - 40, true);
    assert_eq!(
        fwd.handle_captured(&fits, &fab, now),
        Verdict::Unicast { next_hop: B }
    );
    let big = tcp_frame(mac(3), mac(1), 1438 - 39, true);
    assert_eq!(
        fwd.handle_captured(&big, &fab, now),
        Verdict::FragNeeded { mtu: 1438 }
    );
    // Without DF the kernel fragments: queued as one record.
    let big_no_df = tcp_frame(mac(3), mac(1), 3000, false);
    assert_eq!(
        fwd.handle_captured(&big_no_df, &fab, now),
        Verdict::Unicast { next_hop: B }
    );
    let flood = tcp_frame(mac(9), mac(1), 3000, true);
    assert_eq!(
        fwd.handle_captured(&flood, &fab, now),
        Verdict::Flooded { copies: 0 }
    );
    assert_eq!(fwd.stats().frag_needed, 1);
    assert_eq!(fwd.stats().dropped_too_big, 1);
    let out = drain(&mut fwd);
    assert_eq!(out.len(), 2);
    assert_eq!(records(&out[0].1).1[0].2, fits);
    assert_eq!(records(&out[1].1).1[0].2, big_no_df);
}

fn gso(mss: u16) -> offload::VnetHdr {
    offload::VnetHdr {
        flags: offload::VNET_F_NEEDS_CSUM,
        gso_type: offload::GSO_TCPV4,
        hdr_len: 54,
        gso_size: mss,
        csum_start: 34,
        csum_offset: 16,
    }
}

#[test]
fn super_packet_is_segmented_into_one_datagram_per_segment() {
    let fab = line(A);
    let mut fwd = Forwarder::new();
    let now = Instant::now();
    learn_mac3_at_c(&mut fwd, &fab, now);
    fwd.set_max_payload(B, 1472);
    let sp = tcp_frame(mac(3), mac(1), 5000, true);
    let (mut batch, mut scratch) = (SegmentBatch::new(), Vec::new());

    // Segments of 1398 bytes of payload fit 1438 exactly.
    let tso = offload::Tso::new(&sp, &gso(1398)).unwrap();
    let v = fwd.handle_captured_tso(&tso, &fab, now, &mut batch, &mut scratch);
    assert_eq!(v, Verdict::Unicast { next_hop: B });
    assert_eq!((batch.peer(), batch.len()), (Some(B), 4));
    assert_eq!(batch.datagram_len(), 6 + 14 + 14 + 1438);
    let mut payload = Vec::new();
    for d in batch.datagrams() {
        let (sender, recs) = records(d);
        assert_eq!((sender, recs.len()), (A, 1));
        let (src, dst, frame) = &recs[0];
        assert_eq!((*src, *dst), (A, C));
        assert_eq!(frame[..14], sp[..14]);
        payload.extend_from_slice(&frame[54..]);
    }
    assert_eq!(payload, sp[54..]);
    assert!(drain(&mut fwd).is_empty());

    // One byte more per segment does not fit: fragmentation needed, nothing sent.
    let tso = offload::Tso::new(&sp, &gso(1399)).unwrap();
    let v = fwd.handle_captured_tso(&tso, &fab, now, &mut batch, &mut scratch);
    assert_eq!(v, Verdict::FragNeeded { mtu: 1438 });
    assert!(batch.is_empty());

    // A flood takes the queue, one record per segment.
    let sp = tcp_frame(mac(9), mac(1), 3000, true);
    let tso = offload::Tso::new(&sp, &gso(1000)).unwrap();
    let v = fwd.handle_captured_tso(&tso, &fab, now, &mut batch, &mut scratch);
    assert_eq!(v, Verdict::Flooded { copies: 1 });
    assert!(batch.is_empty());
    let out = drain(&mut fwd);
    let n: usize = out.iter().map(|(_, d)| records(d).1.len()).sum();
    assert_eq!(n, 3);
}

proptest! {
    #[test]
    fn arbitrary_input_never_panics(
        bytes in prop::collection::vec(any::<u8>(), 0..256),
        sender in 0usize..4,
    ) {
        let fab = star_centre();
        let mut fwd = Forwarder::new();
        let now = Instant::now();
        let _ = fwd.handle_captured(&bytes, &fab, now);
        let mut d = [A, B, C, D][sender].to_bytes().to_vec();
        d.extend_from_slice(&bytes);
        let _ = fwd.handle_datagram(&bytes, &fab, now, &mut |_| {});
        let _ = fwd.handle_datagram(&d, &fab, now, &mut |_| {});
        let mut out = Vec::new();
        while fwd.poll_datagram(&mut out).is_some() {
            let (_, iter) = sleeve::parse(&out).unwrap();
            for r in iter {
                prop_assert!(r.is_ok());
            }
        }
    }

    #[test]
    fn well_formed_records_never_panic_and_output_parses(
        recs in prop::collection::vec(
            (0usize..5, 0usize..5, prop::collection::vec(any::<u8>(), 0..64)),
            0..8,
        ),
        sender in 0usize..5,
    ) {
        let names = [A, B, C, D, PeerName(0x77)];
        let fab = star_centre();
        let mut fwd = Forwarder::new();
        let mut d = names[sender].to_bytes().to_vec();
        for (s, t, data) in &recs {
            sleeve::encode_frame(names[*s], names[*t], data, &mut d).unwrap();
        }
        let mut n = 0;
        let r = fwd.handle_datagram(&d, &fab, Instant::now(), &mut |_| n += 1).unwrap();
        prop_assert_eq!(r.records, recs.len());
        prop_assert!(r.error.is_none());
        prop_assert_eq!(r.injected + r.specials, n);
        let mut out = Vec::new();
        while let Some(hop) = fwd.poll_datagram(&mut out) {
            prop_assert!(hop != A);
            let (s, iter) = sleeve::parse(&out).unwrap();
            prop_assert_eq!(s, A);
            prop_assert!(iter.count() > 0);
        }
    }
}

#[test]
fn mac_cache_is_bounded_per_peer_and_in_total_and_refuses_rather_than_evicts() {
    let t0 = Instant::now();
    let mut cache = MacCache::with_limits(3, 6);
    for n in 1..=3 {
        assert_eq!(cache.learn_remote(mac(n), B, t0), Learnt::New);
    }
    assert_eq!(
        cache.learn_remote(mac(4), B, t0),
        Learnt::Refused(CacheFull::Peer)
    );
    assert_eq!(cache.lookup(mac(4)), None, "a refused MAC stays unknown");
    assert_eq!(
        cache.lookup(mac(1)),
        Some(MacOwner::Peer(B)),
        "nothing evicted"
    );
    assert_eq!(cache.learn_remote(mac(1), B, t0), Learnt::Refreshed);
    assert_eq!(cache.peer_len(B), 3);

    // Another peer has its own share; local MACs count towards the total only.
    assert_eq!(cache.learn_remote(mac(11), C, t0), Learnt::New);
    assert_eq!(cache.learn_local(mac(21), t0), Ok(Learnt::New));
    assert_eq!(cache.learn_local(mac(22), t0), Ok(Learnt::New));
    assert_eq!(cache.len(), 6);
    assert_eq!(
        cache.learn_remote(mac(12), C, t0),
        Learnt::Refused(CacheFull::Total)
    );
    assert_eq!(
        cache.learn_local(mac(23), t0),
        Ok(Learnt::Refused(CacheFull::Total))
    );
    assert_eq!(cache.learn_local(mac(21), t0), Ok(Learnt::Refreshed));

    // A move within the bounds frees the old owner's share ...
    assert_eq!(
        cache.learn_remote(mac(11), D, t0),
        Learnt::Moved(MacOwner::Peer(C))
    );
    assert_eq!((cache.peer_len(C), cache.peer_len(D)), (0, 1));
    // ... and one to a full peer forgets the stale binding.
    assert_eq!(
        cache.learn_remote(mac(21), B, t0),
        Learnt::Refused(CacheFull::Peer)
    );
    assert_eq!(cache.lookup(mac(21)), None);
    assert_eq!(cache.len(), 5);

    // Expiry and forgetting give the room back.
    assert_eq!(cache.forget_peer(B), 3);
    assert_eq!(cache.peer_len(B), 0);
    for n in 4..=6 {
        assert_eq!(cache.learn_remote(mac(n), B, t0), Learnt::New);
    }
    let late = t0 + MAC_EXPIRY + Duration::from_secs(1);
    cache.learn_local(mac(22), late).unwrap();
    assert_eq!(cache.expire(late), 4);
    assert_eq!(
        (cache.len(), cache.peer_len(B), cache.peer_len(D)),
        (1, 0, 0)
    );
    assert_eq!(cache.learn_remote(mac(7), B, late), Learnt::New);
}

#[test]
fn mac_changes_are_noted_once_each_and_overflow_asks_for_a_full_compare() {
    let t0 = Instant::now();
    let mut cache = MacCache::with_limits(8, 8);
    let mut got = std::collections::HashSet::new();
    assert!(cache.take_changes(&mut got));
    assert!(got.is_empty());
    cache.learn_local(mac(1), t0).unwrap();
    cache.learn_remote(mac(2), B, t0);
    cache.learn_remote(mac(2), B, t0);
    cache.learn_remote(mac(3), B, t0);
    cache.learn_remote(mac(3), C, t0);
    assert!(cache.take_changes(&mut got));
    assert_eq!(got, [mac(1), mac(2), mac(3)].into());
    cache.learn_remote(mac(2), B, t0);
    assert!(cache.take_changes(&mut got));
    assert!(got.is_empty(), "a refresh is no change");
    assert_eq!(cache.forget_peer(C), 1);
    assert!(cache.take_changes(&mut got));
    assert_eq!(got, [mac(3)].into());
    // More changes than the cache holds, unread: they are not kept one by one.
    for n in 10..30 {
        cache.learn_remote(mac(n), B, t0);
        cache.forget_peer(B);
    }
    assert!(!cache.take_changes(&mut got));
    assert!(got.len() <= 8);
    cache.learn_remote(mac(40), B, t0);
    assert!(cache.take_changes(&mut got), "noted one by one again");
    assert_eq!(got, [mac(40)].into());
}

#[test]
fn forwarder_past_the_mac_bound_delivers_without_learning_and_counts() {
    let fab = line(B);
    let now = Instant::now();
    let mut fwd = Forwarder::new();
    // A local destination, so that nothing is relayed.
    fwd.handle_captured(&eth(Mac::BROADCAST, mac(1), b""), &fab, now);
    drain(&mut fwd);
    let extra = 10;
    let mut injected = 0;
    for n in 0..MAX_MACS_PER_PEER + extra {
        let src = Mac([0x02, 0xa0, 0, 0, (n >> 8) as u8, n as u8]);
        let f = eth(mac(1), src, b"x");
        let r = fwd
            .handle_datagram(&datagram(A, &[(A, B, &f)]), &fab, now, &mut |d| {
                injected += usize::from(matches!(d, Delivery::Inject(_)));
            })
            .unwrap();
        assert_eq!((r.injected, r.dropped, r.relayed), (1, 0, 0));
    }
    assert_eq!(injected, MAX_MACS_PER_PEER + extra);
    assert_eq!(fwd.mac_cache().peer_len(A), MAX_MACS_PER_PEER);
    assert_eq!(fwd.stats().macs_not_learnt, extra as u64);
    assert_eq!(
        fwd.mac_cache().lookup(Mac([0x02, 0xa0, 0, 0, 0, 0])),
        Some(MacOwner::Peer(A)),
        "the first MACs stay"
    );
    let last = MAX_MACS_PER_PEER + extra - 1;
    let last = Mac([0x02, 0xa0, 0, 0, (last >> 8) as u8, last as u8]);
    assert_eq!(fwd.mac_cache().lookup(last), None);
    // Another peer still learns; a captured frame from a new local MAC past the total bound
    // is still forwarded.
    let f = eth(mac(1), mac(3), b"x");
    fwd.handle_datagram(&datagram(C, &[(C, B, &f)]), &fab, now, &mut |_| {})
        .unwrap();
    assert_eq!(fwd.mac_cache().lookup(mac(3)), Some(MacOwner::Peer(C)));

    let mut small = Forwarder::with_mac_cache(MacCache::with_limits(4, 2));
    let fab = line(A);
    for n in [1, 2, 3] {
        let v = small.handle_captured(&eth(Mac::BROADCAST, mac(n), b""), &fab, now);
        assert_eq!(v, Verdict::Flooded { copies: 1 });
    }
    assert_eq!(small.mac_cache().lookup(mac(3)), None);
    assert_eq!(small.stats().macs_not_learnt, 1);
}

#[test]
fn data_from_another_address_than_the_connections_is_dropped_but_specials_pass() {
    let fab = line(B);
    let now = Instant::now();
    let right: std::net::SocketAddr = "192.0.2.1:6783".parse().unwrap();
    let mapped: std::net::SocketAddr = "[::ffff:192.0.2.1]:6783".parse().unwrap();
    let other_port: std::net::SocketAddr = "192.0.2.1:40000".parse().unwrap();
    let other_host: std::net::SocketAddr = "192.0.2.9:6783".parse().unwrap();
    let mut fwd = Forwarder::new();
    let f = eth(Mac::BROADCAST, mac(5), b"x");
    let d = datagram(A, &[(A, B, &f), (A, C, &f)]);
    let run = |fwd: &mut Forwarder, d: &[u8], from, expected| {
        let (mut inj, mut specials) = (0, 0);
        let r = fwd
            .handle_datagram_from(d, from, expected, &fab, now, &mut |dl| match dl {
                Delivery::Inject(_) => inj += 1,
                Delivery::Special { .. } => specials += 1,
            })
            .unwrap();
        (r, inj, specials)
    };
    for wrong in [other_port, other_host] {
        let (r, inj, _) = run(&mut fwd, &d, wrong, Some(right));
        assert_eq!((r.dropped, r.relayed, inj), (2, 0, 0));
        assert_eq!(fwd.mac_cache().lookup(mac(5)), None, "nothing learnt");
    }
    assert_eq!(fwd.stats().dropped_wrong_source, 4);
    assert!(drain(&mut fwd).is_empty(), "nothing relayed");

    // Heartbeats go to the control plane from anywhere: they check the connection's uid, and
    // are how an inbound connection learns its peer's address.
    let hb = sleeve::encode_heartbeat(A, A, B, 42);
    for (from, expected) in [(other_port, Some(right)), (other_host, None)] {
        let (r, inj, specials) = run(&mut fwd, &hb, from, expected);
        assert_eq!((r.specials, r.dropped, inj, specials), (1, 0, 0, 1));
    }

    // From the connection's address (however spelt), or before that address is known, data
    // is handled as usual.
    for (from, expected) in [
        (right, Some(right)),
        (mapped, Some(right)),
        (other_host, None),
    ] {
        let (r, inj, _) = run(&mut fwd, &d, from, expected);
        assert_eq!((r.dropped, r.injected, inj), (0, 1, 1));
    }
    assert_eq!(fwd.mac_cache().lookup(mac(5)), Some(MacOwner::Peer(A)));
    assert_eq!(fwd.stats().dropped_wrong_source, 4);
}
