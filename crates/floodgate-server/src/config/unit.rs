//! Units and windows: how long a `rate_limit` lasts.

use super::*;

/// A `rate_limit` unit. Month is 30 days and year 365 days; windows align to the epoch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Unit {
    /// One second.
    Second,
    /// 60 seconds.
    Minute,
    /// 3600 seconds.
    Hour,
    /// 86 400 seconds.
    Day,
    /// 7 days.
    Week,
    /// 30 days.
    Month,
    /// 365 days.
    Year,
}

impl Unit {
    pub(super) const ALL: [Unit; 7] =
        [Unit::Second, Unit::Minute, Unit::Hour, Unit::Day, Unit::Week, Unit::Month, Unit::Year];

    /// The unit's name in configs (lower case; configs may use any case, as Envoy's do).
    pub fn name(self) -> &'static str {
        match self {
            Unit::Second => "second",
            Unit::Minute => "minute",
            Unit::Hour => "hour",
            Unit::Day => "day",
            Unit::Week => "week",
            Unit::Month => "month",
            Unit::Year => "year",
        }
    }

    /// The window length.
    pub fn window(self) -> Duration {
        Duration::from_secs(match self {
            Unit::Second => 1,
            Unit::Minute => 60,
            Unit::Hour => 3_600,
            Unit::Day => 86_400,
            Unit::Week => 7 * 86_400,
            Unit::Month => 30 * 86_400,
            Unit::Year => 365 * 86_400,
        })
    }

    /// The largest unit that divides `window` evenly, else [`Unit::Second`].
    pub fn largest_dividing(window: Duration) -> Unit {
        Unit::ALL
            .into_iter()
            .rev()
            .find(|u| window.as_nanos().is_multiple_of(u.window().as_nanos()) && !window.is_zero())
            .unwrap_or(Unit::Second)
    }

    /// What `current_limit` reports for a limit of `requests_per_unit` per `window` (RLS can only say
    /// "N per unit"): with `U` the smallest unit at least as long as the window, `(U, requests_per_unit × U /
    /// window)` when the window divides `U` exactly (windows align to the epoch, so every `U` holds exactly
    /// that many windows: the figure is exact over a whole `U`); else the largest unit that divides the window,
    /// with `requests_per_unit` unchanged (no more than that can pass in one such unit). The product saturates
    /// at `u32::MAX`.
    ///
    /// ```
    /// use floodgate_server::config::Unit;
    /// use std::time::Duration;
    /// let s = Duration::from_secs;
    /// assert_eq!(Unit::reported(s(60), 10), (Unit::Minute, 10));
    /// assert_eq!(Unit::reported(s(30), 2), (Unit::Minute, 4));          // window: 30s
    /// assert_eq!(Unit::reported(s(300), 1), (Unit::Hour, 12));          // 5 minutes
    /// assert_eq!(Unit::reported(Duration::from_millis(500), 3), (Unit::Second, 6));
    /// assert_eq!(Unit::reported(s(7), 5), (Unit::Second, 5));           // 7s divides no minute
    /// assert_eq!(Unit::reported(s(36 * 3600), 5), (Unit::Hour, 5));     // 36h divides no week
    /// ```
    pub fn reported(window: Duration, requests_per_unit: u32) -> (Unit, u32) {
        let w = window.as_micros();
        let up = Unit::ALL.into_iter().find(|u| u.window().as_micros() >= w);
        match up {
            Some(u) if w > 0 && u.window().as_micros().is_multiple_of(w) => {
                let factor = u32::try_from(u.window().as_micros() / w).unwrap_or(u32::MAX);
                (u, requests_per_unit.saturating_mul(factor))
            }
            _ => (Unit::largest_dividing(window), requests_per_unit),
        }
    }

    pub(super) fn parse(s: &str) -> Option<Unit> {
        Unit::ALL.into_iter().find(|u| u.name().eq_ignore_ascii_case(s))
    }
}

/// Parses a window: `<number><unit>` with unit `ms`, `s`, `m`, `h` or `d` (e.g. `500ms`, `1m`), or a unit name.
///
/// ```
/// use floodgate_server::config::parse_window;
/// use std::time::Duration;
/// assert_eq!(parse_window("500ms"), Some(Duration::from_millis(500)));
/// assert_eq!(parse_window("minute"), Some(Duration::from_secs(60)));
/// assert_eq!(parse_window("1.5s"), None);
/// ```
pub fn parse_window(s: &str) -> Option<Duration> {
    if let Some(unit) = Unit::parse(s) {
        return Some(unit.window());
    }
    let split = s.find(|c: char| !c.is_ascii_digit())?;
    let (digits, suffix) = s.split_at(split);
    let n: u64 = digits.parse().ok()?;
    let ms = match suffix {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return None,
    };
    n.checked_mul(ms).map(Duration::from_millis)
}
