//! The hit path: `ClusterStore` against the core's `MemoryStore`, fixed window, on the same key set, measured
//! in the same run and interleaved (memory, cluster, cluster with replication draining, then the next round in
//! another order), so that both sides see the same machine. Prints the median ns per hit of each side, and the
//! median over the rounds of each round's ratio: rounds are short (50 000 hits a side), so the two sides of a
//! round see the same load on a shared machine even when it changes from one second to the next.
//!
//! `cargo bench -p floodgate-cluster --bench hit` (bounded: at most `ROUNDS` rounds of `HITS` hits per side per
//! key count, and at most `MAX_TIME` per key count).

use std::hint::black_box;
use std::time::{Duration, Instant};

use floodgate::{MemoryStore, Policy};
use floodgate_cluster::ClusterStore;

/// Rounds per key count; each round times every side once.
const ROUNDS: usize = 61;
/// Hits per side per round.
const HITS: usize = 50_000;
/// The most one key count may take (the remaining rounds are skipped).
const MAX_TIME: Duration = Duration::from_secs(40);

fn keys(n: usize) -> Vec<Vec<u8>> {
    (0..n).map(|i| format!("user:{i}").into_bytes()).collect()
}

/// ns per hit of `HITS` hits of `hit`, walking the keys with a stride.
fn time(ks: &[Vec<u8>], at: &mut usize, mut hit: impl FnMut(&[u8]) -> bool) -> f64 {
    let n = ks.len();
    let t = Instant::now();
    for _ in 0..HITS {
        *at = (*at + 7919) % n;
        black_box(hit(&ks[*at]));
    }
    t.elapsed().as_nanos() as f64 / HITS as f64
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let policy = Policy::fixed_window(1 << 40, Duration::from_secs(3600)).unwrap_or_else(|e| panic!("{e}"));
    // Optional arguments: a key count to run alone (`1000`, `100000`), and one side to time alone (`memory`,
    // `cluster`, `drain`), e.g. under `perf stat`.
    let args: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with('-')).collect();
    let filter = args.iter().find(|a| a.parse::<usize>().is_ok());
    let only = args.iter().find_map(|a| ["memory", "cluster", "drain"].iter().position(|s| s == a));
    for n in [1_000usize, 100_000] {
        if filter.as_ref().is_some_and(|f| !n.to_string().contains(f.as_str())) {
            continue;
        }
        let ks = keys(n);
        let memory = MemoryStore::builder().cleanup_interval(None).build();
        let cluster = ClusterStore::builder().node_id("bench").build();
        // With replication draining the changed keys as it would every few ms (here every 10 000 hits).
        let drained = ClusterStore::builder().node_id("bench").build();
        let mut since = 0u32;
        let mut sides: [(&str, Vec<f64>); 3] = [("memory", vec![]), ("cluster", vec![]), ("cluster+drain", vec![])];
        let mut at = 0usize;
        let started = Instant::now();
        // Round 0 warms every side up (every key created) and is not counted.
        for round in 0..=ROUNDS {
            if started.elapsed() > MAX_TIME {
                break;
            }
            for k in 0..3 {
                let side = (k + round) % 3;
                if only.is_some_and(|o| o != side) {
                    continue;
                }
                let ns = match side {
                    0 => time(&ks, &mut at, |id| memory.hit_sync(id, &policy, 1).allowed),
                    1 => time(&ks, &mut at, |id| cluster.hit_sync(id, &policy, 1).is_ok_and(|d| d.allowed)),
                    _ => time(&ks, &mut at, |id| {
                        since += 1;
                        if since == 10_000 {
                            since = 0;
                            black_box(drained.take_dirty());
                        }
                        drained.hit_sync(id, &policy, 1).is_ok_and(|d| d.allowed)
                    }),
                };
                if round > 0 {
                    sides[side].1.push(ns);
                }
            }
        }
        if only.is_some() {
            continue;
        }
        let rounds = sides[0].1.len();
        let mut ratio: Vec<f64> = (0..rounds).map(|r| sides[1].1[r] / sides[0].1[r]).collect();
        let mut drain_ratio: Vec<f64> = (0..rounds).map(|r| sides[2].1[r] / sides[0].1[r]).collect();
        let m: Vec<f64> = sides.iter_mut().map(|(_, v)| median(v)).collect();
        println!("hit_fixed_window_{n}_keys: {rounds} interleaved rounds of {HITS} hits per side");
        for (i, (name, v)) in sides.iter().enumerate() {
            let (lo, hi) = (v.first().copied().unwrap_or(0.0), v.last().copied().unwrap_or(0.0));
            println!("  {name:<14} median {:>7.1} ns/hit  (min {lo:.1}, max {hi:.1})", m[i]);
        }
        println!(
            "  ratio cluster / memory: {:.2}x (of the medians {:.2}x); cluster+drain / memory: {:.2}x ({:.2}x)",
            median(&mut ratio),
            m[1] / m[0],
            median(&mut drain_ratio),
            m[2] / m[0]
        );
    }
}
