//! The server's lifecycle, in the order [`crate::run`] calls it: spawn the
//! background tasks, serve the listeners, wait for shutdown (or a failure),
//! then drain. Every task is owned here and stopped on drain, so nothing
//! outlives [`crate::run`].

use std::future::Future;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tonic_health::server::HealthReporter;

use crate::config::Config;
use crate::grpc::{RateLimitGrpc, RateLimiter};
use crate::store::connecting;
use crate::store::redis::ConnectError;
use crate::tls::{self, Tls};
use crate::{Listeners, RunError, StoreTasks, admin, health, http, rules, transport, xds};

/// The two moments of a shutdown, which every part can wait on.
#[derive(Debug)]
pub(crate) struct Phases {
    /// True as soon as shutdown starts, before `shutdown_delay`
    /// (`/healthcheck` fails from then on).
    stopping: watch::Sender<bool>,
    /// True when listeners stop accepting and background tasks stop.
    drain: watch::Sender<bool>,
}

impl Phases {
    pub(crate) fn new() -> Self {
        Phases {
            stopping: watch::Sender::new(false),
            drain: watch::Sender::new(false),
        }
    }
}

/// The background tasks, owned until the drain ends.
#[derive(Debug)]
pub(crate) struct Background {
    /// Rules reload, memory sweeps, the store health check and its report.
    tasks: JoinSet<()>,
    /// The Redis connector, if any: it can end the run (with settings Redis
    /// rejects).
    connector: JoinSet<Result<(), ConnectError>>,
}

/// Spawns the background tasks: rules reload (or the xDS rules stream), TLS files reload, memory sweeps, the store
/// health check (mirrored into gRPC health) and, if Redis was not up at
/// startup, the connector.
pub(crate) fn spawn_background(
    config: &Config,
    service: &RateLimiter,
    (store, tls): (StoreTasks, &Tls),
    health: &HealthReporter,
    phases: &Phases,
) -> Background {
    let drain = phases.drain.subscribe();
    let mut tasks = JoinSet::new();
    tasks.spawn(tls::server::watch(
        tls.all(),
        config.tls.reload_interval,
        drain.clone(),
    ));
    let (rules, metrics) = (service.limiter().rules(), service.limiter().metrics());
    match &config.rules_xds {
        Some(settings) => {
            let source = xds::XdsRules::new(
                settings.clone(),
                rules.clone(),
                config.merge_domains,
                metrics.clone(),
            );
            tasks.spawn(source.run(drain.clone()));
        }
        None => {
            let reloader = rules::reload::Reloader {
                rules: rules.clone(),
                path: config.rules.clone(),
                merge_domains: config.merge_domains,
                metrics: metrics.clone(),
            };
            tasks.spawn(reloader.watch(config.rules_reload_interval, drain.clone()));
        }
    }
    for (memory, every) in store.sweep {
        tasks.spawn(memory.sweep_until_drained(every, drain.clone()));
    }
    if let Some(resilient) = store.health {
        let (status_tx, status_rx) = watch::channel(store.connect.is_none());
        tasks.spawn(resilient.check_health(status_tx, drain.clone()));
        tasks.spawn(health::report_store(health.clone(), status_rx));
    }
    let mut connector = JoinSet::new();
    if let Some((connecting, settings)) = store.connect {
        connector.spawn(connecting::connect_redis(connecting, *settings, drain));
    }
    Background { tasks, connector }
}

/// Serves every listener: gRPC (with health and reflection), HTTP, and the
/// admin endpoints and the metrics listener if bound. Each listener's task
/// ends once drained.
pub(crate) fn serve(
    config: &Config,
    (listeners, tls): (Listeners, &Tls),
    service: &RateLimiter,
    health_service: tonic_health::pb::health_server::HealthServer<
        impl tonic_health::pb::health_server::Health,
    >,
    phases: &Phases,
) -> Result<JoinSet<Result<(), String>>, RunError> {
    let grpc = grpc_router(service, health_service, rlqs(config, service, phases))?;
    let codec = Arc::new(
        http::JsonCodec::new().map_err(|e| RunError::Setup(format!("JSON mapping: {e}")))?,
    );
    let http = http::router(http::HttpState {
        service: service.clone(),
        codec: codec.clone(),
        stopping: phases.stopping.subscribe(),
    });
    let admin = listeners.admin.map(|listener| {
        let router = admin::router(admin::AdminState {
            service: service.clone(),
            codec,
            token: config.admin_token.clone(),
        });
        (
            "admin",
            listener,
            router,
            transport::Protocol::Http,
            tls.admin.clone(),
        )
    });
    add_tls_metrics(service, tls);
    Ok(transport::serve_all(
        [
            Some((
                "grpc",
                listeners.grpc,
                grpc,
                transport::Protocol::Grpc,
                tls.grpc.clone(),
            )),
            Some((
                "http",
                listeners.http,
                http,
                transport::Protocol::Http,
                tls.http.clone(),
            )),
            admin,
            listeners
                .metrics
                .map(|listener| metrics_listener(config, listener, service)),
        ],
        &config.listeners,
        service.limiter().metrics(),
        &phases.drain.subscribe(),
    ))
}

/// The metrics listener: the HTTP listener's `/metrics` text at
/// `metrics_path` alone, in plaintext (as envoyproxy/ratelimit's
/// `PROMETHEUS_ADDR`), under the same listener limits.
fn metrics_listener(
    config: &Config,
    listener: TcpListener,
    service: &RateLimiter,
) -> transport::Served {
    let router = http::metrics_router(
        service.limiter().metrics().clone(),
        config.metrics_listener.path.clone(),
    );
    ("metrics", listener, router, transport::Protocol::Http, None)
}

/// Serves the listeners' TLS counters on `/metrics`.
fn add_tls_metrics(service: &RateLimiter, tls: &Tls) {
    let all = tls.all();
    service
        .limiter()
        .metrics()
        .add_text(Arc::new(move |out: &mut String| {
            tls::server::render(&all, out);
        }));
}

/// The RLQS service over `service`'s rules and store; its streams end on
/// drain.
fn rlqs(config: &Config, service: &RateLimiter, phases: &Phases) -> crate::rlqs::Rlqs {
    crate::rlqs::Rlqs::new(
        service.limiter().clone(),
        config.limits,
        config.rlqs.clone(),
        phases.drain.subscribe(),
    )
}

/// The gRPC routes: health, reflection (v1 and v1alpha), rate limiting,
/// RLQS.
fn grpc_router(
    service: &RateLimiter,
    health_service: tonic_health::pb::health_server::HealthServer<
        impl tonic_health::pb::health_server::Health,
    >,
    rlqs: crate::rlqs::Rlqs,
) -> Result<axum::Router, RunError> {
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(floodgate_proto::FILE_DESCRIPTOR_SET)
        .build_v1()
        .map_err(|e| RunError::Setup(format!("gRPC reflection: {e}")))?;
    let reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(floodgate_proto::FILE_DESCRIPTOR_SET)
        .build_v1alpha()
        .map_err(|e| RunError::Setup(format!("gRPC reflection: {e}")))?;
    Ok(tonic::service::Routes::new(health_service)
        .add_service(reflection)
        .add_service(reflection_v1alpha)
        .add_service(RateLimitGrpc::new(service.clone()))
        .add_service(rlqs.service())
        .prepare()
        .into_axum_router())
}

/// The addresses really bound (a port may be 0 in the settings), for the
/// "serving" line.
#[derive(Debug)]
pub(crate) struct Bound {
    grpc: String,
    http: String,
    admin: String,
    metrics: String,
}

impl Bound {
    pub(crate) fn of(listeners: &Listeners) -> Self {
        let bound = |l: &TcpListener| {
            l.local_addr()
                .map_or_else(|e| e.to_string(), |a| a.to_string())
        };
        Bound {
            grpc: bound(&listeners.grpc),
            http: bound(&listeners.http),
            admin: listeners
                .admin
                .as_ref()
                .map_or_else(|| "off".to_owned(), bound),
            metrics: listeners
                .metrics
                .as_ref()
                .map_or_else(|| "off".to_owned(), bound),
        }
    }
}

/// Logs the "serving" line: only once the rules loaded, the store is set up
/// and the listeners serve.
pub(crate) fn log_serving(config: &Config, bound: &Bound) {
    let store = config.redis.as_ref().map_or_else(
        || "memory".to_owned(),
        |r| format!("redis {:?} ({})", r.mode(), r.endpoints()),
    );
    let Bound {
        grpc,
        http,
        admin,
        metrics,
    } = bound;
    tracing::info!(%grpc, %http, %admin, %metrics, rules = %config.rules.display(), %store, "floodgate serving");
}

/// Waits for `shutdown`, or for a failure that ends the run (a listener
/// stopped, or Redis rejected the settings): returns that failure.
pub(crate) async fn wait_for_stop(
    shutdown: impl Future<Output = ()>,
    servers: &mut JoinSet<Result<(), String>>,
    background: &mut Background,
) -> Option<String> {
    tokio::select! {
        () = shutdown => None,
        Some(ended) = servers.join_next() => Some(match ended {
            Ok(Ok(())) => "a listener stopped unexpectedly".to_owned(),
            Ok(Err(e)) => e,
            Err(e) => format!("a listener task failed: {e}"),
        }),
        Some(Ok(Err(e))) = background.connector.join_next() => Some(format!("cannot use Redis: {e}")),
    }
}

/// Drains: health turns NOT_SERVING at once; after `shutdown_delay` (not
/// waited after a failure) listeners stop accepting; calls in flight get up
/// to `shutdown_grace`; background tasks stop last.
pub(crate) async fn drain(
    config: &Config,
    failed: bool,
    servers: JoinSet<Result<(), String>>,
    mut background: Background,
    phases: &Phases,
    health: &HealthReporter,
) {
    // Stop the connector first, so that it cannot turn health back to
    // SERVING during the shutdown delay.
    background.connector.abort_all();
    while background.connector.join_next().await.is_some() {}
    phases.stopping.send_replace(true);
    health::set_serving(health, false).await;
    if !failed && !config.shutdown_delay.is_zero() {
        // Keep answering while load balancers notice the health change.
        tracing::info!(delay = ?config.shutdown_delay, "not serving; waiting before closing listeners");
        tokio::time::sleep(config.shutdown_delay).await;
    }
    phases.drain.send_replace(true);
    close_listeners(servers, config.shutdown_grace).await;
    background.tasks.abort_all();
    while background.tasks.join_next().await.is_some() {}
}

/// Waits up to `grace` for the listeners to finish the calls in flight,
/// then stops them anyway.
async fn close_listeners(mut servers: JoinSet<Result<(), String>>, grace: std::time::Duration) {
    let finish = async {
        while let Some(ended) = servers.join_next().await {
            if let Ok(Err(e)) = ended {
                tracing::warn!(error = %e, "listener error while draining");
            }
        }
    };
    if tokio::time::timeout(grace, finish).await.is_err() {
        tracing::warn!(
            ?grace,
            "calls still in flight after the grace period; stopping anyway"
        );
        servers.abort_all();
    }
}
