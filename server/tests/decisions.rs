//! Request semantics end to end inside the library: validate → match →
//! count (memory store) → decide → encode, on a paused clock. Each test
//! states one behaviour of the reference service (rls-reference §1.3) or one
//! of our documented extensions.

#![allow(clippy::unwrap_used)] // Tests: a failed unwrap is a failed test.

use std::sync::Arc;
use std::time::Duration;

use floodgate_proto::envoy::config::core::v3::HeaderValue;
use floodgate_proto::rate_limit_descriptor::{Entry, RateLimitOverride};
use floodgate_proto::rate_limit_response::{Code, DescriptorStatus};
use floodgate_proto::{RateLimitDescriptor, RateLimitRequest, RateLimitResponse};
use floodgate_server::clock::Clock;
use floodgate_server::grpc::{HeaderNames, RateLimiter, ResponseOptions, ServiceError};
use floodgate_server::limiter::{Limiter, LimiterOptions, RequestLimits};
use floodgate_server::rules::{Rules, load_files};
use floodgate_server::store::key::CacheKey;
use floodgate_server::store::memory::MemoryStore;
use prost_types::value::Kind;

/// 15 s into a minute window that starts at a multiple of 60.
const NOW: u64 = 1_700_000_040 + 15;

const RULES: &str = r#"
domain: edge
descriptors:
  - key: user
    rate_limit: {unit: minute, requests_per_unit: 3}
    metadata: {tier: free}
  - key: user
    value: vip
    rate_limit: {name: vip, unit: minute, requests_per_unit: 100, replaces: [{name: per_path}]}
    metadata: {tier: gold}
  - key: path
    rate_limit: {name: per_path, unit: minute, requests_per_unit: 1}
  - key: banned
    rate_limit: {unit: second, requests_per_unit: 0}
  - key: internal
    rate_limit: {unlimited: true}
  - key: trial
    shadow_mode: true
    rate_limit: {unit: minute, requests_per_unit: 1}
  - key: tokens
    quota_mode: true
    rate_limit: {unit: minute, requests_per_unit: 10}
  - key: files
    value: "/shared/*"
    share_threshold: true
    rate_limit: {unit: minute, requests_per_unit: 2}
  - key: allow
"#;

struct Fixture {
    service: RateLimiter,
    store: Arc<MemoryStore>,
}

fn fixture_with(limiter: LimiterOptions, response: ResponseOptions) -> Fixture {
    let clock = Clock::anchored(Duration::from_secs(NOW));
    let store = Arc::new(MemoryStore::new(10_000, clock.clone()));
    let rules = Rules::new(load_files(&[("edge.yaml".into(), RULES.into())], false).unwrap());
    let limiter = Limiter::new(rules, store.clone(), CacheKey::new("fg:"), clock, limiter);
    Fixture {
        service: RateLimiter::new(limiter, RequestLimits::default(), response),
        store,
    }
}

fn fixture() -> Fixture {
    fixture_with(LimiterOptions::default(), ResponseOptions::default())
}

fn descriptor(entries: &[(&str, &str)]) -> RateLimitDescriptor {
    RateLimitDescriptor {
        entries: entries
            .iter()
            .map(|(k, v)| Entry {
                key: (*k).into(),
                value: (*v).into(),
            })
            .collect(),
        ..Default::default()
    }
}

fn request(descriptors: Vec<RateLimitDescriptor>) -> RateLimitRequest {
    RateLimitRequest {
        domain: "edge".into(),
        descriptors,
        hits_addend: 0,
    }
}

async fn call(f: &Fixture, r: &RateLimitRequest) -> RateLimitResponse {
    f.service.should_rate_limit(r).await.expect("a decision")
}

fn summary(s: &DescriptorStatus) -> (Code, u32, Option<u32>) {
    (
        s.code(),
        s.limit_remaining,
        s.current_limit.as_ref().map(|l| l.requests_per_unit),
    )
}

#[tokio::test(start_paused = true)]
async fn three_per_minute_allows_three_then_rejects_until_the_window_ends() {
    let f = fixture();
    let r = request(vec![descriptor(&[("user", "alice")])]);
    for remaining in [2, 1, 0] {
        let resp = call(&f, &r).await;
        assert_eq!(resp.overall_code(), Code::Ok);
        assert_eq!(summary(&resp.statuses[0]), (Code::Ok, remaining, Some(3)));
    }
    let resp = call(&f, &r).await;
    assert_eq!(resp.overall_code(), Code::OverLimit);
    let status = &resp.statuses[0];
    assert_eq!(summary(status), (Code::OverLimit, 0, Some(3)));
    let limit = status.current_limit.as_ref().unwrap();
    assert_eq!(
        limit.unit(),
        floodgate_proto::rate_limit_response::rate_limit::Unit::Minute
    );
    assert_eq!(
        status.duration_until_reset,
        Some(prost_types::Duration {
            seconds: 45,
            nanos: 0
        })
    );

    tokio::time::advance(Duration::from_secs(45)).await;
    let resp = call(&f, &r).await;
    assert_eq!(
        summary(&resp.statuses[0]),
        (Code::Ok, 2, Some(3)),
        "a new window starts afresh"
    );
    assert_eq!(resp.statuses[0].duration_until_reset.unwrap().seconds, 60);
}

#[tokio::test(start_paused = true)]
async fn every_value_of_a_default_rule_has_its_own_counter() {
    let f = fixture();
    call(&f, &request(vec![descriptor(&[("user", "alice")])])).await;
    let resp = call(&f, &request(vec![descriptor(&[("user", "bob")])])).await;
    assert_eq!(resp.statuses[0].limit_remaining, 2);
}

#[tokio::test(start_paused = true)]
async fn unknown_domains_and_descriptors_are_ok_without_a_limit() {
    let f = fixture();
    let mut r = request(vec![
        descriptor(&[("nobody", "x")]),
        descriptor(&[("allow", "y")]),
    ]);
    let resp = call(&f, &r).await;
    assert_eq!(resp.overall_code(), Code::Ok);
    for s in &resp.statuses {
        assert_eq!(summary(s), (Code::Ok, 0, None));
        assert!(s.duration_until_reset.is_none());
    }
    r.domain = "elsewhere".into();
    r.descriptors = vec![descriptor(&[("user", "alice")])];
    assert_eq!(
        summary(&call(&f, &r).await.statuses[0]),
        (Code::Ok, 0, None)
    );
    assert!(f.store.is_empty(), "nothing was counted");
}

#[tokio::test(start_paused = true)]
async fn statuses_follow_request_order_and_any_over_limit_is_overall_over_limit() {
    let f = fixture();
    let r = request(vec![
        descriptor(&[("user", "carol")]),
        descriptor(&[("banned", "x")]),
        descriptor(&[("nobody", "x")]),
    ]);
    let resp = call(&f, &r).await;
    assert_eq!(resp.overall_code(), Code::OverLimit);
    let codes: Vec<Code> = resp.statuses.iter().map(|s| s.code()).collect();
    assert_eq!(codes, [Code::Ok, Code::OverLimit, Code::Ok]);
}

#[tokio::test(start_paused = true)]
async fn hits_addend_counts_and_zero_only_checks() {
    let f = fixture();
    let mut r = request(vec![descriptor(&[("user", "dave")])]);
    r.hits_addend = 2;
    assert_eq!(
        summary(&call(&f, &r).await.statuses[0]),
        (Code::Ok, 1, Some(3))
    );
    // A descriptor's own hits_addend wins; 0 checks without consuming.
    r.descriptors[0].hits_addend = Some(0);
    for _ in 0..3 {
        assert_eq!(
            summary(&call(&f, &r).await.statuses[0]),
            (Code::Ok, 1, Some(3))
        );
    }
    r.descriptors[0].hits_addend = Some(5);
    assert_eq!(call(&f, &r).await.overall_code(), Code::OverLimit);
    r.descriptors[0].hits_addend = Some(0);
    assert_eq!(
        call(&f, &r).await.overall_code(),
        Code::OverLimit,
        "a check still sees the count over"
    );
}

#[tokio::test(start_paused = true)]
async fn request_hits_addend_zero_means_one() {
    let f = fixture();
    let r = request(vec![descriptor(&[("user", "erin")])]);
    assert_eq!(r.hits_addend, 0);
    assert_eq!(call(&f, &r).await.statuses[0].limit_remaining, 2);
}

#[tokio::test(start_paused = true)]
async fn an_override_wins_in_a_known_domain_only() {
    let f = fixture();
    let mut d = descriptor(&[("user", "frank")]);
    d.limit = Some(RateLimitOverride {
        requests_per_unit: 1,
        unit: 3, /* HOUR */
    });
    let resp = call(&f, &request(vec![d.clone()])).await;
    let limit = resp.statuses[0].current_limit.clone().unwrap();
    assert_eq!((limit.requests_per_unit, limit.name.as_str()), (1, ""));
    assert_eq!(
        resp.statuses[0].duration_until_reset.unwrap().seconds,
        3_600 - (NOW % 3_600) as i64
    );
    assert_eq!(
        call(&f, &request(vec![d.clone()])).await.overall_code(),
        Code::OverLimit
    );
    // Also for a descriptor no rule matches.
    let mut unmatched = descriptor(&[("nobody", "x")]);
    unmatched.limit = d.limit;
    assert_eq!(
        summary(&call(&f, &request(vec![unmatched.clone()])).await.statuses[0]),
        (Code::Ok, 0, Some(1))
    );
    let mut r = request(vec![unmatched]);
    r.domain = "unknown".into();
    assert_eq!(
        summary(&call(&f, &r).await.statuses[0]),
        (Code::Ok, 0, None)
    );
}

#[tokio::test(start_paused = true)]
async fn unlimited_is_ok_with_max_remaining_and_not_counted() {
    let f = fixture();
    let resp = call(&f, &request(vec![descriptor(&[("internal", "x")])])).await;
    assert_eq!(summary(&resp.statuses[0]), (Code::Ok, u32::MAX, None));
    assert!(f.store.is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_replaced_limit_is_neither_counted_nor_reported() {
    let f = fixture();
    let r = request(vec![
        descriptor(&[("user", "vip")]),
        descriptor(&[("path", "/a")]),
    ]);
    for _ in 0..3 {
        let resp = call(&f, &r).await;
        assert_eq!(
            resp.overall_code(),
            Code::Ok,
            "per_path (1/min) is replaced by vip"
        );
        assert_eq!(summary(&resp.statuses[1]), (Code::Ok, 0, None));
    }
    let alone = call(&f, &request(vec![descriptor(&[("path", "/a")])])).await;
    assert_eq!(
        summary(&alone.statuses[0]),
        (Code::Ok, 0, Some(1)),
        "the replaced limit was never counted"
    );
}

#[tokio::test(start_paused = true)]
async fn shadow_mode_counts_but_answers_ok() {
    let f = fixture();
    let r = request(vec![descriptor(&[("trial", "t")])]);
    call(&f, &r).await;
    let resp = call(&f, &r).await;
    assert_eq!(resp.overall_code(), Code::Ok);
    assert_eq!(summary(&resp.statuses[0]), (Code::Ok, 0, Some(1)));
    assert_eq!(f.store.len(), 1, "shadow rules are counted");
}

#[tokio::test(start_paused = true)]
async fn global_shadow_mode_forces_only_the_overall_code() {
    let f = fixture_with(
        LimiterOptions {
            global_shadow_mode: true,
            ..LimiterOptions::default()
        },
        ResponseOptions::default(),
    );
    let resp = call(&f, &request(vec![descriptor(&[("banned", "x")])])).await;
    assert_eq!(resp.overall_code(), Code::Ok);
    assert_eq!(resp.statuses[0].code(), Code::OverLimit);
}

#[tokio::test(start_paused = true)]
async fn quota_mode_is_over_only_when_every_quota_descriptor_is_over() {
    let f = fixture();
    let mut tokens = descriptor(&[("tokens", "team-a")]);
    tokens.hits_addend = Some(11);
    let resp = call(
        &f,
        &request(vec![
            tokens.clone(),
            descriptor(&[("tokens", "team-b")]),
            descriptor(&[("user", "gina")]),
        ]),
    )
    .await;
    assert_eq!(resp.statuses[0].code(), Code::OverLimit);
    assert_eq!(
        resp.overall_code(),
        Code::Ok,
        "team-a is over its quota, team-b is not"
    );
    let resp = call(
        &f,
        &request(vec![tokens.clone(), descriptor(&[("user", "gina")])]),
    )
    .await;
    assert_eq!(
        resp.overall_code(),
        Code::OverLimit,
        "the only quota descriptor is over"
    );
    let mut team_b = descriptor(&[("tokens", "team-b")]);
    team_b.hits_addend = Some(20);
    assert_eq!(
        call(&f, &request(vec![tokens, team_b]))
            .await
            .overall_code(),
        Code::OverLimit
    );
}

#[tokio::test(start_paused = true)]
async fn share_threshold_values_share_one_counter() {
    let f = fixture();
    call(&f, &request(vec![descriptor(&[("files", "/shared/a")])])).await;
    call(&f, &request(vec![descriptor(&[("files", "/shared/b")])])).await;
    let resp = call(&f, &request(vec![descriptor(&[("files", "/shared/c")])])).await;
    assert_eq!(resp.overall_code(), Code::OverLimit);
    assert_eq!(f.store.len(), 1);
}

#[tokio::test(start_paused = true)]
async fn counter_keys_use_the_reference_format_with_the_prefix() {
    let f = fixture();
    call(&f, &request(vec![descriptor(&[("user", "hank")])])).await;
    let window_start = NOW / 60 * 60;
    let key = format!("fg:edge_user_hank_{window_start}");
    let check = floodgate_server::store::Check {
        key,
        hits: 0,
        limit: floodgate_server::store::Limit::FixedWindow {
            limit: 3,
            period_ms: 60_000.0,
            reset_after: Duration::from_secs(60),
        },
        veto: true,
    };
    assert_eq!(
        f.store.apply_one(&check).remaining,
        2,
        "the counter (1) lives under the reference key"
    );
}

#[tokio::test(start_paused = true)]
async fn headers_describe_the_most_restrictive_limit_and_an_over_limit_one_wins() {
    let f = fixture_with(
        LimiterOptions::default(),
        ResponseOptions {
            headers: Some(HeaderNames::default()),
            dynamic_metadata: false,
            degraded_header: None,
        },
    );
    let header = |resp: &RateLimitResponse| -> Vec<(String, String)> {
        resp.response_headers_to_add
            .iter()
            .map(|HeaderValue { key, value, .. }| (key.clone(), value.clone()))
            .collect()
    };
    let r = request(vec![
        descriptor(&[("user", "ivy")]),
        descriptor(&[("path", "/p")]),
    ]);
    let resp = call(&f, &r).await;
    assert_eq!(
        header(&resp),
        [
            ("RateLimit-Limit".to_owned(), "1".to_owned()),
            ("RateLimit-Remaining".to_owned(), "0".to_owned()),
            ("RateLimit-Reset".to_owned(), "45".to_owned()),
        ]
    );
    let resp = call(
        &f,
        &request(vec![
            descriptor(&[("user", "ivy")]),
            descriptor(&[("banned", "b")]),
        ]),
    )
    .await;
    assert_eq!(
        header(&resp)[0],
        ("RateLimit-Limit".to_owned(), "0".to_owned()),
        "the over-limit descriptor wins"
    );
    let none = call(&f, &request(vec![descriptor(&[("nobody", "x")])])).await;
    assert!(none.response_headers_to_add.is_empty());
}

#[tokio::test(start_paused = true)]
async fn dynamic_metadata_lists_descriptors_and_merges_metadata_of_passing_ones() {
    let f = fixture_with(
        LimiterOptions::default(),
        ResponseOptions {
            headers: None,
            dynamic_metadata: true,
            degraded_header: None,
        },
    );
    let mut vip = descriptor(&[("user", "vip")]);
    vip.hits_addend = Some(4);
    let mut r = request(vec![
        vip,
        descriptor(&[("user", "jo")]),
        descriptor(&[("banned", "x")]),
    ]);
    r.hits_addend = 1;
    let resp = call(&f, &r).await;
    let meta = resp.dynamic_metadata.expect("metadata");
    let field = |name: &str| meta.fields.get(name).and_then(|v| v.kind.clone());
    assert_eq!(field("domain"), Some(Kind::StringValue("edge".into())));
    assert_eq!(field("hitsAddend"), Some(Kind::NumberValue(1.0)));
    let Some(Kind::StructValue(merged)) = field("metadata") else {
        panic!("no merged metadata")
    };
    assert_eq!(
        merged.fields["tier"].kind,
        Some(Kind::StringValue("gold".into())),
        "the first value wins"
    );
    let Some(Kind::ListValue(list)) = field("descriptors") else {
        panic!("no descriptors")
    };
    let Some(Kind::StructValue(first)) = &list.values[0].kind else {
        panic!()
    };
    assert_eq!(
        first.fields["hitsAddend"].kind,
        Some(Kind::NumberValue(4.0))
    );
    let Some(Kind::ListValue(entries)) = &first.fields["entries"].kind else {
        panic!()
    };
    assert_eq!(
        entries.values[0].kind,
        Some(Kind::StringValue("user=vip".into()))
    );
}

#[tokio::test(start_paused = true)]
async fn invalid_requests_are_refused_with_a_message() {
    let f = fixture();
    let cases: Vec<(RateLimitRequest, &str)> = vec![
        (
            RateLimitRequest {
                domain: String::new(),
                ..request(vec![descriptor(&[("a", "b")])])
            },
            "rate limit domain must not be empty",
        ),
        (
            request(vec![]),
            "rate limit descriptor list must not be empty",
        ),
        (
            request(vec![RateLimitDescriptor {
                hits_addend: Some(1 << 53),
                ..descriptor(&[("user", "a")])
            }]),
            "descriptor 0 hits_addend 9007199254740992 is above the maximum 9007199254740991",
        ),
        (
            request(vec![
                descriptor(&[("user", "a")]),
                descriptor(&[("user", "b"), ("", "x")]),
            ]),
            "descriptor 1 entry 1 has an empty key",
        ),
        (
            request((0..65).map(|_| descriptor(&[("a", "b")])).collect()),
            "too many descriptors: 65 (at most 64)",
        ),
        (
            request(vec![descriptor(&vec![("a", "b"); 33])]),
            "descriptor 0 has too many entries: 33 (at most 32)",
        ),
        (
            request(vec![descriptor(&[("a", &"v".repeat(1025))])]),
            "descriptor 0 entry 0 value is 1025 bytes long (at most 1024)",
        ),
        (
            request(vec![RateLimitDescriptor {
                limit: Some(RateLimitOverride {
                    requests_per_unit: 1,
                    unit: 0,
                }),
                ..descriptor(&[("a", "b")])
            }]),
            "descriptor 0 limit override has an invalid unit (0)",
        ),
    ];
    for (r, message) in cases {
        match f.service.should_rate_limit(&r).await {
            Err(e @ ServiceError::Request(_)) => {
                let status = tonic::Status::from(e);
                assert_eq!(status.code(), tonic::Code::InvalidArgument);
                assert_eq!(status.message(), message);
            }
            other => panic!("{message}: got {other:?}"),
        }
    }
    assert!(f.store.is_empty());
}

#[tokio::test(start_paused = true)]
async fn descriptors_without_entries_or_with_negative_hits_are_ok_and_not_counted() {
    let f = fixture();
    let negative = RateLimitDescriptor {
        is_negative_hits: true,
        ..descriptor(&[("user", "kim")])
    };
    let resp = call(
        &f,
        &request(vec![
            descriptor(&[]),
            negative,
            descriptor(&[("user", "kim")]),
        ]),
    )
    .await;
    assert_eq!(
        summary(&resp.statuses[0]),
        (Code::Ok, 0, None),
        "no entries match nothing (as the reference)"
    );
    assert_eq!(
        summary(&resp.statuses[1]),
        (Code::Ok, 0, None),
        "giving budget back is not supported: not counted"
    );
    assert_eq!(
        summary(&resp.statuses[2]),
        (Code::Ok, 2, Some(3)),
        "only the plain descriptor was counted"
    );
    assert_eq!(f.store.len(), 1);
}

#[tokio::test(start_paused = true)]
async fn metadata_of_allow_list_and_unlimited_rules_is_returned() {
    const META: &str = "domain: m\ndescriptors:\n  - key: allow\n    metadata: {a: 1}\n  - key: free\n    rate_limit: {unlimited: true}\n    metadata: {b: 2}\n";
    let clock = Clock::anchored(Duration::from_secs(NOW));
    let store = Arc::new(MemoryStore::new(100, clock.clone()));
    let rules = Rules::new(load_files(&[("m.yaml".into(), META.into())], false).unwrap());
    let limiter = Limiter::new(
        rules,
        store,
        CacheKey::default(),
        clock,
        LimiterOptions::default(),
    );
    let service = RateLimiter::new(
        limiter,
        RequestLimits::default(),
        ResponseOptions {
            headers: None,
            dynamic_metadata: true,
            degraded_header: None,
        },
    );
    let mut r = request(vec![
        descriptor(&[("allow", "x")]),
        descriptor(&[("free", "y")]),
    ]);
    r.domain = "m".into();
    let meta = service
        .should_rate_limit(&r)
        .await
        .unwrap()
        .dynamic_metadata
        .unwrap();
    let Some(Kind::StructValue(merged)) = meta.fields.get("metadata").and_then(|v| v.kind.clone())
    else {
        panic!("{meta:?}")
    };
    assert_eq!(merged.fields.len(), 2, "{merged:?}");
}

#[tokio::test(start_paused = true)]
async fn stop_increment_when_over_limit_leaves_the_other_descriptors_untouched() {
    let r = request(vec![
        descriptor(&[("user", "lee")]),
        descriptor(&[("banned", "x")]),
    ]);
    let on = fixture_with(
        LimiterOptions {
            stop_increment_when_over_limit: true,
            ..LimiterOptions::default()
        },
        ResponseOptions::default(),
    );
    for _ in 0..3 {
        let resp = call(&on, &r).await;
        assert_eq!(resp.overall_code(), Code::OverLimit);
        assert_eq!(
            summary(&resp.statuses[0]),
            (Code::Ok, 3, Some(3)),
            "the user's budget is not consumed"
        );
    }
    let off = fixture();
    call(&off, &r).await;
    let resp = call(&off, &r).await;
    assert_eq!(
        summary(&resp.statuses[0]),
        (Code::Ok, 1, Some(3)),
        "by default it is"
    );
}

#[tokio::test(start_paused = true)]
async fn a_shadow_rule_over_its_limit_does_not_stop_the_others_counting() {
    let on = fixture_with(
        LimiterOptions {
            stop_increment_when_over_limit: true,
            ..LimiterOptions::default()
        },
        ResponseOptions::default(),
    );
    let r = request(vec![
        descriptor(&[("trial", "t")]),
        descriptor(&[("user", "mo")]),
    ]);
    call(&on, &r).await;
    let resp = call(&on, &r).await;
    assert_eq!(
        resp.overall_code(),
        Code::Ok,
        "the trial rule is over, but in shadow mode"
    );
    assert_eq!(
        resp.statuses[1].limit_remaining, 1,
        "the user was counted both times"
    );
}

const SEVERAL: &str = r#"
domain: multi
descriptors:
  - key: api
    rate_limits:
      - {name: per_minute, unit: minute, requests_per_unit: 2}
      - {name: per_hour, unit: hour, requests_per_unit: 3}
  - key: vip
    rate_limit: {name: vip, unit: hour, requests_per_unit: 100, replaces: [{name: per_minute}]}
"#;

fn several() -> (RateLimiter, Arc<MemoryStore>) {
    let clock = Clock::anchored(Duration::from_secs(NOW));
    let store = Arc::new(MemoryStore::new(100, clock.clone()));
    let rules = Rules::new(load_files(&[("multi.yaml".into(), SEVERAL.into())], false).unwrap());
    let limiter = Limiter::new(
        rules,
        store.clone(),
        CacheKey::default(),
        clock,
        LimiterOptions::default(),
    );
    (
        RateLimiter::new(
            limiter,
            RequestLimits::default(),
            ResponseOptions::default(),
        ),
        store,
    )
}

fn multi(descriptors: Vec<RateLimitDescriptor>) -> RateLimitRequest {
    RateLimitRequest {
        domain: "multi".into(),
        descriptors,
        hits_addend: 0,
    }
}

#[tokio::test(start_paused = true)]
async fn several_limits_all_apply_and_the_most_restrictive_one_speaks() {
    let (service, _) = several();
    let name = |resp: &RateLimitResponse| {
        resp.statuses[0]
            .current_limit
            .as_ref()
            .unwrap()
            .name
            .clone()
    };
    let r = multi(vec![descriptor(&[("api", "k")])]);
    let first = service.should_rate_limit(&r).await.unwrap();
    assert_eq!(
        (first.statuses[0].limit_remaining, name(&first).as_str()),
        (1, "per_minute")
    );
    let second = service.should_rate_limit(&r).await.unwrap();
    assert_eq!(
        (second.statuses[0].limit_remaining, name(&second).as_str()),
        (0, "per_minute")
    );
    let third = service.should_rate_limit(&r).await.unwrap();
    assert_eq!(
        (third.overall_code(), name(&third).as_str()),
        (Code::OverLimit, "per_minute")
    );
    tokio::time::advance(Duration::from_secs(60)).await;
    let fourth = service.should_rate_limit(&r).await.unwrap();
    assert_eq!(
        fourth.overall_code(),
        Code::OverLimit,
        "a new minute, but the hour is used up (3 of 3)"
    );
    assert_eq!(name(&fourth), "per_hour");
}

#[tokio::test(start_paused = true)]
async fn a_replaced_sibling_does_not_move_the_other_limits_key() {
    let (service, store) = several();
    // per_minute is replaced by vip: only per_hour counts, under its own key (index 1).
    let r = multi(vec![
        descriptor(&[("api", "k")]),
        descriptor(&[("vip", "v")]),
    ]);
    for remaining in [2, 1, 0] {
        let resp = service.should_rate_limit(&r).await.unwrap();
        assert_eq!(resp.statuses[0].limit_remaining, remaining);
        assert_eq!(
            resp.statuses[0].current_limit.as_ref().unwrap().name,
            "per_hour"
        );
    }
    let hour_start = NOW / 3_600 * 3_600;
    let check = floodgate_server::store::Check {
        key: format!("multi_api_k_{hour_start}_1"),
        hits: 0,
        limit: floodgate_server::store::Limit::FixedWindow {
            limit: 3,
            period_ms: 3_600_000.0,
            reset_after: Duration::from_secs(60),
        },
        veto: true,
    };
    assert_eq!(
        store.apply_one(&check).remaining,
        0,
        "per_hour counted under the key of list index 1"
    );
}

/// A store that never answers (a frozen Redis without resilience).
#[derive(Debug)]
struct Frozen;

impl floodgate_server::store::CounterStore for Frozen {
    fn apply<'a>(
        &'a self,
        _: &'a [floodgate_server::store::Check],
        _: floodgate_server::store::CallOptions,
    ) -> floodgate_server::store::StoreFuture<'a, floodgate_server::store::Applied> {
        Box::pin(std::future::pending())
    }
    fn add<'a>(
        &'a self,
        _: &'a [floodgate_server::store::WindowCount],
    ) -> floodgate_server::store::StoreFuture<'a, ()> {
        Box::pin(std::future::pending())
    }
    fn reset<'a>(&'a self, _: &'a [String]) -> floodgate_server::store::StoreFuture<'a, u64> {
        Box::pin(std::future::pending())
    }
    fn ping(&self) -> floodgate_server::store::StoreFuture<'_, ()> {
        Box::pin(async { Ok(()) })
    }
    fn kind(&self) -> &'static str {
        "frozen"
    }
}

#[tokio::test(start_paused = true)]
async fn calls_past_the_in_flight_bound_are_shed_at_once() {
    let clock = Clock::anchored(Duration::from_secs(NOW));
    let rules = Rules::new(load_files(&[("edge.yaml".into(), RULES.into())], false).unwrap());
    let limiter = Limiter::new(
        rules,
        Arc::new(Frozen),
        CacheKey::new("fg:"),
        clock,
        LimiterOptions::default(),
    );
    let service = RateLimiter::new(
        limiter,
        RequestLimits::default(),
        ResponseOptions::default(),
    )
    .with_max_in_flight(2);
    let req = request(vec![descriptor(&[("user", "alice")])]);
    let stuck: Vec<_> = (0..2)
        .map(|_| {
            let (service, req) = (service.clone(), req.clone());
            tokio::spawn(async move { service.should_rate_limit(&req).await })
        })
        .collect();
    tokio::task::yield_now().await;
    let shed = service.should_rate_limit(&req).await.unwrap_err();
    let status = tonic::Status::from(shed);
    assert_eq!(status.code(), tonic::Code::ResourceExhausted);
    assert!(
        status.message().contains("overloaded"),
        "{}",
        status.message()
    );
    for task in stuck {
        assert!(!task.is_finished());
        task.abort();
    }
}
