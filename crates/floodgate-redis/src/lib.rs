//! # floodgate-redis
//!
//! A [`floodgate::Store`] on Redis or Redis Cluster: every algorithm of the core, decided inside Redis by one Lua
//! script per algorithm, in one round trip per call, bit for bit as the in-memory store decides.
//!
//! - **Scripts.** `fixed_window`, `sliding_window`, `meter` (token bucket, leaky bucket, GCRA) and `sliding_log`,
//!   plus one that deletes an id's buckets. Each is sent with `EVALSHA`; after a `NOSCRIPT` (a restart, a failover, a
//!   `SCRIPT FLUSH`) the call is retried once with `EVAL`, which loads it again.
//! - **Keys.** Counters are fields of **shards**: one hash per Redis Cluster slot, `<prefix>#{<tag>}`, where
//!   `<tag>` is the shortest alphanumeric string in that slot (so at most 16 384 shard keys per prefix, spread
//!   evenly over a cluster's masters; [`RedisStoreBuilder::shards_per_slot`] splits each slot's counters over
//!   more hashes, for deployments past about 4 million counters). An id's counters go to the shard of the id's own slot, so every key of an
//!   id, old layouts' too, shares one slot and one atomic script reaches them all. A counter's field is
//!   `<id> <policy>` ([`RedisStore::field`]: the id's bytes, or a hash of an id longer than 40 bytes, and the
//!   policy's name or a short form of its key), and its value the policy's bucket packed into one short value
//!   (kind, times, state; MessagePack integers by Redis's `cmsgpack`, times as offsets, 17 to 27 bytes), so a
//!   shard stays in Redis's compact listpack encoding while it holds at most 512 fields (Redis's default) and its fields are
//!   under 64 bytes (an unusually long policy name converts that shard to a plain hash table: it still works, at
//!   about twice the memory per counter). Sharing one Redis key between the ids of a slot is what brings Redis
//!   memory to 78 to 100 bytes per counter, from about 200 with a hash per id and 570 to 730 with a hash per
//!   bucket (BENCHMARKS.md, "Redis memory per counter"): a key of its own costs about 130 bytes in Redis 7.0
//!   before it holds anything.
//!   A sliding log keeps its runs in `<prefix>:{<id>}#<policy key>` (a sorted set by millisecond, same slot).
//!   The id is percent-encoded inside the hash tag that decides its slot (any bytes are an id; none can break the
//!   tag or collide with another id). An id longer than [`DEFAULT_HASH_IDS_LONGER_THAN`] bytes (4096, the old
//!   maximum; see [`RedisStoreBuilder::hash_ids_longer_than`]) takes its slot from its SHA-256 instead. Ids have
//!   no length limit unless [`RedisStoreBuilder::max_id_len`] sets one.
//! - **Expiry.** Every key has a millisecond TTL: a shard's covers its longest-lived field. A field past its own
//!   expiry is absent to the scripts; as a shard grows, a write that adds a field deletes the shard's expired
//!   fields once the shard reaches twice the fields it kept last time (at least 16, at most 512 while fewer
//!   than 384 were kept), so expired fields cost O(1) each to remove, amortized, a shard holds at most about twice
//!   its live counters, and Redis memory stays bounded with no sweeper. A shard nobody writes expires whole.
//!   [`delete_buckets`](floodgate::Store::delete_buckets) deletes the id's fields and their sliding logs in one
//!   atomic script, on a cluster too: O(the fields of the id's shard), a few at 100 000 counters.
//! - **Migration from earlier layouts.** No command to run. The previous release kept a hash per id,
//!   `<prefix>{<id>}` (field = the policy key, the same packed value); the one before it a hash per bucket,
//!   `<prefix>:{<id>}:<policy key>`, listed in an index set `<prefix>:{<id>}`. When the shard has no field for a
//!   counter, the script reads the id hash's field, then the old bucket (the same slot, so the same atomic
//!   script), and on the next write moves the state into the shard and deletes the old field or bucket (and its
//!   entry in the old index). `delete_buckets` deletes every layout's keys of the id and counts a policy live in
//!   two of them once. In a rolling upgrade an old server still writes its layout; a new one reads it while its
//!   own field is absent, then counts in the shard, so for the length of the upgrade a limit may admit up to
//!   twice its count (the two generations count separately after the first new write), and no limit is reset.
//!   Old keys left untouched expire by their TTLs.
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
