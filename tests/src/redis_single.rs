//! One standalone `redis-server` on a free loopback port ([`RedisServer`]),
//! in a temporary directory, killed on drop: the store of most tests.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::free_port;
use crate::host::signal;
use crate::redis_command::answers;

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
            if answers(self.port) {
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
        signal(self.child.id(), "-STOP", "redis-server");
    }

    /// Thaws a paused process (SIGCONT).
    pub fn resume(&self) {
        signal(self.child.id(), "-CONT", "redis-server");
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
