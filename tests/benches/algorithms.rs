//! Criterion benchmarks of one check per algorithm, on the memory store and
//! on a real `redis-server` (one EVALSHA round trip over loopback).
//!
//! Run: `cargo bench -p floodgate-e2e --bench algorithms`.

use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use floodgate_e2e::RedisServer;
use floodgate_server::clock::Clock;
use floodgate_server::limiter::algorithm::{Algorithm, Rate};
use floodgate_server::store::memory::MemoryStore;
use floodgate_server::store::redis::{RedisSettings, RedisStore};
use floodgate_server::store::{Check, Commit, CounterStore};

const ALGORITHMS: [(&str, Algorithm); 4] = [
    ("fixed_window", Algorithm::FixedWindow),
    ("sliding_window", Algorithm::SlidingWindow),
    ("token_bucket", Algorithm::TokenBucket),
    ("gcra", Algorithm::Gcra),
];

/// A limit so generous that every hit is allowed (so every call writes).
fn check(algorithm: Algorithm) -> Check {
    Check {
        key: format!("bench_user_alice_{}", algorithm.name()),
        hits: 1,
        algorithm,
        rate: Rate {
            limit: 1 << 40,
            period_ms: 60_000.0,
            burst: 1 << 40,
        },
        reset_after: Duration::from_secs(30),
        veto: true,
        capacity: None,
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
    let mut group = c.benchmark_group("algorithm");
    for (name, algorithm) in ALGORITHMS {
        let one = [check(algorithm)];
        group.bench_function(format!("{name}/memory"), |b| {
            b.to_async(&runtime)
                .iter(|| async { memory.apply(&one, Commit::Each).await.expect("memory") })
        });
        group.bench_function(format!("{name}/redis"), |b| {
            b.to_async(&runtime)
                .iter(|| async { redis.apply(&one, Commit::Each).await.expect("redis") })
        });
    }
    group.finish();
}

criterion_group!(benches, algorithms);
criterion_main!(benches);
