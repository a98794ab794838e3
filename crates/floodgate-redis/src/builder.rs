//! The store's options, and connecting to a single Redis or a Redis Cluster.

use std::sync::Arc;
use std::time::Duration;

use floodgate::Clock;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClientBuilder;

use crate::DEFAULT_HASH_IDS_LONGER_THAN;
use crate::conn;
use crate::conn::Conn;
use crate::failure::{FailurePolicy, RedisStoreError};
use crate::redis_clock::RedisClock;
use crate::stats::Counters;
use crate::store::{Inner, RedisStore};

pub(crate) enum Target {
    None,
    Single(Box<redis::Client>),
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
    shards_per_slot: u16,
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
            shards_per_slot: 1,
            lazy: false,
        }
    }
}

impl RedisStoreBuilder {
    /// A single Redis at `url` (`redis://[user:password@]host:port[/db]`; for `rediss://`, enable a TLS feature
    /// of the re-exported [`redis`] crate in your own Cargo.toml, e.g. `tokio-rustls-comp`).
    pub fn url(mut self, url: &str) -> Self {
        self.target = match redis::Client::open(url) {
            Ok(c) => Target::Single(Box::new(c)),
            Err(e) => Target::Error(format!("bad redis url: {e}")),
        };
        self
    }

    /// A single Redis through a ready [`redis::Client`] (any connection option redis-rs has).
    pub fn client(mut self, client: redis::Client) -> Self {
        self.target = Target::Single(Box::new(client));
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
    /// [`hash_ids_longer_than`](Self::hash_ids_longer_than)); longer ids get [`StoreError::InvalidId`](floodgate::StoreError::InvalidId).
    pub fn max_id_len(mut self, max: usize) -> Self {
        self.max_id_len = max;
        self
    }

    /// Ids longer than `len` bytes take their hash tag from their SHA-256 (`{%sha256:<hex>}`) instead of their
    /// percent-encoding (default [`DEFAULT_HASH_IDS_LONGER_THAN`], 4096): the tag that decides the id's slot (so
    /// its shard) and names its sliding logs' keys. A smaller value keeps sliding logs' keys compact (a
    /// percent-encoded id can take three times its length); changing it on a live deployment moves the ids
    /// between the two lengths to other slots, which starts their limits afresh.
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
    /// let store = floodgate_redis::RedisStore::builder()
    ///     .url("redis://127.0.0.1/")
    ///     .prefix("rl")
    ///     .hash_ids_longer_than(8)
    ///     .build()
    ///     .await?;
    /// let log = floodgate::Policy::sliding_log(5, std::time::Duration::from_secs(1))?;
    /// assert_eq!(store.log_key(b"user:42", &log), b"rl:{user:42}#sliding_log:5/1000000us");
    /// assert!(store.log_key(b"user:42:session:7", &log).starts_with(b"rl:{%sha256:"));
    /// # Ok(())
    /// # }
    /// ```
    pub fn hash_ids_longer_than(mut self, len: usize) -> Self {
        self.hash_over = len;
        self
    }

    /// How many shards (Redis hashes) share each Redis Cluster slot's counters (default 1: one shard per slot,
    /// at most 16 384 per prefix). A shard stays in Redis's compact listpack encoding up to 512 fields (Redis's
    /// default `hash-max-listpack-entries`), so one shard per slot suits up to about 4 million counters; past
    /// that, a shard may become a plain hash table (about 100
    /// bytes more per counter) and pruning its expired fields scans more of them at once. Set this to about
    /// `counters / 4_000_000` (rounded up) for bigger deployments. An id's shard within its slot is a hash of
    /// its hash tag (the first two bytes of its SHA-256) modulo this; the shard numbered 0 keeps the key of one shard per slot. Changing it
    /// on a live deployment moves the counters of the ids whose shard number changes, which starts their limits
    /// afresh. Zero is refused by [`build`](Self::build).
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), floodgate_redis::RedisStoreError> {
    /// let store = floodgate_redis::RedisStore::builder()
    ///     .url("redis://127.0.0.1/")
    ///     .prefix("rl")
    ///     .shards_per_slot(16)
    ///     .build()
    ///     .await?;
    /// let shard = store.shard_key(b"user:42");
    /// assert!(shard.starts_with(b"rl#"));
    /// # Ok(())
    /// # }
    /// ```
    pub fn shards_per_slot(mut self, n: u16) -> Self {
        self.shards_per_slot = n;
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
        if self.shards_per_slot == 0 {
            return Err(RedisStoreError::Config("shards_per_slot must be at least 1".to_owned()));
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
                        Conn::Single(ConnectionManager::new_lazy_with_config(*client, config)?)
                    } else {
                        let fut = ConnectionManager::new_with_config(*client, config);
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
                shards_per_slot: self.shards_per_slot,
                stats: Counters::default(),
                redis_clock: RedisClock::new(),
            }),
        })
    }
}
