//! The cluster store on one node: the core's conformance suite (for the algorithms it supports), agreement with
//! the core's `MemoryStore`, and convergence of merges.

use std::time::Duration;

use floodgate::algorithm::Op;
use floodgate::{BucketInfo, Decision, ManualClock, MemoryStore, Policy, Store, StoreResult, Timestamp};
use floodgate_cluster::{ClusterStore, KeyCounts, check_policy};
use proptest::prelude::*;

/// The conformance suite runs every case under every algorithm. The cluster store refuses the meters and the
/// sliding log by design, so this store sends fixed- and sliding-window policies to the cluster store and the
/// others to a memory store: every case then checks the cluster store on the algorithms it supports.
struct Split {
    cluster: ClusterStore,
    memory: MemoryStore,
}

impl Store for Split {
    async fn hit(&self, id: &[u8], policy: &Policy, cost: u64) -> StoreResult<Decision> {
        if check_policy(policy).is_ok() {
            self.cluster.hit(id, policy, cost).await
        } else {
            self.memory.hit(id, policy, cost).await
        }
    }
    async fn inc(&self, id: &[u8], policy: &Policy, cost: u64) -> StoreResult<Decision> {
        if check_policy(policy).is_ok() {
            self.cluster.inc(id, policy, cost).await
        } else {
            self.memory.inc(id, policy, cost).await
        }
    }
    async fn set(&self, id: &[u8], policy: &Policy, used: u64) -> StoreResult<Decision> {
        if check_policy(policy).is_ok() {
            self.cluster.set(id, policy, used).await
        } else {
            self.memory.set(id, policy, used).await
        }
    }
    async fn inspect(&self, id: &[u8], policy: &Policy) -> StoreResult<Option<BucketInfo>> {
        if check_policy(policy).is_ok() {
            self.cluster.inspect(id, policy).await
        } else {
            self.memory.inspect(id, policy).await
        }
    }
    async fn delete_buckets(&self, id: &[u8]) -> StoreResult<u64> {
        Ok(self.cluster.delete_buckets(id).await? + self.memory.delete_buckets(id).await?)
    }
}

async fn make(clock: ManualClock) -> Split {
    Split {
        cluster: ClusterStore::builder().node_id("solo").clock(clock.clone()).build(),
        memory: MemoryStore::builder().clock(clock).cleanup_interval(None).build(),
    }
}

floodgate::conformance_tests!(make);

#[tokio::test]
async fn other_algorithms_are_refused_with_a_clear_error() {
    let store = ClusterStore::builder().build();
    let p = Policy::gcra(5, Duration::from_secs(1)).unwrap_or_else(|e| panic!("{e}"));
    let err = store.hit(b"k", &p, 1).await.err().map(|e| e.to_string()).unwrap_or_default();
    assert!(err.contains("does not support the gcra algorithm"), "{err}");
}

#[tokio::test]
async fn set_cannot_lower_a_count() {
    let store = ClusterStore::builder().build();
    let p = Policy::fixed_window(5, Duration::from_secs(10)).unwrap_or_else(|e| panic!("{e}"));
    store.hit(b"k", &p, 3).await.unwrap_or_else(|e| panic!("{e}"));
    assert!(store.set(b"k", &p, 1).await.is_err());
    assert_eq!(store.set(b"k", &p, 4).await.ok().map(|d| d.remaining), Some(1));
}

fn policy(sliding: bool, limit: u64, window_s: u64) -> Policy {
    let w = Duration::from_secs(window_s);
    let p = if sliding { Policy::sliding_window(limit, w) } else { Policy::fixed_window(limit, w) };
    p.unwrap_or_else(|e| panic!("{e}"))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// A single-node cluster store decides exactly as the core's memory store: hits, forced counts and checks,
    /// on a clock that only goes forward. (When the clock steps back past a window the memory store has seen
    /// expire, the memory store has emptied that state in place and admits again; the cluster store stands still
    /// in the latest window it counted in and denies, the stricter answer. The conformance suite's
    /// `clock_going_backwards_never_admits_more` covers both.)
    #[test]
    fn one_node_agrees_with_the_memory_store(
        sliding in any::<bool>(),
        limit in 1u64..8,
        window_s in 1u64..4,
        calls in prop::collection::vec((0u64..4, any::<bool>(), 0i64..2_500_000, 0usize..3), 1..60),
    ) {
        let p = policy(sliding, limit, window_s);
        let cluster = ClusterStore::builder().node_id("solo").build();
        let memory = MemoryStore::builder().cleanup_interval(None).build();
        let mut t = 1_000_000_000_000i64;
        for (cost, force, dt, key) in calls {
            t = (t + dt).max(0);
            let now = t as u64;
            let id = [b'k', key as u8];
            let op = if force { Op::Force } else { Op::Hit };
            let a = cluster.apply_at(&id, &p, op, cost, now).map_err(|e| TestCaseError::fail(e.to_string()))?;
            let b = memory.apply_at(&id[..], &p, op, cost, Timestamp::from_micros(now));
            prop_assert_eq!(a, b, "{:?} cost {} at {}", op, cost, now);
            let ia = cluster.inspect_at(&id, &p, now).map_err(|e| TestCaseError::fail(e.to_string()))?;
            let ib = memory.inspect_at(&id[..], &p, Timestamp::from_micros(now));
            prop_assert_eq!(ia.map(|i| (i.used, i.remaining, i.reset_after)), ib.map(|i| (i.used, i.remaining, i.reset_after)));
        }
    }

    /// Three nodes count on their own; any order of deliveries of their replication messages, with duplicates
    /// and old copies, followed by one full exchange, leaves every node with the same totals: the sum of what
    /// each node counted.
    #[test]
    fn any_delivery_order_converges(
        hits in prop::collection::vec((0usize..3, 0usize..3, 1u64..3), 1..40),
        deliveries in prop::collection::vec((any::<prop::sample::Index>(), 0usize..3), 0..80),
    ) {
        let clock = ManualClock::new(Timestamp::from_secs(1_800_000_000));
        let nodes: Vec<ClusterStore> =
            ["a", "b", "c"].iter().map(|n| ClusterStore::builder().node_id(*n).clock(clock.clone()).build()).collect();
        let p = policy(false, 1_000, 60);
        let mut sent: Vec<KeyCounts> = Vec::new();
        let mut counted = [0u64; 3];
        for (node, key, cost) in hits {
            let id = [b'k', key as u8];
            if nodes[node].hit_sync(&id, &p, cost).map_err(|e| TestCaseError::fail(e.to_string()))?.allowed {
                counted[key] += cost;
            }
            // Every message each node would send, in the order sent.
            sent.extend(nodes[node].take_dirty());
        }
        for (i, to) in deliveries {
            if !sent.is_empty() {
                nodes[to].merge(&sent[i.index(sent.len())], || true);
            }
        }
        // A link comes up between every pair: full snapshots both ways.
        for from in 0..3 {
            for to in 0..3 {
                for e in nodes[from].snapshot() {
                    nodes[to].merge(&e, || true);
                }
            }
        }
        for (key, &want) in counted.iter().enumerate() {
            let id = [b'k', key as u8];
            for n in &nodes {
                let used = n.inspect_at(&id, &p, clock.now_micros()).ok().flatten().map_or(0, |i| i.used);
                prop_assert_eq!(used, want, "node {} key {}", n.node_id(), key);
            }
        }
    }
}

trait NowMicros {
    fn now_micros(&self) -> u64;
}

impl NowMicros for ManualClock {
    fn now_micros(&self) -> u64 {
        floodgate::Clock::now(self).as_micros()
    }
}

#[test]
fn merges_refuse_bad_keys_and_honour_the_budget() {
    let clock = ManualClock::new(Timestamp::from_secs(1_800_000_000));
    let store = ClusterStore::builder().node_id("a").clock(clock).build();
    let key = |start: u64, window_us: u64| floodgate_cluster::EntryKey {
        policy: "fixed_window:5/10000000us".into(),
        window_us,
        start,
        id: b"k".to_vec().into(),
    };
    let entry = |k| KeyCounts { key: k, counts: vec![("b".into(), 3)] };
    let now = 1_800_000_000_000_000u64;
    // Far in the future: refused.
    assert_eq!(store.merge(&entry(key(now + 3_600_000_000, 10_000_000)), || true).refused, 1);
    // Not aligned to its window: refused.
    assert_eq!(store.merge(&entry(key(now + 1, 10_000_000)), || true).refused, 1);
    // Zero window: refused.
    assert_eq!(store.merge(&entry(key(now, 0)), || true).refused, 1);
    // No budget for a new key: refused, and nothing created.
    assert_eq!(store.merge(&entry(key(now, 10_000_000)), || false).refused, 1);
    assert!(store.is_empty());
    let o = store.merge(&entry(key(now, 10_000_000)), || true);
    assert!(o.created && o.applied == 1);
    assert_eq!(store.merge(&entry(key(now, 10_000_000)), || false).unchanged, 1);
}
