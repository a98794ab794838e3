//! The [`BucketStore`] trait: per route (or upstream bucket), what the upstream allows, taken atomically.
//!
//! The seed's operations, made atomic and clock-safe:
//!
//! - [`timeout_for`](BucketStore::timeout_for) answers [`Acquire::Now`] **and takes one** from the bucket's
//!   remaining (and from the global limit) in the same step, or [`Acquire::Wait`] and takes nothing.
//! - [`record`](BucketStore::record) writes what a response said; [`update`](BucketStore::update) and
//!   [`update_full`](BucketStore::update_full) are the seed's two forms of it.
//! - [`lookup`](BucketStore::lookup), [`cleanup`](BucketStore::cleanup).
//!
//! **Relative times only.** Resets and `Retry-After` are durations from when the response arrived, padded with
//! the measured latency, so the upstream's clock and ours never need to agree.
//!
//! **Unknown buckets.** The first request of a bucket nobody knows yet goes alone (a pioneer); the others wait
//! until its answer is recorded. Its [`Lease`] is released when it fails or is cancelled (the next caller then
//! becomes the pioneer), and expires after [`StoreConfig::lease_timeout`] if its caller crashed. Every request
//! granted holds a lease too, so the store knows how many are in flight when a window starts.
//!
//! **Routes and buckets.** A route is a string, by convention `TEMPLATE#MAJOR` (e.g.
//! `POST /channels/{id}/messages#1234`, see [`route`]). When a response names the upstream's bucket (Discord's
//! `X-RateLimit-Bucket`), the route is mapped to the key `BUCKET#MAJOR` for [`StoreConfig::mapping_ttl`]: routes
//! sharing a bucket then share one budget, and different major parameters keep apart.
//!
//! **Global limit.** [`StoreConfig::global`] gates every route proactively (at most `limit` grants in any span of
//! `per`, padded with the latest latency); a global 429 ([`Report::global`]) blocks every route for its
//! `Retry-After`. Routes whose template is in [`StoreConfig::exempt`] pass the global gate.

mod memory;
#[cfg(feature = "redis")]
mod redis;

use std::collections::HashSet;
use std::time::Duration;

use async_trait::async_trait;

use crate::headers::Observation;

pub use memory::MemoryStore;
#[cfg(feature = "redis")]
pub use redis::RedisBucketStore;

/// Builds a route string `TEMPLATE#MAJOR` from a route template and its major parameter (empty for none).
///
/// ```
/// use floodgate_upstream::store::route;
/// assert_eq!(route("POST /channels/{id}/messages", "1234"), "POST /channels/{id}/messages#1234");
/// assert_eq!(route("GET /gateway", ""), "GET /gateway");
/// ```
pub fn route(template: &str, major: &str) -> String {
    if major.is_empty() { template.to_owned() } else { format!("{template}#{major}") }
}

/// The template part of a route (before the last `#`).
pub fn template(route: &str) -> &str {
    route.rsplit_once('#').map_or(route, |(t, _)| t)
}

/// The major parameter of a route (after the last `#`, empty if none).
pub fn major(route: &str) -> &str {
    route.rsplit_once('#').map_or("", |(_, m)| m)
}

/// The key a route's state lives under once the upstream named its bucket: `BUCKET#MAJOR`.
pub fn bucket_key(bucket: &str, route: &str) -> String {
    let major = major(route);
    if major.is_empty() { format!("bucket:{bucket}") } else { format!("bucket:{bucket}#{major}") }
}

/// A proactive global limit: at most `limit` grants in any span of `per` (e.g. Discord's 50 per second).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GlobalLimit {
    /// Grants allowed per span.
    pub limit: u64,
    /// The span.
    pub per: Duration,
}

/// How a store behaves. The defaults suit most APIs.
///
/// ```
/// use floodgate_upstream::store::{GlobalLimit, StoreConfig};
/// use std::time::Duration;
///
/// let config = StoreConfig::default()
///     .global(GlobalLimit { limit: 50, per: Duration::from_secs(1) })
///     .exempt("POST /interactions/{id}/{token}/callback");
/// assert_eq!(config.lease_timeout, Duration::from_secs(10));
/// ```
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct StoreConfig {
    /// The proactive global limit, if any (default none).
    pub global_limit: Option<GlobalLimit>,
    /// Route templates that pass the global gate.
    pub exempt: HashSet<String>,
    /// How long a grant (or a pioneer's turn) is held if never reported back (default 10 s).
    pub lease_timeout: Duration,
    /// How long a learned route-to-bucket mapping lives (default 1 h).
    pub mapping_ttl: Duration,
    /// The longest wait hint while a pioneer is out, and when no reset is known (default 50 ms).
    pub poll: Duration,
    /// Two resets closer than this are the same window (default 50 ms).
    pub window_tolerance: Duration,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            global_limit: None,
            exempt: HashSet::new(),
            lease_timeout: Duration::from_secs(10),
            mapping_ttl: Duration::from_secs(3600),
            poll: Duration::from_millis(50),
            window_tolerance: Duration::from_millis(50),
        }
    }
}

impl StoreConfig {
    /// Sets the proactive global limit.
    pub fn global(mut self, limit: GlobalLimit) -> Self {
        self.global_limit = Some(limit);
        self
    }

    /// Exempts a route template from the global limit.
    pub fn exempt(mut self, template: impl Into<String>) -> Self {
        self.exempt.insert(template.into());
        self
    }

    /// Sets the lease timeout.
    pub fn lease_timeout(mut self, timeout: Duration) -> Self {
        self.lease_timeout = timeout;
        self
    }

    /// Sets how long learned mappings live.
    pub fn mapping_ttl(mut self, ttl: Duration) -> Self {
        self.mapping_ttl = ttl;
        self
    }

    /// Sets the longest wait hint while a pioneer is out.
    pub fn poll(mut self, poll: Duration) -> Self {
        self.poll = poll;
        self
    }

    /// True if `route`'s template passes the global gate.
    pub fn is_exempt(&self, route: &str) -> bool {
        self.exempt.contains(template(route))
    }
}

/// A granted request's place: hand it back with [`BucketStore::record`] or [`BucketStore::release`]. One never
/// handed back expires after the lease timeout.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Lease {
    /// Unique within the store.
    pub id: u64,
    /// The key of the state it was taken from.
    pub key: String,
}

impl Lease {
    /// A compact text form, `ID:KEY`, to hand to a remote caller.
    ///
    /// ```
    /// use floodgate_upstream::store::Lease;
    /// let lease = Lease { id: 7, key: "bucket:abc#1".into() };
    /// assert_eq!(Lease::from_token(&lease.token()), Some(lease));
    /// assert_eq!(Lease::from_token("nope"), None);
    /// ```
    pub fn token(&self) -> String {
        format!("{}:{}", self.id, self.key)
    }

    /// Parses [`token`](Lease::token)'s form.
    pub fn from_token(token: &str) -> Option<Lease> {
        let (id, key) = token.split_once(':')?;
        Some(Lease { id: id.parse().ok()?, key: key.to_owned() })
    }
}

/// The answer of [`BucketStore::timeout_for`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Acquire {
    /// Send now: one was taken, and this lease holds the place.
    Now(Lease),
    /// Ask again after this long (nothing was taken).
    Wait(Duration),
}

/// What a store knows of one bucket.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct BucketInfo {
    /// The key the state lives under (the route, or `bucket:HASH#MAJOR` once learned).
    pub key: String,
    /// Requests left in this window, as far as this store knows; `None` while the bucket is unknown, `u64::MAX`
    /// when the upstream sent no limit.
    pub remaining: Option<u64>,
    /// The upstream's limit per window, if it said.
    pub limit: Option<u64>,
    /// Time until the window resets (padded with the latency), if known.
    pub reset_after: Option<Duration>,
    /// Time until a `Retry-After` (of the bucket, or a global one) is over, if one holds.
    pub retry_after: Option<Duration>,
    /// The latest measured latency.
    pub latency: Duration,
    /// Grants not yet reported back.
    pub in_flight: u64,
}

/// What one response said, as a store records it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Report {
    /// Requests left in the window.
    pub remaining: Option<u64>,
    /// The limit per window.
    pub limit: Option<u64>,
    /// Time until the window resets.
    pub reset_after: Option<Duration>,
    /// Time to wait before sending again.
    pub retry_after: Option<Duration>,
    /// The `retry_after` is the upstream's global limit's.
    pub global: bool,
    /// The upstream's bucket id, to map the route to.
    pub bucket: Option<String>,
    /// The round trip of the request, padding every relative time.
    pub latency: Duration,
}

impl Report {
    /// The report of a parsed response that took `latency`.
    pub fn new(seen: &Observation, latency: Duration) -> Report {
        Report {
            remaining: seen.remaining,
            limit: seen.limit,
            reset_after: seen.reset_after,
            retry_after: seen.retry_after,
            global: seen.global,
            bucket: seen.bucket.clone(),
            latency,
        }
    }

    /// A report of `remaining` left, resetting after `reset_after`.
    pub fn remaining(remaining: u64, reset_after: Duration) -> Report {
        Report { remaining: Some(remaining), reset_after: Some(reset_after), ..Report::default() }
    }
}

/// Why a store could not answer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The backend failed or timed out.
    #[error("bucket store backend: {0}")]
    Backend(String),
}

/// The result of a store call.
pub type StoreResult<T> = Result<T, StoreError>;

/// Where upstream buckets live: [`MemoryStore`] (the default), or Redis ([`RedisBucketStore`], feature `redis`) for a
/// fleet sharing one budget. Every call is atomic.
#[async_trait]
pub trait BucketStore: Send + Sync {
    /// What the store knows of `route`'s bucket, if anything.
    async fn lookup(&self, route: &str) -> StoreResult<Option<BucketInfo>>;

    /// Sets `route`'s remaining (the bucket becomes known).
    async fn update(&self, route: &str, remaining: u64) -> StoreResult<()>;

    /// Sets `route`'s remaining, its reset after `reset_after`, padded with `latency` (the seed's 4-argument
    /// update).
    async fn update_full(
        &self,
        route: &str,
        remaining: u64,
        reset_after: Duration,
        latency: Duration,
    ) -> StoreResult<()>;

    /// Records a response to a request of `route` granted under `lease` (if any): releases the lease, learns the
    /// route's bucket, and merges what the upstream said (within one window, the least remaining wins; a new
    /// window's remaining is reduced by the grants still in flight).
    async fn record(&self, route: &str, lease: Option<&Lease>, report: &Report) -> StoreResult<BucketInfo>;

    /// Hands a lease back without a response (the request failed or was cancelled). What was taken is not given
    /// back (the request may have reached the upstream); a pioneer's turn passes to the next caller.
    async fn release(&self, lease: &Lease) -> StoreResult<()>;

    /// Drops the buckets untouched for `age` or more with nothing in flight, and expired mappings; returns how
    /// many buckets were dropped.
    async fn cleanup(&self, age: Duration) -> StoreResult<usize>;

    /// Atomically: [`Acquire::Now`], taking one from `route`'s bucket and the global limit, or
    /// [`Acquire::Wait`] with how long to wait, taking nothing.
    async fn timeout_for(&self, route: &str) -> StoreResult<Acquire>;

    /// How many leases this store found expired so far (granted, then neither reported nor released within the
    /// lease timeout: their callers crashed or lost them). On Redis, the count of every process sharing the
    /// store. The default is 0 (a store that does not count; the conformance suite expects a count).
    async fn leases_expired(&self) -> StoreResult<u64> {
        Ok(0)
    }
}

#[async_trait]
impl<S: BucketStore + ?Sized> BucketStore for std::sync::Arc<S> {
    async fn lookup(&self, route: &str) -> StoreResult<Option<BucketInfo>> {
        (**self).lookup(route).await
    }
    async fn update(&self, route: &str, remaining: u64) -> StoreResult<()> {
        (**self).update(route, remaining).await
    }
    async fn update_full(
        &self,
        route: &str,
        remaining: u64,
        reset_after: Duration,
        latency: Duration,
    ) -> StoreResult<()> {
        (**self).update_full(route, remaining, reset_after, latency).await
    }
    async fn record(&self, route: &str, lease: Option<&Lease>, report: &Report) -> StoreResult<BucketInfo> {
        (**self).record(route, lease, report).await
    }
    async fn release(&self, lease: &Lease) -> StoreResult<()> {
        (**self).release(lease).await
    }
    async fn cleanup(&self, age: Duration) -> StoreResult<usize> {
        (**self).cleanup(age).await
    }
    async fn timeout_for(&self, route: &str) -> StoreResult<Acquire> {
        (**self).timeout_for(route).await
    }
    async fn leases_expired(&self) -> StoreResult<u64> {
        (**self).leases_expired().await
    }
}
