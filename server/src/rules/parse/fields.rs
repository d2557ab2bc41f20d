//! The typed fields every block shares: a map with its allowed keys, a
//! string, a boolean, a list of maps, a whole number, each read from the
//! YAML tree with the reference service's error when it is something else.
//!
//! Off the request path: rules load at startup and on reload, before any
//! request.

use std::collections::HashMap;

use super::{Cx, display_path, join};
use crate::rules::yaml::Yaml;

impl Cx<'_> {
    /// Checks a map's keys and returns them by name. `None` if `node` is not a map.
    pub(super) fn map<'y>(
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
    pub(super) fn string(
        &mut self,
        fields: &HashMap<&str, &Yaml>,
        name: &str,
        path: &str,
    ) -> String {
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

    pub(super) fn boolean(
        &mut self,
        fields: &HashMap<&str, &Yaml>,
        name: &str,
        path: &str,
    ) -> bool {
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

    pub(super) fn list<'y>(
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

    /// A whole number from 0 to `u32::MAX`; `None` when absent.
    pub(super) fn whole(
        &mut self,
        fields: &HashMap<&str, &Yaml>,
        name: &str,
        path: &str,
    ) -> Option<u32> {
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
}
