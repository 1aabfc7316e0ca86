//! The floor reference of `bench/dns.sh`: a UDP "DNS server" that does no DNS work. Each
//! datagram of at least a DNS header's 12 bytes goes back to its sender unchanged but for the
//! QR bit, which dnsperf takes as a NOERROR answer with no records. Under the same load as a
//! real server, its CPU per query is what the kernel's receive and send paths (and the veth,
//! bridge and netfilter work charged to the sending process) cost alone, one recv and one send
//! a query; a real server's CPU above that is its DNS work.
//!
//! ```text
//! dns_echo <ip:port> <max-secs>
//!     serves until killed or <max-secs> have passed, whichever comes first.
//! ```

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// The QR bit (a response) in the header's third byte.
const QR: u8 = 0x80;
const HEADER_LEN: usize = 12;

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [addr, secs] = args.as_slice() else {
        bail!("usage: dns_echo <ip:port> <max-secs>");
    };
    let addr: SocketAddr = addr.parse().with_context(|| format!("address {addr:?}"))?;
    let secs: u64 = secs.parse().with_context(|| format!("seconds {secs:?}"))?;
    let deadline = Instant::now() + Duration::from_secs(secs);
    let sock = UdpSocket::bind(addr).with_context(|| format!("bind {addr}"))?;
    // Wakes the loop now and then so the deadline holds on an idle socket.
    sock.set_read_timeout(Some(Duration::from_millis(200)))?;
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline {
        let (n, from) = match sock.recv_from(&mut buf) {
            Ok(r) => r,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                continue
            }
            Err(e) => return Err(e).context("recv"),
        };
        if n < HEADER_LEN {
            continue;
        }
        buf[2] |= QR;
        // A full send buffer loses the answer, as the network may; dnsperf counts it lost.
        let _ = sock.send_to(&buf[..n], from);
    }
    Ok(())
}
