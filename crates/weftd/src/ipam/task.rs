//! The IPAM task: one tokio task owns the [`Allocator`] and is its only caller. It takes
//! requests from the HTTP API, what arrived on the `IPallocation` channel and the mesh's view
//! of peers from the mesh task, and time; it writes the allocator's records to the state
//! database before anything that depends on them is sent, hands broadcasts and unicasts to
//! the mesh task, answers requests, and releases the addresses of containers that are gone.
//!
//! Nothing here decides anything about IPAM: that is the allocator's.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::sync::{mpsc, oneshot, watch};
use weft_attach::Container;
use weft_core::ipam::allocator::{
    AllocError, Allocator, Config, Output, PersistRecord, PreClaim, Reply, RequestId,
};
use weft_core::ipam::channel::{self, ChannelSend};
use weft_core::ipam::{Address, Range};
use weft_core::mesh::{ChannelMessage, ConnId, GOSSIP_INTERVAL};
use weft_types::Ipv4Cidr;
use weft_wire::PeerName;

use super::persist;
use super::status::IpamStatus;
use super::IpamConfig;
use crate::store::Store;

/// Requests waiting for the task; more wait in the HTTP handlers.
const MAX_QUEUED_REQUESTS: usize = 256;
/// Channel messages waiting for the task; more are dropped (gossip repeats, requests retry).
const MAX_QUEUED_MESSAGES: usize = 1024;
/// Payload bytes of the channel messages waiting for the task; more are dropped too.
const MAX_QUEUED_BYTES: usize = 16 << 20;
/// What the task asks of the mesh task, waiting to be taken.
const MAX_QUEUED_SENDS: usize = 1024;
/// How often containers are checked for being gone, and waiting clients for having left.
const SWEEP_INTERVAL: Duration = Duration::from_secs(1);

/// A request from the HTTP API.
#[derive(Debug)]
pub(crate) enum Request {
    /// `POST /ip/{id}[/{subnet}]`.
    Allocate {
        ident: String,
        subnet: Ipv4Cidr,
        check_alive: bool,
        reply: oneshot::Sender<Result<Ipv4Cidr, AllocError>>,
    },
    /// `PUT /ip/{id}/{ip}/{len}`.
    Claim {
        ident: String,
        cidr: Ipv4Cidr,
        check_alive: bool,
        no_error_on_unknown: bool,
        reply: oneshot::Sender<Result<(), AllocError>>,
    },
    /// `GET /ring`.
    Prime(oneshot::Sender<Result<(), AllocError>>),
    /// `GET /ip/{id}[/{subnet}]`.
    Lookup {
        ident: String,
        range: Range,
        reply: oneshot::Sender<Vec<Ipv4Cidr>>,
    },
    /// `GET /ip`.
    Owned(oneshot::Sender<Vec<(String, Vec<Ipv4Cidr>)>>),
    /// `DELETE /ip/{id}/{ip}`.
    Free {
        ident: String,
        addr: Address,
        reply: oneshot::Sender<Result<(), AllocError>>,
    },
    /// `DELETE /ip/{id}`.
    Delete {
        ident: String,
        reply: oneshot::Sender<Result<(), AllocError>>,
    },
    /// `DELETE /peer/{name}`: addresses taken over.
    Takeover {
        peer: String,
        reply: oneshot::Sender<u64>,
    },
    /// `DELETE /peer`.
    Shutdown(oneshot::Sender<()>),
    /// For the status views.
    Status(oneshot::Sender<IpamStatus>),
}

/// What the IPAM task asks of the mesh task.
#[derive(Debug)]
pub enum IpamOut {
    /// A broadcast or unicast on the channel.
    Send(ChannelSend),
    /// Periodic gossip to random neighbours.
    Gossip(Vec<u8>),
    /// Our state to one new neighbour.
    GossipDown {
        /// The neighbour.
        peer: PeerName,
        /// The gossip.
        payload: Vec<u8>,
    },
    /// Close a connection whose message IPAM refused.
    Close {
        /// The connection.
        conn: ConnId,
        /// The refusal, for the log.
        reason: String,
    },
}

/// The mesh's view of peers that IPAM needs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PeerView {
    /// Every peer the router knows.
    pub known: BTreeSet<PeerName>,
    /// Neighbours that offered IPAM ring deltas.
    pub delta_peers: BTreeSet<PeerName>,
    /// Direct connection targets, for the default quorum.
    pub direct_targets: u32,
    /// Peers we have a connection to; each new one is sent our state at once.
    pub neighbours: BTreeSet<PeerName>,
}

/// The mesh task's end of the IPAM task.
#[derive(Debug)]
pub struct MeshLink {
    /// Channel messages for the IPAM task.
    pub messages: Inbox,
    /// The latest peer view.
    pub peers: watch::Sender<PeerView>,
    /// What the IPAM task asks of the mesh.
    pub from_ipam: mpsc::Receiver<IpamOut>,
}

/// Where the mesh task puts channel messages for the IPAM task: bounded in count and in
/// payload bytes, so a peer's gossip cannot make the router hold more than
/// [`MAX_QUEUED_BYTES`] while the task is behind.
#[derive(Debug)]
pub struct Inbox {
    tx: mpsc::Sender<Queued>,
    bytes: Arc<AtomicUsize>,
}

#[derive(Debug)]
struct Queued {
    channel: String,
    message: ChannelMessage,
    conn: Option<ConnId>,
    len: usize,
}

impl Inbox {
    /// Queues a message; false (and the message dropped) when the task is too far behind.
    pub fn offer(&self, channel: String, message: ChannelMessage, conn: Option<ConnId>) -> bool {
        let len = match &message {
            ChannelMessage::Gossip { payload, .. }
            | ChannelMessage::Broadcast { payload, .. }
            | ChannelMessage::Unicast { payload, .. } => payload.len(),
        };
        if self.bytes.fetch_add(len, Ordering::AcqRel) + len > MAX_QUEUED_BYTES {
            self.bytes.fetch_sub(len, Ordering::AcqRel);
            return false;
        }
        let queued = Queued {
            channel,
            message,
            conn,
            len,
        };
        if self.tx.try_send(queued).is_err() {
            self.bytes.fetch_sub(len, Ordering::AcqRel);
            return false;
        }
        true
    }
}

/// The HTTP API's end of the IPAM task.
#[derive(Debug, Clone)]
pub struct Handle {
    pub(crate) requests: mpsc::Sender<Request>,
    /// `--ipalloc-default-subnet`.
    pub default_subnet: Ipv4Cidr,
}

/// Who waits for a reply the allocator will give later.
enum Waiter {
    Allocate(oneshot::Sender<Result<Ipv4Cidr, AllocError>>),
    Claim(oneshot::Sender<Result<(), AllocError>>),
    Prime(oneshot::Sender<Result<(), AllocError>>),
}

impl Waiter {
    fn is_closed(&self) -> bool {
        match self {
            Self::Allocate(t) => t.is_closed(),
            Self::Claim(t) | Self::Prime(t) => t.is_closed(),
        }
    }

    fn answer(self, result: Result<Reply, AllocError>) {
        match self {
            Self::Allocate(t) => {
                let r = result.and_then(|r| match r {
                    Reply::Allocated(c) => Ok(c),
                    other => {
                        tracing::warn!(
                            "[allocator]: unexpected answer to an allocation: {other:?}"
                        );
                        Err(AllocError::NoAddresses(String::new()))
                    }
                });
                let _ = t.send(r);
            }
            Self::Claim(t) | Self::Prime(t) => {
                let _ = t.send(result.map(|_| ()));
            }
        }
    }
}

/// Starts the IPAM task for router `name` (nickname `nickname`, incarnation `uid`): loads
/// what the database holds, releases addresses of containers that went away while the router
/// was down, and returns the handles of the HTTP API and of the mesh task. `None` if the range
/// is unusable (the flags' checks refuse such ranges first).
pub fn spawn(
    cfg: &IpamConfig,
    name: PeerName,
    nickname: String,
    uid: u64,
    store: Arc<Store>,
    pre_claims: Vec<PreClaim>,
) -> Option<(Handle, MeshLink)> {
    let persisted = match persist::load(&store) {
        Ok(p) => Some(p),
        Err(e) => {
            tracing::warn!("[allocator]: cannot read persisted IPAM data: {e}");
            None
        }
    };
    let now = Instant::now();
    let mut alloc = Allocator::new(
        Config {
            name,
            uid,
            nickname,
            universe: cfg.range,
            mode: cfg.mode.clone(),
            pre_claims,
            rng_seed: rand::random(),
        },
        persisted,
        now,
    )?;
    let running: BTreeSet<String> = alloc
        .owned()
        .iter()
        .filter(|(id, d)| d.is_container && container_alive(id))
        .map(|(id, _)| id.clone())
        .collect();
    alloc.prune_owned(&running);
    let (req_tx, req_rx) = mpsc::channel(MAX_QUEUED_REQUESTS);
    let (msg_tx, msg_rx) = mpsc::channel(MAX_QUEUED_MESSAGES);
    let queued = Arc::new(AtomicUsize::new(0));
    let (peers_tx, peers_rx) = watch::channel(PeerView::default());
    let (out_tx, out_rx) = mpsc::channel(MAX_QUEUED_SENDS);
    let task = Task {
        alloc,
        store,
        to_mesh: out_tx,
        waiting: HashMap::new(),
        next_id: 0,
        known: BTreeSet::new(),
        neighbours: BTreeSet::new(),
        default_subnet: cfg.default_subnet,
    };
    tokio::spawn(task.run(req_rx, (msg_rx, queued.clone()), peers_rx));
    Some((
        Handle {
            requests: req_tx,
            default_subnet: cfg.default_subnet,
        },
        MeshLink {
            messages: Inbox {
                tx: msg_tx,
                bytes: queued,
            },
            peers: peers_tx,
            from_ipam: out_rx,
        },
    ))
}

/// Whether the container an ident names still exists; idents weft cannot check (another
/// runtime's container IDs) count as alive, so their addresses are never released on a doubt.
fn container_alive(ident: &str) -> bool {
    Container::parse(ident).map_or(true, |c| c.is_alive())
}

struct Task {
    alloc: Allocator,
    store: Arc<Store>,
    to_mesh: mpsc::Sender<IpamOut>,
    waiting: HashMap<RequestId, Waiter>,
    next_id: u64,
    known: BTreeSet<PeerName>,
    neighbours: BTreeSet<PeerName>,
    default_subnet: Ipv4Cidr,
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

impl Task {
    async fn run(
        mut self,
        mut requests: mpsc::Receiver<Request>,
        (mut messages, queued): (mpsc::Receiver<Queued>, Arc<AtomicUsize>),
        mut peers: watch::Receiver<PeerView>,
    ) {
        let mut gossip = tokio::time::interval(GOSSIP_INTERVAL);
        gossip.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut sweep = tokio::time::interval(SWEEP_INTERVAL);
        sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            if !self.drain().await {
                return;
            }
            let tick = tokio::time::sleep_until(self.alloc.poll_timeout().into());
            tokio::select! {
                req = requests.recv() => match req {
                    Some(r) => self.on_request(r),
                    None => return,
                },
                msg = messages.recv() => match msg {
                    Some(q) => {
                        queued.fetch_sub(q.len, Ordering::AcqRel);
                        self.on_message(&q.channel, q.message, q.conn).await;
                    }
                    None => return,
                },
                changed = peers.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    let view = peers.borrow_and_update().clone();
                    if !self.on_peers(view).await {
                        return;
                    }
                }
                () = tick => self.alloc.handle_timeout(Instant::now()),
                _ = gossip.tick() => {
                    let payload = channel::periodic_gossip(&self.alloc, unix_now());
                    if self.to_mesh.send(IpamOut::Gossip(payload)).await.is_err() {
                        return;
                    }
                }
                _ = sweep.tick() => self.sweep(),
            }
        }
    }

    /// Acts on everything the allocator asked for, in order; false once the mesh task is gone.
    async fn drain(&mut self) -> bool {
        let now = unix_now();
        // Every record is written before anything else is acted on, in one write: an answer
        // or a message never goes out ahead of the state it follows, and an allocation (which
        // changes both the owned addresses and, after its answer, the ring's free count) costs
        // one write, not two.
        let mut records = Vec::new();
        let mut acts = Vec::new();
        while let Some(out) = self.alloc.poll_output() {
            match out {
                Output::Persist(record) => records.push(record),
                other => acts.push(other),
            }
        }
        self.persist(&mut records);
        for out in acts {
            match out {
                Output::Reply { id, result } => {
                    if let Some(w) = self.waiting.remove(&id) {
                        w.answer(result);
                    }
                }
                other => {
                    if let Some(send) = channel::outgoing(&other, now) {
                        if self.to_mesh.send(IpamOut::Send(send)).await.is_err() {
                            return false;
                        }
                    }
                }
            }
        }
        true
    }

    /// Writes (and clears) the records gathered so far, before anything that follows them.
    fn persist(&self, records: &mut Vec<PersistRecord>) {
        if records.is_empty() {
            return;
        }
        // A record that cannot be written leaves the router running on what it has in memory;
        // the next change writes the whole record again.
        if let Err(e) = persist::write(&self.store, records) {
            tracing::error!("[allocator]: cannot persist IPAM data: {e}");
        }
        records.clear();
    }

    fn id(&mut self) -> RequestId {
        self.next_id += 1;
        RequestId(self.next_id)
    }

    fn on_request(&mut self, req: Request) {
        match req {
            Request::Allocate {
                ident,
                subnet,
                check_alive,
                reply,
            } => {
                if check_alive && !container_alive(&ident) {
                    let _ = reply.send(Err(AllocError::cancelled("Allocate", &ident)));
                    return;
                }
                let id = self.id();
                self.waiting.insert(id, Waiter::Allocate(reply));
                self.alloc.allocate(id, &ident, subnet, check_alive);
            }
            Request::Claim {
                ident,
                cidr,
                check_alive,
                no_error_on_unknown,
                reply,
            } => {
                if check_alive && !container_alive(&ident) {
                    let _ = reply.send(Err(AllocError::cancelled("Claim", &ident)));
                    return;
                }
                let id = self.id();
                self.waiting.insert(id, Waiter::Claim(reply));
                self.alloc
                    .claim(id, &ident, cidr, check_alive, no_error_on_unknown);
            }
            Request::Prime(reply) => {
                let id = self.id();
                self.waiting.insert(id, Waiter::Prime(reply));
                self.alloc.prime(id);
            }
            Request::Lookup {
                ident,
                range,
                reply,
            } => {
                let _ = reply.send(self.alloc.lookup(&ident, range));
            }
            Request::Owned(reply) => {
                let owned = self
                    .alloc
                    .owned()
                    .iter()
                    .map(|(id, d)| (id.clone(), d.cidrs.clone()))
                    .collect();
                let _ = reply.send(owned);
            }
            Request::Free { ident, addr, reply } => {
                let _ = reply.send(self.alloc.free(&ident, addr));
            }
            Request::Delete { ident, reply } => {
                let _ = reply.send(self.alloc.delete(&ident));
            }
            Request::Takeover { peer, reply } => {
                let n = self.alloc.admin_takeover(&peer);
                let _ = reply.send(n);
            }
            Request::Shutdown(reply) => {
                self.alloc.shutdown();
                let _ = reply.send(());
            }
            Request::Status(reply) => {
                let known = &self.known;
                let s = IpamStatus::of(&self.alloc, self.default_subnet, &|p| known.contains(&p));
                let _ = reply.send(s);
            }
        }
    }

    async fn on_message(&mut self, name: &str, message: ChannelMessage, conn: Option<ConnId>) {
        if let Err(e) = channel::handle_channel_message(&mut self.alloc, name, message) {
            tracing::warn!("[allocator]: {e}");
            if let Some(conn) = conn {
                let reason = e.to_string();
                let _ = self.to_mesh.send(IpamOut::Close { conn, reason }).await;
            }
        }
    }

    /// Takes the mesh's new view; false once the mesh task is gone.
    async fn on_peers(&mut self, view: PeerView) -> bool {
        for gone in self.known.difference(&view.known) {
            self.alloc.peer_gone(*gone);
        }
        self.known = view.known.clone();
        self.alloc.set_delta_peers(view.delta_peers);
        self.alloc.set_known_peers(view.known);
        self.alloc.set_direct_targets(view.direct_targets);
        let new: Vec<PeerName> = view
            .neighbours
            .difference(&self.neighbours)
            .copied()
            .collect();
        self.neighbours = view.neighbours;
        for peer in new {
            let payload = channel::periodic_gossip(&self.alloc, unix_now());
            if self
                .to_mesh
                .send(IpamOut::GossipDown { peer, payload })
                .await
                .is_err()
            {
                return false;
            }
        }
        true
    }

    /// Releases the addresses of containers that are gone, and drops requests whose client
    /// has left.
    fn sweep(&mut self) {
        let gone: Vec<String> = self
            .alloc
            .owned()
            .iter()
            .filter(|(id, d)| d.is_container && !container_alive(id))
            .map(|(id, _)| id.clone())
            .collect();
        let now = Instant::now();
        for id in gone {
            tracing::info!("[allocator]: container {id} is gone; releasing its addresses");
            self.alloc.container_died(&id, now);
            self.alloc.container_destroyed(&id);
        }
        let left: Vec<RequestId> = self
            .waiting
            .iter()
            .filter(|(_, w)| w.is_closed())
            .map(|(id, _)| *id)
            .collect();
        for id in left {
            self.alloc.cancel(id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inbox_is_bounded_in_bytes_and_count() {
        let (tx, mut rx) = mpsc::channel(MAX_QUEUED_MESSAGES);
        let bytes = Arc::new(AtomicUsize::new(0));
        let inbox = Inbox {
            tx,
            bytes: bytes.clone(),
        };
        let big = |n| ChannelMessage::Gossip {
            src: PeerName(1),
            payload: vec![0; n],
        };
        // 4 MiB payloads: four fit, the fifth would pass the byte bound.
        for _ in 0..4 {
            assert!(inbox.offer("IPallocation".into(), big(4 << 20), None));
        }
        assert!(!inbox.offer("IPallocation".into(), big(4 << 20), None));
        assert_eq!(bytes.load(Ordering::Acquire), MAX_QUEUED_BYTES);
        // Taking one out makes room again, as the task does.
        let q = rx.try_recv().unwrap();
        bytes.fetch_sub(q.len, Ordering::AcqRel);
        assert!(inbox.offer("IPallocation".into(), big(4 << 20), None));
        // Small messages are bounded in count.
        while rx.try_recv().is_ok() {}
        bytes.store(0, Ordering::Release);
        let accepted = (0..MAX_QUEUED_MESSAGES + 10)
            .filter(|_| inbox.offer("IPallocation".into(), big(1), None))
            .count();
        assert_eq!(accepted, MAX_QUEUED_MESSAGES);
        assert_eq!(bytes.load(Ordering::Acquire), MAX_QUEUED_MESSAGES);
    }
}
