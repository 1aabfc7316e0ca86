//! `attach`, `detach` and `ps`: the veth pair, addresses, multicast rules and route of a
//! container's weave interface.

use std::net::{IpAddr, Ipv4Addr};

use weft_netdev::{LinkInfo, Netdev};
use weft_types::Ipv4Cidr;

use crate::announce::{announce, probe_in_use};
use crate::container::in_container;
use crate::{AttachError, Container, BRIDGE, CONTAINER_IF};

/// Weave Net names the pair after the first 7 characters of the container id (a PID or a
/// random hex id). Namespace names often share long prefixes, so a longer name is replaced by
/// 7 hex digits of its hash, keeping interface names within 15 bytes and distinct.
fn veth_names(id: &str) -> (String, String) {
    let short: String = if id.len() <= 7 && id.chars().all(|c| c.is_ascii_alphanumeric()) {
        id.to_string()
    } else {
        let h = id.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        });
        format!("{:07x}", h & 0x0fff_ffff)
    };
    (format!("vethwepl{short}"), format!("vethwepg{short}"))
}

/// `weft attach`: connects the container to the bridge with these addresses (idempotent).
/// `host` is a netlink handle in the namespace of the bridge. The new addresses among `probe`
/// are first checked for duplicates on the weave network (an ARP probe that waits a quarter
/// of a second for an answer): callers pass the addresses given by hand, since those IPAM
/// just handed out are unique in the cluster already. Returns the addresses asked for, all
/// of which are now configured.
pub async fn attach(
    host: &Netdev,
    c: &Container,
    cidrs: &[Ipv4Cidr],
    multicast_route: bool,
    probe: &[Ipv4Addr],
) -> Result<Vec<Ipv4Cidr>, AttachError> {
    let ns = c.open()?;
    let bridge = host.link(BRIDGE).await?.ok_or(AttachError::NoBridge)?;
    let present = in_container(&ns, |nl| async move {
        Ok(match nl.link(CONTAINER_IF).await? {
            Some(l) => Some(v4_addrs(&nl, l.index).await?),
            None => None,
        })
    })?;
    let has_if = present.is_some();
    let fresh: Vec<Ipv4Addr> = cidrs
        .iter()
        .map(Ipv4Cidr::addr)
        .filter(|a| {
            !present
                .as_ref()
                .is_some_and(|p| p.iter().any(|c| c.addr() == *a))
        })
        .filter(|a| probe.contains(a))
        .collect();
    if let Some((addr, mac)) = probe_in_use(bridge.index, bridge.mac, &fresh).await? {
        return Err(AttachError::InUse {
            addr,
            mac: weft_netdev::format_mac(&mac),
        });
    }
    let mut created = None;
    if !has_if {
        let (host_end, peer_end) = veth_names(&c.id());
        let (h, p) = bridge_veth(host, &bridge, &host_end, &peer_end).await?;
        created = Some(h);
        let result = async {
            host.move_to_netns(p.index, &ns).await?;
            let pe = peer_end.clone();
            in_container(&ns, move |nl| async move {
                let l = nl.link(&pe).await?.ok_or(AttachError::NoBridge)?;
                nl.rename(l.index, CONTAINER_IF).await?;
                Ok(())
            })
        }
        .await;
        if let Err(e) = result {
            if let Some(i) = created {
                let _ = host.delete_link(i).await;
            }
            return Err(e);
        }
    }
    let want = cidrs.to_vec();
    let result = in_container(&ns, move |nl| async move {
        let l = nl.link(CONTAINER_IF).await?.ok_or(AttachError::NoBridge)?;
        tune_neighbours(CONTAINER_IF);
        let mut added = Vec::new();
        for c in &want {
            if nl
                .add_address(l.index, IpAddr::V4(c.addr()), c.prefix_len())
                .await?
            {
                added.push(c.addr());
            }
        }
        set_multicast_rules(&v4_addrs(&nl, l.index).await?)?;
        nl.set_up(l.index).await?;
        announce(&nl, l.index, CONTAINER_IF, &added).await?;
        if multicast_route {
            nl.add_multicast_route(l.index).await?;
        }
        Ok(want)
    });
    if result.is_err() {
        if let Some(i) = created {
            let _ = host.delete_link(i).await;
        }
    }
    result
}

/// Weave's neighbour settings for a container's weave interface `name` (run in its
/// namespace): a moved address is noticed within seconds.
fn tune_neighbours(name: &str) {
    for (k, v) in [
        ("base_reachable_time", "5"),
        ("delay_first_probe_time", "2"),
        ("ucast_solicit", "1"),
    ] {
        let _ = weft_netdev::set_sysctl(&format!("net/ipv4/neigh/{name}/{k}"), v);
    }
    let _ = weft_netdev::set_sysctl(&format!("net/ipv6/conf/{name}/accept_ra"), "0");
}

/// For a container someone else connected to the weave network (Docker, through the network
/// plugin): on each of its interfaces whose name starts with `prefix`, the neighbour settings
/// `attach` gives `ethwe`, and gratuitous ARPs for its addresses. Returns the addresses
/// announced. Blocks while it waits for carrier (at most a few seconds).
pub fn announce_interfaces(c: &Container, prefix: &str) -> Result<Vec<Ipv4Addr>, AttachError> {
    let ns = c.open()?;
    let prefix = prefix.to_string();
    in_container(&ns, move |nl| async move {
        let mut announced = Vec::new();
        for l in nl.links().await? {
            if !l.name.starts_with(&prefix) {
                continue;
            }
            tune_neighbours(&l.name);
            let addrs: Vec<Ipv4Addr> = v4_addrs(&nl, l.index)
                .await?
                .iter()
                .map(Ipv4Cidr::addr)
                .collect();
            announce(&nl, l.index, &l.name, &addrs).await?;
            announced.extend(addrs);
        }
        Ok(announced)
    })
}

/// Creates the veth pair `host_end` ↔ `peer_end` with the bridge's MTU, puts `host_end` on the
/// bridge (up, hairpin, no router advertisements taken) and leaves `peer_end` down in the host's
/// namespace for the caller to hand to a container. Returns the host end's index and the peer
/// end. On failure nothing is left behind.
pub async fn bridge_veth(
    host: &Netdev,
    bridge: &LinkInfo,
    host_end: &str,
    peer_end: &str,
) -> Result<(u32, LinkInfo), AttachError> {
    host.create_veth(host_end, peer_end, bridge.mtu).await?;
    let result = async {
        let h = host.link(host_end).await?.ok_or(AttachError::NoBridge)?;
        let p = host.link(peer_end).await?.ok_or(AttachError::NoBridge)?;
        host.set_master(h.index, bridge.index).await?;
        let _ = weft_netdev::set_sysctl(&format!("net/ipv6/conf/{host_end}/accept_ra"), "0");
        host.set_up(h.index).await?;
        host.set_hairpin(h.index, true).await?;
        Ok((h.index, p))
    }
    .await;
    if result.is_err() {
        if let Ok(Some(l)) = host.link(host_end).await {
            let _ = host.delete_link(l.index).await;
        }
    }
    result
}

/// `weft detach`: removes these addresses (all when `cidrs` is empty); when none is left the
/// interface goes too. Returns the addresses removed.
pub fn detach(c: &Container, cidrs: &[Ipv4Cidr]) -> Result<Vec<Ipv4Cidr>, AttachError> {
    let ns = c.open()?;
    let want = cidrs.to_vec();
    let id = c.id();
    in_container(&ns, move |nl| async move {
        let l = nl
            .link(CONTAINER_IF)
            .await?
            .ok_or(AttachError::NotAttached(id))?;
        let present = v4_addrs(&nl, l.index).await?;
        let targets: Vec<Ipv4Cidr> = if want.is_empty() {
            present.clone()
        } else {
            want.iter()
                .filter(|c| present.contains(c))
                .copied()
                .collect()
        };
        for c in &targets {
            nl.del_address(l.index, IpAddr::V4(c.addr()), c.prefix_len())
                .await?;
        }
        let left = v4_addrs(&nl, l.index).await?;
        if left.is_empty() {
            nl.delete_link(l.index).await?;
            // The detach has happened; rules left by a failed removal match only an `ethwe`
            // that no longer exists, and the next attach rewrites them.
            if let Err(e) = weft_fw::Nft::new().remove() {
                tracing::warn!("container multicast rules left in place: {e}");
            }
        } else {
            set_multicast_rules(&left)?;
        }
        Ok(targets)
    })
}

/// Weave's per-container multicast rules (spec §3.4) for the addresses the weave interface
/// has: multicast in through it only from those subnets. Runs `nft` in the calling thread's
/// namespace, so call it from inside the container's.
fn set_multicast_rules(cidrs: &[Ipv4Cidr]) -> Result<(), AttachError> {
    let rs = cidrs.iter().fold(
        weft_fw::ContainerRuleSet::new(weft_fw::IfName::new(CONTAINER_IF)?),
        |rs, c| rs.with_subnet(*c),
    );
    weft_fw::Nft::new().apply_container(&rs)?;
    Ok(())
}

async fn v4_addrs(nl: &Netdev, index: u32) -> Result<Vec<Ipv4Cidr>, AttachError> {
    Ok(nl
        .addresses(index)
        .await?
        .into_iter()
        .filter_map(|(a, p)| match a {
            IpAddr::V4(addr) => Ipv4Cidr::new(addr, p).ok(),
            IpAddr::V6(_) => None,
        })
        .collect())
}

/// One line of `weft ps`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PsEntry {
    /// The id as given, cut to 12 characters.
    pub id: String,
    /// MAC of the weave interface.
    pub mac: [u8; 6],
    /// Its IPv4 addresses.
    pub cidrs: Vec<Ipv4Cidr>,
}

impl std::fmt::Display for PsEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.id, weft_netdev::format_mac(&self.mac))?;
        for c in &self.cidrs {
            write!(f, " {c}")?;
        }
        Ok(())
    }
}

/// `weft ps`: the `weave:expose` line, then one line per given container that has a weave
/// interface (found by matching veth peer indexes against the bridge's ports), under its label
/// cut to 12 characters (a Docker container's short ID).
pub async fn ps(
    host: &Netdev,
    containers: &[(String, Container)],
) -> Result<Vec<PsEntry>, AttachError> {
    let bridge = host.link(BRIDGE).await?.ok_or(AttachError::NoBridge)?;
    let mut out = vec![PsEntry {
        id: "weave:expose".into(),
        mac: bridge.mac,
        cidrs: v4_addrs(host, bridge.index).await?,
    }];
    let ports: Vec<(u32, u32)> = host
        .links()
        .await?
        .into_iter()
        .filter(|l| l.master == Some(bridge.index) && l.kind.as_deref() == Some("veth"))
        .filter_map(|l| l.peer_index.map(|p| (l.index, p)))
        .collect();
    for (label, c) in containers {
        let Ok(ns) = c.open() else { continue };
        let ports = ports.clone();
        let found = in_container(&ns, move |nl| async move {
            let mut found = Vec::new();
            for l in nl.links().await? {
                if ports
                    .iter()
                    .any(|&(h, p)| p == l.index && l.peer_index == Some(h))
                {
                    found.push((l.mac, v4_addrs(&nl, l.index).await?));
                }
            }
            Ok(found)
        })?;
        let id: String = label.chars().take(12).collect();
        out.extend(found.into_iter().map(|(mac, cidrs)| PsEntry {
            id: id.clone(),
            mac,
            cidrs,
        }));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn veth_names_fit_and_differ() {
        assert_eq!(
            veth_names("1234"),
            ("vethwepl1234".to_string(), "vethwepg1234".to_string())
        );
        assert_ne!(veth_names("wt7ecdcc2"), veth_names("wt7ecdcc3"));
        assert_eq!(veth_names("a-very-long-namespace").0.len(), 15);
        assert_eq!(
            veth_names("abc-def").0.len(),
            15,
            "not alphanumeric: hashed"
        );
    }

    #[test]
    fn ps_line() {
        let e = PsEntry {
            id: "c1".into(),
            mac: [2, 0, 0, 0, 0, 0xab],
            cidrs: vec![
                "10.2.1.1/24".parse().unwrap(),
                "10.2.2.1/24".parse().unwrap(),
            ],
        };
        assert_eq!(
            e.to_string(),
            "c1 02:00:00:00:00:ab 10.2.1.1/24 10.2.2.1/24"
        );
    }
}
