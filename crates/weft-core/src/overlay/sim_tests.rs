//! In-memory multi-peer simulation: forwarders, a model of each host's bridge (containers, the
//! TAP port, the VXLAN port, with TAP and VXLAN isolated from each other) and a fixed topology
//! of sleeve and fastdp links. Checks that every container gets each broadcast exactly once
//! and each unicast reaches exactly its destination, through relays and mixed links.
#![allow(clippy::unwrap_used)] // In tests a panic is the failed assertion.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::time::Instant;

use weft_wire::PeerName;

use super::tests::{eth, mac};
use super::*;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Link {
    Sleeve,
    Fastdp,
}

fn name(i: usize) -> PeerName {
    PeerName(0x100 + i as u64)
}

/// What one node knows about the mesh, precomputed from the shared topology.
type SimFabric = FabricTable;

/// BFS parents from `s` with ascending neighbour order (as Weave Net's routes).
fn bfs_parents(adj: &[Vec<usize>], s: usize) -> Vec<Option<usize>> {
    let mut parent = vec![None; adj.len()];
    let mut seen = vec![false; adj.len()];
    seen[s] = true;
    let mut q = VecDeque::from([s]);
    while let Some(u) = q.pop_front() {
        for &v in &adj[u] {
            if !seen[v] {
                seen[v] = true;
                parent[v] = Some(u);
                q.push_back(v);
            }
        }
    }
    parent
}

fn fabrics(n: usize, links: &[(usize, usize, Link)], prune: bool) -> Vec<SimFabric> {
    let mut adj = vec![Vec::new(); n];
    for &(a, b, _) in links {
        adj[a].push(b);
        adj[b].push(a);
    }
    for l in &mut adj {
        l.sort_unstable();
    }
    // children[s][u]: u's next hops for broadcasts from s.
    let children: Vec<Vec<Vec<usize>>> = (0..n)
        .map(|s| {
            let parent = bfs_parents(&adj, s);
            let mut ch = vec![Vec::new(); n];
            for (v, p) in parent.iter().enumerate() {
                if let Some(p) = p {
                    ch[*p].push(v);
                }
            }
            ch
        })
        .collect();
    let onward: FastSet<_> = (0..n)
        .flat_map(|s| (0..n).map(move |u| (u, s)))
        .filter(|&(u, s)| !children[s][u].is_empty())
        .map(|(u, s)| (name(u), name(s)))
        .collect();
    (0..n)
        .map(|me| {
            let mut f = SimFabric {
                us: name(me),
                known: (0..n).map(name).collect(),
                onward: prune.then(|| onward.clone()),
                ..SimFabric::default()
            };
            let parent = bfs_parents(&adj, me);
            for dst in 0..n {
                // Walk back from dst to the node whose parent is me.
                let mut v = dst;
                while let Some(p) = parent[v] {
                    if p == me {
                        f.unicast.insert(name(dst), name(v));
                        break;
                    }
                    v = p;
                }
            }
            for (s, ch) in children.iter().enumerate() {
                f.broadcast
                    .insert(name(s), ch[me].iter().map(|&c| name(c)).collect());
            }
            for &(a, b, kind) in links {
                if kind == Link::Fastdp && (a == me || b == me) {
                    f.fastdp.insert(name(if a == me { b } else { a }));
                }
            }
            f
        })
        .collect()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Port {
    Container(Mac),
    Tap,
    Vxlan(usize),
}

struct Node {
    fwd: Forwarder,
    fabric: SimFabric,
    containers: Vec<Mac>,
    fdb: HashMap<Mac, Port>,
}

enum Ev {
    Bridge {
        node: usize,
        ingress: Port,
        frame: Vec<u8>,
    },
    Datagram {
        to: usize,
        data: Vec<u8>,
    },
}

struct Sim {
    nodes: Vec<Node>,
    /// Frame id → containers that received it (with repeats).
    got: BTreeMap<u32, Vec<Mac>>,
    now: Instant,
    buf: Vec<u8>,
}

impl Sim {
    fn new(n: usize, links: &[(usize, usize, Link)], containers: usize, prune: bool) -> Self {
        let nodes = fabrics(n, links, prune)
            .into_iter()
            .enumerate()
            .map(|(i, fabric)| Node {
                fwd: Forwarder::new(),
                fabric,
                containers: (0..containers).map(|c| mac((i * 16 + c) as u8)).collect(),
                fdb: HashMap::new(),
            })
            .collect();
        Self {
            nodes,
            got: BTreeMap::new(),
            now: Instant::now(),
            buf: Vec::new(),
        }
    }

    fn node_of(&self, m: Mac) -> usize {
        self.nodes
            .iter()
            .position(|n| n.containers.contains(&m))
            .unwrap()
    }

    /// Container `src` sends a frame with id `id` to `dst`; runs until quiescent.
    fn send(&mut self, src: Mac, dst: Mac, id: u32) {
        let node = self.node_of(src);
        let frame = eth(dst, src, &id.to_be_bytes());
        let mut q = VecDeque::from([Ev::Bridge {
            node,
            ingress: Port::Container(src),
            frame,
        }]);
        while let Some(ev) = q.pop_front() {
            match ev {
                Ev::Bridge {
                    node,
                    ingress,
                    frame,
                } => self.bridge(node, ingress, &frame, &mut q),
                Ev::Datagram { to, data } => {
                    let n = &mut self.nodes[to];
                    let mut inject = Vec::new();
                    let r = n
                        .fwd
                        .handle_datagram(&data, &n.fabric, self.now, &mut |d| {
                            if let Delivery::Inject(f) = d {
                                inject.push(f.to_vec());
                            }
                        })
                        .unwrap();
                    assert_eq!(r.dropped, 0, "{r:?}");
                    for frame in inject {
                        q.push_back(Ev::Bridge {
                            node: to,
                            ingress: Port::Tap,
                            frame,
                        });
                    }
                    self.pump(to, &mut q);
                }
            }
        }
    }

    fn pump(&mut self, node: usize, q: &mut VecDeque<Ev>) {
        while let Some(peer) = self.nodes[node].fwd.poll_datagram(&mut self.buf) {
            let to = (0..self.nodes.len()).find(|&i| name(i) == peer).unwrap();
            q.push_back(Ev::Datagram {
                to,
                data: self.buf.clone(),
            });
        }
    }

    /// The Linux bridge: learn, then forward or flood; TAP and VXLAN ports are isolated.
    fn bridge(&mut self, node: usize, ingress: Port, frame: &[u8], q: &mut VecDeque<Ev>) {
        let src = Mac::src_of(frame).unwrap();
        let dst = Mac::dst_of(frame).unwrap();
        let n = &mut self.nodes[node];
        n.fdb.insert(src, ingress);
        let isolated = |p: Port| {
            matches!(
                (ingress, p),
                (Port::Tap | Port::Vxlan(_), Port::Tap | Port::Vxlan(_))
            )
        };
        let outs: Vec<Port> = match n.fdb.get(&dst) {
            Some(&p) if !dst.is_group() => vec![p],
            _ => {
                let mut outs: Vec<Port> =
                    n.containers.iter().map(|&m| Port::Container(m)).collect();
                outs.push(Port::Tap);
                let mut fast: Vec<_> = n.fabric.fastdp.iter().copied().collect();
                fast.sort();
                outs.extend(
                    fast.into_iter()
                        .map(|p| Port::Vxlan((p.0 - 0x100) as usize)),
                );
                outs
            }
        };
        for out in outs {
            if out == ingress || isolated(out) {
                continue;
            }
            match out {
                Port::Container(m) => {
                    let id = u32::from_be_bytes(frame[14..18].try_into().unwrap());
                    self.got.entry(id).or_default().push(m);
                }
                Port::Tap => {
                    let n = &mut self.nodes[node];
                    n.fwd.handle_captured(frame, &n.fabric, self.now);
                    self.pump(node, q);
                }
                Port::Vxlan(peer) => q.push_back(Ev::Bridge {
                    node: peer,
                    ingress: Port::Vxlan(node),
                    frame: frame.to_vec(),
                }),
            }
        }
    }

    fn all_containers(&self) -> Vec<Mac> {
        self.nodes
            .iter()
            .flat_map(|n| n.containers.clone())
            .collect()
    }

    /// Unknown unicast first, then a broadcast from every container, then unicasts between
    /// every pair; checks exact delivery.
    fn run(&mut self) {
        let all = self.all_containers();
        let mut id = 0;
        // Unicast to a never-seen MAC: flooded, nobody gets it twice, the target gets it.
        let (first, last) = (all[0], all[all.len() - 1]);
        self.send(first, last, id);
        let got = &self.got[&id];
        assert!(got.contains(&last), "unknown unicast reached its target");
        let unique: HashSet<_> = got.iter().collect();
        assert_eq!(unique.len(), got.len(), "no duplicates: {got:?}");
        id += 1;

        for &src in &all {
            self.send(src, Mac::BROADCAST, id);
            let mut got = self.got.remove(&id).unwrap_or_default();
            got.sort();
            let mut want: Vec<_> = all.iter().copied().filter(|&m| m != src).collect();
            want.sort();
            assert_eq!(got, want, "broadcast {id} from {src}");
            id += 1;
        }
        for &src in &all {
            for &dst in &all {
                if src == dst {
                    continue;
                }
                self.send(src, dst, id);
                assert_eq!(
                    self.got.remove(&id).unwrap_or_default(),
                    vec![dst],
                    "unicast {src} -> {dst}"
                );
                id += 1;
            }
        }
        for n in &self.nodes {
            let s = n.fwd.stats();
            assert_eq!(
                (
                    s.dropped_no_route,
                    s.dropped_unknown_peer,
                    s.dropped_mac_conflict
                ),
                (0, 0, 0),
                "{s:?}"
            );
        }
    }
}

#[test]
fn line_of_sleeve_links_relays() {
    use Link::Sleeve;
    let mut sim = Sim::new(
        4,
        &[(0, 1, Sleeve), (1, 2, Sleeve), (2, 3, Sleeve)],
        2,
        true,
    );
    sim.run();
    // The end nodes reached each other only through relays.
    assert!(sim.nodes[1].fwd.stats().relayed > 0);
    assert!(sim.nodes[2].fwd.stats().relayed > 0);
}

#[test]
fn star_with_mixed_links() {
    use Link::{Fastdp, Sleeve};
    let links = [
        (0, 1, Fastdp),
        (0, 2, Fastdp),
        (0, 3, Sleeve),
        (0, 4, Sleeve),
    ];
    for prune in [false, true] {
        let mut sim = Sim::new(5, &links, 2, prune);
        sim.run();
        // The hub relays its fastdp leaves' broadcasts to the others without injecting them.
        assert!(sim.nodes[0].fwd.stats().skipped_injection > 0);
    }
}

#[test]
fn mesh_with_fastdp_triangle_and_sleeve_tail() {
    use Link::{Fastdp, Sleeve};
    let links = [
        (0, 1, Fastdp),
        (1, 2, Fastdp),
        (0, 2, Fastdp),
        (2, 3, Sleeve),
        (3, 4, Fastdp),
        (4, 5, Sleeve),
        (1, 5, Sleeve),
    ];
    for prune in [false, true] {
        let mut sim = Sim::new(6, &links, 2, prune);
        sim.run();
    }
}

#[test]
fn line_of_fastdp_links_relays_over_sleeve() {
    use Link::Fastdp;
    let links = [(0, 1, Fastdp), (1, 2, Fastdp), (2, 3, Fastdp)];
    for prune in [false, true] {
        let mut sim = Sim::new(4, &links, 1, prune);
        sim.run();
        assert!(sim.nodes[1].fwd.stats().relayed > 0);
    }
}
