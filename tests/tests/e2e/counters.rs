//! Counters no caller can push into errors, whole-second reset times on
//! every path, and recovery within one health interval: against real
//! `redis-server` processes (issue 16, items 1, 5 and 9).

#![allow(clippy::unwrap_used)] // Tests: a failed unwrap is a failed test.

use std::time::Duration;

use floodgate_e2e::redis_command::the_counter;
use floodgate_e2e::{
    RedisServer, TestServer, config_with_redis, degraded, descriptor, free_port, http_get, metric,
    request, rules_dir,
};
use floodgate_proto::RateLimitRequest;
use floodgate_proto::rate_limit_descriptor::RateLimitOverride;
use floodgate_proto::rate_limit_response::Code;
use floodgate_server::config::Config;
use floodgate_server::limiter::MAX_HITS;
use redis::AsyncCommands;

/// Two domains, one per failure policy, sharing one Redis and one breaker.
const FALLBACK_RULES: &str = "\
domain: open
descriptors:
  - key: user
    rate_limit: {unit: hour, requests_per_unit: 100}
";
const DENY_RULES: &str = "\
domain: shut
on_store_failure: deny
descriptors:
  - key: user
    rate_limit: {unit: hour, requests_per_unit: 100}
";

/// Redis deadlines of 500 ms: a debug build on a busy machine must not
/// miss the 50 ms default.
fn config(rules: &std::path::Path, redis_url: String) -> Config {
    config_with_redis(rules, redis_url, Duration::from_millis(500))
}

/// The attack: hits of 2^53 - 1 with a limit override that rises
/// on every call (so the over-limit cache never answers), 1,024 calls and
/// more. Counts saturate at 2^53 - 1 instead of overflowing `INCRBY`: the
/// attacker is answered OVER_LIMIT by Redis, and the breaker stays closed
/// for everyone else, under `fallback` and under `deny`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn huge_hits_with_a_rising_override_never_open_the_breaker() {
    let redis = RedisServer::start();
    let rules = rules_dir(&[("open.yaml", FALLBACK_RULES), ("shut.yaml", DENY_RULES)]);
    let server = TestServer::start(config(rules.path(), redis.url())).await;
    let mut client = server.client().await;

    for limit in 1..=1_030u32 {
        let mut attack = request("open", &[("user", "mallory")]);
        attack.descriptors[0].hits_addend = Some(MAX_HITS);
        attack.descriptors[0].limit = Some(RateLimitOverride {
            requests_per_unit: limit,
            unit: 3, // HOUR
        });
        let resp = client.should_rate_limit(attack).await.unwrap().into_inner();
        assert_eq!(resp.overall_code(), Code::OverLimit, "call {limit}");
        assert!(!degraded(&resp), "call {limit} answered without Redis");
    }

    // The stored count sits at the ceiling.
    let (_, count, ttl) = the_counter(&redis.url(), "open_user_mallory_*").await;
    assert_eq!(count, MAX_HITS, "saturated at 2^53 - 1");
    assert!(ttl > 0, "the saturated key keeps its TTL: {ttl}");

    // Unrelated keys are still answered by Redis, under both policies.
    for domain in ["open", "shut"] {
        let resp = client
            .should_rate_limit(request(domain, &[("user", "alice")]))
            .await
            .unwrap()
            .into_inner();
        assert!(!degraded(&resp), "{domain}: {resp:?}");
        assert_eq!(resp.overall_code(), Code::Ok, "{domain}: {resp:?}");
        assert_eq!(resp.statuses[0].limit_remaining, 99, "{domain}");
    }
    assert_store_untouched(&server).await;
    server.stop().await.unwrap();
}

/// A counter that another writer left holding something that is not a
/// count: the calls that use it get a clear error of their own, and the
/// store stays healthy for everyone else.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_counter_holding_a_non_integer_fails_only_its_own_calls() {
    let redis = RedisServer::start();
    let rules = rules_dir(&[("open.yaml", FALLBACK_RULES), ("shut.yaml", DENY_RULES)]);
    let server = TestServer::start(config(rules.path(), redis.url())).await;
    let mut client = server.client().await;
    let mut redis_client = redis::Client::open(redis.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    // The key of this hour's window, as the server builds it.
    let first = client
        .should_rate_limit(request("shut", &[("user", "broken")]))
        .await
        .unwrap()
        .into_inner();
    assert!(!degraded(&first));
    let keys: Vec<String> = redis_client.keys("shut_user_broken_*").await.unwrap();
    assert_eq!(keys.len(), 1, "{keys:?}");
    let _: () = redis_client.set(&keys[0], "1.5").await.unwrap();

    for call in 0..6 {
        let err = client
            .should_rate_limit(request("shut", &[("user", "broken")]))
            .await
            .unwrap_err();
        assert_eq!(
            err.code(),
            tonic::Code::FailedPrecondition,
            "call {call}: {err:?}"
        );
        assert!(
            err.message().contains(&keys[0]) && err.message().contains("not a count"),
            "call {call}: {}",
            err.message()
        );
    }
    for domain in ["open", "shut"] {
        let resp = client
            .should_rate_limit(request(domain, &[("user", "alice")]))
            .await
            .unwrap()
            .into_inner();
        assert!(!degraded(&resp), "{domain}: {resp:?}");
        assert_eq!(resp.overall_code(), Code::Ok, "{domain}: {resp:?}");
    }
    assert_store_untouched(&server).await;
    server.stop().await.unwrap();
}

const RESET_RULES: &str = "\
domain: reset
descriptors:
  - key: fixed
    rate_limit: {unit: hour, requests_per_unit: 1}
  - key: bucket
    rate_limit: {unit: second, requests_per_unit: 3, algorithm: token_bucket, burst: 1}
  - key: gcra
    rate_limit: {unit: second, requests_per_unit: 7, algorithm: gcra, burst: 1}
  - key: sliding
    rate_limit: {unit: second, requests_per_unit: 1, algorithm: sliding_window}
";

fn reset_request() -> RateLimitRequest {
    RateLimitRequest {
        domain: "reset".into(),
        descriptors: ["fixed", "bucket", "gcra", "sliding"]
            .iter()
            .map(|key| descriptor(&[(key, "x")]))
            .collect(),
        hits_addend: 0,
    }
}

/// Every `duration_until_reset` is whole seconds and never 0.
fn assert_whole_seconds(resp: &floodgate_proto::RateLimitResponse, what: &str) {
    for (i, status) in resp.statuses.iter().enumerate() {
        let reset = status.duration_until_reset.unwrap();
        assert!(
            reset.nanos == 0 && reset.seconds >= 1,
            "{what}: descriptor {i} resets in {reset:?}"
        );
    }
}

/// Answers from Redis, from the local over-limit cache, and from the
/// fallback store, for every algorithm: whole seconds, never 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reset_times_are_whole_seconds_on_every_path() {
    let redis = RedisServer::start();
    let rules = rules_dir(&[("reset.yaml", RESET_RULES)]);
    let server = TestServer::start(config(rules.path(), redis.url())).await;
    let mut client = server.client().await;
    let mut cached = false;
    for call in 0..5 {
        let resp = client
            .should_rate_limit(reset_request())
            .await
            .unwrap()
            .into_inner();
        assert!(!degraded(&resp));
        assert_whole_seconds(&resp, &format!("Redis, call {call}"));
        let (_, page) = http_get(&format!("http://{}/metrics", server.http_addr)).await;
        cached |= page
            .lines()
            .filter(|l| l.starts_with("floodgate_rule_over_limit_with_local_cache_total{"))
            .any(|l| l.ends_with(" 1") || l.ends_with(" 2") || l.ends_with(" 3"));
        tokio::time::sleep(Duration::from_millis(130)).await;
    }
    assert!(cached, "some answers came from the over-limit cache");
    server.stop().await.unwrap();

    // No Redis at all: the fallback store answers, degraded.
    let nothing = format!("redis://127.0.0.1:{}", free_port());
    let server = TestServer::start(config(rules.path(), nothing)).await;
    let mut client = server.client().await;
    for call in 0..3 {
        let resp = client
            .should_rate_limit(reset_request())
            .await
            .unwrap()
            .into_inner();
        assert!(degraded(&resp));
        assert_whole_seconds(&resp, &format!("fallback, call {call}"));
        tokio::time::sleep(Duration::from_millis(130)).await;
    }
    server.stop().await.unwrap();
}

/// Redis killed and restarted on the same port: answers come from Redis
/// again within half a health interval of it answering PING (the README
/// promises one interval), wherever the restart falls between two checks:
/// here just after one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recovery_within_half_a_health_interval_of_redis_returning() {
    let interval = Duration::from_secs(2);
    let redis = RedisServer::start();
    let port = redis.port();
    let rules = rules_dir(&[("open.yaml", FALLBACK_RULES)]);
    let mut config = config(rules.path(), redis.url());
    config.resilience.check_interval = interval;
    let server = TestServer::start(config).await;
    let mut client = server.client().await;
    let probe = || request("open", &[("user", "probe")]);
    let resp = client
        .should_rate_limit(probe())
        .await
        .unwrap()
        .into_inner();
    assert!(!degraded(&resp));

    drop(redis);
    // Long enough for the breaker to open or the health check to fail,
    // whichever sees the outage first.
    let down = tokio::time::Instant::now();
    while down.elapsed() < interval * 3 {
        let resp = client
            .should_rate_limit(probe())
            .await
            .unwrap()
            .into_inner();
        assert!(degraded(&resp) || down.elapsed() < interval);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        metric(server.http_addr, "floodgate_store_degraded").await,
        Some(1.0)
    );

    let redis = tokio::task::block_in_place(|| RedisServer::start_on(port));
    let back = tokio::time::Instant::now();
    loop {
        let resp = client
            .should_rate_limit(probe())
            .await
            .unwrap()
            .into_inner();
        if !degraded(&resp) {
            break;
        }
        assert!(
            back.elapsed() <= interval / 2,
            "still degraded {:?} after Redis came back (health interval {interval:?})",
            back.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    eprintln!("back on Redis {:?} after it answered PING", back.elapsed());
    drop(redis);
    server.stop().await.unwrap();
}

/// No call failed against Redis: the breaker is closed and no store failure
/// was counted.
async fn assert_store_untouched(server: &TestServer) {
    assert_eq!(
        metric(server.http_addr, "floodgate_store_breaker_state").await,
        Some(0.0)
    );
    assert_eq!(
        metric(server.http_addr, "floodgate_store_failures_total").await,
        Some(0.0)
    );
}
