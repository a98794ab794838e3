//! An axum server limited per client IP, to copy into your own: `/` is limited (a 429 says when to retry, in its
//! headers and in a short body), `/health` is not.
//!
//! ```text
//! cargo run -p floodgate-http --example axum
//! for i in 1 2 3 4 5 6; do curl -si http://127.0.0.1:3000/ | grep -iE '^(HTTP|ratelimit|retry-after)'; done
//! ```
//!
//! Set `ADDR` to listen elsewhere (default `127.0.0.1:3000`).

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{StatusCode, header};
use axum::response::Response;
use axum::routing::get;
use floodgate::{MemoryStore, Policy};
use floodgate_http::{ClientIp, MemoryBackend, RateLimitLayer};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // 5 requests per 10 seconds per client IP (fixed window). GCRA or a token bucket smooth bursts instead.
    let policy = Policy::fixed_window(5, Duration::from_secs(10))?.named("per-ip")?;

    // One in-memory store keyed by IpAddr: keying a request allocates nothing.
    let store = MemoryStore::builder().key_type::<IpAddr>().max_keys(Some(1_000_000)).build();

    let limit = RateLimitLayer::builder(
        // The TCP peer. Behind a reverse proxy use ClientIp::x_forwarded_for(1) (or forwarded / x_real_ip)
        // instead: only then are those headers trusted.
        ClientIp::peer().ipv6_prefix(64),
        MemoryBackend::new(store),
        policy,
    )
    .legacy_headers(true)
    .build();

    let app = Router::new()
        .route("/", get(|| async { "hello, within your rate limit\n" }))
        // `route_layer` limits the routes above it only: health checks are never limited.
        .route_layer(limit)
        .route_layer(axum::middleware::map_response(explain_429))
        .route("/health", get(|| async { "ok\n" }));

    let addr = std::env::var("ADDR").unwrap_or_else(|_| "127.0.0.1:3000".to_owned());
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    println!("listening on http://{}", listener.local_addr()?);
    // ClientIp::peer() reads axum's ConnectInfo<SocketAddr>: serve with connect info.
    axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>()).await?;
    Ok(())
}

/// Gives a 429 a short body saying when to retry (the layer's 429 carries its headers and an empty body).
async fn explain_429(res: Response) -> Response {
    if res.status() != StatusCode::TOO_MANY_REQUESTS {
        return res;
    }
    let retry = res.headers().get(header::RETRY_AFTER).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let (mut parts, _) = res.into_parts();
    parts.headers.insert(header::CONTENT_TYPE, header::HeaderValue::from_static("text/plain; charset=utf-8"));
    let text = match retry {
        Some(secs) => format!("too many requests: retry in {secs} s\n"),
        None => "too many requests\n".to_owned(),
    };
    Response::from_parts(parts, Body::from(text))
}
