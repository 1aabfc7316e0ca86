//! weft-types: value types that several weft crates share and none of them owns.
//!
//! Today that is [`Ipv4Cidr`], the one CIDR type, and [`format_mac`], the one way weft writes
//! a MAC address (status, `ps`, firewall rules). The CIDR type: `weft attach` and `weft expose` take it, the
//! router puts it on interfaces, the firewall (weft-fw) matches subnets with it, and IPAM in
//! weft-core hands it out (its own address ranges come from `weft_core::ipam::CidrBlock`, and
//! its parsing, with Weave Net's error texts, from `weft_core::ipam::parse_subnet`). It lives in
//! a crate of its own, with no dependency but `thiserror`, so that every crate can use it
//! without a cycle: weft-attach depends on weft-fw (it writes a container's multicast rules),
//! so the type cannot live in weft-attach; a firewall crate is the wrong home for a type IPAM
//! in weft-core uses; and weft-wire owns wire formats.
//!
//! Left out: IPv6 (weft, like Weave Net, addresses containers over IPv4 only).
#![forbid(unsafe_code)]
#![warn(missing_docs)]
// Tests may unwrap: a panic is how they fail.
#![cfg_attr(test, allow(clippy::unwrap_used))]

mod cidr;

pub use cidr::{CidrError, Ipv4Cidr};

/// `aa:bb:cc:dd:ee:ff`.
pub fn format_mac(mac: &[u8; 6]) -> String {
    let [a, b, c, d, e, f] = mac;
    format!("{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{f:02x}")
}
