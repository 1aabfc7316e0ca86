//! What the mesh shows: the snapshot behind `weft status`, `weft report` and the metrics, and
//! the data plane's view of routes and fastdp neighbours ([`MeshFabric`]).
//!
//! A snapshot is taken on the mesh task for every request, so it copies only what is small
//! (our own connections, targets, the unicast table); the topology, one entry per known peer,
//! is shared with the view ([`TopologySnapshot`]) and read by the endpoint off the mesh task.

use std::collections::BTreeMap;
use std::time::Instant;

use weft_wire::{PeerName, PeerSummary};

use super::{Conn, ConnId, Mesh, Origin};
use crate::handshake::{PROTOCOL_MAX_VERSION, PROTOCOL_MIN_VERSION};
use crate::overlay::Fabric;
use crate::routes::Routes;
use crate::topology::{Peers, TopologySnapshot};

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
    /// All known peers, ourselves first, shared with the mesh's view (nothing copied).
    pub peers: TopologySnapshot,
    /// (destination, next hop), established connections only.
    pub unicast_routes: Vec<(PeerName, PeerName)>,
    /// (source, next hops), established connections only.
    pub broadcast_routes: Vec<(PeerName, Vec<PeerName>)>,
    /// Connections terminated so far (not counting connect-to-self).
    pub termination_count: u64,
    /// Topology gossip bytes sent: (Weave's `topology` channel, weft's deltas channel).
    pub topology_bytes_sent: (u64, u64),
    /// What the mesh ignored or skipped of what peers sent, since start.
    pub ignored: Ignored,
}

/// What the mesh ignored or skipped of what peers sent, since start: the `/metrics` counters
/// that show a peer pushing at the bounds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Ignored {
    /// Peers first heard of in gossip and not taken: the view was full
    /// ([`crate::topology::MAX_PEERS`]).
    pub peers: u64,
    /// Topology entries and deltas skipped for an implausible version.
    pub versions: u64,
    /// Discovered addresses not dialled: the connection maker held its most targets (each
    /// refresh counts each such address again).
    pub discovery_candidates: u64,
    /// Messages ignored: blank, unknown tags, repeated gossip and broadcasts on channels we
    /// do not implement, unicasts to us on unknown channels.
    pub gossip: u64,
    /// Messages that closed their connection: malformed, or breaking the protocol (a
    /// topology that breaks the merge rules or the bounds, a topology unicast).
    pub frames: u64,
}

impl Mesh {
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
                let mut info = format!("{:<6} {}({})", c.switch.best(), c.remote, c.remote_nick);
                // With a password Weave Net says which connections' data is encrypted.
                if c.security.encrypted_session {
                    let encrypted = c.security.overlay_key.is_some();
                    if encrypted {
                        attrs.insert("encrypted".to_string(), "true".to_string());
                    }
                    let word = if encrypted {
                        "encrypted"
                    } else {
                        "unencrypted"
                    };
                    info = format!("{word:<11} {info}");
                }
                ConnectionStatus {
                    address: c.remote_addr.to_string(),
                    outbound: matches!(c.origin, Origin::Outbound { .. }),
                    state: if c.established {
                        "established"
                    } else {
                        "pending"
                    }
                    .into(),
                    info,
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
        let peers = self.peers.snapshot();
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
            ignored: Ignored {
                peers: self.peers.ignored_peers(),
                versions: self.peers.refused_versions(),
                discovery_candidates: self.maker.skipped_candidates(),
                gossip: self.gossip_ignored,
                frames: self.frames_refused,
            },
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
            // A new connection to the same peer has new keys.
            id.hash(&mut h);
            if let Some(c) = self.conns.get(id) {
                c.switch.udp_addr().hash(&mut h);
                c.switch.is_direct_fastdp().hash(&mut h);
            }
        }
        h.finish()
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
