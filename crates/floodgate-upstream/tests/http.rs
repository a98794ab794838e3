//! Against a real HTTP upstream on loopback (axum) that enforces its own fixed-window limits and sends
//! Discord-style headers: callers through the middleware take no 429 and use the allowed rate.

mod common;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use common::{Style, Upstream429, client, load, load_as, serve};
use floodgate_upstream::Provider;
use floodgate_upstream::store::{GlobalLimit, StoreConfig};
use floodgate_upstream::{MemoryStore, Upstream};

/// 32 concurrent callers on one bucket: zero 429s, and at least 90 % of what the upstream allows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_callers_take_no_429_and_use_the_rate() {
    let window = Duration::from_millis(200);
    let server = Upstream429::new(window, 10, 10_000);
    let addr = serve(server.clone()).await;
    let upstream = Upstream::in_memory();
    let run = Duration::from_millis(1_200);
    let (ok, _, _) = load(&upstream, addr, &["/b/one"], 32, run).await;
    let rejected = server.rejected.load(Ordering::SeqCst);
    // Per upstream window: the windows strictly between the first and the last one used are the ones the callers
    // could have filled (the first starts with the pioneer's round trip, the last is cut by the end of the run).
    let per_window = server.per_window("one");
    let (first, last) = (per_window.keys().min().copied(), per_window.keys().max().copied());
    let (Some(first), Some(last)) = (first, last) else { panic!("no request reached the upstream") };
    let inner: Vec<u64> = (first + 1..last).map(|i| per_window.get(&i).copied().unwrap_or(0)).collect();
    let used: u64 = inner.iter().sum();
    let allowed = 10 * inner.len() as u64;
    let rate = used as f64 / allowed as f64;
    println!(
        "one bucket, 32 callers: {ok} ok, {used} of {allowed} allowed in the full windows ({:.1} %), {rejected} 429s; {:?}",
        rate * 100.0,
        upstream.stats()
    );
    assert_eq!(rejected, 0);
    assert_eq!(upstream.stats().rate_limited, 0);
    assert!(inner.len() >= 3, "{per_window:?}");
    assert!(rate >= 0.9, "{per_window:?}");
}

/// A proactive global limit holds across routes: the upstream's global limit is never hit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn global_limit_holds_across_routes() {
    let window = Duration::from_millis(200);
    let server = Upstream429::new(window, 100, 12);
    let addr = serve(server.clone()).await;
    let config = StoreConfig::default().global(GlobalLimit { limit: 12, per: window });
    let upstream = Upstream::new(MemoryStore::with_config(config));
    let run = Duration::from_millis(1_000);
    let (ok, _, elapsed) = load(&upstream, addr, &["/b/a", "/b/b", "/b/c", "/b/d"], 16, run).await;
    let rejected = server.rejected.load(Ordering::SeqCst);
    println!("global: {ok} ok in {elapsed:?}, {rejected} 429s");
    assert_eq!(rejected, 0);
    assert!(ok >= 12 * 4, "{ok}");
}

/// A 429 with Retry-After is retried after it, then succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_429_is_retried_after_retry_after() {
    let server = Upstream429::new(Duration::from_millis(200), 10, 1000);
    let addr = serve(server.clone()).await;
    let upstream = Upstream::in_memory();
    let start = Instant::now();
    let r = client(&upstream).get(format!("http://{addr}/flaky")).send().await.expect("send");
    assert_eq!(r.status(), 200);
    assert!(start.elapsed() >= Duration::from_millis(100), "{:?}", start.elapsed());
    let stats = upstream.stats();
    assert_eq!((stats.rate_limited, stats.retries), (1, 1));
}

/// A cancelled request releases its place: the pioneer of an unknown bucket is cancelled, the next one goes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_request_releases_its_place() {
    let server = Upstream429::new(Duration::from_millis(200), 10, 1000);
    let addr = serve(server.clone()).await;
    let upstream = Upstream::in_memory();
    let c = client(&upstream);
    let cancelled = tokio::time::timeout(Duration::from_millis(50), c.get(format!("http://{addr}/slow")).send()).await;
    assert!(cancelled.is_err());
    // The next caller of that bucket becomes the pioneer at once (not after the 10 s lease timeout).
    let start = Instant::now();
    let outcome = upstream.acquire("GET 127.0.0.1/slow", Duration::from_secs(1)).await.expect("acquire");
    assert!(outcome.go, "{outcome:?}");
    assert!(start.elapsed() < Duration::from_millis(500), "{:?}", start.elapsed());
}

/// The IETF and GitHub variants: whole-second resets (rounded up by an honest upstream), still zero 429s (a
/// window of one second here).
async fn whole_second_style(style: Style, provider: Provider) {
    let window = Duration::from_secs(1);
    let server = Upstream429::styled(window, 20, 10_000, style);
    let addr = serve(server.clone()).await;
    let upstream = Upstream::in_memory();
    let (ok, _, elapsed) = load_as(provider, &upstream, addr, &["/b/one"], 16, Duration::from_millis(2_100)).await;
    let rejected = server.rejected.load(Ordering::SeqCst);
    println!("{provider}: {ok} ok in {elapsed:?} (20 per second allowed), {rejected} 429s");
    assert_eq!(rejected, 0, "{provider}");
    // Whole seconds cost up to a second or two per window here (a `Date` truncated, a reset rounded up), so only
    // the first window's full use is asserted; the rate is printed.
    assert!(ok >= 20, "{provider}: {ok}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ietf_headers_take_no_429() {
    whole_second_style(Style::Ietf, Provider::Ietf).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn github_headers_take_no_429() {
    whole_second_style(Style::Github, Provider::Github).await;
}

/// The same load through reqwest-retry (exponential backoff, 3 retries, which ignores Retry-After): the baseline
/// the figures compare with. It only reports; nothing about it is asserted but that it ran.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn baseline_reqwest_retry() {
    use reqwest_retry::{RetryTransientMiddleware, policies::ExponentialBackoff};
    use std::sync::Arc;
    use std::sync::atomic::AtomicU64;

    let window = Duration::from_millis(200);
    let server = Upstream429::new(window, 10, 10_000);
    let addr = serve(server.clone()).await;
    let policy = ExponentialBackoff::builder().build_with_max_retries(3);
    let client = reqwest_middleware::ClientBuilder::new(reqwest::Client::new())
        .with(RetryTransientMiddleware::new_with_policy(policy))
        .build();
    let run = Duration::from_millis(1_200);
    let start = Instant::now();
    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let mut tasks = Vec::new();
    for _ in 0..32 {
        let (client, ok, failed) = (client.clone(), ok.clone(), failed.clone());
        tasks.push(tokio::spawn(async move {
            for _ in 0..10_000 {
                if start.elapsed() >= run {
                    break;
                }
                match client.get(format!("http://{addr}/b/one")).send().await {
                    Ok(r) if r.status() == 200 => ok.fetch_add(1, Ordering::SeqCst),
                    _ => failed.fetch_add(1, Ordering::SeqCst),
                };
            }
        }));
    }
    for t in tasks {
        t.await.expect("caller");
    }
    let per_window = server.per_window("one");
    let used: u64 = per_window.values().sum();
    let windows = per_window.len() as u64;
    println!(
        "reqwest-retry baseline, 32 callers: {} ok, {} gave up, {} 429s taken, {used} of {} allowed in the windows used, in {:?}",
        ok.load(Ordering::SeqCst),
        failed.load(Ordering::SeqCst),
        server.rejected.load(Ordering::SeqCst),
        windows * 10,
        start.elapsed()
    );
    assert!(used > 0);
}
