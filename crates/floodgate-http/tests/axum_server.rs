//! The middleware inside a real axum server on 127.0.0.1, driven by a real HTTP client (hyper-util). Time is a
//! `ManualClock` injected in the store: no test sleeps to test logic.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::routing::get;
use bytes::Bytes;
use floodgate::{BucketInfo, Decision, ManualClock, MemoryStore, Policy, Store, StoreError, StoreResult, Timestamp};
use floodgate_http::{
    ClientIp, HeaderKey, MemoryBackend, MissingKey, OnStoreError, RateLimitLayer, RouteKey, RoutePath, StoreBackend,
    key_fn,
};
use http::{HeaderMap, Request, StatusCode};
use http_body_util::Empty;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

type TestClient = Client<HttpConnector, Empty<Bytes>>;
type TestResult = Result<(), Box<dyn std::error::Error + Send + Sync>>;

/// A start time on a 10-second boundary, so fixed windows start exactly here.
const START: Timestamp = Timestamp::from_secs(1_700_000_000);

struct Server {
    addr: SocketAddr,
    calls: Arc<AtomicUsize>,
}

impl Server {
    /// Serves `GET /` (counting calls) behind `layer`, with connect info, on 127.0.0.1:0.
    async fn start<L>(layer: L) -> Result<Server, std::io::Error>
    where
        L: tower::Layer<axum::routing::Route> + Clone + Send + Sync + 'static,
        L::Service: tower::Service<Request<Body>, Error = std::convert::Infallible> + Clone + Send + Sync + 'static,
        <L::Service as tower::Service<Request<Body>>>::Response: axum::response::IntoResponse + 'static,
        <L::Service as tower::Service<Request<Body>>>::Future: Send + 'static,
    {
        let calls = Arc::new(AtomicUsize::new(0));
        let counter = calls.clone();
        let app = Router::new()
            .route(
                "/",
                get(move || {
                    let counter = counter.clone();
                    async move {
                        counter.fetch_add(1, Ordering::SeqCst);
                        "ok"
                    }
                }),
            )
            .layer(layer);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        tokio::spawn(async move {
            let _ = axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>()).await;
        });
        Ok(Server { addr, calls })
    }

    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }

    async fn get(&self, client: &TestClient, headers: &[(&str, &str)]) -> Result<(StatusCode, HeaderMap), Error> {
        let mut req = Request::get(format!("http://{}/", self.addr));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let resp = client.request(req.body(Empty::new())?).await?;
        Ok((resp.status(), resp.headers().clone()))
    }
}

type Error = Box<dyn std::error::Error + Send + Sync>;

/// A client whose connections come from `local` (any 127.0.0.0/8 address works on Linux loopback).
fn client_from(local: [u8; 4]) -> TestClient {
    let mut connector = HttpConnector::new();
    connector.set_local_address(Some(IpAddr::from(local)));
    Client::builder(TokioExecutor::new()).build(connector)
}

fn client() -> TestClient {
    client_from([127, 0, 0, 1])
}

fn ip_store(clock: &ManualClock) -> MemoryStore<IpAddr> {
    MemoryStore::builder().key_type::<IpAddr>().clock(clock.clone()).cleanup_interval(None).build()
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

#[tokio::test]
async fn n_allowed_then_429_with_every_header() -> TestResult {
    let clock = ManualClock::new(START);
    let policy = Policy::fixed_window(3, Duration::from_secs(10))?.named("per-ip")?;
    let layer = RateLimitLayer::builder(ClientIp::peer(), MemoryBackend::new(ip_store(&clock)), policy)
        .legacy_headers(true)
        .build();
    let server = Server::start(layer).await?;
    let client = client();

    for remaining in [2, 1, 0] {
        let (status, h) = server.get(&client, &[]).await?;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(header(&h, "ratelimit-policy"), Some("\"per-ip\";q=3;w=10"));
        assert_eq!(header(&h, "ratelimit"), Some(format!("\"per-ip\";r={remaining};t=10").as_str()));
        assert_eq!(header(&h, "x-ratelimit-limit"), Some("3"));
        assert_eq!(header(&h, "x-ratelimit-remaining"), Some(remaining.to_string().as_str()));
        assert_eq!(header(&h, "x-ratelimit-reset"), Some("10"));
        assert_eq!(header(&h, "retry-after"), None);
    }
    let (status, h) = server.get(&client, &[]).await?;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(header(&h, "retry-after"), Some("10"));
    assert_eq!(header(&h, "ratelimit-policy"), Some("\"per-ip\";q=3;w=10"));
    assert_eq!(header(&h, "ratelimit"), Some("\"per-ip\";r=0;t=10"));
    assert_eq!(header(&h, "x-ratelimit-remaining"), Some("0"));
    assert_eq!(server.calls(), 3, "a denied request never reaches the handler");
    Ok(())
}

#[tokio::test]
async fn headers_can_be_kept_for_denials_only() -> TestResult {
    let clock = ManualClock::new(START);
    let policy = Policy::fixed_window(1, Duration::from_secs(10))?;
    let layer = RateLimitLayer::builder(ClientIp::peer(), MemoryBackend::new(ip_store(&clock)), policy)
        .headers_when_allowed(false)
        .build();
    let server = Server::start(layer).await?;
    let client = client();
    let (status, h) = server.get(&client, &[]).await?;
    assert_eq!((status, header(&h, "ratelimit"), header(&h, "ratelimit-policy")), (StatusCode::OK, None, None));
    let (status, h) = server.get(&client, &[]).await?;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(header(&h, "ratelimit"), Some("\"default\";r=0;t=10"));
    assert_eq!(header(&h, "retry-after"), Some("10"));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_never_pass_more_than_the_limit() -> TestResult {
    let clock = ManualClock::new(START);
    let policy = Policy::gcra(50, Duration::from_secs(60))?;
    let server =
        Server::start(RateLimitLayer::new(ClientIp::peer(), MemoryBackend::new(ip_store(&clock)), policy)).await?;
    let client = client();
    let tasks: Vec<_> = (0..200)
        .map(|_| {
            let (client, url) = (client.clone(), format!("http://{}/", server.addr));
            tokio::spawn(async move {
                let resp = client.request(Request::get(url).body(Empty::new())?).await?;
                Ok::<_, Error>(resp.status())
            })
        })
        .collect();
    let mut ok = 0;
    for task in tasks {
        match task.await?? {
            StatusCode::OK => ok += 1,
            StatusCode::TOO_MANY_REQUESTS => {}
            other => return Err(format!("unexpected status {other}").into()),
        }
    }
    assert_eq!(ok, 50, "the clock stands still, so exactly the burst passes");
    assert_eq!(server.calls(), 50);
    Ok(())
}

#[tokio::test]
async fn retry_after_is_exact_and_waiting_it_out_passes() -> TestResult {
    let clock = ManualClock::new(START);
    let policy = Policy::fixed_window(1, Duration::from_secs(10))?;
    let server =
        Server::start(RateLimitLayer::new(ClientIp::peer(), MemoryBackend::new(ip_store(&clock)), policy)).await?;
    let client = client();

    assert_eq!(server.get(&client, &[]).await?.0, StatusCode::OK);
    clock.advance(Duration::from_millis(4_500));
    let (status, h) = server.get(&client, &[]).await?;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(header(&h, "retry-after"), Some("6"), "5.5 s rounds up to 6");
    assert_eq!(header(&h, "ratelimit"), Some("\"default\";r=0;t=6"));

    clock.advance(Duration::from_millis(5_499));
    let (status, h) = server.get(&client, &[]).await?;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(header(&h, "retry-after"), Some("1"), "1 ms still rounds up to a whole second");

    clock.advance(Duration::from_millis(1));
    let (status, h) = server.get(&client, &[]).await?;
    assert_eq!(status, StatusCode::OK, "exactly Retry-After later the request passes");
    assert_eq!(header(&h, "ratelimit"), Some("\"default\";r=0;t=10"));
    assert_eq!(server.calls(), 2);
    Ok(())
}

#[tokio::test]
async fn different_peer_ips_are_independent() -> TestResult {
    let clock = ManualClock::new(START);
    let policy = Policy::gcra(1, Duration::from_secs(60))?;
    let store = ip_store(&clock);
    let server =
        Server::start(RateLimitLayer::new(ClientIp::peer(), MemoryBackend::new(store.clone()), policy)).await?;

    let (a, b, c) = (client_from([127, 0, 0, 1]), client_from([127, 0, 0, 2]), client_from([127, 0, 0, 3]));
    assert_eq!(server.get(&a, &[]).await?.0, StatusCode::OK);
    assert_eq!(server.get(&a, &[]).await?.0, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(server.get(&b, &[]).await?.0, StatusCode::OK);
    assert_eq!(server.get(&c, &[]).await?.0, StatusCode::OK);
    assert_eq!(server.get(&b, &[]).await?.0, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(store.stats().keys, 3);
    Ok(())
}

#[tokio::test]
async fn x_forwarded_for_is_used_only_from_the_trusted_end() -> TestResult {
    let clock = ManualClock::new(START);
    let policy = Policy::fixed_window(1, Duration::from_secs(10))?;
    let server =
        Server::start(RateLimitLayer::new(ClientIp::x_forwarded_for(1), MemoryBackend::new(ip_store(&clock)), policy))
            .await?;
    let client = client();

    assert_eq!(server.get(&client, &[("x-forwarded-for", "192.0.2.1")]).await?.0, StatusCode::OK);
    assert_eq!(server.get(&client, &[("x-forwarded-for", "192.0.2.1")]).await?.0, StatusCode::TOO_MANY_REQUESTS);
    // A client prepending made-up addresses does not get a new budget: the proxy's entry is the last one.
    let spoofed = [("x-forwarded-for", "203.0.113.50, 192.0.2.1")];
    assert_eq!(server.get(&client, &spoofed).await?.0, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(server.get(&client, &[("x-forwarded-for", "192.0.2.2")]).await?.0, StatusCode::OK);
    // No header: no key, rejected by default.
    assert_eq!(server.get(&client, &[]).await?.0, StatusCode::BAD_REQUEST);
    assert_eq!(server.calls(), 2);
    Ok(())
}

#[tokio::test]
async fn header_keys_are_independent_and_missing_keys_follow_the_option() -> TestResult {
    let clock = ManualClock::new(START);
    let store = MemoryStore::builder().clock(clock.clone()).cleanup_interval(None).build();
    let policy = Policy::fixed_window(1, Duration::from_secs(10))?;
    let reject =
        RateLimitLayer::builder(HeaderKey::new("x-api-key")?, MemoryBackend::new(store.clone()), policy.clone())
            .missing_key(MissingKey::Reject(StatusCode::UNAUTHORIZED))
            .build();
    let server = Server::start(reject).await?;
    let client = client();

    assert_eq!(server.get(&client, &[("x-api-key", "alpha")]).await?.0, StatusCode::OK);
    assert_eq!(server.get(&client, &[("x-api-key", "alpha")]).await?.0, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(server.get(&client, &[("x-api-key", "beta")]).await?.0, StatusCode::OK);
    let (status, h) = server.get(&client, &[]).await?;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(header(&h, "ratelimit"), None);
    assert_eq!(server.calls(), 2);

    let allow = RateLimitLayer::builder(HeaderKey::new("x-api-key")?, MemoryBackend::new(store), policy)
        .missing_key(MissingKey::Allow)
        .build();
    let server = Server::start(allow).await?;
    let (status, h) = server.get(&client, &[]).await?;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(header(&h, "ratelimit"), None, "an unkeyed request is not counted, so it gets no headers");
    // The two layers share the store: alpha is still spent.
    assert_eq!(server.get(&client, &[("x-api-key", "alpha")]).await?.0, StatusCode::TOO_MANY_REQUESTS);
    Ok(())
}

#[tokio::test]
async fn a_closure_can_key_requests() -> TestResult {
    let clock = ManualClock::new(START);
    let store = MemoryStore::builder().key_type::<u64>().clock(clock.clone()).cleanup_interval(None).build();
    // The tenant number from the `x-tenant` header.
    let by_tenant = key_fn(|req: &Request<Body>| req.headers().get("x-tenant")?.to_str().ok()?.parse::<u64>().ok());
    let policy = Policy::fixed_window(2, Duration::from_secs(10))?;
    let server = Server::start(RateLimitLayer::new(by_tenant, MemoryBackend::new(store), policy)).await?;
    let client = client();

    for expected in [StatusCode::OK, StatusCode::OK, StatusCode::TOO_MANY_REQUESTS] {
        assert_eq!(server.get(&client, &[("x-tenant", "7")]).await?.0, expected);
    }
    assert_eq!(server.get(&client, &[("x-tenant", "8")]).await?.0, StatusCode::OK);
    assert_eq!(server.get(&client, &[("x-tenant", "not-a-number")]).await?.0, StatusCode::BAD_REQUEST);
    Ok(())
}

#[tokio::test]
async fn route_and_ip_pairs_are_independent() -> TestResult {
    let clock = ManualClock::new(START);
    let store =
        MemoryStore::builder().key_type::<(RoutePath, IpAddr)>().clock(clock.clone()).cleanup_interval(None).build();
    let layer = RateLimitLayer::new(
        (RouteKey, ClientIp::peer()),
        MemoryBackend::new(store.clone()),
        Policy::fixed_window(1, Duration::from_secs(10))?,
    );
    let app = Router::new()
        .route("/users/{id}", get(|| async { "user" }))
        .route("/search", get(|| async { "results" }))
        .layer(layer);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        let _ = axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>()).await;
    });
    let status = |client: TestClient, path: &'static str| async move {
        let resp = client.request(Request::get(format!("http://{addr}{path}")).body(Empty::new())?).await?;
        Ok::<_, Error>(resp.status())
    };
    let (a, b) = (client_from([127, 0, 0, 1]), client_from([127, 0, 0, 2]));
    assert_eq!(status(a.clone(), "/users/1").await?, StatusCode::OK);
    // Same route pattern, another id: the same budget.
    assert_eq!(status(a.clone(), "/users/2").await?, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(status(a.clone(), "/search").await?, StatusCode::OK);
    assert_eq!(status(b.clone(), "/users/1").await?, StatusCode::OK);
    // No route matched: no key, rejected (the fallback is layered too).
    assert_eq!(status(b, "/nowhere").await?, StatusCode::BAD_REQUEST);
    assert_eq!(store.stats().keys, 3);
    Ok(())
}

#[tokio::test]
async fn without_connect_info_peer_keys_are_missing() -> TestResult {
    let app = Router::new()
        .route("/", get(|| async { "ok" }))
        .layer(RateLimitLayer::per_ip(Policy::fixed_window(5, Duration::from_secs(1))?));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    let resp = client().request(Request::get(format!("http://{addr}/")).body(Empty::new())?).await?;
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    Ok(())
}

/// An async store (the path a Redis store takes), here a memory store behind the `Store` trait.
#[tokio::test]
async fn an_async_store_backend_limits_the_same_way() -> TestResult {
    let clock = ManualClock::new(START);
    let store = MemoryStore::builder().clock(clock.clone()).cleanup_interval(None).build();
    let backend = StoreBackend::new(store).prefix("http:ip:");
    let policy = Policy::fixed_window(2, Duration::from_secs(10))?.named("async")?;
    let layer = RateLimitLayer::new(ClientIp::peer(), backend.clone(), policy.clone());
    let server = Server::start(layer).await?;
    let client = client();

    assert_eq!(header(&server.get(&client, &[]).await?.1, "ratelimit"), Some("\"async\";r=1;t=10"));
    assert_eq!(server.get(&client, &[]).await?.0, StatusCode::OK);
    clock.advance(Duration::from_millis(2_500));
    let (status, h) = server.get(&client, &[]).await?;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(header(&h, "retry-after"), Some("8"));
    let used = backend.store().inspect(b"http:ip:127.0.0.1", &policy).await?.map(|b| b.used);
    assert_eq!(used, Some(2), "ids are the prefix then the IP as text");
    clock.advance(Duration::from_millis(7_500));
    assert_eq!(server.get(&client, &[]).await?.0, StatusCode::OK);
    assert_eq!(server.calls(), 3);
    Ok(())
}

/// A store that is down.
struct DownStore;

impl Store for DownStore {
    async fn hit(&self, _: &[u8], _: &Policy, _: u64) -> StoreResult<Decision> {
        Err(StoreError::Unavailable("connection refused".into()))
    }
    async fn inc(&self, _: &[u8], _: &Policy, _: u64) -> StoreResult<Decision> {
        Err(StoreError::Unavailable("connection refused".into()))
    }
    async fn set(&self, _: &[u8], _: &Policy, _: u64) -> StoreResult<Decision> {
        Err(StoreError::Unavailable("connection refused".into()))
    }
    async fn inspect(&self, _: &[u8], _: &Policy) -> StoreResult<Option<BucketInfo>> {
        Err(StoreError::Unavailable("connection refused".into()))
    }
    async fn delete_buckets(&self, _: &[u8]) -> StoreResult<u64> {
        Err(StoreError::Unavailable("connection refused".into()))
    }
}

/// A store that never answers.
struct HungStore;

impl Store for HungStore {
    async fn hit(&self, _: &[u8], _: &Policy, _: u64) -> StoreResult<Decision> {
        std::future::pending().await
    }
    async fn inc(&self, _: &[u8], _: &Policy, _: u64) -> StoreResult<Decision> {
        std::future::pending().await
    }
    async fn set(&self, _: &[u8], _: &Policy, _: u64) -> StoreResult<Decision> {
        std::future::pending().await
    }
    async fn inspect(&self, _: &[u8], _: &Policy) -> StoreResult<Option<BucketInfo>> {
        std::future::pending().await
    }
    async fn delete_buckets(&self, _: &[u8]) -> StoreResult<u64> {
        std::future::pending().await
    }
}

#[tokio::test]
async fn a_failing_store_fails_open_by_default() -> TestResult {
    let policy = Policy::fixed_window(1, Duration::from_secs(10))?;
    let server = Server::start(RateLimitLayer::new(ClientIp::peer(), StoreBackend::new(DownStore), policy)).await?;
    let client = client();
    for _ in 0..3 {
        let (status, h) = server.get(&client, &[]).await?;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(header(&h, "ratelimit"), None, "no decision, so no rate-limit headers");
    }
    assert_eq!(server.calls(), 3);
    Ok(())
}

#[tokio::test]
async fn a_failing_store_can_answer_503() -> TestResult {
    let policy = Policy::fixed_window(1, Duration::from_secs(10))?;
    let layer = RateLimitLayer::builder(ClientIp::peer(), StoreBackend::new(DownStore), policy)
        .on_store_error(OnStoreError::Unavailable)
        .build();
    let server = Server::start(layer).await?;
    let (status, h) = server.get(&client(), &[]).await?;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(header(&h, "ratelimit"), None);
    assert_eq!(server.calls(), 0);
    Ok(())
}

#[tokio::test]
async fn a_hung_store_times_out_into_the_error_policy() -> TestResult {
    let policy = Policy::fixed_window(1, Duration::from_secs(10))?;
    let backend = StoreBackend::new(HungStore).timeout(Duration::from_millis(20));
    let open = RateLimitLayer::new(ClientIp::peer(), backend.clone(), policy.clone());
    let closed =
        RateLimitLayer::builder(ClientIp::peer(), backend, policy).on_store_error(OnStoreError::Unavailable).build();
    let (open, closed) = (Server::start(open).await?, Server::start(closed).await?);
    let client = client();
    assert_eq!(open.get(&client, &[]).await?.0, StatusCode::OK);
    assert_eq!(closed.get(&client, &[]).await?.0, StatusCode::SERVICE_UNAVAILABLE);
    Ok(())
}
