//! # floodgate-redis
//!
//! A [`floodgate::Store`] on Redis or Redis Cluster: every algorithm of the core, decided inside Redis by one Lua
//! script per algorithm, in one round trip per call, bit for bit as the in-memory store decides.
//!
//! - **Scripts.** `fixed_window`, `sliding_window`, `meter` (token bucket, leaky bucket, GCRA) and `sliding_log`,
//!   plus one that deletes an id's buckets. Each is sent with `EVALSHA`; after a `NOSCRIPT` (a restart, a failover, a
//!   `SCRIPT FLUSH`) the call is retried once with `EVAL`, which loads it again.
//! - **Keys.** One hash per id, `<prefix>{<id>}`: each field is a policy key ([`floodgate::Policy::key`]) and
//!   holds that policy's bucket packed into one short value (kind, times, state; MessagePack integers by Redis's
//!   `cmsgpack`, times as offsets, 22 to 26 bytes for a fixed window), so the hash stays in Redis's compact
//!   listpack encoding. The hash is also the id's index: [`delete_buckets`](floodgate::Store::delete_buckets)
//!   deletes it and the sliding logs of its fields, O(the id's buckets), in one atomic script, on a cluster too.
//!   A sliding log keeps its runs in `<prefix>:{<id>}#<policy key>` (a sorted set by millisecond, same hash tag).
//!   The id is percent-encoded inside the hash tag (any bytes are an id; none can break the tag or collide with
//!   another id). An id longer than [`DEFAULT_HASH_IDS_LONGER_THAN`] bytes (4096, the old maximum; see
//!   [`RedisStoreBuilder::hash_ids_longer_than`]) is keyed by its SHA-256 instead: `<prefix>{%sha256:<64 hex
//!   digits>}`, still one hash tag (one slot), whatever the id's length. Ids have no length limit unless
//!   [`RedisStoreBuilder::max_id_len`] sets one. Every key has a millisecond TTL: the hash's covers its
//!   longest-lived field (a field past its own expiry is absent to the scripts and is overwritten or dropped when
//!   its policy next writes), so Redis memory is bounded with no sweeper. About 200 bytes of Redis memory per
//!   counter (one id, one policy) against 570 to 730 before (BENCHMARKS.md, "Redis memory per counter").
//! - **Migration from the per-bucket layout of earlier releases** (a hash per bucket, `<prefix>:{<id>}:<policy key>`, listed in an
//!   index set `<prefix>:{<id>}`). No command to run: when an id's hash has no field for a policy, the scripts
//!   read that policy's old bucket (the same hash tag, so the same slot and the same atomic script) and, on the
//!   next write, move its state into the hash and delete the old bucket (and its entry in the old index).
//!   `delete_buckets` deletes both layouts' keys and counts a policy live in both once. In a rolling upgrade an old
//!   server still writes the old layout; a new one reads it while its own field is absent, then counts in the
//!   new one, so for the length of the upgrade a limit may admit up to twice its count (the two generations
//!   count separately after the first new write), and no limit is reset. Old keys left untouched expire by
//!   their TTLs.
//! - **Time.** Redis `TIME` inside the script by default, so application hosts' clock skew cannot change a
//!   decision; or an injected [`floodgate::Clock`] for exact tests ([`RedisStoreBuilder::clock`]).
//! - **Connections.** One multiplexed, auto-pipelined connection, shared by every caller and reconnected by
//!   itself; the cluster client follows `MOVED`/`ASK`. For a single Redis over plain TCP or a Unix socket the
//!   store runs the
//!   connection's driver itself and sees it close as it happens (Redis restarted while idle, `CLIENT KILL`, Redis's
//!   idle `timeout`): the next call opens a fresh connection before sending anything, so a dropped idle
//!   connection fails no call ([`RedisStats::reconnects`]). A call already handed to a connection that then dies
//!   is never retried (it may have run, and a script run twice counts its hit twice): it fails by the failure
//!   policy. Over TLS the store uses redis-rs's `ConnectionManager`, whose first call after a drop still fails.
//! - **Failure policy.** [`FailurePolicy::FailOpen`], [`FailurePolicy::FailClosed`] or [`FailurePolicy::Error`],
//!   with a per-call timeout: no caller waits past it, whatever Redis does.
//!
//! ```no_run
//! use floodgate::{Policy, Store};
//! use floodgate_redis::{FailurePolicy, RedisStore};
//! use std::time::Duration;
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let store = RedisStore::builder()
//!     .url("redis://127.0.0.1:6379/")
//!     .prefix("myapp")
//!     .timeout(Duration::from_millis(50))
//!     .failure_policy(FailurePolicy::FailOpen)
//!     .build()
//!     .await?;
//! let policy = Policy::gcra(100, Duration::from_secs(60))?;
//! let decision = store.hit(b"user:42", &policy, 1).await?;
//! println!("allowed: {}, remaining: {}", decision.allowed, decision.remaining);
//! # Ok(())
//! # }
//! ```
//!
//! ## Limits of exactness
//!
//! Lua numbers are doubles, so the scripts keep every number an integer below 2^53 (products that would exceed
//! it are computed by exact long multiplication). Counts and meter levels pushed past 2^53 by
//! [`inc`](floodgate::Store::inc) or [`set`](floodgate::Store::set) saturate there, where the in-memory store
//! saturates at 2^64; below that the two stores answer identically.
//!
//! With an injected clock, Redis still expires keys by its own clock: the injected clock must not run slower
//! than real time, or a key may expire before its state would have (tests that freeze the clock for a few
//! seconds are fine: TTLs are at least the policy's window).

//!
//! ## Calls past their deadline
//!
//! A call that times out may still sit in Redis's input (Redis frozen, slow, or its reply lost); it must not count
//! later, since its caller was answered as failed. So every decision and inspection carries a deadline in Redis's
//! own time, and the script checks Redis `TIME` first: past the deadline it changes nothing and answers
//! "expired". The store learns the offset between its monotonic clock and Redis `TIME` from the replies (each
//! carries Redis `TIME`): reply time minus send time is an upper bound of the offset; the tightest is kept, and
//! loosened by 500 ppm of the time since it was learnt. The deadline is send time + [`timeout`] + that bound.
//!
//! The bound: a script that starts later than its caller's deadline plus the estimate's error (at most the round
//! trip of the reply it was learnt from, typically well under a millisecond on a LAN, plus 500 ppm of the time
//! since; the first call of a store has no deadline) changes nothing. A script that started before its deadline
//! but whose reply came back late still counts (the call did run); its caller was answered by the failure
//! policy. If Redis's clock steps back, deadlines become late by the step until a new reply tightens the
//! estimate; if it steps forward, a caller may see one expired reply, which corrects the estimate, and the call
//! is retried once (it changed nothing). [`Store::delete_buckets`](floodgate::Store::delete_buckets) has no deadline: a late deletion still
//! deletes.
//!
//! [`timeout`]: RedisStoreBuilder::timeout

#![warn(missing_docs)]
#![deny(clippy::unwrap_used)]

mod builder;
mod conn;
mod failure;
mod key;
mod redis_clock;
mod reply;
mod scripts;
mod stats;
mod store;

pub use builder::RedisStoreBuilder;
pub use failure::{FailurePolicy, RedisStoreError};
pub use redis;
pub use scripts::ScriptSource;
pub use stats::RedisStats;
pub use store::RedisStore;

/// Ids longer than this many bytes are keyed by their SHA-256 unless the builder says otherwise
/// ([`RedisStoreBuilder::hash_ids_longer_than`]). It is the longest id the store accepted before long ids were
/// hashed, so every id that worked before keeps its exact keys (a rolling upgrade resets no limit).
pub const DEFAULT_HASH_IDS_LONGER_THAN: usize = 4096;
