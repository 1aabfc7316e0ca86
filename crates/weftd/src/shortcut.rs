//! Keeps the kernel's sleeve receive shortcut ([`weft_netdev::SleeveShortcut`]) in step with
//! the sleeve data path: which connections it may take frames from (and the interfaces they
//! arrive on), which MACs live behind which peers, and when the data path last found its socket
//! empty. The data path's forwarder stays the authority; the shortcut only copies from it,
//! and gives back when MACs were last seen so that their bindings do not expire.
//!
//! Off with `WEFT_NO_SLEEVE_SHORTCUT=1`, and off by itself where the kernel cannot load or
//! attach the program (no BPF, no tcx): then every frame takes the data path, as before.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::Instant;

use weft_core::overlay::{Forwarder, Mac, MacOwner};
use weft_netdev::{SleeveShortcut, SyncTap};
use weft_wire::PeerName;

/// The shortcut and the copies of what it was told.
#[derive(Debug)]
pub(crate) struct Shortcut {
    kernel: std::sync::Arc<SleeveShortcut>,
    /// Connections as given to the kernel: peer → (its address, our address towards it).
    conns: HashMap<PeerName, (SocketAddrV4, Ipv4Addr)>,
    macs: HashMap<Mac, PeerName>,
    /// The forwarder's remote MAC generation last copied.
    generation: Option<u64>,
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
            Ok(k) => Some(Self {
                kernel: std::sync::Arc::new(k),
                conns: HashMap::new(),
                macs: HashMap::new(),
                generation: None,
                read_back: weft_netdev::monotonic_ns(),
            }),
            Err(e) => {
                tracing::info!("sleeve receive shortcut off: {e}");
                None
            }
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

    /// Copies the forwarder's remote MAC bindings to the kernel when they changed.
    pub(crate) fn sync_macs(&mut self, fwd: &Forwarder) {
        let g = fwd.mac_cache().remote_generation();
        if self.generation == Some(g) {
            return;
        }
        self.generation = Some(g);
        let now: HashMap<Mac, PeerName> = fwd
            .mac_cache()
            .iter()
            .filter_map(|(mac, owner)| match owner {
                MacOwner::Peer(p) => Some((mac, p)),
                MacOwner::Local => None,
            })
            .collect();
        let kernel = &self.kernel;
        self.macs.retain(|mac, _| {
            let keep = now.contains_key(mac);
            if !keep {
                if let Err(e) = kernel.remove_mac(mac.0) {
                    tracing::warn!("{e}");
                }
            }
            keep
        });
        for (mac, peer) in now {
            if self.macs.get(&mac) == Some(&peer) {
                continue;
            }
            match self.kernel.set_mac(mac.0, peer.to_bytes()) {
                Ok(()) => {
                    self.macs.insert(mac, peer);
                }
                Err(e) => tracing::debug!("{e}"),
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

    /// The data path found the socket empty; `at` was read before that read.
    pub(crate) fn drained(&self, at: u64) {
        self.kernel.drained(at);
    }
}
