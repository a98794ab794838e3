//! Issue 20 through the server: `/openapi.json` describes `/v1/upstream/*` as the server answers them, their
//! metrics show on `/metrics`, the Python example (standard library only) takes no 429 against the built binary,
//! and two servers sharing one Redis, each with its own Python process, take no 429 from a shared limit.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{conforms, free_port};

use std::collections::HashMap;
use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use parking_lot::Mutex;
use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_floodgate");
const EXAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/upstream.py");
const CONFIG: &str = "domain: t\ndescriptors:\n  - key: k\n    rate_limit: {unit: hour, requests_per_unit: 3}\n";

async fn post(url: String, body: Value) -> Value {
    let res = reqwest::Client::new().post(url).json(&body).send().await.unwrap();
    assert_eq!(res.status(), 200);
    res.json().await.unwrap()
}

fn answer_schema<'a>(api: &'a Value, path: &str) -> &'a Value {
    &api["paths"][path]["post"]["responses"]["200"]["content"]["application/json"]["schema"]
}

fn request_schema<'a>(api: &'a Value, path: &str) -> &'a Value {
    &api["paths"][path]["post"]["requestBody"]["content"]["application/json"]["schema"]
}

/// The OpenAPI entries exist, the requests the docs show conform to them, and every answer of the server
/// (go, wait, update with a 429, an unknown bucket) conforms too. The metrics count what happened.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openapi_describes_the_upstream_endpoints_and_metrics_count() {
    let s = common::start(CONFIG).await;
    let api: Value = reqwest::get(format!("{}/openapi.json", s.base)).await.unwrap().json().await.unwrap();
    let (acquire, update) = ("/v1/upstream/acquire", "/v1/upstream/update");
    for path in [acquire, update] {
        assert!(api["paths"][path]["post"].is_object(), "{path} missing from openapi.json");
    }
    let requests = [
        (acquire, json!({"bucket": "GET /items", "provider": "discord", "max_wait_ms": 5000})),
        (acquire, json!({"bucket": "GET /items", "max_wait_ms": 50})),
        (acquire, json!({"bucket": "GET /other"})),
    ];
    let mut answers = Vec::new();
    for (path, body) in &requests {
        conforms(body, request_schema(&api, path), &api, path);
        answers.push((*path, post(format!("{}{path}", s.base), body.clone()).await));
    }
    assert_eq!(answers[0].1["go"], true, "{answers:?}");
    assert_eq!(answers[1].1["go"], false, "the pioneer's answer is awaited: {answers:?}");
    let lease = answers[0].1["lease"].as_str().unwrap().to_owned();
    let updates = [
        json!({"bucket": "GET /items", "provider": "discord", "status": 429, "lease": lease,
               "headers": {"retry-after": "2", "x-ratelimit-remaining": 0, "x-ratelimit-reset-after": "2.5"},
               "latency_ms": 12}),
        json!({"bucket": "GET /unknown", "provider": "retry-after", "status": 200}),
    ];
    for body in updates {
        conforms(&body, request_schema(&api, update), &api, update);
        answers.push((update, post(format!("{}{update}", s.base), body).await));
    }
    assert_eq!(answers[3].1["remaining"], 0, "{answers:?}");
    assert!(answers[3].1["retry_after_ms"].as_u64().unwrap() > 1_900, "{answers:?}");
    for (path, answer) in &answers {
        conforms(answer, answer_schema(&api, path), &api, path);
    }
    let text = reqwest::get(format!("{}/metrics", s.base)).await.unwrap().text().await.unwrap();
    for line in [
        "floodgate_upstream_acquires_total{result=\"go\"} 2",
        "floodgate_upstream_acquires_total{result=\"wait_too_long\"} 1",
        "floodgate_upstream_rate_limited_total 1",
        "floodgate_upstream_waited_total 0",
        "floodgate_upstream_leases_expired_total 0",
        "# TYPE floodgate_upstream_wait_seconds_total counter",
    ] {
        assert!(text.lines().any(|l| l == line), "{line} not in:\n{text}");
    }
}

/// A loopback upstream: `limit` requests per fixed `window` for the bucket, Discord's headers, 429s counted.
struct Limited {
    start: Instant,
    window: Duration,
    limit: u64,
    counts: Mutex<HashMap<u64, u64>>,
    rejected: AtomicU64,
}

impl Limited {
    fn hit(&self) -> (StatusCode, HeaderMap) {
        let elapsed = self.start.elapsed();
        let w = self.window.as_micros() as u64;
        let idx = elapsed.as_micros() as u64 / w;
        let reset = Duration::from_micros((idx + 1) * w) - elapsed;
        let ms = reset.as_micros().div_ceil(1000);
        let mut counts = self.counts.lock();
        let used = counts.entry(idx).or_insert(0);
        let allowed = *used < self.limit;
        if allowed {
            *used += 1;
        } else {
            self.rejected.fetch_add(1, Ordering::SeqCst);
        }
        let mut h = HeaderMap::new();
        h.insert("x-ratelimit-limit", self.limit.into());
        h.insert("x-ratelimit-remaining", (self.limit - *used).into());
        h.insert("x-ratelimit-reset-after", HeaderValue::from_str(&format!("{}.{:03}", ms / 1000, ms % 1000)).unwrap());
        h.insert("x-ratelimit-bucket", HeaderValue::from_static("items"));
        if allowed { (StatusCode::OK, h) } else { (StatusCode::TOO_MANY_REQUESTS, h) }
    }

    /// (requests let through in the full windows between the first and the last, what the limit allowed there).
    fn used_of_allowed(&self) -> (u64, u64) {
        let counts = self.counts.lock();
        let (Some(first), Some(last)) = (counts.keys().min().copied(), counts.keys().max().copied()) else {
            return (0, 0);
        };
        let used = (first + 1..last).map(|i| counts.get(&i).copied().unwrap_or(0)).sum();
        (used, self.limit * (last - first).saturating_sub(1))
    }
}

async fn serve_upstream(window: Duration, limit: u64) -> (Arc<Limited>, SocketAddr) {
    let state = Arc::new(Limited {
        start: Instant::now(),
        window,
        limit,
        counts: Mutex::new(HashMap::new()),
        rejected: AtomicU64::new(0),
    });
    let app = axum::Router::new()
        .route(
            "/items/{id}",
            axum::routing::get(|State(s): State<Arc<Limited>>, Path(_id): Path<String>| async move { s.hit() }),
        )
        .with_state(state.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (state, addr)
}

/// A child process killed when the test ends, pass or fail.
struct KillOnDrop(tokio::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.start_kill();
    }
}

/// `floodgate serve` (the built binary) with `extra` flags; answers once `/healthz` does (tried again while a
/// Redis it needs is not up yet).
async fn serve_binary(extra: &[String]) -> (KillOnDrop, String) {
    let start = Instant::now();
    loop {
        let (http, grpc) = (free_port(), free_port());
        let mut child = tokio::process::Command::new(BIN)
            .args(["serve", "--http", &format!("127.0.0.1:{http}"), "--grpc", &format!("127.0.0.1:{grpc}")])
            .args(extra)
            .env_remove("FLOODGATE_CONFIG")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let base = format!("http://127.0.0.1:{http}");
        while start.elapsed() < Duration::from_secs(20) {
            if let Ok(Some(_)) = child.try_wait() {
                break;
            }
            if reqwest::get(format!("{base}/healthz")).await.is_ok_and(|r| r.status().is_success()) {
                return (KillOnDrop(child), base);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(start.elapsed() < Duration::from_secs(20), "floodgate serve did not come up");
    }
}

/// Runs the Python example against `server` for `seconds` with `callers` threads; answers its JSON summary.
async fn python_example(server: &str, upstream: SocketAddr, id: u32, callers: u32, seconds: f64) -> Value {
    let out = tokio::process::Command::new("python3")
        .arg(EXAMPLE)
        .args(["--floodgate", server, "--url", &format!("http://{upstream}/items/{id}")])
        .args(["--bucket", "GET /items/{id}", "--provider", "discord"])
        .args(["--callers", &callers.to_string(), "--seconds", &seconds.to_string()])
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .expect("python3 is needed to run examples/upstream.py");
    let stdout = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("{e}: stdout {stdout:?}, stderr {:?}", String::from_utf8_lossy(&out.stderr)))
}

fn check_bar(label: &str, upstream: &Limited, summaries: &[Value]) {
    let rejected = upstream.rejected.load(Ordering::SeqCst);
    let (used, allowed) = upstream.used_of_allowed();
    println!(
        "{label}: {summaries:?}; upstream: {rejected} 429s, {used} of {allowed} allowed in the full windows ({:.1} %)",
        used as f64 * 100.0 / allowed.max(1) as f64
    );
    assert_eq!(rejected, 0, "429s taken");
    for s in summaries {
        assert_eq!(s["rate_limited"], 0, "{s}");
        assert!(s["ok"].as_u64().unwrap() > 0, "{s}");
    }
    assert!(allowed >= 40, "too short a run: {allowed}");
    assert!(used * 10 >= allowed * 9, "below 90 % of the allowed rate: {used} of {allowed}");
}

/// The Python example (16 threads) against the built binary (in-memory upstream buckets): zero 429s, ≥ 90 % of
/// the rate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_example_takes_no_429() {
    let (upstream, addr) = serve_upstream(Duration::from_millis(200), 10).await;
    let (_server, base) = serve_binary(&[]).await;
    let summary = python_example(&base, addr, 1, 16, 1.6).await;
    check_bar("python, memory, 16 threads", &upstream, &[summary]);
}

/// Two `floodgate serve` processes sharing one Redis, each with its own Python process of 8 threads, call one
/// upstream bucket: zero 429s from the shared limit, ≥ 90 % of the rate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_servers_on_redis_share_one_budget() {
    let port = free_port();
    let _redis = common::redis_on(port);
    let (upstream, addr) = serve_upstream(Duration::from_millis(200), 10).await;
    let flags =
        vec!["--redis".to_owned(), format!("redis://127.0.0.1:{port}/"), "--redis-prefix".into(), "fleet".into()];
    let (_a, a) = serve_binary(&flags).await;
    let (_b, b) = serve_binary(&flags).await;
    let (sa, sb) = tokio::join!(python_example(&a, addr, 1, 8, 1.6), python_example(&b, addr, 1, 8, 1.6));
    check_bar("python, two servers on redis, 8 threads each", &upstream, &[sa, sb]);
}

// The Redis Cluster harness of floodgate-redis's tests, shared rather than copied.
#[path = "../../floodgate-redis/tests/it/support.rs"]
mod cluster_support;

/// `serve --redis-cluster` keeps the upstream buckets on the cluster too, every key under one hash tag
/// (`{PREFIX:upstream}`), on one master.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_cluster_holds_the_upstream_buckets() {
    cluster_support::require_redis();
    let cluster = tokio::task::spawn_blocking(cluster_support::RedisCluster::start).await.unwrap();
    let flags = vec!["--redis-cluster".to_owned(), cluster.urls().join(","), "--redis-prefix".into(), "fg".into()];
    let (_server, base) = serve_binary(&flags).await;
    let (acquire, update) = (format!("{base}/v1/upstream/acquire"), format!("{base}/v1/upstream/update"));
    let got = post(acquire.clone(), json!({"bucket": "GET /items", "provider": "discord"})).await;
    assert_eq!(got["go"], true, "{got}");
    let headers = json!({"x-ratelimit-limit": "5", "x-ratelimit-remaining": "0", "x-ratelimit-reset-after": "30"});
    let view = post(
        update,
        json!({"bucket": "GET /items", "provider": "discord", "status": 200, "headers": headers, "lease": got["lease"]}),
    )
    .await;
    assert_eq!(view["remaining"], 0, "{view}");
    let again = post(acquire, json!({"bucket": "GET /items", "max_wait_ms": 50})).await;
    assert_eq!(again["go"], false, "{again}");
    let mut masters = Vec::new();
    for (i, node) in cluster.nodes.iter().enumerate() {
        if !node.cli(&["INFO", "replication"]).contains("role:master") {
            continue;
        }
        let keys = node.cli(&["--scan", "--pattern", "{fg:upstream}*"]);
        if keys.lines().any(|k| !k.is_empty()) {
            masters.push((i, keys));
        }
    }
    assert_eq!(masters.len(), 1, "{masters:?}");
}
