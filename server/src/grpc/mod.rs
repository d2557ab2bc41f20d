//! The RPC surface: the first and last step of the request path.
//!
//! [`RateLimiter`] is the whole path for one `RateLimitRequest`: validate it
//! ([`Request::parse`]), decide it ([`Limiter::decide`]), encode the
//! [`Decision`](crate::limiter::Decision) as a `RateLimitResponse`
//! ([`response`]). The tonic service [`RateLimitGrpc`] and the HTTP `/json`
//! endpoint both call it; errors become a `tonic::Status` or an HTTP status
//! in one place ([`status`]).

pub mod response;
pub mod status;

use floodgate_proto::{RateLimitRequest, RateLimitResponse, RateLimitService};

use crate::limiter::{Limiter, Request, RequestLimits};
pub use response::{HeaderNames, ResponseOptions};
pub use status::ServiceError;

/// Validate → decide → encode, shared by every transport.
#[derive(Debug, Clone)]
pub struct RateLimiter {
    limiter: Limiter,
    limits: RequestLimits,
    response: ResponseOptions,
}

impl RateLimiter {
    /// Wraps a limiter with request bounds and response options.
    pub fn new(limiter: Limiter, limits: RequestLimits, response: ResponseOptions) -> Self {
        RateLimiter {
            limiter,
            limits,
            response,
        }
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
        let result = async {
            let request = Request::parse(proto, &self.limits)?;
            let decision = self.limiter.decide(&request).await?;
            Ok(response::encode(proto, &decision, &self.response))
        }
        .await;
        if let Err(e) = &result {
            match e {
                // The caller's mistake, not the server's: debug level only.
                ServiceError::Request(e) => {
                    tracing::debug!(domain = %proto.domain, error = %e, "invalid request")
                }
                ServiceError::Limiter(e) => {
                    tracing::warn!(domain = %proto.domain, error = %e, "no decision")
                }
            }
        }
        result
    }
}

/// The tonic service for `envoy.service.ratelimit.v3.RateLimitService`.
#[derive(Debug, Clone)]
pub struct RateLimitGrpc {
    inner: RateLimiter,
}

impl RateLimitGrpc {
    /// Serves `inner` over gRPC.
    pub fn new(inner: RateLimiter) -> Self {
        RateLimitGrpc { inner }
    }
}

#[tonic::async_trait]
impl RateLimitService for RateLimitGrpc {
    #[tracing::instrument(level = "debug", skip_all, fields(domain = %request.get_ref().domain, descriptors = request.get_ref().descriptors.len()))]
    async fn should_rate_limit(
        &self,
        request: tonic::Request<RateLimitRequest>,
    ) -> Result<tonic::Response<RateLimitResponse>, tonic::Status> {
        match self.inner.should_rate_limit(request.get_ref()).await {
            Ok(response) => Ok(tonic::Response::new(response)),
            Err(e) => Err(e.into()),
        }
    }
}
