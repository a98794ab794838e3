//! The series each store adds to `/metrics`: what the in-memory store, the Redis store and cluster mode count,
//! read at each scrape through a [`StoreSource`].

use std::sync::Arc;

use floodgate::MemoryStore;
use floodgate_redis::RedisStore;

use crate::metrics::{StoreCounters, StoreSource};

/// The in-memory store's series (`floodgate_memory_*`): keys held, sweeps, evictions and refusals when full.
pub fn memory(stats: MemoryStore) -> StoreSource {
    StoreSource(Box::new(move || {
        let s = stats.stats();
        StoreCounters {
            answered_by_failure_policy: 0,
            series: vec![
                ("floodgate_memory_keys", "Keys held by the in-memory store.", "gauge", s.keys as u64),
                ("floodgate_memory_swept_total", "Expired buckets dropped by sweeps.", "counter", s.swept),
                (
                    "floodgate_memory_evicted_expired_total",
                    "Expired keys dropped to make room under --max-keys.",
                    "counter",
                    s.evicted_expired,
                ),
                (
                    "floodgate_memory_evicted_live_total",
                    "Live keys evicted under --max-keys --when-full evict (each may be admitted past its limit).",
                    "counter",
                    s.evicted_live,
                ),
                (
                    "floodgate_memory_refused_full_total",
                    "Writes of new keys denied because the store was full of live keys (--when-full refuse).",
                    "counter",
                    s.refused_full,
                ),
            ],
        }
    }))
}

/// The Redis store's series: answers given by the failure policy and Redis faults by kind (`floodgate_redis_*`).
pub fn redis(stats: Arc<RedisStore>) -> StoreSource {
    StoreSource(Box::new(move || {
        let s = stats.stats();
        StoreCounters {
            answered_by_failure_policy: s.failed_open.saturating_add(s.failed_closed),
            series: vec![
                (
                    "floodgate_store_failed_open_total",
                    "Decisions allowed by --failure-policy fail-open because Redis could not answer.",
                    "counter",
                    s.failed_open,
                ),
                (
                    "floodgate_store_failed_closed_total",
                    "Decisions denied by --failure-policy fail-closed because Redis could not answer.",
                    "counter",
                    s.failed_closed,
                ),
                (
                    "floodgate_redis_failures_total",
                    "Redis faults of every kind, however they were answered.",
                    "counter",
                    s.failures,
                ),
                ("floodgate_redis_timeouts_total", "Redis calls past --redis-timeout-ms.", "counter", s.timeouts),
                (
                    "floodgate_redis_unavailable_total",
                    "Redis calls that found no connection.",
                    "counter",
                    s.unavailable,
                ),
                ("floodgate_redis_backend_errors_total", "Redis error replies.", "counter", s.backend),
                (
                    "floodgate_redis_wrong_type_total",
                    "Calls that met a key of the wrong Redis type (POST /v1/reset of the id clears it).",
                    "counter",
                    s.wrong_type,
                ),
                (
                    "floodgate_redis_expired_total",
                    "Calls dropped by Redis because they arrived past their deadline.",
                    "counter",
                    s.expired,
                ),
                (
                    "floodgate_redis_reconnects_total",
                    "Redis connections opened again after one was lost.",
                    "counter",
                    s.reconnects,
                ),
            ],
        }
    }))
}

/// Cluster mode's series: name, help and type, in the order [`cluster`] reads them.
const CLUSTER_SERIES: [(&str, &str, &str); 19] = [
    ("floodgate_cluster_peers_connected", "Peers with an authenticated link.", "gauge"),
    ("floodgate_cluster_peers_up", "Peers synced and replicating.", "gauge"),
    (
        "floodgate_cluster_replication_lag_ms",
        "The largest replication lag last seen over the linked peers, in ms.",
        "gauge",
    ),
    ("floodgate_cluster_replication_lag_max_ms", "The largest replication lag seen, in ms.", "gauge"),
    ("floodgate_cluster_bytes_sent_total", "Bytes sent on peer links.", "counter"),
    ("floodgate_cluster_bytes_received_total", "Bytes received on peer links.", "counter"),
    ("floodgate_cluster_entries_sent_total", "Counter entries sent to peers.", "counter"),
    ("floodgate_cluster_entries_received_total", "Counter entries received from peers.", "counter"),
    ("floodgate_cluster_merges_applied_total", "Received entries that raised a count.", "counter"),
    (
        "floodgate_cluster_entries_refused_total",
        "Received entries refused (bounds, far-future windows, the per-peer budget).",
        "counter",
    ),
    ("floodgate_cluster_frames_rejected_total", "Peer links closed for a malformed or unexpected frame.", "counter"),
    ("floodgate_cluster_auth_failures_total", "Peer handshakes that failed authentication.", "counter"),
    (
        "floodgate_cluster_tls_handshake_failures_total",
        "Peer TLS handshakes that failed or timed out (--cluster-tls-*), each closing its link.",
        "counter",
    ),
    ("floodgate_cluster_syncs_completed_total", "Full syncs received to their end.", "counter"),
    ("floodgate_cluster_last_sync_ms", "How long the last full sync took to receive, in ms.", "gauge"),
    (
        "floodgate_cluster_sync_timeouts_total",
        "Times the joining gate opened on its timeout rather than a finished sync.",
        "counter",
    ),
    ("floodgate_cluster_unavailable_hits_total", "Hits refused while the joining gate was closed.", "counter"),
    (
        "floodgate_cluster_clock_skew_max_ms",
        "The largest clock skew with a peer seen at a handshake, in ms (absolute).",
        "gauge",
    ),
    (
        "floodgate_cluster_split_limit_active",
        "1 while --cluster-partition-mode split-limit caps this node (peers missing).",
        "gauge",
    ),
];

/// Cluster mode's series (`floodgate_cluster_*`): peers, lag, bytes and entries, merges, refusals, syncs, clock skew
/// and the split-limit cap, read from `stats` at each scrape.
pub fn cluster(stats: impl Fn() -> floodgate_cluster::ClusterStats + Send + Sync + 'static) -> StoreSource {
    StoreSource(Box::new(move || {
        let s = stats();
        let values = [
            s.peers_connected,
            s.peers_up,
            s.lag_ms,
            s.max_lag_ms,
            s.bytes_sent,
            s.bytes_received,
            s.entries_sent,
            s.entries_received,
            s.merges_applied,
            s.entries_refused,
            s.frames_rejected,
            s.auth_failures,
            s.tls_handshake_failures,
            s.syncs_completed,
            s.last_sync_ms,
            s.sync_timeouts,
            s.unavailable_hits,
            s.max_clock_skew_ms,
            u64::from(s.split_limit_active),
        ];
        StoreCounters {
            answered_by_failure_policy: 0,
            series: CLUSTER_SERIES.iter().zip(values).map(|(&(name, help, kind), v)| (name, help, kind, v)).collect(),
        }
    }))
}
