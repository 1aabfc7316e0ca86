//! The local peer's own addresses (Weave's `space.Space`): which of the ranges the ring gives us
//! are allocated and which are free, which address an allocation gets, and which block a
//! donation gives away.
//!
//! Two sets of addresses, each a sorted list of boundaries (even positions start a run, odd
//! ones end it, runs coalesced), as Weave keeps them: the lists stay short however many
//! addresses are allocated, since allocations are lowest-first and so mostly contiguous. The
//! choices are Weave's exactly, because the addresses containers get must match:
//!
//! * allocation takes the **lowest** free address in the requested range;
//! * donation finds the largest CIDR-aligned free block in the requested range (later chunks
//!   win ties) and, if that block is more than half of our free addresses there, gives only its
//!   upper half.

use std::fmt;

use super::{Address, Range};

/// A set of addresses as sorted run boundaries.
#[derive(Clone, Default, PartialEq, Eq)]
struct Runs(Vec<u32>);

impl Runs {
    fn runs(&self) -> impl Iterator<Item = Range> + '_ {
        self.0
            .chunks_exact(2)
            .map(|c| Range::new(Address(c[0]), Address(c[1])))
    }

    fn contains(&self, a: Address) -> bool {
        // Inside a run iff an odd number of boundaries are ≤ a.
        self.0.partition_point(|&b| b <= a.0) % 2 == 1
    }

    fn count(&self) -> u64 {
        self.runs().map(|r| u64::from(r.size())).sum()
    }

    /// Union (`remove == false`) or difference (`remove == true`) with `[start, end)`.
    fn edit(&mut self, r: Range, remove: bool) {
        if r.start >= r.end {
            return;
        }
        let lo = self.0.partition_point(|&b| b < r.start.0);
        let hi = self.0.partition_point(|&b| b <= r.end.0);
        // A boundary is needed at start when start falls outside a run (adding) or inside one
        // (removing); the same at end, judged from the boundaries at or below it.
        let outside = |pos: usize| pos & 1 == 0;
        let mut middle = Vec::with_capacity(2);
        if outside(lo) != remove {
            middle.push(r.start.0);
        }
        if outside(hi) != remove {
            middle.push(r.end.0);
        }
        self.0.splice(lo..hi, middle);
    }
}

/// Our owned addresses: allocated (`ours`) and free.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Space {
    ours: Runs,
    free: Runs,
}

/// An address operation the space refuses; the messages are Weave Net's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SpaceError {
    /// Claim of an address that is allocated or not ours.
    #[error("Address {0} is not free to claim")]
    NotFree(Address),
    /// Free of an address we do not hold.
    #[error("Address {0} is not ours")]
    NotOurs(Address),
}

impl Space {
    /// An empty space.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `r` as free space (addresses of it already allocated stay allocated).
    pub fn add(&mut self, r: Range) {
        self.free.edit(r, false);
        let taken: Vec<Range> = self.ours.runs().filter(|o| o.overlaps(r)).collect();
        for o in taken {
            self.free.edit(o, true);
        }
    }

    /// Forgets everything (on `reset`, after our ranges went to an heir).
    pub fn clear(&mut self) {
        self.ours.0.clear();
        self.free.0.clear();
    }

    /// Free chunks cut to `r`, lowest first.
    fn free_in(&self, r: Range) -> impl Iterator<Item = Range> + '_ {
        self.free.runs().filter_map(move |c| {
            let cut = Range::new(c.start.max(r.start), c.end.min(r.end));
            (cut.start < cut.end).then_some(cut)
        })
    }

    /// Takes the lowest free address in `r`, if any.
    pub fn allocate(&mut self, r: Range) -> Option<Address> {
        let a = self.free_in(r).next()?.start;
        self.take(a);
        Some(a)
    }

    fn take(&mut self, a: Address) {
        let one = Range::new(a, a.offset(1));
        self.ours.edit(one, false);
        self.free.edit(one, true);
    }

    /// Marks a specific free address as allocated.
    pub fn claim(&mut self, a: Address) -> Result<(), SpaceError> {
        if !self.free.contains(a) {
            return Err(SpaceError::NotFree(a));
        }
        self.take(a);
        Ok(())
    }

    /// Returns an allocated address to the free space.
    pub fn free(&mut self, a: Address) -> Result<(), SpaceError> {
        if !self.ours.contains(a) || self.free.contains(a) {
            return Err(SpaceError::NotOurs(a));
        }
        let one = Range::new(a, a.offset(1));
        self.ours.edit(one, true);
        self.free.edit(one, false);
        Ok(())
    }

    /// Whether `a` is allocated here.
    pub fn is_allocated(&self, a: Address) -> bool {
        self.ours.contains(a)
    }

    /// Number of allocated addresses.
    pub fn num_owned(&self) -> u64 {
        self.ours.count()
    }

    /// Number of free addresses.
    pub fn num_free(&self) -> u64 {
        self.free.count()
    }

    /// Number of free addresses inside `r`.
    pub fn num_free_in(&self, r: Range) -> u32 {
        // At most r.size(), so it fits.
        self.free_in(r)
            .map(Range::size)
            .fold(0u32, u32::saturating_add)
    }

    /// Whether any address of `r` is allocated (Weave's `hasAllocations`, as the ring's merge
    /// asks it).
    pub fn has_allocations(&self, r: Range) -> bool {
        self.num_free_in(r) != r.size()
    }

    /// Chooses and removes the block to give a peer that asked for space in `r`; `None` when
    /// nothing in `r` is free.
    pub fn donate(&mut self, r: Range) -> Option<Range> {
        let mut biggest = Range::default();
        for chunk in self.free_in(r) {
            // `>=` twice: a later chunk wins a tie, as in Weave.
            if chunk.size() >= biggest.size() {
                let block = chunk.biggest_cidr_range();
                if block.size() >= biggest.size() {
                    biggest = block;
                }
            }
        }
        if biggest.size() == 0 {
            return None;
        }
        // Give at most half of what we have free there (a single address goes whole).
        if biggest.size() > self.num_free_in(r) / 2 {
            biggest.start = biggest.start.offset(biggest.size() / 2);
        }
        self.ours.edit(biggest, true);
        self.free.edit(biggest, true);
        Some(biggest)
    }

    /// Everything we own, allocated or free, as coalesced ranges.
    pub fn owned_ranges(&self) -> Vec<Range> {
        let mut all = self.ours.clone();
        for r in self.free.runs() {
            all.edit(r, false);
        }
        all.runs().collect()
    }

    /// Given all the space the ring says we own, adds what we do not know yet as free space;
    /// nothing is removed (Weave's `UpdateRanges`).
    pub fn update_ranges(&mut self, ranges: &[Range]) {
        let mut new = Runs::default();
        for &r in ranges {
            new.edit(r, false);
        }
        for r in self.owned_ranges() {
            new.edit(r, true);
        }
        for r in new.runs().collect::<Vec<_>>() {
            self.free.edit(r, false);
        }
    }

    /// Drops free addresses outside `ranges` (space the ring no longer gives us); allocated
    /// addresses stay, since containers use them.
    pub fn retain_free_within(&mut self, ranges: &[Range]) {
        let mut keep = Runs::default();
        for &r in ranges {
            keep.edit(r, false);
        }
        let outside: Vec<Range> = {
            let mut gaps = Runs(vec![0, u32::MAX]);
            for r in keep.runs() {
                gaps.edit(r, true);
            }
            gaps.runs().collect()
        };
        for r in outside {
            self.free.edit(r, true);
        }
    }
}

impl fmt::Debug for Space {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Space")
            .field("ours", &self.ours.runs().collect::<Vec<_>>())
            .field("free", &self.free.runs().collect::<Vec<_>>())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn r(s: u32, e: u32) -> Range {
        Range::new(Address(s), Address(e))
    }

    #[test]
    fn ipam_space_allocates_lowest_and_frees() {
        let mut s = Space::new();
        s.add(r(10, 20));
        assert_eq!(s.allocate(r(0, 100)), Some(Address(10)));
        assert_eq!(s.allocate(r(12, 100)), Some(Address(12)));
        assert_eq!(s.allocate(r(0, 100)), Some(Address(11)));
        assert_eq!(s.num_owned(), 3);
        assert_eq!(s.num_free(), 7);
        assert_eq!(s.claim(Address(11)), Err(SpaceError::NotFree(Address(11))));
        assert_eq!(s.claim(Address(15)), Ok(()));
        assert_eq!(s.free(Address(11)), Ok(()));
        assert_eq!(s.free(Address(11)), Err(SpaceError::NotOurs(Address(11))));
        assert_eq!(s.allocate(r(0, 100)), Some(Address(11)));
        assert_eq!(s.allocate(r(20, 30)), None);
        assert_eq!(s.owned_ranges(), vec![r(10, 20)]);
        assert!(s.has_allocations(r(15, 16)));
        assert!(!s.has_allocations(r(16, 20)));
    }

    #[test]
    fn ipam_space_donates_upper_half_of_biggest_aligned_block() {
        // B in the worked example: [128, 256) with 128 allocated.
        let mut b = Space::new();
        b.add(r(128, 256));
        assert_eq!(b.allocate(r(1, 255)), Some(Address(128)));
        assert_eq!(b.donate(r(0, 256)), Some(r(224, 256)));
        // A: [0, 128) with 1 allocated.
        let mut a = Space::new();
        a.add(r(0, 128));
        assert_eq!(a.allocate(r(1, 255)), Some(Address(1)));
        assert_eq!(a.donate(r(0, 256)), Some(r(96, 128)));
        // A single address asked for goes whole.
        let mut c = Space::new();
        c.add(r(0, 128));
        assert_eq!(c.donate(r(5, 6)), Some(r(5, 6)));
        assert_eq!(c.donate(r(5, 6)), None);
        // Not more than half: a block that is at most half of what is free goes whole.
        let mut d = Space::new();
        d.add(r(0, 8));
        d.add(r(9, 13));
        assert_eq!(d.donate(r(0, 100)), Some(r(4, 8)));
    }

    #[test]
    fn ipam_space_update_ranges_only_adds() {
        let mut s = Space::new();
        s.add(r(0, 10));
        s.claim(Address(3)).unwrap();
        s.update_ranges(&[r(0, 20), r(30, 40)]);
        assert_eq!(s.owned_ranges(), vec![r(0, 20), r(30, 40)]);
        assert!(s.is_allocated(Address(3)));
        assert_eq!(s.num_free(), 29);
    }

    proptest! {
        #[test]
        fn ipam_space_matches_a_plain_set(ops in proptest::collection::vec((0u8..4, 0u32..64, 1u32..8), 1..80)) {
            let mut s = Space::new();
            let mut free = std::collections::BTreeSet::new();
            let mut ours = std::collections::BTreeSet::new();
            for (op, a, n) in ops {
                match op {
                    0 => {
                        s.add(r(a, a + n));
                        for x in a..a + n { if !ours.contains(&x) { free.insert(x); } }
                    }
                    1 => {
                        let got = s.allocate(r(a, a + n));
                        let want = free.range(a..a + n).next().copied();
                        prop_assert_eq!(got.map(|x| x.0), want);
                        if let Some(x) = want { free.remove(&x); ours.insert(x); }
                    }
                    2 => {
                        let ok = s.free(Address(a)).is_ok();
                        prop_assert_eq!(ok, ours.contains(&a));
                        if ok { ours.remove(&a); free.insert(a); }
                    }
                    _ => {
                        if let Some(d) = s.donate(r(a, a + 4 * n)) {
                            for x in d.start.0..d.end.0 {
                                prop_assert!(free.remove(&x), "donated {} which was not free", x);
                            }
                        } else {
                            prop_assert_eq!(free.range(a..a + 4 * n).count(), 0);
                        }
                    }
                }
                prop_assert_eq!(s.num_free(), free.len() as u64);
                prop_assert_eq!(s.num_owned(), ours.len() as u64);
            }
        }
    }
}
