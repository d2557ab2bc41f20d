//! Micro-benchmarks of the decision path.
//!
//! - `match/*`: descriptor matching in a 1,000-rule domain (exact value, the
//!   last of 100 wildcards, the key-only default, a 3-level nested rule).
//! - `match_wildcards/*`: a wildcard-heavy domain (1,000 prefix patterns
//!   and 10 suffix patterns): the last prefix pattern, a suffix pattern,
//!   and a value no pattern matches (the default answers).
//! - `should_rate_limit/memory`: one call through validate → match → count
//!   (memory store) → decide → encode.
//! - `should_rate_limit/memory_wire`: the same from request bytes to
//!   response bytes (protobuf decode and encode included).
//!
//! Run: `cargo bench -p floodgate-server --bench decision`.

use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use floodgate_proto::rate_limit_descriptor::Entry;
use floodgate_proto::{RateLimitDescriptor, RateLimitRequest, RateLimitResponse};
use floodgate_server::clock::Clock;
use floodgate_server::grpc::{RateLimiter, ResponseOptions};
use floodgate_server::limiter::{Limiter, LimiterOptions, RequestLimits};
use floodgate_server::rules::{RuleSet, Rules, load_files};
use floodgate_server::store::key::CacheKey;
use floodgate_server::store::memory::MemoryStore;
use prost::Message;

/// A domain of exactly 1,000 rules: 800 exact values, 100 wildcards, a
/// key-only default, and 99 nested two-level rules.
fn thousand_rules() -> RuleSet {
    let mut yaml = String::from("domain: big\ndescriptors:\n");
    for i in 0..800 {
        yaml.push_str(&format!("  - key: user\n    value: user-{i}\n    rate_limit: {{unit: minute, requests_per_unit: {i}}}\n"));
    }
    for i in 0..100 {
        yaml.push_str(&format!("  - key: user\n    value: \"team{i}-*\"\n    rate_limit: {{unit: minute, requests_per_unit: 5}}\n"));
    }
    yaml.push_str("  - key: user\n    rate_limit: {unit: minute, requests_per_unit: 10}\n");
    for i in 0..99 {
        yaml.push_str(&format!(
            "  - key: tenant\n    value: t{i}\n    descriptors:\n      - key: path\n        descriptors:\n          - key: method\n            value: GET\n            rate_limit: {{unit: second, requests_per_unit: 100}}\n"
        ));
    }
    load_files(&[("big.yaml".into(), yaml)], false).expect("valid rules")
}

fn matching(c: &mut Criterion) {
    let set = thousand_rules();
    let domain = set.domain("big").expect("domain");
    let mut group = c.benchmark_group("match");
    let cases: [(&str, &[(&str, &str)]); 4] = [
        ("exact", &[("user", "user-799")]),
        ("last_wildcard", &[("user", "team99-alice")]),
        ("default", &[("user", "someone-else")]),
        (
            "nested_3_levels",
            &[
                ("tenant", "t98"),
                ("path", "/api/v1/items"),
                ("method", "GET"),
            ],
        ),
    ];
    for (name, entries) in cases {
        assert!(
            domain.find(entries.iter().copied()).is_some(),
            "{name} must match"
        );
        group.bench_function(name, |b| {
            b.iter(|| {
                domain
                    .find(std::hint::black_box(entries).iter().copied())
                    .map(|m| m.node as *const _)
            })
        });
    }
    group.finish();
}

/// 1,000 `tenant-<i>-*` patterns, 10 `*.<tld>` patterns, and a default.
fn wildcard_heavy() -> RuleSet {
    let mut yaml = String::from("domain: wild\ndescriptors:\n");
    for i in 0..1000 {
        yaml.push_str(&format!("  - key: host\n    value: \"tenant-{i}-*\"\n    rate_limit: {{unit: minute, requests_per_unit: {i}}}\n"));
    }
    for tld in [
        "com", "org", "net", "io", "dev", "app", "eu", "de", "fr", "uk",
    ] {
        yaml.push_str(&format!("  - key: host\n    value: \"*.{tld}\"\n    rate_limit: {{unit: minute, requests_per_unit: 7}}\n"));
    }
    yaml.push_str("  - key: host\n    rate_limit: {unit: minute, requests_per_unit: 1}\n");
    load_files(&[("wild.yaml".into(), yaml)], false).expect("valid rules")
}

fn matching_wildcards(c: &mut Criterion) {
    let set = wildcard_heavy();
    let domain = set.domain("wild").expect("domain");
    let mut group = c.benchmark_group("match_wildcards");
    let cases: [(&str, &str, u32); 3] = [
        ("last_prefix_pattern", "tenant-999-eu-west", 999),
        ("suffix_pattern", "shop.example.uk", 7),
        ("no_pattern_default", "localhost", 1),
    ];
    for (name, value, limit) in cases {
        let found = domain.find([("host", value)]).expect("a match");
        assert_eq!(
            found.node.rate_limits[0].allowance,
            floodgate_server::rules::Allowance::fixed(limit, floodgate_server::rules::Unit::Minute),
            "{name}"
        );
        group.bench_function(name, |b| {
            b.iter(|| {
                domain
                    .find([("host", std::hint::black_box(value))])
                    .map(|m| m.node as *const _)
            })
        });
    }
    group.finish();
}

fn service() -> RateLimiter {
    let rules = load_files(
        &[("edge.yaml".into(), "domain: edge\ndescriptors:\n  - key: user\n    rate_limit: {unit: minute, requests_per_unit: 4000000000}\n".into())],
        false,
    )
    .expect("valid rules");
    let store = Arc::new(MemoryStore::new(100_000, Clock::System));
    let limiter = Limiter::new(
        Rules::new(rules),
        store,
        CacheKey::default(),
        Clock::System,
        LimiterOptions::default(),
    );
    RateLimiter::new(
        limiter,
        RequestLimits::default(),
        ResponseOptions::default(),
    )
}

fn should_rate_limit(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let service = service();
    let request = RateLimitRequest {
        domain: "edge".into(),
        descriptors: vec![RateLimitDescriptor {
            entries: vec![Entry {
                key: "user".into(),
                value: "alice".into(),
            }],
            ..Default::default()
        }],
        hits_addend: 1,
    };
    let bytes = request.encode_to_vec();
    let mut group = c.benchmark_group("should_rate_limit");
    group.bench_function("memory", |b| {
        b.to_async(&runtime)
            .iter(|| async { service.should_rate_limit(&request).await.expect("decision") })
    });
    group.bench_function("memory_wire", |b| {
        b.to_async(&runtime).iter(|| async {
            let request = RateLimitRequest::decode(bytes.as_slice()).expect("decode");
            let response: RateLimitResponse =
                service.should_rate_limit(&request).await.expect("decision");
            response.encode_to_vec()
        })
    });
    group.finish();
}

criterion_group!(benches, matching, matching_wildcards, should_rate_limit);
criterion_main!(benches);
