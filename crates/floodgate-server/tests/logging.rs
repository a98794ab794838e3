//! The real binary's logs: `--log-format json` is one JSON object per line, every event is one line in both
//! formats (a multi-line config error too), `--log-level debug` logs each decision, and `--access-log` writes
//! one line per decision and stays under its bound.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{BufRead as _, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

use common::{KillOnDrop, desc, free_port, request};
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_service_client::RateLimitServiceClient;

const BIN: &str = env!("CARGO_BIN_EXE_floodgate");

const CONFIG: &str =
    "domain: logs\ndescriptors:\n  - key: user\n    rate_limit:\n      unit: minute\n      requests_per_unit: 2\n";
/// Two problems: the error lists them on two lines.
const BAD_CONFIG: &str = "domain: logs\ndescriptors:\n  - key: k\n    rate_limit:\n      unit: second\n      requests_per_unit: ten\n  - kee: x\n";

struct Served {
    child: KillOnDrop,
    http: String,
    grpc: std::net::SocketAddr,
    lines: Receiver<String>,
}

/// `floodgate serve` on free loopback ports with `extra` flags, its stderr read line by line; returns once
/// `/healthz` answers (within 20 s).
fn serve(config: &Path, extra: &[&str]) -> Served {
    let (http, grpc) = (free_port(), free_port());
    let mut child = Command::new(BIN)
        .args(["serve", "--http", &format!("127.0.0.1:{http}"), "--grpc", &format!("127.0.0.1:{grpc}")])
        .arg("--config")
        .arg(config)
        .args(["--watch-secs", "0"])
        .args(extra)
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, lines) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let served = Served {
        child: KillOnDrop(child),
        http: format!("http://127.0.0.1:{http}"),
        grpc: format!("127.0.0.1:{grpc}").parse().unwrap(),
        lines,
    };
    let rt = runtime();
    let start = Instant::now();
    while !rt.block_on(reqwest::get(format!("{}/healthz", served.http))).is_ok_and(|r| r.status().is_success()) {
        assert!(start.elapsed() < Duration::from_secs(20), "the server did not come up");
        std::thread::sleep(Duration::from_millis(50));
    }
    served
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

impl Served {
    /// Three RLS calls for `user=ann` (the third over the limit of 2) and one `POST /json`; answers the codes.
    fn decide(&self) -> Vec<i32> {
        let rt = runtime();
        rt.block_on(async {
            let mut client = RateLimitServiceClient::connect(format!("http://{}", self.grpc)).await.unwrap();
            let mut codes = Vec::new();
            for _ in 0..3 {
                let r = client.should_rate_limit(request("logs", vec![desc(&[("user", "ann")])])).await.unwrap();
                codes.push(r.into_inner().overall_code);
            }
            let body = r#"{"domain":"logs","descriptors":[{"entries":[{"key":"user","value":"bob"}]}]}"#;
            let res = reqwest::Client::new()
                .post(format!("{}/json", self.http))
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await
                .unwrap();
            assert_eq!(res.status(), 200);
            codes
        })
    }

    /// Lines read until `pred` holds for one (which is included), or 10 s passed (then fails, showing them).
    fn until(&self, what: &str, pred: impl Fn(&str) -> bool) -> Vec<String> {
        let mut seen = Vec::new();
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(10) {
            if let Ok(line) = self.lines.recv_timeout(Duration::from_millis(100)) {
                let done = pred(&line);
                seen.push(line);
                if done {
                    return seen;
                }
            }
        }
        panic!("no log line {what} within 10 s; saw:\n{}", seen.join("\n"));
    }

    /// SIGTERM, then every line left, once the process exited (within 10 s).
    fn stop(mut self) -> Vec<String> {
        signal(&self.child.0, "-TERM");
        let start = Instant::now();
        while self.child.0.try_wait().unwrap().is_none() {
            assert!(start.elapsed() < Duration::from_secs(10), "SIGTERM did not stop the server");
            std::thread::sleep(Duration::from_millis(50));
        }
        let mut rest = Vec::new();
        while let Ok(line) = self.lines.recv_timeout(Duration::from_secs(2)) {
            rest.push(line);
        }
        rest
    }
}

fn signal(child: &Child, sig: &str) {
    assert!(Command::new("kill").args([sig, &child.id().to_string()]).status().unwrap().success());
}

#[test]
fn json_logs_are_one_object_per_line_with_a_decision_event_at_debug() {
    let config = common::write_config(CONFIG);
    let served = serve(&config, &["--log-format", "json", "--log-level", "debug"]);
    let codes = served.decide();
    assert_eq!(codes, vec![1, 1, 2], "OK, OK, OVER_LIMIT");
    let mut lines = served.until("for the /json decision", |l| l.contains("\"bob\"") || l.contains("\"api\":\"http\""));
    // A config with two problems: the refusal is one event, one line.
    std::fs::write(&config, BAD_CONFIG).unwrap();
    signal(&served.child.0, "-HUP");
    lines.extend(served.until("refusing the reload", |l| l.contains("reload refused")));
    lines.extend(served.stop());

    let events: Vec<serde_json::Value> = lines
        .iter()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not one JSON object: {e}: {l}")))
        .collect();
    for (e, l) in events.iter().zip(&lines) {
        assert!(e.is_object() && e["ts"].is_string() && e["level"].is_string() && e["message"].is_string(), "{l}");
        // Plain values: no Rust Debug wrappers in the server's own events (at debug, the HTTP/2 crates log theirs).
        if e["target"].as_str().is_some_and(|t| t.starts_with("floodgate")) {
            assert!(!l.contains("Path(\"") && !l.contains("Some(") && !l.contains("Builtin"), "{l}");
        }
    }
    let decisions: Vec<&serde_json::Value> =
        events.iter().filter(|e| e["target"] == "floodgate::request" && e["level"] == "DEBUG").collect();
    assert_eq!(decisions.len(), 4, "three RLS calls and one /json: {lines:#?}");
    let rls: Vec<&&serde_json::Value> = decisions.iter().filter(|e| e["api"] == "rls").collect();
    assert_eq!(rls.len(), 3);
    for (e, code) in rls.iter().zip(["OK", "OK", "OVER_LIMIT"]) {
        assert_eq!(e["domain"], "logs", "{e}");
        assert_eq!(e["code"], code, "{e}");
        assert_eq!(e["rules"], "logs.user", "{e}");
        assert!(e["store_us"].is_u64() && e["latency_us"].is_u64(), "{e}");
    }
    let http = decisions.iter().find(|e| e["api"] == "http").unwrap();
    assert_eq!((&http["domain"], &http["code"]), (&"logs".into(), &"OK".into()), "{http}");

    let refused = events.iter().find(|e| e["message"].as_str().is_some_and(|m| m.contains("reload refused"))).unwrap();
    let error = refused["error"].as_str().unwrap();
    assert!(error.contains(":6:26:") && error.contains(":7:5:"), "both problems in the one event: {refused}");
    let loaded = events.iter().find(|e| e["message"] == "config loaded").unwrap();
    assert_eq!(loaded["config"], config.display().to_string(), "the path as a plain string: {loaded}");
}

#[test]
fn text_logs_keep_a_multi_line_error_on_one_line_and_info_has_no_decisions() {
    let config = common::write_config(CONFIG);
    let served = serve(&config, &["--log-format", "text"]);
    served.decide();
    std::fs::write(&config, BAD_CONFIG).unwrap();
    signal(&served.child.0, "-HUP");
    let mut lines = served.until("refusing the reload", |l| l.contains("reload refused"));
    lines.extend(served.stop());
    let refused = lines.iter().find(|l| l.contains("reload refused")).unwrap();
    assert!(refused.contains("ERROR") && refused.contains(":6:26:") && refused.contains(":7:5:"), "{refused}");
    assert!(refused.contains("\\n"), "the line break escaped: {refused}");
    // Each line is one event: it starts with a timestamp and a level.
    for l in &lines {
        assert!(l.starts_with("20") && ["ERROR", "WARN", "INFO"].iter().any(|lv| l.contains(lv)), "{l}");
    }
    // At the default level (info), no per-request event.
    assert!(!lines.iter().any(|l| l.contains("floodgate::request")), "{lines:#?}");
}

fn file_lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path).map(|s| s.lines().map(str::to_owned).collect()).unwrap_or_default()
}

#[test]
fn the_access_log_has_one_line_per_decision() {
    let config = common::write_config(CONFIG);
    let log = config.with_file_name("access.log");
    let served = serve(&config, &["--access-log", log.to_str().unwrap()]);
    served.decide();
    // Flushed by its thread as soon as its queue is empty.
    let start = Instant::now();
    while file_lines(&log).len() < 4 && start.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(200));
    let lines = file_lines(&log);
    assert_eq!(lines.len(), 4, "three RLS calls and one /json: {lines:#?}");
    let records: Vec<serde_json::Value> = lines.iter().map(|l| serde_json::from_str(l).unwrap()).collect();
    let codes: Vec<&str> = records.iter().map(|r| r["code"].as_str().unwrap()).collect();
    assert_eq!(codes, ["OK", "OK", "OVER_LIMIT", "OK"], "{lines:#?}");
    for r in &records {
        assert_eq!(r["domain"], "logs");
        assert_eq!(r["rules"], serde_json::json!(["logs.user"]));
        assert!(r["ts"].is_string() && r["store_us"].is_u64() && r["latency_us"].is_u64(), "{r}");
    }
    assert_eq!(records[3]["api"], "http");
    served.stop();
}

#[test]
fn a_flood_keeps_the_access_log_under_its_bound() {
    let config = common::write_config(CONFIG);
    let log = config.with_file_name("access.log");
    let old = config.with_file_name("access.log.1");
    let served = serve(&config, &["--access-log", log.to_str().unwrap(), "--access-log-max-bytes", "4096"]);
    let rt = runtime();
    let decided = rt.block_on(async {
        let client = reqwest::Client::new();
        let mut n = 0;
        for i in 0..300 {
            let body =
                format!(r#"{{"domain":"logs","descriptors":[{{"entries":[{{"key":"user","value":"u{i}"}}]}}]}}"#);
            let res = client
                .post(format!("{}/json", served.http))
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await
                .unwrap();
            assert_eq!(res.status(), 200);
            n += 1;
        }
        n
    });
    assert_eq!(decided, 300);
    let metrics =
        rt.block_on(async { reqwest::get(format!("{}/metrics", served.http)).await.unwrap().text().await.unwrap() });
    let dropped: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("floodgate_access_log_dropped_total "))
        .unwrap_or_else(|| panic!("no floodgate_access_log_dropped_total in:\n{metrics}"))
        .parse()
        .unwrap();
    served.stop();
    let size = |p: &Path| std::fs::metadata(p).map(|m| m.len()).unwrap();
    assert!(size(&log) <= 4096, "{} bytes", size(&log));
    assert!(size(&old) <= 4096 && size(&old) > 2048, "{} bytes", size(&old));
    // Every line whole and JSON; the newest decision is the last line.
    let (current, previous) = (file_lines(&log), file_lines(&old));
    for l in current.iter().chain(&previous) {
        let r: serde_json::Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"));
        assert_eq!(r["domain"], "logs");
    }
    // ~150 bytes a line: the two files hold the last ~50 decisions; nothing was dropped.
    assert!(current.len() + previous.len() >= 40, "{} + {}", current.len(), previous.len());
    assert_eq!(dropped, 0, "300 sequential requests never fill a queue of 16k lines");
}
