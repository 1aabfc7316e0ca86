//! The unsafe calls of weft, each wrapped in a safe function: the `TUNSETIFF`,
//! `TUNSETVNETHDRSZ`, `TUNSETOFFLOAD` and `SIOCGIFHWADDR` ioctls, opening and binding an
//! `AF_PACKET` socket, registering a file descriptor with the tokio reactor, and the `bpf(2)`
//! commands of the sleeve's receive shortcut (maps, their memory mapping, program load,
//! tcx link, test run).
//!
//! These are the calls neither `nix` nor the standard library offers safely. Every function
//! here takes and returns owned or borrowed file descriptors and plain values, so the rest of
//! the crate stays safe code.
#![allow(unsafe_code)]

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

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

/// A `union bpf_attr`, as far as weft uses it (the kernel takes a shorter one and treats the
/// rest as zero), filled in field by field at the offsets of `linux/bpf.h`.
struct BpfAttr([u64; 18]);

impl BpfAttr {
    fn new() -> Self {
        Self([0; 18])
    }

    fn u32_at(&mut self, off: usize, v: u32) -> &mut Self {
        let word = &mut self.0[off / 8];
        let shift = (off % 8) * 8;
        *word = (*word & !(0xffff_ffff << shift)) | (u64::from(v) << shift);
        self
    }

    fn u64_at(&mut self, off: usize, v: u64) -> &mut Self {
        self.0[off / 8] = v;
        self
    }

    fn u32_of(&self, off: usize) -> u32 {
        (self.0[off / 8] >> ((off % 8) * 8)) as u32
    }

    /// Copies `name` (truncated to 15 bytes, NUL-terminated) into the 16-byte name field at
    /// `off`, byte by byte (the field need not be word-aligned).
    fn name_at(&mut self, off: usize, name: &str) -> &mut Self {
        let mut b = [0u8; 16];
        for (d, s) in b.iter_mut().zip(name.bytes().take(15)) {
            *d = s;
        }
        for (i, byte) in b.iter().enumerate() {
            let at = off + i;
            let shift = (at % 8) * 8;
            let word = &mut self.0[at / 8];
            *word = (*word & !(0xff << shift)) | (u64::from(*byte) << shift);
        }
        self
    }
}

/// The `bpf(2)` system call. Callers in this module guarantee that every pointer `attr` holds
/// points to memory of the length the command reads or writes, alive for the call.
fn bpf_call(cmd: u32, attr: &mut BpfAttr) -> Result<i64, Errno> {
    // SAFETY: `attr` is a 144-byte buffer the kernel reads (and for some commands writes) for
    // the call's duration; the pointers inside it are the callers' responsibility as stated
    // above, and each caller below fills them from slices of the right length.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            libc::c_long::from(cmd as i32),
            attr.0.as_mut_ptr(),
            size_of::<BpfAttr>(),
        )
    };
    Errno::result(rc)
}

/// A descriptor the kernel just returned from `bpf(2)`, now owned.
fn owned(rc: i64) -> Result<OwnedFd, Errno> {
    let raw = i32::try_from(rc).map_err(|_| Errno::EBADF)?;
    // SAFETY: a successful BPF_MAP_CREATE / BPF_PROG_LOAD / BPF_LINK_CREATE returns a new
    // descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(raw) })
}

const BPF_MAP_CREATE: u32 = 0;
const BPF_MAP_LOOKUP_ELEM: u32 = 1;
const BPF_MAP_UPDATE_ELEM: u32 = 2;
const BPF_MAP_DELETE_ELEM: u32 = 3;
const BPF_MAP_GET_NEXT_KEY: u32 = 4;
const BPF_PROG_LOAD: u32 = 5;
const BPF_PROG_TEST_RUN: u32 = 10;
const BPF_LINK_CREATE: u32 = 28;

/// A BPF map, with the key and value sizes it was made with, so that every element call
/// passes buffers of exactly those sizes.
#[derive(Debug)]
pub(crate) struct BpfMap {
    fd: OwnedFd,
    key_size: usize,
    value_size: usize,
}

impl BpfMap {
    /// `BPF_MAP_CREATE`.
    pub(crate) fn create(
        map_type: u32,
        key_size: u32,
        value_size: u32,
        max_entries: u32,
        flags: u32,
        name: &str,
    ) -> Result<Self, Errno> {
        let mut a = BpfAttr::new();
        a.u32_at(0, map_type)
            .u32_at(4, key_size)
            .u32_at(8, value_size)
            .u32_at(12, max_entries)
            .u32_at(16, flags)
            .name_at(28, name);
        let fd = owned(bpf_call(BPF_MAP_CREATE, &mut a)?)?;
        Ok(Self {
            fd,
            key_size: key_size as usize,
            value_size: value_size as usize,
        })
    }

    pub(crate) fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    fn check(&self, key: &[u8], value: Option<usize>) -> Result<(), Errno> {
        if key.len() != self.key_size || value.is_some_and(|v| v != self.value_size) {
            return Err(Errno::EINVAL);
        }
        Ok(())
    }

    /// `BPF_MAP_UPDATE_ELEM` with `BPF_ANY`.
    pub(crate) fn update(&self, key: &[u8], value: &[u8]) -> Result<(), Errno> {
        self.check(key, Some(value.len()))?;
        let mut a = BpfAttr::new();
        a.u32_at(0, self.fd.as_raw_fd() as u32)
            .u64_at(8, key.as_ptr() as u64)
            .u64_at(16, value.as_ptr() as u64);
        bpf_call(BPF_MAP_UPDATE_ELEM, &mut a).map(drop)
    }

    /// `BPF_MAP_LOOKUP_ELEM`: whether `key` is there (its value then in `value`).
    pub(crate) fn lookup(&self, key: &[u8], value: &mut [u8]) -> Result<bool, Errno> {
        self.check(key, Some(value.len()))?;
        let mut a = BpfAttr::new();
        a.u32_at(0, self.fd.as_raw_fd() as u32)
            .u64_at(8, key.as_ptr() as u64)
            .u64_at(16, value.as_mut_ptr() as u64);
        match bpf_call(BPF_MAP_LOOKUP_ELEM, &mut a) {
            Ok(_) => Ok(true),
            Err(Errno::ENOENT) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// `BPF_MAP_DELETE_ELEM`; a missing key is not an error.
    pub(crate) fn delete(&self, key: &[u8]) -> Result<(), Errno> {
        self.check(key, None)?;
        let mut a = BpfAttr::new();
        a.u32_at(0, self.fd.as_raw_fd() as u32)
            .u64_at(8, key.as_ptr() as u64);
        match bpf_call(BPF_MAP_DELETE_ELEM, &mut a) {
            Ok(_) | Err(Errno::ENOENT) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// `BPF_MAP_GET_NEXT_KEY`: the key after `key` (the first one for `None`) into `next`;
    /// false at the end.
    pub(crate) fn next_key(&self, key: Option<&[u8]>, next: &mut [u8]) -> Result<bool, Errno> {
        self.check(next, None)?;
        if let Some(k) = key {
            self.check(k, None)?;
        }
        let mut a = BpfAttr::new();
        a.u32_at(0, self.fd.as_raw_fd() as u32)
            .u64_at(8, key.map_or(0, |k| k.as_ptr() as u64))
            .u64_at(16, next.as_mut_ptr() as u64);
        match bpf_call(BPF_MAP_GET_NEXT_KEY, &mut a) {
            Ok(_) => Ok(true),
            Err(Errno::ENOENT) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Maps the values of a `BPF_F_MMAPABLE` array into memory shared with its programs.
    pub(crate) fn mmap(&self) -> Result<SharedWords, Errno> {
        let len = self.value_size.div_ceil(4096) * 4096;
        // SAFETY: a fresh shared mapping of `len` bytes of the map's descriptor, at an address
        // the kernel chooses; the result is checked, and `SharedWords` unmaps it on drop.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                self.fd.as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(Errno::last());
        }
        Ok(SharedWords {
            ptr: ptr.cast(),
            len,
            words: self.value_size / 8,
        })
    }
}

/// The first value of a memory-mapped BPF array, as 64-bit words shared with BPF programs,
/// which update them with atomic instructions.
#[derive(Debug)]
pub(crate) struct SharedWords {
    ptr: *mut u64,
    len: usize,
    words: usize,
}

// SAFETY: the mapping is only ever accessed through `AtomicU64`, from any thread.
unsafe impl Send for SharedWords {}
// SAFETY: as above: all access is atomic.
unsafe impl Sync for SharedWords {}

impl SharedWords {
    fn word(&self, i: usize) -> Option<&std::sync::atomic::AtomicU64> {
        if i >= self.words {
            return None;
        }
        // SAFETY: `ptr` is a page-aligned mapping of `len` >= 8 * `words` bytes, alive while
        // `self` is, and `i < words`; `AtomicU64` has the size and alignment of `u64`, and every
        // accessor (BPF programs included) uses atomic or word-sized accesses.
        Some(unsafe { &*self.ptr.add(i).cast::<std::sync::atomic::AtomicU64>() })
    }

    /// Word `i` (0 past the end).
    pub(crate) fn load(&self, i: usize) -> u64 {
        self.word(i)
            .map_or(0, |w| w.load(std::sync::atomic::Ordering::Acquire))
    }

    /// Sets word `i` (nothing past the end).
    pub(crate) fn store(&self, i: usize, v: u64) {
        if let Some(w) = self.word(i) {
            w.store(v, std::sync::atomic::Ordering::Release);
        }
    }
}

impl Drop for SharedWords {
    fn drop(&mut self) {
        // SAFETY: `ptr`/`len` are the mapping made in `BpfMap::mmap`, unmapped only here.
        unsafe { libc::munmap(self.ptr.cast(), self.len) };
    }
}

/// `BPF_PROG_LOAD` of `insns` (8-byte instructions). On a verifier rejection the error comes
/// with the verifier's log, from `log`.
pub(crate) fn bpf_prog_load(
    prog_type: u32,
    insns: &[[u8; 8]],
    license: &std::ffi::CStr,
    name: &str,
    log: &mut [u8],
) -> Result<OwnedFd, Errno> {
    let mut a = BpfAttr::new();
    a.u32_at(0, prog_type)
        .u32_at(4, u32::try_from(insns.len()).map_err(|_| Errno::E2BIG)?)
        .u64_at(8, insns.as_ptr() as u64)
        .u64_at(16, license.as_ptr() as u64)
        .u32_at(24, u32::from(!log.is_empty()))
        .u32_at(28, u32::try_from(log.len()).map_err(|_| Errno::E2BIG)?)
        .u64_at(
            32,
            if log.is_empty() {
                0
            } else {
                log.as_mut_ptr() as u64
            },
        )
        .name_at(48, name);
    owned(bpf_call(BPF_PROG_LOAD, &mut a)?)
}

/// `BPF_LINK_CREATE`: attaches `prog` to interface `ifindex` at `attach_type` (a tcx hook);
/// the attachment lasts while the returned link is open.
pub(crate) fn bpf_link_create(
    prog: BorrowedFd<'_>,
    ifindex: u32,
    attach_type: u32,
) -> Result<OwnedFd, Errno> {
    let mut a = BpfAttr::new();
    a.u32_at(0, prog.as_raw_fd() as u32)
        .u32_at(4, ifindex)
        .u32_at(8, attach_type);
    owned(bpf_call(BPF_LINK_CREATE, &mut a)?)
}

/// `BPF_PROG_TEST_RUN` of a socket-buffer program on one packet: its return value and the
/// length of the packet as it left, written to `out`; `ctx` is an optional `__sk_buff`.
pub(crate) fn bpf_prog_test_run(
    prog: BorrowedFd<'_>,
    packet: &[u8],
    out: &mut [u8],
    ctx: Option<&[u8]>,
) -> Result<(u32, usize), Errno> {
    let mut a = BpfAttr::new();
    a.u32_at(0, prog.as_raw_fd() as u32)
        .u32_at(8, u32::try_from(packet.len()).map_err(|_| Errno::E2BIG)?)
        .u32_at(12, u32::try_from(out.len()).map_err(|_| Errno::E2BIG)?)
        .u64_at(16, packet.as_ptr() as u64)
        .u64_at(24, out.as_mut_ptr() as u64)
        .u32_at(32, 1);
    if let Some(c) = ctx {
        a.u32_at(40, u32::try_from(c.len()).map_err(|_| Errno::E2BIG)?)
            .u64_at(48, c.as_ptr() as u64);
    }
    bpf_call(BPF_PROG_TEST_RUN, &mut a)?;
    Ok((a.u32_of(4), a.u32_of(12) as usize))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bpf_attr_fields_land_at_their_byte_offsets() {
        let mut a = BpfAttr::new();
        a.u32_at(24, 7).name_at(28, "weft_conns").u32_at(44, 9);
        let bytes: Vec<u8> = a.0.iter().flat_map(|w| w.to_le_bytes()).collect();
        assert_eq!(&bytes[24..28], &[7, 0, 0, 0]);
        assert_eq!(&bytes[28..44], b"weft_conns\0\0\0\0\0\0");
        assert_eq!(&bytes[44..48], &[9, 0, 0, 0]);
        assert_eq!(a.u32_of(24), 7);
    }

    #[test]
    fn ifreq_names_round_trip_and_reject_overlong() {
        let req = ifreq_named("weave").expect("fits");
        assert_eq!(ifreq_name(&req), "weave");
        assert_eq!(ifreq_named("sixteen-chars-xx").err(), Some(Errno::EINVAL));
        assert_eq!(ifreq_named("").err(), Some(Errno::EINVAL));
    }
}
