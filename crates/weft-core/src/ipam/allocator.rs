//! The IPAM allocator as a sans-IO state machine (Weave's `ipam.Allocator` without its actor
//! goroutine): the ring, our space, consensus, the addresses each container holds, and the
//! requests waiting for space.
//!
//! The driver (one IPAM task) owns the clock, the mesh channel and the database. It calls
//! * the request methods — [`Allocator::allocate`], [`Allocator::claim`], [`Allocator::prime`]
//!   with a caller-chosen [`RequestId`], answered by an [`Output::Reply`] now or later;
//!   [`Allocator::free`], [`Allocator::delete`], [`Allocator::lookup`],
//!   [`Allocator::admin_takeover`] (`rmpeer`) and [`Allocator::shutdown`] (`reset`) answer at
//!   once; [`Allocator::cancel`] drops a waiting request (client gone, container not alive);
//! * container events — [`Allocator::container_died`], `_started`, `_destroyed`,
//!   [`Allocator::prune_owned`];
//! * what the IPAM gossip channel received — [`Allocator::handle_gossip`] (periodic gossip, no
//!   sender, or a broadcast, with its sender) and [`Allocator::handle_unicast`] — and what
//!   weft's delta channel received, [`Allocator::handle_delta`];
//! * the mesh's view of peers — [`Allocator::set_known_peers`] (peers the router knows and can
//!   unicast to), [`Allocator::set_delta_peers`] (those that take ring deltas) and
//!   [`Allocator::set_direct_targets`] (for the default quorum);
//! * time — [`Allocator::handle_timeout`] at [`Allocator::poll_timeout`], every 5 s, which
//!   retries waiting requests and consensus as Weave does, and frees addresses of containers
//!   dead for 30 s;
//!
//! then drains [`Allocator::poll_output`]: broadcasts and unicasts for the channel, replies to
//! requests, and [`PersistRecord`]s. Records come out before the messages and replies that
//! depend on them (a donation is written down before anyone hears of it), so the driver must
//! write them in order before sending what follows. For periodic gossip it asks
//! [`Allocator::gossip_state`], which is always the current state (Weave encodes at send time).
//!
//! The gossip types here are weft's own; Weave's gob payloads (`gossipState`, `Ring`, Paxos
//! `GossipState`, the unicast kind byte with an `address.Range`) convert to and from them at
//! the channel adapter. The wire's `Now` timestamp is informational and is added there.
//!
//! Ring changes between weft peers: when every peer the router knows takes deltas, a change
//! this peer makes to the ring (a donation, `rmpeer`, `reset`) goes out as an
//! [`Output::BroadcastDelta`] of the entries it touched instead of the whole state, so it costs
//! each peer a few entries rather than the whole ring. With any other peer about (a Weave Net
//! router) it goes out whole, as Weave's does. Periodic gossip always carries the whole state,
//! and a delta that does not fit the receiver's ring ([`DeltaOutcome::Gap`]) is answered by
//! asking its sender for the whole state (a ring-less [`UnicastMsg::RingUpdate`], which any
//! peer with a ring answers with its own), so nothing depends on deltas arriving.
//!
//! Where weft deliberately differs from Weave Net: a received ring or Paxos state is validated
//! in full first and an error leaves everything unchanged (Weave merged nicknames first); free
//! space the ring no longer gives us is dropped from our space instead of the invariant check
//! panicking; and the space request for an allocation goes to the first donor the mesh can
//! reach, judged from the known-peer set instead of from a failed send.
//!
//! Automatic reclaim of a dead peer's space (Kubernetes' reclaim daemon, or a future
//! in-router policy) needs no new data: it is [`Allocator::admin_takeover`] — a
//! [`Ring::transfer`] whose +100 version wins over anything the dead peer could still say —
//! decided by a rule every survivor evaluates alike. The inputs it would use are here already:
//! the ring's owners ([`Ring::owned_sizes`]), the known-peer set, and the nicknames map (which
//! keeps peers that left while they still own ranges); a policy would add a per-peer "last
//! seen" instant fed by [`Allocator::set_known_peers`] and pick the lowest-named live peer as
//! the one to take over after a grace period, so two survivors never both claim a range.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::SeedableRng;
use weft_types::Ipv4Cidr;
use weft_wire::PeerName;

use super::paxos::{self, Node, NodeId, Participant};
use super::ring::{self, DeltaOutcome, Entry, Ring, RingDelta, RingError, RingSnapshot};
use super::space::{Space, SpaceError};
use super::{Address, CidrBlock, Range};

/// How often waiting requests and consensus are retried.
pub const TICK_INTERVAL: Duration = Duration::from_secs(5);
/// How long after a container died its addresses are freed, unless it starts again.
pub const CONTAINER_DIED_TIMEOUT: Duration = Duration::from_secs(30);
/// Attempts at a claim whose owner cannot be reached before it fails.
pub const MAX_CLAIM_TRIES: u32 = 5;
/// The ident for "no container" (`_`): the address is filed under its own text.
pub const NO_CONTAINER_ID: &str = "_";
/// Nicknames a received gossip state may carry.
pub const MAX_NICKNAMES: usize = paxos::MAX_NODES;

/// How the ring comes to exist (`--ipalloc-init`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InitMode {
    /// `consensus[=N]`: Paxos among electors; quorum N/2+1, or from the direct targets.
    Consensus {
        /// N, the initial peer count, if given.
        peer_count: Option<u32>,
    },
    /// `seed=a,b,…`: the ring is split among these peers at once.
    Seed(Vec<PeerName>),
    /// `observer`: never votes; gets the ring from others.
    Observer,
}

/// An address found in use before IPAM started (on the bridge or a container), claimed first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreClaim {
    /// Container ID, `weave:expose` or [`NO_CONTAINER_ID`].
    pub ident: String,
    /// Whether `ident` is a container ID.
    pub is_container: bool,
    /// The address with its prefix.
    pub cidr: Ipv4Cidr,
}

/// Everything the allocator is started with.
#[derive(Debug, Clone)]
pub struct Config {
    /// Our peer name.
    pub name: PeerName,
    /// Our incarnation (the mesh's peer UID); Paxos votes under it.
    pub uid: u64,
    /// Our nickname (host name).
    pub nickname: String,
    /// `--ipalloc-range`.
    pub universe: Ipv4Cidr,
    /// `--ipalloc-init`.
    pub mode: InitMode,
    /// Addresses already in use.
    pub pre_claims: Vec<PreClaim>,
    /// Seed for the random choices (which peer to ask for space).
    pub rng_seed: u64,
}

/// The addresses one ident holds (Weave's persisted `ownedData`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct OwnedData {
    /// Whether the ident is a container ID (then Docker events and pruning apply).
    pub is_container: bool,
    /// Its addresses, each with the prefix of the subnet it came from.
    pub cidrs: Vec<Ipv4Cidr>,
}

/// What was persisted, as loaded at start.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Persisted {
    /// The `peername` record.
    pub peer: Option<PeerName>,
    /// The `ring` record.
    pub ring: Option<RingSnapshot>,
    /// The `ownedAddresses` record.
    pub owned: Option<BTreeMap<String, OwnedData>>,
}

/// A record to write (Weave's BoltDB keys).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PersistRecord {
    /// `peername` then `ring`.
    Ring {
        /// Our name.
        peer: PeerName,
        /// The ring.
        ring: RingSnapshot,
    },
    /// `ownedAddresses`.
    Owned(BTreeMap<String, OwnedData>),
}

/// The IPAM gossip state (Weave's `gossipState` without its informational `Now`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct GossipState {
    /// Peer nicknames, so `rmpeer` can name peers that left.
    pub nicknames: BTreeMap<PeerName, String>,
    /// Paxos state, from an elector while it has no ring; `None` from observers and peers
    /// with a ring (an empty map is not the same as none).
    pub paxos: Option<paxos::GossipState>,
    /// The ring, once it has entries.
    pub ring: Option<RingSnapshot>,
}

/// A ring change as weft peers send it to each other: the entries it touched, and the
/// nicknames of the peers they name.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct GossipDelta {
    /// The changed entries.
    pub ring: RingDelta,
    /// Nicknames of peers the entries name, where known.
    pub nicknames: BTreeMap<PeerName, String>,
}

/// A unicast on the IPAM channel (the kind byte on the wire: 0, 1, 2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UnicastMsg {
    /// 0: please give me space in this range.
    SpaceRequest(Range),
    /// 1: my state, in answer to a request or a ring-less broadcast.
    RingUpdate(GossipState),
    /// 2: I have nothing free in this range.
    SpaceRequestDenied(Range),
}

/// Identifies a request in its reply; chosen by the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RequestId(pub u64);

/// A successful reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// The address given, with the subnet's prefix.
    Allocated(Ipv4Cidr),
    /// The claim holds (or, with `no_error_on_unknown`, will be tried on).
    Claimed,
    /// The ring exists.
    Primed,
}

/// What the allocator asks the driver to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// Broadcast this state on the IPAM channel.
    Broadcast(GossipState),
    /// Broadcast this ring change on weft's delta channel (only when every known peer takes
    /// deltas).
    BroadcastDelta(GossipDelta),
    /// Send this to one peer.
    Unicast {
        /// The peer.
        dst: PeerName,
        /// The message.
        msg: UnicastMsg,
    },
    /// Answer a request.
    Reply {
        /// The request.
        id: RequestId,
        /// Its outcome.
        result: Result<Reply, AllocError>,
    },
    /// Write a record (before acting on any output that follows it).
    Persist(PersistRecord),
}

/// Why a request failed; messages are Weave Net's, as the HTTP API returns them.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AllocError {
    /// The subnet does not overlap the universe.
    #[error("range {subnet} out of bounds: {universe}")]
    OutOfBounds {
        /// Requested subnet.
        subnet: Ipv4Cidr,
        /// `--ipalloc-range`.
        universe: Ipv4Cidr,
    },
    /// Cancelled (client gone, container died, shutdown).
    #[error("{kind} request for {ident} cancelled")]
    Cancelled {
        /// `Allocate`, `Claim` or `Prime`.
        kind: &'static str,
        /// The ident.
        ident: String,
    },
    /// Outside the universe, held by another live ident.
    #[error("address {addr} already in use by {owner}")]
    InUseBy {
        /// The address.
        addr: Ipv4Cidr,
        /// Its holder.
        owner: String,
    },
    /// Held anonymously, claimed by a container.
    #[error("address {0} already in use")]
    InUse(Ipv4Cidr),
    /// Held by another container here.
    #[error("address {addr} is already owned by {owner}")]
    OwnedBy {
        /// The address.
        addr: Ipv4Cidr,
        /// Its holder.
        owner: String,
    },
    /// Owned by another peer that would not (or could not) give it.
    #[error("address {addr} is owned by other peer {peer}{}{}", .nickname.as_ref().map(|n| format!(" ({n})")).unwrap_or_default(), .reason.as_ref().map(|r| format!(" - {r}")).unwrap_or_default())]
    OwnedByPeer {
        /// The address.
        addr: Ipv4Cidr,
        /// Its owner.
        peer: PeerName,
        /// The owner's nickname, if known.
        nickname: Option<String>,
        /// Why it could not be asked.
        reason: Option<String>,
    },
    /// The space refused.
    #[error(transparent)]
    Space(#[from] SpaceError),
    /// `DELETE /ip/{id}` for an ident with nothing.
    #[error("Delete: no addresses for {0}")]
    NoAddresses(String),
    /// `DELETE /ip/{id}/{ip}` for an address the ident does not hold.
    #[error("Free: address {addr} not found for {ident}")]
    NotFound {
        /// The address.
        addr: Address,
        /// The ident.
        ident: String,
    },
}

/// Why a received gossip state was refused; the connection it came on is closed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum GossipError {
    /// The ring was invalid or clashed with ours.
    #[error(transparent)]
    Ring(RingError),
    /// The Paxos state was impossible.
    #[error(transparent)]
    Paxos(#[from] paxos::PaxosError),
    /// Seeded by other peers.
    #[error(
        "IP allocation was seeded by different peers (received: {received:?}, ours: {ours:?})"
    )]
    DifferentSeeds {
        /// Their seeds, annotated with nicknames.
        received: Vec<String>,
        /// Ours.
        ours: Vec<String>,
    },
    /// Another universe.
    #[error("Incompatible IP allocation ranges (received: {received}, ours: {ours})")]
    DifferentRange {
        /// Theirs.
        received: String,
        /// Ours.
        ours: Ipv4Cidr,
    },
    /// Too many nicknames.
    #[error("IPAM gossip carries {0} nicknames, more than {MAX_NICKNAMES}")]
    TooManyNicknames(usize),
}

/// The allocator's state for `weave status` (Weave's status strings).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Readiness {
    /// The ring exists and nothing waits.
    Ready,
    /// Requests wait for space.
    WaitingForSpace,
    /// Every range is owned by peers the router does not know.
    AllOwnersUnreachable,
    /// An elector waiting for Paxos.
    AwaitingConsensus {
        /// Quorum.
        quorum: u32,
        /// Nodes known.
        known: usize,
    },
    /// An observer waiting for a ring.
    Priming,
    /// Nothing asked for a ring yet.
    Idle,
}

impl std::fmt::Display for Readiness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Ready => f.write_str("ready"),
            Self::WaitingForSpace => f.write_str("waiting for IP(s) to become available"),
            Self::AllOwnersUnreachable => f.write_str(
                "all IP ranges owned by unreachable peers - use 'rmpeer' if they are dead",
            ),
            Self::AwaitingConsensus { quorum, known } => {
                write!(f, "awaiting consensus (quorum: {quorum}, known: {known})")
            }
            Self::Priming => f.write_str("priming"),
            Self::Idle => f.write_str("idle"),
        }
    }
}

#[derive(Debug, Clone)]
struct AllocateOp {
    id: RequestId,
    ident: String,
    subnet: Ipv4Cidr,
    is_container: bool,
}

#[derive(Debug, Clone)]
struct ClaimOp {
    /// `None` once answered (with `no_error_on_unknown` it is answered early and kept trying).
    id: Option<RequestId>,
    ident: String,
    cidr: Ipv4Cidr,
    is_container: bool,
    no_error_on_unknown: bool,
    tries: u32,
}

/// A received universe as Weave Net prints it: as a CIDR when it is one.
fn range_text(r: Range) -> String {
    let size = u64::from(r.end.0.wrapping_sub(r.start.0));
    let size = if size == 0 { 1 << 32 } else { size };
    match u8::try_from(size.trailing_zeros()) {
        Ok(bits) if size.is_power_of_two() && u64::from(r.start.0) % size == 0 => {
            format!("{}/{}", r.start, 32 - bits)
        }
        _ => format!("{r:?}"),
    }
}

/// Our IPAM state machine. See the module documentation for how to drive it.
#[derive(Debug)]
pub struct Allocator {
    name: PeerName,
    universe: Ipv4Cidr,
    mode: InitMode,
    ring: Ring,
    space: Space,
    owned: BTreeMap<String, OwnedData>,
    nicknames: BTreeMap<PeerName, String>,
    pending_allocates: Vec<AllocateOp>,
    pending_claims: Vec<ClaimOp>,
    pending_primes: Vec<RequestId>,
    dead: BTreeMap<String, Instant>,
    /// `None` once the ring exists.
    paxos: Option<Participant>,
    awaiting_consensus: bool,
    shutting_down: bool,
    known_peers: BTreeSet<PeerName>,
    /// Peers that take ring deltas.
    delta_peers: BTreeSet<PeerName>,
    direct_targets: u32,
    next_tick: Instant,
    rng: StdRng,
    ring_dirty: bool,
    owned_dirty: bool,
    outputs: VecDeque<Output>,
}

impl Allocator {
    /// Starts the allocator (Weave's `NewAllocator` + `Start`): persisted data wins if it is
    /// ours and for this universe, else a seed creates the ring at once, else consensus waits
    /// until something needs a ring. Returns `None` if the universe is unusable (empty or
    /// ending at 2^32; [`parse_subnet`](super::parse_subnet) refuses those).
    pub fn new(config: Config, persisted: Option<Persisted>, now: Instant) -> Option<Self> {
        let universe_range = config.universe.range();
        let ring = Ring::new(universe_range, config.name)?;
        let paxos = match config.mode {
            InitMode::Observer => Participant::Observer,
            _ => Participant::Elector(Node::new(NodeId {
                name: config.name,
                uid: config.uid,
            })),
        };
        let mut alloc = Self {
            name: config.name,
            universe: config.universe,
            mode: config.mode.clone(),
            ring,
            space: Space::new(),
            owned: BTreeMap::new(),
            nicknames: BTreeMap::from([(config.name, config.nickname)]),
            pending_allocates: Vec::new(),
            pending_claims: config
                .pre_claims
                .into_iter()
                .map(|c| ClaimOp {
                    id: None,
                    ident: c.ident,
                    cidr: c.cidr,
                    is_container: c.is_container,
                    no_error_on_unknown: false,
                    tries: 0,
                })
                .collect(),
            pending_primes: Vec::new(),
            dead: BTreeMap::new(),
            paxos: Some(paxos),
            awaiting_consensus: false,
            shutting_down: false,
            known_peers: BTreeSet::new(),
            delta_peers: BTreeSet::new(),
            direct_targets: 0,
            next_tick: now + TICK_INTERVAL,
            rng: StdRng::seed_from_u64(config.rng_seed),
            ring_dirty: false,
            owned_dirty: false,
            outputs: VecDeque::new(),
        };
        let loaded = alloc.load(persisted);
        match (&alloc.mode, loaded) {
            (InitMode::Seed(seed), false) if !seed.is_empty() => {
                let seed = seed.clone();
                alloc.create_ring(&seed);
            }
            (InitMode::Seed(_), true) => {
                tracing::info!("Found persisted IPAM data, ignoring supplied IPAM seed");
            }
            _ => {}
        }
        if loaded {
            alloc.try_claims();
        }
        alloc.finish();
        Some(alloc)
    }

    /// Applies persisted data if valid for us; otherwise schedules it to be overwritten.
    fn load(&mut self, persisted: Option<Persisted>) -> bool {
        let p = persisted.unwrap_or_default();
        let reason = match (&p.peer, &p.ring) {
            (Some(peer), Some(ring)) if !ring.entries.is_empty() => {
                if *peer != self.name {
                    Some(format!("Deleting persisted data for peername {peer}"))
                } else if Range::new(ring.start, ring.end) != self.universe.range() {
                    Some(format!(
                        "Deleting persisted data for IPAM range {:?}; our range is {}",
                        Range::new(ring.start, ring.end),
                        self.universe
                    ))
                } else {
                    None
                }
            }
            _ => Some("No valid persisted data".to_owned()),
        };
        let restored = match (reason, p.ring) {
            (None, Some(snapshot)) => Ring::restore(snapshot, self.name)
                .map_err(|e| format!("Deleting invalid persisted IPAM data: {e}")),
            (Some(reason), _) => Err(reason),
            (None, None) => Err("No valid persisted data".to_owned()),
        };
        match restored {
            Ok(ring) => {
                tracing::info!("Initialising with persisted data");
                self.ring = ring;
                self.space.update_ranges(&self.ring.owned_ranges());
                if let Some(owned) = p.owned {
                    self.owned = owned;
                    for d in self.owned.values() {
                        for c in &d.cidrs {
                            // Addresses outside our ranges (claimed outside the universe, or
                            // given away) have nothing to mark.
                            let _ = self.space.claim(c.addr().into());
                        }
                    }
                }
                true
            }
            Err(reason) => {
                tracing::info!("{reason}");
                self.ring_dirty = true;
                self.owned_dirty = true;
                false
            }
        }
    }

    // ---- inputs -------------------------------------------------------------------------

    /// `POST /ip/{id}[/{subnet}]`: an address for `ident` in `subnet`, answered by a
    /// [`Reply::Allocated`] now or once space arrives.
    pub fn allocate(&mut self, id: RequestId, ident: &str, subnet: Ipv4Cidr, is_container: bool) {
        let op = AllocateOp {
            id,
            ident: ident.to_owned(),
            subnet,
            is_container,
        };
        if self.shutting_down {
            self.reply(id, Err(cancelled("Allocate", ident)));
        } else if !self.try_allocate(&op) {
            self.pending_allocates.push(op);
        }
        self.finish();
    }

    /// `PUT /ip/{id}/{ip}/{prefix}`: claim one address for `ident`.
    pub fn claim(
        &mut self,
        id: RequestId,
        ident: &str,
        cidr: Ipv4Cidr,
        is_container: bool,
        no_error_on_unknown: bool,
    ) {
        let mut op = ClaimOp {
            id: Some(id),
            ident: ident.to_owned(),
            cidr,
            is_container,
            no_error_on_unknown,
            tries: 0,
        };
        if self.shutting_down {
            self.reply(id, Err(cancelled("Claim", ident)));
        } else if !self.try_claim(&mut op) {
            self.pending_claims.push(op);
        }
        self.finish();
    }

    /// `GET /ring`: answered with [`Reply::Primed`] once the ring exists (starting consensus if
    /// needed).
    pub fn prime(&mut self, id: RequestId) {
        if self.shutting_down {
            self.reply(id, Err(cancelled("Prime", "")));
        } else if !self.try_prime(id) {
            self.pending_primes.push(id);
        }
        self.finish();
    }

    /// Drops a waiting request, answering it "cancelled"; false if it was not waiting.
    pub fn cancel(&mut self, id: RequestId) -> bool {
        let mut found = false;
        if let Some(i) = self.pending_allocates.iter().position(|o| o.id == id) {
            let op = self.pending_allocates.remove(i);
            self.reply(id, Err(cancelled("Allocate", &op.ident)));
            found = true;
        }
        if let Some(i) = self.pending_claims.iter().position(|o| o.id == Some(id)) {
            let op = self.pending_claims.remove(i);
            self.reply(id, Err(cancelled("Claim", &op.ident)));
            found = true;
        }
        if let Some(i) = self.pending_primes.iter().position(|&p| p == id) {
            self.pending_primes.remove(i);
            self.reply(id, Err(cancelled("Prime", "")));
            found = true;
        }
        self.finish();
        found
    }

    /// The addresses `ident` holds inside `range` (`GET /ip/{id}`).
    pub fn lookup(&self, ident: &str, range: Range) -> Vec<Ipv4Cidr> {
        self.owned_in(ident, range)
    }

    /// Everything held, by ident (`GET /ip`).
    pub fn owned(&self) -> &BTreeMap<String, OwnedData> {
        &self.owned
    }

    /// `DELETE /ip/{id}`: frees all of `ident`'s addresses.
    pub fn delete(&mut self, ident: &str) -> Result<(), AllocError> {
        let r = self.delete_inner(ident);
        self.finish();
        r
    }

    fn delete_inner(&mut self, ident: &str) -> Result<(), AllocError> {
        let Some(d) = self.owned.remove(ident) else {
            return Err(AllocError::NoAddresses(ident.to_owned()));
        };
        self.owned_dirty = true;
        for c in d.cidrs {
            let _ = self.space.free(c.addr().into());
        }
        Ok(())
    }

    /// `DELETE /ip/{id}/{ip}`: frees one address.
    pub fn free(&mut self, ident: &str, addr: Address) -> Result<(), AllocError> {
        let r = if self.remove_owned(ident, addr) {
            let _ = self.space.free(addr);
            Ok(())
        } else {
            Err(AllocError::NotFound {
                addr,
                ident: ident.to_owned(),
            })
        };
        self.finish();
        r
    }

    /// Docker `die`: the container's addresses are freed after [`CONTAINER_DIED_TIMEOUT`]
    /// unless it starts again; its waiting requests are cancelled.
    pub fn container_died(&mut self, ident: &str, now: Instant) {
        if self.owned.get(ident).is_some_and(|d| d.is_container) {
            self.dead.insert(ident.to_owned(), now);
        }
        self.cancel_ops_for(ident);
        self.finish();
    }

    /// Docker `start`: a dead mark is lifted.
    pub fn container_started(&mut self, ident: &str) {
        self.dead.remove(ident);
    }

    /// Docker `destroy`: the container's addresses are freed at once.
    pub fn container_destroyed(&mut self, ident: &str) {
        if self.owned.get(ident).is_some_and(|d| d.is_container) {
            let _ = self.delete_inner(ident);
            self.dead.remove(ident);
        }
        self.finish();
    }

    /// At start: frees the addresses of containers not in `running`.
    pub fn prune_owned(&mut self, running: &BTreeSet<String>) {
        let gone: Vec<String> = self
            .owned
            .iter()
            .filter(|(id, d)| d.is_container && !running.contains(*id))
            .map(|(id, _)| id.clone())
            .collect();
        for id in gone {
            let _ = self.delete_inner(&id);
        }
        self.finish();
    }

    /// The peers the router knows (and can unicast to) changed.
    pub fn set_known_peers(&mut self, peers: BTreeSet<PeerName>) {
        self.known_peers = peers;
    }

    /// The peers that take ring deltas (weft peers that offered them): ring changes go out as
    /// deltas while every other known peer is among them.
    pub fn set_delta_peers(&mut self, peers: BTreeSet<PeerName>) {
        self.delta_peers = peers;
    }

    /// A peer left the topology: its nickname goes unless it still owns ranges.
    pub fn peer_gone(&mut self, peer: PeerName) {
        if !self.ring.peer_names().contains(&peer) {
            self.nicknames.remove(&peer);
        }
    }

    /// Number of active direct connection targets, for the default quorum.
    pub fn set_direct_targets(&mut self, n: u32) {
        self.direct_targets = n;
    }

    /// `rmpeer`: takes over every range of the peer named (by nickname, then peer name) and
    /// returns how many addresses we gained. Refuses ourselves and unknown peers (0).
    pub fn admin_takeover(&mut self, name_or_nickname: &str) -> u64 {
        let peer = self
            .nicknames
            .iter()
            .find(|(_, n)| n.as_str() == name_or_nickname)
            .map(|(p, _)| *p)
            .or_else(|| name_or_nickname.parse().ok());
        let Some(peer) = peer else {
            tracing::warn!("attempt to take over range from unknown peer '{name_or_nickname}'");
            return 0;
        };
        if peer == self.name {
            tracing::warn!("attempt to take over range from ourself");
            return 0;
        }
        let entries_before = self.ring.entries().to_vec();
        if self.ring.transfer(peer, self.name).is_empty() {
            return 0;
        }
        let before = self.space.num_free();
        self.ring_updated();
        let gained = self.space.num_free().saturating_sub(before);
        let _ = self.broadcast_change(&entries_before);
        self.finish();
        gained
    }

    /// `DELETE /peer` (`weave reset`): cancels everything waiting, hands all our ranges to an
    /// heir and forgets our space.
    pub fn shutdown(&mut self) {
        self.shutting_down = true;
        for op in std::mem::take(&mut self.pending_claims) {
            if let Some(id) = op.id {
                self.reply(id, Err(cancelled("Claim", &op.ident)));
            }
        }
        for op in std::mem::take(&mut self.pending_allocates) {
            self.reply(op.id, Err(cancelled("Allocate", &op.ident)));
        }
        for id in std::mem::take(&mut self.pending_primes) {
            self.reply(id, Err(cancelled("Prime", "")));
        }
        let heir = self.pick_heir();
        let before = self.ring.entries().to_vec();
        self.ring
            .transfer(self.name, heir.unwrap_or(PeerName::UNKNOWN));
        self.space.clear();
        if heir.is_some() {
            self.ring_dirty = true;
            let _ = self.broadcast_change(&before);
        }
        self.finish();
    }

    fn pick_heir(&self) -> Option<PeerName> {
        let known = |p: PeerName| self.known_peers.contains(&p);
        let from_nicknames = |valid: &dyn Fn(PeerName) -> bool| {
            self.nicknames
                .keys()
                .copied()
                .find(|&p| p != self.name && valid(p))
        };
        self.ring
            .pick_peer_for_transfer(&known)
            .or_else(|| from_nicknames(&known))
            .or_else(|| self.ring.pick_peer_for_transfer(&|_| true))
            .or_else(|| from_nicknames(&|_| true))
    }

    /// Periodic gossip (`sender` `None`) or a broadcast from `sender`, decoded.
    pub fn handle_gossip(
        &mut self,
        sender: Option<PeerName>,
        state: GossipState,
    ) -> Result<(), GossipError> {
        let r = self.update(sender, state);
        self.finish();
        r
    }

    /// A ring delta from `sender` (weft's delta channel), decoded. One that does not fit our
    /// ring changes nothing and asks `sender` for its whole state; an invalid one is refused
    /// as an invalid ring is.
    pub fn handle_delta(
        &mut self,
        sender: PeerName,
        delta: GossipDelta,
    ) -> Result<(), GossipError> {
        let r = self.update_delta(sender, delta);
        self.finish();
        r
    }

    /// A unicast from `sender`, decoded.
    pub fn handle_unicast(&mut self, sender: PeerName, msg: UnicastMsg) -> Result<(), GossipError> {
        let r = match msg {
            UnicastMsg::SpaceRequest(r) => {
                // Without a ring there is nothing to give; they will ask again.
                if !self.ring.is_empty() {
                    self.donate_space(r, sender);
                }
                Ok(())
            }
            UnicastMsg::SpaceRequestDenied(r) => {
                self.space_request_denied(sender, r);
                Ok(())
            }
            UnicastMsg::RingUpdate(state) => self.update(Some(sender), state),
        };
        self.finish();
        r
    }

    /// When to call [`Allocator::handle_timeout`] next.
    pub fn poll_timeout(&self) -> Instant {
        self.next_tick
    }

    /// The 5 s tick: re-proposes while awaiting consensus, else retries waiting requests
    /// (starting consensus if they need a ring), and frees addresses of long-dead containers.
    pub fn handle_timeout(&mut self, now: Instant) {
        if now < self.next_tick {
            return;
        }
        self.next_tick = now + TICK_INTERVAL;
        if self.awaiting_consensus {
            self.propose();
        } else if self.has_pending_ops() {
            if self.ring.is_empty() {
                self.establish_ring();
            } else {
                self.try_pending_ops();
            }
        }
        let dead: Vec<String> = self
            .dead
            .iter()
            .filter(|(_, &t)| now.saturating_duration_since(t) > CONTAINER_DIED_TIMEOUT)
            .map(|(id, _)| id.clone())
            .collect();
        for id in dead {
            let _ = self.delete_inner(&id);
            self.dead.remove(&id);
        }
        self.finish();
    }

    /// The next thing to do, in order.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    // ---- queries ------------------------------------------------------------------------

    /// Our full gossip state, as periodic gossip and broadcasts carry it.
    pub fn gossip_state(&self) -> GossipState {
        let mut s = GossipState {
            nicknames: self.nicknames.clone(),
            paxos: None,
            ring: None,
        };
        if self.ring.is_empty() {
            if let Some(Participant::Elector(node)) = &self.paxos {
                s.paxos = Some(node.gossip_state().clone());
            }
        } else {
            s.ring = Some(self.ring.snapshot());
        }
        s
    }

    /// The ring.
    pub fn ring(&self) -> &Ring {
        &self.ring
    }

    /// Our space.
    pub fn space(&self) -> &Space {
        &self.space
    }

    /// Our name.
    pub fn name(&self) -> PeerName {
        self.name
    }

    /// `--ipalloc-range`.
    pub fn universe(&self) -> Ipv4Cidr {
        self.universe
    }

    /// Known nicknames.
    pub fn nicknames(&self) -> &BTreeMap<PeerName, String> {
        &self.nicknames
    }

    /// Waiting requests: allocations and claims.
    pub fn pending(&self) -> (usize, usize) {
        (self.pending_allocates.len(), self.pending_claims.len())
    }

    /// Waiting requests as the report lists them: claims (ident, address), and allocations
    /// as `ident subnet`.
    pub fn pending_ops(&self) -> (Vec<(String, Ipv4Cidr)>, Vec<String>) {
        (
            self.pending_claims
                .iter()
                .map(|c| (c.ident.clone(), c.cidr))
                .collect(),
            self.pending_allocates
                .iter()
                .map(|a| format!("{} {}", a.ident, a.subnet))
                .collect(),
        )
    }

    /// The status line's state.
    pub fn readiness(&self) -> Readiness {
        if !self.ring.is_empty() {
            let owners = self.ring.peer_names();
            if !owners
                .iter()
                .any(|p| *p == self.name || self.known_peers.contains(p))
            {
                Readiness::AllOwnersUnreachable
            } else if self.has_pending_ops() {
                Readiness::WaitingForSpace
            } else {
                Readiness::Ready
            }
        } else if self.awaiting_consensus {
            match &self.paxos {
                Some(Participant::Elector(node)) => Readiness::AwaitingConsensus {
                    quorum: node.quorum(),
                    known: node.known_nodes(),
                },
                _ => Readiness::Priming,
            }
        } else {
            Readiness::Idle
        }
    }

    /// Whether our space and the ring agree on what we own (for tests and debugging).
    pub fn check_invariants(&self) -> bool {
        let mut from_ring = Space::new();
        for r in self.ring.owned_ranges() {
            from_ring.add(r);
        }
        from_ring.owned_ranges() == self.space.owned_ranges()
    }

    // ---- internals ----------------------------------------------------------------------

    fn reply(&mut self, id: RequestId, result: Result<Reply, AllocError>) {
        self.flush_persist();
        self.outputs.push_back(Output::Reply { id, result });
    }

    fn send(&mut self, dst: PeerName, msg: UnicastMsg) {
        self.flush_persist();
        self.outputs.push_back(Output::Unicast { dst, msg });
    }

    fn broadcast(&mut self) {
        self.flush_persist();
        let s = self.gossip_state();
        self.outputs.push_back(Output::Broadcast(s));
    }

    /// Announces a change of our ring from `before`: as a delta when every other known peer
    /// takes them, else (or when the change is too large for one) as the whole state. Returns
    /// whether it went as a delta.
    fn broadcast_change(&mut self, before: &[Entry]) -> bool {
        let all_take_deltas = self
            .known_peers
            .iter()
            .filter(|&&p| p != self.name)
            .all(|p| self.delta_peers.contains(p));
        let delta = if all_take_deltas && !before.is_empty() {
            self.ring.delta_since(before)
        } else {
            None
        };
        let Some(ring) = delta else {
            self.broadcast();
            return false;
        };
        self.flush_persist();
        let named: BTreeSet<PeerName> = ring.entries.iter().map(|d| d.entry.peer).collect();
        let nicknames = self
            .nicknames
            .iter()
            .filter(|(p, _)| named.contains(p))
            .map(|(p, n)| (*p, n.clone()))
            .collect();
        self.outputs
            .push_back(Output::BroadcastDelta(GossipDelta { ring, nicknames }));
        true
    }

    fn flush_persist(&mut self) {
        if std::mem::take(&mut self.ring_dirty) {
            let ring = self.ring.snapshot();
            self.outputs.push_back(Output::Persist(PersistRecord::Ring {
                peer: self.name,
                ring,
            }));
        }
        if std::mem::take(&mut self.owned_dirty) {
            self.outputs
                .push_back(Output::Persist(PersistRecord::Owned(self.owned.clone())));
        }
    }

    /// After every input: report our free counts into the ring, write what changed.
    fn finish(&mut self) {
        if !self.ring.owned_ranges().is_empty() {
            let space = &self.space;
            if self.ring.report_free(&|r| space.num_free_in(r)) {
                self.ring_dirty = true;
            }
        }
        self.flush_persist();
    }

    fn has_pending_ops(&self) -> bool {
        !(self.pending_primes.is_empty()
            && self.pending_claims.is_empty()
            && self.pending_allocates.is_empty())
    }

    fn try_pending_ops(&mut self) {
        for id in std::mem::take(&mut self.pending_primes) {
            if !self.try_prime(id) {
                self.pending_primes.push(id);
            }
        }
        // Claims before new allocations.
        self.try_claims();
        let ops = std::mem::take(&mut self.pending_allocates);
        for op in ops {
            if !self.try_allocate(&op) {
                self.pending_allocates.push(op);
            }
        }
    }

    fn try_claims(&mut self) {
        let ops = std::mem::take(&mut self.pending_claims);
        for mut op in ops {
            if !self.try_claim(&mut op) {
                self.pending_claims.push(op);
            }
        }
    }

    fn try_prime(&mut self, id: RequestId) -> bool {
        if !self.ring.is_empty() {
            self.reply(id, Ok(Reply::Primed));
            return true;
        }
        self.establish_ring();
        false
    }

    fn try_allocate(&mut self, op: &AllocateOp) -> bool {
        if let Some(c) = self.owned_in(&op.ident, op.subnet.range()).first().copied() {
            self.dead.remove(&op.ident);
            self.reply(op.id, Ok(Reply::Allocated(c)));
            return true;
        }
        if !self.universe.range().overlaps(op.subnet.range()) {
            let e = AllocError::OutOfBounds {
                subnet: op.subnet,
                universe: self.universe,
            };
            self.reply(op.id, Err(e));
            return true;
        }
        self.establish_ring();
        if let Some(addr) = self.space.allocate(op.subnet.host_range()) {
            let ident = if op.ident == NO_CONTAINER_ID {
                addr.to_string()
            } else {
                op.ident.clone()
            };
            let cidr = op.subnet.with_addr(addr.into());
            self.add_owned(&ident, cidr, op.is_container);
            self.reply(op.id, Ok(Reply::Allocated(cidr)));
            return true;
        }
        // Out of space: ask the first reachable peer, by weighted chance, for some.
        let donors = self
            .ring
            .choose_peers_to_ask(op.subnet.range(), &mut self.rng);
        if let Some(donor) = donors.into_iter().find(|p| self.known_peers.contains(p)) {
            self.send(donor, UnicastMsg::SpaceRequest(op.subnet.range()));
        }
        false
    }

    /// Answers a claim unless already answered (then a failure is only logged).
    fn claim_result(&mut self, op: &mut ClaimOp, result: Result<Reply, AllocError>) {
        match op.id.take() {
            Some(id) => self.reply(id, result),
            None => {
                if let Err(e) = result {
                    tracing::error!("[allocator {}] {e}", self.name);
                }
            }
        }
    }

    fn try_claim(&mut self, op: &mut ClaimOp) -> bool {
        op.tries += 1;
        let addr = Address::from(op.cidr.addr());
        let ident_key = if op.ident == NO_CONTAINER_ID {
            addr.to_string()
        } else {
            op.ident.clone()
        };
        if !self.ring.contains(addr) {
            // Outside the universe: only recorded.
            match self.find_owner(addr) {
                None => self.add_owned(&ident_key, op.cidr, op.is_container),
                Some(prev) if prev == op.ident || op.ident == NO_CONTAINER_ID => {}
                Some(prev) if self.dead.contains_key(&prev) => {
                    self.remove_owned(&prev, addr);
                    self.add_owned(&ident_key, op.cidr, op.is_container);
                }
                Some(prev) => {
                    let e = AllocError::InUseBy {
                        addr: op.cidr,
                        owner: prev,
                    };
                    self.claim_result(op, Err(e));
                }
            }
            self.claim_result(op, Ok(Reply::Claimed));
            return true;
        }
        self.establish_ring();
        self.dead.remove(&op.ident);
        match self.ring.owner(addr) {
            Some(owner) if owner == self.name => {}
            None => {
                tracing::info!(
                    "Claim {} for {}: is in the range {}, but the allocator is not initialized yet; will try later.",
                    op.cidr, op.ident, self.universe
                );
                if op.no_error_on_unknown {
                    self.claim_result(op, Ok(Reply::Claimed));
                }
                return false;
            }
            Some(owner) => {
                if self.known_peers.contains(&owner) {
                    self.send(
                        owner,
                        UnicastMsg::SpaceRequest(Range::new(addr, addr.offset(1))),
                    );
                } else if op.no_error_on_unknown {
                    self.claim_result(op, Ok(Reply::Claimed));
                } else if op.tries > MAX_CLAIM_TRIES {
                    let reason = Some(format!("unknown relay destination: {owner}"));
                    self.denied(op, owner, reason);
                    return true;
                }
                return false;
            }
        }
        let result = match self.find_owner(addr) {
            None => match self.space.claim(addr) {
                Ok(()) => {
                    self.add_owned(&ident_key, op.cidr, op.is_container);
                    Ok(Reply::Claimed)
                }
                Err(e) => Err(e.into()),
            },
            Some(prev) if prev == op.ident || prev == ident_key => Ok(Reply::Claimed),
            Some(prev) if prev == addr.to_string() => Err(AllocError::InUse(op.cidr)),
            Some(_) if op.ident == NO_CONTAINER_ID => Ok(Reply::Claimed),
            Some(prev) => Err(AllocError::OwnedBy {
                addr: op.cidr,
                owner: prev,
            }),
        };
        self.claim_result(op, result);
        true
    }

    fn denied(&mut self, op: &mut ClaimOp, peer: PeerName, reason: Option<String>) {
        let nickname = self.nicknames.get(&peer).cloned();
        let e = AllocError::OwnedByPeer {
            addr: op.cidr,
            peer,
            nickname,
            reason,
        };
        self.claim_result(op, Err(e));
    }

    fn space_request_denied(&mut self, sender: PeerName, r: Range) {
        let ops = std::mem::take(&mut self.pending_claims);
        for mut op in ops {
            if r.contains(op.cidr.addr().into()) {
                self.denied(&mut op, sender, None);
            } else {
                self.pending_claims.push(op);
            }
        }
    }

    fn cancel_ops_for(&mut self, ident: &str) {
        let ops = std::mem::take(&mut self.pending_allocates);
        for op in ops {
            if op.ident == ident {
                self.reply(op.id, Err(cancelled("Allocate", ident)));
            } else {
                self.pending_allocates.push(op);
            }
        }
        let ops = std::mem::take(&mut self.pending_claims);
        for mut op in ops {
            if op.ident == ident {
                self.claim_result(&mut op, Err(cancelled("Claim", ident)));
            } else {
                self.pending_claims.push(op);
            }
        }
    }

    /// Makes progress towards a ring: starts consensus once.
    fn establish_ring(&mut self) {
        if !self.ring.is_empty() || self.awaiting_consensus {
            return;
        }
        self.awaiting_consensus = true;
        let quorum = self.quorum();
        if let Some(Participant::Elector(node)) = &mut self.paxos {
            node.set_quorum(quorum);
            tracing::info!("Assuming quorum size of {quorum}");
        }
        self.propose();
        let value = match &self.paxos {
            Some(Participant::Elector(node)) => node.consensus().map(|v| v.value.clone()),
            _ => None,
        };
        if let Some(value) = value {
            self.create_ring(&value);
        }
    }

    fn quorum(&self) -> u32 {
        let n = match self.mode {
            InitMode::Consensus {
                peer_count: Some(n),
            } => n,
            _ => self.direct_targets.saturating_add(1),
        };
        n / 2 + 1
    }

    fn propose(&mut self) {
        if let Some(Participant::Elector(node)) = &mut self.paxos {
            node.propose();
        }
        self.broadcast();
    }

    fn create_ring(&mut self, peers: &[PeerName]) {
        let mut peers = peers.to_vec();
        peers.sort();
        peers.dedup();
        self.ring.claim_for_peers(&peers);
        self.ring_updated();
        self.broadcast();
    }

    fn ring_updated(&mut self) {
        if self.awaiting_consensus || !self.ring.is_empty() {
            self.awaiting_consensus = false;
            self.paxos = None;
        }
        self.ring_dirty = true;
        let owned = self.ring.owned_ranges();
        self.space.update_ranges(&owned);
        self.space.retain_free_within(&owned);
        self.try_pending_ops();
    }

    fn update(&mut self, sender: Option<PeerName>, data: GossipState) -> Result<(), GossipError> {
        // Everything is checked before anything is changed.
        if data.nicknames.len() > MAX_NICKNAMES {
            return Err(GossipError::TooManyNicknames(data.nicknames.len()));
        }
        if let Some(r) = &data.ring {
            ring::validate(r).map_err(GossipError::Ring)?;
        }
        if let Some(p) = &data.paxos {
            paxos::validate(p)?;
        }
        if let Some(theirs) = data.ring {
            let space = &self.space;
            let merged = self.ring.merge(&theirs, &|r| space.has_allocations(r));
            match merged {
                Ok(updated) => {
                    self.nicknames.extend(data.nicknames);
                    if updated {
                        self.prune_nicknames();
                        self.ring_updated();
                    }
                }
                Err(RingError::DifferentSeeds) => {
                    return Err(GossipError::DifferentSeeds {
                        received: self.annotate(&theirs.seeds),
                        ours: self.annotate(self.ring.seeds()),
                    })
                }
                Err(RingError::DifferentRange) => {
                    return Err(GossipError::DifferentRange {
                        received: range_text(Range::new(theirs.start, theirs.end)),
                        ours: self.universe,
                    })
                }
                Err(e) => return Err(GossipError::Ring(e)),
            }
            return Ok(());
        }
        self.nicknames.extend(data.nicknames);
        if !self.ring.is_empty() {
            // An elector's proposal or an observer's ring request: answer with our ring.
            if let Some(sender) = sender {
                let state = self.gossip_state();
                self.send(sender, UnicastMsg::RingUpdate(state));
            }
        } else if let Some(p) = data.paxos {
            let mut changed = false;
            let mut value = None;
            if let Some(Participant::Elector(node)) = &mut self.paxos {
                if node.update(&p) {
                    changed = node.think();
                    value = node.consensus().map(|v| v.value.clone());
                }
            }
            if changed {
                self.broadcast();
            }
            if let Some(value) = value {
                self.create_ring(&value);
            }
        } else if sender.is_some() && matches!(self.paxos, Some(Participant::Elector(_))) {
            // A ring request from an observer that is trying to allocate.
            self.establish_ring();
        }
        Ok(())
    }

    fn update_delta(&mut self, sender: PeerName, data: GossipDelta) -> Result<(), GossipError> {
        if data.nicknames.len() > MAX_NICKNAMES {
            return Err(GossipError::TooManyNicknames(data.nicknames.len()));
        }
        let space = &self.space;
        match self
            .ring
            .apply_delta(&data.ring, &|r| space.has_allocations(r))
        {
            Ok(DeltaOutcome::Applied(updated)) => {
                self.nicknames.extend(data.nicknames);
                if updated {
                    self.prune_nicknames();
                    self.ring_updated();
                }
                Ok(())
            }
            Ok(DeltaOutcome::Gap) => {
                // A state without a ring is a ring request: the sender answers with its own.
                let ask = GossipState {
                    nicknames: BTreeMap::new(),
                    paxos: None,
                    ring: None,
                };
                self.send(sender, UnicastMsg::RingUpdate(ask));
                Ok(())
            }
            Err(RingError::DifferentRange) => Err(GossipError::DifferentRange {
                received: format!("{:?}", Range::new(data.ring.start, data.ring.end)),
                ours: self.universe,
            }),
            Err(e) => Err(GossipError::Ring(e)),
        }
    }

    fn annotate(&self, names: &[PeerName]) -> Vec<String> {
        names
            .iter()
            .map(|n| match self.nicknames.get(n) {
                Some(nick) => format!("{n}({nick})"),
                None => n.to_string(),
            })
            .collect()
    }

    fn prune_nicknames(&mut self) {
        let ring_peers = self.ring.peer_names();
        let known = &self.known_peers;
        let me = self.name;
        self.nicknames
            .retain(|p, _| *p == me || ring_peers.contains(p) || known.contains(p));
    }

    fn donate_space(&mut self, r: Range, to: PeerName) {
        let Some(chunk) = self.space.donate(r) else {
            return self.send(to, UnicastMsg::SpaceRequestDenied(r));
        };
        let before = self.ring.entries().to_vec();
        match self.ring.grant(chunk, to) {
            Ok(()) => {
                self.ring_dirty = true;
                // A delta reaches the requester too; only the whole state needs repeating to
                // it, as Weave does, since a broadcast may arrive after the unicast.
                if self.broadcast_change(&before) {
                    return;
                }
            }
            Err(e) => {
                // Space and ring disagree: keep the block rather than lose it.
                tracing::error!(
                    "[allocator {}] cannot give {chunk:?} to {to}: {e}",
                    self.name
                );
                self.space.add(chunk);
            }
        }
        let state = self.gossip_state();
        self.send(to, UnicastMsg::RingUpdate(state));
    }

    fn owned_in(&self, ident: &str, range: Range) -> Vec<Ipv4Cidr> {
        self.owned
            .get(ident)
            .map(|d| {
                d.cidrs
                    .iter()
                    .filter(|c| range.contains(c.addr().into()))
                    .copied()
                    .collect()
            })
            .unwrap_or_default()
    }

    fn find_owner(&self, addr: Address) -> Option<String> {
        self.owned
            .iter()
            .find(|(_, d)| d.cidrs.iter().any(|c| Address::from(c.addr()) == addr))
            .map(|(id, _)| id.clone())
    }

    fn add_owned(&mut self, ident: &str, cidr: Ipv4Cidr, is_container: bool) {
        let d = self.owned.entry(ident.to_owned()).or_default();
        d.is_container = is_container;
        d.cidrs.push(cidr);
        self.owned_dirty = true;
    }

    fn remove_owned(&mut self, ident: &str, addr: Address) -> bool {
        let Some(d) = self.owned.get_mut(ident) else {
            return false;
        };
        let Some(i) = d.cidrs.iter().position(|c| Address::from(c.addr()) == addr) else {
            return false;
        };
        d.cidrs.remove(i);
        if d.cidrs.is_empty() {
            self.owned.remove(ident);
        }
        self.owned_dirty = true;
        true
    }
}

fn cancelled(kind: &'static str, ident: &str) -> AllocError {
    AllocError::cancelled(kind, ident)
}

impl AllocError {
    /// A request of `kind` (`Allocate`, `Claim`, `Prime`) for `ident` that was cancelled.
    pub fn cancelled(kind: &'static str, ident: &str) -> Self {
        Self::Cancelled {
            kind,
            ident: ident.to_owned(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ipam::{parse_cidr, parse_subnet};

    const A: PeerName = PeerName(0xa1);
    const B: PeerName = PeerName(0xb2);
    const C: PeerName = PeerName(0xc3);

    fn universe() -> Ipv4Cidr {
        parse_subnet("172.16.16.0/24").unwrap()
    }

    fn seeded(name: PeerName, seed: Vec<PeerName>, rng_seed: u64, now: Instant) -> Allocator {
        let config = Config {
            name,
            uid: name.0,
            nickname: format!("host-{:x}", name.0),
            universe: universe(),
            mode: if seed.is_empty() {
                InitMode::Consensus {
                    peer_count: Some(3),
                }
            } else {
                InitMode::Seed(seed)
            },
            pre_claims: vec![],
            rng_seed,
        };
        Allocator::new(config, None, now).unwrap()
    }

    fn drain(a: &mut Allocator) -> Vec<Output> {
        std::iter::from_fn(|| a.poll_output()).collect()
    }

    fn allocated(outs: &[Output], id: u64) -> Option<String> {
        outs.iter().find_map(|o| match o {
            Output::Reply {
                id: RequestId(i),
                result: Ok(Reply::Allocated(c)),
            } if *i == id => Some(c.to_string()),
            _ => None,
        })
    }

    /// Delivers messages among `peers` until quiet; returns all replies seen.
    fn run(peers: &mut [&mut Allocator]) -> Vec<Output> {
        let mut replies = Vec::new();
        let mut queue: VecDeque<(PeerName, Output)> = VecDeque::new();
        loop {
            for p in peers.iter_mut() {
                let name = p.name();
                queue.extend(drain(p).into_iter().map(|o| (name, o)));
            }
            let Some((src, out)) = queue.pop_front() else {
                break;
            };
            match out {
                Output::Broadcast(s) => {
                    for p in peers.iter_mut().filter(|p| p.name() != src) {
                        p.handle_gossip(Some(src), s.clone()).unwrap();
                    }
                }
                Output::BroadcastDelta(d) => {
                    for p in peers.iter_mut().filter(|p| p.name() != src) {
                        p.handle_delta(src, d.clone()).unwrap();
                    }
                }
                Output::Unicast { dst, msg } => {
                    if let Some(p) = peers.iter_mut().find(|p| p.name() == dst) {
                        p.handle_unicast(src, msg).unwrap();
                    }
                }
                r @ Output::Reply { .. } => replies.push(r),
                Output::Persist(_) => {}
            }
        }
        replies
    }

    /// The worked example (§4.8): two seeds, then a third peer whose first address depends on
    /// which seed donates.
    #[test]
    fn ipam_worked_example_third_peer_gets_224_or_96() {
        let now = Instant::now();
        let subnet = universe();
        let mut seen = BTreeSet::new();
        for rng_seed in 0..16 {
            let mut a = seeded(A, vec![A, B], rng_seed, now);
            let mut b = seeded(B, vec![A, B], rng_seed, now);
            // C is no seed: it joins without a ring and learns it from gossip.
            let mut c = seeded(C, vec![], rng_seed, now);
            assert!(c.ring().is_empty());
            for p in [&mut a, &mut b, &mut c] {
                p.set_known_peers([A, B, C].into());
            }
            a.allocate(RequestId(1), "ca", subnet, true);
            b.allocate(RequestId(2), "cb", subnet, true);
            let ra = run(&mut [&mut a, &mut b, &mut c]);
            assert_eq!(allocated(&ra, 1).as_deref(), Some("172.16.16.1/24"));
            assert_eq!(allocated(&ra, 2).as_deref(), Some("172.16.16.128/24"));
            c.handle_gossip(Some(A), a.gossip_state()).unwrap();
            c.allocate(RequestId(3), "cc", subnet, true);
            let rc = run(&mut [&mut a, &mut b, &mut c]);
            let got = allocated(&rc, 3).expect("third peer allocated");
            assert!(
                got == "172.16.16.224/24" || got == "172.16.16.96/24",
                "{got}"
            );
            seen.insert(got);
            for p in [&a, &b, &c] {
                assert!(p.check_invariants());
            }
        }
        assert_eq!(seen.len(), 2, "both donors chosen across seeds: {seen:?}");
    }

    #[test]
    fn ipam_consensus_of_three_forms_the_seed_split() {
        let now = Instant::now();
        let mk = |n: PeerName| {
            let config = Config {
                name: n,
                uid: n.0 * 7,
                nickname: String::new(),
                universe: universe(),
                mode: InitMode::Consensus {
                    peer_count: Some(3),
                },
                pre_claims: vec![],
                rng_seed: 1,
            };
            Allocator::new(config, None, now).unwrap()
        };
        let (mut a, mut b, mut c) = (mk(A), mk(B), mk(C));
        for p in [&mut a, &mut b, &mut c] {
            p.set_known_peers([A, B, C].into());
        }
        assert_eq!(a.readiness(), Readiness::Idle);
        a.prime(RequestId(9));
        assert_eq!(
            a.readiness(),
            Readiness::AwaitingConsensus {
                quorum: 2,
                known: 1
            }
        );
        let replies = run(&mut [&mut a, &mut b, &mut c]);
        assert!(replies.iter().any(|r| matches!(
            r,
            Output::Reply {
                id: RequestId(9),
                result: Ok(Reply::Primed)
            }
        )));
        assert_eq!(a.ring().entries(), b.ring().entries());
        assert_eq!(a.ring().entries(), c.ring().entries());
        assert!(!a.ring().is_empty());
        assert_eq!(a.readiness(), Readiness::Ready);
    }

    #[test]
    fn ipam_observer_gets_a_ring_from_electors() {
        let now = Instant::now();
        let mk = |n: PeerName, mode: InitMode| {
            let config = Config {
                name: n,
                uid: n.0,
                nickname: format!("h{}", n.0),
                universe: universe(),
                mode,
                pre_claims: vec![],
                rng_seed: 3,
            };
            Allocator::new(config, None, now).unwrap()
        };
        // Quorum from direct targets: one target → (1+1)/2+1 = 2.
        let mut a = mk(A, InitMode::Consensus { peer_count: None });
        let mut b = mk(B, InitMode::Consensus { peer_count: None });
        let mut o = mk(C, InitMode::Observer);
        for p in [&mut a, &mut b, &mut o] {
            p.set_known_peers([A, B, C].into());
            p.set_direct_targets(1);
        }
        assert_eq!(a.gossip_state().paxos, Some(paxos::GossipState::new()));
        assert_eq!(o.gossip_state().paxos, None);
        o.allocate(RequestId(1), "x", universe(), true);
        assert_eq!(o.readiness(), Readiness::Priming);
        let r = run(&mut [&mut a, &mut b, &mut o]);
        // The ring is split between the two electors only; the observer got space donated.
        assert_eq!(a.ring().seeds(), &[A, B]);
        let got = allocated(&r, 1).expect("observer allocated");
        assert_eq!(
            o.ring().owner(
                got.split('/')
                    .next()
                    .unwrap()
                    .parse::<std::net::Ipv4Addr>()
                    .unwrap()
                    .into()
            ),
            Some(C)
        );
        // Shutdown hands everything to a live peer.
        o.shutdown();
        run(&mut [&mut a, &mut b, &mut o]);
        assert!(!a.ring().peer_names().contains(&C));
        assert!(o.space().owned_ranges().is_empty());
        // A waiting request can be cancelled.
        let mut lonely = mk(
            PeerName(0xdd),
            InitMode::Consensus {
                peer_count: Some(3),
            },
        );
        lonely.prime(RequestId(5));
        assert!(lonely.cancel(RequestId(5)));
        let r = drain(&mut lonely);
        assert!(r.iter().any(|o| matches!(
            o,
            Output::Reply {
                id: RequestId(5),
                result: Err(AllocError::Cancelled { .. })
            }
        )));
        assert!(!lonely.cancel(RequestId(5)));
    }

    #[test]
    fn ipam_claims_release_and_errors() {
        let now = Instant::now();
        let subnet = universe();
        let mut a = seeded(A, vec![A, B], 1, now);
        let mut b = seeded(B, vec![A, B], 1, now);
        for p in [&mut a, &mut b] {
            p.set_known_peers([A, B].into());
        }
        let c = |s: &str| parse_cidr(s).unwrap();
        // A claims an address B owns: B donates it.
        a.claim(RequestId(1), "x", c("172.16.16.200/24"), true, false);
        let r = run(&mut [&mut a, &mut b]);
        assert!(r.iter().any(|o| matches!(
            o,
            Output::Reply {
                id: RequestId(1),
                result: Ok(Reply::Claimed)
            }
        )));
        assert_eq!(a.ring().owner(Address(0xac10_10c8)), Some(A));
        // B claims it back while A holds it: denied.
        b.claim(RequestId(2), "y", c("172.16.16.200/24"), true, false);
        let r = run(&mut [&mut a, &mut b]);
        let err = r.iter().find_map(|o| match o {
            Output::Reply {
                id: RequestId(2),
                result: Err(e),
            } => Some(e.to_string()),
            _ => None,
        });
        assert_eq!(
            err.as_deref(),
            Some("address 172.16.16.200/24 is owned by other peer 00:00:00:00:00:a1 (host-a1)")
        );
        // Another container on A: already owned.
        a.claim(RequestId(3), "z", c("172.16.16.200/24"), true, false);
        let r = drain(&mut a);
        assert!(r.iter().any(|o| matches!(
            o,
            Output::Reply {
                result: Err(AllocError::OwnedBy { .. }),
                ..
            }
        )));
        // Release.
        assert_eq!(a.free("x", Address(0xac10_10c8)), Ok(()));
        assert_eq!(
            a.free("x", Address(0xac10_10c8)).unwrap_err().to_string(),
            "Free: address 172.16.16.200 not found for x"
        );
        assert_eq!(
            a.delete("x").unwrap_err().to_string(),
            "Delete: no addresses for x"
        );
        // Out of bounds.
        a.allocate(RequestId(4), "w", c("10.0.0.0/8"), true);
        let r = drain(&mut a);
        assert!(r.iter().any(|o| matches!(
            o,
            Output::Reply {
                result: Err(AllocError::OutOfBounds { .. }),
                ..
            }
        )));
        // Idempotent allocation.
        a.allocate(RequestId(5), "v", subnet, true);
        a.allocate(RequestId(6), "v", subnet, true);
        let r = drain(&mut a);
        assert_eq!(allocated(&r, 5), allocated(&r, 6));
        // Container died: freed after 30 s.
        a.container_died("v", now);
        a.handle_timeout(now + Duration::from_secs(20));
        assert_eq!(a.lookup("v", subnet.range()).len(), 1);
        a.handle_timeout(now + Duration::from_secs(36));
        assert!(a.lookup("v", subnet.range()).is_empty());
        assert!(a.check_invariants());
    }

    #[test]
    fn ipam_rmpeer_and_persistence_restore() {
        let now = Instant::now();
        let mut a = seeded(A, vec![A, B], 1, now);
        a.allocate(RequestId(1), "x", universe(), true);
        let outs = drain(&mut a);
        let ring = outs.iter().rev().find_map(|o| match o {
            Output::Persist(PersistRecord::Ring { ring, .. }) => Some(ring.clone()),
            _ => None,
        });
        let owned = outs.iter().rev().find_map(|o| match o {
            Output::Persist(PersistRecord::Owned(m)) => Some(m.clone()),
            _ => None,
        });
        assert_eq!(a.admin_takeover("nobody"), 0);
        assert_eq!(a.admin_takeover("00:00:00:00:00:b2"), 128);
        assert_eq!(a.ring().owned_sizes().get(&A), Some(&256));
        assert_eq!(a.admin_takeover("00:00:00:00:00:a1"), 0);
        // Restart with what was persisted before the takeover.
        let config = Config {
            name: A,
            uid: 99,
            nickname: String::new(),
            universe: universe(),
            mode: InitMode::Seed(vec![A, B]),
            pre_claims: vec![],
            rng_seed: 2,
        };
        let persisted = Persisted {
            peer: Some(A),
            ring,
            owned,
        };
        let mut a2 = Allocator::new(config.clone(), Some(persisted.clone()), now).unwrap();
        assert_eq!(a2.lookup("x", universe().range()).len(), 1);
        a2.allocate(RequestId(2), "y", universe(), true);
        assert_eq!(
            allocated(&drain(&mut a2), 2).as_deref(),
            Some("172.16.16.2/24")
        );
        // Someone else's data is not ours.
        let other = Persisted {
            peer: Some(B),
            ..persisted
        };
        let a3 = Allocator::new(config, Some(other), now).unwrap();
        assert!(a3.lookup("x", universe().range()).is_empty());
    }

    #[test]
    fn ipam_bad_gossip_leaves_state_unchanged() {
        let now = Instant::now();
        let mut a = seeded(A, vec![A, B], 1, now);
        drain(&mut a);
        let before = (a.ring().clone(), a.nicknames().clone());
        let mut bad = a.gossip_state();
        bad.nicknames.insert(C, "intruder".into());
        if let Some(r) = &mut bad.ring {
            r.entries[0].free = 1000;
        }
        assert!(matches!(
            a.handle_gossip(Some(B), bad),
            Err(GossipError::Ring(RingError::TooMuchFree { .. }))
        ));
        assert_eq!((a.ring().clone(), a.nicknames().clone()), before);
        let mut other_seeds = a.gossip_state();
        if let Some(r) = &mut other_seeds.ring {
            r.seeds = vec![B, C];
        }
        let e = a.handle_gossip(Some(B), other_seeds).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("IP allocation was seeded by different peers"),
            "{e}"
        );
    }
}
