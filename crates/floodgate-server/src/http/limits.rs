//! `POST /v1/hit`, `/v1/inspect` and `/v1/reset`: decisions, their bodies and answers.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use axum::Json;
use axum::extract::State;
use axum::extract::rejection::JsonRejection;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use floodgate::{Algorithm, Decision, Policy};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use crate::access_log::{Api, Record};
use crate::config::{Config, parse_window};
use crate::state::AppState;

use super::{ApiError, ErrorBody, FALLBACK_HEADER, MAX_ID_BYTES, authorize, ms, store_error};

/// `POST /v1/hit`: take `cost` units for `id` under a policy.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"id": "user:42", "policy": "api", "cost": 1}))]
pub(super) struct HitBody {
    /// The id counted: 1 to 1024 bytes, not starting with a NUL byte.
    id: String,
    /// A policy's name from the config, or an inline policy.
    #[schema(schema_with = crate::openapi::policy_ref)]
    policy: Value,
    /// Units taken (default 1; 0 checks without counting).
    #[serde(default = "one")]
    #[schema(default = 1)]
    cost: u64,
}

pub(super) fn one() -> u64 {
    1
}

/// `POST /v1/inspect`: read an id's bucket under a policy without changing it.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct InspectBody {
    /// The id.
    id: String,
    /// A policy's name from the config, or an inline policy.
    #[schema(schema_with = crate::openapi::policy_ref)]
    policy: Value,
}

/// `POST /v1/reset`: delete every bucket of an id, under every policy.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct ResetBody {
    /// The id.
    id: String,
}

/// An inline policy in a request body.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"limit": 100, "window": "1m", "algorithm": "gcra"}))]
pub(crate) struct InlinePolicy {
    /// Units allowed per window.
    limit: u64,
    /// The window: a number and a unit (`500ms`, `1s`, `5m`, `1h`, `1d`).
    window: String,
    /// `fixed_window` (the default), `sliding_window`, `sliding_log`, `token_bucket`, `leaky_bucket` or `gcra`.
    #[serde(default)]
    algorithm: Option<String>,
    /// The meter's capacity when above `limit` (meters only).
    #[serde(default)]
    burst: Option<u64>,
}

pub(super) fn check_id(id: &str) -> Result<(), ApiError> {
    if id.is_empty() {
        return Err(ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "id must not be empty"));
    }
    if id.len() > MAX_ID_BYTES {
        return Err(ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, format!("id is longer than {MAX_ID_BYTES} bytes")));
    }
    // RLS counters' ids start with their domain's length as four big-endian bytes, so with a NUL byte: ids of
    // the HTTP API never do, so the two never share a counter (on any store, with no change of key layout).
    if id.starts_with('\0') {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "ids starting with a NUL byte are reserved for the counters of Envoy RLS requests",
        ));
    }
    Ok(())
}

pub(super) fn resolve_policy(state: &AppState, policy: Value) -> Result<Policy, ApiError> {
    let policy = resolve_policy_in(&state.config(), policy)?;
    // Cluster mode decides window counters only: an inline policy of another algorithm is the caller's error.
    if state.cluster.is_some()
        && let Err(e) = floodgate_cluster::check_policy(&policy)
    {
        return Err(ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, format!("policy: {e} (cluster mode)")));
    }
    Ok(policy)
}

pub(super) fn resolve_policy_in(config: &Config, policy: Value) -> Result<Policy, ApiError> {
    let bad = |m: String| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, m);
    match policy {
        Value::String(name) => config.policy(&name).map(|p| p.policy.clone()).ok_or_else(|| {
            let shown: String = name.chars().take(128).collect();
            ApiError::new(StatusCode::NOT_FOUND, format!("no policy named {shown:?} (see GET /v1/limits)"))
        }),
        v @ Value::Object(_) => {
            let p: InlinePolicy = serde_json::from_value(v).map_err(|e| bad(format!("policy: {e}")))?;
            let algorithm = match p.algorithm.as_deref() {
                None => Algorithm::FixedWindow,
                Some(a) => a.parse().map_err(|e: floodgate::PolicyError| bad(format!("policy.algorithm: {e}")))?,
            };
            let window = parse_window(&p.window).ok_or_else(|| {
                bad(format!("policy.window: bad window {:?} (expected e.g. 500ms, 1s, 5m, 1h, 1d)", p.window))
            })?;
            let policy = Policy::new(algorithm, p.limit, window).map_err(|e| bad(format!("policy: {e}")))?;
            match p.burst {
                Some(b) => policy.with_burst(b).map_err(|e| bad(format!("policy.burst: {e}"))),
                None => Ok(policy),
            }
        }
        _ => Err(bad("policy must be a policy name or an object {limit, window, algorithm?, burst?}".into())),
    }
}

/// A decision as JSON.
#[derive(Serialize, ToSchema)]
pub(super) struct DecisionBody {
    /// Whether the hit was admitted (a denied hit consumes nothing).
    allowed: bool,
    /// The policy's capacity.
    limit: u64,
    /// Units left now.
    remaining: u64,
    /// Milliseconds until the bucket is empty again (or its window ends).
    reset_after_ms: u64,
    /// When denied, milliseconds until the same hit could pass; null when allowed, or when the cost can never pass.
    retry_after_ms: Option<u64>,
    /// The store could not decide and the failure policy answered (`--failure-policy fail-open|fail-closed`).
    fallback: bool,
}

impl From<Decision> for DecisionBody {
    fn from(d: Decision) -> Self {
        DecisionBody {
            allowed: d.allowed,
            limit: d.limit,
            remaining: d.remaining,
            reset_after_ms: ms(d.reset_after),
            retry_after_ms: d.retry_after.map(ms),
            fallback: d.fallback,
        }
    }
}

#[utoipa::path(
    post,
    path = "/v1/hit",
    tag = "limits",
    summary = "Take `cost` units for `id` under a policy",
    description = "Admits the hit if it fits, else denies it and consumes nothing. Cost 0 is a pure check. Answered 200 \
        whether or not the hit was allowed; a denial also carries `Retry-After` (seconds) unless the cost can never \
        pass. A decision of the failure policy carries `Floodgate-Fallback: fail-open` (or `fail-closed`).",
    request_body = HitBody,
    security((), ("bearer" = [])),
    responses(
        (status = 200, description = "The decision", body = DecisionBody),
        (status = 400, description = "Malformed JSON", body = ErrorBody),
        (status = 401, description = "Missing or wrong bearer token (when the server has one)", body = ErrorBody),
        (status = 404, description = "No policy of that name", body = ErrorBody),
        (status = 413, description = "Body over 64 KiB", body = ErrorBody),
        (status = 415, description = "Not `application/json`", body = ErrorBody),
        (status = 422, description = "Well-formed JSON that does not fit (a bad id or policy)", body = ErrorBody),
        (status = 503, description = "The store failed", body = ErrorBody),
    )
)]
pub(super) async fn hit(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Result<Json<HitBody>, JsonRejection>,
) -> Result<Response, ApiError> {
    authorize(&state, &headers)?;
    let Json(body) = body?;
    check_id(&body.id)?;
    let log = state.access_log.as_deref();
    // The decision's record (debug event, access log), only when one is wanted.
    let record = crate::access_log::wanted(log).then(|| {
        let rule: Arc<str> = match &body.policy {
            Value::String(name) => Arc::from(name.as_str()),
            _ => Arc::from("inline"),
        };
        (rule, std::time::Instant::now())
    });
    let policy = resolve_policy(&state, body.policy)?;
    let d = match record {
        None => state.hit(body.id.as_bytes(), &policy, body.cost).await,
        Some((rule, start)) => {
            let (d, store) = crate::access_log::measure_store(state.hit(body.id.as_bytes(), &policy, body.cost)).await;
            let code = match &d {
                Ok(d) if d.allowed => "OK",
                Ok(_) => "OVER_LIMIT",
                Err(_) => "UNAVAILABLE",
            };
            let rules = [rule];
            let r = Record { api: Api::Http, domain: "", rules: &rules, code, store, latency: start.elapsed() };
            crate::access_log::record(log, &r);
            d
        }
    }
    .map_err(store_error)?;
    if d.allowed { &state.metrics.http.allowed } else { &state.metrics.http.denied }.fetch_add(1, Relaxed);
    let mut res = Json(DecisionBody::from(d)).into_response();
    if d.fallback {
        let policy = if d.allowed { "fail-open" } else { "fail-closed" };
        res.headers_mut().insert(FALLBACK_HEADER, HeaderValue::from_static(policy));
    }
    if let Some(retry) = d.retry_after {
        let secs = retry.as_micros().div_ceil(1_000_000).to_string();
        if let Ok(v) = HeaderValue::from_str(&secs) {
            res.headers_mut().insert(header::RETRY_AFTER, v);
        }
    }
    Ok(res)
}

/// The answer of `POST /v1/inspect`.
#[derive(Serialize, ToSchema)]
pub(super) struct InspectAnswer {
    /// The id.
    id: String,
    /// The policy's key (its name, or its definition).
    policy: String,
    /// The bucket, or null when the id has none under the policy (never hit, or expired).
    bucket: Option<BucketBody>,
}

/// An id's bucket under one policy.
#[derive(Serialize, ToSchema)]
pub(super) struct BucketBody {
    /// Units counted now.
    used: u64,
    /// Units left now.
    remaining: u64,
    /// Milliseconds until the bucket is empty again.
    reset_after_ms: u64,
    /// Milliseconds until the current window ends (windows), or until one more unit frees (meters).
    next_window_after_ms: u64,
    /// When the bucket was created, in microseconds since the Unix epoch.
    created_unix_us: u64,
    /// When it was last written, in microseconds since the Unix epoch.
    updated_unix_us: u64,
    /// When it expires, in microseconds since the Unix epoch.
    expires_at_unix_us: u64,
}

#[utoipa::path(
    post,
    path = "/v1/inspect",
    tag = "limits",
    summary = "Read an id's bucket under a policy, changing nothing",
    request_body = InspectBody,
    responses(
        (status = 200, description = "The bucket, or null", body = InspectAnswer),
        (status = 400, description = "Malformed JSON", body = ErrorBody),
        (status = 404, description = "No policy of that name", body = ErrorBody),
        (status = 413, description = "Body over 64 KiB", body = ErrorBody),
        (status = 415, description = "Not `application/json`", body = ErrorBody),
        (status = 422, description = "Well-formed JSON that does not fit (a bad id or policy)", body = ErrorBody),
        (status = 503, description = "The store failed", body = ErrorBody),
    )
)]
pub(super) async fn inspect(
    State(state): State<Arc<AppState>>,
    body: Result<Json<InspectBody>, JsonRejection>,
) -> Result<Json<InspectAnswer>, ApiError> {
    let Json(body) = body?;
    check_id(&body.id)?;
    let policy = resolve_policy(&state, body.policy)?;
    let bucket = state.inspect(body.id.as_bytes(), &policy).await.map_err(store_error)?;
    Ok(Json(InspectAnswer {
        id: body.id,
        policy: policy.key().to_owned(),
        bucket: bucket.map(|b| BucketBody {
            used: b.used,
            remaining: b.remaining,
            reset_after_ms: ms(b.reset_after),
            next_window_after_ms: ms(b.next_window_after),
            created_unix_us: b.created.as_micros(),
            updated_unix_us: b.updated.as_micros(),
            expires_at_unix_us: b.expires_at.as_micros(),
        }),
    }))
}

/// The answer of `POST /v1/reset`.
#[derive(Serialize, ToSchema)]
pub(super) struct ResetAnswer {
    /// The id.
    id: String,
    /// How many buckets were deleted (every policy's).
    deleted: u64,
}

#[utoipa::path(
    post,
    path = "/v1/reset",
    tag = "limits",
    summary = "Delete every bucket of an id, under every policy",
    request_body = ResetBody,
    security((), ("bearer" = [])),
    responses(
        (status = 200, description = "How many buckets were deleted", body = ResetAnswer),
        (status = 400, description = "Malformed JSON", body = ErrorBody),
        (status = 401, description = "Missing or wrong bearer token (when the server has one)", body = ErrorBody),
        (status = 413, description = "Body over 64 KiB", body = ErrorBody),
        (status = 415, description = "Not `application/json`", body = ErrorBody),
        (status = 422, description = "Well-formed JSON that does not fit (a bad id or policy)", body = ErrorBody),
        (status = 503, description = "The store failed", body = ErrorBody),
    )
)]
pub(super) async fn reset(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Result<Json<ResetBody>, JsonRejection>,
) -> Result<Json<ResetAnswer>, ApiError> {
    authorize(&state, &headers)?;
    let Json(body) = body?;
    check_id(&body.id)?;
    let deleted = state.delete_buckets(body.id.as_bytes()).await.map_err(store_error)?;
    Ok(Json(ResetAnswer { id: body.id, deleted }))
}
