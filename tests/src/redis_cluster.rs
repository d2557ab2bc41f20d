//! A Redis Cluster of 3 primaries and 3 replicas on loopback
//! ([`RedisCluster`], `cluster-node-timeout 1000` so that a killed primary's
//! replica takes over in a few seconds), `CLUSTER NODES` parsed
//! ([`ClusterNodeInfo`]), and the hash slot of a key ([`key_slot`]).

//! Everything is blocking std code, usable from sync and async tests (from
//! async code, call the slow methods through `tokio::task::spawn_blocking` or
//! accept blocking a worker thread). Every process is SIGKILLed when its
//! owner is dropped, each lives in its own temporary directory with its own
//! `redis.log`, and every wait is bounded: it panics with what it was waiting
//! for, the last thing it saw, and the tail of the relevant logs.

use std::collections::HashMap;
use std::ops::RangeInclusive;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use crate::free_port;
use crate::redis_command::{flat_map, info_field, query, query_ok, query_text};
use crate::redis_node::{
    FORM_TIMEOUT, Failover, Node, Ready, START_TIMEOUT, all_logs, base_args, kill_port, launch,
    lock, os_args, running_ports, wait_for,
};

/// Number of hash slots in a Redis Cluster.
pub const CLUSTER_SLOTS: u16 = 16384;

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

/// The slot ranges of `n` primaries, as `redis-cli --cluster create` splits
/// them (for 3: 0-5460, 5461-10922, 10923-16383).
fn primary_slots(n: usize) -> Vec<(u16, u16)> {
    let per = f64::from(CLUSTER_SLOTS) / n as f64;
    (0..n)
        .map(|i| {
            let first = (i as f64 * per).round() as u16;
            let last = ((i + 1) as f64 * per).round() as u16 - 1;
            (first, last)
        })
        .collect()
}

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
        RedisCluster::with(3, true)
    }

    /// Starts `primaries` nodes and shares the slots among them, without
    /// replicas: what a benchmark compares with a single Redis (whose writes
    /// nothing replicates either).
    pub fn primaries_only(primaries: usize) -> RedisCluster {
        RedisCluster::with(primaries, false)
    }

    fn with(primaries: usize, replicas: bool) -> RedisCluster {
        let count = if replicas { 2 * primaries } else { primaries };
        let nodes: Vec<Node> = (0..count)
            .map(|i| {
                let name = if i < primaries {
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
        cluster.form(primaries, replicas);
        cluster
    }

    fn form(&self, primaries: usize, replicas: bool) {
        let ports = self.ports();
        let logs = || all_logs(&self.nodes);
        let must = |result: Result<(), String>| {
            if let Err(why) = result {
                panic!("forming the cluster failed: {why}\n{}", logs());
            }
        };
        for (&port, (first, last)) in ports.iter().zip(primary_slots(primaries)) {
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
            "every cluster node knowing all the nodes",
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
        if !replicas {
            wait_for("the cluster being ok", FORM_TIMEOUT, logs, || {
                self.check(false)
            });
            return;
        }
        for (&primary, &replica) in ports[..primaries].iter().zip(&ports[primaries..]) {
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
