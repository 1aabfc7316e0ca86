//! weft-wire: the byte formats weft shares with Weave Net peers.
//!
//! Everything that crosses a socket is encoded and decoded here and nowhere else: Go `gob`
//! values, the mesh protocol header and frames, the handshake features map, gossip message
//! framing, the topology payload, weft's own topology deltas ([`topology_delta`]), IPAM's
//! gossip payloads ([`ipam`]), weft's own IPAM ring deltas ([`ipam_delta`]) and DNS's gossip
//! payload ([`dns`]). Go structs are
//! declared once with [`gob_struct!`]. Decoders are strict (trailing bytes, oversize lengths
//! and malformed input are errors, never panics) because every byte here may come from a
//! hostile peer. No I/O and no clocks live in this crate.
//!
//! Every decoder's memory is bounded by its input: while decoding `n` bytes (and holding the
//! result) it never holds more than [`DECODE_HEAP_PER_BYTE`]` * n + `[`DECODE_HEAP_BASE`] heap
//! bytes, and its work is linear in `n`; `tests/alloc_bound.rs` and the fuzz targets measure
//! this with a counting allocator. Errors carry at most a bounded prefix of any text a peer
//! chose ([`bounded`]), never a whole peer-supplied value or type.
//!
//! Left out: encryption (NaCl framing of TCP and UDP), which wraps these formats, and DNS
//! queries and answers (the `hickory-proto` crate's, used where they are answered).
// Tests may unwrap: a panic is how they fail.
#![cfg_attr(test, allow(clippy::unwrap_used))]
#![warn(missing_docs)]

pub mod dns;
mod error;
pub mod features;
pub mod frame;
pub mod gob;
pub mod header;
pub mod ipam;
pub mod ipam_delta;
pub mod peer;
pub mod protocol;
pub mod sleeve;
pub mod topology;
pub mod topology_delta;

#[cfg(any(fuzzing, test))]
pub mod fuzzing;

pub use error::{bounded, DecodeError, EncodeError, MAX_PEER_TEXT};

/// Heap bytes a decoder may hold at once per byte of input (see the crate docs).
pub const DECODE_HEAP_PER_BYTE: usize = 64;
/// Heap bytes a decoder may hold at once whatever its input (first allocations of its tables).
pub const DECODE_HEAP_BASE: usize = 16 * 1024;
pub use peer::{ConnectionSummary, PeerName, PeerSummary};
