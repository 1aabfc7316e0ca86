//! Running `nft`: applying, listing and removing weft's table.
//!
//! This is the one place weft execs a tool. nft's JSON interface (`nft -j`) is the stable,
//! documented front end to the kernel's nftables; using it avoids linking libnftables and
//! avoids hand-encoding netlink batches. Input goes to `nft -j -f -` on stdin in one call, so
//! each [`RuleSet`] change is one kernel transaction.
//!
//! [`Nft::in_netns`] runs the same commands through `ip netns exec NAME nft …`. Tests use it to
//! work inside namespaces they create, and it also lets a tool act on a router's namespace
//! from outside. It never touches the caller's own namespace.

use std::ffi::OsString;
use std::io::{ErrorKind, Write};
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use serde_json::Value;

use crate::render::{TABLE_FAMILY, TABLE_NAME};
use crate::{ContainerRuleSet, FwError, RuleSet};

/// Applies `rs` in the current network namespace; see [`Nft::apply`].
pub fn apply(rs: &RuleSet) -> Result<(), FwError> {
    Nft::new().apply(rs)
}

/// Removes weft's table from the current network namespace; see [`Nft::remove`].
pub fn remove() -> Result<(), FwError> {
    Nft::new().remove()
}

/// `nft -j list table inet weft` in the current network namespace; see [`Nft::list`].
pub fn list() -> Result<String, FwError> {
    Nft::new().list()
}

/// How to run `nft`: which binary, and in which network namespace.
#[derive(Clone, Debug)]
pub struct Nft {
    program: PathBuf,
    netns: Option<String>,
}

impl Default for Nft {
    fn default() -> Self {
        Self::new()
    }
}

impl Nft {
    /// `nft` from `PATH`, in the caller's network namespace.
    pub fn new() -> Self {
        Self {
            program: PathBuf::from("nft"),
            netns: None,
        }
    }

    /// Runs `nft` inside the named network namespace (`/run/netns/NAME`) via `ip netns exec`.
    #[must_use]
    pub fn in_netns(mut self, name: impl Into<String>) -> Self {
        self.netns = Some(name.into());
        self
    }

    /// Uses this `nft` binary instead of the one on `PATH`.
    #[must_use]
    pub fn with_program(mut self, program: impl Into<PathBuf>) -> Self {
        self.program = program.into();
        self
    }

    /// (Re)creates weft's table with exactly the rules of `rs`, in one transaction.
    ///
    /// Call it at router start and after every change to the rule set (expose, hide); calling
    /// it again with the same rule set is harmless and never duplicates rules.
    ///
    /// The batch keeps existing chains (so their hooks stay registered across the swap). If a
    /// chain of the same name exists with another hook, type or priority (a different weft
    /// version left it), nft refuses the whole batch and nothing changes; [`Nft::remove`] and
    /// then `apply` recovers.
    pub fn apply(&self, rs: &RuleSet) -> Result<(), FwError> {
        self.run(&["-j", "-f", "-"], Some(&rs.to_nft_json()))
            .map(drop)
    }

    /// (Re)creates weft's table in a container's namespace (the caller's, or
    /// [`Nft::in_netns`]'s) with exactly the rules of `rs`, in one transaction.
    pub fn apply_container(&self, rs: &ContainerRuleSet) -> Result<(), FwError> {
        self.run(&["-j", "-f", "-"], Some(&rs.to_nft_json()))
            .map(drop)
    }

    /// Adds `ip` to (`member`) or deletes it from the installed table's set of fastdp peers,
    /// in one transaction that leaves every rule and counter as it is.
    ///
    /// Fails with [`FwError::Rejected`] when the table is gone or the element already is as
    /// asked (nft refuses to delete a missing element); re-applying the whole rule set, whose
    /// model holds the elements, recovers from both.
    pub fn set_fastdp_peer(&self, ip: Ipv4Addr, member: bool) -> Result<(), FwError> {
        self.run(
            &["-j", "-f", "-"],
            Some(&RuleSet::fastdp_peer_json(ip, member)),
        )
        .map(drop)
    }

    /// Deletes weft's table. Succeeds when it was already absent.
    pub fn remove(&self) -> Result<(), FwError> {
        self.run(&["-j", "-f", "-"], Some(&RuleSet::delete_json()))
            .map(drop)
    }

    /// The JSON listing of weft's table (`nft -j list table inet weft`), for diagnostics and
    /// tests. Fails with [`FwError::Rejected`] when the table does not exist.
    pub fn list(&self) -> Result<String, FwError> {
        self.run(&["-j", "list", "table", TABLE_FAMILY, TABLE_NAME], None)
    }

    /// Whether weft's table exists (it vanishes on `nft flush ruleset`, for instance).
    pub fn is_installed(&self) -> Result<bool, FwError> {
        let out = self.run(&["-j", "list", "tables", TABLE_FAMILY], None)?;
        let v: Value = serde_json::from_str(&out)
            .map_err(|e| FwError::Rejected(format!("unparsable nft output: {e}")))?;
        let found = v["nftables"].as_array().is_some_and(|objs| {
            objs.iter()
                .any(|o| o["table"]["family"] == TABLE_FAMILY && o["table"]["name"] == TABLE_NAME)
        });
        Ok(found)
    }

    /// Runs nft with `args`, feeding `input` as JSON on stdin; returns its stdout.
    fn run(&self, args: &[&str], input: Option<&Value>) -> Result<String, FwError> {
        let mut cmd = command_in(self.netns.as_deref(), self.program.as_os_str());
        cmd.args(args)
            .stdin(if input.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().map_err(|e| match (e.kind(), &self.netns) {
            (ErrorKind::NotFound, None) => FwError::NftNotFound,
            (ErrorKind::NotFound, Some(_)) => FwError::IpNotFound,
            _ => FwError::Io(e),
        })?;
        if let (Some(input), Some(mut stdin)) = (input, child.stdin.take()) {
            // nft reads all of its input before it writes anything, so writing it all before
            // collecting the output cannot deadlock on a full pipe.
            let bytes = serde_json::to_vec(input)
                .map_err(|e| FwError::Io(std::io::Error::new(ErrorKind::InvalidData, e)))?;
            stdin.write_all(&bytes)?;
        }
        let out = child.wait_with_output()?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        if !out.status.success() {
            // `ip netns exec` reports a missing program itself.
            if self.netns.is_some()
                && stderr.contains("exec of")
                && stderr.contains("No such file or directory")
            {
                return Err(FwError::NftNotFound);
            }
            let first = stderr.lines().map(str::trim).find(|l| !l.is_empty());
            return Err(FwError::Rejected(match first {
                Some(line) => line.to_owned(),
                None => format!("nft exited with {}", out.status),
            }));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

/// `program`, run directly or, with `netns`, through `ip netns exec NAME`.
pub(crate) fn command_in(netns: Option<&str>, program: &std::ffi::OsStr) -> Command {
    match netns {
        Some(ns) => {
            let mut c = Command::new("ip");
            c.args([OsString::from("netns"), "exec".into(), ns.into()])
                .arg(program);
            c
        }
        None => Command::new(program),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // In tests a panic is the failed assertion.
mod tests {
    use super::*;

    #[test]
    fn missing_nft_is_reported_clearly() {
        let nft = Nft::new().with_program("/nonexistent/weft-test/nft");
        let err = nft.list().unwrap_err();
        assert!(matches!(err, FwError::NftNotFound), "{err:?}");
        assert_eq!(
            err.to_string(),
            "nft not found: install the nftables package"
        );
    }
}
