//! The over-limit memo: when the service answers OVER_LIMIT for a descriptor
//! and says when its window resets, the client answers that descriptor
//! itself until then, so a hot abusive key stops costing a network call (and
//! the service a decision) per request.
//!
//! Sits first on the client's path: a request with any memoized descriptor
//! (other than a zero-hit check) is answered OVER_LIMIT without a call. The
//! other descriptors of such a request are not counted: the request would
//! have been rejected anyway. Bounded: past `max_entries`, ended entries are
//! dropped, then the one that ends first.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// Entries looked at to choose a victim when the memo is full.
const EVICTION_SAMPLE: usize = 8;

#[derive(Clone, Copy, Debug)]
pub(crate) struct Memoized {
    pub(crate) until: Instant,
    pub(crate) limit: Option<u32>,
}

#[derive(Debug)]
pub(crate) struct OverLimitMemo {
    max_entries: usize,
    map: Mutex<HashMap<String, Memoized>>,
}

impl OverLimitMemo {
    pub(crate) fn new(max_entries: usize) -> Self {
        OverLimitMemo {
            max_entries: max_entries.max(1),
            map: Mutex::new(HashMap::new()),
        }
    }

    /// The memo entry for `key`, if it has not ended.
    pub(crate) fn get(&self, key: &str, now: Instant) -> Option<Memoized> {
        // Single inserts and removals only: a poisoned map is consistent.
        let map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        map.get(key).filter(|m| m.until > now).copied()
    }

    /// Remembers that `key` is over its limit for `reset_after` from `now`.
    pub(crate) fn insert(
        &self,
        key: String,
        now: Instant,
        reset_after: Duration,
        limit: Option<u32>,
    ) {
        if reset_after.is_zero() {
            return;
        }
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() >= self.max_entries && !map.contains_key(&key) {
            map.retain(|_, m| m.until > now);
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
        map.insert(
            key,
            Memoized {
                until: now + reset_after,
                limit,
            },
        );
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.map.lock().map(|m| m.len()).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn answers_until_the_reset_then_forgets() {
        let memo = OverLimitMemo::new(10);
        let now = Instant::now();
        memo.insert("k".into(), now, Duration::from_secs(5), Some(3));
        let m = memo.get("k", now).unwrap();
        assert_eq!((m.until - now, m.limit), (Duration::from_secs(5), Some(3)));
        assert!(memo.get("other", now).is_none());
        tokio::time::advance(Duration::from_millis(4_999)).await;
        assert!(memo.get("k", Instant::now()).is_some());
        tokio::time::advance(Duration::from_millis(1)).await;
        assert!(memo.get("k", Instant::now()).is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn a_zero_reset_is_not_memoized() {
        let memo = OverLimitMemo::new(10);
        memo.insert("k".into(), Instant::now(), Duration::ZERO, None);
        assert_eq!(memo.len(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn stays_within_its_bound() {
        let memo = OverLimitMemo::new(4);
        let now = Instant::now();
        for i in 0..100u64 {
            memo.insert(format!("k{i}"), now, Duration::from_secs(1 + i), None);
            assert!(memo.len() <= 4);
        }
        // The newest entry is always kept.
        assert!(memo.get("k99", now).is_some());
        // Ended entries make room first.
        tokio::time::advance(Duration::from_secs(1_000)).await;
        memo.insert("fresh".into(), Instant::now(), Duration::from_secs(1), None);
        assert_eq!(memo.len(), 1);
    }
}
