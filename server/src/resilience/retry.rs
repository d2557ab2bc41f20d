//! Retry with exponential backoff and jitter, never past a deadline.
//!
//! Only transient failures are retried (a store that is unreachable or slow;
//! not one that answered with an error). The wait before attempt `n + 1` is
//! `initial_backoff × multiplier^(n-1)`, capped at `max_backoff`, with "full
//! jitter" (a random wait up to that bound, so that many servers do not
//! retry in step). A retry whose wait would end past the deadline is not
//! made: the caller gets the last error at once and falls back.
//! The waits come from [`Backoff`], the server's one backoff.

use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;

use crate::backoff::{Backoff, Jitter};

/// Retry settings.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RetrySettings {
    /// Attempts in all, the first included (1: no retry).
    pub max_attempts: u32,
    /// The bound of the first wait.
    pub initial_backoff: Duration,
    /// The largest bound.
    pub max_backoff: Duration,
    /// Growth of the bound per attempt.
    pub backoff_multiplier: f64,
    /// Random waits up to the bound (true) or the bound itself.
    pub use_jitter: bool,
}

impl Default for RetrySettings {
    fn default() -> Self {
        RetrySettings {
            max_attempts: 3,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(1),
            backoff_multiplier: 2.0,
            use_jitter: true,
        }
    }
}

/// The retry policy.
#[derive(Debug)]
pub struct Retry {
    settings: RetrySettings,
    backoff: Backoff,
}

impl Retry {
    /// A policy with `settings`.
    pub fn new(settings: RetrySettings) -> Self {
        let jitter = if settings.use_jitter {
            Jitter::Full
        } else {
            Jitter::None
        };
        Retry {
            settings,
            backoff: Backoff::new(
                settings.initial_backoff,
                settings.max_backoff,
                settings.backoff_multiplier,
                jitter,
            ),
        }
    }

    /// The wait after failed attempt `attempt` (1-based).
    pub fn backoff(&self, attempt: u32) -> Duration {
        self.backoff.wait(attempt)
    }

    /// Runs `call` until it succeeds, fails for good (`transient` says no),
    /// runs out of attempts, or the next wait would end past `deadline`.
    pub async fn run<T, E, F, Fut>(
        &self,
        deadline: Instant,
        transient: impl Fn(&E) -> bool,
        mut call: F,
    ) -> Result<T, E>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let mut attempt = 1;
        loop {
            match call().await {
                Ok(v) => return Ok(v),
                Err(e) if !transient(&e) || attempt >= self.settings.max_attempts => return Err(e),
                Err(e) => {
                    let wait = self.backoff(attempt);
                    if Instant::now() + wait >= deadline {
                        return Err(e);
                    }
                    tokio::time::sleep(wait).await;
                    attempt += 1;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use super::*;

    fn fixed() -> Retry {
        Retry::new(RetrySettings {
            use_jitter: false,
            ..RetrySettings::default()
        })
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        let r = Retry::new(RetrySettings {
            max_attempts: 10,
            use_jitter: false,
            ..RetrySettings::default()
        });
        let waits: Vec<_> = (1..=6).map(|a| r.backoff(a).as_millis()).collect();
        assert_eq!(waits, vec![100, 200, 400, 800, 1000, 1000]);
        let jittered = Retry::new(RetrySettings::default());
        for attempt in 1..=5 {
            assert!(jittered.backoff(attempt) <= r.backoff(attempt));
        }
    }

    #[tokio::test(start_paused = true)]
    async fn retries_transient_failures_with_backoff_then_succeeds() {
        let r = fixed();
        let calls = Cell::new(0);
        let start = Instant::now();
        let result: Result<u32, &str> = r
            .run(
                start + Duration::from_secs(5),
                |_| true,
                || {
                    calls.set(calls.get() + 1);
                    let n = calls.get();
                    async move { if n < 3 { Err("down") } else { Ok(n) } }
                },
            )
            .await;
        assert_eq!(result, Ok(3));
        assert_eq!(
            start.elapsed(),
            Duration::from_millis(300),
            "100 ms then 200 ms"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn never_waits_past_the_deadline() {
        let r = fixed();
        let calls = Cell::new(0);
        let start = Instant::now();
        let result: Result<(), &str> = r
            .run(
                start + Duration::from_millis(50),
                |_| true,
                || {
                    calls.set(calls.get() + 1);
                    async { Err("down") }
                },
            )
            .await;
        assert_eq!(result, Err("down"));
        assert_eq!(
            calls.get(),
            1,
            "a 100 ms wait would end past a 50 ms deadline"
        );
        assert_eq!(start.elapsed(), Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn stops_at_max_attempts_and_on_final_errors() {
        let r = fixed();
        let calls = Cell::new(0);
        let far = Instant::now() + Duration::from_secs(60);
        let _: Result<(), &str> = r
            .run(
                far,
                |_| true,
                || {
                    calls.set(calls.get() + 1);
                    async { Err("down") }
                },
            )
            .await;
        assert_eq!(calls.get(), 3);
        calls.set(0);
        let _: Result<(), &str> = r
            .run(
                far,
                |e| *e != "wrong type",
                || {
                    calls.set(calls.get() + 1);
                    async { Err("wrong type") }
                },
            )
            .await;
        assert_eq!(calls.get(), 1, "an answer that is an error is not retried");
    }
}
