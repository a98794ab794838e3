//! [`Decision`]: the answer to one hit.

use std::time::Duration;

/// The answer to a hit: whether it passed, and what a client should be told.
///
/// The fields map one-to-one onto the IETF `RateLimit` / `RateLimit-Policy` and `Retry-After` HTTP headers and
/// onto an Envoy RLS descriptor status.
///
/// A denied hit consumes nothing: `remaining` and `reset_after` describe the state as it was.
///
/// ```
/// use floodgate::{Limiter, Policy};
/// use std::time::Duration;
///
/// let limiter = Limiter::in_memory();
/// let policy = Policy::fixed_window(1, Duration::from_secs(60))?;
/// let first = limiter.hit_sync("user:42", &policy);
/// assert!(first.allowed);
/// assert_eq!(first.remaining, 0);
/// let second = limiter.hit_sync("user:42", &policy);
/// assert!(!second.allowed);
/// assert!(second.retry_after.is_some());
/// # Ok::<(), floodgate::PolicyError>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decision {
    /// Whether the hit passed (and, for a hit with a cost, was counted).
    pub allowed: bool,
    /// The policy's capacity: its `limit` for window algorithms, its `burst` for meters.
    pub limit: u64,
    /// Whole units a hit could still take right now.
    pub remaining: u64,
    /// Time until the state is back to empty (zero when nothing is counted).
    pub reset_after: Duration,
    /// Only when denied: the earliest time after which a hit of the same cost could pass, if nothing else is
    /// counted meanwhile. `None` on a denial means never: the cost is above the policy's capacity.
    pub retry_after: Option<Duration>,
    /// Whether the store could not decide and its failure policy answered instead (a fail-open allow or a
    /// fail-closed denial, as `floodgate-redis` gives when Redis is down): such a decision counted nothing and says
    /// nothing about the key's real state. Always `false` from the in-memory store.
    pub fallback: bool,
}

impl Decision {
    /// Whether this is a denial that no amount of waiting cures (the cost exceeds the policy's capacity).
    ///
    /// ```
    /// use floodgate::{Limiter, Policy};
    /// use std::time::Duration;
    ///
    /// let limiter = Limiter::in_memory();
    /// let policy = Policy::token_bucket(5, Duration::from_secs(1))?;
    /// let d = limiter.hit_cost_sync("k", &policy, 6);
    /// assert!(!d.allowed && d.exceeds_capacity());
    /// # Ok::<(), floodgate::PolicyError>(())
    /// ```
    pub fn exceeds_capacity(&self) -> bool {
        !self.allowed && self.retry_after.is_none()
    }
}
