//! [`Tap`]: a TAP device whose frames the process reads and writes itself.
//!
//! The device lives as long as the `Tap` (it is not made persistent) and in the network
//! namespace of the thread that created it. Frames are whole Ethernet frames with no packet
//! information header (`IFF_NO_PI`).

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::AsFd;
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
}

impl Tap {
    /// Creates TAP device `name` (a `%d` template lets the kernel pick the number) in the current
    /// thread's network namespace. Must be called inside a tokio runtime with IO enabled.
    pub fn create(name: &str) -> Result<Self, NetdevError> {
        let op = format!("creating tap {name:?}");
        validate_ifname(&op, name)?;
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open("/dev/net/tun")
            .map_err(|e| NetdevError::io(format!("{op}: opening /dev/net/tun"), &e))?;
        let name = sys::tun_set_iff(file.as_fd(), name, libc::IFF_TAP | libc::IFF_NO_PI)
            .map_err(|e| NetdevError::os(op.clone(), e))?;
        let fd = sys::register_async(file).map_err(|e| NetdevError::io(op, &e))?;
        Ok(Self { fd, name })
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
}
