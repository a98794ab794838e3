//! `floodgate`: the rate-limit server. `floodgate serve` and `floodgate check CONFIG`; see the crate README.

use std::io::Write as _;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{CommandFactory as _, Parser as _};
use floodgate::MemoryStore;
use floodgate_redis::{FailurePolicy, RedisStore};
use floodgate_server::cli::{Cli, Command, Failure, Headers, PartitionArg, ServeArgs, WhenFullArg};
use floodgate_server::config::Config;
use floodgate_server::metrics::StoreSource;
use floodgate_server::server::Server;
use floodgate_server::state::{AppState, Backend, ConfigSource, ResponseHeaders};
use floodgate_server::store_metrics;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Check { config, merge_domains, strict, cluster } => check(&config, merge_domains, strict, cluster),
        Command::Serve(args) => {
            let args = *args;
            // Started before the runtime: the exporter's HTTP client and batch thread are not async.
            let otlp = match args.otlp_endpoint.as_deref().map(floodgate_server::otlp::Otlp::start).transpose() {
                Ok(otlp) => otlp,
                Err(e) => {
                    let _ = writeln!(std::io::stderr(), "floodgate: {e}");
                    return ExitCode::FAILURE;
                }
            };
            let (otlp, tracer) = otlp.map_or((None, None), |(o, t)| (Some(o), Some(t)));
            let _log_guard = match floodgate_server::logging::init_with(args.log_format, &args.log_level, tracer) {
                Ok(guard) => guard,
                Err(e) => {
                    let _ = writeln!(std::io::stderr(), "floodgate: {e}");
                    return ExitCode::FAILURE;
                }
            };
            let _otlp = OtlpGuard(otlp);
            warn_unknown_env();
            let mut rt = tokio::runtime::Builder::new_multi_thread();
            if let Some(n) = args.threads.filter(|n| *n > 0) {
                rt.worker_threads(n);
            }
            let rt = match rt.enable_all().build() {
                Ok(rt) => rt,
                Err(e) => {
                    tracing::error!(error = %e, "cannot start the runtime");
                    return ExitCode::FAILURE;
                }
            };
            // Logged, not printed: one event, on one line, in the log's format (a config error can hold several
            // problems, one per line: they are escaped as `\n`).
            match rt.block_on(serve(args)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!(error = %e, "floodgate cannot serve");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

/// Sends the queued spans when `main` returns (after the runtime has stopped).
struct OtlpGuard(Option<floodgate_server::otlp::Otlp>);

impl Drop for OtlpGuard {
    fn drop(&mut self) {
        if let Some(otlp) = self.0.take() {
            otlp.shutdown();
        }
    }
}

/// One warning line per `FLOODGATE_*` variable in the environment that no flag reads (a typo, or a variable of
/// another version), naming the closest known one.
fn warn_unknown_env() {
    let known = floodgate_server::cli::known_env(&Cli::command());
    let vars: Vec<String> = std::env::vars_os().filter_map(|(k, _)| k.into_string().ok()).collect();
    for (var, closest) in floodgate_server::cli::unknown_env(vars.iter().map(String::as_str), &known) {
        match closest {
            Some(closest) => {
                tracing::warn!(variable = %var, did_you_mean = %closest, "unknown FLOODGATE_ variable, ignored")
            }
            None => tracing::warn!(variable = %var, "unknown FLOODGATE_ variable, ignored"),
        }
    }
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
    if let Some(endpoint) = &args.otlp_endpoint {
        state.traced = true;
        tracing::info!(endpoint = %floodgate_server::otlp::traces_url(endpoint), "OTLP traces on");
    }
    if let Some(path) = &args.access_log {
        let log =
            floodgate_server::access_log::AccessLog::open(path, args.access_log_max_bytes, state.metrics.clone())?;
        tracing::info!(path = %path.display(), max_bytes = args.access_log_max_bytes, "access log on");
        state.access_log = Some(Arc::new(log));
    }
    {
        let cfg = state.config();
        tracing::info!(config = %source, domains = cfg.domains().len(), policies = cfg.policies().count(), "config loaded");
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
            tracing::warn!(drain_secs = args.drain_secs, "connections still open after the drain time: stopping anyway");
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
    let tls = redis_tls(args)?;
    if let Some(url) = &args.redis {
        let store = floodgate_upstream::store::RedisBucketStore::connect_client(
            redis_client(url, &tls)?,
            &format!("{}:upstream", args.redis_prefix),
            floodgate_upstream::StoreConfig::default(),
        )
        .await
        .map_err(|e| format!("cannot use Redis for the upstream buckets: {e}"))?;
        return Ok(Some(floodgate_upstream::Upstream::new(store)));
    } else if let Some(nodes) = &args.redis_cluster {
        let store = floodgate_upstream::store::RedisBucketStore::connect_cluster_client(
            redis_cluster(nodes, &tls),
            &format!("{}:upstream", args.redis_prefix),
            floodgate_upstream::StoreConfig::default(),
        )
        .await
        .map_err(|e| format!("cannot use the Redis Cluster for the upstream buckets: {e}"))?;
        return Ok(Some(floodgate_upstream::Upstream::new(store)));
    }
    Ok(None)
}

/// The CA of `--redis-ca`, for `rediss://` URLs; refused with a plain `redis://` URL (it would be ignored).
fn redis_tls(args: &ServeArgs) -> Result<Option<floodgate_redis::redis::TlsCertificates>, Box<dyn std::error::Error>> {
    let Some(path) = &args.redis_ca else { return Ok(None) };
    let urls: Vec<&String> = args.redis.iter().chain(args.redis_cluster.iter().flatten()).collect();
    if urls.is_empty() || urls.iter().any(|u| !u.starts_with("rediss://")) {
        return Err("--redis-ca needs rediss:// URLs in --redis or --redis-cluster".into());
    }
    let pem = floodgate_server::tls::read_pem(path).map_err(|e| format!("--redis-ca {e}"))?;
    Ok(Some(floodgate_redis::redis::TlsCertificates { client_tls: None, root_cert: Some(pem) }))
}

/// A client for the single Redis at `url`, with the `--redis-ca` roots when given.
fn redis_client(
    url: &str,
    tls: &Option<floodgate_redis::redis::TlsCertificates>,
) -> Result<floodgate_redis::redis::Client, Box<dyn std::error::Error>> {
    let client = match tls {
        None => floodgate_redis::redis::Client::open(url),
        Some(certs) => floodgate_redis::redis::Client::build_with_tls(url, certs.clone()),
    };
    client.map_err(|e| format!("bad redis url: {e}").into())
}

/// A Redis Cluster client builder for `nodes`, with the `--redis-ca` roots when given.
fn redis_cluster(
    nodes: &[String],
    tls: &Option<floodgate_redis::redis::TlsCertificates>,
) -> floodgate_redis::redis::cluster::ClusterClientBuilder {
    let builder = floodgate_redis::redis::cluster::ClusterClientBuilder::new(nodes.to_vec());
    match tls {
        Some(certs) => builder.certs(certs.clone()),
        None => builder,
    }
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
    let tls = redis_tls(args)?;
    let redis = match (&args.redis, &args.redis_cluster) {
        (Some(url), _) => RedisStore::builder().client(redis_client(url, &tls)?),
        (None, Some(nodes)) if tls.is_some() => {
            // The store keeps a given builder's retry settings: these are the ones it picks for itself.
            RedisStore::builder()
                .cluster_client(redis_cluster(nodes, &tls).retries(8).min_retry_wait(10).max_retry_wait(100))
        }
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
        .shards_per_slot(args.redis_shards_per_slot)
        .timeout(Duration::from_millis(args.redis_timeout_ms.max(1)))
        .failure_policy(failure)
        .build()
        .await
        .map_err(|e| format!("cannot use Redis: {e}"))?;
    tracing::info!(prefix = %args.redis_prefix, timeout_ms = args.redis_timeout_ms, "Redis store connected");
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
                    Err(e) => tracing::error!(error = %e, "SIGHUP: config reload refused, the old config stays in force"),
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
