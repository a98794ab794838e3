//! Redis memory per counter (issue 18): `INFO memory` `used_memory` before and after writing 100 000 counters
//! through the store's public API, with HTTP-style ids and with RLS-style ids (the server's `counter_id` of a
//! domain and a `remote_address` entry). Ignored by default (it takes a few seconds and prints figures); run it
//! with
//!
//! ```sh
//! cargo test -p floodgate-redis --all-features --test it memory -- --ignored --nocapture
//! ```
//!
//! `FG_MEM_COUNTERS=n` writes n counters instead of 100 000, and `FG_MEM_SHARDS_PER_SLOT=n` builds the store with
//! n shards per slot.

use std::sync::Arc;
use std::time::Duration;

use floodgate::{ManualClock, Policy, Store, Timestamp};
use floodgate_redis::RedisStore;

use crate::support::RedisServer;

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn http_id(i: usize) -> Vec<u8> {
    format!("ip:10.{}.{}.{}", i >> 16, (i >> 8) & 255, i & 255).into_bytes()
}

/// What `floodgate_server::rls::counter_id` builds for domain `edge` and one `remote_address` entry: each part
/// prefixed by its length as a big-endian u32.
fn rls_id(i: usize) -> Vec<u8> {
    let mut id = Vec::new();
    for part in
        ["edge".to_owned(), "remote_address".to_owned(), format!("10.{}.{}.{}", i >> 16, (i >> 8) & 255, i & 255)]
    {
        id.extend_from_slice(&u32::try_from(part.len()).unwrap_or(u32::MAX).to_be_bytes());
        id.extend_from_slice(part.as_bytes());
    }
    id
}

fn used_memory(server: &RedisServer) -> u64 {
    let info = server.cli(&["INFO", "memory"]);
    info.lines()
        .find_map(|l| l.strip_prefix("used_memory:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no used_memory in {info}"))
}

/// Bytes of Redis memory per counter for ids made by `id`, one hit each under `policy`.
async fn bytes_per_counter(server: &RedisServer, id: fn(usize) -> Vec<u8>, policy: &Policy) -> f64 {
    // A clock that stands still in the middle of a minute: with the real one, a fixed window's counters written
    // across a minute's end would expire at it and go uncounted.
    let clock = ManualClock::new(Timestamp::from_secs(1_800_000_030));
    let counters = env_or("FG_MEM_COUNTERS", 100_000);
    let per_slot = u16::try_from(env_or("FG_MEM_SHARDS_PER_SLOT", 1)).unwrap_or(1);
    let store = Arc::new(
        RedisStore::builder()
            .url(&server.url())
            .shards_per_slot(per_slot)
            .clock(clock)
            .timeout(Duration::from_secs(10))
            .build()
            .await
            .expect("connect"),
    );
    // One call first, so the scripts are loaded before the baseline.
    store.hit(b"warm-up", policy, 1).await.expect("warm-up");
    tokio::task::block_in_place(|| server.cli(&["FLUSHALL"]));
    let before = tokio::task::block_in_place(|| used_memory(server));
    let tasks: Vec<_> = (0..32)
        .map(|t| {
            let (store, policy) = (store.clone(), policy.clone());
            tokio::spawn(async move {
                for i in (t..counters).step_by(32) {
                    assert!(store.hit(&id(i), &policy, 1).await.expect("hit").allowed);
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("task");
    }
    let after = tokio::task::block_in_place(|| used_memory(server));
    let keys = tokio::task::block_in_place(|| server.cli(&["DBSIZE"]));
    // Every counter is a field of a shard (the watermark field ' ' aside).
    let fields = tokio::task::block_in_place(|| {
        server.cli(&[
            "EVAL",
            "local n = 0 for _, k in ipairs(redis.call('KEYS', '*')) do \
             n = n + redis.call('HLEN', k) - redis.call('HEXISTS', k, ' ') end return n",
            "0",
        ])
    });
    assert_eq!(fields.trim(), counters.to_string(), "every counter is a field");
    let per = (after - before) as f64 / counters as f64;
    let sample = String::from_utf8_lossy(&store.bucket_key(&id(7), policy)).into_owned();
    let (fields, usage, encoding) = tokio::task::block_in_place(|| {
        let key = std::str::from_utf8(&store.bucket_key(&id(7), policy)).map(str::to_owned).unwrap_or_default();
        (
            server.cli(&["--no-raw", "HGETALL", &key]),
            server.cli(&["MEMORY", "USAGE", &key]),
            server.cli(&["OBJECT", "ENCODING", &key]),
        )
    });
    println!("{sample:?}: MEMORY USAGE {}, {}, {}", usage.trim(), encoding.trim(), fields.trim().replace('\n', " "));
    println!(
        "{counters} counters, {per_slot} shard(s) per slot, policy {:?}: used_memory {before} -> {after}, {per:.1} B per counter, {} shards, e.g. {sample:?}",
        policy.key(),
        keys.trim()
    );
    per
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement: run with --ignored --nocapture"]
async fn redis_memory_per_counter() {
    let server = tokio::task::block_in_place(RedisServer::start);
    let version = tokio::task::block_in_place(|| server.cli(&["INFO", "server"]));
    let version = version.lines().find(|l| l.starts_with("redis_version:")).unwrap_or("?").to_owned();
    println!("{version}");
    let http = Policy::fixed_window(100, Duration::from_secs(60)).expect("policy");
    let gcra = Policy::gcra(10, Duration::from_secs(3600)).expect("policy");
    let rls = Policy::fixed_window(100, Duration::from_secs(60)).expect("policy");
    let h = bytes_per_counter(&server, http_id, &http).await;
    let g = bytes_per_counter(&server, http_id, &gcra).await;
    let r = bytes_per_counter(&server, rls_id, &rls).await;
    println!("bytes per counter: http fixed window {h:.1}, http gcra {g:.1}, rls fixed window {r:.1}");
}
