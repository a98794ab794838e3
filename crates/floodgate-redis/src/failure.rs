//! What a call answers when Redis cannot, and the errors of the store.

use floodgate::StoreError;
use redis::{ErrorKind, ServerErrorKind};

/// What a decision call answers when Redis cannot (refused, reset, timed out, or an error reply).
///
/// Inspection and deletion ([`Store::inspect`](floodgate::Store::inspect), [`Store::delete_buckets`](floodgate::Store::delete_buckets)) always return the error.
///
/// ```
/// use floodgate_redis::FailurePolicy;
/// assert_eq!(FailurePolicy::default(), FailurePolicy::Error);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum FailurePolicy {
    /// Allow the hit (a cost above the policy's capacity is still denied), and count it in
    /// [`RedisStats::failed_open`](crate::RedisStats::failed_open). Availability over strictness.
    FailOpen,
    /// Deny the hit with `retry_after` set to the store's retry hint ([`RedisStoreBuilder::retry_hint`](crate::RedisStoreBuilder::retry_hint)), and
    /// count it in [`RedisStats::failed_closed`](crate::RedisStats::failed_closed).
    FailClosed,
    /// Return the error ([`StoreError::Timeout`], [`StoreError::Unavailable`] or [`StoreError::Backend`]).
    #[default]
    Error,
}

/// Why the store could not be built or could not answer. Store calls map it into [`StoreError`].
///
/// ```
/// use floodgate_redis::{RedisStore, RedisStoreError};
///
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// // No Redis given, or a prefix that would break the hash tag: refused before any connection.
/// let e = RedisStore::builder().build().await.unwrap_err();
/// assert!(matches!(e, RedisStoreError::Config(_)));
/// let e = RedisStore::builder().url("redis://127.0.0.1/").prefix("a{b}").build().await.unwrap_err();
/// assert!(e.to_string().contains("must not contain"));
/// # });
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RedisStoreError {
    /// The Redis client failed (connection, protocol, or an error reply).
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    /// A script answered something this store cannot read (a version mismatch, or a bug).
    #[error("unexpected reply from the floodgate script: {0}")]
    Reply(String),
    /// The builder was given no Redis to talk to, or an invalid option.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// The id is longer than the store's maximum.
    #[error("id of {len} bytes is longer than the maximum of {max}")]
    IdTooLong {
        /// The id's length.
        len: usize,
        /// The store's maximum.
        max: usize,
    },
    /// A key of the id holds another Redis type than the store writes there (someone `SET` a string where a
    /// bucket's hash belongs): every call on the id fails until
    /// [`delete_buckets`](floodgate::Store::delete_buckets) of the id clears it.
    #[error("{0}: the key holds the wrong redis type; delete_buckets of the id (reset) clears it")]
    WrongType(String),
    /// The script found its deadline (in Redis's own time) already past and changed nothing (see the crate
    /// docs, "Calls past their deadline"). A caller sees it only when the store's estimate of Redis's clock was
    /// off; the store then learns the new offset and retries once.
    #[error("the call reached redis after its deadline and was dropped unrun ({late_us} µs late by redis time)")]
    Expired {
        /// How far past the deadline Redis would have run it, in microseconds of Redis time.
        late_us: u64,
    },
}

/// The kind of a fault, for the per-kind counters of [`RedisStats`](crate::RedisStats).
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum FaultKind {
    Timeout,
    Unavailable,
    Backend,
    WrongType,
    Expired,
    InvalidId,
}

impl RedisStoreError {
    /// A Redis error reply `WRONGTYPE ...` becomes [`RedisStoreError::WrongType`].
    pub(crate) fn classify(self) -> Self {
        match self {
            RedisStoreError::Redis(r) if r.code() == Some("WRONGTYPE") => {
                let detail = r.detail().unwrap_or("").trim();
                // The scripts' own message names the key; a plain Redis one does not.
                let detail = detail.split(" script:").next().unwrap_or(detail).trim();
                RedisStoreError::WrongType(if detail.starts_with("floodgate key") {
                    format!("WRONGTYPE {detail}")
                } else {
                    format!("WRONGTYPE a key of the id: {detail}")
                })
            }
            e => e,
        }
    }

    pub(crate) fn kind(&self) -> FaultKind {
        match self {
            RedisStoreError::Redis(r) if r.is_timeout() => FaultKind::Timeout,
            RedisStoreError::Redis(r) if is_unavailable(r) => FaultKind::Unavailable,
            RedisStoreError::IdTooLong { .. } => FaultKind::InvalidId,
            RedisStoreError::WrongType(_) => FaultKind::WrongType,
            RedisStoreError::Expired { .. } => FaultKind::Expired,
            _ => FaultKind::Backend,
        }
    }
}

pub(crate) fn is_unavailable(r: &redis::RedisError) -> bool {
    r.is_io_error()
        || r.is_connection_dropped()
        || r.is_connection_refusal()
        || matches!(r.kind(), ErrorKind::ClusterConnectionNotFound)
        || matches!(
            r.kind(),
            ErrorKind::Server(
                ServerErrorKind::ClusterDown
                    | ServerErrorKind::TryAgain
                    | ServerErrorKind::MasterDown
                    | ServerErrorKind::Moved
                    | ServerErrorKind::Ask
            )
        )
}

impl From<RedisStoreError> for StoreError {
    fn from(e: RedisStoreError) -> Self {
        match e.classify() {
            RedisStoreError::Redis(r) if is_unavailable(&r) => StoreError::Unavailable(r.to_string()),
            e @ RedisStoreError::IdTooLong { .. } => StoreError::InvalidId(e.to_string()),
            e => StoreError::Backend(e.to_string()),
        }
    }
}
