//! The boundary between IPAM's own types and Weave Net's gob payloads
//! ([`weft_wire::ipam`]): conversions both ways and the payload bytes of the `IPallocation`
//! channel.
//!
//! Going out nothing can fail: our states always fit Weave's types. The one thing the wire
//! adds is the sender's clock (`Now`, Unix seconds), which the caller passes in, since nothing
//! here reads a clock. Coming in, everything is checked before it is converted: a gob error is
//! a [`WireError::Decode`], counts beyond the bounds the allocator itself keeps (nicknames,
//! Paxos nodes and values, ring entries and seeds) are refused before anything is copied, and a
//! space request's range must not be inverted. What makes a ring or a Paxos state consistent
//! (sorted tokens, free counts, versions, rounds) is judged by the allocator when it merges
//! ([`ring::validate`], [`paxos::validate`]), not twice here.
//!
//! "No Paxos field" (an observer, or a peer with a ring) and an empty Paxos map (an elector
//! before it proposes) stay distinct both ways: electors tell ring requests by that absence.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use weft_wire::ipam as w;
use weft_wire::DecodeError;

use super::allocator::{GossipState, UnicastMsg, MAX_NICKNAMES};
use super::paxos::{self, AcceptedValue, NodeClaims, NodeId, ProposalId};
use super::ring::{self, Entry, RingSnapshot};
use super::{Address, Range};

/// The gossip channel IPAM travels on, as Weave Net names it.
pub const CHANNEL: &str = w::CHANNEL;

/// A received IPAM payload that was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WireError {
    /// Not a well-formed gob payload of the expected type (or an unknown unicast kind byte).
    #[error(transparent)]
    Decode(#[from] DecodeError),
    /// More items than IPAM ever keeps from one peer.
    #[error("IPAM gossip carries {count} {what}, more than {max}")]
    TooMany {
        /// What was counted.
        what: &'static str,
        /// How many arrived.
        count: usize,
        /// The bound.
        max: usize,
    },
    /// A range whose end lies before its start.
    #[error("IPAM range {start}-{end} is inverted")]
    InvertedRange {
        /// Its start.
        start: Address,
        /// Its (exclusive) end.
        end: Address,
    },
}

/// A received gossip state with the sender's clock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stamped {
    /// The sender's clock when it sent the state, Unix seconds (informational).
    pub now: i64,
    /// The state.
    pub state: GossipState,
}

/// The gossip or broadcast payload carrying `state`, stamped with our clock `now` (Unix
/// seconds).
pub fn encode_gossip(state: &GossipState, now: i64) -> Vec<u8> {
    gossip_to_wire(state, now).encode()
}

/// The state in a gossip or broadcast payload.
pub fn decode_gossip(payload: &[u8]) -> Result<Stamped, WireError> {
    gossip_from_wire(w::GossipState::decode(payload)?)
}

/// The unicast payload carrying `msg`: the kind byte, then its gob value; a ring update is
/// stamped with our clock `now` (Unix seconds).
pub fn encode_unicast(msg: &UnicastMsg, now: i64) -> Vec<u8> {
    unicast_to_wire(msg, now).encode()
}

/// The message in a unicast payload (a ring update's clock is informational and dropped).
pub fn decode_unicast(payload: &[u8]) -> Result<UnicastMsg, WireError> {
    unicast_from_wire(w::UnicastMsg::decode(payload)?)
}

/// Our state as Weave's `gossipState`, stamped with `now`.
pub fn gossip_to_wire(state: &GossipState, now: i64) -> w::GossipState {
    w::GossipState {
        now,
        nicknames: state.nicknames.clone(),
        paxos: state.paxos.as_ref().map(paxos_to_wire),
        ring: state.ring.as_ref().map(ring_to_wire),
    }
}

/// A received `gossipState`, its counts checked.
pub fn gossip_from_wire(state: w::GossipState) -> Result<Stamped, WireError> {
    bounded("nicknames", state.nicknames.len(), MAX_NICKNAMES)?;
    Ok(Stamped {
        now: state.now,
        state: GossipState {
            nicknames: state.nicknames,
            paxos: state.paxos.map(paxos_from_wire).transpose()?,
            ring: state.ring.map(ring_from_wire).transpose()?,
        },
    })
}

/// A ring snapshot as Weave's `Ring`.
pub fn ring_to_wire(r: &RingSnapshot) -> w::Ring {
    w::Ring {
        start: r.start.into(),
        end: r.end.into(),
        peer: r.peer,
        entries: r
            .entries
            .iter()
            .map(|e| w::Entry {
                token: e.token.into(),
                peer: e.peer,
                version: e.version,
                free: e.free,
            })
            .collect(),
        seeds: r.seeds.clone(),
    }
}

/// A received `Ring`, its counts checked; whether it is a consistent ring is for the merge.
pub fn ring_from_wire(r: w::Ring) -> Result<RingSnapshot, WireError> {
    bounded("ring entries", r.entries.len(), ring::MAX_ENTRIES)?;
    bounded("ring seeds", r.seeds.len(), ring::MAX_ENTRIES)?;
    Ok(RingSnapshot {
        start: r.start.into(),
        end: r.end.into(),
        peer: r.peer,
        entries: r
            .entries
            .into_iter()
            .map(|e| Entry {
                token: e.token.into(),
                peer: e.peer,
                version: e.version,
                free: e.free,
            })
            .collect(),
        seeds: r.seeds,
    })
}

/// A Paxos state as Weave's `paxos.GossipState`.
pub fn paxos_to_wire(state: &paxos::GossipState) -> BTreeMap<w::NodeId, w::NodeClaims> {
    state
        .iter()
        .map(|(id, c)| {
            let claims = w::NodeClaims {
                promise: proposal_to_wire(c.promise),
                accepted: proposal_to_wire(c.accepted),
                accepted_val: w::AcceptedValue {
                    value: c.accepted_value.value.clone(),
                    origin: proposal_to_wire(c.accepted_value.origin),
                },
            };
            (node_to_wire(*id), claims)
        })
        .collect()
}

/// A received Paxos state, its counts checked; its rounds are for the merge to judge.
pub fn paxos_from_wire(
    state: BTreeMap<w::NodeId, w::NodeClaims>,
) -> Result<paxos::GossipState, WireError> {
    bounded("Paxos nodes", state.len(), paxos::MAX_NODES)?;
    state
        .into_iter()
        .map(|(id, c)| {
            bounded(
                "peers in a Paxos value",
                c.accepted_val.value.len(),
                paxos::MAX_NODES,
            )?;
            let claims = NodeClaims {
                promise: proposal_from_wire(c.promise),
                accepted: proposal_from_wire(c.accepted),
                accepted_value: AcceptedValue {
                    value: c.accepted_val.value,
                    origin: proposal_from_wire(c.accepted_val.origin),
                },
            };
            Ok((node_from_wire(id), claims))
        })
        .collect()
}

/// A unicast message as Weave's, a ring update stamped with `now`.
pub fn unicast_to_wire(msg: &UnicastMsg, now: i64) -> w::UnicastMsg {
    match msg {
        UnicastMsg::SpaceRequest(r) => w::UnicastMsg::SpaceRequest(range_to_wire(*r)),
        UnicastMsg::RingUpdate(s) => w::UnicastMsg::RingUpdate(gossip_to_wire(s, now)),
        UnicastMsg::SpaceRequestDenied(r) => {
            w::UnicastMsg::SpaceRequestDenied(range_to_wire(*r))
        }
    }
}

/// A received unicast message, checked.
pub fn unicast_from_wire(msg: w::UnicastMsg) -> Result<UnicastMsg, WireError> {
    Ok(match msg {
        w::UnicastMsg::SpaceRequest(r) => UnicastMsg::SpaceRequest(range_from_wire(r)?),
        w::UnicastMsg::RingUpdate(s) => UnicastMsg::RingUpdate(gossip_from_wire(s)?.state),
        w::UnicastMsg::SpaceRequestDenied(r) => {
            UnicastMsg::SpaceRequestDenied(range_from_wire(r)?)
        }
    })
}

/// A range as Weave's `address.Range`.
pub fn range_to_wire(r: Range) -> w::Range {
    w::Range {
        start: Ipv4Addr::from(r.start),
        end: Ipv4Addr::from(r.end),
    }
}

/// A received `address.Range`; an inverted one is refused (an empty one asks for nothing and
/// is harmless).
pub fn range_from_wire(r: w::Range) -> Result<Range, WireError> {
    let (start, end) = (Address::from(r.start), Address::from(r.end));
    if end < start {
        return Err(WireError::InvertedRange { start, end });
    }
    Ok(Range::new(start, end))
}

fn node_to_wire(id: NodeId) -> w::NodeId {
    w::NodeId {
        name: id.name,
        uid: id.uid,
    }
}

fn node_from_wire(id: w::NodeId) -> NodeId {
    NodeId {
        name: id.name,
        uid: id.uid,
    }
}

fn proposal_to_wire(p: ProposalId) -> w::ProposalId {
    w::ProposalId {
        round: p.round,
        proposer: node_to_wire(p.proposer),
    }
}

fn proposal_from_wire(p: w::ProposalId) -> ProposalId {
    ProposalId {
        round: p.round,
        proposer: node_from_wire(p.proposer),
    }
}

fn bounded(what: &'static str, count: usize, max: usize) -> Result<(), WireError> {
    if count > max {
        return Err(WireError::TooMany { what, count, max });
    }
    Ok(())
}
