//! A shard's index: where, in the shard's dense vector of entries, the key with a given hash is.
//!
//! Open addressing with linear probing over `u32` slots, at most three quarters full. A slot is 0 when empty;
//! otherwise its low `bits` bits hold the entry's position plus one, and the bits above them hold the same bits
//! of the key's hash (a tag that settles most mismatches without loading the entry). A lookup loads the slots
//! from the key's home onwards (one cache line holds 16 of them) and then the entry: one dependent miss fewer
//! than a `hashbrown::HashTable<u32>`, whose control bytes and values sit in two places
//! (`floodgate-bench/benches/floor.rs`, `BENCHMARKS.md`). A slot costs 4 bytes: 5.3 to 10.7 bytes per key.

/// Positions of a shard's entries by hash (see the module's docs).
#[derive(Default)]
pub(super) struct Index {
    slots: Box<[u32]>,
    /// `slots.len()` is `1 << bits` (or 0, with no slot yet).
    bits: u32,
    len: usize,
}

/// The fewest slots of a table that holds anything: one cache line.
const MIN_BITS: u32 = 4;

/// The low `bits` bits set.
#[inline(always)]
fn low(bits: u32) -> u32 {
    u32::MAX.checked_shr(32 - bits).unwrap_or(0)
}

/// The position an occupied slot `s` holds, in a table whose positions take the `low` bits.
#[inline(always)]
fn position(s: u32, low: u32) -> usize {
    (s & low) as usize - 1
}

impl Index {
    /// The tag of `hash` in a table of `1 << bits` slots: the high bits of the hash's upper half (the lower
    /// bits pick the home slot, and the middle ones the shard).
    #[inline(always)]
    fn tag(hash: u64, bits: u32) -> u32 {
        ((hash >> 32) as u32) & !low(bits)
    }

    /// The position of the entry whose hash is `hash` and that `is` recognises.
    #[inline(always)]
    pub(super) fn find(&self, hash: u64, is: impl Fn(usize) -> bool) -> Option<usize> {
        let (low, tag) = (low(self.bits), Self::tag(hash, self.bits));
        let i = self.probe(hash, |s| s & !low == tag && is(position(s, low)))?;
        Some(position(self.slots[i], low))
    }

    /// The first slot from `hash`'s home onwards that `hit` accepts, before an empty one.
    #[inline(always)]
    fn probe(&self, hash: u64, hit: impl Fn(u32) -> bool) -> Option<usize> {
        let slots = &*self.slots;
        let mask = slots.len().checked_sub(1)?;
        let mut i = hash as usize & mask;
        loop {
            // Never full, so an empty slot ends every probe.
            let s = *slots.get(i)?;
            if s == 0 {
                return None;
            }
            if hit(s) {
                return Some(i);
            }
            i = (i + 1) & mask;
        }
    }

    /// Adds the entry at position `at`, whose hash is `hash`. `hash_at` gives the hash of the entry at a
    /// position (to move the others when the table grows). A shard holds fewer than 3 · 2³⁰ entries (240 GB of them).
    pub(super) fn insert(&mut self, hash: u64, at: usize, hash_at: impl Fn(usize) -> u64) {
        if (self.len + 1) * 4 > self.slots.len() * 3 {
            self.grow(&hash_at);
        }
        Self::place(&mut self.slots, self.bits, hash, at);
        self.len += 1;
    }

    /// Writes `at` into the first empty slot from `hash`'s home.
    fn place(slots: &mut [u32], bits: u32, hash: u64, at: usize) {
        let mask = slots.len() - 1;
        debug_assert!(at < mask, "a position beyond the table");
        let value = Self::tag(hash, bits) | (at as u32 + 1);
        let mut i = hash as usize & mask;
        while slots[i] != 0 {
            i = (i + 1) & mask;
        }
        slots[i] = value;
    }

    /// Doubles the slots and places every entry again.
    #[cold]
    #[inline(never)]
    fn grow(&mut self, hash_at: &impl Fn(usize) -> u64) {
        let bits = (self.bits + 1).max(MIN_BITS);
        let mut slots = vec![0u32; 1 << bits].into_boxed_slice();
        let old = low(self.bits);
        for &s in self.slots.iter().filter(|&&s| s != 0) {
            let at = position(s, old);
            Self::place(&mut slots, bits, hash_at(at), at);
        }
        self.slots = slots;
        self.bits = bits;
    }

    /// The slot holding position `at` (whose entry's hash is `hash`).
    fn slot_of(&self, hash: u64, at: usize) -> Option<usize> {
        let low = low(self.bits);
        self.probe(hash, |s| position(s, low) == at)
    }

    /// Removes position `at` (whose entry's hash is `hash`); `hash_at` gives the hash of the entry at a
    /// position, to move the slots after it back towards their homes (so no probe stops short).
    pub(super) fn remove(&mut self, hash: u64, at: usize, hash_at: impl Fn(usize) -> u64) {
        let Some(mut hole) = self.slot_of(hash, at) else { return };
        let mask = self.slots.len() - 1;
        let low = low(self.bits);
        let mut j = (hole + 1) & mask;
        loop {
            let s = self.slots[j];
            if s == 0 {
                break;
            }
            let home = hash_at(position(s, low)) as usize & mask;
            // The slot may fill the hole unless its home lies after the hole (cyclically, up to j).
            if j.wrapping_sub(home) & mask >= j.wrapping_sub(hole) & mask {
                self.slots[hole] = s;
                hole = j;
            }
            j = (j + 1) & mask;
        }
        self.slots[hole] = 0;
        self.len -= 1;
    }

    /// The entry at position `from` (whose hash is `hash`) moved to `to`.
    pub(super) fn repoint(&mut self, hash: u64, from: usize, to: usize) {
        if let Some(i) = self.slot_of(hash, from) {
            let low = low(self.bits);
            self.slots[i] = (self.slots[i] & !low) | (to as u32 + 1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    #[derive(Clone, Debug)]
    enum Step {
        /// Add a new entry, its hash drawn from few values (so probes cross and wrap).
        Add(u64),
        /// Remove the entry at this position (modulo the count), moving the last one into its place.
        Remove(usize),
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            3 => prop_oneof![0..8u64, any::<u64>()].prop_map(Step::Add),
            1 => any::<usize>().prop_map(Step::Remove),
        ]
    }

    proptest! {
        /// Through adds, removals (a hole filled by the last entry, as the table does) and growth, every
        /// position is found from its hash, and only there.
        #[test]
        fn every_position_is_found_from_its_hash(steps in prop::collection::vec(step(), 1..400)) {
            let mut index = Index::default();
            // The entries: their hashes, by position.
            let mut hashes: Vec<u64> = Vec::new();
            for s in steps {
                match s {
                    Step::Add(h) => {
                        hashes.push(h);
                        index.insert(h, hashes.len() - 1, |at| hashes[at]);
                    }
                    Step::Remove(r) if !hashes.is_empty() => {
                        let at = r % hashes.len();
                        let last = hashes.len() - 1;
                        index.remove(hashes[at], at, |p| hashes[p]);
                        hashes.swap_remove(at);
                        if at != last {
                            index.repoint(hashes[at], last, at);
                        }
                    }
                    Step::Remove(_) => {}
                }
                prop_assert_eq!(index.len, hashes.len());
                prop_assert!(index.len * 4 <= index.slots.len() * 3);
                prop_assert_eq!(index.slots.iter().filter(|&&s| s != 0).count(), hashes.len());
                let mut by_hash: BTreeMap<u64, Vec<usize>> = BTreeMap::new();
                for (at, &h) in hashes.iter().enumerate() {
                    by_hash.entry(h).or_default().push(at);
                }
                for (&h, ats) in &by_hash {
                    for &at in ats {
                        prop_assert_eq!(index.find(h, |p| p == at), Some(at));
                    }
                }
            }
        }
    }

    #[test]
    fn the_empty_index_finds_nothing() {
        let index = Index::default();
        assert_eq!(index.find(7, |_| true), None);
    }

    #[test]
    fn the_tag_and_the_position_share_a_slot() {
        assert_eq!(low(0), 0);
        assert_eq!(low(4), 0xF);
        assert_eq!(low(32), u32::MAX);
        let mut index = Index::default();
        // Two hashes with the same home and different tags: the second is found past the first.
        let (a, b) = (0x8000_0000_0000_0003, 0x4000_0000_0000_0003);
        index.insert(a, 0, |_| a);
        index.insert(b, 1, |p| [a, b][p]);
        assert_eq!(index.find(b, |_| true), Some(1));
        assert_eq!(index.find(a, |_| true), Some(0));
        assert_eq!(index.slots.len(), 16);
    }
}
