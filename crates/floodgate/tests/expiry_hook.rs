//! The in-memory store's expiry hook: what it is handed, in what batches, and that a panicking or slow hook
//! neither stops the sweep nor blocks a hit.

use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use floodgate::{Expired, ManualClock, MemoryStore, Policy, Timestamp};

const T0: u64 = 1_800_000_000;

fn clock() -> ManualClock {
    ManualClock::new(Timestamp::from_secs(T0))
}

fn policy(name: &str, window_secs: u64) -> Policy {
    Policy::fixed_window(10, Duration::from_secs(window_secs))
        .and_then(|p| p.named(name))
        .unwrap_or_else(|e| panic!("{e}"))
}

type Seen = Arc<Mutex<Vec<Vec<(Vec<u8>, String, u64, Timestamp)>>>>;

fn recording(clock: &ManualClock) -> (MemoryStore, Seen) {
    let seen: Seen = Arc::default();
    let log = seen.clone();
    let store = MemoryStore::builder()
        .clock(clock.clone())
        .shards(4)
        .cleanup_interval(None)
        .on_expiry(move |batch: &[Expired<floodgate::memory::ByteKey>]| {
            let batch =
                batch.iter().map(|e| (e.key.to_vec(), e.policy.to_string(), e.last_used, e.expired_at)).collect();
            log.lock().unwrap_or_else(|e| e.into_inner()).push(batch);
        })
        .build();
    (store, seen)
}

#[test]
fn the_hook_sees_each_expired_bucket_once_with_its_policy_and_count() {
    let clock = clock();
    let (store, seen) = recording(&clock);
    let (short, long) = (policy("short", 10), policy("long", 3600));
    store.hit_sync(&b"a"[..], &short, 3);
    store.hit_sync(&b"a"[..], &long, 4);
    store.hit_sync(&b"b"[..], &short, 1);
    clock.advance(Duration::from_secs(10));
    assert_eq!(store.sweep(), 2);
    let mut got: Vec<_> = seen.lock().unwrap_or_else(|e| e.into_inner()).concat();
    got.sort();
    let at = Timestamp::from_secs(T0 + 10);
    assert_eq!(got, vec![(b"a".to_vec(), "short".into(), 3, at), (b"b".to_vec(), "short".into(), 1, at)]);
    // The key with a live bucket under another policy stays, with that state intact.
    assert_eq!(store.stats().keys, 1);
    assert_eq!(store.hit_sync(&b"a"[..], &long, 0).remaining, 6);
    assert_eq!(store.sweep(), 0, "nothing is handed over twice");
    assert_eq!(seen.lock().unwrap_or_else(|e| e.into_inner()).concat().len(), 2);
}

#[test]
fn the_hook_gets_batches_of_at_most_1024() {
    let clock = clock();
    let (store, seen) = recording(&clock);
    let p = policy("p", 10);
    for i in 0..5_000u32 {
        store.hit_sync(&i.to_be_bytes()[..], &p, 1);
    }
    clock.advance(Duration::from_secs(10));
    assert_eq!(store.sweep(), 5_000);
    let batches = seen.lock().unwrap_or_else(|e| e.into_inner()).clone();
    assert!(
        batches.iter().all(|b| !b.is_empty() && b.len() <= 1024),
        "{:?}",
        batches.iter().map(Vec::len).collect::<Vec<_>>()
    );
    assert_eq!(batches.iter().map(Vec::len).sum::<usize>(), 5_000);
}

#[test]
fn a_panicking_hook_neither_stops_the_sweep_nor_keeps_state() {
    let clock = clock();
    let calls = Arc::new(Mutex::new(0usize));
    let counted = calls.clone();
    let store = MemoryStore::builder()
        .clock(clock.clone())
        .shards(4)
        .cleanup_interval(None)
        .on_expiry(move |_batch| {
            *counted.lock().unwrap_or_else(|e| e.into_inner()) += 1;
            panic!("the hook failed");
        })
        .build();
    let p = policy("p", 10);
    for i in 0..200u32 {
        store.hit_sync(&i.to_be_bytes()[..], &p, 1);
    }
    clock.advance(Duration::from_secs(10));
    assert_eq!(store.sweep(), 200, "every expired bucket was dropped despite the panics");
    let stats = store.stats();
    assert_eq!(stats.keys, 0);
    let calls = *calls.lock().unwrap_or_else(|e| e.into_inner());
    assert!(calls >= 2, "every shard with expired buckets called the hook ({calls} calls)");
    assert_eq!(stats.hook_panics, calls as u64);
}

#[test]
fn a_slow_hook_does_not_block_hits() {
    let clock = clock();
    let (hit_done_tx, hit_done_rx) = mpsc::channel::<()>();
    let (in_hook_tx, in_hook_rx) = mpsc::channel::<()>();
    let hit_done_rx = Mutex::new(hit_done_rx);
    let waited_ok = Arc::new(Mutex::new(None));
    let result = waited_ok.clone();
    // One shard: the hit below needs the very lock the sweep used.
    let store = MemoryStore::builder()
        .clock(clock.clone())
        .shards(1)
        .cleanup_interval(None)
        .on_expiry(move |_batch| {
            let _ = in_hook_tx.send(());
            // Bounded: the hook waits up to 10 s for the hit to finish while it is still running.
            let ok =
                hit_done_rx.lock().unwrap_or_else(|e| e.into_inner()).recv_timeout(Duration::from_secs(10)).is_ok();
            *result.lock().unwrap_or_else(|e| e.into_inner()) = Some(ok);
        })
        .build();
    let p = policy("p", 10);
    store.hit_sync(&b"old"[..], &p, 1);
    clock.advance(Duration::from_secs(10));
    let sweeper = {
        let store = store.clone();
        std::thread::spawn(move || store.sweep())
    };
    in_hook_rx.recv_timeout(Duration::from_secs(10)).unwrap_or_else(|e| panic!("the hook never ran: {e}"));
    assert!(store.hit_sync(&b"new"[..], &p, 1).allowed, "a hit while the hook runs");
    let _ = hit_done_tx.send(());
    assert_eq!(sweeper.join().unwrap_or_else(|_| panic!("sweep thread panicked")), 1);
    assert_eq!(*waited_ok.lock().unwrap_or_else(|e| e.into_inner()), Some(true), "the hit had to wait for the hook");
}
