//! The topology rules behind weft's own gossip between weft peers
//! ([`weft_wire::topology_delta`]): applying one peer's change on top of the version it was made
//! from, computing our own change since what we last announced, and telling who is newer for
//! digests and pulls.
//!
//! A delta applies only to the exact base version of the same incarnation; anything else is a
//! gap the caller fills by pulling that peer's full entry (Weave's merge rules then apply as
//! usual), so a missed delta costs a pull, never a wrong view.

use weft_wire::topology_delta::{Delta, Ref};
use weft_wire::{ConnectionSummary, PeerName, PeerSummary};

use super::{normalise, plausible, Peers, TopologyError, MAX_CONNECTIONS_PER_PEER, SHORT_ID_SPACE};

/// Most deltas one `weft-topology` message may carry; more is an error that closes the
/// connection (see the module docs of [`crate::topology`], "Bounds").
pub const MAX_DELTAS_PER_MESSAGE: usize = 4096;

/// Above this many changes per listed connection, one merge is cheaper than a `memmove` each.
const MERGE_RATIO: usize = 16;

/// What [`Peers::apply_delta`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeltaOutcome {
    /// The peer's entry moved to the delta's version: relay the delta.
    Applied,
    /// We already had this version or a newer one; nothing changed.
    Stale,
    /// We lack the base version (unknown peer, other incarnation, missed versions): pull
    /// the full entry.
    Gap,
    /// The delta described an older incarnation of us: our version was raised beyond it and
    /// the caller must announce ourself (as [`super::Update::announce_self`]).
    AnnounceSelf,
}

impl Peers {
    /// Applies one peer's change if we hold exactly its base version of the same incarnation.
    ///
    /// Names only referenced by upserted connections become placeholders, as in
    /// [`Peers::apply_update`] (within [`super::MAX_PEERS`]); call GC ~1 s later as after any
    /// merge. A version more than [`super::MAX_VERSION_STEP`] above ours is skipped as
    /// [`DeltaOutcome::Stale`] and counted. The connection list is changed in place; see the
    /// module docs of [`crate::topology`] for the cost.
    ///
    /// # Errors
    /// The delta names the unknown peer, carries a short ID above 12 bits or would leave the
    /// peer with more than [`MAX_CONNECTIONS_PER_PEER`] connections; nothing changes.
    pub fn apply_delta(&mut self, d: &Delta) -> Result<DeltaOutcome, TopologyError> {
        let s = &d.summary;
        if s.name == PeerName::UNKNOWN || d.upserted.iter().any(|c| c.name == PeerName::UNKNOWN) {
            return Err(TopologyError::UnknownPeerName);
        }
        if s.has_short_id && s.short_id >= SHORT_ID_SPACE {
            return Err(TopologyError::ShortIdOutOfRange {
                peer: s.name,
                short_id: s.short_id,
            });
        }
        if d.upserted.len() > MAX_CONNECTIONS_PER_PEER {
            return Err(TopologyError::TooManyConnections {
                peer: s.name,
                count: d.upserted.len(),
            });
        }
        if s.name == self.our_name() {
            if self.out_version(s) {
                return Ok(DeltaOutcome::AnnounceSelf);
            }
            return Ok(DeltaOutcome::Stale);
        }
        let Some(old) = self.others.get(&s.name) else {
            return Ok(DeltaOutcome::Gap);
        };
        if old.summary.uid == s.uid && old.summary.version >= s.version {
            return Ok(DeltaOutcome::Stale);
        }
        if old.summary.uid != s.uid || old.summary.version != d.base_version {
            return Ok(DeltaOutcome::Gap);
        }
        if !plausible(old.summary.version, s.version) {
            self.refused_versions += 1;
            return Ok(DeltaOutcome::Stale);
        }
        // Sorted and de-duplicated once: a hostile delta may repeat names.
        let mut removed: Vec<PeerName> = d.removed.clone();
        removed.sort_unstable();
        removed.dedup();
        let upserted = normalise(d.upserted.clone());
        let count = count_after(&old.conns, &removed, &upserted);
        if count > MAX_CONNECTIONS_PER_PEER {
            return Err(TopologyError::TooManyConnections {
                peer: s.name,
                count,
            });
        }
        let old_summary = old.summary.clone();
        let ignored_before = self.ignored_peers;
        for c in &upserted {
            self.add_placeholder(c.name);
        }
        self.log_ignored(ignored_before);
        if old_summary.short_id != s.short_id || old_summary.has_short_id != s.has_short_id {
            self.unindex_short_id(&old_summary);
            self.index_short_id(s);
        }
        if let Some(entry) = self.others.get_mut(&s.name) {
            let entry = std::sync::Arc::make_mut(entry);
            entry.summary = s.clone();
            apply_in_place(&mut entry.conns, &removed, upserted);
        }
        Ok(DeltaOutcome::Applied)
    }

    /// Our own change since `base` (our summary and connections as last announced), or `None`
    /// if our version has not moved. A `base` of another incarnation yields a delta nobody can
    /// apply, which receivers answer with a pull.
    pub fn our_delta_since(&self, base: &(PeerSummary, Vec<ConnectionSummary>)) -> Option<Delta> {
        let (base_summary, base_conns) = base;
        let now = &self.ourself;
        if now.summary.version == base_summary.version && now.summary.uid == base_summary.uid {
            return None;
        }
        let removed = base_conns
            .iter()
            .filter(|b| now.conn(b.name).is_none())
            .map(|b| b.name)
            .collect();
        let upserted = now
            .conns
            .iter()
            .filter(|c| !base_conns.contains(c))
            .cloned()
            .collect();
        Some(Delta {
            summary: now.summary.clone(),
            base_version: base_summary.version,
            removed,
            upserted,
        })
    }

    /// Our entry as it stands, to diff the next announcement against.
    pub fn our_entry(&self) -> (PeerSummary, Vec<ConnectionSummary>) {
        (self.ourself.summary.clone(), self.ourself.conns.clone())
    }

    /// How we know `name`: uid and version, zeros if unknown or only a placeholder.
    pub fn ref_of(&self, name: PeerName) -> Ref {
        let (uid, version) = self
            .entry(name)
            .map_or((0, 0), |e| (e.summary.uid, e.summary.version));
        Ref { name, uid, version }
    }

    /// Every peer we know more than the name of (ourself included), for a digest.
    pub fn refs(&self) -> Vec<Ref> {
        self.view()
            .filter(|p| p.summary.uid != 0)
            .map(|p| Ref {
                name: p.summary.name,
                uid: p.summary.uid,
                version: p.summary.version,
            })
            .collect()
    }

    /// Whether our entry of `r.name` would replace `r` under Weave's merge order (higher
    /// version, then higher uid). Placeholders are never newer.
    pub fn is_newer_than(&self, r: &Ref) -> bool {
        self.entry(r.name).is_some_and(|e| {
            let s = &e.summary;
            s.uid != 0 && (s.version > r.version || (s.version == r.version && s.uid > r.uid))
        })
    }

    /// Whether `r` would replace our entry of its peer (or we do not know it at all).
    pub fn is_older_than(&self, r: &Ref) -> bool {
        if r.uid == 0 {
            return false;
        }
        match self.entry(r.name) {
            None => plausible(0, r.version),
            Some(e) => {
                let s = &e.summary;
                plausible(s.version, r.version)
                    && (r.version > s.version || (r.version == s.version && r.uid > s.uid))
            }
        }
    }
}

/// How many connections `conns` holds after removing `removed` and upserting `upserted` (both
/// sorted, without duplicates). O(k log d).
fn count_after(
    conns: &[ConnectionSummary],
    removed: &[PeerName],
    upserted: &[ConnectionSummary],
) -> usize {
    let present = |n: &PeerName| conns.binary_search_by_key(n, |c| c.name).is_ok();
    // Removed names that are listed and not upserted again go; upserted names that are not
    // listed yet come.
    let gone = removed
        .iter()
        .filter(|n| present(n) && upserted.binary_search_by_key(*n, |c| c.name).is_err())
        .count();
    let new = upserted.iter().filter(|c| !present(&c.name)).count();
    conns.len().saturating_sub(gone) + new
}

/// Removes `removed`, then inserts or replaces `upserted` (both sorted, no duplicates), keeping
/// `conns` sorted: by binary search and `memmove` for a few changes, by one merge for many.
fn apply_in_place(
    conns: &mut Vec<ConnectionSummary>,
    removed: &[PeerName],
    upserted: Vec<ConnectionSummary>,
) {
    if (removed.len() + upserted.len()).saturating_mul(MERGE_RATIO) < conns.len() {
        for n in removed {
            if let Ok(i) = conns.binary_search_by_key(n, |c| c.name) {
                conns.remove(i);
            }
        }
        for c in upserted {
            match conns.binary_search_by_key(&c.name, |x| x.name) {
                Ok(i) => {
                    if let Some(slot) = conns.get_mut(i) {
                        *slot = c;
                    }
                }
                Err(i) => conns.insert(i, c),
            }
        }
        return;
    }
    let old = std::mem::take(conns);
    let mut out = Vec::with_capacity(old.len() + upserted.len());
    let mut kept = old
        .into_iter()
        .filter(|c| removed.binary_search(&c.name).is_err())
        .peekable();
    let mut new = upserted.into_iter().peekable();
    loop {
        let take_new = match (kept.peek(), new.peek()) {
            (Some(k), Some(n)) => n.name <= k.name,
            (None, Some(_)) => true,
            (Some(_), None) => false,
            (None, None) => break,
        };
        if take_new {
            if let Some(n) = new.next() {
                if kept.peek().is_some_and(|k| k.name == n.name) {
                    kept.next(); // replaced
                }
                out.push(n);
            }
        } else if let Some(k) = kept.next() {
            out.push(k);
        }
    }
    *conns = out;
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // In tests a panic is the failed assertion.
mod tests {
    use super::*;

    fn name(i: u8) -> PeerName {
        PeerName::from_bytes(&[0, 0, 0, 0, 0, i]).unwrap()
    }

    fn summary(i: u8, uid: u64) -> PeerSummary {
        PeerSummary {
            name: name(i),
            nick_name: format!("h{i}"),
            uid,
            version: 0,
            short_id: u16::from(i),
            has_short_id: true,
        }
    }

    /// Peer 1 as origin, peer 2 as a receiver that learnt peer 1's entry in full.
    fn pair() -> (Peers, Peers) {
        let mut a = Peers::new(name(1), "h1".into(), 11, 1);
        let b = Peers::new(name(2), "h2".into(), 22, 2);
        a.add_local_connection(&summary(3, 33), "10.0.0.3:6783".into(), true);
        let mut b = b;
        b.apply_update(a.summaries(&[name(1)])).unwrap();
        (a, b)
    }

    #[test]
    fn deltas_reproduce_the_full_entry() {
        let (mut a, mut b) = pair();
        let base = a.our_entry();
        a.establish_local_connection(name(3));
        a.add_local_connection(&summary(4, 44), "10.0.0.4:6783".into(), false);
        a.delete_local_connection(name(3));
        let d = a.our_delta_since(&base).unwrap();
        assert_eq!(d.removed, vec![name(3)]);
        assert_eq!(d.upserted.len(), 1);
        assert_eq!(b.apply_delta(&d).unwrap(), DeltaOutcome::Applied);
        assert_eq!(b.get(name(1)), a.get(name(1)));
        // Placeholder for the newly referenced peer, as a full merge would create.
        assert_eq!(b.get(name(4)).unwrap().0.uid, 0);
        assert_eq!(b.apply_delta(&d).unwrap(), DeltaOutcome::Stale);
        assert!(a.our_delta_since(&a.our_entry()).is_none());
    }

    #[test]
    fn a_missed_version_or_unknown_peer_is_a_gap() {
        let (mut a, mut b) = pair();
        a.establish_local_connection(name(3));
        let base = a.our_entry();
        a.delete_local_connection(name(3));
        let d = a.our_delta_since(&base).unwrap();
        assert_eq!(b.apply_delta(&d).unwrap(), DeltaOutcome::Gap);
        let mut c = Peers::new(name(5), "h5".into(), 55, 5);
        assert_eq!(c.apply_delta(&d).unwrap(), DeltaOutcome::Gap);
        // A restarted peer (other uid) is a gap too, even from the right version number.
        let mut restarted = d.clone();
        restarted.summary.uid = 99;
        restarted.base_version = 1;
        assert_eq!(b.apply_delta(&restarted).unwrap(), DeltaOutcome::Gap);
    }

    #[test]
    fn an_old_incarnation_of_us_raises_our_version() {
        let (_, mut b) = pair();
        let mut d = Delta {
            summary: summary(2, 7),
            base_version: 4,
            removed: vec![],
            upserted: vec![],
        };
        d.summary.version = 5;
        assert_eq!(b.apply_delta(&d).unwrap(), DeltaOutcome::AnnounceSelf);
        assert_eq!(b.our_summary().version, 6);
    }

    #[test]
    fn bad_deltas_change_nothing() {
        let (a, mut b) = pair();
        let mut d = a.our_delta_since(&(summary(1, 11), vec![])).unwrap();
        d.summary.short_id = 5000;
        let before = b.clone();
        assert!(b.apply_delta(&d).is_err());
        d.summary.short_id = 1;
        d.upserted[0].name = PeerName::UNKNOWN;
        assert!(b.apply_delta(&d).is_err());
        assert_eq!(b.all_names(), before.all_names());
        assert_eq!(b.get(name(1)), before.get(name(1)));
    }

    fn c(i: u16, est: bool) -> ConnectionSummary {
        ConnectionSummary {
            name: PeerName(0x0100_0000_0000 + u64::from(i)),
            remote_tcp_addr: format!("10.1.{}.{}:6783", i / 250, i % 250),
            outbound: i.is_multiple_of(2),
            established: est,
        }
    }

    /// A receiver that holds peer 1 (uid 11, version 0) with `conns`.
    fn holding(conns: Vec<ConnectionSummary>) -> Peers {
        let mut b = Peers::new(name(2), "h2".into(), 22, 2);
        b.apply_update(vec![(summary(1, 11), conns)]).unwrap();
        b
    }

    fn chained(from: u64, removed: Vec<PeerName>, upserted: Vec<ConnectionSummary>) -> Delta {
        let mut s = summary(1, 11);
        s.version = from + 1;
        Delta {
            summary: s,
            base_version: from,
            removed,
            upserted,
        }
    }

    #[test]
    fn too_many_connections_or_an_implausible_version_change_nothing() {
        let full: Vec<_> = (0..MAX_CONNECTIONS_PER_PEER as u16)
            .map(|i| c(i, true))
            .collect();
        let mut b = holding(full);
        let d = chained(0, vec![], vec![c(5000, true)]);
        assert_eq!(
            b.apply_delta(&d),
            Err(TopologyError::TooManyConnections {
                peer: name(1),
                count: MAX_CONNECTIONS_PER_PEER + 1
            })
        );
        // Replacing one and removing one to make room is fine.
        let d = chained(0, vec![c(0, true).name], vec![c(5000, true), c(7, false)]);
        assert_eq!(b.apply_delta(&d).unwrap(), DeltaOutcome::Applied);
        assert_eq!(b.get(name(1)).unwrap().1.len(), MAX_CONNECTIONS_PER_PEER);
        let mut far = chained(1, vec![], vec![]);
        far.summary.version = u64::MAX;
        assert_eq!(b.apply_delta(&far).unwrap(), DeltaOutcome::Stale);
        assert_eq!(b.refused_versions(), 1);
        assert_eq!(b.get(name(1)).unwrap().0.version, 1);
    }

    /// What applying a delta means, written plainly: drop the removed names, append the
    /// upserted entries, sort by name with the last duplicate winning.
    fn reference(
        conns: &[ConnectionSummary],
        removed: &[PeerName],
        upserted: &[ConnectionSummary],
    ) -> Vec<ConnectionSummary> {
        let mut out: Vec<_> = conns
            .iter()
            .filter(|x| !removed.contains(&x.name))
            .cloned()
            .collect();
        out.extend(upserted.iter().cloned());
        normalise(out)
    }

    proptest::proptest! {
        #[test]
        fn in_place_application_matches_the_plain_rule(
            start in proptest::collection::btree_set(0u16..300, 0..200),
            removed in proptest::collection::vec(0u16..300, 0..40),
            upserted in proptest::collection::vec((0u16..300, proptest::bool::ANY), 0..40),
        ) {
            let conns: Vec<_> = start.iter().map(|&i| c(i, true)).collect();
            let removed: Vec<_> = removed.iter().map(|&i| c(i, true).name).collect();
            let upserted: Vec<_> = upserted.iter().map(|&(i, e)| c(i, e)).collect();
            let mut b = holding(conns.clone());
            let d = chained(0, removed.clone(), upserted.clone());
            proptest::prop_assert_eq!(b.apply_delta(&d).unwrap(), DeltaOutcome::Applied);
            let want = reference(&conns, &removed, &upserted);
            proptest::prop_assert_eq!(b.get(name(1)).unwrap().1, want.as_slice());
        }
    }

    /// Chained deltas against a long list cost about what they cost against a short one: the
    /// list is changed in place, not copied per delta (which made a long list ~100× slower).
    #[test]
    fn chained_deltas_cost_what_they_change() {
        fn run(len: u16) -> std::time::Duration {
            let mut b = holding((0..len).map(|i| c(i, true)).collect());
            let toggled = c(len / 2, true);
            let deltas: Vec<Delta> = (0..MAX_DELTAS_PER_MESSAGE as u64)
                .map(|v| {
                    if v % 2 == 0 {
                        chained(v, vec![toggled.name], vec![])
                    } else {
                        chained(v, vec![], vec![toggled.clone()])
                    }
                })
                .collect();
            let t = std::time::Instant::now();
            for d in &deltas {
                assert_eq!(b.apply_delta(d).unwrap(), DeltaOutcome::Applied);
            }
            let took = t.elapsed();
            assert_eq!(b.get(name(1)).unwrap().1.len(), usize::from(len));
            took
        }
        // Best of three each, against scheduling noise.
        let best = |len| (0..3).map(|_| run(len)).min().unwrap();
        let short = best(8);
        let long = best(MAX_CONNECTIONS_PER_PEER as u16);
        assert!(
            long < short * 10,
            "4096 deltas: {long:?} against 1024 connections, {short:?} against 8"
        );
    }

    #[test]
    fn newer_and_older_follow_weaves_merge_order() {
        let (a, b) = pair();
        let r = a.ref_of(name(1));
        assert!(!b.is_newer_than(&r) && !b.is_older_than(&r));
        let newer = Ref {
            version: r.version + 1,
            ..r
        };
        assert!(b.is_older_than(&newer));
        let older = Ref {
            version: r.version - 1,
            ..r
        };
        assert!(b.is_newer_than(&older));
        let unknown = Ref {
            name: name(9),
            uid: 0,
            version: 0,
        };
        assert!(!b.is_newer_than(&unknown) && !b.is_older_than(&unknown));
        assert_eq!(b.refs().len(), 2); // ourself and peer 1; peer 3 is a placeholder
    }
}
