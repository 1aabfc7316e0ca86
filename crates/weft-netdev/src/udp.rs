//! Sleeve UDP socket helpers beyond what tokio offers: UDP GSO sends (`UDP_SEGMENT`: many
//! equal-size datagrams to one peer in one `sendmsg`, carried by the kernel as one buffer
//! until the wire), UDP GRO receives (`UDP_GRO`: the kernel hands over runs of datagrams of one
//! flow in one buffer, with their size in a control message), and the path MTU to a peer.
//!
//! The calls work on a plain non-blocking std socket (not a tokio one): the sleeve data path
//! runs on a thread of its own that waits with [`Readiness`], so the socket must not be
//! registered with a reactor that would wake for every packet. Everything goes through `nix`,
//! so there is no `unsafe` here. Both offloads degrade: a kernel without them fails the call
//! (`EINVAL`, `EIO`, `ENOPROTOOPT`) and the caller falls back to one datagram per system call.

use std::io::{self, IoSlice, IoSliceMut};
use std::net::{SocketAddr, SocketAddrV4, UdpSocket};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::time::Duration;

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags};
use nix::sys::socket::{
    getsockopt, recvmsg, sendmsg, setsockopt, sockopt, ControlMessage, ControlMessageOwned,
    MsgFlags, SockaddrIn, SockaddrStorage,
};

use crate::error::NetdevError;

/// Most datagrams one GSO send may carry (the kernel's `UDP_MAX_SEGMENTS` before 6.x).
pub const MAX_GSO_SEGMENTS: usize = 64;
/// Most bytes one GSO send may carry: one IPv4 packet's UDP payload.
pub const MAX_GSO_BYTES: usize = 65535 - 28;
/// Control-message buffer size that holds a `UDP_GRO` message.
pub const GRO_CMSG_SPACE: usize = 64;

/// Sets the socket's receive and send buffers to `bytes` each, past the `rmem_max`/`wmem_max`
/// sysctls when we may (`SO_RCVBUFFORCE`, needs `CAP_NET_ADMIN`), else as far as they allow.
/// A GSO or GRO run is one 64 KB buffer, so the default (about 200 KB) holds only three.
pub fn set_socket_buffers(sock: &impl AsFd, bytes: usize) -> Result<(), NetdevError> {
    let op = "sizing the sleeve socket's buffers";
    setsockopt(sock, sockopt::RcvBufForce, &bytes)
        .or_else(|_| setsockopt(sock, sockopt::RcvBuf, &bytes))
        .map_err(|e| NetdevError::os(op, e))?;
    setsockopt(sock, sockopt::SndBufForce, &bytes)
        .or_else(|_| setsockopt(sock, sockopt::SndBuf, &bytes))
        .map_err(|e| NetdevError::os(op, e))
}

/// Asks the kernel to coalesce received datagrams (`UDP_GRO`); see [`try_recv_gro`].
pub fn enable_udp_gro(sock: &impl AsFd) -> Result<(), NetdevError> {
    setsockopt(sock, sockopt::UdpGroSegment, &true)
        .map_err(|e| NetdevError::os("enabling UDP_GRO on the sleeve socket", e))
}

/// Sends `buf` to `to` as datagrams of `segment` bytes each (the last may be shorter) in one
/// `sendmsg` with `UDP_SEGMENT`, without waiting. At most [`MAX_GSO_SEGMENTS`] datagrams and
/// [`MAX_GSO_BYTES`] bytes. IPv4 only.
pub fn try_send_gso(
    sock: &UdpSocket,
    buf: &[u8],
    segment: usize,
    to: SocketAddr,
) -> io::Result<usize> {
    let SocketAddr::V4(to) = to else {
        return Err(io::ErrorKind::Unsupported.into());
    };
    let seg = u16::try_from(segment).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    let addr = SockaddrIn::from(to);
    let iov = [IoSlice::new(buf)];
    let cmsg = [ControlMessage::UdpGsoSegments(&seg)];
    sendmsg(
        sock.as_fd().as_raw_fd(),
        &iov,
        &cmsg,
        MsgFlags::empty(),
        Some(&addr),
    )
    .map_err(io::Error::from)
}

/// One receive: bytes, sender, and the size of each datagram when the kernel coalesced
/// several (`None`: the buffer holds one datagram).
pub type GroRecv = (usize, SocketAddr, Option<usize>);

/// Receives what is queued without waiting (`WouldBlock` if nothing is; the socket must be
/// non-blocking). `cmsg` must have capacity [`GRO_CMSG_SPACE`]; it is reused.
pub fn try_recv_gro(sock: &UdpSocket, buf: &mut [u8], cmsg: &mut Vec<u8>) -> io::Result<GroRecv> {
    let mut iov = [IoSliceMut::new(buf)];
    let fd = sock.as_fd().as_raw_fd();
    let msg = recvmsg::<SockaddrStorage>(fd, &mut iov, Some(cmsg), MsgFlags::empty())
        .map_err(io::Error::from)?;
    let mut segment = None;
    if let Ok(cmsgs) = msg.cmsgs() {
        for c in cmsgs {
            if let ControlMessageOwned::UdpGroSegments(n) = c {
                segment = usize::try_from(n).ok().filter(|&n| n > 0);
            }
        }
    }
    let from = msg
        .address
        .and_then(|a| a.as_sockaddr_in().copied())
        .map(|a| SocketAddr::V4(SocketAddrV4::from(a)))
        .ok_or_else(|| io::Error::other("datagram without an IPv4 source"))?;
    Ok((msg.bytes, from, segment))
}

/// Descriptors waited on together for reading, registered once with an epoll instance: a
/// wait is one `epoll_wait`, not `poll(2)`'s setting up and tearing down of a wait-queue entry
/// per descriptor on every call, which is on the round trip of every lone packet.
pub struct Readiness {
    epoll: Epoll,
}

impl Readiness {
    /// Watches `fds` (at most 64, each at most once) for input; index `i` of `fds` is bit `i`
    /// of what [`Readiness::wait`] returns. The descriptors must outlive the watch.
    pub fn new(fds: &[BorrowedFd<'_>]) -> Result<Self, NetdevError> {
        let op = "watching descriptors with epoll";
        let epoll =
            Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC).map_err(|e| NetdevError::os(op, e))?;
        for (i, fd) in fds.iter().enumerate().take(64) {
            epoll
                .add(fd, EpollEvent::new(EpollFlags::EPOLLIN, i as u64))
                .map_err(|e| NetdevError::os(op, e))?;
        }
        Ok(Self { epoll })
    }

    /// Waits until a watched descriptor is readable (or in error), or `timeout` passes;
    /// returns the bit set of those that are. `EINTR` reads as none.
    pub fn wait(&self, timeout: Duration) -> io::Result<u64> {
        let mut events = [EpollEvent::empty(); 8];
        let t = PollTimeout::try_from(timeout).unwrap_or(PollTimeout::MAX);
        let n = match self.epoll.wait(&mut events, t) {
            Ok(n) => n,
            Err(nix::errno::Errno::EINTR) => 0,
            Err(e) => return Err(e.into()),
        };
        Ok(events[..n]
            .iter()
            .filter(|e| e.data() < 64)
            .fold(0, |m, e| m | 1 << e.data()))
    }
}

/// Whether a failed [`try_send_gso`] says the kernel cannot do UDP GSO at all (rather than
/// something about this one batch: a shrunken path MTU, a full queue, a firewall).
pub fn gso_unsupported(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EIO | libc::ENOPROTOOPT | libc::EOPNOTSUPP)
    )
}

/// Waits until `fd` can be written to or `timeout` passes; returns whether it can.
pub fn wait_writable(fd: BorrowedFd<'_>, timeout: Duration) -> io::Result<bool> {
    let mut fds = [PollFd::new(fd, PollFlags::POLLOUT)];
    let t = PollTimeout::try_from(timeout).unwrap_or(PollTimeout::MAX);
    match poll(&mut fds, t) {
        Ok(n) => Ok(n > 0),
        Err(nix::errno::Errno::EINTR) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// A throwaway UDP socket connected to `to` (no packet is sent): the kernel has chosen its
/// route, local address and path MTU.
fn connected_probe(to: SocketAddr, op: &str) -> Result<UdpSocket, NetdevError> {
    let s = UdpSocket::bind(SocketAddr::from(([0, 0, 0, 0], 0)))
        .map_err(|e| NetdevError::io(op.to_owned(), &e))?;
    s.connect(to)
        .map_err(|e| NetdevError::io(op.to_owned(), &e))?;
    Ok(s)
}

/// The kernel's path MTU towards `to` (the route's MTU, or a smaller one learnt from ICMP),
/// read with `IP_MTU` from a throwaway connected socket.
pub fn path_mtu(to: SocketAddr) -> Result<u32, NetdevError> {
    let op = format!("reading the path MTU to {to}");
    let s = connected_probe(to, &op)?;
    let mtu = getsockopt(&s, sockopt::IpMtu).map_err(|e| NetdevError::os(op.clone(), e))?;
    u32::try_from(mtu).map_err(|_| NetdevError::os(op, nix::errno::Errno::EINVAL))
}

/// Which of our IPv4 addresses, on which interface, traffic to `to` leaves from (and, the
/// route being symmetric, traffic from it arrives at): from a throwaway connected socket's
/// local address and the interface that holds it.
pub fn local_route(to: SocketAddrV4) -> Result<(std::net::Ipv4Addr, u32), NetdevError> {
    let op = format!("finding the local address towards {to}");
    let s = connected_probe(to.into(), &op)?;
    let SocketAddr::V4(local) = s
        .local_addr()
        .map_err(|e| NetdevError::io(op.clone(), &e))?
    else {
        return Err(NetdevError::os(op, nix::errno::Errno::EAFNOSUPPORT));
    };
    let local = *local.ip();
    let ifaces = nix::ifaddrs::getifaddrs().map_err(|e| NetdevError::os(op.clone(), e))?;
    for i in ifaces {
        let Some(addr) = i.address.as_ref().and_then(|a| a.as_sockaddr_in()) else {
            continue;
        };
        if addr.ip() == local {
            let index = nix::net::if_::if_nametoindex(i.interface_name.as_str())
                .map_err(|e| NetdevError::os(op.clone(), e))?;
            return Ok((local, index));
        }
    }
    Err(NetdevError::os(op, nix::errno::Errno::ENODEV))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // In tests a panic is the failed assertion.
mod tests {
    use super::*;

    #[test]
    fn local_route_names_the_address_and_interface_towards_a_destination() {
        let (ip, index) = local_route(SocketAddrV4::new(std::net::Ipv4Addr::LOCALHOST, 9)).unwrap();
        assert_eq!(ip, std::net::Ipv4Addr::LOCALHOST);
        assert_eq!(nix::net::if_::if_nametoindex("lo").unwrap(), index);
    }

    #[test]
    fn readiness_names_the_ready_descriptors() {
        let a = UdpSocket::bind("127.0.0.1:0").unwrap();
        let b = UdpSocket::bind("127.0.0.1:0").unwrap();
        let ready = Readiness::new(&[a.as_fd(), b.as_fd()]).unwrap();
        assert_eq!(ready.wait(Duration::ZERO).unwrap(), 0);
        b.send_to(b"x", b.local_addr().unwrap()).unwrap();
        assert_eq!(ready.wait(Duration::from_secs(5)).unwrap(), 0b10);
        a.send_to(b"y", a.local_addr().unwrap()).unwrap();
        assert_eq!(ready.wait(Duration::from_secs(5)).unwrap(), 0b11);
        // Level-triggered: what is not read stays ready.
        let mut buf = [0u8; 4];
        b.recv(&mut buf).unwrap();
        assert_eq!(ready.wait(Duration::ZERO).unwrap(), 0b01);
        assert!(
            Readiness::new(&[a.as_fd(), a.as_fd()]).is_err(),
            "one watch per descriptor"
        );
    }

    /// GSO out, GRO in, over loopback: the receiver gets the datagrams back with their size.
    #[test]
    fn gso_send_and_gro_receive_round_trip() {
        let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
        let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
        if enable_udp_gro(&rx).is_err() {
            return; // An old kernel: nothing to test.
        }
        rx.set_nonblocking(true).unwrap();
        let to = rx.local_addr().unwrap();
        let payload: Vec<u8> = (0..1000u32).map(|i| i as u8).collect();
        let Ok(sent) = try_send_gso(&tx, &payload, 300, to) else {
            return; // No UDP GSO here.
        };
        assert_eq!(sent, 1000);
        let mut buf = vec![0u8; 65536];
        let mut cmsg = Vec::with_capacity(GRO_CMSG_SPACE);
        let mut got = Vec::new();
        let ready = Readiness::new(&[rx.as_fd()]).unwrap();
        while got.len() < 1000 {
            let r = ready.wait(Duration::from_secs(5)).unwrap();
            assert_eq!(r, 1, "datagrams arrive within 5 s");
            let (n, from, seg) = try_recv_gro(&rx, &mut buf, &mut cmsg).unwrap();
            assert_eq!(from, tx.local_addr().unwrap());
            if let Some(seg) = seg {
                assert_eq!(seg, 300);
            } else {
                assert!(n <= 300);
            }
            got.extend_from_slice(&buf[..n]);
        }
        assert_eq!(got, payload);
        assert!(path_mtu(to).unwrap() >= 1280);
        assert!(matches!(
            try_recv_gro(&rx, &mut buf, &mut cmsg),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock
        ));
    }
}

/// Datagrams one [`MmsgBatch`] receives or sends per system call.
pub const MMSG_BATCH: usize = 32;

/// Buffers for many small datagrams (DNS queries) per system call: `recvmmsg` fills up to
/// [`MMSG_BATCH`] buffers of `size` bytes at once, and `sendmmsg` sends up to as many answers,
/// so that a busy server pays one system call per batch instead of one per datagram.
pub struct MmsgBatch {
    bufs: Vec<Vec<u8>>,
    /// Length and sender of each datagram of the last receive.
    got: Vec<(usize, SocketAddr)>,
}

impl MmsgBatch {
    /// Room for [`MMSG_BATCH`] datagrams of at most `size` bytes (longer ones arrive cut).
    pub fn new(size: usize) -> Self {
        Self {
            bufs: vec![vec![0u8; size]; MMSG_BATCH],
            got: Vec::with_capacity(MMSG_BATCH),
        }
    }

    /// Receives what is queued, up to a batch, without waiting (`WouldBlock` if nothing is;
    /// the socket must be non-blocking); returns how many arrived.
    pub fn try_recv(&mut self, sock: &impl AsRawFd) -> io::Result<usize> {
        self.recv_with(sock, MsgFlags::MSG_DONTWAIT)
    }

    /// Waits for a datagram (on a blocking socket), then takes it and whatever else is
    /// queued, up to a batch, in the same system call (`MSG_WAITFORONE`).
    pub fn recv_wait(&mut self, sock: &impl AsRawFd) -> io::Result<usize> {
        self.recv_with(sock, MsgFlags::MSG_WAITFORONE)
    }

    fn recv_with(&mut self, sock: &impl AsRawFd, flags: MsgFlags) -> io::Result<usize> {
        self.got.clear();
        let mut headers =
            nix::sys::socket::MultiHeaders::<SockaddrStorage>::preallocate(self.bufs.len(), None);
        let mut iovs: Vec<[IoSliceMut<'_>; 1]> = self
            .bufs
            .iter_mut()
            .map(|b| [IoSliceMut::new(b.as_mut_slice())])
            .collect();
        let results = nix::sys::socket::recvmmsg(
            sock.as_raw_fd(),
            &mut headers,
            iovs.iter_mut(),
            flags,
            None,
        )
        .map_err(io::Error::from)?;
        for r in results {
            let from = r.address.as_ref().and_then(|a| {
                a.as_sockaddr_in()
                    .map(|a| SocketAddr::V4(SocketAddrV4::from(*a)))
                    .or_else(|| {
                        a.as_sockaddr_in6()
                            .map(|a| SocketAddr::V6(std::net::SocketAddrV6::from(*a)))
                    })
            });
            // A datagram without a source cannot be answered: counted as nothing.
            if let Some(from) = from {
                self.got.push((r.bytes, from));
            }
        }
        Ok(self.got.len())
    }

    /// The `i`th datagram of the last receive and its sender.
    pub fn datagram(&self, i: usize) -> Option<(&[u8], SocketAddr)> {
        let &(len, from) = self.got.get(i)?;
        Some((self.bufs.get(i)?.get(..len)?, from))
    }
}

/// Sends each `(datagram, to)` with as few `sendmmsg` calls as it takes, without waiting;
/// returns how many went (fewer when the socket buffer filled: the rest are dropped, as the
/// network may drop them).
pub fn try_send_many(sock: &impl AsRawFd, out: &[(Vec<u8>, SocketAddr)]) -> io::Result<usize> {
    let mut sent = 0;
    for chunk in out.chunks(MMSG_BATCH) {
        let iovs: Vec<[IoSlice<'_>; 1]> = chunk.iter().map(|(b, _)| [IoSlice::new(b)]).collect();
        let addrs: Vec<Option<SockaddrStorage>> = chunk
            .iter()
            .map(|(_, to)| Some(SockaddrStorage::from(*to)))
            .collect();
        let mut headers =
            nix::sys::socket::MultiHeaders::<SockaddrStorage>::preallocate(chunk.len(), None);
        let n = match nix::sys::socket::sendmmsg(
            sock.as_raw_fd(),
            &mut headers,
            &iovs,
            &addrs,
            [],
            MsgFlags::MSG_DONTWAIT,
        ) {
            Ok(r) => r.count(),
            Err(nix::errno::Errno::EAGAIN) => return Ok(sent),
            Err(e) => return Err(e.into()),
        };
        sent += n;
        if n < chunk.len() {
            return Ok(sent);
        }
    }
    Ok(sent)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod mmsg_tests {
    use super::*;

    #[test]
    fn many_datagrams_each_way_in_a_call() {
        let a = UdpSocket::bind("127.0.0.1:0").unwrap();
        let b = UdpSocket::bind("127.0.0.1:0").unwrap();
        a.set_nonblocking(true).unwrap();
        b.set_nonblocking(true).unwrap();
        let to = b.local_addr().unwrap();
        let out: Vec<(Vec<u8>, SocketAddr)> = (0..40u8)
            .map(|i| (vec![i; 1 + usize::from(i)], to))
            .collect();
        assert_eq!(try_send_many(&a, &out).unwrap(), 40);
        let mut batch = MmsgBatch::new(512);
        let mut seen = Vec::new();
        while seen.len() < 40 {
            match batch.try_recv(&b) {
                Ok(n) => {
                    for i in 0..n {
                        let (d, from) = batch.datagram(i).unwrap();
                        assert_eq!(from, a.local_addr().unwrap());
                        seen.push(d.to_vec());
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => std::thread::yield_now(),
                Err(e) => panic!("{e}"),
            }
        }
        assert_eq!(seen, out.iter().map(|(d, _)| d.clone()).collect::<Vec<_>>());
        assert_eq!(
            batch.try_recv(&b).unwrap_err().kind(),
            io::ErrorKind::WouldBlock
        );
    }
}
