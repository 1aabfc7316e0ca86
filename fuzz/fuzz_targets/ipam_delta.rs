//! Fuzz target: `weft_wire::fuzzing::ipam_delta` (the harness lives in the library), with its heap
//! measured per input.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| weft_wire::fuzzing::ipam_delta(data, weft_fuzz::heap_peak));
