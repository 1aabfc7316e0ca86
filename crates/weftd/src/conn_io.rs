//! Connection I/O: the mesh TCP listener, dialling, the intro, and each established
//! connection's reader and writer tasks. They move bytes between sockets and the mesh task and
//! decide nothing about the protocol; the intro and the framing are weft-core's
//! ([`Handshake`], [`SessionTx`], [`SessionRx`]). With a password every intro is encrypted,
//! and the overlay gets the session key unless both ends trust each other's address
//! ([`IntroConfig`]).
//!
//! Everything here is bounded, because until it has introduced itself every peer is hostile:
//! * accepts follow Weave Net's throttle (a burst of 20, then one per 50 ms, as a token bucket
//!   in real time, so an idle minute does not bank a minute of ticks), at most
//!   [`MAX_INTROS`] intros run at once and [`MAX_INTROS_PER_IP`] from one address;
//! * an intro's frame is capped by the handshake, and it must finish within [`INTRO_TIMEOUT`];
//! * received frames wait for the mesh task in one bounded channel and hold bytes of one
//!   shared budget ([`FRAME_BUDGET`]) until the mesh task has handled them: a reader that
//!   cannot get room stops reading its socket, so TCP pushes back on the peer;
//! * what we send waits in a per-connection queue of at most [`WRITE_BUDGET`] bytes; a peer
//!   that does not read is disconnected with a logged reason instead of growing our memory.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::Rng;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use weft_core::handshake::{Handshake, LocalIdentity, RemoteFeatures};
use weft_core::mesh::{ConnId, ConnSecurity, Origin};
use weft_core::pace::Pacer;
use weft_core::session::{SessionRx, SessionTx};
use weft_types::Ipv4Cidr;
use zeroize::Zeroizing;

/// An intro must complete within this time.
pub(crate) const INTRO_TIMEOUT: Duration = Duration::from_secs(10);
/// Silence on an established connection after which it is closed.
pub(crate) const READ_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a TCP connect may take.
pub(crate) const DIAL_TIMEOUT: Duration = Duration::from_secs(10);
/// Bytes of one connection's outgoing messages that may wait for its socket; a peer that
/// leaves more unread is disconnected. A whole topology for thousands of peers fits.
pub(crate) const WRITE_BUDGET: usize = 8 << 20;
/// Bytes of received frames, all connections together, that may wait for the mesh task.
pub(crate) const FRAME_BUDGET: usize = 16 << 20;
/// Received frames (of any size) that may wait for the mesh task.
pub(crate) const FRAME_QUEUE: usize = 1024;
/// Intros running at once, and from one address.
pub(crate) const MAX_INTROS: usize = 64;
/// See [`MAX_INTROS`].
pub(crate) const MAX_INTROS_PER_IP: usize = 4;
/// Weave's accept throttle: this many at once, then one per [`ACCEPT_PERIOD`].
const ACCEPT_BURST: u32 = 20;
/// See [`ACCEPT_BURST`].
const ACCEPT_PERIOD: Duration = Duration::from_millis(50);
/// Read size of an established connection.
const READ_CHUNK: usize = 64 * 1024;

/// What every intro needs to know about us: who we are, the password (Weave Net's
/// `--password`), and the addresses we trust (`--trusted-subnets`).
#[derive(Clone)]
pub(crate) struct IntroConfig {
    pub(crate) identity: LocalIdentity,
    pub(crate) password: Option<Arc<Zeroizing<Vec<u8>>>>,
    pub(crate) trusted_subnets: Arc<[Ipv4Cidr]>,
    /// Offer weft's own sleeve encryption to weft peers (off: Weave Net's scheme with all).
    pub(crate) sleeve_aead: bool,
}

impl IntroConfig {
    /// Whether we trust the remote at `ip` (our `Trusted` feature for its connection).
    fn trusts(&self, ip: IpAddr) -> bool {
        match ip {
            IpAddr::V4(ip) => self.trusted_subnets.iter().any(|c| c.contains(ip)),
            IpAddr::V6(ip) => ip
                .to_ipv4_mapped()
                .is_some_and(|ip| self.trusted_subnets.iter().any(|c| c.contains(ip))),
        }
    }

    /// The intro state machine for a connection to or from `addr`.
    fn handshake(&self, addr: SocketAddr, intro_id: u64, outbound: bool) -> Handshake {
        let trusted = self.trusts(addr.ip());
        match &self.password {
            Some(pw) => {
                let hs = Handshake::with_password(
                    &self.identity,
                    intro_id,
                    trusted,
                    pw,
                    outbound,
                    &mut rand::rngs::OsRng,
                );
                if self.sleeve_aead {
                    hs
                } else {
                    hs.without_sleeve_aead()
                }
            }
            None => Handshake::new(&self.identity, intro_id, trusted),
        }
    }
}

/// What connection I/O tells the mesh task.
pub(crate) enum ConnInput {
    /// An intro completed: the mesh decides whether to register the connection, then
    /// [`spawn_io`] runs it.
    Ready(Box<Ready>),
    /// A dial or an outbound intro failed.
    DialFailed(SocketAddr, String),
    /// A message body arrived. `_room` holds its bytes of [`FRAME_BUDGET`] until handled.
    Frame {
        conn: ConnId,
        body: Vec<u8>,
        _room: OwnedSemaphorePermit,
    },
    /// The connection's socket closed or failed.
    Closed(ConnId, Option<String>),
}

/// A connection whose intro completed.
pub(crate) struct Ready {
    pub(crate) conn: ConnId,
    pub(crate) remote: RemoteFeatures,
    pub(crate) addr: SocketAddr,
    pub(crate) origin: Origin,
    /// Our random id in this connection's intro (the remote's is in `remote`).
    pub(crate) our_intro_id: u64,
    /// What the intro agreed on: a sealed session, an overlay key.
    pub(crate) security: ConnSecurity,
    reader: OwnedReadHalf,
    writer: OwnedWriteHalf,
    session: (SessionTx, SessionRx),
}

/// What connection I/O refused or dropped since start, for `/metrics`.
#[derive(Debug, Default)]
pub(crate) struct IoCounters {
    /// Accepted sockets closed at once: too many intros in progress (in all or from the address).
    pub(crate) connections_refused: AtomicU64,
    /// Intros that failed (bad or oversized handshake, EOF, timeout), both directions.
    pub(crate) intros_failed: AtomicU64,
    /// Established connections closed for a frame that broke the framing (too long, bad
    /// length or seal).
    pub(crate) frames_refused: AtomicU64,
    /// Connections closed because the peer left more than [`WRITE_BUDGET`] bytes unread.
    pub(crate) not_reading: AtomicU64,
}

impl IoCounters {
    pub(crate) fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// Where connection I/O sends what it has: the mesh task's channel and the shared budget.
#[derive(Clone)]
pub(crate) struct ToMesh {
    tx: mpsc::Sender<ConnInput>,
    room: Arc<Semaphore>,
    /// What was refused on the way.
    pub(crate) counters: Arc<IoCounters>,
}

impl ToMesh {
    /// The channel into the mesh task, and its receiving end.
    pub(crate) fn new() -> (Self, mpsc::Receiver<ConnInput>) {
        let (tx, rx) = mpsc::channel(FRAME_QUEUE);
        let room = Arc::new(Semaphore::new(FRAME_BUDGET));
        let counters = Arc::default();
        (Self { tx, room, counters }, rx)
    }

    async fn send(&self, input: ConnInput) {
        let _ = self.tx.send(input).await;
    }

    /// Hands one body over once there is room for it; `false` when the mesh task is gone.
    async fn frame(&self, conn: ConnId, body: &[u8]) -> bool {
        // Lossless: FRAME_BUDGET fits in u32; a larger body takes the whole budget.
        let want = body.len().min(FRAME_BUDGET) as u32;
        let Ok(room) = self.room.clone().acquire_many_owned(want).await else {
            return false;
        };
        let input = ConnInput::Frame {
            conn,
            body: body.to_vec(),
            _room: room,
        };
        self.tx.send(input).await.is_ok()
    }
}

/// The mesh task's handle on a live connection's writer.
pub(crate) struct ConnWriter {
    tx: mpsc::UnboundedSender<Vec<u8>>,
    queued: Arc<AtomicUsize>,
    reader: tokio::task::AbortHandle,
}

impl ConnWriter {
    /// Queues one message body. Fails with the bytes already queued when the peer has left
    /// [`WRITE_BUDGET`] unread: the caller closes the connection.
    pub(crate) fn send(&self, body: Vec<u8>) -> Result<(), usize> {
        let queued = self.queued.load(Ordering::Acquire);
        if queued > WRITE_BUDGET {
            return Err(queued);
        }
        self.queued.fetch_add(body.len(), Ordering::AcqRel);
        let _ = self.tx.send(body);
        Ok(())
    }
}

impl Drop for ConnWriter {
    /// Closing: the reader stops at once, the writer after what is queued.
    fn drop(&mut self) {
        self.reader.abort();
    }
}

/// Starts the reader and writer of a registered connection.
pub(crate) fn spawn_io(ready: Ready, to_mesh: ToMesh) -> ConnWriter {
    let Ready {
        conn,
        reader,
        writer,
        session: (tx_half, rx_half),
        ..
    } = ready;
    let (tx, rx) = mpsc::unbounded_channel();
    let queued = Arc::new(AtomicUsize::new(0));
    tokio::spawn(writer_task(writer, tx_half, rx, queued.clone()));
    let reader = tokio::spawn(reader_task(conn, reader, rx_half, to_mesh));
    ConnWriter {
        tx,
        queued,
        reader: reader.abort_handle(),
    }
}

/// How many intros run, in all and per address.
#[derive(Default)]
struct Intros {
    per_ip: Mutex<HashMap<IpAddr, usize>>,
}

/// One running intro's place in [`Intros`]; released on drop.
struct IntroSlot {
    intros: Arc<Intros>,
    ip: IpAddr,
}

impl Intros {
    fn enter(self: &Arc<Self>, ip: IpAddr) -> Option<IntroSlot> {
        let mut per_ip = lock(&self.per_ip);
        let total: usize = per_ip.values().sum();
        let n = per_ip.entry(ip).or_insert(0);
        if total >= MAX_INTROS || *n >= MAX_INTROS_PER_IP {
            return None;
        }
        *n += 1;
        Some(IntroSlot {
            intros: self.clone(),
            ip,
        })
    }
}

impl Drop for IntroSlot {
    fn drop(&mut self) {
        let mut per_ip = lock(&self.intros.per_ip);
        if let Some(n) = per_ip.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                per_ip.remove(&self.ip);
            }
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Accepts mesh connections and runs their intros. `ids` draws our intro ids (seeded from
/// the mesh's RNG, so a seeded run is reproducible); `next_conn` numbers connections.
pub(crate) fn spawn_listener(
    listener: TcpListener,
    me: IntroConfig,
    mut ids: StdRng,
    next_conn: fn() -> ConnId,
    to_mesh: ToMesh,
) {
    tokio::spawn(async move {
        let intros = Arc::new(Intros::default());
        let mut pace = Pacer::new(ACCEPT_BURST, ACCEPT_PERIOD, std::time::Instant::now());
        let mut refused = 0u64;
        loop {
            let now = std::time::Instant::now();
            let ready = pace.ready_at(now);
            if ready > now {
                tokio::time::sleep_until(ready.into()).await;
            }
            let (stream, addr) = match listener.accept().await {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!("accept: {e}");
                    tokio::time::sleep(ACCEPT_PERIOD).await;
                    continue;
                }
            };
            pace.take(std::time::Instant::now());
            let Some(slot) = intros.enter(addr.ip()) else {
                IoCounters::bump(&to_mesh.counters.connections_refused);
                refused += 1;
                // One line per power of two: a flood cannot fill the log.
                if refused.is_power_of_two() {
                    tracing::info!(
                        "->[{addr}] connection refused: too many intros in progress ({refused} so far)"
                    );
                }
                continue;
            };
            tracing::info!("->[{addr}] connection accepted");
            let id = ids.gen();
            let (me, to_mesh) = (me.clone(), to_mesh.clone());
            tokio::spawn(async move {
                let _slot = slot;
                intro(stream, addr, Origin::Inbound, me, id, next_conn, to_mesh).await;
            });
        }
    });
}

/// Dials `addr` and runs the intro.
pub(crate) async fn dial(
    addr: SocketAddr,
    origin: Origin,
    host: Option<IpAddr>,
    me: IntroConfig,
    intro_id: u64,
    next_conn: fn() -> ConnId,
    to_mesh: ToMesh,
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
            let e = format!("dial tcp4 {addr}: connect: {e}");
            return to_mesh.send(ConnInput::DialFailed(addr, e)).await;
        }
        Err(_) => {
            let e = format!("dial tcp4 {addr}: i/o timeout");
            return to_mesh.send(ConnInput::DialFailed(addr, e)).await;
        }
    };
    intro(stream, addr, origin, me, intro_id, next_conn, to_mesh).await;
}

async fn intro(
    stream: TcpStream,
    addr: SocketAddr,
    origin: Origin,
    me: IntroConfig,
    intro_id: u64,
    next_conn: fn() -> ConnId,
    to_mesh: ToMesh,
) {
    let _ = stream.set_nodelay(true);
    let (mut reader, mut writer) = stream.into_split();
    let outbound = matches!(origin, Origin::Outbound { .. });
    let mut hs = me.handshake(addr, intro_id, outbound);
    let run = async {
        if let Some(out) = hs.poll_transmit() {
            writer.write_all(&out).await.map_err(|e| e.to_string())?;
        }
        let mut buf = Vec::with_capacity(512);
        let mut chunk = [0u8; 4096];
        loop {
            let done = hs.handle_input(&mut buf).map_err(|e| e.to_string())?;
            // With a password the sealed features frame is queued only once the remote's key
            // has arrived, possibly by the same input that completes the intro.
            if let Some(out) = hs.poll_transmit() {
                writer.write_all(&out).await.map_err(|e| e.to_string())?;
            }
            if let Some(remote) = done {
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
            let security = ConnSecurity {
                encrypted_session: hs.session_key().is_some(),
                overlay_key: hs.overlay_key(&remote).cloned(),
                sleeve_scheme: hs.sleeve_scheme(&remote),
            };
            let ready = Ready {
                conn: next_conn(),
                remote,
                addr,
                origin,
                our_intro_id: intro_id,
                security,
                reader,
                writer,
                session: hs.into_session(leftover),
            };
            return to_mesh.send(ConnInput::Ready(Box::new(ready))).await;
        }
        Ok(Err(e)) => e,
        Err(_) => "i/o timeout".to_string(),
    };
    IoCounters::bump(&to_mesh.counters.intros_failed);
    tracing::info!("->[{addr}] connection shutting down due to error during handshake: {e}");
    if let Origin::Outbound { dial_addr, .. } = origin {
        to_mesh.send(ConnInput::DialFailed(dial_addr, e)).await;
    }
}

async fn reader_task(
    conn: ConnId,
    mut reader: OwnedReadHalf,
    mut session: SessionRx,
    to_mesh: ToMesh,
) {
    let mut chunk = vec![0u8; READ_CHUNK];
    let err = loop {
        // Hand over every complete body already buffered.
        loop {
            match session.poll_body() {
                Ok(Some(body)) => {
                    if !to_mesh.frame(conn, body).await {
                        return;
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    IoCounters::bump(&to_mesh.counters.frames_refused);
                    return to_mesh
                        .send(ConnInput::Closed(conn, Some(e.to_string())))
                        .await;
                }
            }
        }
        match tokio::time::timeout(READ_TIMEOUT, reader.read(&mut chunk)).await {
            Ok(Ok(0)) => break "EOF".to_string(),
            Ok(Ok(n)) => session.push(&chunk[..n]),
            Ok(Err(e)) => break e.to_string(),
            Err(_) => break "read tcp: i/o timeout".to_string(),
        }
    };
    to_mesh.send(ConnInput::Closed(conn, Some(err))).await;
}

/// Writes queued bodies, sealed by the session, as few writes as the queue allows.
async fn writer_task(
    mut writer: OwnedWriteHalf,
    mut session: SessionTx,
    mut rx: mpsc::UnboundedReceiver<Vec<u8>>,
    queued: Arc<AtomicUsize>,
) {
    let mut out = Vec::new();
    while let Some(body) = rx.recv().await {
        out.clear();
        let mut bodies = body.len();
        let mut next = Some(body);
        while let Some(body) = next.take() {
            if let Err(e) = session.seal(&body, &mut out) {
                tracing::warn!("not sending: {e}");
            }
            if out.len() >= READ_CHUNK {
                break;
            }
            next = rx.try_recv().ok();
            bodies += next.as_ref().map_or(0, Vec::len);
        }
        let failed = writer.write_all(&out).await.is_err();
        queued.fetch_sub(bodies, Ordering::AcqRel);
        if failed {
            break;
        }
    }
    let _ = writer.shutdown().await;
}

// Tests may unwrap: a panic is how they fail.
#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn intros_are_limited_in_all_and_per_address() {
        let intros = Arc::new(Intros::default());
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let held: Vec<_> = (0..MAX_INTROS_PER_IP)
            .map(|_| intros.enter(a).unwrap())
            .collect();
        assert!(intros.enter(a).is_none());
        drop(held);
        let mut held = Vec::new();
        for i in 0..MAX_INTROS {
            let ip = IpAddr::from([10, 1, (i / 200) as u8, (i % 200) as u8]);
            held.push(intros.enter(ip).unwrap());
        }
        assert!(intros.enter("10.2.0.1".parse().unwrap()).is_none());
        held.pop();
        assert!(intros.enter("10.2.0.1".parse().unwrap()).is_some());
    }

    #[tokio::test]
    async fn a_peer_that_does_not_read_is_cut_off_at_the_budget() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        // The peer connects and never reads.
        let _peer = std::net::TcpStream::connect(addr).unwrap();
        let (ours, _) = listener.accept().unwrap();
        ours.set_nonblocking(true).unwrap();
        let (reader, writer) = TcpStream::from_std(ours).unwrap().into_split();
        let (tx, rx) = mpsc::unbounded_channel();
        let queued = Arc::new(AtomicUsize::new(0));
        tokio::spawn(writer_task(
            writer,
            SessionTx::default(),
            rx,
            queued.clone(),
        ));
        let w = ConnWriter {
            tx,
            queued,
            reader: tokio::spawn(async move { drop(reader) }).abort_handle(),
        };
        let mut sent = 0usize;
        let refused = loop {
            match w.send(vec![0u8; 64 * 1024]) {
                Ok(()) => sent += 64 * 1024,
                Err(q) => break q,
            }
            assert!(sent < 4 * WRITE_BUDGET, "never refused");
            tokio::task::yield_now().await;
        };
        assert!(refused > WRITE_BUDGET);
        // What the kernel's socket buffers took on top of the budget.
        assert!(sent <= WRITE_BUDGET + (16 << 20), "{sent}");
    }

    #[tokio::test]
    async fn frames_wait_for_room_in_the_budget() {
        let (to_mesh, mut rx) = ToMesh::new();
        let big = vec![1u8; FRAME_BUDGET / 2 + 1];
        assert!(to_mesh.frame(ConnId(1), &big).await);
        // A second one does not fit until the first is handled.
        let t = to_mesh.clone();
        let b2 = big.clone();
        let second = tokio::spawn(async move { t.frame(ConnId(1), &b2).await });
        tokio::task::yield_now().await;
        assert!(!second.is_finished());
        let first = rx.recv().await.unwrap();
        drop(first);
        assert!(second.await.unwrap());
    }
}
