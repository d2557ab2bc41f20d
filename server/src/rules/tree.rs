//! The descriptor tree: each parsed descriptor ([`Raw`]) placed in its
//! level by key, as an exact value, a wildcard or the key-only default,
//! with its full key and metric path; a duplicate is reported.
//!
//! Off the request path: rules load at startup and on reload, before any
//! request; requests then walk the finished tree ([`super::Domain::find`]).

use super::parse::{Cx, Raw, join};
use super::{KeyRules, Level, Wildcard};

impl Cx<'_> {
    /// Places `descriptors` in `level`. `parent` is the full key above them
    /// (`domain.` at the root); `stat_path` the metric segments above them.
    pub(super) fn insert_all(
        &mut self,
        level: &mut Level,
        descriptors: Vec<Raw>,
        parent: &str,
        stat_path: &[(Box<str>, bool)],
    ) {
        for raw in descriptors {
            self.insert(level, raw, parent, stat_path);
        }
    }

    /// Places a descriptor in its level, checking for duplicates.
    fn insert(
        &mut self,
        level: &mut Level,
        raw: Raw,
        parent: &str,
        stat_path: &[(Box<str>, bool)],
    ) {
        let Raw {
            path,
            key,
            value,
            mut node,
            children,
        } = raw;
        let composite = if value.is_empty() {
            key.clone()
        } else {
            format!("{key}_{value}")
        };
        let full_key = format!("{parent}{composite}");
        let wildcard = Wildcard::new(&value);
        if node.share_threshold && wildcard.is_none() {
            self.error(&join(&path, "share_threshold"), format!(
                "share_threshold can only be used with wildcard values (containing '*'), but found key '{composite}'"
            ));
        }
        let rules: &mut KeyRules = level.keys.entry(key.as_str().into()).or_default();
        let duplicate = match &wildcard {
            _ if value.is_empty() => rules.default.is_some(),
            Some(_) => rules.wildcards.iter().any(|(_, n)| *n.value == *value),
            None => rules.exact.contains_key(value.as_str()),
        };
        if duplicate {
            self.error(
                &path,
                format!("duplicate descriptor composite key '{full_key}'"),
            );
            return;
        }
        let mut path = stat_path.to_vec();
        path.push((composite.as_str().into(), node.value_to_metric));
        self.insert_all(&mut node.children, children, &format!("{full_key}."), &path);
        node.full_key = full_key.into();
        node.stat_path = path.into();
        match wildcard {
            _ if value.is_empty() => rules.default = Some(node),
            Some(w) => rules.wildcards.push(w, node),
            None => {
                rules.exact.insert(value.into(), node);
            }
        }
    }
}
