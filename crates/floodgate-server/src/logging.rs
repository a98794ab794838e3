//! The server's logs: text or JSON (`--log-format`), at `--log-level` unless `RUST_LOG` is set, every event on
//! one line.
//!
//! Logs go to stderr through a bounded queue and a writer thread of their own, so logging can never stop the
//! server: a reader that went away (`| head`, a dead log shipper) or a full pipe only loses log lines (never
//! blocking a request or a signal), and a failed write is never reported with a panic.
//!
//! One line per event, whatever a message or a field holds: the JSON format escapes line breaks as JSON does,
//! and the text format writes each line break inside an event as the two characters `\n` ([`OneLineWriter`]),
//! so a multi-line error (a config with several problems) stays one event for a log shipper.

use std::io::Write;
use std::time::SystemTime;

use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, MakeWriter};
use tracing_subscriber::registry::LookupSpan;

/// `--log-format`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// `2026-01-01T00:00:00.123456Z  INFO floodgate: message key=value`.
    #[default]
    Text,
    /// One JSON object per line: `ts`, `level`, `target`, `message` and the event's fields as plain values.
    Json,
}

/// Why logging cannot start.
#[derive(Debug, thiserror::Error)]
pub enum LoggingError {
    /// `RUST_LOG` or `--log-level` is not a filter.
    #[error(
        "{source_name} {value:?} is not a log filter (e.g. `info`, `debug`, `info,floodgate::request=debug`): {message}"
    )]
    Filter {
        /// `RUST_LOG` or `--log-level`.
        source_name: &'static str,
        /// What it said.
        value: String,
        /// Why it is refused.
        message: String,
    },
}

/// The filter: `RUST_LOG` when it is set (and not empty), else `level`.
pub fn filter(level: &str) -> Result<tracing_subscriber::EnvFilter, LoggingError> {
    let (source_name, value) = match std::env::var("RUST_LOG") {
        Ok(v) if !v.trim().is_empty() => ("RUST_LOG", v),
        _ => ("--log-level", level.to_owned()),
    };
    tracing_subscriber::EnvFilter::try_new(&value).map_err(|e| LoggingError::Filter {
        source_name,
        value,
        message: e.to_string(),
    })
}

/// Installs the global subscriber; the guard flushes what is queued when dropped (at the end of `main`).
pub fn init(format: LogFormat, level: &str) -> Result<tracing_appender::non_blocking::WorkerGuard, LoggingError> {
    init_with(format, level, None)
}

/// [`init`], and with `tracer` (`--otlp-endpoint`) a layer that sends the spans of target
/// [`crate::otlp::TARGET`] to it (the log output leaves those spans out).
pub fn init_with(
    format: LogFormat,
    level: &str,
    tracer: Option<opentelemetry_sdk::trace::SdkTracer>,
) -> Result<tracing_appender::non_blocking::WorkerGuard, LoggingError> {
    use tracing_subscriber::Layer as _;
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    let filter = filter(level)?;
    let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .lossy(true)
        .buffered_lines_limit(64 * 1024)
        .finish(std::io::stderr());
    let writer = OneLineWriter(writer);
    let Some(tracer) = tracer else {
        // No exporter: one global filter, whose level hint and per-callsite interest keep disabled events (the
        // HTTP/2 crates' debug and trace events) at their cost of nothing.
        let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(writer).log_internal_errors(false);
        match format {
            LogFormat::Text => builder.with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr())).init(),
            LogFormat::Json => builder.with_ansi(false).event_format(JsonFormat).init(),
        }
        return Ok(guard);
    };
    let fmt = tracing_subscriber::fmt::layer().with_writer(writer).log_internal_errors(false);
    let fmt = match format {
        LogFormat::Text => fmt.with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr())).boxed(),
        LogFormat::Json => fmt.with_ansi(false).event_format(JsonFormat).boxed(),
    };
    // Per-layer filters that keep level hints and callsite interest (no filter_fn, which would make every
    // callsite "sometimes" and evaluate each disabled event): the log leaves the spans for the exporter out.
    let off = format!("{}=off", crate::otlp::TARGET).parse().ok();
    let filter = match off {
        Some(d) => filter.add_directive(d),
        None => filter,
    };
    let otel = tracing_opentelemetry::layer()
        .with_tracer(tracer)
        .with_filter(tracing_subscriber::filter::Targets::new().with_target(crate::otlp::TARGET, tracing::Level::INFO));
    tracing_subscriber::registry().with(fmt.with_filter(filter)).with(otel).init();
    Ok(guard)
}

/// Writes each event (one `write` call per event, as `tracing_subscriber::fmt` makes them) as one line: every
/// line break before the event's last is written as `\n` (and a carriage return as `\r`).
#[derive(Clone, Debug)]
pub struct OneLineWriter<W>(pub W);

impl<W: Write> Write for OneLineWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let body = buf.strip_suffix(b"\n").unwrap_or(buf);
        if !body.iter().any(|b| *b == b'\n' || *b == b'\r') {
            self.0.write_all(buf)?;
            return Ok(buf.len());
        }
        let mut line = Vec::with_capacity(buf.len() + 16);
        for &b in body {
            match b {
                b'\n' => line.extend_from_slice(b"\\n"),
                b'\r' => line.extend_from_slice(b"\\r"),
                _ => line.push(b),
            }
        }
        line.push(b'\n');
        self.0.write_all(&line)?;
        Ok(buf.len())
    }

    fn write_all(&mut self, buf: &[u8]) -> std::io::Result<()> {
        self.write(buf).map(drop)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
}

impl<'a, W: MakeWriter<'a>> MakeWriter<'a> for OneLineWriter<W> {
    type Writer = OneLineWriter<W::Writer>;

    fn make_writer(&'a self) -> Self::Writer {
        OneLineWriter(self.0.make_writer())
    }
}

/// The JSON format: `{"ts":…,"level":"INFO","target":"floodgate","message":…, fields…}`, plus `spans` (the
/// names of the spans the event is in, outermost first) when there are any. A field recorded with `?` is
/// written as its `Debug` text and one recorded with `%` as its `Display` text, both as JSON strings; numbers
/// and booleans as themselves.
#[derive(Clone, Copy, Debug, Default)]
pub struct JsonFormat;

impl<S, N> FormatEvent<S, N> for JsonFormat
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(&self, ctx: &FmtContext<'_, S, N>, mut w: Writer<'_>, event: &Event<'_>) -> std::fmt::Result {
        let meta = event.metadata();
        let mut map = serde_json::Map::new();
        map.insert("ts".into(), crate::access_log::rfc3339(SystemTime::now()).into());
        map.insert("level".into(), meta.level().as_str().into());
        map.insert("target".into(), meta.target().into());
        event.record(&mut JsonVisitor(&mut map));
        if let Some(scope) = ctx.event_scope() {
            let spans: Vec<serde_json::Value> = scope.from_root().map(|s| s.name().into()).collect();
            map.insert("spans".into(), spans.into());
        }
        writeln!(w, "{}", serde_json::Value::Object(map))
    }
}

struct JsonVisitor<'a>(&'a mut serde_json::Map<String, serde_json::Value>);

impl JsonVisitor<'_> {
    fn put(&mut self, field: &Field, value: serde_json::Value) {
        let name = field.name();
        // A field named as one of the line's own keys keeps both.
        let key =
            if matches!(name, "ts" | "level" | "target" | "spans") { format!("field.{name}") } else { name.into() };
        self.0.insert(key, value);
    }
}

impl Visit for JsonVisitor<'_> {
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.put(field, serde_json::Number::from_f64(value).map_or_else(|| value.to_string().into(), Into::into));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.put(field, value.into());
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.put(field, value.into());
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.put(field, value.into());
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.put(field, value.into());
    }
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.put(field, value.to_string().into());
    }
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.put(field, format!("{value:?}").into());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_breaks_inside_an_event_are_escaped_and_the_last_kept() {
        let mut w = OneLineWriter(Vec::new());
        assert!(w.write_all(b"refused:\na.yaml:1:1: x\r\nb.yaml:2:2: y\n").is_ok());
        assert!(w.write_all(b"plain\n").is_ok());
        assert_eq!(String::from_utf8_lossy(&w.0), "refused:\\na.yaml:1:1: x\\r\\nb.yaml:2:2: y\nplain\n");
    }
}
