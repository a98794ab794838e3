//! Issue 19, defect 2: silent connections cannot lock real callers out of either port, and memory stays bounded.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use floodgate::MemoryStore;
use floodgate_server::conn::Limits;
use floodgate_server::server::Server;
use floodgate_server::state::{AppState, Backend, ConfigSource};

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

async fn real_calls_answered(base: &str, server: &common::TestServerAddrs) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let http = reqwest::Client::new()
            .post(format!("{base}/v1/hit"))
            .json(&serde_json::json!({"id": "real", "policy": "per_second"}))
            .timeout(Duration::from_secs(2))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success());
        let grpc = server.rls_ok().await;
        if http && grpc {
            return;
        }
        assert!(Instant::now() < deadline, "real calls not answered (http {http}, grpc {grpc})");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_sockets_never_lock_out_real_callers() {
    let config = common::write_config("policies:\n  per_second: {limit: 1000000, window: 1s}\n");
    let state = AppState::new(ConfigSource::Path(config), Backend::Memory(MemoryStore::new()), None, false).unwrap();
    let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let limits = Limits { max_connections: 1_000, first_byte: Duration::from_secs(10), idle: Duration::from_secs(60) };
    let server = Server::start_limited(Arc::new(state), any, any, 1, limits).await.unwrap();
    let base = format!("http://{}", server.http_addr);
    let addrs = common::TestServerAddrs { grpc: server.grpc_addr };
    real_calls_answered(&base, &addrs).await;
    let rss_before = rss_kib();
    // 10 waves of 2 000 silent sockets on each port: 20 000 each, at most 4 000 held by this process at once.
    let start = Instant::now();
    for _wave in 0..10 {
        let mut held = Vec::with_capacity(4_000);
        for _ in 0..2_000 {
            for addr in [server.http_addr, server.grpc_addr] {
                if let Ok(Ok(s)) =
                    tokio::time::timeout(Duration::from_secs(1), tokio::net::TcpStream::connect(addr)).await
                {
                    held.push(s);
                }
            }
        }
        tokio::time::sleep(conn_grace()).await;
        real_calls_answered(&base, &addrs).await;
        drop(held);
        assert!(start.elapsed() < Duration::from_secs(120), "the flood took too long");
    }
    let grown_mib = rss_kib().saturating_sub(rss_before) / 1024;
    assert!(grown_mib < 150, "RSS grew by {grown_mib} MiB");
    let stop = Instant::now();
    server.shutdown().await.unwrap();
    assert!(stop.elapsed() < Duration::from_secs(5), "shutdown waited {:?}", stop.elapsed());
}

fn conn_grace() -> Duration {
    floodgate_server::conn::SHED_GRACE + Duration::from_millis(100)
}
