//! [`ClusterStore`]: decides locally on G-Counters, remembers what changed for replication, merges what peers
//! send.

use std::hash::BuildHasher;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use floodgate::algorithm::{self, Op, State, fixed_window::WindowState, sliding_window::SlidingState};
use floodgate::memory::{ByteKey, ToKey};
use floodgate::{
    Algorithm, BucketInfo, Clock, Decision, Policy, Store, StoreError, StoreResult, SystemClock, Timestamp,
};
use hashbrown::HashTable;
use parking_lot::{Mutex, RwLock};
use smallvec::SmallVec;
use std::collections::HashMap;

use crate::counter::{ClusterStoreError, EntryKey, GCounter, check_policy};

/// The node index of this node's own entries.
const OWN: u32 = 0;

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

/// One window of one counter.
#[derive(Debug)]
struct Window {
    window_us: u64,
    start: u64,
    counts: GCounter,
    /// Whether this node's own entry changed since replication last took it.
    /// The shard's dirty generation in which this window's own entry was listed for replication: it waits
    /// there while that generation is the shard's current one.
    dirty: u32,
}

/// The counters of one id under one policy key.
#[derive(Debug)]
struct Counter {
    policy: Arc<str>,
    fingerprint: u64,
    windows: SmallVec<[Window; 2]>,
    created: u64,
    updated: u64,
    /// The latest window this node counted in (a clock that steps back stands still there).
    own_start: u64,
    /// Whether the last local call was a sliding window (its counts matter for two windows).
    sliding: bool,
}

impl Counter {
    fn total(&self, window_us: u64, start: u64) -> u64 {
        self.windows.iter().find(|w| w.window_us == window_us && w.start == start).map_or(0, |w| w.counts.total())
    }

    fn window_mut(&mut self, window_us: u64, start: u64) -> &mut Window {
        let i = match self.windows.iter().position(|w| w.window_us == window_us && w.start == start) {
            Some(i) => i,
            None => {
                self.windows.push(Window { window_us, start, counts: GCounter::default(), dirty: 0 });
                self.windows.len() - 1
            }
        };
        &mut self.windows[i]
    }

    fn live(&self, now: u64) -> bool {
        let span = if self.sliding { 2 } else { 1 };
        self.windows
            .iter()
            .any(|w| w.counts.total() > 0 && w.start.saturating_add(w.window_us.saturating_mul(span)) > now)
    }
}

fn dead(w: &Window, now: u64, grace: u64) -> bool {
    w.start.saturating_add(w.window_us.saturating_mul(2)).saturating_add(grace) <= now
}

struct IdEntry {
    /// Inline up to 24 bytes, as the memory store keeps its keys.
    id: ByteKey,
    counters: SmallVec<[Counter; 1]>,
}

/// A key whose own entry changed (with the id's hash, so replication need not hash it again).
struct Dirty {
    id: ByteKey,
    hash: u64,
    policy: Arc<str>,
    window_us: u64,
    start: u64,
}

/// The keys a shard changed since replication last took them. Replication takes the list and moves to the
/// next generation; a window listed in the current generation is not listed again, so the hit path does no
/// more than compare two numbers for a key already listed.
struct DirtyList {
    generation: u32,
    list: Vec<Dirty>,
}

impl Default for DirtyList {
    fn default() -> Self {
        DirtyList { generation: 1, list: Vec::new() }
    }
}

#[derive(Default)]
struct Table {
    map: HashTable<IdEntry>,
    dirty: DirtyList,
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

/// One counter as replication sends it: its key and node entries (node id, count).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyCounts {
    /// Which counter.
    pub key: EntryKey,
    /// Node id and that node's count.
    pub counts: Vec<(Arc<str>, u64)>,
}

/// What a [`ClusterStore::merge`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MergeOutcome {
    /// Entries that raised a count.
    pub applied: u64,
    /// Entries that changed nothing (duplicates, older copies, windows already over).
    pub unchanged: u64,
    /// Entries refused (bounds, budget, malformed key).
    pub refused: u64,
    /// Whether the merge created a counter the store did not hold.
    pub created: bool,
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
        ClusterStore {
            inner: Arc::new(Inner {
                shards: (0..n).map(|_| Shard { table: Mutex::new(Table::default()) }).collect(),
                shard_mask: (n - 1) as u64,
                hasher: foldhash::fast::FixedState::with_seed(random_u64()),
                clock: self.clock.unwrap_or_else(|| Arc::new(SystemClock::new())),
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
    #[inline]
    pub fn hit_sync(&self, id: &[u8], policy: &Policy, cost: u64) -> Result<Decision, ClusterStoreError> {
        let now = self.inner.clock.now().as_micros();
        self.apply_at(id, policy, Op::Hit, cost, now)
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
        let inner = &*self.inner;
        let split = if op == Op::Hit { inner.split_divisor.load(Ordering::Relaxed) } else { 1 };
        let hash = inner.hasher.hash_one(id);
        let mut guard = inner.shard(hash).table.lock();
        let Table { map, dirty } = &mut *guard;
        let fp = policy.fingerprint();
        // One lookup: the usual call finds its id and counter and writes in place.
        if let Some(entry) = map.find_mut(hash, |e| id.is_key(&e.id)) {
            let IdEntry { id: key, counters } = entry;
            if let Some(c) = counters.iter_mut().find(|c| c.fingerprint == fp) {
                let (decision, write) = decide(Some(c), policy, op, cost, now, split)?;
                if let Some(write) = write {
                    inner.write_own(c, key, hash, dirty, policy, write, now);
                }
                return Ok(decision);
            }
            let (decision, write) = decide(None, policy, op, cost, now, split)?;
            if let Some(write) = write {
                counters.push(Counter::new(policy.key().into(), fp, now));
                let last = counters.len() - 1;
                inner.write_own(&mut counters[last], key, hash, dirty, policy, write, now);
            }
            return Ok(decision);
        }
        let (decision, write) = decide(None, policy, op, cost, now, split)?;
        if let Some(write) = write {
            inner.insert_own(map, dirty, hash, id, policy, write, now);
        }
        Ok(decision)
    }

    /// What [`Store::inspect`] reports, at `now` (µs).
    pub fn inspect_at(&self, id: &[u8], policy: &Policy, now: u64) -> Result<Option<BucketInfo>, ClusterStoreError> {
        check_policy(policy)?;
        let inner = &*self.inner;
        let hash = inner.hasher.hash_one(id);
        let table = inner.shard(hash).table.lock();
        let fp = policy.fingerprint();
        let Some(c) =
            table.map.find(hash, |e| id.is_key(&e.id)).and_then(|e| e.counters.iter().find(|c| c.fingerprint == fp))
        else {
            return Ok(None);
        };
        let w = policy.window_micros();
        let s = now - now % w;
        let state = if policy.algorithm() == Algorithm::SlidingWindow {
            State::Sliding(SlidingState { start: s, cur: c.total(w, s), prev: c.total(w, s.saturating_sub(w)) })
        } else {
            State::Window(WindowState { start: s, count: c.total(w, s) })
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
        match table.map.find_entry(hash, |e| id.is_key(&e.id)) {
            Ok(e) => {
                let (e, _) = e.remove();
                e.counters.iter().filter(|c| c.live(now)).count() as u64
            }
            Err(_) => 0,
        }
    }

    /// Takes the keys whose own entry changed since the last call, each once (coalesced), with this node's
    /// current entry: what replication sends.
    pub fn take_dirty(&self) -> Vec<KeyCounts> {
        let own = self.node_id();
        let mut out = Vec::new();
        for shard in self.inner.shards.iter() {
            let mut table = shard.table.lock();
            let Table { map, dirty } = &mut *table;
            // Generation 0 is never current: a new window's 0 is not listed.
            dirty.generation = dirty.generation.checked_add(1).unwrap_or(1);
            for d in std::mem::take(&mut dirty.list) {
                let count = map
                    .find(d.hash, |e| d.id[..].is_key(&e.id))
                    .and_then(|e| e.counters.iter().find(|c| c.policy == d.policy))
                    .and_then(|c| c.windows.iter().find(|w| w.window_us == d.window_us && w.start == d.start))
                    .map(|w| w.counts.get(OWN));
                // A window deleted or dropped since has nothing to send.
                if let Some(count) = count {
                    out.push(KeyCounts {
                        key: EntryKey { policy: d.policy, window_us: d.window_us, start: d.start, id: d.id[..].into() },
                        counts: vec![(own.clone(), count)],
                    });
                }
            }
        }
        out
    }

    /// Every live counter with every node's entry: what a node sends a peer when their link comes up.
    pub fn snapshot(&self) -> Vec<KeyCounts> {
        let now = self.inner.clock.now().as_micros();
        let grace = duration_us(self.inner.limits.grace);
        let names = self.inner.nodes.read().names.clone();
        let mut out = Vec::new();
        for shard in self.inner.shards.iter() {
            let table = shard.table.lock();
            for e in table.map.iter() {
                for c in &e.counters {
                    for w in c.windows.iter().filter(|w| !dead(w, now, grace) && w.counts.total() > 0) {
                        out.push(KeyCounts {
                            key: EntryKey {
                                policy: c.policy.clone(),
                                window_us: w.window_us,
                                start: w.start,
                                id: e.id[..].into(),
                            },
                            counts: w
                                .counts
                                .entries()
                                .filter_map(|(n, count)| names.get(n as usize).map(|name| (name.clone(), count)))
                                .collect(),
                        });
                    }
                }
            }
        }
        out
    }

    /// Merges a peer's entries for one counter (per-node maximum). `may_create` is asked before a counter the
    /// store does not hold is created (the per-peer budget); when it says no, the entries are refused.
    pub fn merge(&self, entry: &KeyCounts, may_create: impl FnOnce() -> bool) -> MergeOutcome {
        let inner = &*self.inner;
        let limits = &inner.limits;
        let mut out = MergeOutcome::default();
        let n = entry.counts.len() as u64;
        let key = &entry.key;
        let now = inner.clock.now().as_micros();
        let w = key.window_us;
        let max_window = floodgate::Policy::MAX_WINDOW.as_micros() as u64;
        let valid = w > 0
            && w <= max_window
            && key.start.is_multiple_of(w)
            && key.id.len() <= limits.max_id_len
            && key.policy.len() <= 1024
            && entry.counts.len() <= limits.max_nodes_per_key;
        if !valid {
            out.refused = n;
            return out;
        }
        let horizon = (now - now % w).saturating_add(w).saturating_add(duration_us(limits.max_future));
        if key.start > horizon {
            out.refused = n;
            return out;
        }
        if dead(
            &Window { window_us: w, start: key.start, counts: GCounter::default(), dirty: 0 },
            now,
            duration_us(limits.grace),
        ) {
            out.unchanged = n;
            return out;
        }
        // Node ids to indices (learning new ones within the bound).
        let mut nodes: SmallVec<[(u32, u64); 4]> = SmallVec::new();
        for (name, count) in &entry.counts {
            match inner.node_index(name) {
                Some(i) => nodes.push((i, *count)),
                None => out.refused += 1,
            }
        }
        let hash = inner.hasher.hash_one(&*key.id);
        let mut table = inner.shard(hash).table.lock();
        let table = &mut *table;
        let exists = table
            .map
            .find(hash, |e| key.id[..].is_key(&e.id))
            .is_some_and(|e| e.counters.iter().any(|c| c.policy == key.policy));
        if !exists {
            if nodes.iter().all(|&(_, c)| c == 0) {
                out.unchanged += nodes.len() as u64;
                return out;
            }
            if !may_create() {
                out.refused += nodes.len() as u64;
                return out;
            }
            out.created = true;
        }
        let counter = match table.map.find_mut(hash, |e| key.id[..].is_key(&e.id)) {
            Some(e) => match e.counters.iter().position(|c| c.policy == key.policy) {
                Some(i) => &mut e.counters[i],
                None => {
                    e.counters.push(Counter::new(key.policy.clone(), policy_fingerprint(&key.policy), now));
                    let last = e.counters.len() - 1;
                    &mut e.counters[last]
                }
            },
            None => {
                let counters =
                    smallvec::smallvec![Counter::new(key.policy.clone(), policy_fingerprint(&key.policy), now)];
                let e = table.map.insert_unique(hash, IdEntry { id: key.id[..].to_key(), counters }, |e| {
                    inner.hasher.hash_one(&*e.id)
                });
                &mut e.into_mut().counters[0]
            }
        };
        let win = counter.window_mut(w, key.start);
        let mut changed = false;
        for (i, c) in nodes {
            if win.counts.get(i) == 0 && win.counts.nodes() >= limits.max_nodes_per_key {
                out.refused += 1;
            } else if win.counts.raise(i, c) {
                out.applied += 1;
                changed = true;
            } else {
                out.unchanged += 1;
            }
        }
        if changed {
            counter.updated = counter.updated.max(now);
        }
        out
    }

    /// Drops windows whose counts no longer matter (their window, and the sliding window after it, ended more
    /// than the grace period ago) and counters left empty; returns how many windows were dropped.
    pub fn sweep(&self) -> usize {
        let now = self.inner.clock.now().as_micros();
        let grace = duration_us(self.inner.limits.grace);
        let mut dropped = 0;
        for shard in self.inner.shards.iter() {
            let mut table = shard.table.lock();
            table.map.retain(|e| {
                e.counters.retain(|c| {
                    let before = c.windows.len();
                    c.windows.retain(|w| !dead(w, now, grace));
                    dropped += before - c.windows.len();
                    !c.windows.is_empty()
                });
                !e.counters.is_empty()
            });
        }
        dropped
    }

    /// How many (id, policy) counters the store holds.
    pub fn len(&self) -> usize {
        self.inner.shards.iter().map(|s| s.table.lock().map.iter().map(|e| e.counters.len()).sum::<usize>()).sum()
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
        let now = self.inner.clock.now().as_micros();
        Ok(self.apply_at(id, policy, op, cost, now)?)
    }
}

/// What a call adds to this node's entry: `delta` units in the window that starts at `start`.
#[derive(Clone, Copy)]
struct Write {
    start: u64,
    delta: u64,
    /// Whether the counter counted nothing before (its `created` time restarts).
    fresh: bool,
}

/// Decides a call on a counter's totals with the core's algorithm (the state it would have had in one store),
/// and says what to add to this node's entry.
#[inline(always)]
fn decide(
    counter: Option<&Counter>,
    policy: &Policy,
    op: Op,
    cost: u64,
    now: u64,
    split: u64,
) -> Result<(Decision, Option<Write>), ClusterStoreError> {
    if split > 1
        && let Some(denied) = split_denial(counter, policy, cost, now, split)
    {
        return Ok((denied, None));
    }
    let sliding = policy.algorithm() == Algorithm::SlidingWindow;
    let w = policy.window_micros();
    let start_now = now - now % w;
    let (s, cur, prev) = match counter {
        Some(c) => {
            // A clock that stepped back stands still in the latest window this node counted in.
            let s = if c.own_start > start_now && c.own_start.is_multiple_of(w) { c.own_start } else { start_now };
            (s, c.total(w, s), if sliding { c.total(w, s.saturating_sub(w)) } else { 0 })
        }
        None => (start_now, 0, 0),
    };
    let mut state = if sliding {
        State::Sliding(SlidingState { start: s, cur, prev })
    } else {
        State::Window(WindowState { start: s, count: cur })
    };
    let decision = algorithm::apply(&mut state, policy, op, cost, Timestamp::from_micros(now));
    let (ns, ncur) = match state {
        State::Sliding(st) => (st.start, st.cur),
        State::Window(st) => (st.start, st.count),
        _ => (s, cur),
    };
    let before = if ns == s { cur } else { 0 };
    if ncur < before {
        return Err(ClusterStoreError::CannotLower { current: before, requested: ncur });
    }
    let write = (ncur > before).then_some(Write { start: ns, delta: ncur - before, fresh: before == 0 && prev == 0 });
    Ok((decision, write))
}

/// The split limit: decides `cost` on this node's own counts against `limit / split`; `Some(denial)` when it
/// does not fit. Off the usual path (only while peers are missing in `SplitLimit` mode).
#[cold]
fn split_denial(counter: Option<&Counter>, policy: &Policy, cost: u64, now: u64, split: u64) -> Option<Decision> {
    let cap = (policy.limit() / split).max(1);
    let capped = Policy::new(policy.algorithm(), cap, policy.window()).ok()?;
    let w = policy.window_micros();
    let s = now - now % w;
    let own = |start: u64| {
        counter
            .and_then(|c| c.windows.iter().find(|x| x.window_us == w && x.start == start))
            .map_or(0, |x| x.counts.get(OWN))
    };
    let mut state = if policy.algorithm() == Algorithm::SlidingWindow {
        State::Sliding(SlidingState { start: s, cur: own(s), prev: own(s.saturating_sub(w)) })
    } else {
        State::Window(WindowState { start: s, count: own(s) })
    };
    let d = algorithm::apply(&mut state, &capped, Op::Hit, cost, Timestamp::from_micros(now));
    (!d.allowed).then_some(d)
}

/// The fingerprint of a policy key received from a peer: the same as [`Policy::fingerprint`] would give.
fn policy_fingerprint(key: &str) -> u64 {
    use std::hash::BuildHasher as _;
    foldhash::fast::FixedState::with_seed(0x666c_6f6f_6467_6174).hash_one(key)
}

impl Counter {
    fn new(policy: Arc<str>, fingerprint: u64, now: u64) -> Self {
        Counter {
            policy,
            fingerprint,
            windows: SmallVec::new(),
            created: now,
            updated: now,
            own_start: 0,
            sliding: false,
        }
    }
}

impl Inner {
    #[inline]
    fn shard(&self, hash: u64) -> &Shard {
        &self.shards[((hash >> 48) & self.shard_mask) as usize]
    }

    /// Adds a write's units to this node's entry in `counter`, and marks the key dirty for replication.
    #[inline]
    #[allow(clippy::too_many_arguments)]
    fn write_own(
        &self,
        counter: &mut Counter,
        id: &ByteKey,
        hash: u64,
        dirty: &mut DirtyList,
        policy: &Policy,
        write: Write,
        now: u64,
    ) {
        if write.fresh {
            counter.created = now;
        }
        counter.updated = now;
        counter.own_start = counter.own_start.max(write.start);
        counter.sliding = policy.algorithm() == Algorithm::SlidingWindow;
        let w = policy.window_micros();
        if counter.windows.len() > 1 {
            let grace = duration_us(self.limits.grace);
            counter.windows.retain(|win| !dead(win, now, grace));
        }
        let win = counter.window_mut(w, write.start);
        win.counts.add(OWN, write.delta);
        if win.dirty != dirty.generation {
            win.dirty = dirty.generation;
            let policy = counter.policy.clone();
            dirty.list.push(Dirty { id: id.clone(), hash, policy, window_us: w, start: write.start });
        }
    }

    /// A write for an id the store does not hold.
    #[cold]
    #[allow(clippy::too_many_arguments)]
    fn insert_own(
        &self,
        map: &mut HashTable<IdEntry>,
        dirty: &mut DirtyList,
        hash: u64,
        id: &[u8],
        policy: &Policy,
        write: Write,
        now: u64,
    ) {
        let counters = smallvec::smallvec![Counter::new(policy.key().into(), policy.fingerprint(), now)];
        let entry = map.insert_unique(hash, IdEntry { id: id.to_key(), counters }, |e| self.hasher.hash_one(&*e.id));
        let IdEntry { id, counters } = entry.into_mut();
        self.write_own(&mut counters[0], id, hash, dirty, policy, write, now);
    }

    fn node_index(&self, name: &Arc<str>) -> Option<u32> {
        if let Some(&i) = self.nodes.read().index.get(name) {
            return Some(i);
        }
        let mut nodes = self.nodes.write();
        if let Some(&i) = nodes.index.get(name) {
            return Some(i);
        }
        if nodes.names.len() >= self.limits.max_nodes || name.is_empty() {
            return None;
        }
        let i = nodes.names.len() as u32;
        nodes.names.push(name.clone());
        nodes.index.insert(name.clone(), i);
        Some(i)
    }
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
