//! Instructions per request, counted by callgrind: independent of the load on a shared machine, unlike wall
//! time. Runs one variant `n` times; the per-request figure is the difference between two counts over the
//! difference in `n`.
//!
//! ```text
//! cargo bench -p floodgate-bench --bench http_instructions --no-run      # then, with BIN the binary it printed:
//! for v in inner ip_allowed ip_allowed_no_headers ip_denied header_allowed; do for n in 10000 110000; do
//!   valgrind --tool=callgrind --callgrind-out-file=/dev/null BIN $v $n 2>&1 | grep Collected; done; done
//! ```
//!
//! Under `cargo bench` (no variant given) it runs every variant briefly and prints wall-clock ns per request.

use std::convert::Infallible;
use std::future::Future;
use std::hint::black_box;
use std::net::{IpAddr, SocketAddr};
use std::pin::pin;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use axum::extract::ConnectInfo;
use floodgate::{MemoryStore, Policy};
use floodgate_http::{ClientIp, HeaderKey, MemoryBackend, RateLimitLayer};
use http::{Request, Response};
use tower::{Layer, Service};

fn now<F: Future>(f: F) -> F::Output {
    let mut f = pin!(f);
    match f.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(out) => out,
        Poll::Pending => panic!("the bench's futures are all ready at once"),
    }
}

fn request() -> Request<()> {
    let mut req = Request::get("/").header("x-api-key", "bench-key-0123456789").body(()).unwrap_or_default();
    req.extensions_mut().insert(ConnectInfo(SocketAddr::from(([192, 0, 2, 1], 40_000))));
    req
}

fn inner() -> impl Service<Request<()>, Response = Response<()>, Error = Infallible> + Clone {
    // A response with a header already, as real ones have (so its header map is allocated in the baseline).
    tower::service_fn(|_req: Request<()>| {
        let mut resp = Response::new(());
        resp.headers_mut().insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("text/plain"));
        std::future::ready(Ok::<_, Infallible>(resp))
    })
}

fn run<S: Service<Request<()>, Response = Response<()>>>(mut svc: S, n: usize) {
    // Requests are built before the loop, as in the criterion bench, so only the call is counted.
    let requests: Vec<_> = (0..n).map(|_| request()).collect();
    for req in requests {
        let _ = black_box(now(svc.call(req)));
    }
}

fn variant(name: &str, n: usize) {
    let roomy = Policy::fixed_window(1 << 40, Duration::from_secs(3600)).unwrap_or_else(|e| panic!("{e}"));
    let tight = Policy::fixed_window(1, Duration::from_secs(3600)).unwrap_or_else(|e| panic!("{e}"));
    let ip_store = || MemoryStore::builder().key_type::<IpAddr>().cleanup_interval(None).build();
    match name {
        "inner" => run(inner(), n),
        "ip_allowed" => {
            run(RateLimitLayer::new(ClientIp::peer(), MemoryBackend::new(ip_store()), roomy).layer(inner()), n)
        }
        "ip_allowed_no_headers" => run(
            RateLimitLayer::builder(ClientIp::peer(), MemoryBackend::new(ip_store()), roomy)
                .headers_when_allowed(false)
                .build()
                .layer(inner()),
            n,
        ),
        "ip_denied" => {
            run(RateLimitLayer::new(ClientIp::peer(), MemoryBackend::new(ip_store()), tight).layer(inner()), n)
        }
        "header_allowed" => {
            let key = HeaderKey::new("x-api-key").unwrap_or_else(|e| panic!("{e}"));
            run(RateLimitLayer::new(key, MemoryBackend::new(MemoryStore::new()), roomy).layer(inner()), n)
        }
        other => panic!("unknown variant {other}"),
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with("--")).collect();
    if let [name, n] = &args[..] {
        variant(name, n.parse().unwrap_or_else(|e| panic!("{e}")));
        return;
    }
    for name in ["inner", "ip_allowed", "ip_allowed_no_headers", "ip_denied", "header_allowed"] {
        let n = 200_000;
        let start = Instant::now();
        variant(name, n);
        println!("{name}: {:.0} ns per request (with request set-up)", start.elapsed().as_nanos() as f64 / n as f64);
    }
}
