//! Counter storage: the last step of a decision. The limiter hands the store
//! one [`Check`] per limit to apply; the store applies the limit's algorithm
//! ([`crate::limiter::algorithm`]) to its counter atomically and returns one
//! [`Outcome`] per check.
//!
//! Two backends implement [`CounterStore`]: [`memory::MemoryStore`], the
//! embedded default, and [`redis::RedisStore`], shared by every server
//! instance. Counter keys follow the reference service's format ([`key`]),
//! so an operator can move from envoyproxy/ratelimit on the same Redis.

pub mod key;
pub mod memory;
pub mod redis;

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use crate::limiter::algorithm::{Algorithm, Outcome, Rate};

/// One limit to apply to one counter key.
#[derive(Clone, Debug, PartialEq)]
pub struct Check {
    /// The counter's key (see [`key::CacheKey`]). For the fixed window it
    /// carries the window start, in the reference's format.
    pub key: String,
    /// How much to add. 0 checks without taking anything.
    pub hits: u64,
    /// How to count.
    pub algorithm: Algorithm,
    /// The limit, period and burst.
    pub rate: Rate,
    /// Fixed window only: time left in the window, by the limiter's clock.
    pub reset_after: Duration,
}

/// A store failure. Every variant says whether retrying may help, which is
/// what degraded-mode handling keys on.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The store could not be reached or did not answer in time.
    #[error("counter store unavailable: {0}")]
    Unavailable(String),
    /// The store answered with something we did not expect.
    #[error("counter store error: {0}")]
    Protocol(String),
}

impl StoreError {
    /// True for failures that may go away by themselves (timeouts, dropped
    /// connections); false for answers that will not change on retry.
    pub fn is_transient(&self) -> bool {
        matches!(self, StoreError::Unavailable(_))
    }
}

/// The future a store returns.
pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send + 'a>>;

/// Where fixed-window counters live.
pub trait CounterStore: Send + Sync + std::fmt::Debug {
    /// Applies each check to its counter, atomically per counter, and
    /// returns one outcome per check, in order. All checks of one call travel
    /// together (one round trip for Redis).
    fn apply<'a>(&'a self, checks: &'a [Check]) -> StoreFuture<'a, Vec<Outcome>>;

    /// Checks that the store answers.
    fn ping(&self) -> StoreFuture<'_, ()>;

    /// A short name for logs and health output (`memory`, `redis`).
    fn kind(&self) -> &'static str;
}
