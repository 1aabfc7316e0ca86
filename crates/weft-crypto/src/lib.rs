//! weft-crypto: Weave Net's password crypto, wire-compatible and sans-IO.
//!
//! With `--password`, two Weave Net peers agree on one 32-byte session key per connection
//! during the intro ([`key`]), then seal every control-connection frame with NaCl secretbox
//! ([`tcp`]) and, on untrusted connections, every sleeve UDP datagram with the same key
//! ([`sleeve`]). Everything here is deterministic: the one random input (the ephemeral
//! Curve25519 secret) comes from an RNG the caller passes in, and nothing reads a clock or
//! touches a socket.
//!
//! Between two weft peers the sleeve can use weft's own AES-256-GCM scheme instead ([`aead`]),
//! about four times faster; the control connection always uses Weave Net's.
//!
//! XSalsa20-Poly1305 is libsodium's (bound in [`secretbox`], the only FFI, in `sys`): it was the
//! fastest candidate measured on the project's machines (figures in [`secretbox`]).
#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod aead;
pub mod key;
pub mod secretbox;
pub mod sleeve;
mod sys;
pub mod tcp;

pub use key::{EphemeralKey, SessionKey, PUBLIC_KEY_LEN};
