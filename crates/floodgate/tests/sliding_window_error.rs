//! Measures the sliding window's worst case: the most units it admits in any span of one window length, against
//! adversaries that hit every microsecond, by brute force over every span. The crate docs quote these figures.

use std::time::Duration;

use floodgate::algorithm::{Op, State, apply};
use floodgate::{Policy, Timestamp};

const WINDOW: u64 = 1_000;

/// Admission times of an adversary that stays idle until `idle_until`, then, every microsecond for `windows`
/// windows, hits until it is denied.
fn admitted(p: &Policy, idle_until: u64, windows: u64) -> Vec<u64> {
    let mut state = State::Empty;
    let mut times = Vec::new();
    for t in idle_until..idle_until + windows * WINDOW {
        while apply(&mut state, p, Op::Hit, 1, Timestamp::from_micros(t)).allowed {
            times.push(t);
        }
    }
    times
}

/// The most admissions in any half-open span `[s, s + WINDOW)`.
fn worst_span(times: &[u64]) -> u64 {
    let mut best = 0;
    let mut lo = 0;
    for hi in 0..times.len() {
        while times[hi] - times[lo] >= WINDOW {
            lo += 1;
        }
        best = best.max(hi - lo + 1);
    }
    best as u64
}

#[test]
fn sliding_window_worst_case_is_twice_the_limit_less_one() {
    for limit in [1u64, 10, 100] {
        let p = Policy::sliding_window(limit, Duration::from_micros(WINDOW)).unwrap_or_else(|e| panic!("{e}"));
        let greedy = worst_span(&admitted(&p, 0, 20));
        // Idle until the last microsecond of a window, so the first burst sits at the very end of it.
        let bunched = worst_span(&admitted(&p, WINDOW - 1, 20));
        let worst = greedy.max(bunched);
        println!(
            "limit {limit}: greedy {greedy}, bunched at a window's end {bunched} (ratio {:.2})",
            worst as f64 / limit as f64
        );
        assert_eq!(worst, (2 * limit - 1).max(1), "limit {limit}: worst span");
        assert_eq!(greedy, limit, "limit {limit}: steady greedy traffic");
    }
}

#[test]
fn fixed_window_worst_case_is_twice_the_limit() {
    // For contrast: the fixed window admits a full limit at the end of one window and again at the start of the
    // next.
    let p = Policy::fixed_window(10, Duration::from_micros(WINDOW)).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(worst_span(&admitted(&p, WINDOW - 1, 20)), 20);
}
