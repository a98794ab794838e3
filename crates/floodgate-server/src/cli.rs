//! The `floodgate` command line: its flags, and the rule that every flag has an environment variable.
//!
//! Every flag `--some-flag` of every subcommand also reads `FLOODGATE_SOME_FLAG` ([`env_name`]); the test
//! `tests/env.rs` walks [`Cli`] and fails on a flag without one. Two variables are read without a flag:
//! `FLOODGATE_TOKEN` and `FLOODGATE_CLUSTER_SECRET` (secrets, which are better not on a command line)
//! ([`EXTRA_ENV`]). [`unknown_env`] names any other `FLOODGATE_*` variable, and the closest known one.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::builder::{BoolishValueParser, FalseyValueParser};
use clap::{Parser, Subcommand};

/// The command line.
#[derive(Parser)]
#[command(name = "floodgate", version, about = "Rate limiting as a service: Envoy RLS v3 gRPC and an HTTP JSON API")]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
#[allow(missing_docs)] // clap reads the variants' and fields' doc comments as help; fields are self-describing
pub enum Command {
    /// Serve the HTTP API and Envoy RLS gRPC (in-memory store unless told otherwise).
    Serve(Box<ServeArgs>),
    /// Validate a config file or directory without serving; exit 1 and list every problem if invalid.
    Check {
        /// A YAML file, or a directory of them.
        config: PathBuf,
        /// Merge files that share a domain (as `serve --merge-domains`).
        #[arg(long, env = "FLOODGATE_MERGE_DOMAINS", value_parser = BoolishValueParser::new())]
        merge_domains: bool,
        /// Refuse what loads only with a warning (what the reference's loader accepts: a `rate_limit` without
        /// `requests_per_unit`, `requests_per_unit` beside `unlimited: true`, YAML 1.1 booleans such as `yes`).
        #[arg(long, env = "FLOODGATE_STRICT", value_parser = BoolishValueParser::new())]
        strict: bool,
        /// Also check that cluster mode (`serve --cluster`) can decide every policy: fixed and sliding window
        /// only. FLOODGATE_CLUSTER, which `serve` reads as the cluster's listen address, turns it on too (any
        /// value but `false`, `0`, `no`, `off`, `n`, `f`), so a check run beside a cluster node checks for it.
        #[arg(long, env = "FLOODGATE_CLUSTER", value_parser = FalseyValueParser::new())]
        cluster: bool,
    },
}

/// `--response-headers`.
#[derive(Clone, Copy, clap::ValueEnum)]
#[allow(missing_docs)] // the values are the flag's, documented there
pub enum Headers {
    Off,
    Draft,
    Ietf,
    XRatelimit,
}

/// `--when-full`.
#[derive(Clone, Copy, clap::ValueEnum)]
#[allow(missing_docs)] // the values are the flag's, documented there
pub enum WhenFullArg {
    Refuse,
    Evict,
}

/// `--cluster-partition-mode`.
#[derive(Clone, Copy, clap::ValueEnum)]
#[allow(missing_docs)] // the values are the flag's, documented there
pub enum PartitionArg {
    CountLocally,
    SplitLimit,
}

/// `--failure-policy`.
#[derive(Clone, Copy, clap::ValueEnum)]
#[allow(missing_docs)] // the values are the flag's, documented there
pub enum Failure {
    Error,
    FailOpen,
    FailClosed,
}

/// `floodgate serve`.
#[derive(clap::Args)]
pub struct ServeArgs {
    /// HTTP JSON API, /metrics and /healthz.
    #[arg(long, default_value = "127.0.0.1:8080", env = "FLOODGATE_HTTP")]
    pub http: SocketAddr,
    /// Envoy RLS v3 gRPC.
    #[arg(long, default_value = "127.0.0.1:8081", env = "FLOODGATE_GRPC")]
    pub grpc: SocketAddr,
    /// Config file or directory (default: the built-in config, see the README). Reloaded on SIGHUP and when
    /// its files change (see --watch-secs).
    #[arg(long, short, env = "FLOODGATE_CONFIG")]
    pub config: Option<PathBuf>,
    /// TLS on both listeners (gRPC and HTTP): the certificate chain, PEM, leaf first. Re-read on SIGHUP and when
    /// the file changes (rotation without restart).
    #[arg(long, requires = "tls_key", env = "FLOODGATE_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// TLS: the certificate's private key, PEM (PKCS#8, PKCS#1 or SEC1).
    #[arg(long, requires = "tls_cert", env = "FLOODGATE_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
    /// Mutual TLS: require a client certificate signed by one of these CAs (PEM) on both listeners.
    #[arg(long, requires = "tls_cert", env = "FLOODGATE_TLS_CLIENT_CA")]
    pub tls_client_ca: Option<PathBuf>,
    /// Use Redis at this URL (`redis://host:port[/db]`) instead of memory.
    #[arg(long, conflicts_with = "redis_cluster", env = "FLOODGATE_REDIS", hide_env_values = true)]
    pub redis: Option<String>,
    /// Cluster mode: listen for peers at this address and share every limit with them, with no central store
    /// (fixed and sliding window policies only; see the floodgate-cluster README).
    #[arg(long, conflicts_with_all = ["redis", "redis_cluster"], env = "FLOODGATE_CLUSTER")]
    pub cluster: Option<SocketAddr>,
    /// Cluster mode: a peer's HOST:PORT (repeatable, or comma-separated).
    #[arg(long, value_delimiter = ',', requires = "cluster", env = "FLOODGATE_PEER")]
    pub peer: Vec<String>,
    /// Cluster mode: a DNS NAME:PORT whose every A/AAAA record is a peer, re-resolved as the records' TTL says.
    #[arg(long, value_delimiter = ',', requires = "cluster", env = "FLOODGATE_PEER_DNS")]
    pub peer_dns: Vec<String>,
    /// Cluster mode: the file holding the cluster's shared secret (or set FLOODGATE_CLUSTER_SECRET). Required.
    #[arg(long, requires = "cluster", env = "FLOODGATE_CLUSTER_SECRET_FILE")]
    pub cluster_secret_file: Option<PathBuf>,
    /// Cluster mode: this node's id (default: a random one, logged).
    #[arg(long, requires = "cluster", env = "FLOODGATE_NODE_ID")]
    pub node_id: Option<String>,
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
    pub cluster_partition_mode: PartitionArg,
    /// Cluster mode: how many nodes the cluster has, this one included (required by --cluster-partition-mode
    /// split-limit, at least 2).
    #[arg(long, requires = "cluster", env = "FLOODGATE_CLUSTER_EXPECTED_NODES")]
    pub cluster_expected_nodes: Option<usize>,
    /// Cluster mode: mutual TLS between peers. This node's certificate chain (PEM), which must carry the DNS
    /// name `floodgate-cluster` (and, if it has an extended key usage, both serverAuth and clientAuth). With
    /// --cluster-tls-key and --cluster-tls-ca.
    #[arg(long, requires_all = ["cluster", "cluster_tls_key", "cluster_tls_ca"], env = "FLOODGATE_CLUSTER_TLS_CERT")]
    pub cluster_tls_cert: Option<PathBuf>,
    /// Cluster mode: the private key of --cluster-tls-cert (PEM).
    #[arg(long, requires_all = ["cluster", "cluster_tls_cert", "cluster_tls_ca"], env = "FLOODGATE_CLUSTER_TLS_KEY")]
    pub cluster_tls_key: Option<PathBuf>,
    /// Cluster mode: the cluster CA (PEM): every peer's certificate must chain to it.
    #[arg(long, requires_all = ["cluster", "cluster_tls_cert", "cluster_tls_key"], env = "FLOODGATE_CLUSTER_TLS_CA")]
    pub cluster_tls_ca: Option<PathBuf>,
    /// Use a Redis Cluster (comma-separated node URLs) instead of memory.
    #[arg(long, value_delimiter = ',', env = "FLOODGATE_REDIS_CLUSTER", hide_env_values = true)]
    pub redis_cluster: Option<Vec<String>>,
    /// Redis over TLS (`rediss://` URLs, single or cluster): the CA certificates (PEM) that sign the Redis
    /// servers' certificates, instead of the system's roots.
    #[arg(long, env = "FLOODGATE_REDIS_CA")]
    pub redis_ca: Option<PathBuf>,
    /// Redis key prefix.
    #[arg(long, default_value = "floodgate", env = "FLOODGATE_REDIS_PREFIX")]
    pub redis_prefix: String,
    /// Redis: shards (hashes) per cluster slot holding the counters. 1 suits up to about 4 million counters; set
    /// about counters / 4 000 000 beyond. Changing it restarts the limits of the ids whose shard moves.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..), env = "FLOODGATE_REDIS_SHARDS_PER_SLOT")]
    pub redis_shards_per_slot: u16,
    /// Redis: the most a call may take, in milliseconds, before the failure policy applies.
    #[arg(long, default_value_t = 100, env = "FLOODGATE_REDIS_TIMEOUT_MS")]
    pub redis_timeout_ms: u64,
    /// Redis: what a decision answers when Redis cannot: `error` (RLS UNAVAILABLE, HTTP 503, so Envoy's
    /// failure_mode_deny decides), `fail-open` (allow), `fail-closed` (deny).
    #[arg(long, value_enum, default_value = "error", env = "FLOODGATE_FAILURE_POLICY")]
    pub failure_policy: Failure,
    /// Read the bearer token required by the mutating HTTP endpoints from this file (or set FLOODGATE_TOKEN).
    #[arg(long, env = "FLOODGATE_TOKEN_FILE")]
    pub token_file: Option<PathBuf>,
    /// Answer RLS requests for an unconfigured domain NOT_FOUND instead of OK.
    #[arg(long, env = "FLOODGATE_STRICT_DOMAINS", value_parser = BoolishValueParser::new())]
    pub strict_domains: bool,
    /// RLS: count denied hits too, as envoyproxy/ratelimit does (default: a denied hit consumes nothing).
    #[arg(long, env = "FLOODGATE_REFERENCE_COUNTING", value_parser = BoolishValueParser::new())]
    pub reference_counting: bool,
    /// RLS: rate-limit headers for Envoy to add to responses, describing the tightest limit: `off`, `draft`
    /// (RateLimit-Limit/-Remaining/-Reset, the reference's LIMIT_RESPONSE_HEADERS_ENABLED), `ietf`
    /// (RateLimit-Policy + RateLimit), `x-ratelimit` (X-RateLimit-Limit/-Remaining/-Reset).
    #[arg(long, value_enum, default_value = "off", env = "FLOODGATE_RESPONSE_HEADERS")]
    pub response_headers: Headers,
    /// Check the config's files every this many seconds and reload when one changed (0: only on SIGHUP).
    #[arg(long, default_value_t = 2, env = "FLOODGATE_WATCH_SECS")]
    pub watch_secs: u64,
    /// Start (and reload) even when --config holds no domain and no policy, serving with no limits (logged
    /// loudly); default: an empty config is refused, so a wrong path never turns every limit off.
    #[arg(long, env = "FLOODGATE_ALLOW_EMPTY_CONFIG", value_parser = BoolishValueParser::new())]
    pub allow_empty_config: bool,
    /// Merge config files that share a domain (the reference's MERGE_DOMAIN_CONFIG); default: an error.
    #[arg(long, env = "FLOODGATE_MERGE_DOMAINS", value_parser = BoolishValueParser::new())]
    pub merge_domains: bool,
    /// RLS: global shadow mode (the reference's SHADOW_MODE): decide and count, but answer OK overall.
    #[arg(long, env = "FLOODGATE_SHADOW_MODE", value_parser = BoolishValueParser::new())]
    pub shadow_mode: bool,
    /// RLS: fill the response's dynamic metadata (the reference's RESPONSE_DYNAMIC_METADATA): the request's
    /// descriptors, quotaModeEnabled / quotaModeViolations, and the `metadata` of rules under their limit.
    #[arg(long, env = "FLOODGATE_RESPONSE_DYNAMIC_METADATA", value_parser = BoolishValueParser::new())]
    pub response_dynamic_metadata: bool,
    /// Per-rule metrics: the most metric keys made from request values (detailed_metric, value_to_metric,
    /// limit overrides) per domain; past it, hits count under key="__overflow__".
    #[arg(long, default_value_t = crate::metrics::DEFAULT_MAX_RULE_KEYS, env = "FLOODGATE_MAX_METRIC_KEYS")]
    pub max_metric_keys: u64,
    /// Per-rule metrics: the share of a limit past which hits count as near it (the reference's
    /// NEAR_LIMIT_RATIO), above 0 and at most 1.
    #[arg(long, default_value_t = crate::metrics::NEAR_LIMIT_RATIO, value_parser = ratio, env = "FLOODGATE_NEAR_LIMIT_RATIO")]
    pub near_limit_ratio: f64,
    /// In-memory store: bound the number of keys (default: unbounded).
    #[arg(long, env = "FLOODGATE_MAX_KEYS")]
    pub max_keys: Option<usize>,
    /// In-memory store with --max-keys: what a new key gets when the store is full of live keys. `refuse`
    /// (default): it is denied until a key expires, and no live key ever loses its count. `evict`: the keys
    /// nearest their reset are evicted and start again from empty, which can admit them past their limit.
    #[arg(long, value_enum, default_value = "refuse", env = "FLOODGATE_WHEN_FULL")]
    pub when_full: WhenFullArg,
    /// HTTP: more host names a request's `Host` header may name (repeatable, or comma-separated). When the HTTP
    /// port is on loopback, only `localhost`, `127.0.0.1` and `::1` are accepted besides these, so a web page
    /// cannot reach the API by DNS rebinding; on other addresses any Host is accepted unless this is given.
    #[arg(long, value_delimiter = ',', env = "FLOODGATE_ALLOWED_HOSTS")]
    pub allowed_hosts: Vec<String>,
    /// The most connections open at once on each port (HTTP, gRPC); near it, connections that have sent
    /// nothing are closed first, past it new ones are closed at once.
    #[arg(long, default_value_t = 10_000, env = "FLOODGATE_MAX_CONNECTIONS")]
    pub max_connections: usize,
    /// Close a connection that sends and receives nothing for this many seconds while the server waits for it
    /// (between requests, or in a stalled request's headers or body). A connection that sends no byte at all is
    /// closed after 10 s.
    #[arg(long, default_value_t = 60, env = "FLOODGATE_IDLE_TIMEOUT_SECS")]
    pub idle_timeout_secs: u64,
    /// On shutdown, the most seconds to wait for in-flight requests and open connections.
    #[arg(long, default_value_t = 30, env = "FLOODGATE_DRAIN_SECS")]
    pub drain_secs: u64,
    /// gRPC threads, each a single-threaded runtime with its own SO_REUSEPORT listener (default: one per core;
    /// 0 serves gRPC on the shared worker threads instead).
    #[arg(long, env = "FLOODGATE_GRPC_THREADS")]
    pub grpc_threads: Option<usize>,
    /// Log format on stderr: `text`, or `json` (one object per line, fields as plain values). Every event is one
    /// line in both.
    #[arg(long, value_enum, default_value = "text", env = "FLOODGATE_LOG_FORMAT")]
    pub log_format: crate::logging::LogFormat,
    /// Log level, or a filter in RUST_LOG's syntax (`info,floodgate::request=debug`); RUST_LOG wins when set.
    /// `debug` logs one event per decision (target `floodgate::request`: domain, rules, code, store latency).
    #[arg(long, default_value = "info", env = "FLOODGATE_LOG_LEVEL")]
    pub log_level: String,
    /// Send traces over OTLP/HTTP (protobuf) to this collector, e.g. `http://127.0.0.1:4318` (`/v1/traces` is
    /// appended unless the URL ends with it): a span per RLS call (domain, code, store latency) and per HTTP
    /// call (route, status, store latency), batched on a thread of their own. Unset: no spans are made.
    #[arg(long, env = "FLOODGATE_OTLP_ENDPOINT")]
    pub otlp_endpoint: Option<String>,
    /// Write one JSON line per decision (RLS and HTTP) to this file, appending. Written by a thread of its
    /// own: a line it cannot keep up with is dropped, never waited for (counted in
    /// floodgate_access_log_dropped_total).
    #[arg(long, env = "FLOODGATE_ACCESS_LOG")]
    pub access_log: Option<PathBuf>,
    /// The access log's file never grows past this many bytes: it is then renamed to PATH.1 (replacing the
    /// previous one) and started again, so at most twice this is on disk. At least 4096.
    #[arg(long, default_value_t = 100 * 1024 * 1024, env = "FLOODGATE_ACCESS_LOG_MAX_BYTES")]
    pub access_log_max_bytes: u64,
    /// Worker threads of the shared runtime (HTTP, signals; gRPC with --grpc-threads 0). Default: one per core.
    #[arg(long, env = "FLOODGATE_THREADS")]
    pub threads: Option<usize>,
}

/// Parses a ratio in (0, 1].
pub fn ratio(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(r) if r > 0.0 && r <= 1.0 => Ok(r),
        Ok(r) => Err(format!("{r} is not above 0 and at most 1")),
        Err(e) => Err(format!("not a number: {e}")),
    }
}

/// The variables read without a flag of their own: secrets, better kept off a command line.
pub const EXTRA_ENV: &[&str] = &["FLOODGATE_TOKEN", "FLOODGATE_CLUSTER_SECRET"];

/// The environment variable of the flag `--long`: `FLOODGATE_` and the flag's name in capitals, `-` as `_`.
pub fn env_name(long: &str) -> String {
    format!("FLOODGATE_{}", long.to_ascii_uppercase().replace('-', "_"))
}

/// Every environment variable `cmd` and its subcommands read (each once, sorted), and [`EXTRA_ENV`].
pub fn known_env(cmd: &clap::Command) -> Vec<String> {
    fn walk(cmd: &clap::Command, out: &mut Vec<String>) {
        for arg in cmd.get_arguments() {
            if let Some(env) = arg.get_env() {
                out.push(env.to_string_lossy().into_owned());
            }
        }
        for sub in cmd.get_subcommands() {
            walk(sub, out);
        }
    }
    let mut out: Vec<String> = EXTRA_ENV.iter().map(|s| (*s).to_owned()).collect();
    walk(cmd, &mut out);
    out.sort_unstable();
    out.dedup();
    out
}

/// The `FLOODGATE_*` names among `vars` that `known` does not hold, each with the closest known name when one is
/// near enough to be a likely typo (at most a third of its letters, and at least 2, differ).
pub fn unknown_env<'a>(vars: impl IntoIterator<Item = &'a str>, known: &[String]) -> Vec<(String, Option<String>)> {
    let mut out: Vec<(String, Option<String>)> = vars
        .into_iter()
        .filter(|v| v.starts_with("FLOODGATE_") && !known.iter().any(|k| k == v))
        .map(|v| {
            let closest = known
                .iter()
                .map(|k| (edit_distance(v, k), k))
                .min()
                .filter(|(d, _)| *d <= (v.len() - "FLOODGATE_".len()).div_ceil(3).max(2))
                .map(|(_, k)| k.clone());
            (v.to_owned(), closest)
        })
        .collect();
    out.sort();
    out
}

/// Levenshtein distance, in characters.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diag = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let next = (diag + usize::from(ca != *cb)).min(row[j] + 1).min(row[j + 1] + 1);
            diag = row[j + 1];
            row[j + 1] = next;
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_typo_names_its_closest_variable_and_a_stranger_none() {
        let known =
            vec!["FLOODGATE_REDIS".to_owned(), "FLOODGATE_REDIS_PREFIX".to_owned(), "FLOODGATE_HTTP".to_owned()];
        let found = unknown_env(["FLOODGATE_REDSI", "FLOODGATE_HTTP", "PATH", "FLOODGATE_NOTHING_LIKE_IT"], &known);
        assert_eq!(
            found,
            vec![
                ("FLOODGATE_NOTHING_LIKE_IT".to_owned(), None),
                ("FLOODGATE_REDSI".to_owned(), Some("FLOODGATE_REDIS".to_owned())),
            ]
        );
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(env_name("redis-timeout-ms"), "FLOODGATE_REDIS_TIMEOUT_MS");
    }
}
