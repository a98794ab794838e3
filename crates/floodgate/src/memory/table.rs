//! A shard's keys: an [`Index`] of 4-byte positions into a dense vector of entries.
//!
//! A hash table is between 37.5 % and 75 % full, so an entry kept in the table would pay for about as much
//! empty room again. Here the table holds only a `u32` per slot and the entries sit side by side in a vector,
//! whose unused capacity is never touched and so never resident. A key costs its 80-byte entry (a
//! [`ByteKey`](super::ByteKey) and one bucket) and 5.3 to 10.7 bytes of index. A lookup loads the index's
//! slots (one cache line) and then the entry (`floodgate-bench/benches/floor.rs`, `bare-slab`).
//!
//! A key with more than one policy keeps its first bucket in its entry and the others in `extras`, found
//! through the first bucket's `tail`.

use slab::Slab;

use super::buckets::Bucket;
use super::index::Index;
use crate::algorithm::State;

/// A key and its first bucket.
pub(super) struct Entry<K> {
    pub(super) key: K,
    pub(super) first: Bucket,
}

/// The keys of one shard.
pub(super) struct Table<K> {
    index: Index,
    entries: Vec<Entry<K>>,
    /// The second and later buckets of keys with several policies.
    extras: Slab<Vec<Bucket>>,
}

impl<K> Default for Table<K> {
    fn default() -> Self {
        Table { index: Index::default(), entries: Vec::new(), extras: Slab::new() }
    }
}

impl<K> Table<K> {
    /// How many keys.
    pub(super) fn len(&self) -> usize {
        self.entries.len()
    }

    /// Where the key that `is` recognises is, among the keys whose hash is `hash`.
    #[inline(always)]
    pub(super) fn find(&self, hash: u64, is: impl Fn(&K) -> bool) -> Option<usize> {
        let entries = &self.entries;
        self.index.find(hash, |i| entries.get(i).is_some_and(|e| is(&e.key)))
    }

    /// The bucket of policy `fp` of the key at `at`: the first one in line, the others out of line.
    #[inline(always)]
    pub(super) fn bucket_mut(&mut self, at: usize, fp: u64) -> Option<&mut Bucket> {
        let first = &mut self.entries.get_mut(at)?.first;
        if first.policy == fp {
            return Some(first);
        }
        let tail = first.tail;
        Self::extra_mut(&mut self.extras, tail, fp)
    }

    #[cold]
    #[inline(never)]
    fn extra_mut(extras: &mut Slab<Vec<Bucket>>, tail: u32, fp: u64) -> Option<&mut Bucket> {
        let rest = extras.get_mut((tail as usize).checked_sub(1)?)?;
        rest.iter_mut().find(|b| b.policy == fp)
    }

    /// The bucket of policy `fp` of the key at `at`.
    pub(super) fn bucket(&self, at: usize, fp: u64) -> Option<&Bucket> {
        self.buckets(at).find(|b| b.policy == fp)
    }

    /// Every bucket of the key at `at`, the first one first.
    pub(super) fn buckets(&self, at: usize) -> impl Iterator<Item = &Bucket> {
        let first = self.entries.get(at).map(|e| &e.first);
        let rest = first.and_then(|f| self.rest(f.tail)).unwrap_or(&[]);
        first.into_iter().chain(rest)
    }

    fn rest(&self, tail: u32) -> Option<&[Bucket]> {
        self.extras.get((tail as usize).checked_sub(1)?).map(Vec::as_slice)
    }

    /// Adds a new key (one the table does not hold) with its first bucket.
    pub(super) fn insert(&mut self, hash: u64, key: K, mut first: Bucket, hash_of: impl Fn(&K) -> u64) {
        first.tail = 0;
        let at = self.entries.len();
        self.entries.push(Entry { key, first });
        let entries = &self.entries;
        self.index.insert(hash, at, |i| entries.get(i).map_or(0, |e| hash_of(&e.key)));
    }

    /// Adds a bucket to the key at `at` (of a policy it has none of yet).
    pub(super) fn push_bucket(&mut self, at: usize, mut bucket: Bucket) {
        bucket.tail = 0;
        let Some(first) = self.entries.get_mut(at).map(|e| &mut e.first) else { return };
        match (first.tail as usize).checked_sub(1).and_then(|i| self.extras.get_mut(i)) {
            Some(rest) => rest.push(bucket),
            None => first.tail = self.extras.insert(vec![bucket]) as u32 + 1,
        }
    }

    /// Removes the key at `at` and returns it with its buckets. The last entry moves into its place.
    pub(super) fn remove(&mut self, at: usize, hash_of: impl Fn(&K) -> u64) -> Option<(K, Vec<Bucket>)> {
        let last = self.entries.len().checked_sub(1)?;
        let hash = hash_of(&self.entries.get(at)?.key);
        let entries = &self.entries;
        self.index.remove(hash, at, |i| entries.get(i).map_or(0, |e| hash_of(&e.key)));
        let Entry { key, first } = self.entries.swap_remove(at);
        if at != last
            && let Some(moved) = self.entries.get(at)
        {
            self.index.repoint(hash_of(&moved.key), last, at);
        }
        let mut buckets = match (first.tail as usize).checked_sub(1) {
            Some(i) if self.extras.contains(i) => self.extras.remove(i),
            _ => Vec::new(),
        };
        buckets.insert(0, first);
        Some((key, buckets))
    }

    /// Keeps the buckets `keep` says to keep and hands every other one to `removed`, with its key; a key left
    /// with no bucket is removed.
    pub(super) fn retain(
        &mut self,
        mut keep: impl FnMut(&K, &Bucket) -> bool,
        mut removed: impl FnMut(&K, Bucket),
        hash_of: impl Fn(&K) -> u64,
    ) {
        let mut at = 0;
        while at < self.entries.len() {
            if self.retain_at(at, &mut keep, &mut removed) {
                at += 1;
            } else {
                // The last entry moved here: look at it next.
                self.remove(at, &hash_of);
            }
        }
    }

    /// [`retain`](Self::retain) on one key; `false` when it has no bucket left (and must be removed).
    fn retain_at(
        &mut self,
        at: usize,
        keep: &mut impl FnMut(&K, &Bucket) -> bool,
        removed: &mut impl FnMut(&K, Bucket),
    ) -> bool {
        let Some(Entry { key, first }) = self.entries.get_mut(at) else { return false };
        let slot = (first.tail as usize).checked_sub(1);
        if let Some(rest) = slot.and_then(|i| self.extras.get_mut(i)) {
            let mut i = 0;
            while i < rest.len() {
                if keep(key, &rest[i]) {
                    i += 1;
                } else {
                    // Order among a key's buckets does not matter.
                    removed(key, rest.swap_remove(i));
                }
            }
        }
        let mut kept = true;
        if !keep(key, first) {
            let tail = first.tail;
            match slot.and_then(|i| self.extras.get_mut(i)).and_then(Vec::pop) {
                Some(mut next) => {
                    next.tail = tail;
                    removed(key, std::mem::replace(first, next));
                }
                None => {
                    removed(key, std::mem::replace(first, Bucket::new(0, State::Empty, 0, 0)));
                    kept = false;
                }
            }
        }
        if let Some(i) = slot
            && self.extras.get(i).is_some_and(Vec::is_empty)
        {
            self.extras.remove(i);
            first.tail = 0;
        }
        kept
    }

    /// Removes the bucket of policy `fp` of the key at `at`, and the key if it was its last.
    pub(super) fn remove_bucket(&mut self, at: usize, fp: u64, hash_of: impl Fn(&K) -> u64) {
        if !self.retain_at(at, &mut |_, b| b.policy != fp, &mut |_, _| {}) {
            self.remove(at, hash_of);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;
    use std::hash::BuildHasher;

    #[test]
    fn an_entry_with_a_byte_key_is_80_bytes() {
        assert_eq!(std::mem::size_of::<Entry<super::super::ByteKey>>(), 80);
    }

    #[derive(Clone, Debug)]
    enum Step {
        Add(u8, u8),
        Remove(u8),
        DropPolicy(u8),
        DropBucket(u8, u8),
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            4 => (0..24u8, 0..4u8).prop_map(|(k, p)| Step::Add(k, p)),
            1 => (0..24u8).prop_map(Step::Remove),
            1 => (0..4u8).prop_map(Step::DropPolicy),
            1 => (0..24u8, 0..4u8).prop_map(|(k, p)| Step::DropBucket(k, p)),
        ]
    }

    proptest! {
        /// The table holds what a map of keys to their policies holds, through adds, removals and retains that
        /// move entries and buckets around.
        #[test]
        fn the_table_is_a_map_of_keys_to_buckets(steps in prop::collection::vec(step(), 1..200)) {
            let hasher = foldhash::fast::FixedState::with_seed(3);
            // Few hash values, so keys share them and lookups must compare keys.
            let hash_of = |k: &u32| hasher.hash_one(k) % 5;
            let mut table: Table<u32> = Table::default();
            let mut model: BTreeMap<u32, BTreeMap<u64, u64>> = BTreeMap::new();
            let mut n = 0;
            for s in steps {
                n += 1;
                match s {
                    Step::Add(k, p) => {
                        let (k, p) = (u32::from(k), u64::from(p));
                        let h = hash_of(&k);
                        match table.find(h, |x| *x == k) {
                            Some(at) => match table.bucket_mut(at, p) {
                                Some(b) => b.expires = n,
                                None => table.push_bucket(at, Bucket::new(p, State::Empty, n, 0)),
                            },
                            None => table.insert(h, k, Bucket::new(p, State::Empty, n, 0), hash_of),
                        }
                        model.entry(k).or_default().insert(p, n);
                    }
                    Step::Remove(k) => {
                        let k = u32::from(k);
                        let got = table.find(hash_of(&k), |x| *x == k).and_then(|at| table.remove(at, hash_of));
                        let want = model.remove(&k);
                        prop_assert_eq!(got.map(|(key, b)| (key, b.len())), want.map(|b| (k, b.len())));
                    }
                    Step::DropPolicy(p) => {
                        let mut gone = 0;
                        table.retain(|_, b| b.policy != u64::from(p), |_, _| gone += 1, hash_of);
                        let before: usize = model.values().map(BTreeMap::len).sum();
                        for b in model.values_mut() {
                            b.remove(&u64::from(p));
                        }
                        model.retain(|_, b| !b.is_empty());
                        prop_assert_eq!(gone, before - model.values().map(BTreeMap::len).sum::<usize>());
                    }
                    Step::DropBucket(k, p) => {
                        let (k, p) = (u32::from(k), u64::from(p));
                        if let Some(at) = table.find(hash_of(&k), |x| *x == k) {
                            table.remove_bucket(at, p, hash_of);
                        }
                        if let Some(b) = model.get_mut(&k) {
                            b.remove(&p);
                            if b.is_empty() {
                                model.remove(&k);
                            }
                        }
                    }
                }
                prop_assert_eq!(table.len(), model.len());
                for (k, policies) in &model {
                    let at = table.find(hash_of(k), |x| x == k);
                    prop_assert!(at.is_some(), "key {} lost", k);
                    let at = at.unwrap_or_default();
                    let got: BTreeMap<u64, u64> = table.buckets(at).map(|b| (b.policy, b.expires)).collect();
                    prop_assert_eq!(&got, policies);
                    prop_assert_eq!(table.buckets(at).count(), policies.len());
                }
                prop_assert_eq!(table.extras.len(), model.values().filter(|b| b.len() > 1).count());
            }
        }
    }
}
