//! The sleeve data path's two descriptors as small traits: the sleeve UDP socket (with the
//! kernel's path MTU towards a peer, which is a property of that socket's route) and the TAP
//! port on the bridge. The data path is generic over both, so it is monomorphised for the real
//! [`std::net::UdpSocket`] and [`SyncTap`] and a packet pays nothing for the seam; unit tests
//! put in-memory fakes in their place (`crate::fakes`).
//!
//! Each method says what it wraps in weft-netdev; they keep its semantics (non-blocking,
//! `WouldBlock` when there is nothing to read or no room to write).

use std::io::{self, IoSlice};
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsFd;
use std::time::Duration;

use weft_netdev::{GroRecv, NetdevError, SyncTap};

/// The sleeve UDP socket as the data path uses it.
pub(crate) trait SleeveSocket {
    /// One non-blocking receive, with the datagram size when the kernel coalesced a run
    /// ([`weft_netdev::try_recv_gro`]); `cmsg` is reused room for the control message.
    fn try_recv_gro(&self, buf: &mut [u8], cmsg: &mut Vec<u8>) -> io::Result<GroRecv>;
    /// Sends one datagram.
    fn send_to(&self, datagram: &[u8], to: SocketAddr) -> io::Result<usize>;
    /// Sends `buf` as datagrams of `segment` bytes in one call ([`weft_netdev::try_send_gso`]).
    fn try_send_gso(&self, buf: &[u8], segment: usize, to: SocketAddr) -> io::Result<usize>;
    /// Waits until the socket can be written to or `timeout` passes.
    fn wait_writable(&self, timeout: Duration) -> io::Result<bool>;
    /// The kernel's path MTU towards `to` ([`weft_netdev::path_mtu`]).
    fn path_mtu(&self, to: SocketAddr) -> Result<u32, NetdevError>;
}

/// The TAP port as the data path uses it.
pub(crate) trait SleeveTap {
    /// Whether every frame read and written carries a `virtio_net_hdr` first.
    fn has_vnet_hdr(&self) -> bool;
    /// Reads the next frame, or fails with `WouldBlock`.
    fn try_recv(&self, buf: &mut [u8]) -> io::Result<usize>;
    /// Writes one frame, or fails with `WouldBlock`.
    fn try_send(&self, frame: &[u8]) -> io::Result<usize>;
    /// Writes one frame given in pieces (a `virtio_net_hdr` and the frame).
    fn try_send_parts(&self, parts: &[IoSlice<'_>]) -> io::Result<usize>;
}

impl SleeveSocket for UdpSocket {
    fn try_recv_gro(&self, buf: &mut [u8], cmsg: &mut Vec<u8>) -> io::Result<GroRecv> {
        weft_netdev::try_recv_gro(self, buf, cmsg)
    }

    fn send_to(&self, datagram: &[u8], to: SocketAddr) -> io::Result<usize> {
        Self::send_to(self, datagram, to)
    }

    fn try_send_gso(&self, buf: &[u8], segment: usize, to: SocketAddr) -> io::Result<usize> {
        weft_netdev::try_send_gso(self, buf, segment, to)
    }

    fn wait_writable(&self, timeout: Duration) -> io::Result<bool> {
        weft_netdev::wait_writable(self.as_fd(), timeout)
    }

    fn path_mtu(&self, to: SocketAddr) -> Result<u32, NetdevError> {
        weft_netdev::path_mtu(to)
    }
}

impl SleeveTap for SyncTap {
    fn has_vnet_hdr(&self) -> bool {
        Self::has_vnet_hdr(self)
    }

    fn try_recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        Self::try_recv(self, buf)
    }

    fn try_send(&self, frame: &[u8]) -> io::Result<usize> {
        Self::try_send(self, frame)
    }

    fn try_send_parts(&self, parts: &[IoSlice<'_>]) -> io::Result<usize> {
        Self::try_send_parts(self, parts)
    }
}
