//! Counter storage: the last step of a decision. The limiter hands the store
//! one [`CounterHit`] per limited descriptor; the store adds the hits to each
//! fixed-window counter atomically and returns the counts after the update.
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

/// One counter to update.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CounterHit {
    /// The counter's key (see [`key::CacheKey`]).
    pub key: String,
    /// How much to add. 0 reads the counter without creating it.
    pub hits: u64,
    /// The window's length: how long the key lives in Redis (plus jitter).
    pub window: Duration,
    /// Time left in the window: when the in-memory entry can be dropped.
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
    /// Adds each hit to its counter, atomically per counter, and returns the
    /// counts after the update, in the order of `hits`. All counters of one
    /// call travel together (one round trip for Redis).
    fn increment<'a>(&'a self, hits: &'a [CounterHit]) -> StoreFuture<'a, Vec<u64>>;

    /// Checks that the store answers.
    fn ping(&self) -> StoreFuture<'_, ()>;

    /// A short name for logs and health output (`memory`, `redis`).
    fn kind(&self) -> &'static str;
}
