//! Operating Floodgate: `/metrics` after known calls, bounded metric
//! cardinality, hot reload (a Kubernetes-style `..data` symlink swap, an
//! invalid file, SIGHUP), and the admin endpoints and commands.

#![allow(clippy::unwrap_used)] // Tests: a failed unwrap is a failed test.

use std::path::Path;
use std::time::Duration;

use floodgate_e2e::{
    RedisServer, ServerProcess, TestServer, config_with_rules, descriptor, floodgate_bin, http_get,
    http_post, request, rules_dir, user_rules,
};
use floodgate_proto::RateLimitRequest;
use floodgate_proto::rate_limit_response::Code;
use floodgate_server::config::Config;
use floodgate_server::store::redis::RedisSettings;
use tokio::time::Instant;

/// The value of one series in a Prometheus text page.
fn value(page: &str, series: &str) -> Option<u64> {
    page.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

async fn scrape(server: &TestServer) -> String {
    let (status, page) = http_get(&format!("http://{}/metrics", server.http_addr)).await;
    assert_eq!(status, 200);
    page
}

const OPS_RULES: &str = "\
domain: ops
descriptors:
  - key: user
    rate_limit: {unit: hour, requests_per_unit: 5}
  - key: path
    value: /login
    shadow_mode: true
    rate_limit: {unit: hour, requests_per_unit: 1}
  - key: tenant
    detailed_metric: true
    rate_limit: {unit: hour, requests_per_unit: 1000000}
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_each_rule_exactly() {
    let rules = rules_dir(&[("ops.yaml", OPS_RULES)]);
    let server = TestServer::start(config_with_rules(rules.path())).await;
    let mut client = server.client().await;
    let mut over = 0;
    for _ in 0..7 {
        let r = client
            .should_rate_limit(request("ops", &[("user", "alice")]))
            .await
            .unwrap()
            .into_inner();
        over += usize::from(r.overall_code() == Code::OverLimit);
    }
    assert_eq!(over, 2);
    for _ in 0..3 {
        let r = client
            .should_rate_limit(request("ops", &[("path", "/login")]))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(r.overall_code(), Code::Ok, "shadow mode answers OK");
    }
    for tenant in ["acme", "acme", "globex"] {
        client
            .should_rate_limit(request("ops", &[("tenant", tenant)]))
            .await
            .unwrap();
    }
    client
        .should_rate_limit(request("nope", &[("user", "x")]))
        .await
        .unwrap();
    let err = client
        .should_rate_limit(request("", &[("user", "x")]))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);

    let page = scrape(&server).await;
    let rule = |metric: &str, key: &str| {
        value(
            &page,
            &format!("floodgate_rule_{metric}_total{{domain=\"ops\",key=\"{key}\"}}"),
        )
    };
    // user: limit 5, near-limit threshold floor(5 × 0.8) = 4.
    assert_eq!(rule("total_hits", "user"), Some(7));
    assert_eq!(rule("within_limit", "user"), Some(5));
    assert_eq!(rule("near_limit", "user"), Some(1), "the 5th hit");
    assert_eq!(rule("over_limit", "user"), Some(2));
    assert_eq!(rule("shadow_mode", "user"), Some(0));
    // path=/login: shadow mode, limit 1.
    assert_eq!(rule("total_hits", "path_/login"), Some(3));
    assert_eq!(rule("within_limit", "path_/login"), Some(1));
    assert_eq!(rule("over_limit", "path_/login"), Some(2));
    assert_eq!(rule("shadow_mode", "path_/login"), Some(2));
    // detailed_metric: the request's values.
    assert_eq!(rule("total_hits", "tenant_acme"), Some(2));
    assert_eq!(rule("total_hits", "tenant_globex"), Some(1));
    assert_eq!(rule("total_hits", "tenant"), None);
    assert_eq!(
        value(&page, "floodgate_domain_not_found_total{domain=\"nope\"}"),
        Some(1)
    );
    assert_eq!(value(&page, "floodgate_calls_total{code=\"ok\"}"), Some(12));
    assert_eq!(
        value(&page, "floodgate_calls_total{code=\"over_limit\"}"),
        Some(2)
    );
    assert_eq!(
        value(&page, "floodgate_calls_total{code=\"invalid_argument\"}"),
        Some(1)
    );
    assert_eq!(
        value(&page, "floodgate_call_duration_seconds_count"),
        Some(15)
    );
    // 13 calls reached the store (the unknown domain and the invalid call did not).
    assert_eq!(
        value(&page, "floodgate_store_duration_seconds_count"),
        Some(13)
    );
    assert!(page.contains("# TYPE floodgate_rule_total_hits_total counter"));
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_thousand_detailed_values_stay_within_the_series_cap() {
    let rules = rules_dir(&[(
        "card.yaml",
        "domain: card\ndescriptors:\n  - key: user\n    detailed_metric: true\n    rate_limit: {unit: hour, requests_per_unit: 10}\n",
    )]);
    let mut config = config_with_rules(rules.path());
    config.limits.max_descriptors = 1_000;
    config.metrics.max_series_per_domain = 500;
    let server = TestServer::start(config).await;
    // 100 calls of 1,000 distinct users each, 4 at a time.
    let mut calls = tokio::task::JoinSet::new();
    let client = server.client().await;
    for batch in 0..100 {
        let mut client = client.clone();
        calls.spawn(async move {
            let request = RateLimitRequest {
                domain: "card".into(),
                descriptors: (0..1_000)
                    .map(|i| descriptor(&[("user", &format!("u{}", batch * 1_000 + i))]))
                    .collect(),
                hits_addend: 0,
            };
            client.should_rate_limit(request).await.unwrap();
        });
        while calls.len() >= 4 {
            calls.join_next().await.unwrap().unwrap();
        }
    }
    while let Some(done) = calls.join_next().await {
        done.unwrap();
    }
    let page = scrape(&server).await;
    let series: Vec<&str> = page
        .lines()
        .filter(|l| l.starts_with("floodgate_rule_total_hits_total{domain=\"card\""))
        .collect();
    assert_eq!(series.len(), 501, "500 named series and the overflow");
    let total: u64 = series
        .iter()
        .map(|l| l.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
        .sum();
    assert_eq!(total, 100_000, "every hit counted once");
    assert_eq!(
        value(
            &page,
            "floodgate_rule_total_hits_total{domain=\"card\",key=\"__overflow__\"}"
        ),
        Some(99_500)
    );
    server.stop().await.unwrap();
}

// ---------------------------------------------------------------------------
// Hot reload

/// Writes `text` as `edge.yaml` in a new ConfigMap-style data directory
/// `..<name>` and points `..data` at it, atomically (a rename over the old
/// link), as the kubelet does.
fn configmap_swap(root: &Path, name: &str, text: &str) {
    let data = root.join(format!("..{name}"));
    std::fs::create_dir(&data).unwrap();
    std::fs::write(data.join("edge.yaml"), text).unwrap();
    let tmp = root.join("..data_tmp");
    std::os::unix::fs::symlink(format!("..{name}"), &tmp).unwrap();
    std::fs::rename(&tmp, root.join("..data")).unwrap();
}

/// A ConfigMap mount: `edge.yaml -> ..data/edge.yaml`, `..data -> ..first`.
fn configmap(text: &str) -> tempfile::TempDir {
    let root = tempfile::tempdir().unwrap();
    configmap_swap(root.path(), "first", text);
    std::os::unix::fs::symlink("..data/edge.yaml", root.path().join("edge.yaml")).unwrap();
    root
}

async fn remaining(server: &TestServer, user: &str) -> (Code, u32) {
    let r = server
        .client()
        .await
        .should_rate_limit(request("edge", &[("user", user)]))
        .await
        .unwrap()
        .into_inner();
    (r.overall_code(), r.statuses[0].limit_remaining)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_configmap_update_is_served_within_two_seconds_and_a_bad_one_is_refused() {
    let root = configmap(&user_rules(1));
    let server = TestServer::start(config_with_rules(root.path())).await;
    assert_eq!(remaining(&server, "ann").await, (Code::Ok, 0));
    assert_eq!(remaining(&server, "ann").await.0, Code::OverLimit);
    let (_, before) = http_get(&format!("http://{}/rlconfig", server.http_addr)).await;
    assert!(
        before.contains("edge.user: unit=HOUR requests_per_unit=1"),
        "{before}"
    );

    configmap_swap(root.path(), "second", &user_rules(100));
    let swapped = Instant::now();
    loop {
        // A new user each time: only the limit matters here.
        let (code, left) = remaining(&server, &format!("u{}", swapped.elapsed().as_millis())).await;
        if code == Code::Ok && left == 99 {
            break;
        }
        assert!(
            swapped.elapsed() < Duration::from_secs(2),
            "the new rules were not served within 2 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (_, after) = http_get(&format!("http://{}/rlconfig", server.http_addr)).await;
    assert!(after.contains("requests_per_unit=100"), "{after}");
    let version = |page: &str| page.lines().next().unwrap().to_owned();
    assert_ne!(version(&before), version(&after), "a new version");
    assert!(version(&after).starts_with("# version "));

    // An invalid update: refused as a whole, counted, the last good rules stay.
    configmap_swap(
        root.path(),
        "third",
        "domain: edge\ndescriptors:\n  - key: user\n    rate_limit: {unit: fortnight, requests_per_unit: 1}\n",
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let page = scrape(&server).await;
        if value(&page, "floodgate_rules_reloads_total{result=\"failure\"}") == Some(1) {
            assert_eq!(
                value(&page, "floodgate_rules_reloads_total{result=\"success\"}"),
                Some(1)
            );
            break;
        }
        assert!(Instant::now() < deadline, "the bad update was not noticed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(remaining(&server, "zed").await, (Code::Ok, 99));
    let (_, still) = http_get(&format!("http://{}/rlconfig", server.http_addr)).await;
    assert_eq!(version(&still), version(&after));
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_the_rules() {
    let rules = rules_dir(&[("edge.yaml", user_rules(1).as_str())]);
    // No periodic check: only the signal can reload.
    let server = ServerProcess::start(
        rules.path(),
        &[],
        &[("FLOODGATE_RULES_RELOAD_INTERVAL", "0s")],
    )
    .await;
    let rlconfig = format!("http://{}/rlconfig", server.http_addr);
    let (_, before) = http_get(&rlconfig).await;
    std::fs::write(rules.path().join("edge.yaml"), user_rules(7)).unwrap();
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert_eq!(
        http_get(&rlconfig).await.1,
        before,
        "no reload without the signal"
    );
    let kill = std::process::Command::new("kill")
        .args(["-HUP", &server.pid().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (_, page) = http_get(&rlconfig).await;
        if page.contains("requests_per_unit=7") {
            break;
        }
        assert!(Instant::now() < deadline, "SIGHUP did not reload: {page}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

// ---------------------------------------------------------------------------
// Admin

fn admin_body(user: &str) -> String {
    format!(
        "{{\"domain\":\"edge\",\"descriptors\":[{{\"entries\":[{{\"key\":\"user\",\"value\":\"{user}\"}}]}}]}}"
    )
}

async fn admin(server: &TestServer, path: &str, token: Option<&str>, user: &str) -> (u16, String) {
    floodgate_server::admin::post(
        &server.admin_addr.to_string(),
        path,
        token,
        &admin_body(user),
        None,
    )
    .await
    .unwrap()
}

/// Blocks `bob`, reads and resets his counter, checks he is unblocked;
/// `from_local_cache`: the over-limit answers the local cache gave.
async fn admin_reset_unblocks(server: TestServer, from_local_cache: u64) {
    for _ in 0..2 {
        assert_eq!(remaining(&server, "bob").await.0, Code::Ok);
    }
    assert_eq!(remaining(&server, "bob").await.0, Code::OverLimit);
    // Twice over: the second is served by the local over-limit cache, if any.
    assert_eq!(remaining(&server, "bob").await.0, Code::OverLimit);

    let (status, state) = admin(&server, "/counters/get", None, "bob").await;
    assert_eq!(status, 200, "{state}");
    assert!(state.contains("\"overallCode\":\"OVER_LIMIT\""), "{state}");
    // Reading counted nothing: still over, not further.
    let (status, reset) = admin(&server, "/counters/reset", None, "bob").await;
    assert_eq!((status, reset.trim()), (200, "{\"reset\":1}"));
    assert_eq!(
        remaining(&server, "bob").await,
        (Code::Ok, 1),
        "the next call is OK"
    );
    let (_, state) = admin(&server, "/counters/get", None, "bob").await;
    assert!(state.contains("\"limitRemaining\":1"), "{state}");
    let page = scrape(&server).await;
    let rule = |metric: &str| {
        value(
            &page,
            &format!("floodgate_rule_{metric}_total{{domain=\"edge\",key=\"user\"}}"),
        )
    };
    // 5 calls of 1 hit; the admin reads count nothing.
    assert_eq!(rule("total_hits"), Some(5));
    assert_eq!(rule("over_limit"), Some(2));
    assert_eq!(rule("over_limit_with_local_cache"), Some(from_local_cache));
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_reset_unblocks_a_key_in_memory() {
    let rules = rules_dir(&[("edge.yaml", user_rules(2).as_str())]);
    // The memory store needs no local cache: every answer is local.
    admin_reset_unblocks(TestServer::start(config_with_rules(rules.path())).await, 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_reset_unblocks_a_key_in_redis_and_the_local_cache() {
    let redis = RedisServer::start();
    let rules = rules_dir(&[("edge.yaml", user_rules(2).as_str())]);
    let mut config: Config = config_with_rules(rules.path());
    config.redis = Some(RedisSettings::single(redis.url()));
    config.resilience.over_limit_cache_entries = 1_000;
    config.resilience.store_deadline = Duration::from_secs(2);
    admin_reset_unblocks(TestServer::start(config).await, 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_token_is_required_when_set_and_the_command_works() {
    let rules = rules_dir(&[("edge.yaml", user_rules(1).as_str())]);
    let mut config = config_with_rules(rules.path());
    config.admin_token = Some(floodgate_server::store::redis::Secret::new("s3cret"));
    let server = TestServer::start(config).await;
    assert_eq!(remaining(&server, "cy").await.0, Code::Ok);
    assert_eq!(remaining(&server, "cy").await.0, Code::OverLimit);
    assert_eq!(admin(&server, "/counters/reset", None, "cy").await.0, 401);
    assert_eq!(
        admin(&server, "/counters/reset", Some("wrong"), "cy")
            .await
            .0,
        401
    );
    assert_eq!(
        remaining(&server, "cy").await.0,
        Code::OverLimit,
        "nothing was reset"
    );

    // `floodgate admin reset`, as an operator types it.
    let addr = server.admin_addr.to_string();
    let run = |args: &[&str], token: Option<&str>| {
        let mut cmd = std::process::Command::new(floodgate_bin());
        cmd.args(["admin"]).args(args).args(["--addr", &addr]);
        cmd.env_remove("FLOODGATE_ADMIN_TOKEN");
        if let Some(token) = token {
            cmd.env("FLOODGATE_ADMIN_TOKEN", token);
        }
        cmd.output().unwrap()
    };
    let denied = run(&["reset", "--domain", "edge", "user=cy"], None);
    assert!(!denied.status.success());
    assert!(String::from_utf8_lossy(&denied.stderr).contains("401"));
    let done = run(&["reset", "--domain", "edge", "user=cy"], Some("s3cret"));
    assert!(
        done.status.success(),
        "{}",
        String::from_utf8_lossy(&done.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&done.stdout).trim(),
        "{\"reset\":1}"
    );
    let shown = run(&["get", "--domain", "edge", "user=cy"], Some("s3cret"));
    assert!(String::from_utf8_lossy(&shown.stdout).contains("\"overallCode\":\"OK\""));
    assert_eq!(remaining(&server, "cy").await, (Code::Ok, 0));
    let bad = run(&["get", "--domain", "edge", "cy"], Some("s3cret"));
    assert_eq!(bad.status.code(), Some(2), "KEY=VALUE is required");
    server.stop().await.unwrap();
}

/// CPU time (user + system) a process has used so far, in clock ticks
/// (1/100 s on Linux), from `/proc/<pid>/stat`.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the command name, which may hold spaces: state is the
    // first, utime the 12th, stime the 13th.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .unwrap()
        .1
        .split_whitespace()
        .collect();
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn polling_an_unchanged_rules_directory_costs_next_to_no_cpu() {
    // 20 files of 1 MB each (a comment block and one rule): 20 MB to read
    // and hash on each poll that reads the files, every 100 ms here.
    let pad = format!("# {}\n", "x".repeat(998)).repeat(1000);
    let files: Vec<(String, String)> = (0..20)
        .map(|i| {
            (
                format!("d{i}.yaml"),
                format!("{pad}domain: d{i}\ndescriptors:\n  - key: user\n    rate_limit: {{unit: hour, requests_per_unit: 1}}\n"),
            )
        })
        .collect();
    let files: Vec<(&str, &str)> = files.iter().map(|(n, t)| (&**n, &**t)).collect();
    let rules = rules_dir(&files);
    let server = ServerProcess::start(
        rules.path(),
        &[],
        &[("FLOODGATE_RULES_RELOAD_INTERVAL", "100ms")],
    )
    .await;
    // Past startup: the socket listens before the rules are loaded, the
    // first answer comes after.
    let mut client = server.client().await;
    let answer = client
        .should_rate_limit(request("d0", &[("user", "ann")]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(answer.overall_code(), Code::Ok);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = cpu_ticks(server.pid());
    tokio::time::sleep(Duration::from_secs(3)).await;
    let used = cpu_ticks(server.pid()) - before;
    // 30 polls in 3 s: at most 5% of a core (15 ticks) for all of them.
    assert!(
        used <= 15,
        "{used} ticks of CPU (1/100 s each) in 3 s for polling unchanged rules"
    );
    // A change is still seen: a new rule is served.
    std::fs::write(
        rules.path().join("d0.yaml"),
        "domain: d0\ndescriptors:\n  - key: user\n    rate_limit: {unit: hour, requests_per_unit: 7}\n",
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let answer = client
            .should_rate_limit(request("d0", &[("user", "ann")]))
            .await
            .unwrap()
            .into_inner();
        if answer.statuses[0]
            .current_limit
            .as_ref()
            .map(|l| l.requests_per_unit)
            == Some(7)
        {
            break;
        }
        assert!(Instant::now() < deadline, "the edit was not applied");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The admin endpoints take only `application/json`: a browser's
/// cross-origin `text/plain` or form POST (sent without a CORS preflight)
/// to a loopback admin listener without a token resets nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_calls_of_another_content_type_are_refused_and_reset_nothing() {
    let rules = rules_dir(&[("edge.yaml", user_rules(1).as_str())]);
    let server = TestServer::start(config_with_rules(rules.path())).await;
    assert_eq!(remaining(&server, "dee").await.0, Code::Ok);
    assert_eq!(remaining(&server, "dee").await.0, Code::OverLimit);
    for content_type in [
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
        None,
    ] {
        for path in ["/counters/reset", "/counters/get"] {
            let url = format!("http://{}{path}", server.admin_addr);
            let (status, body) = http_post(&url, content_type, admin_body("dee").as_bytes()).await;
            assert_eq!(status, 415, "{content_type:?} {path}: {body}");
        }
    }
    assert_eq!(
        remaining(&server, "dee").await.0,
        Code::OverLimit,
        "nothing was reset"
    );
    let url = format!("http://{}/counters/reset", server.admin_addr);
    let (status, body) = http_post(
        &url,
        Some("application/json; charset=utf-8"),
        admin_body("dee").as_bytes(),
    )
    .await;
    assert_eq!((status, body.trim()), (200, "{\"reset\":1}"));
    server.stop().await.unwrap();
}
