//! The arithmetic of RLQS assignments (`crate::rlqs`): how a rule's limit is
//! split among the Envoy instances that report one bucket, and what each
//! one is told to enforce locally.
//!
//! A rule allows `limit` requests per window of `window_ms`. Its shared
//! state ([`QuotaState`], one per rule and bucket, in the store) holds the
//! requests the instances reported allowed in the current epoch-aligned
//! window (`used`) and each instance's recent demand (requests per second,
//! allowed or denied) with the time it last reported. [`report`] folds one
//! instance's report into it and returns the instance's [`Share`]:
//!
//! - the rule's rate `limit / window` is split among the live instances by
//!   demand, with borrowing ([`split`]): an instance that asks less than an
//!   equal part gets what it asks, and what it leaves goes to the others;
//!   if all together ask less than the rate, the rest is split equally, so
//!   that every instance has headroom to grow;
//! - an instance that has not reported for `stale_ms` no longer counts.
//!
//! [`assign`] turns a share into what Envoy enforces: a token bucket
//! refilled at the share's rate, holding what the share earns in one
//! reporting interval ([`TokenBucket`]), or, once `used` reaches `limit`,
//! deny-all until the window ends. `store/redis/scripts/quota.lua` does the
//! same arithmetic in the same order as [`report`], so that several
//! Floodgate instances on one Redis agree.

use std::collections::BTreeMap;

use super::MAX_COUNT;

/// The most instances one rule's bucket tracks: past it, the instance that
/// reported longest ago is dropped (so a flood of short streams cannot grow
/// the state without bound).
pub const MAX_INSTANCES: usize = 256;

/// The fill interval of every token bucket assignment, in seconds. One
/// fixed interval, so that two assignments differ in `tokens_per_fill`
/// whenever their rates differ: Envoy compares a new token bucket with the
/// one it has by `max_tokens`, `tokens_per_fill` and only the nanoseconds of
/// `fill_interval`, so a change in whole seconds alone would go unnoticed.
pub const FILL_INTERVAL_SECS: u32 = 60;

/// One rule's shared state for one bucket.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct QuotaState {
    /// Start of the window `used` counts, in ms since the Unix epoch.
    pub window_start_ms: f64,
    /// Requests reported allowed in that window, by every instance.
    pub used: u64,
    /// Each instance: (recent demand in requests per second, time of its
    /// last report in ms).
    pub instances: BTreeMap<String, (f64, f64)>,
}

/// One instance's report, with what the rule says.
#[derive(Clone, Debug, PartialEq)]
pub struct Report<'a> {
    /// Who reports (one bucket of one stream).
    pub instance: &'a str,
    /// Requests it allowed since its last report.
    pub allowed: u64,
    /// Its demand: requests (allowed or denied) per second since its last
    /// report.
    pub demand: f64,
    /// Now, in ms since the Unix epoch.
    pub now_ms: f64,
    /// The rule's requests per window.
    pub limit: u64,
    /// The rule's window, in ms.
    pub window_ms: f64,
    /// An instance silent for this long no longer counts, in ms.
    pub stale_ms: f64,
}

/// What [`report`] returns to the reporting instance.
#[derive(Clone, Debug, PartialEq)]
pub struct Share {
    /// Requests reported allowed in the current window, by every instance.
    pub used: u64,
    /// This instance's part of the rule's rate, in requests per second.
    pub rate: f64,
    /// The instances that count, this one included.
    pub instances: u32,
    /// Time left in the window, in ms.
    pub window_left_ms: f64,
}

/// Folds `r` into `state` and returns the reporting instance's share.
pub fn report(state: &mut QuotaState, r: &Report<'_>) -> Share {
    let window_ms = r.window_ms.max(1.0);
    let start = (r.now_ms / window_ms).floor() * window_ms;
    if state.window_start_ms != start {
        state.window_start_ms = start;
        state.used = 0;
    }
    state.used = state.used.saturating_add(r.allowed).min(MAX_COUNT);
    let demand = if r.demand.is_finite() {
        r.demand.max(0.0)
    } else {
        0.0
    };
    state
        .instances
        .insert(r.instance.to_owned(), (demand, r.now_ms));
    let horizon = r.now_ms - r.stale_ms;
    state.instances.retain(|_, (_, seen)| *seen >= horizon);
    while state.instances.len() > MAX_INSTANCES {
        let oldest = state
            .instances
            .iter()
            .filter(|(id, _)| id.as_str() != r.instance)
            // Ties by id, as `quota.lua`.
            .min_by(|a, b| a.1.1.total_cmp(&b.1.1).then_with(|| a.0.cmp(b.0)))
            .map(|(id, _)| id.clone());
        match oldest {
            Some(id) => state.instances.remove(&id),
            None => break,
        };
    }
    share_of(state, r)
}

/// The share `r`'s instance has in `state` now, changing nothing (its
/// `allowed` and `demand` are not read): what a server re-reads when
/// another instance's report moved the split. The window's count is 0 if
/// the window turned since the last report; an instance not in the state
/// is counted with its demand as if it had reported.
pub fn peek(state: &QuotaState, r: &Report<'_>) -> Share {
    let mut state = state.clone();
    let window_ms = r.window_ms.max(1.0);
    if state.window_start_ms != (r.now_ms / window_ms).floor() * window_ms {
        state.used = 0;
    }
    let horizon = r.now_ms - r.stale_ms;
    state.instances.retain(|_, (_, seen)| *seen >= horizon);
    state
        .instances
        .entry(r.instance.to_owned())
        .or_insert((r.demand.max(0.0), r.now_ms));
    share_of(&state, r)
}

/// `instance` leaves (its stream ended): it no longer counts, at once.
pub fn leave(state: &mut QuotaState, instance: &str) {
    state.instances.remove(instance);
}

/// `r`'s instance's share of the rule's rate among `state`'s instances.
fn share_of(state: &QuotaState, r: &Report<'_>) -> Share {
    let window_ms = r.window_ms.max(1.0);
    let start = (r.now_ms / window_ms).floor() * window_ms;
    let demands: Vec<f64> = state.instances.values().map(|(d, _)| *d).collect();
    let at = state.instances.keys().position(|id| id == r.instance);
    let rate = r.limit as f64 * 1_000.0 / window_ms;
    let shares = split(rate, &demands);
    Share {
        used: state.used,
        // An instance that does not count has no share.
        rate: at.and_then(|at| shares.get(at).copied()).unwrap_or(0.0),
        instances: u32::try_from(demands.len()).unwrap_or(u32::MAX),
        // Whole ms, as `quota.lua`.
        window_left_ms: (start + window_ms - r.now_ms).floor(),
    }
}

/// Splits `total` among `demands` by water-filling: in order of demand,
/// each gets what it asks or an equal part of what is left, whichever is
/// less; what no one asks for is then split equally among all. The shares
/// sum to `total` (for a non-empty `demands`).
pub fn split(total: f64, demands: &[f64]) -> Vec<f64> {
    let n = demands.len();
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|a, b| demands[*a].total_cmp(&demands[*b]).then(a.cmp(b)));
    let mut shares = vec![0.0; n];
    let mut left = total;
    for (k, &i) in order.iter().enumerate() {
        let fair = left / (n - k) as f64;
        let share = demands[i].max(0.0).min(fair);
        shares[i] = share;
        left -= share;
    }
    if n > 0 && left > 0.0 {
        let extra = left / n as f64;
        for share in &mut shares {
            *share += extra;
        }
    }
    shares
}

/// A token bucket for Envoy's `envoy.type.v3.TokenBucket`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TokenBucket {
    /// The bucket's size, and the tokens it starts with.
    pub max_tokens: u32,
    /// Tokens added each [`FILL_INTERVAL_SECS`].
    pub tokens_per_fill: u32,
    /// The fill interval, in seconds.
    pub fill_interval_secs: u32,
}

impl TokenBucket {
    /// Its refill rate, in tokens per second.
    pub fn rate(&self) -> f64 {
        f64::from(self.tokens_per_fill) / f64::from(self.fill_interval_secs.max(1))
    }
}

/// What an instance is told to enforce for a bucket.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Assignment {
    /// Admit by a token bucket.
    TokenBucket(TokenBucket),
    /// Deny every request for this many seconds (to the window's end).
    DenyAll {
        /// Seconds until the window turns (at least 1).
        ttl_secs: u64,
    },
}

/// The assignment for `share`, with `limit` requests per window and
/// reports every `interval_secs`: deny-all to the window's end once the
/// window's `limit` is used up; otherwise a token bucket refilled at the
/// share's rate (at least one token per [`FILL_INTERVAL_SECS`]) that holds
/// what the share earns in one second, or in one reporting interval if
/// that is shorter (at least one token). Not more: Envoy starts every new
/// token bucket full, so each change of assignment hands out a bucketful.
pub fn assign(share: &Share, limit: u64, interval_secs: f64) -> Assignment {
    if share.used >= limit {
        let ttl_secs = (share.window_left_ms / 1_000.0).ceil().max(1.0) as u64;
        return Assignment::DenyAll { ttl_secs };
    }
    let rate = share.rate.max(0.0);
    let per_fill = (rate * f64::from(FILL_INTERVAL_SECS)).round();
    let burst = (rate * interval_secs.clamp(0.0, 1.0)).ceil();
    Assignment::TokenBucket(TokenBucket {
        max_tokens: clamp_u32(burst).max(1),
        tokens_per_fill: clamp_u32(per_fill).max(1),
        fill_interval_secs: FILL_INTERVAL_SECS,
    })
}

/// `x` as a `u32`, saturating (NaN is 0).
fn clamp_u32(x: f64) -> u32 {
    if x.is_nan() {
        0
    } else {
        x.clamp(0.0, f64::from(u32::MAX)) as u32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r<'a>(instance: &'a str, allowed: u64, demand: f64, now_ms: f64) -> Report<'a> {
        Report {
            instance,
            allowed,
            demand,
            now_ms,
            limit: 60,
            window_ms: 60_000.0,
            stale_ms: 3_000.0,
        }
    }

    #[test]
    fn equal_demands_above_the_rate_split_it_equally() {
        assert_eq!(split(1.0, &[5.0, 5.0]), vec![0.5, 0.5]);
        assert_eq!(split(1.0, &[5.0, 7.0, 9.0, 11.0]), vec![0.25; 4]);
    }

    #[test]
    fn a_small_demand_is_met_and_the_rest_borrowed() {
        let shares = split(1.0, &[5.0, 0.2]);
        assert!((shares[0] - 0.8).abs() < 1e-12, "{shares:?}");
        assert!((shares[1] - 0.2).abs() < 1e-12, "{shares:?}");
        // An idle instance lends everything.
        assert_eq!(split(1.0, &[0.0, 5.0]), vec![0.0, 1.0]);
    }

    #[test]
    fn what_no_one_asks_for_is_split_equally() {
        let shares = split(1.0, &[0.1, 0.3]);
        assert!((shares[0] - 0.4).abs() < 1e-12, "{shares:?}");
        assert!((shares[1] - 0.6).abs() < 1e-12, "{shares:?}");
        assert!((shares.iter().sum::<f64>() - 1.0).abs() < 1e-12);
    }

    #[test]
    fn reports_share_the_rate_and_count_the_window() {
        let mut state = QuotaState::default();
        let a = report(&mut state, &r("a", 3, 5.0, 60_000.0));
        assert_eq!((a.used, a.instances), (3, 1));
        assert_eq!(a.rate, 1.0, "alone, a gets the whole rate");
        let b = report(&mut state, &r("b", 2, 5.0, 60_500.0));
        assert_eq!((b.used, b.instances, b.rate), (5, 2, 0.5));
        assert_eq!(b.window_left_ms, 59_500.0);
        // The window turns: used starts again, demands stay.
        let a = report(&mut state, &r("a", 1, 5.0, 120_100.0));
        assert_eq!((a.used, a.instances, a.rate), (1, 1, 1.0), "b is stale");
    }

    #[test]
    fn an_instance_that_stops_asking_lends_its_share_at_its_next_report() {
        let mut state = QuotaState::default();
        report(&mut state, &r("a", 0, 5.0, 1_000.0));
        let b = report(&mut state, &r("b", 0, 5.0, 1_100.0));
        assert_eq!(b.rate, 0.5);
        report(&mut state, &r("a", 0, 0.0, 2_000.0));
        let b = report(&mut state, &r("b", 0, 5.0, 2_100.0));
        assert_eq!(b.rate, 1.0);
    }

    #[test]
    fn a_peek_reads_the_split_and_changes_nothing() {
        let mut state = QuotaState::default();
        report(&mut state, &r("a", 3, 5.0, 1_000.0));
        report(&mut state, &r("b", 2, 5.0, 1_100.0));
        let before = state.clone();
        assert_eq!(peek(&state, &r("b", 7, 0.0, 1_200.0)).rate, 0.5);
        report(&mut state, &r("a", 0, 0.0, 1_300.0));
        assert_eq!(peek(&state, &r("b", 7, 0.0, 1_400.0)).rate, 1.0);
        assert_eq!(peek(&state, &r("b", 0, 0.0, 1_400.0)).used, 5);
        assert_eq!(
            peek(&before, &r("b", 0, 0.0, 61_000.0)).used,
            0,
            "window turned"
        );
        assert_eq!(before.used, 5);
        leave(&mut state, "a");
        assert_eq!(state.instances.len(), 1);
    }

    #[test]
    fn instances_are_bounded() {
        let mut state = QuotaState::default();
        for i in 0..(MAX_INSTANCES + 10) {
            report(&mut state, &r(&format!("i{i}"), 0, 1.0, 1_000.0 + i as f64));
        }
        assert_eq!(state.instances.len(), MAX_INSTANCES);
        assert!(!state.instances.contains_key("i0"), "the oldest went first");
    }

    #[test]
    fn as_quota_lua_time_left_is_whole_ms_and_an_absent_instance_has_no_share() {
        let mut state = QuotaState::default();
        let a = report(&mut state, &r("a", 0, 5.0, 60_500.5));
        assert_eq!(a.window_left_ms, 59_499.0);
        report(&mut state, &r("b", 0, 0.0, 60_600.0));
        assert_eq!(share_of(&state, &r("c", 0, 0.0, 60_700.0)).rate, 0.0);
        assert_eq!(share_of(&state, &r("a", 0, 0.0, 60_700.0)).rate, 1.0);
    }

    #[test]
    fn the_oldest_instance_goes_first_and_ties_by_id() {
        let mut state = QuotaState::default();
        for i in (0..MAX_INSTANCES).rev() {
            report(&mut state, &r(&format!("i{i:03}"), 0, 1.0, 1_000.0));
        }
        report(&mut state, &r("a", 0, 1.0, 1_000.0));
        assert_eq!(state.instances.len(), MAX_INSTANCES);
        assert!(!state.instances.contains_key("i000"), "the least id went");
    }

    #[test]
    fn a_share_becomes_a_token_bucket_or_deny_all() {
        let share = Share {
            used: 10,
            rate: 0.5,
            instances: 2,
            window_left_ms: 20_500.0,
        };
        let Assignment::TokenBucket(tb) = assign(&share, 60, 1.0) else {
            panic!("under the limit")
        };
        assert_eq!(tb.rate(), 0.5);
        assert_eq!((tb.max_tokens, tb.tokens_per_fill), (1, 30));
        let fast = Share { rate: 7.2, ..share };
        let Assignment::TokenBucket(tb) = assign(&fast, 600, 5.0) else {
            panic!("under the limit")
        };
        assert_eq!(tb.max_tokens, 8, "what the share earns in one second");
        let Assignment::TokenBucket(tb) = assign(&fast, 600, 0.25) else {
            panic!("under the limit")
        };
        assert_eq!(tb.max_tokens, 2, "or in one interval, if shorter");
        let used_up = Share { used: 60, ..share };
        assert_eq!(
            assign(&used_up, 60, 1.0),
            Assignment::DenyAll { ttl_secs: 21 }
        );
        let idle = Share { rate: 0.0, ..share };
        let Assignment::TokenBucket(tb) = assign(&idle, 60, 1.0) else {
            panic!("under the limit")
        };
        assert_eq!((tb.max_tokens, tb.tokens_per_fill), (1, 1), "never empty");
    }

    #[test]
    fn bad_numbers_do_not_crash() {
        let mut state = QuotaState::default();
        let mut bad = r("a", u64::MAX, f64::NAN, 0.0);
        bad.window_ms = 0.0;
        let s = report(&mut state, &bad);
        assert_eq!(s.used, MAX_COUNT);
        let s = Share {
            rate: f64::INFINITY,
            used: 0,
            ..s
        };
        assert!(matches!(assign(&s, 1, 1.0), Assignment::TokenBucket(_)));
    }
}
