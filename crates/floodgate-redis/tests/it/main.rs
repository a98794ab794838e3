//! Integration tests against real `redis-server` processes started by the harness in `support`.

mod cluster;
mod faults;
mod memory;
pub mod single;
mod support;

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use floodgate::ManualClock;
use floodgate_redis::RedisStore;

use support::{RedisCluster, RedisServer};

/// The single server shared by the tests that do not kill it.
pub fn shared_single() -> &'static RedisServer {
    static S: OnceLock<RedisServer> = OnceLock::new();
    S.get_or_init(RedisServer::start)
}

/// The cluster shared by the tests that do not kill a node.
pub fn shared_cluster() -> &'static RedisCluster {
    static C: OnceLock<RedisCluster> = OnceLock::new();
    C.get_or_init(RedisCluster::start)
}

/// A prefix no other store of this run uses.
pub fn fresh_prefix() -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    format!("fgt{}-{}", std::process::id(), N.fetch_add(1, Ordering::SeqCst))
}

/// A store on the shared single server, deciding by `clock`, with a fresh prefix.
pub async fn make_single_store(clock: ManualClock) -> RedisStore {
    let url = tokio::task::block_in_place(|| shared_single().url());
    RedisStore::builder()
        .url(&url)
        .prefix(fresh_prefix())
        .clock(clock)
        .timeout(Duration::from_secs(5))
        .build()
        .await
        .expect("connect to the test redis")
}

/// A store on the shared cluster, deciding by `clock`, with a fresh prefix.
pub async fn make_cluster_store(clock: ManualClock) -> RedisStore {
    let urls = tokio::task::block_in_place(|| shared_cluster().urls());
    RedisStore::builder()
        .cluster(urls)
        .prefix(fresh_prefix())
        .clock(clock)
        .timeout(Duration::from_secs(5))
        .connect_timeout(Duration::from_secs(5))
        .build()
        .await
        .expect("connect to the test cluster")
}

/// (c) 50 tasks racing on one key, 10 hits each, admit exactly the limit (137) under every algorithm.
pub async fn assert_racing_hits_admit_exactly_the_limit(store: std::sync::Arc<RedisStore>) {
    use floodgate::{Algorithm, Policy, Store};
    for a in Algorithm::ALL {
        let p = Policy::new(a, 137, Duration::from_secs(3600)).expect("policy");
        let tasks: Vec<_> = (0..50)
            .map(|_| {
                let (store, p) = (store.clone(), p.clone());
                tokio::spawn(async move {
                    let mut admitted = 0u64;
                    for _ in 0..10 {
                        admitted += u64::from(store.hit(b"hot", &p, 1).await.expect("hit").allowed);
                    }
                    admitted
                })
            })
            .collect();
        let mut total = 0;
        for t in tasks {
            total += t.await.expect("task");
        }
        assert_eq!(total, 137, "{a}: 50 tasks × 10 hits admitted {total}");
    }
}
