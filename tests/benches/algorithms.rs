//! Criterion benchmarks of one check per algorithm, on the memory store and
//! on a real `redis-server` (one EVALSHA round trip over loopback).
//!
//! Run: `cargo bench -p floodgate-e2e --bench algorithms`.

use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use floodgate_e2e::RedisServer;
use floodgate_server::clock::Clock;
use floodgate_server::model::algorithm::{Algorithm, Rate};
use floodgate_server::model::capacity::{Capacity, CapacityRule, LimitNames};
use floodgate_server::rules::Unit;
use floodgate_server::store::memory::MemoryStore;
use floodgate_server::store::redis::{RedisSettings, RedisStore};
use floodgate_server::store::{CapacityCall, Check, Commit, CounterStore, Limit};
use std::sync::Arc;

/// The algorithms by name; `None` is a capacity rule.
const ALGORITHMS: [(&str, Option<Algorithm>); 5] = [
    ("fixed_window", Some(Algorithm::FixedWindow)),
    ("sliding_window", Some(Algorithm::SlidingWindow)),
    ("token_bucket", Some(Algorithm::TokenBucket)),
    ("gcra", Some(Algorithm::Gcra)),
    ("capacity", None),
];

/// A capacity rule with three classes and 1,000 clients already in the
/// window (the call is one more of theirs).
fn capacity_call(client: &str) -> CapacityCall {
    let rule = CapacityRule {
        limits: Capacity {
            total: 1 << 40,
            guaranteed_share: 0.8,
            class_max_share: vec![1.0, 0.9, 0.7],
            max_clients: 1_000,
        },
        unit: Unit::Minute,
        unit_multiplier: 1,
        share_by: "user".into(),
        priority_by: Some("priority".into()),
        classes: vec!["critical".into(), "default".into(), "sheddable".into()],
        default_class: 2,
        weights: Default::default(),
        name: None,
        names: LimitNames::new(
            None,
            &["critical".into(), "default".into(), "sheddable".into()],
        ),
    };
    CapacityCall {
        rule: Arc::new(rule),
        client: client.to_owned(),
        weight: 1.0,
        class: 1,
        reset_after: Duration::from_secs(30),
    }
}

/// A limit so generous that every hit is allowed (so every call writes);
/// `None`: the capacity rule, asked by client `u999`.
fn check(algorithm: Option<Algorithm>) -> Check {
    let Some(algorithm) = algorithm else {
        return capacity_check("u999");
    };
    let rate = Rate {
        limit: 1 << 40,
        period_ms: 60_000.0,
        burst: 1 << 40,
    };
    Check {
        key: format!("bench_user_alice_{}", algorithm.name()),
        hits: 1,
        limit: Limit::of(algorithm, rate, Duration::from_secs(30)),
        veto: true,
    }
}

/// One hit on the capacity rule from `client`.
fn capacity_check(client: &str) -> Check {
    Check {
        key: "bench_service_checkout_cap0".into(),
        hits: 1,
        limit: Limit::Capacity(capacity_call(client)),
        veto: true,
    }
}

fn algorithms(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let memory = MemoryStore::new(100_000, Clock::System);
    let redis_server = RedisServer::start();
    let settings = RedisSettings {
        connect_timeout: Duration::from_secs(2),
        command_timeout: Duration::from_secs(2),
        expiration_jitter_max: Duration::from_secs(300),
        ..RedisSettings::single(redis_server.url())
    };
    let redis = runtime
        .block_on(RedisStore::connect(&settings))
        .expect("connect");
    // Fill the capacity rule's window with 1,000 clients.
    let fill: Vec<Check> = (0..1_000)
        .map(|i| capacity_check(&format!("u{i}")))
        .collect();
    runtime.block_on(async {
        memory
            .apply(&fill, Commit::Each.into())
            .await
            .expect("memory");
        redis
            .apply(&fill, Commit::Each.into())
            .await
            .expect("redis");
    });
    let mut group = c.benchmark_group("algorithm");
    for (name, algorithm) in ALGORITHMS {
        let one = [check(algorithm)];
        group.bench_function(format!("{name}/memory"), |b| {
            b.to_async(&runtime).iter(|| async {
                memory
                    .apply(&one, Commit::Each.into())
                    .await
                    .expect("memory")
            })
        });
        group.bench_function(format!("{name}/redis"), |b| {
            b.to_async(&runtime)
                .iter(|| async { redis.apply(&one, Commit::Each.into()).await.expect("redis") })
        });
    }
    group.finish();
}

criterion_group!(benches, algorithms);
criterion_main!(benches);
