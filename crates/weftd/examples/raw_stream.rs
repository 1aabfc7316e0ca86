//! A Docker client of the old kind, for the proxy's end-to-end tests: it POSTs a call that
//! hijacks the connection (attach, exec start) to a Unix socket WITHOUT `Upgrade:`, as clients
//! before Docker 1.12 did, writes `TEXT` on the same connection once answered, and reads the
//! stream until `TEXT` came back.
//!
//! `raw_stream SOCKET PATH TEXT [BODY]`: BODY is sent as a JSON body (exec start's). Prints the
//! answer's status line, then what came back (demultiplexed: the container has no TTY). Exits
//! 0 when `TEXT` came back within 10 s, 1 otherwise.

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::os::unix::net::UnixStream;
use std::process::ExitCode;
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(10);

fn main() -> ExitCode {
    match run() {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("raw_stream: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> std::io::Result<bool> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [socket, path, text, rest @ ..] = args.as_slice() else {
        eprintln!("usage: raw_stream SOCKET PATH TEXT [BODY]");
        return Ok(false);
    };
    let body = rest.first().map_or("", String::as_str);
    let mut s = UnixStream::connect(socket)?;
    s.set_read_timeout(Some(WAIT))?;
    let mut head = format!("POST {path} HTTP/1.1\r\nHost: docker\r\n");
    if !body.is_empty() {
        head.push_str("Content-Type: application/json\r\n");
    }
    head.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
    s.write_all(head.as_bytes())?;
    let mut r = BufReader::new(s.try_clone()?);
    let mut status = String::new();
    r.read_line(&mut status)?;
    println!("{}", status.trim_end());
    loop {
        let mut line = String::new();
        if r.read_line(&mut line)? == 0 || line.trim_end().is_empty() {
            break;
        }
    }
    if !status.contains(" 200 ") {
        return Ok(false);
    }
    s.write_all(text.as_bytes())?;
    // Frames of an 8-byte header (stream, 0, 0, 0, length big-endian) and the payload.
    let deadline = Instant::now() + WAIT;
    let mut got = Vec::new();
    while Instant::now() < deadline && !contains(&got, text.as_bytes()) {
        let mut header = [0; 8];
        if r.read_exact(&mut header).is_err() {
            break;
        }
        let len = u32::from_be_bytes([header[4], header[5], header[6], header[7]]);
        let mut payload = vec![0; len as usize];
        r.read_exact(&mut payload)?;
        got.extend_from_slice(&payload);
    }
    print!("{}", String::from_utf8_lossy(&got));
    Ok(contains(&got, text.as_bytes()))
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}
