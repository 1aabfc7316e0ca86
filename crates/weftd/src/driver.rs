//! The mesh task: one tokio task owns the [`Mesh`] state machine and selects on what
//! connection I/O ([`crate::conn_io`]), the sleeve data path and the HTTP API send it and on
//! the mesh's next deadline; it hands what the mesh asks for to connection writers, the UDP
//! socket, and the data-plane task ([`crate::dataplane_task`]), and never waits on I/O itself.
//!
//! Nothing here decides anything about the protocol: it reads, writes, dials and forwards
//! what the mesh asks for.
//!
//! The sleeve hot path runs on a thread of its own (`DataPath`), off the tokio reactor: it
//! waits on the TAP and the sleeve socket with one `epoll_wait` and then reads both until
//! neither has anything, so a packet costs one wake-up and its system calls, not a reactor
//! turn and a task poll; it forwards with its own [`Forwarder`] from straight-reused buffers.
//! The mesh task hands it a `FabricSnapshot` (routes, connected peers, their UDP addresses)
//! whenever that changes, and gets back the special (control) frames and the counters.
//! TAP reads (TCP super-packets when the TAP has offloads) are cut by the forwarder into
//! wire-sized segments sent with one UDP GSO `sendmsg` per next hop; UDP reads (runs of
//! datagrams coalesced by UDP GRO) are split per datagram, and what is injected goes through
//! the [`Coalescer`], so that one TAP write carries a whole run of TCP segments.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::SeedableRng;
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::{mpsc, oneshot, Semaphore};
use weft_core::connection_maker::{
    ConnectRequest, Lookup, LookupToken, LOOKUP_TIMEOUT, MAX_PENDING_LOOKUPS,
};
use weft_core::handshake::LocalIdentity;
use weft_core::mesh::{ConnId, Mesh, MeshEvent, MeshStatus, Origin};

use weft_core::overlay::offload::{
    complete_checksum, Coalescer, Tso, VnetHdr, GSO_NONE, PLAIN_HDR, VNET_F_NEEDS_CSUM,
    VNET_HDR_LEN,
};
use weft_core::overlay::{
    pmtu, Delivery, FabricTable, Forwarder, ForwarderStats, Received, SegmentBatch, Verdict,
    MAC_SWEEP_INTERVAL,
};
use weft_netdev::{PacketSocket, SyncTap};
use weft_wire::PeerName;

use crate::conn_io::{self, ConnInput, ConnWriter, IoCounters, ToMesh};
use crate::dataplane::Dataplane;
use crate::dataplane_task::{self, Job};
use crate::shortcut::Shortcut;
use crate::store::Store;

/// Room for one TAP read: a `virtio_net_hdr` and a 64 KB super-packet with its headers.
const TAP_BUF_LEN: usize = VNET_HDR_LEN + 14 + 65535 + 64;
/// Most rounds of reads (one of each fd) per wake-up of the data path, before it checks for
/// a new fabric, publishes its counters and sweeps.
const DRAIN_READS: usize = 64;
/// IPv4 and UDP headers: the path MTU minus these is the largest sleeve datagram.
const IP_UDP_HEADERS: usize = 28;
/// Most control frames waiting for the mesh task; more are dropped.
const MAX_PENDING_SPECIALS: usize = 256;
/// Most fastdp heartbeat frames waiting for the mesh task; more are dropped.
const MAX_PENDING_FASTDP: usize = 64;
/// How long a send waits for room in a full socket buffer before dropping.
const SEND_WAIT: Duration = Duration::from_millis(2);
/// Host-name lookups run at once, each on a blocking thread; more wait for one to finish.
const LOOKUP_THREADS: usize = 4;
/// How soon to read the sleeve socket again while the receive shortcut holds frames back.
const SHORTCUT_RECHECK: Duration = Duration::from_millis(1);

/// Everything the status, report and metrics endpoints show, taken at one instant.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// The mesh.
    pub mesh: MeshStatus,
    /// Sleeve forwarding counters.
    pub forwarder: ForwarderStats,
    /// Datagrams dropped because no connection to their sender exists.
    pub dropped_unknown_sender: u64,
    /// Frames the kernel's sleeve receive shortcut injected into the bridge.
    pub kernel_injected: u64,
    /// What connection I/O refused or dropped.
    pub io: IoCounts,
}

/// What connection I/O refused or dropped since start (see `conn_io::IoCounters`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IoCounts {
    /// Accepted sockets closed at once: too many intros in progress.
    pub connections_refused: u64,
    /// Intros that failed, both directions.
    pub intros_failed: u64,
    /// Connections closed for a frame that broke the framing.
    pub frames_refused: u64,
    /// Connections closed because the peer did not read what we sent.
    pub not_reading: u64,
}

/// Requests from the HTTP API to the mesh task.
#[derive(Debug)]
pub enum Command {
    /// Snapshot for status/report/metrics.
    Status(oneshot::Sender<Snapshot>),
    /// `POST /connect`; replies with the error lines.
    Connect {
        /// Peers as given.
        peers: Vec<String>,
        /// Replace the targets.
        replace: bool,
        /// Error lines.
        reply: oneshot::Sender<Vec<String>>,
    },
    /// `POST /forget`.
    Forget(Vec<String>, oneshot::Sender<()>),
    /// `POST`/`DELETE`/`GET /expose`: handed on to the data-plane task.
    Dataplane(Job),
}

/// What the sleeve data path thread tells the mesh task. Bounded by counters on the sending
/// side ([`MAX_PENDING_SPECIALS`]); MTU reports come once per path.
enum Input {
    /// The data path measured the overlay MTU towards a next hop.
    SleeveMtu(PeerName, u32),
    /// A special (control) sleeve frame the data path received.
    Special {
        from: SocketAddr,
        sender: PeerName,
        frame: Vec<u8>,
    },
}

/// The sockets and identity the driver needs.
pub struct Driver {
    /// Our identity, for intros.
    pub identity: LocalIdentity,
    /// The bound mesh TCP listener.
    pub listener: TcpListener,
    /// The bound sleeve UDP socket.
    pub udp: UdpSocket,
    /// Address to bind outgoing connections to (`--host`), if any.
    pub host: Option<std::net::IpAddr>,
    /// Persistent state, for targets.
    pub store: Arc<Store>,
    /// Bridge, TAP, VXLAN and firewall.
    pub dataplane: Dataplane,
}

static NEXT_CONN: AtomicU64 = AtomicU64::new(1);

fn next_conn() -> ConnId {
    ConnId(NEXT_CONN.fetch_add(1, Ordering::Relaxed))
}

impl Driver {
    /// Runs the mesh until the command channel closes. `initial_peers` are connected at once.
    pub async fn run(
        self,
        mut mesh: Mesh,
        initial_peers: Vec<String>,
        mut commands: mpsc::Receiver<Command>,
    ) {
        let Self {
            identity,
            listener,
            udp,
            host,
            store,
            mut dataplane,
        } = self;
        let (dp_tx, mut dp_rx) = mpsc::unbounded_channel::<Input>();
        let (to_mesh, mut conn_rx) = ToMesh::new();
        let (fastdp_tx, mut fastdp_rx) = mpsc::channel::<Vec<u8>>(MAX_PENDING_FASTDP);
        // The sleeve data path runs on a thread of its own, off the reactor: a packet then
        // costs one wake-up and the reads, not a reactor turn and a task poll.
        let udp = match udp.into_std() {
            Ok(u) => Arc::new(u),
            Err(e) => {
                tracing::error!("sleeve socket: {e}");
                return;
            }
        };
        let shared = Arc::new(Shared::default());
        let _stop = StopOnDrop(shared.clone());
        if let Some(tap) = dataplane.tap.take() {
            let dp = DataPath::new(
                identity.name,
                tap.into_sync(),
                udp.clone(),
                shared.clone(),
                dp_tx,
            );
            if let Err(e) = std::thread::Builder::new()
                .name("weft-sleeve".into())
                .spawn(move || dp.run())
            {
                tracing::error!("cannot start the sleeve data path: {e}");
            }
        }
        // Inbound intro ids come from the mesh's RNG too, so a seeded run is reproducible.
        let ids = rand::rngs::StdRng::seed_from_u64(mesh.new_conn_id());
        conn_io::spawn_listener(listener, identity.clone(), ids, next_conn, to_mesh.clone());
        if let Some(hb) = dataplane.heartbeats.clone() {
            spawn_heartbeat_reader(hb, fastdp_tx);
        }
        let heartbeat_tx = dataplane.heartbeat_sender();
        let jobs = match dataplane_task::spawn(dataplane, store) {
            Ok(j) => j,
            Err(e) => {
                tracing::error!("cannot start the data-plane task: {e}");
                return;
            }
        };
        let (lookup_tx, mut lookup_rx) = mpsc::channel(MAX_PENDING_LOOKUPS);
        let mut ctx = Ctx {
            identity,
            host,
            udp,
            heartbeat_tx,
            jobs,
            to_mesh,
            shared,
            live: HashMap::new(),
            fabric: None,
            fabric_version: None,
            lookups: Lookups {
                answers: lookup_tx,
                threads: Arc::new(Semaphore::new(LOOKUP_THREADS)),
            },
            replies: HashMap::new(),
        };
        if !initial_peers.is_empty() {
            // No reply waits for these: their errors are logged (Ctx::act).
            mesh.connect(&initial_peers, false, Instant::now());
        }
        // One timer for the mesh's deadline, moved only when the deadline moves.
        let timer = tokio::time::sleep_until(Instant::now().into());
        tokio::pin!(timer);
        let mut armed: Option<Instant> = None;
        loop {
            let now = Instant::now();
            while let Some(ev) = mesh.poll_event(now) {
                ctx.act(ev, &mut mesh, now);
            }
            ctx.publish_fabric(&mut mesh);
            let deadline = mesh
                .poll_timeout()
                .unwrap_or(now + Duration::from_secs(3600));
            if armed != Some(deadline) {
                timer.as_mut().reset(deadline.into());
                armed = Some(deadline);
            }
            tokio::select! {
                input = conn_rx.recv() => {
                    // Never None: `ctx.to_mesh` keeps the channel open.
                    let Some(input) = input else { break };
                    ctx.on_conn_input(input, &mut mesh);
                }
                input = dp_rx.recv() => {
                    let Some(input) = input else { continue };
                    ctx.on_data_path(input, &mut mesh);
                }
                frame = fastdp_rx.recv() => {
                    let Some(frame) = frame else { continue };
                    mesh.handle_fastdp_frame(&frame, Instant::now());
                }
                cmd = commands.recv() => {
                    let Some(cmd) = cmd else { break };
                    ctx.on_command(cmd, &mut mesh);
                }
                answer = lookup_rx.recv() => {
                    // Never None: `ctx.lookups` keeps the channel open.
                    let Some((token, answer)) = answer else { continue };
                    mesh.handle_lookup(token, answer, Instant::now());
                }
                () = &mut timer => {
                    armed = None;
                    mesh.handle_timeout(Instant::now());
                }
            }
        }
    }
}

/// What acting on mesh events needs besides the mesh itself.
struct Ctx {
    identity: LocalIdentity,
    host: Option<std::net::IpAddr>,
    /// The sleeve socket, for the mesh's heartbeats (the data path thread has it too).
    udp: Arc<std::net::UdpSocket>,
    /// Sends fastdp heartbeats out of the VXLAN device.
    heartbeat_tx: Option<Arc<PacketSocket>>,
    /// Netlink, nft and database work, done in order off this task.
    jobs: mpsc::UnboundedSender<Job>,
    /// For new connections' I/O.
    to_mesh: ToMesh,
    /// What the mesh task and the data path thread share.
    shared: Arc<Shared>,
    /// Writers of registered connections.
    live: HashMap<ConnId, ConnWriter>,
    /// The fabric last handed to the data path.
    fabric: Option<Arc<FabricSnapshot>>,
    /// [`Mesh::fabric_version`] when `fabric` was last captured.
    fabric_version: Option<u64>,
    /// Host-name lookups for `weft connect`, off this task.
    lookups: Lookups,
    /// `weft connect` calls waiting for their lookups, with the reply to send.
    replies: HashMap<ConnectRequest, oneshot::Sender<Vec<String>>>,
}

/// Runs host-name lookups on blocking threads, a few at a time, each bounded in time, and
/// sends the answers back to the mesh task: a slow DNS server then delays only the
/// `weft connect` that named it, never heartbeats or gossip.
struct Lookups {
    answers: mpsc::Sender<(LookupToken, Result<Vec<SocketAddr>, String>)>,
    /// One permit per lookup thread.
    threads: Arc<Semaphore>,
}

impl Lookups {
    fn spawn(&self, lookup: Lookup) {
        let answers = self.answers.clone();
        let threads = self.threads.clone();
        tokio::spawn(async move {
            let Lookup { token, host, port } = lookup;
            let failed = |e: &dyn std::fmt::Display| format!("lookup {host}: {e}");
            let work = async {
                // The permit lives as long as the thread, even past the timeout: at most
                // LOOKUP_THREADS resolver calls ever run at once.
                let permit = threads.acquire_owned().await.map_err(|e| failed(&e))?;
                let name = host.clone();
                tokio::task::spawn_blocking(move || {
                    let _permit = permit;
                    resolve(&name, port)
                })
                .await
                .map_err(|e| failed(&e))?
            };
            let answer = tokio::time::timeout(LOOKUP_TIMEOUT, work)
                .await
                .unwrap_or_else(|_| Err(failed(&"i/o timeout")));
            let _ = answers.send((token, answer)).await;
        });
    }
}

impl Ctx {
    fn act(&mut self, ev: MeshEvent, mesh: &mut Mesh, now: Instant) {
        match ev {
            MeshEvent::Dial {
                addr,
                accept_new_peer,
            } => {
                tracing::info!("->[{addr}] attempting connection");
                let origin = Origin::Outbound {
                    dial_addr: addr,
                    accept_new_peer,
                };
                tokio::spawn(conn_io::dial(
                    addr,
                    origin,
                    self.host,
                    self.identity.clone(),
                    mesh.new_conn_id(),
                    next_conn,
                    self.to_mesh.clone(),
                ));
            }
            MeshEvent::Send { conn, body } => {
                let Some(w) = self.live.get(&conn) else {
                    return;
                };
                if let Err(queued) = w.send(body) {
                    IoCounters::bump(&self.to_mesh.counters.not_reading);
                    let reason = format!("peer is not reading: {queued} bytes queued");
                    self.live.remove(&conn);
                    mesh.handle_connection_closed(conn, Some(reason), now);
                }
            }
            MeshEvent::Close { conn, reason } => {
                self.live.remove(&conn);
                mesh.handle_connection_closed(conn, Some(reason.to_string()), now);
            }
            MeshEvent::SendUdp { to, datagram } => {
                if let Err(e) = self.udp.send_to(&datagram, to) {
                    tracing::debug!("udp send to {to}: {e}");
                }
            }
            MeshEvent::FastdpPeer { peer, ip, add } => {
                self.job(Job::FastdpPeer { peer, ip, add });
            }
            MeshEvent::FastdpFlood { peer, ip, on } => {
                self.job(Job::FastdpFlood { peer, ip, on });
            }
            MeshEvent::SendFastdp(frame) => {
                if let Some(hb) = &self.heartbeat_tx {
                    if let Err(e) = hb.try_send(&frame) {
                        tracing::debug!("fastdp heartbeat: {e}");
                    }
                }
            }
            MeshEvent::TargetsChanged(t) => self.job(Job::PersistTargets(t)),
            MeshEvent::Lookup(l) => self.lookups.spawn(l),
            MeshEvent::Connected(outcome) => match self.replies.remove(&outcome.request) {
                Some(reply) => {
                    let _ = reply.send(outcome.errors);
                }
                // The command-line peers: nobody waits for a reply.
                None => {
                    for e in outcome.errors {
                        tracing::error!("{e}");
                    }
                }
            },
            // No part of the router registers a channel yet.
            MeshEvent::Channel { channel, .. } => {
                tracing::debug!("nobody takes gossip channel {channel}");
            }
        }
    }

    fn job(&self, job: Job) {
        if self.jobs.send(job).is_err() {
            tracing::warn!("the data-plane task has stopped");
        }
    }

    /// Hands the data path a new view of the mesh when it changed.
    fn publish_fabric(&mut self, mesh: &mut Mesh) {
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
        *lock(&self.shared.fabric) = snap.clone();
        self.shared.version.fetch_add(1, Ordering::Release);
        self.fabric = Some(snap);
    }

    fn on_conn_input(&mut self, input: ConnInput, mesh: &mut Mesh) {
        let now = Instant::now();
        match input {
            ConnInput::Ready(ready) => {
                let (conn, addr, remote) = (ready.conn, ready.addr, &ready.remote);
                tracing::info!(
                    "->[{addr}|{}({})]: connection ready; using protocol version 2",
                    remote.name,
                    remote.nick_name
                );
                let registered = mesh.handle_connection_ready(
                    conn,
                    remote,
                    addr,
                    ready.origin,
                    ready.our_intro_id,
                    now,
                );
                if let Err(reason) = registered {
                    tracing::info!(
                        "->[{addr}|{}({})]: connection shutting down due to error: {reason}",
                        remote.name,
                        remote.nick_name
                    );
                    return;
                }
                let writer = conn_io::spawn_io(*ready, self.to_mesh.clone());
                self.live.insert(conn, writer);
            }
            ConnInput::DialFailed(addr, err) => {
                tracing::info!("->[{addr}] error during connection attempt: {err}");
                mesh.handle_dial_failed(addr, err, now);
            }
            // The frame's room in the budget is freed once it is handled.
            ConnInput::Frame { conn, body, _room } => mesh.handle_frame(conn, &body, now),
            ConnInput::Closed(conn, err) => {
                if self.live.remove(&conn).is_some() {
                    mesh.handle_connection_closed(conn, err, now);
                }
            }
        }
    }

    fn on_data_path(&mut self, input: Input, mesh: &mut Mesh) {
        match input {
            Input::Special {
                from,
                sender,
                frame,
            } => {
                self.shared.specials_pending.fetch_sub(1, Ordering::AcqRel);
                mesh.handle_special_frame(from, sender, &frame, Instant::now());
            }
            Input::SleeveMtu(peer, mtu) => mesh.set_sleeve_mtu(peer, mtu),
        }
    }

    fn on_command(&mut self, cmd: Command, mesh: &mut Mesh) {
        let now = Instant::now();
        match cmd {
            Command::Dataplane(job) => self.job(job),
            Command::Status(reply) => {
                let (forwarder, dropped_unknown_sender) = *lock(&self.shared.stats);
                let kernel_injected = self
                    .shared
                    .shortcut
                    .get()
                    .map_or(0, |k| k.counters().frames);
                let c = &self.to_mesh.counters;
                let io = IoCounts {
                    connections_refused: c.connections_refused.load(Ordering::Relaxed),
                    intros_failed: c.intros_failed.load(Ordering::Relaxed),
                    frames_refused: c.frames_refused.load(Ordering::Relaxed),
                    not_reading: c.not_reading.load(Ordering::Relaxed),
                };
                let _ = reply.send(Snapshot {
                    mesh: mesh.status(now),
                    forwarder,
                    dropped_unknown_sender,
                    kernel_injected,
                    io,
                });
            }
            Command::Connect {
                peers,
                replace,
                reply,
            } => {
                // Answered from `act` once the call's lookups are done (at once for addresses).
                let request = mesh.connect(&peers, replace, now);
                self.replies.insert(request, reply);
            }
            Command::Forget(peers, reply) => {
                mesh.forget(&peers, now);
                let _ = reply.send(());
            }
        }
    }
}

/// Resolves `host` with the system resolver (IPv4 answers only), on a lookup thread.
fn resolve(host: &str, port: u16) -> Result<Vec<SocketAddr>, String> {
    use std::net::ToSocketAddrs;
    (host, port)
        .to_socket_addrs()
        .map(|a| a.filter(SocketAddr::is_ipv4).collect())
        .map_err(|e| format!("lookup {host}: {e}"))
}

/// Reads fastdp heartbeats; when the mesh task is behind, more are dropped, not queued.
fn spawn_heartbeat_reader(sock: Arc<PacketSocket>, tx: mpsc::Sender<Vec<u8>>) {
    tokio::spawn(async move {
        let mut buf = vec![0u8; 65536];
        loop {
            match sock.recv(&mut buf).await {
                Ok(n) => match tx.try_send(buf[..n].to_vec()) {
                    Err(mpsc::error::TrySendError::Closed(_)) => break,
                    Err(mpsc::error::TrySendError::Full(_)) | Ok(()) => {}
                },
                Err(e) => {
                    tracing::warn!("fastdp heartbeat read: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    });
}

/// What the mesh task and the data path thread share.
#[derive(Default)]
struct Shared {
    /// The mesh as the data path sees it; replaced whole when it changes.
    fabric: Mutex<Arc<FabricSnapshot>>,
    /// Bumped after each replacement of `fabric`, so that the data path checks cheaply.
    version: AtomicU64,
    /// Forwarder counters and datagrams from unknown senders, as of the last batch.
    stats: Mutex<(ForwarderStats, u64)>,
    /// Set when the mesh task ends: the data path thread returns.
    stop: AtomicBool,
    /// Control frames handed to the mesh task and not yet handled.
    specials_pending: AtomicUsize,
    /// The kernel's sleeve receive shortcut, when it runs (for its counters).
    shortcut: std::sync::OnceLock<Arc<weft_netdev::SleeveShortcut>>,
}

/// Stops the data path thread when the mesh task's `run` returns.
struct StopOnDrop(Arc<Shared>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.stop.store(true, Ordering::Relaxed);
    }
}

/// Locks a mutex; a panic elsewhere while holding it leaves plain data, still usable.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The answers of [`Mesh::fabric`], [`Mesh::is_connected`] and [`Mesh::peer_udp_addr`] for
/// every known peer, taken at one instant, for the data path thread.
#[derive(Debug, Default, PartialEq)]
struct FabricSnapshot {
    /// Routes and peers, for the forwarder.
    table: FabricTable,
    /// Peers we hold a connection with (datagrams from others are dropped).
    connected: HashSet<PeerName>,
    udp: HashMap<PeerName, SocketAddr>,
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
        }
    }
}

/// The sleeve data path: owns the TAP, reads the sleeve socket, and runs the forwarder, on a
/// thread of its own (see [`DataPath::run`]).
struct DataPath {
    tap: SyncTap,
    udp: Arc<std::net::UdpSocket>,
    shared: Arc<Shared>,
    /// Special frames go to the mesh task.
    to_mesh: mpsc::UnboundedSender<Input>,
    fabric: Arc<FabricSnapshot>,
    version: u64,
    forwarder: Forwarder,
    out: Vec<u8>,
    dropped_unknown_sender: u64,
    /// Glues received TCP segments into super-packets for the TAP.
    coalescer: Coalescer,
    /// Segments of one captured super-packet, for one GSO send.
    batch: SegmentBatch,
    /// For segments that take the slow path, and ICMP replies.
    scratch: Vec<u8>,
    /// Per next hop: the UDP address whose path MTU we read, and that MTU.
    paths: HashMap<PeerName, (SocketAddr, usize)>,
    /// UDP GSO works here (cleared at the first failure that says it does not).
    gso: bool,
    /// TAP frames dropped for a malformed `virtio_net_hdr`.
    bad_offload: u64,
    /// The kernel's receive shortcut, kept in step with the forwarder.
    shortcut: Option<Shortcut>,
}

impl DataPath {
    fn new(
        us: PeerName,
        tap: SyncTap,
        udp: Arc<std::net::UdpSocket>,
        shared: Arc<Shared>,
        to_mesh: mpsc::UnboundedSender<Input>,
    ) -> Self {
        let shortcut = udp
            .local_addr()
            .ok()
            .and_then(|a| Shortcut::start(us, a.port(), &tap));
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
            dropped_unknown_sender: 0,
            coalescer: Coalescer::new(),
            batch: SegmentBatch::new(),
            scratch: Vec::with_capacity(65536),
            paths: HashMap::new(),
            gso: true,
            bad_offload: 0,
            shortcut,
        }
    }

    /// Waits for the TAP or the socket, then reads those that are ready, alternately, until
    /// neither has anything: an injected frame's answer (an ICMP echo reply, a TCP ACK) is
    /// often queued on the TAP by the time the write returns, and is sent on at once. Returns
    /// when the mesh task has ended.
    fn run(mut self) {
        let mut tap_buf = vec![0u8; TAP_BUF_LEN];
        let mut udp_buf = vec![0u8; 65536];
        let mut cmsg = Vec::with_capacity(weft_netdev::GRO_CMSG_SPACE);
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
                if let Some(s) = &mut self.shortcut {
                    s.read_back(&mut self.forwarder, now);
                }
                self.forwarder.expire(now);
                self.sync_shortcut_macs();
                if let Some(s) = &mut self.shortcut {
                    s.retry_waiting(&self.forwarder, &self.fabric.table);
                }
                // Path MTUs are read again on next use: routes may have changed.
                self.paths.clear();
                next_sweep = now + MAC_SWEEP_INTERVAL;
            }
            // The shortcut holds frames back until we read the socket empty once more.
            let recheck = self.shortcut.as_ref().is_some_and(Shortcut::holding_back);
            let timeout = next_sweep.saturating_duration_since(now).min(if recheck {
                SHORTCUT_RECHECK
            } else {
                Duration::from_secs(1)
            });
            let (mut tap_ready, udp_ready) = match ready.wait(timeout) {
                Ok(r) => (r & 1 != 0, r & 2 != 0),
                Err(e) => {
                    tracing::warn!("sleeve wait: {e}");
                    std::thread::sleep(Duration::from_millis(10));
                    continue;
                }
            };
            let woken = tap_ready || udp_ready;
            let mut got = false;
            self.refresh_fabric();
            // Each descriptor is read while it has something and only then: a read that finds
            // nothing is a system call on the round trip of every lone packet.
            let mut udp_more = udp_ready || recheck;
            for _ in 0..DRAIN_READS {
                if !tap_ready && !udp_more {
                    break;
                }
                if tap_ready {
                    match self.tap.try_recv(&mut tap_buf) {
                        Ok(n) => {
                            self.on_captured(&mut tap_buf[..n], Instant::now());
                            got = true;
                        }
                        Err(_) => tap_ready = false,
                    }
                }
                if udp_more {
                    // For the shortcut: a time before the read that may find the socket empty.
                    let before = self.shortcut.as_ref().map(|_| weft_netdev::monotonic_ns());
                    match weft_netdev::try_recv_gro(&self.udp, &mut udp_buf, &mut cmsg) {
                        Ok((n, from, seg)) => {
                            self.on_received(from, &udp_buf[..n], seg, Instant::now());
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
                *lock(&self.shared.stats) = (self.forwarder.stats(), self.dropped_unknown_sender);
            } else if woken {
                // Readable but nothing to read: an error state (a TAP whose device is gone
                // polls readable for ever). Do not spin on it.
                std::thread::sleep(Duration::from_millis(1));
            }
        }
    }

    /// Takes the mesh task's latest view, if it changed, and learns the path MTU to every
    /// peer with a sleeve address before the first frame for it is judged too big or not.
    fn refresh_fabric(&mut self) {
        let v = self.shared.version.load(Ordering::Acquire);
        if v != self.version {
            self.fabric = lock(&self.shared.fabric).clone();
            self.version = v;
            let peers: Vec<PeerName> = self.fabric.udp.keys().copied().collect();
            for peer in peers {
                let _ = self.path_to(peer);
            }
            if let Some(s) = &mut self.shortcut {
                let f = &self.fabric;
                s.sync_conns(
                    f.udp
                        .iter()
                        .filter(|(p, _)| f.connected.contains(p))
                        .map(|(p, a)| (*p, a)),
                );
            }
            self.sync_shortcut_macs();
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
        let mtu = match weft_netdev::path_mtu(to) {
            Ok(m) => m as usize,
            Err(e) => {
                // Unknown (0): no GSO and the forwarder's defaults, until the next sweep.
                tracing::debug!("{e}");
                self.paths.insert(peer, (to, 0));
                return Some((to, 0));
            }
        };
        let max_payload = mtu.saturating_sub(IP_UDP_HEADERS);
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
                    if let Err(e) = self.udp.send_to(&self.out, to) {
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
        let seg = self.batch.datagram_len();
        let gso = self.gso
            && self.batch.len() > 1
            && seg > 0
            && seg.saturating_add(IP_UDP_HEADERS) <= path_mtu;
        if gso {
            let per = (weft_netdev::MAX_GSO_BYTES / seg).clamp(1, weft_netdev::MAX_GSO_SEGMENTS);
            for chunk in self.batch.bytes().chunks(per * seg) {
                let mut r = weft_netdev::try_send_gso(&self.udp, chunk, seg, to);
                if matches!(&r, Err(e) if e.kind() == std::io::ErrorKind::WouldBlock) {
                    // A full send buffer: wait a moment for room rather than drop the chunk,
                    // which would cost the sender a burst of retransmits.
                    if let Ok(true) = weft_netdev::wait_writable(self.udp.as_fd(), SEND_WAIT) {
                        r = weft_netdev::try_send_gso(&self.udp, chunk, seg, to);
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
                            self.gso = false;
                        }
                        for d in chunk.chunks(seg) {
                            let _ = self.udp.send_to(d, to);
                        }
                    }
                }
            }
            return;
        }
        for d in self.batch.datagrams() {
            if let Err(e) = self.udp.send_to(d, to) {
                tracing::debug!("sleeve send to {peer}: {e}");
            }
        }
    }

    /// What one UDP read returned: one datagram, or (`seg`) a run of datagrams of `seg`
    /// bytes coalesced by the kernel, each handled on its own.
    fn on_received(&mut self, from: SocketAddr, buf: &[u8], seg: Option<usize>, now: Instant) {
        match seg {
            Some(seg) if seg < buf.len() => {
                for d in buf.chunks(seg) {
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
    fn on_datagram(&mut self, from: SocketAddr, d: &[u8], now: Instant) {
        // Weave's rule: a datagram whose sender we have no connection with is dropped.
        let Some(sender) = d
            .get(..6)
            .and_then(PeerName::from_bytes)
            .filter(|p| self.fabric.connected.contains(p))
        else {
            self.dropped_unknown_sender += 1;
            return;
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
fn inject(tap: &SyncTap, hdr: &[u8], frame: &[u8]) {
    let r = if tap.has_vnet_hdr() {
        tap.try_send_parts(&[std::io::IoSlice::new(hdr), std::io::IoSlice::new(frame)])
    } else {
        tap.try_send(frame)
    };
    if let Err(e) = r {
        tracing::debug!("inject: {e}");
    }
}
