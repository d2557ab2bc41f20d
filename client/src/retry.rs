//! Retries of one call: exponential backoff with full jitter, only on
//! transient errors, bounded by attempts and by the call's deadline.
//!
//! On the client's path after the memo and the throttles: each attempt gets
//! what is left of the deadline as its gRPC timeout, and a backoff that would
//! end past the deadline is not slept: the call gives up at once.

use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;

/// When and how often a failed call is tried again.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included (default 3; 1 = no retries).
    pub max_attempts: u32,
    /// The backoff ceiling before the first retry (default 10 ms); it
    /// doubles with each retry.
    pub base: Duration,
    /// The backoff ceiling never grows past this (default 200 ms).
    pub max_backoff: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 3,
            base: Duration::from_millis(10),
            max_backoff: Duration::from_millis(200),
        }
    }
}

impl RetryPolicy {
    /// No retries: one attempt.
    pub fn none() -> Self {
        RetryPolicy {
            max_attempts: 1,
            ..RetryPolicy::default()
        }
    }

    /// The backoff before retry number `retry` (0 for the first retry) for a
    /// uniform draw in `[0, 1)`: "full jitter", a uniform time between zero
    /// and `min(max_backoff, base × 2^retry)`.
    pub(crate) fn backoff(&self, retry: u32, draw: f64) -> Duration {
        let ceiling = self
            .base
            .saturating_mul(1u32.checked_shl(retry.min(31)).unwrap_or(u32::MAX))
            .min(self.max_backoff);
        ceiling.mul_f64(draw.clamp(0.0, 1.0))
    }
}

/// Whether a status is worth another attempt: the service was unreachable
/// or overloaded, or the attempt ran out of time. Never a caller's mistake
/// (`INVALID_ARGUMENT`) or anything else the service decided.
pub fn is_transient(code: tonic::Code) -> bool {
    matches!(
        code,
        tonic::Code::Unavailable | tonic::Code::DeadlineExceeded | tonic::Code::ResourceExhausted
    )
}

/// Runs `attempt(timeout)` until it succeeds, fails for good, runs out of
/// attempts or reaches `deadline`. `attempt` is given the time left; the
/// last error is returned (`DEADLINE_EXCEEDED` when time ran out first).
pub(crate) async fn run<T, F, Fut>(
    policy: &RetryPolicy,
    deadline: Instant,
    mut attempt: F,
) -> Result<T, tonic::Status>
where
    F: FnMut(Duration) -> Fut,
    Fut: Future<Output = Result<T, tonic::Status>>,
{
    let mut retry = 0;
    // The error of the attempt before; a backoff sleep may overshoot its
    // wake-up time (the timer's millisecond ticks) onto the deadline, and
    // then this error, not the deadline, is the call's outcome.
    let mut last: Option<tonic::Status> = None;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(last.unwrap_or_else(|| {
                tonic::Status::deadline_exceeded("the call's deadline passed")
            }));
        }
        let status = match tokio::time::timeout(left, attempt(left)).await {
            Ok(Ok(value)) => return Ok(value),
            // tonic's own enforcement of the attempt's timeout says
            // CANCELLED; it is this deadline passing all the same.
            Ok(Err(status))
                if status.code() == tonic::Code::Cancelled && Instant::now() >= deadline =>
            {
                tonic::Status::deadline_exceeded("the call's deadline passed")
            }
            Ok(Err(status)) => status,
            Err(_) => tonic::Status::deadline_exceeded("the call's deadline passed"),
        };
        retry += 1;
        if !is_transient(status.code()) || retry >= policy.max_attempts {
            return Err(status);
        }
        let backoff = policy.backoff(retry - 1, fastrand::f64());
        if Instant::now()
            .checked_add(backoff)
            .is_none_or(|wake| wake >= deadline)
        {
            return Err(status);
        }
        tokio::time::sleep(backoff).await;
        last = Some(status);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::sync::Arc;
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_backoff_that_overshoots_onto_the_deadline_returns_the_last_error() {
        // Fast failures until the deadline, 500 times over deadlines a
        // microsecond apart: a backoff that fits before the deadline may
        // wake on the timer's next millisecond tick, at or past it. The
        // call's error is still the attempts' error (this failed about once
        // in fifty runs when the deadline check came first).
        let policy = RetryPolicy {
            max_attempts: 1_000,
            ..RetryPolicy::default()
        };
        for offset in 0..500 {
            let calls = Arc::new(AtomicU32::new(0));
            let deadline = Instant::now() + Duration::from_micros(30_000 + offset);
            let err = run(
                &policy,
                deadline,
                flaky(u32::MAX, tonic::Code::Unavailable, calls.clone()),
            )
            .await
            .unwrap_err();
            assert_eq!(err.code(), tonic::Code::Unavailable, "offset {offset} µs");
        }
    }

    #[test]
    fn backoff_is_full_jitter_under_a_doubling_capped_ceiling() {
        let p = RetryPolicy::default();
        assert_eq!(p.backoff(0, 0.0), Duration::ZERO);
        assert_eq!(p.backoff(0, 0.5), Duration::from_millis(5));
        assert_eq!(p.backoff(1, 0.5), Duration::from_millis(10));
        assert_eq!(p.backoff(2, 0.5), Duration::from_millis(20));
        // 10 ms × 2^5 = 320 ms, capped at 200 ms.
        assert_eq!(p.backoff(5, 0.5), Duration::from_millis(100));
        assert_eq!(
            p.backoff(63, 0.999),
            Duration::from_millis(200).mul_f64(0.999)
        );
    }

    /// An attempt that fails with `code` the first `failures` times.
    fn flaky(
        failures: u32,
        code: tonic::Code,
        calls: Arc<AtomicU32>,
    ) -> impl FnMut(Duration) -> std::future::Ready<Result<u32, tonic::Status>> {
        move |_| {
            let n = calls.fetch_add(1, Ordering::SeqCst);
            std::future::ready(if n < failures {
                Err(tonic::Status::new(code, "flaky"))
            } else {
                Ok(n)
            })
        }
    }

    #[tokio::test(start_paused = true)]
    async fn transient_errors_are_retried_until_success() {
        for code in [
            tonic::Code::Unavailable,
            tonic::Code::DeadlineExceeded,
            tonic::Code::ResourceExhausted,
        ] {
            let calls = Arc::new(AtomicU32::new(0));
            let deadline = Instant::now() + Duration::from_secs(1);
            let result = run(
                &RetryPolicy::default(),
                deadline,
                flaky(2, code, calls.clone()),
            )
            .await;
            assert_eq!(result.unwrap(), 2, "{code:?}");
            assert_eq!(calls.load(Ordering::SeqCst), 3);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn invalid_argument_is_never_retried() {
        let calls = Arc::new(AtomicU32::new(0));
        let deadline = Instant::now() + Duration::from_secs(1);
        let err = run(
            &RetryPolicy::default(),
            deadline,
            flaky(5, tonic::Code::InvalidArgument, calls.clone()),
        )
        .await
        .unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument);
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn attempts_are_bounded() {
        let calls = Arc::new(AtomicU32::new(0));
        let deadline = Instant::now() + Duration::from_secs(60);
        let policy = RetryPolicy {
            max_attempts: 4,
            ..RetryPolicy::default()
        };
        let err = run(
            &policy,
            deadline,
            flaky(100, tonic::Code::Unavailable, calls.clone()),
        )
        .await
        .unwrap_err();
        assert_eq!(err.code(), tonic::Code::Unavailable);
        assert_eq!(calls.load(Ordering::SeqCst), 4);
    }

    #[tokio::test(start_paused = true)]
    async fn the_deadline_bounds_retries_and_each_attempt() {
        // Attempts that hang: each is cut at the time left, and nothing is
        // retried past the deadline.
        let calls = Arc::new(AtomicU32::new(0));
        let timeouts = Arc::new(std::sync::Mutex::new(Vec::new()));
        let start = Instant::now();
        let deadline = start + Duration::from_millis(300);
        let policy = RetryPolicy {
            max_attempts: 100,
            ..RetryPolicy::default()
        };
        let (c, t) = (calls.clone(), timeouts.clone());
        let err = run(&policy, deadline, move |left| {
            c.fetch_add(1, Ordering::SeqCst);
            t.lock().unwrap().push(left);
            std::future::pending::<Result<(), tonic::Status>>()
        })
        .await
        .unwrap_err();
        assert_eq!(err.code(), tonic::Code::DeadlineExceeded);
        assert_eq!(
            calls.load(Ordering::SeqCst),
            1,
            "the first attempt used all the time"
        );
        assert_eq!(timeouts.lock().unwrap()[0], Duration::from_millis(300));
        assert_eq!(Instant::now() - start, Duration::from_millis(300));

        // Fast failures: many retries, all within the deadline.
        let calls = Arc::new(AtomicU32::new(0));
        let start = Instant::now();
        let deadline = start + Duration::from_millis(300);
        let err = run(
            &policy,
            deadline,
            flaky(u32::MAX, tonic::Code::Unavailable, calls.clone()),
        )
        .await
        .unwrap_err();
        assert_eq!(err.code(), tonic::Code::Unavailable);
        assert!(calls.load(Ordering::SeqCst) > 2);
        assert!(Instant::now() - start < Duration::from_millis(300));
    }
}
