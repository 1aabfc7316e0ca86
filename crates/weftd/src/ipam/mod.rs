//! IPAM in the router: the flags that configure it ([`IpamConfig`]), the task that owns the
//! allocator and releases the addresses of containers that are gone ([`task`]), its records
//! in the state database (`persist`), the `/ip`, `/ring`, `/ipinfo` and `/peer` routes
//! ([`http`]), and its part of the status views ([`status`]).
//!
//! The allocator itself is weft-core's sans-IO [`Allocator`](weft_core::ipam::allocator::Allocator);
//! everything here is I/O around it.

pub mod http;
mod persist;
pub mod status;
pub mod task;

use weft_core::ipam::allocator::InitMode;
use weft_core::ipam::{parse_subnet, CidrBlock, CidrError};
use weft_types::Ipv4Cidr;
use weft_wire::PeerName;

/// `--ipalloc-range` when none is given (Weave Net's script default).
pub const DEFAULT_RANGE: &str = "10.32.0.0/12";

/// How IPAM runs: `None` in the router config when it is disabled (`--ipalloc-range ""`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpamConfig {
    /// `--ipalloc-range`: the universe every peer must agree on.
    pub range: Ipv4Cidr,
    /// `--ipalloc-default-subnet`: where `net:default` allocates (default: the range).
    pub default_subnet: Ipv4Cidr,
    /// `--ipalloc-init` / `--init-peer-count`.
    pub mode: InitMode,
}

/// The IPAM flags as given on the command line.
#[derive(Debug, Clone, Copy, Default)]
pub struct IpamFlags<'a> {
    /// `--ipalloc-range` (`None`: not given, so the default; `Some("")`: IPAM off).
    pub range: Option<&'a str>,
    /// `--ipalloc-default-subnet`.
    pub default_subnet: Option<&'a str>,
    /// `--ipalloc-init`.
    pub init: Option<&'a str>,
    /// `--init-peer-count` (Weave Net 1.x's spelling of `consensus=N`).
    pub init_peer_count: Option<u32>,
}

/// IPAM flags that cannot work; each message names the flag and what would be right.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IpamConfigError {
    /// A CIDR flag that is not a usable subnet.
    #[error("{flag}: {error}")]
    Cidr {
        /// The flag.
        flag: &'static str,
        /// What is wrong with it.
        #[source]
        error: CidrError,
    },
    /// The default subnet lies outside the range.
    #[error("IP address allocation default subnet {subnet} does not overlap with allocation range {range}")]
    SubnetOutsideRange {
        /// `--ipalloc-default-subnet`.
        subnet: Ipv4Cidr,
        /// `--ipalloc-range`.
        range: Ipv4Cidr,
    },
    /// A default subnet (or init mode) with IPAM turned off.
    #[error("{0} specified without --ipalloc-range")]
    WithoutRange(&'static str),
    /// `--ipalloc-init` that is none of the three modes.
    #[error("Unable to parse --ipalloc-init: {0}")]
    Init(String),
    /// Both spellings of the initial peer count.
    #[error(
        "--init-peer-count and --ipalloc-init cannot be combined; use --ipalloc-init consensus=N"
    )]
    BothInits,
}

impl IpamConfig {
    /// The configuration the flags ask for; `Ok(None)` when IPAM is turned off.
    pub fn from_flags(flags: IpamFlags<'_>) -> Result<Option<Self>, IpamConfigError> {
        let range_text = flags.range.unwrap_or(DEFAULT_RANGE);
        if range_text.is_empty() {
            if flags.default_subnet.is_some_and(|s| !s.is_empty()) {
                return Err(IpamConfigError::WithoutRange("--ipalloc-default-subnet"));
            }
            return Ok(None);
        }
        let subnet =
            |flag, s: &str| parse_subnet(s).map_err(|error| IpamConfigError::Cidr { flag, error });
        let range = subnet("--ipalloc-range", range_text)?;
        let default_subnet = match flags.default_subnet.filter(|s| !s.is_empty()) {
            Some(s) => subnet("--ipalloc-default-subnet", s)?,
            None => range,
        };
        if !range.range().overlaps(default_subnet.range()) {
            return Err(IpamConfigError::SubnetOutsideRange {
                subnet: default_subnet,
                range,
            });
        }
        let mode = match (flags.init.filter(|s| !s.is_empty()), flags.init_peer_count) {
            (Some(_), Some(_)) => return Err(IpamConfigError::BothInits),
            (Some(s), None) => parse_init(s)?,
            (None, n) => InitMode::Consensus { peer_count: n },
        };
        Ok(Some(Self {
            range,
            default_subnet,
            mode,
        }))
    }
}

/// `consensus[=N]`, `seed=NAME,…` or `observer`.
fn parse_init(s: &str) -> Result<InitMode, IpamConfigError> {
    let bad = |why: String| IpamConfigError::Init(why);
    if s == "observer" {
        return Ok(InitMode::Observer);
    }
    if s == "consensus" {
        return Ok(InitMode::Consensus { peer_count: None });
    }
    if let Some(n) = s.strip_prefix("consensus=") {
        let n: u32 = n.parse().ok().filter(|&n| n > 0).ok_or_else(|| {
            bad(format!(
                "invalid peer count {n:?}, expected a number from 1"
            ))
        })?;
        return Ok(InitMode::Consensus {
            peer_count: Some(n),
        });
    }
    if let Some(list) = s.strip_prefix("seed=") {
        let peers = list
            .split(',')
            .map(|p| {
                p.parse::<PeerName>()
                    .map_err(|_| bad(format!("invalid peer name {p:?} in seed list")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        return Ok(InitMode::Seed(peers));
    }
    Err(bad(format!(
        "unknown mode {s:?}, expected consensus[=<count>], seed=<peer>,... or observer"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flags(range: Option<&'static str>) -> IpamFlags<'static> {
        IpamFlags {
            range,
            ..IpamFlags::default()
        }
    }

    #[test]
    fn default_range_and_subnet() {
        let c = IpamConfig::from_flags(flags(None)).unwrap().unwrap();
        assert_eq!(c.range.to_string(), "10.32.0.0/12");
        assert_eq!(c.default_subnet, c.range);
        assert_eq!(c.mode, InitMode::Consensus { peer_count: None });
        assert_eq!(IpamConfig::from_flags(flags(Some(""))).unwrap(), None);
    }

    #[test]
    fn bad_flags_get_weaves_messages() {
        let err = |f: IpamFlags<'static>| IpamConfig::from_flags(f).unwrap_err().to_string();
        assert_eq!(
            err(flags(Some("10.32.0.1/12"))),
            "--ipalloc-range: invalid subnet - bits after network prefix are not all zero: 10.32.0.1/12"
        );
        assert_eq!(
            err(IpamFlags {
                range: Some("10.32.0.0/12"),
                default_subnet: Some("10.2.0.0/16"),
                ..IpamFlags::default()
            }),
            "IP address allocation default subnet 10.2.0.0/16 does not overlap with allocation range 10.32.0.0/12"
        );
        assert_eq!(
            err(IpamFlags {
                range: Some(""),
                default_subnet: Some("10.2.0.0/16"),
                ..IpamFlags::default()
            }),
            "--ipalloc-default-subnet specified without --ipalloc-range"
        );
        assert!(err(IpamFlags {
            init: Some("paxos"),
            ..IpamFlags::default()
        })
        .starts_with("Unable to parse --ipalloc-init: unknown mode \"paxos\""));
        assert!(err(IpamFlags {
            init: Some("seed=zz"),
            ..IpamFlags::default()
        })
        .contains("invalid peer name \"zz\""));
        assert!(err(IpamFlags {
            init: Some("consensus=0"),
            ..IpamFlags::default()
        })
        .contains("invalid peer count"));
        assert_eq!(
            err(IpamFlags {
                init: Some("observer"),
                init_peer_count: Some(3),
                ..IpamFlags::default()
            }),
            IpamConfigError::BothInits.to_string()
        );
    }

    #[test]
    fn init_modes() {
        let mode = |f: IpamFlags<'static>| IpamConfig::from_flags(f).unwrap().unwrap().mode;
        assert_eq!(
            mode(IpamFlags {
                init: Some("consensus=3"),
                ..IpamFlags::default()
            }),
            InitMode::Consensus {
                peer_count: Some(3)
            }
        );
        assert_eq!(
            mode(IpamFlags {
                init_peer_count: Some(2),
                ..IpamFlags::default()
            }),
            InitMode::Consensus {
                peer_count: Some(2)
            }
        );
        assert_eq!(
            mode(IpamFlags {
                init: Some("observer"),
                ..IpamFlags::default()
            }),
            InitMode::Observer
        );
        let InitMode::Seed(p) = mode(IpamFlags {
            init: Some("seed=02:00:00:00:00:01,::2"),
            ..IpamFlags::default()
        }) else {
            panic!("not a seed")
        };
        assert_eq!(p.len(), 2);
    }
}
