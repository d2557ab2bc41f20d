//! Compiling rules files into a [`RuleSet`]: each file is parsed
//! ([`super::parse`]) and its descriptors placed in its domain's tree
//! ([`super::tree`]); the files themselves are found and read by
//! [`super::files`]. Errors carry the reference service's exact messages
//! (`<file>: <message>`), plus the YAML path of the offending node. A file
//! is checked completely, so one run reports every error it has.
//!
//! Off the request path: rules load at startup and on reload, before any
//! request; a request only reads the finished [`RuleSet`].

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use super::error::LoadError;
use super::files::{read_paths, version_of};
use super::parse::Cx;
use super::{Domain, Level, RuleSet};

/// Loads every rules file under `paths` (directories are listed, files are
/// taken as they are). With `merge_domains`, files with the same domain add
/// their top-level descriptors to it; otherwise a repeated domain is an error.
pub fn load_paths(paths: &[PathBuf], merge_domains: bool) -> Result<RuleSet, Vec<LoadError>> {
    let (files, mut errors) = read_paths(paths);
    match load_files(&files, merge_domains) {
        Ok(set) if errors.is_empty() => Ok(set),
        Ok(_) => Err(errors),
        Err(more) => {
            errors.extend(more);
            Err(errors)
        }
    }
}

/// Compiles rules from `(file name, text)` pairs.
pub fn load_files(
    files: &[(String, String)],
    merge_domains: bool,
) -> Result<RuleSet, Vec<LoadError>> {
    let mut errors = Vec::new();
    let mut domains: HashMap<Arc<str>, Domain> = HashMap::new();
    for (file, text) in files {
        let mut cx = Cx {
            file,
            errors: &mut errors,
        };
        let Some((domain, descriptors, on_store_failure)) = cx.file(text) else {
            continue;
        };
        let name: Arc<str> = domain.into();
        if domains.contains_key(&name) && !merge_domains {
            cx.error(
                "domain",
                format!("duplicate domain '{name}' in config file"),
            );
            continue;
        }
        let entry = domains.entry(name.clone()).or_insert_with(|| Domain {
            name: name.clone(),
            root: Level::default(),
            on_store_failure: None,
        });
        if let Some(policy) = on_store_failure {
            match entry.on_store_failure {
                Some(other) if other != policy => cx.error(
                    "on_store_failure",
                    format!("domain '{name}' has another on_store_failure in another file"),
                ),
                _ => entry.on_store_failure = Some(policy),
            }
        }
        cx.insert_all(&mut entry.root, descriptors, &format!("{name}."), &[]);
    }
    if errors.is_empty() {
        Ok(RuleSet {
            domains,
            version: version_of(files),
            source: String::new(),
        })
    } else {
        Err(errors)
    }
}
