//! The performance table: the same load (`floodgate bench`, a separate
//! process, and h2load when it is installed) against the constant-OK
//! ceiling (`floodgate ceiling`) and against Floodgate on the memory store,
//! a single Redis and a 3-primary Redis Cluster, every server a separate
//! process on loopback, all started and stopped here, one run. The last
//! row is the ceiling again on tokio's default scheduling (the servers'
//! runtime runs woken tasks in order: `server_runtime` in cli.rs).
//!
//! What it prints:
//! 1. closed loop, in rounds (every server once per round and per
//!    generator, in turn, so that the machine's noise falls on all of
//!    them): median calls/s of each generator, the median of each round's
//!    ratio to the ceiling, p50 and p99;
//!    then a capacity rule against a fixed-window rule, and what TLS costs:
//!    the memory store served plaintext, over TLS and over mTLS
//!    (certificates made with rcgen at run time), in rounds: calls/s, its
//!    ratio to plaintext, p50 and p99; and how a Redis Cluster's
//!    throughput goes with its primaries (1, 3, 6, without replicas, as the
//!    single Redis runs) and what a replica per primary costs, each against
//!    the single Redis in the same round;
//! 2. open loop at half of each server's median throughput: latency;
//! 3. Redis single: EVALSHA commands per call and client connections
//!    (concurrent calls pipelined on one connection);
//! 4. memory: idle RSS, and RSS after floods of distinct keys past the
//!    memory store's bound; then RSS with a domain of 100,000 descriptors.
//!
//! Run it through `bench/run`, which builds what it needs (the measured
//! binary with the dist profile; `FLOODGATE_E2E_BIN` names it).
//! `bench/run [--quick] [seconds] [rounds] [connections] [streams]`;
//! `--quick` (CI: keeps it compiling and working) runs 1 s, one round, a
//! small flood and a small domain, and its figures mean nothing.

#![allow(clippy::unwrap_used)] // A measurement script: a failure should stop it loudly.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use floodgate_e2e::RedisCluster;
use floodgate_e2e::redis_command::info_number;
use floodgate_e2e::{
    BENCH_RULES, RedisServer, ServerProcess, free_port, rules_dir, wait_until_listening,
};
use floodgate_proto::rate_limit_descriptor::Entry;
use floodgate_proto::{RateLimitDescriptor, RateLimitRequest};
use prost::Message;
use serde_json::Value;

/// What one run measures.
struct Plan {
    seconds: u64,
    rounds: usize,
    connections: usize,
    streams: usize,
    /// Distinct keys per flood, and the memory store's bound for it.
    flood: u64,
}

impl Plan {
    fn from_args() -> Plan {
        let mut args: Vec<String> = std::env::args().skip(1).collect();
        let quick = args.first().is_some_and(|a| a == "--quick");
        if quick {
            args.remove(0);
        }
        let mut next = |default: u64| {
            if args.is_empty() {
                default
            } else {
                args.remove(0).parse().unwrap()
            }
        };
        if quick {
            Plan {
                seconds: next(1),
                rounds: next(1) as usize,
                connections: next(4) as usize,
                streams: next(4) as usize,
                flood: 2_000,
            }
        } else {
            Plan {
                seconds: next(10),
                rounds: next(3) as usize,
                connections: next(16) as usize,
                streams: next(16) as usize,
                flood: 1_000_000,
            }
        }
    }
}

/// The `floodgate` binary measured: `FLOODGATE_E2E_BIN` (bench/run sets
/// it to the `dist` build), else the one of this build.
fn floodgate() -> PathBuf {
    floodgate_e2e::floodgate_bin()
}

/// Runs `floodgate bench --json` with `extra` and returns its summary.
fn bench(target: &str, plan: &Plan, seconds: u64, extra: &[&str]) -> Value {
    bench_on(target, (plan.connections, plan.streams), seconds, extra)
}

/// [`bench`] over `connections × streams` callers.
fn bench_on(
    target: &str,
    (connections, streams): (usize, usize),
    seconds: u64,
    extra: &[&str],
) -> Value {
    let out = Command::new(floodgate())
        .args(["bench", "--json", "--target", target, "--domain", "bench"])
        .args(["--duration", &format!("{seconds}s")])
        .args(["--connections", &connections.to_string()])
        .args(["--streams", &streams.to_string()])
        .args(extra)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "bench failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn errors(s: &Value) -> u64 {
    s["errors"]
        .as_object()
        .map_or(0, |m| m.values().filter_map(Value::as_u64).sum())
}

/// Section 1d: Floodgate on clusters of 1, 3 (the table's) and 6 primaries
/// without replicas, and on 3 primaries with a replica each, every one
/// against the single Redis (`single`) in the same round, with both
/// generators: calls/s, the median of the rounds' ratios to the single
/// Redis, degraded answers.
async fn cluster_rows(plan: &Plan, rules: &Path, (single, three): (&str, &str)) {
    let clusters = [
        ("1 primary", RedisCluster::primaries_only(1)),
        ("6 primaries", RedisCluster::primaries_only(6)),
        ("3 primaries, a replica each", RedisCluster::start()),
    ];
    let mut servers = Vec::new();
    for (_, cluster) in &clusters {
        let seeds = cluster.seed_urls();
        let args = ["--redis-mode", "cluster", "--redis-url", &seeds];
        servers.push(ServerProcess::start(rules, &args, &[]).await);
    }
    let mut rows: Vec<(String, String)> = vec![
        ("Redis single".into(), single.to_owned()),
        (
            format!("Redis Cluster, {}", clusters[0].0),
            format!("http://{}", servers[0].grpc_addr),
        ),
        ("Redis Cluster, 3 primaries".into(), three.to_owned()),
    ];
    for (i, (name, _)) in clusters.iter().enumerate().skip(1) {
        rows.push((
            format!("Redis Cluster, {name}"),
            format!("http://{}", servers[i].grpc_addr),
        ));
    }
    let body = h2load_body();
    let with_h2load = Command::new("h2load").arg("--version").output().is_ok();
    // Per row: bench calls/s, ratios; h2load calls/s, ratios; degraded.
    let mut got: Vec<([Vec<f64>; 4], u64)> = rows.iter().map(|_| Default::default()).collect();
    for _ in 0..plan.rounds {
        let (mut base, mut h2load_base) = (1.0, 1.0);
        for (i, (_, target)) in rows.iter().enumerate() {
            if with_h2load {
                let (rate, _) = h2load(target, plan, body.path());
                if i == 0 {
                    h2load_base = rate.max(1.0);
                }
                got[i].0[2].push(rate);
                got[i].0[3].push(rate / h2load_base);
            }
            let s = bench(target, plan, plan.seconds, &["--keys", "uniform:10000"]);
            let rate = s["calls_per_second"].as_f64().unwrap();
            if i == 0 {
                base = rate.max(1.0);
            }
            got[i].0[0].push(rate);
            got[i].0[1].push(rate / base);
            got[i].1 += s["degraded"].as_u64().unwrap() + errors(&s);
        }
    }
    println!();
    println!(
        "Floodgate on Redis Cluster, primaries without replicas (as the single Redis) and with a replica each, against the single Redis, {} round(s):",
        plan.rounds
    );
    println!(
        "| Redis | floodgate bench calls/s | ratio to single | h2load calls/s | ratio to single | degraded or errors |"
    );
    println!("|---|---|---|---|---|---|");
    for ((name, _), ([rates, ratios, h2, h2_ratios], bad)) in rows.iter().zip(got) {
        println!(
            "| {name} | {:.0} | {:.2} | {} | {} | {bad} |",
            median(rates),
            median(ratios),
            or_none(&h2, 0),
            or_none(&h2_ratios, 2),
        );
    }
    drop(servers);
}

/// The median of `xs` with `digits` decimals, or "-" for none.
fn or_none(xs: &[f64], digits: usize) -> String {
    match xs {
        [] => "-".to_owned(),
        _ => format!("{:.digits$}", median(xs.to_vec())),
    }
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

/// Resident memory of a process, KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

struct Baseline(Child);

impl Baseline {
    /// Starts `floodgate ceiling` with `args` on a free port; returns it
    /// once it listens.
    async fn start(args: &[&str]) -> (Baseline, std::net::SocketAddr) {
        let addr: std::net::SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let child = Command::new(floodgate())
            .arg("ceiling")
            .args(args)
            .args(["--addr", &addr.to_string()])
            .stdout(Stdio::null())
            .spawn()
            .expect("build it first: cargo build -p floodgate-server --bin floodgate");
        wait_until_listening(addr, || None).await;
        (Baseline(child), addr)
    }
}

impl Drop for Baseline {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// One server's closed-loop rounds.
#[derive(Default)]
struct Closed {
    rates: Vec<f64>,
    /// Calls/s answered by the server's store (not degraded).
    store_rates: Vec<f64>,
    ratios: Vec<f64>,
    /// h2load's calls/s and ratio to the ceiling's, per round.
    h2load: Vec<f64>,
    h2load_ratios: Vec<f64>,
    /// Calls h2load saw fail (it does not read grpc-status: see [`h2load`]).
    h2load_failed: u64,
    p50: Vec<f64>,
    p99: Vec<f64>,
    errors: u64,
    degraded: u64,
    calls: u64,
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let plan = Plan::from_args();
    let (baseline, baseline_addr) = Baseline::start(&[]).await;
    // The same ceiling on tokio's default scheduling (last row): what the
    // servers' runtime setting is worth on its own.
    let (_lifo, lifo_addr) = Baseline::start(&["--tokio-default-scheduling"]).await;

    let rules = rules_dir(&[("bench.yaml", BENCH_RULES)]);
    let redis = RedisServer::start();
    // Primaries only, as the single Redis has no replica either (section
    // 1d shows what a replica per primary costs).
    let cluster = RedisCluster::primaries_only(3);
    let memory = ServerProcess::start(rules.path(), &[], &[]).await;
    let single = ServerProcess::start(rules.path(), &["--redis-url", &redis.url()], &[]).await;
    // The same without coalescing: one EVALSHA per call.
    let uncoalesced = ServerProcess::start(
        rules.path(),
        &["--redis-url", &redis.url()],
        &[("FLOODGATE_REDIS_BATCH_MAX", "1")],
    )
    .await;
    let seeds = cluster.seed_urls();
    let clustered = ServerProcess::start(
        rules.path(),
        &["--redis-mode", "cluster", "--redis-url", &seeds],
        &[],
    )
    .await;
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
            "Floodgate, Redis single, no coalescing (redis_batch_max 1)",
            format!("http://{}", uncoalesced.grpc_addr),
        ),
        (
            "Floodgate, Redis Cluster (3 primaries)",
            format!("http://{}", clustered.grpc_addr),
        ),
        (
            "constant-OK baseline, tokio's default scheduling",
            format!("http://{lifo_addr}"),
        ),
    ];

    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|m| m.trim_start_matches([' ', '\t', ':']).to_owned())
        })
        .unwrap_or_default();
    println!(
        "{} cores ({cpu}); every server and the load generator share them",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!(
        "load: floodgate bench, 1 thread, closed loop, {} connections x {} streams, 1 descriptor, \
         uniform over 10,000 users; {} round(s) of {} s per server",
        plan.connections, plan.streams, plan.rounds, plan.seconds
    );

    // 1. Closed loop, in rounds. Targets 2 and 3 use the single Redis:
    // its EVALSHA count is read around each of their runs.
    let evalsha_calls = || {
        info_number(
            redis.port(),
            "commandstats",
            "cmdstat_evalsha",
            Some("calls"),
        )
    };
    let mut evalsha = [0u64; 2];
    let mut closed: Vec<Closed> = targets.iter().map(|_| Closed::default()).collect();
    let mut max_clients = 0;
    let body = h2load_body();
    let with_h2load = Command::new("h2load").arg("--version").output().is_ok();
    for _ in 0..plan.rounds {
        let mut base = 0.0;
        let mut h2load_base = 0.0;
        for (i, (_, target)) in targets.iter().enumerate() {
            if with_h2load {
                let (rate, failed) = h2load(target, &plan, body.path());
                if i == 0 {
                    h2load_base = rate;
                }
                let c = &mut closed[i];
                c.h2load.push(rate);
                c.h2load_ratios.push(rate / f64::max(h2load_base, 1.0));
                c.h2load_failed += failed;
            }
            let before = evalsha_calls();
            let s = bench(target, &plan, plan.seconds, &["--keys", "uniform:10000"]);
            if i == 2 || i == 3 {
                evalsha[i - 2] += evalsha_calls() - before;
            }
            if i == 2 {
                // Both servers hold a connection; less theirs of the other
                // and the one INFO itself arrives on.
                let clients = info_number(redis.port(), "clients", "connected_clients", None);
                max_clients = max_clients.max(clients.saturating_sub(2));
            }
            let rate = s["calls_per_second"].as_f64().unwrap();
            if i == 0 {
                base = rate;
            }
            let c = &mut closed[i];
            c.rates.push(rate);
            let calls = s["calls"].as_f64().unwrap().max(1.0);
            let degraded = s["degraded"].as_f64().unwrap();
            c.store_rates.push(rate * (1.0 - degraded / calls));
            c.ratios.push(rate / base);
            c.p50.push(s["latency_us"]["p50"].as_f64().unwrap());
            c.p99.push(s["latency_us"]["p99"].as_f64().unwrap());
            c.errors += errors(&s);
            c.degraded += s["degraded"].as_u64().unwrap();
            c.calls += s["calls"].as_u64().unwrap();
        }
    }
    println!();
    println!(
        "| server | floodgate bench calls/s | ratio to ceiling | h2load calls/s | ratio to ceiling | p50 | p99 | errors | degraded |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    // A row with degraded answers counts calls the store did not decide:
    // its calls/s is not the store's (see the half-load table's rate).
    for ((name, _), c) in targets.iter().zip(&closed) {
        println!(
            "| {name} | {:.0} | {:.2} | {} | {} | {:.2} ms | {:.2} ms | {} | {} |",
            median(c.rates.clone()),
            median(c.ratios.clone()),
            or_none(&c.h2load, 0),
            or_none(&c.h2load_ratios, 2),
            median(c.p50.clone()) / 1000.0,
            median(c.p99.clone()) / 1000.0,
            c.errors + c.h2load_failed,
            c.degraded,
        );
    }
    println!(
        "(medians of {} alternating round(s); p50, p99, degraded: floodgate bench; \
         h2load: {}; errors: both)",
        plan.rounds,
        if with_h2load {
            "1 thread, the same connections x streams, one descriptor (user=hot)"
        } else {
            "not installed (apt-get install nghttp2-client)"
        }
    );
    if with_h2load {
        println!(
            "the generators on the ceiling: floodgate bench {:.2}x h2load",
            median(closed[0].rates.clone()) / median(closed[0].h2load.clone()).max(1.0)
        );
    }

    // 1b. A capacity rule against a plain fixed-window rule, on the same
    // server, in alternating rounds: what the share bookkeeping costs.
    // Both rules admit everything; 10,000 users (past max_clients, 1,000,
    // so the bound is exercised too).
    println!();
    println!(
        "capacity rule (`--entry service=checkout --key user`) against the fixed-window rule (`--key user`), same server, {} round(s):",
        plan.rounds
    );
    println!("| server | fixed window calls/s | capacity calls/s | ratio (median of rounds) |");
    println!("|---|---|---|---|");
    for (name, target) in &targets[1..3] {
        let (mut fixed, mut capacity, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..plan.rounds {
            let plain = bench(target, &plan, plan.seconds, &["--keys", "uniform:10000"]);
            let shared = bench(
                target,
                &plan,
                plan.seconds,
                &["--keys", "uniform:10000", "--entry", "service=checkout"],
            );
            assert_eq!(errors(&shared), 0, "capacity calls failed: {shared}");
            let (a, b) = (
                plain["calls_per_second"].as_f64().unwrap(),
                shared["calls_per_second"].as_f64().unwrap(),
            );
            fixed.push(a);
            capacity.push(b);
            ratios.push(b / a);
        }
        println!(
            "| {name} | {:.0} | {:.0} | {:.2} |",
            median(fixed),
            median(capacity),
            median(ratios)
        );
    }

    // 1c. What TLS costs, on the memory store.
    tls_rows(&plan, rules.path(), &targets[1].1).await;

    // 1d. A cluster's primaries, against the single Redis.
    cluster_rows(&plan, rules.path(), (&targets[2].1, &targets[4].1)).await;

    // 2. Open loop at half of each server's median throughput. Fewer
    // callers than the closed loop: an open loop needs only rate x latency
    // calls in flight, and 256 callers' work on 2 shared cores measures the
    // OS scheduler (the baseline's own p99 goes past 20 ms).
    let callers = (4, 16);
    println!();
    println!(
        "open loop at half of each server's median closed-loop throughput (less degraded answers), {} connections x {} streams, {} s:",
        callers.0, callers.1, plan.seconds
    );
    println!(
        "| server | calls/s offered | p50 | p99 | p99.9 | max | errors | degraded |  (medians of {} round(s))",
        plan.rounds
    );
    println!("|---|---|---|---|---|---|---|---|");
    // Half of what the store answered: answers the fallback gave when the
    // store fell behind (degraded) are not the store's throughput.
    let rates: Vec<u64> = closed
        .iter()
        .map(|c| (median(c.store_rates.clone()) / 2.0).max(1.0) as u64)
        .collect();
    // Per server: p50, p99, p99.9, max (ms) of each round; errors; degraded.
    let mut open: Vec<([Vec<f64>; 4], u64, u64)> =
        targets.iter().map(|_| Default::default()).collect();
    for _ in 0..plan.rounds {
        for (i, (_, target)) in targets.iter().enumerate() {
            let s = bench_on(
                target,
                callers,
                plan.seconds,
                &["--keys", "uniform:10000", "--rate", &rates[i].to_string()],
            );
            let l = &s["latency_us"];
            for (q, name) in ["p50", "p99", "p999", "max"].iter().enumerate() {
                open[i].0[q].push(l[name].as_f64().unwrap() / 1000.0);
            }
            open[i].1 += errors(&s);
            open[i].2 += s["degraded"].as_u64().unwrap();
        }
    }
    for (((name, _), rate), (latency, errors, degraded)) in targets.iter().zip(&rates).zip(open) {
        let [p50, p99, p999, max] = latency.map(median);
        println!(
            "| {name} | {rate} | {p50:.2} ms | {p99:.2} ms | {p999:.2} ms | {max:.2} ms | {errors} | {degraded} |"
        );
    }

    // 3. Redis single: commands per call, connections.
    println!();
    println!(
        "Redis single: {} EVALSHA for {} calls = {:.3} per call (one descriptor each; coalesced); \
         without coalescing {} EVALSHA for {} calls = {:.3} per call; \
         Floodgate held {max_clients} connection(s) to it under the load ({} concurrent calls)",
        evalsha[0],
        closed[2].calls,
        evalsha[0] as f64 / closed[2].calls.max(1) as f64,
        evalsha[1],
        closed[3].calls,
        evalsha[1] as f64 / closed[3].calls.max(1) as f64,
        plan.connections * plan.streams,
    );

    // 4. Memory.
    drop((memory, single, uncoalesced, clustered));
    let bound = plan.flood.to_string();
    let flooded = ServerProcess::start(
        rules.path(),
        &[],
        &[("FLOODGATE_MEMORY_MAX_ENTRIES", &bound)],
    )
    .await;
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let idle = rss_kib(flooded.pid());
    let target = format!("http://{}", flooded.grpc_addr);
    let flood = |plan: &Plan| {
        let s = bench(
            &target,
            plan,
            3_600,
            &["--keys", "unique", "--requests", &plan.flood.to_string()],
        );
        assert_eq!(
            s["calls"].as_u64(),
            Some(plan.flood),
            "every flood call answered"
        );
        assert_eq!(errors(&s), 0);
        rss_kib(flooded.pid())
    };
    let first = flood(&plan);
    let second = flood(&plan);
    println!();
    println!(
        "memory store (bound memory_max_entries = {bound}): idle RSS {:.1} MiB; after {bound} distinct keys \
         {:.1} MiB ({:.0} bytes per key); after {bound} more (evicting) {:.1} MiB",
        idle as f64 / 1024.0,
        first as f64 / 1024.0,
        (first.saturating_sub(idle) * 1024) as f64 / plan.flood as f64,
        second as f64 / 1024.0,
    );
    drop(flooded);

    // 4b. The rules: a domain of 100,000 descriptors (4 files, merged),
    // against the bench's own rules.
    let descriptors = if plan.flood < 1_000_000 {
        4_000
    } else {
        100_000
    };
    let big = big_domain(descriptors);
    let small = ServerProcess::start(rules.path(), &["--merge-domains"], &[]).await;
    let loaded = ServerProcess::start(big.path(), &["--merge-domains"], &[]).await;
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let (small_rss, big_rss) = (rss_kib(small.pid()), rss_kib(loaded.pid()));
    println!(
        "rules: a domain of {descriptors} descriptors (key user, one value each, a limit each): \
         RSS {:.1} MiB against {:.1} MiB with the bench's rules ({:.0} bytes per descriptor)",
        big_rss as f64 / 1024.0,
        small_rss as f64 / 1024.0,
        (big_rss.saturating_sub(small_rss) * 1024) as f64 / descriptors as f64,
    );
    drop((small, loaded));

    drop(baseline);
}

/// The memory store served plaintext (`plaintext`, the target of a server
/// already running), over TLS and over mTLS (a client certificate required
/// from the test CA), each loaded in turn in every round with the same
/// callers: calls/s, ratio to plaintext, p50, p99.
async fn tls_rows(plan: &Plan, rules: &Path, plaintext: &str) {
    let certs = tempfile::tempdir().unwrap();
    floodgate_e2e::pki::write_test_pki(certs.path()).unwrap();
    let file = |name: &str| certs.path().join(name).display().to_string();
    let (cert, key, ca) = (file("server.pem"), file("server.key"), file("ca.pem"));
    let tls_env = [
        ("FLOODGATE_GRPC_TLS_CERT_FILE", cert.as_str()),
        ("FLOODGATE_GRPC_TLS_KEY_FILE", key.as_str()),
    ];
    let mut mtls_env = tls_env.to_vec();
    mtls_env.push(("FLOODGATE_GRPC_TLS_CLIENT_CA_FILE", ca.as_str()));
    let tls = ServerProcess::start(rules, &[], &tls_env).await;
    let mtls = ServerProcess::start(rules, &[], &mtls_env).await;
    let (client_cert, client_key) = (file("client.pem"), file("client.key"));
    let rows: [(&str, String, Vec<&str>); 3] = [
        ("plaintext", plaintext.to_owned(), vec![]),
        (
            "TLS",
            format!("https://{}", tls.grpc_addr),
            vec!["--tls-ca", &ca],
        ),
        (
            "mTLS (client certificate required)",
            format!("https://{}", mtls.grpc_addr),
            vec![
                "--tls-ca",
                &ca,
                "--tls-cert",
                &client_cert,
                "--tls-key",
                &client_key,
            ],
        ),
    ];
    let mut closed: Vec<Closed> = rows.iter().map(|_| Closed::default()).collect();
    for _ in 0..plan.rounds {
        let mut base = 0.0;
        for (i, (_, target, tls_args)) in rows.iter().enumerate() {
            let mut extra = vec!["--keys", "uniform:10000"];
            extra.extend(tls_args);
            let s = bench(target, plan, plan.seconds, &extra);
            let rate = s["calls_per_second"].as_f64().unwrap();
            if i == 0 {
                base = rate;
            }
            let c = &mut closed[i];
            c.rates.push(rate);
            c.ratios.push(rate / base);
            c.p50.push(s["latency_us"]["p50"].as_f64().unwrap());
            c.p99.push(s["latency_us"]["p99"].as_f64().unwrap());
            c.errors += errors(&s);
        }
    }
    println!();
    println!(
        "what TLS costs: Floodgate on the memory store, served plaintext, over TLS and over mTLS, \
         {} connections x {} streams (handshakes before the calls), {} round(s):",
        plan.connections, plan.streams, plan.rounds
    );
    println!(
        "| memory store served | calls/s (median) | ratio to plaintext (median of rounds) | p50 | p99 | errors |"
    );
    println!("|---|---|---|---|---|---|");
    for ((name, _, _), c) in rows.iter().zip(&closed) {
        println!(
            "| {name} | {:.0} | {:.2} | {:.2} ms | {:.2} ms | {} |",
            median(c.rates.clone()),
            median(c.ratios.clone()),
            median(c.p50.clone()) / 1000.0,
            median(c.p99.clone()) / 1000.0,
            c.errors,
        );
    }
}

/// A rules directory of one domain, `big`, with `descriptors` values of
/// `user`, each with its own limit, in 4 files (a file holds at most about
/// 100,000 descriptors; the server merges them with --merge-domains).
fn big_domain(descriptors: u64) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let per_file = descriptors.div_ceil(4);
    for part in 0..4 {
        let mut yaml = String::from("domain: big\ndescriptors:\n");
        for i in part * per_file..((part + 1) * per_file).min(descriptors) {
            yaml.push_str(&format!(
                "  - key: user\n    value: u{i}\n    rate_limit: {{unit: minute, requests_per_unit: {}}}\n",
                i % 1_000 + 1
            ));
        }
        std::fs::write(dir.path().join(format!("big{part}.yaml")), yaml).unwrap();
    }
    dir
}

/// `h2load` on `target` (`http://ADDR`) for the plan's seconds with its
/// callers: calls/s, and calls it counted failed or errored. h2load does
/// not read gRPC trailers, so a call answered with an error status counts
/// as a success: the floodgate bench run of the same round checks answers.
fn h2load(target: &str, plan: &Plan, body: &Path) -> (f64, u64) {
    let out = Command::new("h2load")
        .args(["-D", &plan.seconds.to_string(), "-t", "1"])
        .args(["-c", &plan.connections.to_string()])
        .args(["-m", &plan.streams.to_string()])
        .arg("-d")
        .arg(body)
        .args(["-H", "content-type: application/grpc", "-H", "te: trailers"])
        .arg(format!(
            "{target}/envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit"
        ))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let rate = text
        .lines()
        .find_map(|l| l.strip_prefix("finished in "))
        .and_then(|l| l.split(", ").nth(1))
        .and_then(|r| r.trim_end_matches(" req/s").parse::<f64>().ok())
        .unwrap_or_else(|| panic!("h2load said: {text}"));
    // "requests: 10 total, 10 started, 10 done, 8 succeeded, 1 failed, 1 errored, 0 timeout"
    let count = |what: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix("requests: "))
            .and_then(|l| {
                l.split(", ")
                    .find_map(|p| p.strip_suffix(what))
                    .and_then(|n| n.trim().parse::<u64>().ok())
            })
            .unwrap_or(0)
    };
    (rate, count(" failed") + count(" errored"))
}

/// The gRPC-framed request h2load sends (one hot key).
fn h2load_body() -> tempfile::NamedTempFile {
    let request = RateLimitRequest {
        domain: "bench".into(),
        descriptors: vec![RateLimitDescriptor {
            entries: vec![Entry {
                key: "user".into(),
                value: "hot".into(),
            }],
            ..Default::default()
        }],
        hits_addend: 1,
    };
    let message = request.encode_to_vec();
    let mut body = vec![0];
    body.extend_from_slice(&(message.len() as u32).to_be_bytes());
    body.extend_from_slice(&message);
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), body).unwrap();
    file
}
