//! The Kubernetes examples (`examples/istio/`, `examples/envoy-gateway/`),
//! read from their files, never copied here:
//!
//! - they validate against their schemas (`tests/schemas/check_examples.py`:
//!   the CRDs' OpenAPI schemas, kubernetes-validate for core kinds, Envoy
//!   Gateway's Go types for its configuration, our chart for `values.yaml`),
//!   and those checks refuse broken copies of the same documents;
//! - the Envoy configuration that each Istio `EnvoyFilter` produces (its
//!   HTTP_FILTER, CLUSTER and VIRTUAL_HOST patches applied to a listener, a
//!   route and the cluster Istio builds for Floodgate's Service) runs in a
//!   real Envoy against Floodgate serving `rules-configmap.yaml`'s rules:
//!   requests past a limit get Envoy's 429, the others reach the backend;
//! - what Envoy Gateway sends for `backendtrafficpolicy.yaml` (`wire/`: the
//!   HTTP filter, the route with its per-route rate limits, and the
//!   RateLimitConfig as Floodgate's rules) does the same in a real Envoy.
//!
//! Floodgate runs in-process on a manual clock set at the start of a minute,
//! so that no per-minute window closes during a test.

#![allow(clippy::unwrap_used)] // Tests: a failed unwrap is a failed test.

use std::path::{Path, PathBuf};
use std::time::Duration;

use floodgate_e2e::xds::XdsServer;
use floodgate_e2e::{TestServer, config_with_rules, floodgate_bin, venv_bin, workspace_root};
use floodgate_proto::ratelimit::config::ratelimit::v3::{
    RateLimitConfig, RateLimitDescriptor, RateLimitPolicy, RateLimitUnit,
};
use floodgate_server::clock::Clock;
use serde_json::{Value, json};

use crate::envoy::{Envoy, Response, get, start_backend, wait_ready};
use crate::python_client::run;

/// A start of a minute (1_800_000_000 is a multiple of 60).
const MINUTE_START: Duration = Duration::from_secs(1_800_000_000);

fn example(path: &str) -> PathBuf {
    workspace_root().join("examples").join(path)
}

fn read_yaml(path: &Path) -> Value {
    let text =
        std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    serde_saphyr::from_str(&text).unwrap_or_else(|e| panic!("parse {}: {e}", path.display()))
}

/// Runs `check_examples.py` with `args`; returns its output.
async fn check_examples(args: &[&str]) -> String {
    let script = workspace_root().join("tests/schemas/check_examples.py");
    let mut cmd = tokio::process::Command::new(venv_bin("python"));
    cmd.arg(script).args(args);
    let output = run(&mut cmd, &format!("check_examples.py {}", args.join(" "))).await;
    let out = String::from_utf8_lossy(&output.stdout).into_owned();
    println!("{out}");
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn istio_examples_validate_against_the_crd_kubernetes_and_our_chart() {
    let bin = floodgate_bin();
    let out = check_examples(&["istio", bin.to_str().unwrap()]).await;
    for line in [
        "examples/istio/envoyfilter-gateway.yaml: EnvoyFilter istio-system/floodgate-gateway matches the EnvoyFilter CRD (networking.istio.io/v1alpha3, strict)",
        "examples/istio/envoyfilter-sidecar.yaml: EnvoyFilter shop/floodgate-orders matches the EnvoyFilter CRD (networking.istio.io/v1alpha3, strict)",
        "examples/istio/rules-configmap.yaml: kubernetes-validate --strict (k8s 1.25.0, 1.33.0, 1.37.0): ok",
        "examples/istio/rules-configmap.yaml: OK: 2 domain(s)",
        "the chart's Service: floodgate.floodgate.svc.cluster.local gRPC 8081 (kubernetes.io/h2c); the Deployment mounts ConfigMap floodgate/floodgate-istio-rules",
        "istio examples: ok",
    ] {
        assert!(
            out.lines().any(|l| l == line),
            "missing {line:?} in:\n{out}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoy_gateway_examples_validate_against_the_crd_and_go_types() {
    let bin = floodgate_bin();
    let out = check_examples(&["envoy-gateway", bin.to_str().unwrap()]).await;
    for line in [
        "examples/envoy-gateway/envoy-gateway.yaml: kubernetes-validate --strict (k8s 1.25.0, 1.33.0, 1.37.0): ok",
        "examples/envoy-gateway/envoy-gateway.yaml: the rate-limit Deployment runs ghcr.io/floodgate/floodgate:0.1.0",
        "examples/envoy-gateway/backendtrafficpolicy.yaml: BackendTrafficPolicy matches the BackendTrafficPolicy CRD (gateway.envoyproxy.io/v1alpha1, strict)",
        "wire/ratelimitconfig.yaml as rules: OK: 1 domain(s)",
        "envoy-gateway examples: ok",
    ] {
        assert!(
            out.lines().any(|l| l == line),
            "missing {line:?} in:\n{out}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn example_checks_refuse_broken_documents() {
    let out = check_examples(&["selftest"]).await;
    assert_eq!(
        out.lines().filter(|l| l.starts_with("refused: ")).count(),
        13,
        "{out}"
    );
    assert!(
        out.contains("selftest: 13 broken documents refused"),
        "{out}"
    );
}

/// Istio's MERGE: objects merge key by key, lists append, the rest replaces.
fn merge(base: &mut Value, patch: &Value) {
    match (base, patch) {
        (Value::Object(b), Value::Object(p)) => {
            for (k, v) in p {
                merge(b.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
        (Value::Array(b), Value::Array(p)) => b.extend(p.iter().cloned()),
        (b, p) => *b = p.clone(),
    }
}

/// The one patch of the EnvoyFilter that applies to `apply_to`, checked to
/// use the operation this test implements.
fn patch<'a>(filter: &'a Value, apply_to: &str, operation: &str) -> &'a Value {
    let found: Vec<&Value> = filter["spec"]["configPatches"]
        .as_array()
        .expect("configPatches")
        .iter()
        .filter(|p| p["applyTo"] == apply_to)
        .collect();
    assert_eq!(found.len(), 1, "one {apply_to} patch: {found:?}");
    assert_eq!(found[0]["patch"]["operation"], operation, "{:?}", found[0]);
    &found[0]["patch"]["value"]
}

fn static_cluster(name: &str, port: u16) -> Value {
    json!({
        "name": name,
        "type": "STATIC",
        "connect_timeout": "1s",
        "load_assignment": {
            "cluster_name": name,
            "endpoints": [{"lb_endpoints": [{"endpoint": {"address": {
                "socket_address": {"address": "127.0.0.1", "port_value": port}
            }}}]}]
        }
    })
}

fn router() -> Value {
    json!({
        "name": "envoy.filters.http.router",
        "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}
    })
}

/// A bootstrap: the listener `ingress` (port 0) with `filters` and one
/// virtual host, and `clusters`.
fn bootstrap(filters: Vec<Value>, virtual_host: Value, clusters: Vec<Value>) -> String {
    let config = json!({
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}}},
        "static_resources": {
            "listeners": [{
                "name": "ingress",
                "address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}},
                "filter_chains": [{"filters": [{
                    "name": "envoy.filters.network.http_connection_manager",
                    "typed_config": {
                        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                        "stat_prefix": "ingress",
                        "route_config": {"name": "local", "virtual_hosts": [virtual_host]},
                        "http_filters": filters
                    }
                }]}]
            }],
            "clusters": clusters
        }
    });
    // YAML is a superset of JSON: Envoy reads it as its YAML bootstrap.
    serde_json::to_string_pretty(&config).unwrap()
}

/// What Istio builds from an EnvoyFilter, in the parts it patches: the HTTP
/// filter inserted before the router, the virtual host with the patch
/// merged in, and the outbound cluster of Floodgate's Service (named as
/// Istio names it, without HTTP/2: the CLUSTER patch brings it) pointing at
/// `rls_port`.
fn istio_bootstrap(filter: &Value, rls_port: u16, backend_port: u16) -> String {
    let http_filter = patch(filter, "HTTP_FILTER", "INSERT_BEFORE");
    let all = filter["spec"]["configPatches"].as_array().unwrap();
    let http = all.iter().find(|p| p["applyTo"] == "HTTP_FILTER").unwrap();
    assert_eq!(
        http["match"]["listener"]["filterChain"]["filter"]["subFilter"]["name"],
        "envoy.filters.http.router",
        "the filter goes before the router"
    );
    let mut filters = vec![router()];
    let at = filters
        .iter()
        .position(|f| f["name"] == "envoy.filters.http.router")
        .unwrap();
    filters.insert(at, http_filter.clone());

    let mut virtual_host = json!({
        "name": "all",
        "domains": ["*"],
        "routes": [{"match": {"prefix": "/"}, "route": {"cluster": "backend"}}]
    });
    merge(&mut virtual_host, patch(filter, "VIRTUAL_HOST", "MERGE"));

    let rls = &http_filter["typed_config"]["rate_limit_service"]["grpc_service"]["envoy_grpc"];
    let cluster_name = rls["cluster_name"].as_str().expect("cluster_name");
    assert!(
        cluster_name.starts_with("outbound|8081||"),
        "{cluster_name}"
    );
    let mut rls_cluster = static_cluster(cluster_name, rls_port);
    merge(&mut rls_cluster, patch(filter, "CLUSTER", "MERGE"));

    bootstrap(
        filters,
        virtual_host,
        vec![rls_cluster, static_cluster("backend", backend_port)],
    )
}

/// Floodgate on `rules` (file name → text), on the manual clock.
async fn floodgate_with(rules: &[(String, String)]) -> (TestServer, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("rules dir");
    for (file, text) in rules {
        std::fs::write(dir.path().join(file), text).expect("write rules");
    }
    let server =
        TestServer::start_with_clock(config_with_rules(dir.path()), Clock::manual(MINUTE_START))
            .await;
    (server, dir)
}

/// Floodgate (manual clock at a minute's start) with its rules from `xds`,
/// as Envoy Gateway's environment sets it up.
async fn floodgate_over_xds(xds: &XdsServer) -> TestServer {
    let empty = tempfile::tempdir().expect("rules dir");
    let mut config = config_with_rules(empty.path());
    config.rules_xds = Some(xds.settings("envoy-ratelimit"));
    TestServer::start_with_clock(config, Clock::manual(MINUTE_START)).await
}

/// A `RateLimitConfig` from its proto3 JSON/YAML form (proto field names).
fn rate_limit_config(v: &Value) -> RateLimitConfig {
    fn descriptor(d: &Value) -> RateLimitDescriptor {
        let text = |field: &str| d[field].as_str().unwrap_or_default().to_owned();
        RateLimitDescriptor {
            key: text("key"),
            value: text("value"),
            rate_limit: d.get("rate_limit").map(|r| RateLimitPolicy {
                unit: RateLimitUnit::from_str_name(r["unit"].as_str().unwrap_or("UNKNOWN"))
                    .expect("a unit name") as i32,
                requests_per_unit: u32::try_from(r["requests_per_unit"].as_u64().unwrap_or(0))
                    .expect("requests_per_unit"),
                unlimited: r["unlimited"].as_bool().unwrap_or(false),
                name: r["name"].as_str().unwrap_or_default().to_owned(),
                replaces: Vec::new(),
            }),
            descriptors: children(d),
            ..Default::default()
        }
    }
    fn children(v: &Value) -> Vec<RateLimitDescriptor> {
        v["descriptors"]
            .as_array()
            .map(|ds| ds.iter().map(descriptor).collect())
            .unwrap_or_default()
    }
    RateLimitConfig {
        name: v["name"].as_str().unwrap_or_default().to_owned(),
        domain: v["domain"].as_str().unwrap_or_default().to_owned(),
        descriptors: children(v),
    }
}

/// The rules in `rules-configmap.yaml`'s data.
fn configmap_rules() -> Vec<(String, String)> {
    let cm = read_yaml(&example("istio/rules-configmap.yaml"));
    cm["data"]
        .as_object()
        .expect("data")
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().expect("a rules file").to_owned()))
        .collect()
}

/// `requests_per_unit` of the top-level descriptor `key` (`value`) of
/// `domain` in `rules`.
fn limit(rules: &[(String, String)], domain: &str, key: &str, value: Option<&str>) -> usize {
    for (_, text) in rules {
        let r: Value = serde_saphyr::from_str(text).unwrap();
        if r["domain"] != domain {
            continue;
        }
        for d in r["descriptors"].as_array().unwrap() {
            if d["key"] == key && d["value"].as_str() == value {
                assert_eq!(d["rate_limit"]["unit"], "minute", "{d}");
                return usize::try_from(d["rate_limit"]["requests_per_unit"].as_u64().unwrap())
                    .unwrap();
            }
        }
    }
    panic!("no rule {key}={value:?} in domain {domain}");
}

async fn call(port: u16, path: &str, headers: &[(&str, &str)]) -> Response {
    get(port, path, headers)
        .await
        .unwrap_or_else(|e| panic!("GET {path} {headers:?} through envoy: {e}"))
}

fn assert_passed(resp: &Response, what: &str) {
    assert_eq!(resp.status, 200, "{what}: {resp:?}");
    assert_eq!(resp.body, "backend", "{what} reached the backend: {resp:?}");
}

fn assert_limited(resp: &Response, what: &str) {
    assert_eq!(resp.status, 429, "{what}: {resp:?}");
    assert_ne!(
        resp.body, "backend",
        "{what} did not reach the backend: {resp:?}"
    );
}

/// Sends `n` requests that must pass, each answered with Floodgate's
/// X-RateLimit-Limit (so Floodgate decided them), then one that must be
/// Envoy's 429.
async fn up_to_the_limit(port: u16, path: &str, headers: &[(&str, &str)], n: usize) {
    for i in 0..n {
        let resp = call(port, path, headers).await;
        let what = format!("request {} of {n} {path} {headers:?}", i + 1);
        assert_passed(&resp, &what);
        let header = resp.header("x-ratelimit-limit").unwrap_or_default();
        assert!(
            header.starts_with(&format!("{n}, {n};w=60")),
            "{what}: X-RateLimit-Limit {header:?} should say {n} per 60 s: {resp:?}"
        );
    }
    let resp = call(port, path, headers).await;
    assert_limited(&resp, &format!("request {} {path} {headers:?}", n + 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn istio_gateway_envoyfilter_runs_in_envoy() {
    let rules = configmap_rules();
    let filter = read_yaml(&example("istio/envoyfilter-gateway.yaml"));
    let domain = patch(&filter, "HTTP_FILTER", "INSERT_BEFORE")["typed_config"]["domain"]
        .as_str()
        .unwrap()
        .to_owned();
    let users = limit(&rules, &domain, "user", None);
    let login = limit(&rules, &domain, "PATH", Some("/login"));
    let (server, _rules_dir) = floodgate_with(&rules).await;
    let (backend_port, backend) = start_backend().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let mut envoy = Envoy::start(
        dir.path(),
        &istio_bootstrap(&filter, server.grpc_addr.port(), backend_port),
    );
    let (_admin, port) = wait_ready(&mut envoy, dir.path()).await;

    // Per user, on any path.
    up_to_the_limit(port, "/hello", &[("x-user-id", "alice")], users).await;
    assert_passed(&call(port, "/hello", &[("x-user-id", "bob")]).await, "bob");
    // The login page, for everyone together; other paths have no PATH rule.
    up_to_the_limit(port, "/login", &[], login).await;
    for _ in 0..login + 1 {
        assert_passed(&call(port, "/products", &[]).await, "anonymous /products");
    }
    assert_limited(
        &call(port, "/elsewhere", &[("x-user-id", "alice")]).await,
        "alice, still",
    );

    envoy.assert_running();
    drop(envoy);
    backend.abort();
    server.stop().await.expect("server stops cleanly");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn istio_sidecar_envoyfilter_runs_in_envoy() {
    let rules = configmap_rules();
    let filter = read_yaml(&example("istio/envoyfilter-sidecar.yaml"));
    let domain = patch(&filter, "HTTP_FILTER", "INSERT_BEFORE")["typed_config"]["domain"]
        .as_str()
        .unwrap()
        .to_owned();
    let tenants = limit(&rules, &domain, "tenant", None);
    let (server, _rules_dir) = floodgate_with(&rules).await;
    let (backend_port, backend) = start_backend().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let mut envoy = Envoy::start(
        dir.path(),
        &istio_bootstrap(&filter, server.grpc_addr.port(), backend_port),
    );
    let (_admin, port) = wait_ready(&mut envoy, dir.path()).await;

    up_to_the_limit(port, "/orders", &[("x-tenant-id", "acme")], tenants).await;
    assert_passed(
        &call(port, "/orders", &[("x-tenant-id", "globex")]).await,
        "another tenant",
    );
    assert_passed(&call(port, "/orders", &[]).await, "no tenant");

    envoy.assert_running();
    drop(envoy);
    backend.abort();
    server.stop().await.expect("server stops cleanly");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoy_gateway_wire_config_runs_in_envoy() {
    let wire = example("envoy-gateway/wire");
    let http_filter = read_yaml(&wire.join("http-filter.yaml"));
    let route = read_yaml(&wire.join("route.yaml"));
    // The RateLimitConfig, pushed over xDS as Envoy Gateway does (node id
    // envoy-ratelimit), to Floodgate reading its rules from there.
    let config = read_yaml(&wire.join("ratelimitconfig.yaml"));
    let limit = usize::try_from(
        config["descriptors"][0]["descriptors"][0]["rate_limit"]["requests_per_unit"]
            .as_u64()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(limit, 3, "backendtrafficpolicy.yaml says 3 per minute");
    let xds = XdsServer::start("envoy-ratelimit", None).await;
    xds.push("1", &[rate_limit_config(&config)]);
    let server = floodgate_over_xds(&xds).await;
    let ack = xds.answer_to("1").await.request;
    assert!(
        ack.error_detail.is_none(),
        "Floodgate NACKed the wire config: {ack:?}"
    );
    let (backend_port, backend) = start_backend().await;
    // Envoy Gateway's clusters: ratelimit_cluster (HTTP/2; TLS in a cluster,
    // plaintext here) and the route's backend, under the route's own name.
    let rls_cluster_name = http_filter["typed_config"]["rate_limit_service"]["grpc_service"]
        ["envoy_grpc"]["cluster_name"]
        .as_str()
        .unwrap();
    let mut rls_cluster = static_cluster(rls_cluster_name, server.grpc_addr.port());
    merge(
        &mut rls_cluster,
        &json!({"typed_extension_protocol_options": {
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                "explicit_http_config": {"http2_protocol_options": {}}
            }
        }}),
    );
    let backend_cluster = static_cluster(route["route"]["cluster"].as_str().unwrap(), backend_port);
    let virtual_host =
        json!({"name": "default/eg/http/www_example_com", "domains": ["*"], "routes": [route]});
    let dir = tempfile::tempdir().expect("temp dir");
    let mut envoy = Envoy::start(
        dir.path(),
        &bootstrap(
            vec![http_filter.clone(), router()],
            virtual_host,
            vec![rls_cluster, backend_cluster],
        ),
    );
    let (_admin, port) = wait_ready(&mut envoy, dir.path()).await;

    up_to_the_limit(port, "/get", &[("x-user-id", "one")], limit).await;
    let resp = call(port, "/get", &[("x-user-id", "one")]).await;
    assert_limited(&resp, "user one, again");
    assert_eq!(
        resp.header("x-envoy-ratelimited"),
        None,
        "Envoy Gateway's filter sends no x-envoy-ratelimited: {resp:?}"
    );
    assert_passed(
        &call(port, "/get", &[("x-user-id", "two")]).await,
        "user two",
    );
    for _ in 0..limit + 1 {
        assert_passed(&call(port, "/get", &[]).await, "no x-user-id");
    }

    envoy.assert_running();
    drop(envoy);
    backend.abort();
    server.stop().await.expect("server stops cleanly");
}
