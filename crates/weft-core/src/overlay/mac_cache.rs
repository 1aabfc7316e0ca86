//! Which peer each MAC address lives behind (spec §4.7, "MAC cache").
//!
//! Entries are learnt from frame source addresses: captured frames bind a MAC to ourself
//! ([`MacCache::learn_local`], never overriding a remote binding), frames from the overlay
//! bind it to the capturing peer ([`MacCache::learn_remote`], forced, reporting moves).
//! Entries expire [`MAC_EXPIRY`] after they were last seen, but only when the caller sweeps
//! with [`MacCache::expire`] (Weave Net sweeps every [`MAC_SWEEP_INTERVAL`]); lookups do not
//! check age, as in Weave Net.
//!
//! Bounded, unlike Weave Net's: whoever can send a peer's datagrams could otherwise grow the
//! table (and every copy of it) without limit. Each remote peer may hold at most
//! [`MAX_MACS_PER_PEER`] bindings and the whole table [`MAX_MACS`]. A new MAC past a bound is
//! refused ([`Learnt::Refused`]), not made room for: bindings already learnt keep working,
//! and frames for a refused MAC are treated as for an unknown one (flooded). A MAC moving to
//! a peer that is full is forgotten rather than left at its stale owner.
//!
//! The cache also notes which MACs changed binding ([`MacCache::take_changes`]), so that a
//! copy of it (the sleeve receive shortcut's) can follow changes one by one instead of
//! comparing whole tables.

use std::collections::HashSet;
use std::mem;
use std::time::{Duration, Instant};

use weft_wire::PeerName;

use super::{FastMap, Mac};

/// How long an entry lives after it was last seen.
pub const MAC_EXPIRY: Duration = Duration::from_secs(10 * 60);
/// How often the driver should call [`MacCache::expire`] (through `Forwarder::expire`).
pub const MAC_SWEEP_INTERVAL: Duration = Duration::from_secs(60);
/// Most MACs bound to one remote peer.
pub const MAX_MACS_PER_PEER: usize = 4096;
/// Most entries in the whole cache, local ones included.
pub const MAX_MACS: usize = 65536;

/// Where a MAC address lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MacOwner {
    /// Behind our own bridge (learnt from a captured frame).
    Local,
    /// Behind the named remote peer's bridge (learnt from a frame it captured).
    Peer(PeerName),
}

/// Which bound refused a new binding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheFull {
    /// The peer holds [`MAX_MACS_PER_PEER`] bindings (or the cache's own per-peer limit).
    Peer,
    /// The cache holds [`MAX_MACS`] entries (or its own total limit).
    Total,
}

/// What a learn call did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Learnt {
    /// The binding was there already: refreshed.
    Refreshed,
    /// A new binding.
    New,
    /// The MAC was bound to this owner before and now to the new one.
    Moved(MacOwner),
    /// Not learnt: a bound is reached. A previous binding to another owner is gone.
    Refused(CacheFull),
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    owner: MacOwner,
    last_seen: Instant,
}

/// The MAC → owner table with expiry and bounds.
#[derive(Debug, Clone)]
pub struct MacCache {
    entries: FastMap<Mac, Entry>,
    /// Bindings per remote peer (no zero counts kept).
    per_peer: FastMap<PeerName, usize>,
    max_per_peer: usize,
    max_total: usize,
    /// Bumped whenever a binding appears, moves or goes (not on a mere refresh).
    changes: u64,
    /// MACs whose binding appeared, moved or went since [`Self::take_changes`].
    changed: HashSet<Mac>,
    /// `changed` grew past `max_total` and was cleared: the reader must compare everything.
    changes_lost: bool,
}

impl Default for MacCache {
    fn default() -> Self {
        Self::new()
    }
}

impl MacCache {
    /// An empty cache with the default bounds ([`MAX_MACS_PER_PEER`], [`MAX_MACS`]).
    pub fn new() -> Self {
        Self::with_limits(MAX_MACS_PER_PEER, MAX_MACS)
    }

    /// An empty cache holding at most `per_peer` bindings per remote peer and `total` in all.
    pub fn with_limits(per_peer: usize, total: usize) -> Self {
        Self {
            entries: FastMap::default(),
            per_peer: FastMap::default(),
            max_per_peer: per_peer,
            max_total: total,
            changes: 0,
            changed: HashSet::new(),
            changes_lost: false,
        }
    }

    /// Where `mac` lives, if known (expired entries count until the next sweep).
    pub fn lookup(&self, mac: Mac) -> Option<MacOwner> {
        self.entries.get(&mac).map(|e| e.owner)
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the cache is empty.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Number of MACs bound to the remote `peer`.
    pub fn peer_len(&self, peer: PeerName) -> usize {
        self.per_peer.get(&peer).copied().unwrap_or(0)
    }

    /// All entries, in no particular order (for status output).
    pub fn iter(&self) -> impl Iterator<Item = (Mac, MacOwner)> + '_ {
        self.entries.iter().map(|(m, e)| (*m, e.owner))
    }

    /// Learns `mac` as local and refreshes it; call for every captured frame's source.
    ///
    /// Not forced: if `mac` is bound to a remote peer the entry is left alone and that peer is
    /// returned as `Err` (the caller drops the frame). A new MAC when the cache is full is
    /// not learnt (`Ok(Learnt::Refused(CacheFull::Total))`).
    pub fn learn_local(&mut self, mac: Mac, now: Instant) -> Result<Learnt, PeerName> {
        match self.entries.get_mut(&mac) {
            Some(Entry {
                owner: MacOwner::Peer(p),
                ..
            }) => Err(*p),
            Some(e) => {
                e.last_seen = now;
                Ok(Learnt::Refreshed)
            }
            None => Ok(self.insert(mac, MacOwner::Local, now)),
        }
    }

    /// Changes with every binding that appears, moves or goes.
    pub fn generation(&self) -> u64 {
        self.changes
    }

    /// Moves the MACs whose binding appeared, moved or went since the last call into `into`
    /// (cleared first). Returns `false` when some were not noted (too many changes between
    /// two calls): the caller must then compare its copy with the whole table.
    pub fn take_changes(&mut self, into: &mut HashSet<Mac>) -> bool {
        // Clearing costs the set's capacity, and this is called per datagram: only if needed.
        if !into.is_empty() {
            into.clear();
        }
        if !self.changed.is_empty() {
            mem::swap(&mut self.changed, into);
        }
        !mem::take(&mut self.changes_lost)
    }

    /// Refreshes `mac` if it is still bound to `peer` (a frame from it was delivered by other
    /// means than [`MacCache::learn_remote`]); a binding that moved since is left alone.
    pub fn refresh_remote(&mut self, mac: Mac, peer: PeerName, now: Instant) {
        if let Some(e) = self.entries.get_mut(&mac) {
            if e.owner == MacOwner::Peer(peer) {
                e.last_seen = e.last_seen.max(now);
            }
        }
    }

    /// Binds `mac` to `peer` and refreshes it, whatever it was bound to before; call for every
    /// frame from the overlay addressed to us. A new binding past a bound is refused; a MAC
    /// that was bound elsewhere is then forgotten.
    pub fn learn_remote(&mut self, mac: Mac, peer: PeerName, now: Instant) -> Learnt {
        let owner = MacOwner::Peer(peer);
        match self.entries.get_mut(&mac) {
            Some(e) if e.owner == owner => {
                e.last_seen = now;
                Learnt::Refreshed
            }
            Some(_) => {
                let old = self.remove(mac).map(|e| e.owner);
                match (self.insert(mac, owner, now), old) {
                    (Learnt::New, Some(was)) => Learnt::Moved(was),
                    (l, _) => l,
                }
            }
            None => self.insert(mac, owner, now),
        }
    }

    /// Adds a binding for a MAC not in the table, within the bounds.
    fn insert(&mut self, mac: Mac, owner: MacOwner, now: Instant) -> Learnt {
        if let MacOwner::Peer(p) = owner {
            if self.peer_len(p) >= self.max_per_peer {
                return Learnt::Refused(CacheFull::Peer);
            }
        }
        if self.entries.len() >= self.max_total {
            return Learnt::Refused(CacheFull::Total);
        }
        if let MacOwner::Peer(p) = owner {
            *self.per_peer.entry(p).or_insert(0) += 1;
        }
        self.entries.insert(
            mac,
            Entry {
                owner,
                last_seen: now,
            },
        );
        self.changed(mac);
        Learnt::New
    }

    /// Takes a binding out, keeping the per-peer counts.
    fn remove(&mut self, mac: Mac) -> Option<Entry> {
        let e = self.entries.remove(&mac)?;
        if let MacOwner::Peer(p) = e.owner {
            self.uncount(p, 1);
        }
        self.changed(mac);
        Some(e)
    }

    fn uncount(&mut self, peer: PeerName, n: usize) {
        if let Some(c) = self.per_peer.get_mut(&peer) {
            *c = c.saturating_sub(n);
            if *c == 0 {
                self.per_peer.remove(&peer);
            }
        }
    }

    fn changed(&mut self, mac: Mac) {
        self.changes += 1;
        if self.changes_lost {
            return;
        }
        if self.changed.len() >= self.max_total {
            // Nobody reads them (or not often enough): the reader compares everything once.
            self.changed = HashSet::new();
            self.changes_lost = true;
            return;
        }
        self.changed.insert(mac);
    }

    /// Removes entries not seen for more than [`MAC_EXPIRY`]; returns how many.
    pub fn expire(&mut self, now: Instant) -> usize {
        self.remove_where(|e| now.saturating_duration_since(e.last_seen) > MAC_EXPIRY)
    }

    /// Removes every MAC bound to `peer`; returns how many. Call when `peer` leaves the
    /// topology.
    pub fn forget_peer(&mut self, peer: PeerName) -> usize {
        self.remove_where(|e| e.owner == MacOwner::Peer(peer))
    }

    fn remove_where(&mut self, gone: impl Fn(&Entry) -> bool) -> usize {
        let macs: Vec<Mac> = self
            .entries
            .iter()
            .filter(|(_, e)| gone(e))
            .map(|(m, _)| *m)
            .collect();
        for &m in &macs {
            self.remove(m);
        }
        macs.len()
    }
}
