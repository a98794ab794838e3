//! `floodgate`: the rate-limit server. `floodgate serve` and `floodgate check CONFIG`; see the crate README.

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, Subcommand};
use floodgate::MemoryStore;
use floodgate_redis::{FailurePolicy, RedisStore};
use floodgate_server::config::Config;
use floodgate_server::metrics::StoreSource;
use floodgate_server::server::Server;
use floodgate_server::state::{AppState, Backend, ConfigSource, ResponseHeaders};
use floodgate_server::store_metrics;

#[derive(Parser)]
#[command(name = "floodgate", version, about = "Rate limiting as a service: Envoy RLS v3 gRPC and an HTTP JSON API")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the HTTP API and Envoy RLS gRPC (in-memory store unless told otherwise).
    Serve(Box<ServeArgs>),
    /// Validate a config file or directory without serving; exit 1 and list every problem if invalid.
    Check {
        /// A YAML file, or a directory of them.
        config: PathBuf,
        /// Merge files that share a domain (as `serve --merge-domains`).
        #[arg(long, env = "FLOODGATE_MERGE_DOMAINS")]
        merge_domains: bool,
        /// Refuse what loads only with a warning (what the reference's loader accepts: a `rate_limit` without
        /// `requests_per_unit`, `requests_per_unit` beside `unlimited: true`, YAML 1.1 booleans such as `yes`).
        #[arg(long)]
        strict: bool,
        /// Also check that cluster mode (`serve --cluster`) can decide every policy: fixed and sliding window
        /// only.
        #[arg(long)]
        cluster: bool,
    },
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum Headers {
    Off,
    Draft,
    Ietf,
    XRatelimit,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum WhenFullArg {
    Refuse,
    Evict,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum PartitionArg {
    CountLocally,
    SplitLimit,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum Failure {
    Error,
    FailOpen,
    FailClosed,
}

#[derive(clap::Args)]
struct ServeArgs {
    /// HTTP JSON API, /metrics and /healthz.
    #[arg(long, default_value = "127.0.0.1:8080", env = "FLOODGATE_HTTP")]
    http: SocketAddr,
    /// Envoy RLS v3 gRPC.
    #[arg(long, default_value = "127.0.0.1:8081", env = "FLOODGATE_GRPC")]
    grpc: SocketAddr,
    /// Config file or directory (default: the built-in config, see the README). Reloaded on SIGHUP and when
    /// its files change (see --watch-secs).
    #[arg(long, short, env = "FLOODGATE_CONFIG")]
    config: Option<PathBuf>,
    /// TLS on both listeners (gRPC and HTTP): the certificate chain, PEM, leaf first. Re-read on SIGHUP and when
    /// the file changes (rotation without restart).
    #[arg(long, requires = "tls_key", env = "FLOODGATE_TLS_CERT")]
    tls_cert: Option<PathBuf>,
    /// TLS: the certificate's private key, PEM (PKCS#8, PKCS#1 or SEC1).
    #[arg(long, requires = "tls_cert", env = "FLOODGATE_TLS_KEY")]
    tls_key: Option<PathBuf>,
    /// Mutual TLS: require a client certificate signed by one of these CAs (PEM) on both listeners.
    #[arg(long, requires = "tls_cert", env = "FLOODGATE_TLS_CLIENT_CA")]
    tls_client_ca: Option<PathBuf>,
    /// Use Redis at this URL (`redis://host:port[/db]`) instead of memory.
    #[arg(long, conflicts_with = "redis_cluster", env = "FLOODGATE_REDIS")]
    redis: Option<String>,
    /// Cluster mode: listen for peers at this address and share every limit with them, with no central store
    /// (fixed and sliding window policies only; see the floodgate-cluster README).
    #[arg(long, conflicts_with_all = ["redis", "redis_cluster"], env = "FLOODGATE_CLUSTER")]
    cluster: Option<SocketAddr>,
    /// Cluster mode: a peer's HOST:PORT (repeatable, or comma-separated).
    #[arg(long, value_delimiter = ',', requires = "cluster", env = "FLOODGATE_PEER")]
    peer: Vec<String>,
    /// Cluster mode: a DNS NAME:PORT whose every A/AAAA record is a peer, re-resolved as the records' TTL says.
    #[arg(long, value_delimiter = ',', requires = "cluster", env = "FLOODGATE_PEER_DNS")]
    peer_dns: Vec<String>,
    /// Cluster mode: the file holding the cluster's shared secret (or set FLOODGATE_CLUSTER_SECRET). Required.
    #[arg(long, requires = "cluster", env = "FLOODGATE_CLUSTER_SECRET_FILE")]
    cluster_secret_file: Option<PathBuf>,
    /// Cluster mode: this node's id (default: a random one, logged).
    #[arg(long, requires = "cluster", env = "FLOODGATE_NODE_ID")]
    node_id: Option<String>,
    /// Cluster mode: what a node does while it cannot reach every peer. `count-locally` (default): keep counting
    /// on what it sees (each side of a split admits at most the limit per window). `split-limit`: while fewer
    /// than --cluster-expected-nodes nodes are up, each caps its own hits at limit / expected nodes.
    #[arg(
        long,
        value_enum,
        default_value = "count-locally",
        requires = "cluster",
        env = "FLOODGATE_CLUSTER_PARTITION_MODE"
    )]
    cluster_partition_mode: PartitionArg,
    /// Cluster mode: how many nodes the cluster has, this one included (required by --cluster-partition-mode
    /// split-limit, at least 2).
    #[arg(long, requires = "cluster", env = "FLOODGATE_CLUSTER_EXPECTED_NODES")]
    cluster_expected_nodes: Option<usize>,
    /// Cluster mode: mutual TLS between peers. This node's certificate chain (PEM), which must carry the DNS
    /// name `floodgate-cluster` (and, if it has an extended key usage, both serverAuth and clientAuth). With
    /// --cluster-tls-key and --cluster-tls-ca.
    #[arg(long, requires_all = ["cluster", "cluster_tls_key", "cluster_tls_ca"], env = "FLOODGATE_CLUSTER_TLS_CERT")]
    cluster_tls_cert: Option<PathBuf>,
    /// Cluster mode: the private key of --cluster-tls-cert (PEM).
    #[arg(long, requires_all = ["cluster", "cluster_tls_cert", "cluster_tls_ca"], env = "FLOODGATE_CLUSTER_TLS_KEY")]
    cluster_tls_key: Option<PathBuf>,
    /// Cluster mode: the cluster CA (PEM): every peer's certificate must chain to it.
    #[arg(long, requires_all = ["cluster", "cluster_tls_cert", "cluster_tls_key"], env = "FLOODGATE_CLUSTER_TLS_CA")]
    cluster_tls_ca: Option<PathBuf>,
    /// Use a Redis Cluster (comma-separated node URLs) instead of memory.
    #[arg(long, value_delimiter = ',', env = "FLOODGATE_REDIS_CLUSTER")]
    redis_cluster: Option<Vec<String>>,
    /// Redis key prefix.
    #[arg(long, default_value = "floodgate", env = "FLOODGATE_REDIS_PREFIX")]
    redis_prefix: String,
    /// Redis: the most a call may take, in milliseconds, before the failure policy applies.
    #[arg(long, default_value_t = 100, env = "FLOODGATE_REDIS_TIMEOUT_MS")]
    redis_timeout_ms: u64,
    /// Redis: what a decision answers when Redis cannot: `error` (RLS UNAVAILABLE, HTTP 503, so Envoy's
    /// failure_mode_deny decides), `fail-open` (allow), `fail-closed` (deny).
    #[arg(long, value_enum, default_value = "error", env = "FLOODGATE_FAILURE_POLICY")]
    failure_policy: Failure,
    /// Read the bearer token required by the mutating HTTP endpoints from this file (or set FLOODGATE_TOKEN).
    #[arg(long, env = "FLOODGATE_TOKEN_FILE")]
    token_file: Option<PathBuf>,
    /// Answer RLS requests for an unconfigured domain NOT_FOUND instead of OK.
    #[arg(long, env = "FLOODGATE_STRICT_DOMAINS")]
    strict_domains: bool,
    /// RLS: count denied hits too, as envoyproxy/ratelimit does (default: a denied hit consumes nothing).
    #[arg(long, env = "FLOODGATE_REFERENCE_COUNTING")]
    reference_counting: bool,
    /// RLS: rate-limit headers for Envoy to add to responses, describing the tightest limit: `off`, `draft`
    /// (RateLimit-Limit/-Remaining/-Reset, the reference's LIMIT_RESPONSE_HEADERS_ENABLED), `ietf`
    /// (RateLimit-Policy + RateLimit), `x-ratelimit` (X-RateLimit-Limit/-Remaining/-Reset).
    #[arg(long, value_enum, default_value = "off", env = "FLOODGATE_RESPONSE_HEADERS")]
    response_headers: Headers,
    /// Check the config's files every this many seconds and reload when one changed (0: only on SIGHUP).
    #[arg(long, default_value_t = 2, env = "FLOODGATE_WATCH_SECS")]
    watch_secs: u64,
    /// Start (and reload) even when --config holds no domain and no policy, serving with no limits (logged
    /// loudly); default: an empty config is refused, so a wrong path never turns every limit off.
    #[arg(long, env = "FLOODGATE_ALLOW_EMPTY_CONFIG")]
    allow_empty_config: bool,
    /// Merge config files that share a domain (the reference's MERGE_DOMAIN_CONFIG); default: an error.
    #[arg(long, env = "FLOODGATE_MERGE_DOMAINS")]
    merge_domains: bool,
    /// RLS: global shadow mode (the reference's SHADOW_MODE): decide and count, but answer OK overall.
    #[arg(long, env = "FLOODGATE_SHADOW_MODE")]
    shadow_mode: bool,
    /// RLS: fill the response's dynamic metadata (the reference's RESPONSE_DYNAMIC_METADATA): the request's
    /// descriptors, quotaModeEnabled / quotaModeViolations, and the `metadata` of rules under their limit.
    #[arg(long, env = "FLOODGATE_RESPONSE_DYNAMIC_METADATA")]
    response_dynamic_metadata: bool,
    /// Per-rule metrics: the most metric keys made from request values (detailed_metric, value_to_metric,
    /// limit overrides) per domain; past it, hits count under key="__overflow__".
    #[arg(long, default_value_t = floodgate_server::metrics::DEFAULT_MAX_RULE_KEYS, env = "FLOODGATE_MAX_METRIC_KEYS")]
    max_metric_keys: u64,
    /// Per-rule metrics: the share of a limit past which hits count as near it (the reference's
    /// NEAR_LIMIT_RATIO), above 0 and at most 1.
    #[arg(long, default_value_t = floodgate_server::metrics::NEAR_LIMIT_RATIO, value_parser = ratio, env = "FLOODGATE_NEAR_LIMIT_RATIO")]
    near_limit_ratio: f64,
    /// In-memory store: bound the number of keys (default: unbounded).
    #[arg(long, env = "FLOODGATE_MAX_KEYS")]
    max_keys: Option<usize>,
    /// In-memory store with --max-keys: what a new key gets when the store is full of live keys. `refuse`
    /// (default): it is denied until a key expires, and no live key ever loses its count. `evict`: the keys
    /// nearest their reset are evicted and start again from empty, which can admit them past their limit.
    #[arg(long, value_enum, default_value = "refuse", env = "FLOODGATE_WHEN_FULL")]
    when_full: WhenFullArg,
    /// HTTP: more host names a request's `Host` header may name (repeatable, or comma-separated). When the HTTP
    /// port is on loopback, only `localhost`, `127.0.0.1` and `::1` are accepted besides these, so a web page
    /// cannot reach the API by DNS rebinding; on other addresses any Host is accepted unless this is given.
    #[arg(long, value_delimiter = ',', env = "FLOODGATE_ALLOWED_HOSTS")]
    allowed_hosts: Vec<String>,
    /// The most connections open at once on each port (HTTP, gRPC); near it, connections that have sent
    /// nothing are closed first, past it new ones are closed at once.
    #[arg(long, default_value_t = 10_000, env = "FLOODGATE_MAX_CONNECTIONS")]
    max_connections: usize,
    /// Close a connection that sends and receives nothing for this many seconds while the server waits for it
    /// (between requests, or in a stalled request's headers or body). A connection that sends no byte at all is
    /// closed after 10 s.
    #[arg(long, default_value_t = 60, env = "FLOODGATE_IDLE_TIMEOUT_SECS")]
    idle_timeout_secs: u64,
    /// On shutdown, the most seconds to wait for in-flight requests and open connections.
    #[arg(long, default_value_t = 30, env = "FLOODGATE_DRAIN_SECS")]
    drain_secs: u64,
    /// gRPC threads, each a single-threaded runtime with its own SO_REUSEPORT listener (default: one per core;
    /// 0 serves gRPC on the shared worker threads instead).
    #[arg(long, env = "FLOODGATE_GRPC_THREADS")]
    grpc_threads: Option<usize>,
    /// Worker threads of the shared runtime (HTTP, signals; gRPC with --grpc-threads 0). Default: one per core.
    #[arg(long, env = "FLOODGATE_THREADS")]
    threads: Option<usize>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Check { config, merge_domains, strict, cluster } => check(&config, merge_domains, strict, cluster),
        Command::Serve(args) => {
            let args = *args;
            let _log_guard = init_tracing();
            let mut rt = tokio::runtime::Builder::new_multi_thread();
            if let Some(n) = args.threads.filter(|n| *n > 0) {
                rt.worker_threads(n);
            }
            let rt = match rt.enable_all().build() {
                Ok(rt) => rt,
                Err(e) => {
                    let _ = writeln!(std::io::stderr(), "floodgate: cannot start the runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            match rt.block_on(serve(args)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    let _ = writeln!(std::io::stderr(), "floodgate: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

/// Logs go to stderr through a bounded queue and a writer thread of their own, so logging can never stop the
/// server: a reader that went away (`| head`, a dead log shipper) or a full pipe only loses log lines (counted
/// by the writer, never blocking a request or a signal), and a failed write is never reported with a panic.
/// The guard flushes what is queued when `main` returns.
fn init_tracing() -> tracing_appender::non_blocking::WorkerGuard {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .lossy(true)
        .buffered_lines_limit(64 * 1024)
        .finish(std::io::stderr());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_ansi(ansi)
        .log_internal_errors(false)
        .init();
    guard
}

fn check(path: &std::path::Path, merge_domains: bool, strict: bool, cluster: bool) -> ExitCode {
    let loaded = Config::load_with(path, merge_domains)
        .and_then(|c| if cluster { c.check_cluster().map(|()| c) } else { Ok(c) });
    match loaded {
        Ok(cfg) if strict && !cfg.warnings.is_empty() => {
            for w in &cfg.warnings {
                eprintln!("{w}");
            }
            eprintln!("{}: {} warning(s), refused by --strict", path.display(), cfg.warnings.len());
            ExitCode::FAILURE
        }
        Ok(cfg) => {
            for w in &cfg.warnings {
                eprintln!("warning: {w}");
            }
            let domains = cfg.domains();
            let rules: usize = domains.iter().map(|d| count_rules(&d.root)).sum();
            println!(
                "{}: ok ({} domain(s), {} rule(s), {} polic{})",
                path.display(),
                domains.len(),
                rules,
                cfg.policies().count(),
                if cfg.policies().count() == 1 { "y" } else { "ies" }
            );
            for d in &domains {
                inner_wildcards(&d.file, &d.root);
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}

/// Notes (on stderr; the config is still valid) every value with a `*` before its end: a wildcard here, but a
/// literal `*` for envoyproxy/ratelimit, which only knows a trailing `*`.
fn inner_wildcards(file: &str, level: &floodgate_server::config::Level) {
    for r in level.rules() {
        if r.value.as_deref().is_some_and(|v| v.trim_end_matches('*').contains('*')) {
            eprintln!(
                "{file}:{}:{}: note: {}: the `*` before the end of the value is a wildcard here; \
                 envoyproxy/ratelimit matches it literally",
                r.pos.line, r.pos.col, r.path
            );
        }
        inner_wildcards(file, &r.children);
    }
}

fn count_rules(level: &floodgate_server::config::Level) -> usize {
    level.rules().iter().map(|r| 1 + count_rules(&r.children)).sum()
}

async fn serve(args: ServeArgs) -> Result<(), Box<dyn std::error::Error>> {
    let token = read_token(&args)?;
    let source = match &args.config {
        Some(p) if args.merge_domains => ConfigSource::PathMergingDomains(p.clone()),
        Some(p) => ConfigSource::Path(p.clone()),
        None => ConfigSource::Builtin,
    };
    if args.cluster.is_some() {
        check_cluster_config(&source)?;
    }
    let (backend, store_source, cluster) = match args.cluster {
        Some(listen) => {
            let (b, handle) = cluster_backend(&args, listen).await?;
            let source = store_metrics::cluster(handle.stats_reader());
            (b, Some(source), Some(handle))
        }
        None => {
            let (b, s) = backend(&args).await?;
            (b, s, None)
        }
    };
    let mut state =
        AppState::with_empty_config(source.clone(), backend, token, args.strict_domains, args.allow_empty_config)?;
    state.readiness = floodgate_server::health::Readiness::new(Duration::from_millis(args.redis_timeout_ms));
    state.cluster = cluster;
    if let Some(upstream) = upstream_buckets(&args).await? {
        state.upstream = upstream;
    }
    state.upstream.spawn_cleanup(Duration::from_secs(60), Duration::from_secs(3600));
    if let Some(s) = store_source {
        let _ = state.metrics.store_source.set(s);
    }
    tune(&mut state, &args);
    if let (Some(cert), Some(key)) = (&args.tls_cert, &args.tls_key) {
        let files = floodgate_server::tls::TlsFiles {
            cert: cert.clone(),
            key: key.clone(),
            client_ca: args.tls_client_ca.clone(),
        };
        let mutual = files.client_ca.is_some();
        state.tls = Some(floodgate_server::tls::Tls::load(files)?);
        tracing::info!(cert = %cert.display(), mutual, "TLS on both listeners");
    }
    {
        let cfg = state.config();
        tracing::info!(config = ?source, domains = cfg.domains().len(), policies = cfg.policies().count(), "config loaded");
    }
    if state.token.is_none() {
        tracing::info!(
            "no bearer token set: the mutating HTTP endpoints are open (set FLOODGATE_TOKEN or --token-file)"
        );
    }
    let grpc_threads = args.grpc_threads.unwrap_or_else(floodgate_server::server::default_grpc_threads);
    let limits = floodgate_server::conn::Limits {
        max_connections: args.max_connections.max(1),
        first_byte: floodgate_server::conn::Limits::default().first_byte,
        idle: Duration::from_secs(args.idle_timeout_secs.max(1)),
    };
    let server = Server::start_limited(Arc::new(state), args.http, args.grpc, grpc_threads, limits).await?;
    let stop = server.shutdown_token();
    tokio::spawn(signals(server.state.clone(), stop.clone()));
    tokio::spawn(server.state.clone().watch_config(Duration::from_secs(args.watch_secs), stop.clone()));
    let drain = Duration::from_secs(args.drain_secs);
    let waiting = server.wait();
    tokio::pin!(waiting);
    tokio::select! {
        r = &mut waiting => r?,
        () = async { stop.cancelled().await; tokio::time::sleep(drain).await } => {
            tracing::warn!(?drain, "connections still open after the drain time: stopping anyway");
        }
    }
    tracing::info!("floodgate stopped");
    Ok(())
}

/// The bearer token, from `--token-file` or `FLOODGATE_TOKEN`; an empty one is refused, never read as no auth.
fn read_token(args: &ServeArgs) -> Result<Option<String>, Box<dyn std::error::Error>> {
    let token = match (&args.token_file, std::env::var("FLOODGATE_TOKEN").ok()) {
        (Some(file), _) => {
            let t = std::fs::read_to_string(file).map_err(|e| format!("--token-file {}: {e}", file.display()))?;
            let t = t.trim();
            if t.is_empty() {
                return Err(format!(
                    "--token-file {}: the file is empty; refusing to serve with no authentication",
                    file.display()
                )
                .into());
            }
            Some(t.to_owned())
        }
        (None, Some(env)) => {
            let t = env.trim();
            if t.is_empty() {
                return Err("FLOODGATE_TOKEN is set but empty; refusing to serve with no authentication".into());
            }
            Some(t.to_owned())
        }
        (None, None) => None,
    };
    Ok(token)
}

/// Cluster mode decides window counters only: refuses, before the node starts, a config with other policies.
fn check_cluster_config(source: &ConfigSource) -> Result<(), Box<dyn std::error::Error>> {
    let loaded = source.load()?;
    if let Err(e) = loaded.check_cluster() {
        return Err(match source {
            ConfigSource::Builtin => format!(
                "cluster mode needs a config of fixed- and sliding-window policies only, and the built-in \
                 config has others; give one with --config (e.g. crates/floodgate-server/examples/cluster.yaml):\n{e}"
            ),
            _ => format!("cluster mode cannot decide every policy of the config:\n{e}"),
        }
        .into());
    }
    Ok(())
}

/// The upstream buckets on Redis or the Redis Cluster when the server uses one (`None`: in memory).
async fn upstream_buckets(
    args: &ServeArgs,
) -> Result<Option<floodgate_upstream::Upstream>, Box<dyn std::error::Error>> {
    if let Some(url) = &args.redis {
        let store = floodgate_upstream::store::RedisBucketStore::connect(
            url,
            &format!("{}:upstream", args.redis_prefix),
            floodgate_upstream::StoreConfig::default(),
        )
        .await
        .map_err(|e| format!("cannot use Redis for the upstream buckets: {e}"))?;
        return Ok(Some(floodgate_upstream::Upstream::new(store)));
    } else if let Some(nodes) = &args.redis_cluster {
        let store = floodgate_upstream::store::RedisBucketStore::connect_cluster(
            nodes,
            &format!("{}:upstream", args.redis_prefix),
            floodgate_upstream::StoreConfig::default(),
        )
        .await
        .map_err(|e| format!("cannot use the Redis Cluster for the upstream buckets: {e}"))?;
        return Ok(Some(floodgate_upstream::Upstream::new(store)));
    }
    Ok(None)
}

/// Applies the serve flags that tune how the state answers.
fn tune(state: &mut AppState, args: &ServeArgs) {
    state.reference_counting = args.reference_counting;
    state.global_shadow_mode = args.shadow_mode;
    state.response_dynamic_metadata = args.response_dynamic_metadata;
    state.metrics.set_max_rule_keys(args.max_metric_keys);
    state.near_limit_ratio = args.near_limit_ratio;
    if args.http.ip().is_loopback() || !args.allowed_hosts.is_empty() {
        let mut hosts: Vec<String> = args.allowed_hosts.clone();
        if args.http.ip().is_loopback() {
            hosts.extend(["localhost", "127.0.0.1", "::1"].map(String::from));
            hosts.push(args.http.ip().to_string());
        }
        state.allowed_hosts = Some(hosts);
    }
    state.response_headers = match args.response_headers {
        Headers::Off => ResponseHeaders::Off,
        Headers::Draft => ResponseHeaders::Draft,
        Headers::Ietf => ResponseHeaders::Ietf,
        Headers::XRatelimit => ResponseHeaders::XRateLimit,
    };
}

async fn backend(args: &ServeArgs) -> Result<(Backend, Option<StoreSource>), Box<dyn std::error::Error>> {
    let redis = match (&args.redis, &args.redis_cluster) {
        (Some(url), _) => RedisStore::builder().url(url),
        (None, Some(nodes)) => RedisStore::builder().cluster(nodes.iter().map(String::as_str)),
        (None, None) => {
            let when_full = match args.when_full {
                WhenFullArg::Refuse => floodgate::WhenFull::RefuseNew,
                WhenFullArg::Evict => floodgate::WhenFull::EvictLive,
            };
            let store = MemoryStore::builder().max_keys(args.max_keys).when_full(when_full).build();
            let source = store_metrics::memory(store.clone());
            return Ok((Backend::Memory(store), Some(source)));
        }
    };
    let failure = match args.failure_policy {
        Failure::Error => FailurePolicy::Error,
        Failure::FailOpen => FailurePolicy::FailOpen,
        Failure::FailClosed => FailurePolicy::FailClosed,
    };
    let store = redis
        .prefix(args.redis_prefix.clone())
        .timeout(Duration::from_millis(args.redis_timeout_ms.max(1)))
        .failure_policy(failure)
        .build()
        .await
        .map_err(|e| format!("cannot use Redis: {e}"))?;
    tracing::info!(?store, "Redis store connected");
    let store = Arc::new(store);
    let source = store_metrics::redis(store.clone());
    Ok((Backend::Dyn(store), Some(source)))
}

/// Cluster mode: the store and the running node.
async fn cluster_backend(
    args: &ServeArgs,
    listen: SocketAddr,
) -> Result<(Backend, floodgate_cluster::ClusterHandle), Box<dyn std::error::Error>> {
    let secret = match (&args.cluster_secret_file, std::env::var("FLOODGATE_CLUSTER_SECRET").ok()) {
        (Some(file), _) => std::fs::read(file).map_err(|e| format!("--cluster-secret-file {}: {e}", file.display()))?,
        (None, Some(s)) => s.into_bytes(),
        (None, None) => {
            return Err("cluster mode needs a secret: --cluster-secret-file FILE or FLOODGATE_CLUSTER_SECRET".into());
        }
    };
    let secret = secret.trim_ascii().to_vec();
    if secret.is_empty() {
        return Err("the cluster secret is empty; refusing to start a cluster with no authentication".into());
    }
    let mut config = floodgate_cluster::ClusterConfig::new(listen, secret);
    config.peers = args.peer.clone();
    config.peer_dns = args.peer_dns.clone();
    config.node_id = args.node_id.clone();
    config.partition_mode = match args.cluster_partition_mode {
        PartitionArg::CountLocally => floodgate_cluster::PartitionMode::CountLocally,
        PartitionArg::SplitLimit => floodgate_cluster::PartitionMode::SplitLimit,
    };
    config.expected_nodes = args.cluster_expected_nodes.unwrap_or(0);
    if let (Some(cert), Some(key), Some(ca)) = (&args.cluster_tls_cert, &args.cluster_tls_key, &args.cluster_tls_ca) {
        let tls = floodgate_cluster::ClusterTls::from_pem_files(cert, key, ca)
            .map_err(|e| format!("cannot load the cluster TLS files: {e}"))?;
        config.tls = Some(tls);
    }
    let (store, handle) = floodgate_cluster::Cluster::start(config, Arc::new(floodgate::SystemClock::new()))
        .await
        .map_err(|e| format!("cannot start cluster mode: {e}"))?;
    let tls = args.cluster_tls_cert.is_some();
    tracing::info!(%listen, peers = args.peer.len(), peer_dns = args.peer_dns.len(), tls, "cluster mode");
    Ok((Backend::Dyn(Arc::new(store)), handle))
}

#[cfg(unix)]
async fn signals(state: Arc<AppState>, stop: tokio_util::sync::CancellationToken) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut hup)) = (signal(SignalKind::terminate()), signal(SignalKind::hangup())) else {
        tracing::error!("cannot install signal handlers; stop with Ctrl-C");
        let _ = tokio::signal::ctrl_c().await;
        stop.cancel();
        return;
    };
    loop {
        tokio::select! {
            _ = term.recv() => { tracing::info!("SIGTERM: shutting down"); break; }
            _ = tokio::signal::ctrl_c() => { tracing::info!("Ctrl-C: shutting down"); break; }
            _ = hup.recv() => {
                match state.reload_changed().await {
                    Ok((_, false)) => tracing::info!("SIGHUP: the config files are unchanged, nothing reloaded"),
                    Ok((cfg, true)) => tracing::info!(domains = cfg.domains().len(), policies = cfg.policies().count(), "SIGHUP: config reloaded"),
                    Err(e) => tracing::error!("SIGHUP: config reload refused, the old config stays in force:\n{e}"),
                }
                if let Some(tls) = &state.tls {
                    tls.reload_logged("SIGHUP");
                }
            }
            _ = stop.cancelled() => return,
        }
    }
    stop.cancel();
    // A second signal during a slow drain stops at once.
    tokio::select! {
        _ = term.recv() => std::process::exit(1),
        _ = tokio::signal::ctrl_c() => std::process::exit(1),
        _ = tokio::time::sleep(Duration::from_secs(3600)) => {}
    }
}

#[cfg(not(unix))]
async fn signals(_state: Arc<AppState>, stop: tokio_util::sync::CancellationToken) {
    let _ = tokio::signal::ctrl_c().await;
    stop.cancel();
}

/// Parses a ratio in (0, 1].
fn ratio(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(r) if r > 0.0 && r <= 1.0 => Ok(r),
        Ok(r) => Err(format!("{r} is not above 0 and at most 1")),
        Err(e) => Err(format!("not a number: {e}")),
    }
}
