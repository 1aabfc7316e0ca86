//! The topology rules behind weft's own gossip between weft peers
//! ([`weft_wire::topology_delta`]): applying one peer's change on top of the version it was made
//! from, computing our own change since what we last announced, and telling who is newer for
//! digests and pulls.
//!
//! A delta applies only to the exact base version of the same incarnation; anything else is a
//! gap the caller fills by pulling that peer's full entry (Weave's merge rules then apply as
//! usual), so a missed delta costs a pull, never a wrong view.

use std::collections::BTreeSet;

use weft_wire::topology_delta::{Delta, Ref};
use weft_wire::{ConnectionSummary, PeerName, PeerSummary};

use super::{normalise, PeerEntry, Peers, TopologyError, SHORT_ID_SPACE};

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
    /// [`Peers::apply_update`]; call GC ~1 s later as after any merge.
    ///
    /// # Errors
    /// The delta names the unknown peer or carries a short ID above 12 bits; nothing changes.
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
        if s.name == self.our_name() {
            let ours = &mut self.ourself.summary;
            if s.uid != ours.uid && s.version >= ours.version {
                ours.version = s.version.saturating_add(1);
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
        // A set: a hostile delta may list many names against a long connection list.
        let removed: BTreeSet<PeerName> = d.removed.iter().copied().collect();
        let mut conns: Vec<ConnectionSummary> = old
            .conns
            .iter()
            .filter(|c| !removed.contains(&c.name))
            .cloned()
            .collect();
        conns.extend(d.upserted.iter().cloned());
        let conns = normalise(conns);
        let old_summary = old.summary.clone();
        for c in &d.upserted {
            if c.name != self.our_name() && !self.others.contains_key(&c.name) {
                self.others.insert(c.name, PeerEntry::placeholder(c.name));
            }
        }
        if old_summary.short_id != s.short_id || old_summary.has_short_id != s.has_short_id {
            self.unindex_short_id(&old_summary);
            self.index_short_id(s);
        }
        if let Some(entry) = self.others.get_mut(&s.name) {
            entry.summary = s.clone();
            entry.conns = conns;
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
            None => true,
            Some(e) => {
                let s = &e.summary;
                r.version > s.version || (r.version == s.version && r.uid > s.uid)
            }
        }
    }
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
