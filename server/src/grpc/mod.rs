//! The RPC surface: the first and last step of the request path.
//!
//! [`RateLimiter`] is the whole path for one `RateLimitRequest`: validate it
//! ([`Request::parse`]), decide it ([`Limiter::decide`]), encode the
//! [`Decision`](crate::limiter::Decision) as a `RateLimitResponse`
//! ([`response`]). The tonic service [`RateLimitGrpc`] (with its codec,
//! `codec`) and the HTTP `/json` endpoint both call it, or
//! [`RateLimiter::refuse`] for bytes that are not a request; errors become a
//! `tonic::Status` or an HTTP status in one place ([`status`]).

mod codec;
pub mod response;
pub mod status;

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use floodgate_proto::envoy::service::ratelimit::v3::rate_limit_service_server::SERVICE_NAME;
use floodgate_proto::{RateLimitRequest, RateLimitResponse};
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tonic::codegen::{Body, BoxFuture, Context, Poll, Service, StdError, http};
use tracing::Instrument as _;

use crate::limiter::{Limiter, Request, RequestLimits};
use crate::metrics::CallCode;
use crate::resilience::deadline;
use floodgate_proto::rate_limit_response::Code;
pub use response::{HeaderNames, ResponseOptions};
pub use status::{DecodeError, ServiceError};

use codec::{Decoded, RequestCodec};

/// Validate → decide → encode, shared by every transport.
#[derive(Debug, Clone)]
pub struct RateLimiter {
    limiter: Limiter,
    limits: RequestLimits,
    response: ResponseOptions,
    /// Calls being decided; past the bound, calls are shed, not queued.
    in_flight: Arc<Semaphore>,
}

/// The default bound on calls decided at once ([`RateLimiter::with_max_in_flight`]).
pub const DEFAULT_MAX_IN_FLIGHT: usize = 10_000;

impl RateLimiter {
    /// Wraps a limiter with request bounds and response options.
    pub fn new(limiter: Limiter, limits: RequestLimits, response: ResponseOptions) -> Self {
        RateLimiter {
            limiter,
            limits,
            response,
            in_flight: Arc::new(Semaphore::new(DEFAULT_MAX_IN_FLIGHT)),
        }
    }

    /// Bounds the calls decided at once: one more gets `RESOURCE_EXHAUSTED`
    /// at once rather than a place in a queue (load shedding).
    pub fn with_max_in_flight(mut self, max: usize) -> Self {
        self.in_flight = Arc::new(Semaphore::new(max.clamp(1, Semaphore::MAX_PERMITS)));
        self
    }

    /// The limiter.
    pub fn limiter(&self) -> &Limiter {
        &self.limiter
    }

    /// Answers one `ShouldRateLimit` call.
    pub async fn should_rate_limit(
        &self,
        proto: &RateLimitRequest,
    ) -> Result<RateLimitResponse, ServiceError> {
        self.should_rate_limit_by(proto, None).await
    }

    /// Answers one call whose caller gives up at `caller_deadline`.
    pub async fn should_rate_limit_by(
        &self,
        proto: &RateLimitRequest,
        caller_deadline: Option<Instant>,
    ) -> Result<RateLimitResponse, ServiceError> {
        let started = Instant::now();
        let metrics = self.limiter.metrics();
        let Ok(_permit) = self.in_flight.try_acquire() else {
            tracing::debug!(domain = %proto.domain, "overloaded: call shed");
            metrics.record_call(CallCode::Overloaded, started.elapsed());
            return Err(ServiceError::Overloaded);
        };
        let result = deadline::with_deadline(caller_deadline, async {
            let request = Request::parse(proto, &self.limits)?;
            let decision = self.limiter.decide(&request).await?;
            // The call's span is at debug level: with no layer listening
            // (no exporter), skip looking it up at all.
            if tracing::level_enabled!(tracing::Level::DEBUG) {
                let span = tracing::Span::current();
                span.record(
                    "decision",
                    match decision.overall {
                        crate::limiter::Code::Ok => "OK",
                        crate::limiter::Code::OverLimit => "OVER_LIMIT",
                    },
                );
                span.record("degraded", decision.degraded);
            }
            Ok(response::encode(proto, &decision, &self.response))
        })
        .await;
        let code = match &result {
            Ok(r) if r.overall_code == Code::OverLimit as i32 => CallCode::OverLimit,
            Ok(_) => CallCode::Ok,
            Err(ServiceError::Request(_) | ServiceError::Decode(_)) => CallCode::InvalidArgument,
            Err(ServiceError::Overloaded) => CallCode::Overloaded,
            Err(ServiceError::Limiter(_)) => CallCode::Error,
        };
        metrics.record_call(code, started.elapsed());
        if let Err(e) = &result {
            match e {
                // The caller's mistake, not the server's: debug level only.
                ServiceError::Request(_) | ServiceError::Decode(_) => {
                    tracing::debug!(domain = %proto.domain, error = %e, "invalid request")
                }
                ServiceError::Limiter(e) => {
                    tracing::warn!(domain = %proto.domain, error = %e, "no decision")
                }
                ServiceError::Overloaded => {}
            }
        }
        result
    }
}

impl RateLimiter {
    /// Refuses a request whose bytes are not a `RateLimitRequest` (gRPC or
    /// `/json`): counted as `invalid_argument` like any invalid request
    /// (it reached no store, so with no latency), logged at debug level.
    pub fn refuse(&self, e: DecodeError) -> ServiceError {
        tracing::debug!(error = %e, "undecodable request");
        self.limiter
            .metrics()
            .record_call(CallCode::InvalidArgument, Duration::ZERO);
        ServiceError::Decode(e)
    }

    /// The state of `proto`'s counters, counting nothing (admin).
    pub async fn peek(&self, proto: &RateLimitRequest) -> Result<RateLimitResponse, ServiceError> {
        let request = Request::parse(proto, &self.limits)?;
        let decision = self.limiter.peek(&request).await?;
        Ok(response::encode(proto, &decision, &self.response))
    }

    /// Deletes the counters of `proto`'s descriptors (admin); returns how
    /// many existed.
    pub async fn reset(&self, proto: &RateLimitRequest) -> Result<u64, ServiceError> {
        let request = Request::parse(proto, &self.limits)?;
        let reset = self.limiter.reset(&request).await?;
        tracing::info!(domain = %proto.domain, descriptors = proto.descriptors.len(), counters = reset, "counters reset by an operator");
        Ok(reset)
    }
}

/// The tonic service for `envoy.service.ratelimit.v3.RateLimitService`,
/// written out rather than generated so that it decodes with its own codec
/// (`grpc/codec.rs`): a message that is not a `RateLimitRequest` reaches
/// [`RateLimiter::refuse`] (`INVALID_ARGUMENT`, counted) instead of getting
/// `INTERNAL` from tonic's prost codec.
#[derive(Debug, Clone)]
pub struct RateLimitGrpc {
    inner: Arc<RateLimiter>,
}

/// The service's one method.
const SHOULD_RATE_LIMIT: &str = "/envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit";

impl RateLimitGrpc {
    /// Serves `inner` over gRPC.
    pub fn new(inner: RateLimiter) -> Self {
        RateLimitGrpc {
            inner: Arc::new(inner),
        }
    }
}

impl tonic::server::NamedService for RateLimitGrpc {
    const NAME: &'static str = SERVICE_NAME;
}

impl<B> Service<http::Request<B>> for RateLimitGrpc
where
    B: Body + Send + 'static,
    B::Error: Into<StdError> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Infallible>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        if request.uri().path() != SHOULD_RATE_LIMIT {
            let status = tonic::Status::unimplemented(format!("{SERVICE_NAME} has no such method"));
            return Box::pin(async move { Ok(status.into_http()) });
        }
        let method = ShouldRateLimit(self.inner.clone());
        Box::pin(async move {
            let mut grpc = tonic::server::Grpc::new(RequestCodec);
            Ok(grpc.unary(method, request).await)
        })
    }
}

/// One `ShouldRateLimit` call, once its message is read.
struct ShouldRateLimit(Arc<RateLimiter>);

impl tonic::server::UnaryService<Decoded> for ShouldRateLimit {
    type Response = RateLimitResponse;
    type Future = BoxFuture<tonic::Response<RateLimitResponse>, tonic::Status>;

    fn call(&mut self, request: tonic::Request<Decoded>) -> Self::Future {
        let inner = self.0.clone();
        Box::pin(async move { should_rate_limit(&inner, request).await })
    }
}

async fn should_rate_limit(
    inner: &RateLimiter,
    request: tonic::Request<Decoded>,
) -> Result<tonic::Response<RateLimitResponse>, tonic::Status> {
    let (metadata, _, message) = request.into_parts();
    let proto = match message {
        Ok(proto) => proto,
        Err(e) => return Err(inner.refuse(DecodeError::Protobuf(e)).into()),
    };
    let span = tracing::debug_span!(
        "ShouldRateLimit",
        otel.kind = "server",
        rpc.system = "grpc",
        // Recorded before validation: bounded here.
        domain = %truncated(&proto.domain, 128),
        descriptors = proto.descriptors.len(),
        decision = tracing::field::Empty,
        degraded = tracing::field::Empty,
    );
    crate::telemetry::adopt_remote_parent(&span, &metadata);
    let caller_deadline = metadata
        .get("grpc-timeout")
        .and_then(|v| v.to_str().ok())
        .and_then(deadline::from_grpc_timeout);
    let answer = inner
        .should_rate_limit_by(&proto, caller_deadline)
        .instrument(span)
        .await;
    match answer {
        Ok(response) => Ok(tonic::Response::new(response)),
        Err(e) => Err(e.into()),
    }
}

/// At most `max` bytes of `s`, cut at a character boundary.
fn truncated(s: &str, max: usize) -> &str {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}
