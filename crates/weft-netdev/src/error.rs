//! The one error type of this crate.
//!
//! Every variant names the object and the operation that failed, so that a message such as
//! `creating bridge "weave": File exists` can be shown to a user as it is. Callers that need to
//! branch on the cause use [`NetdevError::errno`] instead of matching on text.

use nix::errno::Errno;

/// Why a network device, namespace or socket operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NetdevError {
    /// The kernel refused an operation; `op` says what was attempted on which object.
    #[error("{op}: {}", errno.desc())]
    Os {
        /// What was being done, e.g. `creating bridge "weave"`.
        op: String,
        /// The error number the kernel returned.
        errno: Errno,
    },
    /// The netlink connection itself failed (socket closed, or a reply we could not use).
    #[error("{op}: netlink request failed: {detail}")]
    Netlink {
        /// What was being done.
        op: String,
        /// What went wrong with the transport.
        detail: String,
    },
    /// A link exists under the requested name but is of another kind.
    #[error("{op}: {name:?} exists but is a {found}, not a {wanted}")]
    WrongKind {
        /// What was being done.
        op: String,
        /// The interface name.
        name: String,
        /// The kind found (`"veth"`, or `"device"` when the kernel reports no kind).
        found: String,
        /// The kind that was asked for.
        wanted: &'static str,
    },
    /// A link that the operation needs does not exist.
    #[error("{op}: no link named {name:?}")]
    NoSuchLink {
        /// What was being done.
        op: String,
        /// The missing interface name.
        name: String,
    },
    /// `/run/netns/NAME` does not exist.
    #[error("network namespace {0} does not exist")]
    NoSuchNetns(String),
    /// `/proc/PID` does not exist.
    #[error("process {0} does not exist")]
    NoSuchProcess(u32),
    /// An argument was rejected before it reached the kernel.
    #[error("{op}: {reason}")]
    Invalid {
        /// What was being done.
        op: String,
        /// Why the argument is not acceptable.
        reason: String,
    },
    /// A helper thread panicked or could not be started.
    #[error("{op}: {detail}")]
    Thread {
        /// What was being done.
        op: String,
        /// What happened to the thread.
        detail: String,
    },
}

impl NetdevError {
    /// The kernel error number behind this error, if there is one (e.g. `Some(Errno::EEXIST)`).
    pub fn errno(&self) -> Option<Errno> {
        match self {
            Self::Os { errno, .. } => Some(*errno),
            _ => None,
        }
    }

    /// An error the kernel returned as `errno` while doing `op`.
    pub fn os(op: impl Into<String>, errno: Errno) -> Self {
        Self::Os {
            op: op.into(),
            errno,
        }
    }

    /// Wraps an `io::Error` met while doing `op`, keeping its errno when it has one (callers
    /// outside this crate use it for the runtime and thread plumbing around these calls).
    pub fn io(op: impl Into<String>, err: &std::io::Error) -> Self {
        match err.raw_os_error() {
            Some(code) => Self::os(op, Errno::from_raw(code)),
            None => Self::Invalid {
                op: op.into(),
                reason: err.to_string(),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn os_error_names_object_operation_and_cause() {
        let e = NetdevError::os("creating bridge \"weave\"", Errno::EEXIST);
        assert_eq!(e.to_string(), "creating bridge \"weave\": File exists");
        assert_eq!(e.errno(), Some(Errno::EEXIST));
    }

    #[test]
    fn netns_errors_read_as_specified() {
        assert_eq!(
            NetdevError::NoSuchNetns("foo".into()).to_string(),
            "network namespace foo does not exist"
        );
        assert_eq!(
            NetdevError::NoSuchProcess(42).to_string(),
            "process 42 does not exist"
        );
    }

    #[test]
    fn io_errors_keep_their_errno() {
        let e = NetdevError::io("x", &std::io::Error::from_raw_os_error(libc::ENOENT));
        assert_eq!(e.errno(), Some(Errno::ENOENT));
    }
}
