//! Matching a request descriptor's entries to a domain's rules (the reference's rules; see the module docs).

use super::*;

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
    fn get(&self, key: &str, value: &str) -> Option<&Rule> {
        let k = self.keys.get(key)?;
        k.values
            .get(value)
            .or_else(|| k.wildcards.iter().find(|r| r.value.as_deref().is_some_and(|p| wildcard_match(p, value))))
            .or(k.any.as_ref())
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
