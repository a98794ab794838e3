//! Per-request records: a `debug` event per decision (target `floodgate::request`) and the optional access log
//! (`--access-log PATH`), one JSON line per decision.
//!
//! The access log can never stop or slow the server: a decision's line goes into a bounded queue
//! ([`QUEUE_LINES`]) that a thread of its own writes to the file; when the queue is full (the disk cannot keep
//! up) the line is dropped and counted in `floodgate_access_log_dropped_total`, as is a line the file refused
//! (disk full). The file is bounded: when the next line would take it past `--access-log-max-bytes` it is renamed
//! to `PATH.1` (replacing the previous one) and a new `PATH` started, so at most twice the bound is on disk.
//!
//! A line (fields always present; `rules` lists the rule matched by each descriptor with a limit, by its stats
//! key, as the per-rule metrics name it):
//!
//! ```json
//! {"ts":"2026-01-01T00:00:00.123Z","api":"rls","domain":"api","rules":["api.user"],"code":"OVER_LIMIT","store_us":41,"latency_us":97}
//! ```

use std::cell::Cell;
use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::mpsc::{Receiver, SyncSender, TryRecvError, TrySendError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::metrics::Metrics;

/// The most lines waiting for the writer thread; past it, lines are dropped and counted.
pub const QUEUE_LINES: usize = 16 * 1024;
/// The most rules a record lists (a request may carry 256 descriptors).
const MAX_RULES: usize = 16;
/// The most characters of a client-supplied string (domain, rule key) a record keeps.
const MAX_FIELD: usize = 128;

tokio::task_local! {
    static STORE_NANOS: Cell<u64>;
}

/// Adds a store call's time to the request being measured by [`measure_store`] (nothing outside one).
#[inline]
pub(crate) fn add_store_time(elapsed: Duration) {
    let nanos = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
    let _ = STORE_NANOS.try_with(|c| c.set(c.get().saturating_add(nanos)));
}

/// Runs `fut`, answering its output and the time its store calls took (on whichever threads it ran).
/// The time is also added to an enclosing measurement, if any (an HTTP call's span around `/json`'s record).
pub async fn measure_store<F: Future>(fut: F) -> (F::Output, Duration) {
    let (out, store) = STORE_NANOS
        .scope(Cell::new(0), async move {
            let out = fut.await;
            let nanos = STORE_NANOS.try_with(Cell::get).unwrap_or(0);
            (out, Duration::from_nanos(nanos))
        })
        .await;
    add_store_time(store);
    (out, store)
}

/// Which API decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Api {
    /// Envoy RLS gRPC.
    Rls,
    /// The HTTP API (`/v1/hit`, `/json`).
    Http,
}

impl Api {
    fn as_str(self) -> &'static str {
        match self {
            Api::Rls => "rls",
            Api::Http => "http",
        }
    }
}

/// One decision.
#[derive(Debug)]
pub struct Record<'a> {
    /// The API.
    pub api: Api,
    /// The RLS domain (empty for `/v1/hit`).
    pub domain: &'a str,
    /// The rules matched (RLS: their stats keys; `/v1/hit`: the policy's name, or `inline`).
    pub rules: &'a [Arc<str>],
    /// The answer: the RLS code (`OK`, `OVER_LIMIT`, `UNAVAILABLE`, ...) or the HTTP status.
    pub code: &'a str,
    /// Time spent in the store.
    pub store: Duration,
    /// Time the whole decision took.
    pub latency: Duration,
}

/// Whether per-request records are wanted: the access log is on, or `floodgate::request` logs at debug.
#[inline]
pub fn wanted(log: Option<&AccessLog>) -> bool {
    log.is_some() || tracing::enabled!(target: "floodgate::request", tracing::Level::DEBUG)
}

/// Logs `r` at debug (target `floodgate::request`) and writes it to `log` if any.
pub fn record(log: Option<&AccessLog>, r: &Record<'_>) {
    let rules = r.rules.iter().take(MAX_RULES).map(|s| clip(s)).collect::<Vec<_>>().join(",");
    tracing::debug!(
        target: "floodgate::request",
        api = r.api.as_str(),
        domain = clip(r.domain),
        rules = %rules,
        code = r.code,
        store_us = u64::try_from(r.store.as_micros()).unwrap_or(u64::MAX),
        latency_us = u64::try_from(r.latency.as_micros()).unwrap_or(u64::MAX),
        "decision"
    );
    if let Some(log) = log {
        log.write(r);
    }
}

/// At most [`MAX_FIELD`] characters of `s`.
fn clip(s: &str) -> &str {
    match s.char_indices().nth(MAX_FIELD) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

/// The access log: a bounded queue to a writer thread that appends to a file of bounded size.
#[derive(Debug)]
pub struct AccessLog {
    tx: SyncSender<String>,
    metrics: Arc<Metrics>,
}

/// Why the access log cannot be opened.
#[derive(Debug, thiserror::Error)]
pub enum AccessLogError {
    /// The file cannot be opened for appending.
    #[error("--access-log {path}: {source}")]
    Open {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The writer thread cannot be started.
    #[error("--access-log: cannot start its writer thread: {0}")]
    Thread(std::io::Error),
    /// The bound is too small to hold a line.
    #[error("--access-log-max-bytes {0}: at least 4096")]
    TooSmall(u64),
}

impl AccessLog {
    /// Opens (appends to) `path`, rotated to `PATH.1` when it would pass `max_bytes`; drops are counted in
    /// `metrics`.
    pub fn open(path: &Path, max_bytes: u64, metrics: Arc<Metrics>) -> Result<AccessLog, AccessLogError> {
        if max_bytes < 4096 {
            return Err(AccessLogError::TooSmall(max_bytes));
        }
        let file = open_append(path)?;
        let size = file.metadata().map(|m| m.len()).unwrap_or(0);
        let (tx, rx) = std::sync::mpsc::sync_channel(QUEUE_LINES);
        let writer =
            Writer { path: path.to_owned(), out: BufWriter::new(file), size, max_bytes, metrics: metrics.clone() };
        std::thread::Builder::new()
            .name("access-log".into())
            .spawn(move || writer.run(rx))
            .map_err(AccessLogError::Thread)?;
        Ok(AccessLog { tx, metrics })
    }

    /// Queues `r`'s line, or drops and counts it when the queue is full.
    pub fn write(&self, r: &Record<'_>) {
        let rules: Vec<&str> = r.rules.iter().take(MAX_RULES).map(|s| clip(s)).collect();
        let line = serde_json::json!({
            "ts": rfc3339(SystemTime::now()),
            "api": r.api.as_str(),
            "domain": clip(r.domain),
            "rules": rules,
            "code": r.code,
            "store_us": u64::try_from(r.store.as_micros()).unwrap_or(u64::MAX),
            "latency_us": u64::try_from(r.latency.as_micros()).unwrap_or(u64::MAX),
        });
        let mut line = line.to_string();
        line.push('\n');
        match self.tx.try_send(line) {
            Ok(()) => {}
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.metrics.access_log_dropped.fetch_add(1, Relaxed);
            }
        }
    }
}

fn open_append(path: &Path) -> Result<File, AccessLogError> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|source| AccessLogError::Open { path: path.display().to_string(), source })
}

struct Writer {
    path: PathBuf,
    out: BufWriter<File>,
    size: u64,
    max_bytes: u64,
    metrics: Arc<Metrics>,
}

impl Writer {
    /// Writes lines until every sender is gone, flushing whenever the queue is empty.
    fn run(mut self, rx: Receiver<String>) {
        let mut warned = false;
        loop {
            let line = match rx.try_recv() {
                Ok(line) => line,
                Err(TryRecvError::Empty) => {
                    let _ = self.out.flush();
                    match rx.recv() {
                        Ok(line) => line,
                        Err(_) => break,
                    }
                }
                Err(TryRecvError::Disconnected) => break,
            };
            if let Err(e) = self.write(&line) {
                self.metrics.access_log_dropped.fetch_add(1, Relaxed);
                if !warned {
                    warned = true;
                    tracing::warn!(path = %self.path.display(), error = %e, "access log write failed; lines are dropped and counted");
                }
            }
        }
        let _ = self.out.flush();
    }

    fn write(&mut self, line: &str) -> std::io::Result<()> {
        let len = line.len() as u64;
        if self.size + len > self.max_bytes {
            self.rotate()?;
        }
        self.out.write_all(line.as_bytes())?;
        self.size += len;
        Ok(())
    }

    /// `PATH` becomes `PATH.1` (replacing it) and a new, empty `PATH` is started.
    fn rotate(&mut self) -> std::io::Result<()> {
        self.out.flush()?;
        let mut old = self.path.clone().into_os_string();
        old.push(".1");
        std::fs::rename(&self.path, &old)?;
        let file = OpenOptions::new().create(true).write(true).truncate(true).open(&self.path)?;
        self.out = BufWriter::new(file);
        self.size = 0;
        Ok(())
    }
}

/// `t` as RFC 3339 in UTC with milliseconds (`2026-01-01T00:00:00.123Z`).
pub fn rfc3339(t: SystemTime) -> String {
    let since = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Howard Hinnant's civil_from_days, for days since 1970-01-01 (never negative here).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60,
        since.subsec_millis()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_names_known_instants() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(UNIX_EPOCH + Duration::from_millis(951_782_400_123)), "2000-02-29T00:00:00.123Z");
        assert_eq!(rfc3339(UNIX_EPOCH + Duration::from_secs(1_767_225_599)), "2025-12-31T23:59:59.000Z");
    }

    #[test]
    fn a_full_queue_drops_and_counts_instead_of_waiting() {
        let metrics = Arc::new(Metrics::new());
        // A queue of 2 that nothing drains: a writer that cannot keep up.
        let (tx, _rx) = std::sync::mpsc::sync_channel(2);
        let log = AccessLog { tx, metrics: metrics.clone() };
        let rules = [Arc::from("d.k")];
        let r = Record {
            api: Api::Rls,
            domain: "d",
            rules: &rules,
            code: "OK",
            store: Duration::ZERO,
            latency: Duration::ZERO,
        };
        for _ in 0..5 {
            log.write(&r);
        }
        assert_eq!(metrics.access_log_dropped.load(Relaxed), 3);
        assert!(metrics.render().contains("floodgate_access_log_dropped_total 3"));
    }

    #[test]
    fn the_file_rotates_to_one_old_copy_and_stays_bounded() {
        let dir = std::env::temp_dir().join(format!("floodgate-access-unit-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let path = dir.join("access.log");
        let _ = std::fs::remove_file(&path);
        let metrics = Arc::new(Metrics::new());
        let file = open_append(&path).ok();
        let Some(file) = file else { panic!("cannot open {}", path.display()) };
        let mut w = Writer { path: path.clone(), out: BufWriter::new(file), size: 0, max_bytes: 4096, metrics };
        let line = format!("{}\n", "x".repeat(99));
        for _ in 0..200 {
            assert!(w.write(&line).is_ok());
        }
        assert!(w.out.flush().is_ok());
        let len = |p: &Path| std::fs::metadata(p).map(|m| m.len()).unwrap_or(u64::MAX);
        assert!(len(&path) <= 4096 && len(&path) > 0);
        assert_eq!(len(&dir.join("access.log.1")), 4000);
    }
}
