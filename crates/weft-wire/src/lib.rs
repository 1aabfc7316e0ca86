//! weft-wire: the byte formats weft shares with Weave Net peers.
//!
//! Everything that crosses a socket is encoded and decoded here and nowhere else: Go `gob`
//! values, the mesh protocol header and frames, the handshake features map, gossip message
//! framing and the topology payload. Decoders are strict (trailing bytes, oversize lengths and
//! malformed input are errors, never panics) because every byte here may come from a hostile
//! peer. No I/O and no clocks live in this crate.
#![warn(missing_docs)]

pub mod peer;

pub use peer::{ConnectionSummary, PeerName, PeerSummary};
