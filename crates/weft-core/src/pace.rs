//! Pacing with time passed in: how often something may happen (our topology announcements,
//! accepted connections), as a token bucket that never reads a clock.

use std::time::{Duration, Instant};

/// A token bucket with time passed in: `burst` events at once, then one per `period`.
#[derive(Debug, Clone)]
pub struct Pacer {
    burst: u32,
    period: Duration,
    /// When the bucket is full again; tokens are `burst - (full_at - now) / period`.
    full_at: Instant,
}

impl Pacer {
    /// A full bucket at `now`.
    pub fn new(burst: u32, period: Duration, now: Instant) -> Self {
        Self {
            burst,
            period,
            full_at: now,
        }
    }

    /// The earliest time an event may happen.
    pub fn ready_at(&self, now: Instant) -> Instant {
        let deficit = self.full_at.saturating_duration_since(now);
        // A token is free while the deficit is at most burst - 1 periods.
        let allowed = self.period * self.burst.saturating_sub(1);
        now + deficit.saturating_sub(allowed)
    }

    /// Spends one token at `now`.
    pub fn take(&mut self, now: Instant) {
        self.full_at = self.full_at.max(now) + self.period;
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn pacer_allows_a_burst_then_one_per_period() {
        let t0 = Instant::now();
        let p = Duration::from_secs(1);
        let mut pacer = Pacer::new(3, p, t0);
        for _ in 0..3 {
            assert_eq!(pacer.ready_at(t0), t0);
            pacer.take(t0);
        }
        assert_eq!(pacer.ready_at(t0), t0 + p);
        pacer.take(t0 + p);
        assert_eq!(pacer.ready_at(t0 + p), t0 + 2 * p);
        // Idle long enough and the whole burst is back.
        let later = t0 + 10 * p;
        for _ in 0..3 {
            assert_eq!(pacer.ready_at(later), later);
            pacer.take(later);
        }
        assert!(pacer.ready_at(later) > later);
    }
}
