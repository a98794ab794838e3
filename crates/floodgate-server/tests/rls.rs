//! The RLS v3 gRPC API, driven by a tonic client over loopback.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{desc, request, start, start_with};
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_response::{Code, rate_limit};
use envoy_types::pb::google::protobuf::{Duration, UInt64Value};
use tonic::Code as GrpcCode;

const CONFIG: &str = "
domain: t
descriptors:
  - key: k
    rate_limit: {unit: hour, requests_per_unit: 3}
  - key: big
    rate_limit: {unit: hour, requests_per_unit: 5, name: big_one}
  - key: open
    rate_limit: {unlimited: true}
  - key: shadow
    shadow_mode: true
    rate_limit: {unit: hour, requests_per_unit: 1}
  - key: never
    rate_limit: {unit: minute, requests_per_unit: 0}
  - key: tenant
    value: vip
  - key: tenant
    rate_limit: {unit: hour, requests_per_unit: 1}
    descriptors:
      - key: path
        value: /login
        rate_limit: {unit: hour, requests_per_unit: 2, algorithm: sliding_window}
      - key: path
        rate_limit: {unit: hour, requests_per_unit: 4, algorithm: gcra, burst: 4}
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counts_down_then_over_limit() {
    let s = start(CONFIG).await;
    let mut c = s.client().await;
    for expected in [2u32, 1, 0] {
        let r = c.should_rate_limit(request("t", vec![desc(&[("k", "a")])])).await.unwrap().into_inner();
        assert_eq!(r.overall_code, Code::Ok as i32);
        let st = &r.statuses[0];
        assert_eq!(st.code, Code::Ok as i32);
        assert_eq!(st.limit_remaining, expected);
        let limit = st.current_limit.as_ref().unwrap();
        assert_eq!((limit.requests_per_unit, limit.unit), (3, rate_limit::Unit::Hour as i32));
        let reset = st.duration_until_reset.unwrap();
        assert!(reset.seconds <= 3600 && (reset.seconds > 0 || reset.nanos > 0), "{reset:?}");
    }
    let r = c.should_rate_limit(request("t", vec![desc(&[("k", "a")])])).await.unwrap().into_inner();
    assert_eq!(r.overall_code, Code::OverLimit as i32);
    assert_eq!(r.statuses[0].code, Code::OverLimit as i32);
    assert_eq!(r.statuses[0].limit_remaining, 0);
    // Another value has its own counter.
    let r = c.should_rate_limit(request("t", vec![desc(&[("k", "b")])])).await.unwrap().into_inner();
    assert_eq!((r.overall_code, r.statuses[0].limit_remaining), (Code::Ok as i32, 2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statuses_per_descriptor_and_over_if_any() {
    let s = start(CONFIG).await;
    let mut c = s.client().await;
    let descs =
        || vec![desc(&[("big", "x")]), desc(&[("shadow", "x")]), desc(&[("nomatch", "x")]), desc(&[("open", "x")])];
    let r = c.should_rate_limit(request("t", descs())).await.unwrap().into_inner();
    assert_eq!(r.overall_code, Code::Ok as i32);
    assert_eq!(r.statuses.len(), 4);
    assert_eq!(r.statuses[0].current_limit.as_ref().unwrap().name, "big_one");
    assert_eq!(r.statuses[0].limit_remaining, 4);
    assert!(r.statuses[2].current_limit.is_none());
    assert_eq!(r.statuses[3].limit_remaining, u32::MAX);
    // The shadow rule is over now, but answers OK.
    let r = c.should_rate_limit(request("t", descs())).await.unwrap().into_inner();
    assert_eq!(r.overall_code, Code::Ok as i32);
    assert_eq!(r.statuses[1].code, Code::Ok as i32);
    assert_eq!(r.statuses[1].limit_remaining, 0);
    // One real denial makes the whole answer OVER_LIMIT.
    let r = c
        .should_rate_limit(request("t", vec![desc(&[("big", "y")]), desc(&[("never", "z")])]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.overall_code, Code::OverLimit as i32);
    assert_eq!(r.statuses[0].code, Code::Ok as i32);
    assert_eq!(r.statuses[1].code, Code::OverLimit as i32);
    assert_eq!(r.statuses[1].current_limit.as_ref().unwrap().requests_per_unit, 0);
    let metrics = reqwest::get(format!("{}/metrics", s.base)).await.unwrap().text().await.unwrap();
    assert!(
        metrics.contains("floodgate_decisions_total{source=\"rls\",domain=\"t\",decision=\"shadow_denied\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains("floodgate_rls_requests_total{domain=\"t\",code=\"over_limit\"} 1"), "{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hits_addend_request_and_descriptor() {
    let s = start(CONFIG).await;
    let mut c = s.client().await;
    let mut req = request("t", vec![desc(&[("big", "a")])]);
    req.hits_addend = 2;
    let r = c.should_rate_limit(req.clone()).await.unwrap().into_inner();
    assert_eq!(r.statuses[0].limit_remaining, 3);
    req.descriptors[0].hits_addend = Some(UInt64Value { value: 3 });
    let r = c.should_rate_limit(req.clone()).await.unwrap().into_inner();
    assert_eq!((r.statuses[0].code, r.statuses[0].limit_remaining), (Code::Ok as i32, 0));
    // A cost that does not fit is denied and consumes nothing; a zero addend is a pure check.
    req.descriptors[0].hits_addend = Some(UInt64Value { value: 0 });
    let r = c.should_rate_limit(req).await.unwrap().into_inner();
    assert_eq!(r.statuses[0].code, Code::OverLimit as i32);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nested_rules_and_exempt_values() {
    let s = start(CONFIG).await;
    let mut c = s.client().await;
    let mut ask = async |entries: &[(&str, &str)]| {
        let r = c.should_rate_limit(request("t", vec![desc(entries)])).await.unwrap().into_inner();
        (r.statuses[0].code, r.statuses[0].current_limit.as_ref().map(|l| l.requests_per_unit))
    };
    let ok = Code::Ok as i32;
    let over = Code::OverLimit as i32;
    assert_eq!(ask(&[("tenant", "vip")]).await, (ok, None), "an exact value with no limit is exempt");
    assert_eq!(ask(&[("tenant", "vip")]).await, (ok, None));
    assert_eq!(ask(&[("tenant", "acme")]).await, (ok, Some(1)));
    assert_eq!(ask(&[("tenant", "acme")]).await, (over, Some(1)));
    assert_eq!(ask(&[("tenant", "acme"), ("path", "/login")]).await, (ok, Some(2)));
    assert_eq!(ask(&[("tenant", "acme"), ("path", "/login")]).await, (ok, Some(2)));
    assert_eq!(ask(&[("tenant", "acme"), ("path", "/login")]).await, (over, Some(2)));
    assert_eq!(ask(&[("tenant", "acme"), ("path", "/x")]).await, (ok, Some(4)));
    assert_eq!(ask(&[("tenant", "acme"), ("path", "/x"), ("deeper", "1")]).await, (ok, None));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_requests_are_invalid_argument() {
    let s = start(CONFIG).await;
    let mut c = s.client().await;
    let e = c.should_rate_limit(request("", vec![desc(&[("k", "a")])])).await.unwrap_err();
    assert_eq!(e.code(), GrpcCode::InvalidArgument);
    assert!(e.message().contains("domain"), "{}", e.message());
    let e = c.should_rate_limit(request("t", vec![])).await.unwrap_err();
    assert_eq!(e.code(), GrpcCode::InvalidArgument);
    let e = c.should_rate_limit(request("t", vec![desc(&[])])).await.unwrap_err();
    assert_eq!(e.code(), GrpcCode::InvalidArgument);
    let many = vec![desc(&[("k", "a")]); 1000];
    let e = c.should_rate_limit(request("t", many)).await.unwrap_err();
    assert_eq!(e.code(), GrpcCode::InvalidArgument);
    let huge = "x".repeat(2 << 20);
    let e = c.should_rate_limit(request("t", vec![desc(&[("k", &huge)])])).await.unwrap_err();
    assert_eq!(e.code(), GrpcCode::OutOfRange, "{e:?}");
    // The server still answers.
    let r = c.should_rate_limit(request("t", vec![desc(&[("k", "z")])])).await.unwrap().into_inner();
    assert_eq!(r.overall_code, Code::Ok as i32);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_domain_ok_or_not_found() {
    let s = start(CONFIG).await;
    let mut c = s.client().await;
    let r = c.should_rate_limit(request("nope", vec![desc(&[("k", "a")]), desc(&[("k", "b")])])).await.unwrap();
    let r = r.into_inner();
    assert_eq!((r.overall_code, r.statuses.len()), (Code::Ok as i32, 2));
    let strict = start_with(CONFIG, None, true).await;
    let mut c = strict.client().await;
    let e = c.should_rate_limit(request("nope", vec![desc(&[("k", "a")])])).await.unwrap_err();
    assert_eq!(e.code(), GrpcCode::NotFound);
    assert!(e.message().contains("nope"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_hits_admit_exactly_the_limit() {
    let yaml = "domain: c\ndescriptors:\n  - key: k\n    rate_limit: {unit: hour, requests_per_unit: 50}\n";
    // Per-core gRPC threads (several connections, so both listeners get some), and the shared runtime.
    for grpc_threads in [2, 0] {
        let s = common::start_opts(yaml, None, false, grpc_threads).await;
        let mut clients = Vec::new();
        for _ in 0..4 {
            clients.push(s.client().await);
        }
        assert_eq!(admitted(&clients, 200).await, 50, "grpc_threads = {grpc_threads}");
        s.server.shutdown().await.unwrap();
    }
}

async fn admitted(
    clients: &[envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_service_client::RateLimitServiceClient<
        tonic::transport::Channel,
    >],
    n: usize,
) -> usize {
    let tasks: Vec<_> = (0..n)
        .map(|i| {
            let mut c = clients[i % clients.len()].clone();
            tokio::spawn(async move {
                c.should_rate_limit(request("c", vec![desc(&[("k", "hot")])])).await.unwrap().into_inner().overall_code
            })
        })
        .collect();
    let mut ok = 0;
    for t in tasks {
        ok += usize::from(t.await.unwrap() == Code::Ok as i32);
    }
    ok
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_keeps_state_and_refuses_bad_configs() {
    let s = start("domain: r\ndescriptors:\n  - key: k\n    rate_limit: {unit: hour, requests_per_unit: 2}\n").await;
    let mut c = s.client().await;
    let mut code =
        async || c.should_rate_limit(request("r", vec![desc(&[("k", "a")])])).await.unwrap().into_inner().overall_code;
    assert_eq!(code().await, Code::Ok as i32);
    assert_eq!(code().await, Code::Ok as i32);
    assert_eq!(code().await, Code::OverLimit as i32);
    // A bad file is refused and the old config stays.
    std::fs::write(
        &s.config,
        "domain: r\ndescriptors:\n  - key: k\n    rate_limit: {unit: hour, requests_per_unit: -1}\n",
    )
    .unwrap();
    let err = s.server.state.reload().await.unwrap_err().to_string();
    assert!(err.contains(":4:") && err.contains("requests_per_unit"), "{err}");
    assert_eq!(code().await, Code::OverLimit as i32);
    // A bigger limit keeps the count (the policy is named after the rule): one more passes.
    std::fs::write(
        &s.config,
        "domain: r\ndescriptors:\n  - key: k\n    rate_limit: {unit: hour, requests_per_unit: 3}\n",
    )
    .unwrap();
    s.server.state.reload().await.unwrap();
    assert_eq!(code().await, Code::Ok as i32);
    assert_eq!(code().await, Code::OverLimit as i32);
    let metrics = reqwest::get(format!("{}/metrics", s.base)).await.unwrap().text().await.unwrap();
    assert!(metrics.contains("floodgate_config_reloads_total{result=\"success\"} 1"), "{metrics}");
    assert!(metrics.contains("floodgate_config_reloads_total{result=\"failure\"} 1"), "{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wildcards_count_apart_or_share() {
    let s = start(
        "
domain: w
descriptors:
  - key: path
    value: /api/*
    rate_limit: {unit: hour, requests_per_unit: 2}
  - key: path
    value: '*.png'
    share_threshold: true
    rate_limit: {unit: hour, requests_per_unit: 2}
  - key: path
    rate_limit: {unit: hour, requests_per_unit: 100}
",
    )
    .await;
    let mut c = s.client().await;
    let mut hit = async |v: &str| {
        let r = c.should_rate_limit(request("w", vec![desc(&[("path", v)])])).await.unwrap().into_inner();
        let st = &r.statuses[0];
        (st.code, st.current_limit.as_ref().unwrap().requests_per_unit, st.limit_remaining)
    };
    let (ok, over) = (Code::Ok as i32, Code::OverLimit as i32);
    // Without share_threshold each value counts apart.
    assert_eq!(hit("/api/a").await, (ok, 2, 1));
    assert_eq!(hit("/api/a").await, (ok, 2, 0));
    assert_eq!(hit("/api/a").await, (over, 2, 0));
    assert_eq!(hit("/api/b").await, (ok, 2, 1));
    // With it, every matching value shares one counter.
    assert_eq!(hit("a.png").await, (ok, 2, 1));
    assert_eq!(hit("b.png").await, (ok, 2, 0));
    assert_eq!(hit("c/d.png").await, (over, 2, 0));
    // Not matched by any wildcard: the key-only rule.
    assert_eq!(hit("/other").await, (ok, 100, 99));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn windows_of_any_length_align_to_the_epoch() {
    let s = start(
        "
domain: w
descriptors:
  - key: multi
    rate_limit: {unit: day, unit_multiplier: 10, requests_per_unit: 2}
  - key: window
    rate_limit: {window: 36h, requests_per_unit: 1}
  - key: deny
    rate_limit: {window: 7d, requests_per_unit: 0}
",
    )
    .await;
    let mut c = s.client().await;
    // current_limit: a 10-day window divides a month (30 days) exactly, so 2 per 10 days is reported as 6 per
    // month; 36 hours divides no week, so it is reported per hour (the largest unit dividing it), unscaled.
    for (key, window, unit, per_unit, remaining, code) in [
        ("multi", 10 * 86_400u64, rate_limit::Unit::Month, 6, 1, Code::Ok),
        ("window", 36 * 3_600, rate_limit::Unit::Hour, 1, 0, Code::Ok),
        ("deny", 7 * 86_400, rate_limit::Unit::Week, 0, 0, Code::OverLimit),
    ] {
        let r = c.should_rate_limit(request("w", vec![desc(&[(key, "x")])])).await.unwrap().into_inner();
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
        let st = &r.statuses[0];
        assert_eq!((st.code, st.limit_remaining), (code as i32, remaining), "{key}");
        let limit = st.current_limit.as_ref().unwrap();
        assert_eq!((limit.unit, limit.requests_per_unit), (unit as i32, per_unit), "{key}");
        let expected = window - now % window;
        let got = st.duration_until_reset.unwrap().seconds.unsigned_abs();
        assert!(got.abs_diff(expected) <= 2, "{key}: reset in {got}s, expected {expected}s");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replaces_disables_the_named_limit_in_the_same_request() {
    let s = start(
        "
domain: r
descriptors:
  - key: user
    rate_limit: {unit: hour, requests_per_unit: 1, name: per_user}
  - key: plan
    value: premium
    rate_limit: {unit: hour, requests_per_unit: 5, name: premium, replaces: [{name: per_user}]}
  - key: plan
    rate_limit: {unit: hour, requests_per_unit: 100}
",
    )
    .await;
    let mut c = s.client().await;
    let both = |plan: &str| vec![desc(&[("user", "u1")]), desc(&[("plan", plan)])];
    // Premium replaces per_user: three requests pass although per_user allows one.
    for left in [4u32, 3, 2] {
        let r = c.should_rate_limit(request("r", both("premium"))).await.unwrap().into_inner();
        assert_eq!(r.overall_code, Code::Ok as i32);
        assert_eq!(r.statuses[0].code, Code::Ok as i32);
        assert!(r.statuses[0].current_limit.is_none(), "replaced: {:?}", r.statuses[0]);
        assert_eq!(r.statuses[1].current_limit.as_ref().unwrap().name, "premium");
        assert_eq!(r.statuses[1].limit_remaining, left);
    }
    // Without the replacing limit, per_user applies (and it was never counted above).
    let r = c.should_rate_limit(request("r", both("basic"))).await.unwrap().into_inner();
    assert_eq!(r.statuses[0].current_limit.as_ref().unwrap().name, "per_user");
    assert_eq!((r.overall_code, r.statuses[0].limit_remaining), (Code::Ok as i32, 0));
    let r = c.should_rate_limit(request("r", both("basic"))).await.unwrap().into_inner();
    assert_eq!(r.overall_code, Code::OverLimit as i32);
    assert_eq!(r.statuses[0].code, Code::OverLimit as i32);
    // And alone.
    let r = c.should_rate_limit(request("r", vec![desc(&[("user", "u1")])])).await.unwrap().into_inner();
    assert_eq!(r.overall_code, Code::OverLimit as i32);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limit_override_replaces_the_configured_limit() {
    use envoy_types::pb::envoy::extensions::common::ratelimit::v3::rate_limit_descriptor::RateLimitOverride;
    use envoy_types::pb::envoy::r#type::v3::RateLimitUnit;
    let s = start(CONFIG).await;
    let mut c = s.client().await;
    let with = |entries: &[(&str, &str)], rpu: u32, unit: i32| {
        let mut d = desc(entries);
        d.limit = Some(RateLimitOverride { requests_per_unit: rpu, unit });
        d
    };
    let minute = RateLimitUnit::Minute as i32;
    // `k` is configured at 3/hour; the override makes it 2/minute.
    for (left, code) in [(1u32, Code::Ok), (0, Code::Ok), (0, Code::OverLimit)] {
        let r = c.should_rate_limit(request("t", vec![with(&[("k", "o")], 2, minute)])).await.unwrap().into_inner();
        let st = &r.statuses[0];
        assert_eq!((st.code, st.limit_remaining), (code as i32, left));
        let limit = st.current_limit.as_ref().unwrap();
        assert_eq!((limit.requests_per_unit, limit.unit, &*limit.name), (2, rate_limit::Unit::Minute as i32, ""));
        assert!(st.duration_until_reset.unwrap().seconds <= 60);
    }
    // The configured limit keeps its own state: the override's hits did not count against it.
    let r = c.should_rate_limit(request("t", vec![desc(&[("k", "o")])])).await.unwrap().into_inner();
    assert_eq!((r.statuses[0].code, r.statuses[0].limit_remaining), (Code::Ok as i32, 2));
    // As in the reference, an override applies even where no rule matches, and overrides shadow mode.
    let r = c.should_rate_limit(request("t", vec![with(&[("nomatch", "x")], 1, minute)])).await.unwrap().into_inner();
    assert_eq!(r.statuses[0].current_limit.as_ref().unwrap().requests_per_unit, 1);
    let r = c.should_rate_limit(request("t", vec![with(&[("nomatch", "x")], 1, minute)])).await.unwrap().into_inner();
    assert_eq!(r.overall_code, Code::OverLimit as i32);
    let r = c.should_rate_limit(request("t", vec![with(&[("shadow", "y")], 0, minute)])).await.unwrap().into_inner();
    assert_eq!(r.statuses[0].code, Code::OverLimit as i32, "requests_per_unit 0 denies, shadow_mode ignored");
    // An unlimited rule is overridden too.
    let r = c
        .should_rate_limit(request("t", vec![with(&[("open", "z")], 5, RateLimitUnit::Year as i32)]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (r.statuses[0].limit_remaining, r.statuses[0].current_limit.as_ref().unwrap().unit),
        (4, rate_limit::Unit::Year as i32)
    );
    // An unknown unit is refused.
    for unit in [RateLimitUnit::Unknown as i32, 99] {
        let e = c.should_rate_limit(request("t", vec![with(&[("k", "o")], 1, unit)])).await.unwrap_err();
        assert_eq!(e.code(), GrpcCode::InvalidArgument, "{e:?}");
        assert!(e.message().contains("unknown unit"), "{e:?}");
    }
}

const COUNTING: &str = "
domain: c
descriptors:
  - key: a
    rate_limit: {unit: hour, requests_per_unit: 3}
  - key: b
    rate_limit: {unit: hour, requests_per_unit: 10}
";

/// Hits `(a=x)` with `cost`, alongside `(b=y)` with cost 1; returns (overall, a's code, a's remaining, b's remaining).
async fn hit_ab(
    c: &mut envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_service_client::RateLimitServiceClient<
        tonic::transport::Channel,
    >,
    cost: u64,
) -> (i32, i32, u32, u32) {
    let mut a = desc(&[("a", "x")]);
    a.hits_addend = Some(UInt64Value { value: cost });
    let r = c.should_rate_limit(request("c", vec![a, desc(&[("b", "y")])])).await.unwrap().into_inner();
    (r.overall_code, r.statuses[0].code, r.statuses[0].limit_remaining, r.statuses[1].limit_remaining)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_counting_consumes_nothing_on_denial() {
    let s = start(COUNTING).await;
    let mut c = s.client().await;
    let (ok, over) = (Code::Ok as i32, Code::OverLimit as i32);
    assert_eq!(hit_ab(&mut c, 2).await, (ok, ok, 1, 9));
    // a is over; the request is denied as a whole, so b, which fits, is not counted either (the reference
    // counts both; --reference-counting below).
    assert_eq!(hit_ab(&mut c, 2).await, (over, over, 1, 9), "denied: a keeps its 1 left, b its 9");
    assert_eq!(hit_ab(&mut c, 1).await, (ok, ok, 0, 8), "the denied request counted nothing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reference_counting_counts_denied_hits() {
    let s = common::start_tuned(COUNTING, None, false, 0, |st| st.reference_counting = true).await;
    let mut c = s.client().await;
    let (ok, over) = (Code::Ok as i32, Code::OverLimit as i32);
    assert_eq!(hit_ab(&mut c, 2).await, (ok, ok, 1, 9));
    assert_eq!(hit_ab(&mut c, 2).await, (over, over, 0, 8), "the reference counts the denied 2 (4 of 3)");
    assert_eq!(hit_ab(&mut c, 1).await, (over, over, 0, 7), "so even 1 more is over");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn global_shadow_mode_answers_ok_overall() {
    let s = common::start_tuned(COUNTING, None, false, 0, |st| st.global_shadow_mode = true).await;
    let mut c = s.client().await;
    let (ok, over) = (Code::Ok as i32, Code::OverLimit as i32);
    assert_eq!(hit_ab(&mut c, 3).await, (ok, ok, 0, 9));
    // Over: the status says so, the overall code is OK (as the reference's SHADOW_MODE).
    assert_eq!(hit_ab(&mut c, 1).await, (ok, over, 0, 8));
    let text = reqwest::get(format!("{}/metrics", s.base)).await.unwrap().text().await.unwrap();
    assert!(text.contains("floodgate_rls_global_shadow_mode_total 1"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limit_response_headers() {
    use floodgate_server::state::ResponseHeaders;
    let yaml = "
domain: h
descriptors:
  - key: a
    rate_limit: {unit: minute, requests_per_unit: 10, name: per_minute}
  - key: b
    rate_limit: {unit: second, unit_multiplier: 30, requests_per_unit: 3}
  - key: open
    rate_limit: {unlimited: true}
";
    let headers = async |style: ResponseHeaders| {
        let s = common::start_tuned(yaml, None, false, 0, |st| st.response_headers = style).await;
        let mut c = s.client().await;
        let descs = vec![desc(&[("a", "1")]), desc(&[("b", "1")]), desc(&[("open", "1")]), desc(&[("none", "1")])];
        let r = c.should_rate_limit(request("h", descs)).await.unwrap().into_inner();
        let reset = r.statuses[1].duration_until_reset.unwrap();
        let reset = reset.seconds + i64::from(reset.nanos > 0);
        let got: Vec<(String, String)> = r.response_headers_to_add.into_iter().map(|h| (h.key, h.value)).collect();
        (got, reset.to_string())
    };
    let (got, _) = headers(ResponseHeaders::Off).await;
    assert!(got.is_empty());
    // The tightest limit is b's (2 left of 3, in a 30 s window).
    let (got, reset) = headers(ResponseHeaders::Draft).await;
    let pairs = |v: &[(&str, &str)]| v.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect::<Vec<_>>();
    assert_eq!(got, pairs(&[("RateLimit-Limit", "3"), ("RateLimit-Remaining", "2"), ("RateLimit-Reset", &reset)]));
    let (got, reset) = headers(ResponseHeaders::XRateLimit).await;
    assert_eq!(
        got,
        pairs(&[("X-RateLimit-Limit", "3"), ("X-RateLimit-Remaining", "2"), ("X-RateLimit-Reset", &reset)])
    );
    let (got, reset) = headers(ResponseHeaders::Ietf).await;
    assert_eq!(
        got,
        pairs(&[("RateLimit-Policy", "\"default\";q=3;w=30"), ("RateLimit", &format!("\"default\";r=2;t={reset}"))])
    );
    assert!(reset.parse::<u64>().unwrap() <= 30);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reloads_when_a_config_file_changes() {
    let yaml = |n: u32| {
        format!("domain: f\ndescriptors:\n  - key: k\n    rate_limit: {{unit: hour, requests_per_unit: {n}}}\n")
    };
    let s = start(&yaml(5)).await;
    let stop = tokio_util::sync::CancellationToken::new();
    tokio::spawn(s.server.state.clone().watch_config(std::time::Duration::from_millis(50), stop.clone()));
    let mut c = s.client().await;
    let mut limit = async || {
        let r = c.should_rate_limit(request("f", vec![desc(&[("k", "x")])])).await.unwrap().into_inner();
        r.statuses[0].current_limit.as_ref().map(|l| l.requests_per_unit)
    };
    assert_eq!(limit().await, Some(5));
    tokio::time::sleep(std::time::Duration::from_millis(120)).await;
    std::fs::write(&s.config, yaml(70)).unwrap();
    let mut seen = None;
    for _ in 0..100 {
        seen = limit().await;
        if seen == Some(70) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(seen, Some(70), "the changed file was not picked up");
    // A broken file is refused; the last good config stays.
    std::fs::write(&s.config, "domain: f\ndescriptors:\n  - key: k\n    colour: red\n").unwrap();
    let metrics = || async { reqwest::get(format!("{}/metrics", s.base)).await.unwrap().text().await.unwrap() };
    let mut refused = false;
    for _ in 0..100 {
        if metrics().await.contains("floodgate_config_reloads_total{result=\"failure\"} 1") {
            refused = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(refused, "{}", metrics().await);
    assert_eq!(limit().await, Some(70));
    stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_limits_on_one_rule() {
    let s = start(
        "
domain: m
descriptors:
  - key: user
    rate_limit: {unit: second, unit_multiplier: 3600, requests_per_unit: 3, name: burst}
    extra_limits:
      - {unit: day, requests_per_unit: 4, name: sustained}
      - {unlimited: true}
",
    )
    .await;
    let mut c = s.client().await;
    let mut hit = async |user: &str| {
        let r = c.should_rate_limit(request("m", vec![desc(&[("user", user)])])).await.unwrap().into_inner();
        let st = &r.statuses[0];
        (st.code, st.current_limit.as_ref().unwrap().name.clone(), st.limit_remaining)
    };
    let (ok, over) = (Code::Ok as i32, Code::OverLimit as i32);
    // Both count; the status reports the limit with the least remaining.
    assert_eq!(hit("a").await, (ok, "burst".into(), 2));
    assert_eq!(hit("a").await, (ok, "burst".into(), 1));
    assert_eq!(hit("a").await, (ok, "burst".into(), 0));
    assert_eq!(hit("a").await, (over, "burst".into(), 0), "the first limit denies");
    let e = floodgate_server::config::Config::from_str(
        "t.yaml",
        "domain: m\ndescriptors:\n  - key: k\n    extra_limits:\n      - {unit: day, requests_per_unit: 1, colour: red}\n",
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("t.yaml:5:7: descriptors[0].extra_limits: needs a `rate_limit` beside it"), "{e}");
    assert!(e.contains("descriptors[0].extra_limits[0].colour: unknown field"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sustained_limit_beside_a_burst() {
    let s = start(
        "
domain: m
descriptors:
  - key: user
    rate_limit: {unit: hour, requests_per_unit: 10, algorithm: gcra, burst: 5}
    extra_limits:
      - {unit: day, requests_per_unit: 2, name: daily}
",
    )
    .await;
    let mut c = s.client().await;
    let mut hit = async || {
        let r = c.should_rate_limit(request("m", vec![desc(&[("user", "u")])])).await.unwrap().into_inner();
        let st = &r.statuses[0];
        (st.code, st.current_limit.as_ref().unwrap().name.clone(), st.limit_remaining)
    };
    let (ok, over) = (Code::Ok as i32, Code::OverLimit as i32);
    assert_eq!(hit().await, (ok, "daily".into(), 1));
    assert_eq!(hit().await, (ok, "daily".into(), 0));
    assert_eq!(hit().await, (over, "daily".into(), 0), "the burst allows, the daily limit denies");
}

const QUOTA: &str = "
domain: q
descriptors:
  - key: backend
    value: a
    quota_mode: true
    metadata: {backend: a, weight: 2}
    rate_limit: {unit: hour, requests_per_unit: 1}
  - key: backend
    value: b
    quota_mode: true
    metadata: {backend: b}
    rate_limit: {unit: hour, requests_per_unit: 2}
  - key: user
    rate_limit: {unit: hour, requests_per_unit: 10}
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quota_mode_is_over_only_when_every_quota_descriptor_is() {
    let s = common::start_tuned(QUOTA, None, false, 0, |st| st.response_dynamic_metadata = true).await;
    let mut c = s.client().await;
    let ask = |descs: &[(&str, &str)]| request("q", descs.iter().map(|(k, v)| desc(&[(k, v)])).collect());
    let codes = |r: &envoy_types::pb::envoy::service::ratelimit::v3::RateLimitResponse| {
        (r.overall_code, r.statuses.iter().map(|s| s.code).collect::<Vec<_>>())
    };
    let (ok, over) = (Code::Ok as i32, Code::OverLimit as i32);
    let both = [("backend", "a"), ("backend", "b")];
    // a: 1 per hour, b: 2 per hour.
    let r = c.should_rate_limit(ask(&both)).await.unwrap().into_inner();
    assert_eq!(codes(&r), (ok, vec![ok, ok]));
    // a is over; b is not: the descriptor says OVER_LIMIT, the request is OK.
    let r = c.should_rate_limit(ask(&both)).await.unwrap().into_inner();
    assert_eq!(codes(&r), (ok, vec![over, ok]));
    let md = r.dynamic_metadata.clone().expect("dynamic metadata");
    let json = floodgate_server::json_rls::response_to_json(&r);
    let md_json = &json["dynamicMetadata"];
    assert_eq!(md_json["quotaModeEnabled"], serde_json::json!(true), "{json}");
    assert_eq!(md_json["quotaModeViolations"], serde_json::json!([0]), "{json}");
    assert_eq!(md_json["domain"], serde_json::json!("q"));
    assert_eq!(md_json["descriptors"][1]["entries"], serde_json::json!(["backend=b"]));
    // Only b passed: its metadata is merged in, a's is not.
    assert_eq!(md_json["backend"], serde_json::json!("b"), "{json}");
    assert!(md_json.get("weight").is_none(), "{json}");
    assert_eq!(md.fields.len(), 5, "{json}");
    // Both over: the request is over.
    let r = c.should_rate_limit(ask(&both)).await.unwrap().into_inner();
    assert_eq!(codes(&r), (over, vec![over, over]));
    // A lone quota-mode descriptor over is every quota-mode descriptor over.
    let r = c.should_rate_limit(ask(&[("backend", "a")])).await.unwrap().into_inner();
    assert_eq!(codes(&r), (over, vec![over]));
    // A descriptor not in quota mode counts as usual beside them.
    let r = c.should_rate_limit(ask(&[("backend", "a"), ("user", "u")])).await.unwrap().into_inner();
    assert_eq!(codes(&r), (over, vec![over, ok]), "every quota descriptor is over");
    let r = c.should_rate_limit(ask(&[("user", "u")])).await.unwrap().into_inner();
    assert_eq!(codes(&r), (ok, vec![ok]));
    let md = floodgate_server::json_rls::response_to_json(&r);
    assert_eq!(md["dynamicMetadata"]["quotaModeEnabled"], serde_json::json!(false), "{md}");
    assert!(md["dynamicMetadata"].get("quotaModeViolations").is_none(), "{md}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_dynamic_metadata_unless_asked() {
    let s = start(QUOTA).await;
    let mut c = s.client().await;
    let r = c.should_rate_limit(request("q", vec![desc(&[("backend", "a")])])).await.unwrap().into_inner();
    assert!(r.dynamic_metadata.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_rule_metrics_named_as_the_reference() {
    let yaml = "
domain: m
descriptors:
  - key: path
    value: /login
    descriptors:
      - key: user
        rate_limit: {unit: hour, requests_per_unit: 5}
  - key: client
    detailed_metric: true
    rate_limit: {unit: hour, requests_per_unit: 1}
  - key: tenant
    value_to_metric: true
    descriptors:
      - key: route
        rate_limit: {unit: hour, requests_per_unit: 100}
  - key: shadow
    shadow_mode: true
    rate_limit: {unit: hour, requests_per_unit: 1}
";
    let s = common::start_tuned(yaml, None, false, 0, |st| st.metrics.set_max_rule_keys(3)).await;
    let mut c = s.client().await;
    let hit = |entries: &[(&str, &str)], addend: u32| {
        let mut r = request("m", vec![desc(entries)]);
        r.hits_addend = addend;
        r
    };
    for _ in 0..6 {
        c.should_rate_limit(hit(&[("path", "/login"), ("user", "alice")], 1)).await.unwrap();
    }
    c.should_rate_limit(hit(&[("path", "/login"), ("user", "bob")], 2)).await.unwrap();
    c.should_rate_limit(hit(&[("client", "c1")], 1)).await.unwrap();
    c.should_rate_limit(hit(&[("client", "c1")], 1)).await.unwrap();
    c.should_rate_limit(hit(&[("tenant", "t1"), ("route", "r1")], 1)).await.unwrap();
    c.should_rate_limit(hit(&[("shadow", "x")], 1)).await.unwrap();
    c.should_rate_limit(hit(&[("shadow", "x")], 1)).await.unwrap();
    // Two more request-derived keys: past the bound of 3 (c1, t1 and c2 fit), c3 overflows.
    c.should_rate_limit(hit(&[("client", "c2")], 1)).await.unwrap();
    c.should_rate_limit(hit(&[("client", "c3")], 1)).await.unwrap();
    let text = reqwest::get(format!("{}/metrics", s.base)).await.unwrap().text().await.unwrap();
    let value = |family: &str, key: &str| -> u64 {
        let line = format!("floodgate_rls_rule_{family}_total{{domain=\"m\",key=\"{key}\"}} ");
        text.lines()
            .find_map(|l| l.strip_prefix(&line))
            .unwrap_or_else(|| panic!("no {line} in\n{text}"))
            .parse()
            .unwrap()
    };
    // One key for the rule, whatever the user: 6 alice + 2 bob = 8 hits. Limit 5, near past 4: alice's 5th is
    // near, her 6th over; bob's counter is his own (2 of 5 used: within, not near).
    assert_eq!(value("total_hits", "m.path_/login.user"), 8);
    assert_eq!(value("within_limit", "m.path_/login.user"), 7);
    assert_eq!(value("near_limit", "m.path_/login.user"), 1);
    assert_eq!(value("over_limit", "m.path_/login.user"), 1);
    // detailed_metric: the request's value.
    assert_eq!(value("total_hits", "m.client_c1"), 2);
    assert_eq!(value("over_limit", "m.client_c1"), 1);
    // value_to_metric on the parent: its value, the child as configured.
    assert_eq!(value("within_limit", "m.tenant_t1.route"), 1);
    assert_eq!(value("shadow_mode", "m.shadow"), 1);
    assert_eq!(value("over_limit", "m.shadow"), 1);
    assert_eq!(value("total_hits", "m.client_c2"), 1);
    assert_eq!(value("total_hits", "__overflow__"), 1);
    assert!(!text.contains("m.client_c3"), "{text}");
    assert!(text.contains("floodgate_rls_rule_keys_overflow_total 1"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn current_limit_of_a_30s_window_is_per_minute() {
    let s = start(
        "domain: w\ndescriptors:\n  - key: k\n    rate_limit: {window: 30s, requests_per_unit: 2}\n  - key: five\n    rate_limit: {unit: minute, unit_multiplier: 5, requests_per_unit: 3}\n",
    )
    .await;
    let mut c = s.client().await;
    let r = c.should_rate_limit(request("w", vec![desc(&[("k", "x")]), desc(&[("five", "x")])])).await.unwrap();
    let r = r.into_inner();
    let limit = |i: usize| {
        let l = r.statuses[i].current_limit.as_ref().unwrap();
        (l.unit, l.requests_per_unit, r.statuses[i].limit_remaining)
    };
    // 2 per 30s = 4 per minute (each minute holds exactly two epoch-aligned windows); remaining stays per window.
    assert_eq!(limit(0), (rate_limit::Unit::Minute as i32, 4, 1));
    // 3 per 5 minutes = 36 per hour.
    assert_eq!(limit(1), (rate_limit::Unit::Hour as i32, 36, 2));
    assert!(r.statuses[0].duration_until_reset.unwrap().seconds <= 30);
}

/// A rule can pick the exact sliding window: `limit` in every span of the window, wherever it starts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sliding_log_rule() {
    let yaml = "
domain: log
descriptors:
  - key: k
    rate_limit: {unit: hour, requests_per_unit: 2, algorithm: sliding_log}
";
    let s = start(yaml).await;
    let mut c = s.client().await;
    let mut codes = Vec::new();
    for _ in 0..3 {
        let r = c.should_rate_limit(request("log", vec![desc(&[("k", "a")])])).await.unwrap().into_inner();
        codes.push((r.statuses[0].code, r.statuses[0].limit_remaining));
    }
    let (ok, over) = (Code::Ok as i32, Code::OverLimit as i32);
    assert_eq!(codes, [(ok, 1), (ok, 0), (over, 0)]);
    // Empty again an hour after the last admitted hit (logged rounded up to the ms), not at an hour boundary.
    let r = c.should_rate_limit(request("log", vec![desc(&[("k", "a")])])).await.unwrap().into_inner();
    let reset = r.statuses[0].duration_until_reset.unwrap();
    assert!((3598..=3600).contains(&reset.seconds), "{reset:?}");
}

/// Issue 19, defect 10: a request body that is not a valid protobuf is the caller's error: INVALID_ARGUMENT (3),
/// not INTERNAL (13).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_fails_to_decode_is_invalid_argument() {
    let s =
        common::start("domain: d\ndescriptors:\n  - key: k\n    rate_limit: {unit: second, requests_per_unit: 1}\n")
            .await;
    let client = reqwest::Client::builder().http2_prior_knowledge().build().unwrap();
    // One length-prefixed message whose bytes are not a protobuf (a field tag of 0 is invalid).
    let mut body = vec![0u8, 0, 0, 0, 4];
    body.extend_from_slice(&[0, 0xff, 0xff, 0xff]);
    let res = client
        .post(format!("http://{}/envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit", s.grpc))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(body)
        .send()
        .await
        .unwrap();
    let status = res.headers().get("grpc-status").map(|v| v.to_str().unwrap().to_owned());
    assert_eq!(status.as_deref(), Some("3"), "{:?}", res.headers());
}

const RESET: &str = "
domain: z
descriptors:
  - key: a
    rate_limit: {unit: hour, requests_per_unit: 1}
  - key: b
    rate_limit: {unit: hour, requests_per_unit: 10}
  - key: g
    rate_limit: {unit: hour, requests_per_unit: 5, algorithm: gcra, burst: 5}
  - key: t
    rate_limit: {unit: hour, requests_per_unit: 5, algorithm: token_bucket, burst: 5}
  - key: s
    rate_limit: {unit: hour, requests_per_unit: 5, algorithm: sliding_window}
";

/// `duration_until_reset` is never 0 for a live window (issue 16, item 1): a check with `hits_addend: 0` and a
/// descriptor beside one that denied the request report the time left in the hour, as the reference does, on
/// every algorithm. `atomic`: the store counts a denied batch not at all (in memory), else each descriptor's hit
/// stands alone (Redis: `Store::hit_all_is_atomic` is false).
async fn duration_until_reset_is_never_zero(s: &common::TestServer, atomic: bool) {
    let mut c = s.client().await;
    let live = |d: Option<Duration>, what: &str| {
        let d = d.unwrap_or_else(|| panic!("{what}: no duration_until_reset"));
        assert!(d.seconds > 0 || d.nanos > 0, "{what}: {d:?}");
        // A sliding window's state empties a window after its current one ends.
        assert!(d.seconds <= 7200, "{what}: {d:?}");
    };
    for key in ["a", "b", "g", "t", "s"] {
        let mut check = desc(&[(key, "fresh")]);
        check.hits_addend = Some(UInt64Value { value: 0 });
        let r = c.should_rate_limit(request("z", vec![check])).await.unwrap().into_inner();
        assert_eq!(r.statuses[0].code, Code::Ok as i32, "{key}");
        live(r.statuses[0].duration_until_reset, &format!("a check of {key}"));
    }
    let r = c.should_rate_limit(request("z", vec![desc(&[("a", "x")])])).await.unwrap().into_inner();
    assert_eq!(r.overall_code, Code::Ok as i32);
    for key in ["b", "g", "t", "s"] {
        let r = c.should_rate_limit(request("z", vec![desc(&[("a", "x")]), desc(&[(key, "y")])])).await.unwrap();
        let r = r.into_inner();
        assert_eq!((r.overall_code, r.statuses[1].code), (Code::OverLimit as i32, Code::Ok as i32), "{key}");
        live(r.statuses[0].duration_until_reset, "the denied descriptor");
        let full = if key == "b" { 10 } else { 5 };
        let left = if atomic { full } else { full - 1 };
        assert_eq!(r.statuses[1].limit_remaining, left, "{key}: counted only if the store is not atomic");
        live(r.statuses[1].duration_until_reset, &format!("{key}, beside a denial"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duration_until_reset_is_never_zero_in_memory() {
    duration_until_reset_is_never_zero(&start(RESET).await, true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duration_until_reset_is_never_zero_on_redis() {
    let redis = common::RedisChild::start();
    let store = redis.store().await;
    let backend = floodgate_server::state::Backend::Dyn(std::sync::Arc::new(store));
    duration_until_reset_is_never_zero(&common::start_on(RESET, backend).await, false).await;
}
