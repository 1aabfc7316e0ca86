//! Linux network plumbing for weft: the bridge, veths, VXLAN devices, addresses, routes and
//! forwarding entries (through rtnetlink, never by running `ip`), network namespaces, TAP
//! devices (with `virtio_net_hdr` offloads), raw packet sockets, and the sleeve UDP socket's
//! GSO/GRO calls.
//!
//! This is the only weft crate that may use `unsafe`, and it does so in one module (`sys`) for
//! the ioctls, `AF_PACKET` and `bpf(2)` calls that `nix` does not wrap; everything else is safe
//! code over `rtnetlink`, `netlink-packet-route` and `nix`. The sleeve's receive shortcut (a tc
//! program that hands plain sleeve frames to the bridge in the kernel) lives here too.
//!
//! What it leaves out: policy. It does not know which bridge type, MTU or names weft uses
//! (that is `weftd`'s job, after the spec's §3), it runs no iptables, and it has no Open vSwitch
//! datapath, WireGuard or dummy links. Every error names the object and the operation, and
//! carries the kernel's errno ([`NetdevError::errno`]) so callers can decide what is fatal;
//! optional kernel features degrade in place (a missing IPv6 sysctl tree is skipped, a bridge
//! that refuses a large MTU gets it through a temporary port).
//!
//! Privileged tests run only with `WEFT_TEST_ROOT=1`, each in namespaces of its own made with
//! [`new_netns`], which vanish with their links when the test ends, pass or fail.

#![warn(missing_docs)]

mod bpf;
mod error;
mod netlink;
mod netns;
mod packet;
mod sleeve_shortcut;
mod sys;
mod sysctl;
mod tap;
mod udp;

pub use error::NetdevError;
pub use netlink::{format_mac, BridgePortFlags, FdbEntry, LinkInfo, Netdev, MAX_MTU};
pub use netns::{in_netns, new_netns, open_netns, same_netns_as_self, NetnsSpec};
pub use packet::{
    gratuitous_arp_frame, send_gratuitous_arp, PacketSocket, ARP_FRAME_LEN, ETH_P_ALL, ETH_P_ARP,
};
pub use sleeve_shortcut::{
    monotonic_ns, ShortcutCounters, ShortcutMac, SleeveShortcut, DRAIN_MARGIN_NS,
};
pub use sysctl::set_sysctl;
pub use tap::{SyncTap, Tap};
pub use udp::{
    enable_udp_gro, gso_unsupported, local_route, path_mtu, set_socket_buffers, try_recv_gro,
    try_send_gso, try_send_many, wait_writable, GroRecv, MmsgBatch, Readiness, GRO_CMSG_SPACE,
    MAX_GSO_BYTES, MAX_GSO_SEGMENTS, MMSG_BATCH,
};
