//! The store: its calls, their deadlines, and how faults are answered.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use floodgate::algorithm::Op;
use floodgate::{Algorithm, BucketInfo, Clock, Decision, Policy, Store, StoreError, StoreResult};
use redis::{Cmd, ErrorKind, ServerErrorKind, Value};

use crate::builder::RedisStoreBuilder;
use crate::conn::Conn;
use crate::failure::{FailurePolicy, FaultKind, RedisStoreError};
use crate::key;
use crate::redis_clock::RedisClock;
use crate::reply::{int, micros, parse_decision, parse_info};
use crate::scripts;
use crate::scripts::ScriptSource;
use crate::stats::{Counters, RedisStats};

/// The keys of one policy's call: the id's shard and the counter's field in it, the id hash of the previous
/// release, and the bucket and index of the per-bucket layout before it.
struct Keys<'a> {
    shard: &'a [u8],
    field: &'a [u8],
    hash: &'a [u8],
    bucket: &'a [u8],
    index: &'a [u8],
}

pub(crate) struct Inner {
    pub(crate) conn: Conn,
    pub(crate) prefix: String,
    pub(crate) clock: Option<Arc<dyn Clock>>,
    pub(crate) timeout: Duration,
    pub(crate) failure: FailurePolicy,
    pub(crate) retry_hint: Duration,
    pub(crate) keep_us: u64,
    pub(crate) ttl_slack_ms: u64,
    pub(crate) max_id_len: usize,
    pub(crate) hash_over: usize,
    pub(crate) shards_per_slot: u16,
    pub(crate) stats: Counters,
    pub(crate) redis_clock: RedisClock,
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
    pub(crate) inner: Arc<Inner>,
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

    /// The Redis key that holds `id`'s state under `policy`: the id's shard, `<prefix>#{<tag>}`, a hash shared by
    /// the ids of one cluster slot (`<tag>` is the shortest alphanumeric string in the id's slot), whose field
    /// [`field`](Self::field) holds the state (for operators and tests).
    ///
    /// ```no_run
    /// use floodgate::Policy;
    /// use std::time::Duration;
    /// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
    /// let store = floodgate_redis::RedisStore::builder().url("redis://127.0.0.1/").prefix("rl").build().await?;
    /// let policy = Policy::fixed_window(10, Duration::from_secs(1))?;
    /// let shard = store.bucket_key(b"user:1", &policy);
    /// assert!(shard.starts_with(b"rl#{"));
    /// assert_eq!(store.field(b"user:1", &policy), b"user:1 \x01w10/1000000");
    /// # Ok(())
    /// # }
    /// ```
    pub fn bucket_key(&self, id: &[u8], _policy: &Policy) -> Vec<u8> {
        self.shard_key(id)
    }

    /// The field of `id`'s counter under `policy` in its shard ([`bucket_key`](Self::bucket_key)):
    /// `<field id> <policy part>`. The field id is the id (`%` and space escaped as `%25` and `%20`, the empty id a
    /// lone `%`), or `%h` and 32 hex digits of its SHA-256 when that is longer than 40 bytes; the policy part is
    /// a named policy's name, or an unnamed one's key made short (`fixed_window:10/1000000us` is
    /// `\x01w10/1000000`), so a field fits Redis's compact listpack encoding (64 bytes).
    ///
    /// ```no_run
    /// use floodgate::Policy;
    /// use std::time::Duration;
    /// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
    /// let store = floodgate_redis::RedisStore::connect("redis://127.0.0.1/").await?;
    /// let policy = Policy::gcra(10, Duration::from_secs(1))?.named("login")?;
    /// assert_eq!(store.field(b"user 1", &policy), b"user%201 login");
    /// # Ok(())
    /// # }
    /// ```
    pub fn field(&self, id: &[u8], policy: &Policy) -> Vec<u8> {
        key::field(id, policy)
    }

    /// The Redis key that holds the runs of `id`'s sliding log under `policy` (a sorted set beside the shard):
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
        key::log_key(&key::index_key(&self.inner.prefix, &self.id_hash_key(id)), policy.key())
    }

    /// The shard of `id`: `<prefix>#{<tag>}` (or `<prefix>#<n>{<tag>}` for its slot's shard `n` > 0, see
    /// [`RedisStoreBuilder::shards_per_slot`]), where `<tag>` is the shortest alphanumeric string whose Redis
    /// Cluster slot is the id's (the slot of the id's encoded hash tag, `<prefix>{<encoded id>}`, or
    /// `<prefix>{%sha256:<hex>}` for an id longer than the hashing threshold,
    /// [`RedisStoreBuilder::hash_ids_longer_than`]). Every key of the id is in that slot.
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
    /// let store = floodgate_redis::RedisStore::builder().url("redis://127.0.0.1/").prefix("rl").build().await?;
    /// let shard = store.shard_key(b"user:1");
    /// assert!(shard.starts_with(b"rl#{") && shard.len() <= 8);
    /// # Ok(())
    /// # }
    /// ```
    pub fn shard_key(&self, id: &[u8]) -> Vec<u8> {
        self.shard_of(&self.id_hash_key(id))
    }

    /// The shard of the id whose id hash key is `id_hash`.
    fn shard_of(&self, id_hash: &[u8]) -> Vec<u8> {
        key::shard_key(&self.inner.prefix, id_hash, self.inner.shards_per_slot)
    }

    /// The id hash of `id` in the previous release's layout: `<prefix>{<encoded id>}` (still read, see the crate
    /// docs on migration).
    fn id_hash_key(&self, id: &[u8]) -> Vec<u8> {
        key::id_key(&self.inner.prefix, id, self.inner.hash_over)
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
        let op = match op {
            Op::Hit => "h",
            Op::Force => "f",
            Op::Set => "s",
        };
        let v = self.run_policy_script(id, policy, op, cost).await?;
        parse_decision(v)
    }

    /// Runs the policy's script with a deadline; an expired reply the caller still waits for (the clock estimate
    /// was off: the script changed nothing) is retried once with the corrected estimate.
    async fn run_policy_script(
        &self,
        id: &[u8],
        policy: &Policy,
        op: &'static str,
        cost: u64,
    ) -> Result<Value, RedisStoreError> {
        // Every key derives from the id hash key: the id is encoded (or hashed) once per call.
        let hash = self.id_hash_key(id);
        let shard = self.shard_of(&hash);
        let field = key::field(id, policy);
        let index = key::index_key(&self.inner.prefix, &hash);
        let bucket = key::bucket_key(&index, policy.key());
        let keys = Keys { shard: &shard, field: &field, hash: &hash, bucket: &bucket, index: &index };
        let clock = &self.inner.redis_clock;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let sent = clock.now_us();
            let deadline = clock.deadline(sent, self.inner.timeout);
            let v = self.run_policy_script_once(&keys, policy, op, cost, deadline).await?;
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
        keys: &Keys<'_>,
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
                self.eval(script, &[keys.shard, keys.hash, keys.bucket, keys.index], |c| {
                    c.arg(op)
                        .arg(cost)
                        .arg(now)
                        .arg(keep)
                        .arg(slack)
                        .arg(deadline)
                        .arg(keys.field)
                        .arg(policy.key())
                        .arg(policy.limit())
                        .arg(policy.window_micros());
                })
                .await?
            }
            Algorithm::SlidingLog => {
                let log = key::log_key(keys.index, policy.key());
                self.eval(script, &[keys.shard, keys.hash, keys.bucket, keys.index, &log], |c| {
                    c.arg(op)
                        .arg(cost)
                        .arg(now)
                        .arg(keep)
                        .arg(slack)
                        .arg(deadline)
                        .arg(keys.field)
                        .arg(policy.key())
                        .arg(policy.limit())
                        .arg(policy.window_micros());
                })
                .await?
            }
            a if a.is_meter() => {
                self.eval(script, &[keys.shard, keys.hash, keys.bucket, keys.index], |c| {
                    c.arg(op)
                        .arg(cost)
                        .arg(now)
                        .arg(keep)
                        .arg(slack)
                        .arg(deadline)
                        .arg(keys.field)
                        .arg(policy.key())
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
        let v = self.run_policy_script(id, policy, "i", 0).await?;
        parse_info(v)
    }

    async fn delete_raw(&self, id: &[u8]) -> Result<u64, RedisStoreError> {
        self.check_id(id)?;
        let hash = self.id_hash_key(id);
        let (shard, index) = (self.shard_of(&hash), key::index_key(&self.inner.prefix, &hash));
        let prefix = key::field_prefix(id, 0);
        let now = self.now_arg();
        let v = self
            .eval(scripts::delete(), &[&shard, &hash, &index], |c| {
                c.arg(now).arg(&prefix);
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
