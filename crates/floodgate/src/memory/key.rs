//! Keys of the in-memory store: any `Hash + Eq` type, looked up by a borrowed form without allocating.

use std::borrow::Borrow;
use std::sync::Arc;

/// The in-memory store's default key: bytes kept inline up to 24, on the heap past that.
pub type ByteKey = smallvec::SmallVec<[u8; 24]>;

/// Makes an owned key `K` from a borrowed lookup form, only when a new key is inserted.
///
/// Implemented for every `Clone` type (the key is its own lookup form: `IpAddr`, `u64`, tuples) and for the
/// borrowed forms of the usual owned keys (`[u8]` → [`ByteKey`], `Vec<u8>`, `Box<[u8]>`; `str` → `String`,
/// `Box<str>`, `Arc<str>`).
///
/// ```
/// use floodgate::memory::{ByteKey, ToKey};
/// let k: ByteKey = b"user:42"[..].to_key();
/// assert_eq!(&k[..], b"user:42");
/// let ip: std::net::IpAddr = "127.0.0.1".parse().unwrap();
/// assert_eq!(ip.to_key(), ip);
/// ```
pub trait ToKey<K> {
    /// The owned key.
    fn to_key(&self) -> K;

    /// Whether the stored `key` is this one. The store's hit path compares with this rather than `==`, so a
    /// key type can compare faster than its `Eq` does.
    ///
    /// ```
    /// use floodgate::memory::{ByteKey, ToKey};
    /// let stored: ByteKey = b"user:42"[..].to_key();
    /// assert!(b"user:42"[..].is_key(&stored));
    /// assert!(!b"user:43"[..].is_key(&stored));
    /// ```
    #[inline]
    fn is_key(&self, key: &K) -> bool
    where
        K: Borrow<Self>,
        Self: PartialEq,
    {
        key.borrow() == self
    }
}

impl<T: Clone> ToKey<T> for T {
    #[inline]
    fn to_key(&self) -> T {
        self.clone()
    }
}

impl ToKey<ByteKey> for [u8] {
    #[inline]
    fn to_key(&self) -> ByteKey {
        ByteKey::from_slice(self)
    }

    /// Keys of 4 to 24 bytes are compared a few words at a time, in line, with no call to `memcmp`.
    #[inline(always)]
    fn is_key(&self, key: &ByteKey) -> bool {
        bytes_eq(self, key)
    }
}

/// `a == b`, in two or three overlapping words for lengths 4 to 24.
#[inline(always)]
fn bytes_eq(a: &[u8], b: &[u8]) -> bool {
    let n = a.len();
    if n != b.len() {
        return false;
    }
    // The lengths below keep every word inside both slices; the zero is never used.
    let w32 = |s: &[u8], at: usize| s.get(at..at + 4).and_then(|w| w.try_into().ok()).map_or(0, u32::from_ne_bytes);
    let w64 = |s: &[u8], at: usize| s.get(at..at + 8).and_then(|w| w.try_into().ok()).map_or(0, u64::from_ne_bytes);
    match n {
        4..=7 => (w32(a, 0) ^ w32(b, 0)) | (w32(a, n - 4) ^ w32(b, n - 4)) == 0,
        8..=16 => (w64(a, 0) ^ w64(b, 0)) | (w64(a, n - 8) ^ w64(b, n - 8)) == 0,
        17..=24 => (w64(a, 0) ^ w64(b, 0)) | (w64(a, 8) ^ w64(b, 8)) | (w64(a, n - 8) ^ w64(b, n - 8)) == 0,
        _ => a == b,
    }
}

impl ToKey<Box<[u8]>> for [u8] {
    fn to_key(&self) -> Box<[u8]> {
        self.into()
    }
}

impl ToKey<String> for str {
    fn to_key(&self) -> String {
        self.to_owned()
    }
}

impl ToKey<Box<str>> for str {
    fn to_key(&self) -> Box<str> {
        self.into()
    }
}

impl ToKey<Arc<str>> for str {
    fn to_key(&self) -> Arc<str> {
        self.into()
    }
}

impl ToKey<Vec<u8>> for [u8] {
    fn to_key(&self) -> Vec<u8> {
        self.to_vec()
    }
}

#[cfg(test)]
mod tests {
    use super::bytes_eq;
    use proptest::prelude::*;

    proptest! {
        /// Equal-length keys that differ in any one byte, and keys of different lengths, compare as `==` does.
        #[test]
        fn bytes_eq_is_slice_eq(
            a in prop::collection::vec(any::<u8>(), 0..40),
            at in any::<prop::sample::Index>(),
            flip in 1..=255u8,
            cut in 0..3usize,
        ) {
            prop_assert!(bytes_eq(&a, &a));
            if !a.is_empty() {
                let mut b = a.clone();
                b[at.index(a.len())] ^= flip;
                prop_assert!(!bytes_eq(&a, &b));
            }
            let shorter = &a[..a.len().saturating_sub(cut)];
            prop_assert_eq!(bytes_eq(&a, shorter), a.len() == shorter.len());
        }
    }
}
