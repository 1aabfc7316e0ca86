//! Prometheus metrics with Weave Net's names and labels, rendered from a status snapshot at
//! scrape time so the numbers always agree with `weft status`.

use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use weft_core::mesh::MeshStatus;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ConnLabels {
    state: String,
    #[prometheus(flatten)]
    kind: KindLabel,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabel {
    r#type: String,
    encryption: String,
}

/// Renders the metrics text for one scrape.
pub fn render(s: &MeshStatus, encryption: bool) -> String {
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
        "Number of peer-to-peer connections.",
        conns,
    );
    let terminations = Counter::<u64>::default();
    terminations.inc_by(s.termination_count);
    reg.register(
        "weave_connection_terminations",
        "Number of peer-to-peer connections terminated.",
        terminations,
    );
    let mut out = String::new();
    if encode(&mut out, &reg).is_err() {
        return String::new();
    }
    out
}
