//! A `RateLimitConfig` resource as a rules file: the proto's `domain` and
//! `descriptors` are written out as the YAML (JSON, which is YAML) that an
//! operator would write, so rules from xDS go through the one compile step
//! ([`crate::rules::load_files`]) and fail with the same messages as files.
//! Field by field as envoyproxy/ratelimit's `ConfigXdsProtoToYaml`: the unit
//! is its enum name (`UNKNOWN` fails as an unknown unit), an empty value or
//! name is absent, and `metadata` is the struct as a map.

use floodgate_proto::ratelimit::config::ratelimit::v3::{
    RateLimitConfig, RateLimitDescriptor, RateLimitPolicy, RateLimitUnit,
};
use prost_types::value::Kind;
use serde_json::{Map, Value, json};

/// The rules text of `config` (a JSON document).
pub fn rules_text(config: &RateLimitConfig) -> String {
    let root = json!({
        "domain": config.domain,
        "descriptors": config.descriptors.iter().map(descriptor).collect::<Vec<_>>(),
    });
    root.to_string()
}

/// The name errors give for `config` (its resource name, or its domain).
pub fn file_name(config: &RateLimitConfig, index: usize) -> String {
    if !config.name.is_empty() {
        config.name.clone()
    } else if !config.domain.is_empty() {
        config.domain.clone()
    } else {
        format!("resource {index}")
    }
}

fn descriptor(d: &RateLimitDescriptor) -> Value {
    let mut out = Map::new();
    out.insert("key".into(), Value::String(d.key.clone()));
    if !d.value.is_empty() {
        out.insert("value".into(), Value::String(d.value.clone()));
    }
    if let Some(policy) = &d.rate_limit {
        out.insert("rate_limit".into(), rate_limit(policy));
    }
    if !d.descriptors.is_empty() {
        let children = d.descriptors.iter().map(descriptor).collect();
        out.insert("descriptors".into(), Value::Array(children));
    }
    for (flag, on) in [
        ("shadow_mode", d.shadow_mode),
        ("detailed_metric", d.detailed_metric),
        ("quota_mode", d.quota_mode),
    ] {
        if on {
            out.insert(flag.into(), Value::Bool(true));
        }
    }
    if let Some(metadata) = &d.metadata {
        out.insert("metadata".into(), structure(metadata));
    }
    Value::Object(out)
}

fn rate_limit(p: &RateLimitPolicy) -> Value {
    let mut out = Map::new();
    if p.unlimited {
        out.insert("unlimited".into(), Value::Bool(true));
    } else {
        let unit = RateLimitUnit::try_from(p.unit)
            .map(|u| u.as_str_name().to_owned())
            .unwrap_or_else(|_| format!("unit number {}", p.unit));
        out.insert("unit".into(), Value::String(unit));
        out.insert("requests_per_unit".into(), json!(p.requests_per_unit));
    }
    if !p.name.is_empty() {
        out.insert("name".into(), Value::String(p.name.clone()));
    }
    if !p.replaces.is_empty() {
        let replaces = p.replaces.iter().map(|r| json!({ "name": r.name }));
        out.insert("replaces".into(), Value::Array(replaces.collect()));
    }
    Value::Object(out)
}

fn structure(s: &prost_types::Struct) -> Value {
    Value::Object(
        s.fields
            .iter()
            .map(|(k, v)| (k.clone(), value(v)))
            .collect(),
    )
}

fn value(v: &prost_types::Value) -> Value {
    match &v.kind {
        None | Some(Kind::NullValue(_)) => Value::Null,
        Some(Kind::NumberValue(n)) => json!(n),
        Some(Kind::StringValue(s)) => Value::String(s.clone()),
        Some(Kind::BoolValue(b)) => Value::Bool(*b),
        Some(Kind::StructValue(s)) => structure(s),
        Some(Kind::ListValue(l)) => Value::Array(l.values.iter().map(value).collect()),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::rules::load_files;
    use floodgate_proto::ratelimit::config::ratelimit::v3::RateLimitReplace;

    fn limit(unit: RateLimitUnit, n: u32) -> Option<RateLimitPolicy> {
        Some(RateLimitPolicy {
            unit: unit as i32,
            requests_per_unit: n,
            ..Default::default()
        })
    }

    #[test]
    fn every_field_reaches_the_rules_as_the_yaml_would_say_it() {
        let config = RateLimitConfig {
            name: "eg/default".into(),
            domain: "d".into(),
            descriptors: vec![RateLimitDescriptor {
                key: "user".into(),
                rate_limit: Some(RateLimitPolicy {
                    name: "per_user".into(),
                    replaces: vec![RateLimitReplace {
                        name: "other".into(),
                    }],
                    ..limit(RateLimitUnit::Minute, 3).unwrap()
                }),
                shadow_mode: true,
                descriptors: vec![RateLimitDescriptor {
                    key: "path".into(),
                    value: "/login".into(),
                    rate_limit: limit(RateLimitUnit::Week, 7),
                    quota_mode: true,
                    ..Default::default()
                }],
                ..Default::default()
            }],
        };
        let text = rules_text(&config);
        let set = load_files(&[(file_name(&config, 0), text)], false).unwrap();
        let described = set.describe();
        assert!(
            described.contains(
                "d.user: unit=MINUTE requests_per_unit=3 name=per_user, shadow_mode: true"
            ),
            "{described}"
        );
        assert!(
            described.contains("d.user.path_/login: unit=WEEK requests_per_unit=7"),
            "{described}"
        );
    }

    #[test]
    fn an_unknown_unit_fails_with_the_file_named() {
        let config = RateLimitConfig {
            name: "bad".into(),
            domain: "d".into(),
            descriptors: vec![RateLimitDescriptor {
                key: "k".into(),
                rate_limit: limit(RateLimitUnit::Unknown, 1),
                ..Default::default()
            }],
        };
        let errors =
            load_files(&[(file_name(&config, 0), rules_text(&config))], false).unwrap_err();
        let text = errors.iter().map(ToString::to_string).collect::<String>();
        assert!(text.starts_with("bad: "), "{text}");
        assert!(text.contains("UNKNOWN"), "{text}");
    }
}
