//! The `floodgate` binary as an operator runs it: the README's quick-start
//! command (memory store, `examples/rules`), a gRPC client's 3-per-minute
//! flow, and a clean exit on SIGTERM; bad settings and bad rules stop it
//! with a message and a non-zero exit.

#![allow(clippy::unwrap_used)] // Tests: a failed unwrap is a failed test.

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use floodgate_proto::rate_limit_descriptor::Entry;
use floodgate_proto::rate_limit_response::Code;
use floodgate_proto::{RateLimitDescriptor, RateLimitRequest, RateLimitServiceClient};

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn floodgate(args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_floodgate"));
    cmd.args(args)
        .current_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join(".."));
    // Settings come from flags only, whatever the developer's shell exports.
    for (name, _) in std::env::vars().filter(|(n, _)| n.starts_with("FLOODGATE_")) {
        cmd.env_remove(name);
    }
    cmd
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quick_start_serves_three_per_minute_then_exits_cleanly_on_sigterm() {
    let (grpc, http) = (free_port(), free_port());
    let grpc_addr = format!("127.0.0.1:{grpc}");
    let http_addr = format!("127.0.0.1:{http}");
    // The README's run command, on free loopback ports.
    let child = floodgate(&[
        "serve",
        "--rules",
        "examples/rules",
        "--grpc-addr",
        &grpc_addr,
        "--http-addr",
        &http_addr,
        "--admin-addr",
        "127.0.0.1:0",
    ])
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    let mut server = Running(child);

    let mut client = None;
    for _ in 0..200 {
        if let Ok(c) = RateLimitServiceClient::connect(format!("http://{grpc_addr}")).await {
            client = Some(c);
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let mut client = client.expect("the server listens within 5 s");

    let request = RateLimitRequest {
        domain: "edge".into(),
        descriptors: vec![RateLimitDescriptor {
            entries: vec![Entry {
                key: "user".into(),
                value: "quickstart".into(),
            }],
            ..Default::default()
        }],
        hits_addend: 0,
    };
    // The server runs in its own process on the wall clock, so a paused
    // clock cannot help: start the four calls early in a minute window so
    // they all land in it.
    let into_minute = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        % 60;
    if into_minute >= 55 {
        tokio::time::sleep(Duration::from_secs(61 - into_minute)).await;
    }
    let mut seen = Vec::new();
    for _ in 0..4 {
        let resp = client
            .should_rate_limit(request.clone())
            .await
            .unwrap()
            .into_inner();
        let status = &resp.statuses[0];
        let reset = status.duration_until_reset.unwrap();
        assert!((0..=60).contains(&reset.seconds), "{reset:?}");
        assert_eq!(status.current_limit.as_ref().unwrap().requests_per_unit, 3);
        seen.push((resp.overall_code(), status.limit_remaining));
    }
    assert_eq!(
        seen,
        [
            (Code::Ok, 2),
            (Code::Ok, 1),
            (Code::Ok, 0),
            (Code::OverLimit, 0)
        ]
    );

    let pid = server.0.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let status = tokio::task::spawn_blocking(move || {
        let status = server.0.wait().unwrap();
        let mut log = String::new();
        std::io::Read::read_to_string(server.0.stderr.as_mut().unwrap(), &mut log).unwrap();
        (status, log)
    })
    .await
    .unwrap();
    assert_eq!(
        status.0.code(),
        Some(0),
        "exit status after SIGTERM; log:\n{}",
        status.1
    );
    assert!(
        status.1.contains("SIGTERM received, draining") && status.1.contains("stopped"),
        "{}",
        status.1
    );
    assert!(status.1.contains("floodgate serving"), "{}", status.1);
}

#[test]
fn invalid_rules_stop_serve_with_the_error() {
    let dir =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/rules/invalid/bad_unit.yaml");
    let out = floodgate(&[
        "serve",
        "--rules",
        dir.to_str().unwrap(),
        "--grpc-addr",
        "127.0.0.1:0",
        "--http-addr",
        "127.0.0.1:0",
        "--admin-addr",
        "127.0.0.1:0",
    ])
    .output()
    .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("bad_unit.yaml: invalid rate limit unit 'fortnight'"),
        "{stderr}"
    );
}

#[test]
fn an_empty_rules_directory_stops_serve_with_the_error() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = floodgate(&[
        "serve",
        "--rules",
        dir.path().to_str().unwrap(),
        "--grpc-addr",
        "127.0.0.1:0",
        "--http-addr",
        "127.0.0.1:0",
        "--admin-addr",
        "127.0.0.1:0",
    ])
    .stdout(Stdio::null())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    let mut waited = Duration::ZERO;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if waited >= Duration::from_secs(10) {
            child.kill().unwrap();
            child.wait().unwrap();
            panic!("serve is still running 10 s after starting on an empty rules directory");
        }
        std::thread::sleep(Duration::from_millis(50));
        waited += Duration::from_millis(50);
    };
    assert_eq!(status.code(), Some(1));
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(
        stderr.contains(&format!(
            "{}: no rules files (*.yaml, *.yml) in this directory; an empty rules directory is refused",
            dir.path().display()
        )),
        "{stderr}"
    );
}

#[test]
fn invalid_settings_stop_serve_with_exit_code_2() {
    let out = floodgate(&[
        "serve",
        "--rules",
        "examples/rules",
        "--grpc-addr",
        "not-an-address",
    ])
    .output()
    .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("invalid setting grpc_addr = \"not-an-address\""),
        "{stderr}"
    );
}

/// Runs `floodgate serve` on loopback ports with `args` added; returns its
/// exit code and stderr, or panics if it is still running after 10 s
/// (the settings were accepted and it is serving).
fn serve_until_exit(args: &[&str]) -> (Option<i32>, String) {
    let mut all = vec![
        "serve",
        "--grpc-addr",
        "127.0.0.1:0",
        "--http-addr",
        "127.0.0.1:0",
        "--admin-addr",
        "127.0.0.1:0",
    ];
    all.extend_from_slice(args);
    let mut child = Running(
        floodgate(&all)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    for _ in 0..200 {
        if let Some(status) = child.0.try_wait().unwrap() {
            let mut log = String::new();
            std::io::Read::read_to_string(child.0.stderr.as_mut().unwrap(), &mut log).unwrap();
            return (status.code(), log);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("floodgate serve {args:?} was still running after 10 s: the settings were accepted");
}

#[test]
fn invalid_rules_stop_serve_before_it_says_serving() {
    let rules =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/rules/invalid/bad_unit.yaml");
    let (code, log) = serve_until_exit(&["--rules", rules.to_str().unwrap()]);
    assert_eq!(code, Some(1), "{log}");
    assert!(log.contains("invalid rules"), "{log}");
    assert!(!log.contains("serving"), "{log}");
}

#[test]
fn redis_settings_without_redis_url_stop_serve_with_exit_code_2() {
    let (code, log) = serve_until_exit(&["--rules", "examples/rules", "--redis-mode", "bogus"]);
    assert_eq!(code, Some(2), "{log}");
    assert!(
        log.contains("invalid setting redis_mode = \"bogus\": must be single, sentinel or cluster"),
        "{log}"
    );
    let (code, log) = serve_until_exit(&[
        "--rules",
        "examples/rules",
        "--redis-sentinel-master",
        "mymaster",
    ]);
    assert_eq!(code, Some(2), "{log}");
    assert!(
        log.contains("redis_sentinel_master is set but redis_url is not"),
        "{log}"
    );
    assert!(!log.contains("serving"), "{log}");
}
