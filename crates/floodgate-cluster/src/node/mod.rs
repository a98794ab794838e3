//! The node: listens for peers, dials them, authenticates each link, syncs, and replicates. One file per
//! idea: the configuration ([`config`]), membership and dialing ([`membership`]), one link's handshake, sync
//! and reader ([`link`]), its transport, plain or TLS ([`secure`]), sending changed entries to peers
//! ([`broadcast`]), and what a node reports ([`status`]).

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU8, AtomicU64, Ordering};
use std::time::Duration;

use floodgate::Clock;
use parking_lot::Mutex;
use tokio::net::TcpListener;

use broadcast::replicate_loop;
use membership::accept_loop;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::counter::EntryKey;
use crate::frame;
use crate::store::ClusterStore;

mod broadcast;
mod config;
mod link;
mod membership;
mod secure;
mod status;

pub use config::{ClusterConfig, ClusterError, PartitionMode};
use status::Stats;
pub use status::{ClusterStats, ClusterStatus, PeerState, PeerStatus};

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
    /// When a TLS failure was last logged at warn.
    tls_warned_at: Mutex<Option<std::time::Instant>>,
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
            tls_warned_at: Mutex::new(None),
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

impl Shared {
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
