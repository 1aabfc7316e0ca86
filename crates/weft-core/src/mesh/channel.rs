//! What arrives on a connection: protocol messages dispatched to the gossip channel they name.
//!
//! `topology` and `weft-topology` are the mesh's own channels (`topology_gossip`). Other parts
//! of the router (IPAM, DNS) register theirs with [`Mesh::register_channel`]: what arrives on
//! them is handed out as [`MeshEvent::Channel`], and they send with [`Mesh::gossip_unicast`]
//! (to ourselves included, as Weave Net's `GossipUnicast` allows), [`Mesh::gossip_broadcast`]
//! and [`Mesh::gossip_neighbours`]. A channel nobody registered is relayed as Weave Net's
//! router relays it (a surrogate gossiper): gossip to random neighbours and broadcasts along
//! broadcast routes, each message once within a gossip interval, with the memory that takes
//! bounded in bytes.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::hash::{BuildHasher, Hash, Hasher};
use std::time::Instant;

use weft_wire::protocol::ProtocolMsg;
use weft_wire::{topology as topo_wire, topology_delta, PeerName};

use super::{CloseReason, ConnId, Mesh, MeshEvent, GOSSIP_INTERVAL, TOPOLOGY_CHANNEL};

/// Messages of unknown channels remembered for de-duplication; the oldest go first.
pub const RELAY_CACHE_ENTRIES: usize = 4096;

/// What arrived for a channel registered with [`Mesh::register_channel`], in
/// [`MeshEvent::Channel`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChannelMessage {
    /// Gossip from a neighbour (Weave's `OnGossip`): merge it, and pass on what was new with
    /// [`Mesh::gossip_neighbours`].
    Gossip {
        /// The neighbour that sent it.
        src: PeerName,
        /// The channel's payload.
        payload: Vec<u8>,
    },
    /// A broadcast that `src` originated (Weave's `OnGossipBroadcast`); the mesh has already
    /// relayed it along `src`'s broadcast routes.
    Broadcast {
        /// The originating peer.
        src: PeerName,
        /// The channel's payload.
        payload: Vec<u8>,
    },
    /// A message addressed to us (Weave's `OnGossipUnicast`), from another peer or from
    /// ourselves.
    Unicast {
        /// The originating peer.
        src: PeerName,
        /// The channel's payload.
        payload: Vec<u8>,
    },
}

/// Where a channel's owner asks the mesh to send a payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendTo {
    /// Every reachable peer, along our broadcast routes ([`Mesh::gossip_broadcast`]).
    Broadcast,
    /// Random neighbours ([`Mesh::gossip_neighbours`]).
    Neighbours,
    /// One neighbour, as gossip ([`Mesh::gossip_down`]).
    Down(PeerName),
    /// One peer, relayed hop by hop ([`Mesh::gossip_unicast`]).
    Unicast(PeerName),
}

/// A payload a channel's owner (IPAM, DNS) wants sent: the one currency between an owner's
/// state machine, the task that runs it and the mesh task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelSend {
    /// The registered channel.
    pub channel: &'static str,
    /// Where to.
    pub to: SendTo,
    /// The channel's payload.
    pub payload: Vec<u8>,
}

impl ChannelSend {
    /// A send of `payload` on `channel` to `to`.
    pub fn new(channel: &'static str, to: SendTo, payload: Vec<u8>) -> Self {
        Self {
            channel,
            to,
            payload,
        }
    }

    /// Hands this to the mesh.
    pub fn send(self, mesh: &mut Mesh) -> Result<(), ChannelError> {
        let Self {
            channel,
            to,
            payload,
        } = self;
        match to {
            SendTo::Broadcast => mesh.gossip_broadcast(channel, payload),
            SendTo::Neighbours => mesh.gossip_neighbours(channel, payload),
            SendTo::Down(peer) => mesh.gossip_down(channel, peer, payload),
            SendTo::Unicast(dst) => mesh.gossip_unicast(channel, dst, payload),
        }
    }
}

/// A channel operation the mesh refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ChannelError {
    /// `topology` and `weft-topology` belong to the mesh.
    #[error("gossip channel {0:?} is the mesh's own")]
    Reserved(String),
    /// Someone registered that name before.
    #[error("gossip channel {0:?} is registered already")]
    Registered(String),
    /// The channel was never registered.
    #[error("gossip channel {0:?} is not registered")]
    NotRegistered(String),
    /// No route to the destination peer (yet).
    #[error("no route to {0}")]
    Unreachable(PeerName),
}

/// The channels registered by other parts of the router.
#[derive(Debug, Default)]
pub(super) struct Channels {
    names: BTreeSet<String>,
}

/// Messages of unknown channels seen recently, by a 128-bit digest: a message is relayed once
/// within a gossip interval, and the cache costs a few dozen bytes a message whatever their
/// size, at most [`RELAY_CACHE_ENTRIES`] of them.
#[derive(Debug)]
pub(super) struct RelayCache {
    keys: std::collections::hash_map::RandomState,
    seen: HashMap<(u64, u64), Instant>,
    order: VecDeque<((u64, u64), Instant)>,
}

impl Default for RelayCache {
    fn default() -> Self {
        Self {
            keys: std::collections::hash_map::RandomState::new(),
            seen: HashMap::new(),
            order: VecDeque::new(),
        }
    }
}

impl RelayCache {
    /// Whether this message was seen within a gossip interval; remembers it if not.
    fn seen_recently(&mut self, parts: &[&[u8]], now: Instant) -> bool {
        while let Some(&(k, at)) = self.order.front() {
            let expired = now.saturating_duration_since(at) >= GOSSIP_INTERVAL;
            if !expired && self.order.len() < RELAY_CACHE_ENTRIES {
                break;
            }
            self.order.pop_front();
            if self.seen.get(&k) == Some(&at) {
                self.seen.remove(&k);
            }
        }
        // Two independent hashes: a keyed SipHash and FNV-1a.
        let mut sip = self.keys.build_hasher();
        let mut fnv = 0xcbf2_9ce4_8422_2325u64;
        for p in parts {
            p.hash(&mut sip);
            fnv = fnv64a(fnv, &(p.len() as u64).to_le_bytes());
            fnv = fnv64a(fnv, p);
        }
        let key = (sip.finish(), fnv);
        if self.seen.contains_key(&key) {
            return true;
        }
        self.seen.insert(key, now);
        self.order.push_back((key, now));
        false
    }
}

impl Mesh {
    /// Registers a gossip channel: what arrives on it is handed out as
    /// [`MeshEvent::Channel`] instead of being relayed as an unknown channel's.
    pub fn register_channel(&mut self, name: &str) -> Result<(), ChannelError> {
        if name == TOPOLOGY_CHANNEL || name == topology_delta::CHANNEL {
            return Err(ChannelError::Reserved(name.to_string()));
        }
        if !self.channels.names.insert(name.to_string()) {
            return Err(ChannelError::Registered(name.to_string()));
        }
        Ok(())
    }

    fn check_registered(&self, channel: &str) -> Result<(), ChannelError> {
        if self.channels.names.contains(channel) {
            Ok(())
        } else {
            Err(ChannelError::NotRegistered(channel.to_string()))
        }
    }

    /// Sends `payload` to `dst` on `channel`, relayed hop by hop along unicast routes. To
    /// ourselves it comes straight back as a [`ChannelMessage::Unicast`].
    pub fn gossip_unicast(
        &mut self,
        channel: &str,
        dst: PeerName,
        payload: Vec<u8>,
    ) -> Result<(), ChannelError> {
        self.check_registered(channel)?;
        let us = self.name();
        if dst == us {
            self.deliver(
                channel.to_string(),
                ChannelMessage::Unicast { src: us, payload },
                None,
            );
            return Ok(());
        }
        let hop = self
            .routes()
            .unicast_all(dst)
            .ok_or(ChannelError::Unreachable(dst))?;
        let msg = ProtocolMsg::GossipUnicast {
            channel: channel.to_string(),
            src: us,
            dst,
            payload,
        };
        match self.by_remote.get(&hop) {
            Some(&c) => {
                self.send_msg(c, &msg);
                Ok(())
            }
            None => Err(ChannelError::Unreachable(dst)),
        }
    }

    /// Broadcasts `payload` on `channel` to every reachable peer along our broadcast routes.
    pub fn gossip_broadcast(
        &mut self,
        channel: &str,
        payload: Vec<u8>,
    ) -> Result<(), ChannelError> {
        self.check_registered(channel)?;
        let us = self.name();
        let msg = ProtocolMsg::GossipBroadcast {
            channel: channel.to_string(),
            src: us,
            payload,
        };
        let hops = self.routes().broadcast_all(us).to_vec();
        self.send_msg_to_peers(&hops, &msg);
        Ok(())
    }

    /// Gossips `payload` on `channel` to the neighbour `peer` only (Weave's
    /// `GossipChannel.SendDown`), as a channel owner does for each new connection so that a
    /// peer that just joined learns its state at once rather than at the next periodic gossip.
    pub fn gossip_down(
        &mut self,
        channel: &str,
        peer: PeerName,
        payload: Vec<u8>,
    ) -> Result<(), ChannelError> {
        self.check_registered(channel)?;
        let msg = ProtocolMsg::Gossip {
            channel: channel.to_string(),
            src: self.name(),
            payload,
        };
        self.send_msg_to_peer(peer, &msg);
        Ok(())
    }

    /// The peers we have a connection to.
    pub fn neighbours(&self) -> impl Iterator<Item = PeerName> + '_ {
        self.by_remote.keys().copied()
    }

    /// Gossips `payload` on `channel` to a random set of neighbours (Weave's
    /// `GossipChannel.Send`), as the periodic gossip and the relay of what was new do.
    pub fn gossip_neighbours(
        &mut self,
        channel: &str,
        payload: Vec<u8>,
    ) -> Result<(), ChannelError> {
        self.check_registered(channel)?;
        let us = self.name();
        let msg = ProtocolMsg::Gossip {
            channel: channel.to_string(),
            src: us,
            payload,
        };
        let hops = self.random_neighbours(us);
        self.send_msg_to_peers(&hops, &msg);
        Ok(())
    }

    /// Hands what arrived on a registered channel to its owner.
    fn deliver(&mut self, channel: String, message: ChannelMessage, conn: Option<ConnId>) {
        self.events.push_back(MeshEvent::Channel {
            channel,
            message,
            conn,
        });
    }

    /// A complete message body arrived on `conn`. Malformed input closes that connection only.
    pub fn handle_frame(&mut self, conn: ConnId, body: &[u8], now: Instant) {
        let msg = match ProtocolMsg::decode(body) {
            Ok(Some(m)) => m,
            Ok(None) => {
                self.gossip_ignored += 1;
                tracing::debug!("ignoring blank msg");
                return;
            }
            Err(e) => {
                self.frames_refused += 1;
                self.close(conn, CloseReason::Malformed(e));
                return;
            }
        };
        if let Err(e) = self.handle_msg(conn, msg, body, now) {
            self.frames_refused += 1;
            self.close(conn, e);
        }
    }

    fn handle_msg(
        &mut self,
        conn: ConnId,
        msg: ProtocolMsg,
        raw: &[u8],
        now: Instant,
    ) -> Result<(), CloseReason> {
        match msg {
            ProtocolMsg::Heartbeat => {}
            ProtocolMsg::ConnectionEstablished => self.overlay_control(conn, 1, &[], now),
            ProtocolMsg::FragmentationReceived => self.overlay_control(conn, 2, &[], now),
            ProtocolMsg::PmtuVerified(mtu) => {
                self.overlay_control(conn, 3, &mtu.to_be_bytes(), now);
            }
            ProtocolMsg::OverlayControl(payload) => self.overlay_control(conn, 7, &payload, now),
            ProtocolMsg::Unknown(tag) => {
                self.gossip_ignored += 1;
                tracing::debug!("ignoring unknown protocol tag: {tag}");
            }
            ProtocolMsg::Gossip {
                channel,
                src,
                payload,
            } => return self.on_gossip(conn, channel, src, payload, now),
            ProtocolMsg::GossipBroadcast {
                channel,
                src,
                payload,
            } => return self.on_gossip_broadcast(conn, channel, src, payload, now),
            ProtocolMsg::GossipUnicast {
                channel,
                src,
                dst,
                payload,
            } => {
                if channel == TOPOLOGY_CHANNEL || channel == topology_delta::CHANNEL {
                    return Err(CloseReason::TopologyUnicast(src));
                }
                if dst != self.name() {
                    self.relay_unicast(dst, raw);
                } else if self.channels.names.contains(&channel) {
                    self.deliver(
                        channel,
                        ChannelMessage::Unicast { src, payload },
                        Some(conn),
                    );
                } else {
                    self.gossip_ignored += 1;
                    tracing::debug!("dropping unicast for us on unknown channel from {src}");
                }
            }
        }
        Ok(())
    }

    fn on_gossip(
        &mut self,
        from: ConnId,
        channel: String,
        src: PeerName,
        payload: Vec<u8>,
        now: Instant,
    ) -> Result<(), CloseReason> {
        if channel == topology_delta::CHANNEL {
            return self.on_weft_topology(from, src, &payload, now);
        }
        if channel == TOPOLOGY_CHANNEL {
            let res = self.apply_topology(&payload, now)?;
            if !res.improved.is_empty() {
                self.relay_improved(src, &res.improved);
            }
            return Ok(());
        }
        if self.channels.names.contains(&channel) {
            self.deliver(channel, ChannelMessage::Gossip { src, payload }, Some(from));
            return Ok(());
        }
        // A channel nobody here implements: relay it like Weave's surrogate gossiper,
        // once within a gossip interval so it cannot circulate forever.
        if self
            .relayed
            .seen_recently(&[b"g", channel.as_bytes(), &payload], now)
        {
            self.gossip_ignored += 1;
            return Ok(());
        }
        let msg = ProtocolMsg::Gossip {
            channel,
            src: self.name(),
            payload,
        };
        let hops = self.random_neighbours(src);
        self.send_msg_to_peers(&hops, &msg);
        Ok(())
    }

    fn on_gossip_broadcast(
        &mut self,
        from: ConnId,
        channel: String,
        src: PeerName,
        payload: Vec<u8>,
        now: Instant,
    ) -> Result<(), CloseReason> {
        let mut deliver = None;
        let relay_payload = if channel == TOPOLOGY_CHANNEL {
            let res = self.apply_topology(&payload, now)?;
            topo_wire::encode(&self.peers.summaries(&res.received))
        } else {
            // Broadcast routes are trees, so a broadcast reaches each peer once; a repeat is
            // a peer replaying it, and is not relayed again.
            if self.relayed.seen_recently(
                &[b"b", channel.as_bytes(), &src.0.to_le_bytes(), &payload],
                now,
            ) {
                self.gossip_ignored += 1;
                return Ok(());
            }
            if self.channels.names.contains(&channel) {
                deliver = Some((channel.clone(), payload.clone()));
            }
            payload
        };
        let hops = self.routes().broadcast_all(src).to_vec();
        let msg = ProtocolMsg::GossipBroadcast {
            channel,
            src,
            payload: relay_payload,
        };
        self.send_msg_to_peers(&hops, &msg);
        if let Some((channel, payload)) = deliver {
            self.deliver(
                channel,
                ChannelMessage::Broadcast { src, payload },
                Some(from),
            );
        }
        Ok(())
    }

    fn relay_unicast(&mut self, dst: PeerName, raw: &[u8]) {
        let Some(hop) = self.routes().unicast_all(dst) else {
            tracing::debug!("unknown relay destination: {dst}");
            return;
        };
        match self.by_remote.get(&hop) {
            Some(&c) => self.send_raw(c, raw),
            None => tracing::debug!("unable to find connection to relay peer {hop}"),
        }
    }
}

fn fnv64a(h: u64, data: &[u8]) -> u64 {
    data.iter()
        .fold(h, |h, &b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
}
