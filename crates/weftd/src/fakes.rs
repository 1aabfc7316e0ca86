//! In-memory stand-ins for the daemon's kernel seams, for unit tests: a TAP and a sleeve socket
//! that hand out what a test queued and keep what the data path wrote ([`crate::sleeve::io`]),
//! and a recorder for the data-plane task's netlink and nft calls that also models the bits of
//! kernel state those calls change ([`crate::kernel`]). Netlink and nft calls go to one log,
//! so a test sees their order.

use std::collections::{BTreeSet, VecDeque};
use std::io::{self, IoSlice};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use nix::errno::Errno;
use weft_fw::{FwError, RuleSet};
use weft_netdev::{FdbEntry, GroRecv, NetdevError};

use crate::kernel::{Firewall, Netlink};
use crate::sleeve::io::{SleeveSocket, SleeveTap};

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A TAP: frames queued with [`FakeTap::capture`] are read by the data path; frames it writes
/// are kept (without their `virtio_net_hdr`, if any, as [`FakeTap::injected`] documents).
#[derive(Clone, Default)]
pub(crate) struct FakeTap {
    inner: Arc<Mutex<TapState>>,
}

#[derive(Default)]
struct TapState {
    captured: VecDeque<Vec<u8>>,
    injected: Vec<Vec<u8>>,
}

impl FakeTap {
    /// Queues a frame as if a container had sent it to the bridge.
    pub(crate) fn capture(&self, frame: &[u8]) {
        lock(&self.inner).captured.push_back(frame.to_vec());
    }

    /// Takes the frames written so far, each whole as one write carried it.
    pub(crate) fn injected(&self) -> Vec<Vec<u8>> {
        std::mem::take(&mut lock(&self.inner).injected)
    }
}

impl SleeveTap for FakeTap {
    fn has_vnet_hdr(&self) -> bool {
        false
    }

    fn try_recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        let f = lock(&self.inner)
            .captured
            .pop_front()
            .ok_or(io::ErrorKind::WouldBlock)?;
        let n = f.len().min(buf.len());
        buf[..n].copy_from_slice(&f[..n]);
        Ok(n)
    }

    fn try_send(&self, frame: &[u8]) -> io::Result<usize> {
        lock(&self.inner).injected.push(frame.to_vec());
        Ok(frame.len())
    }

    fn try_send_parts(&self, parts: &[IoSlice<'_>]) -> io::Result<usize> {
        let whole: Vec<u8> = parts.iter().flat_map(|p| p.iter().copied()).collect();
        self.try_send(&whole)
    }
}

/// A sleeve socket: datagrams queued with [`FakeSocket::receive`] are read by the data path;
/// what it sends is kept, one entry per datagram (a GSO send is cut into its datagrams).
#[derive(Default)]
pub(crate) struct FakeSocket {
    inner: Mutex<SocketState>,
}

#[derive(Default)]
struct SocketState {
    received: VecDeque<(Vec<u8>, SocketAddr)>,
    sent: Vec<(SocketAddr, Vec<u8>)>,
    path_mtu: u32,
}

impl FakeSocket {
    /// A socket whose path MTU to every address is `path_mtu`.
    pub(crate) fn new(path_mtu: u32) -> Self {
        let s = Self::default();
        lock(&s.inner).path_mtu = path_mtu;
        s
    }

    /// Queues a datagram as if it arrived from `from`.
    pub(crate) fn receive(&self, datagram: &[u8], from: SocketAddr) {
        lock(&self.inner)
            .received
            .push_back((datagram.to_vec(), from));
    }

    /// Takes the datagrams sent so far, with their destinations.
    pub(crate) fn sent(&self) -> Vec<(SocketAddr, Vec<u8>)> {
        std::mem::take(&mut lock(&self.inner).sent)
    }
}

impl SleeveSocket for FakeSocket {
    fn try_recv_gro(&self, buf: &mut [u8], _cmsg: &mut Vec<u8>) -> io::Result<GroRecv> {
        let (d, from) = lock(&self.inner)
            .received
            .pop_front()
            .ok_or(io::ErrorKind::WouldBlock)?;
        let n = d.len().min(buf.len());
        buf[..n].copy_from_slice(&d[..n]);
        Ok((n, from, None))
    }

    fn send_to(&self, datagram: &[u8], to: SocketAddr) -> io::Result<usize> {
        lock(&self.inner).sent.push((to, datagram.to_vec()));
        Ok(datagram.len())
    }

    fn try_send_gso(&self, buf: &[u8], segment: usize, to: SocketAddr) -> io::Result<usize> {
        for d in buf.chunks(segment.max(1)) {
            self.send_to(d, to)?;
        }
        Ok(buf.len())
    }

    fn wait_writable(&self, _timeout: Duration) -> io::Result<bool> {
        Ok(true)
    }

    fn path_mtu(&self, _to: SocketAddr) -> Result<u32, NetdevError> {
        Ok(lock(&self.inner).path_mtu)
    }
}

/// One call the data-plane task made of the kernel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Call {
    FdbAppend {
        dev: u32,
        mac: [u8; 6],
        dst: Ipv4Addr,
    },
    FdbDel {
        dev: u32,
        mac: [u8; 6],
        dst: Ipv4Addr,
    },
    FdbDelMaster {
        dev: u32,
        mac: [u8; 6],
    },
    AddAddress {
        index: u32,
        addr: IpAddr,
        prefix: u8,
    },
    DelAddress {
        index: u32,
        addr: IpAddr,
        prefix: u8,
    },
    GratuitousArp {
        ifname: String,
        ip: Ipv4Addr,
    },
    /// The whole table applied, as its fastdp peers and exposed `(cidr, masquerade)`.
    NftApply {
        fastdp_peers: Vec<Ipv4Addr>,
        exposed: Vec<(String, bool)>,
    },
    NftSetFastdpPeer {
        ip: Ipv4Addr,
        member: bool,
    },
}

/// The kernel as the data-plane task sees it: links' forwarding entries and addresses, and
/// weft's nft table; every change is logged in [`KernelState::calls`].
#[derive(Clone, Default)]
pub(crate) struct FakeKernel {
    inner: Arc<Mutex<KernelState>>,
}

/// What [`FakeKernel`] holds.
#[derive(Default)]
pub(crate) struct KernelState {
    /// Every change asked for, in order.
    pub(crate) calls: Vec<Call>,
    /// Forwarding entries, per device.
    pub(crate) fdb: Vec<(u32, FdbEntry)>,
    /// Addresses, per link.
    pub(crate) addresses: Vec<(u32, IpAddr, u8)>,
    /// The installed fastdp peer set.
    pub(crate) fastdp_set: BTreeSet<Ipv4Addr>,
    /// The installed exposed CIDRs, `(cidr, masquerade)`.
    pub(crate) exposed: Vec<(String, bool)>,
    /// Whether nft refuses single set-element changes (as when the table was flushed).
    pub(crate) refuse_set_elements: bool,
}

impl FakeKernel {
    /// Reads or changes the state.
    pub(crate) fn state(&self) -> MutexGuard<'_, KernelState> {
        lock(&self.inner)
    }

    /// Takes the calls logged so far.
    pub(crate) fn calls(&self) -> Vec<Call> {
        std::mem::take(&mut self.state().calls)
    }
}

impl Netlink for FakeKernel {
    async fn fdb_append(&self, dev: u32, mac: [u8; 6], dst: Ipv4Addr) -> Result<(), NetdevError> {
        let mut s = self.state();
        s.calls.push(Call::FdbAppend { dev, mac, dst });
        let e = FdbEntry {
            mac,
            dst: Some(dst),
            master: false,
        };
        if !s.fdb.contains(&(dev, e)) {
            s.fdb.push((dev, e));
        }
        Ok(())
    }

    async fn fdb_del(&self, dev: u32, mac: [u8; 6], dst: Ipv4Addr) -> Result<(), NetdevError> {
        let mut s = self.state();
        s.calls.push(Call::FdbDel { dev, mac, dst });
        let before = s.fdb.len();
        s.fdb
            .retain(|(d, e)| !(*d == dev && !e.master && e.mac == mac && e.dst == Some(dst)));
        if s.fdb.len() == before {
            return Err(NetdevError::os("fdb del", Errno::ENOENT));
        }
        Ok(())
    }

    async fn fdb_del_master(&self, dev: u32, mac: [u8; 6]) -> Result<(), NetdevError> {
        let mut s = self.state();
        s.calls.push(Call::FdbDelMaster { dev, mac });
        s.fdb
            .retain(|(d, e)| !(*d == dev && e.master && e.mac == mac));
        Ok(())
    }

    async fn fdb_entries(&self, dev: u32) -> Result<Vec<FdbEntry>, NetdevError> {
        let s = self.state();
        Ok(s.fdb
            .iter()
            .filter(|(d, _)| *d == dev)
            .map(|(_, e)| *e)
            .collect())
    }

    async fn add_address(&self, index: u32, addr: IpAddr, prefix: u8) -> Result<bool, NetdevError> {
        let mut s = self.state();
        s.calls.push(Call::AddAddress {
            index,
            addr,
            prefix,
        });
        let a = (index, addr, prefix);
        let new = !s.addresses.contains(&a);
        if new {
            s.addresses.push(a);
        }
        Ok(new)
    }

    async fn del_address(&self, index: u32, addr: IpAddr, prefix: u8) -> Result<bool, NetdevError> {
        let mut s = self.state();
        s.calls.push(Call::DelAddress {
            index,
            addr,
            prefix,
        });
        let before = s.addresses.len();
        s.addresses.retain(|a| *a != (index, addr, prefix));
        Ok(s.addresses.len() != before)
    }

    async fn addresses(&self, index: u32) -> Result<Vec<(IpAddr, u8)>, NetdevError> {
        let s = self.state();
        Ok(s.addresses
            .iter()
            .filter(|a| a.0 == index)
            .map(|a| (a.1, a.2))
            .collect())
    }

    fn gratuitous_arp(&self, ifname: &str, ip: Ipv4Addr) -> Result<(), NetdevError> {
        self.state().calls.push(Call::GratuitousArp {
            ifname: ifname.to_owned(),
            ip,
        });
        Ok(())
    }
}

impl Firewall for FakeKernel {
    fn apply(&self, rules: &RuleSet) -> Result<(), FwError> {
        let mut s = self.state();
        let fastdp_peers: Vec<Ipv4Addr> = rules.fastdp_peers().collect();
        let exposed: Vec<(String, bool)> = rules
            .exposed()
            .iter()
            .map(|e| (e.cidr.to_string(), e.masquerade))
            .collect();
        s.calls.push(Call::NftApply {
            fastdp_peers: fastdp_peers.clone(),
            exposed: exposed.clone(),
        });
        s.fastdp_set = fastdp_peers.into_iter().collect();
        s.exposed = exposed;
        Ok(())
    }

    fn set_fastdp_peer(&self, ip: Ipv4Addr, member: bool) -> Result<(), FwError> {
        let mut s = self.state();
        s.calls.push(Call::NftSetFastdpPeer { ip, member });
        if s.refuse_set_elements {
            return Err(FwError::Rejected("No such file or directory".into()));
        }
        if member {
            s.fastdp_set.insert(ip);
        } else {
            s.fastdp_set.remove(&ip);
        }
        Ok(())
    }
}
