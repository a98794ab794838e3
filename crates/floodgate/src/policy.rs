//! [`Policy`]: how many units per window, by which [`Algorithm`].

use std::fmt;
use std::hash::BuildHasher;
use std::sync::Arc;
use std::time::Duration;

use strength_reduce::StrengthReducedU64;

use crate::time::duration_micros;

/// How a [`Policy`] decides.
///
/// | algorithm | admits when | bounds |
/// |---|---|---|
/// | [`FixedWindow`](Algorithm::FixedWindow) | `count + cost <= limit` in the epoch-aligned window | `limit` per aligned window; up to `2 × limit` across a boundary |
/// | [`SlidingWindow`](Algorithm::SlidingWindow) | `prev × (1 − elapsed/window) + cur + cost <= limit` | an estimate: see the crate docs for its measured error |
/// | [`TokenBucket`](Algorithm::TokenBucket) | the bucket holds `cost` tokens (capacity `burst`, refilled `limit` per `window`) | `burst + limit × t/window` in any span `t` |
/// | [`LeakyBucket`](Algorithm::LeakyBucket) | `level + cost <= burst` (leaks `limit` per `window`) | same as the token bucket |
/// | [`Gcra`](Algorithm::Gcra) | theoretical arrival time − now ≤ burst tolerance | same as the token bucket |
/// | [`SlidingLog`](Algorithm::SlidingLog) | units counted in `(now − window, now]` + `cost <= limit` | `limit` in **every** window of that length, wherever it starts (the only exact one) |
///
/// The last three are one meter seen three ways: for the same `limit`, `window` and `burst` they make the
/// same decisions (a property test checks each against its own reference model). Pick the name your team
/// knows; all three keep 16 bytes of state and compute exactly, with no rounding drift. The sliding log pays for
/// its exact bound with state that grows with the hits in a window (8 bytes per millisecond that saw a hit), so
/// its `limit` is capped at [`Policy::MAX_LOG_LIMIT`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Algorithm {
    /// Hammer's default: a counter per epoch-aligned window.
    FixedWindow,
    /// Cloudflare's weighted two-window estimate: bounded memory, smooth at window boundaries.
    SlidingWindow,
    /// Tokens refilled continuously; a hit takes `cost` tokens.
    TokenBucket,
    /// A level that drains continuously; a hit adds `cost`.
    LeakyBucket,
    /// Generic cell rate algorithm (governor, redis-cell).
    Gcra,
    /// The exact sliding window: a log of admitted units (Hammer 7's sliding window).
    SlidingLog,
}

impl Algorithm {
    /// Every algorithm, in declaration order.
    pub const ALL: [Algorithm; 6] = [
        Algorithm::FixedWindow,
        Algorithm::SlidingWindow,
        Algorithm::TokenBucket,
        Algorithm::LeakyBucket,
        Algorithm::Gcra,
        Algorithm::SlidingLog,
    ];

    /// The name used in configs and keys: `fixed_window`, `sliding_window`, `token_bucket`, `leaky_bucket`, `gcra`,
    /// `sliding_log`.
    ///
    /// ```
    /// use floodgate::Algorithm;
    /// assert_eq!(Algorithm::Gcra.name(), "gcra");
    /// assert_eq!("token_bucket".parse::<Algorithm>().unwrap(), Algorithm::TokenBucket);
    /// ```
    pub const fn name(self) -> &'static str {
        match self {
            Algorithm::FixedWindow => "fixed_window",
            Algorithm::SlidingWindow => "sliding_window",
            Algorithm::TokenBucket => "token_bucket",
            Algorithm::LeakyBucket => "leaky_bucket",
            Algorithm::Gcra => "gcra",
            Algorithm::SlidingLog => "sliding_log",
        }
    }

    /// Whether this is one of the continuous meters (token bucket, leaky bucket, GCRA), which take a `burst`.
    pub const fn is_meter(self) -> bool {
        matches!(self, Algorithm::TokenBucket | Algorithm::LeakyBucket | Algorithm::Gcra)
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Algorithm {
    type Err = PolicyError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Algorithm::ALL.into_iter().find(|a| a.name() == s).ok_or_else(|| PolicyError::UnknownAlgorithm(s.to_owned()))
    }
}

/// Why a [`Policy`] could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PolicyError {
    /// `limit` was zero.
    #[error("limit must be at least 1")]
    ZeroLimit,
    /// `limit` above [`Policy::MAX_LIMIT`].
    #[error("limit {0} is above the maximum of {max}", max = Policy::MAX_LIMIT)]
    LimitTooLarge(u64),
    /// A sliding log's `limit` above [`Policy::MAX_LOG_LIMIT`] (its state grows with the limit).
    #[error(
        "sliding_log limit {0} is above its maximum of {max} (its state grows with the limit; use sliding_window or gcra for larger limits)",
        max = Policy::MAX_LOG_LIMIT
    )]
    LogLimitTooLarge(u64),
    /// The window was shorter than one microsecond.
    #[error("window must be at least 1 microsecond")]
    ZeroWindow,
    /// The window was longer than [`Policy::MAX_WINDOW`].
    #[error("window {0:?} is longer than the maximum of {max:?}", max = Policy::MAX_WINDOW)]
    WindowTooLong(Duration),
    /// `burst` was zero.
    #[error("burst must be at least 1")]
    ZeroBurst,
    /// `burst` was given to a window algorithm, which has no burst.
    #[error("{0} takes no burst (only token_bucket, leaky_bucket and gcra do)")]
    BurstNotSupported(Algorithm),
    /// The meter's exact arithmetic would not fit in 53 bits (so that Lua, with doubles, stays exact too).
    #[error(
        "burst {burst} at {limit} per {window:?} needs more than 53 bits of exact state; use a coarser window or a smaller burst"
    )]
    MeterOverflow {
        /// The policy's limit.
        limit: u64,
        /// The policy's window.
        window: Duration,
        /// The policy's burst.
        burst: u64,
    },
    /// An algorithm name that is not one of [`Algorithm::ALL`].
    #[error(
        "unknown algorithm {0:?} (expected one of fixed_window, sliding_window, token_bucket, leaky_bucket, gcra, sliding_log)"
    )]
    UnknownAlgorithm(String),
    /// A policy name that is empty or longer than [`Policy::MAX_NAME_LEN`] bytes.
    #[error("policy name must be 1 to {max} bytes", max = Policy::MAX_NAME_LEN)]
    BadName,
    /// A policy name that begins with an algorithm's name and a colon (`gcra:...`): that form is reserved for
    /// the keys of unnamed policies ([`Policy::key`]), so a name can never share state with a definition.
    #[error("policy name {0:?} begins with an algorithm's name and a colon, which is reserved for unnamed policies")]
    ReservedName(String),
}

/// A rate-limit rule: `limit` units per `window`, decided by an [`Algorithm`].
///
/// Policies are plain values passed to every call, so each key can have its own and a policy can change at
/// run time with no rebuild. State belongs to a policy's *key*: its name if it has one, otherwise its whole
/// definition. What happens to live state when a policy changes:
///
/// - **Named policy, new limit or burst**: the state carries over and is judged by the new numbers (a count of
///   80 under a new limit of 50 is over the limit until the window ends).
/// - **Named policy, new window length**: window counters start afresh at the new alignment (old windows no
///   longer match); a meter keeps its used units, which now drain at the new rate.
/// - **Named policy, new algorithm**: the old state is discarded and the key starts fresh.
/// - **Unnamed policy, anything changed**: it is a different policy, with its own fresh state.
///
/// ```
/// use floodgate::{Algorithm, Policy};
/// use std::time::Duration;
///
/// let api = Policy::new(Algorithm::Gcra, 100, Duration::from_secs(60))?.with_burst(10)?.named("api")?;
/// assert_eq!(api.limit(), 100);
/// assert_eq!(api.capacity(), 10);
/// assert_eq!(api.key(), "api");
///
/// assert!(Policy::fixed_window(0, Duration::from_secs(1)).is_err());
/// # Ok::<(), floodgate::PolicyError>(())
/// ```
#[derive(Clone, Debug)]
pub struct Policy {
    algorithm: Algorithm,
    limit: u64,
    window_us: u64,
    burst: u64,
    /// Meter arithmetic: `window / limit = unit / drain` in lowest terms. One unit of cost raises the level by
    /// `unit`; the level drains by `drain` per microsecond.
    unit: u64,
    drain: u64,
    /// `burst × unit`: the level a meter holds when full.
    meter_cap: u64,
    /// The largest cost a meter's short path takes: `burst` for a meter draining one unit a µs, else 0.
    meter_short_cost: u64,
    /// The same for an unnamed meter only (its own state needs no check of the unit), else 0.
    meter_short_cost_unnamed: u64,
    key: Arc<str>,
    fingerprint: u64,
    named: bool,
    /// Divisions by the window, the unit and the drain, precomputed: the hot path does no `div` instruction.
    window_div: StrengthReducedU64,
    unit_div: StrengthReducedU64,
    drain_div: StrengthReducedU64,
}

impl PartialEq for Policy {
    fn eq(&self, other: &Self) -> bool {
        (self.algorithm, self.limit, self.window_us, self.burst, self.named, &self.key)
            == (other.algorithm, other.limit, other.window_us, other.burst, other.named, &other.key)
    }
}

impl Eq for Policy {}

impl Policy {
    /// The largest accepted `limit` (and `burst`): 2^48.
    pub const MAX_LIMIT: u64 = 1 << 48;
    /// The longest accepted window: 10 years of 365 days.
    pub const MAX_WINDOW: Duration = Duration::from_secs(10 * 365 * 86_400);
    /// The longest accepted policy name, in bytes.
    pub const MAX_NAME_LEN: usize = 128;
    /// The largest `limit` of a [sliding log](Algorithm::SlidingLog): 100 000 (at most 800 KB of log per key).
    pub const MAX_LOG_LIMIT: u64 = 100_000;
    /// The bound on a meter's exact state (`burst × window / gcd(window, limit)` in microseconds).
    pub const MAX_METER_STATE: u64 = 1 << 53;

    /// A policy of `limit` units per `window` decided by `algorithm`. Meters get `burst = limit`.
    ///
    /// ```
    /// use floodgate::{Algorithm, Policy, PolicyError};
    /// use std::time::Duration;
    ///
    /// let p = Policy::new(Algorithm::SlidingWindow, 10, Duration::from_secs(1))?;
    /// assert_eq!(p.window(), Duration::from_secs(1));
    /// assert_eq!(Policy::new(Algorithm::Gcra, 10, Duration::ZERO), Err(PolicyError::ZeroWindow));
    /// # Ok::<(), PolicyError>(())
    /// ```
    pub fn new(algorithm: Algorithm, limit: u64, window: Duration) -> Result<Self, PolicyError> {
        if limit == 0 {
            return Err(PolicyError::ZeroLimit);
        }
        if limit > Self::MAX_LIMIT {
            return Err(PolicyError::LimitTooLarge(limit));
        }
        if algorithm == Algorithm::SlidingLog && limit > Self::MAX_LOG_LIMIT {
            return Err(PolicyError::LogLimitTooLarge(limit));
        }
        if window > Self::MAX_WINDOW {
            return Err(PolicyError::WindowTooLong(window));
        }
        let window_us = duration_micros(window);
        if window_us == 0 {
            return Err(PolicyError::ZeroWindow);
        }
        Self::build(algorithm, limit, window_us, limit, None)
    }

    /// A fixed-window policy: `limit` per epoch-aligned `window`.
    ///
    /// ```
    /// use floodgate::{Algorithm, Policy};
    /// use std::time::Duration;
    /// let p = Policy::fixed_window(5, Duration::from_secs(1))?;
    /// assert_eq!(p.algorithm(), Algorithm::FixedWindow);
    /// # Ok::<(), floodgate::PolicyError>(())
    /// ```
    pub fn fixed_window(limit: u64, window: Duration) -> Result<Self, PolicyError> {
        Self::new(Algorithm::FixedWindow, limit, window)
    }

    /// A sliding-window policy (weighted two-window estimate).
    ///
    /// ```
    /// use floodgate::{Algorithm, Policy};
    /// use std::time::Duration;
    /// assert_eq!(Policy::sliding_window(5, Duration::from_secs(1))?.algorithm(), Algorithm::SlidingWindow);
    /// # Ok::<(), floodgate::PolicyError>(())
    /// ```
    pub fn sliding_window(limit: u64, window: Duration) -> Result<Self, PolicyError> {
        Self::new(Algorithm::SlidingWindow, limit, window)
    }

    /// A sliding-log policy: at most `limit` units in every window of length `window` (see
    /// [`algorithm::sliding_log`](crate::algorithm::sliding_log)). `limit` is at most
    /// [`MAX_LOG_LIMIT`](Self::MAX_LOG_LIMIT).
    ///
    /// ```
    /// use floodgate::{Algorithm, Policy, PolicyError};
    /// use std::time::Duration;
    /// assert_eq!(Policy::sliding_log(5, Duration::from_secs(1))?.algorithm(), Algorithm::SlidingLog);
    /// assert_eq!(
    ///     Policy::sliding_log(1_000_000, Duration::from_secs(1)),
    ///     Err(PolicyError::LogLimitTooLarge(1_000_000))
    /// );
    /// # Ok::<(), PolicyError>(())
    /// ```
    pub fn sliding_log(limit: u64, window: Duration) -> Result<Self, PolicyError> {
        Self::new(Algorithm::SlidingLog, limit, window)
    }

    /// A token-bucket policy: capacity `limit` (change it with [`with_burst`](Self::with_burst)), refilled `limit` per `window`.
    ///
    /// ```
    /// use floodgate::Policy;
    /// use std::time::Duration;
    /// assert_eq!(Policy::token_bucket(5, Duration::from_secs(1))?.capacity(), 5);
    /// # Ok::<(), floodgate::PolicyError>(())
    /// ```
    pub fn token_bucket(limit: u64, window: Duration) -> Result<Self, PolicyError> {
        Self::new(Algorithm::TokenBucket, limit, window)
    }

    /// A leaky-bucket policy: capacity `limit` (see [`with_burst`](Self::with_burst)), draining `limit` per `window`.
    ///
    /// ```
    /// use floodgate::Policy;
    /// use std::time::Duration;
    /// assert_eq!(Policy::leaky_bucket(5, Duration::from_secs(1))?.limit(), 5);
    /// # Ok::<(), floodgate::PolicyError>(())
    /// ```
    pub fn leaky_bucket(limit: u64, window: Duration) -> Result<Self, PolicyError> {
        Self::new(Algorithm::LeakyBucket, limit, window)
    }

    /// A GCRA policy: `limit` per `window`, bursts of up to `limit` (see [`with_burst`](Self::with_burst)).
    ///
    /// ```
    /// use floodgate::Policy;
    /// use std::time::Duration;
    /// assert_eq!(Policy::gcra(5, Duration::from_secs(1))?.capacity(), 5);
    /// # Ok::<(), floodgate::PolicyError>(())
    /// ```
    pub fn gcra(limit: u64, window: Duration) -> Result<Self, PolicyError> {
        Self::new(Algorithm::Gcra, limit, window)
    }

    /// Sets the burst (the bucket's capacity) of a meter. Window algorithms reject it.
    ///
    /// ```
    /// use floodgate::{Policy, PolicyError, Algorithm};
    /// use std::time::Duration;
    /// let p = Policy::token_bucket(10, Duration::from_secs(1))?.with_burst(3)?;
    /// assert_eq!(p.capacity(), 3);
    /// assert_eq!(
    ///     Policy::fixed_window(10, Duration::from_secs(1))?.with_burst(3),
    ///     Err(PolicyError::BurstNotSupported(Algorithm::FixedWindow))
    /// );
    /// # Ok::<(), PolicyError>(())
    /// ```
    pub fn with_burst(self, burst: u64) -> Result<Self, PolicyError> {
        if !self.algorithm.is_meter() {
            return Err(PolicyError::BurstNotSupported(self.algorithm));
        }
        if burst == 0 {
            return Err(PolicyError::ZeroBurst);
        }
        if burst > Self::MAX_LIMIT {
            return Err(PolicyError::LimitTooLarge(burst));
        }
        let name = if self.named { Some(self.key.clone()) } else { None };
        Self::build(self.algorithm, self.limit, self.window_us, burst, name)
    }

    /// Gives the policy a name: its state is then keyed by the name, so changing the numbers keeps live state
    /// (see the type's docs). Names are 1 to [`MAX_NAME_LEN`](Self::MAX_NAME_LEN) bytes, and do not begin with
    /// an algorithm's name and a colon: that form is the key of an unnamed policy.
    ///
    /// ```
    /// use floodgate::{Policy, PolicyError};
    /// use std::time::Duration;
    /// let p = Policy::gcra(5, Duration::from_secs(1))?.named("login")?;
    /// assert_eq!(p.name(), Some("login"));
    /// assert!(Policy::gcra(5, Duration::from_secs(1))?.named("").is_err());
    /// let taken = Policy::gcra(5, Duration::from_secs(1))?.named("gcra:100/60000000us:b10");
    /// assert!(matches!(taken, Err(PolicyError::ReservedName(_))));
    /// assert!(Policy::gcra(5, Duration::from_secs(1))?.named("gcra-login").is_ok());
    /// # Ok::<(), floodgate::PolicyError>(())
    /// ```
    pub fn named(self, name: impl Into<Arc<str>>) -> Result<Self, PolicyError> {
        let name = name.into();
        if name.is_empty() || name.len() > Self::MAX_NAME_LEN {
            return Err(PolicyError::BadName);
        }
        if name.split_once(':').is_some_and(|(head, _)| head.parse::<Algorithm>().is_ok()) {
            return Err(PolicyError::ReservedName(name.to_string()));
        }
        Self::build(self.algorithm, self.limit, self.window_us, self.burst, Some(name))
    }

    fn build(
        algorithm: Algorithm,
        limit: u64,
        window_us: u64,
        burst: u64,
        name: Option<Arc<str>>,
    ) -> Result<Self, PolicyError> {
        let g = gcd(window_us, limit);
        let (unit, drain) = (window_us / g, limit / g);
        if algorithm.is_meter() && burst.checked_mul(unit).is_none_or(|s| s > Self::MAX_METER_STATE) {
            return Err(PolicyError::MeterOverflow { limit, window: Duration::from_micros(window_us), burst });
        }
        let named = name.is_some();
        let key: Arc<str> = match name {
            Some(n) => n,
            None if algorithm.is_meter() => format!("{algorithm}:{limit}/{window_us}us:b{burst}").into(),
            None => format!("{algorithm}:{limit}/{window_us}us").into(),
        };
        let fingerprint = foldhash::fast::FixedState::with_seed(0x666c_6f6f_6467_6174).hash_one(&*key);
        Ok(Policy {
            algorithm,
            limit,
            window_us,
            burst,
            unit,
            drain,
            meter_cap: burst.saturating_mul(unit),
            meter_short_cost: if algorithm.is_meter() && drain == 1 { burst } else { 0 },
            meter_short_cost_unnamed: if algorithm.is_meter() && drain == 1 && !named { burst } else { 0 },
            key,
            fingerprint,
            named,
            window_div: StrengthReducedU64::new(window_us),
            unit_div: StrengthReducedU64::new(unit),
            drain_div: StrengthReducedU64::new(drain),
        })
    }

    /// The algorithm.
    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// Units admitted per window (the meters' refill rate).
    pub fn limit(&self) -> u64 {
        self.limit
    }

    /// The window.
    pub fn window(&self) -> Duration {
        Duration::from_micros(self.window_us)
    }

    /// The window in microseconds.
    pub fn window_micros(&self) -> u64 {
        self.window_us
    }

    /// The most units one instant can take: `burst` for meters, `limit` for windows. A cost above it is
    /// always denied (see [`Decision::retry_after`](crate::Decision::retry_after)).
    pub fn capacity(&self) -> u64 {
        if self.algorithm.is_meter() { self.burst } else { self.limit }
    }

    /// The name, if the policy was [`named`](Self::named).
    pub fn name(&self) -> Option<&str> {
        self.named.then_some(&*self.key)
    }

    /// The key the policy's state is stored under: its name, or a canonical form of its definition such as
    /// `gcra:100/60000000us:b10`.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// A 64-bit hash of [`key`](Self::key), stable within one build of this crate.
    pub fn fingerprint(&self) -> u64 {
        self.fingerprint
    }

    /// Meter arithmetic: level added per unit of cost (`window / gcd(window, limit)`, in µs).
    pub fn meter_unit(&self) -> u64 {
        self.unit
    }

    /// Meter arithmetic: level drained per microsecond (`limit / gcd(window, limit)`).
    pub fn meter_drain(&self) -> u64 {
        self.drain
    }
}

impl Policy {
    /// The start of the window that contains `now` (µs).
    #[inline]
    pub(crate) fn window_start(&self, now: u64) -> u64 {
        now - now % self.window_div
    }

    /// The level of a full meter (`burst × unit`).
    #[inline(always)]
    pub(crate) fn meter_cap(&self) -> u64 {
        self.meter_cap
    }

    /// Whether a hit of `cost` may take a meter's short path (see `meter::short_hit`) on a state written in
    /// this policy's unit: the policy is a meter draining one unit a µs, and `cost` is 1 to `burst`. One
    /// comparison, decided before any state is read.
    #[inline(always)]
    pub(crate) fn meter_short(&self, cost: u64) -> bool {
        cost.wrapping_sub(1) < self.meter_short_cost
    }

    /// [`meter_short`](Self::meter_short), and the policy is unnamed: its fingerprint hashes its whole
    /// definition, so a state found under it was written in its unit (names cannot take the form of
    /// definitions: see [`PolicyError::ReservedName`]).
    #[inline(always)]
    pub(crate) fn meter_short_unnamed(&self, cost: u64) -> bool {
        cost.wrapping_sub(1) < self.meter_short_cost_unnamed
    }

    /// `now % window` (µs).
    #[inline]
    pub(crate) fn window_elapsed(&self, now: u64) -> u64 {
        now % self.window_div
    }

    /// `ceil(x / window)`.
    #[inline]
    pub(crate) fn div_ceil_window(&self, x: u64) -> u64 {
        let (q, r) = StrengthReducedU64::div_rem(x, self.window_div);
        q + u64::from(r != 0)
    }

    /// Whole units in a meter level (`level / unit`).
    #[inline]
    pub(crate) fn meter_units(&self, level: u64) -> u64 {
        level / self.unit_div
    }

    /// Level drained in `elapsed` µs (`elapsed × drain`, saturating).
    #[inline(always)]
    pub(crate) fn meter_drained(&self, elapsed: u64) -> u64 {
        // A drain of one a microsecond (the usual policy, see below) needs no multiplication.
        if self.drain == 1 { elapsed } else { elapsed.saturating_mul(self.drain) }
    }

    /// Microseconds for `excess` level to drain (`ceil(excess / drain)`).
    #[inline(always)]
    pub(crate) fn meter_drain_time(&self, excess: u64) -> u64 {
        // A drain of one a microsecond (a window that the limit divides, in µs: the usual policy) needs no
        // division; this keeps a hit's work after its state's load short.
        if self.drain == 1 {
            return excess;
        }
        let (q, r) = StrengthReducedU64::div_rem(excess, self.drain_div);
        q + u64::from(r != 0)
    }
}

fn gcd(mut a: u64, mut b: u64) -> u64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}
