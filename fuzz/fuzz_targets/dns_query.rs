//! Fuzz target: `weft_core::fuzzing::dns_query` (the harness lives in the library), with its heap
//! measured per input.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| weft_core::fuzzing::dns_query(data, weft_fuzz::heap_peak));
