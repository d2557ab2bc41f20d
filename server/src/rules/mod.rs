//! Descriptor rules: the YAML files an operator writes, compiled into an
//! immutable [`RuleSet`], and the matching of a request descriptor against it.
//!
//! On the request path this is step three: the limiter has validated the
//! request (step two); here each descriptor's entries walk the domain's
//! descriptor tree to find the [`RateLimit`] that applies (if any); the
//! limiter then counts (step four).
//!
//! Matching follows envoyproxy/ratelimit: at each level an exact `key`/`value`
//! match wins, then the first wildcard value in config order, then the
//! key-only default; a limit applies only if it sits at the depth of the
//! request's last entry. Unlike the reference, keys and values are matched as
//! separate strings, so `("a_b", "c")` and `("a", "b_c")` never collide.
//!
//! Before any request, at startup and on each reload ([`reload`]), the
//! rules are loaded by job: `files` finds and reads the files and names
//! their version, `yaml` parses each into an untyped tree, `parse` checks
//! it block by block (one submodule per block), `tree` places the
//! descriptors, and `load` composes them into a [`RuleSet`]; every problem
//! is a [`LoadError`] with the reference service's exact message.

mod error;
mod files;
mod load;
mod parse;
pub mod reload;
mod tree;
mod wildcard;
mod yaml;

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, RwLock};

pub use error::{LoadError, report};
pub use files::{read_paths, version_of};
pub use load::{load_files, load_paths};
pub use wildcard::Wildcard;

use crate::model::FailurePolicy;
pub use crate::model::Unit;
use crate::model::algorithm::Algorithm;
use crate::model::capacity::CapacityRule;

/// What a matched rule allows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Allowance {
    /// Never limited; the store is not consulted.
    Unlimited,
    /// `requests_per_unit` hits per `unit_multiplier` × `unit`. 0 blocks every hit.
    PerUnit {
        /// Hits allowed per period.
        requests_per_unit: u32,
        /// The unit of the period.
        unit: Unit,
        /// The period is this many units (1 unless `unit_multiplier` is set).
        unit_multiplier: u32,
        /// How hits are counted.
        algorithm: Algorithm,
        /// Bucket size (token bucket) or burst tolerance (GCRA), in hits;
        /// `None` means `requests_per_unit`.
        burst: Option<u32>,
    },
}

impl Allowance {
    /// A plain fixed window of `requests_per_unit` per `unit`, as an
    /// override or a reference-format rule describes.
    pub fn fixed(requests_per_unit: u32, unit: Unit) -> Self {
        Allowance::PerUnit {
            requests_per_unit,
            unit,
            unit_multiplier: 1,
            algorithm: Algorithm::FixedWindow,
            burst: None,
        }
    }
}

/// A `rate_limit` block (or one entry of `rate_limits`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RateLimit {
    /// What it allows.
    pub allowance: Allowance,
    /// The optional `name`, echoed in `current_limit.name`.
    pub name: Option<Arc<str>>,
    /// Names of other limits this one replaces when both match in a request.
    pub replaces: Vec<Arc<str>>,
}

/// One descriptor entry of the rules tree.
#[derive(Debug, Default)]
pub struct Node {
    /// The limits at this depth (`rate_limit`, or every entry of
    /// `rate_limits`); all must pass. A node without limits and without
    /// children is an allow-list entry: matching it yields "no limit".
    pub rate_limits: Vec<RateLimit>,
    /// Counted, but always answered OK.
    pub shadow_mode: bool,
    /// See the README: over-limit only if every quota descriptor is over.
    pub quota_mode: bool,
    /// Every value matching this node's wildcard shares one counter.
    pub share_threshold: bool,
    /// Metrics use the request's values for the whole path.
    pub detailed_metric: bool,
    /// Metrics use the request's value at this level.
    pub value_to_metric: bool,
    /// The YAML `metadata`, returned in `dynamic_metadata` when enabled.
    pub metadata: Option<Arc<serde_json::Map<String, serde_json::Value>>>,
    /// The `capacity` block (never with `rate_limits`): the service behind
    /// this descriptor takes so much, shared among clients by priority.
    pub capacity: Option<Arc<CapacityRule>>,
    /// The configured value (the pattern, for a wildcard node); empty for a
    /// key-only default.
    pub value: Box<str>,
    /// `domain.key_value.key...`, as `/rlconfig` and stats name the node.
    pub full_key: Box<str>,
    /// The metric name of each level down to this node (`key_value`, or
    /// `key` for a key-only default) and whether that level's
    /// `value_to_metric` puts the request's value in its place.
    pub stat_path: Box<[(Box<str>, bool)]>,
    children: Level,
}

impl Node {
    /// The rule's key in metrics, the reference's stat key without the
    /// domain: `key1_value1.key2` from the configuration, or, where
    /// `detailed_metric` (the whole path) or `value_to_metric` (one level)
    /// ask for it, `key_value` with the request's value. `entries` are the
    /// request's entries that matched down to this node.
    pub fn stat_key<'a, 'e>(
        &'a self,
        entries: impl IntoIterator<Item = (&'e str, &'e str)>,
    ) -> std::borrow::Cow<'a, str> {
        use std::borrow::Cow;
        if !self.detailed_metric && !self.stat_path.iter().any(|(_, v)| *v) {
            let start = self.full_key.len()
                - self
                    .stat_path
                    .iter()
                    .map(|(s, _)| s.len() + 1)
                    .sum::<usize>()
                + 1;
            return Cow::Borrowed(self.full_key.get(start..).unwrap_or(&self.full_key));
        }
        let mut out = String::new();
        for (i, ((segment, value_to_metric), (key, value))) in
            self.stat_path.iter().zip(entries).enumerate()
        {
            if i > 0 {
                out.push('.');
            }
            if (self.detailed_metric || *value_to_metric) && !value.is_empty() {
                out.push_str(key);
                out.push('_');
                out.push_str(value);
            } else {
                out.push_str(segment);
            }
        }
        Cow::Owned(out)
    }
}

/// The entries of one level, by key.
#[derive(Debug, Default)]
struct Level {
    keys: HashMap<Box<str>, KeyRules>,
}

/// All nodes of one level that share a key.
#[derive(Debug, Default)]
struct KeyRules {
    exact: HashMap<Box<str>, Node>,
    wildcards: wildcard::WildcardSet<Node>,
    default: Option<Node>,
}

impl KeyRules {
    fn find(&self, value: &str) -> Option<&Node> {
        self.exact
            .get(value)
            .or_else(|| self.wildcards.find(value))
            .or(self.default.as_ref())
    }
}

/// A domain's descriptor tree.
#[derive(Debug)]
pub struct Domain {
    name: Arc<str>,
    root: Level,
    on_store_failure: Option<FailurePolicy>,
}

/// The result of matching one request descriptor.
#[derive(Debug)]
pub struct Match<'r> {
    /// The node at the depth of the request's last entry.
    pub node: &'r Node,
    /// Entries whose counter key uses the configured pattern instead of the
    /// request's value (`share_threshold`), as (entry index, pattern).
    pub shared: Vec<(usize, &'r str)>,
    /// Set when `node` is a capacity rule: where the client and priority
    /// entries are.
    pub capacity: Option<CapacityMatch>,
}

/// How a descriptor matched a capacity rule: the walk ended at the rule's
/// node after `depth` entries, and every entry after it is the rule's
/// `share_by` or `priority_by` entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CapacityMatch {
    /// Entries down to the capacity node (they name its counter).
    pub depth: usize,
    /// The index of the client's entry, if present.
    pub client_at: Option<usize>,
    /// The index of the priority entry, if present.
    pub class_at: Option<usize>,
}

impl Domain {
    /// The domain's own `on_store_failure`, if its file sets one.
    pub fn on_store_failure(&self) -> Option<FailurePolicy> {
        self.on_store_failure
    }

    /// The domain name.
    pub fn name(&self) -> &Arc<str> {
        &self.name
    }

    /// Matches a descriptor, given as its (key, value) entries in order.
    /// Returns the node at the last entry's depth, or `None` when the walk
    /// leaves the tree. A capacity rule matches earlier: when the walk
    /// reaches its node and every entry left is its `share_by` or
    /// `priority_by` entry (each at most once).
    pub fn find<'r, 'e, I>(&'r self, entries: I) -> Option<Match<'r>>
    where
        I: IntoIterator<Item = (&'e str, &'e str)>,
        I::IntoIter: Clone,
    {
        let mut level = &self.root;
        let mut node = None;
        let mut shared = Vec::new();
        let mut entries = entries.into_iter().enumerate();
        while let Some((i, (key, value))) = entries.next() {
            let found = level.keys.get(key)?.find(value)?;
            if found.share_threshold {
                shared.push((i, &*found.value));
            }
            if let Some(rule) = &found.capacity
                && let Some(capacity) = capacity_entries(rule, i + 1, entries.clone())
            {
                return Some(Match {
                    node: found,
                    shared,
                    capacity: Some(capacity),
                });
            }
            level = &found.children;
            node = Some(found);
        }
        node.map(|node| Match {
            node,
            shared,
            capacity: None,
        })
    }

    fn walk<'a>(&'a self, mut f: impl FnMut(&'a Node)) {
        fn visit<'a>(level: &'a Level, f: &mut impl FnMut(&'a Node)) {
            let mut keys: Vec<_> = level.keys.iter().collect();
            keys.sort_by(|a, b| a.0.cmp(b.0));
            for (_, rules) in keys {
                let mut exact: Vec<_> = rules.exact.iter().collect();
                exact.sort_by(|a, b| a.0.cmp(b.0));
                let nodes = exact
                    .into_iter()
                    .map(|(_, n)| n)
                    .chain(rules.wildcards.iter().map(|(_, n)| n))
                    .chain(rules.default.iter());
                for node in nodes {
                    f(node);
                    visit(&node.children, f);
                }
            }
        }
        visit(&self.root, &mut f);
    }
}

/// Where the client and priority entries are among the entries after a
/// capacity node (`rest`, starting at index `depth`); `None` if any of them
/// is something else or comes twice.
fn capacity_entries<'e>(
    rule: &CapacityRule,
    depth: usize,
    rest: impl Iterator<Item = (usize, (&'e str, &'e str))>,
) -> Option<CapacityMatch> {
    let mut found = CapacityMatch {
        depth,
        client_at: None,
        class_at: None,
    };
    for (i, (key, _)) in rest {
        let slot = if *key == *rule.share_by {
            &mut found.client_at
        } else if rule.priority_by.as_deref() == Some(key) {
            &mut found.class_at
        } else {
            return None;
        };
        if slot.replace(i).is_some() {
            return None;
        }
    }
    Some(found)
}

/// An immutable, compiled set of rules: every domain of a rules directory.
#[derive(Debug, Default)]
pub struct RuleSet {
    domains: HashMap<Arc<str>, Domain>,
    version: String,
    source: String,
}

impl RuleSet {
    /// The version of the files this set was loaded from (a content hash,
    /// [`version_of`]).
    pub fn version(&self) -> &str {
        &self.version
    }

    /// Where the set came from (`files <path>`, or the xDS server, node
    /// and version), as `/rlconfig` says; empty if not said.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// The set, saying it came from `source`.
    pub fn with_source(mut self, source: String) -> Self {
        self.source = source;
        self
    }

    /// The domain called `name`, if configured.
    pub fn domain(&self, name: &str) -> Option<&Domain> {
        self.domains.get(name)
    }

    /// Number of domains.
    pub fn len(&self) -> usize {
        self.domains.len()
    }

    /// True when no domain is configured.
    pub fn is_empty(&self) -> bool {
        self.domains.is_empty()
    }

    /// One line per configured limit, in the reference's `/rlconfig` format:
    /// `<full key>: unit=MINUTE requests_per_unit=3, shadow_mode: false, quota_mode: false`.
    pub fn describe(&self) -> String {
        let mut names: Vec<_> = self.domains.keys().collect();
        names.sort();
        let mut out = String::new();
        for name in names {
            self.domains[name].walk(|node| {
                if let Some(capacity) = &node.capacity {
                    out.push_str(&format!(
                        "{}: {capacity}, shadow_mode: {}, quota_mode: {}\n",
                        node.full_key, node.shadow_mode, node.quota_mode
                    ));
                }
                for limit in &node.rate_limits {
                    out.push_str(&format!(
                        "{}: {limit}, shadow_mode: {}, quota_mode: {}\n",
                        node.full_key, node.shadow_mode, node.quota_mode
                    ));
                }
            });
        }
        out
    }
}

impl fmt::Display for RateLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.allowance {
            Allowance::Unlimited => f.write_str("unlimited=true")?,
            Allowance::PerUnit {
                requests_per_unit,
                unit,
                unit_multiplier,
                algorithm,
                burst,
            } => {
                write!(
                    f,
                    "unit={} requests_per_unit={requests_per_unit}",
                    unit.name()
                )?;
                if unit_multiplier != 1 {
                    write!(f, " unit_multiplier={unit_multiplier}")?;
                }
                if algorithm != Algorithm::FixedWindow {
                    write!(f, " algorithm={}", algorithm.name())?;
                }
                if let Some(burst) = burst {
                    write!(f, " burst={burst}")?;
                }
            }
        }
        if let Some(name) = &self.name {
            write!(f, " name={name}")?;
        }
        Ok(())
    }
}

/// The rules in force, shared by every request. [`Rules::replace`] swaps in
/// a new set as a whole (hot reload builds on it), so a request always sees
/// one consistent set.
#[derive(Debug, Clone)]
pub struct Rules {
    current: Arc<RwLock<Arc<RuleSet>>>,
}

impl Rules {
    /// Starts with `set` in force.
    pub fn new(set: RuleSet) -> Self {
        Rules {
            current: Arc::new(RwLock::new(Arc::new(set))),
        }
    }

    /// The set in force now.
    pub fn current(&self) -> Arc<RuleSet> {
        // The lock is only held to clone an Arc; a poisoned lock still holds
        // a complete, valid rule set.
        match self.current.read() {
            Ok(guard) => guard.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Puts `set` in force for every request that starts from now on.
    pub fn replace(&self, set: RuleSet) {
        let set = Arc::new(set);
        match self.current.write() {
            Ok(mut guard) => *guard = set,
            Err(poisoned) => *poisoned.into_inner() = set,
        }
    }
}

#[cfg(test)]
mod tests;
