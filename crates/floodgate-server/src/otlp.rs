//! `--otlp-endpoint`: OpenTelemetry traces over OTLP (HTTP/protobuf), one span per RLS call
//! (`rls.should_rate_limit`: `domain`, `code`, `store_latency_us`) and per HTTP call (`http.request`: `http.route`,
//! `http.request.method`, `http.response.status_code`, `store_latency_us`, and `domain`/`code` on `/json`).
//!
//! Spans are made with the target [`TARGET`], which the log output leaves out and only the exporter's layer
//! takes. They are queued for a batch exporter on a thread of its own: a request never waits on an export, a
//! full queue drops spans, and a failed export is counted (`floodgate_otlp_export_failures_total`) and logged
//! at `warn` at most once a minute, never stopping the server. Without `--otlp-endpoint`, no span is made.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{SdkTracer, SdkTracerProvider, SpanData, SpanExporter};
use parking_lot::Mutex;

/// The `tracing` target of the spans sent over OTLP.
pub const TARGET: &str = "floodgate::otel";

/// Span batches the exporter could not send.
pub static EXPORT_FAILURES: AtomicU64 = AtomicU64::new(0);

/// How long one export may take before it counts as failed.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(5);
/// The least time between two warnings about failed exports.
const WARN_INTERVAL: Duration = Duration::from_secs(60);

/// Why the exporter cannot start.
#[derive(Debug, thiserror::Error)]
pub enum OtlpError {
    /// The endpoint is not a URL the exporter can use, or its HTTP client could not be made.
    #[error("--otlp-endpoint {endpoint:?}: {message}")]
    Exporter {
        /// The flag's value.
        endpoint: String,
        /// What the exporter said.
        message: String,
    },
}

/// The URL spans are posted to: `endpoint` when it already ends in `/v1/traces`, else `endpoint` with
/// `/v1/traces` appended (as OTLP/HTTP exporters treat `OTEL_EXPORTER_OTLP_ENDPOINT`).
pub fn traces_url(endpoint: &str) -> String {
    let endpoint = endpoint.trim();
    if endpoint.ends_with("/v1/traces") {
        endpoint.to_owned()
    } else {
        format!("{}/v1/traces", endpoint.trim_end_matches('/'))
    }
}

/// A running exporter; [`Otlp::shutdown`] sends what is queued.
#[derive(Debug)]
pub struct Otlp {
    provider: SdkTracerProvider,
}

impl Otlp {
    /// Starts the batch exporter towards `endpoint` (`http://host:4318`); call outside the async runtime.
    pub fn start(endpoint: &str) -> Result<(Otlp, SdkTracer), OtlpError> {
        let url = traces_url(endpoint);
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(OtlpError::Exporter {
                endpoint: endpoint.to_owned(),
                message: "not an http:// or https:// URL".into(),
            });
        }
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_endpoint(url)
            .with_timeout(EXPORT_TIMEOUT)
            .build()
            .map_err(|e| OtlpError::Exporter { endpoint: endpoint.to_owned(), message: e.to_string() })?;
        let resource = opentelemetry_sdk::Resource::builder()
            .with_service_name("floodgate")
            .with_attribute(opentelemetry::KeyValue::new("service.version", env!("CARGO_PKG_VERSION")))
            .build();
        let provider = SdkTracerProvider::builder()
            .with_batch_exporter(Counted { inner: exporter, last_warning: Mutex::new(None) })
            .with_resource(resource)
            .build();
        let tracer = provider.tracer("floodgate");
        Ok((Otlp { provider }, tracer))
    }

    /// Sends the spans still queued (within the exporter's timeout) and stops the exporter.
    pub fn shutdown(self) {
        if let Err(e) = self.provider.shutdown() {
            tracing::warn!(error = %e, "the OTLP exporter did not shut down cleanly");
        }
    }
}

/// An exporter that counts its failures and warns about them at most once per [`WARN_INTERVAL`].
#[derive(Debug)]
struct Counted<E> {
    inner: E,
    last_warning: Mutex<Option<Instant>>,
}

impl<E: SpanExporter> SpanExporter for Counted<E> {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let spans = batch.len();
        let r = self.inner.export(batch).await;
        if let Err(e) = &r {
            let failures = EXPORT_FAILURES.fetch_add(1, Relaxed) + 1;
            let now = Instant::now();
            let warn = {
                let mut last = self.last_warning.lock();
                let due = last.is_none_or(|t| now.duration_since(t) >= WARN_INTERVAL);
                if due {
                    *last = Some(now);
                }
                due
            };
            if warn {
                tracing::warn!(error = %e, spans, failures, "cannot export spans over OTLP (dropped; next warning in a minute at most)");
            }
        }
        r
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn set_resource(&mut self, resource: &opentelemetry_sdk::Resource) {
        self.inner.set_resource(resource);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traces_url_appends_the_path_once() {
        assert_eq!(traces_url("http://127.0.0.1:4318"), "http://127.0.0.1:4318/v1/traces");
        assert_eq!(traces_url("http://127.0.0.1:4318/"), "http://127.0.0.1:4318/v1/traces");
        assert_eq!(traces_url("http://c:4318/v1/traces"), "http://c:4318/v1/traces");
    }

    #[test]
    fn refuses_what_is_not_a_url() {
        assert!(Otlp::start("127.0.0.1:4318").is_err());
    }
}
