//! A `capacity` block (see the README's "Capacity protection"): what the
//! service behind a descriptor takes per unit, the key naming the client
//! (`share_by`) and its `weights`, the priority classes (`priority_by`,
//! `classes`, `default_class`) and how many clients a window tracks
//! (`max_clients`), compiled into a [`CapacityRule`].
//!
//! Off the request path: rules load at startup and on reload, before any
//! request.

use std::collections::HashMap;
use std::sync::Arc;

use super::{Cx, join};
use crate::model::capacity::{Capacity, CapacityRule, LimitNames};
use crate::rules::Unit;
use crate::rules::yaml::Yaml;

/// The keys a `capacity` block may hold.
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
    "guaranteed_share",
    "name",
];
/// The keys an entry of `classes` may hold.
const CLASS_KEYS: &[&str] = &["name", "max_share"];
/// The fraction of `requests_per_unit` guaranteed to the active clients
/// unless `guaranteed_share` says otherwise.
const DEFAULT_GUARANTEED_SHARE: f64 = 0.8;
/// Clients a capacity rule tracks per window unless `max_clients` says otherwise.
const DEFAULT_MAX_CLIENTS: u32 = 1_000;
/// The most `max_clients` may be: every tracked client is a field of the
/// rule's one Redis hash.
const MAX_MAX_CLIENTS: u32 = 100_000;

/// The priority classes, from the most important to the least: their names
/// and each one's `max_share`, in the same order.
type Classes = (Vec<Arc<str>>, Vec<f64>);

impl Cx<'_> {
    /// A `capacity` block; `None` if it has any error (all are reported).
    pub(super) fn capacity(&mut self, node: &Yaml, path: &str) -> Option<CapacityRule> {
        let fields = self.map(node, path, CAPACITY_KEYS)?;
        let errors = self.errors.len();
        let (total, unit, unit_multiplier) = self.capacity_rate(&fields, path);
        let share_by = self.string(&fields, "share_by", path);
        if share_by.is_empty() {
            self.error(
                &join(path, "share_by"),
                "capacity needs share_by (the descriptor key whose value names the client)",
            );
        }
        let weights = self.weights(&fields, path);
        let priority_by = self.string(&fields, "priority_by", path);
        let (classes, mut shares) = self.classes(&fields, path);
        self.check_priority_keys(&fields, path, &share_by, &priority_by);
        let default_class = self.default_class(&fields, path, &classes);
        let max_clients = self.max_clients(&fields, path);
        let guaranteed_share = self.guaranteed_share(&fields, path);
        let name = self.string(&fields, "name", path);
        if self.errors.len() > errors {
            return None;
        }
        let (Some(total), Some(unit), Some(guaranteed_share)) = (total, unit, guaranteed_share)
        else {
            return None;
        };
        if shares.is_empty() {
            shares.push(1.0);
        }
        Some(CapacityRule {
            limits: Capacity {
                total: u64::from(total),
                guaranteed_share,
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

    /// `requests_per_unit` (required), `unit` (required) and
    /// `unit_multiplier` (1 unless set, at least 1); a missing or invalid
    /// one is reported (and `None`).
    fn capacity_rate(
        &mut self,
        fields: &HashMap<&str, &Yaml>,
        path: &str,
    ) -> (Option<u32>, Option<Unit>, u32) {
        let total = self.whole(fields, "requests_per_unit", path);
        if total.is_none() {
            self.error(
                &join(path, "requests_per_unit"),
                "capacity needs requests_per_unit (what the service takes per unit)",
            );
        }
        let unit_name = self.string(fields, "unit", path);
        let unit = Unit::parse(&unit_name);
        if unit.is_none() {
            self.error(
                &join(path, "unit"),
                format!("invalid rate limit unit '{unit_name}'"),
            );
        }
        let unit_multiplier = self.whole(fields, "unit_multiplier", path).unwrap_or(1);
        if unit_multiplier == 0 {
            self.error(
                &join(path, "unit_multiplier"),
                "unit_multiplier must be at least 1",
            );
        }
        (total, unit, unit_multiplier)
    }

    /// `weights`: client → a number above 0, up to 1,000,000.
    fn weights(&mut self, fields: &HashMap<&str, &Yaml>, path: &str) -> HashMap<Box<str>, f64> {
        let mut weights = HashMap::new();
        let weights_path = join(path, "weights");
        let entries = match fields.get("weights") {
            None | Some(Yaml::Null) => return weights,
            Some(Yaml::Map(entries)) => entries,
            Some(other) => {
                self.type_error(
                    &weights_path,
                    format!(
                        "{weights_path} must be a map of client to weight, found {}",
                        other.describe()
                    ),
                );
                return weights;
            }
        };
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
                    format!(
                        "the weight of client '{client}' must be a number above 0 (up to 1000000)"
                    ),
                ),
            }
        }
        weights
    }

    /// `classes`, from the most important to the least: each with a unique
    /// name and a `max_share` no larger than the class before it.
    fn classes(&mut self, fields: &HashMap<&str, &Yaml>, path: &str) -> Classes {
        let mut classes: Vec<Arc<str>> = Vec::new();
        let mut shares = Vec::new();
        for (class_path, class) in self.list(fields, "classes", path) {
            let Some(class_fields) = self.map(class, &class_path, CLASS_KEYS) else {
                continue;
            };
            let name = self.string(&class_fields, "name", &class_path);
            let Some(share) = self.max_share(&class_fields, &class_path) else {
                continue;
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
        (classes, shares)
    }

    /// A class's `max_share`: above 0 and at most 1 (1 unless set); `None`
    /// once reported.
    fn max_share(&mut self, class_fields: &HashMap<&str, &Yaml>, class_path: &str) -> Option<f64> {
        self.fraction(
            class_fields,
            ("max_share", class_path),
            (1.0, false),
            "max_share must be a number above 0 and at most 1 (the share of requests_per_unit this class may fill)",
        )
    }

    /// `guaranteed_share`: from 0 to 1 ([`DEFAULT_GUARANTEED_SHARE`] unless
    /// set); `None` once reported.
    fn guaranteed_share(&mut self, fields: &HashMap<&str, &Yaml>, path: &str) -> Option<f64> {
        self.fraction(
            fields,
            ("guaranteed_share", path),
            (DEFAULT_GUARANTEED_SHARE, true),
            "guaranteed_share must be a number from 0 to 1 (the fraction of requests_per_unit split among the active clients)",
        )
    }

    /// A number at `key` under `path` up to 1, and above 0 (or from 0 when
    /// `zero` is allowed); `default` when absent; `None` once reported with
    /// `message`.
    fn fraction(
        &mut self,
        fields: &HashMap<&str, &Yaml>,
        (key, path): (&str, &str),
        (default, zero): (f64, bool),
        message: &str,
    ) -> Option<f64> {
        let value = match fields.get(key) {
            None | Some(Yaml::Null) => Some(default),
            Some(Yaml::Int(i)) => Some(*i as f64),
            Some(Yaml::Float(f)) => Some(*f),
            Some(_) => None,
        };
        match value {
            Some(v) if (v > 0.0 || (zero && v == 0.0)) && v <= 1.0 => Some(v),
            _ => {
                self.error(&join(path, key), message);
                None
            }
        }
    }

    /// `priority_by` and `classes` come together, and `priority_by` is not
    /// `share_by`.
    fn check_priority_keys(
        &mut self,
        fields: &HashMap<&str, &Yaml>,
        path: &str,
        share_by: &str,
        priority_by: &str,
    ) {
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
    }

    /// The index of `default_class` among `classes`; the last class unless set.
    fn default_class(
        &mut self,
        fields: &HashMap<&str, &Yaml>,
        path: &str,
        classes: &[Arc<str>],
    ) -> usize {
        let default_name = self.string(fields, "default_class", path);
        if default_name.is_empty() {
            classes.len().saturating_sub(1)
        } else if let Some(i) = classes.iter().position(|c| **c == *default_name) {
            i
        } else {
            self.error(
                &join(path, "default_class"),
                format!("default_class '{default_name}' is not one of the classes"),
            );
            0
        }
    }

    /// `max_clients`, from 1 to [`MAX_MAX_CLIENTS`] ([`DEFAULT_MAX_CLIENTS`]
    /// unless set).
    fn max_clients(&mut self, fields: &HashMap<&str, &Yaml>, path: &str) -> u32 {
        let max_clients = self
            .whole(fields, "max_clients", path)
            .unwrap_or(DEFAULT_MAX_CLIENTS);
        if !(1..=MAX_MAX_CLIENTS).contains(&max_clients) {
            self.error(
                &join(path, "max_clients"),
                format!("max_clients must be from 1 to {MAX_MAX_CLIENTS}"),
            );
        }
        max_clients
    }
}
