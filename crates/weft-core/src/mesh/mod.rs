//! The mesh router as one sans-IO state machine: the local peer, its live connections, the
//! topology view, routes, the connection maker and the gossip channels.
//!
//! This file is the router itself — the [`Mesh`] type, its events, its timers and how it
//! sends. The rest of the mesh is split by what it is about, one file each:
//! * `conn` — registering connections (duplicates, limits), their removal, and the connection
//!   maker (targets, discovery);
//! * `channel` — what arrives on a connection: protocol messages, dispatched to the gossip
//!   channel they name; channels registered by other parts of the router (IPAM, DNS);
//!   unknown channels relayed as Weave Net's router does;
//! * `topology_gossip` — the `topology` and `weft-topology` channels;
//! * `overlay` — each connection's overlay switch (sleeve and fastdp heartbeats, MTU probes),
//!   and when a connection counts as established;
//! * `status` — the snapshots the status, report and metrics endpoints show, and the data
//!   plane's view of the mesh ([`MeshFabric`]).
//!
//! Framing is not the mesh's: it sends and receives message bodies, and each connection's
//! session ([`crate::session`]) frames them.
//!
//! The driver (weftd) owns sockets and the clock. It tells the [`Mesh`] what happened —
//! a connection finished its intro ([`Mesh::handle_connection_ready`]), a frame arrived
//! ([`Mesh::handle_frame`]), a UDP datagram arrived ([`Mesh::handle_datagram`]), a socket
//! closed, a timer fired — and then drains [`Mesh::poll_event`] for what to do: bytes to
//! send, connections to close, addresses to dial. [`Mesh::poll_timeout`] says when to call
//! [`Mesh::handle_timeout`] next.
//!
//! Connections count as established the way Weave Net's sleeve overlay decides it: each side
//! sends 42-byte UDP heartbeats carrying the connection uid; whoever receives one answers
//! `ConnectionEstablished` over TCP, and the side that receives that marks the connection
//! established. That is what a Go peer needs before it stops calling a connection pending.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::SeedableRng;
use weft_wire::protocol::ProtocolMsg;
use weft_wire::{frame, ConnectionSummary, PeerName, PeerSummary};

use crate::connection_maker::{ConnectOutcome, ConnectionMaker, Lookup};
use crate::handshake::LocalIdentity;
use crate::pace::Pacer;
use crate::routes::Routes;
use crate::topology::Peers;
use weft_crypto::key::SessionKey;
use weft_crypto::sleeve::Scheme;

/// Name of the topology gossip channel.
pub const TOPOLOGY_CHANNEL: &str = "topology";
/// TCP heartbeat period.
pub const TCP_HEARTBEAT: Duration = Duration::from_secs(30);
/// Coalescing delay for topology updates: events of one burst (a connection added and
/// established) go out in one announcement, yet a user sees a new connection at once.
pub const TOPOLOGY_UPDATE_DELAY: Duration = Duration::from_millis(2);
/// Announcements may burst this many at once; beyond that they are paced at one per
/// [`TOPOLOGY_ANNOUNCE_PERIOD`], so a peer whose gossip keeps changing our entry cannot make us
/// flood the mesh with our own updates.
pub const TOPOLOGY_ANNOUNCE_BURST: u32 = 5;
/// See [`TOPOLOGY_ANNOUNCE_BURST`].
pub const TOPOLOGY_ANNOUNCE_PERIOD: Duration = Duration::from_secs(1);
/// Delay before garbage-collecting after a received update.
pub const GC_DELAY: Duration = Duration::from_secs(1);
/// Period of full-state gossip.
pub const GOSSIP_INTERVAL: Duration = Duration::from_secs(30);

mod channel;
mod conn;
mod overlay;
mod status;
mod topology_gossip;

pub use channel::{ChannelError, ChannelMessage, ChannelSend, SendTo, RELAY_CACHE_ENTRIES};
use conn::Conn;
pub use status::{ConnectionStatus, Ignored, MeshFabric, MeshStatus};

/// A live connection's id, chosen by the driver.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ConnId(pub u64);

/// Static configuration of the local router.
#[derive(Debug, Clone)]
pub struct MeshConfig {
    /// Our identity.
    pub identity: LocalIdentity,
    /// The mesh port (TCP and sleeve UDP).
    pub port: u16,
    /// Maximum number of connections; 0 = unlimited.
    pub conn_limit: usize,
    /// Whether to connect to peers learnt through gossip.
    pub discovery: bool,
    /// Whether to offer weft's kernel-VXLAN fast datapath.
    pub fastdp: bool,
    /// The weave bridge MTU (fastdp heartbeats are this size plus the Ethernet header).
    pub mtu: u32,
    /// Whether to use weft's topology deltas with weft peers that offer them (always on in
    /// the router; off only to measure Weave's gossip against them).
    pub topology_deltas: bool,
    /// Period of the full-state gossip ([`GOSSIP_INTERVAL`] in the router).
    pub gossip_interval: Duration,
}

impl MeshConfig {
    /// A router named `name` with no connections, for the channel tests.
    #[cfg(test)]
    pub(crate) fn lone(name: PeerName) -> Self {
        Self {
            identity: LocalIdentity {
                name,
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
        }
    }
}

/// How a connection is protected, as its intro agreed (Weave Net's `--password` and
/// `--trusted-subnets`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConnSecurity {
    /// The control connection is sealed: we have a password (so the remote has the same one).
    pub encrypted_session: bool,
    /// The key the overlay encrypts with: present on an untrusted connection with a password
    /// (unless both ends trust each other's address). Such a connection uses encrypted sleeve
    /// only: this kernel has no IPsec ESP, which Weave Net's encrypted fastdp needs.
    pub overlay_key: Option<SessionKey>,
    /// How the overlay seals with that key: weft's own scheme between weft peers, else Weave
    /// Net's.
    pub sleeve_scheme: Scheme,
}

/// Which side opened a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// The remote dialled us.
    Inbound,
    /// We dialled `dial_addr`.
    Outbound {
        /// The target address we dialled.
        dial_addr: SocketAddr,
        /// Whether an unknown remote name is acceptable (direct target).
        accept_new_peer: bool,
    },
}

/// Something the driver must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MeshEvent {
    /// Look up a host name given to [`Mesh::connect`], off the mesh's thread, then call
    /// [`Mesh::handle_lookup`] (an answer after
    /// [`LOOKUP_TIMEOUT`](crate::connection_maker::LOOKUP_TIMEOUT) is ignored).
    Lookup(Lookup),
    /// A [`Mesh::connect`] call took effect: its error lines (one per bad peer) are the reply
    /// to the user.
    Connected(ConnectOutcome),
    /// Open a TCP connection and run the intro, then call `handle_connection_ready` or
    /// `handle_dial_failed`.
    Dial {
        /// Where to connect.
        addr: SocketAddr,
        /// Pass back in [`Origin::Outbound`].
        accept_new_peer: bool,
    },
    /// Send this message body on the connection (its session frames it).
    Send {
        /// The connection.
        conn: ConnId,
        /// One protocol message body.
        body: Vec<u8>,
    },
    /// Close the connection; then call `handle_connection_closed`.
    Close {
        /// The connection.
        conn: ConnId,
        /// Why, for the log.
        reason: CloseReason,
    },
    /// Something arrived for a channel registered with [`Mesh::register_channel`]; hand it to
    /// the channel's owner.
    Channel {
        /// The channel's name.
        channel: String,
        /// What arrived.
        message: ChannelMessage,
        /// The connection it came on (`None` for a unicast we sent ourselves): the channel's
        /// owner closes it with [`Mesh::close_for_channel`] if the message is unacceptable,
        /// as Weave Net closes a connection whose gossip its channel refused.
        conn: Option<ConnId>,
    },
    /// Send a UDP datagram from the mesh port.
    SendUdp {
        /// Destination.
        to: SocketAddr,
        /// The datagram.
        datagram: Vec<u8>,
    },
    /// The list of direct targets changed: persist it.
    TargetsChanged(Vec<String>),
    /// Change what the kernel's VXLAN device holds for a fastdp peer.
    Fastdp(FastdpChange),
    /// Send this Ethernet frame (a fastdp heartbeat) out of the local VXLAN device.
    SendFastdp(Vec<u8>),
}

/// A change to what the kernel's VXLAN device holds for one fastdp peer: the mesh asks for it
/// ([`MeshEvent::Fastdp`]) and the router's data plane carries it out, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FastdpChange {
    /// A fastdp-capable peer appeared (`add`) or went away: program (or remove) the VXLAN
    /// forwarding entry for its peer-name MAC, which carries fastdp heartbeats.
    Peer {
        /// The peer.
        peer: PeerName,
        /// Its underlay address.
        ip: Ipv4Addr,
        /// Add or remove.
        add: bool,
    },
    /// Start or stop flooding broadcast/unknown frames to this peer through VXLAN.
    Flood {
        /// The peer.
        peer: PeerName,
        /// Its underlay address.
        ip: Ipv4Addr,
        /// On or off.
        on: bool,
    },
}

/// Why the mesh refuses or closes a connection. The texts are Weave Net's where it has one,
/// since operators grep logs for them.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CloseReason {
    /// A protocol message that does not decode.
    #[error("malformed message: {0}")]
    Malformed(weft_wire::DecodeError),
    /// Topology travels by gossip and broadcast only.
    #[error("unexpected topology gossip unicast: {0}")]
    TopologyUnicast(PeerName),
    /// A `topology` payload that does not decode.
    #[error(transparent)]
    TopologyPayload(weft_wire::DecodeError),
    /// A `weft-topology` payload that does not decode.
    #[error(transparent)]
    TopologyDelta(#[from] weft_wire::topology_delta::DeltaError),
    /// A topology update that breaks the merge rules.
    #[error(transparent)]
    Topology(#[from] crate::topology::TopologyError),
    /// We dialled ourselves.
    #[error("cannot connect to ourself")]
    Ourself,
    /// Another peer uses our name.
    #[error("local \"{us}({us_nick})\" and remote \"{us}({remote_nick})\" peer names collision")]
    NameCollision {
        /// Our (and its) name.
        us: PeerName,
        /// Our nickname.
        us_nick: String,
        /// Its nickname.
        remote_nick: String,
    },
    /// A dial to a discovered address reached a peer we do not know.
    #[error("Found unknown remote name: {name} at {addr}")]
    UnknownRemote {
        /// Its name.
        name: PeerName,
        /// Where we dialled.
        addr: SocketAddr,
    },
    /// A second connection to the same peer; the one with the lower uid goes.
    #[error("Multiple connections to {remote} added to {us}")]
    Duplicate {
        /// The remote peer.
        remote: PeerName,
        /// Us.
        us: PeerName,
    },
    /// `--conn-limit` reached.
    #[error("Connection limit reached ({0})")]
    ConnLimit(usize),
    /// The overlay switch gave up (no overlay in common, no working forwarder).
    #[error("{0}")]
    Overlay(#[from] crate::overlay_switch::OverlayError),
    /// A registered channel's owner refused what came on the connection.
    #[error("{0}")]
    Channel(String),
}

/// The mesh router state machine. See the module docs for how to drive it.
#[derive(Debug)]
pub struct Mesh {
    cfg: MeshConfig,
    peers: Peers,
    routes: Routes,
    routes_dirty: bool,
    /// Bumped by every route recalculation.
    routes_generation: u64,
    maker: ConnectionMaker,
    conns: BTreeMap<ConnId, Conn>,
    by_remote: BTreeMap<PeerName, ConnId>,
    rng: StdRng,
    events: VecDeque<MeshEvent>,
    pending_update: BTreeSet<PeerName>,
    update_at: Option<Instant>,
    /// Paces our announcements (see [`TOPOLOGY_ANNOUNCE_BURST`]).
    announce_pace: Pacer,
    gc_at: Option<Instant>,
    gossip_at: Instant,
    /// Unknown channels' messages relayed recently.
    relayed: channel::RelayCache,
    /// Channels registered by other parts of the router.
    channels: channel::Channels,
    termination_count: u64,
    /// Messages ignored: blank, unknown tags, repeated gossip and broadcasts on channels we do
    /// not implement, unicasts to us on unknown channels.
    gossip_ignored: u64,
    /// Messages that closed their connection: malformed, or breaking the protocol.
    frames_refused: u64,
    /// Topology gossip bytes sent, as in [`MeshStatus::topology_bytes_sent`].
    topology_bytes_sent: (u64, u64),
    /// Our entry as last announced, which the next announcement is a delta from.
    announced: (PeerSummary, Vec<ConnectionSummary>),
}
impl Mesh {
    /// Creates the router. `seed` feeds every random choice, so runs are reproducible.
    pub fn new(cfg: MeshConfig, seed: u64, now: Instant) -> Self {
        let id = &cfg.identity;
        let peers = Peers::new(id.name, id.nick_name.clone(), id.uid, id.short_id);
        let routes = Routes::calculate(&peers);
        let maker = ConnectionMaker::new(cfg.port, cfg.discovery, cfg.conn_limit, seed ^ 0x5eed);
        let announced = peers.our_entry();
        let gossip_at = now + cfg.gossip_interval;
        Self {
            cfg,
            peers,
            routes,
            routes_dirty: false,
            routes_generation: 0,
            maker,
            conns: BTreeMap::new(),
            by_remote: BTreeMap::new(),
            rng: StdRng::seed_from_u64(seed),
            events: VecDeque::new(),
            pending_update: BTreeSet::new(),
            update_at: None,
            announce_pace: Pacer::new(TOPOLOGY_ANNOUNCE_BURST, TOPOLOGY_ANNOUNCE_PERIOD, now),
            gc_at: None,
            gossip_at,
            relayed: channel::RelayCache::default(),
            channels: channel::Channels::default(),
            termination_count: 0,
            gossip_ignored: 0,
            frames_refused: 0,
            topology_bytes_sent: (0, 0),
            announced,
        }
    }

    /// Our peer name.
    pub fn name(&self) -> PeerName {
        self.cfg.identity.name
    }

    /// The topology view (read-only).
    pub fn peers(&self) -> &Peers {
        &self.peers
    }

    /// When `handle_timeout` must next be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let mut t = Some(self.gossip_at);
        let mut min = |x: Option<Instant>| {
            if let Some(x) = x {
                t = Some(t.map_or(x, |t| t.min(x)));
            }
        };
        min(self.update_at);
        min(self.gc_at);
        min(self.maker.poll_timeout());
        for c in self.conns.values() {
            min(c.push_at);
            min(Some(c.next_tcp_heartbeat));
            min(Some(c.switch.poll_timeout()));
        }
        t
    }

    /// Runs everything due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.maker.handle_timeout(now);
        self.take_maker_outputs(now);
        if self.update_at.is_some_and(|t| t <= now) {
            self.update_at = None;
            self.announce_pace.take(now);
            let mut names: Vec<PeerName> = std::mem::take(&mut self.pending_update)
                .into_iter()
                .collect();
            names.push(self.name());
            names.sort();
            names.dedup();
            self.announce(&names);
        }
        if self.gc_at.is_some_and(|t| t <= now) {
            self.gc_at = None;
            let gone = self.peers.garbage_collect();
            log_removed(&gone);
            if !gone.is_empty() {
                self.routes_dirty = true;
                self.refresh_maker(now);
            }
            if self.peers.resolve_short_id_collision(&mut self.rng) {
                self.schedule_update(&[], now);
            }
        }
        if self.gossip_at <= now {
            self.gossip_at = now + self.cfg.gossip_interval;
            self.gossip_everything();
        }
        let pushes: Vec<ConnId> = self
            .conns
            .iter()
            .filter(|(_, c)| c.push_at.is_some_and(|t| t <= now))
            .map(|(&id, _)| id)
            .collect();
        for id in pushes {
            self.flush_push(id, now);
        }
        let mut dead = Vec::new();
        let mut tcp_beats = Vec::new();
        let ids: Vec<ConnId> = self.conns.keys().copied().collect();
        for (&id, c) in &mut self.conns {
            if let Err(reason) = c.switch.handle_timeout(now) {
                dead.push((id, reason));
                continue;
            }
            if c.next_tcp_heartbeat <= now {
                c.next_tcp_heartbeat = now + TCP_HEARTBEAT;
                tcp_beats.push(id);
            }
        }
        for id in tcp_beats {
            self.send_msg(id, &ProtocolMsg::Heartbeat);
        }
        for id in ids {
            self.run_switch(id, now);
        }
        for (id, reason) in dead {
            self.close(id, CloseReason::Overlay(reason));
        }
    }

    /// The next thing for the driver to do. Call until `None` after every `handle_*`.
    pub fn poll_event(&mut self, now: Instant) -> Option<MeshEvent> {
        if let Some(e) = self.events.pop_front() {
            return Some(e);
        }
        self.maker.poll_dial(now).map(|d| MeshEvent::Dial {
            addr: d.addr,
            accept_new_peer: d.accept_new_peer,
        })
    }

    /// Recalculates routes if the topology changed since the last time; changes within one
    /// burst of events cost one recalculation.
    fn ensure_routes(&mut self) {
        if self.routes_dirty {
            self.routes = Routes::calculate(&self.peers);
            self.routes_dirty = false;
            self.routes_generation += 1;
        }
    }

    fn routes(&mut self) -> &Routes {
        self.ensure_routes();
        &self.routes
    }

    fn random_neighbours(&mut self, except: PeerName) -> Vec<PeerName> {
        self.ensure_routes();
        self.routes.random_neighbours(except, &mut self.rng)
    }

    fn schedule_update(&mut self, names: &[PeerName], now: Instant) {
        self.pending_update.extend(names.iter().copied());
        let at = (now + TOPOLOGY_UPDATE_DELAY).max(self.announce_pace.ready_at(now));
        self.update_at.get_or_insert(at);
    }

    fn send_msg_to_peers(&mut self, peers: &[PeerName], msg: &ProtocolMsg) {
        for &p in peers {
            self.send_msg_to_peer(p, msg);
        }
    }

    fn send_msg_to_peer(&mut self, peer: PeerName, msg: &ProtocolMsg) {
        if let Some(&c) = self.by_remote.get(&peer) {
            self.send_msg(c, msg);
        }
    }

    /// Bytes of the `Send` events queued after the first `before` events.
    fn bytes_queued_since(&self, before: usize) -> u64 {
        self.events
            .iter()
            .skip(before)
            .map(|e| match e {
                MeshEvent::Send { body, .. } => (frame::LEN_PREFIX + body.len()) as u64,
                _ => 0,
            })
            .sum()
    }

    fn send_msg(&mut self, conn: ConnId, msg: &ProtocolMsg) {
        let mut body = Vec::new();
        msg.encode(&mut body);
        self.send_raw(conn, &body);
    }

    fn send_raw(&mut self, conn: ConnId, body: &[u8]) {
        if body.len() > frame::MAX_FRAME_LEN {
            tracing::warn!(
                "not sending: {}",
                frame::FrameError::OutgoingTooLarge(body.len())
            );
            return;
        }
        self.events.push_back(MeshEvent::Send {
            conn,
            body: body.to_vec(),
        });
    }

    fn close(&mut self, conn: ConnId, reason: CloseReason) {
        self.events.push_back(MeshEvent::Close { conn, reason });
    }

    /// Closes `conn` because a channel's owner refused a message that came on it (`reason`
    /// is the owner's one-line error). Nothing happens if the connection has gone already.
    pub fn close_for_channel(&mut self, conn: ConnId, reason: String) {
        if self.conns.contains_key(&conn) {
            self.frames_refused += 1;
            self.close(conn, CloseReason::Channel(reason));
        }
    }
}

/// Most "Removed unreachable peer" lines one removal writes: a peer that announced thousands
/// of made-up peers must not be able to write thousands of lines each time they go.
const MAX_REMOVED_LINES: usize = 16;

/// Logs peers that garbage collection removed, as Weave Net does, up to
/// [`MAX_REMOVED_LINES`], then one line for the rest.
pub(crate) fn log_removed(gone: &[PeerSummary]) {
    for p in gone.iter().take(MAX_REMOVED_LINES) {
        tracing::info!("Removed unreachable peer {}({})", p.name, p.nick_name);
    }
    if gone.len() > MAX_REMOVED_LINES {
        tracing::info!(
            "Removed {} more unreachable peers",
            gone.len() - MAX_REMOVED_LINES
        );
    }
}
