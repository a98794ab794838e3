//! The conformance suite and key checks on the 6-node cluster (3 masters, 3 replicas).

use std::time::Duration;

use floodgate::{Algorithm, ManualClock, Policy, Store, Timestamp};

use crate::{make_cluster_store, shared_cluster};

mod conformance {
    use crate::make_cluster_store;
    floodgate::conformance_tests!(make_cluster_store);
}

/// The differential test of `single.rs` (random operations compared with the memory store) on the cluster.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_cluster_decides_exactly_as_memory() {
    let clock = ManualClock::new(Timestamp::from_secs(1_800_000_000) + Duration::from_micros(7_777));
    let store = make_cluster_store(clock.clone()).await;
    crate::single::differential(&store, &clock, 0x2545_f491_4f6c_dd1d, 5_000).await;
}

/// Ids whose keys land on every master: delete_buckets and every algorithm work in each slot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_algorithm_on_every_master() {
    let clock = ManualClock::new(Timestamp::from_secs(1_800_000_000));
    let store = make_cluster_store(clock).await;
    let cluster = tokio::task::block_in_place(shared_cluster);
    let mut masters = std::collections::HashSet::new();
    for i in 0..64u32 {
        let id = format!("user:{i}");
        masters.insert(tokio::task::block_in_place(|| cluster.master_of(&store.shard_key(id.as_bytes()))));
        for a in Algorithm::ALL {
            let p = Policy::new(a, 3, Duration::from_secs(10)).expect("policy");
            for _ in 0..3 {
                assert!(store.hit(id.as_bytes(), &p, 1).await.expect("hit").allowed);
            }
            assert!(!store.hit(id.as_bytes(), &p, 1).await.expect("hit").allowed, "{a}");
        }
        assert_eq!(store.delete_buckets(id.as_bytes()).await.expect("delete"), Algorithm::ALL.len() as u64);
    }
    assert_eq!(masters.len(), 3, "the ids should spread over the 3 masters");
}

async fn redis_time_cluster_store(prefix: &str) -> floodgate_redis::RedisStore {
    let urls = tokio::task::block_in_place(|| shared_cluster().urls());
    floodgate_redis::RedisStore::builder()
        .cluster(urls)
        .prefix(prefix)
        .timeout(Duration::from_secs(5))
        .connect_timeout(Duration::from_secs(5))
        .build()
        .await
        .expect("connect to the test cluster")
}

/// (c) on the cluster, with Redis TIME: 50 racing tasks on one key admit exactly the limit, every algorithm.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_hits_admit_exactly_the_limit_with_redis_time() {
    let store = std::sync::Arc::new(redis_time_cluster_store(&crate::fresh_prefix()).await);
    crate::assert_racing_hits_admit_exactly_the_limit(store).await;
}

/// Every key written on the cluster has a TTL: read back with PTTL on every master.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_key_has_a_ttl_on_every_master() {
    let prefix = crate::fresh_prefix();
    let store = redis_time_cluster_store(&prefix).await;
    for a in Algorithm::ALL {
        let p = Policy::new(a, 5, Duration::from_secs(30)).expect("policy");
        for i in 0..12 {
            let id = format!("ttl:{i}");
            store.hit(id.as_bytes(), &p, 2).await.expect("hit");
            store.inc(id.as_bytes(), &p, 1).await.expect("inc");
        }
    }
    let cluster = tokio::task::block_in_place(shared_cluster);
    let mut total = 0;
    let mut masters_with_keys = 0;
    for node in &cluster.nodes {
        let (role, keys) = tokio::task::block_in_place(|| {
            (node.cli(&["INFO", "replication"]), node.cli(&["--raw", "KEYS", &format!("{prefix}[:{{#]*")]))
        });
        if !role.contains("role:master") {
            continue;
        }
        let keys: Vec<&str> = keys.lines().filter(|l| !l.is_empty()).collect();
        masters_with_keys += usize::from(!keys.is_empty());
        for k in &keys {
            let pttl: i64 = tokio::task::block_in_place(|| node.cli(&["PTTL", k])).trim().parse().expect("PTTL");
            assert!(pttl > 0 && pttl <= 60_002, "key {k} on {}: PTTL {pttl}", node.addr());
        }
        total += keys.len();
    }
    // The 12 ids' shards (holding their 6 buckets each) + 12 sliding logs' run sets.
    let shards: std::collections::HashSet<Vec<u8>> =
        (0..12).map(|i| store.shard_key(format!("ttl:{i}").as_bytes())).collect();
    let nodes: Vec<String> =
        cluster.nodes.iter().map(|n| tokio::task::block_in_place(|| n.cli(&["CLUSTER", "NODES"]))).collect();
    assert_eq!(total, shards.len() + 12, "nodes:\n{}", nodes.join("\n"));
    assert!(masters_with_keys >= 2, "12 ids should spread over the masters");
}

/// A cluster given as a ready redis-rs `ClusterClientBuilder` (any client option passes through).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_client_builder_is_accepted() {
    let urls = tokio::task::block_in_place(|| shared_cluster().urls());
    let builder = redis::cluster::ClusterClientBuilder::new(urls).retries(2);
    let store = floodgate_redis::RedisStore::builder()
        .cluster_client(builder)
        .prefix(crate::fresh_prefix())
        .timeout(Duration::from_secs(5))
        .build()
        .await
        .expect("connect");
    let p = Policy::leaky_bucket(2, Duration::from_secs(60)).expect("policy");
    assert!(store.hit(b"k", &p, 2).await.expect("hit").allowed);
    assert!(!store.hit(b"k", &p, 1).await.expect("hit").allowed);
}

/// A lazy cluster store connects on its first call.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lazy_cluster_store_connects_on_first_call() {
    let urls = tokio::task::block_in_place(|| shared_cluster().urls());
    let store = floodgate_redis::RedisStore::builder()
        .cluster(urls)
        .lazy(true)
        .prefix(crate::fresh_prefix())
        .timeout(Duration::from_secs(5))
        .build()
        .await
        .expect("build");
    let p = Policy::sliding_window(2, Duration::from_secs(60)).expect("policy");
    assert!(store.hit(b"k", &p, 2).await.expect("hit").allowed);
    assert!(!store.hit(b"k", &p, 1).await.expect("hit").allowed);
    assert_eq!(store.delete_buckets(b"k").await.expect("delete"), 1);
}
