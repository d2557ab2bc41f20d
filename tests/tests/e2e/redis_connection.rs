//! How Floodgate reaches Redis: through Sentinel (and after its failover),
//! over TLS with ACL users, with clear startup errors for wrong credentials
//! and untrusted certificates, and when Redis is not up yet at startup.

#![allow(clippy::unwrap_used)] // Tests: a failed unwrap is a failed test.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use floodgate_e2e::load::{descriptor, request, through_failover};
use floodgate_e2e::{RedisSentinel, TlsRedis};
use floodgate_e2e::{
    RedisServer, TestServer, config_with_rules, floodgate_bin, free_port, rules_dir,
    with_time_left_in_window,
};
use floodgate_proto::rate_limit_response::Code;
use floodgate_server::STORE_HEALTH_SERVICE;
use floodgate_server::config::Config;
use floodgate_server::store::redis::{
    ClientCertificate, RedisSettings, RedisStore, RedisTopology, Secret, TlsFiles,
};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

const RULES: &str = "\
domain: sale
descriptors:
  - key: user
    rate_limit: {unit: hour, requests_per_unit: 3}
  - key: steady
    rate_limit: {unit: hour, requests_per_unit: 100000000}
";

fn with_redis(rules: &Path, redis: RedisSettings) -> Config {
    Config {
        redis: Some(redis),
        ..config_with_rules(rules)
    }
}

/// OK, OK, OK, OVER_LIMIT for one user: the counter is really shared state.
async fn three_then_over(server: &TestServer, user: &str) {
    let mut client = server.client().await;
    let mut codes = Vec::new();
    for _ in 0..4 {
        let resp = client
            .should_rate_limit(request("sale", vec![descriptor("user", user)]))
            .await
            .unwrap()
            .into_inner();
        codes.push(resp.overall_code);
    }
    let (ok, over) = (Code::Ok as i32, Code::OverLimit as i32);
    assert_eq!(codes, vec![ok, ok, ok, over]);
}

async fn health(server: &TestServer) -> ServingStatus {
    health_of(server, "envoy.service.ratelimit.v3.RateLimitService").await
}

async fn health_of(server: &TestServer, service: &str) -> ServingStatus {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", server.grpc_addr))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut health = HealthClient::new(channel);
    let status = health
        .check(HealthCheckRequest {
            service: service.into(),
        })
        .await
        .unwrap()
        .into_inner()
        .status;
    ServingStatus::try_from(status).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sentinel_mode_follows_a_failover() {
    let group = RedisSentinel::start();
    let rules = rules_dir(&[("sale.yaml", RULES)]);
    let settings = RedisSettings {
        topology: RedisTopology::Sentinel {
            master: group.master_name().to_owned(),
            sentinels: group
                .sentinel_urls()
                .split(',')
                .map(str::to_owned)
                .collect(),
        },
        command_timeout: Duration::from_millis(500),
        connect_timeout: Duration::from_millis(500),
        ..RedisSettings::single("")
    };
    let mut config = with_redis(rules.path(), settings);
    // About the failover, not latency: see the cluster failover test.
    config.resilience.store_deadline = Duration::from_millis(500);
    let server = TestServer::start(config).await;
    // Alice's hourly count is read again after the failover: the test must
    // not straddle the hour's end (it once did, at 09:00, and read OK).
    with_time_left_in_window(Duration::from_secs(3_600), Duration::from_secs(90)).await;
    three_then_over(&server, "alice").await;

    let keys = (0..8).map(|i| format!("k{i}")).collect();
    through_failover("sentinel failover", vec![server.grpc_addr], keys, || {
        group.kill_master();
        group.wait_for_failover(Duration::from_secs(30));
        group.last_failover().unwrap()
    })
    .await;
    // Alice's count was replicated to the new master before the kill.
    let mut client = server.client().await;
    let resp = client
        .should_rate_limit(request("sale", vec![descriptor("user", "alice")]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(resp.overall_code, Code::OverLimit as i32);
}

fn tls_settings(
    redis: &TlsRedis,
    user: &str,
    password: &str,
    ca: std::path::PathBuf,
) -> RedisSettings {
    RedisSettings {
        username: Some(user.to_owned()),
        password: Some(Secret::new(password)),
        tls: TlsFiles {
            ca: Some(ca),
            client: Some(ClientCertificate {
                cert: redis.client_cert_file(),
                key: redis.client_key_file(),
            }),
        },
        ..RedisSettings::single(format!("rediss://127.0.0.1:{}", redis.port()))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_a_client_certificate_and_an_acl_user_works_end_to_end() {
    let redis = TlsRedis::start(true);
    let rules = rules_dir(&[("sale.yaml", RULES)]);
    let settings = tls_settings(&redis, TlsRedis::USER, TlsRedis::PASSWORD, redis.ca_file());
    let server = TestServer::start(with_redis(rules.path(), settings)).await;
    assert_eq!(health(&server).await, ServingStatus::Serving);
    three_then_over(&server, "alice").await;
    // The counter is in Redis, written by the ACL user.
    let out = redis
        .cli()
        .args([
            "--user",
            TlsRedis::USER,
            "--pass",
            TlsRedis::PASSWORD,
            "--no-auth-warning",
        ])
        .args(["--scan", "--pattern", "sale_user_alice_*"])
        .output()
        .unwrap();
    let keys = String::from_utf8_lossy(&out.stdout);
    assert_eq!(keys.lines().count(), 1, "one counter key: {keys}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_is_a_clear_startup_error() {
    let redis = TlsRedis::start(false);
    let settings = tls_settings(&redis, TlsRedis::USER, "not-the-password", redis.ca_file());
    let err = RedisStore::connect(&settings).await.unwrap_err();
    assert!(
        !err.is_transient(),
        "a wrong password is not retried: {err}"
    );
    let text = err.to_string();
    assert!(text.contains("authentication failed"), "{text}");
    assert!(
        !text.contains("not-the-password"),
        "the password never shows: {text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_untrusted_certificate_is_a_clear_startup_error() {
    let redis = TlsRedis::start(false);
    let settings = tls_settings(
        &redis,
        TlsRedis::USER,
        TlsRedis::PASSWORD,
        redis.other_ca_file(),
    );
    let err = RedisStore::connect(&settings).await.unwrap_err();
    assert!(
        !err.is_transient(),
        "an untrusted certificate is not retried: {err}"
    );
    let text = err.to_string();
    assert!(text.contains("TLS handshake failed"), "{text}");
    assert!(text.to_lowercase().contains("certificate"), "{text}");
}

/// `floodgate serve` with `args`: its exit status and stderr (bounded wait).
fn serve_and_wait(rules: &Path, args: &[&str]) -> (Option<i32>, String) {
    let mut child = Command::new(floodgate_bin())
        .arg("serve")
        .arg("--rules")
        .arg(rules)
        .args(["--grpc-addr", &format!("127.0.0.1:{}", free_port())])
        .args(["--http-addr", &format!("127.0.0.1:{}", free_port())])
        .args(["--admin-addr", "127.0.0.1:0"])
        .args(args)
        .env_remove("FLOODGATE_REDIS_PASSWORD")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    for _ in 0..200 {
        if let Some(status) = child.try_wait().unwrap() {
            let out = child.wait_with_output().unwrap();
            let text = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            return (status.code(), text);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    (None, "still running after 10 s".into())
}

#[test]
fn the_binary_names_the_cause_and_exits_1() {
    let redis = TlsRedis::start(false);
    let rules = rules_dir(&[("sale.yaml", RULES)]);
    let url = redis.url_with(TlsRedis::USER, "wrong-pw");
    let ca = redis.ca_file().display().to_string();
    // TLS files are set in the config file (they have no flags).
    let config = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        config.path(),
        format!("redis_url: {url}\nredis_tls_ca_file: {ca}\n"),
    )
    .unwrap();
    let (code, out) = serve_and_wait(
        rules.path(),
        &["--config", &config.path().display().to_string()],
    );
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("authentication failed"), "{out}");
    assert!(!out.contains("wrong-pw"), "the password never shows: {out}");

    std::fs::write(
        config.path(),
        format!(
            "redis_url: {}\nredis_tls_ca_file: {}\n",
            redis.url_with(TlsRedis::USER, TlsRedis::PASSWORD),
            redis.other_ca_file().display()
        ),
    )
    .unwrap();
    let (code, out) = serve_and_wait(
        rules.path(),
        &["--config", &config.path().display().to_string()],
    );
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("TLS handshake failed"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn starts_before_redis_in_degraded_mode_then_uses_redis() {
    let port = free_port();
    let rules = rules_dir(&[("sale.yaml", RULES)]);
    let settings = RedisSettings {
        connect_timeout: Duration::from_millis(300),
        ..RedisSettings::single(format!("redis://127.0.0.1:{port}"))
    };
    let mut config = with_redis(rules.path(), settings);
    config.resilience.check_interval = Duration::from_millis(100);
    let server = TestServer::start(config).await;
    // Serving at once, counting locally, answers marked degraded.
    assert_eq!(health(&server).await, ServingStatus::Serving);
    assert_eq!(
        health_of(&server, STORE_HEALTH_SERVICE).await,
        ServingStatus::NotServing
    );
    let mut client = server.client().await;
    let degraded = |resp: &floodgate_proto::RateLimitResponse| {
        resp.response_headers_to_add
            .iter()
            .any(|h| h.key == "x-floodgate-degraded" && h.value == "true")
    };
    let resp = client
        .should_rate_limit(request("sale", vec![descriptor("user", "alice")]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(resp.overall_code, Code::Ok as i32);
    assert!(degraded(&resp), "{resp:?}");

    let redis = tokio::task::block_in_place(|| RedisServer::start_on(port));
    let mut waited = Duration::ZERO;
    while health_of(&server, STORE_HEALTH_SERVICE).await != ServingStatus::Serving {
        assert!(
            waited < Duration::from_secs(10),
            "Redis not in use 10 s after it came up"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
        waited += Duration::from_millis(50);
    }
    let resp = client
        .should_rate_limit(request("sale", vec![descriptor("user", "bob")]))
        .await
        .unwrap()
        .into_inner();
    assert!(!degraded(&resp), "{resp:?}");
    three_then_over(&server, "carol").await;
    let mut redis_client = redis::Client::open(redis.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    // Bob and carol counted in Redis; alice's degraded hit is handed back at
    // the first health check after Redis is in use again (100 ms here).
    let mut keys: Vec<String> = Vec::new();
    for _ in 0..40 {
        keys = redis::cmd("KEYS")
            .arg("sale_user_*")
            .query_async(&mut redis_client)
            .await
            .unwrap();
        if keys.len() == 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(keys.len(), 3, "{keys:?}");
}
