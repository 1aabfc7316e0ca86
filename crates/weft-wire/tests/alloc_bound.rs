//! Every decoder's heap stays within `DECODE_HEAP_PER_BYTE * input + DECODE_HEAP_BASE` on
//! hostile input: gob type-definition bombs (many type nodes with long names), deep and wide
//! nesting, huge declared lengths, many tiny type definitions and many tiny values; and no
//! input panics or produces an error text longer than [`MAX_ERROR_TEXT`].
//!
//! The heap is measured with `allocation-counter`, a counting global allocator that counts per
//! thread (so tests running in parallel do not disturb each other) and counts a reallocation as
//! a new block plus the old one, i.e. the true peak. Run with `-- --nocapture` to see each
//! input's figures.

// Tests may unwrap: a panic is how they fail.
#![allow(clippy::unwrap_used)]

use std::fmt::Display;
use std::path::Path;

use weft_wire::gob::{Decoder, Encoder, Type, Value};
use weft_wire::ipam_delta::RingDelta;
use weft_wire::protocol::ProtocolMsg;
use weft_wire::topology_delta::Message;
use weft_wire::{
    features, frame, ipam, sleeve, topology, PeerName, DECODE_HEAP_BASE, DECODE_HEAP_PER_BYTE,
};

/// Longest error text accepted (peer text in errors is cut to 64 bytes, which escaping may
/// widen a few times).
const MAX_ERROR_TEXT: usize = 512;

/// Decodes `input` with `decode` under the counting allocator, asserts the heap bound and the
/// error text bound, and returns the result.
fn bounded<T, E: Display>(
    what: &str,
    input: &[u8],
    decode: impl FnOnce(&[u8]) -> Result<T, E>,
) -> Result<T, String> {
    let mut out = None;
    let info = allocation_counter::measure(|| out = Some(decode(input)));
    let limit = DECODE_HEAP_PER_BYTE * input.len() + DECODE_HEAP_BASE;
    let outcome = out.unwrap().map_err(|e| e.to_string());
    println!(
        "{what}: {} input bytes, peak heap {} bytes ({:.1} per input byte), {}",
        input.len(),
        info.bytes_max,
        info.bytes_max as f64 / input.len().max(1) as f64,
        match &outcome {
            Ok(_) => "decoded".to_string(),
            Err(e) => format!("error: {e}"),
        }
    );
    assert!(
        info.bytes_max <= limit as u64,
        "{what}: peak heap {} bytes for {} input bytes (limit {limit})",
        info.bytes_max,
        input.len()
    );
    if let Err(e) = &outcome {
        assert!(
            e.len() <= MAX_ERROR_TEXT,
            "{what}: error text of {} bytes",
            e.len()
        );
    }
    outcome
}

/// Decodes a whole gob stream, keeping every value (as the gossip channels do).
fn gob_stream(input: &[u8]) -> Result<Vec<(Type, Value)>, weft_wire::DecodeError> {
    let mut input = input;
    let mut dec = Decoder::new();
    let mut out = Vec::new();
    while let Some(tv) = dec.decode_next(&mut input)? {
        out.push(tv);
    }
    Ok(out)
}

use weft_wire::gob::hostile::{
    array_def, map_def, message, nested_slice_defs, put_str, put_uint, slice_def, struct_def,
    type_bomb, ID_BOOL, ID_BYTES, ID_STRING, ID_UINT,
};

// ---- gob ----

#[test]
fn gob_type_bomb_over_the_caps() {
    // The frame that got the router OOM-killed: 1.06 MB of long-named type nodes and values.
    // 781-node types, a few values of each: the stream's definition bytes run out.
    let bomb = type_bomb(1_060_000, (4, 5), 200, 4, false);
    let err = bounded("gob type bomb 1.06 MB", &bomb, gob_stream).unwrap_err();
    assert!(err.contains("type definitions exceed"), "{err}");
    // Types of 8^8 nodes: refused at the first value.
    let bomb = type_bomb(1_060_000, (8, 8), 200, 4, false);
    let err = bounded("gob type bomb of huge types", &bomb, gob_stream).unwrap_err();
    assert!(err.contains("more than 1024 nodes"), "{err}");
}

#[test]
fn gob_type_bomb_within_the_caps() {
    // Long names, 364-node types, within the definition caps, then values until 1 MB: the
    // old decoder copied the type and every field name per value.
    let bomb = type_bomb(1_000_000, (5, 3), 200, 1 << 20, true);
    let values = bounded("gob type bomb within caps, full values", &bomb, gob_stream).unwrap();
    assert!(values.len() > 1000);
    let bomb = type_bomb(1_000_000, (4, 5), 200, 1 << 20, false);
    let values = bounded("gob type bomb within caps, empty values", &bomb, gob_stream).unwrap();
    assert!(values.len() > 200_000);
    let small = type_bomb(75_000, (4, 5), 200, 1 << 20, false);
    bounded("gob type bomb within caps 75 KB", &small, gob_stream).unwrap();
}

#[test]
fn gob_deep_nesting() {
    // 32 levels of []: one element per level.
    let mut s = nested_slice_defs(31);
    let mut body = vec![0x00];
    body.extend(std::iter::repeat_n(0x01, 31));
    body.push(0x01);
    s.extend(message(95, &body));
    let v = bounded("gob 32-deep slices", &s, gob_stream).unwrap();
    assert_eq!(v.len(), 1);
    // 33 levels: too deep.
    let mut s = nested_slice_defs(33);
    s.extend(message(97, &[0x00, 0x00]));
    let err = bounded("gob 34-deep slices", &s, gob_stream).unwrap_err();
    assert!(err.contains("deeper"), "{err}");
    // Deep structs, repeated values.
    let s = type_bomb(200_000, (31, 1), 0, 1 << 20, true);
    bounded("gob 31-deep structs", &s, gob_stream).unwrap();
    // A recursive type.
    let mut s = struct_def(65, "node", &[("Next".into(), 65)]);
    s.extend(message(65, &[0x01, 0x01, 0x01, 0x00, 0x00, 0x00]));
    bounded("gob recursive type", &s, gob_stream).unwrap_err();
}

#[test]
fn gob_wide_values() {
    // A struct of 1000 bool fields, every value with all of them set.
    let fields: Vec<(String, i64)> = (0..1000).map(|i| (format!("f{i}"), ID_BOOL)).collect();
    let mut s = struct_def(65, "wide", &fields);
    let mut body = Vec::new();
    for _ in 0..1000 {
        body.extend_from_slice(&[0x01, 0x01]);
    }
    body.push(0x00);
    for _ in 0..200 {
        s.extend(message(65, &body));
    }
    bounded("gob 1000-field structs", &s, gob_stream).unwrap();
    // One slice of 500k bools, of empty structs, of one-byte strings; a map of bool to bool.
    for (what, defs, elem) in [
        ("bools", slice_def(65, ID_BOOL), vec![0x01]),
        (
            "empty structs",
            {
                let mut d = slice_def(65, 66);
                d.extend(struct_def(66, "e", &[]));
                d
            },
            vec![0x00],
        ),
        ("1-byte strings", slice_def(65, ID_STRING), vec![0x01, b'a']),
        (
            "map entries",
            map_def(65, ID_BOOL, ID_BOOL),
            vec![0x01, 0x01],
        ),
    ] {
        let n = 500_000 / elem.len();
        let mut body = vec![0x00];
        put_uint(&mut body, n as u64);
        for _ in 0..n {
            body.extend_from_slice(&elem);
        }
        let mut s = defs;
        s.extend(message(65, &body));
        bounded(&format!("gob slice of {what}"), &s, gob_stream).unwrap();
    }
    // Slices of one-field structs.
    let mut s = slice_def(65, 66);
    s.extend(struct_def(66, "one", &[("A".into(), ID_BOOL)]));
    let mut body = vec![0x00];
    put_uint(&mut body, 100_000);
    for _ in 0..100_000 {
        body.extend_from_slice(&[0x01, 0x01, 0x00]);
    }
    s.extend(message(65, &body));
    bounded("gob slice of 1-field structs", &s, gob_stream).unwrap();
}

#[test]
fn gob_huge_declared_lengths() {
    let huge = |ty_defs: Vec<u8>, id: i64, count: u64| {
        let mut s = ty_defs;
        let mut body = vec![0x00];
        put_uint(&mut body, count);
        body.extend_from_slice(&[0x01; 64]);
        s.extend(message(id, &body));
        s
    };
    for (what, s) in [
        (
            "slice count 2^62",
            huge(slice_def(65, ID_BOOL), 65, 1 << 62),
        ),
        (
            "map count 2^40",
            huge(map_def(65, ID_BOOL, ID_BOOL), 65, 1 << 40),
        ),
        ("string length 2^40", huge(Vec::new(), ID_STRING, 1 << 40)),
        ("bytes length 2^63", huge(Vec::new(), ID_BYTES, 1 << 63)),
        ("array of 2^60", {
            let mut s = array_def(65, ID_BOOL, 1 << 60);
            let mut body = vec![0x00];
            put_uint(&mut body, 1 << 60);
            s.extend(message(65, &body));
            s
        }),
        (
            "message length 2^63",
            vec![0xf8, 0x80, 0, 0, 0, 0, 0, 0, 0, 0x00],
        ),
    ] {
        bounded(&format!("gob {what}"), &s, gob_stream).unwrap_err();
    }
    // Nested counts each as large as the bytes left: a slice of 16-deep slices.
    let mut s = nested_slice_defs(16);
    let mut body = vec![0x00];
    let n = 100_000u64;
    for level in 0..16 {
        put_uint(&mut body, n - level);
    }
    body.extend(std::iter::repeat_n(0x00, n as usize));
    s.extend(message(80, &body));
    bounded("gob nested inflated counts", &s, gob_stream).unwrap_err();
}

#[test]
fn gob_many_tiny_type_defs() {
    let mut s = Vec::new();
    for i in 0..300 {
        s.extend(slice_def(65 + i, ID_BOOL));
    }
    let err = bounded("gob 300 tiny type defs", &s, gob_stream).unwrap_err();
    assert!(err.contains("more types"), "{err}");
    // 256 defs then tiny values of each, over and over.
    let mut s = Vec::new();
    for i in 0..256 {
        s.extend(slice_def(65 + i, ID_BOOL));
    }
    for round in 0..400 {
        for i in 0..256 {
            s.extend(message(65 + i, &[0x00, 0x01, (round % 2) as u8]));
        }
    }
    bounded("gob 256 defs, 100k tiny values", &s, gob_stream).unwrap();
    // Structs with thousands of tiny fields of as many types.
    let mut s = Vec::new();
    let fields: Vec<(String, i64)> = (0..2000).map(|i| (format!("{i}"), 66 + i % 200)).collect();
    s.extend(struct_def(65, "", &fields));
    for i in 0..200 {
        s.extend(slice_def(66 + i, ID_UINT));
    }
    s.extend(message(65, &[0x00]));
    bounded("gob 2000 fields over 200 types", &s, gob_stream).unwrap_err();
}

// ---- features ----

fn features_frame(entries: &[(String, String)]) -> Vec<u8> {
    let mut s = map_def(65, ID_STRING, ID_STRING);
    let mut body = vec![0x00];
    put_uint(&mut body, entries.len() as u64);
    for (k, v) in entries {
        put_str(&mut body, k);
        put_str(&mut body, v);
    }
    s.extend(message(65, &body));
    s
}

#[test]
fn features_hostile_frames() {
    let bomb = type_bomb(1_060_000, (4, 5), 200, 4, false);
    bounded("features type bomb", &bomb, features::decode).unwrap_err();
    let bomb = type_bomb(75_000, (4, 5), 200, 1 << 20, false);
    bounded("features type bomb 75 KB", &bomb, features::decode).unwrap_err();
    // A well-formed map as large as the handshake frame cap, of the smallest entries.
    let entries: Vec<(String, String)> = (0..20_000)
        .map(|i| (format!("{i:x}"), String::new()))
        .collect();
    let frame = features_frame(&entries);
    assert!(frame.len() <= frame::MAX_HANDSHAKE_FRAME_LEN * 2);
    let map = bounded("features 20k tiny entries", &frame, features::decode).unwrap();
    assert_eq!(map.len(), 20_000);
    // A 1 MB value, a 1 MB duplicate key.
    let big = "v".repeat(1 << 20);
    bounded(
        "features 1 MB value",
        &features_frame(&[("Name".into(), big.clone())]),
        features::decode,
    )
    .unwrap();
    let err = bounded(
        "features duplicate 1 MB key",
        &features_frame(&[(big.clone(), String::new()), (big, String::new())]),
        features::decode,
    )
    .unwrap_err();
    assert!(err.contains("duplicate key"), "{err}");
    // The right shape under a hostile type: a map of maps, never decoded.
    let mut s = map_def(65, ID_STRING, 66);
    s.extend(map_def(66, ID_STRING, ID_STRING));
    bounded("features map of maps", &s, features::decode).unwrap_err();
    // Huge declared map length.
    let mut s = map_def(65, ID_STRING, ID_STRING);
    s.extend(message(
        65,
        &[0x00, 0xf8, 0x10, 0, 0, 0, 0, 0, 0, 0, 0x01, b'a', 0x00],
    ));
    bounded("features map count 2^60", &s, features::decode).unwrap_err();
}

// ---- topology ----

fn minimal_peers(n: usize) -> Vec<(weft_wire::PeerSummary, Vec<weft_wire::ConnectionSummary>)> {
    (0..n)
        .map(|i| {
            (
                weft_wire::PeerSummary {
                    name: PeerName(i as u64 + 1),
                    ..Default::default()
                },
                Vec::new(),
            )
        })
        .collect()
}

#[test]
fn topology_hostile_payloads() {
    let bomb = type_bomb(1_060_000, (4, 5), 200, 4, false);
    bounded("topology type bomb", &bomb, topology::decode).unwrap_err();
    // Many minimal peers, and one peer with many minimal connections.
    let payload = topology::encode(&minimal_peers(50_000));
    let peers = bounded("topology 50k peers", &payload, topology::decode).unwrap();
    assert_eq!(peers.len(), 50_000);
    let conns = (0..50_000)
        .map(|i| weft_wire::ConnectionSummary {
            name: PeerName(i + 1),
            ..Default::default()
        })
        .collect();
    let mut one = minimal_peers(1);
    one[0].1 = conns;
    let payload = topology::encode(&one);
    bounded("topology 50k connections", &payload, topology::decode).unwrap();
    // A peerSummary whose NickName is a deep type: rejected before its value is read.
    let mut s = struct_def(65, "peerSummary", &[("NickName".into(), 66)]);
    s.extend(slice_def(66, 67));
    s.extend(slice_def(67, ID_STRING));
    let mut body = vec![0x01];
    put_uint(&mut body, 100_000);
    body.extend(std::iter::repeat_n(0x00, 100_000));
    body.push(0x00);
    s.extend(message(65, &body));
    let err = bounded("topology mistyped field", &s, topology::decode).unwrap_err();
    assert!(err.contains("expected string"), "{err}");
    // Many tiny type definitions.
    let mut s = Vec::new();
    for i in 0..300 {
        s.extend(slice_def(65 + i, ID_BOOL));
    }
    bounded("topology 300 tiny type defs", &s, topology::decode).unwrap_err();
    // A peer whose connection list is a long slice of the wrong element type.
    let mut enc = Encoder::new();
    let mut s = Vec::new();
    enc.encode(
        &topology::peer_summary_type(),
        &Value::structure([("NameByte", Value::Bytes(vec![1; 6]))]),
        &mut s,
    )
    .unwrap();
    enc.encode(
        &Type::slice(Type::Uint),
        &Value::Slice(vec![Value::Uint(7); 100_000]),
        &mut s,
    )
    .unwrap();
    bounded("topology mistyped connection list", &s, topology::decode).unwrap_err();
}

// ---- protocol ----

#[test]
fn protocol_hostile_bodies() {
    // Gossip whose items come with type definitions: refused at the first one.
    let mut body = vec![0x04];
    body.extend(type_bomb(1_060_000, (4, 5), 200, 4, false));
    let err = bounded("protocol gossip with type bomb", &body, ProtocolMsg::decode).unwrap_err();
    assert!(err.contains("more types"), "{err}");
    // A 1 MB payload: held once (plus its copy out of the value).
    let msg = ProtocolMsg::Gossip {
        channel: "topology".into(),
        src: PeerName(1),
        payload: vec![7; 1 << 20],
    };
    let mut body = Vec::new();
    msg.encode(&mut body);
    bounded("protocol 1 MB gossip", &body, ProtocolMsg::decode).unwrap();
    // Huge declared lengths, and a long channel name of the wrong type.
    let mut body = vec![0x05, 0x0b, 0x0c, 0x00, 0xf8, 0x40, 0, 0, 0, 0, 0, 0, 0];
    body.extend_from_slice(b"topology");
    bounded("protocol huge channel length", &body, ProtocolMsg::decode).unwrap_err();
    let mut body = vec![0x04];
    let mut item = vec![0x00];
    put_str(&mut item, &"c".repeat(100_000));
    body.extend(message(ID_BYTES, &item));
    let err = bounded("protocol mistyped channel", &body, ProtocolMsg::decode).unwrap_err();
    assert!(err.contains("expected string"), "{err}");
    let big = vec![0x07; 1 << 20];
    bounded("protocol 1 MB overlay control", &big, ProtocolMsg::decode).unwrap();
}

// ---- topology_delta ----

#[test]
fn topology_delta_hostile_payloads() {
    // Maximal counts with nothing behind them.
    for (what, b) in [
        ("update 65535 deltas", vec![1, 0xff, 0xff]),
        ("pull 65535 refs", vec![2, 0xff, 0xff]),
        ("digest 65535 refs, some present", {
            let mut b = vec![3, 0xff, 0xff];
            for i in 0..1000u64 {
                b.extend_from_slice(&PeerName(i + 1).to_bytes());
                b.extend_from_slice(&[0; 16]);
            }
            b
        }),
    ] {
        bounded(&format!("topology_delta {what}"), &b, Message::decode).unwrap_err();
    }
    // A large valid update (many deltas, each with many connections), and many empty deltas
    // (the smallest items).
    let update = |n: u64, removed: usize, upserted: u64| {
        let deltas = (0..n)
            .map(|i| weft_wire::topology_delta::Delta {
                summary: weft_wire::PeerSummary {
                    name: PeerName(i + 1),
                    ..Default::default()
                },
                base_version: 0,
                removed: vec![PeerName(9); removed],
                upserted: (0..upserted)
                    .map(|c| weft_wire::ConnectionSummary {
                        name: PeerName(c + 1),
                        ..Default::default()
                    })
                    .collect(),
            })
            .collect();
        Message::Update {
            deltas,
            refs: Vec::new(),
        }
        .encode()
        .unwrap()
    };
    bounded(
        "topology_delta large update",
        &update(300, 100, 200),
        Message::decode,
    )
    .unwrap();
    let b = update(65_535, 0, 0);
    bounded("topology_delta 65535 empty deltas", &b, Message::decode).unwrap();
}

// ---- sleeve ----

#[test]
fn sleeve_hostile_datagrams() {
    let parse_all = |d: &[u8]| -> Result<usize, sleeve::SleeveError> {
        let (_, frames) = sleeve::parse(d)?;
        let mut n = 0;
        for f in frames {
            f?;
            n += 1;
        }
        Ok(n)
    };
    let mut d = PeerName(1).to_bytes().to_vec();
    for _ in 0..4000 {
        sleeve::encode_frame(PeerName(1), PeerName(2), &[], &mut d).unwrap();
    }
    assert_eq!(
        bounded("sleeve 4000 empty records", &d, parse_all),
        Ok(4000)
    );
    let mut d = PeerName(1).to_bytes().to_vec();
    d.extend_from_slice(&[0; 12]);
    d.extend_from_slice(&[0xff, 0xff]);
    bounded("sleeve record of 65535 announced", &d, parse_all).unwrap_err();
}

// ---- every seed of the fuzz corpora, and every prefix of it ----

// ---- IPAM ----

/// A `gossipState` payload whose ring, Paxos map or nicknames are whatever `fields` says.
fn ipam_state(fields: Vec<(&str, Value)>) -> Vec<u8> {
    use weft_wire::gob::mapping::GobKind;
    let mut out = Vec::new();
    Encoder::new()
        .encode(
            &ipam::GossipState::gob_type(),
            &Value::structure(fields),
            &mut out,
        )
        .unwrap();
    out
}

#[test]
fn ipam_hostile_payloads() {
    let empty = || Value::Struct(vec![]);
    // A ring of 100,000 all-zero entries: one byte each on the wire.
    let ring = Value::structure([("Entries", Value::Slice(vec![empty(); 100_000]))]);
    let s = ipam_state(vec![("Ring", ring)]);
    let state = bounded(
        "ipam 100k empty ring entries",
        &s,
        ipam::GossipState::decode,
    )
    .unwrap();
    assert_eq!(state.ring.map(|r| r.entries.len()), Some(100_000));
    // 100,000 seeds and 50,000 nicknames.
    let seeds = Value::Slice((1..=100_000).map(|i| Value::Uint(i % 100)).collect());
    let s = ipam_state(vec![("Ring", Value::structure([("Seeds", seeds)]))]);
    bounded("ipam 100k seeds", &s, ipam::GossipState::decode).unwrap();
    let nicks = Value::Map(
        (0..50_000)
            .map(|i| (Value::Uint(i), Value::String(String::new())))
            .collect(),
    );
    let s = ipam_state(vec![("Nicknames", nicks)]);
    bounded("ipam 50k nicknames", &s, ipam::GossipState::decode).unwrap();
    // A Paxos map of 30,000 nodes with empty claims, and one with a duplicate node.
    let node = |i: u64| Value::structure([("Name", Value::Uint(i))]);
    let paxos = Value::Map((0..30_000).map(|i| (node(i), empty())).collect());
    let s = ipam_state(vec![("Paxos", paxos)]);
    let state = bounded("ipam 30k paxos nodes", &s, ipam::GossipState::decode).unwrap();
    assert_eq!(state.paxos.map(|p| p.len()), Some(30_000));
    let twice = Value::Map(vec![(node(1), empty()), (node(1), empty())]);
    let s = ipam_state(vec![("Paxos", twice)]);
    let err = bounded("ipam duplicate paxos node", &s, ipam::GossipState::decode).unwrap_err();
    assert!(err.contains("duplicate key"), "{err}");
    // A huge declared seed count: refused before anything is allocated for it.
    let s = ipam_state(vec![(
        "Ring",
        Value::structure([("Seeds", Value::Slice(vec![Value::Uint(1)]))]),
    )]);
    // The payload ends: Seeds count 1, seed 1, end of Ring, end of state; 1 becomes 127.
    let mut huge = s.clone();
    let at = huge.len() - 4;
    huge[at] = 0x7f;
    let err = bounded("ipam huge seed count", &huge, ipam::GossipState::decode).unwrap_err();
    assert!(err.contains("exceeds"), "{err}");
    // Addresses wider than 32 bits and names wider than 48: typed errors.
    let ring = Value::structure([("Start", Value::Uint(1 << 40))]);
    let err = bounded(
        "ipam wide address",
        &ipam_state(vec![("Ring", ring)]),
        ipam::GossipState::decode,
    )
    .unwrap_err();
    assert!(err.contains("does not fit in u32"), "{err}");
    // A unicast whose range is a gossipState: the kind byte decides, the type check refuses.
    let mut u = vec![ipam::MSG_SPACE_REQUEST];
    u.extend(ipam_state(vec![("Now", Value::Int(1))]));
    let err = bounded(
        "ipam unicast of the wrong type",
        &u,
        ipam::UnicastMsg::decode,
    )
    .unwrap_err();
    assert!(err.contains("field in common"), "{err}");
}

// ---- DNS ----

/// A DNS `GossipData` payload whose entries are `entries`.
fn dns_data(entries: Vec<Value>) -> Vec<u8> {
    use weft_wire::gob::mapping::GobKind;
    let mut out = Vec::new();
    let v = Value::structure([
        ("Timestamp", Value::Int(1)),
        ("Entries", Value::Slice(entries)),
    ]);
    Encoder::new()
        .encode(&weft_wire::dns::GossipData::gob_type(), &v, &mut out)
        .unwrap();
    out
}

#[test]
fn dns_hostile_payloads() {
    use weft_wire::dns::GossipData;
    // 100,000 entries with a one-letter hostname and nothing else: four bytes each.
    let tiny = || Value::structure([("Hostname", Value::String("a".into()))]);
    let s = dns_data(vec![tiny(); 100_000]);
    let err = bounded("dns 100k tiny entries", &s, GossipData::decode).unwrap_err();
    assert!(err.contains("100000 entries"), "{err}");
    let s = dns_data(vec![tiny(); weft_wire::dns::MAX_ENTRIES]);
    let d = bounded("dns most tiny entries", &s, GossipData::decode).unwrap();
    assert_eq!(d.entries.len(), weft_wire::dns::MAX_ENTRIES);
    // 100,000 empty entries (one byte each): refused before any entry is built.
    let s = dns_data(vec![Value::Struct(vec![]); 100_000]);
    let err = bounded("dns 100k empty entries", &s, GossipData::decode).unwrap_err();
    assert!(err.contains("missing Hostname"), "{err}");
    // Long names: refused with a typed error, the name cut in the text.
    let long = Value::structure([("Hostname", Value::String("x".repeat(100_000)))]);
    let err = bounded(
        "dns long hostname",
        &dns_data(vec![long]),
        GossipData::decode,
    )
    .unwrap_err();
    assert!(err.contains("invalid hostname"), "{err}");
}

// ---- ipam_delta ----

#[test]
fn ipam_delta_hostile_payloads() {
    // The largest delta allowed, entries and nicknames at their bounds.
    let entry = weft_wire::ipam_delta::Entry {
        token: 1,
        peer: PeerName(1),
        version: 1,
        free: 1,
        prev: 1,
        next: 1,
    };
    let big = RingDelta {
        entries: vec![entry; weft_wire::ipam_delta::MAX_ENTRIES],
        nicknames: vec![(PeerName(1), "n".repeat(255)); weft_wire::ipam_delta::MAX_NICKNAMES],
        ..RingDelta::default()
    };
    let b = big.encode().unwrap();
    bounded("ipam_delta largest", &b, RingDelta::decode).unwrap();
    // Counts that promise more than the bytes hold.
    let mut lie = vec![1u8];
    lie.extend_from_slice(&[0; 16]);
    lie.extend_from_slice(&1024u16.to_be_bytes());
    bounded("ipam_delta lying count", &lie, RingDelta::decode).unwrap_err();
}

#[test]
fn fuzz_corpora_stay_within_the_bound() {
    type Entry = fn(&[u8]) -> Result<(), String>;
    let targets: [(&str, Entry); 10] = [
        ("dns_gossip", |d| {
            weft_wire::dns::GossipData::decode(d)
                .map(drop)
                .map_err(|e| e.to_string())
        }),
        ("ipam_gossip", |d| {
            ipam::GossipState::decode(d)
                .map(drop)
                .map_err(|e| e.to_string())
        }),
        ("ipam_unicast", |d| {
            ipam::UnicastMsg::decode(d)
                .map(drop)
                .map_err(|e| e.to_string())
        }),
        ("gob", |d| {
            gob_stream(d).map(drop).map_err(|e| e.to_string())
        }),
        ("features", |d| {
            features::decode(d).map(drop).map_err(|e| e.to_string())
        }),
        ("topology", |d| {
            topology::decode(d).map(drop).map_err(|e| e.to_string())
        }),
        ("protocol", |d| {
            ProtocolMsg::decode(d).map(drop).map_err(|e| e.to_string())
        }),
        ("topology_delta", |d| {
            Message::decode(d).map(drop).map_err(|e| e.to_string())
        }),
        ("sleeve", |d| {
            sleeve::parse(d).map(drop).map_err(|e| e.to_string())
        }),
        ("ipam_delta", |d| {
            RingDelta::decode(d).map(drop).map_err(|e| e.to_string())
        }),
    ];
    for (target, entry) in targets {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../fuzz/corpus")
            .join(target);
        let mut n = 0;
        for file in std::fs::read_dir(&dir).unwrap() {
            let data = std::fs::read(file.unwrap().path()).unwrap();
            for cut in 0..=data.len() {
                let _ = bounded(&format!("{target} seed"), &data[..cut], entry);
            }
            n += 1;
        }
        assert!(n > 0, "no seeds for {target}");
    }
}
