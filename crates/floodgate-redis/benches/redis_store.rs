//! Store throughput against `redis-benchmark` running the same script on the same server.
//!
//! `cargo bench -p floodgate-redis --bench redis_store` starts its own `redis-server` on a free loopback port and
//! measures, in one run and on one server:
//!
//! 1. one caller: the store's `hit` in a loop, vs `redis-benchmark -c 1` sending the store's exact `EVALSHA`;
//! 2. fifty concurrent callers sharing the store's one multiplexed connection, vs `redis-benchmark -c 50 -P 16`.
//!
//! 3. one caller, time per `hit` by algorithm: the fixed window against the sliding log (admitted hits, and
//!    denials at the limit), to show what the log's sorted set costs per round trip.
//!
//! Each figure is the best of `ROUNDS` alternating rounds (the machine is shared). Bounded: a fixed number of
//! calls per round. Prints a Markdown table for BENCHMARKS.md.

#[path = "../tests/it/support.rs"]
mod support;

use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use floodgate::{Policy, Store};
use floodgate_redis::{RedisStore, ScriptSource};

const ROUNDS: usize = 5;
const CALLS_1: u64 = 40_000;
const CALLS_50: u64 = 200_000;
const CALLERS: u64 = 50;

fn main() {
    let server = support::RedisServer::start();
    let url = server.url();
    // Every hit is admitted and writes (the common, heavier path): 10^9 per second, burst 10^9.
    let policy = Policy::gcra(1_000_000_000, Duration::from_secs(1)).expect("policy");
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let store = rt.block_on(async {
        RedisStore::builder().url(&url).prefix("bench").timeout(Duration::from_secs(5)).build().await.expect("connect")
    });
    let store = Arc::new(store);
    let id = b"user:42";
    rt.block_on(store.hit(id, &policy, 1)).expect("warm-up hit (loads the script)");

    let script = ScriptSource::for_algorithm(policy.algorithm());
    // The id's shard, then the earlier layouts' keys (read when the shard has no field for the counter): the id
    // hash, and the per-bucket layout's bucket and index.
    let shard = String::from_utf8(store.shard_key(id)).expect("utf-8 key");
    let field = String::from_utf8(store.field(id, &policy)).expect("utf-8 field");
    let id_hash = format!("bench{{{}}}", String::from_utf8_lossy(id));
    let old_index = format!("bench:{{{}}}", String::from_utf8_lossy(id));
    let old_bucket = format!("{old_index}:{}", policy.key());
    let args: Vec<String> = [
        "EVALSHA",
        script.sha(),
        "4",
        &shard,
        &id_hash,
        &old_bucket,
        &old_index,
        "h",
        "1",
        "-1",
        "0",
        "1",
        "-1",
        &field,
        policy.key(),
        &policy.meter_unit().to_string(),
        &policy.meter_drain().to_string(),
        &policy.capacity().to_string(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();

    let raw = rt.block_on(async {
        redis::Client::open(url.as_str()).expect("url").get_multiplexed_async_connection().await.expect("connect")
    });
    let mut rounds = Vec::new();
    for round in 0..ROUNDS {
        let s1 = rt.block_on(one_caller(&store, &policy, id));
        let b1 = redis_benchmark(server.port, &["-c", "1", "-n", &CALLS_1.to_string()], &args);
        let r1 = rt.block_on(raw_one_caller(raw.clone(), &args));
        let s50 = rt.block_on(many_callers(&store, &policy, id));
        let b50 = redis_benchmark(server.port, &["-c", "50", "-P", "16", "-n", &CALLS_50.to_string()], &args);
        eprintln!(
            "round {round}: 1 caller: store {s1:.0}/s, redis-benchmark -c 1 {b1:.0}/s, bare redis-rs {r1:.0}/s; \
             50 callers: store {s50:.0}/s, redis-benchmark -c 50 -P 16 {b50:.0}/s"
        );
        rounds.push([s1, b1, r1, s50, b50]);
    }
    let best = |i: usize| rounds.iter().map(|r| r[i]).fold(0f64, f64::max);
    let median_ratio = |a: usize, b: usize| {
        let mut v: Vec<f64> = rounds.iter().map(|r| r[a] / r[b]).collect();
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (store1, bench1, raw1, store50, bench50) = (best(0), best(1), best(2), best(3), best(4));
    let version = Command::new("redis-server").arg("--version").output().map(|o| o.stdout).unwrap_or_default();
    let version = String::from_utf8_lossy(&version);
    println!(
        "| case | floodgate-redis store | redis-benchmark, same EVALSHA | ratio of bests | median of per-round ratios | bar |"
    );
    println!("|---|---|---|---|---|---|");
    println!(
        "| 1 caller (`-c 1`) | {store1:.0} hits/s | {bench1:.0} req/s | {:.2} | {:.2} | ≥ 0.90 |",
        store1 / bench1,
        median_ratio(0, 1)
    );
    println!(
        "| 50 callers, one connection (`-c 50 -P 16`) | {store50:.0} hits/s | {bench50:.0} req/s | {:.2} | {:.2} | ≥ 0.80 |",
        store50 / bench50,
        median_ratio(3, 4)
    );
    println!(
        "| (reference) 1 caller, bare redis-rs `MultiplexedConnection`, same EVALSHA, no store | {raw1:.0} req/s | {bench1:.0} req/s | {:.2} | {:.2} | |",
        raw1 / bench1,
        median_ratio(2, 1)
    );
    println!();
    per_algorithm(&rt, &store);
    println!();
    println!(
        "Best of {ROUNDS} alternating rounds ({CALLS_1} calls at 1 caller, {CALLS_50} at 50). Script: `{}` (sha {}), GCRA, \
         every hit admitted and written. {}",
        script.name(),
        script.sha(),
        version.trim()
    );
}

async fn one_caller(store: &RedisStore, policy: &Policy, id: &[u8]) -> f64 {
    let start = Instant::now();
    for _ in 0..CALLS_1 {
        let d = store.hit(id, policy, 1).await.expect("hit");
        assert!(d.allowed);
    }
    CALLS_1 as f64 / start.elapsed().as_secs_f64()
}

async fn raw_one_caller(mut conn: redis::aio::MultiplexedConnection, args: &[String]) -> f64 {
    let start = Instant::now();
    for _ in 0..CALLS_1 {
        let v: Vec<i64> = redis::cmd(&args[0]).arg(&args[1..]).query_async(&mut conn).await.expect("evalsha");
        assert_eq!(v[0], 1);
    }
    CALLS_1 as f64 / start.elapsed().as_secs_f64()
}

async fn many_callers(store: &Arc<RedisStore>, policy: &Policy, id: &[u8]) -> f64 {
    let start = Instant::now();
    let tasks: Vec<_> = (0..CALLERS)
        .map(|_| {
            let (store, policy, id) = (store.clone(), policy.clone(), id.to_vec());
            tokio::spawn(async move {
                for _ in 0..CALLS_50 / CALLERS {
                    let d = store.hit(&id, &policy, 1).await.expect("hit");
                    assert!(d.allowed);
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("caller");
    }
    (CALLS_50 / CALLERS * CALLERS) as f64 / start.elapsed().as_secs_f64()
}

/// Runs redis-benchmark with `opts` and the command `args`; returns its requests per second.
fn redis_benchmark(port: u16, opts: &[&str], args: &[String]) -> f64 {
    let out = Command::new("redis-benchmark")
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-q"])
        .args(opts)
        .args(args)
        .output()
        .expect("run redis-benchmark (apt-get install -y redis-tools)");
    let text = String::from_utf8_lossy(&out.stdout);
    // `-q` prints "<command>: <n> requests per second, p50=..." (after \r-separated progress lines).
    let line = text.rsplit('\r').next().unwrap_or_default();
    let rps = line.split(": ").nth(1).and_then(|s| s.split_whitespace().next()).and_then(|n| n.parse::<f64>().ok());
    rps.unwrap_or_else(|| panic!("could not read redis-benchmark's output: {text:?}"))
}

/// Time per hit, one caller, by algorithm: fixed window vs sliding log, admitted and denied at the limit.
fn per_algorithm(rt: &tokio::runtime::Runtime, store: &RedisStore) {
    const CALLS: u64 = 20_000;
    let s = Duration::from_secs;
    let cases: Vec<(&str, Policy, bool)> = vec![
        ("fixed window, admitted", Policy::fixed_window(Policy::MAX_LIMIT, s(3600)).expect("policy"), true),
        // 100 000 per second: every hit admitted, ~20 hits merged per millisecond run, ~1 000 runs in the log.
        ("sliding log, admitted", Policy::sliding_log(Policy::MAX_LOG_LIMIT, s(1)).expect("policy"), true),
        ("fixed window, denied at the limit", Policy::fixed_window(100, s(3600)).expect("policy"), false),
        ("sliding log, denied at the limit (100 runs)", Policy::sliding_log(100, s(3600)).expect("policy"), false),
    ];
    let mut best = vec![f64::MAX; cases.len()];
    for _ in 0..3 {
        for (i, (_, p, admitted)) in cases.iter().enumerate() {
            let id = format!("algo:{i}");
            rt.block_on(async {
                store.delete_buckets(id.as_bytes()).await.expect("delete");
                if !admitted {
                    for _ in 0..p.limit() {
                        store.hit(id.as_bytes(), p, 1).await.expect("fill");
                    }
                }
                let start = Instant::now();
                for _ in 0..CALLS {
                    let d = store.hit(id.as_bytes(), p, 1).await.expect("hit");
                    assert_eq!(d.allowed, *admitted);
                }
                best[i] = best[i].min(start.elapsed().as_secs_f64() * 1e6 / CALLS as f64);
            });
        }
    }
    println!("| one caller, `hit` | µs per hit (best of 3 × {CALLS}) | vs fixed window |");
    println!("|---|---|---|");
    for (i, (name, _, _)) in cases.iter().enumerate() {
        let base = if i < 2 { best[0] } else { best[2] };
        println!("| {name} | {:.1} | {:.2}× |", best[i], best[i] / base);
    }
}
