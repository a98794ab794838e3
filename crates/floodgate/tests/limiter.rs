//! The `Limiter` facade: named policies, errors, and `until_ready` (driven by tokio's paused clock, no sleeping).

use std::sync::Arc;
use std::time::Duration;

use floodgate::{Clock, Limiter, LimiterError, MemoryStore, Policy, Timestamp};

/// A store clock that reads tokio's (pausable) clock, so `until_ready`'s sleeps move the store's time.
struct TokioClock {
    start: tokio::time::Instant,
}

impl Clock for TokioClock {
    fn now(&self) -> Timestamp {
        Timestamp::from_secs(1_800_000_000) + self.start.elapsed()
    }
}

fn limiter() -> Limiter<MemoryStore> {
    let store = MemoryStore::builder().clock(TokioClock { start: tokio::time::Instant::now() }).build();
    Limiter::new(store)
}

#[tokio::test(start_paused = true)]
async fn until_ready_waits_exactly_as_long_as_needed() {
    let limiter = limiter();
    let policy = Policy::gcra(2, Duration::from_secs(1)).unwrap_or_else(|e| panic!("{e}"));
    let start = tokio::time::Instant::now();
    for _ in 0..2 {
        assert!(limiter.until_ready("job", &policy, 1, Duration::ZERO).await.is_ok_and(|d| d.allowed));
    }
    assert_eq!(start.elapsed(), Duration::ZERO, "the burst passed without waiting");
    let d = limiter.until_ready("job", &policy, 1, Duration::ZERO).await.unwrap_or_else(|e| panic!("{e}"));
    assert!(d.allowed);
    assert_eq!(start.elapsed(), Duration::from_millis(500), "one unit refills every 500 ms");
}

#[tokio::test(start_paused = true)]
async fn until_ready_with_jitter_waits_at_most_the_jitter_longer() {
    let limiter = limiter();
    let policy = Policy::fixed_window(1, Duration::from_secs(1)).unwrap_or_else(|e| panic!("{e}"));
    limiter.hit("job", &policy).await.unwrap_or_else(|e| panic!("{e}"));
    let start = tokio::time::Instant::now();
    limiter.until_ready("job", &policy, 1, Duration::from_millis(100)).await.unwrap_or_else(|e| panic!("{e}"));
    let waited = start.elapsed();
    // Jitter is below 100 ms; tokio's timer rounds a sleep up to the next millisecond, so 1.1 s is the most.
    assert!(waited >= Duration::from_secs(1) && waited <= Duration::from_millis(1_100), "waited {waited:?}");
}

#[tokio::test]
async fn until_ready_refuses_a_cost_that_can_never_pass() {
    let limiter = Limiter::in_memory();
    let policy = Policy::token_bucket(5, Duration::from_secs(1)).unwrap_or_else(|e| panic!("{e}"));
    let err = limiter.until_ready("job", &policy, 6, Duration::ZERO).await;
    assert!(matches!(err, Err(LimiterError::InsufficientCapacity { cost: 6, capacity: 5 })), "{err:?}");
}

#[tokio::test]
async fn named_policies() {
    let policy = Policy::sliding_window(3, Duration::from_secs(60)).unwrap_or_else(|e| panic!("{e}"));
    let limiter = Limiter::in_memory().with_policy("login", policy).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(limiter.policy("login").and_then(Policy::name), Some("login"));
    assert_eq!(limiter.hit_named("ip:1", "login", 2).await.map(|d| d.remaining).ok(), Some(1));
    assert!(matches!(limiter.hit_named("ip:1", "nope", 1).await, Err(LimiterError::UnknownPolicy(n)) if n == "nope"));
    // check, inspect and reset see the same state.
    let login = limiter.policy("login").cloned().unwrap_or_else(|| panic!("registered"));
    assert_eq!(limiter.check("ip:1", &login).await.map(|d| d.remaining).ok(), Some(1));
    assert_eq!(limiter.inspect("ip:1", &login).await.ok().flatten().map(|i| i.used), Some(2));
    assert_eq!(limiter.reset("ip:1").await.ok(), Some(1));
    assert_eq!(limiter.check("ip:1", &login).await.map(|d| d.remaining).ok(), Some(3));
}

#[tokio::test]
async fn a_limiter_over_a_boxed_store() {
    let store: floodgate::BoxStore = Arc::new(MemoryStore::new());
    let limiter = Limiter::new(store);
    let policy = Policy::leaky_bucket(1, Duration::from_secs(60)).unwrap_or_else(|e| panic!("{e}"));
    assert!(limiter.hit("k", &policy).await.is_ok_and(|d| d.allowed));
    assert!(limiter.hit("k", &policy).await.is_ok_and(|d| !d.allowed));
}
