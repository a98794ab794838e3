//! The store's estimate of Redis's clock, for the deadlines of its calls.

use std::time::Duration;

/// What the store knows of Redis's clock: an upper bound of (Redis `TIME` − the store's monotonic clock), in
/// microseconds, and when it was learnt. Each reply carries Redis `TIME`; a reply's time minus the call's send
/// time is an upper bound of the offset (the script ran after the send), the tightest one is kept, and it is
/// loosened by 500 ppm of the time since (clock drift), so the deadline given to Redis is never earlier than the
/// caller's own (unless Redis's clock steps forward, which the first expired reply a caller sees corrects).
pub(crate) struct RedisClock {
    origin: std::time::Instant,
    estimate: std::sync::Mutex<Option<(i64, i64)>>,
}

impl RedisClock {
    pub(crate) fn new() -> Self {
        RedisClock { origin: std::time::Instant::now(), estimate: std::sync::Mutex::new(None) }
    }

    pub(crate) fn now_us(&self) -> i64 {
        i64::try_from(self.origin.elapsed().as_micros()).unwrap_or(i64::MAX)
    }

    pub(crate) fn offset(&self, at: i64) -> Option<i64> {
        let e = *self.estimate.lock().unwrap_or_else(|p| p.into_inner());
        e.map(|(off, learnt)| off.saturating_add(at.saturating_sub(learnt).max(0) / 2000))
    }

    /// The deadline of a call sent at `sent` (store clock) in Redis time, or -1 before any reply.
    pub(crate) fn deadline(&self, sent: i64, timeout: Duration) -> i64 {
        let timeout = i64::try_from(timeout.as_micros()).unwrap_or(i64::MAX);
        self.offset(sent).map_or(-1, |off| sent.saturating_add(timeout).saturating_add(off))
    }

    /// Learns from a reply of Redis time `redis_us` to a call sent at `sent`; `reset` trusts it over the current
    /// estimate (after an expired reply a caller saw: the estimate was too low).
    pub(crate) fn learn(&self, sent: i64, redis_us: i64, reset: bool) {
        let sample = redis_us.saturating_sub(sent);
        let now = self.now_us();
        let aged = self.offset(now);
        let mut e = self.estimate.lock().unwrap_or_else(|p| p.into_inner());
        match aged {
            Some(aged) if !reset && sample > aged => {}
            _ => *e = Some((sample, now)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redis_clock_keeps_the_tightest_upper_bound_and_loosens_it_with_time() {
        let c = RedisClock::new();
        let timeout = Duration::from_millis(100);
        assert_eq!(c.deadline(0, timeout), -1, "no deadline before any reply");
        // Redis is 1 000 000 µs ahead; a reply seen 300 µs after its send, then a tighter one (50 µs).
        c.learn(10, 1_000_310, false);
        assert_eq!(c.offset(10), Some(1_000_300));
        c.learn(20, 1_000_070, false);
        assert_eq!(c.offset(20).map(|o| o <= 1_000_050 + 1), Some(true));
        // A looser sample does not replace it.
        c.learn(30, 1_005_000, false);
        assert!(c.offset(30).is_some_and(|o| o < 1_001_000));
        // Deadline: send + timeout + bound, never before the true deadline (offset 1 000 000).
        let d = c.deadline(1_000, timeout);
        assert!((1_101_000..=1_101_100).contains(&d), "{d}");
        // 500 ppm of loosening: 10 s later the bound is 5 ms looser.
        let later = c.now_us() + 10_000_000;
        let aged = c.offset(later).unwrap_or_default();
        assert!((1_005_000..1_006_000).contains(&aged), "{aged}");
        // An expired reply a caller saw resets the estimate even to a looser one.
        c.learn(40, 1_500_040, true);
        assert!(c.offset(40).is_some_and(|o| o >= 1_499_000), "{:?}", c.offset(40));
    }
}
