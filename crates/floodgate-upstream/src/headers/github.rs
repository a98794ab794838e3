//! GitHub: <https://docs.github.com/en/rest/using-the-rest-api/rate-limits-for-the-rest-api>.
//!
//! `x-ratelimit-limit`, `-remaining`, `-used`, `-resource`, and `-reset` in epoch seconds, turned into a duration
//! against the response's `Date` (else the local clock). Secondary limits follow GitHub's documented rules: honour
//! `retry-after`; else, when `x-ratelimit-remaining` is 0, wait until the reset; else wait at least one minute.
//! The one-minute rule applies to a 429, and to a 403 only when it carries a rate-limit sign (`retry-after` or a
//! remaining of 0): a plain 403 is a permission error, not a limit.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::HeaderMap;

use super::{Observation, integer, text, until};

/// GitHub's "wait at least one minute" for a secondary limit without other guidance.
pub const SECONDARY_BACKOFF: Duration = Duration::from_secs(60);

pub(super) fn parse(headers: &HeaderMap, reference: SystemTime) -> Observation {
    let reset_after = integer(headers, "x-ratelimit-reset")
        .and_then(|secs| UNIX_EPOCH.checked_add(Duration::from_secs(secs)))
        .map(|at| until(at, reference));
    Observation {
        limit: integer(headers, "x-ratelimit-limit"),
        remaining: integer(headers, "x-ratelimit-remaining"),
        reset_after,
        used: integer(headers, "x-ratelimit-used"),
        resource: text(headers, "x-ratelimit-resource").filter(|r| !r.is_empty()).map(str::to_owned),
        ..Observation::default()
    }
}

/// The secondary-limit rules, after `Retry-After` has been read.
pub(super) fn secondary_rules(seen: &mut Observation) {
    if !matches!(seen.status, 403 | 429) || seen.retry_after.is_some() {
        return;
    }
    if seen.remaining == Some(0) {
        seen.retry_after = Some(seen.reset_after.unwrap_or(SECONDARY_BACKOFF));
    } else if seen.status == 429 {
        seen.retry_after = Some(SECONDARY_BACKOFF);
    }
}
