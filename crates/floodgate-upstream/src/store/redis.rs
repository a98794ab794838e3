//! The Redis [`BucketStore`]: every operation is one Lua script (sent with `EVALSHA`, loaded again after a
//! `NOSCRIPT`), so a fleet of processes shares one budget per bucket and one global limit, atomically.
//!
//! Redis's clock is the only clock: windows are key expiries (`PX` of the reset plus the latency), `Retry-After`
//! blocks are keys that expire, leases are scored by Redis `TIME`. Keys, under a prefix `P`:
//! `P:b:KEY` (a bucket's hash), `P:w:KEY` (its window), `P:ra:KEY` (a Retry-After block), `P:l:KEY` (leases in
//! flight), `P:p:KEY` (the pioneer), `P:map:ROUTE` (a learned mapping), `P:g:log`, `P:g:ra`, `P:g:lat` (the
//! global limit), `P:seq` (lease ids), `P:expired` (leases found expired). Every key but `P:seq` and `P:expired`
//! has a TTL.
//!
//! `P` is the prefix given, in braces (`{myapp}`): a Redis Cluster hash tag, so every key of one store lives in
//! one hash slot, and each script (which touches keys it derives) runs on the one node that holds them. The same
//! keys serve a single Redis and a Redis Cluster ([`RedisBucketStore::connect_cluster`]); stores with different
//! prefixes spread over the cluster's slots.

use std::time::Duration;

use async_trait::async_trait;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{Route, RoutingInfo, SingleNodeRoutingInfo, SlotAddr};
use redis::{FromRedisValue, Script};

use super::{Acquire, BucketInfo, BucketStore, Lease, Report, StoreConfig, StoreError, StoreResult, bucket_key};

const PRELUDE: &str = include_str!("redis.lua.prelude");

/// A [`BucketStore`] on Redis, shared by every process that uses the same Redis and prefix.
///
/// ```no_run
/// use floodgate_upstream::store::{RedisBucketStore, StoreConfig};
/// use floodgate_upstream::Upstream;
///
/// # async fn run() -> Result<(), floodgate_upstream::store::StoreError> {
/// let store = RedisBucketStore::connect("redis://127.0.0.1:6379/", "myapp", StoreConfig::default()).await?;
/// let upstream = Upstream::new(store);
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct RedisBucketStore {
    conn: Conn,
    prefix: String,
    config: StoreConfig,
    timeout: Duration,
    idle: Duration,
    acquire: Script,
    record: Script,
    ops: Script,
}

/// A single Redis (reconnecting), or a Redis Cluster (following its slots).
#[derive(Clone)]
enum Conn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

/// The hash-tagged prefix: `{prefix}` (`{upstream}` for an empty one, whose tag would not count).
fn tagged(prefix: &str) -> String {
    if prefix.is_empty() { "{upstream}".to_owned() } else { format!("{{{prefix}}}") }
}

impl std::fmt::Debug for RedisBucketStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisBucketStore").field("prefix", &self.prefix).finish_non_exhaustive()
    }
}

fn backend(e: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(e.to_string())
}

fn micros(d: Duration) -> u64 {
    // Lua numbers are doubles: keep every time below 2^53 microseconds (285 years).
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX).min(1 << 53)
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).clamp(1, 1 << 53)
}

type InfoReply = (String, i64, i64, i64, i64, i64, i64, i64, i64);

fn to_info(r: InfoReply) -> BucketInfo {
    let (key, known, remaining, unlimited, limit, window, retry, latency, in_flight) = r;
    let positive_ms = |v: i64| u64::try_from(v).ok().filter(|v| *v > 0).map(Duration::from_millis);
    BucketInfo {
        key,
        remaining: (known == 1).then(|| if unlimited == 1 { u64::MAX } else { u64::try_from(remaining).unwrap_or(0) }),
        limit: u64::try_from(limit).ok(),
        reset_after: positive_ms(window),
        retry_after: positive_ms(retry),
        latency: Duration::from_micros(u64::try_from(latency).unwrap_or(0)),
        in_flight: u64::try_from(in_flight).unwrap_or(0),
    }
}

impl RedisBucketStore {
    /// Connects to `url` (`redis://host:port/db`), keys under `prefix`, with a 1 s per-call timeout.
    pub async fn connect(url: &str, prefix: &str, config: StoreConfig) -> StoreResult<RedisBucketStore> {
        let client = redis::Client::open(url).map_err(backend)?;
        Self::connect_client(client, prefix, config).await
    }

    /// [`connect`](Self::connect) through a ready [`redis::Client`] (TLS with your own CA, credentials: any
    /// option redis-rs has).
    pub async fn connect_client(
        client: redis::Client,
        prefix: &str,
        config: StoreConfig,
    ) -> StoreResult<RedisBucketStore> {
        let timeout = Duration::from_secs(1);
        let manager_config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout))
            .set_number_of_retries(1);
        let conn = tokio::time::timeout(timeout, ConnectionManager::new_with_config(client, manager_config))
            .await
            .map_err(|_| StoreError::Backend(format!("redis did not answer in {timeout:?}")))?
            .map_err(backend)?;
        Ok(RedisBucketStore::over(Conn::Single(conn), prefix, config, timeout))
    }

    /// Connects to the Redis Cluster that `nodes` (`redis://host:port` of some of its nodes) belong to, keys under
    /// `prefix` (hash-tagged: all in one slot), with a 1 s per-call timeout. Redirections (`MOVED`, `ASK`) and
    /// failovers are followed within the timeout.
    ///
    /// ```no_run
    /// use floodgate_upstream::store::{RedisBucketStore, StoreConfig};
    ///
    /// # async fn run() -> Result<(), floodgate_upstream::store::StoreError> {
    /// let nodes = ["redis://10.0.0.1:7000", "redis://10.0.0.2:7000", "redis://10.0.0.3:7000"];
    /// let store = RedisBucketStore::connect_cluster(nodes, "myapp", StoreConfig::default()).await?;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn connect_cluster<I, S>(nodes: I, prefix: &str, config: StoreConfig) -> StoreResult<RedisBucketStore>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let nodes: Vec<String> = nodes.into_iter().map(|n| n.as_ref().to_owned()).collect();
        Self::connect_cluster_client(redis::cluster::ClusterClientBuilder::new(nodes), prefix, config).await
    }

    /// [`connect_cluster`](Self::connect_cluster) through a [`redis::cluster::ClusterClientBuilder`] (TLS with
    /// your own CA, credentials); the store sets its timeouts and retries.
    pub async fn connect_cluster_client(
        builder: redis::cluster::ClusterClientBuilder,
        prefix: &str,
        config: StoreConfig,
    ) -> StoreResult<RedisBucketStore> {
        let timeout = Duration::from_secs(1);
        let client = builder
            .connection_timeout(timeout)
            .response_timeout(timeout)
            .retries(8)
            .min_retry_wait(10)
            .max_retry_wait(100)
            .build()
            .map_err(backend)?;
        let conn = tokio::time::timeout(timeout, client.get_async_connection())
            .await
            .map_err(|_| StoreError::Backend(format!("redis cluster did not answer in {timeout:?}")))?
            .map_err(backend)?;
        Ok(RedisBucketStore::over(Conn::Cluster(conn), prefix, config, timeout))
    }

    fn over(conn: Conn, prefix: &str, config: StoreConfig, timeout: Duration) -> RedisBucketStore {
        RedisBucketStore {
            conn,
            prefix: tagged(prefix),
            idle: config.mapping_ttl.max(Duration::from_secs(60)),
            config,
            timeout,
            acquire: Script::new(&format!("{PRELUDE}\n{}", include_str!("redis_acquire.lua"))),
            record: Script::new(&format!("{PRELUDE}\n{}", include_str!("redis_record.lua"))),
            ops: Script::new(&format!("{PRELUDE}\n{}", include_str!("redis_ops.lua"))),
        }
    }

    /// Sets the per-call timeout (default 1 s).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The configuration.
    pub fn config(&self) -> &StoreConfig {
        &self.config
    }

    async fn call<T: FromRedisValue>(&self, script: &Script, args: &[String]) -> StoreResult<T> {
        let mut invocation = script.prepare_invoke();
        // One key, in the store's slot, routes the script to the node that holds every key it derives.
        invocation.key(format!("{}:seq", self.prefix));
        invocation.arg(&self.prefix);
        for a in args {
            invocation.arg(a);
        }
        let call = async {
            match self.conn.clone() {
                Conn::Single(mut c) => invocation.invoke_async(&mut c).await,
                Conn::Cluster(mut c) => invocation.invoke_async(&mut c).await,
            }
        };
        match tokio::time::timeout(self.timeout, call).await {
            Ok(r) => r.map_err(backend),
            Err(_) => Err(StoreError::Backend(format!("redis did not answer in {:?}", self.timeout))),
        }
    }

    async fn op<T: FromRedisValue>(&self, op: &str, name: &str, a: String, b: String, c: String) -> StoreResult<T> {
        let args = [op.to_owned(), name.to_owned(), a, b, c, millis(self.idle).to_string()];
        self.call(&self.ops, &args).await
    }
}

fn opt(v: Option<u64>) -> String {
    v.map(|v| v.min(1 << 53).to_string()).unwrap_or_default()
}

#[async_trait]
impl BucketStore for RedisBucketStore {
    async fn lookup(&self, route: &str) -> StoreResult<Option<BucketInfo>> {
        let r: Option<InfoReply> = self.op("lookup", route, String::new(), String::new(), String::new()).await?;
        Ok(r.map(to_info))
    }

    async fn update(&self, route: &str, remaining: u64) -> StoreResult<()> {
        let _: i64 = self.op("update", route, opt(Some(remaining)), String::new(), String::new()).await?;
        Ok(())
    }

    async fn update_full(
        &self,
        route: &str,
        remaining: u64,
        reset_after: Duration,
        latency: Duration,
    ) -> StoreResult<()> {
        let (b, c) = (micros(reset_after).to_string(), micros(latency).to_string());
        let _: i64 = self.op("update_full", route, opt(Some(remaining)), b, c).await?;
        Ok(())
    }

    async fn record(&self, route: &str, lease: Option<&Lease>, report: &Report) -> StoreResult<BucketInfo> {
        let args = [
            route.to_owned(),
            lease.map(|l| l.id.to_string()).unwrap_or_default(),
            lease.map(|l| l.key.clone()).unwrap_or_default(),
            opt(report.remaining),
            opt(report.limit),
            report.reset_after.map(|d| micros(d).to_string()).unwrap_or_default(),
            report.retry_after.map(|d| micros(d).to_string()).unwrap_or_default(),
            if report.global { "1" } else { "0" }.to_owned(),
            report.bucket.as_deref().map(|b| bucket_key(b, route)).unwrap_or_default(),
            micros(report.latency).to_string(),
            millis(self.config.mapping_ttl).to_string(),
            micros(self.config.window_tolerance).to_string(),
            millis(self.idle).to_string(),
        ];
        let r: InfoReply = self.call(&self.record, &args).await?;
        Ok(to_info(r))
    }

    async fn release(&self, lease: &Lease) -> StoreResult<()> {
        let _: i64 = self.op("release", &lease.key, lease.id.to_string(), String::new(), String::new()).await?;
        Ok(())
    }

    async fn cleanup(&self, age: Duration) -> StoreResult<usize> {
        let pattern = format!("{}:b:*", self.prefix);
        let head = format!("{}:b:", self.prefix);
        let mut cursor: u64 = 0;
        let mut dropped = 0;
        // Bounded: at most 10 000 SCAN pages.
        for _ in 0..10_000 {
            let cmd = redis::cmd("SCAN").arg(cursor).arg("MATCH").arg(&pattern).arg("COUNT").arg(500).clone();
            let scan = async {
                match self.conn.clone() {
                    Conn::Single(mut c) => cmd.query_async::<(u64, Vec<String>)>(&mut c).await,
                    Conn::Cluster(mut c) => {
                        // The store's keys are all in one slot: scan the primary that holds it.
                        let slot = Route::with_key(head.as_bytes(), SlotAddr::Master);
                        let routing = RoutingInfo::SingleNode(SingleNodeRoutingInfo::SpecificNode(slot));
                        let value = c.route_command(cmd.clone(), routing).await?;
                        redis::from_redis_value(value).map_err(redis::RedisError::from)
                    }
                }
            };
            let (next, keys): (u64, Vec<String>) = match tokio::time::timeout(self.timeout, scan).await {
                Ok(r) => r.map_err(backend)?,
                Err(_) => return Err(StoreError::Backend("redis SCAN timed out".to_owned())),
            };
            for k in keys {
                let Some(name) = k.strip_prefix(&head) else { continue };
                let n: i64 = self.op("cleanup", name, micros(age).to_string(), String::new(), String::new()).await?;
                dropped += usize::from(n == 1);
            }
            cursor = next;
            if cursor == 0 {
                break;
            }
        }
        Ok(dropped)
    }

    async fn leases_expired(&self) -> StoreResult<u64> {
        let n: i64 = self.op("expired", "", String::new(), String::new(), String::new()).await?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    async fn timeout_for(&self, route: &str) -> StoreResult<Acquire> {
        let global = self.config.global_limit;
        let args = [
            route.to_owned(),
            if self.config.is_exempt(route) { "1" } else { "0" }.to_owned(),
            micros(self.config.lease_timeout).to_string(),
            micros(self.config.poll).to_string(),
            global.map_or(0, |g| g.limit.min(1 << 53)).to_string(),
            global.map_or(0, |g| micros(g.per)).to_string(),
            millis(self.idle).to_string(),
        ];
        let (go, n, key): (i64, i64, String) = self.call(&self.acquire, &args).await?;
        let n = u64::try_from(n).unwrap_or(1);
        Ok(if go == 1 { Acquire::Now(Lease { id: n, key }) } else { Acquire::Wait(Duration::from_millis(n.max(1))) })
    }
}
