//! How fast can a million-key check be? A bench binary (not criterion: it alternates its cases in rounds within
//! one process, so a noisy machine moves them together) that puts side by side, on one million `user:<i>` keys
//! visited in a fixed shuffled order, one thread:
//!
//! - `governor` and `governor-foldhash`: governor 0.10's keyed limiter, as shipped and with a fast hasher;
//! - `floodgate-gcra` and `floodgate-fixed_window`: `MemoryStore::hit_sync`, as users call it;
//! - `bare`: the least a design like ours can do: shards of `parking_lot::Mutex<hashbrown::HashTable>` holding
//!   the key inline and a GCRA time, no policy lookup, no expiry, no decision beyond a bool;
//! - `bare+chain-N`: `bare` with N dependent multiply-xor steps (3 instructions each) after the missed load of
//!   the entry, standing for the work a real store does there (the algorithm, the decision, the timestamps).
//!
//! Run: `cargo bench -p floodgate-bench --bench floor` (about a minute), or name the cases to run only those:
//! `cargo bench -p floodgate-bench --bench floor -- floodgate-gcra bare`. Findings: `BENCHMARKS.md`.

use std::hash::BuildHasher;
use std::hint::black_box;
use std::time::Instant;

use floodgate::{Algorithm, MemoryStore};
use governor::RateLimiter;
use hashbrown::HashTable;
use parking_lot::Mutex;
use smallvec::SmallVec;

mod shared;

use shared::{KEYS, keys, policy, quota};

const CHECKS: usize = 4 * KEYS;
const ROUNDS: usize = 5;

/// A key inline and its GCRA theoretical arrival time (µs).
type BareEntry = (SmallVec<[u8; 24]>, u64);

/// A sharded table that keeps only a GCRA time per key: `CHAIN` extra dependent steps after the entry's load.
struct Bare<const CHAIN: usize> {
    shards: Vec<Mutex<HashTable<BareEntry>>>,
    hasher: foldhash::fast::RandomState,
    clock: floodgate::SystemClock,
}

impl<const CHAIN: usize> Bare<CHAIN> {
    /// A million per hour: 3 600 µs per unit, one hour of burst tolerance.
    const INCREMENT: u64 = 3_600;
    const TOLERANCE: u64 = 3_600_000_000;

    fn new() -> Self {
        Bare {
            shards: (0..64).map(|_| Mutex::new(HashTable::new())).collect(),
            hasher: foldhash::fast::RandomState::default(),
            clock: floodgate::SystemClock::new(),
        }
    }

    #[inline(never)]
    fn hit(&self, key: &[u8]) -> bool {
        // Hash, then read the clock: the other order costs ~80 ns here (see `BENCHMARKS.md`).
        let hash = self.hasher.hash_one(key);
        let now = floodgate::Clock::now(&self.clock).as_micros();
        let mut table = self.shards[((hash >> 32) & 63) as usize].lock();
        match table.find_mut(hash, |e| &e.0[..] == key) {
            Some(entry) => {
                let mut x = entry.1;
                for _ in 0..CHAIN {
                    x = x.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ (x >> 29);
                }
                // The chain's last bit joins the stored time (at most 1 µs more), so it cannot be left out.
                let tat = entry.1.max(now) + Self::INCREMENT + (x & 1);
                let allowed = tat - now <= Self::TOLERANCE;
                if allowed {
                    entry.1 = tat;
                }
                allowed
            }
            None => {
                let entry = (SmallVec::from_slice(key), now + Self::INCREMENT);
                table.insert_unique(hash, entry, |e| self.hasher.hash_one(&e.0[..]));
                true
            }
        }
    }
}

/// `Bare` with the table holding only a `u32` index into a dense vector of entries: the layout that keeps the
/// table's empty slots at 4 bytes each, at the price of one more dependent load per check.
struct BareSlab {
    shards: Vec<Mutex<(HashTable<u32>, Vec<BareEntry>)>>,
    hasher: foldhash::fast::RandomState,
    clock: floodgate::SystemClock,
}

impl BareSlab {
    fn new() -> Self {
        BareSlab {
            shards: (0..64).map(|_| Mutex::new((HashTable::new(), Vec::new()))).collect(),
            hasher: foldhash::fast::RandomState::default(),
            clock: floodgate::SystemClock::new(),
        }
    }

    #[inline(never)]
    fn hit(&self, key: &[u8]) -> bool {
        let hash = self.hasher.hash_one(key);
        let now = floodgate::Clock::now(&self.clock).as_micros();
        let mut shard = self.shards[((hash >> 32) & 63) as usize].lock();
        let (table, slab) = &mut *shard;
        match table.find(hash, |&i| &slab[i as usize].0[..] == key) {
            Some(&i) => {
                let entry = &mut slab[i as usize];
                let tat = entry.1.max(now) + Bare::<0>::INCREMENT;
                let allowed = tat - now <= Bare::<0>::TOLERANCE;
                if allowed {
                    entry.1 = tat;
                }
                allowed
            }
            None => {
                slab.push((SmallVec::from_slice(key), now + Bare::<0>::INCREMENT));
                let i = (slab.len() - 1) as u32;
                table.insert_unique(hash, i, |&j| self.hasher.hash_one(&slab[j as usize].0[..]));
                true
            }
        }
    }
}

/// Runs `check` over the keys `CHECKS` times and returns the time per check (ns).
fn time(keys: &[String], mut check: impl FnMut(&String) -> bool) -> f64 {
    let start = Instant::now();
    let mut admitted = 0usize;
    for i in 0..CHECKS {
        admitted += usize::from(check(&keys[i % KEYS]));
    }
    black_box(admitted);
    start.elapsed().as_nanos() as f64 / CHECKS as f64
}

fn main() {
    // `cargo test --benches` runs bench targets with no `--bench`: nothing to measure then.
    let args: Vec<String> = std::env::args().skip(1).collect();
    if !args.iter().any(|a| a == "--bench") {
        return;
    }
    // Other arguments name the cases to run (`-- --bench bare floodgate-gcra`); none runs them all.
    let only: Vec<&String> = args.iter().filter(|a| !a.starts_with("--")).collect();
    let wanted = |name: &str| only.is_empty() || only.iter().any(|f| *f == name);
    // Round 0 inserts in one order; the later rounds visit the keys in another, so a store that lays entries out
    // in insertion order does not get a sequential walk the hardware can prefetch.
    let inserts = keys();
    let mut visits = inserts.clone();
    let mut x = 0x2545_F491_4F6C_DD1Du64;
    for i in (1..visits.len()).rev() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        visits.swap(i, (x % (i as u64 + 1)) as usize);
    }
    let governor = RateLimiter::keyed(quota());
    let governor_foldhash = RateLimiter::dashmap_with_hasher(quota(), foldhash::fast::RandomState::default());
    let (gcra, fixed) = (policy(Algorithm::Gcra), policy(Algorithm::FixedWindow));
    let (store_gcra, store_fixed) = (MemoryStore::new(), MemoryStore::new());
    let (bare, chain8, chain16, chain32) = (Bare::<0>::new(), Bare::<8>::new(), Bare::<16>::new(), Bare::<32>::new());
    let bare_slab = BareSlab::new();

    let names = [
        "governor",
        "governor-foldhash",
        "floodgate-gcra",
        "floodgate-fixed_window",
        "bare",
        "bare+chain-8",
        "bare+chain-16",
        "bare+chain-32",
        "bare-slab",
    ];
    println!("ns per check, {CHECKS} checks over {KEYS} keys per case, {ROUNDS} rounds (the first one inserts)");
    let mut figures = vec![Vec::new(); names.len()];
    let run = |i: usize, figures: &mut Vec<Vec<f64>>, case: &dyn Fn() -> f64| {
        if wanted(names[i]) {
            figures[i].push(case());
        }
    };
    for round in 0..ROUNDS {
        let keys = if round == 0 { &inserts } else { &visits };
        // Written out, not boxed: each case's loop is compiled for it, as in a user's code.
        run(0, &mut figures, &|| time(keys, |k| governor.check_key(k).is_ok()));
        run(1, &mut figures, &|| time(keys, |k| governor_foldhash.check_key(k).is_ok()));
        run(2, &mut figures, &|| time(keys, |k| store_gcra.hit_sync(k.as_bytes(), &gcra, 1).allowed));
        run(3, &mut figures, &|| time(keys, |k| store_fixed.hit_sync(k.as_bytes(), &fixed, 1).allowed));
        run(4, &mut figures, &|| time(keys, |k| bare.hit(k.as_bytes())));
        run(5, &mut figures, &|| time(keys, |k| chain8.hit(k.as_bytes())));
        run(6, &mut figures, &|| time(keys, |k| chain16.hit(k.as_bytes())));
        run(7, &mut figures, &|| time(keys, |k| chain32.hit(k.as_bytes())));
        run(8, &mut figures, &|| time(keys, |k| bare_slab.hit(k.as_bytes())));
    }
    println!("{:<24}{}", "case", (0..ROUNDS).map(|r| format!("{:>10}", format!("round {r}"))).collect::<String>());
    for (name, f) in names.iter().zip(&figures).filter(|(_, f)| !f.is_empty()) {
        println!("{name:<24}{}", f.iter().map(|ns| format!("{ns:>10.1}")).collect::<String>());
    }
}
