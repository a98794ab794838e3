//! Resident memory per key at one million keys: floodgate's in-memory store and governor's keyed limiter; and
//! per key of a full sliding log at limits 100 and 10 000.
//!
//! Run: `cargo bench -p floodgate-bench --bench bytes_per_key`. Each store is filled in a fresh child process (so one
//! store's freed memory cannot hide the next one's), and the growth of its resident set is divided by the keys.

use std::num::NonZeroU32;
use std::process::Command;
use std::time::Duration;

use floodgate::{Algorithm, MemoryStore, Op, Policy, Timestamp};
use governor::{Quota, RateLimiter};

const KEYS: usize = 1_000_000;

fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm.split_whitespace().nth(1).and_then(|p| p.parse().ok()).unwrap_or(0);
    pages * 4096
}

fn measure(which: &str) -> f64 {
    let keys: Vec<String> = (0..KEYS).map(|i| format!("user:{i}")).collect();
    let before = rss_bytes();
    match which {
        algorithm if algorithm.starts_with("floodgate-") => {
            let a: Algorithm = algorithm["floodgate-".len()..].parse().unwrap_or_else(|e| panic!("{e}"));
            let store = MemoryStore::builder().cleanup_interval(None).build();
            let p = Policy::new(a, 100, Duration::from_secs(60)).unwrap_or_else(|e| panic!("{e}"));
            for k in &keys {
                store.hit_sync(k.as_bytes(), &p, 1);
            }
            let grown = rss_bytes() - before;
            assert_eq!(store.stats().keys, KEYS);
            grown as f64 / KEYS as f64
        }
        log if log.starts_with("sliding_log-") => {
            // `limit` hits per key, each in its own millisecond: the log's worst case (no run merges).
            let limit: u64 = log["sliding_log-".len()..].parse().unwrap_or_else(|e| panic!("{e}"));
            let keys = &keys[..(1_000_000 / limit as usize)];
            let store = MemoryStore::builder().cleanup_interval(None).build();
            let p = Policy::sliding_log(limit, Duration::from_secs(3600)).unwrap_or_else(|e| panic!("{e}"));
            for i in 0..limit {
                let now = Timestamp::from_micros(1_000_000_000_000 + i * 1_000);
                for k in keys {
                    store.apply_at(k.as_bytes(), &p, Op::Hit, 1, now);
                }
            }
            let grown = rss_bytes() - before;
            assert_eq!(store.stats().keys, keys.len());
            grown as f64 / keys.len() as f64
        }
        "governor" => {
            let lim = RateLimiter::keyed(Quota::per_minute(NonZeroU32::new(100).unwrap_or(NonZeroU32::MIN)));
            for k in &keys {
                let _ = lim.check_key(k);
            }
            let grown = rss_bytes() - before;
            assert_eq!(lim.len(), KEYS);
            grown as f64 / KEYS as f64
        }
        other => panic!("unknown store {other}"),
    }
}

fn main() {
    if let Some(which) = std::env::args().skip_while(|a| a != "--child").nth(1) {
        println!("{}", measure(&which));
        return;
    }
    let exe = std::env::current_exe().unwrap_or_else(|e| panic!("{e}"));
    let mut cases: Vec<String> = vec!["governor".into()];
    cases.extend(Algorithm::ALL.iter().map(|a| format!("floodgate-{a}")));
    cases.extend(["sliding_log-100".into(), "sliding_log-10000".into()]);
    for which in &cases {
        let out = Command::new(&exe).args(["--child", which]).output().unwrap_or_else(|e| panic!("{e}"));
        let per_key = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        if let Some(limit) = which.strip_prefix("sliding_log-") {
            println!(
                "floodgate {which}: {per_key} bytes per key with a full log ({limit} hits, each in its own ms; {} keys)",
                1_000_000 / limit.parse::<usize>().unwrap_or(1)
            );
        } else {
            println!(
                "{which}: {per_key} bytes of resident memory per key at {KEYS} keys (one hit each, one policy, 'user:<i>' keys)"
            );
        }
    }
}
