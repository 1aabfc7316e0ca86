//! Fuzz target: `weft_wire::fuzzing::dns_gossip` (the harness lives in the library), with its heap
//! measured per input.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| weft_wire::fuzzing::dns_gossip(data, weft_fuzz::heap_peak));
