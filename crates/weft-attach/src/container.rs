//! Naming containers (`netns:NAME`, `pid:PID`) and running netlink code inside one.

use std::os::fd::OwnedFd;

use weft_netdev::{in_netns, open_netns, same_netns_as_self, Netdev, NetnsSpec};

use crate::AttachError;

/// A container as weft can name it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Container {
    /// `netns:NAME`.
    Netns(String),
    /// `pid:PID`.
    Pid(u32),
}

impl Container {
    /// Parses `netns:NAME` or `pid:PID`.
    pub fn parse(s: &str) -> Result<Self, AttachError> {
        if let Some(n) = s.strip_prefix("netns:").filter(|n| valid_netns_name(n)) {
            return Ok(Self::Netns(n.to_string()));
        }
        if let Some(p) = s.strip_prefix("pid:").and_then(|p| p.parse().ok()) {
            return Ok(Self::Pid(p));
        }
        Err(AttachError::UnknownContainer(s.to_string()))
    }

    /// The container id weft reports: the namespace name or the PID.
    pub fn id(&self) -> String {
        match self {
            Self::Netns(n) => n.clone(),
            Self::Pid(p) => p.to_string(),
        }
    }

    /// The identity IPAM files the container's addresses under: the text it was named by,
    /// `netns:NAME` or `pid:PID`, which [`Container::parse`] reads back.
    pub fn ident(&self) -> String {
        match self {
            Self::Netns(n) => format!("netns:{n}"),
            Self::Pid(p) => format!("pid:{p}"),
        }
    }

    /// Whether the container still exists: its named namespace is mounted, or its process has
    /// not exited (a zombie has). Errors reading `/proc` or `/run/netns` other than "not
    /// found" count as alive, so that an address is never released on a doubt.
    pub fn is_alive(&self) -> bool {
        match self {
            Self::Netns(n) => exists(&std::path::Path::new(NETNS_DIR).join(n)),
            Self::Pid(p) => match std::fs::read_to_string(format!("/proc/{p}/stat")) {
                // The state follows the command name, which may hold spaces and ')'.
                Ok(stat) => stat
                    .rsplit_once(") ")
                    .is_none_or(|(_, rest)| !rest.starts_with(['Z', 'X'])),
                Err(e) => e.kind() != std::io::ErrorKind::NotFound,
            },
        }
    }

    fn spec(&self) -> NetnsSpec {
        match self {
            Self::Netns(n) => NetnsSpec::Named(n.clone()),
            Self::Pid(p) => NetnsSpec::Pid(*p),
        }
    }

    /// The container's network namespace; refused when it is the calling thread's own.
    pub(crate) fn open(&self) -> Result<OwnedFd, AttachError> {
        let fd = open_netns(&self.spec())?;
        if same_netns_as_self(&fd)? {
            return Err(AttachError::HostNetns);
        }
        Ok(fd)
    }
}

/// Where `ip netns` mounts named namespaces.
const NETNS_DIR: &str = "/run/netns";

fn exists(p: &std::path::Path) -> bool {
    match std::fs::symlink_metadata(p) {
        Ok(_) => true,
        Err(e) => e.kind() != std::io::ErrorKind::NotFound,
    }
}

fn valid_netns_name(n: &str) -> bool {
    !n.is_empty() && n != "." && n != ".." && !n.contains('/')
}

/// Every named network namespace (the default container list of `weft ps`).
pub fn named_netns() -> Vec<Container> {
    let mut v: Vec<Container> = std::fs::read_dir(NETNS_DIR)
        .map(|d| {
            d.filter_map(Result::ok)
                .filter_map(|e| e.file_name().into_string().ok())
                .map(Container::Netns)
                .collect()
        })
        .unwrap_or_default();
    v.sort_by_key(Container::id);
    v
}

/// Runs `f` with a fresh netlink handle inside `ns`, on a thread and runtime of its own
/// (namespace membership is per thread).
pub(crate) fn in_container<T, F, Fut>(ns: &OwnedFd, f: F) -> Result<T, AttachError>
where
    T: Send + 'static,
    F: FnOnce(Netdev) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Result<T, AttachError>>,
{
    in_netns(ns, move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(AttachError::Runtime)?;
        rt.block_on(async move {
            let nl = Netdev::new().await?;
            f(nl).await
        })
    })?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn liveness_of_processes_and_namespaces() {
        assert!(Container::Pid(std::process::id()).is_alive());
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        // Exited but not reaped: a zombie is not alive.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while Container::Pid(pid).is_alive() && std::time::Instant::now() < deadline {
            std::thread::yield_now();
        }
        assert!(!Container::Pid(pid).is_alive(), "zombie counted as alive");
        child.wait().unwrap();
        assert!(!Container::Pid(pid).is_alive());
        assert!(!Container::Netns("weft-no-such-namespace-here".into()).is_alive());
    }

    #[test]
    fn parses_containers() {
        assert_eq!(
            Container::parse("netns:c1").unwrap(),
            Container::Netns("c1".into())
        );
        assert_eq!(Container::parse("pid:42").unwrap(), Container::Pid(42));
        assert_eq!(Container::parse("pid:42").unwrap().id(), "42");
        for s in ["netns:c1", "pid:42"] {
            assert_eq!(Container::parse(s).unwrap().ident(), s);
        }
        for bad in [
            "netns:",
            "netns:../x",
            "netns:..",
            "pid:x",
            "pid:-1",
            "web1",
        ] {
            assert!(
                matches!(Container::parse(bad), Err(AttachError::UnknownContainer(s)) if s == bad),
                "{bad}"
            );
        }
    }
}
