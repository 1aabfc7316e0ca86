//! Which containers the proxy handles and with which addresses (Weave Net's `weaveCIDRs`):
//! the container's network mode and its `WEAVE_CIDR` environment variable.

use weft_types::Ipv4Cidr;

/// One item of `WEAVE_CIDR`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CidrArg {
    /// `net:default`: an address in IPAM's default subnet.
    DefaultSubnet,
    /// `net:<cidr>`: an address in that subnet.
    Subnet(Ipv4Cidr),
    /// `ip:<cidr>` or `<cidr>`: that address.
    Address(Ipv4Cidr),
}

/// Why a container is left alone, or its `WEAVE_CIDR` is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CidrError {
    /// Its network mode is not one the proxy attaches.
    #[error("Leaving container alone because the container has '--net={0}'")]
    NetworkMode(String),
    /// `WEAVE_CIDR=none`.
    #[error("Leaving container alone because WEAVE_CIDR is 'none'")]
    None,
    /// No `WEAVE_CIDR` while the router runs with `--no-default-ipalloc`.
    #[error(
        "Leaving container alone because WEAVE_CIDR is not set and --no-default-ipalloc is on"
    )]
    NoDefault,
    /// An item that is none of the accepted forms.
    #[error(
        "invalid WEAVE_CIDR item {0:?}: expected net:default, net:<cidr>, ip:<cidr> or <cidr>"
    )]
    Bad(String),
}

impl CidrError {
    /// Whether the container is simply not the proxy's (rather than wrongly configured).
    pub fn is_left_alone(&self) -> bool {
        !matches!(self, Self::Bad(_))
    }
}

/// The value of `name` in a `NAME=value` environment list (the last one wins, as in Docker).
pub fn env_value<'a>(env: &'a [String], name: &str) -> Option<&'a str> {
    env.iter()
        .rev()
        .find_map(|e| e.strip_prefix(name).and_then(|r| r.strip_prefix('=')))
}

/// The addresses to give a container with network mode `mode` and environment `env`, or why
/// it is not the proxy's (`no_default_ipalloc`: `--no-default-ipalloc`).
pub fn weave_cidrs(
    mode: &str,
    env: &[String],
    no_default_ipalloc: bool,
) -> Result<Vec<CidrArg>, CidrError> {
    if !matches!(mode, "" | "none" | "default" | "bridge") {
        return Err(CidrError::NetworkMode(mode.to_string()));
    }
    let Some(value) = env_value(env, "WEAVE_CIDR") else {
        return if no_default_ipalloc {
            Err(CidrError::NoDefault)
        } else {
            Ok(vec![CidrArg::DefaultSubnet])
        };
    };
    if value.trim() == "none" {
        return Err(CidrError::None);
    }
    let items: Vec<CidrArg> = value
        .split_whitespace()
        .map(parse_item)
        .collect::<Result<_, _>>()?;
    if items.is_empty() {
        return Ok(vec![CidrArg::DefaultSubnet]);
    }
    Ok(items)
}

fn parse_item(s: &str) -> Result<CidrArg, CidrError> {
    let bad = || CidrError::Bad(s.chars().take(64).collect());
    if s == "net:default" {
        return Ok(CidrArg::DefaultSubnet);
    }
    if let Some(n) = s.strip_prefix("net:") {
        let c: Ipv4Cidr = n.parse().map_err(|_| bad())?;
        return if c.is_network() {
            Ok(CidrArg::Subnet(c))
        } else {
            Err(bad())
        };
    }
    let a = s.strip_prefix("ip:").unwrap_or(s);
    a.parse().map(CidrArg::Address).map_err(|_| bad())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(v: &[&str]) -> Vec<String> {
        v.iter().map(ToString::to_string).collect()
    }

    fn c(s: &str) -> Ipv4Cidr {
        s.parse().unwrap()
    }

    #[test]
    fn weave_cidr_forms() {
        assert_eq!(
            weave_cidrs("", &env(&["A=1"]), false).unwrap(),
            [CidrArg::DefaultSubnet]
        );
        assert_eq!(
            weave_cidrs("bridge", &env(&["WEAVE_CIDR="]), false).unwrap(),
            [CidrArg::DefaultSubnet]
        );
        assert_eq!(
            weave_cidrs(
                "none",
                &env(&["WEAVE_CIDR=10.2.1.5/24  net:10.3.0.0/16 ip:10.4.0.1/8 net:default"]),
                false
            )
            .unwrap(),
            [
                CidrArg::Address(c("10.2.1.5/24")),
                CidrArg::Subnet(c("10.3.0.0/16")),
                CidrArg::Address(c("10.4.0.1/8")),
                CidrArg::DefaultSubnet
            ]
        );
    }

    #[test]
    fn containers_left_alone() {
        for mode in ["host", "container:abc", "weave", "mynet"] {
            let e = weave_cidrs(mode, &[], false).unwrap_err();
            assert!(e.is_left_alone());
            assert_eq!(
                e.to_string(),
                format!("Leaving container alone because the container has '--net={mode}'")
            );
        }
        assert_eq!(
            weave_cidrs("", &env(&["WEAVE_CIDR=none"]), false),
            Err(CidrError::None)
        );
        assert_eq!(weave_cidrs("", &[], true), Err(CidrError::NoDefault));
        // Given explicitly, --no-default-ipalloc does not matter.
        assert!(weave_cidrs("", &env(&["WEAVE_CIDR=net:default"]), true).is_ok());
    }

    #[test]
    fn bad_items_are_errors() {
        for bad in [
            "10.2.1.5",
            "net:10.2.1.5/24",
            "ip:x",
            "net:",
            "10.2.1.5/40",
            "eth0",
        ] {
            let e = weave_cidrs("", &env(&[&format!("WEAVE_CIDR={bad}")]), false).unwrap_err();
            assert!(!e.is_left_alone(), "{bad}");
            assert!(e.to_string().contains(bad), "{e}");
        }
    }

    #[test]
    fn last_value_wins() {
        assert_eq!(
            env_value(
                &env(&["WEAVE_CIDR=a", "WEAVE_CIDRX=b", "WEAVE_CIDR=c"]),
                "WEAVE_CIDR"
            ),
            Some("c")
        );
        assert_eq!(env_value(&env(&["WEAVE_CIDRX=b"]), "WEAVE_CIDR"), None);
    }
}
