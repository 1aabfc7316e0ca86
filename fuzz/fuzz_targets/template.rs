//! Fuzz target: `weftd::fuzzing::template` (the harness lives in the library), with its heap
//! measured per input.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| weftd::fuzzing::template(data, weft_fuzz::heap_peak));
