//! The loader's error: a problem in a rules file, with the reference
//! service's exact message (`<file>: <message>`) and the YAML path of the
//! offending node.
//!
//! Off the request path: rules load at startup and on reload, before any
//! request reads them. A [`LoadError`] keeps the server from starting, or a
//! reload from being applied (the last good rules stay); no request sees one.

use std::fmt;

/// A problem in a rules file.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct LoadError {
    /// The file, as it was named to the loader.
    pub file: String,
    /// The reference service's message, e.g. `descriptor has empty key`.
    pub message: String,
    /// Where in the file, e.g. `descriptors[0].rate_limit.unit` (may be empty).
    pub path: String,
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.file, self.message)
    }
}

impl LoadError {
    /// An error of a whole file (or xDS resource), at no path inside it.
    pub fn resource(file: String, message: String) -> Self {
        LoadError {
            file,
            message,
            path: String::new(),
        }
    }

    pub(super) fn new(file: &str, path: &str, message: impl Into<String>) -> Self {
        LoadError {
            file: file.to_owned(),
            message: message.into(),
            path: path.to_owned(),
        }
    }
}

/// Every error as `floodgate check` prints it: `<file>: <message>`, then
/// `    at <path>` when there is one, then `<n> error(s)`.
pub fn report(errors: &[LoadError]) -> String {
    let mut out = String::new();
    for e in errors {
        out.push_str(&format!("{e}\n"));
        if !e.path.is_empty() {
            out.push_str(&format!("    at {}\n", e.path));
        }
    }
    out.push_str(&format!("{} error(s)", errors.len()));
    out
}
