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
//!
//! Between weft peers ring changes travel as deltas on a second channel, `weft-ipam`
//! ([`DELTA_CHANNEL`]), which [`register`] registers too: the allocator asks for a
//! [`Output::BroadcastDelta`] only while every peer the router knows offered the `WeftIpam`
//! handshake feature (given to it with [`Allocator::set_delta_peers`]), so Weave Net peers
//! keep receiving whole states on `IPallocation`; a Weave Net router that relays a `weft-ipam`
//! broadcast treats it as any channel it does not know. The task hands messages of both
//! channels to [`handle_channel_message`].

use weft_wire::PeerName;

use super::allocator::{Allocator, GossipError, Output};
use super::wire::{self, WireError, CHANNEL, DELTA_CHANNEL};
use crate::mesh::{ChannelError, ChannelMessage, ChannelSend, Mesh, SendTo};

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

/// Registers the IPAM channels with the mesh (once, when IPAM is enabled).
pub fn register(mesh: &mut Mesh) -> Result<(), ChannelError> {
    mesh.register_channel(CHANNEL)?;
    mesh.register_channel(DELTA_CHANNEL)
}

/// Whether `channel` is one of IPAM's (what the driver forwards to the IPAM task).
pub fn is_ipam_channel(channel: &str) -> bool {
    channel == CHANNEL || channel == DELTA_CHANNEL
}

/// Feeds what arrived on either IPAM channel to the allocator (see [`handle_message`]);
/// messages of other channels are ignored.
pub fn handle_channel_message(
    alloc: &mut Allocator,
    channel: &str,
    message: ChannelMessage,
) -> Result<(), ReceiveError> {
    match channel {
        CHANNEL => handle_message(alloc, message),
        DELTA_CHANNEL => handle_delta_message(alloc, message),
        _ => Ok(()),
    }
}

/// Feeds a `weft-ipam` message to the allocator: a ring delta whoever sent it (it goes out as
/// a broadcast; its source is who to ask for the whole state).
pub fn handle_delta_message(
    alloc: &mut Allocator,
    message: ChannelMessage,
) -> Result<(), ReceiveError> {
    let (ChannelMessage::Gossip { src, payload }
    | ChannelMessage::Broadcast { src, payload }
    | ChannelMessage::Unicast { src, payload }) = message;
    let delta = wire::decode_delta(&payload).map_err(|error| ReceiveError::Wire { src, error })?;
    alloc
        .handle_delta(src, delta)
        .map_err(|error| ReceiveError::Gossip { src, error })
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
        Output::Broadcast(state) => Some(ChannelSend::new(
            CHANNEL,
            SendTo::Broadcast,
            wire::encode_gossip(state, now),
        )),
        Output::BroadcastDelta(delta) => wire::encode_delta(delta)
            .map(|payload| ChannelSend::new(DELTA_CHANNEL, SendTo::Broadcast, payload)),
        Output::Unicast { dst, msg } => Some(ChannelSend::new(
            CHANNEL,
            SendTo::Unicast(*dst),
            wire::encode_unicast(msg, now),
        )),
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
    use std::time::Instant;

    use weft_types::Ipv4Cidr;
    use weft_wire::ipam as w;

    use super::*;
    use crate::ipam::allocator::{Config, InitMode, PersistRecord, Reply, RequestId, UnicastMsg};
    use crate::ipam::ring::RingError;
    use crate::ipam::{parse_subnet, Address, Range};
    use crate::mesh::{MeshConfig, MeshEvent};

    const A: PeerName = PeerName(0xaa_0000_0001);
    const B: PeerName = PeerName(0xbb_0000_0002);
    const NOW: i64 = 1_700_000_000;

    fn allocator(name: PeerName, mode: InitMode, now: Instant) -> Allocator {
        let config = Config {
            name,
            uid: name.0,
            nickname: format!("host-{:x}", name.0),
            universe: parse_subnet("172.16.16.0/24").unwrap(),
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
                let (channel, message) = match &send {
                    ChannelSend {
                        channel: CHANNEL,
                        to: SendTo::Broadcast,
                        payload,
                    } => (
                        CHANNEL,
                        ChannelMessage::Broadcast {
                            src,
                            payload: payload.clone(),
                        },
                    ),
                    ChannelSend {
                        channel: DELTA_CHANNEL,
                        to: SendTo::Broadcast,
                        payload,
                    } => (
                        DELTA_CHANNEL,
                        ChannelMessage::Broadcast {
                            src,
                            payload: payload.clone(),
                        },
                    ),
                    ChannelSend {
                        to: SendTo::Unicast(dst),
                        payload,
                        ..
                    } if *dst == p.name() => (
                        CHANNEL,
                        ChannelMessage::Unicast {
                            src,
                            payload: payload.clone(),
                        },
                    ),
                    ChannelSend { .. } => continue,
                };
                handle_channel_message(p, channel, message).unwrap();
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

    fn allocated(replies: &[(PeerName, RequestId, Reply)], peer: PeerName) -> Vec<Ipv4Cidr> {
        replies
            .iter()
            .filter_map(|(p, _, r)| match r {
                Reply::Allocated(c) if *p == peer => Some(*c),
                _ => None,
            })
            .collect()
    }

    /// What `peer` asks to send, drained (nothing is delivered).
    fn sends(peer: &mut Allocator) -> Vec<ChannelSend> {
        std::iter::from_fn(|| peer.poll_output())
            .filter_map(|o| outgoing(&o, NOW))
            .collect()
    }

    /// Hands `to` a broadcast `src` originated on `channel`.
    fn broadcast_to(to: &mut Allocator, channel: &str, src: PeerName, payload: &[u8]) {
        let payload = payload.to_vec();
        let message = ChannelMessage::Broadcast { src, payload };
        handle_channel_message(to, channel, message).unwrap();
    }

    /// Hands `to` a unicast from `src`.
    fn unicast_to(to: &mut Allocator, src: PeerName, payload: &[u8]) {
        let payload = payload.to_vec();
        handle_message(to, ChannelMessage::Unicast { src, payload }).unwrap();
    }

    #[test]
    fn ipam_ring_changes_go_as_deltas_only_when_every_peer_takes_them() {
        let now = Instant::now();
        const C: PeerName = PeerName(0xcc_0000_0003);
        let mut a = allocator(A, InitMode::Seed(vec![A, B]), now);
        let mut b = allocator(B, InitMode::Seed(vec![A, B]), now);
        let mut c = allocator(C, InitMode::Observer, now);
        for p in [&mut a, &mut b, &mut c] {
            p.set_known_peers(BTreeSet::from([A, B, C]));
            while p.poll_output().is_some() {}
        }
        gossip_both_ways(&mut a, &mut b);
        let full = periodic_gossip(&a, NOW);
        handle_message(
            &mut c,
            ChannelMessage::Gossip {
                src: A,
                payload: full,
            },
        )
        .unwrap();
        while c.poll_output().is_some() {}
        let universe = a.ring().range();
        // C is a Weave Net router (no delta feature): A's donation to B goes out whole.
        a.set_delta_peers(BTreeSet::from([B]));
        a.handle_unicast(B, UnicastMsg::SpaceRequest(universe))
            .unwrap();
        let out = sends(&mut a);
        assert!(
            matches!(
                out[0],
                ChannelSend {
                    channel: CHANNEL,
                    to: SendTo::Broadcast,
                    payload: _
                }
            ),
            "{out:?}"
        );
        assert!(!out.iter().any(|s| matches!(
            s,
            ChannelSend {
                channel: DELTA_CHANNEL,
                to: SendTo::Broadcast,
                payload: _
            }
        )));
        for send in out {
            if let ChannelSend {
                channel: CHANNEL,
                to: SendTo::Broadcast,
                payload,
            } = send
            {
                for p in [&mut b, &mut c] {
                    broadcast_to(p, CHANNEL, A, &payload);
                }
            }
        }
        assert_eq!(b.ring().entries(), a.ring().entries());
        assert_eq!(c.ring().entries(), a.ring().entries());
        // Everyone takes deltas: the next donation is one small delta and nothing else.
        a.set_delta_peers(BTreeSet::from([B, C]));
        a.handle_unicast(B, UnicastMsg::SpaceRequest(universe))
            .unwrap();
        let out = sends(&mut a);
        let [ChannelSend {
            channel: DELTA_CHANNEL,
            to: SendTo::Broadcast,
            payload: delta,
        }] = &out[..]
        else {
            panic!("{out:?}");
        };
        assert!(delta.len() < 200, "{} bytes", delta.len());
        let b_before = b.ring().clone();
        broadcast_to(&mut b, DELTA_CHANNEL, A, delta);
        assert_eq!(b.ring().entries(), a.ring().entries());
        assert!(b.check_invariants());
        // C missed it. The one after it leaves a gap at C: its ring stays, it asks A for the
        // whole state, and A's answer brings it up to date.
        a.handle_unicast(B, UnicastMsg::SpaceRequest(universe))
            .unwrap();
        let out = sends(&mut a);
        let [ChannelSend {
            channel: DELTA_CHANNEL,
            to: SendTo::Broadcast,
            payload: second,
        }] = &out[..]
        else {
            panic!("{out:?}");
        };
        let c_before = c.ring().clone();
        broadcast_to(&mut c, DELTA_CHANNEL, A, second);
        assert_eq!(c.ring(), &c_before);
        let ask = sends(&mut c);
        let [ChannelSend {
            to: SendTo::Unicast(A),
            payload,
            ..
        }] = &ask[..]
        else {
            panic!("{ask:?}");
        };
        unicast_to(&mut a, C, payload);
        let answer = sends(&mut a);
        let [ChannelSend {
            to: SendTo::Unicast(C),
            payload,
            ..
        }] = &answer[..]
        else {
            panic!("{answer:?}");
        };
        unicast_to(&mut c, A, payload);
        assert_eq!(c.ring().entries(), a.ring().entries());
        // A delta arriving twice, or after the whole state, changes nothing.
        broadcast_to(&mut c, DELTA_CHANNEL, A, delta);
        assert_eq!(c.ring().entries(), a.ring().entries());
        assert!(sends(&mut c).is_empty());
        assert_ne!(b_before.entries(), b.ring().entries());
    }

    #[test]
    fn ipam_hostile_deltas_are_refused_and_change_nothing() {
        let now = Instant::now();
        let mut a = allocator(A, InitMode::Seed(vec![A, B]), now);
        while a.poll_output().is_some() {}
        let before = a.gossip_state();
        let wd = |entries: Vec<weft_wire::ipam_delta::Entry>| weft_wire::ipam_delta::RingDelta {
            start: 0xac10_1000,
            end: 0xac10_1100,
            seeds_hash: crate::ipam::ring::seeds_hash(&[A, B]),
            entries,
            nicknames: vec![],
        };
        let entry = |token: u32, free: u32| weft_wire::ipam_delta::Entry {
            token,
            peer: B,
            version: 9,
            free,
            prev: 0xac10_1000,
            next: 0xac10_1080,
        };
        // Tokens out of order, and a free count larger than the range.
        for (delta, expected) in [
            (
                wd(vec![entry(0xac10_1090, 0), entry(0xac10_1010, 0)]),
                RingError::NotSorted,
            ),
            (
                wd(vec![entry(0xac10_1010, 0x71)]),
                RingError::TooMuchFree {
                    token: Address(0xac10_1010),
                    next: Address(0xac10_1080),
                    free: 0x71,
                    distance: 0x70,
                },
            ),
        ] {
            let message = ChannelMessage::Broadcast {
                src: B,
                payload: delta.encode().unwrap(),
            };
            assert_eq!(
                handle_channel_message(&mut a, DELTA_CHANNEL, message),
                Err(ReceiveError::Gossip {
                    src: B,
                    error: GossipError::Ring(expected)
                })
            );
        }
        // Another universe, and a malformed payload.
        let other = weft_wire::ipam_delta::RingDelta {
            end: 0xac10_1200,
            ..wd(vec![])
        };
        let message = ChannelMessage::Broadcast {
            src: B,
            payload: other.encode().unwrap(),
        };
        assert!(matches!(
            handle_channel_message(&mut a, DELTA_CHANNEL, message),
            Err(ReceiveError::Gossip {
                error: GossipError::DifferentRange { .. },
                ..
            })
        ));
        let message = ChannelMessage::Broadcast {
            src: B,
            payload: vec![1, 2, 3],
        };
        assert!(matches!(
            handle_channel_message(&mut a, DELTA_CHANNEL, message),
            Err(ReceiveError::Wire {
                src: B,
                error: WireError::Delta(_)
            })
        ));
        assert_eq!(a.gossip_state(), before);
        assert!(a.poll_output().is_none());
        // Other channels are not IPAM's.
        assert!(is_ipam_channel(CHANNEL) && is_ipam_channel(DELTA_CHANNEL));
        assert!(!is_ipam_channel("topology"));
    }

    #[test]
    fn ipam_observer_gets_the_ring_and_space_through_the_channel() {
        let now = Instant::now();
        let mut a = allocator(A, InitMode::Seed(vec![A]), now);
        let mut b = allocator(B, InitMode::Observer, now);
        let subnet = parse_subnet("172.16.16.0/24").unwrap();
        a.allocate(RequestId(1), "ca", subnet, true);
        // B has no ring: its broadcast asks for one, A answers with a ring update, then B
        // asks A for space and A donates.
        b.allocate(RequestId(2), "cb", subnet, true);
        let replies = exchange(&mut [&mut a, &mut b]);
        let (got_a, got_b) = (allocated(&replies, A), allocated(&replies, B));
        assert_eq!(got_a.len(), 1, "{replies:?}");
        assert_eq!(got_b.len(), 1, "{replies:?}");
        assert_ne!(got_a[0].addr(), got_b[0].addr());
        assert!(!b.ring().is_empty());
        gossip_both_ways(&mut a, &mut b);
        assert_eq!(a.ring().entries(), b.ring().entries(), "one ring");
        assert_eq!(
            a.ring().owner(got_b[0].addr().into()),
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
        let subnet = parse_subnet("172.16.16.0/24").unwrap();
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
        let mut mesh = Mesh::new(MeshConfig::lone(A), 1, now);
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
        assert_eq!(
            mesh.register_channel(DELTA_CHANNEL),
            Err(ChannelError::Registered(DELTA_CHANNEL.to_owned()))
        );
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
        assert!(matches!(
            broadcast,
            ChannelSend {
                channel: CHANNEL,
                to: SendTo::Broadcast,
                payload: _
            }
        ));
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
