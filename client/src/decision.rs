//! What the client answers: a [`Decision`] for the whole request, one
//! [`DescriptorDecision`] per descriptor, and the [`Source`] of the answer
//! (the service, the over-limit memo, a throttle, or the failure policy).

use std::time::Duration;

use floodgate_proto::RateLimitResponse;
use floodgate_proto::rate_limit_response::Code;

/// The decision for one descriptor.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DescriptorDecision {
    /// False when this descriptor is over its limit.
    pub allowed: bool,
    /// Requests per unit of the limit that applied, if any (none when no
    /// limit applied, or when the answer did not come from the service).
    pub limit: Option<u32>,
    /// Hits left in the current window (0 when no limit applied).
    pub remaining: u32,
    /// Time until the window resets, if known.
    pub reset_after: Option<Duration>,
}

/// Where a [`Decision`] came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    /// The rate-limit service answered.
    Service,
    /// The over-limit memo: the service said this descriptor was over its
    /// limit until a reset that has not come yet. No call was made.
    OverLimitMemo,
    /// The adaptive throttle of this key dropped the request locally: the
    /// service has been rejecting most of this key's recent requests. No
    /// call was made.
    Throttled,
    /// The service could not be reached (or has been failing so much that
    /// the client stopped calling it for a while); the client's failure
    /// policy answered. `cause` says what went wrong.
    FailurePolicy {
        /// The last error, or why no call was made.
        cause: String,
    },
}

/// The decision for a whole request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    /// False when the request is over a limit (or was dropped locally, or
    /// the failure policy denies).
    pub allowed: bool,
    /// One entry per descriptor, in request order.
    pub statuses: Vec<DescriptorDecision>,
    /// Who answered.
    pub source: Source,
    /// The answer was not the real counters': the service said so (its
    /// store was down and it answered in degraded mode), or the client's
    /// failure policy answered.
    pub degraded: bool,
}

impl Decision {
    /// When to try again after a rejection: the longest reset among the
    /// descriptors that are over their limit.
    pub fn retry_after(&self) -> Option<Duration> {
        self.statuses
            .iter()
            .filter(|s| !s.allowed)
            .filter_map(|s| s.reset_after)
            .max()
    }

    /// The descriptor whose numbers a caller should show (the `RateLimit-*`
    /// headers do): among those over their limit, the one that resets last
    /// (so its reset is [`Decision::retry_after`]); else the limited one with
    /// the fewest hits left. `None` when no limit applied.
    pub fn most_restrictive(&self) -> Option<&DescriptorDecision> {
        let limited = || self.statuses.iter().filter(|s| s.limit.is_some());
        limited()
            .filter(|s| !s.allowed)
            .max_by_key(|s| s.reset_after)
            .or_else(|| limited().min_by_key(|s| s.remaining))
    }

    /// The service's answer, with `degraded_header` (if any) marking
    /// degraded answers among its `response_headers_to_add`.
    pub(crate) fn from_response(
        response: &RateLimitResponse,
        degraded_header: Option<&str>,
    ) -> Self {
        let statuses = response
            .statuses
            .iter()
            .map(|s| DescriptorDecision {
                allowed: s.code() != Code::OverLimit,
                limit: s.current_limit.as_ref().map(|l| l.requests_per_unit),
                remaining: s.limit_remaining,
                reset_after: s
                    .duration_until_reset
                    .map(|d| Duration::new(d.seconds.max(0) as u64, d.nanos.max(0) as u32)),
            })
            .collect();
        let degraded = degraded_header.is_some_and(|name| {
            response
                .response_headers_to_add
                .iter()
                .any(|h| h.key.eq_ignore_ascii_case(name) && h.value == "true")
        });
        Decision {
            allowed: response.overall_code() != Code::OverLimit,
            statuses,
            source: Source::Service,
            degraded,
        }
    }

    /// An answer made without the service: every descriptor `allowed` or
    /// not, nothing else known.
    pub(crate) fn local(descriptors: usize, allowed: bool, source: Source) -> Self {
        let degraded = matches!(source, Source::FailurePolicy { .. });
        Decision {
            allowed,
            statuses: vec![
                DescriptorDecision {
                    allowed,
                    limit: None,
                    remaining: 0,
                    reset_after: None,
                };
                descriptors
            ],
            source,
            degraded,
        }
    }
}

#[cfg(test)]
mod tests {
    use floodgate_proto::envoy::config::core::v3::HeaderValue;
    use floodgate_proto::rate_limit_response::{DescriptorStatus, RateLimit};

    use super::*;

    fn status(code: Code, limit: u32, remaining: u32, reset_secs: i64) -> DescriptorStatus {
        DescriptorStatus {
            code: code as i32,
            current_limit: Some(RateLimit {
                requests_per_unit: limit,
                ..RateLimit::default()
            }),
            limit_remaining: remaining,
            duration_until_reset: Some(prost_types::Duration {
                seconds: reset_secs,
                nanos: 500_000_000,
            }),
            ..DescriptorStatus::default()
        }
    }

    #[test]
    fn reads_the_service_answer() {
        let response = RateLimitResponse {
            overall_code: Code::OverLimit as i32,
            statuses: vec![
                status(Code::Ok, 10, 4, 1),
                status(Code::OverLimit, 5, 0, 30),
                DescriptorStatus {
                    code: Code::Ok as i32,
                    ..DescriptorStatus::default()
                },
            ],
            response_headers_to_add: vec![HeaderValue {
                key: "X-Floodgate-Degraded".into(),
                value: "true".into(),
                ..HeaderValue::default()
            }],
            ..RateLimitResponse::default()
        };
        let d = Decision::from_response(&response, Some("x-floodgate-degraded"));
        assert!(!d.allowed && d.degraded);
        assert_eq!(d.source, Source::Service);
        assert_eq!(
            d.statuses[1].reset_after,
            Some(Duration::from_millis(30_500))
        );
        assert_eq!(d.statuses[2].limit, None);
        assert_eq!(d.retry_after(), Some(Duration::from_millis(30_500)));
        assert_eq!(d.most_restrictive(), Some(&d.statuses[1]));
        assert!(!Decision::from_response(&response, None).degraded);
    }

    #[test]
    fn the_most_restrictive_allowed_descriptor_has_the_fewest_hits_left() {
        let response = RateLimitResponse {
            overall_code: Code::Ok as i32,
            statuses: vec![status(Code::Ok, 10, 4, 1), status(Code::Ok, 100, 2, 60)],
            ..RateLimitResponse::default()
        };
        let d = Decision::from_response(&response, None);
        assert_eq!(d.most_restrictive().map(|s| s.remaining), Some(2));
        assert_eq!(d.retry_after(), None);
    }

    #[test]
    fn local_answers_say_who_made_them() {
        let d = Decision::local(
            2,
            true,
            Source::FailurePolicy {
                cause: "down".into(),
            },
        );
        assert!(d.allowed && d.degraded);
        assert_eq!(d.statuses.len(), 2);
        assert!(!Decision::local(1, false, Source::Throttled).degraded);
    }
}
