//! The IPAM task: one tokio task owns the [`Allocator`] and is its only caller. It takes
//! requests from the HTTP API, what arrived on the `IPallocation` channel and the mesh's view
//! of peers from the mesh task, and time; it writes the allocator's records to the state
//! database before anything that depends on them is sent, hands broadcasts and unicasts to
//! the mesh task, answers requests, and releases the addresses of containers that are gone.
//!
//! Nothing here decides anything about IPAM: that is the allocator's.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};
use weft_core::ipam::allocator::{
    AllocError, Allocator, Config, Output, PersistRecord, PreClaim, Reply, RequestId,
};
use weft_core::ipam::channel;
use weft_core::ipam::wire::CHANNEL;
use weft_core::ipam::{Address, Range};
use weft_core::mesh::{ChannelMessage, ChannelSend, ConnId, SendTo, GOSSIP_INTERVAL};
use weft_types::Ipv4Cidr;
use weft_wire::PeerName;

use super::persist;
use super::status::IpamStatus;
use super::IpamConfig;
use crate::channel_link::{
    container_alive, newer_view, unix_now, PeerView, StartLiveness, TaskLink, TaskOut,
};
use crate::store::Store;

/// Requests waiting for the task; more wait in the HTTP handlers.
const MAX_QUEUED_REQUESTS: usize = 256;
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
    /// A Docker container started, died or was destroyed.
    Container(weft_docker::Event),
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

/// What the router found at start that the allocator takes in.
#[derive(Debug)]
pub struct AtStart<'a> {
    /// Addresses found in use (Weave's pre-claims).
    pub pre_claims: Vec<PreClaim>,
    /// Which containers still run: what others own is pruned.
    pub liveness: &'a StartLiveness,
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
    at_start: AtStart<'_>,
    link: TaskLink,
) -> Option<Handle> {
    let AtStart {
        pre_claims,
        liveness,
    } = at_start;
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
        .filter(|(id, d)| d.is_container && liveness.alive(id))
        .map(|(id, _)| id.clone())
        .collect();
    alloc.prune_owned(&running);
    let (req_tx, req_rx) = mpsc::channel(MAX_QUEUED_REQUESTS);
    let TaskLink {
        messages,
        peers,
        to_mesh,
    } = link;
    let task = Task {
        alloc,
        store,
        to_mesh,
        waiting: HashMap::new(),
        next_id: 0,
        view: PeerView::default(),
        default_subnet: cfg.default_subnet,
    };
    tokio::spawn(task.run(req_rx, messages, peers));
    Some(Handle {
        requests: req_tx,
        default_subnet: cfg.default_subnet,
    })
}

struct Task {
    alloc: Allocator,
    store: Arc<Store>,
    to_mesh: mpsc::Sender<TaskOut>,
    waiting: HashMap<RequestId, Waiter>,
    next_id: u64,
    /// The mesh's view of peers, as last taken.
    view: PeerView,
    default_subnet: Ipv4Cidr,
}

impl Task {
    async fn run(
        mut self,
        mut requests: mpsc::Receiver<Request>,
        mut messages: crate::channel_link::InboxRx,
        mut peers: tokio::sync::watch::Receiver<PeerView>,
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
                    Some(d) => {
                        if let Some(view) = newer_view(&mut peers) {
                            if !self.on_peers(view).await {
                                return;
                            }
                        }
                        self.on_message(&d.channel, d.message, d.conn).await
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
                    let send = ChannelSend::new(CHANNEL, SendTo::Neighbours, payload);
                    if self.to_mesh.send(TaskOut::Send(send)).await.is_err() {
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
                        if self.to_mesh.send(TaskOut::Send(send)).await.is_err() {
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
            Request::Container(event) => match event {
                weft_docker::Event::Started(id) => self.alloc.container_started(&id),
                weft_docker::Event::Died(id) => self.alloc.container_died(&id, Instant::now()),
                weft_docker::Event::Destroyed(id) => self.alloc.container_destroyed(&id),
                // The plugin's IPAM driver is told of network changes by Docker itself.
                weft_docker::Event::Connected { .. } | weft_docker::Event::Disconnected { .. } => {}
            },
            Request::Status(reply) => {
                let known = &self.view.known;
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
                let _ = self.to_mesh.send(TaskOut::Close { conn, reason }).await;
            }
        }
    }

    /// Takes the mesh's new view; false once the mesh task is gone.
    async fn on_peers(&mut self, view: PeerView) -> bool {
        for gone in view.gone(&self.view) {
            self.alloc.peer_gone(gone);
        }
        let new = view.new_neighbours(&self.view);
        self.alloc.set_delta_peers(view.delta_peers.clone());
        self.alloc.set_known_peers(view.known.clone());
        self.alloc.set_direct_targets(view.direct_targets);
        self.view = view;
        for peer in new {
            let payload = channel::periodic_gossip(&self.alloc, unix_now());
            let send = ChannelSend::new(CHANNEL, SendTo::Down(peer), payload);
            if self.to_mesh.send(TaskOut::Send(send)).await.is_err() {
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
