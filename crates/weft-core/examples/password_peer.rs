//! A minimal password-protected peer for interoperability checks: dials a router, runs the
//! encrypted intro with the given password, sends a sealed heartbeat, and prints the tag of
//! every sealed frame the router sends for a few seconds. Exits non-zero if the intro fails or
//! no frame opens.
//!
//! `cargo run --release -p weft-core --example password_peer -- 127.0.0.1:6783 PASSWORD [SECS]`

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use weft_core::handshake::{Handshake, LocalIdentity};
use weft_wire::PeerName;

fn run() -> Result<usize, String> {
    let mut args = std::env::args().skip(1);
    let addr: SocketAddr = args
        .next()
        .ok_or("usage: password_peer ADDR PASSWORD [SECS]")?
        .parse()
        .map_err(|e| format!("address: {e}"))?;
    let password = args.next().ok_or("no password")?;
    let secs: u64 = args
        .next()
        .map_or(Ok(5), |s| s.parse())
        .map_err(|e| format!("{e}"))?;
    let id = LocalIdentity {
        name: PeerName(0x0a00_0000_0000 | (rand::random::<u64>() & 0xff_ffff_ffff)),
        nick_name: "password-peer".into(),
        uid: rand::random(),
        short_id: 1,
        overlays: "sleeve".into(),
    };
    let mut s =
        TcpStream::connect_timeout(&addr, Duration::from_secs(5)).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_millis(200)))
        .map_err(|e| e.to_string())?;
    let mut hs = Handshake::with_password(
        &id,
        rand::random(),
        false,
        password.as_bytes(),
        true,
        &mut rand::rngs::OsRng,
    );
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut buf = Vec::new();
    let mut chunk = [0u8; 65536];
    let remote = loop {
        let done = hs.handle_input(&mut buf).map_err(|e| e.to_string())?;
        if let Some(out) = hs.poll_transmit() {
            s.write_all(&out).map_err(|e| e.to_string())?;
        }
        if let Some(r) = done {
            break r;
        }
        read_some(&mut s, &mut chunk, &mut buf, deadline)?;
    };
    println!(
        "intro done: remote {} ({}), overlays {:?}",
        remote.name, remote.nick_name, remote.overlays
    );
    let (mut tx, mut rx) = hs.into_session(buf);
    let mut wire = Vec::new();
    tx.seal(&[0], &mut wire).map_err(|e| e.to_string())?;
    s.write_all(&wire).map_err(|e| e.to_string())?;
    let mut opened = 0;
    let mut bytes = Vec::new();
    while Instant::now() < deadline {
        while let Some(body) = rx.poll_body().map_err(|e| e.to_string())? {
            opened += 1;
            println!(
                "frame {opened}: tag {:?}, {} bytes",
                body.first(),
                body.len()
            );
        }
        bytes.clear();
        match read_some(&mut s, &mut chunk, &mut bytes, deadline) {
            Ok(()) => rx.push(&bytes),
            Err(e) if e == "deadline" => break,
            Err(e) => return Err(e),
        }
    }
    Ok(opened)
}

/// Appends what the socket has to `buf`, polling in short reads until `deadline`.
fn read_some(
    s: &mut TcpStream,
    chunk: &mut [u8],
    buf: &mut Vec<u8>,
    deadline: Instant,
) -> Result<(), String> {
    loop {
        match s.read(chunk) {
            Ok(0) => return Err("connection closed".into()),
            Ok(n) => {
                buf.extend_from_slice(&chunk[..n]);
                return Ok(());
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                if Instant::now() >= deadline {
                    return Err("deadline".into());
                }
            }
            Err(e) => return Err(e.to_string()),
        }
    }
}

fn main() {
    match run() {
        Ok(n) if n > 0 => println!("{n} sealed frames opened"),
        Ok(_) => {
            eprintln!("no frame opened");
            std::process::exit(1);
        }
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(1);
        }
    }
}
