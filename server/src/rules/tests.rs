//! Matching and loading, on small inline rule sets.

use super::*;

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
    match node?.rate_limit.as_ref()?.allowance {
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
        parent.rate_limit.is_none(),
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
    assert!(node.rate_limit.is_none());
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
