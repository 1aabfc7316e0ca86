//! The sleeve data path thread: owns the TAP, reads the sleeve socket, and runs the forwarder
//! (see [`DataPath::run`]).
//!
//! TAP reads (TCP super-packets when the TAP has offloads) are cut by the forwarder into
//! wire-sized segments sent with one UDP GSO `sendmsg` per next hop; UDP reads (runs of
//! datagrams coalesced by UDP GRO) are split per datagram, and what is injected goes through
//! the [`Coalescer`], so that one TAP write carries a whole run of TCP segments.
//!
//! On an encrypted connection (Weave Net's `--password`) every datagram to the peer is sealed
//! after the forwarder built it, and every datagram from it opened before the forwarder sees
//! it ([`weft_crypto::sleeve`]): this thread owns the non-DF path's sequence and both replay
//! windows; the mesh task seals its heartbeats on the DF path's sequence, so the two never
//! share a nonce. Such peers are left out of the kernel's receive shortcut, which cannot open
//! anything.
//!
//! Generic over the socket and the TAP ([`super::io`]): monomorphised for the real ones, so
//! the seam costs nothing per packet, and driven over fakes in the tests below.

use std::io::IoSlice;
use std::net::SocketAddr;
use std::os::fd::AsFd;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use weft_core::overlay::FastMap;

use tokio::sync::mpsc;
use weft_core::mesh::ConnId;
use weft_core::overlay::offload::{
    complete_checksum, Coalescer, Tso, VnetHdr, GSO_NONE, PLAIN_HDR, VNET_F_NEEDS_CSUM,
    VNET_HDR_LEN,
};
use weft_core::overlay::{
    pmtu, Delivery, Forwarder, Received, SegmentBatch, Verdict, MAC_SWEEP_INTERVAL,
};
use weft_crypto::sleeve::{OpenError, Opener, Sealer, OVERHEAD as SEAL_OVERHEAD};
use weft_wire::PeerName;

use super::io::{SleeveSocket, SleeveTap};
use super::shortcut::Shortcut;
use super::{lock, FabricSnapshot, Input, PathStats, Shared, MAX_PENDING_SPECIALS};

/// Room for one TAP read: a `virtio_net_hdr` and a 64 KB super-packet with its headers.
const TAP_BUF_LEN: usize = VNET_HDR_LEN + 14 + 65535 + 64;
/// Most rounds of reads (one of each fd) per wake-up of the data path, before it checks for
/// a new fabric, publishes its counters and sweeps.
const DRAIN_READS: usize = 64;
/// IPv4 and UDP headers: the path MTU minus these is the largest sleeve datagram.
const IP_UDP_HEADERS: usize = 28;
/// How long a send waits for room in a full socket buffer before dropping.
const SEND_WAIT: Duration = Duration::from_millis(2);
/// How soon to read the sleeve socket again while the receive shortcut holds frames back.
const SHORTCUT_RECHECK: Duration = Duration::from_millis(1);

/// The sleeve data path over TAP `T` and socket `U`.
pub(super) struct DataPath<T, U> {
    tap: T,
    udp: Arc<U>,
    shared: Arc<Shared>,
    /// Special frames go to the mesh task.
    to_mesh: mpsc::UnboundedSender<Input>,
    fabric: Arc<FabricSnapshot>,
    version: u64,
    forwarder: Forwarder,
    out: Vec<u8>,
    /// What it dropped itself (the forwarder's counters join them when published).
    stats: PathStats,
    /// Encrypted connections' sealer (non-DF path) and opener, by peer.
    crypto: FastMap<PeerName, PeerCrypto>,
    /// Sealed datagrams on their way out.
    sealed: Vec<u8>,
    /// Glues received TCP segments into super-packets for the TAP.
    coalescer: Coalescer,
    /// Segments of one captured super-packet, for one GSO send.
    batch: SegmentBatch,
    /// For segments that take the slow path, and ICMP replies.
    scratch: Vec<u8>,
    /// Per next hop: the UDP address whose path MTU we read, and that MTU.
    paths: FastMap<PeerName, (SocketAddr, usize)>,
    /// UDP GSO works here (cleared at the first failure that says it does not).
    gso: bool,
    /// TAP frames dropped for a malformed `virtio_net_hdr`.
    bad_offload: u64,
    /// The kernel's receive shortcut, kept in step with the forwarder.
    shortcut: Option<Shortcut>,
}

/// One encrypted connection's sleeve crypto state.
struct PeerCrypto {
    conn: ConnId,
    sealer: Sealer,
    opener: Opener,
}

/// The data path's read buffers, reused for every read.
struct Buffers {
    tap: Vec<u8>,
    udp: Vec<u8>,
    cmsg: Vec<u8>,
}

impl Buffers {
    fn new() -> Self {
        Self {
            tap: vec![0u8; TAP_BUF_LEN],
            udp: vec![0u8; 65536],
            cmsg: Vec::with_capacity(weft_netdev::GRO_CMSG_SPACE),
        }
    }
}

impl<T: SleeveTap, U: SleeveSocket> DataPath<T, U> {
    pub(super) fn new(
        tap: T,
        udp: Arc<U>,
        shared: Arc<Shared>,
        to_mesh: mpsc::UnboundedSender<Input>,
        shortcut: Option<Shortcut>,
    ) -> Self {
        if let Some(s) = &shortcut {
            let _ = shared.shortcut.set(s.kernel());
        }
        Self {
            tap,
            udp,
            shared,
            to_mesh,
            fabric: Arc::new(FabricSnapshot::default()),
            version: u64::MAX,
            forwarder: Forwarder::new(),
            out: Vec::with_capacity(65536),
            stats: PathStats::default(),
            crypto: FastMap::default(),
            sealed: Vec::new(),
            coalescer: Coalescer::new(),
            batch: SegmentBatch::new(),
            scratch: Vec::with_capacity(65536),
            paths: FastMap::default(),
            gso: true,
            bad_offload: 0,
            shortcut,
        }
    }

    /// Waits for the TAP or the socket, then reads those that are ready (see
    /// [`Self::drain`]). Returns when the mesh task has ended.
    pub(super) fn run(mut self)
    where
        T: AsFd,
        U: AsFd,
    {
        let mut bufs = Buffers::new();
        let mut next_sweep = Instant::now() + MAC_SWEEP_INTERVAL;
        let ready = match weft_netdev::Readiness::new(&[self.tap.as_fd(), self.udp.as_fd()]) {
            Ok(r) => r,
            Err(e) => {
                tracing::error!("sleeve data path cannot start: {e}");
                return;
            }
        };
        while !self.shared.stop.load(Ordering::Relaxed) {
            let now = Instant::now();
            if now >= next_sweep {
                self.sweep(now);
                next_sweep = now + MAC_SWEEP_INTERVAL;
            }
            // The shortcut holds frames back until we read the socket empty once more.
            let recheck = self.shortcut.as_ref().is_some_and(Shortcut::holding_back);
            let timeout = next_sweep.saturating_duration_since(now).min(if recheck {
                SHORTCUT_RECHECK
            } else {
                Duration::from_secs(1)
            });
            let (tap_ready, udp_ready) = match ready.wait(timeout) {
                Ok(r) => (r & 1 != 0, r & 2 != 0),
                Err(e) => {
                    tracing::warn!("sleeve wait: {e}");
                    std::thread::sleep(Duration::from_millis(10));
                    continue;
                }
            };
            self.refresh_fabric();
            let got = self.drain(&mut bufs, tap_ready, udp_ready || recheck);
            if !got && (tap_ready || udp_ready) {
                // Readable but nothing to read: an error state (a TAP whose device is gone
                // polls readable for ever). Do not spin on it.
                std::thread::sleep(Duration::from_millis(1));
            }
        }
    }

    /// The slow sweep: MAC bindings the kernel used are refreshed, old ones expire, and path
    /// MTUs are read again on next use (routes may have changed).
    fn sweep(&mut self, now: Instant) {
        if let Some(s) = &mut self.shortcut {
            s.read_back(&mut self.forwarder, now);
        }
        self.forwarder.expire(now);
        self.sync_shortcut_macs();
        if let Some(s) = &mut self.shortcut {
            s.retry_waiting(&self.forwarder, &self.fabric.table);
        }
        self.paths.clear();
    }

    /// Reads the TAP (while `tap_ready`) and the socket (while `udp_more`) alternately until
    /// neither has anything, or [`DRAIN_READS`] rounds: an injected frame's answer (an ICMP
    /// echo reply, a TCP ACK) is often queued on the TAP by the time the write returns, and is
    /// sent on at once. Then writes out what the coalescer holds and, if anything was read,
    /// publishes the counters. Returns whether anything was read.
    fn drain(&mut self, bufs: &mut Buffers, mut tap_ready: bool, mut udp_more: bool) -> bool {
        let mut got = false;
        // Each descriptor is read while it has something and only then: a read that finds
        // nothing is a system call on the round trip of every lone packet.
        for _ in 0..DRAIN_READS {
            if !tap_ready && !udp_more {
                break;
            }
            if tap_ready {
                match self.tap.try_recv(&mut bufs.tap) {
                    Ok(n) => {
                        self.on_captured(&mut bufs.tap[..n], Instant::now());
                        got = true;
                    }
                    Err(_) => tap_ready = false,
                }
            }
            if udp_more {
                // For the shortcut: a time before the read that may find the socket empty.
                let before = self.shortcut.as_ref().map(|_| weft_netdev::monotonic_ns());
                match self.udp.try_recv_gro(&mut bufs.udp, &mut bufs.cmsg) {
                    Ok((n, from, seg)) => {
                        self.on_received(from, &mut bufs.udp[..n], seg, Instant::now());
                        got = true;
                        // What was injected is often answered at once (an ICMP echo
                        // reply, a TCP ACK): look for it before sleeping.
                        tap_ready = true;
                    }
                    Err(e) => {
                        udp_more = false;
                        tap_ready |= self.end_of_receive();
                        if let (Some(s), Some(t)) = (&self.shortcut, before) {
                            if e.kind() == std::io::ErrorKind::WouldBlock {
                                s.drained(t);
                            }
                        }
                    }
                }
            }
        }
        // Only after DRAIN_READS reads in a row can a coalesced run still be pending.
        self.end_of_receive();
        if got {
            // Counters move only with traffic.
            self.stats.forwarder = self.forwarder.stats();
            *lock(&self.shared.stats) = self.stats;
        }
        got
    }

    /// Takes the mesh task's latest view, if it changed, and learns the path MTU to every
    /// peer with a sleeve address before the first frame for it is judged too big or not.
    fn refresh_fabric(&mut self) {
        let v = self.shared.version.load(Ordering::Acquire);
        if v != self.version {
            self.fabric = lock(&self.shared.fabric).clone();
            self.version = v;
            self.sync_crypto();
            let peers: Vec<PeerName> = self.fabric.udp.keys().copied().collect();
            for peer in peers {
                let _ = self.path_to(peer);
            }
            if let Some(s) = &mut self.shortcut {
                let f = &self.fabric;
                // The kernel cannot open sealed datagrams: those come here.
                s.sync_conns(
                    f.udp
                        .iter()
                        .filter(|(p, _)| f.connected.contains(p) && !f.keys.contains_key(p))
                        .map(|(p, a)| (*p, a)),
                );
            }
            self.sync_shortcut_macs();
        }
    }

    /// Keeps the crypto state in step with the fabric's keys: a new connection starts afresh
    /// (its key and sequence numbers are new); the path MTU of a peer whose encryption changed
    /// is read again, since sealing takes room.
    fn sync_crypto(&mut self) {
        let keys = &self.fabric.keys;
        let mut changed = Vec::new();
        self.crypto.retain(|p, c| {
            let keep = keys.get(p).is_some_and(|k| k.conn == c.conn);
            if !keep {
                changed.push(*p);
            }
            keep
        });
        for (p, k) in keys {
            if !self.crypto.contains_key(p) {
                let c = PeerCrypto {
                    conn: k.conn,
                    sealer: Sealer::new(k.scheme, &k.key, k.outbound, false),
                    opener: Opener::new(k.scheme, &k.key, k.outbound),
                };
                self.crypto.insert(*p, c);
                changed.push(*p);
            }
        }
        for p in changed {
            self.paths.remove(&p);
        }
    }

    /// Where datagrams for next hop `peer` go; on first use of an address, reads the path MTU
    /// to it and gives the forwarder the matching max payload (spec §4.6), so that too-big DF
    /// frames get "fragmentation needed" and TCP segments to fit one datagram.
    fn path_to(&mut self, peer: PeerName) -> Option<(SocketAddr, usize)> {
        let to = *self.fabric.udp.get(&peer)?;
        if let Some(&(addr, mtu)) = self.paths.get(&peer) {
            if addr == to {
                return Some((to, mtu));
            }
        }
        let mtu = match self.udp.path_mtu(to) {
            Ok(m) => m as usize,
            Err(e) => {
                // Unknown (0): no GSO and the forwarder's defaults, until the next sweep.
                tracing::debug!("{e}");
                self.paths.insert(peer, (to, 0));
                return Some((to, 0));
            }
        };
        let sealing = if self.crypto.contains_key(&peer) {
            SEAL_OVERHEAD
        } else {
            0
        };
        let max_payload = mtu.saturating_sub(IP_UDP_HEADERS + sealing);
        if max_payload >= weft_core::overlay::DATAGRAM_OVERHEAD + 576 {
            self.forwarder.set_max_payload(peer, max_payload);
            let overlay = max_payload - weft_core::overlay::DATAGRAM_OVERHEAD;
            let _ = self.to_mesh.send(Input::SleeveMtu(
                peer,
                u32::try_from(overlay).unwrap_or(u32::MAX),
            ));
        }
        tracing::debug!("sleeve path to {peer} at {to}: MTU {mtu}");
        self.paths.insert(peer, (to, mtu));
        Some((to, mtu))
    }

    /// Sends every datagram the forwarder has ready to its next hop's sleeve address, then
    /// the segment batch of a captured super-packet, if any.
    fn flush(&mut self) {
        while let Some(peer) = self.forwarder.poll_datagram(&mut self.out) {
            match self.path_to(peer) {
                Some((to, _)) => {
                    let d = match self.crypto.get_mut(&peer) {
                        None => &self.out,
                        Some(c) => {
                            self.sealed.clear();
                            if let Err(e) = c.sealer.seal_to(&self.out, &mut self.sealed) {
                                tracing::debug!("sleeve send to {peer}: {e}");
                                continue;
                            }
                            &self.sealed
                        }
                    };
                    if let Err(e) = self.udp.send_to(d, to) {
                        tracing::debug!("sleeve send to {peer}: {e}");
                    }
                }
                None => tracing::debug!("Cannot forward frame yet - awaiting contact with {peer}"),
            }
        }
        let Some(peer) = self.batch.peer() else {
            return;
        };
        match self.path_to(peer) {
            Some((to, mtu)) => self.send_batch(peer, to, mtu),
            None => tracing::debug!("Cannot forward frame yet - awaiting contact with {peer}"),
        }
        self.batch.clear();
    }

    /// Sends the segment batch: with UDP GSO (one `sendmsg` per up to 64 KB) when the
    /// datagrams fit the path unfragmented, else one datagram per call.
    fn send_batch(&mut self, peer: PeerName, to: SocketAddr, path_mtu: usize) {
        let (bytes, seg) = match self.crypto.get_mut(&peer) {
            None => (self.batch.bytes(), self.batch.datagram_len()),
            Some(c) => {
                // Each datagram grows by the same overhead, so the sealed ones are again
                // back to back at one stride (the last one shorter, as before).
                self.sealed.clear();
                for d in self.batch.datagrams() {
                    if let Err(e) = c.sealer.seal_to(d, &mut self.sealed) {
                        tracing::debug!("sleeve send to {peer}: {e}");
                        return;
                    }
                }
                (&self.sealed[..], self.batch.datagram_len() + SEAL_OVERHEAD)
            }
        };
        let gso = self.gso
            && self.batch.len() > 1
            && seg > 0
            && seg.saturating_add(IP_UDP_HEADERS) <= path_mtu;
        if gso {
            let per = (weft_netdev::MAX_GSO_BYTES / seg).clamp(1, weft_netdev::MAX_GSO_SEGMENTS);
            let mut gso_failed = false;
            for chunk in bytes.chunks(per * seg) {
                let mut r = self.udp.try_send_gso(chunk, seg, to);
                if matches!(&r, Err(e) if e.kind() == std::io::ErrorKind::WouldBlock) {
                    // A full send buffer: wait a moment for room rather than drop the chunk,
                    // which would cost the sender a burst of retransmits.
                    if let Ok(true) = self.udp.wait_writable(SEND_WAIT) {
                        r = self.udp.try_send_gso(chunk, seg, to);
                    }
                }
                match r {
                    Ok(_) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        tracing::debug!("sleeve send to {peer}: {e}");
                    }
                    Err(e) => {
                        if weft_netdev::gso_unsupported(&e) {
                            tracing::info!("UDP GSO send failed ({e}); sending one by one");
                            gso_failed = true;
                        }
                        for d in chunk.chunks(seg) {
                            let _ = self.udp.send_to(d, to);
                        }
                    }
                }
            }
            self.gso &= !gso_failed;
            return;
        }
        for d in bytes.chunks(seg.max(1)) {
            if let Err(e) = self.udp.send_to(d, to) {
                tracing::debug!("sleeve send to {peer}: {e}");
            }
        }
    }

    /// What one UDP read returned: one datagram, or (`seg`) a run of datagrams of `seg`
    /// bytes coalesced by the kernel, each handled on its own.
    fn on_received(&mut self, from: SocketAddr, buf: &mut [u8], seg: Option<usize>, now: Instant) {
        match seg {
            Some(seg) if seg < buf.len() => {
                for d in buf.chunks_mut(seg) {
                    self.on_datagram(from, d, now);
                }
            }
            _ => self.on_datagram(from, buf, now),
        }
    }

    /// The receive batch is over: write out what the coalescer still holds.
    fn end_of_receive(&mut self) -> bool {
        let tap = &self.tap;
        let mut injected = false;
        self.coalescer.flush(&mut |h, f| {
            injected = true;
            inject(tap, h, f);
        });
        injected
    }

    /// A datagram arrived on the mesh port: data records go through the forwarder (injected
    /// into the TAP or relayed), control records to the mesh.
    fn on_datagram(&mut self, from: SocketAddr, d: &mut [u8], now: Instant) {
        // Weave's rule: a datagram whose sender we have no connection with is dropped.
        let Some(sender) = d
            .get(..6)
            .and_then(PeerName::from_bytes)
            .filter(|p| self.fabric.connected.contains(p))
        else {
            self.stats.dropped_unknown_sender += 1;
            return;
        };
        // An encrypted connection's datagrams are opened first (heartbeats too, which may
        // come from a new address): forged or replayed ones go no further.
        let d: &[u8] = match self.crypto.get_mut(&sender) {
            None => d,
            Some(c) => match c.opener.open_datagram(d) {
                Ok(plain) => plain,
                Err(OpenError::Replayed(_)) => {
                    self.stats.dropped_replayed += 1;
                    return;
                }
                Err(e) => {
                    self.stats.dropped_undecryptable += 1;
                    // One line per power of two: forgeries cannot fill the log.
                    if self.stats.dropped_undecryptable.is_power_of_two() {
                        tracing::info!(
                            "datagram from {sender} ({from}): {e} ({} so far)",
                            self.stats.dropped_undecryptable
                        );
                    }
                    return;
                }
            },
        };
        // Data only from the connection's address, once known (heartbeats set it).
        let expected = self.fabric.udp.get(&sender).copied();
        let tap = &self.tap;
        let coalescer = &mut self.coalescer;
        let to_mesh = &self.to_mesh;
        let pending = &self.shared.specials_pending;
        // Control frames are rare (heartbeats, MTU probes): copied out to the mesh task, but
        // never more than a bounded backlog, since whoever can reach the port can send them.
        let r = self.forwarder.handle_datagram_from(
            d,
            from,
            expected,
            &self.fabric.table,
            now,
            &mut |del| match del {
                Delivery::Inject(frame) if tap.has_vnet_hdr() => {
                    coalescer.push(frame, &mut |h, f| inject(tap, h, f));
                }
                Delivery::Inject(frame) => inject(tap, &PLAIN_HDR, frame),
                Delivery::Special { sender, frame } => {
                    if pending.fetch_add(1, Ordering::AcqRel) >= MAX_PENDING_SPECIALS {
                        pending.fetch_sub(1, Ordering::AcqRel);
                        tracing::debug!("dropping a control frame from {sender}: mesh is behind");
                    } else if to_mesh
                        .send(Input::Special {
                            from,
                            sender,
                            frame: frame.to_vec(),
                        })
                        .is_err()
                    {
                        pending.fetch_sub(1, Ordering::AcqRel);
                    }
                }
            },
        );
        if let Ok(Received {
            error: Some(e),
            sender,
            ..
        }) = &r
        {
            tracing::debug!("datagram from {sender} ({from}): {e}");
        }
        self.sync_shortcut_macs();
        self.flush();
    }

    /// What one TAP read returned: a frame from a local container, after the
    /// `virtio_net_hdr` when the TAP has offloads (a TCP super-packet is segmented, a
    /// partial checksum completed, since peers get frames as they are on the wire).
    fn on_captured(&mut self, buf: &mut [u8], now: Instant) {
        let (hdr, frame) = if self.tap.has_vnet_hdr() {
            match VnetHdr::split(buf) {
                Ok(x) => x,
                Err(e) => return self.bad_offload(&e),
            }
        } else {
            (VnetHdr::default(), buf)
        };
        let verdict = if hdr.gso_type == GSO_NONE {
            if hdr.flags & VNET_F_NEEDS_CSUM != 0 {
                if let Err(e) = complete_checksum(frame, &hdr) {
                    return self.bad_offload(&e);
                }
            }
            self.forwarder
                .handle_captured(frame, &self.fabric.table, now)
        } else {
            let tso = match Tso::new(frame, &hdr) {
                Ok(t) => t,
                Err(e) => return self.bad_offload(&e),
            };
            self.forwarder.handle_captured_tso(
                &tso,
                &self.fabric.table,
                now,
                &mut self.batch,
                &mut self.scratch,
            )
        };
        // A new local MAC: frames for it may now take the kernel's shortcut.
        self.sync_shortcut_macs();
        if let Verdict::FragNeeded { mtu } = verdict {
            // Back to the sender as if from the destination (spec §4.6); its TCP then sends
            // segments that fit one datagram.
            if pmtu::frag_needed(frame, mtu, &mut self.scratch) {
                inject(&self.tap, &PLAIN_HDR, &self.scratch);
            }
        }
        self.flush();
    }

    /// Copies the forwarder's MAC bindings to the receive shortcut, if they or the fabric
    /// changed (a cheap check otherwise).
    fn sync_shortcut_macs(&mut self) {
        if let Some(s) = &mut self.shortcut {
            s.sync_macs(&mut self.forwarder, &self.fabric.table, self.version);
        }
    }

    fn bad_offload(&mut self, e: &dyn std::fmt::Display) {
        self.bad_offload += 1;
        tracing::debug!("dropping TAP frame ({} so far): {e}", self.bad_offload);
    }
}

/// Writes one frame into the TAP: `hdr` is its `virtio_net_hdr`, left out when the TAP has
/// none (then only plain frames, `hdr` = [`PLAIN_HDR`], come here).
fn inject<T: SleeveTap>(tap: &T, hdr: &[u8], frame: &[u8]) {
    let r = if tap.has_vnet_hdr() {
        tap.try_send_parts(&[IoSlice::new(hdr), IoSlice::new(frame)])
    } else {
        tap.try_send(frame)
    };
    if let Err(e) = r {
        tracing::debug!("inject: {e}");
    }
}

/// The data path over a fake TAP and socket: what it reads from one, it writes to the other.
#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::sync::atomic::Ordering;
    use std::sync::Arc;

    use tokio::sync::mpsc;
    use weft_core::overlay::FabricTable;
    use weft_wire::{sleeve, PeerName};

    use super::{Buffers, DataPath};
    use crate::fakes::{FakeSocket, FakeTap};
    use crate::sleeve::{lock, FabricSnapshot, Input, Shared, SleeveKey};
    use weft_core::mesh::ConnId;
    use weft_crypto::key::SessionKey;
    use weft_crypto::sleeve::{Opener, Scheme, Sealer};

    const A: PeerName = PeerName(0x0a00_0000_0001); // us
    const B: PeerName = PeerName(0x0a00_0000_0002); // connected over sleeve
    const C: PeerName = PeerName(0x0a00_0000_0003); // known, not connected
    const LOCAL: [u8; 6] = [2, 0, 0, 0, 0, 0x01]; // behind our bridge
    const REMOTE: [u8; 6] = [2, 0, 0, 0, 0, 0x02]; // behind B's
    const BROADCAST: [u8; 6] = [0xff; 6];

    fn b_addr() -> SocketAddr {
        "192.0.2.2:6783".parse().unwrap()
    }

    struct Harness {
        dp: DataPath<FakeTap, FakeSocket>,
        tap: FakeTap,
        udp: Arc<FakeSocket>,
        shared: Arc<Shared>,
        from_dp: mpsc::UnboundedReceiver<Input>,
        bufs: Buffers,
    }

    impl Harness {
        /// A data path for us (A) with a sleeve connection to B at [`b_addr`] (path MTU
        /// 1500), C known through B, and the fabric already taken in.
        fn new() -> Self {
            Self::with_key(None)
        }

        /// [`Self::new`], the connection to B encrypted with `key` when given (we dialled).
        fn with_key(key: Option<(SessionKey, Scheme)>) -> Self {
            let tap = FakeTap::default();
            let udp = Arc::new(FakeSocket::new(1500));
            let shared = Arc::new(Shared::default());
            let (tx, from_dp) = mpsc::unbounded_channel();
            let mut dp = DataPath::new(tap.clone(), udp.clone(), shared.clone(), tx, None);
            shared.publish(Arc::new(FabricSnapshot {
                table: FabricTable {
                    us: A,
                    unicast: [(B, B), (C, B)].into_iter().collect(),
                    broadcast: [(A, vec![B])].into_iter().collect(),
                    broadcast_routes: None,
                    fastdp: Default::default(),
                    known: [A, B, C].into_iter().collect(),
                    onward: None,
                },
                connected: [B].into_iter().collect(),
                udp: [(B, b_addr())].into_iter().collect(),
                keys: key
                    .map(|(key, scheme)| {
                        let k = SleeveKey {
                            conn: ConnId(7),
                            key,
                            scheme,
                            outbound: true,
                        };
                        (B, k)
                    })
                    .into_iter()
                    .collect(),
            }));
            dp.refresh_fabric();
            Self {
                dp,
                tap,
                udp,
                shared,
                from_dp,
                bufs: Buffers::new(),
            }
        }

        /// Reads what the fakes hold, as after a wake-up for both; returns whether anything
        /// was read.
        fn drain(&mut self) -> bool {
            self.dp.drain(&mut self.bufs, true, true)
        }

        /// What the data path published as datagrams from senders it has no connection with.
        fn dropped_unknown_sender(&self) -> u64 {
            lock(&self.shared.stats).dropped_unknown_sender
        }
    }

    /// An Ethernet frame of a protocol nobody interprets.
    fn frame(dst: [u8; 6], src: [u8; 6]) -> Vec<u8> {
        let mut f = dst.to_vec();
        f.extend_from_slice(&src);
        f.extend_from_slice(&[0x88, 0xb5]);
        f.resize(60, 0x5a);
        f
    }

    /// A one-record sleeve datagram, encoded independently of the forwarder.
    fn datagram(sender: PeerName, src: PeerName, dst: PeerName, f: &[u8]) -> Vec<u8> {
        let mut d = sender.to_bytes().to_vec();
        sleeve::encode_frame(src, dst, f, &mut d).unwrap();
        d
    }

    #[test]
    fn path_mtu_of_a_new_peer_goes_to_the_mesh() {
        let mut h = Harness::new();
        // 1500 less IPv4 and UDP headers, the sender name, the record and Ethernet headers:
        // what Weave Net reports as `mtu=1438`.
        assert_eq!(h.from_dp.try_recv().ok(), Some(Input::SleeveMtu(B, 1438)));
        assert!(h.from_dp.try_recv().is_err());
    }

    #[test]
    fn captured_broadcast_is_sent_to_the_next_hop() {
        let mut h = Harness::new();
        let f = frame(BROADCAST, LOCAL);
        h.tap.capture(&f);
        assert!(h.drain());
        assert_eq!(h.udp.sent(), vec![(b_addr(), datagram(A, A, B, &f))]);
        assert!(h.tap.injected().is_empty());
    }

    #[test]
    fn received_frame_is_injected_and_answer_goes_back_to_its_peer() {
        let mut h = Harness::new();
        // Our container's MAC becomes known by a frame it sends.
        h.tap.capture(&frame(BROADCAST, LOCAL));
        h.drain();
        h.udp.sent();
        let to_us = frame(LOCAL, REMOTE);
        h.udp.receive(&datagram(B, B, A, &to_us), b_addr());
        assert!(h.drain());
        assert_eq!(h.tap.injected(), vec![to_us]);
        assert!(h.udp.sent().is_empty(), "nothing to relay");
        // The answer: REMOTE was learnt behind B, so it goes to B alone, as unicast.
        let answer = frame(REMOTE, LOCAL);
        h.tap.capture(&answer);
        h.drain();
        assert_eq!(h.udp.sent(), vec![(b_addr(), datagram(A, A, B, &answer))]);
    }

    #[test]
    fn datagram_from_another_address_than_its_senders_is_dropped() {
        let mut h = Harness::new();
        let f = frame(BROADCAST, REMOTE);
        let d = datagram(B, B, A, &f);
        h.udp.receive(&d, "192.0.2.99:6783".parse().unwrap());
        h.drain();
        assert!(h.tap.injected().is_empty());
        assert!(h.udp.sent().is_empty());
        // The same datagram from B's address gets through.
        h.udp.receive(&d, b_addr());
        h.drain();
        assert_eq!(h.tap.injected(), vec![f]);
    }

    #[test]
    fn datagram_from_an_unconnected_sender_is_dropped_and_counted() {
        let mut h = Harness::new();
        let d = datagram(C, C, A, &frame(BROADCAST, REMOTE));
        h.udp.receive(&d, "192.0.2.3:6783".parse().unwrap());
        h.udp.receive(&d, b_addr());
        assert!(h.drain());
        assert!(h.tap.injected().is_empty());
        assert_eq!(h.dropped_unknown_sender(), 2);
    }

    #[test]
    fn control_frame_goes_to_the_mesh() {
        // On a plain connection, and opened on an encrypted one (sealed on the DF path).
        for key in [
            None,
            Some((key(), Scheme::Weave)),
            Some((key(), Scheme::Aes256Gcm)),
        ] {
            let mut h = Harness::with_key(key.clone());
            let _ = h.from_dp.try_recv(); // the path MTU
            let hb = sleeve::encode_heartbeat(B, B, A, 0x1234);
            let mut d = hb.to_vec();
            if let Some((k, scheme)) = key {
                d.clear();
                Sealer::new(scheme, &k, false, true)
                    .seal_to(&hb, &mut d)
                    .unwrap();
            }
            h.udp.receive(&d, b_addr());
            h.drain();
            let want = Input::Special {
                from: b_addr(),
                sender: B,
                frame: hb[6 + 14..].to_vec(),
            };
            assert_eq!(h.from_dp.try_recv().ok(), Some(want));
            assert_eq!(h.shared.specials_pending.load(Ordering::Acquire), 1);
            assert!(h.tap.injected().is_empty());
        }
    }

    fn key() -> SessionKey {
        SessionKey::from_bytes([0x42; 32])
    }

    #[test]
    fn encrypted_connection_seals_and_opens_with_its_mtu() {
        for scheme in [Scheme::Weave, Scheme::Aes256Gcm] {
            encrypted_connection(scheme);
        }
    }

    fn encrypted_connection(scheme: Scheme) {
        let mut h = Harness::with_key(Some((key(), scheme)));
        // 24 bytes of sealing less than the 1438 of a plain path: Weave Net's 1414.
        assert_eq!(h.from_dp.try_recv().ok(), Some(Input::SleeveMtu(B, 1414)));
        // Out: sealed on the non-DF path, B (which did not dial) opens it.
        let f = frame(BROADCAST, LOCAL);
        h.tap.capture(&f);
        h.drain();
        let sent = h.udp.sent();
        assert_eq!(sent.len(), 1);
        let mut d = sent[0].1.clone();
        assert_eq!(d.len(), datagram(A, A, B, &f).len() + 24);
        assert_eq!(
            &d[6..14],
            &0u64.to_be_bytes(),
            "first of the non-DF sequence"
        );
        let mut b_opener = Opener::new(scheme, &key(), false);
        assert_eq!(
            b_opener.open_datagram(&mut d).unwrap(),
            datagram(A, A, B, &f)
        );
        // In: B's sealed datagram is injected; its replay and a forgery are not.
        let to_us = frame(BROADCAST, REMOTE);
        let mut b_sealer = Sealer::new(scheme, &key(), false, false);
        let mut sealed = Vec::new();
        b_sealer
            .seal_to(&datagram(B, B, A, &to_us), &mut sealed)
            .unwrap();
        h.udp.receive(&sealed, b_addr());
        h.udp.receive(&sealed, b_addr());
        let mut forged = sealed.clone();
        *forged.last_mut().unwrap() ^= 1;
        h.udp.receive(&forged, b_addr());
        // A plain datagram from B is no better than a forgery.
        h.udp.receive(&datagram(B, B, A, &to_us), b_addr());
        h.drain();
        assert_eq!(h.tap.injected(), vec![to_us]);
        let stats = *lock(&h.shared.stats);
        assert_eq!(
            (stats.dropped_replayed, stats.dropped_undecryptable),
            (1, 2)
        );
    }
}
