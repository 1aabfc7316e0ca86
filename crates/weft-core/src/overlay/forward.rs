//! The [`Forwarder`]: capture, injection and relay decisions (spec §4.7) and the per-next-hop
//! sleeve datagram batches (spec §4.2, "Batching").

use std::collections::{HashSet, VecDeque};
use std::mem;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use weft_wire::sleeve::{self, Frame, SleeveError, ETH_HEADER_LEN, RECORD_HEADER_LEN};
use weft_wire::PeerName;

use super::mac_cache::{CacheFull, Learnt, MacCache, MacOwner};
use super::offload::Tso;
use super::pmtu::{self, PathChoice};
use super::{Fabric, FastMap, Mac};

/// Default largest datagram (sender name + records) per next hop: the largest UDP payload of
/// an IPv4 packet, 65535 − 28, which is what Weave Net allows on the non-DF path.
pub const DEFAULT_MAX_PAYLOAD: usize = 65535 - 28;
/// Most frame records batched into one datagram (Weave Net drains up to 100 per packet).
pub const MAX_FRAMES_PER_DATAGRAM: usize = 100;
/// Most frame records queued for one next hop between polls; more are dropped
/// ([`DropReason::QueueFull`]), so a caller that stops polling cannot grow memory without
/// bound.
pub const MAX_QUEUED_FRAMES: usize = 1024;
/// Most emptied buffers kept for reuse.
const MAX_SPARE_BUFFERS: usize = 64;
/// What a datagram carries besides the frame: sender name, record header, and the frame's
/// Ethernet header (the overlay MTU counts IP bytes). `max_payload − this` is the overlay MTU.
pub const DATAGRAM_OVERHEAD: usize = 6 + RECORD_HEADER_LEN + ETH_HEADER_LEN;
/// Least time between two log lines about one kind of refused input (a full MAC cache,
/// datagrams from the wrong address), however often it happens.
pub const REFUSAL_LOG_INTERVAL: Duration = Duration::from_secs(60);

/// Why a frame or record was dropped. Each reason has its counter in [`ForwarderStats`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DropReason {
    /// Shorter than an Ethernet header, a group source MAC, a captured frame that looks like
    /// a special (all-zero header) frame, or a special record not from the sender to us.
    Malformed,
    /// Longer than a sleeve record can carry (65535 bytes), or a flood copy of a DF IPv4
    /// frame longer than the next hop's overlay MTU (spec §4.6).
    TooBig,
    /// A captured frame whose source MAC is bound to a remote peer.
    MacConflict,
    /// A captured STP BPDU (destination `01:80:c2:00:00:00`).
    Stp,
    /// A captured frame for a MAC behind our own bridge (the bridge should have delivered it).
    LocalDst,
    /// No route to the destination peer.
    NoRoute,
    /// A record naming a source or destination peer not in our topology.
    UnknownPeer,
    /// A record claiming to be captured by ourself came back to us.
    Looped,
    /// The next hop's queue holds [`MAX_QUEUED_FRAMES`] already.
    QueueFull,
    /// A data record in a datagram that came from another UDP address than the one of the
    /// connection with the peer it names (see [`Forwarder::handle_datagram_from`]).
    WrongSource,
}

/// What [`Forwarder::handle_captured`] did with a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Queued as one record towards a known remote MAC, for `next_hop`.
    Unicast {
        /// The peer the datagram goes to.
        next_hop: PeerName,
    },
    /// Queued as one record per next hop of our broadcast tree (possibly none).
    Flooded {
        /// How many copies were queued.
        copies: usize,
    },
    /// For a MAC behind a direct fastdp neighbour: the kernel's VXLAN carries it, nothing
    /// queued.
    Fastdp,
    /// An IPv4 frame with DF set too big for the next hop's overlay MTU (spec §4.6): nothing
    /// queued; the caller injects [`pmtu::frag_needed`] with this `mtu` back to the sender.
    FragNeeded {
        /// The next hop's overlay MTU.
        mtu: u16,
    },
    /// Dropped.
    Dropped(DropReason),
}

/// Where a captured frame goes, once the MAC rules have been applied.
enum Target {
    Unicast { peer: PeerName, hop: PeerName },
    Flood,
}

/// Sleeve datagrams of one size (the last may be shorter) for one next hop, back to back, as
/// built by [`Forwarder::handle_captured_tso`] for one UDP GSO send.
#[derive(Debug, Default)]
pub struct SegmentBatch {
    buf: Vec<u8>,
    datagram_len: usize,
    count: usize,
    peer: Option<PeerName>,
}

impl SegmentBatch {
    /// An empty batch.
    pub fn new() -> Self {
        Self::default()
    }

    /// The next hop, if the batch holds anything.
    pub fn peer(&self) -> Option<PeerName> {
        self.peer.filter(|_| self.count > 0)
    }

    /// Size of every datagram but the last.
    pub fn datagram_len(&self) -> usize {
        self.datagram_len
    }

    /// How many datagrams.
    pub fn len(&self) -> usize {
        self.count
    }

    /// Whether the batch is empty.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// All datagrams back to back.
    pub fn bytes(&self) -> &[u8] {
        &self.buf
    }

    /// The datagrams one by one.
    pub fn datagrams(&self) -> impl Iterator<Item = &[u8]> {
        self.buf.chunks(self.datagram_len.max(1))
    }

    /// Empties the batch, keeping its buffer.
    pub fn clear(&mut self) {
        self.buf.clear();
        self.count = 0;
        self.datagram_len = 0;
        self.peer = None;
    }
}

/// A frame for the local host, handed to the callback of [`Forwarder::handle_datagram`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery<'a> {
    /// An Ethernet frame to write into the bridge's TAP port.
    Inject(&'a [u8]),
    /// A special (control) frame — heartbeat, PMTU or fragmentation test — from the datagram's
    /// sender to us, for the control plane (spec §4.3). Never forwarded or injected.
    Special {
        /// The peer that sent the datagram (and captured the frame).
        sender: PeerName,
        /// The whole special frame, zero Ethernet header included.
        frame: &'a [u8],
    },
}

/// What [`Forwarder::handle_datagram`] did with one datagram.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Received {
    /// The datagram's sender (this hop).
    pub sender: PeerName,
    /// Well-formed records parsed.
    pub records: usize,
    /// Frames handed out as [`Delivery::Inject`].
    pub injected: usize,
    /// Records queued towards other peers.
    pub relayed: usize,
    /// Frames handed out as [`Delivery::Special`].
    pub specials: usize,
    /// Records dropped (see [`ForwarderStats`] for why).
    pub dropped: usize,
    /// The malformed tail that ended parsing, if any; the records before it were handled.
    pub error: Option<SleeveError>,
}

/// Counters since the forwarder was created.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ForwarderStats {
    /// Frames passed to [`Forwarder::handle_captured`].
    pub captured: u64,
    /// Non-special records parsed from datagrams.
    pub received: u64,
    /// Special frames handed to the control plane.
    pub specials: u64,
    /// Frames injected into the bridge.
    pub injected: u64,
    /// Records queued for captured frames (unicasts plus flood copies).
    pub sent: u64,
    /// Records queued for received frames (relays plus onward flood copies).
    pub relayed: u64,
    /// Captured unicasts left to the kernel's fastdp path.
    pub fastdp: u64,
    /// Broadcast copies from a direct fastdp neighbour not injected (already got over VXLAN).
    pub skipped_injection: u64,
    /// MACs learnt at a different peer than before.
    pub mac_moves: u64,
    /// Datagrams handed out by [`Forwarder::poll_datagram`].
    pub datagrams: u64,
    /// Dropped: [`DropReason::NoRoute`].
    pub dropped_no_route: u64,
    /// Dropped: [`DropReason::UnknownPeer`].
    pub dropped_unknown_peer: u64,
    /// Dropped: [`DropReason::Malformed`], plus datagrams too short for a sender and malformed
    /// datagram tails.
    pub dropped_malformed: u64,
    /// Dropped: [`DropReason::LocalDst`].
    pub dropped_local_dst: u64,
    /// Dropped: [`DropReason::Stp`].
    pub dropped_stp: u64,
    /// Dropped: [`DropReason::MacConflict`].
    pub dropped_mac_conflict: u64,
    /// Dropped: [`DropReason::TooBig`].
    pub dropped_too_big: u64,
    /// Dropped: [`DropReason::Looped`].
    pub dropped_looped: u64,
    /// Dropped: [`DropReason::QueueFull`].
    pub dropped_queue_full: u64,
    /// Dropped: [`DropReason::WrongSource`].
    pub dropped_wrong_source: u64,
    /// Source MACs not learnt because their peer's share of the MAC cache, or the whole
    /// cache, was full (the frames themselves were handled as usual).
    pub macs_not_learnt: u64,
    /// Too-big DF unicasts answered with [`Verdict::FragNeeded`].
    pub frag_needed: u64,
    /// TCP super-packets segmented by [`Forwarder::handle_captured_tso`].
    pub tso_packets: u64,
}

impl ForwarderStats {
    fn count_drop(&mut self, reason: DropReason) {
        let c = match reason {
            DropReason::Malformed => &mut self.dropped_malformed,
            DropReason::TooBig => &mut self.dropped_too_big,
            DropReason::MacConflict => &mut self.dropped_mac_conflict,
            DropReason::Stp => &mut self.dropped_stp,
            DropReason::LocalDst => &mut self.dropped_local_dst,
            DropReason::NoRoute => &mut self.dropped_no_route,
            DropReason::UnknownPeer => &mut self.dropped_unknown_peer,
            DropReason::Looped => &mut self.dropped_looped,
            DropReason::QueueFull => &mut self.dropped_queue_full,
            DropReason::WrongSource => &mut self.dropped_wrong_source,
        };
        *c += 1;
    }
}

/// Lets one log line through per [`REFUSAL_LOG_INTERVAL`] and counts what it held back, so
/// that input anyone can send cannot flood the log.
#[derive(Debug, Default)]
struct LogLimit {
    next: Option<Instant>,
    held_back: u64,
}

impl LogLimit {
    /// `Some(n)` when a line may be logged now, `n` being how many were held back before it.
    fn allow(&mut self, now: Instant) -> Option<u64> {
        if self.next.is_some_and(|t| now < t) {
            self.held_back += 1;
            return None;
        }
        self.next = Some(now + REFUSAL_LOG_INTERVAL);
        Some(mem::take(&mut self.held_back))
    }
}

/// Output state for one next hop.
#[derive(Debug)]
struct PeerQueue {
    /// Largest datagram to build, sender name included.
    max_payload: usize,
    /// The datagram being filled: our name then `pending_frames` records (stale bytes if 0).
    pending: Vec<u8>,
    pending_frames: usize,
    /// Closed datagrams with their record counts, oldest first.
    full: VecDeque<(Vec<u8>, usize)>,
    /// Records in `pending` and `full`.
    queued_frames: usize,
    /// Whether the peer is in `Forwarder::ready`.
    scheduled: bool,
}

impl PeerQueue {
    fn new(max_payload: usize) -> Self {
        Self {
            max_payload,
            pending: Vec::new(),
            pending_frames: 0,
            full: VecDeque::new(),
            queued_frames: 0,
            scheduled: false,
        }
    }
}

/// The data-plane forwarder of one peer: owns the [`MacCache`] and the output batches.
///
/// Feed it captured frames ([`Self::handle_captured`]) and received sleeve datagrams
/// ([`Self::handle_datagram`]), then drain [`Self::poll_datagram`] until `None` and send each
/// datagram to its peer. Handling several inputs before polling batches more records per
/// datagram. Call [`Self::expire`] every [`MAC_SWEEP_INTERVAL`](super::MAC_SWEEP_INTERVAL)
/// and [`Self::forget_peer`] when a peer leaves the topology.
#[derive(Debug)]
pub struct Forwarder {
    macs: MacCache,
    queues: FastMap<PeerName, PeerQueue>,
    /// Peers with queued records, served round-robin.
    ready: VecDeque<PeerName>,
    /// Emptied buffers, reused for new datagrams.
    spare: Vec<Vec<u8>>,
    stats: ForwarderStats,
    mac_full_log: LogLimit,
    wrong_source_log: LogLimit,
}

impl Default for Forwarder {
    fn default() -> Self {
        Self::new()
    }
}

impl Forwarder {
    /// A forwarder with an empty MAC cache (default bounds) and no queued output.
    pub fn new() -> Self {
        Self::with_mac_cache(MacCache::new())
    }

    /// A forwarder starting from `macs` (e.g. a cache with other bounds).
    pub fn with_mac_cache(macs: MacCache) -> Self {
        Self {
            macs,
            queues: FastMap::default(),
            ready: VecDeque::new(),
            spare: Vec::new(),
            stats: ForwarderStats::default(),
            mac_full_log: LogLimit::default(),
            wrong_source_log: LogLimit::default(),
        }
    }

    /// Handles a frame a local container sent, as read from the bridge's TAP port.
    ///
    /// Learns the source MAC as local (dropping the frame if that MAC is bound to a remote
    /// peer), drops STP, then by destination MAC: local → drop; behind a direct fastdp
    /// neighbour → [`Verdict::Fastdp`] (the kernel carries it); behind another remote peer →
    /// one record to the unicast next hop (no route → drop); unknown, broadcast or multicast →
    /// one record per next hop of our broadcast tree, each addressed to that hop. Copies to
    /// fastdp neighbours are skipped when [`Fabric::broadcast_has_onward_hops`] says they
    /// would not relay them. Queued records leave through [`Self::poll_datagram`].
    ///
    /// The "too big" rule of spec §4.6 applies per next hop, with the overlay MTU its max
    /// payload allows ([`Self::set_max_payload`] − [`DATAGRAM_OVERHEAD`]): an IPv4 unicast with
    /// DF set that does not fit is not queued but returned as [`Verdict::FragNeeded`]; such a
    /// flood copy is dropped ([`DropReason::TooBig`]). Everything else is queued whatever its
    /// size, a big frame alone in its datagram, for the kernel to fragment.
    pub fn handle_captured(&mut self, frame: &[u8], fabric: &impl Fabric, now: Instant) -> Verdict {
        self.stats.captured += 1;
        let verdict = self.captured(frame, fabric, now);
        if let Verdict::Dropped(reason) = verdict {
            self.stats.count_drop(reason);
        }
        verdict
    }

    fn captured(&mut self, frame: &[u8], fabric: &impl Fabric, now: Instant) -> Verdict {
        let target = match self.classify(frame, fabric, now) {
            Ok(t) => t,
            Err(v) => return v,
        };
        let us = fabric.our_name();
        match target {
            Target::Unicast { peer, hop } => {
                let mtu = self.path_mtu(hop);
                if pmtu::choose_path(frame, mtu, true, false) == PathChoice::FragNeeded {
                    self.stats.frag_needed += 1;
                    return Verdict::FragNeeded {
                        mtu: u16::try_from(mtu).unwrap_or(u16::MAX),
                    };
                }
                match self.enqueue(us, hop, us, peer, frame) {
                    Ok(()) => {
                        self.stats.sent += 1;
                        Verdict::Unicast { next_hop: hop }
                    }
                    Err(reason) => Verdict::Dropped(reason),
                }
            }
            Target::Flood => {
                let mut copies = 0;
                for &hop in fabric.broadcast_next_hops(us) {
                    if fabric.is_direct_fastdp(hop) && !fabric.broadcast_has_onward_hops(hop, us) {
                        continue;
                    }
                    let mtu = self.path_mtu(hop);
                    if pmtu::choose_path(frame, mtu, true, true) == PathChoice::DropTooBigBroadcast
                    {
                        tracing::debug!("dropping too big DF broadcast frame");
                        self.stats.count_drop(DropReason::TooBig);
                        continue;
                    }
                    match self.enqueue(us, hop, us, hop, frame) {
                        Ok(()) => copies += 1,
                        Err(reason) => self.stats.count_drop(reason),
                    }
                }
                self.stats.sent += copies as u64;
                Verdict::Flooded { copies }
            }
        }
    }

    /// The capture rules of [`Self::handle_captured`] up to the choice of next hops.
    fn classify(
        &mut self,
        frame: &[u8],
        fabric: &impl Fabric,
        now: Instant,
    ) -> Result<Target, Verdict> {
        let (Some(dst), Some(src)) = (Mac::dst_of(frame), Mac::src_of(frame)) else {
            return Err(Verdict::Dropped(DropReason::Malformed));
        };
        // A special-looking frame from a container could pass for a heartbeat or PMTU reply
        // at the next hop; a group source MAC is never valid.
        if frame.len() < ETH_HEADER_LEN || sleeve::is_special(frame) || src.is_group() {
            return Err(Verdict::Dropped(DropReason::Malformed));
        }
        if frame.len() > usize::from(u16::MAX) {
            return Err(Verdict::Dropped(DropReason::TooBig));
        }
        let us = fabric.our_name();
        match self.macs.learn_local(src, now) {
            Err(peer) => {
                tracing::debug!(
                    "Captured frame from MAC ({src}) associated with another peer {peer}"
                );
                return Err(Verdict::Dropped(DropReason::MacConflict));
            }
            Ok(Learnt::Refused(full)) => self.not_learnt(src, MacOwner::Local, full, now),
            Ok(_) => {}
        }
        if dst == Mac::STP {
            return Err(Verdict::Dropped(DropReason::Stp));
        }
        match self.macs.lookup(dst) {
            Some(MacOwner::Local) => Err(Verdict::Dropped(DropReason::LocalDst)),
            Some(MacOwner::Peer(p)) if p == us => Err(Verdict::Dropped(DropReason::LocalDst)),
            Some(MacOwner::Peer(p)) => {
                if fabric.is_direct_fastdp(p) {
                    self.stats.fastdp += 1;
                    return Err(Verdict::Fastdp);
                }
                let hop = fabric
                    .unicast_next_hop(p)
                    .ok_or(Verdict::Dropped(DropReason::NoRoute))?;
                Ok(Target::Unicast { peer: p, hop })
            }
            None => Ok(Target::Flood),
        }
    }

    /// The overlay MTU (IP bytes per frame) that fits one datagram for `hop` (spec §4.6).
    fn path_mtu(&self, hop: PeerName) -> usize {
        self.max_payload(hop).saturating_sub(DATAGRAM_OVERHEAD)
    }

    /// Handles a TCP super-packet read from the TAP with its `virtio_net_hdr` (see
    /// [`Tso`]): the capture rules of [`Self::handle_captured`] apply to it as a whole, and
    /// the "too big" rule of spec §4.6 to its segment size, not its length.
    ///
    /// A unicast whose next hop has nothing queued is cut into segments written straight into
    /// `batch` (cleared first), one segment per datagram, for one UDP GSO send after
    /// [`Self::poll_datagram`] is drained. Anything else (floods, a busy queue) is cut into
    /// segments that go through [`Self::handle_captured`] one by one, using `scratch`.
    pub fn handle_captured_tso(
        &mut self,
        tso: &Tso<'_>,
        fabric: &impl Fabric,
        now: Instant,
        batch: &mut SegmentBatch,
        scratch: &mut Vec<u8>,
    ) -> Verdict {
        batch.clear();
        let frame = tso.frame();
        let target = match self.classify(frame, fabric, now) {
            Ok(t) => t,
            Err(v) => {
                self.stats.captured += tso.segments() as u64;
                if let Verdict::Dropped(reason) = v {
                    self.stats.count_drop(reason);
                }
                return v;
            }
        };
        self.stats.tso_packets += 1;
        let us = fabric.our_name();
        let seg_max = tso.max_segment_len();
        if let Target::Unicast { peer, hop } = target {
            let mtu = self.path_mtu(hop);
            if tso.is_ipv4_df() && seg_max > mtu + ETH_HEADER_LEN {
                self.stats.captured += 1;
                self.stats.frag_needed += 1;
                return Verdict::FragNeeded {
                    mtu: u16::try_from(mtu).unwrap_or(u16::MAX),
                };
            }
            if hop != us && self.queued_frames(hop) == 0 {
                let n = tso.segments();
                let us_bytes = us.to_bytes();
                let peer_bytes = peer.to_bytes();
                batch.peer = Some(hop);
                batch.datagram_len = 6 + RECORD_HEADER_LEN + seg_max;
                batch.buf.reserve(n * batch.datagram_len);
                for i in 0..n {
                    let len = tso.segment_len(i);
                    batch.buf.extend_from_slice(&us_bytes);
                    batch.buf.extend_from_slice(&us_bytes);
                    batch.buf.extend_from_slice(&peer_bytes);
                    // Fits: `classify` checked the super-packet is at most u16::MAX.
                    batch.buf.extend_from_slice(&(len as u16).to_be_bytes());
                    tso.append_segment(i, &mut batch.buf);
                }
                batch.count = n;
                self.stats.captured += n as u64;
                self.stats.sent += n as u64;
                self.stats.datagrams += n as u64;
                return Verdict::Unicast { next_hop: hop };
            }
        }
        let mut verdict = Verdict::Dropped(DropReason::Malformed);
        for i in 0..tso.segments() {
            scratch.resize(tso.segment_len(i), 0);
            tso.write_segment(i, scratch);
            verdict = self.handle_captured(scratch, fabric, now);
        }
        verdict
    }

    /// Handles one received plaintext sleeve datagram (decrypted already, if the connection is
    /// encrypted): `sender || records…` (spec §4.2).
    ///
    /// For each record, in order:
    /// * a special frame (all-zero Ethernet header) from the sender to us goes to `deliver` as
    ///   [`Delivery::Special`]; other special records are dropped;
    /// * a record whose source or destination peer is unknown is dropped, and so is one
    ///   captured by ourself;
    /// * a record for another peer is relayed unchanged to the unicast next hop for it,
    ///   without MAC learning;
    /// * a record for us binds its source MAC to its source peer (forced), goes to `deliver`
    ///   as [`Delivery::Inject`] — unless its source peer is a direct fastdp neighbour, whose
    ///   bridge already flooded it to ours over VXLAN — and, unless its destination MAC is
    ///   known to be local, is relayed along the source peer's broadcast tree, each copy
    ///   addressed to its next hop.
    ///
    /// Parsing stops at a malformed record or trailing garbage, reported in
    /// [`Received::error`]; the records before it are still handled (Weave Net's rule). A
    /// datagram too short to name its sender is the only `Err`. Queued relays leave through
    /// [`Self::poll_datagram`].
    pub fn handle_datagram(
        &mut self,
        datagram: &[u8],
        fabric: &impl Fabric,
        now: Instant,
        deliver: &mut impl FnMut(Delivery<'_>),
    ) -> Result<Received, SleeveError> {
        self.datagram(datagram, true, fabric, now, deliver)
    }

    /// [`Self::handle_datagram`] for a datagram that arrived from the UDP address `from`,
    /// when the connection with the peer it names (its first 6 bytes) expects that peer's
    /// datagrams from `expected` (`None`: not known yet).
    ///
    /// From another address than a known `expected` (the port counts), only special records
    /// are handled — the control plane checks them against the connection, and they are how
    /// a connection learns or confirms its address — and every data record is dropped
    /// ([`DropReason::WrongSource`]): otherwise anyone who knows a peer's name could inject
    /// frames and MAC bindings under it.
    pub fn handle_datagram_from(
        &mut self,
        datagram: &[u8],
        from: SocketAddr,
        expected: Option<SocketAddr>,
        fabric: &impl Fabric,
        now: Instant,
        deliver: &mut impl FnMut(Delivery<'_>),
    ) -> Result<Received, SleeveError> {
        let trusted = match expected {
            Some(e) if !same_address(e, from) => {
                if let Some(held_back) = self.wrong_source_log.allow(now) {
                    let sender = datagram.get(..6).and_then(PeerName::from_bytes);
                    tracing::warn!(
                        "Dropping sleeve frames naming {} from {from}, not its address {e}{}",
                        sender.unwrap_or_default(),
                        held_back_note(held_back),
                    );
                }
                false
            }
            _ => true,
        };
        self.datagram(datagram, trusted, fabric, now, deliver)
    }

    fn datagram(
        &mut self,
        datagram: &[u8],
        trusted: bool,
        fabric: &impl Fabric,
        now: Instant,
        deliver: &mut impl FnMut(Delivery<'_>),
    ) -> Result<Received, SleeveError> {
        let (sender, records) = sleeve::parse(datagram).inspect_err(|_| {
            self.stats.dropped_malformed += 1;
        })?;
        let us = fabric.our_name();
        let mut received = Received {
            sender,
            ..Received::default()
        };
        for record in records {
            let frame = match record {
                Ok(frame) => frame,
                Err(e) => {
                    self.stats.dropped_malformed += 1;
                    received.error = Some(e);
                    break;
                }
            };
            received.records += 1;
            if sleeve::is_special(frame.data) {
                if frame.src == sender && frame.dst == us {
                    self.stats.specials += 1;
                    received.specials += 1;
                    deliver(Delivery::Special {
                        sender,
                        frame: frame.data,
                    });
                } else {
                    self.stats.count_drop(DropReason::Malformed);
                    received.dropped += 1;
                }
                continue;
            }
            self.stats.received += 1;
            if !trusted {
                self.stats.count_drop(DropReason::WrongSource);
                received.dropped += 1;
                continue;
            }
            if let Err(reason) = self.forwarded(frame, us, fabric, now, deliver, &mut received) {
                self.stats.count_drop(reason);
                received.dropped += 1;
            }
        }
        Ok(received)
    }

    fn forwarded(
        &mut self,
        frame: Frame<'_>,
        us: PeerName,
        fabric: &impl Fabric,
        now: Instant,
        deliver: &mut impl FnMut(Delivery<'_>),
        received: &mut Received,
    ) -> Result<(), DropReason> {
        let data = frame.data;
        let (Some(dst_mac), Some(src_mac)) = (Mac::dst_of(data), Mac::src_of(data)) else {
            return Err(DropReason::Malformed);
        };
        if data.len() < ETH_HEADER_LEN {
            return Err(DropReason::Malformed);
        }
        if frame.src == us {
            return Err(DropReason::Looped);
        }
        if !fabric.is_known_peer(frame.src) || (frame.dst != us && !fabric.is_known_peer(frame.dst))
        {
            return Err(DropReason::UnknownPeer);
        }
        if frame.dst != us {
            let hop = fabric
                .unicast_next_hop(frame.dst)
                .ok_or(DropReason::NoRoute)?;
            self.enqueue(us, hop, frame.src, frame.dst, data)?;
            self.stats.relayed += 1;
            received.relayed += 1;
            return Ok(());
        }
        if src_mac.is_group() {
            return Err(DropReason::Malformed);
        }
        match self.macs.learn_remote(src_mac, frame.src, now) {
            Learnt::Moved(was) => {
                self.stats.mac_moves += 1;
                tracing::info!(
                    "Discovered remote MAC {src_mac} at {} (was at {was:?})",
                    frame.src
                );
            }
            Learnt::Refused(full) => {
                self.not_learnt(src_mac, MacOwner::Peer(frame.src), full, now);
            }
            Learnt::New | Learnt::Refreshed => {}
        }
        if fabric.is_direct_fastdp(frame.src) {
            self.stats.skipped_injection += 1;
        } else {
            deliver(Delivery::Inject(data));
            self.stats.injected += 1;
            received.injected += 1;
        }
        let dst_is_local =
            !dst_mac.is_group() && self.macs.lookup(dst_mac) == Some(MacOwner::Local);
        if !dst_is_local {
            for &hop in fabric.broadcast_next_hops(frame.src) {
                match self.enqueue(us, hop, frame.src, hop, data) {
                    Ok(()) => {
                        self.stats.relayed += 1;
                        received.relayed += 1;
                    }
                    Err(reason) => {
                        self.stats.count_drop(reason);
                        received.dropped += 1;
                    }
                }
            }
        }
        Ok(())
    }

    /// A source MAC was not learnt: counted, and logged at most once per
    /// [`REFUSAL_LOG_INTERVAL`].
    fn not_learnt(&mut self, mac: Mac, owner: MacOwner, full: CacheFull, now: Instant) {
        self.stats.macs_not_learnt += 1;
        if let Some(held_back) = self.mac_full_log.allow(now) {
            let whose = match (owner, full) {
                (MacOwner::Peer(p), CacheFull::Peer) => format!("{p}'s share of the"),
                _ => "the".to_string(),
            };
            tracing::warn!(
                "Not learning MAC {mac} of {owner:?}: {whose} MAC cache is full{}",
                held_back_note(held_back),
            );
        }
    }

    /// Appends the record `src → dst: frame` to the batch for `hop`.
    fn enqueue(
        &mut self,
        us: PeerName,
        hop: PeerName,
        src: PeerName,
        dst: PeerName,
        frame: &[u8],
    ) -> Result<(), DropReason> {
        if hop == us {
            return Err(DropReason::Looped);
        }
        if frame.len() > usize::from(u16::MAX) {
            return Err(DropReason::TooBig);
        }
        let record_len = RECORD_HEADER_LEN + frame.len();
        let q = self
            .queues
            .entry(hop)
            .or_insert_with(|| PeerQueue::new(DEFAULT_MAX_PAYLOAD));
        if q.queued_frames >= MAX_QUEUED_FRAMES {
            return Err(DropReason::QueueFull);
        }
        if q.pending_frames > 0
            && (q.pending.len() + record_len > q.max_payload
                || q.pending_frames >= MAX_FRAMES_PER_DATAGRAM)
        {
            let fresh = self.spare.pop().unwrap_or_default();
            let closed = mem::replace(&mut q.pending, fresh);
            q.full.push_back((closed, q.pending_frames));
            q.pending_frames = 0;
        }
        if q.pending_frames == 0 {
            q.pending.clear();
            q.pending.extend_from_slice(&us.to_bytes());
        }
        sleeve::encode_frame(src, dst, frame, &mut q.pending).map_err(|_| DropReason::TooBig)?;
        q.pending_frames += 1;
        q.queued_frames += 1;
        if !q.scheduled {
            q.scheduled = true;
            self.ready.push_back(hop);
        }
        Ok(())
    }

    /// Takes one ready datagram: replaces `out` with `our name || records…` and returns the
    /// peer to send it to, or returns `None` (leaving `out` alone) when nothing is queued.
    ///
    /// Call until `None` after handling a batch of input. Records for one next hop are packed
    /// in order into datagrams of at most its max payload ([`Self::set_max_payload`]) and
    /// [`MAX_FRAMES_PER_DATAGRAM`] records; a single record larger than the max payload goes
    /// alone. Next hops are served round-robin. The buffer previously in `out` is kept for
    /// reuse, so steady-state forwarding does not allocate.
    pub fn poll_datagram(&mut self, out: &mut Vec<u8>) -> Option<PeerName> {
        while let Some(peer) = self.ready.pop_front() {
            let Some(q) = self.queues.get_mut(&peer) else {
                continue;
            };
            q.scheduled = false;
            let (buf, frames) = if let Some(closed) = q.full.pop_front() {
                closed
            } else if q.pending_frames > 0 {
                let fresh = self.spare.pop().unwrap_or_default();
                let frames = mem::take(&mut q.pending_frames);
                (mem::replace(&mut q.pending, fresh), frames)
            } else {
                continue;
            };
            q.queued_frames = q.queued_frames.saturating_sub(frames);
            if !q.full.is_empty() || q.pending_frames > 0 {
                q.scheduled = true;
                self.ready.push_back(peer);
            }
            let old = mem::replace(out, buf);
            self.recycle(old);
            self.stats.datagrams += 1;
            return Some(peer);
        }
        None
    }

    fn recycle(&mut self, mut buf: Vec<u8>) {
        if buf.capacity() > 0 && self.spare.len() < MAX_SPARE_BUFFERS {
            buf.clear();
            self.spare.push(buf);
        }
    }

    /// Sets the largest datagram (sender name and records; the UDP payload before encryption
    /// overhead) built for `peer`; takes effect for the next datagram started. Call when the
    /// connection's PMTU is known or changes; the default is [`DEFAULT_MAX_PAYLOAD`]. Values
    /// below one record still let single frames through, one per datagram.
    pub fn set_max_payload(&mut self, peer: PeerName, bytes: usize) {
        self.queues
            .entry(peer)
            .or_insert_with(|| PeerQueue::new(DEFAULT_MAX_PAYLOAD))
            .max_payload = bytes;
    }

    /// The largest datagram built for `peer`.
    pub fn max_payload(&self, peer: PeerName) -> usize {
        self.queues
            .get(&peer)
            .map_or(DEFAULT_MAX_PAYLOAD, |q| q.max_payload)
    }

    /// Forgets `peer`: its MACs and its queued output (and its max payload setting). Call when
    /// the peer leaves the topology (is garbage-collected).
    pub fn forget_peer(&mut self, peer: PeerName) {
        let forgotten = self.macs.forget_peer(peer);
        if forgotten > 0 {
            tracing::debug!("Forgot {forgotten} MACs of {peer}");
        }
        if let Some(q) = self.queues.remove(&peer) {
            self.ready.retain(|p| *p != peer);
            self.recycle(q.pending);
            for (buf, _) in q.full {
                self.recycle(buf);
            }
        }
    }

    /// Sweeps MAC entries not seen for [`MAC_EXPIRY`](super::MAC_EXPIRY); call every
    /// [`MAC_SWEEP_INTERVAL`](super::MAC_SWEEP_INTERVAL). Returns how many were removed.
    pub fn expire(&mut self, now: Instant) -> usize {
        self.macs.expire(now)
    }

    /// The MAC cache, for status output and for copies of its remote bindings.
    pub fn mac_cache(&self) -> &MacCache {
        &self.macs
    }

    /// The MACs whose binding changed since the last call, for a copy of the cache that
    /// follows it: see [`MacCache::take_changes`].
    pub fn take_mac_changes(&mut self, into: &mut HashSet<Mac>) -> bool {
        self.macs.take_changes(into)
    }

    /// A frame from `mac`, captured by `peer`, reached our bridge without passing through
    /// [`Self::handle_datagram`] (the kernel's sleeve receive shortcut): keeps the binding
    /// alive if it is still `peer`'s.
    pub fn refresh_remote(&mut self, mac: Mac, peer: PeerName, now: Instant) {
        self.macs.refresh_remote(mac, peer, now);
    }

    /// Counters since creation.
    pub fn stats(&self) -> ForwarderStats {
        self.stats
    }

    /// Records queued for `peer` and not yet polled.
    pub fn queued_frames(&self, peer: PeerName) -> usize {
        self.queues.get(&peer).map_or(0, |q| q.queued_frames)
    }
}

/// Whether two UDP addresses are the same endpoint (an IPv4-mapped IPv6 address is its IPv4
/// address; IPv6 flow labels do not count).
fn same_address(a: SocketAddr, b: SocketAddr) -> bool {
    a.ip().to_canonical() == b.ip().to_canonical() && a.port() == b.port()
}

fn held_back_note(n: u64) -> String {
    if n == 0 {
        String::new()
    } else {
        format!(" ({n} more since the last such message)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_limit_lets_one_line_through_per_interval_and_counts_the_rest() {
        let t0 = Instant::now();
        let mut l = LogLimit::default();
        assert_eq!(l.allow(t0), Some(0));
        let held: Vec<_> = (1..=5)
            .map(|s| l.allow(t0 + Duration::from_secs(s)))
            .collect();
        assert!(held.iter().all(Option::is_none));
        assert_eq!(l.allow(t0 + REFUSAL_LOG_INTERVAL), Some(5));
        assert_eq!(l.allow(t0 + REFUSAL_LOG_INTERVAL), None);
    }
}
