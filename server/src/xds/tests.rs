#![allow(clippy::unwrap_used)]

use super::*;
use floodgate_proto::ratelimit::config::ratelimit::v3::{
    RateLimitDescriptor, RateLimitPolicy, RateLimitUnit,
};

fn config(name: &str, domain: &str, per_minute: u32) -> RateLimitConfig {
    RateLimitConfig {
        name: name.into(),
        domain: domain.into(),
        descriptors: vec![RateLimitDescriptor {
            key: "user".into(),
            rate_limit: Some(RateLimitPolicy {
                unit: RateLimitUnit::Minute as i32,
                requests_per_unit: per_minute,
                ..Default::default()
            }),
            ..Default::default()
        }],
    }
}

fn response(version: &str, resources: Vec<prost_types::Any>) -> DiscoveryResponse {
    DiscoveryResponse {
        version_info: version.into(),
        resources,
        type_url: RATE_LIMIT_CONFIG_TYPE_URL.into(),
        nonce: "n".into(),
        ..Default::default()
    }
}

fn any(c: &RateLimitConfig) -> prost_types::Any {
    prost_types::Any {
        type_url: RATE_LIMIT_CONFIG_TYPE_URL.into(),
        value: c.encode_to_vec(),
    }
}

#[test]
fn every_resource_is_a_file_of_the_set_and_the_source_names_the_version() {
    let r = response(
        "7",
        vec![any(&config("a", "d", 3)), any(&config("b", "e", 4))],
    );
    let set = compile(&r, false, "xds://cp:18001 node n").unwrap();
    assert_eq!(set.len(), 2);
    assert_eq!(set.source(), "xds://cp:18001 node n version 7");
    assert!(
        set.describe()
            .contains("e.user: unit=MINUTE requests_per_unit=4")
    );
}

#[test]
fn an_empty_response_is_no_rules() {
    let set = compile(&response("8", Vec::new()), false, "s").unwrap();
    assert!(set.is_empty());
}

#[test]
fn a_repeated_domain_is_refused_unless_domains_merge() {
    let r = response(
        "1",
        vec![any(&config("a", "d", 3)), any(&config("b", "d", 4))],
    );
    let errors = compile(&r, false, "s").unwrap_err();
    assert!(
        report(&errors).contains("b: duplicate domain 'd' in config file"),
        "{}",
        report(&errors)
    );
    let mut other = config("b", "d", 4);
    other.descriptors[0].key = "path".into();
    let merged = response("1", vec![any(&config("a", "d", 3)), any(&other)]);
    assert_eq!(compile(&merged, true, "s").unwrap().len(), 1);
}

#[test]
fn a_resource_of_another_type_or_that_does_not_decode_is_named() {
    let mut wrong = any(&config("a", "d", 3));
    wrong.type_url = "type.googleapis.com/envoy.config.cluster.v3.Cluster".into();
    let garbage = prost_types::Any {
        type_url: RATE_LIMIT_CONFIG_TYPE_URL.into(),
        value: vec![0xff, 0xff, 0xff],
    };
    let errors = compile(&response("1", vec![wrong, garbage]), false, "s").unwrap_err();
    let text = report(&errors);
    assert!(
        text.contains("resource 0: type \"type.googleapis.com/envoy.config.cluster.v3.Cluster\""),
        "{text}"
    );
    assert!(text.contains("resource 1: not a RateLimitConfig"), "{text}");
    assert!(text.ends_with("2 error(s)"), "{text}");
}

#[test]
fn requests_carry_the_node_the_version_and_the_nonce() {
    let settings = XdsSettings {
        server: "cp:18001".into(),
        node_id: "envoy-ratelimit".into(),
        node_metadata: vec![("zone".into(), "a".into())],
        headers: Vec::new(),
        tls: None,
        retry_initial: Duration::from_secs(1),
        retry_max: Duration::from_secs(2),
        max_message_bytes: 1 << 20,
    };
    let source = XdsRules::new(
        settings,
        Rules::new(RuleSet::default()),
        false,
        Arc::new(Metrics::default()),
    );
    let nack = source.request(
        "3",
        "n-4".into(),
        Some(RpcStatus {
            code: INVALID_ARGUMENT,
            message: "bad".into(),
            details: Vec::new(),
        }),
    );
    assert_eq!(nack.version_info, "3");
    assert_eq!(nack.response_nonce, "n-4");
    assert_eq!(nack.type_url, RATE_LIMIT_CONFIG_TYPE_URL);
    assert_eq!(nack.error_detail.unwrap().message, "bad");
    let node = nack.node.unwrap();
    assert_eq!(node.id, "envoy-ratelimit");
    assert_eq!(node.user_agent_name, "floodgate");
    assert!(node.metadata.unwrap().fields.contains_key("zone"));
}

#[test]
fn a_good_response_replaces_the_rules_and_a_bad_one_keeps_them() {
    let source = XdsRules::new(
        XdsSettings {
            server: "cp:1".into(),
            node_id: "n".into(),
            node_metadata: Vec::new(),
            headers: Vec::new(),
            tls: None,
            retry_initial: Duration::from_secs(1),
            retry_max: Duration::from_secs(1),
            max_message_bytes: 1 << 20,
        },
        Rules::new(RuleSet::default()),
        false,
        Arc::new(Metrics::default()),
    );
    source
        .apply(&response("1", vec![any(&config("a", "d", 3))]))
        .unwrap();
    let good = source.rules.current();
    assert_eq!(good.len(), 1);
    let mut bad = config("a", "d", 3);
    bad.descriptors[0].key = String::new();
    let message = source.apply(&response("2", vec![any(&bad)])).unwrap_err();
    assert!(message.starts_with("a: "), "{message}");
    assert!(
        Arc::ptr_eq(&good, &source.rules.current()),
        "the last good rules stay"
    );
    let metrics = source.metrics.render();
    assert!(
        metrics.contains("floodgate_rules_reloads_total{result=\"failure\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("\nfloodgate_rules_xds_connected 0\n"),
        "{metrics}"
    );
}
