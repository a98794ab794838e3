//! # floodgate-cluster
//!
//! One limit across many nodes with no central store.
//!
//! Supported algorithms: fixed window and sliding window only; see [`check_policy`].

#![warn(missing_docs)]
#![deny(clippy::unwrap_used)]
#![forbid(unsafe_code)]

mod counter;
pub mod frame;
mod store;

pub use counter::{ClusterStoreError, EntryKey, GCounter, check_policy};
pub use store::{ClusterStore, ClusterStoreBuilder, KeyCounts, MergeOutcome, StoreLimits, random_node_id};
