//! Redis topologies beyond one standalone server, started and stopped by the
//! tests and benchmarks themselves, on free loopback ports:
//!
//! - [`RedisCluster`]: 3 primaries + 3 replicas, `cluster-node-timeout 1000`
//!   so that a killed primary's replica takes over in a few seconds.
//! - [`RedisSentinel`]: a master, one replica and 3 sentinels (quorum 2)
//!   watching it as `mymaster`.
//! - [`TlsRedis`]: a TLS-only `redis-server` with ACL users and certificates
//!   generated at test time (a CA, server and client certificates, and an
//!   unrelated CA for the "untrusted certificate" cases).
//!
//! Everything is blocking std code, usable from sync and async tests (from
//! async code, call the slow methods through `tokio::task::spawn_blocking` or
//! accept blocking a worker thread). Every process is SIGKILLed when its
//! owner is dropped, each lives in its own temporary directory with its own
//! `redis.log`, and every wait is bounded: it panics with what it was waiting
//! for, the last thing it saw, and the tail of the relevant logs.
//!
//! [`command`] sends one command through the `redis` crate's blocking
//! client (RESP2), one connection per call, with bounded waits.

use std::collections::HashMap;
use std::ffi::OsString;
use std::fmt::Write as _;
use std::fs::File;
use std::net::TcpStream;
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use redis::{ConnectionLike, IntoConnectionInfo, RedisResult, Value};
use tokio::time::Instant;

use crate::free_port;
use real_time::Deadline;

/// Number of hash slots in a Redis Cluster.
pub const CLUSTER_SLOTS: u16 = 16384;

const INSTALL_HINT: &str =
    "cannot run redis-server: install it (apt-get install -y redis-server) or run scripts/test";
/// How long one `redis-server` may take to answer after it is spawned.
const START_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a topology may take to form (cluster handshake, sentinel discovery).
const FORM_TIMEOUT: Duration = Duration::from_secs(30);
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

// ---------------------------------------------------------------------------
// Hash slots

/// CRC16/XMODEM (polynomial 0x1021, initial value 0, no reflection): the
/// checksum Redis Cluster hashes keys with.
pub fn crc16(bytes: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for &byte in bytes {
        crc ^= u16::from(byte) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc
}

/// The cluster hash slot of `key`, as `CLUSTER KEYSLOT` computes it: if the
/// key has a `{`, and a `}` after it with at least one byte between them,
/// only the bytes between the first `{` and the first `}` after it are hashed
/// (the hash tag); otherwise the whole key is.
pub fn key_slot(key: &[u8]) -> u16 {
    let tagged = key.iter().position(|&b| b == b'{').and_then(|open| {
        let rest = &key[open + 1..];
        rest.iter()
            .position(|&b| b == b'}')
            .filter(|&close| close > 0)
            .map(|close| &rest[..close])
    });
    crc16(tagged.unwrap_or(key)) % CLUSTER_SLOTS
}

// ---------------------------------------------------------------------------
// Commands

/// How long a command may take to connect.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// How long a command may take to be sent and answered.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a readiness probe waits for `PONG`.
const PROBE_TIMEOUT: Duration = Duration::from_millis(200);

/// Sends one command to `127.0.0.1:port` on a new connection and reads its
/// reply. A Redis error is `Ok(Value::ServerError(..))` (see
/// [`error_text`]); `Err` is a connection or protocol failure (1 s to
/// connect, 2 s to answer).
pub fn command(port: u16, args: &[&str]) -> RedisResult<Value> {
    connect(port, ANSWER_TIMEOUT)?.req_command(&to_cmd(args))
}

/// A number from `INFO section`: the value of `name` (`connected_clients`),
/// or one field of it (`cmdstat_evalsha`, `calls`). A command Redis has not
/// run yet has no line: 0.
pub fn info_number(port: u16, section: &str, name: &str, field: Option<&str>) -> u64 {
    let text = command(port, &["INFO", section])
        .ok()
        .and_then(|r| text(&r))
        .unwrap_or_else(|| panic!("INFO {section} from port {port}"));
    let Some(value) = text
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
    else {
        return 0;
    };
    let value = match field {
        None => Some(value.trim()),
        Some(f) => value
            .split(',')
            .find_map(|kv| kv.strip_prefix(f)?.strip_prefix('=')),
    };
    value
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("INFO {section}: {name} {field:?} in {text}"))
}

/// Sends `commands` on one new connection (e.g. `AUTH` then the command) and
/// reads one reply per command, in order.
pub fn pipeline(port: u16, commands: &[&[&str]]) -> RedisResult<Vec<Value>> {
    let mut connection = connect(port, ANSWER_TIMEOUT)?;
    commands
        .iter()
        .map(|args| connection.req_command(&to_cmd(args)))
        .collect()
}

/// A blocking RESP2 connection to `127.0.0.1:port` that sends nothing of its
/// own (no `CLIENT SETINFO`: the node sees only the caller's commands).
fn connect(port: u16, answer_within: Duration) -> RedisResult<redis::Connection> {
    let info = ("127.0.0.1", port).into_connection_info()?;
    let settings = info.redis_settings().clone().set_skip_set_lib_name();
    let client = redis::Client::open(info.set_redis_settings(settings))?;
    let connection = client.get_connection_with_timeout(CONNECT_TIMEOUT)?;
    connection.set_read_timeout(Some(answer_within))?;
    connection.set_write_timeout(Some(answer_within))?;
    Ok(connection)
}

fn to_cmd(args: &[&str]) -> redis::Cmd {
    let mut cmd = redis::Cmd::new();
    for arg in args {
        cmd.arg(*arg);
    }
    cmd
}

/// The text of a simple-string (`OK` included) or bulk reply (bulk bytes
/// decoded lossily).
pub fn text(reply: &Value) -> Option<String> {
    match reply {
        Value::SimpleString(s) => Some(s.clone()),
        Value::Okay => Some("OK".to_owned()),
        Value::BulkString(b) => Some(String::from_utf8_lossy(b).into_owned()),
        _ => None,
    }
}

/// An error reply as the server wrote it, without the `-`
/// (`MOVED 12182 127.0.0.1:7001`); `None` for any other reply.
pub fn error_text(reply: &Value) -> Option<String> {
    let Value::ServerError(error) = reply else {
        return None;
    };
    Some(match error.details() {
        Some(details) => format!("{} {details}", error.code()),
        None => error.code().to_owned(),
    })
}

/// `command`, with Redis errors and connection failures both as a message.
fn query(port: u16, args: &[&str]) -> Result<Value, String> {
    match command(port, args) {
        Ok(reply) => match error_text(&reply) {
            Some(e) => Err(format!("port {port}: {args:?} -> -{e}")),
            None => Ok(reply),
        },
        Err(e) => Err(format!("port {port}: {args:?} -> {e}")),
    }
}

/// `query` for a command answering text (INFO, CLUSTER NODES, ...).
fn query_text(port: u16, args: &[&str]) -> Result<String, String> {
    let reply = query(port, args)?;
    text(&reply).ok_or_else(|| format!("port {port}: {args:?} -> unexpected {reply:?}"))
}

/// `query` for a reply that must be `+OK`.
fn query_ok(port: u16, args: &[&str]) -> Result<(), String> {
    match query(port, args)? {
        Value::Okay => Ok(()),
        other => Err(format!("port {port}: {args:?} -> unexpected {other:?}")),
    }
}

/// A field of an `INFO` section (`name:value` lines).
fn info_field<'a>(info: &'a str, name: &str) -> Option<&'a str> {
    info.lines().find_map(|line| {
        line.strip_prefix(name)
            .and_then(|rest| rest.strip_prefix(':'))
            .map(str::trim)
    })
}

/// The first element of `ROLE`: `master`, `slave` or `sentinel`.
fn role(port: u16) -> Result<String, String> {
    let reply = query(port, &["ROLE"])?;
    reply
        .as_sequence()
        .and_then(|items| items.first())
        .and_then(text)
        .ok_or_else(|| format!("port {port}: ROLE -> unexpected {reply:?}"))
}

/// A flat `[field, value, field, value, ...]` array (SENTINEL replies) as a map.
fn flat_map(reply: &Value) -> HashMap<String, String> {
    let items = reply.as_sequence().unwrap_or_default();
    items
        .chunks(2)
        .filter_map(|pair| Some((text(pair.first()?)?, text(pair.get(1)?)?)))
        .collect()
}

/// Whether `127.0.0.1:port` answers like a Redis server (within 200 ms):
/// `+PONG`, or `-NOAUTH` when it requires a password.
pub(crate) fn answers(port: u16) -> bool {
    let ping = connect(port, PROBE_TIMEOUT).and_then(|mut c| c.req_command(&to_cmd(&["PING"])));
    let Ok(reply) = ping else {
        return false;
    };
    matches!(&reply, Value::SimpleString(s) if s == "PONG")
        || error_text(&reply).is_some_and(|e| e.starts_with("NOAUTH"))
}

// ---------------------------------------------------------------------------
// Processes

/// How a node shows it is ready.
#[derive(Debug, Clone, Copy)]
enum Ready {
    /// Answers PING (or NOAUTH) on its port.
    Ping,
    /// TLS-only: accepts TCP connections and has logged that it is ready.
    Log,
}

/// One `redis-server` process (data node or sentinel) with its own directory.
#[derive(Debug)]
struct Node {
    name: String,
    port: u16,
    args: Vec<OsString>,
    ready: Ready,
    child: Option<Child>,
    dir: tempfile::TempDir,
}

impl Node {
    fn log_file(&self) -> PathBuf {
        self.dir.path().join("redis.log")
    }

    fn spawn(&mut self) {
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

    fn running(&mut self) -> bool {
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

    fn wait_ready(&mut self, within: Duration) -> bool {
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

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The last lines of its log (and of its stdout/stderr, where config
    /// errors go before the log file is open).
    fn log_tail(&self) -> String {
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
fn launch(name: &str, ready: Ready, mut args: impl FnMut(u16, &Path) -> Vec<OsString>) -> Node {
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
fn base_args(port: u16, dir: &Path) -> Vec<OsString> {
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

fn os_args(args: &[&str]) -> Vec<OsString> {
    args.iter().map(OsString::from).collect()
}

/// Polls `probe` every 20 ms until it succeeds; after `within`, panics with
/// `what`, the probe's last complaint and `logs()`.
fn wait_for<T>(
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

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

fn running_ports(nodes: &Mutex<Vec<Node>>) -> Vec<u16> {
    lock(nodes)
        .iter_mut()
        .filter_map(|n| n.running().then_some(n.port))
        .collect()
}

fn all_logs(nodes: &Mutex<Vec<Node>>) -> String {
    lock(nodes).iter().map(Node::log_tail).collect()
}

fn kill_port(nodes: &Mutex<Vec<Node>>, port: u16) {
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

// ---------------------------------------------------------------------------
// Cluster

/// One node as a cluster node sees it: a line of `CLUSTER NODES`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterNodeInfo {
    /// Node ID.
    pub id: String,
    /// Client port (0 while the address is unknown).
    pub port: u16,
    /// Flags: `myself`, `master`, `slave`, `fail?`, `fail`, `handshake`, `noaddr`, ...
    pub flags: Vec<String>,
    /// For a replica, its primary's node ID.
    pub primary_id: Option<String>,
    /// Whether the cluster bus link to it is connected.
    pub connected: bool,
    /// The slots it serves (empty for replicas).
    pub slots: Vec<RangeInclusive<u16>>,
}

impl ClusterNodeInfo {
    fn has_flag(&self, flag: &str) -> bool {
        self.flags.iter().any(|f| f == flag)
    }

    /// Flagged `master`.
    pub fn is_primary(&self) -> bool {
        self.has_flag("master")
    }

    /// Flagged `slave`.
    pub fn is_replica(&self) -> bool {
        self.has_flag("slave")
    }

    /// Flagged `myself`: the line of the node that answered.
    pub fn is_myself(&self) -> bool {
        self.has_flag("myself")
    }

    /// Flagged `fail` or `fail?`, or not yet fully known (`handshake`, `noaddr`).
    pub fn is_failing(&self) -> bool {
        ["fail", "fail?", "handshake", "noaddr"]
            .iter()
            .any(|f| self.has_flag(f))
    }

    /// Whether it serves `slot`.
    pub fn owns(&self, slot: u16) -> bool {
        self.slots.iter().any(|r| r.contains(&slot))
    }

    fn slot_count(&self) -> usize {
        self.slots.iter().map(|r| r.clone().count()).sum()
    }
}

/// Parses `CLUSTER NODES` output.
pub fn parse_cluster_nodes(text: &str) -> Vec<ClusterNodeInfo> {
    text.lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            if fields.len() < 8 {
                return None;
            }
            let port = fields[1]
                .split(['@', ','])
                .next()
                .and_then(|addr| addr.rsplit(':').next())
                .and_then(|p| p.parse().ok())
                .unwrap_or(0);
            let slots = fields[8..]
                .iter()
                .filter(|s| !s.starts_with('['))
                .filter_map(|s| match s.split_once('-') {
                    Some((a, b)) => Some(a.parse().ok()?..=b.parse().ok()?),
                    None => s.parse().ok().map(|a| a..=a),
                })
                .collect();
            Some(ClusterNodeInfo {
                id: fields[0].to_owned(),
                port,
                flags: fields[2].split(',').map(str::to_owned).collect(),
                primary_id: (fields[3] != "-").then(|| fields[3].to_owned()),
                connected: fields[7] == "connected",
                slots,
            })
        })
        .collect()
}

fn cluster_view(port: u16) -> Result<Vec<ClusterNodeInfo>, String> {
    query_text(port, &["CLUSTER", "NODES"]).map(|t| parse_cluster_nodes(&t))
}

fn cluster_myself(port: u16) -> Result<ClusterNodeInfo, String> {
    cluster_view(port)?
        .into_iter()
        .find(ClusterNodeInfo::is_myself)
        .ok_or_else(|| format!("port {port}: CLUSTER NODES has no myself line"))
}

/// The slot ranges of the 3 primaries, as `redis-cli --cluster create` splits them.
const PRIMARY_SLOTS: [(u16, u16); 3] = [(0, 5460), (5461, 10922), (10923, 16383)];

/// A Redis Cluster of 3 primaries and 3 replicas on loopback, each node with
/// its own directory and log; every node is killed on drop.
///
/// `cluster-node-timeout` is 1000 ms, so a killed primary is replaced by its
/// replica within a few seconds. Methods take `&self`, so the cluster can be
/// shared (e.g. in an `Arc`) between a load generator and a task that kills
/// nodes.
#[derive(Debug)]
pub struct RedisCluster {
    nodes: Mutex<Vec<Node>>,
    /// Killed primaries: port -> (when, node ID, the slots it served).
    killed: Mutex<HashMap<u16, (Instant, ClusterNodeInfo)>>,
    last_failover: Mutex<Option<Failover>>,
}

impl RedisCluster {
    /// Starts 6 nodes, assigns the slots to the first 3, attaches one replica
    /// to each, and waits (30 s at most) until every node reports
    /// `cluster_state:ok`, agrees on the topology, and every replica's link
    /// is up.
    pub fn start() -> RedisCluster {
        let nodes: Vec<Node> = (0..6)
            .map(|i| {
                let name = if i < 3 {
                    "cluster-primary"
                } else {
                    "cluster-replica"
                };
                launch(name, Ready::Ping, |port, dir| {
                    let bus = loop {
                        let bus = free_port();
                        if bus != port {
                            break bus;
                        }
                    };
                    let mut args = base_args(port, dir);
                    args.extend(os_args(&[
                        "--cluster-enabled",
                        "yes",
                        "--cluster-node-timeout",
                        "1000",
                        "--cluster-port",
                        &bus.to_string(),
                        "--cluster-announce-ip",
                        "127.0.0.1",
                    ]));
                    args.push("--cluster-config-file".into());
                    args.push(dir.join("nodes.conf").into());
                    args
                })
            })
            .collect();
        let cluster = RedisCluster {
            nodes: Mutex::new(nodes),
            killed: Mutex::new(HashMap::new()),
            last_failover: Mutex::new(None),
        };
        cluster.form();
        cluster
    }

    fn form(&self) {
        let ports = self.ports();
        let logs = || all_logs(&self.nodes);
        let must = |result: Result<(), String>| {
            if let Err(why) = result {
                panic!("forming the cluster failed: {why}\n{}", logs());
            }
        };
        for (&port, (first, last)) in ports.iter().zip(PRIMARY_SLOTS) {
            must(query_ok(
                port,
                &[
                    "CLUSTER",
                    "ADDSLOTSRANGE",
                    &first.to_string(),
                    &last.to_string(),
                ],
            ));
        }
        // Distinct config epochs up front, as redis-cli does, so that no
        // epoch collision has to be resolved later.
        for (epoch, &port) in (1..).zip(&ports) {
            must(query_ok(
                port,
                &["CLUSTER", "SET-CONFIG-EPOCH", &epoch.to_string()],
            ));
        }
        for &port in &ports[1..] {
            let bus = wait_for("CONFIG GET cluster-port", START_TIMEOUT, logs, || {
                let reply = query(port, &["CONFIG", "GET", "cluster-port"])?;
                flat_map(&reply)
                    .get("cluster-port")
                    .cloned()
                    .ok_or_else(|| format!("port {port}: no cluster-port in {reply:?}"))
            });
            must(query_ok(
                ports[0],
                &["CLUSTER", "MEET", "127.0.0.1", &port.to_string(), &bus],
            ));
        }
        wait_for(
            "every cluster node knowing all 6 nodes",
            FORM_TIMEOUT,
            logs,
            || {
                for &port in &ports {
                    let view = cluster_view(port)?;
                    if view.len() != ports.len() || view.iter().any(ClusterNodeInfo::is_failing) {
                        return Err(format!("port {port} sees {view:?}"));
                    }
                }
                Ok(())
            },
        );
        for (&primary, &replica) in ports[..3].iter().zip(&ports[3..]) {
            let id = wait_for("CLUSTER MYID", START_TIMEOUT, logs, || {
                query_text(primary, &["CLUSTER", "MYID"])
            });
            wait_for("CLUSTER REPLICATE", FORM_TIMEOUT, logs, || {
                query_ok(replica, &["CLUSTER", "REPLICATE", &id])
            });
        }
        wait_for(
            "the cluster being ok with a replica attached to each primary",
            FORM_TIMEOUT,
            logs,
            || self.check(true),
        );
    }

    /// Ok when every running node reports `cluster_state:ok`, sees every
    /// running node as healthy, sees the slots fully covered by running
    /// primaries, agrees with the others on who serves what, and (for
    /// replicas) has its replication link up. With `replicas`, each primary
    /// must also have a running replica.
    fn check(&self, replicas: bool) -> Result<(), String> {
        let live = running_ports(&self.nodes);
        let mut owners_seen: Option<(u16, Vec<(u16, u16)>)> = None;
        for &port in &live {
            let info = query_text(port, &["CLUSTER", "INFO"])?;
            if info_field(&info, "cluster_state") != Some("ok") {
                return Err(format!("port {port}: cluster_state is not ok"));
            }
            let view = cluster_view(port)?;
            for &other in &live {
                match view.iter().find(|n| n.port == other) {
                    Some(n) if !n.is_failing() => {}
                    found => return Err(format!("port {port} sees port {other} as {found:?}")),
                }
            }
            let serving: Vec<&ClusterNodeInfo> = view
                .iter()
                .filter(|n| n.is_primary() && !n.is_failing() && live.contains(&n.port))
                .collect();
            let covered: usize = serving.iter().map(|n| n.slot_count()).sum();
            if covered != usize::from(CLUSTER_SLOTS) {
                return Err(format!(
                    "port {port}: running primaries serve {covered} slots: {view:?}"
                ));
            }
            let mut owners: Vec<(u16, u16)> = serving
                .iter()
                .flat_map(|n| n.slots.iter().map(|r| (*r.start(), n.port)))
                .collect();
            owners.sort_unstable();
            match &owners_seen {
                Some((first, seen)) if *seen != owners => {
                    return Err(format!(
                        "ports {first} and {port} disagree on slot owners: {seen:?} vs {owners:?}"
                    ));
                }
                Some(_) => {}
                None => owners_seen = Some((port, owners)),
            }
            if replicas {
                for primary in &serving {
                    let attached = view.iter().any(|n| {
                        n.primary_id.as_deref() == Some(&primary.id)
                            && !n.is_failing()
                            && live.contains(&n.port)
                    });
                    if !attached {
                        return Err(format!(
                            "port {port}: primary {} has no replica: {view:?}",
                            primary.port
                        ));
                    }
                }
            }
            let myself = view.iter().find(|n| n.is_myself());
            if myself.is_some_and(ClusterNodeInfo::is_replica) {
                let replication = query_text(port, &["INFO", "replication"])?;
                if info_field(&replication, "master_link_status") != Some("up") {
                    return Err(format!("port {port}: replica link is not up"));
                }
            }
        }
        Ok(())
    }

    /// The ports of all 6 nodes, running or not, in start order (the first 3
    /// were the initial primaries).
    pub fn ports(&self) -> Vec<u16> {
        lock(&self.nodes).iter().map(|n| n.port).collect()
    }

    /// The running nodes that are primaries now, ordered by the first slot
    /// they serve.
    pub fn primary_ports(&self) -> Vec<u16> {
        let mut primaries: Vec<(u16, u16)> = running_ports(&self.nodes)
            .into_iter()
            .filter_map(|port| cluster_myself(port).ok())
            .filter(|n| n.is_primary())
            .map(|n| (n.slots.first().map_or(u16::MAX, |r| *r.start()), n.port))
            .collect();
        primaries.sort_unstable();
        primaries.into_iter().map(|(_, port)| port).collect()
    }

    /// The running nodes that are replicas now.
    pub fn replica_ports(&self) -> Vec<u16> {
        running_ports(&self.nodes)
            .into_iter()
            .filter(|&port| cluster_myself(port).is_ok_and(|n| n.is_replica()))
            .collect()
    }

    /// `redis://127.0.0.1:P` of each current primary, comma-separated.
    pub fn seed_urls(&self) -> String {
        self.primary_ports()
            .iter()
            .map(|p| format!("redis://127.0.0.1:{p}"))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The cluster as the first running node that answers sees it.
    pub fn cluster_nodes(&self) -> Vec<ClusterNodeInfo> {
        let live = running_ports(&self.nodes);
        live.iter()
            .find_map(|&port| cluster_view(port).ok())
            .unwrap_or_else(|| {
                panic!(
                    "no running cluster node answered CLUSTER NODES (running: {live:?})\n{}",
                    all_logs(&self.nodes)
                )
            })
    }

    /// The port of the running node that serves `slot` now (the one whose
    /// own `CLUSTER NODES` line claims it). Panics if none does, e.g. in the
    /// middle of a failover.
    pub fn primary_for_slot(&self, slot: u16) -> u16 {
        assert!(slot < CLUSTER_SLOTS, "slot {slot} out of range");
        running_ports(&self.nodes)
            .into_iter()
            .find(|&port| cluster_myself(port).is_ok_and(|n| n.is_primary() && n.owns(slot)))
            .unwrap_or_else(|| {
                panic!(
                    "no running node serves slot {slot} (failover in progress?)\n{}",
                    all_logs(&self.nodes)
                )
            })
    }

    /// The port of the node that serves `key` now.
    pub fn primary_for_key(&self, key: &[u8]) -> u16 {
        self.primary_for_slot(key_slot(key))
    }

    /// SIGKILLs the node on `port` (primary or replica).
    pub fn kill_node(&self, port: u16) {
        let myself = cluster_myself(port).ok();
        kill_port(&self.nodes, port);
        if let Some(me) = myself.filter(|n| n.is_primary() && !n.slots.is_empty()) {
            lock(&self.killed).insert(port, (Instant::now(), me));
        }
    }

    /// After [`RedisCluster::kill_node`] killed the primary on `old_port`:
    /// waits until another running node serves its slots and the running
    /// nodes are all ok and agree again, and returns the new primary's port.
    /// The timings are kept: see [`RedisCluster::last_failover`].
    pub fn wait_for_failover(&self, old_port: u16, within: Duration) -> u16 {
        let (killed_at, old) = lock(&self.killed)
            .get(&old_port)
            .cloned()
            .unwrap_or_else(|| {
                panic!("port {old_port} is not a primary killed by kill_node: nothing to fail over")
            });
        let slot = *old.slots[0].start();
        let mut promoted: Option<(u16, Instant)> = None;
        let new_port = wait_for(
            &format!("failover of primary {old_port} (slot {slot})"),
            within,
            || all_logs(&self.nodes),
            || {
                if promoted.is_none() {
                    let owner = running_ports(&self.nodes).into_iter().find(|&port| {
                        cluster_myself(port).is_ok_and(|n| n.is_primary() && n.owns(slot))
                    });
                    promoted = owner.map(|port| (port, Instant::now()));
                }
                let Some((port, _)) = promoted else {
                    return Err(format!("no running node serves slot {slot} yet"));
                };
                self.check(false)?;
                Ok(port)
            },
        );
        let promoted_at = promoted.map_or_else(Instant::now, |(_, at)| at);
        *lock(&self.last_failover) = Some(Failover {
            old_port,
            new_port,
            killed_at,
            promoted_at,
            settled_at: Instant::now(),
        });
        new_port
    }

    /// The last failover [`RedisCluster::wait_for_failover`] saw.
    pub fn last_failover(&self) -> Option<Failover> {
        *lock(&self.last_failover)
    }

    /// Starts a killed node again on its port, with its old `nodes.conf`, and
    /// waits (30 s at most) until the cluster is ok with it: a former primary
    /// whose slots were taken over rejoins as a replica of the new primary.
    pub fn restart_node(&self, port: u16) {
        {
            let mut nodes = lock(&self.nodes);
            let node = nodes
                .iter_mut()
                .find(|n| n.port == port)
                .unwrap_or_else(|| panic!("no node of this cluster listens on port {port}"));
            assert!(!node.running(), "node {port} is still running");
            node.spawn();
            if !node.wait_ready(START_TIMEOUT) {
                panic!(
                    "restarted node {port} did not answer within {START_TIMEOUT:?}\n{}",
                    node.log_tail()
                );
            }
        }
        lock(&self.killed).remove(&port);
        wait_for(
            &format!("the cluster being ok with restarted node {port}"),
            FORM_TIMEOUT,
            || all_logs(&self.nodes),
            || self.check(false),
        );
    }

    /// `FLUSHALL` on every current primary (replicas follow).
    pub fn flushall(&self) {
        for port in self.primary_ports() {
            if let Err(why) = query_ok(port, &["FLUSHALL"]) {
                panic!("{why}");
            }
        }
    }

    /// `SCRIPT FLUSH` on every running node (primaries and replicas: the
    /// script cache is not replicated), so that the next `EVALSHA` gets
    /// `NOSCRIPT`.
    pub fn script_flush(&self) {
        for port in running_ports(&self.nodes) {
            if let Err(why) = query_ok(port, &["SCRIPT", "FLUSH"]) {
                panic!("{why}");
            }
        }
    }

    /// The tail of the log of the node on `port`.
    pub fn log_tail(&self, port: u16) -> String {
        lock(&self.nodes)
            .iter()
            .find(|n| n.port == port)
            .map(Node::log_tail)
            .unwrap_or_default()
    }
}

// ---------------------------------------------------------------------------
// Sentinel

const MASTER_NAME: &str = "mymaster";

/// A master, one replica and 3 sentinels (`redis-server sentinel.conf
/// --sentinel`) monitoring the master as `mymaster` with quorum 2,
/// `down-after-milliseconds 1000` and `failover-timeout 5000`. Every process
/// is killed on drop.
#[derive(Debug)]
pub struct RedisSentinel {
    // Dropped first, so that the sentinels do not react to the data nodes
    // going away.
    sentinels: Mutex<Vec<Node>>,
    data: Mutex<Vec<Node>>,
    killed: Mutex<Option<(u16, Instant)>>,
    last_failover: Mutex<Option<Failover>>,
}

impl RedisSentinel {
    /// Starts the master, the replica (waiting until its link is up), then
    /// the sentinels, and waits (30 s at most) until each sentinel knows the
    /// master, the replica (link ok) and the other 2 sentinels.
    pub fn start() -> RedisSentinel {
        let master = launch("sentinel-master", Ready::Ping, base_args);
        let master_port = master.port;
        let replica = launch("sentinel-replica", Ready::Ping, |port, dir| {
            let mut args = base_args(port, dir);
            args.extend(os_args(&[
                "--replicaof",
                "127.0.0.1",
                &master_port.to_string(),
            ]));
            args
        });
        let replica_port = replica.port;
        let data = Mutex::new(vec![master, replica]);
        wait_for(
            "the sentinel topology's replica link being up",
            FORM_TIMEOUT,
            || all_logs(&data),
            || {
                let info = query_text(replica_port, &["INFO", "replication"])?;
                match info_field(&info, "master_link_status") {
                    Some("up") => Ok(()),
                    other => Err(format!("master_link_status: {other:?}")),
                }
            },
        );
        let sentinels: Vec<Node> = (0..3)
            .map(|_| {
                launch("sentinel", Ready::Ping, |port, dir| {
                    let conf = dir.join("sentinel.conf");
                    let text = format!(
                        "port {port}\n\
                         bind 127.0.0.1\n\
                         dir \"{dir}\"\n\
                         logfile \"{log}\"\n\
                         sentinel monitor {MASTER_NAME} 127.0.0.1 {master_port} 2\n\
                         sentinel down-after-milliseconds {MASTER_NAME} 1000\n\
                         sentinel failover-timeout {MASTER_NAME} 5000\n\
                         sentinel parallel-syncs {MASTER_NAME} 1\n",
                        dir = dir.display(),
                        log = dir.join("redis.log").display(),
                    );
                    std::fs::write(&conf, text).expect("write sentinel.conf");
                    vec![conf.into(), "--sentinel".into()]
                })
            })
            .collect();
        let topology = RedisSentinel {
            sentinels: Mutex::new(sentinels),
            data,
            killed: Mutex::new(None),
            last_failover: Mutex::new(None),
        };
        let sentinel_ports = topology.sentinel_ports();
        wait_for(
            "every sentinel knowing the master, its replica and the other sentinels",
            FORM_TIMEOUT,
            || topology.logs(),
            || {
                for &port in &sentinel_ports {
                    let master = flat_map(&query(port, &["SENTINEL", "MASTER", MASTER_NAME])?);
                    let field = |name: &str| master.get(name).map_or("?", String::as_str);
                    if field("port") != master_port.to_string()
                        || field("flags") != "master"
                        || field("num-slaves") != "1"
                        || field("num-other-sentinels") != "2"
                    {
                        return Err(format!("sentinel {port}: SENTINEL MASTER {master:?}"));
                    }
                    let replicas = query(port, &["SENTINEL", "REPLICAS", MASTER_NAME])?;
                    let replicas: Vec<HashMap<String, String>> = replicas
                        .as_sequence()
                        .unwrap_or_default()
                        .iter()
                        .map(flat_map)
                        .collect();
                    let ok = replicas.iter().any(|r| {
                        r.get("port") == Some(&replica_port.to_string())
                            && r.get("flags").is_some_and(|f| f == "slave")
                            && r.get("master-link-status").is_some_and(|s| s == "ok")
                    });
                    if !ok {
                        return Err(format!("sentinel {port}: SENTINEL REPLICAS {replicas:?}"));
                    }
                }
                Ok(())
            },
        );
        topology
    }

    fn logs(&self) -> String {
        all_logs(&self.data) + &all_logs(&self.sentinels)
    }

    /// `mymaster`.
    pub fn master_name(&self) -> &str {
        MASTER_NAME
    }

    /// The sentinels' ports.
    pub fn sentinel_ports(&self) -> Vec<u16> {
        lock(&self.sentinels).iter().map(|n| n.port).collect()
    }

    /// `redis://127.0.0.1:P` of each sentinel, comma-separated.
    pub fn sentinel_urls(&self) -> String {
        self.sentinel_ports()
            .iter()
            .map(|p| format!("redis://127.0.0.1:{p}"))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The ports of the two data nodes (first the initial master, then the
    /// initial replica), running or not.
    pub fn data_ports(&self) -> Vec<u16> {
        lock(&self.data).iter().map(|n| n.port).collect()
    }

    /// The master's port, as the first sentinel that answers reports it.
    pub fn master_port(&self) -> u16 {
        self.sentinel_ports()
            .into_iter()
            .find_map(|port| sentinel_master_port(port).ok())
            .unwrap_or_else(|| panic!("no sentinel reported the master\n{}", self.logs()))
    }

    /// The running data nodes other than the master.
    pub fn replica_ports(&self) -> Vec<u16> {
        let master = self.master_port();
        running_ports(&self.data)
            .into_iter()
            .filter(|&p| p != master)
            .collect()
    }

    /// SIGKILLs the current master; returns its port.
    pub fn kill_master(&self) -> u16 {
        let port = self.master_port();
        kill_port(&self.data, port);
        *lock(&self.killed) = Some((port, Instant::now()));
        port
    }

    /// After [`RedisSentinel::kill_master`]: waits until every sentinel
    /// reports the same new master and that node's `ROLE` is master; returns
    /// its port. The timings are kept: see [`RedisSentinel::last_failover`].
    pub fn wait_for_failover(&self, within: Duration) -> u16 {
        let (old_port, killed_at) =
            (*lock(&self.killed)).expect("wait_for_failover without kill_master first");
        let sentinels = self.sentinel_ports();
        let mut promoted: Option<(u16, Instant)> = None;
        let new_port = wait_for(
            &format!("sentinel failover away from master {old_port}"),
            within,
            || self.logs(),
            || {
                if promoted.is_none() {
                    let up = running_ports(&self.data)
                        .into_iter()
                        .find(|&p| p != old_port && role(p).is_ok_and(|r| r == "master"));
                    promoted = up.map(|port| (port, Instant::now()));
                }
                let reported: Vec<u16> = sentinels
                    .iter()
                    .map(|&s| sentinel_master_port(s))
                    .collect::<Result<_, _>>()?;
                let new = reported[0];
                if new == old_port || reported.iter().any(|&p| p != new) {
                    return Err(format!("sentinels report masters {reported:?}"));
                }
                match role(new)?.as_str() {
                    "master" => Ok(new),
                    other => Err(format!("reported master {new} has role {other}")),
                }
            },
        );
        let promoted_at = promoted.map_or_else(Instant::now, |(_, at)| at);
        *lock(&self.last_failover) = Some(Failover {
            old_port,
            new_port,
            killed_at,
            promoted_at,
            settled_at: Instant::now(),
        });
        *lock(&self.killed) = None;
        new_port
    }

    /// The last failover [`RedisSentinel::wait_for_failover`] saw.
    pub fn last_failover(&self) -> Option<Failover> {
        *lock(&self.last_failover)
    }
}

fn sentinel_master_port(sentinel: u16) -> Result<u16, String> {
    let reply = query(
        sentinel,
        &["SENTINEL", "GET-MASTER-ADDR-BY-NAME", MASTER_NAME],
    )?;
    reply
        .as_sequence()
        .and_then(|a| a.get(1))
        .and_then(text)
        .and_then(|p| p.parse().ok())
        .ok_or_else(|| format!("sentinel {sentinel}: GET-MASTER-ADDR-BY-NAME -> {reply:?}"))
}

// ---------------------------------------------------------------------------
// TLS

/// Test certificates, generated with rcgen into `dir`:
/// `ca.pem` (+ `ca.key`), `server.pem`/`server.key` (127.0.0.1, localhost,
/// signed by the CA), `client.pem`/`client.key` (signed by the CA),
/// `other-ca.pem` (an unrelated CA) and `untrusted-client.pem`/`.key`
/// (signed by the unrelated CA).
pub fn write_test_pki(dir: &Path) -> Result<(), rcgen::Error> {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
        KeyPair, KeyUsagePurpose,
    };
    let write = |name: &str, text: String| {
        std::fs::write(dir.join(name), text).expect("write test certificate");
    };
    let ca = |file: &str, name: &str| -> Result<Issuer<'static, KeyPair>, rcgen::Error> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate()?;
        write(&format!("{file}.pem"), params.self_signed(&key)?.pem());
        write(&format!("{file}.key"), key.serialize_pem());
        Ok(Issuer::new(params, key))
    };
    let leaf = |file: &str,
                name: &str,
                sans: &[&str],
                usage: ExtendedKeyUsagePurpose,
                issuer: &Issuer<'static, KeyPair>|
     -> Result<(), rcgen::Error> {
        let sans: Vec<String> = sans.iter().map(|s| (*s).to_owned()).collect();
        let mut params = CertificateParams::new(sans)?;
        params.distinguished_name.push(DnType::CommonName, name);
        params.use_authority_key_identifier_extension = true;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![usage];
        let key = KeyPair::generate()?;
        write(
            &format!("{file}.pem"),
            params.signed_by(&key, issuer)?.pem(),
        );
        write(&format!("{file}.key"), key.serialize_pem());
        Ok(())
    };
    let trusted = ca("ca", "Floodgate test CA")?;
    let other = ca("other-ca", "Floodgate untrusted CA")?;
    leaf(
        "server",
        "localhost",
        &["127.0.0.1", "localhost"],
        ExtendedKeyUsagePurpose::ServerAuth,
        &trusted,
    )?;
    leaf(
        "client",
        TlsRedis::USER,
        &[],
        ExtendedKeyUsagePurpose::ClientAuth,
        &trusted,
    )?;
    leaf(
        "untrusted-client",
        TlsRedis::USER,
        &[],
        ExtendedKeyUsagePurpose::ClientAuth,
        &other,
    )?;
    Ok(())
}

/// A TLS-only `redis-server` (`port 0`, `tls-port P`) with ACLs: the user
/// [`TlsRedis::USER`] (password [`TlsRedis::PASSWORD`], all keys, channels
/// and commands) and `requirepass` [`TlsRedis::DEFAULT_PASSWORD`] for the
/// `default` user. Its certificates are generated at start with rcgen, in a
/// temporary directory. Killed on drop.
///
/// Readiness is checked without a TLS client: the TLS port accepts TCP
/// connections and the log says "Ready to accept connections" (the listener
/// is opened before that line is written).
#[derive(Debug)]
pub struct TlsRedis {
    node: Node,
    certs: tempfile::TempDir,
    require_client_cert: bool,
}

impl TlsRedis {
    /// The ACL user.
    pub const USER: &'static str = "floodgate";
    /// The ACL user's password.
    pub const PASSWORD: &'static str = "s3cret-pw";
    /// The `default` user's password (`requirepass`).
    pub const DEFAULT_PASSWORD: &'static str = "default-pw";

    /// Generates the certificates and starts the server; with
    /// `require_client_cert`, clients must present a certificate signed by
    /// the CA (`tls-auth-clients yes`), otherwise they may
    /// (`tls-auth-clients optional`).
    pub fn start(require_client_cert: bool) -> TlsRedis {
        let certs = tempfile::Builder::new()
            .prefix("floodgate-tls-certs-")
            .tempdir()
            .expect("temp dir");
        if let Err(e) = write_test_pki(certs.path()) {
            panic!("generating test certificates failed: {e}");
        }
        let certs_dir = certs.path().to_path_buf();
        let node = launch("tls", Ready::Log, |port, dir| {
            let file = |name: &str| certs_dir.join(name).display().to_string();
            let text = format!(
                "port 0\n\
                 tls-port {port}\n\
                 bind 127.0.0.1\n\
                 dir \"{dir}\"\n\
                 logfile \"{log}\"\n\
                 save \"\"\n\
                 appendonly no\n\
                 tls-cert-file \"{cert}\"\n\
                 tls-key-file \"{key}\"\n\
                 tls-ca-cert-file \"{ca}\"\n\
                 tls-auth-clients {auth}\n\
                 requirepass {default_pw}\n\
                 user {user} on >{pw} ~* &* +@all\n",
                dir = dir.display(),
                log = dir.join("redis.log").display(),
                cert = file("server.pem"),
                key = file("server.key"),
                ca = file("ca.pem"),
                auth = if require_client_cert {
                    "yes"
                } else {
                    "optional"
                },
                default_pw = Self::DEFAULT_PASSWORD,
                user = Self::USER,
                pw = Self::PASSWORD,
            );
            let conf = dir.join("redis.conf");
            std::fs::write(&conf, text).expect("write redis.conf");
            vec![conf.into()]
        });
        TlsRedis {
            node,
            certs,
            require_client_cert,
        }
    }

    /// The TLS port (the server has no plain-text port).
    pub fn port(&self) -> u16 {
        self.node.port
    }

    /// Whether clients must present a certificate.
    pub fn requires_client_cert(&self) -> bool {
        self.require_client_cert
    }

    /// `rediss://USER:PASSWORD@127.0.0.1:P` for the ACL user.
    pub fn url(&self) -> String {
        self.url_with(Self::USER, Self::PASSWORD)
    }

    /// `rediss://user:password@127.0.0.1:P` (not percent-encoded).
    pub fn url_with(&self, user: &str, password: &str) -> String {
        format!("rediss://{user}:{password}@127.0.0.1:{}", self.port())
    }

    fn cert(&self, name: &str) -> PathBuf {
        self.certs.path().join(name)
    }

    /// The CA that signed the server and client certificates (PEM).
    pub fn ca_file(&self) -> PathBuf {
        self.cert("ca.pem")
    }

    /// An unrelated CA (PEM) that signed neither: trusting only it must fail.
    pub fn other_ca_file(&self) -> PathBuf {
        self.cert("other-ca.pem")
    }

    /// A client certificate signed by the CA (PEM; CN = [`TlsRedis::USER`]).
    pub fn client_cert_file(&self) -> PathBuf {
        self.cert("client.pem")
    }

    /// The key of [`TlsRedis::client_cert_file`] (PKCS#8 PEM).
    pub fn client_key_file(&self) -> PathBuf {
        self.cert("client.key")
    }

    /// A client certificate signed by the unrelated CA: the server must
    /// reject it.
    pub fn untrusted_client_cert_file(&self) -> PathBuf {
        self.cert("untrusted-client.pem")
    }

    /// The key of [`TlsRedis::untrusted_client_cert_file`].
    pub fn untrusted_client_key_file(&self) -> PathBuf {
        self.cert("untrusted-client.key")
    }

    /// The server certificate (PEM, for 127.0.0.1 and localhost).
    pub fn server_cert_file(&self) -> PathBuf {
        self.cert("server.pem")
    }

    /// A trusted `redis-cli`: `redis-cli --tls -h 127.0.0.1 -p P --cacert
    /// CA --cert CLIENT --key CLIENT_KEY`, to add credentials (`--user`,
    /// `--pass`, `--no-auth-warning`) and a command to.
    pub fn cli(&self) -> Command {
        let mut cli = self.cli_bare();
        cli.arg("--cacert")
            .arg(self.ca_file())
            .arg("--cert")
            .arg(self.client_cert_file())
            .arg("--key")
            .arg(self.client_key_file());
        cli
    }

    /// `redis-cli --tls -h 127.0.0.1 -p P` with nothing to trust or present
    /// yet: for the negative cases (add `--cacert`, `--cert`, `--key`).
    pub fn cli_bare(&self) -> Command {
        let mut cli = Command::new("redis-cli");
        cli.args(["--tls", "-h", "127.0.0.1", "-p", &self.port().to_string()])
            .stdin(Stdio::null());
        cli
    }

    /// The tail of the server's log.
    pub fn log_tail(&self) -> String {
        self.node.log_tail()
    }
}
