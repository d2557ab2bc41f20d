//! RLQS state in the store: one key per rule and bucket holds the window's
//! used count and each reporting instance's recent demand
//! ([`crate::model::quota::QuotaState`]). [`CounterStore::quota`] folds one
//! report into it atomically (in memory under a lock, in Redis by
//! `redis/scripts/quota.lua`) and returns the instance's share; the
//! resilient store answers by its failure policy when Redis cannot
//! ([`QuotaAnswer`]).
//!
//! [`CounterStore::quota`]: super::CounterStore::quota

use std::collections::HashMap;
use std::sync::Mutex;

use super::FailurePolicy;
use crate::model::quota::{self, QuotaState, Report, Share};

/// One report to fold into a rule's shared state.
#[derive(Clone, Debug, PartialEq)]
pub struct QuotaCall {
    /// The state's key (domain, bucket entries down to the rule, and the
    /// rule's index; see [`super::key::KeySuffix::Quota`]).
    pub key: String,
    /// Who reports: one bucket of one stream.
    pub instance: String,
    /// Requests allowed since the instance's last report.
    pub allowed: u64,
    /// Requests (allowed or denied) per second since its last report.
    pub demand: f64,
    /// Now, in ms since the Unix epoch, by the caller's clock (Redis uses
    /// its own unless a test pins it: see `RedisStore::with_local_time`).
    pub now_ms: f64,
    /// The rule's requests per window.
    pub limit: u64,
    /// The rule's window, in ms.
    pub window_ms: f64,
    /// An instance silent for this long no longer counts, in ms.
    pub stale_ms: f64,
    /// The domain's `on_store_failure`, overriding the configured policy.
    pub on_failure: Option<FailurePolicy>,
    /// What to do with the report.
    pub op: QuotaOp,
}

/// What a [`QuotaCall`] does.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum QuotaOp {
    /// Count the report and return the share ([`quota::report`]).
    #[default]
    Report,
    /// Only read the instance's share ([`quota::peek`]): count nothing,
    /// record no demand.
    Peek,
    /// The instance leaves ([`quota::leave`]); the share returned is 0.
    Leave,
}

impl QuotaCall {
    /// The model's view of the call.
    pub fn report(&self) -> Report<'_> {
        Report {
            instance: &self.instance,
            allowed: self.allowed,
            demand: self.demand,
            now_ms: self.now_ms,
            limit: self.limit,
            window_ms: self.window_ms,
            stale_ms: self.stale_ms,
        }
    }

    /// How long the state must outlive this call, in ms: to the window's
    /// end, and as long as an instance counts.
    pub fn ttl_ms(&self) -> f64 {
        let window = self.window_ms.max(1.0);
        let end = ((self.now_ms / window).floor() + 1.0) * window;
        (end - self.now_ms).max(self.stale_ms).max(1.0)
    }
}

/// What the store answers for a report.
#[derive(Clone, Debug, PartialEq)]
pub enum QuotaAnswer {
    /// The instance's share, from the shared state (or, degraded, from the
    /// fallback's local state).
    Share(Share),
    /// The store is down and the policy is `allow`: admit everything.
    AllowAll,
    /// The store is down and the policy is `deny`: deny everything.
    DenyAll,
}

/// The answer, and whether it came without the real store.
#[derive(Clone, Debug, PartialEq)]
pub struct QuotaApplied {
    /// The answer.
    pub answer: QuotaAnswer,
    /// Decided without the real store (fallback, allow or deny).
    pub degraded: bool,
}

/// The memory store's RLQS states, bounded like its counters.
#[derive(Debug)]
pub struct QuotaTable {
    states: Mutex<HashMap<String, (QuotaState, f64)>>,
    max_entries: usize,
}

impl QuotaTable {
    /// A table of at most `max_entries` states (at least one).
    pub fn new(max_entries: usize) -> Self {
        QuotaTable {
            states: Mutex::new(HashMap::new()),
            max_entries: max_entries.max(1),
        }
    }

    /// Folds `call` into its state and returns the share. A report of a
    /// new key on a full table first drops its ended states, then the one
    /// that ends first (a peek or leave inserts nothing, so drops nothing).
    pub fn report(&self, call: &QuotaCall) -> Share {
        // Every update is one assignment: a poisoned lock is consistent.
        let mut states = self
            .states
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let now = call.now_ms;
        if call.op == QuotaOp::Report
            && !states.contains_key(&call.key)
            && states.len() >= self.max_entries
        {
            states.retain(|_, (_, expires)| *expires > now);
            if states.len() >= self.max_entries {
                let first = states
                    .iter()
                    .min_by(|a, b| a.1.1.total_cmp(&b.1.1))
                    .map(|(k, _)| k.clone());
                if let Some(first) = first {
                    states.remove(&first);
                }
            }
        }
        if call.op == QuotaOp::Leave {
            if let Some((state, _)) = states.get_mut(&call.key) {
                quota::leave(state, &call.instance);
            }
            return Share {
                used: 0,
                rate: 0.0,
                instances: 0,
                window_left_ms: 0.0,
            };
        }
        if call.op == QuotaOp::Peek {
            let state = states.get(&call.key).filter(|(_, expires)| *expires > now);
            return quota::peek(
                &state.map(|s| s.0.clone()).unwrap_or_default(),
                &call.report(),
            );
        }
        let entry = states
            .entry(call.key.clone())
            .or_insert_with(|| (QuotaState::default(), now));
        if entry.1 <= now {
            entry.0 = QuotaState::default();
        }
        let share = quota::report(&mut entry.0, &call.report());
        entry.1 = now + call.ttl_ms();
        share
    }

    /// States held now.
    pub fn len(&self) -> usize {
        self.states
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .len()
    }

    /// True when no state is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(key: &str, instance: &str, now_ms: f64) -> QuotaCall {
        QuotaCall {
            key: key.into(),
            instance: instance.into(),
            allowed: 1,
            demand: 5.0,
            now_ms,
            limit: 60,
            window_ms: 60_000.0,
            stale_ms: 3_000.0,
            on_failure: None,
            op: QuotaOp::Report,
        }
    }

    #[test]
    fn the_table_shares_per_key_and_stays_bounded() {
        let table = QuotaTable::new(2);
        assert_eq!(table.report(&call("k1", "a", 1_000.0)).rate, 1.0);
        assert_eq!(table.report(&call("k1", "b", 1_001.0)).rate, 0.5);
        assert_eq!(table.report(&call("k2", "a", 1_002.0)).rate, 1.0);
        table.report(&call("k3", "a", 1_003.0));
        assert_eq!(table.len(), 2);
    }

    #[test]
    fn a_peek_or_leave_of_a_new_key_drops_no_state() {
        let table = QuotaTable::new(2);
        table.report(&call("k1", "a", 1_000.0));
        table.report(&call("k2", "a", 1_001.0));
        for op in [QuotaOp::Peek, QuotaOp::Leave] {
            table.report(&QuotaCall {
                op,
                ..call("k3", "a", 1_002.0)
            });
        }
        assert_eq!(table.len(), 2);
        assert_eq!(
            table.report(&call("k1", "b", 1_003.0)).rate,
            0.5,
            "k1 still holds a"
        );
    }

    #[test]
    fn an_ended_state_starts_afresh() {
        let table = QuotaTable::new(10);
        table.report(&call("k", "a", 1_000.0));
        // 3 s of silence is past stale_ms, but the window (60 s) holds it.
        let s = table.report(&call("k", "b", 5_000.0));
        assert_eq!((s.used, s.instances), (2, 1));
        // Past the window's end and the stale horizon: a fresh state.
        let s = table.report(&call("k", "b", 70_000.0));
        assert_eq!(s.used, 1);
    }
}
