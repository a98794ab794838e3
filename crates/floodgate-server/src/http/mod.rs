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
use std::time::Duration;

use axum::extract::rejection::JsonRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::state::AppState;

mod config;
mod limits;
mod ops;

use config::{__path_limits, __path_reload, limits, reload};
pub(crate) use limits::InlinePolicy;
use limits::{__path_hit, __path_inspect, __path_reset, hit, inspect, reset};
use ops::{
    __path_cluster, __path_healthcheck, __path_healthz, __path_json_rls, __path_metrics, __path_openapi, __path_readyz,
    cluster, healthcheck, healthz, json_rls, metrics, openapi, readyz,
};

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
        .route_layer(axum::middleware::from_fn_with_state(state.clone(), observe))
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "no such route (see /openapi.json)") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "method not allowed on this route (see /openapi.json)")
        })
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(axum::middleware::from_fn(refuse_large_bodies))
        .layer(axum::middleware::from_fn_with_state(state.clone(), check_host))
        .with_state(state)
}

/// Times each call of a route into `floodgate_request_duration_seconds{api="http"}` and, when traces are on
/// (`--otlp-endpoint`), makes its `http.request` span: method, route, status, store latency (and, on `/json`,
/// the domain and the code).
async fn observe(
    State(state): State<Arc<AppState>>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let start = std::time::Instant::now();
    if !state.traced {
        let res = next.run(req).await;
        state.metrics.observe_http(start.elapsed());
        return res;
    }
    let route = req.extensions().get::<axum::extract::MatchedPath>().map_or("", |p| p.as_str()).to_owned();
    let method = req.method().as_str().to_owned();
    let span = tracing::info_span!(
        target: crate::otlp::TARGET,
        "http.request",
        otel.kind = "server",
        otel.name = %format_args!("{method} {route}"),
        http.request.method = %method,
        http.route = %route,
        http.response.status_code = tracing::field::Empty,
        store_latency_us = tracing::field::Empty,
        domain = tracing::field::Empty,
        code = tracing::field::Empty,
    );
    let (res, store) =
        crate::access_log::measure_store(tracing::Instrument::instrument(next.run(req), span.clone())).await;
    span.record("http.response.status_code", res.status().as_u16());
    span.record("store_latency_us", u64::try_from(store.as_micros()).unwrap_or(u64::MAX));
    state.metrics.observe_http(start.elapsed());
    res
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

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_micros().div_ceil(1000)).unwrap_or(u64::MAX)
}

fn store_error(e: floodgate::StoreError) -> ApiError {
    if let Some(suppressed) = crate::state::STORE_FAILURE_LOG.allow() {
        tracing::warn!(error = %e, suppressed, "store failed");
    }
    ApiError::new(StatusCode::SERVICE_UNAVAILABLE, format!("store failed: {e}"))
}
