//! Floodgate: a centralized rate-limit service that answers Envoy's
//! `ShouldRateLimit` (`envoy.service.ratelimit.v3.RateLimitService`).
//!
//! # The request path, top to bottom
//!
//! 1. [`transport`]: the listener accepts the connection and holds it to its
//!    limits (connections, HTTP/2 streams, header size, timeouts); on a
//!    listener with TLS, [`tls`] runs the handshake first (and, for mTLS,
//!    checks the client's certificate and identity); then
//!    [`grpc`]: the tonic service receives a `RateLimitRequest` (the HTTP
//!    `/json` endpoint in [`http`] feeds the same path); bytes that are not
//!    one stop here with `INVALID_ARGUMENT` (HTTP 400, or 415 for a `/json`
//!    body that is not `application/json`).
//! 2. [`limiter::Request::parse`]: the request is validated into a typed,
//!    borrowed view; bad input stops here with `INVALID_ARGUMENT`.
//! 3. [`rules`]: each descriptor is matched against the domain's compiled,
//!    immutable [`rules::RuleSet`] (exact value, then wildcard, then default).
//! 4. [`limiter`]: matched limits become one [`store::Check`] each, saying
//!    its algorithm ([`store::Limit`]: fixed window, sliding window, token
//!    bucket, GCRA or a capacity rule), under reference-compatible keys
//!    ([`store::key`]), all sent in one store call.
//! 5. [`store`]: the [`store::CounterStore`] applies each check atomically, in
//!    memory ([`store::memory`]) or in Redis through one Lua script
//!    ([`store::redis`]: one node, Sentinel, or Cluster with one script per
//!    hash slot; under load, concurrent calls share one script run), and
//!    returns the outcomes. While Redis is not reachable at
//!    startup, [`store::connecting`] stands in and answers UNAVAILABLE.
//! 6. [`limiter`] turns counts into a [`limiter::Decision`]; [`grpc::response`]
//!    encodes it (statuses, optional headers and dynamic metadata);
//!    [`grpc::status`] is the one place errors become wire statuses.
//!
//! Under the path: [`model`], the arithmetic every step shares (the
//! algorithms, capacity's decision, units, the failure policy), which imports
//! nothing from the rest of the crate; `server/tests/layers.rs` checks that
//! imports only point down this map.
//!
//! Around the path: [`config`] (settings, validated once), [`build`] (the
//! decision path from the settings), [`run`] (listeners, background tasks,
//! graceful drain: each a step in `lifecycle.rs`), [`health`] (gRPC health),
//! [`backoff`] (the one retry backoff), [`shutdown`] (signals), [`cli`] (the
//! `floodgate` binary), [`clock`] (injectable time), [`metrics`] (what each
//! step records, served on `/metrics`), [`telemetry`] (logs and OTLP
//! traces: one span per call, with the rules match and the store call
//! inside), [`rules::reload`] (hot reload), [`xds`] (rules pushed by an xDS
//! management server instead of files), [`admin`] (counter get and reset),
//! [`rlqs`] (Envoy's Rate Limit Quota Service: the same rules and store,
//! off the request path, on the gRPC port).

pub mod admin;
pub mod backoff;
pub mod bench;
pub mod cli;
pub mod clock;
pub mod config;
pub mod grpc;
pub mod health;
pub mod http;
mod lifecycle;
pub mod limiter;
pub mod metrics;
pub mod model;
pub mod resilience;
pub mod rlqs;
pub mod rules;
pub mod shutdown;
pub mod store;
pub mod telemetry;
pub mod tls;
pub mod transport;
pub mod xds;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;

use crate::clock::Clock;
use crate::config::Config;
use crate::grpc::RateLimiter;
use crate::limiter::Limiter;
use crate::metrics::Metrics;
use crate::resilience::store::{ResilienceSettings, ResilientStore};
use crate::rules::{LoadError, Rules};
use crate::store::connecting::{self, Connecting};
use crate::store::key::CacheKey;
use crate::store::memory::MemoryStore;
use crate::store::redis::{ConnectError, RedisMode, RedisSettings};
use crate::store::{CounterStore, StoreError};
use crate::tls::Tls;
use crate::tls::files::TlsFileError;

pub use crate::health::{HEALTH_SERVICES, STORE_HEALTH_SERVICE};

/// The bound sockets the server serves on.
#[derive(Debug)]
pub struct Listeners {
    /// gRPC (HTTP/2).
    pub grpc: TcpListener,
    /// HTTP/1.1 and HTTP/2: health, `/json`, `/rlconfig`, `/metrics`.
    pub http: TcpListener,
    /// The admin endpoints ([`admin`]), if served.
    pub admin: Option<TcpListener>,
    /// The metrics listener (`metrics_addr`): only `GET <metrics_path>`,
    /// if served.
    pub metrics: Option<TcpListener>,
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
    /// A listener's TLS files cannot be used.
    #[error(transparent)]
    Tls(#[from] TlsFileError),
    /// A part of the server could not be set up.
    #[error("cannot start: {0}")]
    Setup(String),
    /// A listener failed.
    #[error("{0}")]
    Server(String),
}

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
    let rules = match &config.rules_xds {
        // Rules over xDS: none until the management server sends them.
        Some(xds) => rules::RuleSet::default().with_source(format!(
            "{} (waiting for the first response)",
            xds.describe()
        )),
        None => rules::load_paths(std::slice::from_ref(&config.rules), config.merge_domains)
            .map_err(RunError::Rules)?
            .with_source(format!("files {}", config.rules.display())),
    };
    let metrics = Arc::new(Metrics::new(config.metrics.clone()));
    metrics.set_rules_version(rules.version());
    let (store, tasks) = match &config.redis {
        Some(redis) => redis_store(redis, &config.resilience, &clock, &metrics).await?,
        None => memory_store(
            config.memory_max_entries,
            config.memory_sweep_interval,
            &clock,
        ),
    };
    let cluster = config
        .redis
        .as_ref()
        .is_some_and(|r| r.mode() == RedisMode::Cluster);
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

/// Redis (or, until it is up, a [`Connecting`] stand-in) behind the
/// resilient store, with a memory fallback.
async fn redis_store(
    redis: &RedisSettings,
    resilience: &ResilienceSettings,
    clock: &Clock,
    metrics: &Metrics,
) -> Result<(Arc<dyn CounterStore>, StoreTasks), RunError> {
    let (primary, connecting) = connecting::open_redis(redis).await?;
    let fallback = Arc::new(MemoryStore::new(
        resilience.fallback_max_entries,
        clock.clone(),
    ));
    let store = Arc::new(ResilientStore::new(
        primary,
        fallback.clone(),
        resilience.clone(),
    ));
    metrics.add_samples(store.metric_source());
    let tasks = StoreTasks {
        sweep: vec![(fallback, resilience.fallback_sweep_interval)],
        connect: connecting.map(|c| (c, Box::new(redis.clone()))),
        health: Some(store.clone()),
    };
    Ok((store, tasks))
}

/// The memory store alone (no Redis configured).
fn memory_store(
    max_entries: usize,
    sweep_every: Duration,
    clock: &Clock,
) -> (Arc<dyn CounterStore>, StoreTasks) {
    let memory = Arc::new(MemoryStore::new(max_entries, clock.clone()));
    let tasks = StoreTasks {
        sweep: vec![(memory.clone(), sweep_every)],
        ..StoreTasks::default()
    };
    (memory, tasks)
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
    let (service, store_tasks) = build(&config, clock).await?;
    let tls = Tls::load(&config.tls)?;
    let bound = lifecycle::Bound::of(&listeners);
    let phases = lifecycle::Phases::new();
    let (health, health_service) = tonic_health::server::health_reporter();
    health::set_serving(&health, true).await;
    let mut background =
        lifecycle::spawn_background(&config, &service, (store_tasks, &tls), &health, &phases);
    let mut servers = lifecycle::serve(
        &config,
        (listeners, &tls),
        &service,
        health_service,
        &phases,
    )?;
    lifecycle::log_serving(&config, &bound);
    let failure = lifecycle::wait_for_stop(shutdown, &mut servers, &mut background).await;
    lifecycle::drain(
        &config,
        failure.is_some(),
        servers,
        background,
        &phases,
        &health,
    )
    .await;
    match failure {
        None => {
            tracing::info!("stopped");
            Ok(())
        }
        Some(e) => Err(RunError::Server(e)),
    }
}
