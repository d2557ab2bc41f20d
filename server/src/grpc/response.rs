//! Encoding a [`Decision`] as a `RateLimitResponse`: statuses in request
//! order, and the opt-in extras: `RateLimit-*` response headers and
//! `dynamic_metadata`.

use floodgate_proto::envoy::config::core::v3::HeaderValue;
use floodgate_proto::rate_limit_response::{
    Code as ProtoCode, DescriptorStatus, RateLimit, rate_limit::Unit as ProtoUnit,
};
use floodgate_proto::{RateLimitRequest, RateLimitResponse};
use prost_types::value::Kind;
use prost_types::{ListValue, Struct, Value};

use crate::limiter::{Code, Decision, Status};
use crate::model::Unit;

/// Names of the response headers describing the most restrictive limit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeaderNames {
    /// Default `RateLimit-Limit`.
    pub limit: String,
    /// Default `RateLimit-Remaining`.
    pub remaining: String,
    /// Default `RateLimit-Reset` (seconds until the window resets).
    pub reset: String,
}

impl Default for HeaderNames {
    fn default() -> Self {
        HeaderNames {
            limit: "RateLimit-Limit".into(),
            remaining: "RateLimit-Remaining".into(),
            reset: "RateLimit-Reset".into(),
        }
    }
}

/// Opt-in parts of the response.
#[derive(Clone, Debug, Default)]
pub struct ResponseOptions {
    /// Add `RateLimit-*` headers to `response_headers_to_add`.
    pub headers: Option<HeaderNames>,
    /// Fill `dynamic_metadata`.
    pub dynamic_metadata: bool,
    /// Header added (value `true`) to answers given without the real store;
    /// `None` adds none.
    pub degraded_header: Option<String>,
}

/// Encodes `decision` for `request`.
pub fn encode(
    request: &RateLimitRequest,
    decision: &Decision,
    options: &ResponseOptions,
) -> RateLimitResponse {
    let statuses = decision.statuses.iter().map(descriptor_status).collect();
    let mut response_headers_to_add = match &options.headers {
        Some(names) => headers(decision, names),
        None => Vec::new(),
    };
    if let Some(name) = options
        .degraded_header
        .as_ref()
        .filter(|_| decision.degraded)
    {
        response_headers_to_add.push(HeaderValue {
            key: name.clone(),
            value: "true".into(),
            ..HeaderValue::default()
        });
    }
    let dynamic_metadata = options
        .dynamic_metadata
        .then(|| metadata(request, decision));
    RateLimitResponse {
        overall_code: code(decision.overall) as i32,
        statuses,
        response_headers_to_add,
        dynamic_metadata,
        ..RateLimitResponse::default()
    }
}

fn code(code: Code) -> ProtoCode {
    match code {
        Code::Ok => ProtoCode::Ok,
        Code::OverLimit => ProtoCode::OverLimit,
    }
}

fn unit(unit: Unit) -> ProtoUnit {
    match unit {
        Unit::Second => ProtoUnit::Second,
        Unit::Minute => ProtoUnit::Minute,
        Unit::Hour => ProtoUnit::Hour,
        Unit::Day => ProtoUnit::Day,
        Unit::Week => ProtoUnit::Week,
        Unit::Month => ProtoUnit::Month,
        Unit::Year => ProtoUnit::Year,
    }
}

fn descriptor_status(s: &Status) -> DescriptorStatus {
    DescriptorStatus {
        code: code(s.code) as i32,
        current_limit: s.limit.as_ref().map(|l| RateLimit {
            requests_per_unit: l.requests_per_unit,
            unit: unit(l.unit) as i32,
            name: l.name.as_deref().unwrap_or_default().to_owned(),
        }),
        limit_remaining: s.remaining,
        duration_until_reset: s.reset_after.map(|d| prost_types::Duration {
            seconds: i64::try_from(whole_seconds(d)).unwrap_or(i64::MAX),
            nanos: 0,
        }),
        quota: None,
    }
}

/// A reset time as callers see it, in `duration_until_reset` and the reset
/// header: whole seconds, rounded up, and never 0 (Envoy turns a fraction
/// of a second into `x-ratelimit-reset: 0`, "retry at once"). Every answer
/// passes here, whichever path decided it (the store, the local over-limit
/// cache, a failure policy) and whatever the algorithm.
fn whole_seconds(d: std::time::Duration) -> u64 {
    (d.as_secs() + u64::from(d.subsec_nanos() > 0)).max(1)
}

/// The headers describe the descriptor with the least remaining, except that
/// a (non-quota) descriptor over its limit always wins, so a 429 explains itself.
fn headers(decision: &Decision, names: &HeaderNames) -> Vec<HeaderValue> {
    let limited = || decision.statuses.iter().filter(|s| s.limit.is_some());
    let chosen = limited()
        .find(|s| s.code == Code::OverLimit && !s.quota_mode)
        .or_else(|| limited().min_by_key(|s| s.remaining));
    let Some(status) = chosen else {
        return Vec::new();
    };
    let Some(limit) = &status.limit else {
        return Vec::new();
    };
    let reset = status.reset_after.map_or(0, whole_seconds);
    let header = |key: &str, value: String| HeaderValue {
        key: key.to_owned(),
        value,
        raw_value: Vec::new(),
    };
    vec![
        header(&names.limit, limit.requests_per_unit.to_string()),
        header(&names.remaining, status.remaining.to_string()),
        header(&names.reset, reset.to_string()),
    ]
}

/// `{domain, descriptors: [{entries: ["k=v"], limit?, hitsAddend?}], hitsAddend?, metadata?}`,
/// where `metadata` merges the YAML `metadata` of the descriptors that were
/// not over their limit (the first value wins; nested maps merge).
fn metadata(request: &RateLimitRequest, decision: &Decision) -> Struct {
    let mut root = Struct::default();
    root.fields.insert("domain".into(), string(&request.domain));
    let descriptors = request
        .descriptors
        .iter()
        .map(|d| {
            let mut fields = Struct::default();
            let entries = d
                .entries
                .iter()
                .map(|e| string(&format!("{}={}", e.key, e.value)))
                .collect();
            fields.fields.insert("entries".into(), list(entries));
            if let Some(o) = &d.limit {
                let unit = floodgate_proto::envoy::r#type::v3::RateLimitUnit::try_from(o.unit)
                    .map_or_else(|_| o.unit.to_string(), |u| u.as_str_name().to_owned());
                fields.fields.insert(
                    "limit".into(),
                    string(&format!(
                        "requests_per_unit:{} unit:{unit}",
                        o.requests_per_unit
                    )),
                );
            }
            if let Some(h) = d.hits_addend {
                fields.fields.insert("hitsAddend".into(), number(h as f64));
            }
            Value {
                kind: Some(Kind::StructValue(fields)),
            }
        })
        .collect();
    root.fields.insert("descriptors".into(), list(descriptors));
    if request.hits_addend != 0 {
        root.fields
            .insert("hitsAddend".into(), number(f64::from(request.hits_addend)));
    }
    let mut merged = serde_json::Map::new();
    for meta in decision
        .statuses
        .iter()
        .filter(|s| s.code != Code::OverLimit)
        .filter_map(|s| s.metadata.as_ref())
    {
        merge(&mut merged, meta);
    }
    if !merged.is_empty() {
        root.fields.insert(
            "metadata".into(),
            json_to_value(&serde_json::Value::Object(merged)),
        );
    }
    root
}

fn merge(
    into: &mut serde_json::Map<String, serde_json::Value>,
    from: &serde_json::Map<String, serde_json::Value>,
) {
    for (k, v) in from.iter() {
        match (into.get_mut(k), v) {
            (None, _) => {
                into.insert(k.clone(), v.clone());
            }
            (Some(serde_json::Value::Object(existing)), serde_json::Value::Object(new)) => {
                merge(existing, new);
            }
            (Some(_), _) => {}
        }
    }
}

fn string(s: &str) -> Value {
    Value {
        kind: Some(Kind::StringValue(s.to_owned())),
    }
}

fn number(n: f64) -> Value {
    Value {
        kind: Some(Kind::NumberValue(n)),
    }
}

fn list(values: Vec<Value>) -> Value {
    Value {
        kind: Some(Kind::ListValue(ListValue { values })),
    }
}

fn json_to_value(v: &serde_json::Value) -> Value {
    use serde_json::Value as J;
    let kind = match v {
        J::Null => Kind::NullValue(0),
        J::Bool(b) => Kind::BoolValue(*b),
        J::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or_default()),
        J::String(s) => Kind::StringValue(s.clone()),
        J::Array(items) => Kind::ListValue(ListValue {
            values: items.iter().map(json_to_value).collect(),
        }),
        J::Object(map) => Kind::StructValue(Struct {
            fields: map
                .iter()
                .map(|(k, v)| (k.clone(), json_to_value(v)))
                .collect(),
        }),
    };
    Value { kind: Some(kind) }
}
