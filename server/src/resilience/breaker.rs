//! A circuit breaker: stops sending calls to a store that keeps failing,
//! and lets a few trial calls through after a pause to see if it is back.
//!
//! - **Closed**: calls go through; `failure_threshold` failures in a row open it.
//! - **Open**: calls are refused at once (no waiting on a dead store) until
//!   `reset_timeout` has passed; then the next call makes it half-open.
//! - **Half-open**: at most `success_threshold` trial calls at a time go
//!   through (the rest are refused, so a store that is still frozen holds
//!   few calls); `success_threshold` successes in a row close it, one
//!   failure opens it again.
//!
//! Time comes from `tokio::time`, so tests drive it with a paused clock.
//! Transitions are logged once each, never per call.

use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

/// Breaker settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BreakerSettings {
    /// Failures in a row that open the breaker.
    pub failure_threshold: u32,
    /// How long it stays open before letting a trial call through.
    pub reset_timeout: Duration,
    /// Successes in a row, half-open, that close it.
    pub success_threshold: u32,
}

impl Default for BreakerSettings {
    fn default() -> Self {
        BreakerSettings {
            failure_threshold: 3,
            reset_timeout: Duration::from_secs(10),
            success_threshold: 2,
        }
    }
}

/// The breaker's state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BreakerState {
    /// Calls go through.
    Closed,
    /// Calls are refused.
    Open,
    /// Trial calls go through.
    HalfOpen,
}

#[derive(Debug)]
struct Inner {
    state: BreakerState,
    /// Failures in a row (closed) or successes in a row (half-open).
    streak: u32,
    /// Half-open: trial calls in flight.
    trials: u32,
    opened_at: Option<Instant>,
}

/// A circuit breaker shared by every call to one store.
#[derive(Debug)]
pub struct CircuitBreaker {
    settings: BreakerSettings,
    inner: Mutex<Inner>,
    name: &'static str,
}

impl CircuitBreaker {
    /// A closed breaker; `name` appears in its logs.
    pub fn new(name: &'static str, settings: BreakerSettings) -> Self {
        CircuitBreaker {
            settings,
            inner: Mutex::new(Inner {
                state: BreakerState::Closed,
                streak: 0,
                trials: 0,
                opened_at: None,
            }),
            name,
        }
    }

    /// The state now (an open breaker past its timeout reads half-open).
    pub fn state(&self) -> BreakerState {
        let inner = self.lock();
        match inner.state {
            BreakerState::Open if self.timed_out(&inner) => BreakerState::HalfOpen,
            state => state,
        }
    }

    /// May a call go to the store now? An open breaker past its timeout
    /// turns half-open and says yes.
    pub fn allow(&self) -> bool {
        let mut inner = self.lock();
        if inner.state == BreakerState::Open && self.timed_out(&inner) {
            self.set(&mut inner, BreakerState::HalfOpen);
        }
        match inner.state {
            BreakerState::Closed => true,
            BreakerState::HalfOpen if inner.trials < self.settings.success_threshold => {
                inner.trials += 1;
                true
            }
            BreakerState::HalfOpen | BreakerState::Open => false,
        }
    }

    /// The store answered.
    pub fn success(&self) {
        let mut inner = self.lock();
        match inner.state {
            BreakerState::Closed => inner.streak = 0,
            BreakerState::HalfOpen => {
                inner.streak += 1;
                inner.trials = inner.trials.saturating_sub(1);
                if inner.streak >= self.settings.success_threshold {
                    self.set(&mut inner, BreakerState::Closed);
                }
            }
            // A call let through before the breaker opened: no news.
            BreakerState::Open => {}
        }
    }

    /// The store failed (transiently: a store that answers with an error is
    /// up, and is not counted here).
    pub fn failure(&self) {
        let mut inner = self.lock();
        match inner.state {
            BreakerState::Closed => {
                inner.streak += 1;
                if inner.streak >= self.settings.failure_threshold {
                    self.set(&mut inner, BreakerState::Open);
                }
            }
            BreakerState::HalfOpen => self.set(&mut inner, BreakerState::Open),
            BreakerState::Open => {}
        }
    }

    /// A call let through ended with no verdict on the store (its caller's
    /// deadline ran out first): frees its trial slot.
    pub fn abandon(&self) {
        let mut inner = self.lock();
        if inner.state == BreakerState::HalfOpen {
            inner.trials = inner.trials.saturating_sub(1);
        }
    }

    /// Lets trial calls through now (the health check saw the store answer).
    pub fn half_open_now(&self) {
        let mut inner = self.lock();
        if inner.state == BreakerState::Open {
            self.set(&mut inner, BreakerState::HalfOpen);
        }
    }

    fn timed_out(&self, inner: &Inner) -> bool {
        inner
            .opened_at
            .is_some_and(|at| at.elapsed() >= self.settings.reset_timeout)
    }

    fn set(&self, inner: &mut Inner, state: BreakerState) {
        if inner.state == state {
            return;
        }
        match state {
            BreakerState::Open => tracing::warn!(
                store = self.name,
                retry_in = ?self.settings.reset_timeout,
                "circuit breaker open: not calling the store"
            ),
            BreakerState::HalfOpen => {
                tracing::info!(
                    store = self.name,
                    "circuit breaker half-open: trying the store"
                )
            }
            BreakerState::Closed => {
                tracing::info!(
                    store = self.name,
                    "circuit breaker closed: the store is back"
                )
            }
        }
        inner.state = state;
        inner.streak = 0;
        inner.trials = 0;
        inner.opened_at = (state == BreakerState::Open).then(Instant::now);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn breaker() -> CircuitBreaker {
        CircuitBreaker::new("test", BreakerSettings::default())
    }

    #[tokio::test(start_paused = true)]
    async fn opens_after_threshold_failures_in_a_row() {
        let b = breaker();
        b.failure();
        b.failure();
        b.success(); // the streak restarts
        b.failure();
        b.failure();
        assert_eq!(b.state(), BreakerState::Closed);
        assert!(b.allow());
        b.failure();
        assert_eq!(b.state(), BreakerState::Open);
        assert!(!b.allow(), "open: no call goes to the store");
    }

    #[tokio::test(start_paused = true)]
    async fn half_opens_after_the_reset_timeout_and_closes_after_successes() {
        let b = breaker();
        for _ in 0..3 {
            b.failure();
        }
        tokio::time::advance(Duration::from_millis(9_999)).await;
        assert!(!b.allow());
        tokio::time::advance(Duration::from_millis(1)).await;
        assert_eq!(b.state(), BreakerState::HalfOpen);
        assert!(b.allow(), "a trial call goes through");
        b.success();
        assert_eq!(b.state(), BreakerState::HalfOpen);
        b.success();
        assert_eq!(b.state(), BreakerState::Closed);
    }

    #[tokio::test(start_paused = true)]
    async fn half_open_lets_only_a_few_trials_through_at_a_time() {
        let b = breaker();
        for _ in 0..3 {
            b.failure();
        }
        tokio::time::advance(Duration::from_secs(10)).await;
        assert!(b.allow());
        assert!(b.allow());
        assert!(!b.allow(), "two trials in flight: the rest get the policy");
        b.success();
        assert!(b.allow(), "one trial done: room for another");
        b.success();
        assert_eq!(b.state(), BreakerState::Closed);
        assert!(b.allow());
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_trial_opens_it_again_for_a_full_timeout() {
        let b = breaker();
        for _ in 0..3 {
            b.failure();
        }
        tokio::time::advance(Duration::from_secs(10)).await;
        assert!(b.allow());
        b.failure();
        assert_eq!(b.state(), BreakerState::Open);
        tokio::time::advance(Duration::from_secs(5)).await;
        assert!(!b.allow(), "the timeout starts again at the failed trial");
        tokio::time::advance(Duration::from_secs(5)).await;
        assert!(b.allow());
    }
}
