//! What the HTTP and gRPC front ends share: the store, the live config, the metrics.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use floodgate::{BoxStore, BucketInfo, Decision, MemoryStore, Policy, Store, StoreResult};

use crate::config::{Config, ConfigError};
use crate::metrics::Metrics;

/// The store the server decides with. The in-memory store is called directly (no boxed future per call);
/// any other store goes through [`BoxStore`].
#[derive(Clone)]
pub enum Backend {
    /// The default in-memory store.
    Memory(MemoryStore),
    /// A store chosen at run time (Redis, ...).
    Dyn(BoxStore),
}

impl std::fmt::Debug for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl Backend {
    /// A short name for logs: `memory` or `dyn`.
    pub fn name(&self) -> &'static str {
        match self {
            Backend::Memory(_) => "memory",
            Backend::Dyn(_) => "dyn",
        }
    }
}

/// Which rate-limit headers RLS answers ask Envoy to add to the response (`--response-headers`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ResponseHeaders {
    /// None (the default, as the reference's).
    #[default]
    Off,
    /// `RateLimit-Limit`, `RateLimit-Remaining`, `RateLimit-Reset`: the reference's
    /// `LIMIT_RESPONSE_HEADERS_ENABLED=true`.
    Draft,
    /// The IETF fields `RateLimit-Policy: "name";q=LIMIT;w=WINDOW` and `RateLimit: "name";r=REMAINING;t=RESET`.
    Ietf,
    /// `X-RateLimit-Limit`, `X-RateLimit-Remaining`, `X-RateLimit-Reset`.
    XRateLimit,
}

/// Where the config comes from.
#[derive(Clone, Debug)]
pub enum ConfigSource {
    /// The built-in default ([`crate::config::BUILTIN_YAML`]).
    Builtin,
    /// A file or directory, re-read on reload.
    Path(PathBuf),
    /// A directory whose files may share a domain (merged; `--merge-domains`), re-read on reload.
    PathMergingDomains(PathBuf),
}

/// For logs: `built-in`, the path, or the path and `(merging domains)`.
impl std::fmt::Display for ConfigSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConfigSource::Builtin => f.write_str("built-in"),
            ConfigSource::Path(p) => write!(f, "{}", p.display()),
            ConfigSource::PathMergingDomains(p) => write!(f, "{} (merging domains)", p.display()),
        }
    }
}

/// What a config source's files look like now: each `*.yaml` / `*.yml` file (or the one file) with its length,
/// modification time and a hash of its contents, following symlinks (so a swapped directory symlink shows as a
/// change, and so does a rewrite of the same size whose modification time was put back).
pub type Fingerprint = Vec<(PathBuf, u64, Option<std::time::SystemTime>, u64)>;

impl ConfigSource {
    /// The source's [`Fingerprint`]; empty for the built-in config or when the path cannot be read.
    pub fn fingerprint(&self) -> Fingerprint {
        let path = match self {
            ConfigSource::Builtin => return Vec::new(),
            ConfigSource::Path(p) | ConfigSource::PathMergingDomains(p) => p,
        };
        let stat = |p: PathBuf| {
            let meta = std::fs::metadata(&p).ok()?;
            if !meta.is_file() {
                return None;
            }
            // Files above the size limit are refused by the loader anyway: their length stands for them.
            let contents =
                if meta.len() <= crate::config::MAX_CONFIG_BYTES { std::fs::read(&p).ok()? } else { Vec::new() };
            let hash = std::hash::BuildHasher::hash_one(
                &std::hash::BuildHasherDefault::<std::hash::DefaultHasher>::default(),
                &contents,
            );
            Some((p, meta.len(), meta.modified().ok(), hash))
        };
        if !path.is_dir() {
            return stat(path.clone()).into_iter().collect();
        }
        let Ok(entries) = std::fs::read_dir(path) else { return Vec::new() };
        let mut out: Fingerprint = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
            .take(crate::config::MAX_CONFIG_FILES + 1)
            .filter_map(stat)
            .collect();
        out.sort();
        out
    }

    /// A hash of the contents of the source's files (their paths, lengths and contents; not their
    /// modification times); `None` for the built-in config.
    pub fn content_hash(&self) -> Option<u64> {
        if matches!(self, ConfigSource::Builtin) {
            return None;
        }
        let contents: Vec<(PathBuf, u64, u64)> =
            self.fingerprint().into_iter().map(|(p, len, _, hash)| (p, len, hash)).collect();
        Some(std::hash::BuildHasher::hash_one(
            &std::hash::BuildHasherDefault::<std::hash::DefaultHasher>::default(),
            &contents,
        ))
    }

    /// Loads the config.
    /// Each of the config's warnings ([`Config::warnings`]) is logged once per load.
    pub fn load(&self) -> Result<Config, ConfigError> {
        let config = match self {
            ConfigSource::Builtin => Config::builtin(),
            ConfigSource::Path(p) => Config::load(p),
            ConfigSource::PathMergingDomains(p) => Config::load_with(p, true),
        }?;
        for w in &config.warnings {
            tracing::warn!(warning = %w, "config read as the reference reads it (`floodgate check --strict` refuses it)");
        }
        Ok(config)
    }
}

/// [`ConfigSource::load`]; with `allow_empty`, a source with no domain and no policy loads as an empty config
/// (with a warning) instead of [`ConfigError::Empty`].
fn load_allowing_empty(source: &ConfigSource, allow_empty: bool) -> Result<Config, ConfigError> {
    match source.load() {
        Err(ConfigError::Empty { path, files }) if allow_empty => {
            tracing::warn!(
                %path,
                files,
                "EMPTY CONFIG: no domain and no policy found; serving with NO LIMITS because of --allow-empty-config"
            );
            Ok(Config::default())
        }
        other => other,
    }
}

/// The server's shared state.
pub struct AppState {
    config: ArcSwap<Config>,
    source: ConfigSource,
    backend: Backend,
    /// The metrics.
    pub metrics: Arc<Metrics>,
    /// The bearer token the mutating HTTP endpoints require, if any.
    pub token: Option<String>,
    /// Answer an RLS request for an unconfigured domain with NOT_FOUND instead of OK.
    pub strict_domains: bool,
    /// RLS: count every hit, denied ones too, as envoyproxy/ratelimit does (`--reference-counting`).
    /// Off by default: a denied descriptor consumes nothing.
    pub reference_counting: bool,
    /// RLS: the global shadow mode (`--shadow-mode`, the reference's `SHADOW_MODE`): the overall code is
    /// always OK; the statuses still say which descriptor is over.
    pub global_shadow_mode: bool,
    /// RLS: the rate-limit headers to add to Envoy's response, describing the tightest limit of the request.
    pub response_headers: ResponseHeaders,
    /// RLS: fill the response's `dynamic_metadata` (`--response-dynamic-metadata`, the reference's
    /// `RESPONSE_DYNAMIC_METADATA`): the request, the quota-mode violations, and the `metadata` of the rules
    /// whose descriptors are under their limit.
    pub response_dynamic_metadata: bool,
    /// Per-rule metrics: the share of a limit past which hits count as near it (`--near-limit-ratio`, the
    /// reference's `NEAR_LIMIT_RATIO`; default 0.8).
    pub near_limit_ratio: f64,
    /// HTTP: the host names (without port) a request's `Host` header may name; `None` accepts any. The server
    /// binary sets it when it listens on loopback (`localhost`, `127.0.0.1`, `::1`, plus `--allowed-hosts`), so a
    /// web page cannot reach the API through DNS rebinding.
    pub allowed_hosts: Option<Vec<String>>,
    /// The upstream buckets served at `/v1/upstream/*` (in memory unless the binary gives it Redis's).
    pub upstream: floodgate_upstream::Upstream,
    /// In cluster mode, the node (kept here: dropping it stops the node); `GET /v1/cluster` reads it.
    pub cluster: Option<floodgate_cluster::ClusterHandle>,
    /// Readiness (`/readyz`, gRPC health): the probe's timeout and its cached outcome.
    pub readiness: crate::health::Readiness,
    /// TLS for both listeners (`--tls-cert`, `--tls-key`, `--tls-client-ca`); `None` serves plain text.
    pub tls: Option<Arc<crate::tls::Tls>>,
    /// Serve an empty config (no domain, no policy) as "no limits" instead of refusing it
    /// (`--allow-empty-config`).
    pub allow_empty_config: bool,
    /// The access log (`--access-log`), if any: one JSON line per decision ([`crate::access_log`]).
    pub access_log: Option<Arc<crate::access_log::AccessLog>>,
    /// Whether spans are sent over OTLP (`--otlp-endpoint`): without it, no span is made.
    pub traced: bool,
    /// A hash of the live config's file contents ([`ConfigSource::content_hash`]; `None` for the built-in
    /// config): a reload that finds the same contents is a no-op.
    live_hash: parking_lot::Mutex<Option<u64>>,
    reload_lock: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState").field("source", &self.source).field("backend", &self.backend).finish()
    }
}

impl AppState {
    /// Loads the config from `source` and builds the state.
    pub fn new(
        source: ConfigSource,
        backend: Backend,
        token: Option<String>,
        strict_domains: bool,
    ) -> Result<Self, ConfigError> {
        Self::with_empty_config(source, backend, token, strict_domains, false)
    }

    /// [`new`](Self::new); with `allow_empty_config`, a source that holds no domain and no policy loads as
    /// an empty config (no limits) instead of being refused, at start and on reload.
    pub fn with_empty_config(
        source: ConfigSource,
        backend: Backend,
        token: Option<String>,
        strict_domains: bool,
        allow_empty_config: bool,
    ) -> Result<Self, ConfigError> {
        let metrics = Arc::new(Metrics::new());
        let hash = source.content_hash();
        let mut config = load_allowing_empty(&source, allow_empty_config)?;
        config.attach_metrics(&metrics);
        Ok(AppState {
            config: ArcSwap::from_pointee(config),
            source,
            backend,
            metrics,
            token,
            strict_domains,
            reference_counting: false,
            global_shadow_mode: false,
            response_headers: ResponseHeaders::Off,
            response_dynamic_metadata: false,
            near_limit_ratio: crate::metrics::NEAR_LIMIT_RATIO,
            allowed_hosts: None,
            upstream: floodgate_upstream::Upstream::in_memory(),
            cluster: None,
            readiness: crate::health::Readiness::default(),
            tls: None,
            allow_empty_config,
            access_log: None,
            traced: false,
            live_hash: parking_lot::Mutex::new(hash),
            reload_lock: tokio::sync::Mutex::new(()),
        })
    }

    /// The live config (cheap: no lock, no copy).
    #[inline]
    pub fn config(&self) -> arc_swap::Guard<Arc<Config>> {
        self.config.load()
    }

    /// The config's source.
    pub fn source(&self) -> &ConfigSource {
        &self.source
    }

    /// Re-reads the config. On error the old config stays in force and the error is returned (and counted).
    /// Files whose contents are those of the live config are not read again: the live config is returned and
    /// nothing is counted, so one edit noticed by both SIGHUP and the watcher reloads once
    /// ([`reload_changed`](Self::reload_changed) says which happened).
    pub async fn reload(&self) -> Result<Arc<Config>, ConfigError> {
        self.reload_changed().await.map(|(config, _)| config)
    }

    /// [`reload`](Self::reload), also saying whether the files had changed (`false`: a no-op).
    pub async fn reload_changed(&self) -> Result<(Arc<Config>, bool), ConfigError> {
        let _one_at_a_time = self.reload_lock.lock().await;
        let source = self.source.clone();
        let allow_empty = self.allow_empty_config;
        // The hash is taken before the files are read: if they change in between, the next reload reads them.
        let loaded = tokio::task::spawn_blocking(move || {
            let hash = source.content_hash();
            (hash, load_allowing_empty(&source, allow_empty))
        })
        .await
        .unwrap_or_else(|e| {
            (None, Err(ConfigError::Io { path: "<reload>".into(), source: std::io::Error::other(e.to_string()) }))
        });
        let (hash, loaded) = loaded;
        if hash.is_some() && hash == *self.live_hash.lock() {
            return Ok((self.config.load_full(), false));
        }
        // Cluster mode decides window counters only: a config with other algorithms is refused.
        let loaded = loaded.and_then(|c| if self.cluster.is_some() { c.check_cluster().map(|()| c) } else { Ok(c) });
        match loaded {
            Ok(mut config) => {
                config.attach_metrics(&self.metrics);
                let config = Arc::new(config);
                self.config.store(config.clone());
                *self.live_hash.lock() = hash;
                self.metrics.observe_reload(true);
                Ok((config, true))
            }
            Err(e) => {
                self.metrics.observe_reload(false);
                Err(e)
            }
        }
    }

    /// Reloads the config whenever its files change (checked every `every`), until `stop`. A refused config
    /// is logged once and the old one kept, as on SIGHUP. Does nothing for the built-in config.
    pub async fn watch_config(self: Arc<Self>, every: Duration, stop: tokio_util::sync::CancellationToken) {
        if matches!(self.source, ConfigSource::Builtin) || every.is_zero() {
            return;
        }
        let fingerprint = |s: Arc<Self>| async move {
            tokio::task::spawn_blocking(move || s.source.fingerprint()).await.unwrap_or_default()
        };
        let mut last = fingerprint(self.clone()).await;
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(every) => {}
            }
            let now = fingerprint(self.clone()).await;
            if now == last {
                continue;
            }
            last = now;
            match self.reload_changed().await {
                Ok((_, false)) => tracing::debug!("config files touched, contents unchanged: nothing to reload"),
                Ok((cfg, true)) => tracing::info!(
                    domains = cfg.domains().len(),
                    policies = cfg.policies().count(),
                    "config files changed: reloaded"
                ),
                Err(e) => {
                    tracing::error!(error = %e, "config files changed: reload refused, the old config stays in force")
                }
            }
        }
    }

    /// One untimed [`Store::inspect`] of `id` (readiness probes: not counted in the store's latency).
    pub(crate) async fn probe_store(&self, id: &[u8], policy: &Policy) -> StoreResult<()> {
        match &self.backend {
            Backend::Memory(m) => m.inspect(id, policy).await.map(drop),
            Backend::Dyn(d) => d.inspect(id, policy).await.map(drop),
        }
    }

    /// The store's name.
    pub fn backend_name(&self) -> &'static str {
        self.backend.name()
    }

    /// [`Store::hit`], timed into the store latency histogram.
    #[inline]
    pub async fn hit(&self, id: &[u8], policy: &Policy, cost: u64) -> StoreResult<Decision> {
        let start = Instant::now();
        let r = match &self.backend {
            Backend::Memory(m) => m.hit(id, policy, cost).await,
            Backend::Dyn(d) => d.hit(id, policy, cost).await,
        };
        let elapsed = start.elapsed();
        self.metrics.observe_store(elapsed, r.as_ref().err());
        crate::access_log::add_store_time(elapsed);
        r
    }

    /// [`Store::hit_all`] (all or nothing on the in-memory store), timed as one store call.
    pub async fn hit_all(&self, hits: &[floodgate::Hit<'_>]) -> StoreResult<Vec<Decision>> {
        let start = Instant::now();
        let r = match &self.backend {
            Backend::Memory(m) => m.hit_all(hits).await,
            Backend::Dyn(d) => d.hit_all(hits).await,
        };
        let elapsed = start.elapsed();
        self.metrics.observe_store(elapsed, r.as_ref().err());
        crate::access_log::add_store_time(elapsed);
        r
    }

    /// [`Store::inc`] (counts `cost` whether or not it fits), timed.
    pub async fn inc(&self, id: &[u8], policy: &Policy, cost: u64) -> StoreResult<Decision> {
        let start = Instant::now();
        let r = match &self.backend {
            Backend::Memory(m) => m.inc(id, policy, cost).await,
            Backend::Dyn(d) => d.inc(id, policy, cost).await,
        };
        let elapsed = start.elapsed();
        self.metrics.observe_store(elapsed, r.as_ref().err());
        crate::access_log::add_store_time(elapsed);
        r
    }

    /// [`Store::inspect`], timed.
    pub async fn inspect(&self, id: &[u8], policy: &Policy) -> StoreResult<Option<BucketInfo>> {
        let start = Instant::now();
        let r = match &self.backend {
            Backend::Memory(m) => m.inspect(id, policy).await,
            Backend::Dyn(d) => d.inspect(id, policy).await,
        };
        let elapsed = start.elapsed();
        self.metrics.observe_store(elapsed, r.as_ref().err());
        crate::access_log::add_store_time(elapsed);
        r
    }

    /// [`Store::delete_buckets`], timed.
    pub async fn delete_buckets(&self, id: &[u8]) -> StoreResult<u64> {
        let start = Instant::now();
        let r = match &self.backend {
            Backend::Memory(m) => m.delete_buckets(id).await,
            Backend::Dyn(d) => d.delete_buckets(id).await,
        };
        let elapsed = start.elapsed();
        self.metrics.observe_store(elapsed, r.as_ref().err());
        crate::access_log::add_store_time(elapsed);
        r
    }
}

/// Lets a repeated log line through at most once a second, counting what it held back: an outage of the store
/// logs a line a second, not one per request.
///
/// ```
/// use floodgate_server::state::LogThrottle;
/// let throttle = LogThrottle::new();
/// assert_eq!(throttle.allow_at(100), Some(0));
/// assert_eq!(throttle.allow_at(100), None);
/// assert_eq!(throttle.allow_at(100), None);
/// assert_eq!(throttle.allow_at(101), Some(2)); // two lines were held back
/// ```
#[derive(Debug, Default)]
pub struct LogThrottle {
    /// The second (Unix time) of the last line let through, plus one (0: none yet).
    last: std::sync::atomic::AtomicU64,
    suppressed: std::sync::atomic::AtomicU64,
}

impl LogThrottle {
    /// A throttle that has let nothing through yet.
    pub const fn new() -> Self {
        LogThrottle { last: std::sync::atomic::AtomicU64::new(0), suppressed: std::sync::atomic::AtomicU64::new(0) }
    }

    /// Whether to log now: `Some(lines held back since the last one)`, or `None` to stay quiet.
    pub fn allow(&self) -> Option<u64> {
        let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
        self.allow_at(secs)
    }

    /// [`allow`](Self::allow) at the Unix second `secs`.
    pub fn allow_at(&self, secs: u64) -> Option<u64> {
        use std::sync::atomic::Ordering::Relaxed;
        let stamp = secs.saturating_add(1);
        let last = self.last.load(Relaxed);
        if last != stamp && self.last.compare_exchange(last, stamp, Relaxed, Relaxed).is_ok() {
            return Some(self.suppressed.swap(0, Relaxed));
        }
        self.suppressed.fetch_add(1, Relaxed);
        None
    }
}

/// The throttle of the "store failed" warnings.
pub static STORE_FAILURE_LOG: LogThrottle = LogThrottle::new();
