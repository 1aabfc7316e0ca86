//! IPAM's records in the state database: the ring (with the peer name it belongs to) and the
//! addresses each ident holds, as JSON, read back into what the allocator starts from.
//!
//! A record that does not parse is treated as absent (the allocator then says "No valid
//! persisted data" and overwrites it); the allocator validates a parsed ring in full before
//! using it, so a damaged or foreign ring never reaches its state.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use weft_core::ipam::allocator::{OwnedData, PersistRecord, Persisted};
use weft_core::ipam::ring::{Entry, RingSnapshot};
use weft_core::ipam::Address;
use weft_types::Ipv4Cidr;
use weft_wire::PeerName;

use crate::store::{Store, StoreError, IPAM_OWNED, IPAM_RING};

#[derive(Serialize, Deserialize)]
struct RingRecord {
    peer: u64,
    start: u32,
    end: u32,
    owner: u64,
    /// token, peer, version, free
    entries: Vec<(u32, u64, u32, u32)>,
    seeds: Vec<u64>,
}

#[derive(Serialize, Deserialize)]
struct OwnedRecord {
    is_container: bool,
    /// address, prefix length
    cidrs: Vec<(u32, u8)>,
}

/// Writes the records the allocator asked for, in one transaction; a later record of the same
/// kind replaces an earlier one.
pub(crate) fn write(store: &Store, records: &[PersistRecord]) -> Result<(), StoreError> {
    let mut values: Vec<(&str, Vec<u8>)> = Vec::new();
    for record in records {
        let (key, bytes) = encode(store, record)?;
        values.retain(|(k, _)| *k != key);
        values.push((key, bytes));
    }
    store.set_records(&values)
}

fn encode(store: &Store, record: &PersistRecord) -> Result<(&'static str, Vec<u8>), StoreError> {
    match record {
        PersistRecord::Ring { peer, ring } => {
            let r = RingRecord {
                peer: peer.0,
                start: ring.start.0,
                end: ring.end.0,
                owner: ring.peer.0,
                entries: ring
                    .entries
                    .iter()
                    .map(|e| (e.token.0, e.peer.0, e.version, e.free))
                    .collect(),
                seeds: ring.seeds.iter().map(|p| p.0).collect(),
            };
            Ok((IPAM_RING, store.json(&r)?))
        }
        PersistRecord::Owned(owned) => {
            let o: BTreeMap<&str, OwnedRecord> = owned
                .iter()
                .map(|(id, d)| {
                    let cidrs = d
                        .cidrs
                        .iter()
                        .map(|c| (u32::from(c.addr()), c.prefix_len()))
                        .collect();
                    (
                        id.as_str(),
                        OwnedRecord {
                            is_container: d.is_container,
                            cidrs,
                        },
                    )
                })
                .collect();
            Ok((IPAM_OWNED, store.json(&o)?))
        }
    }
}

/// What the database holds for IPAM, for [`Allocator::new`](weft_core::ipam::allocator::Allocator::new).
pub(crate) fn load(store: &Store) -> Result<Persisted, StoreError> {
    let mut p = Persisted::default();
    if let Some(r) = store
        .record(IPAM_RING)?
        .and_then(|b| serde_json::from_slice::<RingRecord>(&b).ok())
    {
        p.peer = Some(PeerName(r.peer));
        p.ring = Some(RingSnapshot {
            start: Address(r.start),
            end: Address(r.end),
            peer: PeerName(r.owner),
            entries: r
                .entries
                .into_iter()
                .map(|(token, peer, version, free)| Entry {
                    token: Address(token),
                    peer: PeerName(peer),
                    version,
                    free,
                })
                .collect(),
            seeds: r.seeds.into_iter().map(PeerName).collect(),
        });
    }
    if let Some(o) = store
        .record(IPAM_OWNED)?
        .and_then(|b| serde_json::from_slice::<BTreeMap<String, OwnedRecord>>(&b).ok())
    {
        p.owned = Some(
            o.into_iter()
                .map(|(id, r)| {
                    let cidrs = r
                        .cidrs
                        .into_iter()
                        .filter_map(|(a, len)| Ipv4Cidr::new(a.into(), len).ok())
                        .collect();
                    (
                        id,
                        OwnedData {
                            is_container: r.is_container,
                            cidrs,
                        },
                    )
                })
                .collect(),
        );
    }
    Ok(p)
}
