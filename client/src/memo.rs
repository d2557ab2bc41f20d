//! The over-limit memo: when the service answers OVER_LIMIT for a descriptor
//! and says when its window resets, the client answers that descriptor
//! itself until then, so a hot abusive key stops costing a network call (and
//! the service a decision) per request.
//!
//! Only an exhausted descriptor is memoized (OVER_LIMIT with nothing
//! remaining), with the hits it was refused: until the reset, a request
//! asking as many hits or more is refused too, whatever the algorithm (a
//! token bucket's reset is when those hits fit again). A memo lasts at most
//! [`MAX_MEMO`], whatever a service says.
//!
//! Sits first on the client's path: a request with any memoized descriptor
//! (other than a zero-hit check) is answered OVER_LIMIT without a call. The
//! other descriptors of such a request are not counted: the request would
//! have been rejected anyway. Bounded: past `max_entries`, ended entries are
//! dropped (looked for at most once a second), else the one that ends first
//! among a sample of 8.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// Entries looked at to choose a victim when the memo is full.
const EVICTION_SAMPLE: usize = 8;
/// The longest a memo entry lasts.
pub const MAX_MEMO: Duration = Duration::from_secs(3_600);
/// Ended entries are looked for at most this often when the memo is full.
const SWEEP_EVERY: Duration = Duration::from_secs(1);

#[derive(Clone, Copy, Debug)]
pub(crate) struct Memoized {
    pub(crate) until: Instant,
    pub(crate) limit: Option<u32>,
    /// The hits that were refused: fewer may still fit before the reset.
    pub(crate) hits: u64,
}

type Map = HashMap<String, Memoized>;

#[derive(Debug)]
pub(crate) struct OverLimitMemo {
    max_entries: usize,
    /// The entries, and when ended ones were last swept.
    map: Mutex<(Map, Option<Instant>)>,
}

impl OverLimitMemo {
    pub(crate) fn new(max_entries: usize) -> Self {
        OverLimitMemo {
            max_entries: max_entries.max(1),
            map: Mutex::new((HashMap::new(), None)),
        }
    }

    /// The memo entry refusing `hits` for `key`, if it has not ended.
    pub(crate) fn get(&self, key: &str, hits: u64, now: Instant) -> Option<Memoized> {
        // Single inserts and removals only: a poisoned map is consistent.
        let guard = self.map.lock().unwrap_or_else(|p| p.into_inner());
        guard
            .0
            .get(key)
            .filter(|m| m.until > now && hits >= m.hits)
            .copied()
    }

    /// Remembers that `key` refused `hits` for `reset_after` from `now`.
    pub(crate) fn insert(
        &self,
        key: String,
        now: Instant,
        reset_after: Duration,
        limit: Option<u32>,
        hits: u64,
    ) {
        if reset_after.is_zero() {
            return;
        }
        let Some(until) = now.checked_add(reset_after.min(MAX_MEMO)) else {
            return;
        };
        let mut guard = self.map.lock().unwrap_or_else(|p| p.into_inner());
        let (map, last_sweep) = &mut *guard;
        if map.len() >= self.max_entries && !map.contains_key(&key) {
            if last_sweep.is_none_or(|at| now.saturating_duration_since(at) >= SWEEP_EVERY) {
                *last_sweep = Some(now);
                map.retain(|_, m| m.until > now);
            }
            if map.len() >= self.max_entries {
                let victim = map
                    .iter()
                    .take(EVICTION_SAMPLE)
                    .min_by_key(|(_, m)| m.until)
                    .map(|(k, _)| k.clone());
                if let Some(victim) = victim {
                    map.remove(&victim);
                }
            }
        }
        map.insert(key, Memoized { until, limit, hits });
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.map.lock().map(|m| m.0.len()).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn insert(memo: &OverLimitMemo, key: &str, now: Instant, reset: Duration, hits: u64) {
        memo.insert(key.into(), now, reset, Some(3), hits);
    }

    #[tokio::test(start_paused = true)]
    async fn answers_until_the_reset_then_forgets() {
        let memo = OverLimitMemo::new(10);
        let now = Instant::now();
        insert(&memo, "k", now, Duration::from_secs(5), 1);
        let m = memo.get("k", 1, now).unwrap();
        assert_eq!((m.until - now, m.limit), (Duration::from_secs(5), Some(3)));
        assert!(memo.get("other", 1, now).is_none());
        tokio::time::advance(Duration::from_millis(4_999)).await;
        assert!(memo.get("k", 1, Instant::now()).is_some());
        tokio::time::advance(Duration::from_millis(1)).await;
        assert!(memo.get("k", 1, Instant::now()).is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn fewer_hits_than_were_refused_still_ask_the_service() {
        let memo = OverLimitMemo::new(10);
        let now = Instant::now();
        insert(&memo, "k", now, Duration::from_secs(5), 3);
        assert!(memo.get("k", 2, now).is_none());
        assert!(memo.get("k", 3, now).is_some());
        assert!(memo.get("k", 10, now).is_some());
    }

    #[tokio::test(start_paused = true)]
    async fn a_zero_or_absurd_reset_is_bounded() {
        let memo = OverLimitMemo::new(10);
        let now = Instant::now();
        insert(&memo, "zero", now, Duration::ZERO, 1);
        assert_eq!(memo.len(), 0);
        // A reset no clock can add: capped, never a panic.
        insert(&memo, "huge", now, Duration::MAX, 1);
        assert_eq!(memo.get("huge", 1, now).unwrap().until - now, MAX_MEMO);
    }

    #[tokio::test(start_paused = true)]
    async fn stays_within_its_bound() {
        let memo = OverLimitMemo::new(4);
        let now = Instant::now();
        for i in 0..100u64 {
            insert(&memo, &format!("k{i}"), now, Duration::from_secs(1 + i), 1);
            assert!(memo.len() <= 4);
        }
        // The newest entry is always kept.
        assert!(memo.get("k99", 1, now).is_some());
        // Ended entries make room first.
        tokio::time::advance(Duration::from_secs(1_000)).await;
        insert(&memo, "fresh", Instant::now(), Duration::from_secs(1), 1);
        assert_eq!(memo.len(), 1);
    }
}
