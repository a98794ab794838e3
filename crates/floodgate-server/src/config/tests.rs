//! The config reader's tests.

use super::*;

fn errors(src: &str) -> Vec<String> {
    match Config::from_str("t.yaml", src) {
        Ok(_) => Vec::new(),
        Err(ConfigError::Invalid(issues)) => issues.iter().map(ToString::to_string).collect(),
        Err(e) => vec![e.to_string()],
    }
}

#[test]
fn builtin_loads() {
    let cfg = Config::builtin();
    assert!(cfg.is_ok(), "{cfg:?}");
}

#[test]
fn nested_matching() {
    let src = "domain: d
descriptors:
  - key: a
    rate_limit: {unit: second, requests_per_unit: 1}
    descriptors:
      - key: b
        value: x
        rate_limit: {unit: minute, requests_per_unit: 2, algorithm: gcra, burst: 3}
      - key: b
        rate_limit: {unlimited: true}
  - key: a
    value: special
  - key: z
    rate_limit: {unit: day, requests_per_unit: 0}
";
    let cfg = Config::from_str("t.yaml", src).map_err(|e| e.to_string());
    let cfg = cfg.as_ref().map_err(String::as_str).expect("valid");
    let d = cfg.domain("d").expect("domain");
    assert_eq!(d.find([("a", "1")]).map(|r| &*r.path), Some("a"));
    assert_eq!(d.find([("a", "1"), ("b", "x")]).map(|r| &*r.path), Some("a/b=x"));
    assert_eq!(d.find([("a", "1"), ("b", "y")]).map(|r| &*r.path), Some("a/b"));
    assert!(d.find([("a", "special")]).is_none(), "an exact entry with no limit exempts its value");
    assert!(d.find([("a", "1"), ("b", "x"), ("c", "1")]).is_none());
    assert!(d.find([("b", "x")]).is_none());
    assert!(matches!(
        d.find([("z", "q")]).and_then(|r| r.rate_limit.as_ref()).map(|l| &l.kind),
        Some(LimitKind::DenyAll)
    ));
    let Some(LimitKind::Limited(p)) =
        d.find([("a", "1"), ("b", "x")]).and_then(|r| r.rate_limit.as_ref()).map(|l| &l.kind)
    else {
        panic!("limited")
    };
    assert_eq!((p.limit(), p.capacity(), p.name()), (2, 3, Some("rls:d/a/b=x")));
}

#[test]
fn errors_name_line_and_field() {
    let e = errors(
        "domain: d\ndescriptors:\n  - key: k\n    rate_limit:\n      unit: second\n      requests_per_unit: 1.5\n",
    );
    assert_eq!(
        e,
        vec!["t.yaml:6:26: descriptors[0].rate_limit.requests_per_unit: expected a whole number, found \"1.5\""]
    );
    let e = errors("domain: d\ndescriptors:\n  - key: k\n    colour: red\n");
    assert_eq!(e.len(), 1);
    assert!(e[0].starts_with("t.yaml:4:5: descriptors[0].colour: unknown field"), "{e:?}");
    let e = errors("domain: d\ndescriptors:\n  - key: k\n    rate_limit: {unlimited: true, unit: second}\n");
    assert!(e[0].contains("rate_limit.unit: not allowed beside `unlimited: true`"), "{e:?}");
    let e = errors("domain: d\ndescriptors:\n  - key: k\n  - key: k\n");
    assert!(e[0].contains("duplicate rule"), "{e:?}");
    let e = errors("domain: d\ndescriptors:\n  - value: v\n");
    assert!(e[0].contains("descriptors[0].key: missing"), "{e:?}");
    let e = errors("domain: \"\"\n");
    assert!(e[0].contains("domain: must not be empty"), "{e:?}");
    let e = errors("domain: d\ndescriptors:\n  - key: k\n    rate_limit: {unit: second, requests_per_unit: \"5\"}\n");
    assert!(e[0].contains("the quoted string"), "{e:?}");
    let e =
        errors("domain: d\ndescriptors:\n  - key: k\n    rate_limit: {unit: second, requests_per_unit: 5, burst: 2}\n");
    assert!(e[0].contains("takes no burst"), "{e:?}");
    let e = errors("domain: [\n");
    assert!(e[0].starts_with("t.yaml:"), "{e:?}");
    let e = errors("policies:\n  \"rls:x\": {limit: 10, window: 1s}\n");
    assert!(e[0].contains("reserved"), "{e:?}");
    let e = errors("policies:\n  api: {limit: 10, window: 1x}\n");
    assert!(e[0].contains("policies.api.window: bad window"), "{e:?}");
    assert!(errors("").iter().any(|e| e.contains("empty")));
}

#[test]
fn wildcards_between_exact_and_key_only() {
    let src = "domain: d
descriptors:
  - key: p
    rate_limit: {unit: second, requests_per_unit: 1}
  - key: p
    value: /api/*
    rate_limit: {unit: second, requests_per_unit: 2}
  - key: p
    value: /api/users
    rate_limit: {unit: second, requests_per_unit: 3}
  - key: p
    value: /api/*/x
    rate_limit: {unit: second, requests_per_unit: 4}
  - key: p
    value: '*.png'
    share_threshold: true
    rate_limit: {unit: second, requests_per_unit: 5}
  - key: p
    value: /v*/users
    descriptors:
      - key: u
        rate_limit: {unit: second, requests_per_unit: 6}
";
    let cfg = Config::from_str("t.yaml", src).map_err(|e| e.to_string());
    let cfg = cfg.as_ref().map_err(String::as_str).expect("valid");
    let d = cfg.domain("d").expect("domain");
    let path = |e: &[(&str, &str)]| d.find(e.iter().copied()).map(|r| r.path.to_string());
    assert_eq!(path(&[("p", "/api/users")]).as_deref(), Some("p=/api/users"), "exact first");
    assert_eq!(path(&[("p", "/api/a/x")]).as_deref(), Some("p=/api/*"), "then wildcards in file order");
    assert_eq!(path(&[("p", "a.png")]).as_deref(), Some("p=*.png"));
    assert_eq!(path(&[("p", "/other")]).as_deref(), Some("p"), "then the key-only rule");
    assert_eq!(path(&[("p", "/v2/users"), ("u", "1")]).as_deref(), Some("p=/v*/users/u"));
    // No backtracking: /v2/users lands on the wildcard rule, which has no `z` child.
    assert_eq!(path(&[("p", "/v2/users"), ("z", "1")]), None);
    // The wildcard rule has no limit of its own.
    assert_eq!(path(&[("p", "/v2/users")]), None);
    let m = d.find_match([("p", "x.png")]).expect("match");
    assert_eq!(m.shared, vec![(0, "*.png")]);
    assert!(d.find_match([("p", "/api/q")]).expect("match").shared.is_empty());

    let e = errors("domain: d\ndescriptors:\n  - key: k\n    value: v\n    share_threshold: true\n");
    assert_eq!(
        e,
        vec!["t.yaml:5:22: descriptors[0].share_threshold: only allowed on a rule whose value holds a `*` wildcard"]
    );
    let e = errors("domain: d\ndescriptors:\n  - key: k\n    value: a*\n  - key: k\n    value: a*\n");
    assert!(e[0].contains("descriptors[1]: duplicate rule"), "{e:?}");
    let e = errors("domain: d\ndescriptors:\n  - key: k\n    value: a*\n    share_threshold: 1\n");
    assert!(e[0].contains("descriptors[0].share_threshold: expected true or false"), "{e:?}");
}

#[test]
fn windows_of_any_length() {
    let src = "domain: d
descriptors:
  - key: a
    rate_limit: {unit: minute, unit_multiplier: 5, requests_per_unit: 1}
  - key: b
    rate_limit: {window: 30s, requests_per_unit: 1}
  - key: c
    rate_limit: {window: 2h, requests_per_unit: 0}
  - key: d
    rate_limit: {unit: month, requests_per_unit: 1}
  - key: e
    rate_limit: {window: 1500ms, requests_per_unit: 1, algorithm: sliding_window}
";
    let cfg = Config::from_str("t.yaml", src).map_err(|e| e.to_string());
    let cfg = cfg.as_ref().map_err(String::as_str).expect("valid");
    let d = cfg.domain("d").expect("domain");
    let limit = |k: &str| d.find([(k, "x")]).and_then(|r| r.rate_limit.clone()).expect("limit");
    let secs = Duration::from_secs;
    assert_eq!((limit("a").window, limit("a").unit), (secs(300), Some(Unit::Minute)));
    assert_eq!((limit("b").window, limit("b").unit), (secs(30), Some(Unit::Second)));
    assert_eq!((limit("c").window, limit("c").unit), (secs(7200), Some(Unit::Hour)));
    assert!(matches!(limit("c").kind, LimitKind::DenyAll));
    assert_eq!(limit("d").window, secs(30 * 86_400));
    let LimitKind::Limited(p) = limit("a").kind else { panic!("limited") };
    assert_eq!(p.window(), secs(300));
    let LimitKind::Limited(p) = limit("e").kind else { panic!("limited") };
    assert_eq!(p.window(), Duration::from_millis(1500));

    let rl = |body: &str| errors(&format!("domain: d\ndescriptors:\n  - key: k\n    rate_limit: {{{body}}}\n"));
    let e = rl("unit: second, unit_multiplier: 0, requests_per_unit: 1");
    assert_eq!(e, vec!["t.yaml:4:49: descriptors[0].rate_limit.unit_multiplier: must be at least 1"]);
    let e = rl("unit: second, unit_multiplier: 1.5, requests_per_unit: 1");
    assert!(e[0].contains("rate_limit.unit_multiplier: expected a whole number"), "{e:?}");
    let e = rl("window: 30x, requests_per_unit: 1");
    assert!(e[0].contains("t.yaml:4:26: descriptors[0].rate_limit.window: bad window"), "{e:?}");
    let e = rl("window: 0s, requests_per_unit: 1");
    assert!(e[0].contains("rate_limit.window: bad window"), "{e:?}");
    let e = rl("window: 30s, unit: second, requests_per_unit: 1");
    assert!(e[0].contains("rate_limit.window: not allowed beside `unit`"), "{e:?}");
    let e = rl("unlimited: true, window: 30s");
    assert!(e[0].contains("rate_limit.window: not allowed beside `unlimited: true`"), "{e:?}");
    let e = rl("requests_per_unit: 1");
    assert!(e[0].contains("rate_limit.unit: missing"), "{e:?}");
    let e = rl("unit: year, unit_multiplier: 11, requests_per_unit: 1");
    assert!(e[0].contains("longer than the maximum"), "{e:?}");
}

#[test]
fn replaces_is_checked() {
    let ok = Config::from_str(
        "t.yaml",
        "domain: d\ndescriptors:\n  - key: k\n    rate_limit: {unit: second, requests_per_unit: 1, name: a, replaces: [{name: b}, {name: c}]}\n",
    );
    let ok = ok.map_err(|e| e.to_string()).expect("valid");
    let rl = ok.domain("d").and_then(|d| d.find([("k", "x")])).and_then(|r| r.rate_limit.clone()).expect("limit");
    assert_eq!(rl.replaces, vec![Arc::<str>::from("b"), Arc::from("c")]);
    let rl = |body: &str| {
        errors(&format!(
            "domain: d\ndescriptors:\n  - key: k\n    rate_limit: {{unit: second, requests_per_unit: 1, {body}}}\n"
        ))
    };
    let e = rl("name: a, replaces: [{name: a}]");
    assert_eq!(
        e,
        vec!["t.yaml:4:81: descriptors[0].rate_limit.replaces[0].name: a limit cannot replace itself (\"a\")"]
    );
    let e = rl("replaces: [{name: \"\"}]");
    assert!(e[0].contains("rate_limit.replaces[0].name: must not be empty"), "{e:?}");
    let e = rl("replaces: [{}]");
    assert!(e[0].contains("rate_limit.replaces[0].name: missing"), "{e:?}");
    let e = rl("replaces: [{name: b, colour: red}]");
    assert!(e[0].contains("rate_limit.replaces[0].colour: unknown field"), "{e:?}");
    let e = rl("replaces: b");
    assert!(e[0].contains("rate_limit.replaces: expected a sequence"), "{e:?}");
}

#[test]
fn empty_value_is_no_value_and_detailed_metric_is_accepted() {
    let src = "domain: d\ndescriptors:\n  - key: k\n    value: ''\n    detailed_metric: true\n    rate_limit: {unit: second, requests_per_unit: 1}\n";
    let cfg = Config::from_str("t.yaml", src).map_err(|e| e.to_string()).expect("valid");
    let rule = cfg.domain("d").and_then(|d| d.find([("k", "anything")])).expect("key-only rule");
    assert!(rule.value.is_none() && rule.detailed_metric);
    let e = errors("domain: d\ndescriptors:\n  - key: k\n    value: ''\n  - key: k\n");
    assert!(e[0].contains("duplicate rule: key \"k\" without a value"), "{e:?}");
    let e = errors("domain: d\ndescriptors:\n  - key: k\n    detailed_metric: maybe\n");
    assert!(e[0].contains("descriptors[0].detailed_metric: expected true or false"), "{e:?}");
}

/// What the reference's loader accepts loads here too, each with a warning naming file, line and field.
#[test]
fn what_the_reference_accepts_loads_with_a_warning() {
    let warnings = |src: &str| -> Vec<String> {
        let cfg = Config::from_str("w.yaml", src).map_err(|e| e.to_string()).expect("loads");
        cfg.warnings.iter().map(ToString::to_string).collect()
    };
    // No requests_per_unit: 0, every request over.
    let src = "domain: d\ndescriptors:\n  - key: k\n    rate_limit:\n      unit: second\n";
    let w = warnings(src);
    assert_eq!(w.len(), 1, "{w:?}");
    assert!(
        w[0].starts_with("w.yaml:5:") && w[0].contains("rate_limit.requests_per_unit: missing: read as 0"),
        "{w:?}"
    );
    let cfg = Config::from_str("w.yaml", src).expect("loads");
    let rule = cfg.domain("d").and_then(|d| d.find([("k", "v")])).expect("rule");
    assert!(matches!(rule.rate_limit.as_ref().map(|l| &l.kind), Some(LimitKind::DenyAll)), "{rule:?}");
    // requests_per_unit beside unlimited: ignored.
    let src =
        "domain: d\ndescriptors:\n  - key: k\n    rate_limit:\n      unlimited: true\n      requests_per_unit: 5\n";
    let w = warnings(src);
    assert!(w[0].starts_with("w.yaml:6:") && w[0].contains("ignored beside `unlimited: true`"), "{w:?}");
    let cfg = Config::from_str("w.yaml", src).expect("loads");
    let rule = cfg.domain("d").and_then(|d| d.find([("k", "v")])).expect("rule");
    assert!(matches!(rule.rate_limit.as_ref().map(|l| &l.kind), Some(LimitKind::Unlimited)), "{rule:?}");
    // YAML 1.1 booleans, wherever a boolean goes.
    for (word, b) in [("yes", true), ("on", true), ("Y", true), ("no", false), ("off", false), ("NO", false)] {
        let src = format!(
            "domain: d\ndescriptors:\n  - key: k\n    shadow_mode: {word}\n    rate_limit: {{unit: second, requests_per_unit: 1}}\n"
        );
        let w = warnings(&src);
        assert!(w[0].starts_with("w.yaml:4:") && w[0].contains(&format!("`{word}` read as {b}")), "{w:?}");
        let cfg = Config::from_str("w.yaml", &src).expect("loads");
        let rule = cfg.domain("d").and_then(|d| d.find([("k", "v")])).expect("rule");
        assert_eq!(rule.shadow_mode, b, "{word}");
    }
    // A config written plainly has none.
    assert!(warnings(BUILTIN_YAML).is_empty());
}

#[test]
fn quota_mode_value_to_metric_and_metadata() {
    let src = "domain: d
descriptors:
  - key: k
    value: v
    quota_mode: true
    value_to_metric: true
    metadata:
      backend: gpt-5
      weight: 2
      ratio: 0.5
      on: true
      quoted: \"7\"
      tags: [a, b]
      nested: {x: ~}
    rate_limit: {unit: second, requests_per_unit: 1}
";
    let cfg = Config::from_str("t.yaml", src).map_err(|e| e.to_string()).expect("valid");
    let d = cfg.domain("d").expect("domain");
    let rule = d.find([("k", "v")]).expect("rule");
    assert!(rule.quota_mode && rule.value_to_metric && d.value_to_metric);
    assert_eq!(&*rule.stats_key, "d.k_v");
    let md = serde_json::Value::Object((**rule.metadata.as_ref().expect("metadata")).clone());
    assert_eq!(
        md,
        serde_json::json!({"backend": "gpt-5", "weight": 2, "ratio": 0.5, "on": true, "quoted": "7",
                "tags": ["a", "b"], "nested": {"x": null}})
    );
    let e = errors("domain: d\ndescriptors:\n  - key: k\n    metadata: [a]\n");
    assert_eq!(e, vec!["t.yaml:4:15: descriptors[0].metadata: expected a mapping, found a sequence"]);
    let e = errors("domain: d\ndescriptors:\n  - key: k\n    metadata: {a: 1, a: 2}\n");
    assert!(e[0].contains("descriptors[0].metadata.a: field given twice"), "{e:?}");
    let e = errors("domain: d\ndescriptors:\n  - key: k\n    quota_mode: 1\n");
    assert!(e[0].contains("descriptors[0].quota_mode: expected true or false"), "{e:?}");
    let e = errors(
        "domain: d\ndescriptors:\n  - key: k\n    rate_limit: {unit: second, requests_per_unit: 1, metadata: {}}\n",
    );
    assert!(e[0].contains("rate_limit.metadata: unknown field"), "{e:?}");
    let big = (0..=MAX_METADATA_NODES).map(|i| format!("k{i}: 1")).collect::<Vec<_>>().join(", ");
    let e = errors(&format!("domain: d\ndescriptors:\n  - key: k\n    metadata: {{{big}}}\n"));
    assert!(e[0].contains("metadata holds more than"), "{e:?}");
}

#[test]
fn merge_domains_joins_files_that_share_a_domain() {
    let dir = std::env::temp_dir().join(format!("floodgate-merge-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let write = |name: &str, src: &str| std::fs::write(dir.join(name), src).expect("write");
    write("a.yaml", "domain: d\ndescriptors:\n  - key: x\n    rate_limit: {unit: second, requests_per_unit: 1}\n");
    write(
        "b.yaml",
        "domain: d\ndescriptors:\n  - key: y\n    rate_limit: {unit: second, requests_per_unit: 2}\n  - key: x\n    value: v*\n",
    );
    let e = Config::load(&dir).map(|_| ()).map_err(|e| e.to_string()).expect_err("one domain twice");
    assert!(e.contains("b.yaml:1:9: domain: domain \"d\" is already defined in"), "{e}");
    let cfg = Config::load_with(&dir, true).map_err(|e| e.to_string()).expect("merged");
    let d = cfg.domain("d").expect("domain");
    assert_eq!(d.find([("x", "1")]).map(|r| &*r.path), Some("x"));
    assert_eq!(d.find([("y", "1")]).map(|r| &*r.path), Some("y"));
    assert!(d.find([("x", "vv")]).is_none(), "b.yaml's wildcard exemption joined a.yaml's key");
    write("c.yaml", "domain: d\ndescriptors:\n  - key: q\n  - key: y\n");
    let e = Config::load_with(&dir, true).map(|_| ()).map_err(|e| e.to_string()).expect_err("duplicate");
    assert!(e.contains("c.yaml:4:"), "{e}");
    assert!(
            e.contains("descriptors: duplicate rule: key \"y\" without a value is already defined by an earlier file of domain \"d\""),
            "{e}"
        );
    assert!(!e.contains("\"q\""), "{e}");
    std::fs::remove_dir_all(&dir).expect("cleanup");
}

#[test]
fn long_names_are_hashed() {
    let a = rule_policy_name("d", &"a".repeat(300));
    let b = rule_policy_name("d", &format!("{}b", "a".repeat(299)));
    assert_ne!(a, b);
    assert!(a.len() <= Policy::MAX_NAME_LEN);
    let uni = rule_policy_name("d", &"é".repeat(300));
    assert!(uni.len() <= Policy::MAX_NAME_LEN);
}

/// An issue is one line even when the key it names was written across lines (found by `tests/fuzz.rs`).
#[test]
fn an_issue_is_one_line_whatever_its_key_holds() {
    let e = errors("domain: d\ndescriptors:\n  - key: k\n    rate_limit: {unit: second, request-|\n\ns_per_unit: 5}\n");
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(!e[0].contains('\n'), "{e:?}");
    assert!(e[0].contains("rate_limit.request-|\\ns_per_unit: unknown field"), "{e:?}");
    assert!(e[0].starts_with("t.yaml:4:"), "{e:?}");
}
