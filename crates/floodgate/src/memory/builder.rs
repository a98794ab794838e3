//! The store's options: [`MemoryStoreBuilder`] and [`WhenFull`].

use super::*;

/// What a store bounded by [`max_keys`](MemoryStoreBuilder::max_keys) does when a new key finds its shard full
/// of live keys (expired ones are always dropped first). See the [module docs](crate::memory).
///
/// ```
/// use floodgate::memory::WhenFull;
/// use floodgate::{ManualClock, MemoryStore, Policy, Timestamp};
/// use std::time::Duration;
///
/// let clock = ManualClock::new(Timestamp::from_secs(100));
/// let store = MemoryStore::builder().clock(clock.clone()).shards(1).max_keys(Some(1)).build();
/// let policy = Policy::fixed_window(1, Duration::from_secs(10))?;
/// assert!(store.hit_sync(&b"victim"[..], &policy, 1).allowed);
/// // The store is full: a new key is refused until the victim's window ends; the victim stays counted.
/// let refused = store.hit_sync(&b"attacker"[..], &policy, 1);
/// assert_eq!((refused.allowed, refused.retry_after), (false, Some(Duration::from_secs(10))));
/// assert!(!store.hit_sync(&b"victim"[..], &policy, 1).allowed);
/// assert_eq!(store.stats().refused_full, 1);
/// # Ok::<(), floodgate::PolicyError>(())
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum WhenFull {
    /// Deny the new key's hits until a key of its shard expires; never drop live state (the default).
    #[default]
    RefuseNew,
    /// Evict the live keys nearest to their reset. An evicted key starts again from empty and may admit more
    /// than its limit: every such eviction is counted in [`MemoryStats::evicted_live`].
    EvictLive,
}

/// Builds a [`MemoryStore`].
///
/// ```
/// use floodgate::{ManualClock, MemoryStore, Timestamp};
/// use std::time::Duration;
///
/// let store = MemoryStore::builder()
///     .clock(ManualClock::new(Timestamp::EPOCH))
///     .expiry(Duration::from_secs(60))
///     .cleanup_interval(Some(Duration::from_secs(10)))
///     .max_keys(Some(1_000_000))
///     .build();
/// assert_eq!(store.stats().keys, 0);
/// ```
pub struct MemoryStoreBuilder<K = ByteKey> {
    clock: Arc<dyn Clock>,
    expiry: Duration,
    cleanup_interval: Option<Duration>,
    max_keys: Option<usize>,
    when_full: WhenFull,
    shards: Option<usize>,
    hook: Option<Hook<K>>,
    _key: std::marker::PhantomData<fn() -> K>,
}

impl<K> MemoryStoreBuilder<K> {
    /// Uses keys of type `K2` instead (an `IpAddr`, a `u64`, a tuple, a `String`...).
    /// (An expiry hook set before this call is dropped: set it after choosing the key type.)
    pub fn key_type<K2>(self) -> MemoryStoreBuilder<K2> {
        MemoryStoreBuilder {
            clock: self.clock,
            expiry: self.expiry,
            cleanup_interval: self.cleanup_interval,
            max_keys: self.max_keys,
            when_full: self.when_full,
            shards: self.shards,
            hook: None,
            _key: std::marker::PhantomData,
        }
    }

    /// Calls `hook` with every bucket the sweep finds expired, before it is dropped (Hammer's `before_clean`):
    /// for an audit trail, or to persist usage elsewhere. Buckets come in batches of up to 1024, after the
    /// sweep has released the shard's lock, so a slow hook delays only the next sweep, never a hit; a hook that
    /// panics loses its batch (counted in [`MemoryStats::hook_panics`] and logged) and the sweep goes on.
    ///
    /// ```
    /// use floodgate::{ManualClock, MemoryStore, Policy, Timestamp};
    /// use std::sync::{Arc, Mutex};
    /// use std::time::Duration;
    ///
    /// let seen = Arc::new(Mutex::new(Vec::new()));
    /// let log = seen.clone();
    /// let clock = ManualClock::new(Timestamp::from_secs(100));
    /// let store = MemoryStore::builder()
    ///     .clock(clock.clone())
    ///     .cleanup_interval(None)
    ///     .on_expiry(move |batch| {
    ///         let mut log = log.lock().unwrap();
    ///         log.extend(batch.iter().map(|e| (e.key.to_vec(), e.policy.to_string(), e.last_used)));
    ///     })
    ///     .build();
    /// let policy = Policy::fixed_window(5, Duration::from_secs(10))?.named("api")?;
    /// store.hit_sync(&b"user:1"[..], &policy, 3);
    /// clock.advance(Duration::from_secs(10));
    /// store.sweep();
    /// assert_eq!(*seen.lock().unwrap(), vec![(b"user:1".to_vec(), "api".to_string(), 3)]);
    /// # Ok::<(), floodgate::PolicyError>(())
    /// ```
    pub fn on_expiry(mut self, hook: impl Fn(&[Expired<K>]) + Send + Sync + 'static) -> Self
    where
        K: Clone,
    {
        self.hook = Some(Hook { call: Box::new(hook), clone_key: K::clone });
        self
    }

    /// The time source (default: [`SystemClock`]).
    pub fn clock(mut self, clock: impl Clock) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    /// Keep an idle bucket at least this long after its last update (default zero: exactly until its state is
    /// empty). Live state is never dropped early, whatever this is.
    pub fn expiry(mut self, expiry: Duration) -> Self {
        self.expiry = expiry;
        self
    }

    /// How often the background thread sweeps expired buckets (default 60 s); `None` for no thread (call
    /// [`MemoryStore::sweep`] yourself).
    pub fn cleanup_interval(mut self, interval: Option<Duration>) -> Self {
        self.cleanup_interval = interval.filter(|d| !d.is_zero());
        self
    }

    /// Bound the number of keys (default: unbounded), spread evenly over the shards. What a full shard does
    /// is [`when_full`](Self::when_full)'s choice.
    pub fn max_keys(mut self, max: Option<usize>) -> Self {
        self.max_keys = max;
        self
    }

    /// What a new key does when its shard is full of live keys (default [`WhenFull::RefuseNew`]: it is denied,
    /// and no live key ever loses its count).
    pub fn when_full(mut self, when_full: WhenFull) -> Self {
        self.when_full = when_full;
        self
    }

    /// The number of shards, rounded up to a power of two (default: 16 per core, at least 64).
    pub fn shards(mut self, shards: usize) -> Self {
        self.shards = Some(shards);
        self
    }

    /// Builds the store and starts its sweep thread.
    pub fn build(self) -> MemoryStore<K>
    where
        K: Hash + Eq + Send + Sync + 'static,
    {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let n = self.shards.unwrap_or((cores * 16).max(64)).clamp(1, 1 << 16).next_power_of_two();
        let shards = (0..n)
            .map(|_| Shard {
                table: Mutex::new(Table::default()),
                full_until: AtomicU64::new(0),
                policies: Mutex::new(HashMap::new()),
            })
            .collect::<Box<[_]>>();
        let max_per_shard = self.max_keys.map_or(usize::MAX, |m| m.div_ceil(n).max(1));
        let inner = Arc::new(Inner {
            shards,
            shard_mask: (n - 1) as u64,
            hasher: foldhash::fast::RandomState::default(),
            system_clock: (&*self.clock as &dyn Any).downcast_ref::<SystemClock>().cloned(),
            clock: self.clock,
            expiry_us: duration_micros(self.expiry),
            max_per_shard,
            when_full: self.when_full,
            hook: self.hook,
            stats: Counters::default(),
            sweeper: Mutex::new(None),
        });
        if let Some(interval) = self.cleanup_interval {
            match Sweeper::start(Arc::downgrade(&inner), interval, |inner: &Inner<K>| {
                inner.sweep(inner.now().as_micros());
            }) {
                Ok(s) => *inner.sweeper.lock() = Some(s),
                Err(e) => {
                    tracing::error!(error = %e, "could not start the floodgate sweep thread; expired state will only be dropped by MemoryStore::sweep")
                }
            }
        }
        MemoryStore { inner }
    }
}

impl MemoryStore<ByteKey> {
    /// A builder for a store with byte-string keys (change them with [`MemoryStoreBuilder::key_type`]).
    pub fn builder() -> MemoryStoreBuilder<ByteKey> {
        MemoryStoreBuilder {
            clock: Arc::new(SystemClock::new()),
            expiry: Duration::ZERO,
            cleanup_interval: Some(Duration::from_secs(60)),
            max_keys: None,
            when_full: WhenFull::RefuseNew,
            shards: None,
            hook: None,
            _key: std::marker::PhantomData,
        }
    }
}
