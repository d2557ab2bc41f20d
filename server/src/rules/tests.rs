//! Matching and loading, on small inline rule sets.

use super::*;
use crate::model::algorithm::Algorithm;
use std::time::Duration;

fn set(yaml: &str) -> RuleSet {
    load_files(&[("test.yaml".into(), yaml.into())], false).unwrap()
}

fn found<'r>(set: &'r RuleSet, entries: &[(&str, &str)]) -> Option<&'r Node> {
    set.domain("d")?
        .find(entries.iter().copied())
        .map(|m| m.node)
}

const TREE: &str = r#"
domain: d
descriptors:
  - key: k
    value: exact
    rate_limit: {unit: second, requests_per_unit: 1}
  - key: k
    value: "ex*"
    rate_limit: {unit: second, requests_per_unit: 2}
  - key: k
    value: "e*"
    rate_limit: {unit: second, requests_per_unit: 3}
  - key: k
    rate_limit: {unit: second, requests_per_unit: 4}
  - key: parent
    descriptors:
      - key: child
        rate_limit: {unit: minute, requests_per_unit: 5}
"#;

fn limit_of(node: Option<&Node>) -> Option<u32> {
    match node?.rate_limits.first()?.allowance {
        Allowance::PerUnit {
            requests_per_unit, ..
        } => Some(requests_per_unit),
        Allowance::Unlimited => None,
    }
}

#[test]
fn exact_then_first_wildcard_then_default() {
    let s = set(TREE);
    assert_eq!(limit_of(found(&s, &[("k", "exact")])), Some(1));
    assert_eq!(
        limit_of(found(&s, &[("k", "extra")])),
        Some(2),
        "first wildcard in config order"
    );
    assert_eq!(limit_of(found(&s, &[("k", "else")])), Some(3));
    assert_eq!(
        limit_of(found(&s, &[("k", "other")])),
        Some(4),
        "key-only default"
    );
    assert!(found(&s, &[("unknown", "x")]).is_none());
}

#[test]
fn a_limit_applies_only_at_the_depth_of_the_last_entry() {
    let s = set(TREE);
    assert_eq!(
        limit_of(found(&s, &[("parent", "p"), ("child", "c")])),
        Some(5)
    );
    let parent = found(&s, &[("parent", "p")]).expect("the parent node matches");
    assert!(
        parent.rate_limits.is_empty(),
        "the limit is deeper than the request"
    );
    assert!(
        found(&s, &[("k", "other"), ("extra", "x")]).is_none(),
        "the request is deeper than the rules"
    );
}

#[test]
fn keys_and_values_do_not_collide_through_underscores() {
    let s = set(
        "domain: d\ndescriptors:\n  - key: a_b\n    value: c\n    rate_limit: {unit: second, requests_per_unit: 1}\n",
    );
    assert!(found(&s, &[("a_b", "c")]).is_some());
    assert!(found(&s, &[("a", "b_c")]).is_none());
}

#[test]
fn share_threshold_reports_the_pattern_per_entry() {
    let s = set(
        "domain: d\ndescriptors:\n  - key: tenant\n    descriptors:\n      - key: files\n        value: \"/files/*\"\n        share_threshold: true\n        rate_limit: {unit: second, requests_per_unit: 1}\n",
    );
    let m = s
        .domain("d")
        .unwrap()
        .find([("tenant", "acme"), ("files", "/files/a")])
        .unwrap();
    assert_eq!(m.shared, vec![(1, "/files/*")]);
}

#[test]
fn allow_list_entries_match_without_a_limit() {
    let s = set("domain: d\ndescriptors:\n  - key: internal\n");
    let node = found(&s, &[("internal", "x")]).expect("matches");
    assert!(node.rate_limits.is_empty());
}

#[test]
fn one_file_reports_all_its_errors() {
    let errors = load_files(
        &[(
            "many.yaml".into(),
            "domain: d\ndescriptors:\n  - key: \"\"\n  - key: a\n    rate_limit: {unit: nope}\n  - key: b\n    bogus: 1\n".into(),
        )],
        false,
    )
    .unwrap_err();
    let messages: Vec<String> = errors.iter().map(ToString::to_string).collect();
    assert_eq!(
        messages,
        [
            "many.yaml: descriptor has empty key",
            "many.yaml: invalid rate limit unit 'nope'",
            "many.yaml: config error, unknown key 'bogus'",
        ]
    );
}

#[test]
fn units_parse_case_insensitively_and_have_reference_windows() {
    assert_eq!(Unit::parse("minute"), Some(Unit::Minute));
    assert_eq!(
        Unit::parse("WEEK").map(Unit::window),
        Some(Duration::from_secs(604_800))
    );
    assert_eq!(
        Unit::parse("Month").map(Unit::window),
        Some(Duration::from_secs(2_592_000))
    );
    assert_eq!(Unit::parse("unknown"), None);
}

#[test]
fn rules_can_be_replaced_whole() {
    let rules = Rules::new(set(TREE));
    let before = rules.current();
    rules.replace(RuleSet::default());
    assert!(rules.current().is_empty());
    assert!(
        before.domain("d").is_some(),
        "a request holding the old set keeps it"
    );
}

#[test]
fn algorithms_multipliers_bursts_and_several_limits_load() {
    let s = set(r#"
domain: d
descriptors:
  - key: api
    rate_limits:
      - {name: burst, unit: second, requests_per_unit: 20, algorithm: token_bucket, burst: 40}
      - {name: daily, unit: day, requests_per_unit: 10000}
  - key: slow
    rate_limit: {unit: minute, unit_multiplier: 5, requests_per_unit: 100, algorithm: sliding_window}
  - key: smooth
    rate_limit: {unit: second, requests_per_unit: 10, algorithm: gcra}
"#);
    let api = found(&s, &[("api", "x")]).unwrap();
    assert_eq!(api.rate_limits.len(), 2);
    let Allowance::PerUnit {
        algorithm, burst, ..
    } = api.rate_limits[0].allowance
    else {
        panic!()
    };
    assert_eq!((algorithm, burst), (Algorithm::TokenBucket, Some(40)));
    let slow = found(&s, &[("slow", "x")]).unwrap();
    let Allowance::PerUnit {
        unit_multiplier,
        algorithm,
        ..
    } = slow.rate_limits[0].allowance
    else {
        panic!()
    };
    assert_eq!((unit_multiplier, algorithm), (5, Algorithm::SlidingWindow));
    let rlconfig = s.describe();
    assert!(
        rlconfig.contains(
            "d.api: unit=SECOND requests_per_unit=20 algorithm=token_bucket burst=40 name=burst"
        ),
        "{rlconfig}"
    );
    assert!(
        rlconfig.contains(
            "d.slow: unit=MINUTE requests_per_unit=100 unit_multiplier=5 algorithm=sliding_window"
        ),
        "{rlconfig}"
    );
}

#[test]
fn algorithm_errors_follow_the_reference_style() {
    let cases = [
        (
            "rate_limit: {unit: second, requests_per_unit: 1, algorithm: leaky}",
            "invalid rate limit algorithm 'leaky' (expected fixed_window, sliding_window, token_bucket or gcra)",
        ),
        (
            "rate_limit: {unit: second, requests_per_unit: 1, burst: 5}",
            "burst can only be used with the token_bucket and gcra algorithms, but found algorithm 'fixed_window'",
        ),
        (
            "rate_limit: {unit: second, requests_per_unit: 1, algorithm: sliding_window, burst: 5}",
            "burst can only be used with the token_bucket and gcra algorithms, but found algorithm 'sliding_window'",
        ),
        (
            "rate_limit: {unit: second, requests_per_unit: 1, algorithm: gcra, burst: 0}",
            "burst must be at least 1",
        ),
        (
            "rate_limit: {unit: second, requests_per_unit: 1, unit_multiplier: 0}",
            "unit_multiplier must be at least 1",
        ),
        (
            "rate_limit: {unit: second, requests_per_unit: 1}\n    rate_limits: [{unit: day, requests_per_unit: 9}]",
            "should not specify both rate_limit and rate_limits",
        ),
        (
            "rate_limits: [{unlimited: true}, {unit: day, requests_per_unit: 9}]",
            "unlimited cannot be combined with other limits in rate_limits",
        ),
        (
            "rate_limit: {unit: year, requests_per_unit: 1, unit_multiplier: 101}",
            "unit_multiplier makes the period longer than 100 years",
        ),
    ];
    for (limit, message) in cases {
        let yaml = format!("domain: d\ndescriptors:\n  - key: k\n    {limit}\n");
        let errors = load_files(&[("algo.yaml".into(), yaml)], false).unwrap_err();
        let messages: Vec<String> = errors.iter().map(ToString::to_string).collect();
        assert_eq!(messages, [format!("algo.yaml: {message}")], "{limit}");
    }
}

#[test]
fn a_domain_may_set_its_own_failure_policy() {
    use crate::model::FailurePolicy;
    let rules = set("domain: payments\non_store_failure: deny\ndescriptors: []\n");
    let domain = rules.domain("payments").unwrap();
    assert_eq!(domain.on_store_failure(), Some(FailurePolicy::Deny));
    let rules = set("domain: edge\ndescriptors: []\n");
    assert_eq!(rules.domain("edge").unwrap().on_store_failure(), None);

    let errors = load_files(
        &[(
            "bad.yaml".into(),
            "domain: x\non_store_failure: panic\n".into(),
        )],
        false,
    )
    .unwrap_err();
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0].file, "bad.yaml");
    assert!(
        errors[0]
            .to_string()
            .contains("on_store_failure must be fallback, allow or deny, not 'panic'"),
        "{}",
        errors[0]
    );

    let errors = load_files(
        &[
            (
                "a.yaml".into(),
                "domain: x\non_store_failure: allow\n".into(),
            ),
            (
                "b.yaml".into(),
                "domain: x\non_store_failure: deny\n".into(),
            ),
        ],
        true,
    )
    .unwrap_err();
    assert!(
        errors[0].to_string().contains("another on_store_failure"),
        "{}",
        errors[0]
    );
}

const CAPACITY: &str = r#"
domain: d
descriptors:
  - key: service
    value: checkout
    capacity:
      requests_per_unit: 100
      unit: second
      share_by: client
      weights: {partner: 2, "42": 0.5}
      priority_by: priority
      classes:
        - name: critical
        - name: default
          max_share: 0.9
        - name: sheddable
          max_share: 0.7
      default_class: default
    descriptors:
      - key: path
        rate_limit: {unit: second, requests_per_unit: 5}
"#;

#[test]
fn a_capacity_rule_loads_and_matches_with_its_client_and_priority_entries() {
    let set = set(CAPACITY);
    let domain = set.domain("d").unwrap();
    let m = domain
        .find([
            ("service", "checkout"),
            ("priority", "critical"),
            ("client", "alice"),
        ])
        .unwrap();
    let rule = m.node.capacity.as_ref().unwrap();
    assert_eq!(
        m.capacity,
        Some(CapacityMatch {
            depth: 1,
            client_at: Some(2),
            class_at: Some(1),
        })
    );
    assert_eq!(rule.limits.total, 100);
    assert_eq!(rule.limits.class_max_share, [1.0, 0.9, 0.7]);
    assert_eq!(rule.limits.guaranteed_share, 0.8, "the default");
    assert_eq!(rule.class_of(Some("sheddable")), 2);
    assert_eq!(rule.class_of(Some("gold")), 1, "unknown: the default class");
    assert_eq!(rule.class_of(None), 1);
    assert_eq!(
        (rule.weight_of("partner"), rule.weight_of("42")),
        (2.0, 0.5)
    );
    assert_eq!(rule.weight_of("anyone"), 1.0);
    // Without a client entry: still the rule (one anonymous client).
    let alone = domain.find([("service", "checkout")]).unwrap();
    assert_eq!(alone.capacity.unwrap().client_at, None);
    // Another key walks on to the children, as any descriptor.
    let child = domain
        .find([("service", "checkout"), ("path", "/pay")])
        .unwrap();
    assert!(child.capacity.is_none());
    assert_eq!(limit_of(Some(child.node)), Some(5));
    // A repeated client entry is not a capacity call (and matches nothing).
    assert!(
        domain
            .find([("service", "checkout"), ("client", "a"), ("client", "b")])
            .is_none()
    );
    assert!(
        set.describe()
            .contains("d.service_checkout: capacity requests_per_unit=100 unit=SECOND share_by=client guaranteed_share=0.8 priority_by=priority classes=critical:1,default:0.9,sheddable:0.7")
    );
}

#[test]
fn a_bad_capacity_rule_is_reported_with_its_path() {
    let cases = [
        (
            "{requests_per_unit: 10, unit: second}",
            "capacity needs share_by (the descriptor key whose value names the client)",
            "descriptors[0].capacity.share_by",
        ),
        (
            "{unit: second, share_by: c}",
            "capacity needs requests_per_unit (what the service takes per unit)",
            "descriptors[0].capacity.requests_per_unit",
        ),
        (
            "{requests_per_unit: 10, unit: fortnight, share_by: c}",
            "invalid rate limit unit 'fortnight'",
            "descriptors[0].capacity.unit",
        ),
        (
            "{requests_per_unit: 10, unit: second, share_by: c, shares: 3}",
            "config error, unknown key 'shares'",
            "descriptors[0].capacity.shares",
        ),
        (
            "{requests_per_unit: 10, unit: second, share_by: c, weights: {a: 0}}",
            "the weight of client 'a' must be a number above 0 (up to 1000000)",
            "descriptors[0].capacity.weights.a",
        ),
        (
            "{requests_per_unit: 10, unit: second, share_by: c, priority_by: p}",
            "priority_by needs classes (from the most important to the least)",
            "descriptors[0].capacity.classes",
        ),
        (
            "{requests_per_unit: 10, unit: second, share_by: c, priority_by: p, classes: [{name: a, max_share: 0.5}, {name: b, max_share: 0.9}]}",
            "class 'b' has a larger max_share than the class before it: classes go from the most important to the least",
            "descriptors[0].capacity.classes[1].max_share",
        ),
        (
            "{requests_per_unit: 10, unit: second, share_by: c, priority_by: p, classes: [{name: a, max_share: 1.5}]}",
            "max_share must be a number above 0 and at most 1 (the share of requests_per_unit this class may fill)",
            "descriptors[0].capacity.classes[0].max_share",
        ),
        (
            "{requests_per_unit: 10, unit: second, share_by: c, priority_by: p, classes: [{name: a}], default_class: z}",
            "default_class 'z' is not one of the classes",
            "descriptors[0].capacity.default_class",
        ),
        (
            "{requests_per_unit: 10, unit: second, share_by: c, priority_by: c, classes: [{name: a}]}",
            "priority_by and share_by must be different keys",
            "descriptors[0].capacity.priority_by",
        ),
        (
            "{requests_per_unit: 10, unit: second, share_by: c, max_clients: 0}",
            "max_clients must be from 1 to 100000",
            "descriptors[0].capacity.max_clients",
        ),
        (
            "{requests_per_unit: 10, unit: second, share_by: c, guaranteed_share: 1.2}",
            "guaranteed_share must be a number from 0 to 1 (the fraction of requests_per_unit split among the active clients)",
            "descriptors[0].capacity.guaranteed_share",
        ),
        (
            "{requests_per_unit: 10, unit: second, share_by: c, guaranteed_share: half}",
            "guaranteed_share must be a number from 0 to 1 (the fraction of requests_per_unit split among the active clients)",
            "descriptors[0].capacity.guaranteed_share",
        ),
    ];
    for (block, message, path) in cases {
        let yaml = format!("domain: d\ndescriptors:\n  - key: s\n    capacity: {block}\n");
        let errors = load_files(&[("cap.yaml".into(), yaml)], false).unwrap_err();
        assert_eq!(
            errors
                .iter()
                .map(|e| (e.to_string(), e.path.as_str()))
                .collect::<Vec<_>>(),
            [(format!("cap.yaml: {message}"), path)],
            "{block}"
        );
    }
    let both = "domain: d\ndescriptors:\n  - key: s\n    rate_limit: {unit: second, requests_per_unit: 1}\n    capacity: {requests_per_unit: 10, unit: second, share_by: c}\n";
    let errors = load_files(&[("cap.yaml".into(), both.into())], false).unwrap_err();
    assert_eq!(
        errors[0].message,
        "capacity cannot be combined with rate_limit or rate_limits on the same descriptor (put them on another descriptor)"
    );
}

/// A rules file of `n` descriptors: 9 YAML nodes each, 5 more for the root.
fn many_descriptors(n: usize) -> String {
    let mut yaml = String::from("domain: d\ndescriptors:\n");
    for i in 0..n {
        yaml.push_str(&format!(
            "  - key: k{i}\n    rate_limit: {{unit: hour, requests_per_unit: 1}}\n"
        ));
    }
    yaml
}

#[test]
fn a_big_rules_file_loads_and_one_over_the_limit_says_what_to_do() {
    // 30,000 descriptors (270,005 nodes, over the former limit) load.
    let set = load_files(&[("big.yaml".into(), many_descriptors(30_000))], false)
        .map_err(|e| e[0].to_string())
        .unwrap();
    assert!(found(&set, &[("k29999", "x")]).is_some());
    // 111,111 descriptors are 1,000,004 nodes: one file over the limit.
    let errors = load_files(&[("huge.yaml".into(), many_descriptors(111_111))], false).unwrap_err();
    assert_eq!(
        errors.iter().map(ToString::to_string).collect::<Vec<_>>(),
        [
            "huge.yaml: too large: more than 1000000 YAML nodes (about 100000 descriptors) in one file; \
          split it into several files (files can share a domain with merge_domains)"
        ]
    );
}

#[test]
fn an_empty_rules_directory_is_refused_at_startup() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    let errors = load_paths(std::slice::from_ref(&path), false).unwrap_err();
    assert_eq!(
        errors.iter().map(ToString::to_string).collect::<Vec<_>>(),
        [format!(
            "{}: no rules files (*.yaml, *.yml) in this directory; an empty rules directory is refused",
            path.display()
        )]
    );
    // Files that are not rules (by name or dotfiles) count as none.
    std::fs::write(dir.path().join("notes.txt"), "domain: d\n").unwrap();
    std::fs::write(dir.path().join(".hidden.yaml"), "domain: d\n").unwrap();
    assert_eq!(load_paths(&[path], false).unwrap_err().len(), 1);
}

#[tokio::test]
async fn the_server_does_not_start_on_an_empty_rules_directory() {
    let dir = tempfile::tempdir().unwrap();
    let config = crate::config::Config {
        rules: dir.path().to_path_buf(),
        ..Default::default()
    };
    let err = crate::build(&config, crate::clock::Clock::System)
        .await
        .map(|_| ())
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "invalid rules:\n  {}: no rules files (*.yaml, *.yml) in this directory; an empty rules directory is refused",
            dir.path().display()
        )
    );
}
