//! Network namespaces: opening one by name or process, comparing with our own, creating an
//! anonymous one, and running code inside one.
//!
//! Namespace membership is per thread on Linux, so [`in_netns`] never switches the calling
//! thread: it starts a fresh OS thread, moves that thread into the namespace and runs the
//! closure there. Sockets (including a [`crate::Netdev`]'s netlink socket) keep the namespace
//! they were created in, so whatever the closure opens stays bound to it.

use std::fs::File;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::Path;

use nix::errno::Errno;
use nix::sched::CloneFlags;

use crate::error::NetdevError;

/// Which network namespace to open.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NetnsSpec {
    /// A namespace pinned by `ip netns add NAME`, at `/run/netns/NAME`.
    Named(String),
    /// The namespace of a process, at `/proc/PID/ns/net`.
    Pid(u32),
}

/// Opens a network namespace, for [`in_netns`] or [`crate::Netdev::move_to_netns`].
pub fn open_netns(spec: &NetnsSpec) -> Result<OwnedFd, NetdevError> {
    match spec {
        NetnsSpec::Named(name) => {
            if name.is_empty() || name == "." || name == ".." || name.contains('/') {
                return Err(NetdevError::Invalid {
                    op: "opening network namespace".to_owned(),
                    reason: format!("{name:?} is not a valid namespace name"),
                });
            }
            match File::open(Path::new("/run/netns").join(name)) {
                Ok(f) => Ok(f.into()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    Err(NetdevError::NoSuchNetns(name.clone()))
                }
                Err(e) => Err(NetdevError::io(
                    format!("opening network namespace {name}"),
                    &e,
                )),
            }
        }
        NetnsSpec::Pid(pid) => match File::open(format!("/proc/{pid}/ns/net")) {
            Ok(f) => Ok(f.into()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                // A process that died between the lookup and the open reads the same as one that
                // never existed; a zombie still has /proc/PID but no namespaces.
                Err(NetdevError::NoSuchProcess(*pid))
            }
            Err(e) => Err(NetdevError::io(
                format!("opening network namespace of process {pid}"),
                &e,
            )),
        },
    }
}

/// Whether `fd` is the network namespace of the calling thread (to refuse, for example, a
/// container that runs with `--net=host`).
///
/// Compares device and inode with `/proc/thread-self/ns/net`, which, unlike `/proc/self`,
/// follows the calling thread rather than the process's main thread.
pub fn same_netns_as_self(fd: &OwnedFd) -> Result<bool, NetdevError> {
    let op = "comparing network namespaces";
    let theirs = nix::sys::stat::fstat(fd.as_raw_fd()).map_err(|e| NetdevError::os(op, e))?;
    let ours = match nix::sys::stat::stat("/proc/thread-self/ns/net") {
        Err(Errno::ENOENT) => nix::sys::stat::stat("/proc/self/ns/net"),
        other => other,
    }
    .map_err(|e| NetdevError::os(op, e))?;
    Ok(theirs.st_dev == ours.st_dev && theirs.st_ino == ours.st_ino)
}

/// Runs `f` on a new OS thread that has joined the network namespace `ns`, and returns its
/// result. A panic in `f` is propagated to the caller.
///
/// `f` typically builds a `current_thread` tokio runtime and uses a [`crate::Netdev`], a
/// [`crate::Tap`] or a [`crate::PacketSocket`] made there. Child processes spawned from `f`
/// also start in `ns`.
pub fn in_netns<T: Send + 'static>(
    ns: &OwnedFd,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, NetdevError> {
    let op = "entering network namespace";
    let ns = ns.try_clone().map_err(|e| NetdevError::io(op, &e))?;
    let thread = std::thread::Builder::new()
        .name("weft-netns".to_owned())
        .spawn(move || -> Result<T, NetdevError> {
            nix::sched::setns(&ns, CloneFlags::CLONE_NEWNET).map_err(|e| NetdevError::os(op, e))?;
            drop(ns);
            Ok(f())
        })
        .map_err(|e| NetdevError::io(op, &e))?;
    match thread.join() {
        Ok(result) => result,
        Err(panic) => std::panic::resume_unwind(panic),
    }
}

/// Creates a new, empty network namespace and returns it, not pinned anywhere: it lives as long
/// as the returned fd, any fd opened by [`in_netns`] code inside it, or any process in it.
///
/// Tests use this so that a failing test cannot leave a namespace (or the links in it) behind.
pub fn new_netns() -> Result<OwnedFd, NetdevError> {
    let op = "creating network namespace";
    let thread = std::thread::Builder::new()
        .name("weft-unshare".to_owned())
        .spawn(move || -> Result<OwnedFd, NetdevError> {
            nix::sched::unshare(CloneFlags::CLONE_NEWNET).map_err(|e| NetdevError::os(op, e))?;
            File::open("/proc/thread-self/ns/net")
                .map(OwnedFd::from)
                .map_err(|e| NetdevError::io(op, &e))
        })
        .map_err(|e| NetdevError::io(op, &e))?;
    match thread.join() {
        Ok(result) => result,
        Err(_) => Err(NetdevError::Thread {
            op: op.to_owned(),
            detail: "panicked".to_owned(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_named_namespace_is_reported_by_name() {
        let err = open_netns(&NetnsSpec::Named("weft-surely-absent-ns".into()))
            .expect_err("does not exist");
        assert_eq!(
            err.to_string(),
            "network namespace weft-surely-absent-ns does not exist"
        );
    }

    #[test]
    fn missing_process_is_reported_by_pid() {
        // Above the kernel's pid_max limit (4194304), so no such process can exist.
        let err = open_netns(&NetnsSpec::Pid(4_194_305)).expect_err("no such pid");
        assert_eq!(err.to_string(), "process 4194305 does not exist");
    }

    #[test]
    fn path_like_names_are_refused() {
        assert!(open_netns(&NetnsSpec::Named("../x".into())).is_err());
        assert!(open_netns(&NetnsSpec::Named(String::new())).is_err());
    }

    #[test]
    fn our_own_namespace_is_ourselves() {
        let ours = open_netns(&NetnsSpec::Pid(std::process::id())).expect("own ns readable");
        // The main thread of the test binary may be in another namespace than this test thread
        // only if something moved it, which nothing here does.
        assert!(same_netns_as_self(&ours).expect("stat"));
    }
}
