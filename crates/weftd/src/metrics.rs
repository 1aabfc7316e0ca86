//! Prometheus metrics with Weave Net's names and labels, rendered from a status snapshot at
//! scrape time so the numbers always agree with `weft status`.
//!
//! Beyond Weave's, `weft_…` counters show what the router refused, ignored or skipped of what
//! peers and clients sent (Weave Net has none to match): connections and intros refused,
//! frames that closed their connection, ignored gossip, topology entries not taken, discovered
//! addresses not dialled, and the sleeve's drops by reason (`wrong_source` among them).

use crate::dns::task::DnsStatus;
use crate::driver::Snapshot;
use crate::ipam::status::IpamStatus;
use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ConnLabels {
    state: String,
    #[prometheus(flatten)]
    kind: KindLabel,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DropLabels {
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StageLabels {
    stage: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ChannelLabels {
    channel: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabel {
    r#type: String,
    encryption: String,
}

/// Renders the metrics text for one scrape.
pub fn render(snap: &Snapshot, ipam: Option<&IpamStatus>, dns: Option<&DnsStatus>) -> String {
    let s = &snap.mesh;
    let mut reg = Registry::default();
    let conns = Family::<ConnLabels, Gauge>::default();
    for c in &s.connections {
        // The overlay name is the first word of the info column of live connections, after
        // `encrypted`/`unencrypted` when there is a password.
        let ty = match c.state.as_str() {
            "established" | "pending" => c
                .info
                .split_whitespace()
                .find(|w| *w != "encrypted" && *w != "unencrypted")
                .filter(|w| *w != "none")
                .unwrap_or("unknown"),
            _ => "unknown",
        };
        // Encrypted: data sealed with the session key (status shows `encrypted=true`).
        let encryption = c.attrs.contains_key("encrypted");
        // Weave exports both encryption values for each (state, type) pair it has.
        for enc in ["yes", ""] {
            let g = conns.get_or_create(&ConnLabels {
                state: c.state.clone(),
                kind: KindLabel {
                    r#type: ty.to_string(),
                    encryption: enc.to_string(),
                },
            });
            if (enc == "yes") == encryption {
                g.inc();
            }
        }
    }
    reg.register(
        "weave_connections",
        "Number of peer-to-peer connections",
        conns,
    );
    let terminations = Counter::<u64>::default();
    terminations.inc_by(s.termination_count);
    reg.register(
        "weave_connection_terminations",
        "Number of peer-to-peer connections terminated",
        terminations,
    );
    let f = &snap.forwarder;
    let dropped = Family::<DropLabels, Counter<u64>>::default();
    for (reason, n) in [
        ("no_route", f.dropped_no_route),
        ("unknown_peer", f.dropped_unknown_peer),
        ("unknown_sender", snap.dropped_unknown_sender),
        ("undecryptable", snap.dropped_undecryptable),
        ("replayed", snap.dropped_replayed),
        ("malformed", f.dropped_malformed),
        ("local_dst", f.dropped_local_dst),
        ("stp", f.dropped_stp),
        ("mac_conflict", f.dropped_mac_conflict),
        ("too_big", f.dropped_too_big),
        ("looped", f.dropped_looped),
        ("queue_full", f.dropped_queue_full),
        ("wrong_source", f.dropped_wrong_source),
    ] {
        dropped
            .get_or_create(&DropLabels {
                reason: reason.to_string(),
            })
            .inc_by(n);
    }
    reg.register(
        "weft_sleeve_dropped_frames",
        "Frames and datagrams the sleeve path dropped, by reason",
        dropped,
    );
    let gossip = Family::<ChannelLabels, Counter<u64>>::default();
    for (channel, n) in [
        ("topology", s.topology_bytes_sent.0),
        (weft_wire::topology_delta::CHANNEL, s.topology_bytes_sent.1),
    ] {
        gossip
            .get_or_create(&ChannelLabels {
                channel: channel.to_string(),
            })
            .inc_by(n);
    }
    reg.register(
        "weft_topology_gossip_sent_bytes",
        "Topology gossip bytes sent: Weave's full entries (topology) or weft's deltas",
        gossip,
    );
    let frames = Family::<StageLabels, Counter<u64>>::default();
    for (stage, n) in [
        ("framing", snap.io.frames_refused),
        ("mesh", s.ignored.frames),
    ] {
        frames
            .get_or_create(&StageLabels {
                stage: stage.to_string(),
            })
            .inc_by(n);
    }
    reg.register(
        "weft_frames_refused",
        "Frames that closed their connection: broken framing (framing), or malformed or against the protocol (mesh)",
        frames,
    );
    for (name, help, n) in [
        (
            "weft_connections_refused",
            "Accepted connections closed at once because too many intros were in progress",
            snap.io.connections_refused,
        ),
        (
            "weft_intros_failed",
            "Connection intros (handshakes) that failed or timed out",
            snap.io.intros_failed,
        ),
        (
            "weft_connections_not_reading",
            "Connections closed because the peer left too many bytes unread",
            snap.io.not_reading,
        ),
        (
            "weft_gossip_ignored_messages",
            "Messages ignored: blank, unknown tags, repeated gossip on unknown channels, unicasts on unknown channels",
            s.ignored.gossip,
        ),
        (
            "weft_topology_ignored_peers",
            "Peers first heard of in gossip and not taken because the topology was full",
            s.ignored.peers,
        ),
        (
            "weft_topology_refused_versions",
            "Topology entries and deltas skipped for an implausible version",
            s.ignored.versions,
        ),
        (
            "weft_discovery_skipped_candidates",
            "Discovered addresses not dialled because the most discovery targets were held",
            s.ignored.discovery_candidates,
        ),
        (
            "weft_sleeve_captured_frames",
            "Frames captured from the local bridge",
            f.captured,
        ),
        (
            "weft_sleeve_injected_frames",
            "Frames injected into the local bridge",
            f.injected,
        ),
        (
            "weft_sleeve_relayed_frames",
            "Frames relayed for other peers",
            f.relayed,
        ),
        (
            "weft_sleeve_unlearnt_macs",
            "Source MACs not learnt because the sleeve MAC cache was full for their peer or in total",
            f.macs_not_learnt,
        ),
        (
            "weft_sleeve_kernel_injected_frames",
            "Frames the kernel's sleeve receive shortcut injected into the local bridge",
            snap.kernel_injected,
        ),
    ] {
        let c = Counter::<u64>::default();
        c.inc_by(n);
        reg.register(name, help, c);
    }
    if let Some(i) = ipam {
        register_ipam(&mut reg, i);
    }
    if let Some(d) = dns {
        let g = Gauge::<i64>::default();
        g.set(i64::try_from(d.ours).unwrap_or(i64::MAX));
        reg.register("weave_dns_entries", "Number of local DNS entries", g);
    }
    let mut out = String::new();
    if encode(&mut out, &reg).is_err() {
        return String::new();
    }
    out
}

/// Weave Net's IPAM gauges.
fn register_ipam(reg: &mut Registry, i: &IpamStatus) {
    let gauge = |v: i64| {
        let g = Gauge::<i64>::default();
        g.set(v);
        g
    };
    let ips = Family::<StateLabels, Gauge>::default();
    ips.get_or_create(&StateLabels {
        state: "local-used".into(),
    })
    .set(i64::try_from(i.active).unwrap_or(i64::MAX));
    reg.register("weave_ips", "Number of IP addresses", ips);
    let universe = i.range.block_size();
    reg.register(
        "weave_max_ips",
        "Size of IP address space used by allocator",
        gauge(i64::try_from(universe).unwrap_or(i64::MAX)),
    );
    let unreachable: std::collections::BTreeMap<_, u64> = i
        .entries
        .iter()
        .filter(|e| !e.is_known_peer)
        .fold(Default::default(), |mut m, e| {
            *m.entry(e.peer).or_default() += u64::from(e.size);
            m
        });
    reg.register(
        "weave_ipam_unreachable_count",
        "Number of unreachable peers",
        gauge(unreachable.len() as i64),
    );
    let pct = Gauge::<f64, std::sync::atomic::AtomicU64>::default();
    pct.set(unreachable.values().sum::<u64>() as f64 * 100.0 / universe as f64);
    reg.register(
        "weave_ipam_unreachable_percentage",
        "Percentage of IP addresses owned by unreachable peers",
        pct,
    );
    reg.register(
        "weave_ipam_pending_allocates",
        "Number of pending allocates",
        gauge(i.pending_allocates.len() as i64),
    );
    reg.register(
        "weave_ipam_pending_claims",
        "Number of pending claims",
        gauge(i.pending_claims.len() as i64),
    );
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use weft_core::handshake::LocalIdentity;
    use weft_core::mesh::{Ignored, Mesh, MeshConfig};
    use weft_core::overlay::ForwarderStats;
    use weft_wire::PeerName;

    use super::*;
    use crate::driver::IoCounts;

    fn snapshot() -> Snapshot {
        let cfg = MeshConfig {
            identity: LocalIdentity {
                name: PeerName(0x0200_0000_0001),
                nick_name: "h1".into(),
                uid: 7,
                short_id: 1,
                overlays: "sleeve".into(),
            },
            port: 6783,
            conn_limit: 0,
            discovery: true,
            fastdp: false,
            mtu: 1376,
            topology_deltas: true,
            gossip_interval: weft_core::mesh::GOSSIP_INTERVAL,
        };
        let now = Instant::now();
        let mut mesh = Mesh::new(cfg, 1, now).status(now);
        mesh.ignored = Ignored {
            peers: 11,
            versions: 12,
            discovery_candidates: 13,
            gossip: 14,
            frames: 15,
        };
        let forwarder = ForwarderStats {
            dropped_wrong_source: 16,
            ..ForwarderStats::default()
        };
        Snapshot {
            mesh,
            forwarder,
            dropped_unknown_sender: 17,
            dropped_undecryptable: 0,
            dropped_replayed: 0,
            kernel_injected: 0,
            io: IoCounts {
                connections_refused: 21,
                intros_failed: 22,
                frames_refused: 23,
                not_reading: 24,
            },
        }
    }

    #[test]
    fn what_was_refused_or_ignored_is_scraped() {
        let text = render(&snapshot(), None, None);
        for line in [
            "weft_connections_refused_total 21",
            "weft_intros_failed_total 22",
            "weft_frames_refused_total{stage=\"framing\"} 23",
            "weft_frames_refused_total{stage=\"mesh\"} 15",
            "weft_connections_not_reading_total 24",
            "weft_gossip_ignored_messages_total 14",
            "weft_topology_ignored_peers_total 11",
            "weft_topology_refused_versions_total 12",
            "weft_discovery_skipped_candidates_total 13",
            "weft_sleeve_dropped_frames_total{reason=\"wrong_source\"} 16",
            "weft_sleeve_dropped_frames_total{reason=\"unknown_sender\"} 17",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "{line:?} missing from:\n{text}"
            );
        }
        // Each counter has its HELP and TYPE once.
        assert_eq!(text.matches("# TYPE weft_intros_failed counter").count(), 1);
    }
}

#[cfg(test)]
mod ipam_tests {
    use weft_core::ipam::allocator::Readiness;
    use weft_wire::PeerName;

    use super::*;
    use crate::ipam::status::EntryStatus;

    #[test]
    fn ipam_gauges_are_weaves() {
        let e = |peer, size, known| EntryStatus {
            token: String::new(),
            size,
            peer: PeerName(peer),
            nickname: String::new(),
            is_known_peer: known,
            version: 0,
        };
        let i = IpamStatus {
            us: PeerName(1),
            readiness: Readiness::Ready,
            range: "10.32.0.0/12".parse().unwrap(),
            default_subnet: "10.32.0.0/12".parse().unwrap(),
            active: 3,
            entries: vec![
                e(1, 1 << 19, true),
                e(2, 1 << 18, false),
                e(2, 1 << 18, false),
            ],
            pending_claims: Vec::new(),
            pending_allocates: vec!["c1 10.32.0.0/12".into()],
        };
        let mut reg = Registry::default();
        register_ipam(&mut reg, &i);
        let mut text = String::new();
        encode(&mut text, &reg).unwrap();
        for line in [
            "weave_ips{state=\"local-used\"} 3",
            "weave_max_ips 1048576",
            "weave_ipam_unreachable_count 1",
            "weave_ipam_unreachable_percentage 50.0",
            "weave_ipam_pending_allocates 1",
            "weave_ipam_pending_claims 0",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "{line:?} missing from:\n{text}"
            );
        }
    }
}
