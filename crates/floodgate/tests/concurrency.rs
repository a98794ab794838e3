//! Many threads racing on one key admit exactly the policy's capacity, never more, for every algorithm, on the
//! synchronous path of the in-memory store (the async path is covered by the conformance suite).

use std::sync::Barrier;
use std::time::Duration;

use floodgate::{Algorithm, Hit, ManualClock, MemoryStore, Policy, Timestamp};

const THREADS: usize = 8;
const HITS_PER_THREAD: usize = 5_000;

fn race(store: &MemoryStore, policy: &Policy, key: &[u8]) -> u64 {
    let barrier = Barrier::new(THREADS);
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..THREADS)
            .map(|_| {
                scope.spawn(|| {
                    barrier.wait();
                    (0..HITS_PER_THREAD).filter(|_| store.hit_sync(key, policy, 1).allowed).count() as u64
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap_or_else(|_| panic!("a racing thread panicked"))).sum()
    })
}

#[test]
fn racing_threads_on_one_key_admit_exactly_the_limit() {
    for algorithm in Algorithm::ALL {
        // The clock stands still, so nothing refills while the threads race.
        let clock = ManualClock::new(Timestamp::from_secs(1_800_000_000));
        let store = MemoryStore::builder().clock(clock).cleanup_interval(None).build();
        let policy = Policy::new(algorithm, 1_000, Duration::from_secs(60)).unwrap_or_else(|e| panic!("{e}"));
        let admitted = race(&store, &policy, b"hot");
        assert_eq!(admitted, 1_000, "{algorithm}: {THREADS} threads × {HITS_PER_THREAD} hits admitted {admitted}");
    }
}

#[test]
fn racing_threads_with_costs_never_exceed_capacity() {
    for algorithm in Algorithm::ALL {
        let clock = ManualClock::new(Timestamp::from_secs(1_800_000_000));
        let store = MemoryStore::builder().clock(clock).shards(1).cleanup_interval(None).build();
        let policy = Policy::new(algorithm, 997, Duration::from_secs(60)).unwrap_or_else(|e| panic!("{e}"));
        let barrier = Barrier::new(THREADS);
        let used: u64 = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..THREADS as u64)
                .map(|t| {
                    let (store, policy, barrier) = (&store, &policy, &barrier);
                    scope.spawn(move || {
                        barrier.wait();
                        let cost = t % 4 + 1;
                        (0..1_000).filter(|_| store.hit_sync(&b"hot"[..], policy, cost).allowed).count() as u64 * cost
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap_or_else(|_| panic!("a racing thread panicked"))).sum()
        });
        // Costs of 1 to 4 fill 997 units up to at most 3 short of it, and never past it.
        assert!((994..=997).contains(&used), "{algorithm}: racing costs used {used} of 997");
    }
}

#[test]
fn racing_threads_on_many_keys_admit_exactly_the_limit_each() {
    let clock = ManualClock::new(Timestamp::from_secs(1_800_000_000));
    let store = MemoryStore::builder().clock(clock).cleanup_interval(None).build();
    let policy = Policy::gcra(10, Duration::from_secs(60)).unwrap_or_else(|e| panic!("{e}"));
    let keys: Vec<Vec<u8>> = (0..500).map(|i| format!("user:{i}").into_bytes()).collect();
    let barrier = Barrier::new(THREADS);
    let admitted: u64 = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..THREADS)
            .map(|t| {
                let (store, policy, barrier, keys) = (&store, &policy, &barrier, &keys);
                scope.spawn(move || {
                    barrier.wait();
                    // Each thread walks the keys from a different offset, 3 passes of 10 hits.
                    let mut n = 0u64;
                    for pass in 0..30 {
                        for i in 0..keys.len() {
                            let k = &keys[(i + t * 61 + pass) % keys.len()];
                            n += u64::from(store.hit_sync(&k[..], policy, 1).allowed);
                        }
                    }
                    n
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap_or_else(|_| panic!("a racing thread panicked"))).sum()
    });
    assert_eq!(admitted, 500 * 10);
    for k in &keys {
        assert_eq!(store.hit_sync(&k[..], &policy, 0).remaining, 0);
    }
}

/// Batches over two keys, in both orders, from many threads: no deadlock, and every batch is all or nothing,
/// so both keys end with exactly the admitted batches counted (the tighter limit admits 300 batches; the other
/// key, limit 1 000, shows 300 too, never the 5 000 it would if denied batches counted their first hit).
#[test]
fn racing_batches_are_all_or_nothing() {
    for algorithm in Algorithm::ALL {
        let clock = ManualClock::new(Timestamp::from_secs(1_800_000_000));
        let store = MemoryStore::builder().clock(clock).cleanup_interval(None).build();
        let tight = Policy::new(algorithm, 300, Duration::from_secs(60)).unwrap_or_else(|e| panic!("{e}"));
        let loose = Policy::new(algorithm, 1_000, Duration::from_secs(60)).unwrap_or_else(|e| panic!("{e}"));
        let forward = [Hit { id: b"user:1", policy: &loose, cost: 1 }, Hit { id: b"/route", policy: &tight, cost: 1 }];
        let backward = [forward[1], forward[0]];
        let barrier = Barrier::new(THREADS);
        let admitted: u64 = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..THREADS)
                .map(|t| {
                    let (store, barrier) = (&store, &barrier);
                    let batch = if t % 2 == 0 { &forward } else { &backward };
                    scope.spawn(move || {
                        barrier.wait();
                        let now = Timestamp::from_secs(1_800_000_000);
                        (0..625).filter(|_| store.hit_all_at(batch, now).iter().all(|d| d.allowed)).count() as u64
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap_or_else(|_| panic!("a racing thread panicked"))).sum()
        });
        let now = Timestamp::from_secs(1_800_000_000);
        let used = |id: &[u8], p: &Policy| store.inspect_at(id, p, now).map_or(0, |b| b.used);
        assert_eq!(admitted, 300, "{algorithm}");
        assert_eq!((used(b"user:1", &loose), used(b"/route", &tight)), (300, 300), "{algorithm}");
    }
}
