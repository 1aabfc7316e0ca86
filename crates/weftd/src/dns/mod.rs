//! weftDNS in the daemon: everything around weft-core's sans-IO zone and responder.
//!
//! - [`DnsConfig`]: the `--dns-*` flags and where the server listens by default (the Docker
//!   bridge's IPv4 address, port 53, as Weave Net's launch script picks it).
//! - [`task`]: the one task that owns the zone and publishes snapshots of it to [`udp`], the
//!   thread that answers UDP queries; the task answers TCP queries handed to it by
//!   [`server`], the HTTP API's requests
//!   ([`http`]), what arrives on the `nameserver` gossip channel, and time (gossip, tombstone
//!   purge, containers that went away); it keeps our own entries in the state database
//!   ([`persist`]).
//! - [`upstream`]: the upstream servers of the resolv.conf and the forwarding of queries
//!   outside the domain.

pub mod http;
mod persist;
pub mod server;
pub mod task;
pub mod udp;
pub mod upstream;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use weft_core::dns::zone::{fqdn, DEFAULT_DOMAIN};

/// The DNS port.
pub const DNS_PORT: u16 = 53;
/// The bridge whose address the server listens on by default (`$DOCKER_BRIDGE`).
pub const DEFAULT_BRIDGE: &str = "docker0";
/// Weave Net's `--resolv-conf` default.
pub const DEFAULT_RESOLV_CONF: &str = "/etc/resolv.conf";

/// How weftDNS runs; `None` in the router config when it is off (`--no-dns`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsConfig {
    /// `--dns-domain`, fully qualified.
    pub domain: String,
    /// `--dns-listen-address`: where the UDP and TCP servers listen. A given address must be
    /// bound or the router stops; the default ([`DnsConfig::listen_on`]) that cannot be bound
    /// only leaves the server off.
    pub listen: Option<SocketAddr>,
    /// `--dns-ttl`, seconds.
    pub ttl: u32,
    /// `--dns-fallback-timeout`: how long each upstream server is given.
    pub fallback_timeout: Duration,
    /// `--resolv-conf`: where the upstream servers are read from.
    pub resolv_conf: PathBuf,
}

/// The DNS flags as given on the command line.
#[derive(Debug, Clone, Default)]
pub struct DnsFlags<'a> {
    /// `--no-dns`.
    pub off: bool,
    /// `--dns-domain`.
    pub domain: Option<&'a str>,
    /// `--dns-listen-address`.
    pub listen: Option<&'a str>,
    /// `--dns-ttl`.
    pub ttl: Option<u32>,
    /// `--dns-fallback-timeout`, milliseconds.
    pub fallback_timeout_ms: Option<u64>,
    /// `--resolv-conf`.
    pub resolv_conf: Option<&'a str>,
}

/// DNS flags that cannot work; each names the flag and what would be right.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DnsConfigError {
    /// A listen address that is no `IP:PORT`.
    #[error("--dns-listen-address: invalid address {0:?}, expected IP:PORT, e.g. 172.17.0.1:53")]
    Listen(String),
    /// A domain that is no DNS name.
    #[error("--dns-domain: invalid domain {0:?}, expected a DNS name such as weave.local.")]
    Domain(String),
}

impl DnsConfig {
    /// The configuration the flags ask for; `Ok(None)` when DNS is off.
    pub fn from_flags(flags: &DnsFlags<'_>) -> Result<Option<Self>, DnsConfigError> {
        if flags.off {
            return Ok(None);
        }
        let domain = fqdn(flags.domain.unwrap_or(DEFAULT_DOMAIN));
        let bad_label = |l: &str| {
            l.is_empty()
                || l.len() > 63
                || !l
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        };
        let labels: Vec<&str> = domain.trim_end_matches('.').split('.').collect();
        if domain == "." || domain.len() > 254 || labels.iter().any(|l| bad_label(l)) {
            return Err(DnsConfigError::Domain(
                flags.domain.unwrap_or_default().to_string(),
            ));
        }
        let listen = flags
            .listen
            .map(|s| parse_listen(s).ok_or_else(|| DnsConfigError::Listen(s.to_string())))
            .transpose()?;
        Ok(Some(Self {
            domain,
            listen,
            ttl: flags.ttl.unwrap_or(weft_core::dns::responder::DEFAULT_TTL),
            fallback_timeout: flags
                .fallback_timeout_ms
                .map_or(upstream::DEFAULT_TIMEOUT, Duration::from_millis),
            resolv_conf: PathBuf::from(flags.resolv_conf.unwrap_or(DEFAULT_RESOLV_CONF)),
        }))
    }
}

impl DnsConfig {
    /// Where the server listens: the address given, else the Docker bridge's IPv4 address
    /// (`bridge`) port 53, as Weave Net's launch script passes it, else all addresses port 53
    /// (the router's own default).
    pub fn listen_on(&self, bridge: Option<Ipv4Addr>) -> SocketAddr {
        self.listen.unwrap_or_else(|| {
            SocketAddr::new(
                IpAddr::V4(bridge.unwrap_or(Ipv4Addr::UNSPECIFIED)),
                DNS_PORT,
            )
        })
    }
}

/// `IP:PORT`, or `:PORT` (all addresses), as Go's listener takes it.
fn parse_listen(s: &str) -> Option<SocketAddr> {
    if let Some(port) = s.strip_prefix(':') {
        return Some(SocketAddr::new(
            IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            port.parse().ok()?,
        ));
    }
    s.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_follow_weave() {
        let c = DnsConfig::from_flags(&DnsFlags::default())
            .unwrap()
            .unwrap();
        assert_eq!(c.domain, "weave.local.");
        assert_eq!(
            c.listen_on(Some(Ipv4Addr::new(172, 17, 0, 1))).to_string(),
            "172.17.0.1:53"
        );
        assert_eq!(c.ttl, 1);
        assert_eq!(c.fallback_timeout, Duration::from_secs(5));
        assert_eq!(c.resolv_conf, PathBuf::from("/etc/resolv.conf"));
        assert_eq!(c.listen_on(None).to_string(), "0.0.0.0:53");
        let off = DnsFlags {
            off: true,
            ..DnsFlags::default()
        };
        assert_eq!(DnsConfig::from_flags(&off).unwrap(), None);
    }

    #[test]
    fn flags_are_checked() {
        let with = |domain, listen| {
            DnsConfig::from_flags(&DnsFlags {
                domain,
                listen,
                ..DnsFlags::default()
            })
        };
        let c = with(Some("example.test"), Some(":5353")).unwrap().unwrap();
        assert_eq!(c.domain, "example.test.");
        assert_eq!(c.listen_on(None).to_string(), "0.0.0.0:5353");
        assert_eq!(
            with(None, Some("10.0.0.1")).unwrap_err().to_string(),
            "--dns-listen-address: invalid address \"10.0.0.1\", expected IP:PORT, e.g. 172.17.0.1:53"
        );
        assert!(with(Some("a..b"), None).is_err());
        assert!(with(Some("."), None).is_err());
        assert!(with(Some("sp ace.local"), None).is_err());
    }
}
