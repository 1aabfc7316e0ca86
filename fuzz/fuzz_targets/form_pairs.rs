//! Fuzz target: `weftd::fuzzing::form_pairs` (the harness lives in the library), with its heap
//! measured per input.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| weftd::fuzzing::form_pairs(data, weft_fuzz::heap_peak));
