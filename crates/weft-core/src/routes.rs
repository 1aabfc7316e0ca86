//! Route calculation over a [`Peers`] view (spec §2.5) and gossip neighbour choice (§3.2).
//!
//! [`Routes`] is an immutable snapshot computed from one topology view: unicast next hops from
//! us (over established symmetric connections for the data plane, over all connections for
//! gossip), broadcast next hops per source, and the weighting used to pick random gossip
//! neighbours. It owns no timers: Weave Net defers recalculation by 100 ms and coalesces; the
//! caller decides when to call [`Routes::calculate`] again (any time the view changed).
//!
//! Results match Weave Net's exactly, because every peer must compute the same routes from the
//! same view or broadcasts duplicate and unicasts loop: breadth-first search from the start
//! peer where each level's worklist is processed in ascending name order and the first peer to
//! reach another decides its next hop. Where Go iterates maps (broadcast hop lists, neighbour
//! weights) we use name order, so results are also deterministic.
//!
//! # Complexity
//! With V peers and E connection entries (a full mesh of 500 has E ≈ 250 000):
//! * [`Routes::calculate`]: O(V log V + E log V) time, O(V + E) memory — adjacency lists in
//!   dense indices (assigned in name order, so comparing indices compares names) plus two BFS.
//!   This is the whole cost of a topology change; nothing is computed per source.
//! * broadcast hops for one source: one BFS that stops when we are dequeued, O(V + E); computed
//!   lazily on first use and cached for the life of the snapshot (as Go does), so a snapshot
//!   only pays for the sources that actually broadcast. The cache lives in a
//!   [`BroadcastRoutes`] that the data path can hold on another thread
//!   ([`Routes::broadcast_routes`]); what either side computes, the other reuses.
//!   [`Routes::broadcast_table`] lists only what is cached (plus our own source), so status
//!   never forces the O(V·(V + E)) of every source.
//! * [`Routes::random_neighbours`]: O(d²) for d neighbours (weights are precomputed).

use std::sync::{Arc, OnceLock};

use rand::Rng;
use weft_wire::PeerName;

use crate::topology::{dense_index, Peers};

/// Marker for "not reached" in hop tables.
const UNREACHED: u32 = u32::MAX;

/// Unicast and broadcast routes from one peer's point of view, for one topology snapshot.
#[derive(Debug, Clone)]
pub struct Routes {
    /// The adjacency and the lazily filled broadcast caches, shared with the data path.
    graph: BroadcastRoutes,
    /// Next hop from `origin` per destination over `adj_symmetric`; `UNREACHED` if none;
    /// `origin` maps to itself.
    unicast: Vec<u32>,
    /// Next hop from `origin` per destination over `adj_all`.
    unicast_all: Vec<u32>,
    /// Number of peers reachable over all connections, `origin` included (`len(unicastAll)`).
    reachable_all: usize,
    /// Per neighbour of `origin`, how many destinations `unicast_all` routes through it.
    neighbour_weights: Vec<(PeerName, u64)>,
}

/// The broadcast routes of one topology snapshot, computed per source on first use and cached
/// until the snapshot is replaced. Cloning is cheap (a reference count) and every clone shares
/// the cache, so the mesh and the data path thread compute each source at most once between
/// them. Take one with [`Routes::broadcast_routes`].
#[derive(Debug, Clone)]
pub struct BroadcastRoutes(Arc<Graph>);

#[derive(Debug)]
struct Graph {
    /// Index of the peer the routes are computed for (normally ourself).
    origin: u32,
    /// Every known peer, ascending; a peer's dense index is its position here.
    names: Vec<PeerName>,
    /// Per peer, the peers its connection list names (ascending indices).
    adj_all: Csr,
    /// Per peer, the peers with an established connection both ways (ascending indices).
    adj_symmetric: Csr,
    /// Lazily computed broadcast hops per source index, over `adj_symmetric`.
    broadcast: Vec<OnceLock<Vec<PeerName>>>,
    /// Lazily computed broadcast hops per source index, over `adj_all`.
    broadcast_all: Vec<OnceLock<Vec<PeerName>>>,
}

impl BroadcastRoutes {
    /// Where to forward a data-plane broadcast that originated at `src` (established symmetric
    /// connections), sorted by name. Empty if `src` is unknown or cannot reach us.
    pub fn hops(&self, src: PeerName) -> &[PeerName] {
        self.0.hops(&self.0.broadcast, &self.0.adj_symmetric, src)
    }

    /// Where to forward a gossip broadcast that originated at `src` (all connections).
    pub fn hops_all(&self, src: PeerName) -> &[PeerName] {
        self.0.hops(&self.0.broadcast_all, &self.0.adj_all, src)
    }

    /// How many sources have their data-plane hops computed so far (for tests and metrics).
    pub fn cached_sources(&self) -> usize {
        self.0
            .broadcast
            .iter()
            .filter(|c| c.get().is_some())
            .count()
    }
}

/// Two snapshots are equal when they answer alike: same origin and same graphs. The caches do
/// not count, as they only hold what the graphs determine.
impl PartialEq for BroadcastRoutes {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
            || (self.0.origin == other.0.origin
                && self.0.names == other.0.names
                && self.0.adj_all == other.0.adj_all
                && self.0.adj_symmetric == other.0.adj_symmetric)
    }
}

impl Eq for BroadcastRoutes {}

impl Graph {
    fn name(&self, i: u32) -> PeerName {
        self.names
            .get(i as usize)
            .copied()
            .unwrap_or(PeerName::UNKNOWN)
    }

    /// Our next hops for a broadcast from `src`: run the BFS from `src` until we are dequeued;
    /// forward to our neighbours not reached by then (the peers at the next level that no
    /// lower-named peer of our level claimed).
    fn hops<'a>(
        &'a self,
        cache: &'a [OnceLock<Vec<PeerName>>],
        adj: &Csr,
        src: PeerName,
    ) -> &'a [PeerName] {
        let Some(s) = self.names.binary_search(&src).ok() else {
            return &[];
        };
        let Some(slot) = cache.get(s) else {
            return &[];
        };
        slot.get_or_init(|| {
            let (found, reached) = bfs(adj, s as u32, Some(self.origin));
            if !found {
                return Vec::new();
            }
            adj.row(self.origin as usize)
                .iter()
                .filter(|&&nb| reached.get(nb as usize) == Some(&UNREACHED))
                .map(|&nb| self.name(nb))
                .collect()
        })
    }

    /// `(source, hops)` for every cached source, and for the origin (computed if need be).
    fn table(
        &self,
        cache: &[OnceLock<Vec<PeerName>>],
        adj: &Csr,
    ) -> Vec<(PeerName, Vec<PeerName>)> {
        let _ = self.hops(cache, adj, self.name(self.origin));
        self.names
            .iter()
            .zip(cache)
            .filter_map(|(&n, c)| c.get().map(|h| (n, h.clone())))
            .collect()
    }
}

impl Routes {
    /// Computes the routes of our own peer from `peers`.
    ///
    /// Call after every change of the view (local connection events, improving updates, GC);
    /// Weave Net defers this by 100 ms to coalesce bursts, which the caller may do too.
    pub fn calculate(peers: &Peers) -> Self {
        Self::build(peers, peers.our_name())
    }

    /// Computes the routes `origin` would compute if it had the same view as `peers`; `None`
    /// if `origin` is unknown. Used to check that peers sharing a view agree on routes.
    pub fn calculate_from(peers: &Peers, origin: PeerName) -> Option<Self> {
        peers.get(origin)?;
        Some(Self::build(peers, origin))
    }

    /// The peer these routes are for.
    pub fn origin(&self) -> PeerName {
        self.name(self.graph.0.origin)
    }

    /// Data-plane next hop towards `dest` (established symmetric connections only); `None` if
    /// `dest` is unreachable, unknown or the origin itself.
    pub fn unicast(&self, dest: PeerName) -> Option<PeerName> {
        self.next_hop(&self.unicast, dest)
    }

    /// Gossip next hop towards `dest` (all connections); `None` if unreachable, unknown or the
    /// origin itself.
    pub fn unicast_all(&self, dest: PeerName) -> Option<PeerName> {
        self.next_hop(&self.unicast_all, dest)
    }

    /// Where to forward a data-plane broadcast that originated at `src` (established symmetric
    /// connections), sorted by name. Empty if `src` is unknown or cannot reach us.
    pub fn broadcast(&self, src: PeerName) -> &[PeerName] {
        self.graph.hops(src)
    }

    /// Where to forward a gossip broadcast (tag 6) that originated at `src` (all connections),
    /// sorted by name. Empty if `src` is unknown or cannot reach us.
    pub fn broadcast_all(&self, src: PeerName) -> &[PeerName] {
        self.graph.hops_all(src)
    }

    /// The broadcast routes of this snapshot as a cheap shareable handle (same cache), for a
    /// data path that forwards on another thread.
    pub fn broadcast_routes(&self) -> BroadcastRoutes {
        self.graph.clone()
    }

    /// Picks gossip neighbours (spec §3.2): each neighbour is weighted by how many destinations
    /// `unicast_all` routes through it, neighbours that are `except` are left out, and
    /// `min(floor(2·log2(reachable peers incl. us)), weighted neighbours)` distinct ones are
    /// drawn by weighted sampling without replacement, in draw order.
    ///
    /// Pass the sender of the gossip being relayed as `except`, or our own name when
    /// originating.
    pub fn random_neighbours(&self, except: PeerName, rng: &mut impl Rng) -> Vec<PeerName> {
        let mut pool: Vec<(PeerName, u64)> = self
            .neighbour_weights
            .iter()
            .filter(|(n, _)| *n != except)
            .copied()
            .collect();
        let log = (self.reachable_all as f64).log2();
        let wanted = if log > 0.0 {
            (2.0 * log).floor() as usize
        } else {
            0
        };
        let needed = wanted.min(pool.len());
        let mut total: u64 = pool.iter().map(|(_, w)| w).sum();
        let mut chosen = Vec::with_capacity(needed);
        while chosen.len() < needed && total > 0 {
            let mut point = rng.gen_range(0..total);
            let Some(pos) = pool.iter().position(|&(_, w)| {
                if point < w {
                    true
                } else {
                    point -= w;
                    false
                }
            }) else {
                break;
            };
            let (name, weight) = pool.remove(pos);
            total -= weight;
            chosen.push(name);
        }
        chosen
    }

    /// The data-plane unicast table as `(destination, next hop)`, sorted by destination, for
    /// `weft report`. As in Weave Net's report, the origin itself is listed with next hop
    /// `00:00:00:00:00:00`.
    pub fn unicast_table(&self) -> Vec<(PeerName, PeerName)> {
        self.table(&self.unicast)
    }

    /// Like [`Self::unicast_table`] but over all connections (the gossip table).
    pub fn unicast_all_table(&self) -> Vec<(PeerName, PeerName)> {
        self.table(&self.unicast_all)
    }

    /// The data-plane broadcast table `(source, next hops)`, sorted by source, for status and
    /// `weft report`. Like Weave Net, it shows the sources computed so far (by forwarding or
    /// gossip since the last change) and our own; it never computes every source, which would
    /// cost a route search per peer.
    pub fn broadcast_table(&self) -> Vec<(PeerName, Vec<PeerName>)> {
        let g = &self.graph.0;
        g.table(&g.broadcast, &g.adj_symmetric)
    }

    /// Like [`Self::broadcast_table`] but over all connections.
    pub fn broadcast_all_table(&self) -> Vec<(PeerName, Vec<PeerName>)> {
        let g = &self.graph.0;
        g.table(&g.broadcast_all, &g.adj_all)
    }

    fn build(peers: &Peers, origin: PeerName) -> Self {
        let views: Vec<_> = peers.view().collect();
        let names: Vec<PeerName> = views.iter().map(|v| v.summary.name).collect();
        let index = |n: PeerName| dense_index(&names, n, 0).and_then(|i| u32::try_from(i).ok());
        let v = views.len();
        let mut all = Csr::with_rows(v);
        let mut established_out = Csr::with_rows(v);
        let mut in_degree = vec![0u32; v];
        for view in &views {
            let mut hint = 0;
            for c in view.connections {
                let Some(j) = dense_index(&names, c.name, hint) else {
                    continue;
                };
                hint = j + 1; // connection lists are strictly ascending
                let Ok(j32) = u32::try_from(j) else { continue };
                all.targets.push(j32);
                if c.established {
                    established_out.targets.push(j32);
                    if let Some(d) = in_degree.get_mut(j) {
                        *d += 1;
                    }
                }
            }
            all.end_row();
            established_out.end_row();
        }
        // established_in[j] = every i with an established i→j; filling rows in ascending i
        // keeps each row ascending (a counting-sort transpose).
        let established_in = established_out.transpose(&in_degree);
        // Symmetric = established both ways: intersect each peer's out and in rows, O(E).
        let mut adj_symmetric = Csr::with_rows(v);
        for i in 0..v {
            intersect_sorted(
                established_out.row(i),
                established_in.row(i),
                &mut adj_symmetric.targets,
            );
            adj_symmetric.end_row();
        }
        let adj_all = all;
        let origin = index(origin).unwrap_or(UNREACHED);
        let unicast = bfs(&adj_symmetric, origin, None).1;
        let unicast_all = bfs(&adj_all, origin, None).1;
        let reachable_all = unicast_all.iter().filter(|&&h| h != UNREACHED).count();
        let mut weights = vec![0u64; names.len()];
        for (dest, &hop) in unicast_all.iter().enumerate() {
            if hop != UNREACHED && dest != origin as usize {
                if let Some(w) = weights.get_mut(hop as usize) {
                    *w += 1;
                }
            }
        }
        let neighbour_weights = weights
            .iter()
            .zip(&names)
            .filter(|(&w, _)| w > 0)
            .map(|(&w, &n)| (n, w))
            .collect();
        let n = names.len();
        let graph = BroadcastRoutes(Arc::new(Graph {
            origin,
            names,
            adj_all,
            adj_symmetric,
            broadcast: (0..n).map(|_| OnceLock::new()).collect(),
            broadcast_all: (0..n).map(|_| OnceLock::new()).collect(),
        }));
        Self {
            graph,
            unicast,
            unicast_all,
            reachable_all,
            neighbour_weights,
        }
    }

    fn name(&self, i: u32) -> PeerName {
        self.graph.0.name(i)
    }

    fn next_hop(&self, table: &[u32], dest: PeerName) -> Option<PeerName> {
        let d = self.graph.0.names.binary_search(&dest).ok()?;
        if d == self.graph.0.origin as usize {
            return None;
        }
        match table.get(d).copied()? {
            UNREACHED => None,
            hop => Some(self.name(hop)),
        }
    }

    fn table(&self, table: &[u32]) -> Vec<(PeerName, PeerName)> {
        table
            .iter()
            .enumerate()
            .filter(|(_, &h)| h != UNREACHED)
            .map(|(d, &h)| {
                let via = if d == self.graph.0.origin as usize {
                    PeerName::UNKNOWN
                } else {
                    self.name(h)
                };
                (
                    self.graph
                        .0
                        .names
                        .get(d)
                        .copied()
                        .unwrap_or(PeerName::UNKNOWN),
                    via,
                )
            })
            .collect()
    }
}

/// Adjacency lists in compressed sparse rows: row `i` is `targets[offsets[i]..offsets[i+1]]`.
/// Two allocations instead of one per peer, which matters when routes are recalculated often.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Csr {
    offsets: Vec<usize>,
    targets: Vec<u32>,
}

impl Csr {
    fn with_rows(rows: usize) -> Self {
        let mut offsets = Vec::with_capacity(rows + 1);
        offsets.push(0);
        Self {
            offsets,
            targets: Vec::new(),
        }
    }

    /// Closes the row being filled.
    fn end_row(&mut self) {
        self.offsets.push(self.targets.len());
    }

    fn rows(&self) -> usize {
        self.offsets.len().saturating_sub(1)
    }

    fn row(&self, i: usize) -> &[u32] {
        match (self.offsets.get(i), self.offsets.get(i + 1)) {
            (Some(&a), Some(&b)) => self.targets.get(a..b).unwrap_or(&[]),
            _ => &[],
        }
    }

    /// The reversed graph; `in_degree[j]` must count the entries naming `j`.
    fn transpose(&self, in_degree: &[u32]) -> Self {
        let mut offsets = Vec::with_capacity(in_degree.len() + 1);
        let mut total = 0usize;
        offsets.push(0);
        for &d in in_degree {
            total += d as usize;
            offsets.push(total);
        }
        let mut fill: Vec<usize> = offsets.clone();
        let mut targets = vec![0u32; total];
        for i in 0..self.rows() {
            let Ok(i32) = u32::try_from(i) else { continue };
            for &j in self.row(i) {
                if let Some(pos) = fill.get_mut(j as usize) {
                    if let Some(t) = targets.get_mut(*pos) {
                        *t = i32;
                        *pos += 1;
                    }
                }
            }
        }
        Self { offsets, targets }
    }
}

/// Appends the common elements of two ascending lists to `out`.
fn intersect_sorted(a: &[u32], b: &[u32], out: &mut Vec<u32>) {
    let (mut x, mut y) = (0, 0);
    while let (Some(&p), Some(&q)) = (a.get(x), b.get(y)) {
        if p < q {
            x += 1;
        } else if p > q {
            y += 1;
        } else {
            out.push(p);
            x += 1;
            y += 1;
        }
    }
}

/// Weave Net's route BFS from `start`: levels processed in ascending index (= name) order,
/// first reach wins. Returns whether `stop_at` was dequeued (the search ends there) and the
/// next-hop table: `UNREACHED`, `start` for the start itself, the neighbour of `start` the
/// path goes through otherwise.
fn bfs(adj: &Csr, start: u32, stop_at: Option<u32>) -> (bool, Vec<u32>) {
    let mut hop = vec![UNREACHED; adj.rows()];
    let Some(h) = hop.get_mut(start as usize) else {
        return (false, hop);
    };
    *h = start;
    let mut next = vec![start];
    while !next.is_empty() {
        let mut level = std::mem::take(&mut next);
        level.sort_unstable();
        for cur in level {
            if Some(cur) == stop_at {
                return (true, hop);
            }
            let via = if cur == start {
                None
            } else {
                hop.get(cur as usize).copied()
            };
            for &nb in adj.row(cur as usize) {
                if let Some(h) = hop.get_mut(nb as usize) {
                    if *h == UNREACHED {
                        *h = via.unwrap_or(nb);
                        next.push(nb);
                    }
                }
            }
        }
    }
    (false, hop)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // In tests a panic is the failed assertion.
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use proptest::prelude::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;
    use weft_wire::{ConnectionSummary, PeerSummary};

    use super::*;

    fn pn(n: u64) -> PeerName {
        PeerName(n)
    }

    /// A topology as each peer's connection list: (remote, established).
    type Edges = BTreeMap<u64, Vec<(u64, bool)>>;

    /// Builds the view every peer of `edges` would have once gossip converged, from the point
    /// of view of `me`, going through the public API (local connections + merged updates).
    fn views(edges: &Edges) -> BTreeMap<u64, Peers> {
        let ident = |n: u64| PeerSummary {
            name: pn(n),
            nick_name: format!("p{n}"),
            uid: 1000 + n,
            version: 0,
            short_id: n as u16,
            has_short_id: true,
        };
        let mut out = BTreeMap::new();
        for (&me, conns) in edges {
            let mut p = Peers::new(pn(me), format!("p{me}"), 1000 + me, me as u16);
            for &(r, est) in conns {
                p.add_local_connection(&ident(r), format!("addr{r}"), me < r);
                if est {
                    p.establish_local_connection(pn(r));
                }
            }
            out.insert(me, p);
        }
        let all: Vec<(PeerSummary, Vec<ConnectionSummary>)> = out
            .values()
            .map(|p| p.summaries(&[p.our_name()]).remove(0))
            .collect();
        for p in out.values_mut() {
            p.apply_update(all.clone()).unwrap();
        }
        out
    }

    fn edges(list: &[(u64, &[(u64, bool)])]) -> Edges {
        list.iter().map(|(n, c)| (*n, c.to_vec())).collect()
    }

    /// Undirected, established both ways.
    fn undirected(n: u64, pairs: &[(u64, u64)]) -> Edges {
        let mut e: Edges = (1..=n).map(|i| (i, Vec::new())).collect();
        for &(a, b) in pairs {
            e.get_mut(&a).unwrap().push((b, true));
            e.get_mut(&b).unwrap().push((a, true));
        }
        e
    }

    fn routes_of(v: &BTreeMap<u64, Peers>, n: u64) -> Routes {
        Routes::calculate(&v[&n])
    }

    /// Delivers a broadcast from `src` using each peer's own tables; returns receive counts.
    fn deliver(all: &BTreeMap<u64, Routes>, src: u64, all_conns: bool) -> BTreeMap<u64, u32> {
        let mut got: BTreeMap<u64, u32> = BTreeMap::new();
        let mut queue = vec![src];
        while let Some(at) = queue.pop() {
            let r = &all[&at];
            let hops = if all_conns {
                r.broadcast_all(pn(src))
            } else {
                r.broadcast(pn(src))
            };
            for h in hops {
                let c = got.entry(h.0).or_default();
                *c += 1;
                if *c == 1 {
                    queue.push(h.0);
                }
                assert!(*c < 100, "broadcast storm");
            }
        }
        got
    }

    fn reachable(e: &Edges, src: u64, symmetric: bool) -> Vec<u64> {
        let follows = |a: u64, b: u64, est: bool| {
            !symmetric
                || (est
                    && e.get(&b)
                        .is_some_and(|l| l.iter().any(|&(x, y)| x == a && y)))
        };
        let mut seen = vec![src];
        let mut i = 0;
        while let Some(&cur) = seen.get(i) {
            for &(nb, est) in e.get(&cur).into_iter().flatten() {
                if e.contains_key(&nb) && follows(cur, nb, est) && !seen.contains(&nb) {
                    seen.push(nb);
                }
            }
            i += 1;
        }
        seen.retain(|&x| x != src);
        seen.sort_unstable();
        seen
    }

    #[test]
    fn line() {
        let v = views(&undirected(4, &[(1, 2), (2, 3), (3, 4)]));
        let r = routes_of(&v, 1);
        assert_eq!(r.unicast(pn(2)), Some(pn(2)));
        assert_eq!(r.unicast(pn(3)), Some(pn(2)));
        assert_eq!(r.unicast(pn(4)), Some(pn(2)));
        assert_eq!(r.unicast(pn(1)), None);
        assert_eq!(r.unicast(pn(9)), None);
        assert_eq!(
            r.unicast_table(),
            vec![
                (pn(1), PeerName::UNKNOWN),
                (pn(2), pn(2)),
                (pn(3), pn(2)),
                (pn(4), pn(2))
            ]
        );
        let r3 = routes_of(&v, 3);
        assert_eq!(r3.unicast(pn(1)), Some(pn(2)));
        assert_eq!(r3.unicast(pn(4)), Some(pn(4)));
        assert_eq!(r3.broadcast(pn(1)), &[pn(4)]);
        assert_eq!(r3.broadcast(pn(4)), &[pn(2)]);
        assert_eq!(r3.broadcast(pn(3)), &[pn(2), pn(4)]);
        assert_eq!(r3.broadcast(pn(2)), &[pn(4)]);
        assert_eq!(r3.broadcast(pn(42)), &[] as &[PeerName]);
        assert_eq!(routes_of(&v, 4).broadcast(pn(1)), &[] as &[PeerName]);
    }

    #[test]
    fn star() {
        let v = views(&undirected(5, &[(1, 2), (1, 3), (1, 4), (1, 5)]));
        let hub = routes_of(&v, 1);
        assert_eq!(hub.broadcast(pn(1)), &[pn(2), pn(3), pn(4), pn(5)]);
        assert_eq!(hub.broadcast(pn(3)), &[pn(2), pn(4), pn(5)]);
        let leaf = routes_of(&v, 4);
        for d in [1, 2, 3, 5] {
            assert_eq!(leaf.unicast(pn(d)), Some(pn(1)));
        }
        assert_eq!(leaf.broadcast(pn(4)), &[pn(1)]);
        assert_eq!(leaf.broadcast(pn(2)), &[] as &[PeerName]);
    }

    #[test]
    fn ring_lowest_name_wins_ties() {
        // 1-2-3-4-5-6-1: from 1, 4 is at distance 3 both ways; 2 < 6 so it goes via 2.
        let v = views(&undirected(
            6,
            &[(1, 2), (2, 3), (3, 4), (4, 5), (5, 6), (6, 1)],
        ));
        let r = routes_of(&v, 1);
        let table: Vec<_> = r
            .unicast_table()
            .into_iter()
            .map(|(d, h)| (d.0, h.0))
            .collect();
        assert_eq!(table, vec![(1, 0), (2, 2), (3, 2), (4, 2), (5, 6), (6, 6)]);
        // Broadcast from 1: 3 forwards to 4 (3 < 5 claims 4 first), 5 forwards nowhere.
        assert_eq!(routes_of(&v, 3).broadcast(pn(1)), &[pn(4)]);
        assert_eq!(routes_of(&v, 5).broadcast(pn(1)), &[] as &[PeerName]);
        let all: BTreeMap<u64, Routes> = (1..=6).map(|n| (n, routes_of(&v, n))).collect();
        for src in 1..=6 {
            let got = deliver(&all, src, false);
            let expect: BTreeMap<u64, u32> =
                (1..=6).filter(|&n| n != src).map(|n| (n, 1)).collect();
            assert_eq!(got, expect, "from {src}");
        }
    }

    #[test]
    fn full_mesh() {
        let pairs: Vec<(u64, u64)> = (1..=6)
            .flat_map(|a| (a + 1..=6).map(move |b| (a, b)))
            .collect();
        let v = views(&undirected(6, &pairs));
        let r = routes_of(&v, 3);
        for d in [1, 2, 4, 5, 6] {
            assert_eq!(r.unicast(pn(d)), Some(pn(d)));
            assert_eq!(r.unicast_all(pn(d)), Some(pn(d)));
        }
        // The source reaches everybody directly; nobody relays.
        assert_eq!(r.broadcast(pn(3)), &[pn(1), pn(2), pn(4), pn(5), pn(6)]);
        assert_eq!(r.broadcast(pn(1)), &[] as &[PeerName]);
        let all: BTreeMap<u64, Routes> = (1..=6).map(|n| (n, routes_of(&v, n))).collect();
        for src in 1..=6 {
            assert!(deliver(&all, src, false).values().all(|&c| c == 1));
            assert!(deliver(&all, src, true).values().all(|&c| c == 1));
            assert_eq!(deliver(&all, src, false).len(), 5);
        }
        // 2·log2(6) = 5.17 → 5 neighbours, all of them, weights all 1.
        let mut rng = StdRng::seed_from_u64(7);
        let mut picked = r.random_neighbours(pn(3), &mut rng);
        picked.sort_unstable();
        assert_eq!(picked, vec![pn(1), pn(2), pn(4), pn(5), pn(6)]);
        let picked = r.random_neighbours(pn(4), &mut rng);
        assert_eq!(picked.len(), 4);
        assert!(!picked.contains(&pn(4)));
    }

    #[test]
    fn unicast_needs_established_and_symmetric() {
        // 1→2 established both ways; 2→3 established only on 2's side; 3→4 not established
        // on either; 1→5 established on 1's side, 5 does not list 1 at all.
        let e = edges(&[
            (1, &[(2, true), (5, true)]),
            (2, &[(1, true), (3, true)]),
            (3, &[(2, false), (4, false)]),
            (4, &[(3, false)]),
            (5, &[]),
        ]);
        let v = views(&e);
        let r = routes_of(&v, 1);
        assert_eq!(r.unicast(pn(2)), Some(pn(2)));
        assert_eq!(r.unicast(pn(3)), None);
        assert_eq!(r.unicast(pn(5)), None);
        assert_eq!(r.unicast_all(pn(3)), Some(pn(2)));
        assert_eq!(r.unicast_all(pn(4)), Some(pn(2)));
        assert_eq!(r.unicast_all(pn(5)), Some(pn(5)));
        assert_eq!(r.broadcast(pn(1)), &[pn(2)]);
        assert_eq!(r.broadcast_all(pn(1)), &[pn(2), pn(5)]);
        // unicast_all is directed: 5 lists nobody, so from 5 nothing is reachable.
        let r5 = routes_of(&v, 5);
        assert_eq!(r5.unicast_all(pn(1)), None);
        assert_eq!(r5.unicast_all_table(), vec![(pn(5), PeerName::UNKNOWN)]);
        assert!(r5
            .random_neighbours(pn(5), &mut StdRng::seed_from_u64(1))
            .is_empty());
    }

    #[test]
    fn random_neighbours_weighting_and_count() {
        // 1 is a leaf hanging off 2; 2 is the hub of many leaves and links to 3.
        let mut pairs = vec![(1, 2), (2, 3)];
        pairs.extend((4..=20).map(|l| (2, l)));
        let v = views(&undirected(20, &pairs));
        let r = routes_of(&v, 2);
        // 20 reachable → floor(2·log2 20) = 8 of 19 neighbours.
        let mut rng = StdRng::seed_from_u64(3);
        let picked = r.random_neighbours(pn(2), &mut rng);
        assert_eq!(picked.len(), 8);
        let mut dedup = picked.clone();
        dedup.sort_unstable();
        dedup.dedup();
        assert_eq!(dedup.len(), 8, "distinct");
        // From 1's point of view only 2 is a neighbour: one pick, and none when 2 is except.
        let r1 = routes_of(&v, 1);
        assert_eq!(r1.random_neighbours(pn(1), &mut rng), vec![pn(2)]);
        assert!(r1.random_neighbours(pn(2), &mut rng).is_empty());
        // Weighting: a leaf behind which many peers sit is picked far more often.
        // 1 — 2 — {10 peers chain behind 2}, and 1 — 3 (leaf).
        let mut pairs = vec![(1, 2), (1, 3)];
        pairs.extend((4..=13).map(|x| (2, x)));
        let v = views(&undirected(13, &pairs));
        let r = routes_of(&v, 1);
        // 13 reachable → 7 wanted, but only 2 neighbours: both, in weighted order.
        let mut first_is_2 = 0;
        for _ in 0..1000 {
            let p = r.random_neighbours(pn(1), &mut rng);
            assert_eq!(p.len(), 2);
            if p[0] == pn(2) {
                first_is_2 += 1;
            }
        }
        // Weights 11 (2 + its 10 leaves) vs 1 (3): 2 comes first ~92% of the time.
        assert!((850..980).contains(&first_is_2), "{first_is_2}");
    }

    #[test]
    fn deterministic_given_seed() {
        let pairs: Vec<(u64, u64)> = (1..=30)
            .flat_map(|a| (a + 1..=30).map(move |b| (a, b)))
            .collect();
        let v = views(&undirected(30, &pairs));
        let r = routes_of(&v, 7);
        let a = r.random_neighbours(pn(7), &mut StdRng::seed_from_u64(9));
        let b = r.random_neighbours(pn(7), &mut StdRng::seed_from_u64(9));
        assert_eq!(a, b);
        assert_eq!(a.len(), 9); // floor(2·log2 30) = 9
    }

    #[test]
    fn calculate_from_matches_own_calculation() {
        let v = views(&undirected(5, &[(1, 2), (2, 3), (3, 4), (4, 5), (2, 5)]));
        for n in 1..=5 {
            let own = routes_of(&v, n);
            let other = Routes::calculate_from(&v[&1], pn(n)).unwrap();
            assert_eq!(own.origin(), pn(n));
            assert_eq!(own.unicast_table(), other.unicast_table());
            for src in 1..=5 {
                assert_eq!(own.broadcast(pn(src)), other.broadcast(pn(src)));
                assert_eq!(own.broadcast_all(pn(src)), other.broadcast_all(pn(src)));
            }
            assert_eq!(own.broadcast_table(), other.broadcast_table());
            assert_eq!(own.broadcast_all_table(), other.broadcast_all_table());
        }
        assert!(Routes::calculate_from(&v[&1], pn(99)).is_none());
    }

    #[test]
    fn broadcast_table_lists_only_computed_sources() {
        let v = views(&undirected(5, &[(1, 2), (2, 3), (3, 4), (4, 5)]));
        let r = routes_of(&v, 3);
        // Nothing forwarded yet: only our own source, computed for the table.
        assert_eq!(r.broadcast_table(), vec![(pn(3), vec![pn(2), pn(4)])]);
        assert_eq!(r.broadcast(pn(1)), &[pn(4)]);
        let shared = r.broadcast_routes();
        assert_eq!(shared.hops(pn(5)), &[pn(2)], "computed through the handle");
        assert_eq!(
            r.broadcast_table(),
            vec![
                (pn(1), vec![pn(4)]),
                (pn(3), vec![pn(2), pn(4)]),
                (pn(5), vec![pn(2)])
            ],
            "the handle and the routes share one cache"
        );
        assert_eq!(shared.cached_sources(), 3);
        assert_eq!(r.broadcast_all_table(), vec![(pn(3), vec![pn(2), pn(4)])]);
        // Snapshots of the same view are equal, whatever they cached; another view is not.
        assert_eq!(routes_of(&v, 3).broadcast_routes(), shared);
        assert_ne!(routes_of(&v, 2).broadcast_routes(), shared);
    }

    /// Weave's broadcast rule written plainly over the edge lists, sharing no code with
    /// [`Routes`]: BFS from `src` one level at a time in name order, stop when `me` is taken
    /// from the worklist, and forward to the neighbours of `me` not reached by then.
    fn reference_broadcast(e: &Edges, me: u64, src: u64, symmetric: bool) -> Vec<PeerName> {
        let lists = |a: u64, b: u64| {
            e.get(&a)
                .and_then(|l| l.iter().find(|&&(x, _)| x == b))
                .map(|&(_, est)| est)
        };
        let neighbours = |a: u64| -> Vec<u64> {
            let mut out: Vec<u64> = e
                .get(&a)
                .into_iter()
                .flatten()
                .filter(|&&(b, est)| {
                    e.contains_key(&b) && (!symmetric || (est && lists(b, a) == Some(true)))
                })
                .map(|&(b, _)| b)
                .collect();
            out.sort_unstable();
            out
        };
        let mut reached = BTreeSet::from([src]);
        let mut level = vec![src];
        let mut found = false;
        'search: while !level.is_empty() {
            level.sort_unstable();
            let mut next = Vec::new();
            for &cur in &level {
                if cur == me {
                    found = true;
                    break 'search;
                }
                for nb in neighbours(cur) {
                    if reached.insert(nb) {
                        next.push(nb);
                    }
                }
            }
            level = next;
        }
        if !found {
            return Vec::new();
        }
        neighbours(me)
            .into_iter()
            .filter(|nb| !reached.contains(nb))
            .map(pn)
            .collect()
    }

    fn arb_topology() -> impl Strategy<Value = Edges> {
        (2u64..14).prop_flat_map(|n| {
            let pairs = (n * n) as usize;
            (
                Just(n),
                proptest::collection::vec((0u8..4, any::<bool>()), pairs),
            )
                .prop_map(|(n, cells)| {
                    let mut e: Edges = (1..=n).map(|i| (i, Vec::new())).collect();
                    for (k, (kind, est)) in cells.into_iter().enumerate() {
                        let a = k as u64 / n + 1;
                        let b = k as u64 % n + 1;
                        // kind 0: no connection; 1..3: a lists b (mostly symmetric below).
                        if a != b && kind > 0 {
                            e.get_mut(&a).unwrap().push((b, est || kind == 3));
                        }
                    }
                    e
                })
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]

        #[test]
        fn lazy_broadcast_equals_eager_reference(e in arb_topology(), order in any::<u64>()) {
            let v = views(&e);
            for &me in e.keys() {
                let r = routes_of(&v, me);
                let shared = r.broadcast_routes();
                // Ask in a scrambled order, half through the shared handle on another thread.
                let mut srcs: Vec<u64> = e.keys().copied().collect();
                srcs.sort_by_key(|&s| s.wrapping_mul(order | 1).rotate_left(17));
                let (a, b) = srcs.split_at(srcs.len() / 2);
                let other = std::thread::scope(|t| {
                    t.spawn(|| {
                        b.iter()
                            .map(|&s| (s, shared.hops(pn(s)).to_vec(), shared.hops_all(pn(s)).to_vec()))
                            .collect::<Vec<_>>()
                    })
                    .join()
                    .unwrap()
                });
                for &s in a {
                    prop_assert_eq!(r.broadcast(pn(s)).to_vec(), reference_broadcast(&e, me, s, true));
                    prop_assert_eq!(r.broadcast_all(pn(s)).to_vec(), reference_broadcast(&e, me, s, false));
                }
                for (s, hops, hops_all) in other {
                    prop_assert_eq!(hops, reference_broadcast(&e, me, s, true));
                    prop_assert_eq!(hops_all, reference_broadcast(&e, me, s, false));
                    // Cached now: the routes answer the same without recomputing.
                    prop_assert_eq!(r.broadcast(pn(s)).to_vec(), reference_broadcast(&e, me, s, true));
                }
                prop_assert_eq!(shared.cached_sources(), srcs.len());
            }
        }

        #[test]
        fn broadcast_exactly_once_and_unicast_loop_free(e in arb_topology()) {
            let v = views(&e);
            let all: BTreeMap<u64, Routes> =
                v.keys().map(|&n| (n, routes_of(&v, n))).collect();
            let n = e.len();
            for &src in e.keys() {
                for (all_conns, symmetric) in [(false, true), (true, false)] {
                    let got = deliver(&all, src, all_conns);
                    let want: BTreeMap<u64, u32> =
                        reachable(&e, src, symmetric).into_iter().map(|x| (x, 1)).collect();
                    prop_assert_eq!(got, want, "src {} all {}", src, all_conns);
                }
                for &dst in e.keys() {
                    for all_conns in [false, true] {
                        let hop = |at: u64| {
                            let r = &all[&at];
                            if all_conns { r.unicast_all(pn(dst)) } else { r.unicast(pn(dst)) }
                        };
                        let Some(mut at) = hop(src).map(|h| h.0) else { continue };
                        let mut steps = 1;
                        while at != dst {
                            let next = hop(at);
                            prop_assert!(next.is_some(), "route {}→{} dies at {}", src, dst, at);
                            at = next.unwrap().0;
                            steps += 1;
                            prop_assert!(steps <= n, "loop {}→{}", src, dst);
                        }
                    }
                }
            }
        }
    }
}
