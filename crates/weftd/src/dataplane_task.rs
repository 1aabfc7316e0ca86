//! The data-plane task: netlink, nftables and state-database work, off the mesh loop.
//!
//! The mesh task must never wait on I/O, or heartbeats and gossip stall behind a slow netlink
//! dump, an `nft` run or a database commit. It hands each such job to this task as a [`Job`],
//! in order, and goes on; jobs that answer (the HTTP API's expose/hide) carry a reply channel.
//! The task runs on a thread of its own with its own small runtime, because some of that work
//! blocks (running `nft`, fsync) and the router's runtime has one thread.
//!
//! The queue is unbounded on purpose: its jobs come from the mesh's connection changes, which
//! the accept throttle and the connection maker already bound, and from the HTTP API, which
//! waits for each answer. Dropping one would leave the kernel out of step with the mesh.
//!
//! The task is generic over how the data plane reaches the kernel ([`crate::kernel`]); the
//! tests below run it over recorders and check what each sequence of jobs asked for.

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};
use weft_core::mesh::FastdpChange;
use weft_types::Ipv4Cidr;

use crate::dataplane::{Dataplane, DataplaneError};
use crate::kernel::{Firewall, Netlink};
use crate::store::Store;

/// One piece of work for the data-plane task: from the mesh's events, or from the HTTP API
/// (which passes it through the mesh task as [`crate::driver::Command::Dataplane`]).
#[derive(Debug)]
pub enum Job {
    /// What the mesh asked of the VXLAN device for a fastdp peer.
    Fastdp(FastdpChange),
    /// `weft expose`.
    Expose {
        /// The address.
        cidr: Ipv4Cidr,
        /// `--without-masquerade`.
        skip_nat: bool,
        /// Whether it worked.
        reply: oneshot::Sender<Result<(), DataplaneError>>,
    },
    /// `weft hide`.
    Hide(Ipv4Cidr, oneshot::Sender<Result<(), DataplaneError>>),
    /// What is exposed.
    Exposed(oneshot::Sender<Vec<Ipv4Cidr>>),
    /// Persist the direct targets.
    PersistTargets(Vec<String>),
}

/// Starts the task; it ends when every sender is gone.
pub(crate) fn spawn<N, F>(
    mut dataplane: Dataplane<N, F>,
    store: Arc<Store>,
) -> std::io::Result<mpsc::UnboundedSender<Job>>
where
    N: Netlink + Send + 'static,
    F: Firewall,
{
    let (tx, mut rx) = mpsc::unbounded_channel();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    std::thread::Builder::new()
        .name("weft-dataplane".into())
        .spawn(move || {
            rt.block_on(async move {
                while let Some(job) = rx.recv().await {
                    run(&mut dataplane, &store, job).await;
                }
            });
        })?;
    Ok(tx)
}

async fn run<N: Netlink, F: Firewall>(dp: &mut Dataplane<N, F>, store: &Store, job: Job) {
    match job {
        Job::Fastdp(FastdpChange::Peer { peer, ip, add }) => dp.fastdp_peer(peer, ip, add).await,
        Job::Fastdp(FastdpChange::Flood { peer, ip, on }) => dp.fastdp_flood(peer, ip, on).await,
        Job::Expose {
            cidr,
            skip_nat,
            reply,
        } => {
            let _ = reply.send(dp.expose(cidr, skip_nat).await);
        }
        Job::Hide(cidr, reply) => {
            let _ = reply.send(dp.hide(cidr).await);
        }
        Job::Exposed(reply) => {
            let _ = reply.send(dp.exposed().await.unwrap_or_default());
        }
        Job::PersistTargets(t) => {
            if let Err(e) = store.set_direct_peers(&t) {
                tracing::warn!("cannot persist targets: {e}");
            }
        }
    }
}

/// The task over a recorder of netlink and nft calls: each sequence of jobs asks the kernel
/// for exactly what it should, in order.
#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr};
    use std::path::PathBuf;
    use std::sync::Arc;

    use tokio::sync::{mpsc, oneshot};
    use weft_core::mesh::FastdpChange;
    use weft_netdev::FdbEntry;
    use weft_wire::PeerName;

    use super::{spawn, Job};
    use weft_attach::BRIDGE;
    use weft_types::Ipv4Cidr;

    use crate::dataplane::Dataplane;
    use crate::fakes::{Call, FakeKernel};
    use crate::store::{Check, Store};

    const BRIDGE_INDEX: u32 = 3;
    const VXLAN: u32 = 7;
    const P: PeerName = PeerName(0x0a00_0000_0002);
    const Q: PeerName = PeerName(0x0a00_0000_0003);
    const IP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 2);
    const OTHER_IP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 9);
    const ZERO: [u8; 6] = [0; 6];
    const EXPOSED_ADDR: Ipv4Addr = Ipv4Addr::new(10, 2, 1, 254);

    fn exposed_cidr() -> Ipv4Cidr {
        Ipv4Cidr::new(EXPOSED_ADDR, 24).unwrap()
    }

    struct Task {
        jobs: mpsc::UnboundedSender<Job>,
        kernel: FakeKernel,
        store: Arc<Store>,
        dir: PathBuf,
    }

    impl Drop for Task {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    impl Task {
        /// The task over a fake kernel, with a VXLAN device when `fastdp`.
        fn start(tag: &str, fastdp: bool) -> Self {
            let dir = std::env::temp_dir()
                .join(format!("weft-dataplane-task-{tag}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            // A new database is created, not checked: the check never runs.
            let store = Arc::new(Store::open(&dir, &Check::command("/bin/false", &[])).unwrap());
            let kernel = FakeKernel::default();
            let vxlan = fastdp.then_some(VXLAN);
            let dp = Dataplane::over(kernel.clone(), kernel.clone(), BRIDGE_INDEX, vxlan);
            let jobs = spawn(dp, store.clone()).unwrap();
            Self {
                jobs,
                kernel,
                store,
                dir,
            }
        }

        /// Hands the task `jobs` and waits until it has done them (it works in order, and
        /// the last job, a question, is answered only after the others).
        fn run(&self, jobs: impl IntoIterator<Item = Job>) -> Vec<Ipv4Cidr> {
            for j in jobs {
                self.jobs.send(j).unwrap();
            }
            let (tx, rx) = oneshot::channel();
            self.jobs.send(Job::Exposed(tx)).unwrap();
            rx.blocking_recv().unwrap()
        }

        fn fdb(&self) -> Vec<(u32, FdbEntry)> {
            self.kernel.state().fdb.clone()
        }

        fn fastdp_set(&self) -> Vec<Ipv4Addr> {
            self.kernel.state().fastdp_set.iter().copied().collect()
        }
    }

    fn peer(peer: PeerName, ip: Ipv4Addr, add: bool) -> Job {
        Job::Fastdp(FastdpChange::Peer { peer, ip, add })
    }

    fn flood(peer: PeerName, ip: Ipv4Addr, on: bool) -> Job {
        Job::Fastdp(FastdpChange::Flood { peer, ip, on })
    }

    fn entry(mac: [u8; 6], dst: Option<Ipv4Addr>, master: bool) -> FdbEntry {
        FdbEntry { mac, dst, master }
    }

    fn set(ip: Ipv4Addr, member: bool) -> Call {
        Call::NftSetFastdpPeer { ip, member }
    }

    #[test]
    fn fastdp_peer_gets_an_fdb_entry_and_a_set_element_and_loses_both() {
        let t = Task::start("peer", true);
        t.run([peer(P, IP, true)]);
        // Its frames are accepted before ours are sent to it.
        let append = Call::FdbAppend {
            dev: VXLAN,
            mac: P.to_bytes(),
            dst: IP,
        };
        assert_eq!(t.kernel.calls(), vec![set(IP, true), append]);
        assert_eq!(t.fdb(), vec![(VXLAN, entry(P.to_bytes(), Some(IP), false))]);
        assert_eq!(t.fastdp_set(), vec![IP]);

        t.run([peer(P, IP, false)]);
        let del = Call::FdbDel {
            dev: VXLAN,
            mac: P.to_bytes(),
            dst: IP,
        };
        assert_eq!(t.kernel.calls(), vec![del, set(IP, false)]);
        assert!(t.fdb().is_empty());
        assert!(t.fastdp_set().is_empty());
    }

    #[test]
    fn shared_address_leaves_the_set_with_its_last_peer() {
        let t = Task::start("shared", true);
        t.run([peer(P, IP, true), peer(Q, IP, true), peer(P, IP, false)]);
        let calls = t.kernel.calls();
        assert_eq!(
            calls
                .iter()
                .filter(|c| matches!(c, Call::NftSetFastdpPeer { .. }))
                .count(),
            1
        );
        assert_eq!(t.fastdp_set(), vec![IP]);
        assert_eq!(t.fdb(), vec![(VXLAN, entry(Q.to_bytes(), Some(IP), false))]);
        t.run([peer(Q, IP, false)]);
        assert_eq!(t.kernel.calls().last(), Some(&set(IP, false)));
        assert!(t.fastdp_set().is_empty());
        assert!(t.fdb().is_empty());
    }

    #[test]
    fn flooding_stops_and_what_was_learnt_behind_the_peer_is_forgotten() {
        let t = Task::start("flood", true);
        t.run([peer(P, IP, true), flood(P, IP, true)]);
        t.kernel.calls();
        let learnt = [2, 0, 0, 0, 0, 0x0b];
        let elsewhere = [2, 0, 0, 0, 0, 0x0c];
        t.kernel.state().fdb.extend([
            (VXLAN, entry(learnt, Some(IP), false)),
            (VXLAN, entry(learnt, None, true)),
            (VXLAN, entry(elsewhere, Some(OTHER_IP), false)),
        ]);
        t.run([flood(P, IP, false)]);
        assert_eq!(
            t.kernel.calls(),
            vec![
                Call::FdbDel {
                    dev: VXLAN,
                    mac: ZERO,
                    dst: IP
                },
                Call::FdbDel {
                    dev: VXLAN,
                    mac: learnt,
                    dst: IP
                },
                Call::FdbDelMaster {
                    dev: VXLAN,
                    mac: learnt
                },
            ]
        );
        // The peer's own heartbeat entry stays, with what was learnt behind another peer.
        assert_eq!(
            t.fdb(),
            vec![
                (VXLAN, entry(P.to_bytes(), Some(IP), false)),
                (VXLAN, entry(elsewhere, Some(OTHER_IP), false)),
            ]
        );
    }

    #[test]
    fn refused_set_element_applies_the_whole_table() {
        let t = Task::start("refused", true);
        t.kernel.state().refuse_set_elements = true;
        t.run([peer(P, IP, true)]);
        let calls = t.kernel.calls();
        assert_eq!(
            calls[..2],
            [
                set(IP, true),
                Call::NftApply {
                    fastdp_peers: vec![IP],
                    exposed: vec![],
                },
            ]
        );
        assert_eq!(t.fastdp_set(), vec![IP]);
    }

    #[test]
    fn without_fastdp_peers_change_nothing() {
        let t = Task::start("nofastdp", false);
        t.run([peer(P, IP, true), flood(P, IP, true), flood(P, IP, false)]);
        assert_eq!(t.kernel.calls(), vec![]);
    }

    #[test]
    fn expose_and_hide() {
        let t = Task::start("expose", true);
        let cidr = exposed_cidr();
        let (tx, rx) = oneshot::channel();
        let exposed = t.run([Job::Expose {
            cidr,
            skip_nat: false,
            reply: tx,
        }]);
        assert!(rx.blocking_recv().unwrap().is_ok());
        assert_eq!(exposed, vec![cidr]);
        let addr = IpAddr::V4(cidr.addr());
        assert_eq!(
            t.kernel.calls(),
            vec![
                Call::AddAddress {
                    index: BRIDGE_INDEX,
                    addr,
                    prefix: 24
                },
                Call::GratuitousArp {
                    ifname: BRIDGE.to_owned(),
                    ip: cidr.addr()
                },
                Call::NftApply {
                    fastdp_peers: vec![],
                    exposed: vec![("10.2.1.0/24".to_owned(), true)],
                },
            ]
        );

        let (tx, rx) = oneshot::channel();
        let exposed = t.run([Job::Hide(cidr, tx)]);
        assert!(rx.blocking_recv().unwrap().is_ok());
        assert_eq!(exposed, vec![]);
        assert_eq!(
            t.kernel.calls(),
            vec![
                Call::DelAddress {
                    index: BRIDGE_INDEX,
                    addr,
                    prefix: 24
                },
                Call::NftApply {
                    fastdp_peers: vec![],
                    exposed: vec![],
                },
            ]
        );
    }

    #[test]
    fn expose_without_masquerade() {
        let t = Task::start("nomasq", false);
        let cidr = exposed_cidr();
        let (tx, _rx) = oneshot::channel();
        t.run([Job::Expose {
            cidr,
            skip_nat: true,
            reply: tx,
        }]);
        assert_eq!(
            t.kernel.state().exposed,
            vec![("10.2.1.0/24".to_owned(), false)]
        );
    }

    #[test]
    fn targets_are_persisted() {
        let t = Task::start("targets", true);
        let targets = vec!["10.0.0.1".to_owned(), "host3".to_owned()];
        t.run([Job::PersistTargets(targets.clone())]);
        assert_eq!(t.store.direct_peers().unwrap(), targets);
        assert_eq!(t.kernel.calls(), vec![]);
    }
}
