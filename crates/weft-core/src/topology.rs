//! The local view of the whole mesh: every known peer, its summary and its connection list
//! (Weave Net's `Peers` together with the `localPeer`), and the rules that change it.
//!
//! This module owns the topology *state machine* of spec §2: local connection add / establish /
//! delete (each bumps our version), merging received topology gossip (§2.3, including
//! placeholders and the self-incarnation bump), garbage collection of unreachable peers (§2.4) and
//! short-ID collision handling (§2.6). It deliberately leaves out everything with a clock or a
//! socket: the 1 s coalescing of topology broadcasts, the 1 s deferred GC after an update and the
//! choice of neighbours to gossip to are the caller's (see [`crate::routes`] for the latter).
//! Route calculation reads this state through [`Peers::view`].
//!
//! Input from the network (the `update` of [`Peers::apply_update`]) never panics: malformed
//! updates are rejected as a whole before anything is changed, with a [`TopologyError`].
//!
//! # Bounds
//! Gossip cannot make the view grow without limit or make one update cost more than its size:
//! * at most [`MAX_PEERS`] peers are held. Beyond that, peers first heard of in gossip (full
//!   entries and names in connection lists alike) are ignored, counted in
//!   [`Peers::ignored_peers`] and logged at each power of two of that count; connections naming
//!   them are kept as gossiped but lead nowhere until GC makes room and gossip names them again.
//!   Local connections are never refused here (the connection limit bounds them);
//! * an entry with more than [`MAX_CONNECTIONS_PER_PEER`] connections, or a delta message with
//!   more than [`MAX_DELTAS_PER_MESSAGE`] deltas, is an error ([`TopologyError`]), which closes
//!   the one connection it came on;
//! * a delta is applied in place: O(k log d) for k changes to a list of d, with at most k
//!   `memmove`s of the list, or one merge when k is large; the list is never copied.
//!
//! # Versions
//! Weave Net's merge order puts the version first, so an entry forged at version 2⁶⁴−1 would
//! win forever: its owner can never out-version it (Weave's `setVersionBeyond` wraps to 0).
//! weft keeps Weave's order but refuses versions no correct peer can have sent:
//! * a summary or delta may be at most [`MAX_VERSION_STEP`] (2³²) above the version we hold for
//!   that peer (0 if unknown or a placeholder); anything higher is skipped like a stale entry and
//!   counted in [`Peers::refused_versions`]. A peer bumps its version once per local connection
//!   event, so 2³² events between two entries we see is not plausible; a forger would need
//!   some 2³² accepted rounds, each out-versioned by the owner, to exhaust the version space;
//! * when an entry for *us* arrives with a version at or above ours (another UID: an older
//!   incarnation, Weave's rule) or above ours (our own UID: a copy no one but us may write, so
//!   forged), we raise ours to one beyond it and announce, within the same step bound;
//! * a restarted peer (new UID) out-versions its old incarnation the same way (above), so the
//!   old entry is replaced everywhere by ordinary merging.
//!
//! Invariants kept by every method:
//! * our own entry always exists and always has a short ID;
//! * every connection in every list names a known peer (unknown names become placeholders on
//!   merge, and GC only removes peers no remaining list points to), except names ignored while
//!   the view is full (see Bounds), which route calculation and GC skip;
//! * connection lists are sorted by remote name without duplicates, so views and summaries are
//!   deterministic and comparable across peers.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::ops::Bound::{Excluded, Unbounded};
use std::sync::Arc;

use rand::Rng;
use weft_wire::{ConnectionSummary, PeerName, PeerSummary};

mod delta;
pub use delta::{DeltaOutcome, MAX_DELTAS_PER_MESSAGE};

/// Most peers the view holds (ourself included); see the module's "Bounds".
pub const MAX_PEERS: usize = 4096;

/// Most connections one peer entry may list; more is a [`TopologyError`].
pub const MAX_CONNECTIONS_PER_PEER: usize = 1024;

/// Most a peer's version may rise in one step of what we hold; see the module's "Versions".
pub const MAX_VERSION_STEP: u64 = 1 << 32;

/// Number of bits in a short ID (fast datapath VNI space).
pub const SHORT_ID_BITS: u32 = 12;

/// Number of distinct short IDs (4096).
pub const SHORT_ID_SPACE: u16 = 1 << SHORT_ID_BITS;

/// How many random picks [`Peers::resolve_short_id_collision`] tries before counting free IDs.
const SHORT_ID_RANDOM_TRIES: usize = 10;

/// Why a topology update was rejected. The whole update is rejected; nothing is applied.
///
/// Weave Net never produces any of these, so they indicate a broken or hostile peer; callers
/// should treat them like a decode error of the gossip payload.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TopologyError {
    /// A peer summary or a connection summary names `00:00:00:00:00:00`, the "no peer" sentinel.
    #[error("topology update names the unknown peer 00:00:00:00:00:00")]
    UnknownPeerName,
    /// The same peer is described twice in one update (Go encodes updates from a set).
    #[error("topology update describes peer {0} more than once")]
    DuplicatePeer(PeerName),
    /// A peer claims a short ID that does not fit in 12 bits.
    #[error("peer {peer} has short id {short_id}, which does not fit in 12 bits")]
    ShortIdOutOfRange {
        /// The peer whose summary carries the bad short ID.
        peer: PeerName,
        /// The short ID it claims.
        short_id: u16,
    },
    /// A peer entry lists (or a delta would leave it with) more than
    /// [`MAX_CONNECTIONS_PER_PEER`] connections.
    #[error(
        "peer {peer} has {count} connections, more than the {MAX_CONNECTIONS_PER_PEER} allowed"
    )]
    TooManyConnections {
        /// The peer whose entry is too long.
        peer: PeerName,
        /// How many connections it would have.
        count: usize,
    },
    /// One message carries more than [`MAX_DELTAS_PER_MESSAGE`] deltas.
    #[error("topology message carries {0} deltas, more than the {MAX_DELTAS_PER_MESSAGE} allowed")]
    TooManyDeltas(usize),
}

/// Result of [`Peers::add_local_connection`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AddedConnection {
    /// The remote was unknown, or not reachable over established symmetric connections, or we
    /// knew it with another UID (a restarted peer). The caller must then send the full state
    /// of every gossip channel down this connection (`sendAllGossipDown`, spec §1.10).
    pub new_or_restarted: bool,
}

/// Result of [`Peers::apply_update`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Update {
    /// Every peer named by a summary in the update, in update order (Go's "received" set; it is
    /// what a legacy tag-6 broadcast relays).
    pub received: Vec<PeerName>,
    /// The peers that were new or replaced by a newer summary, in update order (Go's "improved"
    /// set; it is what a tag-4 gossip relays to random neighbours). Placeholders created for
    /// peers only mentioned in connection lists are not included.
    pub improved: Vec<PeerName>,
    /// The update described an older incarnation of us and our version was raised beyond it:
    /// the caller must schedule a broadcast of our own summary (spec §2.3).
    pub announce_self: bool,
}

impl Update {
    /// Whether anything changed, i.e. routes need recalculating and discovery refreshing.
    pub fn is_improvement(&self) -> bool {
        !self.improved.is_empty()
    }
}

/// One peer as stored: its summary and its connection list (sorted by name, no duplicates).
#[derive(Debug, Clone, PartialEq, Eq)]
struct PeerEntry {
    summary: PeerSummary,
    conns: Vec<ConnectionSummary>,
}

impl PeerEntry {
    fn placeholder(name: PeerName) -> Self {
        Self {
            summary: PeerSummary {
                name,
                ..PeerSummary::default()
            },
            conns: Vec::new(),
        }
    }

    fn conn(&self, remote: PeerName) -> Option<&ConnectionSummary> {
        self.conns
            .binary_search_by_key(&remote, |c| c.name)
            .ok()
            .and_then(|i| self.conns.get(i))
    }
}

/// A read-only view of one peer, handed to route calculation by [`Peers::view`].
#[derive(Debug, Clone, Copy)]
pub struct PeerView<'a> {
    /// The peer's summary.
    pub summary: &'a PeerSummary,
    /// Its connections, sorted by remote name, no duplicates, each naming a known peer.
    pub connections: &'a [ConnectionSummary],
}

/// The topology at one instant, taken with [`Peers::snapshot`]: it shares the peers' entries
/// with the view (a reference count each), so taking one copies no connection list and reading
/// it does not hold up the view.
#[derive(Debug, Clone)]
pub struct TopologySnapshot {
    /// Ourself first, then the others in ascending name order.
    entries: Vec<Arc<PeerEntry>>,
}

impl TopologySnapshot {
    /// How many peers, ourself included.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Never true: we are always in it.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Every peer: ourself first, then the others in ascending name order.
    pub fn iter(&self) -> impl Iterator<Item = PeerView<'_>> + '_ {
        self.entries.iter().map(|e| PeerView {
            summary: &e.summary,
            connections: &e.conns,
        })
    }

    /// The nickname of `name`, if it is known (empty for a placeholder).
    pub fn nick_name(&self, name: PeerName) -> Option<&str> {
        let (ours, others) = self.entries.split_first()?;
        if ours.summary.name == name {
            return Some(&ours.summary.nick_name);
        }
        let i = others
            .binary_search_by_key(&name, |e| e.summary.name)
            .ok()?;
        others.get(i).map(|e| e.summary.nick_name.as_str())
    }

    /// (established, pending) summed over every peer's connection list, as
    /// [`Peers::connection_counts`].
    pub fn connection_counts(&self) -> (usize, usize) {
        count_connections(self.iter())
    }
}

/// (established, pending) over the connection lists of `peers`.
fn count_connections<'a>(peers: impl Iterator<Item = PeerView<'a>>) -> (usize, usize) {
    peers.flat_map(|p| p.connections).fold((0, 0), |(e, p), c| {
        if c.established {
            (e + 1, p)
        } else {
            (e, p + 1)
        }
    })
}

/// The local view of the whole mesh: ourself (with our local connections) and every peer we
/// have heard of, with the connection lists they last gossiped.
///
/// Create one per process incarnation with [`Peers::new`]; feed it connection events from the
/// connection layer and decoded topology gossip; read it to gossip ([`Peers::summaries`]) and
/// to compute routes ([`crate::routes::Routes::calculate`]).
#[derive(Debug, Clone)]
pub struct Peers {
    /// Our own entry; its connection list holds our local connections. Entries are shared with
    /// the [`TopologySnapshot`]s taken of the view (copied on write only while one is held).
    ourself: Arc<PeerEntry>,
    /// Every other known peer, placeholders included.
    others: BTreeMap<PeerName, Arc<PeerEntry>>,
    /// Holders of each short ID (ourself included); the lowest name is the principal.
    by_short_id: BTreeMap<u16, BTreeSet<PeerName>>,
    /// Peers first heard of in gossip while the view was full ([`MAX_PEERS`]).
    ignored_peers: u64,
    /// Entries skipped for an implausible version ([`MAX_VERSION_STEP`]).
    refused_versions: u64,
}

impl Peers {
    /// Creates the view of a freshly started peer: only ourself, version 0, no connections.
    ///
    /// `uid` identifies this incarnation and should be random and non-zero (0 is reserved for
    /// placeholders). `short_id` is masked to 12 bits.
    pub fn new(name: PeerName, nick: String, uid: u64, short_id: u16) -> Self {
        let short_id = short_id & (SHORT_ID_SPACE - 1);
        let ourself = Arc::new(PeerEntry {
            summary: PeerSummary {
                name,
                nick_name: nick,
                uid,
                version: 0,
                short_id,
                has_short_id: true,
            },
            conns: Vec::new(),
        });
        let mut by_short_id = BTreeMap::new();
        by_short_id.insert(short_id, BTreeSet::from([name]));
        Self {
            ourself,
            others: BTreeMap::new(),
            by_short_id,
            ignored_peers: 0,
            refused_versions: 0,
        }
    }

    /// Our peer name.
    pub fn our_name(&self) -> PeerName {
        self.ourself.summary.name
    }

    /// Our current summary (its version changes with every local connection event).
    pub fn our_summary(&self) -> PeerSummary {
        self.ourself.summary.clone()
    }

    /// Our local connection to `remote`, if any (as it will be gossiped).
    pub fn local_connection(&self, remote: PeerName) -> Option<&ConnectionSummary> {
        self.ourself.conn(remote)
    }

    /// Checks made before [`Self::add_local_connection`] are the caller's (spec §1.10: ourself,
    /// name collision, duplicates, connection limit, unknown discovered remote).
    ///
    /// Call this once a local connection finished its handshake and passed those checks;
    /// `remote` is the identity from its features (version ignored). Bumps our version.
    ///
    /// An unknown remote is inserted from `remote` (version 0, no connections) and is protected
    /// from GC by the local connection. A known remote keeps its entry even if the UID differs;
    /// gossip will replace it. If we already have a connection to `remote` (the caller resolved
    /// a duplicate in favour of the new one) it is replaced. A `remote` naming ourself or the
    /// unknown peer is ignored (nothing changes).
    pub fn add_local_connection(
        &mut self,
        remote: &PeerSummary,
        remote_tcp_addr: String,
        outbound: bool,
    ) -> AddedConnection {
        let name = remote.name;
        if name == self.our_name() || name == PeerName::UNKNOWN {
            return AddedConnection {
                new_or_restarted: false,
            };
        }
        let new_or_restarted = match self.others.get(&name) {
            Some(known) => known.summary.uid != remote.uid || !self.reachable_established(name),
            None => {
                let mut summary = remote.clone();
                summary.version = 0;
                if summary.short_id >= SHORT_ID_SPACE {
                    summary.has_short_id = false;
                }
                self.index_short_id(&summary);
                self.others.insert(
                    name,
                    Arc::new(PeerEntry {
                        summary,
                        conns: Vec::new(),
                    }),
                );
                true
            }
        };
        let conn = ConnectionSummary {
            name,
            remote_tcp_addr,
            outbound,
            established: false,
        };
        let conns = &mut Arc::make_mut(&mut self.ourself).conns;
        match conns.binary_search_by_key(&name, |c| c.name) {
            Ok(i) => {
                if let Some(slot) = conns.get_mut(i) {
                    *slot = conn;
                }
            }
            Err(i) => conns.insert(i, conn),
        }
        self.bump_version();
        AddedConnection { new_or_restarted }
    }

    /// Call when our side considers the connection to `remote` established (after the overlay
    /// heartbeat exchange, spec §1.11). Bumps our version; the caller schedules a topology
    /// update. Returns false (and changes nothing) if there is no connection to `remote`.
    pub fn establish_local_connection(&mut self, remote: PeerName) -> bool {
        let Ok(i) = self.ourself.conns.binary_search_by_key(&remote, |c| c.name) else {
            return false;
        };
        if let Some(c) = Arc::make_mut(&mut self.ourself).conns.get_mut(i) {
            c.established = true;
        }
        self.bump_version();
        true
    }

    /// Call when the local connection to `remote` is gone. Bumps our version, drops the local
    /// reference and garbage-collects synchronously (so the update the caller then schedules
    /// never re-advertises unreachable peers, spec §2.4). Returns the GC'd peers, sorted by
    /// name; an empty list and no change if there was no such connection.
    pub fn delete_local_connection(&mut self, remote: PeerName) -> Vec<PeerSummary> {
        let Ok(i) = self.ourself.conns.binary_search_by_key(&remote, |c| c.name) else {
            return Vec::new();
        };
        Arc::make_mut(&mut self.ourself).conns.remove(i);
        self.bump_version();
        self.garbage_collect()
    }

    /// Merges a decoded topology payload (spec §2.3).
    ///
    /// Call for every topology gossip received (tag 4 or tag 6). Then, as Weave Net does:
    /// schedule [`Self::garbage_collect`] ~1 s later (coalesced), call
    /// [`Self::resolve_short_id_collision`], recalculate routes if [`Update::is_improvement`],
    /// relay `improved` (tag 4) or `received` (tag 6), and announce ourself if
    /// `announce_self`.
    ///
    /// Rules: unknown peers are created from their summary; names only referenced in
    /// connection lists become placeholders (UID 0, version 0, no short ID), both only while
    /// fewer than [`MAX_PEERS`] are held. A summary of ourself with another UID and a version at
    /// or above ours, or with our UID and a version above ours, raises our version to one more
    /// than theirs. A known peer is replaced unless the new summary is older: lower version, or
    /// equal version and (lower UID, or equal UID and (`!new.has_short_id || old.has_short_id`)).
    /// Versions more than [`MAX_VERSION_STEP`] above what we hold are skipped (module docs).
    ///
    /// # Errors
    /// The update is rejected as a whole, before any change, if a summary or connection names
    /// the unknown peer ([`TopologyError::UnknownPeerName`]), a peer appears twice
    /// ([`TopologyError::DuplicatePeer`]), a short ID exceeds 12 bits
    /// ([`TopologyError::ShortIdOutOfRange`]) or an entry lists more than
    /// [`MAX_CONNECTIONS_PER_PEER`] connections ([`TopologyError::TooManyConnections`]).
    pub fn apply_update(
        &mut self,
        update: Vec<(PeerSummary, Vec<ConnectionSummary>)>,
    ) -> Result<Update, TopologyError> {
        validate(&update)?;
        let ours = self.our_name();

        // Peers new to us are created from their summary first, then placeholders for names
        // only referenced by connections, so every connection below resolves.
        let mut created = BTreeSet::new();
        let ignored_before = self.ignored_peers;
        for (summary, _) in &update {
            if summary.name != ours && !self.others.contains_key(&summary.name) {
                if !plausible(0, summary.version) {
                    self.refused_versions += 1;
                    continue;
                }
                if !self.has_room() {
                    self.ignored_peers += 1;
                    continue;
                }
                self.index_short_id(summary);
                self.others.insert(
                    summary.name,
                    Arc::new(PeerEntry {
                        summary: summary.clone(),
                        conns: Vec::new(),
                    }),
                );
                created.insert(summary.name);
            }
        }
        for (_, conns) in &update {
            for c in conns {
                self.add_placeholder(c.name);
            }
        }
        self.log_ignored(ignored_before);

        let mut result = Update::default();
        for (summary, conns) in update {
            let name = summary.name;
            result.received.push(name);
            if name == ours {
                result.announce_self |= self.out_version(&summary);
                continue;
            }
            if created.contains(&name) {
                if let Some(entry) = self.others.get_mut(&name) {
                    Arc::make_mut(entry).conns = normalise(conns);
                }
                result.improved.push(name);
                continue;
            }
            let Some(old) = self.others.get(&name) else {
                continue; // ignored: the view is full, or an implausible version
            };
            let old = &old.summary;
            if !plausible(old.version, summary.version) {
                self.refused_versions += 1;
                continue;
            }
            let older = summary.version < old.version
                || (summary.version == old.version
                    && (summary.uid < old.uid
                        || (summary.uid == old.uid
                            && (!summary.has_short_id || old.has_short_id))));
            if older {
                continue;
            }
            let short_id_changed =
                summary.short_id != old.short_id || summary.has_short_id != old.has_short_id;
            if short_id_changed {
                let old = old.clone();
                self.unindex_short_id(&old);
                self.index_short_id(&summary);
            }
            if let Some(entry) = self.others.get_mut(&name) {
                let entry = Arc::make_mut(entry);
                entry.summary = summary;
                entry.conns = normalise(conns);
            }
            result.improved.push(name);
        }
        Ok(result)
    }

    /// Removes every peer that is not reachable from us over *all* connections (established
    /// or not, symmetric or not) and to which we hold no local connection (spec §2.4).
    ///
    /// Call ~1 s after received updates (coalesced); [`Self::delete_local_connection`] calls it
    /// itself. Afterwards call [`Self::resolve_short_id_collision`], as a freed short ID may
    /// let us leave a collision. Returns the removed peers, sorted by name. O(V + E log d).
    pub fn garbage_collect(&mut self) -> Vec<PeerSummary> {
        let doomed: Vec<PeerName> = self
            .reachable(|_, _, _| true, None)
            .1
            .into_iter()
            .filter(|&n| n != self.our_name() && self.ourself.conn(n).is_none())
            .collect();
        let mut removed = Vec::with_capacity(doomed.len());
        for name in doomed {
            if let Some(entry) = self.others.remove(&name) {
                self.unindex_short_id(&entry.summary);
                removed.push(Arc::unwrap_or_clone(entry).summary);
            }
        }
        removed
    }

    /// Summaries to gossip for `names`, in the given order; unknown names are skipped. Pass
    /// [`Self::all_names`] for the full state (`Gossip()`), or an update's `improved` set.
    pub fn summaries(&self, names: &[PeerName]) -> Vec<(PeerSummary, Vec<ConnectionSummary>)> {
        names
            .iter()
            .filter_map(|&n| self.entry(n))
            .map(|e| (e.summary.clone(), e.conns.clone()))
            .collect()
    }

    /// Every known peer (ourself and placeholders included), sorted by name.
    pub fn all_names(&self) -> Vec<PeerName> {
        self.view().map(|p| p.summary.name).collect()
    }

    /// Number of known peers, ourself and placeholders included (the `Peers: N` of status).
    pub fn len(&self) -> usize {
        self.others.len() + 1
    }

    /// Always false: we always know ourself. Present for API symmetry with [`Self::len`].
    pub fn is_empty(&self) -> bool {
        false
    }

    /// The summary and connection list of `name`, if known.
    pub fn get(&self, name: PeerName) -> Option<(PeerSummary, &[ConnectionSummary])> {
        self.entry(name)
            .map(|e| (e.summary.clone(), e.conns.as_slice()))
    }

    /// Resolves a user's peer string (`weave forget`, status filters): a parseable peer name
    /// that is known wins; otherwise the lowest-named peer with that nickname.
    pub fn by_nickname_or_name(&self, s: &str) -> Option<PeerName> {
        if let Ok(name) = s.parse::<PeerName>() {
            if self.entry(name).is_some() {
                return Some(name);
            }
        }
        self.view()
            .find(|p| p.summary.nick_name == s)
            .map(|p| p.summary.name)
    }

    /// The peer that owns `short_id` (the lowest-named holder), for the fast datapath.
    pub fn by_short_id(&self, short_id: u16) -> Option<PeerName> {
        self.by_short_id
            .get(&short_id)
            .and_then(|holders| holders.first().copied())
    }

    /// Status counts of spec §1.14: (established, pending) summed over every connection list
    /// of every peer, ours included.
    pub fn connection_counts(&self) -> (usize, usize) {
        count_connections(self.view())
    }

    /// Short-ID collision handling (spec §2.6). Call after merges and after GC.
    ///
    /// If a lower-named peer holds our short ID, picks a free one: 10 uniform random picks,
    /// then a uniform choice among the free IDs. Returns true if our short ID changed: our
    /// version was bumped and the caller must announce ourself. Returns false if we own our
    /// ID, or if all 4096 IDs are taken (retry after the next GC).
    pub fn resolve_short_id_collision(&mut self, rng: &mut impl Rng) -> bool {
        let ours = self.ourself.summary.clone();
        if self.by_short_id(ours.short_id) == Some(ours.name) {
            return false;
        }
        let free = |id: u16| !self.by_short_id.contains_key(&id); // empty sets are removed
        let mut chosen = None;
        for _ in 0..SHORT_ID_RANDOM_TRIES {
            let id = rng.gen_range(0..SHORT_ID_SPACE);
            if free(id) {
                chosen = Some(id);
                break;
            }
        }
        if chosen.is_none() {
            let available: Vec<u16> = (0..SHORT_ID_SPACE).filter(|&id| free(id)).collect();
            if available.is_empty() {
                return false;
            }
            chosen = available.get(rng.gen_range(0..available.len())).copied();
        }
        let Some(id) = chosen else {
            return false;
        };
        self.unindex_short_id(&ours);
        let ourself = Arc::make_mut(&mut self.ourself);
        ourself.summary.short_id = id;
        ourself.summary.has_short_id = true;
        self.index_short_id(&self.ourself.summary.clone());
        self.bump_version();
        true
    }

    /// The whole view as it is now, for status and reports: ourself first, then the others in
    /// name order. Costs one reference count per peer; no connection list is copied.
    pub fn snapshot(&self) -> TopologySnapshot {
        let mut entries = Vec::with_capacity(self.len());
        entries.push(self.ourself.clone());
        entries.extend(self.others.values().cloned());
        TopologySnapshot { entries }
    }

    /// Every peer (ourself included) in ascending name order, for route calculation.
    pub fn view(&self) -> impl Iterator<Item = PeerView<'_>> + '_ {
        let ours = self.our_name();
        self.others
            .range(..ours)
            .map(|(_, e)| &**e)
            .chain(std::iter::once(&*self.ourself))
            .chain(
                self.others
                    .range((Excluded(ours), Unbounded))
                    .map(|(_, e)| &**e),
            )
            .map(|e| PeerView {
                summary: &e.summary,
                connections: &e.conns,
            })
    }

    /// Peers first heard of in gossip and ignored because the view was full ([`MAX_PEERS`]),
    /// since start.
    pub fn ignored_peers(&self) -> u64 {
        self.ignored_peers
    }

    /// Entries and deltas skipped for a version more than [`MAX_VERSION_STEP`] above what we
    /// held, since start.
    pub fn refused_versions(&self) -> u64 {
        self.refused_versions
    }

    /// Whether gossip may add one more peer.
    fn has_room(&self) -> bool {
        self.len() < MAX_PEERS
    }

    /// A placeholder for `name` if it is new to us and there is room (counted if not).
    fn add_placeholder(&mut self, name: PeerName) {
        if name == self.our_name() || self.others.contains_key(&name) {
            return;
        }
        if self.has_room() {
            self.others
                .insert(name, Arc::new(PeerEntry::placeholder(name)));
        } else {
            self.ignored_peers += 1;
        }
    }

    /// Logs that the view is full, once per power of two of the ignored count, so that a flood
    /// of names costs a handful of lines.
    fn log_ignored(&self, before: u64) {
        let now = self.ignored_peers;
        if now > before && (now.ilog2() > before.checked_ilog2().unwrap_or(0) || before == 0) {
            tracing::warn!(
                "topology holds {MAX_PEERS} peers: {now} new peers from gossip ignored so far"
            );
        }
    }

    /// A summary of ourself arrived: raise our version beyond it if it is an older incarnation
    /// at or above our version, or a forged copy of this incarnation above it (module docs,
    /// "Versions"). Returns whether we must announce ourself.
    fn out_version(&mut self, s: &PeerSummary) -> bool {
        let ours = &mut Arc::make_mut(&mut self.ourself).summary;
        let beats_us = if s.uid == ours.uid {
            s.version > ours.version
        } else {
            s.version >= ours.version
        };
        if !beats_us {
            return false;
        }
        if !plausible(ours.version, s.version) {
            self.refused_versions += 1;
            return false;
        }
        ours.version = s.version.saturating_add(1);
        true
    }

    fn entry(&self, name: PeerName) -> Option<&PeerEntry> {
        if name == self.our_name() {
            Some(&self.ourself)
        } else {
            self.others.get(&name).map(|e| &**e)
        }
    }

    fn bump_version(&mut self) {
        let v = &mut Arc::make_mut(&mut self.ourself).summary.version;
        *v = v.saturating_add(1);
    }

    fn index_short_id(&mut self, summary: &PeerSummary) {
        if summary.has_short_id && summary.short_id < SHORT_ID_SPACE {
            self.by_short_id
                .entry(summary.short_id)
                .or_default()
                .insert(summary.name);
        }
    }

    fn unindex_short_id(&mut self, summary: &PeerSummary) {
        if !summary.has_short_id {
            return;
        }
        if let Some(holders) = self.by_short_id.get_mut(&summary.short_id) {
            holders.remove(&summary.name);
            if holders.is_empty() {
                self.by_short_id.remove(&summary.short_id);
            }
        }
    }

    /// Whether `target` is reachable from us over established symmetric connections (the
    /// "is a connected peer" test of §1.10). Stops as soon as `target` is reached.
    fn reachable_established(&self, target: PeerName) -> bool {
        self.reachable(
            |from, c, remote| {
                c.established
                    && remote
                        .connections
                        .binary_search_by_key(&from.summary.name, |b| b.name)
                        .ok()
                        .and_then(|i| remote.connections.get(i))
                        .is_some_and(|b| b.established)
            },
            Some(target),
        )
        .0
    }

    /// Breadth-first reachability from us over the connections `follow(from, conn, remote)`
    /// accepts, stopping early at `stop`. Returns whether `stop` was reached and the peers
    /// not reached (ascending). O(V + E log V), with dense indices rather than sets.
    fn reachable(
        &self,
        follow: impl Fn(&PeerView<'_>, &ConnectionSummary, &PeerView<'_>) -> bool,
        stop: Option<PeerName>,
    ) -> (bool, Vec<PeerName>) {
        let views: Vec<PeerView<'_>> = self.view().collect();
        let names: Vec<PeerName> = views.iter().map(|v| v.summary.name).collect();
        let mut reached = vec![false; views.len()];
        let mut queue = VecDeque::new();
        if let Some(start) = dense_index(&names, self.our_name(), 0) {
            if let Some(r) = reached.get_mut(start) {
                *r = true;
                queue.push_back(start);
            }
        }
        while let Some(cur) = queue.pop_front() {
            let Some(v) = views.get(cur) else { continue };
            if Some(v.summary.name) == stop {
                return (true, Vec::new());
            }
            let mut hint = 0;
            for c in v.connections {
                let Some(j) = dense_index(&names, c.name, hint) else {
                    continue;
                };
                hint = j + 1; // connection lists are strictly ascending
                let (Some(remote), Some(r)) = (views.get(j), reached.get_mut(j)) else {
                    continue;
                };
                if !*r && follow(v, c, remote) {
                    *r = true;
                    queue.push_back(j);
                }
            }
        }
        let unreached = names
            .iter()
            .zip(&reached)
            .filter(|(_, &r)| !r)
            .map(|(&n, _)| n)
            .collect();
        (false, unreached)
    }
}

/// Position of `name` in the ascending `names`, searching from `from` on (a hint that makes
/// looking up an ascending sequence of names cheaper).
pub(crate) fn dense_index(names: &[PeerName], name: PeerName, from: usize) -> Option<usize> {
    if names.get(from) == Some(&name) {
        return Some(from); // dense lists (full mesh): the next name is usually the next peer
    }
    let (mut lo, mut hi) = (from, names.len());
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        let m = names.get(mid)?.0;
        if m < name.0 {
            lo = mid + 1;
        } else if m > name.0 {
            hi = mid;
        } else {
            return Some(mid);
        }
    }
    None
}

/// Rejects updates that no correct peer sends (see [`TopologyError`]).
fn validate(update: &[(PeerSummary, Vec<ConnectionSummary>)]) -> Result<(), TopologyError> {
    let mut seen = BTreeSet::new();
    for (summary, conns) in update {
        if summary.name == PeerName::UNKNOWN {
            return Err(TopologyError::UnknownPeerName);
        }
        if !seen.insert(summary.name) {
            return Err(TopologyError::DuplicatePeer(summary.name));
        }
        if summary.has_short_id && summary.short_id >= SHORT_ID_SPACE {
            return Err(TopologyError::ShortIdOutOfRange {
                peer: summary.name,
                short_id: summary.short_id,
            });
        }
        if conns.iter().any(|c| c.name == PeerName::UNKNOWN) {
            return Err(TopologyError::UnknownPeerName);
        }
        if conns.len() > MAX_CONNECTIONS_PER_PEER {
            return Err(TopologyError::TooManyConnections {
                peer: summary.name,
                count: conns.len(),
            });
        }
    }
    Ok(())
}

/// Whether a peer we hold at version `held` (0 if unknown) may plausibly be at `version` now.
fn plausible(held: u64, version: u64) -> bool {
    version <= held.saturating_add(MAX_VERSION_STEP)
}

/// Sorts a received connection list by remote name; for duplicate names the last entry wins
/// (as Go's map assignment does).
fn normalise(mut conns: Vec<ConnectionSummary>) -> Vec<ConnectionSummary> {
    if conns
        .windows(2)
        .all(|w| matches!(w, [a, b] if a.name < b.name))
    {
        return conns;
    }
    conns.sort_by_key(|c| c.name); // stable: duplicates keep their received order
    let mut out: Vec<ConnectionSummary> = Vec::with_capacity(conns.len());
    for c in conns {
        match out.last_mut() {
            Some(last) if last.name == c.name => *last = c,
            _ => out.push(c),
        }
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // In tests a panic is the failed assertion.
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    fn pn(n: u64) -> PeerName {
        PeerName(n)
    }

    fn summary(n: u64, uid: u64, version: u64) -> PeerSummary {
        PeerSummary {
            name: pn(n),
            nick_name: format!("nick{n}"),
            uid,
            version,
            short_id: n as u16,
            has_short_id: true,
        }
    }

    fn conn(n: u64, established: bool) -> ConnectionSummary {
        ConnectionSummary {
            name: pn(n),
            remote_tcp_addr: format!("10.0.0.{n}:6783"),
            outbound: true,
            established,
        }
    }

    fn peers(n: u64) -> Peers {
        Peers::new(pn(n), format!("nick{n}"), 100 + n, n as u16)
    }

    #[test]
    fn new_peer_knows_only_itself() {
        let p = peers(1);
        assert_eq!(p.len(), 1);
        assert_eq!(p.all_names(), vec![pn(1)]);
        let s = p.our_summary();
        assert_eq!(
            (s.version, s.uid, s.short_id, s.has_short_id),
            (0, 101, 1, true)
        );
        assert_eq!(p.by_short_id(1), Some(pn(1)));
        assert!(p.get(pn(1)).is_some_and(|(_, c)| c.is_empty()));
    }

    #[test]
    fn local_connection_lifecycle_bumps_version() {
        let mut p = peers(1);
        let added = p.add_local_connection(&summary(2, 202, 7), "10.0.0.2:6783".into(), true);
        assert!(added.new_or_restarted, "unknown peer is new");
        assert_eq!(p.our_summary().version, 1);
        // An inserted remote starts at version 0 whatever it claimed.
        assert_eq!(p.get(pn(2)).map(|(s, _)| s.version), Some(0));
        let c = p.local_connection(pn(2)).cloned();
        assert_eq!(
            c,
            Some(ConnectionSummary {
                name: pn(2),
                remote_tcp_addr: "10.0.0.2:6783".into(),
                outbound: true,
                established: false,
            })
        );
        assert!(p.establish_local_connection(pn(2)));
        assert_eq!(p.our_summary().version, 2);
        assert!(p.local_connection(pn(2)).is_some_and(|c| c.established));
        assert!(!p.establish_local_connection(pn(3)), "unknown connection");
        assert_eq!(p.our_summary().version, 2);
        // Deleting GCs the now unreachable peer synchronously.
        let gone = p.delete_local_connection(pn(2));
        assert_eq!(gone.iter().map(|s| s.name).collect::<Vec<_>>(), vec![pn(2)]);
        assert_eq!(p.our_summary().version, 3);
        assert_eq!(p.len(), 1);
        assert!(p.delete_local_connection(pn(2)).is_empty());
        assert_eq!(
            p.our_summary().version,
            3,
            "deleting nothing changes nothing"
        );
    }

    #[test]
    fn add_local_connection_ignores_ourself_and_replaces_duplicates() {
        let mut p = peers(1);
        let r = p.add_local_connection(&summary(1, 101, 0), String::new(), true);
        assert!(!r.new_or_restarted);
        assert_eq!(p.our_summary().version, 0);
        p.add_local_connection(&summary(2, 202, 0), "a".into(), true);
        p.add_local_connection(&summary(2, 202, 0), "b".into(), false);
        let (_, conns) = p.get(pn(1)).unwrap();
        assert_eq!(conns.len(), 1);
        assert_eq!(conns[0].remote_tcp_addr, "b");
        assert!(!conns[0].outbound);
    }

    #[test]
    fn new_or_restarted_detection() {
        let mut p = peers(1);
        p.add_local_connection(&summary(2, 202, 0), "x".into(), true);
        p.establish_local_connection(pn(2));
        // Peer 2 reports its established connection back: now 2 is reachable symmetrically.
        p.apply_update(vec![(
            summary(2, 202, 2),
            vec![conn(1, true), conn(3, true)],
        )])
        .unwrap();
        p.apply_update(vec![(summary(3, 303, 2), vec![conn(2, true)])])
            .unwrap();
        // 3 is reachable over established symmetric connections: not new.
        let r = p.add_local_connection(&summary(3, 303, 0), "y".into(), false);
        assert!(!r.new_or_restarted);
        // Same name, other UID: restarted.
        p.delete_local_connection(pn(3));
        let r = p.add_local_connection(&summary(3, 999, 0), "y".into(), false);
        assert!(r.new_or_restarted);
        // Known but only reachable over a non-established connection: new.
        let mut q = peers(1);
        q.add_local_connection(&summary(2, 202, 0), "x".into(), true);
        q.apply_update(vec![(
            summary(2, 202, 2),
            vec![conn(1, false), conn(3, false)],
        )])
        .unwrap();
        q.apply_update(vec![(summary(3, 303, 2), vec![conn(2, false)])])
            .unwrap();
        let r = q.add_local_connection(&summary(3, 303, 0), "y".into(), false);
        assert!(r.new_or_restarted);
        // A placeholder (UID 0) counts as restarted.
        let mut z = peers(1);
        z.add_local_connection(&summary(2, 202, 0), "x".into(), true);
        z.apply_update(vec![(summary(2, 202, 1), vec![conn(4, true)])])
            .unwrap();
        assert_eq!(z.get(pn(4)).map(|(s, _)| s.uid), Some(0));
        let r = z.add_local_connection(&summary(4, 404, 0), "w".into(), true);
        assert!(r.new_or_restarted);
        // The entry is kept (still the placeholder) until gossip replaces it.
        assert_eq!(z.get(pn(4)).map(|(s, _)| s.uid), Some(0));
    }

    #[test]
    fn unknown_peers_are_created_and_placeholders_added() {
        let mut p = peers(1);
        let u = p
            .apply_update(vec![(
                summary(2, 202, 5),
                vec![conn(3, true), conn(1, false)],
            )])
            .unwrap();
        assert_eq!(u.received, vec![pn(2)]);
        assert_eq!(u.improved, vec![pn(2)]);
        assert!(!u.announce_self);
        let (s3, c3) = p.get(pn(3)).unwrap();
        assert_eq!(
            s3,
            PeerSummary {
                name: pn(3),
                ..PeerSummary::default()
            }
        );
        assert!(c3.is_empty());
        let (s2, c2) = p.get(pn(2)).unwrap();
        assert_eq!(s2, summary(2, 202, 5));
        assert_eq!(
            c2.iter().map(|c| c.name).collect::<Vec<_>>(),
            vec![pn(1), pn(3)]
        );
        assert_eq!(p.len(), 3);
        // A placeholder is replaced by a real summary, even at version 0.
        let u = p.apply_update(vec![(summary(3, 303, 0), vec![])]).unwrap();
        assert_eq!(u.improved, vec![pn(3)]);
        assert_eq!(p.get(pn(3)).map(|(s, _)| s.uid), Some(303));
    }

    #[test]
    fn merge_precedence_version_uid_short_id() {
        let mut p = peers(1);
        p.apply_update(vec![(summary(2, 500, 5), vec![conn(3, true)])])
            .unwrap();
        let mut apply = |s: PeerSummary, conns: Vec<ConnectionSummary>| {
            p.apply_update(vec![(s, conns)]).unwrap().improved == vec![pn(2)]
        };
        // Lower version loses, whatever the UID.
        assert!(!apply(summary(2, 900, 4), vec![]));
        // Equal version: lower UID loses, higher UID wins.
        assert!(!apply(summary(2, 499, 5), vec![]));
        // Equal version and UID: only gaining a short ID wins.
        assert!(!apply(summary(2, 500, 5), vec![]));
        let mut no_short = summary(2, 500, 6);
        no_short.has_short_id = false;
        assert!(apply(no_short.clone(), vec![conn(4, true)]));
        assert!(
            !apply(no_short.clone(), vec![]),
            "equal, neither gains a short id"
        );
        let mut with_short = no_short;
        with_short.short_id = 77;
        with_short.has_short_id = true;
        assert!(apply(with_short, vec![conn(4, true)]));
        assert!(
            !apply(summary(2, 500, 6), vec![]),
            "old already has a short id"
        );
        assert!(
            apply(summary(2, 501, 6), vec![conn(5, false)]),
            "higher uid wins"
        );
        assert!(
            apply(summary(2, 1, 7), vec![conn(6, false)]),
            "higher version wins"
        );
        let (s, c) = p.get(pn(2)).unwrap();
        assert_eq!(s, summary(2, 1, 7));
        assert_eq!(c.iter().map(|c| c.name).collect::<Vec<_>>(), vec![pn(6)]);
        assert_eq!(p.by_short_id(2), Some(pn(2)));
        assert_eq!(p.by_short_id(77), None, "short id re-indexed");
    }

    #[test]
    fn skipped_updates_still_create_placeholders() {
        let mut p = peers(1);
        p.apply_update(vec![(summary(2, 202, 5), vec![])]).unwrap();
        let u = p
            .apply_update(vec![(summary(2, 202, 4), vec![conn(9, true)])])
            .unwrap();
        assert!(u.improved.is_empty());
        assert_eq!(u.received, vec![pn(2)]);
        assert!(
            p.get(pn(9)).is_some(),
            "placeholder created even though skipped"
        );
        // And GC removes it, as nothing reachable points to it.
        let gone = p.garbage_collect();
        assert!(gone.iter().any(|s| s.name == pn(9)));
    }

    #[test]
    fn self_incarnation_bump() {
        let mut p = peers(1);
        p.add_local_connection(&summary(2, 202, 0), "x".into(), true); // version 1
                                                                       // Our own current incarnation at or below our version: ignored whatever it says.
        let u = p
            .apply_update(vec![(summary(1, 101, 1), vec![conn(7, true)])])
            .unwrap();
        assert!(!u.announce_self && u.improved.is_empty());
        assert_eq!(p.our_summary().version, 1);
        assert_eq!(p.get(pn(1)).map(|(_, c)| c.len()), Some(1));
        // Above it, it is forged (only we write our UID's versions): we jump beyond it, but
        // our own entry is never replaced.
        let u = p
            .apply_update(vec![(summary(1, 101, 40), vec![conn(7, true)])])
            .unwrap();
        assert!(u.announce_self && u.improved.is_empty());
        assert_eq!(p.our_summary().version, 41);
        assert_eq!(p.get(pn(1)).map(|(_, c)| c.len()), Some(1));
        // An old incarnation at a higher version: we jump beyond it.
        let u = p.apply_update(vec![(summary(1, 55, 50), vec![])]).unwrap();
        assert!(u.announce_self);
        assert_eq!(u.received, vec![pn(1)]);
        assert!(u.improved.is_empty());
        assert_eq!(p.our_summary().version, 51);
        assert_eq!(p.our_summary().uid, 101);
        // Equal version also bumps (>=), lower does not.
        assert!(
            p.apply_update(vec![(summary(1, 55, 51), vec![])])
                .unwrap()
                .announce_self
        );
        assert_eq!(p.our_summary().version, 52);
        assert!(
            !p.apply_update(vec![(summary(1, 55, 10), vec![])])
                .unwrap()
                .announce_self
        );
        assert_eq!(p.our_summary().version, 52);
    }

    #[test]
    fn connection_lists_are_normalised() {
        let mut p = peers(1);
        let mut late = conn(3, false);
        late.remote_tcp_addr = "late".into();
        p.apply_update(vec![(
            summary(2, 202, 1),
            vec![conn(4, true), conn(3, true), late],
        )])
        .unwrap();
        let (_, c) = p.get(pn(2)).unwrap();
        assert_eq!(
            c.iter().map(|c| c.name).collect::<Vec<_>>(),
            vec![pn(3), pn(4)]
        );
        assert_eq!(c[0].remote_tcp_addr, "late", "last duplicate wins");
    }

    #[test]
    fn invalid_updates_are_rejected_atomically() {
        let mut p = peers(1);
        let before = p.summaries(&p.all_names());
        let bad = vec![
            (summary(2, 202, 1), vec![conn(3, true)]),
            (summary(0, 1, 1), vec![]),
        ];
        assert_eq!(p.apply_update(bad), Err(TopologyError::UnknownPeerName));
        let bad = vec![(summary(2, 202, 1), vec![conn(0, true)])];
        assert_eq!(p.apply_update(bad), Err(TopologyError::UnknownPeerName));
        let bad = vec![(summary(2, 202, 1), vec![]), (summary(2, 202, 2), vec![])];
        assert_eq!(
            p.apply_update(bad),
            Err(TopologyError::DuplicatePeer(pn(2)))
        );
        let mut s = summary(2, 202, 1);
        s.short_id = 4096;
        assert_eq!(
            p.apply_update(vec![(s, vec![])]),
            Err(TopologyError::ShortIdOutOfRange {
                peer: pn(2),
                short_id: 4096
            })
        );
        assert_eq!(p.summaries(&p.all_names()), before);
        assert_eq!(
            TopologyError::DuplicatePeer(pn(2)).to_string(),
            "topology update describes peer 00:00:00:00:00:02 more than once"
        );
    }

    #[test]
    fn gc_keeps_reachable_and_locally_connected_peers() {
        let mut p = peers(1);
        p.add_local_connection(&summary(2, 202, 0), "x".into(), true);
        // 2 says it has no connections at all; it is still kept (local ref).
        p.apply_update(vec![(summary(2, 202, 1), vec![])]).unwrap();
        // 3 and 4 are learnt via 2's neighbours but 2 does not list them: unreachable.
        p.apply_update(vec![
            (summary(3, 303, 1), vec![conn(4, true)]),
            (summary(4, 404, 1), vec![conn(3, true)]),
        ])
        .unwrap();
        assert_eq!(p.len(), 4);
        let gone: Vec<_> = p.garbage_collect().into_iter().map(|s| s.name).collect();
        assert_eq!(gone, vec![pn(3), pn(4)]);
        assert_eq!(p.all_names(), vec![pn(1), pn(2)]);
        // Reachability uses all connections, not only established ones, and is directed.
        p.apply_update(vec![
            (summary(2, 202, 2), vec![conn(5, false)]),
            (summary(5, 505, 1), vec![conn(6, false)]),
            (summary(6, 606, 1), vec![]),
            (summary(7, 707, 1), vec![conn(2, true)]),
        ])
        .unwrap();
        let gone: Vec<_> = p.garbage_collect().into_iter().map(|s| s.name).collect();
        assert_eq!(gone, vec![pn(7)], "7 points to us but nothing points to 7");
        assert_eq!(p.all_names(), vec![pn(1), pn(2), pn(5), pn(6)]);
        // Deleting the local connection GCs the whole now unreachable subtree at once.
        let gone: Vec<_> = p
            .delete_local_connection(pn(2))
            .into_iter()
            .map(|s| s.name)
            .collect();
        assert_eq!(gone, vec![pn(2), pn(5), pn(6)]);
        assert_eq!(p.len(), 1);
    }

    #[test]
    fn the_view_holds_at_most_max_peers() {
        let mut p = peers(1);
        // One update naming far more peers than fit, as entries and as connections.
        let small = |n: u64| PeerSummary {
            short_id: (n % 4096) as u16,
            ..summary(n, n, 1)
        };
        let update: Vec<_> = (2..MAX_PEERS as u64 + 100)
            .map(|n| (small(n), vec![conn(n + 100_000, true)]))
            .collect();
        let u = p.apply_update(update).unwrap();
        assert_eq!(p.len(), MAX_PEERS);
        assert_eq!(
            u.improved.len(),
            MAX_PEERS - 1,
            "entries first, then placeholders"
        );
        assert!(p.ignored_peers() >= 100);
        assert!(p.get(pn(MAX_PEERS as u64 + 50)).is_none());
        // A connection to an ignored name is kept as gossiped; routes and GC skip it.
        assert_eq!(p.get(pn(2)).unwrap().1.len(), 1);
        assert!(p.get(pn(100_002)).is_none());
        let before = p.ignored_peers();
        p.apply_update(vec![(small(999_999), vec![])]).unwrap();
        assert_eq!(p.ignored_peers(), before + 1);
        // Local connections are not refused; GC makes room again.
        p.add_local_connection(&small(888_888), "l".into(), true);
        assert_eq!(p.len(), MAX_PEERS + 1);
        p.garbage_collect();
        assert_eq!(
            p.len(),
            2,
            "nothing but ourself and the local remote is reachable"
        );
        p.apply_update(vec![(small(999_999), vec![])]).unwrap();
        assert!(p.get(pn(999_999)).is_some());
    }

    #[test]
    fn entries_with_too_many_connections_are_rejected_whole() {
        let mut p = peers(1);
        let many: Vec<_> = (0..=MAX_CONNECTIONS_PER_PEER as u64)
            .map(|n| conn(n + 10, true))
            .collect();
        let bad = vec![(summary(2, 202, 1), vec![]), (summary(3, 303, 1), many)];
        assert_eq!(
            p.apply_update(bad),
            Err(TopologyError::TooManyConnections {
                peer: pn(3),
                count: MAX_CONNECTIONS_PER_PEER + 1
            })
        );
        assert_eq!(p.len(), 1, "nothing applied");
        let ok: Vec<_> = (0..MAX_CONNECTIONS_PER_PEER as u64)
            .map(|n| conn(n + 10, true))
            .collect();
        assert!(p.apply_update(vec![(summary(3, 303, 1), ok)]).is_ok());
    }

    #[test]
    fn a_forged_version_cannot_freeze_a_peer() {
        let mut p = peers(1);
        p.apply_update(vec![(summary(2, 202, 5), vec![conn(3, true)])])
            .unwrap();
        // u64::MAX for a known peer (its own or a higher uid): refused, counted.
        for uid in [202, u64::MAX] {
            let u = p
                .apply_update(vec![(summary(2, uid, u64::MAX), vec![])])
                .unwrap();
            assert!(u.improved.is_empty());
        }
        assert_eq!(p.refused_versions(), 2);
        assert_eq!(p.get(pn(2)).unwrap().0.version, 5);
        // ... and for a peer we do not know yet.
        let u = p
            .apply_update(vec![(summary(9, 909, u64::MAX), vec![])])
            .unwrap();
        assert!(u.improved.is_empty() && p.get(pn(9)).is_none());
        assert_eq!(p.refused_versions(), 3);
        // A jump within the step is Weave's ordinary merge.
        let step = 5 + MAX_VERSION_STEP;
        assert!(p
            .apply_update(vec![(summary(2, 202, step), vec![])])
            .unwrap()
            .is_improvement());
        // A forged entry of us at u64::MAX is refused: we could not out-version it, and no
        // correct peer accepts it either (it is beyond the step from what they hold).
        let v = p.our_summary().version;
        let u = p
            .apply_update(vec![(summary(1, 55, u64::MAX), vec![])])
            .unwrap();
        assert!(!u.announce_self);
        assert_eq!(p.our_summary().version, v);
        // One within the step is out-versioned, so the owner always wins the next round.
        let u = p
            .apply_update(vec![(summary(1, 55, v + 1000), vec![])])
            .unwrap();
        assert!(u.announce_self);
        assert_eq!(p.our_summary().version, v + 1001);
        // A receiver holding us at the old version takes our new one over the forged one.
        let mut q = peers(7);
        q.apply_update(vec![(summary(1, 55, v + 1000), vec![])])
            .unwrap();
        assert!(q
            .apply_update(p.summaries(&[pn(1)]))
            .unwrap()
            .is_improvement());
        assert_eq!(q.get(pn(1)).unwrap().0.uid, 101);
    }

    #[test]
    fn gc_frees_short_ids() {
        let mut p = peers(1);
        p.apply_update(vec![(summary(9, 909, 1), vec![])]).unwrap();
        assert_eq!(p.by_short_id(9), Some(pn(9)));
        p.garbage_collect();
        assert_eq!(p.by_short_id(9), None);
    }

    #[test]
    fn summaries_and_lookups() {
        let mut p = peers(5);
        p.add_local_connection(&summary(2, 202, 0), "x".into(), true);
        p.apply_update(vec![(
            summary(2, 202, 3),
            vec![conn(5, true), conn(8, false)],
        )])
        .unwrap();
        assert_eq!(p.all_names(), vec![pn(2), pn(5), pn(8)]);
        let s = p.summaries(&[pn(8), pn(42), pn(5)]);
        assert_eq!(s.len(), 2, "unknown names skipped");
        assert_eq!(s[0].0.name, pn(8));
        assert_eq!(s[1].0, p.our_summary());
        assert_eq!(s[1].1.len(), 1);
        assert_eq!(p.by_nickname_or_name("nick2"), Some(pn(2)));
        assert_eq!(p.by_nickname_or_name("00:00:00:00:00:08"), Some(pn(8)));
        assert_eq!(p.by_nickname_or_name("::5"), Some(pn(5)));
        assert_eq!(p.by_nickname_or_name("::42"), None);
        assert_eq!(p.by_nickname_or_name("nobody"), None);
        assert_eq!(p.connection_counts(), (1, 2));
    }

    #[test]
    fn short_id_collision_lowest_name_keeps_it() {
        let mut rng = StdRng::seed_from_u64(1);
        // We are 5 with short id 5; a higher-named peer with the same id does not bump us.
        let mut p = peers(5);
        let mut s = summary(9, 909, 1);
        s.short_id = 5;
        p.apply_update(vec![(s, vec![])]).unwrap();
        assert_eq!(p.by_short_id(5), Some(pn(5)));
        assert!(!p.resolve_short_id_collision(&mut rng));
        // A lower-named one does: we move to a free id and bump our version.
        let mut s = summary(3, 303, 1);
        s.short_id = 5;
        p.apply_update(vec![(s, vec![])]).unwrap();
        assert_eq!(p.by_short_id(5), Some(pn(3)));
        let v = p.our_summary().version;
        assert!(p.resolve_short_id_collision(&mut rng));
        let ours = p.our_summary();
        assert_eq!(ours.version, v + 1);
        assert_ne!(ours.short_id, 5);
        assert!(ours.short_id < SHORT_ID_SPACE);
        assert_eq!(p.by_short_id(ours.short_id), Some(pn(5)));
        assert!(!p.resolve_short_id_collision(&mut rng), "settled");
    }

    #[test]
    fn short_id_exhaustion_and_dense_space() {
        let mut rng = StdRng::seed_from_u64(2);
        let mut p = Peers::new(pn(10_000), "us".into(), 1, 0);
        // Fill all ids except 4000 with lower-named peers (id 0 included: we are bumped).
        let update: Vec<_> = (0..SHORT_ID_SPACE)
            .filter(|&id| id != 4000)
            .map(|id| {
                let mut s = summary(u64::from(id) + 1, 7, 1);
                s.short_id = id;
                (s, vec![])
            })
            .collect();
        p.apply_update(update).unwrap();
        assert!(
            p.resolve_short_id_collision(&mut rng),
            "falls back to counting free ids"
        );
        assert_eq!(p.our_summary().short_id, 4000);
        // Now take 4000 too with a lower name: nothing is free.
        let mut s = summary(5000, 7, 1);
        s.short_id = 4000;
        p.apply_update(vec![(s, vec![])]).unwrap();
        let v = p.our_summary().version;
        assert!(!p.resolve_short_id_collision(&mut rng));
        assert_eq!(p.our_summary().version, v);
    }
}
