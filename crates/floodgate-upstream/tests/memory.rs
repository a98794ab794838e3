//! The in-memory store passes the conformance suite, on a manual clock.

use std::sync::Arc;
use std::time::Duration;

use floodgate::{ManualClock, Timestamp};
use floodgate_upstream::conformance::{self, Harness};
use floodgate_upstream::store::{MemoryStore, StoreConfig};

struct Memory(ManualClock);

#[async_trait::async_trait]
impl Harness for Memory {
    type Store = MemoryStore;
    async fn store(&self, config: StoreConfig) -> MemoryStore {
        MemoryStore::with_clock(config, Arc::new(self.0.clone()))
    }
    async fn advance(&self, by: Duration) {
        self.0.advance(by);
    }
}

#[tokio::test]
async fn memory_store_conforms() {
    conformance::run(&Memory(ManualClock::new(Timestamp::from_secs(1_000_000)))).await;
}
