//! Letting weave traffic through a Docker host's `FORWARD` policy.
//!
//! Docker sets the `filter` table's `FORWARD` policy to `DROP` and turns on
//! `bridge-nf-call-iptables`, so frames bridged between the ports of the `weave` bridge pass
//! through `FORWARD` too — and are dropped: containers on the weave network could not talk.
//! An accept in weft's own nftables table cannot help (a drop in any table is final), and the
//! bridge's own `nf_call_iptables` switch can only add filtering, never take away what the
//! global sysctl turns on. So on a host where Docker's `DOCKER-USER` chain exists (the chain
//! Docker keeps for its users and never flushes), weft puts three rules at its top, as Weave
//! Net put them at the top of `FORWARD`:
//!
//! ```text
//! -i weave -o weave -j ACCEPT                                       (container to container)
//! -i weave ! -o weave -j ACCEPT                                     (out of the weave network)
//! -o weave -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT     (and the answers)
//! ```
//!
//! each tagged `-m comment --comment weft`, and nothing else anywhere in Docker's rules.
//! They are written with `iptables` itself: `DOCKER-USER` belongs to whichever iptables
//! backend Docker uses (legacy or nft), and Docker's own tool is the one that reads them
//! back. [`ensure`] checks and repairs them (Docker may start after weft, or restart);
//! [`remove`] takes them away (`weft reset`).

use std::process::Stdio;

use crate::FwError;

/// Docker's chain for its users' rules.
pub const CHAIN: &str = "DOCKER-USER";
/// The comment on every rule weft puts there.
pub const COMMENT: &str = "weft";

/// How to run `iptables`: which binary, and in which network namespace.
#[derive(Clone, Debug)]
pub struct Iptables {
    program: String,
    netns: Option<String>,
}

impl Default for Iptables {
    fn default() -> Self {
        Self {
            program: "iptables".into(),
            netns: None,
        }
    }
}

impl Iptables {
    /// Runs `iptables` inside the named network namespace (tests).
    #[must_use]
    pub fn in_netns(mut self, name: impl Into<String>) -> Self {
        self.netns = Some(name.into());
        self
    }

    fn run(&self, args: &[String]) -> Result<bool, FwError> {
        let mut cmd = crate::nft::command_in(self.netns.as_deref(), self.program.as_ref());
        // -w: wait for the xtables lock instead of failing while Docker holds it.
        let status = cmd
            .arg("-w")
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map_err(|e| FwError::Exec(format!("{}: {e}", self.program)))?;
        Ok(status.success())
    }
}

/// The rules, in order, for the bridge `bridge`.
fn rules(bridge: &str) -> [Vec<String>; 3] {
    let s = |v: &[&str]| v.iter().map(|x| (*x).to_string()).collect::<Vec<_>>();
    let tail = ["-m", "comment", "--comment", COMMENT, "-j", "ACCEPT"];
    [
        s(&[&["-i", bridge, "-o", bridge][..], &tail[..]].concat()),
        s(&[&["-i", bridge, "!", "-o", bridge][..], &tail[..]].concat()),
        s(&[
            &[
                "-o",
                bridge,
                "-m",
                "conntrack",
                "--ctstate",
                "RELATED,ESTABLISHED",
            ][..],
            &tail[..],
        ]
        .concat()),
    ]
}

fn with(op: &str, position: Option<&str>, rule: &[String]) -> Vec<String> {
    let mut v = vec![op.to_string(), CHAIN.to_string()];
    v.extend(position.map(str::to_string));
    v.extend_from_slice(rule);
    v
}

/// Makes sure weft's rules head `DOCKER-USER`, when that chain exists. Returns whether it
/// exists (no Docker, no chain: nothing to do). Rules found out of order or incomplete are
/// removed and put back.
pub fn ensure(ipt: &Iptables, bridge: &str) -> Result<bool, FwError> {
    if !ipt.run(&["-S".into(), CHAIN.into()])? {
        return Ok(false);
    }
    let rules = rules(bridge);
    let mut all = true;
    for r in &rules {
        all &= ipt.run(&with("-C", None, r))?;
    }
    if all {
        return Ok(true);
    }
    remove(ipt, bridge)?;
    // Inserted at the top in reverse, so that they end up in order.
    for r in rules.iter().rev() {
        if !ipt.run(&with("-I", Some("1"), r))? {
            return Err(FwError::Rejected(format!(
                "iptables refused a rule for {CHAIN}: {}",
                r.join(" ")
            )));
        }
    }
    Ok(true)
}

/// Removes every copy of weft's rules from `DOCKER-USER` (nothing when the chain is absent).
pub fn remove(ipt: &Iptables, bridge: &str) -> Result<(), FwError> {
    for r in &rules(bridge) {
        // Each -D removes one copy; a bound keeps a misbehaving iptables from looping.
        for _ in 0..16 {
            if !ipt.run(&with("-D", None, r))? {
                break;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_are_weaves_forward_block_tagged() {
        let r = rules("weave");
        assert_eq!(
            r[0].join(" "),
            "-i weave -o weave -m comment --comment weft -j ACCEPT"
        );
        assert_eq!(
            r[1].join(" "),
            "-i weave ! -o weave -m comment --comment weft -j ACCEPT"
        );
        assert_eq!(
            with("-I", Some("1"), &r[2]).join(" "),
            "-I DOCKER-USER 1 -o weave -m conntrack --ctstate RELATED,ESTABLISHED -m comment --comment weft -j ACCEPT"
        );
    }
}
