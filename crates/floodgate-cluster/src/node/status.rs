//! What a node reports: `GET /v1/cluster` ([`ClusterStatus`]) and its counters ([`ClusterStats`]).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;

use super::{ClusterHandle, Link, STATE_UP, Shared};

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
    /// TLS handshakes that failed or timed out (a peer certificate not signed by the cluster CA or without
    /// the expected name, a peer without TLS), each closing its link.
    pub tls_handshake_failures: u64,
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
    /// Whether the split limit is in force ([`PartitionMode::SplitLimit`](crate::PartitionMode::SplitLimit)
    /// while peers are missing).
    pub split_limit_active: bool,
}

#[derive(Default)]
pub(super) struct Stats {
    pub(super) bytes_sent: AtomicU64,
    pub(super) bytes_received: AtomicU64,
    pub(super) entries_sent: AtomicU64,
    pub(super) entries_received: AtomicU64,
    pub(super) merges_applied: AtomicU64,
    pub(super) entries_refused: AtomicU64,
    pub(super) frames_rejected: AtomicU64,
    pub(super) auth_failures: AtomicU64,
    pub(super) tls_handshake_failures: AtomicU64,
    pub(super) syncs_completed: AtomicU64,
    pub(super) last_sync_ms: AtomicU64,
    pub(super) sync_timeouts: AtomicU64,
    pub(super) max_clock_skew_ms: AtomicU64,
    pub(super) max_lag_ms: AtomicU64,
}

impl ClusterHandle {
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
}

impl Shared {
    /// The node's counters.
    pub(super) fn stats(&self) -> ClusterStats {
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
            tls_handshake_failures: get(&s.tls_handshake_failures),
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
}
