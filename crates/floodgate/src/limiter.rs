//! The [`Limiter`] facade: what applications call.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::Arc;
use std::time::Duration;

use crate::algorithm::Op;
use crate::memory::ByteKey;
use crate::store::{BucketInfo, Store, StoreError};
use crate::{Decision, MemoryStore, Policy, PolicyError};

/// Why a [`Limiter`] call failed.
///
/// ```
/// use floodgate::{Limiter, LimiterError};
/// # tokio::runtime::Builder::new_current_thread().build()?.block_on(async {
/// let err = Limiter::in_memory().hit_named("k", "no-such-policy", 1).await.unwrap_err();
/// assert!(matches!(err, LimiterError::UnknownPolicy(_)));
/// # });
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LimiterError {
    /// No policy of that name was registered.
    #[error("no policy named {0:?}")]
    UnknownPolicy(String),
    /// The cost can never pass: it is above the policy's capacity (waiting would never end).
    #[error("a cost of {cost} can never pass a policy of capacity {capacity}")]
    InsufficientCapacity {
        /// The cost asked for.
        cost: u64,
        /// The policy's capacity.
        capacity: u64,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Rate limiting over a [`Store`], with named policies.
///
/// ```
/// use floodgate::{Limiter, Policy};
/// use std::time::Duration;
///
/// # tokio::runtime::Builder::new_current_thread().enable_time().build()?.block_on(async {
/// let limiter = Limiter::in_memory().with_policy("api", Policy::gcra(100, Duration::from_secs(60))?)?;
/// let decision = limiter.hit_named("user:42", "api", 1).await?;
/// assert!(decision.allowed);
/// assert_eq!(decision.remaining, 99);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// # })?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug)]
pub struct Limiter<S = MemoryStore> {
    store: S,
    policies: Arc<HashMap<Arc<str>, Policy>>,
}

impl Limiter<MemoryStore> {
    /// A limiter on a fresh in-memory store with default options.
    pub fn in_memory() -> Self {
        Self::new(MemoryStore::new())
    }

    /// Admits one unit for `id` under `policy`, synchronously (the in-memory store needs no `.await`).
    ///
    /// ```
    /// use floodgate::{Limiter, Policy};
    /// use std::time::Duration;
    /// let limiter = Limiter::in_memory();
    /// let policy = Policy::token_bucket(2, Duration::from_secs(1))?;
    /// assert!(limiter.hit_sync("ip:10.0.0.1", &policy).allowed);
    /// # Ok::<(), floodgate::PolicyError>(())
    /// ```
    pub fn hit_sync(&self, id: impl AsRef<[u8]>, policy: &Policy) -> Decision {
        self.hit_cost_sync(id, policy, 1)
    }

    /// Admits `cost` units for `id` under `policy`, synchronously.
    ///
    /// ```
    /// use floodgate::{Limiter, Policy};
    /// use std::time::Duration;
    /// let limiter = Limiter::in_memory();
    /// let policy = Policy::leaky_bucket(10, Duration::from_secs(1))?;
    /// assert_eq!(limiter.hit_cost_sync("upload", &policy, 4).remaining, 6);
    /// # Ok::<(), floodgate::PolicyError>(())
    /// ```
    pub fn hit_cost_sync(&self, id: impl AsRef<[u8]>, policy: &Policy, cost: u64) -> Decision {
        let store: &MemoryStore<ByteKey> = &self.store;
        store.apply_at(id.as_ref(), policy, Op::Hit, cost, store.clock().now())
    }
}

impl<S: Store> Limiter<S> {
    /// A limiter over `store`.
    ///
    /// ```
    /// use floodgate::{Limiter, MemoryStore};
    /// let limiter = Limiter::new(MemoryStore::builder().max_keys(Some(10_000)).build());
    /// assert!(limiter.policy("missing").is_none());
    /// ```
    pub fn new(store: S) -> Self {
        Limiter { store, policies: Arc::default() }
    }

    /// Registers `policy` under `name` (the policy is [named](Policy::named) with it, so its state survives a
    /// change of its numbers). A name that is empty or longer than [`Policy::MAX_NAME_LEN`] is an error.
    ///
    /// ```
    /// use floodgate::{Limiter, Policy, PolicyError};
    /// use std::time::Duration;
    /// let limiter = Limiter::in_memory().with_policy("login", Policy::gcra(5, Duration::from_secs(60))?)?;
    /// assert_eq!(limiter.policy("login").and_then(Policy::name), Some("login"));
    /// assert_eq!(Limiter::in_memory().with_policy("", Policy::gcra(5, Duration::from_secs(60))?).err(), Some(PolicyError::BadName));
    /// # Ok::<(), PolicyError>(())
    /// ```
    pub fn with_policy(mut self, name: &str, policy: Policy) -> Result<Self, PolicyError> {
        let policy = if policy.name() == Some(name) { policy } else { policy.named(name)? };
        Arc::make_mut(&mut self.policies).insert(name.into(), policy);
        Ok(self)
    }

    /// The policy registered under `name`.
    pub fn policy(&self, name: &str) -> Option<&Policy> {
        self.policies.get(name)
    }

    /// The store.
    pub fn store(&self) -> &S {
        &self.store
    }

    /// Admits one unit for `id` under `policy`.
    pub async fn hit(&self, id: impl AsRef<[u8]>, policy: &Policy) -> Result<Decision, StoreError> {
        self.store.hit(id.as_ref(), policy, 1).await
    }

    /// Admits `cost` units for `id` under `policy` (see [`Store::hit`]).
    pub async fn hit_cost(&self, id: impl AsRef<[u8]>, policy: &Policy, cost: u64) -> Result<Decision, StoreError> {
        self.store.hit(id.as_ref(), policy, cost).await
    }

    /// Admits `cost` units for `id` under the policy registered as `name`.
    pub async fn hit_named(&self, id: impl AsRef<[u8]>, name: &str, cost: u64) -> Result<Decision, LimiterError> {
        let policy = self.policies.get(name).ok_or_else(|| LimiterError::UnknownPolicy(name.to_owned()))?;
        Ok(self.store.hit(id.as_ref(), policy, cost).await?)
    }

    /// Whether a hit of one unit would pass now, counting nothing.
    pub async fn check(&self, id: impl AsRef<[u8]>, policy: &Policy) -> Result<Decision, StoreError> {
        self.store.get(id.as_ref(), policy).await
    }

    /// The state of `id` under `policy`, if any.
    pub async fn inspect(&self, id: impl AsRef<[u8]>, policy: &Policy) -> Result<Option<BucketInfo>, StoreError> {
        self.store.inspect(id.as_ref(), policy).await
    }

    /// Forgets every bucket of `id`; returns how many live ones there were.
    pub async fn reset(&self, id: impl AsRef<[u8]>) -> Result<u64, StoreError> {
        self.store.delete_buckets(id.as_ref()).await
    }

    /// Waits until `cost` units for `id` pass, then returns that decision (governor's `until_ready`).
    ///
    /// A cost above the policy's capacity fails at once with [`LimiterError::InsufficientCapacity`].
    ///
    /// ```
    /// use floodgate::{Limiter, Policy};
    /// use std::time::Duration;
    ///
    /// # tokio::runtime::Builder::new_current_thread().enable_time().build()?.block_on(async {
    /// let limiter = Limiter::in_memory();
    /// let policy = Policy::gcra(1000, Duration::from_secs(1))?;
    /// let d = limiter.until_ready("job", &policy, 1, Duration::ZERO).await?;
    /// assert!(d.allowed);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// # })?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub async fn until_ready(
        &self,
        id: impl AsRef<[u8]>,
        policy: &Policy,
        cost: u64,
        jitter: Duration,
    ) -> Result<Decision, LimiterError> {
        let id = id.as_ref();
        let random = foldhash::fast::RandomState::default();
        let mut attempt = 0u64;
        loop {
            let d = self.store.hit(id, policy, cost).await?;
            match d.retry_after {
                _ if d.allowed => return Ok(d),
                None => return Err(LimiterError::InsufficientCapacity { cost, capacity: policy.capacity() }),
                Some(wait) => {
                    attempt += 1;
                    let extra = match u64::try_from(jitter.as_nanos()) {
                        Ok(0) | Err(_) => Duration::ZERO,
                        Ok(j) => Duration::from_nanos(random.hash_one(attempt) % j),
                    };
                    // A zero wait would spin: the state changes by the microsecond, so wait at least that.
                    tokio::time::sleep(wait.max(Duration::from_micros(1)) + extra).await;
                }
            }
        }
    }
}
