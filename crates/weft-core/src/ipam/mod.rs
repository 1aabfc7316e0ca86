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
//!
//! Subnets and containers' addresses are [`weft_types::Ipv4Cidr`], the one CIDR type the rest
//! of weft uses too (the CLI, weft-attach, the firewall), so an address IPAM hands out goes onto
//! an interface without conversion. What is plain CIDR arithmetic (the block's size, whether
//! the host bits are zero, the same prefix around another address) is inherent to that type;
//! what needs this module's [`Address`] and [`Range`] (a block as a range of the ring, its
//! allocatable hosts) is the [`CidrBlock`] extension trait here, since weft-types depends on
//! nothing and so cannot know IPAM's types. The parsing is IPAM's too ([`parse_cidr`],
//! [`parse_subnet`]): its rules (a subnet of at least [`MIN_SUBNET_SIZE`] addresses, not
//! ending at 2^32) and error texts ([`CidrError`]) are Weave Net's.

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

use weft_types::Ipv4Cidr;

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

/// Parses `a.b.c.d/n` as Weave's `address.ParseCIDR` does (host bits allowed), with its error
/// text; the text quoted back is cut at 64 characters, since it may come from a request.
pub fn parse_cidr(s: &str) -> Result<Ipv4Cidr, CidrError> {
    s.parse()
        .map_err(|_| CidrError::Syntax(s.chars().take(64).collect()))
}

/// Parses a subnet as `--ipalloc-range` and the `/ip` routes take it: host bits zero, at least
/// [`MIN_SUBNET_SIZE`] addresses, not ending at 2^32.
pub fn parse_subnet(s: &str) -> Result<Ipv4Cidr, CidrError> {
    let cidr = parse_cidr(s)?;
    if !cidr.is_network() {
        return Err(CidrError::NotSubnet(s.to_owned()));
    }
    if cidr.block_size() < u64::from(MIN_SUBNET_SIZE) {
        return Err(CidrError::TooSmall(s.to_owned()));
    }
    if u64::from(u32::from(cidr.addr())) + cidr.block_size() > u64::from(u32::MAX) {
        return Err(CidrError::AtEnd(s.to_owned()));
    }
    Ok(cidr)
}

/// A CIDR's block as IPAM counts addresses: [`Address`] and [`Range`] are this module's, so
/// these live here rather than on [`Ipv4Cidr`] (see the module docs).
pub trait CidrBlock {
    /// The block `[addr, addr + size)`, its end wrapping as Weave's does; for a subnet (as
    /// [`parse_subnet`] gives) that is the whole subnet.
    fn range(&self) -> Range;

    /// The block without its first and last address (RFC 1122), where IPAM allocates.
    fn host_range(&self) -> Range;
}

impl CidrBlock for Ipv4Cidr {
    fn range(&self) -> Range {
        let start = Address::from(self.addr());
        Range::new(start, start.offset(self.block_size() as u32))
    }

    fn host_range(&self) -> Range {
        let size = self.block_size().saturating_sub(2) as u32;
        let first = Address::from(self.addr()).offset(1);
        Range::new(first, first.offset(size))
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
        let c = parse_subnet("172.16.16.0/24").unwrap();
        assert_eq!(
            c.host_range(),
            Range::new(a("172.16.16.1"), a("172.16.16.255"))
        );
        assert_eq!(c.range().size(), 256);
        assert_eq!(
            parse_subnet("10.0.0.1/24").unwrap_err().to_string(),
            "invalid subnet - bits after network prefix are not all zero: 10.0.0.1/24"
        );
        assert_eq!(
            parse_subnet("10.0.0.0/31").unwrap_err().to_string(),
            "invalid subnet - smaller than minimum size 4: 10.0.0.0/31"
        );
        assert!(parse_subnet("255.255.255.0/24").is_err());
        assert!(parse_subnet("10.0.0.0/33").is_err());
        assert!(parse_subnet("x/8").is_err());
    }

    #[test]
    fn ipam_cidr_parsing() {
        // An address of a subnet keeps its host bits: that is what a claim names.
        let c = parse_cidr("172.16.16.200/24").unwrap();
        assert_eq!(c.to_string(), "172.16.16.200/24");
        assert_eq!(c.range().start, a("172.16.16.200"));
        assert_eq!(
            parse_cidr("172.16.16.999/24").unwrap_err().to_string(),
            "invalid CIDR address: 172.16.16.999/24"
        );
        // Go's ParseCIDR takes decimal digits only after the slash.
        for bad in [
            "10.0.0.0/+8",
            "10.0.0.0/33",
            "10.0.0.0",
            "10.0.0.0/",
            "::1/128",
        ] {
            assert_eq!(
                parse_cidr(bad),
                Err(CidrError::Syntax(bad.to_owned())),
                "{bad}"
            );
        }
        // Text from a request is quoted back cut at 64 characters.
        let long = format!("{}/8", "1".repeat(100));
        assert_eq!(
            parse_cidr(&long).unwrap_err().to_string(),
            format!("invalid CIDR address: {}", "1".repeat(64))
        );
        assert_eq!(
            parse_subnet("255.255.255.0/24").unwrap_err().to_string(),
            "invalid subnet - reaches the end of the address space: 255.255.255.0/24"
        );
    }
}
