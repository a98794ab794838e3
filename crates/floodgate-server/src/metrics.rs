//! Prometheus metrics, kept in atomics (held per domain, so a request hashes no label) and encoded on
//! `/metrics` by `prometheus-client`'s Prometheus text encoder (a [`Collector`] reads the atomics at each scrape).
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `floodgate_decisions_total` | counter | `source` (`rls`, `http`), `domain` (RLS domain, or `http`), `decision` (`allowed`, `denied`, `shadow_denied`) |
//! | `floodgate_rls_requests_total` | counter | `domain`, `code` (`ok`, `over_limit`) |
//! | `floodgate_rls_unknown_domain_total` | counter | (requests whose domain is not configured; one series, so a client cannot mint new ones) |
//! | `floodgate_rls_invalid_requests_total` | counter | (answered `INVALID_ARGUMENT`) |
//! | `floodgate_rls_global_shadow_mode_total` | counter | (over a limit, answered `OK` by `--shadow-mode`) |
//! | `floodgate_store_latency_seconds` | histogram | (every store call) |
//! | `floodgate_store_errors_total` | counter | (store calls that failed) |
//! | `floodgate_config_reloads_total` | counter | `result` (`success`, `failure`) |
//! | `floodgate_config_last_reload_successful` | gauge | 1 if the last reload (or the start) loaded its config |
//! | `floodgate_ready` | gauge | 1 if the last readiness probe (`/readyz`, gRPC health) found the server ready |
//! | `floodgate_ready_failures_total` | counter | readiness probes that found it not ready |
//! | `floodgate_upstream_acquires_total` | counter | `result` (`go`, `wait_too_long`): `/v1/upstream/acquire` answers |
//! | `floodgate_upstream_waited_total` | counter | (acquires that waited before `go`) |
//! | `floodgate_upstream_wait_seconds_total` | counter | (time those acquires waited, summed) |
//! | `floodgate_upstream_rate_limited_total` | counter | (429s reported to `/v1/upstream/update`) |
//! | `floodgate_upstream_leases_expired_total` | counter | (acquires never reported back within the lease timeout; on Redis, the fleet's) |
//! | `floodgate_build_info` | gauge | `version` (always 1) |
//! | `floodgate_request_duration_seconds` | histogram | `api` (`rls`, `http`): time to answer a request |
//! | `floodgate_store_errors_by_kind_total` | counter | `kind` (`timeout`, `unavailable`, `backend`, `invalid_id`, `other`): store calls that returned an error |
//! | `floodgate_otlp_export_failures_total` | counter | (span batches `--otlp-endpoint` could not send) |
//! | `process_*` | | CPU, resident memory, open and max fds, start time ([`crate::process_metrics`], Linux) |
//!
//! | `floodgate_rls_rule_total_hits_total` | counter | `domain`, `key` (the reference's stats key of the rule, see below): hits (`hits_addend` units) on a matched limit |
//! | `floodgate_rls_rule_within_limit_total` | counter | `domain`, `key`: hits within the limit |
//! | `floodgate_rls_rule_near_limit_total` | counter | `domain`, `key`: hits past 80% of the limit (`--near-limit-ratio`, the reference's `NEAR_LIMIT_RATIO`), over or not |
//! | `floodgate_rls_rule_over_limit_total` | counter | `domain`, `key`: hits over the limit (shadow mode too) |
//! | `floodgate_rls_rule_shadow_mode_total` | counter | `domain`, `key`: hits over the limit of a `shadow_mode` rule (answered OK) |
//!
//! Per-domain series exist for configured domains only, and survive reloads.
//!
//! **Per-rule series** are named as envoyproxy/ratelimit names its stats
//! (`ratelimit.service.rate_limit.<key>.total_hits` there): `key` is the domain, then for each level of the
//! matched rule its `key`, or `key_value` when the rule has a value (as configured, `*` included), joined with
//! `.`: `edge.path_/login.user`. A rule with `detailed_metric: true` is keyed by the request's actual values
//! instead (`edge.path_/login.user_alice`), and an entry landing on a rule with `value_to_metric: true` puts its
//! actual value in its place; an entry matched by a `share_threshold` wildcard keeps the pattern. `:` and
//! `|` become `_` (as the reference's stat names). Those keys come from requests, so their number is bounded:
//! at most [`DEFAULT_MAX_RULE_KEYS`] (`--max-metric-keys`) request-derived keys per domain, each at most
//! [`MAX_RULE_KEY_BYTES`] bytes; hits past the bound are counted under `key="__overflow__"` (and in
//! `floodgate_rls_rule_keys_overflow_total`). The keys of rules without those options come from the config and
//! are not bounded.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use parking_lot::{Mutex, RwLock};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;

/// Decision counters of one domain.
#[derive(Debug, Default)]
pub struct DomainCounters {
    /// Descriptors admitted.
    pub allowed: AtomicU64,
    /// Descriptors over their limit (answered OVER_LIMIT).
    pub denied: AtomicU64,
    /// Descriptors over their limit in shadow mode (answered OK).
    pub shadow_denied: AtomicU64,
    /// Requests answered OK.
    pub requests_ok: AtomicU64,
    /// Requests answered OVER_LIMIT.
    pub requests_over: AtomicU64,
    /// Per-rule counters, by stats key.
    rules: RwLock<HashMap<Box<str>, Arc<RuleCounters>>>,
    /// How many of `rules` were made from request values (bounded by `max_rule_keys`).
    dynamic_rule_keys: AtomicU64,
    /// The bound on request-derived keys (0: [`DEFAULT_MAX_RULE_KEYS`]).
    max_rule_keys: AtomicU64,
    /// Hits whose key was past the bound.
    pub rule_keys_overflow: AtomicU64,
}

/// The per-rule counters of one stats key (units: hits, i.e. `hits_addend`, as the reference counts).
#[derive(Debug, Default)]
pub struct RuleCounters {
    /// Every hit on a matched limit.
    pub total_hits: AtomicU64,
    /// Hits within the limit.
    pub within_limit: AtomicU64,
    /// Hits past the near-limit threshold (80% of the limit unless `--near-limit-ratio` says otherwise).
    pub near_limit: AtomicU64,
    /// Hits over the limit.
    pub over_limit: AtomicU64,
    /// Hits over the limit of a rule in shadow mode.
    pub shadow_mode: AtomicU64,
}

/// The reference's `NEAR_LIMIT_RATIO` default: a hit past this share of the limit is "near" it
/// (`--near-limit-ratio` changes it).
pub const NEAR_LIMIT_RATIO: f64 = 0.8;

impl RuleCounters {
    /// Records one decision of `cost` hits on a limit of `limit`, of which `used_before` were used before it
    /// (the reference's arithmetic: the hits past `near_ratio × limit` are near, past the limit over).
    pub fn record(&self, cost: u64, limit: u64, used_before: u64, allowed: bool, shadow: bool, near_ratio: f64) {
        let near = (limit as f64 * near_ratio).floor() as u64;
        let after = used_before.saturating_add(cost);
        self.total_hits.fetch_add(cost, Relaxed);
        if allowed {
            self.within_limit.fetch_add(cost, Relaxed);
            if after > near {
                self.near_limit.fetch_add(after - near.max(used_before), Relaxed);
            }
            return;
        }
        let over = if used_before >= limit { cost } else { after.saturating_sub(limit) };
        self.over_limit.fetch_add(over, Relaxed);
        if used_before < limit {
            self.near_limit.fetch_add(limit - near.max(used_before), Relaxed);
        }
        if shadow {
            self.shadow_mode.fetch_add(cost, Relaxed);
        }
    }
}

/// The default bound on request-derived per-rule metric keys, per domain (`--max-metric-keys`).
pub const DEFAULT_MAX_RULE_KEYS: u64 = 1_000;
/// The longest per-rule metric key kept as its own series (longer ones count under `__overflow__`).
pub const MAX_RULE_KEY_BYTES: usize = 256;
/// The key under which hits past the bounds are counted.
pub const OVERFLOW_KEY: &str = "__overflow__";

impl DomainCounters {
    /// The counters of the per-rule stats `key`. `from_request` keys (made from request values) are bounded;
    /// past the bound, the `__overflow__` counters are returned.
    pub fn rule(&self, key: &str, from_request: bool) -> Arc<RuleCounters> {
        if let Some(c) = self.rules.read().get(key) {
            return c.clone();
        }
        let max = match self.max_rule_keys.load(Relaxed) {
            0 => DEFAULT_MAX_RULE_KEYS,
            n => n,
        };
        let full = from_request && (key.len() > MAX_RULE_KEY_BYTES || self.dynamic_rule_keys.load(Relaxed) >= max);
        let key = if full {
            self.rule_keys_overflow.fetch_add(1, Relaxed);
            OVERFLOW_KEY
        } else {
            key
        };
        let mut rules = self.rules.write();
        if let Some(c) = rules.get(key) {
            return c.clone();
        }
        if from_request && !full {
            self.dynamic_rule_keys.fetch_add(1, Relaxed);
        }
        let c = Arc::new(RuleCounters::default());
        rules.insert(key.into(), c.clone());
        c
    }
}

/// A stats key as the reference writes stat names: `:` and `|` become `_`.
pub fn sanitize_stat_key(key: &str) -> std::borrow::Cow<'_, str> {
    if key.contains([':', '|']) { key.replace([':', '|'], "_").into() } else { key.into() }
}

/// Upper bounds of the store latency histogram's buckets, in seconds.
pub const LATENCY_BUCKETS: [f64; 16] = [
    0.000_005, 0.000_01, 0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05,
    0.1, 0.25, 1.0,
];

/// Every metric of one server.
#[derive(Debug)]
pub struct Metrics {
    domains: Mutex<BTreeMap<Arc<str>, Arc<DomainCounters>>>,
    /// The bound on request-derived per-rule metric keys per domain (0: [`DEFAULT_MAX_RULE_KEYS`]).
    max_rule_keys: AtomicU64,
    /// Decisions of the HTTP API.
    pub http: DomainCounters,
    /// RLS requests for a domain not in the config.
    pub unknown_domain: AtomicU64,
    /// RLS requests answered INVALID_ARGUMENT.
    pub invalid_requests: AtomicU64,
    /// RLS requests that were over a limit but answered OK by the global shadow mode (`--shadow-mode`).
    pub global_shadow: AtomicU64,
    /// Failed store calls.
    pub store_errors: AtomicU64,
    /// Access log lines dropped: the writer could not keep up, or the file refused them (`--access-log`).
    pub access_log_dropped: AtomicU64,
    /// Where the store's own counters come from (set once at start: the memory store's keys and refusals,
    /// Redis's faults by kind and by answer).
    pub store_source: std::sync::OnceLock<StoreSource>,
    /// Failed store calls by kind (in the order of [`STORE_ERROR_KINDS`]).
    store_errors_by_kind: [AtomicU64; STORE_ERROR_KINDS.len()],
    store_latency: LatencyHistogram,
    rls_latency: LatencyHistogram,
    http_latency: LatencyHistogram,
    reloads_ok: AtomicU64,
    reloads_failed: AtomicU64,
    last_reload_ok: AtomicU64,
    ready: AtomicU64,
    ready_failures: AtomicU64,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// A fresh set of metrics.
    pub fn new() -> Self {
        Metrics {
            domains: Mutex::default(),
            max_rule_keys: AtomicU64::new(0),
            http: DomainCounters::default(),
            unknown_domain: AtomicU64::new(0),
            invalid_requests: AtomicU64::new(0),
            global_shadow: AtomicU64::new(0),
            store_errors: AtomicU64::new(0),
            access_log_dropped: AtomicU64::new(0),
            store_source: std::sync::OnceLock::new(),
            store_errors_by_kind: Default::default(),
            store_latency: LatencyHistogram::new(&LATENCY_BUCKETS, &LATENCY_BUCKETS_NS),
            rls_latency: LatencyHistogram::new(&REQUEST_BUCKETS, &REQUEST_BUCKETS_NS),
            http_latency: LatencyHistogram::new(&REQUEST_BUCKETS, &REQUEST_BUCKETS_NS),
            reloads_ok: AtomicU64::new(0),
            reloads_failed: AtomicU64::new(0),
            last_reload_ok: AtomicU64::new(1),
            ready: AtomicU64::new(1),
            ready_failures: AtomicU64::new(0),
        }
    }

    /// The counters of `domain` (created on first use; call only with configured domains).
    pub fn domain(&self, domain: &Arc<str>) -> Arc<DomainCounters> {
        self.domains
            .lock()
            .entry(domain.clone())
            .or_insert_with(|| {
                let c = DomainCounters::default();
                c.max_rule_keys.store(self.max_rule_keys.load(Relaxed), Relaxed);
                Arc::new(c)
            })
            .clone()
    }

    /// Sets the bound on request-derived per-rule metric keys per domain (`--max-metric-keys`; 0: the default).
    pub fn set_max_rule_keys(&self, n: u64) {
        self.max_rule_keys.store(n, Relaxed);
        for c in self.domains.lock().values() {
            c.max_rule_keys.store(n, Relaxed);
        }
    }

    /// Records one store call, and its error if it failed.
    #[inline]
    pub fn observe_store(&self, elapsed: Duration, error: Option<&floodgate::StoreError>) {
        self.store_latency.observe(elapsed);
        if let Some(e) = error {
            self.store_errors.fetch_add(1, Relaxed);
            self.store_errors_by_kind[store_error_kind(e)].fetch_add(1, Relaxed);
        }
    }

    /// Records a config reload.
    pub fn observe_reload(&self, ok: bool) {
        if ok { &self.reloads_ok } else { &self.reloads_failed }.fetch_add(1, Relaxed);
        self.last_reload_ok.store(u64::from(ok), Relaxed);
    }

    /// Records a readiness probe's outcome (see [`crate::health`]).
    pub fn observe_ready(&self, ready: bool) {
        self.ready.store(u64::from(ready), Relaxed);
        if !ready {
            self.ready_failures.fetch_add(1, Relaxed);
        }
    }

    /// The Prometheus text exposition (format 0.0.4, [`CONTENT_TYPE`]) of these metrics alone.
    pub fn render(self: &Arc<Self>) -> String {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(self.clone()));
        encode(&registry)
    }

    /// Records the latency of one RLS call (one histogram observation).
    #[inline]
    pub fn observe_rls(&self, elapsed: Duration) {
        self.rls_latency.observe(elapsed);
    }

    /// Records the latency of one HTTP call (one histogram observation).
    #[inline]
    pub fn observe_http(&self, elapsed: Duration) {
        self.http_latency.observe(elapsed);
    }
}

/// The `Content-Type` of `/metrics`: the Prometheus text format, version 0.0.4.
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// Encodes `registry` in the Prometheus text format (version 0.0.4).
pub fn encode(registry: &Registry) -> String {
    let mut out = String::with_capacity(8192);
    // Writing to a String cannot fail; a collector's error would only cut the exposition short.
    if let Err(e) = prometheus_client::encoding::prometheus_text::encode(&mut out, registry) {
        tracing::warn!(error = %e, "cannot encode the metrics");
    }
    out
}

/// The kinds of `floodgate_store_errors_by_kind_total`, in the order the metrics keep their counts (the label `kind`).
pub const STORE_ERROR_KINDS: [&str; 5] = ["timeout", "unavailable", "backend", "invalid_id", "other"];

fn store_error_kind(e: &floodgate::StoreError) -> usize {
    match e {
        floodgate::StoreError::Timeout(_) => 0,
        floodgate::StoreError::Unavailable(_) => 1,
        floodgate::StoreError::Backend(_) => 2,
        floodgate::StoreError::InvalidId(_) => 3,
        _ => 4,
    }
}

/// Upper bounds of the request latency histograms' buckets (`floodgate_request_duration_seconds`), in seconds.
pub const REQUEST_BUCKETS: [f64; 15] =
    [0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5];

/// A latency histogram in atomics: one bucket increment and one sum addition per observation, no lock.
#[derive(Debug)]
pub struct LatencyHistogram {
    bounds_ns: &'static [u64],
    bounds: &'static [f64],
    buckets: Box<[AtomicU64]>,
    sum_ns: AtomicU64,
}

impl LatencyHistogram {
    /// A histogram over `bounds` (seconds) whose nanosecond equivalents are `bounds_ns`.
    fn new(bounds: &'static [f64], bounds_ns: &'static [u64]) -> Self {
        LatencyHistogram {
            bounds_ns,
            bounds,
            buckets: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum_ns: AtomicU64::new(0),
        }
    }

    /// Records one observation.
    #[inline]
    pub fn observe(&self, elapsed: Duration) {
        let ns = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        let bucket = self.bounds_ns.iter().position(|b| ns <= *b).unwrap_or(self.bounds_ns.len());
        if let Some(b) = self.buckets.get(bucket) {
            b.fetch_add(1, Relaxed);
        }
        self.sum_ns.fetch_add(ns, Relaxed);
    }

    /// Writes the histogram's series (per-bucket counts, as the encoder wants them).
    fn encode(&self, m: &mut MetricEncoder<'_>) -> std::fmt::Result {
        let mut buckets: Vec<(f64, u64)> = Vec::with_capacity(self.buckets.len());
        let mut count = 0u64;
        for (i, b) in self.buckets.iter().enumerate() {
            let n = b.load(Relaxed);
            count += n;
            buckets.push((self.bounds.get(i).copied().unwrap_or(f64::INFINITY), n));
        }
        m.encode_histogram::<NoLabelSet>(self.sum_ns.load(Relaxed) as f64 / 1e9, count, &buckets, None)
    }
}

const fn to_ns<const N: usize>(bounds: [f64; N]) -> [u64; N] {
    let mut out = [0u64; N];
    let mut i = 0;
    while i < N {
        out[i] = (bounds[i] * 1e9) as u64;
        i += 1;
    }
    out
}

static LATENCY_BUCKETS_NS: [u64; LATENCY_BUCKETS.len()] = to_ns(LATENCY_BUCKETS);
static REQUEST_BUCKETS_NS: [u64; REQUEST_BUCKETS.len()] = to_ns(REQUEST_BUCKETS);

/// A counter family: `# HELP`, `# TYPE` and one series per label set.
fn counters<'a, L: EncodeLabelSet + 'a>(
    enc: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    series: impl IntoIterator<Item = (L, u64)>,
) -> std::fmt::Result {
    let mut m = enc.encode_descriptor(name.strip_suffix("_total").unwrap_or(name), help, None, MetricType::Counter)?;
    for (labels, v) in series {
        ConstCounter::new(v).encode(m.encode_family(&labels)?)?;
    }
    Ok(())
}

/// One unlabelled counter (`name` ends in `_total`, as it is exposed).
pub fn counter(enc: &mut DescriptorEncoder<'_>, name: &str, help: &str, v: u64) -> std::fmt::Result {
    let m = enc.encode_descriptor(name.strip_suffix("_total").unwrap_or(name), help, None, MetricType::Counter)?;
    ConstCounter::new(v).encode(m)
}

/// One unlabelled counter of a fractional value (seconds).
pub fn counter_f64(enc: &mut DescriptorEncoder<'_>, name: &str, help: &str, v: f64) -> std::fmt::Result {
    let m = enc.encode_descriptor(name.strip_suffix("_total").unwrap_or(name), help, None, MetricType::Counter)?;
    ConstCounter::new(v).encode(m)
}

/// One unlabelled gauge of a fractional value.
pub fn gauge_f64(enc: &mut DescriptorEncoder<'_>, name: &str, help: &str, v: f64) -> std::fmt::Result {
    let m = enc.encode_descriptor(name, help, None, MetricType::Gauge)?;
    ConstGauge::new(v).encode(m)
}

/// One unlabelled gauge.
pub fn gauge(enc: &mut DescriptorEncoder<'_>, name: &str, help: &str, v: i64) -> std::fmt::Result {
    let m = enc.encode_descriptor(name, help, None, MetricType::Gauge)?;
    ConstGauge::new(v).encode(m)
}

impl Collector for Metrics {
    fn encode(&self, mut enc: DescriptorEncoder) -> std::fmt::Result {
        let domains: Vec<(Arc<str>, Arc<DomainCounters>)> =
            self.domains.lock().iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        {
            let mut m =
                enc.encode_descriptor("floodgate_build", "The server's version (always 1).", None, MetricType::Info)?;
            m.encode_info(&[("version", env!("CARGO_PKG_VERSION"))])?;
        }
        let mut decisions = Vec::with_capacity(domains.len() * 3 + 3);
        let sources = domains.iter().map(|(d, c)| ("rls", &**d, &**c)).chain([("http", "http", &self.http)]);
        for (source, domain, c) in sources {
            for (name, v) in [("allowed", &c.allowed), ("denied", &c.denied), ("shadow_denied", &c.shadow_denied)] {
                decisions.push(([("source", source), ("domain", domain), ("decision", name)], v.load(Relaxed)));
            }
        }
        counters(
            &mut enc,
            "floodgate_decisions_total",
            "Rate-limit decisions (RLS: one per descriptor with a limit).",
            decisions,
        )?;
        counters(
            &mut enc,
            "floodgate_rls_requests_total",
            "RLS requests answered, by overall code.",
            domains.iter().flat_map(|(d, c)| {
                [
                    ([("domain", &**d), ("code", "ok")], c.requests_ok.load(Relaxed)),
                    ([("domain", &**d), ("code", "over_limit")], c.requests_over.load(Relaxed)),
                ]
            }),
        )?;
        counter(
            &mut enc,
            "floodgate_rls_unknown_domain_total",
            "RLS requests for an unconfigured domain.",
            self.unknown_domain.load(Relaxed),
        )?;
        counter(
            &mut enc,
            "floodgate_rls_invalid_requests_total",
            "RLS requests answered INVALID_ARGUMENT.",
            self.invalid_requests.load(Relaxed),
        )?;
        counter(
            &mut enc,
            "floodgate_rls_global_shadow_mode_total",
            "RLS requests over a limit but answered OK by the global shadow mode.",
            self.global_shadow.load(Relaxed),
        )?;
        {
            let mut m = enc.encode_descriptor(
                "floodgate_request_duration_seconds",
                "Time to answer a request, by API (rls: the gRPC handler; http: the matched route's handler).",
                None,
                MetricType::Histogram,
            )?;
            for (api, h) in [("rls", &self.rls_latency), ("http", &self.http_latency)] {
                let labels = [("api", api)];
                h.encode(&mut m.encode_family(&labels)?)?;
            }
        }
        self.encode_rules(&mut enc, &domains)?;
        self.encode_store(&mut enc)?;
        counter(
            &mut enc,
            "floodgate_access_log_dropped_total",
            "Access log lines dropped: the writer could not keep up, or the file refused them.",
            self.access_log_dropped.load(Relaxed),
        )?;
        counter(
            &mut enc,
            "floodgate_otlp_export_failures_total",
            "Batches of spans the OTLP exporter could not send (--otlp-endpoint).",
            crate::otlp::EXPORT_FAILURES.load(Relaxed),
        )?;
        self.encode_config(&mut enc)?;
        crate::process_metrics::encode(&mut enc)
    }
}

impl Metrics {
    /// The store's series: errors, what its source adds, and the latency histogram.
    fn encode_store(&self, enc: &mut DescriptorEncoder<'_>) -> std::fmt::Result {
        let store = self.store_source.get().map(|f| (f.0)()).unwrap_or_default();
        let errors = self.store_errors.load(Relaxed).saturating_add(store.answered_by_failure_policy);
        counter(
            enc,
            "floodgate_store_errors_total",
            "Store calls that failed (also those answered by the failure policy).",
            errors,
        )?;
        counters(
            enc,
            "floodgate_store_errors_by_kind_total",
            "Store calls that returned an error to the server, by kind.",
            STORE_ERROR_KINDS.iter().zip(&self.store_errors_by_kind).map(|(k, v)| ([("kind", *k)], v.load(Relaxed))),
        )?;
        for (name, help, kind, value) in &store.series {
            if *kind == "gauge" {
                gauge(enc, name, help, i64::try_from(*value).unwrap_or(i64::MAX))?;
            } else {
                counter(enc, name, help, *value)?;
            }
        }
        let mut m = enc.encode_descriptor(
            "floodgate_store_latency_seconds",
            "Latency of store calls.",
            None,
            MetricType::Histogram,
        )?;
        self.store_latency.encode(&mut m)
    }

    /// Config reloads and readiness.
    fn encode_config(&self, enc: &mut DescriptorEncoder<'_>) -> std::fmt::Result {
        counters(
            enc,
            "floodgate_config_reloads_total",
            "Config reloads, by result.",
            [
                ([("result", "success")], self.reloads_ok.load(Relaxed)),
                ([("result", "failure")], self.reloads_failed.load(Relaxed)),
            ],
        )?;
        gauge(
            enc,
            "floodgate_config_last_reload_successful",
            "Whether the last config (re)load succeeded.",
            self.last_reload_ok.load(Relaxed) as i64,
        )?;
        gauge(
            enc,
            "floodgate_ready",
            "Whether the last readiness probe found the store answering and a config.",
            self.ready.load(Relaxed) as i64,
        )?;
        counter(
            enc,
            "floodgate_ready_failures_total",
            "Readiness probes that found the server not ready.",
            self.ready_failures.load(Relaxed),
        )
    }

    fn encode_rules(
        &self,
        enc: &mut DescriptorEncoder<'_>,
        domains: &[(Arc<str>, Arc<DomainCounters>)],
    ) -> std::fmt::Result {
        type Stat = fn(&RuleCounters) -> &AtomicU64;
        let families: [(&str, &str, Stat); 5] = [
            ("total_hits", "Hits on a matched limit, per rule key.", |c| &c.total_hits),
            ("within_limit", "Hits within the limit, per rule key.", |c| &c.within_limit),
            ("near_limit", "Hits past the near-limit threshold (--near-limit-ratio), per rule key.", |c| &c.near_limit),
            ("over_limit", "Hits over the limit, per rule key.", |c| &c.over_limit),
            ("shadow_mode", "Hits over the limit of a shadow_mode rule, per rule key.", |c| &c.shadow_mode),
        ];
        type Keys = Vec<(Box<str>, Arc<RuleCounters>)>;
        let rules: Vec<(&str, Keys)> = domains
            .iter()
            .map(|(d, c)| {
                let mut v: Vec<_> = c.rules.read().iter().map(|(k, c)| (k.clone(), c.clone())).collect();
                v.sort_by(|a, b| a.0.cmp(&b.0));
                (&**d, v)
            })
            .collect();
        for (stat, help, get) in families {
            let name = format!("floodgate_rls_rule_{stat}_total");
            counters(
                enc,
                &name,
                help,
                rules.iter().flat_map(|(domain, keys)| {
                    keys.iter().map(move |(key, c)| ([("domain", *domain), ("key", &**key)], get(c).load(Relaxed)))
                }),
            )?;
        }
        let overflow: u64 = domains.iter().map(|(_, c)| c.rule_keys_overflow.load(Relaxed)).sum();
        counter(
            enc,
            "floodgate_rls_rule_keys_overflow_total",
            "Hits whose per-rule metric key was past the bound (counted under key=\"__overflow__\").",
            overflow,
        )
    }
}

/// A function that reads the store's own counters, for `/metrics`.
pub struct StoreSource(pub Box<dyn Fn() -> StoreCounters + Send + Sync>);

impl std::fmt::Debug for StoreSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StoreSource")
    }
}

/// The store's own counters, as `/metrics` shows them.
#[derive(Clone, Debug, Default)]
pub struct StoreCounters {
    /// Store faults answered by the failure policy (fail-open or fail-closed) rather than returned as errors:
    /// added to `floodgate_store_errors_total`, which otherwise only counts the errors the server saw.
    pub answered_by_failure_policy: u64,
    /// More series: (name, help, `counter` or `gauge`, value).
    pub series: Vec<(&'static str, &'static str, &'static str, u64)>,
}

/// The upstream buckets' series (`/v1/upstream/*`), read at a scrape; `leases_expired` is left out when the
/// store could not say.
#[derive(Debug)]
pub struct UpstreamCollector {
    /// The counters of the upstream buckets.
    pub stats: floodgate_upstream::UpstreamStats,
    /// Leases never reported back (on Redis, the fleet's), when the store could say.
    pub leases_expired: Option<u64>,
}

impl Collector for UpstreamCollector {
    fn encode(&self, mut enc: DescriptorEncoder) -> std::fmt::Result {
        let stats = &self.stats;
        counters(
            &mut enc,
            "floodgate_upstream_acquires_total",
            "Upstream acquires answered, by result.",
            [([("result", "go")], stats.granted), ([("result", "wait_too_long")], stats.gave_up)],
        )?;
        counter(
            &mut enc,
            "floodgate_upstream_waited_total",
            "Upstream acquires that waited before going.",
            stats.waited,
        )?;
        counter_f64(
            &mut enc,
            "floodgate_upstream_wait_seconds_total",
            "Time upstream acquires waited before going, summed.",
            stats.wait_time.as_secs_f64(),
        )?;
        counter(
            &mut enc,
            "floodgate_upstream_rate_limited_total",
            "429s reported by upstream updates.",
            stats.rate_limited,
        )?;
        if let Some(n) = self.leases_expired {
            counter(
                &mut enc,
                "floodgate_upstream_leases_expired_total",
                "Upstream leases never reported back within the lease timeout.",
                n,
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn near_limit_follows_the_ratio() {
        // Limit 10: at 0.8 the 9th and 10th hits are near; at 0.5, the 6th to the 10th.
        for (ratio, near) in [(0.8, 2), (0.5, 5), (1.0, 0)] {
            let c = RuleCounters::default();
            for used in 0..10 {
                c.record(1, 10, used, true, false, ratio);
            }
            assert_eq!(c.near_limit.load(Relaxed), near, "ratio {ratio}");
            assert_eq!(c.within_limit.load(Relaxed), 10);
        }
    }

    #[test]
    fn renders_histogram_and_labels() {
        let m = Arc::new(Metrics::new());
        m.observe_store(Duration::from_micros(3), None);
        m.observe_store(Duration::from_secs(2), Some(&floodgate::StoreError::Timeout(Duration::from_secs(1))));
        m.domain(&Arc::from("a\"b")).allowed.fetch_add(2, Relaxed);
        let text = m.render();
        assert!(text.contains("floodgate_store_latency_seconds_bucket{le=\"5e-06\"} 1"), "{text}");
        assert!(text.contains("floodgate_store_latency_seconds_bucket{le=\"+Inf\"} 2"));
        assert!(text.contains("floodgate_store_errors_total 1"));
        assert!(text.contains("floodgate_store_errors_by_kind_total{kind=\"timeout\"} 1"), "{text}");
        assert!(text.contains("domain=\"a\\\"b\",decision=\"allowed\"} 2"), "{text}");
    }
}
