//! Discord: <https://discord.com/developers/docs/topics/rate-limits>.
//!
//! `X-RateLimit-Limit`, `-Remaining`, `-Reset` (epoch seconds, with a fraction), `-Reset-After` (seconds, with a
//! fraction: preferred, as it is relative), `-Bucket` (the bucket id shared by routes), `-Global` (`true` on a
//! global 429) and `-Scope` (`user`, `global` or `shared`).

use std::time::{SystemTime, UNIX_EPOCH};

use http::HeaderMap;

use super::{Observation, integer, seconds, text, until};

pub(super) fn parse(headers: &HeaderMap, reference: SystemTime) -> Observation {
    let reset_after = text(headers, "x-ratelimit-reset-after").and_then(seconds).or_else(|| {
        let at = text(headers, "x-ratelimit-reset").and_then(seconds)?;
        UNIX_EPOCH.checked_add(at).map(|at| until(at, reference))
    });
    let scope = text(headers, "x-ratelimit-scope").filter(|s| !s.is_empty()).map(str::to_owned);
    let global = text(headers, "x-ratelimit-global").is_some_and(|g| g.eq_ignore_ascii_case("true"))
        || scope.as_deref() == Some("global");
    Observation {
        limit: integer(headers, "x-ratelimit-limit"),
        remaining: integer(headers, "x-ratelimit-remaining"),
        reset_after,
        bucket: text(headers, "x-ratelimit-bucket").filter(|b| !b.is_empty()).map(str::to_owned),
        global,
        scope,
        ..Observation::default()
    }
}
