//! The in-memory counter store: the embedded default when no Redis is
//! configured (one instance, or a laptop), and later the fallback when Redis
//! is down.
//!
//! Counters live in a fixed number of shards, each a `HashMap` behind its own
//! `std::sync::Mutex`: a request locks only the shard of each key it touches,
//! for the few nanoseconds of an add, and never across an `.await`, so a
//! blocking mutex is cheaper than an async one. The store is bounded: expired
//! windows are swept by [`MemoryStore::sweep_expired`] (run periodically by
//! the server), and a full shard evicts the entry whose window ends first
//! among a small sample, so memory stays within `max_entries` under any key
//! flood.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use super::{CounterHit, CounterStore, StoreFuture};
use crate::clock::Clock;

const SHARDS: usize = 64;
/// Entries looked at to choose a victim when a shard is full.
const EVICTION_SAMPLE: usize = 8;

#[derive(Debug)]
struct Counter {
    count: u64,
    /// Unix time at which the counter's window ends.
    expires_at: Duration,
}

type Shard = HashMap<String, Counter>;

/// Sharded in-memory fixed-window counters.
#[derive(Debug)]
pub struct MemoryStore {
    shards: Box<[Mutex<Shard>]>,
    hasher: RandomState,
    per_shard: usize,
    clock: Clock,
    evictions: AtomicU64,
}

impl MemoryStore {
    /// A store holding at most about `max_entries` counters (at least one per shard).
    pub fn new(max_entries: usize, clock: Clock) -> Self {
        MemoryStore {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            hasher: RandomState::new(),
            per_shard: max_entries.div_ceil(SHARDS).max(1),
            clock,
            evictions: AtomicU64::new(0),
        }
    }

    fn shard(&self, key: &str) -> std::sync::MutexGuard<'_, Shard> {
        let index = (self.hasher.hash_one(key) as usize) % SHARDS;
        // A panic while holding a shard lock cannot leave a counter half
        // written (every update is a single assignment), so a poisoned shard
        // is still consistent.
        self.shards[index].lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds one hit, returning the count after it.
    pub fn add(&self, hit: &CounterHit) -> u64 {
        self.add_at(hit, self.clock.now())
    }

    fn add_at(&self, hit: &CounterHit, now: Duration) -> u64 {
        let mut shard = self.shard(&hit.key);
        if let Some(counter) = shard.get_mut(hit.key.as_str()) {
            if counter.expires_at > now {
                counter.count = counter.count.saturating_add(hit.hits);
                return counter.count;
            }
            // The same key in a later window cannot happen (keys carry their
            // window start), but a clock jump backwards could: start over.
            counter.count = hit.hits;
            counter.expires_at = now + hit.reset_after;
            return counter.count;
        }
        if hit.hits == 0 {
            return 0;
        }
        if shard.len() >= self.per_shard {
            self.evict_one(&mut shard, now);
        }
        shard.insert(
            hit.key.clone(),
            Counter {
                count: hit.hits,
                expires_at: now + hit.reset_after,
            },
        );
        hit.hits
    }

    fn evict_one(&self, shard: &mut Shard, now: Duration) {
        let victim = shard
            .iter()
            .take(EVICTION_SAMPLE)
            .min_by_key(|(_, c)| c.expires_at)
            .map(|(k, c)| (k.clone(), c.expires_at <= now));
        if let Some((key, expired)) = victim {
            shard.remove(&key);
            if !expired {
                self.evictions.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Drops every counter whose window has ended; returns how many.
    pub fn sweep_expired(&self) -> usize {
        let now = self.clock.now();
        let mut removed = 0;
        for shard in self.shards.iter() {
            let mut shard = shard.lock().unwrap_or_else(|p| p.into_inner());
            let before = shard.len();
            shard.retain(|_, c| c.expires_at > now);
            removed += before - shard.len();
        }
        removed
    }

    /// Counters held now (live or not yet swept).
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(|p| p.into_inner()).len())
            .sum()
    }

    /// True when no counter is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Live counters dropped because the store was full.
    pub fn evictions(&self) -> u64 {
        self.evictions.load(Ordering::Relaxed)
    }

    /// The most counters the store holds.
    pub fn capacity(&self) -> usize {
        self.per_shard * SHARDS
    }
}

impl CounterStore for MemoryStore {
    fn increment<'a>(&'a self, hits: &'a [CounterHit]) -> StoreFuture<'a, Vec<u64>> {
        let now = self.clock.now();
        let counts = hits.iter().map(|hit| self.add_at(hit, now)).collect();
        Box::pin(std::future::ready(Ok(counts)))
    }

    fn ping(&self) -> StoreFuture<'_, ()> {
        Box::pin(std::future::ready(Ok(())))
    }

    fn kind(&self) -> &'static str {
        "memory"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hit(key: &str, hits: u64, reset_after: u64) -> CounterHit {
        CounterHit {
            key: key.into(),
            hits,
            window: Duration::from_secs(60),
            reset_after: Duration::from_secs(reset_after),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn full_store_stays_within_its_bound() {
        let store = MemoryStore::new(640, Clock::anchored(Duration::from_secs(1_000)));
        for i in 0..10_000 {
            store.add(&hit(&format!("k{i}"), 1, 60));
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
        store.add(&hit("short", 1, 1));
        store.add(&hit("long", 1, 60));
        tokio::time::advance(Duration::from_secs(2)).await;
        assert_eq!(store.sweep_expired(), 1);
        assert_eq!(store.len(), 1);
        assert_eq!(store.add(&hit("long", 0, 60)), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn eviction_prefers_expired_entries() {
        let store = MemoryStore::new(SHARDS, Clock::anchored(Duration::from_secs(1_000)));
        // One entry per shard at most: fill the shard of "a" with an expired
        // entry, then insert a key that lands in the same shard.
        store.add(&hit("a", 1, 1));
        tokio::time::advance(Duration::from_secs(2)).await;
        let same_shard = (0..)
            .map(|i| format!("b{i}"))
            .find(|k| {
                store.hasher.hash_one(k.as_str()) as usize % SHARDS
                    == store.hasher.hash_one("a") as usize % SHARDS
            })
            .unwrap();
        store.add(&hit(&same_shard, 1, 60));
        assert_eq!(
            store.evictions(),
            0,
            "an expired entry is not counted as an eviction"
        );
        assert_eq!(store.len(), 1);
    }
}
