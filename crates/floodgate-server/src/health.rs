//! Readiness: whether the server can decide now (its store answers, a config is loaded), for `/readyz`,
//! the reference's `/healthcheck` and the standard gRPC health service (`grpc.health.v1`) on the RLS port.
//!
//! `/healthz` is liveness only (200 while the process serves). Readiness probes the store cheaply (an
//! `inspect` of a reserved id, [`PROBE_ID`], under the store's timeout) at most once per [`CACHE_FOR`]: a
//! flood of probes shares one store call. Each probe's outcome sets the `floodgate_ready` gauge and counts
//! `floodgate_ready_failures_total` when not ready.

use std::sync::Arc;
use std::time::{Duration, Instant};

use floodgate::Policy;
use tokio_util::sync::CancellationToken;
use tonic_health::ServingStatus;
use tonic_health::pb::health_server::HealthServer;
use tonic_health::server::{HealthReporter, HealthService};

use crate::state::AppState;

/// The id the store is probed with; no limit is ever decided for it (an `inspect` counts nothing).
pub const PROBE_ID: &[u8] = b"__floodgate_readiness_probe__";

/// How long a probe's outcome is reused.
pub const CACHE_FOR: Duration = Duration::from_secs(1);

/// The longest a probe waits when the store's own timeout is not known ([`Readiness::default`]).
pub const DEFAULT_PROBE_TIMEOUT: Duration = Duration::from_secs(1);

/// The gRPC service whose health is reported besides the overall `""`.
pub const RLS_SERVICE: &str = "envoy.service.ratelimit.v3.RateLimitService";

/// Why the server is not ready.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum NotReady {
    /// The store answered with an error.
    #[error("the store cannot answer: {0}")]
    Store(String),
    /// The store did not answer within the probe's timeout.
    #[error("the store did not answer within {0:?}")]
    Timeout(Duration),
    /// The live config has no domain and no policy (and `--allow-empty-config` was not given).
    #[error("no config is loaded (no domain and no policy)")]
    NoConfig,
}

/// The cached readiness of one server.
#[derive(Debug)]
pub struct Readiness {
    timeout: Duration,
    last: tokio::sync::Mutex<Option<(Instant, Result<(), NotReady>)>>,
}

impl Default for Readiness {
    fn default() -> Self {
        Readiness::new(DEFAULT_PROBE_TIMEOUT)
    }
}

impl Readiness {
    /// Readiness probing the store with `timeout` (the store's own call timeout, e.g. `--redis-timeout-ms`).
    pub fn new(timeout: Duration) -> Self {
        Readiness { timeout: timeout.max(Duration::from_millis(1)), last: tokio::sync::Mutex::new(None) }
    }

    /// Whether `state` is ready: the cached outcome if younger than [`CACHE_FOR`], else a new probe (one at a
    /// time: concurrent callers wait for it and share its outcome).
    pub async fn check(&self, state: &AppState) -> Result<(), NotReady> {
        let mut last = self.last.lock().await;
        if let Some((at, outcome)) = last.as_ref()
            && at.elapsed() < CACHE_FOR
        {
            return outcome.clone();
        }
        let outcome = self.probe(state).await;
        state.metrics.observe_ready(outcome.is_ok());
        if let Err(e) = &outcome {
            tracing::warn!(reason = %e, "not ready");
        }
        *last = Some((Instant::now(), outcome.clone()));
        outcome
    }

    async fn probe(&self, state: &AppState) -> Result<(), NotReady> {
        {
            let cfg = state.config();
            if cfg.domains().is_empty() && cfg.policies().count() == 0 && !state.allow_empty_config {
                return Err(NotReady::NoConfig);
            }
        }
        let policy = Policy::fixed_window(1, Duration::from_secs(1)).map_err(|e| NotReady::Store(e.to_string()))?;
        // The store's own timeout applies first; this one bounds a store that has none.
        let bound = self.timeout.saturating_add(self.timeout);
        match tokio::time::timeout(bound, state.probe_store(PROBE_ID, &policy)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(floodgate::StoreError::Timeout(t))) => Err(NotReady::Timeout(t)),
            Ok(Err(e)) => Err(NotReady::Store(e.to_string())),
            Err(_) => Err(NotReady::Timeout(self.timeout)),
        }
    }
}

/// The gRPC health service to add to the RLS server, and the reporter [`report_grpc`] updates.
pub fn grpc_service() -> (HealthReporter, HealthServer<HealthService>) {
    let reporter = HealthReporter::new();
    let service = HealthServer::new(HealthService::from_health_reporter(reporter.clone()));
    (reporter, service)
}

/// Re-probes readiness every second and reports it as the gRPC health of `""` (the whole server) and of
/// [`RLS_SERVICE`], until `stop`.
pub async fn report_grpc(state: Arc<AppState>, reporter: HealthReporter, stop: CancellationToken) {
    let mut last = None;
    loop {
        let status = match state.readiness.check(&state).await {
            Ok(()) => ServingStatus::Serving,
            Err(_) => ServingStatus::NotServing,
        };
        if last != Some(status) {
            reporter.set_service_status("", status).await;
            reporter.set_service_status(RLS_SERVICE, status).await;
            last = Some(status);
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(CACHE_FOR) => {}
        }
    }
}
