//! DNS discovery against a DNS server the test runs on loopback, whose records change.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use floodgate::SystemClock;
use floodgate_cluster::{Cluster, ClusterConfig, ClusterHandle, ClusterStore, PeerState};
use parking_lot::Mutex;
use tokio::net::UdpSocket;

const SECRET: &[u8] = b"dns test secret";

/// A minimal authoritative DNS server: answers every A question with the current records (TTL 1 s), and every
/// other question with no record.
async fn dns_server(records: Arc<Mutex<Vec<Ipv4Addr>>>) -> SocketAddr {
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap_or_else(|e| panic!("{e}"));
    let addr = socket.local_addr().unwrap_or_else(|e| panic!("{e}"));
    tokio::spawn(async move {
        let mut buf = [0u8; 512];
        // Bounded: the test runs for seconds and asks a few queries a second.
        for _ in 0..100_000 {
            let Ok((n, from)) = socket.recv_from(&mut buf).await else { return };
            let q = &buf[..n];
            if n < 12 {
                continue;
            }
            // The question: labels up to a zero byte, then type and class.
            let mut i = 12;
            while i < n && q[i] != 0 {
                i += usize::from(q[i]) + 1;
            }
            if i + 5 > n {
                continue;
            }
            let qtype = u16::from_be_bytes([q[i + 1], q[i + 2]]);
            let question = &q[12..i + 5];
            let answers: Vec<Ipv4Addr> = if qtype == 1 { records.lock().clone() } else { Vec::new() };
            let mut r = Vec::with_capacity(512);
            r.extend_from_slice(&q[..2]);
            r.extend_from_slice(&[0x85, 0x80, 0, 1]);
            r.extend_from_slice(&(answers.len() as u16).to_be_bytes());
            r.extend_from_slice(&[0, 0, 0, 0]);
            r.extend_from_slice(question);
            for ip in answers {
                r.extend_from_slice(&[0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0, 1, 0, 4]);
                r.extend_from_slice(&ip.octets());
            }
            let _ = socket.send_to(&r, from).await;
        }
    });
    addr
}

fn config(id: &str, listen: SocketAddr) -> ClusterConfig {
    let mut c = ClusterConfig::new(listen, SECRET.to_vec());
    c.node_id = Some(id.into());
    c.batch_interval = Duration::from_millis(2);
    c.reconnect_min = Duration::from_millis(20);
    c.reconnect_max = Duration::from_millis(200);
    c.ping_interval = Duration::from_millis(200);
    c
}

async fn start(c: ClusterConfig) -> (ClusterStore, ClusterHandle) {
    Cluster::start(c, Arc::new(SystemClock::new())).await.unwrap_or_else(|e| panic!("{e}"))
}

async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < Duration::from_secs(10), "not within 10 s: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn linked_to(h: &ClusterHandle, id: &str) -> bool {
    h.status().peers.iter().any(|p| p.id.as_deref() == Some(id) && p.state == PeerState::Up)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_record_becomes_a_peer_and_the_last_good_set_stays() {
    // Two nodes on two loopback addresses and one port, as DNS names them.
    let (_a, ha) = start(config("a", "127.0.0.2:0".parse().unwrap_or_else(|e| panic!("{e}")))).await;
    let port = ha.local_addr().port();
    let (_b, hb) = start(config("b", SocketAddr::from(([127, 0, 0, 3], port)))).await;
    let records = Arc::new(Mutex::new(vec![Ipv4Addr::new(127, 0, 0, 2)]));
    let server = dns_server(records.clone()).await;
    let mut c = config("d", "127.0.0.1:0".parse().unwrap_or_else(|e| panic!("{e}")));
    c.peer_dns = vec![format!("peers.test.:{port}")];
    c.dns_server = Some(server);
    c.dns_refresh_cap = Duration::from_secs(1);
    let (d, hd) = start(c).await;
    eventually("d finds a by DNS", || linked_to(&hd, "a")).await;
    assert!(d.is_ready());
    assert!(!linked_to(&hd, "b"));
    // The records change: b appears (a is still linked).
    *records.lock() = vec![Ipv4Addr::new(127, 0, 0, 3)];
    eventually("d finds b by DNS", || linked_to(&hd, "b")).await;
    // (b and a learn of each other from d's peer list, and a link may be replaced by the one the lower id
    // dialed: a moment of `syncing`.)
    eventually("a still linked", || linked_to(&hd, "a")).await;
    // An empty answer keeps the last good set: both stay.
    records.lock().clear();
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    eventually("a and b both still linked", || linked_to(&hd, "a") && linked_to(&hd, "b")).await;
    drop((ha, hb));
}
