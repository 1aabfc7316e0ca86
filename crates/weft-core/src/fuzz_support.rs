//! What every crate's fuzz harnesses share: the heap meter type, the bound a harness asserts,
//! and the replay of a checked-in seed corpus in plain unit tests. Compiled always (and hidden
//! from the docs), because a crate's `cfg(test)` code is not visible to the crates that depend
//! on it: weftd's harnesses use these too.

use std::path::PathBuf;

/// Runs the closure it is given and returns the most heap bytes held at once while it ran
/// (allocations made by the closure's thread, net of frees). The same type as
/// `weft_wire::fuzzing::HeapMeter`, so one meter serves every crate's harness.
pub type HeapMeter = fn(&mut dyn FnMut()) -> u64;

/// A meter that measures nothing (for plain test runs without a counting allocator).
pub fn unmetered(f: &mut dyn FnMut()) -> u64 {
    f();
    0
}

/// A heap bound: at most `per_byte * input + base` bytes held at once.
#[derive(Debug, Clone, Copy)]
pub struct Bound {
    /// Bytes per input byte.
    pub per_byte: u64,
    /// Bytes whatever the input.
    pub base: u64,
}

/// Runs `f` under `meter` and asserts `bound` for `len` input bytes.
pub fn metered<T>(
    len: usize,
    bound: Bound,
    meter: HeapMeter,
    what: &str,
    f: impl FnOnce() -> T,
) -> T {
    let mut f = Some(f);
    let mut out = None;
    let peak = meter(&mut || {
        if let Some(f) = f.take() {
            out = Some(f());
        }
    });
    let limit = bound
        .per_byte
        .saturating_mul(len as u64)
        .saturating_add(bound.base);
    assert!(
        peak <= limit,
        "{what}: {peak} heap bytes for {len} input bytes (limit {limit})"
    );
    match out {
        Some(v) => v,
        None => panic!("{what}: the meter did not run the harness"),
    }
}

/// `fuzz/corpus/<target>/` of this repository.
pub fn corpus(target: &str) -> PathBuf {
    [
        env!("CARGO_MANIFEST_DIR"),
        "..",
        "..",
        "fuzz",
        "corpus",
        target,
    ]
    .iter()
    .collect()
}

/// Runs every file of `fuzz/corpus/<target>/` and each of its prefixes through `entry`, unmetered;
/// returns how many files ran. For tests: a missing corpus or unreadable file panics.
pub fn replay_corpus(target: &str, entry: fn(&[u8], HeapMeter)) -> usize {
    let dir = corpus(target);
    let entries = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("fuzz corpus {} missing: {e}", dir.display()));
    let mut n = 0;
    for file in entries {
        let path = file
            .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
            .path();
        let data =
            std::fs::read(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
        entry(&data, unmetered);
        for cut in 0..data.len() {
            entry(data.get(..cut).unwrap_or_default(), unmetered);
        }
        n += 1;
    }
    n
}
