//! A rules file's root: its `domain`, its top-level `descriptors` and its
//! `on_store_failure`, after the text is parsed as YAML (within
//! [`MAX_NODES`]).
//!
//! Off the request path: rules load at startup and on reload, before any
//! request.

use super::{Cx, Raw};
use crate::model::FailurePolicy;
use crate::rules::yaml::{MAX_NODES, ParseError, Yaml};

/// The keys each kind of map may hold (here the root's; each block's parser
/// has its own list). Unlike the reference (one flat set), a key in the
/// wrong place, such as `unit` directly on a descriptor, is reported instead
/// of silently ignored.
const ROOT_KEYS: &[&str] = &["domain", "descriptors", "on_store_failure"];

impl Cx<'_> {
    /// The file's domain, its top-level descriptors and its failure policy.
    pub(in crate::rules) fn file(
        &mut self,
        text: &str,
    ) -> Option<(String, Vec<Raw>, Option<FailurePolicy>)> {
        let root = match Yaml::parse(text) {
            Ok(root) => root,
            Err(ParseError::Invalid(e)) => {
                self.type_error("", e);
                return None;
            }
            Err(ParseError::TooLarge) => {
                self.error(
                    "",
                    format!(
                        "too large: more than {MAX_NODES} YAML nodes (about {} descriptors) in one file; \
                         split it into several files (files can share a domain with merge_domains)",
                        MAX_NODES / 10
                    ),
                );
                return None;
            }
        };
        let fields = self.map(&root, "", ROOT_KEYS)?;
        let domain = self.string(&fields, "domain", "");
        let descriptors = self
            .list(&fields, "descriptors", "")
            .into_iter()
            .filter_map(|(path, node)| self.descriptor(node, path))
            .collect();
        let policy = self.string(&fields, "on_store_failure", "");
        let on_store_failure = match policy.as_str() {
            "" => None,
            p => match FailurePolicy::parse(p) {
                Some(policy) => Some(policy),
                None => {
                    self.error(
                        "on_store_failure",
                        format!("on_store_failure must be fallback, allow or deny, not '{p}'"),
                    );
                    None
                }
            },
        };
        if domain.is_empty() {
            self.error("domain", "config file cannot have empty domain");
            return None;
        }
        Some((domain, descriptors, on_store_failure))
    }
}
