//! Harnesses for fuzzing the server's front doors, shared by the bounded properties of the test suite
//! (`tests/fuzz.rs`, on stable, in CI) and the cargo-fuzz targets in `fuzz/` (nightly, libFuzzer).
//!
//! Each harness feeds one hostile input to one door and checks what a caller relies on, returning `Err` with a
//! description when a promise is broken (a panic is a failure too):
//!
//! - [`Harness::rls_wire`]: protobuf bytes as a gRPC `ShouldRateLimit` body; a request that decodes is answered
//!   with one status per descriptor, or refused with `INVALID_ARGUMENT`;
//! - [`Harness::rls_json`]: bytes as the body of the reference's `POST /json` (the proto3-JSON mapping): a
//!   request that maps is answered like the gRPC one, and mapping it back and forth gives the same request;
//! - [`Harness::http`]: bytes as the body of one of the HTTP API's `POST` routes ([`POST_ROUTES`]): every answer is
//!   a 2xx, a 4xx or a 429 with a JSON body, never a 5xx.
//!
//! ```
//! use floodgate_server::fuzzing::Harness;
//!
//! let harness = Harness::new().unwrap();
//! harness.http(0, br#"{"id": "alice", "policy": "api"}"#).unwrap();
//! harness.rls_json(br#"{"domain": "x", "descriptors": [{"entries": [{"key": "k", "value": "v"}]}]}"#).unwrap();
//! harness.rls_wire(&[0x0a, 0x01, b'x']).unwrap();
//! ```

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use envoy_types::pb::envoy::service::ratelimit::v3::RateLimitRequest;
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_response::Code;
use floodgate::MemoryStore;
use prost::Message;
use serde_json::{Value, json};
use tower::ServiceExt;

use crate::json_rls::{request_from_json, response_to_json};
use crate::rls::Rls;
use crate::state::{AppState, Backend, ConfigSource};

/// The HTTP API's `POST` routes that take a JSON body, in the order [`Harness::http`] numbers them.
pub const POST_ROUTES: &[&str] =
    &["/v1/hit", "/v1/inspect", "/v1/reset", "/json", "/v1/upstream/acquire", "/v1/upstream/update", "/v1/reload"];

/// A server's state (built-in config, in-memory store, no token) with a runtime to drive it.
pub struct Harness {
    rt: tokio::runtime::Runtime,
    rls: Rls,
    router: Router,
}

impl Harness {
    /// A harness over the built-in config and a fresh in-memory store.
    pub fn new() -> std::io::Result<Self> {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        let state = AppState::new(ConfigSource::Builtin, Backend::Memory(MemoryStore::new()), None, false)
            .map_err(std::io::Error::other)?;
        let state = Arc::new(state);
        Ok(Harness { rt, rls: Rls::new(state.clone()), router: crate::http::router(state) })
    }

    /// Answers `req` as the gRPC method would, and checks the answer.
    pub fn rls_request(&self, req: &RateLimitRequest) -> Result<(), String> {
        match self.rt.block_on(self.rls.decide(req)) {
            Ok(res) => {
                if res.statuses.len() != req.descriptors.len() {
                    return Err(format!("{} statuses for {} descriptors", res.statuses.len(), req.descriptors.len()));
                }
                let over = res.statuses.iter().any(|s| s.code == Code::OverLimit as i32);
                let want = if over { Code::OverLimit } else { Code::Ok };
                if res.overall_code != want as i32 {
                    return Err(format!("overall code {} where the statuses say {want:?}", res.overall_code));
                }
                Ok(())
            }
            Err(status) if status.code() == tonic::Code::InvalidArgument && !status.message().is_empty() => Ok(()),
            Err(status) => Err(format!("refused with {:?}: {}", status.code(), status.message())),
        }
    }

    /// Decodes `bytes` as a protobuf `RateLimitRequest` (what tonic does with a gRPC body) and, when it decodes,
    /// answers it ([`Harness::rls_request`]).
    pub fn rls_wire(&self, bytes: &[u8]) -> Result<(), String> {
        match RateLimitRequest::decode(bytes) {
            Ok(req) => self.rls_request(&req),
            Err(_) => Ok(()),
        }
    }

    /// Reads `bytes` as the reference's proto3-JSON `RateLimitRequest`. One that maps must map back to itself
    /// (written out by [`request_to_json`] and read again) and be answered, with an answer that is proto3 JSON.
    pub fn rls_json(&self, bytes: &[u8]) -> Result<(), String> {
        let Ok(value) = serde_json::from_slice::<Value>(bytes) else { return Ok(()) };
        let req = match request_from_json(&value) {
            Ok(req) => req,
            Err(e) if e.is_empty() => return Err("an empty error message".into()),
            Err(_) => return Ok(()),
        };
        let again = request_from_json(&request_to_json(&req)).map_err(|e| format!("its own mapping refused: {e}"))?;
        if again != req {
            return Err(format!("mapped back as {again:?}, not {req:?}"));
        }
        if let Ok(res) = self.rt.block_on(self.rls.decide(&req)) {
            let out = response_to_json(&res);
            let code = out.get("overallCode").and_then(Value::as_str);
            if !matches!(code, Some("OK" | "OVER_LIMIT")) {
                return Err(format!("overallCode {code:?}"));
            }
        }
        self.rls_request(&req)
    }

    /// Posts `body` to [`POST_ROUTES`]`[route % len]` through the HTTP router and checks the answer: a status
    /// below 500 and a JSON body. An acquire's `max_wait_ms` is set to 0 when the body is an object, so a case
    /// never waits on an upstream bucket.
    pub fn http(&self, route: usize, body: &[u8]) -> Result<(), String> {
        let path = POST_ROUTES[route % POST_ROUTES.len()];
        let mut body = body.to_vec();
        if path == "/v1/upstream/acquire"
            && let Ok(Value::Object(mut obj)) = serde_json::from_slice::<Value>(&body)
        {
            obj.insert("max_wait_ms".into(), json!(0));
            body = serde_json::to_vec(&obj).map_err(|e| e.to_string())?;
        }
        let req = axum::http::Request::post(path)
            .header("host", "127.0.0.1")
            .header("content-type", "application/json")
            .body(Body::from(body))
            .map_err(|e| e.to_string())?;
        let router = self.router.clone();
        self.rt.block_on(async move {
            let res = router.oneshot(req).await.map_err(|e| e.to_string())?;
            let status = res.status();
            let bytes = axum::body::to_bytes(res.into_body(), 1 << 20).await.map_err(|e| e.to_string())?;
            if status.is_server_error() {
                return Err(format!("{path} answered {status}: {}", String::from_utf8_lossy(&bytes)));
            }
            if serde_json::from_slice::<Value>(&bytes).is_err() {
                return Err(format!("{path} answered {status} with a body that is not JSON"));
            }
            Ok(())
        })
    }
}

/// Writes a `RateLimitRequest` in the reference's proto3 JSON (the inverse of [`request_from_json`]).
pub fn request_to_json(req: &RateLimitRequest) -> Value {
    let descriptors: Vec<Value> = req
        .descriptors
        .iter()
        .map(|d| {
            let entries: Vec<Value> = d.entries.iter().map(|e| json!({"key": e.key, "value": e.value})).collect();
            let mut o = json!({ "entries": entries });
            if let Some(l) = &d.limit {
                o["limit"] = json!({"requestsPerUnit": l.requests_per_unit, "unit": l.unit});
            }
            if let Some(h) = &d.hits_addend {
                o["hitsAddend"] = json!(h.value.to_string());
            }
            o
        })
        .collect();
    json!({ "domain": req.domain, "descriptors": descriptors, "hitsAddend": req.hits_addend })
}
