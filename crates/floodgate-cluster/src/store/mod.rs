//! [`ClusterStore`]: decides locally on G-Counters, remembers what changed for replication, merges what peers
//! send.

use std::hash::BuildHasher;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use floodgate::algorithm::{self, Op, State, fixed_window::WindowState, sliding_window::SlidingState};
use floodgate::memory::ToKey;
use floodgate::{
    Algorithm, BucketInfo, Clock, Decision, Policy, Store, StoreError, StoreResult, SystemClock, Timestamp,
};
use hashbrown::HashTable;
use parking_lot::{Mutex, RwLock};
use std::collections::HashMap;

use crate::counter::{ClusterStoreError, check_policy};

mod decide;
mod replication;
mod windows;

use decide::{Write, decide};
use replication::Dirty;
pub use replication::{KeyCounts, MergeOutcome};
use windows::{Counter, IdEntry, OWN, dead, kind_of};

/// Bounds on what a store accepts from peers. The defaults suit most clusters.
///
/// ```
/// let limits = floodgate_cluster::StoreLimits::default();
/// assert_eq!(limits.max_nodes_per_key, 64);
/// ```
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct StoreLimits {
    /// The most node entries one window counter holds (more are refused).
    pub max_nodes_per_key: usize,
    /// The most distinct node ids the store ever learns (more are refused).
    pub max_nodes: usize,
    /// The longest id accepted from a peer, in bytes.
    pub max_id_len: usize,
    /// How far past the end of the current window a peer's window may start (clock skew allowance).
    pub max_future: Duration,
    /// How long a window's counts are kept after they stop mattering (a sliding window's second window ends).
    pub grace: Duration,
}

impl Default for StoreLimits {
    fn default() -> Self {
        StoreLimits {
            max_nodes_per_key: 64,
            max_nodes: 4096,
            max_id_len: 4096,
            max_future: Duration::from_secs(60),
            grace: Duration::from_secs(5),
        }
    }
}

/// A policy at a window length, as peers name it: the policy's key and the window length (µs).
pub(super) struct Kind {
    pub(super) policy: Arc<str>,
    pub(super) window_us: u64,
}

/// One shard: its ids, the windows it changed since replication last took them (each listed once: a window
/// already listed costs the hit path one bit test), and the names of the kinds its counters use.
#[derive(Default)]
struct Table {
    map: HashTable<IdEntry>,
    dirty: Vec<Dirty>,
    kinds: HashMap<u64, Kind>,
}

#[repr(align(64))]
struct Shard {
    table: Mutex<Table>,
}

/// Node ids by index; this node is index 0.
struct Nodes {
    names: Vec<Arc<str>>,
    index: HashMap<Arc<str>, u32>,
}

/// Counts kept by the store itself.
#[derive(Debug, Default)]
pub(crate) struct StoreCounters {
    pub(crate) unavailable_hits: AtomicU64,
}

struct Inner {
    shards: Box<[Shard]>,
    shard_mask: u64,
    hasher: foldhash::fast::FixedState,
    clock: Arc<dyn Clock>,
    /// A copy of `clock` when it is the [`SystemClock`], read without a virtual call on the hit path.
    system_clock: Option<SystemClock>,
    /// [`StoreLimits::grace`] in µs.
    grace_us: u64,
    nodes: RwLock<Nodes>,
    ready: AtomicBool,
    /// While above 1, each node admits at most `limit / split_divisor` of its own hits per window (see
    /// [`ClusterStore::set_split_divisor`]).
    split_divisor: AtomicU64,
    limits: StoreLimits,
    counters: StoreCounters,
}

/// The cluster [`Store`]: every decision is local (a shard lock, no network), on window counters that are
/// G-Counters, so that replicas merge by per-node maximum. Clones share one store.
///
/// Supports [`Algorithm::FixedWindow`] and [`Algorithm::SlidingWindow`]; every other algorithm is refused with
/// [`ClusterStoreError::UnsupportedAlgorithm`] (as [`StoreError::Backend`] through the [`Store`] trait).
///
/// ```
/// use floodgate::{ManualClock, Policy, Timestamp};
/// use floodgate_cluster::ClusterStore;
/// use std::time::Duration;
///
/// let clock = ManualClock::new(Timestamp::from_secs(1_000));
/// let a = ClusterStore::builder().node_id("a").clock(clock.clone()).build();
/// let b = ClusterStore::builder().node_id("b").clock(clock).build();
/// let p = Policy::fixed_window(3, Duration::from_secs(10))?;
/// assert!(a.hit_sync(b"k", &p, 2)?.allowed);
/// // Replication: a's changed entries merged into b.
/// for entry in a.take_dirty() {
///     b.merge(&entry, || true);
/// }
/// assert_eq!(b.hit_sync(b"k", &p, 1)?.remaining, 0);
/// assert!(!b.hit_sync(b"k", &p, 1)?.allowed);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct ClusterStore {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for ClusterStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterStore").field("node_id", &self.node_id()).field("ready", &self.is_ready()).finish()
    }
}

/// Builds a [`ClusterStore`].
///
/// ```
/// use floodgate_cluster::{ClusterStore, StoreLimits};
/// let store = ClusterStore::builder().node_id("n1").shards(8).limits(StoreLimits::default()).build();
/// assert_eq!(&*store.node_id(), "n1");
/// ```
pub struct ClusterStoreBuilder {
    node_id: Option<String>,
    clock: Option<Arc<dyn Clock>>,
    shards: Option<usize>,
    limits: StoreLimits,
}

impl ClusterStoreBuilder {
    /// This node's id (default: a random one).
    pub fn node_id(mut self, id: impl Into<String>) -> Self {
        self.node_id = Some(id.into());
        self
    }

    /// The time source (default: [`SystemClock`]).
    pub fn clock(mut self, clock: impl Clock) -> Self {
        self.clock = Some(Arc::new(clock));
        self
    }

    /// The time source, shared.
    pub fn shared_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = Some(clock);
        self
    }

    /// The number of shards, rounded up to a power of two (default: 16 per core, at least 64).
    pub fn shards(mut self, shards: usize) -> Self {
        self.shards = Some(shards);
        self
    }

    /// Bounds on what peers may send.
    pub fn limits(mut self, limits: StoreLimits) -> Self {
        self.limits = limits;
        self
    }

    /// Builds the store; it answers at once (a cluster node holds it until its first sync).
    pub fn build(self) -> ClusterStore {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let n = self.shards.unwrap_or((cores * 16).max(64)).clamp(1, 1 << 16).next_power_of_two();
        let own: Arc<str> = self.node_id.unwrap_or_else(random_node_id).into();
        let mut index = HashMap::new();
        index.insert(own.clone(), OWN);
        let clock = self.clock.unwrap_or_else(|| Arc::new(SystemClock::new()));
        ClusterStore {
            inner: Arc::new(Inner {
                shards: (0..n).map(|_| Shard { table: Mutex::new(Table::default()) }).collect(),
                shard_mask: (n - 1) as u64,
                hasher: foldhash::fast::FixedState::with_seed(random_u64()),
                system_clock: (&*clock as &dyn std::any::Any).downcast_ref::<SystemClock>().cloned(),
                clock,
                grace_us: duration_us(self.limits.grace),
                nodes: RwLock::new(Nodes { names: vec![own], index }),
                ready: AtomicBool::new(true),
                split_divisor: AtomicU64::new(1),
                limits: self.limits,
                counters: StoreCounters::default(),
            }),
        }
    }
}

/// 64 random bits from the OS (a fixed value if it has none to give).
pub(crate) fn random_u64() -> u64 {
    let mut b = [0u8; 8];
    match getrandom::fill(&mut b) {
        Ok(()) => u64::from_le_bytes(b),
        Err(_) => 0x9e37_79b9_7f4a_7c15 ^ Timestamp::now_system().as_micros(),
    }
}

/// A random node id: `node-` and 12 hex digits.
pub fn random_node_id() -> String {
    format!("node-{:012x}", random_u64() & 0xffff_ffff_ffff)
}

impl Default for ClusterStore {
    fn default() -> Self {
        Self::builder().build()
    }
}

impl ClusterStore {
    /// A builder.
    pub fn builder() -> ClusterStoreBuilder {
        ClusterStoreBuilder { node_id: None, clock: None, shards: None, limits: StoreLimits::default() }
    }

    /// This node's id.
    pub fn node_id(&self) -> Arc<str> {
        self.inner.nodes.read().names[OWN as usize].clone()
    }

    /// The store's clock.
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.inner.clock
    }

    /// Whether the store answers hits (false while a joining node waits for its first sync).
    pub fn is_ready(&self) -> bool {
        self.inner.ready.load(Ordering::Acquire)
    }

    /// Opens (`true`) or holds (`false`) the gate on hits: a cluster node holds it until the
    /// node's first sync with a peer is done or its sync timeout passes. While held, every call but
    /// `inspect` and `delete_buckets` fails with [`StoreError::Unavailable`].
    pub fn set_ready(&self, ready: bool) {
        self.inner.ready.store(ready, Ordering::Release);
    }

    /// The split limit (`PartitionMode::SplitLimit`): while `nodes` is above 1, this node admits at most
    /// `limit / nodes` (rounded down, at least 1) of its *own* hits per window, on top of the usual check of
    /// the cluster-wide total, so that `nodes` nodes cut off from each other admit at most about `limit` in
    /// all. A node sets it to the expected cluster size while peers are missing, and back to 1 when all are up.
    ///
    /// ```
    /// use floodgate::{ManualClock, Policy, Timestamp};
    /// use floodgate_cluster::ClusterStore;
    /// use std::time::Duration;
    ///
    /// let store = ClusterStore::builder().clock(ManualClock::new(Timestamp::from_secs(100))).build();
    /// store.set_split_divisor(3);
    /// let p = Policy::fixed_window(30, Duration::from_secs(60))?;
    /// let admitted = (0..30).filter(|_| store.hit_sync(b"k", &p, 1).is_ok_and(|d| d.allowed)).count();
    /// assert_eq!(admitted, 10);
    /// # Ok::<(), floodgate::PolicyError>(())
    /// ```
    pub fn set_split_divisor(&self, nodes: u64) {
        self.inner.split_divisor.store(nodes.max(1), Ordering::Relaxed);
    }

    /// The split limit's divisor in force (1: none).
    pub fn split_divisor(&self) -> u64 {
        self.inner.split_divisor.load(Ordering::Relaxed)
    }

    /// Hits refused because the store was not ready.
    pub fn unavailable_hits(&self) -> u64 {
        self.inner.counters.unavailable_hits.load(Ordering::Relaxed)
    }

    /// The limits in force.
    pub fn limits(&self) -> &StoreLimits {
        &self.inner.limits
    }

    /// [`Store::hit`] without a future: admits `cost` units if they fit.
    ///
    /// Always inlined, down to the algorithm, as the memory store's is: the work that waits on the id's entry
    /// (a cache miss when ids are many) is then only what the caller uses.
    #[inline(always)]
    pub fn hit_sync(&self, id: &[u8], policy: &Policy, cost: u64) -> Result<Decision, ClusterStoreError> {
        check_policy(policy)?;
        let inner = &*self.inner;
        // The clock is read after the id is hashed, as the memory store does: reading it first keeps the CPU
        // from loading the id in the shadow of the previous call.
        let hash = inner.hasher.hash_one(id);
        let now = inner.now();
        inner.apply(id, hash, policy, Op::Hit, cost, now)
    }

    /// Applies `op` with `cost` for `id` at `now` (µs): the store's synchronous entry point.
    pub fn apply_at(
        &self,
        id: &[u8],
        policy: &Policy,
        op: Op,
        cost: u64,
        now: u64,
    ) -> Result<Decision, ClusterStoreError> {
        check_policy(policy)?;
        let hash = self.inner.hasher.hash_one(id);
        self.inner.apply(id, hash, policy, op, cost, now)
    }

    /// What [`Store::inspect`] reports, at `now` (µs).
    pub fn inspect_at(&self, id: &[u8], policy: &Policy, now: u64) -> Result<Option<BucketInfo>, ClusterStoreError> {
        check_policy(policy)?;
        let inner = &*self.inner;
        let hash = inner.hasher.hash_one(id);
        let table = inner.shard(hash).table.lock();
        let w = policy.window_micros();
        let kind = kind_of(policy.fingerprint(), w);
        let Some(c) = table.map.find(hash, |e| id.is_key(&e.id)).and_then(|e| e.counter(kind)) else {
            return Ok(None);
        };
        let s = now - now % w;
        let state = if policy.algorithm() == Algorithm::SlidingWindow {
            State::Sliding(SlidingState { start: s, cur: c.total(s), prev: c.total(s.saturating_sub(w)) })
        } else {
            State::Window(WindowState { start: s, count: c.total(s) })
        };
        let t = Timestamp::from_micros(now);
        Ok(algorithm::inspect(&state, policy, t).map(|u| BucketInfo {
            used: u.used,
            remaining: u.remaining,
            reset_after: u.reset_after,
            next_window_after: u.next_window_after,
            created: Timestamp::from_micros(c.created),
            updated: Timestamp::from_micros(c.updated),
            expires_at: t + u.reset_after,
        }))
    }

    /// Forgets every counter of `id` on this node, and returns how many were live. Peers keep their copies, and
    /// a later sync brings their entries back: deletion is local (a G-Counter cannot be lowered).
    pub fn delete_at(&self, id: &[u8], now: u64) -> u64 {
        let inner = &*self.inner;
        let hash = inner.hasher.hash_one(id);
        let mut table = inner.shard(hash).table.lock();
        let Table { map, kinds, .. } = &mut *table;
        match map.find_entry(hash, |e| id.is_key(&e.id)) {
            Ok(e) => {
                let (e, _) = e.remove();
                let live = |c: &Counter| {
                    let span = if c.sliding { 2 } else { 1 };
                    let w = kinds.get(&c.kind()).map_or(0, |k| k.window_us);
                    c.starts().iter().any(|&s| c.total(s) > 0 && s.saturating_add(w.saturating_mul(span)) > now)
                };
                e.counters().filter(|c| live(c)).count() as u64
            }
            Err(_) => 0,
        }
    }

    /// How many (id, policy) counters the store holds.
    pub fn len(&self) -> usize {
        self.inner.shards.iter().map(|s| s.table.lock().map.iter().map(|e| e.counters().count()).sum::<usize>()).sum()
    }

    /// Whether the store holds no counter.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn gate(&self) -> StoreResult<()> {
        if self.is_ready() {
            Ok(())
        } else {
            self.inner.counters.unavailable_hits.fetch_add(1, Ordering::Relaxed);
            Err(StoreError::Unavailable("the cluster node has not finished its first sync with a peer".into()))
        }
    }

    fn call(&self, id: &[u8], policy: &Policy, op: Op, cost: u64) -> StoreResult<Decision> {
        self.gate()?;
        let now = self.inner.now();
        Ok(self.apply_at(id, policy, op, cost, now)?)
    }
}

impl Inner {
    #[inline]
    fn shard(&self, hash: u64) -> &Shard {
        &self.shards[((hash >> 48) & self.shard_mask) as usize]
    }

    /// The clock's time (µs), with no virtual call for the [`SystemClock`].
    #[inline(always)]
    fn now(&self) -> u64 {
        match &self.system_clock {
            Some(clock) => clock.now().as_micros(),
            None => self.clock.now().as_micros(),
        }
    }

    /// Applies `op` for `id` (whose hash is `hash`) at `now`: one lookup, and the usual call finds its id and
    /// counter and writes in place.
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    fn apply(
        &self,
        id: &[u8],
        hash: u64,
        policy: &Policy,
        op: Op,
        cost: u64,
        now: u64,
    ) -> Result<Decision, ClusterStoreError> {
        let split = if op == Op::Hit { self.split_divisor.load(Ordering::Relaxed) } else { 1 };
        let mut guard = self.shard(hash).table.lock();
        let Table { map, dirty, kinds } = &mut *guard;
        let kind = kind_of(policy.fingerprint(), policy.window_micros());
        let Some(entry) = map.find_mut(hash, |e| id.is_key(&e.id)) else {
            let (decision, write) = decide(None, policy, op, cost, now, split)?;
            if let Some(write) = write {
                self.insert_own(map, dirty, kinds, hash, id, kind, policy, write, now);
            }
            return Ok(decision);
        };
        if let Some(c) = entry.counter_mut(kind) {
            let (decision, write) = decide(Some(c), policy, op, cost, now, split)?;
            if let Some(write) = write
                && let Some(start) = self.write_own(c, policy, write, now)
            {
                dirty.push(Dirty { id: entry.id.clone(), hash, kind, start });
            }
            return Ok(decision);
        }
        let (decision, write) = decide(None, policy, op, cost, now, split)?;
        if let Some(write) = write {
            name_kind(kinds, kind, policy);
            let c = entry.push(Counter::new(kind, now));
            if let Some(start) = self.write_own(c, policy, write, now) {
                dirty.push(Dirty { id: entry.id.clone(), hash, kind, start });
            }
        }
        Ok(decision)
    }

    /// Adds a write's units to this node's entry in `counter`; returns the window to list for replication,
    /// unless it is listed already.
    #[inline(always)]
    fn write_own(&self, counter: &mut Counter, policy: &Policy, write: Write, now: u64) -> Option<u64> {
        // Only `updated` and the count are written on every hit (both in the entry's first cache line); the
        // rest is written when it changes, once a window at most.
        if write.fresh {
            counter.created = now;
        }
        counter.updated = now;
        if write.start > counter.own_start {
            counter.own_start = write.start;
        }
        let sliding = policy.algorithm() == Algorithm::SlidingWindow;
        if counter.sliding != sliding {
            counter.sliding = sliding;
        }
        // The usual hit: the latest window, in slot 0. Everything else is out of line, so that the hit path
        // stays short (measured at 100 000 ids: 1.45-1.51x the memory store's hit with the general case in
        // line, 1.09-1.23x without; see BENCHMARKS.md).
        let latest = &mut counter.slots[0];
        if latest.start == write.start && latest.own > 0 {
            latest.own = latest.own.saturating_add(write.delta);
            if counter.is_dirty(0) {
                return None;
            }
            counter.set_dirty(0, true);
            return Some(write.start);
        }
        self.write_elsewhere(counter, policy, write, now)
    }

    /// [`write_own`](Self::write_own) in a window other than the latest in line: a new window, an older one,
    /// or one out of line.
    #[cold]
    #[inline(never)]
    fn write_elsewhere(&self, counter: &mut Counter, policy: &Policy, write: Write, now: u64) -> Option<u64> {
        let (w, grace) = (policy.window_micros(), self.grace_us);
        match counter.add_own(write.start, write.delta, |s| dead(s, w, now, grace)) {
            Some(i) if counter.is_dirty(i) => None,
            Some(i) => {
                counter.set_dirty(i, true);
                Some(write.start)
            }
            // Out of line (a window older than both slots): listed each time, a rare case.
            None => Some(write.start),
        }
    }

    /// A write for an id the store does not hold.
    #[cold]
    #[inline(never)]
    #[allow(clippy::too_many_arguments)]
    fn insert_own(
        &self,
        map: &mut HashTable<IdEntry>,
        dirty: &mut Vec<Dirty>,
        kinds: &mut HashMap<u64, Kind>,
        hash: u64,
        id: &[u8],
        kind: u64,
        policy: &Policy,
        write: Write,
        now: u64,
    ) {
        name_kind(kinds, kind, policy);
        let entry = IdEntry::new(id.to_key(), Counter::new(kind, now));
        let entry = map.insert_unique(hash, entry, |e| self.hasher.hash_one(&*e.id)).into_mut();
        if let Some(start) = self.write_own(&mut entry.first, policy, write, now) {
            dirty.push(Dirty { id: entry.id.clone(), hash, kind, start });
        }
    }
}

/// Remembers the name of `kind` (the policy's key and window length) for replication.
fn name_kind(kinds: &mut HashMap<u64, Kind>, kind: u64, policy: &Policy) {
    kinds.entry(kind).or_insert_with(|| Kind { policy: policy.key().into(), window_us: policy.window_micros() });
}

pub(crate) fn duration_us(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

impl Store for ClusterStore {
    async fn hit(&self, id: &[u8], policy: &Policy, cost: u64) -> StoreResult<Decision> {
        self.call(id, policy, Op::Hit, cost)
    }

    async fn inc(&self, id: &[u8], policy: &Policy, cost: u64) -> StoreResult<Decision> {
        self.call(id, policy, Op::Force, cost)
    }

    async fn set(&self, id: &[u8], policy: &Policy, used: u64) -> StoreResult<Decision> {
        self.call(id, policy, Op::Set, used)
    }

    async fn inspect(&self, id: &[u8], policy: &Policy) -> StoreResult<Option<BucketInfo>> {
        let now = self.inner.clock.now().as_micros();
        Ok(self.inspect_at(id, policy, now)?)
    }

    async fn delete_buckets(&self, id: &[u8]) -> StoreResult<u64> {
        let now = self.inner.clock.now().as_micros();
        Ok(self.delete_at(id, now))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use floodgate::ManualClock;

    #[test]
    fn the_system_clock_is_read_without_a_virtual_call_and_no_other() {
        assert!(ClusterStore::builder().build().inner.system_clock.is_some());
        assert!(ClusterStore::builder().clock(SystemClock::new()).build().inner.system_clock.is_some());
        let manual = ClusterStore::builder().clock(ManualClock::new(Timestamp::from_secs(5))).build();
        assert!(manual.inner.system_clock.is_none());
        assert_eq!(manual.inner.now(), 5_000_000);
    }
}
