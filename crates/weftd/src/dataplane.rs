//! The router's side of the data plane: the `weave` bridge, the TAP port through which sleeve
//! sees and injects frames, the kernel VXLAN port that is fastdp, their forwarding entries,
//! and weft's nftables table (exposed subnets).
//!
//! The TAP (`vethwe-pcap`) and VXLAN (`vxlan-<port+1>`) ports are *isolated* bridge ports: the
//! kernel never passes a frame between them, so a frame can never loop between the two paths;
//! everything that needs relaying through another peer goes through sleeve, in userspace.
//! VXLAN floods to a peer only while that peer's fastdp path is healthy (an all-zero FDB
//! entry per peer), and a per-peer entry for the peer-name MAC carries fastdp heartbeats.
//!
//! Every link the router creates carries the alias [`LINK_ALIAS`] (`IFLA_IFALIAS`, shown by
//! `ip link`), set right after creation, and `weft reset` deletes only links with that mark
//! and weft's names, plus the container veths (`vethwepl…`) that are ports of that bridge.
//! The mark, rather than the kind and the bridge-MAC-equals-peer-name convention, because it
//! needs no state (reset runs after the router and its database may be gone), it survives a
//! change of peer name, and nobody sets it by accident. A bridge `weave` that exists before
//! the router starts is adopted as Weave Net does, but not marked, so reset leaves it; an
//! unmarked TAP or VXLAN device in the way of the router's is an error, never deleted.

use std::net::Ipv4Addr;
use std::sync::Arc;

use weft_core::overlay_switch::FASTDP_ETHERTYPE;
use weft_fw::{Ipv4Cidr, RuleSet};
use weft_netdev::{Netdev, NetdevError, PacketSocket, Tap};
use weft_wire::PeerName;

use crate::attach::{Cidr, BRIDGE};

/// Name of the TAP port the router captures and injects through.
pub const TAP: &str = "vethwe-pcap";
/// The VXLAN network identifier weft's fastdp uses ("wf").
pub const VNI: u32 = 0x7766;
/// The alias that marks a link as made by weft (see the module doc).
pub const LINK_ALIAS: &str = "weft";

/// Data-plane setup or reconfiguration failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DataplaneError {
    /// A netlink or device operation.
    #[error(transparent)]
    Netdev(#[from] NetdevError),
    /// nftables.
    #[error("firewall: {0}")]
    Fw(#[from] weft_fw::FwError),
    /// A device we created is not there.
    #[error("device {0} did not appear after creation")]
    Missing(&'static str),
    /// A link with one of our names that weft did not create is in the way.
    #[error(
        "a link named {0} exists that weft did not create (it lacks the alias \"weft\"); \
         remove it or rename it"
    )]
    Foreign(String),
}

/// The devices and rules the router owns.
pub struct Dataplane {
    nl: Netdev,
    bridge: u32,
    /// The sleeve TAP port, until the driver takes it for its data path.
    pub tap: Option<Tap>,
    vxlan: Option<u32>,
    vxlan_port: u16,
    /// Sends fastdp heartbeats out of the VXLAN device.
    heartbeat_tx: Option<Arc<PacketSocket>>,
    /// Receives fastdp heartbeats. They are addressed to our peer-name MAC, which is the
    /// bridge's, so they arrive through the bridge device: the bridge consumes frames on its
    /// ports before a protocol-specific packet socket on the VXLAN port would see them.
    pub heartbeats: Option<Arc<PacketSocket>>,
    fw: RuleSet,
}

impl Dataplane {
    /// Creates (or adopts) the bridge with MAC = peer name, the TAP port, and with `fastdp`
    /// the VXLAN port on UDP `port + 1`; installs weft's firewall table.
    pub async fn setup(
        name: PeerName,
        mtu: u32,
        fastdp: bool,
        port: u16,
    ) -> Result<Self, DataplaneError> {
        let nl = Netdev::new().await?;
        let adopted = nl.link(BRIDGE).await?.is_some();
        let bridge = nl.ensure_bridge(BRIDGE, name.to_bytes(), mtu).await?;
        if !adopted {
            nl.set_alias(bridge, LINK_ALIAS).await?;
        }
        for (k, v) in [
            ("base_reachable_time", "5"),
            ("delay_first_probe_time", "2"),
            ("ucast_solicit", "1"),
        ] {
            let _ = weft_netdev::set_sysctl(&format!("net/ipv4/neigh/{BRIDGE}/{k}"), v);
        }
        // A TAP lives as long as its file descriptor: one left by a crashed router is gone;
        // one still here is deleted only if weft made it.
        remove_own(&nl, TAP).await?;
        // With offloads, container TCP reaches the router as 64 KB super-packets that sleeve
        // segments itself (and injects coalesced), instead of one skb per wire-sized segment.
        let tap = Tap::create_offloaded(TAP)?;
        if !tap.has_vnet_hdr() {
            tracing::info!("{TAP}: no TAP offloads from the kernel; capturing frame by frame");
        }
        let t = nl.link(TAP).await?.ok_or(DataplaneError::Missing(TAP))?;
        nl.set_alias(t.index, LINK_ALIAS).await?;
        nl.set_mtu(t.index, mtu).await?;
        nl.set_master(t.index, bridge).await?;
        nl.set_bridge_port_isolated(t.index, true).await?;
        nl.set_up(t.index).await?;
        let (vxlan, heartbeats) = if fastdp {
            let vname = format!("vxlan-{}", port.wrapping_add(1));
            // Start from a clean forwarding table.
            remove_own(&nl, &vname).await?;
            let v = nl
                .create_vxlan(&vname, VNI, port.wrapping_add(1), true, mtu)
                .await?;
            nl.set_alias(v, LINK_ALIAS).await?;
            nl.set_master(v, bridge).await?;
            nl.set_bridge_port_isolated(v, true).await?;
            nl.set_up(v).await?;
            let tx = PacketSocket::bind(v, FASTDP_ETHERTYPE)?;
            let rx = PacketSocket::bind(bridge, FASTDP_ETHERTYPE)?;
            (Some(v), Some((tx, Arc::new(rx))))
        } else {
            (None, None)
        };
        let (heartbeat_tx, heartbeats) = match heartbeats {
            Some((tx, rx)) => (Some(Arc::new(tx)), Some(rx)),
            None => (None, None),
        };
        let fw = RuleSet::new(weft_fw::IfName::new(BRIDGE)?)
            .with_mesh_port(port)
            .with_vxlan_port(port.wrapping_add(1));
        let dp = Self {
            nl,
            bridge,
            tap: Some(tap),
            vxlan,
            vxlan_port: port.wrapping_add(1),
            heartbeat_tx,
            heartbeats,
            fw,
        };
        dp.apply_fw()?;
        Ok(dp)
    }

    fn apply_fw(&self) -> Result<(), DataplaneError> {
        weft_fw::apply(&self.fw)?;
        Ok(())
    }

    /// Adds or removes the heartbeat forwarding entry for a fastdp-capable peer.
    pub async fn fastdp_peer(&self, peer: PeerName, ip: Ipv4Addr, add: bool) {
        let Some(v) = self.vxlan else { return };
        let r = if add {
            self.nl.fdb_append(v, peer.to_bytes(), ip).await
        } else {
            self.nl.fdb_del(v, peer.to_bytes(), ip).await
        };
        if let Err(e) = r {
            tracing::warn!("fastdp entry for {peer}: {e}");
        }
    }

    /// Starts or stops flooding to `ip` through VXLAN. Stopping also forgets the MACs learned
    /// behind `ip`, so that frames for them go over sleeve at once.
    pub async fn fastdp_flood(&self, peer: PeerName, ip: Ipv4Addr, on: bool) {
        let Some(v) = self.vxlan else { return };
        let r = if on {
            self.nl.fdb_append(v, [0; 6], ip).await
        } else {
            self.nl.fdb_del(v, [0; 6], ip).await
        };
        if let Err(e) = r {
            tracing::warn!("fastdp flooding to {peer}: {e}");
        }
        if !on {
            if let Err(e) = self.forget_learned(v, peer, ip).await {
                tracing::warn!("forgetting fastdp entries of {peer}: {e}");
            }
        }
    }

    /// Deletes what the VXLAN device and the bridge learned behind `ip` (not the peer's own
    /// heartbeat entry). Without this, after a fallback to sleeve the bridge keeps sending those
    /// MACs into VXLAN, where the device's learned entries send them down the dead path, until
    /// both age out (5 minutes) or the containers happen to re-ARP.
    async fn forget_learned(
        &self,
        v: u32,
        peer: PeerName,
        ip: Ipv4Addr,
    ) -> Result<(), NetdevError> {
        let entries = self.nl.fdb_entries(v).await?;
        let behind: Vec<[u8; 6]> = entries
            .iter()
            .filter(|e| !e.master && e.dst == Some(ip))
            .map(|e| e.mac)
            .filter(|&m| m != [0; 6] && m != peer.to_bytes())
            .collect();
        for mac in behind {
            self.nl.fdb_del(v, mac, ip).await?;
            let on_bridge = entries.iter().any(|e| e.master && e.mac == mac);
            if on_bridge {
                self.nl.fdb_del_master(v, mac).await?;
            }
        }
        Ok(())
    }

    /// The socket that sends fastdp heartbeat frames out of the VXLAN device, for the mesh
    /// task (sending never blocks).
    pub fn heartbeat_sender(&self) -> Option<Arc<PacketSocket>> {
        self.heartbeat_tx.clone()
    }

    /// `weft expose`: gives the host an address on the weave network and, unless
    /// `skip_nat`, masquerades traffic between the subnet and the outside.
    pub async fn expose(&mut self, c: Cidr, skip_nat: bool) -> Result<(), DataplaneError> {
        self.nl
            .add_address(self.bridge, std::net::IpAddr::V4(c.addr), c.prefix)
            .await?;
        let _ = weft_netdev::send_gratuitous_arp(BRIDGE, c.addr);
        self.fw.expose(Ipv4Cidr::new(c.addr, c.prefix)?, !skip_nat);
        self.apply_fw()
    }

    /// `weft hide`: removes the address and its rules.
    pub async fn hide(&mut self, c: Cidr) -> Result<(), DataplaneError> {
        self.nl
            .del_address(self.bridge, std::net::IpAddr::V4(c.addr), c.prefix)
            .await?;
        self.fw.hide(Ipv4Cidr::new(c.addr, c.prefix)?);
        self.apply_fw()
    }

    /// The addresses currently on the bridge (what is exposed).
    pub async fn exposed(&self) -> Result<Vec<Cidr>, DataplaneError> {
        Ok(self
            .nl
            .addresses(self.bridge)
            .await?
            .into_iter()
            .filter_map(|(a, p)| match a {
                std::net::IpAddr::V4(addr) => Some(Cidr { addr, prefix: p }),
                std::net::IpAddr::V6(_) => None,
            })
            .collect())
    }

    /// `weft reset`: removes the links weft made (marked with [`LINK_ALIAS`], with weft's
    /// names: the bridge, the TAP, the VXLAN devices), the container veths on that bridge, and
    /// weft's nftables table. Links of the same names that weft did not make stay.
    pub async fn teardown() -> Result<(), DataplaneError> {
        let nl = Netdev::new().await?;
        let links = nl.links().await?;
        let mut marked = Vec::new();
        for l in &links {
            let named = l.name == BRIDGE
                || l.name == TAP
                || (l.kind.as_deref() == Some("vxlan") && l.name.starts_with("vxlan-"));
            if named && is_marked(&nl, l.index).await? {
                marked.push(l);
            }
        }
        let bridge = marked
            .iter()
            .find(|l| l.name == BRIDGE && l.kind.as_deref() == Some("bridge"))
            .map(|l| l.index);
        // A container's host end goes first (deleting it deletes its peer), then the ports,
        // then the bridge.
        let veths = links.iter().filter(|l| {
            bridge.is_some()
                && l.master == bridge
                && l.kind.as_deref() == Some("veth")
                && l.name.starts_with("vethwepl")
        });
        let mut doomed: Vec<_> = veths.chain(marked.iter().copied()).collect();
        doomed.sort_by_key(|l| Some(l.index) == bridge);
        for l in doomed {
            let _ = nl.delete_link(l.index).await;
        }
        weft_fw::remove()?;
        Ok(())
    }

    /// The report's `Interface` line: the capture port, and the fastdp device when there is one.
    pub fn interface(&self) -> String {
        match self.vxlan {
            Some(_) => format!("{TAP} (via TAP), vxlan-{} (kernel VXLAN)", self.vxlan_port),
            None => format!("{TAP} (via TAP)"),
        }
    }

    /// The bridge type in Weave's words, for `weft report`.
    pub fn bridge_type(&self) -> &'static str {
        if self.vxlan.is_some() {
            "bridged_fastdp"
        } else {
            "bridge"
        }
    }
}

async fn is_marked(nl: &Netdev, index: u32) -> Result<bool, NetdevError> {
    Ok(nl.alias(index).await?.as_deref() == Some(LINK_ALIAS))
}

/// Deletes the link `name` if weft made it (one left by an earlier router); one that weft
/// did not make is an error.
async fn remove_own(nl: &Netdev, name: &str) -> Result<(), DataplaneError> {
    let Some(old) = nl.link(name).await? else {
        return Ok(());
    };
    if !is_marked(nl, old.index).await? {
        return Err(DataplaneError::Foreign(name.to_owned()));
    }
    nl.delete_link(old.index).await?;
    Ok(())
}
