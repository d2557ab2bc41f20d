//! The gRPC health service: what the server reports about itself and its
//! store. [`crate::run`] sets the server's names SERVING once the decision
//! path is built (before the listeners open) and NOT_SERVING as soon as
//! shutdown starts; [`report_store`], a background task, mirrors the store
//! health check into [`STORE_HEALTH_SERVICE`].

use tokio::sync::watch;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

/// gRPC health service names reported as serving (the reference reports
/// `ratelimit`; `""` is the whole server).
pub const HEALTH_SERVICES: &[&str] = &[
    "",
    "ratelimit",
    "envoy.service.ratelimit.v3.RateLimitService",
    "envoy.service.rate_limit_quota.v3.RateLimitQuotaService",
];

/// The gRPC health service name that reports the store itself (Redis);
/// the service's own names stay SERVING while it answers in degraded mode.
pub const STORE_HEALTH_SERVICE: &str = "floodgate.store";

/// Sets every name of [`HEALTH_SERVICES`] to SERVING or NOT_SERVING.
pub async fn set_serving(health: &HealthReporter, serving: bool) {
    let status = status(serving);
    for name in HEALTH_SERVICES {
        health.set_service_status(*name, status).await;
    }
}

/// Mirrors the store health check's verdicts into the gRPC health service
/// [`STORE_HEALTH_SERVICE`], until the check stops.
pub async fn report_store(health: HealthReporter, mut store_ok: watch::Receiver<bool>) {
    loop {
        let ok = *store_ok.borrow_and_update();
        health
            .set_service_status(STORE_HEALTH_SERVICE, status(ok))
            .await;
        if store_ok.changed().await.is_err() {
            return;
        }
    }
}

fn status(serving: bool) -> ServingStatus {
    if serving {
        ServingStatus::Serving
    } else {
        ServingStatus::NotServing
    }
}
