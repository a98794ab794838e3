//! Nodes in one process over loopback: convergence, joining, partition and heal, authentication, hostile frames.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use floodgate::{Policy, Store, SystemClock};
use floodgate_cluster::frame::{self, Frame, Hello, PROTOCOL_VERSION, Role};
use floodgate_cluster::{Cluster, ClusterConfig, ClusterError, ClusterHandle, ClusterStore, PeerState};
use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio_util::codec::Framed;

const SECRET: &[u8] = b"test secret, loopback only";
const DEADLINE: Duration = Duration::from_secs(10);

fn config(id: &str, secret: &[u8], peers: &[&ClusterHandle]) -> ClusterConfig {
    let mut c = ClusterConfig::new("127.0.0.1:0".parse().unwrap_or_else(|e| panic!("{e}")), secret.to_vec());
    c.node_id = Some(id.into());
    c.peers = peers.iter().map(|h| h.local_addr().to_string()).collect();
    c.batch_interval = Duration::from_millis(2);
    c.reconnect_min = Duration::from_millis(20);
    c.reconnect_max = Duration::from_millis(200);
    c.sync_timeout = Duration::from_secs(5);
    c.peer_timeout = Duration::from_secs(3);
    c.ping_interval = Duration::from_millis(200);
    c
}

async fn node(id: &str, peers: &[&ClusterHandle]) -> (ClusterStore, ClusterHandle) {
    start(config(id, SECRET, peers)).await
}

async fn start(c: ClusterConfig) -> (ClusterStore, ClusterHandle) {
    Cluster::start(c, Arc::new(SystemClock::new())).await.unwrap_or_else(|e| panic!("{e}"))
}

/// Polls `cond` every 5 ms until it holds, at most `DEADLINE`.
async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < DEADLINE, "not within {DEADLINE:?}: {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn policy() -> Policy {
    // A day's window: the tests do not cross a window's end but once in a great while.
    Policy::fixed_window(1_000, Duration::from_secs(86_400)).unwrap_or_else(|e| panic!("{e}"))
}

fn used(store: &ClusterStore, id: &[u8]) -> u64 {
    let now = store.clock().now().as_micros();
    store.inspect_at(id, &policy(), now).ok().flatten().map_or(0, |i| i.used)
}

fn up(h: &ClusterHandle, n: usize) -> bool {
    h.status().peers.iter().filter(|p| p.state == PeerState::Up).count() >= n
}

async fn hits(store: &ClusterStore, id: &[u8], n: u64) {
    for _ in 0..n {
        let d = store.hit(id, &policy(), 1).await.unwrap_or_else(|e| panic!("{e}"));
        assert!(d.allowed);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_converge() {
    let (a, ha) = node("a", &[]).await;
    let (b, hb) = node("b", &[&ha]).await;
    let (c, hc) = node("c", &[&ha, &hb]).await;
    eventually("a full mesh", || up(&ha, 2) && up(&hb, 2) && up(&hc, 2)).await;
    for (i, s) in [&a, &b, &c].into_iter().enumerate() {
        hits(s, b"spread", 10 + i as u64).await;
    }
    eventually("every node counts 33", || [&a, &b, &c].iter().all(|s| used(s, b"spread") == 33)).await;
    let stats = ha.stats();
    assert!(stats.merges_applied > 0 && stats.bytes_sent > 0 && stats.peers_connected == 2, "{stats:?}");
    // (A link may be replaced a moment by the one the lower id dialed, once nodes learn each other's addresses.)
    let mut status = hc.status();
    eventually("c sees both peers up", || {
        status = hc.status();
        status.peers.iter().filter(|p| p.state == PeerState::Up).count() == 2
    })
    .await;
    assert_eq!(status.node_id, "c");
    let linked: Vec<_> = status.peers.iter().filter(|p| p.state == PeerState::Up).collect();
    assert!(linked.iter().all(|p| p.clock_skew_ms.is_some_and(|s| s.abs() < 1_000)), "{status:?}");
    let json = serde_json::to_value(&status).unwrap_or_default();
    let states = json["peers"].as_array().map(|ps| ps.iter().filter(|p| p["state"] == "up").count());
    assert_eq!(states, Some(2), "{json}");
    // Propagation of one hit, measured: from a's hit to c seeing it (batch interval 2 ms).
    let mut times = Vec::new();
    for i in 0..20u64 {
        let t = Instant::now();
        hits(&a, b"lag", 1).await;
        eventually("c sees a's hit", || used(&c, b"lag") == i + 1).await;
        times.push(t.elapsed());
    }
    times.sort();
    eprintln!(
        "propagation a -> c over 20 hits: median {:?}, max {:?}; c's max lag {} ms",
        times[10],
        times[19],
        hc.stats().max_lag_ms
    );
    assert!(times[10] < Duration::from_millis(100), "{times:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_joining_node_sees_existing_counts_before_admitting() {
    let (a, ha) = node("a", &[]).await;
    let (b, hb) = node("b", &[&ha]).await;
    eventually("a and b linked", || up(&ha, 1) && up(&hb, 1)).await;
    let full = Policy::fixed_window(100, Duration::from_secs(86_400)).unwrap_or_else(|e| panic!("{e}"));
    for _ in 0..50 {
        assert!(a.hit(b"busy", &full, 1).await.is_ok_and(|d| d.allowed));
        assert!(b.hit(b"busy", &full, 1).await.is_ok_and(|d| d.allowed));
    }
    let now = || a.clock().now().as_micros();
    eventually("a holds b's counts", || {
        a.inspect_at(b"busy", &full, now()).ok().flatten().is_some_and(|i| i.used == 100)
    })
    .await;
    // The joining node knows only a; it gets b's counts through a's full sync.
    let (c, hc) = node("c", &[&ha]).await;
    let start = Instant::now();
    let first = loop {
        match c.hit(b"busy", &full, 1).await {
            Ok(d) => break d,
            Err(floodgate::StoreError::Unavailable(_)) => {
                assert!(start.elapsed() < DEADLINE, "c never opened");
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            Err(e) => panic!("{e}"),
        }
    };
    assert!(!first.allowed, "the joining node admitted a hit over a full limit: {first:?}");
    assert_eq!(hc.stats().sync_timeouts, 0);
    assert!(hc.stats().syncs_completed >= 1);
    // And the other way: what the new node counts reaches the others.
    let other = policy();
    assert!(c.hit(b"new", &other, 3).await.is_ok_and(|d| d.allowed));
    let used_other = |s: &ClusterStore| s.inspect_at(b"new", &other, now()).ok().flatten().map_or(0, |i| i.used);
    eventually("a and b see c's hits", || used_other(&a) == 3 && used_other(&b) == 3).await;
    drop(hb);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_heals_both_ways() {
    let (a, ha) = node("a", &[]).await;
    let (b, hb) = node("b", &[&ha]).await;
    let (c, hc) = node("c", &[&ha, &hb]).await;
    eventually("a full mesh", || up(&ha, 2) && up(&hb, 2) && up(&hc, 2)).await;
    // Split {a, b} | {c}.
    for (h, others) in [(&ha, &["c"][..]), (&hb, &["c"][..]), (&hc, &["a", "b"][..])] {
        for o in others {
            h.block(o);
        }
    }
    eventually("c cut off", || hc.status().peers.iter().all(|p| p.state == PeerState::Connecting)).await;
    hits(&a, b"split", 10).await;
    hits(&b, b"split", 5).await;
    hits(&c, b"split", 7).await;
    eventually("a and b agree on their side", || used(&a, b"split") == 15 && used(&b, b"split") == 15).await;
    assert_eq!(used(&c, b"split"), 7, "c saw hits across the split");
    // Over-admission during the split, measured: a limit of 10, 20 attempts on each node.
    let limited = Policy::fixed_window(10, Duration::from_secs(86_400)).unwrap_or_else(|e| panic!("{e}"));
    let mut admitted = [0u64; 3];
    for _ in 0..20 {
        for (i, s) in [&a, &b, &c].into_iter().enumerate() {
            admitted[i] += u64::from(s.hit(b"limited", &limited, 1).await.is_ok_and(|d| d.allowed));
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    eprintln!(
        "admitted during the split with a limit of 10: a+b side {}, c side {}",
        admitted[0] + admitted[1],
        admitted[2]
    );
    assert_eq!(admitted[2], 10, "the isolated side admits its limit");
    assert!(admitted[0] + admitted[1] <= 20, "{admitted:?}");
    // Heal.
    for (h, others) in [(&ha, &["c"][..]), (&hb, &["c"][..]), (&hc, &["a", "b"][..])] {
        for o in others {
            h.unblock(o);
        }
    }
    let healed = Instant::now();
    eventually("all agree on 22", || [&a, &b, &c].iter().all(|s| used(s, b"split") == 22)).await;
    assert!(healed.elapsed() < Duration::from_secs(2), "heal took {:?}", healed.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_secret_is_refused_and_no_secret_does_not_start() {
    let (a, ha) = node("a", &[]).await;
    let mut c = config("mallory", b"wrong secret", &[&ha]);
    c.sync_timeout = Duration::from_millis(300);
    let (m, hm) = start(c).await;
    eventually("a refused mallory", || ha.stats().auth_failures >= 1).await;
    eventually("mallory's gate opened on its timeout", || m.is_ready()).await;
    assert_eq!(hm.stats().sync_timeouts, 1);
    hits(&m, b"x", 3).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(used(&a, b"x"), 0, "counts crossed an unauthenticated link");
    assert_eq!(ha.stats().peers_connected, 0);
    let none = Cluster::start(config("n", b"", &[]), Arc::new(SystemClock::new())).await;
    assert!(matches!(none, Err(ClusterError::NoSecret)));
}

/// A peer that knows the secret, linked to `h` by hand (the test then plays its part).
async fn rogue(h: &ClusterHandle, id: &str) -> Framed<TcpStream, tokio_util::codec::LengthDelimitedCodec> {
    let stream = TcpStream::connect(h.local_addr()).await.unwrap_or_else(|e| panic!("{e}"));
    let mut wire = Framed::new(stream, frame::codec());
    let mine = Hello { version: PROTOCOL_VERSION, node_id: id.into(), nonce: [9; 32], wall_ms: 0, listen_port: 1 };
    wire.send(Frame::Hello(mine.clone()).encode().freeze()).await.unwrap_or_else(|e| panic!("{e}"));
    let theirs = match wire.next().await.map(|r| r.map(|b| Frame::decode(&b))) {
        Some(Ok(Ok(Frame::Hello(h)))) => h,
        other => panic!("{other:?}"),
    };
    let mac = frame::proof(SECRET, Role::Dialer, &mine, &theirs);
    wire.send(Frame::Auth { mac }.encode().freeze()).await.unwrap_or_else(|e| panic!("{e}"));
    wire
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_peer_never_fails_its_link_nor_slows_the_others() {
    let (a, ha) = node("a", &[]).await;
    let (b, hb) = node("b", &[&ha]).await;
    eventually("a and b linked", || up(&ha, 1) && up(&hb, 1)).await;
    // A peer that says it is alive but reads nothing for a while.
    let mut slow = rogue(&ha, "slow").await;
    slow.send(Frame::SyncEnd.encode().freeze()).await.unwrap_or_else(|e| panic!("{e}"));
    let many = Policy::fixed_window(1 << 40, Duration::from_secs(86_400)).unwrap_or_else(|e| panic!("{e}"));
    let start = Instant::now();
    for round in 0..20u32 {
        for i in 0..2_000u32 {
            assert!(a.hit_sync(&i.to_be_bytes(), &many, 1).is_ok_and(|d| d.allowed));
        }
        slow.send(Frame::Ping.encode().freeze()).await.unwrap_or_else(|e| panic!("{e}"));
        if round % 5 == 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    // b kept up meanwhile, and the slow link is still there.
    let now = || b.clock().now().as_micros();
    let b_sees = |i: u32| b.inspect_at(&i.to_be_bytes(), &many, now()).ok().flatten().map_or(0, |x| x.used);
    eventually("b has every count", || (0..2_000u32).step_by(97).all(|i| b_sees(i) == 20)).await;
    assert!(ha.status().peers.iter().any(|p| p.id.as_deref() == Some("slow")), "{:?}", ha.status());
    // The slow peer catches up: the latest counts arrive (coalesced), and the link never failed.
    let caught_up = tokio::time::timeout(DEADLINE, async {
        let mut latest = std::collections::HashMap::new();
        for _ in 0..1_000_000 {
            match slow.next().await.map(|r| r.map(|b| Frame::decode(&b))) {
                Some(Ok(Ok(Frame::Entries(e)))) => {
                    for k in e.keys {
                        if let Some((_, c)) = k.counts.first() {
                            latest.insert(k.key.id.to_vec(), *c);
                        }
                    }
                    if latest.len() == 2_000 && latest.values().all(|&c| c == 20) {
                        return true;
                    }
                }
                Some(Ok(Ok(_))) => {}
                _ => return false,
            }
        }
        false
    })
    .await;
    assert_eq!(caught_up, Ok(true));
    assert!(start.elapsed() < DEADLINE);
    assert!(ha.status().peers.iter().any(|p| p.id.as_deref() == Some("slow")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hostile_frame_closes_only_its_link() {
    let (a, ha) = node("a", &[]).await;
    let (b, hb) = node("b", &[&ha]).await;
    eventually("a and b linked", || up(&ha, 1) && up(&hb, 1)).await;
    // An authenticated peer (it knows the secret) that then sends garbage.
    let mut wire = rogue(&ha, "rogue").await;
    wire.send(Bytes::from_static(&[3, 0, 1, 0xff, 0xff])).await.unwrap_or_else(|e| panic!("{e}"));
    // a closes the rogue link: reading ends (after a's own frames) within the deadline.
    let closed = tokio::time::timeout(DEADLINE, async {
        for _ in 0..100_000 {
            match wire.next().await {
                Some(Ok(_)) => continue,
                _ => return true,
            }
        }
        false
    })
    .await;
    assert_eq!(closed, Ok(true));
    assert!(ha.stats().frames_rejected >= 1);
    // The a-b link is untouched and still replicates.
    hits(&b, b"after", 4).await;
    eventually("a sees b's hits", || used(&a, b"after") == 4).await;
    assert!(up(&ha, 1));
}

/// The join bar, measured: a node joins a peer that holds 100 000 live keys. Run in release:
/// `cargo test --release -p floodgate-cluster --test cluster -- --ignored --nocapture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement: run in release"]
async fn a_joining_node_syncs_100_000_keys() {
    let (a, ha) = node("a", &[]).await;
    for i in 0..100_000u32 {
        a.hit_sync(&i.to_be_bytes(), &policy(), 1).unwrap_or_else(|e| panic!("{e}"));
    }
    let t = Instant::now();
    let (b, hb) = node("b", &[&ha]).await;
    eventually("b synced", || b.is_ready()).await;
    let took = t.elapsed();
    assert_eq!(b.len(), 100_000);
    eprintln!("joined with 100 000 keys in {took:?} (sync received in {} ms)", hb.stats().last_sync_ms);
}

/// Issue 15, item 7: with `PartitionMode::SplitLimit` and 3 expected nodes, a node caps its own hits at
/// limit / 3 while a peer is missing, so a 3-way split admits at most the limit in all; when every peer is up
/// again the cap is lifted. With the default mode, each side admits the limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn split_limit_caps_each_node_while_peers_are_missing() {
    use floodgate_cluster::PartitionMode;
    let split = |id: &str, peers: &[&ClusterHandle]| {
        let mut c = config(id, SECRET, peers);
        c.partition_mode = PartitionMode::SplitLimit;
        c.expected_nodes = 3;
        c
    };
    let mut bad = split("x", &[]);
    bad.expected_nodes = 1;
    assert!(matches!(Cluster::start(bad, Arc::new(SystemClock::new())).await, Err(ClusterError::ExpectedNodes(1))));
    let (a, ha) = start(split("a", &[])).await;
    assert!(ha.stats().split_limit_active, "alone, a node of 3 is split");
    let (b, hb) = start(split("b", &[&ha])).await;
    let (c, hc) = start(split("c", &[&ha, &hb])).await;
    eventually("a full mesh", || up(&ha, 2) && up(&hb, 2) && up(&hc, 2)).await;
    eventually("the cap lifted", || [&ha, &hb, &hc].iter().all(|h| !h.stats().split_limit_active)).await;
    // Split every node from every other.
    for (h, others) in [(&ha, ["b", "c"]), (&hb, ["a", "c"]), (&hc, ["a", "b"])] {
        for o in others {
            h.block(o);
        }
    }
    eventually("all cut off", || [&ha, &hb, &hc].iter().all(|h| h.stats().split_limit_active)).await;
    let limited = Policy::fixed_window(30, Duration::from_secs(86_400)).unwrap_or_else(|e| panic!("{e}"));
    let mut admitted = [0u64; 3];
    for _ in 0..30 {
        for (i, s) in [&a, &b, &c].into_iter().enumerate() {
            admitted[i] += u64::from(s.hit(b"capped", &limited, 1).await.is_ok_and(|d| d.allowed));
        }
    }
    eprintln!("split-limit, a 3-way split, limit 30: admitted {admitted:?}");
    assert_eq!(admitted, [10, 10, 10], "each node admits limit / 3");
    for (h, others) in [(&ha, ["b", "c"]), (&hb, ["a", "c"]), (&hc, ["a", "b"])] {
        for o in others {
            h.unblock(o);
        }
    }
    eventually("the cap lifted after the heal", || {
        [&ha, &hb, &hc].iter().all(|h| !h.stats().split_limit_active && up(h, 2))
    })
    .await;
    // Healed: the cluster's total (30) is the limit, so nothing more is admitted anywhere.
    let more = [&a, &b, &c]
        .iter()
        .filter(|s| {
            futures_util::FutureExt::now_or_never(s.hit(b"capped", &limited, 1))
                .and_then(Result::ok)
                .is_some_and(|d| d.allowed)
        })
        .count();
    assert_eq!(more, 0);
}

/// A loopback TCP relay in front of a node that the test can cut: while cut, what either side sends vanishes
/// (the connection stays open and silent, as under an iptables DROP), and new connections are accepted but
/// never reach the node. Connections that saw the cut stay silent after the heal (their state is gone, as a
/// NAT's would be); new ones are relayed.
struct Relay {
    addr: std::net::SocketAddr,
    cut: Arc<std::sync::atomic::AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Relay {
    async fn start(to: std::net::SocketAddr) -> Relay {
        use std::sync::atomic::Ordering;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap_or_else(|e| panic!("{e}"));
        let addr = listener.local_addr().unwrap_or_else(|e| panic!("{e}"));
        let cut = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let c = cut.clone();
        let task = tokio::spawn(async move {
            while let Ok((inbound, _)) = listener.accept().await {
                let cut = c.clone();
                tokio::spawn(async move {
                    if cut.load(Ordering::Acquire) {
                        // Held open and silent until the node gives up on it.
                        let _held = inbound;
                        tokio::time::sleep(DEADLINE).await;
                        return;
                    }
                    let Ok(outbound) = TcpStream::connect(to).await else { return };
                    let (ri, wi) = inbound.into_split();
                    let (ro, wo) = outbound.into_split();
                    let saw_cut = Arc::new(std::sync::atomic::AtomicBool::new(false));
                    let one = tokio::spawn(Relay::pump(ri, wo, cut.clone(), saw_cut.clone()));
                    let other = tokio::spawn(Relay::pump(ro, wi, cut, saw_cut));
                    let _ = tokio::join!(one, other);
                });
            }
        });
        Relay { addr, cut, task }
    }

    /// Copies `from` to `to` while the relay is not cut; drops everything once this connection saw a cut.
    async fn pump(
        mut from: tokio::net::tcp::OwnedReadHalf,
        mut to: tokio::net::tcp::OwnedWriteHalf,
        cut: Arc<std::sync::atomic::AtomicBool>,
        saw_cut: Arc<std::sync::atomic::AtomicBool>,
    ) {
        use std::sync::atomic::Ordering;
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = match from.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            if cut.load(Ordering::Acquire) {
                saw_cut.store(true, Ordering::Release);
            }
            if !saw_cut.load(Ordering::Acquire) && to.write_all(&buf[..n]).await.is_err() {
                return;
            }
        }
    }

    fn set_cut(&self, cut: bool) {
        self.cut.store(cut, std::sync::atomic::Ordering::Release);
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A split longer than the peer timeout (links dropped on both sides as silent, redials black-holed) heals:
/// the node that dials across it keeps dialing, and once packets flow again both agree on what each side
/// counted, within the bound. b reaches a only through a relay the test cuts (two nodes: a third one would
/// learn a direct address and go around the relay).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_split_longer_than_the_peer_timeout_heals() {
    let short = |mut c: ClusterConfig| {
        c.peer_timeout = Duration::from_millis(600);
        c.ping_interval = Duration::from_millis(100);
        c.handshake_timeout = Duration::from_millis(300);
        // The default backoff.
        let d = ClusterConfig::new(c.listen, Vec::new());
        (c.reconnect_min, c.reconnect_max) = (d.reconnect_min, d.reconnect_max);
        c
    };
    let (a, ha) = start(short(config("a", SECRET, &[]))).await;
    let relay = Relay::start(ha.local_addr()).await;
    let mut cb = short(config("b", SECRET, &[]));
    cb.peers.push(relay.addr.to_string());
    let (b, hb) = start(cb).await;
    eventually("a and b linked", || up(&ha, 1) && up(&hb, 1)).await;
    hits(&a, b"long", 2).await;
    eventually("b sees a's 2", || used(&b, b"long") == 2).await;

    relay.set_cut(true);
    let cut = Instant::now();
    let linked = |h: &ClusterHandle| h.status().peers.iter().any(|p| p.state != PeerState::Connecting);
    eventually("the link dropped on both sides", || !linked(&ha) && !linked(&hb)).await;
    let dropped = cut.elapsed();
    hits(&a, b"long", 3).await;
    hits(&b, b"long", 4).await;
    // Stay split for four peer timeouts, long enough for the backoff to reach its longest: every redial
    // meanwhile is black-holed.
    tokio::time::sleep(Duration::from_millis(2_400).saturating_sub(cut.elapsed())).await;
    assert_eq!((used(&a, b"long"), used(&b, b"long")), (5, 6), "hits crossed the split");
    assert!(!linked(&ha) && !linked(&hb), "a link came up across the cut");

    relay.set_cut(false);
    let healed = Instant::now();
    eventually("both agree on 9 after the heal", || used(&a, b"long") == 9 && used(&b, b"long") == 9).await;
    let took = healed.elapsed();
    eprintln!(
        "split of {:?} (links dropped after {dropped:?}; peer timeout 600 ms): agreed {took:?} after the heal",
        healed - cut
    );
    assert!(took < Duration::from_secs(1), "heal took {took:?}");
    eventually("linked again", || up(&ha, 1) && up(&hb, 1)).await;
    // And replication flows again both ways.
    hits(&a, b"after", 1).await;
    hits(&b, b"after", 1).await;
    eventually("both see 2 after", || used(&a, b"after") == 2 && used(&b, b"after") == 2).await;
}
