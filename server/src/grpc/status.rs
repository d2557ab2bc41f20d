//! The one place where errors become wire statuses, for gRPC and for HTTP.
//!
//! Bad input is `INVALID_ARGUMENT` (HTTP 400) with a message that says what is
//! wrong; it is the caller's problem and is logged at debug level only. That
//! includes bytes that are not a `RateLimitRequest` at all ([`DecodeError`]),
//! and a `/json` body of another content type than `application/json` (HTTP
//! 415: so that a browser's cross-origin form or `text/plain` POST, which
//! needs no CORS preflight, decides nothing). A
//! store failure is `UNAVAILABLE` (HTTP 503), not `UNKNOWN`: Envoy's ratelimit
//! filter then applies its own `failure_mode_deny` setting, and clients know
//! a retry may help. A call shed under overload is `RESOURCE_EXHAUSTED`
//! (HTTP 503). A counter that holds something that is not a count (another
//! program wrote it) fails only the calls that use it: `FAILED_PRECONDITION`
//! (HTTP 500), naming the counter. Store details stay in the server's logs (written by
//! [`RateLimiter::should_rate_limit`](super::RateLimiter::should_rate_limit),
//! for every transport). A request the listener cut off
//! ([`crate::transport::TransportError`]: not read and answered within
//! `request_timeout`) is `DEADLINE_EXCEEDED` (HTTP 408).

use crate::limiter::{LimiterError, RequestError};
use crate::store::StoreError;

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// The request is malformed.
    #[error(transparent)]
    Request(#[from] RequestError),
    /// The request's bytes are not a `RateLimitRequest`.
    #[error(transparent)]
    Decode(#[from] DecodeError),
    /// No decision could be made.
    #[error(transparent)]
    Limiter(#[from] LimiterError),
    /// Too many calls in flight: shed rather than queued.
    #[error("too many calls in flight")]
    Overloaded,
}

/// Why a request's bytes are not a `RateLimitRequest`.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// A gRPC message that is not a protobuf `RateLimitRequest`.
    #[error("cannot decode RateLimitRequest: {0}")]
    Protobuf(#[from] prost::DecodeError),
    /// A `/json` body that is not a proto3-JSON `RateLimitRequest`.
    #[error("invalid RateLimitRequest JSON: {0}")]
    Json(String),
    /// A `/json` body whose `Content-Type` is not `application/json`.
    #[error("unsupported content type: /json takes Content-Type: application/json")]
    ContentType,
}

impl ServiceError {
    /// The HTTP status for the `/json` endpoint.
    pub fn http_status(&self) -> http::StatusCode {
        match self {
            ServiceError::Decode(DecodeError::ContentType) => {
                http::StatusCode::UNSUPPORTED_MEDIA_TYPE
            }
            ServiceError::Request(_) | ServiceError::Decode(_) => http::StatusCode::BAD_REQUEST,
            ServiceError::Limiter(LimiterError::Store(StoreError::Counter { .. })) => {
                http::StatusCode::INTERNAL_SERVER_ERROR
            }
            ServiceError::Limiter(_) | ServiceError::Overloaded => {
                http::StatusCode::SERVICE_UNAVAILABLE
            }
        }
    }

    /// The message safe to show a caller.
    pub fn public_message(&self) -> String {
        match self {
            ServiceError::Request(e) => e.to_string(),
            ServiceError::Limiter(LimiterError::Store(StoreError::Counter { key, .. })) => {
                format!(
                    "rate limit counter {key} holds a value that is not a count \
                     (written by another program?)"
                )
            }
            ServiceError::Decode(e) => e.to_string(),
            ServiceError::Limiter(LimiterError::Store(_)) => {
                "rate limit store unavailable".to_owned()
            }
            ServiceError::Overloaded => "rate limit service overloaded: call shed".to_owned(),
        }
    }
}

impl From<ServiceError> for tonic::Status {
    fn from(e: ServiceError) -> Self {
        match &e {
            ServiceError::Request(_) | ServiceError::Decode(_) => {
                tonic::Status::invalid_argument(e.public_message())
            }
            ServiceError::Limiter(LimiterError::Store(StoreError::Counter { .. })) => {
                tonic::Status::failed_precondition(e.public_message())
            }
            ServiceError::Limiter(_) => tonic::Status::unavailable(e.public_message()),
            ServiceError::Overloaded => tonic::Status::resource_exhausted(e.public_message()),
        }
    }
}

impl crate::transport::TransportError {
    /// The HTTP status for the HTTP and admin listeners.
    pub fn http_status(&self) -> http::StatusCode {
        match self {
            crate::transport::TransportError::RequestTimeout(_) => {
                http::StatusCode::REQUEST_TIMEOUT
            }
        }
    }
}

impl From<crate::transport::TransportError> for tonic::Status {
    fn from(e: crate::transport::TransportError) -> Self {
        match &e {
            crate::transport::TransportError::RequestTimeout(_) => {
                tonic::Status::deadline_exceeded(e.to_string())
            }
        }
    }
}
