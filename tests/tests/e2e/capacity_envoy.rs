//! The capacity example's trust boundary with a real Envoy:
//! `examples/capacity/envoy.yaml` names the client by its address and the
//! priority class by the route, so a caller's `x-priority` header changes
//! nothing. Floodgate runs `examples/capacity/rules`; its metrics count
//! each route's calls in the route's class.

#![allow(clippy::unwrap_used)] // Tests: a failed unwrap is a failed test.

use floodgate_e2e::{
    TestServer, config_with_rules, free_port, http_get, metric_value, workspace_root,
};

use crate::envoy::{Envoy, get, wait_ready};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_class_comes_from_the_route_and_a_forged_header_changes_nothing() {
    let root = workspace_root();
    let server = TestServer::start(config_with_rules(&root.join("examples/capacity/rules"))).await;
    let mut config = std::fs::read_to_string(root.join("examples/capacity/envoy.yaml")).unwrap();
    let backend = free_port();
    for (from, to) in [
        (9901, 0),
        (10000, 0),
        (10001, backend),
        (8081, server.grpc_addr.port()),
    ] {
        let from = format!("port_value: {from}");
        assert!(config.contains(&from), "{from} in envoy.yaml");
        config = config.replace(&from, &format!("port_value: {to}"));
    }
    let dir = tempfile::tempdir().unwrap();
    let mut envoy = Envoy::start(dir.path(), &config);
    let (_admin, port) = wait_ready(&mut envoy, dir.path()).await;

    // Each route claims the other's class in a header: it is not read.
    for _ in 0..5 {
        let checkout = get(port, "/checkout", &[("x-priority", "sheddable")])
            .await
            .unwrap();
        assert_eq!(
            (checkout.status, checkout.body.as_str()),
            (200, "backend\n")
        );
        let recommendations = get(port, "/recommendations", &[("x-priority", "critical")])
            .await
            .unwrap();
        assert_eq!(recommendations.status, 200, "{recommendations:?}");
    }

    let (code, body) = http_get(&format!("http://{}/metrics", server.http_addr)).await;
    assert_eq!(code, 200);
    let count = |series: &str| {
        metric_value::<u64>(&body, series).unwrap_or_else(|| panic!("no {series} in\n{body}"))
    };
    let key = r#"domain="shop",key="service_checkout""#;
    for class in ["critical", "sheddable"] {
        assert_eq!(
            count(&format!(
                r#"floodgate_capacity_hits_total{{{key},class="{class}",verdict="guaranteed"}}"#
            )),
            5,
            "{class}"
        );
    }
    // One client: the TCP peer's address, whatever the caller says.
    assert_eq!(
        count(&format!(
            r#"floodgate_capacity_client_hits_total{{{key},client="127.0.0.1",admitted="true"}}"#
        )),
        10
    );
    envoy.assert_running();
    drop(envoy);
    server.stop().await.unwrap();
}
