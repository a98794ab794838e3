//! `--otlp-endpoint` against the real binary: a receiver on loopback takes OTLP/HTTP (protobuf) posts to
//! `/v1/traces` and the test waits (bounded) for the RLS call's and the HTTP call's spans with their attributes;
//! an endpoint that refuses every connection leaves the server answering and counts the failed exports.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashMap;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use common::{KillOnDrop, desc, free_port, request, until, write_config};
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_service_client::RateLimitServiceClient;
use opentelemetry_proto::tonic::collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use prost::Message as _;

const BIN: &str = env!("CARGO_BIN_EXE_floodgate");
const CONFIG: &str =
    "domain: traced\ndescriptors:\n  - key: user\n    rate_limit:\n      unit: minute\n      requests_per_unit: 1\n";

/// A received span: its name, its attributes as strings, and its service's name.
#[derive(Clone, Debug)]
struct Got {
    name: String,
    attrs: HashMap<String, String>,
    service: String,
}

type Spans = Arc<Mutex<Vec<Got>>>;

/// An OTLP/HTTP receiver on 127.0.0.1; answers its address and the spans it decoded.
async fn receiver() -> (std::net::SocketAddr, Spans) {
    let spans: Spans = Arc::default();
    let kept = spans.clone();
    let app = axum::Router::new().route(
        "/v1/traces",
        axum::routing::post(move |body: Bytes| {
            let kept = kept.clone();
            async move {
                let req = ExportTraceServiceRequest::decode(body).expect("an OTLP protobuf body");
                let mut got = kept.lock().unwrap();
                for rs in req.resource_spans {
                    let service = rs
                        .resource
                        .iter()
                        .flat_map(|r| &r.attributes)
                        .find(|a| a.key == "service.name")
                        .map(|a| value(a.value.as_ref()))
                        .unwrap_or_default();
                    for span in rs.scope_spans.into_iter().flat_map(|s| s.spans) {
                        let attrs = span.attributes.iter().map(|a| (a.key.clone(), value(a.value.as_ref()))).collect();
                        got.push(Got { name: span.name, attrs, service: service.clone() });
                    }
                }
                ([("content-type", "application/x-protobuf")], ExportTraceServiceResponse::default().encode_to_vec())
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (addr, spans)
}

fn value(v: Option<&opentelemetry_proto::tonic::common::v1::AnyValue>) -> String {
    match v.and_then(|v| v.value.as_ref()) {
        Some(Value::StringValue(s)) => s.clone(),
        Some(Value::IntValue(i)) => i.to_string(),
        Some(Value::BoolValue(b)) => b.to_string(),
        Some(Value::DoubleValue(d)) => d.to_string(),
        other => format!("{other:?}"),
    }
}

/// `floodgate serve --otlp-endpoint ENDPOINT` on free loopback ports, once `/healthz` answers (within 20 s).
async fn serve(endpoint: &str) -> (KillOnDrop, String, String) {
    let config = write_config(CONFIG);
    let (http, grpc) = (free_port(), free_port());
    let child = Command::new(BIN)
        .args(["serve", "--http", &format!("127.0.0.1:{http}"), "--grpc", &format!("127.0.0.1:{grpc}")])
        .arg("--config")
        .arg(&config)
        .args(["--watch-secs", "0", "--otlp-endpoint", endpoint])
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let child = KillOnDrop(child);
    let base = format!("http://127.0.0.1:{http}");
    let health = format!("{base}/healthz");
    until(20, "the server's /healthz", || {
        let health = health.clone();
        async move { reqwest::get(health).await.is_ok_and(|r| r.status().is_success()) }
    })
    .await;
    (child, base, format!("http://127.0.0.1:{grpc}"))
}

/// Two RLS calls (the second over the limit of 1) and one `POST /json`.
async fn calls(base: &str, grpc: &str) {
    let mut client = RateLimitServiceClient::connect(grpc.to_owned()).await.unwrap();
    for _ in 0..2 {
        client.should_rate_limit(request("traced", vec![desc(&[("user", "ann")])])).await.unwrap();
    }
    let body = r#"{"domain":"traced","descriptors":[{"entries":[{"key":"user","value":"bob"}]}]}"#;
    let res = reqwest::Client::new()
        .post(format!("{base}/json"))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_of_rls_and_http_calls_reach_the_receiver() {
    let (addr, spans) = receiver().await;
    let (_server, base, grpc) = serve(&format!("http://{addr}")).await;
    calls(&base, &grpc).await;
    let want = |spans: &Spans| {
        let got = spans.lock().unwrap();
        let rls: Vec<_> = got.iter().filter(|s| s.name == "rls.should_rate_limit").collect();
        let http = got.iter().find(|s| s.attrs.get("http.route").is_some_and(|r| r == "/json"));
        rls.len() >= 2 && http.is_some()
    };
    // The batch exporter sends every 5 s.
    until(30, "the spans at the receiver", || {
        let ok = want(&spans);
        async move { ok }
    })
    .await;
    let got = spans.lock().unwrap().clone();
    let rls: Vec<&Got> = got.iter().filter(|s| s.name == "rls.should_rate_limit").collect();
    for s in &rls {
        assert_eq!(s.attrs["domain"], "traced", "{s:?}");
        assert!(s.attrs["store_latency_us"].parse::<u64>().is_ok(), "{s:?}");
        assert_eq!(s.service, "floodgate");
    }
    let codes: Vec<&str> = rls.iter().map(|s| s.attrs["code"].as_str()).collect();
    assert!(codes.contains(&"OK") && codes.contains(&"OVER_LIMIT"), "{codes:?}");
    let http = got.iter().find(|s| s.attrs.get("http.route").is_some_and(|r| r == "/json")).unwrap();
    assert_eq!(http.name, "POST /json", "{http:?}");
    assert_eq!(http.attrs["http.request.method"], "POST");
    assert_eq!(http.attrs["http.response.status_code"], "200");
    assert_eq!(http.attrs["domain"], "traced");
    assert_eq!(http.attrs["code"], "OK");
    assert!(http.attrs["store_latency_us"].parse::<u64>().is_ok(), "{http:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_collector_is_counted_and_never_stops_the_server() {
    // A port that was free: nothing listens there, so every export is refused.
    let closed = free_port();
    let (_server, base, grpc) = serve(&format!("http://127.0.0.1:{closed}")).await;
    calls(&base, &grpc).await;
    let metrics = format!("{base}/metrics");
    until(30, "floodgate_otlp_export_failures_total above 0", || {
        let metrics = metrics.clone();
        async move {
            let text = reqwest::get(metrics).await.unwrap().text().await.unwrap();
            text.lines()
                .any(|l| l.strip_prefix("floodgate_otlp_export_failures_total ").is_some_and(|v| v.trim() != "0"))
        }
    })
    .await;
    // Still answering.
    let mut client = RateLimitServiceClient::connect(grpc).await.unwrap();
    client.should_rate_limit(request("traced", vec![desc(&[("user", "cid")])])).await.unwrap();
    tokio::time::sleep(Duration::from_millis(10)).await;
}
