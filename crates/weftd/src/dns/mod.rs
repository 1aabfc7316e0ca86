//! weftDNS in the daemon: what the sans-IO zone and responder in weft-core need from the
//! outside world. Today: the upstream servers and the forwarding of queries outside the
//! domain ([`upstream`]).

pub mod upstream;
