//! The pure part: G-Counters keyed by (policy, id, epoch-aligned window start), and which policies they can
//! decide. No I/O, no clock, no locks.

use std::sync::Arc;

use floodgate::{Algorithm, Policy, StoreError};
use smallvec::SmallVec;

/// Why the cluster store refused a call.
///
/// ```
/// use floodgate::{Policy, StoreError};
/// use floodgate_cluster::{ClusterStoreError, check_policy};
/// use std::time::Duration;
///
/// let gcra = Policy::gcra(10, Duration::from_secs(1))?;
/// let err = check_policy(&gcra).unwrap_err();
/// assert!(matches!(err, ClusterStoreError::UnsupportedAlgorithm(_)));
/// assert!(matches!(StoreError::from(err), StoreError::Backend(_)));
/// # Ok::<(), floodgate::PolicyError>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ClusterStoreError {
    /// Only window counters can be replicated: see the crate docs for why.
    #[error(
        "the cluster store does not support the {0} algorithm: only fixed_window and sliding_window keep per-node \
         counters that only grow, which is what lets nodes merge them by taking the maximum"
    )]
    UnsupportedAlgorithm(Algorithm),
    /// `set` asked for fewer units than are counted: a G-Counter never goes down.
    #[error("the cluster store cannot lower a count (from {current} to {requested}): its counters only grow")]
    CannotLower {
        /// Units counted now in the window.
        current: u64,
        /// Units asked for.
        requested: u64,
    },
}

impl From<ClusterStoreError> for StoreError {
    fn from(e: ClusterStoreError) -> Self {
        StoreError::Backend(e.to_string())
    }
}

/// Checks that the cluster store can decide `policy` (a fixed or sliding window), as `floodgate check` should.
///
/// ```
/// use floodgate::Policy;
/// use std::time::Duration;
/// assert!(floodgate_cluster::check_policy(&Policy::sliding_window(5, Duration::from_secs(1))?).is_ok());
/// # Ok::<(), floodgate::PolicyError>(())
/// ```
pub fn check_policy(policy: &Policy) -> Result<(), ClusterStoreError> {
    match policy.algorithm() {
        Algorithm::FixedWindow | Algorithm::SlidingWindow => Ok(()),
        other => Err(ClusterStoreError::UnsupportedAlgorithm(other)),
    }
}

/// Which counter an entry belongs to: a policy's key, its window length, the window's epoch-aligned start, and
/// the id. Two nodes agree on it without talking, since windows align to the epoch.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct EntryKey {
    /// The policy's [`key`](Policy::key): its name, or its canonical definition.
    pub policy: Arc<str>,
    /// The window length, in microseconds.
    pub window_us: u64,
    /// The window's start, in microseconds since the epoch (a multiple of `window_us`).
    pub start: u64,
    /// The id.
    pub id: Arc<[u8]>,
}

/// A G-Counter: one count per node, merged by per-node maximum; its value is the sum.
///
/// Merging is commutative, associative and idempotent, so any order of deliveries, with losses made good later
/// and duplicates, converges to the same value.
///
/// ```
/// use floodgate_cluster::GCounter;
///
/// let (mut a, mut b) = (GCounter::default(), GCounter::default());
/// a.raise(0, 3);
/// b.raise(1, 4);
/// b.raise(0, 2); // an older copy of node 0's count
/// a.merge(&b);
/// a.merge(&b);
/// assert_eq!((a.get(0), a.total()), (3, 7));
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GCounter {
    entries: SmallVec<[(u32, u64); 2]>,
}

impl GCounter {
    /// The count of node `node`.
    #[inline]
    pub fn get(&self, node: u32) -> u64 {
        self.entries.iter().find(|e| e.0 == node).map_or(0, |e| e.1)
    }

    /// The sum of every node's count (saturating).
    #[inline]
    pub fn total(&self) -> u64 {
        self.entries.iter().fold(0u64, |t, e| t.saturating_add(e.1))
    }

    /// How many nodes have an entry.
    pub fn nodes(&self) -> usize {
        self.entries.len()
    }

    /// The entries, node by node.
    pub fn entries(&self) -> impl Iterator<Item = (u32, u64)> + '_ {
        self.entries.iter().copied()
    }

    /// Raises node `node`'s count to `count` if it is higher; returns whether it changed.
    #[inline]
    pub fn raise(&mut self, node: u32, count: u64) -> bool {
        match self.entries.iter_mut().find(|e| e.0 == node) {
            Some(e) if e.1 >= count => false,
            Some(e) => {
                e.1 = count;
                true
            }
            None if count == 0 => false,
            None => {
                self.entries.push((node, count));
                true
            }
        }
    }

    /// Adds `delta` to node `node`'s count (saturating): what a node does to its own entry.
    #[inline]
    pub fn add(&mut self, node: u32, delta: u64) {
        match self.entries.iter_mut().find(|e| e.0 == node) {
            Some(e) => e.1 = e.1.saturating_add(delta),
            None => self.entries.push((node, delta)),
        }
    }

    /// Merges `other` in: per-node maximum.
    pub fn merge(&mut self, other: &GCounter) {
        for &(n, c) in &other.entries {
            self.raise(n, c);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Any order and any duplication of the same merges gives the same counter.
        #[test]
        fn merges_converge_whatever_the_order(
            entries in prop::collection::vec((0u32..5, 0u64..1_000), 0..30),
            order in prop::collection::vec(any::<prop::sample::Index>(), 0..60),
        ) {
            let mut reference = GCounter::default();
            for &(n, c) in &entries {
                reference.raise(n, c);
            }
            let mut shuffled = GCounter::default();
            for i in &order {
                if !entries.is_empty() {
                    let (n, c) = entries[i.index(entries.len())];
                    shuffled.raise(n, c);
                }
            }
            // Then every entry once, in reverse: what a later full sync delivers.
            for &(n, c) in entries.iter().rev() {
                shuffled.raise(n, c);
            }
            prop_assert_eq!(reference.total(), shuffled.total());
            for n in 0..5 {
                prop_assert_eq!(reference.get(n), shuffled.get(n));
            }
        }
    }

    #[test]
    fn only_window_algorithms_are_supported() {
        for a in Algorithm::ALL {
            let p = Policy::new(a, 5, std::time::Duration::from_secs(1)).unwrap_or_else(|e| panic!("{e}"));
            let ok = matches!(a, Algorithm::FixedWindow | Algorithm::SlidingWindow);
            assert_eq!(check_policy(&p).is_ok(), ok, "{a}");
        }
    }
}
