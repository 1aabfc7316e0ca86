//! Where weftDNS sends what is not in its domain: the upstream servers of a resolv.conf, and
//! the forwarding of one query to them over UDP or TCP, as Weave Net does it.
//!
//! - [`Upstreams`] reads the servers from the file (re-checked at most every
//!   [`RECHECK`], re-read when its modification time changes), dropping our own listen address
//!   so that a host whose resolv.conf names weftDNS cannot loop.
//! - [`forward`] tries the servers in order with a copy of the query under a fresh random ID,
//!   each for at most the fallback timeout (over the transport the query came by), and returns
//!   the first answer made ready for the client by the responder's [`relay_upstream`] (the
//!   client's ID restored, names compressed when it is too large).
//! - [`Limiter`] bounds the forwards in flight, so that a slow or silent upstream cannot make
//!   the router hold an unbounded number of pending queries.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpStream, UdpSocket};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use weft_core::dns::{relay_upstream, Transport};

/// How often the file is checked for changes, at most.
pub const RECHECK: Duration = Duration::from_secs(5);
/// Weave Net's `--dns-fallback-timeout` default.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);
/// The UDP client's buffer (Weave Net's `UDPSize` for the upstream exchange).
pub const UDP_BUFFER: usize = 4096;
/// Forwards in flight at once; beyond that a query is answered SERVFAIL at once.
pub const MAX_IN_FLIGHT: usize = 256;
/// The largest resolv.conf read.
const MAX_RESOLV_CONF: u64 = 64 * 1024;

/// The upstream servers of one resolv.conf.
#[derive(Debug)]
pub struct Upstreams {
    path: PathBuf,
    /// Our own listen address: never an upstream.
    ours: Option<IpAddr>,
    servers: Vec<SocketAddr>,
    mtime: Option<SystemTime>,
    checked: Option<Instant>,
}

impl Upstreams {
    /// The servers of `path` (read at the first [`Self::servers`]), without `ours`.
    pub fn new(path: impl Into<PathBuf>, ours: Option<IpAddr>) -> Self {
        Self {
            path: path.into(),
            ours,
            servers: Vec::new(),
            mtime: None,
            checked: None,
        }
    }

    /// The servers, re-read if the file changed (checked at most every [`RECHECK`]). A file
    /// that cannot be read gives no servers (every forward then fails: SERVFAIL).
    pub fn servers(&mut self, now: Instant) -> &[SocketAddr] {
        if self
            .checked
            .is_none_or(|t| now.duration_since(t) >= RECHECK)
        {
            self.checked = Some(now);
            let mtime = std::fs::metadata(&self.path)
                .and_then(|m| m.modified())
                .ok();
            if mtime != self.mtime || mtime.is_none() {
                self.mtime = mtime;
                self.servers = read_servers(&self.path)
                    .into_iter()
                    .filter(|a| Some(a.ip()) != self.ours)
                    .collect();
            }
        }
        &self.servers
    }

    /// The servers as the status shows them: `8.8.8.8, 8.8.4.4`, or `none`.
    pub fn describe(&mut self, now: Instant) -> String {
        let s = self.servers(now);
        if s.is_empty() {
            return "none".into();
        }
        s.iter()
            .map(|a| a.ip().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// The `nameserver` lines of a resolv.conf, port 53 each; unreadable or absent: none.
fn read_servers(path: &Path) -> Vec<SocketAddr> {
    let Ok(file) = std::fs::File::open(path) else {
        return Vec::new();
    };
    let mut text = String::new();
    if std::io::Read::read_to_string(&mut std::io::Read::take(file, MAX_RESOLV_CONF), &mut text)
        .is_err()
    {
        return Vec::new();
    }
    parse_servers(&text)
}

/// The `nameserver` lines of resolv.conf text (comments with `#` or `;`), port 53 each.
pub fn parse_servers(text: &str) -> Vec<SocketAddr> {
    text.lines()
        .filter_map(|line| {
            let line = line.split(['#', ';']).next()?;
            let mut words = line.split_whitespace();
            (words.next()? == "nameserver").then_some(())?;
            // An IPv6 address may carry a zone (`fe80::1%eth0`); std cannot keep it, skip those.
            let ip: IpAddr = words.next()?.parse().ok()?;
            Some(SocketAddr::new(ip, 53))
        })
        .collect()
}

/// Bounds the forwards in flight.
#[derive(Debug, Clone)]
pub struct Limiter(Arc<Semaphore>);

impl Default for Limiter {
    fn default() -> Self {
        Self::new(MAX_IN_FLIGHT)
    }
}

impl Limiter {
    /// At most `n` forwards at once.
    pub fn new(n: usize) -> Self {
        Self(Arc::new(Semaphore::new(n)))
    }

    /// A slot for one forward, if one is free; held until dropped.
    pub fn try_acquire(&self) -> Option<OwnedSemaphorePermit> {
        self.0.clone().try_acquire_owned().ok()
    }
}

/// Sends `query` to each of `servers` in turn until one answers, each given `timeout`, over
/// `transport`; returns the answer as [`relay_upstream`] makes it for the client. `None`: a
/// malformed query (no header), or no server answered.
pub async fn forward(
    query: &[u8],
    servers: &[SocketAddr],
    transport: Transport,
    timeout: Duration,
) -> Option<Vec<u8>> {
    query.get(..2)?;
    for &server in servers {
        let mut copy = query.to_vec();
        let fresh: u16 = rand::random();
        copy[..2].copy_from_slice(&fresh.to_be_bytes());
        let answer = match transport {
            Transport::Udp => tokio::time::timeout(timeout, via_udp(&copy, server, fresh)).await,
            Transport::Tcp => tokio::time::timeout(timeout, via_tcp(&copy, server, fresh)).await,
        };
        match answer {
            Ok(Ok(a)) => return relay_upstream(query, &a, transport),
            Ok(Err(e)) => tracing::debug!("[dns] upstream {server}: {e}"),
            Err(_) => tracing::debug!("[dns] upstream {server}: no answer in {timeout:?}"),
        }
    }
    None
}

async fn via_udp(query: &[u8], server: SocketAddr, id: u16) -> std::io::Result<Vec<u8>> {
    let bind: SocketAddr = if server.is_ipv4() {
        ([0, 0, 0, 0], 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let sock = UdpSocket::bind(bind).await?;
    sock.connect(server).await?;
    sock.send(query).await?;
    let mut buf = vec![0u8; UDP_BUFFER];
    loop {
        let n = sock.recv(&mut buf).await?;
        // Only the answer to our ID: a stray or spoofed datagram is ignored.
        if n >= 12 && buf[..2] == id.to_be_bytes() {
            buf.truncate(n);
            return Ok(buf);
        }
    }
}

async fn via_tcp(query: &[u8], server: SocketAddr, id: u16) -> std::io::Result<Vec<u8>> {
    let len = u16::try_from(query.len())
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidInput, "query too long"))?;
    let mut s = TcpStream::connect(server).await?;
    let mut out = len.to_be_bytes().to_vec();
    out.extend_from_slice(query);
    s.write_all(&out).await?;
    let n = s.read_u16().await?;
    let mut buf = vec![0u8; usize::from(n)];
    s.read_exact(&mut buf).await?;
    if buf.len() < 12 || buf[..2] != id.to_be_bytes() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "answer to another query",
        ));
    }
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nameserver_lines_are_the_servers() {
        let text = "# generated\nsearch example.org\nnameserver 10.0.0.2\nnameserver 2001:db8::1 # v6\n\
                    nameserver fe80::1%eth0\n;nameserver 10.9.9.9\nnameserver\noptions ndots:2\n  nameserver   10.0.0.3  \n";
        let got: Vec<String> = parse_servers(text)
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(got, ["10.0.0.2:53", "[2001:db8::1]:53", "10.0.0.3:53"]);
    }

    #[test]
    fn our_own_address_is_dropped_and_changes_are_seen() {
        let dir = std::env::temp_dir().join(format!("weft-upstream-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("resolv.conf");
        std::fs::write(&file, "nameserver 172.17.0.1\nnameserver 10.0.0.2\n").unwrap();
        let mut u = Upstreams::new(&file, Some("172.17.0.1".parse().unwrap()));
        let t0 = Instant::now();
        assert_eq!(u.describe(t0), "10.0.0.2");
        // Rewritten with another mtime: seen once RECHECK has passed, not before.
        std::fs::write(&file, "nameserver 10.0.0.7\n").unwrap();
        let later = SystemTime::now() + Duration::from_secs(10);
        std::fs::File::options()
            .write(true)
            .open(&file)
            .unwrap()
            .set_modified(later)
            .unwrap();
        assert_eq!(u.describe(t0 + Duration::from_secs(1)), "10.0.0.2");
        assert_eq!(u.describe(t0 + RECHECK), "10.0.0.7");
        std::fs::remove_file(&file).unwrap();
        assert_eq!(u.describe(t0 + RECHECK * 2), "none");
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A fake upstream on loopback: answers each UDP query with the query echoed back and the
    /// QR bit set, after `delay`; a second socket that never answers.
    async fn fake_upstream(delay: Duration) -> SocketAddr {
        let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = sock.local_addr().unwrap();
        tokio::spawn(async move {
            let mut buf = [0u8; 512];
            while let Ok((n, from)) = sock.recv_from(&mut buf).await {
                tokio::time::sleep(delay).await;
                let mut a = buf[..n].to_vec();
                a[2] |= 0x80;
                let _ = sock.send_to(&a, from).await;
            }
        });
        addr
    }

    fn query() -> Vec<u8> {
        // ID 0xbeef, RD, one question: example.org A IN.
        let mut q = vec![0xbe, 0xef, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
        q.extend_from_slice(b"\x07example\x03org\x00\x00\x01\x00\x01");
        q
    }

    #[tokio::test]
    async fn forwards_with_a_fresh_id_and_restores_the_clients() {
        let up = fake_upstream(Duration::ZERO).await;
        let a = forward(&query(), &[up], Transport::Udp, DEFAULT_TIMEOUT)
            .await
            .unwrap();
        assert_eq!(a[..2], [0xbe, 0xef]);
        assert_eq!(a[2] & 0x80, 0x80);
        assert_eq!(a[12..], query()[12..]);
    }

    #[tokio::test]
    async fn a_silent_server_is_skipped_after_the_timeout() {
        let silent = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let up = fake_upstream(Duration::ZERO).await;
        let t = Instant::now();
        let servers = [silent.local_addr().unwrap(), up];
        let a = forward(
            &query(),
            &servers,
            Transport::Udp,
            Duration::from_millis(200),
        )
        .await;
        assert!(a.is_some());
        assert!(t.elapsed() >= Duration::from_millis(200));
        // Only silent servers: nothing, after one timeout each.
        let a = forward(
            &query(),
            &servers[..1],
            Transport::Udp,
            Duration::from_millis(100),
        )
        .await;
        assert!(a.is_none());
        assert!(forward(&[1], &[up], Transport::Udp, DEFAULT_TIMEOUT)
            .await
            .is_none());
    }

    #[tokio::test]
    async fn forwards_over_tcp() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let up = l.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut s, _) = l.accept().await.unwrap();
            let n = s.read_u16().await.unwrap();
            let mut q = vec![0u8; usize::from(n)];
            s.read_exact(&mut q).await.unwrap();
            q[2] |= 0x80;
            let mut out = n.to_be_bytes().to_vec();
            out.extend_from_slice(&q);
            s.write_all(&out).await.unwrap();
        });
        let a = forward(&query(), &[up], Transport::Tcp, DEFAULT_TIMEOUT)
            .await
            .unwrap();
        assert_eq!(a[..3], [0xbe, 0xef, 0x81]);
    }

    #[test]
    fn the_limiter_bounds_forwards_in_flight() {
        let l = Limiter::new(2);
        let a = l.try_acquire().unwrap();
        let _b = l.try_acquire().unwrap();
        assert!(l.try_acquire().is_none());
        drop(a);
        assert!(l.try_acquire().is_some());
    }
}
