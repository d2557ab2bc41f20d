//! The chart's Grafana dashboard and alert rules (`helm/floodgate`, README
//! "Dashboards and alerts") read only series that Floodgate really exports.
//!
//! `helm/check.py --monitoring-json` renders the chart with both on and
//! prints the dashboard and the alerts' expressions. Real servers then run
//! a scripted workload: one counting in a real `redis-server` (so the store
//! series exist), with TLS on its admin listener (the certificate series),
//! serving a rate limit, a shadow-mode rule and a capacity rule with
//! classes, answering OK, over the limit, an invalid request and an unknown
//! domain, and reloading its rules (a refused file, then a good one); and
//! one whose rules come over xDS (`floodgate_rules_xds_connected`). Every
//! PromQL expression (panel queries, template variables, alerts) is parsed
//! for its `floodgate_*` series, label matchers and `by (...)` labels, and
//! each must be in the scraped pages: a metric name that is exported, a
//! label that the metric has, and a literal label value that it takes.

#![allow(clippy::unwrap_used)] // Tests: a failed unwrap is a failed test.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use floodgate_e2e::xds::{XdsServer, per_minute};
use floodgate_e2e::{
    RedisServer, TestServer, config_with_redis, config_with_rules, http_get, metric_value, request,
    rules_dir, venv_bin, workspace_root,
};
use floodgate_proto::rate_limit_response::Code;
use floodgate_server::tls::TlsSettings;
use floodgate_server::tls::files::ListenerTls;
use serde_json::Value;
use tokio::time::Instant;

/// A limit, a shadow-mode rule and a capacity rule with two classes, small
/// enough for a handful of calls to reach each outcome.
const RULES: &str = "\
domain: mon
descriptors:
  - key: user
    rate_limit: {unit: hour, requests_per_unit: 2}
  - key: trial
    shadow_mode: true
    rate_limit: {unit: hour, requests_per_unit: 1}
  - key: service
    value: search
    capacity:
      requests_per_unit: 4
      unit: hour
      share_by: client
      priority_by: priority
      classes:
        - name: critical
        - name: sheddable
          max_share: 0.5
";

/// Labels Prometheus adds to every scraped series (the chart's selectors use them).
const TARGET_LABELS: [&str; 4] = ["namespace", "job", "pod", "instance"];

/// One `floodgate_*` selector of an expression.
#[derive(Debug)]
struct Selector {
    name: String,
    /// (label, operator, value) of each matcher.
    matchers: Vec<(String, String, String)>,
}

/// What one PromQL expression reads: its selectors and its `by (...)` labels.
#[derive(Debug, Default)]
struct Reads {
    selectors: Vec<Selector>,
    grouping: Vec<String>,
}

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == ':'
}

/// The quoted string starting at `chars[i]` (a quote): its text and the
/// index past its closing quote.
fn quoted(chars: &[char], i: usize) -> (String, usize) {
    let quote = chars[i];
    let mut text = String::new();
    let mut j = i + 1;
    while j < chars.len() && chars[j] != quote {
        if chars[j] == '\\' && j + 1 < chars.len() {
            j += 1;
        }
        text.push(chars[j]);
        j += 1;
    }
    (text, j + 1)
}

fn skip_space(chars: &[char], mut i: usize) -> usize {
    while i < chars.len() && chars[i].is_whitespace() {
        i += 1;
    }
    i
}

/// The label matchers of the `{...}` starting at `chars[i]`, and the index
/// past its `}`.
fn matchers(chars: &[char], mut i: usize) -> (Vec<(String, String, String)>, usize) {
    let mut out = Vec::new();
    i += 1;
    loop {
        i = skip_space(chars, i);
        if i >= chars.len() || chars[i] == '}' {
            return (out, i + 1);
        }
        if chars[i] == ',' {
            i += 1;
            continue;
        }
        let start = i;
        while i < chars.len() && is_ident(chars[i]) {
            i += 1;
        }
        let label: String = chars[start..i].iter().collect();
        i = skip_space(chars, i);
        let op_start = i;
        while i < chars.len() && "=!~".contains(chars[i]) {
            i += 1;
        }
        let op: String = chars[op_start..i].iter().collect();
        i = skip_space(chars, i);
        assert!(
            !label.is_empty() && !op.is_empty() && i < chars.len() && "\"'`".contains(chars[i]),
            "a matcher this test cannot read at {start} of {}",
            chars.iter().collect::<String>()
        );
        let (value, next) = quoted(chars, i);
        out.push((label, op, value));
        i = next;
    }
}

/// The labels of the `(...)` starting at `chars[i]`, and the index past it.
fn label_list(chars: &[char], i: usize) -> (Vec<String>, usize) {
    let end = (i..chars.len())
        .find(|&j| chars[j] == ')')
        .unwrap_or(chars.len());
    let text: String = chars[i + 1..end].iter().collect();
    let labels = text
        .split(',')
        .map(|l| l.trim().to_owned())
        .filter(|l| !l.is_empty())
        .collect();
    (labels, end + 1)
}

/// What a PromQL expression reads. Skips string literals, Grafana's
/// `$variables` and `[ranges]`; `floodgate_*` identifiers are metric names
/// (label names never start so), with their `{...}` matchers if any.
fn reads(expr: &str) -> Reads {
    let chars: Vec<char> = expr.chars().collect();
    let mut out = Reads::default();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if "\"'`".contains(c) {
            i = quoted(&chars, i).1;
        } else if c == '$' {
            i += 1;
            while i < chars.len() && (is_ident(chars[i]) || "{}".contains(chars[i])) {
                i += 1;
            }
        } else if c == '[' {
            i = (i..chars.len())
                .find(|&j| chars[j] == ']')
                .unwrap_or(chars.len())
                + 1;
        } else if is_ident(c) && !c.is_ascii_digit() {
            let start = i;
            while i < chars.len() && is_ident(chars[i]) {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            let next = skip_space(&chars, i);
            let opens = |open| next < chars.len() && chars[next] == open;
            if word.starts_with("floodgate_") {
                let mut selector = Selector {
                    name: word,
                    matchers: Vec::new(),
                };
                if opens('{') {
                    (selector.matchers, i) = matchers(&chars, next);
                }
                out.selectors.push(selector);
            } else if (word == "by" || word == "without") && opens('(') {
                let (labels, end) = label_list(&chars, next);
                out.grouping.extend(labels);
                i = end;
            }
        } else {
            i += 1;
        }
    }
    out
}

/// Each exported sample name with its labels and every value each takes.
type Exported = BTreeMap<String, BTreeMap<String, BTreeSet<String>>>;

/// The samples of a Prometheus text page.
fn exported(pages: &[String]) -> Exported {
    let mut out = Exported::new();
    for line in pages.iter().flat_map(|p| p.lines()) {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let chars: Vec<char> = line.chars().collect();
        let name_end = chars
            .iter()
            .position(|&c| !is_ident(c))
            .unwrap_or(chars.len());
        let name: String = chars[..name_end].iter().collect();
        let labels = out.entry(name).or_default();
        if chars.get(name_end) == Some(&'{') {
            for (label, _, value) in matchers(&chars, name_end).0 {
                labels.entry(label).or_default().insert(value);
            }
        }
    }
    out
}

/// Every PromQL expression of the rendered dashboard (panel queries and
/// template-variable queries) and alerts, as (where, expression).
fn expressions(rendered: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let dashboard = &rendered["dashboard"];
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().into_iter().flatten() {
            let title = panel["title"].as_str().unwrap();
            out.push((
                format!("panel {title:?}"),
                target["expr"].as_str().unwrap().to_owned(),
            ));
        }
    }
    for var in dashboard["templating"]["list"].as_array().unwrap() {
        if var["type"] == "query" {
            let query = var["query"]["query"].as_str().or(var["query"].as_str());
            out.push((
                format!("variable {}", var["name"]),
                query.unwrap().to_owned(),
            ));
        }
    }
    for alert in rendered["alerts"].as_array().unwrap() {
        out.push((
            format!("alert {}", alert["alert"].as_str().unwrap()),
            alert["expr"].as_str().unwrap().to_owned(),
        ));
    }
    out
}

/// What is wrong with one expression against the scraped samples.
fn problems(expr: &str, samples: &Exported) -> Vec<String> {
    let reads = reads(expr);
    let mut out = Vec::new();
    let mut labels_here = BTreeSet::new();
    for s in &reads.selectors {
        let Some(labels) = samples.get(&s.name) else {
            out.push(format!("{} is not exported", s.name));
            continue;
        };
        labels_here.extend(labels.keys().cloned());
        for (label, op, value) in &s.matchers {
            if TARGET_LABELS.contains(&label.as_str()) {
                continue;
            }
            match labels.get(label) {
                None => out.push(format!("{} has no label {label}", s.name)),
                Some(values) if op == "=" && !value.contains('$') && !values.contains(value) => {
                    out.push(format!(
                        "{} never has {label}={value:?} (only {values:?})",
                        s.name
                    ));
                }
                Some(_) => {}
            }
        }
    }
    for label in &reads.grouping {
        if !TARGET_LABELS.contains(&label.as_str()) && !labels_here.contains(label) {
            out.push(format!("by ({label}): no series it reads has that label"));
        }
    }
    out
}

/// The rendered dashboard and alerts, from the chart itself.
fn rendered_monitoring() -> Value {
    let output = std::process::Command::new(venv_bin("python"))
        .arg(workspace_root().join("helm/check.py"))
        .arg("--monitoring-json")
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "helm/check.py --monitoring-json: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

async fn scrape(server: &TestServer) -> String {
    let (status, page) = http_get(&format!("http://{}/metrics", server.http_addr)).await;
    assert_eq!(status, 200);
    page
}

/// Polls `/metrics` until `series` is at least 1.
async fn until_counted(server: &TestServer, series: &str) {
    let start = Instant::now();
    while metric_value::<u64>(&scrape(server).await, series).unwrap_or(0) < 1 {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "{series} stays 0"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The scripted workload on a server counting in Redis; its `/metrics`.
async fn redis_server_page() -> String {
    let redis = RedisServer::start();
    let rules = rules_dir(&[("mon.yaml", RULES)]);
    let pki = tempfile::tempdir().unwrap();
    floodgate_e2e::pki::write_test_pki(pki.path()).unwrap();
    let mut config = config_with_redis(rules.path(), redis.url(), Duration::from_millis(500));
    config.rules_reload_interval = Some(Duration::from_millis(100));
    config.tls = TlsSettings {
        admin: Some(ListenerTls {
            listener: "admin",
            cert_file: pki.path().join("server.pem"),
            key_file: pki.path().join("server.key"),
            client: None,
        }),
        ..TlsSettings::default()
    };
    let server = TestServer::start(config).await;
    let mut client = server.client().await;
    let mut codes = Vec::new();
    for _ in 0..3 {
        let r = client.should_rate_limit(request("mon", &[("user", "alice")]));
        codes.push(r.await.unwrap().into_inner().overall_code());
    }
    assert_eq!(codes, [Code::Ok, Code::Ok, Code::OverLimit]);
    for _ in 0..2 {
        let r = client.should_rate_limit(request("mon", &[("trial", "t")]));
        assert_eq!(r.await.unwrap().into_inner().overall_code(), Code::Ok);
    }
    // Capacity 4 an hour: the sheddable class gets at most half of it.
    let mut rejected = 0;
    for (client_id, priority) in [("a", "critical"), ("b", "sheddable")] {
        for _ in 0..3 {
            let entries = [
                ("service", "search"),
                ("client", client_id),
                ("priority", priority),
            ];
            let r = client.should_rate_limit(request("mon", &entries));
            rejected +=
                usize::from(r.await.unwrap().into_inner().overall_code() == Code::OverLimit);
        }
    }
    assert!(rejected > 0, "the capacity rule rejected nothing");
    client
        .should_rate_limit(request("nope", &[("user", "x")]))
        .await
        .unwrap();
    let invalid = client.should_rate_limit(request("", &[("user", "x")]));
    assert_eq!(
        invalid.await.unwrap_err().code(),
        tonic::Code::InvalidArgument
    );
    // A reload refused (a file that is no rules), then one taken.
    std::fs::write(rules.path().join("broken.yaml"), "domain: [").unwrap();
    until_counted(&server, "floodgate_rules_reloads_total{result=\"failure\"}").await;
    std::fs::remove_file(rules.path().join("broken.yaml")).unwrap();
    until_counted(&server, "floodgate_rules_reloads_total{result=\"success\"}").await;

    let page = scrape(&server).await;
    server.stop().await.unwrap();
    page
}

/// A server whose rules come over xDS, once it has them; its `/metrics`.
async fn xds_server_page() -> String {
    let xds = XdsServer::start("floodgate-monitoring", None).await;
    let empty = tempfile::tempdir().unwrap();
    let mut config = config_with_rules(empty.path());
    config.rules_xds = Some(xds.settings("floodgate-monitoring"));
    let server = TestServer::start(config).await;
    xds.push("1", &[per_minute("d-config", "d", "user", 3)]);
    xds.answer_to("1").await;
    until_counted(&server, "floodgate_rules_xds_connected").await;
    let page = scrape(&server).await;
    server.stop().await.unwrap();
    page
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_series_the_dashboard_and_the_alerts_read_is_exported() {
    let rendered = rendered_monitoring();
    let pages = [redis_server_page().await, xds_server_page().await];
    let samples = exported(&pages);
    the_readme_metrics_table_is_what_is_exported(&pages);
    let expressions = expressions(&rendered);
    let mut names = BTreeSet::new();
    let mut wrong = Vec::new();
    for (place, expr) in &expressions {
        let found = reads(expr);
        assert!(
            !found.selectors.is_empty(),
            "{place} reads no floodgate_ series: {expr}"
        );
        names.extend(found.selectors.into_iter().map(|s| s.name));
        wrong.extend(
            problems(expr, &samples)
                .into_iter()
                .map(|p| format!("{place}: {p}\n    {expr}")),
        );
    }
    println!(
        "{} expressions read {} series, all exported: {names:?}",
        expressions.len(),
        names.len()
    );
    assert!(
        wrong.is_empty(),
        "the chart's dashboard and alerts read what /metrics does not export:\n{}",
        wrong.join("\n")
    );
    // The parse finds what the panels are about (the check is not vacuous).
    for name in [
        "floodgate_call_duration_seconds_bucket",
        "floodgate_store_breaker_state",
        "floodgate_capacity_hits_total",
        "floodgate_rules_xds_connected",
        "floodgate_tls_certificate_not_after_seconds",
        "floodgate_open_connections",
    ] {
        assert!(
            names.contains(name),
            "no expression reads {name}: {names:?}"
        );
    }
    assert!(names.len() >= 25, "{names:?}");
}

/// README.md's Metrics table names exactly the metric families these
/// servers export (`# TYPE` lines), no more and no fewer.
fn the_readme_metrics_table_is_what_is_exported(pages: &[String]) {
    let readme = std::fs::read_to_string(floodgate_e2e::workspace_root().join("README.md"))
        .expect("read README.md");
    let table: BTreeSet<String> = readme
        .lines()
        .skip_while(|l| *l != "### Metrics")
        .skip_while(|l| !l.starts_with("| metric |"))
        .skip(2)
        .take_while(|l| l.starts_with('|'))
        .filter_map(|l| l.split('`').nth(1).map(str::to_owned))
        .collect();
    let families: BTreeSet<String> = pages
        .iter()
        .flat_map(|p| p.lines())
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
        .collect();
    let missing: Vec<_> = families.difference(&table).collect();
    let extra: Vec<_> = table.difference(&families).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "README's Metrics table: exported but not listed {missing:?}; listed but not exported {extra:?}"
    );
}

/// The parser itself, on the shapes the dashboard and the alerts use.
#[test]
fn reads_names_matchers_and_grouping_labels() {
    let r = reads(
        "histogram_quantile(0.99, sum by (namespace, pod, le) (rate(floodgate_call_duration_seconds_bucket{job=\"f\",code=~\"$c\"}[$__rate_interval])))
          > 0.05 or floodgate_store_degraded == 1 and on(pod) label_values(floodgate_calls_total, job)",
    );
    let names: Vec<&str> = r.selectors.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "floodgate_call_duration_seconds_bucket",
            "floodgate_store_degraded",
            "floodgate_calls_total"
        ]
    );
    assert_eq!(
        r.selectors[0].matchers,
        [
            ("job".into(), "=".into(), "f".into()),
            ("code".into(), "=~".into(), "$c".into())
        ]
    );
    assert_eq!(r.grouping, ["namespace", "pod", "le"]);
    let page = "# HELP x\nfloodgate_calls_total{code=\"ok\"} 3\nfloodgate_store_degraded 0\n";
    let samples = exported(&[page.to_owned()]);
    assert!(
        problems(
            "sum by (code) (floodgate_calls_total{code=\"ok\"})",
            &samples
        )
        .is_empty()
    );
    assert_eq!(
        problems(
            "sum by (domain) (floodgate_calls_total{code=\"shed\"}) + floodgate_calls_totl",
            &samples
        ),
        [
            "floodgate_calls_total never has code=\"shed\" (only {\"ok\"})",
            "floodgate_calls_totl is not exported",
            "by (domain): no series it reads has that label"
        ]
    );
}
