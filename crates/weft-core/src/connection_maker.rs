//! The connection maker: which peer addresses to dial, and when (Weave mesh's `connectionMaker`).
//!
//! It keeps two kinds of *targets*, keyed by socket address:
//!
//! * **direct** targets, from the command line and `weft connect`, remembered under the user's
//!   own strings (`host` or `host:port`), dialled with `accept_new_peer = true`, and *suspended*
//!   (kept with their back-off) while they are not needed;
//! * **discovered** targets, computed by the caller from the gossiped topology, dialled with
//!   `accept_new_peer = false` and deleted as soon as they are no longer wanted.
//!
//! A target is dialled immediately when first added, then after each failure with a randomised
//! exponential back-off (2 s, ×1.5, capped at 6 min, each wait uniform in `[0.5i, 1.5i)`). An
//! outbound connection that lived more than a minute past its try-after time is retried at once;
//! one that ended in a peer-name collision or turned out to be to ourself is never retried.
//!
//! This is a sans-IO state machine: it opens no sockets, reads no clock and does no DNS lookups
//! of its own. The driver feeds it events (`refresh`, `dial_failed`, `connection_up`,
//! `connection_down`, `initiate_connections`, `forget_connections`) together with `now`, asks
//! [`ConnectionMaker::poll_dial`] for addresses to dial, and sleeps until
//! [`ConnectionMaker::poll_timeout`]. Randomness comes from a seeded RNG owned by the maker, so
//! runs are reproducible.
//!
//! Bounds, so that gossip naming many addresses cannot make the router hammer them (a peer
//! chooses what it gossips, ports included):
//! * dials in progress count against the connection limit, as live connections do;
//! * discovered targets are dialled at most [`DISCOVERY_DIAL_BURST`] at once and then one per
//!   [`DISCOVERY_DIAL_INTERVAL`] (a token bucket; retries count too); direct targets are never
//!   held back by it;
//! * at most [`MAX_DISCOVERED_TARGETS`] discovered targets are remembered. When that many are
//!   held, a new candidate takes the place of one that has failed long enough for its back-off
//!   to reach [`EVICTABLE_INTERVAL`] (about a minute of failures), else it waits for the next
//!   `refresh`; so bogus addresses cannot keep real peers out for good, and each address costs
//!   at most a few dials a minute.
//!
//! Deliberately left out: the accept-side token bucket (a listener concern), the conn-limit check
//! when a connection is *added* (a router concern), and the topology walk that produces discovery
//! candidates (the caller passes them in). Because there is no wall clock, the `retry:` and
//! `until:` times in [`TargetStatus::info`] are rendered relative to `now` (e.g. `retry: 3.2s`)
//! rather than as Go's absolute `time.Time`.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Back-off interval after the first failure of a target (and after a reset).
pub const INITIAL_INTERVAL: Duration = Duration::from_secs(2);
/// Upper bound of the back-off interval.
pub const MAX_INTERVAL: Duration = Duration::from_secs(6 * 60);
/// An outbound connection that ends more than this long after its target's try-after time counts
/// as having "lived long enough": the target is retried at once with the back-off reset.
pub const RESET_AFTER: Duration = Duration::from_secs(60);

/// Most discovered targets remembered at once (direct targets are not counted).
pub const MAX_DISCOVERED_TARGETS: usize = 256;
/// Discovered targets that may be dialled at once before the rate applies.
pub const DISCOVERY_DIAL_BURST: u32 = 20;
/// After the burst, one discovered target may be dialled per this interval (10 per second).
pub const DISCOVERY_DIAL_INTERVAL: Duration = Duration::from_millis(100);
/// A discovered target whose back-off interval reached this may be replaced by a new candidate
/// when [`MAX_DISCOVERED_TARGETS`] are held.
pub const EVICTABLE_INTERVAL: Duration = Duration::from_secs(30);

/// Most host names being looked up at once; a `weft connect` naming more fails for the rest
/// at once (the lookups run on the driver's threads).
pub const MAX_PENDING_LOOKUPS: usize = 64;
/// A lookup not answered by then fails, and a late answer is ignored.
pub const LOOKUP_TIMEOUT: Duration = Duration::from_secs(10);

/// Names one host-name lookup asked for by [`ConnectionMaker::poll_lookup`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LookupToken(pub u64);

/// Names one [`ConnectionMaker::initiate_connections`] call, to match its [`ConnectOutcome`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ConnectRequest(pub u64);

/// A host name the driver must look up, off the mesh loop, and answer with
/// [`ConnectionMaker::handle_lookup`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lookup {
    /// Pass back with the answer.
    pub token: LookupToken,
    /// The host name as the user gave it.
    pub host: String,
    /// The port given, or ours.
    pub port: u16,
}

/// How one [`ConnectionMaker::initiate_connections`] call ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectOutcome {
    /// The call.
    pub request: ConnectRequest,
    /// One error per bad peer, in the order given (empty when all were good).
    pub errors: Vec<PeerError>,
}

/// Why a peer given on the command line or to `weft connect` was not added. The texts are
/// Weave Net's (Go's resolver errors for lookups), as `weft connect` prints them.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PeerError {
    /// Not `host[:port]`.
    #[error("invalid peer name {0:?}, should be host[:port]")]
    InvalidName(String),
    /// [`MAX_PENDING_LOOKUPS`] host names are being looked up already.
    #[error("lookup {host}: too many lookups in progress")]
    TooManyLookups {
        /// The host name.
        host: String,
    },
    /// No answer within [`LOOKUP_TIMEOUT`].
    #[error("lookup {host}: i/o timeout")]
    LookupTimeout {
        /// The host name.
        host: String,
    },
    /// The resolver answered with no address.
    #[error("lookup {host}: no such host")]
    NoAddress {
        /// The host name.
        host: String,
    },
    /// The resolver's own error, as it worded it.
    #[error("{0}")]
    Resolver(String),
}

/// An address [`ConnectionMaker::poll_dial`] wants dialled now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dial {
    /// Where to connect.
    pub addr: SocketAddr,
    /// Whether the handshake may accept a peer name we have never heard of: true for direct
    /// targets (command line / `weft connect`), false for targets found through discovery, which
    /// must turn out to be a peer already known from topology.
    pub accept_new_peer: bool,
}

/// A live connection, as reported to [`ConnectionMaker::refresh`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectedAddr {
    /// For an outbound connection the address we dialled; for an inbound one the remote address
    /// of the TCP connection (the remote's ephemeral port).
    pub addr: SocketAddr,
    /// Whether we dialled this connection.
    pub outbound: bool,
}

/// Lifecycle state of one target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TargetState {
    /// Wanted, and due to be dialled once its try-after time has passed (possibly never, after a
    /// name collision or a connection to ourself).
    Waiting,
    /// A dial or handshake is in progress.
    Attempting,
    /// An outbound connection to this address completed its handshake and is live.
    Connected,
    /// A direct target that is not wanted right now (already connected from elsewhere, or an
    /// inbound connection from its IP exists); it keeps its back-off state.
    Suspended,
}

/// One line of the connection-maker part of `status connections`: a target that is not
/// currently connected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetStatus {
    /// The target address, `ip:port` (`[v6]:port` for IPv6).
    pub address: String,
    /// `"connecting"` (first attempt in progress), `"retrying"` (a later attempt in progress),
    /// `"failed"` (waiting for back-off after an error) or `"waiting"` (waiting, no error).
    pub state: &'static str,
    /// Empty for `connecting`; the last error for `retrying`; `<last error>, retry: <in>` for
    /// `failed`; `until: <in>` for `waiting`. `<in>` is the time left relative to the `now`
    /// given to [`ConnectionMaker::status`], e.g. `3.2s` or `1m5.0s`, or `never`.
    pub info: String,
}

/// How a connection to a target ended, for [`ConnectionMaker::connection_down`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Termination {
    /// The remote has our peer name but a different UID: never retried.
    NameCollision,
    /// The remote turned out to be ourself: never retried.
    Ourself,
    /// Any other error or close: back off, or retry at once if the connection lived long enough.
    Other,
}

/// Parses a peer string `host[:port]`: an IPv4 address, a host name or a bracketed IPv6 address,
/// optionally followed by `:port`. A missing, empty or zero port yields `default_port`.
///
/// Call it to validate user input before storing or showing it; the error is Weave's text,
/// `invalid peer name "<s>", should be host[:port]`.
pub fn parse_peer(s: &str, default_port: u16) -> Result<(String, u16), PeerError> {
    let (host, port) = split_peer(s)?;
    Ok((host.to_owned(), port.unwrap_or(default_port)))
}

/// Splits `host[:port]`; `None` means "no port given" (Weave's port 0).
fn split_peer(s: &str) -> Result<(&str, Option<u16>), PeerError> {
    let invalid = || PeerError::InvalidName(s.to_owned());
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        let (host, after) = rest.split_once(']').ok_or_else(invalid)?;
        match after {
            "" => (host, ""),
            _ => (host, after.strip_prefix(':').ok_or_else(invalid)?),
        }
    } else {
        match s.split_once(':') {
            None => (s, ""),
            Some((_, port)) if port.contains(':') => return Err(invalid()),
            Some((host, port)) => (host, port),
        }
    };
    if host.is_empty() || host.contains(['[', ']']) {
        return Err(invalid());
    }
    let port = match port {
        "" => None,
        p if p.bytes().all(|b| b.is_ascii_digit()) => match p.parse::<u16>() {
            Ok(0) => None,
            Ok(n) => Some(n),
            Err(_) => return Err(invalid()),
        },
        _ => return Err(invalid()),
    };
    Ok((host, port))
}

/// A command-line or `weft connect` peer.
#[derive(Debug, Clone)]
struct DirectPeer {
    /// What the user typed; shown by `status targets` and persisted.
    user: String,
    /// The resolved address.
    ip: IpAddr,
    /// The port given, or `None` to use ours (and to skip the dial when an inbound connection
    /// from `ip` exists).
    port: Option<u16>,
}

/// One peer of an [`ConnectionMaker::initiate_connections`] call.
#[derive(Debug)]
enum Slot {
    /// Parsed and, for a host name, looked up.
    Done(Result<DirectPeer, PeerError>),
    /// Its host name is being looked up.
    Waiting {
        token: LookupToken,
        user: String,
        host: String,
        port: Option<u16>,
    },
}

/// An [`ConnectionMaker::initiate_connections`] call waiting for lookups.
#[derive(Debug)]
struct PendingConnect {
    request: ConnectRequest,
    replace: bool,
    slots: Vec<Slot>,
}

/// A lookup handed out and not answered yet.
#[derive(Debug)]
struct PendingLookup {
    request: ConnectRequest,
    /// When it fails unanswered (Go's `lookup <host>: i/o timeout`); `None` if out of the
    /// clock's range (never).
    deadline: Option<Instant>,
    host: String,
}

/// Per-address dialling state.
#[derive(Debug, Clone)]
struct Target {
    state: TargetState,
    /// Why the last attempt or connection ended.
    last_error: Option<String>,
    /// Earliest time of the next attempt; `None` = never.
    try_after: Option<Instant>,
    /// Back-off interval to use on the next failure.
    try_interval: Duration,
}

impl Target {
    fn new(now: Instant) -> Self {
        Self {
            state: TargetState::Waiting,
            last_error: None,
            try_after: Some(now),
            try_interval: INITIAL_INTERVAL,
        }
    }

    fn try_now(&mut self, now: Instant) {
        self.try_after = Some(now);
        self.try_interval = INITIAL_INTERVAL;
    }

    fn try_later(&mut self, now: Instant, rng: &mut StdRng) {
        let interval = self.try_interval;
        let nanos = u64::try_from(interval.as_nanos())
            .unwrap_or(u64::MAX)
            .max(1);
        let jitter = Duration::from_nanos(rng.gen_range(0..nanos));
        self.try_after = now.checked_add(interval / 2 + jitter);
        self.try_interval = (interval * 3 / 2).min(MAX_INTERVAL);
    }

    fn try_never(&mut self) {
        self.try_after = None;
        self.try_interval = MAX_INTERVAL;
    }

    fn due(&self, now: Instant) -> bool {
        self.state == TargetState::Waiting && self.try_after.is_some_and(|t| t <= now)
    }
}

/// Decides which peer addresses to dial and when; see the module docs.
#[derive(Debug)]
pub struct ConnectionMaker {
    /// Our listen port: completes port-less peers and discovery candidates.
    port: u16,
    discovery: bool,
    /// 0 = unlimited.
    conn_limit: usize,
    rng: StdRng,
    direct: Vec<DirectPeer>,
    targets: BTreeMap<SocketAddr, Target>,
    /// Live connections, as of the last `refresh` plus `connection_up`/`connection_down` since.
    connected: Vec<ConnectedAddr>,
    /// Discovery candidates from the last `refresh` (empty when discovery is off).
    discovered: Vec<SocketAddr>,
    /// Dials of discovered targets allowed now.
    tokens: u32,
    /// When `tokens` was last topped up; `None` before the first dial.
    refilled_at: Option<Instant>,
    /// Discovery candidates not taken because [`MAX_DISCOVERED_TARGETS`] were held.
    skipped_candidates: u64,
    /// `initiate_connections` calls waiting for lookups, oldest first.
    connecting: Vec<PendingConnect>,
    /// Lookups handed out (or about to be) and not answered.
    lookups: BTreeMap<LookupToken, PendingLookup>,
    /// Lookups not taken by `poll_lookup` yet.
    lookup_queue: VecDeque<Lookup>,
    /// Calls that took effect, for `poll_outcome`.
    outcomes: VecDeque<ConnectOutcome>,
    /// Next request or lookup number.
    next_id: u64,
}

impl ConnectionMaker {
    /// Creates a maker with no targets. `port` is our mesh listen port (`--port`), `discovery`
    /// is false under `--no-discovery`, `conn_limit` is `--conn-limit` (0 = unlimited) and `seed`
    /// seeds the back-off jitter.
    pub fn new(port: u16, discovery: bool, conn_limit: usize, seed: u64) -> Self {
        Self {
            port,
            discovery,
            conn_limit,
            rng: StdRng::seed_from_u64(seed),
            direct: Vec::new(),
            targets: BTreeMap::new(),
            connected: Vec::new(),
            discovered: Vec::new(),
            tokens: DISCOVERY_DIAL_BURST,
            refilled_at: None,
            skipped_candidates: 0,
            connecting: Vec::new(),
            lookups: BTreeMap::new(),
            lookup_queue: VecDeque::new(),
            outcomes: VecDeque::new(),
            next_id: 1,
        }
    }

    /// Adds direct peers: call at start-up with the command-line (or resumed) peers and for
    /// `weft connect`. `replace` first forgets all direct peers (`weft connect --replace`).
    ///
    /// Each string is parsed as `host[:port]`. IP literals are taken as they are; each host name
    /// becomes a [`Lookup`] for the driver (take them with [`Self::poll_lookup`], answer with
    /// [`Self::handle_lookup`]; the port asked for is ours when none was given; an IPv4 answer
    /// is preferred). Once every name of the call is answered (or timed out after
    /// [`LOOKUP_TIMEOUT`]), the call takes effect as a whole, as Weave Net's does after its
    /// lookups: `replace` forgets the old direct peers, the good peers are added, and a peer
    /// whose target already exists has its back-off reset so it is tried at once (unless it is
    /// mid-attempt or connected). Its [`ConnectOutcome`] — one error text per bad peer, in the
    /// order given — then comes out of [`Self::poll_outcome`]; with no host names to look up,
    /// that happens within this call. Afterwards call [`Self::poll_dial`].
    pub fn initiate_connections(
        &mut self,
        peers: &[String],
        replace: bool,
        now: Instant,
    ) -> ConnectRequest {
        let request = ConnectRequest(self.next_id);
        self.next_id += 1;
        let mut slots = Vec::with_capacity(peers.len());
        for peer in peers {
            let slot = match split_peer(peer) {
                Err(e) => Slot::Done(Err(e)),
                Ok((host, port)) => match host.parse::<IpAddr>() {
                    Ok(ip) => Slot::Done(Ok(DirectPeer {
                        user: peer.clone(),
                        ip,
                        port,
                    })),
                    Err(_) if self.lookups.len() >= MAX_PENDING_LOOKUPS => {
                        Slot::Done(Err(PeerError::TooManyLookups {
                            host: host.to_owned(),
                        }))
                    }
                    Err(_) => {
                        let token = LookupToken(self.next_id);
                        self.next_id += 1;
                        let lookup = Lookup {
                            token,
                            host: host.to_owned(),
                            port: port.unwrap_or(self.port),
                        };
                        self.lookups.insert(
                            token,
                            PendingLookup {
                                request,
                                deadline: now.checked_add(LOOKUP_TIMEOUT),
                                host: host.to_owned(),
                            },
                        );
                        self.lookup_queue.push_back(lookup);
                        Slot::Waiting {
                            token,
                            user: peer.clone(),
                            host: host.to_owned(),
                            port,
                        }
                    }
                },
            };
            slots.push(slot);
        }
        self.connecting.push(PendingConnect {
            request,
            replace,
            slots,
        });
        self.complete_requests(now);
        request
    }

    /// The next host name to look up for [`Self::initiate_connections`], or `None`. Call until
    /// `None` after every `initiate_connections`; answer each with [`Self::handle_lookup`]
    /// (late answers, after [`LOOKUP_TIMEOUT`], are ignored).
    pub fn poll_lookup(&mut self) -> Option<Lookup> {
        self.lookup_queue.pop_front()
    }

    /// The answer to a [`Lookup`]: the addresses found, or the resolver's error text (shown to
    /// the user as it is). Ignored for a token that is unknown or already timed out.
    pub fn handle_lookup(
        &mut self,
        token: LookupToken,
        answer: Result<Vec<SocketAddr>, String>,
        now: Instant,
    ) {
        let Some(pending) = self.lookups.remove(&token) else {
            return;
        };
        self.lookup_queue.retain(|l| l.token != token);
        self.settle(pending.request, token, answer.map_err(PeerError::Resolver));
        self.complete_requests(now);
    }

    /// The result of an [`Self::initiate_connections`] call that took effect, or `None`. Call
    /// until `None` after `initiate_connections`, [`Self::handle_lookup`] and
    /// [`Self::handle_timeout`].
    pub fn poll_outcome(&mut self) -> Option<ConnectOutcome> {
        self.outcomes.pop_front()
    }

    /// Runs what is due at `now`: lookups unanswered for [`LOOKUP_TIMEOUT`] fail (Go's text
    /// for a lookup that timed out). Call when [`Self::poll_timeout`] expires.
    pub fn handle_timeout(&mut self, now: Instant) {
        let expired: Vec<LookupToken> = self
            .lookups
            .iter()
            .filter(|(_, l)| l.deadline.is_some_and(|d| d <= now))
            .map(|(&t, _)| t)
            .collect();
        if expired.is_empty() {
            return;
        }
        for token in expired {
            let Some(l) = self.lookups.remove(&token) else {
                continue;
            };
            self.lookup_queue.retain(|q| q.token != token);
            self.settle(
                l.request,
                token,
                Err(PeerError::LookupTimeout { host: l.host }),
            );
        }
        self.complete_requests(now);
    }

    /// Removes direct peers by their user strings (`weft forget`). A live or in-progress
    /// connection to a forgotten target is left alone; the target is dropped once it ends (unless
    /// discovery still wants the address).
    pub fn forget_connections(&mut self, peers: &[String]) {
        self.direct.retain(|d| !peers.contains(&d.user));
        self.reconcile(None);
    }

    /// The direct peers as the user gave them, in the order first given: for `status targets`,
    /// the `Targets:` count and persistence.
    pub fn direct_peers(&self) -> Vec<String> {
        self.direct.iter().map(|d| d.user.clone()).collect()
    }

    /// Tells the maker the current world: every live connection (`connected`) and the discovery
    /// candidates the caller computed from topology (`discovered`; ignored when discovery is
    /// off; port 0 is completed with our port). Call after every topology or connection change,
    /// then call [`Self::poll_dial`]. New targets are due at once; unwanted ones are deleted
    /// (discovered) or suspended (direct).
    pub fn refresh(
        &mut self,
        connected: &[ConnectedAddr],
        discovered: &[SocketAddr],
        now: Instant,
    ) {
        self.connected = connected.to_vec();
        self.discovered = if self.discovery {
            discovered.to_vec()
        } else {
            Vec::new()
        };
        self.reconcile(Some(now));
    }

    /// Returns the next address to dial now, marking its target as attempting, or `None` when
    /// nothing is due, the live connections and dials in progress have reached the connection
    /// limit, or only discovered targets are due and their dial rate is used up. Direct targets
    /// go first. Call repeatedly until `None` after every event and when [`Self::poll_timeout`]
    /// expires; report the outcome with [`Self::dial_failed`], [`Self::connection_up`] or
    /// [`Self::connection_down`].
    pub fn poll_dial(&mut self, now: Instant) -> Option<Dial> {
        if self.at_limit() {
            return None;
        }
        self.refill(now);
        let mut due = self.targets.iter().filter(|(_, t)| t.due(now));
        let direct = due.clone().map(|(&a, _)| a).find(|&a| self.is_direct(a));
        let addr = match direct {
            Some(a) => a,
            None if self.tokens > 0 => {
                let (&a, _) = due.next()?;
                self.tokens -= 1;
                a
            }
            None => return None,
        };
        if let Some(target) = self.targets.get_mut(&addr) {
            target.state = TargetState::Attempting;
        }
        Some(Dial {
            addr,
            accept_new_peer: direct.is_some(),
        })
    }

    /// Discovery candidates not remembered because [`MAX_DISCOVERED_TARGETS`] were held, since
    /// start (each `refresh` counts each such candidate again).
    pub fn skipped_candidates(&self) -> u64 {
        self.skipped_candidates
    }

    /// Reports that dialling `addr` (from [`Self::poll_dial`]) failed before any handshake, e.g.
    /// `connect: connection refused`. The target backs off and `error` is shown in status.
    pub fn dial_failed(&mut self, addr: SocketAddr, error: String, now: Instant) {
        if let Some(target) = self.targets.get_mut(&addr) {
            if target.state == TargetState::Attempting {
                target.state = TargetState::Waiting;
                target.last_error = Some(error);
                target.try_later(now, &mut self.rng);
            }
        }
        self.reconcile(Some(now));
    }

    /// Reports that the outbound connection dialled to `addr` finished its handshake and is live.
    /// Ignored unless `addr` is a target being attempted.
    pub fn connection_up(&mut self, addr: SocketAddr) {
        let Some(target) = self.targets.get_mut(&addr) else {
            return;
        };
        if target.state != TargetState::Attempting {
            return;
        }
        target.state = TargetState::Connected;
        let entry = ConnectedAddr {
            addr,
            outbound: true,
        };
        if !self.connected.contains(&entry) {
            self.connected.push(entry);
        }
    }

    /// Reports that the outbound connection dialled to `addr` ended, during or after the
    /// handshake, with `error` as the reason shown in status. `NameCollision` and `Ourself` are
    /// never retried; a connection that ended more than [`RESET_AFTER`] past its try-after time
    /// is retried at once; otherwise the target backs off. Ignored unless `addr` is a target
    /// being attempted or connected.
    pub fn connection_down(
        &mut self,
        addr: SocketAddr,
        how: Termination,
        error: Option<String>,
        now: Instant,
    ) {
        let gone = ConnectedAddr {
            addr,
            outbound: true,
        };
        if let Some(target) = self.targets.get_mut(&addr) {
            if matches!(
                target.state,
                TargetState::Attempting | TargetState::Connected
            ) {
                self.connected.retain(|c| *c != gone);
                target.state = TargetState::Waiting;
                match how {
                    Termination::NameCollision => {
                        target.last_error =
                            Some(error.unwrap_or_else(|| "peer names collision".to_owned()));
                        target.try_never();
                    }
                    Termination::Ourself => {
                        target.last_error =
                            Some(error.unwrap_or_else(|| "cannot connect to ourself".to_owned()));
                        target.try_never();
                    }
                    Termination::Other => {
                        target.last_error = error;
                        let lived_long = target
                            .try_after
                            .and_then(|t| t.checked_add(RESET_AFTER))
                            .is_some_and(|t| now > t);
                        if lived_long {
                            target.try_now(now);
                        } else {
                            target.try_later(now, &mut self.rng);
                        }
                    }
                }
            }
        }
        self.reconcile(Some(now));
    }

    /// The earliest try-after time of a waiting target (possibly already past; none when the
    /// connection limit is reached, as a later `refresh` reopens it) or lookup deadline, or
    /// `None` when nothing waits. Call [`Self::handle_timeout`] and [`Self::poll_dial`] when it
    /// expires.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let lookup = self.lookups.values().filter_map(|l| l.deadline).min();
        match (self.dial_timeout(), lookup) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// When the next target is due to be dialled; see [`Self::poll_timeout`].
    fn dial_timeout(&self) -> Option<Instant> {
        if self.at_limit() {
            return None;
        }
        let next_token = match (self.tokens, self.refilled_at) {
            (0, Some(at)) => at.checked_add(DISCOVERY_DIAL_INTERVAL),
            _ => None,
        };
        self.targets
            .iter()
            .filter(|(_, t)| t.state == TargetState::Waiting)
            .filter_map(|(&a, t)| match next_token {
                Some(tok) if !self.is_direct(a) => t.try_after.map(|at| at.max(tok)),
                _ => t.try_after,
            })
            .min()
    }

    /// The state of the target at `addr`, if there is one (for diagnostics and tests).
    pub fn target_state(&self, addr: SocketAddr) -> Option<TargetState> {
        self.targets.get(&addr).map(|t| t.state)
    }

    /// Status lines for targets that are waiting or being attempted, sorted by address, for
    /// `status connections` and the `Connections:` counts (connected and suspended targets are
    /// not listed; live connections are reported by their owners). Times are relative to `now`.
    pub fn status(&self, now: Instant) -> Vec<TargetStatus> {
        let mut out = Vec::new();
        for (addr, t) in &self.targets {
            let (state, info) = match (t.state, &t.last_error) {
                (TargetState::Attempting, None) => ("connecting", String::new()),
                (TargetState::Attempting, Some(e)) => ("retrying", e.clone()),
                (TargetState::Waiting, Some(e)) => (
                    "failed",
                    format!("{e}, retry: {}", in_time(t.try_after, now)),
                ),
                (TargetState::Waiting, None) => {
                    ("waiting", format!("until: {}", in_time(t.try_after, now)))
                }
                (TargetState::Connected | TargetState::Suspended, _) => continue,
            };
            out.push(TargetStatus {
                address: addr.to_string(),
                state,
                info,
            });
        }
        out
    }

    /// Puts the answer to `token` into its request's slot.
    fn settle(
        &mut self,
        request: ConnectRequest,
        token: LookupToken,
        answer: Result<Vec<SocketAddr>, PeerError>,
    ) {
        let Some(pending) = self.connecting.iter_mut().find(|p| p.request == request) else {
            return;
        };
        for slot in &mut pending.slots {
            let Slot::Waiting {
                token: t,
                user,
                host,
                port,
            } = slot
            else {
                continue;
            };
            if *t != token {
                continue;
            }
            let result = match answer {
                Err(e) => Err(e),
                Ok(addrs) => addrs
                    .iter()
                    .find(|a| a.is_ipv4())
                    .or_else(|| addrs.first())
                    .map(|a| DirectPeer {
                        user: std::mem::take(user),
                        ip: a.ip(),
                        port: *port,
                    })
                    .ok_or_else(|| PeerError::NoAddress { host: host.clone() }),
            };
            *slot = Slot::Done(result);
            return;
        }
    }

    /// Applies every request whose lookups are all answered, in the order they were made.
    fn complete_requests(&mut self, now: Instant) {
        let mut applied = false;
        let mut i = 0;
        while i < self.connecting.len() {
            let ready = self
                .connecting
                .get(i)
                .is_some_and(|p| p.slots.iter().all(|s| matches!(s, Slot::Done(_))));
            if !ready {
                i += 1;
                continue;
            }
            let pending = self.connecting.remove(i);
            let mut errors = Vec::new();
            let mut good = Vec::new();
            for slot in pending.slots {
                match slot {
                    Slot::Done(Ok(p)) => good.push(p),
                    Slot::Done(Err(e)) => errors.push(e),
                    Slot::Waiting { .. } => {}
                }
            }
            if pending.replace {
                self.direct.clear();
            }
            for peer in good {
                let addr = self.complete(SocketAddr::new(peer.ip, peer.port.unwrap_or(0)));
                match self.direct.iter_mut().find(|d| d.user == peer.user) {
                    Some(existing) => *existing = peer,
                    None => self.direct.push(peer),
                }
                if let Some(target) = self.targets.get_mut(&addr) {
                    target.try_now(now);
                }
            }
            applied = true;
            self.outcomes.push_back(ConnectOutcome {
                request: pending.request,
                errors,
            });
        }
        if applied {
            self.reconcile(Some(now));
        }
    }

    /// Fills in our port when `addr` has none.
    fn complete(&self, addr: SocketAddr) -> SocketAddr {
        if addr.port() == 0 {
            SocketAddr::new(addr.ip(), self.port)
        } else {
            addr
        }
    }

    fn direct_addr(&self, d: &DirectPeer) -> SocketAddr {
        SocketAddr::new(d.ip, d.port.unwrap_or(self.port))
    }

    fn is_direct(&self, addr: SocketAddr) -> bool {
        self.direct.iter().any(|d| self.direct_addr(d) == addr)
    }

    /// Live connections plus dials in progress have reached the connection limit.
    fn at_limit(&self) -> bool {
        if self.conn_limit == 0 {
            return false;
        }
        let attempting = self
            .targets
            .values()
            .filter(|t| t.state == TargetState::Attempting)
            .count();
        self.connected.len() + attempting >= self.conn_limit
    }

    /// Adds the discovery dial tokens earned since the last top-up.
    fn refill(&mut self, now: Instant) {
        let Some(at) = self.refilled_at else {
            self.refilled_at = Some(now);
            return;
        };
        let step = DISCOVERY_DIAL_INTERVAL.as_nanos().max(1);
        let earned = now.saturating_duration_since(at).as_nanos() / step;
        if earned == 0 {
            return;
        }
        let earned = u32::try_from(earned).unwrap_or(u32::MAX);
        self.tokens = self.tokens.saturating_add(earned).min(DISCOVERY_DIAL_BURST);
        self.refilled_at = if self.tokens == DISCOVERY_DIAL_BURST {
            Some(now)
        } else {
            at.checked_add(DISCOVERY_DIAL_INTERVAL * earned)
        };
    }

    /// Recomputes which addresses are wanted, creates missing targets (only when `now` is known)
    /// and deletes or suspends waiting targets that are no longer wanted.
    fn reconcile(&mut self, now: Option<Instant>) {
        let connected: BTreeSet<SocketAddr> = self.connected.iter().map(|c| c.addr).collect();
        let inbound_ips: BTreeSet<IpAddr> = self
            .connected
            .iter()
            .filter(|c| !c.outbound)
            .map(|c| c.addr.ip().to_canonical())
            .collect();
        let mut direct = BTreeSet::new();
        let mut wanted = BTreeSet::new();
        for d in &self.direct {
            let addr = self.direct_addr(d);
            direct.insert(addr);
            let inbound_from_ip = d.port.is_none() && inbound_ips.contains(&d.ip.to_canonical());
            if !inbound_from_ip && !connected.contains(&addr) {
                wanted.insert(addr);
            }
        }
        for &addr in &self.discovered {
            let addr = self.complete(addr);
            if !connected.contains(&addr) {
                wanted.insert(addr);
            }
        }
        self.targets.retain(|addr, t| match t.state {
            TargetState::Attempting | TargetState::Connected => true,
            TargetState::Waiting | TargetState::Suspended => {
                if wanted.contains(addr) {
                    t.state = TargetState::Waiting;
                    true
                } else if direct.contains(addr) {
                    t.state = TargetState::Suspended;
                    true
                } else {
                    false
                }
            }
        });
        let Some(now) = now else {
            return;
        };
        let mut held = self.targets.keys().filter(|a| !direct.contains(a)).count();
        // Failed long enough to give way, longest back-off last (popped first).
        let mut evictable: Vec<(Option<Instant>, SocketAddr)> = self
            .targets
            .iter()
            .filter(|(a, t)| {
                !direct.contains(a)
                    && t.state == TargetState::Waiting
                    && t.last_error.is_some()
                    && t.try_interval >= EVICTABLE_INTERVAL
            })
            .map(|(&a, t)| (t.try_after, a))
            .collect();
        evictable.sort_unstable_by_key(|&(at, a)| (at.is_none(), at, a));
        let mut evicted = BTreeSet::new();
        for &addr in &wanted {
            if self.targets.contains_key(&addr) || evicted.contains(&addr) {
                continue;
            }
            if !direct.contains(&addr) {
                if held >= MAX_DISCOVERED_TARGETS {
                    let Some((_, victim)) = evictable.pop() else {
                        self.skipped_candidates += 1;
                        continue;
                    };
                    self.targets.remove(&victim);
                    evicted.insert(victim);
                    held -= 1;
                }
                held += 1;
            }
            self.targets.insert(addr, Target::new(now));
        }
    }
}

/// Renders the time from `now` until `at` like Go's `Duration.String` with one decimal
/// (`3.2s`, `1m5.0s`), or `never`.
fn in_time(at: Option<Instant>, now: Instant) -> String {
    let Some(at) = at else {
        return "never".to_owned();
    };
    let d = at.saturating_duration_since(now);
    let mins = d.as_secs() / 60;
    let secs = d.as_secs_f64() - (mins * 60) as f64;
    if mins > 0 {
        format!("{mins}m{secs:.1}s")
    } else {
        format!("{secs:.1}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use proptest::prelude::*;

    const PORT: u16 = 6783;

    fn sa(s: &str) -> SocketAddr {
        s.parse().expect("test address")
    }

    fn no_dns(host: &str, _port: u16) -> Result<Vec<SocketAddr>, String> {
        Err(format!("lookup {host}: no such host"))
    }

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| (*s).to_owned()).collect()
    }

    fn connect(cm: &mut ConnectionMaker, peers: &[&str], now: Instant) -> Vec<String> {
        initiate(cm, &strings(peers), false, &mut no_dns, now)
    }

    /// What answers the lookups in these tests.
    type FakeResolver<'a> = dyn FnMut(&str, u16) -> Result<Vec<SocketAddr>, String> + 'a;

    /// One `initiate_connections` call with every lookup answered at once by `resolve`.
    fn initiate(
        cm: &mut ConnectionMaker,
        peers: &[String],
        replace: bool,
        resolve: &mut FakeResolver<'_>,
        now: Instant,
    ) -> Vec<String> {
        let req = cm.initiate_connections(peers, replace, now);
        while let Some(l) = cm.poll_lookup() {
            cm.handle_lookup(l.token, resolve(&l.host, l.port), now);
        }
        let out = cm.poll_outcome().expect("the call took effect");
        assert_eq!(out.request, req);
        assert_eq!(cm.poll_outcome(), None);
        out.errors.iter().map(ToString::to_string).collect()
    }

    fn secs(s: f64) -> Duration {
        Duration::from_secs_f64(s)
    }

    #[test]
    fn parse_accepts_host_port_forms() {
        assert_eq!(
            parse_peer("10.0.0.1", PORT),
            Ok(("10.0.0.1".to_owned(), PORT))
        );
        assert_eq!(
            parse_peer("10.0.0.1:7000", PORT),
            Ok(("10.0.0.1".to_owned(), 7000))
        );
        assert_eq!(
            parse_peer("host.example", PORT),
            Ok(("host.example".to_owned(), PORT))
        );
        assert_eq!(parse_peer("h:1", PORT), Ok(("h".to_owned(), 1)));
        assert_eq!(parse_peer("[::1]", PORT), Ok(("::1".to_owned(), PORT)));
        assert_eq!(
            parse_peer("[fe80::1]:7000", PORT),
            Ok(("fe80::1".to_owned(), 7000))
        );
        // Weave treats port 0 and an empty port as "no port given".
        assert_eq!(parse_peer("h:0", PORT), Ok(("h".to_owned(), PORT)));
        assert_eq!(parse_peer("h:", PORT), Ok(("h".to_owned(), PORT)));
    }

    #[test]
    fn parse_rejects_with_weave_text() {
        for bad in [
            "x:y:z", "::1", "", ":6783", "h:http", "h:65536", "h:-1", "[::1", "[::1]x", "[]:1",
            "a]:1", "[::1]:x",
        ] {
            assert_eq!(
                parse_peer(bad, PORT),
                Err(PeerError::InvalidName(bad.to_owned())),
                "{bad}"
            );
        }
        assert_eq!(
            parse_peer("x:y:z", PORT).unwrap_err().to_string(),
            r#"invalid peer name "x:y:z", should be host[:port]"#
        );
    }

    #[test]
    fn host_names_are_looked_up_by_the_driver_and_addresses_are_not() {
        let now = Instant::now();
        let mut cm = ConnectionMaker::new(PORT, true, 0, 1);
        // Addresses only: the call takes effect at once, nothing to look up.
        let req = cm.initiate_connections(&strings(&["10.0.0.2"]), false, now);
        assert_eq!(cm.poll_lookup(), None);
        assert_eq!(
            cm.poll_outcome(),
            Some(ConnectOutcome {
                request: req,
                errors: vec![]
            })
        );
        assert_eq!(cm.poll_dial(now).map(|d| d.addr), Some(sa("10.0.0.2:6783")));

        // A host name: a lookup goes out and the whole call waits for its answer.
        let req = cm.initiate_connections(&strings(&["h.example:7000", "10.0.0.3"]), false, now);
        let lookup = cm.poll_lookup().expect("a lookup");
        assert_eq!((lookup.host.as_str(), lookup.port), ("h.example", 7000));
        assert_eq!(cm.poll_lookup(), None);
        assert_eq!(cm.poll_outcome(), None);
        assert_eq!(cm.direct_peers(), strings(&["10.0.0.2"]));
        assert_eq!(
            cm.poll_dial(now),
            None,
            "10.0.0.3 waits with the rest of its call"
        );
        assert_eq!(cm.poll_timeout(), Some(now + LOOKUP_TIMEOUT));

        let later = now + secs(0.5);
        let answer = vec![sa("[2001:db8::7]:7000"), sa("10.0.0.7:7000")];
        cm.handle_lookup(lookup.token, Ok(answer), later);
        assert_eq!(
            cm.poll_outcome(),
            Some(ConnectOutcome {
                request: req,
                errors: vec![]
            })
        );
        assert_eq!(
            cm.direct_peers(),
            strings(&["10.0.0.2", "h.example:7000", "10.0.0.3"])
        );
        let dials: Vec<SocketAddr> = std::iter::from_fn(|| cm.poll_dial(later))
            .map(|d| d.addr)
            .collect();
        // IPv4 preferred; the port the user gave.
        assert_eq!(dials, vec![sa("10.0.0.3:6783"), sa("10.0.0.7:7000")]);
        // A second answer to the same token changes nothing.
        cm.handle_lookup(lookup.token, Ok(vec![sa("10.0.0.8:1")]), later);
        assert_eq!(cm.poll_outcome(), None);
        assert_eq!(cm.poll_dial(later), None);
    }

    #[test]
    fn a_target_whose_lookup_fails_then_succeeds() {
        let now = Instant::now();
        let mut cm = ConnectionMaker::new(PORT, true, 0, 1);
        let req = cm.initiate_connections(&strings(&["h.example"]), false, now);
        let l = cm.poll_lookup().expect("a lookup");
        assert_eq!(l.port, PORT, "no port given: ours");
        let err =
            "lookup h.example: failed to lookup address information: Name or service not known";
        cm.handle_lookup(l.token, Err(err.to_owned()), now);
        assert_eq!(
            cm.poll_outcome(),
            Some(ConnectOutcome {
                request: req,
                errors: vec![PeerError::Resolver(err.to_owned())]
            })
        );
        assert!(cm.direct_peers().is_empty());
        assert_eq!(cm.poll_dial(now), None);
        assert!(cm.status(now).is_empty());

        // DNS is back: the same peer, given again, is added and dialled.
        let t = now + secs(30.0);
        let req = cm.initiate_connections(&strings(&["h.example"]), false, t);
        let l = cm.poll_lookup().expect("a lookup");
        cm.handle_lookup(l.token, Ok(vec![sa("10.0.0.9:6783")]), t);
        assert_eq!(
            cm.poll_outcome(),
            Some(ConnectOutcome {
                request: req,
                errors: vec![]
            })
        );
        assert_eq!(cm.direct_peers(), strings(&["h.example"]));
        assert_eq!(
            cm.poll_dial(t),
            Some(Dial {
                addr: sa("10.0.0.9:6783"),
                accept_new_peer: true
            })
        );
    }

    #[test]
    fn unanswered_lookups_time_out_and_late_answers_are_ignored() {
        let now = Instant::now();
        let mut cm = ConnectionMaker::new(PORT, true, 0, 1);
        let req = cm.initiate_connections(&strings(&["slow.example", "10.0.0.2"]), false, now);
        let l = cm.poll_lookup().expect("a lookup");
        // Not yet.
        cm.handle_timeout(now + LOOKUP_TIMEOUT - secs(0.001));
        assert_eq!(cm.poll_outcome(), None);
        let due = cm.poll_timeout().expect("the lookup's deadline");
        assert_eq!(due, now + LOOKUP_TIMEOUT);
        cm.handle_timeout(due);
        assert_eq!(
            cm.poll_outcome(),
            Some(ConnectOutcome {
                request: req,
                errors: vec![PeerError::LookupTimeout {
                    host: "slow.example".to_owned()
                }]
            })
        );
        // The good peer of the call is added all the same.
        assert_eq!(cm.direct_peers(), strings(&["10.0.0.2"]));
        cm.handle_lookup(l.token, Ok(vec![sa("10.0.0.5:6783")]), due);
        assert_eq!(cm.poll_outcome(), None);
        assert_eq!(cm.direct_peers(), strings(&["10.0.0.2"]));
        assert_eq!(cm.poll_dial(due).map(|d| d.addr), Some(sa("10.0.0.2:6783")));
        assert_eq!(cm.poll_dial(due), None);
    }

    #[test]
    fn lookups_in_flight_are_bounded() {
        let now = Instant::now();
        let mut cm = ConnectionMaker::new(PORT, true, 0, 1);
        let names: Vec<String> = (0..=MAX_PENDING_LOOKUPS)
            .map(|i| format!("h{i}.example"))
            .collect();
        let req = cm.initiate_connections(&names, false, now);
        let lookups: Vec<Lookup> = std::iter::from_fn(|| cm.poll_lookup()).collect();
        assert_eq!(lookups.len(), MAX_PENDING_LOOKUPS);
        for l in &lookups {
            cm.handle_lookup(
                l.token,
                Err(format!("lookup {}: no such host", l.host)),
                now,
            );
        }
        let out = cm.poll_outcome().expect("the call took effect");
        assert_eq!(out.request, req);
        assert_eq!(out.errors.len(), MAX_PENDING_LOOKUPS + 1);
        assert_eq!(
            out.errors.last().map(ToString::to_string).as_deref(),
            Some("lookup h64.example: too many lookups in progress")
        );
        // Answered lookups free their places.
        cm.initiate_connections(&strings(&["again.example"]), false, now);
        assert!(cm.poll_lookup().is_some());
    }

    #[test]
    fn bad_peers_report_errors_and_good_ones_are_added() {
        let now = Instant::now();
        let mut cm = ConnectionMaker::new(PORT, true, 0, 1);
        let mut resolve = |host: &str, port: u16| -> Result<Vec<SocketAddr>, String> {
            match host {
                "good.example" => Ok(vec![
                    sa("[2001:db8::1]:1"),
                    SocketAddr::new([10, 0, 0, 9].into(), port),
                ]),
                "empty.example" => Ok(vec![]),
                _ => Err(format!("lookup {host} on 127.0.0.53:53: no such host")),
            }
        };
        let errs = initiate(
            &mut cm,
            &strings(&[
                "x:y:z",
                "good.example",
                "bad.example",
                "empty.example",
                "10.0.0.2:7000",
            ]),
            false,
            &mut resolve,
            now,
        );
        assert_eq!(
            errs,
            vec![
                r#"invalid peer name "x:y:z", should be host[:port]"#.to_owned(),
                "lookup bad.example on 127.0.0.53:53: no such host".to_owned(),
                "lookup empty.example: no such host".to_owned(),
            ]
        );
        assert_eq!(
            cm.direct_peers(),
            strings(&["good.example", "10.0.0.2:7000"])
        );
        let dials: Vec<Dial> = std::iter::from_fn(|| cm.poll_dial(now)).collect();
        assert_eq!(
            dials,
            vec![
                Dial {
                    addr: sa("10.0.0.2:7000"),
                    accept_new_peer: true
                },
                Dial {
                    addr: sa("10.0.0.9:6783"),
                    accept_new_peer: true
                },
            ]
        );
    }

    #[test]
    fn first_dial_is_immediate() {
        let now = Instant::now();
        let mut cm = ConnectionMaker::new(PORT, true, 0, 7);
        assert!(connect(&mut cm, &["10.0.0.1"], now).is_empty());
        assert_eq!(cm.poll_timeout(), Some(now));
        assert_eq!(
            cm.poll_dial(now),
            Some(Dial {
                addr: sa("10.0.0.1:6783"),
                accept_new_peer: true
            })
        );
        assert_eq!(cm.poll_dial(now), None);
        assert_eq!(
            cm.target_state(sa("10.0.0.1:6783")),
            Some(TargetState::Attempting)
        );
        assert_eq!(cm.poll_timeout(), None);
    }

    #[test]
    fn backoff_grows_within_bounds() {
        let addr = sa("10.0.0.1:6783");
        for seed in 0..200 {
            let base = Instant::now();
            let mut now = base;
            let mut cm = ConnectionMaker::new(PORT, true, 0, seed);
            connect(&mut cm, &["10.0.0.1"], now);
            let mut interval = INITIAL_INTERVAL;
            for _ in 0..30 {
                assert_eq!(cm.poll_dial(now).map(|d| d.addr), Some(addr));
                cm.dial_failed(addr, "connect: connection refused".to_owned(), now);
                let due = cm.poll_timeout().expect("waiting target has a deadline");
                let wait = due - now;
                assert!(
                    wait >= interval / 2 && wait < interval * 3 / 2,
                    "seed {seed}: {wait:?} vs {interval:?}"
                );
                // Not due a moment early.
                assert_eq!(cm.poll_dial(due - Duration::from_nanos(1)), None);
                now = due;
                interval = (interval * 3 / 2).min(MAX_INTERVAL);
            }
            assert_eq!(interval, MAX_INTERVAL);
        }
    }

    #[test]
    fn backoff_is_spread_and_seeded() {
        let addr = sa("10.0.0.1:6783");
        let first_wait = |seed| {
            let now = Instant::now();
            let mut cm = ConnectionMaker::new(PORT, true, 0, seed);
            connect(&mut cm, &["10.0.0.1"], now);
            cm.poll_dial(now);
            cm.dial_failed(addr, "e".to_owned(), now);
            cm.poll_timeout().expect("deadline") - now
        };
        assert_eq!(first_wait(42), first_wait(42));
        let waits: Vec<Duration> = (0..400).map(first_wait).collect();
        assert!(waits.iter().any(|w| *w < secs(1.5)));
        assert!(waits.iter().any(|w| *w > secs(2.5)));
    }

    #[test]
    fn long_lived_connection_retries_now_short_one_backs_off() {
        let base = Instant::now();
        let addr = sa("10.0.0.1:6783");
        let mut cm = ConnectionMaker::new(PORT, true, 0, 3);
        connect(&mut cm, &["10.0.0.1"], base);
        cm.poll_dial(base);
        cm.connection_up(addr);
        assert_eq!(cm.target_state(addr), Some(TargetState::Connected));
        let end = base + secs(61.0);
        cm.connection_down(
            addr,
            Termination::Other,
            Some("read: connection reset".to_owned()),
            end,
        );
        assert_eq!(cm.poll_timeout(), Some(end));
        assert_eq!(cm.poll_dial(end).map(|d| d.addr), Some(addr));
        let st = cm.status(end);
        assert_eq!(st[0].state, "retrying");
        assert_eq!(st[0].info, "read: connection reset");

        // This connection lives only 30 s past its try-after: back off from 2 s.
        cm.connection_up(addr);
        let end2 = end + secs(30.0);
        cm.connection_down(addr, Termination::Other, Some("EOF".to_owned()), end2);
        let wait = cm.poll_timeout().expect("deadline") - end2;
        assert!(wait >= secs(1.0) && wait < secs(3.0), "{wait:?}");
    }

    #[test]
    fn reset_restores_initial_interval() {
        let base = Instant::now();
        let addr = sa("10.0.0.1:6783");
        let mut cm = ConnectionMaker::new(PORT, true, 0, 9);
        connect(&mut cm, &["10.0.0.1"], base);
        let mut now = base;
        for _ in 0..10 {
            cm.poll_dial(now);
            cm.dial_failed(addr, "refused".to_owned(), now);
            now = cm.poll_timeout().expect("deadline");
        }
        cm.poll_dial(now);
        cm.connection_up(addr);
        now += secs(120.0);
        cm.connection_down(addr, Termination::Other, None, now);
        cm.poll_dial(now);
        cm.dial_failed(addr, "refused".to_owned(), now);
        let wait = cm.poll_timeout().expect("deadline") - now;
        assert!(wait < secs(3.0), "{wait:?}");
    }

    #[test]
    fn collision_and_self_are_never_retried() {
        for (how, text) in [
            (Termination::NameCollision, "peer names collision"),
            (Termination::Ourself, "cannot connect to ourself"),
        ] {
            let base = Instant::now();
            let addr = sa("10.0.0.1:6783");
            let mut cm = ConnectionMaker::new(PORT, true, 0, 5);
            connect(&mut cm, &["10.0.0.1"], base);
            cm.poll_dial(base);
            cm.connection_down(addr, how, None, base + secs(1000.0));
            assert_eq!(cm.poll_timeout(), None);
            assert_eq!(cm.poll_dial(base + secs(1e7)), None);
            let st = cm.status(base);
            assert_eq!(st.len(), 1);
            assert_eq!(st[0].state, "failed");
            assert_eq!(st[0].info, format!("{text}, retry: never"));
            // `weft connect` again resets it.
            let later = base + secs(2000.0);
            connect(&mut cm, &["10.0.0.1"], later);
            assert_eq!(cm.poll_dial(later).map(|d| d.addr), Some(addr));
        }
    }

    #[test]
    fn connect_resets_backoff_of_existing_target() {
        let base = Instant::now();
        let addr = sa("10.0.0.1:6783");
        let mut cm = ConnectionMaker::new(PORT, true, 0, 11);
        connect(&mut cm, &["10.0.0.1"], base);
        cm.poll_dial(base);
        cm.dial_failed(addr, "refused".to_owned(), base);
        assert_eq!(cm.poll_dial(base + secs(0.5)), None);
        connect(&mut cm, &["10.0.0.1:6783"], base + secs(0.5));
        assert_eq!(cm.poll_dial(base + secs(0.5)).map(|d| d.addr), Some(addr));
        assert_eq!(cm.direct_peers(), strings(&["10.0.0.1", "10.0.0.1:6783"]));
    }

    #[test]
    fn forget_drops_target_after_connection_ends() {
        let base = Instant::now();
        let addr = sa("10.0.0.1:6783");
        let mut cm = ConnectionMaker::new(PORT, true, 0, 1);
        connect(&mut cm, &["10.0.0.1", "10.0.0.2"], base);
        cm.poll_dial(base);
        cm.connection_up(addr);
        cm.forget_connections(&strings(&["10.0.0.1"]));
        assert_eq!(cm.direct_peers(), strings(&["10.0.0.2"]));
        assert_eq!(cm.target_state(addr), Some(TargetState::Connected));
        cm.connection_down(
            addr,
            Termination::Other,
            Some("EOF".to_owned()),
            base + secs(5.0),
        );
        assert_eq!(cm.target_state(addr), None);
        assert!(cm.status(base).iter().all(|s| s.address != "10.0.0.1:6783"));
        // A waiting target is dropped at once.
        cm.forget_connections(&strings(&["10.0.0.2"]));
        assert_eq!(cm.target_state(sa("10.0.0.2:6783")), None);
        assert!(cm.direct_peers().is_empty());
    }

    #[test]
    fn forgotten_but_discovered_target_is_kept() {
        let base = Instant::now();
        let addr = sa("10.0.0.1:6783");
        let mut cm = ConnectionMaker::new(PORT, true, 0, 1);
        connect(&mut cm, &["10.0.0.1"], base);
        cm.refresh(&[], &[addr], base);
        cm.forget_connections(&strings(&["10.0.0.1"]));
        assert_eq!(
            cm.poll_dial(base),
            Some(Dial {
                addr,
                accept_new_peer: false
            })
        );
    }

    #[test]
    fn replace_clears_direct_peers() {
        let base = Instant::now();
        let mut cm = ConnectionMaker::new(PORT, true, 0, 1);
        connect(&mut cm, &["10.0.0.1", "10.0.0.2"], base);
        let errs = initiate(
            &mut cm,
            &strings(&["10.0.0.3", "10.0.0.2"]),
            true,
            &mut no_dns,
            base,
        );
        assert!(errs.is_empty());
        assert_eq!(cm.direct_peers(), strings(&["10.0.0.3", "10.0.0.2"]));
        assert_eq!(cm.target_state(sa("10.0.0.1:6783")), None);
        let dialled: Vec<SocketAddr> = std::iter::from_fn(|| cm.poll_dial(base))
            .map(|d| d.addr)
            .collect();
        assert_eq!(dialled, vec![sa("10.0.0.2:6783"), sa("10.0.0.3:6783")]);
    }

    #[test]
    fn discovery_adds_and_removes() {
        let base = Instant::now();
        let a = sa("10.0.0.5:6783");
        let b = sa("10.0.0.6:7000");
        let mut cm = ConnectionMaker::new(PORT, true, 0, 1);
        cm.refresh(&[], &[a, sa("10.0.0.6:0")], base);
        assert_eq!(
            cm.poll_dial(base),
            Some(Dial {
                addr: a,
                accept_new_peer: false
            })
        );
        cm.dial_failed(a, "refused".to_owned(), base);
        assert_eq!(
            cm.poll_dial(base),
            Some(Dial {
                addr: sa("10.0.0.6:6783"),
                accept_new_peer: false
            })
        );
        cm.refresh(&[], &[b], base);
        // `a` was waiting and is no longer a candidate: deleted. 10.0.0.6:6783 is mid-attempt.
        assert_eq!(cm.target_state(a), None);
        assert_eq!(
            cm.target_state(sa("10.0.0.6:6783")),
            Some(TargetState::Attempting)
        );
        assert_eq!(
            cm.poll_dial(base),
            Some(Dial {
                addr: b,
                accept_new_peer: false
            })
        );
        cm.dial_failed(sa("10.0.0.6:6783"), "refused".to_owned(), base);
        assert_eq!(cm.target_state(sa("10.0.0.6:6783")), None);

        // Discovery off: candidates ignored.
        let mut off = ConnectionMaker::new(PORT, false, 0, 1);
        off.refresh(&[], &[a], base);
        assert_eq!(off.poll_dial(base), None);
        assert_eq!(off.poll_timeout(), None);
    }

    #[test]
    fn connected_address_is_not_a_target_and_direct_is_suspended() {
        let base = Instant::now();
        let a = sa("10.0.0.1:6783");
        let mut cm = ConnectionMaker::new(PORT, true, 0, 1);
        connect(&mut cm, &["10.0.0.1"], base);
        cm.refresh(
            &[ConnectedAddr {
                addr: a,
                outbound: true,
            }],
            &[sa("10.0.0.7:6783")],
            base,
        );
        assert_eq!(cm.target_state(a), Some(TargetState::Suspended));
        assert_eq!(
            cm.poll_dial(base).map(|d| d.addr),
            Some(sa("10.0.0.7:6783"))
        );
        assert_eq!(cm.poll_dial(base), None);
        assert!(cm.status(base).iter().all(|s| s.address != "10.0.0.1:6783"));
        cm.refresh(&[], &[], base);
        assert_eq!(cm.target_state(a), Some(TargetState::Waiting));
        assert_eq!(cm.poll_dial(base).map(|d| d.addr), Some(a));
    }

    #[test]
    fn inbound_from_same_ip_suppresses_portless_peer_only() {
        let base = Instant::now();
        let mut cm = ConnectionMaker::new(PORT, true, 0, 1);
        let inbound = [
            ConnectedAddr {
                addr: sa("10.0.0.1:51742"),
                outbound: false,
            },
            ConnectedAddr {
                addr: sa("10.0.0.2:40121"),
                outbound: false,
            },
        ];
        cm.refresh(&inbound, &[], base);
        connect(&mut cm, &["10.0.0.1", "10.0.0.2:6783"], base);
        assert_eq!(
            cm.poll_dial(base).map(|d| d.addr),
            Some(sa("10.0.0.2:6783"))
        );
        assert_eq!(cm.poll_dial(base), None);
        assert_eq!(cm.target_state(sa("10.0.0.1:6783")), None);
        // The inbound connection goes away: now we dial.
        cm.refresh(&inbound[1..], &[], base + secs(1.0));
        assert_eq!(
            cm.poll_dial(base + secs(1.0)).map(|d| d.addr),
            Some(sa("10.0.0.1:6783"))
        );
        // IPv4-mapped inbound addresses count too.
        cm.dial_failed(sa("10.0.0.1:6783"), "refused".to_owned(), base + secs(1.0));
        cm.refresh(
            &[ConnectedAddr {
                addr: sa("[::ffff:10.0.0.1]:5000"),
                outbound: false,
            }],
            &[],
            base,
        );
        assert_eq!(
            cm.target_state(sa("10.0.0.1:6783")),
            Some(TargetState::Suspended)
        );
    }

    #[test]
    fn connection_limit_blocks_dialling() {
        let base = Instant::now();
        let mut cm = ConnectionMaker::new(PORT, true, 2, 1);
        connect(&mut cm, &["10.0.0.1", "10.0.0.2", "10.0.0.3"], base);
        let live = [
            ConnectedAddr {
                addr: sa("10.0.0.8:1000"),
                outbound: false,
            },
            ConnectedAddr {
                addr: sa("10.0.0.9:1000"),
                outbound: false,
            },
        ];
        cm.refresh(&live, &[], base);
        assert_eq!(cm.poll_dial(base), None);
        assert_eq!(cm.poll_timeout(), None);
        cm.refresh(&live[..1], &[], base);
        assert_eq!(cm.poll_timeout(), Some(base));
        assert_eq!(
            cm.poll_dial(base).map(|d| d.addr),
            Some(sa("10.0.0.1:6783"))
        );
        // A dial in progress counts against the limit, as a live connection does.
        assert_eq!(cm.poll_dial(base), None);
        assert_eq!(cm.poll_timeout(), None);
        cm.dial_failed(sa("10.0.0.1:6783"), "refused".into(), base);
        assert_eq!(
            cm.poll_dial(base).map(|d| d.addr),
            Some(sa("10.0.0.2:6783"))
        );
        cm.connection_up(sa("10.0.0.2:6783"));
        assert_eq!(cm.poll_dial(base), None);
        cm.connection_down(sa("10.0.0.2:6783"), Termination::Other, None, base);
        assert_eq!(
            cm.poll_dial(base).map(|d| d.addr),
            Some(sa("10.0.0.3:6783"))
        );

        let mut unlimited = ConnectionMaker::new(PORT, true, 0, 1);
        connect(&mut unlimited, &["10.0.0.1"], base);
        unlimited.refresh(&live, &[], base);
        assert!(unlimited.poll_dial(base).is_some());
    }

    fn gossiped(n: usize) -> Vec<SocketAddr> {
        (0..n)
            .map(|i| {
                SocketAddr::new(
                    [10, 9, (i / 250) as u8, (i % 250) as u8].into(),
                    1000 + i as u16,
                )
            })
            .collect()
    }

    #[test]
    fn discovered_addresses_are_dialled_at_a_bounded_rate() {
        let base = Instant::now();
        let mut cm = ConnectionMaker::new(PORT, true, 0, 1);
        // One gossip message naming 2,000 addresses on ports of the sender's choosing.
        cm.refresh(&[], &gossiped(2000), base);
        let burst: Vec<Dial> = std::iter::from_fn(|| cm.poll_dial(base)).collect();
        assert_eq!(burst.len(), DISCOVERY_DIAL_BURST as usize);
        assert!(burst.iter().all(|d| !d.accept_new_peer));
        // Then one per interval, and the timeout says when.
        assert_eq!(cm.poll_timeout(), Some(base + DISCOVERY_DIAL_INTERVAL));
        let mut dials = burst.len();
        let mut t = base;
        for _ in 0..100 {
            t += DISCOVERY_DIAL_INTERVAL;
            while cm.poll_dial(t).is_some() {
                dials += 1;
            }
        }
        // 10 s later: the burst plus ten a second, not 2,000.
        assert_eq!(dials, DISCOVERY_DIAL_BURST as usize + 100);
        // Only so many candidates are remembered.
        assert_eq!(cm.targets.len(), MAX_DISCOVERED_TARGETS);
        assert!(cm.skipped_candidates() > 0);
        // A direct target is not held back by the spent discovery budget.
        connect(&mut cm, &["10.0.0.1"], t);
        assert_eq!(
            cm.poll_dial(t),
            Some(Dial {
                addr: sa("10.0.0.1:6783"),
                accept_new_peer: true
            })
        );
        assert_eq!(cm.poll_dial(t), None, "discovery budget spent");
    }

    #[test]
    fn long_failing_discovered_targets_make_room_for_new_candidates() {
        let mut now = Instant::now();
        let mut cm = ConnectionMaker::new(PORT, true, 0, 1);
        let bogus = gossiped(MAX_DISCOVERED_TARGETS);
        let real = sa("10.200.0.1:6783"); // sorts after every bogus one
        let mut all = bogus.clone();
        all.push(real);
        cm.refresh(&[], &all, now);
        assert_eq!(cm.target_state(real), None, "no room yet");
        // Every bogus address fails until its back-off is long: then the real one gets in.
        for _ in 0..2000 {
            now += Duration::from_secs(1);
            while let Some(d) = cm.poll_dial(now) {
                if d.addr == real {
                    cm.connection_up(real);
                    continue;
                }
                cm.dial_failed(d.addr, "refused".into(), now);
            }
            cm.refresh(&[], &all, now);
            if cm.target_state(real).is_some() {
                break;
            }
        }
        assert!(
            cm.target_state(real).is_some(),
            "the real peer was never tried"
        );
        assert!(cm.targets.len() <= MAX_DISCOVERED_TARGETS);
    }

    #[test]
    fn dials_in_progress_count_against_the_limit() {
        let base = Instant::now();
        let mut cm = ConnectionMaker::new(PORT, true, 3, 1);
        cm.refresh(&[], &gossiped(10), base);
        let dials: Vec<Dial> = std::iter::from_fn(|| cm.poll_dial(base)).collect();
        assert_eq!(dials.len(), 3, "three in flight fill a limit of three");
        assert_eq!(cm.poll_timeout(), None);
        cm.dial_failed(dials[0].addr, "refused".into(), base);
        assert!(
            cm.poll_dial(base).is_some(),
            "a failed dial frees its place"
        );
        assert_eq!(cm.poll_dial(base), None);
    }

    #[test]
    fn status_texts() {
        let base = Instant::now();
        let a = sa("10.0.0.1:6783");
        let mut cm = ConnectionMaker::new(PORT, true, 0, 1);
        connect(&mut cm, &["10.0.0.1", "[2001:db8::2]:7000"], base);
        let v6 = sa("[2001:db8::2]:7000");
        assert_eq!(
            cm.status(base),
            vec![
                TargetStatus {
                    address: "10.0.0.1:6783".to_owned(),
                    state: "waiting",
                    info: "until: 0.0s".to_owned()
                },
                TargetStatus {
                    address: "[2001:db8::2]:7000".to_owned(),
                    state: "waiting",
                    info: "until: 0.0s".to_owned()
                },
            ]
        );
        cm.poll_dial(base);
        cm.poll_dial(base);
        assert_eq!(
            cm.status(base)[0],
            TargetStatus {
                address: "10.0.0.1:6783".to_owned(),
                state: "connecting",
                info: String::new()
            }
        );
        let err = "dial tcp4 10.0.0.1:6783: connect: no route to host";
        cm.dial_failed(a, err.to_owned(), base);
        let due = cm.poll_timeout().expect("deadline");
        let st = cm.status(base);
        assert_eq!(st[0].state, "failed");
        assert_eq!(
            st[0].info,
            format!("{err}, retry: {:.1}s", (due - base).as_secs_f64())
        );
        cm.poll_dial(due);
        assert_eq!(
            cm.status(due)[0],
            TargetStatus {
                address: "10.0.0.1:6783".to_owned(),
                state: "retrying",
                info: err.to_owned()
            }
        );
        cm.connection_up(v6);
        assert_eq!(cm.status(due).len(), 1);
        assert_eq!(in_time(Some(base + secs(65.25)), base), "1m5.2s");
        assert_eq!(in_time(Some(base), base + secs(1.0)), "0.0s");
    }

    #[derive(Debug, Clone)]
    enum Event {
        Connect(Vec<usize>, bool),
        Forget(Vec<usize>),
        Refresh(Vec<(usize, bool)>, Vec<usize>),
        Dial,
        DialFailed(usize),
        Up(usize),
        Down(usize, u8),
        Advance(u64),
        Status,
        /// Answers the oldest lookup handed out: an address, or an error.
        Answer(bool),
    }

    const POOL: [&str; 7] = [
        "10.0.0.1",
        "10.0.0.1:6783",
        "10.0.0.2:7000",
        "10.0.0.3",
        "[::1]",
        "bad:x:y",
        "peer.example",
    ];

    fn pool_addr(i: usize) -> SocketAddr {
        [
            sa("10.0.0.1:6783"),
            sa("10.0.0.2:7000"),
            sa("10.0.0.3:6783"),
            sa("[::1]:6783"),
            sa("10.0.0.4:6783"),
            sa("10.0.0.1:5555"),
        ][i % 6]
    }

    fn event() -> impl Strategy<Value = Event> {
        prop_oneof![
            1 => (prop::collection::vec(0..7usize, 0..4), any::<bool>())
                .prop_map(|(p, r)| Event::Connect(p, r)),
            1 => any::<bool>().prop_map(Event::Answer),
            1 => prop::collection::vec(0..6usize, 0..3).prop_map(Event::Forget),
            1 => (
                prop::collection::vec((0..6usize, any::<bool>()), 0..4),
                prop::collection::vec(0..6usize, 0..4),
            )
                .prop_map(|(c, d)| Event::Refresh(c, d)),
            4 => Just(Event::Dial),
            2 => (0..6usize).prop_map(Event::DialFailed),
            2 => (0..6usize).prop_map(Event::Up),
            2 => (0..6usize, 0..3u8).prop_map(|(a, h)| Event::Down(a, h)),
            2 => (0..200_000u64).prop_map(Event::Advance),
            1 => Just(Event::Status),
        ]
    }

    proptest! {
        #[test]
        fn random_events_never_double_dial(
            seed in any::<u64>(),
            limit in 0..3usize,
            discovery in any::<bool>(),
            events in prop::collection::vec(event(), 0..120),
        ) {
            let base = Instant::now();
            let mut now = base;
            let mut cm = ConnectionMaker::new(PORT, discovery, limit, seed);
            // Addresses handed out by poll_dial and not yet ended.
            let mut outstanding: BTreeSet<SocketAddr> = BTreeSet::new();
            // Lookups handed out and not answered.
            let mut lookups: VecDeque<Lookup> = VecDeque::new();
            for ev in events {
                match ev {
                    Event::Connect(p, replace) => {
                        let peers: Vec<String> = p.iter().map(|&i| POOL[i].to_owned()).collect();
                        cm.initiate_connections(&peers, replace, now);
                        lookups.extend(std::iter::from_fn(|| cm.poll_lookup()));
                    }
                    Event::Answer(ok) => {
                        if let Some(l) = lookups.pop_front() {
                            let answer = if ok {
                                Ok(vec![SocketAddr::new([10, 0, 0, 4].into(), l.port)])
                            } else {
                                Err(format!("lookup {}: no such host", l.host))
                            };
                            cm.handle_lookup(l.token, answer, now);
                        }
                    }
                    Event::Forget(p) => {
                        let peers: Vec<String> = p.iter().map(|&i| POOL[i].to_owned()).collect();
                        cm.forget_connections(&peers);
                    }
                    Event::Refresh(c, d) => {
                        let connected: Vec<ConnectedAddr> = c
                            .iter()
                            .map(|&(i, outbound)| ConnectedAddr { addr: pool_addr(i), outbound })
                            .collect();
                        let discovered: Vec<SocketAddr> = d.iter().map(|&i| pool_addr(i)).collect();
                        cm.refresh(&connected, &discovered, now);
                    }
                    Event::Dial => {
                        // An expired deadline is handled or yields a dial (no busy loop in the
                        // driver).
                        cm.handle_timeout(now);
                        let dial = cm.poll_dial(now);
                        let expired = cm.poll_timeout().is_some_and(|t| t <= now);
                        prop_assert!(!expired || dial.is_some());
                        if let Some(dial) = dial {
                            prop_assert!(
                                outstanding.insert(dial.addr),
                                "double dial of {}",
                                dial.addr
                            );
                            prop_assert_eq!(
                                cm.target_state(dial.addr),
                                Some(TargetState::Attempting)
                            );
                        }
                    }
                    Event::DialFailed(i) => {
                        let addr = pool_addr(i);
                        cm.dial_failed(addr, "refused".to_owned(), now);
                        outstanding.remove(&addr);
                    }
                    Event::Up(i) => cm.connection_up(pool_addr(i)),
                    Event::Down(i, h) => {
                        let addr = pool_addr(i);
                        let how = match h {
                            0 => Termination::Other,
                            1 => Termination::NameCollision,
                            _ => Termination::Ourself,
                        };
                        cm.connection_down(addr, how, Some("EOF".to_owned()), now);
                        outstanding.remove(&addr);
                    }
                    Event::Advance(ms) => now += Duration::from_millis(ms),
                    Event::Status => {
                        for s in cm.status(now) {
                            let known = ["connecting", "retrying", "failed", "waiting"];
                            prop_assert!(known.contains(&s.state));
                        }
                    }
                }
            }
        }
    }
}
