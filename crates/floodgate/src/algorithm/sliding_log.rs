//! Sliding log: the exact sliding window (Hammer 7's `:sliding_window`), a log of admitted units.
//!
//! A hit of `cost` passes when the units counted in `(now − window, now]` plus `cost` are at most `limit`. It
//! is the only algorithm that bounds **every** window of that length, wherever it starts: no boundary burst
//! (fixed window), no estimate (sliding window), no burst on top of the rate (meters).
//!
//! The price is state that grows with the hits in a window, so the log is kept compact:
//!
//! - Times are kept in whole milliseconds, **rounded up**: a unit counted at 12.3 ms is logged at 13 ms and
//!   leaves the window at 13 ms + `window`. It may count up to 1 ms longer than its exact time, never shorter,
//!   so the bound above holds exactly; decisions, `retry_after` and `reset_after` are exact for the rounded log.
//! - Hits of the same millisecond merge into one run of `(time, units)`, 8 bytes packed.
//! - `limit` is capped at [`Policy::MAX_LOG_LIMIT`](crate::Policy::MAX_LOG_LIMIT), so a log holds at most that
//!   many runs (or one per millisecond of the window, if fewer). BENCHMARKS.md gives bytes per key at limit 100
//!   and 10 000.
//!
//! ```
//! use floodgate::algorithm::{sliding_log::{apply, LogState}, Op};
//! use floodgate::Policy;
//! use std::time::Duration;
//!
//! let p = Policy::sliding_log(2, Duration::from_secs(10))?;
//! let mut s = LogState::default();
//! assert!(apply(&mut s, &p, Op::Hit, 1, 1_000_000).allowed); // t = 1 s
//! assert!(apply(&mut s, &p, Op::Hit, 1, 9_000_000).allowed); // t = 9 s
//! let denied = apply(&mut s, &p, Op::Hit, 1, 10_500_000);
//! // The window (0.5 s, 10.5 s] still holds both; the first leaves at 11 s.
//! assert_eq!(denied.retry_after, Some(Duration::from_millis(500)));
//! assert!(apply(&mut s, &p, Op::Hit, 1, 11_000_000).allowed);
//! # Ok::<(), floodgate::PolicyError>(())
//! ```

use std::collections::VecDeque;
use std::time::Duration;

use super::{Op, Outcome, Usage, over_capacity};
use crate::{Decision, Policy};

/// The resolution of the log's timestamps, in µs (one millisecond).
pub const RESOLUTION_US: u64 = 1_000;

/// Bits of a packed run that hold its units; the rest hold its time, in ms from the log's base.
const UNIT_BITS: u32 = 20;
/// The most units one run holds. A forced cost above it is counted as this many: it is more than any
/// log's limit, so every decision is the same as with the exact count (only `used` saturates).
pub const MAX_RUN_UNITS: u64 = (1 << UNIT_BITS) - 1;
/// Offsets from the base must stay below this (2^44 ms, about 557 years; a window is at most 10 years).
const MAX_OFFSET_MS: u64 = 1 << (64 - UNIT_BITS);

/// A sliding log's state: runs of `(time, units)`, oldest first, each time a whole millisecond.
///
/// ```
/// use floodgate::algorithm::{sliding_log::{apply, LogState}, Op};
/// use floodgate::Policy;
/// use std::time::Duration;
///
/// let p = Policy::sliding_log(100, Duration::from_secs(1))?;
/// let mut s = LogState::default();
/// apply(&mut s, &p, Op::Hit, 1, 5_000_100);
/// apply(&mut s, &p, Op::Hit, 2, 5_000_900); // the same millisecond: merged
/// apply(&mut s, &p, Op::Hit, 1, 5_001_100);
/// assert_eq!(s.runs().collect::<Vec<_>>(), [(5_001_000, 3), (5_002_000, 1)]);
/// assert_eq!(s.total(), 4);
/// # Ok::<(), floodgate::PolicyError>(())
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LogState {
    /// The time runs are offset from, in ms since the epoch.
    base_ms: u64,
    /// `offset_ms << UNIT_BITS | units`, in time order.
    runs: Runs,
    /// The sum of the runs' units.
    total: u64,
    /// The latest time seen (µs): a clock that steps back stands still here.
    last: u64,
}

impl LogState {
    /// The runs as `(time in µs since the epoch, units)`, oldest first.
    pub fn runs(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.runs.iter().map(|&r| (self.at(r), r & MAX_RUN_UNITS))
    }

    /// Units in the log (including runs that have left the window but were not pruned yet).
    pub fn total(&self) -> u64 {
        self.total
    }

    /// Bytes the log holds on the heap.
    ///
    /// ```
    /// use floodgate::algorithm::sliding_log::LogState;
    /// assert_eq!(LogState::default().heap_bytes(), 0);
    /// ```
    pub fn heap_bytes(&self) -> usize {
        self.runs.capacity() * size_of::<u64>()
    }

    /// A run's time, in µs.
    #[inline]
    fn at(&self, run: u64) -> u64 {
        (self.base_ms + (run >> UNIT_BITS)).saturating_mul(RESOLUTION_US)
    }

    /// When a run leaves the window (µs): it counts while `now < leaves(run)`.
    #[inline]
    fn leaves(&self, run: u64, window: u64) -> u64 {
        self.at(run).saturating_add(window)
    }

    /// The time the newest run leaves the window (µs), or 0 if the log is empty.
    fn empty_at(&self, window: u64) -> u64 {
        self.runs.back().map_or(0, |&r| self.leaves(r, window))
    }

    /// Drops the runs that have left the window at `now`: a run at `t` counts while `now < t + window`.
    fn prune(&mut self, now: u64, window: u64) {
        while let Some(&r) = self.runs.front() {
            if self.leaves(r, window) > now {
                break;
            }
            self.total -= r & MAX_RUN_UNITS;
            self.runs.pop_front();
        }
        // Give memory back once a burst has passed.
        if self.runs.capacity() > 16 && self.runs.len() * 4 < self.runs.capacity() {
            self.runs.shrink_to(self.runs.len() * 2);
        }
    }

    /// Units that count at `now`, without pruning.
    fn used_at(&self, now: u64, window: u64) -> u64 {
        let gone: u64 =
            self.runs.iter().take_while(|&&r| self.leaves(r, window) <= now).map(|&r| r & MAX_RUN_UNITS).sum();
        self.total - gone
    }

    /// Logs `units` (at most [`MAX_RUN_UNITS`]) at `now`, rounded up to the millisecond.
    ///
    /// `limit` runs at most: hits add a run only while the log holds less than `limit` units, so only forced
    /// units (`inc`, counting past the limit) can reach the bound. Then the newest run takes the new units and
    /// moves to `now`: its units leave later than they would have, never earlier, so a log flooded with forced
    /// hits stays `limit` runs long and never admits more than exactly (at most `retry_after` grows).
    fn push(&mut self, now: u64, units: u64, limit: u64) {
        let ms = now.div_ceil(RESOLUTION_US);
        let mut units = units.min(MAX_RUN_UNITS);
        if self.runs.is_empty() {
            self.base_ms = ms;
        } else if ms - self.base_ms >= MAX_OFFSET_MS {
            self.rebase();
        }
        let offset = ms - self.base_ms;
        if self.runs.len() as u64 >= limit
            && let Some(last) = self.runs.back_mut()
            && *last >> UNIT_BITS != offset
        {
            let merged = ((*last & MAX_RUN_UNITS) + units).min(MAX_RUN_UNITS);
            self.total += merged - (*last & MAX_RUN_UNITS);
            *last = offset << UNIT_BITS | merged;
            return;
        }
        if let Some(last) = self.runs.back_mut()
            && *last >> UNIT_BITS == offset
        {
            let add = units.min(MAX_RUN_UNITS - (*last & MAX_RUN_UNITS));
            *last += add;
            self.total += add;
            units -= add;
        }
        if units > 0 {
            self.runs.push_back(offset << UNIT_BITS | units);
            self.total += units;
        }
    }

    /// Moves the base to the oldest run (every live run is within a window, at most 10 years, of now).
    fn rebase(&mut self) {
        let Some(&first) = self.runs.front() else { return };
        let shift = first >> UNIT_BITS;
        self.base_ms += shift;
        for r in self.runs.iter_mut() {
            *r -= shift << UNIT_BITS;
        }
    }

    fn clear(&mut self) {
        self.runs.clear();
        self.total = 0;
    }

    /// Wait (µs from `now`) until `cost` more fits: until the oldest runs holding the excess have left.
    fn wait_for(&self, cost: u64, limit: u64, now: u64, window: u64) -> u64 {
        let mut left = self.total;
        for &r in self.runs.iter() {
            if left.saturating_add(cost) <= limit {
                break;
            }
            left -= r & MAX_RUN_UNITS;
            if left.saturating_add(cost) <= limit {
                return self.leaves(r, window).saturating_sub(now);
            }
        }
        0
    }
}

/// A log's runs: one kept in line (most logs of a busy store hold one), more in a ring buffer on the heap.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Runs {
    /// At most one run; 0 when there is none (a run holds at least one unit, so it is never 0).
    One(u64),
    Many(VecDeque<u64>),
}

impl Default for Runs {
    fn default() -> Self {
        Runs::One(0)
    }
}

impl Runs {
    #[inline]
    fn len(&self) -> usize {
        match self {
            Runs::One(r) => usize::from(*r != 0),
            Runs::Many(v) => v.len(),
        }
    }

    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    #[inline]
    fn front(&self) -> Option<&u64> {
        match self {
            Runs::One(0) => None,
            Runs::One(r) => Some(r),
            Runs::Many(v) => v.front(),
        }
    }

    #[inline]
    fn back(&self) -> Option<&u64> {
        match self {
            Runs::One(0) => None,
            Runs::One(r) => Some(r),
            Runs::Many(v) => v.back(),
        }
    }

    #[inline]
    fn back_mut(&mut self) -> Option<&mut u64> {
        match self {
            Runs::One(0) => None,
            Runs::One(r) => Some(r),
            Runs::Many(v) => v.back_mut(),
        }
    }

    #[inline]
    fn pop_front(&mut self) -> Option<u64> {
        match self {
            Runs::One(0) => None,
            Runs::One(r) => Some(std::mem::take(r)),
            Runs::Many(v) => v.pop_front(),
        }
    }

    #[inline]
    fn push_back(&mut self, run: u64) {
        match self {
            Runs::One(0) => *self = Runs::One(run),
            Runs::One(r) => *self = Runs::Many(VecDeque::from([*r, run])),
            Runs::Many(v) => v.push_back(run),
        }
    }

    #[inline]
    fn iter(&self) -> impl Iterator<Item = &u64> {
        let (a, b): (&[u64], &[u64]) = match self {
            Runs::One(0) => (&[], &[]),
            Runs::One(r) => (std::slice::from_ref(r), &[]),
            Runs::Many(v) => v.as_slices(),
        };
        a.iter().chain(b)
    }

    #[inline]
    fn iter_mut(&mut self) -> impl Iterator<Item = &mut u64> {
        let (a, b): (&mut [u64], &mut [u64]) = match self {
            Runs::One(0) => (&mut [], &mut []),
            Runs::One(r) => (std::slice::from_mut(r), &mut []),
            Runs::Many(v) => v.as_mut_slices(),
        };
        a.iter_mut().chain(b)
    }

    fn clear(&mut self) {
        match self {
            Runs::One(r) => *r = 0,
            Runs::Many(v) => v.clear(),
        }
    }

    /// Runs the heap holds room for (none when in line).
    fn capacity(&self) -> usize {
        match self {
            Runs::One(_) => 0,
            Runs::Many(v) => v.capacity(),
        }
    }

    fn shrink_to(&mut self, n: usize) {
        if let Runs::Many(v) = self {
            v.shrink_to(n);
        }
    }
}

/// A sliding log as a [`State`](super::State) keeps it, in 24 bytes: a log of at most one run (a key hit once,
/// or only within one millisecond, per window) in line, a longer one as a boxed [`LogState`].
///
/// ```
/// use floodgate::algorithm::{apply, Op, State};
/// use floodgate::{Policy, Timestamp};
/// use std::time::Duration;
///
/// let p = Policy::sliding_log(10, Duration::from_secs(1))?;
/// let mut state = State::Empty;
/// apply(&mut state, &p, Op::Hit, 2, Timestamp::from_micros(5_000_100));
/// let State::Log(log) = &state else { unreachable!() };
/// assert_eq!((log.total(), log.heap_bytes()), (2, 0)); // one run, in line
/// apply(&mut state, &p, Op::Hit, 1, Timestamp::from_micros(5_003_000));
/// let State::Log(log) = &state else { unreachable!() };
/// assert_eq!(log.runs().collect::<Vec<_>>(), [(5_001_000, 2), (5_003_000, 1)]);
/// assert!(log.heap_bytes() > 0); // two runs: on the heap
/// # Ok::<(), floodgate::PolicyError>(())
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CompactLog {
    /// With no `many`: the only run, `ms << UNIT_BITS | units` (its time in ms since the epoch), or 0.
    one: u64,
    /// With no `many`: the latest time seen (µs).
    last: u64,
    many: Option<Box<LogState>>,
}

impl CompactLog {
    /// The runs as `(time in µs since the epoch, units)`, oldest first.
    pub fn runs(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        let units = self.one & MAX_RUN_UNITS;
        let one = (self.many.is_none() && units != 0).then(|| ((self.one >> UNIT_BITS) * RESOLUTION_US, units));
        one.into_iter().chain(self.many.as_deref().into_iter().flat_map(LogState::runs))
    }

    /// Units in the log (including runs that have left the window but were not pruned yet).
    pub fn total(&self) -> u64 {
        match &self.many {
            Some(s) => s.total,
            None => self.one & MAX_RUN_UNITS,
        }
    }

    /// Bytes the log holds on the heap: none for a log of one run.
    pub fn heap_bytes(&self) -> usize {
        self.many.as_deref().map_or(0, |s| size_of::<LogState>() + s.heap_bytes())
    }

    /// The whole log.
    pub fn to_log_state(&self) -> LogState {
        match &self.many {
            Some(s) => (**s).clone(),
            None => self.unpack(),
        }
    }

    /// The in-line log as a [`LogState`] (no allocation: its run stays in line).
    fn unpack(&self) -> LogState {
        let units = self.one & MAX_RUN_UNITS;
        let runs = if units == 0 { Runs::One(0) } else { Runs::One(units) };
        LogState { base_ms: self.one >> UNIT_BITS, runs, total: units, last: self.last }
    }

    /// Keeps `s` in line if it holds at most one run, kept in line, at a time that fits; boxed otherwise.
    fn pack(&mut self, s: LogState) {
        if let Runs::One(r) = s.runs {
            let ms = s.base_ms + (r >> UNIT_BITS);
            if ms < MAX_OFFSET_MS {
                self.one = if r == 0 { 0 } else { ms << UNIT_BITS | (r & MAX_RUN_UNITS) };
                self.last = s.last;
                self.many = None;
                return;
            }
        }
        self.many = Some(Box::new(s));
    }

    /// [`step`] on the log; `expired` empties it first (back in line).
    #[inline(always)]
    pub(crate) fn step(&mut self, policy: &Policy, op: Op, cost: u64, now: u64, expired: bool) -> Outcome {
        if expired {
            // Not only the runs: the log also keeps the latest time any call saw, peeks included.
            *self = CompactLog::default();
        }
        if let Some(s) = &mut self.many {
            return step(s, policy, op, cost, now);
        }
        let mut s = self.unpack();
        let o = step(&mut s, policy, op, cost, now);
        self.pack(s);
        o
    }

    /// [`inspect`] of the log.
    pub(crate) fn inspect(&self, policy: &Policy, now: u64) -> Option<Usage> {
        match &self.many {
            Some(s) => inspect(s, policy, now),
            None => inspect(&self.unpack(), policy, now),
        }
    }

    /// [`reset_at`] of the log.
    pub(crate) fn reset_at(&self, policy: &Policy) -> u64 {
        match &self.many {
            Some(s) => reset_at(s, policy),
            None => reset_at(&self.unpack(), policy),
        }
    }
}

/// Applies an operation (see [`super::apply`]); `now` in µs.
pub fn apply(s: &mut LogState, policy: &Policy, op: Op, cost: u64, now: u64) -> Decision {
    step(s, policy, op, cost, now).decision
}

/// [`apply`], with the instant the log is empty.
// Always inlined, like the other algorithms' (its helpers are not): an outcome returned from a call here made
// the compiler pass every algorithm's outcome through memory, so a caller that reads only `allowed` still paid
// for every duration.
#[inline(always)]
pub(crate) fn step(s: &mut LogState, policy: &Policy, op: Op, cost: u64, now: u64) -> Outcome {
    let window = policy.window_micros();
    let limit = policy.limit();
    let now = now.max(s.last);
    s.last = now;
    s.prune(now, window);
    if op == Op::Hit && cost > limit {
        return over_capacity(policy, limit.saturating_sub(s.total), s.empty_at(window).saturating_sub(now), now);
    }
    let check = cost.max(1);
    let fits = s.total.saturating_add(check) <= limit;
    match op {
        Op::Hit => {
            if fits && cost > 0 {
                s.push(now, cost, limit);
            }
        }
        Op::Force => {
            if cost > 0 {
                s.push(now, cost, limit);
            }
        }
        Op::Set => {
            s.clear();
            if cost > 0 {
                s.push(now, cost, limit);
            }
        }
    }
    let allowed = op == Op::Set || fits;
    let retry_after = (!allowed).then(|| Duration::from_micros(s.wait_for(check.min(limit), limit, now, window)));
    let reset_at = s.empty_at(window);
    let decision = Decision {
        allowed,
        limit,
        remaining: limit.saturating_sub(s.total),
        reset_after: Duration::from_micros(reset_at.saturating_sub(now)),
        retry_after,
        fallback: false,
    };
    Outcome { decision, reset_at }
}

/// Usage at `now`, or `None` when nothing in the log still counts. `next_window_after` is the time until the
/// oldest counted unit leaves (one more unit fits then, if the log is full).
pub fn inspect(s: &LogState, policy: &Policy, now: u64) -> Option<Usage> {
    let window = policy.window_micros();
    let now = now.max(s.last);
    let used = s.used_at(now, window);
    if used == 0 {
        return None;
    }
    let oldest = s.runs.iter().map(|&r| s.leaves(r, window)).find(|&gone| gone > now).unwrap_or(now);
    Some(Usage {
        used,
        remaining: policy.limit().saturating_sub(used),
        reset_after: Duration::from_micros(s.empty_at(window).saturating_sub(now)),
        next_window_after: Duration::from_micros(oldest - now),
    })
}

/// When the state is empty again (µs): when the newest run leaves the window.
pub fn reset_at(s: &LogState, policy: &Policy) -> u64 {
    s.empty_at(policy.window_micros())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(limit: u64, window_ms: u64) -> Policy {
        Policy::sliding_log(limit, Duration::from_millis(window_ms)).expect("policy")
    }

    #[test]
    fn a_state_keeps_a_one_run_log_in_24_bytes() {
        assert_eq!(size_of::<CompactLog>(), 24);
        assert_eq!(size_of::<super::super::State>(), 32);
    }

    proptest::proptest! {
        /// The compact log decides, reports and holds exactly what a plain log does, through any operations,
        /// in line or boxed.
        #[test]
        fn the_compact_log_is_a_log(
            steps in proptest::collection::vec((0..3u8, 0..4u64, 0..3_000u64, proptest::bool::weighted(0.05)), 1..60),
            limit in 1..6u64,
        ) {
            let p = policy(limit, 5);
            let (mut plain, mut compact) = (LogState::default(), CompactLog::default());
            let mut now = 1_000_000_000;
            for (op, cost, dt, expired) in steps {
                now += dt;
                let op = [Op::Hit, Op::Force, Op::Set][usize::from(op)];
                if expired {
                    plain = LogState::default();
                }
                let want = step(&mut plain, &p, op, cost, now);
                let got = compact.step(&p, op, cost, now, expired);
                proptest::prop_assert_eq!(got.decision, want.decision);
                proptest::prop_assert_eq!(got.reset_at, want.reset_at);
                proptest::prop_assert_eq!(compact.runs().collect::<Vec<_>>(), plain.runs().collect::<Vec<_>>());
                proptest::prop_assert_eq!(compact.total(), plain.total());
                proptest::prop_assert_eq!(compact.inspect(&p, now + 1), inspect(&plain, &p, now + 1));
                proptest::prop_assert_eq!(compact.to_log_state().runs().count(), plain.runs().count());
                proptest::prop_assert_eq!(compact.heap_bytes() == 0, compact.many.is_none());
            }
        }
    }

    #[test]
    fn forced_costs_above_a_run_split_and_saturate() {
        let p = policy(10, 1000);
        let mut s = LogState::default();
        apply(&mut s, &p, Op::Force, MAX_RUN_UNITS - 1, 1_000);
        apply(&mut s, &p, Op::Force, 5, 1_000);
        assert_eq!(s.runs().collect::<Vec<_>>(), [(1_000, MAX_RUN_UNITS), (1_000, 4)]);
        let d = apply(&mut s, &p, Op::Force, u64::MAX, 2_000);
        assert_eq!(s.total(), 2 * MAX_RUN_UNITS + 4);
        assert_eq!(d.retry_after, Some(Duration::from_millis(1000)));
    }

    #[test]
    fn forced_floods_keep_the_log_at_limit_runs() {
        let p = policy(3, 60_000);
        let mut s = LogState::default();
        for i in 0..10_000u64 {
            apply(&mut s, &p, Op::Force, 1, 1_000_000 + i * 1_000);
        }
        assert_eq!(s.runs().count(), 3);
        assert_eq!(s.total(), 10_000);
        // The newest run was moved to the last forced hit: nothing fits until it has left.
        let d = apply(&mut s, &p, Op::Hit, 1, 1_000_000 + 10_000 * 1_000);
        assert_eq!(d.retry_after, Some(Duration::from_millis(60_000 - 1)));
    }

    #[test]
    fn offsets_are_rebased_over_centuries() {
        let p = Policy::sliding_log(3, Policy::MAX_WINDOW).expect("policy");
        let mut s = LogState::default();
        let year_us = 365 * 86_400 * 1_000_000u64;
        for i in 0..600u64 {
            apply(&mut s, &p, Op::Hit, 1, i * year_us);
        }
        // Windows of 10 years, 3 per window, a hit a year: years 0, 1, 2, 10, 11, 12, ... pass; times stay exact.
        let runs: Vec<_> = s.runs().collect();
        assert!(runs.iter().all(|&(t, u)| t % year_us == 0 && u == 1), "{runs:?}");
        assert_eq!(runs.last().map(|r| r.0), Some(592 * year_us));
    }

    #[test]
    fn memory_is_given_back_after_a_burst() {
        let p = policy(10_000, 10_000);
        let mut s = LogState::default();
        for i in 0..5_000u64 {
            apply(&mut s, &p, Op::Hit, 1, i * 1_000);
        }
        assert!(s.heap_bytes() >= 5_000 * 8);
        apply(&mut s, &p, Op::Hit, 1, 20_000_000);
        assert!(s.heap_bytes() <= 32 * 8, "{}", s.heap_bytes());
    }
}
