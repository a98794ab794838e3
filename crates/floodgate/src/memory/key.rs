//! Keys of the in-memory store: any `Hash + Eq` type, looked up by a borrowed form without allocating.

use std::borrow::Borrow;
use std::sync::Arc;

/// The in-memory store's default key: a byte string in 16 bytes, kept inline up to
/// [`ByteKey::INLINE`] (14) bytes and on the heap (one allocation, length in it) past that.
///
/// It hashes, compares and borrows as the `[u8]` it holds, so a store of `ByteKey`s is looked up by `&[u8]`
/// without allocating.
///
/// ```
/// use floodgate::memory::ByteKey;
/// let short = ByteKey::from_slice(b"user:42");
/// let long = ByteKey::from_slice(b"ip:2001:db8::8a2e:370:7334");
/// assert_eq!((&short[..], short.len()), (&b"user:42"[..], 7));
/// assert_eq!(&long[..], b"ip:2001:db8::8a2e:370:7334");
/// assert_eq!(std::mem::size_of::<ByteKey>(), 16);
/// ```
#[derive(Clone)]
pub struct ByteKey(Repr);

#[derive(Clone)]
enum Repr {
    Inline { len: u8, bytes: [u8; ByteKey::INLINE] },
    Heap(thin_vec::ThinVec<u8>),
}

impl ByteKey {
    /// The longest key kept inline; longer keys take one heap allocation.
    pub const INLINE: usize = 14;

    /// A key holding a copy of `bytes`.
    pub fn from_slice(bytes: &[u8]) -> Self {
        match u8::try_from(bytes.len()) {
            Ok(len) if bytes.len() <= Self::INLINE => {
                let mut inline = [0; Self::INLINE];
                inline[..bytes.len()].copy_from_slice(bytes);
                ByteKey(Repr::Inline { len, bytes: inline })
            }
            _ => ByteKey(Repr::Heap(thin_vec::ThinVec::from(bytes))),
        }
    }

    /// The bytes.
    #[inline(always)]
    pub fn as_slice(&self) -> &[u8] {
        match &self.0 {
            Repr::Inline { len, bytes } => bytes.get(..usize::from(*len)).unwrap_or(bytes),
            Repr::Heap(v) => v,
        }
    }
}

impl std::ops::Deref for ByteKey {
    type Target = [u8];
    #[inline(always)]
    fn deref(&self) -> &[u8] {
        self.as_slice()
    }
}

impl AsRef<[u8]> for ByteKey {
    fn as_ref(&self) -> &[u8] {
        self.as_slice()
    }
}

impl Borrow<[u8]> for ByteKey {
    #[inline(always)]
    fn borrow(&self) -> &[u8] {
        self.as_slice()
    }
}

impl PartialEq for ByteKey {
    fn eq(&self, other: &Self) -> bool {
        self.as_slice() == other.as_slice()
    }
}

impl Eq for ByteKey {}

/// Hashes as the `[u8]` it holds (what `Borrow<[u8]>` requires).
impl std::hash::Hash for ByteKey {
    #[inline]
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.as_slice().hash(state)
    }
}

impl std::fmt::Debug for ByteKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ByteKey(\"{}\")", self.as_slice().escape_ascii())
    }
}

impl From<&[u8]> for ByteKey {
    fn from(bytes: &[u8]) -> Self {
        ByteKey::from_slice(bytes)
    }
}

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
    use super::{ByteKey, bytes_eq};
    use proptest::prelude::*;

    proptest! {
        /// A key holds exactly the bytes it was made of, inline or not, and hashes and compares as they do.
        #[test]
        fn byte_key_round_trips(a in prop::collection::vec(any::<u8>(), 0..40), b in prop::collection::vec(any::<u8>(), 0..40)) {
            let (ka, kb) = (ByteKey::from_slice(&a), ByteKey::from_slice(&b));
            prop_assert_eq!(&ka[..], &a[..]);
            prop_assert_eq!(ka == kb, a == b);
            let h = foldhash::fast::FixedState::with_seed(7);
            use std::hash::BuildHasher;
            prop_assert_eq!(h.hash_one(&ka), h.hash_one(&a[..]));
            prop_assert_eq!(format!("{:?}", ka.clone()), format!("ByteKey(\"{}\")", a.escape_ascii()));
        }

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
