//! Fixed window: a counter per epoch-aligned window (it starts at `now - now % window`).
//!
//! Admits when `count + cost <= limit`. A denied hit is not counted, so a client that keeps retrying gets
//! through as soon as the next window starts (Hammer's ETS backend counts denied hits, and never lets it).
//!
//! ```
//! use floodgate::algorithm::{fixed_window::{apply, WindowState}, Op};
//! use floodgate::Policy;
//! use std::time::Duration;
//!
//! let p = Policy::fixed_window(2, Duration::from_secs(10))?;
//! let mut s = WindowState::default();
//! assert!(apply(&mut s, &p, Op::Hit, 2, 15_000_000).allowed);
//! assert_eq!(s, WindowState { start: 10_000_000, count: 2 });
//! # Ok::<(), floodgate::PolicyError>(())
//! ```

use std::time::Duration;

use super::{Op, Outcome, Usage, over_capacity};
use crate::{Decision, Policy};

/// A fixed window's state: which window, and its count.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WindowState {
    /// When the window counted started, in µs since the epoch (a multiple of the window).
    pub start: u64,
    /// Units counted in that window.
    pub count: u64,
}

#[inline]
fn current(s: &WindowState, start: u64) -> u64 {
    if s.start == start { s.count } else { 0 }
}

/// Applies an operation (see [`super::apply`]); `now` in µs.
#[inline]
pub fn apply(s: &mut WindowState, policy: &Policy, op: Op, cost: u64, now: u64) -> Decision {
    step(s, policy, op, cost, now).decision
}

/// [`apply`], with the instant the state is empty again.
// Always inlined into the memory store, which inlines it into its callers (see `MemoryStore::hit_sync`).
#[inline(always)]
pub(crate) fn step(s: &mut WindowState, policy: &Policy, op: Op, cost: u64, now: u64) -> Outcome {
    let window = policy.window_micros();
    let limit = policy.limit();
    // The window is found from the clock alone, not from the state, so the CPU can work it out while the
    // state is still on its way from memory. A clock that went backwards stands still at the start of the
    // latest window the state has seen.
    let (mut now, mut start) = (now, policy.window_start(now));
    if s.start > now {
        now = s.start;
        start = policy.window_start(now);
    }
    let until_next = start + window - now;
    let mut count = current(s, start);
    let check = cost.max(1);
    let fits = count.checked_add(check).is_some_and(|c| c <= limit);
    match op {
        Op::Hit => {
            if cost > limit {
                let reset_after = if count > 0 { until_next } else { 0 };
                return over_capacity(policy, limit.saturating_sub(count), reset_after, now);
            }
            if fits && cost > 0 {
                count += cost;
            }
        }
        Op::Force => count = count.saturating_add(cost),
        Op::Set => count = cost,
    }
    let allowed = match op {
        Op::Set => true,
        _ => fits,
    };
    if op != Op::Hit || (fits && cost > 0) {
        *s = WindowState { start, count };
    }
    let decision = Decision {
        allowed,
        limit,
        remaining: limit.saturating_sub(count),
        reset_after: Duration::from_micros(if count > 0 { until_next } else { 0 }),
        retry_after: (!allowed).then(|| Duration::from_micros(until_next)),
        fallback: false,
    };
    Outcome { decision, reset_at: if count > 0 { start + window } else { 0 } }
}

/// Usage at `now`, or `None` when nothing is counted in the current window.
pub fn inspect(s: &WindowState, policy: &Policy, now: u64) -> Option<Usage> {
    let window = policy.window_micros();
    let start = policy.window_start(now);
    let count = current(s, start);
    if count == 0 {
        return None;
    }
    let until_next = Duration::from_micros(start + window - now);
    Some(Usage {
        used: count,
        remaining: policy.limit().saturating_sub(count),
        reset_after: until_next,
        next_window_after: until_next,
    })
}

/// When the state is empty again (µs).
pub fn reset_at(s: &WindowState, policy: &Policy) -> u64 {
    if s.count == 0 { 0 } else { s.start.saturating_add(policy.window_micros()) }
}
