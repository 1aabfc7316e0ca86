//! Renders the router's state in Weave Net's formats: the `weft status` text views and the
//! `weft report` JSON document (`WeaveStatus`), so scripts written for Weave Net keep working.

use std::fmt::Write as _;

use serde_json::{json, Value};
use weft_core::mesh::{ConnectionStatus, MeshStatus};

/// The version string shown by `weft version` and the status `Version:` line.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Router facts not owned by the mesh state machine.
#[derive(Debug, Clone)]
pub struct RouterInfo {
    /// Whether a password is configured.
    pub encryption: bool,
    /// `--trusted-subnets`.
    pub trusted_subnets: Vec<String>,
    /// What the router captures and injects through, for the report's `Interface`.
    pub interface: String,
}

fn line(out: &mut String, label: &str, value: impl std::fmt::Display) {
    let _ = writeln!(out, "{label:>15}: {value}");
}

fn counts(parts: &[(&str, usize)]) -> String {
    parts
        .iter()
        .filter(|(_, n)| *n > 0)
        .map(|(s, n)| format!("{n} {s}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `GET /status`: the full status block (without the blank lines the CLI adds around it).
pub fn render_status(s: &MeshStatus, info: &RouterInfo) -> String {
    let mut out = String::new();
    line(
        &mut out,
        "Version",
        format!("weft {VERSION} (version check update disabled)"),
    );
    out.push('\n');
    line(&mut out, "Service", "router");
    let protocol = if s.protocol_min == s.protocol_max {
        format!("weave {}", s.protocol_min)
    } else {
        format!("weave {}..{}", s.protocol_min, s.protocol_max)
    };
    line(&mut out, "Protocol", protocol);
    line(
        &mut out,
        "Name",
        format!("{}({})", s.local.name, s.local.nick_name),
    );
    let onoff = |b: bool| if b { "enabled" } else { "disabled" };
    line(&mut out, "Encryption", onoff(info.encryption));
    line(&mut out, "PeerDiscovery", onoff(s.discovery));
    line(&mut out, "Targets", s.targets.len());
    let n = |st: &str| s.connections.iter().filter(|c| c.state == st).count();
    let breakdown = counts(&[
        ("established", n("established")),
        ("pending", n("pending")),
        ("retrying", n("retrying")),
        ("failed", n("failed")),
        ("connecting", n("connecting")),
    ]);
    if breakdown.is_empty() {
        line(&mut out, "Connections", s.connections.len());
    } else {
        line(
            &mut out,
            "Connections",
            format!("{} ({breakdown})", s.connections.len()),
        );
    }
    let (est, pend) = s.peers.connection_counts();
    let conns = counts(&[("established", est), ("pending", pend)]);
    if conns.is_empty() {
        line(&mut out, "Peers", s.peers.len());
    } else {
        line(
            &mut out,
            "Peers",
            format!("{} (with {conns} connections)", s.peers.len()),
        );
    }
    let trusted = if info.trusted_subnets.is_empty() {
        "none".to_string()
    } else {
        info.trusted_subnets.join(", ")
    };
    line(&mut out, "TrustedSubnets", trusted);
    out
}

/// `GET /status/targets`.
pub fn render_targets(s: &MeshStatus) -> String {
    s.targets.iter().map(|t| format!("{t}\n")).collect()
}

fn connection_line(c: &ConnectionStatus) -> String {
    let attrs: String = c.attrs.iter().map(|(k, v)| format!("{k}={v}")).collect();
    format!(
        "{} {:<21} {:<11} {} {}",
        if c.outbound { "->" } else { "<-" },
        c.address,
        c.state,
        c.info,
        attrs
    )
}

/// `GET /status/connections`.
pub fn render_connections(s: &MeshStatus) -> String {
    s.connections
        .iter()
        .map(|c| connection_line(c) + "\n")
        .collect()
}

/// `GET /status/peers`.
pub fn render_peers(s: &MeshStatus) -> String {
    let mut out = String::new();
    for p in s.peers.iter() {
        let _ = writeln!(out, "{}({})", p.summary.name, p.summary.nick_name);
        for c in p.connections {
            let nick = s.peers.nick_name(c.name).unwrap_or_default();
            let _ = writeln!(
                out,
                "   {} {:<21} {:<37} {}",
                if c.outbound { "->" } else { "<-" },
                c.remote_tcp_addr,
                format!("{}({nick})", c.name),
                if c.established {
                    "established"
                } else {
                    "pending"
                }
            );
        }
    }
    out
}

/// The `WeaveStatus` document of `GET /report`.
pub fn report(s: &MeshStatus, info: &RouterInfo, ready: bool) -> Value {
    let peers: Vec<Value> = s
        .peers
        .iter()
        .map(|p| {
            json!({
                "Name": p.summary.name.to_string(),
                "NickName": p.summary.nick_name,
                "UID": p.summary.uid,
                "ShortID": p.summary.short_id,
                "Version": p.summary.version,
                "Connections": p.connections.iter().map(|c| json!({
                    "Name": c.name.to_string(),
                    "NickName": s.peers.nick_name(c.name).unwrap_or_default(),
                    "Address": c.remote_tcp_addr,
                    "Outbound": c.outbound,
                    "Established": c.established,
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    let connections: Vec<Value> = s
        .connections
        .iter()
        .map(|c| {
            json!({
                "Address": c.address,
                "Outbound": c.outbound,
                "State": c.state,
                "Info": c.info,
                "Attrs": c.attrs,
            })
        })
        .collect();
    json!({
        "Ready": ready,
        "Version": VERSION,
        "VersionCheck": { "Enabled": false, "Success": false, "NewVersion": "", "NextCheckAt": "0001-01-01T00:00:00Z" },
        "Router": {
            "Protocol": "weave",
            "ProtocolMinVersion": s.protocol_min,
            "ProtocolMaxVersion": s.protocol_max,
            "Encryption": info.encryption,
            "PeerDiscovery": s.discovery,
            "Name": s.local.name.to_string(),
            "NickName": s.local.nick_name,
            "Port": s.port,
            "Peers": peers,
            "UnicastRoutes": s.unicast_routes.iter().map(|(d, v)| json!({"Dest": d.to_string(), "Via": v.to_string()})).collect::<Vec<_>>(),
            "BroadcastRoutes": s.broadcast_routes.iter().map(|(src, via)| json!({"Source": src.to_string(), "Via": via.iter().map(ToString::to_string).collect::<Vec<_>>()})).collect::<Vec<_>>(),
            "Connections": connections,
            "TerminationCount": s.termination_count,
            "Targets": s.targets,
            "OverlayDiagnostics": { "sleeve": null },
            "TrustedSubnets": info.trusted_subnets,
            "Interface": info.interface,
            "CaptureStats": null,
            "MACs": null,
        },
    })
}
