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
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use crate::http::{ApiError, ErrorBody, authorize};
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

/// `POST /v1/upstream/acquire`: wait until the bucket lets one request through.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"bucket": "GET /items", "provider": "discord", "max_wait_ms": 5000}))]
pub(crate) struct AcquireBody {
    /// The upstream's bucket (1 to 1024 bytes), e.g. a route.
    bucket: String,
    /// `discord`, `github`, `ietf` or `retry-after` (checked here; the update says how headers are read).
    #[serde(default)]
    provider: Option<String>,
    /// The longest the server may wait before answering (default 5000, capped at 60000).
    #[serde(default = "default_wait_ms")]
    #[schema(default = 5000)]
    max_wait_ms: u64,
}

/// `POST /v1/upstream/update`: what the upstream answered.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct UpdateBody {
    /// The bucket acquired.
    bucket: String,
    /// How to read the headers: `discord`, `github`, `ietf` or `retry-after`.
    provider: String,
    /// The upstream's HTTP status (100 to 599).
    status: u16,
    /// The upstream's headers (at most 64), values as strings or numbers.
    #[serde(default)]
    #[schema(value_type = Object)]
    headers: serde_json::Map<String, Value>,
    /// The lease `acquire` answered, if any.
    #[serde(default)]
    lease: Option<String>,
    /// How long the upstream took to answer, in milliseconds.
    #[serde(default)]
    latency_ms: u64,
}

/// The answer of `POST /v1/upstream/acquire`.
#[derive(Serialize, ToSchema)]
pub(crate) struct AcquireAnswer {
    /// Whether the caller may send its request now.
    go: bool,
    /// How long the server waited (when `go`), or how long the caller would have to wait (when not).
    wait_ms: u64,
    /// The lease to report back with the update (when `go`).
    lease: Option<String>,
}

/// The answer of `POST /v1/upstream/update`: the bucket as it now stands.
#[derive(Serialize, ToSchema)]
pub(crate) struct UpdateAnswer {
    /// Requests left in the upstream's window, or null when unknown.
    remaining: Option<u64>,
    /// Milliseconds until the upstream's window resets, or null when unknown.
    reset_after_ms: Option<u64>,
    /// Milliseconds the upstream asked to wait (`Retry-After`), or null.
    retry_after_ms: Option<u64>,
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
/// ms on the server), or `{"go": false, "wait_ms": W, "lease": null}` when the wait would pass `max_wait_ms`.
#[utoipa::path(
    post,
    path = "/v1/upstream/acquire",
    tag = "upstream",
    summary = "Wait until an upstream bucket lets one request through",
    request_body = AcquireBody,
    security((), ("bearer" = [])),
    responses(
        (status = 200, description = "Go (with a lease), or how long it would take", body = AcquireAnswer),
        (status = 400, description = "Malformed JSON", body = ErrorBody),
        (status = 401, description = "Missing or wrong bearer token (when the server has one)", body = ErrorBody),
        (status = 422, description = "A bad bucket or provider", body = ErrorBody),
        (status = 503, description = "The store failed", body = ErrorBody),
    )
)]
pub(crate) async fn acquire(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Result<Json<AcquireBody>, JsonRejection>,
) -> Result<Json<AcquireAnswer>, ApiError> {
    authorize(&state, &headers)?;
    let Json(body) = body?;
    check_bucket(&body.bucket)?;
    if let Some(p) = &body.provider {
        provider(p)?;
    }
    let max_wait = Duration::from_millis(body.max_wait_ms).min(MAX_WAIT);
    let outcome = state.upstream.acquire(&body.bucket, max_wait).await.map_err(upstream_error)?;
    let lease = outcome.lease.as_ref().map(Lease::token);
    Ok(Json(AcquireAnswer { go: outcome.go, wait_ms: ms(outcome.wait), lease }))
}

/// `POST /v1/upstream/update`: records the upstream's answer (status and headers, read as `provider` sends
/// them) and returns the bucket's `remaining` and `reset_after_ms` (null when unknown).
#[utoipa::path(
    post,
    path = "/v1/upstream/update",
    tag = "upstream",
    summary = "Record what the upstream answered",
    request_body = UpdateBody,
    security((), ("bearer" = [])),
    responses(
        (status = 200, description = "The bucket as it now stands", body = UpdateAnswer),
        (status = 400, description = "Malformed JSON", body = ErrorBody),
        (status = 401, description = "Missing or wrong bearer token (when the server has one)", body = ErrorBody),
        (status = 422, description = "A bad bucket, provider, status, header or lease", body = ErrorBody),
        (status = 503, description = "The store failed", body = ErrorBody),
    )
)]
pub(crate) async fn update(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Result<Json<UpdateBody>, JsonRejection>,
) -> Result<Json<UpdateAnswer>, ApiError> {
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
    Ok(Json(UpdateAnswer {
        remaining,
        reset_after_ms: view.reset_after.map(ms),
        retry_after_ms: view.retry_after.map(ms),
    }))
}
