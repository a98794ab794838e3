//! The IETF `RateLimit` and `RateLimit-Policy` fields, draft-ietf-httpapi-ratelimit-headers-11.
//!
//! Both are structured-field Lists (RFC 9651) of Items, each a policy name (a String) with parameters:
//! `RateLimit-Policy: "burst";q=100;w=60` (quota `q` per window `w` seconds) and `RateLimit: "burst";r=5;t=30`
//! (`r` remaining, `t` seconds until reset). A field that does not parse is ignored whole, as the draft says; so is
//! an item without its required parameter (`q`, `r`). With several policies, the most restrictive one (the least
//! remaining) is reported, with the quota of the policy of the same name.

use std::time::Duration;

use http::HeaderMap;
use sfv::{BareItem, ListEntry, Parser};

use super::Observation;

struct Entry {
    name: String,
    a: u64,
    b: Option<u64>,
}

/// Every value of `name` joined into one List (a field may be split over several lines).
fn list(headers: &HeaderMap, name: &str, first: &str, second: &str) -> Vec<Entry> {
    let mut joined = String::new();
    for v in headers.get_all(name) {
        let Ok(v) = v.to_str() else { return Vec::new() };
        if !joined.is_empty() {
            joined.push_str(", ");
        }
        joined.push_str(v);
    }
    if joined.trim().is_empty() {
        return Vec::new();
    }
    let Ok(parsed) = Parser::new(joined.as_str()).parse_list::<sfv::List>() else { return Vec::new() };
    parsed
        .into_iter()
        .filter_map(|entry| {
            let ListEntry::Item(item) = entry else { return None };
            let name = match &item.bare_item {
                BareItem::String(s) => s.as_str().to_owned(),
                BareItem::Token(t) => t.as_str().to_owned(),
                _ => return None,
            };
            let param = |key: &str| {
                item.params
                    .iter()
                    .find(|(k, _)| k.as_str() == key)
                    .and_then(|(_, v)| v.as_integer())
                    .and_then(|i| u64::try_from(i64::from(i)).ok())
            };
            Some(Entry { name, a: param(first)?, b: param(second) })
        })
        .collect()
}

pub(super) fn parse(headers: &HeaderMap) -> Observation {
    let policies = list(headers, "ratelimit-policy", "q", "w");
    let limits = list(headers, "ratelimit", "r", "t");
    let mut seen = Observation::default();
    if let Some(tightest) = limits.iter().min_by_key(|e| e.a) {
        seen.remaining = Some(tightest.a);
        seen.reset_after = tightest.b.map(Duration::from_secs);
        seen.limit = policies.iter().find(|p| p.name == tightest.name).map(|p| p.a);
        seen.resource = Some(tightest.name.clone());
    } else if let Some(policy) = policies.iter().min_by_key(|p| p.a) {
        seen.limit = Some(policy.a);
        seen.resource = Some(policy.name.clone());
    }
    seen
}
