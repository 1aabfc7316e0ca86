//! Peer identity as it appears on the wire: the 48-bit MAC-style peer name and the per-peer
//! summaries that topology gossip carries.
//!
//! Weave Net only ever builds the "mac" name flavour, so that is the only one here: a `u64`
//! holding 48 bits, 6 big-endian bytes on the wire, `aa:bb:cc:dd:ee:ff` as text (with `::`
//! compression of one run of zero octets accepted on input).

use std::fmt;
use std::str::FromStr;

/// A peer's 48-bit name. `PeerName(0)` is the "unknown" sentinel and never names a real peer.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct PeerName(pub u64);

/// Number of bytes in the binary form of a peer name.
pub const PEER_NAME_LEN: usize = 6;

/// A peer name that does not parse; the message is Weave Net's. The text is cut by
/// [`bounded`](crate::bounded), since it may come from a peer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid peer name format: {0:?}")]
pub struct PeerNameError(pub String);

impl PeerName {
    /// The sentinel for "no peer".
    pub const UNKNOWN: Self = Self(0);

    /// The largest name (48 bits set).
    pub const MAX: Self = Self(0xffff_ffff_ffff);

    /// Decodes the 6-byte big-endian binary form; `None` if the slice is not 6 bytes long.
    pub fn from_bytes(b: &[u8]) -> Option<Self> {
        if b.len() != PEER_NAME_LEN {
            return None;
        }
        Some(Self(
            b.iter().fold(0u64, |acc, &x| (acc << 8) | u64::from(x)),
        ))
    }

    /// The 6-byte big-endian binary form.
    pub fn to_bytes(self) -> [u8; PEER_NAME_LEN] {
        let b = self.0.to_be_bytes();
        [b[2], b[3], b[4], b[5], b[6], b[7]]
    }
}

impl fmt::Display for PeerName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.to_bytes();
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            b[0], b[1], b[2], b[3], b[4], b[5]
        )
    }
}

impl fmt::Debug for PeerName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl FromStr for PeerName {
    type Err = PeerNameError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        // The text may be a peer's (its features map): keep only a bounded prefix.
        let err = || PeerNameError(crate::error::bounded(s));
        let octet = |o: &str| -> Result<u64, PeerNameError> {
            if o.is_empty() || o.len() > 2 {
                return Err(err());
            }
            u64::from_str_radix(o, 16).map_err(|_| err())
        };
        let parts: Vec<u64> = if let Some((head, tail)) = s.split_once("::") {
            if tail.contains("::") {
                return Err(err());
            }
            let h: Vec<u64> = if head.is_empty() {
                Vec::new()
            } else {
                head.split(':').map(octet).collect::<Result<_, _>>()?
            };
            let t: Vec<u64> = if tail.is_empty() {
                Vec::new()
            } else {
                tail.split(':').map(octet).collect::<Result<_, _>>()?
            };
            if h.len() + t.len() >= PEER_NAME_LEN {
                return Err(err());
            }
            let zeros = PEER_NAME_LEN - h.len() - t.len();
            h.into_iter()
                .chain(std::iter::repeat_n(0, zeros))
                .chain(t)
                .collect()
        } else {
            s.split(':').map(octet).collect::<Result<_, _>>()?
        };
        if parts.len() != PEER_NAME_LEN {
            return Err(err());
        }
        Ok(Self(parts.iter().fold(0, |acc, &x| (acc << 8) | x)))
    }
}

/// One peer as topology gossip describes it (Go's `peerSummary`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PeerSummary {
    /// The peer's name (`NameByte`).
    pub name: PeerName,
    /// Its nickname, usually the host name.
    pub nick_name: String,
    /// Incarnation id, random per process start; 0 only for placeholders.
    pub uid: u64,
    /// Topology version of that peer, bumped on each of its connection changes.
    pub version: u64,
    /// 12-bit short id (fast datapath).
    pub short_id: u16,
    /// Whether `short_id` is set.
    pub has_short_id: bool,
}

/// One connection in a peer's connection list (Go's `connectionSummary`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ConnectionSummary {
    /// The remote end's name (`NameByte`).
    pub name: PeerName,
    /// `ip:port` of the TCP connection as the owner sees it.
    pub remote_tcp_addr: String,
    /// Whether the owner dialled.
    pub outbound: bool,
    /// Whether the owner considers it established.
    pub established: bool,
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // In tests a panic is the failed assertion.
mod tests {
    use super::*;

    #[test]
    fn parse_and_print() {
        let n: PeerName = "aa:bb:cc:dd:ee:01".parse().unwrap();
        assert_eq!(n.0, 0xaabbccddee01);
        assert_eq!(n.to_string(), "aa:bb:cc:dd:ee:01");
        assert_eq!("::1".parse::<PeerName>().unwrap().0, 1);
        assert_eq!("1::".parse::<PeerName>().unwrap().0, 0x010000000000);
        assert_eq!("12:34::56".parse::<PeerName>().unwrap().0, 0x123400000056);
        assert_eq!(PeerName::from_bytes(&n.to_bytes()), Some(n));
        for bad in [
            "",
            "aa:bb",
            "1:2:3:4:5:6:7",
            "::1::",
            "zz::",
            "123::",
            "1:2:3::4:5:6",
        ] {
            assert!(bad.parse::<PeerName>().is_err(), "{bad}");
        }
        assert_eq!(
            "x".parse::<PeerName>().unwrap_err().to_string(),
            "invalid peer name format: \"x\""
        );
        let long = "1".repeat(1 << 20);
        assert!(long.parse::<PeerName>().unwrap_err().to_string().len() < 128);
    }
}
