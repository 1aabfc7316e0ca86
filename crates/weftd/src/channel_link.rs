//! The seam between the mesh task and the tasks that own a gossip channel's state machine
//! (IPAM's allocator, DNS's zone): each such task gets a [`TaskLink`] from [`Links::add`], and
//! the mesh task ([`crate::driver`]) holds the [`Links`].
//!
//! Towards a task: what arrived on its channels, through an [`Inbox`] bounded in count and in
//! payload bytes (a peer's gossip cannot make the router hold more than [`MAX_QUEUED_BYTES`]
//! a task while it is behind; what does not fit is dropped: gossip repeats and requests are
//! retried), and the mesh's [`PeerView`], one `watch` for all tasks, sent only when it may have
//! changed. From the tasks: [`TaskOut`]s on one bounded channel the mesh task selects on.
//! Also what every owner's task needs: [`unix_now`], [`container_alive`].

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::sync::{mpsc, watch};
use weft_core::mesh::{ChannelError, ChannelMessage, ChannelSend, ConnId, Mesh};
use weft_wire::PeerName;

/// Channel messages waiting for one task; more are dropped.
const MAX_QUEUED_MESSAGES: usize = 1024;
/// Payload bytes of the channel messages waiting for one task; more are dropped too.
pub const MAX_QUEUED_BYTES: usize = 16 << 20;
/// What the tasks ask of the mesh task, waiting to be taken; the tasks wait when it is full.
const MAX_QUEUED_SENDS: usize = 1024;

/// Whether the container an ident names still exists; idents weft cannot check (another
/// runtime's container IDs, `weave:extern`) count as alive, so that nothing is released or
/// removed on a doubt.
pub fn container_alive(ident: &str) -> bool {
    weft_attach::Container::parse(ident).map_or(true, |c| c.is_alive())
}

/// Which containers were alive when the router started, for what it restores from its
/// database: namespaces and processes as [`container_alive`] sees them, and Docker containers
/// (idents that are full Docker IDs) by the daemon's list of running containers, when a daemon
/// answered (Weave Net prunes what containers no longer running own, and re-registers the
/// names of running ones only).
#[derive(Debug, Clone, Default)]
pub struct StartLiveness {
    docker_running: Option<BTreeSet<String>>,
}

impl StartLiveness {
    /// How long the router waits for the daemon's list at start.
    const DOCKER_WAIT: std::time::Duration = std::time::Duration::from_secs(3);

    /// Asks the Docker daemon at `DOCKER_HOST` (with `docker`) which containers run; without
    /// an answer, Docker containers count as alive, as on any doubt.
    pub async fn query(docker: bool) -> Self {
        if !docker {
            return Self::default();
        }
        let ask = async {
            let d = weft_docker::Docker::from_env()?.negotiate().await?;
            d.running_ids().await
        };
        let docker_running = match tokio::time::timeout(Self::DOCKER_WAIT, ask).await {
            Ok(Ok(running)) => Some(running.into_iter().collect()),
            Ok(Err(e)) => {
                tracing::info!("[docker] cannot list running containers at start: {e}");
                None
            }
            Err(_) => {
                tracing::info!(
                    "[docker] no list of running containers within {:?}",
                    Self::DOCKER_WAIT
                );
                None
            }
        };
        Self { docker_running }
    }

    /// A liveness where these Docker containers are the running ones.
    pub fn with_docker(running: impl IntoIterator<Item = String>) -> Self {
        Self {
            docker_running: Some(running.into_iter().collect()),
        }
    }

    /// Whether the container `ident` names was alive at start.
    pub fn alive(&self, ident: &str) -> bool {
        match &self.docker_running {
            Some(running) if is_docker_id(ident) => running.contains(ident),
            _ => container_alive(ident),
        }
    }
}

/// A full Docker container ID: 64 lowercase hex digits.
pub fn is_docker_id(ident: &str) -> bool {
    ident.len() == 64
        && ident
            .bytes()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Our clock in Unix seconds, as the gossip formats carry it.
pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// The mesh's view of peers that channel owners need.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PeerView {
    /// Every peer the router knows.
    pub known: BTreeSet<PeerName>,
    /// Neighbours that offered IPAM ring deltas.
    pub delta_peers: BTreeSet<PeerName>,
    /// Direct connection targets, for IPAM's default quorum.
    pub direct_targets: u32,
    /// Peers we have a connection to; each new one is sent the owner's state at once.
    pub neighbours: BTreeSet<PeerName>,
}

impl PeerView {
    /// The neighbours in `self` that were not in `before` (each gets our state at once).
    pub fn new_neighbours(&self, before: &Self) -> Vec<PeerName> {
        self.neighbours
            .difference(&before.neighbours)
            .copied()
            .collect()
    }

    /// The peers in `before` that `self` no longer knows.
    pub fn gone(&self, before: &Self) -> Vec<PeerName> {
        before.known.difference(&self.known).copied().collect()
    }
}

/// The mesh's newest view when it changed since the task last looked. A task applies it
/// before a channel message: the mesh publishes a view before it delivers a message, but the
/// task's `select!` may take the message first.
pub fn newer_view(peers: &mut watch::Receiver<PeerView>) -> Option<PeerView> {
    match peers.has_changed() {
        Ok(true) => Some(peers.borrow_and_update().clone()),
        _ => None,
    }
}

/// What a channel owner's task asks of the mesh task.
#[derive(Debug)]
pub enum TaskOut {
    /// Send on a channel.
    Send(ChannelSend),
    /// Close a connection whose message the owner refused (as Weave Net does).
    Close {
        /// The connection.
        conn: ConnId,
        /// The refusal, for the log.
        reason: String,
    },
}

impl TaskOut {
    /// Hands this to the mesh.
    pub fn apply(self, mesh: &mut Mesh) -> Result<(), ChannelError> {
        match self {
            Self::Send(send) => send.send(mesh),
            Self::Close { conn, reason } => {
                mesh.close_for_channel(conn, reason);
                Ok(())
            }
        }
    }
}

/// A channel message with what it came on.
#[derive(Debug)]
pub struct Delivery {
    /// The channel's name.
    pub channel: String,
    /// The message.
    pub message: ChannelMessage,
    /// The connection it arrived on (`None`: from ourselves).
    pub conn: Option<ConnId>,
    len: usize,
}

/// Where the mesh task puts one task's channel messages.
#[derive(Debug)]
pub struct Inbox {
    tx: mpsc::Sender<Delivery>,
    bytes: Arc<AtomicUsize>,
}

/// The task's end of its [`Inbox`].
#[derive(Debug)]
pub struct InboxRx {
    rx: mpsc::Receiver<Delivery>,
    bytes: Arc<AtomicUsize>,
}

pub(crate) fn inbox() -> (Inbox, InboxRx) {
    let (tx, rx) = mpsc::channel(MAX_QUEUED_MESSAGES);
    let bytes = Arc::new(AtomicUsize::new(0));
    (
        Inbox {
            tx,
            bytes: bytes.clone(),
        },
        InboxRx { rx, bytes },
    )
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
        let queued = Delivery {
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

impl InboxRx {
    /// The next message; `None` once the mesh task is gone.
    pub async fn recv(&mut self) -> Option<Delivery> {
        let d = self.rx.recv().await?;
        self.bytes.fetch_sub(d.len, Ordering::AcqRel);
        Some(d)
    }
}

/// What a channel owner's task holds.
#[derive(Debug)]
pub struct TaskLink {
    /// What arrived on its channels.
    pub messages: InboxRx,
    /// The mesh's view of peers.
    pub peers: watch::Receiver<PeerView>,
    /// What it asks of the mesh.
    pub to_mesh: mpsc::Sender<TaskOut>,
}

/// One channel owner, as the mesh task sees it.
struct Owner {
    /// Which channels are its.
    owns: fn(&str) -> bool,
    /// Registers them with the mesh.
    register: fn(&mut Mesh) -> Result<(), ChannelError>,
    inbox: Inbox,
}

/// The mesh task's end of every channel owner's task.
pub struct Links {
    owners: Vec<Owner>,
    peers: watch::Sender<PeerView>,
    out_tx: mpsc::Sender<TaskOut>,
    out_rx: Option<mpsc::Receiver<TaskOut>>,
    /// The mesh's fabric version and target count when the peer view was last sent.
    seen: Option<(u64, usize)>,
}

impl Default for Links {
    fn default() -> Self {
        let (out_tx, out_rx) = mpsc::channel(MAX_QUEUED_SENDS);
        Self {
            owners: Vec::new(),
            peers: watch::Sender::new(PeerView::default()),
            out_tx,
            out_rx: Some(out_rx),
            seen: None,
        }
    }
}

impl std::fmt::Debug for Links {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Links")
            .field("owners", &self.owners.len())
            .finish_non_exhaustive()
    }
}

impl Links {
    /// A new owner of the channels `owns` accepts, which `register` registers with the mesh.
    pub fn add(
        &mut self,
        owns: fn(&str) -> bool,
        register: fn(&mut Mesh) -> Result<(), ChannelError>,
    ) -> TaskLink {
        let (inbox, messages) = inbox();
        self.owners.push(Owner {
            owns,
            register,
            inbox,
        });
        TaskLink {
            messages,
            peers: self.peers.subscribe(),
            to_mesh: self.out_tx.clone(),
        }
    }

    /// Registers every owner's channels with the mesh.
    pub fn register(&self, mesh: &mut Mesh) -> Result<(), ChannelError> {
        self.owners.iter().try_for_each(|o| (o.register)(mesh))
    }

    /// The receiver of what the tasks ask (taken once, by the mesh task's loop).
    pub fn take_requests(&mut self) -> Option<mpsc::Receiver<TaskOut>> {
        self.out_rx.take()
    }

    /// Hands a channel message to its owner; when the owner is behind, the message is
    /// dropped, never queued without bound.
    pub fn deliver(&self, channel: String, message: ChannelMessage, conn: Option<ConnId>) {
        match self.owners.iter().find(|o| (o.owns)(&channel)) {
            Some(o) => {
                if !o.inbox.offer(channel, message, conn) {
                    tracing::debug!("the owner of a gossip channel is behind; dropping a message");
                }
            }
            None => tracing::debug!("nobody takes gossip channel {channel}"),
        }
    }

    /// Sends the tasks the peers the router knows, when they may have changed.
    pub fn publish(&mut self, mesh: &mut Mesh) {
        if self.owners.is_empty() {
            return;
        }
        let now = (mesh.fabric_version(), mesh.targets().len());
        if self.seen == Some(now) {
            return;
        }
        self.seen = Some(now);
        let view = PeerView {
            known: mesh.peers().all_names().into_iter().collect(),
            delta_peers: mesh.ipam_delta_neighbours(),
            direct_targets: u32::try_from(now.1).unwrap_or(u32::MAX),
            neighbours: mesh.neighbours().collect(),
        };
        self.peers.send_if_modified(|v| {
            let changed = *v != view;
            *v = view;
            changed
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_containers_alive_at_start_are_the_running_ones() {
        let a = "a".repeat(64);
        let b = "b".repeat(64);
        let l = StartLiveness::with_docker([a.clone()]);
        assert!(l.alive(&a));
        assert!(!l.alive(&b));
        // Namespaces are looked at directly; idents weft cannot check count as alive.
        assert!(!l.alive("netns:weft-no-such-namespace"));
        assert!(l.alive("weave:extern"));
        assert!(l.alive("0123abcd"));
        // Without the daemon's answer, every Docker container counts as alive.
        assert!(StartLiveness::default().alive(&b));
    }

    #[tokio::test]
    async fn inbox_is_bounded_in_bytes_and_count() {
        let (inbox, mut rx) = inbox();
        let big = |n| ChannelMessage::Gossip {
            src: PeerName(1),
            payload: vec![0; n],
        };
        // 4 MiB payloads: four fit, the fifth would pass the byte bound.
        for _ in 0..4 {
            assert!(inbox.offer("IPallocation".into(), big(4 << 20), None));
        }
        assert!(!inbox.offer("IPallocation".into(), big(4 << 20), None));
        assert_eq!(inbox.bytes.load(Ordering::Acquire), MAX_QUEUED_BYTES);
        // Taking one out makes room again.
        rx.recv().await.unwrap();
        assert!(inbox.offer("IPallocation".into(), big(4 << 20), None));
        // Small messages are bounded in count.
        for _ in 0..4 {
            rx.recv().await.unwrap();
        }
        assert_eq!(inbox.bytes.load(Ordering::Acquire), 0);
        let accepted = (0..MAX_QUEUED_MESSAGES + 10)
            .filter(|_| inbox.offer("IPallocation".into(), big(1), None))
            .count();
        assert_eq!(accepted, MAX_QUEUED_MESSAGES);
        assert_eq!(inbox.bytes.load(Ordering::Acquire), MAX_QUEUED_MESSAGES);
    }

    #[test]
    fn messages_go_to_the_owner_of_their_channel() {
        let mut links = Links::default();
        let mut a = links.add(|c| c == "a", |_| Ok(()));
        let mut b = links.add(|c| c == "b", |_| Ok(()));
        let m = || ChannelMessage::Unicast {
            src: PeerName(1),
            payload: vec![1],
        };
        links.deliver("b".into(), m(), None);
        links.deliver("zz".into(), m(), None);
        assert!(a.messages.rx.try_recv().is_err());
        assert_eq!(b.messages.rx.try_recv().unwrap().channel, "b");
        assert!(b.messages.rx.try_recv().is_err());
    }
}
