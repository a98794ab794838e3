//! Deciding a call: the core's fixed- and sliding-window functions run on a counter's totals, so that a single
//! node decides exactly as the memory store does.

use floodgate::algorithm::{
    self, Op, State, fixed_window, fixed_window::WindowState, sliding_window, sliding_window::SlidingState,
};
use floodgate::{Algorithm, Decision, Policy, Timestamp};

use super::windows::Counter;
use crate::counter::ClusterStoreError;

/// What a call adds to this node's entry: `delta` units in the window that starts at `start`.
#[derive(Clone, Copy)]
pub(super) struct Write {
    pub(super) start: u64,
    pub(super) delta: u64,
    /// Whether the counter counted nothing before (its `created` time restarts).
    pub(super) fresh: bool,
}

/// Decides a call on a counter's totals with the core's algorithm (the state it would have had in one store),
/// and says what to add to this node's entry.
#[inline(always)]
pub(super) fn decide(
    counter: Option<&Counter>,
    policy: &Policy,
    op: Op,
    cost: u64,
    now: u64,
    split: u64,
) -> Result<(Decision, Option<Write>), ClusterStoreError> {
    if split > 1
        && let Some(denied) = split_denial(counter, policy, cost, now, split)
    {
        return Ok((denied, None));
    }
    let sliding = policy.algorithm() == Algorithm::SlidingWindow;
    let w = policy.window_micros();
    let start_now = now - now % w;
    let (s, cur, prev) = match counter {
        Some(c) => {
            // A clock that stepped back stands still in the latest window this node counted in.
            let s = if c.own_start > start_now && c.own_start.is_multiple_of(w) { c.own_start } else { start_now };
            (s, c.total(s), if sliding { c.total(s.saturating_sub(w)) } else { 0 })
        }
        None => (start_now, 0, 0),
    };
    // The window algorithms themselves, not the dispatch over every algorithm's state: the hit path stays short
    // (what follows the entry's load is what delays the next call when ids are many).
    let (decision, ns, ncur) = if sliding {
        let mut st = SlidingState { start: s, cur, prev };
        let d = sliding_window::apply(&mut st, policy, op, cost, now);
        (d, st.start, st.cur)
    } else {
        let mut st = WindowState { start: s, count: cur };
        let d = fixed_window::apply(&mut st, policy, op, cost, now);
        (d, st.start, st.count)
    };
    let before = if ns == s { cur } else { 0 };
    if ncur < before {
        return Err(ClusterStoreError::CannotLower { current: before, requested: ncur });
    }
    let write = (ncur > before).then_some(Write { start: ns, delta: ncur - before, fresh: before == 0 && prev == 0 });
    Ok((decision, write))
}

/// The split limit: decides `cost` on this node's own counts against `limit / split`; `Some(denial)` when it
/// does not fit. Off the usual path (only while peers are missing in `SplitLimit` mode).
#[cold]
pub(super) fn split_denial(
    counter: Option<&Counter>,
    policy: &Policy,
    cost: u64,
    now: u64,
    split: u64,
) -> Option<Decision> {
    let cap = (policy.limit() / split).max(1);
    let capped = Policy::new(policy.algorithm(), cap, policy.window()).ok()?;
    let w = policy.window_micros();
    let s = now - now % w;
    let own = |start: u64| counter.map_or(0, |c| c.own(start));
    let mut state = if policy.algorithm() == Algorithm::SlidingWindow {
        State::Sliding(SlidingState { start: s, cur: own(s), prev: own(s.saturating_sub(w)) })
    } else {
        State::Window(WindowState { start: s, count: own(s) })
    };
    let d = algorithm::apply(&mut state, &capped, Op::Hit, cost, Timestamp::from_micros(now));
    (!d.allowed).then_some(d)
}
