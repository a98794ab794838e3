//! The Redis store: the conformance suite (real time: Redis's clock is the only clock), and two stores sharing
//! one Redis that take no 429 from a shared upstream limit.

mod common;

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use common::redis_server::RedisServer;
use common::{Upstream429, load, serve};
use floodgate_upstream::Upstream;
use floodgate_upstream::conformance::{self, Harness};
use floodgate_upstream::store::{BucketStore, RedisBucketStore, StoreConfig};

struct Redis {
    url: String,
    n: AtomicU32,
}

#[async_trait::async_trait]
impl Harness for Redis {
    type Store = RedisBucketStore;
    async fn store(&self, config: StoreConfig) -> RedisBucketStore {
        let prefix = format!("t{}", self.n.fetch_add(1, Ordering::SeqCst));
        RedisBucketStore::connect(&self.url, &prefix, config).await.expect("connect")
    }
    async fn advance(&self, by: Duration) {
        tokio::time::sleep(by).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_store_conforms() {
    let server = RedisServer::start();
    conformance::run(&Redis { url: server.url(), n: AtomicU32::new(0) }).await;
}

/// A `SCRIPT FLUSH` (a restart, a failover) is met by loading the script again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scripts_reload_after_noscript() {
    let server = RedisServer::start();
    let store = RedisBucketStore::connect(&server.url(), "x", StoreConfig::default()).await.expect("connect");
    store.update("r", 3).await.expect("update");
    let client = redis::Client::open(server.url()).expect("client");
    let mut conn = client.get_multiplexed_async_connection().await.expect("conn");
    let _: () = redis::cmd("SCRIPT").arg("FLUSH").query_async(&mut conn).await.expect("flush");
    assert!(matches!(store.timeout_for("r").await, Ok(floodgate_upstream::Acquire::Now(_))));
    assert_eq!(store.lookup("r").await.expect("lookup").and_then(|i| i.remaining), Some(2));
}

/// Two stores (two processes' worth: own connections, own Upstream handles) share one budget through Redis:
/// 16 callers each, zero 429s from the upstream's limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_stores_share_one_budget() {
    let server = RedisServer::start();
    let window = Duration::from_millis(200);
    let upstream_server = Upstream429::new(window, 10, 10_000);
    let addr = serve(upstream_server.clone()).await;
    let a = Upstream::new(RedisBucketStore::connect(&server.url(), "fleet", StoreConfig::default()).await.expect("a"));
    let b = Upstream::new(RedisBucketStore::connect(&server.url(), "fleet", StoreConfig::default()).await.expect("b"));
    let run = Duration::from_millis(1_200);
    let (ra, rb) = tokio::join!(load(&a, addr, &["/b/one"], 16, run), load(&b, addr, &["/b/one"], 16, run));
    let rejected = upstream_server.rejected.load(Ordering::SeqCst);
    let per_window = upstream_server.per_window("one");
    let (first, last) = (per_window.keys().min().copied(), per_window.keys().max().copied());
    let (Some(first), Some(last)) = (first, last) else { panic!("no request reached the upstream") };
    let used: u64 = (first + 1..last).map(|i| per_window.get(&i).copied().unwrap_or(0)).sum();
    let allowed = 10 * (last - first).saturating_sub(1);
    println!(
        "redis, two stores x 16 callers: {} + {} ok, {used} of {allowed} allowed in the full windows ({:.1} %), {rejected} 429s",
        ra.0,
        rb.0,
        used as f64 * 100.0 / allowed.max(1) as f64
    );
    assert_eq!(rejected, 0);
    assert!(ra.0 > 0 && rb.0 > 0, "both stores got requests through");
    assert!(allowed >= 30 && used * 10 >= allowed * 9, "{per_window:?}");
}
