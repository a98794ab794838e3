//! `POST /v1/reload` and `GET /v1/limits`: the config in force, as JSON.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use floodgate::Policy;
use serde_json::{Value, json};

use crate::config::{Config, LimitKind, Rule};
use crate::state::AppState;

use super::{ApiError, ErrorBody, authorize, ms};

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
pub(super) async fn reload(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    _body: Bytes,
) -> Result<Json<Value>, ApiError> {
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
pub(super) async fn limits(State(state): State<Arc<AppState>>) -> Json<Value> {
    Json(limits_json(&state.config()))
}

pub(super) fn policy_json(p: &Policy) -> Value {
    json!({
        "algorithm": p.algorithm().name(),
        "limit": p.limit(),
        "window_ms": ms(p.window()),
        "capacity": p.capacity(),
        "key": p.key(),
    })
}

pub(super) fn rule_json(rule: &Rule, out: &mut Vec<Value>) {
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

pub(super) fn limits_json(config: &Config) -> Value {
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
