//! Counter storage: the last step of a decision. The limiter hands the store
//! one [`Check`] per limit to apply; the store applies the limit's algorithm
//! ([`crate::model::algorithm`]) to its counter atomically and returns one
//! [`Outcome`] per check.
//!
//! Two backends implement [`CounterStore`]: [`memory::MemoryStore`], the
//! embedded default, and [`redis::RedisStore`], shared by every server
//! instance (single node, Sentinel or Cluster). [`connecting::Connecting`]
//! stands in for Redis until it is first reached. Counter keys follow the reference service's format ([`key`]),
//! so an operator can move from envoyproxy/ratelimit on the same Redis.

pub mod connecting;
pub mod key;
pub mod memory;
pub mod redis;

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use std::sync::Arc;

use crate::model::algorithm::{Algorithm, Outcome, Rate};
use crate::model::capacity::CapacityRule;
pub use crate::model::{FailurePolicy, MAX_COUNT};

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
    /// Under [`Commit::AllOrNothing`], whether this check's rejection stops
    /// the others from taking: false for checks whose rejection does not
    /// reject the request (shadow mode, quota mode).
    pub veto: bool,
    /// [`Algorithm::Capacity`] only: the rule, and who asks in which class.
    pub capacity: Option<CapacityCall>,
}

/// Who asks a capacity rule for hits.
#[derive(Clone, Debug, PartialEq)]
pub struct CapacityCall {
    /// The rule.
    pub rule: Arc<CapacityRule>,
    /// The client (the value of the rule's `share_by` entry; empty without one).
    pub client: String,
    /// The client's weight.
    pub weight: f64,
    /// The priority class (0: the most important).
    pub class: usize,
}

/// How the checks of one call commit.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Commit {
    /// Each check on its own, atomically per counter.
    #[default]
    Each,
    /// Atomically as a group: if any check would be rejected, only the
    /// rejected ones are applied (a fixed window still counts them, as the
    /// reference's `STOP_CACHE_KEY_INCREMENT_WHEN_OVERLIMIT` does) and the
    /// others take nothing. On Redis the keys must share a node (a slot on
    /// Cluster).
    AllOrNothing,
}

/// A store failure. Every variant says whether retrying may help, which is
/// what degraded-mode handling keys on.
#[derive(Clone, Debug, thiserror::Error)]
pub enum StoreError {
    /// The store could not be reached or did not answer in time.
    #[error("counter store unavailable: {0}")]
    Unavailable(String),
    /// The store answered with something we did not expect.
    #[error("counter store error: {0}")]
    Protocol(String),
    /// The call was never sent (connection refused, not connected yet, a
    /// replica that refuses writes): retrying cannot count twice.
    #[error("counter store unavailable: {0}")]
    NotSent(String),
    /// One counter holds something its algorithm cannot count (another
    /// program wrote it there): the calls that use it fail, no other, and
    /// the store itself is fine (this is no verdict on its health).
    #[error("counter store error: counter {key}: {detail}")]
    Counter {
        /// The counter's key.
        key: String,
        /// What the store said.
        detail: String,
    },
}

impl StoreError {
    /// True for failures that may go away by themselves (timeouts, dropped
    /// connections); false for answers that will not change on retry.
    pub fn is_transient(&self) -> bool {
        matches!(self, StoreError::Unavailable(_) | StoreError::NotSent(_))
    }

    /// True when the call certainly did not run, so it may be retried.
    pub fn is_retryable(&self) -> bool {
        matches!(self, StoreError::NotSent(_))
    }
}

/// Outcomes, and whether they came from a stand-in for the real store.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Applied {
    /// One outcome per check, in order.
    pub outcomes: Vec<Outcome>,
    /// Decided without the real store (fallback, fail open or fail closed).
    pub degraded: bool,
    /// Which outcomes the local over-limit cache gave (empty: none).
    pub from_local_cache: Vec<bool>,
}

/// The future a store returns.
pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send + 'a>>;

/// Where fixed-window counters live.
pub trait CounterStore: Send + Sync + std::fmt::Debug {
    /// Applies the checks to their counters and returns one outcome per
    /// check, in order. All checks of one call travel together (one round
    /// trip, one script call for Redis).
    fn apply<'a>(&'a self, checks: &'a [Check], commit: Commit) -> StoreFuture<'a, Vec<Outcome>>;

    /// [`CounterStore::apply`], also saying whether the answer is degraded
    /// (not from the real store; see [`crate::resilience`]). `on_failure`
    /// overrides the configured failure policy for this call (a domain's
    /// `on_store_failure`); stores without one ignore it.
    fn apply_marked<'a>(
        &'a self,
        checks: &'a [Check],
        commit: Commit,
        on_failure: Option<FailurePolicy>,
    ) -> StoreFuture<'a, Applied> {
        let _ = on_failure;
        let applied = self.apply(checks, commit);
        Box::pin(async move {
            Ok(Applied {
                outcomes: applied.await?,
                ..Applied::default()
            })
        })
    }

    /// Deletes the counters under `keys` (an operator unblocking a
    /// client); returns how many existed.
    fn reset<'a>(&'a self, keys: &'a [String]) -> StoreFuture<'a, u64>;

    /// Checks that the store answers.
    fn ping(&self) -> StoreFuture<'_, ()>;

    /// A short name for logs and health output (`memory`, `redis`).
    fn kind(&self) -> &'static str;
}
