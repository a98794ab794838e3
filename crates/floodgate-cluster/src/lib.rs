//! # floodgate-cluster
//!
//! One limit across many nodes with no central store.
//!
//! Supported algorithms: fixed window and sliding window only; see [`check_policy`].

#![warn(missing_docs)]
#![deny(clippy::unwrap_used)]
#![forbid(unsafe_code)]

mod counter;
mod dns;
pub mod frame;
mod node;
mod store;

pub use counter::{ClusterStoreError, EntryKey, GCounter, check_policy};
pub use node::{
    Cluster, ClusterConfig, ClusterError, ClusterHandle, ClusterStats, ClusterStatus, PeerState, PeerStatus,
};
pub use store::{ClusterStore, ClusterStoreBuilder, KeyCounts, MergeOutcome, StoreLimits, random_node_id};
