//! A real HTTP upstream on loopback (axum) that enforces its own fixed-window limits and sends Discord-style
//! headers, and a load of callers through the middleware.
#![allow(dead_code)]

pub mod redis_server;

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
use floodgate_upstream::{Provider, Upstream};
use parking_lot::Mutex;

/// The upstream: per bucket `limit` per `window`, and `global` per `window` over all buckets, in fixed windows
/// from its start.
/// Which headers the upstream sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Style {
    Discord,
    Ietf,
    Github,
}

pub struct Upstream429 {
    pub style: Style,
    pub start: Instant,
    pub window: Duration,
    pub limit: u64,
    pub global: u64,
    pub counts: Mutex<HashMap<(String, u64), u64>>,
    pub global_counts: Mutex<HashMap<u64, u64>>,
    pub ok: AtomicU64,
    pub rejected: AtomicU64,
    pub flaky_left: AtomicU64,
}

fn secs(d: Duration) -> HeaderValue {
    // Rounded up to the millisecond: an honest upstream never says "sooner" than the truth.
    let ms = d.as_micros().div_ceil(1000);
    HeaderValue::from_str(&format!("{}.{:03}", ms / 1000, ms % 1000)).expect("ascii")
}

impl Upstream429 {
    pub fn new(window: Duration, limit: u64, global: u64) -> Arc<Self> {
        Self::styled(window, limit, global, Style::Discord)
    }

    pub fn styled(window: Duration, limit: u64, global: u64, style: Style) -> Arc<Self> {
        Arc::new(Upstream429 {
            style,
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
    pub fn per_window(&self, bucket: &str) -> HashMap<u64, u64> {
        self.counts.lock().iter().filter(|((b, _), _)| b == bucket).map(|((_, i), n)| (*i, *n)).collect()
    }

    pub fn hit(&self, bucket: &str) -> (StatusCode, HeaderMap) {
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
            let allowed = *c < self.limit;
            if allowed {
                *c += 1;
                *gc += 1;
            }
            let remaining = self.limit - *c;
            // Whole seconds (IETF `t`, GitHub's epoch reset, Retry-After) are rounded up: never sooner than true.
            let whole = reset_after.as_micros().div_ceil(1_000_000) as u64;
            match self.style {
                Style::Discord => {
                    h.insert("x-ratelimit-limit", self.limit.into());
                    h.insert("x-ratelimit-remaining", remaining.into());
                    h.insert("x-ratelimit-reset-after", secs(reset_after));
                    h.insert("x-ratelimit-bucket", HeaderValue::from_str(&format!("hash-{bucket}")).expect("ascii"));
                    if !allowed {
                        h.insert("retry-after", secs(reset_after));
                    }
                }
                Style::Ietf => {
                    let policy = format!("\"{bucket}\";q={};w={}", self.limit, self.window.as_secs().max(1));
                    h.insert("ratelimit-policy", HeaderValue::from_str(&policy).expect("ascii"));
                    let state = format!("\"{bucket}\";r={remaining};t={whole}");
                    h.insert("ratelimit", HeaderValue::from_str(&state).expect("ascii"));
                    if !allowed {
                        h.insert("retry-after", whole.into());
                    }
                }
                Style::Github => {
                    let now = std::time::SystemTime::now();
                    let epoch = now.duration_since(std::time::UNIX_EPOCH).expect("after 1970");
                    let reset = (epoch + reset_after).as_micros().div_ceil(1_000_000) as u64;
                    h.insert("date", HeaderValue::from_str(&httpdate::fmt_http_date(now)).expect("ascii"));
                    h.insert("x-ratelimit-limit", self.limit.into());
                    h.insert("x-ratelimit-remaining", remaining.into());
                    h.insert("x-ratelimit-used", (*c).into());
                    h.insert("x-ratelimit-reset", reset.into());
                    h.insert("x-ratelimit-resource", HeaderValue::from_static("core"));
                }
            }
            if !allowed {
                self.rejected.fetch_add(1, Ordering::SeqCst);
                return (StatusCode::TOO_MANY_REQUESTS, h);
            }
        }
        self.ok.fetch_add(1, Ordering::SeqCst);
        (StatusCode::OK, h)
    }
}

pub async fn serve(state: Arc<Upstream429>) -> SocketAddr {
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

pub fn client(upstream: &Upstream) -> reqwest_middleware::ClientWithMiddleware {
    client_for(upstream, Provider::Discord)
}

pub fn client_for(upstream: &Upstream, provider: Provider) -> reqwest_middleware::ClientWithMiddleware {
    reqwest_middleware::ClientBuilder::new(reqwest::Client::new())
        .with(UpstreamMiddleware::new(upstream.clone(), provider).max_wait(Duration::from_secs(5)))
        .build()
}

/// `callers` tasks send to `paths` in turn until `run` is over; returns (ok, 429s seen, elapsed).
pub async fn load(
    upstream: &Upstream,
    addr: SocketAddr,
    paths: &[&str],
    callers: usize,
    run: Duration,
) -> (u64, u64, Duration) {
    load_as(Provider::Discord, upstream, addr, paths, callers, run).await
}

/// [`load`] reading `provider`'s headers.
pub async fn load_as(
    provider: Provider,
    upstream: &Upstream,
    addr: SocketAddr,
    paths: &[&str],
    callers: usize,
    run: Duration,
) -> (u64, u64, Duration) {
    let client = client_for(upstream, provider);
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
