//! Mutual TLS between nodes in one process over loopback, with certificates made at run time (rcgen): nodes
//! with the cluster CA replicate; a node whose certificate another CA signed, a node without TLS, and a client
//! that never finishes its handshake never link, and each failure is counted.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use floodgate::{Policy, Store, SystemClock};
use floodgate_cluster::tls::DEFAULT_SERVER_NAME;
use floodgate_cluster::{Cluster, ClusterConfig, ClusterHandle, ClusterStore, ClusterTls, ClusterTlsError, PeerState};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair};

const SECRET: &[u8] = b"test secret, loopback only";
const DEADLINE: Duration = Duration::from_secs(10);

fn ok<T, E: std::fmt::Display>(r: Result<T, E>) -> T {
    r.unwrap_or_else(|e| panic!("{e}"))
}

/// A CA that signs node certificates.
struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl Ca {
    fn new(name: &str) -> Ca {
        let mut params = ok(CertificateParams::new(Vec::<String>::new()));
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        Ca { issuer: ok(CertifiedIssuer::self_signed(params, ok(KeyPair::generate()))) }
    }

    /// A node's TLS: a certificate for `san` (server and client use) signed by this CA, trusting `trust`.
    fn node_tls(&self, san: &str, trust: &Ca) -> ClusterTls {
        let key = ok(KeyPair::generate());
        let mut params = ok(CertificateParams::new(vec![san.to_owned()]));
        params.distinguished_name.push(DnType::CommonName, "a floodgate node");
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
        let cert = ok(params.signed_by(&key, &self.issuer));
        ok(ClusterTls::from_pem(cert.pem().as_bytes(), key.serialize_pem().as_bytes(), trust.issuer.pem().as_bytes()))
    }
}

fn config(id: &str, tls: Option<ClusterTls>, peers: &[&ClusterHandle]) -> ClusterConfig {
    let mut c = ClusterConfig::new(ok("127.0.0.1:0".parse()), SECRET.to_vec());
    c.node_id = Some(id.into());
    c.peers = peers.iter().map(|h| h.local_addr().to_string()).collect();
    c.batch_interval = Duration::from_millis(2);
    c.reconnect_min = Duration::from_millis(20);
    c.reconnect_max = Duration::from_millis(200);
    c.sync_timeout = Duration::from_millis(500);
    c.peer_timeout = Duration::from_secs(3);
    c.ping_interval = Duration::from_millis(200);
    c.tls = tls;
    c
}

async fn start(c: ClusterConfig) -> (ClusterStore, ClusterHandle) {
    ok(Cluster::start(c, Arc::new(SystemClock::new())).await)
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
    ok(Policy::fixed_window(1_000, Duration::from_secs(86_400)))
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
        assert!(ok(store.hit(id, &policy(), 1).await).allowed);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_tls_nodes_replicate_and_agree() {
    let ca = Ca::new("cluster CA");
    let tls = || Some(ca.node_tls(DEFAULT_SERVER_NAME, &ca));
    let (a, ha) = start(config("a", tls(), &[])).await;
    let (b, hb) = start(config("b", tls(), &[&ha])).await;
    let (c, hc) = start(config("c", tls(), &[&ha, &hb])).await;
    eventually("a full mesh over TLS", || up(&ha, 2) && up(&hb, 2) && up(&hc, 2)).await;
    for (i, s) in [&a, &b, &c].into_iter().enumerate() {
        hits(s, b"spread", 10 + i as u64).await;
    }
    eventually("every node counts 33", || [&a, &b, &c].iter().all(|s| used(s, b"spread") == 33)).await;
    for h in [&ha, &hb, &hc] {
        let s = h.stats();
        assert_eq!((s.tls_handshake_failures, s.auth_failures), (0, 0), "{}: {s:?}", h.node_id());
        assert!(s.merges_applied > 0, "{}: {s:?}", h.node_id());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_signed_by_another_ca_never_links() {
    let (ca, other) = (Ca::new("cluster CA"), Ca::new("another CA"));
    // Mallory's certificate has the right name but another CA; she trusts her own CA.
    let (m, hm) = start(config("mallory", Some(other.node_tls(DEFAULT_SERVER_NAME, &other)), &[])).await;
    let (a, ha) = start(config("a", Some(ca.node_tls(DEFAULT_SERVER_NAME, &ca)), &[&hm])).await;
    let (b, hb) = start(config("b", Some(ca.node_tls(DEFAULT_SERVER_NAME, &ca)), &[&ha, &hm])).await;
    hm.add_peer(ha.local_addr().to_string());
    eventually("a and b link", || up(&ha, 1) && up(&hb, 1)).await;
    eventually("TLS failures counted on every side", || {
        [&ha, &hb, &hm].iter().all(|h| h.stats().tls_handshake_failures >= 1)
    })
    .await;
    eventually("mallory's gate opened on its timeout", || m.is_ready()).await;
    hits(&m, b"from-mallory", 5).await;
    hits(&a, b"from-a", 3).await;
    // b seeing a's hits means a's batches went out after mallory's hits were counted.
    eventually("b sees a's hits", || used(&b, b"from-a") == 3).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!((used(&a, b"from-mallory"), used(&b, b"from-mallory")), (0, 0), "mallory's hits crossed");
    assert_eq!(used(&m, b"from-a"), 0, "a's hits reached mallory");
    assert_eq!(hm.stats().peers_connected, 0, "{:?}", hm.status());
    assert!(ha.status().peers.iter().all(|p| p.id.as_deref() != Some("mallory")), "{:?}", ha.status());
    // TLS stopped her before the challenge-response.
    assert_eq!(ha.stats().auth_failures + hb.stats().auth_failures, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_without_tls_cannot_link_to_tls_nodes() {
    let ca = Ca::new("cluster CA");
    let (a, ha) = start(config("a", Some(ca.node_tls(DEFAULT_SERVER_NAME, &ca)), &[])).await;
    // Same secret, no TLS: dials a, and a dials it.
    let (p, hp) = start(config("plain", None, &[&ha])).await;
    ha.add_peer(hp.local_addr().to_string());
    eventually("a counted failures both ways", || ha.stats().tls_handshake_failures >= 2).await;
    eventually("plain's gate opened on its timeout", || p.is_ready()).await;
    hits(&p, b"from-plain", 4).await;
    hits(&a, b"from-a", 2).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(used(&a, b"from-plain"), 0, "plain's hits crossed");
    assert_eq!(used(&p, b"from-a"), 0, "a's hits reached plain");
    assert_eq!((ha.stats().peers_connected, hp.stats().peers_connected), (0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_name_and_a_silent_client_fail_their_handshakes() {
    let ca = Ca::new("cluster CA");
    let mut c = config("a", Some(ca.node_tls(DEFAULT_SERVER_NAME, &ca)), &[]);
    c.handshake_timeout = Duration::from_millis(200);
    let (_a, ha) = start(c).await;
    // b's certificate is signed by the cluster CA but carries the name "elsewhere": a dials b, checks for
    // floodgate-cluster in the certificate b serves, and refuses it.
    let (_b, hb) = start(config("b", Some(ca.node_tls("elsewhere", &ca)), &[])).await;
    ha.add_peer(hb.local_addr().to_string());
    eventually("a refused b's name", || ha.stats().tls_handshake_failures >= 1).await;
    // A client that connects and never speaks is dropped after the handshake timeout, and counted.
    let before = ha.stats().tls_handshake_failures;
    let _silent = ok(tokio::net::TcpStream::connect(ha.local_addr()).await);
    eventually("the silent client timed out", || ha.stats().tls_handshake_failures > before).await;
    assert_eq!(ha.stats().peers_connected, 0);
}

#[test]
fn bad_material_is_refused_with_a_clear_error() {
    let ca = Ca::new("cluster CA");
    let ca_pem = ca.issuer.pem();
    let err = ClusterTls::from_pem(b"not pem", b"not pem", ca_pem.as_bytes()).err();
    assert!(matches!(&err, Some(ClusterTlsError::Pem { what, .. }) if what == "certificate"), "{err:?}");
    let missing = PathBuf::from("/nonexistent/floodgate-cluster-test.pem");
    let err = ClusterTls::from_pem_files(&missing, &missing, &missing).err();
    assert!(matches!(&err, Some(ClusterTlsError::Read { path, .. }) if *path == missing), "{err:?}");
    let tls = ca.node_tls(DEFAULT_SERVER_NAME, &ca);
    assert_eq!(tls.server_name(), "floodgate-cluster");
    assert!(matches!(tls.with_server_name("not a name!"), Err(ClusterTlsError::ServerName(_))));
}
