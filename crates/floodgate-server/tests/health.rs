//! Readiness (`/readyz`, `/healthcheck`, gRPC health) and reloads that find nothing new (issue 17, items 5
//! and 9): in process on the memory store, and the real binary on a real `redis-server` killed and restarted.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{KillOnDrop, free_port, redis_on, until};

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

const BIN: &str = env!("CARGO_BIN_EXE_floodgate");
const RLS: &str = "envoy.service.ratelimit.v3.RateLimitService";

/// `/readyz` (or `path`): the status and the JSON body; `None` if the server does not answer.
async fn ready(base: &str, path: &str) -> Option<(u16, serde_json::Value)> {
    let res = reqwest::get(format!("{base}{path}")).await.ok()?;
    let status = res.status().as_u16();
    Some((status, res.json().await.ok()?))
}

/// The gRPC health of `service`, as the standard client reads it.
async fn grpc_health(grpc: &str, service: &str) -> Option<i32> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{grpc}")).ok()?.connect().await.ok()?;
    let mut c = HealthClient::new(channel);
    let r = c.check(HealthCheckRequest { service: service.into() }).await.ok()?;
    Some(r.into_inner().status)
}

async fn metric(base: &str, name: &str) -> Option<u64> {
    let text = reqwest::get(format!("{base}/metrics")).await.ok()?.text().await.ok()?;
    text.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

/// The in-memory server is ready on every route and on gRPC, and says so in `/metrics`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_memory_server_is_ready() {
    let s = common::start("policies:\n  p: {limit: 1, window: 1s}\n").await;
    for path in ["/readyz", "/healthcheck"] {
        let (status, body) = ready(&s.base, path).await.unwrap();
        assert_eq!((status, body), (200, serde_json::json!({"ready": true})), "{path}");
    }
    let grpc = s.grpc.to_string();
    for service in ["", RLS] {
        until(5, "gRPC SERVING", || async { grpc_health(&grpc, service).await == Some(ServingStatus::Serving as i32) })
            .await;
    }
    assert_eq!(metric(&s.base, "floodgate_ready").await, Some(1));
    assert_eq!(metric(&s.base, "floodgate_ready_failures_total").await, Some(0));
}

/// A reload that finds the live config's contents is a no-op, not counted; a real change is counted once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_of_unchanged_files_is_not_counted() {
    let s = common::start("policies:\n  p: {limit: 1, window: 1s}\n").await;
    let reloads = || metric(&s.base, "floodgate_config_reloads_total{result=\"success\"}");
    let (_, changed) = s.server.state.reload_changed().await.unwrap();
    assert!(!changed);
    assert_eq!(reloads().await, Some(0));
    std::fs::write(&s.config, "policies:\n  q: {limit: 1, window: 1s}\n").unwrap();
    let (cfg, changed) = s.server.state.reload_changed().await.unwrap();
    assert!(changed);
    assert!(cfg.policies().any(|(name, _)| name == "q"));
    let (_, changed) = s.server.state.reload_changed().await.unwrap();
    assert!(!changed);
    assert_eq!(reloads().await, Some(1));
}

/// `serve --redis`: ready, then 503 with a reason (and gRPC NOT_SERVING, `floodgate_ready 0`) once Redis is
/// killed, then ready again once Redis is back on the same port.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_follows_redis_down_and_up() {
    let port = free_port();
    let mut redis = redis_on(port);
    let config = common::write_config("policies:\n  p: {limit: 5, window: 1h}\n");
    let (http, grpc) = (free_port(), free_port());
    let spawn = || {
        Command::new(BIN)
            .args(["serve", "--http", &format!("127.0.0.1:{http}"), "--grpc", &format!("127.0.0.1:{grpc}")])
            .args(["--redis", &format!("redis://127.0.0.1:{port}/"), "--redis-timeout-ms", "200"])
            .arg("--config")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    };
    // Retried while Redis is not up yet (the server refuses to start without it).
    let start = Instant::now();
    let _server = loop {
        let mut child = spawn();
        tokio::time::sleep(Duration::from_millis(300)).await;
        match child.try_wait().unwrap() {
            Some(_) if start.elapsed() < Duration::from_secs(10) => continue,
            Some(status) => panic!("serve --redis exited: {status}"),
            None => break KillOnDrop(child),
        }
    };
    let base = format!("http://127.0.0.1:{http}");
    let grpc = format!("127.0.0.1:{grpc}");
    let status_is = |want: u16| {
        let base = base.clone();
        move || {
            let base = base.clone();
            async move { ready(&base, "/readyz").await.is_some_and(|(s, _)| s == want) }
        }
    };
    let grpc_is = |want: ServingStatus| {
        let grpc = grpc.clone();
        move || {
            let grpc = grpc.clone();
            async move {
                grpc_health(&grpc, "").await == Some(want as i32) && grpc_health(&grpc, RLS).await == Some(want as i32)
            }
        }
    };
    until(20, "ready on Redis", status_is(200)).await;
    until(5, "gRPC SERVING on Redis", grpc_is(ServingStatus::Serving)).await;
    assert_eq!(ready(&base, "/healthcheck").await.unwrap().0, 200);

    // Redis killed: not ready, with the reason; liveness unchanged.
    drop(redis);
    until(10, "503 once Redis is down", status_is(503)).await;
    let (_, body) = ready(&base, "/readyz").await.unwrap();
    assert_eq!(body["ready"], false);
    assert!(body["reason"].as_str().unwrap().contains("store"), "{body}");
    assert_eq!(ready(&base, "/healthcheck").await.unwrap().0, 503);
    assert_eq!(reqwest::get(format!("{base}/healthz")).await.unwrap().status().as_u16(), 200);
    until(10, "gRPC NOT_SERVING once Redis is down", grpc_is(ServingStatus::NotServing)).await;
    assert_eq!(metric(&base, "floodgate_ready").await, Some(0));
    assert!(metric(&base, "floodgate_ready_failures_total").await.unwrap() >= 1);

    // Redis back on the same port: ready again.
    redis = redis_on(port);
    until(20, "200 once Redis is back", status_is(200)).await;
    until(10, "gRPC SERVING once Redis is back", grpc_is(ServingStatus::Serving)).await;
    assert_eq!(metric(&base, "floodgate_ready").await, Some(1));
    drop(redis);
}

fn signal(pid: u32, sig: &str) {
    assert!(Command::new("kill").args([sig, &pid.to_string()]).status().unwrap().success());
}

/// One edit noticed by both SIGHUP and the watcher (every second) reloads once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_edit_reloads_once_with_sighup_and_the_watcher() {
    let config = common::write_config("policies:\n  first: {limit: 1, window: 1s}\n");
    let (http, grpc) = (free_port(), free_port());
    let child = Command::new(BIN)
        .args(["serve", "--http", &format!("127.0.0.1:{http}"), "--grpc", &format!("127.0.0.1:{grpc}")])
        .args(["--watch-secs", "1", "--config"])
        .arg(&config)
        .env_remove("FLOODGATE_WATCH_SECS")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let child = KillOnDrop(child);
    let base = format!("http://127.0.0.1:{http}");
    let reloads = || metric(&base, "floodgate_config_reloads_total{result=\"success\"}");
    until(20, "server up", || async { reloads().await.is_some() }).await;
    assert_eq!(reloads().await, Some(0));
    std::fs::write(&config, "policies:\n  second: {limit: 2, window: 1s}\n").unwrap();
    signal(child.0.id(), "-HUP");
    until(10, "reloaded", || async { reloads().await == Some(1) }).await;
    // Three watcher rounds, each of which sees the edit's new fingerprint at most once.
    tokio::time::sleep(Duration::from_millis(3500)).await;
    assert_eq!(reloads().await, Some(1));
    let limits: serde_json::Value = reqwest::get(format!("{base}/v1/limits")).await.unwrap().json().await.unwrap();
    assert_eq!(limits["policies"][0]["name"], "second");
}

/// An empty config directory: `check` says where it looked and how many YAML files it found; `serve` refuses
/// it unless `--allow-empty-config` (or `FLOODGATE_ALLOW_EMPTY_CONFIG`), then serves no limits and is ready.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_config_is_refused_unless_allowed() {
    let dir = common::write_config("x").parent().unwrap().join("empty");
    std::fs::create_dir_all(&dir).unwrap();
    let abs = std::path::absolute(&dir).unwrap();
    let out = Command::new(BIN).arg("check").arg(&dir).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&abs.display().to_string()) && err.contains("found 0"), "{err}");

    let serve = |allow: Option<(&str, &str)>| {
        let (http, grpc) = (free_port(), free_port());
        let mut c = Command::new(BIN);
        c.args(["serve", "--http", &format!("127.0.0.1:{http}"), "--grpc", &format!("127.0.0.1:{grpc}")])
            .arg("--config")
            .arg(&dir)
            .env_remove("FLOODGATE_ALLOW_EMPTY_CONFIG")
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        match allow {
            Some(("flag", _)) => {
                c.arg("--allow-empty-config");
            }
            Some((var, value)) => {
                c.env(var, value);
            }
            None => {}
        }
        (c, format!("http://127.0.0.1:{http}"))
    };
    let (mut refused, _) = serve(None);
    let out = tokio::task::spawn_blocking(move || refused.output().unwrap()).await.unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--allow-empty-config"), "{out:?}");

    for allow in [("flag", ""), ("FLOODGATE_ALLOW_EMPTY_CONFIG", "true")] {
        let (mut c, base) = serve(Some(allow));
        let _child = KillOnDrop(c.stderr(Stdio::null()).spawn().unwrap());
        until(20, "serving an allowed empty config", || async {
            ready(&base, "/readyz").await.is_some_and(|(s, _)| s == 200)
        })
        .await;
        let limits: serde_json::Value = reqwest::get(format!("{base}/v1/limits")).await.unwrap().json().await.unwrap();
        assert_eq!(limits["policies"].as_array().map(Vec::len), Some(0), "{allow:?}: {limits}");
    }
}
