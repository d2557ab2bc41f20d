//! A master, one replica and 3 sentinels on loopback ([`RedisSentinel`]),
//! watching the master as `mymaster` (quorum 2), and what a sentinel
//! failover looked like.

//! Everything is blocking std code, usable from sync and async tests (from
//! async code, call the slow methods through `tokio::task::spawn_blocking` or
//! accept blocking a worker thread). Every process is SIGKILLed when its
//! owner is dropped, each lives in its own temporary directory with its own
//! `redis.log`, and every wait is bounded: it panics with what it was waiting
//! for, the last thing it saw, and the tail of the relevant logs.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use crate::redis_command::{flat_map, info_field, query, query_text, role, text};
use crate::redis_node::{
    FORM_TIMEOUT, Failover, Node, Ready, all_logs, base_args, kill_port, launch, lock, os_args,
    running_ports, wait_for,
};

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
