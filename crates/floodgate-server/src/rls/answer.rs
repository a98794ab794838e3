//! The answer side: each status's limit, durations, the response headers and the dynamic metadata.

use super::*;

/// The response's dynamic metadata (`--response-dynamic-metadata`, the reference's
/// `RESPONSE_DYNAMIC_METADATA`): `domain`, `descriptors` (`[{entries: ["key=value", ...]}]`), `hitsAddend`
/// (when set), `quotaModeEnabled`, `quotaModeViolations` (indices of the quota-mode descriptors over their
/// limit, when any), then the `metadata` of every rule whose descriptor is under its limit, merged in request
/// order (a later rule's key replaces an earlier one's; the keys above are never replaced).
pub(super) fn dynamic_metadata(
    req: &RateLimitRequest,
    quota_mode: bool,
    violations: &[usize],
    passed: &[Arc<serde_json::Map<String, serde_json::Value>>],
) -> protobuf::Struct {
    use protobuf::value::Kind;
    let string = |s: String| protobuf::Value { kind: Some(Kind::StringValue(s)) };
    let number = |n: f64| protobuf::Value { kind: Some(Kind::NumberValue(n)) };
    let list =
        |values: Vec<protobuf::Value>| protobuf::Value { kind: Some(Kind::ListValue(protobuf::ListValue { values })) };
    let mut fields = std::collections::HashMap::new();
    for md in passed {
        for (k, v) in md.iter() {
            fields.insert(k.clone(), json_to_proto(v));
        }
    }
    fields.insert("domain".to_owned(), string(req.domain.clone()));
    let descriptors = req
        .descriptors
        .iter()
        .map(|d| {
            let entries = d.entries.iter().map(|e| string(format!("{}={}", e.key, e.value))).collect();
            let mut f = std::collections::HashMap::new();
            f.insert("entries".to_owned(), list(entries));
            protobuf::Value { kind: Some(Kind::StructValue(protobuf::Struct { fields: f })) }
        })
        .collect();
    fields.insert("descriptors".to_owned(), list(descriptors));
    if req.hits_addend != 0 {
        fields.insert("hitsAddend".to_owned(), number(f64::from(req.hits_addend)));
    }
    fields.insert("quotaModeEnabled".to_owned(), protobuf::Value { kind: Some(Kind::BoolValue(quota_mode)) });
    if !violations.is_empty() {
        let v = violations.iter().map(|i| number(*i as f64)).collect();
        fields.insert("quotaModeViolations".to_owned(), list(v));
    }
    protobuf::Struct { fields }
}

/// A JSON value as a `google.protobuf.Value`.
pub(super) fn json_to_proto(v: &serde_json::Value) -> protobuf::Value {
    use protobuf::value::Kind;
    use serde_json::Value as J;
    let kind = match v {
        J::Null => Kind::NullValue(0),
        J::Bool(b) => Kind::BoolValue(*b),
        J::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or(0.0)),
        J::String(s) => Kind::StringValue(s.clone()),
        J::Array(a) => Kind::ListValue(protobuf::ListValue { values: a.iter().map(json_to_proto).collect() }),
        J::Object(o) => Kind::StructValue(protobuf::Struct {
            fields: o.iter().map(|(k, v)| (k.clone(), json_to_proto(v))).collect(),
        }),
    };
    protobuf::Value { kind: Some(kind) }
}

/// The rate-limit headers describing `status` (the request's tightest limit) in the `style` asked for.
/// `quota` is the limit per `window` (the `current_limit` may be scaled to a whole unit).
pub(super) fn rate_limit_headers(
    style: ResponseHeaders,
    status: &DescriptorStatus,
    window: Duration,
    quota: u32,
) -> Vec<HeaderValue> {
    let Some(limit) = &status.current_limit else { return Vec::new() };
    let reset = status.duration_until_reset.map_or(0, |d| {
        let secs = u64::try_from(d.seconds).unwrap_or(0);
        if d.nanos > 0 { secs + 1 } else { secs }
    });
    let remaining = status.limit_remaining;
    let header = |key: &str, value: String| HeaderValue { key: key.into(), value, ..Default::default() };
    let three = |prefix: &str| {
        vec![
            header(&format!("{prefix}Limit"), quota.to_string()),
            header(&format!("{prefix}Remaining"), remaining.to_string()),
            header(&format!("{prefix}Reset"), reset.to_string()),
        ]
    };
    match style {
        ResponseHeaders::Off => Vec::new(),
        ResponseHeaders::Draft => three("RateLimit-"),
        ResponseHeaders::XRateLimit => three("X-RateLimit-"),
        ResponseHeaders::Ietf => {
            let name = if limit.name.is_empty() { "default" } else { &limit.name };
            // An sf-string holds printable ASCII only, with `"` and `\` escaped.
            let name: String = name
                .chars()
                .filter(|c| (' '..='~').contains(c))
                .flat_map(|c| if c == '"' || c == '\\' { vec!['\\', c] } else { vec![c] })
                .collect();
            let w = window.as_secs().max(1);
            vec![
                header("RateLimit-Policy", format!("\"{name}\";q={quota};w={w}")),
                header("RateLimit", format!("\"{name}\";r={remaining};t={reset}")),
            ]
        }
    }
}

pub(super) fn current_limit(limit: &RateLimit) -> rate_limit_response::RateLimit {
    rate_limit_response::RateLimit {
        name: limit.name.to_string(),
        requests_per_unit: limit.report_requests_per_unit,
        unit: limit.report_unit.map_or(rate_limit::Unit::Unknown, proto_unit) as i32,
    }
}

pub(super) fn proto_unit(unit: Unit) -> rate_limit::Unit {
    match unit {
        Unit::Second => rate_limit::Unit::Second,
        Unit::Minute => rate_limit::Unit::Minute,
        Unit::Hour => rate_limit::Unit::Hour,
        Unit::Day => rate_limit::Unit::Day,
        Unit::Week => rate_limit::Unit::Week,
        Unit::Month => rate_limit::Unit::Month,
        Unit::Year => rate_limit::Unit::Year,
    }
}

pub(super) fn proto_duration(d: Duration) -> protobuf::Duration {
    protobuf::Duration {
        seconds: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        nanos: i32::try_from(d.subsec_nanos()).unwrap_or(0),
    }
}

/// The time until `d`'s state is empty again; for a counter that holds nothing yet (a check with
/// `hits_addend: 0`, or a descriptor not counted because another one denied the request) the time until its
/// window ends, as the reference reports it: never 0 for a live window.
pub(super) fn until_reset(d: &floodgate::Decision, window: Duration) -> Duration {
    if d.reset_after.is_zero() { until_window_end(window) } else { d.reset_after }
}

/// The time until the epoch-aligned `window` holding now ends.
pub(super) fn until_window_end(window: Duration) -> Duration {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_micros();
    let w = window.as_micros().max(1);
    Duration::from_micros(u64::try_from(w - now % w).unwrap_or(0))
}
