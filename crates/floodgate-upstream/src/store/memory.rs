//! The in-memory [`BucketStore`]: one mutex over a map, each call one short critical section.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use floodgate::{Clock, SystemClock, Timestamp};
use parking_lot::Mutex;

use super::{Acquire, BucketInfo, BucketStore, Lease, Report, StoreConfig, StoreResult, bucket_key};

/// The default store: in this process, with an injectable [`Clock`] so tests drive time by hand.
///
/// ```
/// use floodgate_upstream::store::{Acquire, BucketStore, MemoryStore, Report};
/// use std::time::Duration;
///
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// let store = MemoryStore::new();
/// // Unknown bucket: the first request is the pioneer, the next waits for its answer.
/// let Acquire::Now(pioneer) = store.timeout_for("GET /users").await? else { panic!() };
/// assert!(matches!(store.timeout_for("GET /users").await?, Acquire::Wait(_)));
/// store.record("GET /users", Some(&pioneer), &Report::remaining(1, Duration::from_secs(1))).await?;
/// assert!(matches!(store.timeout_for("GET /users").await?, Acquire::Now(_)));
/// assert!(matches!(store.timeout_for("GET /users").await?, Acquire::Wait(_)));
/// # Ok::<(), floodgate_upstream::store::StoreError>(())
/// # }).unwrap();
/// ```
pub struct MemoryStore {
    config: StoreConfig,
    clock: Arc<dyn Clock>,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    buckets: HashMap<String, State>,
    routes: HashMap<String, (String, Timestamp)>,
    global_log: VecDeque<Timestamp>,
    global_until: Option<Timestamp>,
    global_latency: Duration,
    next_lease: u64,
    /// Expired leases of the buckets dropped by cleanup.
    expired_dropped: u64,
}

struct State {
    known: bool,
    remaining: u64,
    limit: Option<u64>,
    reset_at: Option<Timestamp>,
    retry_until: Option<Timestamp>,
    latency: Duration,
    leases: HashMap<u64, Timestamp>,
    pioneer: Option<u64>,
    touched: Timestamp,
    /// The last lease id granted when the current window was recorded: an answer to a lease up to it is late.
    window_seq: u64,
    /// Leases of this bucket found expired.
    expired: u64,
}

impl State {
    fn new(now: Timestamp) -> State {
        State {
            known: false,
            remaining: 0,
            limit: None,
            reset_at: None,
            retry_until: None,
            latency: Duration::ZERO,
            leases: HashMap::new(),
            pioneer: None,
            touched: now,
            window_seq: 0,
            expired: 0,
        }
    }

    /// Expires leases past their timeout, and ends a window whose reset has passed.
    fn settle(&mut self, now: Timestamp) {
        let before = self.leases.len();
        self.leases.retain(|_, until| *until > now);
        self.expired += (before - self.leases.len()) as u64;
        if self.pioneer.is_some_and(|p| !self.leases.contains_key(&p)) {
            self.pioneer = None;
        }
        if self.retry_until.is_some_and(|t| t <= now) {
            self.retry_until = None;
        }
        if self.reset_at.is_some_and(|r| r <= now) {
            self.reset_at = None;
            match self.limit {
                Some(limit) => self.remaining = limit.saturating_sub(self.leases.len() as u64),
                None => self.known = false,
            }
        }
    }

    fn info(&self, key: &str, now: Timestamp, global_until: Option<Timestamp>) -> BucketInfo {
        let retry = [self.retry_until, global_until].into_iter().flatten().filter(|t| *t > now).max();
        BucketInfo {
            key: key.to_owned(),
            remaining: self.known.then_some(self.remaining),
            limit: self.limit,
            reset_after: self.reset_at.map(|r| r.saturating_duration_since(now)),
            retry_after: retry.map(|r| r.saturating_duration_since(now)),
            latency: self.latency,
            in_flight: self.leases.len() as u64,
        }
    }
}

/// A wait of at least a millisecond (a zero wait would spin).
fn wait(d: Duration) -> Acquire {
    Acquire::Wait(d.max(Duration::from_millis(1)))
}

impl MemoryStore {
    /// A store with the default configuration and the system clock.
    pub fn new() -> MemoryStore {
        MemoryStore::with_config(StoreConfig::default())
    }

    /// A store with `config` and the system clock.
    pub fn with_config(config: StoreConfig) -> MemoryStore {
        MemoryStore::with_clock(config, Arc::new(SystemClock::new()))
    }

    /// A store with `config` and `clock` (a [`floodgate::ManualClock`] for exact tests).
    pub fn with_clock(config: StoreConfig, clock: Arc<dyn Clock>) -> MemoryStore {
        MemoryStore { config, clock, inner: Mutex::new(Inner::default()) }
    }

    /// The configuration.
    pub fn config(&self) -> &StoreConfig {
        &self.config
    }
}

impl Default for MemoryStore {
    fn default() -> Self {
        MemoryStore::new()
    }
}

impl Inner {
    fn resolve(&self, route: &str, now: Timestamp) -> String {
        match self.routes.get(route) {
            Some((key, until)) if *until > now => key.clone(),
            _ => route.to_owned(),
        }
    }
}

#[async_trait]
impl BucketStore for MemoryStore {
    async fn lookup(&self, route: &str) -> StoreResult<Option<BucketInfo>> {
        let now = self.clock.now();
        let mut inner = self.inner.lock();
        let key = inner.resolve(route, now);
        let global_until = inner.global_until;
        Ok(inner.buckets.get_mut(&key).map(|st| {
            st.settle(now);
            st.info(&key, now, global_until)
        }))
    }

    async fn update(&self, route: &str, remaining: u64) -> StoreResult<()> {
        let now = self.clock.now();
        let mut inner = self.inner.lock();
        let key = inner.resolve(route, now);
        let st = inner.buckets.entry(key).or_insert_with(|| State::new(now));
        st.settle(now);
        st.known = true;
        st.remaining = remaining;
        st.touched = now;
        Ok(())
    }

    async fn update_full(
        &self,
        route: &str,
        remaining: u64,
        reset_after: Duration,
        latency: Duration,
    ) -> StoreResult<()> {
        let now = self.clock.now();
        let mut inner = self.inner.lock();
        let key = inner.resolve(route, now);
        let st = inner.buckets.entry(key).or_insert_with(|| State::new(now));
        st.settle(now);
        st.known = true;
        st.remaining = remaining;
        st.reset_at = Some(now + reset_after + latency);
        st.latency = latency;
        st.touched = now;
        Ok(())
    }

    async fn record(&self, route: &str, lease: Option<&Lease>, report: &Report) -> StoreResult<BucketInfo> {
        let now = self.clock.now();
        let mut guard = self.inner.lock();
        let inner = &mut *guard;
        if let Some(lease) = lease
            && let Some(st) = inner.buckets.get_mut(&lease.key)
        {
            st.leases.remove(&lease.id);
            if st.pioneer == Some(lease.id) {
                st.pioneer = None;
            }
        }
        let key = match &report.bucket {
            Some(bucket) => {
                let key = bucket_key(bucket, route);
                inner.routes.insert(route.to_owned(), (key.clone(), now + self.config.mapping_ttl));
                key
            }
            None => match lease {
                Some(lease) => lease.key.clone(),
                None => inner.resolve(route, now),
            },
        };
        let latency = report.latency;
        let seq = inner.next_lease;
        inner.global_latency = latency;
        if report.global
            && let Some(ra) = report.retry_after
        {
            let until = now + ra + latency;
            inner.global_until = Some(inner.global_until.map_or(until, |u| u.max(until)));
        }
        let st = inner.buckets.entry(key.clone()).or_insert_with(|| State::new(now));
        st.settle(now);
        st.latency = latency;
        st.touched = now;
        if !report.global
            && let Some(ra) = report.retry_after
        {
            let until = now + ra + latency;
            st.retry_until = Some(st.retry_until.map_or(until, |u| u.max(until)));
        }
        if let Some(limit) = report.limit {
            st.limit = Some(limit);
        }
        // An answer to a request granted before the current window was recorded is late: the window it counts
        // in (if not an earlier one) already counted that request in flight, so its remaining must not refill.
        let late = st.known && lease.is_some_and(|l| l.id <= st.window_seq);
        if let Some(remaining) = report.remaining
            && !late
        {
            let new_reset = report.reset_after.map(|r| now + r + latency);
            let same_window = match (st.reset_at, new_reset) {
                (Some(old), Some(new)) => {
                    old.max(new).saturating_duration_since(old.min(new)) <= self.config.window_tolerance
                }
                (Some(_), None) => true,
                _ => false,
            };
            if st.known && same_window {
                st.remaining = st.remaining.min(remaining);
                st.reset_at = match (st.reset_at, new_reset) {
                    (Some(a), Some(b)) => Some(a.max(b)),
                    (a, b) => a.or(b),
                };
            } else {
                st.remaining = remaining.saturating_sub(st.leases.len() as u64);
                st.reset_at = new_reset;
                st.window_seq = seq;
            }
            st.known = true;
        } else if report.remaining.is_none() && report.retry_after.is_none() && !st.known {
            // The upstream sent no limit: none is assumed until a window says otherwise.
            st.known = true;
            st.remaining = u64::MAX;
        }
        Ok(st.info(&key, now, inner.global_until))
    }

    async fn release(&self, lease: &Lease) -> StoreResult<()> {
        let mut inner = self.inner.lock();
        if let Some(st) = inner.buckets.get_mut(&lease.key) {
            st.leases.remove(&lease.id);
            if st.pioneer == Some(lease.id) {
                st.pioneer = None;
            }
        }
        Ok(())
    }

    async fn cleanup(&self, age: Duration) -> StoreResult<usize> {
        let now = self.clock.now();
        let mut inner = self.inner.lock();
        let before = inner.buckets.len();
        let mut expired_dropped = 0;
        inner.buckets.retain(|_, st| {
            st.settle(now);
            let keep = !st.leases.is_empty() || now.saturating_duration_since(st.touched) < age;
            if !keep {
                expired_dropped += st.expired;
            }
            keep
        });
        inner.expired_dropped += expired_dropped;
        inner.routes.retain(|_, (_, until)| *until > now);
        Ok(before - inner.buckets.len())
    }

    async fn leases_expired(&self) -> StoreResult<u64> {
        let now = self.clock.now();
        let mut inner = self.inner.lock();
        let mut n = inner.expired_dropped;
        for st in inner.buckets.values_mut() {
            st.settle(now);
            n += st.expired;
        }
        Ok(n)
    }

    async fn timeout_for(&self, route: &str) -> StoreResult<Acquire> {
        let now = self.clock.now();
        let exempt = self.config.is_exempt(route);
        let mut guard = self.inner.lock();
        let inner = &mut *guard;
        let key = inner.resolve(route, now);
        if inner.global_until.is_some_and(|t| t <= now) {
            inner.global_until = None;
        }
        let st = inner.buckets.entry(key.clone()).or_insert_with(|| State::new(now));
        st.settle(now);
        st.touched = now;
        if let Some(until) = st.retry_until {
            return Ok(wait(until.saturating_duration_since(now)));
        }
        let pioneer = !st.known;
        if pioneer {
            if let Some(p) = st.pioneer {
                let held = st.leases.get(&p).map_or(Duration::ZERO, |t| t.saturating_duration_since(now));
                return Ok(wait(held.min(self.config.poll)));
            }
        } else if st.remaining == 0 {
            let d = st.reset_at.map_or(self.config.poll, |r| r.saturating_duration_since(now));
            return Ok(wait(d));
        }
        if !exempt {
            if let Some(until) = inner.global_until {
                return Ok(wait(until.saturating_duration_since(now)));
            }
            if let Some(g) = self.config.global_limit {
                let span = g.per + inner.global_latency;
                while inner.global_log.front().is_some_and(|t| *t + span <= now) {
                    inner.global_log.pop_front();
                }
                if inner.global_log.len() as u64 >= g.limit {
                    let oldest = inner.global_log.front().copied().unwrap_or(now);
                    return Ok(wait((oldest + span).saturating_duration_since(now)));
                }
                inner.global_log.push_back(now);
            }
        }
        inner.next_lease += 1;
        let id = inner.next_lease;
        let st = inner.buckets.entry(key.clone()).or_insert_with(|| State::new(now));
        st.leases.insert(id, now + self.config.lease_timeout);
        if pioneer {
            st.pioneer = Some(id);
        } else {
            st.remaining = st.remaining.saturating_sub(1);
        }
        Ok(Acquire::Now(Lease { id, key }))
    }
}
