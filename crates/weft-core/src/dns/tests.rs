//! Tests of the DNS zone rules, the gossip channel and the responder, against Weave Net's
//! behaviour (spec §5).

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{Name, RData, RecordType};
use proptest::prelude::*;
use rand::rngs::StdRng;
use rand::SeedableRng;
use weft_wire::dns::{Entry, GossipData, GossipError, HostnameError, CHANNEL};
use weft_wire::PeerName;

use super::channel::{self, ReceiveError};
use super::zone::{Zone, ZoneConfig, ZoneError, TOMBSTONE_TIMEOUT};
use super::{relay_upstream, server_failure, Action, Responder, Transport};
use crate::mesh::ChannelMessage;
use crate::mesh::{ChannelSend, SendTo};

const US: PeerName = PeerName(0x0a00_0000_0001);
const B: PeerName = PeerName(0x0b00_0000_0002);
const C: PeerName = PeerName(0x0c00_0000_0003);
const NOW: i64 = 1_700_000_000;

fn ip(d: u8) -> Ipv4Addr {
    Ipv4Addr::new(10, 32, 0, d)
}

fn zone() -> Zone {
    let mut z = Zone::new(ZoneConfig::new(US));
    z.set_known_peers(BTreeSet::from([B, C]));
    z
}

fn entry(origin: PeerName, host: &str, container: &str, addr: Ipv4Addr) -> Entry {
    Entry {
        container_id: container.into(),
        origin,
        addr,
        hostname: host.into(),
        version: 0,
        tombstone: 0,
    }
}

fn data(entries: Vec<Entry>) -> GossipData {
    GossipData {
        timestamp: NOW,
        entries,
    }
}

fn find(z: &Zone, e: &Entry) -> Option<Entry> {
    z.entries().find(|x| {
        x.hostname == e.hostname
            && x.origin == e.origin
            && x.container_id == e.container_id
            && x.addr == e.addr
    })
}

// ---- zone ----

#[test]
fn add_starts_at_version_zero_and_revives_tombstones() {
    let mut z = zone();
    let sent = z.add("web.weave.local", "c1", ip(1), NOW).unwrap();
    let e = entry(US, "web.weave.local.", "c1", ip(1));
    assert_eq!(sent, data(vec![e.clone()]));
    // Adding it again changes nothing (and is broadcast again).
    assert_eq!(
        z.add("web.weave.local.", "c1", ip(1), NOW + 1)
            .unwrap()
            .entries,
        vec![e.clone()]
    );
    assert_eq!(z.len(), 1);
    let t = z.tombstone(Some("c1"), None, None, NOW + 2).unwrap();
    assert_eq!(t.entries[0].version, 1);
    assert_eq!(t.entries[0].tombstone, NOW + 2);
    assert!(z.lookup("web.weave.local.").is_empty());
    let revived = z.add("web.weave.local.", "c1", ip(1), NOW + 3).unwrap();
    assert_eq!(revived.entries[0].version, 2);
    assert_eq!(revived.entries[0].tombstone, 0);
    assert_eq!(z.lookup("WEB.weave.local."), vec![ip(1)]);
}

#[test]
fn names_outside_the_domain_or_invalid_are_refused() {
    let mut z = zone();
    let err = z.add("web.other", "c1", ip(1), NOW).unwrap_err();
    assert_eq!(
        err.to_string(),
        "Ignoring registration web.other. 10.32.0.1 c1 (not a subdomain of weave.local.)"
    );
    assert!(matches!(
        z.add("web", "c1", ip(1), NOW),
        Err(ZoneError::NotInDomain { .. })
    ));
    assert!(matches!(
        z.add("xweave.local.", "c1", ip(1), NOW),
        Err(ZoneError::NotInDomain { .. })
    ));
    assert!(matches!(
        z.add("a b.weave.local.", "c1", ip(1), NOW),
        Err(ZoneError::BadHostname {
            reason: HostnameError::BadChar(b' '),
            ..
        })
    ));
    let long = format!("{}.weave.local.", "x".repeat(64));
    assert!(matches!(
        z.add(&long, "c1", ip(1), NOW),
        Err(ZoneError::BadHostname {
            reason: HostnameError::BadLabel(64),
            ..
        })
    ));
    assert!(z.is_empty());
    // The domain itself is inside it, in any case.
    z.add("Weave.Local.", "c1", ip(1), NOW).unwrap();
    assert_eq!(z.lookup("weave.local."), vec![ip(1)]);
}

#[test]
fn tombstones_match_wildcards_our_origin_only_and_exact_case() {
    let mut z = zone();
    z.add("a.weave.local.", "c1", ip(1), NOW).unwrap();
    z.add("a.weave.local.", "c1", ip(2), NOW).unwrap();
    z.add("b.weave.local.", "c2", ip(3), NOW).unwrap();
    let theirs = entry(B, "a.weave.local.", "c1", ip(1));
    z.receive(data(vec![theirs.clone()]), NOW).unwrap();
    // Hostname compared exactly.
    assert_eq!(z.tombstone(None, None, Some("A.weave.local."), NOW), None);
    // Made fully qualified first.
    let t = z
        .tombstone(Some("c2"), None, Some("b.weave.local"), NOW)
        .unwrap();
    assert_eq!(t.entries[0].hostname, "b.weave.local.");
    z.add("b.weave.local.", "c2", ip(3), NOW).unwrap();
    // By container and address: one of ours.
    let t = z.tombstone(Some("c1"), Some(ip(2)), None, NOW).unwrap();
    assert_eq!(t.entries.len(), 1);
    assert_eq!(t.entries[0].addr, ip(2));
    // Everything: our two live ones; B's is untouched.
    let t = z.tombstone(None, None, None, NOW + 5).unwrap();
    let addrs: BTreeSet<_> = t.entries.iter().map(|e| e.addr).collect();
    assert_eq!(addrs, BTreeSet::from([ip(1), ip(3)]));
    assert_eq!(find(&z, &theirs).unwrap().tombstone, 0);
    assert_eq!(z.lookup("a.weave.local."), vec![ip(1)]);
    assert_eq!(z.tombstone(None, None, None, NOW + 6), None);
    // A dead container's entries.
    z.add("d.weave.local.", "c9", ip(9), NOW).unwrap();
    let t = z.tombstone_container("c9", NOW + 7).unwrap();
    assert_eq!(t.entries.len(), 1);
    assert_eq!(z.tombstone_container("c9", NOW + 8), None);
}

#[test]
fn a_departed_peer_loses_all_its_entries() {
    let mut z = zone();
    z.add("a.weave.local.", "c1", ip(1), NOW).unwrap();
    let mut dead = entry(B, "b.weave.local.", "c2", ip(2));
    dead.tombstone = NOW;
    dead.version = 1;
    z.receive(
        data(vec![
            entry(B, "a.weave.local.", "c1", ip(5)),
            dead,
            entry(C, "c.weave.local.", "c", ip(3)),
        ]),
        NOW,
    )
    .unwrap();
    assert_eq!(z.peer_gone(B), 2);
    assert_eq!(z.len(), 2);
    assert!(z.entries().all(|e| e.origin != B));
}

#[test]
fn clock_skew_beyond_900s_is_refused_with_weaves_text() {
    let mut z = zone();
    let e = entry(B, "a.weave.local.", "c1", ip(1));
    for (ts, skew) in [(NOW + 901, 901), (NOW - 901, -901)] {
        let d = GossipData {
            timestamp: ts,
            entries: vec![e.clone()],
        };
        let err = z.receive(d, NOW).unwrap_err();
        assert_eq!(err, ZoneError::ClockSkew { skew });
        assert_eq!(
            err.to_string(),
            format!("host clock skew of {skew}s exceeds 900s limit")
        );
        assert!(z.is_empty());
    }
    let d = GossipData {
        timestamp: NOW + 900,
        entries: vec![e],
    };
    assert_eq!(z.receive(d, NOW).unwrap().new.len(), 1);
    let far = GossipData {
        timestamp: i64::MIN,
        entries: vec![],
    };
    assert!(matches!(
        z.receive(far, NOW),
        Err(ZoneError::ClockSkew { .. })
    ));
}

#[test]
fn entries_of_unknown_origins_are_dropped() {
    let mut z = zone();
    let stranger = entry(PeerName(0x0d00_0000_0004), "x.weave.local.", "c", ip(4));
    let known = entry(C, "y.weave.local.", "c", ip(5));
    let r = z
        .receive(data(vec![stranger.clone(), known.clone()]), NOW)
        .unwrap();
    assert_eq!(r.new, vec![known.clone()]);
    assert_eq!(r.accepted, vec![known]);
    assert_eq!(find(&z, &stranger), None);
}

#[test]
fn entries_claiming_our_origin_are_corrected() {
    let mut z = zone();
    z.add("a.weave.local.", "c1", ip(1), NOW).unwrap();
    // One we never had (we restarted): tombstoned at their version + 1.
    let ghost = Entry {
        version: 4,
        ..entry(US, "ghost.weave.local.", "old", ip(7))
    };
    let r = z.receive(data(vec![ghost.clone()]), NOW + 10).unwrap();
    let fixed = Entry {
        version: 5,
        tombstone: NOW + 10,
        ..ghost.clone()
    };
    assert_eq!(r.overridden, vec![fixed.clone()]);
    assert_eq!(find(&z, &ghost), Some(fixed));
    assert!(z.lookup("ghost.weave.local.").is_empty());
    // A newer copy of a live one of ours, tombstoned: ours (live) at their version + 1.
    let stale = Entry {
        version: 3,
        tombstone: NOW,
        ..entry(US, "a.weave.local.", "c1", ip(1))
    };
    let r = z.receive(data(vec![stale.clone()]), NOW + 11).unwrap();
    let ours = Entry {
        version: 4,
        tombstone: 0,
        ..stale.clone()
    };
    assert_eq!(r.overridden, vec![ours.clone()]);
    assert_eq!(find(&z, &stale), Some(ours.clone()));
    // Same version, other tombstone: corrected again.
    let same = Entry {
        tombstone: NOW + 1,
        ..ours.clone()
    };
    let r = z.receive(data(vec![same]), NOW + 12).unwrap();
    assert_eq!(r.overridden[0].version, 5);
    assert_eq!(r.overridden[0].tombstone, 0);
    // An older copy: nothing to correct, nothing new.
    let r = z.receive(data(vec![ours]), NOW + 13).unwrap();
    assert_eq!(
        r,
        super::Received {
            accepted: r.accepted.clone(),
            ..Default::default()
        }
    );
    assert_eq!(z.lookup("a.weave.local."), vec![ip(1)]);
}

#[test]
fn merge_takes_higher_versions_then_later_tombstones() {
    let mut z = zone();
    let e = entry(B, "a.weave.local.", "c1", ip(1));
    assert_eq!(
        z.receive(data(vec![e.clone()]), NOW).unwrap().new,
        vec![e.clone()]
    );
    // The same again: nothing new.
    assert!(z
        .receive(data(vec![e.clone()]), NOW)
        .unwrap()
        .new
        .is_empty());
    let dead = Entry {
        version: 1,
        tombstone: NOW,
        ..e.clone()
    };
    assert_eq!(
        z.receive(data(vec![dead.clone()]), NOW).unwrap().new,
        vec![dead.clone()]
    );
    // Lower version: ignored.
    assert!(z
        .receive(data(vec![e.clone()]), NOW)
        .unwrap()
        .new
        .is_empty());
    assert_eq!(find(&z, &e), Some(dead.clone()));
    // Equal version, later tombstone wins; earlier loses.
    let later = Entry {
        tombstone: NOW + 5,
        ..dead.clone()
    };
    assert_eq!(
        z.receive(data(vec![later.clone()]), NOW).unwrap().new,
        vec![later.clone()]
    );
    assert!(z.receive(data(vec![dead]), NOW).unwrap().new.is_empty());
    assert_eq!(find(&z, &e), Some(later));
    // Revived at a higher version.
    let live = Entry {
        version: 2,
        ..e.clone()
    };
    z.receive(data(vec![live]), NOW).unwrap();
    assert_eq!(z.lookup("A.WEAVE.LOCAL."), vec![ip(1)]);
}

#[test]
fn tombstones_are_purged_30_minutes_after_creation() {
    let mut z = zone();
    z.add("a.weave.local.", "c1", ip(1), NOW).unwrap();
    z.add("b.weave.local.", "c2", ip(2), NOW).unwrap();
    assert_eq!(z.next_purge(), None);
    z.tombstone_container("c1", NOW + 100).unwrap();
    assert_eq!(z.next_purge(), Some(NOW + 100 + TOMBSTONE_TIMEOUT + 1));
    assert_eq!(z.purge_tombstones(NOW + 100 + TOMBSTONE_TIMEOUT), 0);
    assert_eq!(z.purge_tombstones(NOW + 101 + TOMBSTONE_TIMEOUT), 1);
    assert_eq!(z.len(), 1);
    assert_eq!(z.purge_tombstones(i64::MAX), 0, "live entries stay");
}

#[test]
fn lookups_are_case_insensitive_and_see_live_entries_only() {
    let mut z = zone();
    z.add("Web.weave.local.", "c1", ip(1), NOW).unwrap();
    z.add("web.weave.local.", "c2", ip(2), NOW).unwrap();
    z.add("web.weave.local.", "c3", ip(2), NOW).unwrap();
    z.add("webx.weave.local.", "c4", ip(4), NOW).unwrap();
    z.add("dead.weave.local.", "c5", ip(5), NOW).unwrap();
    z.tombstone_container("c5", NOW);
    assert_eq!(z.lookup("WEB.WEAVE.LOCAL."), vec![ip(1), ip(2), ip(2)]);
    assert!(z.lookup("dead.weave.local.").is_empty());
    assert!(z.lookup("we.weave.local.").is_empty());
    // Reverse: the first live entry in storage order.
    assert_eq!(z.reverse_lookup(ip(2)), Some("web.weave.local."));
    assert_eq!(z.reverse_lookup(ip(5)), None);
    z.receive(data(vec![entry(B, "aaa.weave.local.", "x", ip(2))]), NOW)
        .unwrap();
    assert_eq!(z.reverse_lookup(ip(2)), Some("aaa.weave.local."));
}

#[test]
fn the_zone_cap_refuses_whole_messages_and_local_adds() {
    let mut z = Zone::new(ZoneConfig {
        max_entries: 3,
        reserved_for_us: 0,
        ..ZoneConfig::new(US)
    });
    z.set_known_peers(BTreeSet::from([B]));
    z.add("a.weave.local.", "c1", ip(1), NOW).unwrap();
    let many: Vec<Entry> = (10..13)
        .map(|d| entry(B, "b.weave.local.", "c", ip(d)))
        .collect();
    assert_eq!(
        z.receive(data(many.clone()), NOW),
        Err(ZoneError::Full {
            have: 1,
            adding: 3,
            max: 3
        })
    );
    assert_eq!(z.len(), 1);
    z.receive(data(many[..2].to_vec()), NOW).unwrap();
    assert!(matches!(
        z.add("c.weave.local.", "c", ip(3), NOW),
        Err(ZoneError::Full { .. })
    ));
    // Known entries still merge when full.
    let dead = Entry {
        version: 1,
        tombstone: NOW,
        ..many[0].clone()
    };
    assert_eq!(z.receive(data(vec![dead]), NOW).unwrap().new.len(), 1);
}

#[test]
fn one_peer_cannot_take_the_zone_and_our_room_is_kept() {
    let mut z = Zone::new(ZoneConfig {
        max_entries: 10,
        max_per_peer: 4,
        reserved_for_us: 3,
        ..ZoneConfig::new(US)
    });
    z.set_known_peers(BTreeSet::from([B, C]));
    let of = |p, n: u8| -> Vec<Entry> {
        (0..n)
            .map(|d| entry(p, "b.weave.local.", "c", ip(d + 10)))
            .collect()
    };
    assert_eq!(
        z.receive(data(of(B, 5)), NOW),
        Err(ZoneError::PeerFull {
            peer: B,
            have: 0,
            adding: 5,
            max: 4
        })
    );
    assert!(z.is_empty());
    z.receive(data(of(B, 4)), NOW).unwrap();
    // C may have 4 too, but others together stop at 10 - 3.
    assert!(matches!(
        z.receive(data(of(C, 4)), NOW),
        Err(ZoneError::Full { max: 7, .. })
    ));
    z.receive(data(of(C, 3)), NOW).unwrap();
    // Our own registrations still fit.
    for d in 1..=3 {
        z.add("us.weave.local.", "c", ip(d), NOW).unwrap();
    }
    assert!(matches!(
        z.add("us.weave.local.", "c", ip(4), NOW),
        Err(ZoneError::Full { .. })
    ));
    // B leaves: its room is free again, and the index forgets its addresses.
    assert_eq!(z.reverse_lookup(ip(10)), Some("b.weave.local."));
    assert_eq!(z.peer_gone(B), 4);
    assert_eq!(z.reverse_lookup(ip(13)), None);
    assert_eq!(z.reverse_lookup(ip(12)), Some("b.weave.local."));
    z.receive(data(of(B, 1)), NOW).unwrap();
}

fn arb_entry() -> impl Strategy<Value = Entry> {
    (
        prop::sample::select(vec![B, C]),
        prop::sample::select(vec!["a.weave.local.", "A.weave.local.", "b.weave.local."]),
        prop::sample::select(vec!["c1", "c2"]),
        1u8..4,
        0i64..4,
        prop::sample::select(vec![0i64, NOW, NOW + 3]),
    )
        .prop_map(|(origin, host, c, d, version, tombstone)| Entry {
            version,
            tombstone,
            ..entry(origin, host, c, ip(d))
        })
}

proptest! {
    /// Any order of the same messages gives the same zone.
    #[test]
    fn merges_converge_in_any_order(
        msgs in prop::collection::vec(prop::collection::vec(arb_entry(), 0..6), 1..6)
            .prop_flat_map(|m| (Just(m.clone()), Just(m).prop_shuffle()))
    ) {
        let (msgs, shuffled) = msgs;
        let mut a = zone();
        let mut b = zone();
        for m in &msgs {
            a.receive(data(m.clone()), NOW).unwrap();
        }
        for m in &shuffled {
            b.receive(data(m.clone()), NOW).unwrap();
        }
        // And each message's entries one by one, backwards.
        let mut c = zone();
        for e in msgs.iter().flatten().rev() {
            c.receive(data(vec![e.clone()]), NOW).unwrap();
        }
        let ea: Vec<_> = a.entries().collect();
        prop_assert_eq!(&ea, &b.entries().collect::<Vec<_>>());
        prop_assert_eq!(&ea, &c.entries().collect::<Vec<_>>());
        // Gossip of the merged state to a fresh zone reproduces it.
        let mut d = zone();
        let payload = channel::periodic_gossip(&a, NOW);
        channel::handle_message(&mut d, ChannelMessage::Gossip { src: B, payload }, NOW).unwrap();
        prop_assert_eq!(&ea, &d.entries().collect::<Vec<_>>());
    }
}

#[derive(Debug, Clone)]
enum Op {
    Receive(Vec<Entry>),
    Add(u8),
    Tombstone(u8),
    PeerGone(bool),
    Purge,
}

fn arb_op() -> impl Strategy<Value = Op> {
    prop_oneof![
        prop::collection::vec(arb_entry(), 0..4).prop_map(Op::Receive),
        (1u8..4).prop_map(Op::Add),
        (1u8..4).prop_map(Op::Tombstone),
        any::<bool>().prop_map(Op::PeerGone),
        Just(Op::Purge),
    ]
}

proptest! {
    /// Whatever happens to the zone, a reverse lookup through the address index finds what a
    /// walk of the whole zone finds: the first live entry in storage order.
    #[test]
    fn the_address_index_stays_in_step(ops in prop::collection::vec(arb_op(), 1..30)) {
        let mut z = zone();
        let mut now = NOW;
        for op in ops {
            now += 600;
            match op {
                Op::Receive(es) => {
                    let es = es.into_iter().map(|e| Entry { tombstone: if e.tombstone > 0 { now } else { 0 }, ..e }).collect();
                    let _ = z.receive(GossipData { timestamp: now, entries: es }, now);
                }
                Op::Add(d) => { let _ = z.add("a.weave.local.", "c1", ip(d), now); }
                Op::Tombstone(d) => { let _ = z.tombstone(None, Some(ip(d)), None, now); }
                Op::PeerGone(b) => { z.peer_gone(if b { B } else { C }); }
                Op::Purge => { z.purge_tombstones(now); }
            }
            z.set_known_peers(BTreeSet::from([B, C]));
            for d in 0..8 {
                let walk = z.entries().find(|e| e.tombstone == 0 && e.addr == ip(d)).map(|e| e.hostname);
                prop_assert_eq!(z.reverse_lookup(ip(d)).map(str::to_string), walk);
            }
        }
    }
}

// ---- channel ----

#[test]
fn gossip_relays_only_what_is_new_and_broadcasts_are_not_relayed() {
    assert_eq!(CHANNEL, "nameserver");
    assert!(channel::is_dns_channel("nameserver") && !channel::is_dns_channel("IPallocation"));
    let mut z = zone();
    let known = entry(B, "a.weave.local.", "c1", ip(1));
    let payload = data(vec![known.clone()]).encode();
    let sends = channel::handle_message(
        &mut z,
        ChannelMessage::Gossip {
            src: B,
            payload: payload.clone(),
        },
        NOW,
    )
    .unwrap();
    let [ChannelSend {
        to: SendTo::Neighbours,
        payload: relay,
        ..
    }] = &sends[..]
    else {
        panic!("{sends:?}");
    };
    assert_eq!(GossipData::decode(relay).unwrap().entries, vec![known]);
    // The same again: nothing new, nothing to relay.
    let again = ChannelMessage::Gossip { src: B, payload };
    assert!(channel::handle_message(&mut z, again, NOW)
        .unwrap()
        .is_empty());
    // A broadcast merges; the mesh relayed it already.
    let other = entry(C, "b.weave.local.", "c2", ip(2));
    let b = ChannelMessage::Broadcast {
        src: C,
        payload: data(vec![other]).encode(),
    };
    assert!(channel::handle_message(&mut z, b, NOW).unwrap().is_empty());
    assert_eq!(z.lookup("b.weave.local."), vec![ip(2)]);
    // A claim on our origin is corrected by a broadcast.
    let ghost = entry(US, "g.weave.local.", "c", ip(3));
    let b = ChannelMessage::Broadcast {
        src: B,
        payload: data(vec![ghost]).encode(),
    };
    let sends = channel::handle_message(&mut z, b, NOW).unwrap();
    let [ChannelSend {
        to: SendTo::Broadcast,
        payload: fix,
        ..
    }] = &sends[..]
    else {
        panic!("{sends:?}");
    };
    assert_eq!(GossipData::decode(fix).unwrap().entries[0].tombstone, NOW);
    // Unicasts are ignored.
    let u = ChannelMessage::Unicast {
        src: B,
        payload: vec![1, 2, 3],
    };
    assert!(channel::handle_message(&mut z, u, NOW).unwrap().is_empty());
}

#[test]
fn hostile_gossip_is_refused_and_changes_nothing() {
    let mut z = zone();
    z.add("a.weave.local.", "c1", ip(1), NOW).unwrap();
    let before: Vec<_> = z.entries().collect();
    let mut bad_name = data(vec![entry(B, "x.weave.local.", "c", ip(2))]);
    bad_name.entries[0].hostname = "x\u{0}.weave.local.".into();
    let future = GossipData {
        timestamp: NOW + 100_000,
        ..data(vec![entry(B, "y.weave.local.", "c", ip(3))])
    };
    let huge = data(vec![
        entry(B, "z.weave.local.", "c", ip(4));
        weft_wire::dns::MAX_ENTRIES + 1
    ]);
    type Expect = fn(&ReceiveError) -> bool;
    let cases: Vec<(Vec<u8>, Expect)> = vec![
        (bad_name.encode(), |e| {
            matches!(
                e,
                ReceiveError::Wire {
                    error: GossipError::BadHostname { .. },
                    ..
                }
            )
        }),
        (future.encode(), |e| {
            matches!(
                e,
                ReceiveError::Zone {
                    error: ZoneError::ClockSkew { .. },
                    ..
                }
            )
        }),
        (huge.encode(), |e| {
            matches!(
                e,
                ReceiveError::Wire {
                    error: GossipError::TooManyEntries { .. },
                    ..
                }
            )
        }),
        (vec![0xff; 40], |e| matches!(e, ReceiveError::Wire { .. })),
    ];
    for (payload, is_expected) in cases {
        let err =
            channel::handle_message(&mut z, ChannelMessage::Broadcast { src: B, payload }, NOW)
                .unwrap_err();
        assert!(is_expected(&err), "{err}");
        assert_eq!(z.entries().collect::<Vec<_>>(), before);
    }
}

#[test]
fn dns_sends_go_through_the_mesh() {
    use std::time::Instant;

    use crate::mesh::{ChannelError, Mesh, MeshConfig};

    let mut mesh = Mesh::new(MeshConfig::lone(US), 1, Instant::now());
    let mut z = zone();
    let send = channel::broadcast(&z.add("a.weave.local.", "c", ip(1), NOW).unwrap());
    assert_eq!(
        send.clone().send(&mut mesh),
        Err(ChannelError::NotRegistered(CHANNEL.to_owned()))
    );
    channel::register(&mut mesh).unwrap();
    send.send(&mut mesh).unwrap();
    ChannelSend::new(
        CHANNEL,
        SendTo::Neighbours,
        channel::periodic_gossip(&z, NOW),
    )
    .send(&mut mesh)
    .unwrap();
}

// ---- responder ----

/// A query for `name` of type `t`, id 0x1234, RD set.
fn query(name: &str, t: RecordType) -> Vec<u8> {
    let mut m = Message::new();
    m.set_id(0x1234)
        .set_message_type(MessageType::Query)
        .set_op_code(OpCode::Query)
        .set_recursion_desired(true)
        .add_query(Query::query(Name::from_ascii(name).unwrap(), t));
    m.to_vec().unwrap()
}

/// `q` with an OPT record advertising `size` (as sent, even below 512).
fn with_edns(mut q: Vec<u8>, size: u16) -> Vec<u8> {
    q[11] += 1;
    q.extend_from_slice(&[0, 0, 41]);
    q.extend_from_slice(&size.to_be_bytes());
    q.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
    q
}

fn ask(z: &Zone, q: &[u8], t: Transport) -> Action {
    Responder::default().answer(z, q, t, &mut StdRng::seed_from_u64(7))
}

fn answer(z: &Zone, q: &[u8], t: Transport) -> (Vec<u8>, Message) {
    match ask(z, q, t) {
        Action::Answer(b) => {
            let m = Message::from_vec(&b).unwrap();
            (b, m)
        }
        other => panic!("{other:?}"),
    }
}

fn a_records(m: &Message) -> Vec<Ipv4Addr> {
    m.answers()
        .iter()
        .map(|r| match r.data() {
            RData::A(a) => a.0,
            other => panic!("{other:?}"),
        })
        .collect()
}

fn served_zone() -> Zone {
    let mut z = zone();
    for d in 1..=3 {
        z.add("web.weave.local.", &format!("c{d}"), ip(d), NOW)
            .unwrap();
    }
    z.add("db.weave.local.", "c9", ip(9), NOW).unwrap();
    for d in 0..100u8 {
        z.add("many.weave.local.", "m", Ipv4Addr::new(10, 40, 0, d), NOW)
            .unwrap();
    }
    z
}

#[test]
fn a_queries_get_every_entry_shuffled_with_the_name_as_asked() {
    let z = served_zone();
    let (_, m) = answer(
        &z,
        &query("WeB.weave.local.", RecordType::A),
        Transport::Udp,
    );
    assert_eq!(m.id(), 0x1234);
    assert_eq!(m.message_type(), MessageType::Response);
    assert!(m.authoritative() && m.recursion_available() && m.recursion_desired());
    assert!(!m.truncated());
    assert_eq!(m.response_code(), ResponseCode::NoError);
    assert_eq!(m.queries().len(), 1);
    let mut got = a_records(&m);
    for r in m.answers() {
        assert_eq!(r.name().to_ascii(), "WeB.weave.local.");
        assert_eq!(r.ttl(), 1);
    }
    got.sort();
    assert_eq!(got, vec![ip(1), ip(2), ip(3)]);
    // Shuffled: some seed gives another order than storage order.
    let orders: BTreeSet<Vec<Ipv4Addr>> = (0..20)
        .map(|s| {
            let Action::Answer(b) = Responder::new(5).answer(
                &z,
                &query("web.weave.local.", RecordType::A),
                Transport::Udp,
                &mut StdRng::seed_from_u64(s),
            ) else {
                panic!()
            };
            let m = Message::from_vec(&b).unwrap();
            assert!(m.answers().iter().all(|r| r.ttl() == 5));
            a_records(&m)
        })
        .collect();
    assert!(orders.len() > 1, "{orders:?}");
    // A single label gets the domain.
    let (_, m) = answer(&z, &query("db.", RecordType::A), Transport::Udp);
    assert_eq!(a_records(&m), vec![ip(9)]);
    assert_eq!(m.answers()[0].name().to_ascii(), "db.");
}

#[test]
fn other_types_and_missing_names() {
    let z = served_zone();
    for t in [RecordType::AAAA, RecordType::MX, RecordType::ANY] {
        let (_, m) = answer(&z, &query("web.weave.local.", t), Transport::Udp);
        assert_eq!(m.response_code(), ResponseCode::NoError, "{t}");
        assert!(m.answers().is_empty());
        assert!(m.authoritative() && m.recursion_available());
    }
    for t in [RecordType::A, RecordType::AAAA] {
        let (_, m) = answer(&z, &query("nope.weave.local.", t), Transport::Udp);
        assert_eq!(m.response_code(), ResponseCode::NXDomain);
        assert!(!m.authoritative() && m.recursion_available());
        assert_eq!(m.queries()[0].name().to_ascii(), "nope.weave.local.");
    }
    // The root as a "single label" gets the domain too, and is not found.
    let (_, m) = answer(&z, &query(".", RecordType::NS), Transport::Udp);
    assert_eq!(m.response_code(), ResponseCode::NXDomain);
    // Outside the domain, and DS questions anywhere: upstream's.
    assert_eq!(
        ask(&z, &query("example.com.", RecordType::A), Transport::Udp),
        Action::Forward
    );
    assert_eq!(
        ask(
            &z,
            &query("web.weave.local.", RecordType::DS),
            Transport::Udp
        ),
        Action::Forward
    );
}

#[test]
fn exactly_one_question() {
    let z = served_zone();
    let mut two = query("web.weave.local.", RecordType::A);
    let extra = query("db.weave.local.", RecordType::A);
    two[5] = 2;
    two.extend_from_slice(&extra[12..]);
    let (_, m) = answer(&z, &two, Transport::Udp);
    assert_eq!(m.response_code(), ResponseCode::NXDomain);
    assert_eq!(m.queries().len(), 1, "the first question only");
    // Two questions outside the domain go upstream.
    let mut two = query("example.com.", RecordType::A);
    two[5] = 2;
    two.extend_from_slice(&extra[12..]);
    assert_eq!(ask(&z, &two, Transport::Udp), Action::Forward);
    // A count larger than what follows is what follows.
    let mut lie = query("web.weave.local.", RecordType::A);
    lie[5] = 9;
    let (_, m) = answer(&z, &lie, Transport::Udp);
    assert_eq!(a_records(&m).len(), 3);
    // No question: SERVFAIL.
    let mut none = query("web.weave.local.", RecordType::A);
    none[5] = 0;
    none.truncate(12);
    let (_, m) = answer(&z, &none, Transport::Udp);
    assert_eq!(m.response_code(), ResponseCode::ServFail);
}

#[test]
fn reverse_lookups() {
    let z = served_zone();
    let (_, m) = answer(
        &z,
        &query("9.0.32.10.In-Addr.Arpa.", RecordType::PTR),
        Transport::Udp,
    );
    assert_eq!(m.response_code(), ResponseCode::NoError);
    assert!(m.authoritative() && m.recursion_available());
    let RData::PTR(p) = m.answers()[0].data() else {
        panic!()
    };
    assert_eq!(p.0.to_ascii(), "db.weave.local.");
    assert_eq!(m.answers()[0].name().to_ascii(), "9.0.32.10.In-Addr.Arpa.");
    // Not ours: upstream's. Not an address, or not PTR: NXDOMAIN.
    assert_eq!(
        ask(
            &z,
            &query("1.1.168.192.in-addr.arpa.", RecordType::PTR),
            Transport::Udp
        ),
        Action::Forward
    );
    for (name, t) in [
        ("32.10.in-addr.arpa.", RecordType::PTR),
        ("x.0.32.10.in-addr.arpa.", RecordType::PTR),
        ("in-addr.arpa.", RecordType::PTR),
        ("9.0.32.10.in-addr.arpa.", RecordType::A),
    ] {
        let (_, m) = answer(&z, &query(name, t), Transport::Udp);
        assert_eq!(m.response_code(), ResponseCode::NXDomain, "{name} {t}");
    }
}

#[test]
fn udp_answers_are_truncated_to_512_or_the_edns_size() {
    let z = served_zone();
    let q = query("many.weave.local.", RecordType::A);
    // A compressed A record is 16 bytes: the largest prefix that fits.
    let (b, m) = answer(&z, &q, Transport::Udp);
    assert!(b.len() <= 512 && b.len() > 512 - 16, "{}", b.len());
    assert!(m.truncated());
    assert!(m.answers().len() < 100);
    assert!(m.extensions().is_none(), "no OPT added");
    let (b, m) = answer(&z, &with_edns(q.clone(), 4096), Transport::Udp);
    assert_eq!(m.answers().len(), 100);
    assert!(!m.truncated() && b.len() > 1500);
    let (b, m) = answer(&z, &with_edns(q.clone(), 1000), Transport::Udp);
    assert!(b.len() <= 1000 && b.len() > 1000 - 16 && m.truncated());
    // Below 512, as sent.
    let (b, m) = answer(&z, &with_edns(q.clone(), 100), Transport::Udp);
    assert!(b.len() <= 100 && m.truncated() && !m.answers().is_empty());
    // Too small even for the question: no answers, TC, sent anyway.
    let (_, m) = answer(&z, &with_edns(q.clone(), 10), Transport::Udp);
    assert!(m.truncated() && m.answers().is_empty());
    // TCP: everything.
    let (_, m) = answer(&z, &q, Transport::Tcp);
    assert_eq!(m.answers().len(), 100);
    assert!(!m.truncated());
    // A single answer is never truncated.
    let (_, m) = answer(
        &z,
        &with_edns(query("db.weave.local.", RecordType::A), 10),
        Transport::Udp,
    );
    assert_eq!(a_records(&m), vec![ip(9)]);
}

#[test]
fn malformed_queries_get_formerr_or_nothing() {
    let z = served_zone();
    assert_eq!(ask(&z, &[], Transport::Udp), Action::Drop);
    assert_eq!(ask(&z, &[0x12; 11], Transport::Udp), Action::Drop);
    // A header, then garbage: FORMERR with the id.
    let mut bad = query("web.weave.local.", RecordType::A);
    bad.truncate(14);
    bad[12] = 0x80;
    let (_, m) = answer(&z, &bad, Transport::Udp);
    assert_eq!((m.id(), m.response_code()), (0x1234, ResponseCode::FormErr));
    assert!(m.queries().is_empty());
    // A record section overrunning the input.
    let mut q = with_edns(query("web.weave.local.", RecordType::A), 4096);
    q.pop();
    let (_, m) = answer(&z, &q, Transport::Udp);
    assert_eq!(m.response_code(), ResponseCode::FormErr);
    // Responses are not answered.
    let mut resp = query("web.weave.local.", RecordType::A);
    resp[2] |= 0x80;
    assert_eq!(ask(&z, &resp, Transport::Udp), Action::Drop);
}

#[test]
fn upstream_helpers() {
    let q = query("example.com.", RecordType::A);
    let fail = Message::from_vec(&server_failure(&q).unwrap()).unwrap();
    assert_eq!(
        (fail.id(), fail.response_code()),
        (0x1234, ResponseCode::ServFail)
    );
    assert!(fail.recursion_available());
    assert_eq!(server_failure(&[1, 2]), None);
    // The upstream answer gets the query's id back.
    let mut up = Message::from_vec(&q).unwrap();
    up.set_id(0x9999).set_message_type(MessageType::Response);
    let relayed = relay_upstream(&q, &up.to_vec().unwrap(), Transport::Udp).unwrap();
    assert_eq!(Message::from_vec(&relayed).unwrap().id(), 0x1234);
    assert_eq!(relay_upstream(&q, &[0; 5], Transport::Udp), None);
}

#[test]
fn labels_with_escaped_bytes_match_no_entry() {
    let mut z = served_zone();
    z.add("db.x.weave.local.", "c", ip(20), NOW).unwrap();
    // One label "web.weave" then "local": "web\.weave.local." in DNS text, outside the domain.
    let mut q = query("x.weave.local.", RecordType::A);
    q.truncate(12);
    q.extend_from_slice(b"\x09web.weave\x05local\x00\x00\x01\x00\x01");
    assert_eq!(ask(&z, &q, Transport::Udp), Action::Forward);
    // "db.x" then "weave.local.": inside it, and not the entry "db.x.weave.local.".
    let mut q = query("x.weave.local.", RecordType::A);
    q.truncate(12);
    q.extend_from_slice(b"\x04db.x\x05weave\x05local\x00\x00\x01\x00\x01");
    let (_, m) = answer(&z, &q, Transport::Udp);
    assert_eq!(m.response_code(), ResponseCode::NXDomain);
    // The same for a reverse name: "3.0" as one label is no address.
    let mut q = query("x.in-addr.arpa.", RecordType::PTR);
    q.truncate(12);
    q.extend_from_slice(b"\x033.0\x0232\x0210\x07in-addr\x04arpa\x00\x00\x0c\x00\x01");
    let (_, m) = answer(&z, &q, Transport::Udp);
    assert_eq!(m.response_code(), ResponseCode::NXDomain);
}

proptest! {
    /// The direct encoding of plain A answers writes exactly what the general path writes,
    /// whatever the name's case, the flags, the EDNS size, the transport and the number of
    /// addresses (including those that need truncating, which it leaves to the general path).
    #[test]
    fn direct_a_answers_are_byte_identical(
        n in 1u8..60,
        upper in any::<bool>(),
        rd in any::<bool>(),
        cd in any::<bool>(),
        edns in prop::sample::select(vec![None, Some(100u16), Some(512), Some(1232), Some(4096)]),
        tcp in any::<bool>(),
        single_label in any::<bool>(),
        seed in any::<u64>(),
    ) {
        let mut z = zone();
        for d in 0..n {
            z.add("web.weave.local.", &format!("c{d}"), Ipv4Addr::new(10, 9, 0, d), NOW).unwrap();
        }
        let name = match (single_label, upper) {
            (true, false) => "web.",
            (true, true) => "WeB.",
            (false, false) => "web.weave.local.",
            (false, true) => "WEB.Weave.LOCAL.",
        };
        let mut q = query(name, RecordType::A);
        if !rd {
            q[2] &= !0x01;
        }
        if cd {
            q[3] |= 0x10;
        }
        if let Some(size) = edns {
            q = with_edns(q, size);
        }
        let t = if tcp { Transport::Tcp } else { Transport::Udp };
        let r = Responder::new(5);
        let direct = r.answer_with(&z, &q, t, &mut StdRng::seed_from_u64(seed), true);
        let general = r.answer_with(&z, &q, t, &mut StdRng::seed_from_u64(seed), false);
        prop_assert_eq!(direct, general);
    }
}
