//! Rate-limit response headers: pure formatting from a [`Policy`] and a [`Decision`], free of I/O.
//!
//! The fields follow the IETF draft *RateLimit header fields for HTTP*, `draft-ietf-httpapi-ratelimit-headers-10`
//! (September 2025; a `-11` of May 2026 is the newest revision, and the summaries of it we could read describe
//! the same fields). Both fields are Structured Field Lists of Items whose value is the quoted policy name:
//!
//! - `RateLimit-Policy: "name";q=LIMIT;w=WINDOW` — the quota `q` per window `w` in seconds. `w` is left out when
//!   the window is not a whole number of seconds (the draft's `w` is an integer and is optional).
//! - `RateLimit: "name";r=REMAINING;t=RESET` — the units `r` left now and the seconds `t` until the state is
//!   back to full (rounded up).
//!
//! A denial adds `Retry-After` in whole seconds, rounded up so a client that waits exactly that long gets through
//! (left out when waiting cannot help: the cost is above the policy's capacity). Optionally the older
//! `X-RateLimit-Limit`, `X-RateLimit-Remaining` and `X-RateLimit-Reset` (seconds from now, as the draft's
//! earlier `RateLimit-Reset` did, not a Unix time) are added too. `X-RateLimit-Limit` is the decision's
//! `limit`, the policy's capacity: for a meter with a `burst` that is the burst, while `q` stays the policy's
//! limit per window.
//!
//! ```
//! use floodgate::algorithm::Op;
//! use floodgate::{MemoryStore, Policy, Timestamp};
//! use floodgate_http::headers::RateLimitHeaders;
//! use std::time::Duration;
//!
//! let policy = Policy::fixed_window(10, Duration::from_secs(60))?.named("api")?;
//! let headers = RateLimitHeaders::new(&policy);
//! assert_eq!(headers.policy_value(), "\"api\";q=10;w=60");
//!
//! // One hit 15.5 s into a one-minute window.
//! let decision = MemoryStore::new().apply_at(&b"k"[..], &policy, Op::Hit, 1, Timestamp::from_millis(615_500));
//! let mut map = http::HeaderMap::new();
//! headers.for_decision(&decision).apply(&mut map);
//! assert_eq!(map["ratelimit"], "\"api\";r=9;t=45");
//! # Ok::<(), floodgate::PolicyError>(())
//! ```

use std::fmt::Write as _;
use std::time::Duration;

use bytes::Bytes;
use floodgate::{Decision, Policy};
use http::header::{HeaderMap, HeaderName, HeaderValue, RETRY_AFTER};

/// `RateLimit-Policy`.
///
/// ```
/// use floodgate_http::headers::{RATELIMIT, RATELIMIT_POLICY, X_RATELIMIT_RESET};
/// assert_eq!(RATELIMIT_POLICY, "ratelimit-policy");
/// assert_eq!(RATELIMIT, "ratelimit");
/// assert_eq!(X_RATELIMIT_RESET, "x-ratelimit-reset");
/// ```
pub const RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");
/// `RateLimit`.
pub const RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");
/// `X-RateLimit-Limit` (legacy).
pub const X_RATELIMIT_LIMIT: HeaderName = HeaderName::from_static("x-ratelimit-limit");
/// `X-RateLimit-Remaining` (legacy).
pub const X_RATELIMIT_REMAINING: HeaderName = HeaderName::from_static("x-ratelimit-remaining");
/// `X-RateLimit-Reset` (legacy; seconds from now).
pub const X_RATELIMIT_RESET: HeaderName = HeaderName::from_static("x-ratelimit-reset");

/// Whole seconds of `d`, rounded up: what `Retry-After` and `t=` carry.
///
/// ```
/// use floodgate_http::headers::ceil_secs;
/// use std::time::Duration;
///
/// assert_eq!(ceil_secs(Duration::from_secs(2)), 2);
/// assert_eq!(ceil_secs(Duration::from_millis(2_001)), 3);
/// assert_eq!(ceil_secs(Duration::from_nanos(1)), 1);
/// assert_eq!(ceil_secs(Duration::ZERO), 0);
/// ```
pub fn ceil_secs(d: Duration) -> u64 {
    d.as_secs().saturating_add(u64::from(d.subsec_nanos() > 0))
}

/// A Structured Field String (RFC 9651 §3.3.3) holding `name`: quoted, with `"` and `\` escaped. Characters a
/// String cannot hold (control characters, anything outside printable ASCII) become `_`.
///
/// ```
/// use floodgate_http::headers::sf_string;
///
/// assert_eq!(sf_string("api"), "\"api\"");
/// assert_eq!(sf_string("a\"b\\c"), "\"a\\\"b\\\\c\"");
/// assert_eq!(sf_string("café\n"), "\"caf__\"");
/// ```
pub fn sf_string(name: &str) -> String {
    let mut out = String::with_capacity(name.len() + 2);
    out.push('"');
    for c in name.chars() {
        match c {
            '"' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            ' '..='~' => out.push(c),
            _ => out.push('_'),
        }
    }
    out.push('"');
    out
}

/// The `RateLimit-Policy` value for a policy called `name`: `"name";q=LIMIT;w=WINDOW_SECS` (without `;w=` when
/// the window is not whole seconds).
///
/// ```
/// use floodgate::Policy;
/// use floodgate_http::headers::policy_field;
/// use std::time::Duration;
///
/// assert_eq!(policy_field("ip", &Policy::gcra(100, Duration::from_secs(60))?), "\"ip\";q=100;w=60");
/// assert_eq!(policy_field("ip", &Policy::gcra(5, Duration::from_millis(500))?), "\"ip\";q=5");
/// # Ok::<(), floodgate::PolicyError>(())
/// ```
pub fn policy_field(name: &str, policy: &Policy) -> String {
    quoted_policy_field(sf_string(name), policy.limit(), policy.window())
}

fn quoted_policy_field(mut out: String, limit: u64, window: Duration) -> String {
    let _ = write!(out, ";q={limit}");
    if window.subsec_nanos() == 0 && window.as_secs() > 0 {
        let _ = write!(out, ";w={}", window.as_secs());
    }
    out
}

/// The `RateLimit` value for a decision under the policy whose quoted name is `quoted_name` (see [`sf_string`]):
/// `"name";r=REMAINING;t=RESET_SECS`.
///
/// ```
/// use floodgate::Decision;
/// use floodgate_http::headers::ratelimit_field;
/// use std::time::Duration;
///
/// let d = Decision {
///     allowed: true,
///     limit: 10,
///     remaining: 7,
///     reset_after: Duration::from_millis(1_500),
///     retry_after: None,
///     fallback: false,
/// };
/// assert_eq!(ratelimit_field("\"api\"", &d), "\"api\";r=7;t=2");
/// ```
pub fn ratelimit_field(quoted_name: &str, decision: &Decision) -> String {
    // ASCII only, so this never falls back.
    String::from_utf8(ratelimit_bytes(quoted_name, decision)).unwrap_or_default()
}

/// [`ratelimit_field`] as bytes, in a buffer of the exact size, so a header value takes it over as it is.
fn ratelimit_bytes(quoted_name: &str, decision: &Decision) -> Vec<u8> {
    let (r, t) = (decision.remaining, ceil_secs(decision.reset_after));
    let mut r_buf = [0u8; 20];
    let mut t_buf = [0u8; 20];
    let (r, t) = (format_u64(r, &mut r_buf), format_u64(t, &mut t_buf));
    let mut out = Vec::with_capacity(quoted_name.len() + 6 + r.len() + t.len());
    out.extend_from_slice(quoted_name.as_bytes());
    out.extend_from_slice(b";r=");
    out.extend_from_slice(r);
    out.extend_from_slice(b";t=");
    out.extend_from_slice(t);
    out
}

/// `n` in decimal, written at the end of `buf`.
fn format_u64(mut n: u64, buf: &mut [u8; 20]) -> &[u8] {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            return &buf[i..];
        }
    }
}

/// How one limit's headers are written: the policy's name and fields, computed once, and whether to add the
/// legacy `X-RateLimit-*` fields.
///
/// ```
/// use floodgate::Policy;
/// use floodgate_http::headers::RateLimitHeaders;
/// use std::time::Duration;
///
/// let policy = Policy::fixed_window(10, Duration::from_secs(1))?;
/// let h = RateLimitHeaders::new(&policy).name("per-ip").legacy(true);
/// assert_eq!(h.policy_value(), "\"per-ip\";q=10;w=1");
/// assert!(h.is_legacy());
/// # Ok::<(), floodgate::PolicyError>(())
/// ```
#[derive(Clone, Debug)]
pub struct RateLimitHeaders {
    quoted_name: Box<str>,
    policy: HeaderValue,
    limit: u64,
    window: Duration,
    legacy: bool,
}

impl RateLimitHeaders {
    /// The headers for `policy`, named after the policy's name, or `default` if it has none; no legacy fields.
    pub fn new(policy: &Policy) -> Self {
        let name = policy.name().unwrap_or("default").to_owned();
        let mut h = RateLimitHeaders {
            quoted_name: Box::from(""),
            policy: HeaderValue::from_static(""),
            limit: policy.limit(),
            window: policy.window(),
            legacy: false,
        };
        h.set_name(&name);
        h
    }

    /// Names the policy in the headers `name` instead (see [`sf_string`] for the characters kept).
    pub fn name(mut self, name: &str) -> Self {
        self.set_name(name);
        self
    }

    /// Also write `X-RateLimit-Limit`, `X-RateLimit-Remaining` and `X-RateLimit-Reset` (default: no).
    pub fn legacy(mut self, legacy: bool) -> Self {
        self.legacy = legacy;
        self
    }

    /// Whether the legacy fields are written.
    pub fn is_legacy(&self) -> bool {
        self.legacy
    }

    /// The `RateLimit-Policy` value, the same on every response.
    pub fn policy_value(&self) -> &HeaderValue {
        &self.policy
    }

    fn set_name(&mut self, name: &str) {
        let quoted = sf_string(name);
        self.policy = header_value(quoted_policy_field(quoted.clone(), self.limit, self.window));
        self.quoted_name = quoted.into_boxed_str();
    }

    /// The headers to write for `decision`.
    pub fn for_decision(&self, decision: &Decision) -> HeaderSet {
        let legacy = self.legacy.then(|| {
            [
                HeaderValue::from(decision.limit),
                HeaderValue::from(decision.remaining),
                HeaderValue::from(ceil_secs(decision.reset_after)),
            ]
        });
        let retry_after =
            if decision.allowed { None } else { decision.retry_after.map(|d| HeaderValue::from(ceil_secs(d))) };
        HeaderSet {
            policy: self.policy.clone(),
            ratelimit: header_value(ratelimit_bytes(&self.quoted_name, decision)),
            legacy,
            retry_after,
        }
    }
}

/// Every field we build is visible ASCII, so this never falls back; if it did, the field is left empty rather
/// than failing a response.
fn header_value(s: impl Into<Vec<u8>>) -> HeaderValue {
    HeaderValue::from_maybe_shared(Bytes::from(s.into())).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// The header values for one response, ready to add.
///
/// ```
/// use floodgate::{Decision, Policy};
/// use floodgate_http::headers::RateLimitHeaders;
/// use std::time::Duration;
///
/// let policy = Policy::fixed_window(2, Duration::from_secs(10))?;
/// let denied = Decision {
///     allowed: false,
///     limit: 2,
///     remaining: 0,
///     reset_after: Duration::from_millis(4_200),
///     retry_after: Some(Duration::from_millis(4_200)),
///     fallback: false,
/// };
/// let mut map = http::HeaderMap::new();
/// RateLimitHeaders::new(&policy).legacy(true).for_decision(&denied).apply(&mut map);
/// assert_eq!(map["retry-after"], "5");
/// assert_eq!(map["ratelimit-policy"], "\"default\";q=2;w=10");
/// assert_eq!(map["ratelimit"], "\"default\";r=0;t=5");
/// assert_eq!(map["x-ratelimit-limit"], "2");
/// assert_eq!(map["x-ratelimit-remaining"], "0");
/// assert_eq!(map["x-ratelimit-reset"], "5");
/// # Ok::<(), floodgate::PolicyError>(())
/// ```
#[derive(Clone, Debug)]
pub struct HeaderSet {
    policy: HeaderValue,
    ratelimit: HeaderValue,
    legacy: Option<[HeaderValue; 3]>,
    retry_after: Option<HeaderValue>,
}

impl HeaderSet {
    /// Adds the fields to `headers`. `RateLimit-Policy` and `RateLimit` are appended, so limits nested in one
    /// another each add a member to the lists (as the draft allows); `Retry-After` and the legacy fields are
    /// only set where no inner layer has set them already.
    pub fn apply(self, headers: &mut HeaderMap) {
        headers.append(RATELIMIT_POLICY, self.policy);
        headers.append(RATELIMIT, self.ratelimit);
        if let Some(retry_after) = self.retry_after {
            headers.entry(RETRY_AFTER).or_insert(retry_after);
        }
        if let Some([limit, remaining, reset]) = self.legacy {
            headers.entry(X_RATELIMIT_LIMIT).or_insert(limit);
            headers.entry(X_RATELIMIT_REMAINING).or_insert(remaining);
            headers.entry(X_RATELIMIT_RESET).or_insert(reset);
        }
    }

    /// The `Retry-After` value, on a denial that waiting can cure.
    ///
    /// ```
    /// use floodgate::{Decision, Policy};
    /// use floodgate_http::headers::RateLimitHeaders;
    /// use std::time::Duration;
    /// let h = RateLimitHeaders::new(&Policy::gcra(1, Duration::from_secs(1))?);
    /// let d = Decision { allowed: false, limit: 1, remaining: 0, reset_after: Duration::from_millis(300), retry_after: Some(Duration::from_millis(300)), fallback: false };
    /// assert_eq!(h.for_decision(&d).retry_after().map(|v| v.as_bytes()), Some(&b"1"[..]));
    /// # Ok::<(), floodgate::PolicyError>(())
    /// ```
    pub fn retry_after(&self) -> Option<&HeaderValue> {
        self.retry_after.as_ref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decision(allowed: bool, remaining: u64, reset_ms: u64, retry_ms: Option<u64>) -> Decision {
        Decision {
            allowed,
            limit: 5,
            remaining,
            reset_after: Duration::from_millis(reset_ms),
            retry_after: retry_ms.map(Duration::from_millis),
            fallback: false,
        }
    }

    fn policy() -> Policy {
        match Policy::fixed_window(5, Duration::from_secs(30)) {
            Ok(p) => p,
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn numbers_format_exactly() {
        for n in [0, 1, 9, 10, 99, 100, 12_345, u64::MAX / 10, u64::MAX] {
            let mut buf = [0; 20];
            assert_eq!(format_u64(n, &mut buf), n.to_string().as_bytes());
        }
        let d = decision(true, u64::MAX, 0, None);
        assert_eq!(ratelimit_field("\"n\"", &d), format!("\"n\";r={};t=0", u64::MAX));
        let bytes = ratelimit_bytes("\"n\"", &d);
        assert_eq!(bytes.capacity(), bytes.len());
    }

    #[test]
    fn ceil_secs_rounds_up_exactly() {
        assert_eq!(ceil_secs(Duration::from_micros(999_999)), 1);
        assert_eq!(ceil_secs(Duration::from_micros(1_000_000)), 1);
        assert_eq!(ceil_secs(Duration::from_micros(1_000_001)), 2);
        assert_eq!(ceil_secs(Duration::MAX), u64::MAX);
    }

    #[test]
    fn policy_field_formats() {
        assert_eq!(policy_field("default", &policy()), "\"default\";q=5;w=30");
        let odd = Policy::gcra(3, Duration::from_millis(1_500)).map(|p| policy_field("x", &p));
        assert_eq!(odd.as_deref(), Ok("\"x\";q=3"));
    }

    #[test]
    fn names_are_valid_sf_strings() {
        assert_eq!(sf_string(""), "\"\"");
        assert_eq!(sf_string("a b~"), "\"a b~\"");
        assert_eq!(sf_string("\u{7f}\t"), "\"__\"");
        let h = RateLimitHeaders::new(&policy()).name("we\"ird\\");
        assert_eq!(h.policy_value(), "\"we\\\"ird\\\\\";q=5;w=30");
        let mut map = HeaderMap::new();
        h.for_decision(&decision(true, 4, 100, None)).apply(&mut map);
        assert_eq!(map[RATELIMIT], "\"we\\\"ird\\\\\";r=4;t=1");
    }

    #[test]
    fn named_policies_use_their_name() {
        let p = policy().named("login").map(|p| RateLimitHeaders::new(&p).policy_value().clone());
        assert_eq!(p.ok(), Some(HeaderValue::from_static("\"login\";q=5;w=30")));
        assert_eq!(RateLimitHeaders::new(&policy()).policy_value(), &policy_field("default", &policy()));
    }

    #[test]
    fn allowed_has_no_retry_after_and_no_legacy_by_default() {
        let mut map = HeaderMap::new();
        RateLimitHeaders::new(&policy()).for_decision(&decision(true, 2, 29_000, None)).apply(&mut map);
        assert_eq!(map[RATELIMIT_POLICY], "\"default\";q=5;w=30");
        assert_eq!(map[RATELIMIT], "\"default\";r=2;t=29");
        assert_eq!(map.len(), 2);
    }

    #[test]
    fn denied_gets_retry_after_rounded_up() {
        let set = RateLimitHeaders::new(&policy()).for_decision(&decision(false, 0, 10_000, Some(90_001)));
        assert_eq!(set.retry_after().map(|v| v.as_bytes()), Some(&b"91"[..]));
        let mut map = HeaderMap::new();
        set.apply(&mut map);
        assert_eq!(map[RETRY_AFTER], "91");
        assert_eq!(map[RATELIMIT], "\"default\";r=0;t=10");
    }

    #[test]
    fn denied_beyond_capacity_has_no_retry_after() {
        let set = RateLimitHeaders::new(&policy()).for_decision(&decision(false, 5, 0, None));
        assert!(set.retry_after().is_none());
    }

    #[test]
    fn nested_limits_append_to_the_lists_and_keep_inner_legacy_fields() {
        let mut map = HeaderMap::new();
        let inner = RateLimitHeaders::new(&policy()).name("inner").legacy(true);
        let outer = RateLimitHeaders::new(&policy()).name("outer").legacy(true);
        inner.for_decision(&decision(true, 1, 1_000, None)).apply(&mut map);
        outer.for_decision(&decision(true, 3, 1_000, None)).apply(&mut map);
        let lists: Vec<_> = map.get_all(RATELIMIT).iter().collect();
        assert_eq!(lists, ["\"inner\";r=1;t=1", "\"outer\";r=3;t=1"]);
        assert_eq!(map.get_all(RATELIMIT_POLICY).iter().count(), 2);
        assert_eq!(map[X_RATELIMIT_REMAINING], "1");
    }
}
