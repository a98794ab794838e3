//! Keys of the in-memory store: any `Hash + Eq` type, looked up by a borrowed form without allocating.

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
}

impl ToKey<Vec<u8>> for [u8] {
    fn to_key(&self) -> Vec<u8> {
        self.to_vec()
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
