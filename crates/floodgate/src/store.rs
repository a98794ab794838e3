//! The [`Store`] trait: where rate-limit state lives (Hammer's pluggable backend).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use crate::{Decision, Policy, Timestamp};

/// Why a store could not answer.
///
/// ```
/// use floodgate::StoreError;
/// use std::time::Duration;
/// let e = StoreError::Timeout(Duration::from_millis(50));
/// assert_eq!(e.to_string(), "the store did not answer within 50ms");
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The backend did not answer within the store's per-call timeout.
    #[error("the store did not answer within {0:?}")]
    Timeout(Duration),
    /// The backend cannot be reached (connection refused, reset, cluster down).
    #[error("the store is unavailable: {0}")]
    Unavailable(String),
    /// The backend answered with an error or with something this store cannot read.
    #[error("the store failed: {0}")]
    Backend(String),
    /// The id is not acceptable to this store (for example longer than its maximum).
    #[error("invalid id: {0}")]
    InvalidId(String),
}

/// What [`Store::inspect`] reports of one id's state under one policy (Hammer's `inspect_bucket`).
///
/// ```
/// use floodgate::algorithm::Op;
/// use floodgate::{MemoryStore, Policy, Timestamp};
/// use std::time::Duration;
///
/// let store = MemoryStore::new();
/// let policy = Policy::fixed_window(10, Duration::from_secs(60))?;
/// store.apply_at(&b"k"[..], &policy, Op::Hit, 4, Timestamp::from_secs(120));
/// let info = store.inspect_at(&b"k"[..], &policy, Timestamp::from_secs(150)).unwrap();
/// assert_eq!((info.used, info.remaining), (4, 6));
/// assert_eq!(info.next_window_after, Duration::from_secs(30));
/// assert_eq!((info.created, info.updated), (Timestamp::from_secs(120), Timestamp::from_secs(120)));
/// # Ok::<(), floodgate::PolicyError>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BucketInfo {
    /// Units counted now (a meter's level rounded up to whole units).
    pub used: u64,
    /// Units a hit could take now.
    pub remaining: u64,
    /// Time until the state is empty again.
    pub reset_after: Duration,
    /// Time until the current window ends (window algorithms) or until one more unit fits (meters).
    pub next_window_after: Duration,
    /// When this state was first written (since it was last empty).
    pub created: Timestamp,
    /// When this state was last written. The memory store keeps it in 4 bytes as a distance from `created`:
    /// to the microsecond within 8.9 minutes of it, to the millisecond within 6.2 days, to the second beyond,
    /// rounded towards `created` (no decision reads it). The Redis stores keep it to the microsecond.
    pub updated: Timestamp,
    /// When the state is empty again, by the store's clock: the time of the inspection plus `reset_after`
    /// (Hammer's `expires_at`). A hit at the same instant reports the same `reset_after`.
    pub expires_at: Timestamp,
}

/// One hit of a batch given to [`Store::hit_all`].
///
/// ```
/// use floodgate::{Hit, Policy};
/// use std::time::Duration;
/// let per_user = Policy::gcra(10, Duration::from_secs(1))?;
/// let hit = Hit { id: b"user:1", policy: &per_user, cost: 1 };
/// assert_eq!(hit.cost, 1);
/// # Ok::<(), floodgate::PolicyError>(())
/// ```
#[derive(Clone, Copy, Debug)]
pub struct Hit<'a> {
    /// The id.
    pub id: &'a [u8],
    /// The policy.
    pub policy: &'a Policy,
    /// Units to take (0: a pure check).
    pub cost: u64,
}

/// The result of a store call.
///
/// ```
/// use floodgate::{StoreError, StoreResult};
/// let r: StoreResult<u64> = Err(StoreError::Unavailable("connection refused".into()));
/// assert!(r.is_err());
/// ```
pub type StoreResult<T> = Result<T, StoreError>;

/// Where rate-limit state lives. Every implementation passes the public conformance suite
/// (`floodgate::conformance`, feature `conformance`).
///
/// Ids are byte strings: any bytes are a valid id, and two different ids never share state. Policies are passed
/// per call (see [`Policy`] for what happens to live state when they change). Each call is atomic for its id:
/// racing hits on one key never admit more than the policy allows. Stores keep their own time source (a
/// [`Clock`](crate::Clock), or the backend's clock), so a call takes no `now`.
///
/// The trait uses `async fn` for speed and is therefore not object safe; for `dyn` use [`DynStore`] (every
/// `Store` is one) and [`BoxStore`] (which is a `Store` again).
///
/// ```
/// use floodgate::{MemoryStore, Policy, Store};
/// use std::time::Duration;
///
/// # tokio_test_block_on(async {
/// let store = MemoryStore::new();
/// let policy = Policy::gcra(2, Duration::from_secs(1))?;
/// assert!(store.hit(b"user:1", &policy, 1).await?.allowed);
/// assert_eq!(store.inspect(b"user:1", &policy).await?.map(|b| b.used), Some(1));
/// assert_eq!(store.delete_buckets(b"user:1").await?, 1);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// # }).unwrap();
/// # fn tokio_test_block_on<F: std::future::Future>(f: F) -> F::Output {
/// #     tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(f)
/// # }
/// ```
pub trait Store: Send + Sync {
    /// Admits `cost` units for `id` if they fit, else denies and consumes nothing. Cost 0 is a pure check
    /// (would a hit of 1 pass?). A cost above the policy's capacity is denied with `retry_after: None`.
    fn hit(&self, id: &[u8], policy: &Policy, cost: u64) -> impl Future<Output = StoreResult<Decision>> + Send;

    /// Counts `cost` units whether or not they fit (Hammer's `inc`); `allowed` tells whether they did.
    fn inc(&self, id: &[u8], policy: &Policy, cost: u64) -> impl Future<Output = StoreResult<Decision>> + Send;

    /// Answers whether a hit of 1 would pass now, counting nothing (Hammer's `get`; the same as `hit` with cost 0).
    fn get(&self, id: &[u8], policy: &Policy) -> impl Future<Output = StoreResult<Decision>> + Send {
        self.hit(id, policy, 0)
    }

    /// Makes the used units of `id` under `policy` equal to `used` (seeding state kept elsewhere).
    fn set(&self, id: &[u8], policy: &Policy, used: u64) -> impl Future<Output = StoreResult<Decision>> + Send;

    /// Reports the state of `id` under `policy`, or `None` if it holds nothing.
    fn inspect(&self, id: &[u8], policy: &Policy) -> impl Future<Output = StoreResult<Option<BucketInfo>>> + Send;

    /// Deletes every bucket of `id` under every policy, and returns how many live buckets were deleted. Costs
    /// O(the id's buckets), never a scan of the store.
    fn delete_buckets(&self, id: &[u8]) -> impl Future<Output = StoreResult<u64>> + Send;

    /// Hits several (id, policy, cost) at once, in order, and returns one decision each: a request checked
    /// against a per-user and a per-route limit, a burst and a sustained limit, the descriptors of one Envoy
    /// rate-limit request.
    ///
    /// Where [`hit_all_is_atomic`](Self::hit_all_is_atomic) is true (the in-memory store), the batch is all or
    /// nothing: if any hit is denied, none is counted, and each hit that would have passed is answered as a pure
    /// check (allowed, with its remaining units as they are). The default decides each hit on its own with
    /// [`hit`](Self::hit), so hits that pass are counted even when another is denied.
    ///
    /// ```
    /// use floodgate::{Hit, MemoryStore, Policy, Store};
    /// use std::time::Duration;
    ///
    /// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
    /// let store = MemoryStore::new();
    /// let (burst, sustained) = (Policy::fixed_window(5, Duration::from_secs(1))?, Policy::fixed_window(1, Duration::from_secs(60))?);
    /// let both = [Hit { id: b"k", policy: &burst, cost: 1 }, Hit { id: b"k", policy: &sustained, cost: 1 }];
    /// assert!(store.hit_all(&both).await?.iter().all(|d| d.allowed));
    /// let again = store.hit_all(&both).await?;
    /// assert!(again[0].allowed && !again[1].allowed);
    /// // The burst limit counted nothing for the denied request: 4 of 5 are left, not 3.
    /// assert_eq!(store.inspect(b"k", &burst).await?.map(|b| b.remaining), Some(4));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// # }).unwrap();
    /// ```
    fn hit_all(&self, hits: &[Hit<'_>]) -> impl Future<Output = StoreResult<Vec<Decision>>> + Send {
        async move {
            let mut out = Vec::with_capacity(hits.len());
            for h in hits {
                out.push(self.hit(h.id, h.policy, h.cost).await?);
            }
            Ok(out)
        }
    }

    /// Whether [`hit_all`](Self::hit_all) counts nothing when any hit of the batch is denied.
    fn hit_all_is_atomic(&self) -> bool {
        false
    }
}

/// A boxed future, as [`DynStore`] returns.
///
/// ```
/// use floodgate::BoxFuture;
/// let f: BoxFuture<'static, u8> = Box::pin(async { 7 });
/// # drop(f);
/// ```
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The object-safe form of [`Store`], implemented for every store. Pick a backend at run time with
/// [`BoxStore`]; each call then costs one small allocation for its future.
///
/// ```
/// use floodgate::{BoxStore, MemoryStore, Policy, Store};
/// use std::sync::Arc;
/// use std::time::Duration;
///
/// let store: BoxStore = Arc::new(MemoryStore::new());
/// let policy = Policy::fixed_window(1, Duration::from_secs(1))?;
/// let rt = tokio::runtime::Builder::new_current_thread().build()?;
/// assert!(rt.block_on(store.hit(b"k", &policy, 1))?.allowed);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub trait DynStore: Send + Sync {
    /// See [`Store::hit`].
    fn hit_dyn<'a>(&'a self, id: &'a [u8], policy: &'a Policy, cost: u64) -> BoxFuture<'a, StoreResult<Decision>>;
    /// See [`Store::inc`].
    fn inc_dyn<'a>(&'a self, id: &'a [u8], policy: &'a Policy, cost: u64) -> BoxFuture<'a, StoreResult<Decision>>;
    /// See [`Store::set`].
    fn set_dyn<'a>(&'a self, id: &'a [u8], policy: &'a Policy, used: u64) -> BoxFuture<'a, StoreResult<Decision>>;
    /// See [`Store::inspect`].
    fn inspect_dyn<'a>(&'a self, id: &'a [u8], policy: &'a Policy) -> BoxFuture<'a, StoreResult<Option<BucketInfo>>>;
    /// See [`Store::delete_buckets`].
    fn delete_buckets_dyn<'a>(&'a self, id: &'a [u8]) -> BoxFuture<'a, StoreResult<u64>>;
    /// See [`Store::hit_all`].
    fn hit_all_dyn<'a>(&'a self, hits: &'a [Hit<'a>]) -> BoxFuture<'a, StoreResult<Vec<Decision>>>;
    /// See [`Store::hit_all_is_atomic`].
    fn hit_all_is_atomic_dyn(&self) -> bool;
}

impl<S: Store> DynStore for S {
    fn hit_dyn<'a>(&'a self, id: &'a [u8], policy: &'a Policy, cost: u64) -> BoxFuture<'a, StoreResult<Decision>> {
        Box::pin(self.hit(id, policy, cost))
    }
    fn inc_dyn<'a>(&'a self, id: &'a [u8], policy: &'a Policy, cost: u64) -> BoxFuture<'a, StoreResult<Decision>> {
        Box::pin(self.inc(id, policy, cost))
    }
    fn set_dyn<'a>(&'a self, id: &'a [u8], policy: &'a Policy, used: u64) -> BoxFuture<'a, StoreResult<Decision>> {
        Box::pin(self.set(id, policy, used))
    }
    fn inspect_dyn<'a>(&'a self, id: &'a [u8], policy: &'a Policy) -> BoxFuture<'a, StoreResult<Option<BucketInfo>>> {
        Box::pin(self.inspect(id, policy))
    }
    fn delete_buckets_dyn<'a>(&'a self, id: &'a [u8]) -> BoxFuture<'a, StoreResult<u64>> {
        Box::pin(self.delete_buckets(id))
    }
    fn hit_all_dyn<'a>(&'a self, hits: &'a [Hit<'a>]) -> BoxFuture<'a, StoreResult<Vec<Decision>>> {
        Box::pin(self.hit_all(hits))
    }
    fn hit_all_is_atomic_dyn(&self) -> bool {
        self.hit_all_is_atomic()
    }
}

/// A store chosen at run time (see [`DynStore`] for an example).
pub type BoxStore = Arc<dyn DynStore>;

impl Store for BoxStore {
    async fn hit(&self, id: &[u8], policy: &Policy, cost: u64) -> StoreResult<Decision> {
        (**self).hit_dyn(id, policy, cost).await
    }
    async fn inc(&self, id: &[u8], policy: &Policy, cost: u64) -> StoreResult<Decision> {
        (**self).inc_dyn(id, policy, cost).await
    }
    async fn set(&self, id: &[u8], policy: &Policy, used: u64) -> StoreResult<Decision> {
        (**self).set_dyn(id, policy, used).await
    }
    async fn inspect(&self, id: &[u8], policy: &Policy) -> StoreResult<Option<BucketInfo>> {
        (**self).inspect_dyn(id, policy).await
    }
    async fn delete_buckets(&self, id: &[u8]) -> StoreResult<u64> {
        (**self).delete_buckets_dyn(id).await
    }
    async fn hit_all(&self, hits: &[Hit<'_>]) -> StoreResult<Vec<Decision>> {
        (**self).hit_all_dyn(hits).await
    }
    fn hit_all_is_atomic(&self) -> bool {
        (**self).hit_all_is_atomic_dyn()
    }
}

impl<S: Store> Store for Arc<S> {
    fn hit(&self, id: &[u8], policy: &Policy, cost: u64) -> impl Future<Output = StoreResult<Decision>> + Send {
        (**self).hit(id, policy, cost)
    }
    fn inc(&self, id: &[u8], policy: &Policy, cost: u64) -> impl Future<Output = StoreResult<Decision>> + Send {
        (**self).inc(id, policy, cost)
    }
    fn set(&self, id: &[u8], policy: &Policy, used: u64) -> impl Future<Output = StoreResult<Decision>> + Send {
        (**self).set(id, policy, used)
    }
    fn inspect(&self, id: &[u8], policy: &Policy) -> impl Future<Output = StoreResult<Option<BucketInfo>>> + Send {
        (**self).inspect(id, policy)
    }
    fn delete_buckets(&self, id: &[u8]) -> impl Future<Output = StoreResult<u64>> + Send {
        (**self).delete_buckets(id)
    }
    fn hit_all(&self, hits: &[Hit<'_>]) -> impl Future<Output = StoreResult<Vec<Decision>>> + Send {
        (**self).hit_all(hits)
    }
    fn hit_all_is_atomic(&self) -> bool {
        (**self).hit_all_is_atomic()
    }
}
