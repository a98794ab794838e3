//! # Floodgate
//!
//! Rate limiting that holds in one process, across a fleet sharing a store, and (soon) across a cluster:
//! "at most N of these per window", per user, per IP, per API key.
//!
//! - [`Policy`]: `limit` units per `window`, by one of six [`Algorithm`]s, with an optional `burst`.
//! - [`Decision`]: allowed, limit, remaining, reset_after, retry_after: the `RateLimit-*` headers' fields.
//! - [`algorithm`]: the algorithms as pure functions of (state, policy, cost, now), free of I/O.
//! - [`Store`]: where state lives, pluggable (Hammer's killer feature). [`MemoryStore`] is the default; other
//!   crates add Redis and more, and the public conformance suite (`floodgate::conformance`, feature
//!   `conformance`) tests yours.
//! - [`Limiter`]: the facade applications call, with named policies and `until_ready`.
//! - [`Clock`]: every store takes one, so tests drive time by hand ([`ManualClock`]) instead of sleeping.
//!
//! ```
//! use floodgate::{Limiter, Policy};
//! use std::time::Duration;
//!
//! let limiter = Limiter::in_memory();
//! let per_user = Policy::gcra(3, Duration::from_secs(1))?;
//! let admitted = (0..5).filter(|_| limiter.hit_sync("user:42", &per_user).allowed).count();
//! assert_eq!(admitted, 3);
//! # Ok::<(), floodgate::PolicyError>(())
//! ```
//!
//! ## Semantics every store keeps
//!
//! - **A denied hit consumes nothing** (as in governor and redis-cell). A client that keeps retrying gets
//!   through as soon as capacity returns.
//! - **Cost.** A hit takes `cost` units (default 1). Cost 0 is a pure check: would a hit of 1 pass now?
//!   A cost above the policy's capacity is denied with `retry_after: None`, never a panic.
//! - **Windows align to the epoch**, so every node and store agrees on them.
//! - **Time** is in whole microseconds ([`Timestamp`]); a clock that goes backwards is treated as standing still.
//!
//! ## What each algorithm bounds
//!
//! | algorithm | worst case over any span of one window |
//! |---|---|
//! | fixed window | `2 × limit` (a burst at the end of one window and the start of the next) |
//! | sliding window | `limit` for steady traffic; `2 × limit − 1` at worst, when a burst sits at a window's very end |
//! | token / leaky bucket, GCRA | `burst + limit` (a full bucket, then a window of refill) |
//! | sliding log | `limit` in **every** span of one window, wherever it starts: the only exact bound (its state grows with the hits in a window; see [`algorithm::sliding_log`]) |
//!
//! The sliding window weights the previous window's count by how much of it still overlaps the sliding span,
//! as if its hits had been spread evenly. Hits bunched at the very end of the previous window are therefore
//! under-counted as the span slides past them. `tests/sliding_window_error.rs` measures it by brute force over
//! every span: a client that hits whenever it may gets exactly `limit` per span; one that waits for the last
//! microsecond of a window, bursts, then keeps hitting, gets `2 × limit − 1` (19 at a limit of 10, 199 at 100) in
//! the worst span. For an exact bound on every span, use the sliding log (`limit`, exactly, at the price of a log
//! of up to `limit` runs per key), a meter (`burst` plus the refill, in 16 bytes) or a fixed window with the burst
//! in mind.

#![warn(missing_docs)]
#![deny(clippy::unwrap_used)]

pub mod algorithm;
#[cfg(feature = "conformance")]
pub mod conformance;
mod decision;
mod limiter;
pub mod memory;
mod policy;
mod store;
mod time;

pub use algorithm::Op;
pub use decision::Decision;
pub use limiter::{Limiter, LimiterError};
pub use memory::{Expired, MemoryStore, MemoryStoreBuilder, WhenFull};
pub use policy::{Algorithm, Policy, PolicyError};
pub use store::{BoxFuture, BoxStore, BucketInfo, DynStore, Hit, Store, StoreError, StoreResult};
pub use time::{Clock, ManualClock, SystemClock, Timestamp};

/// The repository README's examples, compiled and run as doctests so they stay true as pasted.
#[cfg(doctest)]
#[doc = include_str!("../../../README.md")]
struct ReadmeDoctests;
