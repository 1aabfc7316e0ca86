//! IPAM on the mesh: the `IPallocation` gossip channel (Weave Net's name, spec §3.5) between
//! the [`Mesh`] and the [`Allocator`].
//!
//! The IPAM task registers the channel ([`register`]), hands every
//! [`MeshEvent::Channel`](crate::mesh::MeshEvent::Channel) for it to [`handle_message`], and
//! passes each [`Output`] it drains, in order, to [`outgoing`]: broadcasts and unicasts become a
//! [`ChannelSend`] to give to the mesh ([`ChannelSend::send`]); replies and persistence records
//! are the task's to act on. Periodic gossip is
//! [`periodic_gossip`], sent with [`Mesh::gossip_neighbours`].
//!
//! The roles follow Weave's `Allocator` gossiper: periodic gossip is merged with no sender and
//! never relayed (`OnGossip` returns nil); a broadcast is merged with its originator as sender
//! (so a ring-less one is a ring request), the mesh having relayed it already; a unicast goes to
//! [`Allocator::handle_unicast`]. An error means the sender's state is incompatible or hostile;
//! Weave closes the connection it came on, and the task decides the same from the error.
//! Clocks are Unix seconds passed in, for the wire's informational `Now`.

use weft_wire::PeerName;

use super::allocator::{Allocator, GossipError, Output};
use super::wire::{self, WireError, CHANNEL};
use crate::mesh::{ChannelError, ChannelMessage, Mesh};

/// A message on the channel that was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ReceiveError {
    /// The payload was malformed or out of bounds.
    #[error("IPAM message from {src}: {error}")]
    Wire {
        /// The peer it came from.
        src: PeerName,
        /// What was wrong.
        #[source]
        error: WireError,
    },
    /// The allocator refused the state (invalid ring, different seeds or universe, …).
    #[error("IPAM message from {src}: {error}")]
    Gossip {
        /// The peer it came from.
        src: PeerName,
        /// Why.
        #[source]
        error: GossipError,
    },
}

/// Something to send on the channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChannelSend {
    /// To every reachable peer.
    Broadcast(Vec<u8>),
    /// To one peer.
    Unicast {
        /// The peer.
        dst: PeerName,
        /// The unicast payload (kind byte and value).
        payload: Vec<u8>,
    },
}

impl ChannelSend {
    /// Hands this to the mesh.
    pub fn send(self, mesh: &mut Mesh) -> Result<(), ChannelError> {
        match self {
            Self::Broadcast(payload) => mesh.gossip_broadcast(CHANNEL, payload),
            Self::Unicast { dst, payload } => mesh.gossip_unicast(CHANNEL, dst, payload),
        }
    }
}

/// Registers the IPAM channel with the mesh (once, when IPAM is enabled).
pub fn register(mesh: &mut Mesh) -> Result<(), ChannelError> {
    mesh.register_channel(CHANNEL)
}

/// Feeds what arrived on the channel to the allocator; drain [`Allocator::poll_output`] after.
pub fn handle_message(alloc: &mut Allocator, message: ChannelMessage) -> Result<(), ReceiveError> {
    let (src, result) = match message {
        ChannelMessage::Gossip { src, payload } => (src, gossip(alloc, None, &payload)),
        ChannelMessage::Broadcast { src, payload } => (src, gossip(alloc, Some(src), &payload)),
        ChannelMessage::Unicast { src, payload } => {
            let r = match wire::decode_unicast(&payload) {
                Ok(msg) => alloc.handle_unicast(src, msg).map_err(Refused::Gossip),
                Err(e) => Err(Refused::Wire(e)),
            };
            (src, r)
        }
    };
    result.map_err(|r| match r {
        Refused::Wire(error) => ReceiveError::Wire { src, error },
        Refused::Gossip(error) => ReceiveError::Gossip { src, error },
    })
}

/// What to send for an allocator output, stamped with our clock `now` (Unix seconds); `None`
/// for replies and persistence records, which are the caller's to act on.
pub fn outgoing(output: &Output, now: i64) -> Option<ChannelSend> {
    match output {
        Output::Broadcast(state) => Some(ChannelSend::Broadcast(wire::encode_gossip(state, now))),
        Output::Unicast { dst, msg } => Some(ChannelSend::Unicast {
            dst: *dst,
            payload: wire::encode_unicast(msg, now),
        }),
        Output::Reply { .. } | Output::Persist(_) => None,
    }
}

/// The payload of the periodic gossip: the allocator's current state (Weave encodes at send
/// time), for [`Mesh::gossip_neighbours`].
pub fn periodic_gossip(alloc: &Allocator, now: i64) -> Vec<u8> {
    wire::encode_gossip(&alloc.gossip_state(), now)
}

enum Refused {
    Wire(WireError),
    Gossip(GossipError),
}

fn gossip(alloc: &mut Allocator, sender: Option<PeerName>, payload: &[u8]) -> Result<(), Refused> {
    let stamped = wire::decode_gossip(payload).map_err(Refused::Wire)?;
    alloc
        .handle_gossip(sender, stamped.state)
        .map_err(Refused::Gossip)
}

// Tests may unwrap: a panic is how they fail.
#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::collections::{BTreeSet, VecDeque};
    use std::time::{Duration, Instant};

    use weft_wire::ipam as w;

    use super::*;
    use crate::handshake::LocalIdentity;
    use crate::ipam::allocator::{Config, InitMode, PersistRecord, Reply, RequestId, UnicastMsg};
    use crate::ipam::ring::RingError;
    use crate::ipam::{Address, Cidr, Range};
    use crate::mesh::{MeshConfig, MeshEvent};

    const A: PeerName = PeerName(0xaa_0000_0001);
    const B: PeerName = PeerName(0xbb_0000_0002);
    const NOW: i64 = 1_700_000_000;

    fn allocator(name: PeerName, mode: InitMode, now: Instant) -> Allocator {
        let config = Config {
            name,
            uid: name.0,
            nickname: format!("host-{:x}", name.0),
            universe: Cidr::parse_subnet("172.16.16.0/24").unwrap(),
            mode,
            pre_claims: vec![],
            rng_seed: name.0,
        };
        let mut a = Allocator::new(config, None, now).unwrap();
        a.set_known_peers(BTreeSet::from([A, B]));
        a
    }

    /// Carries everything the allocators send through the channel adapter, as the mesh would
    /// deliver it, until nothing is left; returns the replies.
    fn exchange(peers: &mut [&mut Allocator]) -> Vec<(PeerName, RequestId, Reply)> {
        let mut replies = Vec::new();
        let mut wire: VecDeque<(PeerName, ChannelSend)> = VecDeque::new();
        for _ in 0..1000 {
            for p in peers.iter_mut() {
                let src = p.name();
                while let Some(out) = p.poll_output() {
                    match (outgoing(&out, NOW), out) {
                        (Some(send), _) => wire.push_back((src, send)),
                        (None, Output::Reply { id, result }) => {
                            replies.push((src, id, result.unwrap()))
                        }
                        (None, _) => {}
                    }
                }
            }
            let Some((src, send)) = wire.pop_front() else {
                return replies;
            };
            for p in peers.iter_mut().filter(|p| p.name() != src) {
                let message = match &send {
                    ChannelSend::Broadcast(payload) => ChannelMessage::Broadcast {
                        src,
                        payload: payload.clone(),
                    },
                    ChannelSend::Unicast { dst, payload } if *dst == p.name() => {
                        ChannelMessage::Unicast {
                            src,
                            payload: payload.clone(),
                        }
                    }
                    ChannelSend::Unicast { .. } => continue,
                };
                handle_message(p, message).unwrap();
            }
        }
        panic!("the allocators never fell quiet");
    }

    /// One round of periodic gossip each way (free counts travel only there), then quiet.
    fn gossip_both_ways(a: &mut Allocator, b: &mut Allocator) {
        let payload = periodic_gossip(a, NOW);
        handle_message(
            b,
            ChannelMessage::Gossip {
                src: a.name(),
                payload,
            },
        )
        .unwrap();
        let payload = periodic_gossip(b, NOW);
        handle_message(
            a,
            ChannelMessage::Gossip {
                src: b.name(),
                payload,
            },
        )
        .unwrap();
        exchange(&mut [a, b]);
    }

    fn allocated(replies: &[(PeerName, RequestId, Reply)], peer: PeerName) -> Vec<Cidr> {
        replies
            .iter()
            .filter_map(|(p, _, r)| match r {
                Reply::Allocated(c) if *p == peer => Some(*c),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn ipam_observer_gets_the_ring_and_space_through_the_channel() {
        let now = Instant::now();
        let mut a = allocator(A, InitMode::Seed(vec![A]), now);
        let mut b = allocator(B, InitMode::Observer, now);
        let subnet = Cidr::parse_subnet("172.16.16.0/24").unwrap();
        a.allocate(RequestId(1), "ca", subnet, true);
        // B has no ring: its broadcast asks for one, A answers with a ring update, then B
        // asks A for space and A donates.
        b.allocate(RequestId(2), "cb", subnet, true);
        let replies = exchange(&mut [&mut a, &mut b]);
        let (got_a, got_b) = (allocated(&replies, A), allocated(&replies, B));
        assert_eq!(got_a.len(), 1, "{replies:?}");
        assert_eq!(got_b.len(), 1, "{replies:?}");
        assert_ne!(got_a[0].addr, got_b[0].addr);
        assert!(!b.ring().is_empty());
        gossip_both_ways(&mut a, &mut b);
        assert_eq!(a.ring().entries(), b.ring().entries(), "one ring");
        assert_eq!(
            a.ring().owner(got_b[0].addr),
            Some(B),
            "B owns what it gave out"
        );
        assert!(a.check_invariants() && b.check_invariants());
        // Periodic gossip carries the same state and changes nothing.
        let before = b.gossip_state();
        let message = ChannelMessage::Gossip {
            src: A,
            payload: periodic_gossip(&a, NOW),
        };
        handle_message(&mut b, message).unwrap();
        assert_eq!(b.gossip_state(), before);
    }

    #[test]
    fn ipam_consensus_through_the_channel() {
        let now = Instant::now();
        let mode = InitMode::Consensus {
            peer_count: Some(2),
        };
        let mut a = allocator(A, mode.clone(), now);
        let mut b = allocator(B, mode, now);
        let subnet = Cidr::parse_subnet("172.16.16.0/24").unwrap();
        // The request starts consensus; Paxos claims travel as broadcasts until both agree.
        b.allocate(RequestId(7), "cb", subnet, true);
        let replies = exchange(&mut [&mut a, &mut b]);
        assert_eq!(allocated(&replies, B).len(), 1, "{replies:?}");
        assert_eq!(a.ring().seeds(), &[A, B]);
        gossip_both_ways(&mut a, &mut b);
        assert_eq!(a.ring().entries(), b.ring().entries());
    }

    #[test]
    fn ipam_hostile_messages_are_refused_and_change_nothing() {
        let now = Instant::now();
        let mut a = allocator(A, InitMode::Seed(vec![A, B]), now);
        while a.poll_output().is_some() {}
        let before = a.gossip_state();
        // Overlapping entries: a repeated token, then tokens out of order.
        let entry = |d: u8| w::Entry {
            token: std::net::Ipv4Addr::new(172, 16, 16, d),
            peer: B,
            version: 5,
            free: 0,
        };
        let mut ring = wire::ring_to_wire(&before.ring.clone().unwrap());
        for (entries, expected) in [
            (vec![entry(0), entry(0)], RingError::TokenRepeated),
            (vec![entry(9), entry(3)], RingError::NotSorted),
        ] {
            ring.entries = entries;
            let state = w::GossipState {
                now: NOW,
                ring: Some(ring.clone()),
                ..w::GossipState::default()
            };
            let message = ChannelMessage::Broadcast {
                src: B,
                payload: state.encode(),
            };
            assert_eq!(
                handle_message(&mut a, message),
                Err(ReceiveError::Gossip {
                    src: B,
                    error: GossipError::Ring(expected)
                })
            );
            assert_eq!(a.gossip_state(), before);
        }
        // A bad kind byte and a truncated payload.
        for payload in [vec![9, 0, 1], vec![w::MSG_RING_UPDATE]] {
            let message = ChannelMessage::Unicast { src: B, payload };
            assert!(matches!(
                handle_message(&mut a, message),
                Err(ReceiveError::Wire { src: B, .. })
            ));
        }
        assert_eq!(a.gossip_state(), before);
        assert!(
            a.poll_output().is_none(),
            "nothing to say about refused input"
        );
    }

    #[test]
    fn ipam_sends_go_through_the_mesh() {
        let now = Instant::now();
        let cfg = MeshConfig {
            identity: LocalIdentity {
                name: A,
                nick_name: "host-a".into(),
                uid: 1,
                short_id: 1,
                overlays: "sleeve".into(),
            },
            port: 6783,
            conn_limit: 0,
            discovery: false,
            fastdp: false,
            mtu: 1376,
            topology_deltas: true,
            gossip_interval: Duration::from_secs(30),
        };
        let mut mesh = Mesh::new(cfg, 1, now);
        let range = Range::new(Address(0xac10_1000), Address(0xac10_1100));
        let send = outgoing(
            &Output::Unicast {
                dst: A,
                msg: UnicastMsg::SpaceRequestDenied(range),
            },
            NOW,
        )
        .unwrap();
        assert_eq!(
            send.clone().send(&mut mesh),
            Err(ChannelError::NotRegistered(CHANNEL.to_owned()))
        );
        register(&mut mesh).unwrap();
        assert_eq!(CHANNEL, "IPallocation");
        send.send(&mut mesh).unwrap();
        let delivered = std::iter::from_fn(|| mesh.poll_event(now)).find_map(|e| match e {
            MeshEvent::Channel {
                channel,
                message: ChannelMessage::Unicast { src, payload },
                conn: None,
            } => Some((channel, src, payload)),
            _ => None,
        });
        let (channel, src, payload) = delivered.unwrap();
        assert_eq!((channel.as_str(), src), (CHANNEL, A));
        assert_eq!(
            wire::decode_unicast(&payload),
            Ok(UnicastMsg::SpaceRequestDenied(range))
        );
        // A broadcast with nobody connected goes nowhere, without error.
        let broadcast = outgoing(&Output::Broadcast(Default::default()), NOW).unwrap();
        assert!(matches!(broadcast, ChannelSend::Broadcast(_)));
        broadcast.send(&mut mesh).unwrap();
        // Records and replies are not the mesh's.
        let record = Output::Persist(PersistRecord::Owned(Default::default()));
        assert_eq!(outgoing(&record, NOW), None);
        let reply = Output::Reply {
            id: RequestId(1),
            result: Ok(Reply::Primed),
        };
        assert_eq!(outgoing(&reply, NOW), None);
    }
}
