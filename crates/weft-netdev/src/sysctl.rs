//! Writing `/proc/sys` values.
//!
//! `/proc/sys/net` shows the network namespace of the thread that opens the file, so this works
//! inside [`crate::in_netns`]. Hosts booted with IPv6 disabled have no `/proc/sys/net/ipv6`;
//! writes under it are then skipped rather than failed.

use std::io::Write;
use std::path::Path;

use crate::error::NetdevError;

/// Writes `value` to `/proc/sys/<path>`, e.g. `set_sysctl("net/ipv6/conf/weave/accept_ra", "0")`.
///
/// Succeeds without writing when `path` is under `net/ipv6/` and the host has no IPv6 sysctl
/// tree at all.
pub fn set_sysctl(path: &str, value: &str) -> Result<(), NetdevError> {
    let op = format!("setting sysctl {path} to {value}");
    validate_sysctl_path(path).map_err(|reason| NetdevError::Invalid {
        op: op.clone(),
        reason,
    })?;
    let full = Path::new("/proc/sys").join(path);
    let result = std::fs::OpenOptions::new()
        .write(true)
        .open(&full)
        .and_then(|mut f| f.write_all(value.as_bytes()));
    match result {
        Ok(()) => Ok(()),
        Err(e)
            if e.kind() == std::io::ErrorKind::NotFound
                && path.starts_with("net/ipv6/")
                && !Path::new("/proc/sys/net/ipv6").exists() =>
        {
            Ok(())
        }
        Err(e) => Err(NetdevError::io(op, &e)),
    }
}

/// A relative path of non-empty components, none `.` or `..`, made of characters that occur in
/// sysctl and interface names.
fn validate_sysctl_path(path: &str) -> Result<(), String> {
    let ok_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '@');
    let ok = !path.is_empty()
        && path.split('/').all(|part| {
            !part.is_empty() && part != "." && part != ".." && part.chars().all(ok_char)
        });
    if ok {
        Ok(())
    } else {
        Err(format!("{path:?} is not a valid sysctl path"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sysctl_paths() {
        assert!(validate_sysctl_path("net/ipv6/conf/weave/accept_ra").is_ok());
        assert!(validate_sysctl_path("net/ipv4/neigh/eth0.100/ucast_solicit").is_ok());
        for bad in ["", "/net", "net//x", "net/../x", "net/ipv4/a b", "net/./x"] {
            assert!(validate_sysctl_path(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn errors_name_the_sysctl() {
        let err = set_sysctl("weft/does/not/exist", "1").expect_err("missing");
        assert_eq!(
            err.to_string(),
            "setting sysctl weft/does/not/exist to 1: No such file or directory"
        );
    }
}
