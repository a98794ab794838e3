//! How one id's counters are laid out in memory: the hit path reads one 128-byte entry (two cache lines).
//!
//! A counter is one policy at one window length. It keeps its two latest windows *in line* as slots holding
//! this node's count and the sum of the peers' counts, which is all a decision reads. Each peer's own entry,
//! windows that do not fit in the slots, and the id's other counters live out of line, behind one pointer
//! that a single-policy id on a single node never allocates.
//!
//! Everything a hit *writes* (the dirty bits, the time of the last write, this node's count in the latest
//! window) sits in the entry's first cache line, the one the lookup loads, and the latest window is kept in
//! slot 0, so that the usual hit is one short path (`Inner::write_own`) and any other window goes through a
//! cold one. (An A/B on the hit bench found no measurable cost in which line the stores go to, on this
//! machine; keeping the general case out of line is what counted: see `BENCHMARKS.md`.)

use floodgate::memory::ByteKey;
use smallvec::SmallVec;

/// The node index of this node's own entries.
pub(super) const OWN: u32 = 0;

/// Which counter of an id: the policy's fingerprint mixed with the window length (µs), its two lowest bits
/// clear (a counter keeps its dirty bits there). A policy whose window changes under the same name gets a
/// counter of its own, as it got a window list of its own before.
#[inline(always)]
pub(super) fn kind_of(fingerprint: u64, window_us: u64) -> u64 {
    (fingerprint ^ window_us.wrapping_mul(0x9e37_79b9_7f4a_7c15).rotate_left(29)) & !DIRTY
}

/// The low bits of [`Counter::tag`]: bit `i` says slot `i`'s window is listed for replication.
const DIRTY: u64 = 0b11;

/// Whether a window's counts no longer matter: it, and the sliding window after it, ended more than `grace`
/// ago.
#[inline]
pub(super) fn dead(start: u64, window_us: u64, now: u64, grace: u64) -> bool {
    start.saturating_add(window_us.saturating_mul(2)).saturating_add(grace) <= now
}

/// One window held in line: this node's count and the sum of the peers' counts. A slot counting nothing is
/// free (its `start` means nothing); two busy slots never hold the same window.
#[derive(Clone, Copy, Debug, Default)]
#[repr(C)]
pub(super) struct Slot {
    pub(super) start: u64,
    pub(super) own: u64,
    pub(super) others: u64,
}

impl Slot {
    #[inline(always)]
    pub(super) fn total(&self) -> u64 {
        self.own.saturating_add(self.others)
    }

    #[inline(always)]
    fn busy(&self) -> bool {
        (self.own | self.others) != 0
    }
}

/// A count held out of line: a peer's entry (of any window), or this node's entry of a window not in a slot.
#[derive(Clone, Copy, Debug)]
pub(super) struct Far {
    pub(super) start: u64,
    pub(super) node: u32,
    pub(super) count: u64,
}

/// What a counter keeps out of line.
#[derive(Debug, Default)]
pub(super) struct More {
    /// Every peer's entry, and this node's entries of windows not in a slot.
    pub(super) far: Vec<Far>,
    /// The id's other counters (only in the id's first counter).
    pub(super) counters: Vec<Counter>,
}

/// The windows of one id under one policy and window length.
///
/// Laid out in this order (`repr(C)`): after the id's 32 bytes, the tag, the time of the last write, and slot
/// 0's start and own count fill the entry's first cache line; slot 0's peers' sum and the rest are in the
/// second, which a hit only reads.
#[derive(Debug)]
#[repr(C)]
pub(super) struct Counter {
    /// [`kind_of`] the policy's fingerprint and window length, and the dirty bits ([`DIRTY`]).
    tag: u64,
    pub(super) updated: u64,
    /// Slot 0 holds the latest window in line, slot 1 an older one.
    pub(super) slots: [Slot; 2],
    /// The latest window this node counted in (a clock that steps back stands still there).
    pub(super) own_start: u64,
    pub(super) created: u64,
    pub(super) more: Option<Box<More>>,
    /// Whether the last local call was a sliding window (its counts matter for two windows).
    pub(super) sliding: bool,
}

/// An id and its counters: 128 bytes, aligned so that it spans exactly two cache lines.
#[derive(Debug)]
#[repr(C, align(64))]
pub(super) struct IdEntry {
    /// Inline up to 14 bytes, as the memory store keeps its keys.
    pub(super) id: ByteKey,
    pub(super) first: Counter,
}

impl IdEntry {
    pub(super) fn new(id: ByteKey, first: Counter) -> Self {
        IdEntry { id, first }
    }

    /// The counter of `kind`: the first one in line, the others out of line.
    #[inline(always)]
    pub(super) fn counter_mut(&mut self, kind: u64) -> Option<&mut Counter> {
        if self.first.kind() == kind {
            return Some(&mut self.first);
        }
        self.other_mut(kind)
    }

    #[cold]
    #[inline(never)]
    fn other_mut(&mut self, kind: u64) -> Option<&mut Counter> {
        self.first.more.as_mut()?.counters.iter_mut().find(|c| c.kind() == kind)
    }

    /// The counter of `kind`.
    pub(super) fn counter(&self, kind: u64) -> Option<&Counter> {
        self.counters().find(|c| c.kind() == kind)
    }

    /// Every counter, the first one first.
    pub(super) fn counters(&self) -> impl Iterator<Item = &Counter> {
        std::iter::once(&self.first).chain(self.first.more.iter().flat_map(|m| m.counters.iter()))
    }

    /// Adds a counter (of a kind the id has none of yet) and returns it.
    pub(super) fn push(&mut self, c: Counter) -> &mut Counter {
        let counters = &mut self.first.more.get_or_insert_with(Box::default).counters;
        counters.push(c);
        let last = counters.len() - 1;
        &mut counters[last]
    }

    /// Keeps the counters `keep` says to keep (it may change them). Returns `false` when none is left: the
    /// caller drops the entry.
    pub(super) fn retain(&mut self, mut keep: impl FnMut(&mut Counter) -> bool) -> bool {
        if let Some(more) = &mut self.first.more {
            more.counters.retain_mut(&mut keep);
        }
        if !keep(&mut self.first) {
            let Some(mut next) = self.first.more.as_mut().and_then(|m| m.counters.pop()) else {
                return false;
            };
            // The first counter's out-of-line part also holds the other counters: hand them over.
            let others = self.first.more.as_mut().map(|m| std::mem::take(&mut m.counters)).unwrap_or_default();
            if !others.is_empty() {
                next.more.get_or_insert_with(Box::default).counters = others;
            }
            self.first = next;
        }
        self.first.tidy();
        true
    }
}

impl Counter {
    pub(super) fn new(kind: u64, now: u64) -> Self {
        Counter {
            tag: kind & !DIRTY,
            created: now,
            updated: now,
            own_start: 0,
            slots: [Slot::default(); 2],
            sliding: false,
            more: None,
        }
    }

    /// Which policy and window length ([`kind_of`]).
    #[inline(always)]
    pub(super) fn kind(&self) -> u64 {
        self.tag & !DIRTY
    }

    /// Whether slot `i`'s window is listed for replication.
    #[inline(always)]
    pub(super) fn is_dirty(&self, i: usize) -> bool {
        self.tag & (1 << i) != 0
    }

    /// Says whether slot `i`'s window is listed for replication.
    #[inline(always)]
    pub(super) fn set_dirty(&mut self, i: usize, dirty: bool) {
        if dirty {
            self.tag |= 1 << i;
        } else {
            self.tag &= !(1 << i);
        }
    }

    /// The slot holding window `start`.
    #[inline(always)]
    pub(super) fn slot(&self, start: u64) -> Option<usize> {
        (0..2).find(|&i| self.slots[i].start == start && self.slots[i].busy())
    }

    /// Every node's count in window `start`, summed (saturating).
    #[inline(always)]
    pub(super) fn total(&self, start: u64) -> u64 {
        match self.slot(start) {
            Some(i) => self.slots[i].total(),
            None => self.far_total(start, true),
        }
    }

    /// The far counts of window `start` summed: every node's, or the peers' only.
    #[inline(never)]
    fn far_total(&self, start: u64, with_own: bool) -> u64 {
        self.more.as_ref().map_or(0, |m| {
            m.far
                .iter()
                .filter(|f| f.start == start && (with_own || f.node != OWN))
                .fold(0u64, |t, f| t.saturating_add(f.count))
        })
    }

    /// Node `node`'s count in window `start`.
    pub(super) fn get(&self, start: u64, node: u32) -> u64 {
        if node == OWN
            && let Some(i) = self.slot(start)
        {
            return self.slots[i].own;
        }
        self.more
            .as_ref()
            .and_then(|m| m.far.iter().find(|f| f.start == start && f.node == node))
            .map_or(0, |f| f.count)
    }

    /// This node's count in window `start`.
    #[inline]
    pub(super) fn own(&self, start: u64) -> u64 {
        self.get(start, OWN)
    }

    /// How many nodes have an entry in window `start`.
    pub(super) fn nodes(&self, start: u64) -> usize {
        let far = self.more.as_ref().map_or(0, |m| m.far.iter().filter(|f| f.start == start).count());
        far + usize::from(self.slot(start).is_some_and(|i| self.slots[i].own > 0))
    }

    /// Every window that counts something, with its start (slots first, then the far windows).
    pub(super) fn starts(&self) -> SmallVec<[u64; 4]> {
        let mut v: SmallVec<[u64; 4]> = self.slots.iter().filter(|s| s.busy()).map(|s| s.start).collect();
        for f in self.more.iter().flat_map(|m| m.far.iter()) {
            if !v.contains(&f.start) {
                v.push(f.start);
            }
        }
        v
    }

    /// Every node's entry in window `start`, this node's first.
    pub(super) fn entries(&self, start: u64) -> impl Iterator<Item = (u32, u64)> + '_ {
        let own = self.own(start);
        let far = self.more.iter().flat_map(move |m| m.far.iter().filter(move |f| f.start == start && f.node != OWN));
        (own > 0).then_some((OWN, own)).into_iter().chain(far.map(|f| (f.node, f.count)))
    }

    /// The slot to write window `start` in, bringing it in line: a slot already holding it, else a free one,
    /// else the one with the oldest window, which moves out of line (or is forgotten if `dead` says its counts
    /// no longer matter). `None` when both slots hold later windows: `start` stays out of line.
    #[inline]
    pub(super) fn claim(&mut self, start: u64, dead: impl Fn(u64) -> bool) -> Option<usize> {
        if let Some(i) = self.slot(start) {
            return Some(i);
        }
        self.claim_new(start, dead)
    }

    #[cold]
    #[inline(never)]
    fn claim_new(&mut self, start: u64, dead: impl Fn(u64) -> bool) -> Option<usize> {
        // Forget the slots whose windows no longer matter, then keep the latest window in slot 0.
        for i in 0..2 {
            if self.slots[i].busy() && dead(self.slots[i].start) {
                let gone = self.slots[i].start;
                if let Some(m) = &mut self.more {
                    m.far.retain(|f| f.start != gone);
                }
                self.slots[i] = Slot::default();
                self.set_dirty(i, false);
            }
        }
        if !self.slots[0].busy() && self.slots[1].busy() {
            self.move_slot(1, 0);
        }
        let [latest, older] = self.slots;
        let i = if !latest.busy() {
            0
        } else if start > latest.start {
            self.evict(1);
            self.move_slot(0, 1);
            0
        } else if !older.busy() {
            1
        } else if start > older.start {
            self.evict(1);
            1
        } else {
            return None;
        };
        let mut own = 0;
        if let Some(m) = &mut self.more
            && let Some(at) = m.far.iter().position(|f| f.start == start && f.node == OWN)
        {
            own = m.far.swap_remove(at).count;
        }
        self.slots[i] = Slot { start, own, others: self.far_total(start, false) };
        self.set_dirty(i, false);
        Some(i)
    }

    /// Moves slot `from` (and its dirty bit) to slot `to`, leaving `from` free.
    fn move_slot(&mut self, from: usize, to: usize) {
        self.slots[to] = std::mem::take(&mut self.slots[from]);
        let dirty = self.is_dirty(from);
        self.set_dirty(to, dirty);
        self.set_dirty(from, false);
    }

    /// Moves slot `i`'s window out of line (its peers' entries are there already), leaving the slot free.
    fn evict(&mut self, i: usize) {
        let old = std::mem::take(&mut self.slots[i]);
        if old.own > 0 {
            self.more.get_or_insert_with(Box::default).far.push(Far { start: old.start, node: OWN, count: old.own });
        }
        self.set_dirty(i, false);
    }

    /// Raises node `node`'s count in window `start` to `count` if it is higher; returns whether it changed.
    pub(super) fn raise(&mut self, start: u64, node: u32, count: u64, dead: impl Fn(u64) -> bool) -> bool {
        if count == 0 {
            return false;
        }
        let slot = self.claim(start, dead);
        if node == OWN
            && let Some(i) = slot
        {
            let s = &mut self.slots[i];
            if s.own >= count {
                return false;
            }
            s.own = count;
            return true;
        }
        let far = &mut self.more.get_or_insert_with(Box::default).far;
        match far.iter_mut().find(|f| f.start == start && f.node == node) {
            Some(f) if f.count >= count => return false,
            Some(f) => f.count = count,
            None => far.push(Far { start, node, count }),
        }
        if let Some(i) = slot {
            self.slots[i].others = self.far_total(start, false);
        }
        true
    }

    /// Adds `delta` to this node's count in window `start` (saturating). Returns the slot it is in, or `None`
    /// when the window stays out of line.
    #[inline]
    pub(super) fn add_own(&mut self, start: u64, delta: u64, dead: impl Fn(u64) -> bool) -> Option<usize> {
        match self.claim(start, dead) {
            Some(i) => {
                let s = &mut self.slots[i];
                s.own = s.own.saturating_add(delta);
                Some(i)
            }
            None => {
                let far = &mut self.more.get_or_insert_with(Box::default).far;
                match far.iter_mut().find(|f| f.start == start && f.node == OWN) {
                    Some(f) => f.count = f.count.saturating_add(delta),
                    None => far.push(Far { start, node: OWN, count: delta }),
                }
                None
            }
        }
    }

    /// Forgets every window `dead` says no longer matters; returns how many. The counter counts nothing
    /// afterwards when [`is_empty`](Self::is_empty).
    pub(super) fn drop_dead(&mut self, dead: impl Fn(u64) -> bool) -> usize {
        let mut gone: SmallVec<[u64; 4]> = SmallVec::new();
        for i in 0..2 {
            let s = self.slots[i];
            if s.busy() && dead(s.start) {
                gone.push(s.start);
                self.slots[i] = Slot::default();
                self.set_dirty(i, false);
            }
        }
        if let Some(m) = &mut self.more {
            m.far.retain(|f| {
                if !dead(f.start) {
                    return true;
                }
                if !gone.contains(&f.start) {
                    gone.push(f.start);
                }
                false
            });
        }
        self.tidy();
        gone.len()
    }

    /// Whether no window counts anything.
    pub(super) fn is_empty(&self) -> bool {
        !self.slots.iter().any(Slot::busy) && self.more.as_ref().is_none_or(|m| m.far.is_empty())
    }

    /// Frees the out-of-line part when it holds nothing.
    fn tidy(&mut self) {
        if self.more.as_ref().is_some_and(|m| m.far.is_empty() && m.counters.is_empty()) {
            self.more = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashMap;

    proptest! {
        /// Whatever windows arrive in whatever order, in line or not, every count reads back as a plain map of
        /// (window, node) → count says, and dropping windows forgets exactly those.
        #[test]
        fn slots_and_far_entries_read_as_a_plain_map(
            ops in prop::collection::vec((0u64..5, 0u32..4, 1u64..20, any::<bool>()), 1..80),
            cut in 0u64..6,
        ) {
            let mut c = Counter::new(1, 0);
            let mut model: HashMap<(u64, u32), u64> = HashMap::new();
            for (w, node, n, add) in ops {
                let start = w * W;
                if add && node == OWN {
                    c.add_own(start, n, never);
                    *model.entry((start, OWN)).or_default() += n;
                } else {
                    let old = model.get(&(start, node)).copied().unwrap_or(0);
                    prop_assert_eq!(c.raise(start, node, n, never), n > old);
                    model.insert((start, node), old.max(n));
                }
                for w in 0..5 {
                    let s = w * W;
                    let want: u64 = model.iter().filter(|((ms, _), _)| *ms == s).map(|(_, v)| v).sum();
                    prop_assert_eq!(c.total(s), want);
                    prop_assert_eq!(c.nodes(s), model.keys().filter(|(ms, _)| *ms == s).count());
                    for node in 0..4 {
                        prop_assert_eq!(c.get(s, node), model.get(&(s, node)).copied().unwrap_or(0));
                    }
                }
            }
            c.drop_dead(|s| s < cut * W);
            model.retain(|(s, _), _| *s >= cut * W);
            let mut starts: Vec<u64> = c.starts().to_vec();
            starts.sort_unstable();
            let mut want: Vec<u64> = model.keys().map(|(s, _)| *s).collect();
            want.sort_unstable();
            want.dedup();
            prop_assert_eq!(starts, want);
            for (&(s, node), &v) in &model {
                prop_assert_eq!(c.get(s, node), v);
            }
        }
    }

    const W: u64 = 10;
    fn never(_: u64) -> bool {
        false
    }

    #[test]
    fn an_entry_is_two_cache_lines() {
        assert_eq!(std::mem::size_of::<IdEntry>(), 128);
        assert_eq!(std::mem::align_of::<IdEntry>(), 64);
        // What a hit writes is in the first line.
        let first = std::mem::offset_of!(IdEntry, first);
        let own0 = first + std::mem::offset_of!(Counter, slots) + std::mem::offset_of!(Slot, own);
        assert!(first + std::mem::offset_of!(Counter, updated) + 8 <= 64);
        assert!(own0 + 8 <= 64 && first + std::mem::offset_of!(Counter, tag) + 8 <= 64);
    }

    #[test]
    fn windows_move_out_of_line_and_back_without_losing_counts() {
        let mut c = Counter::new(1, 0);
        c.add_own(0, 3, never);
        c.raise(0, 1, 4, never);
        c.add_own(W, 1, never);
        // A third window moves the oldest out of line.
        assert_eq!(c.add_own(2 * W, 5, never), Some(0));
        assert_eq!((c.total(0), c.own(0), c.get(0, 1), c.nodes(0)), (7, 3, 4, 2));
        // An older window than both slots stays out of line.
        assert_eq!(c.add_own(0, 1, never), None);
        assert!(c.raise(0, 2, 2, never));
        assert_eq!((c.total(0), c.own(0)), (10, 4));
        assert_eq!((c.total(W), c.total(2 * W)), (1, 5));
        // A later one brings nothing back, but a peer entry for window W lands next to its slot.
        assert!(c.raise(W, 1, 6, never));
        assert!(!c.raise(W, 1, 6, never));
        assert_eq!((c.total(W), c.slots.iter().map(|s| s.total()).sum::<u64>()), (7, 12));
        let mut starts = c.starts().to_vec();
        starts.sort_unstable();
        assert_eq!(starts, [0, W, 2 * W]);
        let mut e: Vec<_> = c.entries(0).collect();
        e.sort_unstable();
        assert_eq!(e, [(OWN, 4), (1, 4), (2, 2)]);
        // Dropping the dead windows leaves the rest.
        assert_eq!(c.drop_dead(|s| s < W), 1);
        assert_eq!((c.total(0), c.total(W), c.total(2 * W)), (0, 7, 5));
        assert_eq!(c.drop_dead(|_| true), 2);
        assert!(c.is_empty() && c.more.is_none());
    }

    #[test]
    fn a_dead_slot_is_reused_and_forgotten() {
        let mut c = Counter::new(1, 0);
        c.add_own(0, 3, never);
        c.raise(0, 1, 1, never);
        c.add_own(W, 1, never);
        assert_eq!(c.add_own(2 * W, 1, |s| s == 0), Some(0));
        assert_eq!((c.total(0), c.nodes(0)), (0, 0));
        assert!(c.more.as_ref().is_none_or(|m| m.far.is_empty()));
    }

    #[test]
    fn other_counters_survive_the_first_one() {
        let mut e = IdEntry::new(ByteKey::from_slice(b"id"), Counter::new(4, 0));
        e.first.add_own(0, 1, never);
        e.push(Counter::new(8, 0)).add_own(0, 2, never);
        e.push(Counter::new(12, 0)).add_own(0, 3, never);
        e.first.set_dirty(1, true);
        assert_eq!(e.counter_mut(12).map(|c| c.total(0)), Some(3));
        assert!(e.retain(|c| c.kind() != 4));
        let mut kinds: Vec<u64> = e.counters().map(|c| c.kind()).collect();
        kinds.sort_unstable();
        assert_eq!(kinds, [8, 12]);
        assert_eq!(e.counter(8).map(|c| c.total(0)), Some(2));
        assert!(!e.retain(|_| false));
    }
}
