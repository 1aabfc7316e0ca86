//! Prometheus metrics with Weave Net's names and labels, rendered from a status snapshot at
//! scrape time so the numbers always agree with `weft status`.

use crate::driver::Snapshot;
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
struct ChannelLabels {
    channel: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabel {
    r#type: String,
    encryption: String,
}

/// Renders the metrics text for one scrape.
pub fn render(snap: &Snapshot, encryption: bool) -> String {
    let s = &snap.mesh;
    let mut reg = Registry::default();
    let conns = Family::<ConnLabels, Gauge>::default();
    for c in &s.connections {
        // The overlay name is the first word of the info column of live connections.
        let ty = match c.state.as_str() {
            "established" | "pending" => c
                .info
                .split_whitespace()
                .next()
                .filter(|w| *w != "none")
                .unwrap_or("unknown"),
            _ => "unknown",
        };
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
    for (name, help, n) in [
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
    let mut out = String::new();
    if encode(&mut out, &reg).is_err() {
        return String::new();
    }
    out
}
