//! Load for the Redis topology tests: a fixed number of calls over many
//! connections (exactness), or steady load until stopped, with every call's
//! time and result (failover). Requests here are built from
//! `(key, value)` descriptors of one entry each ([`descriptor`], [`request`]).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use floodgate_proto::rate_limit_descriptor::Entry;
use floodgate_proto::rate_limit_response::Code;
use floodgate_proto::{RateLimitDescriptor, RateLimitRequest, RateLimitServiceClient};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tonic::transport::{Channel, Endpoint};

use crate::rpc::degraded;

/// One descriptor with one entry.
pub fn descriptor(key: &str, value: &str) -> RateLimitDescriptor {
    RateLimitDescriptor {
        entries: vec![Entry {
            key: key.into(),
            value: value.into(),
        }],
        ..Default::default()
    }
}

/// A request for `domain`.
pub fn request(domain: &str, descriptors: Vec<RateLimitDescriptor>) -> RateLimitRequest {
    RateLimitRequest {
        domain: domain.into(),
        descriptors,
        hits_addend: 0,
    }
}

/// The error a steady load records for an answer made without Redis.
pub const DEGRADED: &str = "degraded (answered without Redis)";

/// One HTTP/2 connection per call of this (tonic shares nothing between
/// channels built from separate endpoints).
async fn connect(addr: SocketAddr) -> RateLimitServiceClient<Channel> {
    let channel = Endpoint::from_shared(format!("http://{addr}"))
        .expect("an endpoint URI")
        .connect()
        .await
        .expect("connect to the server");
    RateLimitServiceClient::new(channel)
}

/// What a batch of calls got.
#[derive(Debug, Default)]
pub struct Tally {
    /// Calls answered OK overall.
    pub overall_ok: usize,
    /// Calls answered OVER_LIMIT overall.
    pub overall_over: usize,
    /// Per descriptor position: how many calls that descriptor allowed.
    pub per_descriptor_ok: Vec<usize>,
    /// Failed calls (status code and message).
    pub errors: Vec<String>,
}

impl Tally {
    /// Every call.
    pub fn total(&self) -> usize {
        self.overall_ok + self.overall_over + self.errors.len()
    }
}

/// `connections` connections spread round-robin over `addrs`, all started
/// together, each sending `per_connection` calls of `req` one after another.
pub async fn hammer(
    addrs: &[SocketAddr],
    connections: usize,
    per_connection: usize,
    req: RateLimitRequest,
) -> Tally {
    let mut clients = Vec::with_capacity(connections);
    for i in 0..connections {
        clients.push(connect(addrs[i % addrs.len()]).await);
    }
    let start = Arc::new(tokio::sync::Barrier::new(connections));
    let mut tasks = JoinSet::new();
    for mut client in clients {
        let req = req.clone();
        let start = start.clone();
        tasks.spawn(async move {
            start.wait().await;
            let mut results = Vec::with_capacity(per_connection);
            for _ in 0..per_connection {
                results.push(client.should_rate_limit(req.clone()).await);
            }
            results
        });
    }
    let mut tally = Tally {
        per_descriptor_ok: vec![0; req.descriptors.len()],
        ..Tally::default()
    };
    while let Some(results) = tasks.join_next().await {
        for result in results.expect("a load task panicked") {
            match result {
                Ok(resp) => {
                    let resp = resp.into_inner();
                    if resp.overall_code == Code::Ok as i32 {
                        tally.overall_ok += 1;
                    } else {
                        tally.overall_over += 1;
                    }
                    for (i, s) in resp.statuses.iter().enumerate() {
                        if s.code == Code::Ok as i32 {
                            tally.per_descriptor_ok[i] += 1;
                        }
                    }
                }
                Err(status) => {
                    tally
                        .errors
                        .push(format!("{:?}: {}", status.code(), status.message()))
                }
            }
        }
    }
    tally
}

/// Steady load running in the background until [`SteadyLoad::stop`].
pub struct SteadyLoad {
    stop: Arc<AtomicBool>,
    tasks: JoinSet<Vec<(Instant, Result<(), String>)>>,
}

/// Starts `connections` connections over `addrs`, each calling in a loop with
/// one descriptor `steady=<key>` per key (keys rotate per call).
pub fn steady_load(addrs: Vec<SocketAddr>, connections: usize, keys: Vec<String>) -> SteadyLoad {
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = JoinSet::new();
    for i in 0..connections {
        let addr = addrs[i % addrs.len()];
        let stop = stop.clone();
        let keys = keys.clone();
        tasks.spawn(async move {
            let mut client = connect(addr).await;
            let mut results = Vec::new();
            let mut n = i;
            while !stop.load(Ordering::Relaxed) {
                let key = &keys[n % keys.len()];
                n += 1;
                let call =
                    client.should_rate_limit(request("sale", vec![descriptor("steady", key)]));
                let result = match tokio::time::timeout(Duration::from_secs(5), call).await {
                    // Answered without Redis: not the store's answer, so
                    // not a success for the store tests.
                    Ok(Ok(resp)) if degraded(resp.get_ref()) => Err(DEGRADED.to_owned()),
                    Ok(Ok(resp)) if resp.get_ref().overall_code == Code::Ok as i32 => Ok(()),
                    Ok(Ok(resp)) => Err(format!("code {}", resp.get_ref().overall_code)),
                    Ok(Err(status)) => Err(format!("{:?}: {}", status.code(), status.message())),
                    Err(_) => Err("no answer within 5 s".to_owned()),
                };
                let failed = result.is_err();
                results.push((Instant::now(), result));
                if failed {
                    // Do not spin on a failing store.
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
            results
        });
    }
    SteadyLoad { stop, tasks }
}

impl SteadyLoad {
    /// Stops the load and returns every call's result.
    pub async fn stop(mut self) -> LoadReport {
        self.stop.store(true, Ordering::Relaxed);
        let mut calls = Vec::new();
        while let Some(results) = self.tasks.join_next().await {
            calls.extend(results.expect("a load task panicked"));
        }
        calls.sort_by_key(|(at, _)| *at);
        LoadReport { calls }
    }
}

/// Every call of a steady load: when it ended and how.
#[derive(Debug)]
pub struct LoadReport {
    calls: Vec<(Instant, Result<(), String>)>,
}

impl LoadReport {
    /// Every call, the degraded answers, and the failed calls.
    pub fn counts(&self) -> (usize, usize, usize) {
        let degraded = self
            .calls
            .iter()
            .filter(|(_, r)| r.as_ref().is_err_and(|e| e == DEGRADED))
            .count();
        let errors = self.calls.iter().filter(|(_, r)| r.is_err()).count() - degraded;
        (self.calls.len(), degraded, errors)
    }

    /// Successful calls that ended before `t`.
    pub fn ok_before(&self, t: Instant) -> usize {
        self.calls
            .iter()
            .filter(|(at, r)| *at < t && r.is_ok())
            .count()
    }

    /// Successful calls that ended after `t`.
    pub fn ok_after(&self, t: Instant) -> usize {
        self.calls
            .iter()
            .filter(|(at, r)| *at > t && r.is_ok())
            .count()
    }

    /// Failed calls that ended before `t`.
    pub fn errors_before(&self, t: Instant) -> usize {
        self.calls
            .iter()
            .filter(|(at, r)| *at < t && r.is_err())
            .count()
    }

    /// Failed calls that ended after `t`.
    pub fn errors_after(&self, t: Instant) -> usize {
        self.calls
            .iter()
            .filter(|(at, r)| *at > t && r.is_err())
            .count()
    }

    /// Prints what the failover cost: errors, when the last one was, calls/s.
    pub fn print(&self, what: &str, killed: Instant, promoted: Instant) {
        let errors: Vec<_> = self.calls.iter().filter(|(_, r)| r.is_err()).collect();
        let last = errors
            .last()
            .map(|(at, _)| at.saturating_duration_since(killed));
        let mut kinds: Vec<&str> = errors
            .iter()
            .filter_map(|(_, r)| r.as_ref().err().map(String::as_str))
            .collect();
        kinds.sort_unstable();
        kinds.dedup();
        eprintln!(
            "{what}: {} calls, {} errors; promotion {:?} after the kill; last error {:?} after the kill; error kinds: {:?}",
            self.calls.len(),
            errors.len(),
            promoted.saturating_duration_since(killed),
            last,
            kinds.iter().take(5).collect::<Vec<_>>(),
        );
    }
}

/// Runs steady load over `addrs`, lets it flow for 2 s, calls `failover`
/// (which kills a primary and waits for the promotion; it blocks), keeps the
/// load on for 12 s after the promotion, and checks what the issue asks:
/// no error before the kill, errors only in the failover window, zero
/// errors from 10 s after the promotion on, and calls answered then.
pub async fn through_failover(
    what: &str,
    addrs: Vec<SocketAddr>,
    keys: Vec<String>,
    failover: impl FnOnce() -> crate::Failover,
) -> LoadReport {
    let load = steady_load(addrs, 16, keys);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let failover = tokio::task::block_in_place(failover);
    assert_ne!(failover.old_port, failover.new_port);
    tokio::time::sleep(Duration::from_secs(12)).await;
    let report = load.stop().await;

    let (killed, promoted) = (failover.killed_at, failover.promoted_at);
    report.print(what, killed, promoted);
    let settled = promoted + Duration::from_secs(10);
    assert!(
        report.ok_before(killed) > 100,
        "load was flowing before the kill"
    );
    assert_eq!(report.errors_before(killed), 0, "no errors before the kill");
    assert_eq!(
        report.errors_after(settled),
        0,
        "errors more than 10 s after promotion"
    );
    assert!(
        report.ok_after(settled) > 100,
        "the service answers after the failover"
    );
    report
}
