//! The YAML reader: walks one file's tree into the model, collecting every issue with its position.

use super::*;

/// Walks one file's tree, collecting every issue.
pub(super) struct Reader {
    pub(super) file: Arc<str>,
    pub(super) issues: Vec<ConfigIssue>,
    /// What loads but reads differently from how it is written (see [`Config::warnings`]).
    pub(super) warnings: Vec<ConfigIssue>,
}

pub(super) type FileParts = (Option<(Domain, Pos)>, Vec<(String, NamedPolicy)>);

impl Reader {
    pub(super) fn warn(&mut self, node: &Node, field: &str, message: impl Into<String>) {
        self.warnings.push(ConfigIssue {
            file: self.file.clone(),
            pos: node.pos,
            field: field.to_owned(),
            message: message.into(),
        });
    }

    pub(super) fn issue(&mut self, node: &Node, field: &str, message: impl Into<String>) {
        self.issues.push(ConfigIssue {
            file: self.file.clone(),
            pos: node.pos,
            field: field.to_owned(),
            message: message.into(),
        });
    }

    /// The fields of a mapping, checked against `allowed`; unknown and repeated keys are reported.
    pub(super) fn fields<'n>(
        &mut self,
        node: &'n Node,
        field: &str,
        allowed: &[&str],
    ) -> Option<Vec<(&'n str, &'n Node)>> {
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

    pub(super) fn string(&mut self, node: &Node, field: &str) -> Option<String> {
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

    pub(super) fn nonempty(&mut self, node: &Node, field: &str) -> Option<String> {
        let s = self.string(node, field)?;
        if s.is_empty() {
            self.issue(node, field, "must not be empty");
            return None;
        }
        Some(s)
    }

    pub(super) fn integer(&mut self, node: &Node, field: &str, max: u64) -> Option<u64> {
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

    pub(super) fn boolean(&mut self, node: &Node, field: &str) -> Option<bool> {
        match &node.kind {
            Kind::Scalar { value, plain: true } if matches!(value.as_str(), "true" | "True" | "TRUE") => Some(true),
            Kind::Scalar { value, plain: true } if matches!(value.as_str(), "false" | "False" | "FALSE") => Some(false),
            // YAML 1.1's other booleans, which the reference's YAML reader (go-yaml v2) accepts.
            Kind::Scalar { value, plain: true } if yaml11_bool(value).is_some() => {
                let b = yaml11_bool(value)?;
                self.warn(
                    node,
                    field,
                    format!("`{value}` read as {b} (a YAML 1.1 boolean, as the reference reads it; write {b})"),
                );
                Some(b)
            }
            _ => {
                self.issue(node, field, format!("expected true or false, found {}", describe(node)));
                None
            }
        }
    }

    pub(super) fn seq<'n>(&mut self, node: &'n Node, field: &str) -> Option<&'n [Node]> {
        match &node.kind {
            Kind::Seq(items) => Some(items),
            _ if node.is_null() => Some(&[]),
            _ => {
                self.issue(node, field, format!("expected a sequence, found {}", node.kind_name()));
                None
            }
        }
    }

    pub(super) fn file_root(&mut self, root: &Node) -> Option<FileParts> {
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
    pub(super) fn level(
        &mut self,
        domain: &str,
        node: &Node,
        field: &str,
        parent: (&str, &str),
        depth: usize,
    ) -> Level {
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

    /// One `descriptors` item: its fields, its limits and its children (at most [`MAX_RULE_DEPTH`] deep).
    pub(super) fn rule(
        &mut self,
        domain: &str,
        node: &Node,
        field: &str,
        parent: (&str, &str),
        depth: usize,
    ) -> Option<Rule> {
        let (parent, stats_parent) = parent;
        let fields = self.fields(node, field, &RULE_FIELDS)?;
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
        let (path, stats_key) = rule_paths(&key, value.as_deref(), parent, stats_parent);
        let extra_limits = match extra_node {
            Some((n, f)) => self.extra_limits(domain, &path, n, &f, limit_node.is_some()),
            None => Vec::new(),
        };
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

    /// A rule's `extra_limits`: a list of `rate_limit`s, each named after the rule's path and its place in the
    /// list; it needs a `rate_limit` beside it (`has_limit`).
    fn extra_limits(&mut self, domain: &str, path: &str, n: &Node, f: &str, has_limit: bool) -> Vec<RateLimit> {
        if !has_limit {
            self.issue(n, f, "needs a `rate_limit` beside it");
        }
        let mut out = Vec::new();
        for (i, item) in self.seq(n, f).unwrap_or_default().iter().enumerate() {
            let item_path = format!("{path}#{}", i + 1);
            if let Some(l) = self.rate_limit(domain, &item_path, item, &format!("{f}[{i}]")) {
                out.push(l);
            }
        }
        out
    }

    /// `metadata`: a mapping of string keys to any YAML value (scalars as strings, numbers or booleans when
    /// written plain), at most [`MAX_METADATA_NODES`] nodes; `null` is no metadata.
    pub(super) fn metadata(&mut self, node: &Node, field: &str) -> Option<serde_json::Map<String, serde_json::Value>> {
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

    pub(super) fn metadata_value(&mut self, node: &Node, field: &str, budget: &mut usize) -> Option<serde_json::Value> {
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
}

/// The most values (scalars, sequences, mappings) one rule's `metadata` may hold.
pub const MAX_METADATA_NODES: usize = 1_000;

/// How deep `descriptors` may nest.
pub const MAX_RULE_DEPTH: usize = 16;

/// A YAML 1.1 boolean other than true/false (`yes`, `no`, `on`, `off`, `y`, `n`, in go-yaml v2's spellings).
pub(super) fn yaml11_bool(s: &str) -> Option<bool> {
    match s {
        "y" | "Y" | "yes" | "Yes" | "YES" | "on" | "On" | "ON" => Some(true),
        "n" | "N" | "no" | "No" | "NO" | "off" | "Off" | "OFF" => Some(false),
        _ => None,
    }
}

pub(super) fn join(parent: &str, name: &str) -> String {
    if parent.is_empty() { name.to_owned() } else { format!("{parent}.{name}") }
}

/// A rule's path (`key=value/key...`, its state's name) and its stats key (the reference's: each level's `key`,
/// or `key_value` when the rule has a value), below its parent's.
fn rule_paths(key: &str, value: Option<&str>, parent: &str, stats_parent: &str) -> (Arc<str>, Arc<str>) {
    let path = match (value, parent.is_empty()) {
        (Some(v), true) => format!("{key}={v}"),
        (Some(v), false) => format!("{parent}/{key}={v}"),
        (None, true) => key.to_owned(),
        (None, false) => format!("{parent}/{key}"),
    };
    let stats_key = match value {
        Some(v) => format!("{stats_parent}.{key}_{v}"),
        None => format!("{stats_parent}.{key}"),
    };
    (path.into(), stats_key.into())
}

/// The fields a rule (a `descriptors` item) may hold.
const RULE_FIELDS: [&str; 11] = [
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

pub(super) fn describe(node: &Node) -> String {
    match &node.kind {
        Kind::Scalar { value, plain: false } => format!("the quoted string {value:?}"),
        Kind::Scalar { value, .. } if !node.is_null() => format!("{value:?}"),
        _ => node.kind_name().to_owned(),
    }
}
