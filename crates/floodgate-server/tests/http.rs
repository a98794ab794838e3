//! The HTTP JSON API, driven by reqwest over loopback.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{answer_schema, conforms, start, start_with};
use reqwest::StatusCode;
use serde_json::{Value, json};

const CONFIG: &str = "
domain: t
descriptors:
  - key: k
    rate_limit: {unit: hour, requests_per_unit: 3}
policies:
  two_per_hour: {limit: 2, window: 1h}
  bucket: {limit: 10, window: 1s, algorithm: token_bucket, burst: 5}
";

async fn post(url: String, body: Value) -> (StatusCode, reqwest::header::HeaderMap, Value) {
    let res = reqwest::Client::new().post(url).json(&body).send().await.unwrap();
    let (status, headers) = (res.status(), res.headers().clone());
    (status, headers, res.json().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hit_named_and_inline_policies() {
    let s = start(CONFIG).await;
    let url = format!("{}/v1/hit", s.base);
    let (st, _, d) = post(url.clone(), json!({"id": "user:1", "policy": "two_per_hour"})).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!((d["allowed"].as_bool(), d["limit"].as_u64(), d["remaining"].as_u64()), (Some(true), Some(2), Some(1)));
    assert!(d["retry_after_ms"].is_null());
    let (_, _, d) = post(url.clone(), json!({"id": "user:1", "policy": "two_per_hour"})).await;
    assert_eq!(d["remaining"], 0);
    let (st, headers, d) = post(url.clone(), json!({"id": "user:1", "policy": "two_per_hour"})).await;
    assert_eq!((st, d["allowed"].as_bool()), (StatusCode::OK, Some(false)));
    assert!(d["retry_after_ms"].as_u64().unwrap() > 0);
    assert!(headers.get("retry-after").is_some());
    // Cost, and a meter's burst.
    let (_, _, d) = post(url.clone(), json!({"id": "u", "policy": "bucket", "cost": 4})).await;
    assert_eq!((d["limit"].as_u64(), d["remaining"].as_u64()), (Some(5), Some(1)));
    let (_, _, d) = post(url.clone(), json!({"id": "u", "policy": "bucket", "cost": 6})).await;
    assert_eq!((d["allowed"].as_bool(), d["retry_after_ms"].is_null()), (Some(false), true));
    // Inline.
    let inline = json!({"limit": 1, "window": "10m", "algorithm": "sliding_window"});
    let (st, _, d) = post(url.clone(), json!({"id": "i", "policy": inline})).await;
    assert_eq!((st, d["allowed"].as_bool()), (StatusCode::OK, Some(true)));
    let (_, _, d) = post(url, json!({"id": "i", "policy": inline})).await;
    assert_eq!(d["allowed"], false);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inspect_and_reset() {
    let s = start(CONFIG).await;
    let (_, _, d) = post(format!("{}/v1/inspect", s.base), json!({"id": "x", "policy": "two_per_hour"})).await;
    assert!(d["bucket"].is_null(), "{d}");
    post(format!("{}/v1/hit", s.base), json!({"id": "x", "policy": "two_per_hour"})).await;
    post(format!("{}/v1/hit", s.base), json!({"id": "x", "policy": "bucket"})).await;
    let (st, _, d) = post(format!("{}/v1/inspect", s.base), json!({"id": "x", "policy": "two_per_hour"})).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!((d["bucket"]["used"].as_u64(), d["bucket"]["remaining"].as_u64()), (Some(1), Some(1)), "{d}");
    let b = &d["bucket"];
    let (updated, expires, reset_ms) =
        (b["updated_unix_us"].as_u64(), b["expires_at_unix_us"].as_u64(), b["reset_after_ms"].as_u64());
    assert!(
        matches!((updated, expires, reset_ms), (Some(u), Some(e), Some(r)) if e > u && e - u <= (r + 1) * 1000 + 1_000_000),
        "{d}"
    );
    let (st, _, d) = post(format!("{}/v1/reset", s.base), json!({"id": "x"})).await;
    assert_eq!((st, d["deleted"].as_u64()), (StatusCode::OK, Some(2)));
    let (_, _, d) = post(format!("{}/v1/inspect", s.base), json!({"id": "x", "policy": "two_per_hour"})).await;
    assert!(d["bucket"].is_null());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_are_json_with_the_right_status() {
    let s = start(CONFIG).await;
    let client = reqwest::Client::new();
    let hit = format!("{}/v1/hit", s.base);
    let cases: Vec<(reqwest::RequestBuilder, StatusCode, &str)> = vec![
        (client.post(&hit).json(&json!({"id": "a", "policy": "nope"})), StatusCode::NOT_FOUND, "no policy named"),
        (client.post(&hit).json(&json!({"id": "", "policy": "bucket"})), StatusCode::UNPROCESSABLE_ENTITY, "id"),
        (
            client.post(&hit).json(&json!({"id": "a".repeat(2000), "policy": "bucket"})),
            StatusCode::UNPROCESSABLE_ENTITY,
            "1024",
        ),
        (
            client.post(&hit).json(&json!({"id": "a", "policy": "bucket", "colour": 1})),
            StatusCode::UNPROCESSABLE_ENTITY,
            "colour",
        ),
        (
            client.post(&hit).json(&json!({"id": "a", "policy": "bucket", "cost": -1})),
            StatusCode::UNPROCESSABLE_ENTITY,
            "cost",
        ),
        (client.post(&hit).json(&json!({"id": "a", "policy": 7})), StatusCode::UNPROCESSABLE_ENTITY, "policy"),
        (
            client.post(&hit).json(&json!({"id": "a", "policy": {"limit": 0, "window": "1s"}})),
            StatusCode::UNPROCESSABLE_ENTITY,
            "limit",
        ),
        (
            client.post(&hit).json(&json!({"id": "a", "policy": {"limit": 1, "window": "1y"}})),
            StatusCode::UNPROCESSABLE_ENTITY,
            "window",
        ),
        (
            client.post(&hit).json(&json!({"id": "a", "policy": {"limit": 1, "window": "1s", "algorithm": "magic"}})),
            StatusCode::UNPROCESSABLE_ENTITY,
            "unknown algorithm",
        ),
        (
            client.post(&hit).json(&json!({"id": "a", "policy": {"limit": 1, "window": "1s", "burst": 3}})),
            StatusCode::UNPROCESSABLE_ENTITY,
            "burst",
        ),
        (client.post(&hit).header("content-type", "application/json").body("{not json"), StatusCode::BAD_REQUEST, ""),
        (client.post(&hit).body("{}"), StatusCode::UNSUPPORTED_MEDIA_TYPE, "Content-Type"),
        (
            client.post(&hit).header("content-type", "application/json").body(vec![b' '; 100_000]),
            StatusCode::PAYLOAD_TOO_LARGE,
            "",
        ),
        (client.get(&hit), StatusCode::METHOD_NOT_ALLOWED, "method"),
        (client.get(format!("{}/nowhere", s.base)), StatusCode::NOT_FOUND, "no such route"),
    ];
    for (i, (req, status, needle)) in cases.into_iter().enumerate() {
        let res = req.send().await.unwrap();
        assert_eq!(res.status(), status, "case {i}");
        let body: Value = res.json().await.unwrap_or_else(|e| panic!("case {i}: not JSON: {e}"));
        let msg = body["error"].as_str().unwrap_or_else(|| panic!("case {i}: no error field: {body}"));
        assert!(msg.contains(needle), "case {i}: {msg:?} lacks {needle:?}");
    }
    // Still serving.
    let res = client.get(format!("{}/healthz", s.base)).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bearer_token_guards_mutations_only() {
    let s = start_with(CONFIG, Some("s3cret"), false).await;
    let client = reqwest::Client::new();
    let body = json!({"id": "a", "policy": "bucket"});
    let res = client.post(format!("{}/v1/hit", s.base)).json(&body).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(res.headers().get("www-authenticate").unwrap(), "Bearer");
    let res = client.post(format!("{}/v1/hit", s.base)).bearer_auth("wrong").json(&body).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    let res = client.post(format!("{}/v1/hit", s.base)).bearer_auth("s3cret").json(&body).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    // The scheme is case-insensitive (issue 19, defect 10).
    for scheme in ["bearer", "BEARER"] {
        let auth = format!("{scheme} s3cret");
        let res =
            client.post(format!("{}/v1/hit", s.base)).header("authorization", auth).json(&body).send().await.unwrap();
        assert_eq!(res.status(), StatusCode::OK, "{scheme}");
    }
    let res = client.post(format!("{}/v1/reset", s.base)).json(&json!({"id": "a"})).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    let res = client.post(format!("{}/v1/reload", s.base)).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    let res = client.post(format!("{}/v1/inspect", s.base)).json(&body).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let res = client.get(format!("{}/v1/limits", s.base)).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_metrics_openapi_and_reload() {
    let s = start(CONFIG).await;
    let limits: Value = reqwest::get(format!("{}/v1/limits", s.base)).await.unwrap().json().await.unwrap();
    assert_eq!(limits["policies"][0]["name"], "bucket");
    assert_eq!(limits["policies"][0]["algorithm"], "token_bucket");
    assert_eq!(limits["domains"][0]["domain"], "t");
    assert_eq!(limits["domains"][0]["rules"][0]["path"], "k");
    assert_eq!(limits["domains"][0]["rules"][0]["rate_limit"]["requests_per_unit"], 3);

    post(format!("{}/v1/hit", s.base), json!({"id": "m", "policy": "two_per_hour"})).await;
    let res = reqwest::get(format!("{}/metrics", s.base)).await.unwrap();
    assert!(res.headers()["content-type"].to_str().unwrap().starts_with("text/plain"));
    let text = res.text().await.unwrap();
    assert!(
        text.contains("floodgate_decisions_total{source=\"http\",domain=\"http\",decision=\"allowed\"} 1"),
        "{text}"
    );
    assert!(text.contains("floodgate_store_latency_seconds_count"));

    let api: Value = reqwest::get(format!("{}/openapi.json", s.base)).await.unwrap().json().await.unwrap();
    assert_eq!(api["openapi"], "3.1.0");
    // The answers the server gives conform to what it describes.
    let client = reqwest::Client::new();
    let calls = [
        ("/v1/hit", json!({"id": "o", "policy": "two_per_hour"}), 200),
        ("/v1/hit", json!({"id": "o", "policy": {"limit": 1, "window": "1h", "algorithm": "gcra"}, "cost": 2}), 200),
        ("/v1/inspect", json!({"id": "o", "policy": "two_per_hour"}), 200),
        ("/v1/inspect", json!({"id": "never", "policy": "two_per_hour"}), 200),
        ("/v1/reset", json!({"id": "o"}), 200),
        ("/v1/hit", json!({"id": "", "policy": "two_per_hour"}), 422),
        ("/v1/hit", json!({"id": "o", "policy": "nope"}), 404),
    ];
    for (path, body, status) in calls {
        conforms(
            &body,
            &api["paths"][path]["post"]["requestBody"]["content"]["application/json"]["schema"],
            &api,
            path,
        );
        let res = client.post(format!("{}{path}", s.base)).json(&body).send().await.unwrap();
        assert_eq!(res.status().as_u16(), status, "{path} {body}");
        let answer: Value = res.json().await.unwrap();
        let schema = answer_schema(&api, "post", path, status);
        assert!(schema.is_object(), "{path}: no schema for {status}");
        conforms(&answer, schema, &api, path);
    }
    let ready: Value = reqwest::get(format!("{}/readyz", s.base)).await.unwrap().json().await.unwrap();
    conforms(&ready, answer_schema(&api, "get", "/readyz", 200), &api, "/readyz");
    let health = reqwest::get(format!("{}/healthz", s.base)).await.unwrap().text().await.unwrap();
    assert_eq!(health.trim(), "ok");

    // Reload over HTTP: a bad config is refused with why, the old one stays.
    std::fs::write(
        &s.config,
        "domain: t\ndescriptors:\n  - key: k\n    rate_limit: {unit: fortnight, requests_per_unit: 1}\n",
    )
    .unwrap();
    let (st, _, d) = post(format!("{}/v1/reload", s.base), json!({})).await;
    assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY);
    let msg = d["error"].as_str().unwrap();
    assert!(msg.contains(":4:") && msg.contains("fortnight"), "{msg}");
    let limits: Value = reqwest::get(format!("{}/v1/limits", s.base)).await.unwrap().json().await.unwrap();
    assert_eq!(limits["policies"].as_array().unwrap().len(), 2);
    std::fs::write(&s.config, "policies:\n  only: {limit: 1, window: 1s}\n").unwrap();
    let (st, _, d) = post(format!("{}/v1/reload", s.base), json!({})).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(d["policies"][0]["name"], "only");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reference_json_endpoint() {
    let s = start(CONFIG).await;
    let url = format!("{}/json", s.base);
    let body = json!({"domain": "t", "descriptors": [
        {"entries": [{"key": "k", "value": "a"}]},
        {"entries": [{"key": "nomatch", "value": "a"}]}
    ]});
    let (st, _, r) = post(url.clone(), body.clone()).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(r["overallCode"], "OK");
    assert_eq!(r["statuses"][0]["code"], "OK");
    assert_eq!(r["statuses"][0]["currentLimit"], json!({"requestsPerUnit": 3, "unit": "HOUR"}));
    assert_eq!(r["statuses"][0]["limitRemaining"], 2);
    assert!(r["statuses"][0]["durationUntilReset"].as_str().unwrap().ends_with('s'), "{r}");
    assert_eq!(r["statuses"][1], json!({"code": "OK"}), "no rule: proto3 JSON leaves zero values out");
    // hitsAddend (proto3 JSON name, or the proto name), as a number or a string.
    let (st, _, r) = post(
        url.clone(),
        json!({"domain": "t", "hits_addend": 2, "descriptors": [{"entries": [{"key": "k", "value": "a"}]}]}),
    )
    .await;
    assert_eq!((st, &r["overallCode"], r["statuses"][0].get("limitRemaining")), (StatusCode::OK, &json!("OK"), None));
    let (st, _, r) = post(url.clone(), body.clone()).await;
    assert_eq!(st, StatusCode::TOO_MANY_REQUESTS, "{r}");
    assert_eq!((&r["overallCode"], &r["statuses"][0]["code"]), (&json!("OVER_LIMIT"), &json!("OVER_LIMIT")));
    // A limit override and a per-descriptor hitsAddend.
    let (st, _, r) = post(
        url.clone(),
        json!({"domain": "t", "descriptors": [{"entries": [{"key": "k", "value": "b"}], "hitsAddend": "4",
            "limit": {"requestsPerUnit": 5, "unit": "MINUTE"}}]}),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{r}");
    assert_eq!(r["statuses"][0]["currentLimit"], json!({"requestsPerUnit": 5, "unit": "MINUTE"}));
    assert_eq!(r["statuses"][0]["limitRemaining"], 1);
    // Errors: empty domain or descriptors, unknown fields, malformed JSON.
    for bad in [
        json!({"domain": "", "descriptors": [{"entries": [{"key": "k", "value": "a"}]}]}),
        json!({"domain": "t", "descriptors": []}),
        json!({"domain": "t", "descriptors": [{"entries": [{"key": "k", "value": "a", "colour": 1}]}]}),
        json!({"domain": "t", "descriptors": [{"entries": [{"key": "k"}], "limit": {"unit": "FORTNIGHT"}}]}),
        json!({"domain": 5}),
    ] {
        let (st, _, e) = post(url.clone(), bad.clone()).await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "{bad} -> {e}");
        assert!(e["error"].is_string(), "{e}");
    }
    let res = reqwest::Client::new().post(&url).body("{").send().await.unwrap();
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthcheck_as_the_reference() {
    let s = start(CONFIG).await;
    for path in ["/healthz", "/healthcheck"] {
        let res = reqwest::get(format!("{}{path}", s.base)).await.unwrap();
        assert_eq!(res.status(), StatusCode::OK, "{path}");
    }
}

/// Issue 19, defect 9: an HTTP id shaped like an RLS counter's id cannot reach that counter.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_ids_cannot_reach_rls_counters() {
    let s = start(CONFIG).await;
    let mut client = s.client().await;
    let req = common::request("t", vec![common::desc(&[("k", "v")])]);
    let id = floodgate_server::rls::counter_id("t", &req.descriptors[0]);
    let id = String::from_utf8(id).unwrap();
    assert!(id.starts_with('\0'));
    for _ in 0..3 {
        let res = client.should_rate_limit(req.clone()).await.unwrap().into_inner();
        assert_eq!(res.overall_code, 1, "{res:?}");
    }
    let (status, _, body) = post(format!("{}/v1/reset", s.base), json!({"id": id})).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    for path in ["/v1/hit", "/v1/inspect"] {
        let (status, _, body) = post(format!("{}{path}", s.base), json!({"id": id, "policy": "bucket"})).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{path}: {body}");
    }
    // The RLS counter was not reset: the fourth request is over the limit of 3.
    let res = client.should_rate_limit(req).await.unwrap().into_inner();
    assert_eq!(res.overall_code, 2, "{res:?}");
}

/// Issue 20: the upstream buckets over HTTP. The first acquire of an unknown bucket goes (a pioneer); an update
/// with `remaining: 0` and a reset makes the next acquire wait, or answer `go: false` past `max_wait_ms`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_acquire_and_update() {
    let s = start(CONFIG).await;
    let acquire = format!("{}/v1/upstream/acquire", s.base);
    let update = format!("{}/v1/upstream/update", s.base);
    let (status, _, body) =
        post(acquire.clone(), json!({"bucket": "GET /items", "provider": "discord", "max_wait_ms": 1000})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["go"], true, "{body}");
    let lease = body["lease"].as_str().unwrap().to_owned();
    let headers = json!({"x-ratelimit-limit": "5", "x-ratelimit-remaining": "0", "x-ratelimit-reset-after": "30"});
    let (status, _, body) = post(
        update.clone(),
        json!({"bucket": "GET /items", "provider": "discord", "status": 200, "headers": headers, "lease": lease}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["remaining"], 0, "{body}");
    let reset = body["reset_after_ms"].as_u64().unwrap();
    assert!(reset > 25_000 && reset <= 30_000, "{body}");
    let (_, _, body) = post(acquire.clone(), json!({"bucket": "GET /items", "max_wait_ms": 100})).await;
    assert_eq!(body["go"], false, "{body}");
    assert!(body["wait_ms"].as_u64().unwrap() > 25_000, "{body}");
    // Bad input is a clear 422.
    let (status, _, _) = post(update, json!({"bucket": "b", "provider": "nope", "status": 200})).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let (status, _, _) = post(acquire, json!({"bucket": ""})).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
}
