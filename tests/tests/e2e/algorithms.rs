//! Property tests: every algorithm, in both stores, against a reference model.
//!
//! Each case is a random sequence of (time advance, hits) steps on one key.
//! The same sequence runs through the memory store, a real `redis-server`
//! (the scripts' clock pinned through `RedisStore::with_local_time`) and a
//! model written here from the algorithm's definition. All three must make
//! the same decision and report the same `remaining` at every step. Time is a
//! manual clock, so nothing depends on the machine's speed. Bucket emission
//! intervals are powers of two milliseconds, so the arithmetic is exact and
//! boundary cases (a token arriving exactly when asked for) are really tested.

#![allow(clippy::unwrap_used)] // Tests: a failed unwrap is a failed test.

use std::collections::HashMap;
use std::time::Duration;

use floodgate_e2e::RedisServer;
use floodgate_server::clock::Clock;
use floodgate_server::model::algorithm::{Algorithm, Outcome, Rate};
use floodgate_server::store::memory::MemoryStore;
use floodgate_server::store::redis::{RedisSettings, RedisStore};
use floodgate_server::store::{Check, Commit, CounterStore, Limit};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};

/// Epoch milliseconds where every case starts (a multiple of every period used).
const START_MS: u64 = 1_700_000_000_000 - 1_700_000_000_000 % 3_600_000;

/// A reference model: `(state, now in ms, hits) -> (allowed, remaining)`.
trait Model {
    fn step(&mut self, now_ms: u64, hits: u64) -> (bool, u64);
}

/// Fixed window: every hit counts, even rejected ones; over when the count
/// exceeds the limit.
struct FixedModel {
    limit: u64,
    period_ms: u64,
    counts: HashMap<u64, u64>,
}

impl Model for FixedModel {
    fn step(&mut self, now_ms: u64, hits: u64) -> (bool, u64) {
        let count = self.counts.entry(now_ms / self.period_ms).or_default();
        *count += hits;
        (*count <= self.limit, self.limit.saturating_sub(*count))
    }
}

/// Sliding window: the previous window counts in proportion to its overlap
/// with the period ending now; rejected hits do not count.
struct SlidingModel {
    limit: u64,
    period_ms: u64,
    counts: HashMap<u64, u64>,
}

impl Model for SlidingModel {
    fn step(&mut self, now_ms: u64, hits: u64) -> (bool, u64) {
        let window = now_ms / self.period_ms;
        let previous = window
            .checked_sub(1)
            .and_then(|w| self.counts.get(&w))
            .copied()
            .unwrap_or(0);
        let current = self.counts.get(&window).copied().unwrap_or(0);
        let period = self.period_ms as f64;
        let elapsed = (now_ms % self.period_ms) as f64;
        let estimate = previous as f64 * ((period - elapsed) / period) + current as f64;
        let allowed = estimate + hits.max(1) as f64 <= self.limit as f64;
        let mut taken = estimate;
        if allowed && hits > 0 {
            taken += hits as f64;
            *self.counts.entry(window).or_default() += hits;
        }
        (allowed, (self.limit as f64 - taken).max(0.0).floor() as u64)
    }
}

/// Token bucket: `burst` tokens, one more every `interval_ms`; a request takes
/// its hits or nothing.
struct BucketModel {
    interval_ms: u64,
    burst: u64,
    tokens: f64,
    at_ms: u64,
}

impl Model for BucketModel {
    fn step(&mut self, now_ms: u64, hits: u64) -> (bool, u64) {
        let refilled = (now_ms - self.at_ms) as f64 / self.interval_ms as f64;
        let tokens = (self.tokens + refilled).min(self.burst as f64);
        let allowed = tokens >= hits.max(1) as f64;
        let left = if allowed {
            tokens - hits as f64
        } else {
            tokens
        };
        self.tokens = left;
        self.at_ms = now_ms;
        (allowed, left.floor() as u64)
    }
}

/// GCRA as virtual scheduling: each hit is scheduled `interval_ms` after the
/// previous one; a request may run ahead of its schedule by at most
/// `burst` intervals.
struct GcraModel {
    interval_ms: u64,
    burst: u64,
    /// When the next hit is due (never before now).
    due_ms: u64,
}

impl Model for GcraModel {
    fn step(&mut self, now_ms: u64, hits: u64) -> (bool, u64) {
        let due = self.due_ms.max(now_ms);
        let tolerance = self.interval_ms * self.burst;
        let allowed = due + hits.max(1) * self.interval_ms - now_ms <= tolerance;
        if allowed {
            self.due_ms = due + hits * self.interval_ms;
        }
        let ahead = self.due_ms.max(now_ms) - now_ms;
        (
            allowed,
            (tolerance - ahead.min(tolerance)) / self.interval_ms,
        )
    }
}

/// One case's parameters.
#[derive(Clone, Debug)]
struct Case {
    limit: u64,
    /// Token bucket and GCRA: ms per token (a power of two).
    interval_ms: u64,
    burst: u64,
    /// (advance in ms, hits)
    steps: Vec<(u64, u64)>,
}

fn case() -> impl Strategy<Value = Case> {
    (
        1u64..12,
        6u32..11,
        1u64..8,
        proptest::collection::vec((0u64..2_500, 0u64..4), 1..40),
    )
        .prop_map(|(limit, shift, burst, steps)| Case {
            limit,
            interval_ms: 1 << shift,
            burst,
            steps,
        })
}

struct Stores {
    runtime: tokio::runtime::Runtime,
    _redis: RedisServer,
    redis: RedisStore,
}

impl Stores {
    fn start() -> Stores {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let redis_server = RedisServer::start();
        let settings = RedisSettings {
            connect_timeout: Duration::from_secs(2),
            command_timeout: Duration::from_secs(5),
            expiration_jitter_max: Duration::ZERO,
            ..RedisSettings::single(redis_server.url())
        };
        let redis = runtime.block_on(RedisStore::connect(&settings)).unwrap();
        Stores {
            runtime,
            _redis: redis_server,
            redis,
        }
    }

    /// Runs case `n` through both stores and the model, step by step, on a
    /// fresh manual clock that both stores read.
    fn run(
        &self,
        n: u64,
        algorithm: Algorithm,
        rate: Rate,
        case: &Case,
        model: &mut dyn Model,
    ) -> Result<(), TestCaseError> {
        let clock = Clock::manual(Duration::from_millis(START_MS));
        let memory = MemoryStore::new(1_000, clock.clone());
        let redis = self.redis.clone().with_local_time(clock.clone());
        let period = rate.period_ms as u64;
        let mut now = START_MS;
        for (i, &(advance, hits)) in case.steps.iter().enumerate() {
            now += advance;
            clock.advance(Duration::from_millis(advance));
            let key = match algorithm {
                Algorithm::FixedWindow => format!("c{n}_{}", now / period),
                _ => format!("c{n}"),
            };
            let check = Check {
                key,
                hits,
                limit: Limit::of(
                    algorithm,
                    rate,
                    Duration::from_millis(period - now % period),
                ),
                veto: true,
            };
            let m: Outcome = memory.apply_one(&check);
            let r: Outcome = self
                .runtime
                .block_on(redis.apply(std::slice::from_ref(&check), Commit::Each.into()))
                .unwrap()
                .outcomes[0];
            let (allowed, remaining) = model.step(now, hits);
            let at = format!("step {i} (t+{} ms, {hits} hits)", now - START_MS);
            prop_assert_eq!(
                (m.allowed, m.remaining),
                (allowed, remaining),
                "memory store at {}",
                at
            );
            prop_assert_eq!(
                (r.allowed, r.remaining),
                (allowed, remaining),
                "Redis at {}",
                at
            );
            let gap = m.reset_after.abs_diff(r.reset_after);
            prop_assert!(
                gap <= Duration::from_millis(1),
                "reset {:?} vs {:?} at {}",
                m.reset_after,
                r.reset_after,
                at
            );
        }
        Ok(())
    }
}

fn property(algorithm: Algorithm, model: impl Fn(&Case, Rate) -> Box<dyn Model>) {
    let stores = Stores::start();
    let mut runner = TestRunner::new(Config {
        cases: 48,
        failure_persistence: None,
        ..Config::default()
    });
    let cases = std::sync::atomic::AtomicU64::new(0);
    runner
        .run(&case(), |case| {
            let n = cases.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let rate = match algorithm {
                // Window algorithms: `limit` per period of 8 intervals.
                Algorithm::FixedWindow | Algorithm::SlidingWindow => Rate {
                    limit: case.limit,
                    period_ms: (case.interval_ms * 8) as f64,
                    burst: 0,
                },
                // Buckets: one token per interval, `burst` at most.
                // Capacity has its own property test (tests/capacity.rs).
                Algorithm::TokenBucket | Algorithm::Gcra => Rate {
                    limit: case.limit,
                    period_ms: (case.interval_ms * case.limit) as f64,
                    burst: case.burst,
                },
            };
            stores.run(n, algorithm, rate, &case, model(&case, rate).as_mut())
        })
        .unwrap();
}

#[test]
fn fixed_window_matches_the_model_in_both_stores() {
    property(Algorithm::FixedWindow, |_, rate| {
        Box::new(FixedModel {
            limit: rate.limit,
            period_ms: rate.period_ms as u64,
            counts: HashMap::new(),
        })
    });
}

#[test]
fn sliding_window_matches_the_model_in_both_stores() {
    property(Algorithm::SlidingWindow, |_, rate| {
        Box::new(SlidingModel {
            limit: rate.limit,
            period_ms: rate.period_ms as u64,
            counts: HashMap::new(),
        })
    });
}

#[test]
fn token_bucket_matches_the_model_in_both_stores() {
    property(Algorithm::TokenBucket, |case, _| {
        Box::new(BucketModel {
            interval_ms: case.interval_ms,
            burst: case.burst,
            tokens: case.burst as f64,
            at_ms: START_MS,
        })
    });
}

#[test]
fn gcra_matches_the_model_in_both_stores() {
    property(Algorithm::Gcra, |case, _| {
        Box::new(GcraModel {
            interval_ms: case.interval_ms,
            burst: case.burst,
            due_ms: START_MS,
        })
    });
}
