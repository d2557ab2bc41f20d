//! Floodgate when Redis fails under steady load: every call answered in
//! degraded mode, traffic back on Redis after it returns, and the counts
//! taken locally during the outage handed back.

#![allow(clippy::unwrap_used)] // Tests: a failed unwrap is a failed test.

use std::time::Duration;

use floodgate_e2e::degraded;
use floodgate_e2e::load::{descriptor, request, steady_load};
use floodgate_e2e::redis_command::the_counter;
use floodgate_e2e::{RedisServer, TestServer, config_with_redis, rules_dir};
use floodgate_proto::rate_limit_response::Code;
use floodgate_server::config::Config;

const RULES: &str = "\
domain: sale
descriptors:
  - key: user
    rate_limit: {unit: hour, requests_per_unit: 5}
  - key: steady
    rate_limit: {unit: hour, requests_per_unit: 100000000}
";

fn config(rules: &std::path::Path, redis: &RedisServer) -> Config {
    // Degraded answers here must come from the outage, not from a debug
    // build on a busy CI machine missing the 50 ms default deadline.
    let mut config = config_with_redis(rules, redis.url(), Duration::from_millis(200));
    config.resilience.check_interval = Duration::from_millis(500);
    config
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_and_restarted_under_load() {
    let redis = RedisServer::start();
    let port = redis.port();
    let rules = rules_dir(&[("sale.yaml", RULES)]);
    let server = TestServer::start(config(rules.path(), &redis)).await;
    let mut client = server.client().await;
    let eve = || request("sale", vec![descriptor("user", "eve")]);
    client.should_rate_limit(eve()).await.unwrap();

    let keys = (0..8).map(|i| format!("k{i}")).collect();
    let load = steady_load(vec![server.grpc_addr], 8, keys);
    tokio::time::sleep(Duration::from_secs(1)).await;

    drop(redis);
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Eve's two calls during the outage are counted locally.
    for _ in 0..2 {
        let resp = client.should_rate_limit(eve()).await.unwrap().into_inner();
        assert!(degraded(&resp), "{resp:?}");
    }
    tokio::time::sleep(Duration::from_secs(2)).await;

    let redis = tokio::task::block_in_place(|| RedisServer::start_on(port));
    let back = tokio::time::Instant::now();
    loop {
        let resp = client
            .should_rate_limit(request("sale", vec![descriptor("steady", "probe")]))
            .await
            .unwrap()
            .into_inner();
        if !degraded(&resp) {
            break;
        }
        assert!(
            back.elapsed() < Duration::from_secs(1) + Duration::from_millis(500),
            "traffic returns to Redis within 2 x check_interval (plus a margin)"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let report = load.stop().await;
    let (calls, answered_locally, errors) = report.counts();
    eprintln!(
        "Redis killed and restarted under load: {calls} calls, {answered_locally} degraded, {errors} errors"
    );
    assert!(calls > 100);
    assert!(
        answered_locally > 0,
        "the outage was answered without Redis"
    );
    assert_eq!(errors, 0, "no call failed");

    // The restarted Redis is empty but for what was handed back: eve's two
    // local hits (the first, before the outage, died with the old Redis).
    let (_, count, ttl) = the_counter(&redis.url(), "sale_user_eve_*").await;
    assert_eq!(count, 2, "the outage's hits reached Redis");
    assert!(ttl > 0, "handed-back keys expire with their window");
    let resp = client.should_rate_limit(eve()).await.unwrap().into_inner();
    assert!(!degraded(&resp));
    assert_eq!(
        (resp.overall_code(), resp.statuses[0].limit_remaining),
        (Code::Ok, 2)
    );
    server.stop().await.unwrap();
}
