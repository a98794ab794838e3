//! The scale simulation of issue 15: N real nodes (3, 8, 16, 32) in one process over loopback TCP, a full
//! mesh, 10 000 hits/s in all spread over the nodes and 1 000 ids; measures the bytes on the wire per hit,
//! the replication lag (every node's last-seen lag per peer, sampled every 10 ms) and the memory one node
//! spends per key holding N nodes' entries.
//!
//! `cargo run --release -p floodgate-cluster --example simulate [NODES...]`

#![allow(clippy::unwrap_used, clippy::print_stdout)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};

use floodgate::{Policy, Store, SystemClock};
use floodgate_cluster::{Cluster, ClusterConfig, ClusterStore, EntryKey, KeyCounts, PeerState};

/// Counts live heap bytes, for the memory per key.
struct Counting;

static LIVE: AtomicI64 = AtomicI64::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        LIVE.fetch_add(l.size() as i64, Ordering::Relaxed);
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        LIVE.fetch_sub(l.size() as i64, Ordering::Relaxed);
        unsafe { System.dealloc(p, l) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

const RATE: u64 = 10_000;
const LOAD: Duration = Duration::from_secs(3);
const IDS: u64 = 1_000;

fn main() {
    let sizes: Vec<usize> = std::env::args().skip(1).filter_map(|a| a.parse().ok()).collect();
    let sizes = if sizes.is_empty() { vec![3, 8, 16, 32] } else { sizes };
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    println!("| nodes | hits | bytes on the wire per hit | lag p50 / p99 / max (ms) | memory per key, one node |");
    println!("|---:|---:|---:|---|---:|");
    for n in sizes {
        let (hits, bytes, lags) = rt.block_on(run(n));
        let pick = |q: f64| lags.get(((lags.len() as f64 - 1.0) * q) as usize).copied().unwrap_or(0);
        println!(
            "| {n} | {hits} | {:.0} | {} / {} / {} | {} B |",
            bytes as f64 / hits as f64,
            pick(0.5),
            pick(0.99),
            lags.last().copied().unwrap_or(0),
            memory_per_key(n)
        );
    }
}

async fn run(n: usize) -> (u64, u64, Vec<u64>) {
    let secret = b"simulation secret".to_vec();
    let mut nodes = Vec::new();
    for i in 0..n {
        let mut c = ClusterConfig::new("127.0.0.1:0".parse().unwrap(), secret.clone());
        c.node_id = Some(format!("n{i:02}"));
        if let Some((_, h)) = nodes.first() {
            let h: &floodgate_cluster::ClusterHandle = h;
            c.peers = vec![h.local_addr().to_string()];
        }
        c.sync_timeout = Duration::from_secs(30);
        nodes.push(Cluster::start(c, Arc::new(SystemClock::new())).await.unwrap());
    }
    let mesh = Instant::now();
    while !nodes.iter().all(|(_, h)| h.status().peers.iter().filter(|p| p.state == PeerState::Up).count() == n - 1) {
        assert!(mesh.elapsed() < Duration::from_secs(60), "no full mesh of {n} within 60 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let policy = Policy::fixed_window(1_000_000_000, Duration::from_secs(86_400)).unwrap();
    let before: u64 = nodes.iter().map(|(_, h)| h.stats().bytes_sent).sum();
    let stores: Vec<ClusterStore> = nodes.iter().map(|(s, _)| s.clone()).collect();
    let load = tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(1));
        let start = Instant::now();
        let mut sent = 0u64;
        while start.elapsed() < LOAD {
            tick.tick().await;
            let due = (start.elapsed().as_micros() as u64 * RATE / 1_000_000).saturating_sub(sent);
            for _ in 0..due {
                let s = &stores[(sent % stores.len() as u64) as usize];
                let id = format!("user:{}", (sent * 7919) % IDS);
                let _ = s.hit(id.as_bytes(), &policy, 1).await;
                sent += 1;
            }
        }
        sent
    });
    let mut lags = Vec::new();
    while !load.is_finished() {
        tokio::time::sleep(Duration::from_millis(10)).await;
        for (_, h) in &nodes {
            lags.extend(h.status().peers.iter().filter_map(|p| p.lag_ms));
        }
    }
    let hits = load.await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    // Pings are a few bytes a second per link; what remains is replication.
    let bytes = nodes.iter().map(|(_, h)| h.stats().bytes_sent).sum::<u64>() - before;
    lags.sort_unstable();
    for (_, h) in &nodes {
        h.shutdown();
    }
    drop(nodes);
    tokio::time::sleep(Duration::from_millis(100)).await;
    (hits, bytes, lags)
}

/// Heap bytes per key of one store holding 100 000 keys, each with entries from `n` nodes.
fn memory_per_key(n: usize) -> i64 {
    let keys = 100_000u64;
    let clock = SystemClock::new();
    let store = ClusterStore::builder().node_id("n00").clock(clock).build();
    let window_us = 86_400_000_000u64;
    let now = floodgate::Timestamp::now_system().as_micros();
    let start = now - now % window_us;
    let names: Vec<Arc<str>> = (0..n).map(|i| Arc::from(format!("n{i:02}"))).collect();
    // Learn the node ids first, so that the table of names is not counted per key.
    let warm = KeyCounts {
        key: EntryKey { policy: "p".into(), window_us, start, id: b"warm".to_vec().into() },
        counts: names.iter().map(|nm| (nm.clone(), 1)).collect(),
    };
    store.merge(&warm, || true);
    let before = LIVE.load(Ordering::Relaxed);
    for k in 0..keys {
        let kc = KeyCounts {
            key: EntryKey { policy: "p".into(), window_us, start, id: format!("user:{k}").into_bytes().into() },
            counts: names.iter().map(|nm| (nm.clone(), 1)).collect(),
        };
        store.merge(&kc, || true);
    }
    let per_key = (LIVE.load(Ordering::Relaxed) - before) / keys as i64;
    drop(store);
    per_key
}
