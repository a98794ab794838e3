//! The node: listens for peers, dials them, authenticates each link, syncs, and replicates.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU8, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use floodgate::Clock;
use futures_util::{SinkExt, StreamExt};
use parking_lot::Mutex;
use serde::Serialize;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio_util::codec::Framed;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::counter::EntryKey;
use crate::frame::{self, Frame, FrameError, Hello, PROTOCOL_VERSION, Role};
use crate::store::{ClusterStore, KeyCounts, StoreLimits};

/// How a node joins a cluster. Build one with [`ClusterConfig::new`] and adjust the fields.
///
/// ```
/// use floodgate_cluster::ClusterConfig;
/// use std::time::Duration;
///
/// let mut config = ClusterConfig::new("127.0.0.1:7946".parse()?, b"a long shared secret".to_vec());
/// config.peers = vec!["10.0.0.2:7946".into(), "10.0.0.3:7946".into()];
/// config.node_id = Some("edge-1".into());
/// assert_eq!(config.batch_interval, Duration::from_millis(5));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
#[non_exhaustive]
pub struct ClusterConfig {
    /// Where to listen for peers (`--cluster`). Port 0 picks a free one (see [`ClusterHandle::local_addr`]).
    pub listen: SocketAddr,
    /// Static peers, `HOST:PORT` (`--peer`, repeatable).
    pub peers: Vec<String>,
    /// DNS names, `NAME:PORT`, every A/AAAA record of which is a peer (`--peer-dns`).
    pub peer_dns: Vec<String>,
    /// The cluster secret (`--cluster-secret-file` or `FLOODGATE_CLUSTER_SECRET`). Required, never sent.
    pub secret: Vec<u8>,
    /// This node's id (`--node-id`); default a random one, logged.
    pub node_id: Option<String>,
    /// How often changed counters are sent to peers (default 5 ms).
    pub batch_interval: Duration,
    /// How long a joining node holds hits while waiting for its first sync (default 2 s).
    pub sync_timeout: Duration,
    /// How long the handshake of a link may take (default 2 s).
    pub handshake_timeout: Duration,
    /// How long a link may stay silent before it is dropped (default 5 s; peers ping every second).
    pub peer_timeout: Duration,
    /// How often an idle link is pinged (default 1 s).
    pub ping_interval: Duration,
    /// The first reconnect delay, doubled after each failure (default 50 ms).
    pub reconnect_min: Duration,
    /// The longest reconnect delay (default 5 s).
    pub reconnect_max: Duration,
    /// Counters a peer may create on this node per second (default 1 000 000); the rest are refused and counted.
    pub peer_key_budget: u64,
    /// The longest time between two resolutions of a `peer_dns` name (default 30 s; sooner if the TTL is).
    pub dns_refresh_cap: Duration,
    /// The DNS server to ask for `peer_dns` names (default: the system's resolver configuration).
    pub dns_server: Option<SocketAddr>,
    /// Bounds on what peers may send.
    pub limits: StoreLimits,
    /// What a node does while peers are missing (`--cluster-partition-mode`; default
    /// [`PartitionMode::CountLocally`]).
    pub partition_mode: PartitionMode,
    /// How many nodes the cluster should have, this one included (`--cluster-expected-nodes`): what
    /// [`PartitionMode::SplitLimit`] divides limits by. Required (at least 2) with that mode.
    pub expected_nodes: usize,
}

/// What each node does while it cannot reach every peer (a split, a node down, a node still joining).
///
/// ```
/// use floodgate_cluster::PartitionMode;
/// assert_eq!(PartitionMode::default(), PartitionMode::CountLocally);
/// assert_eq!("split-limit".parse::<PartitionMode>(), Ok(PartitionMode::SplitLimit));
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum PartitionMode {
    /// Keep counting on what this side of the split sees (the default): availability first. During a split
    /// each side admits at most `limit` per window, so `k` sides admit at most `k × limit`.
    #[default]
    CountLocally,
    /// While fewer than `expected_nodes` nodes (this one included) are linked and synced, each node also caps
    /// its own admitted hits at `limit / expected_nodes` per window (rounded down, at least 1): the whole
    /// cluster then admits at most about `limit` per window however it is split, at the cost of admitting less
    /// while a node is merely down.
    SplitLimit,
}

impl std::str::FromStr for PartitionMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "count-locally" => Ok(PartitionMode::CountLocally),
            "split-limit" => Ok(PartitionMode::SplitLimit),
            other => Err(format!("unknown partition mode {other:?}: count-locally or split-limit")),
        }
    }
}

impl std::fmt::Debug for ClusterConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterConfig")
            .field("listen", &self.listen)
            .field("peers", &self.peers)
            .field("peer_dns", &self.peer_dns)
            .field("secret", &"<redacted>")
            .field("node_id", &self.node_id)
            .field("batch_interval", &self.batch_interval)
            .field("sync_timeout", &self.sync_timeout)
            .finish_non_exhaustive()
    }
}

impl ClusterConfig {
    /// A configuration with the defaults, listening on `listen`, with the cluster `secret`.
    pub fn new(listen: SocketAddr, secret: Vec<u8>) -> Self {
        ClusterConfig {
            listen,
            peers: Vec::new(),
            peer_dns: Vec::new(),
            secret,
            node_id: None,
            batch_interval: Duration::from_millis(5),
            sync_timeout: Duration::from_secs(2),
            handshake_timeout: Duration::from_secs(2),
            peer_timeout: Duration::from_secs(5),
            ping_interval: Duration::from_secs(1),
            reconnect_min: Duration::from_millis(50),
            reconnect_max: Duration::from_secs(5),
            peer_key_budget: 1_000_000,
            dns_refresh_cap: Duration::from_secs(30),
            dns_server: None,
            limits: StoreLimits::default(),
            partition_mode: PartitionMode::CountLocally,
            expected_nodes: 0,
        }
    }
}

/// Why a cluster node could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClusterError {
    /// No cluster secret: cluster mode refuses to start without one.
    #[error("cluster mode needs a cluster secret (--cluster-secret-file or FLOODGATE_CLUSTER_SECRET)")]
    NoSecret,
    /// The node id is empty or longer than 255 bytes.
    #[error("invalid node id {0:?}: 1 to 255 bytes")]
    InvalidNodeId(String),
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The error.
        source: std::io::Error,
    },
    /// A `peer_dns` entry is not `NAME:PORT`.
    #[error("invalid --peer-dns {0:?}: expected NAME:PORT")]
    InvalidPeerDns(String),
    /// [`PartitionMode::SplitLimit`] without an expected cluster size of at least 2.
    #[error("the split-limit partition mode needs --cluster-expected-nodes N, N at least 2 (got {0})")]
    ExpectedNodes(usize),
}

/// A peer link's state, as `GET /v1/cluster` shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PeerState {
    /// Dialing, or waiting to dial again.
    Connecting,
    /// Authenticated; the peer's full state is still arriving.
    Syncing,
    /// Synced; replicating.
    Up,
}

/// One peer, as `GET /v1/cluster` shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PeerStatus {
    /// The peer's node id (`null` until a handshake with it succeeded).
    pub id: Option<String>,
    /// Its address.
    pub address: String,
    /// The link's state.
    pub state: PeerState,
    /// The replication lag last seen from it: from its sending a batch to this node applying it (`null` before
    /// the first batch after sync).
    pub lag_ms: Option<u64>,
    /// Its wall clock minus this node's, seen at the handshake (`null` before one).
    pub clock_skew_ms: Option<i64>,
}

/// This node and its peers: the body of `GET /v1/cluster`.
///
/// ```
/// use floodgate_cluster::{ClusterStatus, PeerState, PeerStatus};
/// let status = ClusterStatus {
///     node_id: "a".into(),
///     peers: vec![PeerStatus { id: Some("b".into()), address: "127.0.0.1:7946".into(), state: PeerState::Up, lag_ms: Some(1), clock_skew_ms: Some(0) }],
/// };
/// let json = serde_json::to_string(&status)?;
/// assert_eq!(json, r#"{"node_id":"a","peers":[{"id":"b","address":"127.0.0.1:7946","state":"up","lag_ms":1,"clock_skew_ms":0}]}"#);
/// # Ok::<(), serde_json::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ClusterStatus {
    /// This node's id.
    pub node_id: String,
    /// Every peer it has a link to or is dialing.
    pub peers: Vec<PeerStatus>,
}

/// The node's counters, a snapshot (see [`ClusterHandle::stats`]).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct ClusterStats {
    /// Peers with an authenticated link.
    pub peers_connected: u64,
    /// Bytes sent on peer links (frames, without the length prefix).
    pub bytes_sent: u64,
    /// Bytes received on peer links.
    pub bytes_received: u64,
    /// Counter entries sent.
    pub entries_sent: u64,
    /// Counter entries received.
    pub entries_received: u64,
    /// Entries that raised a count.
    pub merges_applied: u64,
    /// Entries refused (bounds, far-future windows, the per-peer budget for new counters).
    pub entries_refused: u64,
    /// Links closed for a malformed or unexpected frame.
    pub frames_rejected: u64,
    /// Handshakes that failed authentication.
    pub auth_failures: u64,
    /// Full syncs received to their end.
    pub syncs_completed: u64,
    /// How long the last full sync took to receive, in ms.
    pub last_sync_ms: u64,
    /// Times the joining gate opened on its timeout rather than on a finished sync.
    pub sync_timeouts: u64,
    /// Hits refused while the joining gate was closed.
    pub unavailable_hits: u64,
    /// The largest clock skew seen at a handshake, in ms (absolute).
    pub max_clock_skew_ms: u64,
    /// The largest replication lag seen, in ms.
    pub max_lag_ms: u64,
    /// The replication lag now: the largest last-seen lag over the linked peers, in ms.
    pub lag_ms: u64,
    /// Peers whose link is synced and replicating.
    pub peers_up: u64,
    /// Whether the split limit is in force ([`PartitionMode::SplitLimit`] while peers are missing).
    pub split_limit_active: bool,
}

#[derive(Default)]
struct Stats {
    bytes_sent: AtomicU64,
    bytes_received: AtomicU64,
    entries_sent: AtomicU64,
    entries_received: AtomicU64,
    merges_applied: AtomicU64,
    entries_refused: AtomicU64,
    frames_rejected: AtomicU64,
    auth_failures: AtomicU64,
    syncs_completed: AtomicU64,
    last_sync_ms: AtomicU64,
    sync_timeouts: AtomicU64,
    max_clock_skew_ms: AtomicU64,
    max_lag_ms: AtomicU64,
}

const STATE_SYNCING: u8 = 1;
const STATE_UP: u8 = 2;

/// One authenticated link to a peer.
struct Link {
    serial: u64,
    peer: Arc<str>,
    /// Where the peer listens (what status shows and other nodes are told).
    advertised: String,
    /// Whether this node dialed it.
    dialed: bool,
    state: AtomicU8,
    lag_ms: AtomicI64,
    skew_ms: i64,
    /// Own entries waiting to be sent: only the latest count of each key waits.
    pending: Mutex<HashMap<EntryKey, u64>>,
    wake: Notify,
    close: CancellationToken,
}

struct Shared {
    store: ClusterStore,
    clock: Arc<dyn Clock>,
    id: Arc<str>,
    secret: Vec<u8>,
    config: ClusterConfig,
    links: Mutex<HashMap<Arc<str>, Arc<Link>>>,
    /// Addresses being dialed, with the peer id last seen there.
    dialing: Mutex<HashMap<String, Option<Arc<str>>>>,
    blocked: Mutex<HashSet<String>>,
    /// Addresses found to be this node.
    own_addrs: Mutex<HashSet<String>>,
    listen_port: u16,
    stats: Stats,
    synced: AtomicBool,
    synced_notify: Notify,
    serial: AtomicU64,
    shutdown: CancellationToken,
}

/// Starts a cluster node (see [`Cluster::start`]).
#[derive(Debug)]
pub struct Cluster;

/// Controls a running node: status, stats, shutdown. Dropping it stops the node.
pub struct ClusterHandle {
    shared: Arc<Shared>,
    local_addr: SocketAddr,
}

impl std::fmt::Debug for ClusterHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterHandle").field("node_id", &self.shared.id).field("local_addr", &self.local_addr).finish()
    }
}

impl Cluster {
    /// Starts a node: binds `config.listen`, dials the peers, and returns the store (whose hits are held until
    /// the first sync with a peer is done, or `sync_timeout` passes; at once when no peer is configured) and a
    /// handle. Must be called within a tokio runtime.
    ///
    /// ```
    /// use floodgate::SystemClock;
    /// use floodgate_cluster::{Cluster, ClusterConfig};
    /// use std::sync::Arc;
    ///
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build()?.block_on(async {
    /// let config = ClusterConfig::new("127.0.0.1:0".parse()?, b"secret".to_vec());
    /// let (store, handle) = Cluster::start(config, Arc::new(SystemClock::new())).await?;
    /// assert!(store.is_ready());
    /// let json = serde_json::to_string(&handle.status())?;
    /// assert!(json.starts_with(r#"{"node_id":"node-"#));
    /// handle.shutdown();
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// # })?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub async fn start(
        config: ClusterConfig,
        clock: Arc<dyn Clock>,
    ) -> Result<(ClusterStore, ClusterHandle), ClusterError> {
        if config.secret.is_empty() {
            return Err(ClusterError::NoSecret);
        }
        let node_id = match &config.node_id {
            Some(id) if id.is_empty() || id.len() > frame::MAX_NODE_ID_LEN => {
                return Err(ClusterError::InvalidNodeId(id.clone()));
            }
            Some(id) => id.clone(),
            None => {
                let id = crate::store::random_node_id();
                info!(node_id = %id, "cluster: no --node-id given, using a random one");
                id
            }
        };
        if config.partition_mode == PartitionMode::SplitLimit && config.expected_nodes < 2 {
            return Err(ClusterError::ExpectedNodes(config.expected_nodes));
        }
        for d in &config.peer_dns {
            if crate::dns::split_host_port(d).is_none() {
                return Err(ClusterError::InvalidPeerDns(d.clone()));
            }
        }
        let listener = TcpListener::bind(config.listen)
            .await
            .map_err(|source| ClusterError::Bind { addr: config.listen, source })?;
        let local_addr = listener.local_addr().map_err(|source| ClusterError::Bind { addr: config.listen, source })?;
        let store = ClusterStore::builder()
            .node_id(node_id.clone())
            .shared_clock(clock.clone())
            .limits(config.limits.clone())
            .build();
        let has_peers = !config.peers.is_empty() || !config.peer_dns.is_empty();
        store.set_ready(!has_peers);
        let shared = Arc::new(Shared {
            store: store.clone(),
            clock,
            id: node_id.into(),
            secret: config.secret.clone(),
            config,
            links: Mutex::new(HashMap::new()),
            dialing: Mutex::new(HashMap::new()),
            blocked: Mutex::new(HashSet::new()),
            own_addrs: Mutex::new(HashSet::new()),
            listen_port: local_addr.port(),
            stats: Stats::default(),
            synced: AtomicBool::new(false),
            synced_notify: Notify::new(),
            serial: AtomicU64::new(0),
            shutdown: CancellationToken::new(),
        });
        shared.update_split_limit();
        info!(node_id = %shared.id, %local_addr, "cluster: listening for peers");
        tokio::spawn(accept_loop(shared.clone(), listener));
        tokio::spawn(replicate_loop(shared.clone()));
        for peer in shared.config.peers.clone() {
            shared.add_peer(peer, false);
        }
        for name in shared.config.peer_dns.clone() {
            tokio::spawn(crate::dns::discover(DnsHooks { shared: shared.clone() }, name));
        }
        if has_peers {
            tokio::spawn(join_gate(shared.clone()));
        }
        Ok((store, ClusterHandle { shared, local_addr }))
    }
}

/// What DNS discovery may do to the node.
pub(crate) struct DnsHooks {
    shared: Arc<Shared>,
}

impl DnsHooks {
    pub(crate) fn add_peer(&self, addr: String) {
        self.shared.add_peer(addr, false);
    }
    pub(crate) fn cap(&self) -> Duration {
        self.shared.config.dns_refresh_cap
    }
    pub(crate) fn server(&self) -> Option<SocketAddr> {
        self.shared.config.dns_server
    }
    pub(crate) fn shutdown(&self) -> &CancellationToken {
        &self.shared.shutdown
    }
}

impl ClusterHandle {
    /// The address the node listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// This node's id.
    pub fn node_id(&self) -> &str {
        &self.shared.id
    }

    /// The store (the same one [`Cluster::start`] returned).
    pub fn store(&self) -> &ClusterStore {
        &self.shared.store
    }

    /// This node and its peers, for `GET /v1/cluster` (serialise with serde).
    pub fn status(&self) -> ClusterStatus {
        let links: Vec<Arc<Link>> = self.shared.links.lock().values().cloned().collect();
        let mut peers: Vec<PeerStatus> = links
            .iter()
            .map(|l| {
                let lag = l.lag_ms.load(Ordering::Relaxed);
                PeerStatus {
                    id: Some(l.peer.to_string()),
                    address: l.advertised.clone(),
                    state: if l.state.load(Ordering::Acquire) == STATE_UP { PeerState::Up } else { PeerState::Syncing },
                    lag_ms: u64::try_from(lag).ok(),
                    clock_skew_ms: Some(l.skew_ms),
                }
            })
            .collect();
        for (addr, id) in self.shared.dialing.lock().iter() {
            let linked = id.as_ref().is_some_and(|id| links.iter().any(|l| l.peer == *id));
            if !linked {
                peers.push(PeerStatus {
                    id: id.as_ref().map(|i| i.to_string()),
                    address: addr.clone(),
                    state: PeerState::Connecting,
                    lag_ms: None,
                    clock_skew_ms: None,
                });
            }
        }
        peers.sort_by(|a, b| (&a.id, &a.address).cmp(&(&b.id, &b.address)));
        ClusterStatus { node_id: self.shared.id.to_string(), peers }
    }

    /// The node's counters.
    pub fn stats(&self) -> ClusterStats {
        self.shared.stats()
    }

    /// A function that reads the node's counters, for a metrics exporter to keep (it keeps the node's state,
    /// not the node: the node still stops when this handle is dropped).
    pub fn stats_reader(&self) -> impl Fn() -> ClusterStats + Send + Sync + 'static {
        let shared = Arc::downgrade(&self.shared);
        move || shared.upgrade().map(|s| s.stats()).unwrap_or_default()
    }

    /// Starts dialing one more peer (`HOST:PORT`).
    pub fn add_peer(&self, addr: impl Into<String>) {
        self.shared.add_peer(addr.into(), false);
    }

    /// Cuts this node off from `peer_id` (an operator's tool, and the tests' partition): closes the link and
    /// refuses new ones until [`unblock`](Self::unblock).
    pub fn block(&self, peer_id: &str) {
        self.shared.blocked.lock().insert(peer_id.to_owned());
        if let Some(l) = self.shared.links.lock().get(peer_id) {
            l.close.cancel();
        }
    }

    /// Lets `peer_id` link again.
    pub fn unblock(&self, peer_id: &str) {
        self.shared.blocked.lock().remove(peer_id);
    }

    /// Stops the node: closes every link, stops listening and dialing. The store keeps answering locally.
    pub fn shutdown(&self) {
        self.shared.shutdown.cancel();
        self.shared.store.set_ready(true);
    }
}

impl Drop for ClusterHandle {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn wall_ms(clock: &dyn Clock) -> u64 {
    clock.now().as_micros() / 1_000
}

fn fetch_max(a: &AtomicU64, v: u64) {
    a.fetch_max(v, Ordering::Relaxed);
}

impl Shared {
    /// The node's counters.
    fn stats(&self) -> ClusterStats {
        let s = &self.stats;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let links: Vec<Arc<Link>> = self.links.lock().values().cloned().collect();
        ClusterStats {
            peers_connected: links.len() as u64,
            bytes_sent: get(&s.bytes_sent),
            bytes_received: get(&s.bytes_received),
            entries_sent: get(&s.entries_sent),
            entries_received: get(&s.entries_received),
            merges_applied: get(&s.merges_applied),
            entries_refused: get(&s.entries_refused),
            frames_rejected: get(&s.frames_rejected),
            auth_failures: get(&s.auth_failures),
            syncs_completed: get(&s.syncs_completed),
            last_sync_ms: get(&s.last_sync_ms),
            sync_timeouts: get(&s.sync_timeouts),
            unavailable_hits: self.store.unavailable_hits(),
            max_clock_skew_ms: get(&s.max_clock_skew_ms),
            max_lag_ms: get(&s.max_lag_ms),
            lag_ms: links.iter().map(|l| l.lag_ms.load(Ordering::Relaxed).max(0) as u64).max().unwrap_or(0),
            peers_up: links.iter().filter(|l| l.state.load(Ordering::Acquire) == STATE_UP).count() as u64,
            split_limit_active: self.store.split_divisor() > 1,
        }
    }

    /// Puts the split limit in force while fewer than `expected_nodes` nodes are up (split-limit mode only).
    fn update_split_limit(&self) {
        if self.config.partition_mode != PartitionMode::SplitLimit {
            return;
        }
        let up = self.links.lock().values().filter(|l| l.state.load(Ordering::Acquire) == STATE_UP).count();
        let expected = self.config.expected_nodes;
        let divisor = if up + 1 < expected { expected as u64 } else { 1 };
        if self.store.split_divisor() != divisor {
            info!(up = up + 1, expected, divisor, "cluster: split limit {}", if divisor > 1 { "on" } else { "off" });
            self.store.set_split_divisor(divisor);
        }
    }

    /// Starts dialing `addr` unless it is dialed already or is this node. A `learned` peer (told by another
    /// node) is forgotten after [`FORGET_AFTER`] of failed dials; a configured one is dialed until shutdown.
    fn add_peer(self: &Arc<Self>, addr: String, learned: bool) {
        if self.shutdown.is_cancelled() || self.own_addrs.lock().contains(&addr) {
            return;
        }
        {
            let mut dialing = self.dialing.lock();
            if dialing.contains_key(&addr) || (learned && dialing.len() >= frame::MAX_PEERS_PER_FRAME) {
                return;
            }
            dialing.insert(addr.clone(), None);
        }
        tokio::spawn(dial_loop(self.clone(), addr, learned));
    }

    /// The addresses of every linked peer but `except`.
    fn peer_addrs(&self, except: &str) -> Vec<String> {
        let mut v: Vec<String> =
            self.links.lock().values().filter(|l| *l.peer != *except).map(|l| l.advertised.clone()).collect();
        v.sort();
        v
    }

    fn linked(&self, id: &str) -> bool {
        self.links.lock().contains_key(id)
    }

    fn mark_synced(&self) {
        if !self.synced.swap(true, Ordering::AcqRel) {
            self.store.set_ready(true);
            self.synced_notify.notify_waiters();
        }
    }
}

async fn join_gate(shared: Arc<Shared>) {
    let timeout = shared.config.sync_timeout;
    let waited = tokio::time::timeout(timeout, async {
        // Bounded: each turn waits for a notification, and the timeout bounds them all.
        while !shared.synced.load(Ordering::Acquire) {
            let notified = shared.synced_notify.notified();
            if shared.synced.load(Ordering::Acquire) {
                break;
            }
            notified.await;
        }
    })
    .await;
    if waited.is_err() && !shared.store.is_ready() {
        shared.stats.sync_timeouts.fetch_add(1, Ordering::Relaxed);
        warn!(?timeout, "cluster: no first sync with a peer within the sync timeout; answering hits from local state");
        shared.store.set_ready(true);
    }
}

async fn accept_loop(shared: Arc<Shared>, listener: TcpListener) {
    loop {
        tokio::select! {
            _ = shared.shutdown.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, addr)) => {
                    let shared = shared.clone();
                    tokio::spawn(async move {
                        let _ = run_link(shared, stream, addr.to_string(), false).await;
                    });
                }
                Err(e) => {
                    warn!(error = %e, "cluster: accept failed");
                    tokio::select! {
                        _ = shared.shutdown.cancelled() => return,
                        _ = tokio::time::sleep(Duration::from_millis(50)) => {}
                    }
                }
            },
        }
    }
}

/// Drains the store's changed keys every `batch_interval` into every link's queue; sweeps once a second.
async fn replicate_loop(shared: Arc<Shared>) {
    let mut tick = tokio::time::interval(shared.config.batch_interval.max(Duration::from_micros(100)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_sweep = Instant::now();
    loop {
        tokio::select! {
            _ = shared.shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let dirty = shared.store.take_dirty();
        if !dirty.is_empty() {
            let links: Vec<Arc<Link>> = shared.links.lock().values().cloned().collect();
            for l in &links {
                let mut pending = l.pending.lock();
                for kc in &dirty {
                    if let Some((_, c)) = kc.counts.first() {
                        let slot = pending.entry(kc.key.clone()).or_insert(0);
                        *slot = (*slot).max(*c);
                    }
                }
                drop(pending);
                l.wake.notify_one();
            }
        }
        if last_sweep.elapsed() >= Duration::from_secs(1) {
            last_sweep = Instant::now();
            shared.store.sweep();
        }
    }
}

/// How long a learned peer is dialed without success before it is forgotten.
const FORGET_AFTER: Duration = Duration::from_secs(60);

async fn dial_loop(shared: Arc<Shared>, addr: String, learned: bool) {
    let (min, max) = (shared.config.reconnect_min, shared.config.reconnect_max.max(shared.config.reconnect_min));
    let mut backoff = min;
    let mut last_good = Instant::now();
    loop {
        if shared.shutdown.is_cancelled() {
            return;
        }
        if learned && last_good.elapsed() > FORGET_AFTER {
            info!(%addr, "cluster: forgetting a peer that has not answered for {FORGET_AFTER:?}");
            shared.dialing.lock().remove(&addr);
            return;
        }
        let known = shared.dialing.lock().get(&addr).cloned().flatten();
        let already = known.as_ref().is_some_and(|id| shared.linked(id));
        if !already {
            let connected = tokio::time::timeout(shared.config.handshake_timeout, TcpStream::connect(&addr)).await;
            if let Ok(Ok(stream)) = connected {
                let started = Instant::now();
                match run_link(shared.clone(), stream, addr.clone(), true).await {
                    LinkEnd::SelfLink => {
                        debug!(%addr, "cluster: that address is this node; not dialing it again");
                        shared.own_addrs.lock().insert(addr.clone());
                        shared.dialing.lock().remove(&addr);
                        return;
                    }
                    LinkEnd::Peer(id) => {
                        last_good = Instant::now();
                        shared.dialing.lock().insert(addr.clone(), Some(id));
                        if started.elapsed() > max {
                            backoff = min;
                        }
                    }
                    LinkEnd::Failed => {}
                }
            }
            debug!(%addr, ?backoff, "cluster: will dial again");
        } else {
            backoff = min;
            last_good = Instant::now();
        }
        // Jitter of up to a quarter, so that nodes restarted together do not dial in step.
        let jitter = Duration::from_micros(crate::store::random_u64() % (backoff.as_micros() as u64 / 4 + 1));
        tokio::select! {
            _ = shared.shutdown.cancelled() => return,
            _ = tokio::time::sleep(if already { min.max(Duration::from_millis(100)) } else { backoff + jitter }) => {}
        }
        if !already {
            backoff = (backoff * 2).min(max);
        }
    }
}

enum LinkEnd {
    /// The link ran (or was refused as a duplicate) with this peer.
    Peer(Arc<str>),
    /// The peer is this node.
    SelfLink,
    /// Connection or handshake failed.
    Failed,
}

type Wire = Framed<TcpStream, tokio_util::codec::LengthDelimitedCodec>;

async fn next_frame(shared: &Shared, wire: &mut Wire, within: Duration) -> Result<Frame, String> {
    match tokio::time::timeout(within, wire.next()).await {
        Err(_) => Err(format!("silent for {within:?}")),
        Ok(None) => Err("closed".into()),
        Ok(Some(Err(e))) => Err(format!("read: {e}")),
        Ok(Some(Ok(bytes))) => {
            shared.stats.bytes_received.fetch_add(bytes.len() as u64, Ordering::Relaxed);
            Frame::decode(&bytes).map_err(|e: FrameError| {
                shared.stats.frames_rejected.fetch_add(1, Ordering::Relaxed);
                format!("malformed frame: {e}")
            })
        }
    }
}

async fn send(shared: &Shared, wire: &mut futures_util::stream::SplitSink<Wire, Bytes>, f: &Frame) -> bool {
    let bytes = f.encode().freeze();
    let n = bytes.len() as u64;
    if let Frame::Entries(e) = f {
        shared.stats.entries_sent.fetch_add(e.keys.iter().map(|k| k.counts.len() as u64).sum(), Ordering::Relaxed);
    }
    match wire.send(bytes).await {
        Ok(()) => {
            shared.stats.bytes_sent.fetch_add(n, Ordering::Relaxed);
            true
        }
        Err(_) => false,
    }
}

/// Handshake, registration, then the link's reader (here) and writer (a task) until either ends.
async fn run_link(shared: Arc<Shared>, stream: TcpStream, address: String, dialed: bool) -> LinkEnd {
    let _ = stream.set_nodelay(true);
    let mut wire = Framed::new(stream, frame::codec());
    let hs = shared.config.handshake_timeout;
    let mut nonce = [0u8; 32];
    if getrandom::fill(&mut nonce).is_err() {
        warn!("cluster: no randomness for a handshake nonce");
        return LinkEnd::Failed;
    }
    let mine = Hello {
        version: PROTOCOL_VERSION,
        node_id: shared.id.to_string(),
        nonce,
        wall_ms: wall_ms(&*shared.clock),
        listen_port: shared.listen_port,
    };
    if wire.send(Frame::Hello(mine.clone()).encode().freeze()).await.is_err() {
        return LinkEnd::Failed;
    }
    let theirs = match next_frame(&shared, &mut wire, hs).await {
        Ok(Frame::Hello(h)) => h,
        Ok(_) | Err(_) => {
            debug!(%address, "cluster: handshake failed: no hello");
            return LinkEnd::Failed;
        }
    };
    let skew_ms = theirs.wall_ms as i64 - wall_ms(&*shared.clock) as i64;
    if theirs.version != PROTOCOL_VERSION || theirs.node_id.is_empty() {
        warn!(%address, version = theirs.version, "cluster: peer speaks another protocol version or has no id");
        return LinkEnd::Failed;
    }
    if *theirs.node_id == *shared.id {
        return if dialed { LinkEnd::SelfLink } else { LinkEnd::Failed };
    }
    let (my_role, their_role, dialer, acceptor) = if dialed {
        (Role::Dialer, Role::Acceptor, &mine, &theirs)
    } else {
        (Role::Acceptor, Role::Dialer, &theirs, &mine)
    };
    let mac = frame::proof(&shared.secret, my_role, dialer, acceptor);
    if wire.send(Frame::Auth { mac }.encode().freeze()).await.is_err() {
        return LinkEnd::Failed;
    }
    let ok = match next_frame(&shared, &mut wire, hs).await {
        Ok(Frame::Auth { mac }) => frame::verify(&shared.secret, their_role, dialer, acceptor, &mac),
        _ => false,
    };
    let peer: Arc<str> = theirs.node_id.clone().into();
    if !ok {
        shared.stats.auth_failures.fetch_add(1, Ordering::Relaxed);
        warn!(%address, peer = %peer, "cluster: peer failed authentication; link refused");
        return LinkEnd::Failed;
    }
    fetch_max(&shared.stats.max_clock_skew_ms, skew_ms.unsigned_abs());
    if skew_ms.unsigned_abs() > 1_000 {
        warn!(peer = %peer, skew_ms, "cluster: large clock skew with a peer");
    } else {
        debug!(peer = %peer, skew_ms, "cluster: clock skew with a peer");
    }
    if shared.blocked.lock().contains(&*peer) {
        return LinkEnd::Peer(peer);
    }
    // Where other nodes can reach the peer: the address dialed, or the address the link came from with the
    // port the peer listens on.
    let advertised = if dialed {
        address.clone()
    } else {
        address
            .parse::<SocketAddr>()
            .map_or_else(|_| address.clone(), |a| SocketAddr::new(a.ip(), theirs.listen_port).to_string())
    };
    if dialed && let Some(slot) = shared.dialing.lock().get_mut(&address) {
        *slot = Some(peer.clone());
    }
    // Register: one link per peer. When both dialed at once, both keep the link dialed by the lower id.
    let link = Arc::new(Link {
        serial: shared.serial.fetch_add(1, Ordering::Relaxed),
        peer: peer.clone(),
        advertised,
        dialed,
        state: AtomicU8::new(STATE_SYNCING),
        lag_ms: AtomicI64::new(-1),
        skew_ms,
        pending: Mutex::new(HashMap::new()),
        wake: Notify::new(),
        close: shared.shutdown.child_token(),
    });
    {
        let mut links = shared.links.lock();
        if let Some(old) = links.get(&peer) {
            let preferred_dialed_by_me = *shared.id < *peer;
            let new_preferred = dialed == preferred_dialed_by_me;
            let old_preferred = old.dialed == preferred_dialed_by_me;
            if old_preferred && !new_preferred {
                debug!(peer = %peer, "cluster: keeping the existing link");
                return LinkEnd::Peer(peer);
            }
            old.close.cancel();
        }
        links.insert(peer.clone(), link.clone());
    }
    info!(peer = %peer, %address, dialed, "cluster: link up; syncing");
    let (sink, mut stream) = wire.split();
    let writer = tokio::spawn(write_link(shared.clone(), link.clone(), sink));
    let started = Instant::now();
    let mut budget = Budget { left: shared.config.peer_key_budget, refill_at: Instant::now() + Duration::from_secs(1) };
    let reason = loop {
        let next = tokio::select! {
            _ = link.close.cancelled() => break "closed by this node".to_string(),
            n = tokio::time::timeout(shared.config.peer_timeout, stream.next()) => n,
        };
        let bytes = match next {
            Err(_) => break format!("silent for {:?}", shared.config.peer_timeout),
            Ok(None) => break "closed by the peer".into(),
            Ok(Some(Err(e))) => break format!("read: {e}"),
            Ok(Some(Ok(b))) => b,
        };
        shared.stats.bytes_received.fetch_add(bytes.len() as u64, Ordering::Relaxed);
        match Frame::decode(&bytes) {
            Ok(Frame::Entries(e)) => {
                let (mut applied, mut refused, mut received) = (0, 0, 0);
                for kc in &e.keys {
                    received += kc.counts.len() as u64;
                    let o = shared.store.merge(kc, || budget.take(shared.config.peer_key_budget));
                    applied += o.applied;
                    refused += o.refused;
                }
                let s = &shared.stats;
                s.entries_received.fetch_add(received, Ordering::Relaxed);
                s.merges_applied.fetch_add(applied, Ordering::Relaxed);
                s.entries_refused.fetch_add(refused, Ordering::Relaxed);
                if link.state.load(Ordering::Relaxed) == STATE_UP && !e.keys.is_empty() {
                    let lag = (wall_ms(&*shared.clock) as i64 - e.sent_ms as i64 + skew_ms).max(0);
                    link.lag_ms.store(lag, Ordering::Relaxed);
                    fetch_max(&s.max_lag_ms, lag as u64);
                }
            }
            Ok(Frame::SyncEnd) => {
                if link.state.swap(STATE_UP, Ordering::AcqRel) != STATE_UP {
                    let ms = started.elapsed().as_millis() as u64;
                    shared.stats.syncs_completed.fetch_add(1, Ordering::Relaxed);
                    shared.stats.last_sync_ms.store(ms, Ordering::Relaxed);
                    info!(peer = %peer, sync_ms = ms, "cluster: sync received; link up");
                    shared.mark_synced();
                    shared.update_split_limit();
                }
            }
            Ok(Frame::Ping) => {}
            Ok(Frame::Peers(addrs)) => {
                for a in addrs {
                    shared.add_peer(a, true);
                }
            }
            Ok(other) => {
                shared.stats.frames_rejected.fetch_add(1, Ordering::Relaxed);
                break format!("unexpected frame after the handshake: {other:?}");
            }
            Err(e) => {
                shared.stats.frames_rejected.fetch_add(1, Ordering::Relaxed);
                break format!("malformed frame: {e}");
            }
        }
    };
    link.close.cancel();
    // The writer may be waiting on a slow peer's socket: it is not waited for.
    writer.abort();
    {
        let mut links = shared.links.lock();
        if links.get(&peer).is_some_and(|l| l.serial == link.serial) {
            links.remove(&peer);
        }
    }
    shared.update_split_limit();
    info!(peer = %peer, %address, %reason, "cluster: link down");
    LinkEnd::Peer(peer)
}

struct Budget {
    left: u64,
    refill_at: Instant,
}

impl Budget {
    fn take(&mut self, per_second: u64) -> bool {
        let now = Instant::now();
        if now >= self.refill_at {
            self.left = per_second;
            self.refill_at = now + Duration::from_secs(1);
        }
        if self.left == 0 {
            return false;
        }
        self.left -= 1;
        true
    }
}

/// The writer: the full state, `SyncEnd`, then this node's changed entries as they come (coalesced per key
/// while the peer is slow), and a ping when idle.
async fn write_link(shared: Arc<Shared>, link: Arc<Link>, mut sink: futures_util::stream::SplitSink<Wire, Bytes>) {
    let now_ms = wall_ms(&*shared.clock);
    for f in frame::batches(shared.store.snapshot(), now_ms) {
        if link.close.is_cancelled() || !send(&shared, &mut sink, &f).await {
            link.close.cancel();
            return;
        }
    }
    if !send(&shared, &mut sink, &Frame::SyncEnd).await {
        link.close.cancel();
        return;
    }
    let ping = shared.config.ping_interval;
    let mut told: Vec<String> = Vec::new();
    loop {
        let addrs = shared.peer_addrs(&link.peer);
        if addrs != told {
            if !send(&shared, &mut sink, &Frame::Peers(addrs.clone())).await {
                link.close.cancel();
                return;
            }
            told = addrs;
        }
        let idle = tokio::select! {
            _ = link.close.cancelled() => break,
            _ = link.wake.notified() => false,
            _ = tokio::time::sleep(ping) => true,
        };
        let pending = std::mem::take(&mut *link.pending.lock());
        let frames = if pending.is_empty() {
            if idle { vec![Frame::Ping] } else { Vec::new() }
        } else {
            let own = shared.id.clone();
            let keys: Vec<KeyCounts> =
                pending.into_iter().map(|(key, c)| KeyCounts { key, counts: vec![(own.clone(), c)] }).collect();
            frame::batches(keys, wall_ms(&*shared.clock))
        };
        for f in &frames {
            if !send(&shared, &mut sink, f).await {
                link.close.cancel();
                return;
            }
        }
    }
    let _ = sink.close().await;
}
