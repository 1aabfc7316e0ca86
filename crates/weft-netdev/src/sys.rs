//! The unsafe calls of weft, each wrapped in a safe function: the `TUNSETIFF`,
//! `TUNSETVNETHDRSZ`, `TUNSETOFFLOAD` and `SIOCGIFHWADDR` ioctls, opening and binding an
//! `AF_PACKET` socket, and registering a file descriptor with the tokio reactor.
//!
//! These are the calls neither `nix` nor the standard library offers safely. Every function
//! here takes and returns owned or borrowed file descriptors and plain values, so the rest of
//! the crate stays safe code.
#![allow(unsafe_code)]

use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

use nix::errno::Errno;
use tokio::io::unix::AsyncFd;

/// Types that own their file descriptor: `as_raw_fd` returns the same open descriptor for as
/// long as the value lives, and nothing else closes it.
pub(crate) trait OwnsFd: AsRawFd {}
impl OwnsFd for File {}
impl OwnsFd for OwnedFd {}

/// Registers a non-blocking descriptor with the current tokio reactor. Fails (rather than
/// panicking, as tokio would) when called outside a runtime.
pub(crate) fn register_async<T: OwnsFd>(inner: T) -> io::Result<AsyncFd<T>> {
    if tokio::runtime::Handle::try_current().is_err() {
        return Err(io::Error::other("not inside a tokio runtime"));
    }
    // SAFETY: `T: OwnsFd` owns its descriptor, which stays open and the same until `inner` is
    // dropped, and `AsyncFd` owns `inner` from here on, so the descriptor outlives the
    // registration. A reactor exists (checked above), so `register` does not panic.
    unsafe { AsyncFd::register(inner) }.map_err(|e| e.into_parts().1)
}

/// An `ifreq` whose name field holds `name` (which must fit with its NUL terminator).
fn ifreq_named(name: &str) -> Result<libc::ifreq, Errno> {
    if name.is_empty() || name.len() >= libc::IFNAMSIZ || name.bytes().any(|b| b == 0) {
        return Err(Errno::EINVAL);
    }
    // SAFETY: `ifreq` is a plain C struct of byte arrays, integers and a union of those, for
    // which all-zero bytes are a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(name.bytes()) {
        *dst = src as libc::c_char;
    }
    Ok(req)
}

/// The interface name the kernel wrote back into an `ifreq`.
fn ifreq_name(req: &libc::ifreq) -> String {
    let bytes: Vec<u8> = req
        .ifr_name
        .iter()
        .take_while(|&&c| c != 0)
        .map(|&c| c as u8)
        .collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

/// `ioctl(TUNSETIFF)` on an open `/dev/net/tun`: attaches the fd to (creating if needed) the
/// TUN/TAP device `name` with `flags`. Returns the name the kernel used.
pub(crate) fn tun_set_iff(fd: BorrowedFd<'_>, name: &str, flags: i32) -> Result<String, Errno> {
    let mut req = ifreq_named(name)?;
    req.ifr_ifru.ifru_flags = i16::try_from(flags).map_err(|_| Errno::EINVAL)?;
    // SAFETY: `fd` is open for the duration of the call, and TUNSETIFF reads and writes exactly
    // one `struct ifreq`, which `req` is and which outlives the call.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TUNSETIFF as _, &mut req) };
    Errno::result(rc)?;
    Ok(ifreq_name(&req))
}

/// The hardware address of interface `name` in the current thread's network namespace.
pub(crate) fn hwaddr(name: &str) -> Result<[u8; 6], Errno> {
    let mut req = ifreq_named(name)?;
    let sock = nix::sys::socket::socket(
        nix::sys::socket::AddressFamily::Inet,
        nix::sys::socket::SockType::Datagram,
        nix::sys::socket::SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    // SAFETY: `sock` is an open socket owned by this function, and SIOCGIFHWADDR reads and
    // writes exactly one `struct ifreq`, which `req` is and which outlives the call.
    let rc = unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFHWADDR as _, &mut req) };
    Errno::result(rc)?;
    // SAFETY: after a successful SIOCGIFHWADDR the kernel has filled in the `ifru_hwaddr`
    // member of the union, a `sockaddr` of plain integers.
    let data = unsafe { req.ifr_ifru.ifru_hwaddr.sa_data };
    let mut mac = [0u8; 6];
    for (dst, src) in mac.iter_mut().zip(data.iter()) {
        *dst = *src as u8;
    }
    Ok(mac)
}

/// A non-blocking `AF_PACKET`/`SOCK_RAW` socket receiving and sending whole Ethernet frames of
/// `ethertype` on interface `ifindex` only.
///
/// The socket is opened with protocol 0, so it sees no traffic at all until `bind` has set both
/// the interface and the protocol: no frame from another interface can slip in between.
pub(crate) fn packet_socket(ifindex: u32, ethertype: u16) -> Result<OwnedFd, Errno> {
    let ifindex = i32::try_from(ifindex).map_err(|_| Errno::EINVAL)?;
    // SAFETY: plain socket(2) call with constant arguments; the result is checked below.
    let raw = unsafe {
        libc::socket(
            libc::AF_PACKET,
            libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            0,
        )
    };
    let raw = Errno::result(raw)?;
    // SAFETY: `raw` is a freshly created descriptor that nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    // SAFETY: `sockaddr_ll` is a plain C struct of integers and a byte array; zero is valid.
    let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    addr.sll_family = libc::AF_PACKET as u16;
    addr.sll_protocol = ethertype.to_be();
    addr.sll_ifindex = ifindex;
    let len = size_of::<libc::sockaddr_ll>() as libc::socklen_t;
    // SAFETY: `fd` is open, and `addr` is a valid `sockaddr_ll` of `len` bytes that outlives
    // the call.
    let rc = unsafe {
        libc::bind(
            fd.as_raw_fd(),
            std::ptr::addr_of!(addr).cast::<libc::sockaddr>(),
            len,
        )
    };
    Errno::result(rc)?;
    Ok(fd)
}

/// `ioctl(TUNSETVNETHDRSZ)`: the length of the `virtio_net_hdr` in front of each frame of a
/// TAP opened with `IFF_VNET_HDR`.
pub(crate) fn tun_set_vnet_hdr_sz(fd: BorrowedFd<'_>, len: i32) -> Result<(), Errno> {
    // SAFETY: `fd` is open for the duration of the call, and TUNSETVNETHDRSZ reads exactly one
    // `int` through the pointer, which points to `len`, alive for the call.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TUNSETVNETHDRSZ as _, &raw const len) };
    Errno::result(rc).map(drop)
}

/// `ioctl(TUNSETOFFLOAD)`: which offloads (`TUN_F_*`) the reader of the TAP accepts.
pub(crate) fn tun_set_offload(fd: BorrowedFd<'_>, flags: libc::c_uint) -> Result<(), Errno> {
    // SAFETY: `fd` is open for the duration of the call, and TUNSETOFFLOAD takes its argument
    // by value (an unsigned long of flags); no memory is passed.
    let rc = unsafe {
        libc::ioctl(
            fd.as_raw_fd(),
            libc::TUNSETOFFLOAD as _,
            libc::c_ulong::from(flags),
        )
    };
    Errno::result(rc).map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ifreq_names_round_trip_and_reject_overlong() {
        let req = ifreq_named("weave").expect("fits");
        assert_eq!(ifreq_name(&req), "weave");
        assert_eq!(ifreq_named("sixteen-chars-xx").err(), Some(Errno::EINVAL));
        assert_eq!(ifreq_named("").err(), Some(Errno::EINVAL));
    }
}
