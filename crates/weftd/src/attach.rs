//! Connecting containers to the weave bridge: `weft attach`, `weft detach` and `weft ps`
//! (Weave Net's `weaveutil attach-container` / `detach-container` / `container-addrs`).
//!
//! A container is named as `netns:NAME` (a namespace under /run/netns) or `pid:PID`; Docker
//! containers arrive with the Docker integration. Attaching creates the veth pair
//! `vethwepl<id>`/`vethwepg<id>`, puts the host end on the bridge and moves the other end into
//! the container as `ethwe`, adds the addresses, lets multicast in through `ethwe` only from
//! their subnets (weft's nftables table in the container's namespace), announces each address
//! with a gratuitous ARP and adds the multicast route last. Any failure after the veth exists deletes it again, so a failed
//! attach leaves nothing behind.

use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::OwnedFd;

use weft_netdev::{in_netns, open_netns, same_netns_as_self, Netdev, NetdevError, NetnsSpec};

/// The weave bridge's name.
pub const BRIDGE: &str = "weave";
/// The interface name inside containers.
pub const CONTAINER_IF: &str = "ethwe";

/// An IPv4 address with its prefix length, as `weft attach` takes and prints them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Cidr {
    /// The address.
    pub addr: Ipv4Addr,
    /// Prefix length.
    pub prefix: u8,
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl std::str::FromStr for Cidr {
    type Err = AttachError;

    /// `a.b.c.d/len` or `ip:a.b.c.d/len`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || AttachError::BadCidr(s.to_string());
        let t = s.strip_prefix("ip:").unwrap_or(s);
        let (a, p) = t.split_once('/').ok_or_else(bad)?;
        let addr: Ipv4Addr = a.parse().map_err(|_| bad())?;
        let prefix: u8 = p.parse().map_err(|_| bad())?;
        if prefix > 32 {
            return Err(bad());
        }
        Ok(Self { addr, prefix })
    }
}

/// Why attaching, detaching or listing failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AttachError {
    /// Not a CIDR.
    #[error("invalid address {0:?}: expected a.b.c.d/len (optionally prefixed by ip:)")]
    BadCidr(String),
    /// A container reference weft cannot resolve.
    #[error("container {0}: not found (name containers as netns:NAME or pid:PID; Docker containers need the Docker integration)")]
    UnknownContainer(String),
    /// The container shares the host's network namespace.
    #[error("Container is running in the host network namespace, and therefore cannot be connected to weave - perhaps the container was started with --net=host")]
    HostNetns,
    /// The router has not created the bridge.
    #[error("bridge {BRIDGE:?} does not exist: start the router first with 'weft launch'")]
    NoBridge,
    /// Another interface on the weave network answers for the address.
    #[error("address {addr} is already in use on the weave network (by {mac})")]
    InUse {
        /// The address.
        addr: Ipv4Addr,
        /// Who answered.
        mac: String,
    },
    /// `detach` on a container without a weave interface.
    #[error("container {0} is not attached to weave")]
    NotAttached(String),
    /// A kernel operation failed.
    #[error(transparent)]
    Netdev(#[from] NetdevError),
    /// The container's multicast rules could not be set.
    #[error("container multicast rules: {0}")]
    Firewall(#[from] weft_fw::FwError),
    /// A thread-local runtime could not be started.
    #[error("starting a runtime: {0}")]
    Runtime(std::io::Error),
}

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

    fn spec(&self) -> NetnsSpec {
        match self {
            Self::Netns(n) => NetnsSpec::Named(n.clone()),
            Self::Pid(p) => NetnsSpec::Pid(*p),
        }
    }

    fn open(&self) -> Result<OwnedFd, AttachError> {
        let fd = open_netns(&self.spec())?;
        if same_netns_as_self(&fd)? {
            return Err(AttachError::HostNetns);
        }
        Ok(fd)
    }
}

fn valid_netns_name(n: &str) -> bool {
    !n.is_empty() && n != "." && n != ".." && !n.contains('/')
}

/// Runs `f` with a fresh netlink handle inside `ns`.
fn in_container<T, F, Fut>(ns: &OwnedFd, f: F) -> Result<T, AttachError>
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

/// Weave Net names the pair after the first 7 characters of the container id (a PID or a
/// random hex id). Namespace names often share long prefixes, so a longer name is replaced by
/// 7 hex digits of its hash, keeping interface names within 15 bytes and distinct.
fn veth_names(id: &str) -> (String, String) {
    let short: String = if id.len() <= 7 && id.chars().all(|c| c.is_ascii_alphanumeric()) {
        id.to_string()
    } else {
        let h = id.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        });
        format!("{:07x}", h & 0x0fff_ffff)
    };
    (format!("vethwepl{short}"), format!("vethwepg{short}"))
}

/// `weft attach`: connects the container to the bridge with these addresses (idempotent).
/// Returns the addresses now configured that were asked for.
pub async fn attach(
    host: &Netdev,
    c: &Container,
    cidrs: &[Cidr],
    multicast_route: bool,
) -> Result<Vec<Cidr>, AttachError> {
    let ns = c.open()?;
    let bridge = host.link(BRIDGE).await?.ok_or(AttachError::NoBridge)?;
    let present = in_container(&ns, |nl| async move {
        Ok(match nl.link(CONTAINER_IF).await? {
            Some(l) => Some(v4_addrs(&nl, l.index).await?),
            None => None,
        })
    })?;
    let has_if = present.is_some();
    let fresh: Vec<Ipv4Addr> = cidrs
        .iter()
        .map(|c| c.addr)
        .filter(|a| {
            !present
                .as_ref()
                .is_some_and(|p| p.iter().any(|c| c.addr == *a))
        })
        .collect();
    if let Some((addr, mac)) = probe_in_use(bridge.index, bridge.mac, &fresh).await? {
        return Err(AttachError::InUse {
            addr,
            mac: weft_netdev::format_mac(&mac),
        });
    }
    let mut created = None;
    if !has_if {
        let (host_end, peer_end) = veth_names(&c.id());
        host.create_veth(&host_end, &peer_end, bridge.mtu).await?;
        let result = async {
            let h = host.link(&host_end).await?.ok_or(AttachError::NoBridge)?;
            created = Some(h.index);
            let p = host.link(&peer_end).await?.ok_or(AttachError::NoBridge)?;
            host.set_master(h.index, bridge.index).await?;
            let _ = weft_netdev::set_sysctl(&format!("net/ipv6/conf/{host_end}/accept_ra"), "0");
            host.move_to_netns(p.index, &ns).await?;
            host.set_up(h.index).await?;
            host.set_hairpin(h.index, true).await?;
            let pe = peer_end.clone();
            in_container(&ns, move |nl| async move {
                let l = nl.link(&pe).await?.ok_or(AttachError::NoBridge)?;
                nl.rename(l.index, CONTAINER_IF).await?;
                Ok(())
            })
        }
        .await;
        if let Err(e) = result {
            if let Some(i) = created {
                let _ = host.delete_link(i).await;
            }
            return Err(e);
        }
    }
    let want = cidrs.to_vec();
    let result = in_container(&ns, move |nl| async move {
        let l = nl.link(CONTAINER_IF).await?.ok_or(AttachError::NoBridge)?;
        for (k, v) in [
            ("base_reachable_time", "5"),
            ("delay_first_probe_time", "2"),
            ("ucast_solicit", "1"),
        ] {
            let _ = weft_netdev::set_sysctl(&format!("net/ipv4/neigh/{CONTAINER_IF}/{k}"), v);
        }
        let _ = weft_netdev::set_sysctl(&format!("net/ipv6/conf/{CONTAINER_IF}/accept_ra"), "0");
        let mut added = Vec::new();
        for c in &want {
            if nl
                .add_address(l.index, IpAddr::V4(c.addr), c.prefix)
                .await?
            {
                added.push(*c);
            }
        }
        set_multicast_rules(&v4_addrs(&nl, l.index).await?)?;
        nl.set_up(l.index).await?;
        // A neighbour that still maps a moved address to its old owner loses its packets
        // until its cache probes again (seconds) unless our announcement reaches it. One sent
        // as the new port comes up is often lost (seen on an idle host: the bridge never
        // forwarded it), so wait for carrier and announce three times over 100 ms.
        wait_for_carrier(&nl, l.index).await;
        for delay in GARP_SCHEDULE {
            tokio::time::sleep(delay).await;
            for c in &added {
                weft_netdev::send_gratuitous_arp(CONTAINER_IF, c.addr)?;
            }
        }
        if multicast_route {
            nl.add_multicast_route(l.index).await?;
        }
        Ok(want)
    });
    if result.is_err() {
        if let Some(i) = created {
            let _ = host.delete_link(i).await;
        }
    }
    result
}

/// When the gratuitous ARPs go out, each delay after the one before.
const GARP_SCHEDULE: [std::time::Duration; 3] = [
    std::time::Duration::ZERO,
    std::time::Duration::from_millis(20),
    std::time::Duration::from_millis(80),
];

/// How long an attach waits for the container's interface to get carrier.
const CARRIER_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// Polls until the link has carrier, or [`CARRIER_WAIT`] has passed (the gratuitous ARP is
/// then sent anyway: better late than lost for certain).
async fn wait_for_carrier(nl: &Netdev, index: u32) {
    let deadline = tokio::time::Instant::now() + CARRIER_WAIT;
    loop {
        if let Ok(Some(l)) = nl.link_by_index(index).await {
            if l.carrier {
                return;
            }
        }
        if tokio::time::Instant::now() >= deadline {
            tracing::info!("{CONTAINER_IF} has no carrier after {CARRIER_WAIT:?}");
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    }
}

/// How long duplicate address detection waits for an answer.
const PROBE_WAIT: std::time::Duration = std::time::Duration::from_millis(250);

/// An ARP probe (RFC 5227: sender IP 0.0.0.0) for `ip`, from `mac`.
fn arp_probe(mac: [u8; 6], ip: Ipv4Addr) -> [u8; 42] {
    let mut f = [0u8; 42];
    f[0..6].copy_from_slice(&[0xff; 6]);
    f[6..12].copy_from_slice(&mac);
    f[12..14].copy_from_slice(&[0x08, 0x06]);
    f[14..22].copy_from_slice(&[0, 1, 8, 0, 6, 4, 0, 1]);
    f[22..28].copy_from_slice(&mac);
    // sender IP stays 0.0.0.0, target MAC zero
    f[38..42].copy_from_slice(&ip.octets());
    f
}

/// Duplicate address detection across the whole weave network: probes each address from the
/// bridge (the probe floods to local ports, sleeve peers and fastdp peers) and returns the
/// first one that someone answers for.
async fn probe_in_use(
    bridge: u32,
    bridge_mac: [u8; 6],
    addrs: &[Ipv4Addr],
) -> Result<Option<(Ipv4Addr, [u8; 6])>, AttachError> {
    if addrs.is_empty() {
        return Ok(None);
    }
    let sock = weft_netdev::PacketSocket::bind(bridge, weft_netdev::ETH_P_ARP)?;
    for a in addrs {
        let _ = sock.try_send(&arp_probe(bridge_mac, *a));
    }
    let mut buf = [0u8; 128];
    let deadline = tokio::time::Instant::now() + PROBE_WAIT;
    loop {
        let Ok(Ok(n)) = tokio::time::timeout_at(deadline, sock.recv(&mut buf)).await else {
            return Ok(None);
        };
        let Some(f) = buf.get(..n) else { continue };
        // An ARP reply (opcode 2) whose sender IP is one we probed.
        if f.len() >= 42 && f[12..14] == [0x08, 0x06] && f[20..22] == [0, 2] {
            let sender = Ipv4Addr::new(f[28], f[29], f[30], f[31]);
            if addrs.contains(&sender) {
                let mut mac = [0u8; 6];
                mac.copy_from_slice(&f[22..28]);
                return Ok(Some((sender, mac)));
            }
        }
    }
}

/// `weft detach`: removes these addresses (all when `cidrs` is empty); when none is left the
/// interface goes too. Returns the addresses removed.
pub fn detach(c: &Container, cidrs: &[Cidr]) -> Result<Vec<Cidr>, AttachError> {
    let ns = c.open()?;
    let want = cidrs.to_vec();
    let id = c.id();
    in_container(&ns, move |nl| async move {
        let l = nl
            .link(CONTAINER_IF)
            .await?
            .ok_or(AttachError::NotAttached(id))?;
        let present = v4_addrs(&nl, l.index).await?;
        let targets: Vec<Cidr> = if want.is_empty() {
            present.clone()
        } else {
            want.iter()
                .filter(|c| present.contains(c))
                .copied()
                .collect()
        };
        for c in &targets {
            nl.del_address(l.index, IpAddr::V4(c.addr), c.prefix)
                .await?;
        }
        let left = v4_addrs(&nl, l.index).await?;
        if left.is_empty() {
            nl.delete_link(l.index).await?;
            // The detach has happened; rules left by a failed removal match only an `ethwe`
            // that no longer exists, and the next attach rewrites them.
            if let Err(e) = weft_fw::Nft::new().remove() {
                tracing::warn!("container multicast rules left in place: {e}");
            }
        } else {
            set_multicast_rules(&left)?;
        }
        Ok(targets)
    })
}

/// Weave's per-container multicast rules (spec §3.4) for the addresses the weave interface
/// has: multicast in through it only from those subnets. Runs `nft` in the calling thread's
/// namespace, so call it from inside the container's.
fn set_multicast_rules(cidrs: &[Cidr]) -> Result<(), AttachError> {
    let mut rs = weft_fw::ContainerRuleSet::new(weft_fw::IfName::new(CONTAINER_IF)?);
    for c in cidrs {
        rs = rs.with_subnet(weft_fw::Ipv4Cidr::new(c.addr, c.prefix)?);
    }
    weft_fw::Nft::new().apply_container(&rs)?;
    Ok(())
}

async fn v4_addrs(nl: &Netdev, index: u32) -> Result<Vec<Cidr>, AttachError> {
    Ok(nl
        .addresses(index)
        .await?
        .into_iter()
        .filter_map(|(a, p)| match a {
            IpAddr::V4(addr) => Some(Cidr { addr, prefix: p }),
            IpAddr::V6(_) => None,
        })
        .collect())
}

/// One line of `weft ps`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PsEntry {
    /// The id as given, cut to 12 characters.
    pub id: String,
    /// MAC of the weave interface.
    pub mac: [u8; 6],
    /// Its IPv4 addresses.
    pub cidrs: Vec<Cidr>,
}

impl std::fmt::Display for PsEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.id, weft_netdev::format_mac(&self.mac))?;
        for c in &self.cidrs {
            write!(f, " {c}")?;
        }
        Ok(())
    }
}

/// `weft ps`: the `weave:expose` line, then one line per given container that has a weave
/// interface (found by matching veth peer indexes against the bridge's ports).
pub async fn ps(host: &Netdev, containers: &[Container]) -> Result<Vec<PsEntry>, AttachError> {
    let bridge = host.link(BRIDGE).await?.ok_or(AttachError::NoBridge)?;
    let mut out = vec![PsEntry {
        id: "weave:expose".into(),
        mac: bridge.mac,
        cidrs: v4_addrs(host, bridge.index).await?,
    }];
    let ports: Vec<(u32, u32)> = host
        .links()
        .await?
        .into_iter()
        .filter(|l| l.master == Some(bridge.index) && l.kind.as_deref() == Some("veth"))
        .filter_map(|l| l.peer_index.map(|p| (l.index, p)))
        .collect();
    for c in containers {
        let Ok(ns) = c.open() else { continue };
        let ports = ports.clone();
        let found = in_container(&ns, move |nl| async move {
            let mut found = Vec::new();
            for l in nl.links().await? {
                if ports
                    .iter()
                    .any(|&(h, p)| p == l.index && l.peer_index == Some(h))
                {
                    found.push((l.mac, v4_addrs(&nl, l.index).await?));
                }
            }
            Ok(found)
        })?;
        let id: String = c.id().chars().take(12).collect();
        out.extend(found.into_iter().map(|(mac, cidrs)| PsEntry {
            id: id.clone(),
            mac,
            cidrs,
        }));
    }
    Ok(out)
}

/// Every named network namespace (the default container list of `weft ps`).
pub fn named_netns() -> Vec<Container> {
    let mut v: Vec<Container> = std::fs::read_dir("/run/netns")
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_cidrs_and_containers() {
        let c: Cidr = "ip:10.2.1.1/24".parse().unwrap();
        assert_eq!(c.to_string(), "10.2.1.1/24");
        for bad in [
            "10.2.1.1",
            "10.2.1.1/33",
            "net:10.0.0.0/8",
            "x/24",
            "10.2.1.1/",
        ] {
            assert!(bad.parse::<Cidr>().is_err(), "{bad}");
        }
        assert_eq!(
            Container::parse("netns:c1").unwrap(),
            Container::Netns("c1".into())
        );
        assert_eq!(Container::parse("pid:42").unwrap(), Container::Pid(42));
        for bad in ["netns:", "netns:../x", "pid:x", "web1"] {
            assert!(Container::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(veth_names("1234").0, "vethwepl1234");
        assert_ne!(veth_names("wt7ecdcc2"), veth_names("wt7ecdcc3"));
        assert_eq!(veth_names("a-very-long-namespace").0.len(), 15);
    }
}
