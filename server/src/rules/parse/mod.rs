//! Parsing one rules file: the walk over its YAML tree ([`super::yaml`])
//! that checks every key and type and turns each block into the rules'
//! types, reporting each problem with the reference service's exact message
//! and its YAML path. One submodule per block: the file's root ([`mod@file`]),
//! a descriptor ([`descriptor`]), a `rate_limit` ([`rate_limit`]), a
//! `capacity` block ([`capacity`]); [`fields`] reads the typed fields they
//! share.
//!
//! Off the request path: rules load at startup and on reload, before any
//! request. A file is checked completely, so one run reports every error it
//! has; [`super::tree`] then places the parsed descriptors in the tree.

mod capacity;
mod descriptor;
mod fields;
mod file;
mod rate_limit;

use std::fmt;

pub(super) use descriptor::Raw;

use super::error::LoadError;

/// Loading context for one file: where errors go and what they are prefixed with.
pub(super) struct Cx<'a> {
    pub(super) file: &'a str,
    pub(super) errors: &'a mut Vec<LoadError>,
}

/// An error already reported to the [`Cx`]: the caller stops, with nothing
/// more to say.
struct Reported;

impl Cx<'_> {
    pub(super) fn error(&mut self, path: &str, message: impl Into<String>) {
        self.errors.push(LoadError::new(self.file, path, message));
    }

    fn type_error(&mut self, path: &str, detail: impl fmt::Display) {
        self.error(path, format!("error loading config file: {detail}"));
    }
}

/// `path.key`, or `key` at the root.
pub(super) fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

fn display_path(path: &str) -> &str {
    if path.is_empty() { "the file" } else { path }
}
