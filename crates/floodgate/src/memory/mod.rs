//! The in-memory store: the default, our answer to Hammer's ETS backend.
//!
//! A sharded hash table. A key is hashed once ([`foldhash`]); the hash picks a shard and a slot. Each shard
//! has its own short mutex, held only for the few nanoseconds of one decision, so there is no global lock and
//! two threads contend only when they touch the same shard. A shard's table holds 4-byte positions into a
//! dense vector of 80-byte entries (the key, inline up to 14 bytes, and its first bucket), so the table's empty
//! slots cost 4 bytes each rather than an entry's size.
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
//! **Memory.** About 92 bytes per key with one policy and a key of up to 14 bytes (governor's keyed limiter:
//! 101); a longer key adds its heap allocation. `BENCHMARKS.md` has the measurement at one million keys.

mod buckets;
mod builder;
mod expiry;
mod index;
mod key;
mod stats;
mod sweeper;
mod table;

use std::any::Any;
use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::{BuildHasher, Hash};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::Mutex;

use buckets::Bucket;
pub use builder::{MemoryStoreBuilder, WhenFull};
pub use expiry::Expired;
use expiry::Hook;
pub use key::{ByteKey, ToKey};
use stats::Counters;
pub use stats::MemoryStats;
use sweeper::Sweeper;
use table::Table;

use crate::algorithm::{self, Op, State};
use crate::store::{BucketInfo, Hit, Store, StoreResult};
use crate::time::duration_micros;
use crate::{Clock, Decision, Policy, SystemClock, Timestamp};

#[repr(align(64))]
struct Shard<K> {
    table: Mutex<Table<K>>,
    /// Under [`WhenFull::RefuseNew`]: until when (µs) a full shard is known to have no room, so a flood of new
    /// keys is refused without a scan each. Read and written under the table's lock.
    full_until: AtomicU64,
    /// Policy keys by fingerprint, kept only when an expiry hook is set (so the hook can name the policy).
    policies: Mutex<HashMap<u64, Arc<str>>>,
}

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
        let at = table.find(hash, |k| k.borrow() == key)?;
        let b = table.bucket(at, policy.fingerprint()).filter(|b| b.expires > t)?;
        let usage = algorithm::inspect(&b.state, policy, now)?;
        Some(BucketInfo {
            used: usage.used,
            remaining: usage.remaining,
            reset_after: usage.reset_after,
            next_window_after: usage.next_window_after,
            created: Timestamp::from_micros(b.created()),
            updated: Timestamp::from_micros(b.updated()),
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
        let Some((_, buckets)) =
            table.find(hash, |k| k.borrow() == key).and_then(|at| table.remove(at, inner.hash_of()))
        else {
            return 0;
        };
        let t = now.as_micros();
        buckets.iter().filter(|b| b.expires > t && !b.state.is_empty()).count() as u64
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
        table: &mut Table<K>,
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
        let at = table.find(hash, |k| key.is_key(k));
        if let Some(b) = at.and_then(|at| table.bucket_mut(at, fp)) {
            // An expired state is emptied in place by `step`: it is usually written again at once.
            let expired = b.expires <= t;
            if expired {
                // Created again by any call that finds it expired, written or not, as in Redis (a clock that
                // steps back can bring an unwritten bucket back to life).
                b.set_created(t);
            }
            let o = algorithm::step(&mut b.state, policy, op, cost, now, true, expired);
            if op != Op::Hit || (o.decision.allowed && cost > 0) {
                b.set_updated(t);
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
            && let Err(room_at) = self.add(table, hash, at, key, policy, state, o.reset_at, t)
        {
            return refused(policy, room_at.saturating_sub(t));
        }
        o.decision
    }

    /// Adds `key`'s bucket under `policy`, holding `state` (whose state is empty again at `reset_at`), to the
    /// key's entry (at `at`, when it has one) or to a new one. A new key that finds its shard full under [`WhenFull::RefuseNew`] is not
    /// added: the error is when (µs) the shard's first key expires.
    #[cold]
    #[inline(never)]
    #[allow(clippy::too_many_arguments)]
    fn add<Q>(
        &self,
        table: &mut Table<K>,
        hash: u64,
        at: Option<usize>,
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
        if let Some(at) = at {
            table.push_bucket(at, bucket);
        } else {
            if table.len() >= self.max_per_shard {
                self.make_room(table, &self.shard(hash).full_until, t)?;
            }
            table.insert(hash, key.to_key(), bucket, self.hash_of());
        }
        self.remember(hash, policy);
        Ok(())
    }

    /// A copy of `key`'s bucket under the policy `fp`, to put back with [`restore`](Self::restore).
    fn snapshot(&self, table: &Table<K>, hash: u64, key: &[u8], fp: u64) -> Option<Bucket>
    where
        K: Borrow<[u8]>,
    {
        table.bucket(table.find(hash, |k| k.borrow() == key)?, fp).cloned()
    }

    /// Puts back what [`snapshot`](Self::snapshot) saw: the old bucket, or no bucket (and no key, if it was new).
    fn restore(&self, table: &mut Table<K>, hash: u64, key: &[u8], fp: u64, old: Option<Bucket>)
    where
        K: Borrow<[u8]>,
    {
        let Some(at) = table.find(hash, |k| k.borrow() == key) else {
            // Evicted to make room by a later hit of the batch: nothing of it is left to undo.
            return;
        };
        match (table.bucket_mut(at, fp), old) {
            (Some(now), Some(b)) => {
                // The bucket comes back as it was; where the key's other buckets are now stays.
                let tail = now.tail;
                *now = b;
                now.tail = tail;
            }
            (Some(_), None) => table.remove_bucket(at, fp, self.hash_of()),
            (None, Some(b)) => table.push_bucket(at, b),
            (None, None) => {}
        }
    }

    /// How the shard tables hash a stored key.
    fn hash_of(&self) -> impl Fn(&K) -> u64 + '_ {
        |k| self.hasher.hash_one(k)
    }
    #[inline]
    fn shard(&self, hash: u64) -> &Shard<K> {
        &self.shards[self.shard_index(hash)]
    }

    /// The index uses the low bits for the home slot and the top ones for its tags: take the shard from the middle.
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
        Bucket::new(policy.fingerprint(), state, self.expires(reset_at, now), now)
    }

    /// With an expiry hook: remembers the policy's key under its fingerprint, for the hook.
    #[inline]
    fn remember(&self, hash: u64, policy: &Policy) {
        if self.hook.is_some() {
            let mut names = self.shard(hash).policies.lock();
            names.entry(policy.fingerprint()).or_insert_with(|| policy.key().into());
        }
    }
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
