//! `floodgate bench` against Floodgate and against another RLS server (the
//! constant-OK baseline, which shares no code with Floodgate's service): it
//! speaks only the Envoy API.

#![allow(clippy::unwrap_used)] // Tests: a failed unwrap is a failed test.

use floodgate_e2e::{TestServer, config_with_rules, rules_dir, user_rules};
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
    server.stop().await.unwrap();
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
