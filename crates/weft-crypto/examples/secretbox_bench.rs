//! Seal and open throughput of weft's secretbox binding at a sleeve datagram's size and at
//! 64 KiB: `cargo run --release -p weft-crypto --example secretbox_bench`. The comparison with
//! other implementations is in `weft_crypto::secretbox`'s module doc.

use std::hint::black_box;
use std::time::Instant;

use weft_crypto::secretbox::{open, seal, TAG_LEN};
use weft_crypto::SessionKey;

/// Bytes processed per figure: enough for a stable rate, little enough to finish in seconds.
const BYTES_PER_RUN: usize = 2_000_000_000;

fn rate(name: &str, size: usize, mut f: impl FnMut()) {
    for _ in 0..100 {
        f();
    }
    let iters = BYTES_PER_RUN / size;
    let start = Instant::now();
    for _ in 0..iters {
        f();
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "{name:<5} {size:>6} B  {:.3} GB/s",
        (iters * size) as f64 / secs / 1e9
    );
}

fn main() {
    let key = SessionKey::from_bytes([3; 32]);
    let nonce = [5u8; 24];
    for size in [1400usize, 65536] {
        let mut buf = vec![7u8; TAG_LEN + size];
        rate("seal", size, || {
            black_box(seal(&key, &nonce, &mut buf));
        });
        let mut sealed = vec![7u8; TAG_LEN + size];
        seal(&key, &nonce, &mut sealed);
        let mut work = sealed.clone();
        rate("open", size, || {
            // Opening decrypts in place, so each round starts again from the sealed bytes (a
            // copy the figure includes, as a receive path copying out of a ring would).
            work.copy_from_slice(&sealed);
            black_box(open(&key, &nonce, &mut work).is_ok());
        });
    }
}
