//! What the memory benches share: the million keys, and the quota both sides get.

use std::num::NonZeroU32;
use std::time::Duration;

use floodgate::{Algorithm, Policy};
use governor::Quota;

/// How many distinct keys the million-key cases visit.
pub const KEYS: usize = 1_000_000;

/// `user:<i>` for every i below [`KEYS`], in a fixed shuffled order (xorshift), so consecutive checks touch
/// unrelated memory.
pub fn keys() -> Vec<String> {
    let mut keys: Vec<String> = (0..KEYS).map(|i| format!("user:{i}")).collect();
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    for i in (1..keys.len()).rev() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        keys.swap(i, (x % (i as u64 + 1)) as usize);
    }
    keys
}

/// A million per hour per key: the million-key runs never deny and state never expires during a run; a hot
/// key is denied after its first million, on both sides alike.
pub fn quota() -> Quota {
    Quota::per_hour(NonZeroU32::new(1_000_000).unwrap_or(NonZeroU32::MIN))
}

/// floodgate's side of [`quota`]; the sliding log's limit is capped at 100 000 per window: it gets that per hour.
pub fn policy(a: Algorithm) -> Policy {
    let limit = if a == Algorithm::SlidingLog { Policy::MAX_LOG_LIMIT } else { 1_000_000 };
    Policy::new(a, limit, Duration::from_secs(3600)).unwrap_or_else(|e| panic!("{e}"))
}
