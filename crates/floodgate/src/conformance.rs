//! The public conformance suite: the behaviour every [`Store`] must have, as runnable tests.
//!
//! Every store of this project runs it, and so can yours. Give it a [`Factory`], a function that makes a fresh,
//! empty store whose time source is the [`ManualClock`] it is handed, then either expand one `#[tokio::test]`
//! per behaviour with [`conformance_tests!`](crate::conformance_tests) or call [`run_all`].
//!
//! ```
//! use floodgate::{ManualClock, MemoryStore};
//!
//! async fn make(clock: ManualClock) -> MemoryStore {
//!     MemoryStore::builder().clock(clock).cleanup_interval(None).build()
//! }
//!
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! floodgate::conformance::run_all(make).await;
//! # });
//! ```
//!
//! In a test file, `floodgate::conformance_tests!(make);` expands to one test per behaviour, so a failure
//! names the behaviour. Every case drives time only through the clock: no case sleeps.

use std::future::Future;
use std::time::Duration;

use crate::{Algorithm, BucketInfo, Clock, Decision, Hit, ManualClock, Policy, Store, Timestamp};

/// Makes a fresh, empty store whose time source is the given clock.
pub trait Factory: Send + Sync + 'static {
    /// The store made.
    type Store: Store + 'static;
    /// Makes one store. Stores made by one factory must not share state (use a fresh key prefix, say).
    fn make(&self, clock: ManualClock) -> impl Future<Output = Self::Store> + Send;
}

impl<F, Fut, S> Factory for F
where
    F: Fn(ManualClock) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = S> + Send,
    S: Store + 'static,
{
    type Store = S;
    fn make(&self, clock: ManualClock) -> impl Future<Output = S> + Send {
        self(clock)
    }
}

/// The start of every case: a whole multiple of every window the cases use, far from the epoch.
pub const START: Timestamp = Timestamp::from_secs(1_800_000_000);

/// The policies every case runs under: 5 units per 10 s, one per algorithm (meters with burst 5).
pub fn policies() -> Vec<Policy> {
    Algorithm::ALL.into_iter().filter_map(|a| Policy::new(a, 5, Duration::from_secs(10)).ok()).collect()
}

async fn setup<F: Factory>(f: &F) -> (F::Store, ManualClock) {
    let clock = ManualClock::new(START);
    (f.make(clock.clone()).await, clock)
}

async fn hit<S: Store>(s: &S, id: &[u8], p: &Policy, cost: u64) -> Decision {
    match s.hit(id, p, cost).await {
        Ok(d) => d,
        Err(e) => panic!("{}: hit({id:?}, cost {cost}) failed: {e}", p.key()),
    }
}

/// Fill `id` to the policy's capacity with hits of one unit, checking each.
async fn fill<S: Store>(s: &S, id: &[u8], p: &Policy) {
    for i in 0..p.capacity() {
        let d = hit(s, id, p, 1).await;
        assert!(d.allowed, "{}: hit {i} of {} was denied: {d:?}", p.key(), p.capacity());
    }
}

macro_rules! cases {
    ($($(#[$doc:meta])* $name:ident;)*) => {
        /// The names of every case, in order.
        pub const CASES: &[&str] = &[$(stringify!($name)),*];

        /// Runs every case against stores from `factory`, and panics naming each that failed.
        pub async fn run_all<F: Factory>(factory: F) {
            let mut failed = Vec::new();
            $(
                let run = std::panic::AssertUnwindSafe($name(&factory));
                if let Err(e) = futures_catch(run).await {
                    failed.push(format!("{}: {}", stringify!($name), e));
                }
            )*
            assert!(failed.is_empty(), "conformance cases failed:\n{}", failed.join("\n"));
        }

        /// Expands to one `#[tokio::test]` per conformance case, each running it against `$factory`.
        #[macro_export]
        macro_rules! conformance_tests {
            ($factory:path) => {
                $(
                    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                    async fn $name() {
                        $crate::conformance::$name(&$factory).await;
                    }
                )*
            };
        }
    };
}

/// Runs a future, turning a panic inside any of its polls into an error message.
async fn futures_catch<Fut: Future<Output = ()>>(fut: std::panic::AssertUnwindSafe<Fut>) -> Result<(), String> {
    let mut fut = std::pin::pin!(fut.0);
    std::future::poll_fn(|cx| match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| fut.as_mut().poll(cx))) {
        Ok(std::task::Poll::Ready(())) => std::task::Poll::Ready(Ok(())),
        Ok(std::task::Poll::Pending) => std::task::Poll::Pending,
        Err(panic) => std::task::Poll::Ready(Err(panic_message(&*panic))),
    })
    .await
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "panic".to_owned()
    }
}

cases! {
    admits_up_to_capacity_then_denies;
    denied_hits_consume_nothing;
    retry_after_is_exact;
    cost_zero_is_a_pure_check;
    cost_above_capacity_is_denied;
    costs_take_several_units;
    windows_align_to_the_epoch;
    inc_counts_past_the_limit;
    set_seeds_usage;
    inspect_reports_state;
    state_expires_when_reset;
    delete_buckets_removes_every_policy_of_an_id;
    ids_are_binary_safe_and_independent;
    policies_are_independent;
    named_policy_change_keeps_used_units;
    clock_going_backwards_never_admits_more;
    racing_hits_admit_exactly_the_limit;
    hit_all_decides_in_order;
}

/// Hits of one unit pass until the capacity is used, with `remaining` counting down; the next is denied with
/// a `retry_after`.
pub async fn admits_up_to_capacity_then_denies<F: Factory>(f: &F) {
    for p in policies() {
        let (s, _clock) = setup(f).await;
        for i in 0..p.capacity() {
            let d = hit(&s, b"k", &p, 1).await;
            assert!(d.allowed, "{}: hit {i}: {d:?}", p.key());
            assert_eq!(d.remaining, p.capacity() - i - 1, "{}: remaining after hit {i}", p.key());
            assert_eq!(d.limit, p.capacity(), "{}: limit", p.key());
            assert_eq!(d.retry_after, None, "{}: an admitted hit has no retry_after", p.key());
            assert!(d.reset_after > Duration::ZERO, "{}: reset_after after a hit", p.key());
        }
        let d = hit(&s, b"k", &p, 1).await;
        assert!(!d.allowed, "{}: hit past capacity was admitted", p.key());
        assert_eq!(d.remaining, 0, "{}", p.key());
        assert!(d.retry_after.is_some_and(|r| r > Duration::ZERO), "{}: denied without retry_after: {d:?}", p.key());
    }
}

/// A client that keeps retrying while denied gets through as soon as capacity returns: denials count nothing.
pub async fn denied_hits_consume_nothing<F: Factory>(f: &F) {
    for p in policies() {
        let (s, clock) = setup(f).await;
        fill(&s, b"k", &p).await;
        let first = hit(&s, b"k", &p, 1).await;
        for _ in 0..50 {
            let d = hit(&s, b"k", &p, 1).await;
            assert!(!d.allowed, "{}", p.key());
            assert_eq!(d.retry_after, first.retry_after, "{}: denials moved retry_after", p.key());
        }
        let wait = first.retry_after.unwrap_or_default();
        clock.advance(wait);
        assert!(hit(&s, b"k", &p, 1).await.allowed, "{}: denied after waiting retry_after {wait:?}", p.key());
    }
}

/// `retry_after` is exact to the microsecond: one microsecond earlier is still denied.
pub async fn retry_after_is_exact<F: Factory>(f: &F) {
    for p in policies() {
        let (s, clock) = setup(f).await;
        clock.advance(Duration::from_millis(1_234));
        fill(&s, b"k", &p).await;
        let wait = hit(&s, b"k", &p, 1).await.retry_after.unwrap_or_default();
        assert!(wait > Duration::from_micros(1), "{}", p.key());
        clock.advance(wait - Duration::from_micros(1));
        let early = hit(&s, b"k", &p, 1).await;
        assert!(!early.allowed, "{}: admitted 1 µs before retry_after {wait:?}", p.key());
        assert_eq!(early.retry_after, Some(Duration::from_micros(1)), "{}", p.key());
        clock.advance(Duration::from_micros(1));
        assert!(hit(&s, b"k", &p, 1).await.allowed, "{}: denied at retry_after {wait:?}", p.key());
    }
}

/// Cost 0 checks without counting: any number of checks leave the full capacity.
pub async fn cost_zero_is_a_pure_check<F: Factory>(f: &F) {
    for p in policies() {
        let (s, _clock) = setup(f).await;
        for _ in 0..20 {
            let d = hit(&s, b"k", &p, 0).await;
            assert!(d.allowed && d.remaining == p.capacity(), "{}: {d:?}", p.key());
        }
        assert_eq!(s.inspect(b"k", &p).await.ok().flatten(), None, "{}: a check created state", p.key());
        fill(&s, b"k", &p).await;
        let full = hit(&s, b"k", &p, 0).await;
        assert!(!full.allowed && full.retry_after.is_some(), "{}: check on a full key: {full:?}", p.key());
        let get = s.get(b"k", &p).await.ok();
        assert_eq!(get, Some(full), "{}: get differs from a cost-0 hit", p.key());
    }
}

/// A cost above the capacity is denied with no `retry_after` (it can never pass), and counts nothing.
pub async fn cost_above_capacity_is_denied<F: Factory>(f: &F) {
    for p in policies() {
        let (s, _clock) = setup(f).await;
        for cost in [p.capacity() + 1, u64::MAX] {
            let d = hit(&s, b"k", &p, cost).await;
            assert!(!d.allowed, "{}: cost {cost} admitted", p.key());
            assert!(d.exceeds_capacity(), "{}: cost {cost}: {d:?}", p.key());
            assert_eq!(d.remaining, p.capacity(), "{}", p.key());
        }
        fill(&s, b"k", &p).await;
    }
}

/// A hit of cost `c` takes `c` units, all or nothing.
pub async fn costs_take_several_units<F: Factory>(f: &F) {
    for p in policies() {
        let (s, _clock) = setup(f).await;
        assert_eq!(hit(&s, b"k", &p, 3).await.remaining, 2, "{}", p.key());
        let d = hit(&s, b"k", &p, 3).await;
        assert!(!d.allowed && d.remaining == 2, "{}: 3 + 3 > 5 must be denied whole: {d:?}", p.key());
        let d = hit(&s, b"k", &p, 2).await;
        assert!(d.allowed && d.remaining == 0, "{}: {d:?}", p.key());
    }
}

/// Window algorithms count per epoch-aligned window: the last microsecond of a window and the first of the
/// next are different windows.
pub async fn windows_align_to_the_epoch<F: Factory>(f: &F) {
    for algorithm in [Algorithm::FixedWindow] {
        let p = Policy::new(algorithm, 5, Duration::from_secs(10)).unwrap_or_else(|e| panic!("{e}"));
        let (s, clock) = setup(f).await;
        clock.advance(Duration::from_secs(10) - Duration::from_micros(1));
        fill(&s, b"k", &p).await;
        let d = hit(&s, b"k", &p, 1).await;
        assert_eq!(d.retry_after, Some(Duration::from_micros(1)), "{}", p.key());
        clock.advance(Duration::from_micros(1));
        let d = hit(&s, b"k", &p, 1).await;
        assert!(d.allowed && d.remaining == 4, "{}: {d:?}", p.key());
        assert_eq!(d.reset_after, Duration::from_secs(10), "{}", p.key());
    }
}

/// `inc` counts even past the limit, and says whether it fit.
pub async fn inc_counts_past_the_limit<F: Factory>(f: &F) {
    for p in policies() {
        let (s, _clock) = setup(f).await;
        let d = s.inc(b"k", &p, 3).await.unwrap_or_else(|e| panic!("{e}"));
        assert!(d.allowed && d.remaining == 2, "{}: {d:?}", p.key());
        let d = s.inc(b"k", &p, 4).await.unwrap_or_else(|e| panic!("{e}"));
        assert!(!d.allowed && d.remaining == 0, "{}: {d:?}", p.key());
        let info = s.inspect(b"k", &p).await.ok().flatten();
        assert_eq!(info.map(|i| i.used), Some(7), "{}", p.key());
        assert!(!hit(&s, b"k", &p, 1).await.allowed, "{}", p.key());
    }
}

/// `set` makes the used units what it is told.
pub async fn set_seeds_usage<F: Factory>(f: &F) {
    for p in policies() {
        let (s, _clock) = setup(f).await;
        hit(&s, b"k", &p, 1).await;
        let d = s.set(b"k", &p, 3).await.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(d.remaining, 2, "{}: {d:?}", p.key());
        assert_eq!(s.inspect(b"k", &p).await.ok().flatten().map(|i| i.used), Some(3), "{}", p.key());
        assert_eq!(hit(&s, b"k", &p, 2).await.remaining, 0, "{}", p.key());
    }
}

/// `inspect` reports nothing for an unknown id, and count, remaining, reset and timestamps after hits.
pub async fn inspect_reports_state<F: Factory>(f: &F) {
    for p in policies() {
        let (s, clock) = setup(f).await;
        assert_eq!(s.inspect(b"k", &p).await.ok(), Some(None), "{}", p.key());
        let t0 = clock.now();
        hit(&s, b"k", &p, 1).await;
        clock.advance(Duration::from_secs(1));
        let last = hit(&s, b"k", &p, 1).await;
        let info = s.inspect(b"k", &p).await.ok().flatten().unwrap_or_else(|| panic!("{}: no state", p.key()));
        assert_eq!(info.remaining, last.remaining, "{}", p.key());
        assert_eq!(info.reset_after, last.reset_after, "{}", p.key());
        assert_eq!(info.expires_at, clock.now() + last.reset_after, "{}: expires_at", p.key());
        assert_eq!(info.used, p.capacity() - last.remaining, "{}", p.key());
        assert_eq!(info.created, t0, "{}: created", p.key());
        assert_eq!(info.updated, t0 + Duration::from_secs(1), "{}: updated", p.key());
    }
}

/// Once `reset_after` has passed, the state is gone: nothing to inspect and the full capacity again.
pub async fn state_expires_when_reset<F: Factory>(f: &F) {
    for p in policies() {
        let (s, clock) = setup(f).await;
        fill(&s, b"k", &p).await;
        let d = hit(&s, b"k", &p, 0).await;
        clock.advance(d.reset_after);
        assert_eq!(s.inspect(b"k", &p).await.ok(), Some(None), "{}: state visible after its reset", p.key());
        let d = hit(&s, b"k", &p, 1).await;
        assert!(d.allowed && d.remaining == p.capacity() - 1, "{}: {d:?}", p.key());
    }
}

/// `delete_buckets` removes an id's state under every policy, counts it, and touches no other id.
pub async fn delete_buckets_removes_every_policy_of_an_id<F: Factory>(f: &F) {
    let (s, _clock) = setup(f).await;
    let ps = policies();
    for p in &ps {
        hit(&s, b"gone", p, 2).await;
        hit(&s, b"kept", p, 2).await;
    }
    assert_eq!(s.delete_buckets(b"gone").await.ok(), Some(ps.len() as u64));
    assert_eq!(s.delete_buckets(b"gone").await.ok(), Some(0));
    assert_eq!(s.delete_buckets(b"never").await.ok(), Some(0));
    for p in &ps {
        assert_eq!(s.inspect(b"gone", p).await.ok(), Some(None), "{}", p.key());
        assert_eq!(hit(&s, b"gone", p, 0).await.remaining, p.capacity(), "{}", p.key());
        assert_eq!(hit(&s, b"kept", p, 0).await.remaining, p.capacity() - 2, "{}", p.key());
    }
}

/// Any bytes are an id, and ids that a naive key format would confuse never share state.
pub async fn ids_are_binary_safe_and_independent<F: Factory>(f: &F) {
    let long = vec![b'x'; 1024];
    let ids: Vec<&[u8]> = vec![
        b"",
        b"a",
        b"a:",
        b":a",
        b"{a}",
        b"{",
        b"}",
        b"a}:{b",
        b"\0",
        b"a\0b",
        b"\xff\xfe",
        b"\xc3\x28",
        &long,
        b"user:1",
        b"user:1:fixed_window",
        b"user",
        b"user:1 ",
    ];
    let p = Policy::fixed_window(3, Duration::from_secs(10)).unwrap_or_else(|e| panic!("{e}"));
    let (s, _clock) = setup(f).await;
    for (i, id) in ids.iter().enumerate() {
        for other in &ids[..i] {
            assert_eq!(hit(&s, other, &p, 0).await.remaining, 0, "id {other:?} lost its state");
        }
        assert_eq!(hit(&s, id, &p, 0).await.remaining, 3, "id {id:?} shares state with an earlier id");
        hit(&s, id, &p, 3).await;
        assert!(!hit(&s, id, &p, 1).await.allowed, "id {id:?}");
    }
}

/// Two different policies on one id keep separate state.
pub async fn policies_are_independent<F: Factory>(f: &F) {
    let (s, _clock) = setup(f).await;
    let ps = policies();
    let other = Policy::fixed_window(6, Duration::from_secs(10)).unwrap_or_else(|e| panic!("{e}"));
    for p in &ps {
        fill(&s, b"k", p).await;
    }
    assert_eq!(hit(&s, b"k", &other, 1).await.remaining, 5);
}

/// A named policy whose limit changes keeps its used units, judged by the new limit.
pub async fn named_policy_change_keeps_used_units<F: Factory>(f: &F) {
    for a in Algorithm::ALL {
        let (s, _clock) = setup(f).await;
        let named = |limit| {
            Policy::new(a, limit, Duration::from_secs(10))
                .and_then(|p| p.named("plan"))
                .unwrap_or_else(|e| panic!("{e}"))
        };
        let (small, big) = (named(5), named(10));
        hit(&s, b"k", &small, 4).await;
        let d = hit(&s, b"k", &big, 1).await;
        assert!(d.allowed && d.remaining == 5, "{a}: after raising the limit: {d:?}");
        let d = hit(&s, b"k", &small, 1).await;
        assert!(!d.allowed && d.remaining == 0, "{a}: after lowering it again: {d:?}");
    }
}

/// A clock that steps backwards (a store behind a load balancer, an NTP step) never admits extra units.
pub async fn clock_going_backwards_never_admits_more<F: Factory>(f: &F) {
    for p in policies() {
        let (s, clock) = setup(f).await;
        clock.advance(Duration::from_secs(5));
        fill(&s, b"k", &p).await;
        clock.set(START + Duration::from_secs(4));
        let d = hit(&s, b"k", &p, 1).await;
        assert!(!d.allowed, "{}: admitted after the clock went back: {d:?}", p.key());
    }
}

/// Many tasks racing on one key admit exactly the capacity, never more.
pub async fn racing_hits_admit_exactly_the_limit<F: Factory>(f: &F) {
    for algorithm in Algorithm::ALL {
        let p = Policy::new(algorithm, 100, Duration::from_secs(3600)).unwrap_or_else(|e| panic!("{e}"));
        let (s, _clock) = setup(f).await;
        let s = std::sync::Arc::new(s);
        let mut tasks = Vec::new();
        for _ in 0..16 {
            let (s, p) = (s.clone(), p.clone());
            tasks.push(tokio::spawn(async move {
                let mut admitted = 0u64;
                for _ in 0..25 {
                    admitted += u64::from(hit(&*s, b"hot", &p, 1).await.allowed);
                }
                admitted
            }));
        }
        let mut total = 0;
        for t in tasks {
            total += t.await.unwrap_or_else(|e| panic!("task failed: {e}"));
        }
        assert_eq!(total, 100, "{algorithm}: 16 tasks × 25 hits admitted {total}, not 100");
    }
}

/// `hit_all` answers each hit as `hit` would, in order (a repeated hit sees the one before it); when one is
/// denied, an atomic store counts none of the batch and answers the others as pure checks, and any other store
/// counts exactly the hits it admitted.
pub async fn hit_all_decides_in_order<F: Factory>(f: &F) {
    for p in policies() {
        let (s, _clock) = setup(f).await;
        let wide = Policy::fixed_window(100, Duration::from_secs(10)).unwrap_or_else(|e| panic!("{e}"));
        let used = |d: Option<BucketInfo>| d.map_or(0, |b| b.used);
        // Both fit: both counted.
        let batch = [Hit { id: b"a", policy: &wide, cost: 2 }, Hit { id: b"b", policy: &p, cost: 2 }];
        let ds = s.hit_all(&batch).await.unwrap_or_else(|e| panic!("{e}"));
        assert!(ds.len() == 2 && ds[0].allowed && ds[1].allowed, "{}: {ds:?}", p.key());
        assert_eq!((ds[0].remaining, ds[1].remaining), (98, 3), "{}", p.key());
        // The same id and policy twice: the second sees the first (2 + 1 + 3 > 5), so it is denied.
        let twice = [
            Hit { id: b"a", policy: &wide, cost: 1 },
            Hit { id: b"b", policy: &p, cost: 1 },
            Hit { id: b"b", policy: &p, cost: 3 },
        ];
        let ds = s.hit_all(&twice).await.unwrap_or_else(|e| panic!("{e}"));
        assert!(!ds[2].allowed && ds[2].retry_after.is_some(), "{}: {ds:?}", p.key());
        let (a, b) = (
            used(s.inspect(b"a", &wide).await.unwrap_or_else(|e| panic!("{e}"))),
            used(s.inspect(b"b", &p).await.unwrap_or_else(|e| panic!("{e}"))),
        );
        if s.hit_all_is_atomic() {
            assert_eq!((a, b), (2, 2), "{}: an atomic batch with a denial counted something", p.key());
            assert!(ds[0].allowed && ds[0].remaining == 98 && ds[1].allowed && ds[1].remaining == 3, "{ds:?}");
        } else {
            assert_eq!((a, b), (3, 3), "{}: a batch decided hit by hit", p.key());
        }
    }
}
