//! What operators call: `/metrics`, `/json` (the reference's), `/v1/cluster`, health and `/openapi.json`.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

use crate::access_log::Api;
use crate::state::AppState;

use super::{ApiError, ErrorBody, authorize};

#[utoipa::path(
    get,
    path = "/metrics",
    tag = "operations",
    summary = "Prometheus metrics",
    responses((status = 200, description = "The Prometheus text format", body = String, content_type = "text/plain"))
)]
pub(super) async fn metrics(State(state): State<Arc<AppState>>) -> impl IntoResponse {
    let leases_expired = state.upstream.store().leases_expired().await.ok();
    let mut registry = prometheus_client::registry::Registry::default();
    registry.register_collector(Box::new(state.metrics.clone()));
    registry.register_collector(Box::new(crate::metrics::UpstreamCollector {
        stats: state.upstream.stats(),
        leases_expired,
    }));
    if let Some(tls) = &state.tls {
        registry.register_collector(Box::new(tls.stats()));
    }
    ([(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)], crate::metrics::encode(&registry))
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
pub(super) async fn json_rls(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
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
pub(super) async fn cluster(State(state): State<Arc<AppState>>) -> Result<Json<Value>, ApiError> {
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
pub(super) async fn healthz() -> &'static str {
    "ok\n"
}

/// Readiness, as `/readyz` and `/healthcheck` answer it.
#[derive(Serialize, ToSchema)]
pub(super) struct Readiness {
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
pub(super) async fn readyz(State(state): State<Arc<AppState>>) -> (StatusCode, Json<Readiness>) {
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
pub(super) async fn healthcheck(state: State<Arc<AppState>>) -> (StatusCode, Json<Readiness>) {
    readyz(state).await
}

#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "operations",
    summary = "This description (OpenAPI 3.1, generated from the handlers)",
    responses((status = 200, description = "The OpenAPI document", body = Object))
)]
pub(super) async fn openapi() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], crate::openapi::json())
}
