//! Raw Ethernet frames on one interface: [`PacketSocket`] and [`send_gratuitous_arp`].
//!
//! A packet socket sees the frames an interface receives and, unless filtered, the frames the
//! host sends out of it. [`PacketSocket::recv`] drops the latter, so a router that injects frames
//! on an interface does not capture its own injections.

use std::io;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, OwnedFd};

use nix::sys::socket::{LinkAddr, MsgFlags};
use tokio::io::unix::AsyncFd;

use crate::error::NetdevError;
use crate::netlink::validate_ifname;
use crate::sys;

/// `ETH_P_ARP`.
pub const ETH_P_ARP: u16 = 0x0806;
/// `ETH_P_ALL`: every protocol.
pub const ETH_P_ALL: u16 = 0x0003;

/// `PACKET_OUTGOING`: a frame the host sent, looped back to packet sockets.
const PACKET_OUTGOING: u8 = 4;

/// Length of an Ethernet frame carrying an ARP packet for IPv4 over Ethernet (no padding).
pub const ARP_FRAME_LEN: usize = 42;

/// An `AF_PACKET`/`SOCK_RAW` socket bound to one interface and one ethertype, non-blocking and
/// registered with the tokio reactor. Frames in and out are whole Ethernet frames.
#[derive(Debug)]
pub struct PacketSocket {
    fd: AsyncFd<OwnedFd>,
}

impl PacketSocket {
    /// Opens a packet socket on interface `ifindex` for `ethertype` ([`ETH_P_ALL`] for every
    /// frame) in the current thread's network namespace. Must be called inside a tokio runtime
    /// with IO enabled.
    pub fn bind(ifindex: u32, ethertype: u16) -> Result<Self, NetdevError> {
        let op = format!("binding packet socket to link {ifindex} for ethertype {ethertype:#06x}");
        let fd =
            sys::packet_socket(ifindex, ethertype).map_err(|e| NetdevError::os(op.clone(), e))?;
        let fd = sys::register_async(fd).map_err(|e| NetdevError::io(op, &e))?;
        Ok(Self { fd })
    }

    /// Waits for the next frame the interface receives and copies it into `buf`. Frames the host
    /// itself sends out of the interface are skipped. A frame longer than `buf` is truncated.
    pub async fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            let mut guard = self.fd.readable().await?;
            let result = guard.try_io(|fd| {
                nix::sys::socket::recvfrom::<LinkAddr>(fd.get_ref().as_raw_fd(), buf)
                    .map_err(io::Error::from)
            });
            match result {
                Ok(Ok((_, Some(from)))) if from.pkttype() == PACKET_OUTGOING => continue,
                Ok(Ok((n, _))) => return Ok(n),
                Ok(Err(e)) => return Err(e),
                Err(_would_block) => continue,
            }
        }
    }

    /// Sends one whole Ethernet frame out of the interface; fails with `WouldBlock` instead of
    /// waiting when the socket buffer is full.
    pub fn try_send(&self, frame: &[u8]) -> io::Result<usize> {
        nix::sys::socket::send(self.fd.get_ref().as_raw_fd(), frame, MsgFlags::empty())
            .map_err(io::Error::from)
    }
}

/// Announces `ip` on interface `ifname` (in the current thread's network namespace) with a
/// gratuitous ARP request from the interface's own MAC, so neighbours update their caches.
pub fn send_gratuitous_arp(ifname: &str, ip: Ipv4Addr) -> Result<(), NetdevError> {
    let op = format!("sending gratuitous ARP for {ip} on {ifname:?}");
    validate_ifname(&op, ifname)?;
    let ifindex =
        nix::net::if_::if_nametoindex(ifname).map_err(|e| NetdevError::os(op.clone(), e))?;
    let mac = sys::hwaddr(ifname).map_err(|e| NetdevError::os(op.clone(), e))?;
    let fd = sys::packet_socket(ifindex, ETH_P_ARP).map_err(|e| NetdevError::os(op.clone(), e))?;
    let frame = gratuitous_arp_frame(mac, ip);
    nix::sys::socket::send(fd.as_raw_fd(), &frame, MsgFlags::empty())
        .map_err(|e| NetdevError::os(op, e))?;
    Ok(())
}

/// The gratuitous ARP Weave Net sends: an ARP request with sender IP = target IP = `ip`, the
/// Ethernet destination and the ARP target MAC both `ff:ff:ff:ff:ff:ff`, from `mac`.
pub fn gratuitous_arp_frame(mac: [u8; 6], ip: Ipv4Addr) -> [u8; ARP_FRAME_LEN] {
    const BROADCAST: [u8; 6] = [0xff; 6];
    let mut f = [0u8; ARP_FRAME_LEN];
    let ip = ip.octets();
    let parts: [&[u8]; 12] = [
        &BROADCAST,               // 0x00 Ethernet destination
        &mac,                     // 0x06 Ethernet source
        &ETH_P_ARP.to_be_bytes(), // 0x0c ethertype
        &[0x00, 0x01],            // 0x0e hardware type: Ethernet
        &[0x08, 0x00],            // 0x10 protocol type: IPv4
        &[6, 4],                  // 0x12 hardware and protocol address lengths
        &[0x00, 0x01],            // 0x14 operation: request
        &mac,                     // 0x16 sender hardware address
        &ip,                      // 0x1c sender protocol address
        &BROADCAST,               // 0x20 target hardware address
        &ip,                      // 0x26 target protocol address
        &[],
    ];
    let mut at = 0;
    for part in parts {
        for (dst, src) in f.iter_mut().skip(at).zip(part) {
            *dst = *src;
        }
        at += part.len();
    }
    f
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gratuitous_arp_bytes() {
        let mac = [0x02, 0x11, 0x22, 0x33, 0x44, 0x55];
        let f = gratuitous_arp_frame(mac, Ipv4Addr::new(10, 32, 0, 1));
        let expected: [u8; ARP_FRAME_LEN] = [
            0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02, 0x11, 0x22, 0x33, 0x44, 0x55, 0x08, 0x06,
            0x00, 0x01, 0x08, 0x00, 0x06, 0x04, 0x00, 0x01, 0x02, 0x11, 0x22, 0x33, 0x44, 0x55, 10,
            32, 0, 1, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 10, 32, 0, 1,
        ];
        assert_eq!(f, expected);
    }
}
