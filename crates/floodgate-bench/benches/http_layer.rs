//! Per-request overhead of the layer: a tower `Service::call` on an always-ready inner service, keyed by the
//! peer IP from axum's `ConnectInfo`, on a `MemoryStore<IpAddr>`. The request is built outside the timed part
//! (`iter_batched`); the response is dropped inside it in every variant, so the differences are the layer's.
//!
//! `cargo bench -p floodgate-bench --bench http_layer`

use std::convert::Infallible;
use std::future::Future;
use std::hint::black_box;
use std::net::{IpAddr, SocketAddr};
use std::pin::pin;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use axum::extract::ConnectInfo;
use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use floodgate::{MemoryStore, Policy};
use floodgate_http::{ClientIp, HeaderKey, MemoryBackend, RateLimitLayer};
use http::{Request, Response};
use tower::{Layer, Service};

/// Polls a future that is ready at once (everything here is).
fn now<F: Future>(f: F) -> F::Output {
    let mut f = pin!(f);
    match f.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(out) => out,
        Poll::Pending => panic!("the bench's futures are all ready at once"),
    }
}

fn request(ip: IpAddr) -> Request<()> {
    let mut req = Request::get("/").header("x-api-key", "bench-key-0123456789").body(()).unwrap_or_default();
    req.extensions_mut().insert(ConnectInfo(SocketAddr::new(ip, 40_000)));
    req
}

fn inner() -> impl Service<Request<()>, Response = Response<()>, Error = Infallible, Future: Send> + Clone {
    // A response with a header already, as real ones have (so its header map is allocated in the baseline).
    tower::service_fn(|_req: Request<()>| {
        let mut resp = Response::new(());
        resp.headers_mut().insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("text/plain"));
        std::future::ready(Ok::<_, Infallible>(resp))
    })
}

fn bench(c: &mut Criterion) {
    let ip = IpAddr::from([192, 0, 2, 1]);
    let mut g = c.benchmark_group("tower_middleware");

    let mut bare = inner();
    g.bench_function("inner_service_alone", |b| {
        b.iter_batched(|| request(ip), |req| black_box(now(bare.call(req))), BatchSize::SmallInput)
    });

    // Never denies within the bench: the allowed path, with both IETF headers written.
    let roomy = Policy::fixed_window(1 << 40, Duration::from_secs(3600)).unwrap_or_else(|e| panic!("{e}"));
    let store = MemoryStore::builder().key_type::<IpAddr>().build();
    let mut allowed = RateLimitLayer::new(ClientIp::peer(), MemoryBackend::new(store), roomy.clone()).layer(inner());
    g.bench_function("ip_allowed", |b| {
        b.iter_batched(|| request(ip), |req| black_box(now(allowed.call(req))), BatchSize::SmallInput)
    });

    let store = MemoryStore::builder().key_type::<IpAddr>().build();
    let mut quiet = RateLimitLayer::builder(ClientIp::peer(), MemoryBackend::new(store), roomy.clone())
        .headers_when_allowed(false)
        .build()
        .layer(inner());
    g.bench_function("ip_allowed_no_headers", |b| {
        b.iter_batched(|| request(ip), |req| black_box(now(quiet.call(req))), BatchSize::SmallInput)
    });

    let store = MemoryStore::builder().key_type::<IpAddr>().build();
    let mut legacy = RateLimitLayer::builder(ClientIp::peer(), MemoryBackend::new(store), roomy.clone())
        .legacy_headers(true)
        .build()
        .layer(inner());
    g.bench_function("ip_allowed_with_legacy_headers", |b| {
        b.iter_batched(|| request(ip), |req| black_box(now(legacy.call(req))), BatchSize::SmallInput)
    });

    // Spent at once: every call is a 429 with Retry-After.
    let tight = Policy::fixed_window(1, Duration::from_secs(3600)).unwrap_or_else(|e| panic!("{e}"));
    let store = MemoryStore::builder().key_type::<IpAddr>().build();
    let mut denied = RateLimitLayer::new(ClientIp::peer(), MemoryBackend::new(store), tight).layer(inner());
    let _ = now(denied.call(request(ip)));
    g.bench_function("ip_denied", |b| {
        b.iter_batched(|| request(ip), |req| black_box(now(denied.call(req))), BatchSize::SmallInput)
    });

    let key = HeaderKey::new("x-api-key").unwrap_or_else(|e| panic!("{e}"));
    let mut by_header = RateLimitLayer::new(key, MemoryBackend::new(MemoryStore::new()), roomy).layer(inner());
    g.bench_function("header_allowed", |b| {
        b.iter_batched(|| request(ip), |req| black_box(now(by_header.call(req))), BatchSize::SmallInput)
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
