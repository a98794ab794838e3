//! The proto3-JSON mapping of `POST /json`: any bytes are refused with a message, or map to a request that maps
//! back to itself and is answered (see `floodgate_server::fuzzing::Harness::rls_json`).
#![no_main]

use std::sync::OnceLock;

use floodgate_server::fuzzing::Harness;
use libfuzzer_sys::fuzz_target;

fn harness() -> &'static Harness {
    static HARNESS: OnceLock<Harness> = OnceLock::new();
    HARNESS.get_or_init(|| Harness::new().expect("the harness starts"))
}

fuzz_target!(|data: &[u8]| {
    if let Err(e) = harness().rls_json(data) {
        panic!("{e}");
    }
});
