//! weftDNS over UDP: a thread of its own answers queries from the latest snapshot of the zone
//! that the DNS task ([`super::task`]) publishes. A query then costs two system calls per
//! batch (`recvmmsg` waiting for the first datagram and taking up to 32, `sendmmsg` for the
//! answers) and no reactor turn, which measured about a fifth less CPU per query than the
//! same work in the task; the kernel's share of a query is most of its cost.
//!
//! The zone stays the task's: it alone changes it, and after a change it publishes a new
//! snapshot ([`Published`]), at most every [`PUBLISH_EVERY`], so that a burst of gossip costs
//! one copy, not one per message. Queries outside the domain are forwarded on the runtime,
//! at most [`upstream::MAX_IN_FLIGHT`] at once, as before.

use std::net::{SocketAddr, UdpSocket};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::SeedableRng;
use weft_core::dns::{server_failure, Action, Responder, Transport, Zone};
use weft_netdev::{try_send_many, MmsgBatch, MMSG_BATCH};

use super::upstream::{self, Limiter, Upstreams};

/// The longest a change of the zone waits before queries see it.
pub const PUBLISH_EVERY: Duration = Duration::from_millis(20);
/// The largest UDP query read; longer ones arrive cut and get FORMERR.
const QUERY_BUFFER: usize = 4096;

/// The zone as UDP queries see it: replaced whole by the DNS task after changes.
pub type Published = Arc<RwLock<Arc<Zone>>>;

/// The upstream servers, read from the resolv.conf by whichever side asks first.
pub type SharedUpstreams = Arc<Mutex<Upstreams>>;

/// The upstreams, even if a thread panicked holding them (they are only a cache of a file).
pub fn lock(u: &SharedUpstreams) -> std::sync::MutexGuard<'_, Upstreams> {
    u.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The current upstream servers.
pub fn servers(u: &SharedUpstreams) -> Vec<SocketAddr> {
    lock(u).servers(Instant::now()).to_vec()
}

/// What the UDP thread needs besides the socket.
pub struct Server {
    /// The zone snapshot.
    pub zone: Published,
    /// TTL and rules.
    pub responder: Responder,
    /// The upstream servers.
    pub upstreams: SharedUpstreams,
    /// How long each upstream server is given.
    pub fallback_timeout: Duration,
    /// Forwards in flight, shared with the TCP path.
    pub limiter: Limiter,
    /// Where forwards run.
    pub runtime: tokio::runtime::Handle,
}

/// Starts the UDP thread on `sock` (made blocking).
pub fn spawn(sock: UdpSocket, server: Server) -> std::io::Result<()> {
    sock.set_nonblocking(false)?;
    let reply = Arc::new(sock.try_clone()?);
    std::thread::Builder::new()
        .name("weft-dns-udp".into())
        .spawn(move || server.run(&sock, &reply))?;
    Ok(())
}

impl Server {
    fn run(mut self, sock: &UdpSocket, reply: &Arc<UdpSocket>) {
        let mut rng = StdRng::from_entropy();
        let mut batch = MmsgBatch::new(QUERY_BUFFER);
        let mut out: Vec<(Vec<u8>, SocketAddr)> = Vec::with_capacity(MMSG_BATCH);
        loop {
            let n = match batch.recv_wait(sock) {
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    tracing::warn!("[dns] udp receive: {e}");
                    std::thread::sleep(Duration::from_millis(100));
                    continue;
                }
            };
            let zone = Arc::clone(
                &self
                    .zone
                    .read()
                    .unwrap_or_else(std::sync::PoisonError::into_inner),
            );
            for i in 0..n {
                let Some((query, from)) = batch.datagram(i) else {
                    continue;
                };
                match self
                    .responder
                    .answer(&zone, query, Transport::Udp, &mut rng)
                {
                    Action::Answer(a) => out.push((a, from)),
                    Action::Drop => {}
                    Action::Forward => {
                        if let Some(a) = self.forward(query, from, reply) {
                            out.push((a, from));
                        }
                    }
                }
            }
            // A full socket buffer drops answers, as the network may: clients ask again.
            if let Err(e) = try_send_many(reply.as_ref(), &out) {
                tracing::debug!("[dns] udp send: {e}");
            }
            out.clear();
        }
    }

    /// Forwards `query` on the runtime, which sends the answer; or, when too many forwards
    /// are in flight, the SERVFAIL to send now.
    fn forward(
        &mut self,
        query: &[u8],
        from: SocketAddr,
        reply: &Arc<UdpSocket>,
    ) -> Option<Vec<u8>> {
        let Some(permit) = self.limiter.try_acquire() else {
            return server_failure(query);
        };
        let servers = servers(&self.upstreams);
        let timeout = self.fallback_timeout;
        let (reply, query) = (reply.clone(), query.to_vec());
        self.runtime.spawn(async move {
            let _permit = permit;
            let answer = upstream::forward(&query, &servers, Transport::Udp, timeout)
                .await
                .or_else(|| server_failure(&query));
            if let Some(a) = answer {
                let _ = reply.send_to(&a, from);
            }
        });
        None
    }
}
