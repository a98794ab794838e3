//! The RLS request path: any bytes as a gRPC `ShouldRateLimit` body are refused cleanly or answered with one
//! status per descriptor (see `floodgate_server::fuzzing::Harness::rls_wire`).
#![no_main]

use std::sync::OnceLock;

use floodgate_server::fuzzing::Harness;
use libfuzzer_sys::fuzz_target;

fn harness() -> &'static Harness {
    static HARNESS: OnceLock<Harness> = OnceLock::new();
    HARNESS.get_or_init(|| Harness::new().expect("the harness starts"))
}

fuzz_target!(|data: &[u8]| {
    if let Err(e) = harness().rls_wire(data) {
        panic!("{e}");
    }
});
