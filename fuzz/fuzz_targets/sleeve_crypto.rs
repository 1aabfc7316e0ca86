//! Fuzz target: `weft_core::fuzzing::sleeve_crypto` (the harness lives in the library), with its heap
//! measured per input.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| weft_core::fuzzing::sleeve_crypto(
    data,
    weft_fuzz::heap_peak
));
