//! IPAM's part of the status views in Weave Net's formats: the `Service: ipam` block of
//! `weft status`, the `weft status ipam` lines, and the report's `IPAM` object.

use std::fmt::Write as _;

use serde_json::{json, Value};
use weft_core::ipam::allocator::{Allocator, Readiness};
use weft_types::Ipv4Cidr;
use weft_wire::PeerName;

/// One ring range as the report lists it (Weave's `EntryStatus`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryStatus {
    /// First address.
    pub token: String,
    /// Addresses in the range.
    pub size: u32,
    /// Owner.
    pub peer: PeerName,
    /// Owner's nickname, if known.
    pub nickname: String,
    /// Whether the router knows the owner.
    pub is_known_peer: bool,
    /// Entry version.
    pub version: u32,
}

/// IPAM's state at one instant, taken by the IPAM task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpamStatus {
    /// Our peer name.
    pub us: PeerName,
    /// The status line's state.
    pub readiness: Readiness,
    /// `--ipalloc-range`.
    pub range: Ipv4Cidr,
    /// `--ipalloc-default-subnet`.
    pub default_subnet: Ipv4Cidr,
    /// Addresses given out here.
    pub active: u64,
    /// Ring ranges, in ring order.
    pub entries: Vec<EntryStatus>,
    /// Claims waiting: ident and address.
    pub pending_claims: Vec<(String, Ipv4Cidr)>,
    /// Allocations waiting: `ident subnet`.
    pub pending_allocates: Vec<String>,
}

impl IpamStatus {
    /// Takes the allocator's state; `known` says whether the router knows a peer.
    pub fn of(
        alloc: &Allocator,
        default_subnet: Ipv4Cidr,
        known: &dyn Fn(PeerName) -> bool,
    ) -> Self {
        let us = alloc.name();
        let entries = alloc
            .ring()
            .range_info()
            .into_iter()
            .map(|r| EntryStatus {
                token: r.range.start.to_string(),
                size: r.range.size(),
                peer: r.peer,
                nickname: alloc.nicknames().get(&r.peer).cloned().unwrap_or_default(),
                is_known_peer: r.peer == us || known(r.peer),
                version: r.version,
            })
            .collect();
        let (pending_claims, pending_allocates) = alloc.pending_ops();
        Self {
            us,
            readiness: alloc.readiness(),
            range: alloc.universe(),
            default_subnet,
            active: alloc.space().num_owned(),
            entries,
            pending_claims,
            pending_allocates,
        }
    }

    /// The `Service: ipam` block of `weft status`, starting with its blank line.
    pub fn render_section(&self) -> String {
        let mut out = String::from("\n");
        let line = |out: &mut String, label: &str, value: &dyn std::fmt::Display| {
            let _ = writeln!(out, "{label:>15}: {value}");
        };
        line(&mut out, "Service", &"ipam");
        line(&mut out, "Status", &self.readiness);
        line(&mut out, "Range", &self.range);
        line(&mut out, "DefaultSubnet", &self.default_subnet);
        out
    }

    /// `weft status ipam`: one line per peer owning ranges, ours first, then the others in
    /// peer-name order.
    pub fn render_owners(&self) -> String {
        // Owner -> (nickname, size, known), in ring order of first appearance.
        let mut owners: Vec<(PeerName, String, u64, bool)> = Vec::new();
        for e in &self.entries {
            match owners.iter_mut().find(|o| o.0 == e.peer) {
                Some(o) => o.2 += u64::from(e.size),
                None => owners.push((
                    e.peer,
                    e.nickname.clone(),
                    u64::from(e.size),
                    e.is_known_peer,
                )),
            }
        }
        owners.sort_by_key(|o| (o.0 != self.us, o.0));
        let total = self.range.block_size() as f64;
        let mut out = String::new();
        for (peer, nick, size, known) in owners {
            let info = if peer == self.us {
                format!("({} active)", self.active)
            } else if known {
                String::new()
            } else {
                "- unreachable!".to_owned()
            };
            let name = format!("{peer}({nick})");
            let pct = size as f64 * 100.0 / total;
            let _ = writeln!(
                out,
                "{name:<37} {size:>8} IPs ({pct:04.1}% of total) {info}"
            );
        }
        out
    }

    /// The report's `IPAM` object (Weave's `ipam.Status`).
    pub fn report(&self) -> Value {
        let paxos = match self.readiness {
            Readiness::AwaitingConsensus { quorum, known } => {
                json!({"Elector": true, "KnownNodes": known, "Quorum": quorum})
            }
            Readiness::Priming => json!({"Elector": false, "KnownNodes": 0, "Quorum": 0}),
            _ => Value::Null,
        };
        let or_null = |v: Vec<Value>| {
            if v.is_empty() {
                Value::Null
            } else {
                Value::Array(v)
            }
        };
        json!({
            "Paxos": paxos,
            "Range": self.range.to_string(),
            "RangeNumIPs": self.range.block_size(),
            "ActiveIPs": self.active,
            "DefaultSubnet": self.default_subnet.to_string(),
            "Entries": or_null(self.entries.iter().map(|e| json!({
                "Token": e.token,
                "Size": e.size,
                "Peer": e.peer.to_string(),
                "Nickname": e.nickname,
                "IsKnownPeer": e.is_known_peer,
                "Version": e.version,
            })).collect()),
            "PendingClaims": or_null(self.pending_claims.iter().map(|(id, c)| json!({
                "Ident": id,
                "CIDR": c.to_string(),
            })).collect()),
            "PendingAllocates": or_null(self.pending_allocates.iter().map(|s| json!(s)).collect()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status() -> IpamStatus {
        let e = |token: &str, size, peer, nick: &str, known| EntryStatus {
            token: token.into(),
            size,
            peer: PeerName(peer),
            nickname: nick.into(),
            is_known_peer: known,
            version: 0,
        };
        IpamStatus {
            us: PeerName(0x42ec_9286_1a31),
            readiness: Readiness::Ready,
            range: "10.32.0.0/12".parse().unwrap(),
            default_subnet: "10.32.0.0/12".parse().unwrap(),
            active: 3,
            entries: vec![
                e("10.32.0.0", 349526, 0x42ec_9286_1a31, "docker4", true),
                e("10.37.85.86", 349525, 0x6e3c_c4e9_1e57, "docker5", true),
                e("10.42.170.171", 349525, 0x0a00_0000_0001, "gone", false),
            ],
            pending_claims: Vec::new(),
            pending_allocates: Vec::new(),
        }
    }

    /// Weave Net's lines, spacing and rounding (weave-edges §1.5.6).
    #[test]
    fn owner_lines_match_weave() {
        assert_eq!(
            status().render_owners(),
            "42:ec:92:86:1a:31(docker4)              349526 IPs (33.3% of total) (3 active)\n\
             0a:00:00:00:00:01(gone)                 349525 IPs (33.3% of total) - unreachable!\n\
             6e:3c:c4:e9:1e:57(docker5)              349525 IPs (33.3% of total) \n"
        );
    }

    #[test]
    fn section_and_report() {
        let s = status();
        assert_eq!(
            s.render_section(),
            "\n        Service: ipam\n         Status: ready\n          Range: 10.32.0.0/12\n  \
             DefaultSubnet: 10.32.0.0/12\n"
        );
        let r = s.report();
        assert_eq!(r["RangeNumIPs"], 1 << 20);
        assert_eq!(r["Entries"][1]["Nickname"], "docker5");
        assert_eq!(r["Paxos"], Value::Null);
        assert_eq!(r["PendingClaims"], Value::Null);
    }
}
