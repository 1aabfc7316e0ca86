//! Benchmark of one topology update in a large mesh, as the router daemon lives it.
//!
//! One real [`Mesh`] ("us") is connected to a second real one (the hub) through an in-memory
//! link, with heartbeats, so the connection is established both ways. The hub then announces a
//! topology of N peers in all (random graph, each peer with about `degree` established
//! symmetric connections). Each measured update is one delta from a random peer toggling one of
//! its connections, followed by what the daemon does for it:
//! * **apply**: `handle_frame` (decode, apply, relay), draining the events, and the timers the
//!   update arms (announce, GC) 1.1 s later;
//! * **fabric**: `fabric_version` and the data-path snapshot (`FabricTable::capture` of every
//!   known peer plus the connected/UDP-address sets), then the broadcast hops the forwarder
//!   asks for when it relays one broadcast from the changed peer;
//! * **status**: `Mesh::status`, which `/status` and `/metrics` call; after the updates it is
//!   also called 2,000 times in a row and its CPU time per call reported ("status at rest").
//!
//! The update figure is apply + fabric; status is reported apart, as it runs per scrape, not
//! per update. Wall times include waiting for the CPU on a busy machine; the CPU time per update
//! (from `/proc/self/stat`, 10 ms resolution over the whole run) does not.
//!
//! Memory is the process's resident set (`VmRSS`, and its peak `VmHWM`) read from
//! `/proc/self/status` after the topology is loaded and after the updates; run one size per
//! process (bench/topology.sh does).
//!
//! Usage: `cargo run --release -p weft-core --example topology_update -- [peers] [degree]
//! [updates]` (defaults 4096, 8, 300).
#![allow(clippy::unwrap_used, clippy::expect_used)] // a benchmark: a panic is a failed run

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use weft_core::handshake::{Handshake, LocalIdentity};
use weft_core::mesh::{ConnId, Mesh, MeshConfig, MeshEvent, Origin};
use weft_core::overlay::{Fabric, FabricTable};
use weft_wire::protocol::ProtocolMsg;
use weft_wire::topology_delta::{self, Delta, Message};
use weft_wire::{topology as topo_wire, ConnectionSummary, PeerName, PeerSummary};

const US: usize = 0;
const HUB: usize = 1;

fn config(name: PeerName, nick: &str, uid: u64) -> MeshConfig {
    MeshConfig {
        identity: LocalIdentity {
            name,
            nick_name: nick.into(),
            uid,
            short_id: (uid % 4096) as u16,
            overlays: "sleeve".into(),
        },
        port: 6783,
        conn_limit: 0,
        discovery: false,
        fastdp: false,
        mtu: 65535,
        topology_deltas: true,
        gossip_interval: weft_core::mesh::GOSSIP_INTERVAL,
    }
}

/// The two real routers and the link between them.
struct Pair {
    meshes: [Mesh; 2],
    conns: [ConnId; 2],
    addrs: [SocketAddr; 2],
    now: Instant,
}

impl Pair {
    fn new() -> Self {
        let now = Instant::now();
        let cfgs = [
            config(PeerName(0x0200_0000_0001), "us", 11),
            config(PeerName(0x0200_0000_0002), "hub", 22),
        ];
        let (id_us, id_hub) = (cfgs[US].identity.clone(), cfgs[HUB].identity.clone());
        let [cfg_us, cfg_hub] = cfgs;
        let mut meshes = [Mesh::new(cfg_us, 1, now), Mesh::new(cfg_hub, 2, now)];
        let addrs: [SocketAddr; 2] = [
            "10.0.0.1:6783".parse().unwrap(),
            "10.0.0.2:6783".parse().unwrap(),
        ];
        let conns = [ConnId(1), ConnId(2)];
        let (ids, idh) = (meshes[US].new_conn_id(), meshes[HUB].new_conn_id());
        let (mut hs, mut hh) = (
            Handshake::new(&id_us, ids, false),
            Handshake::new(&id_hub, idh, false),
        );
        let mut to_h = hs.poll_transmit().unwrap_or_default();
        let mut to_s = hh.poll_transmit().unwrap_or_default();
        let rh = hh.handle_input(&mut to_h).unwrap().unwrap();
        let rs = hs.handle_input(&mut to_s).unwrap().unwrap();
        let out = Origin::Outbound {
            dial_addr: addrs[HUB],
            accept_new_peer: true,
        };
        meshes[US]
            .handle_connection_ready(
                conns[US],
                &rs,
                addrs[HUB],
                out,
                ids,
                Default::default(),
                now,
            )
            .unwrap();
        meshes[HUB]
            .handle_connection_ready(
                conns[HUB],
                &rh,
                addrs[US],
                Origin::Inbound,
                idh,
                Default::default(),
                now,
            )
            .unwrap();
        let mut p = Self {
            meshes,
            conns,
            addrs,
            now,
        };
        for _ in 0..20 {
            p.advance(Duration::from_millis(100));
        }
        p
    }

    /// Moves every event across the link until both sides are quiet. Topology gossip is not
    /// delivered: the hub stands for the whole synthetic mesh, whose entries we inject.
    fn pump(&mut self) {
        loop {
            let mut moved = false;
            for from in [US, HUB] {
                let to = 1 - from;
                while let Some(ev) = self.meshes[from].poll_event(self.now) {
                    moved = true;
                    match ev {
                        MeshEvent::Send { body, .. } => {
                            let gossip = matches!(
                                ProtocolMsg::decode(&body),
                                Ok(Some(
                                    ProtocolMsg::Gossip { .. }
                                        | ProtocolMsg::GossipBroadcast { .. }
                                ))
                            );
                            if !gossip {
                                self.meshes[to].handle_frame(self.conns[to], &body, self.now);
                            }
                        }
                        MeshEvent::SendUdp { datagram, .. } => {
                            self.meshes[to].handle_datagram(self.addrs[from], &datagram, self.now);
                        }
                        _ => {}
                    }
                }
            }
            if !moved {
                return;
            }
        }
    }

    /// Runs both routers' timers up to `d` from now.
    fn advance(&mut self, d: Duration) {
        let end = self.now + d;
        loop {
            self.pump();
            let next = self
                .meshes
                .iter()
                .filter_map(Mesh::poll_timeout)
                .min()
                .unwrap_or(end);
            if next > end {
                break;
            }
            self.now = next.max(self.now);
            for m in &mut self.meshes {
                if m.poll_timeout().is_some_and(|t| t <= self.now) {
                    m.handle_timeout(self.now);
                }
            }
        }
        self.now = end;
        self.pump();
    }

    /// Hands `us` a gossip message as if the hub sent it.
    fn gossip_from_hub(&mut self, channel: &str, payload: Vec<u8>) {
        let msg = ProtocolMsg::Gossip {
            channel: channel.to_string(),
            src: self.meshes[HUB].name(),
            payload,
        };
        let mut body = Vec::new();
        msg.encode(&mut body);
        self.meshes[US].handle_frame(self.conns[US], &body, self.now);
    }
}

/// The synthetic mesh: per fake peer, its summary and neighbour set.
struct Synthetic {
    entries: BTreeMap<PeerName, (PeerSummary, BTreeSet<PeerName>)>,
}

impl Synthetic {
    fn new(n: usize, degree: usize, hub: PeerSummary, us: PeerName, rng: &mut StdRng) -> Self {
        let fakes: Vec<PeerName> = (0..n.saturating_sub(2))
            .map(|i| PeerName(0x0300_0000_0000 + i as u64))
            .collect();
        let mut entries: BTreeMap<PeerName, (PeerSummary, BTreeSet<PeerName>)> = fakes
            .iter()
            .enumerate()
            .map(|(i, &name)| {
                let s = PeerSummary {
                    name,
                    nick_name: format!("fake{i}"),
                    uid: 1000 + i as u64,
                    version: 1,
                    short_id: (i % 4096) as u16,
                    has_short_id: true,
                };
                (name, (s, BTreeSet::new()))
            })
            .collect();
        let link = |a: PeerName, b: PeerName, e: &mut BTreeMap<_, (PeerSummary, BTreeSet<_>)>| {
            if a != b {
                e.get_mut(&a)
                    .map(|x: &mut (PeerSummary, BTreeSet<PeerName>)| x.1.insert(b));
                e.get_mut(&b)
                    .map(|x: &mut (PeerSummary, BTreeSet<PeerName>)| x.1.insert(a));
            }
        };
        let mut hub_entry = hub.clone();
        hub_entry.version += 1;
        entries.insert(hub.name, (hub_entry, BTreeSet::from([us])));
        // A ring keeps everything connected; random chords give the degree.
        for (i, &a) in fakes.iter().enumerate() {
            link(a, fakes[(i + 1) % fakes.len()], &mut entries);
            for _ in 0..degree.saturating_sub(2) / 2 {
                let b = fakes[rng.gen_range(0..fakes.len())];
                link(a, b, &mut entries);
            }
        }
        for &f in fakes.iter().step_by(fakes.len().max(8) / 8) {
            link(hub.name, f, &mut entries);
        }
        Self { entries }
    }

    fn conns(&self, of: &BTreeSet<PeerName>) -> Vec<ConnectionSummary> {
        of.iter()
            .map(|&name| ConnectionSummary {
                name,
                remote_tcp_addr: format!(
                    "10.{}.{}.{}:6783",
                    (name.0 >> 16) & 0xff,
                    (name.0 >> 8) & 0xff,
                    name.0 & 0xff
                ),
                outbound: true,
                established: true,
            })
            .collect()
    }

    fn payload(&self) -> Vec<u8> {
        let all: Vec<_> = self
            .entries
            .values()
            .map(|(s, c)| (s.clone(), self.conns(c)))
            .collect();
        topo_wire::encode(&all)
    }

    /// A delta from a random fake peer: drop one neighbour, or take back one it dropped.
    fn delta(&mut self, rng: &mut StdRng, hub: PeerName) -> (PeerName, Delta) {
        let names: Vec<PeerName> = self.entries.keys().copied().filter(|&n| n != hub).collect();
        let p = names[rng.gen_range(0..names.len())];
        let q = names[rng.gen_range(0..names.len())];
        let (s, conns) = self.entries.get_mut(&p).unwrap();
        let base = s.version;
        s.version += 1;
        let (removed, upserted) = if conns.remove(&q) {
            (vec![q], vec![])
        } else if q != p {
            conns.insert(q);
            (vec![], vec![q])
        } else {
            (vec![], vec![])
        };
        let upserted = self.conns(&upserted.into_iter().collect());
        let summary = self.entries[&p].0.clone();
        (
            p,
            Delta {
                summary,
                base_version: base,
                removed,
                upserted,
            },
        )
    }
}

/// CPU time this process has used (user + system), from `/proc/self/stat` (10 ms ticks): unlike
/// wall time, it does not grow when other processes share the cores.
fn cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which may hold spaces) start at the state, field 3.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<u64> = rest
        .split_whitespace()
        .skip(11)
        .take(2)
        .filter_map(|x| x.parse().ok())
        .collect();
    Duration::from_millis(f.iter().sum::<u64>() * 10)
}

/// `VmRSS` and `VmHWM` of this process, in bytes.
fn memory() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |key: &str| {
        status
            .lines()
            .find(|l| l.starts_with(key))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<u64>().ok())
            .map_or(0, |kb| kb * 1024)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

fn percentile(v: &mut [Duration], p: f64) -> Duration {
    v.sort_unstable();
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v.get(i).copied().unwrap_or_default()
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn main() {
    let mut args = std::env::args()
        .skip(1)
        .map(|a| a.parse::<usize>().expect("a number"));
    let n = args.next().unwrap_or(4096);
    let degree = args.next().unwrap_or(8);
    let updates = args.next().unwrap_or(300);
    let mut rng = StdRng::seed_from_u64(7);

    let mut pair = Pair::new();
    let established = pair.meshes[US]
        .status(pair.now)
        .connections
        .iter()
        .any(|c| c.state == "established");
    assert!(established, "the link to the hub is not established");
    let hub = pair.meshes[HUB].peers().our_summary();
    let us = pair.meshes[US].name();
    let mut syn = Synthetic::new(n, degree, hub.clone(), us, &mut rng);
    let payload = syn.payload();
    let t = Instant::now();
    pair.gossip_from_hub("topology", payload.clone());
    pair.pump();
    let load = t.elapsed();
    let known = pair.meshes[US].peers().len();
    assert_eq!(known, n, "the whole synthetic topology is held");
    let edges: usize = pair.meshes[US]
        .peers()
        .all_names()
        .iter()
        .filter_map(|&p| pair.meshes[US].peers().get(p).map(|(_, c)| c.len()))
        .sum();
    let (rss_loaded, _) = memory();

    let (mut apply, mut fabric, mut status, mut total) = (vec![], vec![], vec![], vec![]);
    let mut status_cpu = Duration::ZERO;
    let cpu0 = cpu_time();
    for _ in 0..updates {
        let (changed, d) = syn.delta(&mut rng, hub.name);
        let msg = Message::Update {
            deltas: vec![d],
            refs: vec![],
        };
        let payload = msg.encode().unwrap();
        let t0 = Instant::now();
        pair.gossip_from_hub(topology_delta::CHANNEL, payload);
        pair.advance(Duration::from_millis(1100));
        let t1 = Instant::now();
        let mesh = &mut pair.meshes[US];
        let _ = mesh.fabric_version();
        let names = mesh.peers().all_names();
        let table = FabricTable::capture(&mesh.fabric(), &names);
        let connected = names.iter().filter(|&&p| mesh.is_connected(p)).count();
        let udp = names.iter().filter_map(|&p| mesh.peer_udp_addr(p)).count();
        let hops = table.broadcast_next_hops(changed).len() + table.broadcast_next_hops(us).len();
        std::hint::black_box((connected, udp, hops));
        let t2 = Instant::now();
        let c2 = cpu_time();
        let s = mesh.status(pair.now);
        std::hint::black_box(s.broadcast_routes.len() + s.unicast_routes.len());
        status_cpu += cpu_time().saturating_sub(c2);
        let t3 = Instant::now();
        apply.push(t1 - t0);
        fabric.push(t2 - t1);
        status.push(t3 - t2);
        total.push(t2 - t0);
    }
    let cpu = cpu_time().saturating_sub(cpu0);
    // What one `/status` costs the mesh task at rest: the snapshot, many times over, so that
    // the 10 ms CPU clock resolves it.
    let rest_calls = 2000u32;
    let c0 = cpu_time();
    let t0 = Instant::now();
    for _ in 0..rest_calls {
        let s = pair.meshes[US].status(pair.now);
        std::hint::black_box(s.peers.len() + s.connections.len());
    }
    let rest_wall = t0.elapsed() / rest_calls;
    let rest_cpu = cpu_time().saturating_sub(c0) / rest_calls;
    let per_update_cpu = cpu.saturating_sub(status_cpu) / updates.max(1) as u32;
    let status_cpu = status_cpu / updates.max(1) as u32;
    assert_eq!(
        pair.meshes[US].peers().len(),
        n,
        "nothing was lost on the way"
    );
    let (rss, hwm) = memory();
    println!(
        "peers={n} connection_entries={edges} updates={updates} initial_load_ms={:.1} payload_kb={}",
        ms(load),
        payload.len() / 1024
    );
    println!(
        "  cpu per update (apply + fabric) ms={:.2}; per status call ms={:.2}",
        ms(per_update_cpu),
        ms(status_cpu)
    );
    println!(
        "  status at rest ({rest_calls} calls): cpu per call ms={:.3} wall per call ms={:.3}",
        ms(rest_cpu),
        ms(rest_wall)
    );
    println!("  wall times; update = apply + fabric (status is per scrape, not per update):");
    for (what, v) in [
        ("apply", &mut apply),
        ("fabric", &mut fabric),
        ("update", &mut total),
        ("status", &mut status),
    ] {
        println!(
            "  {what:<7} median_ms={:.3} p99_ms={:.3} max_ms={:.3}",
            ms(percentile(v, 0.5)),
            ms(percentile(v, 0.99)),
            ms(percentile(v, 1.0))
        );
    }
    println!(
        "  memory rss_after_load_mb={:.1} rss_after_updates_mb={:.1} peak_rss_mb={:.1}",
        rss_loaded as f64 / 1048576.0,
        rss as f64 / 1048576.0,
        hwm as f64 / 1048576.0
    );
}
