//! Exponential backoff with jitter: the one backoff of the server. The
//! store retry loop ([`crate::resilience::retry`]) and the background Redis
//! connector ([`crate::store::connecting`]) draw their waits from it. A leaf:
//! it depends on nothing in the crate, so any layer may use it.

use std::hash::{BuildHasher, RandomState};
use std::time::Duration;

use tokio::time::Instant;

/// How a wait is drawn from its bound.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Jitter {
    /// The bound itself.
    None,
    /// A random wait up to the bound ("full jitter").
    Full,
    /// The bound plus a random extra of up to a quarter of it.
    UpToAQuarterMore,
}

/// Exponential backoff with jitter: the bound of the wait after failed
/// attempt `n` (1-based) is `initial × multiplier^(n-1)`, capped at `max`;
/// the jitter spreads waits so that many servers do not retry in step.
#[derive(Debug)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    multiplier: f64,
    jitter: Jitter,
    seed: RandomState,
}

impl Backoff {
    /// Waits from `initial`, growing by `multiplier` up to `max`.
    pub fn new(initial: Duration, max: Duration, multiplier: f64, jitter: Jitter) -> Self {
        Backoff {
            initial,
            max,
            multiplier,
            jitter,
            seed: RandomState::new(),
        }
    }

    /// The bound of the wait after failed attempt `attempt` (1-based).
    pub fn bound(&self, attempt: u32) -> Duration {
        let exponent = i32::try_from(attempt.saturating_sub(1)).unwrap_or(i32::MAX);
        self.initial
            .mul_f64(self.multiplier.powi(exponent).min(1e9))
            .min(self.max)
    }

    /// The wait after failed attempt `attempt` (1-based), jitter applied.
    pub fn wait(&self, attempt: u32) -> Duration {
        let bound = self.bound(attempt);
        // Random enough and cheap: a per-process random hasher over the
        // attempt and the time.
        let random = || (self.seed.hash_one((attempt, Instant::now())) % 1_000_000) as f64 / 1e6;
        match self.jitter {
            Jitter::None => bound,
            Jitter::Full => bound.mul_f64(random()),
            Jitter::UpToAQuarterMore => bound + bound.mul_f64(random() / 4.0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_quarter_more_stays_between_the_bound_and_five_quarters_of_it() {
        let b = Backoff::new(
            Duration::from_millis(100),
            Duration::from_secs(5),
            2.0,
            Jitter::UpToAQuarterMore,
        );
        let bounds: Vec<_> = (1..=8).map(|a| b.bound(a).as_millis()).collect();
        assert_eq!(bounds, vec![100, 200, 400, 800, 1600, 3200, 5000, 5000]);
        for attempt in 1..=8 {
            let (wait, bound) = (b.wait(attempt), b.bound(attempt));
            assert!(wait >= bound && wait <= bound.mul_f64(1.25), "{wait:?}");
        }
    }
}
