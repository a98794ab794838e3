//! The config: Envoy ratelimit-style domains for RLS, and named policies for the HTTP API.
//!
//! One YAML file per domain, in the format of Envoy's reference ratelimit service, plus two Floodgate
//! extensions (`algorithm` and `burst` in a `rate_limit`, and a top-level `policies` map):
//!
//! ```yaml
//! domain: edge                      # RateLimitRequest.domain
//! descriptors:
//!   - key: remote_address           # a key with no value matches any value; each value counts apart
//!     rate_limit: { unit: second, requests_per_unit: 10 }
//!   - key: path
//!     value: /login                 # a key with a value matches that value only
//!     rate_limit: { unit: minute, requests_per_unit: 5, algorithm: sliding_window }
//!     descriptors:                  # nested: a request's next entry is matched one level down
//!       - key: user
//!         rate_limit: { unit: hour, requests_per_unit: 100 }
//!   - key: report
//!     rate_limit: { unit: minute, unit_multiplier: 5, requests_per_unit: 1 }   # a 5-minute window
//!   - key: export
//!     rate_limit: { window: 30s, requests_per_unit: 2 }                        # or any `window`
//!   - key: health
//!     rate_limit: { unlimited: true }
//!     shadow_mode: true             # decide and count, but always answer OK
//! policies:                         # Floodgate extension: named policies for the HTTP API
//!   api: { limit: 100, window: 1m, algorithm: gcra, burst: 20 }
//! ```
//!
//! `--config` takes one file or a directory (every `*.yaml` / `*.yml` in it, not recursive); a domain defined
//! twice is an error. Every problem is reported with its file, line, column and field path, e.g.
//! `edge.yaml:7:7: descriptors[1].rate_limit.unit: unknown unit "minutes" (expected one of second, …)`, and
//! unknown fields are rejected at every level.
//!
//! **Matching** (the reference's rules): a request descriptor's entries are walked from the top level down;
//! at each level the entry matches the rule with its exact key and value, else the first rule (in file order)
//! with its key and a wildcard value that matches, else the rule with its key and no value; no match stops the
//! walk, and there is no backtracking. The limit that applies is the one on the rule the *last* entry lands on.
//!
//! **Wildcards**: a `*` anywhere in a `value` stands for any run of characters (`/api/*`, `*.png`,
//! `/v*/users`). Each matching value counts apart, unless the rule sets `share_threshold: true`: then every
//! value the pattern matches shares one counter (the counter holds the pattern in place of the value).

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use floodgate::{Algorithm, Policy};

use crate::metrics::DomainCounters;
use crate::yaml::{self, Kind, Node, Pos};

/// The largest config file accepted.
pub const MAX_CONFIG_BYTES: u64 = 16 << 20;
/// The most files a config directory may hold.
pub const MAX_CONFIG_FILES: usize = 10_000;

/// The config used when `serve` gets no `--config`: see the crate README for what it holds.
pub const BUILTIN_YAML: &str = include_str!("../examples/default.yaml");

/// One problem in a config file, with where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigIssue {
    /// The file (as given, or `<builtin>`).
    pub file: Arc<str>,
    /// Where in the file (line 0 when the problem is the whole file).
    pub pos: Pos,
    /// The field's path, e.g. `descriptors[0].rate_limit.unit` (empty for syntax errors).
    pub field: String,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for ConfigIssue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file)?;
        if self.pos.line > 0 {
            write!(f, ":{}:{}", self.pos.line, self.pos.col)?;
        }
        if !self.field.is_empty() {
            write!(f, ": {}", self.field)?;
        }
        write!(f, ": {}", self.message)
    }
}

/// Why a config could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A file or directory could not be read.
    #[error("{path}: {source}")]
    Io {
        /// The path.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The config is invalid; every problem found is listed.
    #[error("{}", join_issues(.0))]
    Invalid(Vec<ConfigIssue>),
    /// The path holds no domain and no policy (no YAML file at all, or only empty ones): refused, never read
    /// as "no limits".
    #[error(
        "{path}: no domain and no policy found (looked for *.yaml and *.yml files there); an empty config is \
         refused so that a wrong path or a deleted file never turns every limit off"
    )]
    Empty {
        /// Where the config was looked for.
        path: String,
    },
}

fn join_issues(issues: &[ConfigIssue]) -> String {
    issues.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n")
}

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
    const ALL: [Unit; 7] = [Unit::Second, Unit::Minute, Unit::Hour, Unit::Day, Unit::Week, Unit::Month, Unit::Year];

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

    fn parse(s: &str) -> Option<Unit> {
        Unit::ALL.into_iter().find(|u| u.name().eq_ignore_ascii_case(s))
    }
}

/// What a matched rule does.
#[derive(Clone, Debug)]
pub enum LimitKind {
    /// `unlimited: true`: always OK, nothing counted.
    Unlimited,
    /// `requests_per_unit: 0`: always over the limit.
    DenyAll,
    /// A real limit, decided by this policy (named after the rule, so its state survives reloads).
    Limited(Policy),
}

/// A rule's `rate_limit` block.
#[derive(Clone, Debug)]
pub struct RateLimit {
    /// `name` (optional; reported in the response's `current_limit`).
    pub name: Arc<str>,
    /// `unit`, the unit reported in `current_limit`; `None` only when unlimited. With `window`, the largest
    /// unit that divides the window evenly (else `second`).
    pub unit: Option<Unit>,
    /// The window: `unit` × `unit_multiplier`, or `window` (zero when unlimited).
    pub window: Duration,
    /// `requests_per_unit` (0 when unlimited): the limit per window.
    pub requests_per_unit: u32,
    /// The unit reported in the RLS `current_limit` (see [`Unit::reported`]; `None` when unlimited).
    pub report_unit: Option<Unit>,
    /// The `requests_per_unit` reported in the RLS `current_limit`: the limit scaled to [`RateLimit::report_unit`].
    pub report_requests_per_unit: u32,
    /// `algorithm` (Floodgate extension; default `fixed_window`, as Envoy's).
    pub algorithm: Algorithm,
    /// `replaces: [{name: X}, ...]`: the names of the limits this one disables when both apply to one request.
    pub replaces: Vec<Arc<str>>,
    /// What applies.
    pub kind: LimitKind,
}

/// One rule (a `descriptors` item), with its children.
#[derive(Clone, Debug)]
pub struct Rule {
    /// `key`.
    pub key: Arc<str>,
    /// `value`, if the rule matches one value only.
    pub value: Option<Arc<str>>,
    /// The path from the domain down, e.g. `path=/login/user`: names the rule in logs, lists and policy keys.
    pub path: Arc<str>,
    /// `rate_limit`, if any.
    pub rate_limit: Option<RateLimit>,
    /// `shadow_mode`: decide and count, but answer OK.
    pub shadow_mode: bool,
    /// `share_threshold` (wildcard rules only): every value the pattern matches shares one counter.
    pub share_threshold: bool,
    /// `quota_mode` (as the reference): when this rule's limit is over, its descriptor reports `OVER_LIMIT` but
    /// the request is answered `OVER_LIMIT` only if every quota-mode descriptor of the request is over (or a
    /// descriptor not in quota mode is); see [`crate::rls`].
    pub quota_mode: bool,
    /// `detailed_metric` (as the reference): this rule's per-rule metrics are keyed by the request's actual
    /// values (`domain.key_value.key_value`) instead of the rule's path; see [`Rule::stats_key`].
    pub detailed_metric: bool,
    /// `value_to_metric` (as the reference): an entry that lands on this rule puts its actual value into the
    /// metric key (unless the leaf rule has `detailed_metric`, which keys by every value).
    pub value_to_metric: bool,
    /// `metadata` (as the reference): a free mapping sent back to Envoy in the response's dynamic metadata
    /// when this rule's descriptor is under its limit (with `--response-dynamic-metadata`).
    pub metadata: Option<Arc<serde_json::Map<String, serde_json::Value>>>,
    /// The reference's stats key of this rule: the domain, then each level's `key` or `key_value` (the value as
    /// configured), joined with `.`; e.g. `edge.path_/login.user`. The `key` label of the per-rule metrics.
    pub stats_key: Arc<str>,
    /// `extra_limits` (Floodgate extension): more limits beside `rate_limit`, e.g. a sustained rate beside a
    /// burst; every one must allow.
    pub extra_limits: Vec<RateLimit>,
    /// The nested `descriptors`.
    pub children: Level,
    /// Where the rule is defined.
    pub pos: Pos,
}

/// The rules of one nesting level, indexed for matching.
#[derive(Clone, Debug, Default)]
pub struct Level {
    keys: HashMap<Arc<str>, KeyRules>,
}

#[derive(Clone, Debug, Default)]
struct KeyRules {
    values: HashMap<Arc<str>, Rule>,
    /// Rules whose value holds a `*`, in file order.
    wildcards: Vec<Rule>,
    any: Option<Rule>,
}

impl Level {
    /// Moves `other`'s rules into this level (wildcards after this level's own); returns the rules of `other`
    /// that this level already has, in file order, instead of adding them.
    fn absorb(&mut self, other: Level) -> Vec<Rule> {
        let mut incoming: Vec<Rule> =
            other.keys.into_values().flat_map(|k| k.values.into_values().chain(k.wildcards).chain(k.any)).collect();
        incoming.sort_by_key(|r| (r.pos.line, r.pos.col));
        let mut duplicates = Vec::new();
        for rule in incoming {
            let rules = self.keys.entry(rule.key.clone()).or_default();
            match rule.value.clone() {
                Some(_) if rule.is_wildcard() => {
                    if rules.wildcards.iter().any(|r| r.value == rule.value) {
                        duplicates.push(rule);
                    } else {
                        rules.wildcards.push(rule);
                    }
                }
                Some(v) => match rules.values.entry(v) {
                    std::collections::hash_map::Entry::Occupied(_) => duplicates.push(rule),
                    std::collections::hash_map::Entry::Vacant(slot) => {
                        slot.insert(rule);
                    }
                },
                None if rules.any.is_some() => duplicates.push(rule),
                None => rules.any = Some(rule),
            }
        }
        duplicates
    }
}

impl Rule {
    /// `key "k" with value "v"` or `key "k" without a value`, for messages.
    fn describe(&self) -> String {
        match &self.value {
            Some(v) => format!("key {:?} with value {:?}", &*self.key, &**v),
            None => format!("key {:?} without a value", &*self.key),
        }
    }

    /// Whether the rule's value is a pattern (holds a `*`).
    pub fn is_wildcard(&self) -> bool {
        self.value.as_deref().is_some_and(|v| v.contains('*'))
    }
}

/// Whether `value` matches `pattern`, where each `*` stands for any run of characters (possibly empty).
///
/// ```
/// use floodgate_server::config::wildcard_match;
/// assert!(wildcard_match("/api/*", "/api/users"));
/// assert!(wildcard_match("*.png", "a/b.png"));
/// assert!(wildcard_match("/v*/users", "/v2/users"));
/// assert!(wildcard_match("a*b*c", "abc"));
/// assert!(!wildcard_match("a*b*c", "acb"));
/// assert!(!wildcard_match("/api/*", "/ap"));
/// ```
pub fn wildcard_match(pattern: &str, value: &str) -> bool {
    let mut parts = pattern.split('*');
    let first = parts.next().unwrap_or("");
    let Some(mut rest) = value.strip_prefix(first) else { return false };
    let mut parts: Vec<&str> = parts.collect();
    let Some(last) = parts.pop() else { return rest.is_empty() };
    for part in parts {
        match rest.find(part) {
            Some(i) => rest = &rest[i + part.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}

impl Level {
    /// Every rule of this level, sorted by key then value (key-only last).
    pub fn rules(&self) -> Vec<&Rule> {
        let mut out: Vec<&Rule> =
            self.keys.values().flat_map(|k| k.values.values().chain(&k.wildcards).chain(k.any.as_ref())).collect();
        out.sort_by(|a, b| (&a.key, a.value.is_none(), &a.value).cmp(&(&b.key, b.value.is_none(), &b.value)));
        out
    }

    fn get(&self, key: &str, value: &str) -> Option<&Rule> {
        let k = self.keys.get(key)?;
        k.values
            .get(value)
            .or_else(|| k.wildcards.iter().find(|r| r.value.as_deref().is_some_and(|p| wildcard_match(p, value))))
            .or(k.any.as_ref())
    }
}

/// One domain: a file's `domain` and its rules.
#[derive(Clone, Debug)]
pub struct Domain {
    /// The domain name (`RateLimitRequest.domain`).
    pub name: Arc<str>,
    /// The file it came from.
    pub file: Arc<str>,
    /// The top-level rules.
    pub root: Level,
    /// This domain's decision counters (the server swaps in the long-lived ones on load).
    pub counters: Arc<DomainCounters>,
    /// Whether some rule of the domain has `value_to_metric: true` (so metric keys may hold request values).
    pub value_to_metric: bool,
}

impl Level {
    fn any_value_to_metric(&self) -> bool {
        self.keys.values().any(|k| {
            k.values
                .values()
                .chain(&k.wildcards)
                .chain(k.any.as_ref())
                .any(|r| r.value_to_metric || r.children.any_value_to_metric())
        })
    }
}

impl Domain {
    /// The rule a descriptor's entries land on, if that rule has a `rate_limit` (see the module docs).
    ///
    /// ```
    /// use floodgate_server::config::Config;
    /// let cfg = Config::from_str("t.yaml", "domain: d\ndescriptors:\n  - key: k\n    rate_limit: {unit: second, requests_per_unit: 1}\n")?;
    /// let domain = cfg.domain("d").ok_or("no domain")?;
    /// assert_eq!(domain.find([("k", "anything")]).map(|r| &*r.path), Some("k"));
    /// assert!(domain.find([("other", "x")]).is_none());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn find<'k>(&self, entries: impl IntoIterator<Item = (&'k str, &'k str)>) -> Option<&Rule> {
        self.find_match(entries).map(|m| m.rule)
    }

    /// Like [`Domain::find`], and also which entries count under their pattern rather than their value
    /// (those matched by a wildcard rule with `share_threshold: true`).
    ///
    /// ```
    /// use floodgate_server::config::Config;
    /// let cfg = Config::from_str("t.yaml", "domain: d\ndescriptors:\n  - key: p\n    value: /a/*\n    share_threshold: true\n    rate_limit: {unit: second, requests_per_unit: 1}\n")?;
    /// let m = cfg.domain("d").ok_or("no domain")?.find_match([("p", "/a/x")]).ok_or("no match")?;
    /// assert_eq!(m.shared, vec![(0, "/a/*")]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn find_match<'k>(&self, entries: impl IntoIterator<Item = (&'k str, &'k str)>) -> Option<Match<'_>> {
        let mut level = &self.root;
        let mut shared = Vec::new();
        let mut entries = entries.into_iter().enumerate().peekable();
        while let Some((i, (key, value))) = entries.next() {
            let rule = level.get(key, value)?;
            if let (true, Some(p)) = (rule.share_threshold, rule.value.as_deref()) {
                shared.push((i, p));
            }
            if entries.peek().is_none() {
                return rule.rate_limit.is_some().then_some(Match { rule, shared });
            }
            level = &rule.children;
        }
        None
    }
}

impl Domain {
    /// The per-rule metric key of a descriptor whose entries landed on `rule` (see [`crate::metrics`]), and
    /// whether it holds request values (then its number is bounded). As the reference builds it: with
    /// `detailed_metric` on `rule`, the domain then every entry's `key_value` (an entry matched by a
    /// `share_threshold` wildcard keeps the pattern); else each level's key as configured, except that an entry
    /// landing on a key-only or (non-sharing) wildcard rule with `value_to_metric` puts in its actual value.
    ///
    /// ```
    /// use floodgate_server::config::Config;
    /// let cfg = Config::from_str("t.yaml", "domain: d\ndescriptors:\n  - key: k\n    value_to_metric: true\n    descriptors:\n      - key: u\n        rate_limit: {unit: second, requests_per_unit: 1}\n")?;
    /// let d = cfg.domain("d").ok_or("no domain")?;
    /// let rule = d.find([("k", "a"), ("u", "b")]).ok_or("no match")?;
    /// assert_eq!(&*rule.stats_key, "d.k.u");
    /// assert_eq!(d.metric_key([("k", "a"), ("u", "b")], rule), ("d.k_a.u".to_string(), true));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn metric_key<'k>(
        &self,
        entries: impl IntoIterator<Item = (&'k str, &'k str)> + Clone,
        rule: &Rule,
    ) -> (String, bool) {
        if !rule.detailed_metric && !self.value_to_metric {
            return (rule.stats_key.to_string(), false);
        }
        let mut key = String::with_capacity(rule.stats_key.len() + 32);
        key.push_str(&self.name);
        let mut level = &self.root;
        for (key_, value) in entries {
            key.push('.');
            key.push_str(key_);
            let Some(r) = level.get(key_, value) else {
                // Not reached for a matched rule; keep the request's value.
                key.push('_');
                key.push_str(value);
                continue;
            };
            let shared = r.share_threshold && r.is_wildcard();
            let pattern = r.value.as_deref().unwrap_or_default();
            if shared {
                key.push('_');
                key.push_str(pattern);
            } else if rule.detailed_metric {
                key.push('_');
                key.push_str(value);
            } else if r.value.is_some() && !(r.is_wildcard() && r.value_to_metric) {
                // An exact value (the request's own), or a wildcard without value_to_metric (the pattern).
                key.push('_');
                key.push_str(pattern);
            } else if r.value_to_metric && !value.is_empty() {
                key.push('_');
                key.push_str(value);
            }
            level = &r.children;
        }
        let from_request = *key != *rule.stats_key;
        (key, from_request)
    }
}

/// What [`Domain::find_match`] found.
#[derive(Debug)]
pub struct Match<'a> {
    /// The rule the last entry landed on (it has a `rate_limit`).
    pub rule: &'a Rule,
    /// `(entry index, pattern)` for each entry that counts under its rule's pattern (`share_threshold`).
    pub shared: Vec<(usize, &'a str)>,
}

impl Domain {}

/// A named policy from the `policies` map, for the HTTP API.
#[derive(Clone, Debug)]
pub struct NamedPolicy {
    /// The policy (named with its key, so its state survives a change of numbers).
    pub policy: Policy,
    /// The file it came from.
    pub file: Arc<str>,
    /// Where.
    pub pos: Pos,
}

/// A loaded, validated config.
#[derive(Clone, Debug, Default)]
pub struct Config {
    domains: HashMap<Arc<str>, Domain>,
    policies: BTreeMap<String, NamedPolicy>,
    /// The files it was read from.
    pub sources: Vec<Arc<str>>,
}

impl Config {
    /// The built-in config (see [`BUILTIN_YAML`]).
    pub fn builtin() -> Result<Config, ConfigError> {
        Config::from_str("<builtin>", BUILTIN_YAML)
    }

    /// Parses one file's text; `name` is used in error messages.
    ///
    /// ```
    /// use floodgate_server::config::Config;
    /// let err = Config::from_str("x.yaml", "domain: d\ndescriptors:\n  - key: k\n    rate_limit: {unit: fortnight, requests_per_unit: 1}\n")
    ///     .unwrap_err()
    ///     .to_string();
    /// assert!(err.starts_with("x.yaml:4:"), "{err}");
    /// assert!(err.contains("descriptors[0].rate_limit.unit"), "{err}");
    /// ```
    #[allow(clippy::should_implement_trait)]
    pub fn from_str(name: &str, src: &str) -> Result<Config, ConfigError> {
        let mut merger = Merger::default();
        merger.add_file(Arc::from(name), src);
        merger.finish()
    }

    /// Loads a file, or every `*.yaml` / `*.yml` file of a directory; two files with one domain are an error.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        Config::load_with(path, false)
    }

    /// [`Config::load`]; with `merge_domains` (the reference's `MERGE_DOMAIN_CONFIG`), files that share a
    /// domain are merged: their top-level rules join the domain's (files in name order), and a rule defined
    /// in two files is an error.
    pub fn load_with(path: &Path, merge_domains: bool) -> Result<Config, ConfigError> {
        let io = |source| ConfigError::Io { path: path.display().to_string(), source };
        let meta = std::fs::metadata(path).map_err(io)?;
        let files = if meta.is_dir() {
            let mut files = Vec::new();
            for entry in std::fs::read_dir(path).map_err(io)? {
                let p = entry.map_err(io)?.path();
                let yaml = p.extension().is_some_and(|e| e == "yaml" || e == "yml");
                if yaml && p.is_file() {
                    files.push(p);
                }
                if files.len() > MAX_CONFIG_FILES {
                    return Err(ConfigError::Invalid(vec![whole_file(
                        &path.display().to_string(),
                        format!("more than {MAX_CONFIG_FILES} config files"),
                    )]));
                }
            }
            files.sort();
            files
        } else {
            vec![path.to_path_buf()]
        };
        let mut merger = Merger { merge_domains, ..Merger::default() };
        for file in files {
            let name: Arc<str> = file.display().to_string().into();
            let io = |source| ConfigError::Io { path: name.to_string(), source };
            let len = std::fs::metadata(&file).map_err(io)?.len();
            if len > MAX_CONFIG_BYTES {
                merger.issues.push(whole_file(&name, format!("larger than {MAX_CONFIG_BYTES} bytes")));
                continue;
            }
            let bytes = std::fs::read(&file).map_err(io)?;
            match String::from_utf8(bytes) {
                Ok(src) => merger.add_file(name, &src),
                Err(_) => merger.issues.push(whole_file(&name, "not valid UTF-8".into())),
            }
        }
        let config = merger.finish()?;
        if config.domains.is_empty() && config.policies.is_empty() {
            return Err(ConfigError::Empty { path: path.display().to_string() });
        }
        Ok(config)
    }

    /// The domain named `name`.
    pub fn domain(&self, name: &str) -> Option<&Domain> {
        self.domains.get(name)
    }

    /// Gives every domain the long-lived counters of `metrics`, so decision counts survive reloads.
    pub fn attach_metrics(&mut self, metrics: &crate::metrics::Metrics) {
        for (name, d) in &mut self.domains {
            d.counters = metrics.domain(name);
        }
    }

    /// Every domain, sorted by name.
    pub fn domains(&self) -> Vec<&Domain> {
        let mut v: Vec<&Domain> = self.domains.values().collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v
    }

    /// The named policy `name`.
    pub fn policy(&self, name: &str) -> Option<&NamedPolicy> {
        self.policies.get(name)
    }

    /// Every named policy, sorted by name.
    pub fn policies(&self) -> impl Iterator<Item = (&str, &NamedPolicy)> {
        self.policies.iter().map(|(k, v)| (k.as_str(), v))
    }

    /// Checks that the cluster store (`serve --cluster`, `check --cluster`) can decide every policy of this
    /// config: named policies and every rule's limits must be fixed or sliding windows. Lists every policy that
    /// is not, by name and position.
    ///
    /// ```
    /// use floodgate_server::config::Config;
    /// let cfg = Config::from_str("c.yaml", "policies:\n  fast: {limit: 5, window: 1s, algorithm: gcra}\n")?;
    /// let err = cfg.check_cluster().unwrap_err().to_string();
    /// assert!(err.contains("c.yaml:2:") && err.contains("policy \"fast\"") && err.contains("gcra"), "{err}");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn check_cluster(&self) -> Result<(), ConfigError> {
        let mut issues = Vec::new();
        for (name, p) in &self.policies {
            if let Err(e) = floodgate_cluster::check_policy(&p.policy) {
                issues.push(ConfigIssue {
                    file: p.file.clone(),
                    pos: p.pos,
                    field: format!("policies.{name}.algorithm"),
                    message: format!("policy {name:?}: {e} (cluster mode)"),
                });
            }
        }
        let mut domains = self.domains();
        domains.sort_by(|a, b| a.name.cmp(&b.name));
        for d in domains {
            cluster_rule_issues(d, &d.root, &mut issues);
        }
        if issues.is_empty() { Ok(()) } else { Err(ConfigError::Invalid(issues)) }
    }
}

/// The rules of `level` (and below) whose limits the cluster store cannot decide.
fn cluster_rule_issues(domain: &Domain, level: &Level, issues: &mut Vec<ConfigIssue>) {
    for r in level.rules() {
        for rl in r.rate_limit.iter().chain(&r.extra_limits) {
            if let LimitKind::Limited(policy) = &rl.kind
                && let Err(e) = floodgate_cluster::check_policy(policy)
            {
                issues.push(ConfigIssue {
                    file: domain.file.clone(),
                    pos: r.pos,
                    field: format!("{}.rate_limit.algorithm", r.path),
                    message: format!("policy {:?} (domain {}): {e} (cluster mode)", policy.key(), domain.name),
                });
            }
        }
        cluster_rule_issues(domain, &r.children, issues);
    }
}

fn whole_file(file: &str, message: String) -> ConfigIssue {
    ConfigIssue { file: file.into(), pos: Pos::default(), field: String::new(), message }
}

#[derive(Default)]
struct Merger {
    config: Config,
    issues: Vec<ConfigIssue>,
    merge_domains: bool,
}

impl Merger {
    fn add_file(&mut self, file: Arc<str>, src: &str) {
        self.config.sources.push(file.clone());
        let mut reader = Reader { file: file.clone(), issues: Vec::new() };
        let parsed = match yaml::parse(src) {
            Ok(Some(root)) => reader.file_root(&root),
            Ok(None) => {
                reader.issues.push(whole_file(&file, "the file is empty".into()));
                None
            }
            Err(e) => {
                reader.issues.push(ConfigIssue {
                    file: file.clone(),
                    pos: e.pos,
                    field: String::new(),
                    message: e.message,
                });
                None
            }
        };
        self.issues.append(&mut reader.issues);
        let Some((domain, policies)) = parsed else { return };
        if let Some((domain, pos)) = domain {
            if let (true, Some(prev)) = (self.merge_domains, self.config.domains.get_mut(&domain.name)) {
                prev.value_to_metric |= domain.value_to_metric;
                for rule in prev.root.absorb(domain.root) {
                    let message = format!(
                        "duplicate rule: {} is already defined by an earlier file of domain {:?} (domains are merged)",
                        rule.describe(),
                        &*domain.name
                    );
                    self.issues.push(ConfigIssue {
                        file: file.clone(),
                        pos: rule.pos,
                        field: "descriptors".into(),
                        message,
                    });
                }
            } else if let Some(prev) = self.config.domains.get(&domain.name) {
                let message = format!("domain {:?} is already defined in {}", &*domain.name, prev.file);
                self.issues.push(ConfigIssue { file, pos, field: "domain".into(), message });
            } else {
                self.config.domains.insert(domain.name.clone(), domain);
            }
        }
        for (name, p) in policies {
            if let Some(prev) = self.config.policies.get(&name) {
                let message = format!("policy {name:?} is already defined in {}:{}", prev.file, prev.pos.line);
                self.issues.push(ConfigIssue {
                    file: p.file.clone(),
                    pos: p.pos,
                    field: format!("policies.{name}"),
                    message,
                });
            } else {
                self.config.policies.insert(name, p);
            }
        }
    }

    fn finish(self) -> Result<Config, ConfigError> {
        if self.issues.is_empty() { Ok(self.config) } else { Err(ConfigError::Invalid(self.issues)) }
    }
}

/// Walks one file's tree, collecting every issue.
struct Reader {
    file: Arc<str>,
    issues: Vec<ConfigIssue>,
}

type FileParts = (Option<(Domain, Pos)>, Vec<(String, NamedPolicy)>);

impl Reader {
    fn issue(&mut self, node: &Node, field: &str, message: impl Into<String>) {
        self.issues.push(ConfigIssue {
            file: self.file.clone(),
            pos: node.pos,
            field: field.to_owned(),
            message: message.into(),
        });
    }

    /// The fields of a mapping, checked against `allowed`; unknown and repeated keys are reported.
    fn fields<'n>(&mut self, node: &'n Node, field: &str, allowed: &[&str]) -> Option<Vec<(&'n str, &'n Node)>> {
        let Kind::Map(items) = &node.kind else {
            self.issue(node, field, format!("expected a mapping, found {}", node.kind_name()));
            return None;
        };
        let mut out: Vec<(&str, &Node)> = Vec::with_capacity(items.len());
        for (k, v) in items {
            let Kind::Scalar { value: name, .. } = &k.kind else {
                self.issue(k, field, "a mapping key must be a plain string");
                continue;
            };
            let path = join(field, name);
            if !allowed.contains(&name.as_str()) {
                self.issue(k, &path, format!("unknown field (expected one of: {})", allowed.join(", ")));
            } else if out.iter().any(|(n, _)| n == name) {
                self.issue(k, &path, "field given twice");
            } else {
                out.push((name.as_str(), v));
            }
        }
        Some(out)
    }

    fn string(&mut self, node: &Node, field: &str) -> Option<String> {
        match &node.kind {
            _ if node.is_null() => {
                self.issue(node, field, "expected a string, found null");
                None
            }
            Kind::Scalar { value, .. } => Some(value.clone()),
            _ => {
                self.issue(node, field, format!("expected a string, found {}", node.kind_name()));
                None
            }
        }
    }

    fn nonempty(&mut self, node: &Node, field: &str) -> Option<String> {
        let s = self.string(node, field)?;
        if s.is_empty() {
            self.issue(node, field, "must not be empty");
            return None;
        }
        Some(s)
    }

    fn integer(&mut self, node: &Node, field: &str, max: u64) -> Option<u64> {
        let parsed = match &node.kind {
            Kind::Scalar { value, plain: true } if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) => {
                value.parse::<u64>().ok().filter(|v| *v <= max)
            }
            _ => {
                self.issue(node, field, format!("expected a whole number, found {}", describe(node)));
                return None;
            }
        };
        if parsed.is_none() {
            self.issue(node, field, format!("must be at most {max}"));
        }
        parsed
    }

    fn boolean(&mut self, node: &Node, field: &str) -> Option<bool> {
        match &node.kind {
            Kind::Scalar { value, plain: true } if matches!(value.as_str(), "true" | "True" | "TRUE") => Some(true),
            Kind::Scalar { value, plain: true } if matches!(value.as_str(), "false" | "False" | "FALSE") => Some(false),
            _ => {
                self.issue(node, field, format!("expected true or false, found {}", describe(node)));
                None
            }
        }
    }

    fn seq<'n>(&mut self, node: &'n Node, field: &str) -> Option<&'n [Node]> {
        match &node.kind {
            Kind::Seq(items) => Some(items),
            _ if node.is_null() => Some(&[]),
            _ => {
                self.issue(node, field, format!("expected a sequence, found {}", node.kind_name()));
                None
            }
        }
    }

    fn file_root(&mut self, root: &Node) -> Option<FileParts> {
        let fields = self.fields(root, "", &["domain", "descriptors", "policies"])?;
        let (mut domain, mut descriptors, mut policies) = (None, None, Vec::new());
        for (name, node) in fields {
            match name {
                "domain" => domain = self.nonempty(node, "domain").map(|d| (d, node)),
                "descriptors" => descriptors = Some(node),
                _ => policies = self.policies(node),
            }
        }
        let domain = match (domain, descriptors) {
            (Some((name, node)), descriptors) => {
                let name: Arc<str> = name.into();
                let root = descriptors.map(|d| self.level(&name, d, "descriptors", ("", &name), 1)).unwrap_or_default();
                let value_to_metric = root.any_value_to_metric();
                Some((
                    Domain { name, file: self.file.clone(), root, counters: Arc::default(), value_to_metric },
                    node.pos,
                ))
            }
            (None, Some(d)) => {
                self.issue(d, "domain", "descriptors need a domain");
                None
            }
            (None, None) if policies.is_empty() && self.issues.is_empty() => {
                self.issue(root, "domain", "missing (a file needs a domain, or policies)");
                None
            }
            (None, None) => None,
        };
        Some((domain, policies))
    }

    /// `parent` is the parent rule's path and stats key (the root: `""` and the domain).
    fn level(&mut self, domain: &str, node: &Node, field: &str, parent: (&str, &str), depth: usize) -> Level {
        let mut level = Level::default();
        let Some(items) = self.seq(node, field) else { return level };
        for (i, item) in items.iter().enumerate() {
            let field = format!("{field}[{i}]");
            let Some(rule) = self.rule(domain, item, &field, parent, depth) else { continue };
            let rules = level.keys.entry(rule.key.clone()).or_default();
            let slot = match &rule.value {
                Some(_) if rule.is_wildcard() => rules.wildcards.iter().find(|r| r.value == rule.value),
                Some(v) => rules.values.get(v),
                None => rules.any.as_ref(),
            };
            if let Some(prev) = slot {
                let what = match &rule.value {
                    Some(v) => format!("key {:?} with value {:?}", &*rule.key, &**v),
                    None => format!("key {:?} without a value", &*rule.key),
                };
                self.issue(
                    item,
                    &field,
                    format!("duplicate rule: {what} is already defined at line {}", prev.pos.line),
                );
                continue;
            }
            match rule.value.clone() {
                Some(_) if rule.is_wildcard() => rules.wildcards.push(rule),
                Some(v) => {
                    rules.values.insert(v, rule);
                }
                None => rules.any = Some(rule),
            }
        }
        level
    }

    fn rule(&mut self, domain: &str, node: &Node, field: &str, parent: (&str, &str), depth: usize) -> Option<Rule> {
        let (parent, stats_parent) = parent;
        let allowed = [
            "key",
            "value",
            "rate_limit",
            "extra_limits",
            "shadow_mode",
            "share_threshold",
            "quota_mode",
            "detailed_metric",
            "value_to_metric",
            "metadata",
            "descriptors",
        ];
        let fields = self.fields(node, field, &allowed)?;
        let (mut key, mut value, mut limit_node, mut shadow, mut children) = (None, None, None, false, None);
        let (mut share, mut detailed_metric, mut extra_node) = (None, false, None);
        let (mut quota_mode, mut value_to_metric, mut metadata) = (false, false, None);
        let mut ok = true;
        for (name, n) in fields {
            let f = join(field, name);
            match name {
                "key" => key = self.nonempty(n, &f),
                "value" => {
                    value = self.string(n, &f);
                    ok &= value.is_some();
                }
                "rate_limit" => limit_node = Some((n, f)),
                "extra_limits" => extra_node = Some((n, f)),
                "shadow_mode" => shadow = self.boolean(n, &f).unwrap_or(false),
                "share_threshold" => share = self.boolean(n, &f).map(|b| (b, n, f)),
                "quota_mode" => quota_mode = self.boolean(n, &f).unwrap_or(false),
                "detailed_metric" => detailed_metric = self.boolean(n, &f).unwrap_or(false),
                "value_to_metric" => value_to_metric = self.boolean(n, &f).unwrap_or(false),
                "metadata" => metadata = self.metadata(n, &f).map(Arc::new),
                _ => children = Some((n, f)),
            }
        }
        let share_threshold = match share {
            Some((true, n, f)) if !value.as_deref().is_some_and(|v| v.contains('*')) => {
                self.issue(n, &f, "only allowed on a rule whose value holds a `*` wildcard");
                false
            }
            Some((b, _, _)) => b,
            None => false,
        };
        // As the reference: an empty `value` is no value (the rule matches any value).
        let value = value.filter(|v| !v.is_empty());
        let Some(key) = key else {
            if ok {
                self.issue(node, &join(field, "key"), "missing");
            }
            return None;
        };
        let path: Arc<str> = match (&value, parent.is_empty()) {
            (Some(v), true) => format!("{key}={v}"),
            (Some(v), false) => format!("{parent}/{key}={v}"),
            (None, true) => key.clone(),
            (None, false) => format!("{parent}/{key}"),
        }
        .into();
        // The reference's stats key: each level's `key`, or `key_value` when the rule has a value.
        let stats_key: Arc<str> = match &value {
            Some(v) => format!("{stats_parent}.{key}_{v}"),
            None => format!("{stats_parent}.{key}"),
        }
        .into();
        let mut extra_limits = Vec::new();
        if let Some((n, f)) = extra_node {
            if limit_node.is_none() {
                self.issue(n, &f, "needs a `rate_limit` beside it");
            }
            for (i, item) in self.seq(n, &f).unwrap_or_default().iter().enumerate() {
                let item_path = format!("{path}#{}", i + 1);
                if let Some(l) = self.rate_limit(domain, &item_path, item, &format!("{f}[{i}]")) {
                    extra_limits.push(l);
                }
            }
        }
        let rate_limit = limit_node.and_then(|(n, f)| self.rate_limit(domain, &path, n, &f));
        let children = match children {
            Some(_) if depth >= MAX_RULE_DEPTH => {
                self.issue(node, field, format!("rules nest deeper than {MAX_RULE_DEPTH} levels"));
                Level::default()
            }
            Some((n, f)) => self.level(domain, n, &f, (&path, &stats_key), depth + 1),
            None => Level::default(),
        };
        Some(Rule {
            key: key.into(),
            value: value.map(Into::into),
            path,
            rate_limit,
            shadow_mode: shadow,
            share_threshold,
            quota_mode,
            detailed_metric,
            value_to_metric,
            metadata,
            stats_key,
            extra_limits,
            children,
            pos: node.pos,
        })
    }

    fn rate_limit(&mut self, domain: &str, path: &str, node: &Node, field: &str) -> Option<RateLimit> {
        let allowed = [
            "unit",
            "unit_multiplier",
            "window",
            "requests_per_unit",
            "unlimited",
            "name",
            "replaces",
            "algorithm",
            "burst",
        ];
        let fields = self.fields(node, field, &allowed)?;
        let before = self.issues.len();
        let (mut unit, mut rpu, mut unlimited, mut name, mut algorithm, mut burst) =
            (None, None, false, String::new(), None, None);
        let (mut multiplier, mut window, mut replaces) = (1u64, None, Vec::new());
        for (key, n) in &fields {
            let f = join(field, key);
            match *key {
                "unit" => {
                    if let Some(s) = self.string(n, &f) {
                        unit = Unit::parse(&s);
                        if unit.is_none() {
                            let names: Vec<&str> = Unit::ALL.iter().map(|u| u.name()).collect();
                            self.issue(n, &f, format!("unknown unit {s:?} (expected one of {})", names.join(", ")));
                        }
                    }
                }
                "requests_per_unit" => rpu = self.integer(n, &f, u64::from(u32::MAX)),
                "unit_multiplier" => match self.integer(n, &f, u64::from(u32::MAX)) {
                    Some(0) => self.issue(n, &f, "must be at least 1"),
                    Some(m) => multiplier = m,
                    None => {}
                },
                "window" => {
                    if let Some(s) = self.string(n, &f) {
                        match parse_window(&s) {
                            Some(w) if !w.is_zero() => window = Some(w),
                            _ => self.issue(
                                n,
                                &f,
                                format!("bad window {s:?} (expected e.g. 500ms, 30s, 5m, 1h, 1d, or a unit name)"),
                            ),
                        }
                    }
                }
                "unlimited" => unlimited = self.boolean(n, &f).unwrap_or(false),
                "replaces" => replaces = self.replaces(n, &f),
                "name" => name = self.string(n, &f).unwrap_or_default(),
                "algorithm" => {
                    if let Some(s) = self.string(n, &f) {
                        match s.parse::<Algorithm>() {
                            Ok(a) => algorithm = Some((a, *n)),
                            Err(e) => self.issue(n, &f, e.to_string()),
                        }
                    }
                }
                _ => burst = self.integer(n, &f, Policy::MAX_LIMIT).map(|b| (b, *n)),
            }
        }
        let has = |k: &str| fields.iter().find(|(n, _)| *n == k).map(|(_, v)| *v);
        if unlimited {
            for k in ["unit", "unit_multiplier", "window", "requests_per_unit", "algorithm", "burst"] {
                if let Some(n) = has(k) {
                    self.issue(n, &join(field, k), "not allowed beside `unlimited: true`");
                }
            }
        } else {
            if let Some(n) = has("window") {
                for k in ["unit", "unit_multiplier"] {
                    if has(k).is_some() {
                        self.issue(n, &join(field, "window"), format!("not allowed beside `{k}` (give one)"));
                    }
                }
            } else if has("unit").is_none() {
                self.issue(node, &join(field, "unit"), "missing (or set `window`, or `unlimited: true`)");
            }
            if has("requests_per_unit").is_none() {
                self.issue(node, &join(field, "requests_per_unit"), "missing (or set `unlimited: true`)");
            }
        }
        for (i, r, n) in &replaces {
            if !name.is_empty() && **r == *name {
                let f = format!("{}[{i}].name", join(field, "replaces"));
                self.issue(n, &f, format!("a limit cannot replace itself ({name:?})"));
            }
        }
        if self.issues.len() > before {
            return None;
        }
        let replaces = replaces.into_iter().map(|(_, r, _)| r).collect();
        let algorithm_node = algorithm.map(|(_, n)| n);
        let algorithm = algorithm.map_or(Algorithm::FixedWindow, |(a, _)| a);
        let rpu = u32::try_from(rpu.unwrap_or(0)).unwrap_or(u32::MAX);
        let window = match (window, unit) {
            _ if unlimited => Duration::ZERO,
            (Some(w), _) => {
                unit = Some(Unit::largest_dividing(w));
                w
            }
            (None, Some(u)) => u.window().saturating_mul(u32::try_from(multiplier).unwrap_or(u32::MAX)),
            (None, None) => return None,
        };
        let kind = match unit {
            _ if unlimited => LimitKind::Unlimited,
            None => return None,
            Some(_) if window > Policy::MAX_WINDOW => {
                let at = has("unit_multiplier").or(has("window")).unwrap_or(node);
                self.issue(
                    at,
                    field,
                    format!("window {window:?} is longer than the maximum of {:?}", Policy::MAX_WINDOW),
                );
                return None;
            }
            Some(_) if rpu == 0 => LimitKind::DenyAll,
            Some(_) => {
                let policy = Policy::new(algorithm, u64::from(rpu), window)
                    .and_then(|p| match burst {
                        Some((b, _)) => p.with_burst(b),
                        None => Ok(p),
                    })
                    .and_then(|p| p.named(rule_policy_name(domain, path)));
                match policy {
                    Ok(p) => LimitKind::Limited(p),
                    Err(e) => {
                        let at = burst.map(|(_, n)| n).or(algorithm_node).unwrap_or(node);
                        self.issue(at, field, e.to_string());
                        return None;
                    }
                }
            }
        };
        let (report_unit, report_requests_per_unit) = match unit {
            Some(_) => {
                let (u, r) = Unit::reported(window, rpu);
                (Some(u), r)
            }
            None => (None, 0),
        };
        Some(RateLimit {
            name: name.into(),
            unit,
            window,
            requests_per_unit: rpu,
            report_unit,
            report_requests_per_unit,
            algorithm,
            replaces,
            kind,
        })
    }

    /// `metadata`: a mapping of string keys to any YAML value (scalars as strings, numbers or booleans when
    /// written plain), at most [`MAX_METADATA_NODES`] nodes; `null` is no metadata.
    fn metadata(&mut self, node: &Node, field: &str) -> Option<serde_json::Map<String, serde_json::Value>> {
        if node.is_null() {
            return None;
        }
        if !matches!(node.kind, Kind::Map(_)) {
            self.issue(node, field, format!("expected a mapping, found {}", node.kind_name()));
            return None;
        }
        let mut budget = MAX_METADATA_NODES;
        match self.metadata_value(node, field, &mut budget)? {
            serde_json::Value::Object(map) => Some(map),
            _ => None,
        }
    }

    fn metadata_value(&mut self, node: &Node, field: &str, budget: &mut usize) -> Option<serde_json::Value> {
        use serde_json::Value as J;
        if *budget == 0 {
            self.issue(node, field, format!("metadata holds more than {MAX_METADATA_NODES} values"));
            return None;
        }
        *budget -= 1;
        Some(match &node.kind {
            _ if node.is_null() => J::Null,
            Kind::Scalar { value, plain: false } => J::String(value.clone()),
            Kind::Scalar { value, plain: true } => match value.as_str() {
                "true" | "True" | "TRUE" => J::Bool(true),
                "false" | "False" | "FALSE" => J::Bool(false),
                v => match v.parse::<i64>() {
                    Ok(i) => J::from(i),
                    Err(_) => {
                        match v.parse::<f64>().ok().filter(|f| f.is_finite()).and_then(serde_json::Number::from_f64) {
                            Some(n) => J::Number(n),
                            None => J::String(v.to_owned()),
                        }
                    }
                },
            },
            Kind::Seq(items) => {
                let mut out = Vec::with_capacity(items.len());
                for (i, item) in items.iter().enumerate() {
                    out.push(self.metadata_value(item, &format!("{field}[{i}]"), budget)?);
                }
                J::Array(out)
            }
            Kind::Map(items) => {
                let mut out = serde_json::Map::new();
                for (k, v) in items {
                    let Kind::Scalar { value: name, .. } = &k.kind else {
                        self.issue(k, field, "a mapping key must be a plain string");
                        return None;
                    };
                    let f = join(field, name);
                    if out.contains_key(name) {
                        self.issue(k, &f, "field given twice");
                        return None;
                    }
                    let v = self.metadata_value(v, &f, budget)?;
                    out.insert(name.clone(), v);
                }
                J::Object(out)
            }
        })
    }

    /// `replaces: [{name: X}, ...]`: each item a mapping with a non-empty `name` only.
    fn replaces<'n>(&mut self, node: &'n Node, field: &str) -> Vec<(usize, Arc<str>, &'n Node)> {
        let mut out = Vec::new();
        let Some(items) = self.seq(node, field) else { return out };
        for (i, item) in items.iter().enumerate() {
            let f = format!("{field}[{i}]");
            let Some(fields) = self.fields(item, &f, &["name"]) else { continue };
            match fields.first() {
                Some((_, n)) => {
                    if let Some(name) = self.nonempty(n, &join(&f, "name")) {
                        out.push((i, name.into(), *n));
                    }
                }
                None => self.issue(item, &join(&f, "name"), "missing"),
            }
        }
        out
    }

    fn policies(&mut self, node: &Node) -> Vec<(String, NamedPolicy)> {
        let Kind::Map(items) = &node.kind else {
            if !node.is_null() {
                self.issue(node, "policies", format!("expected a mapping, found {}", node.kind_name()));
            }
            return Vec::new();
        };
        let mut out: Vec<(String, NamedPolicy)> = Vec::new();
        for (k, v) in items {
            let Kind::Scalar { value: name, .. } = &k.kind else {
                self.issue(k, "policies", "a policy name must be a string");
                continue;
            };
            let field = join("policies", name);
            if name.starts_with("rls:") {
                self.issue(k, &field, "policy names starting with `rls:` are reserved for RLS rules");
                continue;
            }
            if out.iter().any(|(n, _)| n == name) {
                self.issue(k, &field, "policy given twice");
                continue;
            }
            if let Some(policy) = self.policy(name, v, &field) {
                out.push((name.clone(), NamedPolicy { policy, file: self.file.clone(), pos: k.pos }));
            }
        }
        out
    }

    fn policy(&mut self, name: &str, node: &Node, field: &str) -> Option<Policy> {
        let fields = self.fields(node, field, &["limit", "window", "algorithm", "burst"])?;
        let before = self.issues.len();
        let (mut limit, mut window, mut algorithm, mut burst) = (None, None, Algorithm::FixedWindow, None);
        for (key, n) in &fields {
            let f = join(field, key);
            match *key {
                "limit" => limit = self.integer(n, &f, Policy::MAX_LIMIT),
                "window" => {
                    if let Some(s) = self.string(n, &f) {
                        window = parse_window(&s);
                        if window.is_none() {
                            self.issue(
                                n,
                                &f,
                                format!("bad window {s:?} (expected e.g. 500ms, 1s, 5m, 1h, 1d, or a unit name)"),
                            );
                        }
                    }
                }
                "algorithm" => {
                    if let Some(s) = self.string(n, &f) {
                        match s.parse::<Algorithm>() {
                            Ok(a) => algorithm = a,
                            Err(e) => self.issue(n, &f, e.to_string()),
                        }
                    }
                }
                _ => burst = self.integer(n, &f, Policy::MAX_LIMIT),
            }
        }
        for k in ["limit", "window"] {
            if !fields.iter().any(|(n, _)| *n == k) {
                self.issue(node, &join(field, k), "missing");
            }
        }
        if self.issues.len() > before {
            return None;
        }
        let policy = Policy::new(algorithm, limit?, window?)
            .and_then(|p| match burst {
                Some(b) => p.with_burst(b),
                None => Ok(p),
            })
            .and_then(|p| p.named(name));
        match policy {
            Ok(p) => Some(p),
            Err(e) => {
                self.issue(node, field, e.to_string());
                None
            }
        }
    }
}

/// The most values (scalars, sequences, mappings) one rule's `metadata` may hold.
pub const MAX_METADATA_NODES: usize = 1_000;

/// How deep `descriptors` may nest.
pub const MAX_RULE_DEPTH: usize = 16;

fn join(parent: &str, name: &str) -> String {
    if parent.is_empty() { name.to_owned() } else { format!("{parent}.{name}") }
}

fn describe(node: &Node) -> String {
    match &node.kind {
        Kind::Scalar { value, plain: false } => format!("the quoted string {value:?}"),
        Kind::Scalar { value, .. } if !node.is_null() => format!("{value:?}"),
        _ => node.kind_name().to_owned(),
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

/// The policy name of a rule: `rls:<domain>/<path>`, so a rule's state survives a reload that changes its
/// numbers. Names longer than [`Policy::MAX_NAME_LEN`] keep a prefix and a stable 64-bit hash of the whole.
///
/// ```
/// use floodgate_server::config::rule_policy_name;
/// assert_eq!(rule_policy_name("edge", "path=/login/user"), "rls:edge/path=/login/user");
/// assert!(rule_policy_name("edge", &"x".repeat(500)).len() <= 128);
/// ```
pub fn rule_policy_name(domain: &str, path: &str) -> String {
    let full = format!("rls:{domain}/{path}");
    if full.len() <= Policy::MAX_NAME_LEN {
        return full;
    }
    // FNV-1a: stable across builds and processes, unlike std's hasher.
    let hash = full.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3));
    let mut cut = Policy::MAX_NAME_LEN - 17;
    while !full.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}~{hash:016x}", &full[..cut])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn errors(src: &str) -> Vec<String> {
        match Config::from_str("t.yaml", src) {
            Ok(_) => Vec::new(),
            Err(ConfigError::Invalid(issues)) => issues.iter().map(ToString::to_string).collect(),
            Err(e) => vec![e.to_string()],
        }
    }

    #[test]
    fn builtin_loads() {
        let cfg = Config::builtin();
        assert!(cfg.is_ok(), "{cfg:?}");
    }

    #[test]
    fn nested_matching() {
        let src = "domain: d
descriptors:
  - key: a
    rate_limit: {unit: second, requests_per_unit: 1}
    descriptors:
      - key: b
        value: x
        rate_limit: {unit: minute, requests_per_unit: 2, algorithm: gcra, burst: 3}
      - key: b
        rate_limit: {unlimited: true}
  - key: a
    value: special
  - key: z
    rate_limit: {unit: day, requests_per_unit: 0}
";
        let cfg = Config::from_str("t.yaml", src).map_err(|e| e.to_string());
        let cfg = cfg.as_ref().map_err(String::as_str).expect("valid");
        let d = cfg.domain("d").expect("domain");
        assert_eq!(d.find([("a", "1")]).map(|r| &*r.path), Some("a"));
        assert_eq!(d.find([("a", "1"), ("b", "x")]).map(|r| &*r.path), Some("a/b=x"));
        assert_eq!(d.find([("a", "1"), ("b", "y")]).map(|r| &*r.path), Some("a/b"));
        assert!(d.find([("a", "special")]).is_none(), "an exact entry with no limit exempts its value");
        assert!(d.find([("a", "1"), ("b", "x"), ("c", "1")]).is_none());
        assert!(d.find([("b", "x")]).is_none());
        assert!(matches!(
            d.find([("z", "q")]).and_then(|r| r.rate_limit.as_ref()).map(|l| &l.kind),
            Some(LimitKind::DenyAll)
        ));
        let Some(LimitKind::Limited(p)) =
            d.find([("a", "1"), ("b", "x")]).and_then(|r| r.rate_limit.as_ref()).map(|l| &l.kind)
        else {
            panic!("limited")
        };
        assert_eq!((p.limit(), p.capacity(), p.name()), (2, 3, Some("rls:d/a/b=x")));
    }

    #[test]
    fn errors_name_line_and_field() {
        let e = errors(
            "domain: d\ndescriptors:\n  - key: k\n    rate_limit:\n      unit: second\n      requests_per_unit: 1.5\n",
        );
        assert_eq!(
            e,
            vec!["t.yaml:6:26: descriptors[0].rate_limit.requests_per_unit: expected a whole number, found \"1.5\""]
        );
        let e = errors("domain: d\ndescriptors:\n  - key: k\n    colour: red\n");
        assert_eq!(e.len(), 1);
        assert!(e[0].starts_with("t.yaml:4:5: descriptors[0].colour: unknown field"), "{e:?}");
        let e = errors("domain: d\ndescriptors:\n  - key: k\n    rate_limit: {unlimited: true, unit: second}\n");
        assert!(e[0].contains("rate_limit.unit: not allowed beside `unlimited: true`"), "{e:?}");
        let e = errors("domain: d\ndescriptors:\n  - key: k\n  - key: k\n");
        assert!(e[0].contains("duplicate rule"), "{e:?}");
        let e = errors("domain: d\ndescriptors:\n  - value: v\n");
        assert!(e[0].contains("descriptors[0].key: missing"), "{e:?}");
        let e = errors("domain: \"\"\n");
        assert!(e[0].contains("domain: must not be empty"), "{e:?}");
        let e =
            errors("domain: d\ndescriptors:\n  - key: k\n    rate_limit: {unit: second, requests_per_unit: \"5\"}\n");
        assert!(e[0].contains("the quoted string"), "{e:?}");
        let e = errors(
            "domain: d\ndescriptors:\n  - key: k\n    rate_limit: {unit: second, requests_per_unit: 5, burst: 2}\n",
        );
        assert!(e[0].contains("takes no burst"), "{e:?}");
        let e = errors("domain: [\n");
        assert!(e[0].starts_with("t.yaml:"), "{e:?}");
        let e = errors("policies:\n  \"rls:x\": {limit: 10, window: 1s}\n");
        assert!(e[0].contains("reserved"), "{e:?}");
        let e = errors("policies:\n  api: {limit: 10, window: 1x}\n");
        assert!(e[0].contains("policies.api.window: bad window"), "{e:?}");
        assert!(errors("").iter().any(|e| e.contains("empty")));
    }

    #[test]
    fn wildcards_between_exact_and_key_only() {
        let src = "domain: d
descriptors:
  - key: p
    rate_limit: {unit: second, requests_per_unit: 1}
  - key: p
    value: /api/*
    rate_limit: {unit: second, requests_per_unit: 2}
  - key: p
    value: /api/users
    rate_limit: {unit: second, requests_per_unit: 3}
  - key: p
    value: /api/*/x
    rate_limit: {unit: second, requests_per_unit: 4}
  - key: p
    value: '*.png'
    share_threshold: true
    rate_limit: {unit: second, requests_per_unit: 5}
  - key: p
    value: /v*/users
    descriptors:
      - key: u
        rate_limit: {unit: second, requests_per_unit: 6}
";
        let cfg = Config::from_str("t.yaml", src).map_err(|e| e.to_string());
        let cfg = cfg.as_ref().map_err(String::as_str).expect("valid");
        let d = cfg.domain("d").expect("domain");
        let path = |e: &[(&str, &str)]| d.find(e.iter().copied()).map(|r| r.path.to_string());
        assert_eq!(path(&[("p", "/api/users")]).as_deref(), Some("p=/api/users"), "exact first");
        assert_eq!(path(&[("p", "/api/a/x")]).as_deref(), Some("p=/api/*"), "then wildcards in file order");
        assert_eq!(path(&[("p", "a.png")]).as_deref(), Some("p=*.png"));
        assert_eq!(path(&[("p", "/other")]).as_deref(), Some("p"), "then the key-only rule");
        assert_eq!(path(&[("p", "/v2/users"), ("u", "1")]).as_deref(), Some("p=/v*/users/u"));
        // No backtracking: /v2/users lands on the wildcard rule, which has no `z` child.
        assert_eq!(path(&[("p", "/v2/users"), ("z", "1")]), None);
        // The wildcard rule has no limit of its own.
        assert_eq!(path(&[("p", "/v2/users")]), None);
        let m = d.find_match([("p", "x.png")]).expect("match");
        assert_eq!(m.shared, vec![(0, "*.png")]);
        assert!(d.find_match([("p", "/api/q")]).expect("match").shared.is_empty());

        let e = errors("domain: d\ndescriptors:\n  - key: k\n    value: v\n    share_threshold: true\n");
        assert_eq!(
            e,
            vec![
                "t.yaml:5:22: descriptors[0].share_threshold: only allowed on a rule whose value holds a `*` wildcard"
            ]
        );
        let e = errors("domain: d\ndescriptors:\n  - key: k\n    value: a*\n  - key: k\n    value: a*\n");
        assert!(e[0].contains("descriptors[1]: duplicate rule"), "{e:?}");
        let e = errors("domain: d\ndescriptors:\n  - key: k\n    value: a*\n    share_threshold: 1\n");
        assert!(e[0].contains("descriptors[0].share_threshold: expected true or false"), "{e:?}");
    }

    #[test]
    fn windows_of_any_length() {
        let src = "domain: d
descriptors:
  - key: a
    rate_limit: {unit: minute, unit_multiplier: 5, requests_per_unit: 1}
  - key: b
    rate_limit: {window: 30s, requests_per_unit: 1}
  - key: c
    rate_limit: {window: 2h, requests_per_unit: 0}
  - key: d
    rate_limit: {unit: month, requests_per_unit: 1}
  - key: e
    rate_limit: {window: 1500ms, requests_per_unit: 1, algorithm: sliding_window}
";
        let cfg = Config::from_str("t.yaml", src).map_err(|e| e.to_string());
        let cfg = cfg.as_ref().map_err(String::as_str).expect("valid");
        let d = cfg.domain("d").expect("domain");
        let limit = |k: &str| d.find([(k, "x")]).and_then(|r| r.rate_limit.clone()).expect("limit");
        let secs = Duration::from_secs;
        assert_eq!((limit("a").window, limit("a").unit), (secs(300), Some(Unit::Minute)));
        assert_eq!((limit("b").window, limit("b").unit), (secs(30), Some(Unit::Second)));
        assert_eq!((limit("c").window, limit("c").unit), (secs(7200), Some(Unit::Hour)));
        assert!(matches!(limit("c").kind, LimitKind::DenyAll));
        assert_eq!(limit("d").window, secs(30 * 86_400));
        let LimitKind::Limited(p) = limit("a").kind else { panic!("limited") };
        assert_eq!(p.window(), secs(300));
        let LimitKind::Limited(p) = limit("e").kind else { panic!("limited") };
        assert_eq!(p.window(), Duration::from_millis(1500));

        let rl = |body: &str| errors(&format!("domain: d\ndescriptors:\n  - key: k\n    rate_limit: {{{body}}}\n"));
        let e = rl("unit: second, unit_multiplier: 0, requests_per_unit: 1");
        assert_eq!(e, vec!["t.yaml:4:49: descriptors[0].rate_limit.unit_multiplier: must be at least 1"]);
        let e = rl("unit: second, unit_multiplier: 1.5, requests_per_unit: 1");
        assert!(e[0].contains("rate_limit.unit_multiplier: expected a whole number"), "{e:?}");
        let e = rl("window: 30x, requests_per_unit: 1");
        assert!(e[0].contains("t.yaml:4:26: descriptors[0].rate_limit.window: bad window"), "{e:?}");
        let e = rl("window: 0s, requests_per_unit: 1");
        assert!(e[0].contains("rate_limit.window: bad window"), "{e:?}");
        let e = rl("window: 30s, unit: second, requests_per_unit: 1");
        assert!(e[0].contains("rate_limit.window: not allowed beside `unit`"), "{e:?}");
        let e = rl("unlimited: true, window: 30s");
        assert!(e[0].contains("rate_limit.window: not allowed beside `unlimited: true`"), "{e:?}");
        let e = rl("requests_per_unit: 1");
        assert!(e[0].contains("rate_limit.unit: missing"), "{e:?}");
        let e = rl("unit: year, unit_multiplier: 11, requests_per_unit: 1");
        assert!(e[0].contains("longer than the maximum"), "{e:?}");
    }

    #[test]
    fn replaces_is_checked() {
        let ok = Config::from_str(
            "t.yaml",
            "domain: d\ndescriptors:\n  - key: k\n    rate_limit: {unit: second, requests_per_unit: 1, name: a, replaces: [{name: b}, {name: c}]}\n",
        );
        let ok = ok.map_err(|e| e.to_string()).expect("valid");
        let rl = ok.domain("d").and_then(|d| d.find([("k", "x")])).and_then(|r| r.rate_limit.clone()).expect("limit");
        assert_eq!(rl.replaces, vec![Arc::<str>::from("b"), Arc::from("c")]);
        let rl = |body: &str| {
            errors(&format!(
                "domain: d\ndescriptors:\n  - key: k\n    rate_limit: {{unit: second, requests_per_unit: 1, {body}}}\n"
            ))
        };
        let e = rl("name: a, replaces: [{name: a}]");
        assert_eq!(
            e,
            vec!["t.yaml:4:81: descriptors[0].rate_limit.replaces[0].name: a limit cannot replace itself (\"a\")"]
        );
        let e = rl("replaces: [{name: \"\"}]");
        assert!(e[0].contains("rate_limit.replaces[0].name: must not be empty"), "{e:?}");
        let e = rl("replaces: [{}]");
        assert!(e[0].contains("rate_limit.replaces[0].name: missing"), "{e:?}");
        let e = rl("replaces: [{name: b, colour: red}]");
        assert!(e[0].contains("rate_limit.replaces[0].colour: unknown field"), "{e:?}");
        let e = rl("replaces: b");
        assert!(e[0].contains("rate_limit.replaces: expected a sequence"), "{e:?}");
    }

    #[test]
    fn empty_value_is_no_value_and_detailed_metric_is_accepted() {
        let src = "domain: d\ndescriptors:\n  - key: k\n    value: ''\n    detailed_metric: true\n    rate_limit: {unit: second, requests_per_unit: 1}\n";
        let cfg = Config::from_str("t.yaml", src).map_err(|e| e.to_string()).expect("valid");
        let rule = cfg.domain("d").and_then(|d| d.find([("k", "anything")])).expect("key-only rule");
        assert!(rule.value.is_none() && rule.detailed_metric);
        let e = errors("domain: d\ndescriptors:\n  - key: k\n    value: ''\n  - key: k\n");
        assert!(e[0].contains("duplicate rule: key \"k\" without a value"), "{e:?}");
        let e = errors("domain: d\ndescriptors:\n  - key: k\n    detailed_metric: yes\n");
        assert!(e[0].contains("descriptors[0].detailed_metric: expected true or false"), "{e:?}");
    }

    #[test]
    fn quota_mode_value_to_metric_and_metadata() {
        let src = "domain: d
descriptors:
  - key: k
    value: v
    quota_mode: true
    value_to_metric: true
    metadata:
      backend: gpt-5
      weight: 2
      ratio: 0.5
      on: true
      quoted: \"7\"
      tags: [a, b]
      nested: {x: ~}
    rate_limit: {unit: second, requests_per_unit: 1}
";
        let cfg = Config::from_str("t.yaml", src).map_err(|e| e.to_string()).expect("valid");
        let d = cfg.domain("d").expect("domain");
        let rule = d.find([("k", "v")]).expect("rule");
        assert!(rule.quota_mode && rule.value_to_metric && d.value_to_metric);
        assert_eq!(&*rule.stats_key, "d.k_v");
        let md = serde_json::Value::Object((**rule.metadata.as_ref().expect("metadata")).clone());
        assert_eq!(
            md,
            serde_json::json!({"backend": "gpt-5", "weight": 2, "ratio": 0.5, "on": true, "quoted": "7",
                "tags": ["a", "b"], "nested": {"x": null}})
        );
        let e = errors("domain: d\ndescriptors:\n  - key: k\n    metadata: [a]\n");
        assert_eq!(e, vec!["t.yaml:4:15: descriptors[0].metadata: expected a mapping, found a sequence"]);
        let e = errors("domain: d\ndescriptors:\n  - key: k\n    metadata: {a: 1, a: 2}\n");
        assert!(e[0].contains("descriptors[0].metadata.a: field given twice"), "{e:?}");
        let e = errors("domain: d\ndescriptors:\n  - key: k\n    quota_mode: 1\n");
        assert!(e[0].contains("descriptors[0].quota_mode: expected true or false"), "{e:?}");
        let e = errors(
            "domain: d\ndescriptors:\n  - key: k\n    rate_limit: {unit: second, requests_per_unit: 1, metadata: {}}\n",
        );
        assert!(e[0].contains("rate_limit.metadata: unknown field"), "{e:?}");
        let big = (0..=MAX_METADATA_NODES).map(|i| format!("k{i}: 1")).collect::<Vec<_>>().join(", ");
        let e = errors(&format!("domain: d\ndescriptors:\n  - key: k\n    metadata: {{{big}}}\n"));
        assert!(e[0].contains("metadata holds more than"), "{e:?}");
    }

    #[test]
    fn merge_domains_joins_files_that_share_a_domain() {
        let dir = std::env::temp_dir().join(format!("floodgate-merge-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let write = |name: &str, src: &str| std::fs::write(dir.join(name), src).expect("write");
        write("a.yaml", "domain: d\ndescriptors:\n  - key: x\n    rate_limit: {unit: second, requests_per_unit: 1}\n");
        write(
            "b.yaml",
            "domain: d\ndescriptors:\n  - key: y\n    rate_limit: {unit: second, requests_per_unit: 2}\n  - key: x\n    value: v*\n",
        );
        let e = Config::load(&dir).map(|_| ()).map_err(|e| e.to_string()).expect_err("one domain twice");
        assert!(e.contains("b.yaml:1:9: domain: domain \"d\" is already defined in"), "{e}");
        let cfg = Config::load_with(&dir, true).map_err(|e| e.to_string()).expect("merged");
        let d = cfg.domain("d").expect("domain");
        assert_eq!(d.find([("x", "1")]).map(|r| &*r.path), Some("x"));
        assert_eq!(d.find([("y", "1")]).map(|r| &*r.path), Some("y"));
        assert!(d.find([("x", "vv")]).is_none(), "b.yaml's wildcard exemption joined a.yaml's key");
        write("c.yaml", "domain: d\ndescriptors:\n  - key: q\n  - key: y\n");
        let e = Config::load_with(&dir, true).map(|_| ()).map_err(|e| e.to_string()).expect_err("duplicate");
        assert!(e.contains("c.yaml:4:"), "{e}");
        assert!(
            e.contains("descriptors: duplicate rule: key \"y\" without a value is already defined by an earlier file of domain \"d\""),
            "{e}"
        );
        assert!(!e.contains("\"q\""), "{e}");
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }

    #[test]
    fn long_names_are_hashed() {
        let a = rule_policy_name("d", &"a".repeat(300));
        let b = rule_policy_name("d", &format!("{}b", "a".repeat(299)));
        assert_ne!(a, b);
        assert!(a.len() <= Policy::MAX_NAME_LEN);
        let uni = rule_policy_name("d", &"é".repeat(300));
        assert!(uni.len() <= Policy::MAX_NAME_LEN);
    }
}
