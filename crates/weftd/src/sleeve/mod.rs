//! The sleeve data path: Weave's userspace UDP encapsulation between the TAP port on the bridge
//! and the sleeve socket, on a thread of its own ([`data_path`]), off the tokio reactor. It
//! waits on the TAP and the sleeve socket with one `epoll_wait` and then reads both until
//! neither has anything, so a packet costs one wake-up and its system calls, not a reactor
//! turn and a task poll; it forwards with its own [`Forwarder`] from straight-reused buffers.
//!
//! This module owns what the mesh task and that thread share: the mesh task holds a [`Sleeve`]
//! and hands it a [`FabricSnapshot`] (routes, connected peers, their UDP addresses) whenever
//! that changes; the thread sends back [`Input`] (control frames, path MTUs) and publishes
//! its counters. The socket and the TAP sit behind the small traits of [`io`], so the thread's
//! logic is tested over fakes; the kernel's receive shortcut is kept in step by [`shortcut`].
//!
//! [`Forwarder`]: weft_core::overlay::Forwarder

mod data_path;
pub(crate) mod io;
mod shortcut;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use tokio::sync::mpsc;
use weft_core::mesh::{ConnId, Mesh};
use weft_core::overlay::{FabricTable, FastMap, FastSet, ForwarderStats};
use weft_crypto::key::SessionKey;
use weft_crypto::sleeve::Scheme;
use weft_netdev::{SleeveShortcut, SyncTap};
use weft_wire::PeerName;

use self::data_path::DataPath;
use self::shortcut::Shortcut;

/// Most control frames waiting for the mesh task; more are dropped.
const MAX_PENDING_SPECIALS: usize = 256;

/// What the sleeve data path thread tells the mesh task. Bounded by counters on the sending
/// side ([`MAX_PENDING_SPECIALS`]); MTU reports come once per path.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Input {
    /// The data path measured the overlay MTU towards a next hop.
    SleeveMtu(PeerName, u32),
    /// A special (control) sleeve frame the data path received; hand it to the mesh, then
    /// call [`Sleeve::special_handled`].
    Special {
        from: SocketAddr,
        sender: PeerName,
        frame: Vec<u8>,
    },
}

/// The data path's counters, as of its last batch.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Counters {
    /// Sleeve forwarding counters.
    pub(crate) forwarder: ForwarderStats,
    /// Datagrams dropped because no connection to their sender exists.
    pub(crate) dropped_unknown_sender: u64,
    /// Datagrams of encrypted connections that did not open (forged, altered, truncated).
    pub(crate) dropped_undecryptable: u64,
    /// Datagrams of encrypted connections seen before or older than the replay window.
    pub(crate) dropped_replayed: u64,
    /// Frames the kernel's receive shortcut injected into the bridge.
    pub(crate) kernel_injected: u64,
}

/// What the data path thread counts itself, published after each batch.
#[derive(Debug, Clone, Copy, Default)]
struct PathStats {
    forwarder: ForwarderStats,
    dropped_unknown_sender: u64,
    dropped_undecryptable: u64,
    dropped_replayed: u64,
}

/// The mesh task's handle on the sleeve data path: hands it new views of the mesh, reads its
/// counters, and stops its thread when dropped.
pub(crate) struct Sleeve {
    shared: Arc<Shared>,
    /// Kept here too, so the mesh task's channel stays open should the thread end.
    to_mesh: mpsc::UnboundedSender<Input>,
    /// The fabric last handed to the data path.
    fabric: Option<Arc<FabricSnapshot>>,
    /// [`Mesh::fabric_version`] when `fabric` was last captured.
    fabric_version: Option<u64>,
}

impl Sleeve {
    /// A handle with no data path yet, and the channel on which the data path talks to the
    /// mesh task.
    pub(crate) fn new() -> (Self, mpsc::UnboundedReceiver<Input>) {
        let (to_mesh, rx) = mpsc::unbounded_channel();
        let s = Self {
            shared: Arc::new(Shared::default()),
            to_mesh,
            fabric: None,
            fabric_version: None,
        };
        (s, rx)
    }

    /// Starts the data path thread for us (`us`) on the TAP and the sleeve socket, with the
    /// kernel's receive shortcut when it can load.
    pub(crate) fn spawn(&self, us: PeerName, tap: SyncTap, udp: Arc<std::net::UdpSocket>) {
        let shortcut = udp
            .local_addr()
            .ok()
            .and_then(|a| Shortcut::start(us, a.port(), &tap));
        let dp = DataPath::new(
            tap,
            udp,
            self.shared.clone(),
            self.to_mesh.clone(),
            shortcut,
        );
        if let Err(e) = std::thread::Builder::new()
            .name("weft-sleeve".into())
            .spawn(move || dp.run())
        {
            tracing::error!("cannot start the sleeve data path: {e}");
        }
    }

    /// Hands the data path a new view of the mesh when it changed.
    pub(crate) fn publish(&mut self, mesh: &mut Mesh) {
        // Most passes (gossip, heartbeats) change nothing the data path sees.
        let version = mesh.fabric_version();
        if self.fabric_version == Some(version) {
            return;
        }
        self.fabric_version = Some(version);
        let snap = FabricSnapshot::of(mesh);
        if self.fabric.as_deref() == Some(&snap) {
            return;
        }
        let snap = Arc::new(snap);
        self.shared.publish(snap.clone());
        self.fabric = Some(snap);
    }

    /// The mesh task has handled an [`Input::Special`]: room for one more.
    pub(crate) fn special_handled(&self) {
        self.shared.specials_pending.fetch_sub(1, Ordering::AcqRel);
    }

    /// The data path's counters.
    pub(crate) fn counters(&self) -> Counters {
        let stats = *lock(&self.shared.stats);
        let kernel_injected = self
            .shared
            .shortcut
            .get()
            .map_or(0, |k| k.counters().frames);
        Counters {
            forwarder: stats.forwarder,
            dropped_unknown_sender: stats.dropped_unknown_sender,
            dropped_undecryptable: stats.dropped_undecryptable,
            dropped_replayed: stats.dropped_replayed,
            kernel_injected,
        }
    }
}

impl Drop for Sleeve {
    /// The mesh task has ended: so does the data path thread.
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
    }
}

/// What the mesh task and the data path thread share.
#[derive(Default)]
struct Shared {
    /// The mesh as the data path sees it; replaced whole when it changes.
    fabric: Mutex<Arc<FabricSnapshot>>,
    /// Bumped after each replacement of `fabric`, so that the data path checks cheaply.
    version: AtomicU64,
    /// The data path's counters, as of its last batch.
    stats: Mutex<PathStats>,
    /// Set when the mesh task ends: the data path thread returns.
    stop: AtomicBool,
    /// Control frames handed to the mesh task and not yet handled.
    specials_pending: AtomicUsize,
    /// The kernel's sleeve receive shortcut, when it runs (for its counters).
    shortcut: OnceLock<Arc<SleeveShortcut>>,
}

impl Shared {
    /// Replaces the fabric the data path sees.
    fn publish(&self, snap: Arc<FabricSnapshot>) {
        *lock(&self.fabric) = snap;
        self.version.fetch_add(1, Ordering::Release);
    }
}

/// Locks a mutex; a panic elsewhere while holding it leaves plain data, still usable.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The answers of [`Mesh::fabric`], [`Mesh::is_connected`], [`Mesh::peer_udp_addr`] and
/// [`Mesh::sleeve_key`] for every known peer, taken at one instant, for the data path thread.
#[derive(Debug, Default, PartialEq)]
struct FabricSnapshot {
    /// Routes and peers, for the forwarder.
    table: FabricTable,
    /// Peers we hold a connection with (datagrams from others are dropped).
    connected: FastSet<PeerName>,
    /// Peers' sleeve addresses.
    udp: FastMap<PeerName, SocketAddr>,
    /// The keys of encrypted connections: datagrams to and from these peers are sealed.
    keys: FastMap<PeerName, SleeveKey>,
}

/// How the sleeve datagrams of one encrypted connection are sealed.
#[derive(Debug, Clone, PartialEq, Eq)]
struct SleeveKey {
    /// The connection: a new one to the same peer has a new key and starts its sequence
    /// numbers again.
    conn: ConnId,
    key: SessionKey,
    scheme: Scheme,
    /// We dialled the connection (the nonces' polarity).
    outbound: bool,
}

impl FabricSnapshot {
    fn of(mesh: &mut Mesh) -> Self {
        let names = mesh.peers().all_names();
        let table = FabricTable::capture(&mesh.fabric(), &names);
        Self {
            table,
            connected: names
                .iter()
                .copied()
                .filter(|&n| mesh.is_connected(n))
                .collect(),
            udp: names
                .iter()
                .filter_map(|&n| mesh.peer_udp_addr(n).map(|a| (n, a)))
                .collect(),
            keys: names
                .iter()
                .filter_map(|&n| {
                    let (conn, key, scheme, outbound) = mesh.sleeve_key(n)?;
                    let key = key.clone();
                    let k = SleeveKey {
                        conn,
                        key,
                        scheme,
                        outbound,
                    };
                    Some((n, k))
                })
                .collect(),
        }
    }
}
