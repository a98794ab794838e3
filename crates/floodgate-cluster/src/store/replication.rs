//! What replication reads from and writes to the store: the keys this node changed, a full snapshot for a
//! link that comes up, merging a peer's entries, and dropping windows that no longer matter.

use std::collections::HashSet;
use std::hash::BuildHasher;
use std::sync::Arc;

use floodgate::memory::{ByteKey, ToKey};
use smallvec::SmallVec;

use super::windows::{Counter, IdEntry, dead, kind_of};
use super::{ClusterStore, Inner, Kind, Table, duration_us};
use crate::counter::EntryKey;

/// One counter as replication sends it: its key and node entries (node id, count).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyCounts {
    /// Which counter.
    pub key: EntryKey,
    /// Node id and that node's count.
    pub counts: Vec<(Arc<str>, u64)>,
}

/// What a [`ClusterStore::merge`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MergeOutcome {
    /// Entries that raised a count.
    pub applied: u64,
    /// Entries that changed nothing (duplicates, older copies, windows already over).
    pub unchanged: u64,
    /// Entries refused (bounds, budget, malformed key).
    pub refused: u64,
    /// Whether the merge created a counter the store did not hold.
    pub created: bool,
}

/// A window whose own entry changed, listed once until replication takes it (with the id's hash, so
/// replication need not hash it again).
pub(super) struct Dirty {
    pub(super) id: ByteKey,
    pub(super) hash: u64,
    pub(super) kind: u64,
    pub(super) start: u64,
}

impl ClusterStore {
    /// Takes the keys whose own entry changed since the last call, each once (coalesced), with this node's
    /// current entry: what replication sends.
    pub fn take_dirty(&self) -> Vec<KeyCounts> {
        let own = self.node_id();
        let mut out = Vec::new();
        for shard in self.inner.shards.iter() {
            let mut table = shard.table.lock();
            let Table { map, dirty, kinds } = &mut *table;
            for d in std::mem::take(dirty) {
                let Some(c) = map.find_mut(d.hash, |e| d.id[..].is_key(&e.id)).and_then(|e| e.counter_mut(d.kind))
                else {
                    // Deleted since: nothing to send.
                    continue;
                };
                if let Some(i) = c.slot(d.start) {
                    c.set_dirty(i, false);
                }
                let count = c.own(d.start);
                // A window dropped since has nothing to send.
                if let (true, Some(k)) = (count > 0, kinds.get(&d.kind)) {
                    out.push(KeyCounts {
                        key: EntryKey {
                            policy: k.policy.clone(),
                            window_us: k.window_us,
                            start: d.start,
                            id: d.id[..].into(),
                        },
                        counts: vec![(own.clone(), count)],
                    });
                }
            }
        }
        out
    }

    /// Every live counter with every node's entry: what a node sends a peer when their link comes up.
    pub fn snapshot(&self) -> Vec<KeyCounts> {
        let now = self.inner.clock.now().as_micros();
        let grace = self.inner.grace_us;
        let names = self.inner.nodes.read().names.clone();
        let mut out = Vec::new();
        for shard in self.inner.shards.iter() {
            let table = shard.table.lock();
            for e in table.map.iter() {
                for c in e.counters() {
                    let Some(k) = table.kinds.get(&c.kind()) else { continue };
                    for start in c.starts() {
                        if dead(start, k.window_us, now, grace) || c.total(start) == 0 {
                            continue;
                        }
                        out.push(KeyCounts {
                            key: EntryKey {
                                policy: k.policy.clone(),
                                window_us: k.window_us,
                                start,
                                id: e.id[..].into(),
                            },
                            counts: c
                                .entries(start)
                                .filter_map(|(n, count)| names.get(n as usize).map(|name| (name.clone(), count)))
                                .collect(),
                        });
                    }
                }
            }
        }
        out
    }

    /// Merges a peer's entries for one counter (per-node maximum). `may_create` is asked before a counter the
    /// store does not hold is created (the per-peer budget); when it says no, the entries are refused.
    pub fn merge(&self, entry: &KeyCounts, may_create: impl FnOnce() -> bool) -> MergeOutcome {
        let inner = &*self.inner;
        let mut out = MergeOutcome::default();
        let n = entry.counts.len() as u64;
        let key = &entry.key;
        let now = inner.clock.now().as_micros();
        let (w, grace) = (key.window_us, inner.grace_us);
        if !inner.acceptable(entry, now) {
            out.refused = n;
            return out;
        }
        if dead(key.start, w, now, grace) {
            out.unchanged = n;
            return out;
        }
        // Node ids to indices (learning new ones within the bound).
        let mut nodes: SmallVec<[(u32, u64); 4]> = SmallVec::new();
        for (name, count) in &entry.counts {
            match inner.node_index(name) {
                Some(i) => nodes.push((i, *count)),
                None => out.refused += 1,
            }
        }
        let kind = kind_of(policy_fingerprint(&key.policy), w);
        let hash = inner.hasher.hash_one(&*key.id);
        let mut table = inner.shard(hash).table.lock();
        let Table { map, kinds, .. } = &mut *table;
        let exists = map.find(hash, |e| key.id[..].is_key(&e.id)).is_some_and(|e| e.counter(kind).is_some());
        if !exists {
            if nodes.iter().all(|&(_, c)| c == 0) {
                out.unchanged += nodes.len() as u64;
                return out;
            }
            if !may_create() {
                out.refused += nodes.len() as u64;
                return out;
            }
            out.created = true;
            kinds.entry(kind).or_insert_with(|| Kind { policy: key.policy.clone(), window_us: w });
        }
        let counter = match map.find_mut(hash, |e| key.id[..].is_key(&e.id)) {
            Some(e) => match e.counter_mut(kind).is_some() {
                true => e.counter_mut(kind),
                false => Some(e.push(Counter::new(kind, now))),
            },
            None => {
                let e = IdEntry::new(key.id[..].to_key(), Counter::new(kind, now));
                Some(&mut map.insert_unique(hash, e, |e| inner.hasher.hash_one(&*e.id)).into_mut().first)
            }
        };
        let Some(counter) = counter else { return out };
        let mut changed = false;
        let max_nodes = inner.limits.max_nodes_per_key;
        for (i, c) in nodes {
            if counter.get(key.start, i) == 0 && counter.nodes(key.start) >= max_nodes {
                out.refused += 1;
            } else if counter.raise(key.start, i, c, |s| dead(s, w, now, grace)) {
                out.applied += 1;
                changed = true;
            } else {
                out.unchanged += 1;
            }
        }
        if changed {
            counter.updated = counter.updated.max(now);
        }
        out
    }

    /// Drops windows whose counts no longer matter (their window, and the sliding window after it, ended more
    /// than the grace period ago) and counters left empty; returns how many windows were dropped.
    pub fn sweep(&self) -> usize {
        let now = self.inner.clock.now().as_micros();
        let grace = self.inner.grace_us;
        let mut dropped = 0;
        for shard in self.inner.shards.iter() {
            let mut table = shard.table.lock();
            let Table { map, kinds, .. } = &mut *table;
            map.retain(|e| {
                e.retain(|c| {
                    let w = kinds.get(&c.kind()).map_or(0, |k| k.window_us);
                    dropped += c.drop_dead(|s| dead(s, w, now, grace));
                    !c.is_empty()
                })
            });
            // Forget the names of kinds no counter has any more.
            if !kinds.is_empty() {
                let mut used: HashSet<u64> = HashSet::new();
                for e in map.iter() {
                    used.extend(e.counters().map(|c| c.kind()));
                }
                kinds.retain(|k, _| used.contains(k));
            }
        }
        dropped
    }
}

impl Inner {
    /// Whether a peer's entry is within bounds: a sane window, an id and a policy key not too long, not too
    /// many nodes, and a window that does not start too far in the future.
    fn acceptable(&self, entry: &KeyCounts, now: u64) -> bool {
        let (key, limits) = (&entry.key, &self.limits);
        let w = key.window_us;
        let max_window = floodgate::Policy::MAX_WINDOW.as_micros() as u64;
        let valid = w > 0
            && w <= max_window
            && key.start.is_multiple_of(w)
            && key.id.len() <= limits.max_id_len
            && key.policy.len() <= 1024
            && entry.counts.len() <= limits.max_nodes_per_key;
        let horizon = (now - now % w.max(1)).saturating_add(w).saturating_add(duration_us(limits.max_future));
        valid && key.start <= horizon
    }

    /// The index of node `name`, learned if new (within [`StoreLimits::max_nodes`](super::StoreLimits)).
    pub(super) fn node_index(&self, name: &Arc<str>) -> Option<u32> {
        if let Some(&i) = self.nodes.read().index.get(name) {
            return Some(i);
        }
        let mut nodes = self.nodes.write();
        if let Some(&i) = nodes.index.get(name) {
            return Some(i);
        }
        if nodes.names.len() >= self.limits.max_nodes || name.is_empty() {
            return None;
        }
        let i = nodes.names.len() as u32;
        nodes.names.push(name.clone());
        nodes.index.insert(name.clone(), i);
        Some(i)
    }
}

/// The fingerprint of a policy key received from a peer: the same as [`floodgate::Policy::fingerprint`] would
/// give.
fn policy_fingerprint(key: &str) -> u64 {
    foldhash::fast::FixedState::with_seed(0x666c_6f6f_6467_6174).hash_one(key)
}

#[cfg(test)]
mod tests {
    use super::*;
    use floodgate::Policy;
    use std::time::Duration;

    #[test]
    fn a_peer_policy_key_has_the_fingerprint_of_the_policy() {
        let p = Policy::fixed_window(5, Duration::from_secs(1)).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(policy_fingerprint(p.key()), p.fingerprint());
    }
}
