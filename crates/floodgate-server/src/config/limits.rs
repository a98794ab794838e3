//! Reading limits: a rule's `rate_limit` (and its `replaces`), and the named `policies`.

use super::*;

/// The fields of one `rate_limit` as written, each read on its own (their combination is checked after).
struct RawLimit<'n> {
    unit: Option<Unit>,
    rpu: Option<u64>,
    unlimited: bool,
    name: String,
    algorithm: Option<(Algorithm, &'n Node)>,
    burst: Option<(u64, &'n Node)>,
    multiplier: u64,
    window: Option<Duration>,
    replaces: Vec<(usize, Arc<str>, &'n Node)>,
}

/// The fields a `rate_limit` may hold.
const RATE_LIMIT_FIELDS: [&str; 9] =
    ["unit", "unit_multiplier", "window", "requests_per_unit", "unlimited", "name", "replaces", "algorithm", "burst"];

impl Reader {
    /// A rule's `rate_limit`: its fields, then their combination, then the limit they make (its policy named
    /// after the rule's `path`, so its state survives a reload that changes its numbers).
    pub(super) fn rate_limit(&mut self, domain: &str, path: &str, node: &Node, field: &str) -> Option<RateLimit> {
        let fields = self.fields(node, field, &RATE_LIMIT_FIELDS)?;
        let before = self.issues.len();
        let mut raw = self.rate_limit_fields(&fields, field);
        self.check_rate_limit(&raw, &fields, node, field);
        if self.issues.len() > before {
            return None;
        }
        let has = |k: &str| fields.iter().find(|(n, _)| *n == k).map(|(_, v)| *v);
        let rpu = u32::try_from(raw.rpu.unwrap_or(0)).unwrap_or(u32::MAX);
        let window = match (raw.window, raw.unit) {
            _ if raw.unlimited => Duration::ZERO,
            (Some(w), _) => {
                raw.unit = Some(Unit::largest_dividing(w));
                w
            }
            (None, Some(u)) => u.window().saturating_mul(u32::try_from(raw.multiplier).unwrap_or(u32::MAX)),
            (None, None) => return None,
        };
        if !raw.unlimited && window > Policy::MAX_WINDOW {
            let at = has("unit_multiplier").or(has("window")).unwrap_or(node);
            self.issue(at, field, format!("window {window:?} is longer than the maximum of {:?}", Policy::MAX_WINDOW));
            return None;
        }
        let kind = self.limit_kind(&raw, rpu, window, rule_policy_name(domain, path), node, field)?;
        let (report_unit, report_requests_per_unit) = match raw.unit {
            Some(_) => {
                let (u, r) = Unit::reported(window, rpu);
                (Some(u), r)
            }
            None => (None, 0),
        };
        Some(RateLimit {
            name: raw.name.into(),
            unit: raw.unit,
            window,
            requests_per_unit: rpu,
            report_unit,
            report_requests_per_unit,
            algorithm: raw.algorithm.map_or(Algorithm::FixedWindow, |(a, _)| a),
            replaces: raw.replaces.into_iter().map(|(_, r, _)| r).collect(),
            kind,
        })
    }

    /// Reads each field of a `rate_limit` on its own, reporting what is malformed.
    fn rate_limit_fields<'n>(&mut self, fields: &[(&str, &'n Node)], field: &str) -> RawLimit<'n> {
        let mut raw = RawLimit {
            unit: None,
            rpu: None,
            unlimited: false,
            name: String::new(),
            algorithm: None,
            burst: None,
            multiplier: 1,
            window: None,
            replaces: Vec::new(),
        };
        for &(key, n) in fields {
            let f = join(field, key);
            match key {
                "unit" => {
                    if let Some(s) = self.string(n, &f) {
                        raw.unit = Unit::parse(&s);
                        if raw.unit.is_none() {
                            let names: Vec<&str> = Unit::ALL.iter().map(|u| u.name()).collect();
                            self.issue(n, &f, format!("unknown unit {s:?} (expected one of {})", names.join(", ")));
                        }
                    }
                }
                "requests_per_unit" => raw.rpu = self.integer(n, &f, u64::from(u32::MAX)),
                "unit_multiplier" => match self.integer(n, &f, u64::from(u32::MAX)) {
                    Some(0) => self.issue(n, &f, "must be at least 1"),
                    Some(m) => raw.multiplier = m,
                    None => {}
                },
                "window" => {
                    if let Some(s) = self.string(n, &f) {
                        match parse_window(&s) {
                            Some(w) if !w.is_zero() => raw.window = Some(w),
                            _ => self.issue(
                                n,
                                &f,
                                format!("bad window {s:?} (expected e.g. 500ms, 30s, 5m, 1h, 1d, or a unit name)"),
                            ),
                        }
                    }
                }
                "unlimited" => raw.unlimited = self.boolean(n, &f).unwrap_or(false),
                "replaces" => raw.replaces = self.replaces(n, &f),
                "name" => raw.name = self.string(n, &f).unwrap_or_default(),
                "algorithm" => {
                    if let Some(s) = self.string(n, &f) {
                        match s.parse::<Algorithm>() {
                            Ok(a) => raw.algorithm = Some((a, n)),
                            Err(e) => self.issue(n, &f, e.to_string()),
                        }
                    }
                }
                _ => raw.burst = self.integer(n, &f, Policy::MAX_LIMIT).map(|b| (b, n)),
            }
        }
        raw
    }

    /// Checks how a `rate_limit`'s fields combine: what `unlimited: true` allows beside it, `window` or `unit`,
    /// a missing `requests_per_unit` (read as 0, with a warning, as the reference reads it), `replaces` itself.
    fn check_rate_limit(&mut self, raw: &RawLimit<'_>, fields: &[(&str, &Node)], node: &Node, field: &str) {
        let has = |k: &str| fields.iter().find(|(n, _)| *n == k).map(|(_, v)| *v);
        if raw.unlimited {
            for k in ["unit", "unit_multiplier", "window", "algorithm", "burst"] {
                if let Some(n) = has(k) {
                    self.issue(n, &join(field, k), "not allowed beside `unlimited: true`");
                }
            }
            if let Some(n) = has("requests_per_unit") {
                let f = join(field, "requests_per_unit");
                self.warn(n, &f, "ignored beside `unlimited: true` (as the reference does)");
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
                self.warn(
                    node,
                    &join(field, "requests_per_unit"),
                    "missing: read as 0, so every request is over the limit (as the reference reads it; or set `unlimited: true`)",
                );
            }
        }
        for (i, r, n) in &raw.replaces {
            if !raw.name.is_empty() && **r == *raw.name {
                let f = format!("{}[{i}].name", join(field, "replaces"));
                self.issue(n, &f, format!("a limit cannot replace itself ({:?})", raw.name));
            }
        }
    }

    /// What a checked `rate_limit` does: nothing (`unlimited`), deny all (`requests_per_unit: 0`), or limit by
    /// its policy, named `policy_name`.
    fn limit_kind(
        &mut self,
        raw: &RawLimit<'_>,
        rpu: u32,
        window: Duration,
        policy_name: String,
        node: &Node,
        field: &str,
    ) -> Option<LimitKind> {
        if raw.unlimited {
            return Some(LimitKind::Unlimited);
        }
        raw.unit?;
        if rpu == 0 {
            return Some(LimitKind::DenyAll);
        }
        let algorithm = raw.algorithm.map_or(Algorithm::FixedWindow, |(a, _)| a);
        let policy = Policy::new(algorithm, u64::from(rpu), window)
            .and_then(|p| match raw.burst {
                Some((b, _)) => p.with_burst(b),
                None => Ok(p),
            })
            .and_then(|p| p.named(policy_name));
        match policy {
            Ok(p) => Some(LimitKind::Limited(p)),
            Err(e) => {
                let at = raw.burst.map(|(_, n)| n).or(raw.algorithm.map(|(_, n)| n)).unwrap_or(node);
                self.issue(at, field, e.to_string());
                None
            }
        }
    }

    /// `replaces: [{name: X}, ...]`: each item a mapping with a non-empty `name` only.
    pub(super) fn replaces<'n>(&mut self, node: &'n Node, field: &str) -> Vec<(usize, Arc<str>, &'n Node)> {
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

    pub(super) fn policies(&mut self, node: &Node) -> Vec<(String, NamedPolicy)> {
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

    pub(super) fn policy(&mut self, name: &str, node: &Node, field: &str) -> Option<Policy> {
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
