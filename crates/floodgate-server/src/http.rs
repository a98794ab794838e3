//! The HTTP JSON API, `/metrics`, `/healthz` and `/openapi.json` (axum).
//!
//! | method and path | body | answer | token |
//! |---|---|---|---|
//! | `POST /v1/hit` | `{"id", "policy": NAME or {limit, window, algorithm?, burst?}, "cost"?}` | a decision | yes |
//! | `POST /v1/inspect` | `{"id", "policy"}` | `{"bucket": null or {...}}` | no |
//! | `POST /v1/reset` | `{"id"}` | `{"deleted": N}` (every bucket of the id, under every policy) | yes |
//! | `POST /v1/reload` | none | the loaded limits, or 422 with why the new config was refused | yes |
//! | `GET /v1/limits` | none | the loaded policies and RLS domains | no |
//! | `POST /json` | a `RateLimitRequest` in proto3 JSON (the reference's endpoint) | the `RateLimitResponse`; 200 OK, 429 over | yes |
//! | `GET /metrics`, `GET /healthz` (liveness), `GET /openapi.json` | none | text / `ok` / the OpenAPI 3 description | no |
//! | `GET /readyz` (or the reference's `/healthcheck`) | none | `{"ready": true}`, or 503 `{"ready": false, "reason": ...}` | no |
//!
//! A decision is `{"allowed", "limit", "remaining", "reset_after_ms", "retry_after_ms", "fallback"}`, answered 200
//! whether or not the hit was allowed (with `Retry-After` when it was not). `fallback` is `true` when the store
//! could not answer and the failure policy decided (`--failure-policy fail-open` or `fail-closed`); such an answer
//! also carries the header `Floodgate-Fallback: fail-open` (or `fail-closed`), and counted nothing. Errors are `{"error": "message"}` with
//! 400 (bad request), 401 (token), 404 (unknown policy or route), 405, 413 (body over 64 KiB), 415, 422
//! (well-formed JSON that does not fit) or 503 (store failure).

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::rejection::JsonRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use floodgate::{Algorithm, Decision, Policy};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::access_log::{Api, Record};
use crate::config::{Config, LimitKind, Rule, parse_window};
use crate::state::AppState;

/// The largest request body accepted.
pub const MAX_BODY_BYTES: usize = 64 * 1024;
/// The longest id accepted, in bytes.
pub const MAX_ID_BYTES: usize = 1024;

/// The header that marks a decision made by the failure policy because the store could not answer: its value is
/// `fail-open` or `fail-closed` (the JSON body says `"fallback": true` too).
pub const FALLBACK_HEADER: &str = "floodgate-fallback";

/// An API error: a status and a message, answered as `{"error": message}`.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError { status, message: message.into() }
    }
}

/// The body of every error answer.
#[derive(Serialize, ToSchema)]
#[schema(example = json!({"error": "id must not be empty"}))]
pub(crate) struct ErrorBody {
    /// What went wrong, in one line.
    error: String,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut res = (self.status, Json(ErrorBody { error: self.message })).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            res.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        res
    }
}

impl From<JsonRejection> for ApiError {
    fn from(r: JsonRejection) -> Self {
        ApiError::new(r.status(), r.body_text())
    }
}

/// Every route with its OpenAPI description: the router and `/openapi.json` are both made from it, so no route
/// can be served without being described.
pub(crate) fn api_routes() -> OpenApiRouter<Arc<AppState>> {
    use crate::upstream::{__path_acquire, __path_update, acquire, update};
    OpenApiRouter::with_openapi(crate::openapi::base())
        .routes(routes!(hit))
        .routes(routes!(inspect))
        .routes(routes!(reset))
        .routes(routes!(reload))
        .routes(routes!(limits))
        .routes(routes!(acquire))
        .routes(routes!(update))
        .routes(routes!(cluster))
        .routes(routes!(json_rls))
        .routes(routes!(metrics))
        .routes(routes!(healthz))
        .routes(routes!(readyz))
        .routes(routes!(healthcheck))
        .routes(routes!(openapi))
}

/// The router over `state`.
pub fn router(state: Arc<AppState>) -> Router {
    let (router, _) = api_routes().split_for_parts();
    router
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "no such route (see /openapi.json)") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "method not allowed on this route (see /openapi.json)")
        })
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(axum::middleware::from_fn(refuse_large_bodies))
        .layer(axum::middleware::from_fn_with_state(state.clone(), check_host))
        .with_state(state)
}

/// Refuses a request whose `Content-Length` is above [`MAX_BODY_BYTES`] before its body is read (the body limit
/// alone would read up to the limit first).
async fn refuse_large_bodies(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let declared = req.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.trim().parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BODY_BYTES as u64) {
        return ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, format!("the body is larger than {MAX_BODY_BYTES} bytes"))
            .into_response();
    }
    next.run(req).await
}

/// Refuses a request whose `Host` is not one of [`AppState::allowed_hosts`] (421), when that list is set.
async fn check_host(
    State(state): State<Arc<AppState>>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    if let Some(allowed) = &state.allowed_hosts {
        let host = req.headers().get(header::HOST).and_then(|h| h.to_str().ok()).or_else(|| req.uri().host());
        if !host.is_some_and(|h| host_allowed(h, allowed)) {
            return ApiError::new(
                StatusCode::MISDIRECTED_REQUEST,
                "this Host is not served here (see --allowed-hosts)",
            )
            .into_response();
        }
    }
    next.run(req).await
}

/// Whether `host` (a `Host` header: a name or address, perhaps with a port) is one of `allowed`.
fn host_allowed(host: &str, allowed: &[String]) -> bool {
    let name = if let Some(rest) = host.strip_prefix('[') {
        rest.split(']').next().unwrap_or(rest)
    } else {
        host.rsplit_once(':').map_or(host, |(n, _)| n)
    };
    allowed.iter().any(|a| a.trim_start_matches('[').trim_end_matches(']').eq_ignore_ascii_case(name))
}

pub(crate) fn authorize(state: &AppState, headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(token) = &state.token else { return Ok(()) };
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        // The scheme is case-insensitive (RFC 9110, section 11.1).
        .and_then(|v| v.split_once(' ').filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer")).map(|(_, t)| t))
        .ok_or_else(|| {
            ApiError::new(StatusCode::UNAUTHORIZED, "this endpoint needs `Authorization: Bearer <token>`")
        })?;
    // Compare in time independent of where the first difference is.
    let same =
        given.len() == token.len() && given.bytes().zip(token.bytes()).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0;
    if same { Ok(()) } else { Err(ApiError::new(StatusCode::UNAUTHORIZED, "wrong bearer token")) }
}

/// `POST /v1/hit`: take `cost` units for `id` under a policy.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"id": "user:42", "policy": "api", "cost": 1}))]
struct HitBody {
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

fn one() -> u64 {
    1
}

/// `POST /v1/inspect`: read an id's bucket under a policy without changing it.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct InspectBody {
    /// The id.
    id: String,
    /// A policy's name from the config, or an inline policy.
    #[schema(schema_with = crate::openapi::policy_ref)]
    policy: Value,
}

/// `POST /v1/reset`: delete every bucket of an id, under every policy.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct ResetBody {
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

fn check_id(id: &str) -> Result<(), ApiError> {
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

fn resolve_policy(state: &AppState, policy: Value) -> Result<Policy, ApiError> {
    let policy = resolve_policy_in(&state.config(), policy)?;
    // Cluster mode decides window counters only: an inline policy of another algorithm is the caller's error.
    if state.cluster.is_some()
        && let Err(e) = floodgate_cluster::check_policy(&policy)
    {
        return Err(ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, format!("policy: {e} (cluster mode)")));
    }
    Ok(policy)
}

fn resolve_policy_in(config: &Config, policy: Value) -> Result<Policy, ApiError> {
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

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_micros().div_ceil(1000)).unwrap_or(u64::MAX)
}

/// A decision as JSON.
#[derive(Serialize, ToSchema)]
struct DecisionBody {
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

fn store_error(e: floodgate::StoreError) -> ApiError {
    if let Some(suppressed) = crate::state::STORE_FAILURE_LOG.allow() {
        tracing::warn!(error = %e, suppressed, "store failed");
    }
    ApiError::new(StatusCode::SERVICE_UNAVAILABLE, format!("store failed: {e}"))
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
async fn hit(
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
struct InspectAnswer {
    /// The id.
    id: String,
    /// The policy's key (its name, or its definition).
    policy: String,
    /// The bucket, or null when the id has none under the policy (never hit, or expired).
    bucket: Option<BucketBody>,
}

/// An id's bucket under one policy.
#[derive(Serialize, ToSchema)]
struct BucketBody {
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
async fn inspect(
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
struct ResetAnswer {
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
async fn reset(
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

#[utoipa::path(
    post,
    path = "/v1/reload",
    tag = "config",
    summary = "Read the config files again",
    description = "Answers the limits now in force. A config that does not load is refused (422, with why) and the old \
        one stays in force. Files whose content did not change are not reloaded.",
    security((), ("bearer" = [])),
    responses(
        (status = 200, description = "The limits in force (as `GET /v1/limits`)", body = Object),
        (status = 401, description = "Missing or wrong bearer token (when the server has one)", body = ErrorBody),
        (status = 422, description = "The new config was refused; the old one stays", body = ErrorBody),
    )
)]
async fn reload(State(state): State<Arc<AppState>>, headers: HeaderMap, _body: Bytes) -> Result<Json<Value>, ApiError> {
    authorize(&state, &headers)?;
    match state.reload_changed().await {
        Ok((config, changed)) => {
            if changed {
                tracing::info!(domains = config.domains().len(), "config reloaded (HTTP)");
            } else {
                tracing::info!("reload asked (HTTP): the config files are unchanged, nothing reloaded");
            }
            Ok(Json(limits_json(&config)))
        }
        Err(e) => {
            tracing::error!(error = %e, "config reload refused; the old config stays in force");
            Err(ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, format!("reload refused, old config kept: {e}")))
        }
    }
}

#[utoipa::path(
    get,
    path = "/v1/limits",
    tag = "config",
    summary = "The loaded policies and RLS domains, with the files and lines they came from",
    responses((status = 200, description = "`{sources, policies, domains}`", body = Object))
)]
async fn limits(State(state): State<Arc<AppState>>) -> Json<Value> {
    Json(limits_json(&state.config()))
}

fn policy_json(p: &Policy) -> Value {
    json!({
        "algorithm": p.algorithm().name(),
        "limit": p.limit(),
        "window_ms": ms(p.window()),
        "capacity": p.capacity(),
        "key": p.key(),
    })
}

fn rule_json(rule: &Rule, out: &mut Vec<Value>) {
    let limit = rule.rate_limit.as_ref().map(|l| {
        let mut v = json!({
            "name": &*l.name,
            "unit": l.unit.map(|u| u.name()),
            "window_ms": u64::try_from(l.window.as_millis()).unwrap_or(u64::MAX),
            "replaces": l.replaces.iter().map(|r| &**r).collect::<Vec<&str>>(),
            "requests_per_unit": l.requests_per_unit,
            "algorithm": l.algorithm.name(),
            "unlimited": matches!(l.kind, LimitKind::Unlimited),
        });
        if let (LimitKind::Limited(p), Some(obj)) = (&l.kind, v.as_object_mut()) {
            obj.insert("policy".into(), policy_json(p));
        }
        v
    });
    out.push(json!({
        "path": &*rule.path,
        "key": &*rule.key,
        "value": rule.value.as_deref(),
        "shadow_mode": rule.shadow_mode,
        "share_threshold": rule.share_threshold,
        "detailed_metric": rule.detailed_metric,
        "extra_limits": rule.extra_limits.iter().map(|l| json!({
            "name": &*l.name,
            "unit": l.unit.map(|u| u.name()),
            "window_ms": u64::try_from(l.window.as_millis()).unwrap_or(u64::MAX),
            "requests_per_unit": l.requests_per_unit,
            "algorithm": l.algorithm.name(),
            "unlimited": matches!(l.kind, LimitKind::Unlimited),
        })).collect::<Vec<Value>>(),
        "line": rule.pos.line,
        "rate_limit": limit,
    }));
    for child in rule.children.rules() {
        rule_json(child, out);
    }
}

fn limits_json(config: &Config) -> Value {
    let policies: Vec<Value> = config
        .policies()
        .map(|(name, p)| {
            let mut v = policy_json(&p.policy);
            if let Some(obj) = v.as_object_mut() {
                obj.insert("name".into(), name.into());
                obj.insert("file".into(), (*p.file).into());
                obj.insert("line".into(), p.pos.line.into());
            }
            v
        })
        .collect();
    let domains: Vec<Value> = config
        .domains()
        .into_iter()
        .map(|d| {
            let mut rules = Vec::new();
            for r in d.root.rules() {
                rule_json(r, &mut rules);
            }
            json!({ "domain": &*d.name, "file": &*d.file, "rules": rules })
        })
        .collect();
    json!({ "sources": config.sources.iter().map(|s| &**s).collect::<Vec<_>>(), "policies": policies, "domains": domains })
}

#[utoipa::path(
    get,
    path = "/metrics",
    tag = "operations",
    summary = "Prometheus metrics",
    responses((status = 200, description = "The Prometheus text format", body = String, content_type = "text/plain"))
)]
async fn metrics(State(state): State<Arc<AppState>>) -> impl IntoResponse {
    let mut body = state.metrics.render();
    let expired = state.upstream.store().leases_expired().await.ok();
    crate::metrics::render_upstream(&mut body, &state.upstream.stats(), expired);
    if let Some(tls) = &state.tls {
        tls.render(&mut body);
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], body)
}

/// The reference service's `POST /json` (see [`crate::json_rls`]): 200 when OK, 429 when over the limit.
#[utoipa::path(
    post,
    path = "/json",
    tag = "limits",
    summary = "Envoy RLS over HTTP: a `RateLimitRequest` in proto3 JSON (the reference's endpoint)",
    description = "The request and the answer are the RLS v3 messages in proto3 JSON (`domain`, `descriptors` of \
        `entries` with `key` and `value`, `hitsAddend`). Answered 200 when the overall code is OK, 429 when over \
        the limit.",
    request_body = Object,
    security((), ("bearer" = [])),
    responses(
        (status = 200, description = "A `RateLimitResponse`, overall code OK", body = Object),
        (status = 429, description = "A `RateLimitResponse`, overall code OVER_LIMIT", body = Object),
        (status = 400, description = "Malformed JSON or an invalid request", body = ErrorBody),
        (status = 401, description = "Missing or wrong bearer token (when the server has one)", body = ErrorBody),
        (status = 404, description = "Unknown domain", body = ErrorBody),
        (status = 503, description = "The store failed", body = ErrorBody),
    )
)]
async fn json_rls(State(state): State<Arc<AppState>>, headers: HeaderMap, body: Bytes) -> Result<Response, ApiError> {
    authorize(&state, &headers)?;
    let value: Value = serde_json::from_slice(&body)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, format!("malformed JSON: {e}")))?;
    let req = crate::json_rls::request_from_json(&value).map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e))?;
    let res = crate::rls::Rls::new(state.clone()).decide_logged(&req, Api::Http).await.map_err(|s| {
        let status = match s.code() {
            tonic::Code::InvalidArgument => StatusCode::BAD_REQUEST,
            tonic::Code::NotFound => StatusCode::NOT_FOUND,
            _ => StatusCode::SERVICE_UNAVAILABLE,
        };
        ApiError::new(status, s.message())
    })?;
    let over =
        res.overall_code == envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_response::Code::OverLimit as i32;
    let status = if over { StatusCode::TOO_MANY_REQUESTS } else { StatusCode::OK };
    Ok((status, Json(crate::json_rls::response_to_json(&res))).into_response())
}

/// `GET /v1/cluster`: this node's id and its peers (404 when not in cluster mode).
#[utoipa::path(
    get,
    path = "/v1/cluster",
    tag = "operations",
    summary = "This node's id and its peers (cluster mode)",
    responses(
        (status = 200, description = "The node's cluster status", body = Object),
        (status = 404, description = "Not in cluster mode", body = ErrorBody),
    )
)]
async fn cluster(State(state): State<Arc<AppState>>) -> Result<Json<Value>, ApiError> {
    let Some(handle) = &state.cluster else {
        return Err(ApiError::new(StatusCode::NOT_FOUND, "not in cluster mode (see --cluster)"));
    };
    let status = serde_json::to_value(handle.status()).unwrap_or(Value::Null);
    Ok(Json(status))
}

#[utoipa::path(
    get,
    path = "/healthz",
    tag = "operations",
    summary = "Liveness: the process answers",
    responses((status = 200, description = "`ok`", body = String, content_type = "text/plain"))
)]
async fn healthz() -> &'static str {
    "ok\n"
}

/// Readiness, as `/readyz` and `/healthcheck` answer it.
#[derive(Serialize, ToSchema)]
struct Readiness {
    /// Whether the server can answer: a config is loaded and the store answers within its timeout.
    ready: bool,
    /// Why not, when not ready.
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
}

/// `GET /readyz` (and the reference's `/healthcheck`): 200 `{"ready": true}`, or 503 `{"ready": false,
/// "reason": ...}` while the store cannot answer or no config is loaded (see [`crate::health`]).
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "operations",
    summary = "Readiness: a config is loaded and the store answers",
    responses(
        (status = 200, description = "Ready", body = Readiness),
        (status = 503, description = "Not ready, with the reason", body = Readiness),
    )
)]
async fn readyz(State(state): State<Arc<AppState>>) -> (StatusCode, Json<Readiness>) {
    match state.readiness.check(&state).await {
        Ok(()) => (StatusCode::OK, Json(Readiness { ready: true, reason: None })),
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, Json(Readiness { ready: false, reason: Some(e.to_string()) })),
    }
}

/// `GET /healthcheck`: the reference's path, answered as `/readyz`.
#[utoipa::path(
    get,
    path = "/healthcheck",
    tag = "operations",
    summary = "Readiness at the reference service's path (the same as `/readyz`)",
    responses(
        (status = 200, description = "Ready", body = Readiness),
        (status = 503, description = "Not ready, with the reason", body = Readiness),
    )
)]
async fn healthcheck(state: State<Arc<AppState>>) -> (StatusCode, Json<Readiness>) {
    readyz(state).await
}

#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "operations",
    summary = "This description (OpenAPI 3.1, generated from the handlers)",
    responses((status = 200, description = "The OpenAPI document", body = Object))
)]
async fn openapi() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], crate::openapi::json())
}
