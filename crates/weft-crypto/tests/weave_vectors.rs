//! Byte-exact vectors from Weave Net 2.8.1: the session key as its mesh derives it (Go's
//! `box.Precompute`, then SHA-256 with the password), control-connection messages sealed with
//! Go's `secretbox` under the spec's nonces, and sleeve datagrams made by its router's
//! `NaClEncryptor`. The secrets are fixed: A's scalar is 1, 2, …, 32; B's is 0xf0, 0xef, ….
#![allow(clippy::unwrap_used)]

use weft_crypto::key::EphemeralKey;
use weft_crypto::sleeve::{SleeveOpener, SleeveSealer, OVERHEAD, SENDER_LEN};
use weft_crypto::tcp::{TcpOpener, TcpSealer};
use weft_crypto::SessionKey;

const PASSWORD: &[u8] = b"bc-test-password";
const PUB_A: &str = "07a37cbc142093c8b755dc1b10e86cb426374ad16aa853ed0bdfc0b2b86d1c7c";
const PUB_B: &str = "14b52272bdb211a5ca149f44bb368f2e0404b1db94cefaf01bf850a0f3f16e4e";
const KEY: &str = "5f7a2274d5849b81bb6c5f056f894e779e63027a3a28c08c1fd1c574243e0d5f";
/// "hello" sealed as the first message of the dialling side (nonce c0 00…00).
const TCP_OUT_0: &str = "8ffb4e8d57b326097d3ec143b4e2aac8983b966a08";
/// A heartbeat body (one zero byte) sealed as the accepting side's second message (40 00…01).
const TCP_IN_1: &str = "6e8ad47e924494c9c15b5531236a20cc59";
/// The dialler aa:bb:cc:dd:ee:01's first two non-DF datagrams, each one record
/// (src aa:…:01, dst aa:…:02, "an ethernet frame").
const SLEEVE_OUT_0: &str = "aabbccddee01000000000000000078a6408d3c95d29dd1b87d490b89f871de9a92062d712f506d7446a6ed49354b4220317d8cab870a6f06134905be03";
const SLEEVE_OUT_1: &str = "aabbccddee01000000000000000182dfaef7567fba9ed8d5c06e68b8ce35c93d860d844096f051e7bf6b5a16f9be1ea0eb3fc33df60480805a1d57b327";
/// The accepting side aa:…:02's first DF datagram (src aa:…:02, dst aa:…:01).
const SLEEVE_IN_DF_0: &str = "aabbccddee028000000000000000f59e4bdf460b28fcd3cb3f92c0a9503b12e896644445b7799b29ea629c4328d31525e63f7ca4d9529085c10cdc17e9";

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn secret(f: impl Fn(u8) -> u8) -> [u8; 32] {
    std::array::from_fn(|i| f(i as u8))
}

fn key() -> SessionKey {
    SessionKey::from_bytes(hex(KEY).try_into().unwrap())
}

#[test]
fn session_key_matches_weave() {
    let a = EphemeralKey::from_secret(secret(|i| i + 1));
    let b = EphemeralKey::from_secret(secret(|i| 0xf0 - i));
    assert_eq!(a.public().as_slice(), hex(PUB_A));
    assert_eq!(b.public().as_slice(), hex(PUB_B));
    assert_eq!(a.session_key(b.public(), PASSWORD), key());
    assert_eq!(b.session_key(a.public(), PASSWORD), key());
}

#[test]
fn tcp_messages_match_weave() {
    let mut tx = TcpSealer::new(key(), true);
    let mut buf = vec![0u8; 16];
    buf.extend_from_slice(b"hello");
    tx.seal_in_place(&mut buf);
    assert_eq!(buf, hex(TCP_OUT_0));
    // The accepting side opens it, then its own second message opens at the dialler.
    let mut rx = TcpOpener::new(key(), false);
    assert_eq!(rx.open_in_place(&mut hex(TCP_OUT_0)).unwrap(), b"hello");
    let mut in_tx = TcpSealer::new(key(), false);
    let mut first = vec![0u8; 17];
    in_tx.seal_in_place(&mut first);
    let mut second = vec![0u8; 17];
    in_tx.seal_in_place(&mut second);
    assert_eq!(second, hex(TCP_IN_1));
    let mut out_rx = TcpOpener::new(key(), true);
    out_rx.open_in_place(&mut first).unwrap();
    assert_eq!(out_rx.open_in_place(&mut hex(TCP_IN_1)).unwrap(), b"\0");
}

fn record(src: u8, dst: u8) -> Vec<u8> {
    let mut r = vec![
        0xaa, 0xbb, 0xcc, 0xdd, 0xee, src, 0xaa, 0xbb, 0xcc, 0xdd, 0xee, dst,
    ];
    r.extend_from_slice(&17u16.to_be_bytes());
    r.extend_from_slice(b"an ethernet frame");
    r
}

fn sealed(tx: &mut SleeveSealer, sender: u8, records: &[u8]) -> Vec<u8> {
    let mut d = vec![0xaa, 0xbb, 0xcc, 0xdd, 0xee, sender];
    d.extend_from_slice(&[0; OVERHEAD]);
    d.extend_from_slice(records);
    tx.seal_in_place(&mut d).unwrap();
    d
}

#[test]
fn sleeve_datagrams_match_weave() {
    let mut out = SleeveSealer::new(key(), true, false);
    assert_eq!(sealed(&mut out, 1, &record(1, 2)), hex(SLEEVE_OUT_0));
    assert_eq!(sealed(&mut out, 1, &record(1, 2)), hex(SLEEVE_OUT_1));
    let mut in_df = SleeveSealer::new(key(), false, true);
    assert_eq!(sealed(&mut in_df, 2, &record(2, 1)), hex(SLEEVE_IN_DF_0));

    let mut at_acceptor = SleeveOpener::new(key(), false);
    for d in [SLEEVE_OUT_1, SLEEVE_OUT_0] {
        let mut d = hex(d);
        let records = at_acceptor.open_in_place(&mut d[SENDER_LEN..]).unwrap();
        assert_eq!(records, record(1, 2));
    }
    let mut at_dialler = SleeveOpener::new(key(), true);
    let mut d = hex(SLEEVE_IN_DF_0);
    assert_eq!(
        at_dialler.open_in_place(&mut d[SENDER_LEN..]).unwrap(),
        record(2, 1)
    );
}
