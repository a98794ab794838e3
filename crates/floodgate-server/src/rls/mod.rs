//! Envoy's rate limit service, v3: `envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit`.
//!
//! For each descriptor of a request, the domain's rules are matched (see [`crate::config`]) and the matched
//! rule's policy decides a hit of `hits_addend` units (the descriptor's own `hits_addend` if set, else the
//! request's, else 1) on the counter *domain + every entry's key and value*. The answer has one status per
//! descriptor, in order, and is `OVER_LIMIT` if any descriptor is over its limit (and not in shadow mode).
//!
//! | case | status |
//! |---|---|
//! | no rule matches | `OK`, no `current_limit`, `limit_remaining` 0 |
//! | `unlimited: true` | `OK`, `limit_remaining` = `u32::MAX` |
//! | `requests_per_unit: 0` | `OVER_LIMIT` |
//! | a limit | `OK` or `OVER_LIMIT`, `current_limit`, `limit_remaining`, `duration_until_reset` |
//! | over, in `shadow_mode` | `OK` (counted in `floodgate_decisions_total{decision="shadow_denied"}`) |
//! | over, in `quota_mode` | `OVER_LIMIT`; the request is `OVER_LIMIT` only if every quota-mode descriptor is |
//!
//! **`quota_mode`** (as the reference since its PR #1059): the overall code is `OVER_LIMIT` if a descriptor
//! not in quota mode is over, or if every quota-mode descriptor of the request is over. With
//! `--response-dynamic-metadata` the answer's dynamic metadata lists the request's descriptors, whether any
//! quota-mode limit applied (`quotaModeEnabled`), the indices of the quota-mode descriptors over
//! (`quotaModeViolations`), and the `metadata` of the rules whose descriptors are under their limit.
//!
//! **Per-rule metrics**: every descriptor decided by a limit (not `unlimited`) is counted under its rule's
//! stats key in hits (see [`crate::metrics`]).
//!
//! **Limit override**: a descriptor with a `limit` (`requests_per_unit`, `unit`) is decided by that limit
//! instead of the config's, as the reference does: a fixed window on the descriptor's own counter, applied
//! even when no rule matches (the domain must be configured), never in shadow mode. An override with an unknown
//! unit is `INVALID_ARGUMENT`; `requests_per_unit: 0` denies.
//!
//! **Several limits on one rule** (`extra_limits`, a Floodgate extension): the descriptor is decided by the
//! rule's `rate_limit`, then each extra limit in order, stopping at the first that denies; the status reports
//! that limit, or when all pass the one with the least remaining. They are counted with the rest of the
//! request (below): in memory a later limit's denial leaves the earlier ones uncounted too.
//!
//! **`replaces`**: when a request matches a limit whose `replaces` names another limit it also matches, that
//! other limit is not applied (its descriptor answers `OK` with no `current_limit`, and nothing is counted).
//!
//! **Counting is all or nothing per request**: the enforced limits of every descriptor, `extra_limits`
//! included, are hit as one batch ([`floodgate::Store::hit_all`]); if any is over, none is counted, and the
//! descriptors that fit answer `OK` with their remaining unchanged. That holds on stores whose batches are atomic
//! ([`floodgate::Store::hit_all_is_atomic`]: the in-memory store); on Redis and the cluster store each limit is
//! decided on its own, so those that fit keep their hit, as in the reference. Rules in `shadow_mode` or
//! `quota_mode` count on their own. With `--reference-counting` every hit is counted, denied or not, one by one,
//! as the reference does.
//!
//! **An `OVER_LIMIT` status can report `limit_remaining` above 0**: a hit is denied whole when its cost
//! (`hits_addend`) is more than what is left, and a denied hit consumes nothing, so what was left is still left
//! (3 left, `hits_addend: 5`: `OVER_LIMIT` with `limit_remaining: 3`; a call of 3 would pass). The reference,
//! which counts the denied hit, reports 0.
//! With `--response-headers draft|ietf|x-ratelimit`, the answer asks Envoy to add rate-limit headers that
//! describe the request's tightest limit (the matched limit with the least remaining).
//! With `--shadow-mode` (global shadow mode) the overall code is always `OK`, the statuses unchanged.
//! An empty domain, an empty descriptor list, a descriptor without entries or a request past the bounds
//! below is answered `INVALID_ARGUMENT`. A domain that is not configured is answered `OK` for every
//! descriptor (as Envoy's reference service does), or `NOT_FOUND` with `--strict-domains`.
//! A store failure is answered `UNAVAILABLE`, so Envoy applies its own `failure_mode_deny`.

use std::borrow::Cow;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use envoy_types::pb::envoy::extensions::common::ratelimit::v3::RateLimitDescriptor;
use envoy_types::pb::envoy::extensions::common::ratelimit::v3::rate_limit_descriptor::RateLimitOverride;
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_response::{self, Code, DescriptorStatus, rate_limit};
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_service_server::{
    RateLimitService, RateLimitServiceServer,
};
use envoy_types::pb::envoy::service::ratelimit::v3::{RateLimitRequest, RateLimitResponse};
use envoy_types::pb::envoy::r#type::v3::RateLimitUnit;
use envoy_types::pb::google::protobuf;
use floodgate::{Algorithm, Policy};
use tonic::{Request, Response, Status};

use crate::access_log::{Api, Record};
use crate::config::{LimitKind, Match, RateLimit, Rule, Unit, rule_policy_name};
use crate::metrics::sanitize_stat_key;
use crate::state::{AppState, ResponseHeaders};
use envoy_types::pb::envoy::config::core::v3::HeaderValue;

mod answer;
mod request;

use answer::*;
pub use request::{counter_id, counter_id_shared};
use request::{override_limit, override_metric_key, validate};

/// The most descriptors one request may carry.
pub const MAX_DESCRIPTORS: usize = 256;
/// The most entries one descriptor may carry.
pub const MAX_ENTRIES: usize = 64;
/// The most bytes of keys and values one descriptor may carry.
pub const MAX_DESCRIPTOR_BYTES: usize = 16 * 1024;
/// The largest request message accepted.
pub const MAX_MESSAGE_BYTES: usize = 1 << 20;

/// The gRPC service.
#[derive(Clone, Debug)]
pub struct Rls {
    state: Arc<AppState>,
}

impl Rls {
    /// The service over `state`.
    pub fn new(state: Arc<AppState>) -> Self {
        Rls { state }
    }

    /// The tonic server for this service, with its message size bound.
    pub fn into_server(self) -> RateLimitServiceServer<Rls> {
        RateLimitServiceServer::new(self).max_decoding_message_size(MAX_MESSAGE_BYTES)
    }

    /// Answers one request (what the gRPC method does, callable without gRPC), as a pipeline of stages:
    /// validate, match each descriptor to its limits, hit the enforced limits as one batch, judge each
    /// descriptor (one by one where it is not batched), record the per-rule metrics, answer.
    pub async fn decide(&self, req: &RateLimitRequest) -> Result<RateLimitResponse, Status> {
        self.decide_noting(req, None).await
    }

    /// [`Rls::decide`], recorded as one decision of `api` (a debug event, and the access log's line) when
    /// either is on ([`crate::access_log`]), and as a span when traces are on (`--otlp-endpoint`, [`crate::otlp`]:
    /// its own `rls.should_rate_limit` for gRPC; `domain` and `code` of the HTTP call's span for `/json`); as
    /// cheap as [`Rls::decide`] plus one histogram observation when none is.
    pub async fn decide_logged(&self, req: &RateLimitRequest, api: Api) -> Result<RateLimitResponse, Status> {
        let start = std::time::Instant::now();
        let log = self.state.access_log.as_deref();
        let traced = self.state.traced;
        let logged = crate::access_log::wanted(log);
        if !logged && !traced {
            let answer = self.decide(req).await;
            if api == Api::Rls {
                self.state.metrics.observe_rls(start.elapsed());
            }
            return answer;
        }
        let span = match (traced, api) {
            (false, _) => tracing::Span::none(),
            (true, Api::Rls) => tracing::info_span!(
                target: crate::otlp::TARGET,
                "rls.should_rate_limit",
                otel.kind = "server",
                domain = tracing::field::Empty,
                code = tracing::field::Empty,
                store_latency_us = tracing::field::Empty,
            ),
            // The HTTP call's span (`/json`), made by the router.
            (true, Api::Http) => tracing::Span::current(),
        };
        let mut rules = Vec::new();
        let noting = self.decide_noting(req, logged.then_some(&mut rules));
        let (answer, store) = if api == Api::Rls && traced {
            crate::access_log::measure_store(tracing::Instrument::instrument(noting, span.clone())).await
        } else {
            crate::access_log::measure_store(noting).await
        };
        let code = match &answer {
            Ok(r) => Code::try_from(r.overall_code).map_or("UNKNOWN", |c| c.as_str_name()),
            Err(s) => grpc_code_name(s.code()),
        };
        let latency = start.elapsed();
        if traced {
            span.record("domain", clip(&req.domain));
            span.record("code", code);
            span.record("store_latency_us", u64::try_from(store.as_micros()).unwrap_or(u64::MAX));
        }
        if logged {
            crate::access_log::record(log, &Record { api, domain: &req.domain, rules: &rules, code, store, latency });
        }
        if api == Api::Rls {
            self.state.metrics.observe_rls(latency);
        }
        answer
    }

    /// [`Rls::decide`], pushing onto `rules` (when given) the stats key of the rule each descriptor with a
    /// limit matched (`override` for a descriptor's own limit).
    async fn decide_noting(
        &self,
        req: &RateLimitRequest,
        mut rules: Option<&mut Vec<Arc<str>>>,
    ) -> Result<RateLimitResponse, Status> {
        let state = &*self.state;
        if let Err(msg) = validate(req) {
            state.metrics.invalid_requests.fetch_add(1, Relaxed);
            return Err(Status::invalid_argument(msg));
        }
        let config = state.config();
        let Some(domain) = config.domain(&req.domain) else { return unknown_domain(state, req) };
        let mut matches = match_descriptors(req, domain).inspect_err(|_| {
            state.metrics.invalid_requests.fetch_add(1, Relaxed);
        })?;
        drop_replaced(&mut matches);
        let call = Call {
            state,
            req,
            domain,
            request_addend: if req.hits_addend == 0 { 1 } else { u64::from(req.hits_addend) },
            // Under the global shadow switch every request passes, so each limit counts on its own.
            batching: !state.reference_counting && !state.global_shadow_mode,
        };
        let mut batched = call.hit_batch(&matches).await?;
        let mut tally = Tally::with_capacity(req.descriptors.len());
        for ((desc, found), mine) in req.descriptors.iter().zip(&matches).zip(&mut batched) {
            let Some(found) = found else {
                tally.unmatched();
                continue;
            };
            let rule = found.1.as_ref().map(|m| m.rule);
            if let Some(rules) = rules.as_deref_mut() {
                rules.push(rule.map_or_else(|| Arc::from("override"), |r| r.stats_key.clone()));
            }
            let Some(chosen) = call.judge(desc, found, std::mem::take(mine)).await? else {
                tally.unmatched();
                continue;
            };
            call.record_rule_metrics(desc, rule, &chosen);
            let quota = rule.is_some_and(|r| r.quota_mode) && !matches!(found.0.kind, LimitKind::Unlimited);
            tally.add(chosen, rule, quota);
        }
        Ok(tally.answer(state, req, domain))
    }
}

/// A descriptor's match: the limit that applies (the rule's, or the request's override) and the rule matched.
type Found<'a> = Option<(Cow<'a, RateLimit>, Option<Match<'a>>)>;

/// The answer to a request for a domain that is not configured: `OK` for every descriptor, as the reference
/// does, or `NOT_FOUND` with `--strict-domains`.
fn unknown_domain(state: &AppState, req: &RateLimitRequest) -> Result<RateLimitResponse, Status> {
    state.metrics.unknown_domain.fetch_add(1, Relaxed);
    tracing::debug!(domain = %clip(&req.domain), "RLS request for an unknown domain");
    if state.strict_domains {
        return Err(Status::not_found(format!("unknown domain {:?}", clip(&req.domain))));
    }
    let ok = DescriptorStatus { code: Code::Ok as i32, ..Default::default() };
    Ok(RateLimitResponse {
        overall_code: Code::Ok as i32,
        statuses: vec![ok; req.descriptors.len()],
        ..Default::default()
    })
}

/// Each descriptor's limit: its `limit` override, else the domain's matching rule's (`None`: no limit applies).
fn match_descriptors<'a>(
    req: &'a RateLimitRequest,
    domain: &'a crate::config::Domain,
) -> Result<Vec<Found<'a>>, Status> {
    req.descriptors
        .iter()
        .map(|desc| {
            if let Some(o) = &desc.limit {
                return override_limit(&req.domain, o).map(|l| Some((Cow::Owned(l), None)));
            }
            let entries = desc.entries.iter().map(|e| (e.key.as_str(), e.value.as_str()));
            Ok(domain.find_match(entries).and_then(|m| Some((Cow::Borrowed(m.rule.rate_limit.as_ref()?), Some(m)))))
        })
        .collect()
}

/// A store failure, logged (at most once a second) and answered `UNAVAILABLE`.
fn store_failed(domain: &str, rule: Option<&str>, e: &floodgate::StoreError) -> Status {
    if let Some(suppressed) = crate::state::STORE_FAILURE_LOG.allow() {
        tracing::warn!(error = %e, domain = %clip(domain), rule, suppressed, "store failed");
    }
    Status::unavailable(format!("store failed: {e}"))
}

/// One request being decided.
struct Call<'a> {
    state: &'a AppState,
    req: &'a RateLimitRequest,
    domain: &'a crate::config::Domain,
    /// The request's `hits_addend` (0 means 1).
    request_addend: u64,
    /// Whether the enforced limits are hit as one batch (not with `--reference-counting` or `--shadow-mode`).
    batching: bool,
}

impl Call<'_> {
    /// Whether a limit of `rule` goes in the batch: not in shadow or quota mode, which never deny the request
    /// by themselves and so count on their own.
    fn in_batch(&self, rule: Option<&Rule>) -> bool {
        self.batching && !rule.is_some_and(|r| r.shadow_mode || r.quota_mode)
    }

    /// Hits the enforced limits of the whole request as one batch, all or nothing on stores that can (a denied
    /// request consumes nothing). Per descriptor, the decisions of its batched limits, in order. A limit of 0
    /// denies the request whatever the others say: then they are only checked (cost 0).
    async fn hit_batch(&self, matches: &[Found<'_>]) -> Result<Vec<Vec<floodgate::Decision>>, Status> {
        let mut batched: Vec<Vec<floodgate::Decision>> = vec![Vec::new(); matches.len()];
        if !self.batching {
            return Ok(batched);
        }
        // The counter ids, one per descriptor; (descriptor, its id in `ids`, policy, cost) per limit.
        let mut ids: Vec<Vec<u8>> = Vec::new();
        let mut planned: Vec<(usize, usize, &Policy, u64)> = Vec::new();
        let mut deny_all = false;
        for (di, (desc, found)) in self.req.descriptors.iter().zip(matches).enumerate() {
            let Some(found) = found else { continue };
            let m = &found.1;
            if !self.in_batch(m.as_ref().map(|m| m.rule)) {
                continue;
            }
            let cost = descriptor_cost(desc, self.request_addend);
            let mut id = None;
            for limit in descriptor_limits(found) {
                match &limit.kind {
                    LimitKind::Limited(policy) => {
                        let id = *id.get_or_insert_with(|| {
                            ids.push(counter_id_shared(&self.req.domain, desc, m.as_ref().map_or(&[], |m| &m.shared)));
                            ids.len() - 1
                        });
                        planned.push((di, id, policy, cost));
                    }
                    LimitKind::DenyAll => deny_all = true,
                    LimitKind::Unlimited => {}
                }
            }
        }
        if planned.is_empty() {
            return Ok(batched);
        }
        let hits: Vec<floodgate::Hit<'_>> = planned
            .iter()
            .map(|&(_, id, policy, cost)| floodgate::Hit {
                id: &ids[id],
                policy,
                cost: if deny_all { 0 } else { cost },
            })
            .collect();
        let decisions = self.state.hit_all(&hits).await.map_err(|e| store_failed(&self.req.domain, None, &e))?;
        for ((di, ..), d) in planned.iter().zip(decisions) {
            batched[*di].push(d);
        }
        Ok(batched)
    }

    /// Judges one matched descriptor by its limits in order (stopping at the first that denies): the limit to
    /// report is the first that denies, else the one with the least remaining. `mine`: its batched decisions.
    async fn judge(
        &self,
        desc: &RateLimitDescriptor,
        found: &(Cow<'_, RateLimit>, Option<Match<'_>>),
        mine: Vec<floodgate::Decision>,
    ) -> Result<Option<Chosen>, Status> {
        let mut mine = mine.into_iter();
        let rule = found.1.as_ref().map(|m| m.rule);
        let shadow = rule.is_some_and(|r| r.shadow_mode);
        let mut chosen: Option<Chosen> = None;
        for limit in descriptor_limits(found) {
            let (status, denied, capacity) = match &limit.kind {
                LimitKind::Unlimited => (
                    DescriptorStatus { code: Code::Ok as i32, limit_remaining: u32::MAX, ..Default::default() },
                    false,
                    None,
                ),
                LimitKind::DenyAll => {
                    count_denied(self.domain, shadow);
                    (self.deny_all_status(limit, shadow), true, Some(0))
                }
                LimitKind::Limited(policy) => {
                    let batched = if self.in_batch(rule) { mine.next() } else { None };
                    let d = self.decision(desc, found, policy, batched).await?;
                    if d.allowed {
                        self.domain.counters.allowed.fetch_add(1, Relaxed);
                    } else {
                        count_denied(self.domain, shadow);
                    }
                    let code = if d.allowed || shadow { Code::Ok } else { Code::OverLimit };
                    let status = DescriptorStatus {
                        code: code as i32,
                        current_limit: Some(current_limit(limit)),
                        limit_remaining: u32::try_from(d.remaining).unwrap_or(u32::MAX),
                        duration_until_reset: Some(proto_duration(until_reset(&d, limit.window))),
                        quota: None,
                    };
                    (status, !d.allowed, Some(policy.capacity()))
                }
            };
            if chosen.as_ref().is_none_or(|c| denied || status.limit_remaining < c.status.limit_remaining) {
                let per_window = limit.requests_per_unit;
                chosen = Some(Chosen { status, window: limit.window, denied, capacity, per_window });
            }
            if denied {
                break;
            }
        }
        Ok(chosen)
    }

    /// The status of a `requests_per_unit: 0` limit: over (or `OK` in shadow mode), nothing left.
    fn deny_all_status(&self, limit: &RateLimit, shadow: bool) -> DescriptorStatus {
        let window = if limit.window.is_zero() { Duration::from_secs(1) } else { limit.window };
        DescriptorStatus {
            code: if shadow { Code::Ok } else { Code::OverLimit } as i32,
            current_limit: Some(current_limit(limit)),
            limit_remaining: 0,
            duration_until_reset: Some(proto_duration(until_window_end(window))),
            quota: None,
        }
    }

    /// A limit's decision: its batched one, or a hit of its own now (an `inc` with `--reference-counting`).
    async fn decision(
        &self,
        desc: &RateLimitDescriptor,
        (_, m): &(Cow<'_, RateLimit>, Option<Match<'_>>),
        policy: &Policy,
        batched: Option<floodgate::Decision>,
    ) -> Result<floodgate::Decision, Status> {
        let rule = m.as_ref().map(|m| m.rule);
        let d = if self.in_batch(rule) {
            batched.ok_or_else(|| floodgate::StoreError::Backend("the store answered fewer decisions than hits".into()))
        } else {
            let id = counter_id_shared(&self.req.domain, desc, m.as_ref().map_or(&[], |m| &m.shared));
            let cost = descriptor_cost(desc, self.request_addend);
            if self.state.reference_counting {
                self.state.inc(&id, policy, cost).await
            } else {
                self.state.hit(&id, policy, cost).await
            }
        };
        d.map_err(|e| store_failed(&self.req.domain, Some(rule.map_or("<limit override>", |r| &r.path)), &e))
    }

    /// Counts the descriptor under its rule's stats key (the reference's `total_hits`, `within_limit`,
    /// `near_limit`, `over_limit`, `shadow_mode`); unlimited descriptors are not counted, as in the reference.
    fn record_rule_metrics(&self, desc: &RateLimitDescriptor, rule: Option<&Rule>, c: &Chosen) {
        let Some(capacity) = c.capacity else { return };
        let cost = descriptor_cost(desc, self.request_addend);
        let used_after_or_now = capacity.saturating_sub(u64::from(c.status.limit_remaining));
        let consumed = !c.denied || self.state.reference_counting;
        let used_before = if consumed { used_after_or_now.saturating_sub(cost) } else { used_after_or_now };
        let (key, from_request) = match rule {
            Some(r) => self.domain.metric_key(desc.entries.iter().map(|e| (e.key.as_str(), e.value.as_str())), r),
            None => (override_metric_key(&self.req.domain, desc), true),
        };
        let shadow = rule.is_some_and(|r| r.shadow_mode);
        self.domain.counters.rule(&sanitize_stat_key(&key), from_request).record(
            cost,
            capacity,
            used_before,
            !c.denied,
            shadow,
            self.state.near_limit_ratio,
        );
    }
}

/// The statuses of a request so far, and what its answer needs from them.
struct Tally {
    statuses: Vec<DescriptorStatus>,
    /// Over, counting descriptors not in quota mode only.
    over_strict: bool,
    /// Quota-mode descriptors, and the indices of those over their limit.
    quota_descriptors: usize,
    quota_violations: Vec<usize>,
    /// (remaining, index, window, limit per window) of the tightest limit, for the response headers.
    tightest: Option<(u32, usize, Duration, u32)>,
    /// The `metadata` of the rules whose descriptors are under their limit, for the dynamic metadata.
    passed_metadata: Vec<Arc<serde_json::Map<String, serde_json::Value>>>,
}

impl Tally {
    fn with_capacity(n: usize) -> Self {
        Tally {
            statuses: Vec::with_capacity(n),
            over_strict: false,
            quota_descriptors: 0,
            quota_violations: Vec::new(),
            tightest: None,
            passed_metadata: Vec::new(),
        }
    }

    /// A descriptor no limit applies to: `OK`, no `current_limit`.
    fn unmatched(&mut self) {
        self.statuses.push(DescriptorStatus { code: Code::Ok as i32, ..Default::default() });
    }

    fn add(&mut self, c: Chosen, rule: Option<&Rule>, quota: bool) {
        let index = self.statuses.len();
        let is_over = c.status.code == Code::OverLimit as i32;
        if quota {
            self.quota_descriptors += 1;
            if is_over {
                self.quota_violations.push(index);
            }
        } else {
            self.over_strict |= is_over;
        }
        if !is_over && let Some(md) = rule.and_then(|r| r.metadata.as_ref()) {
            self.passed_metadata.push(md.clone());
        }
        if c.status.current_limit.is_some() && self.tightest.is_none_or(|(r, ..)| c.status.limit_remaining < r) {
            self.tightest = Some((c.status.limit_remaining, index, c.window, c.per_window));
        }
        self.statuses.push(c.status);
    }

    /// The answer: the overall code (as the reference's `quota_mode`: over if a descriptor not in quota mode is
    /// over, or if every quota-mode descriptor is; always `OK` under `--shadow-mode`), the response headers of
    /// the tightest limit, and the dynamic metadata when asked for.
    fn answer(self, state: &AppState, req: &RateLimitRequest, domain: &crate::config::Domain) -> RateLimitResponse {
        let quota_over = self.quota_descriptors > 0 && self.quota_violations.len() == self.quota_descriptors;
        let mut over = self.over_strict || quota_over;
        if over { &domain.counters.requests_over } else { &domain.counters.requests_ok }.fetch_add(1, Relaxed);
        if over && state.global_shadow_mode {
            state.metrics.global_shadow.fetch_add(1, Relaxed);
            over = false;
        }
        let response_headers_to_add = match self.tightest {
            Some((_, i, window, per_window)) => {
                rate_limit_headers(state.response_headers, &self.statuses[i], window, per_window)
            }
            None => Vec::new(),
        };
        let dynamic_metadata = state
            .response_dynamic_metadata
            .then(|| dynamic_metadata(req, self.quota_descriptors > 0, &self.quota_violations, &self.passed_metadata));
        RateLimitResponse {
            overall_code: if over { Code::OverLimit } else { Code::Ok } as i32,
            statuses: self.statuses,
            response_headers_to_add,
            dynamic_metadata,
            ..Default::default()
        }
    }
}

/// The limits a matched descriptor is judged by: its own, then its rule's `extra_limits` (a limit override from
/// the request has none).
fn descriptor_limits<'a>(
    (limit, m): &'a (Cow<'_, RateLimit>, Option<Match<'_>>),
) -> impl Iterator<Item = &'a RateLimit> {
    let extras: &[RateLimit] = match (m, limit) {
        (Some(m), Cow::Borrowed(_)) => &m.rule.extra_limits,
        _ => &[],
    };
    std::iter::once(&**limit).chain(extras)
}

/// The hits a descriptor adds: its own `hits_addend`, else the request's; none when `is_negative_hits`.
fn descriptor_cost(desc: &RateLimitDescriptor, request_addend: u64) -> u64 {
    if desc.is_negative_hits { 0 } else { desc.hits_addend.map_or(request_addend, |v| v.value) }
}

/// The limit reported for one descriptor.
struct Chosen {
    status: DescriptorStatus,
    /// Its window.
    window: Duration,
    /// Whether it denied.
    denied: bool,
    /// Its capacity, for the per-rule metrics (`None`: unlimited, not counted, as the reference).
    capacity: Option<u64>,
    /// Its limit per window (for the response headers, which describe the window).
    per_window: u32,
}

/// `replaces`: a named limit is dropped (the descriptor answers as if no rule matched) when another limit
/// matched by the same request lists its name in `replaces`.
fn drop_replaced(matches: &mut [Option<(Cow<'_, RateLimit>, Option<Match<'_>>)>]) {
    let replaced: Vec<Arc<str>> =
        matches.iter().flatten().flat_map(|(limit, _)| limit.replaces.iter().cloned()).collect();
    if replaced.is_empty() {
        return;
    }
    for found in matches.iter_mut() {
        if found.as_ref().is_some_and(|(limit, _)| !limit.name.is_empty() && replaced.contains(&limit.name)) {
            *found = None;
        }
    }
}

fn count_denied(domain: &crate::config::Domain, shadow: bool) {
    if shadow { &domain.counters.shadow_denied } else { &domain.counters.denied }.fetch_add(1, Relaxed);
}

#[tonic::async_trait]
impl RateLimitService for Rls {
    async fn should_rate_limit(
        &self,
        request: Request<RateLimitRequest>,
    ) -> Result<Response<RateLimitResponse>, Status> {
        self.decide_logged(request.get_ref(), Api::Rls).await.map(Response::new)
    }
}

/// The upper-case name of a gRPC code, as in the access log (`UNAVAILABLE`, `INVALID_ARGUMENT`, ...).
fn grpc_code_name(code: tonic::Code) -> &'static str {
    match code {
        tonic::Code::Ok => "OK",
        tonic::Code::Cancelled => "CANCELLED",
        tonic::Code::InvalidArgument => "INVALID_ARGUMENT",
        tonic::Code::NotFound => "NOT_FOUND",
        tonic::Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        tonic::Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        tonic::Code::Unavailable => "UNAVAILABLE",
        tonic::Code::Internal => "INTERNAL",
        _ => "ERROR",
    }
}

/// At most 64 characters of a client-supplied string, for logs and error messages.
fn clip(s: &str) -> &str {
    match s.char_indices().nth(64) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}
