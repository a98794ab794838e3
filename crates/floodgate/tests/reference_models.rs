//! Every algorithm against a brute-force reference model.
//!
//! The models are written independently of the implementation: window counters keep a log of every counted
//! unit and recount it; the token bucket keeps exact rational tokens, the leaky bucket an exact level and GCRA
//! an exact theoretical arrival time. `retry_after` and `reset_after` are found by stepping the model forward
//! one microsecond at a time. Random sequences of (time step, operation, cost) must give identical decisions:
//! the same allow/deny sequence and the same remaining, reset_after and retry_after.

use std::time::Duration;

use floodgate::algorithm::{self, Op, State};
use floodgate::{Algorithm, Decision, Policy, Timestamp};
use proptest::prelude::*;

/// A reference model: what a state answers at time `t` for a check of `cost`, and how operations change it.
trait Model {
    /// Whether `cost` units fit at `t`.
    fn fits(&self, t: u64, cost: u64) -> bool;
    /// Whole units that fit at `t`.
    fn remaining(&self, t: u64) -> u64;
    /// Whether the state is back to empty at `t`.
    fn empty(&self, t: u64) -> bool;
    /// Counts `cost` units at `t` (unconditionally).
    fn count(&mut self, t: u64, cost: u64);
    /// Sets the used units to `used` at `t`.
    fn set(&mut self, t: u64, used: u64);
}

/// The decision the model gives, searching forward in time for `retry_after` and `reset_after`.
fn decide(m: &mut dyn Model, capacity: u64, op: Op, cost: u64, t: u64, horizon: u64) -> Decision {
    let check = cost.max(1);
    let fits = m.fits(t, check);
    let allowed = match op {
        Op::Hit if cost > capacity => {
            return Decision {
                allowed: false,
                limit: capacity,
                remaining: m.remaining(t),
                reset_after: first(t, horizon, |u| m.empty(u)),
                retry_after: None,
                fallback: false,
            };
        }
        Op::Hit => {
            if fits && cost > 0 {
                m.count(t, cost);
            }
            fits
        }
        Op::Force => {
            m.count(t, cost);
            fits
        }
        Op::Set => {
            m.set(t, cost);
            true
        }
    };
    let retry_after = (!allowed).then(|| first(t, horizon, |u| m.fits(u, check.min(capacity))));
    Decision {
        allowed,
        limit: capacity,
        remaining: m.remaining(t),
        reset_after: first(t, horizon, |u| m.empty(u)),
        retry_after,
        fallback: false,
    }
}

/// The first `d >= 0` (in µs, as a duration) for which `pred(t + d)` holds.
fn first(t: u64, horizon: u64, pred: impl Fn(u64) -> bool) -> Duration {
    (0..=horizon)
        .find(|d| pred(t + d))
        .map(Duration::from_micros)
        .unwrap_or_else(|| panic!("nothing within {horizon} µs"))
}

/// A log of counted units, for both window models.
struct Log {
    limit: u64,
    window: u64,
    entries: Vec<(u64, u64)>,
    sliding: bool,
}

impl Log {
    fn in_window(&self, t: u64, windows_back: u64) -> u64 {
        let idx = (t / self.window).checked_sub(windows_back);
        self.entries.iter().filter(|(at, _)| Some(at / self.window) == idx).map(|(_, n)| n).sum()
    }
    /// The estimate scaled by the window: `prev × (window − elapsed) + cur × window` (just `cur × window` for
    /// the fixed window).
    fn used_scaled(&self, t: u64) -> u128 {
        let cur = self.in_window(t, 0) as u128 * self.window as u128;
        if !self.sliding {
            return cur;
        }
        let elapsed = t % self.window;
        cur + self.in_window(t, 1) as u128 * (self.window - elapsed) as u128
    }
}

impl Model for Log {
    fn fits(&self, t: u64, cost: u64) -> bool {
        self.used_scaled(t) + cost as u128 * self.window as u128 <= self.limit as u128 * self.window as u128
    }
    fn remaining(&self, t: u64) -> u64 {
        (0..=self.limit).rev().find(|&k| k == 0 || self.fits(t, k)).unwrap_or(0)
    }
    fn empty(&self, t: u64) -> bool {
        self.in_window(t, 0) == 0 && (!self.sliding || self.in_window(t, 1) == 0)
    }
    fn count(&mut self, t: u64, cost: u64) {
        self.entries.push((t, cost));
    }
    fn set(&mut self, t: u64, used: u64) {
        let w = self.window;
        let keep_from = if self.sliding { (t / w).saturating_sub(1) } else { t / w };
        self.entries.retain(|(at, _)| at / w < keep_from);
        self.entries.push((t, used));
    }
}

/// Token bucket with exact rational tokens: `tokens × window`, refilled by `limit` every microsecond up to
/// `burst × window`; forced units may take it below zero.
struct Tokens {
    limit: i128,
    window: i128,
    burst: i128,
    tokens: i128,
    last: u64,
}

impl Tokens {
    fn at(&self, t: u64) -> i128 {
        let refill = t.saturating_sub(self.last) as i128 * self.limit;
        (self.tokens + refill).min(self.burst * self.window).max(self.tokens.min(self.burst * self.window))
    }
}

impl Model for Tokens {
    fn fits(&self, t: u64, cost: u64) -> bool {
        self.at(t) >= cost as i128 * self.window
    }
    fn remaining(&self, t: u64) -> u64 {
        (self.at(t).max(0) / self.window) as u64
    }
    fn empty(&self, t: u64) -> bool {
        self.at(t) == self.burst * self.window
    }
    fn count(&mut self, t: u64, cost: u64) {
        self.tokens = self.at(t) - cost as i128 * self.window;
        self.last = self.last.max(t);
    }
    fn set(&mut self, t: u64, used: u64) {
        self.tokens = (self.burst - used as i128) * self.window;
        self.last = self.last.max(t);
    }
}

/// Leaky bucket with an exact level: `level × window`, draining `limit` every microsecond down to zero.
struct Level {
    limit: i128,
    window: i128,
    burst: i128,
    level: i128,
    last: u64,
}

impl Level {
    fn at(&self, t: u64) -> i128 {
        (self.level - t.saturating_sub(self.last) as i128 * self.limit).max(0)
    }
}

impl Model for Level {
    fn fits(&self, t: u64, cost: u64) -> bool {
        self.at(t) + cost as i128 * self.window <= self.burst * self.window
    }
    fn remaining(&self, t: u64) -> u64 {
        ((self.burst * self.window - self.at(t)).max(0) / self.window) as u64
    }
    fn empty(&self, t: u64) -> bool {
        self.at(t) == 0
    }
    fn count(&mut self, t: u64, cost: u64) {
        self.level = self.at(t) + cost as i128 * self.window;
        self.last = self.last.max(t);
    }
    fn set(&mut self, t: u64, used: u64) {
        self.level = used as i128 * self.window;
        self.last = self.last.max(t);
    }
}

/// GCRA with an exact theoretical arrival time, scaled by `limit` (so the emission interval is `window`).
struct Tat {
    limit: i128,
    window: i128,
    burst: i128,
    tat: i128,
}

impl Model for Tat {
    fn fits(&self, t: u64, cost: u64) -> bool {
        let now = t as i128 * self.limit;
        self.tat.max(now) + cost as i128 * self.window - now <= self.burst * self.window
    }
    fn remaining(&self, t: u64) -> u64 {
        let now = t as i128 * self.limit;
        ((self.burst * self.window - (self.tat.max(now) - now)).max(0) / self.window) as u64
    }
    fn empty(&self, t: u64) -> bool {
        self.tat <= t as i128 * self.limit
    }
    fn count(&mut self, t: u64, cost: u64) {
        self.tat = self.tat.max(t as i128 * self.limit) + cost as i128 * self.window;
    }
    fn set(&mut self, t: u64, used: u64) {
        self.tat = t as i128 * self.limit + used as i128 * self.window;
    }
}

/// The exact sliding window: every counted unit with its time rounded up to the millisecond (the log's
/// documented resolution); a unit counts while `t < at + window`.
struct Exact {
    limit: u64,
    window: u64,
    entries: Vec<(u64, u64)>,
}

impl Exact {
    fn used(&self, t: u64) -> u64 {
        self.entries.iter().filter(|(at, _)| t < at + self.window).map(|(_, n)| n).sum()
    }
}

impl Model for Exact {
    fn fits(&self, t: u64, cost: u64) -> bool {
        self.used(t) + cost <= self.limit
    }
    fn remaining(&self, t: u64) -> u64 {
        self.limit.saturating_sub(self.used(t))
    }
    fn empty(&self, t: u64) -> bool {
        self.used(t) == 0
    }
    fn count(&mut self, t: u64, cost: u64) {
        if cost == 0 {
            return;
        }
        // Runs that no longer count are gone for good (time only moves forward here).
        let window = self.window;
        self.entries.retain(|(at, _)| t < at + window);
        let at = t.div_ceil(1000) * 1000;
        let full = self.entries.len() as u64 >= self.limit;
        match self.entries.last_mut() {
            // Units of one millisecond share a run.
            Some(last) if last.0 == at => last.1 += cost,
            // At `limit` runs (only forced units get there), the newest run takes the units and moves to now.
            Some(last) if full => *last = (at, last.1 + cost),
            _ => self.entries.push((at, cost)),
        }
    }
    fn set(&mut self, t: u64, used: u64) {
        self.entries.clear();
        self.count(t, used);
    }
}

fn model(policy: &Policy, burst: u64) -> Box<dyn Model> {
    let (limit, window) = (policy.limit(), policy.window_micros());
    let (l, w, b) = (limit as i128, window as i128, burst as i128);
    match policy.algorithm() {
        Algorithm::FixedWindow => Box::new(Log { limit, window, entries: vec![], sliding: false }),
        Algorithm::SlidingWindow => Box::new(Log { limit, window, entries: vec![], sliding: true }),
        Algorithm::TokenBucket => Box::new(Tokens { limit: l, window: w, burst: b, tokens: b * w, last: 0 }),
        Algorithm::LeakyBucket => Box::new(Level { limit: l, window: w, burst: b, level: 0, last: 0 }),
        Algorithm::Gcra => Box::new(Tat { limit: l, window: w, burst: b, tat: 0 }),
        Algorithm::SlidingLog => Box::new(Exact { limit, window, entries: vec![] }),
        other => panic!("no model for {other}"),
    }
}

#[derive(Clone, Debug)]
struct Step {
    /// Wait exactly the last decision's `retry_after` (or `reset_after`) instead of `advance`, as a polite client
    /// does: this lands on the boundaries where an off-by-one shows.
    obey: bool,
    advance: u64,
    op: Op,
    cost: u64,
}

fn step(window: u64, capacity: u64) -> impl Strategy<Value = Step> {
    let op = prop_oneof![8 => Just(Op::Hit), 1 => Just(Op::Force), 1 => Just(Op::Set)];
    let advance = prop_oneof![3 => Just(0u64), 5 => 0..=window, 1 => 0..=3 * window];
    (prop::bool::weighted(0.25), advance, op, 0..=capacity + 2).prop_map(|(obey, advance, op, cost)| Step {
        obey,
        advance,
        op,
        cost,
    })
}

fn scenario(algorithm: Algorithm) -> impl Strategy<Value = (Policy, u64, u64, Vec<Step>)> {
    // The log keeps milliseconds: give it windows of a few, so rounding and merging are exercised.
    let windows = if algorithm == Algorithm::SlidingLog { 1u64..=20_000 } else { 1u64..=400 };
    (1u64..=12, windows, 1u64..=15, 0u64..=1_000_000_000_000).prop_flat_map(move |(limit, window, burst, start)| {
        let base = Policy::new(algorithm, limit, Duration::from_micros(window)).expect("valid policy");
        let (policy, burst) =
            if algorithm.is_meter() { (base.with_burst(burst).expect("valid burst"), burst) } else { (base, limit) };
        let steps = prop::collection::vec(step(window, burst), 1..40);
        (Just(policy), Just(burst), Just(start), steps)
    })
}

fn check(
    algorithm: Algorithm,
    (policy, burst, start, steps): (Policy, u64, u64, Vec<Step>),
) -> Result<(), TestCaseError> {
    let mut reference = model(&policy, burst);
    let mut state = State::Empty;
    // Nothing takes longer to clear than every unit of the scenario draining one window each, plus two windows.
    let total: u64 = steps.iter().map(|s| s.cost).sum::<u64>() + burst + 2;
    // (The log's rounding up to the millisecond adds up to 1 ms.)
    let horizon = policy.window_micros() * (total + 2) + 1_000;
    let mut t = start;
    let mut last: Option<Decision> = None;
    for (i, s) in steps.iter().enumerate() {
        t += match (s.obey, last) {
            (true, Some(d)) => d.retry_after.unwrap_or(d.reset_after).as_micros() as u64,
            _ => s.advance,
        };
        let got = algorithm::apply(&mut state, &policy, s.op, s.cost, Timestamp::from_micros(t));
        let want = decide(&mut *reference, policy.capacity(), s.op, s.cost, t, horizon);
        prop_assert_eq!(got, want, "{} step {} ({:?}) at t={}", algorithm, i, s, t);
        last = Some(got);
        let usage = algorithm::inspect(&state, &policy, Timestamp::from_micros(t));
        prop_assert_eq!(usage.is_none(), reference.empty(t), "{} step {}: inspect emptiness", algorithm, i);
        if let Some(u) = usage {
            prop_assert_eq!(u.remaining, reference.remaining(t), "{} step {}: inspect remaining", algorithm, i);
            prop_assert_eq!(u.reset_after, got.reset_after, "{} step {}: inspect reset_after", algorithm, i);
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 192, ..ProptestConfig::default() })]

    #[test]
    fn fixed_window_matches_its_model(s in scenario(Algorithm::FixedWindow)) { check(Algorithm::FixedWindow, s)?; }

    #[test]
    fn sliding_window_matches_its_model(s in scenario(Algorithm::SlidingWindow)) { check(Algorithm::SlidingWindow, s)?; }

    #[test]
    fn token_bucket_matches_its_model(s in scenario(Algorithm::TokenBucket)) { check(Algorithm::TokenBucket, s)?; }

    #[test]
    fn leaky_bucket_matches_its_model(s in scenario(Algorithm::LeakyBucket)) { check(Algorithm::LeakyBucket, s)?; }

    #[test]
    fn gcra_matches_its_model(s in scenario(Algorithm::Gcra)) { check(Algorithm::Gcra, s)?; }

    #[test]
    fn sliding_log_matches_its_model(s in scenario(Algorithm::SlidingLog)) { check(Algorithm::SlidingLog, s)?; }
}

/// The sliding log's bound on runs, against its model: two hits fill a limit of 2 in two runs, a forced unit
/// moves the newest run to now, and the denial after it waits for that run.
#[test]
fn sliding_log_forced_units_move_the_newest_run() {
    let policy = Policy::sliding_log(2, Duration::from_millis(20)).expect("valid policy");
    let step = |advance, op, cost| Step { obey: false, advance, op, cost };
    let steps = vec![
        step(0, Op::Hit, 1),
        step(2_000, Op::Hit, 1),
        step(2_000, Op::Force, 1),
        step(1_000, Op::Hit, 1),
        step(0, Op::Hit, 0),
    ];
    check(Algorithm::SlidingLog, (policy, 2, 1_000_000_000, steps)).expect("matches the model");
}
