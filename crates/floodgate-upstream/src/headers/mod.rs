//! Pure parsers of the rate-limit headers that upstream APIs send: no I/O, no clock read unless you ask for one.
//!
//! The provider is chosen by the user ([`Provider`]), never guessed from the headers. Every parser turns a status
//! code and a header map into one [`Observation`]; a malformed header is treated as absent, never a panic.
//! `Retry-After` (delta seconds or an HTTP date) is read by every provider and wins over everything else.
//!
//! ```
//! use floodgate_upstream::headers::{Provider, parse_at};
//! use http::HeaderMap;
//! use std::time::{Duration, SystemTime};
//!
//! let mut headers = HeaderMap::new();
//! headers.insert("x-ratelimit-remaining", "4".parse()?);
//! headers.insert("x-ratelimit-reset-after", "1.25".parse()?);
//! headers.insert("x-ratelimit-bucket", "abcd1234".parse()?);
//! let seen = parse_at("discord".parse()?, 200, &headers, SystemTime::now());
//! assert_eq!(seen.remaining, Some(4));
//! assert_eq!(seen.reset_after, Some(Duration::from_millis(1250)));
//! assert_eq!(seen.bucket.as_deref(), Some("abcd1234"));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod discord;
mod github;
mod ietf;
mod retry_after;

use std::fmt;
use std::str::FromStr;
use std::time::{Duration, SystemTime};

use http::HeaderMap;

pub use github::{SECONDARY_BACKOFF, SecondaryBackoff};
pub use retry_after::parse_retry_after;

/// Which rate-limit headers the upstream sends. Chosen by the user: headers are never sniffed.
///
/// ```
/// use floodgate_upstream::headers::Provider;
///
/// assert_eq!("github".parse::<Provider>().unwrap(), Provider::Github);
/// assert_eq!(Provider::RetryAfter.to_string(), "retry-after");
/// assert!("GitHub".parse::<Provider>().is_err()); // exact names only
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Provider {
    /// Discord: `X-RateLimit-Limit/-Remaining/-Reset/-Reset-After/-Bucket/-Global/-Scope`.
    Discord,
    /// GitHub: `x-ratelimit-limit/-remaining/-reset/-used/-resource`, and its rules for secondary limits.
    Github,
    /// The IETF `RateLimit` and `RateLimit-Policy` structured fields (draft-ietf-httpapi-ratelimit-headers-11).
    Ietf,
    /// Only `Retry-After` (every other provider reads it too).
    RetryAfter,
}

impl Provider {
    /// Every provider, in the order of their names.
    pub const ALL: [Provider; 4] = [Provider::Discord, Provider::Github, Provider::Ietf, Provider::RetryAfter];

    /// The name [`FromStr`] accepts: `discord`, `github`, `ietf` or `retry-after`.
    pub const fn name(self) -> &'static str {
        match self {
            Provider::Discord => "discord",
            Provider::Github => "github",
            Provider::Ietf => "ietf",
            Provider::RetryAfter => "retry-after",
        }
    }
}

impl fmt::Display for Provider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A provider name that is not exactly one of `discord`, `github`, `ietf`, `retry-after`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown provider {0:?}: expected discord, github, ietf or retry-after")]
pub struct UnknownProvider(pub String);

impl FromStr for Provider {
    type Err = UnknownProvider;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Provider::ALL.into_iter().find(|p| p.name() == s).ok_or_else(|| UnknownProvider(s.to_owned()))
    }
}

/// What one response said about the upstream's limits. Every time is relative (a duration from when the response
/// was received), so no two clocks need to agree.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Observation {
    /// The status code of the response.
    pub status: u16,
    /// Requests allowed per window, if the upstream said.
    pub limit: Option<u64>,
    /// Requests left in the current window, if the upstream said.
    pub remaining: Option<u64>,
    /// Time until the current window resets.
    pub reset_after: Option<Duration>,
    /// Time to wait before the next request (from `Retry-After`, or a provider's rule such as GitHub's
    /// secondary limits). When set, it wins over `remaining`.
    pub retry_after: Option<Duration>,
    /// The upstream's bucket id (Discord's `X-RateLimit-Bucket`), to learn which routes share a bucket.
    pub bucket: Option<String>,
    /// The limit hit is the upstream's global one (Discord's `X-RateLimit-Global`): it gates every route.
    pub global: bool,
    /// Discord's `X-RateLimit-Scope` (`user`, `global` or `shared`).
    pub scope: Option<String>,
    /// Requests used in the window (GitHub's `x-ratelimit-used`).
    pub used: Option<u64>,
    /// GitHub's `x-ratelimit-resource`, or the IETF policy name that was the most restrictive.
    pub resource: Option<String>,
    /// `retry_after` is GitHub's "wait at least one minute" for a secondary limit that gave no other guidance
    /// (see [`SecondaryBackoff`], which lengthens it when such limits come back).
    pub secondary_backoff: bool,
}

impl Observation {
    /// How long to wait before sending again, as this response alone tells: `retry_after` if set, else
    /// `reset_after` when nothing remains, else `None`.
    ///
    /// ```
    /// use floodgate_upstream::headers::Observation;
    /// use std::time::Duration;
    ///
    /// let mut seen = Observation::default();
    /// seen.remaining = Some(0);
    /// seen.reset_after = Some(Duration::from_secs(2));
    /// assert_eq!(seen.wait(), Some(Duration::from_secs(2)));
    /// ```
    pub fn wait(&self) -> Option<Duration> {
        if self.retry_after.is_some() {
            return self.retry_after;
        }
        match self.remaining {
            Some(0) => self.reset_after,
            _ => None,
        }
    }

    /// True if the response says anything about limits at all.
    pub fn has_limits(&self) -> bool {
        self.remaining.is_some() || self.retry_after.is_some() || self.limit.is_some()
    }
}

/// Parses a response's headers as `provider` sends them, `now` being the local wall-clock time, used only when an
/// absolute time (GitHub's `x-ratelimit-reset`, Discord's `X-RateLimit-Reset` without `-Reset-After`, a
/// `Retry-After` HTTP date) must be turned into a duration and the response has no valid `Date` header. With a
/// `Date` header the upstream's own clock is the reference, so no two clocks need to agree.
///
/// Pure and total: any status and any bytes in any header give an [`Observation`], never a panic. This is the
/// entry point for fuzzing.
///
/// ```
/// use floodgate_upstream::headers::{Provider, parse_at};
/// use http::HeaderMap;
/// use std::time::{Duration, SystemTime};
///
/// let mut headers = HeaderMap::new();
/// headers.insert("retry-after", "3".parse()?);
/// let seen = parse_at(Provider::RetryAfter, 429, &headers, SystemTime::UNIX_EPOCH);
/// assert_eq!(seen.retry_after, Some(Duration::from_secs(3)));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn parse_at(provider: Provider, status: u16, headers: &HeaderMap, now: SystemTime) -> Observation {
    let reference = reference_time(headers, now);
    let mut seen = match provider {
        Provider::Discord => discord::parse(headers, reference),
        Provider::Github => github::parse(headers, reference),
        Provider::Ietf => ietf::parse(headers),
        Provider::RetryAfter => Observation::default(),
    };
    seen.status = status;
    if let Some(ra) = parse_retry_after(headers, reference) {
        seen.retry_after = Some(ra);
    }
    if provider == Provider::Github {
        github::secondary_rules(&mut seen);
    }
    seen
}

/// [`parse_at`] with the local wall clock as `now`.
pub fn parse(provider: Provider, status: u16, headers: &HeaderMap) -> Observation {
    parse_at(provider, status, headers, SystemTime::now())
}

/// A header map from name/value pairs (as a JSON body carries them); pairs whose name or value is not valid in
/// HTTP are left out. Names are case-insensitive.
///
/// ```
/// let map = floodgate_upstream::headers::header_map([("Retry-After", "2"), ("bad name", "x")]);
/// assert_eq!(map.len(), 1);
/// assert_eq!(map["retry-after"], "2");
/// ```
pub fn header_map<I, K, V>(pairs: I) -> HeaderMap
where
    I: IntoIterator<Item = (K, V)>,
    K: AsRef<str>,
    V: AsRef<str>,
{
    let mut map = HeaderMap::new();
    for (k, v) in pairs {
        let (Ok(name), Ok(value)) =
            (http::HeaderName::from_bytes(k.as_ref().as_bytes()), http::HeaderValue::from_str(v.as_ref()))
        else {
            continue;
        };
        map.append(name, value);
    }
    map
}

/// The header names [`fuzz_input`] assigns values to, in turn: every header some parser reads, and one none does.
pub const FUZZ_NAMES: [&str; 14] = [
    "x-ratelimit-limit",
    "x-ratelimit-remaining",
    "x-ratelimit-reset",
    "x-ratelimit-reset-after",
    "x-ratelimit-bucket",
    "x-ratelimit-global",
    "x-ratelimit-scope",
    "x-ratelimit-used",
    "x-ratelimit-resource",
    "ratelimit",
    "ratelimit-policy",
    "retry-after",
    "date",
    "x-other",
];

/// Shapes arbitrary bytes into a parser's input: the first byte picks the status and the local clock, the rest
/// are header values separated by NUL bytes, given to [`FUZZ_NAMES`] in turn (at most 32; values HTTP would
/// refuse are left out). `None` for empty input. The fuzz target `fuzz/fuzz_targets/upstream_headers.rs` (in this crate) and
/// this crate's property tests feed [`parse_at`] through it, so both explore the same space.
///
/// ```
/// use floodgate_upstream::headers::{Provider, fuzz_input, parse_at};
///
/// let (status, headers, now) = fuzz_input(b"\x96\x003\x001").expect("not empty");
/// assert_eq!(status, 400);
/// assert_eq!(headers["x-ratelimit-remaining"], "3");
/// assert_eq!(parse_at(Provider::Discord, status, &headers, now).limit, None);
/// assert!(fuzz_input(b"").is_none());
/// ```
pub fn fuzz_input(data: &[u8]) -> Option<(u16, HeaderMap, SystemTime)> {
    let (&head, rest) = data.split_first()?;
    let status = 100 + u16::from(head) * 2;
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(u64::from(head) << 24);
    let mut headers = HeaderMap::new();
    for (i, value) in rest.split(|b| *b == 0).enumerate().take(32) {
        if let Ok(v) = http::HeaderValue::from_bytes(value) {
            headers.append(http::HeaderName::from_static(FUZZ_NAMES[i % FUZZ_NAMES.len()]), v);
        }
    }
    Some((status, headers, now))
}

/// The upstream's `Date` if valid, else `now`.
fn reference_time(headers: &HeaderMap, now: SystemTime) -> SystemTime {
    text(headers, "date").and_then(|d| httpdate::parse_http_date(d).ok()).unwrap_or(now)
}

/// The first value of `name` as trimmed text, if it is visible ASCII.
pub(crate) fn text<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok()).map(str::trim)
}

/// A non-negative integer header.
pub(crate) fn integer(headers: &HeaderMap, name: &str) -> Option<u64> {
    text(headers, name).and_then(|s| s.parse().ok())
}

/// Non-negative, finite seconds with an optional fraction (`1.250`), as a duration.
pub(crate) fn seconds(s: &str) -> Option<Duration> {
    // Digits and at most one dot only: no sign, exponent, `inf` or `NaN`.
    if s.is_empty()
        || !s.bytes().all(|b| b.is_ascii_digit() || b == b'.')
        || s.bytes().filter(|&b| b == b'.').count() > 1
    {
        return None;
    }
    let secs: f64 = s.parse().ok()?;
    Duration::try_from_secs_f64(secs).ok()
}

/// The time from `reference` until the absolute time `at` (zero if it is past).
pub(crate) fn until(at: SystemTime, reference: SystemTime) -> Duration {
    at.duration_since(reference).unwrap_or(Duration::ZERO)
}

#[cfg(test)]
mod tests;
