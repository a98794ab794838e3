//! The algorithms, as pure functions of (state, policy, cost, now). No I/O, no clock, no locks.
//!
//! Every store keeps one [`State`] per (id, policy) and calls [`apply`] under whatever atomicity it has (a
//! shard lock in memory, a Lua script in Redis). Three operations exist:
//!
//! - [`Op::Hit`]: admit `cost` units if they fit, else deny and consume nothing. A cost of 0 is a pure check:
//!   it answers whether a hit of cost 1 would pass, and changes nothing.
//! - [`Op::Force`]: count `cost` units whether or not they fit (Hammer's `inc`; usage known after the fact).
//! - [`Op::Set`]: make the used units equal to `cost` (seeding state from elsewhere).

pub mod fixed_window;
pub mod meter;
pub mod sliding_log;
pub mod sliding_window;

use std::time::Duration;

use crate::{Algorithm, Decision, Policy, Timestamp};

/// What to do to the state.
///
/// ```
/// use floodgate::algorithm::{apply, Op, State};
/// use floodgate::{Policy, Timestamp};
/// use std::time::Duration;
///
/// let p = Policy::fixed_window(3, Duration::from_secs(1))?;
/// let (mut s, now) = (State::Empty, Timestamp::from_secs(9));
/// assert!(!apply(&mut s, &p, Op::Force, 4, now).allowed); // counted anyway
/// assert_eq!(apply(&mut s, &p, Op::Set, 1, now).remaining, 2);
/// assert!(apply(&mut s, &p, Op::Hit, 2, now).allowed);
/// # Ok::<(), floodgate::PolicyError>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// Admit if it fits; deny and consume nothing otherwise. Cost 0 checks without consuming.
    Hit,
    /// Count the cost whether or not it fits.
    Force,
    /// Set the used units to the cost.
    Set,
}

/// The state one (id, policy) pair keeps. `Empty` is what a never-seen or expired key has.
///
/// Every variant but the sliding log is a few words, inline; the log is boxed so the enum stays 32 bytes.
///
/// ```
/// use floodgate::algorithm::{apply, Op, State};
/// use floodgate::{Policy, Timestamp};
/// use std::time::Duration;
///
/// let mut s = State::default();
/// apply(&mut s, &Policy::gcra(2, Duration::from_secs(1))?, Op::Hit, 1, Timestamp::from_secs(1));
/// assert!(matches!(s, State::Meter(m) if m.level > 0));
/// # Ok::<(), floodgate::PolicyError>(())
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum State {
    /// Nothing counted.
    #[default]
    Empty,
    /// Fixed window: when the window started and its count.
    Window(fixed_window::WindowState),
    /// Sliding window: when the current window started and the counts of it and of the one before.
    Sliding(sliding_window::SlidingState),
    /// Token bucket, leaky bucket, GCRA: a level that drains.
    Meter(meter::MeterState),
    /// Sliding log: runs of admitted units (one in line, more on the heap).
    Log(sliding_log::CompactLog),
}

impl State {
    /// Whether the state counts nothing (whatever the time: a window count of zero, a meter level of zero).
    ///
    /// ```
    /// use floodgate::algorithm::{State, meter::MeterState};
    /// assert!(State::Empty.is_empty());
    /// assert!(!State::Meter(MeterState { level: 1, last: 0, unit: 1 }).is_empty());
    /// ```
    pub fn is_empty(&self) -> bool {
        match self {
            State::Empty => true,
            State::Window(s) => s.count == 0,
            State::Sliding(s) => s.cur == 0 && s.prev == 0,
            State::Meter(s) => s.level == 0,
            State::Log(s) => s.total() == 0,
        }
    }

    /// Units counted at the last update: a window's count (the current window's, for a sliding window), a
    /// meter's level rounded up to whole units.
    ///
    /// ```
    /// use floodgate::algorithm::{State, fixed_window::WindowState};
    /// assert_eq!(State::Window(WindowState { start: 0, count: 4 }).last_used(), 4);
    /// ```
    pub fn last_used(&self) -> u64 {
        match self {
            State::Empty => 0,
            State::Window(s) => s.count,
            State::Sliding(s) => s.cur,
            State::Meter(s) => s.level.checked_div(s.unit).map_or(0, |u| u + u64::from(s.level % s.unit != 0)),
            State::Log(s) => s.total(),
        }
    }
}

/// What [`inspect`] reports of a state (Hammer's `inspect_bucket`, without the store's timestamps); see
/// [`inspect`] for an example.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Usage {
    /// Units counted now (a meter's level, rounded up to whole units).
    pub used: u64,
    /// Units a hit could take now.
    pub remaining: u64,
    /// Time until the state is empty again.
    pub reset_after: Duration,
    /// Time until the current window ends (window algorithms) or until one more unit fits (meters; zero when
    /// one fits now).
    pub next_window_after: Duration,
}

/// Applies `op` with `cost` to `state` under `policy` at `now`, and returns the decision.
///
/// A state left by another algorithm (a named policy whose algorithm changed) is treated as empty.
///
/// ```
/// use floodgate::algorithm::{apply, Op, State};
/// use floodgate::{Policy, Timestamp};
/// use std::time::Duration;
///
/// let policy = Policy::fixed_window(2, Duration::from_secs(1))?;
/// let mut state = State::Empty;
/// let now = Timestamp::from_secs(100);
/// assert!(apply(&mut state, &policy, Op::Hit, 2, now).allowed);
/// let denied = apply(&mut state, &policy, Op::Hit, 1, now);
/// assert!(!denied.allowed);
/// assert_eq!(denied.retry_after, Some(Duration::from_secs(1)));
/// # Ok::<(), floodgate::PolicyError>(())
/// ```
#[inline]
pub fn apply(state: &mut State, policy: &Policy, op: Op, cost: u64, now: Timestamp) -> Decision {
    step(state, policy, op, cost, now, false, false).decision
}

/// A decision, and the first instant at which the state the call left is empty again (µs since the epoch):
/// for a state the call wrote, what [`reset_at`] would say of it, found with no second pass over the state.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Outcome {
    pub(crate) decision: Decision,
    pub(crate) reset_at: u64,
}

/// [`apply`], with the instant the state is empty again: what the memory store keeps as a bucket's expiry.
///
/// `own` says the state was found under this policy's fingerprint (the memory store): an unnamed policy's
/// fingerprint hashes its whole definition, so its state was written by this very definition and a meter's unit
/// needs no check. [`apply`] knows nothing of where a state came from and passes `false`.
///
/// `expired` says the store found the state at or past its expiry: it is then treated as empty. A state of
/// the policy's own kind is emptied in place (reset to its kind's empty value, keeping a log's allocation; a
/// meter's level goes to zero, as its time and unit are only ever written with the bucket's expiry), so the
/// call writes it in place too; a property test checks that this decides and writes what [`State::Empty`]
/// would.
// Always inlined: the stores call it once per hit, and a call would pass the outcome through memory. Each
// branch knows its state's kind, so emptying an expired state needs no second dispatch on the kind.
#[inline(always)]
pub(crate) fn step(
    state: &mut State,
    policy: &Policy,
    op: Op,
    cost: u64,
    now: Timestamp,
    own: bool,
    expired: bool,
) -> Outcome {
    let now = now.as_micros();
    // The usual call first, with no jump through a table: a hit on a meter's state written in the policy's
    // unit (see `meter::short_hit`). The unit needs no check on an unnamed policy's own state (see `own`); a
    // named policy's definition may have changed since its state was written.
    if op == Op::Hit
        && let State::Meter(s) = state
        && ((own && policy.meter_short_unnamed(cost)) || (policy.meter_short(cost) && s.unit == policy.meter_unit()))
    {
        return meter::short_hit(s, policy, cost, now, expired);
    }
    // A state of the policy's own kind is updated in place; any other (none yet, or another algorithm's after
    // a named policy changed) is replaced by the algorithm's empty state first.
    if policy.algorithm().is_meter()
        && let State::Meter(s) = state
    {
        return meter::step(s, policy, op, cost, now, expired);
    }
    match policy.algorithm() {
        Algorithm::FixedWindow => {
            if let State::Window(s) = state {
                if expired {
                    *s = fixed_window::WindowState::default();
                }
                return fixed_window::step(s, policy, op, cost, now);
            }
            let mut s = fixed_window::WindowState::default();
            let o = fixed_window::step(&mut s, policy, op, cost, now);
            *state = State::Window(s);
            o
        }
        Algorithm::SlidingWindow => {
            if let State::Sliding(s) = state {
                if expired {
                    *s = sliding_window::SlidingState::default();
                }
                return sliding_window::step(s, policy, op, cost, now);
            }
            let mut s = sliding_window::SlidingState::default();
            let o = sliding_window::step(&mut s, policy, op, cost, now);
            *state = State::Sliding(s);
            o
        }
        Algorithm::TokenBucket | Algorithm::LeakyBucket | Algorithm::Gcra => {
            // In the policy's unit from the start, even if this call leaves it empty: a policy's own state is
            // always in its unit (see `own`).
            let mut s = meter::MeterState { unit: policy.meter_unit(), ..meter::MeterState::default() };
            let o = meter::step(&mut s, policy, op, cost, now, false);
            *state = State::Meter(s);
            o
        }
        Algorithm::SlidingLog => {
            if let State::Log(s) = state {
                return s.step(policy, op, cost, now, expired);
            }
            let mut s = sliding_log::CompactLog::default();
            let o = s.step(policy, op, cost, now, false);
            *state = State::Log(s);
            o
        }
    }
}

/// Reports the usage of `state` under `policy` at `now`, or `None` if it holds nothing (never hit, expired,
/// or left by another algorithm).
///
/// ```
/// use floodgate::algorithm::{apply, inspect, Op, State};
/// use floodgate::{Policy, Timestamp};
/// use std::time::Duration;
///
/// let policy = Policy::fixed_window(5, Duration::from_secs(10))?;
/// let mut state = State::Empty;
/// apply(&mut state, &policy, Op::Hit, 2, Timestamp::from_secs(101));
/// let usage = inspect(&state, &policy, Timestamp::from_secs(104)).unwrap();
/// assert_eq!((usage.used, usage.remaining), (2, 3));
/// assert_eq!(usage.next_window_after, Duration::from_secs(6));
/// assert!(inspect(&state, &policy, Timestamp::from_secs(110)).is_none());
/// # Ok::<(), floodgate::PolicyError>(())
/// ```
pub fn inspect(state: &State, policy: &Policy, now: Timestamp) -> Option<Usage> {
    let now = now.as_micros();
    match (policy.algorithm(), state) {
        (Algorithm::FixedWindow, State::Window(s)) => fixed_window::inspect(s, policy, now),
        (Algorithm::SlidingWindow, State::Sliding(s)) => sliding_window::inspect(s, policy, now),
        (Algorithm::TokenBucket | Algorithm::LeakyBucket | Algorithm::Gcra, State::Meter(s)) => {
            meter::inspect(s, policy, now)
        }
        (Algorithm::SlidingLog, State::Log(s)) => s.inspect(policy, now),
        _ => None,
    }
}

/// The first instant at which `state` is empty again under `policy` (when a store may forget it).
///
/// ```
/// use floodgate::algorithm::{apply, reset_at, Op, State};
/// use floodgate::{Policy, Timestamp};
/// use std::time::Duration;
///
/// let policy = Policy::fixed_window(5, Duration::from_secs(10))?;
/// let mut state = State::Empty;
/// apply(&mut state, &policy, Op::Hit, 1, Timestamp::from_secs(101));
/// assert_eq!(reset_at(&state, &policy), Timestamp::from_secs(110));
/// # Ok::<(), floodgate::PolicyError>(())
/// ```
pub fn reset_at(state: &State, policy: &Policy) -> Timestamp {
    let at = match state {
        State::Empty => 0,
        State::Window(s) => fixed_window::reset_at(s, policy),
        State::Sliding(s) => sliding_window::reset_at(s, policy),
        State::Meter(s) => meter::reset_at(s, policy),
        State::Log(s) => s.reset_at(policy),
    };
    Timestamp::from_micros(at)
}

/// A decision for `cost` that can never pass, at `now` (the state is left as it was).
#[inline]
pub(crate) fn over_capacity(policy: &Policy, remaining: u64, reset_after_us: u64, now: u64) -> Outcome {
    let decision = Decision {
        allowed: false,
        limit: policy.capacity(),
        remaining,
        reset_after: Duration::from_micros(reset_after_us),
        retry_after: None,
        fallback: false,
    };
    Outcome { decision, reset_at: if reset_after_us == 0 { 0 } else { now.saturating_add(reset_after_us) } }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        // Both properties are cheap, and the second one's telling cases (a meter whose unit stays and whose drain
        // changes) are a few in a thousand: run enough to meet them every time.
        #![proptest_config(ProptestConfig::with_cases(4096))]

        /// The memory store keeps `Outcome::reset_at` as a bucket's expiry without looking at the state again: for
        /// every state a call writes (what the store writes: any `Force` or `Set`, a `Hit` that counted), it must
        /// be what `reset_at` computes from the state, also after the clock steps back and the limit or window
        /// of a named policy changes.
        #[test]
        fn step_reports_the_reset_of_the_state_it_writes(
            algorithm in 0..Algorithm::ALL.len(),
            calls in prop::collection::vec((0..3usize, 0u64..6, -2_000_000i64..3_000_000, 1u64..5, 1u64..4), 1..40),
        ) {
            let mut state = State::Empty;
            let mut t = 1_000_000_000i64;
            for (op, cost, dt, limit, window_s) in calls {
                t = (t + dt).max(0);
                let window = Duration::from_secs(window_s);
                let policy = Policy::new(Algorithm::ALL[algorithm], limit, window).and_then(|p| p.named("p"));
                let policy = policy.map_err(|e| TestCaseError::fail(e.to_string()))?;
                let op = [Op::Hit, Op::Force, Op::Set][op];
                let o = step(&mut state, &policy, op, cost, Timestamp::from_micros(t as u64), false, false);
                if op != Op::Hit || (o.decision.allowed && cost > 0) {
                    prop_assert_eq!(o.reset_at, reset_at(&state, &policy).as_micros(), "{:?} cost {} at {}", op, cost, t);
                }
            }
        }

        /// The memory store passes `own` for a state it found under the policy's fingerprint, and a meter's short
        /// path then skips the check of the state's unit for an unnamed policy. That is sound only if a policy's
        /// own state is always in its unit: a call with `own` must decide, report and write exactly what the
        /// same call without it does, whatever the calls before it (costs past the burst, forced and set
        /// levels, peeks, a clock that steps back), also when a named policy's definition changes between
        /// calls (an unnamed policy's state is never found by another definition).
        #[test]
        fn a_policys_own_state_needs_no_unit_check(
            algorithm in 0..Algorithm::ALL.len(),
            defs in prop::collection::vec((1u64..7, 1u64..4, prop::option::of(1u64..9)), 2),
            named in any::<bool>(),
            calls in prop::collection::vec((0..3usize, 0u64..10, -2_000_000i64..3_000_000, 0..2usize), 1..40),
        ) {
            let mut policies = Vec::new();
            for (limit, window_s, burst) in defs {
                let mut p = Policy::new(Algorithm::ALL[algorithm], limit, Duration::from_secs(window_s));
                if let Some(b) = burst.filter(|_| Algorithm::ALL[algorithm].is_meter()) {
                    p = p.and_then(|p| p.with_burst(b));
                }
                if named {
                    p = p.and_then(|p| p.named("p"));
                }
                policies.push(p.map_err(|e| TestCaseError::fail(e.to_string()))?);
            }
            let (mut own, mut other) = (State::Empty, State::Empty);
            let mut t = 1_000_000_000i64;
            for (op, cost, dt, which) in calls {
                t = (t + dt).max(0);
                let (op, now) = ([Op::Hit, Op::Force, Op::Set][op], Timestamp::from_micros(t as u64));
                let policy = &policies[if named { which } else { 0 }];
                let a = step(&mut own, policy, op, cost, now, true, false);
                let b = step(&mut other, policy, op, cost, now, false, false);
                prop_assert_eq!(a.decision, b.decision, "{:?} cost {} at {} under {}", op, cost, t, policy.key());
                prop_assert_eq!(a.reset_at, b.reset_at);
                prop_assert_eq!(&own, &other);
            }
        }

        /// The memory store passes `expired` rather than replacing an expired state with `State::Empty`, and
        /// `step` empties it in place: from any state, at or after its reset, a call marked expired must decide
        /// and report exactly what it would on an empty state, and leave a state that inspects the same.
        #[test]
        fn an_expired_state_acts_as_an_empty_one(
            algorithm in 0..Algorithm::ALL.len(),
            calls in prop::collection::vec((0u64..6, 0u64..3_000_000), 1..20),
            (op, cost, late, limit, window_s) in (0..3usize, 0u64..6, 0u64..5_000_000, 1u64..5, 1u64..4),
            first_limit in 1u64..5,
            peek in prop::option::of(0u64..6_000_000),
        ) {
            // Limits that divide the window (a drain of one unit a µs) and limits that do not, on both sides.
            let policy = Policy::new(Algorithm::ALL[algorithm], first_limit, Duration::from_secs(2));
            let policy = policy.map_err(|e| TestCaseError::fail(e.to_string()))?;
            let mut state = State::Empty;
            let mut t = 1_000_000_000u64;
            for (cost, dt) in calls {
                t += dt;
                step(&mut state, &policy, Op::Hit, cost, Timestamp::from_micros(t), false, false);
            }
            // The call comes at or after the reset, under this policy or another one (a named policy changed),
            // perhaps after a peek at a later time (a call the store keeps no expiry for), so the clock may
            // have stepped back in between.
            let reset = reset_at(&state, &policy).as_micros().max(t);
            if let Some(peek) = peek {
                step(&mut state, &policy, Op::Hit, 0, Timestamp::from_micros(reset + peek), false, false);
            }
            let now = Timestamp::from_micros(reset + late);
            let next = Policy::new(Algorithm::ALL[algorithm], limit, Duration::from_secs(window_s));
            let next = next.map_err(|e| TestCaseError::fail(e.to_string()))?;
            let op = [Op::Hit, Op::Force, Op::Set][op];
            // The store passes `own` for the policy that wrote the state (these are unnamed), and not for another.
            for (p, own) in [(&policy, true), (&policy, false), (&next, false)] {
                let (mut cleared, mut empty) = (state.clone(), State::Empty);
                let (a, b) = (step(&mut cleared, p, op, cost, now, own, true), step(&mut empty, p, op, cost, now, false, false));
                prop_assert_eq!(a.decision, b.decision);
                prop_assert_eq!(a.reset_at, b.reset_at);
                prop_assert_eq!(inspect(&cleared, p, now), inspect(&empty, p, now));
                prop_assert_eq!(cleared.is_empty(), empty.is_empty());
            }
        }
    }
}
