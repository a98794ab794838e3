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

mod limits;
mod matcher;
mod merger;
mod model;
mod reader;
mod unit;

pub use matcher::{Match, wildcard_match};
use merger::{Merger, whole_file};
pub use model::{Domain, Level, LimitKind, RateLimit, Rule, rule_policy_name};
pub use reader::{MAX_METADATA_NODES, MAX_RULE_DEPTH};
use reader::{Reader, join};
pub use unit::{Unit, parse_window};

/// The largest config file accepted.
pub const MAX_CONFIG_BYTES: u64 = 16 << 20;
/// The most files a config directory may hold.
pub const MAX_CONFIG_FILES: usize = 10_000;

/// The config used when `serve` gets no `--config`: see the crate README for what it holds.
pub const BUILTIN_YAML: &str = include_str!("../../examples/default.yaml");

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

/// One line, whatever the text holds: control characters (a key written across lines, say) are escaped.
struct OneLine<'a>(&'a str);

impl fmt::Display for OneLine<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for c in self.0.chars() {
            if c.is_control() { write!(f, "{}", c.escape_default())? } else { fmt::Write::write_char(f, c)? }
        }
        Ok(())
    }
}

/// One line per issue (`file:line:col: field: message`), whatever the file, its keys or values hold.
impl fmt::Display for ConfigIssue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", OneLine(&self.file))?;
        if self.pos.line > 0 {
            write!(f, ":{}:{}", self.pos.line, self.pos.col)?;
        }
        if !self.field.is_empty() {
            write!(f, ": {}", OneLine(&self.field))?;
        }
        write!(f, ": {}", OneLine(&self.message))
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
        "{path}: no domain and no policy found (looked there for *.yaml and *.yml files, found {files}); an \
         empty config is refused so that a wrong path or a deleted file never turns every limit off \
         (`serve --allow-empty-config` starts anyway, with no limits)"
    )]
    Empty {
        /// Where the config was looked for (made absolute when it can be).
        path: String,
        /// How many YAML files were found there.
        files: usize,
    },
}

fn join_issues(issues: &[ConfigIssue]) -> String {
    issues.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n")
}

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
    /// What loads but reads differently from how it is written, each with file and line: what the reference's
    /// loader accepts and we accept too (a `rate_limit` without `requests_per_unit`, read as 0; a
    /// `requests_per_unit` beside `unlimited: true`, ignored; a YAML 1.1 boolean such as `yes`). `floodgate
    /// check` prints them, and `check --strict` refuses the config for them.
    ///
    /// ```
    /// use floodgate_server::config::Config;
    /// let cfg = Config::from_str("x.yaml", "domain: d\ndescriptors:\n  - key: k\n    shadow_mode: yes\n    rate_limit: {unit: second}\n")?;
    /// let warnings: Vec<String> = cfg.warnings.iter().map(|w| w.to_string()).collect();
    /// assert!(warnings[0].starts_with("x.yaml:4:"), "{warnings:?}");
    /// assert!(warnings[1].starts_with("x.yaml:5:"), "{warnings:?}");
    /// # Ok::<(), floodgate_server::config::ConfigError>(())
    /// ```
    pub warnings: Vec<ConfigIssue>,
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
        let file_count = files.len();
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
            let path = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
            return Err(ConfigError::Empty { path: path.display().to_string(), files: file_count });
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

#[cfg(test)]
mod tests;
