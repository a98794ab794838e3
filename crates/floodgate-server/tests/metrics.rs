//! `/metrics` on the prometheus-client encoder: every series name of before the move is still there (with
//! its labels), plus the build info, the process series, the request latency histograms per API and the store
//! errors by kind; every sample belongs to a family declared by `# TYPE`, and the content type is the text
//! format's.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashSet;

use common::{desc, request, start};

const CONFIG: &str =
    "domain: m\ndescriptors:\n  - key: user\n    rate_limit:\n      unit: minute\n      requests_per_unit: 1\n";

/// Every sample name (or name and label prefix) `/metrics` showed before it moved onto prometheus-client.
const BEFORE: &[&str] = &[
    "floodgate_decisions_total{source=\"rls\",domain=\"m\",decision=\"allowed\"} 1",
    "floodgate_decisions_total{source=\"rls\",domain=\"m\",decision=\"denied\"} 1",
    "floodgate_decisions_total{source=\"http\",domain=\"http\",decision=\"allowed\"}",
    "floodgate_rls_requests_total{domain=\"m\",code=\"ok\"} 1",
    "floodgate_rls_requests_total{domain=\"m\",code=\"over_limit\"} 1",
    "floodgate_rls_unknown_domain_total 0",
    "floodgate_rls_invalid_requests_total 0",
    "floodgate_rls_global_shadow_mode_total 0",
    "floodgate_store_latency_seconds_bucket{le=\"+Inf\"}",
    "floodgate_store_latency_seconds_sum",
    "floodgate_store_latency_seconds_count",
    "floodgate_store_errors_total 0",
    "floodgate_config_reloads_total{result=\"success\"}",
    "floodgate_config_reloads_total{result=\"failure\"}",
    "floodgate_config_last_reload_successful 1",
    "floodgate_ready 1",
    "floodgate_ready_failures_total 0",
    "floodgate_upstream_acquires_total{result=\"go\"}",
    "floodgate_upstream_acquires_total{result=\"wait_too_long\"}",
    "floodgate_upstream_waited_total",
    "floodgate_upstream_wait_seconds_total",
    "floodgate_upstream_rate_limited_total",
    "floodgate_upstream_leases_expired_total",
    "floodgate_rls_rule_total_hits_total{domain=\"m\",key=\"m.user\"} 2",
    "floodgate_rls_rule_within_limit_total{domain=\"m\",key=\"m.user\"} 1",
    "floodgate_rls_rule_near_limit_total{domain=\"m\",key=\"m.user\"}",
    "floodgate_rls_rule_over_limit_total{domain=\"m\",key=\"m.user\"} 1",
    "floodgate_rls_rule_shadow_mode_total{domain=\"m\",key=\"m.user\"} 0",
    "floodgate_rls_rule_keys_overflow_total 0",
    "floodgate_access_log_dropped_total 0",
];

/// What the move added.
const ADDED: &[&str] = &[
    "floodgate_build_info{version=\"",
    "floodgate_request_duration_seconds_bucket{api=\"rls\",le=\"+Inf\"} 2",
    "floodgate_request_duration_seconds_count{api=\"rls\"} 2",
    "floodgate_request_duration_seconds_sum{api=\"http\"}",
    "floodgate_store_errors_by_kind_total{kind=\"timeout\"} 0",
    "floodgate_store_errors_by_kind_total{kind=\"unavailable\"} 0",
    "floodgate_store_errors_by_kind_total{kind=\"backend\"} 0",
    "floodgate_store_errors_by_kind_total{kind=\"invalid_id\"} 0",
    "floodgate_store_errors_by_kind_total{kind=\"other\"} 0",
    "floodgate_otlp_export_failures_total 0",
];

#[cfg(target_os = "linux")]
const PROCESS: &[&str] = &[
    "process_cpu_seconds_total ",
    "process_resident_memory_bytes ",
    "process_open_fds ",
    "process_max_fds ",
    "process_start_time_seconds ",
];
#[cfg(not(target_os = "linux"))]
const PROCESS: &[&str] = &[];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_name_of_before_and_the_added_series() {
    let s = start(CONFIG).await;
    let mut client = s.client().await;
    for _ in 0..2 {
        client.should_rate_limit(request("m", vec![desc(&[("user", "ann")])])).await.unwrap();
    }
    let res = reqwest::Client::new()
        .post(format!("{}/v1/hit", s.base))
        .json(&serde_json::json!({"id": "x", "policy": {"limit": 5, "window": "1m", "algorithm": "gcra"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let res = reqwest::get(format!("{}/metrics", s.base)).await.unwrap();
    assert_eq!(res.headers()["content-type"], "text/plain; version=0.0.4; charset=utf-8");
    let text = res.text().await.unwrap();
    for want in BEFORE.iter().chain(ADDED).chain(PROCESS) {
        assert!(text.contains(want), "no {want:?} in:\n{text}");
    }
    // The HTTP histogram counted the /v1/hit call.
    let http_count =
        text.lines().find_map(|l| l.strip_prefix("floodgate_request_duration_seconds_count{api=\"http\"} ")).unwrap();
    assert!(http_count.parse::<u64>().unwrap() >= 1, "{text}");
    // Every sample is of a declared family, and each family is declared once.
    let mut declared = HashSet::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let name = rest.split(' ').next().unwrap();
            assert!(declared.insert(name.to_owned()), "{name} declared twice");
        }
    }
    for line in text.lines().filter(|l| !l.starts_with('#') && !l.is_empty()) {
        let name = line.split(['{', ' ']).next().unwrap();
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|suffix| name.strip_suffix(suffix).filter(|f| declared.contains(*f)))
            .unwrap_or(name);
        assert!(declared.contains(family), "{name} has no # TYPE in:\n{text}");
    }
}
