//! The payload of Weave Net's DNS gossip channel (`nameserver`): one gob `GossipData` value,
//! declared with the gob mapping ([`gob_struct!`](crate::gob_struct)), the same for gossip and
//! broadcast messages (unicasts are ignored by Weave).
//!
//! `GossipData{Timestamp int64, Entries}` embeds `Entries` (`[]Entry`), which gob sends as a
//! field named `Entries` of a slice type named `Entries`. Entries go out in Weave's gossip order
//! (hostname case-sensitively, then origin, container and address), so our bytes are Go's byte
//! for byte (`tests/vectors.rs`, "DNS GossipData").
//!
//! Decoding is the mapping's (every count and length checked against the bytes present first)
//! plus the bounds a zone needs from a hostile peer, each a typed [`GossipError`]: at most
//! [`MAX_ENTRIES`] entries; every hostname a valid DNS name ([`check_hostname`]: 1 to
//! [`MAX_HOSTNAME`] bytes of printable ASCII, labels of 1 to 63 bytes); container ids of at
//! most [`MAX_CONTAINER_ID`] bytes; versions and tombstones not negative and versions below
//! [`MAX_VERSION`] (so `Version + 1` never overflows). Go accepts all of these; a Weave peer
//! never sends them (its names come through `dns.Fqdn` and a domain check, and versions grow by
//! one per change).
//!
//! An entry without a hostname is refused while the values are still gob values, before the
//! entries are built: an entry then takes at least four input bytes, which keeps a decoded
//! entry (about 80 bytes) within the crate's heap bound per input byte.

use std::net::Ipv4Addr;

use crate::error::{bounded, DecodeError};
use crate::gob::mapping::{self, GobKind, Int, Kind, Str, Uint};
use crate::gob::{Encoder, Type, Value, FIRST_USER_TYPE_ID};
use crate::gob_struct;
use crate::peer::PeerName;

/// The gossip channel these payloads travel on (Weave's `router.NewGossip("nameserver", …)`).
pub const CHANNEL: &str = "nameserver";

/// Most type definitions a payload may carry: Go's stream defines 3.
pub const MAX_TYPES: usize = 8;

/// Most entries one payload may carry (a whole zone goes in one gossip message).
pub const MAX_ENTRIES: usize = 65_536;

/// Longest hostname accepted, in bytes of its text form (a DNS name is at most 255 bytes).
pub const MAX_HOSTNAME: usize = 255;

/// Longest DNS label, in bytes.
pub const MAX_LABEL: usize = 63;

/// Longest container id accepted (Docker's are 64 hex digits; `weave:extern` is shorter).
pub const MAX_CONTAINER_ID: usize = 255;

/// Versions must stay below this (one per change; far beyond any real entry's).
pub const MAX_VERSION: i64 = 1 << 53;

const CONTEXT: &str = "DNS GossipData";

/// Go's `nameserver.Entry`: one name → address registration.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Entry {
    /// The container (or `weave:extern`) the name was registered for.
    pub container_id: String,
    /// The peer that registered it (the only one that may tombstone it).
    pub origin: PeerName,
    /// The address.
    pub addr: Ipv4Addr,
    /// The FQDN as supplied (case preserved).
    pub hostname: String,
    /// Bumped on each change (tombstone, revival, override).
    pub version: i64,
    /// Unix seconds of the deletion; 0 while the entry is live.
    pub tombstone: i64,
}

/// Go's `nameserver.GossipData`: the sender's clock and a set of entries.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct GossipData {
    /// The sender's clock, Unix seconds (receivers refuse more than 900 s of skew).
    pub timestamp: i64,
    /// The entries.
    pub entries: Vec<Entry>,
}

/// Why a DNS gossip payload was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum GossipError {
    /// Not a well-formed `GossipData` gob stream.
    #[error(transparent)]
    Decode(#[from] DecodeError),
    /// More entries than [`MAX_ENTRIES`].
    #[error("DNS gossip with {count} entries (at most {max})")]
    TooManyEntries {
        /// Entries in the payload.
        count: usize,
        /// The limit.
        max: usize,
    },
    /// A hostname that is not a valid DNS name.
    #[error("DNS entry with invalid hostname {hostname:?}: {reason}")]
    BadHostname {
        /// The hostname, cut by [`bounded`].
        hostname: String,
        /// What is wrong with it.
        reason: HostnameError,
    },
    /// A container id longer than [`MAX_CONTAINER_ID`].
    #[error("DNS entry with a container id of {0} bytes (at most {MAX_CONTAINER_ID})")]
    ContainerIdTooLong(usize),
    /// A negative version or one of [`MAX_VERSION`] or more.
    #[error("DNS entry with version {0} out of range")]
    BadVersion(i64),
    /// A negative tombstone.
    #[error("DNS entry with negative tombstone {0}")]
    BadTombstone(i64),
}

/// What makes a hostname invalid ([`check_hostname`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HostnameError {
    /// No name at all (or only the root).
    #[error("empty")]
    Empty,
    /// Longer than [`MAX_HOSTNAME`] bytes.
    #[error("{0} bytes long (at most {MAX_HOSTNAME})")]
    TooLong(usize),
    /// A label (between dots) that is empty or longer than [`MAX_LABEL`].
    #[error("a label of {0} bytes (1 to {MAX_LABEL})")]
    BadLabel(usize),
    /// A byte that is not printable ASCII, a space, or a backslash (an escape in DNS text).
    #[error("invalid character {0:#04x}")]
    BadChar(u8),
}

/// Checks that `hostname` is a DNS name weft can store and answer with: 1 to [`MAX_HOSTNAME`]
/// bytes of printable ASCII other than space and `\`, labels of 1 to [`MAX_LABEL`] bytes, an
/// optional final dot.
pub fn check_hostname(hostname: &str) -> Result<(), HostnameError> {
    if hostname.len() > MAX_HOSTNAME {
        return Err(HostnameError::TooLong(hostname.len()));
    }
    if let Some(&b) = hostname
        .as_bytes()
        .iter()
        .find(|&&b| !(0x21..=0x7e).contains(&b) || b == b'\\')
    {
        return Err(HostnameError::BadChar(b));
    }
    let body = hostname.strip_suffix('.').unwrap_or(hostname);
    if body.is_empty() {
        return Err(HostnameError::Empty);
    }
    match body
        .split('.')
        .find(|l| l.is_empty() || l.len() > MAX_LABEL)
    {
        Some(l) => Err(HostnameError::BadLabel(l.len())),
        None => Ok(()),
    }
}

impl Entry {
    /// Weave's gossip order: hostname (case-sensitive), origin, container id, address.
    pub fn gossip_order(&self, other: &Self) -> std::cmp::Ordering {
        (&self.hostname, self.origin, &self.container_id, self.addr).cmp(&(
            &other.hostname,
            other.origin,
            &other.container_id,
            other.addr,
        ))
    }

    /// Checks the bounds a received entry must keep (see the module docs).
    pub fn check(&self) -> Result<(), GossipError> {
        check_hostname(&self.hostname).map_err(|reason| GossipError::BadHostname {
            hostname: bounded(&self.hostname),
            reason,
        })?;
        if self.container_id.len() > MAX_CONTAINER_ID {
            return Err(GossipError::ContainerIdTooLong(self.container_id.len()));
        }
        if !(0..MAX_VERSION).contains(&self.version) {
            return Err(GossipError::BadVersion(self.version));
        }
        if self.tombstone < 0 {
            return Err(GossipError::BadTombstone(self.tombstone));
        }
        Ok(())
    }
}

impl GossipData {
    /// The gossip (or broadcast) payload: entries in Weave's gossip order, whatever their order
    /// here.
    pub fn encode(&self) -> Vec<u8> {
        let mut sorted = self.clone();
        sorted.entries.sort_by(Entry::gossip_order);
        let mut out = Vec::new();
        encode_from(&sorted, FIRST_USER_TYPE_ID, &mut out);
        out
    }

    /// The data in a gossip or broadcast payload: exactly one `GossipData` value, every entry
    /// within bounds ([`Entry::check`]), at most [`MAX_ENTRIES`] of them. Entries keep the
    /// payload's order.
    pub fn decode(payload: &[u8]) -> Result<Self, GossipError> {
        let data = mapping::decode_one::<Self, _>(payload, MAX_TYPES, CONTEXT)?;
        if data.entries.len() > MAX_ENTRIES {
            return Err(GossipError::TooManyEntries {
                count: data.entries.len(),
                max: MAX_ENTRIES,
            });
        }
        for e in &data.entries {
            e.check()?;
        }
        Ok(data)
    }
}

/// Appends `v` as a fresh gob stream whose first type id is `first` (Go's ids are
/// process-wide; tests reproduce a Go process's).
pub(crate) fn encode_from(v: &GossipData, first: i64, out: &mut Vec<u8>) {
    // Cannot fail: the values are built by the mapping from its own types.
    let ok =
        mapping::encode::<GossipData, _>(&mut Encoder::with_first_type_id(first), v, out).is_ok();
    debug_assert!(ok, "DNS values match their types");
}

gob_struct! {
    GossipData as "GossipData" {
        "Timestamp" => timestamp: Int,
        "Entries" => entries: EntryList as "Entries",
    }
}

gob_struct! {
    Entry as "Entry" {
        "ContainerID" => container_id: Str,
        "Origin" => origin: Uint,
        "Addr" => addr: Uint,
        "Hostname" => hostname: Str,
        "Version" => version: Int,
        "Tombstone" => tombstone: Int,
    }
}

/// `Entries` (`[]Entry`): a slice kind that refuses an entry without a hostname before it
/// builds any entry (see the module docs).
#[derive(Debug)]
pub enum EntryList {}

impl GobKind for EntryList {
    fn gob_type() -> Type {
        Type::slice(Entry::gob_type())
    }
}

impl Kind<Vec<Entry>> for EntryList {
    fn to_value(v: &Vec<Entry>) -> Value {
        Value::Slice(v.iter().map(<Entry as Kind<Entry>>::to_value).collect())
    }

    fn from_value(v: Value, context: &'static str) -> Result<Vec<Entry>, DecodeError> {
        let Value::Slice(items) = v else {
            return Err(mapping::mismatch(context, "slice", &v));
        };
        let named = |item: &Value| {
            item.field("Hostname")
                .and_then(Value::as_str)
                .is_some_and(|h| !h.is_empty())
        };
        if !items.iter().all(named) {
            return Err(DecodeError::Missing {
                context: "DNS Entry",
                what: "Hostname",
            });
        }
        let mut out = Vec::with_capacity(items.len());
        for item in items {
            out.push(<Entry as Kind<Entry>>::from_value(item, context)?);
        }
        Ok(out)
    }

    fn absent(_: &'static str) -> Result<Vec<Entry>, DecodeError> {
        Ok(Vec::new())
    }
}

// Tests may unwrap: a panic is how they fail.
#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn sample() -> GossipData {
        GossipData {
            timestamp: 1_700_000_000,
            entries: vec![
                Entry {
                    container_id: "abc123".into(),
                    origin: PeerName(0xaabb_ccdd_ee01),
                    addr: Ipv4Addr::new(10, 32, 0, 1),
                    hostname: "web.weave.local.".into(),
                    version: 0,
                    tombstone: 0,
                },
                Entry {
                    container_id: "def456".into(),
                    origin: PeerName(0xaabb_ccdd_ee01),
                    addr: Ipv4Addr::new(10, 32, 0, 2),
                    hostname: "db.weave.local.".into(),
                    version: 2,
                    tombstone: 1_700_000_001,
                },
            ],
        }
    }

    #[test]
    fn encode_sorts_in_gossip_order() {
        let d = GossipData::decode(&sample().encode()).unwrap();
        let names: Vec<_> = d.entries.iter().map(|e| e.hostname.as_str()).collect();
        assert_eq!(names, ["db.weave.local.", "web.weave.local."]);
        // Case-sensitive: upper case sorts first.
        let mut s = sample();
        s.entries[0].hostname = "Zed.weave.local.".into();
        let d = GossipData::decode(&s.encode()).unwrap();
        assert_eq!(d.entries[0].hostname, "Zed.weave.local.");
    }

    #[test]
    fn hostnames_are_checked() {
        assert_eq!(check_hostname("a.weave.local."), Ok(()));
        assert_eq!(check_hostname("a"), Ok(()));
        assert_eq!(check_hostname(""), Err(HostnameError::Empty));
        assert_eq!(check_hostname("."), Err(HostnameError::Empty));
        assert_eq!(check_hostname("a..b."), Err(HostnameError::BadLabel(0)));
        let long_label = format!("{}.local.", "x".repeat(64));
        assert_eq!(
            check_hostname(&long_label),
            Err(HostnameError::BadLabel(64))
        );
        let long = format!("{}.", vec!["y".repeat(63); 4].join("."));
        assert_eq!(long.len(), 256);
        assert_eq!(check_hostname(&long), Err(HostnameError::TooLong(256)));
        assert_eq!(check_hostname("a b."), Err(HostnameError::BadChar(b' ')));
        assert_eq!(check_hostname("a\\.b."), Err(HostnameError::BadChar(b'\\')));
        assert_eq!(check_hostname("é."), Err(HostnameError::BadChar(0xc3)));
    }

    #[test]
    fn hostile_entries_are_typed_errors() {
        let with = |f: &dyn Fn(&mut Entry)| {
            let mut s = sample();
            f(&mut s.entries[0]);
            GossipData::decode(&s.encode())
        };
        assert!(matches!(
            with(&|e| e.hostname = "x".repeat(300)),
            Err(GossipError::BadHostname {
                reason: HostnameError::TooLong(300),
                ..
            })
        ));
        assert!(matches!(
            with(&|e| e.hostname = "a\u{7}.weave.local.".into()),
            Err(GossipError::BadHostname {
                reason: HostnameError::BadChar(7),
                ..
            })
        ));
        assert_eq!(
            with(&|e| e.hostname = String::new()),
            Err(GossipError::Decode(DecodeError::Missing {
                context: "DNS Entry",
                what: "Hostname"
            }))
        );
        assert_eq!(
            with(&|e| e.container_id = "c".repeat(256)),
            Err(GossipError::ContainerIdTooLong(256))
        );
        assert_eq!(with(&|e| e.version = -1), Err(GossipError::BadVersion(-1)));
        assert_eq!(
            with(&|e| e.version = MAX_VERSION),
            Err(GossipError::BadVersion(MAX_VERSION))
        );
        assert_eq!(
            with(&|e| e.tombstone = -5),
            Err(GossipError::BadTombstone(-5))
        );
        assert!(matches!(
            with(&|e| e.origin = PeerName(1 << 50)),
            Err(GossipError::Decode(DecodeError::PeerNameTooWide(_)))
        ));
        let mut many = sample();
        many.entries = vec![many.entries[0].clone(); MAX_ENTRIES + 1];
        assert_eq!(
            GossipData::decode(&many.encode()),
            Err(GossipError::TooManyEntries {
                count: MAX_ENTRIES + 1,
                max: MAX_ENTRIES
            })
        );
        assert!(GossipData::decode(&[]).is_err());
        let mut trailing = sample().encode();
        trailing.push(0);
        assert!(matches!(
            GossipData::decode(&trailing),
            Err(GossipError::Decode(DecodeError::TrailingBytes { .. }))
        ));
    }

    fn arb_entry() -> impl Strategy<Value = Entry> {
        (
            "[a-z0-9]{0,12}",
            0u64..=PeerName::MAX.0,
            any::<u32>(),
            "[A-Za-z0-9-]{1,10}(\\.[a-z]{1,5}){0,3}\\.?",
            0..MAX_VERSION,
            prop_oneof![Just(0i64), 0..i64::MAX],
        )
            .prop_map(
                |(container_id, origin, addr, hostname, version, tombstone)| Entry {
                    container_id,
                    origin: PeerName(origin),
                    addr: Ipv4Addr::from(addr),
                    hostname,
                    version,
                    tombstone,
                },
            )
    }

    proptest! {
        #[test]
        fn data_round_trips(timestamp in any::<i64>(), entries in prop::collection::vec(arb_entry(), 0..6)) {
            let d = GossipData { timestamp, entries };
            let mut sorted = d.clone();
            sorted.entries.sort_by(Entry::gossip_order);
            prop_assert_eq!(GossipData::decode(&d.encode()), Ok(sorted));
        }

        #[test]
        fn mutated_payloads_never_panic(at in any::<prop::sample::Index>(), b in any::<u8>()) {
            let mut bytes = sample().encode();
            let i = at.index(bytes.len());
            if let Some(x) = bytes.get_mut(i) { *x = b; }
            let _ = GossipData::decode(&bytes);
        }
    }
}
