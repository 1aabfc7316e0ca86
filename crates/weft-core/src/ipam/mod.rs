//! IPAM: one address pool for the whole mesh, with Weave Net's ring CRDT and consensus.
//!
//! The universe (`--ipalloc-range`) is cut into ranges around a ring; each range has one owning
//! peer, which alone hands out its addresses, so two peers never give out the same address. The
//! pieces, bottom up:
//!
//! * [`ring`]: the CRDT itself — who owns which range, with per-entry versions and reported free
//!   counts — its merge rules, validation of a received ring, grants (donation) and transfers
//!   (`rmpeer`, `reset`).
//! * [`space`]: the local peer's own ranges, address by address: what is allocated, what is
//!   free, which address comes next, which block to give away.
//! * [`paxos`]: single-decree Paxos gossiped as a whole, agreeing on the set of peers that
//!   split the universe when no seed was given.
//! * [`allocator`]: the state machine tying them together: requests in, time passed in, and
//!   gossip, unicasts, replies and persistence records out as values.
//!
//! Everything is sans-IO. The types here ([`allocator::GossipState`], [`ring::RingSnapshot`],
//! [`paxos::GossipState`], [`allocator::UnicastMsg`]) are weft's own; the gob payload types that
//! Weave Net puts on the wire convert to and from them at the channel adapter, so nothing here
//! knows about gob.
//!
//! Addresses are IPv4 only, as in Weave Net: a [`Address`] is a `u32`, a [`Range`] is half-open.
//! A universe whose end would be 2^32 (a range ending at 255.255.255.255) is refused, since the
//! ring keeps its end as a `u32` as Weave's wire format does.

pub mod allocator;
pub mod channel;
pub mod paxos;
pub mod ring;
pub mod space;
pub mod wire;

#[cfg(test)]
mod sim;

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

/// Smallest subnet IPAM accepts: its first and last addresses are never handed out, so two
/// would leave nothing.
pub const MIN_SUBNET_SIZE: u32 = 4;

/// One IPv4 address as a number (Weave's `address.Address`).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Address(pub u32);

impl Address {
    /// The address `n` after this one, wrapping as Weave's `uint32` arithmetic does.
    pub fn offset(self, n: u32) -> Self {
        Self(self.0.wrapping_add(n))
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        Ipv4Addr::from(self.0).fmt(f)
    }
}

impl fmt::Debug for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl From<Ipv4Addr> for Address {
    fn from(ip: Ipv4Addr) -> Self {
        Self(u32::from(ip))
    }
}

impl From<Address> for Ipv4Addr {
    fn from(a: Address) -> Self {
        Self::from(a.0)
    }
}

/// Addresses `[start, end)`; `start <= end` for any range built here.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Range {
    /// First address in the range.
    pub start: Address,
    /// First address after the range.
    pub end: Address,
}

impl Range {
    /// `[start, end)`.
    pub fn new(start: Address, end: Address) -> Self {
        Self { start, end }
    }

    /// Number of addresses; 0 for an empty or inverted range.
    pub fn size(self) -> u32 {
        self.end.0.saturating_sub(self.start.0)
    }

    /// Whether `addr` lies in the range.
    pub fn contains(self, addr: Address) -> bool {
        self.start <= addr && addr < self.end
    }

    /// Whether the two ranges share an address.
    pub fn overlaps(self, other: Self) -> bool {
        !(self.start >= other.end || self.end <= other.start)
    }

    /// The lowest-placed of the largest power-of-two blocks aligned to their size inside the
    /// range (Weave's `BiggestCIDRRange`, which donation relies on); empty for an empty range.
    pub fn biggest_cidr_range(self) -> Self {
        let (start, end) = (u64::from(self.start.0), u64::from(self.end.0));
        if end <= start {
            return Self::new(self.start, self.start);
        }
        // The largest power of two not above the size, then smaller ones until one fits.
        let mut size = 1u64 << (63 - (end - start).leading_zeros());
        loop {
            let aligned = start.div_ceil(size) * size;
            if aligned + size <= end {
                // Both fit in u32: they lie inside [start, end) of u32 values.
                return Self::new(Address(aligned as u32), Address((aligned + size) as u32));
            }
            size /= 2;
        }
    }
}

impl fmt::Display for Range {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Weave prints the last address, not the exclusive end.
        write!(f, "{}-{}", self.start, Address(self.end.0.wrapping_sub(1)))
    }
}

impl fmt::Debug for Range {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{}, {})", self.start, self.end)
    }
}

/// An address with a prefix length (Weave's `address.CIDR`): a subnet, or one address of a
/// container with its subnet's prefix.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Cidr {
    /// The address (for a subnet, its first address).
    pub addr: Address,
    /// Prefix length, 0..=32.
    pub prefix_len: u8,
}

/// A CIDR text IPAM refuses; the messages are Weave Net's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CidrError {
    /// Not `a.b.c.d/n` with an IPv4 address and n ≤ 32.
    #[error("invalid CIDR address: {0}")]
    Syntax(String),
    /// Host bits set in a subnet.
    #[error("invalid subnet - bits after network prefix are not all zero: {0}")]
    NotSubnet(String),
    /// Fewer than [`MIN_SUBNET_SIZE`] addresses.
    #[error("invalid subnet - smaller than minimum size {MIN_SUBNET_SIZE}: {0}")]
    TooSmall(String),
    /// The subnet ends at 2^32, which a `u32` ring cannot hold.
    #[error("invalid subnet - reaches the end of the address space: {0}")]
    AtEnd(String),
}

impl Cidr {
    /// `addr/prefix_len`; `None` if the prefix is longer than 32.
    pub fn new(addr: Address, prefix_len: u8) -> Option<Self> {
        (prefix_len <= 32).then_some(Self { addr, prefix_len })
    }

    /// Number of addresses in the block, as a u64 (a /0 holds 2^32).
    pub fn block_size(self) -> u64 {
        1u64 << (32 - u32::from(self.prefix_len))
    }

    /// Whether the host bits are zero.
    pub fn is_subnet(self) -> bool {
        u64::from(self.addr.0) % self.block_size() == 0
    }

    /// The block `[addr, addr + size)`, its end wrapping as Weave's does.
    pub fn range(self) -> Range {
        Range::new(
            self.addr,
            Address(self.addr.0.wrapping_add(self.block_size() as u32)),
        )
    }

    /// The block without its first and last address (RFC 1122), where IPAM allocates.
    pub fn host_range(self) -> Range {
        let size = self.block_size().saturating_sub(2) as u32;
        Range::new(self.addr.offset(1), self.addr.offset(1).offset(size))
    }

    /// The same prefix length around another address (Weave's `MakeCIDR`).
    pub fn with_addr(self, addr: Address) -> Self {
        Self {
            addr,
            prefix_len: self.prefix_len,
        }
    }

    /// Parses a subnet as `--ipalloc-range` and the `/ip` routes take it: host bits zero, at
    /// least [`MIN_SUBNET_SIZE`] addresses, not ending at 2^32.
    pub fn parse_subnet(s: &str) -> Result<Self, CidrError> {
        let cidr: Self = s.parse()?;
        if !cidr.is_subnet() {
            return Err(CidrError::NotSubnet(s.to_owned()));
        }
        if cidr.block_size() < u64::from(MIN_SUBNET_SIZE) {
            return Err(CidrError::TooSmall(s.to_owned()));
        }
        if u64::from(cidr.addr.0) + cidr.block_size() > u64::from(u32::MAX) {
            return Err(CidrError::AtEnd(s.to_owned()));
        }
        Ok(cidr)
    }
}

impl FromStr for Cidr {
    type Err = CidrError;

    fn from_str(s: &str) -> Result<Self, CidrError> {
        let err = || CidrError::Syntax(s.chars().take(64).collect());
        let (ip, len) = s.split_once('/').ok_or_else(err)?;
        let ip: Ipv4Addr = ip.parse().map_err(|_| err())?;
        let len: u8 = len.parse().map_err(|_| err())?;
        Self::new(ip.into(), len).ok_or_else(err)
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix_len)
    }
}

impl fmt::Debug for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(s: &str) -> Address {
        s.parse::<Ipv4Addr>().unwrap().into()
    }

    #[test]
    fn ipam_biggest_cidr_range() {
        let r = |s: &str, e: &str| Range::new(a(s), a(e));
        // The chunks of the worked example (§4.8).
        assert_eq!(
            r("172.16.16.129", "172.16.17.0").biggest_cidr_range(),
            r("172.16.16.192", "172.16.17.0")
        );
        assert_eq!(
            r("172.16.16.2", "172.16.16.128").biggest_cidr_range(),
            r("172.16.16.64", "172.16.16.128")
        );
        assert_eq!(
            r("10.0.0.0", "10.0.0.1").biggest_cidr_range(),
            r("10.0.0.0", "10.0.0.1")
        );
        assert_eq!(
            r("10.0.0.3", "10.0.0.9").biggest_cidr_range(),
            r("10.0.0.4", "10.0.0.8")
        );
        assert_eq!(
            r("10.0.0.7", "10.0.0.13").biggest_cidr_range(),
            r("10.0.0.8", "10.0.0.12")
        );
        assert_eq!(r("10.0.0.5", "10.0.0.5").biggest_cidr_range().size(), 0);
    }

    #[test]
    fn ipam_subnet_parsing() {
        let c = Cidr::parse_subnet("172.16.16.0/24").unwrap();
        assert_eq!(
            c.host_range(),
            Range::new(a("172.16.16.1"), a("172.16.16.255"))
        );
        assert_eq!(c.range().size(), 256);
        assert_eq!(
            Cidr::parse_subnet("10.0.0.1/24").unwrap_err().to_string(),
            "invalid subnet - bits after network prefix are not all zero: 10.0.0.1/24"
        );
        assert_eq!(
            Cidr::parse_subnet("10.0.0.0/31").unwrap_err().to_string(),
            "invalid subnet - smaller than minimum size 4: 10.0.0.0/31"
        );
        assert!(Cidr::parse_subnet("255.255.255.0/24").is_err());
        assert!(Cidr::parse_subnet("10.0.0.0/33").is_err());
        assert!(Cidr::parse_subnet("x/8").is_err());
    }
}
