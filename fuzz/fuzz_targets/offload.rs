//! Fuzz target: `weft_core::fuzzing::offload` (the harness lives in the library), with its heap
//! measured per input.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| weft_core::fuzzing::offload(data, weft_fuzz::heap_peak));
