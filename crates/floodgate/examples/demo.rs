//! Shows limits being enforced: a burst of hits per user under each algorithm, then the same after time moves.
//!
//! Run: `cargo run -p floodgate --example demo`
//!
//! The store's clock is a `ManualClock`, so the demo is instant and prints the same every time.

use std::time::Duration;

use floodgate::{Algorithm, ManualClock, MemoryStore, Policy, Timestamp};

fn main() -> Result<(), floodgate::PolicyError> {
    let clock = ManualClock::new(Timestamp::from_secs(1_800_000_000));
    let store = MemoryStore::builder().clock(clock.clone()).build();
    println!("policy: 5 hits per 10 s for each user; 8 hits arrive at once, then 2 s pass, then 2 more hits\n");
    for algorithm in Algorithm::ALL {
        let policy = Policy::new(algorithm, 5, Duration::from_secs(10))?;
        let id = format!("user:42:{algorithm}");
        let mut line = String::new();
        for _ in 0..8 {
            line.push_str(&mark(store.hit_sync(id.as_bytes(), &policy, 1)));
        }
        clock.advance(Duration::from_secs(2));
        line.push_str(" | +2 s | ");
        for _ in 0..2 {
            line.push_str(&mark(store.hit_sync(id.as_bytes(), &policy, 1)));
        }
        clock.set(Timestamp::from_secs(1_800_000_000));
        println!("{:>15}: {line}", algorithm.name());
    }
    println!("\n✓ allowed (remaining after it)   ✗ denied (retry after)");
    Ok(())
}

fn mark(d: floodgate::Decision) -> String {
    match (d.allowed, d.retry_after) {
        (true, _) => format!("✓{} ", d.remaining),
        (false, Some(wait)) => format!("✗{:.1}s ", wait.as_secs_f64()),
        (false, None) => "✗never ".to_owned(),
    }
}
