//! The mesh task: one tokio task owns the [`Mesh`] state machine and selects on what
//! connection I/O ([`crate::conn_io`]), the sleeve data path ([`crate::sleeve`]) and the HTTP
//! API send it and on the mesh's next deadline; it hands what the mesh asks for to connection
//! writers, the UDP socket, the sleeve data path (a new view of the mesh when it changes) and
//! the data-plane task ([`crate::dataplane_task`]), and never waits on I/O itself.
//!
//! Nothing here decides anything about the protocol: it reads, writes, dials and forwards
//! what the mesh asks for.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::SeedableRng;
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::{mpsc, oneshot, Semaphore};
use weft_core::connection_maker::{
    ConnectRequest, Lookup, LookupToken, PeerError, LOOKUP_TIMEOUT, MAX_PENDING_LOOKUPS,
};
use weft_core::handshake::LocalIdentity;
use weft_core::mesh::{ConnId, Mesh, MeshEvent, MeshStatus, Origin};
use weft_core::overlay::ForwarderStats;
use weft_netdev::PacketSocket;

use crate::channel_link::Links;
use crate::conn_io::{self, ConnInput, ConnWriter, IntroConfig, IoCounters, ToMesh};
use crate::dataplane::Dataplane;
use crate::dataplane_task::{self, Job};
use crate::sleeve::{Input, Sleeve};
use crate::store::Store;

/// Most fastdp heartbeat frames waiting for the mesh task; more are dropped.
const MAX_PENDING_FASTDP: usize = 64;
/// Host-name lookups run at once, each on a blocking thread; more wait for one to finish.
const LOOKUP_THREADS: usize = 4;

/// Everything the status, report and metrics endpoints show, taken at one instant.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// The mesh.
    pub mesh: MeshStatus,
    /// Sleeve forwarding counters.
    pub forwarder: ForwarderStats,
    /// Datagrams dropped because no connection to their sender exists.
    pub dropped_unknown_sender: u64,
    /// Datagrams of encrypted connections that did not open.
    pub dropped_undecryptable: u64,
    /// Datagrams of encrypted connections refused as replays.
    pub dropped_replayed: u64,
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
        reply: oneshot::Sender<Vec<PeerError>>,
    },
    /// `POST /forget`.
    Forget(Vec<String>, oneshot::Sender<()>),
    /// `POST`/`DELETE`/`GET /expose`: handed on to the data-plane task.
    Dataplane(Job),
}

/// The sockets and identity the driver needs.
pub struct Driver {
    /// Our identity, for intros.
    pub identity: LocalIdentity,
    /// `--password`: every control connection is encrypted, and the data of untrusted ones.
    pub password: Option<Arc<zeroize::Zeroizing<Vec<u8>>>>,
    /// `--trusted-subnets`: peers there are trusted (our `Trusted` feature).
    pub trusted_subnets: Vec<weft_types::Ipv4Cidr>,
    /// Offer weft's own sleeve encryption to weft peers (else Weave Net's scheme with all).
    pub sleeve_aead: bool,
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
    /// The tasks that own gossip channels (IPAM, DNS).
    pub links: Links,
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
            password,
            trusted_subnets,
            sleeve_aead,
            listener,
            udp,
            host,
            store,
            mut dataplane,
            mut links,
        } = self;
        let (sleeve, mut dp_rx) = Sleeve::new();
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
        if let Some(tap) = dataplane.tap.take() {
            sleeve.spawn(identity.name, tap.into_sync(), udp.clone());
        }
        // Inbound intro ids come from the mesh's RNG too, so a seeded run is reproducible.
        let ids = rand::rngs::StdRng::seed_from_u64(mesh.new_conn_id());
        let intro = IntroConfig {
            identity: identity.clone(),
            password,
            trusted_subnets: trusted_subnets.into(),
            sleeve_aead,
        };
        conn_io::spawn_listener(listener, intro.clone(), ids, next_conn, to_mesh.clone());
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
            intro,
            host,
            udp,
            heartbeat_tx,
            jobs,
            to_mesh,
            sleeve,
            live: HashMap::new(),
            lookups: Lookups {
                answers: lookup_tx,
                threads: Arc::new(Semaphore::new(LOOKUP_THREADS)),
            },
            replies: HashMap::new(),
        };
        if let Err(e) = links.register(&mut mesh) {
            tracing::error!("cannot register a gossip channel: {e}");
            return;
        }
        let mut from_tasks = links.take_requests();
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
                ctx.act(ev, &mut mesh, &mut links, now);
            }
            ctx.sleeve.publish(&mut mesh);
            links.publish(&mut mesh);
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
                Some(req) = recv_opt(&mut from_tasks) => {
                    if let Err(e) = req.apply(&mut mesh) {
                        tracing::debug!("gossip channel: {e}");
                    }
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
    /// Who we are and how connections are protected, for intros.
    intro: IntroConfig,
    host: Option<std::net::IpAddr>,
    /// The sleeve socket, for the mesh's heartbeats (the data path thread has it too).
    udp: Arc<std::net::UdpSocket>,
    /// Sends fastdp heartbeats out of the VXLAN device.
    heartbeat_tx: Option<Arc<PacketSocket>>,
    /// Netlink, nft and database work, done in order off this task.
    jobs: mpsc::UnboundedSender<Job>,
    /// For new connections' I/O.
    to_mesh: ToMesh,
    /// The sleeve data path: new views of the mesh go to it, its counters come from it.
    sleeve: Sleeve,
    /// Writers of registered connections.
    live: HashMap<ConnId, ConnWriter>,
    /// Host-name lookups for `weft connect`, off this task.
    lookups: Lookups,
    /// `weft connect` calls waiting for their lookups, with the reply to send.
    replies: HashMap<ConnectRequest, oneshot::Sender<Vec<PeerError>>>,
}

/// Receives from `rx` if there is one; never ready otherwise.
async fn recv_opt<T>(rx: &mut Option<mpsc::Receiver<T>>) -> Option<T> {
    match rx {
        Some(r) => r.recv().await,
        None => std::future::pending().await,
    }
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
    fn act(&mut self, ev: MeshEvent, mesh: &mut Mesh, links: &mut Links, now: Instant) {
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
                    self.intro.clone(),
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
            MeshEvent::Fastdp(change) => self.job(Job::Fastdp(change)),
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
            MeshEvent::Channel {
                channel,
                message,
                conn,
            } => {
                // The topology this message came after reaches the tasks first, so an owner
                // never drops entries of a peer its view does not know yet.
                links.publish(mesh);
                links.deliver(channel, message, conn);
            }
        }
    }

    fn job(&self, job: Job) {
        if self.jobs.send(job).is_err() {
            tracing::warn!("the data-plane task has stopped");
        }
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
                    ready.security.clone(),
                    now,
                );
                if let (Ok(()), Some(_)) = (&registered, &ready.security.overlay_key) {
                    tracing::info!(
                        "->[{addr}|{}({})]: sleeve encrypted with {}",
                        remote.name,
                        remote.nick_name,
                        ready.security.sleeve_scheme.name()
                    );
                }
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
                self.sleeve.special_handled();
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
                let c = self.sleeve.counters();
                let k = &self.to_mesh.counters;
                let io = IoCounts {
                    connections_refused: k.connections_refused.load(Ordering::Relaxed),
                    intros_failed: k.intros_failed.load(Ordering::Relaxed),
                    frames_refused: k.frames_refused.load(Ordering::Relaxed),
                    not_reading: k.not_reading.load(Ordering::Relaxed),
                };
                let _ = reply.send(Snapshot {
                    mesh: mesh.status(now),
                    forwarder: c.forwarder,
                    dropped_unknown_sender: c.dropped_unknown_sender,
                    dropped_undecryptable: c.dropped_undecryptable,
                    dropped_replayed: c.dropped_replayed,
                    kernel_injected: c.kernel_injected,
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
