//! A small upstream DNS server for weftDNS's end-to-end tests and benchmark, run in a network
//! namespace of its own: `fake_upstream <ip:port>` answers on UDP and TCP, by the first label
//! of the question name:
//!
//! - `nx…`: NXDOMAIN;
//! - `silent…`: no answer at all (a dead or overloaded upstream);
//! - `big…`: 60 A records (a response larger than 512 bytes);
//! - anything else: one A record, 192.0.2.1, TTL 60.
//!
//! It prints `ready` once both sockets are bound and serves until killed.
// A test tool: a panic is how it fails.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, UdpSocket};

use hickory_proto::op::{Message, MessageType, ResponseCode};
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{RData, Record};
use hickory_proto::serialize::binary::{BinDecodable, BinEncodable};

fn answer(query: &[u8]) -> Option<Vec<u8>> {
    let q = Message::from_bytes(query).ok()?;
    let question = q.queries().first()?.clone();
    let first = question
        .name()
        .iter()
        .next()
        .map(|l| String::from_utf8_lossy(l).to_ascii_lowercase())
        .unwrap_or_default();
    if first.starts_with("silent") {
        return None;
    }
    let mut r = Message::new();
    r.set_id(q.id())
        .set_message_type(MessageType::Response)
        .set_op_code(q.op_code())
        .set_recursion_desired(q.recursion_desired())
        .set_recursion_available(true)
        .add_query(question.clone());
    if first.starts_with("nx") {
        r.set_response_code(ResponseCode::NXDomain);
    } else {
        let n = if first.starts_with("big") { 60 } else { 1 };
        for i in 0..n {
            let addr = Ipv4Addr::new(192, 0, 2, 1 + i);
            r.add_answer(Record::from_rdata(
                question.name().clone(),
                60,
                RData::A(A(addr)),
            ));
        }
    }
    r.to_bytes().ok()
}

fn main() {
    let addr: SocketAddr = std::env::args()
        .nth(1)
        .expect("usage: fake_upstream <ip:port>")
        .parse()
        .expect("an ip:port");
    let udp = UdpSocket::bind(addr).expect("bind udp");
    let tcp = TcpListener::bind(addr).expect("bind tcp");
    std::thread::spawn(move || {
        for s in tcp.incoming().flatten() {
            std::thread::spawn(move || {
                let mut s = s;
                loop {
                    let mut len = [0u8; 2];
                    if s.read_exact(&mut len).is_err() {
                        return;
                    }
                    let mut q = vec![0u8; usize::from(u16::from_be_bytes(len))];
                    if s.read_exact(&mut q).is_err() {
                        return;
                    }
                    if let Some(a) = answer(&q) {
                        let mut out = (a.len() as u16).to_be_bytes().to_vec();
                        out.extend_from_slice(&a);
                        if s.write_all(&out).is_err() {
                            return;
                        }
                    }
                }
            });
        }
    });
    println!("ready");
    let mut buf = [0u8; 4096];
    loop {
        let Ok((n, from)) = udp.recv_from(&mut buf) else {
            continue;
        };
        if let Some(a) = answer(&buf[..n]) {
            let _ = udp.send_to(&a, from);
        }
    }
}
