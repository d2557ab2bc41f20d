//! The algorithms through the whole decision path (rules → limiter →
//! store), on both stores:
//!
//! - Two `floodgate` processes sharing one Redis, with local clocks 3 minutes
//!   apart, agree on token-bucket and GCRA decisions, because those scripts
//!   take Redis's time; the fixed window, keyed by each instance's clock,
//!   does not.
//! - Around a window boundary, the fixed window admits twice its limit in one
//!   second, while the sliding window, token bucket and GCRA stay within their
//!   documented bounds for the same traffic.

#![allow(clippy::unwrap_used)] // Tests: a failed unwrap is a failed test.

use std::sync::Arc;
use std::time::Duration;

use floodgate_e2e::{RedisServer, ServerProcess, rules_dir};
use floodgate_proto::RateLimitRequest;
use floodgate_proto::rate_limit_response::Code;
use floodgate_server::clock::Clock;
use floodgate_server::grpc::{RateLimiter, ResponseOptions};
use floodgate_server::limiter::{Limiter, LimiterOptions, RequestLimits};
use floodgate_server::rules::{Rules, load_files};
use floodgate_server::store::CounterStore;
use floodgate_server::store::key::CacheKey;
use floodgate_server::store::memory::MemoryStore;
use floodgate_server::store::redis::{RedisSettings, RedisStore};

fn request(key: &str, value: &str) -> RateLimitRequest {
    floodgate_e2e::request("edge", &[(key, value)])
}

fn redis_settings(redis: &RedisServer) -> RedisSettings {
    RedisSettings {
        connect_timeout: Duration::from_secs(2),
        command_timeout: Duration::from_secs(2),
        expiration_jitter_max: Duration::ZERO,
        ..RedisSettings::single(redis.url())
    }
}

const SKEW_RULES: &str = "
domain: edge
descriptors:
  - key: bucket
    rate_limit: {unit: minute, requests_per_unit: 1, algorithm: token_bucket, burst: 1}
  - key: smooth
    rate_limit: {unit: minute, requests_per_unit: 1, algorithm: gcra, burst: 1}
  - key: sliding
    rate_limit: {unit: minute, requests_per_unit: 1, algorithm: sliding_window}
  - key: window
    rate_limit: {unit: minute, requests_per_unit: 1}
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn processes_with_skewed_clocks_agree_on_bucket_decisions() {
    let redis = RedisServer::start();
    let rules = rules_dir(&[("edge.yaml", SKEW_RULES)]);
    let url = redis.url();
    // Two `floodgate` processes, 90 s slow and 90 s fast (the clock_offset_ms
    // test knob): their minute windows never coincide. The slow one goes
    // first: were the scripts to use the processes' clocks, the fast one would
    // see 3 minutes of refill and admit again.
    let args = ["--redis-url", url.as_str()];
    let behind = ServerProcess::start(
        rules.path(),
        &args,
        &[("FLOODGATE_CLOCK_OFFSET_MS", "-90000")],
    )
    .await;
    let ahead = ServerProcess::start(
        rules.path(),
        &args,
        &[("FLOODGATE_CLOCK_OFFSET_MS", "90000")],
    )
    .await;
    let mut clients = [behind.client().await, ahead.client().await];

    for key in ["bucket", "smooth", "sliding", "window"] {
        let mut admitted = 0;
        for i in 0..20 {
            let resp = clients[i % 2]
                .should_rate_limit(request(key, "shared"))
                .await
                .unwrap()
                .into_inner();
            admitted += usize::from(resp.overall_code() == Code::Ok);
        }
        match key {
            "window" => assert_eq!(
                admitted, 2,
                "each process counts its own fixed window: 1 + 1"
            ),
            _ => assert_eq!(admitted, 1, "{key}: both processes decide on Redis's clock"),
        }
    }
}

const BOUNDARY_RULES: &str = "
domain: edge
descriptors:
  - key: fixed
    rate_limit: {unit: minute, requests_per_unit: 10}
  - key: sliding
    rate_limit: {unit: minute, requests_per_unit: 10, algorithm: sliding_window}
  - key: bucket
    rate_limit: {unit: minute, requests_per_unit: 10, algorithm: token_bucket}
  - key: gcra
    rate_limit: {unit: minute, requests_per_unit: 10, algorithm: gcra}
";

/// 10 calls to `key` 1 s before a minute window ends, 10 more as the next
/// one starts: how many of the 20 are admitted.
async fn admitted_around_a_boundary(
    store: Arc<dyn CounterStore>,
    clock: Clock,
    key: &str,
) -> usize {
    let rules =
        Rules::new(load_files(&[("edge.yaml".into(), BOUNDARY_RULES.into())], false).unwrap());
    let limiter = Limiter::new(
        rules,
        store,
        CacheKey::new("boundary:"),
        clock.clone(),
        LimiterOptions::default(),
    );
    let service = RateLimiter::new(
        limiter,
        RequestLimits::default(),
        ResponseOptions::default(),
    );
    let mut admitted = 0;
    for burst in 0..2 {
        if burst == 1 {
            clock.advance(Duration::from_secs(1));
        }
        for _ in 0..10 {
            let resp = service
                .should_rate_limit(&request(key, "client"))
                .await
                .unwrap();
            admitted += usize::from(resp.overall_code() == Code::Ok);
        }
    }
    admitted
}

const ALGORITHMS: [&str; 4] = ["fixed", "sliding", "bucket", "gcra"];

/// A clock 59 s into a minute window (the window before the boundary).
fn before_boundary() -> Clock {
    Clock::manual(Duration::from_secs(1_700_000_040 + 59))
}

fn assert_bounds(admitted: &[(&str, usize)]) {
    let get = |name: &str| admitted.iter().find(|(k, _)| *k == name).unwrap().1;
    assert_eq!(
        get("fixed"),
        20,
        "the fixed window admits 2× its limit across the boundary: {admitted:?}"
    );
    // Sliding window: the full previous window still weighs ~59/60 at the boundary.
    assert_eq!(get("sliding"), 10, "{admitted:?}");
    // Buckets: at most burst + rate × elapsed = 10 + 10/60 per s × 1 s.
    assert_eq!(get("bucket"), 10, "{admitted:?}");
    assert_eq!(get("gcra"), 10, "{admitted:?}");
}

#[tokio::test]
async fn around_a_boundary_on_the_memory_store() {
    let mut all = Vec::new();
    for key in ALGORITHMS {
        let clock = before_boundary();
        let store = Arc::new(MemoryStore::new(1_000, clock.clone()));
        all.push((key, admitted_around_a_boundary(store, clock, key).await));
    }
    assert_bounds(&all);
}

#[tokio::test]
async fn around_a_boundary_on_redis() {
    let redis = RedisServer::start();
    let base = RedisStore::connect(&redis_settings(&redis)).await.unwrap();
    let mut all = Vec::new();
    for key in ALGORITHMS {
        // Each algorithm has its own keys; each gets a clock 1 s before the boundary.
        let clock = before_boundary();
        let store = Arc::new(base.clone().with_local_time(clock.clone()));
        all.push((key, admitted_around_a_boundary(store, clock, key).await));
    }
    assert_bounds(&all);
}
