//! Prometheus metrics, kept in atomics and rendered as text on `/metrics`.
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
//!
//! Per-domain series exist for configured domains only, and survive reloads.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use parking_lot::Mutex;

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
}

/// Upper bounds of the store latency histogram's buckets, in seconds.
pub const LATENCY_BUCKETS: [f64; 16] = [
    0.000_005, 0.000_01, 0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05,
    0.1, 0.25, 1.0,
];

/// Every metric of one server.
#[derive(Debug, Default)]
pub struct Metrics {
    domains: Mutex<BTreeMap<Arc<str>, Arc<DomainCounters>>>,
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
    latency_buckets: [AtomicU64; LATENCY_BUCKETS.len() + 1],
    latency_sum_ns: AtomicU64,
    reloads_ok: AtomicU64,
    reloads_failed: AtomicU64,
    last_reload_ok: AtomicU64,
}

impl Metrics {
    /// A fresh set of metrics.
    pub fn new() -> Self {
        let m = Metrics::default();
        m.last_reload_ok.store(1, Relaxed);
        m
    }

    /// The counters of `domain` (created on first use; call only with configured domains).
    pub fn domain(&self, domain: &Arc<str>) -> Arc<DomainCounters> {
        self.domains.lock().entry(domain.clone()).or_default().clone()
    }

    /// Records one store call.
    #[inline]
    pub fn observe_store(&self, elapsed: Duration, failed: bool) {
        let secs = elapsed.as_secs_f64();
        let bucket = LATENCY_BUCKETS.iter().position(|b| secs <= *b).unwrap_or(LATENCY_BUCKETS.len());
        self.latency_buckets[bucket].fetch_add(1, Relaxed);
        self.latency_sum_ns.fetch_add(u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX), Relaxed);
        if failed {
            self.store_errors.fetch_add(1, Relaxed);
        }
    }

    /// Records a config reload.
    pub fn observe_reload(&self, ok: bool) {
        if ok { &self.reloads_ok } else { &self.reloads_failed }.fetch_add(1, Relaxed);
        self.last_reload_ok.store(u64::from(ok), Relaxed);
    }

    /// The Prometheus text exposition (format 0.0.4).
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(4096);
        let domains: Vec<(Arc<str>, Arc<DomainCounters>)> =
            self.domains.lock().iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        out.push_str("# HELP floodgate_decisions_total Rate-limit decisions (RLS: one per descriptor with a limit).\n");
        out.push_str("# TYPE floodgate_decisions_total counter\n");
        let mut decisions = |source: &str, domain: &str, c: &DomainCounters| {
            for (name, v) in [("allowed", &c.allowed), ("denied", &c.denied), ("shadow_denied", &c.shadow_denied)] {
                let _ = writeln!(
                    out,
                    "floodgate_decisions_total{{source=\"{source}\",domain=\"{}\",decision=\"{name}\"}} {}",
                    escape(domain),
                    v.load(Relaxed)
                );
            }
        };
        for (d, c) in &domains {
            decisions("rls", d, c);
        }
        decisions("http", "http", &self.http);
        out.push_str("# HELP floodgate_rls_requests_total RLS requests answered, by overall code.\n");
        out.push_str("# TYPE floodgate_rls_requests_total counter\n");
        for (d, c) in &domains {
            for (code, v) in [("ok", &c.requests_ok), ("over_limit", &c.requests_over)] {
                let _ = writeln!(
                    out,
                    "floodgate_rls_requests_total{{domain=\"{}\",code=\"{code}\"}} {}",
                    escape(d),
                    v.load(Relaxed)
                );
            }
        }
        counter(
            &mut out,
            "floodgate_rls_unknown_domain_total",
            "RLS requests for an unconfigured domain.",
            &self.unknown_domain,
        );
        counter(
            &mut out,
            "floodgate_rls_invalid_requests_total",
            "RLS requests answered INVALID_ARGUMENT.",
            &self.invalid_requests,
        );
        counter(
            &mut out,
            "floodgate_rls_global_shadow_mode_total",
            "RLS requests over a limit but answered OK by the global shadow mode.",
            &self.global_shadow,
        );
        counter(&mut out, "floodgate_store_errors_total", "Store calls that failed.", &self.store_errors);
        out.push_str("# HELP floodgate_store_latency_seconds Latency of store calls.\n");
        out.push_str("# TYPE floodgate_store_latency_seconds histogram\n");
        let mut cumulative = 0u64;
        for (i, bound) in LATENCY_BUCKETS.iter().enumerate() {
            cumulative += self.latency_buckets[i].load(Relaxed);
            let _ = writeln!(out, "floodgate_store_latency_seconds_bucket{{le=\"{bound}\"}} {cumulative}");
        }
        cumulative += self.latency_buckets[LATENCY_BUCKETS.len()].load(Relaxed);
        let _ = writeln!(out, "floodgate_store_latency_seconds_bucket{{le=\"+Inf\"}} {cumulative}");
        let _ = writeln!(out, "floodgate_store_latency_seconds_sum {}", self.latency_sum_ns.load(Relaxed) as f64 / 1e9);
        let _ = writeln!(out, "floodgate_store_latency_seconds_count {cumulative}");
        out.push_str("# HELP floodgate_config_reloads_total Config reloads, by result.\n");
        out.push_str("# TYPE floodgate_config_reloads_total counter\n");
        let _ = writeln!(out, "floodgate_config_reloads_total{{result=\"success\"}} {}", self.reloads_ok.load(Relaxed));
        let _ =
            writeln!(out, "floodgate_config_reloads_total{{result=\"failure\"}} {}", self.reloads_failed.load(Relaxed));
        out.push_str("# HELP floodgate_config_last_reload_successful Whether the last config (re)load succeeded.\n");
        out.push_str("# TYPE floodgate_config_last_reload_successful gauge\n");
        let _ = writeln!(out, "floodgate_config_last_reload_successful {}", self.last_reload_ok.load(Relaxed));
        out
    }
}

fn counter(out: &mut String, name: &str, help: &str, v: &AtomicU64) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}", v.load(Relaxed));
}

/// Escapes a label value (backslash, double quote, newline).
fn escape(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_histogram_and_labels() {
        let m = Metrics::new();
        m.observe_store(Duration::from_micros(3), false);
        m.observe_store(Duration::from_secs(2), true);
        m.domain(&Arc::from("a\"b")).allowed.fetch_add(2, Relaxed);
        let text = m.render();
        assert!(text.contains("floodgate_store_latency_seconds_bucket{le=\"0.000005\"} 1"), "{text}");
        assert!(text.contains("floodgate_store_latency_seconds_bucket{le=\"+Inf\"} 2"));
        assert!(text.contains("floodgate_store_errors_total 1"));
        assert!(text.contains("domain=\"a\\\"b\",decision=\"allowed\"} 2"), "{text}");
    }
}
