//! An axum server limited per client IP, to copy into your own.
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
        .route("/health", get(|| async { "ok\n" }))
        .layer(limit);

    let addr = std::env::var("ADDR").unwrap_or_else(|_| "127.0.0.1:3000".to_owned());
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    println!("listening on http://{}", listener.local_addr()?);
    // ClientIp::peer() reads axum's ConnectInfo<SocketAddr>: serve with connect info.
    axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>()).await?;
    Ok(())
}
