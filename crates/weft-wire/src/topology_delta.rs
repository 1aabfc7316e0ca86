//! weft's own topology gossip between weft peers: the payload of the `weft-topology` gossip
//! channel, spoken only on connections where both ends advertised the `WeftTopology` feature
//! (Weave Net peers keep receiving the `topology` channel's full entries).
//!
//! Weave Net's payload carries each changed peer's *whole* connection list, so in a full mesh of
//! N peers one connection change costs N entries to each of N peers. These messages carry what
//! changed instead:
//! * [`Delta`]: a peer's new summary plus the connections removed and added or changed since
//!   `base_version`; applicable only on top of exactly that version;
//! * [`Ref`]: a peer's `(name, uid, version)`, for "I have this" (digests) and "I want anything
//!   newer than this" (pulls).
//!
//! The format is hand-written and weft-only (no Go peer reads it), big-endian:
//! ```text
//! u8 kind (1 = update, 2 = pull, 3 = digest)
//! update: u16 n, n × delta, u16 m, m × ref       pull / digest: u16 m, m × ref
//! delta:  name[6] uid u64 version u64 base u64 short_id u16 (0xffff = none)
//!         u8 nick_len nick  u16 r, r × name[6]  u16 a, a × conn
//! conn:   name[6] u8 flags (1 = outbound, 2 = established) u8 addr_len addr
//! ref:    name[6] uid u64 version u64
//! ```
//! Decoding is strict (unknown kind or flags, bad UTF-8, the zero peer name, trailing bytes and
//! truncation are errors) and never panics; counts are bounded by the bytes present.

use crate::peer::{ConnectionSummary, PeerName, PeerSummary, PEER_NAME_LEN};
use crate::topology::MAX_SHORT_ID;

/// The gossip channel these payloads travel on.
pub const CHANNEL: &str = "weft-topology";
/// The handshake feature a weft peer advertises; its value is the format version.
pub const FEATURE: &str = "WeftTopology";
/// The format version this module speaks.
pub const FEATURE_VERSION: &str = "1";

const KIND_UPDATE: u8 = 1;
const KIND_PULL: u8 = 2;
const KIND_DIGEST: u8 = 3;
const NO_SHORT_ID: u16 = 0xffff;
const FLAG_OUTBOUND: u8 = 1;
const FLAG_ESTABLISHED: u8 = 2;

/// Why a payload could not be decoded (the connection it came on is closed).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DeltaError {
    /// The payload ended inside an item.
    #[error("weft-topology: truncated while reading {0}")]
    Truncated(&'static str),
    /// The first byte is not a known message kind.
    #[error("weft-topology: unknown message kind {0}")]
    UnknownKind(u8),
    /// A connection's flags byte has bits we do not define.
    #[error("weft-topology: unknown connection flags {0:#04x}")]
    BadFlags(u8),
    /// A short id above 4095 that is not the "none" marker.
    #[error("weft-topology: short id {0} does not fit in 12 bits")]
    BadShortId(u16),
    /// A nickname or address that is not UTF-8.
    #[error("weft-topology: {0} is not UTF-8")]
    NotUtf8(&'static str),
    /// A peer name of all zeros (Weave's "unknown peer").
    #[error("weft-topology: the unknown peer name 00:00:00:00:00:00")]
    UnknownPeer,
    /// Bytes after the last item.
    #[error("weft-topology: {0} bytes of trailing garbage")]
    Trailing(usize),
    /// A string or list too long to encode (never produced from a valid topology).
    #[error("weft-topology: {0} too long to encode")]
    TooLong(&'static str),
}

/// One peer's change since `base_version`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delta {
    /// The peer's summary after the change.
    pub summary: PeerSummary,
    /// The version the change applies on top of (same uid).
    pub base_version: u64,
    /// Connections removed, by remote name.
    pub removed: Vec<PeerName>,
    /// Connections added or changed, in full.
    pub upserted: Vec<ConnectionSummary>,
}

/// A peer as one side knows it: enough to tell who is newer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ref {
    /// The peer.
    pub name: PeerName,
    /// Its incarnation (0 when unknown to the sender).
    pub uid: u64,
    /// Its version as known to the sender (0 when unknown).
    pub version: u64,
}

/// One `weft-topology` payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// Changes, relayed as they are, plus peers the receiver may pull if it lags.
    Update {
        /// Per-peer changes.
        deltas: Vec<Delta>,
        /// Peers whose newest entry the sender has (the receiver pulls what it lacks).
        refs: Vec<Ref>,
    },
    /// "Send me your full entry of each of these if yours is newer."
    Pull(Vec<Ref>),
    /// Everything the sender knows, for anti-entropy: the receiver pushes what it has newer
    /// (or what is missing here) and pulls what the sender has newer.
    Digest(Vec<Ref>),
}

impl Message {
    /// Encodes the message.
    ///
    /// # Errors
    /// [`DeltaError::TooLong`] if a list exceeds 65535 items or a nickname or address 255
    /// bytes.
    pub fn encode(&self) -> Result<Vec<u8>, DeltaError> {
        let mut out = Vec::new();
        match self {
            Self::Update { deltas, refs } => {
                out.push(KIND_UPDATE);
                put_len(&mut out, deltas.len(), "delta list")?;
                for d in deltas {
                    encode_delta(d, &mut out)?;
                }
                encode_refs(refs, &mut out)?;
            }
            Self::Pull(refs) => {
                out.push(KIND_PULL);
                encode_refs(refs, &mut out)?;
            }
            Self::Digest(refs) => {
                out.push(KIND_DIGEST);
                encode_refs(refs, &mut out)?;
            }
        }
        Ok(out)
    }

    /// Decodes a payload.
    ///
    /// # Errors
    /// Any [`DeltaError`] but `TooLong`.
    pub fn decode(b: &[u8]) -> Result<Self, DeltaError> {
        let mut r = Reader(b);
        let msg = match r.u8("kind")? {
            KIND_UPDATE => {
                let n = r.u16("delta count")?;
                let mut deltas = Vec::new();
                for _ in 0..n {
                    deltas.push(decode_delta(&mut r)?);
                }
                Self::Update {
                    deltas,
                    refs: decode_refs(&mut r)?,
                }
            }
            KIND_PULL => Self::Pull(decode_refs(&mut r)?),
            KIND_DIGEST => Self::Digest(decode_refs(&mut r)?),
            k => return Err(DeltaError::UnknownKind(k)),
        };
        if !r.0.is_empty() {
            return Err(DeltaError::Trailing(r.0.len()));
        }
        Ok(msg)
    }
}

fn put_len(out: &mut Vec<u8>, n: usize, what: &'static str) -> Result<(), DeltaError> {
    let n = u16::try_from(n).map_err(|_| DeltaError::TooLong(what))?;
    out.extend_from_slice(&n.to_be_bytes());
    Ok(())
}

fn put_str(out: &mut Vec<u8>, s: &str, what: &'static str) -> Result<(), DeltaError> {
    let n = u8::try_from(s.len()).map_err(|_| DeltaError::TooLong(what))?;
    out.push(n);
    out.extend_from_slice(s.as_bytes());
    Ok(())
}

fn encode_delta(d: &Delta, out: &mut Vec<u8>) -> Result<(), DeltaError> {
    let s = &d.summary;
    out.extend_from_slice(&s.name.to_bytes());
    out.extend_from_slice(&s.uid.to_be_bytes());
    out.extend_from_slice(&s.version.to_be_bytes());
    out.extend_from_slice(&d.base_version.to_be_bytes());
    let short = if s.has_short_id {
        s.short_id
    } else {
        NO_SHORT_ID
    };
    out.extend_from_slice(&short.to_be_bytes());
    put_str(out, &s.nick_name, "nickname")?;
    put_len(out, d.removed.len(), "removed list")?;
    for n in &d.removed {
        out.extend_from_slice(&n.to_bytes());
    }
    put_len(out, d.upserted.len(), "connection list")?;
    for c in &d.upserted {
        out.extend_from_slice(&c.name.to_bytes());
        let mut flags = 0;
        if c.outbound {
            flags |= FLAG_OUTBOUND;
        }
        if c.established {
            flags |= FLAG_ESTABLISHED;
        }
        out.push(flags);
        put_str(out, &c.remote_tcp_addr, "address")?;
    }
    Ok(())
}

fn encode_refs(refs: &[Ref], out: &mut Vec<u8>) -> Result<(), DeltaError> {
    put_len(out, refs.len(), "ref list")?;
    for r in refs {
        out.extend_from_slice(&r.name.to_bytes());
        out.extend_from_slice(&r.uid.to_be_bytes());
        out.extend_from_slice(&r.version.to_be_bytes());
    }
    Ok(())
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], DeltaError> {
        if self.0.len() < n {
            return Err(DeltaError::Truncated(what));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn u8(&mut self, what: &'static str) -> Result<u8, DeltaError> {
        Ok(self.take(1, what)?.first().copied().unwrap_or_default())
    }

    fn u16(&mut self, what: &'static str) -> Result<u16, DeltaError> {
        let b = self.take(2, what)?;
        Ok(u16::from_be_bytes(b.try_into().unwrap_or_default()))
    }

    fn u64(&mut self, what: &'static str) -> Result<u64, DeltaError> {
        let b = self.take(8, what)?;
        Ok(u64::from_be_bytes(b.try_into().unwrap_or_default()))
    }

    fn name(&mut self, what: &'static str) -> Result<PeerName, DeltaError> {
        let b = self.take(PEER_NAME_LEN, what)?;
        match PeerName::from_bytes(b) {
            Some(n) if n != PeerName::UNKNOWN => Ok(n),
            _ => Err(DeltaError::UnknownPeer),
        }
    }

    fn string(&mut self, what: &'static str) -> Result<String, DeltaError> {
        let n = self.u8(what)?;
        let b = self.take(usize::from(n), what)?;
        std::str::from_utf8(b)
            .map(str::to_string)
            .map_err(|_| DeltaError::NotUtf8(what))
    }
}

fn decode_delta(r: &mut Reader<'_>) -> Result<Delta, DeltaError> {
    let name = r.name("delta peer")?;
    let uid = r.u64("delta uid")?;
    let version = r.u64("delta version")?;
    let base_version = r.u64("delta base version")?;
    let short = r.u16("delta short id")?;
    let has_short_id = short != NO_SHORT_ID;
    if has_short_id && short > MAX_SHORT_ID {
        return Err(DeltaError::BadShortId(short));
    }
    let nick_name = r.string("nickname")?;
    let mut removed = Vec::new();
    for _ in 0..r.u16("removed count")? {
        removed.push(r.name("removed connection")?);
    }
    let mut upserted = Vec::new();
    for _ in 0..r.u16("connection count")? {
        let name = r.name("connection")?;
        let flags = r.u8("connection flags")?;
        if flags & !(FLAG_OUTBOUND | FLAG_ESTABLISHED) != 0 {
            return Err(DeltaError::BadFlags(flags));
        }
        upserted.push(ConnectionSummary {
            name,
            remote_tcp_addr: r.string("address")?,
            outbound: flags & FLAG_OUTBOUND != 0,
            established: flags & FLAG_ESTABLISHED != 0,
        });
    }
    Ok(Delta {
        summary: PeerSummary {
            name,
            nick_name,
            uid,
            version,
            short_id: if has_short_id { short } else { 0 },
            has_short_id,
        },
        base_version,
        removed,
        upserted,
    })
}

fn decode_refs(r: &mut Reader<'_>) -> Result<Vec<Ref>, DeltaError> {
    let mut refs = Vec::new();
    for _ in 0..r.u16("ref count")? {
        refs.push(Ref {
            name: r.name("ref peer")?,
            uid: r.u64("ref uid")?,
            version: r.u64("ref version")?,
        });
    }
    Ok(refs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn name(i: u8) -> PeerName {
        PeerName::from_bytes(&[0, 0, 0, 0, 0, i]).unwrap()
    }

    fn sample() -> Message {
        Message::Update {
            deltas: vec![Delta {
                summary: PeerSummary {
                    name: name(1),
                    nick_name: "host1".into(),
                    uid: 77,
                    version: 9,
                    short_id: 4095,
                    has_short_id: true,
                },
                base_version: 7,
                removed: vec![name(2)],
                upserted: vec![ConnectionSummary {
                    name: name(3),
                    remote_tcp_addr: "10.0.0.3:6783".into(),
                    outbound: true,
                    established: false,
                }],
            }],
            refs: vec![Ref {
                name: name(3),
                uid: 5,
                version: 2,
            }],
        }
    }

    #[test]
    fn round_trips() {
        for m in [
            sample(),
            Message::Pull(vec![Ref {
                name: name(9),
                uid: 0,
                version: 0,
            }]),
            Message::Digest(Vec::new()),
        ] {
            let b = m.encode().unwrap();
            assert_eq!(Message::decode(&b).unwrap(), m);
        }
    }

    #[test]
    fn a_one_connection_change_is_small() {
        // The point of the format: a change costs bytes independent of the peer's degree.
        assert!(sample().encode().unwrap().len() < 100);
    }

    #[test]
    fn rejects_malformed_input() {
        let b = sample().encode().unwrap();
        for cut in 0..b.len() {
            assert!(Message::decode(&b[..cut]).is_err(), "cut at {cut}");
        }
        let mut long = b.clone();
        long.push(0);
        assert_eq!(Message::decode(&long), Err(DeltaError::Trailing(1)));
        assert_eq!(Message::decode(&[9]), Err(DeltaError::UnknownKind(9)));
        let zero = [KIND_PULL, 0, 1, 0, 0, 0, 0, 0, 0];
        assert_eq!(Message::decode(&zero), Err(DeltaError::UnknownPeer));
        let mut bad_short = b.clone();
        // kind 1, count 2, then name 6 + uid 8 + version 8 + base 8 = offset 33 for short id.
        bad_short[33] = 0x10;
        bad_short[34] = 0x00;
        assert_eq!(
            Message::decode(&bad_short),
            Err(DeltaError::BadShortId(0x1000))
        );
    }

    #[test]
    fn too_long_strings_are_refused_on_encode() {
        let mut m = sample();
        if let Message::Update { deltas, .. } = &mut m {
            deltas[0].summary.nick_name = "x".repeat(256);
        }
        assert_eq!(m.encode(), Err(DeltaError::TooLong("nickname")));
    }

    proptest! {
        #[test]
        fn never_panics(b in proptest::collection::vec(any::<u8>(), 0..300)) {
            if let Ok(m) = Message::decode(&b) {
                prop_assert_eq!(Message::decode(&m.encode().unwrap()).unwrap(), m);
            }
        }
    }
}
