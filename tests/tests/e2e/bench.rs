//! `floodgate bench` against Floodgate and against another RLS server (the
//! constant-OK baseline, which shares no code with Floodgate's service): it
//! speaks only the Envoy API.

#![allow(clippy::unwrap_used)] // Tests: a failed unwrap is a failed test.

use std::process::Command;
use tokio::time::Instant;

use floodgate_e2e::{
    ServerProcess, TestServer, config_with_rules, floodgate_bin, rules_dir, user_rules,
    workspace_root,
};
use floodgate_proto::RateLimitServiceServer;
use floodgate_server::bench::{AlwaysOk, BenchArgs, run};

fn args(target: String) -> BenchArgs {
    BenchArgs {
        target,
        connections: 4,
        streams: 4,
        threads: 1,
        duration: "20s".into(),
        requests: Some(500),
        rate: None,
        domain: "edge".into(),
        entries: Vec::new(),
        key: "user".into(),
        keys: "hot".into(),
        hits: 1,
        json: false,
        tls: Default::default(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counts_every_answer_from_floodgate() {
    let rules = rules_dir(&[("edge.yaml", user_rules(100).as_str())]);
    let server = TestServer::start(config_with_rules(rules.path())).await;
    let summary = run(&args(format!("http://{}", server.grpc_addr)))
        .await
        .unwrap();
    assert_eq!(summary.calls, 500, "bounded by --requests");
    assert_eq!(
        (summary.ok, summary.over_limit),
        (100, 400),
        "one hot key, 100 an hour"
    );
    assert!(summary.errors.is_empty());
    assert!(summary.latency_us.p50 <= summary.latency_us.p99);
    assert!(summary.latency_us.p99 <= summary.latency_us.max);
    let exercised: Vec<_> = summary
        .exercised
        .iter()
        .map(|e| (e.rule.as_str(), e.answers))
        .collect();
    assert_eq!(exercised, [("100 per hour", 500)]);
    server.stop().await.unwrap();
}

/// `floodgate bench` as a newcomer runs it: the real binary against
/// `floodgate serve --rules examples/rules` (the quick start). By default it
/// loads the example rules' domain and says which rule it exercised; a
/// domain the server has no rules for (the old default, `bench`) stops it at
/// once with an error naming the domain and how to choose one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_command_says_which_rule_it_ran_and_refuses_a_domain_without_rules() {
    let server = ServerProcess::start(&workspace_root().join("examples/rules"), &[], &[]).await;
    let target = format!("http://{}", server.grpc_addr);
    let bench = |extra: &[&str]| {
        let out = Command::new(floodgate_bin())
            .args(["bench", "--target", &target, "--connections", "2"])
            .args(["--streams", "2"])
            .args(extra)
            .output()
            .unwrap();
        let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        (out.status.code(), text(&out.stdout), text(&out.stderr))
    };

    let (code, stdout, stderr) = bench(&["--requests", "200"]);
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    let line =
        "exercised: domain \"edge\", descriptor (user=<uniform:10000>): 3 per minute (200 answers)";
    assert!(stdout.contains(&format!("{line}\n")), "{stdout}");
    let readme = std::fs::read_to_string(workspace_root().join("README.md")).unwrap();
    assert!(
        readme.contains(&format!("`{line}`")),
        "the README quotes it"
    );

    // One user: 3 answered OK, then over the limit; the JSON says the same.
    let (code, stdout, stderr) = bench(&["--requests", "50", "--keys", "hot", "--json"]);
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    let summary: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(
        (summary["ok"].as_u64(), summary["over_limit"].as_u64()),
        (Some(3), Some(47))
    );
    assert_eq!(summary["domain"], "edge");
    assert_eq!(summary["descriptor"], "user=<hot>");
    assert_eq!(
        summary["exercised"],
        serde_json::json!([{"rule": "3 per minute", "answers": 50}])
    );

    // No rules for the domain: stopped after the first answer, not after
    // the 30 s it was given.
    let started = Instant::now();
    let (code, stdout, stderr) = bench(&["--domain", "bench", "--duration", "30s"]);
    assert!(started.elapsed().as_secs() < 10, "{:?}", started.elapsed());
    assert_eq!(code, Some(1), "{stdout}{stderr}");
    assert_eq!(stdout, "");
    for said in [
        "floodgate bench: the target has no rule for domain \"bench\", descriptor (user=<uniform:10000>)",
        "--domain D (now \"bench\")",
        "--key K and --entry KEY=VALUE",
        "GET /rlconfig",
    ] {
        assert!(stderr.contains(said), "{said:?} not in {stderr}");
    }
    // A descriptor the domain has no rule for is the same answer.
    let (code, _, stderr) = bench(&["--key", "tenant", "--requests", "100"]);
    assert_eq!(code, Some(1));
    assert!(
        stderr.contains("descriptor (tenant=<uniform:10000>)"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leading_entries_reach_a_capacity_rule() {
    let rules = "domain: edge\ndescriptors:\n  - key: service\n    value: checkout\n    capacity: {requests_per_unit: 100, unit: hour, share_by: user}\n";
    let rules = rules_dir(&[("edge.yaml", rules)]);
    let server = TestServer::start(config_with_rules(rules.path())).await;
    let summary = run(&BenchArgs {
        entries: vec![floodgate_server::cli::entry("service=checkout").unwrap()],
        ..args(format!("http://{}", server.grpc_addr))
    })
    .await
    .unwrap();
    // One user alone: all of the 100 an hour, then rejected.
    assert_eq!((summary.ok, summary.over_limit), (100, 400));
    let exercised: Vec<_> = summary
        .exercised
        .iter()
        .map(|e| (e.rule.as_str(), e.answers))
        .collect();
    // A capacity rule names the bound that decided: the user's share while
    // it admits, the rule's total once it is spent.
    assert_eq!(
        exercised,
        [
            (r#"100 per hour (name "capacity.total")"#, 400),
            (r#"80 per hour (name "capacity.share")"#, 100)
        ]
    );
    assert_eq!(
        floodgate_server::cli::entry("service").unwrap_err(),
        r#"expected KEY=VALUE, got "service""#
    );
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn works_against_any_rls_server_and_reports_errors() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(RateLimitServiceServer::new(AlwaysOk))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    let summary = run(&args(format!("http://{addr}"))).await.unwrap();
    assert_eq!((summary.calls, summary.ok), (500, 500));
    // It answers no descriptor status: nothing says which rule applied,
    // and the run goes on.
    assert_eq!(summary.exercised.len(), 1);
    assert_eq!(
        (
            summary.exercised[0].rule.as_str(),
            summary.exercised[0].answers
        ),
        ("not said (no descriptor status)", 500)
    );
    // Open loop: 400 calls/s for 1 s starts 400 calls.
    let open = BenchArgs {
        rate: Some(400),
        duration: "1s".into(),
        requests: None,
        ..args(format!("http://{addr}"))
    };
    let summary = run(&open).await.unwrap();
    assert!((390..=400).contains(&summary.calls), "{}", summary.calls);
    server.abort();

    // A server that is gone: the bench says so instead of hanging.
    let err = run(&args(format!("http://{addr}"))).await.unwrap_err();
    assert!(err.contains("cannot connect"), "{err}");
}

/// An RLS server that answers OK and counts what it answered.
#[derive(Clone, Default)]
struct Counting(std::sync::Arc<std::sync::atomic::AtomicU64>);

#[tonic::async_trait]
impl floodgate_proto::RateLimitService for Counting {
    async fn should_rate_limit(
        &self,
        request: tonic::Request<floodgate_proto::RateLimitRequest>,
    ) -> Result<tonic::Response<floodgate_proto::RateLimitResponse>, tonic::Status> {
        let answer = AlwaysOk.should_rate_limit(request).await;
        self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        answer
    }
}

impl Counting {
    fn answered(&self) -> u64 {
        self.0.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// Serves `service` on `listener` (at most `streams` concurrent streams per
/// connection) in a runtime of its own: dropping the returned runtime kills
/// the server, listener and connections at once, as a crash would.
fn serve_on(
    listener: std::net::TcpListener,
    service: Counting,
    streams: u32,
) -> tokio::runtime::Runtime {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    runtime.spawn(async move {
        listener.set_nonblocking(true).unwrap();
        let listener = tokio::net::TcpListener::from_std(listener).unwrap();
        tonic::transport::Server::builder()
            .max_concurrent_streams(streams)
            .add_service(RateLimitServiceServer::new(service))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener))
            .await
    });
    runtime
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_streams_on_one_connection_get_every_answer() {
    // Floodgate allows 200 streams a connection: 400 callers share them.
    let rules = rules_dir(&[("edge.yaml", user_rules(1_000_000).as_str())]);
    let server = TestServer::start(config_with_rules(rules.path())).await;
    let summary = run(&BenchArgs {
        connections: 1,
        streams: 400,
        requests: Some(20_000),
        keys: "uniform:1000".into(),
        ..args(format!("http://{}", server.grpc_addr))
    })
    .await
    .unwrap();
    assert!(summary.errors.is_empty(), "{:?}", summary.errors);
    assert_eq!((summary.calls, summary.ok), (20_000, 20_000));
    assert_eq!(summary.reconnects, 0);
    server.stop().await.unwrap();

    // A server that allows fewer streams than callers: they wait their turn.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let counting = Counting::default();
    let runtime = serve_on(listener, counting.clone(), 100);
    let summary = run(&BenchArgs {
        connections: 1,
        streams: 200,
        requests: Some(5_000),
        ..args(format!("http://{addr}"))
    })
    .await
    .unwrap();
    assert!(summary.errors.is_empty(), "{:?}", summary.errors);
    assert_eq!((summary.calls, summary.ok), (5_000, 5_000));
    assert_eq!(counting.answered(), 5_000);
    runtime.shutdown_background();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_dies_mid_run_is_reconnected_and_counted_sanely() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let (first, second) = (Counting::default(), Counting::default());
    let runtime = serve_on(listener, first.clone(), 100);
    let bench = tokio::spawn(async move {
        run(&BenchArgs {
            connections: 2,
            streams: 4,
            duration: "4s".into(),
            requests: None,
            ..args(format!("http://{addr}"))
        })
        .await
    });
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    runtime.shutdown_background();
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    // The same address again: the generator reconnects.
    let listener = std::net::TcpListener::bind(addr).unwrap();
    let runtime = serve_on(listener, second.clone(), 100);
    let summary = bench.await.unwrap().unwrap();
    runtime.shutdown_background();
    let served = first.answered() + second.answered();
    let errors: u64 = summary.errors.values().sum();
    // Only answers count as answers; a call the server answered but whose
    // answer was lost with the connection is an error, at most one per caller.
    assert!(
        summary.ok <= served && served - summary.ok <= 8,
        "ok {} of {served} served",
        summary.ok
    );
    // Each caller's call fails once when the connection dies, and the
    // reconnection attempts are not calls: no error storm.
    assert!(errors <= 16, "{errors} errors: {:?}", summary.errors);
    assert_eq!(summary.calls, summary.ok + errors);
    assert!(
        first.answered() > 0 && second.answered() > 0,
        "answered before the crash {}, after {}",
        first.answered(),
        second.answered()
    );
    assert!(summary.reconnects >= 2, "{}", summary.reconnects);
}

/// `floodgate ceiling`, the ceiling `bench/run` measures against: OK to
/// any call (a domain with no rules, no store), and a clear error for an
/// address it cannot listen on.
#[tokio::test]
async fn the_ceiling_answers_ok_to_anything_and_says_why_it_cannot_listen() {
    let addr: std::net::SocketAddr = format!("127.0.0.1:{}", floodgate_e2e::free_port())
        .parse()
        .unwrap();
    let mut ceiling = Command::new(floodgate_bin())
        .args(["ceiling", "--addr", &addr.to_string()])
        .spawn()
        .unwrap();
    floodgate_e2e::wait_until_listening(addr, || None).await;
    let mut client = floodgate_proto::RateLimitServiceClient::connect(format!("http://{addr}"))
        .await
        .unwrap();
    let request = floodgate_e2e::request("no-such-domain", &[("user", "x")]);
    let answer = client
        .should_rate_limit(request)
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        answer.overall_code,
        floodgate_proto::rate_limit_response::Code::Ok as i32
    );
    ceiling.kill().unwrap();
    ceiling.wait().unwrap();

    let out = Command::new(floodgate_bin())
        .args(["ceiling", "--addr", "not-an-address"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.starts_with("floodgate ceiling: cannot listen on not-an-address: "),
        "{stderr}"
    );
}
