//! The upstream header parsers must never panic: any header values, any status, any time, every provider.
//! The input is shaped by `floodgate_upstream::headers::fuzz_input`, which the crate's property tests use too.
#![no_main]

use floodgate_upstream::headers::{Provider, fuzz_input, parse_at};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((status, headers, now)) = fuzz_input(data) else { return };
    for provider in Provider::ALL {
        let _ = parse_at(provider, status, &headers, now);
    }
});
