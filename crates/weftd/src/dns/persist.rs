//! The entries we registered, in the state database (record [`DNS_ENTRIES`]), so that a
//! restarted router registers again the names of containers that still run, as Weave Net
//! does by asking Docker at start (`populateDNS`).
//!
//! Only live entries of our own origin are kept: other peers' entries come back with their
//! gossip, and tombstones need not survive (a peer that still holds one of our old entries
//! hands it to us, and the zone's resurrection guard settles it). A record that does not
//! parse is treated as absent and overwritten by the next change.

use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

use crate::store::{Store, StoreError, DNS_ENTRIES};

/// One registration: container (or ident), address, hostname as supplied.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Registration {
    pub(crate) container: String,
    pub(crate) addr: Ipv4Addr,
    pub(crate) hostname: String,
}

/// Replaces the record with `entries`.
pub(crate) fn write(store: &Store, entries: &[Registration]) -> Result<(), StoreError> {
    store.set_record(DNS_ENTRIES, &store.json(&entries)?)
}

/// What the record holds; nothing if absent or unreadable.
pub(crate) fn load(store: &Store) -> Vec<Registration> {
    match store.record(DNS_ENTRIES) {
        Ok(Some(b)) => serde_json::from_slice(&b).unwrap_or_else(|e| {
            tracing::warn!("[dns] ignoring unreadable persisted entries: {e}");
            Vec::new()
        }),
        Ok(None) => Vec::new(),
        Err(e) => {
            tracing::warn!("[dns] cannot read persisted entries: {e}");
            Vec::new()
        }
    }
}
