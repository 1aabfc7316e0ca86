//! A deterministic simulation of IPAM across many peers in one process: a virtual clock,
//! message delays, partitions and heals, restarts that keep persisted state, crashes that lose
//! it (followed by an operator's `rmpeer` on a survivor), and concurrent allocations, claims and
//! releases. After every step it checks that no address is held twice anywhere, and that each
//! peer's space matches its ring; at the end it checks that every peer on the majority side of
//! a partition, and every peer once healed, can allocate.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use weft_wire::PeerName;

use super::allocator::{
    Allocator, Config, GossipState, InitMode, Output, PersistRecord, Persisted, Reply, RequestId,
    UnicastMsg,
};
use super::{Address, Cidr};

/// Sizes and rates of one run.
#[derive(Debug, Clone)]
struct Params {
    seed: u64,
    peers: usize,
    /// Steps of chaos, each [`STEP`] long.
    steps: usize,
    universe: &'static str,
}

const STEP: Duration = Duration::from_millis(250);

enum Delivery {
    Gossip(Option<PeerName>, GossipState),
    Unicast(PeerName, UnicastMsg),
}

struct InFlight {
    /// Destination slot and the incarnation it was sent to.
    dst: usize,
    incarnation: u64,
    what: Delivery,
}

struct Peer {
    alloc: Allocator,
    incarnation: u64,
}

struct Slot {
    name: PeerName,
    /// `None` while down (restarting) or crashed.
    peer: Option<Peer>,
    /// What this host persisted; `None` after a crash.
    db: Persisted,
    /// When a down peer comes back.
    back_at: Option<Instant>,
    group: u8,
    next_gossip: Instant,
}

struct Sim {
    p: Params,
    rng: StdRng,
    now: Instant,
    universe: Cidr,
    slots: Vec<Slot>,
    queue: BinaryHeap<Reverse<(Instant, u64)>>,
    flights: BTreeMap<u64, InFlight>,
    seq: u64,
    next_name: u64,
    next_request: u64,
    /// Replies seen: request → (slot, incarnation, outcome is an address).
    replies: BTreeMap<RequestId, bool>,
    /// Crashed peers an operator still has to remove, with the survivor chosen to do it.
    to_remove: BTreeMap<PeerName, Option<PeerName>>,
    gossip_errors: u64,
    allocated: u64,
    claimed: u64,
    restarts: u64,
    partitions: u64,
}

impl Sim {
    fn new(p: Params) -> Self {
        let mut rng = StdRng::seed_from_u64(p.seed);
        let now = Instant::now();
        let universe = Cidr::parse_subnet(p.universe).unwrap();
        let mut sim = Self {
            rng: StdRng::seed_from_u64(rng.gen()),
            p,
            now,
            universe,
            slots: Vec::new(),
            queue: BinaryHeap::new(),
            flights: BTreeMap::new(),
            seq: 0,
            next_name: 0x10,
            next_request: 1,
            replies: BTreeMap::new(),
            to_remove: BTreeMap::new(),
            gossip_errors: 0,
            allocated: 0,
            claimed: 0,
            restarts: 0,
            partitions: 0,
        };
        for _ in 0..sim.p.peers {
            let name = sim.fresh_name();
            let slot = Slot {
                name,
                peer: None,
                db: Persisted::default(),
                back_at: None,
                group: 0,
                next_gossip: now,
            };
            sim.slots.push(slot);
        }
        for i in 0..sim.slots.len() {
            sim.start(i);
        }
        sim.refresh_known();
        sim
    }

    fn fresh_name(&mut self) -> PeerName {
        self.next_name += 1;
        PeerName(self.next_name)
    }

    fn start(&mut self, i: usize) {
        let incarnation = self.rng.gen();
        let config = Config {
            name: self.slots[i].name,
            uid: incarnation,
            nickname: format!("host{i}"),
            universe: self.universe,
            mode: InitMode::Consensus {
                peer_count: Some(self.p.peers as u32),
            },
            pre_claims: vec![],
            rng_seed: self.rng.gen(),
        };
        let db = self.slots[i].db.clone();
        let alloc = Allocator::new(config, Some(db), self.now).unwrap();
        self.slots[i].peer = Some(Peer { alloc, incarnation });
        self.slots[i].back_at = None;
        self.slots[i].next_gossip = self.now + Duration::from_millis(self.rng.gen_range(0..5000));
        self.drain(i);
    }

    fn live(&self) -> impl Iterator<Item = usize> + '_ {
        (0..self.slots.len()).filter(|&i| self.slots[i].peer.is_some())
    }

    fn refresh_known(&mut self) {
        for i in 0..self.slots.len() {
            let g = self.slots[i].group;
            let known: BTreeSet<PeerName> = self
                .live()
                .filter(|&j| j != i && self.slots[j].group == g)
                .map(|j| self.slots[j].name)
                .collect();
            if let Some(p) = &mut self.slots[i].peer {
                p.alloc.set_known_peers(known);
            }
        }
    }

    fn slot_of(&self, name: PeerName) -> Option<usize> {
        self.slots.iter().position(|s| s.name == name)
    }

    fn send(&mut self, dst: usize, what: Delivery) {
        let Some(peer) = &self.slots[dst].peer else {
            return;
        };
        let incarnation = peer.incarnation;
        self.seq += 1;
        let at = self.now + Duration::from_millis(self.rng.gen_range(5..150));
        self.queue.push(Reverse((at, self.seq)));
        self.flights.insert(
            self.seq,
            InFlight {
                dst,
                incarnation,
                what,
            },
        );
    }

    /// Acts on everything slot `i` asked for.
    fn drain(&mut self, i: usize) {
        loop {
            let Some(peer) = &mut self.slots[i].peer else {
                return;
            };
            let Some(out) = peer.alloc.poll_output() else {
                return;
            };
            let me = self.slots[i].name;
            let group = self.slots[i].group;
            match out {
                Output::Persist(PersistRecord::Ring { peer, ring }) => {
                    self.slots[i].db.peer = Some(peer);
                    self.slots[i].db.ring = Some(ring);
                }
                Output::Persist(PersistRecord::Owned(m)) => self.slots[i].db.owned = Some(m),
                Output::Broadcast(s) => {
                    let dsts: Vec<usize> = self
                        .live()
                        .filter(|&j| j != i && self.slots[j].group == group)
                        .collect();
                    for j in dsts {
                        self.send(j, Delivery::Gossip(Some(me), s.clone()));
                    }
                }
                Output::Unicast { dst, msg } => {
                    if let Some(j) = self.slot_of(dst) {
                        if self.slots[j].group == group {
                            self.send(j, Delivery::Unicast(me, msg));
                        }
                    }
                }
                Output::Reply { id, result } => {
                    match &result {
                        Ok(Reply::Allocated(_)) => self.allocated += 1,
                        Ok(Reply::Claimed) => self.claimed += 1,
                        _ => {}
                    }
                    self.replies
                        .insert(id, matches!(result, Ok(Reply::Allocated(_))));
                }
            }
        }
    }

    fn deliver_due(&mut self) {
        while let Some(Reverse((at, seq))) = self.queue.peek().copied() {
            if at > self.now {
                break;
            }
            self.queue.pop();
            let Some(f) = self.flights.remove(&seq) else {
                continue;
            };
            let i = f.dst;
            let src_group_ok = match &f.what {
                Delivery::Gossip(Some(src), _) | Delivery::Unicast(src, _) => self
                    .slot_of(*src)
                    .is_some_and(|s| self.slots[s].group == self.slots[i].group),
                Delivery::Gossip(None, _) => true,
            };
            let Some(peer) = &mut self.slots[i].peer else {
                continue;
            };
            // Lost: the receiver restarted, or a partition cut the path meanwhile.
            if peer.incarnation != f.incarnation || !src_group_ok {
                continue;
            }
            let r = match f.what {
                Delivery::Gossip(src, s) => peer.alloc.handle_gossip(src, s),
                Delivery::Unicast(src, m) => peer.alloc.handle_unicast(src, m),
            };
            if let Err(e) = r {
                eprintln!("gossip error at {}: {e}", self.slots[i].name);
                self.gossip_errors += 1;
            }
            self.drain(i);
        }
    }

    fn tick(&mut self) {
        self.now += STEP;
        self.deliver_due();
        for i in 0..self.slots.len() {
            if self.slots[i].back_at.is_some_and(|t| t <= self.now) {
                self.start(i);
                self.refresh_known();
            }
            let Some(peer) = &mut self.slots[i].peer else {
                continue;
            };
            if peer.alloc.poll_timeout() <= self.now {
                peer.alloc.handle_timeout(self.now);
            }
            self.drain(i);
            if self.slots[i].next_gossip <= self.now {
                self.slots[i].next_gossip = self.now + Duration::from_secs(5);
                self.periodic_gossip(i);
            }
        }
    }

    fn periodic_gossip(&mut self, i: usize) {
        let Some(peer) = &self.slots[i].peer else {
            return;
        };
        let state = peer.alloc.gossip_state();
        let g = self.slots[i].group;
        let mut neighbours: Vec<usize> = self
            .live()
            .filter(|&j| j != i && self.slots[j].group == g)
            .collect();
        for _ in 0..3 {
            if neighbours.is_empty() {
                break;
            }
            let j = neighbours.swap_remove(self.rng.gen_range(0..neighbours.len()));
            self.send(j, Delivery::Gossip(None, state.clone()));
        }
    }

    fn request(&mut self) -> RequestId {
        self.next_request += 1;
        RequestId(self.next_request)
    }

    fn random_live(&mut self) -> Option<usize> {
        let live: Vec<usize> = self.live().collect();
        (!live.is_empty()).then(|| live[self.rng.gen_range(0..live.len())])
    }

    /// One random event (or none).
    fn chaos(&mut self) {
        let roll = self.rng.gen_range(0..1000);
        match roll {
            0..=199 => {
                if let Some(i) = self.random_live() {
                    let id = self.request();
                    let ident = format!("c{}", id.0);
                    let subnet = self.universe;
                    self.with(i, |a| a.allocate(id, &ident, subnet, true));
                }
            }
            200..=259 => {
                if let Some(i) = self.random_live() {
                    let id = self.request();
                    let host = self.universe.host_range();
                    let addr = Address(self.rng.gen_range(host.start.0..host.end.0));
                    let cidr = self.universe.with_addr(addr);
                    let ident = format!("k{}", id.0);
                    self.with(i, |a| a.claim(id, &ident, cidr, true, false));
                }
            }
            260..=339 => {
                if let Some(i) = self.random_live() {
                    let idents: Vec<String> = self.slots[i]
                        .peer
                        .as_ref()
                        .map(|p| p.alloc.owned().keys().cloned().collect())
                        .unwrap_or_default();
                    if !idents.is_empty() {
                        let ident = idents[self.rng.gen_range(0..idents.len())].clone();
                        self.with(i, |a| {
                            let _ = a.delete(&ident);
                        });
                    }
                }
            }
            340..=344 => self.partition(),
            345..=352 => self.heal(),
            353..=356 => {
                // Restart with state kept.
                if let Some(i) = self.random_live() {
                    self.restarts += 1;
                    self.slots[i].peer = None;
                    self.slots[i].back_at =
                        Some(self.now + Duration::from_millis(self.rng.gen_range(500..10_000)));
                    self.refresh_known();
                }
            }
            357..=358 => self.crash(),
            _ => {}
        }
        self.operator();
    }

    fn with(&mut self, i: usize, f: impl FnOnce(&mut Allocator)) {
        if let Some(p) = &mut self.slots[i].peer {
            f(&mut p.alloc);
        }
        self.drain(i);
    }

    /// Splits the peers into a majority and a minority.
    fn partition(&mut self) {
        let n = self.slots.len();
        let minority = self.rng.gen_range(1..=(n - 1) / 2);
        self.partitions += 1;
        for s in &mut self.slots {
            s.group = 0;
        }
        let mut idx: Vec<usize> = (0..n).collect();
        for k in 0..minority {
            let j = self.rng.gen_range(k..n);
            idx.swap(k, j);
            self.slots[idx[k]].group = 1;
        }
        self.refresh_known();
    }

    fn heal(&mut self) {
        for s in &mut self.slots {
            s.group = 0;
        }
        self.refresh_known();
    }

    /// A host dies with its disk; a new peer (new name, no state) takes the slot later.
    fn crash(&mut self) {
        let Some(i) = self.random_live() else { return };
        let old = self.slots[i].name;
        self.to_remove.insert(old, None);
        self.slots[i].name = self.fresh_name();
        self.slots[i].db = Persisted::default();
        self.slots[i].peer = None;
        self.slots[i].back_at =
            Some(self.now + Duration::from_millis(self.rng.gen_range(1000..20_000)));
        self.refresh_known();
    }

    /// The operator runs `rmpeer` for crashed peers, on one chosen survivor each, again while
    /// any live ring still names the dead peer.
    fn operator(&mut self) {
        if self.rng.gen_range(0..20) == 0 {
            self.operator_now();
        }
    }

    /// Every address held by a container anywhere (live peers, and hosts restarting with
    /// their disk), with duplicates reported.
    fn check(&self) {
        let mut holders: BTreeMap<Address, PeerName> = BTreeMap::new();
        for s in &self.slots {
            let owned = match &s.peer {
                Some(p) => {
                    assert!(
                        p.alloc.check_invariants(),
                        "{}: space and ring disagree",
                        s.name
                    );
                    Some(p.alloc.owned().clone())
                }
                None => s.db.owned.clone(),
            };
            for d in owned.unwrap_or_default().values() {
                for c in &d.cidrs {
                    if let Some(other) = holders.insert(c.addr, s.name) {
                        panic!(
                            "{} held by both {other} and {} at {:?}",
                            c.addr, s.name, self.now
                        );
                    }
                }
            }
        }
    }

    fn run_for(&mut self, d: Duration) {
        let until = self.now + d;
        while self.now < until {
            self.tick();
            self.check();
        }
    }

    /// Each listed peer allocates once; all must succeed within `limit`.
    fn all_can_allocate(&mut self, peers: &[usize], limit: Duration) {
        let mut ids = Vec::new();
        for &i in peers {
            let id = self.request();
            let subnet = self.universe;
            self.with(i, |a| {
                a.allocate(id, &format!("probe{}", id.0), subnet, true)
            });
            ids.push((i, id));
        }
        let until = self.now + limit;
        while self.now < until
            && !ids
                .iter()
                .all(|(_, id)| self.replies.get(id) == Some(&true))
        {
            self.tick();
            self.check();
        }
        for (i, id) in ids {
            assert_eq!(
                self.replies.get(&id),
                Some(&true),
                "{} could not allocate (pending {:?}, readiness {})",
                self.slots[i].name,
                self.slots[i].peer.as_ref().map(|p| p.alloc.pending()),
                self.slots[i]
                    .peer
                    .as_ref()
                    .map(|p| p.alloc.readiness().to_string())
                    .unwrap_or_default(),
            );
        }
    }

    fn run(&mut self) {
        for _ in 0..self.p.steps {
            self.chaos();
            self.tick();
            self.check();
        }
        // A stable partition: everyone on the majority side, alive, can allocate.
        self.bring_all_up();
        self.partition();
        self.run_for(Duration::from_secs(20));
        let majority: Vec<usize> = self.live().filter(|&i| self.slots[i].group == 0).collect();
        self.all_can_allocate(&majority, Duration::from_secs(120));
        // Healed: rings converge and everyone can allocate.
        self.heal();
        for _ in 0..12 {
            self.operator_now();
            self.run_for(Duration::from_secs(5));
        }
        let everyone: Vec<usize> = self.live().collect();
        self.all_can_allocate(&everyone, Duration::from_secs(120));
        self.run_for(Duration::from_secs(15));
        // Ownership converges (free counts and their versions keep moving with gossip).
        let owners = |s: &Slot| -> Vec<(Address, PeerName)> {
            let ring = s.peer.as_ref().unwrap().alloc.ring();
            ring.entries().iter().map(|e| (e.token, e.peer)).collect()
        };
        let first = owners(&self.slots[0]);
        for s in &self.slots {
            assert!(owners(s) == first, "{} has not converged", s.name);
            let names = s.peer.as_ref().unwrap().alloc.ring().peer_names();
            for gone in self.to_remove.keys() {
                assert!(!names.contains(gone), "{gone} still owns ranges");
            }
        }
        assert_eq!(self.gossip_errors, 0, "merges refused");
        eprintln!(
            "ipam sim: {} peers, {} allocated, {} claimed, {} partitions, {} restarts, {} crashed, \
             ring of {} entries",
            self.slots.len(),
            self.allocated,
            self.claimed,
            self.partitions,
            self.restarts,
            self.to_remove.len(),
            first.len()
        );
    }

    /// The operator runs `rmpeer` for crashed peers, on one chosen survivor each, again while
    /// any live ring still names the dead peer.
    fn operator_now(&mut self) {
        let dead: Vec<PeerName> = self.to_remove.keys().copied().collect();
        for gone in dead {
            let named = self.live().any(|i| {
                self.slots[i]
                    .peer
                    .as_ref()
                    .is_some_and(|p| p.alloc.ring().peer_names().contains(&gone))
            });
            if !named {
                continue;
            }
            let chosen = self.to_remove.get(&gone).copied().flatten();
            let at = match chosen
                .and_then(|c| self.slot_of(c))
                .filter(|&i| self.slots[i].peer.is_some())
            {
                Some(i) => i,
                None => match self.random_live() {
                    Some(i) => {
                        self.to_remove.insert(gone, Some(self.slots[i].name));
                        i
                    }
                    None => continue,
                },
            };
            let text = gone.to_string();
            self.with(at, |a| {
                a.admin_takeover(&text);
            });
        }
    }

    fn bring_all_up(&mut self) {
        for i in 0..self.slots.len() {
            if self.slots[i].peer.is_none() {
                self.start(i);
            }
        }
        self.refresh_known();
    }
}

#[test]
fn ipam_sim_50_peers_partitions_restarts_crashes() {
    let mut sim = Sim::new(Params {
        seed: 7,
        peers: 50,
        steps: 1200,
        universe: "10.32.0.0/16",
    });
    sim.run();
}

#[test]
fn ipam_sim_other_seed() {
    let mut sim = Sim::new(Params {
        seed: 1234,
        peers: 50,
        steps: 400,
        universe: "10.40.0.0/20",
    });
    sim.run();
}

#[test]
#[ignore = "long: 150 peers, 20 simulated minutes, three seeds; run with --release --ignored"]
fn ipam_sim_large() {
    for seed in 0..3 {
        let mut sim = Sim::new(Params {
            seed,
            peers: 150,
            steps: 4800,
            universe: "10.32.0.0/12",
        });
        sim.run();
    }
}
