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
        seen.secondary_backoff = true;
    }
}

/// GitHub's rule for secondary limits that come back: "if your request continues to fail due to a secondary rate
/// limit, wait for an exponentially increasing amount of time between retries". One per bucket: each response
/// whose wait is the one-minute rule ([`Observation::secondary_backoff`]) doubles the wait from
/// [`SECONDARY_BACKOFF`] (60 s, 120 s, 240 s, ... at most [`SecondaryBackoff::MAX`]); a success (a status below
/// 400) starts again from 60 s. Waits the upstream gave (`retry-after`, a reset) are left as they are. Pure: the
/// caller keeps one per bucket ([`crate::Upstream`] does, per route).
///
/// ```
/// use floodgate_upstream::headers::{Provider, SecondaryBackoff, header_map, parse_at};
/// use std::time::{Duration, SystemTime};
///
/// let mut backoff = SecondaryBackoff::default();
/// let limited = header_map([("x-ratelimit-remaining", "12")]);
/// let mut waits = Vec::new();
/// for _ in 0..3 {
///     let mut seen = parse_at(Provider::Github, 429, &limited, SystemTime::UNIX_EPOCH);
///     backoff.apply(&mut seen);
///     waits.push(seen.retry_after.map(|d| d.as_secs()));
/// }
/// assert_eq!(waits, [Some(60), Some(120), Some(240)]);
/// let mut ok = parse_at(Provider::Github, 200, &limited, SystemTime::UNIX_EPOCH);
/// backoff.apply(&mut ok);
/// assert_eq!(backoff.strikes(), 0);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SecondaryBackoff {
    strikes: u32,
}

impl SecondaryBackoff {
    /// The longest back-off (an hour; GitHub names no bound).
    pub const MAX: Duration = Duration::from_secs(3600);

    /// Secondary limits in a row that the one-minute rule answered, since the last success.
    pub fn strikes(&self) -> u32 {
        self.strikes
    }

    /// The wait of the `strikes`-th such limit in a row (1: 60 s).
    pub fn wait(strikes: u32) -> Duration {
        let doublings = strikes.saturating_sub(1).min(16);
        SECONDARY_BACKOFF.saturating_mul(1 << doublings).min(SecondaryBackoff::MAX)
    }

    /// Applies the rule to one response (in the order they arrive): lengthens `seen.retry_after` when it is the
    /// one-minute rule, counts it, and starts again on a success.
    pub fn apply(&mut self, seen: &mut Observation) {
        if seen.secondary_backoff {
            self.strikes = self.strikes.saturating_add(1);
            seen.retry_after = Some(SecondaryBackoff::wait(self.strikes));
        } else if seen.status < 400 {
            self.strikes = 0;
        }
    }
}
