//! Topology gossip: what the mesh sends when its view changes, periodically and when a
//! connection comes up, and what it does with received topology.
//!
//! Towards Weave Net peers this is Weave's `topology` channel: whole peer entries, relayed to
//! random neighbours when they improve our view. Between weft peers (both advertised
//! [`weft_wire::topology_delta::FEATURE`]) the `weft-topology` channel carries changes instead:
//! * our own change goes out as a delta since our last announcement, and every peer that can
//!   apply it relays that same delta once, so a connection change costs O(1) bytes per peer
//!   and per gossip fan-out (N·log N in all) instead of the N entries of a full connection list;
//! * other peers are announced by reference (name, uid, version); whoever lags pulls the
//!   full entry from the one that announced it, as does whoever misses a delta's base;
//! * the periodic full gossip and the "send everything to a new peer" become digests of
//!   references, answered with only the entries the other side lacks.
//!
//! Full entries always travel as Weave's payload, so the merge rules stay Weave's.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use weft_wire::topology_delta::{self as delta_wire, Delta, Message, Ref};
use weft_wire::PeerName;

use weft_wire::protocol::ProtocolMsg;
use weft_wire::topology as topo_wire;

use super::{CloseReason, ConnId, Mesh, GC_DELAY, TOPOLOGY_CHANNEL};
use crate::topology::{DeltaOutcome, TopologyError, Update, MAX_DELTAS_PER_MESSAGE};

impl Mesh {
    /// Whether `conn` speaks weft's topology deltas.
    fn speaks_deltas(&self, conn: ConnId) -> bool {
        self.conns.get(&conn).is_some_and(|c| c.deltas)
    }

    /// Our coalesced topology update: `names` (ourself included) to random neighbours.
    pub(super) fn announce(&mut self, names: &[PeerName]) {
        let us = self.name();
        let ours = self.peers.our_delta_since(&self.announced);
        self.announced = self.peers.our_entry();
        let refs: Vec<Ref> = names
            .iter()
            .filter(|&&n| n != us)
            .map(|&n| self.peers.ref_of(n))
            .collect();
        let update = Message::Update {
            deltas: ours.into_iter().collect(),
            refs,
        };
        // Our own change goes along our broadcast tree (to every neighbour in a full mesh),
        // not to random neighbours: a peer that missed our last change would not find out
        // until the next periodic gossip.
        for hop in self.routes().broadcast_all(us).to_vec() {
            self.send_topology_to(hop, names, &update);
        }
    }

    /// The periodic full gossip: digests to weft peers, everything to Weave peers.
    pub(super) fn gossip_everything(&mut self) {
        let us = self.name();
        let all = self.peers.all_names();
        let digest = Message::Digest(self.peers.refs());
        for hop in self.random_neighbours(us) {
            self.send_topology_to(hop, &all, &digest);
        }
    }

    /// What a new (or restarted) neighbour gets: our whole view, or a digest of it.
    pub(super) fn send_all_topology(&mut self, conn: ConnId) {
        if self.speaks_deltas(conn) {
            let digest = Message::Digest(self.peers.refs());
            self.send_weft_topology(conn, &digest);
        } else {
            let all = self.peers.all_names();
            self.send_topology(conn, TOPOLOGY_CHANNEL, &all);
        }
    }

    /// Relays peers that improved our view from Weave's payload: by reference to weft peers,
    /// whole to Weave peers.
    pub(super) fn relay_improved(&mut self, except: PeerName, improved: &[PeerName]) {
        let refs = improved.iter().map(|&n| self.peers.ref_of(n)).collect();
        let update = Message::Update {
            deltas: Vec::new(),
            refs,
        };
        for hop in self.random_neighbours(except) {
            self.send_topology_to(hop, improved, &update);
        }
    }

    /// `msg` if `hop` speaks deltas, else Weave's payload with the entries of `names`.
    fn send_topology_to(&mut self, hop: PeerName, names: &[PeerName], msg: &Message) {
        let Some(&conn) = self.by_remote.get(&hop) else {
            return;
        };
        if self.speaks_deltas(conn) {
            self.send_weft_topology(conn, msg);
        } else {
            self.send_topology(conn, TOPOLOGY_CHANNEL, names);
        }
    }

    fn send_weft_topology(&mut self, conn: ConnId, msg: &Message) {
        match msg.encode() {
            Ok(payload) => {
                let msg = ProtocolMsg::Gossip {
                    channel: delta_wire::CHANNEL.to_string(),
                    src: self.name(),
                    payload,
                };
                let before = self.events.len();
                self.send_msg(conn, &msg);
                self.topology_bytes_sent.1 += self.bytes_queued_since(before);
            }
            Err(e) => tracing::warn!("not sending topology: {e}"),
        }
    }

    /// A `weft-topology` payload arrived on `conn` from neighbour `src`. Errors close the
    /// connection, as a malformed Weave topology payload does.
    pub(super) fn on_weft_topology(
        &mut self,
        conn: ConnId,
        src: PeerName,
        payload: &[u8],
        now: Instant,
    ) -> Result<(), CloseReason> {
        match Message::decode(payload)? {
            Message::Update { deltas, refs } => self.on_update(conn, src, deltas, &refs, now),
            Message::Pull(refs) => {
                let names = self.newer_here(&refs);
                self.push_entries(conn, names, now);
                Ok(())
            }
            Message::Digest(refs) => {
                let mentioned: BTreeSet<PeerName> = refs.iter().map(|r| r.name).collect();
                let mut push = self.newer_here(&refs);
                push.extend(
                    self.peers
                        .refs()
                        .into_iter()
                        .filter(|r| !mentioned.contains(&r.name))
                        .map(|r| r.name),
                );
                self.push_entries(conn, push, now);
                self.pull_lagging(conn, &refs);
                Ok(())
            }
        }
    }

    fn on_update(
        &mut self,
        conn: ConnId,
        src: PeerName,
        deltas: Vec<Delta>,
        refs: &[Ref],
        now: Instant,
    ) -> Result<(), CloseReason> {
        if deltas.len() > MAX_DELTAS_PER_MESSAGE {
            return Err(TopologyError::TooManyDeltas(deltas.len()).into());
        }
        let mut applied = Vec::new();
        let mut gaps = BTreeSet::new();
        for d in deltas {
            match self.peers.apply_delta(&d)? {
                DeltaOutcome::Applied => applied.push(d),
                DeltaOutcome::Gap => {
                    gaps.insert(d.summary.name);
                }
                DeltaOutcome::AnnounceSelf => self.schedule_update(&[], now),
                DeltaOutcome::Stale => {}
            }
        }
        self.pull(conn, gaps);
        self.pull_lagging(conn, refs);
        if applied.is_empty() {
            return Ok(());
        }
        self.routes_dirty = true;
        self.refresh_maker(now);
        self.gc_at.get_or_insert(now + GC_DELAY);
        // Each change travels on along its owner's broadcast tree, as Weave Net broadcasts
        // topology updates: every reachable peer gets it once, none is left to chance.
        let mut by_owner: BTreeMap<PeerName, Vec<Delta>> = BTreeMap::new();
        for d in applied {
            by_owner.entry(d.summary.name).or_default().push(d);
        }
        for (owner, deltas) in by_owner {
            let relay = Message::Update {
                deltas,
                refs: Vec::new(),
            };
            for hop in self.routes().broadcast_all(owner).to_vec() {
                if hop != src {
                    self.send_topology_to(hop, &[owner], &relay);
                }
            }
        }
        Ok(())
    }

    /// Sends `conn` our full entries of `names`, in Weave's payload: at once when the
    /// connection's pace allows, else merged with what is pending and sent when it does.
    fn push_entries(&mut self, conn: ConnId, names: BTreeSet<PeerName>, now: Instant) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        if names.is_empty() && c.push_pending.is_empty() {
            return;
        }
        c.push_pending.extend(names);
        let ready = c.push_pace.ready_at(now);
        if ready <= now {
            self.flush_push(conn, now);
        } else {
            c.push_at = Some(ready);
        }
    }

    /// Sends what `conn` asked for and was held back by the pace.
    pub(super) fn flush_push(&mut self, conn: ConnId, now: Instant) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        c.push_at = None;
        let names: Vec<PeerName> = std::mem::take(&mut c.push_pending).into_iter().collect();
        if names.is_empty() {
            return;
        }
        c.push_pace.take(now);
        self.send_topology(conn, TOPOLOGY_CHANNEL, &names);
    }

    /// The peers of `refs` we know in a newer version. A set: a name repeated in a request is
    /// answered once (each entry may be large, and Weave's payload must not describe a peer
    /// twice).
    fn newer_here(&self, refs: &[Ref]) -> BTreeSet<PeerName> {
        refs.iter()
            .filter(|r| self.peers.is_newer_than(r))
            .map(|r| r.name)
            .collect()
    }

    /// Pulls from `conn` every peer of `refs` that it knows in a newer version than we do.
    fn pull_lagging(&mut self, conn: ConnId, refs: &[Ref]) {
        let want: BTreeSet<PeerName> = refs
            .iter()
            .filter(|r| self.peers.is_older_than(r))
            .map(|r| r.name)
            .collect();
        self.pull(conn, want);
    }

    /// Asks `conn` for its entries of `names` where newer than ours.
    fn pull(&mut self, conn: ConnId, names: BTreeSet<PeerName>) {
        if !names.is_empty() {
            let refs = names.into_iter().map(|n| self.peers.ref_of(n)).collect();
            self.send_weft_topology(conn, &Message::Pull(refs));
        }
    }
}

impl Mesh {
    /// Merges a received topology payload; schedules what follows from it (our own
    /// announcement, route recalculation, discovery, GC). Errors close the connection.
    pub(super) fn apply_topology(
        &mut self,
        payload: &[u8],
        now: Instant,
    ) -> Result<Update, CloseReason> {
        let update = topo_wire::decode(payload).map_err(CloseReason::TopologyPayload)?;
        let res = self.peers.apply_update(update)?;
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

    pub(super) fn send_topology(&mut self, conn: ConnId, channel: &str, names: &[PeerName]) {
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
}
