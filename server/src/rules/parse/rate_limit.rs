//! A descriptor's limits: `rate_limit`, or the list `rate_limits`, each with
//! the reference's fields (`unit`, `requests_per_unit`, `unlimited`, `name`,
//! `replaces`) and Floodgate's extensions (`algorithm`, `unit_multiplier`,
//! `burst`).
//!
//! Off the request path: rules load at startup and on reload, before any
//! request.

use std::collections::HashMap;
use std::sync::Arc;

use super::{Cx, Reported, join};
use crate::model::algorithm::Algorithm;
use crate::rules::yaml::Yaml;
use crate::rules::{Allowance, RateLimit, Unit};

/// The keys a `rate_limit` block may hold.
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
/// The keys an entry of `replaces` may hold.
const REPLACES_KEYS: &[&str] = &["name"];

impl Cx<'_> {
    /// `rate_limit`, or the list `rate_limits` (not both).
    pub(super) fn rate_limits(
        &mut self,
        fields: &HashMap<&str, &Yaml>,
        path: &str,
    ) -> Vec<RateLimit> {
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

    fn rate_limit(&mut self, node: &Yaml, path: &str) -> Option<RateLimit> {
        let fields = self.map(node, path, RATE_LIMIT_KEYS)?;
        let unit_name = self.string(&fields, "unit", path);
        let unit = Unit::parse(&unit_name);
        let unlimited = self.boolean(&fields, "unlimited", path);
        let requests_per_unit = self.whole(&fields, "requests_per_unit", path).unwrap_or(0);
        let name = self.string(&fields, "name", path);
        let replaces = self.replaces(&fields, path, &name);
        // Extensions: algorithm, unit_multiplier, burst.
        let algorithm = self.algorithm(&fields, path)?;
        let unit_multiplier = self.unit_multiplier(&fields, path, unit)?;
        let burst = self.burst(&fields, path, algorithm).ok()?;
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

    /// The names in `replaces`, each neither empty nor the limit's own `name`.
    fn replaces(&mut self, fields: &HashMap<&str, &Yaml>, path: &str, name: &str) -> Vec<Arc<str>> {
        let mut replaces = Vec::new();
        for (entry_path, entry) in self.list(fields, "replaces", path) {
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
        replaces
    }

    /// `algorithm`, a fixed window unless set; `None` once reported.
    fn algorithm(&mut self, fields: &HashMap<&str, &Yaml>, path: &str) -> Option<Algorithm> {
        let algorithm_name = self.string(fields, "algorithm", path);
        let algorithm = match algorithm_name.as_str() {
            "" => Some(Algorithm::FixedWindow),
            other => Algorithm::parse(other),
        };
        if algorithm.is_none() {
            self.error(&join(path, "algorithm"), format!(
                "invalid rate limit algorithm '{algorithm_name}' (expected fixed_window, sliding_window, token_bucket or gcra)"
            ));
        }
        algorithm
    }

    /// `unit_multiplier`, 1 unless set: at least 1, and a period of at most
    /// 100 years with `unit`; `None` once reported.
    fn unit_multiplier(
        &mut self,
        fields: &HashMap<&str, &Yaml>,
        path: &str,
        unit: Option<Unit>,
    ) -> Option<u32> {
        let unit_multiplier = match self.whole(fields, "unit_multiplier", path) {
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
        Some(unit_multiplier)
    }

    /// `burst`, if set: at least 1, and only for an algorithm that has one.
    fn burst(
        &mut self,
        fields: &HashMap<&str, &Yaml>,
        path: &str,
        algorithm: Algorithm,
    ) -> Result<Option<u32>, Reported> {
        let burst = self.whole(fields, "burst", path);
        if burst.is_some() && !algorithm.has_burst() {
            self.error(&join(path, "burst"), format!(
                "burst can only be used with the token_bucket and gcra algorithms, but found algorithm '{}'",
                algorithm.name()
            ));
            return Err(Reported);
        }
        if burst == Some(0) {
            self.error(&join(path, "burst"), "burst must be at least 1");
            return Err(Reported);
        }
        Ok(burst)
    }
}
