//! The in-memory counter store: the embedded default when no Redis is
//! configured (one instance, or a laptop), and later the fallback when Redis
//! is down.
//!
//! State lives in a fixed number of shards, each a `HashMap` behind its own
//! `std::sync::Mutex`: a request locks only the shard of each key it touches,
//! for the few nanoseconds of an update, and never across an `.await`, so a
//! blocking mutex is cheaper than an async one. Each key holds the state of
//! its algorithm ([`crate::model::algorithm`]) and the time it can be
//! dropped. The store is bounded: ended state is swept by
//! [`MemoryStore::sweep_expired`] (run periodically by
//! [`MemoryStore::sweep_until_drained`]), and a
//! full shard evicts the entry that ends first among a small sample, so
//! memory stays within `max_entries` under any key flood.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;

use super::{
    Applied, CallOptions, CapacityCall, Check, Commit, CounterStore, Limit, MAX_COUNT, StoreFuture,
    WindowCount,
};
use crate::clock::Clock;
use crate::model::algorithm::{self, Bucket, Outcome, Rate, SlidingCounts};
use crate::model::capacity::{self, WindowState};

const SHARDS: usize = 64;
/// Entries looked at to choose a victim when a shard is full.
const EVICTION_SAMPLE: usize = 8;

/// One key's algorithm state.
#[derive(Clone, Debug)]
enum State {
    /// Fixed window: the window's count.
    Count(u64),
    /// Sliding window: counts of the window starting at `start_ms` and of
    /// the one before (boxed: the largest state, and the least used).
    Sliding(Box<(f64, SlidingCounts)>),
    /// Token bucket.
    Bucket(Bucket),
    /// GCRA: the theoretical arrival time.
    Tat(f64),
    /// A capacity rule's window starting at `start_ms`.
    Capacity {
        start_ms: f64,
        window: Box<WindowState>,
    },
}

/// One key's entry. Kept small (`entry_is_small` holds its size): the
/// store holds up to `memory_max_entries` of them, each in a slot of the
/// shard's table beside its key.
#[derive(Debug)]
struct Entry {
    state: State,
    /// Unix time, in nanoseconds (saturated), after which the state is no
    /// longer needed.
    expires_ns: u64,
}

impl Entry {
    fn new(state: State, expires_at: Duration) -> Entry {
        Entry {
            state,
            expires_ns: nanos(expires_at),
        }
    }

    /// Still needed at `now`.
    fn live_at(&self, now: Duration) -> bool {
        self.expires_ns > nanos(now)
    }

    fn expires_at(&self) -> Duration {
        Duration::from_nanos(self.expires_ns)
    }
}

/// `d` in nanoseconds, saturated (`u64` nanoseconds reach the year 2554).
fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// The keys are boxed strings: 16 bytes in the slot, not a `String`'s 24.
type Shard = HashMap<Box<str>, Entry>;

/// Sharded in-memory counters.
#[derive(Debug)]
pub struct MemoryStore {
    shards: Box<[Mutex<Shard>]>,
    hasher: RandomState,
    per_shard: usize,
    clock: Clock,
    evictions: AtomicU64,
    /// RLQS states, apart from the counters.
    quotas: super::quota::QuotaTable,
}

impl MemoryStore {
    /// A store holding at most about `max_entries` keys (at least one per shard).
    pub fn new(max_entries: usize, clock: Clock) -> Self {
        MemoryStore {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            hasher: RandomState::new(),
            per_shard: max_entries.div_ceil(SHARDS).max(1),
            clock,
            evictions: AtomicU64::new(0),
            quotas: super::quota::QuotaTable::new(max_entries),
        }
    }

    fn shard(&self, key: &str) -> std::sync::MutexGuard<'_, Shard> {
        let index = self.shard_index(key);
        // A panic while holding a shard lock cannot leave an entry half
        // written (every update is a single assignment), so a poisoned shard
        // is still consistent.
        self.shards[index].lock().unwrap_or_else(|p| p.into_inner())
    }

    fn shard_index(&self, key: &str) -> usize {
        (self.hasher.hash_one(key) as usize) % SHARDS
    }

    /// Evaluates one check at `now` against a locked shard; with `take`,
    /// stores the new state.
    fn evaluate(&self, shard: &mut Shard, check: &Check, now: Duration, take: bool) -> Outcome {
        let now_ms = now.as_secs_f64() * 1_000.0;
        // One lookup: the entry read is the one written.
        let existing = shard.get_mut(check.key.as_str());
        let current = existing
            .as_deref()
            .filter(|e| e.live_at(now))
            .map(|e| &e.state);
        let hits = check.hits;
        let (outcome, next, ttl) = match &check.limit {
            Limit::FixedWindow {
                limit, reset_after, ..
            } => fixed_window(current, hits, *limit, *reset_after),
            Limit::SlidingWindow(rate) => sliding_window(current, hits, *rate, now_ms),
            Limit::TokenBucket(rate) => token_bucket(current, hits, *rate, now_ms),
            Limit::Gcra(rate) => gcra(current, hits, *rate, now_ms),
            Limit::Capacity(call) => {
                return self.evaluate_capacity(shard, check, call, now, take);
            }
        };
        if let (true, Some(state)) = (take, next) {
            let entry = Entry::new(state, now.saturating_add(ttl));
            match existing {
                Some(existing) => *existing = entry,
                None => self.insert(shard, &check.key, entry, now),
            }
        }
        outcome
    }

    /// Puts `state` under `key`, evicting another key if the shard is full.
    fn store(
        &self,
        shard: &mut Shard,
        key: &str,
        state: State,
        expires_at: Duration,
        now: Duration,
    ) {
        let entry = Entry::new(state, expires_at);
        match shard.get_mut(key) {
            Some(existing) => *existing = entry,
            None => self.insert(shard, key, entry, now),
        }
    }

    /// Adds `key`, not in the shard, evicting another key if it is full.
    fn insert(&self, shard: &mut Shard, key: &str, entry: Entry, now: Duration) {
        if shard.len() >= self.per_shard {
            self.evict_one(shard, now);
        }
        shard.insert(key.into(), entry);
    }

    /// A capacity check ([`capacity::decide`]) over the rule's window,
    /// updated in place when `take`.
    fn evaluate_capacity(
        &self,
        shard: &mut Shard,
        check: &Check,
        call: &CapacityCall,
        now: Duration,
        take: bool,
    ) -> Outcome {
        // A check of 0 hits (a peek) writes nothing, as in the script.
        let take = take && check.hits > 0;
        let period = call.period_ms();
        let now_ms = now.as_secs_f64() * 1_000.0;
        let start_ms = (now_ms / period).floor() * period;
        let reset_after = Duration::try_from_secs_f64((start_ms + period - now_ms) / 1_000.0)
            .unwrap_or(Duration::MAX);
        // The key lives until the end of the window after the one it holds.
        let expires_after = |window_ms: f64| {
            Duration::try_from_secs_f64((window_ms + 2.0 * period) / 1_000.0)
                .unwrap_or(Duration::MAX)
        };
        let (decided, held) = self.decide_in_window(shard, check, call, (now, start_ms), take);
        let expires_at = expires_after(held);
        if take && let Some(entry) = shard.get_mut(check.key.as_str()) {
            entry.expires_ns = nanos(expires_at);
        }
        Outcome {
            allowed: decided.verdict.admitted(),
            remaining: decided.remaining,
            reset_after,
            capacity: Some(decided),
        }
    }

    /// Decides a capacity check in the rule's window starting at
    /// `start_ms`: in the stored window (rolled over first if it has ended:
    /// in place when `take`, on a copy otherwise), or in a new one (stored
    /// when `take`). Returns the decision and the start of the window the
    /// key holds afterwards.
    fn decide_in_window(
        &self,
        shard: &mut Shard,
        check: &Check,
        call: &CapacityCall,
        (now, start_ms): (Duration, f64),
        take: bool,
    ) -> (capacity::Decided, f64) {
        let period = call.period_ms();
        let now_ms = now.as_secs_f64() * 1_000.0;
        // `elapsed`: how far into the window held at `window_ms` (0 to 1).
        let decide = |window: &mut WindowState, window_ms: f64, take: bool| {
            let (rule, elapsed) = (&call.rule.limits, (now_ms - window_ms) / period);
            let (client, weight, class) = (&call.client, call.weight, call.class);
            capacity::decide(
                rule, window, client, weight, class, check.hits, elapsed, take,
            )
        };
        let live = shard
            .get_mut(check.key.as_str())
            .filter(|e| e.live_at(now))
            .and_then(|e| match &mut e.state {
                State::Capacity { start_ms, window } => Some((start_ms, window)),
                _ => None,
            });
        match live {
            // This window (or, with a clock that stepped back, a later one).
            Some((stored, window)) if *stored >= start_ms => {
                (decide(window, *stored, take), *stored)
            }
            Some((stored, window)) if take => {
                window.roll(&call.rule.limits, *stored + period == start_ms);
                *stored = start_ms;
                (decide(window, start_ms, true), start_ms)
            }
            Some((stored, window)) => {
                let mut next = (**window).clone();
                next.roll(&call.rule.limits, *stored + period == start_ms);
                (decide(&mut next, start_ms, false), start_ms)
            }
            None => {
                let mut window = WindowState::default();
                let decided = decide(&mut window, start_ms, take);
                if take {
                    let state = State::Capacity {
                        start_ms,
                        window: Box::new(window),
                    };
                    let expires_at =
                        Duration::try_from_secs_f64((start_ms + 2.0 * period) / 1_000.0)
                            .unwrap_or(Duration::MAX);
                    self.store(shard, &check.key, state, expires_at, now);
                }
                (decided, start_ms)
            }
        }
    }

    /// Applies one check now (for tests and tools; requests use [`CounterStore::apply`]).
    pub fn apply_one(&self, check: &Check) -> Outcome {
        let mut shard = self.shard(&check.key);
        self.evaluate(&mut shard, check, self.clock.now(), true)
    }

    /// All or nothing (see [`Commit::AllOrNothing`]): every shard the checks
    /// touch is locked, in index order (so concurrent calls cannot deadlock),
    /// for the dry run and the commit together.
    fn all_or_nothing(&self, checks: &[Check], now: Duration) -> Vec<Outcome> {
        let mut indices: Vec<usize> = checks.iter().map(|c| self.shard_index(&c.key)).collect();
        indices.sort_unstable();
        indices.dedup();
        let mut guards: Vec<_> = indices
            .iter()
            .map(|&i| self.shards[i].lock().unwrap_or_else(|p| p.into_inner()))
            .collect();
        // Every check's shard is in `indices`, so the search always succeeds.
        let at = |check: &Check| {
            indices
                .binary_search(&self.shard_index(&check.key))
                .unwrap_or_default()
        };
        let dry: Vec<bool> = checks
            .iter()
            .map(|c| self.evaluate(&mut guards[at(c)], c, now, false).allowed)
            .collect();
        let all = dry
            .iter()
            .zip(checks)
            .all(|(allowed, c)| *allowed || !c.veto);
        checks
            .iter()
            .zip(dry)
            .map(|(c, allowed)| {
                if all || !allowed {
                    self.evaluate(&mut guards[at(c)], c, now, true)
                } else {
                    // Within its limit but not taken: its state without these hits.
                    let peek = Check {
                        hits: 0,
                        ..c.clone()
                    };
                    Outcome {
                        allowed: true,
                        ..self.evaluate(&mut guards[at(c)], &peek, now, false)
                    }
                }
            })
            .collect()
    }

    fn evict_one(&self, shard: &mut Shard, now: Duration) {
        let victim = shard
            .iter()
            .take(EVICTION_SAMPLE)
            .min_by_key(|(_, e)| e.expires_ns)
            .map(|(k, e)| (k.clone(), !e.live_at(now)));
        if let Some((key, expired)) = victim {
            shard.remove(&key);
            if !expired {
                self.evictions.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Drops every entry whose state has ended; returns how many.
    pub fn sweep_expired(&self) -> usize {
        let now = self.clock.now();
        let mut removed = 0;
        for shard in self.shards.iter() {
            let mut shard = shard.lock().unwrap_or_else(|p| p.into_inner());
            let before = shard.len();
            shard.retain(|_, e| e.live_at(now));
            removed += before - shard.len();
        }
        removed
    }

    /// Removes every fixed-window counter whose window is still open and
    /// returns it as (key, count, time left in the window); drops the rest.
    /// Used to hand counts taken during an outage back to Redis.
    pub fn take_windows(&self) -> Vec<WindowCount> {
        let now = self.clock.now();
        let mut taken = Vec::new();
        for shard in self.shards.iter() {
            let mut shard = shard.lock().unwrap_or_else(|p| p.into_inner());
            for (key, entry) in shard.drain() {
                if let State::Count(count) = entry.state
                    && count > 0
                    && entry.live_at(now)
                {
                    taken.push(WindowCount {
                        key: key.into_string(),
                        hits: count,
                        reset_after: entry.expires_at() - now,
                    });
                }
            }
        }
        taken
    }

    /// Entries held now (live or not yet swept).
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(|p| p.into_inner()).len())
            .sum()
    }

    /// True when no entry is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Live entries dropped because the store was full.
    pub fn evictions(&self) -> u64 {
        self.evictions.load(Ordering::Relaxed)
    }

    /// The most entries the store holds.
    pub fn capacity(&self) -> usize {
        self.per_shard * SHARDS
    }

    /// The sweeper, a background task of [`crate::run`]: drops ended state
    /// every `every` until `drain` turns true. Warns (at most once per
    /// sweep) when a full store had to evict live counters, since every
    /// eviction resets a client's count.
    pub async fn sweep_until_drained(
        self: Arc<Self>,
        every: Duration,
        mut drain: watch::Receiver<bool>,
    ) {
        let mut ticker = tokio::time::interval(every);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut evictions = self.evictions();
        loop {
            tokio::select! {
                _ = ticker.tick() => {
                    let removed = self.sweep_expired();
                    tracing::debug!(removed, held = self.len(), "memory store swept");
                    let now = self.evictions();
                    if now > evictions {
                        tracing::warn!(
                            evicted = now - evictions,
                            capacity = self.capacity(),
                            "memory store full: live counters were evicted (raise memory_max_entries)"
                        );
                    }
                    evictions = now;
                }
                _ = drain.wait_for(|d| *d) => return,
            }
        }
    }
}

/// What one algorithm decided over a key's state: the outcome, the state
/// to store (when it changes) and how long the state matters.
type Evaluated = (Outcome, Option<State>, Duration);

/// Fixed window: the window's count after the hits; rejected hits count too.
fn fixed_window(
    current: Option<&State>,
    hits: u64,
    limit: u64,
    reset_after: Duration,
) -> Evaluated {
    let count = match current {
        Some(State::Count(c)) => *c,
        _ => 0,
    }
    .saturating_add(hits)
    .min(MAX_COUNT);
    let outcome = algorithm::fixed_window(count, limit, reset_after);
    (
        outcome,
        (hits > 0).then_some(State::Count(count)),
        reset_after,
    )
}

/// Sliding window: the stored window rolls over when `now` is in the next one.
fn sliding_window(current: Option<&State>, hits: u64, rate: Rate, now_ms: f64) -> Evaluated {
    let period = rate.period_ms;
    let start_ms = (now_ms / period).floor() * period;
    let counts = match current {
        Some(State::Sliding(stored)) if stored.0 == start_ms => stored.1,
        Some(State::Sliding(stored)) if stored.0 + period == start_ms => SlidingCounts {
            previous: stored.1.current,
            current: 0,
        },
        _ => SlidingCounts::default(),
    };
    let (outcome, count) = algorithm::sliding_window(counts, rate, now_ms, hits);
    let next = State::Sliding(Box::new((
        start_ms,
        SlidingCounts {
            current: count,
            ..counts
        },
    )));
    // The current window's count matters until the end of the next one.
    let ttl = Duration::try_from_secs_f64((start_ms + 2.0 * period - now_ms) / 1_000.0)
        .unwrap_or(Duration::MAX);
    (outcome, Some(next), ttl)
}

/// Token bucket: only hits taken change the bucket.
fn token_bucket(current: Option<&State>, hits: u64, rate: Rate, now_ms: f64) -> Evaluated {
    let bucket = match current {
        Some(State::Bucket(b)) => Some(*b),
        _ => None,
    };
    let (outcome, next) = algorithm::token_bucket(bucket, rate, now_ms, hits);
    let ttl = algorithm::token_bucket_ttl(next, rate, now_ms);
    let changed = outcome.allowed && hits > 0;
    (outcome, changed.then_some(State::Bucket(next)), ttl)
}

/// GCRA: only hits taken move the TAT.
fn gcra(current: Option<&State>, hits: u64, rate: Rate, now_ms: f64) -> Evaluated {
    let tat = match current {
        Some(State::Tat(t)) => Some(*t),
        _ => None,
    };
    let (outcome, next) = algorithm::gcra(tat, rate, now_ms, hits);
    let ttl = Duration::try_from_secs_f64(((next - now_ms) / 1_000.0).max(0.001))
        .unwrap_or(Duration::MAX);
    let changed = outcome.allowed && hits > 0;
    (outcome, changed.then_some(State::Tat(next)), ttl)
}

impl CounterStore for MemoryStore {
    /// Applies the checks now; there is no failure policy to override.
    fn apply<'a>(&'a self, checks: &'a [Check], options: CallOptions) -> StoreFuture<'a, Applied> {
        let now = self.clock.now();
        let outcomes = match options.commit {
            Commit::Each => checks
                .iter()
                .map(|check| self.evaluate(&mut self.shard(&check.key), check, now, true))
                .collect(),
            Commit::AllOrNothing => self.all_or_nothing(checks, now),
        };
        Box::pin(std::future::ready(Ok(Applied {
            outcomes,
            ..Applied::default()
        })))
    }

    fn add<'a>(&'a self, counts: &'a [WindowCount]) -> StoreFuture<'a, ()> {
        let now = self.clock.now();
        for count in counts {
            let mut shard = self.shard(&count.key);
            let live = shard
                .get(count.key.as_str())
                .filter(|e| e.live_at(now))
                .map(|e| &e.state);
            let (_, state, ttl) = fixed_window(live, count.hits, u64::MAX, count.reset_after);
            if let Some(state) = state {
                self.store(&mut shard, &count.key, state, now.saturating_add(ttl), now);
            }
        }
        Box::pin(std::future::ready(Ok(())))
    }

    fn reset<'a>(&'a self, keys: &'a [String]) -> StoreFuture<'a, u64> {
        let removed = keys
            .iter()
            .filter(|key| self.shard(key).remove(key.as_str()).is_some())
            .count() as u64;
        Box::pin(async move { Ok(removed) })
    }

    fn ping(&self) -> StoreFuture<'_, ()> {
        Box::pin(std::future::ready(Ok(())))
    }

    fn kind(&self) -> &'static str {
        "memory"
    }

    fn quota<'a>(
        &'a self,
        call: &'a super::quota::QuotaCall,
    ) -> StoreFuture<'a, super::quota::QuotaApplied> {
        let share = self.quotas.report(call);
        Box::pin(std::future::ready(Ok(super::quota::QuotaApplied {
            answer: super::quota::QuotaAnswer::Share(share),
            degraded: false,
        })))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_is_small() {
        // A table slot holds the key and its entry; the table keeps up to
        // twice as many slots as entries, and the key's text is on the heap.
        let slot = std::mem::size_of::<(Box<str>, Entry)>();
        println!(
            "slot {slot} bytes: key {}, entry {} (state {})",
            std::mem::size_of::<Box<str>>(),
            std::mem::size_of::<Entry>(),
            std::mem::size_of::<State>()
        );
        assert!(slot <= 48, "a slot is {slot} bytes");
    }

    fn fixed(key: &str, hits: u64, reset_after: u64) -> Check {
        Check {
            key: key.into(),
            hits,
            limit: Limit::FixedWindow {
                limit: 100,
                period_ms: 60_000.0,
                reset_after: Duration::from_secs(reset_after),
            },
            veto: true,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn full_store_stays_within_its_bound() {
        let store = MemoryStore::new(640, Clock::anchored(Duration::from_secs(1_000)));
        for i in 0..10_000 {
            store.apply_one(&fixed(&format!("k{i}"), 1, 60));
        }
        assert!(
            store.len() <= store.capacity(),
            "{} > {}",
            store.len(),
            store.capacity()
        );
        assert_eq!(store.capacity(), 640);
        assert!(store.evictions() > 9_000);
    }

    #[tokio::test(start_paused = true)]
    async fn sweep_drops_only_ended_windows() {
        let store = MemoryStore::new(1_000, Clock::anchored(Duration::from_secs(1_000)));
        store.apply_one(&fixed("short", 1, 1));
        store.apply_one(&fixed("long", 1, 60));
        tokio::time::advance(Duration::from_secs(2)).await;
        assert_eq!(store.sweep_expired(), 1);
        assert_eq!(store.len(), 1);
        assert_eq!(store.apply_one(&fixed("long", 0, 60)).remaining, 99);
    }

    #[tokio::test(start_paused = true)]
    async fn eviction_prefers_expired_entries() {
        let store = MemoryStore::new(SHARDS, Clock::anchored(Duration::from_secs(1_000)));
        // One entry per shard at most: fill the shard of "a" with an expired
        // entry, then insert a key that lands in the same shard.
        store.apply_one(&fixed("a", 1, 1));
        tokio::time::advance(Duration::from_secs(2)).await;
        let same_shard = (0..)
            .map(|i| format!("b{i}"))
            .find(|k| {
                store.hasher.hash_one(k.as_str()) as usize % SHARDS
                    == store.hasher.hash_one("a") as usize % SHARDS
            })
            .unwrap();
        store.apply_one(&fixed(&same_shard, 1, 60));
        assert_eq!(
            store.evictions(),
            0,
            "an expired entry is not counted as an eviction"
        );
        assert_eq!(store.len(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn rejected_bucket_hits_leave_no_state_behind() {
        let store = MemoryStore::new(100, Clock::anchored(Duration::from_secs(1_000)));
        let check = Check {
            limit: Limit::TokenBucket(Rate {
                limit: 1,
                period_ms: 60_000.0,
                burst: 1,
            }),
            ..fixed("tb", 2, 0)
        };
        assert!(
            !store.apply_one(&check).allowed,
            "2 hits never fit a bucket of 1"
        );
        assert!(store.is_empty());
    }
}
