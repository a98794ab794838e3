//! The facade as the server uses it: acquire with a bound, update from name/value pairs, leases that expire.

use std::sync::Arc;
use std::time::Duration;

use floodgate::{ManualClock, Timestamp};
use floodgate_upstream::headers::header_map;
use floodgate_upstream::store::{Lease, StoreConfig};
use floodgate_upstream::{MemoryStore, Provider, Upstream};

fn upstream(clock: &ManualClock) -> Upstream {
    let config = StoreConfig::default().lease_timeout(Duration::from_secs(2));
    Upstream::new(MemoryStore::with_clock(config, Arc::new(clock.clone())))
}

/// A caller that acquired and never reported back holds its place only for the lease timeout.
#[tokio::test]
async fn an_unreported_lease_expires() {
    let clock = ManualClock::new(Timestamp::from_secs(1_000));
    let up = upstream(&clock);
    let first = up.acquire("GET /x", Duration::ZERO).await.expect("acquire");
    assert!(first.go);
    let second = up.acquire("GET /x", Duration::ZERO).await.expect("acquire");
    assert!(!second.go && second.lease.is_none());
    assert!(second.wait > Duration::ZERO && second.wait <= Duration::from_millis(50), "{second:?}");
    clock.advance(Duration::from_millis(2_001));
    assert!(up.acquire("GET /x", Duration::ZERO).await.expect("acquire").go);
    assert_eq!(up.stats().gave_up, 1);
}

/// `update` from a JSON body's pairs; the lease handed out as a token comes back.
#[tokio::test]
async fn update_from_pairs_and_a_token() {
    let clock = ManualClock::new(Timestamp::from_secs(1_000));
    let up = upstream(&clock);
    let first = up.acquire("bucket-1", Duration::ZERO).await.expect("acquire");
    let token = first.lease.as_ref().map(Lease::token).expect("lease");
    let lease = Lease::from_token(&token);
    let headers = header_map([("Retry-After", "2"), ("X-RateLimit-Remaining", "0")]);
    let view = up
        .update("bucket-1", lease.as_ref(), Provider::Discord, 429, &headers, Duration::from_millis(10))
        .await
        .expect("update");
    assert_eq!(view.remaining, Some(0));
    assert_eq!(view.retry_after, Some(Duration::from_millis(2_010)));
    let busy = up.acquire("bucket-1", Duration::from_millis(100)).await.expect("acquire");
    assert!(!busy.go);
    assert_eq!(busy.wait, Duration::from_millis(2_010));
    assert_eq!(up.stats().rate_limited, 1);
    assert_eq!(up.store().lookup("bucket-1").await.expect("lookup").map(|i| i.in_flight), Some(0));
}

/// A permit dropped unfinished (a cancelled request) hands the pioneer's turn on at once.
#[tokio::test]
async fn a_dropped_permit_releases() {
    let clock = ManualClock::new(Timestamp::from_secs(1_000));
    let up = upstream(&clock);
    let permit = up.permit("GET /y", Duration::ZERO).await.expect("permit");
    assert!(!up.acquire("GET /y", Duration::ZERO).await.expect("acquire").go);
    drop(permit);
    // The release runs on the runtime; the next acquire waits for it (bounded by max_wait).
    let next = up.acquire("GET /y", Duration::from_millis(500)).await.expect("acquire");
    assert!(next.go, "{next:?}");
}

/// The periodic cleanup drops idle buckets (paused tokio time drives the interval, the manual clock the age).
#[tokio::test(start_paused = true)]
async fn periodic_cleanup_drops_idle_buckets() {
    let clock = ManualClock::new(Timestamp::from_secs(1_000));
    let up = upstream(&clock);
    up.store().update("idle", 3).await.expect("update");
    let task = up.spawn_cleanup(Duration::from_secs(1), Duration::from_secs(60));
    clock.advance(Duration::from_secs(61));
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert_eq!(up.store().lookup("idle").await.expect("lookup"), None);
    task.abort();
}
