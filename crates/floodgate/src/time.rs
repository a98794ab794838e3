//! Time: the [`Timestamp`] every decision is made at, and the injectable [`Clock`] that supplies it.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A point in time, in whole microseconds since the Unix epoch.
///
/// Windows are aligned to the epoch (a one-minute window starts on every minute of UTC), so every process and
/// every store that agrees on the time agrees on the windows. Microseconds are what Redis `TIME` reports and
/// fit exactly in a Lua number, so the in-memory and Redis stores make bit-identical decisions.
///
/// ```
/// use floodgate::Timestamp;
/// use std::time::Duration;
///
/// let t = Timestamp::from_millis(1_500);
/// assert_eq!(t.as_micros(), 1_500_000);
/// assert_eq!(t + Duration::from_millis(500), Timestamp::from_secs(2));
/// assert_eq!(Timestamp::from_secs(2).saturating_duration_since(t), Duration::from_millis(500));
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(u64);

impl Timestamp {
    /// The Unix epoch.
    pub const EPOCH: Timestamp = Timestamp(0);

    /// A timestamp `micros` microseconds after the epoch.
    pub const fn from_micros(micros: u64) -> Self {
        Timestamp(micros)
    }

    /// A timestamp `millis` milliseconds after the epoch (saturating).
    pub const fn from_millis(millis: u64) -> Self {
        Timestamp(millis.saturating_mul(1_000))
    }

    /// A timestamp `secs` seconds after the epoch (saturating).
    pub const fn from_secs(secs: u64) -> Self {
        Timestamp(secs.saturating_mul(1_000_000))
    }

    /// Microseconds since the epoch.
    pub const fn as_micros(self) -> u64 {
        self.0
    }

    /// The time from `earlier` to `self`, or zero if `earlier` is later.
    pub fn saturating_duration_since(self, earlier: Timestamp) -> Duration {
        Duration::from_micros(self.0.saturating_sub(earlier.0))
    }

    /// The current wall-clock time (not monotonic; prefer a [`Clock`]).
    pub fn now_system() -> Self {
        let since = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
        Timestamp(duration_micros(since))
    }
}

impl std::ops::Add<Duration> for Timestamp {
    type Output = Timestamp;

    /// Adds a duration, saturating at the largest timestamp.
    fn add(self, rhs: Duration) -> Timestamp {
        Timestamp(self.0.saturating_add(duration_micros(rhs)))
    }
}

/// Whole microseconds of a duration, saturating at `u64::MAX`.
pub(crate) fn duration_micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// A source of [`Timestamp`]s. Every store takes one, so tests can drive time by hand.
///
/// ```
/// use floodgate::{Clock, ManualClock, Timestamp};
/// use std::time::Duration;
///
/// let clock = ManualClock::new(Timestamp::from_secs(10));
/// clock.advance(Duration::from_millis(250));
/// assert_eq!(clock.now(), Timestamp::from_millis(10_250));
/// ```
pub trait Clock: std::any::Any + Send + Sync {
    /// The current time.
    fn now(&self) -> Timestamp;
}

impl<C: Clock + ?Sized> Clock for Arc<C> {
    fn now(&self) -> Timestamp {
        (**self).now()
    }
}

/// The default clock: wall-clock time read once at construction, advanced by a monotonic clock.
///
/// It never goes backwards (an NTP step does not move it) and stays aligned with the epoch, which windows need.
/// The monotonic part is [`quanta`]'s calibrated TSC where the CPU has a stable one (about 10 ns a read, and
/// no fence), else the OS monotonic clock.
///
/// ```
/// use floodgate::{Clock, SystemClock};
///
/// let clock = SystemClock::new();
/// let a = clock.now();
/// let b = clock.now();
/// assert!(b >= a);
/// ```
#[derive(Clone, Debug)]
pub struct SystemClock {
    clock: quanta::Clock,
    /// The raw counter at construction (TSC ticks, or OS nanoseconds).
    anchor: u64,
    anchor_micros: u64,
    /// Microseconds per raw tick in 0.64 fixed point (`µs = ticks × micros_per_tick / 2^64`), taken once from
    /// quanta's calibration, which is linear: a read is then one multiplication. (Both raw sources tick at
    /// least once a microsecond, so the factor is below one.)
    micros_per_tick: u64,
}

impl SystemClock {
    /// A clock anchored at the current wall-clock time.
    pub fn new() -> Self {
        let clock = quanta::Clock::new();
        // 2^50 ticks is days of TSC: the factor is exact to about one part in 10^14.
        const SPAN_LOG2: u32 = 50;
        let nanos = clock.delta_as_nanos(0, 1 << SPAN_LOG2);
        let micros_per_tick = u64::try_from((u128::from(nanos) << (64 - SPAN_LOG2)) / 1_000).unwrap_or(u64::MAX);
        SystemClock { anchor: clock.raw(), clock, anchor_micros: Timestamp::now_system().as_micros(), micros_per_tick }
    }
}

impl Default for SystemClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for SystemClock {
    #[inline]
    fn now(&self) -> Timestamp {
        // Raw counter and one multiplication: this is read on every hit.
        let ticks = self.clock.raw().saturating_sub(self.anchor);
        let micros = (u128::from(ticks) * u128::from(self.micros_per_tick)) >> 64;
        Timestamp(self.anchor_micros.saturating_add(micros as u64))
    }
}

/// A clock that only moves when told to: for exact, sleep-free tests. Clones share one time.
///
/// ```
/// use floodgate::{Clock, ManualClock, Timestamp};
///
/// let clock = ManualClock::new(Timestamp::EPOCH);
/// let seen_by_store = clock.clone();
/// clock.set(Timestamp::from_secs(60));
/// assert_eq!(seen_by_store.now(), Timestamp::from_secs(60));
/// ```
#[derive(Clone, Debug, Default)]
pub struct ManualClock {
    micros: Arc<AtomicU64>,
}

impl ManualClock {
    /// A clock stopped at `start`.
    pub fn new(start: Timestamp) -> Self {
        ManualClock { micros: Arc::new(AtomicU64::new(start.as_micros())) }
    }

    /// Moves the clock forward by `by` (saturating).
    pub fn advance(&self, by: Duration) {
        let by = duration_micros(by);
        // fetch_update cannot fail with a closure that always returns Some.
        let _ = self.micros.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |m| Some(m.saturating_add(by)));
    }

    /// Sets the clock to `to` (it may go backwards: stores must cope, and the conformance suite checks it).
    pub fn set(&self, to: Timestamp) {
        self.micros.store(to.as_micros(), Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        Timestamp(self.micros.load(Ordering::SeqCst))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The one-multiplication scaling keeps the system clock's pace: it advances as `std::time::Instant` does
    /// (within 2 ms over 50 ms of busy waiting, no sleep), and never backwards.
    #[test]
    fn system_clock_keeps_pace_with_instant() {
        let clock = SystemClock::new();
        let (start, t0) = (std::time::Instant::now(), clock.now());
        let mut last = t0;
        while start.elapsed() < Duration::from_millis(50) {
            let t = clock.now();
            assert!(t >= last, "went backwards: {t:?} after {last:?}");
            last = t;
        }
        let (elapsed, t1) = (start.elapsed(), clock.now());
        let advanced = t1.saturating_duration_since(t0);
        let diff = advanced.abs_diff(elapsed);
        assert!(diff < Duration::from_millis(2), "clock advanced {advanced:?} while Instant advanced {elapsed:?}");
        // Anchored at the wall clock.
        let wall = Timestamp::now_system().saturating_duration_since(t1)
            + t1.saturating_duration_since(Timestamp::now_system());
        assert!(wall < Duration::from_secs(1), "{wall:?} off the wall clock");
    }
}
