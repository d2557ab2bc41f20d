//! One fixture file per rules error (envoyproxy/ratelimit's §1.2 list), each
//! asserted with its exact message, through the library and through
//! `floodgate check`.

#![allow(clippy::unwrap_used)] // Tests: a failed unwrap is a failed test.

use std::path::{Path, PathBuf};
use std::process::Command;

use floodgate_server::rules::load_paths;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/rules")
}

/// Fixture file → expected message. `…` at the end means "starts with"
/// (the YAML parser's own text follows).
const INVALID: &[(&str, &str)] = &[
    ("bad_yaml.yaml", "error loading config file: …"),
    (
        "non_string_key.yaml",
        "config error, key is not of type string: 0.25",
    ),
    ("unknown_key.yaml", "config error, unknown key 'ratelimit'"),
    ("misplaced_key.yaml", "config error, unknown key 'unit'"),
    (
        "list_not_map.yaml",
        "config error, yaml file contains list of type other than map: a",
    ),
    ("float_value.yaml", "error checking config"),
    ("empty_domain.yaml", "config file cannot have empty domain"),
    ("empty_file.yaml", "config file cannot have empty domain"),
    ("empty_key.yaml", "descriptor has empty key"),
    (
        "duplicate_key.yaml",
        "duplicate descriptor composite key 'duplicate_key.key1_value1'",
    ),
    (
        "duplicate_nested_key.yaml",
        "duplicate descriptor composite key 'duplicate_nested_key.key1.key2'",
    ),
    ("bad_unit.yaml", "invalid rate limit unit 'fortnight'"),
    ("missing_unit.yaml", "invalid rate limit unit ''"),
    ("unknown_unit.yaml", "invalid rate limit unit 'UNKNOWN'"),
    (
        "unlimited_with_unit.yaml",
        "should not specify rate limit unit when unlimited",
    ),
    (
        "empty_replaces.yaml",
        "should not have an empty replaces entry",
    ),
    (
        "self_replaces.yaml",
        "replaces should not contain name of same descriptor",
    ),
    (
        "share_threshold_without_wildcard.yaml",
        "share_threshold can only be used with wildcard values (containing '*'), but found key 'files_plain'",
    ),
    (
        "bad_metadata.yaml",
        "error parsing metadata: metadata must be a map",
    ),
    ("negative_requests.yaml", "error loading config file: …"),
    ("too_many_requests.yaml", "error loading config file: …"),
];

fn assert_message(file: &Path, actual: &str, expected: &str) {
    let expected = format!("{}: {expected}", file.display());
    match expected.strip_suffix('…') {
        Some(prefix) => assert!(
            actual.starts_with(prefix),
            "{file:?}: got {actual:?}, want {prefix:?}…"
        ),
        None => assert_eq!(actual, expected, "{file:?}"),
    }
}

#[test]
fn every_invalid_fixture_reports_its_exact_message() {
    let dir = fixtures().join("invalid");
    for (name, expected) in INVALID {
        let file = dir.join(name);
        let errors = load_paths(std::slice::from_ref(&file), false).expect_err(name);
        assert_eq!(
            errors.len(),
            1,
            "{name}: exactly one error expected, got {errors:?}"
        );
        assert_message(&file, &errors[0].to_string(), expected);
    }
}

#[test]
fn every_fixture_has_an_expectation() {
    let listed: Vec<&str> = INVALID.iter().map(|(n, _)| *n).collect();
    for entry in std::fs::read_dir(fixtures().join("invalid")).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        if name.ends_with(".yaml") {
            assert!(
                listed.contains(&name.as_str()),
                "{name} has no expected message"
            );
        }
    }
}

#[test]
fn a_domain_in_two_files_is_an_error_unless_merged() {
    let dir = fixtures().join("invalid/duplicate_domain");
    let errors = load_paths(std::slice::from_ref(&dir), false).unwrap_err();
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_message(
        &dir.join("b.yaml"),
        &errors[0].to_string(),
        "duplicate domain 'shared' in config file",
    );
    let merged = load_paths(&[dir], true).expect("merge mode accepts it");
    let domain = merged.domain("shared").unwrap();
    assert!(domain.find([("a", "x")]).is_some() && domain.find([("b", "x")]).is_some());
}

#[test]
fn the_valid_fixture_loads_every_field() {
    let set = load_paths(&[fixtures().join("valid")], false).unwrap();
    assert_eq!(set.len(), 1, "only the first YAML document counts");
    assert!(set.domain("second_document_is_ignored").is_none());
    let rlconfig = set.describe();
    assert!(
        rlconfig.contains("all_fields.user: unit=MINUTE requests_per_unit=10 name=per_user"),
        "{rlconfig}"
    );
    assert!(
        rlconfig.contains("all_fields.tenant_404.path.method_GET: unit=YEAR requests_per_unit=1"),
        "{rlconfig}"
    );
    assert!(
        rlconfig
            .contains("all_fields.user_bot-*: unit=SECOND requests_per_unit=1, shadow_mode: true"),
        "{rlconfig}"
    );
}

#[test]
fn floodgate_check_prints_every_error_and_fails() {
    let dir = fixtures().join("invalid");
    let out = Command::new(env!("CARGO_BIN_EXE_floodgate"))
        .arg("check")
        .arg(&dir)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8(out.stderr).unwrap();
    let lines: Vec<&str> = stderr.lines().collect();
    for (name, expected) in INVALID {
        let file = dir.join(name);
        let want = format!("{}: {expected}", file.display());
        let found = match want.strip_suffix('…') {
            Some(prefix) => lines.iter().any(|l| l.starts_with(prefix)),
            None => lines.contains(&want.as_str()),
        };
        assert!(found, "missing {want:?} in:\n{stderr}");
    }
    assert!(
        stderr.contains(&format!("{} error(s)", INVALID.len())),
        "{stderr}"
    );
    assert!(
        stderr.contains("    at descriptors[0].rate_limit.unit"),
        "errors name the YAML path:\n{stderr}"
    );
}

#[test]
fn floodgate_check_passes_valid_rules() {
    let out = Command::new(env!("CARGO_BIN_EXE_floodgate"))
        .arg("check")
        .arg(fixtures().join("valid"))
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/rules"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8(out.stdout).unwrap(), "OK: 2 domain(s)\n");
}
