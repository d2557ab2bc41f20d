//! The request's own deadline, carried from the gRPC layer to the store
//! without threading it through every call: a task-local set around the
//! decision. The store waits until this deadline, or without one, for its
//! own `store_deadline`.
//!
//! A caller's `grpc-timeout` (e.g. Envoy's ratelimit filter `timeout`,
//! 20 ms by default) is the time until *it* gives up; the decision gets 90%
//! of it so that the answer still arrives in time.

use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;

tokio::task_local! {
    static DEADLINE: Instant;
}

/// Runs `f` with `deadline` as the request's deadline.
pub async fn with_deadline<F: Future>(deadline: Option<Instant>, f: F) -> F::Output {
    match deadline {
        Some(deadline) => DEADLINE.scope(deadline, f).await,
        None => f.await,
    }
}

/// The current request's deadline, if the caller set one.
pub fn current() -> Option<Instant> {
    DEADLINE.try_with(|d| *d).ok()
}

/// The deadline for a call that arrived now with `grpc-timeout: header`.
pub fn from_grpc_timeout(header: &str) -> Option<Instant> {
    parse_grpc_timeout(header).map(|t| Instant::now() + t.mul_f64(0.9))
}

/// Parses a `grpc-timeout` value: at most 8 digits and a unit (`H`, `M`,
/// `S`, `m`, `u`, `n`), per the gRPC over HTTP/2 spec.
pub fn parse_grpc_timeout(header: &str) -> Option<Duration> {
    if header.len() < 2 || header.len() > 9 {
        return None;
    }
    let (digits, unit) = header.split_at(header.len() - 1);
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n * 3_600),
        "M" => Duration::from_secs(n * 60),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeouts() {
        assert_eq!(parse_grpc_timeout("20m"), Some(Duration::from_millis(20)));
        assert_eq!(parse_grpc_timeout("1S"), Some(Duration::from_secs(1)));
        assert_eq!(parse_grpc_timeout("2H"), Some(Duration::from_secs(7_200)));
        assert_eq!(parse_grpc_timeout("500u"), Some(Duration::from_micros(500)));
        assert_eq!(
            parse_grpc_timeout("99999999n"),
            Some(Duration::from_nanos(99_999_999))
        );
        for bad in ["", "m", "20", "20x", "-1m", "123456789m", "1.5S"] {
            assert_eq!(parse_grpc_timeout(bad), None, "{bad}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn the_deadline_is_visible_inside_the_scope_only() {
        assert_eq!(current(), None);
        let deadline = from_grpc_timeout("100m");
        let seen = with_deadline(deadline, async { current() }).await;
        assert_eq!(seen, deadline);
        assert_eq!(seen, Some(Instant::now() + Duration::from_millis(90)));
        assert_eq!(current(), None);
    }
}
