//! The DNS task: one tokio task owns the [`Zone`] and is its only changer; UDP queries are
//! answered by a thread of its own from snapshots the task publishes after changes
//! ([`super::udp`]); it takes TCP queries from [`super::server`], requests from the HTTP API, what
//! arrived on the `nameserver` channel and the mesh's view of peers from the mesh task, and
//! time. Queries outside the domain are forwarded off the task ([`super::upstream`]), at most
//! [`upstream::MAX_IN_FLIGHT`] at once. Our own entries are written to the state database
//! after each change ([`super::persist`]).
//!
//! Nothing here decides anything about DNS: that is the zone's and the responder's.

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::SeedableRng;
use tokio::sync::{mpsc, oneshot, watch};
use weft_core::dns::channel;
use weft_core::dns::{server_failure, Action, Responder, Transport, Zone, ZoneConfig};
use weft_core::mesh::{ChannelSend, SendTo, GOSSIP_INTERVAL};
use weft_wire::dns::{Entry, CHANNEL};
use weft_wire::PeerName;

use super::persist::{self, Registration};
use super::udp::{lock, servers, Published, Server, SharedUpstreams, PUBLISH_EVERY};
use super::upstream::{self, Limiter, Upstreams};
use super::DnsConfig;
use crate::channel_link::{
    container_alive, newer_view, unix_now, InboxRx, PeerView, StartLiveness, TaskLink, TaskOut,
};
use crate::store::Store;

/// Requests waiting for the task; more wait in their senders.
const MAX_QUEUED_REQUESTS: usize = 256;
/// How often containers are checked for being gone.
const SWEEP_INTERVAL: Duration = Duration::from_secs(1);
/// How often purgeable tombstones are looked for (Weave sweeps every 30 minutes; sooner only
/// frees memory sooner).
const PURGE_INTERVAL: Duration = Duration::from_secs(60);

/// A request to the task.
#[derive(Debug)]
pub(crate) enum Request {
    /// `PUT /name/{container}/{ip}`.
    Add {
        container: String,
        addr: Ipv4Addr,
        fqdn: String,
        check_alive: bool,
        reply: oneshot::Sender<()>,
    },
    /// `DELETE /name[/{container}[/{ip}]]`; `None` is Weave's wildcard.
    Delete {
        container: Option<String>,
        addr: Option<Ipv4Addr>,
        fqdn: Option<String>,
        reply: oneshot::Sender<()>,
    },
    /// `GET /name`: every entry, tombstones included.
    Entries(oneshot::Sender<Vec<Entry>>),
    /// For the status views and metrics.
    Status(oneshot::Sender<DnsStatus>),
    /// A Docker container died: its names go.
    ContainerDied(String),
    /// A query that came over TCP.
    Query {
        query: Vec<u8>,
        reply: oneshot::Sender<TcpAnswer>,
    },
}

/// What to do with a TCP query.
#[derive(Debug)]
pub(crate) enum TcpAnswer {
    /// Send these bytes.
    Send(Vec<u8>),
    /// Ask these upstream servers the query (handed back), each for the timeout; none
    /// answering: SERVFAIL.
    Forward(Vec<u8>, Vec<SocketAddr>, Duration),
    /// Send nothing.
    Drop,
}

/// What the status views, the report and the metrics show of DNS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsStatus {
    /// `--dns-domain`.
    pub domain: String,
    /// The upstream servers, as the status shows them.
    pub upstream: String,
    /// `--dns-ttl`.
    pub ttl: u32,
    /// Live entries, in storage order.
    pub live: Vec<Entry>,
    /// Live entries of our origin.
    pub ours: usize,
    /// Where the server listens, if it does.
    pub address: Option<SocketAddr>,
}

/// The HTTP API's end of the DNS task.
#[derive(Debug, Clone)]
pub struct Handle {
    pub(crate) requests: mpsc::Sender<Request>,
    /// `--dns-domain`.
    pub domain: String,
    /// `--dns-listen-address` (or its default), whether or not the server could bind it.
    pub listen: SocketAddr,
}

/// Starts the DNS task for router `name`: registers again the entries of ours that the
/// database holds whose containers still run, and serves `udp` (if bound; on `listen`).
pub fn spawn(
    cfg: &DnsConfig,
    listen: SocketAddr,
    name: PeerName,
    store: Arc<Store>,
    liveness: &StartLiveness,
    link: TaskLink,
    udp: Option<std::net::UdpSocket>,
) -> Handle {
    let mut zone = Zone::new(ZoneConfig {
        domain: cfg.domain.clone(),
        ..ZoneConfig::new(name)
    });
    let now = unix_now();
    for r in persist::load(&store) {
        if !liveness.alive(&r.container) {
            continue;
        }
        if let Err(e) = zone.add(&r.hostname, &r.container, r.addr, now) {
            tracing::info!("[dns] not restoring an entry: {e}");
        }
    }
    let ours = listen.ip();
    let ours = (!ours.is_unspecified()).then_some(ours);
    let published: Published = Arc::new(RwLock::new(Arc::new(zone.clone())));
    let upstreams = Arc::new(Mutex::new(Upstreams::new(&cfg.resolv_conf, ours)));
    let mut address = None;
    if let Some(sock) = udp {
        let server = Server {
            zone: published.clone(),
            responder: Responder::new(cfg.ttl),
            upstreams: upstreams.clone(),
            fallback_timeout: cfg.fallback_timeout,
            limiter: Limiter::new(upstream::MAX_IN_FLIGHT),
            runtime: tokio::runtime::Handle::current(),
        };
        match super::udp::spawn(sock, server) {
            Ok(()) => address = Some(listen),
            Err(e) => tracing::warn!("[dns] cannot start the UDP server: {e}"),
        }
    }
    let (req_tx, req_rx) = mpsc::channel(MAX_QUEUED_REQUESTS);
    let TaskLink {
        messages,
        peers,
        to_mesh,
    } = link;
    let task = Task {
        zone,
        responder: Responder::new(cfg.ttl),
        rng: StdRng::from_entropy(),
        upstreams,
        fallback_timeout: cfg.fallback_timeout,
        address,
        published,
        dirty: false,
        last_publish: Instant::now(),
        store,
        to_mesh,
        view: PeerView::default(),
        persisted: None,
    };
    tokio::spawn(task.run(req_rx, messages, peers));
    Handle {
        requests: req_tx,
        domain: cfg.domain.clone(),
        listen,
    }
}

struct Task {
    zone: Zone,
    responder: Responder,
    rng: StdRng,
    /// The upstream servers, shared with the UDP thread (one reader of the resolv.conf).
    upstreams: SharedUpstreams,
    fallback_timeout: Duration,
    /// Where the server listens, if it does.
    address: Option<SocketAddr>,
    /// The zone as the UDP thread sees it.
    published: Published,
    /// The zone changed since it was last published.
    dirty: bool,
    last_publish: Instant,
    store: Arc<Store>,
    to_mesh: mpsc::Sender<TaskOut>,
    /// The mesh's view of peers, as last taken.
    view: PeerView,
    /// Our live entries as last written to the database.
    persisted: Option<Vec<Registration>>,
}

impl Task {
    async fn run(
        mut self,
        mut requests: mpsc::Receiver<Request>,
        mut messages: InboxRx,
        mut peers: watch::Receiver<PeerView>,
    ) {
        let mut gossip = tokio::time::interval(GOSSIP_INTERVAL);
        gossip.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut sweep = tokio::time::interval(SWEEP_INTERVAL);
        sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut purge = tokio::time::interval(PURGE_INTERVAL);
        purge.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        self.persist();
        loop {
            if self.dirty && self.last_publish.elapsed() >= PUBLISH_EVERY {
                self.publish();
            }
            let publish_at = self.last_publish + PUBLISH_EVERY;
            let dirty = self.dirty;
            let sends = tokio::select! {
                () = tokio::time::sleep_until(publish_at.into()), if dirty => Vec::new(),
                req = requests.recv() => match req {
                    Some(r) => self.on_request(r),
                    None => return,
                },
                msg = messages.recv() => match msg {
                    Some(d) => {
                        self.dirty = true;
                        let mut sends = newer_view(&mut peers).map(|v| self.on_peers(v)).unwrap_or_default();
                        match channel::handle_message(&mut self.zone, d.message, unix_now()) {
                            Ok(more) => {
                                sends.extend(more);
                                sends
                            }
                            Err(e) => {
                                tracing::warn!("[dns] {e}");
                                if let Some(conn) = d.conn {
                                    let reason = e.to_string();
                                    if self.to_mesh.send(TaskOut::Close { conn, reason }).await.is_err() {
                                        return;
                                    }
                                }
                                sends
                            }
                        }
                    }
                    None => return,
                },
                changed = peers.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    let view = peers.borrow_and_update().clone();
                    self.dirty = true;
                    self.on_peers(view)
                }
                _ = gossip.tick() => {
                    let payload = channel::periodic_gossip(&self.zone, unix_now());
                    vec![ChannelSend::new(CHANNEL, SendTo::Neighbours, payload)]
                }
                _ = sweep.tick() => self.sweep(),
                _ = purge.tick() => {
                    if self.zone.purge_tombstones(unix_now()) > 0 {
                        self.dirty = true;
                    }
                    Vec::new()
                }
            };
            for send in sends {
                if self.to_mesh.send(TaskOut::Send(send)).await.is_err() {
                    return;
                }
            }
        }
    }

    fn on_request(&mut self, req: Request) -> Vec<ChannelSend> {
        let now = unix_now();
        let mut sends = Vec::new();
        match req {
            Request::Add {
                container,
                addr,
                fqdn,
                check_alive,
                reply,
            } => {
                match self.zone.add(&fqdn, &container, addr, now) {
                    Ok(data) => {
                        tracing::info!("[dns] Adding entry {fqdn} -> {addr} ({container})");
                        sends.push(channel::broadcast(&data));
                        if check_alive && !container_alive(&container) {
                            let gone =
                                self.zone
                                    .tombstone(Some(&container), Some(addr), Some(&fqdn), now);
                            sends.extend(gone.as_ref().map(channel::broadcast));
                        }
                    }
                    // Weave logs and ignores what it cannot register.
                    Err(e) => tracing::info!("[dns] {e}"),
                }
                self.persist();
                // Published before the reply: a lookup right after `dns-add` sees the name.
                self.publish();
                let _ = reply.send(());
            }
            Request::Delete {
                container,
                addr,
                fqdn,
                reply,
            } => {
                let gone = self
                    .zone
                    .tombstone(container.as_deref(), addr, fqdn.as_deref(), now);
                sends.extend(gone.as_ref().map(channel::broadcast));
                self.persist();
                self.publish();
                let _ = reply.send(());
            }
            Request::ContainerDied(id) => {
                if let Some(data) = self.zone.tombstone_container(&id, now) {
                    tracing::info!("[dns] container {id} died; removing its names");
                    sends.push(channel::broadcast(&data));
                    self.persist();
                    self.dirty = true;
                }
            }
            Request::Entries(reply) => {
                let _ = reply.send(self.zone.entries().collect());
            }
            Request::Status(reply) => {
                let live: Vec<Entry> = self.zone.entries().filter(|e| e.tombstone == 0).collect();
                let us = self.zone.ourself();
                let _ = reply.send(DnsStatus {
                    domain: self.zone.domain().to_string(),
                    upstream: lock(&self.upstreams).describe(Instant::now()),
                    ttl: self.responder.ttl,
                    ours: live.iter().filter(|e| e.origin == us).count(),
                    live,
                    address: self.address,
                });
            }
            Request::Query { query, reply } => {
                let answer =
                    match self
                        .responder
                        .answer(&self.zone, &query, Transport::Tcp, &mut self.rng)
                    {
                        Action::Answer(b) => TcpAnswer::Send(b),
                        Action::Drop => TcpAnswer::Drop,
                        Action::Forward => TcpAnswer::Forward(
                            query,
                            servers(&self.upstreams),
                            self.fallback_timeout,
                        ),
                    };
                let _ = reply.send(answer);
            }
        }
        sends
    }

    /// Takes the mesh's new view: entries of peers that left go, each new neighbour gets
    /// our whole zone.
    fn on_peers(&mut self, view: PeerView) -> Vec<ChannelSend> {
        for gone in view.gone(&self.view) {
            let n = self.zone.peer_gone(gone);
            if n > 0 {
                tracing::info!("[dns] {gone} left: {n} entries removed");
            }
        }
        let new = view.new_neighbours(&self.view);
        self.zone.set_known_peers(view.known.clone());
        self.view = view;
        let now = unix_now();
        new.into_iter()
            .map(|peer| {
                let payload = channel::periodic_gossip(&self.zone, now);
                ChannelSend::new(CHANNEL, SendTo::Down(peer), payload)
            })
            .collect()
    }

    /// Tombstones the entries of our containers that are gone (Weave does it on Docker's
    /// `die`; a network namespace or process that went away is the same for weft).
    fn sweep(&mut self) -> Vec<ChannelSend> {
        let us = self.zone.ourself();
        let containers: BTreeSet<String> = self
            .zone
            .entries()
            .filter(|e| e.origin == us && e.tombstone == 0)
            .map(|e| e.container_id)
            .filter(|c| !container_alive(c))
            .collect();
        if containers.is_empty() {
            return Vec::new();
        }
        let now = unix_now();
        let mut sends = Vec::new();
        for c in containers {
            tracing::info!("[dns] container {c} is gone; removing its names");
            if let Some(data) = self.zone.tombstone_container(&c, now) {
                sends.push(channel::broadcast(&data));
            }
        }
        self.persist();
        self.dirty = true;
        sends
    }

    /// Hands the UDP thread a copy of the zone as it is now.
    fn publish(&mut self) {
        let snapshot = Arc::new(self.zone.clone());
        *self
            .published
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = snapshot;
        self.dirty = false;
        self.last_publish = Instant::now();
    }

    /// Writes our live entries, if they changed since the last write.
    fn persist(&mut self) {
        let us = self.zone.ourself();
        let ours: Vec<Registration> = self
            .zone
            .entries()
            .filter(|e| e.origin == us && e.tombstone == 0)
            .map(|e| Registration {
                container: e.container_id,
                addr: e.addr,
                hostname: e.hostname,
            })
            .collect();
        if self.persisted.as_ref() == Some(&ours) {
            return;
        }
        if let Err(e) = persist::write(&self.store, &ours) {
            tracing::error!("[dns] cannot persist entries: {e}");
        }
        self.persisted = Some(ours);
    }
}

/// A TCP query's answer, forwarding it upstream if the zone says so.
pub(crate) async fn tcp_answer(handle: &Handle, query: Vec<u8>) -> Option<Vec<u8>> {
    let (tx, rx) = oneshot::channel();
    handle
        .requests
        .send(Request::Query { query, reply: tx })
        .await
        .ok()?;
    match rx.await.ok()? {
        TcpAnswer::Send(b) => Some(b),
        TcpAnswer::Drop => None,
        TcpAnswer::Forward(query, servers, timeout) => {
            upstream::forward(&query, &servers, Transport::Tcp, timeout)
                .await
                .or_else(|| server_failure(&query))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::channel_link::inbox;
    use crate::store::Check;
    use weft_core::mesh::ChannelMessage;

    const US: PeerName = PeerName(0xa);
    const B: PeerName = PeerName(0xb);

    /// A view and a message from a peer it newly knows arrive together: however the task's
    /// `select!` picks, the message meets the view, so the peer's entries are kept.
    #[tokio::test]
    async fn a_message_never_meets_an_older_view() {
        let dir = std::env::temp_dir().join(format!("weft-dns-task-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let store = Arc::new(Store::open(&dir, &Check::command("/bin/false", &[])).unwrap());
        let cfg = DnsConfig {
            domain: "weave.local.".into(),
            listen: None,
            ttl: 1,
            fallback_timeout: Duration::from_secs(1),
            resolv_conf: dir.join("resolv.conf"),
        };
        let mut theirs = Zone::new(ZoneConfig::new(B));
        let addr = Ipv4Addr::new(10, 2, 9, 3);
        theirs
            .add("web.weave.local.", "c9", addr, unix_now())
            .unwrap();
        let payload = channel::periodic_gossip(&theirs, unix_now());
        for round in 0..16 {
            let (inbox_tx, messages) = inbox();
            let (view_tx, peers) = watch::channel(PeerView::default());
            let (to_mesh, _from_task) = mpsc::channel(16);
            let link = TaskLink {
                messages,
                peers,
                to_mesh,
            };
            let listen = SocketAddr::from(([127, 0, 0, 1], 53));
            let liveness = StartLiveness::default();
            let handle = spawn(&cfg, listen, US, store.clone(), &liveness, link, None);
            // Both are ready before the task first runs (this runtime has one thread).
            view_tx.send_replace(PeerView {
                known: BTreeSet::from([B]),
                neighbours: BTreeSet::from([B]),
                ..PeerView::default()
            });
            let message = ChannelMessage::Gossip {
                src: B,
                payload: payload.clone(),
            };
            assert!(inbox_tx.offer(CHANNEL.into(), message, None));
            // The entries request may be taken before the message: ask until it is there.
            let deadline = Instant::now() + Duration::from_secs(2);
            loop {
                let (tx, rx) = oneshot::channel();
                handle.requests.send(Request::Entries(tx)).await.unwrap();
                let entries = rx.await.unwrap();
                if entries.iter().any(|e| e.origin == B && e.addr == addr) {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "round {round}: B's entry was dropped"
                );
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
