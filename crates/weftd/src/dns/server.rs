//! weftDNS over TCP: the listener and one task per connection, reading length-prefixed
//! queries and writing the answers the DNS task ([`super::task`]) gives.
//!
//! Bounded: at most [`MAX_CONNECTIONS`] at once (more are closed at accept), each closed after
//! [`IDLE_TIMEOUT`] without a complete query (miekg's server, which Weave Net uses, has a
//! 2 s read timeout; a little more is kinder to slow links), and a query is at most 65,535
//! bytes by its framing. One connection's queries are answered in order.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

use super::task::{tcp_answer, Handle};

/// TCP connections served at once.
pub const MAX_CONNECTIONS: usize = 64;
/// How long a connection may wait between queries, or take to send one.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(5);

/// Serves TCP queries on `listener` until the DNS task stops.
pub fn spawn(listener: TcpListener, handle: Handle) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    tokio::spawn(async move {
        loop {
            let (stream, _) = match listener.accept().await {
                Ok(s) => s,
                Err(e) => {
                    tracing::debug!("[dns] tcp accept: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let Ok(permit) = slots.clone().try_acquire_owned() else {
                continue;
            };
            let h = handle.clone();
            tokio::spawn(async move {
                let _permit = permit;
                if let Err(e) = serve(stream, &h).await {
                    tracing::debug!("[dns] tcp: {e}");
                }
            });
            if handle.requests.is_closed() {
                return;
            }
        }
    });
}

async fn serve(mut stream: TcpStream, handle: &Handle) -> std::io::Result<()> {
    loop {
        let len = match tokio::time::timeout(IDLE_TIMEOUT, stream.read_u16()).await {
            Ok(Ok(n)) => usize::from(n),
            // Closed, broken or idle: done.
            Ok(Err(_)) | Err(_) => return Ok(()),
        };
        let mut query = vec![0u8; len];
        match tokio::time::timeout(IDLE_TIMEOUT, stream.read_exact(&mut query)).await {
            Ok(Ok(_)) => {}
            Ok(Err(_)) | Err(_) => return Ok(()),
        }
        let Some(answer) = tcp_answer(handle, query).await else {
            continue;
        };
        let Ok(n) = u16::try_from(answer.len()) else {
            continue;
        };
        let mut out = Vec::with_capacity(answer.len() + 2);
        out.extend_from_slice(&n.to_be_bytes());
        out.extend_from_slice(&answer);
        stream.write_all(&out).await?;
    }
}
