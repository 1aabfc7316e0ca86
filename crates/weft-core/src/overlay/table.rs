//! [`FabricTable`]: the forwarder's view of the mesh as plain owned tables. The router's data
//! path thread works from one captured from the `Mesh` (it cannot borrow the mesh, which lives
//! on another task), and the forwarder tests build theirs by hand.
//!
//! Capturing costs O(V log V) for V known peers: unicast hops, fastdp neighbours and known
//! peers are copied, but broadcast hops are not computed per source (a route search each, so
//! O(V·(V + E)) for all of them). When the fabric offers a shareable
//! [`BroadcastRoutes`](crate::routes::BroadcastRoutes) the table keeps that handle and the
//! data path computes a source's hops the first time it relays a broadcast from it, once per
//! topology snapshot, sharing the cache with the mesh.

use weft_wire::PeerName;

use super::{Fabric, FastMap, FastSet};
use crate::routes::BroadcastRoutes;

/// Every answer of a [`Fabric`], precomputed, except broadcast hops when a lazy
/// [`BroadcastRoutes`] handle is held.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct FabricTable {
    /// Our own name.
    pub us: PeerName,
    /// Unicast next hop per destination.
    pub unicast: FastMap<PeerName, PeerName>,
    /// Broadcast next hops per source; absent means none, or ask `broadcast_routes`.
    pub broadcast: FastMap<PeerName, Vec<PeerName>>,
    /// Broadcast next hops for sources not in `broadcast`, computed on first use.
    pub broadcast_routes: Option<BroadcastRoutes>,
    /// Direct fastdp neighbours.
    pub fastdp: FastSet<PeerName>,
    /// Peers in our topology view.
    pub known: FastSet<PeerName>,
    /// `(hop, src)` pairs where `hop` has onward hops in `src`'s broadcast tree; `None` means
    /// unknown, so a copy is always sent (the [`Fabric`] default).
    pub onward: Option<FastSet<(PeerName, PeerName)>>,
}

impl FabricTable {
    /// Captures what `fabric` answers about each of `peers` (pass every known peer). Broadcast
    /// hops are asked per peer only when `fabric` has no [`Fabric::broadcast_routes`] handle.
    pub fn capture(fabric: &impl Fabric, peers: &[PeerName]) -> Self {
        let mut t = Self {
            us: fabric.our_name(),
            broadcast_routes: fabric.broadcast_routes(),
            ..Self::default()
        };
        for &n in peers {
            if let Some(hop) = fabric.unicast_next_hop(n) {
                t.unicast.insert(n, hop);
            }
            if t.broadcast_routes.is_none() {
                let hops = fabric.broadcast_next_hops(n);
                if !hops.is_empty() {
                    t.broadcast.insert(n, hops.to_vec());
                }
            }
            if fabric.is_direct_fastdp(n) {
                t.fastdp.insert(n);
            }
            if fabric.is_known_peer(n) {
                t.known.insert(n);
            }
        }
        t
    }
}

impl Fabric for FabricTable {
    fn our_name(&self) -> PeerName {
        self.us
    }
    fn unicast_next_hop(&self, dst: PeerName) -> Option<PeerName> {
        self.unicast.get(&dst).copied()
    }
    fn broadcast_next_hops(&self, src: PeerName) -> &[PeerName] {
        match (self.broadcast.get(&src), &self.broadcast_routes) {
            (Some(hops), _) => hops,
            (None, Some(lazy)) => lazy.hops(src),
            (None, None) => &[],
        }
    }
    fn is_direct_fastdp(&self, peer: PeerName) -> bool {
        self.fastdp.contains(&peer)
    }
    fn is_known_peer(&self, peer: PeerName) -> bool {
        self.known.contains(&peer)
    }
    fn broadcast_has_onward_hops(&self, hop: PeerName, src: PeerName) -> bool {
        self.onward.as_ref().is_none_or(|o| o.contains(&(hop, src)))
    }
    fn broadcast_routes(&self) -> Option<BroadcastRoutes> {
        self.broadcast_routes.clone()
    }
}
