//! The cluster frame decoder must never panic on any bytes a peer sends, and a frame it accepts must encode
//! back to bytes that decode to the same frame. (The proptest twin, `any_bytes_decode_without_panic`, runs in
//! CI: `cargo test -p floodgate-cluster --lib frame`.)
#![no_main]

use floodgate_cluster::frame::Frame;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(frame) = Frame::decode(data) {
        let again = Frame::decode(&frame.encode());
        assert_eq!(again.as_ref(), Ok(&frame), "an accepted frame does not survive a round trip");
    }
});
