//! The rule-set model: the plain inputs that determine weft's firewall and NAT rules.
//!
//! Everything here is pure data with validation at construction, so rendering
//! ([`crate::render`]) cannot fail and an invalid name never reaches `nft`.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::str::FromStr;

use weft_types::Ipv4Cidr;

use crate::FwError;

/// Weave's default bridge name.
const DEFAULT_BRIDGE: &str = "weave";
/// Router control (HTTP API) address, `127.0.0.1:6784`.
const DEFAULT_CONTROL: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::LOCALHOST, 6784);
/// Router status and metrics address, `127.0.0.1:6782`.
const DEFAULT_STATUS: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::LOCALHOST, 6782);
/// Mesh port: TCP control connections and UDP sleeve.
const DEFAULT_MESH_PORT: u16 = 6783;
/// Fastdp VXLAN port (UDP).
const DEFAULT_VXLAN_PORT: u16 = 6784;
/// Linux `IFNAMSIZ` minus the terminating NUL.
const MAX_IFNAME: usize = 15;

/// A network interface name, valid as an exact match in nft (`iifname "weave"`).
///
/// Besides the kernel's rules (1-15 bytes, no `/`, no whitespace) it rejects `*` and `\`,
/// which nft would read as a wildcard or escape in an interface-name match.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct IfName(String);

impl IfName {
    /// Validates `name` as an interface name.
    pub fn new(name: &str) -> Result<Self, FwError> {
        let ok = !name.is_empty()
            && name.len() <= MAX_IFNAME
            && name != "."
            && name != ".."
            && !name
                .chars()
                .any(|c| c == '/' || c == '*' || c == '\\' || c.is_whitespace() || c == '\0');
        if ok {
            Ok(Self(name.to_owned()))
        } else {
            Err(FwError::InvalidInterface(name.to_owned()))
        }
    }

    /// The name as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for IfName {
    type Err = FwError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

impl fmt::Display for IfName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The Docker bridge weft guards the weave bridge and the router from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DockerBridge {
    /// Interface name, `docker0` by default in Weave (`$DOCKER_BRIDGE`).
    pub name: IfName,
    /// Its IPv4 address. Without it the rules that drop container access to the router's ports
    /// on that address are left out (Weave matches `--dst <docker0 IP>`; matching every
    /// destination instead would be broader than Weave).
    pub addr: Option<Ipv4Addr>,
}

/// One exposed CIDR (`weave expose`), in the order it was exposed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Exposed {
    /// The exposed network, host bits cleared (`10.32.0.1/12`, an exposed bridge address as
    /// `weave expose` passes it, is `10.32.0.0/12`, which is also what iptables matched).
    pub cidr: Ipv4Cidr,
    /// Whether traffic into and out of it is masqueraded (`false` for
    /// `weave expose --without-masquerade`).
    pub masquerade: bool,
}

/// Everything that determines weft's rules; render it with [`RuleSet::to_nft_json`].
///
/// Start from [`RuleSet::new`] (Weave's defaults: bridge `weave`, no Docker bridge, control
/// `127.0.0.1:6784`, status `127.0.0.1:6782`, mesh port 6783, VXLAN port 6784, nothing exposed,
/// no fastdp peers) and adjust.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuleSet {
    pub(crate) bridge: IfName,
    pub(crate) docker: Option<DockerBridge>,
    pub(crate) control: SocketAddrV4,
    pub(crate) status: Option<SocketAddrV4>,
    pub(crate) mesh_port: u16,
    pub(crate) vxlan_port: u16,
    pub(crate) exposed: Vec<Exposed>,
    /// Underlay addresses VXLAN frames are accepted from, each with the number of fastdp peers
    /// (connections) that use it: an address leaves the set only when its last user goes.
    pub(crate) fastdp_peers: BTreeMap<Ipv4Addr, u32>,
    /// The weave bridge's own MAC, when known: frames to any other MAC are bridged between
    /// weave ports, not routed, and are left untracked.
    pub(crate) bridge_mac: Option<[u8; 6]>,
}

impl Default for RuleSet {
    fn default() -> Self {
        Self {
            bridge: IfName(DEFAULT_BRIDGE.to_owned()),
            docker: None,
            control: DEFAULT_CONTROL,
            status: Some(DEFAULT_STATUS),
            mesh_port: DEFAULT_MESH_PORT,
            vxlan_port: DEFAULT_VXLAN_PORT,
            exposed: Vec::new(),
            fastdp_peers: BTreeMap::new(),
            bridge_mac: None,
        }
    }
}

impl RuleSet {
    /// Weave's defaults with the given weave bridge name.
    pub fn new(bridge: IfName) -> Self {
        Self {
            bridge,
            ..Self::default()
        }
    }

    /// Sets the Docker bridge (`docker0`) and, if known, its IPv4 address.
    ///
    /// A Docker bridge with the same name as the weave bridge is ignored, as in Weave, where
    /// the `docker0 → weave` drop is only installed when the two differ.
    #[must_use]
    pub fn with_docker_bridge(mut self, name: IfName, addr: Option<Ipv4Addr>) -> Self {
        self.docker = Some(DockerBridge { name, addr });
        self
    }

    /// Sets the router's control (HTTP API) address. The rule dropping non-local access to it
    /// is only rendered when the address is a loopback one, as it is by default: an API bound
    /// elsewhere was exposed on purpose.
    #[must_use]
    pub fn with_control_addr(mut self, addr: SocketAddrV4) -> Self {
        self.control = addr;
        self
    }

    /// Sets the router's status and metrics address (`None`: no status listener). Like the
    /// control port it is guarded against non-local access when bound to a loopback address,
    /// and against containers on the Docker bridge.
    #[must_use]
    pub fn with_status_addr(mut self, addr: Option<SocketAddrV4>) -> Self {
        self.status = addr;
        self
    }

    /// Sets the mesh port (TCP and UDP, default 6783).
    #[must_use]
    pub fn with_mesh_port(mut self, port: u16) -> Self {
        self.mesh_port = port;
        self
    }

    /// Sets the weave bridge's MAC: frames bridged between weave ports (addressed to any other
    /// MAC) then skip connection tracking.
    #[must_use]
    pub fn with_bridge_mac(mut self, mac: [u8; 6]) -> Self {
        self.bridge_mac = Some(mac);
        self
    }

    /// Sets the fastdp VXLAN port (UDP, default 6784).
    #[must_use]
    pub fn with_vxlan_port(mut self, port: u16) -> Self {
        self.vxlan_port = port;
        self
    }

    /// Exposes `cidr`'s subnet, appending it, or updates its `masquerade` choice in place if
    /// it is already exposed. Returns whether the rule set changed.
    pub fn expose(&mut self, cidr: Ipv4Cidr, masquerade: bool) -> bool {
        let cidr = cidr.network();
        if let Some(e) = self.exposed.iter_mut().find(|e| e.cidr == cidr) {
            let changed = e.masquerade != masquerade;
            e.masquerade = masquerade;
            return changed;
        }
        self.exposed.push(Exposed { cidr, masquerade });
        true
    }

    /// Hides `cidr`'s subnet (`weave hide`). Returns whether it had been exposed.
    pub fn hide(&mut self, cidr: Ipv4Cidr) -> bool {
        let cidr = cidr.network();
        let before = self.exposed.len();
        self.exposed.retain(|e| e.cidr != cidr);
        self.exposed.len() != before
    }

    /// Counts one more fastdp peer (connection) at underlay address `ip`, whose VXLAN frames
    /// are then accepted. Returns whether `ip` joined the set (it was not there before): only
    /// then does the installed table need the element, see [`crate::Nft::set_fastdp_peer`].
    pub fn add_fastdp_peer(&mut self, ip: Ipv4Addr) -> bool {
        let users = self.fastdp_peers.entry(ip).or_insert(0);
        *users = users.saturating_add(1);
        *users == 1
    }

    /// Counts one fastdp peer (connection) at `ip` less. Returns whether `ip` left the set
    /// because no other fastdp peer uses it; removing an address that is not counted is a
    /// no-op returning `false`.
    pub fn remove_fastdp_peer(&mut self, ip: Ipv4Addr) -> bool {
        let Some(users) = self.fastdp_peers.get_mut(&ip) else {
            return false;
        };
        *users = users.saturating_sub(1);
        if *users == 0 {
            self.fastdp_peers.remove(&ip);
            return true;
        }
        false
    }

    /// The addresses VXLAN frames are accepted from, in address order.
    pub fn fastdp_peers(&self) -> impl Iterator<Item = Ipv4Addr> + '_ {
        self.fastdp_peers.keys().copied()
    }

    /// The weave bridge name.
    pub fn bridge(&self) -> &IfName {
        &self.bridge
    }

    /// The Docker bridge, if one is guarded against.
    pub fn docker_bridge(&self) -> Option<&DockerBridge> {
        self.docker.as_ref()
    }

    /// The exposed CIDRs in exposure order.
    pub fn exposed(&self) -> &[Exposed] {
        &self.exposed
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // In tests a panic is the failed assertion.
mod tests {
    use super::*;

    #[test]
    fn ifname_validation() {
        for good in ["weave", "docker0", "a", "br-0123456789ab", "vethwe.bridge"] {
            assert!(IfName::new(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "weave*",
            "a/b",
            "a b",
            "0123456789abcdef",
            ".",
            "..",
            "a\\b",
            "x\0",
        ] {
            assert!(
                matches!(IfName::new(bad), Err(FwError::InvalidInterface(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn expose_hide_bookkeeping() {
        let mut rs = RuleSet::default();
        let a: Ipv4Cidr = "10.32.0.1/12".parse().unwrap();
        let b: Ipv4Cidr = "10.2.1.0/24".parse().unwrap();
        assert!(rs.expose(a, true));
        assert!(!rs.expose(a, true));
        assert!(rs.expose(b, false));
        assert!(rs.expose(a, false));
        assert!(
            !rs.expose("10.47.0.9/12".parse().unwrap(), false),
            "another address of an exposed subnet"
        );
        assert_eq!(
            rs.exposed()
                .iter()
                .map(|e| e.cidr.to_string())
                .collect::<Vec<_>>(),
            ["10.32.0.0/12", "10.2.1.0/24"]
        );
        assert!(rs.hide(a));
        assert!(!rs.hide(a));
        assert_eq!(rs.exposed().len(), 1);
    }

    #[test]
    fn fastdp_peers_are_counted_per_address() {
        let mut rs = RuleSet::default();
        let a = Ipv4Addr::new(10, 0, 0, 1);
        let b = Ipv4Addr::new(10, 0, 0, 2);
        assert!(!rs.remove_fastdp_peer(a), "never added");
        assert!(rs.add_fastdp_peer(a), "first user adds the element");
        assert!(
            !rs.add_fastdp_peer(a),
            "second peer behind the same address"
        );
        assert!(rs.add_fastdp_peer(b));
        assert_eq!(rs.fastdp_peers().collect::<Vec<_>>(), [a, b]);
        assert!(!rs.remove_fastdp_peer(a), "another peer still uses it");
        assert_eq!(rs.fastdp_peers().collect::<Vec<_>>(), [a, b]);
        assert!(rs.remove_fastdp_peer(a), "last user gone");
        assert!(!rs.remove_fastdp_peer(a));
        assert_eq!(rs.fastdp_peers().collect::<Vec<_>>(), [b]);
        assert!(rs.add_fastdp_peer(a), "back again");
    }
}
