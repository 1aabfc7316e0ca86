//! weft's table inside a container's network namespace: multicast arriving on the weave
//! interface is accepted only from the container's own subnets (spec `weave-edges.md` §3.4,
//! §3.7), Weave's `INPUT -i ethwe -s <subnet> -d 224.0.0.0/4 -j ACCEPT` rules followed by
//! `INPUT -i ethwe -d 224.0.0.0/4 -j DROP`.
//!
//! The weave network is one broadcast domain, so without these rules a container would take
//! in multicast from every subnet of the range, including those it is isolated from. The
//! rules live in `table inet weft` of the container's namespace, the same name as the host's
//! table: weft owns that table wherever it is, and [`crate::Nft::remove`] deletes it there
//! when the interface goes.

use serde_json::{json, Value};
use weft_types::Ipv4Cidr;

use crate::model::IfName;
use crate::render::{base_chain, cidr, ip, is, meta, multicast, replace_table, rule, verdict};
use crate::render::{CHAIN_INPUT, FILTER_PRIORITY};

/// The container's multicast rules: its weave interface and the subnets of its addresses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContainerRuleSet {
    iface: IfName,
    subnets: Vec<Ipv4Cidr>,
}

impl ContainerRuleSet {
    /// Rules for interface `iface` (`ethwe`) accepting multicast from no subnet yet.
    pub fn new(iface: IfName) -> Self {
        Self {
            iface,
            subnets: Vec::new(),
        }
    }

    /// Also accepts multicast from `subnet` (host bits are ignored; duplicates are one rule).
    #[must_use]
    pub fn with_subnet(mut self, subnet: Ipv4Cidr) -> Self {
        let subnet = subnet.network();
        if !self.subnets.contains(&subnet) {
            self.subnets.push(subnet);
        }
        self
    }

    /// The subnets multicast is accepted from (host bits cleared), in the order given.
    pub fn subnets(&self) -> &[Ipv4Cidr] {
        &self.subnets
    }

    /// The `nft -j -f -` input that (re)creates the container's table in one transaction:
    /// one accept rule per subnet, then the drop.
    pub fn to_nft_json(&self) -> Value {
        let iface = self.iface.as_str();
        let multicast = multicast();
        let mut cmds = replace_table();
        cmds.push(base_chain(CHAIN_INPUT, "filter", "input", FILTER_PRIORITY));
        for s in &self.subnets {
            cmds.push(rule(
                CHAIN_INPUT,
                &format!("weft: multicast from own subnet {s}"),
                vec![
                    is(meta("iifname"), iface),
                    is(ip("saddr"), cidr(*s)),
                    is(ip("daddr"), multicast.clone()),
                    verdict("accept"),
                ],
            ));
        }
        cmds.push(rule(
            CHAIN_INPUT,
            "weft: no multicast from other subnets",
            vec![
                is(meta("iifname"), iface),
                is(ip("daddr"), multicast),
                verdict("drop"),
            ],
        ));
        json!({ "nftables": cmds })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // In tests a panic is the failed assertion.
mod tests {
    use super::*;

    fn rules(v: &Value) -> Vec<&Value> {
        v["nftables"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|c| c["add"].get("rule"))
            .collect()
    }

    #[test]
    fn accepts_own_subnets_then_drops_multicast() {
        let rs = ContainerRuleSet::new(IfName::new("ethwe").unwrap())
            .with_subnet("10.2.1.7/24".parse().unwrap())
            .with_subnet("10.2.1.9/24".parse().unwrap())
            .with_subnet("10.3.0.1/16".parse().unwrap());
        assert_eq!(rs.subnets().len(), 2, "one rule per subnet");
        let v = rs.to_nft_json();
        let r = rules(&v);
        assert_eq!(r.len(), 3);
        let first = r[0]["expr"].to_string();
        assert!(first.contains(r#""addr":"10.2.1.0","len":24"#), "{first}");
        assert!(
            first.contains(r#""ethwe""#) && first.contains(r#""accept""#),
            "{first}"
        );
        assert!(r[1]["expr"]
            .to_string()
            .contains(r#""addr":"10.3.0.0","len":16"#));
        let last = r[2]["expr"].to_string();
        assert!(
            last.contains(r#""drop""#) && !last.contains("saddr"),
            "{last}"
        );
        assert!(last.contains(r#""addr":"224.0.0.0","len":4"#), "{last}");
        // Only the input chain: a container's table has no forward or NAT chains.
        let chains: Vec<_> = v["nftables"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|c| c["add"].get("chain"))
            .collect();
        assert_eq!(chains.len(), 1);
        assert_eq!(chains[0]["hook"], "input");
    }

    #[test]
    fn no_subnet_still_drops() {
        let v = ContainerRuleSet::new(IfName::new("ethwe").unwrap()).to_nft_json();
        let r = rules(&v);
        assert_eq!(r.len(), 1);
        assert!(r[0]["expr"].to_string().contains(r#""drop""#));
    }
}
