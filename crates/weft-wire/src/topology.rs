//! The `topology` gossip channel's payload: one gob stream (fresh encoder per payload) holding,
//! for each peer in the update, a `peerSummary` struct followed by a `[]connectionSummary`.
//! The first peer brings the `peerSummary` definition, the first connection list those of the
//! slice and of `connectionSummary`; an empty connection list is still sent.
//!
//! Decoding matches fields by name (Go's struct names and unknown extra fields are ignored),
//! treats fields that are absent as zero, and rejects a field of the wrong type, a `NameByte`
//! that is not 6 bytes, a `ShortID` above 4095, and a peer without its connection list. Each
//! value's type is checked before the value is read, and a payload may define at most
//! [`MAX_TYPES`] types. Merge rules are weft-core's business, not this module's.

use crate::error::DecodeError;
use crate::gob::{Decoder, Encoder, StructType, Type, Value};
use crate::peer::{ConnectionSummary, PeerName, PeerSummary, PEER_NAME_LEN};

/// Largest short id (12 bits).
pub const MAX_SHORT_ID: u16 = 0x0fff;

/// Go registers `map[string]string` (the handshake features, id 65) before `peerSummary`, so
/// a Go router's topology stream starts at id 66. We start there too so that our payloads are
/// byte-for-byte Go's; decoders accept any ids.
const GO_FIRST_TOPOLOGY_TYPE_ID: i64 = 66;

/// Most type definitions a payload may carry: Go's writer defines three (`peerSummary`,
/// `[]connectionSummary`, `connectionSummary`); the rest is room for extra fields of composite
/// types, which are ignored.
pub const MAX_TYPES: usize = 8;

const PEER: &str = "peerSummary";
const CONN: &str = "connectionSummary";
const PEER_CONTEXT: &str = "topology peerSummary";
const CONN_CONTEXT: &str = "topology []connectionSummary";

fn struct_type(name: &str, fields: &[(&str, Type)]) -> Type {
    Type::structure(name, fields.iter().map(|(n, t)| (*n, t.clone())))
}

fn peer_fields() -> [(&'static str, Type); 6] {
    [
        ("NameByte", Type::Bytes),
        ("NickName", Type::String),
        ("UID", Type::Uint),
        ("Version", Type::Uint),
        ("ShortID", Type::Uint),
        ("HasShortID", Type::Bool),
    ]
}

fn conn_fields() -> [(&'static str, Type); 4] {
    [
        ("NameByte", Type::Bytes),
        ("RemoteTCPAddr", Type::String),
        ("Outbound", Type::Bool),
        ("Established", Type::Bool),
    ]
}

/// Go's `peerSummary` type.
pub fn peer_summary_type() -> Type {
    struct_type(PEER, &peer_fields())
}

/// Go's `[]connectionSummary` type.
pub fn connection_list_type() -> Type {
    Type::slice(struct_type(CONN, &conn_fields()))
}

fn f(name: &str, v: Value) -> (std::sync::Arc<str>, Value) {
    (name.into(), v)
}

fn peer_value(p: &PeerSummary) -> Value {
    Value::Struct(vec![
        f("NameByte", Value::Bytes(p.name.to_bytes().to_vec())),
        f("NickName", Value::String(p.nick_name.clone())),
        f("UID", Value::Uint(p.uid)),
        f("Version", Value::Uint(p.version)),
        f("ShortID", Value::Uint(u64::from(p.short_id))),
        f("HasShortID", Value::Bool(p.has_short_id)),
    ])
}

fn conn_value(c: &ConnectionSummary) -> Value {
    Value::Struct(vec![
        f("NameByte", Value::Bytes(c.name.to_bytes().to_vec())),
        f("RemoteTCPAddr", Value::String(c.remote_tcp_addr.clone())),
        f("Outbound", Value::Bool(c.outbound)),
        f("Established", Value::Bool(c.established)),
    ])
}

/// The payload announcing `peers`, each with its connection list.
pub fn encode(peers: &[(PeerSummary, Vec<ConnectionSummary>)]) -> Vec<u8> {
    let mut enc = Encoder::with_first_type_id(GO_FIRST_TOPOLOGY_TYPE_ID);
    let (pt, ct) = (peer_summary_type(), connection_list_type());
    let mut out = Vec::new();
    for (peer, conns) in peers {
        let list = Value::Slice(conns.iter().map(conn_value).collect());
        // Cannot fail: the values are built field by field from the types above.
        let ok = enc.encode(&pt, &peer_value(peer), &mut out).is_ok()
            && enc.encode(&ct, &list, &mut out).is_ok();
        debug_assert!(ok, "topology values match their types");
    }
    out
}

/// The peers and connection lists in a payload, in order.
pub fn decode(b: &[u8]) -> Result<Vec<(PeerSummary, Vec<ConnectionSummary>)>, DecodeError> {
    let mut input = b;
    let mut dec = Decoder::with_type_limit(MAX_TYPES);
    let mut out = Vec::new();
    while let Some((_, pv)) = dec.decode_next_checked(&mut input, check_peer_type)? {
        let peer = read_peer(&pv)?;
        let (_, cv) = dec
            .decode_next_checked(&mut input, check_conns_type)?
            .ok_or(DecodeError::Missing {
                context: "topology",
                what: "connection list after peer summary",
            })?;
        let conns = read_conns(&cv)?;
        out.push((peer, conns));
    }
    Ok(out)
}

fn check_peer_type(ty: &Type) -> Result<(), DecodeError> {
    check_struct(ty, &peer_fields(), PEER_CONTEXT).map(|_| ())
}

fn check_conns_type(ty: &Type) -> Result<(), DecodeError> {
    let Type::Slice(elem) = ty else {
        return Err(DecodeError::UnexpectedType {
            context: CONN_CONTEXT,
            expected: "slice",
            found: ty.describe(),
        });
    };
    check_struct(elem, &conn_fields(), CONN_CONTEXT).map(|_| ())
}

/// Checks that the wire struct declares each known field (if at all) with the expected type.
fn check_struct<'t>(
    ty: &'t Type,
    known: &[(&'static str, Type)],
    context: &'static str,
) -> Result<&'t StructType, DecodeError> {
    let Type::Struct(st) = ty else {
        return Err(DecodeError::UnexpectedType {
            context,
            expected: "struct",
            found: ty.describe(),
        });
    };
    for (name, want) in known {
        if let Some((_, got)) = st.fields.iter().find(|(n, _)| &**n == *name) {
            if got != want {
                return Err(DecodeError::UnexpectedType {
                    context,
                    expected: want.kind(),
                    // `name` is ours, so only the peer's type needs bounding.
                    found: format!("{} for field {name}", got.describe()),
                });
            }
        }
    }
    Ok(st)
}

fn uint(v: &Value, name: &str) -> u64 {
    v.field(name).and_then(Value::as_u64).unwrap_or(0)
}

fn flag(v: &Value, name: &str) -> bool {
    v.field(name).and_then(Value::as_bool).unwrap_or(false)
}

fn text(v: &Value, name: &str) -> String {
    v.field(name)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

fn name_byte(v: &Value) -> Result<PeerName, DecodeError> {
    let b = v
        .field("NameByte")
        .and_then(Value::as_bytes)
        .unwrap_or_default();
    if b.len() != PEER_NAME_LEN {
        return Err(DecodeError::BadNameByte(b.len()));
    }
    PeerName::from_bytes(b).ok_or(DecodeError::BadNameByte(b.len()))
}

/// The peer summary in a value whose type [`check_peer_type`] accepted.
fn read_peer(v: &Value) -> Result<PeerSummary, DecodeError> {
    let short = uint(v, "ShortID");
    let short_id = u16::try_from(short)
        .ok()
        .filter(|s| *s <= MAX_SHORT_ID)
        .ok_or(DecodeError::ShortIdOutOfRange(short))?;
    Ok(PeerSummary {
        name: name_byte(v)?,
        nick_name: text(v, "NickName"),
        uid: uint(v, "UID"),
        version: uint(v, "Version"),
        short_id,
        has_short_id: flag(v, "HasShortID"),
    })
}

/// The connections in a value whose type [`check_conns_type`] accepted.
fn read_conns(v: &Value) -> Result<Vec<ConnectionSummary>, DecodeError> {
    v.as_slice()
        .unwrap_or_default()
        .iter()
        .map(|c| {
            Ok(ConnectionSummary {
                name: name_byte(c)?,
                remote_tcp_addr: text(c, "RemoteTCPAddr"),
                outbound: flag(c, "Outbound"),
                established: flag(c, "Established"),
            })
        })
        .collect()
}

// Tests may unwrap: a panic is how they fail.
#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn arb_peer() -> impl Strategy<Value = (PeerSummary, Vec<ConnectionSummary>)> {
        let name = (0u64..=0xffff_ffff_ffff).prop_map(PeerName);
        let conn = (name.clone(), "\\PC{0,21}", any::<bool>(), any::<bool>()).prop_map(
            |(name, remote_tcp_addr, outbound, established)| ConnectionSummary {
                name,
                remote_tcp_addr,
                outbound,
                established,
            },
        );
        (
            name,
            "\\PC{0,10}",
            any::<u64>(),
            any::<u64>(),
            0u16..=MAX_SHORT_ID,
            any::<bool>(),
            prop::collection::vec(conn, 0..4),
        )
            .prop_map(
                |(name, nick_name, uid, version, short_id, has_short_id, conns)| {
                    (
                        PeerSummary {
                            name,
                            nick_name,
                            uid,
                            version,
                            short_id,
                            has_short_id,
                        },
                        conns,
                    )
                },
            )
    }

    #[test]
    fn empty_payload_is_empty() {
        assert_eq!(encode(&[]), Vec::<u8>::new());
        assert_eq!(decode(&[]), Ok(vec![]));
    }

    #[test]
    fn bad_fields_are_rejected() {
        let good = PeerSummary {
            name: PeerName(1),
            short_id: MAX_SHORT_ID,
            has_short_id: true,
            ..PeerSummary::default()
        };
        let bytes = encode(&[(good.clone(), vec![])]);
        assert_eq!(decode(&bytes), Ok(vec![(good.clone(), vec![])]));
        // Peer without connection list: drop the trailing 5-byte list message.
        let cut = bytes.len() - 5;
        let peer_only = bytes.get(..cut).unwrap_or_default();
        let without_list_defs: Vec<u8> = peer_only.to_vec();
        assert!(decode(&without_list_defs).is_err());

        // ShortID 4096, NameByte of 5 bytes, UID sent as a string.
        let mut enc = Encoder::new();
        let mut out = Vec::new();
        let mut v = peer_value(&good);
        if let Value::Struct(fs) = &mut v {
            fs[4].1 = Value::Uint(4096);
        }
        enc.encode(&peer_summary_type(), &v, &mut out).unwrap();
        enc.encode(&connection_list_type(), &Value::Slice(vec![]), &mut out)
            .unwrap();
        assert_eq!(decode(&out), Err(DecodeError::ShortIdOutOfRange(4096)));

        let mut out = Vec::new();
        let mut v = peer_value(&good);
        if let Value::Struct(fs) = &mut v {
            fs[0].1 = Value::Bytes(vec![1, 2, 3, 4, 5]);
        }
        let mut enc = Encoder::new();
        enc.encode(&peer_summary_type(), &v, &mut out).unwrap();
        enc.encode(&connection_list_type(), &Value::Slice(vec![]), &mut out)
            .unwrap();
        assert_eq!(decode(&out), Err(DecodeError::BadNameByte(5)));

        let odd = struct_type(PEER, &[("NameByte", Type::Bytes), ("UID", Type::String)]);
        let v = Value::Struct(vec![
            f("NameByte", Value::Bytes(vec![0; 6])),
            f("UID", Value::String("1".into())),
        ]);
        let mut out = Vec::new();
        Encoder::new().encode(&odd, &v, &mut out).unwrap();
        assert!(matches!(
            decode(&out),
            Err(DecodeError::UnexpectedType { .. })
        ));
    }

    #[test]
    fn unknown_fields_are_ignored() {
        let mut fields = peer_fields().to_vec();
        fields.insert(2, ("Extra", Type::slice(Type::Int)));
        let ty = struct_type("somethingElse", &fields);
        let v = Value::Struct(vec![
            f("NameByte", Value::Bytes(vec![0xaa, 0, 0, 0, 0, 1])),
            f("Extra", Value::Slice(vec![Value::Int(-3)])),
            f("UID", Value::Uint(7)),
        ]);
        let mut enc = Encoder::new();
        let mut out = Vec::new();
        enc.encode(&ty, &v, &mut out).unwrap();
        enc.encode(&connection_list_type(), &Value::Slice(vec![]), &mut out)
            .unwrap();
        let got = decode(&out).unwrap();
        assert_eq!(got[0].0.name, PeerName(0xaa00_0000_0001));
        assert_eq!(got[0].0.uid, 7);
    }

    proptest! {
        #[test]
        fn round_trips(peers in prop::collection::vec(arb_peer(), 0..4)) {
            prop_assert_eq!(decode(&encode(&peers)), Ok(peers));
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
            let _ = decode(&bytes);
        }

        #[test]
        fn mutated_payloads_never_panic(
            peers in prop::collection::vec(arb_peer(), 1..3),
            at in any::<prop::sample::Index>(),
            b in any::<u8>(),
        ) {
            let mut bytes = encode(&peers);
            let i = at.index(bytes.len());
            if let Some(x) = bytes.get_mut(i) { *x = b; }
            let _ = decode(&bytes);
        }
    }
}
