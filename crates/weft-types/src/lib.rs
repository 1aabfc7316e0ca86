//! weft-types: value types that several weft crates share and none of them owns.
//!
//! Today that is [`Ipv4Cidr`], the one CIDR type: `weft attach` and `weft expose` take it, the
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
