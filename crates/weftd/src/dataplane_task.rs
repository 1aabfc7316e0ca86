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

use std::net::Ipv4Addr;
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};
use weft_types::Ipv4Cidr;
use weft_wire::PeerName;

use crate::dataplane::{Dataplane, DataplaneError};
use crate::store::Store;

/// One piece of work for the data-plane task: from the mesh's events, or from the HTTP API
/// (which passes it through the mesh task as [`crate::driver::Command::Dataplane`]).
#[derive(Debug)]
pub enum Job {
    /// Program (or remove) a fastdp peer's heartbeat forwarding entry.
    FastdpPeer {
        /// The peer.
        peer: PeerName,
        /// Its underlay address.
        ip: Ipv4Addr,
        /// Add or remove.
        add: bool,
    },
    /// Start or stop flooding to a fastdp peer.
    FastdpFlood {
        /// The peer.
        peer: PeerName,
        /// Its underlay address.
        ip: Ipv4Addr,
        /// On or off.
        on: bool,
    },
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
pub(crate) fn spawn(
    mut dataplane: Dataplane,
    store: Arc<Store>,
) -> std::io::Result<mpsc::UnboundedSender<Job>> {
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

async fn run(dp: &mut Dataplane, store: &Store, job: Job) {
    match job {
        Job::FastdpPeer { peer, ip, add } => dp.fastdp_peer(peer, ip, add).await,
        Job::FastdpFlood { peer, ip, on } => dp.fastdp_flood(peer, ip, on).await,
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
