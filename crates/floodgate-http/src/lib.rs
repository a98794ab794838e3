//! # floodgate-http
//!
//! Tower middleware that rate-limits HTTP services (axum, hyper, tonic) with [`floodgate`].
//!
//! - **Keys**: a [`KeyExtractor`] picks what a request is counted under: the client IP ([`ClientIp`]: the TCP
//!   peer, or with explicit opt-in a header your proxy writes: `X-Forwarded-For`, `Forwarded`, `X-Real-IP`), a
//!   header ([`HeaderKey`]), the matched axum route (`RouteKey`), any closure ([`key_fn`]), or a pair of
//!   these (`(RouteKey, ClientIp::peer())`: each client per route). A request with no key is let through or
//!   rejected ([`MissingKey`]).
//! - **Backends**: [`MemoryBackend`] decides synchronously on a `floodgate::MemoryStore<K>` of any key type
//!   (with `MemoryStore<IpAddr>`, keying by IP allocates nothing per request); [`StoreBackend`] uses any async
//!   [`floodgate::Store`] (Redis and the rest), with an optional timeout. A failing store fails open or answers
//!   `503` ([`OnStoreError`]).
//! - **Responses**: allowed requests get the IETF `RateLimit-Policy` and `RateLimit` fields
//!   (`draft-ietf-httpapi-ratelimit-headers-10`, see [`headers`]); denied ones get `429 Too Many Requests` with
//!   `Retry-After` in whole seconds, rounded up. The older `X-RateLimit-*` fields are optional.
//!
//! ```
//! use axum::{Router, routing::get};
//! use floodgate::Policy;
//! use floodgate_http::RateLimitLayer;
//! use std::net::SocketAddr;
//! use std::time::Duration;
//!
//! # async fn serve() -> Result<(), Box<dyn std::error::Error>> {
//! // 10 requests per second per client IP, bursts of up to 10.
//! let policy = Policy::gcra(10, Duration::from_secs(1))?.named("per-ip")?;
//! let app = Router::new().route("/", get(|| async { "hello" })).layer(RateLimitLayer::per_ip(policy));
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
//! // Peer IPs come from ConnectInfo: serve with connect info.
//! axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>()).await?;
//! # Ok(())
//! # }
//! ```
//!
//! The pieces compose: pick an extractor, a backend and a policy, and set the options on the builder.
//!
//! ```
//! use floodgate::{MemoryStore, Policy};
//! use floodgate_http::{HeaderKey, MemoryBackend, MissingKey, RateLimitLayer};
//! use std::time::Duration;
//!
//! // 1000 requests per hour per API key; requests without a key are refused with 401.
//! let per_key = RateLimitLayer::builder(
//!     HeaderKey::new("x-api-key")?,
//!     MemoryBackend::new(MemoryStore::new()),
//!     Policy::fixed_window(1000, Duration::from_secs(3600))?,
//! )
//! .name("api-key")
//! .legacy_headers(true)
//! .missing_key(MissingKey::Reject(http::StatusCode::UNAUTHORIZED))
//! .build();
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#![warn(missing_docs)]
#![deny(clippy::unwrap_used)]

mod backend;
pub mod headers;
pub mod ip;
pub mod key;
mod layer;

pub use backend::{Backend, Hit, MemoryBackend, MemoryKey, StoreBackend, StoreFuture, StoreKey};
pub use key::{ClientIp, HeaderKey, KeyExtractor, KeyFn, key_fn};
#[cfg(feature = "axum")]
pub use key::{RouteKey, RoutePath};
pub use layer::{MissingKey, OnStoreError, RateLimit, RateLimitBuilder, RateLimitLayer, ResponseFuture};
