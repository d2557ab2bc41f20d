//! The processes behind every Redis topology of the harness: one
//! `redis-server` (data node or sentinel) per `Node`, started on a free
//! port in its own temporary directory by `launch`, polled until ready,
//! and SIGKILLed on drop; `wait_for` bounds every wait in real time and
//! panics with the logs; [`Failover`] is what a topology's failover looked
//! like from outside.

use std::ffi::OsString;
use std::fmt::Write as _;
use std::fs::File;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

use crate::free_port;
use crate::redis_command::answers;
use real_time::Deadline;

const INSTALL_HINT: &str =
    "cannot run redis-server: install it (apt-get install -y redis-server) or run scripts/test";
/// How long one `redis-server` may take to answer after it is spawned.
pub(crate) const START_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a topology may take to form (cluster handshake, sentinel discovery).
pub(crate) const FORM_TIMEOUT: Duration = Duration::from_secs(30);
const POLL: Duration = Duration::from_millis(20);
const LOG_TAIL_LINES: usize = 25;

mod real_time {
    //! The waits here are for real processes, so their bounds are in real
    //! time: tokio's clock may be paused by the calling test, which would
    //! make every bound infinite (and the blocked thread could not let it
    //! auto-advance anyway).
    #![allow(clippy::disallowed_types)]

    use std::time::{Duration, Instant};

    /// A point in real (monotonic) time.
    #[derive(Debug, Clone, Copy)]
    pub(super) struct Deadline(Instant);

    impl Deadline {
        pub(super) fn after(within: Duration) -> Deadline {
            Deadline(Instant::now() + within)
        }

        pub(super) fn passed(self) -> bool {
            Instant::now() >= self.0
        }
    }
}

/// How a node shows it is ready.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Ready {
    /// Answers PING (or NOAUTH) on its port.
    Ping,
    /// TLS-only: accepts TCP connections and has logged that it is ready.
    Log,
}

/// One `redis-server` process (data node or sentinel) with its own directory.
#[derive(Debug)]
pub(crate) struct Node {
    name: String,
    pub(crate) port: u16,
    args: Vec<OsString>,
    ready: Ready,
    child: Option<Child>,
    dir: tempfile::TempDir,
}

impl Node {
    fn log_file(&self) -> PathBuf {
        self.dir.path().join("redis.log")
    }

    pub(crate) fn spawn(&mut self) {
        let out = File::options()
            .create(true)
            .append(true)
            .open(self.dir.path().join("stdout.log"))
            .expect("create stdout.log");
        let err = out.try_clone().expect("clone stdout.log handle");
        let child = Command::new("redis-server")
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .expect(INSTALL_HINT);
        self.child = Some(child);
    }

    pub(crate) fn running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    fn is_ready(&self) -> bool {
        match self.ready {
            Ready::Ping => answers(self.port),
            Ready::Log => {
                TcpStream::connect(("127.0.0.1", self.port)).is_ok()
                    && std::fs::read_to_string(self.log_file())
                        .is_ok_and(|log| log.contains("Ready to accept connections"))
            }
        }
    }

    pub(crate) fn wait_ready(&mut self, within: Duration) -> bool {
        let deadline = Deadline::after(within);
        while !deadline.passed() {
            if !self.running() {
                return false;
            }
            if self.is_ready() {
                return true;
            }
            std::thread::sleep(POLL);
        }
        false
    }

    pub(crate) fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The last lines of its log (and of its stdout/stderr, where config
    /// errors go before the log file is open).
    pub(crate) fn log_tail(&self) -> String {
        let mut out = format!(
            "--- {} (port {}, {}) ---\n",
            self.name,
            self.port,
            self.log_file().display()
        );
        for file in ["redis.log", "stdout.log"] {
            let text = std::fs::read_to_string(self.dir.path().join(file)).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            for line in &lines[lines.len().saturating_sub(LOG_TAIL_LINES)..] {
                let _ = writeln!(out, "{line}");
            }
        }
        out
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Starts a `redis-server` with `args(port, dir)` on a free port and waits
/// until it is ready; tries again with a new port and directory (5 times) if
/// it exits first, most likely because another process took the port.
pub(crate) fn launch(
    name: &str,
    ready: Ready,
    mut args: impl FnMut(u16, &Path) -> Vec<OsString>,
) -> Node {
    let mut last_tail = String::new();
    for _ in 0..5 {
        let dir = tempfile::Builder::new()
            .prefix(&format!("floodgate-{name}-"))
            .tempdir()
            .expect("temp dir");
        let port = free_port();
        let mut node = Node {
            name: name.to_owned(),
            port,
            args: args(port, dir.path()),
            ready,
            child: None,
            dir,
        };
        node.spawn();
        if node.wait_ready(START_TIMEOUT) {
            return node;
        }
        last_tail = node.log_tail();
    }
    panic!(
        "{name}: redis-server was not ready within {START_TIMEOUT:?} on any of 5 ports\n{last_tail}"
    );
}

/// The arguments every data node gets: loopback, its directory and log, no
/// persistence, and replicas served at once (diskless sync without delay).
pub(crate) fn base_args(port: u16, dir: &Path) -> Vec<OsString> {
    let mut args: Vec<OsString> = Vec::new();
    for (name, value) in [
        ("--port", port.to_string()),
        ("--bind", "127.0.0.1".to_owned()),
        ("--save", String::new()),
        ("--appendonly", "no".to_owned()),
        ("--repl-diskless-sync-delay", "0".to_owned()),
    ] {
        args.push(name.into());
        args.push(value.into());
    }
    args.push("--dir".into());
    args.push(dir.into());
    args.push("--logfile".into());
    args.push(dir.join("redis.log").into());
    args
}

pub(crate) fn os_args(args: &[&str]) -> Vec<OsString> {
    args.iter().map(OsString::from).collect()
}

/// Polls `probe` every 20 ms until it succeeds; after `within`, panics with
/// `what`, the probe's last complaint and `logs()`.
pub(crate) fn wait_for<T>(
    what: &str,
    within: Duration,
    logs: impl Fn() -> String,
    mut probe: impl FnMut() -> Result<T, String>,
) -> T {
    let deadline = Deadline::after(within);
    loop {
        let last = match probe() {
            Ok(value) => return value,
            Err(why) => why,
        };
        if deadline.passed() {
            panic!(
                "{what}: not reached within {within:?}\nlast check: {last}\n{}",
                logs()
            );
        }
        std::thread::sleep(POLL);
    }
}

pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

pub(crate) fn running_ports(nodes: &Mutex<Vec<Node>>) -> Vec<u16> {
    lock(nodes)
        .iter_mut()
        .filter_map(|n| n.running().then_some(n.port))
        .collect()
}

pub(crate) fn all_logs(nodes: &Mutex<Vec<Node>>) -> String {
    lock(nodes).iter().map(Node::log_tail).collect()
}

pub(crate) fn kill_port(nodes: &Mutex<Vec<Node>>, port: u16) {
    let mut nodes = lock(nodes);
    let node = nodes
        .iter_mut()
        .find(|n| n.port == port)
        .unwrap_or_else(|| panic!("no node of this topology listens on port {port}"));
    node.kill();
}

/// What happened in one failover, as observed by polling (every 20 ms).
/// The instants are tokio's (`tokio::time::Instant::now()` when each was
/// observed), to compare with a load generator's timestamps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Failover {
    /// The port of the primary that was killed.
    pub old_port: u16,
    /// The port of the replica that took over.
    pub new_port: u16,
    /// When the old primary was SIGKILLed.
    pub killed_at: Instant,
    /// When the new primary was first seen acting as primary.
    pub promoted_at: Instant,
    /// When the whole topology was first seen agreeing on it (what
    /// `wait_for_failover` waits for).
    pub settled_at: Instant,
}

impl Failover {
    /// From the kill to the promotion.
    pub fn promotion_delay(&self) -> Duration {
        self.promoted_at.saturating_duration_since(self.killed_at)
    }

    /// From the kill until every node (or sentinel) agreed.
    pub fn settle_delay(&self) -> Duration {
        self.settled_at.saturating_duration_since(self.killed_at)
    }
}
