//! The boundary between IPAM's own types and Weave Net's gob payloads
//! ([`weft_wire::ipam`]): conversions both ways and the payload bytes of the `IPallocation`
//! channel; likewise for weft's ring deltas ([`weft_wire::ipam_delta`]) on the `weft-ipam`
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
//! A state carrying both a ring and Paxos claims, which Weave never sends, passes as it is: the
//! allocator's merge takes the ring, as Weave's does.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use weft_wire::ipam as w;
use weft_wire::ipam_delta::{self as wd, IpamDeltaError};
use weft_wire::DecodeError;

use super::allocator::{GossipDelta, GossipState, UnicastMsg, MAX_NICKNAMES};
use super::paxos::{self, AcceptedValue, NodeClaims, NodeId, ProposalId};
use super::ring::{self, Entry, RingSnapshot};
use super::{Address, Range};

/// The gossip channel IPAM travels on, as Weave Net names it.
pub const CHANNEL: &str = w::CHANNEL;
/// The gossip channel of weft's ring deltas, between weft peers only.
pub const DELTA_CHANNEL: &str = wd::CHANNEL;

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
    /// Not a well-formed ring delta.
    #[error(transparent)]
    Delta(#[from] IpamDeltaError),
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

/// The `weft-ipam` payload carrying `delta`; `None` only if it exceeds the payload's bounds,
/// which [`ring::MAX_DELTA_ENTRIES`] keeps a delta within. Nicknames too long for the payload
/// are left out: they are only for naming peers in `rmpeer` and status.
pub fn encode_delta(delta: &GossipDelta) -> Option<Vec<u8>> {
    let d = &delta.ring;
    let payload = wd::RingDelta {
        start: d.start.0,
        end: d.end.0,
        seeds_hash: d.seeds_hash,
        entries: d
            .entries
            .iter()
            .map(|de| wd::Entry {
                token: de.entry.token.0,
                peer: de.entry.peer,
                version: de.entry.version,
                free: de.entry.free,
                prev: de.prev.0,
                next: de.next.0,
            })
            .collect(),
        nicknames: delta
            .nicknames
            .iter()
            .filter(|(_, n)| n.len() <= usize::from(u8::MAX))
            .map(|(p, n)| (*p, n.clone()))
            .collect(),
    };
    payload.encode().ok()
}

/// The ring delta in a `weft-ipam` payload; whether it fits a ring is for the allocator.
pub fn decode_delta(payload: &[u8]) -> Result<GossipDelta, WireError> {
    let d = wd::RingDelta::decode(payload)?;
    Ok(GossipDelta {
        ring: ring::RingDelta {
            start: Address(d.start),
            end: Address(d.end),
            seeds_hash: d.seeds_hash,
            entries: d
                .entries
                .into_iter()
                .map(|e| ring::DeltaEntry {
                    entry: Entry {
                        token: Address(e.token),
                        peer: e.peer,
                        version: e.version,
                        free: e.free,
                    },
                    prev: Address(e.prev),
                    next: Address(e.next),
                })
                .collect(),
        },
        nicknames: d.nicknames.into_iter().collect(),
    })
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
        UnicastMsg::SpaceRequestDenied(r) => w::UnicastMsg::SpaceRequestDenied(range_to_wire(*r)),
    }
}

/// A received unicast message, checked.
pub fn unicast_from_wire(msg: w::UnicastMsg) -> Result<UnicastMsg, WireError> {
    Ok(match msg {
        w::UnicastMsg::SpaceRequest(r) => UnicastMsg::SpaceRequest(range_from_wire(r)?),
        w::UnicastMsg::RingUpdate(s) => UnicastMsg::RingUpdate(gossip_from_wire(s)?.state),
        w::UnicastMsg::SpaceRequestDenied(r) => UnicastMsg::SpaceRequestDenied(range_from_wire(r)?),
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

// Tests may unwrap: a panic is how they fail.
#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use proptest::prelude::*;
    use weft_types::Ipv4Cidr;
    use weft_wire::gob::{mapping, Encoder};
    use weft_wire::PeerName;

    use super::*;
    use crate::ipam::ring::Ring;
    use crate::ipam::{parse_subnet, CidrBlock};

    const A: PeerName = PeerName(0xaabb_ccdd_ee01);
    const B: PeerName = PeerName(0xaabb_ccdd_ee02);
    /// The clock of the process that wrote the vectors.
    const GO_NOW: i64 = 1_700_000_000;

    /// The hex dumps of the Go vectors file whose titles start with `prefix`, in order.
    fn go_dumps(prefix: &str) -> Vec<(String, Vec<u8>)> {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../weft-wire/tests/vectors/gob-test-vectors.txt"
        );
        let text = std::fs::read_to_string(path).unwrap();
        let mut found: Vec<(String, Vec<u8>)> = Vec::new();
        let mut open = false;
        for line in text.lines() {
            // `hexdump -C`: an 8-digit offset, two spaces, then up to 16 hex bytes before `|`.
            let hex = line
                .get(..8)
                .filter(|o| o.bytes().all(|b| b.is_ascii_hexdigit()))
                .and_then(|_| line.get(10..))
                .map(|rest| rest.split('|').next().unwrap_or_default());
            match hex {
                Some(hex) if open => {
                    let bytes = hex.split_whitespace().map(|h| u8::from_str_radix(h, 16));
                    let last = &mut found.last_mut().unwrap().1;
                    last.extend(bytes.map(Result::unwrap));
                }
                Some(_) => {}
                None => {
                    open = line.starts_with(prefix);
                    if open {
                        found.push((line.to_owned(), Vec::new()));
                    }
                }
            }
        }
        found
    }

    fn go_dump(prefix: &str) -> Vec<u8> {
        let mut all = go_dumps(prefix);
        assert_eq!(all.len(), 1, "dumps titled {prefix:?}");
        all.pop().unwrap().1
    }

    fn ip(d: u8) -> Address {
        Address(u32::from_be_bytes([172, 16, 16, d]))
    }

    fn go_universe() -> Range {
        Range::new(ip(0), Address(u32::from_be_bytes([172, 16, 17, 0])))
    }

    #[test]
    fn ipam_vectors_decode_to_core_and_encode_to_go_bytes() {
        let dumps = go_dumps("--- IPAM");
        assert_eq!(dumps.len(), 4, "IPAM gossipState dumps");
        for (title, bytes) in &dumps {
            let got = decode_gossip(bytes).unwrap_or_else(|e| panic!("{title}: {e}"));
            assert_eq!(got.now, GO_NOW, "{title}");
            assert_eq!(
                got.state.nicknames,
                BTreeMap::from([(A, "host1".to_owned())]),
                "{title}"
            );
            assert_eq!(&encode_gossip(&got.state, got.now), bytes, "{title}");
            // The same state as a unicast ring update: kind 1, then the same stream.
            let msg = UnicastMsg::RingUpdate(got.state);
            let unicast = encode_unicast(&msg, GO_NOW);
            assert_eq!((unicast[0], &unicast[1..]), (1, &bytes[..]), "{title}");
            assert_eq!(decode_unicast(&unicast), Ok(msg), "{title}");
        }

        let with_ring = decode_gossip(&go_dump("--- IPAM gossipState with ring")).unwrap();
        let entry = |token, peer| Entry {
            token,
            peer,
            version: 0,
            free: 128,
        };
        let expected = RingSnapshot {
            start: go_universe().start,
            end: go_universe().end,
            peer: A,
            entries: vec![entry(ip(0), A), entry(ip(128), B)],
            seeds: vec![A, B],
        };
        assert_eq!(with_ring.state.paxos, None);
        assert_eq!(with_ring.state.ring.as_ref(), Some(&expected));
        // Go's ring is a ring the allocator accepts.
        assert_eq!(ring::validate(&expected), Ok(()));

        let observer = decode_gossip(&go_dump("--- IPAM gossipState observer")).unwrap();
        assert_eq!((observer.state.paxos, observer.state.ring), (None, None));
        let elector = decode_gossip(&go_dump("--- IPAM gossipState elector")).unwrap();
        assert_eq!(
            elector.state.paxos,
            Some(BTreeMap::new()),
            "empty, not none"
        );
        assert_eq!(elector.state.ring, None);

        let during = decode_gossip(&go_dump("--- IPAM gossipState during paxos")).unwrap();
        let node = NodeId {
            name: A,
            uid: 0x1234,
        };
        let claims = NodeClaims {
            promise: ProposalId {
                round: 1,
                proposer: node,
            },
            ..NodeClaims::default()
        };
        assert_eq!(during.state.paxos, Some(BTreeMap::from([(node, claims)])));
        assert_eq!(during.state.ring, None);
    }

    #[test]
    fn ipam_space_request_vector() {
        let request = go_dump("--- space request msg");
        let msg = decode_unicast(&request).unwrap();
        assert_eq!(msg, UnicastMsg::SpaceRequest(go_universe()));
        // Go's process had registered 76 types before `Range`; with its type ids the bytes
        // are Go's exactly.
        let w::UnicastMsg::SpaceRequest(r) = unicast_to_wire(&msg, 0) else {
            panic!("not a space request");
        };
        let mut again = vec![w::MSG_SPACE_REQUEST];
        mapping::encode::<w::Range, _>(&mut Encoder::with_first_type_id(77), &r, &mut again)
            .unwrap();
        assert_eq!(again, request);
        // Denied: kind 2, the same body.
        let request = encode_unicast(&msg, 0);
        let UnicastMsg::SpaceRequest(r) = msg else {
            unreachable!()
        };
        let denied = encode_unicast(&UnicastMsg::SpaceRequestDenied(r), 0);
        assert_eq!((denied[0], &denied[1..]), (2, &request[1..]));
        assert_eq!(
            decode_unicast(&denied),
            Ok(UnicastMsg::SpaceRequestDenied(r))
        );
    }

    #[test]
    fn ipam_bad_kind_bytes_and_empty_payloads_are_refused() {
        let body = &go_dump("--- space request msg")[1..];
        for kind in [3u8, 0x7f, 0xff] {
            let payload = [&[kind][..], body].concat();
            assert!(
                matches!(
                    decode_unicast(&payload),
                    Err(WireError::Decode(DecodeError::UnknownKind { kind: k, .. })) if k == kind
                ),
                "kind {kind}"
            );
        }
        assert!(matches!(decode_unicast(&[]), Err(WireError::Decode(_))));
        assert!(matches!(decode_unicast(&[0]), Err(WireError::Decode(_))));
        assert!(matches!(decode_gossip(&[]), Err(WireError::Decode(_))));
        // A ring update whose body is a Range, and a space request whose body is a state.
        assert!(decode_unicast(&[&[1][..], body].concat()).is_err());
        let state = go_dump("--- IPAM gossipState observer");
        assert!(decode_unicast(&[&[0][..], &state[..]].concat()).is_err());
    }

    #[test]
    fn ipam_inverted_ranges_are_refused() {
        let inverted = w::UnicastMsg::SpaceRequest(w::Range {
            start: Ipv4Addr::new(10, 0, 0, 9),
            end: Ipv4Addr::new(10, 0, 0, 1),
        });
        let err = decode_unicast(&inverted.encode()).unwrap_err();
        assert_eq!(
            err,
            WireError::InvertedRange {
                start: Address(0x0a00_0009),
                end: Address(0x0a00_0001),
            }
        );
        assert_eq!(err.to_string(), "IPAM range 10.0.0.9-10.0.0.1 is inverted");
        let empty = w::Range {
            start: Ipv4Addr::new(10, 0, 0, 1),
            end: Ipv4Addr::new(10, 0, 0, 1),
        };
        assert_eq!(
            range_from_wire(empty).map(Range::size),
            Ok(0),
            "an empty range asks for nothing"
        );
    }

    #[test]
    fn ipam_huge_gob_counts_are_refused_before_allocating() {
        // The observer's value message: length, type id, Now, then the nicknames' count 1.
        let mut bytes = go_dump("--- IPAM gossipState observer");
        let host1 = [0xfa, 0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0x01, 0x05, b'h'];
        let name_at = bytes.windows(host1.len()).position(|w| w == host1).unwrap();
        let (count_at, len_at) = (name_at - 1, name_at - 11);
        assert_eq!((bytes[count_at], bytes[len_at]), (0x01, 0x18));
        // Claim 2^62 nicknames: eight more bytes, so the message length grows by eight.
        bytes.splice(count_at..=count_at, [0xf8, 0x40, 0, 0, 0, 0, 0, 0, 0]);
        bytes[len_at] += 8;
        assert!(matches!(decode_gossip(&bytes), Err(WireError::Decode(_))));
        // And a count a little beyond the bytes present.
        let mut bytes = go_dump("--- IPAM gossipState observer");
        bytes[count_at] = 0x7f;
        assert!(matches!(decode_gossip(&bytes), Err(WireError::Decode(_))));
    }

    #[test]
    fn ipam_counts_beyond_the_allocators_bounds_are_refused() {
        let nicknames: BTreeMap<PeerName, String> = (0..=MAX_NICKNAMES as u64)
            .map(|i| (PeerName(i), String::new()))
            .collect();
        let state = w::GossipState {
            nicknames,
            ..w::GossipState::default()
        };
        // Through the bytes, as a peer would send it.
        assert_eq!(
            decode_gossip(&state.encode()),
            Err(WireError::TooMany {
                what: "nicknames",
                count: MAX_NICKNAMES + 1,
                max: MAX_NICKNAMES,
            })
        );

        let node = |i: u64| w::NodeId {
            name: PeerName(i),
            uid: i,
        };
        let nodes = (0..=paxos::MAX_NODES as u64)
            .map(|i| (node(i), w::NodeClaims::default()))
            .collect();
        assert!(matches!(
            paxos_from_wire(nodes),
            Err(WireError::TooMany {
                what: "Paxos nodes",
                ..
            })
        ));
        let mut big_value = w::NodeClaims::default();
        big_value.accepted_val.value = vec![A; paxos::MAX_NODES + 1];
        assert!(matches!(
            paxos_from_wire(BTreeMap::from([(node(1), big_value)])),
            Err(WireError::TooMany {
                what: "peers in a Paxos value",
                ..
            })
        ));

        let wide = ring_to_wire(&RingSnapshot {
            start: Address(0),
            end: Address(u32::MAX),
            peer: A,
            entries: Vec::new(),
            seeds: Vec::new(),
        });
        let entry = w::Entry {
            token: Ipv4Addr::UNSPECIFIED,
            peer: A,
            version: 0,
            free: 0,
        };
        let too_many_entries = w::Ring {
            entries: vec![entry; ring::MAX_ENTRIES + 1],
            ..wide.clone()
        };
        assert!(matches!(
            ring_from_wire(too_many_entries),
            Err(WireError::TooMany {
                what: "ring entries",
                ..
            })
        ));
        let too_many_seeds = w::Ring {
            seeds: vec![A; ring::MAX_ENTRIES + 1],
            ..wide
        };
        assert!(matches!(
            ring_from_wire(too_many_seeds),
            Err(WireError::TooMany {
                what: "ring seeds",
                ..
            })
        ));
    }

    fn arb_name() -> impl Strategy<Value = PeerName> {
        (0u64..=PeerName::MAX.0).prop_map(PeerName)
    }

    fn arb_proposal() -> impl Strategy<Value = ProposalId> {
        (0..=paxos::MAX_ROUND, arb_name(), any::<u64>()).prop_map(|(round, name, uid)| ProposalId {
            round,
            proposer: NodeId { name, uid },
        })
    }

    fn arb_paxos() -> impl Strategy<Value = paxos::GossipState> {
        let id = (arb_name(), any::<u64>()).prop_map(|(name, uid)| NodeId { name, uid });
        let claims = (
            arb_proposal(),
            arb_proposal(),
            prop::collection::vec(arb_name(), 0..4),
            arb_proposal(),
        )
            .prop_map(|(promise, accepted, value, origin)| NodeClaims {
                promise,
                accepted,
                accepted_value: AcceptedValue { value, origin },
            });
        prop::collection::btree_map(id, claims, 0..4)
    }

    /// A ring the allocator would accept: a universe split among seeds, then donations.
    fn arb_ring() -> impl Strategy<Value = RingSnapshot> {
        (
            any::<u32>(),
            4u8..=30,
            prop::collection::btree_set(arb_name(), 1..6),
            prop::collection::vec(
                (any::<u32>(), any::<u32>(), any::<prop::sample::Index>()),
                0..4,
            ),
        )
            .prop_filter_map("a usable universe", |(addr, len, seeds, grants)| {
                let cidr = Ipv4Cidr::new(addr.into(), 32 - len).ok()?.network();
                let universe = parse_subnet(&cidr.to_string()).ok()?.range();
                let seeds: Vec<PeerName> = seeds.into_iter().collect();
                let mut ring = Ring::new(universe, seeds[0])?;
                ring.claim_for_peers(&seeds);
                for (at, len, to) in grants {
                    let start = universe.start.offset(at % universe.size());
                    let end = start.offset(1 + len % 64);
                    if end <= universe.end {
                        let _ = ring.grant(Range::new(start, end), *to.get(&seeds));
                    }
                }
                Some(ring.snapshot())
            })
    }

    fn arb_state() -> impl Strategy<Value = GossipState> {
        (
            prop::collection::btree_map(arb_name(), "\\PC{0,8}", 0..4),
            prop::option::of(arb_paxos()),
            prop::option::of(arb_ring()),
        )
            .prop_map(|(nicknames, paxos, ring)| GossipState {
                nicknames,
                paxos,
                ring,
            })
    }

    fn arb_range() -> impl Strategy<Value = Range> {
        (any::<u32>(), any::<u32>())
            .prop_map(|(a, b)| Range::new(Address(a.min(b)), Address(a.max(b))))
    }

    proptest! {
        #[test]
        fn ipam_states_round_trip_through_the_wire(state in arb_state(), now in any::<i64>()) {
            if let Some(r) = &state.ring {
                prop_assert_eq!(ring::validate(r), Ok(()));
            }
            let got = decode_gossip(&encode_gossip(&state, now)).unwrap();
            prop_assert_eq!(got.now, now);
            prop_assert_eq!(&got.state, &state);
            // And through the wire types alone, without bytes.
            prop_assert_eq!(gossip_from_wire(gossip_to_wire(&state, now)).unwrap().state, state);
        }

        #[test]
        fn ipam_unicasts_round_trip_through_the_wire(
            state in arb_state(),
            r in arb_range(),
            now in any::<i64>(),
        ) {
            for msg in [
                UnicastMsg::SpaceRequest(r),
                UnicastMsg::RingUpdate(state.clone()),
                UnicastMsg::SpaceRequestDenied(r),
            ] {
                prop_assert_eq!(decode_unicast(&encode_unicast(&msg, now)), Ok(msg));
            }
        }

        #[test]
        fn ipam_hostile_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
            let _ = decode_gossip(&bytes);
            let _ = decode_unicast(&bytes);
        }

        #[test]
        fn ipam_mutated_payloads_never_panic(
            state in arb_state(),
            at in any::<prop::sample::Index>(),
            b in any::<u8>(),
        ) {
            let mut bytes = encode_unicast(&UnicastMsg::RingUpdate(state), 0);
            let i = at.index(bytes.len());
            bytes[i] = b;
            let _ = decode_unicast(&bytes);
            let _ = decode_gossip(&bytes[1..]);
        }
    }
}
