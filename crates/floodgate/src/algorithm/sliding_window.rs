//! Sliding window: Cloudflare's weighted estimate over the current and previous epoch-aligned windows.
//!
//! With `e` the time elapsed in the current window, a hit of `cost` passes when
//! `prev × (window − e) / window + cur + cost <= limit`. The comparison is done exactly in integers
//! (`prev × (window − e) + (cur + cost) × window <= limit × window`), so there is no floating-point drift.
//!
//! The estimate assumes the previous window's hits were spread evenly. When they were bunched at its end,
//! it under-counts; the crate docs give the measured worst case over any window of the same length.
//!
//! ```
//! use floodgate::algorithm::{sliding_window::{apply, SlidingState}, Op};
//! use floodgate::Policy;
//! use std::time::Duration;
//!
//! let p = Policy::sliding_window(10, Duration::from_secs(10))?;
//! // 10 counted in the previous window; 3 s into this one, 70 % of them still weigh: 7, so 3 fit.
//! let mut s = SlidingState { start: 0, cur: 10, prev: 0 };
//! let d = apply(&mut s, &p, Op::Hit, 3, 13_000_000);
//! assert!(d.allowed && d.remaining == 0);
//! # Ok::<(), floodgate::PolicyError>(())
//! ```

use std::time::Duration;

use super::{Op, Outcome, Usage, over_capacity};
use crate::{Decision, Policy};

/// A sliding window's state: when the current window started and the counts of it and the previous window.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SlidingState {
    /// When the current window started, in µs since the epoch (a multiple of the window).
    pub start: u64,
    /// Units counted in the current window.
    pub cur: u64,
    /// Units counted in the window before it.
    pub prev: u64,
}

/// `(cur, prev)` as seen from the window that starts at `start`.
#[inline]
fn counts(s: &SlidingState, start: u64, window: u64) -> (u64, u64) {
    if s.start == start {
        (s.cur, s.prev)
    } else if s.start.checked_add(window) == Some(start) {
        (0, s.cur)
    } else {
        (0, 0)
    }
}

/// What is left of the previous window's count after `elapsed`, rounded up: `ceil(prev × (window − e) / window)`.
///
/// The admission test `prev × (window − e) + (cur + cost) × window <= limit × window` holds exactly when
/// `cur + cost + faded(prev) <= limit`, since the right side is a whole number.
#[inline]
fn faded(prev: u64, policy: &Policy, elapsed: u64) -> u64 {
    // The previous window is often empty (a key's first window, an idle spell): no division then.
    if prev == 0 {
        return 0;
    }
    let window = policy.window_micros();
    match prev.checked_mul(window - elapsed) {
        Some(x) => policy.div_ceil_window(x),
        None => u64::try_from((prev as u128 * (window - elapsed) as u128).div_ceil(window as u128)).unwrap_or(u64::MAX),
    }
}

/// The earliest wait (µs from now) after which `cost` fits, given `cost <= limit`.
fn wait_for(cur: u64, prev: u64, cost: u64, policy: &Policy, elapsed: u64) -> u64 {
    let (window, limit) = (policy.window_micros() as u128, policy.limit());
    let elapsed = elapsed as u128;
    // Earliest elapsed-in-window e' at which `weight × (window − e') <= room × window`.
    let earliest = |weight: u64, room: u64| -> u128 {
        if weight == 0 { 0 } else { window - (room as u128 * window / weight as u128).min(window) }
    };
    let wait = if cur + cost <= limit {
        // Still within this window: wait for the previous window's weight to fade enough (at the latest
        // until the window ends, where it has faded completely).
        earliest(prev, limit - cur - cost) - elapsed
    } else {
        // Not before the next window, where the current count becomes the fading one.
        (window - elapsed) + earliest(cur, limit - cost)
    };
    u64::try_from(wait).unwrap_or(u64::MAX)
}

#[inline]
fn reset_after(cur: u64, prev: u64, window: u64, elapsed: u64) -> u64 {
    if cur > 0 {
        2 * window - elapsed
    } else if prev > 0 {
        window - elapsed
    } else {
        0
    }
}

/// Applies an operation (see [`super::apply`]); `now` in µs.
#[inline]
pub fn apply(s: &mut SlidingState, policy: &Policy, op: Op, cost: u64, now: u64) -> Decision {
    step(s, policy, op, cost, now).decision
}

/// [`apply`], with the instant both windows are empty.
// Always inlined into the memory store, which inlines it into its callers (see `MemoryStore::hit_sync`).
#[inline(always)]
pub(crate) fn step(s: &mut SlidingState, policy: &Policy, op: Op, cost: u64, now: u64) -> Outcome {
    let window = policy.window_micros();
    let limit = policy.limit();
    // A clock that went backwards stands still at the start of the latest window the state has seen.
    let now = now.max(s.start);
    let elapsed = policy.window_elapsed(now);
    let start = now - elapsed;
    let (mut cur, mut prev) = counts(s, start, window);
    let old = faded(prev, policy, elapsed);
    if op == Op::Hit && cost > limit {
        return over_capacity(
            policy,
            limit.saturating_sub(cur).saturating_sub(old),
            reset_after(cur, prev, window, elapsed),
            now,
        );
    }
    let check = cost.max(1);
    let fits = cur.saturating_add(check).saturating_add(old) <= limit;
    let before = (cur, prev);
    match op {
        Op::Hit => {
            if fits {
                cur += cost;
            }
        }
        Op::Force => cur = cur.saturating_add(cost),
        Op::Set => (cur, prev) = (cost, 0),
    }
    let allowed = op == Op::Set || fits;
    if (cur, prev) != before || op != Op::Hit {
        *s = SlidingState { start, cur, prev };
    }
    let retry_after = if allowed {
        None
    } else {
        // Force may have pushed the counts over; wait from the state as it now is.
        let cost = check.min(limit);
        Some(Duration::from_micros(wait_for(cur, prev, cost, policy, elapsed)))
    };
    let reset_after = reset_after(cur, prev, window, elapsed);
    let decision = Decision {
        allowed,
        limit,
        // Only `Set` changes `prev` (to zero); otherwise its faded weight is the one computed above.
        remaining: limit.saturating_sub(cur).saturating_sub(if prev == 0 { 0 } else { old }),
        reset_after: Duration::from_micros(reset_after),
        retry_after,
        fallback: false,
    };
    // The end of the second window for a current count, of this one for a previous count only.
    Outcome { decision, reset_at: if reset_after == 0 { 0 } else { now + reset_after } }
}

/// Usage at `now` (the estimate, rounded up), or `None` when both windows are empty.
pub fn inspect(s: &SlidingState, policy: &Policy, now: u64) -> Option<Usage> {
    let window = policy.window_micros();
    let elapsed = policy.window_elapsed(now);
    let (cur, prev) = counts(s, now - elapsed, window);
    if cur == 0 && prev == 0 {
        return None;
    }
    let old = faded(prev, policy, elapsed);
    Some(Usage {
        used: cur.saturating_add(old),
        remaining: policy.limit().saturating_sub(cur).saturating_sub(old),
        reset_after: Duration::from_micros(reset_after(cur, prev, window, elapsed)),
        next_window_after: Duration::from_micros(window - elapsed),
    })
}

/// When the state is empty again (µs): the end of the window after the last one counted.
pub fn reset_at(s: &SlidingState, policy: &Policy) -> u64 {
    let w = policy.window_micros();
    if s.cur > 0 {
        s.start.saturating_add(2 * w)
    } else if s.prev > 0 {
        s.start.saturating_add(w)
    } else {
        0
    }
}
