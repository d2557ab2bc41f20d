//! Where "now" comes from. Counting windows are aligned to the Unix epoch, so
//! the limiter and the stores read wall-clock time, but only through [`Clock`]:
//! tests anchor it and move it with `tokio::time::pause`/`advance`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A source of Unix time.
#[derive(Clone, Debug)]
pub enum Clock {
    /// The system's wall clock (production).
    System,
    /// Unix time `base` at tokio instant `at`, advancing with tokio's clock, so
    /// a paused test runtime controls it.
    Anchored {
        /// Unix time at `at`.
        base: Duration,
        /// The tokio instant at which Unix time was `base`.
        at: tokio::time::Instant,
    },
    /// Unix time in microseconds, moved only by [`Clock::advance`] (tests
    /// that need no runtime, or that talk to real processes, where a paused
    /// tokio clock would fire I/O timeouts).
    Manual(Arc<AtomicU64>),
    /// The system's wall clock shifted by this many milliseconds: a skewed
    /// host, for tests of several instances that disagree on the time.
    Offset(i64),
}

impl Clock {
    /// A clock that reads `unix_time` now and then follows tokio's clock.
    pub fn anchored(unix_time: Duration) -> Self {
        Clock::Anchored {
            base: unix_time,
            at: tokio::time::Instant::now(),
        }
    }

    /// A clock that reads `unix_time` until it is advanced by hand.
    pub fn manual(unix_time: Duration) -> Self {
        Clock::Manual(Arc::new(AtomicU64::new(unix_time.as_micros() as u64)))
    }

    /// Moves a manual clock forward (no effect on other clocks).
    pub fn advance(&self, by: Duration) {
        if let Clock::Manual(micros) = self {
            micros.fetch_add(by.as_micros() as u64, Ordering::SeqCst);
        }
    }

    /// Time since the Unix epoch.
    pub fn now(&self) -> Duration {
        match self {
            // A clock set before 1970 is a broken host; treat it as the epoch
            // rather than failing every decision.
            Clock::System => SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default(),
            Clock::Anchored { base, at } => *base + at.elapsed(),
            Clock::Manual(micros) => Duration::from_micros(micros.load(Ordering::SeqCst)),
            Clock::Offset(ms) => {
                let now = Clock::System.now();
                let by = Duration::from_millis(ms.unsigned_abs());
                if *ms >= 0 {
                    now + by
                } else {
                    now.saturating_sub(by)
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn anchored_clock_follows_paused_tokio_time() {
        let clock = Clock::anchored(Duration::from_secs(1_000));
        assert_eq!(clock.now(), Duration::from_secs(1_000));
        tokio::time::advance(Duration::from_millis(1_500)).await;
        assert_eq!(clock.now(), Duration::from_millis(1_001_500));
    }
}
