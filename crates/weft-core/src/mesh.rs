//! The mesh router as one sans-IO state machine: the local peer, its live connections, the
//! topology view, routes, the connection maker and gossip relay.
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

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use weft_wire::protocol::ProtocolMsg;
use weft_wire::{
    frame, sleeve, topology as topo_wire, topology_delta, ConnectionSummary, PeerName, PeerSummary,
};

use crate::connection_maker::{ConnectedAddr, ConnectionMaker, Resolver, Termination};
use crate::handshake::{LocalIdentity, RemoteFeatures, PROTOCOL_MAX_VERSION, PROTOCOL_MIN_VERSION};
use crate::overlay::Fabric;
use crate::overlay_switch::{
    fastdp_heartbeat_sender, overlays_feature, LinkIds, OverlaySwitch, SwitchOutput,
};
use crate::routes::Routes;
use crate::topology::{Peers, Update};

/// Name of the topology gossip channel.
pub const TOPOLOGY_CHANNEL: &str = "topology";
/// TCP heartbeat period.
pub const TCP_HEARTBEAT: Duration = Duration::from_secs(30);
/// Coalescing delay for topology updates.
pub const TOPOLOGY_UPDATE_DELAY: Duration = Duration::from_secs(1);
/// Delay before garbage-collecting after a received update.
pub const GC_DELAY: Duration = Duration::from_secs(1);
/// Period of full-state gossip.
pub const GOSSIP_INTERVAL: Duration = Duration::from_secs(30);

mod gossip;

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
    /// Open a TCP connection and run the intro, then call `handle_connection_ready` or
    /// `handle_dial_failed`.
    Dial {
        /// Where to connect.
        addr: SocketAddr,
        /// Pass back in [`Origin::Outbound`].
        accept_new_peer: bool,
    },
    /// Write these bytes (already framed) to the connection.
    Send {
        /// The connection.
        conn: ConnId,
        /// A length-prefixed frame.
        bytes: Vec<u8>,
    },
    /// Close the connection; then call `handle_connection_closed`.
    Close {
        /// The connection.
        conn: ConnId,
        /// Why, for the log.
        reason: String,
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
    /// A fastdp-capable peer appeared (`add`) or went away: program (or remove) the VXLAN
    /// forwarding entry for its peer-name MAC, which carries fastdp heartbeats.
    FastdpPeer {
        /// The peer.
        peer: PeerName,
        /// Its underlay address.
        ip: Ipv4Addr,
        /// Add or remove.
        add: bool,
    },
    /// Start or stop flooding broadcast/unknown frames to this peer through VXLAN.
    FastdpFlood {
        /// The peer.
        peer: PeerName,
        /// Its underlay address.
        ip: Ipv4Addr,
        /// On or off.
        on: bool,
    },
    /// Send this Ethernet frame (a fastdp heartbeat) out of the local VXLAN device.
    SendFastdp(Vec<u8>),
}

/// What `weft status connections` shows for one line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionStatus {
    /// `ip:port`.
    pub address: String,
    /// Whether we dialled.
    pub outbound: bool,
    /// established, pending, connecting, retrying, failed, waiting.
    pub state: String,
    /// The info column.
    pub info: String,
    /// Extra attributes (`mtu`, `encrypted`).
    pub attrs: BTreeMap<String, String>,
}

/// One peer as `weft status peers` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerStatus {
    /// Its summary.
    pub summary: PeerSummary,
    /// Its connections as it reported them.
    pub connections: Vec<PeerConnectionStatus>,
}

/// One connection of a peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerConnectionStatus {
    /// Remote end.
    pub name: PeerName,
    /// Remote end's nickname, if known.
    pub nick_name: String,
    /// `ip:port` as the owner sees it.
    pub address: String,
    /// Owner dialled.
    pub outbound: bool,
    /// Owner considers it established.
    pub established: bool,
}

/// A snapshot of everything the status and report endpoints show about the mesh.
#[derive(Debug, Clone)]
pub struct MeshStatus {
    /// Our summary.
    pub local: PeerSummary,
    /// Mesh port.
    pub port: u16,
    /// Lowest protocol version offered.
    pub protocol_min: u8,
    /// Highest protocol version offered.
    pub protocol_max: u8,
    /// Discovery on.
    pub discovery: bool,
    /// Direct targets, as given by the user.
    pub targets: Vec<String>,
    /// Live connections, then targets not connected.
    pub connections: Vec<ConnectionStatus>,
    /// All known peers, ourselves first.
    pub peers: Vec<PeerStatus>,
    /// (destination, next hop), established connections only.
    pub unicast_routes: Vec<(PeerName, PeerName)>,
    /// (source, next hops), established connections only.
    pub broadcast_routes: Vec<(PeerName, Vec<PeerName>)>,
    /// Connections terminated so far (not counting connect-to-self).
    pub termination_count: u64,
    /// Topology gossip bytes sent: (Weave's `topology` channel, weft's deltas channel).
    pub topology_bytes_sent: (u64, u64),
}

#[derive(Debug)]
struct Conn {
    remote: PeerName,
    remote_nick: String,
    remote_addr: SocketAddr,
    origin: Origin,
    uid: u64,
    /// Some data path to the remote works (reported to the topology once).
    established: bool,
    switch: OverlaySwitch,
    next_tcp_heartbeat: Instant,
    /// Both ends speak weft's topology deltas.
    deltas: bool,
    /// The overlay MTU of the sleeve path to the remote, once the data path measured it.
    sleeve_mtu: Option<u32>,
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
    gc_at: Option<Instant>,
    gossip_at: Instant,
    relayed: HashMap<u64, (Instant, Vec<u8>)>,
    termination_count: u64,
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
            gc_at: None,
            gossip_at,
            relayed: HashMap::new(),
            termination_count: 0,
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

    /// `weft connect`: adds targets (or replaces them). Returns one error line per bad peer.
    pub fn connect(
        &mut self,
        peers: &[String],
        replace: bool,
        resolve: &mut Resolver<'_>,
        now: Instant,
    ) -> Vec<String> {
        let errs = self
            .maker
            .initiate_connections(peers, replace, resolve, now);
        self.targets_changed(now);
        errs
    }

    /// `weft forget`: drops targets; live connections stay up.
    pub fn forget(&mut self, peers: &[String], now: Instant) {
        self.maker.forget_connections(peers);
        self.targets_changed(now);
    }

    /// The targets changed: the driver persists them, the maker dials what is new.
    fn targets_changed(&mut self, now: Instant) {
        self.events
            .push_back(MeshEvent::TargetsChanged(self.maker.direct_peers()));
        self.refresh_maker(now);
    }

    /// The direct targets, as the user gave them.
    pub fn targets(&self) -> Vec<String> {
        self.maker.direct_peers()
    }

    /// A dial or an outbound intro failed before the connection was registered.
    pub fn handle_dial_failed(&mut self, addr: SocketAddr, error: String, now: Instant) {
        self.maker.dial_failed(addr, error, now);
    }

    /// A connection finished its intro. Registers it, or returns the reason to refuse it
    /// (the driver closes the socket and logs the text; the maker is already told).
    pub fn handle_connection_ready(
        &mut self,
        conn: ConnId,
        remote: &RemoteFeatures,
        remote_addr: SocketAddr,
        origin: Origin,
        our_conn_id: u64,
        now: Instant,
    ) -> Result<(), String> {
        let result = self.register(conn, remote, remote_addr, origin, our_conn_id, now);
        if let (Err((reason, how)), Origin::Outbound { dial_addr, .. }) = (&result, origin) {
            // Connecting to ourself is not a termination in Weave's count (nor retried).
            if *how != Termination::Ourself {
                self.termination_count += 1;
            }
            self.maker
                .connection_down(dial_addr, *how, Some(reason.clone()), now);
        }
        result.map_err(|(reason, _)| reason)
    }

    fn register(
        &mut self,
        conn: ConnId,
        remote: &RemoteFeatures,
        remote_addr: SocketAddr,
        origin: Origin,
        our_conn_id: u64,
        now: Instant,
    ) -> Result<(), (String, Termination)> {
        let us = self.cfg.identity.clone();
        if remote.name == us.name {
            if remote.uid == us.uid {
                return Err(("cannot connect to ourself".into(), Termination::Ourself));
            }
            return Err((
                format!(
                    "local \"{}({})\" and remote \"{}({})\" peer names collision",
                    us.name, us.nick_name, remote.name, remote.nick_name
                ),
                Termination::NameCollision,
            ));
        }
        if let Origin::Outbound {
            accept_new_peer: false,
            ..
        } = origin
        {
            if self.peers.get(remote.name).is_none() {
                return Err((
                    format!(
                        "Found unknown remote name: {} at {}",
                        remote.name, remote_addr
                    ),
                    Termination::Other,
                ));
            }
        }
        let uid = our_conn_id ^ remote.conn_id;
        if let Some(&dup) = self.by_remote.get(&remote.name) {
            let dup_uid = self.conns.get(&dup).map_or(0, |c| c.uid);
            let text = format!(
                "Multiple connections to {} added to {}",
                remote.name, us.name
            );
            if dup_uid <= uid {
                if dup_uid == uid {
                    self.close(dup, text.clone());
                }
                return Err((text, Termination::Other));
            }
            self.close(dup, text);
            self.remove_conn(dup, now);
        }
        if self.cfg.conn_limit > 0 && self.conns.len() >= self.cfg.conn_limit {
            return Err((
                format!("Connection limit reached ({})", self.cfg.conn_limit),
                Termination::Other,
            ));
        }
        let udp_addr = match origin {
            Origin::Outbound { dial_addr, .. } => Some(dial_addr),
            Origin::Inbound => None,
        };
        let ids = LinkIds {
            local: us.name,
            remote: remote.name,
            uid,
            remote_ip: match remote_addr.ip() {
                IpAddr::V4(ip) => Some(ip),
                IpAddr::V6(_) => None,
            },
            fastdp_frame_len: 14 + self.cfg.mtu as usize,
        };
        let ours = overlays_feature(self.cfg.fastdp);
        let switch = OverlaySwitch::new(ids, &ours, remote.overlays.as_deref(), udp_addr, now)
            .map_err(|e| (e, Termination::Other))?;
        let fastdp = ids.remote_ip.is_some() && switch.fastdp_offered();
        let summary = PeerSummary {
            name: remote.name,
            nick_name: remote.nick_name.clone(),
            uid: remote.uid,
            version: 0,
            short_id: remote.short_id.unwrap_or(0),
            has_short_id: remote.short_id.is_some(),
        };
        let outbound = matches!(origin, Origin::Outbound { .. });
        let added = self
            .peers
            .add_local_connection(&summary, remote_addr.to_string(), outbound);
        tracing::info!(
            "->[{}|{}({})]: connection added{}",
            remote_addr,
            remote.name,
            remote.nick_name,
            if added.new_or_restarted {
                " (new peer)"
            } else {
                ""
            }
        );
        self.conns.insert(
            conn,
            Conn {
                remote: remote.name,
                remote_nick: remote.nick_name.clone(),
                remote_addr,
                origin,
                uid,
                established: false,
                switch,
                next_tcp_heartbeat: now + TCP_HEARTBEAT,
                deltas: self.cfg.topology_deltas && remote.topology_deltas,
                sleeve_mtu: None,
            },
        );
        if let (true, IpAddr::V4(ip)) = (fastdp, remote_addr.ip()) {
            self.events.push_back(MeshEvent::FastdpPeer {
                peer: remote.name,
                ip,
                add: true,
            });
        }
        self.by_remote.insert(remote.name, conn);
        if let Origin::Outbound { dial_addr, .. } = origin {
            self.maker.connection_up(dial_addr);
        }
        self.routes_dirty = true;
        if added.new_or_restarted {
            self.send_all_topology(conn);
        }
        self.schedule_update(&[remote.name], now);
        self.refresh_maker(now);
        self.run_switch(conn, now);
        Ok(())
    }

    /// The socket of `conn` closed, or the driver closed it after a `Close` event.
    pub fn handle_connection_closed(&mut self, conn: ConnId, error: Option<String>, now: Instant) {
        if let Some(c) = self.conns.get(&conn) {
            if let Some(e) = &error {
                tracing::info!(
                    "->[{}|{}({})]: connection shutting down due to error: {}",
                    c.remote_addr,
                    c.remote,
                    c.remote_nick,
                    e
                );
            }
            if let Origin::Outbound { dial_addr, .. } = c.origin {
                self.maker
                    .connection_down(dial_addr, Termination::Other, error, now);
            }
            self.termination_count += 1;
        }
        self.remove_conn(conn, now);
    }

    fn remove_conn(&mut self, conn: ConnId, now: Instant) {
        let Some(c) = self.conns.remove(&conn) else {
            return;
        };
        if self.by_remote.get(&c.remote) == Some(&conn) {
            self.by_remote.remove(&c.remote);
        }
        tracing::info!(
            "->[{}|{}({})]: connection deleted",
            c.remote_addr,
            c.remote,
            c.remote_nick
        );
        if let (true, IpAddr::V4(ip)) = (c.switch.fastdp_offered(), c.remote_addr.ip()) {
            if c.switch.is_direct_fastdp() {
                self.events.push_back(MeshEvent::FastdpFlood {
                    peer: c.remote,
                    ip,
                    on: false,
                });
            }
            self.events.push_back(MeshEvent::FastdpPeer {
                peer: c.remote,
                ip,
                add: false,
            });
        }
        for gone in self.peers.delete_local_connection(c.remote) {
            tracing::info!("Removed unreachable peer {}({})", gone.name, gone.nick_name);
        }
        self.routes_dirty = true;
        self.schedule_update(&[], now);
        self.refresh_maker(now);
    }

    /// A complete frame body arrived on `conn`. Malformed input closes that connection only.
    pub fn handle_frame(&mut self, conn: ConnId, body: &[u8], now: Instant) {
        let msg = match ProtocolMsg::decode(body) {
            Ok(Some(m)) => m,
            Ok(None) => {
                tracing::debug!("ignoring blank msg");
                return;
            }
            Err(e) => {
                self.close(conn, format!("malformed message: {e}"));
                return;
            }
        };
        if let Err(e) = self.handle_msg(conn, msg, body, now) {
            self.close(conn, e);
        }
    }

    fn handle_msg(
        &mut self,
        conn: ConnId,
        msg: ProtocolMsg,
        raw: &[u8],
        now: Instant,
    ) -> Result<(), String> {
        match msg {
            ProtocolMsg::Heartbeat => Ok(()),
            ProtocolMsg::ConnectionEstablished => {
                self.overlay_control(conn, 1, &[], now);
                Ok(())
            }
            ProtocolMsg::FragmentationReceived => {
                self.overlay_control(conn, 2, &[], now);
                Ok(())
            }
            ProtocolMsg::PmtuVerified(mtu) => {
                self.overlay_control(conn, 3, &mtu.to_be_bytes(), now);
                Ok(())
            }
            ProtocolMsg::OverlayControl(payload) => {
                self.overlay_control(conn, 7, &payload, now);
                Ok(())
            }
            ProtocolMsg::Unknown(tag) => {
                tracing::debug!("ignoring unknown protocol tag: {tag}");
                Ok(())
            }
            ProtocolMsg::Gossip {
                channel,
                src,
                payload,
            } => self.on_gossip(conn, &channel, src, payload, now),
            ProtocolMsg::GossipBroadcast {
                channel,
                src,
                payload,
            } => self.on_gossip_broadcast(&channel, src, payload, now),
            ProtocolMsg::GossipUnicast {
                channel, src, dst, ..
            } => {
                if channel == TOPOLOGY_CHANNEL {
                    return Err(format!("unexpected topology gossip unicast: {src}"));
                }
                if dst != self.name() {
                    self.relay_unicast(dst, raw);
                }
                Ok(())
            }
        }
    }

    fn on_gossip(
        &mut self,
        from: ConnId,
        channel: &str,
        src: PeerName,
        payload: Vec<u8>,
        now: Instant,
    ) -> Result<(), String> {
        if channel == topology_delta::CHANNEL {
            return self.on_weft_topology(from, src, &payload, now);
        }
        if channel != TOPOLOGY_CHANNEL {
            // A channel we do not implement: relay it like Weave's surrogate gossiper,
            // de-duplicated within one gossip interval so it cannot circulate forever.
            if self.seen_recently(channel, &payload, now) {
                return Ok(());
            }
            let msg = ProtocolMsg::Gossip {
                channel: channel.to_string(),
                src: self.name(),
                payload,
            };
            for hop in self.random_neighbours(src) {
                self.send_msg_to_peer(hop, &msg);
            }
            return Ok(());
        }
        let res = self.apply_topology(&payload, now)?;
        if !res.improved.is_empty() {
            self.relay_improved(src, &res.improved);
        }
        Ok(())
    }

    /// Merges a received topology payload; schedules what follows from it (our own
    /// announcement, route recalculation, discovery, GC). Errors close the connection.
    fn apply_topology(&mut self, payload: &[u8], now: Instant) -> Result<Update, String> {
        let update = topo_wire::decode(payload).map_err(|e| e.to_string())?;
        let res = self.peers.apply_update(update).map_err(|e| e.to_string())?;
        if res.announce_self {
            self.schedule_update(&[], now);
        }
        if !res.improved.is_empty() {
            self.routes_dirty = true;
            self.refresh_maker(now);
        }
        self.gc_at.get_or_insert(now + GC_DELAY);
        Ok(res)
    }

    fn on_gossip_broadcast(
        &mut self,
        channel: &str,
        src: PeerName,
        payload: Vec<u8>,
        now: Instant,
    ) -> Result<(), String> {
        let relay_payload = if channel == TOPOLOGY_CHANNEL {
            let res = self.apply_topology(&payload, now)?;
            topo_wire::encode(&self.peers.summaries(&res.received))
        } else {
            payload
        };
        let msg = ProtocolMsg::GossipBroadcast {
            channel: channel.to_string(),
            src,
            payload: relay_payload,
        };
        let hops = self.routes().broadcast_all(src).to_vec();
        for hop in hops {
            self.send_msg_to_peer(hop, &msg);
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

    fn seen_recently(&mut self, channel: &str, payload: &[u8], now: Instant) -> bool {
        self.relayed
            .retain(|_, (at, _)| now.saturating_duration_since(*at) < GOSSIP_INTERVAL);
        let mut key = Vec::with_capacity(channel.len() + 1 + payload.len());
        key.extend_from_slice(channel.as_bytes());
        key.push(0);
        key.extend_from_slice(payload);
        let h = fnv64a(&key);
        match self.relayed.get(&h) {
            Some((_, seen)) if *seen == key => true,
            _ => {
                self.relayed.insert(h, (now, key));
                false
            }
        }
    }

    /// A UDP datagram arrived on the mesh port from `from`: hands each special (control)
    /// record to [`Self::handle_special_frame`]. A driver whose forwarder already parsed the
    /// datagram calls that directly instead.
    pub fn handle_datagram(&mut self, from: SocketAddr, datagram: &[u8], now: Instant) {
        let Ok((sender, frames)) = sleeve::parse(datagram) else {
            tracing::debug!("dropping malformed datagram from {from}");
            return;
        };
        for f in frames {
            let Ok(f) = f else { break };
            if f.src == sender && f.dst == self.name() && sleeve::is_special(f.data) {
                self.handle_special_frame(from, sender, f.data, now);
            }
        }
    }

    /// A special sleeve frame (all-zero Ethernet header) that `sender` sent us from `from`:
    /// a heartbeat carrying the connection uid, or one of Weave Net's MTU probes.
    pub fn handle_special_frame(
        &mut self,
        from: SocketAddr,
        sender: PeerName,
        frame: &[u8],
        now: Instant,
    ) {
        let Some(&conn) = self.by_remote.get(&sender) else {
            return;
        };
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        match sleeve::heartbeat_uid(frame) {
            Some(uid) if uid == c.uid => c.switch.handle_sleeve_heartbeat(from, now),
            Some(_) => return,
            None => c.switch.handle_sleeve_probe(frame.len()),
        }
        self.run_switch(conn, now);
    }

    /// A fastdp heartbeat frame arrived on the local VXLAN device.
    pub fn handle_fastdp_frame(&mut self, frame: &[u8], now: Instant) {
        let Some(sender) = fastdp_heartbeat_sender(frame) else {
            return;
        };
        let Some(&conn) = self.by_remote.get(&sender) else {
            return;
        };
        if let Some(c) = self.conns.get_mut(&conn) {
            c.switch.handle_fastdp_heartbeat(frame, now);
        }
        self.run_switch(conn, now);
    }

    fn overlay_control(&mut self, conn: ConnId, tag: u8, payload: &[u8], now: Instant) {
        if let Some(c) = self.conns.get_mut(&conn) {
            c.switch.handle_control(tag, payload, now);
        }
        self.run_switch(conn, now);
    }

    /// Sends what the connection's overlay switch produced and notes a first establishment.
    fn run_switch(&mut self, conn: ConnId, now: Instant) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        let outs: Vec<SwitchOutput> = c.switch.drain().collect();
        let (remote, ip) = (c.remote, c.remote_addr.ip());
        let became = !c.established && c.switch.established();
        for o in outs {
            match o {
                SwitchOutput::Control(body) => self.send_raw(conn, &body),
                SwitchOutput::SleeveHeartbeat { to, datagram } => {
                    self.events.push_back(MeshEvent::SendUdp { to, datagram });
                }
                SwitchOutput::FastdpHeartbeat(frame) => {
                    self.events.push_back(MeshEvent::SendFastdp(frame));
                }
                SwitchOutput::FastdpFlood(on) => {
                    if let IpAddr::V4(ip) = ip {
                        tracing::info!(
                            "overlay_switch ->[{remote}] using {}",
                            if on { "fastdp" } else { "sleeve" }
                        );
                        self.events.push_back(MeshEvent::FastdpFlood {
                            peer: remote,
                            ip,
                            on,
                        });
                    }
                }
            }
        }
        if became {
            self.mark_established(conn, now);
        }
    }

    fn mark_established(&mut self, conn: ConnId, now: Instant) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        if c.established {
            return;
        }
        c.established = true;
        let (remote, addr, nick) = (c.remote, c.remote_addr, c.remote_nick.clone());
        tracing::info!("->[{addr}|{remote}({nick})]: connection fully established");
        self.peers.establish_local_connection(remote);
        self.routes_dirty = true;
        self.schedule_update(&[], now);
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
            min(Some(c.next_tcp_heartbeat));
            min(Some(c.switch.poll_timeout()));
        }
        t
    }

    /// Runs everything due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.update_at.is_some_and(|t| t <= now) {
            self.update_at = None;
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
            for p in &gone {
                tracing::info!("Removed unreachable peer {}({})", p.name, p.nick_name);
            }
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
            self.close(id, reason);
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

    /// The data path measured the overlay MTU of the sleeve path to `peer` (what fits one
    /// datagram after the IP, UDP and sleeve headers); status shows it for sleeve connections.
    pub fn set_sleeve_mtu(&mut self, peer: PeerName, mtu: u32) {
        if let Some(c) = self
            .by_remote
            .get(&peer)
            .and_then(|id| self.conns.get_mut(id))
        {
            c.sleeve_mtu = Some(mtu);
        }
    }

    /// A snapshot for the status, report and metrics endpoints.
    pub fn status(&mut self, now: Instant) -> MeshStatus {
        let us = self.peers.our_summary();
        let mut connections: Vec<ConnectionStatus> = self
            .conns
            .values()
            .map(|c| {
                let mut attrs = BTreeMap::new();
                if let Some(why) = c.switch.fastdp_fallback(now) {
                    attrs.insert("fastdp-fallback".to_string(), format!("\"{why}\" "));
                }
                // Weave shows the bridge MTU for fastdp and the discovered one for sleeve.
                let mtu = match (c.switch.best(), c.sleeve_mtu) {
                    ("sleeve", Some(m)) => m,
                    _ => self.cfg.mtu,
                };
                attrs.insert("mtu".to_string(), mtu.to_string());
                ConnectionStatus {
                    address: c.remote_addr.to_string(),
                    outbound: matches!(c.origin, Origin::Outbound { .. }),
                    state: if c.established {
                        "established"
                    } else {
                        "pending"
                    }
                    .into(),
                    info: format!("{:<6} {}({})", c.switch.best(), c.remote, c.remote_nick),
                    attrs,
                }
            })
            .collect();
        connections.extend(
            self.maker
                .status(now)
                .into_iter()
                .map(|t| ConnectionStatus {
                    address: t.address,
                    outbound: true,
                    state: t.state.to_string(),
                    info: t.info,
                    attrs: BTreeMap::new(),
                }),
        );
        let nick_of = |n: PeerName| {
            self.peers
                .get(n)
                .map(|(s, _)| s.nick_name)
                .unwrap_or_default()
        };
        let mut names = self.peers.all_names();
        names.sort_by_key(|&n| n != us.name);
        let peers = names
            .into_iter()
            .filter_map(|n| self.peers.get(n))
            .map(|(summary, conns)| PeerStatus {
                summary,
                connections: conns
                    .iter()
                    .map(|c| PeerConnectionStatus {
                        name: c.name,
                        nick_name: nick_of(c.name),
                        address: c.remote_tcp_addr.clone(),
                        outbound: c.outbound,
                        established: c.established,
                    })
                    .collect(),
            })
            .collect();
        let routes = self.routes();
        let unicast_routes = routes.unicast_table();
        let broadcast_routes = routes.broadcast_table();
        MeshStatus {
            local: us,
            port: self.cfg.port,
            protocol_min: PROTOCOL_MIN_VERSION,
            protocol_max: PROTOCOL_MAX_VERSION,
            discovery: self.cfg.discovery,
            targets: self.maker.direct_peers(),
            connections,
            peers,
            unicast_routes,
            broadcast_routes,
            termination_count: self.termination_count,
            topology_bytes_sent: self.topology_bytes_sent,
        }
    }

    /// The data plane's view of the mesh: routes and which peers are direct fastdp neighbours.
    pub fn fabric(&mut self) -> MeshFabric<'_> {
        self.ensure_routes();
        MeshFabric {
            us: self.cfg.identity.name,
            routes: &self.routes,
            peers: &self.peers,
            by_remote: &self.by_remote,
            conns: &self.conns,
        }
    }

    /// Whether a live connection to `peer` exists.
    pub fn is_connected(&self, peer: PeerName) -> bool {
        self.by_remote.contains_key(&peer)
    }

    /// Where sleeve datagrams for a directly connected peer go, once known.
    pub fn peer_udp_addr(&self, peer: PeerName) -> Option<SocketAddr> {
        let c = self.conns.get(self.by_remote.get(&peer)?)?;
        c.switch.udp_addr()
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

    /// A value that changes whenever anything [`Self::fabric`], [`Self::is_connected`] or
    /// [`Self::peer_udp_addr`] answers may have changed: routes, the set of known peers
    /// (placeholders are only ever added outside GC, which recalculates routes), live
    /// connections, their sleeve addresses and fastdp state. Cheap (no allocation, one pass
    /// over live connections), so a driver can skip recapturing an unchanged view.
    pub fn fabric_version(&mut self) -> u64 {
        use std::hash::{Hash, Hasher};
        self.ensure_routes();
        let mut h = std::hash::DefaultHasher::new();
        self.routes_generation.hash(&mut h);
        self.peers.len().hash(&mut h);
        for (peer, id) in &self.by_remote {
            peer.hash(&mut h);
            if let Some(c) = self.conns.get(id) {
                c.switch.udp_addr().hash(&mut h);
                c.switch.is_direct_fastdp().hash(&mut h);
            }
        }
        h.finish()
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
        self.update_at.get_or_insert(now + TOPOLOGY_UPDATE_DELAY);
    }

    fn send_topology(&mut self, conn: ConnId, channel: &str, names: &[PeerName]) {
        let payload = topo_wire::encode(&self.peers.summaries(names));
        let msg = ProtocolMsg::Gossip {
            channel: channel.to_string(),
            src: self.name(),
            payload,
        };
        let before = self.events.len();
        self.send_msg(conn, &msg);
        self.topology_bytes_sent.0 += self.bytes_queued_since(before);
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
                MeshEvent::Send { bytes, .. } => bytes.len() as u64,
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
        let mut bytes = Vec::with_capacity(body.len() + 4);
        if let Err(e) = frame::encode(body, &mut bytes) {
            tracing::warn!("not sending: {e}");
            return;
        }
        self.events.push_back(MeshEvent::Send { conn, bytes });
    }

    fn close(&mut self, conn: ConnId, reason: String) {
        self.events.push_back(MeshEvent::Close { conn, reason });
    }

    fn refresh_maker(&mut self, now: Instant) {
        let connected: Vec<ConnectedAddr> = self
            .conns
            .values()
            .map(|c| match c.origin {
                Origin::Outbound { dial_addr, .. } => ConnectedAddr {
                    addr: dial_addr,
                    outbound: true,
                },
                Origin::Inbound => ConnectedAddr {
                    addr: c.remote_addr,
                    outbound: false,
                },
            })
            .collect();
        let discovered = if self.cfg.discovery {
            self.discovery_candidates()
        } else {
            Vec::new()
        };
        self.maker.refresh(&connected, &discovered, now);
    }

    /// Addresses to try, learnt from other peers' connections (Weave's discovery rule).
    fn discovery_candidates(&self) -> Vec<SocketAddr> {
        let us = self.name();
        let mut out = BTreeSet::new();
        for p in self.peers.all_names() {
            if p == us {
                continue;
            }
            let Some((_, conns)) = self.peers.get(p) else {
                continue;
            };
            for c in conns {
                if c.name == us || self.by_remote.contains_key(&c.name) {
                    continue;
                }
                let Ok(addr) = c.remote_tcp_addr.parse::<SocketAddr>() else {
                    continue;
                };
                if c.outbound {
                    out.insert(addr);
                } else {
                    out.insert(SocketAddr::new(addr.ip(), self.cfg.port));
                }
            }
        }
        out.into_iter().collect()
    }

    /// A random id for a new connection's intro.
    pub fn new_conn_id(&mut self) -> u64 {
        self.rng.gen()
    }
}

/// The mesh as the data-plane forwarder sees it; borrowed from [`Mesh::fabric`].
#[derive(Debug)]
pub struct MeshFabric<'a> {
    us: PeerName,
    routes: &'a Routes,
    peers: &'a Peers,
    by_remote: &'a BTreeMap<PeerName, ConnId>,
    conns: &'a BTreeMap<ConnId, Conn>,
}

impl Fabric for MeshFabric<'_> {
    fn our_name(&self) -> PeerName {
        self.us
    }

    fn unicast_next_hop(&self, dst: PeerName) -> Option<PeerName> {
        self.routes.unicast(dst)
    }

    fn broadcast_next_hops(&self, src: PeerName) -> &[PeerName] {
        self.routes.broadcast(src)
    }

    fn broadcast_routes(&self) -> Option<crate::routes::BroadcastRoutes> {
        Some(self.routes.broadcast_routes())
    }

    fn is_direct_fastdp(&self, peer: PeerName) -> bool {
        self.by_remote
            .get(&peer)
            .and_then(|c| self.conns.get(c))
            .is_some_and(|c| c.switch.is_direct_fastdp())
    }

    fn is_known_peer(&self, peer: PeerName) -> bool {
        self.peers.get(peer).is_some()
    }
}

fn fnv64a(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}
