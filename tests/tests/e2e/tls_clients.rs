//! Floodgate's own clients against `floodgate serve` over TLS and mTLS:
//! `floodgate bench` (gRPC, ALPN h2), `floodgate admin` (HTTP/1.1) and the
//! `floodgate-client` crate, each with its client certificate, and each
//! refused without one (or with one the server does not let in).
//! Certificates come from [`floodgate_e2e::pki`].

use std::path::{Path, PathBuf};
use std::process::Output;

use floodgate_client::{Client, Descriptor, RetryPolicy, Source};
use floodgate_e2e::pki::{self, CLIENT_ID};
use floodgate_e2e::{ServerProcess, floodgate_bin, metric, rules_dir, user_rules};
use serde_json::Value;

/// The environment that puts `listener` (`GRPC`, `ADMIN`) of a
/// `floodgate serve` over TLS with `pki`'s server certificate; with
/// `client_names`, it requires a client certificate from `pki`'s CA naming
/// one of them.
fn tls_env(listener: &str, pki: &Path, client_names: Option<&str>) -> Vec<(String, String)> {
    let file = |name: &str| pki.join(name).display().to_string();
    let var = |setting: &str| format!("FLOODGATE_{listener}_TLS_{setting}");
    let mut env = vec![
        (var("CERT_FILE"), file("server.pem")),
        (var("KEY_FILE"), file("server.key")),
    ];
    if let Some(names) = client_names {
        env.push((var("CLIENT_CA_FILE"), file("ca.pem")));
        env.push((var("CLIENT_NAMES"), names.to_owned()));
    }
    env
}

/// `floodgate serve` with `rules` and the environment `env`.
async fn serve(rules: &Path, env: &[(String, String)]) -> ServerProcess {
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    ServerProcess::start(rules, &[], &env).await
}

/// Runs the `floodgate` binary with `args` (and `env`), with no
/// `FLOODGATE_*` variable of this process.
async fn floodgate(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = tokio::process::Command::new(floodgate_bin());
    command.args(args).kill_on_drop(true);
    for (name, _) in std::env::vars().filter(|(n, _)| n.starts_with("FLOODGATE_")) {
        command.env_remove(name);
    }
    command.envs(env.iter().copied());
    command.output().await.unwrap()
}

/// `floodgate bench --json` (200 calls of one hot `user` in domain `edge`)
/// with `args`: its summary.
async fn bench(args: &[&str]) -> Value {
    let mut all = vec![
        "bench", "--json", "--domain", "edge", "--key", "user", "--keys", "hot",
    ];
    all.extend(["--connections", "2", "--streams", "4"]);
    all.extend(["--requests", "200", "--duration", "20s"]);
    all.extend(args);
    let out = floodgate(&all, &[]).await;
    assert!(
        out.status.success(),
        "floodgate bench failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn path(p: PathBuf) -> String {
    p.display().to_string()
}

/// The handshakes `listener` turned away for `reason`.
async fn refused(server: &ServerProcess, listener: &str, reason: &str) -> u64 {
    let series = format!(
        "floodgate_tls_handshake_failures_total{{listener=\"{listener}\",reason=\"{reason}\"}}"
    );
    metric::<u64>(server.http_addr, &series).await.unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn floodgate_bench_over_tls_and_mtls_and_refused_without_a_client_certificate() {
    let certs = tempfile::tempdir().unwrap();
    pki::write_test_pki(certs.path()).unwrap();
    let file = |name: &str| path(certs.path().join(name));
    let rules = rules_dir(&[("edge.yaml", user_rules(100).as_str())]);

    // TLS: an https:// target and the CA.
    let tls = serve(rules.path(), &tls_env("GRPC", certs.path(), None)).await;
    let target = format!("https://{}", tls.grpc_addr);
    let s = bench(&["--target", &target, "--tls-ca", &file("ca.pem")]).await;
    assert_eq!(s["calls"], 200, "{s}");
    assert_eq!(
        (s["ok"].as_u64(), s["over_limit"].as_u64()),
        (Some(100), Some(100)),
        "{s}"
    );
    assert_eq!(s["errors"], serde_json::json!({}), "{s}");
    // The same target without --tls-ca: refused before any connection.
    let out = floodgate(&["bench", "--target", &target], &[]).await;
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("--target {target}: TLS needs --tls-ca FILE")),
        "{stderr}"
    );
    drop(tls);

    // mTLS: a bare host:port, the TLS flags alone say TLS, named localhost.
    let mtls = serve(
        rules.path(),
        &tls_env("GRPC", certs.path(), Some(CLIENT_ID)),
    )
    .await;
    let target = mtls.grpc_addr.to_string();
    let s = bench(&[
        "--target",
        &target,
        "--tls-ca",
        &file("ca.pem"),
        "--tls-cert",
        &file("client.pem"),
        "--tls-key",
        &file("client.key"),
        "--tls-server-name",
        "localhost",
    ])
    .await;
    assert_eq!(
        (s["ok"].as_u64(), s["over_limit"].as_u64()),
        (Some(100), Some(100)),
        "{s}"
    );

    // Without the client certificate no call is answered: the run fails
    // at its first connection, or every call fails.
    let out = floodgate(
        &[
            "bench",
            "--json",
            "--domain",
            "edge",
            "--requests",
            "20",
            "--duration",
            "2s",
            "--target",
            &target,
            "--tls-ca",
            &file("ca.pem"),
        ],
        &[],
    )
    .await;
    if out.status.success() {
        let s: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(
            (s["ok"].as_u64(), s["over_limit"].as_u64()),
            (Some(0), Some(0)),
            "{s}"
        );
        assert!(s["calls"].as_u64().unwrap() > 0, "{s}");
    }
    assert!(refused(&mtls, "grpc", "no_client_certificate").await > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn floodgate_admin_over_mtls_from_flags_or_environment() {
    let certs = tempfile::tempdir().unwrap();
    pki::write_test_pki(certs.path()).unwrap();
    let file = |name: &str| path(certs.path().join(name));
    let rules = rules_dir(&[("edge.yaml", user_rules(1).as_str())]);
    let server = serve(
        rules.path(),
        &tls_env("ADMIN", certs.path(), Some(CLIENT_ID)),
    )
    .await;
    let addr = server.admin_addr.to_string();
    let admin = |action: &'static str| {
        vec![
            "admin",
            action,
            "--domain",
            "edge",
            "user=ann",
            "--addr",
            addr.as_str(),
        ]
    };

    // One call over the limit, then reset through admin with flags...
    let mut rls = server.client().await;
    let request = floodgate_e2e::request("edge", &[("user", "ann")]);
    for expected in [1, 2] {
        let code = rls
            .should_rate_limit(request.clone())
            .await
            .unwrap()
            .into_inner();
        assert_eq!(code.overall_code, expected, "OK, then OVER_LIMIT");
    }
    let mut args = admin("reset");
    let (ca, cert, key) = (file("ca.pem"), file("client.pem"), file("client.key"));
    args.extend(["--tls-ca", &ca, "--tls-cert", &cert, "--tls-key", &key]);
    let out = floodgate(&args, &[]).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "{\"reset\":1}");

    // ... and read with everything from the environment.
    let env = [
        ("FLOODGATE_ADMIN_TLS_CA", ca.as_str()),
        ("FLOODGATE_ADMIN_TLS_CERT", cert.as_str()),
        ("FLOODGATE_ADMIN_TLS_KEY", key.as_str()),
        ("FLOODGATE_ADMIN_TLS_SERVER_NAME", "localhost"),
    ];
    let out = floodgate(&admin("get"), &env).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let answer = String::from_utf8_lossy(&out.stdout);
    assert!(answer.contains("\"limitRemaining\":1"), "reset: {answer}");

    // Refused: no client certificate, one the allow-list does not name,
    // plaintext, and a certificate without its key (before connecting).
    let (other, other_key) = (file("other-client.pem"), file("other-client.key"));
    for (extra, what) in [
        (vec!["--tls-ca", &ca], "no client certificate"),
        (
            vec![
                "--tls-ca",
                &ca,
                "--tls-cert",
                &other,
                "--tls-key",
                &other_key,
            ],
            "a client not allowed",
        ),
        (vec![], "plaintext"),
    ] {
        let mut args = admin("reset");
        args.extend(extra);
        let out = floodgate(&args, &[]).await;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{what}: {stderr}");
        assert!(stderr.starts_with("floodgate admin: "), "{what}: {stderr}");
    }
    let mut args = admin("get");
    args.extend(["--tls-ca", &ca, "--tls-cert", &cert]);
    let out = floodgate(&args, &[]).await;
    assert!(!out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim(),
        format!(
            "floodgate admin: --tls-cert {cert} without --tls-key: a client certificate needs both --tls-cert FILE and --tls-key FILE"
        )
    );
    assert!(refused(&server, "admin", "no_client_certificate").await > 0);
    assert!(refused(&server, "admin", "client_not_allowed").await > 0);
    // Nothing refused was reset: still one left after the read.
    let code = rls.should_rate_limit(request).await.unwrap().into_inner();
    assert_eq!(code.overall_code, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rust_client_over_mtls_and_without_its_certificate_gets_no_answer() {
    let certs = tempfile::tempdir().unwrap();
    pki::write_test_pki(certs.path()).unwrap();
    let file = |name: &str| certs.path().join(name);
    let rules = rules_dir(&[("edge.yaml", user_rules(3).as_str())]);
    let server = serve(
        rules.path(),
        &tls_env("GRPC", certs.path(), Some(CLIENT_ID)),
    )
    .await;
    let endpoint = format!("https://{}", server.grpc_addr);
    let user = || [Descriptor::new().entry("user", "cy")];

    let client = Client::builder([endpoint.as_str()])
        .mtls_files(file("ca.pem"), file("client.pem"), file("client.key"))
        .no_throttle()
        .over_limit_memo(0)
        .build()
        .unwrap();
    let mut allowed = Vec::new();
    for _ in 0..4 {
        let d = client.should_rate_limit("edge", user()).await.unwrap();
        assert_eq!(d.source, Source::Service, "{d:?}");
        allowed.push(d.allowed);
    }
    assert_eq!(allowed, [true, true, true, false], "3 an hour");

    // No certificate; one from the CA that the allow-list does not name;
    // one from another CA: no answer from the service, the failure policy's.
    for (builder, reason) in [
        (
            Client::builder([endpoint.as_str()]).tls_ca_file(file("ca.pem")),
            "no_client_certificate",
        ),
        (
            Client::builder([endpoint.as_str()]).mtls_files(
                file("ca.pem"),
                file("other-client.pem"),
                file("other-client.key"),
            ),
            "client_not_allowed",
        ),
        (
            Client::builder([endpoint.as_str()]).mtls_files(
                file("ca.pem"),
                file("untrusted-client.pem"),
                file("untrusted-client.key"),
            ),
            "bad_client_certificate",
        ),
    ] {
        let refused_client = builder.retry(RetryPolicy::none()).build().unwrap();
        let d = refused_client
            .should_rate_limit("edge", user())
            .await
            .unwrap();
        assert!(
            matches!(&d.source, Source::FailurePolicy { cause } if !cause.is_empty()),
            "{reason}: {d:?}"
        );
        assert!(refused(&server, "grpc", reason).await > 0, "{reason}");
    }
}
