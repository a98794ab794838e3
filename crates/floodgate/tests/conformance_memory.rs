//! The in-memory store passes the public conformance suite, with and without a key bound and with a sweeper.

use floodgate::{ManualClock, MemoryStore};

async fn plain(clock: ManualClock) -> MemoryStore {
    MemoryStore::builder().clock(clock).cleanup_interval(None).build()
}

mod plain {
    floodgate::conformance_tests!(super::plain);
}

/// One shard and a generous bound: every key shares one lock, and the bound never evicts in these cases.
async fn one_shard_bounded(clock: ManualClock) -> MemoryStore {
    MemoryStore::builder().clock(clock).shards(1).max_keys(Some(10_000)).build()
}

mod one_shard_bounded {
    floodgate::conformance_tests!(super::one_shard_bounded);
}

#[tokio::test]
async fn run_all_passes_on_the_memory_store() {
    floodgate::conformance::run_all(plain).await;
}
