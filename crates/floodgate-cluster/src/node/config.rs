//! How a node is configured: [`ClusterConfig`], [`PartitionMode`], and why a node could not start.

use std::net::SocketAddr;
use std::time::Duration;

use crate::store::StoreLimits;
use crate::tls::ClusterTls;

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
    /// Where to listen for peers (`--cluster`). Port 0 picks a free one (see
    /// [`ClusterHandle::local_addr`](crate::ClusterHandle::local_addr)).
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
    /// The longest reconnect delay (default 250 ms, so that a split longer than the peer timeout, which drops
    /// the links, heals within about a second of the network coming back: one dial every half second to a
    /// missing peer a few times a second costs next to nothing).
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
    /// Mutual TLS on every link, before the challenge-response (`--cluster-tls-cert`, `--cluster-tls-key`,
    /// `--cluster-tls-ca`; default none: links are authenticated by the secret but not encrypted). See
    /// [`ClusterTls`].
    pub tls: Option<ClusterTls>,
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
            .field("tls", &self.tls)
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
            reconnect_max: Duration::from_millis(250),
            peer_key_budget: 1_000_000,
            dns_refresh_cap: Duration::from_secs(30),
            dns_server: None,
            limits: StoreLimits::default(),
            partition_mode: PartitionMode::CountLocally,
            expected_nodes: 0,
            tls: None,
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
