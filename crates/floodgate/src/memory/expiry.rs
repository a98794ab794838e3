//! What leaves the table: buckets the sweep finds expired (and the expiry hook that sees them), and room made
//! in a full shard.

use super::*;

/// A bucket the sweep found expired, as the [expiry hook](MemoryStoreBuilder::on_expiry) sees it.
#[derive(Clone, Debug)]
pub struct Expired<K> {
    /// The key.
    pub key: K,
    /// The key of the policy the bucket belonged to ([`Policy::key`]: its name, or its definition).
    pub policy: Arc<str>,
    /// Units counted at the last update: a window's count (the current window's, for a sliding window), a
    /// meter's level rounded up to whole units.
    pub last_used: u64,
    /// The state as last written.
    pub state: State,
    /// When the bucket expired (its state emptied, and `expiry` had passed).
    pub expired_at: Timestamp,
    /// When the bucket was created.
    pub created: Timestamp,
    /// When the bucket was last written.
    pub updated: Timestamp,
}

/// What an expiry hook is.
pub(super) type HookFn<K> = dyn Fn(&[Expired<K>]) + Send + Sync;

/// The expiry hook and how to copy a key for it.
pub(super) struct Hook<K> {
    pub(super) call: Box<HookFn<K>>,
    pub(super) clone_key: fn(&K) -> K,
}

/// The most expired buckets handed to the hook in one call.
const HOOK_BATCH: usize = 1024;

impl<K: Hash + Eq> Inner<K> {
    pub(super) fn sweep(&self, now: u64) -> u64 {
        let mut dropped = 0;
        for shard in self.shards.iter() {
            let mut expired = Vec::new();
            {
                let mut table = shard.table.lock();
                table.retain(
                    |_, b| b.expires > now,
                    |key, b| {
                        dropped += 1;
                        if let Some(hook) = &self.hook {
                            expired.push(((hook.clone_key)(key), b));
                        }
                    },
                    self.hash_of(),
                );
            }
            if let Some(hook) = &self.hook
                && !expired.is_empty()
            {
                self.call_hook(hook, shard, expired);
            }
        }
        self.stats.swept.fetch_add(dropped, Ordering::Relaxed);
        if dropped > 0 {
            tracing::debug!(dropped, "floodgate memory store swept expired buckets");
        }
        dropped
    }

    /// Hands expired buckets to the hook in batches, outside every table lock; a panic loses only its batch.
    fn call_hook(&self, hook: &Hook<K>, shard: &Shard<K>, expired: Vec<(K, Bucket)>) {
        let names = shard.policies.lock().clone();
        let unknown: Arc<str> = Arc::from("");
        let mut batch = Vec::with_capacity(expired.len().min(HOOK_BATCH));
        let mut expired = expired.into_iter().peekable();
        while expired.peek().is_some() {
            batch.clear();
            batch.extend(expired.by_ref().take(HOOK_BATCH).map(|(key, b)| Expired {
                key,
                policy: names.get(&b.policy).cloned().unwrap_or_else(|| unknown.clone()),
                last_used: b.state.last_used(),
                expired_at: Timestamp::from_micros(b.expires),
                created: Timestamp::from_micros(b.created()),
                updated: Timestamp::from_micros(b.updated()),
                state: b.state,
            }));
            let call = std::panic::AssertUnwindSafe(|| (hook.call)(&batch));
            if std::panic::catch_unwind(call).is_err() {
                self.stats.hook_panics.fetch_add(1, Ordering::Relaxed);
                tracing::error!(batch = batch.len(), "the floodgate expiry hook panicked; the sweep goes on");
            }
        }
    }

    /// Frees room in a full shard: expired keys first; then, under [`WhenFull::EvictLive`], the live keys
    /// nearest to their reset. Under [`WhenFull::RefuseNew`] a shard still full answers when (µs) its first key
    /// expires, remembered in `full_until` so the next new keys are refused without a scan until then.
    #[cold]
    pub(super) fn make_room(&self, table: &mut Table<K>, full_until: &AtomicU64, now: u64) -> Result<(), u64> {
        let until = full_until.load(Ordering::Relaxed);
        if self.when_full == WhenFull::RefuseNew && now < until {
            self.stats.refused_full.fetch_add(1, Ordering::Relaxed);
            return Err(until);
        }
        let before = table.len();
        table.retain(|_, b| b.expires > now, |_, _| {}, self.hash_of());
        let expired = before - table.len();
        self.stats.evicted_expired.fetch_add(expired as u64, Ordering::Relaxed);
        if self.when_full == WhenFull::RefuseNew {
            if table.len() < self.max_per_shard {
                return Ok(());
            }
            // An entry goes when its last bucket expires.
            let first = (0..table.len()).map(|at| entry_expires(table, at)).min().unwrap_or(now);
            full_until.store(first, Ordering::Relaxed);
            self.stats.refused_full.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                max_keys_per_shard = self.max_per_shard,
                room_in_ms = first.saturating_sub(now) / 1000,
                "floodgate memory store is full of live keys: new keys are denied until one expires"
            );
            return Err(first);
        }
        let target = self.max_per_shard - self.max_per_shard.div_ceil(8);
        if table.len() <= target {
            return Ok(());
        }
        let excess = table.len() - target;
        let mut ends: Vec<u64> = (0..table.len()).map(|at| entry_expires(table, at)).collect();
        let (_, cut, _) = ends.select_nth_unstable(excess - 1);
        let cut = *cut;
        let mut evicted = 0usize;
        let mut at = 0;
        while at < table.len() {
            if evicted < excess && entry_expires(table, at) <= cut {
                // The last entry moves here: look at it next.
                table.remove(at, self.hash_of());
                evicted += 1;
            } else {
                at += 1;
            }
        }
        self.stats.evicted_live.fetch_add(evicted as u64, Ordering::Relaxed);
        tracing::warn!(
            evicted,
            max_keys_per_shard = self.max_per_shard,
            "floodgate memory store is full: evicted live keys, which start again from empty"
        );
        Ok(())
    }
}

/// When the key at `at` may be dropped: when its last bucket expires.
fn entry_expires<K>(table: &Table<K>, at: usize) -> u64 {
    table.buckets(at).map(|b| b.expires).max().unwrap_or(0)
}
