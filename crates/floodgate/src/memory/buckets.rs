//! A key's buckets, one per policy: never empty, the first kept in line.

use crate::algorithm::State;

/// One policy's state for one key.
#[derive(Clone, Debug)]
pub(super) struct Bucket {
    /// The policy's [fingerprint](crate::Policy::fingerprint).
    pub(super) policy: u64,
    pub(super) state: State,
    pub(super) created: u64,
    pub(super) updated: u64,
    /// When the bucket may be forgotten: its state is empty and `expiry` has passed since `updated`.
    pub(super) expires: u64,
}

/// A key's buckets. Most keys have one policy, so the first bucket is kept in line and found with one
/// comparison: on the hit path that comparison waits on the entry's load (a cache miss when keys are many), and
/// each step that waits there delays the next call. The others sit behind a pointer.
///
/// A key has a bucket or is not stored, so there is always a first one: a removal that would leave none says so,
/// and the caller drops the entry.
#[derive(Debug)]
pub(super) struct Buckets {
    first: Bucket,
    /// One pointer (8 bytes) rather than a `Vec` (24) in every key's entry: most keys never have a second.
    #[allow(clippy::box_collection)]
    rest: Option<Box<Vec<Bucket>>>,
}

impl Buckets {
    pub(super) fn new(first: Bucket) -> Self {
        Buckets { first, rest: None }
    }

    /// The bucket of the policy with fingerprint `fp`: the first in line, the others out of line.
    #[inline(always)]
    pub(super) fn get_mut(&mut self, fp: u64) -> Option<&mut Bucket> {
        if self.first.policy == fp {
            return Some(&mut self.first);
        }
        self.other_mut(fp)
    }

    #[cold]
    #[inline(never)]
    fn other_mut(&mut self, fp: u64) -> Option<&mut Bucket> {
        self.rest.as_mut()?.iter_mut().find(|b| b.policy == fp)
    }

    /// The bucket of the policy with fingerprint `fp`.
    pub(super) fn get(&self, fp: u64) -> Option<&Bucket> {
        self.iter().find(|b| b.policy == fp)
    }

    /// Every bucket, the first one first.
    pub(super) fn iter(&self) -> impl Iterator<Item = &Bucket> {
        std::iter::once(&self.first).chain(self.rest.iter().flat_map(|r| r.iter()))
    }

    /// Adds a bucket (of a policy the key has none of yet).
    pub(super) fn push(&mut self, b: Bucket) {
        self.rest.get_or_insert_with(Box::default).push(b);
    }

    /// Keeps the buckets `keep` says to keep and hands every other one to `removed`. Returns `false` when none
    /// is kept: the caller must then drop the whole entry (what is left in it is a placeholder).
    pub(super) fn retain(&mut self, mut keep: impl FnMut(&Bucket) -> bool, mut removed: impl FnMut(Bucket)) -> bool {
        if let Some(rest) = &mut self.rest {
            let mut i = 0;
            while i < rest.len() {
                if keep(&rest[i]) {
                    i += 1;
                } else {
                    // Order among a key's buckets does not matter.
                    removed(rest.swap_remove(i));
                }
            }
        }
        if !keep(&self.first) {
            let Some(next) = self.rest.as_mut().and_then(|r| r.pop()) else {
                let empty = Bucket { policy: 0, state: State::Empty, created: 0, updated: 0, expires: 0 };
                removed(std::mem::replace(&mut self.first, empty));
                return false;
            };
            removed(std::mem::replace(&mut self.first, next));
        }
        if self.rest.as_ref().is_some_and(|r| r.is_empty()) {
            self.rest = None;
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bucket(policy: u64) -> Bucket {
        Bucket { policy, state: State::Empty, created: 0, updated: 0, expires: policy }
    }

    fn policies(b: &Buckets) -> Vec<u64> {
        let mut p: Vec<u64> = b.iter().map(|b| b.policy).collect();
        p.sort_unstable();
        p
    }

    #[test]
    fn finds_every_bucket_in_line_or_not() {
        let mut b = Buckets::new(bucket(1));
        b.push(bucket(2));
        b.push(bucket(3));
        assert_eq!(policies(&b), [1, 2, 3]);
        for fp in [1, 2, 3] {
            assert_eq!(b.get_mut(fp).map(|b| b.policy), Some(fp));
            assert_eq!(b.get(fp).map(|b| b.policy), Some(fp));
        }
        assert!(b.get_mut(4).is_none() && b.get(4).is_none());
    }

    #[test]
    fn retain_moves_a_kept_bucket_in_line_and_says_when_none_is_left() {
        let mut b = Buckets::new(bucket(1));
        b.push(bucket(2));
        b.push(bucket(3));
        let mut gone = Vec::new();
        assert!(b.retain(|b| b.policy != 1, |b| gone.push(b.policy)));
        assert_eq!((policies(&b), &gone[..]), (vec![2, 3], &[1][..]));
        assert!(b.get_mut(2).is_some() && b.get_mut(3).is_some() && b.get_mut(1).is_none());
        assert!(b.retain(|b| b.policy == 3, |b| gone.push(b.policy)));
        assert_eq!((policies(&b), b.rest.is_none()), (vec![3], true));
        assert!(!b.retain(|_| false, |b| gone.push(b.policy)));
        assert_eq!(gone, [1, 2, 3]);
    }
}
