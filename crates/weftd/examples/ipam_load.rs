//! The load client of `bench/ipam.sh`: drives a router's IPAM HTTP API (Weave Net's, so it
//! works against weft and Weave Net alike) over one kept-alive HTTP/1.1 connection and prints
//! what it measured, one `key=value` line per figure.
//!
//! ```text
//! ipam_load latency <addr> <count> <space-ms> <id-prefix>
//!     <count> times: POST /ip/<prefix>-<i> then DELETE /ip/<prefix>-<i>, a new pair every
//!     <space-ms> ms (0: back to back); prints p50/p99 of both in ms. Then, as the reference,
//!     <count> times at the same pace a request that does no IPAM work (GET of an id that
//!     holds nothing): what the machine, the connection and HTTP cost alone.
//! ipam_load once <addr> <id>
//!     one POST /ip/<id>; prints its time in ms and the address it got.
//! ipam_load cycles <addr> <count> <every> <pid> <max-secs> <id-prefix>
//!     allocate/release cycles; prints <pid>'s VmRSS before the first and after every <every>
//!     cycles, and stops early (saying so, with a last sample) after <max-secs> s.
//! ```
//!
//! The HTTP client is hand-written on `std::net::TcpStream`: a sub-millisecond request needs
//! a connection kept open with nothing between the timer and the socket, which one process per
//! request (curl) cannot give, and an async client would be a new dependency for one example.

use std::fmt;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::ExitCode;
use std::thread::sleep;
use std::time::{Duration, Instant};

/// What went wrong; the message is printed and the client exits non-zero.
struct Failure(String);

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<std::io::Error> for Failure {
    fn from(e: std::io::Error) -> Self {
        Self(format!("i/o: {e}"))
    }
}

/// One HTTP/1.1 connection, reopened when the server closes it.
struct Client {
    addr: String,
    conn: Option<BufReader<TcpStream>>,
}

/// A response: status code and body.
struct Answer {
    status: u16,
    body: String,
}

impl Client {
    fn new(addr: &str) -> Self {
        Self {
            addr: addr.to_string(),
            conn: None,
        }
    }

    fn connect(&mut self) -> Result<&mut BufReader<TcpStream>, Failure> {
        if self.conn.is_none() {
            let s = TcpStream::connect(&self.addr)
                .map_err(|e| Failure(format!("connect {}: {e}", self.addr)))?;
            s.set_nodelay(true)?;
            self.conn = Some(BufReader::new(s));
        }
        self.conn
            .as_mut()
            .ok_or_else(|| Failure("no connection".into()))
    }

    /// Sends one request and reads its answer; a kept-alive connection the server closed in
    /// the meantime is reopened once.
    fn request(&mut self, method: &str, path: &str) -> Result<Answer, Failure> {
        let fresh = self.conn.is_none();
        match self.try_request(method, path) {
            Ok(a) => Ok(a),
            Err(_) if !fresh => {
                self.conn = None;
                self.try_request(method, path)
            }
            Err(e) => Err(e),
        }
    }

    fn try_request(&mut self, method: &str, path: &str) -> Result<Answer, Failure> {
        let req =
            format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\n\r\n");
        let r = self.connect()?;
        r.get_mut().write_all(req.as_bytes())?;
        let answer = read_answer(r);
        match &answer {
            Ok((_, keep)) if *keep => {}
            _ => self.conn = None,
        }
        answer.map(|(a, _)| a)
    }
}

/// Reads one response (Content-Length, chunked, or none); also says whether the connection
/// stays open.
fn read_answer(r: &mut BufReader<TcpStream>) -> Result<(Answer, bool), Failure> {
    let mut line = String::new();
    if r.read_line(&mut line)? == 0 {
        return Err(Failure("connection closed".into()));
    }
    let status = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse::<u16>().ok())
        .ok_or_else(|| Failure(format!("bad status line {line:?}")))?;
    let (mut length, mut chunked, mut keep) = (None, false, true);
    loop {
        line.clear();
        if r.read_line(&mut line)? == 0 {
            return Err(Failure("connection closed in headers".into()));
        }
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        let Some((k, v)) = l.split_once(':') else {
            continue;
        };
        let (k, v) = (k.trim().to_ascii_lowercase(), v.trim().to_ascii_lowercase());
        match k.as_str() {
            "content-length" => length = v.parse::<usize>().ok(),
            "transfer-encoding" => chunked = v.contains("chunked"),
            "connection" => keep = !v.contains("close"),
            _ => {}
        }
    }
    let mut body = Vec::new();
    if chunked {
        loop {
            line.clear();
            r.read_line(&mut line)?;
            let n = usize::from_str_radix(line.trim(), 16)
                .map_err(|_| Failure(format!("bad chunk size {line:?}")))?;
            let mut chunk = vec![0; n + 2];
            r.read_exact(&mut chunk)?;
            chunk.truncate(n);
            body.extend_from_slice(&chunk);
            if n == 0 {
                break;
            }
        }
    } else if let Some(n) = length {
        body.resize(n, 0);
        r.read_exact(&mut body)?;
    } else if status != 204 && status != 304 {
        // No length: the body runs to the end of the connection.
        r.read_to_end(&mut body)?;
        keep = false;
    }
    let body = String::from_utf8_lossy(&body).into_owned();
    Ok((Answer { status, body }, keep))
}

/// POST /ip/<id>: the address (checked to be one), and the request's time.
fn allocate(c: &mut Client, id: &str) -> Result<(String, Duration), Failure> {
    let t = Instant::now();
    let a = c.request("POST", &format!("/ip/{id}"))?;
    let took = t.elapsed();
    let addr = a.body.trim().to_string();
    let looks_like_cidr = addr.contains('/') && addr.starts_with(|ch: char| ch.is_ascii_digit());
    if a.status != 200 || !looks_like_cidr {
        return Err(Failure(format!("POST /ip/{id}: {} {:?}", a.status, a.body)));
    }
    Ok((addr, took))
}

/// DELETE /ip/<id>, and the request's time.
fn release(c: &mut Client, id: &str) -> Result<Duration, Failure> {
    let t = Instant::now();
    let a = c.request("DELETE", &format!("/ip/{id}"))?;
    let took = t.elapsed();
    if a.status != 204 && a.status != 200 {
        return Err(Failure(format!(
            "DELETE /ip/{id}: {} {:?}",
            a.status, a.body
        )));
    }
    Ok(took)
}

/// The nearest-rank percentile `p` (0..=100) of sorted durations, in ms.
fn percentile_ms(sorted: &[Duration], p: usize) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = (sorted.len() * p).div_ceil(100).max(1);
    sorted[rank - 1].as_secs_f64() * 1e3
}

fn latency(addr: &str, count: usize, space: Duration, prefix: &str) -> Result<(), Failure> {
    let mut c = Client::new(addr);
    let (mut alloc, mut free) = (Vec::with_capacity(count), Vec::with_capacity(count));
    let start = Instant::now();
    for i in 0..count {
        if !space.is_zero() {
            let due = start + space * u32::try_from(i).unwrap_or(u32::MAX);
            sleep(due.saturating_duration_since(Instant::now()));
        }
        let id = format!("{prefix}-{i}");
        alloc.push(allocate(&mut c, &id)?.1);
        free.push(release(&mut c, &id)?);
    }
    let mut reference = Vec::with_capacity(count);
    let start = Instant::now();
    for i in 0..count {
        if !space.is_zero() {
            let due = start + space * u32::try_from(i).unwrap_or(u32::MAX);
            sleep(due.saturating_duration_since(Instant::now()));
        }
        let t = Instant::now();
        c.request("GET", &format!("/ip/{prefix}-none"))?;
        reference.push(t.elapsed());
    }
    alloc.sort();
    free.sort();
    reference.sort();
    println!(
        "alloc_p50_ms={:.4} alloc_p99_ms={:.4} delete_p50_ms={:.4} delete_p99_ms={:.4} \
         ref_p50_ms={:.4} ref_p99_ms={:.4} n={count}",
        percentile_ms(&alloc, 50),
        percentile_ms(&alloc, 99),
        percentile_ms(&free, 50),
        percentile_ms(&free, 99),
        percentile_ms(&reference, 50),
        percentile_ms(&reference, 99),
    );
    Ok(())
}

fn once(addr: &str, id: &str) -> Result<(), Failure> {
    let mut c = Client::new(addr);
    // Connect first, so that the figure is the request's alone.
    c.connect()?;
    let (got, took) = allocate(&mut c, id)?;
    println!("ms={:.3} addr={got}", took.as_secs_f64() * 1e3);
    Ok(())
}

/// `pid`'s resident set in kB.
fn rss_kb(pid: &str) -> Result<u64, Failure> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .map_err(|e| Failure(format!("/proc/{pid}/status: {e}")))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| Failure(format!("no VmRSS for {pid}")))
}

fn cycles(
    addr: &str,
    count: usize,
    every: usize,
    pid: &str,
    max: Duration,
    prefix: &str,
) -> Result<(), Failure> {
    let mut c = Client::new(addr);
    let start = Instant::now();
    println!("cycles=0 rss_kb={} secs=0.0", rss_kb(pid)?);
    for i in 1..=count {
        let id = format!("{prefix}-{i}");
        allocate(&mut c, &id)?;
        release(&mut c, &id)?;
        let out_of_time = start.elapsed() >= max;
        if i % every.max(1) == 0 || out_of_time {
            let secs = start.elapsed().as_secs_f64();
            println!("cycles={i} rss_kb={} secs={secs:.1}", rss_kb(pid)?);
        }
        if out_of_time {
            println!("stopped=time-limit cycles={i}");
            return Ok(());
        }
    }
    Ok(())
}

fn arg<T: std::str::FromStr>(args: &[String], i: usize, what: &str) -> Result<T, Failure> {
    args.get(i)
        .and_then(|a| a.parse().ok())
        .ok_or_else(|| Failure(format!("argument {i}: expected {what}")))
}

fn run(args: &[String]) -> Result<(), Failure> {
    let s = |i| arg::<String>(args, i, "a string");
    match args.first().map(String::as_str) {
        Some("latency") => latency(
            &s(1)?,
            arg(args, 2, "a count")?,
            Duration::from_millis(arg(args, 3, "ms between allocations")?),
            &s(4)?,
        ),
        Some("once") => once(&s(1)?, &s(2)?),
        Some("cycles") => cycles(
            &s(1)?,
            arg(args, 2, "a count")?,
            arg(args, 3, "cycles between samples")?,
            &s(4)?,
            Duration::from_secs(arg(args, 5, "seconds")?),
            &s(6)?,
        ),
        _ => Err(Failure(
            "usage: ipam_load latency|once|cycles ... (see the file's doc)".into(),
        )),
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ipam_load: {e}");
            ExitCode::FAILURE
        }
    }
}
