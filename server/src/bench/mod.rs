//! `floodgate bench`: a load generator for any server of Envoy's
//! `RateLimitService` (it speaks only the Envoy API), off the request path.
//!
//! Closed loop (each of `connections × streams` callers sends its next call
//! when the last one returns) or open loop (`--rate`: calls start on a fixed
//! schedule; a call that starts late because the caller's last call was
//! still running is timed from its scheduled start, so a stalled server is
//! not hidden by callers that stopped sending). Always bounded: by
//! `--duration` and optionally `--requests`. Latency goes into an HDR
//! histogram (1 µs to 60 s, 3 significant digits).
//!
//! A connection that dies (the server crashed, restarted or sent GOAWAY) is
//! replaced: the calls it took down count once each as errors, then its
//! callers wait while one of them reconnects, with a backoff from 50 ms to
//! 1 s, until the run ends. A call counts as OK or OVER_LIMIT only when its
//! answer arrived.
//!
//! Over TLS (`--target https://...` or any `--tls-*` flag, see
//! [`crate::tls::client`]) each connection's handshake is done before its
//! callers start, or, for a connection opened again, before its callers'
//! next calls: it is never part of a call's latency.
//!
//! - `keys`: which descriptor values the calls carry;
//! - `wire`: the gRPC client, written on `h2` to stay cheaper than the
//!   servers it measures.

mod keys;
mod wire;

pub use keys::Keys;

use std::io::IsTerminal;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use clap::Args;
use floodgate_proto::rate_limit_descriptor::Entry;
use floodgate_proto::rate_limit_response::Code;
use floodgate_proto::rate_limit_response::RateLimit;
use floodgate_proto::rate_limit_response::rate_limit::Unit;
use floodgate_proto::{RateLimitDescriptor, RateLimitRequest, RateLimitResponse};
use h2::client::SendRequest;
use hdrhistogram::Histogram;
use tokio::sync::Notify;
use tokio::task::JoinSet;
use tokio::time::Instant;

use keys::{Sampler, zipf_cdf};

use crate::tls::client::TlsFlags;

/// A descriptor entry from the command line (here and in `floodgate admin`): `KEY=VALUE` (the value may
/// hold `=`).
pub fn entry(arg: &str) -> Result<Entry, String> {
    match arg.split_once('=') {
        Some((key, value)) => Ok(Entry {
            key: key.to_owned(),
            value: value.to_owned(),
        }),
        None => Err(format!("expected KEY=VALUE, got {arg:?}")),
    }
}

/// `floodgate bench` settings.
#[derive(Debug, Clone, Args)]
pub struct BenchArgs {
    /// The RLS server, e.g. http://127.0.0.1:8081, or https://HOST:PORT
    /// for TLS (with --tls-ca).
    #[arg(long, default_value = "http://127.0.0.1:8081")]
    pub target: String,
    /// HTTP/2 connections.
    #[arg(long, default_value_t = 16)]
    pub connections: usize,
    /// Concurrent streams (callers) per connection.
    #[arg(long, default_value_t = 16)]
    pub streams: usize,
    /// The generator's threads. One (like h2load's `-t 1`) leaves the
    /// other cores to the server under test; raise it when the generator
    /// runs on a machine of its own.
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// How long to run, e.g. 10s.
    #[arg(long, default_value = "10s")]
    pub duration: String,
    /// Stop after this many calls (and at the duration, whichever is first).
    #[arg(long)]
    pub requests: Option<u64>,
    /// Open loop: start this many calls per second (default: closed loop).
    #[arg(long)]
    pub rate: Option<u64>,
    /// The request's domain (by default the example rules' one). A target
    /// whose first answer says no rule matched (a domain it has no rules
    /// for) stops the run with an error.
    #[arg(long, default_value = "edge")]
    pub domain: String,
    /// Entries before the varying one, as `key=value` (repeatable), e.g.
    /// `--entry service=checkout --key client` for a capacity rule.
    #[arg(long = "entry", value_name = "KEY=VALUE", value_parser = entry)]
    pub entries: Vec<Entry>,
    /// The descriptor entry's key (its value comes from --keys).
    #[arg(long, default_value = "user")]
    pub key: String,
    /// Values: `hot` (one value), `unique` (a new value every call: a key
    /// flood), `uniform:N`, `zipf:N:S` (exponent S), or
    /// `abuse:N:P` (N well-behaved users and one abusive user sending P% of calls).
    #[arg(long, default_value = "uniform:10000")]
    pub keys: String,
    /// Hits per call (`hits_addend`).
    #[arg(long, default_value_t = 1)]
    pub hits: u32,
    /// Print a JSON summary instead of text.
    #[arg(long)]
    pub json: bool,
    /// TLS: any of these flags (or an https:// target) speaks TLS.
    #[command(flatten)]
    pub tls: TlsFlags,
}

/// What a run measured.
#[derive(Debug, serde::Serialize)]
pub struct Summary {
    /// Calls answered or failed.
    pub calls: u64,
    /// Wall time, seconds.
    pub seconds: f64,
    /// Calls per second.
    pub calls_per_second: f64,
    /// OK answers.
    pub ok: u64,
    /// OVER_LIMIT answers.
    pub over_limit: u64,
    /// Answers marked degraded (Floodgate's `x-floodgate-degraded` header:
    /// decided without Redis).
    pub degraded: u64,
    /// Failed calls by gRPC status code name.
    pub errors: std::collections::BTreeMap<String, u64>,
    /// Connections opened again after one was lost.
    pub reconnects: u64,
    /// Latency percentiles, microseconds.
    pub latency_us: Latency,
    /// The calls' domain.
    pub domain: String,
    /// The calls' descriptor: the `--entry` entries, then `--key` with the
    /// values `--keys` draws, e.g. `service=checkout, user=<uniform:10000>`.
    pub descriptor: String,
    /// What the answers said applied to the descriptor, with how many said
    /// so (most first): the limit as the server reports it in
    /// `current_limit`, `unlimited`, `no rule matched` (no limit), or that
    /// the answers carry no descriptor status (a server that does not say).
    pub exercised: Vec<Exercised>,
}

/// One kind of answer the run's descriptor got.
#[derive(Debug, serde::Serialize)]
pub struct Exercised {
    /// `3 per minute`, `100 per hour (name "checkout")`, `unlimited`,
    /// `no rule matched` or `not said (no descriptor status)`.
    pub rule: String,
    /// How many answers said so.
    pub answers: u64,
}

/// What an answer said applied to the (one) descriptor of the call.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Applied {
    /// A limit, as the server reports it (`current_limit`).
    Limit(RateLimit),
    /// No limit and `limit_remaining` at its maximum: an `unlimited` rule.
    Unlimited,
    /// No limit: no rule matched, which is also how a server answers for
    /// a domain it has no rules for.
    NoRule,
    /// No descriptor status at all.
    NoStatus,
}

impl Applied {
    fn of(response: &RateLimitResponse) -> Applied {
        match response.statuses.first() {
            None => Applied::NoStatus,
            Some(status) => match &status.current_limit {
                Some(limit) => Applied::Limit(limit.clone()),
                None if status.limit_remaining == u32::MAX => Applied::Unlimited,
                None => Applied::NoRule,
            },
        }
    }

    fn describe(&self) -> String {
        match self {
            Applied::Limit(limit) => {
                let unit = Unit::try_from(limit.unit).map_or_else(
                    |_| format!("unit {}", limit.unit),
                    |u| u.as_str_name().to_lowercase(),
                );
                let name = if limit.name.is_empty() {
                    String::new()
                } else {
                    format!(" (name {:?})", limit.name)
                };
                format!("{} per {unit}{name}", limit.requests_per_unit)
            }
            Applied::Unlimited => "unlimited".into(),
            Applied::NoRule => "no rule matched".into(),
            Applied::NoStatus => "not said (no descriptor status)".into(),
        }
    }
}

/// The run's first answer decides whether the target has a rule for the
/// calls: one that says no rule matched stops the run, which would measure
/// only the path that finds none.
#[derive(Default)]
struct RuleCheck {
    checked: AtomicBool,
    no_rule: AtomicBool,
    stop: Notify,
}

impl RuleCheck {
    /// Looks at `result` if it is the run's first answer; true if the run
    /// stops.
    fn stops(&self, result: &Result<RateLimitResponse, wire::Failure>) -> bool {
        let Ok(response) = result else {
            return false;
        };
        if self.checked.load(Ordering::Relaxed) || self.checked.swap(true, Ordering::Relaxed) {
            return false;
        }
        let no_rule = Applied::of(response) == Applied::NoRule;
        if no_rule {
            self.no_rule.store(true, Ordering::Relaxed);
            self.stop.notify_one();
        }
        no_rule
    }
}

/// Latency percentiles in microseconds.
#[derive(Debug, serde::Serialize)]
pub struct Latency {
    /// Median.
    pub p50: u64,
    /// 90th percentile.
    pub p90: u64,
    /// 99th percentile.
    pub p99: u64,
    /// 99.9th percentile.
    pub p999: u64,
    /// Largest.
    pub max: u64,
}

/// One caller's tally.
struct Tally {
    latency: Histogram<u64>,
    ok: u64,
    over: u64,
    degraded: u64,
    errors: std::collections::BTreeMap<String, u64>,
    /// What the answers said applied, and how many said so.
    applied: Vec<(Applied, u64)>,
}

impl Tally {
    fn new() -> Result<Self, String> {
        Ok(Tally {
            latency: Histogram::new_with_bounds(1, 60_000_000, 3)
                .map_err(|e| format!("histogram: {e}"))?,
            ok: 0,
            over: 0,
            degraded: 0,
            errors: Default::default(),
            applied: Vec::new(),
        })
    }

    /// Counts `answers` more answers that said `applied`.
    fn count(&mut self, applied: Applied, answers: u64) {
        match self.applied.iter_mut().find(|(a, _)| *a == applied) {
            Some((_, n)) => *n += answers,
            None => self.applied.push((applied, answers)),
        }
    }

    fn record(&mut self, latency: Duration, result: Result<RateLimitResponse, wire::Failure>) {
        let us = u64::try_from(latency.as_micros())
            .unwrap_or(u64::MAX)
            .clamp(1, 60_000_000);
        // Within bounds by the clamp above.
        let _ = self.latency.record(us);
        if let Ok(resp) = &result
            && resp
                .response_headers_to_add
                .iter()
                .any(|h| h.key == "x-floodgate-degraded")
        {
            self.degraded += 1;
        }
        if let Ok(resp) = &result {
            self.count(Applied::of(resp), 1);
        }
        match result {
            Ok(resp) if resp.overall_code == Code::OverLimit as i32 => self.over += 1,
            Ok(_) => self.ok += 1,
            Err(failure) => *self.errors.entry(failure.error).or_default() += 1,
        }
    }

    fn merge(&mut self, other: Tally) {
        // Same bounds: cannot fail.
        let _ = self.latency.add(&other.latency);
        self.ok += other.ok;
        self.over += other.over;
        self.degraded += other.degraded;
        for (k, v) in other.errors {
            *self.errors.entry(k).or_default() += v;
        }
        for (applied, n) in other.applied {
            self.count(applied, n);
        }
    }
}

/// One of the run's connections, shared by its callers, and replaced when
/// it is lost.
struct Link {
    target: wire::Target,
    streams: usize,
    /// The handle in use and its generation (counts the replacements).
    current: tokio::sync::Mutex<(u64, SendRequest<Bytes>)>,
    /// Drivers of connections opened during the run: stopped with it.
    drivers: Arc<std::sync::Mutex<JoinSet<()>>>,
    reconnects: AtomicU64,
}

impl Link {
    /// The handle in use and its generation.
    async fn current(&self) -> (u64, SendRequest<Bytes>) {
        let current = self.current.lock().await;
        (current.0, current.1.clone())
    }

    /// A handle on a working connection, replacing generation `lost`
    /// (unless another caller already did), or `None` if the run ended
    /// (`end`, or `done` set) first.
    async fn replace(
        &self,
        lost: u64,
        end: Instant,
        done: &AtomicBool,
    ) -> Option<(u64, SendRequest<Bytes>)> {
        let mut current = self.current.lock().await;
        let mut backoff = Duration::from_millis(50);
        while current.0 == lost {
            if done.load(Ordering::Relaxed) || Instant::now() >= end {
                return None;
            }
            // Bounded by the run: a host that drops SYNs does not hold it.
            match tokio::time::timeout_at(end, wire::connect(&self.target, self.streams)).await {
                Ok(Ok((send, driver))) => {
                    spawn_driver(&self.drivers, driver);
                    *current = (lost + 1, send);
                    self.reconnects.fetch_add(1, Ordering::Relaxed);
                }
                Ok(Err(_)) | Err(_) => {
                    tokio::time::sleep_until(end.min(Instant::now() + backoff)).await;
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                }
            }
        }
        Some((current.0, current.1.clone()))
    }
}

/// Runs a connection's driver among the run's tasks.
fn spawn_driver(
    drivers: &std::sync::Mutex<JoinSet<()>>,
    driver: impl Future<Output = Result<(), h2::Error>> + Send + 'static,
) {
    // A poisoned lock still holds a usable set.
    let mut drivers = drivers
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    // Forget the connections that ended.
    while drivers.try_join_next().is_some() {}
    drivers.spawn(async move {
        // A failed connection shows in its calls.
        let _ = driver.await;
    });
}

/// The "no work at all" baseline: an RLS service that answers OK at once.
/// Benchmarks state every figure as a ratio to it (`floodgate ceiling`
/// serves it, [`serve_ceiling`]).
#[derive(Clone, Copy, Debug, Default)]
pub struct AlwaysOk;

#[tonic::async_trait]
impl floodgate_proto::RateLimitService for AlwaysOk {
    async fn should_rate_limit(
        &self,
        _: tonic::Request<RateLimitRequest>,
    ) -> Result<tonic::Response<floodgate_proto::RateLimitResponse>, tonic::Status> {
        Ok(tonic::Response::new(floodgate_proto::RateLimitResponse {
            overall_code: Code::Ok as i32,
            ..Default::default()
        }))
    }
}

/// Serves [`AlwaysOk`] on `addr` on a plain tonic server (no limits, no
/// layers) until Ctrl-C or SIGTERM.
pub async fn serve_ceiling(addr: &str) -> Result<(), String> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| format!("cannot listen on {addr}: {e}"))?;
    tonic::transport::Server::builder()
        .add_service(floodgate_proto::RateLimitServiceServer::new(AlwaysOk))
        .serve_with_incoming_shutdown(
            tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true)),
            crate::shutdown::signal(),
        )
        .await
        .map_err(|e| e.to_string())
}

/// Runs the load described by `args` and returns what it measured, or why
/// it could not: bad settings, a target it cannot connect to, or a target
/// whose first answer says it has no rule for the calls.
pub async fn run(args: &BenchArgs) -> Result<Summary, String> {
    let duration =
        crate::config::duration("duration", &args.duration).map_err(|e| e.to_string())?;
    let keys = Keys::parse(&args.keys)?;
    if args.connections == 0 || args.streams == 0 {
        return Err("--connections and --streams must be at least 1".into());
    }
    let target = wire::Target::parse(&args.target, &args.tls)?;
    let (links, drivers) = connect(args, &target).await?;
    let budget = AtomicU64::new(args.requests.unwrap_or(u64::MAX));
    let shared = Arc::new(Shared {
        budget,
        done: AtomicBool::new(false),
        sent: AtomicU64::new(0),
        rules: RuleCheck::default(),
    });
    let start = Instant::now();
    let end = start + duration;
    let tasks = spawn_callers(args, &keys, &links, &target, &shared, (start, end));
    watch(args, &tasks, start, end, &shared).await;
    shared.done.store(true, Ordering::Relaxed);
    let mut total = Tally::new()?;
    let mut tasks = tasks;
    while let Some(joined) = tasks.join_next().await {
        let tally = joined.map_err(|e| format!("a caller failed: {e}"))??;
        total.merge(tally);
    }
    drivers
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .abort_all();
    if shared.rules.no_rule.load(Ordering::Relaxed) {
        return Err(no_rule(args));
    }
    Ok(summary(args, total, &links, start))
}

/// The error of a run whose target has no rule for its calls.
fn no_rule(args: &BenchArgs) -> String {
    format!(
        "the target has no rule for domain {:?}, descriptor ({}): its first answer carried no \
         limit (it has no rules for the domain, or none that matches the descriptor), so the run \
         would measure only the path that finds none; stopped. Choose what to load with --domain D \
         (now {:?}), --key K and --entry KEY=VALUE; a Floodgate server lists its limits, one \
         `DOMAIN.KEY: ...` line each, at GET /rlconfig on its HTTP listener \
         (e.g. curl http://127.0.0.1:8080/rlconfig)",
        args.domain,
        descriptor(args),
        args.domain
    )
}

/// The calls' descriptor as text: `--entry` entries, then `--key=<--keys>`.
fn descriptor(args: &BenchArgs) -> String {
    let mut parts: Vec<String> = args
        .entries
        .iter()
        .map(|e| format!("{}={}", e.key, e.value))
        .collect();
    parts.push(format!("{}=<{}>", args.key, args.keys));
    parts.join(", ")
}

/// What the run's callers share.
struct Shared {
    /// Calls left to start (`--requests`).
    budget: AtomicU64,
    /// Set when the run ends.
    done: AtomicBool,
    /// Calls sent.
    sent: AtomicU64,
    /// The first answer's word on the rules.
    rules: RuleCheck,
}

/// Starts `connections × streams` callers, spread over `links`, for the run
/// from `start` to `end`.
fn spawn_callers(
    args: &BenchArgs,
    keys: &Keys,
    links: &[Arc<Link>],
    target: &wire::Target,
    shared: &Arc<Shared>,
    (start, end): (Instant, Instant),
) -> JoinSet<Result<Tally, String>> {
    let cdf = match keys {
        Keys::Zipf { n, s } => zipf_cdf((*n).min(10_000_000), *s),
        _ => Arc::from(Vec::new()),
    };
    let fixed = Arc::new(args.entries.clone());
    let callers = args.connections * args.streams;
    // Open loop: each caller takes every `callers`-th slot of the schedule.
    let interval = args
        .rate
        .filter(|r| *r > 0)
        .map(|r| Duration::from_secs_f64(callers as f64 / r as f64));
    let mut tasks = JoinSet::new();
    for i in 0..callers {
        let caller = Caller {
            link: links[i % args.connections].clone(),
            target: target.clone(),
            sampler: Sampler::new(keys, cdf.clone(), i as u64 + 1),
            shared: shared.clone(),
            domain: args.domain.clone(),
            key: args.key.clone(),
            hits: args.hits,
            fixed: fixed.clone(),
            next: interval.map(|every| start + every.mul_f64(i as f64 / callers as f64)),
            interval,
            end,
        };
        tasks.spawn(caller.run());
    }
    tasks
}

/// The connections' drivers, aborted when the run ends.
type Drivers = Arc<std::sync::Mutex<JoinSet<()>>>;

/// Opens `args.connections` connections to `target`.
async fn connect(
    args: &BenchArgs,
    target: &wire::Target,
) -> Result<(Vec<Arc<Link>>, Drivers), String> {
    let drivers = Arc::new(std::sync::Mutex::new(JoinSet::new()));
    let mut links = Vec::with_capacity(args.connections);
    for _ in 0..args.connections {
        let (send, driver) = wire::connect(target, args.streams).await?;
        spawn_driver(&drivers, driver);
        links.push(Arc::new(Link {
            target: target.clone(),
            streams: args.streams,
            current: tokio::sync::Mutex::new((0, send)),
            drivers: drivers.clone(),
            reconnects: AtomicU64::new(0),
        }));
    }
    Ok((links, drivers))
}

/// Waits until `end`, or until every caller stopped, the request budget
/// is spent or the first answer stopped the run; prints the progress every
/// second on a terminal.
async fn watch(
    args: &BenchArgs,
    tasks: &JoinSet<Result<Tally, String>>,
    start: Instant,
    end: Instant,
    shared: &Shared,
) {
    let progress = std::io::stderr().is_terminal() && !args.json;
    let mut ticker = tokio::time::interval(Duration::from_secs(1));
    ticker.tick().await;
    let (budget, sent) = (&shared.budget, &shared.sent);
    loop {
        tokio::select! {
            () = tokio::time::sleep_until(end) => break,
            () = shared.rules.stop.notified() => break,
            _ = ticker.tick() => {
                if progress {
                    let n = sent.load(Ordering::Relaxed);
                    eprintln!("{:>4.0}s  {n} calls  {:.0} calls/s", start.elapsed().as_secs_f64(), n as f64 / start.elapsed().as_secs_f64());
                }
                if tasks.is_empty() || budget.load(Ordering::Relaxed) == 0 && sent.load(Ordering::Relaxed) >= args.requests.unwrap_or(u64::MAX) {
                    break;
                }
            }
        }
    }
}

/// What the run measured, from the callers' tallies merged.
fn summary(args: &BenchArgs, mut total: Tally, links: &[Arc<Link>], start: Instant) -> Summary {
    let reconnects = links
        .iter()
        .map(|l| l.reconnects.load(Ordering::Relaxed))
        .sum();
    let seconds = start.elapsed().as_secs_f64();
    let calls = total.ok + total.over + total.errors.values().sum::<u64>();
    total
        .applied
        .sort_by_key(|(_, answers)| std::cmp::Reverse(*answers));
    let exercised = total
        .applied
        .iter()
        .map(|(applied, answers)| Exercised {
            rule: applied.describe(),
            answers: *answers,
        })
        .collect();
    let h = &total.latency;
    Summary {
        calls,
        seconds,
        calls_per_second: calls as f64 / seconds,
        ok: total.ok,
        over_limit: total.over,
        degraded: total.degraded,
        errors: total.errors,
        reconnects,
        latency_us: Latency {
            p50: h.value_at_quantile(0.5),
            p90: h.value_at_quantile(0.9),
            p99: h.value_at_quantile(0.99),
            p999: h.value_at_quantile(0.999),
            max: h.max(),
        },
        domain: args.domain.clone(),
        descriptor: descriptor(args),
        exercised,
    }
}

/// One caller: sends its calls one after another on its connection, until
/// the run ends or the request budget is spent.
struct Caller {
    link: Arc<Link>,
    target: wire::Target,
    sampler: Sampler,
    shared: Arc<Shared>,
    domain: String,
    key: String,
    hits: u32,
    fixed: Arc<Vec<Entry>>,
    /// Open loop: this caller's next slot on the schedule.
    next: Option<Instant>,
    /// Open loop: the time between this caller's slots.
    interval: Option<Duration>,
    end: Instant,
}

impl Caller {
    async fn run(mut self) -> Result<Tally, String> {
        let mut tally = Tally::new()?;
        let (mut generation, mut send) = self.link.current().await;
        while !self.shared.done.load(Ordering::Relaxed) {
            if self
                .shared
                .budget
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| b.checked_sub(1))
                .is_err()
            {
                break;
            }
            let Some(scheduled) = self.slot().await else {
                break;
            };
            let request = make_request(
                &self.domain,
                &self.fixed,
                &self.key,
                self.sampler.value(),
                self.hits,
            );
            let result = wire::call(&mut send, &self.target, wire::frame(&request)).await;
            let lost = matches!(&result, Err(failure) if failure.connection_lost);
            let stops = self.shared.rules.stops(&result);
            tally.record(scheduled.elapsed(), result);
            self.shared.sent.fetch_add(1, Ordering::Relaxed);
            if stops {
                self.shared.done.store(true, Ordering::Relaxed);
                break;
            }
            if lost {
                // Wait for a working connection rather than fail
                // every next call at once on the dead one.
                match self
                    .link
                    .replace(generation, self.end, &self.shared.done)
                    .await
                {
                    Some(replaced) => (generation, send) = replaced,
                    None => break,
                }
            }
        }
        Ok(tally)
    }

    /// When the next call counts from (waiting for its slot in an open
    /// loop), or `None` if it would start after the end of the run.
    async fn slot(&mut self) -> Option<Instant> {
        let scheduled = match self.next {
            Some(at) => {
                if at >= self.end {
                    return None;
                }
                self.next = self.interval.map(|every| at + every);
                if Instant::now() < at {
                    // Idle until the slot: count from when the
                    // timer (1 ms resolution) actually woke us, so
                    // its lateness is not charged to the server.
                    tokio::time::sleep_until(at).await;
                    Instant::now()
                } else {
                    // Late because the last call took too long:
                    // that wait is the server's, count it.
                    at
                }
            }
            None => Instant::now(),
        };
        (scheduled < self.end).then_some(scheduled)
    }
}

fn make_request(
    domain: &str,
    fixed: &[Entry],
    key: &str,
    value: String,
    hits: u32,
) -> RateLimitRequest {
    let mut entries = fixed.to_vec();
    entries.push(Entry {
        key: key.to_owned(),
        value,
    });
    RateLimitRequest {
        domain: domain.to_owned(),
        descriptors: vec![RateLimitDescriptor {
            entries,
            ..Default::default()
        }],
        hits_addend: hits,
    }
}

/// The summary as text.
pub fn render(s: &Summary) -> String {
    let l = &s.latency_us;
    let errors: u64 = s.errors.values().sum();
    let mut out = format!(
        "calls: {} in {:.1}s = {:.0} calls/s\nOK: {}  OVER_LIMIT: {}  errors: {}  degraded: {}\nlatency: p50 {} us  p90 {} us  p99 {} us  p99.9 {} us  max {} us\n",
        s.calls,
        s.seconds,
        s.calls_per_second,
        s.ok,
        s.over_limit,
        errors,
        s.degraded,
        l.p50,
        l.p90,
        l.p99,
        l.p999,
        l.max
    );
    for (code, n) in &s.errors {
        out.push_str(&format!("  {code}: {n}\n"));
    }
    let exercised: Vec<String> = s
        .exercised
        .iter()
        .map(|e| {
            let plural = if e.answers == 1 { "" } else { "s" };
            format!("{} ({} answer{plural})", e.rule, e.answers)
        })
        .collect();
    out.push_str(&format!(
        "exercised: domain {:?}, descriptor ({}): {}\n",
        s.domain,
        s.descriptor,
        if exercised.is_empty() {
            "no answer".to_owned()
        } else {
            exercised.join(", ")
        }
    ));
    if s.reconnects > 0 {
        out.push_str(&format!(
            "connections lost and opened again: {}\n",
            s.reconnects
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::tls::client::ALPN_H2;
    use crate::tls::client::testing::Pki;
    use floodgate_proto::rate_limit_response::DescriptorStatus;

    fn args(target: String, tls: TlsFlags) -> BenchArgs {
        BenchArgs {
            target,
            connections: 2,
            streams: 2,
            threads: 1,
            duration: "20s".into(),
            requests: Some(40),
            rate: None,
            domain: "edge".into(),
            entries: Vec::new(),
            key: "user".into(),
            keys: "hot".into(),
            hits: 1,
            json: false,
            tls,
        }
    }

    #[tokio::test]
    async fn the_tls_handshake_is_not_call_latency() {
        let pki = Pki::new();
        // Every handshake waits 400 ms; the calls themselves are quick. The
        // server sends GOAWAY after 15 calls on a connection, so callers
        // open connections again during the run too.
        let slow = Duration::from_millis(400);
        let server = wire::test_server::serve(pki.acceptor(&[ALPN_H2], true), slow, Some(15)).await;
        let summary = run(&args(
            format!("https://{}", server.addr),
            pki.flags(Some("client")),
        ))
        .await
        .unwrap();
        assert_eq!(summary.calls, 40, "{summary:?}");
        assert!(summary.ok >= 30, "{summary:?}");
        assert!(summary.reconnects >= 1, "{summary:?}");
        assert_eq!(
            server.clients().len() as u64,
            2 + summary.reconnects,
            "one handshake per connection, with the client certificate each time"
        );
        assert!(
            server
                .clients()
                .iter()
                .all(|names| names == &["DNSName(bench.client)"]),
            "{:?}",
            server.clients()
        );
        assert!(
            summary.latency_us.max < 400_000,
            "a call's latency holds no handshake: {:?}",
            summary.latency_us
        );
    }

    fn answer(status: Option<DescriptorStatus>) -> RateLimitResponse {
        RateLimitResponse {
            overall_code: Code::Ok as i32,
            statuses: status.into_iter().collect(),
            ..Default::default()
        }
    }

    fn limited(requests_per_unit: u32, unit: Unit, name: &str) -> DescriptorStatus {
        DescriptorStatus {
            code: Code::Ok as i32,
            current_limit: Some(RateLimit {
                requests_per_unit,
                unit: unit as i32,
                name: name.into(),
            }),
            limit_remaining: 2,
            ..Default::default()
        }
    }

    fn no_limit(limit_remaining: u32) -> DescriptorStatus {
        DescriptorStatus {
            code: Code::Ok as i32,
            limit_remaining,
            ..Default::default()
        }
    }

    #[test]
    fn each_answer_says_which_rule_applied() {
        let said = |status| Applied::of(&answer(status)).describe();
        assert_eq!(said(Some(limited(3, Unit::Minute, ""))), "3 per minute");
        assert_eq!(
            said(Some(limited(100, Unit::Hour, "checkout"))),
            r#"100 per hour (name "checkout")"#
        );
        assert_eq!(said(Some(no_limit(u32::MAX))), "unlimited");
        assert_eq!(said(Some(no_limit(0))), "no rule matched");
        assert_eq!(said(None), "not said (no descriptor status)");
    }

    #[test]
    fn only_the_first_answer_decides_and_only_no_rule_stops() {
        let ok = |status| Ok(answer(status));
        let failed = Err(wire::Failure::from("UNAVAILABLE".to_owned()));
        let check = RuleCheck::default();
        assert!(!check.stops(&failed), "a failure is no answer");
        assert!(!check.stops(&ok(Some(limited(3, Unit::Minute, "")))));
        assert!(!check.stops(&ok(Some(no_limit(0)))), "not the first");
        assert!(!check.no_rule.load(Ordering::Relaxed));

        for (first, stops) in [
            (Some(no_limit(0)), true),
            (Some(no_limit(u32::MAX)), false),
            (None, false),
        ] {
            let check = RuleCheck::default();
            assert_eq!(check.stops(&ok(first.clone())), stops, "{first:?}");
            assert_eq!(check.no_rule.load(Ordering::Relaxed), stops);
        }
    }

    #[test]
    fn the_summary_names_the_domain_descriptor_and_rules() {
        let mut a = args("http://127.0.0.1:1".into(), TlsFlags::default());
        a.entries = vec![entry("service=checkout").unwrap()];
        let mut tally = Tally::new().unwrap();
        for _ in 0..3 {
            tally.record(
                Duration::from_millis(1),
                Ok(answer(Some(limited(3, Unit::Minute, "")))),
            );
        }
        let mut other = Tally::new().unwrap();
        other.record(Duration::from_millis(1), Ok(answer(Some(no_limit(0)))));
        other.record(
            Duration::from_millis(1),
            Ok(answer(Some(limited(3, Unit::Minute, "")))),
        );
        tally.merge(other);
        let summary = summary(&a, tally, &[], Instant::now());
        assert!(
            render(&summary).ends_with(
                "exercised: domain \"edge\", descriptor (service=checkout, user=<hot>): 3 per minute (4 answers), no rule matched (1 answer)\n"
            ),
            "{}",
            render(&summary)
        );
        let none = super::summary(&a, Tally::new().unwrap(), &[], Instant::now());
        assert!(render(&none).ends_with("(service=checkout, user=<hot>): no answer\n"));
    }
}
