//! Floodgate: a centralized rate-limit service that answers Envoy's
//! `ShouldRateLimit` (`envoy.service.ratelimit.v3.RateLimitService`).
//!
//! # The request path, top to bottom
//!
//! 1. [`transport`]: the listener accepts the connection and holds it to its
//!    limits (connections, HTTP/2 streams, header size, timeouts); then
//!    [`grpc`]: the tonic service receives a `RateLimitRequest` (the HTTP
//!    `/json` endpoint in [`http`] feeds the same path); bytes that are not
//!    one stop here with `INVALID_ARGUMENT` (HTTP 400, or 415 for a `/json`
//!    body that is not `application/json`).
//! 2. [`limiter::Request::parse`]: the request is validated into a typed,
//!    borrowed view; bad input stops here with `INVALID_ARGUMENT`.
//! 3. [`rules`]: each descriptor is matched against the domain's compiled,
//!    immutable [`rules::RuleSet`] (exact value, then wildcard, then default).
//! 4. [`limiter`]: matched limits become fixed-window counter hits with
//!    reference-compatible keys ([`store::key`]), all sent in one store call.
//! 5. [`store`]: the [`store::CounterStore`] adds the hits atomically, in
//!    memory ([`store::memory`]) or in Redis through one Lua script
//!    ([`store::redis`]: one node, Sentinel, or Cluster with one script per
//!    hash slot; under load, concurrent calls share one script run), and
//!    returns the counts. While Redis is not reachable at
//!    startup, [`store::connecting`] stands in and answers UNAVAILABLE.
//! 6. [`limiter`] turns counts into a [`limiter::Decision`]; [`grpc::response`]
//!    encodes it (statuses, optional headers and dynamic metadata);
//!    [`grpc::status`] is the one place errors become wire statuses.
//!
//! Around the path: [`config`] (settings, validated once), [`run`] (listeners,
//! background tasks, graceful drain), [`shutdown`] (signals), [`cli`] (the
//! `floodgate` binary), [`clock`] (injectable time), [`metrics`] (what each
//! step records, served on `/metrics`), [`telemetry`] (logs and OTLP
//! traces: one span per call, with the rules match and the store call
//! inside), [`rules::reload`] (hot reload), [`admin`] (counter get and reset).

pub mod admin;
pub mod bench;
pub mod cli;
pub mod clock;
pub mod config;
pub mod grpc;
pub mod http;
pub mod limiter;
pub mod metrics;
pub mod resilience;
pub mod rules;
pub mod shutdown;
pub mod store;
pub mod telemetry;
pub mod transport;

use std::future::Future;
use std::hash::BuildHasher;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tonic_health::ServingStatus;

use crate::clock::Clock;
use crate::config::Config;
use crate::grpc::{RateLimitGrpc, RateLimiter};
use crate::limiter::Limiter;
use crate::metrics::Metrics;
use crate::resilience::store::ResilientStore;
use crate::rules::{LoadError, Rules};
use crate::store::connecting::Connecting;
use crate::store::key::CacheKey;
use crate::store::memory::MemoryStore;
use crate::store::redis::{ConnectError, RedisMode, RedisSettings, RedisStore};
use crate::store::{CounterStore, StoreError};

/// gRPC health service names reported as serving (the reference reports
/// `ratelimit`; `""` is the whole server).
pub const HEALTH_SERVICES: &[&str] = &[
    "",
    "ratelimit",
    "envoy.service.ratelimit.v3.RateLimitService",
];

/// The bound sockets the server serves on.
#[derive(Debug)]
pub struct Listeners {
    /// gRPC (HTTP/2).
    pub grpc: TcpListener,
    /// HTTP/1.1 and HTTP/2: health, `/json`, `/rlconfig`, `/metrics`.
    pub http: TcpListener,
    /// The admin endpoints ([`admin`]), if served.
    pub admin: Option<TcpListener>,
}

/// Why the server could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The rules do not load.
    #[error("invalid rules:\n{}", .0.iter().map(|e| format!("  {e}")).collect::<Vec<_>>().join("\n"))]
    Rules(Vec<LoadError>),
    /// The counter store is unusable.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Redis refused the settings (bad URL, wrong password, untrusted certificate).
    #[error("cannot use Redis: {0}")]
    Redis(#[from] ConnectError),
    /// A part of the server could not be set up.
    #[error("cannot start: {0}")]
    Setup(String),
    /// A listener failed.
    #[error("{0}")]
    Server(String),
}

/// The gRPC health service name that reports the store itself (Redis);
/// the service's own names stay SERVING while it answers in degraded mode.
pub const STORE_HEALTH_SERVICE: &str = "floodgate.store";

/// What keeps the store going, run by [`run`] beside the listeners.
#[derive(Debug, Default)]
pub struct StoreTasks {
    /// Memory stores whose ended windows to sweep, and how often.
    pub sweep: Vec<(Arc<MemoryStore>, Duration)>,
    /// Redis was not reachable at startup: keep trying, then hand over.
    pub connect: Option<(Arc<Connecting>, Box<RedisSettings>)>,
    /// The resilient store whose health to check.
    pub health: Option<Arc<ResilientStore>>,
}

/// Builds the decision path from `config`: loads the rules and connects the
/// store. Settings that Redis rejects (wrong password, untrusted certificate)
/// are an error; a Redis that is not up yet is not: the path starts in
/// degraded mode (see [`resilience`]) and [`StoreTasks::connect`] says what
/// to run to connect it.
pub async fn build(config: &Config, clock: Clock) -> Result<(RateLimiter, StoreTasks), RunError> {
    let rules = rules::load_paths(std::slice::from_ref(&config.rules), config.merge_domains)
        .map_err(RunError::Rules)?;
    let mut tasks = StoreTasks::default();
    let metrics = Arc::new(Metrics::new(config.metrics.clone()));
    metrics.set_rules_version(rules.version());
    let store: Arc<dyn CounterStore> = match &config.redis {
        Some(redis) => {
            let primary: Arc<dyn CounterStore> = match RedisStore::connect(redis).await {
                Ok(connected) => {
                    tracing::info!(mode = ?redis.mode, endpoint = connected.endpoint(), "connected to Redis");
                    Arc::new(connected)
                }
                Err(e) if e.is_transient() => {
                    tracing::warn!(error = %e, "Redis is not reachable yet; answering in degraded mode until it is");
                    let connecting = Arc::new(Connecting::new("redis", e.to_string()));
                    tasks.connect = Some((connecting.clone(), Box::new(redis.clone())));
                    connecting
                }
                Err(e) => return Err(e.into()),
            };
            let resilience = &config.resilience;
            let fallback = Arc::new(MemoryStore::new(
                resilience.fallback_max_entries,
                clock.clone(),
            ));
            tasks
                .sweep
                .push((fallback.clone(), resilience.fallback_sweep_interval));
            let store = Arc::new(ResilientStore::new(primary, fallback, resilience.clone()));
            metrics.add_samples(store.metric_source());
            tasks.health = Some(store.clone());
            store
        }
        None => {
            let memory = Arc::new(MemoryStore::new(config.memory_max_entries, clock.clone()));
            tasks
                .sweep
                .push((memory.clone(), config.memory_sweep_interval));
            memory
        }
    };
    let cluster = config
        .redis
        .as_ref()
        .is_some_and(|r| r.mode == RedisMode::Cluster);
    let limiter = Limiter::new(
        Rules::new(rules),
        store,
        CacheKey::new(config.cache_key_prefix.clone()).with_hash_tag(cluster),
        clock,
        config.limiter.clone(),
    )
    .with_metrics(metrics);
    Ok((
        RateLimiter::new(limiter, config.limits, config.response.clone())
            .with_max_in_flight(config.max_in_flight),
        tasks,
    ))
}

/// Runs the server until `shutdown` resolves, then drains: health (gRPC and
/// `/healthcheck`) turns NOT_SERVING at once, after `shutdown_delay`
/// listeners stop accepting, calls in flight get up to
/// `config.shutdown_grace` to finish, background tasks stop. Returns `Ok`
/// after a clean drain (and after a drain cut short by the grace period).
pub async fn run(
    config: Config,
    listeners: Listeners,
    shutdown: impl Future<Output = ()>,
) -> Result<(), RunError> {
    run_with_clock(config, listeners, shutdown, Clock::System).await
}

/// [`run`], reading local time from `clock` (tests skew or pin it).
pub async fn run_with_clock(
    config: Config,
    listeners: Listeners,
    shutdown: impl Future<Output = ()>,
    clock: Clock,
) -> Result<(), RunError> {
    let (service, tasks) = build(&config, clock).await?;
    // For the "serving" line: the addresses really bound (a port may be 0).
    let bound = |l: &TcpListener| {
        l.local_addr()
            .map_or_else(|e| e.to_string(), |a| a.to_string())
    };
    let (grpc_addr, http_addr) = (bound(&listeners.grpc), bound(&listeners.http));
    let admin_addr = listeners
        .admin
        .as_ref()
        .map_or_else(|| "off".to_owned(), bound);

    let (drain_tx, drain_rx) = watch::channel(false);
    // Turns true as soon as shutdown starts, before `shutdown_delay`.
    let (stopping_tx, stopping_rx) = watch::channel(false);
    let (health, health_service) = tonic_health::server::health_reporter();
    set_health(&health, true).await;
    let mut background = JoinSet::new();
    let reloader = rules::reload::Reloader {
        rules: service.limiter().rules().clone(),
        path: config.rules.clone(),
        merge_domains: config.merge_domains,
        metrics: service.limiter().metrics().clone(),
    };
    background.spawn(reloader.watch(config.rules_reload_interval, drain_rx.clone()));
    for (memory, every) in tasks.sweep {
        background.spawn(sweep_memory(memory, every, drain_rx.clone()));
    }
    if let Some(store) = tasks.health {
        let connected = tasks.connect.is_none();
        let (status_tx, status_rx) = watch::channel(connected);
        background.spawn(store.check_health(status_tx, drain_rx.clone()));
        background.spawn(report_store_health(health.clone(), status_rx));
    }
    // The connector, if any, can end the run: with settings Redis rejects.
    let mut connector = JoinSet::new();
    if let Some((connecting, settings)) = tasks.connect {
        connector.spawn(connect_redis(connecting, *settings, drain_rx.clone()));
    }
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(floodgate_proto::FILE_DESCRIPTOR_SET)
        .build_v1()
        .map_err(|e| RunError::Setup(format!("gRPC reflection: {e}")))?;
    let reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(floodgate_proto::FILE_DESCRIPTOR_SET)
        .build_v1alpha()
        .map_err(|e| RunError::Setup(format!("gRPC reflection: {e}")))?;
    let codec =
        http::JsonCodec::new().map_err(|e| RunError::Setup(format!("JSON mapping: {e}")))?;

    let grpc = tonic::service::Routes::new(health_service)
        .add_service(reflection)
        .add_service(reflection_v1alpha)
        .add_service(RateLimitGrpc::new(service.clone()))
        .prepare()
        .into_axum_router();
    let codec = Arc::new(codec);
    let http = http::router(http::HttpState {
        service: service.clone(),
        codec: codec.clone(),
        stopping: stopping_rx,
    });
    let admin = listeners.admin.map(|listener| {
        let router = admin::router(admin::AdminState {
            service: service.clone(),
            codec: codec.clone(),
            token: config.admin_token.clone(),
        });
        (listener, router)
    });
    let mut servers = transport::serve_all(
        [
            Some(("grpc", listeners.grpc, grpc, transport::Protocol::Grpc)),
            Some(("http", listeners.http, http, transport::Protocol::Http)),
            admin.map(|(l, r)| ("admin", l, r, transport::Protocol::Http)),
        ],
        &config.listeners,
        service.limiter().metrics(),
        &drain_rx,
    );
    // Only now: the rules loaded, the store is set up, the listeners serve.
    let store = config.redis.as_ref().map_or_else(
        || "memory".to_owned(),
        |r| format!("redis {:?} ({})", r.mode, r.endpoints()),
    );
    tracing::info!(grpc = %grpc_addr, http = %http_addr, admin = %admin_addr, rules = %config.rules.display(), %store, "floodgate serving");

    let failure = tokio::select! {
        () = shutdown => None,
        Some(ended) = servers.join_next() => Some(match ended {
            Ok(Ok(())) => "a listener stopped unexpectedly".to_owned(),
            Ok(Err(e)) => e,
            Err(e) => format!("a listener task failed: {e}"),
        }),
        Some(Ok(Err(e))) = connector.join_next() => Some(format!("cannot use Redis: {e}")),
    };

    // Stop the connector first, so that it cannot turn health back to
    // SERVING during the shutdown delay.
    connector.abort_all();
    while connector.join_next().await.is_some() {}
    let _ = stopping_tx.send(true);
    set_health(&health, false).await;
    if failure.is_none() && !config.shutdown_delay.is_zero() {
        // Keep answering while load balancers notice the health change.
        tracing::info!(delay = ?config.shutdown_delay, "not serving; waiting before closing listeners");
        tokio::time::sleep(config.shutdown_delay).await;
    }
    let _ = drain_tx.send(true);
    let grace = config.shutdown_grace;
    let drain = async {
        while let Some(ended) = servers.join_next().await {
            if let Ok(Err(e)) = ended {
                tracing::warn!(error = %e, "listener error while draining");
            }
        }
    };
    if tokio::time::timeout(grace, drain).await.is_err() {
        tracing::warn!(
            ?grace,
            "calls still in flight after the grace period; stopping anyway"
        );
        servers.abort_all();
    }
    background.abort_all();
    while background.join_next().await.is_some() {}
    match failure {
        None => {
            tracing::info!("stopped");
            Ok(())
        }
        Some(e) => Err(RunError::Server(e)),
    }
}

/// Sets every health service to SERVING or NOT_SERVING.
async fn set_health(health: &tonic_health::server::HealthReporter, serving: bool) {
    let status = if serving {
        ServingStatus::Serving
    } else {
        ServingStatus::NotServing
    };
    for name in HEALTH_SERVICES {
        health.set_service_status(*name, status).await;
    }
}

/// Connects to Redis in the background after a failed first attempt:
/// retries with exponential backoff (100 ms doubling to 5 s, with jitter),
/// then hands the store over (the health check then routes calls to it).
/// Returns an error, which stops the server, only if Redis rejects the
/// settings; stops quietly when draining starts.
async fn connect_redis(
    connecting: Arc<Connecting>,
    settings: RedisSettings,
    mut drain: watch::Receiver<bool>,
) -> Result<(), ConnectError> {
    const FIRST: Duration = Duration::from_millis(100);
    const MAX: Duration = Duration::from_secs(5);
    let mut backoff = FIRST;
    let mut attempts = 1u32;
    let seed = std::hash::RandomState::new();
    loop {
        // Up to a quarter more (randomly seeded per process), so that many
        // instances do not retry in step.
        let jitter = backoff.mul_f64((seed.hash_one(attempts) % 1_000) as f64 / 4_000.0);
        tokio::select! {
            () = tokio::time::sleep(backoff + jitter) => {}
            _ = drain.wait_for(|d| *d) => return Ok(()),
        }
        attempts += 1;
        match RedisStore::connect(&settings).await {
            Ok(store) => {
                tracing::info!(attempts, endpoint = store.endpoint(), "connected to Redis");
                connecting.connected(Arc::new(store));
                return Ok(());
            }
            Err(e) if e.is_transient() => {
                tracing::warn!(attempts, error = %e, retry_in = ?backoff, "Redis still not reachable");
                connecting.failed(e.to_string());
                backoff = (backoff * 2).min(MAX);
            }
            Err(e) => return Err(e),
        }
    }
}

/// Mirrors the store health check's verdicts into the gRPC health service
/// [`STORE_HEALTH_SERVICE`].
async fn report_store_health(
    health: tonic_health::server::HealthReporter,
    mut status: watch::Receiver<bool>,
) {
    loop {
        let ok = *status.borrow_and_update();
        let serving = if ok {
            ServingStatus::Serving
        } else {
            ServingStatus::NotServing
        };
        health
            .set_service_status(STORE_HEALTH_SERVICE, serving)
            .await;
        if status.changed().await.is_err() {
            return;
        }
    }
}

/// Drops ended windows from the memory store every `every`, until draining.
/// Warns (at most once per sweep) when a full store had to evict live
/// counters, since every eviction resets a client's count.
async fn sweep_memory(memory: Arc<MemoryStore>, every: Duration, mut drain: watch::Receiver<bool>) {
    let mut ticker = tokio::time::interval(every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut evictions = memory.evictions();
    loop {
        tokio::select! {
            _ = ticker.tick() => {
                let removed = memory.sweep_expired();
                tracing::debug!(removed, held = memory.len(), "memory store swept");
                let now = memory.evictions();
                if now > evictions {
                    tracing::warn!(
                        evicted = now - evictions,
                        capacity = memory.capacity(),
                        "memory store full: live counters were evicted (raise memory_max_entries)"
                    );
                }
                evictions = now;
            }
            _ = drain.wait_for(|d| *d) => return,
        }
    }
}
