//! Counter storage: step five of the request path. The limiter hands the
//! store one [`Check`] per limit to apply, with the call's [`CallOptions`];
//! the store applies each check's [`Limit`] (the arithmetic is in
//! [`crate::model`]) to its counter atomically and returns one [`Outcome`]
//! per check.
//!
//! Two backends implement [`CounterStore`]: [`memory::MemoryStore`], the
//! embedded default, and [`redis::RedisStore`], shared by every server
//! instance (single node, Sentinel or Cluster). [`connecting::Connecting`]
//! stands in for Redis until it is first reached, and
//! [`crate::resilience::store::ResilientStore`] wraps Redis with its
//! failure policy. Counter keys follow the reference service's format
//! ([`key`]), so an operator can move from envoyproxy/ratelimit on the same
//! Redis.

pub mod connecting;
pub mod key;
pub mod memory;
pub mod quota;
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
    /// How to count, with what that way of counting needs.
    pub limit: Limit,
    /// Under [`Commit::AllOrNothing`], whether this check's rejection stops
    /// the others from taking: false for checks whose rejection does not
    /// reject the request (shadow mode, quota mode).
    pub veto: bool,
}

/// A check's limit: the algorithm, with what it needs and nothing else.
#[derive(Clone, Debug, PartialEq)]
pub enum Limit {
    /// The reference's fixed window ([`crate::model::algorithm::fixed_window`]).
    FixedWindow {
        /// Hits per window.
        limit: u64,
        /// The window's length, in milliseconds.
        period_ms: f64,
        /// Time left in the window, by the limiter's clock.
        reset_after: Duration,
    },
    /// A sliding window ([`crate::model::algorithm::sliding_window`]).
    SlidingWindow(Rate),
    /// A token bucket ([`crate::model::algorithm::token_bucket`]).
    TokenBucket(Rate),
    /// GCRA ([`crate::model::algorithm::gcra`]).
    Gcra(Rate),
    /// A capacity rule ([`crate::model::capacity::decide`]).
    Capacity(CapacityCall),
}

impl Limit {
    /// The limit of a rule's `algorithm` at `rate`; `reset_after` (time
    /// left in the window) is kept by the fixed window only.
    pub fn of(algorithm: Algorithm, rate: Rate, reset_after: Duration) -> Limit {
        match algorithm {
            Algorithm::FixedWindow => Limit::FixedWindow {
                limit: rate.limit,
                period_ms: rate.period_ms,
                reset_after,
            },
            Algorithm::SlidingWindow => Limit::SlidingWindow(rate),
            Algorithm::TokenBucket => Limit::TokenBucket(rate),
            Algorithm::Gcra => Limit::Gcra(rate),
        }
    }

    /// Hits allowed per period (a capacity rule's total).
    pub fn limit(&self) -> u64 {
        match self {
            Limit::FixedWindow { limit, .. } => *limit,
            Limit::SlidingWindow(rate) | Limit::TokenBucket(rate) | Limit::Gcra(rate) => rate.limit,
            Limit::Capacity(call) => call.rule.limits.total,
        }
    }

    /// The period (the window of a fixed window or a capacity rule), in ms.
    pub fn period_ms(&self) -> f64 {
        match self {
            Limit::FixedWindow { period_ms, .. } => *period_ms,
            Limit::SlidingWindow(rate) | Limit::TokenBucket(rate) | Limit::Gcra(rate) => {
                rate.period_ms
            }
            Limit::Capacity(call) => call.period_ms(),
        }
    }
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
    /// Time left in the rule's window, by the limiter's clock.
    pub reset_after: Duration,
}

impl CapacityCall {
    /// The rule's window, in milliseconds.
    pub fn period_ms(&self) -> f64 {
        (self.rule.window_secs() * 1_000) as f64
    }
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

/// What one call asks of the store beside its checks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CallOptions {
    /// How the checks commit.
    pub commit: Commit,
    /// Overrides the configured failure policy for this call (a domain's
    /// `on_store_failure`); only a store with a policy
    /// ([`crate::resilience::store::ResilientStore`]) has one to override.
    pub on_failure: Option<FailurePolicy>,
}

impl From<Commit> for CallOptions {
    fn from(commit: Commit) -> Self {
        CallOptions {
            commit,
            on_failure: None,
        }
    }
}

/// Hits to add to a fixed window's counter, already decided (the hand-back
/// of counts taken locally during an outage).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WindowCount {
    /// The counter's key (it carries the window start).
    pub key: String,
    /// The hits to add.
    pub hits: u64,
    /// Time left in the window: the counter need not outlive it.
    pub reset_after: Duration,
}

/// Where counters live, whatever the algorithm: the memory store, Redis,
/// or the resilient store in front of Redis.
pub trait CounterStore: Send + Sync + std::fmt::Debug {
    /// Applies the checks to their counters and returns one outcome per
    /// check, in order, saying whether the answer is degraded (not from the
    /// real store; see [`crate::resilience`]). All checks of one call travel
    /// together (one round trip, one script call for Redis).
    fn apply<'a>(&'a self, checks: &'a [Check], options: CallOptions) -> StoreFuture<'a, Applied>;

    /// Adds `counts` to their fixed-window counters, whatever their limits
    /// (the hits were decided already), creating them as needed to live
    /// as long as their windows.
    fn add<'a>(&'a self, counts: &'a [WindowCount]) -> StoreFuture<'a, ()>;

    /// Deletes the counters under `keys` (an operator unblocking a
    /// client); returns how many existed.
    fn reset<'a>(&'a self, keys: &'a [String]) -> StoreFuture<'a, u64>;

    /// Checks that the store answers.
    fn ping(&self) -> StoreFuture<'_, ()>;

    /// A short name for logs and health output (`memory`, `redis`).
    fn kind(&self) -> &'static str;

    /// Folds one RLQS report into its rule's shared state and returns the
    /// reporting instance's share ([`quota`]). A store that keeps no such
    /// state says so.
    fn quota<'a>(&'a self, call: &'a quota::QuotaCall) -> StoreFuture<'a, quota::QuotaApplied> {
        let _ = call;
        Box::pin(async {
            Err(StoreError::Protocol(
                "this store keeps no RLQS state".to_owned(),
            ))
        })
    }
}
