//! One policy's state for one key, in 64 bytes: the state, when it was created (exact), when it expires (exact),
//! and when it was last written, kept as a 32-bit [`Stamp`] after its creation.

use crate::algorithm::State;

/// One policy's state for one key.
#[derive(Clone, Debug)]
pub(super) struct Bucket {
    /// The policy's [fingerprint](crate::Policy::fingerprint).
    pub(super) policy: u64,
    pub(super) state: State,
    /// When the bucket was created (µs).
    created: u64,
    /// When the bucket may be forgotten: its state is empty and `expiry` has passed since it was last written.
    pub(super) expires: u64,
    /// When the bucket was last written, after `created`.
    updated: Stamp,
    /// In a key's first bucket: where the key's other buckets are (see `Table`), plus one; 0 when it has none.
    /// Unused in the others.
    pub(super) tail: u32,
}

impl Bucket {
    /// A bucket created and written at `now`.
    pub(super) fn new(policy: u64, state: State, expires: u64, now: u64) -> Self {
        Bucket { policy, state, created: now, expires, updated: Stamp::ZERO, tail: 0 }
    }

    /// When the bucket was created (µs).
    #[inline]
    pub(super) fn created(&self) -> u64 {
        self.created
    }

    /// When the bucket was last written (µs): exact within 8.9 minutes of its creation, to the millisecond
    /// within 6.2 days, to the second after (see [`Stamp`]).
    #[inline]
    pub(super) fn updated(&self) -> u64 {
        self.updated.time(self.created)
    }

    /// Records a write at `now`.
    #[inline(always)]
    pub(super) fn set_updated(&mut self, now: u64) {
        self.updated = Stamp::new(self.created, now);
    }

    /// The bucket is created again at `now` (its state had expired); when it was last written is kept.
    #[inline]
    pub(super) fn set_created(&mut self, now: u64) {
        let updated = self.updated();
        self.created = now;
        self.updated = Stamp::new(now, updated);
    }
}

/// A time as a signed distance from a base time, in 32 bits: a sign bit, a two-bit scale and 29 bits of
/// magnitude. Distances below 2²⁹ µs (8.9 minutes) are exact; below 2²⁹ ms (6.2 days) they are kept to the
/// millisecond, below 2²⁹ s (17 years) to the second, and longer ones as 17 years. Rounding is towards the
/// base, and each stamp is made afresh from an exact time, so the error never grows with the number of writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Stamp(u32);

impl Stamp {
    const MAGNITUDE: u32 = (1 << 29) - 1;
    const SCALES: [u64; 3] = [1, 1_000, 1_000_000];
    const NEGATIVE: u32 = 1 << 31;

    /// `time` is `base`.
    pub(super) const ZERO: Stamp = Stamp(0);

    /// `time` as a distance from `base`.
    #[inline(always)]
    pub(super) fn new(base: u64, time: u64) -> Self {
        let (sign, d) = if time >= base { (0, time - base) } else { (Self::NEGATIVE, base - time) };
        if d <= u64::from(Self::MAGNITUDE) {
            return Stamp(sign | d as u32);
        }
        Self::coarse(sign, d)
    }

    #[cold]
    #[inline(never)]
    fn coarse(sign: u32, d: u64) -> Self {
        for (scale, unit) in Self::SCALES.iter().enumerate().skip(1) {
            let m = d / unit;
            if m <= u64::from(Self::MAGNITUDE) {
                return Stamp(sign | (scale as u32) << 29 | m as u32);
            }
        }
        Stamp(sign | 2 << 29 | Self::MAGNITUDE)
    }

    /// The time this stamp stands for, from the `base` it was made with.
    #[inline]
    pub(super) fn time(self, base: u64) -> u64 {
        let scale = Self::SCALES[((self.0 >> 29) & 3).min(2) as usize];
        let d = u64::from(self.0 & Self::MAGNITUDE) * scale;
        if self.0 & Self::NEGATIVE != 0 { base.saturating_sub(d) } else { base.saturating_add(d) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_bucket_is_64_bytes() {
        assert_eq!(std::mem::size_of::<Bucket>(), 64);
    }

    #[test]
    fn stamps_are_exact_near_their_base_and_coarse_far_from_it() {
        let base = 1_800_000_000_000_000;
        for d in [0, 1, 999_999, (1 << 29) - 1] {
            assert_eq!(Stamp::new(base, base + d).time(base), base + d);
            assert_eq!(Stamp::new(base, base - d).time(base), base - d);
        }
        // Past 8.9 minutes, to the millisecond (rounded towards the base); past 6.2 days, to the second.
        assert_eq!(Stamp::new(base, base + 3_600_000_123).time(base), base + 3_600_000_000);
        assert_eq!(Stamp::new(base, base - 3_600_000_123).time(base), base - 3_600_000_000);
        assert_eq!(Stamp::new(base, base + 30 * 86_400_000_000 + 5).time(base), base + 30 * 86_400_000_000);
        // Beyond 17 years, 17 years.
        assert_eq!(Stamp::new(0, u64::MAX).time(0), u64::from(Stamp::MAGNITUDE) * 1_000_000);
    }

    proptest! {
        /// A stamp is never further from the exact time than its scale, and never on the far side of it.
        #[test]
        fn stamps_round_towards_their_base(base in 0..u64::MAX / 2, d in 0..u64::MAX / 4, back in any::<bool>()) {
            let time = if back { base.saturating_sub(d) } else { base + d };
            let got = Stamp::new(base, time).time(base);
            let err = time.abs_diff(got);
            let dist = time.abs_diff(base);
            prop_assert!(got.abs_diff(base) <= dist, "{got} is further from {base} than {time}");
            let bound = if dist < 1 << 29 { 0 } else if dist / 1_000 < 1 << 29 { 999 } else { 999_999 };
            if dist / 1_000_000 < 1 << 29 {
                prop_assert!(err <= bound, "{time} came back as {got}");
            }
        }

        /// Setting the creation time keeps the last write's time (to the stamp's precision).
        #[test]
        fn set_created_keeps_updated(created in 0..1u64 << 50, up in 0..1u64 << 28, again in 0..1u64 << 28) {
            let mut b = Bucket::new(1, State::Empty, 0, created);
            b.set_updated(created + up);
            b.set_created(created + again);
            prop_assert_eq!((b.created(), b.updated()), (created + again, created + up));
        }
    }
}
