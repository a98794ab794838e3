//! The process's own series, read from `/proc/self` at each scrape (Linux only; absent elsewhere):
//! `process_cpu_seconds_total`, `process_resident_memory_bytes`, `process_open_fds`, `process_max_fds` and
//! `process_start_time_seconds`, named as the Prometheus client libraries name them.

use prometheus_client::encoding::DescriptorEncoder;

/// Clock ticks per second of `/proc/self/stat` (`USER_HZ`, 100 on every Linux architecture).
#[cfg(target_os = "linux")]
const TICKS: f64 = 100.0;

/// Writes the process series it can read; a file it cannot read leaves its series out.
#[cfg(target_os = "linux")]
pub fn encode(enc: &mut DescriptorEncoder<'_>) -> std::fmt::Result {
    use crate::metrics::{counter_f64, gauge, gauge_f64};
    let stat = std::fs::read_to_string("/proc/self/stat").ok();
    // The fields after the command name (which may hold spaces), from the 3rd (state) on.
    let fields: Vec<&str> = stat
        .as_deref()
        .and_then(|s| s.rsplit_once(") "))
        .map(|(_, rest)| rest.split_ascii_whitespace().collect())
        .unwrap_or_default();
    let field = |n: usize| fields.get(n - 3).and_then(|v| v.parse::<u64>().ok());
    if let (Some(utime), Some(stime)) = (field(14), field(15)) {
        counter_f64(
            enc,
            "process_cpu_seconds_total",
            "Total user and system CPU time spent in seconds.",
            (utime + stime) as f64 / TICKS,
        )?;
    }
    if let Some(kb) = status_kb("VmRSS:") {
        gauge(
            enc,
            "process_resident_memory_bytes",
            "Resident memory size in bytes.",
            i64::try_from(kb.saturating_mul(1024)).unwrap_or(i64::MAX),
        )?;
    }
    if let Ok(dir) = std::fs::read_dir("/proc/self/fd") {
        // The directory handle itself is one of the entries.
        let open = dir.count().saturating_sub(1);
        gauge(enc, "process_open_fds", "Number of open file descriptors.", i64::try_from(open).unwrap_or(i64::MAX))?;
    }
    if let Some(max) = max_fds() {
        gauge(
            enc,
            "process_max_fds",
            "Maximum number of open file descriptors.",
            i64::try_from(max).unwrap_or(i64::MAX),
        )?;
    }
    if let (Some(start), Some(boot)) = (field(22), boot_time()) {
        gauge_f64(
            enc,
            "process_start_time_seconds",
            "Start time of the process since unix epoch in seconds.",
            boot as f64 + start as f64 / TICKS,
        )?;
    }
    Ok(())
}

/// Not on Linux: no process series.
#[cfg(not(target_os = "linux"))]
pub fn encode(_enc: &mut DescriptorEncoder<'_>) -> std::fmt::Result {
    Ok(())
}

#[cfg(target_os = "linux")]
fn status_kb(key: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with(key))?;
    line[key.len()..].split_ascii_whitespace().next()?.parse().ok()
}

#[cfg(target_os = "linux")]
fn max_fds() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line["Max open files".len()..].split_ascii_whitespace().next()?.parse().ok()
}

#[cfg(target_os = "linux")]
fn boot_time() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    stat.lines().find_map(|l| l.strip_prefix("btime "))?.trim().parse().ok()
}
