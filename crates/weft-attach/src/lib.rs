//! weft-attach: connecting containers to the weave bridge — `weft attach`, `weft detach` and
//! `weft ps` (Weave Net's `weaveutil attach-container` / `detach-container` /
//! `container-addrs`).
//!
//! A container is named as `netns:NAME` (a namespace under /run/netns) or `pid:PID`
//! ([`Container`]); Docker containers arrive with the Docker integration. Attaching creates the
//! veth pair `vethwepl<id>`/`vethwepg<id>`, puts the host end on the bridge and moves the other
//! end into the container as `ethwe`, adds the addresses, lets multicast in through `ethwe`
//! only from their subnets (weft's nftables table in the container's namespace), announces
//! each new address with gratuitous ARPs once the interface has carrier, and adds the
//! multicast route last. Any failure after the veth exists deletes it again, so a failed
//! attach leaves nothing behind.
//!
//! This is the netlink plumbing only, with no router in it: the CLI runs it in its own
//! process, and a CNI plugin can link it without the daemon's HTTP server, database or
//! metrics. [`attach()`] and [`ps()`] are async over a host-side [`weft_netdev::Netdev`];
//! [`blocking`] wraps them for callers without a runtime. Addresses are
//! [`weft_types::Ipv4Cidr`], the one CIDR type of weft.
//!
//! Left out: IPAM (`net:` arguments), DNS registration and `/etc/hosts` rewriting, which
//! need the router.
#![forbid(unsafe_code)]
#![warn(missing_docs)]
// Tests may unwrap: a panic is how they fail.
#![cfg_attr(test, allow(clippy::unwrap_used))]

mod announce;
mod attach;
pub mod blocking;
mod container;

use std::net::Ipv4Addr;

use weft_netdev::NetdevError;
use weft_types::Ipv4Cidr;

pub use attach::{announce_interfaces, attach, bridge_veth, detach, ps, PsEntry};
pub use container::{named_netns, Container};

/// The weave bridge's name.
pub const BRIDGE: &str = "weave";
/// The interface name inside containers.
pub const CONTAINER_IF: &str = "ethwe";

/// Why attaching, detaching or listing failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AttachError {
    /// Not a CIDR.
    #[error("invalid address {0:?}: expected a.b.c.d/len (optionally prefixed by ip:)")]
    BadCidr(String),
    /// A container reference weft cannot resolve.
    #[error("container {0}: not found (name containers as netns:NAME or pid:PID; Docker containers need the Docker integration)")]
    UnknownContainer(String),
    /// The container shares the host's network namespace.
    #[error("Container is running in the host network namespace, and therefore cannot be connected to weave - perhaps the container was started with --net=host")]
    HostNetns,
    /// The router has not created the bridge.
    #[error("bridge {BRIDGE:?} does not exist: start the router first with 'weft launch'")]
    NoBridge,
    /// Another interface on the weave network answers for the address.
    #[error("address {addr} is already in use on the weave network (by {mac})")]
    InUse {
        /// The address.
        addr: Ipv4Addr,
        /// Who answered.
        mac: String,
    },
    /// `detach` on a container without a weave interface.
    #[error("container {0} is not attached to weave")]
    NotAttached(String),
    /// A kernel operation failed.
    #[error(transparent)]
    Netdev(#[from] NetdevError),
    /// The container's multicast rules could not be set.
    #[error("container multicast rules: {0}")]
    Firewall(#[from] weft_fw::FwError),
    /// A thread-local runtime could not be started.
    #[error("starting a runtime: {0}")]
    Runtime(std::io::Error),
}

/// Parses an address argument as Weave Net's commands take it: `a.b.c.d/len`, optionally
/// prefixed by `ip:`.
pub fn parse_cidr(s: &str) -> Result<Ipv4Cidr, AttachError> {
    s.strip_prefix("ip:")
        .unwrap_or(s)
        .parse()
        .map_err(|_| AttachError::BadCidr(s.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_address_arguments() {
        assert_eq!(
            parse_cidr("ip:10.2.1.1/24").unwrap().to_string(),
            "10.2.1.1/24"
        );
        assert_eq!(
            parse_cidr("10.2.1.1/24").unwrap().to_string(),
            "10.2.1.1/24"
        );
        for bad in [
            "10.2.1.1",
            "10.2.1.1/33",
            "net:10.0.0.0/8",
            "x/24",
            "10.2.1.1/",
            "ip:",
        ] {
            let e = parse_cidr(bad).unwrap_err();
            assert_eq!(
                e.to_string(),
                format!(
                    "invalid address {bad:?}: expected a.b.c.d/len (optionally prefixed by ip:)"
                )
            );
        }
    }
}
