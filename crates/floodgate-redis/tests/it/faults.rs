//! Fault tests: Redis killed under load and restarted on the same port; a cluster master killed under load.
//! Every load loop is bounded in count and in time, and talks to loopback only.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use floodgate::{Policy, Store, StoreError};
use floodgate_redis::{FailurePolicy, RedisStore};

use crate::support::{RedisCluster, RedisServer};

/// What one call of the load saw.
#[derive(Debug)]
struct Call {
    at: Duration,
    took: Duration,
    outcome: Result<bool, String>,
}

/// Runs `tasks` tasks of calls on `ids` until `stop` (at most `max_calls` each, at most `max_time`).
fn load(
    store: &Arc<RedisStore>,
    policy: &Policy,
    ids: usize,
    tasks: usize,
    stop: &Arc<AtomicBool>,
    start: Instant,
) -> Vec<tokio::task::JoinHandle<Vec<Call>>> {
    const MAX_CALLS: usize = 200_000;
    const MAX_TIME: Duration = Duration::from_secs(60);
    (0..tasks)
        .map(|t| {
            let (store, policy, stop) = (store.clone(), policy.clone(), stop.clone());
            tokio::spawn(async move {
                let mut calls = Vec::new();
                for i in 0..MAX_CALLS {
                    if stop.load(Ordering::Relaxed) || start.elapsed() > MAX_TIME {
                        break;
                    }
                    let id = format!("user:{}", (t * 7919 + i) % ids);
                    let begin = Instant::now();
                    let r = store.hit(id.as_bytes(), &policy, 1).await;
                    calls.push(Call {
                        at: begin.duration_since(start),
                        took: begin.elapsed(),
                        outcome: r.map(|d| d.allowed).map_err(|e| e.to_string()),
                    });
                    if calls.last().is_some_and(|c| c.outcome.is_err()) {
                        // Do not spin on a dead connection: a failing call is retried after a short pause.
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                }
                calls
            })
        })
        .collect()
}

async fn collect(handles: Vec<tokio::task::JoinHandle<Vec<Call>>>) -> Vec<Call> {
    let mut all = Vec::new();
    for h in handles {
        all.extend(h.await.expect("load task"));
    }
    all.sort_by_key(|c| c.at);
    all
}

/// (a) Redis is killed under load: every call answers by its store's failure policy within the timeout; Redis
/// comes back on the same port and every store recovers by itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_under_load_answers_by_policy_and_recovers() {
    let mut server = tokio::task::block_in_place(RedisServer::start);
    let url = server.url();
    let timeout = Duration::from_millis(200);
    let policy = Policy::fixed_window(1_000_000_000, Duration::from_secs(3600)).expect("policy");
    let mut stores = Vec::new();
    for failure in [FailurePolicy::FailOpen, FailurePolicy::FailClosed, FailurePolicy::Error] {
        let store = RedisStore::builder()
            .url(&url)
            .timeout(timeout)
            .failure_policy(failure)
            .retry_hint(Duration::from_millis(750))
            .build()
            .await
            .expect("connect");
        stores.push((failure, Arc::new(store)));
    }
    let start = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let handles: Vec<_> = stores.iter().map(|(_, s)| load(s, &policy, 100, 4, &stop, start)).collect();

    tokio::time::sleep(Duration::from_millis(300)).await;
    let killed_at = start.elapsed();
    tokio::task::block_in_place(|| server.kill());
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let restarted_at = start.elapsed();
    tokio::task::block_in_place(|| server.restart());
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    stop.store(true, Ordering::Relaxed);

    for ((failure, store), h) in stores.iter().zip(handles) {
        let calls = collect(h).await;
        let stats = store.stats();
        let slowest = calls.iter().map(|c| c.took).max().unwrap_or_default();
        // No caller waits past the timeout (plus scheduling slack on a shared 2-core machine).
        assert!(slowest <= timeout + Duration::from_millis(100), "{failure:?}: a call took {slowest:?}");
        let before: Vec<_> = calls.iter().filter(|c| c.at + c.took < killed_at).collect();
        assert!(!before.is_empty() && before.iter().all(|c| c.outcome == Ok(true)), "{failure:?}: before the kill");
        let during: Vec<_> = calls.iter().filter(|c| c.at > killed_at + timeout && c.at < restarted_at).collect();
        assert!(during.len() >= 4, "{failure:?}: only {} calls while redis was down", during.len());
        for c in &during {
            match failure {
                FailurePolicy::FailOpen => assert_eq!(c.outcome, Ok(true), "{failure:?}: {c:?}"),
                FailurePolicy::FailClosed => assert_eq!(c.outcome, Ok(false), "{failure:?}: {c:?}"),
                FailurePolicy::Error => assert!(c.outcome.is_err(), "{failure:?}: {c:?}"),
            }
        }
        match failure {
            FailurePolicy::FailOpen => assert!(stats.failed_open >= during.len() as u64),
            FailurePolicy::FailClosed => assert!(stats.failed_closed >= during.len() as u64),
            FailurePolicy::Error => assert!(stats.errors >= during.len() as u64),
        }
        // Recovered by itself: the last 500 ms of the load all reached Redis (the fault counters stood still).
        let end = calls.last().map(|c| c.at).unwrap_or_default();
        let tail: Vec<_> = calls.iter().filter(|c| c.at + Duration::from_millis(500) > end).collect();
        assert!(tail.len() >= 4 && tail.iter().all(|c| c.outcome == Ok(true)), "{failure:?}: not recovered");
        // (For FailOpen an allowed call does not show whether Redis answered; for the others it does.)
        let recovered = calls.iter().find(|c| c.at > restarted_at && c.outcome == Ok(true)).map(|c| c.at);
        let after = store.stats();
        let p = Policy::fixed_window(1, Duration::from_secs(60)).expect("policy");
        let id = format!("after:{failure:?}");
        assert!(store.hit(id.as_bytes(), &p, 1).await.expect("hit after restart").allowed);
        assert!(!store.hit(id.as_bytes(), &p, 1).await.expect("hit after restart").allowed, "a real decision");
        assert_eq!((after.failed_open, after.failed_closed, after.errors), {
            let s = store.stats();
            (s.failed_open, s.failed_closed, s.errors)
        });
        eprintln!(
            "{failure:?}: {} calls, {} while down, slowest {slowest:?}, first success {:?} after the restart; {stats:?}",
            calls.len(),
            during.len(),
            recovered.map(|r| r.saturating_sub(restarted_at))
        );
    }
}

/// Calls with FailurePolicy::Error answer within the timeout with Unavailable or Timeout when nothing listens.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn error_policy_reports_unavailable_within_the_timeout() {
    let mut server = tokio::task::block_in_place(RedisServer::start);
    let timeout = Duration::from_millis(150);
    let store = RedisStore::builder().url(&server.url()).timeout(timeout).build().await.expect("connect");
    tokio::task::block_in_place(|| server.kill());
    let p = Policy::gcra(5, Duration::from_secs(1)).expect("policy");
    for _ in 0..10 {
        let begin = Instant::now();
        let r = store.hit(b"k", &p, 1).await;
        assert!(begin.elapsed() <= timeout + Duration::from_millis(100), "took {:?}", begin.elapsed());
        assert!(matches!(r, Err(StoreError::Unavailable(_) | StoreError::Timeout(_))), "{r:?}");
        let r = store.inspect(b"k", &p).await;
        assert!(r.is_err(), "{r:?}");
    }
}

/// (b) A cluster master is killed under load: its replica takes over, calls succeed again by themselves, no
/// panic; errors happen only inside the failover window, which this test measures and prints.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_master_killed_under_load_fails_over() {
    let mut cluster = tokio::task::block_in_place(RedisCluster::start);
    let timeout = Duration::from_millis(500);
    let store = Arc::new(
        RedisStore::builder()
            .cluster(cluster.urls())
            .timeout(timeout)
            .connect_timeout(Duration::from_secs(2))
            .build()
            .await
            .expect("connect to cluster"),
    );
    let policy = Policy::gcra(1_000_000_000, Duration::from_secs(3600)).expect("policy");
    let start = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let handles = load(&store, &policy, 60, 8, &stop, start);

    tokio::time::sleep(Duration::from_millis(500)).await;
    let victim = tokio::task::block_in_place(|| cluster.master_of(&store.shard_key(b"user:0")));
    let killed_at = start.elapsed();
    tokio::task::block_in_place(|| cluster.nodes[victim].kill());
    tokio::task::block_in_place(|| cluster.wait_healthy(Duration::from_secs(30)));
    let healthy_at = start.elapsed();
    // Load goes on until 2 s without an error (at most 30 s).
    let deadline = Instant::now() + Duration::from_secs(30);
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, Ordering::Relaxed);
    let calls = collect(handles).await;
    assert!(Instant::now() < deadline);

    let errors: Vec<_> = calls.iter().filter(|c| c.outcome.is_err()).collect();
    let before = calls.iter().filter(|c| c.at + c.took < killed_at).count();
    assert!(before > 0 && calls.iter().filter(|c| c.at + c.took < killed_at).all(|c| c.outcome.is_ok()));
    let first_error = errors.first().map(|c| c.at);
    let last_error = errors.last().map(|c| c.at + c.took);
    let slowest = calls.iter().map(|c| c.took).max().unwrap_or_default();
    assert!(slowest <= timeout + Duration::from_millis(150), "a call took {slowest:?}");
    if let Some(last) = last_error {
        assert!(errors.iter().all(|c| c.at + c.took >= killed_at), "an error before the kill");
        let end = calls.last().map(|c| c.at).unwrap_or_default();
        assert!(end > last + Duration::from_secs(1), "errors went on until the end: not recovered");
    }
    let after_last = calls.iter().filter(|c| last_error.is_none_or(|l| c.at > l)).count();
    assert!(after_last > 100, "only {after_last} calls after the failover");
    let kinds: std::collections::BTreeSet<String> = errors
        .iter()
        .filter_map(|c| c.outcome.as_ref().err())
        .map(|e| e.chars().take(90).collect::<String>())
        .collect();
    eprintln!(
        "FAILOVER: master {victim} killed at {killed_at:?}; cluster healthy again {:?} after the kill; \
         {} calls, {} errors, first error {:?} after the kill, failover window (kill to last error) {:?}; \
         error kinds {kinds:?}; slowest call {slowest:?}",
        healthy_at - killed_at,
        calls.len(),
        errors.len(),
        first_error.map(|f| f.saturating_sub(killed_at)),
        last_error.map(|l| l.saturating_sub(killed_at)),
    );
    // The window is the cluster's failover (node timeout 2 s + election), not a client that never recovers.
    if let Some(last) = last_error {
        assert!(last.saturating_sub(killed_at) < Duration::from_secs(15), "failover window too long");
    }
}

/// A hung Redis (SIGSTOP: connections stay open, nothing answers): every call returns at its timeout with the
/// failure policy's answer, never later; when Redis answers again, so does the store.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hung_redis_never_holds_a_caller_past_the_timeout() {
    let server = tokio::task::block_in_place(RedisServer::start);
    let timeout = Duration::from_millis(100);
    let store = Arc::new(
        RedisStore::builder()
            .url(&server.url())
            .timeout(timeout)
            .failure_policy(FailurePolicy::FailClosed)
            .build()
            .await
            .expect("connect"),
    );
    let p = Policy::token_bucket(1_000, Duration::from_secs(1)).expect("policy");
    assert!(store.hit(b"k", &p, 1).await.expect("hit").allowed);
    tokio::task::block_in_place(|| server.pause());
    // 20 concurrent callers, twice: each returns by the timeout, denied (fail closed).
    for _ in 0..2 {
        let calls: Vec<_> = (0..20)
            .map(|_| {
                let (store, p) = (store.clone(), p.clone());
                tokio::spawn(async move {
                    let begin = Instant::now();
                    let d = store.hit(b"k", &p, 1).await;
                    (begin.elapsed(), d)
                })
            })
            .collect();
        for c in calls {
            let (took, d) = c.await.expect("task");
            assert!(took >= timeout && took <= timeout + Duration::from_millis(100), "took {took:?}");
            let d = d.expect("fail closed answers");
            assert!(!d.allowed && d.retry_after == Some(Duration::from_secs(1)), "{d:?}");
        }
    }
    assert!(store.stats().timeouts >= 40 && store.stats().failed_closed >= 40, "{:?}", store.stats());
    tokio::task::block_in_place(|| server.resume());
    let deadline = Instant::now() + Duration::from_secs(10);
    let before = store.stats().failed_closed;
    loop {
        let d = store.hit(b"k", &p, 1).await.expect("fail closed answers");
        if d.allowed {
            break;
        }
        assert!(Instant::now() < deadline, "not recovered 10 s after the resume: {d:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    eprintln!(
        "hung redis: {} calls failed closed after the resume before recovery",
        store.stats().failed_closed - before
    );
}

/// Slots move between masters under load (`redis-cli --cluster reshard`): the client follows MOVED and ASK,
/// every call ends in a decision or a transient error, and no hit is lost or counted twice across the move.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_reshard_under_load_keeps_every_count() {
    let cluster = tokio::task::block_in_place(RedisCluster::start);
    let store = Arc::new(
        RedisStore::builder()
            .cluster(cluster.urls())
            .timeout(Duration::from_secs(2))
            .connect_timeout(Duration::from_secs(2))
            .build()
            .await
            .expect("connect to cluster"),
    );
    // One window of ten years (epoch-aligned): nothing rolls over during the test.
    let policy = Policy::fixed_window(Policy::MAX_LIMIT, Policy::MAX_WINDOW).expect("policy");
    let ids = 64;
    let start = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let handles = load(&store, &policy, ids, 8, &stop, start);

    tokio::time::sleep(Duration::from_millis(300)).await;
    // Move 1000 slots from the master of user:0 to another master, keys and all.
    let from = tokio::task::block_in_place(|| cluster.master_of(&store.shard_key(b"user:0")));
    let to = tokio::task::block_in_place(|| {
        (0..64u32)
            .map(|i| cluster.master_of(&store.shard_key(format!("user:{i}").as_bytes())))
            .find(|&m| m != from)
            .expect("another master")
    });
    let masters = |cluster: &RedisCluster| -> Vec<usize> {
        (0..ids).map(|i| cluster.master_of(&store.shard_key(format!("user:{i}").as_bytes()))).collect()
    };
    let before = tokio::task::block_in_place(|| masters(&cluster));
    let id_of = |i: usize| cluster.nodes[i].cli(&["CLUSTER", "MYID"]).trim().to_owned();
    let (from_id, to_id) = tokio::task::block_in_place(|| (id_of(from), id_of(to)));
    let moved_at = start.elapsed();
    let out = tokio::task::block_in_place(|| {
        std::process::Command::new("redis-cli")
            .args(["--cluster", "reshard", &cluster.nodes[from].addr()])
            .args(["--cluster-from", &from_id, "--cluster-to", &to_id, "--cluster-slots", "1000", "--cluster-yes"])
            .output()
            .expect("run redis-cli --cluster reshard")
    });
    assert!(out.status.success(), "reshard failed: {}", String::from_utf8_lossy(&out.stdout));
    let moved_for = start.elapsed() - moved_at;
    let after = tokio::task::block_in_place(|| masters(&cluster));
    let moved_ids = before.iter().zip(&after).filter(|(b, a)| b != a).count();
    assert!(moved_ids > 0, "no id's slot moved: pick more slots");
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    let calls = collect(handles).await;

    let errors: Vec<&Call> = calls.iter().filter(|c| c.outcome.is_err()).collect();
    let timeouts = errors.iter().filter(|c| c.outcome.as_ref().is_err_and(|e| e.contains("did not answer"))).count();
    let end = calls.last().map(|c| c.at).unwrap_or_default();
    let tail: Vec<_> = calls.iter().filter(|c| c.at + Duration::from_millis(300) > end).collect();
    assert!(tail.len() > 10 && tail.iter().all(|c| c.outcome == Ok(true)), "not settled after the reshard");
    // Every admitted hit is counted exactly once, wherever its slot went (a timed-out call may or may not have
    // run: those are the only slack).
    let admitted = calls.iter().filter(|c| c.outcome == Ok(true)).count() as u64;
    let mut counted = 0;
    for i in 0..ids {
        let id = format!("user:{i}");
        counted += store.inspect(id.as_bytes(), &policy).await.expect("inspect").map_or(0, |b| b.used);
    }
    assert!(
        counted >= admitted && counted <= admitted + timeouts as u64,
        "counted {counted}, admitted {admitted}, timeouts {timeouts}"
    );
    let kinds: std::collections::BTreeSet<String> = errors
        .iter()
        .filter_map(|c| c.outcome.as_ref().err())
        .map(|e| e.chars().take(60).collect::<String>())
        .collect();
    eprintln!(
        "RESHARD: 1000 slots ({moved_ids} of the {ids} ids) moved in {moved_for:?} under load; {} calls, {} errors \
         ({timeouts} timeouts) {kinds:?}; {admitted} admitted, {counted} counted",
        calls.len(),
        errors.len()
    );
}

/// A lazy store builds while Redis is down, answers by its failure policy, and works once Redis is up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lazy_store_starts_before_redis() {
    let mut server = tokio::task::block_in_place(RedisServer::start);
    let url = server.url();
    tokio::task::block_in_place(|| server.kill());
    let timeout = Duration::from_millis(100);
    let store = RedisStore::builder()
        .url(&url)
        .lazy(true)
        .timeout(timeout)
        .failure_policy(FailurePolicy::FailOpen)
        .build()
        .await
        .expect("a lazy store builds without redis");
    let p = Policy::fixed_window(1, Duration::from_secs(60)).expect("policy");
    for _ in 0..5 {
        let begin = Instant::now();
        assert!(store.hit(b"k", &p, 1).await.expect("fail open").allowed);
        assert!(begin.elapsed() <= timeout + Duration::from_millis(100));
    }
    assert_eq!(store.stats().failed_open, 5);
    tokio::task::block_in_place(|| server.restart());
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let before = store.stats().failed_open;
        let d = store.hit(b"k", &p, 1).await.expect("fail open");
        if store.stats().failed_open == before {
            // Redis answered: the first real hit is admitted and the next denied.
            assert!(d.allowed);
            assert!(!store.hit(b"k", &p, 1).await.expect("hit").allowed);
            break;
        }
        assert!(Instant::now() < deadline, "the lazy store never reached redis");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Every failure is counted by kind under every failure policy (fail-open and fail-closed answers used to leave
/// nothing but `failed_open`/`failed_closed`, indistinguishable from one another's causes): a dead Redis counts
/// in `unavailable` (or `timeouts`), a hung one in `timeouts`, each once in `failures`, beside how it was answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_failure_is_counted_by_kind_under_every_policy() {
    let mut server = tokio::task::block_in_place(RedisServer::start);
    let timeout = Duration::from_millis(100);
    let mut stores = Vec::new();
    for failure in [FailurePolicy::FailOpen, FailurePolicy::FailClosed, FailurePolicy::Error] {
        let store = RedisStore::builder()
            .url(&server.url())
            .timeout(timeout)
            .failure_policy(failure)
            .build()
            .await
            .expect("connect");
        stores.push((failure, store));
    }
    let p = Policy::gcra(100, Duration::from_secs(60)).expect("policy");
    for (_, store) in &stores {
        assert!(store.hit(b"k", &p, 1).await.expect("hit").allowed);
    }
    // Hung: every call times out.
    tokio::task::block_in_place(|| server.pause());
    for (_, store) in &stores {
        for _ in 0..3 {
            let _ = store.hit(b"k", &p, 1).await;
        }
        let _ = store.inspect(b"k", &p).await;
    }
    tokio::task::block_in_place(|| server.resume());
    for (failure, store) in &stores {
        let s = store.stats();
        assert_eq!((s.timeouts, s.failures), (4, 4), "{failure:?}: {s:?}");
    }
    // Dead: refused or dropped (or timed out while reconnecting).
    tokio::task::block_in_place(|| server.kill());
    for (failure, store) in &stores {
        for _ in 0..3 {
            let _ = store.hit(b"k", &p, 1).await;
        }
        let _ = store.delete_buckets(b"k").await;
        let s = store.stats();
        assert_eq!(s.failures, 8, "{failure:?}: {s:?}");
        assert_eq!(s.failures, s.timeouts + s.unavailable + s.backend + s.wrong_type, "{s:?}");
        assert!(s.unavailable >= 1, "{failure:?}: {s:?}");
        // Decisions answered by the policy (6), inspections and deletions always as errors (2).
        let answered = match failure {
            FailurePolicy::FailOpen => (s.failed_open, s.failed_closed, s.errors),
            FailurePolicy::FailClosed => (s.failed_closed, s.failed_open, s.errors),
            FailurePolicy::Error => (s.errors - 2, s.failed_open + s.failed_closed, 2),
        };
        assert_eq!(answered, (6, 0, 2), "{failure:?}: {s:?}");
    }
}

/// A dropped idle connection costs no call (it used to fail the first one: one error under `Error`, a silent
/// allow or deny under the fail policies): `CLIENT KILL`, a restart of Redis while idle, and Redis's own idle
/// `timeout` are each followed by a call that succeeds on a fresh connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_call_after_a_dropped_connection_succeeds() {
    first_call_after_a_dropped_connection_succeeds_over(false).await;
}

/// The same over a Unix socket (`unix:///path`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_call_after_a_dropped_unix_socket_connection_succeeds() {
    first_call_after_a_dropped_connection_succeeds_over(true).await;
}

async fn first_call_after_a_dropped_connection_succeeds_over(unix: bool) {
    let socket = crate::support::temp_dir("unix").join("redis.sock");
    let socket_arg = socket.to_string_lossy().into_owned();
    let mut args = vec!["--timeout", "1"];
    if unix {
        args.extend(["--unixsocket", socket_arg.as_str(), "--unixsocketperm", "700"]);
    }
    let mut server = tokio::task::block_in_place(|| RedisServer::start_with(&args));
    let url = if unix { format!("unix://{socket_arg}") } else { server.url() };
    let store = RedisStore::builder()
        .url(&url)
        .timeout(Duration::from_millis(500))
        .failure_policy(FailurePolicy::Error)
        .build()
        .await
        .expect("connect");
    let p = Policy::fixed_window(1_000, Duration::from_secs(3600)).expect("policy");
    let hit = async |what: &str, remaining: u64| {
        let d = store.hit(b"k", &p, 1).await.unwrap_or_else(|e| panic!("first call after {what}: {e}"));
        assert!(d.allowed, "{what}");
        assert_eq!(d.remaining, remaining, "{what}: a real decision");
    };
    hit("connect", 999).await;
    let killed = tokio::task::block_in_place(|| server.cli(&["CLIENT", "KILL", "TYPE", "normal"]));
    assert!(killed.trim().parse::<u32>().is_ok_and(|n| n >= 1), "CLIENT KILL: {killed}");
    // Idle for a moment, as a pooled connection is when Redis drops it.
    tokio::time::sleep(Duration::from_millis(50)).await;
    hit("CLIENT KILL", 998).await;
    // Redis's idle timeout (1 s; Redis checks it about once a second).
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    hit("the idle timeout", 997).await;
    // A restart while idle: the state is gone (no persistence), the call is answered.
    tokio::task::block_in_place(|| server.restart());
    tokio::time::sleep(Duration::from_millis(50)).await;
    hit("a restart", 999).await;
    let s = store.stats();
    assert_eq!((s.failures, s.errors), (0, 0), "{s:?}");
    assert_eq!(s.reconnects, 3, "{s:?}");
}

/// Calls that time out while Redis is frozen never count later (they used to: 50 calls answered as failures
/// left `used: 50`): each carries a deadline in Redis's own time, and the script drops work past it. Frozen by
/// SIGSTOP and by `DEBUG SLEEP`; afterwards `inspect` shows nothing used and the store decides again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_that_timed_out_while_redis_was_frozen_never_count() {
    let server = tokio::task::block_in_place(|| RedisServer::start_with(&["--enable-debug-command", "yes"]));
    let timeout = Duration::from_millis(100);
    let store = Arc::new(
        RedisStore::builder()
            .url(&server.url())
            .timeout(timeout)
            .failure_policy(FailurePolicy::FailOpen)
            .build()
            .await
            .expect("connect"),
    );
    let p = Policy::fixed_window(1_000, Duration::from_secs(3600)).expect("policy");
    // A few calls first: the store learns Redis's clock from their replies.
    for _ in 0..5 {
        assert!(store.hit(b"warm", &p, 1).await.expect("hit").allowed);
    }
    let s0 = store.stats();
    for (round, freeze) in ["SIGSTOP", "DEBUG SLEEP"].into_iter().enumerate() {
        let id = format!("frozen:{round}");
        let sleeper = match freeze {
            "SIGSTOP" => {
                tokio::task::block_in_place(|| server.pause());
                None
            }
            _ => {
                let port = server.port;
                let h = std::thread::spawn(move || crate::support::cli(port, &["DEBUG", "SLEEP", "0.6"]));
                // Let the sleep begin before the calls go out.
                tokio::time::sleep(Duration::from_millis(100)).await;
                Some(h)
            }
        };
        let calls: Vec<_> = (0..50)
            .map(|_| {
                let (store, p, id) = (store.clone(), p.clone(), id.clone());
                tokio::spawn(async move { store.hit(id.as_bytes(), &p, 1).await })
            })
            .collect();
        for c in calls {
            // Answered by the failure policy at the timeout.
            assert!(c.await.expect("task").expect("fail open").allowed);
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        match sleeper {
            None => tokio::task::block_in_place(|| server.resume()),
            Some(h) => assert!(h.join().expect("DEBUG SLEEP").contains("OK")),
        }
        // Redis runs the 50 queued scripts now, and every one is past its deadline.
        let deadline = Instant::now() + Duration::from_secs(5);
        let info = loop {
            if let Ok(info) = store.inspect(id.as_bytes(), &p).await {
                break info;
            }
            assert!(Instant::now() < deadline, "{freeze}: redis did not come back");
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        assert_eq!(info.map(|i| i.used), None, "{freeze}: calls answered as failures were counted");
        let d = store.hit(id.as_bytes(), &p, 1).await.expect("hit after the freeze");
        assert_eq!((d.allowed, d.remaining), (true, 999), "{freeze}: a real decision");
    }
    let s = store.stats();
    assert_eq!(s.failed_open - s0.failed_open, 100, "{s:?}");
    assert!(s.timeouts - s0.timeouts >= 100, "{s:?}");
}

/// A Redis that accepts connections but never answers: calls fail by their timeout, and connection attempts do
/// not pile up (one at a time, callers that waited share its outcome).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_redis_gets_one_connection_attempt_at_a_time() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    listener.set_nonblocking(true).expect("nonblocking");
    let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let acceptor = {
        let (accepted, stop) = (accepted.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut held = Vec::new();
            let end = Instant::now() + Duration::from_secs(10);
            while !stop.load(Ordering::Relaxed) && Instant::now() < end {
                match listener.accept() {
                    Ok((s, _)) => {
                        accepted.fetch_add(1, Ordering::Relaxed);
                        held.push(s);
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(2)),
                }
            }
        })
    };
    let store = Arc::new(
        RedisStore::builder()
            .url(&format!("redis://127.0.0.1:{port}/"))
            .lazy(true)
            .timeout(Duration::from_millis(50))
            .connect_timeout(Duration::from_millis(700))
            .failure_policy(FailurePolicy::FailClosed)
            .build()
            .await
            .expect("a lazy store builds"),
    );
    let p = Policy::gcra(10, Duration::from_secs(1)).expect("policy");
    let begin = Instant::now();
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let (store, p) = (store.clone(), p.clone());
            tokio::spawn(async move {
                for _ in 0..10 {
                    let t = Instant::now();
                    assert!(!store.hit(b"k", &p, 1).await.expect("fail closed").allowed);
                    assert!(t.elapsed() < Duration::from_millis(200), "a call took {:?}", t.elapsed());
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("task");
    }
    let took = begin.elapsed();
    // The callers are gone: attempts queued behind the first must not each connect in turn afterwards.
    tokio::time::sleep(Duration::from_millis(1_600)).await;
    stop.store(true, Ordering::Relaxed);
    acceptor.join().expect("acceptor");
    // 80 calls over `took`; a connection attempt lasts 700 ms, and the next starts only after it.
    let most = usize::try_from(took.as_millis() / 700).unwrap_or(usize::MAX) + 1;
    let n = accepted.load(Ordering::Relaxed);
    assert!(n >= 1 && n <= most, "{n} connections for calls over {took:?}");
    assert_eq!(store.stats().failed_closed, 80);
}
