//! The reference service's `POST /json`: a `RateLimitRequest` in proto3 JSON, answered with the
//! `RateLimitResponse` in proto3 JSON, HTTP 200 when `OK` and 429 when `OVER_LIMIT`.
//!
//! ```json
//! {"domain": "edge", "descriptors": [{"entries": [{"key": "user", "value": "alice"}]}], "hitsAddend": 1}
//! ```
//!
//! Fields take their proto3 JSON names (`hitsAddend`, `requestsPerUnit`) or their proto names (`hits_addend`,
//! `requests_per_unit`); unknown fields are refused (400). A descriptor's `limit` override is
//! `{"requestsPerUnit": N, "unit": "MINUTE"}`. Zero values are left out of the answer, as proto3 JSON does.

use envoy_types::pb::envoy::extensions::common::ratelimit::v3::RateLimitDescriptor;
use envoy_types::pb::envoy::extensions::common::ratelimit::v3::rate_limit_descriptor::{Entry, RateLimitOverride};
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_response::{Code, rate_limit};
use envoy_types::pb::envoy::service::ratelimit::v3::{RateLimitRequest, RateLimitResponse};
use envoy_types::pb::envoy::r#type::v3::RateLimitUnit;
use envoy_types::pb::google::protobuf::UInt64Value;
use serde_json::{Map, Value, json};

/// Reads a proto3-JSON `RateLimitRequest`.
pub fn request_from_json(v: &Value) -> Result<RateLimitRequest, String> {
    let obj = fields(v, "request", &["domain", "descriptors", "hitsAddend", "hits_addend"])?;
    let domain = match obj.get("domain") {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(_) => return Err("domain: expected a string".into()),
    };
    let hits_addend = match get(obj, "hitsAddend", "hits_addend") {
        None => 0,
        Some(v) => u32::try_from(uint(v, "hitsAddend")?).map_err(|_| "hitsAddend: too large".to_owned())?,
    };
    let descriptors = match obj.get("descriptors") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) => {
            items.iter().enumerate().map(|(i, d)| descriptor(d, i)).collect::<Result<Vec<_>, String>>()?
        }
        Some(_) => return Err("descriptors: expected an array".into()),
    };
    Ok(RateLimitRequest { domain, descriptors, hits_addend })
}

fn descriptor(v: &Value, i: usize) -> Result<RateLimitDescriptor, String> {
    let at = format!("descriptors[{i}]");
    let obj = fields(v, &at, &["entries", "limit", "hitsAddend", "hits_addend"])?;
    let entries = match obj.get("entries") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) => items
            .iter()
            .enumerate()
            .map(|(j, e)| {
                let at = format!("{at}.entries[{j}]");
                let e = fields(e, &at, &["key", "value"])?;
                let s = |k: &str| match e.get(k) {
                    None | Some(Value::Null) => Ok(String::new()),
                    Some(Value::String(s)) => Ok(s.clone()),
                    Some(_) => Err(format!("{at}.{k}: expected a string")),
                };
                Ok(Entry { key: s("key")?, value: s("value")? })
            })
            .collect::<Result<Vec<_>, String>>()?,
        Some(_) => return Err(format!("{at}.entries: expected an array")),
    };
    let limit = match obj.get("limit") {
        None | Some(Value::Null) => None,
        Some(l) => {
            let at = format!("{at}.limit");
            let l = fields(l, &at, &["requestsPerUnit", "requests_per_unit", "unit"])?;
            let rpu = get(l, "requestsPerUnit", "requests_per_unit").map_or(Ok(0), |v| uint(v, &at))?;
            let unit = match l.get("unit") {
                None | Some(Value::Null) => RateLimitUnit::Unknown as i32,
                Some(Value::String(s)) => {
                    RateLimitUnit::from_str_name(s).ok_or_else(|| format!("{at}.unit: unknown unit {s:?}"))? as i32
                }
                Some(v) => i32::try_from(uint(v, &at)?).map_err(|_| format!("{at}.unit: too large"))?,
            };
            Some(RateLimitOverride {
                requests_per_unit: u32::try_from(rpu).map_err(|_| format!("{at}.requestsPerUnit: too large"))?,
                unit,
            })
        }
    };
    let hits_addend = get(obj, "hitsAddend", "hits_addend").map(|v| uint(v, &at)).transpose()?;
    Ok(RateLimitDescriptor {
        entries,
        limit,
        hits_addend: hits_addend.map(|value| UInt64Value { value }),
        ..Default::default()
    })
}

fn fields<'v>(v: &'v Value, at: &str, allowed: &[&str]) -> Result<&'v Map<String, Value>, String> {
    let Value::Object(obj) = v else { return Err(format!("{at}: expected an object")) };
    if let Some(k) = obj.keys().find(|k| !allowed.contains(&k.as_str())) {
        return Err(format!("{at}: unknown field {k:?}"));
    }
    Ok(obj)
}

fn get<'v>(obj: &'v Map<String, Value>, json_name: &str, proto_name: &str) -> Option<&'v Value> {
    obj.get(json_name).or_else(|| obj.get(proto_name)).filter(|v| !v.is_null())
}

/// A proto3-JSON unsigned integer: a number, or a string of digits (how 64-bit integers are written).
fn uint(v: &Value, at: &str) -> Result<u64, String> {
    match v {
        Value::Number(n) => n.as_u64().ok_or_else(|| format!("{at}: expected an unsigned integer")),
        Value::String(s) => s.parse().map_err(|_| format!("{at}: expected an unsigned integer")),
        _ => Err(format!("{at}: expected an unsigned integer")),
    }
}

/// Writes a `RateLimitResponse` in proto3 JSON (zero values left out).
pub fn response_to_json(r: &RateLimitResponse) -> Value {
    let code = |c: i32| Code::try_from(c).unwrap_or(Code::Unknown).as_str_name();
    let statuses: Vec<Value> = r
        .statuses
        .iter()
        .map(|s| {
            let mut o = Map::new();
            o.insert("code".into(), json!(code(s.code)));
            if let Some(l) = &s.current_limit {
                let mut cl = Map::new();
                if !l.name.is_empty() {
                    cl.insert("name".into(), json!(l.name));
                }
                if l.requests_per_unit != 0 {
                    cl.insert("requestsPerUnit".into(), json!(l.requests_per_unit));
                }
                let unit = rate_limit::Unit::try_from(l.unit).unwrap_or(rate_limit::Unit::Unknown);
                cl.insert("unit".into(), json!(unit.as_str_name()));
                o.insert("currentLimit".into(), Value::Object(cl));
            }
            if s.limit_remaining != 0 {
                o.insert("limitRemaining".into(), json!(s.limit_remaining));
            }
            if let Some(d) = &s.duration_until_reset {
                let text = if d.nanos == 0 {
                    format!("{}s", d.seconds)
                } else {
                    format!("{}.{:09}s", d.seconds, d.nanos).trim_end_matches('0').to_owned()
                };
                o.insert("durationUntilReset".into(), json!(text));
            }
            Value::Object(o)
        })
        .collect();
    let mut out = json!({ "overallCode": code(r.overall_code), "statuses": statuses });
    if let (Some(md), Some(obj)) = (&r.dynamic_metadata, out.as_object_mut()) {
        obj.insert("dynamicMetadata".into(), struct_to_json(md));
    }
    out
}

/// A `google.protobuf.Struct` in proto3 JSON.
fn struct_to_json(s: &envoy_types::pb::google::protobuf::Struct) -> Value {
    Value::Object(s.fields.iter().map(|(k, v)| (k.clone(), proto_value_to_json(v))).collect())
}

fn proto_value_to_json(v: &envoy_types::pb::google::protobuf::Value) -> Value {
    use envoy_types::pb::google::protobuf::value::Kind;
    match &v.kind {
        None | Some(Kind::NullValue(_)) => Value::Null,
        Some(Kind::NumberValue(n)) => serde_json::Number::from_f64(*n).map_or(Value::Null, |n| {
            // Whole numbers as integers, as Go's protojson writes them.
            match n.as_f64() {
                Some(f) if f.fract() == 0.0 && f.abs() < 9.0e15 => json!(f as i64),
                _ => Value::Number(n),
            }
        }),
        Some(Kind::StringValue(s)) => json!(s),
        Some(Kind::BoolValue(b)) => json!(b),
        Some(Kind::StructValue(s)) => struct_to_json(s),
        Some(Kind::ListValue(l)) => Value::Array(l.values.iter().map(proto_value_to_json).collect()),
    }
}
