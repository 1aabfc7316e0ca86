//! The `topology` gossip channel's payload: one gob stream (fresh encoder per payload) holding,
//! for each peer in the update, a `peerSummary` struct followed by a `[]connectionSummary`.
//! The first peer brings the `peerSummary` definition, the first connection list those of the
//! slice and of `connectionSummary`; an empty connection list is still sent.
//!
//! Both structs are declared with [`gob_struct!`](crate::gob_struct), so decoding follows the
//! mapping's rules: fields matched by name (Go's struct names and unknown extra fields are
//! ignored), absent fields zero, each value's type checked before the value is read. On top of
//! those, a `NameByte` that is not 6 bytes, a `ShortID` above 4095 and a peer without its
//! connection list are errors, and a payload may define at most [`MAX_TYPES`] types. Merge
//! rules are weft-core's business, not this module's.

use crate::error::DecodeError;
use crate::gob::mapping::{self, Bool, GobKind, Kind, SliceOf, Str, Uint};
use crate::gob::{Decoder, Encoder, Type, Value};
use crate::gob_struct;
use crate::peer::{ConnectionSummary, PeerName, PeerSummary};

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

const PEER_CONTEXT: &str = "topology peerSummary";
const CONN_CONTEXT: &str = "topology []connectionSummary";

gob_struct! {
    PeerSummary as "peerSummary" {
        "NameByte" => name: NameBytes,
        "NickName" => nick_name: Str,
        "UID" => uid: Uint,
        "Version" => version: Uint,
        "ShortID" => short_id: ShortId,
        "HasShortID" => has_short_id: Bool,
    }
}

gob_struct! {
    ConnectionSummary as "connectionSummary" {
        "NameByte" => name: NameBytes,
        "RemoteTCPAddr" => remote_tcp_addr: Str,
        "Outbound" => outbound: Bool,
        "Established" => established: Bool,
    }
}

/// A peer name as topology sends it: 6 bytes (`NameByte`); any other length, a missing field
/// included, is [`DecodeError::BadNameByte`].
#[derive(Debug)]
pub enum NameBytes {}

impl GobKind for NameBytes {
    fn gob_type() -> Type {
        Type::Bytes
    }
}

impl Kind<PeerName> for NameBytes {
    fn to_value(v: &PeerName) -> Value {
        Value::Bytes(v.to_bytes().to_vec())
    }

    fn from_value(v: Value, _: &'static str) -> Result<PeerName, DecodeError> {
        let b = v.as_bytes().unwrap_or_default();
        PeerName::from_bytes(b).ok_or(DecodeError::BadNameByte(b.len()))
    }

    fn absent(_: &'static str) -> Result<PeerName, DecodeError> {
        Err(DecodeError::BadNameByte(0))
    }
}

/// A 12-bit short id sent as a `uint`; above [`MAX_SHORT_ID`] is
/// [`DecodeError::ShortIdOutOfRange`].
#[derive(Debug)]
pub enum ShortId {}

impl GobKind for ShortId {
    fn gob_type() -> Type {
        Type::Uint
    }
}

impl Kind<u16> for ShortId {
    fn to_value(v: &u16) -> Value {
        Value::Uint(u64::from(*v))
    }

    fn from_value(v: Value, context: &'static str) -> Result<u16, DecodeError> {
        let short = <Uint as Kind<u64>>::from_value(v, context)?;
        u16::try_from(short)
            .ok()
            .filter(|s| *s <= MAX_SHORT_ID)
            .ok_or(DecodeError::ShortIdOutOfRange(short))
    }

    fn absent(_: &'static str) -> Result<u16, DecodeError> {
        Ok(0)
    }
}

/// Go's `peerSummary` type.
pub fn peer_summary_type() -> Type {
    PeerSummary::gob_type()
}

/// Go's `[]connectionSummary` type.
pub fn connection_list_type() -> Type {
    ConnectionList::gob_type()
}

type ConnectionList = SliceOf<ConnectionSummary>;

/// The payload announcing `peers`, each with its connection list.
pub fn encode(peers: &[(PeerSummary, Vec<ConnectionSummary>)]) -> Vec<u8> {
    let mut enc = Encoder::with_first_type_id(GO_FIRST_TOPOLOGY_TYPE_ID);
    let mut out = Vec::new();
    for (peer, conns) in peers {
        // Cannot fail: the values are built by the mapping from its own types.
        let ok = mapping::encode::<PeerSummary, _>(&mut enc, peer, &mut out).is_ok()
            && mapping::encode::<ConnectionList, _>(&mut enc, conns, &mut out).is_ok();
        debug_assert!(ok, "topology values match their types");
    }
    out
}

/// The peers and connection lists in a payload, in order.
pub fn decode(b: &[u8]) -> Result<Vec<(PeerSummary, Vec<ConnectionSummary>)>, DecodeError> {
    let mut input = b;
    let mut dec = Decoder::with_type_limit(MAX_TYPES);
    let mut out = Vec::new();
    while let Some(peer) =
        mapping::decode_next::<PeerSummary, _>(&mut dec, &mut input, PEER_CONTEXT)?
    {
        let conns = mapping::decode_next::<ConnectionList, _>(&mut dec, &mut input, CONN_CONTEXT)?
            .ok_or(DecodeError::Missing {
                context: "topology",
                what: "connection list after peer summary",
            })?;
        out.push((peer, conns));
    }
    Ok(out)
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
        let mut v = PeerSummary::to_value(&good);
        if let Value::Struct(fs) = &mut v {
            fs[4].1 = Value::Uint(4096);
        }
        enc.encode(&peer_summary_type(), &v, &mut out).unwrap();
        enc.encode(&connection_list_type(), &Value::Slice(vec![]), &mut out)
            .unwrap();
        assert_eq!(decode(&out), Err(DecodeError::ShortIdOutOfRange(4096)));

        let mut out = Vec::new();
        let mut v = PeerSummary::to_value(&good);
        if let Value::Struct(fs) = &mut v {
            fs[0].1 = Value::Bytes(vec![1, 2, 3, 4, 5]);
        }
        let mut enc = Encoder::new();
        enc.encode(&peer_summary_type(), &v, &mut out).unwrap();
        enc.encode(&connection_list_type(), &Value::Slice(vec![]), &mut out)
            .unwrap();
        assert_eq!(decode(&out), Err(DecodeError::BadNameByte(5)));

        let odd = Type::structure(
            "peerSummary",
            [("NameByte", Type::Bytes), ("UID", Type::String)],
        );
        let v = Value::structure([
            ("NameByte", Value::Bytes(vec![0; 6])),
            ("UID", Value::String("1".into())),
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
        let Type::Struct(peer) = peer_summary_type() else {
            panic!("peerSummary is a struct");
        };
        let mut fields: Vec<(&str, Type)> =
            peer.fields.iter().map(|(n, t)| (&**n, t.clone())).collect();
        fields.insert(2, ("Extra", Type::slice(Type::Int)));
        let ty = Type::structure("somethingElse", fields);
        let v = Value::structure([
            ("NameByte", Value::Bytes(vec![0xaa, 0, 0, 0, 0, 1])),
            ("Extra", Value::Slice(vec![Value::Int(-3)])),
            ("UID", Value::Uint(7)),
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
