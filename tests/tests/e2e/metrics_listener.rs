//! The metrics listener (`metrics_addr`, `metrics_path`): the real
//! `floodgate serve` binary serves its `/metrics` text on a listener of its
//! own, at one path, in plaintext even when the HTTP listener speaks TLS,
//! and 404 for anything else there; the "serving" line names it.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use floodgate_e2e::{
    floodgate_bin, free_port, http_get, metric_value, request, rules_dir, user_rules,
    wait_until_listening,
};
use floodgate_proto::RateLimitServiceClient;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A child process killed on drop (a failed assertion included).
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The first bytes `addr` answers to a plaintext HTTP/1.1 request.
async fn plaintext_answer(addr: SocketAddr) -> Vec<u8> {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let ask = "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    stream.write_all(ask.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut answer));
    let _ = read.await;
    answer
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_addr_serves_the_metrics_alone_at_metrics_path_in_plaintext() {
    let rules = rules_dir(&[("edge.yaml", &user_rules(5))]);
    let pki = tempfile::tempdir().unwrap();
    floodgate_e2e::pki::write_test_pki(pki.path()).unwrap();
    let port = |_| format!("127.0.0.1:{}", free_port());
    let [grpc, http, metrics] = [0, 1, 2].map(port);
    let stderr = pki.path().join("stderr");
    let mut command = Command::new(floodgate_bin());
    command
        .args(["serve", "--rules"])
        .arg(rules.path())
        .args([
            "--grpc-addr",
            &grpc,
            "--http-addr",
            &http,
            "--admin-addr",
            "",
            "--log-format",
            "json",
        ])
        .env("FLOODGATE_METRICS_ADDR", &metrics)
        .env("FLOODGATE_METRICS_PATH", "/stats/prometheus")
        // The HTTP listener speaks TLS; the metrics listener does not.
        .env(
            "FLOODGATE_HTTP_TLS_CERT_FILE",
            pki.path().join("server.pem"),
        )
        .env("FLOODGATE_HTTP_TLS_KEY_FILE", pki.path().join("server.key"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&stderr).unwrap());
    for (name, _) in std::env::vars().filter(|(n, _)| n.starts_with("FLOODGATE_")) {
        command.env_remove(name);
    }
    let mut server = Running(command.spawn().unwrap());
    let grpc: SocketAddr = grpc.parse().unwrap();
    wait_until_listening(grpc, || {
        server.0.try_wait().ok().flatten().map(|status| {
            let log = std::fs::read_to_string(&stderr).unwrap_or_default();
            format!("floodgate exited: {status}: {log}")
        })
    })
    .await;
    let mut client = RateLimitServiceClient::connect(format!("http://{grpc}"))
        .await
        .unwrap();
    let call = request("edge", &[("user", "ann")]);
    let answer = client.should_rate_limit(call).await.unwrap().into_inner();
    assert_eq!(answer.overall_code, 1, "OK");

    let (status, page) = http_get(&format!("http://{metrics}/stats/prometheus")).await;
    assert_eq!(status, 200, "{page}");
    let series = [
        ("floodgate_calls_total{code=\"ok\"}", 1),
        (
            "floodgate_rule_total_hits_total{domain=\"edge\",key=\"user\"}",
            1,
        ),
        ("floodgate_open_connections{listener=\"metrics\"}", 1),
    ];
    for (name, value) in series {
        assert_eq!(
            metric_value::<u64>(&page, name),
            Some(value),
            "{name}:\n{page}"
        );
    }
    // Only that path, only the metrics.
    for path in ["/metrics", "/json", "/healthcheck", "/rlconfig", "/stats"] {
        let (status, body) = http_get(&format!("http://{metrics}{path}")).await;
        assert_eq!((status, body.as_str()), (404, ""), "GET {path}");
    }
    // The HTTP listener kept its TLS: a plaintext request gets no HTTP answer.
    let answer = plaintext_answer(http.parse().unwrap()).await;
    assert!(!answer.starts_with(b"HTTP/"), "{answer:?}");

    let log = std::fs::read_to_string(&stderr).unwrap();
    let serving = log.lines().find(|l| l.contains("floodgate serving"));
    let serving = serving.unwrap_or_else(|| panic!("no serving line:\n{log}"));
    assert!(
        serving.contains(&format!(r#""metrics":"{metrics}""#))
            && serving.contains(r#""admin":"off""#),
        "{serving}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_metrics_addr_there_is_no_metrics_listener() {
    let rules = rules_dir(&[("edge.yaml", &user_rules(5))]);
    let server = floodgate_e2e::ServerProcess::start(rules.path(), &[], &[]).await;
    // `/metrics` stays on the HTTP listener.
    let (status, page) = http_get(&format!("http://{}/metrics", server.http_addr)).await;
    assert_eq!(status, 200);
    let open = |listener: &str| {
        metric_value::<u64>(
            &page,
            &format!("floodgate_open_connections{{listener=\"{listener}\"}}"),
        )
    };
    assert_eq!(open("http"), Some(1), "{page}");
    assert_eq!(open("metrics"), None, "{page}");
}
