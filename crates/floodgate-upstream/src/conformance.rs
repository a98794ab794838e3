//! The conformance suite every [`BucketStore`] passes: [`run`] with a [`Harness`] that makes fresh stores and
//! moves their time (a manual clock for the in-memory store, real sleeping for Redis, whose clock is its own).
//!
//! Durations in the suite are tens of milliseconds, and time-dependent assertions allow a store that keeps real
//! time tens of milliseconds of slack (a loaded machine), so a real-time harness runs it in about a second.
//!
//! ```
//! use floodgate::{ManualClock, Timestamp};
//! use floodgate_upstream::conformance::{Harness, run};
//! use floodgate_upstream::store::{MemoryStore, StoreConfig};
//! use std::sync::Arc;
//! use std::time::Duration;
//!
//! struct Memory(ManualClock);
//!
//! #[async_trait::async_trait]
//! impl Harness for Memory {
//!     type Store = MemoryStore;
//!     async fn store(&self, config: StoreConfig) -> MemoryStore {
//!         MemoryStore::with_clock(config, Arc::new(self.0.clone()))
//!     }
//!     async fn advance(&self, by: Duration) {
//!         self.0.advance(by);
//!     }
//! }
//!
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! run(&Memory(ManualClock::new(Timestamp::from_secs(1_000)))).await;
//! # });
//! ```

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use async_trait::async_trait;

use crate::store::{Acquire, BucketStore, GlobalLimit, Lease, Report, StoreConfig};

/// Makes stores for the suite and moves their time.
#[async_trait]
pub trait Harness: Send + Sync {
    /// The store under test.
    type Store: BucketStore;
    /// A fresh, empty store with `config` (keys must not collide with the other stores it made).
    async fn store(&self, config: StoreConfig) -> Self::Store;
    /// Moves the stores' time forward by `by` (or sleeps that long).
    async fn advance(&self, by: Duration);
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

async fn now<S: BucketStore>(s: &S, route: &str) -> Lease {
    match s.timeout_for(route).await.unwrap() {
        Acquire::Now(lease) => lease,
        Acquire::Wait(d) => panic!("{route}: expected Now, got Wait({d:?})"),
    }
}

async fn waits<S: BucketStore>(s: &S, route: &str) -> Duration {
    match s.timeout_for(route).await.unwrap() {
        Acquire::Wait(d) => d,
        Acquire::Now(l) => panic!("{route}: expected Wait, got Now({l:?})"),
    }
}

/// Runs every check, panicking on the first failure.
pub async fn run<H: Harness>(h: &H) {
    pioneer_goes_alone(h).await;
    pioneer_hands_on(h).await;
    remaining_and_reset(h).await;
    in_flight_limit_and_atomicity(h).await;
    late_answer_does_not_refill(h).await;
    retry_after_and_global_429(h).await;
    global_limit(h).await;
    bucket_mapping(h).await;
    seed_operations(h).await;
}

/// The first request of an unknown bucket goes alone; the others wait until its answer is recorded.
pub async fn pioneer_goes_alone<H: Harness>(h: &H) {
    let s = h.store(StoreConfig::default()).await;
    let p = now(&s, "r").await;
    for _ in 0..3 {
        let w = waits(&s, "r").await;
        assert!(w > Duration::ZERO && w <= StoreConfig::default().poll, "{w:?}");
    }
    let info = s.record("r", Some(&p), &Report::remaining(2, ms(1000))).await.unwrap();
    assert_eq!(info.remaining, Some(2));
    assert_eq!(info.in_flight, 0);
    now(&s, "r").await;
    now(&s, "r").await;
    let w = waits(&s, "r").await;
    assert!(w <= ms(1000) && w >= ms(900), "{w:?}");
    // Another route is its own bucket.
    now(&s, "other").await;
}

/// A pioneer that fails (released) or crashes (lease timeout) hands the turn on.
pub async fn pioneer_hands_on<H: Harness>(h: &H) {
    let s = h.store(StoreConfig::default().lease_timeout(ms(200))).await;
    let p = now(&s, "r").await;
    waits(&s, "r").await;
    s.release(&p).await.unwrap();
    let p2 = now(&s, "r").await;
    assert_ne!(p, p2);
    waits(&s, "r").await;
    // Crashed: never reported; after the lease timeout the next one goes.
    h.advance(ms(250)).await;
    let p3 = now(&s, "r").await;
    // The crashed pioneer's lease was found expired (and counted: a store must count them).
    assert_eq!(s.leases_expired().await.unwrap(), 1);
    s.record("r", Some(&p3), &Report::remaining(5, ms(500))).await.unwrap();
    let info = s.lookup("r").await.unwrap().unwrap();
    assert_eq!((info.remaining, info.in_flight), (Some(5), 0));
}

/// Remaining is taken one by one; the window's reset refills it to the limit (less what is in flight).
pub async fn remaining_and_reset<H: Harness>(h: &H) {
    let s = h.store(StoreConfig::default()).await;
    let p = now(&s, "r").await;
    let report = Report { limit: Some(3), ..Report::remaining(2, ms(100)) };
    s.record("r", Some(&p), &report).await.unwrap();
    let a = now(&s, "r").await;
    let _b = now(&s, "r").await;
    let w = waits(&s, "r").await;
    assert!(w <= ms(100) && w >= ms(50), "{w:?}");
    s.record("r", Some(&a), &Report { limit: Some(3), ..Report::remaining(1, ms(95)) }).await.unwrap();
    // Same window: the least remaining wins (0 here, as two were taken).
    waits(&s, "r").await;
    h.advance(ms(110)).await;
    // New window: the limit (3) less the one still in flight (b).
    now(&s, "r").await;
    now(&s, "r").await;
    waits(&s, "r").await;
    // Latency pads the reset.
    let s = h.store(StoreConfig::default()).await;
    let p = now(&s, "r").await;
    let report = Report { latency: ms(100), ..Report::remaining(0, ms(200)) };
    s.record("r", Some(&p), &report).await.unwrap();
    let w = waits(&s, "r").await;
    assert!(w > ms(200) && w <= ms(300), "{w:?}");
}

/// Many callers at once: exactly `remaining` are granted; a new window subtracts the grants in flight.
pub async fn in_flight_limit_and_atomicity<H: Harness>(h: &H) {
    let s = h.store(StoreConfig::default()).await;
    let p = now(&s, "r").await;
    s.record("r", Some(&p), &Report::remaining(10, ms(1000))).await.unwrap();
    let results = futures_join(&s, "r", 50).await;
    let granted: Vec<Lease> = results.into_iter().flatten().collect();
    assert_eq!(granted.len(), 10);
    let info = s.lookup("r").await.unwrap().unwrap();
    assert_eq!((info.remaining, info.in_flight), (Some(0), 10));
    // A response from a later window (its reset far from ours): 4 remain there, 9 others still in flight.
    s.record("r", Some(&granted[0]), &Report::remaining(4, ms(5000))).await.unwrap();
    let info = s.lookup("r").await.unwrap().unwrap();
    assert_eq!((info.remaining, info.in_flight), (Some(0), 9));
}

/// A late answer (to a request granted before the current window was recorded, here one from the window before)
/// must not refill the current window's remaining: that window already counted the request in flight.
pub async fn late_answer_does_not_refill<H: Harness>(h: &H) {
    let s = h.store(StoreConfig::default()).await;
    let limited = |remaining, reset| Report { limit: Some(5), ..Report::remaining(remaining, ms(reset)) };
    let p = now(&s, "r").await;
    s.record("r", Some(&p), &limited(4, 100)).await.unwrap();
    // Granted in the first window; its answer comes late.
    let old = now(&s, "r").await;
    h.advance(ms(120)).await;
    // The next window: its first answer says 3 remain, less `old` still in flight: 2.
    let b = now(&s, "r").await;
    let info = s.record("r", Some(&b), &limited(3, 1000)).await.unwrap();
    assert_eq!((info.remaining, info.in_flight), (Some(2), 1));
    let _c = now(&s, "r").await;
    let _d = now(&s, "r").await;
    waits(&s, "r").await;
    // The late answer, from the first window (3 remained there, its reset was near): nothing is refilled.
    let info = s.record("r", Some(&old), &limited(3, 10)).await.unwrap();
    assert_eq!((info.remaining, info.in_flight), (Some(0), 2));
    let w = waits(&s, "r").await;
    assert!(w >= ms(800), "{w:?}");
}

async fn futures_join<S: BucketStore>(s: &S, route: &str, n: usize) -> Vec<Option<Lease>> {
    let mut out = Vec::with_capacity(n);
    let calls: Vec<_> = (0..n).map(|_| s.timeout_for(route)).collect();
    for call in calls {
        out.push(match call.await.unwrap() {
            Acquire::Now(l) => Some(l),
            Acquire::Wait(_) => None,
        });
    }
    out
}

/// A Retry-After blocks its bucket; a global one blocks every route but the exempt ones.
pub async fn retry_after_and_global_429<H: Harness>(h: &H) {
    let s = h.store(StoreConfig::default().exempt("free")).await;
    let p = now(&s, "r").await;
    let report = Report { retry_after: Some(ms(300)), ..Report::remaining(5, ms(1000)) };
    s.record("r", Some(&p), &report).await.unwrap();
    let w = waits(&s, "r").await;
    assert!(w <= ms(300) && w >= ms(200), "{w:?}");
    now(&s, "q").await;
    h.advance(ms(310)).await;
    now(&s, "r").await;

    let p = now(&s, "x").await;
    let report = Report { retry_after: Some(ms(300)), global: true, ..Report::default() };
    s.record("x", Some(&p), &report).await.unwrap();
    waits(&s, "r").await;
    waits(&s, "brand-new").await;
    now(&s, "free#1").await;
    let info = s.lookup("r").await.unwrap().unwrap();
    assert!(info.retry_after.is_some_and(|d| d <= ms(300)), "{info:?}");
    h.advance(ms(310)).await;
    now(&s, "r").await;
}

/// The proactive global limit holds across routes; exempt routes pass it.
pub async fn global_limit<H: Harness>(h: &H) {
    let config = StoreConfig::default().global(GlobalLimit { limit: 3, per: ms(100) }).exempt("free");
    let s = h.store(config).await;
    for r in ["a", "b", "c"] {
        now(&s, r).await;
    }
    let w = waits(&s, "d").await;
    assert!(w <= ms(100) && w >= ms(50), "{w:?}");
    now(&s, "free").await;
    // The wait took nothing: after the span, three more.
    h.advance(ms(160)).await;
    for r in ["d", "e", "f"] {
        now(&s, r).await;
    }
    waits(&s, "g").await;
}

/// Routes that the upstream says share a bucket share one budget, apart by major parameter; mappings expire.
pub async fn bucket_mapping<H: Harness>(h: &H) {
    let s = h.store(StoreConfig::default().mapping_ttl(ms(400))).await;
    let shared = |remaining| Report { bucket: Some("abc".into()), ..Report::remaining(remaining, ms(10_000)) };
    let p = now(&s, "GET /a#1").await;
    let info = s.record("GET /a#1", Some(&p), &shared(2)).await.unwrap();
    assert_eq!(info.key, "bucket:abc#1");
    let p = now(&s, "GET /b#1").await;
    s.record("GET /b#1", Some(&p), &shared(2)).await.unwrap();
    // One budget of 2 for both routes.
    now(&s, "GET /a#1").await;
    now(&s, "GET /b#1").await;
    waits(&s, "GET /a#1").await;
    waits(&s, "GET /b#1").await;
    // Another major parameter is another bucket (unknown yet: a pioneer).
    now(&s, "GET /a#2").await;
    assert_eq!(s.lookup("GET /b#1").await.unwrap().unwrap().key, "bucket:abc#1");
    // The mapping expires: the route is on its own key again.
    h.advance(ms(450)).await;
    assert_eq!(s.lookup("GET /b#1").await.unwrap().unwrap().key, "GET /b#1");
}

/// `lookup`, `update`, `update_full`, `cleanup` as the seed has them.
pub async fn seed_operations<H: Harness>(h: &H) {
    let s = h.store(StoreConfig::default()).await;
    assert_eq!(s.lookup("r").await.unwrap(), None);
    s.update("r", 2).await.unwrap();
    let info = s.lookup("r").await.unwrap().unwrap();
    assert_eq!(info.remaining, Some(2));
    now(&s, "r").await;
    now(&s, "r").await;
    waits(&s, "r").await;
    s.update_full("r", 1, ms(300), ms(100)).await.unwrap();
    let info = s.lookup("r").await.unwrap().unwrap();
    assert_eq!(info.remaining, Some(1));
    assert!(info.reset_after.is_some_and(|d| d > ms(300) && d <= ms(400)), "{info:?}");
    assert_eq!(info.latency, ms(100));
    now(&s, "r").await;
    waits(&s, "r").await;
    // Leases in flight keep a bucket; stale ones go.
    let s2 = h.store(StoreConfig::default()).await;
    s2.update("idle", 1).await.unwrap();
    let _held = now(&s2, "busy").await;
    h.advance(ms(120)).await;
    assert_eq!(s2.cleanup(ms(100)).await.unwrap(), 1);
    assert_eq!(s2.lookup("idle").await.unwrap(), None);
    assert!(s2.lookup("busy").await.unwrap().is_some());
}
