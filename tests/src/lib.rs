//! The end-to-end harness: real processes on loopback, started and stopped by
//! the tests themselves.
//!
//! - [`RedisServer`]: a `redis-server` on a free port, in a temporary
//!   directory, killed on drop.
//! - [`TestServer`]: Floodgate itself, in-process, on `127.0.0.1:0`, drained
//!   on [`TestServer::stop`].
//! - [`RedisCluster`], [`RedisSentinel`], [`TlsRedis`]: Redis topologies
//!   (cluster, sentinel, TLS with ACLs) on free loopback ports; see
//!   [`redis_topology`].
//! - [`venv_bin`]: tools from the Python venv that the test command creates
//!   (`envoy`, `python`), found without relying on `PATH`.
//!
//! Nothing here skips: a missing `redis-server` or venv tool is a test
//! failure that says how to install it (the README's test command does).

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use floodgate_proto::rate_limit_descriptor::Entry;
use floodgate_proto::{RateLimitDescriptor, RateLimitRequest, RateLimitServiceClient};
use floodgate_server::clock::Clock;
use floodgate_server::config::Config;
use floodgate_server::{Listeners, RunError};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::transport::Channel;

pub mod redis_topology;

pub use redis_topology::{Failover, RedisCluster, RedisSentinel, TlsRedis, key_slot};

/// The repository root.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

/// A free TCP port on 127.0.0.1 (bound and released; the race with another
/// process taking it first is small and fails loudly).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("no free loopback port")
}

/// An executable from the test venv (`.venv/bin/NAME`, or
/// `$FLOODGATE_TEST_VENV/bin/NAME`). Panics with the fix if it is missing.
pub fn venv_bin(name: &str) -> PathBuf {
    let venv = std::env::var_os("FLOODGATE_TEST_VENV")
        .map_or_else(|| workspace_root().join(".venv"), PathBuf::from);
    let path = venv.join("bin").join(name);
    assert!(
        path.exists(),
        "{} not found: run the README's test command (scripts/test), which creates the venv",
        path.display()
    );
    path
}

/// A `redis-server` process on a free loopback port.
#[derive(Debug)]
pub struct RedisServer {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl RedisServer {
    /// Starts `redis-server` and waits until it answers PING.
    pub fn start() -> RedisServer {
        Self::start_with_args(&[])
    }

    /// [`RedisServer::start`] with `args` appended to the command line (e.g.
    /// `["--requirepass", "pw"]`). Ready when it answers PING, or `NOAUTH`
    /// if it requires a password.
    pub fn start_with_args(args: &[&str]) -> RedisServer {
        for _ in 0..5 {
            if let Some(server) = Self::try_start(free_port(), args) {
                return server;
            }
            // Most likely another process took the port first: try another.
        }
        panic!("redis-server did not start on any of 5 ports");
    }

    /// [`RedisServer::start`] on exactly `port` (e.g. one that a client is
    /// already trying); panics if it does not answer within 10 s.
    pub fn start_on(port: u16) -> RedisServer {
        Self::try_start(port, &[])
            .unwrap_or_else(|| panic!("redis-server did not start on port {port}"))
    }

    fn try_start(port: u16, args: &[&str]) -> Option<RedisServer> {
        let dir = tempfile::tempdir().expect("temp dir");
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(dir.path())
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("cannot run redis-server: install it (apt-get install -y redis-server) or run scripts/test");
        let mut server = RedisServer {
            child,
            port,
            _dir: dir,
        };
        // On failure, dropping `server` kills the process.
        server.wait_ready(Duration::from_secs(10)).then_some(server)
    }

    fn wait_ready(&mut self, within: Duration) -> bool {
        const STEP: Duration = Duration::from_millis(20);
        for _ in 0..within.as_millis() / STEP.as_millis() {
            if let Ok(Some(_)) = self.child.try_wait() {
                return false;
            }
            if redis_topology::answers(self.port) {
                return true;
            }
            std::thread::sleep(STEP);
        }
        false
    }

    /// Its port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Freezes the process (SIGSTOP): it keeps its connections but answers nothing.
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    /// Thaws a paused process (SIGCONT).
    pub fn resume(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, signal: &str) {
        let ok = Command::new("kill")
            .args([signal, &self.child.id().to_string()])
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "kill {signal} redis-server failed");
    }

    /// `redis://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A rules directory holding `files` (name, YAML text).
pub fn rules_dir(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    for (name, text) in files {
        std::fs::write(dir.path().join(name), text).expect("write rules file");
    }
    dir
}

/// Floodgate running in-process on loopback.
#[derive(Debug)]
pub struct TestServer {
    /// The gRPC address.
    pub grpc_addr: SocketAddr,
    /// The HTTP address.
    pub http_addr: SocketAddr,
    /// The admin address.
    pub admin_addr: SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), RunError>>>,
}

impl TestServer {
    /// Starts the server with `config` (its listen addresses are ignored:
    /// both listeners bind `127.0.0.1:0`).
    pub async fn start(config: Config) -> TestServer {
        Self::start_with_clock(config, Clock::System).await
    }

    /// [`TestServer::start`], with the server's local time read from `clock`.
    pub async fn start_with_clock(config: Config, clock: Clock) -> TestServer {
        let bind = |what| {
            let any = SocketAddr::from(([127, 0, 0, 1], 0));
            floodgate_server::transport::bind(any, config.listeners.listen_backlog)
                .unwrap_or_else(|e| panic!("bind {what}: {e}"))
        };
        let (grpc, http, admin) = (bind("gRPC"), bind("HTTP"), bind("admin"));
        let admin_addr = admin.local_addr().expect("admin address");
        let grpc_addr = grpc.local_addr().expect("gRPC address");
        let http_addr = http.local_addr().expect("HTTP address");
        let (tx, rx) = oneshot::channel();
        let shutdown = async move {
            let _ = rx.await;
        };
        let task = tokio::spawn(floodgate_server::run_with_clock(
            config,
            Listeners {
                grpc,
                http,
                admin: Some(admin),
            },
            shutdown,
            clock,
        ));

        let server = TestServer {
            grpc_addr,
            http_addr,
            admin_addr,
            shutdown: Some(tx),
            task: Some(task),
        };
        let task = server.task.as_ref().expect("task just spawned");
        wait_until_listening(grpc_addr, || {
            task.is_finished()
                .then(|| "the server task ended".to_owned())
        })
        .await;
        server
    }

    /// A generated RLS client connected to the server.
    pub async fn client(&self) -> RateLimitServiceClient<Channel> {
        RateLimitServiceClient::connect(format!("http://{}", self.grpc_addr))
            .await
            .expect("connect to server")
    }

    /// Starts the drain and waits for the server to stop.
    pub async fn stop(mut self) -> Result<(), RunError> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        match self.task.take() {
            Some(task) => task.await.expect("server task panicked"),
            None => Ok(()),
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// A config for tests: memory store, the given rules.
pub fn config_with_rules(rules: &Path) -> Config {
    Config {
        rules: rules.to_path_buf(),
        ..Config::default()
    }
}

/// Rules for domain `edge`: each `user` value may make `per_hour` requests an
/// hour (an hour, so that no test straddles a window boundary).
pub fn user_rules(per_hour: u32) -> String {
    format!(
        "domain: edge\ndescriptors:\n  - key: user\n    rate_limit: {{unit: hour, requests_per_unit: {per_hour}}}\n"
    )
}

/// Rules for load runs and benchmarks: domain `bench`, each `user` value a
/// billion calls an hour, so every call is a full decision and none is over.
pub const BENCH_RULES: &str = "\
domain: bench
descriptors:
  - key: user
    rate_limit: {unit: hour, requests_per_unit: 1000000000}
  - key: service
    value: checkout
    capacity: {requests_per_unit: 1000000000, unit: second, share_by: user}
";

/// The `floodgate` binary of this build: next to the test executables'
/// `deps/` directory. `cargo test --workspace` (the README's test command)
/// builds it; after `cargo test -p floodgate-e2e` alone, build it first.
pub fn floodgate_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .map(Path::to_path_buf)
        .unwrap_or_default();
    let bin = dir.join(if cfg!(windows) {
        "floodgate.exe"
    } else {
        "floodgate"
    });
    assert!(
        bin.exists(),
        "{} not found: run `cargo build -p floodgate-server` (scripts/test does)",
        bin.display()
    );
    bin
}

/// A `floodgate serve` process on free loopback ports, stopped (SIGTERM,
/// then kill) on drop.
#[derive(Debug)]
pub struct ServerProcess {
    child: Child,
    /// The gRPC address.
    pub grpc_addr: SocketAddr,
    /// The HTTP address.
    pub http_addr: SocketAddr,
    /// The admin address.
    pub admin_addr: SocketAddr,
}

impl ServerProcess {
    /// Runs `floodgate serve --rules RULES` with `args` and `env` added, and
    /// waits until gRPC accepts connections.
    pub async fn start(rules: &Path, args: &[&str], env: &[(&str, &str)]) -> ServerProcess {
        let grpc_addr: SocketAddr = format!("127.0.0.1:{}", free_port())
            .parse()
            .expect("address");
        let http_addr: SocketAddr = format!("127.0.0.1:{}", free_port())
            .parse()
            .expect("address");
        let admin_addr: SocketAddr = format!("127.0.0.1:{}", free_port())
            .parse()
            .expect("address");
        let mut command = Command::new(floodgate_bin());
        command
            .arg("serve")
            .arg("--rules")
            .arg(rules)
            .args([
                "--grpc-addr",
                &grpc_addr.to_string(),
                "--http-addr",
                &http_addr.to_string(),
                "--admin-addr",
                &admin_addr.to_string(),
            ])
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        for (name, _) in std::env::vars().filter(|(n, _)| n.starts_with("FLOODGATE_")) {
            command.env_remove(name);
        }
        for (name, value) in env {
            command.env(name, value);
        }
        let mut process = ServerProcess {
            child: command.spawn().expect("spawn floodgate"),
            grpc_addr,
            http_addr,
            admin_addr,
        };
        let child = &mut process.child;
        wait_until_listening(grpc_addr, || match child.try_wait() {
            Ok(Some(status)) => Some(format!("floodgate exited: {status}")),
            _ => None,
        })
        .await;
        process
    }

    /// A generated RLS client connected to it.
    pub async fn client(&self) -> RateLimitServiceClient<Channel> {
        RateLimitServiceClient::connect(format!("http://{}", self.grpc_addr))
            .await
            .expect("connect to server")
    }

    /// Freezes the process (SIGSTOP): the kernel still queues connections
    /// to its listeners, but nothing accepts them.
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    /// Thaws a paused process (SIGCONT).
    pub fn resume(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, signal: &str) {
        let ok = Command::new("kill")
            .args([signal, &self.child.id().to_string()])
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "kill {signal} floodgate failed");
    }

    /// The process id (to read its memory use from `/proc`).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        for _ in 0..100 {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls `addr` until it accepts a connection (10 s at most); panics with
/// the reason if `stopped` reports that the server ended first.
pub async fn wait_until_listening(addr: SocketAddr, mut stopped: impl FnMut() -> Option<String>) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while tokio::net::TcpStream::connect(addr).await.is_err() {
        if let Some(why) = stopped() {
            panic!("{addr} never listened: {why}");
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{addr} did not start listening within 10 s"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A minimal HTTP/1.1 GET over loopback: (status, body).
pub async fn http_get(url: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let rest = url.strip_prefix("http://").expect("HTTP GET");
    let (host, path) = rest.split_once('/').expect("HTTP GET");
    let mut stream = tokio::net::TcpStream::connect(host)
        .await
        .expect("HTTP GET");
    stream
        .write_all(
            format!("GET /{path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .expect("HTTP GET");
    let mut text = String::new();
    stream.read_to_string(&mut text).await.expect("HTTP GET");
    let code = text
        .get(9..12)
        .and_then(|c| c.parse().ok())
        .expect("an HTTP status line");
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (code, body)
}

/// A descriptor of `(key, value)` entries.
pub fn descriptor(entries: &[(&str, &str)]) -> RateLimitDescriptor {
    RateLimitDescriptor {
        entries: entries
            .iter()
            .map(|(key, value)| Entry {
                key: (*key).into(),
                value: (*value).into(),
            })
            .collect(),
        ..RateLimitDescriptor::default()
    }
}

/// A request for `domain` with one descriptor of `(key, value)` entries.
pub fn request(domain: &str, entries: &[(&str, &str)]) -> RateLimitRequest {
    RateLimitRequest {
        domain: domain.into(),
        descriptors: vec![descriptor(entries)],
        hits_addend: 0,
    }
}

/// A minimal HTTP/1.1 POST of `body` over loopback, with `content_type` as
/// the `Content-Type` header (none if `None`): (status, body, lossily
/// decoded). One connection per call, closed after the answer.
pub async fn http_post(url: &str, content_type: Option<&str>, body: &[u8]) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let rest = url.strip_prefix("http://").expect("HTTP POST");
    let (host, path) = rest.split_once('/').expect("HTTP POST");
    let mut stream = tokio::net::TcpStream::connect(host)
        .await
        .expect("HTTP POST");
    let content_type = content_type
        .map(|t| format!("Content-Type: {t}\r\n"))
        .unwrap_or_default();
    let head = format!(
        "POST /{path} HTTP/1.1\r\nHost: {host}\r\n{content_type}Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.expect("HTTP POST");
    stream.write_all(body).await.expect("HTTP POST");
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await.expect("HTTP POST");
    let text = String::from_utf8_lossy(&answer);
    let code = text
        .get(9..12)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP answer: {text:?}"));
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (code, body)
}
