//! The upstream buckets over HTTP (`floodgate-upstream`): processes in any language share one budget of an API
//! they call. `POST /v1/upstream/acquire` waits until the bucket lets one request through; `POST
//! /v1/upstream/update` records what the upstream answered. A caller that acquired and never reports back holds
//! its place only for the store's lease timeout.

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::extract::rejection::JsonRejection;
use axum::http::{HeaderMap, StatusCode};
use floodgate_upstream::headers::{Provider, header_map};
use floodgate_upstream::store::Lease;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::http::{ApiError, authorize};
use crate::state::AppState;

/// The longest an acquire may wait on the server before it answers (`max_wait_ms` is capped to it).
pub const MAX_WAIT: Duration = Duration::from_secs(60);
/// The longest bucket name accepted, in bytes.
pub const MAX_BUCKET_BYTES: usize = 1024;
/// The most headers one update may carry.
pub const MAX_HEADERS: usize = 64;

fn default_wait_ms() -> u64 {
    5_000
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct AcquireBody {
    bucket: String,
    #[serde(default)]
    provider: Option<String>,
    #[serde(default = "default_wait_ms")]
    max_wait_ms: u64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct UpdateBody {
    bucket: String,
    provider: String,
    status: u16,
    #[serde(default)]
    headers: serde_json::Map<String, Value>,
    #[serde(default)]
    lease: Option<String>,
    #[serde(default)]
    latency_ms: u64,
}

fn bad(m: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, m)
}

fn check_bucket(bucket: &str) -> Result<(), ApiError> {
    if bucket.is_empty() || bucket.len() > MAX_BUCKET_BYTES {
        return Err(bad(format!("bucket must be 1 to {MAX_BUCKET_BYTES} bytes")));
    }
    Ok(())
}

fn provider(name: &str) -> Result<Provider, ApiError> {
    name.parse::<Provider>().map_err(|_| bad("provider must be one of discord, github, ietf, retry-after"))
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn upstream_error(e: floodgate_upstream::UpstreamError) -> ApiError {
    ApiError::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string())
}

/// `POST /v1/upstream/acquire`: `{"go": true, "wait_ms": W, "lease": "..."}` once one was taken (after waiting W
/// ms on the server), or `{"go": false, "wait_ms": W}` when the wait would pass `max_wait_ms`.
pub(crate) async fn acquire(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Result<Json<AcquireBody>, JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    authorize(&state, &headers)?;
    let Json(body) = body?;
    check_bucket(&body.bucket)?;
    if let Some(p) = &body.provider {
        provider(p)?;
    }
    let max_wait = Duration::from_millis(body.max_wait_ms).min(MAX_WAIT);
    let outcome = state.upstream.acquire(&body.bucket, max_wait).await.map_err(upstream_error)?;
    let lease = outcome.lease.as_ref().map(Lease::token);
    Ok(Json(json!({ "go": outcome.go, "wait_ms": ms(outcome.wait), "lease": lease })))
}

/// `POST /v1/upstream/update`: records the upstream's answer (status and headers, read as `provider` sends
/// them) and returns the bucket's `remaining` and `reset_after_ms` (null when unknown).
pub(crate) async fn update(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Result<Json<UpdateBody>, JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    authorize(&state, &headers)?;
    let Json(body) = body?;
    check_bucket(&body.bucket)?;
    let provider = provider(&body.provider)?;
    if !(100..=599).contains(&body.status) {
        return Err(bad("status must be an HTTP status code (100 to 599)"));
    }
    if body.headers.len() > MAX_HEADERS {
        return Err(bad(format!("at most {MAX_HEADERS} headers")));
    }
    let pairs: Vec<(String, String)> = body
        .headers
        .iter()
        .map(|(k, v)| match v {
            Value::String(s) => Ok((k.clone(), s.clone())),
            Value::Number(n) => Ok((k.clone(), n.to_string())),
            _ => Err(bad(format!("header {k}: a string or a number"))),
        })
        .collect::<Result<_, _>>()?;
    let lease = match &body.lease {
        Some(t) => Some(Lease::from_token(t).ok_or_else(|| bad("lease: not a lease of /v1/upstream/acquire"))?),
        None => None,
    };
    let map = header_map(pairs);
    let latency = Duration::from_millis(body.latency_ms);
    let view = state
        .upstream
        .update(&body.bucket, lease.as_ref(), provider, body.status, &map, latency)
        .await
        .map_err(upstream_error)?;
    let remaining = view.remaining.filter(|r| *r != u64::MAX);
    Ok(Json(json!({
        "remaining": remaining,
        "reset_after_ms": view.reset_after.map(ms),
        "retry_after_ms": view.retry_after.map(ms),
    })))
}
