//! Fuzzing entry points for weft-core's state machines, compiled under `cfg(fuzzing)` (cargo-fuzz
//! sets it) and in unit tests. The targets in `fuzz/` are one-line shims over these; a panic is
//! a finding.
//!
//! Each entry point takes a [`HeapMeter`] (the fuzz targets pass one backed by a counting global
//! allocator) and asserts that handling `n` input bytes never held more than
//! `per_byte * n + base` heap bytes at once, the constants chosen per target (see each
//! `*_BOUND`): the state a target builds before its input (a handshake's queued intro, two
//! routers, a forwarder's queues) is part of `base`, and `per_byte` covers what the input can
//! make that state grow by. Consistency checks run after the measured part where they would
//! allocate. The unit tests below replay the checked-in seed corpora in `fuzz/corpus/`.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use weft_wire::PeerName;

use crate::handshake::{Handshake, HandshakeError, LocalIdentity, RemoteFeatures};

pub use crate::fuzz_support::{metered, unmetered, Bound, HeapMeter};

/// The bytes of a fuzz program still to be read; reads past the end give zeros.
pub struct Program<'a>(pub &'a [u8]);

impl<'a> Program<'a> {
    /// Whether everything was read.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// One byte.
    pub fn byte(&mut self) -> u8 {
        let (&b, rest) = self.0.split_first().unwrap_or((&0, &[]));
        self.0 = rest;
        b
    }

    /// A little-endian u16.
    pub fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.byte(), self.byte()])
    }

    /// Up to `n` bytes.
    pub fn take(&mut self, n: usize) -> &'a [u8] {
        let (head, rest) = self.0.split_at(n.min(self.0.len()));
        self.0 = rest;
        head
    }

    /// A chunk prefixed by its little-endian u16 length.
    pub fn chunk(&mut self) -> &'a [u8] {
        let n = usize::from(self.u16());
        self.take(n)
    }
}

/// The identity of the local router in the stateful harnesses.
fn identity(n: u64, nick: &str) -> LocalIdentity {
    LocalIdentity {
        name: PeerName(0x0200_0000_0000 + n),
        nick_name: nick.into(),
        uid: n * 1000 + 7,
        short_id: n as u16,
        overlays: "sleeve".into(),
    }
}

/// Handshake: our queued intro (under 1 KiB), the receive buffer (at most twice the input once
/// grown), and the features map decoded from it (weft-wire's 64 per byte plus 16 KiB).
pub const HANDSHAKE_BOUND: Bound = Bound {
    per_byte: 72,
    base: 24 * 1024,
};

/// Feeds `input` to `hs` `step` bytes at a time, calling `after` after each chunk, until it
/// completes or fails; returns the outcome and the bytes it left.
fn feed_in_chunks(
    hs: &mut Handshake,
    input: &[u8],
    step: usize,
    mut after: impl FnMut(&mut Handshake),
) -> (Result<Option<RemoteFeatures>, HandshakeError>, Vec<u8>) {
    let mut buf = Vec::new();
    let mut outcome = Ok(None);
    for chunk in input.chunks(step) {
        buf.extend_from_slice(chunk);
        match hs.handle_input(&mut buf) {
            Ok(None) => {}
            Ok(Some(remote)) => outcome = Ok(Some(remote)),
            Err(e) => {
                outcome = Err(e);
                break;
            }
        }
        after(hs);
    }
    (outcome, buf)
}

/// Feeds `data` to a handshake as what the remote sent, in chunks whose sizes the first byte
/// picks (1 to 255 bytes; 0 counts as 1), and checks that the chunked
/// outcome is the one-shot outcome: same error or features, same leftover bytes.
pub fn handshake(data: &[u8], meter: HeapMeter) {
    let (step, input) = match data.split_first() {
        Some((&s, rest)) => (usize::from(s).max(1), rest),
        None => (1, data),
    };
    let id = identity(1, "fuzz");
    let chunked = metered(data.len(), HANDSHAKE_BOUND, meter, "handshake", || {
        let mut hs = Handshake::new(&id, 11, false);
        let _ = hs.poll_transmit();
        let (outcome, mut buf) = feed_in_chunks(&mut hs, input, step, |hs| {
            // Nothing is queued after the intro: the handshake never answers input.
            assert!(hs.poll_transmit().is_none(), "handshake answered input");
        });
        if let Ok(Some(_)) = outcome {
            let (_tx, _rx) = hs.into_session(std::mem::take(&mut buf));
        }
        (outcome, buf)
    });
    let mut hs = Handshake::new(&id, 11, false);
    let mut buf = input.to_vec();
    let once = hs.handle_input(&mut buf);
    match (&chunked.0, &once) {
        (Ok(Some(a)), Ok(Some(b))) => assert_eq!(a, b),
        (Err(a), Err(b)) => assert_eq!(a, b),
        (Ok(None), Ok(None)) => assert_eq!(buf.len(), chunked.1.len()),
        (a, b) => panic!("chunked outcome {a:?}, one-shot {b:?}"),
    }
    if let Ok(Some(_)) = once {
        // What follows the features frame is left for the session, untouched.
        assert!(input.ends_with(&buf), "leftover is not the input's tail");
    }
    if let Err(e) = &once {
        // Errors quote at most a clipped part of what the peer sent (weft-wire's decode errors
        // stay within 512 bytes, escaping included).
        assert!(e.to_string().len() < 1024, "long error text");
    }
}

/// Password handshake: [`HANDSHAKE_BOUND`]'s parts, plus the opened copy of the features frame
/// (at most the input) and the keys.
pub const HANDSHAKE_ENCRYPTED_BOUND: Bound = Bound {
    per_byte: 80,
    base: 32 * 1024,
};

/// The password of the password harnesses.
const FUZZ_PASSWORD: &[u8] = b"fuzz";

/// The password harnesses' fixed key pairs, and the key the genuine remote shares with us,
/// computed once: Curve25519 is most of an input's time otherwise.
struct FuzzKeys {
    ours: weft_crypto::key::EphemeralKey,
    theirs: weft_crypto::key::EphemeralKey,
    right: weft_crypto::SessionKey,
}

fn fuzz_keys() -> &'static FuzzKeys {
    use weft_crypto::key::EphemeralKey;
    static KEYS: std::sync::OnceLock<FuzzKeys> = std::sync::OnceLock::new();
    KEYS.get_or_init(|| {
        let ours = EphemeralKey::from_secret([1; 32]);
        let theirs = EphemeralKey::from_secret([2; 32]);
        let right = theirs.session_key(ours.public(), FUZZ_PASSWORD);
        FuzzKeys {
            ours,
            theirs,
            right,
        }
    })
}

/// What a genuine password peer sends: its hello (header, flag 1, public key), then `features`
/// sealed as its first message under the key it shares with us (with `password`), then a sealed
/// heartbeat.
fn genuine_intro(features: &[u8], password: &[u8], remote_outbound: bool) -> Vec<u8> {
    use weft_crypto::tcp::TcpSealer;
    let keys = fuzz_keys();
    let mut wire = weft_wire::header::encode(2, 2).to_vec();
    wire.push(1);
    wire.extend_from_slice(keys.theirs.public());
    let key = if password == FUZZ_PASSWORD {
        keys.right.clone()
    } else {
        keys.theirs.session_key(keys.ours.public(), password)
    };
    let mut tx = TcpSealer::new(key, remote_outbound);
    for body in [features, b"\x00"] {
        let mut sealed = vec![0u8; weft_crypto::tcp::OVERHEAD];
        sealed.extend_from_slice(body);
        tx.seal_in_place(&mut sealed);
        wire.extend_from_slice(&(sealed.len() as u32).to_be_bytes());
        wire.extend_from_slice(&sealed);
    }
    wire
}

/// Feeds a password handshake what the remote sent, in chunks (as [`handshake`]) and at once,
/// and checks both give the same outcome. The second byte picks the mode: bit 0 = we dialled;
/// bit 1 = the rest is sent as is (header, flag, key, sealed frames, all the fuzzer's), else it
/// is the plaintext of the features frame of a genuine remote ([`genuine_intro`]), sealed with
/// our password or, with bit 2, another one. With the genuine remote and our password, what
/// follows the intro (a sealed heartbeat) must open.
pub fn handshake_encrypted(data: &[u8], meter: HeapMeter) {
    let mut p = Program(data);
    let step = usize::from(p.byte()).max(1);
    let mode = p.byte();
    let outbound = mode & 1 != 0;
    let raw = mode & 2 != 0;
    let password: &[u8] = if mode & 4 != 0 {
        b"other"
    } else {
        FUZZ_PASSWORD
    };
    let input = if raw {
        p.0.to_vec()
    } else {
        genuine_intro(p.0, password, !outbound)
    };
    let id = identity(1, "fuzz");
    let start = || {
        let key = fuzz_keys().ours.clone();
        let mut hs = Handshake::with_key(&id, 11, false, FUZZ_PASSWORD, outbound, key);
        let _ = hs.poll_transmit();
        hs
    };
    let chunked = metered(
        input.len(),
        HANDSHAKE_ENCRYPTED_BOUND,
        meter,
        "handshake_encrypted",
        || {
            let mut hs = start();
            let (outcome, buf) = feed_in_chunks(&mut hs, &input, step, |hs| {
                let _ = hs.poll_transmit();
            });
            (outcome, buf, hs)
        },
    );
    let (chunked_outcome, chunked_buf, chunked_hs) = chunked;
    let mut hs = start();
    let mut buf = input.clone();
    let once = hs.handle_input(&mut buf);
    match (&chunked_outcome, &once) {
        (Ok(Some(a)), Ok(Some(b))) => assert_eq!(a, b),
        (Err(a), Err(b)) => assert_eq!(a, b),
        (Ok(None), Ok(None)) => assert_eq!(buf.len(), chunked_buf.len()),
        (a, b) => panic!("chunked outcome {a:?}, one-shot {b:?}"),
    }
    if let Ok(Some(_)) = once {
        assert!(input.ends_with(&buf), "leftover is not the input's tail");
        // Both halves agree on the key the chunked run agreed.
        assert_eq!(hs.session_key(), chunked_hs.session_key());
        let genuine = !raw && password == FUZZ_PASSWORD;
        let (_, mut rx) = hs.into_session(buf);
        assert!(rx.is_encrypted());
        match rx.poll_body() {
            Ok(Some(b)) if genuine => assert_eq!(b, b"\x00"),
            other if genuine => panic!("the genuine heartbeat gave {other:?}"),
            _ => {}
        }
    }
    if let Err(e) = &once {
        assert!(e.to_string().len() < 1024, "long error text");
        // A genuine remote with our password fails only on its features.
        if !raw && password == FUZZ_PASSWORD {
            assert!(
                matches!(
                    e,
                    HandshakeError::Features(_)
                        | HandshakeError::MissingField(_)
                        | HandshakeError::FlavourMismatch(_)
                        | HandshakeError::BadField { .. }
                        | HandshakeError::Frame(_)
                ),
                "genuine remote refused with {e:?}"
            );
        }
    }
}

/// Sleeve decryption: the two replay windows grow to at most 128 KiB per bitset (four), the
/// last few sealed datagrams are kept (each at most what the input spent on it, plus the
/// header), and one buffer per delivery.
pub const SLEEVE_CRYPTO_BOUND: Bound = Bound {
    per_byte: 16,
    base: 640 * 1024,
};

/// A program for a sleeve sealer (the remote, both paths) and our opener — Weave Net's scheme
/// or weft's AES-256-GCM, by the first byte's bit 0 — checked against a model of the replay
/// window (and, for weft's scheme, of which key epochs open: the newest accepted and those
/// next to it): a genuine datagram opens iff its sequence number was not
/// accepted before on its path and lies no more than one window half below the half of the
/// highest number accepted there. Altered, truncated and made-up datagrams never open, and
/// since the model moves only on success, every later verdict also checks that failures
/// changed nothing. Ops (byte % 6): 0 seal records (a chunk) on the path of the next byte's
/// bit 0; 1 deliver a kept datagram; 2 deliver one with a bit flipped; 3 deliver one cut
/// short; 4 deliver made-up bytes; 5 move the sealer's counter to `u16 << (byte % 44)`.
pub fn sleeve_crypto(data: &[u8], meter: HeapMeter) {
    use std::collections::BTreeSet;
    use weft_crypto::sleeve::{
        OpenError, Opener, Scheme, Sealer, OVERHEAD, SENDER_LEN, WINDOW_SIZE,
    };
    use weft_crypto::SessionKey;

    const KEPT: usize = 8;
    let key = SessionKey::from_bytes([0x42; 32]);
    metered(
        data.len(),
        SLEEVE_CRYPTO_BOUND,
        meter,
        "sleeve_crypto",
        || {
            let mut p = Program(data);
            // Weave Net's scheme, or weft's, whose opener takes only the epochs next to the
            // newest it accepted (keys roll every 2^32 datagrams).
            let aead = p.byte() & 1 == 1;
            let scheme = if aead {
                Scheme::Aes256Gcm
            } else {
                Scheme::Weave
            };
            let mut sealers = [
                Sealer::new(scheme, &key, false, false),
                Sealer::new(scheme, &key, false, true),
            ];
            let mut rx = Opener::new(scheme, &key, true);
            let mut newest_epoch = 0u64;
            // Per path: the sequence numbers accepted.
            let mut accepted: [BTreeSet<u64>; 2] = Default::default();
            // Kept datagrams: (path, sequence, bytes).
            let mut kept: Vec<(usize, u64, Vec<u8>)> = Vec::new();
            let mut next_keep = 0;
            let pick = |p: &mut Program<'_>, n: usize| usize::from(p.byte()) % n.max(1);
            while !p.is_empty() {
                match p.byte() % 6 {
                    0 => {
                        let path = usize::from(p.byte() & 1);
                        let records = p.chunk();
                        let mut d = vec![0xee; SENDER_LEN + OVERHEAD + records.len()];
                        d[SENDER_LEN + OVERHEAD..].copy_from_slice(records);
                        let seq = sealers[path].next_seq();
                        if sealers[path].seal_in_place(&mut d).is_err() {
                            continue;
                        }
                        let item = (path, seq, d);
                        if kept.len() < KEPT {
                            kept.push(item);
                        } else {
                            kept[next_keep] = item;
                            next_keep = (next_keep + 1) % KEPT;
                        }
                    }
                    op @ 1..=3 => {
                        if kept.is_empty() {
                            continue;
                        }
                        let (path, seq, d) = &kept[pick(&mut p, kept.len())];
                        let mut d = d.clone();
                        let body_len = d.len() - SENDER_LEN;
                        let result = match op {
                            1 => rx.open_datagram(&mut d).map(<[u8]>::len),
                            2 => {
                                let bit = usize::from(p.u16()) % (body_len * 8);
                                d[SENDER_LEN + bit / 8] ^= 1 << (bit % 8);
                                let r = rx.open_datagram(&mut d).map(<[u8]>::len);
                                assert_eq!(r, Err(OpenError::Decrypt), "flipped bit {bit} opened");
                                continue;
                            }
                            _ => {
                                let keep = usize::from(p.u16()) % body_len;
                                let r = rx
                                    .open_datagram(&mut d[..SENDER_LEN + keep])
                                    .map(<[u8]>::len);
                                assert!(
                                    matches!(r, Err(OpenError::TooShort(_) | OpenError::Decrypt)),
                                    "datagram cut to {keep} gave {r:?}"
                                );
                                continue;
                            }
                        };
                        let epoch = seq >> 32;
                        let keyed = epoch == newest_epoch
                            || epoch + 1 == newest_epoch
                            || epoch == newest_epoch + 1;
                        if aead && !keyed {
                            assert_eq!(result, Err(OpenError::Decrypt), "epoch {epoch} opened");
                            continue;
                        }
                        let set = &mut accepted[*path];
                        let fresh = !set.contains(seq)
                            && set
                                .last()
                                .is_none_or(|&top| seq / WINDOW_SIZE + 1 >= top / WINDOW_SIZE);
                        if fresh {
                            assert_eq!(result, Ok(d.len() - OVERHEAD), "seq {seq} refused");
                            set.insert(*seq);
                            newest_epoch = newest_epoch.max(epoch);
                        } else {
                            assert_eq!(result, Err(OpenError::Replayed(*seq)));
                        }
                    }
                    4 => {
                        let mut junk = p.chunk().to_vec();
                        let r = rx.open_datagram(&mut junk);
                        assert!(
                            matches!(r, Err(OpenError::TooShort(_) | OpenError::Decrypt)),
                            "made-up datagram gave {r:?}"
                        );
                    }
                    _ => {
                        let path = usize::from(p.byte() & 1);
                        let base = u64::from(p.u16());
                        let shift = u32::from(p.byte() % 44);
                        sealers[path].set_next_seq(base << shift);
                    }
                }
            }
        },
    );
}

/// A fixed remote address for the harnesses that need one.
fn addr(n: u8) -> SocketAddr {
    SocketAddr::from(([10, 0, 0, n], 6783))
}

/// The start of every harness's clock.
fn epoch() -> Instant {
    Instant::now()
}

/// `now` moved on by `ms` milliseconds.
fn later(now: Instant, ms: u64) -> Instant {
    now + Duration::from_millis(ms)
}

/// The TCP payload of an Ethernet + IPv4/IPv6 + TCP frame, up to the IP packet's end: the
/// oracle the offload checks compare with, written apart from `offload`'s own parser (same
/// rules: IPv4 options allowed, not a fragment; IPv6 without extension headers).
/// Returns the payload's offset and the payload.
fn tcp_payload(f: &[u8]) -> Option<(usize, &[u8])> {
    let be16 = |b: &[u8], at: usize| {
        b.get(at..at + 2)
            .map_or(0, |x| usize::from(u16::from_be_bytes([x[0], x[1]])))
    };
    let ip = f.get(14..)?;
    let (ihl, end) = match f.get(12..14)? {
        [0x08, 0x00] => {
            let ihl = usize::from(ip.first()? & 0x0f) * 4;
            let ok = ip.first()? >> 4 == 4 && ihl >= 20 && *ip.get(9)? == 6;
            if !ok || be16(ip, 6) & 0x3fff != 0 {
                return None;
            }
            (ihl, be16(ip, 2))
        }
        [0x86, 0xdd] => {
            if ip.first()? >> 4 != 6 || *ip.get(6)? != 6 {
                return None;
            }
            (40, 40 + be16(ip, 4))
        }
        _ => return None,
    };
    let tcp = 14 + ihl;
    let doff = usize::from(f.get(tcp + 12)? >> 4) * 4;
    let (payload, end) = (tcp + doff, 14 + end);
    if doff < 20 || payload > end || end > f.len() {
        return None;
    }
    Some((payload, f.get(payload..end)?))
}

/// The concatenated TCP payloads of `frames` (frames that are not TCP add nothing).
fn payloads<'a>(frames: impl IntoIterator<Item = &'a [u8]>) -> Vec<u8> {
    let mut out = Vec::new();
    for f in frames {
        if let Some((_, p)) = tcp_payload(f) {
            out.extend_from_slice(p);
        }
    }
    out
}

/// Offload: the segments and super-packets it makes are at most a few times the input (each
/// segment repeats the headers, at most 134 bytes, for at least 48 payload bytes), plus the
/// coalescer's 64 KiB buffer.
pub const OFFLOAD_BOUND: Bound = Bound {
    per_byte: 64,
    base: 160 * 1024,
};

/// Reads `data` as a `virtio_net_hdr` and a TAP frame, then as further frames (each prefixed by
/// its little-endian u16 length) for the coalescer, and runs what the sleeve thread runs on them:
/// header parsing, checksum completion, segmentation and coalescing. Checks: the header
/// re-encodes to its bytes; segments written and appended are the same bytes, each with a
/// valid IPv4 header checksum, and their payloads, in order, are the super-packet's payload;
/// the coalescer's output carries the same TCP payload bytes, in order, as its input, and a
/// super-packet it makes segments back into that payload.
pub fn offload(data: &[u8], meter: HeapMeter) {
    use crate::overlay::offload::{
        complete_checksum, csum_fold, csum_partial, Coalescer, Tso, VnetHdr, GSO_NONE,
        VNET_F_NEEDS_CSUM, VNET_HDR_LEN,
    };

    /// Every segment of `tso`, checked against each other.
    fn segments(tso: &Tso<'_>) -> Vec<Vec<u8>> {
        let n = tso.segments();
        assert!(n >= 1, "no segments");
        let mut out = Vec::with_capacity(n);
        for i in 0..n {
            let len = tso.segment_len(i);
            assert!(
                len <= tso.max_segment_len(),
                "segment {i} longer than the largest"
            );
            let mut seg = vec![0; len];
            assert_eq!(tso.write_segment(i, &mut seg), len);
            let mut appended = vec![0xa5];
            assert_eq!(tso.append_segment(i, &mut appended), len);
            assert_eq!(appended.get(1..), Some(&seg[..]), "append and write differ");
            if seg.get(12..14) == Some(&[0x08, 0x00]) {
                let ihl = usize::from(seg.get(14).map_or(0, |b| b & 0x0f)) * 4;
                let hdr = seg.get(14..14 + ihl).unwrap_or_default();
                assert_eq!(!csum_fold(csum_partial(hdr)), 0, "bad IPv4 header checksum");
            }
            out.push(seg);
        }
        assert_eq!(tso.write_segment(n, &mut [0; 16]), 0);
        out
    }

    /// Checks that `segs` carry the payload of the super-packet `frame`, from its headers to
    /// its end (the TAP's length, not the IP header's, as the kernel does).
    fn same_payload(frame: &[u8], segs: &[Vec<u8>]) {
        let Some((at, _)) = tcp_payload(frame) else {
            panic!("a segmented frame is not TCP");
        };
        let whole = frame.get(at..).unwrap_or_default();
        assert!(
            payloads(segs.iter().map(Vec::as_slice)) == whole,
            "segments do not carry the super-packet's payload"
        );
    }

    let mut p = Program(data);
    let mut first = p.chunk().to_vec();
    let mut rest: Vec<&[u8]> = Vec::new();
    while !p.is_empty() {
        rest.push(p.chunk());
    }
    metered(data.len(), OFFLOAD_BOUND, meter, "offload", || {
        let Ok((hdr, frame)) = VnetHdr::split(&mut first) else {
            return;
        };
        assert_eq!(hdr.encode()[..], data[2..2 + VNET_HDR_LEN]);
        let plain = frame.to_vec();
        if hdr.flags & VNET_F_NEEDS_CSUM != 0 {
            let _ = complete_checksum(frame, &hdr);
        }
        let mut coalescer = Coalescer::new();
        let mut out: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
        let mut emit = |h: &[u8], f: &[u8]| out.push((h.to_vec(), f.to_vec()));
        let mut pushed: Vec<&[u8]> = Vec::new();
        let segs;
        if hdr.gso_type != GSO_NONE {
            if let Ok(tso) = Tso::new(frame, &hdr) {
                segs = segments(&tso);
                same_payload(frame, &segs);
                pushed.extend(segs.iter().map(Vec::as_slice));
            }
        } else {
            pushed.push(&plain);
        }
        pushed.extend(rest.iter().copied());
        for f in &pushed {
            coalescer.push(f, &mut emit);
        }
        coalescer.flush(&mut emit);
        assert!(
            payloads(out.iter().map(|(_, f)| f.as_slice())) == payloads(pushed.iter().copied()),
            "coalescing changed the payload"
        );
        for (h, f) in &out {
            let mut h = h.clone();
            let Ok((hdr, _)) = VnetHdr::split(&mut h) else {
                panic!("coalescer emitted a short header");
            };
            if hdr.gso_type != GSO_NONE {
                if let Ok(tso) = Tso::new(f, &hdr) {
                    let segs = segments(&tso);
                    same_payload(f, &segs);
                }
            }
        }
    });
}

/// The peers the forwarder harness's fabric knows: us, a sleeve neighbour, a fastdp
/// neighbour, a peer behind the sleeve neighbour, and a peer with no route.
const FWD_PEERS: [PeerName; 5] = [
    PeerName(0x0200_0000_0001),
    PeerName(0x0200_0000_0002),
    PeerName(0x0200_0000_0003),
    PeerName(0x0200_0000_0004),
    PeerName(0x0200_0000_0005),
];

/// A fixed fabric for the forwarder harness (see [`FWD_PEERS`]); a sixth name is unknown.
struct FuzzFabric;

impl crate::overlay::Fabric for FuzzFabric {
    fn our_name(&self) -> PeerName {
        FWD_PEERS[0]
    }

    fn unicast_next_hop(&self, dst: PeerName) -> Option<PeerName> {
        match FWD_PEERS.iter().position(|&p| p == dst)? {
            0 => Some(FWD_PEERS[0]),
            1 | 3 => Some(FWD_PEERS[1]),
            2 => Some(FWD_PEERS[2]),
            _ => None,
        }
    }

    fn broadcast_next_hops(&self, src: PeerName) -> &[PeerName] {
        match FWD_PEERS.iter().position(|&p| p == src) {
            Some(0) => &FWD_PEERS[1..3],
            Some(1) => &FWD_PEERS[2..3],
            Some(3) => &FWD_PEERS[2..4],
            _ => &[],
        }
    }

    fn is_direct_fastdp(&self, peer: PeerName) -> bool {
        peer == FWD_PEERS[2]
    }

    fn is_known_peer(&self, peer: PeerName) -> bool {
        FWD_PEERS.contains(&peer)
    }

    fn broadcast_has_onward_hops(&self, hop: PeerName, _src: PeerName) -> bool {
        hop != FWD_PEERS[2]
    }
}

/// Forwarder: its state before input is a few empty maps; each input byte can be queued in at
/// most a few copies (floods to two hops, segmentation's repeated headers), each record with a
/// 14-byte header, in buffers that double as they grow, and learnt MACs cost about a hundred
/// bytes per 12-byte frame header.
pub const FORWARD_BOUND: Bound = Bound {
    per_byte: 96,
    base: 64 * 1024,
};

/// Drives a [`Forwarder`](crate::overlay::Forwarder) with a program read from `data`: each
/// operation is an opcode byte and its operands: a captured frame, a received datagram (from
/// the expected address or another), a TAP super-packet (`virtio_net_hdr` and frame), a drain
/// of the output, time passing (MAC expiry), a peer forgotten, a max payload set. Checks: every
/// datagram polled or batched parses whole as records from us (at most
/// [`MAX_FRAMES_PER_DATAGRAM`](crate::overlay::MAX_FRAMES_PER_DATAGRAM) each, none for
/// ourself), nothing stays queued after a drain, every injected frame is at least an Ethernet
/// header, every special handed out is a special frame.
pub fn forward(data: &[u8], meter: HeapMeter) {
    use crate::overlay::offload::{Tso, VnetHdr};
    use crate::overlay::{Delivery, Forwarder, SegmentBatch, MAX_FRAMES_PER_DATAGRAM};
    use weft_wire::sleeve;

    fn check_datagram(d: &[u8], us: PeerName) -> usize {
        let Ok((sender, frames)) = sleeve::parse(d) else {
            panic!("forwarder made an unparsable datagram");
        };
        assert_eq!(sender, us);
        let mut n = 0;
        for f in frames {
            assert!(f.is_ok(), "forwarder made a malformed record");
            n += 1;
        }
        assert!((1..=MAX_FRAMES_PER_DATAGRAM).contains(&n), "{n} records");
        n
    }

    fn drain(fwd: &mut Forwarder, out: &mut Vec<u8>) {
        while let Some(peer) = fwd.poll_datagram(out) {
            assert_ne!(peer, FWD_PEERS[0], "a datagram for ourself");
            check_datagram(out, FWD_PEERS[0]);
        }
        for p in FWD_PEERS {
            assert_eq!(fwd.queued_frames(p), 0, "frames left queued after a drain");
        }
    }

    let fabric = FuzzFabric;
    let start = epoch();
    metered(data.len(), FORWARD_BOUND, meter, "forward", || {
        let mut fwd = Forwarder::new();
        let mut now = start;
        let mut out = Vec::new();
        let mut batch = SegmentBatch::new();
        let mut scratch = Vec::new();
        let mut deliver = |d: Delivery<'_>| match d {
            Delivery::Inject(f) => assert!(f.len() >= 14, "injected a runt"),
            Delivery::Special { frame, .. } => {
                assert!(sleeve::is_special(frame), "special that is not");
            }
        };
        let mut p = Program(data);
        while !p.is_empty() {
            let peer = |b: u8| {
                FWD_PEERS
                    .get(usize::from(b % 6))
                    .copied()
                    .unwrap_or(PeerName(0x0200_0000_0009))
            };
            match p.byte() % 8 {
                0 => {
                    let _ = fwd.handle_captured(p.chunk(), &fabric, now);
                }
                1 => {
                    let _ = fwd.handle_datagram(p.chunk(), &fabric, now, &mut deliver);
                }
                2 => {
                    let how = p.byte();
                    let from = addr(how % 3);
                    let expected = (how & 4 != 0).then(|| addr(1));
                    let d = p.chunk();
                    let _ = fwd.handle_datagram_from(d, from, expected, &fabric, now, &mut deliver);
                }
                3 => {
                    let mut buf = p.chunk().to_vec();
                    if let Ok((hdr, frame)) = VnetHdr::split(&mut buf) {
                        if let Ok(tso) = Tso::new(frame, &hdr) {
                            let _ = fwd.handle_captured_tso(
                                &tso,
                                &fabric,
                                now,
                                &mut batch,
                                &mut scratch,
                            );
                            if let Some(hop) = batch.peer() {
                                assert_ne!(hop, FWD_PEERS[0], "a batch for ourself");
                                assert_eq!(batch.datagrams().count(), batch.len());
                                for d in batch.datagrams() {
                                    assert_eq!(check_datagram(d, FWD_PEERS[0]), 1);
                                    assert!(d.len() <= batch.datagram_len());
                                }
                            }
                        }
                    }
                }
                4 => drain(&mut fwd, &mut out),
                5 => {
                    now = later(now, u64::from(p.u16()) * 100);
                    let _ = fwd.expire(now);
                }
                6 => fwd.forget_peer(peer(p.byte())),
                _ => {
                    let who = peer(p.byte());
                    fwd.set_max_payload(who, usize::from(p.u16()));
                }
            }
        }
        drain(&mut fwd, &mut out);
    });
}

/// Topology: a fresh [`Peers`](crate::topology::Peers) is a few hundred bytes; every peer,
/// connection and placeholder it learns costs at most a few hundred bytes (entry, map node,
/// name index, nickname and address strings) for at least 7 bytes of gossip, and the decoded
/// message (weft-wire's 64 per byte) is held while it is applied.
pub const TOPOLOGY_BOUND: Bound = Bound {
    per_byte: 160,
    base: 32 * 1024,
};

/// Drives a [`Peers`](crate::topology::Peers) with a program read from `data`: each operation
/// an opcode byte and its operands: a Weave `topology` gossip payload to merge
/// ([`apply_update`](crate::topology::Peers::apply_update)), a `weft-topology` message whose
/// deltas are applied ([`apply_delta`](crate::topology::Peers::apply_delta)), a garbage
/// collection, a local connection added, established or deleted, a short-id collision resolved.
/// Checks: we never lose ourself, never hold more than
/// [`MAX_PEERS`](crate::topology::MAX_PEERS), and the whole view re-encodes and decodes to itself.
pub fn topology_update(data: &[u8], meter: HeapMeter) {
    use rand::SeedableRng;
    use weft_wire::topology as wire;
    use weft_wire::topology_delta::Message;
    use weft_wire::PeerSummary;

    use crate::topology::{Peers, MAX_PEERS};

    let us = identity(1, "us");
    let view = metered(data.len(), TOPOLOGY_BOUND, meter, "topology_update", || {
        let mut peers = Peers::new(us.name, us.nick_name.clone(), us.uid, us.short_id);
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let mut p = Program(data);
        while !p.is_empty() {
            match p.byte() % 7 {
                0 => {
                    if let Ok(update) = wire::decode(p.chunk()) {
                        let _ = peers.apply_update(update);
                    }
                }
                1 => {
                    if let Ok(Message::Update { deltas, .. }) = Message::decode(p.chunk()) {
                        for d in &deltas {
                            let _ = peers.apply_delta(d);
                        }
                    }
                }
                2 => {
                    let _ = peers.garbage_collect();
                }
                3 => {
                    let b = p.byte();
                    let remote = PeerSummary {
                        name: PeerName(0x0200_0000_0000 + u64::from(b % 8)),
                        nick_name: format!("p{b}"),
                        uid: u64::from(b),
                        version: u64::from(p.byte()),
                        short_id: if b & 1 != 0 { u16::from(b) } else { 0 },
                        has_short_id: b & 1 != 0,
                    };
                    let _ = peers.add_local_connection(&remote, "10.0.0.9:6783".into(), b & 2 != 0);
                }
                4 => {
                    let _ = peers.establish_local_connection(PeerName(
                        0x0200_0000_0000 + u64::from(p.byte() % 8),
                    ));
                }
                5 => {
                    let _ = peers.delete_local_connection(PeerName(
                        0x0200_0000_0000 + u64::from(p.byte() % 8),
                    ));
                }
                _ => {
                    let _ = peers.resolve_short_id_collision(&mut rng);
                }
            }
            assert!(peers.get(us.name).is_some(), "we lost ourself");
            assert!(peers.len() <= MAX_PEERS, "{} peers held", peers.len());
        }
        peers.summaries(&peers.all_names())
    });
    assert_eq!(wire::decode(&wire::encode(&view)).ok(), Some(view));
}

/// Two routers ("us" and the remote) with one connection between them, established through
/// their own intros, heartbeats and gossip over an in-memory link.
struct Pair {
    us: crate::mesh::Mesh,
    remote: crate::mesh::Mesh,
    now: Instant,
}

/// Our connection id at `us`, and the remote's at its end.
const US_CONN: crate::mesh::ConnId = crate::mesh::ConnId(1);
const REMOTE_CONN: crate::mesh::ConnId = crate::mesh::ConnId(2);

impl Pair {
    fn new() -> Self {
        use crate::mesh::{Mesh, MeshConfig, Origin};

        let now = epoch();
        let config = |identity: LocalIdentity| MeshConfig {
            identity,
            port: 6783,
            conn_limit: 0,
            discovery: false,
            fastdp: false,
            mtu: 65535,
            topology_deltas: true,
            gossip_interval: crate::mesh::GOSSIP_INTERVAL,
        };
        let (id_us, id_remote) = (identity(1, "us"), identity(2, "remote"));
        let mut us = Mesh::new(config(id_us.clone()), 1, now);
        let mut remote = Mesh::new(config(id_remote.clone()), 2, now);
        let (intro_us, intro_remote) = (us.new_conn_id(), remote.new_conn_id());
        let mut hs_us = Handshake::new(&id_us, intro_us, false);
        let mut hs_remote = Handshake::new(&id_remote, intro_remote, false);
        let mut to_remote = hs_us.poll_transmit().unwrap_or_default();
        let mut to_us = hs_remote.poll_transmit().unwrap_or_default();
        let (Ok(Some(f_us)), Ok(Some(f_remote))) = (
            hs_remote.handle_input(&mut to_remote),
            hs_us.handle_input(&mut to_us),
        ) else {
            panic!("the pair's intros failed");
        };
        let dial = Origin::Outbound {
            dial_addr: addr(2),
            accept_new_peer: true,
        };
        let ready = (
            us.handle_connection_ready(
                US_CONN,
                &f_remote,
                addr(2),
                dial,
                intro_us,
                Default::default(),
                now,
            ),
            remote.handle_connection_ready(
                REMOTE_CONN,
                &f_us,
                addr(1),
                Origin::Inbound,
                intro_remote,
                Default::default(),
                now,
            ),
        );
        assert!(
            matches!(ready, (Ok(()), Ok(()))),
            "the pair did not connect: {ready:?}"
        );
        let mut pair = Self { us, remote, now };
        pair.advance(Duration::from_secs(2), &mut |_| {});
        pair
    }

    /// Moves every event across the link until both sides are quiet; `seen` is shown each
    /// message body `us` sends.
    fn pump(&mut self, seen: &mut dyn FnMut(&[u8])) {
        use crate::mesh::MeshEvent;

        loop {
            let mut moved = false;
            while let Some(ev) = self.us.poll_event(self.now) {
                moved = true;
                match ev {
                    MeshEvent::Send { body, .. } => {
                        seen(&body);
                        self.remote.handle_frame(REMOTE_CONN, &body, self.now);
                    }
                    MeshEvent::SendUdp { datagram, .. } => {
                        self.remote.handle_datagram(addr(1), &datagram, self.now);
                    }
                    // The driver closes the socket: both ends see the connection go.
                    MeshEvent::Close { conn, .. } => {
                        self.us.handle_connection_closed(conn, None, self.now);
                        self.remote
                            .handle_connection_closed(REMOTE_CONN, None, self.now);
                    }
                    _ => {}
                }
            }
            while let Some(ev) = self.remote.poll_event(self.now) {
                moved = true;
                match ev {
                    MeshEvent::Send { body, .. } => self.us.handle_frame(US_CONN, &body, self.now),
                    MeshEvent::SendUdp { datagram, .. } => {
                        self.us.handle_datagram(addr(2), &datagram, self.now);
                    }
                    MeshEvent::Close { conn, .. } => {
                        self.remote.handle_connection_closed(conn, None, self.now);
                        self.us.handle_connection_closed(US_CONN, None, self.now);
                    }
                    _ => {}
                }
            }
            if !moved {
                return;
            }
        }
    }

    /// Runs both routers' timers up to `d` from now.
    fn advance(&mut self, d: Duration, seen: &mut dyn FnMut(&[u8])) {
        let end = self.now + d;
        loop {
            self.pump(seen);
            let next = [self.us.poll_timeout(), self.remote.poll_timeout()]
                .into_iter()
                .flatten()
                .min()
                .unwrap_or(end);
            if next > end {
                break;
            }
            self.now = next.max(self.now);
            for m in [&mut self.us, &mut self.remote] {
                if m.poll_timeout().is_some_and(|t| t <= self.now) {
                    m.handle_timeout(self.now);
                }
            }
        }
        self.now = end;
        self.pump(seen);
    }
}

/// Mesh: two routers already exist before the input (not measured). What a frame can make
/// `us` hold is what topology gossip adds (see [`TOPOLOGY_BOUND`]), the routes over it, and the
/// messages it queues in answer (relays, pulls, its own entries: each at most a few times what
/// came in), plus timers, relay cache and route tables whatever the input.
pub const MESH_BOUND: Bound = Bound {
    per_byte: 256,
    base: 256 * 1024,
};

/// Feeds `us`, connected to one other router, a program read from `data`: each operation an
/// opcode byte and its operands: a protocol message body as if the remote sent it
/// ([`Mesh::handle_frame`](crate::mesh::Mesh::handle_frame)), time passing (timers run), a UDP
/// datagram from the remote's address. The link then carries both routers' answers until they
/// are quiet (so the remote's replies to what `us` says are part of the run). Checks: every
/// message body `us` sends decodes.
pub fn mesh_frames(data: &[u8], meter: HeapMeter) {
    use weft_wire::protocol::ProtocolMsg;

    let mut pair = Pair::new();
    let mut check = |body: &[u8]| {
        assert!(
            ProtocolMsg::decode(body).is_ok(),
            "we sent a message that does not decode"
        );
    };
    metered(data.len(), MESH_BOUND, meter, "mesh_frames", || {
        let mut p = Program(data);
        while !p.is_empty() {
            match p.byte() % 3 {
                0 => {
                    let body = p.chunk();
                    pair.us.handle_frame(US_CONN, body, pair.now);
                    pair.pump(&mut check);
                }
                1 => {
                    let ms = u64::from(p.u16());
                    pair.advance(Duration::from_millis(ms), &mut check);
                }
                _ => {
                    let d = p.chunk();
                    pair.us.handle_datagram(addr(2), d, pair.now);
                    pair.pump(&mut check);
                }
            }
        }
    });
}

/// Message bodies `us` sends while the pair connects, as seeds for [`mesh_frames`] (each a
/// frame operation): the same kinds of message the remote sends.
pub fn mesh_frames_seeds() -> Vec<Vec<u8>> {
    let mut bodies = Vec::new();
    let mut pair = Pair::new();
    pair.advance(Duration::from_secs(40), &mut |b| bodies.push(b.to_vec()));
    bodies.sort();
    bodies.dedup();
    bodies
        .into_iter()
        .map(|b| {
            let mut seed = vec![0];
            seed.extend_from_slice(&(b.len() as u16).to_le_bytes());
            seed.extend_from_slice(&b);
            seed
        })
        .collect()
}

/// DNS queries: the responder's answer is at most one DNS message (64 KiB, in a buffer that may
/// have doubled past it once while growing: 128 KiB) plus the records behind it (a 200-entry
/// name: about 300 bytes each, 60 KiB) and the encoder's compression table; parsing keeps only
/// the first question (its name at most 255 bytes however compressed), so the input adds
/// nothing per byte beyond what hickory's reader holds while it reads one question.
pub const DNS_QUERY_BOUND: Bound = Bound {
    per_byte: 16,
    base: 256 * 1024,
};

/// The zone the `dns_query` harness answers from (built once, outside the measured part): a few
/// names, one with 200 entries (so UDP answers truncate), and their reverse entries.
fn dns_zone() -> crate::dns::Zone {
    use std::net::Ipv4Addr;

    use crate::dns::{Zone, ZoneConfig};

    let mut z = Zone::new(ZoneConfig::new(PeerName(0x0a00_0000_0001)));
    let mut add = |name: &str, c: &str, a: Ipv4Addr| {
        // Cannot fail: the names are in the domain and valid.
        let _ = z.add(name, c, a, 1_700_000_000);
    };
    add("web.weave.local.", "c1", Ipv4Addr::new(10, 32, 0, 1));
    add("Web.weave.local.", "c2", Ipv4Addr::new(10, 32, 0, 2));
    add("db.weave.local.", "c3", Ipv4Addr::new(10, 32, 0, 3));
    add(
        &format!("{}.weave.local.", "l".repeat(63)),
        "c4",
        Ipv4Addr::new(10, 32, 0, 4),
    );
    for i in 0..200u8 {
        add("many.weave.local.", "m", Ipv4Addr::new(10, 40, 0, i));
    }
    z
}

/// Feeds a DNS query to the responder: the first byte picks the transport (bit 0: TCP) and
/// the shuffle's seed, the rest is the query. An answer must be one DNS response with the
/// query's id, within 64 KiB, and over UDP with more than one record within 512 bytes or the
/// query's EDNS0 size.
pub fn dns_query(data: &[u8], meter: HeapMeter) {
    use std::sync::OnceLock;

    use rand::SeedableRng;

    use crate::dns::{Action, Responder, Transport};

    static ZONE: OnceLock<crate::dns::Zone> = OnceLock::new();
    let zone = ZONE.get_or_init(dns_zone);
    let (mode, query) = data.split_first().map_or((0, data), |(&m, q)| (m, q));
    let transport = if mode & 1 == 1 {
        Transport::Tcp
    } else {
        Transport::Udp
    };
    let action = metered(data.len(), DNS_QUERY_BOUND, meter, "dns_query", || {
        let mut rng = rand::rngs::StdRng::seed_from_u64(u64::from(mode));
        Responder::default().answer(zone, query, transport, &mut rng)
    });
    let Action::Answer(bytes) = action else {
        return;
    };
    assert!(bytes.len() <= crate::dns::responder::MAX_MESSAGE);
    let m = match hickory_proto::op::Message::from_vec(&bytes) {
        Ok(m) => m,
        Err(e) => panic!("answer does not parse: {e}"),
    };
    assert_eq!(m.message_type(), hickory_proto::op::MessageType::Response);
    assert_eq!(bytes.get(..2), query.get(..2), "answer id");
    // The limit as hickory reads the query (it raises an EDNS0 size below 512 to 512, which
    // only loosens the check); queries it does not read are not checked.
    let parsed = hickory_proto::op::Message::from_vec(query);
    if let (Transport::Udp, true, Ok(q)) = (transport, m.answers().len() > 1, parsed) {
        let limit = q
            .extensions()
            .as_ref()
            .map_or(512, |e| usize::from(e.max_payload()));
        assert!(bytes.len() <= limit, "{} bytes over {limit}", bytes.len());
    }
}

// Tests may unwrap: a panic is how they fail.
#[cfg(test)]
mod tests {
    use super::HeapMeter;
    use crate::fuzz_support::{corpus, replay_corpus as replay};

    /// Writes the seeds of `fuzz/corpus/mesh_frames/` that come from a live pair of routers:
    /// `cargo test -p weft-core --lib write_mesh_frames_seeds -- --ignored`.
    #[test]
    #[ignore = "writes seed files"]
    fn write_mesh_frames_seeds() {
        let dir = corpus("mesh_frames");
        std::fs::create_dir_all(&dir).unwrap();
        for (i, seed) in super::mesh_frames_seeds().iter().enumerate() {
            std::fs::write(dir.join(format!("sent-{i}")), seed).unwrap();
        }
    }

    #[test]
    fn an_exceeded_heap_bound_is_a_finding() {
        let greedy: HeapMeter = |f| {
            f();
            u64::MAX
        };
        assert!(std::panic::catch_unwind(|| super::handshake(&[1, 2, 3], greedy)).is_err());
    }

    /// The genuine-remote mode reaches the end of the intro (so the fuzzer starts past it).
    #[test]
    fn genuine_encrypted_intro_completes() {
        let feat = std::fs::read(corpus("features").join("live-hostA")).unwrap();
        for outbound in [false, true] {
            let key = weft_crypto::key::EphemeralKey::from_secret([1; 32]);
            let id = super::identity(1, "fuzz");
            let mut hs = super::Handshake::with_key(&id, 11, false, b"fuzz", outbound, key);
            let mut buf = super::genuine_intro(&feat, b"fuzz", !outbound);
            assert!(hs.handle_input(&mut buf).unwrap().is_some());
            let (_, mut rx) = hs.into_session(buf);
            assert_eq!(rx.poll_body().unwrap(), Some(&b"\x00"[..]));
        }
    }

    #[test]
    fn corpora_replay_without_panics() {
        assert!(replay("handshake", super::handshake) > 0);
        assert!(replay("handshake_encrypted", super::handshake_encrypted) > 0);
        assert!(replay("sleeve_crypto", super::sleeve_crypto) > 0);
        assert!(replay("offload", super::offload) > 0);
        assert!(replay("forward", super::forward) > 0);
        assert!(replay("topology_update", super::topology_update) > 0);
        assert!(replay("mesh_frames", super::mesh_frames) > 0);
        assert!(replay("dns_query", super::dns_query) > 0);
    }
}
