//! [`ResilientStore`]: the Redis store behind a deadline, retries, a circuit
//! breaker and a health check, with a failure policy for when none of that
//! gets an answer.
//!
//! On the request path it sits where the store sits: the limiter calls it
//! like any [`CounterStore`]. A call goes to Redis only if the breaker
//! allows it and the health check has not marked Redis down; all attempts
//! together get the caller's deadline (90% of its `grpc-timeout`, see
//! [`super::deadline`]) or, without one, the store deadline (default 50 ms). When Redis
//! does not answer in time, or is skipped, the policy decides:
//! `fallback` counts in a bounded in-memory store, `allow` answers OK,
//! `deny` answers OVER_LIMIT. Such answers are marked degraded.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use super::breaker::{BreakerSettings, BreakerState, CircuitBreaker};
use super::overlimit::OverLimitCache;
use super::retry::{Retry, RetrySettings};
pub use crate::model::FailurePolicy;
use crate::model::algorithm::Outcome;
use crate::store::memory::MemoryStore;
use crate::store::quota::{QuotaAnswer, QuotaApplied, QuotaCall};
use crate::store::{
    Applied, CallOptions, Check, Commit, CounterStore, Limit, StoreError, StoreFuture, WindowCount,
};

/// Resilience settings, validated by [`crate::config`].
#[derive(Clone, Debug, PartialEq)]
pub struct ResilienceSettings {
    /// What to answer without the store.
    pub on_failure: FailurePolicy,
    /// The longest a decision waits for the store, retries included.
    pub store_deadline: Duration,
    /// The circuit breaker.
    pub breaker: BreakerSettings,
    /// Retries of transient failures.
    pub retry: RetrySettings,
    /// How often the health check pings the store.
    pub check_interval: Duration,
    /// How long a ping may take.
    pub check_timeout: Duration,
    /// Bound of the fallback store.
    pub fallback_max_entries: usize,
    /// How often the fallback store drops ended windows.
    pub fallback_sweep_interval: Duration,
    /// Bound of the local over-limit cache; 0 turns it off.
    pub over_limit_cache_entries: usize,
}

impl Default for ResilienceSettings {
    fn default() -> Self {
        ResilienceSettings {
            on_failure: FailurePolicy::Fallback,
            store_deadline: Duration::from_millis(50),
            breaker: BreakerSettings::default(),
            retry: RetrySettings::default(),
            check_interval: Duration::from_secs(5),
            check_timeout: Duration::from_millis(500),
            fallback_max_entries: 10_000,
            fallback_sweep_interval: Duration::from_secs(60),
            // One entry per abusive key per window, about 100 bytes each:
            // 100,000 keys (~10 MB at most) absorb a bot flood over many
            // keys, and a full cache only means more calls go to Redis.
            over_limit_cache_entries: 100_000,
        }
    }
}

/// The store with its safety net.
#[derive(Debug)]
pub struct ResilientStore {
    primary: Arc<dyn CounterStore>,
    fallback: Arc<MemoryStore>,
    breaker: CircuitBreaker,
    retry: Retry,
    healthy: AtomicBool,
    degraded: AtomicBool,
    /// Calls to the store that failed or passed the store deadline.
    failures: AtomicU64,
    over_limit: Option<OverLimitCache>,
    settings: ResilienceSettings,
}

impl ResilientStore {
    /// Wraps `primary`; `fallback` counts when the policy says so.
    pub fn new(
        primary: Arc<dyn CounterStore>,
        fallback: Arc<MemoryStore>,
        settings: ResilienceSettings,
    ) -> Self {
        ResilientStore {
            primary,
            fallback,
            breaker: CircuitBreaker::new("redis", settings.breaker),
            retry: Retry::new(settings.retry),
            healthy: AtomicBool::new(true),
            degraded: AtomicBool::new(false),
            failures: AtomicU64::new(0),
            over_limit: (settings.over_limit_cache_entries > 0)
                .then(|| OverLimitCache::new(settings.over_limit_cache_entries)),
            settings,
        }
    }

    /// The circuit breaker in front of the store.
    pub fn circuit_breaker(&self) -> &CircuitBreaker {
        &self.breaker
    }

    /// The last health check's verdict (true until the first one fails).
    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }

    /// True while answers are degraded.
    pub fn is_degraded(&self) -> bool {
        self.degraded.load(Ordering::Relaxed)
    }

    /// Calls to the store that failed or passed the store deadline so far.
    pub fn failures(&self) -> u64 {
        self.failures.load(Ordering::Relaxed)
    }

    /// The gauges and counters `/metrics` reads from this store.
    pub fn metric_source(self: &Arc<Self>) -> crate::metrics::SampleSource {
        use crate::metrics::{Family, Sample};
        const BREAKER: Family = Family::gauge(
            "floodgate_store_breaker_state",
            "The circuit breaker in front of Redis: 0 closed, 1 half-open, 2 open.",
        );
        const DEGRADED: Family = Family::gauge(
            "floodgate_store_degraded",
            "1 while calls are answered without Redis (degraded mode).",
        );
        const FAILURES: Family = Family::counter(
            "floodgate_store_failures_total",
            "Calls to Redis that failed or passed the store deadline.",
        );
        let store = Arc::downgrade(self);
        Arc::new(move || {
            let Some(store) = store.upgrade() else {
                return Vec::new();
            };
            let breaker = match store.breaker.state() {
                BreakerState::Closed => 0.0,
                BreakerState::HalfOpen => 1.0,
                BreakerState::Open => 2.0,
            };
            let sample = |family, value| Sample { family, value };
            vec![
                sample(BREAKER, breaker),
                sample(DEGRADED, f64::from(u8::from(store.is_degraded()))),
                sample(FAILURES, store.failures() as f64),
            ]
        })
    }

    /// The fallback store.
    pub fn fallback(&self) -> &Arc<MemoryStore> {
        &self.fallback
    }

    /// Would a call go to the store now?
    fn use_primary(&self) -> bool {
        self.is_healthy() && self.breaker.allow()
    }

    /// Records whether answers are degraded; logs each change once.
    fn set_degraded(&self, degraded: bool, why: &str) {
        if self.degraded.swap(degraded, Ordering::Relaxed) != degraded {
            if degraded {
                tracing::warn!(policy = ?self.settings.on_failure, why, "store unavailable: answering in degraded mode");
            } else {
                tracing::info!("store answering again: degraded mode over");
            }
        }
    }

    async fn degraded(
        &self,
        checks: &[Check],
        commit: Commit,
        policy: FailurePolicy,
    ) -> Result<Applied, StoreError> {
        let outcomes = match policy {
            FailurePolicy::Fallback => self.fallback.apply(checks, commit.into()).await?.outcomes,
            FailurePolicy::Allow | FailurePolicy::Deny => {
                let allowed = policy == FailurePolicy::Allow;
                checks
                    .iter()
                    .map(|check| Outcome {
                        allowed,
                        remaining: if allowed { check.limit.limit() } else { 0 },
                        reset_after: match &check.limit {
                            Limit::FixedWindow { reset_after, .. } => *reset_after,
                            Limit::Capacity(call) => call.reset_after,
                            other => Duration::try_from_secs_f64(other.period_ms() / 1_000.0)
                                .unwrap_or(Duration::MAX),
                        },
                        capacity: None,
                    })
                    .collect()
            }
        };
        Ok(Applied {
            outcomes,
            degraded: true,
            ..Applied::default()
        })
    }

    /// [`Self::apply_uncached`], with hits on keys known to be over their
    /// limit answered from the over-limit cache (per-check calls only: an
    /// all-or-nothing group always goes to the store as a whole).
    async fn apply_resilient(
        &self,
        checks: &[Check],
        commit: Commit,
        policy: FailurePolicy,
    ) -> Result<Applied, StoreError> {
        let Some(cache) = self.over_limit.as_ref().filter(|_| commit == Commit::Each) else {
            return self.apply_uncached(checks, commit, policy).await;
        };
        let started = Instant::now();
        let over = |c: &Check| match c.limit {
            Limit::FixedWindow { limit, .. } if c.hits > 0 => cache.over(&c.key, limit),
            _ => None,
        };
        // The common case, no key known to be over: nothing allocated here.
        let cached: Vec<Option<Duration>> = if checks.iter().any(|c| over(c).is_some()) {
            checks.iter().map(over).collect()
        } else {
            Vec::new()
        };
        let applied = if cached.is_empty() {
            self.apply_uncached(checks, commit, policy).await?
        } else {
            self.apply_around_cached(checks, &cached, commit, policy)
                .await?
        };
        if !applied.degraded {
            for (i, (check, outcome)) in checks.iter().zip(&applied.outcomes).enumerate() {
                let was_cached = cached.get(i).is_some_and(Option::is_some);
                if let Limit::FixedWindow { limit, .. } = check.limit
                    && !outcome.allowed
                    && !was_cached
                {
                    cache.insert(&check.key, limit, outcome.reset_after, started);
                }
            }
        }
        Ok(applied)
    }

    /// The checks not answered from the cache (`cached[i]`: time left over
    /// the limit) go to the store; the outcomes are put back in order.
    async fn apply_around_cached(
        &self,
        checks: &[Check],
        cached: &[Option<Duration>],
        commit: Commit,
        policy: FailurePolicy,
    ) -> Result<Applied, StoreError> {
        let rest: Vec<Check> = checks
            .iter()
            .zip(cached)
            .filter(|(_, c)| c.is_none())
            .map(|(check, _)| check.clone())
            .collect();
        let mut applied = if rest.is_empty() {
            Applied::default()
        } else {
            self.apply_uncached(&rest, commit, policy).await?
        };
        let mut from_store = std::mem::take(&mut applied.outcomes).into_iter();
        applied.from_local_cache = cached.iter().map(Option::is_some).collect();
        for left in cached {
            let outcome = match left {
                Some(left) => Outcome {
                    allowed: false,
                    remaining: 0,
                    reset_after: *left,
                    capacity: None,
                },
                None => from_store.next().ok_or_else(|| {
                    StoreError::Protocol("the store returned too few outcomes".into())
                })?,
            };
            applied.outcomes.push(outcome);
        }
        Ok(applied)
    }

    async fn apply_uncached(
        &self,
        checks: &[Check],
        commit: Commit,
        policy: FailurePolicy,
    ) -> Result<Applied, StoreError> {
        if !self.use_primary() {
            self.set_degraded(true, "circuit open or health check failing");
            return self.degraded(checks, commit, policy).await;
        }
        // The store deadline, or the caller's if that comes first.
        let own = Instant::now() + self.settings.store_deadline;
        let caller = super::deadline::current().filter(|c| *c < own);
        let deadline = caller.unwrap_or(own);
        // Only failures that prove the call never ran are retried, so a
        // retry never counts a hit twice.
        let attempt = self.retry.run(deadline, StoreError::is_retryable, || {
            self.primary.apply(checks, commit.into())
        });
        let answered = match tokio::time::timeout_at(deadline, attempt).await {
            Ok(result) => result,
            Err(_) if caller.is_some() => {
                // The caller's short deadline ran out, not the store's: no
                // verdict on the store (one impatient client must not open
                // the breaker for everyone).
                self.breaker.abandon();
                return self.degraded(checks, commit, policy).await;
            }
            Err(_) => {
                tracing::debug!("store deadline passed");
                self.failures.fetch_add(1, Ordering::Relaxed);
                self.breaker.failure();
                return self.degraded(checks, commit, policy).await;
            }
        };
        self.settle(answered, checks, commit, policy).await
    }

    /// What the store answered in time: the answer, or the policy's.
    async fn settle(
        &self,
        answered: Result<Applied, StoreError>,
        checks: &[Check],
        commit: Commit,
        policy: FailurePolicy,
    ) -> Result<Applied, StoreError> {
        match answered {
            Ok(applied) => {
                self.breaker.success();
                if self.breaker.state() == BreakerState::Closed {
                    self.set_degraded(false, "");
                }
                Ok(applied)
            }
            Err(e @ StoreError::Counter { .. }) => {
                // One counter holds something its algorithm cannot count:
                // Redis answered, so this is no verdict on its health (one
                // caller must not open the breaker for everyone); the call
                // that uses the counter fails with a clear error.
                self.breaker.success();
                Err(e)
            }
            Err(e) => {
                // Unreachable, or an error reply (OOM, BUSY, a script
                // error): either way this call gets the policy's answer.
                tracing::debug!(error = %e, "store call failed");
                self.failures.fetch_add(1, Ordering::Relaxed);
                self.breaker.failure();
                self.degraded(checks, commit, policy).await
            }
        }
    }

    /// The health check: pings the store every `check_interval` until
    /// `drain` turns true, and ten times as often while the store is away
    /// (a failing ping, or a breaker not closed). A failed ping routes calls
    /// away from the store; a good one while the breaker is open lets trial
    /// calls through at once. `status` carries the verdict to the gRPC health service.
    pub async fn check_health(
        self: Arc<Self>,
        status: watch::Sender<bool>,
        mut drain: watch::Receiver<bool>,
    ) {
        let every = self.settings.check_interval;
        // While Redis is away (a failing ping, or a breaker not closed),
        // ten times as often: a check lands soon after it returns, so
        // traffic is back well within one interval wherever the return
        // falls between two checks.
        let soon = (every / RECOVERY_CHECKS).max(Duration::from_millis(1));
        let mut wait = Duration::ZERO;
        loop {
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                _ = drain.wait_for(|d| *d) => return,
            }
            let ok = matches!(
                tokio::time::timeout(self.settings.check_timeout, self.primary.ping()).await,
                Ok(Ok(()))
            );
            if self.healthy.swap(ok, Ordering::Relaxed) != ok {
                if ok {
                    tracing::info!("store health check passes again");
                } else {
                    tracing::warn!("store health check fails: routing calls away from it");
                }
            }
            if ok && self.breaker.state() == BreakerState::Open {
                self.breaker.half_open_now();
            }
            // Hand back only once Redis is in use again (breaker closed after
            // real calls succeeded), not merely answering pings: otherwise a
            // slow Redis would empty the fallback every interval and hand
            // every key a fresh local budget.
            if ok
                && self.breaker.state() == BreakerState::Closed
                && !self.degraded.load(Ordering::Relaxed)
            {
                let limit = self.settings.check_interval;
                if tokio::time::timeout(limit, self.hand_back()).await.is_err() {
                    tracing::warn!(
                        "handing local counts back took longer than health_check_interval; the rest stay local"
                    );
                }
            }
            // Published after the hand-back: SERVING means the outage's
            // counts are in the store.
            status.send_replace(ok);
            wait = if ok && self.breaker.state() == BreakerState::Closed {
                every
            } else {
                soon
            };
        }
    }
}

impl ResilientStore {
    /// Adds the fixed-window counts taken locally, for windows still open,
    /// to the store, so that a short outage does not hand every client a
    /// fresh budget. Best effort: what fails to reach the store is logged
    /// and dropped. Other algorithms' local state is dropped (it cannot be
    /// added up); those limits resume from the store's own state.
    async fn hand_back(&self) {
        let taken = self.fallback.take_windows();
        if taken.is_empty() {
            return;
        }
        let keys = taken.len();
        let mut handed = 0;
        for batch in taken.chunks(HAND_BACK_BATCH) {
            let call = self.primary.add(batch);
            match tokio::time::timeout(self.settings.check_timeout, call).await {
                Ok(Ok(_)) => handed += batch.len(),
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, keys = batch.len(), "local counts not handed back")
                }
                Err(_) => tracing::warn!(
                    keys = batch.len(),
                    "local counts not handed back: timed out"
                ),
            }
        }
        tracing::info!(
            keys,
            handed,
            "counts taken during the outage handed back to the store"
        );
    }
}

/// Keys per hand-back call (one script call's arguments).
const HAND_BACK_BATCH: usize = 256;

/// Health checks per `check_interval` while Redis is away.
const RECOVERY_CHECKS: u32 = 10;

/// RLQS reports: to Redis when it is in use, else (and when it fails or
/// passes the store deadline) as the failure policy says, like a decision.
/// Not retried: a report adds its allowed count, so a retry could count it
/// twice; the next report comes one reporting interval later anyway.
impl ResilientStore {
    async fn quota_resilient(&self, call: &QuotaCall) -> Result<QuotaApplied, StoreError> {
        let policy = call.on_failure.unwrap_or(self.settings.on_failure);
        if !self.use_primary() {
            self.set_degraded(true, "circuit open or health check failing");
            return self.quota_degraded(call, policy).await;
        }
        let deadline = Instant::now() + self.settings.store_deadline;
        match tokio::time::timeout_at(deadline, self.primary.quota(call)).await {
            Ok(Ok(applied)) => {
                self.breaker.success();
                if self.breaker.state() == BreakerState::Closed {
                    self.set_degraded(false, "");
                }
                Ok(applied)
            }
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "store call failed (RLQS report)");
                self.failures.fetch_add(1, Ordering::Relaxed);
                self.breaker.failure();
                self.quota_degraded(call, policy).await
            }
            Err(_) => {
                tracing::debug!("store deadline passed (RLQS report)");
                self.failures.fetch_add(1, Ordering::Relaxed);
                self.breaker.failure();
                self.quota_degraded(call, policy).await
            }
        }
    }

    async fn quota_degraded(
        &self,
        call: &QuotaCall,
        policy: FailurePolicy,
    ) -> Result<QuotaApplied, StoreError> {
        let answer = match policy {
            FailurePolicy::Fallback => self.fallback.quota(call).await?.answer,
            FailurePolicy::Allow => QuotaAnswer::AllowAll,
            FailurePolicy::Deny => QuotaAnswer::DenyAll,
        };
        Ok(QuotaApplied {
            answer,
            degraded: true,
        })
    }
}

impl CounterStore for ResilientStore {
    fn quota<'a>(&'a self, call: &'a QuotaCall) -> StoreFuture<'a, QuotaApplied> {
        Box::pin(self.quota_resilient(call))
    }

    /// Applies the checks in the store, or as `options.on_failure` (else
    /// the configured policy) says when the store cannot answer.
    fn apply<'a>(&'a self, checks: &'a [Check], options: CallOptions) -> StoreFuture<'a, Applied> {
        let policy = options.on_failure.unwrap_or(self.settings.on_failure);
        Box::pin(self.apply_resilient(checks, options.commit, policy))
    }

    /// Adds straight to the store (no retry, breaker or fallback): only
    /// the hand-back adds, once the store is in use again.
    fn add<'a>(&'a self, counts: &'a [WindowCount]) -> StoreFuture<'a, ()> {
        self.primary.add(counts)
    }

    /// Resets the counters in Redis and in the fallback, and forgets them in
    /// the local over-limit cache, so the next call is decided afresh.
    fn reset<'a>(&'a self, keys: &'a [String]) -> StoreFuture<'a, u64> {
        Box::pin(async move {
            // The counters first, then the cache: a call in flight can no
            // longer learn "over" from the store, and one that already did
            // is kept from caching it again (see `OverLimitCache::insert`).
            let fallback = self.fallback.reset(keys).await?;
            let primary = self.primary.reset(keys).await?;
            if let Some(cache) = &self.over_limit {
                for key in keys {
                    cache.remove(key);
                }
            }
            Ok(primary.max(fallback))
        })
    }

    fn ping(&self) -> StoreFuture<'_, ()> {
        // The service answers whatever the store does (the policy decides);
        // the store's own health is reported apart (see `check_health`).
        Box::pin(async { Ok(()) })
    }

    fn kind(&self) -> &'static str {
        self.primary.kind()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::sync::atomic::AtomicUsize;

    use super::*;
    use crate::clock::Clock;

    #[derive(Clone, Copy, Debug, PartialEq)]
    enum Mode {
        Up,
        Down,
        Hang,
        Broken,
    }

    /// A store whose behaviour the test sets; counts the calls it gets.
    #[derive(Debug)]
    struct Fake {
        mode: Mutex<Mode>,
        calls: AtomicUsize,
        inner: MemoryStore,
    }

    impl Fake {
        fn new() -> Arc<Self> {
            Arc::new(Fake {
                mode: Mutex::new(Mode::Up),
                calls: AtomicUsize::new(0),
                inner: MemoryStore::new(100, Clock::System),
            })
        }
        fn set(&self, mode: Mode) {
            *self.mode.lock().unwrap() = mode;
        }
        fn calls(&self) -> usize {
            self.calls.load(Ordering::Relaxed)
        }
        async fn act(&self) -> Result<(), StoreError> {
            let mode = *self.mode.lock().unwrap();
            match mode {
                Mode::Up => Ok(()),
                Mode::Down => Err(StoreError::NotSent("refused".into())),
                Mode::Hang => std::future::pending().await,
                Mode::Broken => Err(StoreError::Protocol("bad reply".into())),
            }
        }
    }

    impl CounterStore for Fake {
        fn apply<'a>(
            &'a self,
            checks: &'a [Check],
            options: CallOptions,
        ) -> StoreFuture<'a, Applied> {
            self.calls.fetch_add(1, Ordering::Relaxed);
            Box::pin(async move {
                self.act().await?;
                self.inner.apply(checks, options).await
            })
        }
        fn add<'a>(&'a self, counts: &'a [WindowCount]) -> StoreFuture<'a, ()> {
            self.calls.fetch_add(1, Ordering::Relaxed);
            Box::pin(async move {
                self.act().await?;
                self.inner.add(counts).await
            })
        }
        fn reset<'a>(&'a self, keys: &'a [String]) -> StoreFuture<'a, u64> {
            Box::pin(async move { Ok(keys.len() as u64) })
        }
        fn ping(&self) -> StoreFuture<'_, ()> {
            Box::pin(self.act())
        }
        fn kind(&self) -> &'static str {
            "fake"
        }
    }

    fn check() -> Vec<Check> {
        vec![Check {
            key: "k".into(),
            hits: 1,
            limit: Limit::FixedWindow {
                limit: 10,
                period_ms: 60_000.0,
                reset_after: Duration::from_secs(60),
            },
            veto: true,
        }]
    }

    fn store(fake: &Arc<Fake>, policy: FailurePolicy) -> Arc<ResilientStore> {
        let settings = ResilienceSettings {
            on_failure: policy,
            retry: RetrySettings {
                use_jitter: false,
                initial_backoff: Duration::from_millis(10),
                ..RetrySettings::default()
            },
            ..ResilienceSettings::default()
        };
        let fallback = Arc::new(MemoryStore::new(100, Clock::System));
        Arc::new(ResilientStore::new(fake.clone(), fallback, settings))
    }

    #[tokio::test(start_paused = true)]
    async fn a_down_store_is_retried_then_falls_back_and_the_breaker_opens() {
        let fake = Fake::new();
        let store = store(&fake, FailurePolicy::Fallback);
        let applied = store.apply(&check(), Commit::Each.into()).await.unwrap();
        assert!(!applied.degraded);
        assert_eq!(applied.outcomes[0].remaining, 9);

        fake.set(Mode::Down);
        let start = Instant::now();
        let applied = store.apply(&check(), Commit::Each.into()).await.unwrap();
        assert!(applied.degraded);
        assert_eq!(
            applied.outcomes[0].remaining, 9,
            "counted in the fallback store"
        );
        assert_eq!(fake.calls(), 1 + 3, "three attempts: 10 ms and 20 ms apart");
        assert_eq!(start.elapsed(), Duration::from_millis(30));
        for _ in 0..2 {
            store.apply(&check(), Commit::Each.into()).await.unwrap();
        }
        assert_eq!(store.circuit_breaker().state(), BreakerState::Open);
        let before = fake.calls();
        let applied = store.apply(&check(), Commit::Each.into()).await.unwrap();
        assert!(applied.degraded);
        assert_eq!(
            fake.calls(),
            before,
            "an open breaker sends nothing to the store"
        );
        assert_eq!(applied.outcomes[0].remaining, 6);
    }

    #[tokio::test(start_paused = true)]
    async fn a_store_that_never_answers_costs_one_deadline() {
        let fake = Fake::new();
        fake.set(Mode::Hang);
        let store = store(&fake, FailurePolicy::Fallback);
        let start = Instant::now();
        let applied = store.apply(&check(), Commit::Each.into()).await.unwrap();
        assert!(applied.degraded);
        assert_eq!(
            start.elapsed(),
            Duration::from_millis(50),
            "the store deadline"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn allow_and_deny_answer_without_counting() {
        let fake = Fake::new();
        fake.set(Mode::Down);
        let allow = store(&fake, FailurePolicy::Allow);
        let deny = store(&fake, FailurePolicy::Deny);
        for _ in 0..20 {
            let a = allow.apply(&check(), Commit::Each.into()).await.unwrap();
            assert!(a.degraded && a.outcomes[0].allowed);
            let d = deny.apply(&check(), Commit::Each.into()).await.unwrap();
            assert!(d.degraded && !d.outcomes[0].allowed);
        }
        assert!(allow.fallback().is_empty(), "allow counts nothing");
    }

    #[tokio::test(start_paused = true)]
    async fn a_domain_policy_overrides_the_configured_one() {
        let fake = Fake::new();
        fake.set(Mode::Down);
        let store = store(&fake, FailurePolicy::Fallback);
        let denied = store
            .apply(
                &check(),
                CallOptions {
                    commit: Commit::Each,
                    on_failure: Some(FailurePolicy::Deny),
                },
            )
            .await
            .unwrap();
        assert!(denied.degraded && !denied.outcomes[0].allowed);
        let counted = store.apply(&check(), Commit::Each.into()).await.unwrap();
        assert!(counted.degraded && counted.outcomes[0].allowed);
        assert_eq!(
            counted.outcomes[0].remaining, 9,
            "only the fallback call counted"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn an_error_reply_gets_the_policy_and_is_not_retried() {
        let fake = Fake::new();
        fake.set(Mode::Broken);
        let store = store(&fake, FailurePolicy::Fallback);
        let applied = store.apply(&check(), Commit::Each.into()).await.unwrap();
        assert!(applied.degraded);
        assert_eq!(fake.calls(), 1, "an error reply may have run: not retried");
    }

    #[tokio::test(start_paused = true)]
    async fn a_callers_short_deadline_is_no_verdict_on_the_store() {
        let fake = Fake::new();
        fake.set(Mode::Hang);
        let store = store(&fake, FailurePolicy::Fallback);
        for _ in 0..10 {
            let deadline = Some(Instant::now() + Duration::from_millis(1));
            let applied = super::super::deadline::with_deadline(
                deadline,
                store.apply(&check(), Commit::Each.into()),
            )
            .await
            .unwrap();
            assert!(applied.degraded);
        }
        assert_eq!(store.circuit_breaker().state(), BreakerState::Closed);
        // A long caller deadline is capped by the store deadline.
        let start = Instant::now();
        let far = Some(Instant::now() + Duration::from_secs(30));
        super::super::deadline::with_deadline(far, store.apply(&check(), Commit::Each.into()))
            .await
            .unwrap();
        assert_eq!(start.elapsed(), Duration::from_millis(50));
    }

    /// Runs the store's health check: its verdicts, the drain switch, the task.
    fn checking(
        store: &Arc<ResilientStore>,
    ) -> (
        watch::Receiver<bool>,
        watch::Sender<bool>,
        tokio::task::JoinHandle<()>,
    ) {
        let (status_tx, status) = watch::channel(true);
        let (drain_tx, drain) = watch::channel(false);
        let checker = tokio::spawn(store.clone().check_health(status_tx, drain));
        (status, drain_tx, checker)
    }

    #[tokio::test(start_paused = true)]
    async fn the_health_check_routes_away_and_back() {
        let fake = Fake::new();
        let store = store(&fake, FailurePolicy::Fallback);
        let (mut status, drain_tx, checker) = checking(&store);

        fake.set(Mode::Down);
        status.wait_for(|ok| !ok).await.unwrap();
        assert!(!store.is_healthy());
        for _ in 0..3 {
            store.apply(&check(), Commit::Each.into()).await.unwrap();
        }
        let calls = fake.calls();
        assert!(
            store
                .apply(&check(), Commit::Each.into())
                .await
                .unwrap()
                .degraded
        );
        assert_eq!(fake.calls(), calls, "unhealthy: calls skip the store");

        fake.set(Mode::Up);
        let start = Instant::now();
        status.wait_for(|ok| *ok).await.unwrap();
        assert!(
            start.elapsed() <= Duration::from_secs(5),
            "within one check_interval"
        );
        let applied = store.apply(&check(), Commit::Each.into()).await.unwrap();
        assert!(!applied.degraded, "back on the store");

        drain_tx.send_replace(true);
        checker.await.unwrap();
    }

    /// While the store is away, checks come ten times as often: a store
    /// back just after a failed check is in use again a tenth of an
    /// interval later, not a whole interval (or more) later.
    #[tokio::test(start_paused = true)]
    async fn a_store_back_between_two_checks_is_used_within_a_tenth_of_an_interval() {
        let fake = Fake::new();
        let store = store(&fake, FailurePolicy::Fallback);
        let (mut status, drain_tx, checker) = checking(&store);
        fake.set(Mode::Down);
        status.wait_for(|ok| !ok).await.unwrap();
        // Three failed calls open the breaker too.
        for _ in 0..3 {
            store.apply(&check(), Commit::Each.into()).await.unwrap();
        }
        tokio::time::sleep(Duration::from_secs(7)).await;
        assert!(!store.is_healthy());
        // Just after a failed check.
        tokio::time::sleep(Duration::from_millis(1)).await;
        fake.set(Mode::Up);
        let back = Instant::now();
        status.wait_for(|ok| *ok).await.unwrap();
        loop {
            let applied = store.apply(&check(), Commit::Each.into()).await.unwrap();
            if !applied.degraded {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(
            back.elapsed() <= Duration::from_millis(500),
            "back on the store {:?} after it returned",
            back.elapsed()
        );
        assert_eq!(store.circuit_breaker().state(), BreakerState::Closed);
        drain_tx.send_replace(true);
        checker.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn keys_over_their_limit_are_answered_without_the_store() {
        let fake = Fake::new();
        let store = store(&fake, FailurePolicy::Fallback);
        for _ in 0..10 {
            assert!(
                store
                    .apply(&check(), Commit::Each.into())
                    .await
                    .unwrap()
                    .outcomes[0]
                    .allowed
            );
        }
        let over = store.apply(&check(), Commit::Each.into()).await.unwrap();
        assert!(!over.outcomes[0].allowed);
        let calls = fake.calls();
        for _ in 0..100 {
            let a = store.apply(&check(), Commit::Each.into()).await.unwrap();
            assert!(!a.degraded && !a.outcomes[0].allowed);
            assert_eq!(a.outcomes[0].reset_after, Duration::from_secs(60));
        }
        assert_eq!(fake.calls(), calls, "no store call while the key is over");
        // A request mixing a cached key and another goes to the store for the other only.
        let mut two = check();
        two.push(Check {
            key: "other".into(),
            ..two[0].clone()
        });
        let a = store.apply(&two, Commit::Each.into()).await.unwrap();
        assert_eq!(fake.calls(), calls + 1);
        assert_eq!(
            (a.outcomes[0].allowed, a.outcomes[1].allowed),
            (false, true)
        );
        assert_eq!(a.outcomes[1].remaining, 9);
    }

    #[tokio::test(start_paused = true)]
    async fn counts_taken_during_an_outage_are_handed_back() {
        let fake = Fake::new();
        let store = store(&fake, FailurePolicy::Fallback);
        let (mut status, drain_tx, checker) = checking(&store);
        fake.set(Mode::Down);
        status.wait_for(|ok| !ok).await.unwrap();
        for _ in 0..4 {
            assert!(
                store
                    .apply(&check(), Commit::Each.into())
                    .await
                    .unwrap()
                    .degraded
            );
        }
        assert!(!store.fallback().is_empty());

        fake.set(Mode::Up);
        status.wait_for(|ok| *ok).await.unwrap();
        assert!(
            !store.fallback().is_empty(),
            "pings alone hand nothing back"
        );
        // A real call succeeds: Redis is in use again; the next check hands back.
        let mut other = check();
        other[0].key = "other".into();
        assert!(
            !store
                .apply(&other, Commit::Each.into())
                .await
                .unwrap()
                .degraded
        );
        status.changed().await.unwrap();
        assert!(store.fallback().is_empty(), "handed back, not kept");
        let mut peek = check();
        peek[0].hits = 0;
        let outcome = fake
            .inner
            .apply(&peek, Commit::Each.into())
            .await
            .unwrap()
            .outcomes[0];
        assert_eq!(outcome.remaining, 6, "the 4 local hits reached the store");

        drain_tx.send_replace(true);
        checker.await.unwrap();
    }
}
