//! Which peer each MAC address lives behind (spec §4.7, "MAC cache").
//!
//! Entries are learnt from frame source addresses: captured frames bind a MAC to ourself
//! ([`MacCache::learn_local`], never overriding a remote binding), frames from the overlay
//! bind it to the capturing peer ([`MacCache::learn_remote`], forced, reporting moves).
//! Entries expire [`MAC_EXPIRY`] after they were last seen, but only when the caller sweeps
//! with [`MacCache::expire`] (Weave Net sweeps every [`MAC_SWEEP_INTERVAL`]); lookups do not
//! check age, as in Weave Net.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use weft_wire::PeerName;

use super::Mac;

/// How long an entry lives after it was last seen.
pub const MAC_EXPIRY: Duration = Duration::from_secs(10 * 60);
/// How often the driver should call [`MacCache::expire`] (through `Forwarder::expire`).
pub const MAC_SWEEP_INTERVAL: Duration = Duration::from_secs(60);

/// Where a MAC address lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MacOwner {
    /// Behind our own bridge (learnt from a captured frame).
    Local,
    /// Behind the named remote peer's bridge (learnt from a frame it captured).
    Peer(PeerName),
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    owner: MacOwner,
    last_seen: Instant,
}

/// The MAC → owner table with expiry.
#[derive(Debug, Clone, Default)]
pub struct MacCache {
    entries: HashMap<Mac, Entry>,
    /// Bumped whenever a binding appears, moves or goes (not on a mere refresh).
    changes: u64,
}

impl MacCache {
    /// An empty cache.
    pub fn new() -> Self {
        Self::default()
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

    /// All entries, in no particular order (for status output).
    pub fn iter(&self) -> impl Iterator<Item = (Mac, MacOwner)> + '_ {
        self.entries.iter().map(|(m, e)| (*m, e.owner))
    }

    /// Learns `mac` as local and refreshes it; call for every captured frame's source.
    ///
    /// Not forced: if `mac` is bound to a remote peer the entry is left alone and that peer is
    /// returned as `Err` (the caller drops the frame).
    pub fn learn_local(&mut self, mac: Mac, now: Instant) -> Result<(), PeerName> {
        match self.entries.get_mut(&mac) {
            Some(Entry {
                owner: MacOwner::Peer(p),
                ..
            }) => Err(*p),
            Some(e) => {
                e.last_seen = now;
                Ok(())
            }
            None => {
                self.entries.insert(
                    mac,
                    Entry {
                        owner: MacOwner::Local,
                        last_seen: now,
                    },
                );
                self.changes += 1;
                Ok(())
            }
        }
    }

    /// Changes with every binding that appears, moves or goes, so that a copy of the table
    /// (the sleeve receive shortcut's) knows when to look again.
    pub fn generation(&self) -> u64 {
        self.changes
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
    /// frame from the overlay addressed to us. Returns the previous owner when the MAC moved.
    pub fn learn_remote(&mut self, mac: Mac, peer: PeerName, now: Instant) -> Option<MacOwner> {
        let owner = MacOwner::Peer(peer);
        match self.entries.insert(
            mac,
            Entry {
                owner,
                last_seen: now,
            },
        ) {
            Some(old) if old.owner != owner => {
                self.changes += 1;
                Some(old.owner)
            }
            Some(_) => None,
            None => {
                self.changes += 1;
                None
            }
        }
    }

    /// Removes entries not seen for more than [`MAC_EXPIRY`]; returns how many.
    pub fn expire(&mut self, now: Instant) -> usize {
        let before = self.entries.len();
        self.entries
            .retain(|_, e| now.saturating_duration_since(e.last_seen) <= MAC_EXPIRY);
        let gone = before - self.entries.len();
        if gone > 0 {
            self.changes += 1;
        }
        gone
    }

    /// Removes every MAC bound to `peer`; returns how many. Call when `peer` leaves the
    /// topology.
    pub fn forget_peer(&mut self, peer: PeerName) -> usize {
        let before = self.entries.len();
        self.entries.retain(|_, e| e.owner != MacOwner::Peer(peer));
        let gone = before - self.entries.len();
        if gone > 0 {
            self.changes += 1;
        }
        gone
    }
}
