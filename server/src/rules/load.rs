//! Reading rules files into a [`RuleSet`]: every `*.yaml`/`*.yml` file of a
//! directory, in name order. Errors carry the reference service's exact
//! messages (`<file>: <message>`), plus the YAML path of the offending node.
//! A file is checked completely, so one run reports every error it has.

use crate::model::FailurePolicy;
use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::yaml::{MAX_NODES, ParseError, Yaml};
use super::{Allowance, Domain, KeyRules, Level, Node, RateLimit, RuleSet, Unit, Wildcard};
use crate::model::algorithm::Algorithm;
use crate::model::capacity::{Capacity, CapacityRule, LimitNames};

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

/// The rules files under `paths` as `(name, text)` pairs, and the files or
/// directories that could not be read.
pub fn read_paths(paths: &[PathBuf]) -> (Vec<(String, String)>, Vec<LoadError>) {
    let mut files = Vec::new();
    let mut errors = Vec::new();
    for path in paths {
        match rules_files(path) {
            Ok(found) => {
                for file in found {
                    let name = file.display().to_string();
                    match std::fs::read_to_string(&file) {
                        Ok(text) => files.push((name, text)),
                        Err(e) => {
                            errors.push(LoadError::new(&name, "", format!("cannot read file: {e}")))
                        }
                    }
                }
            }
            Err(e) => errors.push(LoadError::new(&path.display().to_string(), "", e)),
        }
    }
    (files, errors)
}

/// The version of a set of rules files: a hash of their names and texts, in
/// order (16 hex digits). The same files give the same version on every
/// instance, so operators can tell which rules each one serves.
pub fn version_of(files: &[(String, String)]) -> String {
    // FNV-1a, 64 bits: fixed by its definition, so every build and every
    // instance agrees; over each file's own name (not where it is mounted)
    // and text, each with its length, so no two sets of files collide by
    // concatenation.
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let mut eat = |bytes: &[u8]| {
        for b in (bytes.len() as u64).to_le_bytes().iter().chain(bytes) {
            hash ^= u64::from(*b);
            hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        }
    };
    for (name, text) in files {
        let base = Path::new(name)
            .file_name()
            .map_or(name.as_str(), |n| n.to_str().unwrap_or(name));
        eat(base.as_bytes());
        eat(text.as_bytes());
    }
    format!("{hash:016x}")
}

/// The rules files a path stands for: a file itself, or a directory's
/// `*.yaml`/`*.yml` entries (dotfiles skipped, symlinks followed, so a
/// Kubernetes ConfigMap mount works), sorted by name. A directory without
/// any is an error.
fn rules_files(path: &Path) -> Result<Vec<PathBuf>, String> {
    let meta = std::fs::metadata(path).map_err(|e| format!("cannot read rules path: {e}"))?;
    if !meta.is_dir() {
        return Ok(vec![path.to_path_buf()]);
    }
    let entries =
        std::fs::read_dir(path).map_err(|e| format!("cannot list rules directory: {e}"))?;
    let mut files = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| format!("cannot list rules directory: {e}"))?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        let is_yaml = name.ends_with(".yaml") || name.ends_with(".yml");
        let file = entry.path();
        if !is_yaml || name.starts_with('.') {
            continue;
        }
        // Follows symlinks: a dangling one (a ConfigMap mid-update) is an
        // error, not a file that is not there.
        match std::fs::metadata(&file) {
            Ok(meta) if meta.is_file() => files.push(file),
            Ok(_) => {}
            Err(e) => return Err(format!("cannot read {}: {e}", file.display())),
        }
    }
    if files.is_empty() {
        // One rule at startup and on reload: an empty directory is far
        // likelier a mount not (yet) filled or a mistake than a wish to
        // answer OK to every call.
        return Err(
            "no rules files (*.yaml, *.yml) in this directory; an empty rules directory is refused"
                .to_owned(),
        );
    }
    files.sort();
    Ok(files)
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
        })
    } else {
        Err(errors)
    }
}

impl LoadError {
    fn new(file: &str, path: &str, message: impl Into<String>) -> Self {
        LoadError {
            file: file.to_owned(),
            message: message.into(),
            path: path.to_owned(),
        }
    }
}

/// A descriptor as written, before it is placed in the tree.
struct Raw {
    path: String,
    key: String,
    value: String,
    node: Node,
    children: Vec<Raw>,
}

/// The keys each kind of map may hold. Unlike the reference (one flat set),
/// a key in the wrong place, such as `unit` directly on a descriptor, is
/// reported instead of silently ignored.
const ROOT_KEYS: &[&str] = &["domain", "descriptors", "on_store_failure"];
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
const CAPACITY_KEYS: &[&str] = &[
    "requests_per_unit",
    "unit",
    "unit_multiplier",
    "share_by",
    "weights",
    "priority_by",
    "classes",
    "default_class",
    "max_clients",
    "name",
];
const CLASS_KEYS: &[&str] = &["name", "max_share"];
/// Clients a capacity rule tracks per window unless `max_clients` says otherwise.
const DEFAULT_MAX_CLIENTS: u32 = 1_000;
/// The most `max_clients` may be: every tracked client is a field of the
/// rule's one Redis hash.
const MAX_MAX_CLIENTS: u32 = 100_000;
const RATE_LIMIT_KEYS: &[&str] = &[
    "unit",
    "requests_per_unit",
    "unlimited",
    "name",
    "replaces",
    "algorithm",
    "unit_multiplier",
    "burst",
];
const REPLACES_KEYS: &[&str] = &["name"];

/// Loading context for one file: where errors go and what they are prefixed with.
struct Cx<'a> {
    file: &'a str,
    errors: &'a mut Vec<LoadError>,
}

impl Cx<'_> {
    fn error(&mut self, path: &str, message: impl Into<String>) {
        self.errors.push(LoadError::new(self.file, path, message));
    }

    fn type_error(&mut self, path: &str, detail: impl fmt::Display) {
        self.error(path, format!("error loading config file: {detail}"));
    }

    /// Checks a map's keys and returns them by name. `None` if `node` is not a map.
    fn map<'y>(
        &mut self,
        node: &'y Yaml,
        path: &str,
        allowed: &[&str],
    ) -> Option<HashMap<&'y str, &'y Yaml>> {
        let entries = match node {
            Yaml::Map(entries) => entries,
            Yaml::Null => return Some(HashMap::new()),
            other => {
                self.type_error(
                    path,
                    format!(
                        "{} must be a map, found {}",
                        display_path(path),
                        other.describe()
                    ),
                );
                return None;
            }
        };
        let mut fields = HashMap::new();
        for (key, value) in entries {
            let Yaml::Str(key) = key else {
                self.error(
                    path,
                    format!(
                        "config error, key is not of type string: {}",
                        key.describe()
                    ),
                );
                continue;
            };
            if !allowed.contains(&key.as_str()) {
                self.error(
                    &join(path, key),
                    format!("config error, unknown key '{key}'"),
                );
            } else if fields.insert(key.as_str(), value).is_some() {
                self.type_error(&join(path, key), format!("duplicate key '{key}'"));
            }
        }
        Some(fields)
    }

    /// A string field. Numbers and booleans read as their text, as YAML
    /// authors expect (`value: 404`); a float is the reference's checking error.
    fn string(&mut self, fields: &HashMap<&str, &Yaml>, name: &str, path: &str) -> String {
        let path = join(path, name);
        match fields.get(name) {
            None | Some(Yaml::Null) => String::new(),
            Some(Yaml::Str(s)) => s.clone(),
            Some(Yaml::Int(i)) => i.to_string(),
            Some(Yaml::Bool(b)) => b.to_string(),
            Some(Yaml::Float(_)) => {
                self.error(&path, "error checking config");
                String::new()
            }
            Some(other) => {
                self.type_error(
                    &path,
                    format!("{path} must be a string, found {}", other.describe()),
                );
                String::new()
            }
        }
    }

    fn boolean(&mut self, fields: &HashMap<&str, &Yaml>, name: &str, path: &str) -> bool {
        match fields.get(name) {
            None | Some(Yaml::Null) => false,
            Some(Yaml::Bool(b)) => *b,
            Some(other) => {
                let path = join(path, name);
                self.type_error(
                    &path,
                    format!("{path} must be true or false, found {}", other.describe()),
                );
                false
            }
        }
    }

    fn list<'y>(
        &mut self,
        fields: &HashMap<&str, &'y Yaml>,
        name: &str,
        path: &str,
    ) -> Vec<(String, &'y Yaml)> {
        let path = join(path, name);
        match fields.get(name) {
            None | Some(Yaml::Null) => Vec::new(),
            Some(Yaml::Seq(items)) => {
                items
                    .iter()
                    .enumerate()
                    .filter_map(|(i, item)| match item {
                        Yaml::Map(_) => Some((format!("{path}[{i}]"), item)),
                        other => {
                            self.error(&path, format!(
                            "config error, yaml file contains list of type other than map: {}",
                            other.describe()
                        ));
                            None
                        }
                    })
                    .collect()
            }
            Some(other) => {
                self.type_error(
                    &path,
                    format!("{path} must be a list, found {}", other.describe()),
                );
                Vec::new()
            }
        }
    }

    /// The file's domain, its top-level descriptors and its failure policy.
    fn file(&mut self, text: &str) -> Option<(String, Vec<Raw>, Option<FailurePolicy>)> {
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

    fn descriptor(&mut self, node: &Yaml, path: String) -> Option<Raw> {
        let fields = self.map(node, &path, DESCRIPTOR_KEYS)?;
        let key = self.string(&fields, "key", &path);
        let value = self.string(&fields, "value", &path);
        let rate_limits = self.rate_limits(&fields, &path);
        let metadata = match fields.get("metadata") {
            None | Some(Yaml::Null) => None,
            Some(meta) => match to_json(meta) {
                Ok(serde_json::Value::Object(map)) => Some(Arc::new(map)),
                Ok(_) => {
                    self.error(
                        &join(&path, "metadata"),
                        "error parsing metadata: metadata must be a map",
                    );
                    None
                }
                Err(e) => {
                    self.error(
                        &join(&path, "metadata"),
                        format!("error parsing metadata: {e}"),
                    );
                    None
                }
            },
        };
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

    fn rate_limit(&mut self, node: &Yaml, path: &str) -> Option<RateLimit> {
        let fields = self.map(node, path, RATE_LIMIT_KEYS)?;
        let unit_name = self.string(&fields, "unit", path);
        let unit = Unit::parse(&unit_name);
        let unlimited = self.boolean(&fields, "unlimited", path);
        let requests_per_unit = self.whole(&fields, "requests_per_unit", path).unwrap_or(0);
        let name = self.string(&fields, "name", path);
        let mut replaces = Vec::new();
        for (entry_path, entry) in self.list(&fields, "replaces", path) {
            let Some(entry_fields) = self.map(entry, &entry_path, REPLACES_KEYS) else {
                continue;
            };
            let replaced = self.string(&entry_fields, "name", &entry_path);
            if replaced.is_empty() {
                self.error(&entry_path, "should not have an empty replaces entry");
            } else if replaced == name {
                self.error(
                    &entry_path,
                    "replaces should not contain name of same descriptor",
                );
            } else {
                replaces.push(Arc::from(replaced));
            }
        }
        // Extensions: algorithm, unit_multiplier, burst.
        let algorithm_name = self.string(&fields, "algorithm", path);
        let algorithm = match algorithm_name.as_str() {
            "" => Some(Algorithm::FixedWindow),
            other => Algorithm::parse(other),
        };
        let Some(algorithm) = algorithm else {
            self.error(&join(path, "algorithm"), format!(
                "invalid rate limit algorithm '{algorithm_name}' (expected fixed_window, sliding_window, token_bucket or gcra)"
            ));
            return None;
        };
        let unit_multiplier = match self.whole(&fields, "unit_multiplier", path) {
            None => 1,
            Some(0) => {
                self.error(
                    &join(path, "unit_multiplier"),
                    "unit_multiplier must be at least 1",
                );
                return None;
            }
            Some(n) => n,
        };
        if let Some(unit) = unit {
            // 100 years: longer periods overflow nothing today, but mean nothing either.
            if unit.window().as_secs() * u64::from(unit_multiplier) > 100 * 31_536_000 {
                self.error(
                    &join(path, "unit_multiplier"),
                    "unit_multiplier makes the period longer than 100 years",
                );
                return None;
            }
        }
        let burst = self.whole(&fields, "burst", path);
        if burst.is_some() && !algorithm.has_burst() {
            self.error(&join(path, "burst"), format!(
                "burst can only be used with the token_bucket and gcra algorithms, but found algorithm '{}'",
                algorithm.name()
            ));
            return None;
        }
        if burst == Some(0) {
            self.error(&join(path, "burst"), "burst must be at least 1");
            return None;
        }
        let allowance = match (unlimited, unit) {
            (true, Some(_)) => {
                self.error(
                    &join(path, "unit"),
                    "should not specify rate limit unit when unlimited",
                );
                return None;
            }
            (true, None) => Allowance::Unlimited,
            (false, Some(unit)) => Allowance::PerUnit {
                requests_per_unit,
                unit,
                unit_multiplier,
                algorithm,
                burst,
            },
            (false, None) => {
                self.error(
                    &join(path, "unit"),
                    format!("invalid rate limit unit '{unit_name}'"),
                );
                return None;
            }
        };
        let name = (!name.is_empty()).then(|| Arc::from(name));
        Some(RateLimit {
            allowance,
            name,
            replaces,
        })
    }

    /// A `capacity` block (see the README's "Capacity protection").
    fn capacity(&mut self, node: &Yaml, path: &str) -> Option<CapacityRule> {
        let fields = self.map(node, path, CAPACITY_KEYS)?;
        let errors = self.errors.len();
        let total = self.whole(&fields, "requests_per_unit", path);
        if total.is_none() {
            self.error(
                &join(path, "requests_per_unit"),
                "capacity needs requests_per_unit (what the service takes per unit)",
            );
        }
        let unit_name = self.string(&fields, "unit", path);
        let unit = Unit::parse(&unit_name);
        if unit.is_none() {
            self.error(
                &join(path, "unit"),
                format!("invalid rate limit unit '{unit_name}'"),
            );
        }
        let unit_multiplier = self.whole(&fields, "unit_multiplier", path).unwrap_or(1);
        if unit_multiplier == 0 {
            self.error(
                &join(path, "unit_multiplier"),
                "unit_multiplier must be at least 1",
            );
        }
        let share_by = self.string(&fields, "share_by", path);
        if share_by.is_empty() {
            self.error(
                &join(path, "share_by"),
                "capacity needs share_by (the descriptor key whose value names the client)",
            );
        }
        let mut weights = HashMap::new();
        let weights_path = join(path, "weights");
        match fields.get("weights") {
            None | Some(Yaml::Null) => {}
            Some(Yaml::Map(entries)) => {
                for (client, weight) in entries {
                    let client = match client {
                        Yaml::Str(s) => s.clone(),
                        Yaml::Int(i) => i.to_string(),
                        other => other.describe(),
                    };
                    let at = join(&weights_path, &client);
                    let weight = match weight {
                        Yaml::Int(i) => Some(*i as f64),
                        Yaml::Float(f) => Some(*f),
                        _ => None,
                    };
                    match weight {
                        Some(w) if w.is_finite() && w > 0.0 && w <= 1e6 => {
                            if weights.insert(client.as_str().into(), w).is_some() {
                                self.type_error(&at, format!("duplicate key '{client}'"));
                            }
                        }
                        _ => self.error(
                            &at,
                            format!("the weight of client '{client}' must be a number above 0 (up to 1000000)"),
                        ),
                    }
                }
            }
            Some(other) => self.type_error(
                &weights_path,
                format!(
                    "{weights_path} must be a map of client to weight, found {}",
                    other.describe()
                ),
            ),
        }
        let priority_by = self.string(&fields, "priority_by", path);
        let mut classes: Vec<Arc<str>> = Vec::new();
        let mut shares = Vec::new();
        for (class_path, class) in self.list(&fields, "classes", path) {
            let Some(class_fields) = self.map(class, &class_path, CLASS_KEYS) else {
                continue;
            };
            let name = self.string(&class_fields, "name", &class_path);
            let share = match class_fields.get("max_share") {
                None | Some(Yaml::Null) => Some(1.0),
                Some(Yaml::Int(i)) => Some(*i as f64),
                Some(Yaml::Float(f)) => Some(*f),
                Some(_) => None,
            };
            let share = match share {
                Some(s) if s > 0.0 && s <= 1.0 => s,
                _ => {
                    self.error(
                        &join(&class_path, "max_share"),
                        "max_share must be a number above 0 and at most 1 (the share of requests_per_unit this class may fill)",
                    );
                    continue;
                }
            };
            if name.is_empty() {
                self.error(&join(&class_path, "name"), "a class needs a name");
            } else if classes.iter().any(|c| **c == *name) {
                self.error(
                    &join(&class_path, "name"),
                    format!("duplicate class '{name}'"),
                );
            } else if shares.last().is_some_and(|last| share > *last) {
                self.error(
                    &join(&class_path, "max_share"),
                    format!("class '{name}' has a larger max_share than the class before it: classes go from the most important to the least"),
                );
            } else {
                classes.push(name.as_str().into());
                shares.push(share);
            }
        }
        let classes_path = join(path, "classes");
        match (priority_by.is_empty(), fields.contains_key("classes")) {
            (false, false) => self.error(
                &classes_path,
                "priority_by needs classes (from the most important to the least)",
            ),
            (true, true) => self.error(
                &join(path, "priority_by"),
                "classes need priority_by (the descriptor key whose value names the class)",
            ),
            _ => {}
        }
        if !priority_by.is_empty() && priority_by == share_by {
            self.error(
                &join(path, "priority_by"),
                "priority_by and share_by must be different keys",
            );
        }
        let default_name = self.string(&fields, "default_class", path);
        let default_class = if default_name.is_empty() {
            classes.len().saturating_sub(1)
        } else if let Some(i) = classes.iter().position(|c| **c == *default_name) {
            i
        } else {
            self.error(
                &join(path, "default_class"),
                format!("default_class '{default_name}' is not one of the classes"),
            );
            0
        };
        let max_clients = self
            .whole(&fields, "max_clients", path)
            .unwrap_or(DEFAULT_MAX_CLIENTS);
        if !(1..=MAX_MAX_CLIENTS).contains(&max_clients) {
            self.error(
                &join(path, "max_clients"),
                format!("max_clients must be from 1 to {MAX_MAX_CLIENTS}"),
            );
        }
        let name = self.string(&fields, "name", path);
        if self.errors.len() > errors {
            return None;
        }
        let (Some(total), Some(unit)) = (total, unit) else {
            return None;
        };
        if shares.is_empty() {
            shares.push(1.0);
        }
        Some(CapacityRule {
            limits: Capacity {
                total: u64::from(total),
                class_max_share: shares,
                max_clients: max_clients as usize,
            },
            unit,
            unit_multiplier,
            share_by: share_by.into(),
            priority_by: (!priority_by.is_empty()).then(|| priority_by.into()),
            default_class,
            weights,
            names: LimitNames::new((!name.is_empty()).then_some(name.as_str()), &classes),
            classes,
            name: (!name.is_empty()).then(|| Arc::from(name)),
        })
    }

    /// A whole number from 0 to `u32::MAX`; `None` when absent.
    fn whole(&mut self, fields: &HashMap<&str, &Yaml>, name: &str, path: &str) -> Option<u32> {
        match fields.get(name) {
            None | Some(Yaml::Null) => None,
            Some(Yaml::Int(n)) if u32::try_from(*n).is_ok() => Some(*n as u32),
            Some(other) => {
                let path = join(path, name);
                self.type_error(
                    &path,
                    format!(
                        "{path} must be a whole number from 0 to {}, found {}",
                        u32::MAX,
                        other.describe()
                    ),
                );
                None
            }
        }
    }

    /// `rate_limit`, or the list `rate_limits` (not both).
    fn rate_limits(&mut self, fields: &HashMap<&str, &Yaml>, path: &str) -> Vec<RateLimit> {
        let single = match fields.get("rate_limit") {
            None | Some(Yaml::Null) => None,
            Some(limit) => Some(self.rate_limit(limit, &join(path, "rate_limit"))),
        };
        let list = self.list(fields, "rate_limits", path);
        if single.is_some() && !list.is_empty() {
            self.error(
                &join(path, "rate_limits"),
                "should not specify both rate_limit and rate_limits",
            );
            return Vec::new();
        }
        if let Some(single) = single {
            return single.into_iter().collect();
        }
        let limits: Vec<RateLimit> = list
            .into_iter()
            .filter_map(|(limit_path, limit)| self.rate_limit(limit, &limit_path))
            .collect();
        if limits.len() > 1 && limits.iter().any(|l| l.allowance == Allowance::Unlimited) {
            self.error(
                &join(path, "rate_limits"),
                "unlimited cannot be combined with other limits in rate_limits",
            );
            return Vec::new();
        }
        limits
    }

    /// Places `descriptors` in `level`. `parent` is the full key above them
    /// (`domain.` at the root); `stat_path` the metric segments above them.
    fn insert_all(
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

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

fn display_path(path: &str) -> &str {
    if path.is_empty() { "the file" } else { path }
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
