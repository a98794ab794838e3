//! The HTTP API's JSON bodies: the first byte picks a `POST` route, the rest is its body; every answer is below
//! 500 with a JSON body (see `floodgate_server::fuzzing::Harness::http`).
#![no_main]

use std::sync::OnceLock;

use floodgate_server::fuzzing::Harness;
use libfuzzer_sys::fuzz_target;

fn harness() -> &'static Harness {
    static HARNESS: OnceLock<Harness> = OnceLock::new();
    HARNESS.get_or_init(|| Harness::new().expect("the harness starts"))
}

fuzz_target!(|data: &[u8]| {
    let Some((&route, body)) = data.split_first() else { return };
    if let Err(e) = harness().http(usize::from(route), body) {
        panic!("{e}");
    }
});
