//! # floodgate-upstream
//!
//! The other half of rate limiting: not limiting the callers of your service, but respecting the limits of the
//! services you call, so that you never take a 429.
//!
//! - [`headers`]: pure parsers of what upstreams send (Discord, GitHub, the IETF `RateLimit` fields,
//!   `Retry-After`), the provider chosen by you, never guessed.

#![deny(missing_docs)]
#![deny(clippy::unwrap_used)]
#![forbid(unsafe_code)]

#[cfg(feature = "conformance")]
pub mod conformance;
pub mod headers;
#[cfg(feature = "reqwest")]
pub mod middleware;
pub mod store;
mod upstream;

pub use headers::{Observation, Provider};
pub use store::{Acquire, BucketStore, Lease, MemoryStore, StoreConfig};
pub use upstream::{AcquireOutcome, BucketView, Permit, Upstream, UpstreamError, UpstreamStats};
