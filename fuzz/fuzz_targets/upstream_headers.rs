//! The upstream header parsers must never panic: any header values, any status, any time, every provider.
#![no_main]

use floodgate_upstream::headers::{Provider, parse_at};
use http::{HeaderMap, HeaderName, HeaderValue};
use libfuzzer_sys::fuzz_target;
use std::time::{Duration, SystemTime};

const NAMES: [&str; 12] = [
    "x-ratelimit-limit",
    "x-ratelimit-remaining",
    "x-ratelimit-reset",
    "x-ratelimit-reset-after",
    "x-ratelimit-bucket",
    "x-ratelimit-global",
    "x-ratelimit-scope",
    "x-ratelimit-used",
    "ratelimit",
    "ratelimit-policy",
    "retry-after",
    "date",
];

fuzz_target!(|data: &[u8]| {
    let Some((&head, rest)) = data.split_first() else { return };
    let status = 100 + u16::from(head) * 2;
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(u64::from(head) << 24);
    let mut headers = HeaderMap::new();
    // Values separated by NUL bytes, assigned to the names in turn.
    for (i, value) in rest.split(|b| *b == 0).enumerate().take(32) {
        if let Ok(v) = HeaderValue::from_bytes(value) {
            headers.append(HeaderName::from_static(NAMES[i % NAMES.len()]), v);
        }
    }
    for provider in Provider::ALL {
        let _ = parse_at(provider, status, &headers, now);
    }
});
