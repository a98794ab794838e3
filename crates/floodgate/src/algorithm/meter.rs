//! The continuous meter behind the token bucket, the leaky bucket and GCRA.
//!
//! The three are one algorithm written three ways: a token bucket's missing tokens are a leaky bucket's level,
//! and GCRA's theoretical arrival time is `now + level × window / limit`. Here the level is an integer in
//! exact units: with `window / limit = unit / drain` in lowest terms, a unit of cost adds `unit` to the level
//! and the level drains by `drain` every microsecond. A hit of `cost` passes when
//! `level + cost × unit <= burst × unit`. Nothing is rounded, so nothing drifts, and the same integers fit a
//! Lua number exactly (the policy bounds them by 2^53).
//!
//! ```
//! use floodgate::algorithm::{meter::{apply, MeterState}, Op};
//! use floodgate::Policy;
//! use std::time::Duration;
//!
//! // 3 per second: one unit is 1/3 s = unit / drain = 1_000_000 / 3 µs, exactly.
//! let p = Policy::gcra(3, Duration::from_secs(1))?;
//! assert_eq!((p.meter_unit(), p.meter_drain()), (1_000_000, 3));
//! let mut s = MeterState::default();
//! apply(&mut s, &p, Op::Hit, 3, 0);
//! let d = apply(&mut s, &p, Op::Hit, 1, 0);
//! assert_eq!(d.retry_after, Some(Duration::from_micros(333_334)));
//! # Ok::<(), floodgate::PolicyError>(())
//! ```

use std::time::Duration;

use super::{Op, Outcome, Usage, over_capacity};
use crate::{Decision, Policy};

/// A meter's state: the level at `last`, in the scale of the policy that wrote it.
///
/// The scale (`unit`) is kept so that a named policy whose limit changes keeps its used units: the level is
/// rescaled to the new policy's unit, rounding up (never admitting more than was used).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MeterState {
    /// The level in exact units (`units × unit`), as of `last`.
    pub level: u64,
    /// When the level was last written, in µs since the epoch.
    pub last: u64,
    /// The [`Policy::meter_unit`] the level was written with.
    pub unit: u64,
}

/// The level drained to `now`, in `policy`'s scale (a clock that went backwards drains nothing).
#[inline(always)]
fn level_at(s: &MeterState, policy: &Policy, now: u64) -> u64 {
    let unit = policy.meter_unit();
    let level = if s.unit == unit { s.level } else { rescale(s, unit) };
    level.saturating_sub(policy.meter_drained(now.saturating_sub(s.last)))
}

/// `s.level` in the scale of `unit`, rounding up (never fewer used units than were counted). Out of line: it
/// runs only when a named policy's limit or window has changed.
#[cold]
#[inline(never)]
fn rescale(s: &MeterState, unit: u64) -> u64 {
    if s.unit == 0 {
        return s.level;
    }
    u64::try_from((s.level as u128 * unit as u128).div_ceil(s.unit as u128)).unwrap_or(u64::MAX)
}

/// Applies an operation (see [`super::apply`]); `now` in µs.
#[inline]
pub fn apply(s: &mut MeterState, policy: &Policy, op: Op, cost: u64, now: u64) -> Decision {
    step(s, policy, op, cost, now, false).decision
}

/// [`apply`], with the instant the meter has drained. `expired`: the store found the state past its expiry,
/// so it counts as empty (see [`super::step`]).
// Always inlined into the memory store, which inlines it into its callers (see `MemoryStore::hit_sync`).
#[inline(always)]
pub(crate) fn step(s: &mut MeterState, policy: &Policy, op: Op, cost: u64, now: u64, expired: bool) -> Outcome {
    let (unit, burst, cap) = (policy.meter_unit(), policy.capacity(), policy.meter_cap());
    if expired {
        s.level = 0;
    }
    // A clock that went backwards stands still at the latest time the state has seen.
    let now = now.max(s.last);
    let mut level = level_at(s, policy, now);
    if op == Op::Hit && cost > burst {
        return over_capacity(policy, policy.meter_units(cap - level.min(cap)), policy.meter_drain_time(level), now);
    }
    let need = cost.max(1).saturating_mul(unit);
    let fits = level.checked_add(need).is_some_and(|l| l <= cap);
    match op {
        Op::Hit => {
            if fits && cost > 0 {
                level += need;
                *s = MeterState { level, last: now, unit };
            }
        }
        Op::Force => {
            level = level.saturating_add(cost.saturating_mul(unit));
            *s = MeterState { level, last: now, unit };
        }
        Op::Set => {
            level = cost.saturating_mul(unit);
            *s = MeterState { level, last: now, unit };
        }
    }
    outcome::<false>(policy, op == Op::Set || fits, level, need, now)
}

/// The usual call, a hit of 1 to `burst` units on a state this policy wrote ([`Policy::meter_short`] holds and
/// the state's unit is the policy's), with a path of its own: the fewest steps on the state. They wait on the
/// state's load, a cache miss when keys are many, and the fewer they are, the sooner the CPU gets on to the next
/// call. Everything is decided from the policy before the state is read, but for the state's two words.
#[inline(always)]
pub(crate) fn short_hit(s: &mut MeterState, policy: &Policy, cost: u64, now: u64, expired: bool) -> Outcome {
    let need = cost * policy.meter_unit(); // at most `cap`: no overflow
    let room = policy.meter_cap() - need;
    let now = now.max(s.last);
    // `level_at` with the unit and drain known; calling it instead adds a branch the compiler keeps.
    let level = if expired { 0 } else { s.level.saturating_sub(now - s.last) };
    if level <= room {
        s.level = level + need;
        s.last = now;
        return outcome::<true>(policy, true, level + need, need, now);
    }
    outcome::<true>(policy, false, level, need, now)
}

/// The decision on a meter left at `level` by a call that needed `need` (in exact units) at `now`.
/// `DRAIN_ONE`: the caller knows the policy drains one unit a µs, so a drain time is the level itself.
#[inline(always)]
fn outcome<const DRAIN_ONE: bool>(policy: &Policy, allowed: bool, level: u64, need: u64, now: u64) -> Outcome {
    let drain_time = |excess: u64| if DRAIN_ONE { excess } else { policy.meter_drain_time(excess) };
    let cap = policy.meter_cap();
    let retry_after = (!allowed).then(|| {
        let need = need.min(cap);
        Duration::from_micros(drain_time((level + need).saturating_sub(cap)))
    });
    let reset_after = drain_time(level);
    let decision = Decision {
        allowed,
        limit: policy.capacity(),
        remaining: policy.meter_units(cap.saturating_sub(level)),
        reset_after: Duration::from_micros(reset_after),
        retry_after,
        fallback: false,
    };
    Outcome { decision, reset_at: now.saturating_add(reset_after) }
}

/// Usage at `now`, or `None` when the meter has drained.
pub fn inspect(s: &MeterState, policy: &Policy, now: u64) -> Option<Usage> {
    let (unit, cap) = (policy.meter_unit(), policy.meter_cap());
    let level = level_at(s, policy, now);
    if level == 0 {
        return None;
    }
    Some(Usage {
        used: level.div_ceil(unit),
        remaining: policy.meter_units(cap.saturating_sub(level)),
        reset_after: Duration::from_micros(policy.meter_drain_time(level)),
        next_window_after: Duration::from_micros(policy.meter_drain_time((level + unit).saturating_sub(cap))),
    })
}

/// When the meter has drained (µs).
pub fn reset_at(s: &MeterState, policy: &Policy) -> u64 {
    s.last.saturating_add(policy.meter_drain_time(level_at(s, policy, s.last)))
}
