//! The request side: what a request may carry (`validate`), its counters' ids, and limit overrides.

use super::*;

pub(super) fn validate(req: &RateLimitRequest) -> Result<(), String> {
    if req.domain.is_empty() {
        return Err("domain must not be empty".into());
    }
    if req.domain.len() > 1024 {
        return Err("domain is longer than 1024 bytes".into());
    }
    if req.descriptors.is_empty() {
        return Err("descriptors must not be empty".into());
    }
    if req.descriptors.len() > MAX_DESCRIPTORS {
        return Err(format!("more than {MAX_DESCRIPTORS} descriptors"));
    }
    for (i, d) in req.descriptors.iter().enumerate() {
        if d.entries.is_empty() {
            return Err(format!("descriptors[{i}] has no entries"));
        }
        if d.entries.len() > MAX_ENTRIES {
            return Err(format!("descriptors[{i}] has more than {MAX_ENTRIES} entries"));
        }
        let bytes: usize = d.entries.iter().map(|e| e.key.len() + e.value.len()).sum();
        if bytes > MAX_DESCRIPTOR_BYTES {
            return Err(format!("descriptors[{i}] holds more than {MAX_DESCRIPTOR_BYTES} bytes of keys and values"));
        }
    }
    Ok(())
}

/// The counter id of a descriptor: the domain, then each entry's key and value, each prefixed by its length
/// (u32, big-endian), so no two different descriptors share a counter.
///
/// ```
/// use envoy_types::pb::envoy::extensions::common::ratelimit::v3::{RateLimitDescriptor, rate_limit_descriptor::Entry};
/// use floodgate_server::rls::counter_id;
/// let d = |k: &str, v: &str| RateLimitDescriptor {
///     entries: vec![Entry { key: k.into(), value: v.into() }],
///     ..Default::default()
/// };
/// assert_ne!(counter_id("a", &d("b", "c")), counter_id("ab", &d("", "c")));
/// ```
pub fn counter_id(domain: &str, desc: &RateLimitDescriptor) -> Vec<u8> {
    counter_id_shared(domain, desc, &[])
}

/// [`counter_id`], with the value of each entry listed in `shared` (`(index, pattern)`, ascending) replaced by
/// its pattern: the counter of a wildcard rule with `share_threshold: true`.
pub fn counter_id_shared(domain: &str, desc: &RateLimitDescriptor, shared: &[(usize, &str)]) -> Vec<u8> {
    let len: usize = desc.entries.iter().map(|e| e.key.len() + e.value.len() + 8).sum::<usize>() + domain.len() + 4;
    let mut id = Vec::with_capacity(len);
    let mut put = |s: &str| {
        // Lengths are bounded by validate(), far below u32::MAX.
        id.extend_from_slice(&u32::try_from(s.len()).unwrap_or(u32::MAX).to_be_bytes());
        id.extend_from_slice(s.as_bytes());
    };
    put(domain);
    let mut shared = shared.iter().peekable();
    for (i, e) in desc.entries.iter().enumerate() {
        put(&e.key);
        match shared.next_if(|(j, _)| *j == i) {
            Some((_, pattern)) => put(pattern),
            None => put(&e.value),
        }
    }
    id
}

/// The limit of a descriptor's `limit` override: a fixed window of `requests_per_unit` per `unit`, counted on
/// the descriptor's own counter (its actual values), never in shadow mode, named `""` and replacing nothing.
pub(super) fn override_limit(domain: &str, o: &RateLimitOverride) -> Result<RateLimit, Status> {
    let unit = match RateLimitUnit::try_from(o.unit) {
        Ok(RateLimitUnit::Second) => Unit::Second,
        Ok(RateLimitUnit::Minute) => Unit::Minute,
        Ok(RateLimitUnit::Hour) => Unit::Hour,
        Ok(RateLimitUnit::Day) => Unit::Day,
        Ok(RateLimitUnit::Month) => Unit::Month,
        Ok(RateLimitUnit::Year) => Unit::Year,
        _ => return Err(Status::invalid_argument(format!("limit override with an unknown unit ({})", o.unit))),
    };
    let kind = if o.requests_per_unit == 0 {
        LimitKind::DenyAll
    } else {
        // A name no config path can produce (NUL), so the override's state is its own, per unit.
        let name = rule_policy_name(domain, &format!("\u{0}override/{}", unit.name()));
        let policy = Policy::new(Algorithm::FixedWindow, u64::from(o.requests_per_unit), unit.window())
            .and_then(|p| p.named(name))
            .map_err(|e| Status::invalid_argument(format!("limit override: {e}")))?;
        LimitKind::Limited(policy)
    };
    Ok(RateLimit {
        name: Arc::from(""),
        unit: Some(unit),
        window: unit.window(),
        requests_per_unit: o.requests_per_unit,
        report_unit: Some(unit),
        report_requests_per_unit: o.requests_per_unit,
        algorithm: Algorithm::FixedWindow,
        replaces: Vec::new(),
        kind,
    })
}

/// The reference's stats key of a limit override: the domain, then each entry's `key_value` (`key` when the
/// value is empty), joined with `.`.
pub(super) fn override_metric_key(domain: &str, desc: &RateLimitDescriptor) -> String {
    let mut key = String::from(domain);
    for e in &desc.entries {
        key.push('.');
        key.push_str(&e.key);
        if !e.value.is_empty() {
            key.push('_');
            key.push_str(&e.value);
        }
    }
    key
}
