//! A descriptor: its `key` and `value`, its limits (`rate_limit` or
//! `rate_limits`, or a `capacity` block), its flags and `metadata`, and its
//! nested descriptors, parsed as written ([`Raw`]) before
//! [`crate::rules::tree`] places it in the domain's tree.
//!
//! Off the request path: rules load at startup and on reload, before any
//! request.

use std::collections::HashMap;
use std::sync::Arc;

use super::{Cx, join};
use crate::rules::Node;
use crate::rules::yaml::Yaml;

/// A descriptor as written, before it is placed in the tree.
pub(in crate::rules) struct Raw {
    pub(in crate::rules) path: String,
    pub(in crate::rules) key: String,
    pub(in crate::rules) value: String,
    pub(in crate::rules) node: Node,
    pub(in crate::rules) children: Vec<Raw>,
}

/// The keys a descriptor may hold.
const DESCRIPTOR_KEYS: &[&str] = &[
    "key",
    "value",
    "rate_limit",
    "rate_limits",
    "descriptors",
    "shadow_mode",
    "detailed_metric",
    "value_to_metric",
    "share_threshold",
    "quota_mode",
    "metadata",
    "capacity",
];

impl Cx<'_> {
    /// A descriptor and, depth first, the descriptors nested in it.
    pub(super) fn descriptor(&mut self, node: &Yaml, path: String) -> Option<Raw> {
        let fields = self.map(node, &path, DESCRIPTOR_KEYS)?;
        let key = self.string(&fields, "key", &path);
        let value = self.string(&fields, "value", &path);
        let rate_limits = self.rate_limits(&fields, &path);
        let metadata = self.metadata(&fields, &path);
        let capacity = match fields.get("capacity") {
            None | Some(Yaml::Null) => None,
            Some(block) => self.capacity(block, &join(&path, "capacity")),
        };
        if capacity.is_some() && !rate_limits.is_empty() {
            self.error(
                &join(&path, "capacity"),
                "capacity cannot be combined with rate_limit or rate_limits on the same descriptor (put them on another descriptor)",
            );
        }
        let node = Node {
            capacity: capacity.map(Arc::new),
            rate_limits,
            shadow_mode: self.boolean(&fields, "shadow_mode", &path),
            quota_mode: self.boolean(&fields, "quota_mode", &path),
            share_threshold: self.boolean(&fields, "share_threshold", &path),
            detailed_metric: self.boolean(&fields, "detailed_metric", &path),
            value_to_metric: self.boolean(&fields, "value_to_metric", &path),
            metadata,
            value: value.as_str().into(),
            ..Node::default()
        };
        let children = self
            .list(&fields, "descriptors", &path)
            .into_iter()
            .filter_map(|(path, node)| self.descriptor(node, path))
            .collect();
        if key.is_empty() {
            self.error(&join(&path, "key"), "descriptor has empty key");
            return None;
        }
        Some(Raw {
            path,
            key,
            value,
            node,
            children,
        })
    }

    /// The descriptor's `metadata`, a map, as JSON.
    fn metadata(
        &mut self,
        fields: &HashMap<&str, &Yaml>,
        path: &str,
    ) -> Option<Arc<serde_json::Map<String, serde_json::Value>>> {
        let meta = match fields.get("metadata") {
            None | Some(Yaml::Null) => return None,
            Some(meta) => meta,
        };
        match to_json(meta) {
            Ok(serde_json::Value::Object(map)) => Some(Arc::new(map)),
            Ok(_) => {
                self.error(
                    &join(path, "metadata"),
                    "error parsing metadata: metadata must be a map",
                );
                None
            }
            Err(e) => {
                self.error(
                    &join(path, "metadata"),
                    format!("error parsing metadata: {e}"),
                );
                None
            }
        }
    }
}

/// YAML `metadata` as JSON, for the response's `dynamic_metadata` Struct.
fn to_json(node: &Yaml) -> Result<serde_json::Value, String> {
    use serde_json::Value;
    Ok(match node {
        Yaml::Null => Value::Null,
        Yaml::Bool(b) => Value::Bool(*b),
        Yaml::Int(i) => i64::try_from(*i).map_or_else(|_| Value::from(*i as f64), Value::from),
        Yaml::Float(f) => serde_json::Number::from_f64(*f)
            .map(Value::Number)
            .ok_or_else(|| format!("{f} is not a finite number"))?,
        Yaml::Str(s) => Value::String(s.clone()),
        Yaml::Seq(items) => Value::Array(items.iter().map(to_json).collect::<Result<_, _>>()?),
        Yaml::Map(entries) => {
            let mut map = serde_json::Map::new();
            for (k, v) in entries {
                let Yaml::Str(k) = k else {
                    return Err(format!("key {} is not a string", k.describe()));
                };
                map.insert(k.clone(), to_json(v)?);
            }
            Value::Object(map)
        }
    })
}
