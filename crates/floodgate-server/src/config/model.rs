//! The model a config is read into: rules, their limits, the levels that index them, and domains.

use super::*;

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
    pub(super) keys: HashMap<Arc<str>, KeyRules>,
}

#[derive(Clone, Debug, Default)]
pub(super) struct KeyRules {
    pub(super) values: HashMap<Arc<str>, Rule>,
    /// Rules whose value holds a `*`, in file order.
    pub(super) wildcards: Vec<Rule>,
    pub(super) any: Option<Rule>,
}

impl Level {
    /// Moves `other`'s rules into this level (wildcards after this level's own); returns the rules of `other`
    /// that this level already has, in file order, instead of adding them.
    pub(super) fn absorb(&mut self, other: Level) -> Vec<Rule> {
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

    /// Every rule of this level, sorted by key then value (key-only last).
    pub fn rules(&self) -> Vec<&Rule> {
        let mut out: Vec<&Rule> =
            self.keys.values().flat_map(|k| k.values.values().chain(&k.wildcards).chain(k.any.as_ref())).collect();
        out.sort_by(|a, b| (&a.key, a.value.is_none(), &a.value).cmp(&(&b.key, b.value.is_none(), &b.value)));
        out
    }

    pub(super) fn any_value_to_metric(&self) -> bool {
        self.keys.values().any(|k| {
            k.values
                .values()
                .chain(&k.wildcards)
                .chain(k.any.as_ref())
                .any(|r| r.value_to_metric || r.children.any_value_to_metric())
        })
    }
}

impl Rule {
    /// `key "k" with value "v"` or `key "k" without a value`, for messages.
    pub(super) fn describe(&self) -> String {
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
