//! [`Tap`]: a TAP device whose frames the process reads and writes itself.
//!
//! The device lives as long as the `Tap` (it is not made persistent) and in the network
//! namespace of the thread that created it. Frames are whole Ethernet frames with no packet
//! information header (`IFF_NO_PI`).
//!
//! [`Tap::create_offloaded`] also asks for a 10-byte `virtio_net_hdr` in front of every frame
//! (`IFF_VNET_HDR`) and accepts checksum and TCP segmentation offloads (`TUN_F_CSUM`,
//! `TUN_F_TSO4`, `TUN_F_TSO6`): reads may then return TCP super-packets up to 64 KB with
//! partial checksums, and writes may inject them. Parsing that header is `weft-core`'s
//! business (`overlay::offload`). Where the kernel refuses the offloads (or on a big-endian
//! host, whose header byte order would differ), the device is the plain one.

use std::fs::{File, OpenOptions};
use std::io::{self, IoSlice, Read, Write};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::fs::OpenOptionsExt;

use tokio::io::unix::AsyncFd;

use crate::error::NetdevError;
use crate::netlink::validate_ifname;
use crate::sys;

/// A non-blocking TAP device registered with the tokio reactor.
#[derive(Debug)]
pub struct Tap {
    fd: AsyncFd<File>,
    name: String,
    vnet_hdr: bool,
}

/// The offloads a TAP with a `virtio_net_hdr` accepts.
const OFFLOADS: libc::c_uint = libc::TUN_F_CSUM | libc::TUN_F_TSO4 | libc::TUN_F_TSO6;
/// The header length we ask for: `struct virtio_net_hdr` without `num_buffers`.
const VNET_HDR_LEN: i32 = 10;

impl Tap {
    /// Creates TAP device `name` (a `%d` template lets the kernel pick the number) in the current
    /// thread's network namespace. Must be called inside a tokio runtime with IO enabled.
    pub fn create(name: &str) -> Result<Self, NetdevError> {
        Self::open(name, false)
    }

    /// Like [`Tap::create`], but with a `virtio_net_hdr` in front of every frame read and
    /// written, and checksum and TCP segmentation offloads on (see the module doc). Falls back
    /// to a plain device when the kernel refuses; [`Tap::has_vnet_hdr`] says which it got.
    pub fn create_offloaded(name: &str) -> Result<Self, NetdevError> {
        if cfg!(target_endian = "little") {
            if let Ok(t) = Self::open(name, true) {
                return Ok(t);
            }
        }
        Self::open(name, false)
    }

    fn open(name: &str, offload: bool) -> Result<Self, NetdevError> {
        let op = format!("creating tap {name:?}");
        validate_ifname(&op, name)?;
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open("/dev/net/tun")
            .map_err(|e| NetdevError::io(format!("{op}: opening /dev/net/tun"), &e))?;
        let mut flags = libc::IFF_TAP | libc::IFF_NO_PI;
        if offload {
            flags |= libc::IFF_VNET_HDR;
        }
        let name = sys::tun_set_iff(file.as_fd(), name, flags)
            .map_err(|e| NetdevError::os(op.clone(), e))?;
        if offload {
            sys::tun_set_vnet_hdr_sz(file.as_fd(), VNET_HDR_LEN)
                .and_then(|()| sys::tun_set_offload(file.as_fd(), OFFLOADS))
                .map_err(|e| NetdevError::os(format!("{op}: offloads"), e))?;
        }
        let fd = sys::register_async(file).map_err(|e| NetdevError::io(op, &e))?;
        Ok(Self {
            fd,
            name,
            vnet_hdr: offload,
        })
    }

    /// Whether every frame read and written carries a 10-byte `virtio_net_hdr` first.
    pub fn has_vnet_hdr(&self) -> bool {
        self.vnet_hdr
    }

    /// The device's name as the kernel chose it.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Waits for the next frame the kernel sends out of the device and copies it into `buf`.
    /// A frame longer than `buf` is truncated.
    pub async fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            let mut guard = self.fd.readable().await?;
            if let Ok(result) = guard.try_io(|f| {
                let mut file: &File = f.get_ref();
                file.read(buf)
            }) {
                return result;
            }
        }
    }

    /// Hands one frame to the kernel as if the device had received it, waiting while the
    /// device's queue is full.
    pub async fn send(&self, frame: &[u8]) -> io::Result<usize> {
        loop {
            let mut guard = self.fd.writable().await?;
            if let Ok(result) = guard.try_io(|f| {
                let mut file: &File = f.get_ref();
                file.write(frame)
            }) {
                return result;
            }
        }
    }

    /// Like [`Tap::send`], but fails with `WouldBlock` instead of waiting.
    pub fn try_send(&self, frame: &[u8]) -> io::Result<usize> {
        let mut file: &File = self.fd.get_ref();
        file.write(frame)
    }

    /// Takes the device off the tokio reactor, for a thread that waits on it itself (see
    /// [`crate::Readiness`]); the reactor would otherwise wake for every frame.
    pub fn into_sync(self) -> SyncTap {
        SyncTap {
            file: self.fd.into_inner(),
            name: self.name,
            vnet_hdr: self.vnet_hdr,
        }
    }
}

/// A [`Tap`] off the reactor: the same non-blocking device, read and written directly.
#[derive(Debug)]
pub struct SyncTap {
    file: File,
    name: String,
    vnet_hdr: bool,
}

impl SyncTap {
    /// The device's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The device's interface index.
    pub fn index(&self) -> Result<u32, NetdevError> {
        nix::net::if_::if_nametoindex(self.name.as_str())
            .map_err(|e| NetdevError::os(format!("looking up TAP {}", self.name), e))
    }

    /// Whether every frame read and written carries a 10-byte `virtio_net_hdr` first.
    pub fn has_vnet_hdr(&self) -> bool {
        self.vnet_hdr
    }

    /// Reads the next frame, or fails with `WouldBlock`.
    pub fn try_recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        (&self.file).read(buf)
    }

    /// Writes one frame given in pieces (a `virtio_net_hdr` and the frame), or fails with
    /// `WouldBlock` when the device's queue is full.
    pub fn try_send_parts(&self, parts: &[IoSlice<'_>]) -> io::Result<usize> {
        (&self.file).write_vectored(parts)
    }

    /// Writes one frame, or fails with `WouldBlock`.
    pub fn try_send(&self, frame: &[u8]) -> io::Result<usize> {
        (&self.file).write(frame)
    }
}

impl AsFd for SyncTap {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.file.as_fd()
    }
}
