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
//!
//! # Who may feed the VXLAN port, and why the device keeps learning
//!
//! The VXLAN device listens on every address. weft's nft table drops UDP to the VXLAN port
//! from any address that is not a connected fastdp peer's: the set `weft_fastdp_peers`, kept
//! here in step with [`weft_core::mesh::FastdpChange::Peer`] and counted per connection, so
//! an address shared by two peers stays until both are gone. So only peers' frames reach the
//! bridge and the device's forwarding table.
//!
//! The device keeps its own remote learning (MAC → peer address, from received frames) on:
//! the mesh does not know where remote container MACs live (fastdp frames never pass the
//! router), so with learning off every unicast frame for a remote MAC would go to the
//! all-zero flood entries, i.e. be copied to *every* fastdp peer, where bridges that do not
//! know the MAC flood it to their containers. Measured on a 3-host lab (iperf3 between two
//! hosts, the third uninvolved, learning toggled in place, 5 runs each in rotating order):
//! with learning off the third host received a full copy of the stream (≈1.1 GB per 4 s run,
//! 0 with learning on) and throughput fell from a median 2835 to 2201 Mbit/s; the guard rule
//! itself cost nothing measurable (2835 vs 2879 Mbit/s without it). Learning bounded by the
//! peer set adds no way in: a learned entry can only point at a connected peer, and
//! [`Dataplane::fastdp_flood`] forgets those of a peer whose fastdp path goes down. What the
//! rule cannot stop is a host on the underlay forging a peer's source address; only an
//! underlay that filters spoofed sources (or encryption) closes that, as with Weave Net.
//!
//! What the data-plane task asks of the kernel after setup goes through the traits of
//! [`crate::kernel`], over which [`Dataplane`] is generic (the real ones by default), so that
//! it is tested against recorders.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::Arc;

use weft_attach::BRIDGE;
use weft_core::overlay_switch::FASTDP_ETHERTYPE;
use weft_fw::{IfName, Nft, RuleSet};
use weft_netdev::{Netdev, NetdevError, PacketSocket, Tap};
use weft_types::Ipv4Cidr;
use weft_wire::PeerName;

use crate::kernel::{Firewall, Netlink};

/// Name of the TAP port the router captures and injects through.
pub const TAP: &str = "vethwe-pcap";
/// The VXLAN network identifier weft's fastdp uses ("wf").
pub const VNI: u32 = 0x7766;
/// The alias that marks a link as made by weft (see the module doc).
pub const LINK_ALIAS: &str = "weft";
/// The Docker bridge guarded when `$DOCKER_BRIDGE` is not set (Weave's script default).
const DEFAULT_DOCKER_BRIDGE: &str = "docker0";

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

/// The devices and rules the router owns; `N` and `F` are how it reaches the kernel's
/// links and nftables once set up (see [`crate::kernel`]).
pub struct Dataplane<N = Netdev, F = Nft> {
    nl: N,
    nft: F,
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
    /// The Docker bridge's IPv4 address at start, if it has one (weftDNS's default address).
    pub docker_bridge_addr: Option<Ipv4Addr>,
    fw: RuleSet,
}

impl Dataplane {
    /// Creates (or adopts) the bridge with MAC = peer name, the TAP port, and with `fastdp`
    /// the VXLAN port on UDP `port + 1`; installs weft's firewall table, which guards the
    /// router's ports (the mesh port, the VXLAN port, `http` and `status`) against containers
    /// on the Docker bridge (`$DOCKER_BRIDGE`, default `docker0`; empty: none).
    pub async fn setup(
        name: PeerName,
        mtu: u32,
        fastdp: bool,
        port: u16,
        http: SocketAddr,
        status: Option<SocketAddr>,
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
            // Remote learning on, bounded by the peer set: see the module doc.
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
        let mut fw = RuleSet::new(IfName::new(BRIDGE)?)
            .with_bridge_mac(name.to_bytes())
            .with_mesh_port(port)
            .with_vxlan_port(port.wrapping_add(1))
            .with_status_addr(status.and_then(v4));
        if let Some(a) = v4(http) {
            fw = fw.with_control_addr(a);
        }
        let mut docker_bridge_addr = None;
        if let Some((dev, addr)) = docker_bridge(&nl).await {
            fw = fw.with_docker_bridge(dev, addr);
            docker_bridge_addr = addr;
        }
        let dp = Self {
            nl,
            nft: Nft::new(),
            bridge,
            tap: Some(tap),
            vxlan,
            vxlan_port: port.wrapping_add(1),
            heartbeat_tx,
            heartbeats,
            docker_bridge_addr,
            fw,
        };
        dp.apply_fw()?;
        Ok(dp)
    }
}

// The traits are crate-private on purpose (they are seams for tests, not an API), and so are
// the methods that need them: only the data-plane task calls those.
#[allow(private_bounds)]
impl<N: Netlink, F: Firewall> Dataplane<N, F> {
    fn apply_fw(&self) -> Result<(), DataplaneError> {
        self.nft.apply(&self.fw)?;
        Ok(())
    }

    /// Adds or removes the heartbeat forwarding entry for a fastdp-capable peer, and keeps
    /// its address in (or takes it out of) the set of hosts whose VXLAN frames are accepted.
    /// The address leaves the set only when no other fastdp connection uses it.
    pub(crate) async fn fastdp_peer(&mut self, peer: PeerName, ip: Ipv4Addr, add: bool) {
        let Some(v) = self.vxlan else { return };
        // Accept the peer's frames before sending it ours; stop accepting after the entry
        // towards it is gone.
        if add && self.fw.add_fastdp_peer(ip) {
            self.sync_fastdp_peer(ip, true).await;
        }
        let r = if add {
            self.nl.fdb_append(v, peer.to_bytes(), ip).await
        } else {
            self.nl.fdb_del(v, peer.to_bytes(), ip).await
        };
        if let Err(e) = r {
            tracing::warn!("fastdp entry for {peer}: {e}");
        }
        if !add && self.fw.remove_fastdp_peer(ip) {
            self.sync_fastdp_peer(ip, false).await;
        }
    }

    /// Brings the installed set of fastdp peers in step with the model for `ip`: one element
    /// added or deleted in one nft transaction (rules and counters untouched). If that fails
    /// (the table was flushed from outside, or is out of step), the whole table is applied
    /// again, which carries every element of the model. nft runs off the async thread.
    async fn sync_fastdp_peer(&self, ip: Ipv4Addr, member: bool) {
        let (nft, fw) = (self.nft.clone(), self.fw.clone());
        let r = tokio::task::spawn_blocking(move || {
            nft.set_fastdp_peer(ip, member).or_else(|e| {
                tracing::info!("fastdp peer set ({ip}): {e}; re-applying weft's table");
                nft.apply(&fw)
            })
        })
        .await;
        match r {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!("firewall: fastdp peer {ip}: {e}"),
            Err(e) => tracing::warn!("firewall: fastdp peer {ip}: {e}"),
        }
    }

    /// Starts or stops flooding to `ip` through VXLAN. Stopping also forgets the MACs learned
    /// behind `ip`, so that frames for them go over sleeve at once.
    pub(crate) async fn fastdp_flood(&self, peer: PeerName, ip: Ipv4Addr, on: bool) {
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

    /// `weft expose`: gives the host an address on the weave network and, unless
    /// `skip_nat`, masquerades traffic between the subnet and the outside.
    pub(crate) async fn expose(
        &mut self,
        c: Ipv4Cidr,
        skip_nat: bool,
    ) -> Result<(), DataplaneError> {
        self.nl
            .add_address(self.bridge, std::net::IpAddr::V4(c.addr()), c.prefix_len())
            .await?;
        let _ = self.nl.gratuitous_arp(BRIDGE, c.addr());
        self.fw.expose(c, !skip_nat);
        self.apply_fw()
    }

    /// `weft hide`: removes the address and its rules.
    pub(crate) async fn hide(&mut self, c: Ipv4Cidr) -> Result<(), DataplaneError> {
        self.nl
            .del_address(self.bridge, std::net::IpAddr::V4(c.addr()), c.prefix_len())
            .await?;
        self.fw.hide(c);
        self.apply_fw()
    }

    /// The addresses currently on the bridge (what is exposed).
    pub(crate) async fn exposed(&self) -> Result<Vec<Ipv4Cidr>, DataplaneError> {
        Ok(self
            .nl
            .addresses(self.bridge)
            .await?
            .into_iter()
            .filter_map(|(a, p)| match a {
                std::net::IpAddr::V4(addr) => Ipv4Cidr::new(addr, p).ok(),
                std::net::IpAddr::V6(_) => None,
            })
            .collect())
    }
}

impl Dataplane {
    /// `weft reset`: removes the links weft made (marked with [`LINK_ALIAS`], with weft's
    /// names: the bridge, the TAP, the VXLAN devices), the container veths on that bridge,
    /// weft's nftables table and its rules in Docker's `DOCKER-USER` chain. Links of the same
    /// names that weft did not make stay.
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
        let ipt = weft_fw::docker_user::Iptables::default();
        if let Err(e) = weft_fw::docker_user::remove(&ipt, BRIDGE) {
            tracing::debug!("{}: {e}", weft_fw::docker_user::CHAIN);
        }
        Ok(())
    }

    /// Keeps weave traffic allowed through a Docker host's `FORWARD` policy: checks every
    /// [`DOCKER_USER_CHECK`] (Docker may start, or restart, after the router) that weft's
    /// rules head Docker's `DOCKER-USER` chain, if there is one (see
    /// [`weft_fw::docker_user`]). `iptables` runs off the async threads.
    pub fn spawn_docker_forward() {
        tokio::spawn(async {
            let mut had = false;
            loop {
                let r = tokio::task::spawn_blocking(|| {
                    let ipt = weft_fw::docker_user::Iptables::default();
                    weft_fw::docker_user::ensure(&ipt, BRIDGE)
                })
                .await;
                match r {
                    Ok(Ok(present)) => {
                        if present && !had {
                            tracing::info!(
                                "Docker's FORWARD policy: weave traffic allowed by rules in {}",
                                weft_fw::docker_user::CHAIN
                            );
                        }
                        had = present;
                    }
                    Ok(Err(e)) => tracing::debug!("{}: {e}", weft_fw::docker_user::CHAIN),
                    Err(e) => tracing::debug!("{}: {e}", weft_fw::docker_user::CHAIN),
                }
                tokio::time::sleep(DOCKER_USER_CHECK).await;
            }
        });
    }
}

/// How often the rules in Docker's `DOCKER-USER` chain are checked.
const DOCKER_USER_CHECK: std::time::Duration = std::time::Duration::from_secs(10);

impl<N, F> Dataplane<N, F> {
    /// The socket that sends fastdp heartbeat frames out of the VXLAN device, for the mesh
    /// task (sending never blocks).
    pub fn heartbeat_sender(&self) -> Option<Arc<PacketSocket>> {
        self.heartbeat_tx.clone()
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

#[cfg(test)]
impl<N, F> Dataplane<N, F> {
    /// A data plane over `nl` and `nft` as [`Dataplane::setup`] leaves it (without its TAP
    /// and heartbeat sockets): bridge `bridge`, VXLAN device `vxlan` when fastdp is on.
    pub(crate) fn over(nl: N, nft: F, bridge: u32, vxlan: Option<u32>) -> Self {
        Self {
            nl,
            nft,
            bridge,
            tap: None,
            vxlan,
            vxlan_port: 6784,
            heartbeat_tx: None,
            heartbeats: None,
            docker_bridge_addr: None,
            fw: RuleSet::new(IfName::new(BRIDGE).unwrap()),
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

/// The IPv4 form of a listener address; the firewall model guards IPv4 only.
fn v4(a: SocketAddr) -> Option<SocketAddrV4> {
    match a {
        SocketAddr::V4(a) => Some(a),
        SocketAddr::V6(_) => None,
    }
}

/// The Docker bridge to guard, as Weave's script passes `--docker-bridge`: `$DOCKER_BRIDGE`,
/// default `docker0`, none when set empty; with its first IPv4 address when the bridge exists
/// (the port guards match that address; without it only the forwarding and DNS rules apply).
/// The address is read once, at start: a Docker started later is not seen, as in Weave.
async fn docker_bridge(nl: &Netdev) -> Option<(IfName, Option<Ipv4Addr>)> {
    let name = std::env::var("DOCKER_BRIDGE").unwrap_or_else(|_| DEFAULT_DOCKER_BRIDGE.to_owned());
    if name.is_empty() {
        return None;
    }
    let dev = match IfName::new(&name) {
        Ok(d) => d,
        Err(e) => {
            tracing::warn!("DOCKER_BRIDGE: {e}; not guarding a Docker bridge");
            return None;
        }
    };
    let addr = match nl.link(&name).await {
        Ok(Some(l)) => nl
            .addresses(l.index)
            .await
            .unwrap_or_default()
            .into_iter()
            .find_map(|(a, _)| match a {
                std::net::IpAddr::V4(a) => Some(a),
                std::net::IpAddr::V6(_) => None,
            }),
        Ok(None) | Err(_) => None,
    };
    Some((dev, addr))
}
