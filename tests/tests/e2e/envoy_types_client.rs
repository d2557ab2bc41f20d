//! Wire compatibility with Envoy's own protos: the server is called through the
//! `envoy-types` crate's generated client (compiled from upstream Envoy's
//! `rls.proto`, not from this repository's `proto/`), and every field the
//! Envoy ratelimit filter reads comes back as Envoy would decode it: codes,
//! `current_limit`, `limit_remaining`, `duration_until_reset`, the
//! per-descriptor `hits_addend` wrapper and the `INVALID_ARGUMENT` status.

#![allow(clippy::unwrap_used)] // Tests: a failed unwrap is a failed test.

use envoy_types::pb::envoy::extensions::common::ratelimit::v3::RateLimitDescriptor;
use envoy_types::pb::envoy::extensions::common::ratelimit::v3::rate_limit_descriptor::Entry;
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_response::rate_limit::Unit;
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_response::{Code, DescriptorStatus};
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_service_client::RateLimitServiceClient;
use envoy_types::pb::envoy::service::ratelimit::v3::{RateLimitRequest, RateLimitResponse};
use envoy_types::pb::google::protobuf::UInt64Value;
use floodgate_e2e::{TestServer, config_with_rules, rules_dir};
use tonic::transport::Channel;

const RULES: &str = "\
domain: edge
descriptors:
  - key: user
    rate_limit: {unit: hour, requests_per_unit: 2}
  - key: tenant
    rate_limit: {unit: hour, requests_per_unit: 10}
";

fn descriptor(key: &str, value: &str, hits_addend: Option<u64>) -> RateLimitDescriptor {
    RateLimitDescriptor {
        entries: vec![Entry {
            key: key.into(),
            value: value.into(),
        }],
        hits_addend: hits_addend.map(|value| UInt64Value { value }),
        ..RateLimitDescriptor::default()
    }
}

fn request(
    domain: &str,
    descriptors: Vec<RateLimitDescriptor>,
    hits_addend: u32,
) -> RateLimitRequest {
    RateLimitRequest {
        domain: domain.into(),
        descriptors,
        hits_addend,
    }
}

async fn call(
    client: &mut RateLimitServiceClient<Channel>,
    req: RateLimitRequest,
) -> RateLimitResponse {
    client
        .should_rate_limit(req)
        .await
        .expect("ShouldRateLimit succeeds")
        .into_inner()
}

fn only_status(resp: &RateLimitResponse) -> &DescriptorStatus {
    assert_eq!(
        resp.statuses.len(),
        1,
        "one status per descriptor: {resp:?}"
    );
    &resp.statuses[0]
}

async fn connect(server: &TestServer) -> RateLimitServiceClient<Channel> {
    RateLimitServiceClient::connect(format!("http://{}", server.grpc_addr))
        .await
        .expect("envoy-types client connects")
}

#[tokio::test]
async fn envoy_types_client_sees_ok_ok_over_limit() {
    let rules = rules_dir(&[("edge.yaml", RULES)]);
    let server = TestServer::start(config_with_rules(rules.path())).await;
    let mut client = connect(&server).await;

    let mut seen = Vec::new();
    for _ in 0..3 {
        let resp = call(
            &mut client,
            request("edge", vec![descriptor("user", "alice", None)], 0),
        )
        .await;
        let status = only_status(&resp).clone();
        assert_eq!(
            resp.overall_code(),
            status.code(),
            "overall code follows the only descriptor: {resp:?}"
        );

        let limit = status
            .current_limit
            .as_ref()
            .expect("current_limit is set for a matched descriptor");
        assert_eq!(limit.requests_per_unit, 2, "{resp:?}");
        assert_eq!(limit.unit(), Unit::Hour, "{resp:?}");

        let reset = status
            .duration_until_reset
            .expect("duration_until_reset is set for a matched descriptor");
        assert!(
            reset.seconds >= 0 && reset.nanos >= 0,
            "non-negative reset: {reset:?}"
        );
        assert!(
            reset.seconds > 0 || reset.nanos > 0,
            "reset is in the future: {reset:?}"
        );
        assert!(
            reset.seconds < 3600 || (reset.seconds == 3600 && reset.nanos == 0),
            "an hour window resets within 3600 s: {reset:?}"
        );

        seen.push((resp.overall_code(), status.limit_remaining));
    }
    assert_eq!(
        seen,
        vec![(Code::Ok, 1), (Code::Ok, 0), (Code::OverLimit, 0)]
    );

    // A different value of the same key has its own counter.
    let resp = call(
        &mut client,
        request("edge", vec![descriptor("user", "bob", None)], 0),
    )
    .await;
    assert_eq!(resp.overall_code(), Code::Ok, "{resp:?}");
    assert_eq!(only_status(&resp).limit_remaining, 1, "{resp:?}");

    // An unknown descriptor is allowed and carries no limit.
    let resp = call(
        &mut client,
        request("edge", vec![descriptor("nobody", "x", None)], 0),
    )
    .await;
    assert_eq!(resp.overall_code(), Code::Ok, "{resp:?}");
    let status = only_status(&resp);
    assert_eq!(status.code(), Code::Ok, "{resp:?}");
    assert!(
        status.current_limit.is_none(),
        "no limit for an unknown descriptor: {resp:?}"
    );

    server.stop().await.expect("server stops cleanly");
}

#[tokio::test]
async fn envoy_types_client_hits_addend() {
    let rules = rules_dir(&[("edge.yaml", RULES)]);
    let server = TestServer::start(config_with_rules(rules.path())).await;
    let mut client = connect(&server).await;

    // The descriptor's UInt64Value wins over the request-level hits_addend.
    let resp = call(
        &mut client,
        request("edge", vec![descriptor("tenant", "acme", Some(3))], 5),
    )
    .await;
    assert_eq!(resp.overall_code(), Code::Ok, "{resp:?}");
    assert_eq!(only_status(&resp).limit_remaining, 7, "10 - 3: {resp:?}");

    // Without the wrapper, the request-level hits_addend applies.
    let resp = call(
        &mut client,
        request("edge", vec![descriptor("tenant", "acme", None)], 5),
    )
    .await;
    assert_eq!(resp.overall_code(), Code::Ok, "{resp:?}");
    assert_eq!(
        only_status(&resp).limit_remaining,
        2,
        "10 - 3 - 5: {resp:?}"
    );

    // 8 + 3 exceeds 10.
    let resp = call(
        &mut client,
        request("edge", vec![descriptor("tenant", "acme", Some(3))], 0),
    )
    .await;
    assert_eq!(resp.overall_code(), Code::OverLimit, "{resp:?}");
    assert_eq!(only_status(&resp).limit_remaining, 0, "{resp:?}");

    // Per-descriptor addends are independent within one request.
    let resp = call(
        &mut client,
        request(
            "edge",
            vec![
                descriptor("tenant", "one", Some(4)),
                descriptor("tenant", "two", None),
            ],
            0,
        ),
    )
    .await;
    assert_eq!(resp.overall_code(), Code::Ok, "{resp:?}");
    let remaining: Vec<u32> = resp.statuses.iter().map(|s| s.limit_remaining).collect();
    assert_eq!(remaining, vec![6, 9], "statuses in request order: {resp:?}");

    server.stop().await.expect("server stops cleanly");
}

#[tokio::test]
async fn envoy_types_client_empty_domain_is_invalid_argument() {
    let rules = rules_dir(&[("edge.yaml", RULES)]);
    let server = TestServer::start(config_with_rules(rules.path())).await;
    let mut client = connect(&server).await;

    let err = client
        .should_rate_limit(request("", vec![descriptor("user", "alice", None)], 0))
        .await
        .expect_err("an empty domain is refused");
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
    assert_eq!(
        err.message(),
        "rate limit domain must not be empty",
        "{err:?}"
    );

    server.stop().await.expect("server stops cleanly");
}
