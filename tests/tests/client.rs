//! The `floodgate-client` crate against a running server: typed decisions,
//! retry-after, and errors surfaced as statuses.

#![allow(clippy::unwrap_used)] // Tests: a failed unwrap is a failed test.

use std::time::Duration;

use floodgate_e2e::{TestServer, config_with_rules, rules_dir, user_rules};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_crate_gets_typed_decisions() {
    use floodgate_client::{Client, Descriptor};
    let rules = rules_dir(&[("edge.yaml", user_rules(3).as_str())]);
    let server = TestServer::start(config_with_rules(rules.path())).await;
    let mut client = Client::connect(format!("http://{}", server.grpc_addr))
        .await
        .unwrap();
    let descriptor = || Descriptor::new().entry("user", "zoe");
    let first = client
        .should_rate_limit("edge", [descriptor()])
        .await
        .unwrap();
    assert!(first.allowed);
    assert_eq!(
        (first.statuses[0].limit, first.statuses[0].remaining),
        (Some(3), 2)
    );
    assert_eq!(first.retry_after(), None);
    let over = client
        .should_rate_limit("edge", [descriptor().hits(5)])
        .await
        .unwrap();
    assert!(!over.allowed);
    let retry = over.retry_after().expect("a retry time");
    assert!(
        retry > Duration::ZERO && retry <= Duration::from_secs(3_600),
        "{retry:?}"
    );
    let err = client
        .should_rate_limit("", [descriptor()])
        .await
        .unwrap_err();
    assert!(
        matches!(&err, floodgate_client::Error::Status(s) if s.code() == tonic::Code::InvalidArgument),
        "{err}"
    );
    server.stop().await.unwrap();
}
