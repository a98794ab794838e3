//! The conformance suite, a differential test against the in-memory store, TTLs, Redis TIME and scripts on a
//! single Redis.

use std::sync::Arc;
use std::time::Duration;

use floodgate::algorithm::sliding_log::MAX_RUN_UNITS;
use floodgate::{Algorithm, BucketInfo, Clock, ManualClock, MemoryStore, Policy, Store, StoreError, Timestamp};
use floodgate_redis::{FailurePolicy, RedisStore};

use crate::support::RedisServer;
use crate::{fresh_prefix, make_single_store, shared_single};

mod conformance {
    use crate::make_single_store;
    floodgate::conformance_tests!(make_single_store);
}

/// The conformance suite again with 4 shards per slot.
mod conformance_sharded {
    use super::*;

    async fn make(clock: ManualClock) -> RedisStore {
        let url = tokio::task::block_in_place(|| shared_single().url());
        RedisStore::builder()
            .url(&url)
            .prefix(fresh_prefix())
            .clock(clock)
            .shards_per_slot(4)
            .timeout(Duration::from_secs(5))
            .build()
            .await
            .expect("connect to the test redis")
    }
    floodgate::conformance_tests!(make);

    /// The ids of one slot spread over its shards, each counts apart, and `delete_buckets` finds an id in its
    /// own shard; zero shards per slot is refused.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn ids_spread_over_the_shards_of_a_slot() {
        let store = make(ManualClock::new(Timestamp::from_secs(1_800_000_000))).await;
        let p = Policy::fixed_window(2, Duration::from_secs(60)).expect("policy");
        let mut shards = std::collections::HashSet::new();
        for i in 0..64 {
            let id = format!("user:{i}");
            shards.insert(store.shard_key(id.as_bytes()));
            assert!(store.hit(id.as_bytes(), &p, 2).await.expect("hit").allowed);
            assert!(!store.hit(id.as_bytes(), &p, 1).await.expect("hit").allowed, "{id}");
        }
        let numbered = shards.iter().filter(|k| !k.starts_with(format!("{}#{{", store.prefix()).as_bytes())).count();
        assert!(numbered > 0 && numbered < shards.len(), "shards 0 to 3 all used: {numbered} of {}", shards.len());
        for i in 0..64 {
            assert_eq!(store.delete_buckets(format!("user:{i}").as_bytes()).await.expect("delete"), 1);
        }
        let url = tokio::task::block_in_place(|| shared_single().url());
        let zero = RedisStore::builder().url(&url).shards_per_slot(0).build().await;
        assert!(matches!(zero, Err(floodgate_redis::RedisStoreError::Config(_))));
    }
}

async fn redis_time_store(prefix: &str) -> RedisStore {
    let url = tokio::task::block_in_place(|| shared_single().url());
    RedisStore::builder().url(&url).prefix(prefix).timeout(Duration::from_secs(5)).build().await.expect("connect")
}

/// xorshift64*: a small deterministic generator, so a failure replays.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next() % n }
    }
}

fn policies() -> Vec<Policy> {
    let s = Duration::from_secs;
    let ten_years = Policy::MAX_WINDOW;
    let p = |r: Result<Policy, floodgate::PolicyError>| r.expect("policy");
    vec![
        p(Policy::fixed_window(5, s(10))),
        p(Policy::sliding_window(7, s(3))),
        p(Policy::token_bucket(3, s(1)).and_then(|p| p.with_burst(5))),
        p(Policy::leaky_bucket(10, s(7))),
        p(Policy::gcra(1000, s(3600)).and_then(|p| p.with_burst(10))),
        // Numbers whose products pass 2^53: the scripts' exact slow path.
        p(Policy::sliding_window(Policy::MAX_LIMIT, ten_years)),
        p(Policy::sliding_window(999_983, ten_years)),
        p(Policy::fixed_window(Policy::MAX_LIMIT, ten_years)),
        p(Policy::gcra(3, ten_years).and_then(|p| p.with_burst(80))),
        p(Policy::token_bucket(7, Duration::from_micros(1_000_003)).and_then(|p| p.with_burst(1 << 20))),
        // Named policies whose numbers (and algorithm) change under live state.
        p(Policy::fixed_window(5, s(10)).and_then(|p| p.named("plan"))),
        p(Policy::fixed_window(9, s(10)).and_then(|p| p.named("plan"))),
        p(Policy::sliding_window(4, s(10)).and_then(|p| p.named("plan"))),
        p(Policy::gcra(5, s(10)).and_then(|p| p.named("meter"))),
        p(Policy::gcra(7, s(3)).and_then(|p| p.with_burst(9)).and_then(|p| p.named("meter"))),
        p(Policy::leaky_bucket(3, s(10)).and_then(|p| p.named("plan"))),
        // Sliding logs: a short window, one not a whole number of ms, a busy one, the largest, and a named one
        // that takes over the other algorithms' "plan" state (and is taken over by them).
        p(Policy::sliding_log(5, s(10))),
        p(Policy::sliding_log(3, Duration::from_micros(2_500_700))),
        p(Policy::sliding_log(40, Duration::from_millis(900))),
        p(Policy::sliding_log(Policy::MAX_LOG_LIMIT, ten_years)),
        p(Policy::sliding_log(4, s(10)).and_then(|p| p.named("plan"))),
    ]
}

/// Thousands of random operations on the Redis store and on the in-memory store, driven by one manual clock:
/// every decision, inspection and deletion count must be identical.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_decides_exactly_as_memory() {
    let clock = ManualClock::new(Timestamp::from_secs(1_800_000_000) + Duration::from_micros(123_457));
    let redis = make_single_store(clock.clone()).await;
    differential(&redis, &clock, 0x9e37_79b9_7f4a_7c15, 20_000).await;
    // FG_DIFF_SEEDS=n runs n more seeds (a longer local check; CI runs the one above).
    let more: u64 = std::env::var("FG_DIFF_SEEDS").ok().and_then(|s| s.parse().ok()).unwrap_or(0);
    for seed in 1..=more {
        let clock = ManualClock::new(Timestamp::from_secs(1_800_000_000) + Duration::from_micros(seed * 7_919));
        let redis = make_single_store(clock.clone()).await;
        differential(&redis, &clock, seed.wrapping_mul(0x2545_f491_4f6c_dd1d), 20_000).await;
    }
}

/// Calls the same `Store` method with the same arguments on Redis and on memory, asserts that both answer the
/// same (the message and its arguments follow the call), and evaluates to the answer.
macro_rules! both {
    ($redis:expr, $memory:expr, $method:ident($($arg:expr),*), $($msg:tt)+) => {{
        let r = $redis.$method($($arg),*).await.expect(concat!("redis ", stringify!($method)));
        let m = $memory.$method($($arg),*).await.expect(concat!("memory ", stringify!($method)));
        assert_eq!(r, m, $($msg)+);
        r
    }};
}

/// Redis's inspection as the memory store keeps it: `updated` as a distance from `created`, exact below 2^29 µs,
/// then to the millisecond below 2^29 ms, then to the second, rounded towards `created` (see
/// [`BucketInfo::updated`]). Every other field is compared exactly.
fn as_memory_keeps(info: Option<BucketInfo>) -> Option<BucketInfo> {
    const MAGNITUDE: u64 = (1 << 29) - 1;
    info.map(|mut i| {
        let (created, updated) = (i.created.as_micros(), i.updated.as_micros());
        let d = created.abs_diff(updated);
        let unit = [1, 1_000, 1_000_000].into_iter().find(|u| d / u <= MAGNITUDE).unwrap_or(1_000_000);
        let kept = (d / unit).min(MAGNITUDE) * unit;
        let t = if updated >= created { created + kept } else { created - kept };
        i.updated = Timestamp::from_micros(t);
        i
    })
}

/// Runs `steps` random operations on `redis` and on a fresh memory store driven by `clock`, comparing each.
pub async fn differential(redis: &RedisStore, clock: &ManualClock, seed: u64, steps: usize) {
    let memory = MemoryStore::builder().clock(clock.clone()).cleanup_interval(None).build();
    let ps = policies();
    let ids: [&[u8]; 3] = [b"a", b"b}{", b"\xff\x00"];
    let mut rng = Rng(seed);
    // The last retry_after and reset_after answered: some steps wait exactly that long (or 1 µs less).
    let mut waits: Vec<Duration> = Vec::new();
    for step in 0..steps {
        let p = &ps[rng.below(ps.len() as u64) as usize];
        let id = ids[rng.below(ids.len() as u64) as usize];
        let cap = p.capacity();
        let huge = cap > 1_000_000;
        let what = rng.below(100);
        let ctx = || format!("seed {seed:#x} step {step}: policy {} id {id:?} at {:?}", p.key(), clock.now());
        match what {
            0..=49 => {
                let cost = match rng.below(10) {
                    0 => 0,
                    1 => cap + 1 + rng.below(3),
                    _ if huge => rng.below(cap / 3 + 1),
                    _ => 1 + rng.below(cap.min(4)),
                };
                let r = both!(redis, memory, hit(id, p, cost), "hit cost {cost}: {}", ctx());
                // (Up to a day: time must stay below 2^53 µs, see below.)
                waits = [r.retry_after, Some(r.reset_after)]
                    .into_iter()
                    .flatten()
                    .filter(|d| !d.is_zero() && *d <= Duration::from_secs(86_400))
                    .collect();
            }
            50..=59 => {
                let cost = match rng.below(16) {
                    // Past one run of the log (2^20 - 1 units), which splits (memory) or merges (Redis).
                    0 if p.algorithm() == Algorithm::SlidingLog => {
                        [MAX_RUN_UNITS - 1, MAX_RUN_UNITS + 3, u64::MAX][rng.below(3) as usize]
                    }
                    _ => rng.below(4),
                };
                both!(redis, memory, inc(id, p, cost), "inc cost {cost}: {}", ctx());
            }
            60..=64 => {
                let used = match rng.below(8) {
                    0 if p.algorithm() == Algorithm::SlidingLog => [MAX_RUN_UNITS + 7, u64::MAX][rng.below(2) as usize],
                    _ => rng.below(cap.min(1 << 40) + 2),
                };
                both!(redis, memory, set(id, p, used), "set {used}: {}", ctx());
            }
            65..=74 => {
                let r = redis.inspect(id, p).await.expect("redis inspect");
                let m = memory.inspect(id, p).await.expect("memory inspect");
                assert_eq!(as_memory_keeps(r), m, "inspect (Redis's answer as memory keeps it): {}", ctx());
            }
            75..=76 => {
                both!(redis, memory, delete_buckets(id), "delete_buckets: {}", ctx());
            }
            // The clock only moves forward here: steps back are the conformance suite's and
            // `a_write_after_a_clock_step_back_keeps_state_alive`'s business (where the memory store differs).
            77..=81 => clock.advance(Duration::from_micros(rng.below(30_000_000))),
            // Up to ~1.3 years at once: the ten-year windows roll over, and time stays below 2^53 µs (year 2255).
            82 => clock.advance(Duration::from_secs(rng.below(40_000_000))),
            83..=87 if !waits.is_empty() => {
                let w = waits[rng.below(waits.len() as u64) as usize];
                clock.advance(if rng.below(2) == 0 { w } else { w - Duration::from_micros(1) });
            }
            _ => clock.advance(Duration::from_micros(rng.below(700_000))),
        }
    }
}

/// The sliding log alone, busier and with a clock that also steps back (the log stands still at the latest time
/// it has seen, in both stores): many hits per millisecond (runs merge), bursts that fill the log with hundreds
/// of runs (long prunes and `retry_after` walks), forced costs past one run, and waits of exactly `retry_after`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sliding_log_decides_exactly_as_memory_with_steps_back() {
    // FG_LOG_SEEDS=n runs n seeds (a longer local check).
    let seeds: u64 = std::env::var("FG_LOG_SEEDS").ok().and_then(|s| s.parse().ok()).unwrap_or(2);
    for seed in 0..seeds {
        log_differential(0x005e_ed0f_1065 + seed * 0x9e37_79b9).await;
    }
}

async fn log_differential(seed: u64) {
    let clock = ManualClock::new(Timestamp::from_secs(1_800_000_000) + Duration::from_micros(999_999));
    let redis = make_single_store(clock.clone()).await;
    let memory = MemoryStore::builder().clock(clock.clone()).cleanup_interval(None).build();
    let ms = Duration::from_millis;
    let ps: Vec<Policy> = [
        Policy::sliding_log(5, Duration::from_secs(10)),
        Policy::sliding_log(3, Duration::from_micros(2_500_700)),
        Policy::sliding_log(40, ms(900)),
        Policy::sliding_log(700, ms(1_500)),
        Policy::sliding_log(1, Duration::from_micros(1)),
    ]
    .into_iter()
    .map(|p| p.expect("policy"))
    .collect();
    let ids: [&[u8]; 2] = [b"x", b"y{}"];
    let mut rng = Rng(seed);
    let mut waits: Vec<Duration> = Vec::new();
    for step in 0..12_000 {
        let p = &ps[rng.below(ps.len() as u64) as usize];
        let id = ids[rng.below(2) as usize];
        let cap = p.capacity();
        let ctx = || format!("seed {seed:#x} step {step}: policy {} id {id:?} at {:?}", p.key(), clock.now());
        match rng.below(100) {
            0..=54 => {
                let cost = match rng.below(12) {
                    0 => 0,
                    1 => cap + 1,
                    2 => 1 + rng.below(cap),
                    _ => 1 + rng.below(cap.min(3)),
                };
                let r = both!(redis, memory, hit(id, p, cost), "hit cost {cost}: {}", ctx());
                waits = [r.retry_after, Some(r.reset_after)].into_iter().flatten().filter(|d| !d.is_zero()).collect();
            }
            55..=62 => {
                let cost = match rng.below(10) {
                    0 => [MAX_RUN_UNITS, MAX_RUN_UNITS + 1, u64::MAX][rng.below(3) as usize],
                    _ => rng.below(4),
                };
                let r = both!(redis, memory, inc(id, p, cost), "inc cost {cost}: {}", ctx());
                waits = r.retry_after.into_iter().filter(|d| !d.is_zero()).collect();
            }
            63..=65 => {
                let used = match rng.below(6) {
                    0 => MAX_RUN_UNITS + rng.below(3),
                    _ => rng.below(cap + 2),
                };
                both!(redis, memory, set(id, p, used), "set {used}: {}", ctx());
            }
            66..=73 => {
                let r = redis.inspect(id, p).await.expect("redis inspect");
                let m = memory.inspect(id, p).await.expect("memory inspect");
                assert_eq!(as_memory_keeps(r), m, "inspect (Redis's answer as memory keeps it): {}", ctx());
            }
            74 => {
                both!(redis, memory, delete_buckets(id), "delete_buckets: {}", ctx());
            }
            75..=79 if !waits.is_empty() => {
                let w = waits[rng.below(waits.len() as u64) as usize];
                clock.advance(if rng.below(2) == 0 { w } else { w - Duration::from_micros(1) });
            }
            80..=83 => {
                let back = Duration::from_micros(rng.below(3_000_000));
                clock.set(Timestamp::from_micros(clock.now().as_micros() - back.as_micros() as u64));
            }
            84..=89 => clock.advance(Duration::from_micros(rng.below(3_000_000))),
            // Mostly within one millisecond, so hits merge into runs.
            _ => clock.advance(Duration::from_micros(rng.below(1_500))),
        }
    }
}

/// Every key the store writes has a TTL (read back with PTTL), under every algorithm and operation, with
/// Redis TIME and with an injected clock.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_key_has_a_millisecond_ttl() {
    let prefix = fresh_prefix();
    let timed = redis_time_store(&prefix).await;
    let clock = ManualClock::new(Timestamp::now_system());
    let url = tokio::task::block_in_place(|| shared_single().url());
    let clocked = RedisStore::builder()
        .url(&url)
        .prefix(&prefix)
        .clock(clock.clone())
        .ttl_slack(Duration::from_millis(1))
        .build()
        .await
        .expect("connect");
    let ps: Vec<Policy> =
        Algorithm::ALL.into_iter().map(|a| Policy::new(a, 5, Duration::from_secs(30)).expect("policy")).collect();
    for (i, p) in ps.iter().enumerate() {
        for id in [&b"ttl:a"[..], b"ttl:{b}", b""] {
            timed.hit(id, p, 2).await.expect("hit");
            timed.inc(id, p, 9).await.expect("inc");
            clocked.hit(&[id, b"c"].concat(), p, 1).await.expect("hit");
            clocked.set(&[id, b"d"].concat(), p, 3).await.expect("set");
        }
        timed.set(b"ttl:set", p, 1 + i as u64).await.expect("set");
    }
    timed.delete_buckets(b"ttl:a").await.expect("delete");

    let client = redis::Client::open(url.as_str()).expect("client");
    let mut con = client.get_multiplexed_async_connection().await.expect("connect");
    let keys: Vec<Vec<u8>> =
        redis::cmd("KEYS").arg(format!("{prefix}[:{{#]*")).query_async(&mut con).await.expect("KEYS");
    // The shards of the ids left (ttl:{b}, "", 6 clocked ids, ttl:set), holding their 6 policies' buckets, + the
    // sliding log's 9 run sets; ttl:a was deleted.
    assert_eq!(Algorithm::ALL.len(), 6);
    let ids: [&[u8]; 9] = [b"ttl:{b}", b"", b"ttl:ac", b"ttl:ad", b"ttl:{b}c", b"ttl:{b}d", b"c", b"d", b"ttl:set"];
    let shards: std::collections::HashSet<Vec<u8>> = ids.iter().map(|id| timed.shard_key(id)).collect();
    let names = keys.iter().map(|k| String::from_utf8_lossy(k)).collect::<Vec<_>>();
    assert_eq!(keys.len(), shards.len() + 9, "keys: {names:?}");
    assert!(shards.iter().all(|s| keys.contains(s)), "keys: {names:?}");
    for k in &keys {
        let pttl: i64 = redis::cmd("PTTL").arg(k).query_async(&mut con).await.expect("PTTL");
        let name = String::from_utf8_lossy(k);
        assert!(pttl > 0, "key {name} has no TTL (PTTL {pttl})");
        // No state outlives its reset: two windows, or 11 units of 6 s for a meter hit 2 and forced 9 (+ rounding).
        assert!(pttl <= 66_002, "key {name} lives too long: PTTL {pttl}");
    }
    for gone in [format!("{prefix}:{{ttl:a}}"), format!("{prefix}{{ttl:a}}")] {
        assert!(!keys.iter().any(|k| k.starts_with(gone.as_bytes())), "deleted id left keys");
    }
    // The sliding log's run sets: sorted sets beside their buckets, in the id's hash tag.
    let logs: Vec<&Vec<u8>> = keys.iter().filter(|k| k.windows(2).any(|w| w == b"}#")).collect();
    assert_eq!(logs.len(), 9);
    for k in logs {
        let t: String = redis::cmd("TYPE").arg(k).query_async(&mut con).await.expect("TYPE");
        assert_eq!(t, "zset", "{}", String::from_utf8_lossy(k));
    }
}

/// With Redis TIME (the default), decisions work and windows follow Redis's clock.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_time_decides() {
    let store = redis_time_store(&fresh_prefix()).await;
    for a in Algorithm::ALL {
        let p = Policy::new(a, 4, Duration::from_secs(60)).expect("policy");
        for i in 0..4 {
            let d = store.hit(b"k", &p, 1).await.expect("hit");
            assert!(d.allowed, "{a}: hit {i}: {d:?}");
        }
        let d = store.hit(b"k", &p, 1).await.expect("hit");
        // (A sliding window may ask to wait into the next window: at most two windows.)
        assert!(!d.allowed && d.retry_after.is_some_and(|r| r <= Duration::from_secs(120)), "{a}: {d:?}");
        let info = store.inspect(b"k", &p).await.expect("inspect").expect("state");
        assert_eq!(info.used, 4, "{a}");
        let age = Timestamp::now_system().saturating_duration_since(info.created);
        assert!(age < Duration::from_secs(5), "{a}: created {:?} is not Redis's now", info.created);
    }
}

/// Racing tasks on one key over Redis TIME admit exactly the limit, for every algorithm.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_hits_admit_exactly_the_limit() {
    let store = Arc::new(redis_time_store(&fresh_prefix()).await);
    crate::assert_racing_hits_admit_exactly_the_limit(store).await;
}

/// After SCRIPT FLUSH (what a restart or failover does to the script cache) the store reloads its scripts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scripts_are_reloaded_after_noscript() {
    // A server of its own: on the shared one, another test's EVAL could reload the script first.
    let server = tokio::task::block_in_place(RedisServer::start);
    let store =
        RedisStore::builder().url(&server.url()).timeout(Duration::from_secs(5)).build().await.expect("connect");
    let p = Policy::gcra(10, Duration::from_secs(10)).expect("policy");
    assert!(store.hit(b"k", &p, 1).await.expect("hit").allowed);
    assert!(tokio::task::block_in_place(|| server.cli(&["SCRIPT", "FLUSH"])).contains("OK"));
    let d = store.hit(b"k", &p, 1).await.expect("hit after flush");
    assert_eq!(d.remaining, 8);
    // Loaded by the first call (EVALSHA, NOSCRIPT, EVAL), and once more after the flush.
    assert_eq!(store.stats().script_reloads, 2);
    assert_eq!(store.delete_buckets(b"k").await.expect("delete"), 1);
}

/// An id over the maximum length is refused as an invalid id, whatever the failure policy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overlong_ids_are_invalid() {
    let url = tokio::task::block_in_place(|| shared_single().url());
    let store = RedisStore::builder()
        .url(&url)
        .prefix(fresh_prefix())
        .max_id_len(16)
        .failure_policy(FailurePolicy::FailOpen)
        .build()
        .await
        .expect("connect");
    let p = Policy::fixed_window(1, Duration::from_secs(1)).expect("policy");
    assert!(matches!(store.hit(&[b'x'; 17], &p, 1).await, Err(StoreError::InvalidId(_))));
    assert!(store.hit(&[b'x'; 16], &p, 1).await.expect("hit").allowed);
}

/// Long ids work (they used to answer InvalidId past 4096 bytes): a 20 000-byte id is limited exactly and
/// `delete_buckets` clears it, two long ids sharing a 20 000-byte prefix keep apart, a 64 KiB id works, and every
/// key of a long id is short (its SHA-256 inside the hash tag) while ids up to 4096 bytes keep their old keys.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_ids_are_hashed_and_limited_exactly() {
    let store = redis_time_store(&fresh_prefix()).await;
    let prefix = store.prefix().to_owned();
    let h = Duration::from_secs(3600);
    let every = [
        Policy::fixed_window(5, h),
        Policy::sliding_window(7, h),
        Policy::token_bucket(3, h).and_then(|p| p.with_burst(5)),
        Policy::leaky_bucket(4, h),
        Policy::gcra(1000, h).and_then(|p| p.with_burst(10)),
        Policy::sliding_log(6, h),
    ];
    for p in every.into_iter().map(|p| p.expect("policy")) {
        let mut a = vec![b'x'; 20_000];
        let mut b = a.clone();
        a.push(b'a');
        b.push(b'b');
        let cap = p.capacity();
        for i in 0..cap {
            assert!(store.hit(&a, &p, 1).await.expect("hit a").allowed, "{p:?}: hit {i} of {cap}");
        }
        assert!(!store.hit(&a, &p, 1).await.expect("hit a").allowed, "{p:?}: past the limit");
        // The other long id shares nothing with the first.
        assert!(store.hit(&b, &p, 1).await.expect("hit b").allowed, "{p:?}: b shares a's state");
        assert_eq!(store.inspect(&b, &p).await.expect("inspect b").map(|i| i.used), Some(1));
        assert_eq!(store.delete_buckets(&a).await.expect("delete a"), 1, "{p:?}");
        assert!(store.inspect(&a, &p).await.expect("inspect a").is_none());
        assert!(store.hit(&a, &p, 1).await.expect("hit a after delete").allowed);
        assert_eq!(store.delete_buckets(&a).await.expect("delete a"), 1);
        assert_eq!(store.delete_buckets(&b).await.expect("delete b"), 1);
    }
    let p = Policy::fixed_window(1, Duration::from_secs(60)).expect("policy");
    let huge = vec![0xffu8; 64 * 1024];
    assert!(store.hit(&huge, &p, 1).await.expect("64 KiB id").allowed);
    assert!(!store.hit(&huge, &p, 1).await.expect("64 KiB id").allowed);
    let key = store.bucket_key(&huge, &p);
    assert!(key.starts_with(format!("{prefix}#{{").as_bytes()) && key.len() < 200, "{key:?}");
    let field = store.field(&huge, &p);
    assert!(field.starts_with(b"%h") && field.len() < 64, "{field:?}");
    let ttl = tokio::task::block_in_place(|| {
        shared_single().cli(&["PTTL", std::str::from_utf8(&key).expect("the hashed key is ascii")])
    });
    assert!(ttl.trim().parse::<i64>().is_ok_and(|t| t > 0), "{ttl}");
    let edge = vec![b'e'; 4096];
    assert!(store.hit(&edge, &p, 1).await.expect("4096-byte id").allowed);
}

/// A key of an id holding another Redis type (a string SET where the bucket's hash, the index's set or a sliding
/// log's sorted set belongs) fails that id's calls with a clear WRONGTYPE error naming the key, counted in
/// `wrong_type` under every failure policy; `delete_buckets` of the id clears it and the id works again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_type_keys_are_named_counted_and_cleared_by_delete() {
    let url = tokio::task::block_in_place(|| shared_single().url());
    let h = Duration::from_secs(3600);
    let log = Policy::sliding_log(3, h).expect("policy");
    let gcra = Policy::gcra(3, h).expect("policy");
    for failure in [FailurePolicy::Error, FailurePolicy::FailOpen, FailurePolicy::FailClosed] {
        let store = RedisStore::builder()
            .url(&url)
            .prefix(fresh_prefix())
            .failure_policy(failure)
            .timeout(Duration::from_secs(5))
            .build()
            .await
            .expect("connect");
        let spoil = |key: Vec<u8>| {
            let key = String::from_utf8(key).expect("ascii key");
            assert!(tokio::task::block_in_place(|| shared_single().cli(&["SET", &key, "oops"])).contains("OK"));
            key
        };
        let cases: [(&[u8], &Policy, Vec<u8>); 4] = [
            (b"bucket", &gcra, store.bucket_key(b"bucket", &gcra)),
            (b"shard", &gcra, store.shard_key(b"shard")),
            (b"log", &log, store.log_key(b"log", &log)),
            (b"logbucket", &log, store.bucket_key(b"logbucket", &log)),
        ];
        for (n, (id, p, key)) in cases.into_iter().enumerate() {
            let key = spoil(key);
            let before = store.stats();
            let r = store.hit(id, p, 1).await;
            match failure {
                FailurePolicy::Error => {
                    let e = r.expect_err("a wrong type fails").to_string();
                    assert!(e.contains("WRONGTYPE") && e.contains(&key), "{failure:?} {key}: {e}");
                }
                FailurePolicy::FailOpen => {
                    let d = r.expect("fail open");
                    assert!(d.allowed && d.fallback, "{d:?}");
                }
                FailurePolicy::FailClosed => {
                    let d = r.expect("fail closed");
                    assert!(!d.allowed && d.fallback, "{d:?}");
                }
            }
            let inspected = store.inspect(id, p).await.expect_err("inspect fails too").to_string();
            assert!(inspected.contains("WRONGTYPE") && inspected.contains(&key), "{inspected}");
            let after = store.stats();
            assert_eq!(after.wrong_type - before.wrong_type, 2, "{failure:?} {key}: {after:?}");
            assert_eq!(after.failures - before.failures, 2, "{failure:?} {key}: {after:?}");
            assert_eq!(after.wrong_type, 2 * (n as u64 + 1));
            // The reset recovers the id: the spoilt key is gone and the id decides again.
            assert_eq!(store.delete_buckets(id).await.expect("delete clears a wrong type"), 0, "{key}");
            let ty = tokio::task::block_in_place(|| shared_single().cli(&["TYPE", &key]));
            assert_eq!(ty.trim(), "none", "{key}");
            for _ in 0..3 {
                assert!(store.hit(id, p, 1).await.expect("hit after the reset").allowed, "{key}");
            }
            assert!(!store.hit(id, p, 1).await.expect("hit after the reset").allowed, "{key}");
            assert_eq!(store.delete_buckets(id).await.expect("delete"), 1);
        }
        let s = store.stats();
        match failure {
            FailurePolicy::Error => assert_eq!(s.errors, 8, "{s:?}"),
            FailurePolicy::FailOpen => assert_eq!((s.failed_open, s.errors), (4, 4), "{s:?}"),
            FailurePolicy::FailClosed => assert_eq!((s.failed_closed, s.errors), (4, 4), "{s:?}"),
        }
    }
}

/// The builder refuses a prefix that would break the hash tag, and an unreachable Redis.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn builder_rejects_bad_config() {
    let url = tokio::task::block_in_place(|| shared_single().url());
    assert!(RedisStore::builder().url(&url).prefix("a{b}").build().await.is_err());
    assert!(RedisStore::builder().build().await.is_err());
    let port = crate::support::free_port();
    let down = RedisStore::builder()
        .url(&format!("redis://127.0.0.1:{port}/"))
        .connect_timeout(Duration::from_millis(300))
        .build()
        .await;
    assert!(down.is_err());
}

/// A write made while the clock stands behind the state (after a step back) does not shorten the state's life:
/// later hits still see it. (The bucket's expiry is when its *state* is empty, from the state's own time.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_after_a_clock_step_back_keeps_state_alive() {
    for a in Algorithm::ALL {
        let clock = ManualClock::new(Timestamp::from_secs(1_800_000_000));
        let redis = make_single_store(clock.clone()).await;
        let memory = MemoryStore::builder().clock(clock.clone()).cleanup_interval(None).build();
        let p = Policy::new(a, 5, Duration::from_secs(10)).expect("policy");
        clock.advance(Duration::from_secs(5));
        for s in [&redis as &dyn floodgate::DynStore, &memory] {
            s.hit_dyn(b"k", &p, 4).await.expect("hit");
        }
        clock.set(Timestamp::from_secs(1_800_000_000 + 2)); // three seconds back
        for s in [&redis as &dyn floodgate::DynStore, &memory] {
            s.inc_dyn(b"k", &p, 1).await.expect("inc");
        }
        // Just before the state empties, judged at its own time (+5 s): a hit of the full capacity is refused.
        clock.set(Timestamp::from_secs(1_800_000_000 + 5));
        let reset = redis.hit(b"k", &p, 0).await.expect("check").reset_after;
        clock.advance(reset - Duration::from_micros(1));
        let r = redis.hit(b"k", &p, 5).await.expect("redis hit");
        let m = memory.hit(b"k", &p, 5).await.expect("memory hit");
        assert!(!r.allowed, "{a}: redis admitted 5 more while state was live: {r:?}");
        eprintln!("{a}: memory store answered {m:?}");
    }
}

/// A password-protected Redis: credentials in the URL are passed through to the client.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_in_the_url_are_used() {
    let server = tokio::task::block_in_place(|| RedisServer::start_with(&["--requirepass", "s3cret"]));
    let p = Policy::fixed_window(1, Duration::from_secs(10)).expect("policy");
    let url = format!("redis://:s3cret@127.0.0.1:{}/", server.port);
    let store = RedisStore::builder().url(&url).build().await.expect("connect with the password");
    assert!(store.hit(b"k", &p, 1).await.expect("hit").allowed);
    let wrong = format!("redis://:nope@127.0.0.1:{}/", server.port);
    assert!(RedisStore::builder().url(&wrong).build().await.is_err(), "a wrong password must not connect");
}

/// `keep` (Hammer's `expiry_ms`) holds written buckets at least that long, without keeping state alive.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_extends_ttls_not_state() {
    let clock = ManualClock::new(Timestamp::from_secs(1_800_000_000));
    let url = tokio::task::block_in_place(|| shared_single().url());
    let store = RedisStore::builder()
        .url(&url)
        .prefix(fresh_prefix())
        .clock(clock.clone())
        .keep(Duration::from_secs(120))
        .ttl_slack(Duration::from_millis(1))
        .build()
        .await
        .expect("connect");
    let p = Policy::fixed_window(2, Duration::from_secs(1)).expect("policy");
    store.hit(b"k", &p, 2).await.expect("hit");
    let client = redis::Client::open(url.as_str()).expect("client");
    let mut con = client.get_multiplexed_async_connection().await.expect("connect");
    for key in [store.bucket_key(b"k", &p), store.shard_key(b"k")] {
        let pttl: i64 = redis::cmd("PTTL").arg(&key).query_async(&mut con).await.expect("PTTL");
        assert!((119_000..=120_001).contains(&pttl), "PTTL {pttl}");
    }
    assert!(!store.hit(b"k", &p, 1).await.expect("hit").allowed);
    clock.advance(Duration::from_secs(1));
    assert_eq!(store.inspect(b"k", &p).await.expect("inspect"), None, "the window's state is gone");
    assert!(store.hit(b"k", &p, 2).await.expect("hit").allowed);
}

/// The scripts' exact `floor(a × b / c)` (doubles only, long multiplication past 2^53) against u128 arithmetic,
/// run inside Redis on random operands of up to 53 bits, and on the edges.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lua_muldiv_is_exact_past_2_pow_53() {
    let prelude = floodgate_redis::ScriptSource::for_algorithm(Algorithm::FixedWindow).source();
    let begin = prelude.find("-- muldiv:begin").expect("marker");
    let end = prelude.find("-- muldiv:end").expect("marker");
    let script = format!(
        "local MAX = 9007199254740992\nlocal floor = math.floor\n{}\nlocal out = {{}}\n\
         for i = 1, #ARGV, 3 do\n\
           local q, r = muldiv(tonumber(ARGV[i]), tonumber(ARGV[i + 1]), tonumber(ARGV[i + 2]))\n\
           out[#out + 1] = string.format('%.0f', q)\n\
           out[#out + 1] = string.format('%.0f', r)\n\
         end\n\
         return out",
        &prelude[begin..end]
    );
    const MAX: u64 = 1 << 53;
    let mut rng = Rng(0x1234_5678_9abc_def1);
    let mut cases: Vec<(u64, u64, u64)> = vec![
        (MAX - 1, MAX - 1, MAX - 1),
        (MAX - 1, MAX - 2, MAX - 1),
        (MAX - 1, 1, MAX - 1),
        (MAX - 1, MAX - 1, MAX),
        (0, MAX - 1, 7),
        (123_456_789, 987_654_321, 17),
        (Policy::MAX_LIMIT, Policy::MAX_WINDOW.as_micros() as u64 - 1, Policy::MAX_WINDOW.as_micros() as u64),
    ];
    while cases.len() < 3_000 {
        let bits = |rng: &mut Rng| rng.next() >> (11 + rng.below(53));
        let (a, b) = (bits(&mut rng) % MAX, bits(&mut rng) % MAX);
        // c large enough that the quotient stays below 2^53, as the scripts guarantee.
        let min_c = ((a as u128 * b as u128) >> 53) as u64 + 1;
        let c = min_c + rng.below(MAX - min_c + 1);
        if c > 0 && c <= MAX {
            cases.push((a, b, c));
        }
    }
    let url = tokio::task::block_in_place(|| shared_single().url());
    let client = redis::Client::open(url.as_str()).expect("client");
    let mut con = client.get_multiplexed_async_connection().await.expect("connect");
    for chunk in cases.chunks(500) {
        let mut cmd = redis::cmd("EVAL");
        cmd.arg(&script).arg(0);
        for &(a, b, c) in chunk {
            cmd.arg(a).arg(b).arg(c);
        }
        let out: Vec<String> = cmd.query_async(&mut con).await.expect("EVAL muldiv");
        for (i, &(a, b, c)) in chunk.iter().enumerate() {
            let p = a as u128 * b as u128;
            let (q, r) = ((p / c as u128).to_string(), (p % c as u128).to_string());
            assert_eq!((&out[2 * i], &out[2 * i + 1]), (&q, &r), "muldiv({a}, {b}, {c})");
        }
    }
}

/// A rolling upgrade keeps every count: buckets written by the per-bucket layout of earlier releases (a hash per bucket,
/// `<prefix>:{<id>}:<policy key>`, listed in the id's index set `<prefix>:{<id>}`, and a sliding log's runs beside
/// them) are read when the id's hash has no field for the policy, moved into it on the next write, and counted and
/// deleted by `delete_buckets`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn buckets_of_the_old_layout_are_still_read_and_migrated() {
    let t = 1_800_000_000_000_000u64; // µs; a multiple of 60 s
    let clock = ManualClock::new(Timestamp::from_micros(t));
    let store = make_single_store(clock.clone()).await;
    let prefix = store.prefix().to_owned();
    let fixed = Policy::fixed_window(5, Duration::from_secs(60)).expect("policy");
    let log = Policy::sliding_log(3, Duration::from_secs(60)).expect("policy");
    let cli = |args: &[&str]| tokio::task::block_in_place(|| shared_single().cli(args));
    let text = |b: Vec<u8>| String::from_utf8(b).expect("utf-8");
    let in_shard = |id: &str, p: &Policy| {
        cli(&["HEXISTS", &text(store.shard_key(id.as_bytes())), &text(store.field(id.as_bytes(), p))]).trim() == "1"
    };
    let old = |id: &str, p: &Policy| (format!("{prefix}:{{{id}}}:{}", p.key()), format!("{prefix}:{{{id}}}"));
    let write_old = |id: &str, p: &Policy, fields: &[(&str, String)]| {
        let (bucket, index) = old(id, p);
        let mut args = vec!["HSET".to_owned(), bucket.clone()];
        for (f, v) in fields {
            args.extend([(*f).to_owned(), v.clone()]);
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        cli(&args);
        cli(&["PEXPIRE", &bucket, "600000"]);
        cli(&["SADD", &index, &bucket]);
        cli(&["PEXPIRE", &index, "600000"]);
    };
    let (ts, end) = (t.to_string(), (t + 60_000_000).to_string());
    // A fixed window with 3 of 5 used.
    let fixed_state = |n: &str| {
        vec![
            ("k", "w".to_owned()),
            ("a", ts.clone()),
            ("b", n.to_owned()),
            ("c", "0".to_owned()),
            ("cr", ts.clone()),
            ("up", ts.clone()),
            ("e", end.clone()),
        ]
    };
    write_old("user:1", &fixed, &fixed_state("3"));
    assert_eq!(store.inspect(b"user:1", &fixed).await.expect("inspect").map(|i| i.used), Some(3));
    let d = store.hit(b"user:1", &fixed, 1).await.expect("hit");
    assert!(d.allowed && d.remaining == 1, "{d:?}");
    let (bucket, index) = old("user:1", &fixed);
    assert_eq!(cli(&["EXISTS", &bucket, &index]).trim(), "0", "the old bucket and its index are retired");
    assert!(in_shard("user:1", &fixed), "the state moved into the shard");
    assert!(store.hit(b"user:1", &fixed, 1).await.expect("hit").allowed);
    assert!(!store.hit(b"user:1", &fixed, 1).await.expect("hit").allowed, "3 old + 2 new = the limit");

    // A sliding log with 2 of 3 units in one run, 10 s ago.
    let ms = (t / 1000 - 10_000).to_string();
    let run = format!("{ms}:2");
    let log_key = String::from_utf8(store.log_key(b"user:2", &log)).expect("ascii");
    assert_eq!(log_key, format!("{prefix}:{{user:2}}#{}", log.key()), "the log keeps its key");
    cli(&["ZADD", &log_key, &ms, &run]);
    cli(&["PEXPIRE", &log_key, "600000"]);
    let log_state = vec![
        ("k", "l".to_owned()),
        ("a", "2".to_owned()),
        ("b", (t - 10_000_000).to_string()),
        ("c", run.clone()),
        ("d", run.clone()),
        ("cr", (t - 10_000_000).to_string()),
        ("up", (t - 10_000_000).to_string()),
        ("e", (t + 50_000_000).to_string()),
    ];
    write_old("user:2", &log, &log_state);
    let d = store.hit(b"user:2", &log, 1).await.expect("hit");
    assert!(d.allowed && d.remaining == 0, "{d:?}");
    assert!(!store.hit(b"user:2", &log, 1).await.expect("hit").allowed);
    clock.advance(Duration::from_secs(50));
    assert!(store.hit(b"user:2", &log, 1).await.expect("hit").allowed, "the old run left at its time");

    // A named policy whose algorithm changed, denied outright: the old bucket becomes the new algorithm's empty
    // state in the id's hash, which gets a TTL.
    let named_fixed = fixed.clone().named("plan").expect("named");
    let named_gcra = Policy::gcra(2, Duration::from_secs(60)).and_then(|p| p.named("plan")).expect("named");
    write_old("user:5", &named_fixed, &fixed_state("3"));
    assert!(!store.hit(b"user:5", &named_gcra, 9).await.expect("hit").allowed);
    assert!(in_shard("user:5", &named_gcra));
    let pttl: i64 = cli(&["PTTL", &text(store.shard_key(b"user:5"))]).trim().parse().expect("PTTL");
    assert!(pttl > 0, "PTTL {pttl}");
    assert_eq!(cli(&["EXISTS", &old("user:5", &named_fixed).0]).trim(), "0");

    // delete_buckets counts and deletes both layouts' buckets, a policy in both once.
    write_old("user:3", &fixed, &fixed_state("0"));
    write_old("user:3", &log, &log_state);
    let gcra = Policy::gcra(5, Duration::from_secs(60)).expect("policy");
    store.hit(b"user:3", &gcra, 1).await.expect("hit");
    let fixed_now = {
        let (a, e) = (t + 60_000_000, t + 120_000_000);
        vec![
            ("k", "w".to_owned()),
            ("a", a.to_string()),
            ("b", "2".to_owned()),
            ("c", "0".to_owned()),
            ("cr", a.to_string()),
            ("up", a.to_string()),
            ("e", e.to_string()),
        ]
    };
    clock.advance(Duration::from_secs(10)); // t + 60 s: the old log is dead, the new fixed window holds 2
    write_old("user:3", &fixed, &fixed_now);
    write_old("user:4", &fixed, &fixed_now);
    store.hit(b"user:4", &fixed, 1).await.expect("hit"); // moves it into the hash
    write_old("user:4", &fixed, &fixed_now); // an old server writes it again
    assert_eq!(store.delete_buckets(b"user:3").await.expect("delete"), 2, "gcra (new) and the fixed window (old)");
    assert_eq!(store.delete_buckets(b"user:4").await.expect("delete"), 1, "one policy, in both layouts");
    for id in ["user:3", "user:4"] {
        let keys = cli(&["KEYS", &format!("{prefix}*{{{id}}}*")]);
        assert!(keys.trim().is_empty(), "{id}: {keys}");
        assert!(!in_shard(id, &fixed) && !in_shard(id, &gcra), "{id}");
    }
}

/// Moves `id`'s field for `policy` from its shard into the id hash of the previous release
/// (`<prefix>{<id>}`, field = the policy key; the packed state is the same), as a server of that release
/// would have written it.
fn move_to_id_hash(store: &RedisStore, id: &str, policy: &Policy) {
    let text = |b: Vec<u8>| String::from_utf8(b).expect("utf-8");
    let (shard, field) = (text(store.shard_key(id.as_bytes())), text(store.field(id.as_bytes(), policy)));
    let url = tokio::task::block_in_place(|| shared_single().url());
    let client = redis::Client::open(url.as_str()).expect("client");
    let mut con = client.get_connection().expect("connect");
    let value: Vec<u8> = redis::cmd("HGET").arg(&shard).arg(&field).query(&mut con).expect("HGET");
    assert!(!value.is_empty(), "{id}: no field {field:?} in {shard}");
    let hash = format!("{}{{{id}}}", store.prefix());
    let () = redis::cmd("HDEL").arg(&shard).arg(&field).query(&mut con).map(|_: i64| ()).expect("HDEL");
    let () = redis::cmd("HSET").arg(&hash).arg(policy.key()).arg(value).query(&mut con).map(|_: i64| ()).expect("HSET");
    let () = redis::cmd("PEXPIRE").arg(&hash).arg(600_000).query(&mut con).map(|_: i64| ()).expect("PEXPIRE");
}

/// A rolling upgrade from the previous release (one hash per id, `<prefix>{<id>}`, a field per policy key) keeps
/// every count: its fields are read while the shard has none for the counter, moved into the shard on the next
/// write, and counted once and deleted by `delete_buckets`, with the sliding logs of both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fields_of_the_id_hash_layout_are_still_read_and_migrated() {
    let clock = ManualClock::new(Timestamp::from_micros(1_800_000_000_000_000));
    let store = make_single_store(clock.clone()).await;
    let prefix = store.prefix().to_owned();
    let cli = |args: &[&str]| tokio::task::block_in_place(|| shared_single().cli(args));
    let m = Duration::from_secs(60);
    let fixed = Policy::fixed_window(5, m).expect("policy");
    let gcra = Policy::gcra(5, m).expect("policy");
    let log = Policy::sliding_log(5, m).expect("policy");
    let named = Policy::sliding_window(5, m).and_then(|p| p.named("plan")).expect("policy");
    for p in [&fixed, &gcra, &log, &named] {
        for _ in 0..3 {
            assert!(store.hit(b"user:1", p, 1).await.expect("hit").allowed);
        }
        move_to_id_hash(&store, "user:1", p);
        assert_eq!(store.inspect(b"user:1", p).await.expect("inspect").map(|i| i.used), Some(3), "{p:?}");
        assert!(store.hit(b"user:1", p, 1).await.expect("hit").allowed, "{p:?}");
        let hash = format!("{prefix}{{user:1}}");
        assert_eq!(cli(&["HEXISTS", &hash, p.key()]).trim(), "0", "{p:?}: the old field is retired");
        let cap = p.capacity();
        let d = store.hit(b"user:1", p, cap - 4).await.expect("hit");
        assert!(d.allowed && d.remaining == 0, "{p:?}: 3 old + 1 + {} new = the limit: {d:?}", cap - 4);
        assert!(!store.hit(b"user:1", p, 1).await.expect("hit").allowed, "{p:?}");
    }
    // A policy live in both layouts (an old server wrote it again after the move) counts once; the logs of both
    // go.
    for p in [&fixed, &log] {
        store.hit(b"user:2", p, 1).await.expect("hit");
        move_to_id_hash(&store, "user:2", p);
        store.hit(b"user:2", p, 1).await.expect("hit");
    }
    store.hit(b"user:2", &gcra, 1).await.expect("hit");
    move_to_id_hash(&store, "user:2", &gcra);
    assert_eq!(store.delete_buckets(b"user:2").await.expect("delete"), 3);
    let keys = cli(&["KEYS", &format!("{prefix}*{{user:2}}*")]);
    assert!(keys.trim().is_empty(), "{keys}");
    assert_eq!(store.delete_buckets(b"user:1").await.expect("delete"), 4);
    let keys = cli(&["KEYS", &format!("{prefix}*")]);
    assert!(keys.trim().is_empty(), "every shard empties: {keys}");
}

/// `delete_buckets` finds the sliding log of a counter from its compact field (the algorithm's letter and the
/// key's numbers) and deletes it, and leaves the other ids of the shard alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_finds_every_counter_and_log_of_the_id_in_its_shard() {
    let clock = ManualClock::new(Timestamp::from_secs(1_800_000_000));
    let store = make_single_store(clock.clone()).await;
    let cli = |args: &[&str]| tokio::task::block_in_place(|| shared_single().cli(args));
    let ids = same_shard_ids(&store, 2);
    let h = Duration::from_secs(3600);
    let every = Algorithm::ALL.map(|a| Policy::new(a, 5, h).expect("policy"));
    for id in &ids {
        for p in &every {
            store.hit(id.as_bytes(), p, 1).await.expect("hit");
        }
    }
    let log = &every[5];
    let log_key = String::from_utf8(store.log_key(ids[0].as_bytes(), log)).expect("utf-8");
    assert_eq!(cli(&["EXISTS", &log_key]).trim(), "1");
    assert_eq!(store.delete_buckets(ids[0].as_bytes()).await.expect("delete"), 6);
    assert_eq!(cli(&["EXISTS", &log_key]).trim(), "0", "the log went with its counter");
    let shard = String::from_utf8(store.shard_key(ids[0].as_bytes())).expect("utf-8");
    assert_eq!(cli(&["HLEN", &shard]).trim(), "6", "the other id's six counters stay");
    for p in &every {
        assert_eq!(store.inspect(ids[1].as_bytes(), p).await.expect("inspect").map(|i| i.used), Some(1));
    }
}

/// `n` ids whose counters share one shard (found by trying `s:0`, `s:1`, ...).
fn same_shard_ids(store: &RedisStore, n: usize) -> Vec<String> {
    let target = store.shard_key(b"s:0");
    (0..).map(|i| format!("s:{i}")).filter(|id| store.shard_key(id.as_bytes()) == target).take(n).collect()
}

/// A shard sheds the fields of expired counters as it grows: new counters in a shard full of dead ones prune
/// them (so a shard holds at most about twice its live counters), and the shard stays in Redis's compact listpack
/// encoding.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shard_prunes_expired_counters_as_it_grows() {
    let clock = ManualClock::new(Timestamp::from_secs(1_800_000_000));
    let store = make_single_store(clock.clone()).await;
    let cli = |args: &[&str]| tokio::task::block_in_place(|| shared_single().cli(args));
    let ids = same_shard_ids(&store, 130);
    let (old, new) = ids.split_at(40);
    let p = Policy::fixed_window(1, Duration::from_secs(1)).expect("policy");
    for id in old {
        assert!(store.hit(id.as_bytes(), &p, 1).await.expect("hit").allowed);
    }
    let shard = String::from_utf8(store.shard_key(b"s:0")).expect("utf-8");
    let fields = |ids: &[String]| {
        let all = cli(&["HKEYS", &shard]);
        ids.iter().filter(|id| all.lines().any(|f| f.starts_with(&format!("{id} ")))).count()
    };
    assert_eq!(fields(old), 40);
    // Past the windows and the TTL slack (60 s with an injected clock): every old counter is dead.
    clock.advance(Duration::from_secs(62));
    for id in new {
        assert!(store.hit(id.as_bytes(), &p, 1).await.expect("hit").allowed);
    }
    assert_eq!(fields(old), 0, "the dead counters were pruned");
    assert_eq!(fields(new), 90, "no live counter was");
    assert_eq!(cli(&["OBJECT", "ENCODING", &shard]).trim(), "listpack");
    for id in new {
        assert!(!store.hit(id.as_bytes(), &p, 1).await.expect("hit").allowed, "{id} kept its count");
    }
}
