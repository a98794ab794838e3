//! Behaviour specific to the in-memory store: expiry and the sweep thread, the key bound, key types.

use std::net::IpAddr;
use std::time::Duration;

use floodgate::algorithm::Op;
use floodgate::{Hit, ManualClock, MemoryStore, Policy, Timestamp, WhenFull};

fn start() -> ManualClock {
    ManualClock::new(Timestamp::from_secs(1_800_000_000))
}

fn policy() -> Policy {
    Policy::fixed_window(2, Duration::from_secs(10)).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn expired_state_is_invisible_before_the_sweep_and_dropped_by_it() {
    let clock = start();
    let store = MemoryStore::builder().clock(clock.clone()).cleanup_interval(None).build();
    let p = policy();
    store.hit_sync(&b"a"[..], &p, 2);
    store.hit_sync(&b"b"[..], &p, 1);
    clock.advance(Duration::from_secs(10));
    assert_eq!(store.stats().keys, 2, "nothing swept yet");
    assert_eq!(store.inspect_at(&b"a"[..], &p, clock_now(&clock)), None, "expired state visible before the sweep");
    assert_eq!(store.hit_sync(&b"a"[..], &p, 0).remaining, 2);
    assert_eq!(store.delete_at(&b"b"[..], clock_now(&clock)), 0, "an expired bucket counted as deleted");
    assert_eq!(store.sweep(), 1, "only a's bucket was left to sweep");
    assert_eq!(store.stats().keys, 0);
    assert_eq!(store.stats().swept, 1);
}

fn clock_now(clock: &ManualClock) -> Timestamp {
    floodgate::Clock::now(clock)
}

#[test]
fn expiry_keeps_idle_buckets_but_never_their_state() {
    let clock = start();
    let store =
        MemoryStore::builder().clock(clock.clone()).expiry(Duration::from_secs(60)).cleanup_interval(None).build();
    let p = policy();
    store.hit_sync(&b"a"[..], &p, 2);
    clock.advance(Duration::from_secs(30));
    assert_eq!(store.sweep(), 0, "kept for expiry after the last update");
    assert_eq!(store.hit_sync(&b"a"[..], &p, 1).remaining, 1, "the state itself reset with its window");
    clock.advance(Duration::from_secs(61));
    assert_eq!(store.sweep(), 1);
}

#[test]
fn checks_and_denials_of_new_keys_allocate_no_state() {
    let store = MemoryStore::builder().clock(start()).cleanup_interval(None).build();
    let p = policy();
    for i in 0..1_000u32 {
        store.hit_sync(&i.to_be_bytes()[..], &p, 0);
        store.hit_sync(&i.to_be_bytes()[..], &p, 3);
    }
    assert_eq!(store.stats().keys, 0);
}

#[test]
fn a_full_store_drops_expired_keys_first() {
    let clock = start();
    let store =
        MemoryStore::builder().clock(clock.clone()).shards(1).max_keys(Some(100)).cleanup_interval(None).build();
    let p = policy();
    for i in 0..100u32 {
        store.hit_sync(&i.to_be_bytes()[..], &p, 1);
    }
    clock.advance(Duration::from_secs(10));
    for i in 100..150u32 {
        store.hit_sync(&i.to_be_bytes()[..], &p, 1);
    }
    let stats = store.stats();
    assert_eq!(stats.evicted_live, 0, "live keys evicted while expired ones were there: {stats:?}");
    assert_eq!(stats.evicted_expired, 100);
    assert_eq!(stats.keys, 50);
}

#[test]
fn a_full_store_of_live_keys_evicts_the_nearest_to_reset_and_counts_it() {
    let clock = start();
    let store = MemoryStore::builder()
        .clock(clock.clone())
        .shards(1)
        .max_keys(Some(80))
        .when_full(WhenFull::EvictLive)
        .cleanup_interval(None)
        .build();
    let long = Policy::fixed_window(2, Duration::from_secs(3600)).unwrap_or_else(|e| panic!("{e}"));
    let short = policy();
    for i in 0..40u32 {
        store.hit_sync(&i.to_be_bytes()[..], &long, 1);
    }
    for i in 40..80u32 {
        store.hit_sync(&i.to_be_bytes()[..], &short, 1);
    }
    store.hit_sync(&b"new"[..], &long, 1);
    let stats = store.stats();
    assert!(stats.evicted_live > 0 && stats.keys <= 80, "{stats:?}");
    // The keys nearest to their reset (the short window) went first; the long-window keys kept their counts.
    for i in 0..40u32 {
        assert_eq!(store.hit_sync(&i.to_be_bytes()[..], &long, 0).remaining, 1, "long-lived key {i} lost its state");
    }
}

/// Issue 19, defect 1: a flood of new keys must never reset the count of a key that is over its limit. Before
/// the fix the store evicted live keys to make room, and most exhausted victims were admitted again.
#[test]
fn a_flood_of_new_keys_never_readmits_an_exhausted_key() {
    let clock = start();
    let store = MemoryStore::builder().clock(clock.clone()).max_keys(Some(10_000)).cleanup_interval(None).build();
    let p = Policy::fixed_window(100, Duration::from_secs(60)).unwrap_or_else(|e| panic!("{e}"));
    let victims: Vec<Vec<u8>> = (0..20u32).map(|i| format!("victim:{i}").into_bytes()).collect();
    for v in &victims {
        for _ in 0..100 {
            assert!(store.hit_sync(&v[..], &p, 1).allowed);
        }
        assert!(!store.hit_sync(&v[..], &p, 1).allowed);
    }
    let mut refused = 0u64;
    for i in 0..100_000u32 {
        let d = store.hit_sync(format!("attacker:{i}").as_bytes(), &p, 1);
        if !d.allowed {
            refused += 1;
            // A refused key learns when room frees: when the shard's first key's window ends.
            assert!(d.retry_after.is_some_and(|r| r <= Duration::from_secs(60)), "{d:?}");
        }
    }
    let admitted = victims.iter().filter(|v| store.hit_sync(&v[..], &p, 1).allowed).count();
    assert_eq!(admitted, 0, "exhausted victims admitted again after the flood");
    let stats = store.stats();
    assert!(stats.keys <= 10_000 + 64, "{stats:?}");
    assert_eq!(stats.evicted_live, 0, "{stats:?}");
    assert_eq!(stats.refused_full, refused, "{stats:?}");
    assert!(refused >= 89_000, "{stats:?}");
    // When the window ends, the keys expire and new keys are admitted again.
    clock.advance(Duration::from_secs(60));
    assert!(store.hit_sync(&b"latecomer"[..], &p, 1).allowed);
}

/// Under `WhenFull::RefuseNew`, a batch with a key that finds no room is denied as a whole, and no other key
/// of the batch keeps a hit.
#[test]
fn a_batch_with_a_refused_new_key_counts_nothing() {
    let clock = start();
    let store = MemoryStore::builder().clock(clock).shards(1).max_keys(Some(2)).cleanup_interval(None).build();
    let p = policy();
    assert!(store.hit_sync(&b"a"[..], &p, 1).allowed);
    assert!(store.hit_sync(&b"b"[..], &p, 1).allowed);
    let batch = [Hit { id: b"a", policy: &p, cost: 1 }, Hit { id: b"c", policy: &p, cost: 1 }];
    let ds = store.hit_all_at(&batch, store.clock().now());
    assert!(!ds[1].allowed, "{ds:?}");
    assert_eq!(store.hit_sync(&b"a"[..], &p, 0).remaining, policy().limit() - 1);
}

#[test]
fn keys_of_any_type() {
    let clock = start();
    let p = policy();
    let by_ip = MemoryStore::builder().key_type::<IpAddr>().clock(clock.clone()).build();
    let ip: IpAddr = "2001:db8::1".parse().unwrap_or_else(|e| panic!("{e}"));
    by_ip.hit_sync(&ip, &p, 2);
    assert!(!by_ip.hit_sync(&ip, &p, 1).allowed);
    let by_tuple = MemoryStore::builder().key_type::<(u32, u16)>().clock(clock.clone()).build();
    assert!(by_tuple.hit_sync(&(7, 80), &p, 2).allowed);
    assert!(by_tuple.hit_sync(&(7, 81), &p, 2).allowed);
    let by_string = MemoryStore::builder().key_type::<String>().clock(clock).build();
    assert!(by_string.hit_sync("user:1", &p, 2).allowed);
    assert!(!by_string.hit_sync("user:1", &p, 1).allowed);
}

#[test]
fn apply_at_is_the_same_path_as_the_store_trait() {
    let store = MemoryStore::builder().clock(start()).cleanup_interval(None).build();
    let p = policy();
    let now = Timestamp::from_secs(1_800_000_000);
    let d = store.apply_at(&b"k"[..], &p, Op::Force, 5, now);
    assert!(!d.allowed);
    assert_eq!(store.inspect_at(&b"k"[..], &p, now).map(|i| i.used), Some(5));
}

#[test]
fn a_write_after_a_clock_step_back_keeps_state_alive() {
    // Found on the Redis store's cross-check: a meter written while the clock is behind its state must not be
    // forgotten early, or a hit for the full capacity would pass while units are still held.
    for policy in [
        Policy::gcra(5, Duration::from_secs(10)),
        Policy::token_bucket(5, Duration::from_secs(10)),
        Policy::leaky_bucket(5, Duration::from_secs(10)),
    ] {
        let p = policy.unwrap_or_else(|e| panic!("{e}"));
        let clock = start();
        let store = MemoryStore::builder().clock(clock.clone()).cleanup_interval(None).build();
        clock.advance(Duration::from_secs(5));
        store.hit_sync(&b"k"[..], &p, 3);
        clock.set(Timestamp::from_secs(1_800_000_000 + 1));
        store.hit_sync(&b"k"[..], &p, 1);
        // That hit counted at the state's own time (5 s): 4 units, draining one per 2 s, so 1.75 units are still
        // held at 9.5 s (wrongly expiring at 1 s + 8 s would have forgotten them by then).
        clock.set(Timestamp::from_secs(1_800_000_000 + 9) + Duration::from_millis(500));
        let d = store.hit_sync(&b"k"[..], &p, 5);
        assert!(!d.allowed, "{}: a full-capacity hit passed while units were held: {d:?}", p.key());
        assert_eq!(store.sweep(), 0, "{}: live state swept", p.key());
    }
}

/// Hammer's `inspect_bucket` reports when a bucket was created: a bucket that expired (empty, and idle for
/// `expiry`) and is written again starts anew, while one that is still live or still kept keeps its time.
#[test]
fn a_bucket_written_after_it_expired_is_created_anew() {
    for a in floodgate::Algorithm::ALL {
        for expiry in [Duration::ZERO, Duration::from_secs(60)] {
            let clock = start();
            let store = MemoryStore::builder().clock(clock.clone()).expiry(expiry).cleanup_interval(None).build();
            let p = Policy::new(a, 2, Duration::from_secs(10)).unwrap_or_else(|e| panic!("{e}"));
            let t0 = clock_now(&clock);
            store.hit_sync(&b"k"[..], &p, 1);
            clock.advance(Duration::from_secs(1));
            store.hit_sync(&b"k"[..], &p, 1);
            let info = store.inspect_at(&b"k"[..], &p, clock_now(&clock)).unwrap_or_else(|| panic!("{a}: no state"));
            assert_eq!((info.created, info.updated), (t0, clock_now(&clock)), "{a}: a live bucket");
            // Long enough for every algorithm to empty, and past `expiry` when it is 60 s.
            clock.advance(Duration::from_secs(61));
            store.hit_sync(&b"k"[..], &p, 0);
            store.hit_sync(&b"k"[..], &p, 1);
            let info = store.inspect_at(&b"k"[..], &p, clock_now(&clock)).unwrap_or_else(|| panic!("{a}: no state"));
            assert_eq!(info.created, clock_now(&clock), "{a}, expiry {expiry:?}: an expired bucket kept its created");
            // Emptied but still within `expiry` of its last update: the same bucket.
            if !expiry.is_zero() {
                let created = info.created;
                clock.advance(Duration::from_secs(30));
                store.hit_sync(&b"k"[..], &p, 1);
                let info = store.inspect_at(&b"k"[..], &p, clock_now(&clock)).unwrap_or_else(|| panic!("{a}: none"));
                assert_eq!(info.created, created, "{a}: a bucket kept for expiry was created anew");
            }
        }
    }
}
