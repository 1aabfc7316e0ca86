//! The heap meter every fuzz target hands to its `weft_wire::fuzzing` harness: the peak heap
//! bytes held by the calling thread while the harness's closure runs, counted by the
//! `allocation-counter` global allocator (linked into every target through this crate).

/// Runs `f` and returns the most heap bytes it held at once (see
/// `weft_wire::fuzzing::HeapMeter`).
pub fn heap_peak(f: &mut dyn FnMut()) -> u64 {
    allocation_counter::measure(f).bytes_max
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_meter_sees_the_closures_allocations() {
        let peak = super::heap_peak(&mut || {
            let v = std::hint::black_box(vec![0u8; 10_000]);
            drop(v);
        });
        assert!(peak >= 10_000, "{peak}");
    }
}
