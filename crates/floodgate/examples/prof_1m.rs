use std::num::NonZeroU32;
use std::time::{Duration, Instant};
fn main() {
    let which = std::env::args().nth(1).unwrap_or_default();
    let nk: u64 = std::env::args().nth(3).and_then(|a| a.parse().ok()).unwrap_or(1_000_000);
    let keys: Vec<String> = (0..nk).map(|i| format!("user:{i}")).collect();
    let store = floodgate::MemoryStore::new();
    let p = floodgate::Policy::gcra(1_000_000, Duration::from_secs(3600)).unwrap();
    let gov = governor::RateLimiter::keyed(governor::Quota::per_hour(NonZeroU32::new(1_000_000).unwrap()));
    for k in &keys {
        store.hit_sync(k.as_bytes(), &p, 1);
        let _ = gov.check_key(k);
    }
    let mut x = 0x9E3779B97F4A7C15u64;
    let t = Instant::now();
    let mut ok = 0;
    let n: u64 = std::env::args().nth(2).and_then(|a| a.parse().ok()).unwrap_or(10_000_000);
    for _ in 0..n {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let k = &keys[(x % nk) as usize];
        ok +=
            if which == "gov" { gov.check_key(k).is_ok() } else { store.hit_sync(k.as_bytes(), &p, 1).allowed } as u64;
    }
    println!("{which} {ok} {:?}/op", t.elapsed() / n as u32);
}
