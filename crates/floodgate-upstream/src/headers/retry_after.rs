//! `Retry-After` (RFC 9110 §10.2.3): delta seconds or an HTTP date.

use std::time::{Duration, SystemTime};

use http::HeaderMap;

use super::{seconds, text, until};

/// The wait a `Retry-After` header asks for: delta seconds (a decimal fraction is accepted too, as some APIs send
/// one), or an HTTP date taken relative to `reference` (the response's `Date`, else the local clock). `None` if
/// absent or malformed.
///
/// ```
/// use floodgate_upstream::headers::parse_retry_after;
/// use http::HeaderMap;
/// use std::time::{Duration, SystemTime, UNIX_EPOCH};
///
/// let mut headers = HeaderMap::new();
/// headers.insert("retry-after", "Thu, 01 Jan 1970 00:00:10 GMT".parse()?);
/// assert_eq!(parse_retry_after(&headers, UNIX_EPOCH), Some(Duration::from_secs(10)));
/// headers.insert("retry-after", "soon".parse()?);
/// assert_eq!(parse_retry_after(&headers, SystemTime::now()), None);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn parse_retry_after(headers: &HeaderMap, reference: SystemTime) -> Option<Duration> {
    let value = text(headers, "retry-after")?;
    if let Some(d) = seconds(value) {
        return Some(d);
    }
    httpdate::parse_http_date(value).ok().map(|at| until(at, reference))
}
