//! Floodgate on a single Redis vs a 3-primary Redis Cluster, measured side by
//! side in one run: calls/s and latency under the same closed-loop load, and
//! Redis commands per request for 1, 3 and 10 descriptors.
//!
//! `cargo run --release -p floodgate-e2e --example redis_topologies [seconds]`

#![allow(clippy::unwrap_used)] // A measurement script: a failure should stop it loudly.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use floodgate_e2e::RedisCluster;
use floodgate_e2e::redis_command::{command, info_number};
use floodgate_e2e::{BENCH_RULES, RedisServer, TestServer, config_with_rules, rules_dir};
use floodgate_proto::rate_limit_descriptor::Entry;
use floodgate_proto::{RateLimitDescriptor, RateLimitRequest, RateLimitServiceClient};
use floodgate_server::config::Config;
use floodgate_server::store::redis::{RedisSettings, RedisTopology};
use tokio::time::Instant;
use tonic::transport::Endpoint;

const CONNECTIONS: usize = 16;
const STREAMS_PER_CONNECTION: usize = 4;
const USERS: usize = 10_000;

fn request(first_user: usize, descriptors: usize) -> RateLimitRequest {
    RateLimitRequest {
        domain: "bench".into(),
        descriptors: (0..descriptors)
            .map(|i| RateLimitDescriptor {
                entries: vec![Entry {
                    key: "user".into(),
                    value: format!("u{}", (first_user + i * 7_919) % USERS),
                }],
                ..Default::default()
            })
            .collect(),
        hits_addend: 0,
    }
}

struct Load {
    calls: usize,
    errors: usize,
    seconds: f64,
    latencies: Vec<Duration>,
}

impl Load {
    fn percentile(&self, p: f64) -> Duration {
        let i = ((self.latencies.len() as f64 - 1.0) * p).round() as usize;
        self.latencies[i]
    }
}

/// Closed loop: CONNECTIONS connections × STREAMS_PER_CONNECTION callers each.
async fn closed_loop(server: &TestServer, seconds: u64, descriptors: usize) -> Load {
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = tokio::task::JoinSet::new();
    for c in 0..CONNECTIONS {
        let channel = Endpoint::from_shared(format!("http://{}", server.grpc_addr))
            .unwrap()
            .connect()
            .await
            .unwrap();
        for s in 0..STREAMS_PER_CONNECTION {
            let mut client = RateLimitServiceClient::new(channel.clone());
            let stop = stop.clone();
            tasks.spawn(async move {
                let mut latencies = Vec::new();
                let mut errors = 0;
                let mut n = c * 1_000 + s * 100;
                while !stop.load(Ordering::Relaxed) {
                    n = (n + 1) % USERS;
                    let start = Instant::now();
                    if client
                        .should_rate_limit(request(n, descriptors))
                        .await
                        .is_err()
                    {
                        errors += 1;
                    }
                    latencies.push(start.elapsed());
                }
                (latencies, errors)
            });
        }
    }
    let start = Instant::now();
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    stop.store(true, Ordering::Relaxed);
    let mut load = Load {
        calls: 0,
        errors: 0,
        seconds: 0.0,
        latencies: Vec::new(),
    };
    while let Some(done) = tasks.join_next().await {
        let (latencies, errors) = done.unwrap();
        load.errors += errors;
        load.latencies.extend(latencies);
    }
    load.seconds = start.elapsed().as_secs_f64();
    load.calls = load.latencies.len();
    load.latencies.sort_unstable();
    load
}

/// EVALSHA calls counted by Redis on `ports` since the last reset.
fn evalsha_calls(ports: &[u16]) -> u64 {
    ports
        .iter()
        .map(|&p| info_number(p, "commandstats", "cmdstat_evalsha", Some("calls")))
        .sum()
}

fn reset_stats(ports: &[u16]) {
    for &p in ports {
        command(p, &["CONFIG", "RESETSTAT"]).unwrap();
    }
}

/// Average EVALSHA commands per request and mean latency of sequential calls.
async fn commands_per_request(
    server: &TestServer,
    ports: &[u16],
    descriptors: usize,
) -> (f64, Duration) {
    let mut client = server.client().await;
    reset_stats(ports);
    const CALLS: usize = 500;
    let start = Instant::now();
    for i in 0..CALLS {
        client
            .should_rate_limit(request(i * 13, descriptors))
            .await
            .unwrap();
    }
    let mean = start.elapsed() / CALLS as u32;
    (evalsha_calls(ports) as f64 / CALLS as f64, mean)
}

fn config(rules: &std::path::Path, redis: RedisSettings) -> Config {
    Config {
        redis: Some(redis),
        ..config_with_rules(rules)
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let seconds: u64 = std::env::args().nth(1).map_or(5, |s| s.parse().unwrap());
    let rules = rules_dir(&[("bench.yaml", BENCH_RULES)]);
    let single = RedisServer::start();
    let cluster = RedisCluster::start();

    let single_server =
        TestServer::start(config(rules.path(), RedisSettings::single(single.url()))).await;
    let cluster_server = TestServer::start(config(
        rules.path(),
        RedisSettings {
            topology: RedisTopology::Cluster(
                cluster.seed_urls().split(',').map(str::to_owned).collect(),
            ),
            ..RedisSettings::single("")
        },
    ))
    .await;

    println!(
        "closed loop, {CONNECTIONS} connections x {STREAMS_PER_CONNECTION} streams, {seconds} s each, 1 descriptor, {USERS} users; one run, alternating"
    );
    println!("| store | calls/s | p50 | p99 | errors |");
    println!("|---|---|---|---|---|");
    for round in 0..2 {
        for (name, server) in [
            ("Redis single", &single_server),
            ("Redis Cluster (3 primaries)", &cluster_server),
        ] {
            let load = closed_loop(server, seconds, 1).await;
            println!(
                "| {name} (round {}) | {:.0} | {:?} | {:?} | {} |",
                round + 1,
                load.calls as f64 / load.seconds,
                load.percentile(0.5),
                load.percentile(0.99),
                load.errors
            );
        }
    }

    println!();
    println!(
        "| descriptors | single: EVALSHA/request | single: mean latency | cluster: EVALSHA/request | cluster: mean latency |"
    );
    println!("|---|---|---|---|---|");
    let primaries = cluster.primary_ports();
    for descriptors in [1, 3, 10] {
        let (single_cmds, single_latency) =
            commands_per_request(&single_server, &[single.port()], descriptors).await;
        let (cluster_cmds, cluster_latency) =
            commands_per_request(&cluster_server, &primaries, descriptors).await;
        println!(
            "| {descriptors} | {single_cmds:.2} | {single_latency:?} | {cluster_cmds:.2} | {cluster_latency:?} |"
        );
    }
    single_server.stop().await.unwrap();
    cluster_server.stop().await.unwrap();
}
