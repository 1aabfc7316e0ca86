//! Rendering a [`RuleSet`] to the JSON that `nft -j -f -` reads.
//!
//! # One `inet` table
//!
//! Everything lives in `table inet weft`: the filter chains and the NAT chain. One table is one
//! unit to create, replace, list and delete, which is what the spec's "nftables, owned" asks
//! for; splitting filter (`inet`) from NAT (`ip`) would only add a second object to keep in
//! step. NAT chains in the `inet` family need Linux ≥ 5.2, which weft requires anyway. The
//! rules match IPv4 (`ip saddr`, `ip daddr`) as Weave's did; nft adds the implicit IPv4
//! dependency, so IPv6 packets pass the table untouched.
//!
//! # Chains and priorities
//!
//! | chain | hook | priority | Weave equivalent |
//! |---|---|---|---|
//! | `forward` | forward, filter | `filter - 10` (-10) | the block at the top of `filter/FORWARD` |
//! | `expose` | (regular, jumped to) | — | `filter/WEAVE-EXPOSE` |
//! | `input` | input, filter | `filter - 10` (-10) | the rules appended to `filter/INPUT` |
//! | `postrouting` | postrouting, nat | `srcnat + 10` (110) | `nat/WEAVE` (appended jump) |
//! | `raw_prerouting` | prerouting, filter | `raw` (-300) | none (see below) |
//! | `raw_output` | output, filter | `raw` (-300) | none (see below) |
//!
//! The filter chains run just before iptables' `filter` table (priority 0, whether legacy or
//! nft), mirroring Weave's rules sitting at the top of `FORWARD`. Since a drop is final in any
//! table and an accept is not (see the crate docs), the priority decides ordering of counters
//! and side effects, not which verdict wins.
//!
//! The NAT chain runs just after iptables' `nat` table (priority 100). For a new connection the
//! kernel stops at the first NAT chain that sets up a mapping, so a source NAT chosen by other
//! software (Docker's own `MASQUERADE`) wins, as it did when Weave's `-j WEAVE` was appended to
//! `POSTROUTING` after Docker's rules.
//!
//! # Who may send VXLAN
//!
//! The kernel VXLAN device behind fastdp listens on UDP 6784 on every address and takes any
//! frame with weft's VNI: without a filter, any host that can reach this one could inject
//! frames into the `weave` bridge and teach its forwarding table (and the device's own) where
//! a MAC lives. The set `weft_fastdp_peers` (type `ipv4_addr`) holds the underlay addresses of
//! the connected fastdp peers; the first `input` rule accepts UDP to the VXLAN port from them
//! (so that the data path meets no further rule of weft's), the next drops UDP to that port
//! from anyone else, IPv6 included (fastdp peers are IPv4 only). The router
//! keeps the set in step with the mesh one element at a time
//! ([`RuleSet::fastdp_peer_json`], one small transaction per change); a full rendering carries
//! the current elements, so re-applying the table (expose, hide) keeps them. This only
//! concerns frames that reach the host: weft's own heartbeats come from peers in the set, and
//! Weave Net peers never send VXLAN to weft (they use sleeve with it, see `weft-fastdp`).
//!
//! # What skips connection tracking
//!
//! The NAT chain and the `ct state` matches turn connection tracking on in the router's
//! namespace, and on a Docker host bridged frames pass the IPv4 hooks too (`br_netfilter`).
//! Measured on the fastdp path, tracking, NAT lookups and the hooks cost about a sixth of the
//! kernel's work per byte, for packets no rule needs tracked. The raw chains mark them
//! `notrack` before conntrack (priority -200) sees them: VXLAN to and from fastdp peers (only
//! the set's addresses, so anything else sent to the port is tracked and dropped as before),
//! and frames on the weave bridge addressed to a MAC other than the bridge's own, that is,
//! bridged between weave ports rather than routed by this host (so masquerading, exposed
//! subnets and replies into weave, which go through the bridge's MAC, are tracked as before).
//!
//! # Guards for the router's ports
//!
//! As Weave's `INPUT` rules do, containers on the Docker bridge may not reach the router on the
//! bridge's address: TCP and UDP on the mesh port, UDP on the VXLAN port, and, beyond Weave,
//! TCP on the control (API) and status ports, whatever they are bound to. The control and
//! status ports bound to a loopback address also refuse packets from non-local sources (a
//! `route_localnet` trick), Weave's "Block non-local access to Weave Net control port" rule.
//!
//! All base chains have policy `accept`. Rendering is deterministic: the same [`RuleSet`]
//! always renders the same JSON, and each rule carries a `weft: …` comment saying why it exists.

use std::net::Ipv4Addr;

use serde_json::{json, Value};
use weft_types::Ipv4Cidr;

use crate::model::RuleSet;

/// Address family of weft's table.
pub const TABLE_FAMILY: &str = "inet";
/// Name of weft's table.
pub const TABLE_NAME: &str = "weft";
/// Filter chain on the forward hook.
pub const CHAIN_FORWARD: &str = "forward";
/// Filter chain on the input hook.
pub const CHAIN_INPUT: &str = "input";
/// Regular chain accepting forwarded traffic to exposed CIDRs (Weave's `WEAVE-EXPOSE`).
pub const CHAIN_EXPOSE: &str = "expose";
/// NAT chain on the postrouting hook (Weave's `nat/WEAVE`).
pub const CHAIN_POSTROUTING: &str = "postrouting";
/// Priority of the filter base chains: `filter - 10`.
pub const FILTER_PRIORITY: i32 = -10;
/// Chain on the prerouting hook that marks untracked packets.
pub const CHAIN_RAW_PREROUTING: &str = "raw_prerouting";
/// Chain on the output hook that marks untracked packets.
pub const CHAIN_RAW_OUTPUT: &str = "raw_output";
/// Priority of the raw chains: `raw`, before connection tracking.
pub const RAW_PRIORITY: i32 = -300;
/// Priority of the NAT base chain: `srcnat + 10`.
pub const NAT_PRIORITY: i32 = 110;
/// The set of underlay addresses VXLAN frames are accepted from (`ipv4_addr`).
pub const SET_FASTDP_PEERS: &str = "weft_fastdp_peers";

/// The multicast range that exposed subnets never masquerade to.
const MULTICAST: (&str, u8) = ("224.0.0.0", 4);
/// DNS port accepted from the Docker bridge (weaveDNS listens on its address).
const DNS_PORT: u16 = 53;

impl RuleSet {
    /// The `nft -j -f -` input that (re)creates weft's table in one transaction.
    ///
    /// It adds the table (a no-op if present), flushes it (dropping every rule weft installed
    /// before, in this table only), adds the chains (a no-op for chains that exist with the
    /// same definition) and then all rules. nft applies the batch atomically: packets see the
    /// old rules or the new ones, never a mix, and re-applying never duplicates a rule.
    pub fn to_nft_json(&self) -> Value {
        let mut cmds = replace_table();
        cmds.extend([
            base_chain(CHAIN_FORWARD, "filter", "forward", FILTER_PRIORITY),
            base_chain(CHAIN_INPUT, "filter", "input", FILTER_PRIORITY),
            json!({"add": {"chain": {
                "family": TABLE_FAMILY, "table": TABLE_NAME, "name": CHAIN_EXPOSE,
            }}}),
            base_chain(CHAIN_POSTROUTING, "nat", "postrouting", NAT_PRIORITY),
            base_chain(CHAIN_RAW_PREROUTING, "filter", "prerouting", RAW_PRIORITY),
            base_chain(CHAIN_RAW_OUTPUT, "filter", "output", RAW_PRIORITY),
            json!({"add": {"set": {
                "family": TABLE_FAMILY, "table": TABLE_NAME, "name": SET_FASTDP_PEERS,
                "type": "ipv4_addr",
            }}}),
            // `flush table` empties chains; the set's elements go explicitly, so that the
            // ones below are exactly what the set holds afterwards.
            json!({"flush": {"set": fastdp_set()}}),
        ]);
        let peers: Vec<String> = self.fastdp_peers().map(|ip| ip.to_string()).collect();
        if !peers.is_empty() {
            cmds.push(json!({"add": {"element": fastdp_elements(peers)}}));
        }
        self.raw_rules(&mut cmds);
        self.forward_rules(&mut cmds);
        self.input_rules(&mut cmds);
        self.expose_rules(&mut cmds);
        self.nat_rules(&mut cmds);
        json!({ "nftables": cmds })
    }

    /// The `nft -j -f -` input that deletes weft's table, and with it every chain and rule.
    ///
    /// Deleting a missing table is an error in nft, so the batch first adds the table (a no-op
    /// when it exists) and then deletes it; the pair is one transaction, so this is idempotent
    /// and never leaves an empty table behind.
    pub fn delete_json() -> Value {
        json!({"nftables": [
            {"metainfo": {"json_schema_version": 1}},
            {"add": {"table": table()}},
            {"delete": {"table": table()}},
        ]})
    }

    /// The `nft -j -f -` input that adds `ip` to (`member`) or deletes it from the set of
    /// fastdp peers in the installed table, one transaction touching nothing else.
    ///
    /// Deleting an element that is not there is an error in nft, as is touching a set whose
    /// table is gone; the caller then re-applies the whole table ([`RuleSet::to_nft_json`]),
    /// which carries the model's elements. Use the model's [`RuleSet::add_fastdp_peer`] and
    /// [`RuleSet::remove_fastdp_peer`] to know when a change is due.
    pub fn fastdp_peer_json(ip: Ipv4Addr, member: bool) -> Value {
        let verb = if member { "add" } else { "delete" };
        json!({"nftables": [
            {"metainfo": {"json_schema_version": 1}},
            { verb: {"element": fastdp_elements(vec![ip.to_string()])}},
        ]})
    }

    fn forward_rules(&self, out: &mut Vec<Value>) {
        let weave = self.bridge.as_str();
        if let Some(docker) = self.docker.as_ref().filter(|d| d.name != self.bridge) {
            out.push(rule(
                CHAIN_FORWARD,
                "weft: docker bridge may not forward into weave",
                vec![
                    is(meta("iifname"), docker.name.as_str()),
                    is(meta("oifname"), weave),
                    verdict("drop"),
                ],
            ));
        }
        out.push(rule(
            CHAIN_FORWARD,
            "weft: weave to weave",
            vec![
                is(meta("iifname"), weave),
                is(meta("oifname"), weave),
                verdict("accept"),
            ],
        ));
        out.push(rule(
            CHAIN_FORWARD,
            "weft: into weave only to exposed subnets",
            vec![
                is(meta("oifname"), weave),
                json!({"jump": {"target": CHAIN_EXPOSE}}),
            ],
        ));
        out.push(rule(
            CHAIN_FORWARD,
            "weft: weave to elsewhere",
            vec![
                is(meta("iifname"), weave),
                is_not(meta("oifname"), weave),
                verdict("accept"),
            ],
        ));
        out.push(rule(
            CHAIN_FORWARD,
            "weft: replies into weave",
            vec![
                is(meta("oifname"), weave),
                m(
                    "in",
                    json!({"ct": {"key": "state"}}),
                    json!(["established", "related"]),
                ),
                verdict("accept"),
            ],
        ));
    }

    fn expose_rules(&self, out: &mut Vec<Value>) {
        for e in &self.exposed {
            out.push(rule(
                CHAIN_EXPOSE,
                &format!("weft: expose {}", e.cidr),
                vec![is(ip("daddr"), cidr(e.cidr)), verdict("accept")],
            ));
        }
    }

    fn raw_rules(&self, out: &mut Vec<Value>) {
        let peers = format!("@{SET_FASTDP_PEERS}");
        for (chain, way, field) in [
            (CHAIN_RAW_PREROUTING, "from", "saddr"),
            (CHAIN_RAW_OUTPUT, "to", "daddr"),
        ] {
            out.push(rule(
                chain,
                &format!("weft: VXLAN {way} fastdp peers is not tracked"),
                vec![
                    is(payload("udp", "dport"), self.vxlan_port),
                    is(ip(field), peers.as_str()),
                    json!({"notrack": null}),
                ],
            ));
        }
        if let Some(mac) = self.bridge_mac {
            out.push(rule(
                CHAIN_RAW_PREROUTING,
                "weft: frames bridged between weave ports are not tracked",
                vec![
                    is(meta("iifname"), self.bridge.as_str()),
                    is_not(payload("ether", "daddr"), weft_types::format_mac(&mac)),
                    json!({"notrack": null}),
                ],
            ));
        }
    }

    fn input_rules(&self, out: &mut Vec<Value>) {
        // Peers' frames leave this chain after two matches instead of meeting every rule
        // below (all of which would let them pass): this is the fastdp data path.
        out.push(rule(
            CHAIN_INPUT,
            "weft: VXLAN from fastdp peers",
            vec![
                is(payload("udp", "dport"), self.vxlan_port),
                is(ip("saddr"), format!("@{SET_FASTDP_PEERS}")),
                verdict("accept"),
            ],
        ));
        out.push(rule(
            CHAIN_INPUT,
            "weft: VXLAN only from fastdp peers",
            vec![
                is(payload("udp", "dport"), self.vxlan_port),
                verdict("drop"),
            ],
        ));
        if let Some(docker) = &self.docker {
            let dev = docker.name.as_str();
            if let Some(addr) = docker.addr {
                for (proto, port) in self.guarded_ports() {
                    out.push(rule(
                        CHAIN_INPUT,
                        &format!("weft: containers may not reach the router ({proto} {port})"),
                        vec![
                            is(meta("iifname"), dev),
                            is(ip("daddr"), addr.to_string()),
                            is(payload(proto, "dport"), port),
                            verdict("drop"),
                        ],
                    ));
                }
            }
            for proto in ["udp", "tcp"] {
                out.push(rule(
                    CHAIN_INPUT,
                    &format!("weft: DNS from containers ({proto})"),
                    vec![
                        is(meta("iifname"), dev),
                        is(payload(proto, "dport"), DNS_PORT),
                        verdict("accept"),
                    ],
                ));
            }
        }
        let local = [(Some(self.control), "control"), (self.status, "status")];
        for (addr, what) in local {
            let Some(addr) = addr.filter(|a| a.ip().is_loopback()) else {
                continue;
            };
            out.push(rule(
                CHAIN_INPUT,
                &format!("weft: block non-local access to the {what} port"),
                vec![
                    is(ip("daddr"), addr.ip().to_string()),
                    is(payload("tcp", "dport"), addr.port()),
                    is_not(
                        json!({"fib": {"result": "type", "flags": ["saddr"]}}),
                        "local",
                    ),
                    is_not(
                        json!({"ct": {"key": "state"}}),
                        json!({"|": ["established", "related"]}),
                    ),
                    verdict("drop"),
                ],
            ));
        }
    }

    /// The router's ports that containers on the Docker bridge may not reach: Weave's three
    /// (TCP and UDP mesh, UDP VXLAN), then the control and status ports, each once.
    fn guarded_ports(&self) -> Vec<(&'static str, u16)> {
        let mut ports = vec![
            ("tcp", self.mesh_port),
            ("udp", self.mesh_port),
            ("udp", self.vxlan_port),
        ];
        for p in [Some(self.control.port()), self.status.map(|s| s.port())]
            .into_iter()
            .flatten()
        {
            if !ports.contains(&("tcp", p)) {
                ports.push(("tcp", p));
            }
        }
        ports
    }

    fn nat_rules(&self, out: &mut Vec<Value>) {
        let multicast = multicast();
        for e in self.exposed.iter().filter(|e| e.masquerade) {
            let c = cidr(e.cidr);
            let why = format!("weft: expose {}", e.cidr);
            out.push(rule(
                CHAIN_POSTROUTING,
                &why,
                vec![
                    is(ip("saddr"), c.clone()),
                    is(ip("daddr"), multicast.clone()),
                    verdict("return"),
                ],
            ));
            out.push(rule(
                CHAIN_POSTROUTING,
                &why,
                vec![
                    is(ip("daddr"), c.clone()),
                    is_not(ip("saddr"), c.clone()),
                    verdict("masquerade"),
                ],
            ));
            out.push(rule(
                CHAIN_POSTROUTING,
                &why,
                vec![
                    is(ip("saddr"), c.clone()),
                    is_not(ip("daddr"), c),
                    verdict("masquerade"),
                ],
            ));
        }
    }
}

/// The start of every batch that replaces weft's table: add it (a no-op if present), then
/// flush it, so that the rules that follow are all it holds.
pub(crate) fn replace_table() -> Vec<Value> {
    vec![
        json!({"metainfo": {"json_schema_version": 1}}),
        json!({"add": {"table": table()}}),
        json!({"flush": {"table": table()}}),
    ]
}

fn table() -> Value {
    json!({"family": TABLE_FAMILY, "name": TABLE_NAME})
}

fn fastdp_set() -> Value {
    json!({"family": TABLE_FAMILY, "table": TABLE_NAME, "name": SET_FASTDP_PEERS})
}

fn fastdp_elements(elem: Vec<String>) -> Value {
    json!({"family": TABLE_FAMILY, "table": TABLE_NAME, "name": SET_FASTDP_PEERS, "elem": elem})
}

pub(crate) fn base_chain(name: &str, kind: &str, hook: &str, prio: i32) -> Value {
    json!({"add": {"chain": {
        "family": TABLE_FAMILY, "table": TABLE_NAME, "name": name,
        "type": kind, "hook": hook, "prio": prio, "policy": "accept",
    }}})
}

/// An `add rule` command; every rule counts its packets (like iptables' `-v` counters).
pub(crate) fn rule(chain: &str, comment: &str, mut expr: Vec<Value>) -> Value {
    let at = expr.len().saturating_sub(1);
    expr.insert(at, json!({"counter": null}));
    json!({"add": {"rule": {
        "family": TABLE_FAMILY, "table": TABLE_NAME, "chain": chain,
        "comment": comment, "expr": expr,
    }}})
}

fn m(op: &str, left: Value, right: Value) -> Value {
    json!({"match": {"op": op, "left": left, "right": right}})
}

pub(crate) fn is(left: Value, right: impl Into<Value>) -> Value {
    m("==", left, right.into())
}

fn is_not(left: Value, right: impl Into<Value>) -> Value {
    m("!=", left, right.into())
}

pub(crate) fn meta(key: &str) -> Value {
    json!({"meta": {"key": key}})
}

fn payload(protocol: &str, field: &str) -> Value {
    json!({"payload": {"protocol": protocol, "field": field}})
}

pub(crate) fn ip(field: &str) -> Value {
    payload("ip", field)
}

/// A CIDR's subnet as nft writes it: a bare address for /32, otherwise a prefix.
pub(crate) fn cidr(c: Ipv4Cidr) -> Value {
    let n = c.network();
    if n.prefix_len() == 32 {
        json!(n.addr().to_string())
    } else {
        json!({"prefix": {"addr": n.addr().to_string(), "len": n.prefix_len()}})
    }
}

/// `224.0.0.0/4` as an nft prefix.
pub(crate) fn multicast() -> Value {
    json!({"prefix": {"addr": MULTICAST.0, "len": MULTICAST.1}})
}

pub(crate) fn verdict(v: &str) -> Value {
    json!({ v: null })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // In tests a panic is the failed assertion.
mod tests {
    use std::net::{Ipv4Addr, SocketAddrV4};

    use super::*;
    use crate::IfName;

    fn name(s: &str) -> IfName {
        IfName::new(s).unwrap()
    }

    fn full() -> RuleSet {
        let mut rs = RuleSet::new(name("weave"))
            .with_docker_bridge(name("docker0"), Some(Ipv4Addr::new(172, 17, 0, 1)));
        rs.expose("10.32.0.1/12".parse().unwrap(), true);
        rs
    }

    fn cmds(v: &Value) -> &Vec<Value> {
        v["nftables"].as_array().unwrap()
    }

    /// The `add rule` objects, in order.
    fn rules(v: &Value) -> Vec<&Value> {
        cmds(v)
            .iter()
            .filter_map(|c| c.get("add").and_then(|a| a.get("rule")))
            .collect()
    }

    fn chain_rules<'a>(v: &'a Value, chain: &str) -> Vec<&'a Value> {
        rules(v)
            .into_iter()
            .filter(|r| r["chain"] == chain)
            .collect()
    }

    /// VXLAN of fastdp peers skips tracking both ways; with the bridge's MAC known, so do
    /// frames bridged between weave ports, and nothing addressed to the bridge itself.
    #[test]
    fn untracked_packets() {
        let without = full().to_nft_json();
        let pre = chain_rules(&without, CHAIN_RAW_PREROUTING);
        let out = chain_rules(&without, CHAIN_RAW_OUTPUT);
        assert_eq!(pre.len(), 1);
        assert_eq!(out.len(), 1);
        let vxlan = |r: &Value, field: &str| {
            let e = &r["expr"];
            assert_eq!(e[0]["match"]["left"]["payload"]["field"], "dport");
            assert_eq!(e[0]["match"]["right"], 6784);
            assert_eq!(e[1]["match"]["left"]["payload"]["field"], field);
            assert_eq!(e[1]["match"]["right"], "@weft_fastdp_peers");
            assert_eq!(
                e.as_array().unwrap().last(),
                Some(&json!({"notrack": null}))
            );
        };
        vxlan(pre[0], "saddr");
        vxlan(out[0], "daddr");
        let with = full()
            .with_bridge_mac([0x02, 0xac, 0, 0, 0, 1])
            .to_nft_json();
        let pre = chain_rules(&with, CHAIN_RAW_PREROUTING);
        assert_eq!(pre.len(), 2);
        let e = &pre[1]["expr"];
        assert_eq!(e[0]["match"]["right"], "weave");
        assert_eq!(e[1]["match"]["op"], "!=");
        assert_eq!(e[1]["match"]["left"]["payload"]["protocol"], "ether");
        assert_eq!(e[1]["match"]["right"], "02:ac:00:00:00:01");
        assert_eq!(
            e.as_array().unwrap().last(),
            Some(&json!({"notrack": null}))
        );
    }

    #[test]
    fn transaction_shape() {
        let v = full().to_nft_json();
        let c = cmds(&v);
        assert_eq!(c[0]["metainfo"]["json_schema_version"], 1);
        assert_eq!(
            c[1],
            json!({"add": {"table": {"family": "inet", "name": "weft"}}})
        );
        assert_eq!(
            c[2],
            json!({"flush": {"table": {"family": "inet", "name": "weft"}}})
        );
        let chains: Vec<&Value> = c
            .iter()
            .filter_map(|c| c.get("add").and_then(|a| a.get("chain")))
            .collect();
        let want = [
            (CHAIN_FORWARD, Some(("filter", "forward", -10))),
            (CHAIN_INPUT, Some(("filter", "input", -10))),
            (CHAIN_EXPOSE, None),
            (CHAIN_POSTROUTING, Some(("nat", "postrouting", 110))),
            (CHAIN_RAW_PREROUTING, Some(("filter", "prerouting", -300))),
            (CHAIN_RAW_OUTPUT, Some(("filter", "output", -300))),
        ];
        assert_eq!(chains.len(), want.len());
        for (ch, (n, hook)) in chains.iter().zip(want) {
            assert_eq!(ch["name"], n);
            match hook {
                Some((ty, hook, prio)) => {
                    assert_eq!(ch["type"], ty);
                    assert_eq!(ch["hook"], hook);
                    assert_eq!(ch["prio"], prio);
                    assert_eq!(ch["policy"], "accept", "never break other software");
                }
                None => assert!(ch.get("hook").is_none()),
            }
        }
        // Chains come before every rule.
        let first_rule = c
            .iter()
            .position(|c| c["add"].get("rule").is_some())
            .unwrap();
        assert!(c[first_rule..]
            .iter()
            .all(|c| c["add"].get("rule").is_some()));
    }

    #[test]
    fn everything_lives_in_our_table() {
        for v in [
            full().to_nft_json(),
            RuleSet::default().to_nft_json(),
            RuleSet::delete_json(),
            RuleSet::fastdp_peer_json(Ipv4Addr::new(10, 0, 0, 1), true),
            RuleSet::fastdp_peer_json(Ipv4Addr::new(10, 0, 0, 1), false),
        ] {
            for c in cmds(&v) {
                let (verb, body) = c.as_object().unwrap().iter().next().unwrap();
                if verb == "metainfo" {
                    continue;
                }
                assert!(
                    ["add", "flush", "delete"].contains(&verb.as_str()),
                    "{verb}"
                );
                let (kind, obj) = body.as_object().unwrap().iter().next().unwrap();
                assert_eq!(obj["family"], "inet", "{c}");
                match kind.as_str() {
                    "table" => assert_eq!(obj["name"], "weft"),
                    "chain" | "rule" | "set" | "element" => assert_eq!(obj["table"], "weft"),
                    other => panic!("unexpected object {other}"),
                }
                if verb == "delete" {
                    assert!(["table", "element"].contains(&kind.as_str()), "{kind}");
                }
            }
        }
    }

    #[test]
    fn delete_is_add_then_delete() {
        let v = RuleSet::delete_json();
        let c = cmds(&v);
        assert_eq!(
            c[1],
            json!({"add": {"table": {"family": "inet", "name": "weft"}}})
        );
        assert_eq!(
            c[2],
            json!({"delete": {"table": {"family": "inet", "name": "weft"}}})
        );
        assert_eq!(c.len(), 3);
    }

    #[test]
    fn rendering_is_deterministic_and_idempotent() {
        let a = full();
        assert_eq!(a.to_nft_json(), a.clone().to_nft_json());
        let mut b = a.clone();
        assert!(!b.expose("10.32.0.0/12".parse().unwrap(), true));
        assert_eq!(a.to_nft_json(), b.to_nft_json());
    }

    #[test]
    fn forward_and_input_rules() {
        let v = full().to_nft_json();
        let fwd: Vec<&str> = chain_rules(&v, CHAIN_FORWARD)
            .iter()
            .map(|r| r["comment"].as_str().unwrap())
            .collect();
        assert_eq!(fwd.len(), 5);
        assert!(fwd[0].contains("docker bridge may not forward"));
        let drop = chain_rules(&v, CHAIN_FORWARD)[0]["expr"].clone();
        assert_eq!(
            drop,
            json!([
                {"match": {"op": "==", "left": {"meta": {"key": "iifname"}}, "right": "docker0"}},
                {"match": {"op": "==", "left": {"meta": {"key": "oifname"}}, "right": "weave"}},
                {"counter": null},
                {"drop": null},
            ])
        );
        let input = chain_rules(&v, CHAIN_INPUT);
        // VXLAN from peers, VXLAN from others, 5 port drops, 2 DNS accepts, control and
        // status guards.
        assert_eq!(input.len(), 11);
        let dport = json!({"payload": {"protocol": "udp", "field": "dport"}});
        assert_eq!(
            input[0]["expr"],
            json!([
                {"match": {"op": "==", "left": dport, "right": 6784}},
                {"match": {"op": "==",
                    "left": {"payload": {"protocol": "ip", "field": "saddr"}},
                    "right": "@weft_fastdp_peers"}},
                {"counter": null},
                {"accept": null},
            ])
        );
        assert_eq!(
            input[1]["expr"],
            json!([
                {"match": {"op": "==", "left": dport, "right": 6784}},
                {"counter": null},
                {"drop": null},
            ])
        );
        let guards = &input[2..7];
        let ports: Vec<(String, u64)> = guards
            .iter()
            .map(|r| {
                let m = &r["expr"][2]["match"];
                (
                    m["left"]["payload"]["protocol"]
                        .as_str()
                        .unwrap()
                        .to_owned(),
                    m["right"].as_u64().unwrap(),
                )
            })
            .collect();
        assert_eq!(
            ports,
            [
                ("tcp".into(), 6783),
                ("udp".into(), 6783),
                ("udp".into(), 6784),
                ("tcp".into(), 6784),
                ("tcp".into(), 6782),
            ]
        );
        for r in guards {
            assert_eq!(r["expr"][0]["match"]["right"], "docker0");
            assert_eq!(r["expr"][1]["match"]["right"], "172.17.0.1");
            assert_eq!(r["expr"][4], json!({"drop": null}));
        }
        assert!(input[7..9]
            .iter()
            .all(|r| r["expr"][1]["match"]["right"] == 53));
        for (r, port, what) in [(input[9], 6784, "control"), (input[10], 6782, "status")] {
            assert_eq!(r["expr"][0]["match"]["right"], "127.0.0.1");
            assert_eq!(r["expr"][1]["match"]["right"], port);
            assert_eq!(r["expr"][5], json!({"drop": null}));
            assert_eq!(
                r["comment"],
                format!("weft: block non-local access to the {what} port")
            );
        }
    }

    #[test]
    fn fastdp_set_carries_the_model_and_changes_one_element() {
        let mut rs = full();
        let v = rs.to_nft_json();
        let c = cmds(&v);
        let set = c
            .iter()
            .find_map(|c| c["add"].get("set"))
            .expect("the set is declared");
        assert_eq!(
            *set,
            json!({"family": "inet", "table": "weft", "name": "weft_fastdp_peers",
                "type": "ipv4_addr"})
        );
        assert!(c
            .iter()
            .any(|c| c["flush"]["set"]["name"] == "weft_fastdp_peers"));
        assert!(
            !c.iter().any(|c| c["add"].get("element").is_some()),
            "no peers, no elements"
        );

        let a = Ipv4Addr::new(10, 99, 0, 2);
        let b = Ipv4Addr::new(10, 99, 0, 3);
        assert!(rs.add_fastdp_peer(b));
        assert!(rs.add_fastdp_peer(a));
        let v = rs.to_nft_json();
        let elems: Vec<&Value> = cmds(&v)
            .iter()
            .filter_map(|c| c["add"].get("element"))
            .collect();
        assert_eq!(elems.len(), 1);
        assert_eq!(elems[0]["name"], "weft_fastdp_peers");
        assert_eq!(elems[0]["elem"], json!(["10.99.0.2", "10.99.0.3"]));
        // The set and its elements come before the rules that use it.
        let first_rule = cmds(&v)
            .iter()
            .position(|c| c["add"].get("rule").is_some())
            .unwrap();
        let elem_at = cmds(&v)
            .iter()
            .position(|c| c["add"].get("element").is_some())
            .unwrap();
        assert!(elem_at < first_rule);
        // Peers change only the elements, never a rule.
        assert_eq!(rules(&v), rules(&full().to_nft_json()));

        assert_eq!(
            RuleSet::fastdp_peer_json(a, true),
            json!({"nftables": [
                {"metainfo": {"json_schema_version": 1}},
                {"add": {"element": {"family": "inet", "table": "weft",
                    "name": "weft_fastdp_peers", "elem": ["10.99.0.2"]}}},
            ]})
        );
        let del = RuleSet::fastdp_peer_json(a, false);
        assert_eq!(cmds(&del).len(), 2);
        assert_eq!(
            cmds(&del)[1]["delete"]["element"]["elem"],
            json!(["10.99.0.2"])
        );
    }

    #[test]
    fn optional_inputs_leave_rules_out() {
        // No Docker bridge: no docker rules at all; the VXLAN, control and status guards stay.
        let v = RuleSet::default().to_nft_json();
        assert_eq!(chain_rules(&v, CHAIN_FORWARD).len(), 4);
        assert_eq!(chain_rules(&v, CHAIN_INPUT).len(), 4);
        // Docker bridge without an address: DNS accepts but no port drops.
        let v = RuleSet::default()
            .with_docker_bridge(name("docker0"), None)
            .to_nft_json();
        assert_eq!(chain_rules(&v, CHAIN_FORWARD).len(), 5);
        assert_eq!(chain_rules(&v, CHAIN_INPUT).len(), 6);
        // Docker using the weave bridge itself: no docker→weave drop.
        let v = RuleSet::default()
            .with_docker_bridge(name("weave"), None)
            .to_nft_json();
        assert_eq!(chain_rules(&v, CHAIN_FORWARD).len(), 4);
        // API and status deliberately bound to a non-loopback address, or no status
        // listener: no non-local guard for them.
        let v = RuleSet::default()
            .with_control_addr(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 6784))
            .with_status_addr(Some(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 6782)))
            .to_nft_json();
        assert_eq!(chain_rules(&v, CHAIN_INPUT).len(), 2);
        let v = RuleSet::default().with_status_addr(None).to_nft_json();
        let input = chain_rules(&v, CHAIN_INPUT);
        assert_eq!(input.len(), 3);
        assert!(input[2]["comment"]
            .as_str()
            .unwrap()
            .contains("control port"));
        // Non-default ports and bridge name flow through; a port shared by the control and
        // status listeners is guarded once.
        let v = RuleSet::new(name("wv"))
            .with_docker_bridge(name("br0"), Some(Ipv4Addr::new(10, 9, 0, 1)))
            .with_mesh_port(7000)
            .with_vxlan_port(7001)
            .with_control_addr(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 7002))
            .with_status_addr(Some(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 7002)))
            .to_nft_json();
        let input = chain_rules(&v, CHAIN_INPUT);
        assert_eq!(input[0]["expr"][0]["match"]["right"], 7001);
        assert_eq!(input[1]["expr"][0]["match"]["right"], 7001);
        let guarded: Vec<u64> = input[2..]
            .iter()
            .filter(|r| r["comment"].as_str().unwrap().contains("may not reach"))
            .map(|r| r["expr"][2]["match"]["right"].as_u64().unwrap())
            .collect();
        assert_eq!(guarded, [7000, 7000, 7001, 7002]);
        assert!(chain_rules(&v, CHAIN_FORWARD)
            .iter()
            .all(|r| r.to_string().contains("\"wv\"")));
    }

    #[test]
    fn nat_rules_match_weave() {
        let v = full().to_nft_json();
        let nat: Vec<Value> = chain_rules(&v, CHAIN_POSTROUTING)
            .iter()
            .map(|r| r["expr"].clone())
            .collect();
        let c = json!({"prefix": {"addr": "10.32.0.0", "len": 12}});
        let ip = |f: &str| json!({"payload": {"protocol": "ip", "field": f}});
        let m = |op: &str, l: Value, r: &Value| json!({"match": {"op": op, "left": l, "right": r}});
        assert_eq!(
            nat,
            [
                json!([
                    m("==", ip("saddr"), &c),
                    m("==", ip("daddr"), &json!({"prefix": {"addr": "224.0.0.0", "len": 4}})),
                    {"counter": null},
                    {"return": null},
                ]),
                json!([
                    m("==", ip("daddr"), &c),
                    m("!=", ip("saddr"), &c),
                    {"counter": null},
                    {"masquerade": null},
                ]),
                json!([
                    m("==", ip("saddr"), &c),
                    m("!=", ip("daddr"), &c),
                    {"counter": null},
                    {"masquerade": null},
                ]),
            ]
        );
        let exp = chain_rules(&v, CHAIN_EXPOSE);
        assert_eq!(exp.len(), 1);
        assert_eq!(exp[0]["expr"][0], m("==", ip("daddr"), &c));
        assert_eq!(exp[0]["comment"], "weft: expose 10.32.0.0/12");
    }

    #[test]
    fn host_cidr_renders_as_address() {
        let mut rs = RuleSet::default();
        rs.expose("10.1.2.3/32".parse().unwrap(), false);
        let v = rs.to_nft_json();
        assert_eq!(
            chain_rules(&v, CHAIN_EXPOSE)[0]["expr"][0]["match"]["right"],
            "10.1.2.3"
        );
        assert!(
            chain_rules(&v, CHAIN_POSTROUTING).is_empty(),
            "no masquerade requested"
        );
    }

    #[test]
    fn expose_and_hide_touch_only_their_rules() {
        let base = full();
        let before: Vec<Value> = rules(&base.to_nft_json()).into_iter().cloned().collect();
        let other: Ipv4Cidr = "10.2.1.0/24".parse().unwrap();

        let mut more = base.clone();
        more.expose(other, true);
        let after: Vec<Value> = rules(&more.to_nft_json()).into_iter().cloned().collect();
        let added: Vec<&Value> = after.iter().filter(|r| !before.contains(r)).collect();
        assert_eq!(after.len(), before.len() + 4);
        assert_eq!(added.len(), 4);
        assert!(added
            .iter()
            .all(|r| r["comment"] == "weft: expose 10.2.1.0/24"));
        assert_eq!(
            added.iter().filter(|r| r["chain"] == CHAIN_EXPOSE).count(),
            1
        );
        assert_eq!(
            added
                .iter()
                .filter(|r| r["chain"] == CHAIN_POSTROUTING)
                .count(),
            3
        );
        // Every earlier rule is still there, in the same relative order.
        let kept: Vec<&Value> = after.iter().filter(|r| before.contains(r)).collect();
        assert_eq!(kept, before.iter().collect::<Vec<_>>());

        // Switching to --without-masquerade drops only the NAT rules.
        let mut nomasq = more.clone();
        assert!(nomasq.expose(other, false));
        let v = nomasq.to_nft_json();
        assert_eq!(rules(&v).len(), before.len() + 1);

        // Hiding restores exactly the original rendering.
        let mut hidden = more;
        assert!(hidden.hide(other));
        assert_eq!(hidden.to_nft_json(), base.to_nft_json());
    }
}
