//! Bounded fuzzing inside the normal test suite (no nightly needed): the config parser and the RLS request
//! path must never panic, whatever they are given.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::{Arc, OnceLock};

use envoy_types::pb::envoy::extensions::common::ratelimit::v3::{RateLimitDescriptor, rate_limit_descriptor::Entry};
use envoy_types::pb::envoy::service::ratelimit::v3::RateLimitRequest;
use envoy_types::pb::google::protobuf::UInt64Value;
use floodgate::MemoryStore;
use floodgate_server::config::{BUILTIN_YAML, Config};
use floodgate_server::rls::Rls;
use floodgate_server::state::{AppState, Backend, ConfigSource};
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

fn rls() -> &'static (tokio::runtime::Runtime, Rls) {
    static RLS: OnceLock<(tokio::runtime::Runtime, Rls)> = OnceLock::new();
    RLS.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let yaml = BUILTIN_YAML;
        let path = std::env::temp_dir().join(format!("floodgate-fuzz-{}.yaml", std::process::id()));
        std::fs::write(&path, yaml).unwrap();
        let state = AppState::new(ConfigSource::Path(path), Backend::Memory(MemoryStore::new()), None, false).unwrap();
        (rt, Rls::new(Arc::new(state)))
    })
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

proptest! {
    #![proptest_config(config())]

    #[test]
    fn rls_requests_never_panic(domain in word(), descriptors in prop::collection::vec(descriptor(), 0..5), addend in any::<u32>()) {
        let (rt, rls) = rls();
        let req = RateLimitRequest { domain, descriptors, hits_addend: addend };
        match rt.block_on(rls.decide(&req)) {
            Ok(res) => prop_assert_eq!(res.statuses.len(), req.descriptors.len()),
            Err(status) => prop_assert_eq!(status.code(), tonic::Code::InvalidArgument, "{}", status.message()),
        }
    }
}
