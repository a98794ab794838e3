//! [`Upstream`]: the facade callers use. Waits until a bucket allows (up to a bound), hands out a [`Permit`] whose
//! drop releases its place, and records responses. The server's `/v1/upstream/acquire` and `/v1/upstream/update`
//! map onto [`Upstream::acquire`] and [`Upstream::update`].

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use http::HeaderMap;
use tokio::sync::Notify;

use crate::headers::{self, Provider, SecondaryBackoff};
use crate::store::{Acquire, BucketStore, Lease, MemoryStore, Report, StoreError};

/// Why a caller could not be let through.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum UpstreamError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The bucket would not allow a request within the bound given; the caller may try again after this long.
    #[error("upstream bucket busy: next try in {0:?}")]
    WaitTooLong(Duration),
}

/// The answer of [`Upstream::acquire`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AcquireOutcome {
    /// True: send now (one was taken, held by `lease`). False: nothing was taken.
    pub go: bool,
    /// With `go`, how long the call waited; without, how long to wait before asking again.
    pub wait: Duration,
    /// The place taken, to hand back to [`Upstream::update`] (or [`Upstream::release`]); it expires after the
    /// store's lease timeout if never handed back.
    pub lease: Option<Lease>,
}

/// What a bucket looks like after a response was recorded.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BucketView {
    /// Requests left in the window as the store knows it (`None`: unknown; `u64::MAX`: no limit sent).
    pub remaining: Option<u64>,
    /// Time until the window resets, if known.
    pub reset_after: Option<Duration>,
    /// Time until a `Retry-After` is over, if one holds.
    pub retry_after: Option<Duration>,
}

/// Counters a user can read ([`Upstream::stats`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UpstreamStats {
    /// Requests granted.
    pub granted: u64,
    /// Grants that had to wait first.
    pub waited: u64,
    /// Total time spent waiting, over all grants.
    pub wait_time: Duration,
    /// Acquires given up at their bound.
    pub gave_up: u64,
    /// Responses recorded with status 429.
    pub rate_limited: u64,
    /// 429s retried (by the middleware).
    pub retries: u64,
}

#[derive(Default)]
struct Counters {
    granted: AtomicU64,
    waited: AtomicU64,
    wait_micros: AtomicU64,
    gave_up: AtomicU64,
    rate_limited: AtomicU64,
    retries: AtomicU64,
}

/// A handle on a [`BucketStore`]; clones share the store, the wake-ups and the counters.
///
/// ```
/// use floodgate_upstream::{Provider, Upstream};
/// use std::time::Duration;
///
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// let upstream = Upstream::in_memory();
/// let permit = upstream.permit("GET /users#42", Duration::from_secs(5)).await?;
/// // ... send the request, then record what came back:
/// let headers = floodgate_upstream::headers::header_map([("retry-after", "1")]);
/// let view = permit.finish(Provider::RetryAfter, 429, &headers).await?;
/// assert_eq!(view.retry_after.map(|d| d.as_secs()), Some(1));
/// assert_eq!(upstream.stats().rate_limited, 1);
/// # Ok::<(), floodgate_upstream::UpstreamError>(())
/// # }).unwrap();
/// ```
#[derive(Clone)]
pub struct Upstream {
    store: Arc<dyn BucketStore>,
    changed: Arc<Notify>,
    counters: Arc<Counters>,
    /// GitHub's exponential back-off for secondary limits that come back, per route (only routes backing off).
    backoff: Arc<parking_lot::Mutex<HashMap<String, SecondaryBackoff>>>,
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upstream").field("stats", &self.stats()).finish_non_exhaustive()
    }
}

/// The most store calls one acquire makes (each wait is at least a millisecond, and bounded by `max_wait`).
const MAX_ROUNDS: u32 = 100_000;

impl Upstream {
    /// Over `store`.
    pub fn new(store: impl BucketStore + 'static) -> Upstream {
        Upstream::from_arc(Arc::new(store))
    }

    /// Over a shared store.
    pub fn from_arc(store: Arc<dyn BucketStore>) -> Upstream {
        Upstream {
            store,
            changed: Arc::new(Notify::new()),
            counters: Arc::new(Counters::default()),
            backoff: Arc::default(),
        }
    }

    /// Over a default [`MemoryStore`].
    pub fn in_memory() -> Upstream {
        Upstream::new(MemoryStore::new())
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn BucketStore> {
        &self.store
    }

    /// The counters so far.
    pub fn stats(&self) -> UpstreamStats {
        let c = &self.counters;
        UpstreamStats {
            granted: c.granted.load(Ordering::Relaxed),
            waited: c.waited.load(Ordering::Relaxed),
            wait_time: Duration::from_micros(c.wait_micros.load(Ordering::Relaxed)),
            gave_up: c.gave_up.load(Ordering::Relaxed),
            rate_limited: c.rate_limited.load(Ordering::Relaxed),
            retries: c.retries.load(Ordering::Relaxed),
        }
    }

    #[cfg_attr(not(feature = "reqwest"), allow(dead_code))]
    pub(crate) fn count_retry(&self) {
        self.counters.retries.fetch_add(1, Ordering::Relaxed);
    }

    /// Waits until `route`'s bucket (and the global limit) lets one request through, for at most `max_wait`.
    /// Wakes early when this handle records a response. `go: false` (nothing taken) when the wait would be
    /// longer, with how long to wait before asking again.
    pub async fn acquire(&self, route: &str, max_wait: Duration) -> Result<AcquireOutcome, UpstreamError> {
        let start = Instant::now();
        for _ in 0..MAX_ROUNDS {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let waited = start.elapsed();
            match self.store.timeout_for(route).await? {
                Acquire::Now(lease) => {
                    self.counters.granted.fetch_add(1, Ordering::Relaxed);
                    if waited > Duration::ZERO && waited >= Duration::from_micros(100) {
                        self.counters.waited.fetch_add(1, Ordering::Relaxed);
                        let micros = u64::try_from(waited.as_micros()).unwrap_or(u64::MAX);
                        self.counters.wait_micros.fetch_add(micros, Ordering::Relaxed);
                    }
                    return Ok(AcquireOutcome { go: true, wait: waited, lease: Some(lease) });
                }
                Acquire::Wait(d) => {
                    let waited = start.elapsed();
                    if waited + d > max_wait {
                        self.counters.gave_up.fetch_add(1, Ordering::Relaxed);
                        return Ok(AcquireOutcome { go: false, wait: d, lease: None });
                    }
                    tracing::debug!(route, wait_ms = d.as_millis() as u64, "waiting for the upstream bucket");
                    tokio::select! {
                        _ = tokio::time::sleep(d) => {}
                        _ = notified => {}
                    }
                }
            }
        }
        Ok(AcquireOutcome { go: false, wait: Duration::from_millis(1), lease: None })
    }

    /// [`acquire`](Upstream::acquire) as a [`Permit`] guard, or [`UpstreamError::WaitTooLong`].
    pub async fn permit(&self, route: &str, max_wait: Duration) -> Result<Permit, UpstreamError> {
        let outcome = self.acquire(route, max_wait).await?;
        match outcome.lease {
            Some(lease) if outcome.go => {
                Ok(Permit { upstream: self.clone(), route: route.to_owned(), lease: Some(lease), sent: Instant::now() })
            }
            _ => Err(UpstreamError::WaitTooLong(outcome.wait)),
        }
    }

    /// Records a response of `route` (to the request granted under `lease`, if given), its headers read as
    /// `provider` sends them, that took `latency`; wakes the callers waiting in this handle. With
    /// [`Provider::Github`], secondary limits that come back on a route back off exponentially from 60 s
    /// ([`SecondaryBackoff`], kept per route in this handle), and a success starts again.
    pub async fn update(
        &self,
        route: &str,
        lease: Option<&Lease>,
        provider: Provider,
        status: u16,
        headers: &HeaderMap,
        latency: Duration,
    ) -> Result<BucketView, UpstreamError> {
        let mut seen = headers::parse(provider, status, headers);
        if provider == Provider::Github {
            let mut backoff = self.backoff.lock();
            let entry = backoff.entry(route.to_owned()).or_default();
            entry.apply(&mut seen);
            if entry.strikes() == 0 {
                backoff.remove(route);
            }
        }
        if status == 429 {
            self.counters.rate_limited.fetch_add(1, Ordering::Relaxed);
            let retry_after_ms = seen.retry_after.map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
            tracing::warn!(route, %provider, retry_after_ms, "upstream answered 429");
        }
        let result = self.store.record(route, lease, &Report::new(&seen, latency)).await;
        self.changed.notify_waiters();
        let info = result?;
        Ok(BucketView { remaining: info.remaining, reset_after: info.reset_after, retry_after: info.retry_after })
    }

    /// Spawns a task that calls [`BucketStore::cleanup`]`(age)` every `every` (at least a second apart), so a
    /// long-running process keeps only the buckets in use. Abort the handle to stop it.
    pub fn spawn_cleanup(&self, every: Duration, age: Duration) -> tokio::task::JoinHandle<()> {
        let store = self.store.clone();
        let every = every.max(Duration::from_secs(1));
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            loop {
                tick.tick().await;
                match store.cleanup(age).await {
                    Ok(n) => tracing::debug!(dropped = n, "upstream buckets cleaned up"),
                    Err(e) => tracing::warn!(error = %e, "upstream bucket cleanup failed"),
                }
            }
        })
    }

    /// Hands a lease back without a response (the request failed or was cancelled).
    pub async fn release(&self, lease: &Lease) -> Result<(), UpstreamError> {
        let result = self.store.release(lease).await;
        self.changed.notify_waiters();
        Ok(result?)
    }
}

/// One granted request's place. [`finish`](Permit::finish) records the response; dropping it unfinished (an error,
/// a cancelled future) releases the place, so a bucket is never left stuck.
#[derive(Debug)]
pub struct Permit {
    upstream: Upstream,
    route: String,
    lease: Option<Lease>,
    sent: Instant,
}

impl Permit {
    /// The lease held.
    pub fn lease(&self) -> Option<&Lease> {
        self.lease.as_ref()
    }

    /// Restarts the latency measurement (call it right before sending, if the permit was taken earlier).
    pub fn sending(&mut self) {
        self.sent = Instant::now();
    }

    /// Records the response, the latency being the time since the permit was granted (or [`sending`]).
    ///
    /// [`sending`]: Permit::sending
    pub async fn finish(
        mut self,
        provider: Provider,
        status: u16,
        headers: &HeaderMap,
    ) -> Result<BucketView, UpstreamError> {
        let lease = self.lease.take();
        let latency = self.sent.elapsed();
        self.upstream.update(&self.route, lease.as_ref(), provider, status, headers, latency).await
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        let Some(lease) = self.lease.take() else { return };
        tracing::debug!(route = %self.route, "permit dropped unfinished: releasing its place");
        match tokio::runtime::Handle::try_current() {
            Ok(handle) => {
                let upstream = self.upstream.clone();
                handle.spawn(async move {
                    if let Err(e) = upstream.release(&lease).await {
                        tracing::warn!(error = %e, "could not release an upstream lease; it expires by itself");
                    }
                });
            }
            Err(_) => tracing::warn!("no runtime to release an upstream lease; it expires by itself"),
        }
    }
}
