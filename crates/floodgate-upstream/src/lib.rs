//! # floodgate-upstream
//!
//! The other half of rate limiting: not limiting the callers of your service, but respecting the limits of the
//! services you call, so that you never take a 429, and still use all the rate you are given.
//!
//! - [`headers`]: pure parsers of what upstreams send (Discord, GitHub, the IETF `RateLimit` fields,
//!   `Retry-After`), the [`Provider`] chosen by you, never guessed.
//! - [`store`]: the [`BucketStore`] trait (atomic `timeout_for`: go now and take one, or wait), pioneers for
//!   unknown buckets, leases that a failed or cancelled request hands back, a proactive global limit, route to
//!   bucket mappings learned from responses. [`MemoryStore`] is the default; [`store::RedisBucketStore`]
//!   (feature `redis`, on by default) lets a fleet of processes share one budget.
//! - [`Upstream`]: the facade: [`acquire`](Upstream::acquire) waits up to a bound, [`update`](Upstream::update)
//!   records a response, [`permit`](Upstream::permit) gives a guard whose drop releases its place.
//! - [`middleware`] (feature `reqwest`, on by default): a `reqwest-middleware` layer that waits, sends, records
//!   and retries a 429 after its `Retry-After`.
//! - `conformance` (feature `conformance`): the suite every store passes; run it on yours.
//!
//! ```
//! use floodgate_upstream::{Provider, Upstream};
//! use floodgate_upstream::headers::header_map;
//! use std::time::Duration;
//!
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! let upstream = Upstream::in_memory();
//! // The first request of an unknown bucket goes alone (it is the pioneer).
//! let first = upstream.acquire("POST /channels/{id}/messages#42", Duration::from_secs(5)).await?;
//! assert!(first.go);
//! // Its answer says 4 remain for 2 seconds: four more go at once, the fifth waits.
//! let headers = header_map([
//!     ("x-ratelimit-limit", "5"),
//!     ("x-ratelimit-remaining", "4"),
//!     ("x-ratelimit-reset-after", "2.000"),
//! ]);
//! let view = upstream
//!     .update("POST /channels/{id}/messages#42", first.lease.as_ref(), Provider::Discord, 200, &headers, Duration::ZERO)
//!     .await?;
//! assert_eq!(view.remaining, Some(4));
//! for _ in 0..4 {
//!     assert!(upstream.acquire("POST /channels/{id}/messages#42", Duration::ZERO).await?.go);
//! }
//! let fifth = upstream.acquire("POST /channels/{id}/messages#42", Duration::ZERO).await?;
//! assert!(!fifth.go && fifth.wait <= Duration::from_secs(2));
//! # Ok::<(), floodgate_upstream::UpstreamError>(())
//! # }).unwrap();
//! ```
//!
//! ## Time
//!
//! Every time a store keeps is relative: a reset or a `Retry-After` is a duration from when the response arrived,
//! padded with the request's measured latency. Absolute times the upstream sends (GitHub's `x-ratelimit-reset`,
//! an HTTP-date `Retry-After`) are turned into durations against the response's own `Date` header when it has
//! one, else the local wall clock. So the upstream's clock and ours never need to agree; in Redis, Redis's clock
//! is the only one.

#![deny(missing_docs)]
#![deny(clippy::unwrap_used)]
#![forbid(unsafe_code)]

pub mod headers;
#[cfg(feature = "reqwest")]
pub mod middleware;
pub mod store;
mod upstream;

pub use headers::{Observation, Provider};
pub use store::{Acquire, BucketStore, Lease, MemoryStore, StoreConfig};
pub use upstream::{AcquireOutcome, BucketView, Permit, Upstream, UpstreamError, UpstreamStats};

#[cfg(feature = "conformance")]
pub mod conformance;

/// The README's examples, compiled as doctests.
#[cfg(all(doctest, feature = "redis", feature = "reqwest"))]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
