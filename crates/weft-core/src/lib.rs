//! weft-core: the mesh's protocol logic as sans-IO state machines.
//!
//! Nothing here opens a socket, reads a clock or spawns a task: callers pass bytes, events and
//! `now`, and get back bytes to send, events and the next deadline. That keeps every behaviour
//! deterministic, unit- and property-testable, and simulatable with hundreds of peers in one
//! process.
// Tests may unwrap: a panic is how they fail.
#![cfg_attr(test, allow(clippy::unwrap_used))]
#![warn(missing_docs)]

pub mod connection_maker;
pub mod dns;
#[doc(hidden)]
pub mod fuzz_support;
#[cfg(any(fuzzing, test))]
pub mod fuzzing;
pub mod handshake;
pub mod ipam;
pub mod mesh;
pub mod overlay;
pub mod overlay_switch;
pub mod pace;
pub mod routes;
pub mod session;
pub mod topology;
