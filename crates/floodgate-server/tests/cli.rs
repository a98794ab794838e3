//! The built `floodgate` binary: `check`, and `serve` with SIGHUP reload and SIGTERM shutdown.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{KillOnDrop, free_port};

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_floodgate");

#[test]
fn check_accepts_the_examples_and_names_the_line_of_an_error() {
    for file in ["examples/default.yaml", "examples/config.yaml", "bench/bench.yaml"] {
        let out = Command::new(BIN).args(["check", file]).output().unwrap();
        assert!(out.status.success(), "{file}: {}", String::from_utf8_lossy(&out.stderr));
        assert!(String::from_utf8_lossy(&out.stdout).contains(": ok ("));
    }
    let bad = common::write_config(
        "domain: d\ndescriptors:\n  - key: k\n    rate_limit:\n      unit: second\n      requests_per_unit: ten\n  - kee: x\n",
    );
    let out = Command::new(BIN).arg("check").arg(&bad).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    let want = format!("{}:6:26: descriptors[0].rate_limit.requests_per_unit: expected a whole number", bad.display());
    assert!(err.contains(&want), "{err}");
    assert!(err.contains(":7:5: descriptors[1].kee: unknown field"), "{err}");
    let out = Command::new(BIN).args(["check", "/nonexistent/floodgate.yaml"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
}

fn wait_healthy(base: &str) {
    let start = Instant::now();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    while start.elapsed() < Duration::from_secs(20) {
        if rt.block_on(reqwest::get(format!("{base}/healthz"))).is_ok_and(|r| r.status().is_success()) {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("server did not come up");
}

fn get_json(base: &str, path: &str) -> serde_json::Value {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async { reqwest::get(format!("{base}{path}")).await.unwrap().json().await.unwrap() })
}

/// Starts `floodgate serve` on two free loopback ports with `extra` arguments (no inherited config, output
/// silenced); returns the child and the HTTP base URL. It does not wait for the server to be ready.
fn spawn_serve(extra: &[&std::ffi::OsStr]) -> (std::process::Child, String) {
    let (http, grpc) = (free_port(), free_port());
    let child = Command::new(BIN)
        .args(["serve", "--http", &format!("127.0.0.1:{http}"), "--grpc", &format!("127.0.0.1:{grpc}")])
        .args(extra)
        .env_remove("FLOODGATE_CONFIG")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    (child, format!("http://127.0.0.1:{http}"))
}

fn signal(pid: u32, sig: &str) {
    assert!(Command::new("kill").args([sig, &pid.to_string()]).status().unwrap().success());
}

#[test]
fn serve_reloads_on_sighup_and_stops_on_sigterm() {
    let config = common::write_config("policies:\n  first: {limit: 1, window: 1s}\n");
    // `--watch-secs 0`: SIGHUP alone must reload.
    let (mut child, base) =
        spawn_serve(&["--config".as_ref(), config.as_os_str(), "--watch-secs".as_ref(), "0".as_ref()]);
    wait_healthy(&base);
    assert_eq!(get_json(&base, "/v1/limits")["policies"][0]["name"], "first");

    // A bad file is refused: the old config stays.
    std::fs::write(&config, "policies:\n  second: {limit: 0, window: 1s}\n").unwrap();
    signal(child.id(), "-HUP");
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(get_json(&base, "/v1/limits")["policies"][0]["name"], "first");

    std::fs::write(&config, "policies:\n  second: {limit: 2, window: 1s}\n").unwrap();
    signal(child.id(), "-HUP");
    let start = Instant::now();
    while get_json(&base, "/v1/limits")["policies"][0]["name"] != "second" {
        assert!(start.elapsed() < Duration::from_secs(10), "SIGHUP did not reload");
        std::thread::sleep(Duration::from_millis(50));
    }

    signal(child.id(), "-TERM");
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success(), "{status}");
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(10), "SIGTERM did not stop the server");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn serve_with_no_config_uses_the_builtin_limits() {
    let (mut child, base) = spawn_serve(&[]);
    wait_healthy(&base);
    let limits = get_json(&base, "/v1/limits");
    child.kill().unwrap();
    let _ = child.wait();
    assert_eq!(limits["domains"][0]["domain"], "default");
    assert!(limits["policies"].as_array().unwrap().iter().any(|p| p["name"] == "default"));

    // Nothing listens on port 1: a clear error, no panic.
    let (http, grpc) = (free_port(), free_port());
    let out = Command::new(BIN)
        .args(["serve", "--http", &format!("127.0.0.1:{http}"), "--grpc", &format!("127.0.0.1:{grpc}")])
        .args(["--redis", "redis://127.0.0.1:1"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot use Redis"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}

/// A redis-server on a free loopback port.
fn start_redis() -> (KillOnDrop, u16) {
    let port = free_port();
    (common::redis_on(port), port)
}

/// `serve --redis` on the Redis at `port` with `extra` flags, retried while Redis is not up yet; answers the
/// server and its HTTP base URL and gRPC port once it is healthy.
fn serve_redis(port: u16, config: &std::path::Path, extra: &[&str]) -> (KillOnDrop, String, u16) {
    let (http, grpc) = (free_port(), free_port());
    let start = Instant::now();
    let child = loop {
        let mut child = Command::new(BIN)
            .args(["serve", "--http", &format!("127.0.0.1:{http}"), "--grpc", &format!("127.0.0.1:{grpc}")])
            .args(["--redis", &format!("redis://127.0.0.1:{port}/"), "--redis-prefix", "fgtest"])
            .args(extra)
            .arg("--config")
            .arg(config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(300));
        match child.try_wait().unwrap() {
            // Redis was not up yet: try again.
            Some(_) if start.elapsed() < Duration::from_secs(10) => continue,
            Some(status) => panic!("serve --redis exited: {status}"),
            None => break KillOnDrop(child),
        }
    };
    let base = format!("http://127.0.0.1:{http}");
    wait_healthy(&base);
    (child, base, grpc)
}

/// `serve --redis` against a real redis-server on loopback.
#[test]
fn serve_on_redis() {
    let (_redis, port) = start_redis();
    let config = common::write_config(
        "domain: r\ndescriptors:\n  - key: k\n    rate_limit: {unit: hour, requests_per_unit: 2}\npolicies:\n  p: {limit: 1, window: 1h}\n",
    );
    let (_child, base, grpc) =
        serve_redis(port, &config, &["--redis-timeout-ms", "5000", "--redis-shards-per-slot", "3"]);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let codes = rt.block_on(async {
        let mut c =
            envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_service_client::RateLimitServiceClient::connect(
                format!("http://127.0.0.1:{grpc}"),
            )
            .await
            .unwrap();
        let mut codes = Vec::new();
        // A short value, then one of 15 000 bytes: its counter's id is far over the 4 096 bytes a Redis key used
        // to allow, and is limited exactly the same (issue 19, defect 4).
        let long = "v".repeat(15_000);
        for value in ["v", long.as_str()] {
            for _ in 0..3 {
                let req = common::request("r", vec![common::desc(&[("k", value)])]);
                let answer = c.should_rate_limit(req).await.unwrap_or_else(|e| panic!("{e:?}"));
                codes.push(answer.into_inner().overall_code);
            }
        }
        let hit = |_| async {
            let res = reqwest::Client::new()
                .post(format!("{base}/v1/hit"))
                .json(&serde_json::json!({"id": "a", "policy": "p"}))
                .send()
                .await
                .unwrap();
            res.json::<serde_json::Value>().await.unwrap()["allowed"].as_bool().unwrap()
        };
        codes.push(i32::from(hit(0).await));
        codes.push(i32::from(hit(1).await));
        codes
    });
    // OK, OK, OVER_LIMIT for each value; then HTTP allowed, denied.
    assert_eq!(codes, vec![1, 1, 2, 1, 1, 2, 1, 0]);
    // The counters are fields of the prefix's shards (`fgtest#{<tag>}`, `fgtest#<n>{<tag>}`).
    let keys =
        Command::new("redis-cli").args(["-p", &port.to_string(), "--scan", "--pattern", "fgtest#*"]).output().unwrap();
    assert_eq!(String::from_utf8_lossy(&keys.stdout).lines().count(), 3, "{keys:?}");
    // Zero shards per slot is refused, naming the flag.
    let out = Command::new(BIN).args(["serve", "--redis-shards-per-slot", "0"]).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("--redis-shards-per-slot"), "{err}");
}

/// With Redis gone, `--failure-policy fail-open`/`fail-closed` answers say they are the policy's, not a real
/// decision (`"fallback": true` and `Floodgate-Fallback`), and `/metrics` counts them (issue 19, defect 7).
#[test]
fn fail_policy_answers_are_marked_and_counted() {
    let (mut redis, port) = start_redis();
    let config = common::write_config("policies:\n  p: {limit: 5, window: 1h}\n");
    let flags = |policy| ["--redis-timeout-ms", "300", "--failure-policy", policy];
    let (_open, open_base, _) = serve_redis(port, &config, &flags("fail-open"));
    let (_closed, closed_base, _) = serve_redis(port, &config, &flags("fail-closed"));
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let hit = |base: &str| {
        rt.block_on(async {
            let res = reqwest::Client::new()
                .post(format!("{base}/v1/hit"))
                .json(&serde_json::json!({"id": "a", "policy": "p"}))
                .send()
                .await
                .unwrap();
            assert_eq!(res.status(), 200);
            let mark = res.headers().get("floodgate-fallback").map(|v| v.to_str().unwrap().to_owned());
            (mark, res.json::<serde_json::Value>().await.unwrap())
        })
    };
    // Redis answers: real decisions, unmarked.
    for base in [&open_base, &closed_base] {
        let (mark, body) = hit(base);
        assert_eq!(
            (mark, &body["fallback"], &body["allowed"]),
            (None, &serde_json::json!(false), &serde_json::json!(true))
        );
    }
    let _ = redis.0.kill();
    let _ = redis.0.wait();
    let (mark, body) = hit(&open_base);
    assert_eq!(mark.as_deref(), Some("fail-open"));
    assert_eq!((&body["fallback"], &body["allowed"]), (&serde_json::json!(true), &serde_json::json!(true)));
    let (mark, body) = hit(&closed_base);
    assert_eq!(mark.as_deref(), Some("fail-closed"));
    assert_eq!((&body["fallback"], &body["allowed"]), (&serde_json::json!(true), &serde_json::json!(false)));
    let metric = |base: &str, name: &str| {
        let text = rt.block_on(async { reqwest::get(format!("{base}/metrics")).await.unwrap().text().await.unwrap() });
        let line =
            text.lines().find(|l| l.starts_with(&format!("{name} "))).unwrap_or_else(|| panic!("{name}: {text}"));
        line.rsplit(' ').next().unwrap().parse::<u64>().unwrap()
    };
    assert_eq!(metric(&open_base, "floodgate_store_failed_open_total"), 1);
    assert_eq!(metric(&closed_base, "floodgate_store_failed_closed_total"), 1);
    assert_eq!(metric(&open_base, "floodgate_store_errors_total"), 1);
}

/// The flood bar of issue 19 through the real server: 20 exhausted victims (10 RLS counters, 10 HTTP ids), then
/// 100 000 new RLS keys against `--max-keys 10000`: no victim is admitted again, and the store stayed bounded.
/// (With `--when-full evict` victims are admitted again: the test fails, as it did before the fix.)
#[test]
fn a_flood_of_new_keys_through_the_server_readmits_no_victim() {
    let config = common::write_config(
        "domain: edge\ndescriptors:\n  - key: ip\n    rate_limit: {unit: hour, requests_per_unit: 1}\npolicies:\n  p: {limit: 1, window: 1h}\n",
    );
    let (child, base) =
        spawn_serve(&["--max-keys".as_ref(), "10000".as_ref(), "--config".as_ref(), config.as_os_str()]);
    let _child = KillOnDrop(child);
    wait_healthy(&base);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let client = reqwest::Client::new();
    // The HTTP status of one `/json` request over `ips` (200 is OK, 429 OVER_LIMIT).
    let rls = |ips: Vec<String>| {
        let descriptors: Vec<_> =
            ips.iter().map(|ip| serde_json::json!({"entries": [{"key": "ip", "value": ip}]})).collect();
        let body = serde_json::json!({"domain": "edge", "descriptors": descriptors});
        let res = rt.block_on(client.post(format!("{base}/json")).json(&body).send()).unwrap();
        res.status().as_u16()
    };
    let http = |id: &str| {
        let body = serde_json::json!({"id": id, "policy": "p"});
        let res = rt.block_on(client.post(format!("{base}/v1/hit")).json(&body).send()).unwrap();
        rt.block_on(res.json::<serde_json::Value>()).unwrap()["allowed"].as_bool().unwrap()
    };
    for v in 0..10 {
        let ip = format!("victim-{v}");
        assert_eq!((rls(vec![ip.clone()]), rls(vec![ip])), (200, 429), "victim {v} is exhausted");
        let id = format!("victim-{v}");
        assert_eq!((http(&id), http(&id)), (true, false), "victim {v} is exhausted");
    }
    let started = Instant::now();
    for batch in 0..400 {
        rls((0..250).map(|n| format!("attacker-{}", batch * 250 + n)).collect());
        assert!(started.elapsed() < Duration::from_secs(120), "the flood is bounded in time");
    }
    for v in 0..10 {
        assert_eq!(rls(vec![format!("victim-{v}")]), 429, "RLS victim {v} was admitted again");
        assert!(!http(&format!("victim-{v}")), "HTTP victim {v} was admitted again");
    }
    let metrics = rt.block_on(async { reqwest::get(format!("{base}/metrics")).await.unwrap().text().await.unwrap() });
    let value = |name: &str| -> u64 {
        let line = metrics.lines().find(|l| l.starts_with(&format!("{name} "))).unwrap_or_else(|| panic!("{name}"));
        line.rsplit(' ').next().unwrap().parse().unwrap()
    };
    assert!(value("floodgate_memory_keys") <= 10_000, "{metrics}");
    assert!(value("floodgate_memory_refused_full_total") > 0, "{metrics}");
    assert_eq!(value("floodgate_memory_evicted_live_total"), 0, "{metrics}");
}

#[test]
fn serve_takes_the_reference_compatibility_switches() {
    let out = Command::new(BIN).args(["serve", "--help"]).output().unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    for flag in ["--reference-counting", "FLOODGATE_REFERENCE_COUNTING", "--shadow-mode", "FLOODGATE_SHADOW_MODE"] {
        assert!(help.contains(flag), "{flag} missing from:\n{help}");
    }
}

/// `--near-limit-ratio` takes a share of the limit, and says why it refuses anything else.
#[test]
fn near_limit_ratio_is_checked() {
    for bad in ["1.5", "0", "x"] {
        let out = Command::new(BIN).args(["serve", "--near-limit-ratio", bad]).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && err.contains("--near-limit-ratio"), "{bad}: {err}");
    }
}

/// Every `--flag` the migration page tells users to set exists.
#[test]
fn migration_page_names_only_real_flags() {
    let page = include_str!("../docs/migrating-from-envoy-ratelimit.md");
    let out = Command::new(BIN).args(["serve", "--help"]).output().unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    let mut flags: Vec<&str> = page
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '-'))
        .filter(|w| w.starts_with("--") && w.as_bytes().get(2).is_some_and(u8::is_ascii_lowercase))
        .collect();
    flags.sort_unstable();
    flags.dedup();
    assert!(flags.len() >= 6, "{flags:?}");
    for flag in flags {
        assert!(help.contains(flag), "the migration page names {flag}, which `serve --help` does not know:\n{help}");
    }
}

#[test]
fn check_merges_domains_only_when_asked() {
    let dir = std::env::temp_dir().join(format!("floodgate-cli-merge-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("a.yaml"),
        "domain: d\ndescriptors:\n  - key: x\n    rate_limit: {unit: second, requests_per_unit: 1}\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("b.yaml"),
        "domain: d\ndescriptors:\n  - key: y\n    rate_limit: {unit: second, requests_per_unit: 1}\n",
    )
    .unwrap();
    let out = Command::new(BIN).arg("check").arg(&dir).env_remove("FLOODGATE_MERGE_DOMAINS").output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("is already defined in"), "{out:?}");
    let out = Command::new(BIN).arg("check").arg("--merge-domains").arg(&dir).output().unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("1 domain(s), 2 rule(s)"), "{out:?}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn check_notes_wildcards_the_reference_reads_literally() {
    let dir = std::env::temp_dir().join(format!("floodgate-cli-wild-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("w.yaml");
    std::fs::write(
        &file,
        "domain: d\ndescriptors:\n  - key: p\n    value: /api/*\n  - key: p\n    value: '*.png'\n    rate_limit: {unit: second, requests_per_unit: 1}\n",
    )
    .unwrap();
    let out = Command::new(BIN).arg("check").arg(&file).output().unwrap();
    assert!(out.status.success(), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("w.yaml:5:") && err.contains("p=*.png") && err.contains("matches it literally"), "{err}");
    assert!(!err.contains("/api/*"), "a trailing `*` is a wildcard in both: {err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Issue 19, defect 8: a config directory with no YAML file left, and an empty token file, are refused (they
/// used to mean "no limits" and "no authentication").
#[test]
fn an_empty_config_or_token_file_is_refused() {
    let config = common::write_config("policies:\n  first: {limit: 1, window: 1s}\n");
    let dir = config.parent().unwrap().to_path_buf();
    let (mut child, base) = spawn_serve(&["--config".as_ref(), dir.as_os_str(), "--watch-secs".as_ref(), "0".as_ref()]);
    wait_healthy(&base);
    // The last file of the directory is deleted: the reload is refused and the old limits stay.
    std::fs::remove_file(&config).unwrap();
    signal(child.id(), "-HUP");
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(get_json(&base, "/v1/limits")["policies"][0]["name"], "first");
    let out = Command::new(BIN).arg("check").arg(&dir).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no domain and no policy"), "{out:?}");
    let _ = child.kill();
    let _ = child.wait();

    // An empty (or blank) token file: the server does not start.
    let token = dir.join("token");
    std::fs::write(&token, "  \n").unwrap();
    let (http, grpc) = (free_port(), free_port());
    let out = Command::new(BIN)
        .args(["serve", "--http", &format!("127.0.0.1:{http}"), "--grpc", &format!("127.0.0.1:{grpc}")])
        .arg("--token-file")
        .arg(&token)
        .env_remove("FLOODGATE_CONFIG")
        .env_remove("FLOODGATE_TOKEN")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("empty"), "{out:?}");
}

/// Issue 19, defect 10: the watcher notices a rewrite of the same size whose modification time was put back.
#[test]
fn the_watcher_sees_a_same_size_rewrite_with_the_mtime_restored() {
    let config = common::write_config("policies:\n  first: {limit: 1, window: 1s}\n");
    let mtime = std::fs::metadata(&config).unwrap().modified().unwrap();
    let (mut child, base) =
        spawn_serve(&["--config".as_ref(), config.as_os_str(), "--watch-secs".as_ref(), "1".as_ref()]);
    wait_healthy(&base);
    assert_eq!(get_json(&base, "/v1/limits")["policies"][0]["name"], "first");
    std::fs::write(&config, "policies:\n  other: {limit: 1, window: 1s}\n").unwrap();
    std::fs::File::options().write(true).open(&config).unwrap().set_modified(mtime).unwrap();
    let start = Instant::now();
    while get_json(&base, "/v1/limits")["policies"][0]["name"] != "other" {
        assert!(start.elapsed() < Duration::from_secs(10), "the watcher missed the rewrite");
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// Issue 19, defect 3: when whoever reads the logs goes away, logging must not panic or block: SIGHUP still
/// reloads, requests are still answered, and SIGTERM still stops the server.
#[test]
fn a_closed_stderr_never_stops_the_server() {
    let config = common::write_config("policies:\n  first: {limit: 1, window: 1s}\n");
    let (http, grpc) = (free_port(), free_port());
    let mut child = Command::new(BIN)
        .args(["serve", "--http", &format!("127.0.0.1:{http}"), "--grpc", &format!("127.0.0.1:{grpc}")])
        .arg("--config")
        .arg(&config)
        .args(["--watch-secs", "0"])
        .env_remove("FLOODGATE_CONFIG")
        .env("RUST_LOG", "debug")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let base = format!("http://127.0.0.1:{http}");
    wait_healthy(&base);
    // The reader goes away.
    drop(child.stderr.take());
    for _ in 0..3 {
        signal(child.id(), "-HUP");
        std::thread::sleep(Duration::from_millis(100));
    }
    std::fs::write(&config, "policies:\n  second: {limit: 2, window: 1s}\n").unwrap();
    signal(child.id(), "-HUP");
    let start = Instant::now();
    while get_json(&base, "/v1/limits")["policies"][0]["name"] != "second" {
        assert!(start.elapsed() < Duration::from_secs(10), "SIGHUP ignored after stderr closed");
        std::thread::sleep(Duration::from_millis(50));
    }
    signal(child.id(), "-TERM");
    let start = Instant::now();
    loop {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        if start.elapsed() > Duration::from_secs(10) {
            let _ = child.kill();
            panic!("SIGTERM ignored after stderr closed");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Issue 19, defect 10: on loopback the HTTP API answers only requests naming a loopback host (DNS rebinding).
#[test]
fn on_loopback_a_foreign_host_header_is_refused() {
    let (mut child, base) = spawn_serve(&[]);
    wait_healthy(&base);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let status = |host: &str| {
        rt.block_on(async {
            reqwest::Client::new().get(format!("{base}/v1/limits")).header("host", host).send().await.unwrap().status()
        })
    };
    assert_eq!(status("evil.example:8080"), reqwest::StatusCode::MISDIRECTED_REQUEST);
    assert_eq!(status("localhost:8080"), reqwest::StatusCode::OK);
    assert_eq!(status("127.0.0.1"), reqwest::StatusCode::OK);
    assert_eq!(status("[::1]:8080"), reqwest::StatusCode::OK);
    let _ = child.kill();
    let _ = child.wait();
}

/// Issue 15: two `floodgate serve --cluster` processes share one limit, and `GET /v1/cluster` shows the peer up.
#[test]
fn two_cluster_nodes_share_one_limit() {
    let config = common::write_config("policies:\n  per_min: {limit: 10, window: 60s, algorithm: fixed_window}\n");
    let secret = config.parent().unwrap().join("secret");
    std::fs::write(&secret, "cluster-test-secret\n").unwrap();
    let (a, b) = (free_port(), free_port());
    let node = |me: u16, peer: u16, id: &str| {
        spawn_serve(&[
            "--config".as_ref(),
            config.as_os_str(),
            "--cluster".as_ref(),
            format!("127.0.0.1:{me}").as_ref(),
            "--peer".as_ref(),
            format!("127.0.0.1:{peer}").as_ref(),
            "--cluster-secret-file".as_ref(),
            secret.as_os_str(),
            "--node-id".as_ref(),
            id.as_ref(),
        ])
    };
    let (child_a, base_a) = node(a, b, "a");
    let _a = KillOnDrop(child_a);
    let (child_b, base_b) = node(b, a, "b");
    let _b = KillOnDrop(child_b);
    wait_healthy(&base_a);
    wait_healthy(&base_b);
    let start = Instant::now();
    while get_json(&base_a, "/v1/cluster")["peers"][0]["state"] != "up" {
        assert!(start.elapsed() < Duration::from_secs(20), "{}", get_json(&base_a, "/v1/cluster"));
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(get_json(&base_a, "/v1/cluster")["node_id"], "a");
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let hit = |base: &str| {
        rt.block_on(async {
            let res = reqwest::Client::new()
                .post(format!("{base}/v1/hit"))
                .json(&serde_json::json!({"id": "user:1", "policy": "per_min"}))
                .send()
                .await
                .unwrap();
            let body: serde_json::Value = res.json().await.unwrap();
            body["allowed"].as_bool().unwrap_or_else(|| panic!("{body}"))
        })
    };
    // 6 hits on a, replicated; then b has only 4 left.
    for _ in 0..6 {
        assert!(hit(&base_a));
    }
    std::thread::sleep(Duration::from_millis(500));
    let admitted_b = (0..10).filter(|_| hit(&base_b)).count();
    assert_eq!(admitted_b, 4);
}
