//! The store's fault counters.

use std::sync::atomic::{AtomicBool, AtomicU64};

/// Counters of the faults a store has met, by how it answered them and by kind ([`RedisStore::stats`](crate::RedisStore::stats)).
///
/// Every failed call counts once in [`failures`](Self::failures) and once in exactly one kind
/// ([`timeouts`](Self::timeouts), [`unavailable`](Self::unavailable), [`backend`](Self::backend),
/// [`wrong_type`](Self::wrong_type) or [`expired`](Self::expired)), whatever the failure policy; and once in how it
/// was answered ([`failed_open`](Self::failed_open), [`failed_closed`](Self::failed_closed) or
/// [`errors`](Self::errors)). An id refused by [`RedisStoreBuilder::max_id_len`](crate::RedisStoreBuilder::max_id_len) is the caller's error, not a
/// fault: it counts nowhere.
///
/// ```
/// let quiet = floodgate_redis::RedisStats::default();
/// assert_eq!(quiet.failed_open + quiet.failed_closed + quiet.errors, 0);
/// assert_eq!(quiet.failures, quiet.timeouts + quiet.unavailable + quiet.backend + quiet.wrong_type + quiet.expired);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RedisStats {
    /// Decisions allowed because Redis could not answer ([`FailurePolicy::FailOpen`](crate::FailurePolicy::FailOpen)).
    pub failed_open: u64,
    /// Decisions denied because Redis could not answer ([`FailurePolicy::FailClosed`](crate::FailurePolicy::FailClosed)).
    pub failed_closed: u64,
    /// Calls that returned an error (any call under [`FailurePolicy::Error`](crate::FailurePolicy::Error); inspections and deletions always).
    pub errors: u64,
    /// Of all the faults above, those that were the per-call timeout.
    pub timeouts: u64,
    /// Scripts reloaded after a `NOSCRIPT` reply.
    pub script_reloads: u64,
    /// Every failed call, however it was answered (the sum of [`timeouts`](Self::timeouts) and the kinds
    /// below).
    pub failures: u64,
    /// Failures because Redis could not be reached: connection refused, reset or closed, cluster down,
    /// `TRYAGAIN`, `MOVED`/`ASK` past the client's retries.
    pub unavailable: u64,
    /// Failures because Redis answered an error (other than `WRONGTYPE`) or a reply the store cannot read.
    pub backend: u64,
    /// Failures because a key of the id holds another Redis type ([`RedisStoreError::WrongType`](crate::RedisStoreError::WrongType)).
    pub wrong_type: u64,
    /// Calls answered [`RedisStoreError::Expired`](crate::RedisStoreError::Expired): the script dropped them unrun as past their deadline while
    /// their caller still waited (the store's estimate of Redis's clock was off, even after one retry). Calls
    /// dropped after their caller gave up are counted in [`timeouts`](Self::timeouts), where they failed.
    pub expired: u64,
    /// Connections to a single Redis over TCP opened again after the first, each as soon as the previous one
    /// was seen closed (a restart, `CLIENT KILL`, Redis's idle `timeout`), before any call was sent on it.
    pub reconnects: u64,
}

#[derive(Default)]
pub(crate) struct Counters {
    /// Set by the first fault after a success, cleared by the next success: one warning per outage, not one
    /// per call.
    pub(crate) degraded: AtomicBool,
    pub(crate) failed_open: AtomicU64,
    pub(crate) failed_closed: AtomicU64,
    pub(crate) errors: AtomicU64,
    pub(crate) timeouts: AtomicU64,
    pub(crate) script_reloads: AtomicU64,
    pub(crate) failures: AtomicU64,
    pub(crate) unavailable: AtomicU64,
    pub(crate) backend: AtomicU64,
    pub(crate) wrong_type: AtomicU64,
    pub(crate) expired: AtomicU64,
}
