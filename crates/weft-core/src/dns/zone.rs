//! The zone: every DNS entry of the mesh, with Weave Net's identity, order and rules
//! (`nameserver/entry.go`, `nameserver.go`; spec §5.2–5.4).
//!
//! An entry is identified by its exact hostname, origin, container id and address, and stored
//! in Weave's order: lowercase hostname, origin, container id, address (ties between names that
//! differ only in case broken by the exact hostname, so the order is total). Only the origin
//! tombstones its entries; everyone merges by version, then tombstone. Lookups are
//! case-insensitive and see live entries only.
//!
//! Everything a hostile peer sends is checked before the zone changes: a message out of the
//! clock window, with a bad entry, or that would grow the zone past its cap
//! ([`ZoneConfig::max_entries`]) is refused whole with a [`ZoneError`]. Time is Unix seconds
//! passed in (Weave's timestamps are on the wire).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::Ipv4Addr;

use weft_wire::dns::{check_hostname, Entry, GossipData, HostnameError, MAX_CONTAINER_ID};
use weft_wire::PeerName;

/// Tombstones are purged this long after they were made (Weave's `tombstoneTimeout`).
pub const TOMBSTONE_TIMEOUT: i64 = 30 * 60;

/// Most clock skew accepted in received gossip (Weave's `gossipWindow`: half the tombstone
/// timeout, so a tombstone outlives any accepted skew).
pub const GOSSIP_WINDOW: i64 = TOMBSTONE_TIMEOUT / 2;

/// Default cap on the entries (live and tombstoned) a zone holds.
pub const DEFAULT_MAX_ENTRIES: usize = weft_wire::dns::MAX_ENTRIES;

/// Weave's default domain.
pub const DEFAULT_DOMAIN: &str = "weave.local.";

/// How a zone is set up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ZoneConfig {
    /// Our peer name: the origin of what we add, the only origin we tombstone.
    pub ourself: PeerName,
    /// The domain we answer for (`--dns-domain`); made fully qualified.
    pub domain: String,
    /// Most entries held; gossip that would exceed it is refused, as is a local add.
    pub max_entries: usize,
    /// Most entries any one other peer may have in the zone: gossip that would give an origin
    /// more is refused, so that one peer cannot take the zone for itself.
    pub max_per_peer: usize,
    /// Room kept for our own entries: other peers' gossip may fill at most `max_entries`
    /// minus this, so that a peer (or many fake ones) cannot stop local registrations.
    pub reserved_for_us: usize,
}

impl ZoneConfig {
    /// Weave's defaults for `ourself`: `weave.local.`, [`DEFAULT_MAX_ENTRIES`].
    pub fn new(ourself: PeerName) -> Self {
        Self {
            ourself,
            domain: DEFAULT_DOMAIN.to_string(),
            max_entries: DEFAULT_MAX_ENTRIES,
            max_per_peer: DEFAULT_MAX_ENTRIES / 4,
            reserved_for_us: DEFAULT_MAX_ENTRIES / 16,
        }
    }
}

/// Why the zone refused a registration or a gossip message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ZoneError {
    /// A name outside our domain (Weave logs and ignores these registrations).
    #[error("Ignoring registration {hostname} {addr} {container} (not a subdomain of {domain})")]
    NotInDomain {
        /// The name, made fully qualified.
        hostname: String,
        /// The address.
        addr: Ipv4Addr,
        /// The container.
        container: String,
        /// Our domain.
        domain: String,
    },
    /// A name that is not a valid DNS name.
    #[error("invalid hostname {hostname:?}: {reason}")]
    BadHostname {
        /// The name (cut to a bounded length).
        hostname: String,
        /// What is wrong with it.
        reason: HostnameError,
    },
    /// A container id longer than [`MAX_CONTAINER_ID`].
    #[error("container id of {0} bytes (at most {MAX_CONTAINER_ID})")]
    ContainerIdTooLong(usize),
    /// Gossip whose timestamp is too far from our clock (Weave's text; Weave closes the
    /// connection).
    #[error("host clock skew of {skew}s exceeds {GOSSIP_WINDOW}s limit")]
    ClockSkew {
        /// Their timestamp minus our clock, in seconds.
        skew: i64,
    },
    /// One peer would hold more entries than [`ZoneConfig::max_per_peer`].
    #[error("DNS entries of {peer}: {have} held, {adding} more would exceed {max}")]
    PeerFull {
        /// The origin.
        peer: PeerName,
        /// Its entries held.
        have: usize,
        /// Entries the message would add.
        adding: usize,
        /// The cap.
        max: usize,
    },
    /// The zone would hold more than its cap.
    #[error("DNS zone full: {have} entries, {adding} more would exceed {max}")]
    Full {
        /// Entries held.
        have: usize,
        /// Entries the operation would add.
        adding: usize,
        /// The cap.
        max: usize,
    },
    /// A received entry out of bounds (see [`weft_wire::dns::Entry::check`]).
    #[error(transparent)]
    Entry(#[from] weft_wire::dns::GossipError),
}

/// Where an entry sits: Weave's storage order, then the exact hostname.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Key {
    lower: String,
    origin: PeerName,
    container_id: String,
    addr: Ipv4Addr,
    hostname: String,
}

impl Key {
    fn of(e: &Entry) -> Self {
        Self {
            lower: e.hostname.to_ascii_lowercase(),
            origin: e.origin,
            container_id: e.container_id.clone(),
            addr: e.addr,
            hostname: e.hostname.clone(),
        }
    }

    fn entry(&self, s: State) -> Entry {
        Entry {
            container_id: self.container_id.clone(),
            origin: self.origin,
            addr: self.addr,
            hostname: self.hostname.clone(),
            version: s.version,
            tombstone: s.tombstone,
        }
    }
}

/// What changes about an entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct State {
    version: i64,
    tombstone: i64,
}

impl State {
    /// Weave's `Entry.merge`: a higher version wins, at equal versions the later tombstone;
    /// true if `self` changed.
    fn merge(&mut self, other: Self) -> bool {
        if other.version > self.version
            || (other.version == self.version && other.tombstone > self.tombstone)
        {
            *self = other;
            return true;
        }
        false
    }

    /// Weave's `Entry.tombstone`: true if it was live.
    fn tombstone(&mut self, now: i64) -> bool {
        if self.tombstone > 0 {
            return false;
        }
        self.tombstone = now;
        self.version = self.version.saturating_add(1);
        true
    }
}

fn state(e: &Entry) -> State {
    State {
        version: e.version,
        tombstone: e.tombstone,
    }
}

/// What a received gossip message did ([`Zone::receive`]).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Received {
    /// Entries that were new or changed ours: what `OnGossip` relays to neighbours.
    pub new: Vec<Entry>,
    /// Entries claiming our origin that we corrected (resurrection guard): to broadcast.
    pub overridden: Vec<Entry>,
    /// The received entries after filtering and correction: what `OnGossipBroadcast` returns.
    pub accepted: Vec<Entry>,
}

/// The mesh's DNS entries.
#[derive(Debug, Clone)]
pub struct Zone {
    ourself: PeerName,
    domain: String,
    max_entries: usize,
    max_per_peer: usize,
    reserved_for_us: usize,
    entries: BTreeMap<Key, State>,
    /// The keys of `entries` by address, for reverse lookups (a PTR query then costs the
    /// entries of one address, not a walk of the zone).
    by_addr: HashMap<Ipv4Addr, BTreeSet<Key>>,
    /// How many entries each origin has in `entries`.
    per_origin: HashMap<PeerName, usize>,
    known: BTreeSet<PeerName>,
}

/// `name` with a final dot (Go's `dns.Fqdn`).
pub fn fqdn(name: &str) -> String {
    if name.ends_with('.') {
        name.to_string()
    } else {
        format!("{name}.")
    }
}

/// Whether `child` is `parent` or under it, label by label, ignoring case (Go's
/// `dns.IsSubDomain`); both fully qualified.
pub fn is_subdomain(parent: &str, child: &str) -> bool {
    let (p, c) = (parent.as_bytes(), child.as_bytes());
    if parent == "." {
        return true;
    }
    if c.len() < p.len() {
        return false;
    }
    let cut = c.len() - p.len();
    let tail_matches = c.get(cut..).is_some_and(|t| t.eq_ignore_ascii_case(p));
    tail_matches && (cut == 0 || c.get(cut - 1) == Some(&b'.'))
}

impl Zone {
    /// An empty zone; only we are known until [`Zone::set_known_peers`].
    pub fn new(config: ZoneConfig) -> Self {
        Self {
            ourself: config.ourself,
            domain: fqdn(&config.domain),
            max_entries: config.max_entries,
            max_per_peer: config.max_per_peer,
            reserved_for_us: config.reserved_for_us,
            entries: BTreeMap::new(),
            by_addr: HashMap::new(),
            per_origin: HashMap::new(),
            known: BTreeSet::new(),
        }
    }

    /// Adds a new entry, keeping the indexes in step.
    fn insert(&mut self, k: Key, s: State) {
        self.by_addr.entry(k.addr).or_default().insert(k.clone());
        *self.per_origin.entry(k.origin).or_default() += 1;
        self.entries.insert(k, s);
    }

    /// Removes every entry `drop` selects, keeping the indexes in step; returns how many went.
    fn remove_where(&mut self, drop: impl Fn(&Key, &State) -> bool) -> usize {
        let gone: Vec<Key> = self
            .entries
            .iter()
            .filter(|(k, s)| drop(k, s))
            .map(|(k, _)| k.clone())
            .collect();
        for k in &gone {
            self.entries.remove(k);
            if let Some(set) = self.by_addr.get_mut(&k.addr) {
                set.remove(k);
                if set.is_empty() {
                    self.by_addr.remove(&k.addr);
                }
            }
            if let Some(n) = self.per_origin.get_mut(&k.origin) {
                *n -= 1;
                if *n == 0 {
                    self.per_origin.remove(&k.origin);
                }
            }
        }
        gone.len()
    }

    /// Our peer name.
    pub fn ourself(&self) -> PeerName {
        self.ourself
    }

    /// The domain, fully qualified, as configured.
    pub fn domain(&self) -> &str {
        &self.domain
    }

    /// Entries held, live and tombstoned.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the zone holds no entry.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Every entry, tombstones included, in storage order (for `GET /name` and status).
    pub fn entries(&self) -> impl Iterator<Item = Entry> + '_ {
        self.entries.iter().map(|(k, s)| k.entry(*s))
    }

    /// The peers currently in the topology (we are always known): gossiped entries of other
    /// origins are dropped. Call whenever the topology changes; entries of peers that left are
    /// removed with [`Zone::peer_gone`], as Weave does on topology GC.
    pub fn set_known_peers(&mut self, peers: BTreeSet<PeerName>) {
        self.known = peers;
    }

    fn is_known(&self, peer: PeerName) -> bool {
        peer == self.ourself || self.known.contains(&peer)
    }

    /// Registers `fqdn` (made fully qualified) → `addr` for `container` as ours (HTTP
    /// `PUT /name/…`, container start), and returns the one-entry message to broadcast. A new
    /// entry starts at version 0; re-adding a tombstoned one revives it at version + 1;
    /// re-adding a live one changes nothing (and is broadcast again, as Weave does). Names
    /// outside the domain are refused with Weave's log text.
    pub fn add(
        &mut self,
        fqdn_name: &str,
        container: &str,
        addr: Ipv4Addr,
        now: i64,
    ) -> Result<GossipData, ZoneError> {
        let hostname = fqdn(fqdn_name);
        if !is_subdomain(&self.domain, &hostname) {
            return Err(ZoneError::NotInDomain {
                hostname: weft_wire::bounded(&hostname),
                addr,
                container: weft_wire::bounded(container),
                domain: self.domain.clone(),
            });
        }
        check_hostname(&hostname).map_err(|reason| ZoneError::BadHostname {
            hostname: weft_wire::bounded(&hostname),
            reason,
        })?;
        if container.len() > MAX_CONTAINER_ID {
            return Err(ZoneError::ContainerIdTooLong(container.len()));
        }
        let key = Key::of(&Entry {
            container_id: container.to_string(),
            origin: self.ourself,
            addr,
            hostname,
            version: 0,
            tombstone: 0,
        });
        let s = match self.entries.get_mut(&key) {
            Some(s) => {
                if s.tombstone > 0 {
                    s.tombstone = 0;
                    s.version = s.version.saturating_add(1);
                }
                *s
            }
            None => {
                self.check_room(1, self.max_entries)?;
                let s = State {
                    version: 0,
                    tombstone: 0,
                };
                self.insert(key.clone(), s);
                s
            }
        };
        Ok(GossipData {
            timestamp: now,
            entries: vec![key.entry(s)],
        })
    }

    /// Whether `adding` more entries fit under `max`.
    fn check_room(&self, adding: usize, max: usize) -> Result<(), ZoneError> {
        if self.entries.len().saturating_add(adding) > max {
            return Err(ZoneError::Full {
                have: self.entries.len(),
                adding,
                max,
            });
        }
        Ok(())
    }

    /// Tombstones our live entries matching every part given (`None` is Weave's `*`): the
    /// container, the address, the hostname (made fully qualified, then compared exactly:
    /// case-sensitive), as HTTP `DELETE /name/…` does. Returns what to broadcast, or `None` if
    /// nothing changed.
    pub fn tombstone(
        &mut self,
        container: Option<&str>,
        addr: Option<Ipv4Addr>,
        hostname: Option<&str>,
        now: i64,
    ) -> Option<GossipData> {
        let ourself = self.ourself;
        let hostname = hostname.map(fqdn);
        let hostname = hostname.as_deref();
        self.tombstone_where(now, |k| {
            k.origin == ourself
                && container.is_none_or(|c| k.container_id == c)
                && addr.is_none_or(|a| k.addr == a)
                && hostname.is_none_or(|h| k.hostname == h)
        })
    }

    /// Tombstones all our entries for `container` (it died). Returns what to broadcast.
    pub fn tombstone_container(&mut self, container: &str, now: i64) -> Option<GossipData> {
        self.tombstone(Some(container), None, None, now)
    }

    fn tombstone_where(&mut self, now: i64, f: impl Fn(&Key) -> bool) -> Option<GossipData> {
        let mut changed = Vec::new();
        for (k, s) in &mut self.entries {
            if f(k) && s.tombstone(now) {
                changed.push(k.entry(*s));
            }
        }
        (!changed.is_empty()).then_some(GossipData {
            timestamp: now,
            entries: changed,
        })
    }

    /// Deletes (not tombstones) every entry of `peer`, which topology GC removed; full gossip
    /// restores them if it comes back. Returns how many went.
    pub fn peer_gone(&mut self, peer: PeerName) -> usize {
        self.remove_where(|k, _| k.origin == peer)
    }

    /// Purges tombstones made more than [`TOMBSTONE_TIMEOUT`] ago (Weave sweeps every 30
    /// minutes; calling more often only purges sooner). Returns how many went.
    pub fn purge_tombstones(&mut self, now: i64) -> usize {
        self.remove_where(|_, s| {
            s.tombstone > 0 && now.saturating_sub(s.tombstone) > TOMBSTONE_TIMEOUT
        })
    }

    /// When the next tombstone becomes purgeable (Unix seconds), if any.
    pub fn next_purge(&self) -> Option<i64> {
        self.entries
            .values()
            .filter(|s| s.tombstone > 0)
            .map(|s| s.tombstone.saturating_add(TOMBSTONE_TIMEOUT + 1))
            .min()
    }

    /// The full state for periodic gossip and new connections: every entry, tombstones
    /// included, stamped `now`.
    pub fn gossip(&self, now: i64) -> GossipData {
        GossipData {
            timestamp: now,
            entries: self.entries().collect(),
        }
    }

    /// Merges received gossip (Weave's `receiveGossip`, spec §5.4): refuses it whole if its
    /// clock is more than [`GOSSIP_WINDOW`] from `now`, if an entry is out of bounds, or if it
    /// would grow the zone past its cap; drops entries of origins not in the topology; corrects
    /// entries claiming our origin (a newer or different copy of one we hold gets ours at their
    /// version + 1; one we do not hold is tombstoned); then merges entry by entry.
    pub fn receive(&mut self, data: GossipData, now: i64) -> Result<Received, ZoneError> {
        let skew = data.timestamp.saturating_sub(now);
        if !(-GOSSIP_WINDOW..=GOSSIP_WINDOW).contains(&skew) {
            return Err(ZoneError::ClockSkew { skew });
        }
        for e in &data.entries {
            e.check()?;
        }
        let mut incoming: BTreeMap<Key, State> = BTreeMap::new();
        for e in data.entries.iter().filter(|e| self.is_known(e.origin)) {
            let s = incoming.entry(Key::of(e)).or_insert(state(e));
            // A message naming an entry twice counts as its best copy.
            s.merge(state(e));
        }
        let mut adding: HashMap<PeerName, usize> = HashMap::new();
        for k in incoming.keys().filter(|k| !self.entries.contains_key(k)) {
            *adding.entry(k.origin).or_default() += 1;
        }
        for (&peer, &n) in adding.iter().filter(|(&p, _)| p != self.ourself) {
            let have = self.per_origin.get(&peer).copied().unwrap_or(0);
            if have.saturating_add(n) > self.max_per_peer {
                return Err(ZoneError::PeerFull {
                    peer,
                    have,
                    adding: n,
                    max: self.max_per_peer,
                });
            }
        }
        let total: usize = adding.values().sum();
        self.check_room(total, self.max_entries.saturating_sub(self.reserved_for_us))?;

        let mut out = Received::default();
        for (k, mut theirs) in incoming {
            if k.origin == self.ourself {
                match self.entries.get(&k) {
                    Some(ours) => {
                        if ours.version < theirs.version
                            || (ours.version == theirs.version
                                && ours.tombstone != theirs.tombstone)
                        {
                            theirs = State {
                                version: theirs.version.saturating_add(1),
                                tombstone: ours.tombstone,
                            };
                            out.overridden.push(k.entry(theirs));
                        }
                    }
                    None => {
                        if theirs.tombstone(now) {
                            out.overridden.push(k.entry(theirs));
                        }
                    }
                }
            }
            out.accepted.push(k.entry(theirs));
            let changed = match self.entries.get_mut(&k) {
                Some(ours) => ours.merge(theirs),
                None => {
                    self.insert(k.clone(), theirs);
                    true
                }
            };
            if changed {
                out.new.push(k.entry(theirs));
            }
        }
        Ok(out)
    }

    /// The addresses of the live entries named `hostname` (fully qualified), compared without
    /// case, in storage order; duplicates kept.
    pub fn lookup(&self, hostname: &str) -> Vec<Ipv4Addr> {
        let lower = hostname.to_ascii_lowercase();
        let start = Key {
            lower: lower.clone(),
            origin: PeerName(0),
            container_id: String::new(),
            addr: Ipv4Addr::UNSPECIFIED,
            hostname: String::new(),
        };
        self.entries
            .range(start..)
            .take_while(|(k, _)| k.lower == lower)
            .filter(|(_, s)| s.tombstone == 0)
            .map(|(k, _)| k.addr)
            .collect()
    }

    /// The hostname of the first live entry (in storage order) with address `addr`, for PTR.
    pub fn reverse_lookup(&self, addr: Ipv4Addr) -> Option<&str> {
        self.by_addr
            .get(&addr)?
            .iter()
            .find(|k| self.entries.get(k).is_some_and(|s| s.tombstone == 0))
            .map(|k| k.hostname.as_str())
    }
}
