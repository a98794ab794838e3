//! Where the middleware counts: the [`Backend`] trait, the synchronous [`MemoryBackend`] fast path and the
//! [`StoreBackend`] for any async [`Store`].

use std::future::Future;
use std::hash::Hash;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use floodgate::memory::ByteKey;
use floodgate::{Decision, MemoryStore, Policy, Store, StoreError, StoreResult};
use http::HeaderValue;

/// A backend's answer to one hit: at once (in-memory), or a future (a remote store).
///
/// ```
/// use floodgate::{MemoryStore, Policy};
/// use floodgate_http::{Backend, Hit, MemoryBackend, StoreBackend};
/// use std::time::Duration;
///
/// let policy = Policy::gcra(5, Duration::from_secs(1))?;
/// assert!(matches!(MemoryBackend::new(MemoryStore::new()).hit("k", &policy, 1), Hit::Ready(Ok(_))));
/// assert!(matches!(StoreBackend::new(MemoryStore::new()).hit("k", &policy, 1), Hit::Pending(_)));
/// # Ok::<(), floodgate::PolicyError>(())
/// ```
#[derive(Debug)]
pub enum Hit<F> {
    /// The decision, made synchronously: the request goes on with no future and no allocation.
    Ready(StoreResult<Decision>),
    /// The decision, still to come.
    Pending(F),
}

/// Counts hits for keys of type `K` under a policy. Implemented by [`MemoryBackend`] and [`StoreBackend`]; write
/// your own to count somewhere else.
///
/// ```
/// use floodgate::{Decision, Policy, StoreResult};
/// use floodgate_http::{Backend, Hit};
/// use std::time::Duration;
///
/// /// Admits everything (for a dry run).
/// struct Unlimited;
///
/// impl<K> Backend<K> for Unlimited {
///     type Future = std::future::Ready<StoreResult<Decision>>;
///     fn hit(&self, _key: K, policy: &Policy, _cost: u64) -> Hit<Self::Future> {
///         let limit = policy.capacity();
///         Hit::Ready(Ok(Decision { allowed: true, limit, remaining: limit, reset_after: Duration::ZERO, retry_after: None, fallback: false }))
///     }
/// }
/// # let p = Policy::gcra(1, Duration::from_secs(1)).unwrap();
/// # assert!(matches!(Unlimited.hit("k", &p, 1), Hit::Ready(Ok(d)) if d.allowed));
/// ```
pub trait Backend<K>: Send + Sync + 'static {
    /// The future of a decision that is not ready at once.
    type Future: Future<Output = StoreResult<Decision>> + Send + 'static;

    /// Takes `cost` units for `key` under `policy`, if they fit.
    fn hit(&self, key: K, policy: &Policy, cost: u64) -> Hit<Self::Future>;
}

/// The fast path: a [`MemoryStore`] with keys of any type, decided synchronously with
/// [`MemoryStore::hit_sync`].
///
/// With `MemoryStore<IpAddr>` and [`ClientIp`](crate::ClientIp) nothing is allocated per request except for a
/// key seen for the first time.
///
/// ```
/// use floodgate::{MemoryStore, Policy};
/// use floodgate_http::{Backend, Hit, MemoryBackend};
/// use std::net::IpAddr;
/// use std::time::Duration;
///
/// let backend = MemoryBackend::new(MemoryStore::builder().key_type::<IpAddr>().build());
/// let policy = Policy::fixed_window(1, Duration::from_secs(60))?;
/// let ip = IpAddr::from([192, 0, 2, 1]);
/// assert!(matches!(backend.hit(ip, &policy, 1), Hit::Ready(Ok(d)) if d.allowed));
/// assert!(matches!(backend.hit(ip, &policy, 1), Hit::Ready(Ok(d)) if !d.allowed));
/// # Ok::<(), floodgate::PolicyError>(())
/// ```
#[derive(Clone, Debug)]
pub struct MemoryBackend<K> {
    store: MemoryStore<K>,
}

impl<K> MemoryBackend<K> {
    /// Counts in `store` (a clone of a store shares its state).
    ///
    /// ```
    /// use floodgate::MemoryStore;
    /// use floodgate_http::MemoryBackend;
    /// let backend = MemoryBackend::new(MemoryStore::builder().key_type::<u64>().build());
    /// ```
    pub fn new(store: MemoryStore<K>) -> Self {
        MemoryBackend { store }
    }

    /// The store, to inspect or reset keys.
    ///
    /// ```
    /// use floodgate::{MemoryStore, Policy};
    /// use floodgate_http::{Backend, MemoryBackend};
    /// use std::time::Duration;
    /// let backend = MemoryBackend::new(MemoryStore::builder().key_type::<u64>().build());
    /// let _ = backend.hit(7u64, &Policy::gcra(5, Duration::from_secs(1))?, 1);
    /// assert_eq!(backend.store().stats().keys, 1);
    /// # Ok::<(), floodgate::PolicyError>(())
    /// ```
    pub fn store(&self) -> &MemoryStore<K> {
        &self.store
    }
}

/// A key that can hit a `MemoryStore<K>` without allocating.
///
/// Every `Clone + Hash + Eq` type is a key of a store of its own type (`IpAddr` in `MemoryStore<IpAddr>`, `u64`
/// in `MemoryStore<u64>`). Byte-like keys ([`HeaderValue`], [`Bytes`], `String`, `Vec<u8>`) also hit the default
/// byte-keyed `MemoryStore` (whose keys are [`ByteKey`]), which copies a key only when it first sees it.
///
/// ```
/// use floodgate::{MemoryStore, Policy};
/// use floodgate_http::MemoryKey;
/// use http::HeaderValue;
/// use std::time::Duration;
///
/// let store = MemoryStore::new();
/// let policy = Policy::fixed_window(1, Duration::from_secs(60))?;
/// assert!(HeaderValue::from_static("key-1").hit_memory(&store, &policy, 1).allowed);
/// assert!(!String::from("key-1").hit_memory(&store, &policy, 1).allowed);
/// # Ok::<(), floodgate::PolicyError>(())
/// ```
pub trait MemoryKey<K> {
    /// Hits `store` with this key.
    fn hit_memory(&self, store: &MemoryStore<K>, policy: &Policy, cost: u64) -> Decision;
}

impl<K: Clone + Hash + Eq + Send + Sync + 'static> MemoryKey<K> for K {
    #[inline]
    fn hit_memory(&self, store: &MemoryStore<K>, policy: &Policy, cost: u64) -> Decision {
        store.hit_sync(self, policy, cost)
    }
}

macro_rules! byte_memory_key {
    ($($t:ty),*) => {$(
        impl MemoryKey<ByteKey> for $t {
            #[inline]
            fn hit_memory(&self, store: &MemoryStore<ByteKey>, policy: &Policy, cost: u64) -> Decision {
                store.hit_sync(AsRef::<[u8]>::as_ref(self), policy, cost)
            }
        }
    )*};
}

byte_memory_key!(HeaderValue, Bytes, String, Vec<u8>, Box<[u8]>, &'static str, &'static [u8]);
#[cfg(feature = "axum")]
byte_memory_key!(crate::key::RoutePath);

impl<K, X> Backend<X> for MemoryBackend<K>
where
    K: Hash + Eq + Send + Sync + 'static,
    X: MemoryKey<K>,
{
    type Future = std::future::Ready<StoreResult<Decision>>;

    #[inline]
    fn hit(&self, key: X, policy: &Policy, cost: u64) -> Hit<Self::Future> {
        Hit::Ready(Ok(key.hit_memory(&self.store, policy, cost)))
    }
}

/// A key as the bytes of a [`Store`] id.
///
/// IP addresses are written as text (`192.0.2.1`, `2001:db8::1`), so ids in a shared store such as Redis stay
/// readable; byte-like keys are written as they are, integers in decimal.
///
/// ```
/// use floodgate_http::StoreKey;
/// use std::net::IpAddr;
///
/// let mut id = b"ip:".to_vec();
/// IpAddr::from([192, 0, 2, 1]).write_id(&mut id);
/// assert_eq!(id, b"ip:192.0.2.1");
/// ```
pub trait StoreKey {
    /// Appends this key's bytes to `id`.
    fn write_id(&self, id: &mut Vec<u8>);
}

impl StoreKey for IpAddr {
    fn write_id(&self, id: &mut Vec<u8>) {
        use std::io::Write as _;
        // Writing to a Vec cannot fail.
        let _ = write!(id, "{self}");
    }
}

macro_rules! byte_store_key {
    ($($t:ty),*) => {$(
        impl StoreKey for $t {
            fn write_id(&self, id: &mut Vec<u8>) {
                id.extend_from_slice(AsRef::<[u8]>::as_ref(self));
            }
        }
    )*};
}

byte_store_key!(HeaderValue, Bytes, String, Vec<u8>, Box<[u8]>, &'static str, &'static [u8]);
#[cfg(feature = "axum")]
byte_store_key!(crate::key::RoutePath);

/// A pair of keys: the first one's length in decimal, `:`, its bytes, then the second one's bytes, so that no two
/// different pairs share an id.
///
/// ```
/// use floodgate_http::StoreKey;
/// use std::net::IpAddr;
///
/// let mut id = Vec::new();
/// ("/search", IpAddr::from([192, 0, 2, 1])).write_id(&mut id);
/// assert_eq!(id, b"7:/search192.0.2.1");
/// ```
impl<A: StoreKey, B: StoreKey> StoreKey for (A, B) {
    fn write_id(&self, id: &mut Vec<u8>) {
        let mut first = Vec::new();
        self.0.write_id(&mut first);
        use std::io::Write as _;
        let _ = write!(id, "{}:", first.len());
        id.extend_from_slice(&first);
        self.1.write_id(id);
    }
}

macro_rules! int_store_key {
    ($($t:ty),*) => {$(
        impl StoreKey for $t {
            fn write_id(&self, id: &mut Vec<u8>) {
                use std::io::Write as _;
                let _ = write!(id, "{self}");
            }
        }
    )*};
}

int_store_key!(u32, u64, u128, i64);

/// Any async [`Store`] (Redis, a cluster, your own), keyed by bytes: each id is a prefix followed by the key
/// (see [`StoreKey`]).
///
/// Each request allocates its id and boxes the store's future; that is noise next to a network round trip. Set
/// a [`timeout`](Self::timeout) so a store that hangs cannot hang requests (it needs a Tokio runtime with time
/// enabled, as axum's has).
///
/// ```
/// use floodgate::{MemoryStore, Policy, Store};
/// use floodgate_http::{Backend, Hit, StoreBackend};
/// use std::time::Duration;
///
/// let backend = StoreBackend::new(MemoryStore::new()).prefix("http:ip:").timeout(Duration::from_millis(50));
/// let policy = Policy::fixed_window(1, Duration::from_secs(60))?;
/// let Hit::Pending(fut) = backend.hit(String::from("192.0.2.1"), &policy, 1) else { unreachable!() };
/// let rt = tokio::runtime::Builder::new_current_thread().enable_time().build()?;
/// assert!(rt.block_on(fut)?.allowed);
/// let stored = rt.block_on(backend.store().inspect(b"http:ip:192.0.2.1", &policy))?;
/// assert_eq!(stored.map(|b| b.used), Some(1));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct StoreBackend<S> {
    store: Arc<S>,
    prefix: Bytes,
    timeout: Option<Duration>,
}

impl<S> Clone for StoreBackend<S> {
    fn clone(&self) -> Self {
        StoreBackend { store: self.store.clone(), prefix: self.prefix.clone(), timeout: self.timeout }
    }
}

impl<S> StoreBackend<S> {
    /// Counts in `store`, with no id prefix and no timeout.
    pub fn new(store: S) -> Self {
        Self::from_arc(Arc::new(store))
    }

    /// Counts in a shared `store`.
    ///
    /// ```
    /// use floodgate::{BoxStore, MemoryStore};
    /// use floodgate_http::StoreBackend;
    /// use std::sync::Arc;
    /// // A store picked at run time.
    /// let store: BoxStore = Arc::new(MemoryStore::new());
    /// let backend = StoreBackend::from_arc(Arc::new(store));
    /// ```
    pub fn from_arc(store: Arc<S>) -> Self {
        StoreBackend { store, prefix: Bytes::new(), timeout: None }
    }

    /// Puts `prefix` before every key, to keep this limit's ids apart from others in the same store.
    pub fn prefix(mut self, prefix: impl Into<Bytes>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// Gives up on a store call after `timeout`, which then counts as a store error
    /// ([`StoreError::Timeout`]).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// The store.
    pub fn store(&self) -> &Arc<S> {
        &self.store
    }
}

/// The future of a [`StoreBackend`] decision.
///
/// ```
/// use floodgate::{MemoryStore, Policy};
/// use floodgate_http::{Backend, Hit, StoreBackend, StoreFuture};
/// use std::time::Duration;
/// let policy = Policy::gcra(5, Duration::from_secs(1))?;
/// let hit: Hit<StoreFuture> = StoreBackend::new(MemoryStore::new()).hit("k", &policy, 1);
/// # Ok::<(), floodgate::PolicyError>(())
/// ```
pub type StoreFuture = Pin<Box<dyn Future<Output = StoreResult<Decision>> + Send>>;

impl<S, K> Backend<K> for StoreBackend<S>
where
    S: Store + 'static,
    K: StoreKey,
{
    type Future = StoreFuture;

    fn hit(&self, key: K, policy: &Policy, cost: u64) -> Hit<StoreFuture> {
        let mut id = Vec::with_capacity(self.prefix.len() + 40);
        id.extend_from_slice(&self.prefix);
        key.write_id(&mut id);
        let store = self.store.clone();
        let policy = policy.clone();
        let timeout = self.timeout;
        Hit::Pending(Box::pin(async move {
            let hit = store.hit(&id, &policy, cost);
            match timeout {
                Some(limit) => tokio::time::timeout(limit, hit).await.unwrap_or(Err(StoreError::Timeout(limit))),
                None => hit.await,
            }
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_ids_are_prefix_then_key() {
        let mut id = b"p:".to_vec();
        HeaderValue::from_static("abc").write_id(&mut id);
        assert_eq!(id, b"p:abc");
        let mut id = Vec::new();
        42u64.write_id(&mut id);
        "2001:db8::1".parse::<IpAddr>().map(|ip| ip.write_id(&mut id)).ok();
        assert_eq!(id, b"422001:db8::1");
    }

    #[test]
    fn byte_keys_share_state_in_a_byte_store() {
        let store = MemoryStore::new();
        let backend = MemoryBackend::new(store.clone());
        let policy = Policy::fixed_window(2, Duration::from_secs(60));
        let Ok(policy) = policy else { return };
        let allowed = |h: Hit<_>| matches!(h, Hit::Ready(Ok(Decision { allowed: true, .. })));
        assert!(allowed(backend.hit(HeaderValue::from_static("k"), &policy, 1)));
        assert!(allowed(backend.hit("k", &policy, 1)));
        assert!(!allowed(backend.hit(String::from("k"), &policy, 1)));
        assert_eq!(store.stats().keys, 1);
    }
}
