use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::HeaderMap;
use proptest::prelude::*;

use super::*;

fn map(pairs: &[(&str, &str)]) -> HeaderMap {
    header_map(pairs.iter().copied())
}

fn at(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(secs)
}

/// Discord's documented example of a 200 (rate-limits page).
#[test]
fn discord_documented_success() {
    let h = map(&[
        ("X-RateLimit-Limit", "5"),
        ("X-RateLimit-Remaining", "0"),
        ("X-RateLimit-Reset", "1470173023"),
        ("X-RateLimit-Reset-After", "1"),
        ("X-RateLimit-Bucket", "abcd1234"),
    ]);
    let seen = parse_at(Provider::Discord, 200, &h, at(1_470_173_000));
    assert_eq!(seen.limit, Some(5));
    assert_eq!(seen.remaining, Some(0));
    // Reset-After wins over Reset (relative beats absolute).
    assert_eq!(seen.reset_after, Some(Duration::from_secs(1)));
    assert_eq!(seen.bucket.as_deref(), Some("abcd1234"));
    assert!(!seen.global);
    assert_eq!(seen.wait(), Some(Duration::from_secs(1)));
}

/// Discord's documented 429s: a per-route one and a global one.
#[test]
fn discord_documented_429s() {
    let h = map(&[
        ("X-RateLimit-Limit", "10"),
        ("X-RateLimit-Remaining", "0"),
        ("X-RateLimit-Reset", "1470173023.123"),
        ("X-RateLimit-Reset-After", "64.57"),
        ("X-RateLimit-Bucket", "abcd1234"),
        ("X-RateLimit-Scope", "user"),
        ("Retry-After", "65"),
    ]);
    let seen = parse_at(Provider::Discord, 429, &h, at(0));
    assert_eq!(seen.reset_after, Some(Duration::from_millis(64_570)));
    assert_eq!(seen.retry_after, Some(Duration::from_secs(65)));
    assert_eq!(seen.scope.as_deref(), Some("user"));
    assert!(!seen.global);
    assert_eq!(seen.wait(), Some(Duration::from_secs(65)));

    let h = map(&[("X-RateLimit-Global", "true"), ("X-RateLimit-Scope", "global"), ("Retry-After", "65")]);
    let seen = parse_at(Provider::Discord, 429, &h, at(0));
    assert!(seen.global);
    assert_eq!(seen.retry_after, Some(Duration::from_secs(65)));
}

/// Without Reset-After, Reset (epoch, fractional) is taken against the response's Date, not the local clock.
#[test]
fn discord_reset_against_date() {
    let h = map(&[("X-RateLimit-Reset", "1470173023.5"), ("Date", "Tue, 02 Aug 2016 21:23:40 GMT")]);
    // Date is 1470173020; the local clock is far off and must not matter.
    let seen = parse_at(Provider::Discord, 200, &h, at(5));
    assert_eq!(seen.reset_after, Some(Duration::from_millis(3_500)));
}

/// GitHub's documented headers.
#[test]
fn github_documented() {
    let h = map(&[
        ("x-ratelimit-limit", "5000"),
        ("x-ratelimit-remaining", "4999"),
        ("x-ratelimit-used", "1"),
        ("x-ratelimit-reset", "1691591363"),
        ("x-ratelimit-resource", "core"),
    ]);
    let seen = parse_at(Provider::Github, 200, &h, at(1_691_591_300));
    assert_eq!(seen.limit, Some(5000));
    assert_eq!(seen.remaining, Some(4999));
    assert_eq!(seen.used, Some(1));
    assert_eq!(seen.resource.as_deref(), Some("core"));
    assert_eq!(seen.reset_after, Some(Duration::from_secs(63)));
    assert_eq!(seen.retry_after, None);
    // A Date header is the reference when present.
    let mut h = h;
    h.insert("date", http::HeaderValue::from_static("Wed, 09 Aug 2023 14:28:23 GMT")); // 1691591303
    let seen = parse_at(Provider::Github, 200, &h, at(0));
    assert_eq!(seen.reset_after, Some(Duration::from_secs(60)));
}

/// GitHub's secondary-limit rules: retry-after, else the reset when nothing remains, else one minute.
#[test]
fn github_secondary_rules() {
    let ra = map(&[("retry-after", "30"), ("x-ratelimit-remaining", "0"), ("x-ratelimit-reset", "1000")]);
    assert_eq!(parse_at(Provider::Github, 403, &ra, at(900)).retry_after, Some(Duration::from_secs(30)));
    let empty = map(&[("x-ratelimit-remaining", "0"), ("x-ratelimit-reset", "1000")]);
    assert_eq!(parse_at(Provider::Github, 403, &empty, at(900)).retry_after, Some(Duration::from_secs(100)));
    let plain = map(&[("x-ratelimit-remaining", "12")]);
    assert_eq!(parse_at(Provider::Github, 429, &plain, at(0)).retry_after, Some(Duration::from_secs(60)));
    // A 403 with remaining quota and no retry-after is a permission error, not a limit.
    assert_eq!(parse_at(Provider::Github, 403, &plain, at(0)).retry_after, None);
    // A 200 is never a secondary limit.
    assert_eq!(parse_at(Provider::Github, 200, &empty, at(900)).retry_after, None);
}

/// Secondary limits that come back back off exponentially from 60 s; a success starts again; waits GitHub gave
/// are honoured as they are and do not count; the back-off is bounded.
#[test]
fn github_secondary_backoff() {
    let limited = map(&[("x-ratelimit-remaining", "12")]);
    let told = map(&[("retry-after", "7")]);
    let mut b = SecondaryBackoff::default();
    let mut next = |status: u16, h: &HeaderMap| {
        let mut seen = parse_at(Provider::Github, status, h, at(0));
        b.apply(&mut seen);
        (seen.retry_after.map(|d| d.as_secs()), b.strikes())
    };
    assert_eq!(next(429, &limited), (Some(60), 1));
    assert_eq!(next(429, &limited), (Some(120), 2));
    // A wait the upstream gave is honoured, and neither counts nor resets.
    assert_eq!(next(429, &told), (Some(7), 2));
    assert_eq!(next(429, &limited), (Some(240), 3));
    // A 403 without a rate-limit sign (a permission error) changes nothing.
    assert_eq!(next(403, &limited), (None, 3));
    // A success starts again from 60 s.
    assert_eq!(next(200, &limited), (None, 0));
    assert_eq!(next(429, &limited), (Some(60), 1));
    // Bounded at an hour, however long it goes on.
    assert_eq!(SecondaryBackoff::wait(7), Duration::from_secs(3600));
    assert_eq!(SecondaryBackoff::wait(u32::MAX), SecondaryBackoff::MAX);
    assert_eq!(SecondaryBackoff::wait(0), Duration::from_secs(60));
}

/// The draft's examples: one policy, several policies, and malformed fields ignored whole.
#[test]
fn ietf_draft_examples() {
    let h = map(&[("RateLimit-Policy", "\"default\";q=100;w=10"), ("RateLimit", "\"default\";r=50;t=30")]);
    let seen = parse_at(Provider::Ietf, 200, &h, at(0));
    assert_eq!(seen.limit, Some(100));
    assert_eq!(seen.remaining, Some(50));
    assert_eq!(seen.reset_after, Some(Duration::from_secs(30)));
    assert_eq!(seen.resource.as_deref(), Some("default"));

    // Two policies over two lines; the tighter one is reported.
    let mut h = map(&[("RateLimit-Policy", "\"burst\";q=100;w=60,\"daily\";q=1000;w=86400")]);
    h.append("RateLimit", http::HeaderValue::from_static("\"burst\";r=80;t=40"));
    h.append("RateLimit", http::HeaderValue::from_static("\"daily\";r=5;t=3600"));
    let seen = parse_at(Provider::Ietf, 200, &h, at(0));
    assert_eq!((seen.remaining, seen.limit), (Some(5), Some(1000)));
    assert_eq!(seen.reset_after, Some(Duration::from_secs(3600)));

    // Malformed: the field is ignored, never half read.
    for bad in ["\"default\";r=50;t=30,", "default;r=-1", "\"a\";r=5;t=1, (inner", "\"x\";r=1.5"] {
        let h = map(&[("RateLimit", bad)]);
        let seen = parse_at(Provider::Ietf, 200, &h, at(0));
        assert_eq!(seen.remaining, None, "{bad}");
    }
    // Policy only: the quota is known, the remaining is not.
    let h = map(&[("RateLimit-Policy", "\"p\";q=7;w=1")]);
    assert_eq!(parse_at(Provider::Ietf, 200, &h, at(0)).limit, Some(7));
}

/// Retry-After: delta seconds, an HTTP date against Date, and it wins for every provider.
#[test]
fn retry_after_forms() {
    let h = map(&[("Retry-After", "120")]);
    assert_eq!(parse_at(Provider::RetryAfter, 503, &h, at(0)).retry_after, Some(Duration::from_secs(120)));
    let h = map(&[("Retry-After", "Fri, 31 Dec 1999 23:59:59 GMT"), ("Date", "Fri, 31 Dec 1999 23:59:00 GMT")]);
    assert_eq!(parse_at(Provider::RetryAfter, 429, &h, at(0)).retry_after, Some(Duration::from_secs(59)));
    // A date in the past is no wait at all.
    let h = map(&[("Retry-After", "Fri, 31 Dec 1999 23:59:59 GMT")]);
    assert_eq!(parse_at(Provider::RetryAfter, 429, &h, at(2_000_000_000)).retry_after, Some(Duration::ZERO));
    for p in Provider::ALL {
        let h = map(&[("Retry-After", "7"), ("x-ratelimit-remaining", "3"), ("RateLimit", "\"d\";r=3;t=1")]);
        assert_eq!(parse_at(p, 429, &h, at(0)).wait(), Some(Duration::from_secs(7)), "{p}");
    }
    for bad in ["-1", "1e3", "inf", "NaN", "", "1.2.3", " ", "99999999999999999999999"] {
        let h = map(&[("Retry-After", bad)]);
        assert_eq!(parse_at(Provider::RetryAfter, 429, &h, at(0)).retry_after, None, "{bad:?}");
    }
}

#[test]
fn provider_names_round_trip() {
    for p in Provider::ALL {
        assert_eq!(p.name().parse::<Provider>(), Ok(p));
    }
    for bad in ["Discord", "", "retry_after", "ietf ", "git"] {
        assert!(bad.parse::<Provider>().is_err(), "{bad}");
    }
}

/// Every header a parser reads ([`FUZZ_NAMES`]), the ones that decide most (`ratelimit`, `retry-after`, `date`)
/// drawn twice as often.
fn header_name() -> impl Strategy<Value = &'static str> {
    const TWICE: [&str; 3] = ["ratelimit", "retry-after", "date"];
    prop_oneof![
        FUZZ_NAMES.len() as u32 => prop::sample::select(&FUZZ_NAMES[..]),
        TWICE.len() as u32 => prop::sample::select(&TWICE[..]),
    ]
}

fn arbitrary_headers() -> impl Strategy<Value = HeaderMap> {
    let value = prop_oneof![
        any::<Vec<u8>>(),
        "[ -~]{0,40}".prop_map(String::into_bytes),
        "[0-9.]{0,12}".prop_map(String::into_bytes),
        "(\"[a-z]{0,4}\"|[a-z]{1,4})(;[qrtwz]=-?[0-9]{0,20}){0,3}(, ?)?".prop_map(String::into_bytes),
    ];
    proptest::collection::vec((header_name(), value), 0..12).prop_map(|pairs| {
        let mut map = HeaderMap::new();
        for (name, bytes) in pairs {
            if let Ok(v) = http::HeaderValue::from_bytes(&bytes) {
                map.append(name, v);
            }
        }
        map
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2_000, .. ProptestConfig::default() })]

    /// Any bytes in any of the headers, any status, any clock: every parser answers, and what it answers is sane.
    #[test]
    fn parsers_never_panic(headers in arbitrary_headers(), status in any::<u16>(), now in any::<u64>()) {
        let now = UNIX_EPOCH.checked_add(Duration::from_secs(now >> 20)).unwrap_or(UNIX_EPOCH);
        for p in Provider::ALL {
            let seen = parse_at(p, status, &headers, now);
            prop_assert_eq!(seen.status, status);
            if seen.retry_after.is_some() {
                prop_assert_eq!(seen.wait(), seen.retry_after);
            }
        }
    }

    /// The fuzz target's input, run bounded here (stable, in CI): any bytes, shaped by [`fuzz_input`] exactly as
    /// `fuzz/fuzz_targets/upstream_headers.rs` (in this crate) shapes them, through every parser.
    #[test]
    fn fuzz_target_input(data in prop_oneof![
        any::<Vec<u8>>(),
        proptest::collection::vec(prop_oneof![Just(0u8), 0x20u8..0x7f, any::<u8>()], 0..256),
    ]) {
        if let Some((status, headers, now)) = fuzz_input(&data) {
            for p in Provider::ALL {
                let seen = parse_at(p, status, &headers, now);
                prop_assert_eq!(seen.status, status);
                if seen.retry_after.is_some() {
                    prop_assert_eq!(seen.wait(), seen.retry_after);
                }
            }
        } else {
            prop_assert!(data.is_empty());
        }
    }

    /// Any string as a provider name: only the four names parse.
    #[test]
    fn provider_from_any_string(s in ".{0,16}") {
        let ok = s.parse::<Provider>().is_ok();
        prop_assert_eq!(ok, ["discord", "github", "ietf", "retry-after"].contains(&s.as_str()));
    }

    /// Delta seconds round-trip exactly.
    #[test]
    fn retry_after_seconds_exact(n in 0u64..=10_000_000) {
        let h = header_map([("retry-after", n.to_string())]);
        prop_assert_eq!(parse_at(Provider::RetryAfter, 429, &h, UNIX_EPOCH).retry_after, Some(Duration::from_secs(n)));
    }
}
