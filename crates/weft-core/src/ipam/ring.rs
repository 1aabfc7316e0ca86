//! The ring CRDT (Weave's `ipam/ring`): which peer owns which part of the universe.
//!
//! The universe `[start, end)` is a circle of tokens; entry *i* owns `[token_i, token_{i+1})`,
//! the last one wrapping round to the first. Each entry carries the owner, a version and the
//! number of free addresses its owner last reported. Only the owner edits its entries, bumping
//! the version by 1 ([`Ring::grant`], [`Ring::report_free`]); a transfer of a peer's entries
//! (`rmpeer`, `reset`) bumps by 100 so it wins over edits made concurrently. Merge keeps the
//! higher version per token, with Weave's checks that nobody takes a range we hold allocations
//! in. Peers' nicknames are not part of an entry: they travel beside the ring in the gossip
//! state (as in Weave), and the allocator keeps them.
//!
//! A ring received from a peer arrives as a [`RingSnapshot`] (plain data, as decoded) and is
//! validated before anything is merged: unsorted, repeated or out-of-range tokens, free counts
//! larger than the range, versions no sequence of edits can reach, and entry or seed counts
//! beyond what the universe could hold are typed [`RingError`]s, and our ring is left as it was.
//!
//! Between weft peers a change can travel as a [`RingDelta`] instead of the whole ring: the
//! entries it touched ([`Ring::delta_since`]), each with the tokens around it in the sender's
//! ring. [`Ring::apply_delta`] merges them with the same rules and checks as a whole ring, then
//! checks that each entry it took sits between the same tokens here; if not, this replica
//! missed an earlier change and the delta is a [`DeltaOutcome::Gap`], refused whole, for the
//! caller to ask for the full ring instead. Tokens are never removed and an entry only moves to
//! higher versions, so deltas and whole rings merged in any order reach the same ring.

use std::collections::{BTreeMap, BTreeSet};

use rand::Rng;
use weft_wire::PeerName;

use super::{Address, Range};

/// Entries a ring may hold, whatever the universe: far beyond what donation produces between
/// thousands of peers, and a bound on the work and memory one received ring can cost.
pub const MAX_ENTRIES: usize = 1 << 18;

/// Highest version accepted from a peer. Edits add 1 and transfers 100, so no real ring gets
/// near it; a higher one could only overflow our own later edits.
pub const MAX_VERSION: u32 = u32::MAX / 2;

/// How much a transfer adds to an entry's version, so it dominates concurrent edits.
pub const TRANSFER_VERSION_BUMP: u32 = 100;

/// One token on the ring.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    /// First address of the range this entry owns.
    pub token: Address,
    /// The owner.
    pub peer: PeerName,
    /// Bumped by the owner on every change of this entry.
    pub version: u32,
    /// Free addresses in the range, as last reported by the owner.
    pub free: u32,
}

impl Entry {
    /// Weave's `entry.Equal`: the free count does not take part.
    fn same(&self, other: &Self) -> bool {
        self.token == other.token && self.peer == other.peer && self.version == other.version
    }

    fn update(&mut self, peer: PeerName, free: u32) {
        self.peer = peer;
        self.version = self.version.saturating_add(1);
        self.free = free;
    }
}

/// A ring as it travels (in gossip) or rests (persisted): not yet validated.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RingSnapshot {
    /// Universe start.
    pub start: Address,
    /// Universe end (exclusive).
    pub end: Address,
    /// The peer whose replica this is.
    pub peer: PeerName,
    /// Entries, sorted by token.
    pub entries: Vec<Entry>,
    /// Peers the ring was created for, sorted; empty for a ring formed before seeds existed.
    pub seeds: Vec<PeerName>,
}

/// Most entries a [`RingDelta`] carries (what its payload may hold); a change touching more
/// travels as the whole ring.
pub const MAX_DELTA_ENTRIES: usize = weft_wire::ipam_delta::MAX_ENTRIES;

/// One changed entry of a [`RingDelta`], with its neighbours' tokens in the sender's ring.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeltaEntry {
    /// The entry as the sender has it.
    pub entry: Entry,
    /// The token before it (wrapping; its own when it is the only entry).
    pub prev: Address,
    /// The token after it (wrapping; its own when it is the only entry).
    pub next: Address,
}

/// The entries of a ring that one change touched, as they travel between weft peers.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RingDelta {
    /// Universe start.
    pub start: Address,
    /// Universe end (exclusive).
    pub end: Address,
    /// [`seeds_hash`] of the sender's seeds.
    pub seeds_hash: u64,
    /// Changed entries, sorted by token.
    pub entries: Vec<DeltaEntry>,
}

/// What [`Ring::apply_delta`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeltaOutcome {
    /// Merged; `true` if our ring changed.
    Applied(bool),
    /// Not applicable here (no ring yet, other seeds, or an earlier change missing): nothing
    /// changed, and the sender's whole ring is needed.
    Gap,
}

/// Why a ring was refused or an edit was impossible. Messages follow Weave Net's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RingError {
    /// Tokens out of order.
    #[error("Ring not sorted")]
    NotSorted,
    /// The same token twice.
    #[error("Token appears twice in ring")]
    TokenRepeated,
    /// A token outside the universe.
    #[error("Token is out of range")]
    TokenOutOfRange,
    /// The universe is empty or inverted.
    #[error("Ring range {0:?} is empty")]
    EmptyRange(Range),
    /// An entry claims more free addresses than its range holds.
    #[error("Entry {token}-{next} reporting too much free space: {free} > {distance}")]
    TooMuchFree {
        /// The entry's token.
        token: Address,
        /// The next token.
        next: Address,
        /// Free count claimed.
        free: u32,
        /// Size of the range.
        distance: u32,
    },
    /// More entries than the universe has addresses, or than [`MAX_ENTRIES`].
    #[error("Ring has {count} entries, more than the {max} it can hold")]
    TooManyEntries {
        /// Entries received.
        count: usize,
        /// The bound.
        max: usize,
    },
    /// More seeds than entries could ever be made for.
    #[error("Ring has {count} seeds, more than the {max} it can hold")]
    TooManySeeds {
        /// Seeds received.
        count: usize,
        /// The bound.
        max: usize,
    },
    /// A version beyond [`MAX_VERSION`].
    #[error("Entry {token} has impossible version {version}")]
    ImpossibleVersion {
        /// The entry's token.
        token: Address,
        /// Its version.
        version: u32,
    },
    /// Both rings have seeds and they differ.
    #[error("Received ring was seeded differently from ours")]
    DifferentSeeds,
    /// The universes differ.
    #[error("Received range differs from ours")]
    DifferentRange,
    /// A peer split off part of a range we hold allocations in.
    #[error("Peer {peer} says it owns the IP range from {token}, which I think I own")]
    EntryInMyRange {
        /// The peer claiming it.
        peer: PeerName,
        /// Where its range starts.
        token: Address,
    },
    /// Same token and version, different owner, and we hold allocations there.
    #[error(
        "Inconsistent entries for {token}: owned by {mine} but incoming message says {theirs}"
    )]
    InconsistentEntry {
        /// The token.
        token: Address,
        /// Our owner.
        mine: PeerName,
        /// Their owner.
        theirs: PeerName,
    },
    /// A newer version of one of our entries names another owner while we hold allocations.
    #[error("Received update for IP range I own at {token} v{mine_version}: incoming message says owner {theirs} v{theirs_version}")]
    NewerVersion {
        /// The token.
        token: Address,
        /// Our version.
        mine_version: u32,
        /// Their owner.
        theirs: PeerName,
        /// Their version.
        theirs_version: u32,
    },
    /// The merged result broke an invariant.
    #[error("Merge of incoming data causes: {0}")]
    MergeCauses(Box<Self>),
    /// A grant of a range we do not wholly own (an internal inconsistency, never peer input).
    #[error("Range {0:?} is not wholly ours to grant")]
    NotOurs(Range),
}

/// One range of the ring for status output (Weave's `RangeInfo`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RangeInfo {
    /// Owner.
    pub peer: PeerName,
    /// The range (split where the ring wraps).
    pub range: Range,
    /// Entry version.
    pub version: u32,
}

/// One peer's replica of the ring.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ring {
    start: Address,
    end: Address,
    peer: PeerName,
    entries: Vec<Entry>,
    seeds: Vec<PeerName>,
}

impl Ring {
    /// An empty ring over `universe`, replica of `peer`; `None` for an empty universe.
    pub fn new(universe: Range, peer: PeerName) -> Option<Self> {
        (universe.start < universe.end).then(|| Self {
            start: universe.start,
            end: universe.end,
            peer,
            entries: Vec::new(),
            seeds: Vec::new(),
        })
    }

    /// Rebuilds a ring from a snapshot (persisted data), validating it; the replica becomes
    /// `peer`'s.
    pub fn restore(snapshot: RingSnapshot, peer: PeerName) -> Result<Self, RingError> {
        validate(&snapshot)?;
        Ok(Self {
            start: snapshot.start,
            end: snapshot.end,
            peer,
            entries: snapshot.entries,
            seeds: snapshot.seeds,
        })
    }

    /// The ring as plain data, to gossip or persist.
    pub fn snapshot(&self) -> RingSnapshot {
        RingSnapshot {
            start: self.start,
            end: self.end,
            peer: self.peer,
            entries: self.entries.clone(),
            seeds: self.seeds.clone(),
        }
    }

    /// The universe.
    pub fn range(&self) -> Range {
        Range::new(self.start, self.end)
    }

    /// Whose replica this is.
    pub fn peer(&self) -> PeerName {
        self.peer
    }

    /// The entries, sorted by token.
    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    /// The peers the ring was created for.
    pub fn seeds(&self) -> &[PeerName] {
        &self.seeds
    }

    /// Whether no range has an owner yet (before seeding or consensus).
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Whether `addr` is in the universe.
    pub fn contains(&self, addr: Address) -> bool {
        self.range().contains(addr)
    }

    /// Addresses from `start` round to `end`; the whole ring when they are equal.
    fn distance(&self, start: Address, end: Address) -> u32 {
        distance_in(self.range(), start, end)
    }

    /// The entry at `i`, wrapping (Weave's `entries.entry`); `entries` must not be empty.
    fn at(entries: &[Entry], i: usize) -> &Entry {
        &entries[i % entries.len()]
    }

    /// Index of the entry owning `addr`: the last token ≤ addr, wrapping to the last entry.
    fn owner_index(&self, addr: Address) -> Option<usize> {
        let len = self.entries.len();
        if len == 0 {
            return None;
        }
        let p = self.entries.partition_point(|e| e.token <= addr);
        Some(if p == 0 { len - 1 } else { p - 1 })
    }

    /// The owner of `addr`, if the ring has one (Weave's `Owner`).
    pub fn owner(&self, addr: Address) -> Option<PeerName> {
        if !self.contains(addr) {
            return None;
        }
        self.owner_index(addr).map(|i| self.entries[i].peer)
    }

    /// `[start, end)` on the ring as one or two plain ranges, split where it wraps.
    fn split(&self, start: Address, end: Address) -> Vec<Range> {
        if end == self.start {
            vec![Range::new(start, self.end)]
        } else if end <= start {
            vec![Range::new(self.start, end), Range::new(start, self.end)]
        } else {
            vec![Range::new(start, end)]
        }
    }

    fn any_allocated(&self, start: Address, end: Address, has: &dyn Fn(Range) -> bool) -> bool {
        self.split(start, end).into_iter().any(has)
    }

    /// The ranges `peer` owns, sorted, with a range that wraps split in two (Weave's
    /// `OwnedRangesOfPeer`).
    pub fn owned_ranges_of(&self, peer: PeerName) -> Vec<Range> {
        let mut out = Vec::new();
        for (i, e) in self.entries.iter().enumerate() {
            if e.peer == peer {
                let next = Self::at(&self.entries, i + 1).token;
                for r in self.split(e.token, next) {
                    out.push(r);
                }
            }
        }
        out.sort();
        out
    }

    /// The ranges we own.
    pub fn owned_ranges(&self) -> Vec<Range> {
        self.owned_ranges_of(self.peer)
    }

    /// Addresses each peer owns, for `weave status ipam`.
    pub fn owned_sizes(&self) -> BTreeMap<PeerName, u64> {
        let mut out = BTreeMap::new();
        for (i, e) in self.entries.iter().enumerate() {
            let next = Self::at(&self.entries, i + 1).token;
            *out.entry(e.peer).or_insert(0) += u64::from(self.distance(e.token, next));
        }
        out
    }

    /// Every range with owner and version (Weave's `AllRangeInfo`).
    pub fn range_info(&self) -> Vec<RangeInfo> {
        let mut out = Vec::new();
        for (i, e) in self.entries.iter().enumerate() {
            let next = Self::at(&self.entries, i + 1).token;
            for range in self.split(e.token, next) {
                out.push(RangeInfo {
                    peer: e.peer,
                    range,
                    version: e.version,
                });
            }
        }
        out
    }

    /// Peers named in the ring.
    pub fn peer_names(&self) -> BTreeSet<PeerName> {
        self.entries.iter().map(|e| e.peer).collect()
    }

    /// Total free addresses the ring reports, all owners together.
    pub fn reported_free(&self) -> u64 {
        self.entries.iter().map(|e| u64::from(e.free)).sum()
    }

    /// Checks entries against the invariants of this ring's universe.
    fn check_entries(&self, entries: &[Entry]) -> Result<(), RingError> {
        check_entries(self.range(), entries)
    }

    /// Splits the whole empty ring among `peers` (sorted, de-duplicated): recursive halving,
    /// so each share is CIDR-aligned when the universe is a CIDR (Weave's `ClaimForPeers`).
    /// With more peers than addresses some get nothing. Does nothing on a non-empty ring.
    pub fn claim_for_peers(&mut self, peers: &[PeerName]) {
        if !self.is_empty() || peers.is_empty() {
            return;
        }
        let mut entries = Vec::new();
        subdivide(self.start, self.end, peers, &mut entries);
        self.entries = entries;
        self.seeds = peers.to_vec();
    }

    /// Gives `[start, end)`, which must be wholly ours, to `peer` (Weave's
    /// `GrantRangeToHost`): up to two new tokens, each touched entry's version bumped.
    pub fn grant(&mut self, range: Range, peer: PeerName) -> Result<(), RingError> {
        let (start, end) = (range.start, range.end);
        let not_ours = || RingError::NotOurs(range);
        if start >= end || !self.contains(start) || end > self.end || self.is_empty() {
            return Err(not_ours());
        }
        let preceding = self.owner_index(start).ok_or_else(not_ours)?;
        if self.entries[preceding].peer != self.peer
            || self
                .entries
                .iter()
                .any(|e| e.token > start && e.token < end && e.peer != self.peer)
        {
            return Err(not_ours());
        }
        let mut entries = self.entries.clone();
        let next_token = Self::at(&entries, preceding + 1).token;
        let start_free = self.distance(start, next_token).min(end.0 - start.0);
        let at_start = if entries[preceding].token == start {
            entries[preceding].update(peer, start_free);
            preceding
        } else {
            let pos = entries.partition_point(|e| e.token < start);
            entries.insert(
                pos,
                Entry {
                    token: start,
                    peer,
                    version: 0,
                    free: start_free,
                },
            );
            let prev = if pos == 0 { entries.len() - 1 } else { pos - 1 };
            let prev_free = self.distance(entries[prev].token, start);
            let me = self.peer;
            entries[prev].update(me, prev_free);
            pos
        };
        // Tokens inside the range go to the grantee too.
        let mut pos = at_start + 1;
        while pos < entries.len() && entries[pos].token < end {
            let free = entries[pos]
                .free
                .min(self.distance(entries[pos].token, end));
            entries[pos].update(peer, free);
            pos += 1;
        }
        // No token ever sits at the universe's end: the range's end is then the start.
        let end_token = if end == self.end { self.start } else { end };
        if !entries.iter().any(|e| e.token == end_token) {
            let free = self.distance(end_token, Self::at(&entries, pos).token);
            let at = entries.partition_point(|e| e.token < end_token);
            entries.insert(
                at,
                Entry {
                    token: end_token,
                    peer: self.peer,
                    version: 0,
                    free,
                },
            );
        }
        self.check_entries(&entries)?;
        self.entries = entries;
        Ok(())
    }

    /// Merges a ring received from a peer (Weave's `Ring.Merge`); `has_allocations` says
    /// whether we hold allocations in a range. Returns whether our ring changed. On error our
    /// ring is unchanged.
    pub fn merge(
        &mut self,
        theirs: &RingSnapshot,
        has_allocations: &dyn Fn(Range) -> bool,
    ) -> Result<bool, RingError> {
        validate(theirs)?;
        if !theirs.seeds.is_empty() && !self.seeds.is_empty() && theirs.seeds != self.seeds {
            return Err(RingError::DifferentSeeds);
        }
        if theirs.start != self.start || theirs.end != self.end {
            return Err(RingError::DifferentRange);
        }
        let (mut result, updated) = self.merge_entries(&theirs.entries, has_allocations)?;
        self.clamp_own_free(&mut result);
        self.check_entries(&result)
            .map_err(|e| RingError::MergeCauses(Box::new(e)))?;
        if self.seeds.is_empty() {
            self.seeds = theirs.seeds.clone();
        }
        self.entries = result;
        Ok(updated)
    }

    fn merge_entries(
        &self,
        other: &[Entry],
        has: &dyn Fn(Range) -> bool,
    ) -> Result<(Vec<Entry>, bool), RingError> {
        let es = &self.entries;
        let me = self.peer;
        let mut result = Vec::with_capacity(es.len() + other.len());
        let mut updated = false;
        // Owner of the last entry of ours kept, cleared when one of theirs is taken.
        let mut previous_owner: Option<PeerName> = None;
        let (mut i, mut j) = (0, 0);
        while i < es.len() && j < other.len() {
            let (mine, theirs) = (es[i], other[j]);
            if mine.token < theirs.token {
                result.push(mine);
                previous_owner = Some(mine.peer);
                i += 1;
            } else if mine.token > theirs.token {
                if previous_owner == Some(me)
                    && theirs.peer != me
                    && self.any_allocated(theirs.token, mine.token, has)
                {
                    return Err(RingError::EntryInMyRange {
                        peer: theirs.peer,
                        token: theirs.token,
                    });
                }
                result.push(theirs);
                updated = true;
                previous_owner = None;
                j += 1;
            } else {
                let next_mine = Self::at(es, i + 1).token;
                if mine.version >= theirs.version {
                    if mine.version == theirs.version && !mine.same(&theirs) {
                        if mine.peer == me && self.any_allocated(theirs.token, next_mine, has) {
                            return Err(RingError::InconsistentEntry {
                                token: mine.token,
                                mine: mine.peer,
                                theirs: theirs.peer,
                            });
                        }
                        // Tie-break on the larger free count; a tie keeps ours.
                        if mine.free >= theirs.free {
                            result.push(mine);
                            previous_owner = Some(mine.peer);
                        } else {
                            result.push(theirs);
                            updated = true;
                            previous_owner = None;
                        }
                    } else {
                        result.push(mine);
                        previous_owner = Some(mine.peer);
                    }
                } else if mine.peer == me {
                    if theirs.peer != me && !self.any_allocated(mine.token, next_mine, has) {
                        // Repair: nothing of ours is lost by accepting it.
                        result.push(theirs);
                        updated = true;
                        previous_owner = None;
                    } else if theirs.peer == me {
                        // Impose our entry over a stale copy of it.
                        result.push(Entry {
                            version: theirs.version.saturating_add(1),
                            ..mine
                        });
                    } else {
                        return Err(RingError::NewerVersion {
                            token: mine.token,
                            mine_version: mine.version,
                            theirs: theirs.peer,
                            theirs_version: theirs.version,
                        });
                    }
                } else {
                    result.push(theirs);
                    updated = true;
                    previous_owner = None;
                }
                i += 1;
                j += 1;
            }
        }
        result.extend_from_slice(&es[i..]);
        for &theirs in &other[j..] {
            if previous_owner == Some(me) && theirs.peer != me {
                return Err(RingError::EntryInMyRange {
                    peer: theirs.peer,
                    token: theirs.token,
                });
            }
            result.push(theirs);
            updated = true;
            previous_owner = None;
        }
        Ok((result, updated))
    }

    /// The entries that differ from `before` (this ring's entries before a change), with
    /// their neighbours, to send instead of the whole ring; `None` if nothing changed or more
    /// than [`MAX_DELTA_ENTRIES`] did.
    pub fn delta_since(&self, before: &[Entry]) -> Option<RingDelta> {
        let mut entries = Vec::new();
        for (i, e) in self.entries.iter().enumerate() {
            let old = before
                .binary_search_by(|b| b.token.cmp(&e.token))
                .ok()
                .and_then(|j| before.get(j));
            if old == Some(e) {
                continue;
            }
            if entries.len() == MAX_DELTA_ENTRIES {
                return None;
            }
            let prev = Self::at(&self.entries, i + self.entries.len() - 1).token;
            let next = Self::at(&self.entries, i + 1).token;
            entries.push(DeltaEntry {
                entry: *e,
                prev,
                next,
            });
        }
        (!entries.is_empty()).then(|| RingDelta {
            start: self.start,
            end: self.end,
            seeds_hash: seeds_hash(&self.seeds),
            entries,
        })
    }

    /// Merges a delta received from a peer with [`Ring::merge`]'s rules and checks (errors
    /// as for a whole ring, our ring unchanged). A delta this ring cannot take as it stands is
    /// a [`DeltaOutcome::Gap`], also leaving it unchanged.
    pub fn apply_delta(
        &mut self,
        delta: &RingDelta,
        has_allocations: &dyn Fn(Range) -> bool,
    ) -> Result<DeltaOutcome, RingError> {
        validate_delta(delta)?;
        if delta.start != self.start || delta.end != self.end {
            return Err(RingError::DifferentRange);
        }
        if self.is_empty() || seeds_hash(&self.seeds) != delta.seeds_hash {
            return Ok(DeltaOutcome::Gap);
        }
        let theirs: Vec<Entry> = delta.entries.iter().map(|d| d.entry).collect();
        let (mut result, updated) = self.merge_entries(&theirs, has_allocations)?;
        self.clamp_own_free(&mut result);
        // Each entry taken must have the sender's neighbours here too; otherwise a token is
        // missing on one side and the ranges the entries describe differ (so free counts may
        // not fit yet either: this comes before the invariants are checked). Entries we had
        // already, or newer, say nothing about the neighbours we have now.
        let mine = |t: Address| {
            self.entries
                .binary_search_by(|e| e.token.cmp(&t))
                .ok()
                .map(|i| self.entries[i])
        };
        for d in &delta.entries {
            let Ok(i) = result.binary_search_by(|e| e.token.cmp(&d.entry.token)) else {
                return Ok(DeltaOutcome::Gap);
            };
            if result[i] != d.entry || mine(d.entry.token) == Some(d.entry) {
                continue;
            }
            let prev = Self::at(&result, i + result.len() - 1).token;
            let next = Self::at(&result, i + 1).token;
            if prev != d.prev || next != d.next {
                return Ok(DeltaOutcome::Gap);
            }
            // A token new here cuts the range of the entry before it, which is then right
            // only if the same change rewrote that entry (as a grant does); a delta without it
            // comes after a change that created the token and that we missed.
            let known = |t: Address| mine(t).is_some();
            let carried = |t: Address| {
                delta
                    .entries
                    .binary_search_by(|e| e.entry.token.cmp(&t))
                    .is_ok()
            };
            if !known(d.entry.token) && !carried(d.prev) {
                return Ok(DeltaOutcome::Gap);
            }
        }
        self.check_entries(&result)
            .map_err(|e| RingError::MergeCauses(Box::new(e)))?;
        self.entries = result;
        Ok(DeltaOutcome::Applied(updated))
    }

    /// A range of ours that got split without allocations may report too much free.
    fn clamp_own_free(&self, entries: &mut [Entry]) {
        for i in 0..entries.len() {
            let next = Self::at(entries, i + 1).token;
            let distance = self.distance(entries[i].token, next);
            if entries[i].peer == self.peer && entries[i].free > distance {
                entries[i].free = distance;
            }
        }
    }

    /// Writes the free counts of our entries, bumping the version of each that changed (Weave's
    /// `ReportFree`); `free_in` counts our free addresses in a range. Returns whether anything
    /// changed.
    pub fn report_free(&mut self, free_in: &dyn Fn(Range) -> u32) -> bool {
        let mut updated = false;
        for i in 0..self.entries.len() {
            if self.entries[i].peer != self.peer {
                continue;
            }
            let next = Self::at(&self.entries, i + 1).token;
            let free = self
                .split(self.entries[i].token, next)
                .into_iter()
                .map(free_in)
                .fold(0u32, u32::saturating_add)
                .min(self.distance(self.entries[i].token, next));
            let e = &mut self.entries[i];
            if e.free != free {
                e.free = free;
                e.version = e.version.saturating_add(1);
                updated = true;
            }
        }
        updated
    }

    /// Other peers to ask for space in `[start, end)`, in weighted-random order: each weighs its
    /// reported free addresses there times a uniform random number (Weave's
    /// `ChoosePeersToAskForSpace`).
    pub fn choose_peers_to_ask(&self, range: Range, rng: &mut impl Rng) -> Vec<PeerName> {
        let mut per_peer: BTreeMap<PeerName, u64> = BTreeMap::new();
        let len = self.entries.len();
        for (i, e) in self.entries.iter().enumerate() {
            // Skip entries ending before the range (the wrapping subtraction is Weave's).
            if i + 1 < len && self.entries[i + 1].token.0.wrapping_sub(1) < range.start.0 {
                continue;
            }
            if e.token >= range.end {
                break;
            }
            if e.free == 0 || e.peer == self.peer {
                continue;
            }
            *per_peer.entry(e.peer).or_insert(0) += u64::from(e.free);
        }
        let mut weighted: Vec<(f64, PeerName)> = per_peer
            .into_iter()
            .map(|(p, free)| (free as f64 * rng.gen::<f64>(), p))
            .collect();
        weighted.sort_by(|a, b| b.0.total_cmp(&a.0));
        weighted.into_iter().map(|(_, p)| p).collect()
    }

    /// The first other owner in token order that `is_valid` accepts (Weave's
    /// `PickPeerForTransfer`).
    pub fn pick_peer_for_transfer(&self, is_valid: &dyn Fn(PeerName) -> bool) -> Option<PeerName> {
        self.entries
            .iter()
            .map(|e| e.peer)
            .find(|&p| p != self.peer && is_valid(p))
    }

    /// Marks every entry of `from` as `to`'s, version + 100 (Weave's `Transfer`); returns the
    /// ranges that moved, split where they wrap.
    pub fn transfer(&mut self, from: PeerName, to: PeerName) -> Vec<Range> {
        let mut moved = Vec::new();
        for i in 0..self.entries.len() {
            if self.entries[i].peer == from {
                let next = Self::at(&self.entries, i + 1).token;
                let e = &mut self.entries[i];
                e.peer = to;
                e.version = e.version.saturating_add(TRANSFER_VERSION_BUMP);
                moved.extend(self.split(self.entries[i].token, next));
            }
        }
        moved.sort();
        moved
    }
}

fn subdivide(from: Address, to: Address, peers: &[PeerName], out: &mut Vec<Entry>) {
    let share = to.0.saturating_sub(from.0);
    if share == 0 || peers.is_empty() {
        return;
    }
    if share == 1 || peers.len() == 1 {
        out.push(Entry {
            token: from,
            peer: peers[0],
            version: 0,
            free: share,
        });
        return;
    }
    let mid = from.offset(share / 2);
    let (lower, upper) = peers.split_at(peers.len() / 2);
    subdivide(from, mid, lower, out);
    subdivide(mid.offset(share % 2), to, upper, out);
}

/// A 64-bit digest of a ring's seeds (FNV-1a over the sorted names), which a
/// [`RingDelta`] carries in place of the list; an empty list hashes to 0.
pub fn seeds_hash(seeds: &[PeerName]) -> u64 {
    if seeds.is_empty() {
        return 0;
    }
    seeds.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, p| {
        p.0.to_be_bytes()
            .iter()
            .fold(h, |h, &b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
    })
}

/// Checks a received delta on its own terms: a universe, at most [`MAX_DELTA_ENTRIES`]
/// entries, sorted and unique, tokens and neighbours inside the universe, versions that can
/// be reached, free counts that fit between an entry and its next token.
pub fn validate_delta(d: &RingDelta) -> Result<(), RingError> {
    let range = Range::new(d.start, d.end);
    if d.start >= d.end {
        return Err(RingError::EmptyRange(range));
    }
    let es = &d.entries;
    check_order(range, MAX_DELTA_ENTRIES, es.len(), |i| es[i].entry.token)?;
    for de in es {
        if [de.entry.token, de.prev, de.next]
            .iter()
            .any(|&t| !range.contains(t))
        {
            return Err(RingError::TokenOutOfRange);
        }
        check_entry(range, &de.entry, de.next)?;
    }
    Ok(())
}

/// Checks a received ring on its own terms (its universe, sizes and entries).
pub fn validate(r: &RingSnapshot) -> Result<(), RingError> {
    let range = Range::new(r.start, r.end);
    if r.start >= r.end {
        return Err(RingError::EmptyRange(range));
    }
    let max = MAX_ENTRIES.min(range.size() as usize);
    if r.seeds.len() > max {
        return Err(RingError::TooManySeeds {
            count: r.seeds.len(),
            max,
        });
    }
    check_entries(range, &r.entries)
}

fn check_entries(range: Range, entries: &[Entry]) -> Result<(), RingError> {
    check_order(range, MAX_ENTRIES, entries.len(), |i| entries[i].token)?;
    let (Some(first), Some(last)) = (entries.first(), entries.last()) else {
        return Ok(());
    };
    if first.token < range.start || last.token >= range.end {
        return Err(RingError::TokenOutOfRange);
    }
    for (i, e) in entries.iter().enumerate() {
        check_entry(range, e, Ring::at(entries, i + 1).token)?;
    }
    Ok(())
}

/// At most `max` (and no more than the universe's size) tokens, `token(0..len)`, ascending
/// and each once.
fn check_order(
    range: Range,
    max: usize,
    len: usize,
    token: impl Fn(usize) -> Address,
) -> Result<(), RingError> {
    let max = max.min(range.size() as usize);
    if len > max {
        return Err(RingError::TooManyEntries { count: len, max });
    }
    if (1..len).any(|i| token(i - 1) > token(i)) {
        return Err(RingError::NotSorted);
    }
    if (1..len).any(|i| token(i - 1) == token(i)) {
        return Err(RingError::TokenRepeated);
    }
    Ok(())
}

/// An entry's version is reachable and its free count fits before `next`.
fn check_entry(range: Range, e: &Entry, next: Address) -> Result<(), RingError> {
    if e.version > MAX_VERSION {
        return Err(RingError::ImpossibleVersion {
            token: e.token,
            version: e.version,
        });
    }
    let distance = distance_in(range, e.token, next);
    if e.free > distance {
        return Err(RingError::TooMuchFree {
            token: e.token,
            next,
            free: e.free,
            distance,
        });
    }
    Ok(())
}

/// Addresses from `start` round to `end` in `range`; the whole ring when they are equal.
fn distance_in(range: Range, start: Address, end: Address) -> u32 {
    if end > start {
        end.0 - start.0
    } else {
        // Both lie in [range.start, range.end), so this cannot overflow the ring size.
        (range.end.0.wrapping_sub(start.0)).wrapping_add(end.0.wrapping_sub(range.start.0))
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use rand::{rngs::StdRng, SeedableRng};

    use super::*;

    const A: PeerName = PeerName(0xa);
    const B: PeerName = PeerName(0xb);
    const C: PeerName = PeerName(0xc);

    fn ring(peer: PeerName) -> Ring {
        Ring::new(Range::new(Address(0), Address(256)), peer).unwrap()
    }

    fn e(token: u32, peer: PeerName, version: u32, free: u32) -> Entry {
        Entry {
            token: Address(token),
            peer,
            version,
            free,
        }
    }

    #[test]
    fn ipam_ring_claim_for_peers_halves() {
        let mut r = ring(A);
        r.claim_for_peers(&[A, B, C]);
        assert_eq!(
            r.entries(),
            &[e(0, A, 0, 128), e(128, B, 0, 64), e(192, C, 0, 64)]
        );
        assert_eq!(r.seeds(), &[A, B, C]);
        // 10.32.0.0/12 for three peers: /13, /14, /14.
        let start = 0x0a20_0000;
        let mut big = Ring::new(Range::new(Address(start), Address(start + (1 << 20))), A).unwrap();
        big.claim_for_peers(&[A, B, C]);
        let tokens: Vec<String> = big.entries().iter().map(|e| e.token.to_string()).collect();
        assert_eq!(tokens, ["10.32.0.0", "10.40.0.0", "10.44.0.0"]);
        // More peers than addresses: some get nothing.
        let mut tiny = Ring::new(Range::new(Address(0), Address(2)), A).unwrap();
        tiny.claim_for_peers(&[A, B, C]);
        assert_eq!(tiny.entries(), &[e(0, A, 0, 1), e(1, B, 0, 1)]);
    }

    #[test]
    fn ipam_ring_grant_splits_and_owner() {
        let mut r = ring(A);
        r.claim_for_peers(&[A, B]);
        r.grant(Range::new(Address(96), Address(128)), C).unwrap();
        assert_eq!(
            r.entries(),
            &[e(0, A, 1, 96), e(96, C, 0, 32), e(128, B, 0, 128)]
        );
        assert_eq!(r.owner(Address(100)), Some(C));
        assert_eq!(r.owner(Address(95)), Some(A));
        assert_eq!(r.owner(Address(300)), None);
        // Not ours: refused, unchanged.
        let before = r.clone();
        assert_eq!(
            r.grant(Range::new(Address(90), Address(100)), B),
            Err(RingError::NotOurs(Range::new(Address(90), Address(100))))
        );
        assert_eq!(r, before);
        // A middle piece: a token at each end.
        r.grant(Range::new(Address(10), Address(20)), B).unwrap();
        assert_eq!(
            r.entries(),
            &[
                e(0, A, 2, 10),
                e(10, B, 0, 10),
                e(20, A, 0, 76),
                e(96, C, 0, 32),
                e(128, B, 0, 128)
            ]
        );
    }

    #[test]
    fn ipam_ring_grant_of_the_tail_wraps() {
        // B owns [128, 256) and, by wrapping, nothing before 0; its tail goes to C.
        let mut r = Ring::restore(
            RingSnapshot {
                start: Address(0),
                end: Address(256),
                peer: B,
                entries: vec![e(10, A, 0, 118), e(128, B, 0, 138)],
                seeds: vec![],
            },
            B,
        )
        .unwrap();
        r.grant(Range::new(Address(224), Address(256)), C).unwrap();
        assert_eq!(
            r.entries(),
            &[
                e(0, B, 0, 10),
                e(10, A, 0, 118),
                e(128, B, 1, 96),
                e(224, C, 0, 32)
            ]
        );
        assert_eq!(
            r.owned_ranges(),
            vec![
                Range::new(Address(0), Address(10)),
                Range::new(Address(128), Address(224))
            ]
        );
    }

    #[test]
    fn ipam_ring_rejects_bad_rings_unchanged() {
        let mut r = ring(A);
        r.claim_for_peers(&[A, B]);
        let before = r.clone();
        let snap = |entries: Vec<Entry>| RingSnapshot {
            start: Address(0),
            end: Address(256),
            peer: B,
            entries,
            seeds: vec![A, B],
        };
        let no = |_: Range| false;
        let cases = [
            (
                snap(vec![e(128, B, 1, 0), e(0, A, 0, 0)]),
                RingError::NotSorted,
            ),
            (
                snap(vec![e(0, A, 1, 0), e(0, B, 0, 0)]),
                RingError::TokenRepeated,
            ),
            (
                snap(vec![e(0, A, 1, 0), e(256, B, 0, 0)]),
                RingError::TokenOutOfRange,
            ),
            (
                snap(vec![e(0, A, 1, 129), e(128, B, 0, 0)]),
                RingError::TooMuchFree {
                    token: Address(0),
                    next: Address(128),
                    free: 129,
                    distance: 128,
                },
            ),
            (
                snap(vec![e(0, A, u32::MAX, 0)]),
                RingError::ImpossibleVersion {
                    token: Address(0),
                    version: u32::MAX,
                },
            ),
            (
                snap((0..257).map(|t| e(t, B, 0, 0)).collect()),
                RingError::TooManyEntries {
                    count: 257,
                    max: 256,
                },
            ),
            (
                RingSnapshot {
                    seeds: vec![B],
                    ..snap(vec![])
                },
                RingError::DifferentSeeds,
            ),
            (
                RingSnapshot {
                    end: Address(512),
                    ..snap(vec![])
                },
                RingError::DifferentRange,
            ),
            (
                RingSnapshot {
                    start: Address(9),
                    end: Address(9),
                    ..snap(vec![])
                },
                RingError::EmptyRange(Range::new(Address(9), Address(9))),
            ),
        ];
        for (bad, want) in cases {
            assert_eq!(r.merge(&bad, &no), Err(want));
            assert_eq!(r, before);
        }
        // Someone else claims part of our range where we have allocations.
        let split = snap(vec![e(0, A, 0, 64), e(64, C, 0, 64), e(128, B, 0, 128)]);
        assert_eq!(
            r.merge(&split, &|_| true),
            Err(RingError::EntryInMyRange {
                peer: C,
                token: Address(64)
            })
        );
        assert_eq!(r, before);
        // ...and without allocations it is accepted (Weave's repair).
        assert_eq!(r.merge(&split, &no), Ok(true));
        let newer = snap(vec![e(0, C, 5, 0), e(64, C, 0, 64), e(128, B, 0, 128)]);
        let mut r2 = before.clone();
        assert!(matches!(
            r2.merge(&newer, &|_| true),
            Err(RingError::NewerVersion { .. })
        ));
        let same_version = snap(vec![e(0, C, 0, 0), e(128, B, 0, 128)]);
        assert!(matches!(
            r2.merge(&same_version, &|_| true),
            Err(RingError::InconsistentEntry { .. })
        ));
        assert_eq!(r2, before);
    }

    #[test]
    fn ipam_ring_merge_versions_and_imposes_own() {
        let mut a = ring(A);
        a.claim_for_peers(&[A, B]);
        let mut b = ring(B);
        assert_eq!(b.merge(&a.snapshot(), &|_| false), Ok(true));
        assert_eq!(b.entries(), a.entries());
        assert_eq!(b.merge(&a.snapshot(), &|_| false), Ok(false));
        // B reports free space; A takes the newer version.
        assert!(b.report_free(&|r| if r.start.0 >= 128 {
            r.size() - 1
        } else {
            r.size()
        }));
        assert_eq!(a.merge(&b.snapshot(), &|_| false), Ok(true));
        assert_eq!(a.entries()[1], e(128, B, 1, 127));
        // A stale copy of our own entry with a higher version: ours wins at version + 1.
        let mut stale = a.snapshot();
        stale.entries[0].version = 7;
        stale.entries[0].free = 3;
        assert_eq!(a.merge(&stale, &|_| true), Ok(false));
        assert_eq!(a.entries()[0], e(0, A, 8, 128));
    }

    #[test]
    fn ipam_ring_transfer_and_choose() {
        let mut r = ring(A);
        r.claim_for_peers(&[A, B, C]);
        let moved = r.transfer(B, A);
        assert_eq!(moved, vec![Range::new(Address(128), Address(192))]);
        assert_eq!(r.entries()[1], e(128, A, 100, 64));
        assert_eq!(
            r.owned_ranges(),
            vec![
                Range::new(Address(0), Address(128)),
                Range::new(Address(128), Address(192))
            ]
        );
        let mut rng = StdRng::seed_from_u64(1);
        assert_eq!(
            r.choose_peers_to_ask(Range::new(Address(0), Address(256)), &mut rng),
            vec![C]
        );
        assert_eq!(
            r.choose_peers_to_ask(Range::new(Address(0), Address(100)), &mut rng),
            Vec::<PeerName>::new()
        );
        assert_eq!(r.pick_peer_for_transfer(&|_| true), Some(C));
        assert_eq!(r.pick_peer_for_transfer(&|p| p != C), None);
    }

    #[test]
    fn ipam_ring_delta_of_a_grant_applies_where_the_base_is_known() {
        let mut a = ring(A);
        a.claim_for_peers(&[A, B]);
        let mut b = ring(B);
        b.merge(&a.snapshot(), &|_| false).unwrap();
        let mut stale = b.clone();
        // First grant: [64, 96) to C. Only the touched entries travel.
        let before = a.entries().to_vec();
        a.grant(Range::new(Address(64), Address(96)), C).unwrap();
        let d1 = a.delta_since(&before).unwrap();
        assert_eq!(
            d1.entries.iter().map(|d| d.entry).collect::<Vec<_>>(),
            vec![e(0, A, 1, 64), e(64, C, 0, 32), e(96, A, 0, 32)]
        );
        assert_eq!(
            (d1.entries[0].prev, d1.entries[0].next),
            (Address(128), Address(64))
        );
        assert_eq!(
            b.apply_delta(&d1, &|_| false),
            Ok(DeltaOutcome::Applied(true))
        );
        assert_eq!(b.entries(), a.entries());
        assert_eq!(
            b.apply_delta(&d1, &|_| false),
            Ok(DeltaOutcome::Applied(false))
        );
        // Second grant from A's remaining range: [96, 128) to B.
        let before = a.entries().to_vec();
        a.grant(Range::new(Address(96), Address(128)), B).unwrap();
        let d2 = a.delta_since(&before).unwrap();
        assert_eq!(d2.entries.len(), 1);
        // A replica that missed the first change sees a gap and stays as it was...
        let untouched = stale.clone();
        assert_eq!(stale.apply_delta(&d2, &|_| false), Ok(DeltaOutcome::Gap));
        assert_eq!(stale, untouched);
        // ...until the whole ring arrives; then later deltas apply again.
        stale.merge(&a.snapshot(), &|_| false).unwrap();
        assert_eq!(stale.entries(), a.entries());
        assert_eq!(
            b.apply_delta(&d2, &|_| false),
            Ok(DeltaOutcome::Applied(true))
        );
        assert_eq!(b.entries(), a.entries());
        // A replica without a ring, or seeded otherwise, needs the whole ring too.
        assert_eq!(ring(C).apply_delta(&d2, &|_| false), Ok(DeltaOutcome::Gap));
        let mut other = ring(C);
        other.claim_for_peers(&[B, C]);
        assert_eq!(other.apply_delta(&d2, &|_| false), Ok(DeltaOutcome::Gap));
        assert_eq!(a.delta_since(a.entries()), None);
    }

    #[test]
    fn ipam_ring_rejects_bad_deltas_unchanged() {
        let mut a = ring(A);
        a.claim_for_peers(&[A, B]);
        let mut b = ring(B);
        b.merge(&a.snapshot(), &|_| false).unwrap();
        let before_b = b.clone();
        let de = |token: u32, peer, version, free, prev: u32, next: u32| DeltaEntry {
            entry: e(token, peer, version, free),
            prev: Address(prev),
            next: Address(next),
        };
        let delta = |entries: Vec<DeltaEntry>| RingDelta {
            start: Address(0),
            end: Address(256),
            seeds_hash: seeds_hash(&[A, B]),
            entries,
        };
        let cases = [
            (
                delta(vec![de(128, C, 1, 0, 0, 0), de(0, C, 1, 0, 128, 128)]),
                RingError::NotSorted,
            ),
            (
                delta(vec![de(0, C, 1, 0, 128, 128), de(0, C, 2, 0, 128, 128)]),
                RingError::TokenRepeated,
            ),
            (
                delta(vec![de(0, C, 1, 0, 128, 300)]),
                RingError::TokenOutOfRange,
            ),
            (
                delta(vec![de(0, C, 1, 129, 128, 128)]),
                RingError::TooMuchFree {
                    token: Address(0),
                    next: Address(128),
                    free: 129,
                    distance: 128,
                },
            ),
            (
                delta(vec![de(0, C, u32::MAX, 0, 128, 128)]),
                RingError::ImpossibleVersion {
                    token: Address(0),
                    version: u32::MAX,
                },
            ),
            (
                RingDelta {
                    end: Address(512),
                    ..delta(vec![])
                },
                RingError::DifferentRange,
            ),
            (
                RingDelta {
                    end: Address(0),
                    ..delta(vec![])
                },
                RingError::EmptyRange(Range::new(Address(0), Address(0))),
            ),
        ];
        for (bad, want) in cases {
            assert_eq!(b.apply_delta(&bad, &|_| false), Err(want));
            assert_eq!(b, before_b);
        }
        // Someone takes part of a range we hold allocations in: refused as in a whole ring.
        let split = delta(vec![de(192, C, 0, 64, 128, 0)]);
        assert_eq!(
            b.apply_delta(&split, &|_| true),
            Err(RingError::EntryInMyRange {
                peer: C,
                token: Address(192)
            })
        );
        assert_eq!(b, before_b);
    }

    // Property tests: replicas edited by their owners (grants, free reports, transfers of
    // peers that left), then merged in any order, agree, and never own an address twice or
    // lose one.

    #[derive(Debug, Clone)]
    enum Op {
        Grant {
            by: usize,
            to: usize,
            at: u32,
            len: u32,
        },
        Report {
            by: usize,
            salt: u32,
        },
        Merge {
            into: usize,
            from: usize,
        },
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (0..4usize, 0..4usize, 0..256u32, 1..64u32).prop_map(|(by, to, at, len)| Op::Grant {
                by,
                to,
                at,
                len
            }),
            (0..4usize, any::<u32>()).prop_map(|(by, salt)| Op::Report { by, salt }),
            (0..4usize, 0..4usize).prop_map(|(into, from)| Op::Merge { into, from }),
        ]
    }

    fn names() -> [PeerName; 4] {
        [PeerName(1), PeerName(2), PeerName(3), PeerName(4)]
    }

    /// Applies `ops` to four replicas seeded with two peers; replicas 2 and 3 start empty.
    fn run(ops: &[Op]) -> Vec<Ring> {
        let n = names();
        let mut rings: Vec<Ring> = n.iter().map(|&p| ring(p)).collect();
        rings[0].claim_for_peers(&n[..2]);
        rings[1].claim_for_peers(&n[..2]);
        for op in ops {
            match *op {
                Op::Grant { by, .. } | Op::Report { by, .. } => apply_edit(&mut rings[by], op),
                Op::Merge { into, from } => {
                    let snap = rings[from].snapshot();
                    rings[into].merge(&snap, &|_| false).unwrap();
                }
            }
        }
        rings
    }

    /// Grants `[at, at + len)`, cut to the owned range holding `at`, if `r` owns `at`.
    fn grant_owned(r: &mut Ring, to: PeerName, at: u32, len: u32) {
        let owned = r.owned_ranges();
        if let Some(o) = owned.iter().find(|o| o.contains(Address(at))) {
            let end = Address(at.saturating_add(len).min(o.end.0));
            if to != r.peer() {
                r.grant(Range::new(Address(at), end), to).unwrap();
            }
        }
    }

    /// An owner's edit of its own replica: a grant (as donation makes) or a free report.
    fn apply_edit(r: &mut Ring, op: &Op) {
        match *op {
            Op::Grant { to, at, len, .. } => grant_owned(r, names()[to], at, len),
            Op::Report { salt, .. } => {
                r.report_free(&|x| (salt ^ x.start.0) % (x.size() + 1));
            }
            Op::Merge { .. } => {}
        }
    }

    #[derive(Debug, Clone)]
    enum DeltaOp {
        /// An owner edits its ring (grant or free report) and broadcasts the change.
        Edit(Op),
        /// The `pick`-th message in flight reaches its receiver.
        Deliver { pick: usize },
        /// Periodic gossip: a whole ring from one replica to another, in both worlds.
        Gossip { into: usize, from: usize },
    }

    fn delta_op() -> impl Strategy<Value = DeltaOp> {
        prop_oneof![
            2 => op().prop_filter("edits only", |o| !matches!(o, Op::Merge { .. })).prop_map(DeltaOp::Edit),
            3 => any::<usize>().prop_map(|pick| DeltaOp::Deliver { pick }),
            1 => (0..4usize, 0..4usize).prop_map(|(into, from)| DeltaOp::Gossip { into, from }),
        ]
    }

    /// Two worlds of four replicas fed the same edits: in one every change is broadcast as a
    /// delta, in the other as the whole ring; messages arrive in a random order (`Deliver`
    /// picks one of those in flight), a delta that leaves a gap is answered by the sender's
    /// current whole ring, and periodic gossip runs in both. An edit happens in both worlds
    /// only where the editor's ring is the same in both (else the worlds' histories would
    /// diverge). At the end everything in flight arrives. Returns both worlds.
    fn run_with_deltas(ops: &[DeltaOp], seed: u64) -> (Vec<Ring>, Vec<Ring>) {
        use rand::seq::SliceRandom;
        let n = names();
        let mut dw: Vec<Ring> = n.iter().map(|&p| ring(p)).collect();
        dw[0].claim_for_peers(&n[..2]);
        dw[1].claim_for_peers(&n[..2]);
        let mut fw = dw.clone();
        // (receiver, sender, delta, whole ring at send time)
        let mut flight: Vec<(usize, usize, RingDelta, RingSnapshot)> = Vec::new();
        let deliver =
            |dw: &mut Vec<Ring>,
             fw: &mut Vec<Ring>,
             (to, from, d, snap): (usize, usize, RingDelta, RingSnapshot)| {
                if dw[to].apply_delta(&d, &|_| false).unwrap() == DeltaOutcome::Gap {
                    let now = dw[from].snapshot();
                    dw[to].merge(&now, &|_| false).unwrap();
                }
                fw[to].merge(&snap, &|_| false).unwrap();
            };
        for op in ops {
            match op {
                DeltaOp::Edit(edit) => {
                    let by = match *edit {
                        Op::Grant { by, .. }
                        | Op::Report { by, .. }
                        | Op::Merge { into: by, .. } => by,
                    };
                    if dw[by].entries() != fw[by].entries() {
                        continue;
                    }
                    let before = dw[by].entries().to_vec();
                    apply_edit(&mut dw[by], edit);
                    apply_edit(&mut fw[by], edit);
                    if let Some(d) = dw[by].delta_since(&before) {
                        let snap = fw[by].snapshot();
                        for to in (0..4).filter(|&i| i != by) {
                            flight.push((to, by, d.clone(), snap.clone()));
                        }
                    }
                }
                DeltaOp::Deliver { pick } => {
                    if !flight.is_empty() {
                        let m = flight.swap_remove(pick % flight.len());
                        deliver(&mut dw, &mut fw, m);
                    }
                }
                DeltaOp::Gossip { into, from } => {
                    let (d, f) = (dw[*from].snapshot(), fw[*from].snapshot());
                    dw[*into].merge(&d, &|_| false).unwrap();
                    fw[*into].merge(&f, &|_| false).unwrap();
                }
            }
        }
        flight.shuffle(&mut StdRng::seed_from_u64(seed));
        for m in flight {
            deliver(&mut dw, &mut fw, m);
        }
        (dw, fw)
    }

    fn check_partition(r: &Ring) -> Result<(), TestCaseError> {
        if r.is_empty() {
            return Ok(());
        }
        let total: u64 = r.owned_sizes().values().sum();
        prop_assert_eq!(total, 256, "space lost or doubled");
        let mut all: Vec<Range> = names().iter().flat_map(|&p| r.owned_ranges_of(p)).collect();
        all.sort();
        for w in all.windows(2) {
            prop_assert!(w[0].end <= w[1].start, "owned twice: {:?} {:?}", w[0], w[1]);
        }
        Ok(())
    }

    proptest! {
        #[test]
        fn ipam_ring_merges_converge_in_any_order(
            ops in proptest::collection::vec(op(), 0..40),
            order in Just((0..4usize).flat_map(|i| (0..4usize).map(move |j| (i, j))).collect::<Vec<_>>()).prop_shuffle(),
            order2 in Just((0..4usize).flat_map(|i| (0..4usize).map(move |j| (i, j))).collect::<Vec<_>>()).prop_shuffle(),
        ) {
            let mut rings = run(&ops);
            for r in &rings {
                check_partition(r)?;
            }
            // Two rounds of all pairwise merges in a random order reach a fixed point.
            for &(into, from) in order.iter().chain(order2.iter()) {
                let snap = rings[from].snapshot();
                rings[into].merge(&snap, &|_| false).unwrap();
                check_partition(&rings[into])?;
            }
            let first = rings[0].entries().to_vec();
            for r in &rings[1..] {
                prop_assert_eq!(r.entries(), &first[..]);
            }
            check_partition(&rings[0])?;
        }

        #[test]
        fn ipam_ring_merge_is_commutative_on_disjoint_edits(
            ops_a in proptest::collection::vec((0..128u32, 1..32u32), 0..6),
            ops_b in proptest::collection::vec((128..256u32, 1..32u32), 0..6),
        ) {
            let n = names();
            let mut a = ring(n[0]);
            a.claim_for_peers(&n[..2]);
            let mut b = ring(n[1]);
            b.claim_for_peers(&n[..2]);
            for (at, len) in ops_a {
                if a.owner(Address(at)) == Some(n[0]) {
                    let end = a.owned_ranges().iter().find(|r| r.contains(Address(at))).unwrap().end;
                    a.grant(Range::new(Address(at), Address((at + len).min(end.0))), n[2]).unwrap();
                }
            }
            for (at, len) in ops_b {
                if b.owner(Address(at)) == Some(n[1]) {
                    let end = b.owned_ranges().iter().find(|r| r.contains(Address(at))).unwrap().end;
                    b.grant(Range::new(Address(at), Address((at + len).min(end.0))), n[3]).unwrap();
                }
            }
            let mut ab = a.clone();
            ab.merge(&b.snapshot(), &|_| false).unwrap();
            let mut ba = b.clone();
            ba.merge(&a.snapshot(), &|_| false).unwrap();
            prop_assert_eq!(ab.entries(), ba.entries());
            check_partition(&ab)?;
        }

        #[test]
        fn ipam_ring_deltas_in_any_order_converge_as_full_gossip(
            ops in proptest::collection::vec(delta_op(), 0..60),
            seed in any::<u64>(),
        ) {
            let (deltas, full) = run_with_deltas(&ops, seed);
            // Replicas that never heard of a ring stay without one, in both worlds.
            let first = deltas[0].entries().to_vec();
            for (d, f) in deltas.iter().zip(&full) {
                check_partition(d)?;
                prop_assert_eq!(d.entries(), f.entries(), "deltas and full gossip disagree");
                if !d.is_empty() {
                    prop_assert_eq!(d.entries(), &first[..], "replicas disagree");
                }
            }
        }

        #[test]
        fn ipam_ring_deltas_delivered_at_once_never_gap(
            ops in proptest::collection::vec(op(), 0..40),
        ) {
            let n = names();
            let mut rings: Vec<Ring> = n.iter().map(|&p| ring(p)).collect();
            for r in &mut rings {
                r.claim_for_peers(&n[..2]);
            }
            let mut full = rings.clone();
            for op in &ops {
                let by = match *op {
                    Op::Grant { by, .. } | Op::Report { by, .. } => by,
                    Op::Merge { .. } => continue,
                };
                let before = rings[by].entries().to_vec();
                apply_edit(&mut rings[by], op);
                apply_edit(&mut full[by], op);
                let Some(d) = rings[by].delta_since(&before) else { continue };
                let snap = full[by].snapshot();
                for i in (0..4).filter(|&i| i != by) {
                    prop_assert_eq!(rings[i].apply_delta(&d, &|_| false), Ok(DeltaOutcome::Applied(true)));
                    full[i].merge(&snap, &|_| false).unwrap();
                    prop_assert_eq!(rings[i].entries(), full[i].entries());
                }
            }
        }

        #[test]
        fn ipam_ring_random_deltas_never_panic(
            entries in proptest::collection::vec((any::<u32>(), 0u64..4, any::<u32>(), any::<u32>(), any::<u32>(), any::<u32>()), 0..8),
            sorted in any::<bool>(),
        ) {
            let mut r = ring(A);
            r.claim_for_peers(&[A, B]);
            let before = r.clone();
            let mut entries: Vec<DeltaEntry> = entries
                .into_iter()
                .map(|(t, p, v, f, pr, nx)| DeltaEntry {
                    entry: e(t % 300, PeerName(p), v % 300, f % 300),
                    prev: Address(pr % 300),
                    next: Address(nx % 300),
                })
                .collect();
            if sorted {
                entries.sort_by_key(|d| d.entry.token);
                entries.dedup_by_key(|d| d.entry.token);
            }
            let d = RingDelta { start: Address(0), end: Address(256), seeds_hash: seeds_hash(&[A, B]), entries };
            match r.apply_delta(&d, &|_| true) {
                Ok(DeltaOutcome::Applied(_)) => {}
                _ => prop_assert_eq!(r, before),
            }
        }

        #[test]
        fn ipam_ring_random_snapshots_never_panic(
            entries in proptest::collection::vec((any::<u32>(), 0u64..4, any::<u32>(), any::<u32>()), 0..8),
            start in any::<u32>(), end in any::<u32>(),
        ) {
            let mut r = ring(A);
            r.claim_for_peers(&[A, B]);
            let before = r.clone();
            let snap = RingSnapshot {
                start: Address(start % 512),
                end: Address(end % 512),
                peer: B,
                entries: entries.into_iter().map(|(t, p, v, f)| e(t % 300, PeerName(p), v, f % 300)).collect(),
                seeds: vec![],
            };
            if r.merge(&snap, &|_| true).is_err() {
                prop_assert_eq!(r, before);
            }
        }
    }
}
