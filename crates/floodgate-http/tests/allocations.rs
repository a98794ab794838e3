//! Keying a request by IP and deciding it on a `MemoryStore<IpAddr>` allocates nothing; the whole layer adds
//! only the response header values. Counted with a counting global allocator (per thread).

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::pin;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use floodgate::{MemoryStore, Policy};
use floodgate_http::{Backend, ClientIp, Hit, KeyExtractor, MemoryBackend, RateLimitLayer};
use http::{Request, Response};
use tower::{Layer, Service};

struct Counting;

thread_local! {
    static ALLOCATIONS: Cell<usize> = const { Cell::new(0) };
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let _ = ALLOCATIONS.try_with(|c| c.set(c.get() + 1));
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let _ = ALLOCATIONS.try_with(|c| c.set(c.get() + 1));
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocations() -> usize {
    ALLOCATIONS.with(Cell::get)
}

fn now<F: Future>(f: F) -> F::Output {
    let mut f = pin!(f);
    match f.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(out) => out,
        Poll::Pending => panic!("expected a ready future"),
    }
}

fn request(ip: IpAddr) -> Request<()> {
    let mut req = Request::new(());
    req.extensions_mut().insert(axum::extract::ConnectInfo(SocketAddr::new(ip, 40_000)));
    req
}

#[test]
fn keying_and_deciding_by_ip_allocates_nothing() -> Result<(), floodgate::PolicyError> {
    let policy = Policy::fixed_window(1 << 40, Duration::from_secs(3600))?;
    let backend = MemoryBackend::new(MemoryStore::builder().key_type::<IpAddr>().cleanup_interval(None).build());
    let extractor = ClientIp::peer().ipv6_prefix(64);
    let requests: Vec<_> = (0..1_000u32).map(|i| request(IpAddr::from((i % 10).to_be_bytes()))).collect();
    // First sight of each key inserts it (that allocates); from then on nothing does.
    for req in &requests[..10] {
        let ip = extractor.extract(req).ok_or(floodgate::PolicyError::ZeroLimit)?;
        let _ = backend.hit(ip, &policy, 1);
    }
    let before = allocations();
    let mut allowed = 0;
    for req in &requests {
        if let Some(ip) = extractor.extract(req)
            && let Hit::Ready(Ok(d)) = backend.hit(ip, &policy, 1)
        {
            allowed += usize::from(d.allowed);
        }
    }
    assert_eq!(allocations() - before, 0, "allocations while keying and deciding 1000 requests");
    assert_eq!(allowed, 1_000);
    Ok(())
}

#[test]
fn the_whole_layer_allocates_only_header_values() -> Result<(), floodgate::PolicyError> {
    let policy = Policy::fixed_window(1 << 40, Duration::from_secs(3600))?;
    let mut svc = RateLimitLayer::new(
        ClientIp::peer(),
        MemoryBackend::new(MemoryStore::builder().key_type::<IpAddr>().cleanup_interval(None).build()),
        policy,
    )
    .layer(tower::service_fn(|_: Request<()>| {
        // A response that already has a header, as real ones do, so its header map is allocated here.
        let mut resp = Response::new(());
        resp.headers_mut().insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("text/plain"));
        std::future::ready(Ok::<_, std::convert::Infallible>(resp))
    }));
    let ip = IpAddr::from([192, 0, 2, 1]);
    let mut inner_only = tower::service_fn(|_: Request<()>| {
        let mut resp = Response::new(());
        resp.headers_mut().insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("text/plain"));
        std::future::ready(Ok::<_, std::convert::Infallible>(resp))
    });
    let _ = now(svc.call(request(ip)));
    let _ = now(inner_only.call(request(ip)));

    let req = request(ip);
    let before = allocations();
    let _ = now(inner_only.call(req));
    let baseline = allocations() - before;

    let req = request(ip);
    let before = allocations();
    let resp = now(svc.call(req));
    let with_layer = allocations() - before;
    assert!(resp.is_ok_and(|r| r.headers().contains_key("ratelimit")));
    // The `RateLimit` value owns its bytes (one allocation), and the shared `RateLimit-Policy` value is
    // reference-counted (none).
    assert_eq!(with_layer - baseline, 1, "allocations the layer adds to one request");
    Ok(())
}
