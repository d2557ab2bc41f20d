//! The local over-limit cache (the reference's `LOCAL_CACHE_SIZE_IN_BYTES`):
//! fixed-window keys known to be over their limit, until their window ends.
//! A hit on one is answered OVER_LIMIT here, without a Redis round trip, so
//! an abusive client hammering one key costs Redis one call per window per
//! server instance instead of one per request.
//!
//! Only fixed windows are cached: their key carries the window, so "over
//! until the window ends" is exact. (A sliding window or bucket may allow
//! again earlier, as hits age out or tokens refill.)
//!
//! Bounded: 64 shards, each with an equal share of `max_entries`. A full
//! shard first drops its ended entries; if still full, the new key is not
//! cached (that key keeps going to Redis, which stays correct).

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

const SHARDS: usize = 64;

/// One shard: key → (end of its window, the limit it was over).
type Shard = HashMap<String, (Instant, u64)>;

/// Keys over their limit: when their window ends, and the limit they were
/// over (a call with a higher limit for the same key, such as a request's
/// own `limit` override, is not answered from the cache).
#[derive(Debug)]
pub struct OverLimitCache {
    shards: Box<[Mutex<Shard>]>,
    per_shard: usize,
    hasher: RandomState,
    /// When this cache was made, and the last reset after it (ns): a call
    /// that started before a reset must not put back what it removed.
    epoch: Instant,
    last_reset: AtomicU64,
}

impl OverLimitCache {
    /// A cache of at most `max_entries` keys.
    pub fn new(max_entries: usize) -> Self {
        OverLimitCache {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            per_shard: max_entries.div_ceil(SHARDS).max(1),
            hasher: RandomState::new(),
            epoch: Instant::now(),
            last_reset: AtomicU64::new(0),
        }
    }

    fn shard(&self, key: &str) -> std::sync::MutexGuard<'_, Shard> {
        let i = (self.hasher.hash_one(key) as usize) % SHARDS;
        self.shards[i]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Time left in the window if `key` is known to be over `limit`.
    pub fn over(&self, key: &str, limit: u64) -> Option<Duration> {
        let now = Instant::now();
        let mut shard = self.shard(key);
        match shard.get(key) {
            Some(&(until, over)) if until > now => (limit <= over).then(|| until - now),
            Some(_) => {
                shard.remove(key);
                None
            }
            None => None,
        }
    }

    /// Records that `key` is over `limit` for `left`, as learnt by a call
    /// that started at `started`: ignored if a reset came since.
    pub fn insert(&self, key: &str, limit: u64, left: Duration, started: Instant) {
        let since = u64::try_from(started.saturating_duration_since(self.epoch).as_nanos())
            .unwrap_or(u64::MAX);
        if left.is_zero() || since < self.last_reset.load(Ordering::SeqCst) {
            return;
        }
        let now = Instant::now();
        let mut shard = self.shard(key);
        if shard.len() >= self.per_shard && !shard.contains_key(key) {
            shard.retain(|_, (until, _)| *until > now);
            if shard.len() >= self.per_shard {
                return;
            }
        }
        shard.insert(key.to_owned(), (now + left, limit));
    }

    /// Forgets `key` (its counter was reset), and keeps calls already in
    /// flight from caching it again.
    pub fn remove(&self, key: &str) {
        let now = u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.last_reset
            .fetch_max(now.saturating_add(1), Ordering::SeqCst);
        self.shard(key).remove(key);
    }

    /// Keys held (live or not yet dropped).
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(PoisonError::into_inner).len())
            .sum()
    }

    /// True when no key is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_key_is_over_until_its_window_ends() {
        let cache = OverLimitCache::new(100);
        assert_eq!(cache.over("k", 5), None);
        cache.insert("k", 5, Duration::from_secs(10), Instant::now());
        assert_eq!(cache.over("k", 6), None, "a higher limit is not over");
        assert_eq!(cache.over("k", 5), Some(Duration::from_secs(10)));
        tokio::time::advance(Duration::from_secs(4)).await;
        assert_eq!(cache.over("k", 5), Some(Duration::from_secs(6)));
        tokio::time::advance(Duration::from_secs(6)).await;
        assert_eq!(cache.over("k", 5), None);
        assert!(cache.is_empty(), "an ended entry is dropped when seen");
    }

    #[tokio::test(start_paused = true)]
    async fn it_is_bounded_and_makes_room_from_ended_entries() {
        let cache = OverLimitCache::new(SHARDS); // one key per shard
        for i in 0..1_000 {
            cache.insert(&format!("k{i}"), 5, Duration::from_secs(1), Instant::now());
        }
        assert!(cache.len() <= SHARDS, "{}", cache.len());
        tokio::time::advance(Duration::from_secs(2)).await;
        cache.insert("fresh", 5, Duration::from_secs(1), Instant::now());
        assert!(cache.over("fresh", 5).is_some(), "ended entries make room");
    }

    #[tokio::test(start_paused = true)]
    async fn a_call_in_flight_during_a_reset_does_not_cache_again() {
        let cache = OverLimitCache::new(100);
        let started = Instant::now();
        tokio::time::advance(Duration::from_millis(5)).await;
        cache.remove("k");
        // The call started before the reset learnt "over": not cached.
        cache.insert("k", 5, Duration::from_secs(10), started);
        assert_eq!(cache.over("k", 5), None);
        // A call that starts after the reset caches again.
        tokio::time::advance(Duration::from_millis(1)).await;
        cache.insert("k", 5, Duration::from_secs(10), Instant::now());
        assert!(cache.over("k", 5).is_some());
    }
}
