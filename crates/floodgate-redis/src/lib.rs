//! # floodgate-redis
//!
//! A [`floodgate::Store`] on Redis or Redis Cluster: every algorithm of the core, decided inside Redis by one Lua
//! script per algorithm, in one round trip per call, bit for bit as the in-memory store decides.
//!
//! - **Scripts.** `fixed_window`, `sliding_window`, `meter` (token bucket, leaky bucket, GCRA) and `sliding_log`,
//!   plus one that deletes an id's buckets. Each is sent with `EVALSHA`; after a `NOSCRIPT` (a restart, a failover, a
//!   `SCRIPT FLUSH`) the call is retried once with `EVAL`, which loads it again.
//! - **Keys.** `<prefix>:{<id>}:<policy key>` holds one bucket (a hash of its state, times and logical expiry);
//!   `<prefix>:{<id>}` is the id's index (the set of its bucket keys); a sliding log keeps its runs beside its
//!   bucket in `<prefix>:{<id>}#<policy key>` (a sorted set by millisecond, same hash tag). So
//!   [`delete_buckets`](floodgate::Store::delete_buckets) is one atomic script, on a cluster too. The id is
//!   percent-encoded inside the hash tag (any bytes are an id; none can break the tag or collide with another id).
//!   An id longer than [`DEFAULT_HASH_IDS_LONGER_THAN`] bytes (4096, the old maximum, so every id that worked
//!   before keeps its keys; see [`RedisStoreBuilder::hash_ids_longer_than`]) is keyed by its SHA-256 instead:
//!   `<prefix>:{%sha256:<64 hex digits>}`, still one hash tag (one slot), a fixed 72 bytes whatever the id's
//!   length. Ids have no length limit unless [`RedisStoreBuilder::max_id_len`] sets one.
//!   Every key has a millisecond TTL that covers its state, so Redis memory is bounded with no sweeper.
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
//! is retried once (it changed nothing). [`Store::delete_buckets`] has no deadline: a late deletion still
//! deletes.
//!
//! [`timeout`]: RedisStoreBuilder::timeout

#![warn(missing_docs)]
#![deny(clippy::unwrap_used)]

mod conn;
mod key;
mod scripts;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use floodgate::algorithm::Op;
use floodgate::{Algorithm, BucketInfo, Clock, Decision, Policy, Store, StoreError, StoreResult, Timestamp};
use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClientBuilder;
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, ErrorKind, ServerErrorKind, Value};

pub use redis;
pub use scripts::ScriptSource;

/// Ids longer than this many bytes are keyed by their SHA-256 unless the builder says otherwise
/// ([`RedisStoreBuilder::hash_ids_longer_than`]). It is the longest id the store accepted before long ids were
/// hashed, so every id that worked before keeps its exact keys (a rolling upgrade resets no limit).
pub const DEFAULT_HASH_IDS_LONGER_THAN: usize = 4096;

/// What a decision call answers when Redis cannot (refused, reset, timed out, or an error reply).
///
/// Inspection and deletion ([`Store::inspect`], [`Store::delete_buckets`]) always return the error.
///
/// ```
/// use floodgate_redis::FailurePolicy;
/// assert_eq!(FailurePolicy::default(), FailurePolicy::Error);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum FailurePolicy {
    /// Allow the hit (a cost above the policy's capacity is still denied), and count it in
    /// [`RedisStats::failed_open`]. Availability over strictness.
    FailOpen,
    /// Deny the hit with `retry_after` set to the store's retry hint ([`RedisStoreBuilder::retry_hint`]), and
    /// count it in [`RedisStats::failed_closed`].
    FailClosed,
    /// Return the error ([`StoreError::Timeout`], [`StoreError::Unavailable`] or [`StoreError::Backend`]).
    #[default]
    Error,
}

/// Why the store could not be built or could not answer. Store calls map it into [`StoreError`].
///
/// ```
/// use floodgate_redis::{RedisStore, RedisStoreError};
///
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// // No Redis given, or a prefix that would break the hash tag: refused before any connection.
/// let e = RedisStore::builder().build().await.unwrap_err();
/// assert!(matches!(e, RedisStoreError::Config(_)));
/// let e = RedisStore::builder().url("redis://127.0.0.1/").prefix("a{b}").build().await.unwrap_err();
/// assert!(e.to_string().contains("must not contain"));
/// # });
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RedisStoreError {
    /// The Redis client failed (connection, protocol, or an error reply).
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    /// A script answered something this store cannot read (a version mismatch, or a bug).
    #[error("unexpected reply from the floodgate script: {0}")]
    Reply(String),
    /// The builder was given no Redis to talk to, or an invalid option.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// The id is longer than the store's maximum.
    #[error("id of {len} bytes is longer than the maximum of {max}")]
    IdTooLong {
        /// The id's length.
        len: usize,
        /// The store's maximum.
        max: usize,
    },
    /// A key of the id holds another Redis type than the store writes there (someone `SET` a string where a
    /// bucket's hash belongs): every call on the id fails until
    /// [`delete_buckets`](floodgate::Store::delete_buckets) of the id clears it.
    #[error("{0}: the key holds the wrong redis type; delete_buckets of the id (reset) clears it")]
    WrongType(String),
    /// The script found its deadline (in Redis's own time) already past and changed nothing (see the crate
    /// docs, "Calls past their deadline"). A caller sees it only when the store's estimate of Redis's clock was
    /// off; the store then learns the new offset and retries once.
    #[error("the call reached redis after its deadline and was dropped unrun ({late_us} µs late by redis time)")]
    Expired {
        /// How far past the deadline Redis would have run it, in microseconds of Redis time.
        late_us: u64,
    },
}

/// The kind of a fault, for the per-kind counters of [`RedisStats`].
#[derive(Clone, Copy, PartialEq, Eq)]
enum FaultKind {
    Timeout,
    Unavailable,
    Backend,
    WrongType,
    Expired,
    InvalidId,
}

impl RedisStoreError {
    /// A Redis error reply `WRONGTYPE ...` becomes [`RedisStoreError::WrongType`].
    fn classify(self) -> Self {
        match self {
            RedisStoreError::Redis(r) if r.code() == Some("WRONGTYPE") => {
                let detail = r.detail().unwrap_or("").trim();
                // The scripts' own message names the key; a plain Redis one does not.
                let detail = detail.split(" script:").next().unwrap_or(detail).trim();
                RedisStoreError::WrongType(if detail.starts_with("floodgate key") {
                    format!("WRONGTYPE {detail}")
                } else {
                    format!("WRONGTYPE a key of the id: {detail}")
                })
            }
            e => e,
        }
    }

    fn kind(&self) -> FaultKind {
        match self {
            RedisStoreError::Redis(r) if r.is_timeout() => FaultKind::Timeout,
            RedisStoreError::Redis(r) if is_unavailable(r) => FaultKind::Unavailable,
            RedisStoreError::IdTooLong { .. } => FaultKind::InvalidId,
            RedisStoreError::WrongType(_) => FaultKind::WrongType,
            RedisStoreError::Expired { .. } => FaultKind::Expired,
            _ => FaultKind::Backend,
        }
    }
}

fn is_unavailable(r: &redis::RedisError) -> bool {
    r.is_io_error()
        || r.is_connection_dropped()
        || r.is_connection_refusal()
        || matches!(r.kind(), ErrorKind::ClusterConnectionNotFound)
        || matches!(
            r.kind(),
            ErrorKind::Server(
                ServerErrorKind::ClusterDown
                    | ServerErrorKind::TryAgain
                    | ServerErrorKind::MasterDown
                    | ServerErrorKind::Moved
                    | ServerErrorKind::Ask
            )
        )
}

impl From<RedisStoreError> for StoreError {
    fn from(e: RedisStoreError) -> Self {
        match e.classify() {
            RedisStoreError::Redis(r) if is_unavailable(&r) => StoreError::Unavailable(r.to_string()),
            e @ RedisStoreError::IdTooLong { .. } => StoreError::InvalidId(e.to_string()),
            e => StoreError::Backend(e.to_string()),
        }
    }
}

/// Counters of the faults a store has met, by how it answered them and by kind ([`RedisStore::stats`]).
///
/// Every failed call counts once in [`failures`](Self::failures) and once in exactly one kind
/// ([`timeouts`](Self::timeouts), [`unavailable`](Self::unavailable), [`backend`](Self::backend),
/// [`wrong_type`](Self::wrong_type) or [`expired`](Self::expired)), whatever the failure policy; and once in how it
/// was answered ([`failed_open`](Self::failed_open), [`failed_closed`](Self::failed_closed) or
/// [`errors`](Self::errors)). An id refused by [`RedisStoreBuilder::max_id_len`] is the caller's error, not a
/// fault: it counts nowhere.
///
/// ```
/// let quiet = floodgate_redis::RedisStats::default();
/// assert_eq!(quiet.failed_open + quiet.failed_closed + quiet.errors, 0);
/// assert_eq!(quiet.failures, quiet.timeouts + quiet.unavailable + quiet.backend + quiet.wrong_type + quiet.expired);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RedisStats {
    /// Decisions allowed because Redis could not answer ([`FailurePolicy::FailOpen`]).
    pub failed_open: u64,
    /// Decisions denied because Redis could not answer ([`FailurePolicy::FailClosed`]).
    pub failed_closed: u64,
    /// Calls that returned an error (any call under [`FailurePolicy::Error`]; inspections and deletions always).
    pub errors: u64,
    /// Of all the faults above, those that were the per-call timeout.
    pub timeouts: u64,
    /// Scripts reloaded after a `NOSCRIPT` reply.
    pub script_reloads: u64,
    /// Every failed call, however it was answered (the sum of [`timeouts`](Self::timeouts) and the kinds
    /// below).
    pub failures: u64,
    /// Failures because Redis could not be reached: connection refused, reset or closed, cluster down,
    /// `TRYAGAIN`, `MOVED`/`ASK` past the client's retries.
    pub unavailable: u64,
    /// Failures because Redis answered an error (other than `WRONGTYPE`) or a reply the store cannot read.
    pub backend: u64,
    /// Failures because a key of the id holds another Redis type ([`RedisStoreError::WrongType`]).
    pub wrong_type: u64,
    /// Calls answered [`RedisStoreError::Expired`]: the script dropped them unrun as past their deadline while
    /// their caller still waited (the store's estimate of Redis's clock was off, even after one retry). Calls
    /// dropped after their caller gave up are counted in [`timeouts`](Self::timeouts), where they failed.
    pub expired: u64,
    /// Connections to a single Redis over TCP opened again after the first, each as soon as the previous one
    /// was seen closed (a restart, `CLIENT KILL`, Redis's idle `timeout`), before any call was sent on it.
    pub reconnects: u64,
}

#[derive(Default)]
struct Counters {
    /// Set by the first fault after a success, cleared by the next success: one warning per outage, not one
    /// per call.
    degraded: AtomicBool,
    failed_open: AtomicU64,
    failed_closed: AtomicU64,
    errors: AtomicU64,
    timeouts: AtomicU64,
    script_reloads: AtomicU64,
    failures: AtomicU64,
    unavailable: AtomicU64,
    backend: AtomicU64,
    wrong_type: AtomicU64,
    expired: AtomicU64,
}

#[derive(Clone)]
enum Conn {
    /// A single Redis over plain TCP or a Unix socket, its connection watched (see `conn.rs`).
    Watched(Arc<conn::Watched>),
    /// A single Redis over TLS.
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl Conn {
    async fn query(&self, cmd: &Cmd) -> redis::RedisResult<Value> {
        match self {
            Conn::Watched(c) => c.query(cmd).await?.extract_error(),
            Conn::Single(c) => c.clone().req_packed_command(cmd).await?.extract_error(),
            Conn::Cluster(c) => c.clone().req_packed_command(cmd).await?.extract_error(),
        }
    }
}

enum Target {
    None,
    Single(redis::Client),
    /// The builder, and whether the store picks its retry settings (not when the caller gave the builder).
    Cluster(Box<ClusterClientBuilder>, bool),
    Error(String),
}

/// Builds a [`RedisStore`]: which Redis, key prefix, time source, timeout and failure policy.
///
/// ```no_run
/// use floodgate_redis::{FailurePolicy, RedisStore};
/// use std::time::Duration;
///
/// # async fn run() -> Result<(), floodgate_redis::RedisStoreError> {
/// let cluster = RedisStore::builder()
///     .cluster(["redis://10.0.0.1:7000", "redis://10.0.0.2:7000", "redis://10.0.0.3:7000"])
///     .prefix("rl")
///     .timeout(Duration::from_millis(20))
///     .failure_policy(FailurePolicy::FailClosed)
///     .build()
///     .await?;
/// # Ok(())
/// # }
/// ```
pub struct RedisStoreBuilder {
    target: Target,
    prefix: String,
    clock: Option<Arc<dyn Clock>>,
    timeout: Duration,
    connect_timeout: Duration,
    failure: FailurePolicy,
    retry_hint: Duration,
    keep: Duration,
    ttl_slack: Option<Duration>,
    max_id_len: usize,
    hash_over: usize,
    lazy: bool,
}

impl Default for RedisStoreBuilder {
    fn default() -> Self {
        RedisStoreBuilder {
            target: Target::None,
            prefix: "floodgate".to_owned(),
            clock: None,
            timeout: Duration::from_millis(100),
            connect_timeout: Duration::from_secs(1),
            failure: FailurePolicy::Error,
            retry_hint: Duration::from_secs(1),
            keep: Duration::ZERO,
            ttl_slack: None,
            max_id_len: usize::MAX,
            hash_over: DEFAULT_HASH_IDS_LONGER_THAN,
            lazy: false,
        }
    }
}

impl RedisStoreBuilder {
    /// A single Redis at `url` (`redis://[user:password@]host:port[/db]`; for `rediss://`, enable a TLS feature
    /// of the re-exported [`redis`] crate in your own Cargo.toml, e.g. `tokio-rustls-comp`).
    pub fn url(mut self, url: &str) -> Self {
        self.target = match redis::Client::open(url) {
            Ok(c) => Target::Single(c),
            Err(e) => Target::Error(format!("bad redis url: {e}")),
        };
        self
    }

    /// A single Redis through a ready [`redis::Client`] (any connection option redis-rs has).
    pub fn client(mut self, client: redis::Client) -> Self {
        self.target = Target::Single(client);
        self
    }

    /// A Redis Cluster, discovered from these initial nodes (URLs as for [`url`](Self::url)).
    pub fn cluster<I, S>(mut self, nodes: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let nodes: Vec<String> = nodes.into_iter().map(|s| s.as_ref().to_owned()).collect();
        self.target = Target::Cluster(Box::new(ClusterClientBuilder::new(nodes)), true);
        self
    }

    /// A Redis Cluster through a [`ClusterClientBuilder`] (credentials, TLS, retries: any redis-rs option; its
    /// retry settings are kept). The store still sets the connection and response timeouts from
    /// [`timeout`](Self::timeout) and [`connect_timeout`](Self::connect_timeout).
    pub fn cluster_client(mut self, builder: ClusterClientBuilder) -> Self {
        self.target = Target::Cluster(Box::new(builder), false);
        self
    }

    /// The first part of every key (default `floodgate`). It must not contain `{` or `}` (the hash tag is the
    /// id's).
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// Decide by this clock instead of Redis `TIME` (for exact tests; see the crate docs for the caveat).
    pub fn clock(mut self, clock: impl Clock) -> Self {
        self.clock = Some(Arc::new(clock));
        self
    }

    /// The most any call may take, connection and retries included (default 100 ms).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The most one connection attempt may take (default 1 s).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// What decisions answer when Redis cannot (default [`FailurePolicy::Error`]).
    pub fn failure_policy(mut self, policy: FailurePolicy) -> Self {
        self.failure = policy;
        self
    }

    /// The `retry_after` of a [`FailurePolicy::FailClosed`] denial (default 1 s).
    pub fn retry_hint(mut self, hint: Duration) -> Self {
        self.retry_hint = hint;
        self
    }

    /// Keep a written bucket at least this long after its last write (Hammer's `expiry_ms`; default zero:
    /// exactly until its state is empty). Live state is never dropped early, whatever this is.
    pub fn keep(mut self, keep: Duration) -> Self {
        self.keep = keep;
        self
    }

    /// Added to every key's TTL. The default is 1 ms with Redis `TIME` (the rounding of microseconds up to
    /// milliseconds) and 60 s with an injected clock, where the TTL is counted by Redis's clock but the state's
    /// life by the injected one: a test that holds its clock still while real time passes keeps its keys.
    /// Correctness never depends on the TTL (every bucket also records when its state is empty).
    pub fn ttl_slack(mut self, slack: Duration) -> Self {
        self.ttl_slack = Some(slack);
        self
    }

    /// The longest id accepted, in bytes (default: no limit; long ids are hashed, see
    /// [`hash_ids_longer_than`](Self::hash_ids_longer_than)); longer ids get [`StoreError::InvalidId`].
    pub fn max_id_len(mut self, max: usize) -> Self {
        self.max_id_len = max;
        self
    }

    /// Ids longer than `len` bytes are keyed by their SHA-256 (`<prefix>:{%sha256:<hex>}`) instead of their
    /// percent-encoding (default [`DEFAULT_HASH_IDS_LONGER_THAN`], 4096). A smaller value keeps keys compact (a
    /// percent-encoded id can take three times its length, in every key of the id and in its index); changing it
    /// on a live deployment moves the ids between the two lengths to new keys, which starts their limits afresh.
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), floodgate_redis::RedisStoreError> {
    /// let store = floodgate_redis::RedisStore::builder()
    ///     .url("redis://127.0.0.1/")
    ///     .prefix("rl")
    ///     .hash_ids_longer_than(8)
    ///     .build()
    ///     .await?;
    /// assert_eq!(store.index_key(b"user:42"), b"rl:{user:42}");
    /// assert!(store.index_key(b"user:42:session:7").starts_with(b"rl:{%sha256:"));
    /// # Ok(())
    /// # }
    /// ```
    pub fn hash_ids_longer_than(mut self, len: usize) -> Self {
        self.hash_over = len;
        self
    }

    /// Connect on the first call instead of in [`build`](Self::build) (default `false`). A lazy store builds even
    /// while Redis is down (an application can start before its Redis); until Redis answers, its calls get the
    /// failure policy's answer within the timeout, as in any outage.
    ///
    /// ```
    /// use floodgate::{Policy, Store};
    /// use floodgate_redis::{FailurePolicy, RedisStore};
    /// use std::time::Duration;
    ///
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// // Nothing listens on port 1: the store builds anyway, and fails closed until Redis is there.
    /// let store = RedisStore::builder()
    ///     .url("redis://127.0.0.1:1/")
    ///     .lazy(true)
    ///     .timeout(Duration::from_millis(50))
    ///     .failure_policy(FailurePolicy::FailClosed)
    ///     .build()
    ///     .await
    ///     .unwrap();
    /// let policy = Policy::gcra(10, Duration::from_secs(1)).unwrap();
    /// assert!(!store.hit(b"k", &policy, 1).await.unwrap().allowed);
    /// assert_eq!(store.stats().failed_closed, 1);
    /// # });
    /// ```
    pub fn lazy(mut self, lazy: bool) -> Self {
        self.lazy = lazy;
        self
    }

    /// Connects (unless [`lazy`](Self::lazy)) and returns the store. Fails if Redis cannot be reached now (later
    /// outages are the failure policy's business).
    pub async fn build(self) -> Result<RedisStore, RedisStoreError> {
        if self.prefix.contains(['{', '}']) {
            return Err(RedisStoreError::Config(format!("prefix {:?} must not contain '{{' or '}}'", self.prefix)));
        }
        if self.timeout.is_zero() {
            return Err(RedisStoreError::Config("timeout must be above zero".to_owned()));
        }
        let conn = match self.target {
            Target::None => {
                return Err(RedisStoreError::Config("no redis given: call url(), client() or cluster()".to_owned()));
            }
            Target::Error(e) => return Err(RedisStoreError::Config(e)),
            Target::Single(client) => match conn::Watched::new(&client, self.timeout, self.connect_timeout) {
                Some(watched) => {
                    let watched = Arc::new(watched);
                    if !self.lazy {
                        let fut = watched.connect();
                        tokio::time::timeout(self.connect_timeout, fut).await.map_err(|_| {
                            RedisStoreError::Config(format!("redis did not answer in {:?}", self.connect_timeout))
                        })??;
                    }
                    Conn::Watched(watched)
                }
                None => {
                    let config = ConnectionManagerConfig::new()
                        .set_connection_timeout(Some(
                            self.connect_timeout.min(self.timeout.max(Duration::from_millis(1))),
                        ))
                        .set_response_timeout(Some(self.timeout))
                        .set_number_of_retries(1)
                        .set_min_delay(Duration::from_millis(5))
                        .set_max_delay(Duration::from_millis(200));
                    if self.lazy {
                        Conn::Single(ConnectionManager::new_lazy_with_config(client, config)?)
                    } else {
                        let fut = ConnectionManager::new_with_config(client, config);
                        let conn = tokio::time::timeout(self.connect_timeout, fut).await.map_err(|_| {
                            RedisStoreError::Config(format!("redis did not answer in {:?}", self.connect_timeout))
                        })??;
                        Conn::Single(conn)
                    }
                }
            },
            Target::Cluster(builder, our_retries) => {
                let mut builder = (*builder).connection_timeout(self.connect_timeout).response_timeout(self.timeout);
                if our_retries {
                    // Retries (MOVED, ASK, TRYAGAIN, a failover) fit within the call timeout, which bounds them.
                    builder = builder.retries(8).min_retry_wait(10).max_retry_wait(100);
                }
                let client = builder.build()?;
                if self.lazy {
                    let config = redis::cluster::ClusterConfig::new()
                        .set_connection_timeout(self.connect_timeout)
                        .set_response_timeout(self.timeout);
                    Conn::Cluster(client.get_pending_async_connection_with_config(config))
                } else {
                    let fut = client.get_async_connection();
                    let conn = tokio::time::timeout(self.connect_timeout, fut).await.map_err(|_| {
                        RedisStoreError::Config(format!("redis cluster did not answer in {:?}", self.connect_timeout))
                    })??;
                    Conn::Cluster(conn)
                }
            }
        };
        let slack = self.ttl_slack.unwrap_or(match self.clock {
            Some(_) => Duration::from_secs(60),
            None => Duration::from_millis(1),
        });
        Ok(RedisStore {
            inner: Arc::new(Inner {
                ttl_slack_ms: u64::try_from(slack.as_millis()).unwrap_or(u64::MAX).max(1),
                conn,
                prefix: self.prefix,
                clock: self.clock,
                timeout: self.timeout,
                failure: self.failure,
                retry_hint: self.retry_hint,
                keep_us: u64::try_from(self.keep.as_micros()).unwrap_or(u64::MAX),
                max_id_len: self.max_id_len,
                hash_over: self.hash_over,
                stats: Counters::default(),
                redis_clock: RedisClock::new(),
            }),
        })
    }
}

struct Inner {
    conn: Conn,
    prefix: String,
    clock: Option<Arc<dyn Clock>>,
    timeout: Duration,
    failure: FailurePolicy,
    retry_hint: Duration,
    keep_us: u64,
    ttl_slack_ms: u64,
    max_id_len: usize,
    hash_over: usize,
    stats: Counters,
    redis_clock: RedisClock,
}

/// What the store knows of Redis's clock: an upper bound of (Redis `TIME` − the store's monotonic clock), in
/// microseconds, and when it was learnt. Each reply carries Redis `TIME`; a reply's time minus the call's send
/// time is an upper bound of the offset (the script ran after the send), the tightest one is kept, and it is
/// loosened by 500 ppm of the time since (clock drift), so the deadline given to Redis is never earlier than the
/// caller's own (unless Redis's clock steps forward, which the first expired reply a caller sees corrects).
struct RedisClock {
    origin: std::time::Instant,
    estimate: std::sync::Mutex<Option<(i64, i64)>>,
}

impl RedisClock {
    fn new() -> Self {
        RedisClock { origin: std::time::Instant::now(), estimate: std::sync::Mutex::new(None) }
    }

    fn now_us(&self) -> i64 {
        i64::try_from(self.origin.elapsed().as_micros()).unwrap_or(i64::MAX)
    }

    fn offset(&self, at: i64) -> Option<i64> {
        let e = *self.estimate.lock().unwrap_or_else(|p| p.into_inner());
        e.map(|(off, learnt)| off.saturating_add(at.saturating_sub(learnt).max(0) / 2000))
    }

    /// The deadline of a call sent at `sent` (store clock) in Redis time, or -1 before any reply.
    fn deadline(&self, sent: i64, timeout: Duration) -> i64 {
        let timeout = i64::try_from(timeout.as_micros()).unwrap_or(i64::MAX);
        self.offset(sent).map_or(-1, |off| sent.saturating_add(timeout).saturating_add(off))
    }

    /// Learns from a reply of Redis time `redis_us` to a call sent at `sent`; `reset` trusts it over the current
    /// estimate (after an expired reply a caller saw: the estimate was too low).
    fn learn(&self, sent: i64, redis_us: i64, reset: bool) {
        let sample = redis_us.saturating_sub(sent);
        let now = self.now_us();
        let aged = self.offset(now);
        let mut e = self.estimate.lock().unwrap_or_else(|p| p.into_inner());
        match aged {
            Some(aged) if !reset && sample > aged => {}
            _ => *e = Some((sample, now)),
        }
    }
}

/// The Redis and Redis Cluster [`Store`]. Clones share one connection.
///
/// ```no_run
/// use floodgate::{Policy, Store};
/// use floodgate_redis::RedisStore;
/// use std::time::Duration;
///
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let store = RedisStore::connect("redis://127.0.0.1:6379/").await?;
/// let policy = Policy::sliding_window(10, Duration::from_secs(1))?;
/// assert!(store.hit(b"ip:192.0.2.1", &policy, 1).await?.allowed);
/// assert_eq!(store.delete_buckets(b"ip:192.0.2.1").await?, 1);
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct RedisStore {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let topology = match self.inner.conn {
            Conn::Single(_) | Conn::Watched(_) => "single",
            Conn::Cluster(_) => "cluster",
        };
        f.debug_struct("RedisStore")
            .field("topology", &topology)
            .field("prefix", &self.inner.prefix)
            .field("timeout", &self.inner.timeout)
            .field("failure", &self.inner.failure)
            .field("redis_time", &self.inner.clock.is_none())
            .finish()
    }
}

impl RedisStore {
    /// A builder (see [`RedisStoreBuilder`]).
    ///
    /// ```
    /// let builder = floodgate_redis::RedisStore::builder().prefix("myapp");
    /// # drop(builder);
    /// ```
    pub fn builder() -> RedisStoreBuilder {
        RedisStoreBuilder::default()
    }

    /// A store on the single Redis at `url`, with the default options.
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), floodgate_redis::RedisStoreError> {
    /// let store = floodgate_redis::RedisStore::connect("redis://127.0.0.1:6379/").await?;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn connect(url: &str) -> Result<RedisStore, RedisStoreError> {
        Self::builder().url(url).build().await
    }

    /// The faults met so far.
    ///
    /// ```no_run
    /// # async fn run(store: floodgate_redis::RedisStore) {
    /// let stats = store.stats();
    /// println!("{} hits allowed while redis was away", stats.failed_open);
    /// # }
    /// ```
    pub fn stats(&self) -> RedisStats {
        let s = &self.inner.stats;
        RedisStats {
            failed_open: s.failed_open.load(Ordering::Relaxed),
            failed_closed: s.failed_closed.load(Ordering::Relaxed),
            errors: s.errors.load(Ordering::Relaxed),
            timeouts: s.timeouts.load(Ordering::Relaxed),
            script_reloads: s.script_reloads.load(Ordering::Relaxed),
            failures: s.failures.load(Ordering::Relaxed),
            unavailable: s.unavailable.load(Ordering::Relaxed),
            backend: s.backend.load(Ordering::Relaxed),
            wrong_type: s.wrong_type.load(Ordering::Relaxed),
            expired: s.expired.load(Ordering::Relaxed),
            reconnects: match &self.inner.conn {
                Conn::Watched(c) => c.reconnects.load(Ordering::Relaxed),
                _ => 0,
            },
        }
    }

    /// The key prefix.
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), floodgate_redis::RedisStoreError> {
    /// let store = floodgate_redis::RedisStore::connect("redis://127.0.0.1/").await?;
    /// assert_eq!(store.prefix(), "floodgate");
    /// # Ok(())
    /// # }
    /// ```
    pub fn prefix(&self) -> &str {
        &self.inner.prefix
    }

    /// The Redis key that holds `id`'s state under `policy`: `<prefix>:{<encoded id>}:<policy key>` (for
    /// operators and tests).
    ///
    /// ```no_run
    /// use floodgate::Policy;
    /// use std::time::Duration;
    /// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
    /// let store = floodgate_redis::RedisStore::builder().url("redis://127.0.0.1/").prefix("rl").build().await?;
    /// let policy = Policy::fixed_window(10, Duration::from_secs(1))?;
    /// assert_eq!(store.bucket_key(b"user:1", &policy), b"rl:{user:1}:fixed_window:10/1000000us");
    /// assert_eq!(store.bucket_key(b"a}b", &policy), b"rl:{a%7Db}:fixed_window:10/1000000us");
    /// # Ok(())
    /// # }
    /// ```
    pub fn bucket_key(&self, id: &[u8], policy: &Policy) -> Vec<u8> {
        key::bucket_key(&self.index_key(id), policy.key())
    }

    /// The Redis key that holds the runs of `id`'s sliding log under `policy` (a sorted set beside the bucket):
    /// `<prefix>:{<encoded id>}#<policy key>`. Only [`Algorithm::SlidingLog`] policies write it.
    ///
    /// ```no_run
    /// use floodgate::Policy;
    /// use std::time::Duration;
    /// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
    /// let store = floodgate_redis::RedisStore::builder().url("redis://127.0.0.1/").prefix("rl").build().await?;
    /// let policy = Policy::sliding_log(10, Duration::from_secs(1))?;
    /// assert_eq!(store.log_key(b"user:1", &policy), b"rl:{user:1}#sliding_log:10/1000000us");
    /// # Ok(())
    /// # }
    /// ```
    pub fn log_key(&self, id: &[u8], policy: &Policy) -> Vec<u8> {
        key::log_key(&self.index_key(id), policy.key())
    }

    /// The Redis key of `id`'s index, the set of its bucket keys: `<prefix>:{<encoded id>}`, or
    /// `<prefix>:{%sha256:<hex>}` for an id longer than the hashing threshold
    /// ([`RedisStoreBuilder::hash_ids_longer_than`]).
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
    /// let store = floodgate_redis::RedisStore::builder().url("redis://127.0.0.1/").prefix("rl").build().await?;
    /// assert_eq!(store.index_key(b"user:1"), b"rl:{user:1}");
    /// assert_eq!(store.index_key(b""), b"rl:{%}");
    /// # Ok(())
    /// # }
    /// ```
    pub fn index_key(&self, id: &[u8]) -> Vec<u8> {
        key::index_key(&self.inner.prefix, id, self.inner.hash_over)
    }

    fn now_arg(&self) -> i64 {
        match &self.inner.clock {
            Some(c) => i64::try_from(c.now().as_micros()).unwrap_or(i64::MAX),
            None => -1,
        }
    }

    fn check_id(&self, id: &[u8]) -> Result<(), RedisStoreError> {
        if id.len() > self.inner.max_id_len {
            return Err(RedisStoreError::IdTooLong { len: id.len(), max: self.inner.max_id_len });
        }
        Ok(())
    }

    /// Runs `script` by EVALSHA; on NOSCRIPT, once more by EVAL (which loads it again).
    async fn eval(&self, script: &ScriptSource, keys: &[&[u8]], args: impl Fn(&mut Cmd)) -> redis::RedisResult<Value> {
        let mut cmd = redis::cmd("EVALSHA");
        cmd.arg(script.sha()).arg(keys.len()).arg(keys);
        args(&mut cmd);
        match self.inner.conn.query(&cmd).await {
            Err(e) if matches!(e.kind(), ErrorKind::Server(ServerErrorKind::NoScript)) => {
                self.inner.stats.script_reloads.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(script = script.name(), "floodgate-redis: NOSCRIPT, loading the script again");
                let mut cmd = redis::cmd("EVAL");
                cmd.arg(script.source()).arg(keys.len()).arg(keys);
                args(&mut cmd);
                self.inner.conn.query(&cmd).await
            }
            r => r,
        }
    }

    async fn decide_raw(&self, id: &[u8], policy: &Policy, op: Op, cost: u64) -> Result<Decision, RedisStoreError> {
        self.check_id(id)?;
        let index = self.index_key(id);
        let bucket = key::bucket_key(&index, policy.key());
        let op = match op {
            Op::Hit => "h",
            Op::Force => "f",
            Op::Set => "s",
        };
        let v = self.run_policy_script(&bucket, &index, policy, op, cost).await?;
        parse_decision(v)
    }

    /// Runs the policy's script with a deadline; an expired reply the caller still waits for (the clock estimate
    /// was off: the script changed nothing) is retried once with the corrected estimate.
    async fn run_policy_script(
        &self,
        bucket: &[u8],
        index: &[u8],
        policy: &Policy,
        op: &'static str,
        cost: u64,
    ) -> Result<Value, RedisStoreError> {
        let clock = &self.inner.redis_clock;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let sent = clock.now_us();
            let deadline = clock.deadline(sent, self.inner.timeout);
            let v = self.run_policy_script_once(bucket, index, policy, op, cost, deadline).await?;
            match self.read_redis_time(v, sent) {
                Err(RedisStoreError::Expired { late_us }) if attempt == 1 => {
                    tracing::debug!(late_us, "floodgate-redis: a call expired by a wrong clock estimate; retrying");
                }
                r => return r,
            }
        }
    }

    /// Takes Redis `TIME` off the end of a script's reply and learns from it; an expired reply is
    /// [`RedisStoreError::Expired`].
    fn read_redis_time(&self, v: Value, sent: i64) -> Result<Value, RedisStoreError> {
        let clock = &self.inner.redis_clock;
        match v {
            Value::Array(mut items) => {
                if matches!(items.first(), Some(Value::BulkString(b)) if b == b"expired") {
                    let (redis_us, late) = match (items.get(1), items.get(2)) {
                        (Some(r), Some(l)) => (int(r)?, micros(l)?),
                        _ => return Err(RedisStoreError::Reply(format!("short expired reply {items:?}"))),
                    };
                    clock.learn(sent, redis_us, true);
                    return Err(RedisStoreError::Expired { late_us: late });
                }
                match items.pop() {
                    Some(Value::Int(redis_us)) => clock.learn(sent, redis_us, false),
                    other => return Err(RedisStoreError::Reply(format!("expected redis time last, got {other:?}"))),
                }
                Ok(Value::Array(items))
            }
            other => Ok(other),
        }
    }

    async fn run_policy_script_once(
        &self,
        bucket: &[u8],
        index: &[u8],
        policy: &Policy,
        op: &'static str,
        cost: u64,
        deadline: i64,
    ) -> Result<Value, RedisStoreError> {
        let now = self.now_arg();
        let (keep, slack) = (self.inner.keep_us, self.inner.ttl_slack_ms);
        let script = scripts::for_algorithm(policy.algorithm());
        let v = match policy.algorithm() {
            Algorithm::FixedWindow | Algorithm::SlidingWindow => {
                self.eval(script, &[bucket, index], |c| {
                    c.arg(op)
                        .arg(cost)
                        .arg(now)
                        .arg(keep)
                        .arg(slack)
                        .arg(deadline)
                        .arg(policy.limit())
                        .arg(policy.window_micros());
                })
                .await?
            }
            Algorithm::SlidingLog => {
                let log = key::log_key(index, policy.key());
                self.eval(script, &[bucket, index, &log], |c| {
                    c.arg(op)
                        .arg(cost)
                        .arg(now)
                        .arg(keep)
                        .arg(slack)
                        .arg(deadline)
                        .arg(policy.limit())
                        .arg(policy.window_micros());
                })
                .await?
            }
            a if a.is_meter() => {
                self.eval(script, &[bucket, index], |c| {
                    c.arg(op)
                        .arg(cost)
                        .arg(now)
                        .arg(keep)
                        .arg(slack)
                        .arg(deadline)
                        .arg(policy.meter_unit())
                        .arg(policy.meter_drain())
                        .arg(policy.capacity());
                })
                .await?
            }
            a => {
                return Err(RedisStoreError::Config(format!("algorithm {a} is not supported by this floodgate-redis")));
            }
        };
        Ok(v)
    }

    async fn inspect_raw(&self, id: &[u8], policy: &Policy) -> Result<Option<BucketInfo>, RedisStoreError> {
        self.check_id(id)?;
        let index = self.index_key(id);
        let bucket = key::bucket_key(&index, policy.key());
        let v = self.run_policy_script(&bucket, &index, policy, "i", 0).await?;
        parse_info(v)
    }

    async fn delete_raw(&self, id: &[u8]) -> Result<u64, RedisStoreError> {
        self.check_id(id)?;
        let index = self.index_key(id);
        let now = self.now_arg();
        let v = self
            .eval(scripts::delete(), &[&index], |c| {
                c.arg(now);
            })
            .await?;
        match v {
            Value::Int(n) => u64::try_from(n).map_err(|_| RedisStoreError::Reply(format!("negative count {n}"))),
            other => Err(RedisStoreError::Reply(format!("{other:?}"))),
        }
    }

    /// Runs one call under the timeout; returns the reply, or the fault as a [`StoreError`] (counted).
    /// Every fault is counted here, once, by kind (how it is answered is counted by the caller).
    async fn guarded<T>(&self, fut: impl Future<Output = Result<T, RedisStoreError>>) -> StoreResult<T> {
        let e = match tokio::time::timeout(self.inner.timeout, fut).await {
            Ok(Ok(v)) => return Ok(v),
            Ok(Err(e)) => e.classify(),
            Err(_) => {
                self.count_kind(FaultKind::Timeout);
                return Err(StoreError::Timeout(self.inner.timeout));
            }
        };
        let kind = e.kind();
        self.count_kind(kind);
        match kind {
            // The client's own response timeout (set to the same duration) may fire first; an expired call
            // reached Redis past its deadline.
            FaultKind::Timeout | FaultKind::Expired => Err(StoreError::Timeout(self.inner.timeout)),
            _ => Err(e.into()),
        }
    }

    fn count_kind(&self, kind: FaultKind) {
        let s = &self.inner.stats;
        let counter = match kind {
            FaultKind::InvalidId => return,
            FaultKind::Timeout => &s.timeouts,
            FaultKind::Unavailable => &s.unavailable,
            FaultKind::Backend => &s.backend,
            FaultKind::WrongType => &s.wrong_type,
            FaultKind::Expired => &s.expired,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        s.failures.fetch_add(1, Ordering::Relaxed);
    }

    async fn decide(&self, id: &[u8], policy: &Policy, op: Op, cost: u64) -> StoreResult<Decision> {
        let result = self.guarded(self.decide_raw(id, policy, op, cost)).await;
        match result {
            Ok(d) => {
                self.log_success();
                Ok(d)
            }
            Err(e @ StoreError::InvalidId(_)) => Err(e),
            Err(e) => self.on_fault(e, policy, op, cost),
        }
    }

    fn on_fault(&self, e: StoreError, policy: &Policy, op: Op, cost: u64) -> StoreResult<Decision> {
        let stats = &self.inner.stats;
        let capacity = policy.capacity();
        match self.inner.failure {
            FailurePolicy::Error => {
                stats.errors.fetch_add(1, Ordering::Relaxed);
                self.log_fault(&e, "returning the error");
                Err(e)
            }
            FailurePolicy::FailOpen => {
                stats.failed_open.fetch_add(1, Ordering::Relaxed);
                self.log_fault(&e, "failing open");
                let never = op == Op::Hit && cost > capacity;
                Ok(Decision {
                    allowed: !never,
                    limit: capacity,
                    remaining: capacity.saturating_sub(cost),
                    reset_after: Duration::ZERO,
                    retry_after: None,
                    fallback: true,
                })
            }
            FailurePolicy::FailClosed => {
                stats.failed_closed.fetch_add(1, Ordering::Relaxed);
                self.log_fault(&e, "failing closed");
                Ok(Decision {
                    allowed: false,
                    limit: capacity,
                    remaining: 0,
                    reset_after: Duration::ZERO,
                    retry_after: Some(self.inner.retry_hint),
                    fallback: true,
                })
            }
        }
    }

    fn count_error<T>(&self, r: StoreResult<T>) -> StoreResult<T> {
        match &r {
            Err(StoreError::InvalidId(_)) => {}
            Err(e) => {
                self.inner.stats.errors.fetch_add(1, Ordering::Relaxed);
                self.log_fault(e, "returning the error");
            }
            Ok(_) => self.log_success(),
        }
        r
    }

    fn log_fault(&self, e: &StoreError, action: &'static str) {
        if self.inner.stats.degraded.swap(true, Ordering::Relaxed) {
            tracing::debug!(error = %e, action, "floodgate-redis: call failed");
        } else {
            tracing::warn!(error = %e, action, "floodgate-redis: redis is failing (further failures are logged at debug)");
        }
    }

    #[inline]
    fn log_success(&self) {
        let degraded = &self.inner.stats.degraded;
        if degraded.load(Ordering::Relaxed) && degraded.swap(false, Ordering::Relaxed) {
            tracing::info!("floodgate-redis: redis answers again");
        }
    }
}

fn int(v: &Value) -> Result<i64, RedisStoreError> {
    match v {
        Value::Int(n) => Ok(*n),
        other => Err(RedisStoreError::Reply(format!("expected an integer, got {other:?}"))),
    }
}

fn micros(v: &Value) -> Result<u64, RedisStoreError> {
    let n = int(v)?;
    u64::try_from(n).map_err(|_| RedisStoreError::Reply(format!("negative number {n}")))
}

fn parse_decision(v: Value) -> Result<Decision, RedisStoreError> {
    match v {
        Value::Array(items) if items.len() == 5 => {
            let retry = int(&items[4])?;
            Ok(Decision {
                allowed: int(&items[0])? == 1,
                limit: micros(&items[1])?,
                remaining: micros(&items[2])?,
                reset_after: Duration::from_micros(micros(&items[3])?),
                retry_after: (retry >= 0).then(|| Duration::from_micros(retry.unsigned_abs())),
                fallback: false,
            })
        }
        other => Err(RedisStoreError::Reply(format!("expected a decision, got {other:?}"))),
    }
}

fn parse_info(v: Value) -> Result<Option<BucketInfo>, RedisStoreError> {
    match v {
        Value::Nil => Ok(None),
        Value::Array(items) if items.len() == 7 => {
            let reset_after = Duration::from_micros(micros(&items[2])?);
            Ok(Some(BucketInfo {
                used: micros(&items[0])?,
                remaining: micros(&items[1])?,
                reset_after,
                // The script's time of the inspection, plus reset_after: summed here, past 2^53 doubles round.
                expires_at: Timestamp::from_micros(micros(&items[6])?) + reset_after,
                next_window_after: Duration::from_micros(micros(&items[3])?),
                created: Timestamp::from_micros(micros(&items[4])?),
                updated: Timestamp::from_micros(micros(&items[5])?),
            }))
        }
        other => Err(RedisStoreError::Reply(format!("expected bucket info, got {other:?}"))),
    }
}

impl Store for RedisStore {
    async fn hit(&self, id: &[u8], policy: &Policy, cost: u64) -> StoreResult<Decision> {
        self.decide(id, policy, Op::Hit, cost).await
    }

    async fn inc(&self, id: &[u8], policy: &Policy, cost: u64) -> StoreResult<Decision> {
        self.decide(id, policy, Op::Force, cost).await
    }

    async fn set(&self, id: &[u8], policy: &Policy, used: u64) -> StoreResult<Decision> {
        self.decide(id, policy, Op::Set, used).await
    }

    async fn inspect(&self, id: &[u8], policy: &Policy) -> StoreResult<Option<BucketInfo>> {
        let r = self.guarded(self.inspect_raw(id, policy)).await;
        self.count_error(r)
    }

    async fn delete_buckets(&self, id: &[u8]) -> StoreResult<u64> {
        let r = self.guarded(self.delete_raw(id)).await;
        self.count_error(r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redis_clock_keeps_the_tightest_upper_bound_and_loosens_it_with_time() {
        let c = RedisClock::new();
        let timeout = Duration::from_millis(100);
        assert_eq!(c.deadline(0, timeout), -1, "no deadline before any reply");
        // Redis is 1 000 000 µs ahead; a reply seen 300 µs after its send, then a tighter one (50 µs).
        c.learn(10, 1_000_310, false);
        assert_eq!(c.offset(10), Some(1_000_300));
        c.learn(20, 1_000_070, false);
        assert_eq!(c.offset(20).map(|o| o <= 1_000_050 + 1), Some(true));
        // A looser sample does not replace it.
        c.learn(30, 1_005_000, false);
        assert!(c.offset(30).is_some_and(|o| o < 1_001_000));
        // Deadline: send + timeout + bound, never before the true deadline (offset 1 000 000).
        let d = c.deadline(1_000, timeout);
        assert!((1_101_000..=1_101_100).contains(&d), "{d}");
        // 500 ppm of loosening: 10 s later the bound is 5 ms looser.
        let later = c.now_us() + 10_000_000;
        let aged = c.offset(later).unwrap_or_default();
        assert!((1_005_000..1_006_000).contains(&aged), "{aged}");
        // An expired reply a caller saw resets the estimate even to a looser one.
        c.learn(40, 1_500_040, true);
        assert!(c.offset(40).is_some_and(|o| o >= 1_499_000), "{:?}", c.offset(40));
    }
}
