//! Connections: registering one whose intro completed (names, duplicates resolved by the
//! connection uid as Weave Net does, the connection limit), removing one, and the connection
//! maker's view of them (targets the user gave, addresses discovered through gossip).

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use rand::Rng;
use weft_wire::{PeerName, PeerSummary};

use super::{
    CloseReason, ConnId, ConnSecurity, FastdpChange, Mesh, MeshEvent, Origin, TCP_HEARTBEAT,
};
use crate::pace::Pacer;

/// Answers to one connection's pulls and digests: this many at once, then one per
/// [`PUSH_PERIOD`].
const PUSH_BURST: u32 = 4;
/// See [`PUSH_BURST`].
const PUSH_PERIOD: std::time::Duration = std::time::Duration::from_millis(250);
use crate::connection_maker::{ConnectRequest, ConnectedAddr, LookupToken, Termination};
use crate::handshake::RemoteFeatures;
use crate::overlay_switch::{overlays_feature, LinkIds, OverlaySwitch};

#[derive(Debug)]
pub(super) struct Conn {
    pub(super) remote: PeerName,
    pub(super) remote_nick: String,
    pub(super) remote_addr: SocketAddr,
    pub(super) origin: Origin,
    pub(super) uid: u64,
    /// Some data path to the remote works (reported to the topology once).
    pub(super) established: bool,
    pub(super) switch: OverlaySwitch,
    pub(super) next_tcp_heartbeat: Instant,
    /// Both ends speak weft's topology deltas.
    pub(super) deltas: bool,
    /// The remote takes IPAM ring deltas (whether to send any is IPAM's decision).
    pub(super) ipam_deltas: bool,
    /// The overlay MTU of the sleeve path to the remote, once the data path measured it.
    pub(super) sleeve_mtu: Option<u32>,
    /// Entries the remote asked for (by pull or digest) and not sent yet: requests are
    /// merged and answered at a paced rate, so a peer cannot make us send our whole view
    /// once per message it sends.
    pub(super) push_pending: BTreeSet<PeerName>,
    /// When `push_pending` goes out.
    pub(super) push_at: Option<Instant>,
    /// Paces the answers.
    pub(super) push_pace: Pacer,
    /// What the intro agreed on: a sealed control connection, an overlay key.
    pub(super) security: ConnSecurity,
}

impl Mesh {
    /// Neighbours whose connection offered IPAM ring deltas (the `WeftIpam` feature).
    pub fn ipam_delta_neighbours(&self) -> BTreeSet<PeerName> {
        self.conns
            .values()
            .filter(|c| c.ipam_deltas)
            .map(|c| c.remote)
            .collect()
    }

    /// `weft connect` (and the command-line peers): adds targets, or replaces them. Host names
    /// come out of [`Mesh::poll_event`] as [`MeshEvent::Lookup`]s for the driver to answer with
    /// [`Mesh::handle_lookup`]; once all are answered the call takes effect and its error lines
    /// come out as [`MeshEvent::Connected`] with the request returned here (at once when the
    /// peers hold no host names). See [`crate::connection_maker::ConnectionMaker::initiate_connections`].
    pub fn connect(&mut self, peers: &[String], replace: bool, now: Instant) -> ConnectRequest {
        let request = self.maker.initiate_connections(peers, replace, now);
        self.take_maker_outputs(now);
        request
    }

    /// The answer to a [`MeshEvent::Lookup`]: the addresses found or the resolver's error text.
    pub fn handle_lookup(
        &mut self,
        token: LookupToken,
        answer: Result<Vec<SocketAddr>, String>,
        now: Instant,
    ) {
        self.maker.handle_lookup(token, answer, now);
        self.take_maker_outputs(now);
    }

    /// Moves the maker's lookups and finished `connect` calls to the events; a finished call
    /// changed the targets.
    pub(super) fn take_maker_outputs(&mut self, now: Instant) {
        while let Some(l) = self.maker.poll_lookup() {
            self.events.push_back(MeshEvent::Lookup(l));
        }
        let mut changed = false;
        while let Some(o) = self.maker.poll_outcome() {
            self.events.push_back(MeshEvent::Connected(o));
            changed = true;
        }
        if changed {
            self.targets_changed(now);
        }
    }

    /// `weft forget`: drops targets; live connections stay up.
    pub fn forget(&mut self, peers: &[String], now: Instant) {
        self.maker.forget_connections(peers);
        self.targets_changed(now);
    }

    /// The targets changed: the driver persists them, the maker dials what is new.
    pub(super) fn targets_changed(&mut self, now: Instant) {
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
    /// `security` is what the intro agreed on (plain without a password).
    #[allow(clippy::too_many_arguments)]
    pub fn handle_connection_ready(
        &mut self,
        conn: ConnId,
        remote: &RemoteFeatures,
        remote_addr: SocketAddr,
        origin: Origin,
        our_intro_id: u64,
        security: ConnSecurity,
        now: Instant,
    ) -> Result<(), CloseReason> {
        let result = self.register(
            conn,
            remote,
            remote_addr,
            origin,
            our_intro_id,
            security,
            now,
        );
        if let (Err((reason, how)), Origin::Outbound { dial_addr, .. }) = (&result, origin) {
            // Connecting to ourself is not a termination in Weave's count (nor retried).
            if *how != Termination::Ourself {
                self.termination_count += 1;
            }
            self.maker
                .connection_down(dial_addr, *how, Some(reason.to_string()), now);
        }
        result.map_err(|(reason, _)| reason)
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn register(
        &mut self,
        conn: ConnId,
        remote: &RemoteFeatures,
        remote_addr: SocketAddr,
        origin: Origin,
        our_intro_id: u64,
        security: ConnSecurity,
        now: Instant,
    ) -> Result<(), (CloseReason, Termination)> {
        let us = self.cfg.identity.clone();
        if remote.name == us.name {
            if remote.uid == us.uid {
                return Err((CloseReason::Ourself, Termination::Ourself));
            }
            let collision = CloseReason::NameCollision {
                us: us.name,
                us_nick: us.nick_name.clone(),
                remote_nick: remote.nick_name.clone(),
            };
            return Err((collision, Termination::NameCollision));
        }
        if let Origin::Outbound {
            accept_new_peer: false,
            ..
        } = origin
        {
            if self.peers.get(remote.name).is_none() {
                let unknown = CloseReason::UnknownRemote {
                    name: remote.name,
                    addr: remote_addr,
                };
                return Err((unknown, Termination::Other));
            }
        }
        // Both ends derive the same connection uid from the two intro ids.
        let uid = our_intro_id ^ remote.conn_id;
        if let Some(&dup) = self.by_remote.get(&remote.name) {
            let dup_uid = self.conns.get(&dup).map_or(0, |c| c.uid);
            let dup_reason = CloseReason::Duplicate {
                remote: remote.name,
                us: us.name,
            };
            if dup_uid <= uid {
                if dup_uid == uid {
                    self.close(dup, dup_reason.clone());
                }
                return Err((dup_reason, Termination::Other));
            }
            self.close(dup, dup_reason);
            self.remove_conn(dup, now);
        }
        if self.cfg.conn_limit > 0 && self.conns.len() >= self.cfg.conn_limit {
            let limit = CloseReason::ConnLimit(self.cfg.conn_limit);
            return Err((limit, Termination::Other));
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
        let mut switch = OverlaySwitch::new(ids, &ours, remote.overlays.as_deref(), udp_addr, now)
            .map_err(|e| (CloseReason::Overlay(e), Termination::Other))?;
        if let Some(key) = &security.overlay_key {
            let outbound = matches!(origin, Origin::Outbound { .. });
            switch = switch.with_sleeve_key(key, security.sleeve_scheme, outbound);
        }
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
                ipam_deltas: remote.ipam_deltas,
                sleeve_mtu: None,
                push_pending: BTreeSet::new(),
                push_at: None,
                push_pace: Pacer::new(PUSH_BURST, PUSH_PERIOD, now),
                security,
            },
        );
        if let (true, IpAddr::V4(ip)) = (fastdp, remote_addr.ip()) {
            self.events.push_back(MeshEvent::Fastdp(FastdpChange::Peer {
                peer: remote.name,
                ip,
                add: true,
            }));
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

    pub(super) fn remove_conn(&mut self, conn: ConnId, now: Instant) {
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
                self.events
                    .push_back(MeshEvent::Fastdp(FastdpChange::Flood {
                        peer: c.remote,
                        ip,
                        on: false,
                    }));
            }
            self.events.push_back(MeshEvent::Fastdp(FastdpChange::Peer {
                peer: c.remote,
                ip,
                add: false,
            }));
        }
        super::log_removed(&self.peers.delete_local_connection(c.remote));
        self.routes_dirty = true;
        self.schedule_update(&[], now);
        self.refresh_maker(now);
    }

    pub(super) fn refresh_maker(&mut self, now: Instant) {
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
    pub(super) fn discovery_candidates(&self) -> Vec<SocketAddr> {
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
