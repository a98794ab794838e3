//! The tower [`Layer`] and [`Service`].

use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use floodgate::{Decision, MemoryStore, Policy, StoreError, StoreResult};
use http::{Request, Response, StatusCode};
use pin_project_lite::pin_project;
use tower::{Layer, Service};

use crate::backend::{Backend, Hit, MemoryBackend};
use crate::headers::{HeaderSet, RateLimitHeaders};
use crate::key::{ClientIp, KeyExtractor};

/// What to do with a request the [`KeyExtractor`] finds no key for.
///
/// ```
/// use floodgate_http::MissingKey;
/// assert_eq!(MissingKey::default(), MissingKey::Reject(http::StatusCode::BAD_REQUEST));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MissingKey {
    /// Let it through, unlimited and without rate-limit headers.
    Allow,
    /// Answer it with this status and an empty body (the default: `400 Bad Request`).
    Reject(StatusCode),
}

impl Default for MissingKey {
    fn default() -> Self {
        MissingKey::Reject(StatusCode::BAD_REQUEST)
    }
}

/// What to do when the store fails (it is down, it timed out).
///
/// ```
/// use floodgate_http::OnStoreError;
/// assert_eq!(OnStoreError::default(), OnStoreError::FailOpen);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum OnStoreError {
    /// Let the request through without rate-limit headers, and log the error at `warn` (the default: an outage of
    /// the limiter does not become an outage of the service). Errors are logged at most once a second, each line
    /// with the number left out since the last.
    #[default]
    FailOpen,
    /// Answer `503 Service Unavailable`, and log the error at `error` (at most once a second too).
    Unavailable,
}

/// What every copy of the service shares.
#[derive(Debug)]
struct Shared<E, Bk> {
    extractor: E,
    backend: Bk,
    policy: Policy,
    cost: u64,
    missing_key: MissingKey,
    warned_missing_key: AtomicBool,
    responder: Arc<Responder>,
}

/// Turns decisions into responses; also used by futures still waiting for a store.
#[derive(Debug)]
struct Responder {
    headers: RateLimitHeaders,
    headers_when_allowed: bool,
    on_store_error: OnStoreError,
    started: Instant,
    error_log: LogThrottle,
}

/// What to do with a request once its hit is decided.
enum Verdict<B> {
    Pass(Option<HeaderSet>),
    Answer(Response<B>),
}

impl Responder {
    fn verdict<B: Default>(&self, decision: StoreResult<Decision>) -> Verdict<B> {
        match decision {
            Ok(d) if d.allowed => Verdict::Pass(self.headers_when_allowed.then(|| self.headers.for_decision(&d))),
            Ok(d) => {
                let mut resp = status_response(StatusCode::TOO_MANY_REQUESTS);
                self.headers.for_decision(&d).apply(resp.headers_mut());
                Verdict::Answer(resp)
            }
            Err(e) => self.store_failed(&e),
        }
    }

    #[cold]
    fn store_failed<B: Default>(&self, e: &StoreError) -> Verdict<B> {
        // A store that is down fails every request: log at most once a second, with the count in between.
        let suppressed = self.error_log.should_log(self.started.elapsed());
        match self.on_store_error {
            OnStoreError::FailOpen => {
                if let Some(suppressed) = suppressed {
                    tracing::warn!(error = %e, suppressed, "floodgate-http: the rate-limit store failed; letting the request through");
                }
                Verdict::Pass(None)
            }
            OnStoreError::Unavailable => {
                if let Some(suppressed) = suppressed {
                    tracing::error!(error = %e, suppressed, "floodgate-http: the rate-limit store failed; answering 503");
                }
                Verdict::Answer(status_response(StatusCode::SERVICE_UNAVAILABLE))
            }
        }
    }
}

/// Thins out a stream of log lines to one per interval, counting the rest.
#[derive(Debug, Default)]
struct LogThrottle {
    /// When the last line was logged, in milliseconds since the responder was built, plus one (0: never).
    last: AtomicU64,
    suppressed: AtomicU64,
}

impl LogThrottle {
    const INTERVAL_MS: u64 = 1_000;

    /// `Some(lines suppressed since the last one)` if a line may be logged at `now`, else `None` (and counts it).
    fn should_log(&self, now: Duration) -> Option<u64> {
        let now = u64::try_from(now.as_millis()).unwrap_or(u64::MAX).saturating_add(1);
        let last = self.last.load(Ordering::Relaxed);
        if (last == 0 || now.saturating_sub(last) >= Self::INTERVAL_MS)
            && self.last.compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed).is_ok()
        {
            return Some(self.suppressed.swap(0, Ordering::Relaxed));
        }
        self.suppressed.fetch_add(1, Ordering::Relaxed);
        None
    }
}

fn status_response<B: Default>(status: StatusCode) -> Response<B> {
    let mut resp = Response::new(B::default());
    *resp.status_mut() = status;
    resp
}

/// A tower [`Layer`] that rate-limits requests by a key.
///
/// It is generic over the [`KeyExtractor`] (`E`: [`ClientIp`], [`HeaderKey`](crate::HeaderKey), a closure via
/// [`key_fn`](crate::key_fn)) and the [`Backend`] (`Bk`: [`MemoryBackend`] for the synchronous in-memory fast
/// path, [`StoreBackend`](crate::StoreBackend) for any async store). Each request hits the policy once with the
/// configured cost (default 1):
///
/// - allowed: it goes to the inner service, and the response gets `RateLimit-Policy` and `RateLimit` (see
///   [`headers`](crate::headers));
/// - denied: `429 Too Many Requests` with `Retry-After` and the same headers, and the inner service never sees it;
/// - no key: see [`MissingKey`]; store failure: see [`OnStoreError`].
///
/// Clones of the layer, and every service it makes, share one backend and so one count.
///
/// ```
/// use axum::{Router, routing::get};
/// use floodgate::Policy;
/// use floodgate_http::RateLimitLayer;
/// use std::time::Duration;
///
/// let policy = Policy::gcra(100, Duration::from_secs(60))?.named("per-ip")?;
/// let app: Router = Router::new().route("/", get(|| async { "hi" })).layer(RateLimitLayer::per_ip(policy));
/// // axum::serve(listener, app.into_make_service_with_connect_info::<std::net::SocketAddr>())
/// # Ok::<(), floodgate::PolicyError>(())
/// ```
#[derive(Debug)]
pub struct RateLimitLayer<E, Bk> {
    shared: Arc<Shared<E, Bk>>,
}

impl<E, Bk> Clone for RateLimitLayer<E, Bk> {
    fn clone(&self) -> Self {
        RateLimitLayer { shared: self.shared.clone() }
    }
}

impl RateLimitLayer<ClientIp, MemoryBackend<IpAddr>> {
    /// Limits each client IP (the TCP peer, see [`ClientIp::peer`]) to `policy`, in a new in-memory store,
    /// with the default options.
    ///
    /// ```
    /// use floodgate::Policy;
    /// use floodgate_http::RateLimitLayer;
    /// use std::time::Duration;
    /// let layer = RateLimitLayer::per_ip(Policy::fixed_window(10, Duration::from_secs(1))?);
    /// assert_eq!(layer.policy().limit(), 10);
    /// # Ok::<(), floodgate::PolicyError>(())
    /// ```
    pub fn per_ip(policy: Policy) -> Self {
        Self::new(ClientIp::peer(), MemoryBackend::new(MemoryStore::builder().key_type::<IpAddr>().build()), policy)
    }
}

impl<E, Bk> RateLimitLayer<E, Bk> {
    /// A layer keying requests with `extractor` and counting in `backend` under `policy`, with the default
    /// options.
    ///
    /// ```
    /// use floodgate::{MemoryStore, Policy};
    /// use floodgate_http::{HeaderKey, MemoryBackend, RateLimitLayer};
    /// use std::time::Duration;
    ///
    /// let layer = RateLimitLayer::new(
    ///     HeaderKey::new("x-api-key")?,
    ///     MemoryBackend::new(MemoryStore::new()),
    ///     Policy::token_bucket(50, Duration::from_secs(1))?,
    /// );
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn new(extractor: E, backend: Bk, policy: Policy) -> Self {
        Self::builder(extractor, backend, policy).build()
    }

    /// A builder, to change the options.
    ///
    /// ```
    /// use floodgate::{MemoryStore, Policy};
    /// use floodgate_http::{ClientIp, MemoryBackend, MissingKey, OnStoreError, RateLimitLayer};
    /// use std::net::IpAddr;
    /// use std::time::Duration;
    ///
    /// let layer = RateLimitLayer::builder(
    ///     ClientIp::x_forwarded_for(1).ipv6_prefix(64),
    ///     MemoryBackend::new(MemoryStore::builder().key_type::<IpAddr>().build()),
    ///     Policy::fixed_window(100, Duration::from_secs(60))?,
    /// )
    /// .name("per-ip")
    /// .cost(1)
    /// .headers_when_allowed(true)
    /// .legacy_headers(true)
    /// .missing_key(MissingKey::Allow)
    /// .on_store_error(OnStoreError::Unavailable)
    /// .build();
    /// # Ok::<(), floodgate::PolicyError>(())
    /// ```
    pub fn builder(extractor: E, backend: Bk, policy: Policy) -> RateLimitBuilder<E, Bk> {
        RateLimitBuilder {
            headers: RateLimitHeaders::new(&policy),
            extractor,
            backend,
            policy,
            cost: 1,
            headers_when_allowed: true,
            missing_key: MissingKey::default(),
            on_store_error: OnStoreError::default(),
        }
    }

    /// The policy.
    ///
    /// ```
    /// use floodgate::Policy;
    /// use floodgate_http::RateLimitLayer;
    /// use std::time::Duration;
    /// let layer = RateLimitLayer::per_ip(Policy::gcra(3, Duration::from_secs(1))?);
    /// assert_eq!(layer.policy().limit(), 3);
    /// # Ok::<(), floodgate::PolicyError>(())
    /// ```
    pub fn policy(&self) -> &Policy {
        &self.shared.policy
    }

    /// The backend (to inspect or reset its store).
    ///
    /// ```
    /// use floodgate::Policy;
    /// use floodgate_http::RateLimitLayer;
    /// use std::time::Duration;
    /// let layer = RateLimitLayer::per_ip(Policy::gcra(3, Duration::from_secs(1))?);
    /// assert_eq!(layer.backend().store().stats().keys, 0);
    /// # Ok::<(), floodgate::PolicyError>(())
    /// ```
    pub fn backend(&self) -> &Bk {
        &self.shared.backend
    }
}

/// Builds a [`RateLimitLayer`]; see [`RateLimitLayer::builder`].
///
/// ```
/// use floodgate::{MemoryStore, Policy};
/// use floodgate_http::{ClientIp, MemoryBackend, RateLimitBuilder, RateLimitLayer};
/// use std::net::IpAddr;
/// use std::time::Duration;
///
/// let builder: RateLimitBuilder<ClientIp, MemoryBackend<IpAddr>> = RateLimitLayer::builder(
///     ClientIp::peer(),
///     MemoryBackend::new(MemoryStore::builder().key_type::<IpAddr>().build()),
///     Policy::fixed_window(10, Duration::from_secs(1))?,
/// );
/// let layer = builder.cost(2).build();
/// # Ok::<(), floodgate::PolicyError>(())
/// ```
#[derive(Debug)]
pub struct RateLimitBuilder<E, Bk> {
    extractor: E,
    backend: Bk,
    policy: Policy,
    headers: RateLimitHeaders,
    cost: u64,
    headers_when_allowed: bool,
    missing_key: MissingKey,
    on_store_error: OnStoreError,
}

impl<E, Bk> RateLimitBuilder<E, Bk> {
    /// The policy's name in the headers (default: the policy's own name, else `default`).
    pub fn name(mut self, name: &str) -> Self {
        self.headers = self.headers.name(name);
        self
    }

    /// Units each request takes (default 1). A cost above the policy's capacity denies every request, with no
    /// `Retry-After`.
    pub fn cost(mut self, cost: u64) -> Self {
        self.cost = cost;
        self
    }

    /// Whether allowed responses get the rate-limit headers (default: yes). With `false` only `429`s carry them,
    /// which saves formatting and adding them on every response (see BENCHMARKS.md).
    pub fn headers_when_allowed(mut self, on: bool) -> Self {
        self.headers_when_allowed = on;
        self
    }

    /// Also send `X-RateLimit-Limit`, `X-RateLimit-Remaining` and `X-RateLimit-Reset` (default: no).
    pub fn legacy_headers(mut self, on: bool) -> Self {
        self.headers = self.headers.legacy(on);
        self
    }

    /// What to do with a request that has no key (default: `400`).
    pub fn missing_key(mut self, missing_key: MissingKey) -> Self {
        self.missing_key = missing_key;
        self
    }

    /// What to do when the store fails (default: fail open).
    pub fn on_store_error(mut self, on_store_error: OnStoreError) -> Self {
        self.on_store_error = on_store_error;
        self
    }

    /// The layer.
    pub fn build(self) -> RateLimitLayer<E, Bk> {
        RateLimitLayer {
            shared: Arc::new(Shared {
                extractor: self.extractor,
                backend: self.backend,
                policy: self.policy,
                cost: self.cost,
                missing_key: self.missing_key,
                warned_missing_key: AtomicBool::new(false),
                responder: Arc::new(Responder {
                    headers: self.headers,
                    headers_when_allowed: self.headers_when_allowed,
                    on_store_error: self.on_store_error,
                    started: Instant::now(),
                    error_log: LogThrottle::default(),
                }),
            }),
        }
    }
}

impl<S, E, Bk> Layer<S> for RateLimitLayer<E, Bk> {
    type Service = RateLimit<S, E, Bk>;

    fn layer(&self, inner: S) -> Self::Service {
        RateLimit { inner, shared: self.shared.clone() }
    }
}

/// The rate-limiting [`Service`] that [`RateLimitLayer`] wraps around an inner service.
///
/// Its response body type must implement `Default` (for the empty body of a `429`, `503` or rejected request),
/// as axum's `Body` and `http_body_util`'s `Empty` and `Full` do.
///
/// ```
/// use floodgate::{ManualClock, MemoryStore, Policy, Timestamp};
/// use floodgate_http::{ClientIp, MemoryBackend, RateLimitLayer};
/// use http::{Request, Response, StatusCode};
/// use std::net::{IpAddr, SocketAddr};
/// use std::time::Duration;
/// use tower::{Layer, Service};
///
/// let store = MemoryStore::builder().key_type::<IpAddr>().clock(ManualClock::new(Timestamp::EPOCH)).build();
/// let layer = RateLimitLayer::new(ClientIp::peer(), MemoryBackend::new(store), Policy::fixed_window(1, Duration::from_secs(10))?);
/// let mut svc = layer.layer(tower::service_fn(|_req: Request<()>| async { Ok::<_, std::convert::Infallible>(Response::new(String::new())) }));
///
/// let request = || {
///     let mut req = Request::new(());
///     req.extensions_mut().insert(SocketAddr::from(([192, 0, 2, 1], 1234)));
///     req
/// };
/// let rt = tokio::runtime::Builder::new_current_thread().build()?;
/// let first = rt.block_on(svc.call(request()))?;
/// assert_eq!(first.status(), StatusCode::OK);
/// assert_eq!(first.headers()["ratelimit"], "\"default\";r=0;t=10");
/// let second = rt.block_on(svc.call(request()))?;
/// assert_eq!(second.status(), StatusCode::TOO_MANY_REQUESTS);
/// assert_eq!(second.headers()["retry-after"], "10");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct RateLimit<S, E, Bk> {
    inner: S,
    shared: Arc<Shared<E, Bk>>,
}

impl<S: Clone, E, Bk> Clone for RateLimit<S, E, Bk> {
    fn clone(&self) -> Self {
        RateLimit { inner: self.inner.clone(), shared: self.shared.clone() }
    }
}

impl<S, E, Bk> RateLimit<S, E, Bk> {
    /// The inner service.
    ///
    /// ```
    /// use floodgate::Policy;
    /// use floodgate_http::RateLimitLayer;
    /// use std::time::Duration;
    /// use tower::Layer;
    /// let svc = RateLimitLayer::per_ip(Policy::gcra(3, Duration::from_secs(1))?).layer("inner");
    /// assert_eq!(*svc.get_ref(), "inner");
    /// # Ok::<(), floodgate::PolicyError>(())
    /// ```
    pub fn get_ref(&self) -> &S {
        &self.inner
    }
}

impl<S, E, Bk, ReqBody, ResBody> Service<Request<ReqBody>> for RateLimit<S, E, Bk>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone,
    E: KeyExtractor<ReqBody>,
    Bk: Backend<E::Key>,
    ResBody: Default,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = ResponseFuture<S, ReqBody, Bk::Future>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        let shared = &*self.shared;
        let Some(key) = shared.extractor.extract(&req) else {
            return self.missing_key(req);
        };
        match shared.backend.hit(key, &shared.policy, shared.cost) {
            Hit::Ready(decision) => match shared.responder.verdict(decision) {
                Verdict::Pass(headers) => ResponseFuture::inner(self.inner.call(req), headers),
                Verdict::Answer(resp) => ResponseFuture::answer(resp),
            },
            Hit::Pending(hit) => {
                // The inner service was made ready for this request: take it, and leave a clone for the next.
                let clone = self.inner.clone();
                let service = std::mem::replace(&mut self.inner, clone);
                ResponseFuture {
                    state: State::Deciding {
                        hit,
                        service: Some(service),
                        req: Some(req),
                        responder: shared.responder.clone(),
                    },
                }
            }
        }
    }
}

impl<S, E, Bk> RateLimit<S, E, Bk> {
    #[cold]
    fn missing_key<ReqBody, ResBody, F>(&mut self, req: Request<ReqBody>) -> ResponseFuture<S, ReqBody, F>
    where
        S: Service<Request<ReqBody>, Response = Response<ResBody>>,
        ResBody: Default,
    {
        let shared = &*self.shared;
        if !shared.warned_missing_key.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                action = ?shared.missing_key,
                "floodgate-http: a request had no rate-limit key (if you key by peer IP with axum, serve with \
                 into_make_service_with_connect_info::<SocketAddr>()); logged once"
            );
        }
        match shared.missing_key {
            MissingKey::Allow => ResponseFuture::inner(self.inner.call(req), None),
            MissingKey::Reject(status) => ResponseFuture::answer(status_response(status)),
        }
    }
}

pin_project! {
    /// The future of a [`RateLimit`] response: the inner service's response with the rate-limit headers added,
    /// or the layer's own `429` / `503` / rejection. See [`RateLimit`] for an example.
    pub struct ResponseFuture<S, ReqBody, F>
    where
        S: Service<Request<ReqBody>>,
    {
        #[pin]
        state: State<S, ReqBody, F>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<S, ReqBody, F>
    where
        S: Service<Request<ReqBody>>,
    {
        // Passed: waiting for the inner service, then adding the headers.
        Inner { #[pin] fut: S::Future, headers: Option<HeaderSet> },
        // Waiting for the store's decision.
        Deciding { #[pin] hit: F, service: Option<S>, req: Option<Request<ReqBody>>, responder: Arc<Responder> },
        // Answered without the inner service.
        Answered { resp: Option<S::Response> },
    }
}

impl<S, ReqBody, F> ResponseFuture<S, ReqBody, F>
where
    S: Service<Request<ReqBody>>,
{
    #[inline]
    fn inner(fut: S::Future, headers: Option<HeaderSet>) -> Self {
        ResponseFuture { state: State::Inner { fut, headers } }
    }

    fn answer(resp: S::Response) -> Self {
        ResponseFuture { state: State::Answered { resp: Some(resp) } }
    }
}

impl<S, ReqBody, ResBody, F> Future for ResponseFuture<S, ReqBody, F>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    F: Future<Output = StoreResult<Decision>>,
    ResBody: Default,
{
    type Output = Result<Response<ResBody>, S::Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut state = self.project().state;
        loop {
            match state.as_mut().project() {
                StateProj::Inner { fut, headers } => {
                    let mut resp = ready!(fut.poll(cx))?;
                    if let Some(headers) = headers.take() {
                        headers.apply(resp.headers_mut());
                    }
                    return Poll::Ready(Ok(resp));
                }
                StateProj::Answered { resp } => {
                    return Poll::Ready(Ok(resp.take().expect("ResponseFuture polled after completion")));
                }
                StateProj::Deciding { hit, service, req, responder } => {
                    let decision = ready!(hit.poll(cx));
                    let next = match responder.verdict(decision) {
                        Verdict::Pass(headers) => match (service.take(), req.take()) {
                            (Some(mut service), Some(req)) => State::Inner { fut: service.call(req), headers },
                            _ => panic!("ResponseFuture polled after completion"),
                        },
                        Verdict::Answer(resp) => State::Answered { resp: Some(resp) },
                    };
                    state.set(next);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_errors_are_logged_once_a_second_with_a_count() {
        let t = LogThrottle::default();
        let ms = Duration::from_millis;
        assert_eq!(t.should_log(ms(0)), Some(0));
        assert_eq!(t.should_log(ms(1)), None);
        assert_eq!(t.should_log(ms(999)), None);
        assert_eq!(t.should_log(ms(1_000)), Some(2));
        assert_eq!(t.should_log(ms(1_500)), None);
        assert_eq!(t.should_log(ms(5_000)), Some(1));
        assert_eq!(t.should_log(ms(5_000)), None);
    }
}
