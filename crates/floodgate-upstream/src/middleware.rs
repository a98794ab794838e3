//! A [`reqwest_middleware`] middleware: waits until the bucket allows, sends, records the response, and retries a
//! 429 after its `Retry-After` (bounded).
//!
//! ```no_run
//! use floodgate_upstream::middleware::UpstreamMiddleware;
//! use floodgate_upstream::{Provider, Upstream};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let upstream = Upstream::in_memory();
//! let client = reqwest_middleware::ClientBuilder::new(reqwest::Client::new())
//!     .with(UpstreamMiddleware::new(upstream.clone(), Provider::Discord))
//!     .build();
//! let response = client.get("http://127.0.0.1:8080/api/users/42").send().await?;
//! println!("{} after {:?} of waiting", response.status(), upstream.stats().wait_time);
//! # Ok(())
//! # }
//! ```

use std::sync::Arc;
use std::time::Duration;

use http::Extensions;
use reqwest::{Request, Response};
use reqwest_middleware::{Middleware, Next};

use crate::headers::Provider;
use crate::upstream::Upstream;

type RouteFn = dyn Fn(&Request) -> String + Send + Sync;

/// Rate-limits a reqwest client by the upstream's own headers. Cheap to clone.
#[derive(Clone)]
pub struct UpstreamMiddleware {
    upstream: Upstream,
    provider: Provider,
    route: Arc<RouteFn>,
    max_wait: Duration,
    max_retries: u32,
}

impl std::fmt::Debug for UpstreamMiddleware {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamMiddleware")
            .field("provider", &self.provider)
            .field("max_wait", &self.max_wait)
            .field("max_retries", &self.max_retries)
            .finish_non_exhaustive()
    }
}

/// The default route of a request: `METHOD host/path` (no query).
pub fn default_route(req: &Request) -> String {
    let url = req.url();
    format!("{} {}{}", req.method(), url.host_str().unwrap_or(""), url.path())
}

impl UpstreamMiddleware {
    /// Over `upstream`, reading `provider`'s headers; routes by [`default_route`], waits at most 30 s, retries a
    /// 429 at most twice.
    pub fn new(upstream: Upstream, provider: Provider) -> UpstreamMiddleware {
        UpstreamMiddleware {
            upstream,
            provider,
            route: Arc::new(default_route),
            max_wait: Duration::from_secs(30),
            max_retries: 2,
        }
    }

    /// How a request maps to a route (e.g. a template and its major parameter, see [`crate::store::route`]).
    pub fn route(mut self, f: impl Fn(&Request) -> String + Send + Sync + 'static) -> Self {
        self.route = Arc::new(f);
        self
    }

    /// The longest wait for a bucket before giving up with an error.
    pub fn max_wait(mut self, max_wait: Duration) -> Self {
        self.max_wait = max_wait;
        self
    }

    /// How many times a 429 is retried (after its `Retry-After`).
    pub fn max_retries(mut self, retries: u32) -> Self {
        self.max_retries = retries;
        self
    }
}

#[async_trait::async_trait]
impl Middleware for UpstreamMiddleware {
    async fn handle(
        &self,
        req: Request,
        extensions: &mut Extensions,
        next: Next<'_>,
    ) -> reqwest_middleware::Result<Response> {
        let route = (self.route)(&req);
        let mut req = Some(req);
        for attempt in 0..=self.max_retries {
            let Some(current) = req.take() else { break };
            // Keep a copy for a retry, if the body allows one.
            let spare = if attempt < self.max_retries { current.try_clone() } else { None };
            let permit =
                self.upstream.permit(&route, self.max_wait).await.map_err(reqwest_middleware::Error::middleware)?;
            // A cancelled future or an error drops the permit, which releases its place.
            let response = next.clone().run(current, extensions).await?;
            let status = response.status().as_u16();
            let view = match permit.finish(self.provider, status, response.headers()).await {
                Ok(view) => Some(view),
                Err(e) => {
                    // The response is the caller's all the same; the lease expires by itself.
                    tracing::warn!(route, error = %e, "could not record an upstream response");
                    None
                }
            };
            // A 429 is retried only if its wait fits in the bound: otherwise the caller gets the 429 itself.
            let fits = view.is_some_and(|v| v.retry_after.is_none_or(|d| d <= self.max_wait));
            if status != 429 || spare.is_none() || !fits {
                return Ok(response);
            }
            tracing::info!(route, attempt, "retrying a 429 after its Retry-After");
            self.upstream.count_retry();
            req = spare;
        }
        Err(reqwest_middleware::Error::middleware(crate::UpstreamError::WaitTooLong(Duration::ZERO)))
    }
}
