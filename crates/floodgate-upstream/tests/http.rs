//! Against a real HTTP upstream on loopback (axum) that enforces its own fixed-window limits and sends
//! Discord-style headers: callers through the middleware take no 429 and use the allowed rate.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::routing::get;
use floodgate_upstream::middleware::UpstreamMiddleware;
use floodgate_upstream::store::{GlobalLimit, StoreConfig};
use floodgate_upstream::{MemoryStore, Provider, Upstream};
use parking_lot::Mutex;

/// The upstream: per bucket `limit` per `window`, and `global` per `window` over all buckets, in fixed windows
/// from its start.
struct Upstream429 {
    start: Instant,
    window: Duration,
    limit: u64,
    global: u64,
    counts: Mutex<HashMap<(String, u64), u64>>,
    global_counts: Mutex<HashMap<u64, u64>>,
    ok: AtomicU64,
    rejected: AtomicU64,
    flaky_left: AtomicU64,
}

fn secs(d: Duration) -> HeaderValue {
    // Rounded up to the millisecond: an honest upstream never says "sooner" than the truth.
    let ms = d.as_micros().div_ceil(1000);
    HeaderValue::from_str(&format!("{}.{:03}", ms / 1000, ms % 1000)).expect("ascii")
}

impl Upstream429 {
    fn new(window: Duration, limit: u64, global: u64) -> Arc<Self> {
        Arc::new(Upstream429 {
            start: Instant::now(),
            window,
            limit,
            global,
            counts: Mutex::new(HashMap::new()),
            global_counts: Mutex::new(HashMap::new()),
            ok: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
            flaky_left: AtomicU64::new(1),
        })
    }

    /// Requests allowed per window index, for one bucket.
    fn per_window(&self, bucket: &str) -> HashMap<u64, u64> {
        self.counts.lock().iter().filter(|((b, _), _)| b == bucket).map(|((_, i), n)| (*i, *n)).collect()
    }

    fn hit(&self, bucket: &str) -> (StatusCode, HeaderMap) {
        let elapsed = self.start.elapsed();
        let w = self.window.as_micros() as u64;
        let idx = elapsed.as_micros() as u64 / w;
        let reset_after = Duration::from_micros((idx + 1) * w) - elapsed;
        let mut h = HeaderMap::new();
        {
            let mut g = self.global_counts.lock();
            let gc = g.entry(idx).or_insert(0);
            if *gc >= self.global {
                self.rejected.fetch_add(1, Ordering::SeqCst);
                h.insert("x-ratelimit-global", HeaderValue::from_static("true"));
                h.insert("retry-after", secs(reset_after));
                return (StatusCode::TOO_MANY_REQUESTS, h);
            }
            let mut counts = self.counts.lock();
            let c = counts.entry((bucket.to_owned(), idx)).or_insert(0);
            h.insert("x-ratelimit-limit", self.limit.into());
            h.insert("x-ratelimit-reset-after", secs(reset_after));
            h.insert("x-ratelimit-bucket", HeaderValue::from_str(&format!("hash-{bucket}")).expect("ascii"));
            if *c >= self.limit {
                self.rejected.fetch_add(1, Ordering::SeqCst);
                h.insert("x-ratelimit-remaining", 0.into());
                h.insert("retry-after", secs(reset_after));
                return (StatusCode::TOO_MANY_REQUESTS, h);
            }
            *c += 1;
            *gc += 1;
            h.insert("x-ratelimit-remaining", (self.limit - *c).into());
        }
        self.ok.fetch_add(1, Ordering::SeqCst);
        (StatusCode::OK, h)
    }
}

async fn serve(state: Arc<Upstream429>) -> SocketAddr {
    let app = Router::new()
        .route("/b/{bucket}", get(|State(s): State<Arc<Upstream429>>, Path(b): Path<String>| async move { s.hit(&b) }))
        .route(
            "/flaky",
            get(|State(s): State<Arc<Upstream429>>| async move {
                if s.flaky_left.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_ok() {
                    let mut h = HeaderMap::new();
                    h.insert("retry-after", HeaderValue::from_static("0.1"));
                    s.rejected.fetch_add(1, Ordering::SeqCst);
                    return (StatusCode::TOO_MANY_REQUESTS, h);
                }
                (StatusCode::OK, HeaderMap::new())
            }),
        )
        .route(
            "/slow",
            get(|| async {
                tokio::time::sleep(Duration::from_secs(5)).await;
                StatusCode::OK
            }),
        )
        .with_state(state);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind loopback");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    addr
}

fn client(upstream: &Upstream) -> reqwest_middleware::ClientWithMiddleware {
    reqwest_middleware::ClientBuilder::new(reqwest::Client::new())
        .with(UpstreamMiddleware::new(upstream.clone(), Provider::Discord).max_wait(Duration::from_secs(5)))
        .build()
}

/// `callers` tasks send to `paths` in turn until `run` is over; returns (ok, 429s seen, elapsed).
async fn load(
    upstream: &Upstream,
    addr: SocketAddr,
    paths: &[&str],
    callers: usize,
    run: Duration,
) -> (u64, u64, Duration) {
    let client = client(upstream);
    let start = Instant::now();
    let ok = Arc::new(AtomicU64::new(0));
    let limited = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for i in 0..callers {
        let (client, ok, limited) = (client.clone(), ok.clone(), limited.clone());
        let paths: Vec<String> = paths.iter().map(|p| p.to_string()).collect();
        tasks.push(tokio::spawn(async move {
            for n in 0..10_000usize {
                if start.elapsed() >= run {
                    break;
                }
                let url = format!("http://{addr}{}", paths[(i + n) % paths.len()]);
                match client.get(url).send().await {
                    Ok(r) if r.status() == 429 => limited.fetch_add(1, Ordering::SeqCst),
                    Ok(_) => ok.fetch_add(1, Ordering::SeqCst),
                    Err(e) => panic!("request failed: {e}"),
                };
            }
        }));
    }
    for t in tasks {
        t.await.expect("caller");
    }
    (ok.load(Ordering::SeqCst), limited.load(Ordering::SeqCst), start.elapsed())
}

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
