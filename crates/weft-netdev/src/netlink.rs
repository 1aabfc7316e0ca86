//! [`Netdev`]: links, addresses, routes and VXLAN forwarding entries through rtnetlink.
//!
//! Every operation builds one `netlink-packet-route` message and sends it on the rtnetlink
//! socket that [`Netdev::new`] opened. That socket belongs to the network namespace of the thread
//! that created it, for its whole life, so a `Netdev` made inside [`crate::in_netns`] keeps
//! acting on that namespace whichever thread later polls it.
//!
//! Nothing here runs `ip` or `bridge`, and nothing reads `/sys/class/net`, which shows the
//! namespace sysfs was mounted in rather than the caller's.

use std::net::{IpAddr, Ipv4Addr};

use futures_util::StreamExt;
use netlink_packet_core::{
    NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_APPEND, NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL,
    NLM_F_REQUEST,
};
use netlink_packet_route::address::{AddressAttribute, AddressMessage};
use netlink_packet_route::link::{
    InfoBridgePort, InfoData, InfoKind, InfoPortData, InfoPortKind, InfoVeth, InfoVxlan,
    LinkAttribute, LinkFlags, LinkInfo as NlLinkInfo, LinkMessage,
};
use netlink_packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourMessage, NeighbourState,
};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use nix::errno::Errno;

use crate::error::NetdevError;
use crate::set_sysctl;

/// The largest MTU a Linux bridge or veth accepts, and weft's sleeve-only default.
pub const MAX_MTU: u32 = 65535;

/// `NUD_NOARP | NUD_PERMANENT`: the state `bridge fdb append` gives static entries.
const FDB_STATIC_STATE: u16 = 0x40 | 0x80;

/// What the kernel reports about one network interface.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LinkInfo {
    /// Interface index, unique within its network namespace.
    pub index: u32,
    /// Interface name.
    pub name: String,
    /// `IFLA_INFO_KIND`: `"bridge"`, `"veth"`, `"vxlan"`, `"tun"`…; `None` for physical devices
    /// and loopback.
    pub kind: Option<String>,
    /// Hardware address; all zeros when the link has none (loopback, TUN).
    pub mac: [u8; 6],
    /// Current MTU.
    pub mtu: u32,
    /// Administratively up (`IFF_UP`).
    pub up: bool,
    /// Has carrier (`IFF_LOWER_UP`): for a veth, both ends are up and frames pass.
    pub carrier: bool,
    /// Index of the bridge (or other master) this link is a port of.
    pub master: Option<u32>,
    /// `IFLA_LINK` when it names another interface: for a veth, its peer's index (which may be in
    /// another namespace).
    pub peer_index: Option<u32>,
}

/// Per-port flags of a bridge port, read back from `IFLA_INFO_SLAVE_DATA`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BridgePortFlags {
    /// `IFLA_BRPORT_ISOLATED`: isolated ports do not forward to each other.
    pub isolated: bool,
    /// `IFLA_BRPORT_MODE`: hairpin (reflective relay) mode.
    pub hairpin: bool,
}

/// One static forwarding entry of a VXLAN device, as `bridge fdb show dev <vxlan>` lists it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FdbEntry {
    /// Destination MAC (`00:00:00:00:00:00` for the flood list).
    pub mac: [u8; 6],
    /// Remote VTEP address.
    pub dst: Option<Ipv4Addr>,
    /// The bridge's entry for this port (`master`), not the device's own (`self`).
    pub master: bool,
}

/// An rtnetlink handle bound to the network namespace of the thread that created it.
///
/// Dropping it stops the background task that drives the netlink socket.
#[derive(Debug)]
pub struct Netdev {
    handle: rtnetlink::Handle,
    conn: tokio::task::JoinHandle<()>,
}

impl Drop for Netdev {
    fn drop(&mut self) {
        self.conn.abort();
    }
}

impl Netdev {
    /// Opens an rtnetlink socket in the current thread's network namespace and spawns its
    /// connection task on the current tokio runtime.
    pub async fn new() -> Result<Self, NetdevError> {
        let (conn, handle, _) = rtnetlink::new_connection()
            .map_err(|e| NetdevError::io("opening rtnetlink socket", &e))?;
        let conn = tokio::spawn(conn);
        Ok(Self { handle, conn })
    }

    /// Looks a link up by name; `Ok(None)` if there is none.
    pub async fn link(&self, name: &str) -> Result<Option<LinkInfo>, NetdevError> {
        let op = format!("looking up link {name:?}");
        validate_ifname(&op, name)?;
        let mut msg = LinkMessage::default();
        msg.attributes.push(LinkAttribute::IfName(name.to_owned()));
        match self
            .request(RouteNetlinkMessage::GetLink(msg), NLM_F_REQUEST, &op)
            .await
        {
            Ok(replies) => Ok(replies.iter().find_map(link_from_reply)),
            Err(e) if e.errno() == Some(Errno::ENODEV) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Looks a link up by index; `Ok(None)` if there is none.
    pub async fn link_by_index(&self, index: u32) -> Result<Option<LinkInfo>, NetdevError> {
        Ok(self
            .link_message(index)
            .await?
            .as_ref()
            .and_then(link_info_from))
    }

    /// Every link in the namespace.
    pub async fn links(&self) -> Result<Vec<LinkInfo>, NetdevError> {
        let replies = self
            .request(
                RouteNetlinkMessage::GetLink(LinkMessage::default()),
                NLM_F_REQUEST | NLM_F_DUMP,
                "listing links",
            )
            .await?;
        Ok(replies.iter().filter_map(link_from_reply).collect())
    }

    /// Makes sure a Linux bridge `name` exists with this MAC and MTU, `accept_ra=0`, and up.
    ///
    /// A missing bridge is created without a MAC, which is then set as a separate step (so old
    /// kernels make the bridge's own FDB entry). The MTU is set directly: current kernels let a
    /// port-less bridge take any MTU up to 65535 and keep a user-set MTU when ports join. Where
    /// a kernel refuses (`EINVAL`), the MTU is raised the old way: a throw-away veth with that
    /// MTU is enslaved and deleted again (this kernel has no dummy links). Fails if `name`
    /// exists and is not a bridge. Returns the bridge's ifindex.
    pub async fn ensure_bridge(
        &self,
        name: &str,
        mac: [u8; 6],
        mtu: u32,
    ) -> Result<u32, NetdevError> {
        let op = format!("creating bridge {name:?}");
        validate_ifname(&op, name)?;
        let existing = self.link(name).await?;
        let index = match existing {
            Some(link) if link.kind.as_deref() == Some("bridge") => link.index,
            Some(link) => {
                return Err(NetdevError::WrongKind {
                    op,
                    name: name.to_owned(),
                    found: link.kind.unwrap_or_else(|| "device".to_owned()),
                    wanted: "bridge",
                })
            }
            None => {
                let mut msg = LinkMessage::default();
                msg.attributes.push(LinkAttribute::IfName(name.to_owned()));
                msg.attributes
                    .push(LinkAttribute::LinkInfo(vec![NlLinkInfo::Kind(
                        InfoKind::Bridge,
                    )]));
                self.request(RouteNetlinkMessage::NewLink(msg), CREATE_FLAGS, &op)
                    .await?;
                self.index_of(&op, name).await?
            }
        };
        self.set_mac(index, mac).await?;
        match self.set_mtu(index, mtu).await {
            Err(e) if e.errno() == Some(Errno::EINVAL) => {
                self.raise_bridge_mtu_with_port(index, mtu).await?;
            }
            other => other?,
        }
        set_sysctl(&format!("net/ipv6/conf/{name}/accept_ra"), "0")?;
        self.set_up(index).await?;
        Ok(index)
    }

    /// Creates a veth pair `name` ↔ `peer`, both with `mtu` (0: the kernel default). Fails if
    /// either name exists.
    pub async fn create_veth(&self, name: &str, peer: &str, mtu: u32) -> Result<(), NetdevError> {
        let op = format!("creating veth {name:?} with peer {peer:?}");
        validate_ifname(&op, name)?;
        validate_ifname(&op, peer)?;
        let mut peer_msg = LinkMessage::default();
        peer_msg
            .attributes
            .push(LinkAttribute::IfName(peer.to_owned()));
        let mut msg = LinkMessage::default();
        msg.attributes.push(LinkAttribute::IfName(name.to_owned()));
        if mtu != 0 {
            peer_msg.attributes.push(LinkAttribute::Mtu(mtu));
            msg.attributes.push(LinkAttribute::Mtu(mtu));
        }
        msg.attributes.push(LinkAttribute::LinkInfo(vec![
            NlLinkInfo::Kind(InfoKind::Veth),
            NlLinkInfo::Data(InfoData::Veth(InfoVeth::Peer(peer_msg))),
        ]));
        self.request(RouteNetlinkMessage::NewLink(msg), CREATE_FLAGS, &op)
            .await?;
        Ok(())
    }

    /// Creates a classic VXLAN device (not `external`/collect-metadata) with no default remote;
    /// forwarding entries are added with [`Netdev::fdb_append`]. Returns its ifindex.
    pub async fn create_vxlan(
        &self,
        name: &str,
        vni: u32,
        port: u16,
        learning: bool,
        mtu: u32,
    ) -> Result<u32, NetdevError> {
        let op = format!("creating vxlan {name:?} (vni {vni}, port {port})");
        validate_ifname(&op, name)?;
        let mut msg = LinkMessage::default();
        msg.attributes.push(LinkAttribute::IfName(name.to_owned()));
        if mtu != 0 {
            msg.attributes.push(LinkAttribute::Mtu(mtu));
        }
        msg.attributes.push(LinkAttribute::LinkInfo(vec![
            NlLinkInfo::Kind(InfoKind::Vxlan),
            NlLinkInfo::Data(InfoData::Vxlan(vec![
                InfoVxlan::Id(vni),
                InfoVxlan::Port(port),
                InfoVxlan::Learning(learning),
            ])),
        ]));
        self.request(RouteNetlinkMessage::NewLink(msg), CREATE_FLAGS, &op)
            .await?;
        self.index_of(&op, name).await
    }

    /// Sets link `index`'s alias (`IFLA_IFALIAS`, what `ip link set … alias` sets).
    pub async fn set_alias(&self, index: u32, alias: &str) -> Result<(), NetdevError> {
        let op = format!("setting the alias of link {index}");
        self.set_link(index, vec![LinkAttribute::IfAlias(alias.to_owned())], &op)
            .await
    }

    /// Link `index`'s alias; `None` if it has none or the link is gone.
    pub async fn alias(&self, index: u32) -> Result<Option<String>, NetdevError> {
        Ok(self.link_message(index).await?.and_then(|m| {
            m.attributes.into_iter().find_map(|a| match a {
                LinkAttribute::IfAlias(s) if !s.is_empty() => Some(s),
                _ => None,
            })
        }))
    }

    /// Makes link `index` a port of bridge `master`.
    pub async fn set_master(&self, index: u32, master: u32) -> Result<(), NetdevError> {
        let op = format!("attaching link {index} to bridge {master}");
        self.set_link(index, vec![LinkAttribute::Controller(master)], &op)
            .await
    }

    /// Brings link `index` up.
    pub async fn set_up(&self, index: u32) -> Result<(), NetdevError> {
        let op = format!("bringing link {index} up");
        let mut msg = link_msg(index);
        msg.header.flags = LinkFlags::Up;
        msg.header.change_mask = LinkFlags::Up;
        self.request(RouteNetlinkMessage::SetLink(msg), ACK_FLAGS, &op)
            .await?;
        Ok(())
    }

    /// Sets the MTU of link `index`.
    pub async fn set_mtu(&self, index: u32, mtu: u32) -> Result<(), NetdevError> {
        let op = format!("setting MTU of link {index} to {mtu}");
        self.set_link(index, vec![LinkAttribute::Mtu(mtu)], &op)
            .await
    }

    /// Sets the hardware address of link `index`.
    pub async fn set_mac(&self, index: u32, mac: [u8; 6]) -> Result<(), NetdevError> {
        let op = format!("setting MAC of link {index} to {}", format_mac(&mac));
        self.set_link(index, vec![LinkAttribute::Address(mac.to_vec())], &op)
            .await
    }

    /// Renames link `index` (the kernel requires it to be down).
    pub async fn rename(&self, index: u32, name: &str) -> Result<(), NetdevError> {
        let op = format!("renaming link {index} to {name:?}");
        validate_ifname(&op, name)?;
        self.set_link(index, vec![LinkAttribute::IfName(name.to_owned())], &op)
            .await
    }

    /// Sets `IFLA_BRPORT_ISOLATED` on bridge port `index`.
    pub async fn set_bridge_port_isolated(
        &self,
        index: u32,
        isolated: bool,
    ) -> Result<(), NetdevError> {
        let op = format!("setting isolated={isolated} on bridge port {index}");
        self.set_bridge_port(index, InfoBridgePort::Isolated(isolated), &op)
            .await
    }

    /// Sets hairpin mode on bridge port `index`.
    pub async fn set_hairpin(&self, index: u32, on: bool) -> Result<(), NetdevError> {
        let op = format!("setting hairpin={on} on bridge port {index}");
        self.set_bridge_port(index, InfoBridgePort::HairpinMode(on), &op)
            .await
    }

    /// The bridge-port flags of link `index`; `Ok(None)` if it is not a bridge port.
    pub async fn bridge_port(&self, index: u32) -> Result<Option<BridgePortFlags>, NetdevError> {
        Ok(self
            .link_message(index)
            .await?
            .as_ref()
            .and_then(bridge_port_from))
    }

    /// Moves link `index` into the network namespace `netns` (from [`crate::open_netns`]).
    pub async fn move_to_netns(
        &self,
        index: u32,
        netns: &std::os::fd::OwnedFd,
    ) -> Result<(), NetdevError> {
        use std::os::fd::AsRawFd;
        let op = format!("moving link {index} to another network namespace");
        // The fd only has to stay open until the kernel has answered, which `netns` guarantees.
        self.set_link(index, vec![LinkAttribute::NetNsFd(netns.as_raw_fd())], &op)
            .await
    }

    /// Deletes link `index` (for a veth, both ends).
    pub async fn delete_link(&self, index: u32) -> Result<(), NetdevError> {
        let op = format!("deleting link {index}");
        self.request(
            RouteNetlinkMessage::DelLink(link_msg(index)),
            ACK_FLAGS,
            &op,
        )
        .await?;
        Ok(())
    }

    /// Adds `addr/prefix` to link `index`; `Ok(false)` if it was already there. IPv4 addresses
    /// get the subnet's broadcast address, as `ip addr add … brd +` would.
    pub async fn add_address(
        &self,
        index: u32,
        addr: IpAddr,
        prefix: u8,
    ) -> Result<bool, NetdevError> {
        let op = format!("adding address {addr}/{prefix} to link {index}");
        let msg = address_msg(&op, index, addr, prefix, true)?;
        self.request_changed(
            RouteNetlinkMessage::NewAddress(msg),
            CREATE_FLAGS,
            &op,
            Errno::EEXIST,
        )
        .await
    }

    /// Removes `addr/prefix` from link `index`; `Ok(false)` if it was not there.
    pub async fn del_address(
        &self,
        index: u32,
        addr: IpAddr,
        prefix: u8,
    ) -> Result<bool, NetdevError> {
        let op = format!("deleting address {addr}/{prefix} from link {index}");
        let msg = address_msg(&op, index, addr, prefix, false)?;
        self.request_changed(
            RouteNetlinkMessage::DelAddress(msg),
            ACK_FLAGS,
            &op,
            Errno::EADDRNOTAVAIL,
        )
        .await
    }

    /// The addresses on link `index`, IPv4 and IPv6, with their prefix lengths.
    pub async fn addresses(&self, index: u32) -> Result<Vec<(IpAddr, u8)>, NetdevError> {
        let op = format!("listing addresses of link {index}");
        let replies = self
            .request(
                RouteNetlinkMessage::GetAddress(AddressMessage::default()),
                NLM_F_REQUEST | NLM_F_DUMP,
                &op,
            )
            .await?;
        Ok(replies
            .iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewAddress(a) if a.header.index == index => {
                    address_of(a).map(|ip| (ip, a.header.prefix_len))
                }
                _ => None,
            })
            .collect())
    }

    /// Adds `224.0.0.0/4 dev <index> scope link` to the main table; an existing route is fine.
    pub async fn add_multicast_route(&self, index: u32) -> Result<(), NetdevError> {
        let op = format!("adding multicast route 224.0.0.0/4 to link {index}");
        let mut msg = RouteMessage::default();
        msg.header.address_family = AddressFamily::Inet;
        msg.header.destination_prefix_length = 4;
        msg.header.table = RouteHeader::RT_TABLE_MAIN;
        msg.header.protocol = RouteProtocol::Boot;
        msg.header.scope = RouteScope::Link;
        msg.header.kind = RouteType::Unicast;
        msg.attributes
            .push(RouteAttribute::Destination(RouteAddress::Inet(
                Ipv4Addr::new(224, 0, 0, 0),
            )));
        msg.attributes.push(RouteAttribute::Oif(index));
        self.request_changed(
            RouteNetlinkMessage::NewRoute(msg),
            CREATE_FLAGS,
            &op,
            Errno::EEXIST,
        )
        .await?;
        Ok(())
    }

    /// The IPv4 routes of the main table as `(destination, prefix, output interface)`, for
    /// detecting overlaps with weft's ranges. The default route reads as `0.0.0.0/0`.
    pub async fn routes_v4(&self) -> Result<Vec<(Ipv4Addr, u8, Option<u32>)>, NetdevError> {
        let mut msg = RouteMessage::default();
        msg.header.address_family = AddressFamily::Inet;
        let replies = self
            .request(
                RouteNetlinkMessage::GetRoute(msg),
                NLM_F_REQUEST | NLM_F_DUMP,
                "listing IPv4 routes",
            )
            .await?;
        Ok(replies
            .iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewRoute(r) => main_table_route(r),
                _ => None,
            })
            .collect())
    }

    /// Adds a static forwarding entry to VXLAN device `dev`, like
    /// `bridge fdb append <mac> dev <vxlan> dst <ip>`: several destinations may share a MAC
    /// (the all-zeros MAC is the flood list).
    pub async fn fdb_append(
        &self,
        dev: u32,
        mac: [u8; 6],
        dst: Ipv4Addr,
    ) -> Result<(), NetdevError> {
        let op = format!(
            "appending fdb entry {} dst {dst} to link {dev}",
            format_mac(&mac)
        );
        let msg = fdb_msg(dev, mac, dst);
        let flags = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_APPEND;
        self.request(RouteNetlinkMessage::NewNeighbour(msg), flags, &op)
            .await?;
        Ok(())
    }

    /// Removes the forwarding entry `mac` → `dst` from VXLAN device `dev`.
    pub async fn fdb_del(&self, dev: u32, mac: [u8; 6], dst: Ipv4Addr) -> Result<(), NetdevError> {
        let op = format!(
            "deleting fdb entry {} dst {dst} from link {dev}",
            format_mac(&mac)
        );
        let msg = fdb_msg(dev, mac, dst);
        self.request(RouteNetlinkMessage::DelNeighbour(msg), ACK_FLAGS, &op)
            .await?;
        Ok(())
    }

    /// Removes the bridge's forwarding entry for `mac` on port `dev`, like
    /// `bridge fdb del <mac> dev <port> master`.
    pub async fn fdb_del_master(&self, dev: u32, mac: [u8; 6]) -> Result<(), NetdevError> {
        let op = format!(
            "deleting bridge fdb entry {} of port {dev}",
            format_mac(&mac)
        );
        let mut msg = NeighbourMessage::default();
        msg.header.family = AddressFamily::Bridge;
        msg.header.ifindex = dev;
        msg.header.flags = NeighbourFlags::Controller;
        msg.attributes
            .push(NeighbourAttribute::LinkLayerAddress(mac.to_vec()));
        self.request(RouteNetlinkMessage::DelNeighbour(msg), ACK_FLAGS, &op)
            .await?;
        Ok(())
    }

    /// The forwarding entries of device `dev` (`bridge fdb show dev <dev>`).
    pub async fn fdb_entries(&self, dev: u32) -> Result<Vec<FdbEntry>, NetdevError> {
        let op = format!("listing fdb entries of link {dev}");
        let mut msg = NeighbourMessage::default();
        msg.header.family = AddressFamily::Bridge;
        let replies = self
            .request(
                RouteNetlinkMessage::GetNeighbour(msg),
                NLM_F_REQUEST | NLM_F_DUMP,
                &op,
            )
            .await?;
        Ok(replies
            .iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewNeighbour(n) if n.header.ifindex == dev => fdb_entry_of(n),
                _ => None,
            })
            .collect())
    }

    // --- helpers ---

    /// [`Self::request`] for an idempotent change: `Ok(false)` when the kernel answers
    /// `unchanged` (already there, or already gone), `Ok(true)` when it made the change.
    async fn request_changed(
        &self,
        msg: RouteNetlinkMessage,
        flags: u16,
        op: &str,
        unchanged: Errno,
    ) -> Result<bool, NetdevError> {
        match self.request(msg, flags, op).await {
            Ok(_) => Ok(true),
            Err(e) if e.errno() == Some(unchanged) => Ok(false),
            Err(e) => Err(e),
        }
    }

    async fn request(
        &self,
        msg: RouteNetlinkMessage,
        flags: u16,
        op: &str,
    ) -> Result<Vec<RouteNetlinkMessage>, NetdevError> {
        let mut req = NetlinkMessage::from(msg);
        req.header.flags = flags;
        let mut replies = self
            .handle
            .clone()
            .request(req)
            .map_err(|e| NetdevError::Netlink {
                op: op.to_owned(),
                detail: e.to_string(),
            })?;
        let mut out = Vec::new();
        while let Some(reply) = replies.next().await {
            match reply.payload {
                NetlinkPayload::InnerMessage(m) => out.push(m),
                NetlinkPayload::Error(e) => {
                    if let Some(code) = e.code {
                        let errno = Errno::from_raw(code.get().saturating_neg());
                        return Err(NetdevError::os(op, errno));
                    }
                }
                NetlinkPayload::Done(_) => break,
                NetlinkPayload::Overrun(_) => {
                    return Err(NetdevError::Netlink {
                        op: op.to_owned(),
                        detail: "reply overrun".to_owned(),
                    })
                }
                _ => {}
            }
        }
        Ok(out)
    }

    async fn set_link(
        &self,
        index: u32,
        attributes: Vec<LinkAttribute>,
        op: &str,
    ) -> Result<(), NetdevError> {
        let mut msg = link_msg(index);
        msg.attributes = attributes;
        self.request(RouteNetlinkMessage::SetLink(msg), ACK_FLAGS, op)
            .await?;
        Ok(())
    }

    /// Bridge-port attributes travel in `IFLA_LINKINFO`/`IFLA_INFO_SLAVE_DATA`, which only
    /// `RTM_NEWLINK` (without `NLM_F_CREATE`) applies to an existing link.
    async fn set_bridge_port(
        &self,
        index: u32,
        attr: InfoBridgePort,
        op: &str,
    ) -> Result<(), NetdevError> {
        let mut msg = link_msg(index);
        msg.attributes.push(LinkAttribute::LinkInfo(vec![
            NlLinkInfo::PortKind(InfoPortKind::Bridge),
            NlLinkInfo::PortData(InfoPortData::BridgePort(vec![attr])),
        ]));
        self.request(RouteNetlinkMessage::NewLink(msg), ACK_FLAGS, op)
            .await?;
        Ok(())
    }

    async fn link_message(&self, index: u32) -> Result<Option<LinkMessage>, NetdevError> {
        let op = format!("looking up link {index}");
        match self
            .request(
                RouteNetlinkMessage::GetLink(link_msg(index)),
                NLM_F_REQUEST,
                &op,
            )
            .await
        {
            Ok(replies) => Ok(replies.into_iter().find_map(|m| match m {
                RouteNetlinkMessage::NewLink(l) => Some(l),
                _ => None,
            })),
            Err(e) if e.errno() == Some(Errno::ENODEV) => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn index_of(&self, op: &str, name: &str) -> Result<u32, NetdevError> {
        match self.link(name).await? {
            Some(link) => Ok(link.index),
            None => Err(NetdevError::NoSuchLink {
                op: op.to_owned(),
                name: name.to_owned(),
            }),
        }
    }

    /// Old kernels give a bridge the smallest MTU of its ports and refuse a larger one on the
    /// bridge itself: enslave a veth with the wanted MTU, then delete it.
    async fn raise_bridge_mtu_with_port(&self, bridge: u32, mtu: u32) -> Result<(), NetdevError> {
        const TMP: &str = "vethwedu";
        const TMP_PEER: &str = "vethwedu-p";
        self.create_veth(TMP, TMP_PEER, mtu).await?;
        let op = format!("raising MTU of bridge {bridge} to {mtu}");
        let tmp = self.index_of(&op, TMP).await?;
        let attached = self.set_master(tmp, bridge).await;
        let deleted = self.delete_link(tmp).await;
        attached?;
        deleted
    }
}

const ACK_FLAGS: u16 = NLM_F_REQUEST | NLM_F_ACK;
const CREATE_FLAGS: u16 = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL;

fn link_msg(index: u32) -> LinkMessage {
    let mut msg = LinkMessage::default();
    msg.header.index = index;
    msg
}

fn link_from_reply(msg: &RouteNetlinkMessage) -> Option<LinkInfo> {
    match msg {
        RouteNetlinkMessage::NewLink(l) => link_info_from(l),
        _ => None,
    }
}

/// Extracts a [`LinkInfo`] from an `RTM_NEWLINK` message; `None` if it carries no name.
pub(crate) fn link_info_from(msg: &LinkMessage) -> Option<LinkInfo> {
    let index = msg.header.index;
    let mut info = LinkInfo {
        index,
        name: String::new(),
        kind: None,
        mac: [0; 6],
        mtu: 0,
        up: msg.header.flags.contains(LinkFlags::Up),
        carrier: msg.header.flags.contains(LinkFlags::LowerUp),
        master: None,
        peer_index: None,
    };
    for attr in &msg.attributes {
        match attr {
            LinkAttribute::IfName(n) => info.name.clone_from(n),
            LinkAttribute::Address(a) => {
                if let Ok(mac) = <[u8; 6]>::try_from(a.as_slice()) {
                    info.mac = mac;
                }
            }
            LinkAttribute::Mtu(m) => info.mtu = *m,
            LinkAttribute::Controller(m) => info.master = Some(*m),
            LinkAttribute::Link(l) if *l != 0 && *l != index => info.peer_index = Some(*l),
            LinkAttribute::LinkInfo(infos) => {
                for i in infos {
                    if let NlLinkInfo::Kind(k) = i {
                        info.kind = Some(k.to_string());
                    }
                }
            }
            _ => {}
        }
    }
    (!info.name.is_empty()).then_some(info)
}

fn bridge_port_from(msg: &LinkMessage) -> Option<BridgePortFlags> {
    let infos = msg.attributes.iter().find_map(|a| match a {
        LinkAttribute::LinkInfo(infos) => Some(infos),
        _ => None,
    })?;
    let port = infos.iter().find_map(|i| match i {
        NlLinkInfo::PortData(InfoPortData::BridgePort(attrs)) => Some(attrs),
        _ => None,
    })?;
    let mut flags = BridgePortFlags::default();
    for a in port {
        match a {
            InfoBridgePort::Isolated(v) => flags.isolated = *v,
            InfoBridgePort::HairpinMode(v) => flags.hairpin = *v,
            _ => {}
        }
    }
    Some(flags)
}

fn address_msg(
    op: &str,
    index: u32,
    addr: IpAddr,
    prefix: u8,
    with_broadcast: bool,
) -> Result<AddressMessage, NetdevError> {
    let max = if addr.is_ipv4() { 32 } else { 128 };
    if prefix > max {
        return Err(NetdevError::Invalid {
            op: op.to_owned(),
            reason: format!("prefix length {prefix} is longer than {max}"),
        });
    }
    let mut msg = AddressMessage::default();
    msg.header.index = index;
    msg.header.prefix_len = prefix;
    msg.header.family = if addr.is_ipv4() {
        AddressFamily::Inet
    } else {
        AddressFamily::Inet6
    };
    msg.attributes.push(AddressAttribute::Address(addr));
    if let IpAddr::V4(v4) = addr {
        msg.attributes.push(AddressAttribute::Local(addr));
        if with_broadcast && prefix < 31 {
            msg.attributes
                .push(AddressAttribute::Broadcast(broadcast_v4(v4, prefix)));
        }
    }
    Ok(msg)
}

/// The broadcast address of `addr/prefix` (`prefix` at most 32).
pub(crate) fn broadcast_v4(addr: Ipv4Addr, prefix: u8) -> Ipv4Addr {
    let host_mask = u32::MAX.checked_shr(u32::from(prefix)).unwrap_or(0);
    Ipv4Addr::from(u32::from(addr) | host_mask)
}

/// The address an `RTM_NEWADDR` describes: `IFA_LOCAL` for IPv4 (which differs from
/// `IFA_ADDRESS` on point-to-point links), else `IFA_ADDRESS`.
fn address_of(msg: &AddressMessage) -> Option<IpAddr> {
    let local = msg.attributes.iter().find_map(|a| match a {
        AddressAttribute::Local(ip) => Some(*ip),
        _ => None,
    });
    local.or_else(|| {
        msg.attributes.iter().find_map(|a| match a {
            AddressAttribute::Address(ip) => Some(*ip),
            _ => None,
        })
    })
}

fn main_table_route(r: &RouteMessage) -> Option<(Ipv4Addr, u8, Option<u32>)> {
    let table = r
        .attributes
        .iter()
        .find_map(|a| match a {
            RouteAttribute::Table(t) => Some(*t),
            _ => None,
        })
        .unwrap_or(u32::from(r.header.table));
    if r.header.address_family != AddressFamily::Inet
        || table != u32::from(RouteHeader::RT_TABLE_MAIN)
    {
        return None;
    }
    let mut dst = Ipv4Addr::UNSPECIFIED;
    let mut oif = None;
    for a in &r.attributes {
        match a {
            RouteAttribute::Destination(RouteAddress::Inet(d)) => dst = *d,
            RouteAttribute::Oif(i) => oif = Some(*i),
            _ => {}
        }
    }
    Some((dst, r.header.destination_prefix_length, oif))
}

fn fdb_msg(dev: u32, mac: [u8; 6], dst: Ipv4Addr) -> NeighbourMessage {
    let mut msg = NeighbourMessage::default();
    msg.header.family = AddressFamily::Bridge;
    msg.header.ifindex = dev;
    msg.header.state = NeighbourState::Other(FDB_STATIC_STATE);
    msg.header.flags = NeighbourFlags::Own;
    msg.attributes
        .push(NeighbourAttribute::LinkLayerAddress(mac.to_vec()));
    msg.attributes
        .push(NeighbourAttribute::Destination(NeighbourAddress::Inet(dst)));
    msg
}

fn fdb_entry_of(n: &NeighbourMessage) -> Option<FdbEntry> {
    let mut mac = None;
    let mut dst = None;
    for a in &n.attributes {
        match a {
            NeighbourAttribute::LinkLayerAddress(l) => mac = <[u8; 6]>::try_from(l.as_slice()).ok(),
            // With family AF_BRIDGE the parser cannot tell the address family of NDA_DST.
            NeighbourAttribute::Destination(NeighbourAddress::Inet(d)) => dst = Some(*d),
            NeighbourAttribute::Destination(NeighbourAddress::Other(raw)) => {
                dst = <[u8; 4]>::try_from(raw.as_slice()).ok().map(Ipv4Addr::from);
            }
            _ => {}
        }
    }
    Some(FdbEntry {
        mac: mac?,
        dst,
        master: n.header.flags.contains(NeighbourFlags::Controller),
    })
}

/// Rejects names the kernel would refuse or that would escape a sysctl path: empty, longer than
/// 15 bytes, `.`/`..`, or containing `/`, `:`, whitespace or NUL.
pub(crate) fn validate_ifname(op: &str, name: &str) -> Result<(), NetdevError> {
    let bad = name.is_empty()
        || name.len() >= libc::IFNAMSIZ
        || name == "."
        || name == ".."
        || name
            .bytes()
            .any(|b| b == b'/' || b == b':' || b == 0 || b.is_ascii_whitespace());
    if bad {
        return Err(NetdevError::Invalid {
            op: op.to_owned(),
            reason: format!("{name:?} is not a valid interface name"),
        });
    }
    Ok(())
}

pub use weft_types::format_mac;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_info_reads_the_attributes_it_needs() {
        let mut msg = link_msg(7);
        msg.header.flags = LinkFlags::Up;
        msg.attributes = vec![
            LinkAttribute::IfName("vethwepl1".into()),
            LinkAttribute::Address(vec![1, 2, 3, 4, 5, 6]),
            LinkAttribute::Mtu(1376),
            LinkAttribute::Controller(3),
            LinkAttribute::Link(8),
            LinkAttribute::LinkInfo(vec![NlLinkInfo::Kind(InfoKind::Veth)]),
        ];
        let info = link_info_from(&msg).expect("has a name");
        assert_eq!(
            info,
            LinkInfo {
                index: 7,
                name: "vethwepl1".into(),
                kind: Some("veth".into()),
                mac: [1, 2, 3, 4, 5, 6],
                mtu: 1376,
                up: true,
                carrier: false,
                master: Some(3),
                peer_index: Some(8),
            }
        );
    }

    #[test]
    fn link_pointing_at_itself_is_not_a_peer() {
        let mut msg = link_msg(4);
        msg.attributes = vec![LinkAttribute::IfName("x".into()), LinkAttribute::Link(4)];
        assert_eq!(link_info_from(&msg).and_then(|l| l.peer_index), None);
        assert_eq!(link_info_from(&link_msg(4)), None);
    }

    #[test]
    fn broadcast_addresses() {
        let a = Ipv4Addr::new(10, 32, 1, 7);
        assert_eq!(broadcast_v4(a, 12), Ipv4Addr::new(10, 47, 255, 255));
        assert_eq!(broadcast_v4(a, 24), Ipv4Addr::new(10, 32, 1, 255));
        assert_eq!(broadcast_v4(a, 32), a);
        assert_eq!(broadcast_v4(a, 0), Ipv4Addr::BROADCAST);
    }

    #[test]
    fn interface_names() {
        for ok in ["weave", "vethwepl1234567", "eth0.100", "ethwe"] {
            assert!(validate_ifname("t", ok).is_ok(), "{ok}");
        }
        for bad in ["", "vethwepl12345678", "..", "a/b", "a b", "a:1"] {
            assert!(validate_ifname("t", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn fdb_message_matches_bridge_fdb_append() {
        let msg = fdb_msg(9, [0; 6], Ipv4Addr::new(192, 0, 2, 1));
        assert_eq!(msg.header.family, AddressFamily::Bridge);
        assert_eq!(u16::from(msg.header.state), 0xc0);
        assert_eq!(msg.header.flags, NeighbourFlags::Own);
        assert_eq!(
            fdb_entry_of(&msg),
            Some(FdbEntry {
                mac: [0; 6],
                dst: Some(Ipv4Addr::new(192, 0, 2, 1)),
                master: false,
            })
        );
    }

    #[test]
    fn addresses_reject_long_prefixes() {
        assert!(address_msg("t", 1, IpAddr::V4(Ipv4Addr::LOCALHOST), 33, true).is_err());
        let msg =
            address_msg("t", 1, "10.0.0.1".parse().expect("literal"), 8, true).expect("valid");
        assert!(msg
            .attributes
            .contains(&AddressAttribute::Broadcast(Ipv4Addr::new(
                10, 255, 255, 255
            ))));
    }

    #[test]
    fn macs_format_like_ip_link() {
        assert_eq!(
            format_mac(&[0x02, 0, 0xab, 1, 2, 0xff]),
            "02:00:ab:01:02:ff"
        );
    }
}
