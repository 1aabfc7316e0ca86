//! WeaveDNS without sockets: the mesh-wide zone of container names, its gossip channel and the
//! query responder (spec §5).
//!
//! * [`zone`]: the entries with Weave Net's identity, order and rules — registration,
//!   tombstones (ours only), deletion of a departed peer's entries, merge of received gossip
//!   (clock window, unknown origins, resurrection guard, versions), tombstone purge, lookups.
//! * [`channel`]: the `nameserver` gossip channel between the mesh and the zone.
//! * [`responder`]: query bytes in, an answer, a forward or nothing out.
//!
//! The DNS task owns one [`Zone`] and one [`Responder`]; it passes Unix seconds as `now`, an
//! RNG for the shuffle, and does the sockets and the upstream forwarding itself. The HTTP API
//! (`PUT`/`DELETE /name/…`) maps to [`Zone::add`] and [`Zone::tombstone`], `GET /name` to
//! [`Zone::entries`].

pub mod channel;
pub mod responder;
pub mod zone;

pub use responder::{relay_upstream, server_failure, Action, Responder, Transport};
pub use zone::{Received, Zone, ZoneConfig, ZoneError};

#[cfg(test)]
mod tests;
