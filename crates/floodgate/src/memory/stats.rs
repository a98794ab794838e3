//! What the store counts: the public [`MemoryStats`] and the counters behind it.

use super::*;

/// Counters of what the store has dropped, and how big it is.
///
/// ```
/// use floodgate::{ManualClock, MemoryStore, Policy, Timestamp};
/// use std::time::Duration;
///
/// let clock = ManualClock::new(Timestamp::from_secs(100));
/// let store = MemoryStore::builder().clock(clock.clone()).cleanup_interval(None).build();
/// store.hit_sync(&b"k"[..], &Policy::gcra(1, Duration::from_secs(1))?, 1);
/// clock.advance(Duration::from_secs(1));
/// store.sweep();
/// let stats = store.stats();
/// assert_eq!((stats.keys, stats.swept, stats.evicted_live), (0, 1, 0));
/// # Ok::<(), floodgate::PolicyError>(())
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MemoryStats {
    /// Keys held now (live or not yet swept).
    pub keys: usize,
    /// Buckets dropped by sweeps because they had expired.
    pub swept: u64,
    /// Expired buckets dropped to make room under `max_keys`.
    pub evicted_expired: u64,
    /// Live keys evicted under `max_keys` ([`WhenFull::EvictLive`] only): each may later admit more than its
    /// limit, so watch this.
    pub evicted_live: u64,
    /// Hits (and other writes) of new keys denied because their shard was full of live keys
    /// ([`WhenFull::RefuseNew`]).
    pub refused_full: u64,
    /// Calls of the expiry hook that panicked (the sweep went on; those batches were dropped).
    pub hook_panics: u64,
}

#[derive(Default)]
pub(super) struct Counters {
    pub(super) swept: AtomicU64,
    pub(super) evicted_expired: AtomicU64,
    pub(super) evicted_live: AtomicU64,
    pub(super) refused_full: AtomicU64,
    pub(super) hook_panics: AtomicU64,
}
