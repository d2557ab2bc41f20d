//! The HTTP middleware: a tower [`Layer`] for axum, tonic or any
//! `http::Request` service. For each request a user-supplied function picks
//! the descriptors (from a header, the path, the peer address...), the
//! [`Client`] decides, and:
//!
//! - over the limit: the request goes no further; the answer is
//!   `429 Too Many Requests` with `RateLimit-Limit`, `RateLimit-Remaining`,
//!   `RateLimit-Reset` and `Retry-After` (seconds, rounded up, from the
//!   service's `duration_until_reset`);
//! - allowed: the request is passed on, and the `RateLimit-*` headers are
//!   added to its answer.
//!
//! A gRPC request (`content-type: application/grpc...`, e.g. through a tonic
//! server's layer) is rejected the gRPC way instead: HTTP 200 with
//! `grpc-status: 8` (`RESOURCE_EXHAUSTED`) and the same four headers as
//! metadata, so gRPC clients see a status rather than a transport error.
//!
//! The numbers are those of the most restrictive descriptor
//! ([`Decision::most_restrictive`]), as Floodgate's own headers. A request
//! dropped by the client's adaptive throttle has no numbers from the service:
//! its 429 carries `Retry-After: 1` only. An error from the service that
//! retrying cannot fix (a misconfigured domain) gets the client's failure
//! policy, as an unreachable service does: a broken rate limiter must not
//! take the service down.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::{HeaderMap, HeaderName, HeaderValue, Request, Response, StatusCode};
use tower_layer::Layer;
use tower_service::Service;

use crate::client::Client;
use crate::decision::Decision;
use crate::descriptor::Descriptor;

/// `RateLimit-Limit`.
pub const RATELIMIT_LIMIT: HeaderName = HeaderName::from_static("ratelimit-limit");
/// `RateLimit-Remaining`.
pub const RATELIMIT_REMAINING: HeaderName = HeaderName::from_static("ratelimit-remaining");
/// `RateLimit-Reset`: seconds until the window resets, rounded up.
pub const RATELIMIT_RESET: HeaderName = HeaderName::from_static("ratelimit-reset");

/// Rate-limits every request of the wrapped service through a [`Client`].
///
/// `descriptors` maps a request's head to its descriptors in `domain`; an
/// empty list lets the request through unchecked.
#[derive(Clone, Debug)]
pub struct RateLimitLayer<F> {
    client: Client,
    domain: Arc<str>,
    descriptors: F,
}

impl<F> RateLimitLayer<F>
where
    F: Fn(&http::request::Parts) -> Vec<Descriptor> + Clone,
{
    /// A layer asking `client` about each request, in `domain`, counted as
    /// `descriptors(request head)`.
    pub fn new(client: Client, domain: impl Into<String>, descriptors: F) -> Self {
        RateLimitLayer {
            client,
            domain: Arc::from(domain.into()),
            descriptors,
        }
    }
}

impl<S, F: Clone> Layer<S> for RateLimitLayer<F> {
    type Service = RateLimit<S, F>;

    fn layer(&self, inner: S) -> Self::Service {
        RateLimit {
            inner,
            client: self.client.clone(),
            domain: self.domain.clone(),
            descriptors: self.descriptors.clone(),
        }
    }
}

/// The service [`RateLimitLayer`] wraps around another.
#[derive(Clone, Debug)]
pub struct RateLimit<S, F> {
    inner: S,
    client: Client,
    domain: Arc<str>,
    descriptors: F,
}

impl<S, F, ReqBody, ResBody> Service<Request<ReqBody>> for RateLimit<S, F>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    F: Fn(&http::request::Parts) -> Vec<Descriptor>,
    ReqBody: Send + 'static,
    ResBody: Default + Send + 'static,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    /// Always ready: the inner service is made ready only for requests
    /// that pass, so a rejected one never holds its capacity (a
    /// concurrency-limit permit, say) while the rate limiter is asked.
    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        let (head, body) = request.into_parts();
        let descriptors = (self.descriptors)(&head);
        let grpc = head
            .headers
            .get(http::header::CONTENT_TYPE)
            .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
        let request = Request::from_parts(head, body);
        let mut inner = self.inner.clone();
        if descriptors.is_empty() {
            return Box::pin(async move {
                std::future::poll_fn(|cx| inner.poll_ready(cx)).await?;
                inner.call(request).await
            });
        }
        let client = self.client.clone();
        let domain = self.domain.clone();
        Box::pin(async move {
            let decision = match client.should_rate_limit(&domain, descriptors).await {
                Ok(decision) => decision,
                Err(e) => client.policy_answer(0, e.to_string()),
            };
            if !decision.allowed {
                let mut response = Response::new(ResBody::default());
                rejected_headers(response.headers_mut(), &decision);
                if grpc {
                    // A Trailers-Only gRPC answer: the status in the headers.
                    let headers = response.headers_mut();
                    headers.insert(
                        http::header::CONTENT_TYPE,
                        HeaderValue::from_static("application/grpc"),
                    );
                    headers.insert("grpc-status", HeaderValue::from_static("8"));
                    headers.insert("grpc-message", HeaderValue::from_static("rate limited"));
                } else {
                    *response.status_mut() = StatusCode::TOO_MANY_REQUESTS;
                }
                return Ok(response);
            }
            std::future::poll_fn(|cx| inner.poll_ready(cx)).await?;
            let mut response = inner.call(request).await?;
            limit_headers(response.headers_mut(), &decision);
            Ok(response)
        })
    }
}

/// Whole seconds, rounded up: a client that waits this long is past the reset.
fn seconds_up(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

/// The `RateLimit-*` headers of `decision`'s most restrictive descriptor.
pub fn limit_headers(headers: &mut HeaderMap, decision: &Decision) {
    let Some(status) = decision.most_restrictive() else {
        return;
    };
    let Some(limit) = status.limit else {
        return;
    };
    headers.insert(RATELIMIT_LIMIT, HeaderValue::from(limit));
    headers.insert(RATELIMIT_REMAINING, HeaderValue::from(status.remaining));
    if let Some(reset) = status.reset_after {
        headers.insert(RATELIMIT_RESET, HeaderValue::from(seconds_up(reset)));
    }
}

/// The headers of a 429: the `RateLimit-*` headers and `Retry-After`.
pub fn rejected_headers(headers: &mut HeaderMap, decision: &Decision) {
    limit_headers(headers, decision);
    let retry_after = decision.retry_after().map_or(1, seconds_up).max(1);
    headers.insert(http::header::RETRY_AFTER, HeaderValue::from(retry_after));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decision::{DescriptorDecision, Source};

    fn decision(allowed: bool, statuses: Vec<DescriptorDecision>) -> Decision {
        Decision {
            allowed,
            statuses,
            source: Source::Service,
            degraded: false,
        }
    }

    fn status(allowed: bool, limit: u32, remaining: u32, reset_ms: u64) -> DescriptorDecision {
        DescriptorDecision {
            allowed,
            limit: Some(limit),
            remaining,
            reset_after: Some(Duration::from_millis(reset_ms)),
        }
    }

    fn names(h: &HeaderMap) -> Vec<&str> {
        let mut names: Vec<_> = h.keys().map(HeaderName::as_str).collect();
        names.sort_unstable();
        names
    }

    #[test]
    fn a_rejection_has_exactly_the_four_headers() {
        let d = decision(
            false,
            vec![status(true, 100, 50, 1_000), status(false, 10, 0, 42_300)],
        );
        let mut h = HeaderMap::new();
        rejected_headers(&mut h, &d);
        assert_eq!(
            names(&h),
            [
                "ratelimit-limit",
                "ratelimit-remaining",
                "ratelimit-reset",
                "retry-after"
            ]
        );
        assert_eq!(h[RATELIMIT_LIMIT], "10");
        assert_eq!(h[RATELIMIT_REMAINING], "0");
        // 42.3 s rounds up: waiting 42 s would still be too early.
        assert_eq!(h[RATELIMIT_RESET], "43");
        assert_eq!(h[http::header::RETRY_AFTER], "43");
    }

    #[test]
    fn an_allowed_answer_gets_the_most_restrictive_numbers_and_no_retry_after() {
        let d = decision(
            true,
            vec![status(true, 100, 50, 1_000), status(true, 10, 3, 5_000)],
        );
        let mut h = HeaderMap::new();
        limit_headers(&mut h, &d);
        assert_eq!(
            names(&h),
            ["ratelimit-limit", "ratelimit-remaining", "ratelimit-reset"]
        );
        assert_eq!(h[RATELIMIT_LIMIT], "10");
        assert_eq!(h[RATELIMIT_REMAINING], "3");
        assert_eq!(h[RATELIMIT_RESET], "5");
    }

    #[test]
    fn with_several_over_their_limit_the_headers_agree_on_the_last_reset() {
        let d = decision(
            false,
            vec![
                status(false, 10, 0, 1_000),
                status(false, 100, 0, 3_000_000),
            ],
        );
        let mut h = HeaderMap::new();
        rejected_headers(&mut h, &d);
        assert_eq!(h[RATELIMIT_LIMIT], "100");
        assert_eq!(h[RATELIMIT_RESET], "3000");
        assert_eq!(h[http::header::RETRY_AFTER], "3000");
    }

    #[test]
    fn an_unknown_reset_is_left_out() {
        let d = decision(
            true,
            vec![DescriptorDecision {
                allowed: true,
                limit: Some(5),
                remaining: 4,
                reset_after: None,
            }],
        );
        let mut h = HeaderMap::new();
        limit_headers(&mut h, &d);
        assert_eq!(names(&h), ["ratelimit-limit", "ratelimit-remaining"]);
    }

    #[test]
    fn a_local_rejection_without_numbers_asks_for_one_second() {
        let d = Decision::local(1, false, Source::Throttled);
        let mut h = HeaderMap::new();
        rejected_headers(&mut h, &d);
        assert_eq!(names(&h), ["retry-after"]);
        assert_eq!(h[http::header::RETRY_AFTER], "1");
    }
}
