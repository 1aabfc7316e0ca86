//! Unit-test support: [`FakeRouter`], a stand-in for the router's HTTP API (a listener on
//! 127.0.0.1 that records each request line, `METHOD /path?query`, and answers with what the
//! test's function says; one request per connection, `Connection: close`), and short
//! constructors for arguments and CIDRs.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use weft_types::Ipv4Cidr;

/// Command-line arguments from string literals.
pub(crate) fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|x| x.to_string()).collect()
}

/// A CIDR from a literal.
pub(crate) fn cidr(s: &str) -> Ipv4Cidr {
    s.parse().unwrap()
}

/// A request as the fake router saw it.
pub(crate) struct Request {
    pub(crate) method: String,
    /// The path, still percent-encoded, without the query.
    pub(crate) path: String,
}

/// An answer: status and body.
pub(crate) struct Canned {
    status: u16,
    body: String,
}

impl Canned {
    pub(crate) fn ok(body: &str) -> Self {
        Self::status(200, body)
    }

    pub(crate) fn status(status: u16, body: &str) -> Self {
        Self {
            status,
            body: body.to_string(),
        }
    }
}

type Answer = dyn Fn(&Request) -> Canned + Send + Sync;

pub(crate) struct FakeRouter {
    addr: String,
    seen: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl FakeRouter {
    pub(crate) fn start(answer: impl Fn(&Request) -> Canned + Send + Sync + 'static) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let answer: Arc<Answer> = Arc::new(answer);
        let thread = {
            let (seen, stop) = (seen.clone(), stop.clone());
            std::thread::spawn(move || {
                for conn in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    if let Ok(conn) = conn {
                        serve(conn, &seen, &*answer);
                    }
                }
            })
        };
        Self {
            addr,
            seen,
            stop,
            thread: Some(thread),
        }
    }

    pub(crate) fn addr(&self) -> &str {
        &self.addr
    }

    /// The request lines so far, in order.
    pub(crate) fn requests(&self) -> Vec<String> {
        self.seen.lock().unwrap().clone()
    }
}

impl Drop for FakeRouter {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so that it sees the flag.
        let _ = TcpStream::connect(&self.addr);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn serve(conn: TcpStream, seen: &Mutex<Vec<String>>, answer: &Answer) {
    let mut r = BufReader::new(&conn);
    let mut line = String::new();
    if r.read_line(&mut line).is_err() {
        return;
    }
    let mut parts = line.split_whitespace();
    let (Some(method), Some(target)) = (parts.next(), parts.next()) else {
        return;
    };
    let mut len = 0usize;
    loop {
        let mut h = String::new();
        if r.read_line(&mut h).unwrap_or(0) == 0 || h.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            if k.eq_ignore_ascii_case("content-length") {
                len = v.trim().parse().unwrap_or(0);
            }
        }
    }
    let mut body = vec![0; len];
    let _ = r.read_exact(&mut body);
    let req = Request {
        method: method.to_string(),
        path: target.split('?').next().unwrap_or("").to_string(),
    };
    let mut record = format!("{method} {target}");
    if !body.is_empty() {
        record.push_str(&format!(" <{}>", String::from_utf8_lossy(&body)));
    }
    seen.lock().unwrap().push(record);
    let a = answer(&req);
    let _ = write!(
        &conn,
        "HTTP/1.1 {} X\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{}",
        a.status,
        a.body.len(),
        a.body
    );
}

/// An address where nothing listens: a port just bound and released.
pub(crate) fn closed_addr() -> String {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().to_string()
}
