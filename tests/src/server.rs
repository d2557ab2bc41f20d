//! Floodgate itself, as the tests run it: in-process on `127.0.0.1:0`
//! ([`TestServer`]) or as the `floodgate serve` binary of this build
//! ([`ServerProcess`]), with the rules and configs the tests give it.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use floodgate_proto::RateLimitServiceClient;
use floodgate_server::clock::Clock;
use floodgate_server::config::Config;
use floodgate_server::store::redis::RedisSettings;
use floodgate_server::{Listeners, RunError};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::transport::Channel;

use crate::free_port;
use crate::host::claim;
use crate::host::signal;

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
        // A port another test of this process was handed out (and may
        // not have bound yet) is given back, and another one bound.
        let bind = |what| loop {
            let any = SocketAddr::from(([127, 0, 0, 1], 0));
            let listener = floodgate_server::transport::bind(any, config.listeners.listen_backlog)
                .unwrap_or_else(|e| panic!("bind {what}: {e}"));
            let port = listener.local_addr().map_or(0, |a| a.port());
            if claim(port) {
                break listener;
            }
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
                metrics: None,
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

/// [`config_with_rules`], counting in the Redis at `redis_url` with
/// connect, command and store deadlines of `timeout` (a debug build on a
/// busy machine must not miss the 50 ms default store deadline).
pub fn config_with_redis(rules: &Path, redis_url: String, timeout: Duration) -> Config {
    let mut config = Config {
        redis: Some(RedisSettings {
            connect_timeout: timeout,
            command_timeout: timeout,
            ..RedisSettings::single(redis_url)
        }),
        ..config_with_rules(rules)
    };
    config.resilience.store_deadline = timeout;
    config
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
/// `FLOODGATE_E2E_BIN` names another one (`bench/run` measures the `dist`
/// build with a debug driver).
pub fn floodgate_bin() -> PathBuf {
    if let Some(bin) = std::env::var_os("FLOODGATE_E2E_BIN") {
        return PathBuf::from(bin);
    }
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
        signal(self.child.id(), "-STOP", "floodgate");
    }

    /// Thaws a paused process (SIGCONT).
    pub fn resume(&self) {
        signal(self.child.id(), "-CONT", "floodgate");
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
