//! The sweep thread of the in-memory store starts with it, sweeps, and is joined when the store is dropped.
//! Alone in its own test binary, so no other test's store adds or removes sweep threads meanwhile.

use std::time::{Duration, Instant};

use floodgate::{ManualClock, MemoryStore, Policy, Timestamp};

fn policy() -> Policy {
    Policy::fixed_window(2, Duration::from_secs(10)).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn the_sweep_thread_runs_and_stops_with_the_store() {
    let clock = ManualClock::new(Timestamp::from_secs(1_800_000_000));
    let store = MemoryStore::builder().clock(clock.clone()).cleanup_interval(Some(Duration::from_millis(5))).build();
    store.hit_sync(&b"a"[..], &policy(), 1);
    clock.advance(Duration::from_secs(10));
    // Bounded wait for the background thread (it runs every 5 ms).
    let deadline = Instant::now() + Duration::from_secs(5);
    while store.stats().keys > 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(store.stats().keys, 0, "the sweep thread did not drop the expired key");
    let threads_before = sweep_threads();
    drop(store);
    // Dropping the last handle joins the thread: it is gone as soon as drop returns.
    assert_eq!(threads_before, 1, "one sweep thread while the store lived");
    assert_eq!(sweep_threads(), 0, "the sweep thread outlived its store");
}

/// Live `floodgate-sweep` threads of this process (Linux: thread names under /proc/self/task).
fn sweep_threads() -> usize {
    std::fs::read_dir("/proc/self/task")
        .map(|tasks| {
            tasks
                .filter_map(Result::ok)
                .filter(|t| std::fs::read_to_string(t.path().join("comm")).is_ok_and(|c| c.trim() == "floodgate-sweep"))
                .count()
        })
        .unwrap_or(0)
}
