//! weft's own IPAM ring deltas: the payload of the `weft-ipam` gossip channel, broadcast only
//! when every peer the router knows advertised the `WeftIpam` handshake feature (Weave Net
//! peers keep receiving the `IPallocation` channel's full `gossipState`).
//!
//! Weave Net broadcasts the whole ring on every change, so in a mesh of N peers one donation
//! costs N entries to each of N peers. A [`RingDelta`] carries only the entries that changed,
//! each with the tokens that bound it in the sender's ring (`prev`, `next`): the receiver merges
//! them with the ring's usual rules and checks that every entry it took sits between the same
//! tokens in its own ring; if not, it lacks an earlier change (a gap) and asks for the full
//! state instead. A hash of the ring's seeds stands in for the seed list, which can be as long
//! as the ring.
//!
//! The format is hand-written and weft-only (no Go peer reads it), big-endian:
//! ```text
//! u8 kind (1 = ring delta)
//! u32 start  u32 end  u64 seeds_hash
//! u16 n, n × entry:  u32 token  name[6]  u32 version  u32 free  u32 prev  u32 next
//! u16 m, m × nick:   name[6]  u8 len  nickname (UTF-8)
//! ```
//! Decoding is strict (unknown kind, the zero peer name, bad UTF-8, counts above
//! [`MAX_ENTRIES`] / [`MAX_NICKNAMES`], truncation and trailing bytes are errors) and never
//! panics; what it allocates is bounded by the bytes present. Whether the entries make sense
//! (order, ranges, free counts, versions) is the ring's to judge when it merges them.

use crate::peer::{PeerName, PEER_NAME_LEN};

/// The gossip channel these payloads travel on.
pub const CHANNEL: &str = "weft-ipam";
/// The handshake feature a weft peer advertises; its value is the format version.
pub const FEATURE: &str = "WeftIpam";
/// The format version this module speaks.
pub const FEATURE_VERSION: &str = "1";

/// Most entries one delta may carry; a change touching more goes out as the full state.
pub const MAX_ENTRIES: usize = 1024;
/// Most nicknames one delta may carry (one per peer its entries name, at most).
pub const MAX_NICKNAMES: usize = MAX_ENTRIES;

const KIND_RING_DELTA: u8 = 1;
const ENTRY_LEN: usize = 4 + PEER_NAME_LEN + 4 + 4 + 4 + 4;

/// Why a payload could not be decoded or encoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IpamDeltaError {
    /// The payload ended inside an item.
    #[error("weft-ipam: truncated while reading {0}")]
    Truncated(&'static str),
    /// The first byte is not a known message kind.
    #[error("weft-ipam: unknown message kind {0}")]
    UnknownKind(u8),
    /// More items than a delta may carry.
    #[error("weft-ipam: {count} {what}, more than {max}")]
    TooMany {
        /// What was counted.
        what: &'static str,
        /// How many.
        count: usize,
        /// The bound.
        max: usize,
    },
    /// A nickname that is not UTF-8.
    #[error("weft-ipam: nickname is not UTF-8")]
    NotUtf8,
    /// A peer name of all zeros (Weave's "unknown peer").
    #[error("weft-ipam: the unknown peer name 00:00:00:00:00:00")]
    UnknownPeer,
    /// Bytes after the last item.
    #[error("weft-ipam: {0} bytes of trailing garbage")]
    Trailing(usize),
    /// A nickname longer than 255 bytes (never produced from a valid state).
    #[error("weft-ipam: nickname too long to encode")]
    TooLong,
}

/// One changed ring entry with the tokens around it in the sender's ring.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    /// First address of the entry's range.
    pub token: u32,
    /// Its owner.
    pub peer: PeerName,
    /// Its version.
    pub version: u32,
    /// Free addresses its owner reported.
    pub free: u32,
    /// The token before it in the sender's ring (wrapping; its own token when alone).
    pub prev: u32,
    /// The token after it in the sender's ring (wrapping; its own token when alone).
    pub next: u32,
}

/// One `weft-ipam` payload: the entries of the sender's ring that one change touched.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RingDelta {
    /// Universe start.
    pub start: u32,
    /// Universe end (exclusive).
    pub end: u32,
    /// Hash of the ring's seeds (see the ring's `seeds_hash`).
    pub seeds_hash: u64,
    /// Changed entries, in token order.
    pub entries: Vec<Entry>,
    /// Nicknames of peers the entries name.
    pub nicknames: Vec<(PeerName, String)>,
}

impl RingDelta {
    /// Encodes the delta.
    ///
    /// # Errors
    /// [`IpamDeltaError::TooMany`] beyond the bounds, [`IpamDeltaError::TooLong`] for a
    /// nickname over 255 bytes.
    pub fn encode(&self) -> Result<Vec<u8>, IpamDeltaError> {
        check_count("entries", self.entries.len(), MAX_ENTRIES)?;
        check_count("nicknames", self.nicknames.len(), MAX_NICKNAMES)?;
        let mut out = Vec::with_capacity(19 + self.entries.len() * ENTRY_LEN);
        out.push(KIND_RING_DELTA);
        out.extend_from_slice(&self.start.to_be_bytes());
        out.extend_from_slice(&self.end.to_be_bytes());
        out.extend_from_slice(&self.seeds_hash.to_be_bytes());
        // Both counts were checked against bounds below 65536.
        out.extend_from_slice(&(self.entries.len() as u16).to_be_bytes());
        for e in &self.entries {
            out.extend_from_slice(&e.token.to_be_bytes());
            out.extend_from_slice(&e.peer.to_bytes());
            for v in [e.version, e.free, e.prev, e.next] {
                out.extend_from_slice(&v.to_be_bytes());
            }
        }
        out.extend_from_slice(&(self.nicknames.len() as u16).to_be_bytes());
        for (peer, nick) in &self.nicknames {
            out.extend_from_slice(&peer.to_bytes());
            let n = u8::try_from(nick.len()).map_err(|_| IpamDeltaError::TooLong)?;
            out.push(n);
            out.extend_from_slice(nick.as_bytes());
        }
        Ok(out)
    }

    /// Decodes a payload.
    ///
    /// # Errors
    /// Any [`IpamDeltaError`] but `TooLong`.
    pub fn decode(b: &[u8]) -> Result<Self, IpamDeltaError> {
        let mut r = Cursor(b);
        let kind = r.array::<1>("kind")?[0];
        if kind != KIND_RING_DELTA {
            return Err(IpamDeltaError::UnknownKind(kind));
        }
        let start = u32::from_be_bytes(r.array("start")?);
        let end = u32::from_be_bytes(r.array("end")?);
        let seeds_hash = u64::from_be_bytes(r.array("seeds hash")?);
        let n = usize::from(u16::from_be_bytes(r.array("entry count")?));
        check_count("entries", n, MAX_ENTRIES)?;
        // Counts are bounded by the bytes present, so nothing is reserved on a lie.
        let mut entries = Vec::with_capacity(n.min(r.0.len() / ENTRY_LEN));
        for _ in 0..n {
            let token = u32::from_be_bytes(r.array("entry")?);
            let peer = r.peer()?;
            let [version, free, prev, next] =
                [(); 4].map(|()| r.array("entry").map(u32::from_be_bytes));
            entries.push(Entry {
                token,
                peer,
                version: version?,
                free: free?,
                prev: prev?,
                next: next?,
            });
        }
        let m = usize::from(u16::from_be_bytes(r.array("nickname count")?));
        check_count("nicknames", m, MAX_NICKNAMES)?;
        let mut nicknames = Vec::with_capacity(m.min(r.0.len() / (PEER_NAME_LEN + 1)));
        for _ in 0..m {
            let peer = r.peer()?;
            let len = usize::from(r.array::<1>("nickname")?[0]);
            let bytes = r.take(len, "nickname")?;
            let nick = std::str::from_utf8(bytes).map_err(|_| IpamDeltaError::NotUtf8)?;
            nicknames.push((peer, nick.to_owned()));
        }
        if !r.0.is_empty() {
            return Err(IpamDeltaError::Trailing(r.0.len()));
        }
        Ok(Self {
            start,
            end,
            seeds_hash,
            entries,
            nicknames,
        })
    }
}

fn check_count(what: &'static str, count: usize, max: usize) -> Result<(), IpamDeltaError> {
    if count > max {
        return Err(IpamDeltaError::TooMany { what, count, max });
    }
    Ok(())
}

/// The unread rest of a payload.
struct Cursor<'a>(&'a [u8]);

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], IpamDeltaError> {
        if self.0.len() < n {
            return Err(IpamDeltaError::Truncated(what));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn array<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], IpamDeltaError> {
        let head = self.take(N, what)?;
        head.try_into().map_err(|_| IpamDeltaError::Truncated(what))
    }

    fn peer(&mut self) -> Result<PeerName, IpamDeltaError> {
        let b = self.take(PEER_NAME_LEN, "peer name")?;
        match PeerName::from_bytes(b) {
            Some(p) if p != PeerName::UNKNOWN => Ok(p),
            _ => Err(IpamDeltaError::UnknownPeer),
        }
    }
}

// Tests may unwrap: a panic is how they fail.
#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn sample() -> RingDelta {
        RingDelta {
            start: 0x0a20_0000,
            end: 0x0a30_0000,
            seeds_hash: 0x0102_0304_0506_0708,
            entries: vec![
                Entry {
                    token: 0x0a20_0000,
                    peer: PeerName(1),
                    version: 7,
                    free: 96,
                    prev: 0x0a28_0000,
                    next: 0x0a20_0060,
                },
                Entry {
                    token: 0x0a20_0060,
                    peer: PeerName(2),
                    version: 0,
                    free: 32,
                    prev: 0x0a20_0000,
                    next: 0x0a28_0000,
                },
            ],
            nicknames: vec![(PeerName(2), "host-b".into())],
        }
    }

    #[test]
    fn ipam_delta_round_trip_and_layout() {
        let d = sample();
        let b = d.encode().unwrap();
        assert_eq!(b.len(), 1 + 4 + 4 + 8 + 2 + 2 * ENTRY_LEN + 2 + 6 + 1 + 6);
        assert_eq!(&b[..5], &[1, 0x0a, 0x20, 0, 0]);
        assert_eq!(RingDelta::decode(&b), Ok(d));
        let empty = RingDelta::default();
        assert_eq!(RingDelta::decode(&empty.encode().unwrap()), Ok(empty));
    }

    #[test]
    fn ipam_delta_refuses_bad_payloads() {
        let b = sample().encode().unwrap();
        for cut in 0..b.len() {
            assert!(
                matches!(
                    RingDelta::decode(&b[..cut]),
                    Err(IpamDeltaError::Truncated(_))
                ),
                "cut at {cut}"
            );
        }
        let mut kind = b.clone();
        kind[0] = 2;
        assert_eq!(
            RingDelta::decode(&kind),
            Err(IpamDeltaError::UnknownKind(2))
        );
        let mut trailing = b.clone();
        trailing.push(0);
        assert_eq!(
            RingDelta::decode(&trailing),
            Err(IpamDeltaError::Trailing(1))
        );
        // The first entry's peer name zeroed.
        let mut zero = b.clone();
        zero[23..29].fill(0);
        assert_eq!(RingDelta::decode(&zero), Err(IpamDeltaError::UnknownPeer));
        // A nickname that is not UTF-8.
        let mut utf = b.clone();
        let last = utf.len() - 1;
        utf[last] = 0xff;
        assert_eq!(RingDelta::decode(&utf), Err(IpamDeltaError::NotUtf8));
        // An entry count beyond the bound, whatever follows.
        let mut many = b[..17].to_vec();
        many.extend_from_slice(&1025u16.to_be_bytes());
        assert!(matches!(
            RingDelta::decode(&many),
            Err(IpamDeltaError::TooMany { count: 1025, .. })
        ));
        let mut big = sample();
        big.nicknames[0].1 = "x".repeat(256);
        assert_eq!(big.encode(), Err(IpamDeltaError::TooLong));
    }

    proptest! {
        #[test]
        fn ipam_delta_arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
            if let Ok(d) = RingDelta::decode(&bytes) {
                prop_assert_eq!(d.encode().unwrap(), bytes);
            }
        }
    }
}
