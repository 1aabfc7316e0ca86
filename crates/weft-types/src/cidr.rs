//! [`Ipv4Cidr`]: an IPv4 address with a prefix length, written `a.b.c.d/len`, and the plain
//! facts of CIDR arithmetic about it (its subnet, how many addresses the block spans, whether
//! the host bits are zero). What a user of the type makes of those facts (IPAM's address
//! ranges, the firewall's matches) stays with that user.

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

/// An IPv4 address with its prefix length, as interfaces carry them: `10.2.1.1/24` keeps its
/// host bits. [`Ipv4Cidr::network`] gives the subnet (`10.2.1.0/24`), which is what the
/// firewall matches and what two addresses of one subnet share.
///
/// The prefix length is at most 32, checked at construction.
///
/// Ordered by address, then prefix length; `Debug` prints the same `a.b.c.d/len` as `Display`,
/// as `Ipv4Addr`'s does.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Ipv4Cidr {
    addr: Ipv4Addr,
    prefix_len: u8,
}

/// A CIDR that is not one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid IPv4 CIDR {0:?}")]
pub struct CidrError(pub String);

impl Ipv4Cidr {
    /// `addr/prefix_len`; `prefix_len` must be at most 32.
    pub fn new(addr: Ipv4Addr, prefix_len: u8) -> Result<Self, CidrError> {
        if prefix_len > 32 {
            return Err(CidrError(format!("{addr}/{prefix_len}")));
        }
        Ok(Self { addr, prefix_len })
    }

    /// The address, host bits included.
    pub fn addr(&self) -> Ipv4Addr {
        self.addr
    }

    /// The prefix length, 0..=32.
    pub fn prefix_len(&self) -> u8 {
        self.prefix_len
    }

    /// The subnet: the same prefix with the host bits cleared (`10.2.1.1/24` → `10.2.1.0/24`).
    pub fn network(&self) -> Self {
        let mask = u32::MAX
            .checked_shl(32 - u32::from(self.prefix_len))
            .unwrap_or(0);
        Self {
            addr: Ipv4Addr::from(u32::from(self.addr) & mask),
            prefix_len: self.prefix_len,
        }
    }

    /// Whether `ip` lies in this subnet.
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        self.network() == self.with_addr(ip).network()
    }

    /// Whether the host bits are all zero, so that the address names its subnet.
    pub fn is_network(&self) -> bool {
        self.network() == *self
    }

    /// How many addresses the prefix spans: 2^(32 - prefix length), so 2^32 for a /0.
    pub fn block_size(&self) -> u64 {
        1u64 << (32 - u32::from(self.prefix_len))
    }

    /// Another address with the same prefix length (`10.2.1.0/24` with `10.2.1.7` →
    /// `10.2.1.7/24`).
    pub fn with_addr(&self, addr: Ipv4Addr) -> Self {
        Self {
            addr,
            prefix_len: self.prefix_len,
        }
    }
}

impl FromStr for Ipv4Cidr {
    type Err = CidrError;

    /// Parses `a.b.c.d/len`, the prefix length in decimal digits only.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || CidrError(s.to_owned());
        let (a, l) = s.split_once('/').ok_or_else(bad)?;
        // u8::from_str accepts a leading '+'; CIDR notation does not.
        if l.is_empty() || !l.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        let prefix_len = l.parse::<u8>().map_err(|_| bad())?;
        let addr = a.parse::<Ipv4Addr>().map_err(|_| bad())?;
        Self::new(addr, prefix_len).map_err(|_| bad())
    }
}

impl fmt::Display for Ipv4Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix_len)
    }
}

impl fmt::Debug for Ipv4Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_prints_and_keeps_host_bits() {
        let c: Ipv4Cidr = "10.32.0.1/12".parse().unwrap();
        assert!(c.contains("10.47.255.255".parse().unwrap()));
        assert!(!c.contains("10.48.0.0".parse().unwrap()));
        assert!("0.0.0.0/0"
            .parse::<Ipv4Cidr>()
            .unwrap()
            .contains("1.2.3.4".parse().unwrap()));
        assert_eq!(c.to_string(), "10.32.0.1/12");
        assert_eq!(c.addr(), Ipv4Addr::new(10, 32, 0, 1));
        assert_eq!(c.prefix_len(), 12);
        assert_eq!(c.network().to_string(), "10.32.0.0/12");
        assert_eq!(
            c.network(),
            "10.47.255.255/12".parse::<Ipv4Cidr>().unwrap().network()
        );
        assert_eq!(
            "1.2.3.4/0"
                .parse::<Ipv4Cidr>()
                .unwrap()
                .network()
                .to_string(),
            "0.0.0.0/0"
        );
        assert_eq!(
            "1.2.3.4/32"
                .parse::<Ipv4Cidr>()
                .unwrap()
                .network()
                .to_string(),
            "1.2.3.4/32"
        );
    }

    #[test]
    fn block_facts() {
        let c = |s: &str| s.parse::<Ipv4Cidr>().unwrap();
        assert_eq!(c("10.32.0.0/12").block_size(), 1 << 20);
        assert_eq!(c("0.0.0.0/0").block_size(), 1 << 32);
        assert_eq!(c("10.0.0.7/32").block_size(), 1);
        assert!(c("10.32.0.0/12").is_network());
        assert!(c("0.0.0.0/0").is_network());
        assert!(c("10.0.0.7/32").is_network());
        assert!(!c("10.32.0.1/12").is_network());
        assert!(!c("1.0.0.0/0").is_network());
        assert_eq!(
            c("10.2.1.0/24").with_addr(Ipv4Addr::new(10, 2, 1, 7)),
            c("10.2.1.7/24")
        );
        assert_eq!(format!("{:?}", c("10.2.1.7/24")), "10.2.1.7/24");
    }

    #[test]
    fn rejects_what_is_not_a_cidr() {
        for bad in [
            "10.0.0.7",
            "10.0.0.0/33",
            "10.0.0.0/",
            "10.0.0.0/+8",
            "10.0.0.0/256",
            "10.0.0/8",
            "10.2.1.300/24",
            "x/8",
            "::1/128",
            "ip:10.0.0.1/8",
            "",
        ] {
            assert_eq!(bad.parse::<Ipv4Cidr>(), Err(CidrError(bad.into())), "{bad}");
        }
        assert!(Ipv4Cidr::new(Ipv4Addr::LOCALHOST, 33).is_err());
        assert!(Ipv4Cidr::new(Ipv4Addr::LOCALHOST, 32).is_ok());
    }
}
