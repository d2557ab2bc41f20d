//! A report's `BucketId` as a descriptor, and the rule it matches.
//!
//! A `BucketId` is a map, with no order; a descriptor is a list. The
//! entries are put in **byte order of their keys** (then values), and the
//! list is matched against the domain's YAML tree exactly as a
//! `ShouldRateLimit` descriptor with those entries in that order would be:
//! `{user: u}` matches the rule `key: user`; `{path: /a, user: u}` matches
//! `key: path, value: /a` with a `key: user` below it, and not the other way
//! round. So one rules file serves both APIs, as long as the keys of a
//! nested rule sort in the order of its levels (name them so: `a_tenant`,
//! `b_user`, or by nesting in alphabetical order).

use std::fmt;

use floodgate_proto::envoy::service::rate_limit_quota::v3::BucketId;

use crate::limiter::RequestLimits;
use crate::model::FailurePolicy;
use crate::rules::{Allowance, RuleSet};
use crate::store::key::{CacheKey, KeySuffix};

/// A bucket's entries, in byte order of their keys.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Entries(pub Vec<(String, String)>);

impl Entries {
    /// Validates `id` against `limits` and orders its entries.
    pub fn parse(id: Option<&BucketId>, limits: &RequestLimits) -> Result<Self, String> {
        let Some(id) = id.filter(|id| !id.bucket.is_empty()) else {
            return Err("a bucket usage report has no bucket_id entries".to_owned());
        };
        if id.bucket.len() > limits.max_entries {
            return Err(format!(
                "a bucket_id has {} entries, more than max_entries ({})",
                id.bucket.len(),
                limits.max_entries
            ));
        }
        let mut entries = Vec::with_capacity(id.bucket.len());
        for (key, value) in &id.bucket {
            if key.is_empty() {
                return Err("a bucket_id has an empty key".to_owned());
            }
            if key.len() > limits.max_value_bytes || value.len() > limits.max_value_bytes {
                return Err(format!(
                    "a bucket_id key or value is longer than max_value_bytes ({})",
                    limits.max_value_bytes
                ));
            }
            entries.push((key.clone(), value.clone()));
        }
        entries.sort();
        Ok(Entries(entries))
    }

    /// The entries as (key, value) pairs, in order.
    pub fn pairs(&self) -> impl Iterator<Item = (&str, &str)> + Clone + '_ {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// The bucket id Envoy sent (a map: order does not matter).
    pub fn to_proto(&self) -> BucketId {
        BucketId {
            bucket: self.0.iter().cloned().collect(),
        }
    }
}

impl fmt::Display for Entries {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (k, v)) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{k}={v}")?;
        }
        Ok(())
    }
}

/// The limit a bucket is held to.
#[derive(Clone, Debug, PartialEq)]
pub struct Target {
    /// The state's key in the store.
    pub key: String,
    /// Requests per window.
    pub limit: u64,
    /// The window, in ms.
    pub window_ms: f64,
    /// The domain's `on_store_failure`.
    pub on_failure: Option<FailurePolicy>,
}

/// The limit of the rule `entries` match in `domain`: the first
/// per-unit limit of the matched node (`rate_limit`, or the first of
/// `rate_limits`). `None` (no domain, no rule, `unlimited`, shadow mode, or
/// a capacity rule, which RLQS does not serve) means allow everything.
pub fn target(rules: &RuleSet, keys: &CacheKey, domain: &str, entries: &Entries) -> Option<Target> {
    let tree = rules.domain(domain)?;
    let m = tree.find(entries.pairs())?;
    if m.node.shadow_mode || m.node.capacity.is_some() {
        return None;
    }
    let Allowance::PerUnit {
        requests_per_unit,
        unit,
        unit_multiplier,
        ..
    } = m.node.rate_limits.first()?.allowance
    else {
        return None;
    };
    let window = unit.window().as_secs() * u64::from(unit_multiplier.max(1));
    // A share_threshold entry counts under its pattern, as in a decision.
    let pairs = entries.pairs().enumerate().map(|(i, (k, v))| {
        let shared = m.shared.iter().find(|(at, _)| *at == i);
        (k, shared.map_or(v, |(_, pattern)| *pattern))
    });
    Some(Target {
        key: keys.build(domain, pairs, KeySuffix::Quota(0)),
        limit: u64::from(requests_per_unit),
        window_ms: (window.max(1) * 1_000) as f64,
        on_failure: tree.on_store_failure(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::load_files;

    fn id(pairs: &[(&str, &str)]) -> BucketId {
        BucketId {
            bucket: pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        }
    }

    #[test]
    fn entries_are_in_key_order_and_bounded() {
        let limits = RequestLimits::default();
        let e = Entries::parse(Some(&id(&[("user", "u"), ("path", "/a")])), &limits);
        assert_eq!(e.map(|e| e.to_string()), Ok("path=/a,user=u".to_owned()));
        assert!(Entries::parse(None, &limits).is_err());
        assert!(Entries::parse(Some(&id(&[])), &limits).is_err());
        assert!(Entries::parse(Some(&id(&[("", "x")])), &limits).is_err());
        let many: Vec<(String, String)> = (0..=limits.max_entries)
            .map(|i| (format!("k{i}"), "v".to_owned()))
            .collect();
        let many: Vec<(&str, &str)> = many.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let err = Entries::parse(Some(&id(&many)), &limits);
        assert!(err.is_err_and(|e| e.contains("max_entries")));
        let long = "x".repeat(limits.max_value_bytes + 1);
        let err = Entries::parse(Some(&id(&[("k", &long)])), &limits);
        assert!(err.is_err_and(|e| e.contains("max_value_bytes")));
    }

    #[test]
    fn buckets_match_the_rules_as_descriptors_do() {
        let yaml = "domain: edge\ndescriptors:\n  - key: path\n    value: /a\n    descriptors:\n      - key: user\n        rate_limit: {unit: minute, requests_per_unit: 60}\n  - key: user\n    rate_limit: {unit: second, requests_per_unit: 5}\n  - key: free\n    rate_limit: {unlimited: true}\n";
        let rules = load_files(&[("edge.yaml".into(), yaml.into())], false);
        let rules = rules.unwrap_or_else(|e| panic!("{e:?}"));
        let keys = CacheKey::new("fg:");
        let at = |pairs: &[(&str, &str)]| {
            let e = Entries::parse(Some(&id(pairs)), &RequestLimits::default())
                .unwrap_or_else(|e| panic!("{e}"));
            target(&rules, &keys, "edge", &e)
        };
        let nested = at(&[("user", "u"), ("path", "/a")]).unwrap_or_else(|| panic!("no rule"));
        assert_eq!(
            (nested.key.as_str(), nested.limit, nested.window_ms),
            ("fg:edge_path_/a_user_u_rlqs0", 60, 60_000.0)
        );
        let user = at(&[("user", "u")]).unwrap_or_else(|| panic!("no rule"));
        assert_eq!((user.limit, user.window_ms), (5, 1_000.0));
        assert_eq!(at(&[("free", "x")]), None, "unlimited");
        assert_eq!(at(&[("other", "x")]), None, "no rule");
    }
}
