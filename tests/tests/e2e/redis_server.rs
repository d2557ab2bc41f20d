//! Floodgate served over gRPC with counters in a real `redis-server`: the
//! decision flow, the keys it leaves in Redis, the health and reflection
//! services, and what a caller sees when Redis goes away.

#![allow(clippy::unwrap_used)] // Tests: a failed unwrap is a failed test.

use std::time::Duration;

use floodgate_e2e::{RedisServer, TestServer, config_with_rules, http_get, rules_dir, user_rules};
use floodgate_proto::RateLimitRequest;
use floodgate_proto::rate_limit_response::Code;
use floodgate_server::config::Config;
use floodgate_server::store::redis::RedisSettings;
use redis::AsyncCommands;

fn request(user: &str) -> RateLimitRequest {
    floodgate_e2e::request("edge", &[("user", user)])
}

fn redis_config(rules: &std::path::Path, redis: &RedisServer, prefix: &str) -> Config {
    Config {
        redis: Some(RedisSettings {
            connect_timeout: Duration::from_millis(500),
            command_timeout: Duration::from_millis(500),
            expiration_jitter_max: Duration::from_secs(300),
            ..RedisSettings::single(redis.url())
        }),
        cache_key_prefix: prefix.into(),
        ..config_with_rules(rules)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_per_hour_over_grpc_counts_in_redis_under_the_reference_key() {
    let redis = RedisServer::start();
    let rules = rules_dir(&[("edge.yaml", user_rules(3).as_str())]);
    let server = TestServer::start(redis_config(rules.path(), &redis, "fg:")).await;
    let mut client = server.client().await;

    let mut codes = Vec::new();
    for _ in 0..4 {
        let resp = client
            .should_rate_limit(request("alice"))
            .await
            .expect("call")
            .into_inner();
        let status = &resp.statuses[0];
        let reset = status.duration_until_reset.expect("reset");
        assert!(
            reset.seconds <= 3_600 && (reset.seconds > 0 || reset.nanos > 0),
            "{reset:?}"
        );
        codes.push((resp.overall_code(), status.limit_remaining));
    }
    assert_eq!(
        codes,
        [
            (Code::Ok, 2),
            (Code::Ok, 1),
            (Code::Ok, 0),
            (Code::OverLimit, 0)
        ]
    );

    let mut con = redis::Client::open(redis.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let keys: Vec<String> = con.keys("*").await.unwrap();
    assert_eq!(keys.len(), 1, "{keys:?}");
    let window_start: u64 = keys[0]
        .strip_prefix("fg:edge_user_alice_")
        .expect("reference key format")
        .parse()
        .unwrap();
    assert_eq!(
        window_start % 3_600,
        0,
        "the window is aligned to the epoch"
    );
    let count: u64 = con.get(&keys[0]).await.unwrap();
    assert_eq!(count, 4);
    let ttl: i64 = con.ttl(&keys[0]).await.unwrap();
    assert!((3_590..=3_900).contains(&ttl), "TTL {ttl}");

    server.stop().await.expect("clean drain");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_and_reflection_are_served() {
    let rules = rules_dir(&[("edge.yaml", user_rules(3).as_str())]);
    let server = TestServer::start(config_with_rules(rules.path())).await;
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", server.grpc_addr))
        .unwrap()
        .connect()
        .await
        .unwrap();

    let mut health = tonic_health::pb::health_client::HealthClient::new(channel.clone());
    for service in [
        "",
        "ratelimit",
        "envoy.service.ratelimit.v3.RateLimitService",
    ] {
        let resp = health
            .check(tonic_health::pb::HealthCheckRequest {
                service: service.into(),
            })
            .await
            .expect("health check")
            .into_inner();
        assert_eq!(
            resp.status(),
            tonic_health::pb::health_check_response::ServingStatus::Serving,
            "{service:?}"
        );
    }

    use tonic_reflection::pb::v1::ServerReflectionRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    let mut reflection = ServerReflectionClient::new(channel);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut stream = reflection
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .unwrap()
        .into_inner();
    let reply = stream.message().await.unwrap().expect("a reply");
    let Some(MessageResponse::ListServicesResponse(list)) = reply.message_response else {
        panic!("{reply:?}")
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    assert!(
        names.contains(&"envoy.service.ratelimit.v3.RateLimitService".to_owned()),
        "{names:?}"
    );

    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_going_away_is_answered_by_the_failure_policy_and_health_says_so() {
    use floodgate_server::resilience::store::FailurePolicy;
    for (policy, code) in [
        (FailurePolicy::Fallback, Code::Ok),
        (FailurePolicy::Allow, Code::Ok),
        (FailurePolicy::Deny, Code::OverLimit),
    ] {
        let redis = RedisServer::start();
        let rules = rules_dir(&[("edge.yaml", user_rules(3).as_str())]);
        let mut config = redis_config(rules.path(), &redis, "");
        config.resilience.on_failure = policy;
        config.resilience.check_interval = Duration::from_millis(100);
        let server = TestServer::start(config).await;
        let mut client = server.client().await;
        let health = format!("http://{}/healthcheck", server.http_addr);
        let resp = client
            .should_rate_limit(request("bob"))
            .await
            .unwrap()
            .into_inner();
        assert!(
            resp.response_headers_to_add.is_empty(),
            "Redis is up: not degraded"
        );

        drop(redis);
        for _ in 0..3 {
            let started = tokio::time::Instant::now();
            let resp = client
                .should_rate_limit(request("bob"))
                .await
                .expect("answered without Redis")
                .into_inner();
            assert!(
                started.elapsed() < Duration::from_secs(3),
                "took {:?}",
                started.elapsed()
            );
            assert_eq!(resp.overall_code(), code, "{policy:?}");
            assert_eq!(resp.response_headers_to_add[0].key, "x-floodgate-degraded");
        }
        // The service answers, so it is healthy; the store's own health says
        // what is wrong.
        assert_eq!(http_get(&health).await.0, 200);
        let channel =
            tonic::transport::Endpoint::from_shared(format!("http://{}", server.grpc_addr))
                .unwrap()
                .connect()
                .await
                .unwrap();
        let mut grpc_health = tonic_health::pb::health_client::HealthClient::new(channel);
        let mut status = 0;
        for _ in 0..100 {
            status = grpc_health
                .check(tonic_health::pb::HealthCheckRequest {
                    service: floodgate_server::STORE_HEALTH_SERVICE.into(),
                })
                .await
                .unwrap()
                .into_inner()
                .status;
            if status == tonic_health::pb::health_check_response::ServingStatus::NotServing as i32 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(
            status,
            tonic_health::pb::health_check_response::ServingStatus::NotServing as i32
        );
        server
            .stop()
            .await
            .expect("the server still drains cleanly");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drain_lets_calls_in_flight_finish_and_refuses_new_connections() {
    let redis = RedisServer::start();
    let rules = rules_dir(&[("edge.yaml", user_rules(3).as_str())]);
    let mut config = redis_config(rules.path(), &redis, "");
    config.redis.as_mut().unwrap().command_timeout = Duration::from_secs(10);
    config.resilience.store_deadline = Duration::from_secs(10);
    let server = TestServer::start(config).await;
    let grpc_addr = server.grpc_addr;
    let mut client = server.client().await;
    client
        .should_rate_limit(request("carl"))
        .await
        .expect("warm up");

    // A call that cannot finish while Redis is frozen.
    redis.pause();
    let in_flight = tokio::spawn(async move { client.should_rate_limit(request("carl")).await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!in_flight.is_finished(), "the call waits on Redis");

    let stopping = tokio::spawn(server.stop());
    let mut refused = false;
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(grpc_addr).await.is_err() {
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(refused, "no new connections while draining");
    assert!(
        !stopping.is_finished(),
        "the drain waits for the call in flight"
    );

    redis.resume();
    let resp = in_flight
        .await
        .unwrap()
        .expect("the call in flight completes")
        .into_inner();
    assert_eq!(
        (resp.overall_code(), resp.statuses[0].limit_remaining),
        (Code::Ok, 1)
    );
    stopping.await.unwrap().expect("clean drain");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_redis_still_gets_answers_within_the_callers_deadline() {
    let redis = RedisServer::start();
    let rules = rules_dir(&[("edge.yaml", user_rules(3).as_str())]);
    let mut config = redis_config(rules.path(), &redis, "");
    // Without the caller's deadline, a store call could wait this long.
    config.resilience.store_deadline = Duration::from_secs(30);
    config.redis.as_mut().unwrap().command_timeout = Duration::from_secs(30);
    let server = TestServer::start(config).await;
    let mut client = server.client().await;
    client.should_rate_limit(request("dora")).await.unwrap();

    redis.pause();
    for i in 0..10 {
        // grpc-timeout: 200 ms. Past it the client itself fails the call
        // with DEADLINE_EXCEEDED, so an answer means the deadline was met.
        let mut call = tonic::Request::new(request("dora"));
        call.set_timeout(Duration::from_millis(200));
        let resp = client
            .should_rate_limit(call)
            .await
            .unwrap_or_else(|e| panic!("call {i}: {e:?}"))
            .into_inner();
        assert_eq!(resp.response_headers_to_add[0].key, "x-floodgate-degraded");
    }
    redis.resume();
    server.stop().await.unwrap();
}
