//! Whether an address or a range clashes with the host's IPv4 routes, as Weave Net's
//! `weaveutil netcheck` decides it: read from `/proc/net/route` (the main table of this
//! network namespace) rather than by running `ip`, skipping the default route and the routes
//! on the weave bridge itself (those are weft's own).

use std::net::Ipv4Addr;

use weft_types::Ipv4Cidr;

/// The bridge whose routes never count as a clash.
const BRIDGE: &str = "weave";

/// One IPv4 route of the host: its interface and destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Route {
    pub(crate) iface: String,
    pub(crate) dst: Ipv4Cidr,
}

/// The host's routes other than the default route and those on the weave bridge; empty when
/// `/proc/net/route` cannot be read (nothing to clash with that we know of).
pub(crate) fn host_routes() -> Vec<Route> {
    std::fs::read_to_string("/proc/net/route")
        .map(|t| parse(&t))
        .unwrap_or_default()
}

/// Parses `/proc/net/route`: a header line, then `Iface Destination Gateway Flags RefCnt Use
/// Metric Mask ...` with destination and mask as the hex of the in-memory (network order)
/// 32-bit value. Lines that do not parse are skipped.
pub(crate) fn parse(text: &str) -> Vec<Route> {
    let hex = |s: &str| {
        u32::from_str_radix(s, 16)
            .ok()
            .map(|v| Ipv4Addr::from(v.to_ne_bytes()))
    };
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let (iface, dst, mask) = (f.first()?, hex(f.get(1)?)?, hex(f.get(7)?)?);
            let len = u32::from(mask).leading_ones();
            let dst = Ipv4Cidr::new(dst, u8::try_from(len).ok()?).ok()?;
            (len > 0 && *iface != BRIDGE).then(|| Route {
                iface: (*iface).to_string(),
                dst,
            })
        })
        .collect()
}

/// Whether two subnets share an address (Weave: the start of one lies inside the other).
fn overlaps(a: Ipv4Cidr, b: Ipv4Cidr) -> bool {
    contains(a, b.network().addr()) || contains(b, a.network().addr())
}

fn contains(net: Ipv4Cidr, ip: Ipv4Addr) -> bool {
    Ipv4Cidr::new(ip, net.prefix_len()).is_ok_and(|c| c.network() == net.network())
}

/// The first route whose destination overlaps the subnet `range`.
pub(crate) fn range_clash(routes: &[Route], range: Ipv4Cidr) -> Option<&Route> {
    routes.iter().find(|r| overlaps(r.dst, range))
}

/// Weave's warning when an address given by hand lies inside a host route, as
/// `weaveutil netcheck` words it; `None` when it does not.
pub(crate) fn address_warning(routes: &[Route], cidr: Ipv4Cidr) -> Option<String> {
    routes
        .iter()
        .find(|r| contains(r.dst, cidr.addr()))
        .map(|r| {
            format!(
                "Address {} overlaps with existing route {} on host",
                cidr.addr(),
                r.dst.network()
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::cidr;

    const TABLE: &str = "\
Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT
eth0\t00000000\t010200C0\t0003\t0\t0\t0\t00000000\t0\t0\t0
eth0\t000200C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0
docker0\t000011AC\t00000000\t0001\t0\t0\t0\t0000FFFF\t0\t0\t0
weave\t0000200A\t00000000\t0001\t0\t0\t0\t0000F0FF\t0\t0\t0
garbage line
";

    #[test]
    fn parses_proc_net_route_without_default_and_bridge() {
        let r = parse(TABLE);
        if cfg!(target_endian = "little") {
            assert_eq!(
                r,
                vec![
                    Route {
                        iface: "eth0".into(),
                        dst: cidr("192.0.2.0/24")
                    },
                    Route {
                        iface: "docker0".into(),
                        dst: cidr("172.17.0.0/16")
                    },
                ]
            );
        }
    }

    #[test]
    fn clashes() {
        let routes = vec![
            Route {
                iface: "eth0".into(),
                dst: cidr("10.40.0.0/16"),
            },
            Route {
                iface: "eth1".into(),
                dst: cidr("192.168.1.0/24"),
            },
        ];
        assert_eq!(
            range_clash(&routes, cidr("10.32.0.0/12")).map(|r| r.iface.as_str()),
            Some("eth0")
        );
        assert!(range_clash(&routes, cidr("10.48.0.0/12")).is_none());
        assert_eq!(
            range_clash(&routes, cidr("192.168.0.0/16")).map(|r| r.iface.as_str()),
            Some("eth1")
        );
        assert_eq!(
            address_warning(&routes, cidr("10.40.3.4/24")).as_deref(),
            Some("Address 10.40.3.4 overlaps with existing route 10.40.0.0/16 on host")
        );
        assert_eq!(address_warning(&routes, cidr("10.41.0.1/8")), None);
    }
}
