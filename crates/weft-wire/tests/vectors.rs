//! Checks every codec against the byte dumps produced by the real Weave Net 2.8 code
//! (`tests/vectors/*.txt`: copies of the spec's `vectors/` dumps, kept here as test data so a
//! clone with nothing beside it passes).
//!
//! Every gob dump is decoded, re-encoded with a fresh encoder from the decoded types, and
//! decoded again to the same values, and the bytes must match Go's exactly (the types keep the
//! names Go gives slice and map types, such as `GossipState` and `entries`).

// Tests may unwrap: a panic is how they fail.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::path::PathBuf;

use weft_wire::gob::{Decoder, Encoder, Type, Value};
use weft_wire::protocol::ProtocolMsg;
use weft_wire::{features, frame, header, sleeve, topology, PeerName};

const A: PeerName = PeerName(0xaabb_ccdd_ee01);
const B: PeerName = PeerName(0xaabb_ccdd_ee02);

/// One hex dump: the line introducing it and its bytes.
#[derive(Debug)]
struct Dump {
    title: String,
    bytes: Vec<u8>,
}

fn vector_file(name: &str) -> String {
    let path: PathBuf = [env!("CARGO_MANIFEST_DIR"), "tests", "vectors", name]
        .iter()
        .collect();
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("test vectors missing: cannot read {} ({e})", path.display()))
}

/// The bytes of a `hexdump -C`-style line, or `None` if the line is not one.
fn hex_line(line: &str) -> Option<Vec<u8>> {
    let (offset, rest) = line.split_at_checked(8)?;
    if !offset.bytes().all(|b| b.is_ascii_hexdigit()) || !rest.starts_with("  ") {
        return None;
    }
    let hex = rest.split('|').next()?;
    hex.split_whitespace()
        .map(|h| u8::from_str_radix(h, 16).ok())
        .collect()
}

fn dumps(file: &str) -> Vec<Dump> {
    let mut out: Vec<Dump> = Vec::new();
    let mut title: Option<String> = None;
    for line in vector_file(file).lines() {
        match hex_line(line) {
            Some(bytes) => match title.take() {
                Some(t) => out.push(Dump { title: t, bytes }),
                None => out
                    .last_mut()
                    .expect("hex line before any title")
                    .bytes
                    .extend(bytes),
            },
            None => title = Some(line.to_string()),
        }
    }
    out
}

/// The dump whose title starts with `prefix` (exactly one must).
fn dump<'a>(all: &'a [Dump], prefix: &str) -> &'a [u8] {
    let found: Vec<_> = all.iter().filter(|d| d.title.starts_with(prefix)).collect();
    assert_eq!(found.len(), 1, "dumps titled {prefix:?}");
    &found[0].bytes
}

/// `(N bytes)` at the end of a gob-test-vectors title.
fn declared_len(title: &str) -> Option<usize> {
    let inner = title.rsplit_once('(')?.1.strip_suffix(" bytes)")?;
    inner.parse().ok()
}

fn decode_all(mut input: &[u8]) -> Vec<(Type, Value)> {
    let mut dec = Decoder::new();
    let mut out = Vec::new();
    loop {
        match dec.decode_next(&mut input) {
            Ok(Some(tv)) => out.push(tv),
            Ok(None) => return out,
            Err(e) => panic!("decode failed: {e}; {} bytes left", input.len()),
        }
    }
}

fn encode_all(values: &[(Type, Value)], mut enc: Encoder) -> Vec<u8> {
    let mut out = Vec::new();
    for (t, v) in values {
        enc.encode(t, v, &mut out)
            .expect("decoded values re-encode");
    }
    out
}

/// How a gob-test-vectors dump is checked.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    /// Not a gob stream (header, frames, nonces).
    NotGob,
    /// A gob stream starting at this offset; re-encoding must give the same bytes when the
    /// encoder's first id is the given one.
    Gob { skip: usize, exact_from_id: i64 },
}

fn kind(title: &str) -> Kind {
    const NOT_GOB: [&str; 5] = [
        "--- protocol header",
        "--- full v2 unencrypted frame",
        "--- heartbeat frame",
        "--- outbound sender",
        "--- inbound sender",
    ];
    if NOT_GOB.iter().any(|p| title.starts_with(p)) {
        return Kind::NotGob;
    }
    if title.starts_with("--- space request msg") {
        // A kind byte, then gob; Go's process had registered 76 types before `Range`.
        return Kind::Gob {
            skip: 1,
            exact_from_id: 77,
        };
    }
    let exact = if title.starts_with("--- topology payload") {
        66
    } else {
        65
    };
    Kind::Gob {
        skip: 0,
        exact_from_id: exact,
    }
}

#[test]
fn every_gob_dump_round_trips() {
    let all = dumps("gob-test-vectors.txt");
    assert!(all.len() >= 20, "parsed only {} dumps", all.len());
    let mut gob_dumps = 0;
    for d in &all {
        assert_eq!(
            declared_len(&d.title),
            Some(d.bytes.len()),
            "dump length of {:?}",
            d.title
        );
        let Kind::Gob {
            skip,
            exact_from_id,
        } = kind(&d.title)
        else {
            continue;
        };
        gob_dumps += 1;
        let stream = &d.bytes[skip..];
        let values = decode_all(stream);
        assert!(!values.is_empty(), "{}: no values", d.title);
        let again = encode_all(&values, Encoder::new());
        assert_eq!(
            decode_all(&again),
            values,
            "{}: re-encode round trip",
            d.title
        );
        let exact = encode_all(&values, Encoder::with_first_type_id(exact_from_id));
        assert_eq!(exact, stream, "{}: bytes differ from Go's", d.title);
    }
    assert_eq!(gob_dumps, 16, "gob dumps checked");
}

#[test]
fn header_and_heartbeat() {
    let all = dumps("gob-test-vectors.txt");
    let h = dump(&all, "--- protocol header (min=1,max=2)");
    assert_eq!(h, header::encode(1, 2));
    assert_eq!(header::decode(&header::encode(1, 2)), Ok((1, 2)));
    let mut out = Vec::new();
    let mut body = Vec::new();
    ProtocolMsg::Heartbeat.encode(&mut body);
    frame::encode(&body, &mut out).unwrap();
    assert_eq!(out, dump(&all, "--- heartbeat frame"));
    let (b, used) = frame::parse(dump(&all, "--- heartbeat frame"))
        .unwrap()
        .unwrap();
    assert_eq!(used, 5);
    assert_eq!(ProtocolMsg::decode(b), Ok(Some(ProtocolMsg::Heartbeat)));
}

#[test]
fn features_maps() {
    let all = dumps("gob-test-vectors.txt");
    let one = dump(&all, "--- gob map[string]string{Name:aa:bb:cc:dd:ee:01}");
    let map = BTreeMap::from([("Name".to_string(), "aa:bb:cc:dd:ee:01".to_string())]);
    assert_eq!(features::decode(one), Ok(map.clone()));
    assert_eq!(features::encode(&map), one);
    let empty = dump(&all, "--- gob empty map[string]string");
    assert_eq!(features::decode(empty), Ok(BTreeMap::new()));
    assert_eq!(features::encode(&BTreeMap::new()), empty);
}

/// Go's `%+v` of a topology peer and its connections, as the vectors print them.
fn go_text(p: &weft_wire::PeerSummary, conns: &[weft_wire::ConnectionSummary]) -> String {
    let bytes = |n: PeerName| {
        let b: Vec<String> = n.to_bytes().iter().map(u8::to_string).collect();
        format!("[{}]", b.join(" "))
    };
    let conns: Vec<String> = conns
        .iter()
        .map(|c| {
            format!(
                "{{NameByte:{} RemoteTCPAddr:{} Outbound:{} Established:{}}}",
                bytes(c.name),
                c.remote_tcp_addr,
                c.outbound,
                c.established
            )
        })
        .collect();
    format!(
        "decoded {{NameByte:{} NickName:{} UID:{} Version:{} ShortID:{} HasShortID:{}}} conns=[{}]",
        bytes(p.name),
        p.nick_name,
        p.uid,
        p.version,
        p.short_id,
        p.has_short_id,
        conns.join(" ")
    )
}

#[test]
fn topology_payload_matches_go() {
    let text = vector_file("gob-test-vectors.txt");
    let all = dumps("gob-test-vectors.txt");
    let payload = dump(&all, "--- topology payload");
    let peers = topology::decode(payload).unwrap();
    assert_eq!(peers.len(), 2);
    for (p, conns) in &peers {
        let line = go_text(p, conns);
        assert!(text.lines().any(|l| l == line), "Go did not print {line:?}");
    }
    assert_eq!(peers[0].0.name, A);
    assert_eq!(peers[0].0.uid, 0x1122_3344_5566_7788);
    assert_eq!(peers[0].1[0].name, B);
    assert!(peers[1].1.is_empty());
    assert_eq!(
        topology::encode(&peers),
        payload,
        "byte-exact topology payload"
    );
}

#[test]
fn gossip_framing_matches_go() {
    let all = dumps("gob-test-vectors.txt");
    let payload = dump(&all, "--- topology payload").to_vec();
    let gossip_body = dump(&all, "--- gossip body gobEncode");
    let msg = ProtocolMsg::Gossip {
        channel: "topology".into(),
        src: A,
        payload,
    };
    let mut body = Vec::new();
    msg.encode(&mut body);
    assert_eq!(body[0], 4);
    assert_eq!(&body[1..], gossip_body);
    assert_eq!(ProtocolMsg::decode(&body), Ok(Some(msg.clone())));

    let full = dump(&all, "--- full v2 unencrypted frame");
    let mut framed = Vec::new();
    frame::encode(&body, &mut framed).unwrap();
    assert_eq!(framed, full);
    let (b, used) = frame::parse(full).unwrap().unwrap();
    assert_eq!(used, full.len());
    assert_eq!(ProtocolMsg::decode(b), Ok(Some(msg)));

    let unicast = dump(&all, "--- unicast body gobEncode");
    let mut tagged = vec![5];
    tagged.extend_from_slice(unicast);
    let msg = ProtocolMsg::GossipUnicast {
        channel: "IPallocation".into(),
        src: A,
        dst: B,
        payload: vec![0, 1, 2],
    };
    assert_eq!(ProtocolMsg::decode(&tagged), Ok(Some(msg.clone())));
    let mut again = Vec::new();
    msg.encode(&mut again);
    assert_eq!(again, tagged);
}

#[test]
fn top_level_singletons() {
    let all = dumps("gob-test-vectors.txt");
    let one = |prefix: &str| {
        let v = decode_all(dump(&all, prefix));
        assert_eq!(v.len(), 1, "{prefix}");
        v.into_iter().next().map(|(_, v)| v)
    };
    assert_eq!(
        one("--- gob string \"topology\""),
        Some(Value::String("topology".into()))
    );
    assert_eq!(
        one("--- gob PeerName aa:bb:cc:dd:ee:01"),
        Some(Value::Uint(A.0))
    );
    assert_eq!(
        one("--- gob []byte{1,2,3}"),
        Some(Value::Bytes(vec![1, 2, 3]))
    );
    assert_eq!(one("--- gob PeerName 0"), Some(Value::Uint(0)));
    let v1 = decode_all(dump(&all, "--- v1 stream"));
    assert_eq!(v1.len(), 2);
    assert_eq!(v1[1], (Type::Bytes, Value::Bytes(vec![0])));
    assert_eq!(
        v1[0].1,
        Value::Map(vec![(
            Value::String("Name".into()),
            Value::String("aa:bb:cc:dd:ee:01".into())
        )])
    );
}

fn single(prefix: &str, skip: usize) -> Value {
    let all = dumps("gob-test-vectors.txt");
    let mut v = decode_all(&dump(&all, prefix)[skip..]);
    assert_eq!(v.len(), 1, "{prefix}");
    v.remove(0).1
}

fn u(v: &Value, path: &[&str]) -> Option<u64> {
    let mut cur = v;
    for p in path {
        cur = cur.field(p)?;
    }
    cur.as_u64()
}

#[test]
fn ipam_values() {
    let ring = single("--- IPAM gossipState with ring", 0);
    assert_eq!(
        ring.field("Now").and_then(Value::as_i64),
        Some(1_700_000_000)
    );
    assert_eq!(
        ring.field("Nicknames").and_then(Value::as_map),
        Some(&[(Value::Uint(A.0), Value::String("host1".into()))][..])
    );
    assert_eq!(ring.field("Paxos"), None, "nil Paxos map is absent");
    let r = ring.field("Ring").expect("ring present");
    assert_eq!(u(r, &["Start"]), Some(0xac10_1000));
    assert_eq!(u(r, &["End"]), Some(0xac10_1100));
    assert_eq!(u(r, &["Peer"]), Some(A.0));
    let entries = r
        .field("Entries")
        .and_then(Value::as_slice)
        .expect("entries");
    let tokens: Vec<_> = entries
        .iter()
        .map(|e| (u(e, &["Token"]), u(e, &["Peer"]), u(e, &["Free"])))
        .collect();
    assert_eq!(
        tokens,
        [
            (Some(0xac10_1000), Some(A.0), Some(128)),
            (Some(0xac10_1080), Some(B.0), Some(128))
        ]
    );
    assert_eq!(
        r.field("Seeds").and_then(Value::as_slice),
        Some(&[Value::Uint(A.0), Value::Uint(B.0)][..])
    );

    let observer = single("--- IPAM gossipState observer", 0);
    assert_eq!(observer.field("Paxos"), None);
    assert_eq!(observer.field("Ring"), None);
    let elector = single("--- IPAM gossipState elector", 0);
    assert_eq!(
        elector.field("Paxos"),
        Some(&Value::Map(vec![])),
        "empty, not nil"
    );
    assert_eq!(elector.field("Ring"), None);

    let paxos = single("--- IPAM gossipState during paxos", 0);
    let claims = paxos
        .field("Paxos")
        .and_then(Value::as_map)
        .expect("paxos map");
    assert_eq!(claims.len(), 1);
    let (node, claim) = &claims[0];
    assert_eq!(u(node, &["Name"]), Some(A.0));
    assert_eq!(u(node, &["UID"]), Some(0x1234));
    assert_eq!(u(claim, &["Promise", "Round"]), Some(1));
    assert_eq!(u(claim, &["Promise", "Proposer", "Name"]), Some(A.0));

    let range = single("--- space request msg", 1);
    assert_eq!(u(&range, &["Start"]), Some(0xac10_1000));
    assert_eq!(u(&range, &["End"]), Some(0xac10_1100));
}

/// Every IPAM dump through `weft_wire::ipam`: the Rust values Go meant, and Go's bytes again.
#[test]
fn ipam_payloads_decode_and_re_encode_byte_for_byte() {
    use std::net::Ipv4Addr;

    use weft_wire::gob::mapping;
    use weft_wire::ipam::{
        Entry, GossipState, NodeClaims, NodeId, ProposalId, Range, Ring, UnicastMsg,
    };

    let all = dumps("gob-test-vectors.txt");
    let ipam: Vec<&Dump> = all
        .iter()
        .filter(|d| d.title.starts_with("--- IPAM"))
        .collect();
    assert_eq!(ipam.len(), 4, "IPAM gossipState dumps");
    for d in &ipam {
        let state = GossipState::decode(&d.bytes).unwrap_or_else(|e| panic!("{}: {e}", d.title));
        assert_eq!(
            state.encode(),
            d.bytes,
            "{}: bytes differ from Go's",
            d.title
        );
        assert_eq!(state.now, 1_700_000_000, "{}", d.title);
        assert_eq!(
            state.nicknames,
            BTreeMap::from([(A, "host1".to_string())]),
            "{}",
            d.title
        );
        // The same state as a unicast ring update: the kind byte, then the same stream.
        let unicast = UnicastMsg::RingUpdate(state.clone()).encode();
        assert_eq!(unicast[0], 1);
        assert_eq!(&unicast[1..], d.bytes);
        assert_eq!(
            UnicastMsg::decode(&unicast),
            Ok(UnicastMsg::RingUpdate(state))
        );
    }

    let ip = |d: u8| Ipv4Addr::new(172, 16, 16, d);
    let with_ring = GossipState::decode(dump(&all, "--- IPAM gossipState with ring")).unwrap();
    assert_eq!(
        with_ring.paxos, None,
        "a peer with a ring sends no Paxos map"
    );
    assert_eq!(
        with_ring.ring,
        Some(Ring {
            start: ip(0),
            end: Ipv4Addr::new(172, 16, 17, 0),
            peer: A,
            entries: vec![
                Entry {
                    token: ip(0),
                    peer: A,
                    version: 0,
                    free: 128
                },
                Entry {
                    token: ip(128),
                    peer: B,
                    version: 0,
                    free: 128
                },
            ],
            seeds: vec![A, B],
        })
    );
    let observer = GossipState::decode(dump(&all, "--- IPAM gossipState observer")).unwrap();
    assert_eq!((observer.paxos, observer.ring), (None, None));
    let elector = GossipState::decode(dump(&all, "--- IPAM gossipState elector")).unwrap();
    assert_eq!(elector.paxos, Some(BTreeMap::new()), "empty, not nil");
    let paxos = GossipState::decode(dump(&all, "--- IPAM gossipState during paxos")).unwrap();
    let node = NodeId {
        name: A,
        uid: 0x1234,
    };
    let promise = ProposalId {
        round: 1,
        proposer: node,
    };
    let claims = NodeClaims {
        promise,
        ..NodeClaims::default()
    };
    assert_eq!(paxos.paxos, Some(BTreeMap::from([(node, claims)])));
    assert_eq!(paxos.ring, None);

    let request = dump(&all, "--- space request msg");
    let range = Range {
        start: ip(0),
        end: Ipv4Addr::new(172, 16, 17, 0),
    };
    assert_eq!(
        UnicastMsg::decode(request),
        Ok(UnicastMsg::SpaceRequest(range))
    );
    // Go's test process had registered 76 types before `Range`; from there the bytes are Go's.
    let mut again = vec![0];
    mapping::encode::<Range, _>(&mut Encoder::with_first_type_id(77), &range, &mut again).unwrap();
    assert_eq!(again, request);
    // With a fresh process's ids, the values are the same.
    let fresh = UnicastMsg::SpaceRequest(range).encode();
    assert_eq!(
        UnicastMsg::decode(&fresh),
        Ok(UnicastMsg::SpaceRequest(range))
    );
    let denied = UnicastMsg::SpaceRequestDenied(range).encode();
    assert_eq!(denied[0], 2);
    assert_eq!(&denied[1..], &fresh[1..]);
}

#[test]
fn dns_values() {
    let gd = single("--- DNS GossipData", 0);
    assert_eq!(
        gd.field("Timestamp").and_then(Value::as_i64),
        Some(1_700_000_000)
    );
    let entries = gd
        .field("Entries")
        .and_then(Value::as_slice)
        .expect("entries");
    let s = |e: &Value, f: &str| e.field(f).and_then(Value::as_str).map(str::to_string);
    let i = |e: &Value, f: &str| e.field(f).and_then(Value::as_i64).unwrap_or(0);
    assert_eq!(entries.len(), 2);
    assert_eq!(s(&entries[0], "ContainerID").as_deref(), Some("def456"));
    assert_eq!(
        s(&entries[0], "Hostname").as_deref(),
        Some("db.weave.local.")
    );
    assert_eq!(u(&entries[0], &["Origin"]), Some(A.0));
    assert_eq!(u(&entries[0], &["Addr"]), Some(0x0a20_0002));
    assert_eq!(i(&entries[0], "Version"), 2);
    assert_eq!(i(&entries[0], "Tombstone"), 1_700_000_001);
    assert_eq!(s(&entries[1], "ContainerID").as_deref(), Some("abc123"));
    assert_eq!(
        s(&entries[1], "Hostname").as_deref(),
        Some("web.weave.local.")
    );
    assert_eq!(u(&entries[1], &["Addr"]), Some(0x0a20_0001));
    assert_eq!(i(&entries[1], "Tombstone"), 0);
}

/// The 271-byte `GossipData` dump decodes to Weave's values and re-encodes to Go's bytes.
#[test]
fn dns_gossip_data_is_byte_exact() {
    use std::net::Ipv4Addr;

    use weft_wire::dns::{Entry, GossipData};

    let all = dumps("gob-test-vectors.txt");
    let bytes = dump(&all, "--- DNS GossipData");
    assert_eq!(bytes.len(), 271);
    let expected = GossipData {
        timestamp: 1_700_000_000,
        entries: vec![
            Entry {
                container_id: "def456".into(),
                origin: A,
                addr: Ipv4Addr::new(10, 32, 0, 2),
                hostname: "db.weave.local.".into(),
                version: 2,
                tombstone: 1_700_000_001,
            },
            Entry {
                container_id: "abc123".into(),
                origin: A,
                addr: Ipv4Addr::new(10, 32, 0, 1),
                hostname: "web.weave.local.".into(),
                version: 0,
                tombstone: 0,
            },
        ],
    };
    assert_eq!(GossipData::decode(bytes), Ok(expected.clone()));
    assert_eq!(expected.encode(), bytes);
    // Whatever order the entries are in, they go out in Weave's gossip order.
    let mut reversed = expected.clone();
    reversed.entries.reverse();
    assert_eq!(reversed.encode(), bytes);
}

#[test]
fn sleeve_heartbeat_datagram_is_42_bytes() {
    let d = sleeve::encode_heartbeat(A, A, B, 42);
    assert_eq!(d.len(), 42);
    let (sender, mut frames) = sleeve::parse(&d).unwrap();
    assert_eq!(sender, A);
    let f = frames.next().unwrap().unwrap();
    assert_eq!(sleeve::heartbeat_uid(f.data), Some(42));
}

/// A frame of the live capture: its direction, index, declared length and (maybe truncated)
/// body bytes.
struct LiveFrame {
    dir: String,
    index: usize,
    len: usize,
    bytes: Vec<u8>,
}

fn live_frames() -> Vec<LiveFrame> {
    dumps("live-handshake.txt")
        .into_iter()
        .filter_map(|d| {
            let (dir, rest) = d.title.split_once(' ')?;
            let rest = rest.strip_prefix("frame ")?;
            let mut words = rest.split_whitespace();
            let index = words.next()?.parse().ok()?;
            let len = words.next()?.strip_prefix("len=")?.parse().ok()?;
            Some(LiveFrame {
                dir: dir.to_string(),
                index,
                len,
                bytes: d.bytes,
            })
        })
        .collect()
}

#[test]
fn live_headers() {
    let text = vector_file("live-handshake.txt");
    let headers: Vec<_> = text.lines().filter(|l| l.contains("] header: ")).collect();
    assert_eq!(headers.len(), 2);
    for h in headers {
        assert!(h.ends_with("\"weave\" [1 2]"), "{h}");
        assert_eq!(header::negotiate((1, 2), (1, 2)), Ok(2));
    }
}

#[test]
fn live_features_frames() {
    let frames = live_frames();
    let f0: Vec<_> = frames.iter().filter(|f| f.index == 0).collect();
    assert_eq!(f0.len(), 2);
    for f in f0 {
        assert_eq!(f.bytes.len(), f.len, "features frame {} is complete", f.dir);
        let map = features::decode(&f.bytes).unwrap();
        assert_eq!(map.len(), 7);
        let (name, nick, conn_id, uid, short) = if f.dir == "[A->B]" {
            (
                "aa:bb:cc:dd:ee:01",
                "hostA",
                "13459668846073313536",
                "5200852476807705722",
                "1983",
            )
        } else {
            (
                "aa:bb:cc:dd:ee:02",
                "hostB",
                "13443309433074544697",
                "3669051288424320187",
                "1194",
            )
        };
        let get = |k: &str| map.get(k).map(String::as_str);
        assert_eq!(get("Name"), Some(name));
        assert_eq!(get("NickName"), Some(nick));
        assert_eq!(get("ConnID"), Some(conn_id));
        assert_eq!(get("UID"), Some(uid));
        assert_eq!(get("ShortID"), Some(short));
        assert_eq!(get("PeerNameFlavour"), Some("mac"));
        assert_eq!(get("Trusted"), Some("false"));
        assert_eq!(get("Overlays"), None);
        // Wire order is Go's random map order; the generic codec keeps it, byte for byte.
        assert_eq!(encode_all(&decode_all(&f.bytes), Encoder::new()), f.bytes);
        assert_eq!(features::decode(&features::encode(&map)), Ok(map));
    }
}

#[test]
fn live_topology_frames() {
    let frames = live_frames();
    let all = dumps("gob-test-vectors.txt");
    let payload_dump = dump(&all, "--- topology payload");
    let gossip: Vec<_> = frames.iter().filter(|f| f.index > 0).collect();
    assert_eq!(gossip.len(), 8);
    for f in gossip {
        // The capture shows only the first 160 bytes of each gossip frame.
        assert!(
            f.bytes.len() < f.len,
            "frame {} {} is truncated in the dump",
            f.dir,
            f.index
        );
        assert_eq!(f.bytes[0], 4, "tag gossip");
        let sender = if f.dir == "[A->B]" { A } else { B };
        let mut input = &f.bytes[1..];
        let mut dec = Decoder::new();
        let (_, channel) = dec.decode_next(&mut input).unwrap().unwrap();
        assert_eq!(channel, Value::String("topology".into()));
        let (_, src) = dec.decode_next(&mut input).unwrap().unwrap();
        assert_eq!(src, Value::Uint(sender.0));
        // The payload's []byte message length accounts exactly for the rest of the frame.
        assert_eq!(input[0], 0xfe, "two-byte message length");
        let msg_len = usize::from(u16::from_be_bytes([input[1], input[2]]));
        assert_eq!((f.bytes.len() - input.len()) + 3 + msg_len, f.len);
        // Truncated data is an error, never a panic.
        assert!(dec.decode_next(&mut input).is_err());
        assert!(ProtocolMsg::decode(&f.bytes).is_err());

        // The payload itself: the peerSummary definition is whole and decodes; the value after
        // it is cut off. Our topology encoder writes the same definition bytes.
        // Skip the message length (3), type id and singleton (2), byte count (3).
        let payload = &input[3 + 2 + 3..];
        let def_len = 1 + usize::from(payload[0]);
        assert_eq!(payload[..def_len], payload_dump[..def_len]);
        let mut rest = payload;
        let mut dec = Decoder::new();
        assert!(dec.decode_next(&mut rest).is_err());
        assert_eq!(rest.len(), payload.len() - def_len, "definition consumed");
        assert_eq!(&rest[..3], [0x24, 0xff, 0x84], "peerSummary value follows");
    }
    // hostA's UID in its peerSummary equals the UID of its features map.
    let f1 = frames
        .iter()
        .find(|f| f.dir == "[A->B]" && f.index == 1)
        .unwrap();
    let at = f1
        .bytes
        .windows(7)
        .position(|w| w == b"hostA\x01\xf8")
        .unwrap()
        + 7;
    let uid = u64::from_be_bytes(f1.bytes[at..at + 8].try_into().unwrap());
    assert_eq!(uid, 5_200_852_476_807_705_722);
}
