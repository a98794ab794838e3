//! Bounded fuzzing inside the normal test suite (no nightly needed): the config parser, the RLS request path
//! (as a request and as protobuf bytes), the proto3-JSON mapping of `POST /json` and the HTTP API's JSON bodies
//! must never panic or fail the server, whatever they are given (the checks are `floodgate_server::fuzzing`'s).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::OnceLock;

use envoy_types::pb::envoy::extensions::common::ratelimit::v3::{RateLimitDescriptor, rate_limit_descriptor::Entry};
use envoy_types::pb::envoy::service::ratelimit::v3::RateLimitRequest;
use envoy_types::pb::google::protobuf::UInt64Value;
use floodgate_server::config::Config;
use floodgate_server::fuzzing::{Harness, POST_ROUTES};
use proptest::prelude::*;

const VALID: &str = "domain: d
descriptors:
  - key: a
    value: x
    shadow_mode: true
    rate_limit: {unit: second, requests_per_unit: 5, algorithm: gcra, burst: 2, name: n}
    descriptors:
      - key: b
        rate_limit:
          unlimited: true
  - key: c
    rate_limit: {unit: year, requests_per_unit: 0}
policies:
  p: {limit: 10, window: 1m, algorithm: token_bucket, burst: 3}
";

/// Cases per property: `FLOODGATE_FUZZ_CASES` (default 3000, about a second each in a debug build).
fn config() -> ProptestConfig {
    let cases = std::env::var("FLOODGATE_FUZZ_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(3000);
    ProptestConfig { cases, failure_persistence: None, ..ProptestConfig::default() }
}

const TOKENS: &[&str] = &[
    "domain",
    "descriptors",
    "key",
    "value",
    "rate_limit",
    "unit",
    "requests_per_unit",
    "unlimited",
    "shadow_mode",
    "algorithm",
    "burst",
    "name",
    "policies",
    "limit",
    "window",
    ":",
    ": ",
    " ",
    "\n",
    "  ",
    "    ",
    "- ",
    "{",
    "}",
    "[",
    "]",
    ",",
    "true",
    "false",
    "0",
    "1",
    "4294967296",
    "18446744073709551616",
    "second",
    "month",
    "gcra",
    "fixed_window",
    "\"",
    "'",
    "&a ",
    "*a",
    "!!str ",
    "!!int ",
    "---\n",
    "...\n",
    "# c\n",
    "1s",
    "500ms",
    "-1",
    "1.5",
    "~",
    "null",
    "|\n",
    ">\n",
    "\t",
    "?",
    "é",
    "\u{feff}",
    "\0",
    "%YAML 1.2\n",
    "<<: ",
];

fn tokens() -> impl Strategy<Value = String> {
    prop::collection::vec(prop::sample::select(TOKENS), 0..120).prop_map(|t| t.concat())
}

/// A valid config with a few random edits: reaches the validation code behind the parser.
fn mutated() -> impl Strategy<Value = String> {
    prop::collection::vec((0..VALID.len(), 0..8usize, prop::sample::select(TOKENS)), 1..4).prop_map(|edits| {
        let mut s = VALID.as_bytes().to_vec();
        for (at, del, ins) in edits {
            let at = at.min(s.len());
            let end = (at + del).min(s.len());
            s.splice(at..end, ins.bytes());
        }
        String::from_utf8_lossy(&s).into_owned()
    })
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..1024)) {
        let _ = Config::from_str("fuzz.yaml", &String::from_utf8_lossy(&bytes));
    }

    #[test]
    fn config_like_text_never_panics(src in tokens()) {
        if let Err(e) = Config::from_str("fuzz.yaml", &src) {
            // Every error names the file.
            prop_assert!(e.to_string().starts_with("fuzz.yaml"), "{}", e);
        }
    }

    #[test]
    fn mutated_configs_never_panic(src in mutated()) {
        if let Err(e) = Config::from_str("fuzz.yaml", &src) {
            prop_assert!(e.to_string().lines().all(|l| l.starts_with("fuzz.yaml")), "{}", e);
        }
    }
}

fn harness() -> &'static Harness {
    static HARNESS: OnceLock<Harness> = OnceLock::new();
    HARNESS.get_or_init(|| Harness::new().unwrap())
}

fn word() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(&["default", "remote_address", "generic_key", "user", "", "x"][..]).prop_map(String::from),
        ".{0,12}",
    ]
}

prop_compose! {
    fn descriptor()(entries in prop::collection::vec((word(), word()), 0..4), addend in prop::option::of(0u64..u64::MAX), neg in any::<bool>()) -> RateLimitDescriptor {
        RateLimitDescriptor {
            entries: entries.into_iter().map(|(key, value)| Entry { key, value }).collect(),
            limit: None,
            hits_addend: addend.map(|value| UInt64Value { value }),
            is_negative_hits: neg,
        }
    }
}

/// The field names and values the JSON bodies use, so generated objects reach the code behind the parsers.
const JSON_KEYS: &[&str] = &[
    "id",
    "policy",
    "cost",
    "limit",
    "window",
    "algorithm",
    "burst",
    "domain",
    "descriptors",
    "entries",
    "key",
    "value",
    "hitsAddend",
    "hits_addend",
    "requestsPerUnit",
    "requests_per_unit",
    "unit",
    "bucket",
    "provider",
    "max_wait_ms",
    "status",
    "headers",
    "lease",
    "latency_ms",
    "retry-after",
    "x-ratelimit-remaining",
];
const JSON_STRINGS: &[&str] = &[
    "",
    "api",
    "login",
    "x",
    "default",
    "remote_address",
    "1m",
    "1s",
    "0s",
    "gcra",
    "fixed_window",
    "token_bucket",
    "MINUTE",
    "SECOND",
    "discord",
    "github",
    "ietf",
    "retry-after",
    "\u{0}x",
    "18446744073709551616",
    "-1",
    "é",
    "2",
];

/// The fields of each body, so some generated objects have a body's whole shape.
const SHAPES: &[&[&str]] = &[
    &["id", "policy", "cost"],
    &["limit", "window", "algorithm", "burst"],
    &["domain", "descriptors", "hitsAddend"],
    &["entries", "limit", "hitsAddend"],
    &["key", "value"],
    &["requestsPerUnit", "unit"],
    &["bucket", "provider", "max_wait_ms"],
    &["bucket", "provider", "status", "headers", "lease", "latency_ms"],
];

fn json_leaf() -> impl Strategy<Value = serde_json::Value> {
    use serde_json::Value;
    prop_oneof![
        1 => Just(Value::Null),
        1 => any::<bool>().prop_map(Value::Bool),
        1 => any::<u64>().prop_map(Value::from),
        3 => (0u64..1000).prop_map(Value::from),
        1 => any::<i64>().prop_map(Value::from),
        1 => any::<f64>().prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        4 => prop::sample::select(JSON_STRINGS).prop_map(Value::from),
        2 => ".{0,20}".prop_map(Value::from),
    ]
}

/// Any JSON value, leaning on the bodies' own field names and shapes.
fn json_value() -> impl Strategy<Value = serde_json::Value> {
    use serde_json::Value;
    json_leaf().prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            2 => (prop::sample::select(SHAPES), prop::collection::vec((any::<bool>(), inner.clone()), 6)).prop_map(
                |(shape, values)| {
                    let fields = shape.iter().zip(values).filter(|(_, (keep, _))| *keep);
                    Value::Object(fields.map(|(k, (_, v))| ((*k).to_owned(), v)).collect())
                }
            ),
            1 => prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            1 => prop::collection::vec((prop::sample::select(JSON_KEYS), inner), 0..6)
                .prop_map(|kv| Value::Object(kv.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())),
        ]
    })
}

/// A value for the field `key`: usually of the type and range the field takes, else any value.
fn field(key: &'static str) -> BoxedStrategy<serde_json::Value> {
    use serde_json::{Value, json};
    let s = |xs: &'static [&'static str]| prop::sample::select(xs).prop_map(Value::from).boxed();
    let typed = match key {
        "id" | "bucket" => prop_oneof![s(&["alice", "bob", "x", "", "\u{0}x"]), ".{0,8}".prop_map(Value::from)].boxed(),
        "policy" => prop_oneof![
            s(&["default", "per_second", "nope", ""]),
            (0u64..20, s(&["1s", "1m", "0s", "2h", "x"]), s(&["gcra", "token_bucket", "fixed_window", "sliding_window", "?"]), 0u64..5)
                .prop_map(|(limit, window, algorithm, burst)| json!({"limit": limit, "window": window, "algorithm": algorithm, "burst": burst})),
        ]
        .boxed(),
        "cost" | "hitsAddend" | "max_wait_ms" | "latency_ms" => (0u64..5).prop_map(Value::from).boxed(),
        "status" => prop_oneof![Just(json!(200)), Just(json!(429)), (0u64..700).prop_map(Value::from)].boxed(),
        "provider" => s(&["discord", "github", "ietf", "retry-after", "x"]),
        "domain" => s(&["default", "other", ""]),
        "descriptors" => prop::collection::vec(
            (prop::collection::vec((s(&["remote_address", "generic_key", "user", "x"]), s(&["a", "b", ""])), 0..3), 0u64..3),
            0..4,
        )
        .prop_map(|ds| {
            let ds = ds.into_iter().map(|(entries, addend)| {
                let entries: Vec<Value> = entries.into_iter().map(|(k, v)| json!({"key": k, "value": v})).collect();
                json!({"entries": entries, "hitsAddend": addend})
            });
            Value::Array(ds.collect())
        })
        .boxed(),
        "headers" => prop::collection::vec((s(&["retry-after", "x-ratelimit-remaining", "x-ratelimit-reset-after", "ratelimit", "x-ratelimit-bucket"]), s(&["0", "1", "2.5", "abc", "r=1, t=2"])), 0..4)
            .prop_map(|hs| Value::Object(hs.into_iter().map(|(k, v)| (k.as_str().unwrap_or_default().to_owned(), v)).collect()))
            .boxed(),
        _ => json_leaf().boxed(),
    };
    prop_oneof![3 => typed, 1 => json_value()].boxed()
}

/// The fields of each of [`POST_ROUTES`]' bodies, in that order.
const ROUTE_SHAPES: &[&[&str]] = &[
    &["id", "policy", "cost"],
    &["id", "policy"],
    &["id"],
    &["domain", "descriptors", "hitsAddend"],
    &["bucket", "provider", "max_wait_ms"],
    &["bucket", "provider", "status", "headers", "lease", "latency_ms"],
    &[],
];

/// A JSON body for `POST_ROUTES[route]`: mostly an object of the route's own fields (each present 7 times in 8),
/// else any value; sometimes with bytes spliced in.
fn body_for(route: usize) -> impl Strategy<Value = Vec<u8>> {
    let value = prop_oneof![
        1 => json_value(),
        3 => ROUTE_SHAPES[route]
            .iter()
            .map(|k| (0..8u8, field(k)).prop_map(move |(keep, v)| (keep > 0).then(|| ((*k).to_owned(), v))))
            .collect::<Vec<_>>()
            .prop_map(|fields| serde_json::Value::Object(fields.into_iter().flatten().collect())),
    ];
    (value, any::<u16>(), prop::collection::vec(any::<u8>(), 0..4), 0..8u8).prop_map(|(v, at, junk, spoil)| {
        let mut bytes = serde_json::to_vec(&v).unwrap();
        if spoil == 0 {
            let at = usize::from(at) % (bytes.len() + 1);
            bytes.splice(at..at, junk);
        }
        bytes
    })
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn rls_requests_never_panic(domain in word(), descriptors in prop::collection::vec(descriptor(), 0..5), addend in any::<u32>()) {
        let req = RateLimitRequest { domain, descriptors, hits_addend: addend };
        if let Err(e) = harness().rls_request(&req) {
            prop_assert!(false, "{}", e);
        }
    }

    #[test]
    fn rls_wire_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        if let Err(e) = harness().rls_wire(&bytes) {
            prop_assert!(false, "{}", e);
        }
    }

    #[test]
    fn encoded_rls_requests_survive_the_wire(domain in word(), descriptors in prop::collection::vec(descriptor(), 0..5), addend in any::<u32>()) {
        use prost::Message;
        let bytes = RateLimitRequest { domain, descriptors, hits_addend: addend }.encode_to_vec();
        if let Err(e) = harness().rls_wire(&bytes) {
            prop_assert!(false, "{}", e);
        }
    }

    #[test]
    fn proto3_json_requests_map_both_ways(body in body_for(3)) {
        if let Err(e) = harness().rls_json(&body) {
            prop_assert!(false, "{}", e);
        }
    }

    #[test]
    fn http_json_bodies_never_fail_the_server((route, body) in (0..POST_ROUTES.len()).prop_flat_map(|r| (Just(r), body_for(r)))) {
        if let Err(e) = harness().http(route, &body) {
            prop_assert!(false, "{}", e);
        }
    }
}
