//! A deterministic simulation of IPAM across many peers in one process: a virtual clock,
//! message delays, partitions and heals, restarts that keep persisted state, crashes that lose
//! it (followed by an operator's `rmpeer` on a survivor), and concurrent allocations, claims and
//! releases. After every step it checks that no address is held twice anywhere, and that each
//! peer's space matches its ring; at the end it checks that every peer on the majority side of
//! a partition, and every peer once healed, can allocate. With `deltas` on, every peer takes
//! ring deltas, so ring changes travel as deltas (lost ones covered by periodic gossip and by
//! asking for the whole state on a gap).
//!
//! `ring_change_cost` measures what one donation costs across a full mesh of N peers, in
//! payload bytes, with whole-state gossip and with deltas.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use weft_types::Ipv4Cidr;
use weft_wire::PeerName;

use super::allocator::{
    Allocator, Config, GossipDelta, GossipState, InitMode, Output, PersistRecord, Persisted, Reply,
    RequestId, UnicastMsg,
};
use super::{parse_subnet, Address, CidrBlock};

/// Sizes and rates of one run.
#[derive(Debug, Clone)]
struct Params {
    seed: u64,
    peers: usize,
    /// Steps of chaos, each [`STEP`] long.
    steps: usize,
    universe: &'static str,
    /// Every peer takes ring deltas.
    deltas: bool,
}

const STEP: Duration = Duration::from_millis(250);

enum Delivery {
    Gossip(Option<PeerName>, GossipState),
    Delta(PeerName, GossipDelta),
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
    universe: Ipv4Cidr,
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
    /// Ring changes that went out whole, and as deltas.
    full_broadcasts: u64,
    delta_broadcasts: u64,
}

impl Sim {
    fn new(p: Params) -> Self {
        let mut rng = StdRng::seed_from_u64(p.seed);
        let now = Instant::now();
        let universe = parse_subnet(p.universe).unwrap();
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
            full_broadcasts: 0,
            delta_broadcasts: 0,
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
            let known: BTreeSet<PeerName> = self
                .others_in_group(i)
                .into_iter()
                .map(|j| self.slots[j].name)
                .collect();
            if let Some(p) = &mut self.slots[i].peer {
                if self.p.deltas {
                    p.alloc.set_delta_peers(known.clone());
                }
                p.alloc.set_known_peers(known);
            }
        }
    }

    /// Live peers on slot `i`'s side of any partition, but `i`.
    fn others_in_group(&self, i: usize) -> Vec<usize> {
        let g = self.slots[i].group;
        self.live()
            .filter(|&j| j != i && self.slots[j].group == g)
            .collect()
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
                    self.full_broadcasts += 1;
                    let dsts = self.others_in_group(i);
                    for j in dsts {
                        self.send(j, Delivery::Gossip(Some(me), s.clone()));
                    }
                }
                Output::BroadcastDelta(d) => {
                    self.delta_broadcasts += 1;
                    let dsts = self.others_in_group(i);
                    for j in dsts {
                        self.send(j, Delivery::Delta(me, d.clone()));
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
                Delivery::Gossip(Some(src), _)
                | Delivery::Delta(src, _)
                | Delivery::Unicast(src, _) => self
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
                Delivery::Delta(src, d) => peer.alloc.handle_delta(src, d),
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
        let mut neighbours = self.others_in_group(i);
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
                    let cidr = self.universe.with_addr(addr.into());
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
                    if let Some(other) = holders.insert(c.addr().into(), s.name) {
                        panic!(
                            "{} held by both {other} and {} at {:?}",
                            c.addr(),
                            s.name,
                            self.now
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
        if self.p.deltas {
            assert!(self.delta_broadcasts > 0, "no ring change went as a delta");
        } else {
            assert_eq!(self.delta_broadcasts, 0, "a delta without delta peers");
        }
        eprintln!(
            "ipam sim: {} peers, {} allocated, {} claimed, {} partitions, {} restarts, {} crashed, \
             ring of {} entries, {} whole-state and {} delta broadcasts",
            self.slots.len(),
            self.allocated,
            self.claimed,
            self.partitions,
            self.restarts,
            self.to_remove.len(),
            first.len(),
            self.full_broadcasts,
            self.delta_broadcasts
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
        deltas: false,
    });
    sim.run();
}

#[test]
fn ipam_sim_with_deltas() {
    let mut sim = Sim::new(Params {
        seed: 99,
        peers: 50,
        steps: 800,
        universe: "10.32.0.0/16",
        deltas: true,
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
        deltas: false,
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
            deltas: seed % 2 == 1,
        });
        sim.run();
    }
}

/// Bytes one ring change puts on the wires of a full mesh of `n` peers: every message the
/// change causes (the broadcast, to each of the `n - 1` others, unicasts, and whatever the
/// receivers send in turn, such as requests for the whole state) counted as the protocol
/// message that carries it (tag, channel name, source, payload). `change` makes the change
/// on peer 0, given the peers' names.
fn ring_change_cost(n: usize, deltas: bool, change: &dyn Fn(&mut Allocator, &[PeerName])) -> u64 {
    use super::channel;
    use crate::mesh::{ChannelMessage, ChannelSend, SendTo};
    use weft_wire::protocol::ProtocolMsg;

    const NOW: i64 = 1_700_000_000;
    let now = Instant::now();
    let names: Vec<PeerName> = (0..n as u64).map(|i| PeerName(0x0100 + i)).collect();
    let mut peers: Vec<Allocator> = names
        .iter()
        .map(|&name| {
            let config = Config {
                name,
                uid: name.0,
                nickname: format!("host{}", name.0),
                universe: parse_subnet("10.32.0.0/12").unwrap(),
                mode: InitMode::Seed(names.clone()),
                pre_claims: vec![],
                rng_seed: name.0,
            };
            let mut a = Allocator::new(config, None, now).unwrap();
            let others: BTreeSet<PeerName> = names.iter().copied().filter(|&p| p != name).collect();
            if deltas {
                a.set_delta_peers(others.clone());
            }
            a.set_known_peers(others);
            while a.poll_output().is_some() {}
            a
        })
        .collect();
    // Everyone knows everyone's nickname, as after a while of periodic gossip.
    let payload = channel::periodic_gossip(&peers[0], NOW);
    for p in &mut peers[1..] {
        let src = names[0];
        let message = ChannelMessage::Gossip {
            src,
            payload: payload.clone(),
        };
        channel::handle_message(p, message).unwrap();
        while p.poll_output().is_some() {}
    }
    change(&mut peers[0], &names);
    let mut bytes = 0u64;
    let mut wire: std::collections::VecDeque<(usize, ChannelSend)> = Default::default();
    for _ in 0..100_000 {
        for (i, p) in peers.iter_mut().enumerate() {
            while let Some(out) = p.poll_output() {
                if let Some(send) = channel::outgoing(&out, NOW) {
                    wire.push_back((i, send));
                }
            }
        }
        let Some((from, send)) = wire.pop_front() else {
            let first = peers[0].ring().entries().to_vec();
            for p in &peers {
                assert_eq!(
                    p.ring().entries(),
                    &first[..],
                    "rings differ after the change"
                );
            }
            return bytes;
        };
        let src = names[from];
        let frame_len = |channel: &str, payload: &[u8]| {
            let mut out = Vec::new();
            ProtocolMsg::GossipBroadcast {
                channel: channel.to_owned(),
                src,
                payload: payload.to_vec(),
            }
            .encode(&mut out);
            out.len() as u64
        };
        let ChannelSend {
            channel,
            to,
            payload,
        } = send;
        let (dsts, message): (Vec<usize>, ChannelMessage) = match to {
            SendTo::Unicast(dst) => {
                // A unicast frame also names its destination: six bytes more.
                bytes += frame_len(channel, &payload) + 6;
                let to = names.iter().position(|&p| p == dst).into_iter().collect();
                (to, ChannelMessage::Unicast { src, payload })
            }
            _ => {
                bytes += frame_len(channel, &payload) * (n as u64 - 1);
                let all = (0..n).filter(|&j| j != from).collect();
                (all, ChannelMessage::Broadcast { src, payload })
            }
        };
        for j in dsts {
            channel::handle_channel_message(&mut peers[j], channel, message.clone()).unwrap();
        }
    }
    panic!("the peers never fell quiet");
}

/// The cost of one ring change across a full mesh, whole-state gossip against deltas, for
/// growing N; prints the table with `--nocapture`.
#[test]
fn ipam_ring_change_cost_grows_as_n_log_n_with_deltas() {
    let donation = |a: &mut Allocator, names: &[PeerName]| {
        // Peer 1 asks peer 0 for space anywhere in the universe; peer 0 gives a block.
        let universe = a.universe().range();
        a.handle_unicast(names[1], UnicastMsg::SpaceRequest(universe))
            .unwrap();
    };
    let rmpeer = |a: &mut Allocator, names: &[PeerName]| {
        // Peer 0 takes over the ranges of the last peer (rmpeer).
        assert!(a.admin_takeover(&names[names.len() - 1].to_string()) > 0);
    };
    eprintln!(
        "{:>4} {:>10} {:>8} {:>10} {:>8} {:>8} {:>8} {:>8}",
        "N", "donation", "", "rmpeer", "", "", "N·log2N", "N²"
    );
    eprintln!(
        "{:>4} {:>10} {:>8} {:>10} {:>8} {:>8} {:>8} {:>8}",
        "", "full", "delta", "full", "delta", "full/Δ", "", ""
    );
    let mut rows = Vec::new();
    for n in [16usize, 32, 64, 128, 256] {
        let full = ring_change_cost(n, false, &donation);
        let delta = ring_change_cost(n, true, &donation);
        let full_rm = ring_change_cost(n, false, &rmpeer);
        let delta_rm = ring_change_cost(n, true, &rmpeer);
        let nlogn = n as u64 * u64::from(n.ilog2());
        eprintln!(
            "{n:>4} {full:>10} {delta:>8} {full_rm:>10} {delta_rm:>8} {:>8.1} {nlogn:>8} {:>8}",
            full as f64 / delta as f64,
            n * n
        );
        rows.push((n as u64, full, delta, delta_rm, nlogn));
    }
    for &(n, full, delta, delta_rm, nlogn) in &rows {
        // A delta is a few entries, whatever N: within a constant of N·log N (here, of N)...
        assert!(delta <= 64 * nlogn, "N={n}: {delta} bytes with deltas");
        assert!(
            delta_rm <= 64 * nlogn,
            "N={n}: {delta_rm} bytes with deltas"
        );
        // ...while the whole ring to everyone is N² entries.
        assert!(full >= n * n, "N={n}: {full} bytes of whole state");
    }
    let (first, last) = (rows[0], rows[rows.len() - 1]);
    // From 16 to 256 peers: 16× the peers; the whole state grows towards 256× (fixed costs
    // weigh more at small N), deltas ~16×.
    assert!(
        last.1 / first.1 >= 64,
        "whole state grew {}×",
        last.1 / first.1
    );
    assert!(last.2 / first.2 <= 20, "deltas grew {}×", last.2 / first.2);
}
