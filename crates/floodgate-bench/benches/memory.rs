//! The in-memory store side by side with `governor`'s keyed limiter, on the same quota, in one run.
//!
//! Run: `cargo bench -p floodgate-bench --bench memory` (about 2 minutes). Figures and ratios: `BENCHMARKS.md`.
//!
//! - `hot/*`: one key, one thread: the per-check floor, for every algorithm.
//! - `1t-hot/*`, `2t-hot/*`: one key on one and on two threads, through the same loop (aggregate time per
//!   check: lower is better); two threads contend for the key.
//! - `1t-1M/*`, `2t-1M/*`: one million distinct string keys (`user:<i>`), visited in a shuffled order, on one
//!   and two threads through the same loop: a cache miss or more per check. These move with the machine's
//!   load, which the bench prints; the interleaved `floor` bench is the million-key comparison to quote.
//!
//! Both sides have the same quota, a million per hour per key, and read their clock on every check.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use floodgate::{Algorithm, MemoryStore, Policy};
use governor::RateLimiter;

mod shared;

use shared::{KEYS, keys, policy, quota};

/// Runs `f(i)` for `iters` iterations split over `threads` threads; returns the aggregate time per iteration
/// times `iters` (what criterion's `iter_custom` wants).
fn threaded(iters: u64, threads: u64, f: impl Fn(u64) + Sync) -> Duration {
    let start = Instant::now();
    std::thread::scope(|s| {
        for t in 0..threads {
            let f = &f;
            s.spawn(move || {
                let per = iters / threads;
                for i in t * per..(t + 1) * per {
                    f(i);
                }
            });
        }
    });
    start.elapsed()
}

/// The machine's load averages, as `/proc/loadavg` gives them (empty where there is none).
fn load() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

fn bench(c: &mut Criterion) {
    let keys = keys();
    let mut g = c.benchmark_group("clock");
    let clock = floodgate::SystemClock::new();
    g.bench_function("floodgate-SystemClock", |b| b.iter(|| black_box(floodgate::Clock::now(&clock))));
    let q = governor::clock::QuantaClock::default();
    g.bench_function("governor-QuantaClock", |b| b.iter(|| black_box(governor::clock::Clock::now(&q))));
    g.finish();

    let mut g = c.benchmark_group("memory");
    g.throughput(Throughput::Elements(1)).warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(3));

    // (a) one hot key, one thread.
    let gov = RateLimiter::keyed(quota());
    let hot = "user:42".to_owned();
    g.bench_function("hot/governor", |b| b.iter(|| black_box(gov.check_key(black_box(&hot)).is_ok())));
    for a in Algorithm::ALL {
        let store = MemoryStore::new();
        let p = policy(a);
        g.bench_function(format!("hot/floodgate-{a}"), |b| {
            b.iter(|| black_box(store.hit_sync(black_box(hot.as_bytes()), &p, 1).allowed))
        });
    }

    // (a') one hot key that is always admitted: a 1 µs window whose limit a hit never reaches (the clock
    // moves on between hits), so every hit writes; the sliding log logs and prunes a run each time.
    for a in [Algorithm::FixedWindow, Algorithm::Gcra, Algorithm::SlidingLog] {
        let store = MemoryStore::new();
        let p = Policy::new(a, 100, Duration::from_millis(1)).unwrap_or_else(|e| panic!("{e}"));
        g.bench_function(format!("hot-admitted/floodgate-{a}"), |b| {
            b.iter(|| black_box(store.hit_sync(black_box(hot.as_bytes()), &p, 1).allowed))
        });
    }

    // (b) one and two threads, the hot key and a million keys, through one loop (`threaded`): the two-thread
    // figures differ from the one-thread ones only by the thread count. The million-key figures here move with
    // the machine's load (printed); the interleaved floor bench (`benches/floor.rs`) is the one to compare.
    println!("machine load before the threaded cases: {}", load());
    let gov = RateLimiter::keyed(quota());
    let store = MemoryStore::new();
    let gcra = policy(Algorithm::Gcra);
    for threads in [1, 2] {
        g.bench_function(format!("{threads}t-hot/governor"), |b| {
            b.iter_custom(|n| threaded(n, threads, |_| _ = black_box(gov.check_key(&hot).is_ok())))
        });
        g.bench_function(format!("{threads}t-hot/floodgate-gcra"), |b| {
            b.iter_custom(|n| threaded(n, threads, |_| _ = black_box(store.hit_sync(hot.as_bytes(), &gcra, 1).allowed)))
        });
    }
    for threads in [1, 2] {
        g.bench_function(format!("{threads}t-1M/governor"), |b| {
            b.iter_custom(|n| threaded(n, threads, |i| _ = black_box(gov.check_key(&keys[i as usize % KEYS]).is_ok())))
        });
        g.bench_function(format!("{threads}t-1M/floodgate-gcra"), |b| {
            b.iter_custom(|n| {
                threaded(n, threads, |i| {
                    _ = black_box(store.hit_sync(keys[i as usize % KEYS].as_bytes(), &gcra, 1).allowed)
                })
            })
        });
    }
    println!("machine load after the threaded cases: {}", load());
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
