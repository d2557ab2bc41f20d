//! The HTTP listener: `GET /healthcheck`, `POST /json` (the same decision as
//! gRPC, in proto3 JSON), `GET /rlconfig` (the limits in force) and
//! `GET /metrics` (Prometheus text, [`crate::metrics`]); and the metrics
//! listener ([`metrics_router`]), which serves that text alone.
//!
//! `/json` maps JSON to protobuf through the descriptor set compiled from
//! `proto/` (prost-reflect), so it follows the proto3 JSON mapping exactly
//! (`hitsAddend` or `hits_addend`, enums by name, durations as `"1.5s"`).
//! It takes only `Content-Type: application/json` (415 otherwise): a
//! browser skips the CORS preflight of a cross-origin POST only for form and
//! `text/plain` bodies, so no web page can spend a caller's limit. A body
//! that does not parse is 400. Both are refused through
//! [`RateLimiter::refuse`](crate::grpc::RateLimiter::refuse), so counted.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use floodgate_proto::{RateLimitRequest, RateLimitResponse, rate_limit_response::Code};
use prost::Message;
use prost_reflect::{DescriptorPool, DynamicMessage, MessageDescriptor};
use tokio::sync::watch;

use crate::grpc::{DecodeError, RateLimiter, ServiceError};
use crate::metrics::Metrics;

/// Longest time `/healthcheck` waits for the store.
const HEALTH_TIMEOUT: Duration = Duration::from_secs(1);

/// proto3-JSON ⇄ protobuf for the RLS messages.
#[derive(Debug, Clone)]
pub struct JsonCodec {
    request: MessageDescriptor,
    response: MessageDescriptor,
}

impl JsonCodec {
    /// Reads the message descriptors compiled from `proto/`.
    pub fn new() -> Result<Self, String> {
        let pool = DescriptorPool::decode(floodgate_proto::FILE_DESCRIPTOR_SET)
            .map_err(|e| e.to_string())?;
        let find = |name: &str| {
            pool.get_message_by_name(name)
                .ok_or_else(|| format!("{name} missing from descriptor set"))
        };
        Ok(JsonCodec {
            request: find("envoy.service.ratelimit.v3.RateLimitRequest")?,
            response: find("envoy.service.ratelimit.v3.RateLimitResponse")?,
        })
    }

    /// Parses a proto3-JSON `RateLimitRequest`.
    pub fn request(&self, body: &[u8]) -> Result<RateLimitRequest, String> {
        let mut de = serde_json::Deserializer::from_slice(body);
        let message = DynamicMessage::deserialize(self.request.clone(), &mut de)
            .map_err(|e| e.to_string())?;
        de.end().map_err(|e| e.to_string())?;
        message.transcode_to().map_err(|e| e.to_string())
    }

    /// Writes a `RateLimitResponse` as proto3 JSON.
    pub fn response(&self, response: &RateLimitResponse) -> Result<Vec<u8>, String> {
        let message =
            DynamicMessage::decode(self.response.clone(), response.encode_to_vec().as_slice())
                .map_err(|e| e.to_string())?;
        serde_json::to_vec(&message).map_err(|e| e.to_string())
    }
}

/// What the HTTP handlers share.
#[derive(Debug, Clone)]
pub struct HttpState {
    /// The decision path.
    pub service: RateLimiter,
    /// JSON mapping.
    pub codec: Arc<JsonCodec>,
    /// Becomes true as soon as shutdown starts (before `shutdown_delay`),
    /// so that `/healthcheck` fails while calls are still answered.
    pub stopping: watch::Receiver<bool>,
}

/// The HTTP routes.
pub fn router(state: HttpState) -> Router {
    Router::new()
        .route("/healthcheck", get(healthcheck))
        .route("/json", post(json))
        .route("/rlconfig", get(rlconfig))
        .route("/metrics", get(metrics))
        .with_state(state)
}

async fn healthcheck(State(state): State<HttpState>) -> (StatusCode, String) {
    if *state.stopping.borrow() {
        return (StatusCode::INTERNAL_SERVER_ERROR, "draining\n".into());
    }
    let store = state.service.limiter().store();
    match tokio::time::timeout(HEALTH_TIMEOUT, store.ping()).await {
        Ok(Ok(())) => (StatusCode::OK, "OK\n".into()),
        Ok(Err(e)) => {
            // The cause (which may name internal addresses) goes to the log,
            // not to whoever asks.
            tracing::debug!(error = %e, "health check: store unavailable");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("{} store unavailable\n", store.kind()),
            )
        }
        Err(_) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!(
                "{} store: no answer within {HEALTH_TIMEOUT:?}\n",
                store.kind()
            ),
        ),
    }
}

async fn json(State(state): State<HttpState>, headers: HeaderMap, body: Bytes) -> Response {
    if !is_json(headers.get(header::CONTENT_TYPE)) {
        return refused(&state.service.refuse(DecodeError::ContentType));
    }
    let request = match state.codec.request(&body) {
        Ok(request) => request,
        Err(e) => return refused(&state.service.refuse(DecodeError::Json(e))),
    };
    let response = match state.service.should_rate_limit(&request).await {
        Ok(response) => response,
        Err(e) => return refused(&e),
    };
    let status = match response.overall_code() {
        Code::Ok => StatusCode::OK,
        Code::OverLimit => StatusCode::TOO_MANY_REQUESTS,
        Code::Unknown => StatusCode::INTERNAL_SERVER_ERROR,
    };
    match state.codec.response(&response) {
        Ok(body) => (status, [(header::CONTENT_TYPE, "application/json")], body).into_response(),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot encode response: {e}\n"),
        )
            .into_response(),
    }
}

/// Whether a `Content-Type` is `application/json`, with or without
/// parameters (`; charset=utf-8`); media types ignore case.
/// True for `Content-Type: application/json` (any case, parameters such as
/// `; charset=utf-8` allowed): what `/json` and the admin endpoints take.
pub(crate) fn is_json(content_type: Option<&HeaderValue>) -> bool {
    content_type
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|essence| essence.trim().eq_ignore_ascii_case("application/json"))
}

/// A refused `/json` call: its HTTP status, and the message safe to show.
fn refused(e: &ServiceError) -> Response {
    (e.http_status(), format!("{}\n", e.public_message())).into_response()
}

/// `GET /rlconfig`: one line per limit in the reference's format, after a
/// `# version <hash>` comment line and a `# source <where>` one (`files
/// <path>`, or `xds://<server> node <id> version <xDS version>`); the
/// version is also the `x-floodgate-rules-version` header.
async fn rlconfig(State(state): State<HttpState>) -> Response {
    let rules = state.service.limiter().rules().current();
    let version = rules.version().to_owned();
    (
        [("x-floodgate-rules-version", version.clone())],
        format!(
            "# version {version}\n# source {}\n{}",
            rules.source(),
            rules.describe()
        ),
    )
        .into_response()
}

/// `GET /metrics`: every metric, in the Prometheus text format.
async fn metrics(State(state): State<HttpState>) -> Response {
    metrics_text(state.service.limiter().metrics())
}

/// Every metric of `metrics`, in the Prometheus text format.
fn metrics_text(metrics: &Metrics) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        metrics.render(),
    )
        .into_response()
}

/// The metrics listener's one route: `GET path` answers what `GET
/// /metrics` answers on the HTTP listener; any other method or path is 404.
/// The path is compared as given (no pattern), so any path is safe.
pub fn metrics_router(metrics: Arc<Metrics>, path: String) -> Router {
    let path: Arc<str> = path.into();
    Router::new().fallback(move |method: Method, uri: Uri| {
        let (metrics, path) = (metrics.clone(), path.clone());
        async move {
            if method == Method::GET && uri.path() == &*path {
                metrics_text(&metrics)
            } else {
                StatusCode::NOT_FOUND.into_response()
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use axum::body::Body;
    use axum::http::{Method, Request, StatusCode, header};
    use tower::ServiceExt;

    use crate::metrics::{Metrics, MetricsSettings};

    /// `method path` on `router`: the status, content type and body.
    async fn ask(
        router: &axum::Router,
        method: Method,
        path: &str,
    ) -> (StatusCode, String, String) {
        let request = Request::builder()
            .method(method)
            .uri(path)
            .body(Body::empty())
            .unwrap();
        let response = router.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let content_type = response
            .headers()
            .get(header::CONTENT_TYPE)
            .map_or(String::new(), |v| v.to_str().unwrap().to_owned());
        let body = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        (
            status,
            content_type,
            String::from_utf8(body.to_vec()).unwrap(),
        )
    }

    #[tokio::test]
    async fn the_metrics_listener_answers_get_at_its_path_and_404_to_anything_else() {
        let metrics = Arc::new(Metrics::new(MetricsSettings::default()));
        metrics.set_rules_version("v1");
        // Any path is taken as given: what axum reads as a pattern too.
        for path in ["/metrics", "/stats/prometheus", "/:id", "/*rest", "/{id}"] {
            let router = super::metrics_router(metrics.clone(), path.to_owned());
            let (status, content_type, body) = ask(&router, Method::GET, path).await;
            assert_eq!(status, StatusCode::OK, "{path}");
            assert_eq!(content_type, "text/plain; version=0.0.4; charset=utf-8");
            assert!(
                body.contains("floodgate_rules_info{version=\"v1\"} 1"),
                "{body}"
            );
            assert_eq!(body, metrics.render());
            let elsewhere = format!("{path}/x");
            for (method, other) in [
                (Method::POST, path),
                (Method::DELETE, path),
                (Method::GET, "/json"),
                (Method::POST, "/json"),
                (Method::GET, "/healthcheck"),
                (Method::GET, "/rlconfig"),
                (Method::GET, &elsewhere),
            ] {
                let (status, _, body) = ask(&router, method.clone(), other).await;
                assert_eq!(status, StatusCode::NOT_FOUND, "{method} {other} at {path}");
                assert!(!body.contains("floodgate_"), "{body}");
            }
        }
        let stats = super::metrics_router(metrics, "/stats".to_owned());
        assert_eq!(ask(&stats, Method::GET, "/metrics").await.0, 404);
    }
}
