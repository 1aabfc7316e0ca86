//! Keeps the kernel's sleeve receive shortcut ([`weft_netdev::SleeveShortcut`]) in step with
//! the sleeve data path: which connections it may take frames from (and the interfaces they
//! arrive on), which MACs live behind which peers, and when the data path last found its socket
//! empty. The data path's forwarder stays the authority; the shortcut only copies from it,
//! and gives back when MACs were last seen so that their bindings do not expire.
//!
//! The MAC copy follows the forwarder's changes one by one ([`Forwarder::take_mac_changes`]),
//! and is compared whole only when the fabric changed or changes were lost; a MAC the
//! kernel's map has no room for (or refused) waits, and is tried again only when room is
//! freed or at the data path's slow sweep ([`Shortcut::retry_waiting`]), never per datagram.
//!
//! Off with `WEFT_NO_SLEEVE_SHORTCUT=1`, and off by itself where the kernel cannot load or
//! attach the program (no BPF, no tcx): then every frame takes the data path, as before.

use std::collections::{HashMap, HashSet};
use std::mem;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::Instant;

use weft_core::overlay::{Fabric, FabricTable, Forwarder, Mac, MacCache, MacOwner};
use weft_netdev::{SleeveShortcut, SyncTap};
use weft_wire::PeerName;

/// Most MAC bindings the kernel's map holds (`weft_macs` in `weft_netdev`, sized like the
/// forwarder's whole MAC cache).
const KERNEL_MACS: usize = weft_core::overlay::MAX_MACS;

/// The shortcut and the copies of what it was told.
#[derive(Debug)]
pub(crate) struct Shortcut {
    kernel: std::sync::Arc<SleeveShortcut>,
    /// Connections as given to the kernel: peer → (its address, our address towards it).
    conns: HashMap<PeerName, (SocketAddrV4, Ipv4Addr)>,
    /// MAC bindings as given to the kernel.
    macs: HashMap<Mac, PeerName>,
    /// The forwarder's MAC generation and the fabric version last copied.
    generation: Option<(u64, u64)>,
    /// The fabric version the MAC copy was last compared whole against.
    fabric_version: Option<u64>,
    /// MACs the kernel should hold but has no room for, or refused.
    waiting: HashSet<Mac>,
    /// A binding left the kernel since the last retry of `waiting`.
    room_freed: bool,
    /// The forwarder's changed MACs, taken (kept to reuse its allocation).
    changed: HashSet<Mac>,
    /// When MACs were last read back ([`weft_netdev::monotonic_ns`]).
    read_back: u64,
}

impl Shortcut {
    /// Loads the program for us (`us`), the sleeve `port` and the TAP, unless switched off or
    /// unsupported (logged).
    pub(crate) fn start(us: PeerName, port: u16, tap: &SyncTap) -> Option<Self> {
        if std::env::var("WEFT_NO_SLEEVE_SHORTCUT").is_ok_and(|v| !v.is_empty() && v != "0") {
            tracing::info!("sleeve receive shortcut off (WEFT_NO_SLEEVE_SHORTCUT)");
            return None;
        }
        let tap_index = match tap.index() {
            Ok(i) => i,
            Err(e) => {
                tracing::info!("sleeve receive shortcut off: {e}");
                return None;
            }
        };
        match SleeveShortcut::load(us.to_bytes(), port, tap_index) {
            Ok(k) => Some(Self::over(k, weft_netdev::monotonic_ns())),
            Err(e) => {
                tracing::info!("sleeve receive shortcut off: {e}");
                None
            }
        }
    }

    /// Over a loaded program that has been told nothing yet; MACs it used after `read_back`
    /// ([`weft_netdev::monotonic_ns`]) count as seen at the first [`Self::read_back`].
    fn over(kernel: SleeveShortcut, read_back: u64) -> Self {
        Self {
            kernel: std::sync::Arc::new(kernel),
            conns: HashMap::new(),
            macs: HashMap::new(),
            generation: None,
            fabric_version: None,
            waiting: HashSet::new(),
            room_freed: false,
            changed: HashSet::new(),
            read_back,
        }
    }

    /// The kernel side, for its counters.
    pub(crate) fn kernel(&self) -> std::sync::Arc<SleeveShortcut> {
        self.kernel.clone()
    }

    /// Takes the connections we hold and their peers' sleeve addresses: new ones are given to
    /// the kernel (attaching the program to the interface they arrive on), gone or moved ones
    /// taken back. IPv6 peers are left to the data path.
    pub(crate) fn sync_conns<'a>(
        &mut self,
        connected: impl Iterator<Item = (PeerName, &'a SocketAddr)>,
    ) {
        let mut now: HashMap<PeerName, SocketAddrV4> = HashMap::new();
        for (peer, addr) in connected {
            if let SocketAddr::V4(a) = addr {
                now.insert(peer, *a);
            }
        }
        self.conns.retain(|peer, (from, local)| {
            let keep = now.get(peer) == Some(from);
            if !keep {
                if let Err(e) = self.kernel.remove_conn(*from, *local) {
                    tracing::warn!("{e}");
                }
            }
            keep
        });
        for (peer, from) in now {
            if self.conns.contains_key(&peer) {
                continue;
            }
            let (local, ifindex) = match weft_netdev::local_route(from) {
                Ok(r) => r,
                Err(e) => {
                    tracing::debug!("sleeve shortcut for {peer}: {e}");
                    continue;
                }
            };
            match self.kernel.attach(ifindex) {
                Ok(true) => tracing::info!("sleeve receive shortcut on interface {ifindex}"),
                Ok(false) => {}
                Err(e) => {
                    tracing::info!("sleeve receive shortcut not on interface {ifindex}: {e}");
                    continue;
                }
            }
            match self.kernel.set_conn(from, local, peer.to_bytes()) {
                Ok(()) => {
                    self.conns.insert(peer, (from, local));
                }
                Err(e) => tracing::warn!("{e}"),
            }
        }
    }

    /// Copies the forwarder's MAC bindings to the kernel when they or the fabric changed:
    /// local ones as ours, remote ones of known peers that are not direct fastdp neighbours
    /// (the data path injects nothing from those: VXLAN has delivered it), never the zero MAC
    /// (control frames' header). Only changed MACs are looked at, unless the fabric changed.
    pub(crate) fn sync_macs(&mut self, fwd: &mut Forwarder, fabric: &FabricTable, version: u64) {
        let g = (fwd.mac_cache().generation(), version);
        if self.generation == Some(g) {
            return;
        }
        self.generation = Some(g);
        let mut changed = mem::take(&mut self.changed);
        let complete = fwd.take_mac_changes(&mut changed);
        let cache = fwd.mac_cache();
        if complete && self.fabric_version == Some(version) {
            for &mac in &changed {
                self.update(mac, wanted(mac, cache, fabric));
            }
        } else {
            self.fabric_version = Some(version);
            // Waiting MACs are left to `retry_waiting`: a full map would refuse them again.
            let copied: Vec<Mac> = self.macs.keys().copied().collect();
            let known = copied.iter().copied().chain(
                cache
                    .iter()
                    .map(|(m, _)| m)
                    .filter(|m| !self.macs.contains_key(m) && !self.waiting.contains(m))
                    .collect::<Vec<_>>(),
            );
            for mac in known {
                self.update(mac, wanted(mac, cache, fabric));
            }
            let waiting: Vec<Mac> = self.waiting.iter().copied().collect();
            for mac in waiting {
                if wanted(mac, cache, fabric).is_none() {
                    self.waiting.remove(&mac);
                }
            }
        }
        self.changed = changed;
        if mem::take(&mut self.room_freed) {
            self.retry_waiting(fwd, fabric);
        }
    }

    /// Gives the kernel `mac` → `want` (or takes `mac` back for `None`), if it does not hold
    /// that already; a binding that does not fit waits.
    fn update(&mut self, mac: Mac, want: Option<PeerName>) {
        let Some(peer) = want else {
            self.waiting.remove(&mac);
            if self.macs.remove(&mac).is_some() {
                self.room_freed = true;
                if let Err(e) = self.kernel.remove_mac(mac.0) {
                    tracing::warn!("{e}");
                }
            }
            return;
        };
        match self.macs.get(&mac) {
            Some(&p) if p == peer => {
                self.waiting.remove(&mac);
                return;
            }
            Some(_) => {}
            None if self.macs.len() >= KERNEL_MACS => {
                self.waiting.insert(mac);
                return;
            }
            None => {}
        }
        match self.kernel.set_mac(mac.0, peer.to_bytes()) {
            Ok(()) => {
                self.macs.insert(mac, peer);
                self.waiting.remove(&mac);
            }
            Err(e) => {
                if self.waiting.insert(mac) && self.waiting.len() == 1 {
                    tracing::debug!("{e}; MACs wait for the data path's next sweep");
                }
            }
        }
    }

    /// Tries again the MACs that did not fit, as many as there is room for; stops at the
    /// first the kernel refuses. Called when room was freed and at the slow sweep.
    pub(crate) fn retry_waiting(&mut self, fwd: &Forwarder, fabric: &FabricTable) {
        let room = KERNEL_MACS.saturating_sub(self.macs.len());
        let tries: Vec<Mac> = self.waiting.iter().copied().take(room).collect();
        for mac in tries {
            self.update(mac, wanted(mac, fwd.mac_cache(), fabric));
            if self.waiting.contains(&mac) {
                break;
            }
        }
    }

    /// Before the forwarder's MAC sweep: bindings the kernel used since the last call are
    /// refreshed in the forwarder, so that they do not expire while only the kernel sees them.
    pub(crate) fn read_back(&mut self, fwd: &mut Forwarder, now: Instant) {
        let since = self.read_back;
        self.read_back = weft_netdev::monotonic_ns();
        match self.kernel.macs() {
            Ok(macs) => {
                for m in macs.iter().filter(|m| m.seen >= since) {
                    if let Some(peer) = PeerName::from_bytes(&m.peer) {
                        fwd.refresh_remote(Mac(m.mac), peer, now);
                    }
                }
            }
            Err(e) => tracing::warn!("{e}"),
        }
    }

    /// MACs waiting for room in the kernel.
    #[cfg(test)]
    fn waiting(&self) -> usize {
        self.waiting.len()
    }

    /// The data path found the socket empty; `at` was read before that read.
    pub(crate) fn drained(&self, at: u64) {
        self.kernel.drained(at);
    }

    /// Whether the data path should read the socket again soon, even with nothing to read,
    /// for the kernel to take frames again.
    pub(crate) fn holding_back(&self) -> bool {
        self.kernel.holding_back()
    }
}

/// Which peer the kernel should take frames from `mac` for, if any: see
/// [`Shortcut::sync_macs`].
fn wanted(mac: Mac, cache: &MacCache, fabric: &FabricTable) -> Option<PeerName> {
    if mac.0 == [0; 6] {
        return None;
    }
    match cache.lookup(mac)? {
        MacOwner::Local => Some(fabric.our_name()),
        MacOwner::Peer(p) if fabric.is_known_peer(p) && !fabric.is_direct_fastdp(p) => Some(p),
        MacOwner::Peer(_) => None,
    }
}

/// The program against the forwarder it shortcuts: on every datagram of a grid of senders,
/// record peers, MACs and record counts, the kernel takes a datagram exactly when the
/// forwarder would inject its one frame and do nothing else (no relay, no learning, no drop).
/// Privileged (loads a BPF program): runs only with `WEFT_TEST_ROOT=1`.
#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests: a panic is how they fail
mod tests {
    use std::collections::HashMap;
    use std::net::{Ipv4Addr, SocketAddrV4};
    use std::time::Instant;

    use weft_core::overlay::{Delivery, FabricTable, Forwarder, Mac};
    use weft_netdev::{monotonic_ns, DRAIN_MARGIN_NS};
    use weft_wire::sleeve;
    use weft_wire::PeerName;

    use super::Shortcut;

    const PORT: u16 = 6783;
    const FROM: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
    const TO: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
    const A: PeerName = PeerName(0x0a00_0000_0001); // us
    const B: PeerName = PeerName(0x0a00_0000_0002); // sleeve neighbour, our connection
    const C: PeerName = PeerName(0x0a00_0000_0003); // behind B
    const D: PeerName = PeerName(0x0a00_0000_0004); // fastdp neighbour
    const E: PeerName = PeerName(0x0a00_0000_0005); // gets B's floods from us
    const X: PeerName = PeerName(0x0a00_0000_00ff); // unknown
    const L: [u8; 6] = [2, 0, 0, 0, 0, 0x01]; // behind our bridge
    const MB: [u8; 6] = [2, 0, 0, 0, 0, 0x02];
    const MC: [u8; 6] = [2, 0, 0, 0, 0, 0x03];
    const MD: [u8; 6] = [2, 0, 0, 0, 0, 0x04];
    const NEW: [u8; 6] = [2, 0, 0, 0, 0, 0x0e];

    fn fabric() -> FabricTable {
        FabricTable {
            us: A,
            unicast: [(B, B), (C, B), (D, D), (E, E)].into_iter().collect(),
            broadcast: [(B, vec![E]), (C, vec![E])].into_iter().collect(),
            fastdp: [D].into_iter().collect(),
            known: [A, B, C, D, E].into_iter().collect(),
            broadcast_routes: None,
            onward: None,
        }
    }

    fn frame(dst: [u8; 6], src: [u8; 6]) -> Vec<u8> {
        let mut f = dst.to_vec();
        f.extend_from_slice(&src);
        f.extend_from_slice(&[0x88, 0xb5]);
        f.resize(60, 0x5a);
        f
    }

    fn datagram(sender: PeerName, records: &[(PeerName, PeerName, Vec<u8>)]) -> Vec<u8> {
        let mut d = sender.to_bytes().to_vec();
        for (src, dst, f) in records {
            sleeve::encode_frame(*src, *dst, f, &mut d).unwrap();
        }
        d
    }

    /// A forwarder that has seen L captured and frames from MB (B), MC (C) and MD (D).
    fn forwarder(fab: &FabricTable, now: Instant) -> Forwarder {
        let mut f = Forwarder::new();
        f.handle_captured(&frame([0xff; 6], L), fab, now);
        for (peer, mac) in [(B, MB), (C, MC), (D, MD)] {
            let d = datagram(B, &[(peer, A, frame([0xff; 6], mac))]);
            f.handle_datagram(&d, fab, now, &mut |_| {}).unwrap();
        }
        while f.poll_datagram(&mut Vec::new()).is_some() {}
        f
    }

    fn packet(payload: &[u8]) -> Vec<u8> {
        let mut p = vec![
            2, 0, 0, 0, 0, 0xbb, 2, 0, 0, 0, 0, 0xaa, 0x08, 0x00, 0x45, 0,
        ];
        p.extend_from_slice(&((28 + payload.len()) as u16).to_be_bytes());
        p.extend_from_slice(&[0, 0, 0x40, 0, 64, 17, 0, 0]);
        p.extend_from_slice(&FROM.octets());
        p.extend_from_slice(&TO.octets());
        p.extend_from_slice(&PORT.to_be_bytes());
        p.extend_from_slice(&PORT.to_be_bytes());
        p.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
        p.extend_from_slice(&[0, 0]);
        p.extend_from_slice(payload);
        p
    }

    fn privileged() -> bool {
        let on = std::env::var("WEFT_TEST_ROOT").as_deref() == Ok("1");
        if !on {
            eprintln!("skipped: set WEFT_TEST_ROOT=1 (as root) to run privileged tests");
        }
        on
    }

    fn shortcut() -> Shortcut {
        Shortcut::over(
            weft_netdev::SleeveShortcut::load(A.to_bytes(), PORT, 1).unwrap(),
            0,
        )
    }

    /// What the kernel's map holds.
    fn kernel_macs(s: &Shortcut) -> HashMap<Mac, PeerName> {
        let macs = s.kernel.macs().unwrap();
        macs.iter()
            .map(|m| (Mac(m.mac), PeerName::from_bytes(&m.peer).unwrap()))
            .collect()
    }

    /// The kernel's copy after following changes one by one is the copy made from scratch.
    #[test]
    fn mac_copy_follows_changes_and_fabric() {
        if !privileged() {
            return;
        }
        let now = Instant::now();
        let mut fab = fabric();
        let mut s = shortcut();
        let mut fwd = forwarder(&fab, now);
        s.sync_macs(&mut fwd, &fab, 0);
        let expect = |pairs: &[([u8; 6], PeerName)]| -> HashMap<Mac, PeerName> {
            pairs.iter().map(|(m, p)| (Mac(*m), *p)).collect()
        };
        assert_eq!(kernel_macs(&s), expect(&[(L, A), (MB, B), (MC, C)]));
        // New, moved and refreshed bindings; a peer forgotten.
        for (peer, mac) in [(B, NEW), (C, MB), (C, MC)] {
            let d = datagram(B, &[(peer, A, frame([0xff; 6], mac))]);
            fwd.handle_datagram(&d, &fab, now, &mut |_| {}).unwrap();
        }
        s.sync_macs(&mut fwd, &fab, 0);
        assert_eq!(
            kernel_macs(&s),
            expect(&[(L, A), (MB, C), (MC, C), (NEW, B)])
        );
        fwd.forget_peer(C);
        s.sync_macs(&mut fwd, &fab, 0);
        assert_eq!(kernel_macs(&s), expect(&[(L, A), (NEW, B)]));
        // B becomes a fastdp neighbour: a new fabric version takes its MACs back.
        fab.fastdp.insert(B);
        s.sync_macs(&mut fwd, &fab, 1);
        assert_eq!(kernel_macs(&s), expect(&[(L, A)]));
        fab.fastdp.remove(&B);
        s.sync_macs(&mut fwd, &fab, 2);
        assert_eq!(kernel_macs(&s), expect(&[(L, A), (NEW, B)]));
        assert_eq!(s.waiting(), 0);
    }

    #[test]
    fn kernel_takes_exactly_what_the_forwarder_would_only_inject() {
        if !privileged() {
            return;
        }
        let now = Instant::now();
        let fab = fabric();
        let mut s = shortcut();
        s.kernel
            .set_conn(SocketAddrV4::new(FROM, PORT), TO, B.to_bytes())
            .unwrap();
        s.sync_macs(&mut forwarder(&fab, now), &fab, 0);
        let peers = [A, B, C, D, E, X];
        let macs = [L, MB, MC, MD, NEW, [0; 6], [0xff; 6]];
        let (mut taken, mut cases) = (0, 0);
        for sender in [B, C] {
            for src in peers {
                for dst in [A, C, X] {
                    for dst_mac in macs {
                        for src_mac in macs {
                            for n in [1, 2] {
                                let f = frame(dst_mac, src_mac);
                                let recs = vec![(src, dst, f.clone()); n];
                                let d = datagram(sender, &recs);
                                let mut fwd = forwarder(&fab, now);
                                let g = fwd.mac_cache().generation();
                                let mut injected = Vec::new();
                                let mut other = 0;
                                let r = fwd.handle_datagram(&d, &fab, now, &mut |del| match del {
                                    Delivery::Inject(x) => injected.push(x.to_vec()),
                                    Delivery::Special { .. } => other += 1,
                                });
                                let stats = fwd.stats();
                                let only_inject = r.is_ok_and(|r| r.relayed == 0 && r.dropped == 0)
                                    && other == 0
                                    && injected.len() == 1
                                    && stats.mac_moves == 0
                                    && fwd.mac_cache().generation() == g
                                    && fwd.poll_datagram(&mut Vec::new()).is_none();
                                s.kernel.drained(monotonic_ns() + DRAIN_MARGIN_NS);
                                let (verdict, out) = s.kernel.test_run(&packet(&d)).unwrap();
                                let what = format!(
                                    "sender {sender}, {src} -> {dst}, {} -> {}, {n} record(s)",
                                    Mac(src_mac),
                                    Mac(dst_mac)
                                );
                                // The data path also drops a sender it has no connection
                                // with; the kernel knows only B's, from B's address.
                                if only_inject && sender == B {
                                    assert_eq!(verdict, 7, "kernel should take: {what}");
                                    assert_eq!(out, injected[0], "{what}");
                                    taken += 1;
                                } else {
                                    assert_eq!(verdict, 0, "kernel should leave: {what}");
                                }
                                cases += 1;
                            }
                        }
                    }
                }
            }
        }
        assert!(taken >= 2, "{taken} of {cases} taken");
    }
}
