//! The performance table: the same load (`floodgate bench`, a separate
//! process) against the constant-OK baseline and against Floodgate on the
//! memory store, a single Redis and a 3-primary Redis Cluster, every server
//! a separate process on loopback, all started and stopped here, one run.
//!
//! Run it through `bench/run`, which builds what it needs in release mode.
//! `bench/run [seconds] [connections] [streams]`

#![allow(clippy::unwrap_used)] // A measurement script: a failure should stop it loudly.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use floodgate_e2e::redis_topology::RedisCluster;
use floodgate_e2e::{RedisServer, ServerProcess, free_port, rules_dir, wait_until_listening};

const RULES: &str = "\
domain: bench
descriptors:
  - key: user
    rate_limit: {unit: hour, requests_per_unit: 1000000000}
";

fn release_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    // target/release/examples/bench_table → target/release
    exe.parent().and_then(Path::parent).unwrap().to_path_buf()
}

/// Runs `floodgate bench --json` against `target` and returns its summary.
fn bench(target: &str, seconds: u64, connections: usize, streams: usize) -> serde_json::Value {
    let out = Command::new(release_dir().join("floodgate"))
        .args(["bench", "--json", "--target", target, "--domain", "bench"])
        .args([
            "--keys",
            "uniform:10000",
            "--duration",
            &format!("{seconds}s"),
        ])
        .args(["--connections", &connections.to_string()])
        .args(["--streams", &streams.to_string()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "bench failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

struct Baseline(Child);

impl Drop for Baseline {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let mut args = std::env::args().skip(1);
    let seconds: u64 = args.next().map_or(10, |s| s.parse().unwrap());
    let connections: usize = args.next().map_or(16, |s| s.parse().unwrap());
    let streams: usize = args.next().map_or(16, |s| s.parse().unwrap());

    let port = free_port();
    let baseline = Baseline(
        Command::new(release_dir().join("examples").join("baseline"))
            .arg(format!("127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .spawn()
            .expect("build it first: cargo build --release -p floodgate-server --example baseline"),
    );
    let baseline_addr = format!("127.0.0.1:{port}").parse().unwrap();
    wait_until_listening(baseline_addr, || None).await;

    let rules = rules_dir(&[("bench.yaml", RULES)]);
    let redis = RedisServer::start();
    let cluster = RedisCluster::start();
    let memory = ServerProcess::start(rules.path(), &[], &[]).await;
    let single = ServerProcess::start(rules.path(), &["--redis-url", &redis.url()], &[]).await;
    let seeds = cluster.seed_urls();
    let clustered = ServerProcess::start(
        rules.path(),
        &["--redis-mode", "cluster", "--redis-url", &seeds],
        &[],
    )
    .await;

    println!(
        "floodgate bench: closed loop, {connections} connections x {streams} streams, {seconds} s each, \
         1 descriptor, uniform over 10,000 users; servers and load generator are separate processes"
    );
    println!("| server | calls/s | ratio to baseline | p50 | p99 | max | errors | degraded |");
    println!("|---|---|---|---|---|---|---|---|");
    let targets = [
        ("constant-OK baseline", format!("http://{baseline_addr}")),
        (
            "Floodgate, memory store",
            format!("http://{}", memory.grpc_addr),
        ),
        (
            "Floodgate, Redis single",
            format!("http://{}", single.grpc_addr),
        ),
        (
            "Floodgate, Redis Cluster (3 primaries)",
            format!("http://{}", clustered.grpc_addr),
        ),
    ];
    let mut base = None;
    for (name, target) in &targets {
        let s = bench(target, seconds, connections, streams);
        let rate = s["calls_per_second"].as_f64().unwrap();
        let base_rate = *base.get_or_insert(rate);
        let errors: u64 = s["errors"].as_object().map_or(0, |m| {
            m.values().filter_map(serde_json::Value::as_u64).sum()
        });
        let l = &s["latency_us"];
        println!(
            "| {name} | {rate:.0} | {:.2} | {} us | {} us | {} us | {errors} | {} |",
            rate / base_rate,
            l["p50"],
            l["p99"],
            l["max"],
            s["degraded"],
        );
    }
    drop((memory, single, clustered, baseline));
}
