//! The sans-IO data-plane forwarder (spec §4.2, §4.3, §4.7): which frames go where.
//!
//! Each host's bridge `weave` has two router-facing ports that are *isolated* from each other,
//! so the kernel never passes a frame between them:
//! * a TAP port through which the router sees local containers' frames ("captured") and
//!   through which it injects frames received from the overlay;
//! * a kernel VXLAN port ("fastdp") that carries frames directly between peers connected by
//!   fast datapath, without the router.
//!
//! The [`Forwarder`] decides, per captured frame and per frame record of a received sleeve
//! datagram, whether to drop it, inject it into the bridge, relay it to other peers over
//! sleeve (Weave Net's UDP frame format), or leave it to the kernel. Sleeve carries everything
//! that is not direct fastdp: frames to and from peers whose connection is sleeve, and every
//! relayed (multi-hop) frame. Because the bridge floods a broadcast into VXLAN as well as into
//! the TAP, a sleeve copy of a broadcast captured by a direct fastdp neighbour is relayed but
//! not injected (the bridge already got it over VXLAN); see [`Forwarder::handle_datagram`].
//!
//! Knowledge of the mesh comes through the small [`Fabric`] trait (the `Mesh` implements it
//! from its routes and connections); the forwarder itself only owns the [`MacCache`] and the
//! per-next-hop output batches, drained with [`Forwarder::poll_datagram`].
//!
//! Left out, deliberately: sockets, encryption (the datagrams here are the plaintext form of
//! §4.2, which the encrypting driver seals), heartbeats and PMTU probing (the control plane's;
//! special frames are handed back untouched as [`Delivery::Special`]). The "too big" rule of
//! §4.6 is applied per next hop from its max payload ([`Forwarder::set_max_payload`], which
//! the driver sets from the path MTU): a too-big DF unicast comes back as
//! [`Verdict::FragNeeded`] for the driver to answer with [`pmtu::frag_needed`]; every other
//! frame takes the one socket, and the kernel fragments what is too big. [`offload`] holds the
//! TAP offload helpers: TCP super-packets are segmented to the overlay MTU on capture
//! ([`Forwarder::handle_captured_tso`]) and coalesced again before injection. Nothing here
//! reads a clock: every call that learns or expires takes `now`.
//!
//! How it degrades: malformed input is counted and dropped, never a panic; records before a
//! malformed one in a datagram are still delivered (Weave Net's rule); if the caller stops
//! polling, each next hop's queue is bounded and further frames for it are dropped and
//! counted. The MAC cache is bounded per remote peer and in total (new MACs past a bound are
//! not learnt, counted, their frames handled as usual), and data records that name a peer
//! but come from another UDP address than its connection's are dropped
//! ([`Forwarder::handle_datagram_from`]); both are logged at most once per
//! [`REFUSAL_LOG_INTERVAL`].

mod forward;
mod mac_cache;
pub mod offload;
mod packet;
pub mod pmtu;
mod table;

#[cfg(test)]
mod sim_tests;
#[cfg(test)]
mod tests;

use std::fmt;

use weft_wire::PeerName;

pub use forward::{
    Delivery, DropReason, Forwarder, ForwarderStats, Received, SegmentBatch, Verdict,
    DATAGRAM_OVERHEAD, DEFAULT_MAX_PAYLOAD, MAX_FRAMES_PER_DATAGRAM, MAX_QUEUED_FRAMES,
    REFUSAL_LOG_INTERVAL,
};
pub use mac_cache::{
    CacheFull, Learnt, MacCache, MacOwner, MAC_EXPIRY, MAC_SWEEP_INTERVAL, MAX_MACS,
    MAX_MACS_PER_PEER,
};
pub use table::FabricTable;

/// A hash map on the per-frame path: foldhash rather than std's SipHash, several times
/// cheaper on 6- and 8-byte keys (MACs, peer names) and still seeded per process, so keys a
/// peer picks cannot be aimed at one bucket; every such map is bounded besides.
pub type FastMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;
/// A hash set on the per-frame path; see [`FastMap`].
pub type FastSet<K> = std::collections::HashSet<K, foldhash::fast::RandomState>;

/// What the forwarder needs to know about the mesh, answered from our current view.
///
/// The `Mesh` implements this from its [`Routes`](crate::routes::Routes) snapshot and its
/// live connections; tests implement it over a fixed topology. Answers may change between
/// calls (routes are recalculated); the forwarder keeps nothing from them.
pub trait Fabric {
    /// Our own peer name.
    fn our_name(&self) -> PeerName;

    /// The data-plane next hop towards `dst` (`Routes::unicast`); `None` if unreachable.
    fn unicast_next_hop(&self, dst: PeerName) -> Option<PeerName>;

    /// The peers to which we forward a broadcast captured by `src` (`Routes::broadcast`); for
    /// `src` = ourself this is every direct neighbour.
    fn broadcast_next_hops(&self, src: PeerName) -> &[PeerName];

    /// Whether `peer` is a direct neighbour connected by fast datapath (kernel VXLAN), so that
    /// our bridge and theirs exchange frames without the router.
    fn is_direct_fastdp(&self, peer: PeerName) -> bool;

    /// Whether `peer` is in our topology view (ourself included). Records naming an unknown
    /// source or destination peer are dropped (spec §4.2 receive rule 6).
    fn is_known_peer(&self, peer: PeerName) -> bool;

    /// Whether `hop`, receiving a broadcast captured by `src`, would forward it to further
    /// peers (its next hops in `src`'s broadcast tree are not empty).
    ///
    /// Only asked for `src` = ourself and `hop` a direct fastdp neighbour: such a hop already
    /// got the frame over VXLAN and will not inject our sleeve copy, so the copy is only worth
    /// sending when it relays. The default `true` always sends it, which is correct but costs
    /// one redundant datagram per fastdp neighbour and broadcast.
    fn broadcast_has_onward_hops(&self, hop: PeerName, src: PeerName) -> bool {
        let _ = (hop, src);
        true
    }

    /// The same answers as [`Self::broadcast_next_hops`], as a handle another thread can keep,
    /// if this fabric has one. [`FabricTable::capture`] keeps it instead of asking for every
    /// source (a route search each). `None` (the default) makes capture ask.
    fn broadcast_routes(&self) -> Option<crate::routes::BroadcastRoutes> {
        None
    }
}

/// An Ethernet MAC address.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Mac(pub [u8; 6]);

impl Mac {
    /// The broadcast address `ff:ff:ff:ff:ff:ff`.
    pub const BROADCAST: Self = Self([0xff; 6]);
    /// The IEEE 802.1D bridge group address that STP BPDUs are sent to; never forwarded.
    pub const STP: Self = Self([0x01, 0x80, 0xc2, 0x00, 0x00, 0x00]);

    /// Whether this is a group (broadcast or multicast) address: bit 0 of the first octet.
    pub fn is_group(self) -> bool {
        self.0[0] & 0x01 != 0
    }

    /// The destination MAC of an Ethernet frame; `None` if the frame is shorter than 6 bytes.
    pub fn dst_of(frame: &[u8]) -> Option<Self> {
        frame.first_chunk::<6>().map(|b| Self(*b))
    }

    /// The source MAC of an Ethernet frame; `None` if the frame is shorter than 12 bytes.
    pub fn src_of(frame: &[u8]) -> Option<Self> {
        frame
            .get(6..12)
            .and_then(|b| b.first_chunk::<6>())
            .map(|b| Self(*b))
    }
}

impl fmt::Display for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            b[0], b[1], b[2], b[3], b[4], b[5]
        )
    }
}

impl fmt::Debug for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}
