//! The in-memory store: the default, our answer to Hammer's ETS backend.
//!
//! A sharded hash table. A key is hashed once ([`foldhash`]); the hash picks a shard and a slot. Each shard
//! has its own short mutex, held only for the few nanoseconds of one decision, so there is no global lock and
//! two threads contend only when they touch the same shard. Keys up to 24 bytes are stored inline.
//!
//! **Expiry.** Every bucket knows when its state is empty again (the end of a window, the moment a meter has
//! drained); from then on it is gone for every call, swept or not. A background thread sweeps such buckets
//! every `cleanup_interval` (Hammer's `cleanup_interval_ms`) and stops when the store is dropped. `expiry`
//! (Hammer's `expiry_ms`) keeps an idle bucket at least that long after its last update, but never forgets
//! live state early, so unlike Hammer's a short `expiry` cannot let a key past its limit.
//!
//! **Bounded keys.** With `max_keys`, a full shard first drops its expired buckets. If that frees nothing,
//! what happens is [`WhenFull`]'s choice:
//! - [`WhenFull::RefuseNew`] (the default): no live key is ever dropped, so a bound can never turn into a
//!   bypass. A hit of a key the store has no room for is denied, with `retry_after` the time until the shard's
//!   first key expires (counted in [`MemoryStats::refused_full`]). A flood of new keys can then keep other new
//!   keys out until room frees, but it can never reset the count of a key that is already there.
//! - [`WhenFull::EvictLive`]: the live keys nearest to their reset are evicted (an eighth of the shard at
//!   once, so the cost is amortised). An evicted key starts again from empty, which can admit more than its
//!   limit: availability over strictness, counted in [`MemoryStats::evicted_live`] and logged.
//!
//! **Memory.** About 120 bytes per key with one policy and a key of up to 24 bytes; see `BENCHMARKS.md` for
//! the measurement at one million keys.

mod buckets;
mod key;
mod sweeper;

use std::any::Any;
use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::{BuildHasher, Hash};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use hashbrown::HashTable;
use parking_lot::Mutex;

use buckets::{Bucket, Buckets};
pub use key::{ByteKey, ToKey};
use sweeper::Sweeper;

use crate::algorithm::{self, Op, State};
use crate::store::{BucketInfo, Hit, Store, StoreResult};
use crate::time::duration_micros;
use crate::{Clock, Decision, Policy, SystemClock, Timestamp};

struct Entry<K> {
    key: K,
    buckets: Buckets,
}

#[repr(align(64))]
struct Shard<K> {
    table: Mutex<HashTable<Entry<K>>>,
    /// Under [`WhenFull::RefuseNew`]: until when (µs) a full shard is known to have no room, so a flood of new
    /// keys is refused without a scan each. Read and written under the table's lock.
    full_until: AtomicU64,
    /// Policy keys by fingerprint, kept only when an expiry hook is set (so the hook can name the policy).
    policies: Mutex<HashMap<u64, Arc<str>>>,
}

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
type HookFn<K> = dyn Fn(&[Expired<K>]) + Send + Sync;

/// The expiry hook and how to copy a key for it.
struct Hook<K> {
    call: Box<HookFn<K>>,
    clone_key: fn(&K) -> K,
}

/// The most expired buckets handed to the hook in one call.
const HOOK_BATCH: usize = 1024;

struct Inner<K> {
    shards: Box<[Shard<K>]>,
    shard_mask: u64,
    hasher: foldhash::fast::RandomState,
    clock: Arc<dyn Clock>,
    /// A copy of `clock` when it is the [`SystemClock`], read without a virtual call on the hit path.
    system_clock: Option<SystemClock>,
    expiry_us: u64,
    max_per_shard: usize,
    when_full: WhenFull,
    hook: Option<Hook<K>>,
    stats: Counters,
    sweeper: Mutex<Option<Sweeper>>,
}

#[derive(Default)]
struct Counters {
    swept: AtomicU64,
    evicted_expired: AtomicU64,
    evicted_live: AtomicU64,
    refused_full: AtomicU64,
    hook_panics: AtomicU64,
}

/// What a store bounded by [`max_keys`](MemoryStoreBuilder::max_keys) does when a new key finds its shard full
/// of live keys (expired ones are always dropped first). See the [module docs](self).
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

/// The in-memory [`Store`]: sharded, lock-per-shard, with expiry and an optional key bound.
///
/// Keys are any `K: Hash + Eq`; the default [`ByteKey`] takes byte-string ids and is what the async
/// [`Store`] trait uses. The synchronous methods ([`hit_sync`](Self::hit_sync) and friends) take a borrowed
/// key and never allocate unless the key is new. Clones share one store.
///
/// ```
/// use floodgate::{MemoryStore, Policy};
/// use std::net::IpAddr;
/// use std::time::Duration;
///
/// let store = MemoryStore::builder().key_type::<IpAddr>().build();
/// let policy = Policy::gcra(10, Duration::from_secs(1))?;
/// let ip: IpAddr = "192.0.2.7".parse()?;
/// assert!(store.hit_sync(&ip, &policy, 1).allowed);
/// assert_eq!(store.stats().keys, 1);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct MemoryStore<K = ByteKey> {
    inner: Arc<Inner<K>>,
}

impl<K> Clone for MemoryStore<K> {
    fn clone(&self) -> Self {
        MemoryStore { inner: self.inner.clone() }
    }
}

impl<K> std::fmt::Debug for MemoryStore<K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryStore")
            .field("shards", &self.inner.shards.len())
            .field("expiry_us", &self.inner.expiry_us)
            .finish()
    }
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
                table: Mutex::new(HashTable::new()),
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
    /// A store with byte-string keys, the system clock, and the default options.
    ///
    /// ```
    /// let store = floodgate::MemoryStore::new();
    /// assert_eq!(store.stats().keys, 0);
    /// ```
    pub fn new() -> Self {
        Self::builder().build()
    }

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

impl Default for MemoryStore<ByteKey> {
    fn default() -> Self {
        Self::new()
    }
}

impl<K: Hash + Eq + Send + Sync + 'static> MemoryStore<K> {
    /// The store's clock.
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.inner.clock
    }

    /// Admits `cost` units for `key` if they fit (see [`Store::hit`]), at the store clock's time.
    ///
    /// ```
    /// use floodgate::{MemoryStore, Policy};
    /// use std::time::Duration;
    /// let store = MemoryStore::new();
    /// let policy = Policy::sliding_window(1, Duration::from_secs(1))?;
    /// assert!(store.hit_sync(&b"k"[..], &policy, 1).allowed);
    /// assert!(!store.hit_sync(&b"k"[..], &policy, 1).allowed);
    /// # Ok::<(), floodgate::PolicyError>(())
    /// ```
    #[inline]
    pub fn hit_sync<Q>(&self, key: &Q, policy: &Policy, cost: u64) -> Decision
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToKey<K> + ?Sized,
    {
        self.apply_now(key, policy, Op::Hit, cost)
    }

    /// [`apply_at`](Self::apply_at) at the store clock's time, read after the key is hashed: reading the clock
    /// first keeps the CPU from loading the key (a cache miss when keys are many) in the shadow of the previous
    /// call, ~80 ns a check at a million keys (`floodgate-bench/benches/floor.rs`).
    ///
    /// Always inlined, down to the algorithm, so the work that waits on the key's entry (a cache miss when
    /// keys are many) is only what the caller uses: a caller that reads only `allowed` never computes the
    /// durations, and the CPU gets on to the next check sooner. The paths that add a key or a bucket stay out
    /// of line.
    #[inline(always)]
    fn apply_now<Q>(&self, key: &Q, policy: &Policy, op: Op, cost: u64) -> Decision
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToKey<K> + ?Sized,
    {
        let inner = &*self.inner;
        let hash = inner.hasher.hash_one(key);
        let now = inner.now();
        inner.apply_locked(&mut inner.shard(hash).table.lock(), hash, key, policy, op, cost, now)
    }

    /// Applies `op` with `cost` for `key` at `now`: the store's one synchronous entry point, with no clock
    /// read, no future and no allocation unless the key is new.
    ///
    /// ```
    /// use floodgate::algorithm::Op;
    /// use floodgate::{MemoryStore, Policy, Timestamp};
    /// use std::time::Duration;
    /// let store = MemoryStore::builder().key_type::<u64>().build();
    /// let policy = Policy::fixed_window(1, Duration::from_secs(1))?;
    /// let now = Timestamp::from_secs(5);
    /// assert!(store.apply_at(&7, &policy, Op::Hit, 1, now).allowed);
    /// assert!(!store.apply_at(&7, &policy, Op::Hit, 1, now).allowed);
    /// assert!(store.apply_at(&7, &policy, Op::Hit, 1, Timestamp::from_secs(6)).allowed);
    /// # Ok::<(), floodgate::PolicyError>(())
    /// ```
    #[inline]
    pub fn apply_at<Q>(&self, key: &Q, policy: &Policy, op: Op, cost: u64, now: Timestamp) -> Decision
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToKey<K> + ?Sized,
    {
        let inner = &*self.inner;
        let hash = inner.hasher.hash_one(key);
        let mut table = inner.shard(hash).table.lock();
        inner.apply_locked(&mut table, hash, key, policy, op, cost, now)
    }

    /// Reports `key`'s state under `policy` at `now` (see [`Store::inspect`]).
    ///
    /// ```
    /// use floodgate::algorithm::Op;
    /// use floodgate::{MemoryStore, Policy, Timestamp};
    /// use std::time::Duration;
    /// let store = MemoryStore::new();
    /// let policy = Policy::fixed_window(3, Duration::from_secs(10))?;
    /// store.apply_at(&b"k"[..], &policy, Op::Hit, 2, Timestamp::from_secs(100));
    /// let info = store.inspect_at(&b"k"[..], &policy, Timestamp::from_secs(101)).unwrap();
    /// assert_eq!((info.used, info.remaining, info.created), (2, 1, Timestamp::from_secs(100)));
    /// # Ok::<(), floodgate::PolicyError>(())
    /// ```
    pub fn inspect_at<Q>(&self, key: &Q, policy: &Policy, now: Timestamp) -> Option<BucketInfo>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let inner = &*self.inner;
        let hash = inner.hasher.hash_one(key);
        let table = inner.shard(hash).table.lock();
        let t = now.as_micros();
        let entry = table.find(hash, |e| e.key.borrow() == key)?;
        let b = entry.buckets.get(policy.fingerprint()).filter(|b| b.expires > t)?;
        let usage = algorithm::inspect(&b.state, policy, now)?;
        Some(BucketInfo {
            used: usage.used,
            remaining: usage.remaining,
            reset_after: usage.reset_after,
            next_window_after: usage.next_window_after,
            created: Timestamp::from_micros(b.created),
            updated: Timestamp::from_micros(b.updated),
            expires_at: now + usage.reset_after,
        })
    }

    /// Deletes every bucket of `key`, returning how many were live at `now`.
    ///
    /// ```
    /// use floodgate::algorithm::Op;
    /// use floodgate::{MemoryStore, Policy, Timestamp};
    /// use std::time::Duration;
    /// let store = MemoryStore::new();
    /// let now = Timestamp::from_secs(1);
    /// for limit in [5, 6] {
    ///     store.apply_at(&b"k"[..], &Policy::gcra(limit, Duration::from_secs(1))?, Op::Hit, 1, now);
    /// }
    /// assert_eq!(store.delete_at(&b"k"[..], now), 2);
    /// assert_eq!(store.delete_at(&b"k"[..], now), 0);
    /// # Ok::<(), floodgate::PolicyError>(())
    /// ```
    pub fn delete_at<Q>(&self, key: &Q, now: Timestamp) -> u64
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let inner = &*self.inner;
        let hash = inner.hasher.hash_one(key);
        let mut table = inner.shard(hash).table.lock();
        match table.find_entry(hash, |e| e.key.borrow() == key) {
            Ok(occupied) => {
                let (entry, _) = occupied.remove();
                let t = now.as_micros();
                entry.buckets.iter().filter(|b| b.expires > t && !b.state.is_empty()).count() as u64
            }
            Err(_) => 0,
        }
    }

    /// Drops every bucket that has expired by the store clock's now; returns how many. The sweep thread calls
    /// this every `cleanup_interval`.
    ///
    /// ```
    /// use floodgate::algorithm::Op;
    /// use floodgate::{ManualClock, MemoryStore, Policy, Timestamp};
    /// use std::time::Duration;
    /// let clock = ManualClock::new(Timestamp::from_secs(100));
    /// let store = MemoryStore::builder().clock(clock.clone()).cleanup_interval(None).build();
    /// store.hit_sync(&b"k"[..], &Policy::fixed_window(5, Duration::from_secs(10))?, 1);
    /// assert_eq!(store.sweep(), 0);
    /// clock.advance(Duration::from_secs(10));
    /// assert_eq!(store.sweep(), 1);
    /// assert_eq!(store.stats().keys, 0);
    /// # Ok::<(), floodgate::PolicyError>(())
    /// ```
    pub fn sweep(&self) -> u64 {
        self.inner.sweep(self.inner.now().as_micros())
    }

    /// What the store holds and has dropped.
    pub fn stats(&self) -> MemoryStats {
        let s = &self.inner.stats;
        MemoryStats {
            keys: self.inner.shards.iter().map(|sh| sh.table.lock().len()).sum(),
            swept: s.swept.load(Ordering::Relaxed),
            evicted_expired: s.evicted_expired.load(Ordering::Relaxed),
            evicted_live: s.evicted_live.load(Ordering::Relaxed),
            refused_full: s.refused_full.load(Ordering::Relaxed),
            hook_panics: s.hook_panics.load(Ordering::Relaxed),
        }
    }
}

impl<K> Inner<K> {
    /// The store clock's time; the system clock's without a virtual call.
    #[inline(always)]
    fn now(&self) -> Timestamp {
        match &self.system_clock {
            Some(clock) => clock.now(),
            None => self.clock.now(),
        }
    }
}

impl<K: Hash + Eq> Inner<K> {
    /// [`MemoryStore::apply_at`] on a shard table already locked (always inlined: see `apply_now`).
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    fn apply_locked<Q>(
        &self,
        table: &mut HashTable<Entry<K>>,
        hash: u64,
        key: &Q,
        policy: &Policy,
        op: Op,
        cost: u64,
        now: Timestamp,
    ) -> Decision
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToKey<K> + ?Sized,
    {
        let fp = policy.fingerprint();
        let t = now.as_micros();
        let found = table.find_mut(hash, |e| key.is_key(&e.key));
        if let Some(b) = found.and_then(|e| e.buckets.get_mut(fp)) {
            // An expired state is emptied in place by `step`: it is usually written again at once.
            let expired = b.expires <= t;
            if expired {
                // Created again by any call that finds it expired, written or not, as in Redis (a clock that
                // steps back can bring an unwritten bucket back to life).
                b.created = t;
            }
            let o = algorithm::step(&mut b.state, policy, op, cost, now, true, expired);
            if op != Op::Hit || (o.decision.allowed && cost > 0) {
                b.updated = t;
                b.expires = self.expires(o.reset_at, t);
            }
            return o.decision;
        }
        // A new bucket, perhaps of a new key. Checks and denials keep nothing, so a flood of them costs no
        // memory. The decision is made here, in line, and only the insertion is out of line: a decision
        // returned from a call would travel through memory, and the caller would pay for every field of it.
        let mut state = State::Empty;
        let o = algorithm::step(&mut state, policy, op, cost, now, true, false);
        if !state.is_empty()
            && let Err(room_at) = self.add(table, hash, key, policy, state, o.reset_at, t)
        {
            return refused(policy, room_at.saturating_sub(t));
        }
        o.decision
    }

    /// Adds `key`'s bucket under `policy`, holding `state` (whose state is empty again at `reset_at`), to the
    /// key's entry or to a new one. A new key that finds its shard full under [`WhenFull::RefuseNew`] is not
    /// added: the error is when (µs) the shard's first key expires.
    #[cold]
    #[inline(never)]
    #[allow(clippy::too_many_arguments)]
    fn add<Q>(
        &self,
        table: &mut HashTable<Entry<K>>,
        hash: u64,
        key: &Q,
        policy: &Policy,
        state: State,
        reset_at: u64,
        t: u64,
    ) -> Result<(), u64>
    where
        K: Borrow<Q>,
        Q: Eq + ToKey<K> + ?Sized,
    {
        let bucket = self.new_bucket(state, policy, reset_at, t);
        if let Some(entry) = table.find_mut(hash, |e| key.is_key(&e.key)) {
            entry.buckets.push(bucket);
        } else {
            if table.len() >= self.max_per_shard {
                self.make_room(table, &self.shard(hash).full_until, t)?;
            }
            let entry = Entry { key: key.to_key(), buckets: Buckets::new(bucket) };
            table.insert_unique(hash, entry, |e| self.hasher.hash_one(&e.key));
        }
        self.remember(hash, policy);
        Ok(())
    }

    /// A copy of `key`'s bucket under the policy `fp`, to put back with [`restore`](Self::restore).
    fn snapshot(&self, table: &HashTable<Entry<K>>, hash: u64, key: &[u8], fp: u64) -> Option<Bucket>
    where
        K: Borrow<[u8]>,
    {
        table.find(hash, |e| e.key.borrow() == key)?.buckets.get(fp).cloned()
    }

    /// Puts back what [`snapshot`](Self::snapshot) saw: the old bucket, or no bucket (and no key, if it was new).
    fn restore(&self, table: &mut HashTable<Entry<K>>, hash: u64, key: &[u8], fp: u64, old: Option<Bucket>)
    where
        K: Borrow<[u8]>,
    {
        let Ok(mut entry) = table.find_entry(hash, |e| e.key.borrow() == key) else {
            // Evicted to make room by a later hit of the batch: nothing of it is left to undo.
            return;
        };
        let buckets = &mut entry.get_mut().buckets;
        match (buckets.get_mut(fp), old) {
            (Some(now), Some(b)) => *now = b,
            (Some(_), None) => {
                if !buckets.retain(|b| b.policy != fp, drop) {
                    entry.remove();
                }
            }
            (None, Some(b)) => buckets.push(b),
            (None, None) => {}
        }
    }
    #[inline]
    fn shard(&self, hash: u64) -> &Shard<K> {
        &self.shards[self.shard_index(hash)]
    }

    /// hashbrown uses the low bits for the slot and the top 7 for its tags: take the shard from the middle.
    #[inline]
    fn shard_index(&self, hash: u64) -> usize {
        ((hash >> 32) & self.shard_mask) as usize
    }

    /// When a bucket written at `now`, whose state is empty again at `reset_at`, may be forgotten: once its
    /// state is empty and `expiry` has passed.
    ///
    /// `reset_at` comes from the state itself, not from the decision's `reset_after`: after a clock step back
    /// the algorithms stand still at the state's own (later) time, and `now + reset_after` would forget live
    /// state early.
    #[inline]
    fn expires(&self, reset_at: u64, now: u64) -> u64 {
        reset_at.max(now.saturating_add(self.expiry_us))
    }

    #[inline]
    fn new_bucket(&self, state: State, policy: &Policy, reset_at: u64, now: u64) -> Bucket {
        Bucket { policy: policy.fingerprint(), expires: self.expires(reset_at, now), state, created: now, updated: now }
    }

    /// With an expiry hook: remembers the policy's key under its fingerprint, for the hook.
    #[inline]
    fn remember(&self, hash: u64, policy: &Policy) {
        if self.hook.is_some() {
            let mut names = self.shard(hash).policies.lock();
            names.entry(policy.fingerprint()).or_insert_with(|| policy.key().into());
        }
    }

    fn sweep(&self, now: u64) -> u64 {
        let mut dropped = 0;
        for shard in self.shards.iter() {
            let mut expired = Vec::new();
            {
                let mut table = shard.table.lock();
                table.retain(|e| {
                    e.buckets.retain(
                        |b| b.expires > now,
                        |b| {
                            dropped += 1;
                            if let Some(hook) = &self.hook {
                                expired.push(((hook.clone_key)(&e.key), b));
                            }
                        },
                    )
                });
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
                state: b.state,
                expired_at: Timestamp::from_micros(b.expires),
                created: Timestamp::from_micros(b.created),
                updated: Timestamp::from_micros(b.updated),
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
    fn make_room(&self, table: &mut HashTable<Entry<K>>, full_until: &AtomicU64, now: u64) -> Result<(), u64> {
        let until = full_until.load(Ordering::Relaxed);
        if self.when_full == WhenFull::RefuseNew && now < until {
            self.stats.refused_full.fetch_add(1, Ordering::Relaxed);
            return Err(until);
        }
        let before = table.len();
        table.retain(|e| e.buckets.iter().any(|b| b.expires > now));
        let expired = before - table.len();
        self.stats.evicted_expired.fetch_add(expired as u64, Ordering::Relaxed);
        if self.when_full == WhenFull::RefuseNew {
            if table.len() < self.max_per_shard {
                return Ok(());
            }
            // An entry goes when its last bucket expires.
            let first = table.iter().map(entry_expires).min().unwrap_or(now);
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
        let mut ends: Vec<u64> = table.iter().map(entry_expires).collect();
        let (_, cut, _) = ends.select_nth_unstable(excess - 1);
        let cut = *cut;
        let mut evicted = 0usize;
        table.retain(|e| {
            if evicted < excess && entry_expires(e) <= cut {
                evicted += 1;
                false
            } else {
                true
            }
        });
        self.stats.evicted_live.fetch_add(evicted as u64, Ordering::Relaxed);
        tracing::warn!(
            evicted,
            max_keys_per_shard = self.max_per_shard,
            "floodgate memory store is full: evicted live keys, which start again from empty"
        );
        Ok(())
    }
}

/// When an entry may be dropped: when its last bucket expires.
fn entry_expires<K>(e: &Entry<K>) -> u64 {
    e.buckets.iter().map(|b| b.expires).max().unwrap_or(0)
}

/// The answer to a new key that a full store has no room for: denied until `wait` has passed.
#[cold]
fn refused(policy: &Policy, wait_us: u64) -> Decision {
    let wait = Duration::from_micros(wait_us.max(1));
    Decision {
        allowed: false,
        limit: policy.capacity(),
        remaining: 0,
        reset_after: wait,
        retry_after: Some(wait),
        fallback: false,
    }
}

impl<K> MemoryStore<K>
where
    K: Borrow<[u8]> + Hash + Eq + Send + Sync + 'static,
    [u8]: ToKey<K>,
{
    /// [`Store::hit_all`] at `now`: all or nothing. The shards of every hit are locked together (in shard
    /// order, so batches never deadlock), the hits are applied in order, and if any is denied every change is
    /// undone before the locks are released: no other call ever sees a partly counted batch.
    ///
    /// ```
    /// use floodgate::{Hit, MemoryStore, Policy, Timestamp};
    /// use std::time::Duration;
    ///
    /// let store = MemoryStore::new();
    /// let (user, route) = (Policy::fixed_window(2, Duration::from_secs(1))?, Policy::fixed_window(1, Duration::from_secs(1))?);
    /// let now = Timestamp::from_secs(10);
    /// let batch = [Hit { id: b"user:1", policy: &user, cost: 1 }, Hit { id: b"/login", policy: &route, cost: 1 }];
    /// assert!(store.hit_all_at(&batch, now).iter().all(|d| d.allowed));
    /// let denied = store.hit_all_at(&batch, now);
    /// assert!(denied[0].allowed && !denied[1].allowed);
    /// assert_eq!(denied[0].remaining, 1); // user:1 was not counted a second time
    /// # Ok::<(), floodgate::PolicyError>(())
    /// ```
    pub fn hit_all_at(&self, hits: &[Hit<'_>], now: Timestamp) -> Vec<Decision> {
        let inner = &*self.inner;
        let hashes: Vec<u64> = hits.iter().map(|h| inner.hasher.hash_one(h.id)).collect();
        let mut shards: Vec<usize> = hashes.iter().map(|&h| inner.shard_index(h)).collect();
        shards.sort_unstable();
        shards.dedup();
        let mut tables: Vec<_> = shards.iter().map(|&i| inner.shards[i].table.lock()).collect();
        // Every hit's shard is in `shards`, so the search always finds it.
        let table_of = |hash: u64| shards.binary_search(&inner.shard_index(hash)).unwrap_or_default();
        let mut undo = Vec::with_capacity(hits.len());
        let mut decisions = Vec::with_capacity(hits.len());
        for (h, &hash) in hits.iter().zip(&hashes) {
            let table = &mut tables[table_of(hash)];
            undo.push(inner.snapshot(table, hash, h.id, h.policy.fingerprint()));
            decisions.push(inner.apply_locked(table, hash, h.id, h.policy, Op::Hit, h.cost, now));
        }
        if decisions.iter().all(|d| d.allowed) {
            return decisions;
        }
        for ((h, &hash), old) in hits.iter().zip(&hashes).zip(undo).rev() {
            inner.restore(&mut tables[table_of(hash)], hash, h.id, h.policy.fingerprint(), old);
        }
        // What would have passed is answered as a pure check of the state as it is.
        for ((h, &hash), d) in hits.iter().zip(&hashes).zip(&mut decisions) {
            if d.allowed {
                *d = inner.apply_locked(&mut tables[table_of(hash)], hash, h.id, h.policy, Op::Hit, 0, now);
            }
        }
        decisions
    }
}

impl<K> Store for MemoryStore<K>
where
    K: Borrow<[u8]> + Hash + Eq + Send + Sync + 'static,
    [u8]: ToKey<K>,
{
    async fn hit(&self, id: &[u8], policy: &Policy, cost: u64) -> StoreResult<Decision> {
        Ok(self.apply_now(id, policy, Op::Hit, cost))
    }

    async fn inc(&self, id: &[u8], policy: &Policy, cost: u64) -> StoreResult<Decision> {
        Ok(self.apply_now(id, policy, Op::Force, cost))
    }

    async fn set(&self, id: &[u8], policy: &Policy, used: u64) -> StoreResult<Decision> {
        Ok(self.apply_now(id, policy, Op::Set, used))
    }

    async fn inspect(&self, id: &[u8], policy: &Policy) -> StoreResult<Option<BucketInfo>> {
        Ok(self.inspect_at(id, policy, self.inner.now()))
    }

    async fn delete_buckets(&self, id: &[u8]) -> StoreResult<u64> {
        Ok(self.delete_at(id, self.inner.now()))
    }

    async fn hit_all(&self, hits: &[Hit<'_>]) -> StoreResult<Vec<Decision>> {
        Ok(self.hit_all_at(hits, self.inner.now()))
    }

    fn hit_all_is_atomic(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ManualClock;

    /// The hit path reads the system clock without a virtual call only when the store's clock is one.
    #[test]
    fn the_system_clock_is_recognised_and_no_other() {
        assert!(MemoryStore::new().inner.system_clock.is_some());
        assert!(MemoryStore::builder().clock(SystemClock::new()).build().inner.system_clock.is_some());
        let manual = MemoryStore::builder().clock(ManualClock::new(Timestamp::EPOCH)).build();
        assert!(manual.inner.system_clock.is_none());
    }
}
