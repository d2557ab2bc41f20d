//! Rules over xDS: a management server started by the test
//! ([`floodgate_e2e::xds::XdsServer`]) pushes `RateLimitConfig` resources on
//! the aggregated state-of-the-world stream; the real `floodgate` binary
//! serves them, ACKs each good push, NACKs a bad one with the messages
//! `floodgate check` prints (keeping the last good rules), and comes back
//! after the management server restarts.

use std::time::Duration;

use floodgate_e2e::xds::{XdsServer, per_minute};
use floodgate_e2e::{
    ServerProcess, floodgate_bin, http_get, request, rules_dir, with_time_left_in_minute,
};
use floodgate_proto::rate_limit_response::Code;
use floodgate_proto::ratelimit::config::ratelimit::v3::RateLimitUnit;
use tokio::time::Instant;

/// One call for `user` in domain `d`: its code and the limit it was
/// counted against.
async fn call(server: &ServerProcess, user: &str) -> (Code, u32) {
    let mut client = server.client().await;
    let response = client
        .should_rate_limit(request("d", &[("user", user)]))
        .await
        .expect("ShouldRateLimit")
        .into_inner();
    let limit = response
        .statuses
        .first()
        .and_then(|s| s.current_limit.as_ref())
        .map_or(0, |l| l.requests_per_unit);
    (response.overall_code(), limit)
}

/// Polls (every 20 ms, up to `within`, a new user each time) until a call
/// is counted against `limit`; returns how long that took.
async fn served_within(server: &ServerProcess, limit: u32, within: Duration) -> Duration {
    let start = Instant::now();
    for poll in 0.. {
        if call(server, &format!("poll-{poll}")).await.1 == limit {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < within,
            "the {limit}-per-minute rules were not served within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    unreachable!("the loop returns or fails")
}

/// Floodgate reading its rules from `xds` through its own settings.
async fn floodgate(xds: &XdsServer, extra: &[(&str, &str)]) -> (ServerProcess, tempfile::TempDir) {
    // The rules directory is not read when the rules come over xDS.
    let unused = rules_dir(&[]);
    let server_addr = xds.addr.to_string();
    let mut env = vec![
        ("FLOODGATE_RULES_XDS_SERVER", server_addr.as_str()),
        ("FLOODGATE_RULES_XDS_NODE_ID", "floodgate-test"),
        ("FLOODGATE_RULES_XDS_RETRY_INITIAL", "100ms"),
        ("FLOODGATE_RULES_XDS_RETRY_MAX", "500ms"),
    ];
    env.extend_from_slice(extra);
    let server = ServerProcess::start(unused.path(), &[], &env).await;
    (server, unused)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushed_rules_are_served_a_bad_push_is_nacked_and_the_good_rules_stay() {
    let xds = XdsServer::start("floodgate-test", None).await;
    let (server, _dir) = floodgate(
        &xds,
        &[
            ("FLOODGATE_RULES_XDS_NODE_METADATA", "cluster=edge,zone=a"),
            ("FLOODGATE_RULES_XDS_HEADERS", "x-tenant:blue"),
        ],
    )
    .await;
    xds.push("1", &[per_minute("d-config", "d", "user", 3)]);
    let ack = xds.answer_to("1").await;
    assert_eq!(ack.request.version_info, "1", "ACK: {ack:?}");
    assert!(ack.request.error_detail.is_none(), "ACK: {ack:?}");
    let node = ack.request.node.clone().expect("node");
    assert_eq!(node.id, "floodgate-test");
    let metadata = node.metadata.expect("node metadata");
    assert_eq!(metadata.fields.len(), 2, "{metadata:?}");
    assert!(
        ack.headers.contains(&("x-tenant".into(), "blue".into())),
        "{ack:?}"
    );

    with_time_left_in_minute(Duration::from_secs(15)).await;
    let codes: Vec<Code> = futures_codes(&server, "ann", 4).await;
    assert_eq!(codes, [Code::Ok, Code::Ok, Code::Ok, Code::OverLimit]);

    xds.push("2", &[per_minute("d-config", "d", "user", 5)]);
    let took = served_within(&server, 5, Duration::from_secs(1)).await;
    assert_eq!(xds.answer_to("2").await.request.version_info, "2");
    eprintln!("the 5-per-minute rules were served {took:?} after the push");

    let mut bad = per_minute("d-config", "d", "user", 5);
    bad.descriptors[0].rate_limit.as_mut().expect("limit").unit = RateLimitUnit::Unknown as i32;
    xds.push("3", &[bad]);
    let nack = xds.answer_to("3").await;
    assert_eq!(
        nack.request.version_info, "2",
        "a NACK keeps the last good version: {nack:?}"
    );
    let detail = nack
        .request
        .error_detail
        .clone()
        .expect("a NACK has error_detail");
    assert_eq!(detail.code, 3, "INVALID_ARGUMENT: {detail:?}");

    // The message is what `floodgate check` prints for the same rules.
    let dir = rules_dir(&[(
        "d-config",
        "domain: d\ndescriptors:\n  - key: user\n    rate_limit:\n      unit: UNKNOWN\n      requests_per_unit: 5\n",
    )]);
    let check = std::process::Command::new(floodgate_bin())
        .arg("check")
        .arg(dir.path().join("d-config"))
        .output()
        .expect("floodgate check");
    let printed =
        String::from_utf8_lossy(&check.stderr).replace(&format!("{}/", dir.path().display()), "");
    assert_eq!(detail.message.trim_end(), printed.trim_end());
    assert!(detail.message.contains("UNKNOWN"), "{}", detail.message);

    // The 5-per-minute rules keep serving: ann has 2 left.
    assert_eq!(call(&server, "ann").await, (Code::Ok, 5));
    assert_eq!(call(&server, "ann").await, (Code::OverLimit, 5));
    let (_, rlconfig) = http_get(&format!("http://{}/rlconfig", server.http_addr)).await;
    assert!(
        rlconfig.contains(&format!(
            "# source xds://{} node floodgate-test version 2",
            xds.addr
        )),
        "{rlconfig}"
    );
    assert!(
        rlconfig.contains("d.user: unit=MINUTE requests_per_unit=5"),
        "{rlconfig}"
    );
    let (_, metrics) = http_get(&format!("http://{}/metrics", server.http_addr)).await;
    assert!(
        metrics.contains("\nfloodgate_rules_xds_connected 1\n"),
        "{metrics}"
    );
}

/// `n` calls for `user`, one after another: their codes.
async fn futures_codes(server: &ServerProcess, user: &str, n: usize) -> Vec<Code> {
    let mut codes = Vec::with_capacity(n);
    for _ in 0..n {
        codes.push(call(server, user).await.0);
    }
    codes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rules_stay_while_the_management_server_is_down_and_it_is_reconnected() {
    let mut xds = XdsServer::start("floodgate-test", None).await;
    let (server, _dir) = floodgate(&xds, &[]).await;
    xds.push("1", &[per_minute("d-config", "d", "user", 3)]);
    xds.answer_to("1").await;
    xds.stop();
    // Down: the rules in force stay, and the gauge says it.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(call(&server, "bob").await, (Code::Ok, 3));
    let (_, metrics) = http_get(&format!("http://{}/metrics", server.http_addr)).await;
    assert!(
        metrics.contains("\nfloodgate_rules_xds_connected 0\n"),
        "{metrics}"
    );
    xds.push("2", &[per_minute("d-config", "d", "user", 7)]);
    xds.restart().await;
    // The stream is reopened (backoff 100 ms .. 500 ms) and the new
    // snapshot served, with the last accepted version sent on reconnect.
    served_within(&server, 7, Duration::from_secs(5)).await;
    let resubscribe = xds
        .requests()
        .into_iter()
        .find(|r| r.request.response_nonce.is_empty() && r.request.version_info == "1");
    assert!(
        resubscribe.is_some(),
        "the new stream starts from version 1: {:?}",
        xds.requests()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_the_server_does_not_know_gets_no_rules_and_floodgate_keeps_running() {
    let xds = XdsServer::start("someone-else", None).await;
    let (server, _dir) = floodgate(&xds, &[]).await;
    xds.push("1", &[per_minute("d-config", "d", "user", 3)]);
    tokio::time::sleep(Duration::from_millis(500)).await;
    // No rules for domain d: not limited.
    assert_eq!(call(&server, "cy").await.0, Code::Ok);
    let (_, rlconfig) = http_get(&format!("http://{}/rlconfig", server.http_addr)).await;
    assert!(
        rlconfig.contains("waiting for the first response"),
        "{rlconfig}"
    );
}

/// Envoy Gateway's environment for its rate limit deployment, as
/// `internal/infrastructure/kubernetes/ratelimit/resource.go` writes it
/// (with Redis and Prometheus), for a management server at `xds`, Redis at
/// `redis`, and `PROMETHEUS_ADDR` at `metrics` (theirs is `:19001`).
/// With `pki`, the TLS files are the test PKI's (its `/certs/tls.crt` is
/// one certificate for both ends, `dual.pem`); without, TLS is off and the
/// files are left out.
fn envoy_gateway_env(
    (xds, redis, metrics): (&str, &str, &str),
    pki: Option<&std::path::Path>,
) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = [
        ("RUNTIME_ROOT", "/data"),
        ("RUNTIME_SUBDIRECTORY", "ratelimit"),
        ("RUNTIME_IGNOREDOTFILES", "true"),
        ("RUNTIME_WATCH_ROOT", "false"),
        ("LOG_LEVEL", "info"),
        ("USE_STATSD", "false"),
        ("CONFIG_TYPE", "GRPC_XDS_SOTW"),
        ("CONFIG_GRPC_XDS_SERVER_URL", xds),
        ("CONFIG_GRPC_XDS_NODE_ID", "envoy-ratelimit"),
        ("FORCE_START_WITHOUT_INITIAL_CONFIG", "true"),
        ("REDIS_SOCKET_TYPE", "tcp"),
        ("REDIS_URL", redis),
        ("USE_PROMETHEUS", "true"),
        ("PROMETHEUS_ADDR", metrics),
        ("PROMETHEUS_MAPPER_YAML", "/etc/statsd-exporter/conf.yaml"),
    ]
    .iter()
    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
    .collect();
    let file = |name: &str| pki.map(|p| p.join(name).display().to_string());
    let (tls, cert, key, ca) = (
        pki.is_some(),
        file("dual.pem"),
        file("dual.key"),
        file("ca.pem"),
    );
    env.push(("GRPC_SERVER_USE_TLS".into(), tls.to_string()));
    env.push(("CONFIG_GRPC_XDS_SERVER_USE_TLS".into(), tls.to_string()));
    if let (Some(cert), Some(key), Some(ca)) = (cert, key, ca) {
        for (name, value) in [
            ("GRPC_SERVER_TLS_CERT", &cert),
            ("GRPC_SERVER_TLS_KEY", &key),
            ("GRPC_SERVER_TLS_CA_CERT", &ca),
            ("CONFIG_GRPC_XDS_CLIENT_TLS_CERT", &cert),
            ("CONFIG_GRPC_XDS_CLIENT_TLS_KEY", &key),
            ("CONFIG_GRPC_XDS_SERVER_TLS_CACERT", &ca),
        ] {
            env.push((name.into(), value.clone()));
        }
    }
    env
}

/// The acceptance run: Floodgate started with Envoy Gateway's environment
/// (`--compat envoy-ratelimit`) takes 3 per minute for domain `d` from the
/// management server, then 5 per minute within 1 s, NACKs a bad push and
/// keeps serving 5 per minute; counters in Redis. With `pki`, every hop is
/// mTLS: Floodgate to the management server, and the caller to Floodgate.
async fn envoy_gateway_run(pki: Option<&std::path::Path>) {
    let redis = floodgate_e2e::RedisServer::start();
    let xds = XdsServer::start("envoy-ratelimit", pki).await;
    let metrics = format!("127.0.0.1:{}", floodgate_e2e::free_port());
    let env = envoy_gateway_env(
        (
            &xds.addr.to_string(),
            &format!("127.0.0.1:{}", redis.port()),
            &metrics,
        ),
        pki,
    );
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let unused = rules_dir(&[]);
    let server = ServerProcess::start(unused.path(), &["--compat", "envoy-ratelimit"], &env).await;
    let mut client = match pki {
        None => server.client().await,
        Some(pki) => mtls_client(&server, pki).await,
    };
    let mut call = async |user: &str| {
        let r = client
            .should_rate_limit(request("d", &[("user", user)]))
            .await
            .expect("ShouldRateLimit")
            .into_inner();
        let limit = r.statuses.first().and_then(|s| s.current_limit.as_ref());
        (r.overall_code(), limit.map_or(0, |l| l.requests_per_unit))
    };
    xds.push("1", &[per_minute("d-config", "d", "user", 3)]);
    assert!(xds.answer_to("1").await.request.error_detail.is_none());
    with_time_left_in_minute(Duration::from_secs(15)).await;
    let mut codes = Vec::new();
    for _ in 0..4 {
        codes.push(call("ann").await.0);
    }
    assert_eq!(codes, [Code::Ok, Code::Ok, Code::Ok, Code::OverLimit]);

    xds.push("2", &[per_minute("d-config", "d", "user", 5)]);
    let pushed = Instant::now();
    let mut poll = 0;
    while call(&format!("poll-{poll}")).await.1 != 5 {
        assert!(
            pushed.elapsed() < Duration::from_secs(1),
            "5 per minute not served within 1 s"
        );
        poll += 1;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    eprintln!("served {:?} after the push", pushed.elapsed());

    let mut bad = per_minute("d-config", "d", "user", 5);
    bad.descriptors[0].key = String::new();
    xds.push("3", &[bad]);
    let nack = xds.answer_to("3").await.request;
    let detail = nack.error_detail.expect("NACK");
    assert!(
        detail.message.starts_with("d-config: "),
        "{}",
        detail.message
    );
    assert_eq!(nack.version_info, "2");
    assert_eq!(call("ann").await, (Code::Ok, 5));
    assert_eq!(call("ann").await, (Code::OverLimit, 5));
    // Counted in Redis, under envoyproxy/ratelimit's key: 4 calls, then 2.
    let (_, count, _) =
        floodgate_e2e::redis_command::the_counter(&redis.url(), "d_user_ann_*").await;
    assert_eq!(count, 6);
    // Envoy Gateway scrapes PROMETHEUS_ADDR (container port `metrics`).
    let (status, page) = http_get(&format!("http://{metrics}/metrics")).await;
    assert_eq!(status, 200, "{page}");
    let over = "floodgate_calls_total{code=\"over_limit\"}";
    assert_eq!(floodgate_e2e::metric_value(&page, over), Some(2), "{page}");
    assert_eq!(http_get(&format!("http://{metrics}/json")).await.0, 404);
}

async fn mtls_client(
    server: &ServerProcess,
    pki: &std::path::Path,
) -> floodgate_proto::RateLimitServiceClient<tonic::transport::Channel> {
    use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};
    let read = |f: &str| std::fs::read(pki.join(f)).expect("read test PKI");
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(read("ca.pem")))
        .identity(Identity::from_pem(read("client.pem"), read("client.key")))
        .domain_name("localhost");
    let channel = Endpoint::from_shared(format!("https://{}", server.grpc_addr))
        .expect("endpoint")
        .tls_config(tls)
        .expect("TLS")
        .connect()
        .await
        .expect("connect over mTLS");
    floodgate_proto::RateLimitServiceClient::new(channel)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoy_gateways_environment_takes_its_rules_over_xds() {
    envoy_gateway_run(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoy_gateways_environment_takes_its_rules_over_xds_with_mtls_everywhere() {
    let pki = tempfile::tempdir().expect("temp dir");
    floodgate_e2e::pki::write_test_pki(pki.path()).expect("test PKI");
    envoy_gateway_run(Some(pki.path())).await;
}
