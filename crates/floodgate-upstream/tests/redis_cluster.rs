//! The Redis store on a Redis Cluster (3 masters, 3 replicas, started on loopback ports): the conformance suite,
//! and every key of one store in one hash slot (its `{prefix}` hash tag), so each script runs on one node.

// The cluster harness of floodgate-redis's tests, shared rather than copied.
#[path = "../../floodgate-redis/tests/it/support.rs"]
mod support;

use std::collections::HashSet;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use floodgate_upstream::conformance::{self, Harness};
use floodgate_upstream::store::{BucketStore, RedisBucketStore, Report, StoreConfig};
use support::RedisCluster;

struct Cluster {
    urls: Vec<String>,
    n: AtomicU32,
}

#[async_trait::async_trait]
impl Harness for Cluster {
    type Store = RedisBucketStore;
    async fn store(&self, config: StoreConfig) -> RedisBucketStore {
        let prefix = format!("t{}", self.n.fetch_add(1, Ordering::SeqCst));
        RedisBucketStore::connect_cluster(&self.urls, &prefix, config).await.expect("connect")
    }
    async fn advance(&self, by: Duration) {
        tokio::time::sleep(by).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_cluster_store_conforms_and_keeps_one_slot() {
    support::require_redis();
    let cluster = tokio::task::spawn_blocking(RedisCluster::start).await.expect("start cluster");
    let harness = Cluster { urls: cluster.urls(), n: AtomicU32::new(0) };
    conformance::run(&harness).await;

    // Every key of one store is in one slot, on one master; cleanup (a SCAN) finds them on that node.
    let store = RedisBucketStore::connect_cluster(cluster.urls(), "fleet", StoreConfig::default()).await.expect("c");
    for route in ["GET /a", "GET /b#1", "POST /c#2"] {
        let floodgate_upstream::Acquire::Now(lease) = store.timeout_for(route).await.expect("acquire") else {
            panic!("{route}: a pioneer goes at once")
        };
        store.record(route, Some(&lease), &Report::remaining(1, Duration::from_secs(60))).await.expect("record");
    }
    let mut holders = HashSet::new();
    let mut slots = HashSet::new();
    let mut keys = 0;
    for (i, node) in cluster.nodes.iter().enumerate() {
        // Replicas hold copies: only masters count.
        if !node.cli(&["INFO", "replication"]).contains("role:master") {
            continue;
        }
        for key in node.cli(&["--scan", "--pattern", "{fleet}*"]).lines().filter(|k| !k.is_empty()) {
            keys += 1;
            holders.insert(i);
            slots.insert(node.cli(&["CLUSTER", "KEYSLOT", key]).trim().to_owned());
        }
    }
    assert!(keys >= 6, "{keys} keys");
    assert_eq!(slots.len(), 1, "{slots:?}");
    assert_eq!(holders.len(), 1, "{holders:?}");
    assert_eq!(store.cleanup(Duration::ZERO).await.expect("cleanup"), 3);
}
