//! Fuzzing entry points, one per decoder, compiled under `cfg(fuzzing)` (cargo-fuzz sets it)
//! and in unit tests. The targets in `fuzz/` are one-line shims over these, so the harness
//! logic lives (and is type-checked) next to the code it exercises. Each must never panic on
//! any input; a panic is a finding.
//!
//! Each entry point also takes a [`HeapMeter`] (the fuzz targets pass one backed by a counting
//! global allocator) and asserts that decoding `n` bytes, result included, never held more than
//! [`DECODE_HEAP_PER_BYTE`]` * n + `[`DECODE_HEAP_BASE`] heap bytes at once. Round-trip checks
//! run after the measured part. The unit tests below replay the checked-in seed corpora.

use crate::gob::{Decoder, Encoder, Type, Value};
use crate::{DECODE_HEAP_BASE, DECODE_HEAP_PER_BYTE};

/// Runs the closure it is given and returns the most heap bytes held at once while it ran
/// (allocations made by the closure's thread, net of frees).
pub type HeapMeter = fn(&mut dyn FnMut()) -> u64;

/// A meter that measures nothing (for plain test runs without a counting allocator).
pub fn unmetered(f: &mut dyn FnMut()) -> u64 {
    f();
    0
}

/// Runs `decode` under `meter` and asserts the heap bound for `data`.
fn metered<T>(data: &[u8], meter: HeapMeter, what: &str, decode: impl FnOnce() -> T) -> T {
    let mut decode = Some(decode);
    let mut out = None;
    let peak = meter(&mut || {
        if let Some(d) = decode.take() {
            out = Some(d());
        }
    });
    let limit = (DECODE_HEAP_PER_BYTE as u64)
        .saturating_mul(data.len() as u64)
        .saturating_add(DECODE_HEAP_BASE as u64);
    assert!(
        peak <= limit,
        "{what}: {peak} heap bytes for {} input bytes (limit {limit})",
        data.len()
    );
    match out {
        Some(v) => v,
        None => panic!("{what}: the meter did not run the decoder"),
    }
}

/// Whether two decoded values are the same, floats compared by bits (so NaN equals itself).
fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Float(x), Value::Float(y)) => x.to_bits() == y.to_bits(),
        (Value::Slice(x), Value::Slice(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(p, q)| same(p, q))
        }
        (Value::Map(x), Value::Map(y)) => {
            x.len() == y.len()
                && x.iter()
                    .zip(y)
                    .all(|((k1, v1), (k2, v2))| same(k1, k2) && same(v1, v2))
        }
        (Value::Struct(x), Value::Struct(y)) => {
            x.len() == y.len()
                && x.iter()
                    .zip(y)
                    .all(|((n1, v1), (n2, v2))| n1 == n2 && same(v1, v2))
        }
        _ => a == b,
    }
}

/// Decodes a gob stream; whatever decodes must re-encode and decode to the same values.
pub fn gob(data: &[u8], meter: HeapMeter) {
    let values: Vec<(Type, Value)> = metered(data, meter, "gob", || {
        let mut input = data;
        let mut dec = Decoder::new();
        let mut values = Vec::new();
        while let Ok(Some(tv)) = dec.decode_next(&mut input) {
            values.push(tv);
        }
        values
    });
    let mut enc = Encoder::new();
    let mut again = Vec::new();
    for (ty, v) in &values {
        if let Err(e) = enc.encode(ty, v, &mut again) {
            panic!("decoded value does not re-encode: {e}");
        }
    }
    let mut input = &again[..];
    let mut dec = Decoder::new();
    for (ty, v) in &values {
        match dec.decode_next(&mut input) {
            Ok(Some((t2, v2))) => {
                assert!(*ty == t2 && same(v, &v2), "round trip changed a value");
            }
            Ok(None) => panic!("re-encoded stream ends early"),
            Err(e) => panic!("re-encoded stream does not decode: {e}"),
        }
    }
}

/// Builds a gob stream from `data` read as a small program ([`type_stream`]) and checks it as
/// [`gob`] does. Random bytes rarely spell a well-formed type definition; this target makes the
/// fuzzer explore type graphs (forward, missing, recursive and shared components, the caps)
/// instead of the `wireType` syntax.
pub fn gob_types(data: &[u8], meter: HeapMeter) {
    gob(&type_stream(data), meter);
}

/// The bytes of a program still to be read; reads past the end give zeros.
struct Program<'a>(&'a [u8]);

impl Program<'_> {
    fn byte(&mut self) -> u8 {
        let (&b, rest) = self.0.split_first().unwrap_or((&0, &[]));
        self.0 = rest;
        b
    }

    fn take(&mut self, n: usize) -> &[u8] {
        let (head, rest) = self.0.split_at(n.min(self.0.len()));
        self.0 = rest;
        head
    }

    /// A type id: mostly one of 24 user ids (so references meet definitions), else a
    /// predefined, unsupported or invalid one.
    fn type_id(&mut self) -> i64 {
        match self.byte() {
            b @ 0..0x20 => i64::from(b % 18),
            b => crate::gob::FIRST_USER_TYPE_ID + i64::from(b % 24),
        }
    }
}

/// The gob stream a fuzz input describes: a sequence of operations, each an opcode byte and
/// its operands: define a struct (name length, field count, then per field a name byte and a
/// type id), a slice, an array (length byte), a map or an opaque type under a user id (whose
/// byte's top bits also name a slice, array or map); send a value message of some type id with
/// up to 31 raw body bytes; or append up to 15 raw bytes.
pub fn type_stream(data: &[u8]) -> Vec<u8> {
    use std::sync::Arc;

    use crate::gob::{put_definition, put_message, WireDef, FIRST_USER_TYPE_ID};

    let mut p = Program(data);
    let mut out = Vec::new();
    while !p.0.is_empty() {
        let op = p.byte() % 7;
        let def = match op {
            0 => {
                let name = "N".repeat(usize::from(p.byte() % 64));
                let n = p.byte() % 12;
                let fields = (0..n)
                    .map(|_| (Arc::from(format!("F{}", p.byte() % 16)), p.type_id()))
                    .collect();
                WireDef::Struct {
                    name: Arc::from(name),
                    fields,
                }
            }
            1 => WireDef::Slice {
                name: Arc::from(""),
                elem: p.type_id(),
            },
            2 => WireDef::Array {
                name: Arc::from(""),
                len: usize::from(p.byte() % 8),
                elem: p.type_id(),
            },
            3 => WireDef::Map {
                name: Arc::from(""),
                key: p.type_id(),
                elem: p.type_id(),
            },
            4 => WireDef::Opaque,
            5 => {
                let id = p.type_id();
                let n = usize::from(p.byte() % 32);
                put_message(&mut out, id, p.take(n));
                continue;
            }
            _ => {
                let n = usize::from(p.byte() % 16);
                out.extend_from_slice(p.take(n));
                continue;
            }
        };
        let id_byte = p.byte();
        let id = FIRST_USER_TYPE_ID + i64::from(id_byte % 24);
        // The id byte's top bits name a slice, array or map type, so named and unnamed twins
        // of a type meet (without changing what older programs spell).
        let mut def = def;
        if let WireDef::Slice { name, .. }
        | WireDef::Array { name, .. }
        | WireDef::Map { name, .. } = &mut def
        {
            *name = Arc::from(match id_byte >> 6 {
                3 => "T",
                2 => "U",
                _ => "",
            });
        }
        // Cannot fail: array lengths are below 8.
        let _ = put_definition(&mut out, id, &def);
    }
    out
}

/// Decodes a protocol message body.
pub fn protocol(data: &[u8], meter: HeapMeter) {
    let decoded = metered(data, meter, "protocol", || {
        crate::protocol::ProtocolMsg::decode(data)
    });
    if let Ok(Some(msg)) = decoded {
        let mut out = Vec::new();
        msg.encode(&mut out);
        assert_eq!(
            crate::protocol::ProtocolMsg::decode(&out).ok().flatten(),
            Some(msg)
        );
    }
}

/// Decodes a topology gossip payload.
pub fn topology(data: &[u8], meter: HeapMeter) {
    let decoded = metered(data, meter, "topology", || crate::topology::decode(data));
    if let Ok(peers) = decoded {
        assert_eq!(
            crate::topology::decode(&crate::topology::encode(&peers)),
            Ok(peers)
        );
    }
}

/// Decodes a `weft-topology` payload; whatever decodes must re-encode to the same message.
pub fn topology_delta(data: &[u8], meter: HeapMeter) {
    let decoded = metered(data, meter, "topology_delta", || {
        crate::topology_delta::Message::decode(data)
    });
    if let Ok(m) = decoded {
        match m.encode() {
            Ok(b) => assert_eq!(crate::topology_delta::Message::decode(&b), Ok(m)),
            Err(e) => panic!("decoded message does not re-encode: {e}"),
        }
    }
}

/// Decodes an IPAM gossip payload (a `gossipState`); whatever decodes must re-encode to a
/// payload that decodes to the same state.
pub fn ipam_gossip(data: &[u8], meter: HeapMeter) {
    use crate::ipam::GossipState;
    let decoded = metered(data, meter, "ipam_gossip", || GossipState::decode(data));
    if let Ok(state) = decoded {
        assert_eq!(GossipState::decode(&state.encode()), Ok(state));
    }
}

/// Decodes an IPAM unicast payload (kind byte, then a `Range` or a `gossipState`); whatever
/// decodes must re-encode to a payload that decodes to the same message.
pub fn ipam_unicast(data: &[u8], meter: HeapMeter) {
    use crate::ipam::UnicastMsg;
    let decoded = metered(data, meter, "ipam_unicast", || UnicastMsg::decode(data));
    if let Ok(msg) = decoded {
        assert_eq!(UnicastMsg::decode(&msg.encode()), Ok(msg));
    }
}

/// Decodes a `weft-ipam` payload (a ring delta); whatever decodes must re-encode to the same
/// bytes.
pub fn ipam_delta(data: &[u8], meter: HeapMeter) {
    use crate::ipam_delta::RingDelta;
    let decoded = metered(data, meter, "ipam_delta", || RingDelta::decode(data));
    if let Ok(d) = decoded {
        match d.encode() {
            Ok(b) => assert_eq!(b, data),
            Err(e) => panic!("decoded delta does not re-encode: {e}"),
        }
    }
}

/// Decodes a DNS gossip payload (a `GossipData`); whatever decodes must re-encode to a payload
/// that decodes to the same data (entries in gossip order).
pub fn dns_gossip(data: &[u8], meter: HeapMeter) {
    use crate::dns::{Entry, GossipData};
    let decoded = metered(data, meter, "dns_gossip", || GossipData::decode(data));
    if let Ok(mut d) = decoded {
        let again = GossipData::decode(&d.encode());
        d.entries.sort_by(Entry::gossip_order);
        assert_eq!(again, Ok(d));
    }
}

/// Decodes a handshake features map.
pub fn features(data: &[u8], meter: HeapMeter) {
    let decoded = metered(data, meter, "features", || crate::features::decode(data));
    if let Ok(map) = decoded {
        assert_eq!(
            crate::features::decode(&crate::features::encode(&map)),
            Ok(map)
        );
    }
}

/// Parses a sleeve datagram and all its frames.
pub fn sleeve(data: &[u8], meter: HeapMeter) {
    metered(data, meter, "sleeve", || {
        if let Ok((_, frames)) = crate::sleeve::parse(data) {
            for f in frames.flatten() {
                let _ = crate::sleeve::heartbeat_uid(f.data);
            }
        }
    });
}

// Tests may unwrap: a panic is how they fail.
#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::path::PathBuf;

    use super::HeapMeter;

    /// Runs every file of `fuzz/corpus/<target>/` through `entry`; returns how many ran.
    fn replay(target: &str, entry: fn(&[u8], HeapMeter)) -> usize {
        let dir: PathBuf = [
            env!("CARGO_MANIFEST_DIR"),
            "..",
            "..",
            "fuzz",
            "corpus",
            target,
        ]
        .iter()
        .collect();
        let entries = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("fuzz corpus {} missing: {e}", dir.display()));
        let mut n = 0;
        for file in entries {
            let path = file.unwrap().path();
            entry_point_on(&path, entry);
            n += 1;
        }
        n
    }

    fn entry_point_on(path: &std::path::Path, entry: fn(&[u8], HeapMeter)) {
        let data = std::fs::read(path).unwrap();
        entry(&data, super::unmetered);
        // Every prefix too: truncation is the commonest corruption.
        for cut in 0..data.len() {
            entry(data.get(..cut).unwrap_or_default(), super::unmetered);
        }
    }

    #[test]
    fn type_programs_spell_streams() {
        // Define []bool as id 65, then send a value of it: one element, true.
        let stream = super::type_stream(&[1, 0x01, 0, 5, 0x30, 3, 0x00, 0x01, 0x01]);
        let mut input = &stream[..];
        let got = crate::gob::Decoder::new().decode_next(&mut input).unwrap();
        assert_eq!(
            got,
            Some((
                crate::gob::Type::slice(crate::gob::Type::Bool),
                crate::gob::Value::Slice(vec![crate::gob::Value::Bool(true)])
            ))
        );
        assert!(input.is_empty());
    }

    #[test]
    fn an_exceeded_heap_bound_is_a_finding() {
        let greedy: HeapMeter = |f| {
            f();
            u64::MAX
        };
        let caught = std::panic::catch_unwind(|| super::sleeve(&[0; 6], greedy));
        assert!(caught.is_err());
    }

    #[test]
    fn corpora_replay_without_panics() {
        assert!(replay("gob", super::gob) > 0);
        assert!(replay("protocol", super::protocol) > 0);
        assert!(replay("topology", super::topology) > 0);
        assert!(replay("features", super::features) > 0);
        assert!(replay("sleeve", super::sleeve) > 0);
        assert!(replay("topology_delta", super::topology_delta) > 0);
        assert!(replay("gob_types", super::gob_types) > 0);
        assert!(replay("ipam_gossip", super::ipam_gossip) > 0);
        assert!(replay("ipam_unicast", super::ipam_unicast) > 0);
        assert!(replay("ipam_delta", super::ipam_delta) > 0);
        assert!(replay("dns_gossip", super::dns_gossip) > 0);
    }

    #[test]
    fn seeds_decode() {
        let dir = |t: &str| -> PathBuf {
            [env!("CARGO_MANIFEST_DIR"), "..", "..", "fuzz", "corpus", t]
                .iter()
                .collect()
        };
        let topo = std::fs::read(dir("topology").join("two-peers")).unwrap();
        assert_eq!(crate::topology::decode(&topo).unwrap().len(), 2);
        let feat = std::fs::read(dir("features").join("live-hostA")).unwrap();
        assert_eq!(crate::features::decode(&feat).unwrap().len(), 7);
        let hb = std::fs::read(dir("sleeve").join("heartbeat")).unwrap();
        let (_, mut frames) = crate::sleeve::parse(&hb).unwrap();
        let f = frames.next().unwrap().unwrap();
        assert_eq!(
            crate::sleeve::heartbeat_uid(f.data),
            Some(0x0102_0304_0506_0708)
        );
    }
}
