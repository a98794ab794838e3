//! The in-memory store side by side with `governor`'s keyed limiter, on the same quota, in one run.
//!
//! Run: `cargo bench -p floodgate-bench --bench memory` (about 2 minutes). Figures and ratios: `BENCHMARKS.md`.
//!
//! - `hot/*`: one key, one thread: the per-check floor.
//! - `1M/*`: one million distinct string keys (`user:<i>`), one thread, visited in a shuffled order: one
//!   cache miss or more per check, which is what a busy server sees.
//! - `2t/*`: the same two workloads on two threads (aggregate time per check: lower is better).
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

    // (b) one million keys, one thread.
    let gov = RateLimiter::keyed(quota());
    let gov_fast = RateLimiter::dashmap_with_hasher(quota(), foldhash::fast::RandomState::default());
    let store = MemoryStore::new();
    let gcra = policy(Algorithm::Gcra);
    let fixed = policy(Algorithm::FixedWindow);
    let store_fixed = MemoryStore::new();
    let mut i = 0usize;
    let mut next = || {
        i = (i + 1) % KEYS;
        &keys[i]
    };
    g.bench_function("1M/governor", |b| b.iter(|| black_box(gov.check_key(next()).is_ok())));
    g.bench_function("1M/governor-foldhash", |b| b.iter(|| black_box(gov_fast.check_key(next()).is_ok())));
    g.bench_function("1M/floodgate-gcra", |b| {
        b.iter(|| black_box(store.hit_sync(next().as_bytes(), &gcra, 1).allowed))
    });
    // Keys of any type (the HTTP middleware keys by peer address): a million IPv4 addresses, no formatting.
    let ips: Vec<std::net::IpAddr> = {
        let mut x = 0x2545_F491_4F6C_DD1Du64;
        (0..KEYS)
            .map(|i| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                std::net::IpAddr::from(((i as u32) ^ (x as u32 & 0xFF00_0000)).to_be_bytes())
            })
            .collect()
    };
    let by_ip = MemoryStore::builder().key_type::<std::net::IpAddr>().build();
    let mut j = 0usize;
    g.bench_function("1M/floodgate-gcra-ipaddr", |b| {
        b.iter(|| {
            j = (j + 1) % KEYS;
            black_box(by_ip.hit_sync(&ips[j], &gcra, 1).allowed)
        })
    });
    g.bench_function("1M/floodgate-fixed_window", |b| {
        b.iter(|| black_box(store_fixed.hit_sync(next().as_bytes(), &fixed, 1).allowed))
    });

    // (c) two threads: the hot key, then the million keys.
    g.bench_function("2t-hot/governor", |b| {
        b.iter_custom(|n| threaded(n, 2, |_| _ = black_box(gov.check_key(&hot).is_ok())))
    });
    g.bench_function("2t-hot/floodgate-gcra", |b| {
        b.iter_custom(|n| threaded(n, 2, |_| _ = black_box(store.hit_sync(hot.as_bytes(), &gcra, 1).allowed)))
    });
    g.bench_function("2t-1M/governor", |b| {
        b.iter_custom(|n| threaded(n, 2, |i| _ = black_box(gov.check_key(&keys[i as usize % KEYS]).is_ok())))
    });
    g.bench_function("2t-1M/floodgate-gcra", |b| {
        b.iter_custom(|n| {
            threaded(n, 2, |i| _ = black_box(store.hit_sync(keys[i as usize % KEYS].as_bytes(), &gcra, 1).allowed))
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
