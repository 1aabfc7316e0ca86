//! The tokio shell around [`weft_core::mesh::Mesh`]: one task owns the state machine and
//! selects on its input channel and its next deadline; small tasks move bytes for the TCP
//! listener, each connection's intro, reader and writer, and the sleeve UDP socket.
//!
//! Nothing here decides anything about the protocol: it reads, writes, dials and forwards
//! what the mesh asks for.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpSocket, TcpStream, UdpSocket};
use tokio::sync::{mpsc, oneshot};
use tokio::task::AbortHandle;
use weft_core::handshake::{Handshake, LocalIdentity, RemoteFeatures};
use weft_core::mesh::{ConnId, Mesh, MeshEvent, MeshStatus, Origin};
use weft_wire::frame;

use weft_core::overlay::{Delivery, Forwarder, ForwarderStats, Received, MAC_SWEEP_INTERVAL};
use weft_netdev::PacketSocket;
use weft_wire::PeerName;

use crate::attach::Cidr;
use crate::dataplane::Dataplane;
use crate::store::Store;

/// Intro must complete within this time.
const INTRO_TIMEOUT: Duration = Duration::from_secs(10);
/// Silence on an established connection after which it is closed.
const READ_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a TCP connect may take.
const DIAL_TIMEOUT: Duration = Duration::from_secs(10);

/// Everything the status, report and metrics endpoints show, taken at one instant.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// The mesh.
    pub mesh: MeshStatus,
    /// Sleeve forwarding counters.
    pub forwarder: ForwarderStats,
    /// Datagrams dropped because no connection to their sender exists.
    pub dropped_unknown_sender: u64,
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
    /// `POST /expose/{ip}/{len}`.
    Expose {
        /// The address.
        cidr: Cidr,
        /// `--without-masquerade`.
        skip_nat: bool,
        /// Error text, if any.
        reply: oneshot::Sender<Result<(), String>>,
    },
    /// `DELETE /expose/{ip}/{len}`.
    Hide(Cidr, oneshot::Sender<Result<(), String>>),
    /// `GET /expose`.
    Exposed(oneshot::Sender<Vec<Cidr>>),
}

enum Input {
    Ready {
        conn: ConnId,
        remote: RemoteFeatures,
        addr: SocketAddr,
        origin: Origin,
        our_conn_id: u64,
        reader: OwnedReadHalf,
        writer: OwnedWriteHalf,
        leftover: Vec<u8>,
    },
    DialFailed(SocketAddr, String),
    Frame(ConnId, Vec<u8>),
    Closed(ConnId, Option<String>),
    FastdpFrame(Vec<u8>),
    Command(Command),
}

struct Live {
    tx: mpsc::UnboundedSender<Vec<u8>>,
    reader: AbortHandle,
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
        let (tx, mut rx) = mpsc::unbounded_channel::<Input>();
        let Self {
            identity,
            listener,
            udp,
            host,
            store,
            dataplane,
        } = self;
        let udp = Arc::new(udp);
        spawn_listener(listener, identity.clone(), tx.clone());
        let tap = dataplane.tap.clone();
        if let Some(hb) = dataplane.heartbeats.clone() {
            spawn_heartbeat_reader(hb, tx.clone());
        }
        let mut ctx = Ctx {
            identity,
            host,
            store,
            dataplane,
            udp: udp.clone(),
            forwarder: Forwarder::new(),
            out: Vec::with_capacity(65536),
            dropped_unknown_sender: 0,
        };
        let mut sweep = tokio::time::interval(MAC_SWEEP_INTERVAL);
        // The hot path reads straight into these buffers in this task: no copy, no
        // allocation and no hand-off between tasks per packet.
        let mut tap_buf = vec![0u8; 65536];
        let mut udp_buf = vec![0u8; 65536];
        let mut live: HashMap<ConnId, Live> = HashMap::new();
        let now = Instant::now();
        if !initial_peers.is_empty() {
            for e in mesh.connect(&initial_peers, false, &mut resolve, now) {
                tracing::error!("{e}");
            }
        }
        loop {
            let now = Instant::now();
            while let Some(ev) = mesh.poll_event(now) {
                ctx.act(ev, &mut mesh, &mut live, &tx, now).await;
            }
            let deadline = mesh
                .poll_timeout()
                .unwrap_or(now + Duration::from_secs(3600));
            tokio::select! {
                r = tap.recv(&mut tap_buf) => match r {
                    Ok(n) => ctx.on_captured(&tap_buf[..n], &mut mesh, Instant::now()),
                    Err(e) => tracing::warn!("tap read: {e}"),
                },
                r = udp.recv_from(&mut udp_buf) => match r {
                    Ok((n, from)) => {
                        let now = Instant::now();
                        ctx.on_datagram(from, &udp_buf[..n], &mut mesh, now);
                        // Drain what else is queued before going back to select.
                        for _ in 0..64 {
                            let Ok((n, from)) = udp.try_recv_from(&mut udp_buf) else { break };
                            ctx.on_datagram(from, &udp_buf[..n], &mut mesh, now);
                        }
                    }
                    Err(e) => tracing::debug!("udp recv: {e}"),
                },
                input = rx.recv() => {
                    let Some(input) = input else { break };
                    ctx.handle_input(input, &mut mesh, &mut live, &tx).await;
                }
                cmd = commands.recv() => {
                    let Some(cmd) = cmd else { break };
                    ctx.handle_input(Input::Command(cmd), &mut mesh, &mut live, &tx).await;
                }
                _ = sweep.tick() => {
                    ctx.forwarder.expire(Instant::now());
                }
                () = tokio::time::sleep_until(deadline.into()) => {
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
    store: Arc<Store>,
    dataplane: Dataplane,
    udp: Arc<UdpSocket>,
    forwarder: Forwarder,
    out: Vec<u8>,
    dropped_unknown_sender: u64,
}

impl Ctx {
    async fn act(
        &mut self,
        ev: MeshEvent,
        mesh: &mut Mesh,
        live: &mut HashMap<ConnId, Live>,
        tx: &mpsc::UnboundedSender<Input>,
        now: Instant,
    ) {
        match ev {
            MeshEvent::Dial {
                addr,
                accept_new_peer,
            } => {
                tracing::info!("->[{addr}] attempting connection");
                let conn_id = mesh.new_conn_id();
                tokio::spawn(dial(
                    addr,
                    accept_new_peer,
                    self.host,
                    self.identity.clone(),
                    conn_id,
                    tx.clone(),
                ));
            }
            MeshEvent::Send { conn, bytes } => {
                if let Some(l) = live.get(&conn) {
                    let _ = l.tx.send(bytes);
                }
            }
            MeshEvent::Close { conn, reason } => {
                if let Some(l) = live.remove(&conn) {
                    l.reader.abort();
                    drop(l.tx);
                }
                mesh.handle_connection_closed(conn, Some(reason), now);
            }
            MeshEvent::SendUdp { to, datagram } => {
                if let Err(e) = self.udp.try_send_to(&datagram, to) {
                    tracing::debug!("udp send to {to}: {e}");
                }
            }
            MeshEvent::FastdpPeer { peer, ip, add } => {
                self.dataplane.fastdp_peer(peer, ip, add).await;
            }
            MeshEvent::FastdpFlood { peer, ip, on } => {
                self.dataplane.fastdp_flood(peer, ip, on).await;
            }
            MeshEvent::SendFastdp(frame) => self.dataplane.send_heartbeat(&frame),
            MeshEvent::TargetsChanged(t) => {
                if let Err(e) = self.store.set_direct_peers(&t) {
                    tracing::warn!("cannot persist targets: {e}");
                }
            }
        }
    }
}

impl Ctx {
    /// Sends every datagram the forwarder has ready to its next hop's sleeve address.
    fn flush(&mut self, mesh: &Mesh) {
        while let Some(peer) = self.forwarder.poll_datagram(&mut self.out) {
            match mesh.peer_udp_addr(peer) {
                Some(to) => {
                    if let Err(e) = self.udp.try_send_to(&self.out, to) {
                        tracing::debug!("sleeve send to {peer}: {e}");
                    }
                }
                None => tracing::debug!("Cannot forward frame yet - awaiting contact with {peer}"),
            }
        }
    }

    /// A datagram arrived on the mesh port: data records go through the forwarder (injected
    /// into the TAP or relayed), control records to the mesh.
    fn on_datagram(&mut self, from: SocketAddr, d: &[u8], mesh: &mut Mesh, now: Instant) {
        // Weave's rule: a datagram whose sender we have no connection with is dropped.
        let sender = d.get(..6).and_then(PeerName::from_bytes);
        if !sender.is_some_and(|p| mesh.is_connected(p)) {
            self.dropped_unknown_sender += 1;
            return;
        }
        let tap = &self.dataplane.tap;
        // Control frames are rare (heartbeats, MTU probes): copy them out, then hand them to
        // the mesh, which the forwarder's view of it borrows until then.
        let mut specials: Vec<(PeerName, Vec<u8>)> = Vec::new();
        let r = self
            .forwarder
            .handle_datagram(d, &mesh.fabric(), now, &mut |del| match del {
                Delivery::Inject(frame) => {
                    if let Err(e) = tap.try_send(frame) {
                        tracing::debug!("inject: {e}");
                    }
                }
                Delivery::Special { sender, frame } => specials.push((sender, frame.to_vec())),
            });
        if let Ok(Received {
            error: Some(e),
            sender,
            ..
        }) = &r
        {
            tracing::debug!("datagram from {sender} ({from}): {e}");
        }
        for (sender, frame) in specials {
            mesh.handle_special_frame(from, sender, &frame, now);
        }
        self.flush(mesh);
    }

    /// A frame from a local container, read from the TAP port.
    fn on_captured(&mut self, frame: &[u8], mesh: &mut Mesh, now: Instant) {
        self.forwarder.handle_captured(frame, &mesh.fabric(), now);
        self.flush(mesh);
    }

    async fn handle_input(
        &mut self,
        input: Input,
        mesh: &mut Mesh,
        live: &mut HashMap<ConnId, Live>,
        tx: &mpsc::UnboundedSender<Input>,
    ) {
        let now = Instant::now();
        match input {
            Input::Ready {
                conn,
                remote,
                addr,
                origin,
                our_conn_id,
                reader,
                writer,
                leftover,
            } => {
                tracing::info!(
                    "->[{addr}|{}({})]: connection ready; using protocol version 2",
                    remote.name,
                    remote.nick_name
                );
                if let Err(reason) =
                    mesh.handle_connection_ready(conn, &remote, addr, origin, our_conn_id, now)
                {
                    tracing::info!(
                        "->[{addr}|{}({})]: connection shutting down due to error: {reason}",
                        remote.name,
                        remote.nick_name
                    );
                    return;
                }
                let (wtx, wrx) = mpsc::unbounded_channel();
                tokio::spawn(writer_task(writer, wrx));
                let reader = tokio::spawn(reader_task(conn, reader, leftover, tx.clone()));
                live.insert(
                    conn,
                    Live {
                        tx: wtx,
                        reader: reader.abort_handle(),
                    },
                );
            }
            Input::DialFailed(addr, err) => {
                tracing::info!("->[{addr}] error during connection attempt: {err}");
                mesh.handle_dial_failed(addr, err, now);
            }
            Input::Frame(conn, body) => mesh.handle_frame(conn, &body, now),
            Input::Closed(conn, err) => {
                if live.remove(&conn).is_some() {
                    mesh.handle_connection_closed(conn, err, now);
                }
            }
            Input::FastdpFrame(frame) => mesh.handle_fastdp_frame(&frame, now),
            Input::Command(Command::Expose {
                cidr,
                skip_nat,
                reply,
            }) => {
                let r = self
                    .dataplane
                    .expose(cidr, skip_nat)
                    .await
                    .map_err(|e| e.to_string());
                let _ = reply.send(r);
            }
            Input::Command(Command::Hide(cidr, reply)) => {
                let r = self.dataplane.hide(cidr).await.map_err(|e| e.to_string());
                let _ = reply.send(r);
            }
            Input::Command(Command::Exposed(reply)) => {
                let _ = reply.send(self.dataplane.exposed().await.unwrap_or_default());
            }
            Input::Command(Command::Status(reply)) => {
                let _ = reply.send(Snapshot {
                    mesh: mesh.status(now),
                    forwarder: self.forwarder.stats(),
                    dropped_unknown_sender: self.dropped_unknown_sender,
                });
            }
            Input::Command(Command::Connect {
                peers,
                replace,
                reply,
            }) => {
                let errs = mesh.connect(&peers, replace, &mut resolve, now);
                let _ = reply.send(errs);
            }
            Input::Command(Command::Forget(peers, reply)) => {
                mesh.forget(&peers, now);
                let _ = reply.send(());
            }
        }
    }
}

/// Resolves `host` for the connection maker. Only literal addresses and names the system
/// resolver knows; blocking is acceptable here because targets are few and local.
fn resolve(host: &str, port: u16) -> Result<Vec<SocketAddr>, String> {
    use std::net::ToSocketAddrs;
    (host, port)
        .to_socket_addrs()
        .map(|a| a.filter(SocketAddr::is_ipv4).collect())
        .map_err(|e| format!("lookup {host}: {e}"))
}

fn spawn_listener(
    listener: TcpListener,
    identity: LocalIdentity,
    tx: mpsc::UnboundedSender<Input>,
) {
    tokio::spawn(async move {
        // Weave's accept throttle: bursts of 20, then one connection per 50 ms.
        let mut tokens = 20u32;
        let mut refill = tokio::time::interval(Duration::from_millis(50));
        loop {
            while tokens == 0 {
                refill.tick().await;
                tokens += 1;
            }
            let (stream, addr) = match listener.accept().await {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!("accept: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            tokens -= 1;
            tracing::info!("->[{addr}] connection accepted");
            let conn_id = rand::random();
            tokio::spawn(intro(
                stream,
                addr,
                Origin::Inbound,
                identity.clone(),
                conn_id,
                tx.clone(),
            ));
        }
    });
}

async fn dial(
    addr: SocketAddr,
    accept_new_peer: bool,
    host: Option<std::net::IpAddr>,
    identity: LocalIdentity,
    conn_id: u64,
    tx: mpsc::UnboundedSender<Input>,
) {
    let connect = async {
        let sock = TcpSocket::new_v4()?;
        if let Some(h) = host {
            sock.bind(SocketAddr::new(h, 0))?;
        }
        sock.connect(addr).await
    };
    let stream = match tokio::time::timeout(DIAL_TIMEOUT, connect).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            let _ = tx.send(Input::DialFailed(
                addr,
                format!("dial tcp4 {addr}: connect: {e}"),
            ));
            return;
        }
        Err(_) => {
            let _ = tx.send(Input::DialFailed(
                addr,
                format!("dial tcp4 {addr}: i/o timeout"),
            ));
            return;
        }
    };
    let origin = Origin::Outbound {
        dial_addr: addr,
        accept_new_peer,
    };
    intro(stream, addr, origin, identity, conn_id, tx).await;
}

async fn intro(
    stream: TcpStream,
    addr: SocketAddr,
    origin: Origin,
    identity: LocalIdentity,
    conn_id: u64,
    tx: mpsc::UnboundedSender<Input>,
) {
    let _ = stream.set_nodelay(true);
    let (mut reader, mut writer) = stream.into_split();
    let mut hs = Handshake::new(&identity, conn_id, false);
    let run = async {
        if let Some(out) = hs.poll_transmit() {
            writer.write_all(&out).await.map_err(|e| e.to_string())?;
        }
        let mut buf = Vec::with_capacity(512);
        let mut chunk = [0u8; 4096];
        loop {
            if let Some(remote) = hs.handle_input(&mut buf).map_err(|e| e.to_string())? {
                return Ok::<_, String>((remote, buf));
            }
            let n = reader.read(&mut chunk).await.map_err(|e| e.to_string())?;
            if n == 0 {
                return Err("EOF".to_string());
            }
            buf.extend_from_slice(&chunk[..n]);
        }
    };
    let e = match tokio::time::timeout(INTRO_TIMEOUT, run).await {
        Ok(Ok((remote, leftover))) => {
            let _ = tx.send(Input::Ready {
                conn: next_conn(),
                remote,
                addr,
                origin,
                our_conn_id: conn_id,
                reader,
                writer,
                leftover,
            });
            return;
        }
        Ok(Err(e)) => e,
        Err(_) => "i/o timeout".to_string(),
    };
    tracing::info!("->[{addr}] connection shutting down due to error during handshake: {e}");
    if let Origin::Outbound { dial_addr, .. } = origin {
        let _ = tx.send(Input::DialFailed(dial_addr, e));
    }
}

async fn reader_task(
    conn: ConnId,
    mut reader: OwnedReadHalf,
    mut buf: Vec<u8>,
    tx: mpsc::UnboundedSender<Input>,
) {
    let mut chunk = vec![0u8; 64 * 1024];
    let err = loop {
        // Hand over every complete frame already buffered.
        let mut used = 0;
        loop {
            match frame::parse(&buf[used..]) {
                Ok(Some((body, n))) => {
                    let _ = tx.send(Input::Frame(conn, body.to_vec()));
                    used += n;
                }
                Ok(None) => break,
                Err(e) => {
                    let _ = tx.send(Input::Closed(conn, Some(e.to_string())));
                    return;
                }
            }
        }
        buf.drain(..used);
        match tokio::time::timeout(READ_TIMEOUT, reader.read(&mut chunk)).await {
            Ok(Ok(0)) => break "EOF".to_string(),
            Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
            Ok(Err(e)) => break e.to_string(),
            Err(_) => break "read tcp: i/o timeout".to_string(),
        }
    };
    let _ = tx.send(Input::Closed(conn, Some(err)));
}

async fn writer_task(mut writer: OwnedWriteHalf, mut rx: mpsc::UnboundedReceiver<Vec<u8>>) {
    while let Some(bytes) = rx.recv().await {
        if writer.write_all(&bytes).await.is_err() {
            break;
        }
    }
    let _ = writer.shutdown().await;
}

fn spawn_heartbeat_reader(sock: Arc<PacketSocket>, tx: mpsc::UnboundedSender<Input>) {
    tokio::spawn(async move {
        let mut buf = vec![0u8; 65536];
        loop {
            match sock.recv(&mut buf).await {
                Ok(n) => {
                    if tx.send(Input::FastdpFrame(buf[..n].to_vec())).is_err() {
                        break;
                    }
                }
                Err(e) => {
                    tracing::warn!("fastdp heartbeat read: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    });
}
