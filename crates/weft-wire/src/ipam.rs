//! The payloads of Weave Net's IPAM gossip channel (`IPallocation`), declared with the gob
//! mapping ([`gob_struct!`](crate::gob_struct)) so each Go struct is written down once.
//!
//! * Gossip and broadcast payloads are one bare [`GossipState`]: the sender's clock, the
//!   nicknames it knows, its Paxos claims while no ring exists (nil for observers and peers with
//!   a ring, an empty map for an elector before it proposes), and its ring once there is one.
//! * Unicast payloads ([`UnicastMsg`]) start with a kind byte: `0` a space request, `1` a ring
//!   update, `2` a space request denied, followed by one gob value (a [`Range`] or a
//!   [`GossipState`]).
//!
//! Each payload is a gob stream of its own (a fresh encoder per payload, as Go's). Type names
//! are Go's, including those Go gives the slice and map types of struct fields, so our bytes
//! are Go's byte for byte (`tests/vectors.rs`). Decoding is the mapping's: every count and
//! length is checked against the bytes present before anything is allocated, a value's type is
//! checked before the value is read, at most [`MAX_TYPES`] definitions per payload, addresses
//! must fit 32 bits and peer names 48, and all of it fails with a [`DecodeError`], never a
//! panic. Whether a ring is consistent (sorted tokens, free counts) is for the ring's merge
//! to judge, not this module.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use crate::error::DecodeError;
use crate::gob::mapping::{self, Int, MapOf, Opt, SliceOf, Str, Uint};
use crate::gob::{Encoder, FIRST_USER_TYPE_ID};
use crate::gob_struct;
use crate::peer::PeerName;

/// The gossip channel these payloads travel on.
pub const CHANNEL: &str = "IPallocation";

/// Most type definitions a payload may carry: Go's `gossipState` stream defines 12; the rest is
/// room for fields a newer peer may add.
pub const MAX_TYPES: usize = 24;

/// Unicast kind byte of a space request ([`Range`]).
pub const MSG_SPACE_REQUEST: u8 = 0x00;
/// Unicast kind byte of a ring update ([`GossipState`]).
pub const MSG_RING_UPDATE: u8 = 0x01;
/// Unicast kind byte of a denied space request ([`Range`]).
pub const MSG_SPACE_REQUEST_DENIED: u8 = 0x02;

const GOSSIP_CONTEXT: &str = "IPAM gossipState";
const RANGE_CONTEXT: &str = "IPAM Range";

/// Go's `gossipState`: what an IPAM peer gossips.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct GossipState {
    /// The sender's clock, Unix seconds (informational: clock skew is logged).
    pub now: i64,
    /// Nicknames of the peers the sender knows.
    pub nicknames: BTreeMap<PeerName, String>,
    /// Paxos claims while the ring is being agreed on; `None` (nil) for observers and peers
    /// with a ring, `Some` (possibly empty) for electors.
    pub paxos: Option<BTreeMap<NodeId, NodeClaims>>,
    /// The sender's ring, once it has one.
    pub ring: Option<Ring>,
}

/// Go's `paxos.NodeID`: a peer incarnation taking part in Paxos.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct NodeId {
    /// The peer.
    pub name: PeerName,
    /// Its incarnation.
    pub uid: u64,
}

/// Go's `paxos.ProposalID`, ordered by round, then proposer (as Go orders them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct ProposalId {
    /// The round (1 + the highest seen when proposing).
    pub round: u64,
    /// Who proposed.
    pub proposer: NodeId,
}

/// Go's `paxos.AcceptedValue`: the peers a ring is to be created for, and the proposal that
/// chose them.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AcceptedValue {
    /// The seed peers (Go's `paxos.Value`).
    pub value: Vec<PeerName>,
    /// The proposal that chose them.
    pub origin: ProposalId,
}

/// Go's `paxos.NodeClaims`: one node's promise and accepted proposal.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NodeClaims {
    /// The highest proposal the node promised.
    pub promise: ProposalId,
    /// The highest proposal it accepted.
    pub accepted: ProposalId,
    /// The value it accepted with it.
    pub accepted_val: AcceptedValue,
}

/// Go's `ring.Ring`: the address universe `[start, end)` and who owns which part.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ring {
    /// First address of the universe.
    pub start: Ipv4Addr,
    /// End of the universe (exclusive).
    pub end: Ipv4Addr,
    /// The peer whose replica this is.
    pub peer: PeerName,
    /// Tokens in order; entry `i` owns `[token_i, token_{i+1})`, wrapping at the end.
    pub entries: Vec<Entry>,
    /// The peers the ring was created for, sorted.
    pub seeds: Vec<PeerName>,
}

/// One token of a [`Ring`] (Go's `ring.entry`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    /// First address of the range this entry owns.
    pub token: Ipv4Addr,
    /// The owner.
    pub peer: PeerName,
    /// Bumped by the owner on each change (by 100 on a transfer).
    pub version: u32,
    /// Free addresses the owner reports in the range.
    pub free: u32,
}

/// Go's `address.Range`: addresses `[start, end)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Range {
    /// First address.
    pub start: Ipv4Addr,
    /// End (exclusive).
    pub end: Ipv4Addr,
}

gob_struct! {
    GossipState as "gossipState" {
        "Now" => now: Int,
        "Nicknames" => nicknames: MapOf<Uint, Str> as "map[mesh.PeerName]string",
        "Paxos" => paxos: Opt<MapOf<NodeId, NodeClaims>> as "GossipState",
        "Ring" => ring: Opt<Ring>,
    }
}

// Go sends no name for `NodeID` and `NodeClaims`: it first meets them as a map's key and
// element, which gob registers without a name.
gob_struct! {
    NodeId as "" {
        "Name" => name: Uint,
        "UID" => uid: Uint,
    }
}

gob_struct! {
    NodeClaims as "" {
        "Promise" => promise: ProposalId,
        "Accepted" => accepted: ProposalId,
        "AcceptedVal" => accepted_val: AcceptedValue,
    }
}

gob_struct! {
    ProposalId as "ProposalID" {
        "Round" => round: Uint,
        "Proposer" => proposer: NodeId,
    }
}

gob_struct! {
    AcceptedValue as "AcceptedValue" {
        "Value" => value: SliceOf<Uint> as "Value",
        "Origin" => origin: ProposalId,
    }
}

gob_struct! {
    Ring as "Ring" {
        "Start" => start: Uint,
        "End" => end: Uint,
        "Peer" => peer: Uint,
        "Entries" => entries: SliceOf<Entry> as "entries",
        "Seeds" => seeds: SliceOf<Uint> as "[]mesh.PeerName",
    }
}

// `entries` is `[]*entry`, and gob registers a pointer's element without a name.
gob_struct! {
    Entry as "" {
        "Token" => token: Uint,
        "Peer" => peer: Uint,
        "Version" => version: Uint,
        "Free" => free: Uint,
    }
}

gob_struct! {
    Range as "Range" {
        "Start" => start: Uint,
        "End" => end: Uint,
    }
}

impl GossipState {
    /// The gossip (or broadcast) payload carrying this state.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        encode_from::<Self, _>(self, FIRST_USER_TYPE_ID, &mut out);
        out
    }

    /// The state in a gossip or broadcast payload: exactly one `gossipState` value.
    pub fn decode(payload: &[u8]) -> Result<Self, DecodeError> {
        mapping::decode_one::<Self, _>(payload, MAX_TYPES, GOSSIP_CONTEXT)
    }
}

/// An IPAM unicast payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UnicastMsg {
    /// "Give me some of your free space in this range" (Go's `msgSpaceRequest`).
    SpaceRequest(Range),
    /// The sender's state with its ring, in answer to a request or a ring-less broadcast
    /// (`msgRingUpdate`).
    RingUpdate(GossipState),
    /// "I have nothing free in this range" (`msgSpaceRequestDenied`).
    SpaceRequestDenied(Range),
}

impl UnicastMsg {
    /// The unicast payload: the kind byte, then the value's gob stream.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        match self {
            Self::SpaceRequest(r) => {
                out.push(MSG_SPACE_REQUEST);
                encode_from::<Range, _>(r, FIRST_USER_TYPE_ID, &mut out);
            }
            Self::RingUpdate(s) => {
                out.push(MSG_RING_UPDATE);
                encode_from::<GossipState, _>(s, FIRST_USER_TYPE_ID, &mut out);
            }
            Self::SpaceRequestDenied(r) => {
                out.push(MSG_SPACE_REQUEST_DENIED);
                encode_from::<Range, _>(r, FIRST_USER_TYPE_ID, &mut out);
            }
        }
        out
    }

    /// Decodes a unicast payload; an unknown kind byte is [`DecodeError::UnknownKind`].
    pub fn decode(payload: &[u8]) -> Result<Self, DecodeError> {
        let Some((&kind, body)) = payload.split_first() else {
            return Err(DecodeError::Missing {
                context: "IPAM unicast",
                what: "message kind",
            });
        };
        Ok(match kind {
            MSG_SPACE_REQUEST => Self::SpaceRequest(decode_range(body)?),
            MSG_RING_UPDATE => Self::RingUpdate(GossipState::decode(body)?),
            MSG_SPACE_REQUEST_DENIED => Self::SpaceRequestDenied(decode_range(body)?),
            _ => {
                return Err(DecodeError::UnknownKind {
                    context: "IPAM unicast",
                    kind,
                })
            }
        })
    }
}

fn decode_range(body: &[u8]) -> Result<Range, DecodeError> {
    mapping::decode_one::<Range, _>(body, MAX_TYPES, RANGE_CONTEXT)
}

/// Appends `v` as a fresh gob stream whose first type id is `first` (Go's ids are
/// process-wide; tests reproduce a Go process's).
pub(crate) fn encode_from<K: mapping::Kind<T>, T>(v: &T, first: i64, out: &mut Vec<u8>) {
    // Cannot fail: the values are built by the mapping from its own types.
    let ok = mapping::encode::<K, T>(&mut Encoder::with_first_type_id(first), v, out).is_ok();
    debug_assert!(ok, "IPAM values match their types");
}

// Tests may unwrap: a panic is how they fail.
#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn ring() -> Ring {
        Ring {
            start: Ipv4Addr::new(172, 16, 16, 0),
            end: Ipv4Addr::new(172, 16, 17, 0),
            peer: PeerName(0xaabb_ccdd_ee01),
            entries: vec![
                Entry {
                    token: Ipv4Addr::new(172, 16, 16, 0),
                    peer: PeerName(0xaabb_ccdd_ee01),
                    version: 0,
                    free: 128,
                },
                Entry {
                    token: Ipv4Addr::new(172, 16, 16, 128),
                    peer: PeerName(0xaabb_ccdd_ee02),
                    version: 3,
                    free: 128,
                },
            ],
            seeds: vec![PeerName(0xaabb_ccdd_ee01), PeerName(0xaabb_ccdd_ee02)],
        }
    }

    #[test]
    fn unicast_round_trips() {
        let r = Range {
            start: Ipv4Addr::new(10, 32, 0, 0),
            end: Ipv4Addr::new(10, 48, 0, 0),
        };
        let state = GossipState {
            now: 1_700_000_000,
            nicknames: BTreeMap::from([(PeerName(1), "h".into())]),
            paxos: None,
            ring: Some(ring()),
        };
        for m in [
            UnicastMsg::SpaceRequest(r),
            UnicastMsg::RingUpdate(state),
            UnicastMsg::SpaceRequestDenied(r),
        ] {
            assert_eq!(UnicastMsg::decode(&m.encode()), Ok(m));
        }
        assert_eq!(
            UnicastMsg::decode(&[7, 0]),
            Err(DecodeError::UnknownKind {
                context: "IPAM unicast",
                kind: 7
            })
        );
        assert!(UnicastMsg::decode(&[]).is_err());
        assert!(UnicastMsg::decode(&[MSG_SPACE_REQUEST]).is_err());
    }

    #[test]
    fn addresses_and_names_must_fit() {
        // A Range whose Start does not fit 32 bits.
        let mut out = Vec::new();
        let wide = crate::gob::Value::structure([("Start", crate::gob::Value::Uint(1 << 32))]);
        Encoder::new()
            .encode(&<Range as mapping::GobKind>::gob_type(), &wide, &mut out)
            .unwrap();
        assert!(matches!(
            decode_range(&out),
            Err(DecodeError::IntOutOfRange { target: "u32", .. })
        ));
        let mut bad = ring();
        bad.seeds.push(PeerName(1 << 50));
        let state = GossipState {
            ring: Some(bad),
            ..GossipState::default()
        };
        assert_eq!(
            GossipState::decode(&state.encode()),
            Err(DecodeError::PeerNameTooWide(1 << 50))
        );
    }

    #[test]
    fn a_range_is_not_a_gossip_state() {
        let mut out = Vec::new();
        let r = Range {
            start: Ipv4Addr::new(1, 0, 0, 0),
            end: Ipv4Addr::new(2, 0, 0, 0),
        };
        encode_from::<Range, _>(&r, FIRST_USER_TYPE_ID, &mut out);
        // No field in common: refused, as Go refuses it.
        assert!(matches!(
            GossipState::decode(&out),
            Err(DecodeError::UnexpectedType { .. })
        ));
        let odd = crate::gob::Type::structure("x", [("Now", crate::gob::Type::String)]);
        let v = crate::gob::Value::structure([("Now", crate::gob::Value::String("1".into()))]);
        let mut out = Vec::new();
        Encoder::new().encode(&odd, &v, &mut out).unwrap();
        assert!(matches!(
            GossipState::decode(&out),
            Err(DecodeError::UnexpectedType { .. })
        ));
    }

    fn arb_name() -> impl Strategy<Value = PeerName> {
        (0u64..=PeerName::MAX.0).prop_map(PeerName)
    }

    fn arb_node() -> impl Strategy<Value = NodeId> {
        (arb_name(), any::<u64>()).prop_map(|(name, uid)| NodeId { name, uid })
    }

    fn arb_proposal() -> impl Strategy<Value = ProposalId> {
        (any::<u64>(), arb_node()).prop_map(|(round, proposer)| ProposalId { round, proposer })
    }

    fn arb_state() -> impl Strategy<Value = GossipState> {
        let claims = (
            arb_proposal(),
            arb_proposal(),
            prop::collection::vec(arb_name(), 0..3),
            arb_proposal(),
        )
            .prop_map(|(promise, accepted, value, origin)| NodeClaims {
                promise,
                accepted,
                accepted_val: AcceptedValue { value, origin },
            });
        let entry = (any::<u32>(), arb_name(), any::<u32>(), any::<u32>()).prop_map(
            |(token, peer, version, free)| Entry {
                token: Ipv4Addr::from(token),
                peer,
                version,
                free,
            },
        );
        let ring = (
            any::<u32>(),
            any::<u32>(),
            arb_name(),
            prop::collection::vec(entry, 0..4),
            prop::collection::vec(arb_name(), 0..3),
        )
            .prop_map(|(start, end, peer, entries, seeds)| Ring {
                start: Ipv4Addr::from(start),
                end: Ipv4Addr::from(end),
                peer,
                entries,
                seeds,
            });
        (
            any::<i64>(),
            prop::collection::btree_map(arb_name(), "\\PC{0,8}", 0..3),
            prop::option::of(prop::collection::btree_map(arb_node(), claims, 0..3)),
            prop::option::of(ring),
        )
            .prop_map(|(now, nicknames, paxos, ring)| GossipState {
                now,
                nicknames,
                paxos,
                ring,
            })
    }

    proptest! {
        #[test]
        fn states_round_trip(state in arb_state()) {
            prop_assert_eq!(GossipState::decode(&state.encode()), Ok(state.clone()));
            let m = UnicastMsg::RingUpdate(state);
            prop_assert_eq!(UnicastMsg::decode(&m.encode()), Ok(m));
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
            let _ = GossipState::decode(&bytes);
            let _ = UnicastMsg::decode(&bytes);
        }

        #[test]
        fn mutated_states_never_panic(
            state in arb_state(),
            at in any::<prop::sample::Index>(),
            b in any::<u8>(),
        ) {
            let mut bytes = state.encode();
            let i = at.index(bytes.len());
            if let Some(x) = bytes.get_mut(i) { *x = b; }
            let _ = GossipState::decode(&bytes);
        }
    }
}
