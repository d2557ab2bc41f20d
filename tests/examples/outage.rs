//! Decision latency before, during and after a Redis outage, under steady
//! closed-loop load: Redis killed (connections refused) and Redis frozen
//! (SIGSTOP: connections open, no answers), each then brought back.
//!
//! `cargo run --release -p floodgate-e2e --example outage [seconds per phase]`

#![allow(clippy::unwrap_used)] // A measurement script: a failure should stop it loudly.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use floodgate_e2e::{BENCH_RULES, RedisServer, TestServer, config_with_rules, rules_dir};
use floodgate_proto::rate_limit_descriptor::Entry;
use floodgate_proto::{RateLimitDescriptor, RateLimitRequest, RateLimitServiceClient};
use floodgate_server::config::Config;
use floodgate_server::store::FailurePolicy;
use floodgate_server::store::redis::RedisSettings;
use tokio::time::Instant;
use tonic::transport::Endpoint;

const CONNECTIONS: usize = 8;
const STREAMS: usize = 4;

struct Call {
    at: Instant,
    latency: Duration,
    ok: bool,
    degraded: bool,
    over: bool,
}

fn request(n: usize) -> RateLimitRequest {
    RateLimitRequest {
        domain: "bench".into(),
        descriptors: vec![RateLimitDescriptor {
            entries: vec![Entry {
                key: "user".into(),
                value: format!("u{}", n % 1_000),
            }],
            ..Default::default()
        }],
        hits_addend: 0,
    }
}

async fn load(server: &TestServer, stop: Arc<AtomicBool>) -> tokio::task::JoinSet<Vec<Call>> {
    let mut tasks = tokio::task::JoinSet::new();
    for c in 0..CONNECTIONS {
        let channel = Endpoint::from_shared(format!("http://{}", server.grpc_addr))
            .unwrap()
            .connect()
            .await
            .unwrap();
        for s in 0..STREAMS {
            let mut client = RateLimitServiceClient::new(channel.clone());
            let stop = stop.clone();
            tasks.spawn(async move {
                let mut calls = Vec::new();
                let mut n = c * 100 + s;
                while !stop.load(Ordering::Relaxed) {
                    n += 7;
                    let start = Instant::now();
                    let result = client.should_rate_limit(request(n)).await;
                    let latency = start.elapsed();
                    let degraded = result
                        .as_ref()
                        .is_ok_and(|r| !r.get_ref().response_headers_to_add.is_empty());
                    let over = result.as_ref().is_ok_and(|r| r.get_ref().overall_code != 1);
                    calls.push(Call {
                        at: Instant::now(),
                        latency,
                        ok: result.is_ok(),
                        degraded,
                        over,
                    });
                }
                calls
            });
        }
    }
    tasks
}

fn row(phase: &str, calls: &[&Call], seconds: f64) {
    let mut latencies: Vec<Duration> = calls.iter().map(|c| c.latency).collect();
    latencies.sort_unstable();
    let pct = |p: f64| {
        latencies
            .get(((latencies.len().max(1) - 1) as f64 * p).round() as usize)
            .copied()
            .unwrap_or_default()
    };
    println!(
        "| {phase} | {} | {:.0} | {:?} | {:?} | {:?} | {} | {} | {} |",
        calls.len(),
        calls.len() as f64 / seconds,
        pct(0.5),
        pct(0.99),
        latencies.last().copied().unwrap_or_default(),
        calls.iter().filter(|c| !c.ok).count(),
        calls.iter().filter(|c| c.degraded).count(),
        calls.iter().filter(|c| c.over).count(),
    );
}

async fn scenario(name: &str, phase: Duration, frozen: bool, policy: FailurePolicy) {
    let mut redis = Some(RedisServer::start());
    let port = redis.as_ref().unwrap().port();
    let rules = rules_dir(&[("bench.yaml", BENCH_RULES)]);
    let mut config = Config {
        redis: Some(RedisSettings::single(format!("redis://127.0.0.1:{port}"))),
        ..config_with_rules(rules.path())
    };
    config.resilience.on_failure = policy;
    let server = TestServer::start(config).await;
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = load(&server, stop.clone()).await;

    let t0 = Instant::now();
    tokio::time::sleep(phase).await;
    let down = Instant::now();
    if frozen {
        redis.as_ref().unwrap().pause();
    } else {
        redis = None;
    }
    tokio::time::sleep(phase).await;
    let up = Instant::now();
    match &redis {
        Some(frozen) => frozen.resume(),
        None => redis = Some(tokio::task::block_in_place(|| RedisServer::start_on(port))),
    }
    // After: from Redis's return, the health check (5 s) brings traffic back.
    tokio::time::sleep(phase + Duration::from_secs(5)).await;
    stop.store(true, Ordering::Relaxed);
    let end = Instant::now();
    let mut calls = Vec::new();
    while let Some(done) = tasks.join_next().await {
        calls.extend(done.unwrap());
    }
    let back = calls
        .iter()
        .filter(|c| c.at > up && !c.degraded)
        .map(|c| c.at)
        .min();
    println!();
    println!(
        "{name}, on_store_failure {policy:?}: Redis back on traffic {:?} after it returned",
        back.map(|b| b - up)
    );
    println!("| phase | calls | calls/s | p50 | p99 | max | errors | degraded | OVER_LIMIT |");
    println!("|---|---|---|---|---|---|---|---|---|");
    let between = |a: Instant, b: Instant| -> Vec<&Call> {
        calls.iter().filter(|c| c.at >= a && c.at < b).collect()
    };
    row("before", &between(t0, down), (down - t0).as_secs_f64());
    row("during", &between(down, up), (up - down).as_secs_f64());
    let after = back.unwrap_or(up);
    row(
        "returning",
        &between(up, after),
        (after - up).as_secs_f64().max(1e-3),
    );
    row("after", &between(after, end), (end - after).as_secs_f64());
    server.stop().await.unwrap();
    drop(redis);
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let seconds: u64 = std::env::args().nth(1).map_or(4, |s| s.parse().unwrap());
    let phase = Duration::from_secs(seconds);
    println!(
        "closed loop, {CONNECTIONS} connections x {STREAMS} streams, no grpc-timeout (store_deadline 50 ms), default resilience settings"
    );
    let killed = "Redis killed, then restarted";
    scenario(killed, phase, false, FailurePolicy::Fallback).await;
    scenario(
        "Redis frozen (SIGSTOP), then thawed",
        phase,
        true,
        FailurePolicy::Fallback,
    )
    .await;
    scenario(killed, phase, false, FailurePolicy::Allow).await;
    scenario(killed, phase, false, FailurePolicy::Deny).await;
}
