//! weft-fw: weft's firewall and NAT rules as a model, rendered to nftables JSON and applied
//! atomically.
//!
//! Weave Net installs iptables rules into the shared `filter` and `nat` tables (its `FORWARD`
//! block, `INPUT` guards, `WEAVE-EXPOSE` and `nat/WEAVE`; spec `weave-edges.md` §3.5–3.7). weft
//! instead owns one nftables table, `table inet weft`, and expresses the *effect* of those rules
//! there. The table is created, replaced and deleted as a unit in single nft transactions, so
//! weft never edits another program's rules, and it works the same whether the host's other
//! software uses iptables-legacy, iptables-nft or plain nft.
//!
//! * [`RuleSet`] is the pure model, built from plain inputs (bridge names, ports, exposed CIDRs);
//!   [`RuleSet::to_nft_json`] and [`RuleSet::delete_json`] render it for `nft -j -f -`.
//! * [`Nft`] (and the [`apply`], [`remove`], [`list`] shorthands) runs `nft`. This is the one
//!   place weft execs a tool: nft's JSON interface is the stable, documented way to drive the
//!   kernel's nftables without linking libnftables (a C library with no stable Rust binding) or
//!   hand-building netlink batches whose expression encoding changes between kernels.
//!
//! Left out: weave-npc's rules (`--expect-npc`), the `--no-masq-local` ipset, the fastdp IPsec
//! marks (§5.4); they belong elsewhere. The per-container multicast rules (§3.4) are a
//! [`ContainerRuleSet`], applied inside the container's namespace. The
//! iptables "canary" is unnecessary: nothing but weft writes into weft's table, and a full
//! `nft flush ruleset` is detected by [`Nft::is_installed`] returning `false`.
//!
//! # What an nft table can and cannot do next to other tables
//!
//! Every base chain registered at a hook sees the packet, in priority order. A `drop` anywhere
//! is final. An `accept` only ends evaluation of *that* base chain: the packet then meets the
//! next table's chain at the same hook. So weft's drops (docker bridge → weave, docker bridge →
//! the router's ports, non-local access to the control and status ports, VXLAN from hosts that
//! are not fastdp peers) always take effect, but weft's
//! accepts cannot override a drop elsewhere — notably Docker's `FORWARD` policy `DROP`, which
//! Weave's `WEAVE-EXPOSE` and `-i weave ! -o weave -j ACCEPT` rules existed to get past. On a
//! host where another table drops weave's forwarded traffic, that table's owner has to allow it:
//! on a Docker host weft puts three tagged rules at the top of Docker's `DOCKER-USER` chain, the
//! one place in another program's rules it writes ([`docker_user`]). weft's own
//! chains keep policy `accept` so that weft never blocks anything but the traffic Weave blocked.
//! See [`render`] for the priorities chosen.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod container;
pub mod docker_user;
mod error;
mod model;
mod nft;
pub mod render;

pub use container::ContainerRuleSet;
pub use error::FwError;
pub use model::{DockerBridge, Exposed, IfName, RuleSet};
pub use nft::{apply, list, remove, Nft};
pub use render::{TABLE_FAMILY, TABLE_NAME};
