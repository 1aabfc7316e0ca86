//! Fuzz target: `weft_core::fuzzing::handshake_encrypted` (the harness lives in the library), with its heap
//! measured per input.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| weft_core::fuzzing::handshake_encrypted(
    data,
    weft_fuzz::heap_peak
));
