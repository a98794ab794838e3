//! # floodgate-cluster
//!
//! One limit across many nodes with no central store. Every node decides locally, on its own copy of the
//! counters (no network on the hit path), and replicates what it counted to its peers.
//!
//! - **Counters.** Keyed by (policy key, window length, epoch-aligned window start, id), so a late message only
//!   touches its own window, and a window's counts are dropped once it (and, for a sliding window, the window
//!   after it) has ended plus a grace period. Each counter is a [`GCounter`]: node id → count, merged by
//!   per-node maximum, valued as the sum. Merging is idempotent, commutative and associative: lost, repeated
//!   and reordered messages do no harm. In memory, an id's entry is 128 bytes (two cache lines): a counter
//!   keeps its two latest windows in line as this node's count and the sum of the peers' counts, which is all
//!   a decision reads; each peer's entry and older windows live out of line.
//! - **Decisions** are the core's: the core's fixed- and sliding-window functions run on the counter's
//!   totals, so a single node decides exactly as [`floodgate::MemoryStore`] does (a property test checks it; the
//!   core's conformance suite runs against [`ClusterStore`] for both algorithms). A denied hit consumes nothing.
//! - **Replication** ([`Cluster`]): every few ms (`batch_interval`, default 5 ms) a node sends each peer its
//!   *own current entries* for the keys it changed, coalesced per key: while a peer is slow only the latest
//!   value of each key waits, so a slow peer never fails a link.
//! - **Join and heal.** When a link comes up (a new node, a restart, a healed split) each side sends every live
//!   entry it knows, other nodes' too, then an end-of-sync marker. A joining node answers no hit
//!   ([`floodgate::StoreError::Unavailable`]) until its first sync with a peer is done, or `sync_timeout`
//!   (default 2 s) passes; the latter is counted in [`ClusterStats::sync_timeouts`].
//! - **Membership.** Static peers, DNS names re-resolved at min(TTL, cap) (every A/AAAA record a peer, the last
//!   good set kept when an answer is empty or fails), and the peer lists that linked nodes share, so every node
//!   links to every other. One link per pair: when two nodes dial each other, both keep the link dialed by the
//!   lower node id. Reconnects back off exponentially (50 ms to 250 ms, with jitter).
//! - **Security.** Links are authenticated by a mutual challenge-response: HMAC-SHA256 with the cluster secret
//!   over both nonces and both node ids, compared in constant time. The secret never crosses the wire; without
//!   one the node does not start. Frames are bounded (size, keys per frame, node ids per key, id and policy
//!   lengths), windows far in the future are refused, and a malformed frame closes only its link. Optionally
//!   ([`ClusterConfig::tls`]) every link is mutual TLS first: both nodes present certificates signed by the
//!   cluster CA (see [`tls`]); a TLS failure closes only its link and is counted.
//!
//! ## Supported algorithms
//!
//! **Fixed window and sliding window only.** Their state is a count per window, and each node's share of a
//! count only grows during the window: a per-node monotone counter, which is what a G-Counter merges by
//! maximum. The meters (token bucket, leaky bucket, GCRA) keep a level that drains with time, and the sliding
//! log a list of timestamps: neither is a per-node count that only grows, so taking the maximum of two copies
//! would lose hits or resurrect drained ones. The store refuses them with
//! [`ClusterStoreError::UnsupportedAlgorithm`] (a [`floodgate::StoreError::Backend`] through the trait); call
//! [`check_policy`] to validate a configuration up front.
//!
//! Two more differences from the memory store follow from counters that only grow: `set` can raise a count but
//! not lower it ([`ClusterStoreError::CannotLower`]), and `delete_buckets` forgets an id on this node only
//! (peers keep their entries, and the next sync brings them back).
//!
//! ## What it promises
//!
//! - **Convergence.** Once every message of a change has been delivered (or a link came up and synced) all
//!   nodes hold the same totals. On loopback, batches reach peers within a few ms of the batch interval; a
//!   healed split converges within the reconnect delay plus one sync (a split longer than the peer timeout
//!   drops the links; they are redialed within 250 ms of a failed dial, and a connect is given up after
//!   500 ms, so it heals within a second).
//! - **Over-admission.** With a limit of `L` per window and hits spread over nodes, the cluster admits at most
//!   `L` plus what arrives at other nodes during one replication lag. During a split, each side counts on its
//!   own: at most `L` per side per window ([`PartitionMode::CountLocally`], the default). With
//!   [`PartitionMode::SplitLimit`] each node caps its own hits at `L / expected nodes` while peers are missing,
//!   so the whole cluster admits at most about `L` however it is split.
//!
//! ## Wiring it into a server
//!
//! ```
//! use floodgate::{Policy, Store, SystemClock};
//! use floodgate_cluster::{Cluster, ClusterConfig};
//! use std::sync::Arc;
//! use std::time::Duration;
//!
//! # tokio::runtime::Builder::new_current_thread().enable_all().build()?.block_on(async {
//! // --cluster 127.0.0.1:0 --cluster-secret-file ... --node-id edge-1 (and --peer / --peer-dns)
//! let mut config = ClusterConfig::new("127.0.0.1:0".parse()?, b"secret from the file".to_vec());
//! config.node_id = Some("edge-1".into());
//! let (store, handle) = Cluster::start(config, Arc::new(SystemClock::new())).await?;
//! let policy = Policy::fixed_window(100, Duration::from_secs(60))?;
//! assert!(store.hit(b"user:42", &policy, 1).await?.allowed);
//! // GET /v1/cluster
//! let body = serde_json::to_string(&handle.status())?;
//! assert_eq!(body, r#"{"node_id":"edge-1","peers":[]}"#);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! # })?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#![warn(missing_docs)]
#![deny(clippy::unwrap_used)]
#![forbid(unsafe_code)]

mod counter;
mod dns;
pub mod frame;
mod node;
mod store;
pub mod tls;

pub use counter::{ClusterStoreError, EntryKey, GCounter, check_policy};
pub use node::{
    Cluster, ClusterConfig, ClusterError, ClusterHandle, ClusterStats, ClusterStatus, PartitionMode, PeerState,
    PeerStatus,
};
pub use store::{ClusterStore, ClusterStoreBuilder, KeyCounts, MergeOutcome, StoreLimits, random_node_id};
pub use tls::{ClusterTls, ClusterTlsError};
