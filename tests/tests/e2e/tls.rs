//! TLS and mTLS on Floodgate's own listeners, with real clients: a real
//! Envoy whose `rls` cluster presents a client certificate (and one that
//! presents none), a Python `grpcio` client from the generated stubs with
//! `grpc.ssl_channel_credentials`, and `floodgate serve` refusing bad files
//! at startup (exit code 2, as for any invalid setting). Certificates come
//! from [`floodgate_e2e::pki`].

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use floodgate_e2e::pki::{self, CLIENT_ID};
use floodgate_e2e::{
    TestServer, config_with_rules, floodgate_bin, metric, rules_dir, user_rules, venv_bin,
};
use floodgate_server::config::Config;
use floodgate_server::tls::TlsSettings;
use floodgate_server::tls::files::{ClientAuth, ClientCerts, ListenerTls};
use serde_json::Value;
use tokio::time::Instant;

use crate::envoy::{Envoy, bootstrap_with, get, start_backend, wait_ready};
use crate::python_client::{generate_stubs, run};

/// `config`, with the gRPC listener over TLS with `pki`'s server
/// certificate; with `client_ids`, it requires client certificates from
/// `pki`'s CA naming one of them (empty: any).
fn grpc_over_tls(mut config: Config, pki: &Path, client_ids: Option<&[&str]>) -> Config {
    config.tls = TlsSettings {
        grpc: Some(ListenerTls {
            listener: "grpc",
            cert_file: pki.join("server.pem"),
            key_file: pki.join("server.key"),
            client: client_ids.map(|ids| ClientCerts {
                ca_file: pki.join("ca.pem"),
                auth: ClientAuth::Require,
                names: ids.iter().map(|id| (*id).to_owned()).collect(),
            }),
        }),
        reload_interval: Some(Duration::from_millis(200)),
        ..TlsSettings::default()
    };
    config
}

/// The `rls` cluster's TLS: trust `pki`'s CA for `localhost`, ALPN h2, and
/// present `client.pem` if `with_client_cert`.
fn upstream_tls(pki: &Path, with_client_cert: bool) -> String {
    let file = |name: &str| pki.join(name).display().to_string();
    let identity = if with_client_cert {
        format!(
            "            tls_certificates:\n              - certificate_chain: {{filename: \"{}\"}}\n                private_key: {{filename: \"{}\"}}\n",
            file("client.pem"),
            file("client.key")
        )
    } else {
        String::new()
    };
    format!(
        "      transport_socket:
        name: envoy.transport_sockets.tls
        typed_config:
          \"@type\": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext
          sni: localhost
          common_tls_context:
            alpn_protocols: [h2]
            validation_context:
              trusted_ca: {{filename: \"{ca}\"}}
              match_typed_subject_alt_names:
                - san_type: DNS
                  matcher: {{exact: localhost}}
{identity}",
        ca = file("ca.pem")
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoy_calls_floodgate_over_mtls_and_without_a_client_certificate_gets_no_decision() {
    let certs = tempfile::tempdir().unwrap();
    pki::write_test_pki(certs.path()).unwrap();
    let rules = rules_dir(&[("edge.yaml", user_rules(3).as_str())]);
    let config = grpc_over_tls(
        config_with_rules(rules.path()),
        certs.path(),
        Some(&[CLIENT_ID]),
    );
    let server = TestServer::start(config).await;
    let (backend_port, backend) = start_backend().await;
    let rls = server.grpc_addr.port();

    // With its client certificate: three pass, the fourth is Envoy's 429.
    let dir = tempfile::tempdir().unwrap();
    let bootstrap = bootstrap_with(rls, backend_port, true, &upstream_tls(certs.path(), true));
    let mut envoy = Envoy::start(dir.path(), &bootstrap);
    let (_, port) = wait_ready(&mut envoy, dir.path()).await;
    let alice = [("x-user", "alice")];
    let mut statuses = Vec::new();
    for i in 0..4 {
        let resp = get(port, &format!("/hello/{i}"), &alice).await.unwrap();
        statuses.push(resp.status);
        if i == 3 {
            assert_eq!(resp.header("x-envoy-ratelimited"), Some("true"), "{resp:?}");
        }
    }
    assert_eq!(statuses, [200, 200, 200, 429]);
    envoy.assert_running();
    drop(envoy);

    // Without one: no decision reaches Envoy, which fails closed
    // (failure_mode_deny: its status_on_error, 500), and Floodgate counts
    // the handshakes it turned away.
    let series = "floodgate_tls_handshake_failures_total{listener=\"grpc\",reason=\"no_client_certificate\"}";
    assert_eq!(metric::<u64>(server.http_addr, series).await, Some(0));
    let dir = tempfile::tempdir().unwrap();
    let bootstrap = bootstrap_with(rls, backend_port, true, &upstream_tls(certs.path(), false));
    let mut envoy = Envoy::start(dir.path(), &bootstrap);
    let (_, port) = wait_ready(&mut envoy, dir.path()).await;
    for i in 0..4 {
        let resp = get(port, &format!("/bob/{i}"), &[("x-user", "bob")])
            .await
            .unwrap();
        assert_eq!(resp.status, 500, "no decision, so deny: {resp:?}");
        assert_eq!(resp.header("x-envoy-ratelimited"), None, "{resp:?}");
    }
    let rejected = metric::<u64>(server.http_addr, series).await.unwrap();
    assert!(rejected >= 1, "rejected handshakes counted: {rejected}");
    envoy.assert_running();
    drop(envoy);
    backend.abort();
    server.stop().await.unwrap();
}

/// Calls `edge`/`user=alice` three times over TLS, with a client
/// certificate if given; prints one JSON object per call (or per failure).
const CLIENT: &str = r#"
import json
import sys

import grpc

from envoy.extensions.common.ratelimit.v3 import ratelimit_pb2
from envoy.service.ratelimit.v3 import rls_pb2, rls_pb2_grpc

address, ca, key, chain = sys.argv[1:5]
read = lambda path: open(path, "rb").read() if path != "-" else None
credentials = grpc.ssl_channel_credentials(read(ca), read(key), read(chain))
options = [("grpc.ssl_target_name_override", "localhost")]
with grpc.secure_channel(address, credentials, options) as channel:
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
        try:
            resp = stub.ShouldRateLimit(request, timeout=10)
            code = rls_pb2.RateLimitResponse.Code.Name(resp.overall_code)
            print(json.dumps({"code": code}), flush=True)
        except grpc.RpcError as e:
            print(json.dumps({"error": e.code().name, "details": e.details()}), flush=True)
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_python_grpcio_client_connects_with_its_certificate_and_fails_without_it() {
    let certs = tempfile::tempdir().unwrap();
    pki::write_test_pki(certs.path()).unwrap();
    let rules = rules_dir(&[("edge.yaml", user_rules(2).as_str())]);
    let config = grpc_over_tls(config_with_rules(rules.path()), certs.path(), Some(&[]));
    let server = TestServer::start(config).await;
    let python = venv_bin("python");
    let tmp = tempfile::tempdir().unwrap();
    generate_stubs(&python, tmp.path()).await;
    std::fs::write(tmp.path().join("client.py"), CLIENT).unwrap();
    let file = |name: &str| certs.path().join(name).display().to_string();
    let calls = |key: String, chain: String| {
        let mut cmd = tokio::process::Command::new(&python);
        cmd.arg(tmp.path().join("client.py"))
            .args([server.grpc_addr.to_string(), file("ca.pem"), key, chain])
            .env("PYTHONPATH", tmp.path())
            .env_remove("PYTHONHOME")
            .current_dir(tmp.path());
        cmd
    };
    let lines = |out: std::process::Output| -> Vec<Value> {
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    };

    let with = lines(run(&mut calls(file("client.key"), file("client.pem")), "client").await);
    let codes: Vec<&str> = with
        .iter()
        .map(|l| l["code"].as_str().unwrap_or("?"))
        .collect();
    assert_eq!(codes, ["OK", "OK", "OVER_LIMIT"], "{with:?}");

    let without = lines(run(&mut calls("-".into(), "-".into()), "client").await);
    assert_eq!(without.len(), 3, "{without:?}");
    for line in &without {
        assert_eq!(line["error"], "UNAVAILABLE", "{line}");
        let details = line["details"].as_str().unwrap().to_ascii_lowercase();
        // gRPC's TLS layer (TSI) reports the server's alert: with TLS 1.3
        // the client has sent its last handshake message when the server
        // refuses it, so the alert arrives as the first record it unwraps.
        assert!(
            ["ssl", "tls", "tsi_", "handshake"]
                .iter()
                .any(|m| details.contains(m)),
            "a TLS error: {line}"
        );
    }
    server.stop().await.unwrap();
}

/// `floodgate serve` with `args` (after `--rules`): its exit code and stderr.
async fn serve_fails(rules: &Path, args: &[&str]) -> (Option<i32>, String) {
    let child = tokio::process::Command::new(floodgate_bin())
        .args(["serve", "--rules"])
        .arg(rules)
        .args(["--grpc-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0"])
        .args(["--admin-addr", ""])
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let out = tokio::time::timeout_at(deadline, child.wait_with_output())
        .await
        .expect("floodgate serve should stop at once on bad TLS files")
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn floodgate_serve_stops_at_startup_on_each_bad_tls_file_naming_it() {
    let certs = tempfile::tempdir().unwrap();
    pki::write_test_pki(certs.path()).unwrap();
    pki::write_expired(certs.path()).unwrap();
    let rules = rules_dir(&[("edge.yaml", user_rules(2).as_str())]);
    let file = |name: &str| certs.path().join(name).display().to_string();
    let (missing, dir) = (file("missing.pem"), certs.path().display().to_string());
    let cases = [
        (
            vec![file("missing.pem"), file("server.key")],
            format!("invalid setting grpc_tls_cert_file = {missing:?}: no such file"),
        ),
        (
            vec![file("server.pem"), dir.clone()],
            format!(
                "invalid setting grpc_tls_key_file = {dir:?}: cannot read it: Is a directory (os error 21)"
            ),
        ),
        (
            vec![file("server.pem"), file("server-2.key")],
            format!(
                "invalid setting grpc_tls_key_file = {:?}: does not match the certificate in grpc_tls_cert_file = {:?}",
                file("server-2.key"),
                file("server.pem")
            ),
        ),
        (
            vec![file("expired.pem"), file("expired.key")],
            format!(
                "invalid setting grpc_tls_cert_file = {:?}: the certificate (serial 5e00) expired at 2021-01-01T00:00:00Z",
                file("expired.pem")
            ),
        ),
        (
            vec![file("server.pem"), file("server.key"), file("ca.key")],
            format!(
                "invalid setting grpc_tls_client_ca_file = {:?}: holds no PEM certificate (-----BEGIN CERTIFICATE-----)",
                file("ca.key")
            ),
        ),
    ];
    for (files, message) in cases {
        let mut args = vec![
            "--grpc-tls-cert-file",
            &files[0],
            "--grpc-tls-key-file",
            &files[1],
        ];
        if let Some(ca) = files.get(2) {
            args.extend(["--grpc-tls-client-ca-file", ca]);
        }
        let (code, stderr) = serve_fails(rules.path(), &args).await;
        // 2: the settings are wrong (as for any invalid setting).
        assert_eq!(code, Some(2), "{stderr}");
        assert!(
            stderr.contains(&message),
            "expected {message:?} in:\n{stderr}"
        );
    }
}
