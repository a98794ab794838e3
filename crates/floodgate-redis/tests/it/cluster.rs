//! The conformance suite and key checks on the 6-node cluster (3 masters, 3 replicas).

use std::time::Duration;

use floodgate::{Algorithm, ManualClock, Policy, Store, Timestamp};

use crate::{make_cluster_store, shared_cluster};

mod conformance {
    use crate::make_cluster_store;
    floodgate::conformance_tests!(make_cluster_store);
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
        masters.insert(tokio::task::block_in_place(|| cluster.master_of(&store.index_key(id.as_bytes()))));
        for a in Algorithm::ALL {
            let p = Policy::new(a, 3, Duration::from_secs(10)).expect("policy");
            for _ in 0..3 {
                assert!(store.hit(id.as_bytes(), &p, 1).await.expect("hit").allowed);
            }
            assert!(!store.hit(id.as_bytes(), &p, 1).await.expect("hit").allowed, "{a}");
        }
        assert_eq!(store.delete_buckets(id.as_bytes()).await.expect("delete"), 5);
    }
    assert_eq!(masters.len(), 3, "the ids should spread over the 3 masters");
}
