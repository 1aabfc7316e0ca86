//! The kernel work the data-plane task ([`crate::dataplane_task`]) does once the devices are
//! set up, behind two small traits: [`Netlink`] (the VXLAN device's forwarding entries, the
//! bridge's addresses, an ARP announcement) and [`Firewall`] (weft's nft table). The real
//! implementations are weft-netdev's [`Netdev`] and weft-fw's [`Nft`]; unit tests put
//! recorders in their place (`crate::fakes`), so what a sequence of jobs does to the kernel is
//! checked without one. Setting the devices up and tearing them down stay on [`Netdev`]: they
//! run once, and the privileged tests and the end-to-end suite cover them.
//!
//! The traits are not object-safe (`async fn`) and need not be: [`crate::dataplane::Dataplane`]
//! is generic over them, with the real ones as defaults.

use std::net::{IpAddr, Ipv4Addr};

use weft_fw::{FwError, Nft, RuleSet};
use weft_netdev::{FdbEntry, Netdev, NetdevError};

/// The netlink calls of the data-plane task; each is the [`Netdev`] method of the same name.
pub(crate) trait Netlink {
    /// Appends a forwarding entry `mac` → `dst` to VXLAN device `dev`.
    async fn fdb_append(&self, dev: u32, mac: [u8; 6], dst: Ipv4Addr) -> Result<(), NetdevError>;
    /// Deletes the entry `mac` → `dst` of device `dev`.
    async fn fdb_del(&self, dev: u32, mac: [u8; 6], dst: Ipv4Addr) -> Result<(), NetdevError>;
    /// Deletes the bridge's (`master`) entry for `mac` on port `dev`.
    async fn fdb_del_master(&self, dev: u32, mac: [u8; 6]) -> Result<(), NetdevError>;
    /// The forwarding entries of device `dev`, its own and the bridge's.
    async fn fdb_entries(&self, dev: u32) -> Result<Vec<FdbEntry>, NetdevError>;
    /// Adds an address to link `index`; `Ok(false)` if it was there already.
    async fn add_address(&self, index: u32, addr: IpAddr, prefix: u8) -> Result<bool, NetdevError>;
    /// Removes an address from link `index`; `Ok(false)` if it was not there.
    async fn del_address(&self, index: u32, addr: IpAddr, prefix: u8) -> Result<bool, NetdevError>;
    /// The addresses of link `index`.
    async fn addresses(&self, index: u32) -> Result<Vec<(IpAddr, u8)>, NetdevError>;
    /// Announces `ip` on interface `ifname` ([`weft_netdev::send_gratuitous_arp`]; not
    /// netlink, but the same kind of one-off kernel call).
    fn gratuitous_arp(&self, ifname: &str, ip: Ipv4Addr) -> Result<(), NetdevError>;
}

/// How weft's nft table is changed; each is the [`Nft`] method of the same name. Cloned onto
/// a blocking thread, since running `nft` blocks.
pub(crate) trait Firewall: Clone + Send + 'static {
    /// Replaces weft's table with `rules`, in one transaction.
    fn apply(&self, rules: &RuleSet) -> Result<(), FwError>;
    /// Adds `ip` to (or deletes it from) the fastdp peer set, leaving the rest alone.
    fn set_fastdp_peer(&self, ip: Ipv4Addr, member: bool) -> Result<(), FwError>;
}

impl Netlink for Netdev {
    async fn fdb_append(&self, dev: u32, mac: [u8; 6], dst: Ipv4Addr) -> Result<(), NetdevError> {
        Self::fdb_append(self, dev, mac, dst).await
    }

    async fn fdb_del(&self, dev: u32, mac: [u8; 6], dst: Ipv4Addr) -> Result<(), NetdevError> {
        Self::fdb_del(self, dev, mac, dst).await
    }

    async fn fdb_del_master(&self, dev: u32, mac: [u8; 6]) -> Result<(), NetdevError> {
        Self::fdb_del_master(self, dev, mac).await
    }

    async fn fdb_entries(&self, dev: u32) -> Result<Vec<FdbEntry>, NetdevError> {
        Self::fdb_entries(self, dev).await
    }

    async fn add_address(&self, index: u32, addr: IpAddr, prefix: u8) -> Result<bool, NetdevError> {
        Self::add_address(self, index, addr, prefix).await
    }

    async fn del_address(&self, index: u32, addr: IpAddr, prefix: u8) -> Result<bool, NetdevError> {
        Self::del_address(self, index, addr, prefix).await
    }

    async fn addresses(&self, index: u32) -> Result<Vec<(IpAddr, u8)>, NetdevError> {
        Self::addresses(self, index).await
    }

    fn gratuitous_arp(&self, ifname: &str, ip: Ipv4Addr) -> Result<(), NetdevError> {
        weft_netdev::send_gratuitous_arp(ifname, ip)
    }
}

impl Firewall for Nft {
    fn apply(&self, rules: &RuleSet) -> Result<(), FwError> {
        Self::apply(self, rules)
    }

    fn set_fastdp_peer(&self, ip: Ipv4Addr, member: bool) -> Result<(), FwError> {
        Self::set_fastdp_peer(self, ip, member)
    }
}
