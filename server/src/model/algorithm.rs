//! The counting algorithms, as pure functions of the stored state and "now".
//!
//! The memory store calls these directly; the Redis scripts
//! (`store/redis/scripts/algorithms/*.lua`) perform the same arithmetic in the same order on
//! the same IEEE doubles, so both stores reach the same decisions for the
//! same inputs. Times are milliseconds since the Unix epoch as `f64`: exact
//! for whole milliseconds, and fine-grained enough (about 0.2 µs at today's
//! epoch) for the fractional emission intervals of GCRA.
//!
//! | algorithm | state | a hit is allowed when | rejected hits |
//! |---|---|---|---|
//! | fixed window | a count per epoch-aligned window | count after the hit ≤ limit | still counted (as the reference) |
//! | sliding window | counts of the current and previous window | previous × overlap + current + hits ≤ limit | not counted |
//! | token bucket | tokens and the time they were counted | tokens after refill ≥ hits | take nothing |
//! | GCRA | the theoretical arrival time (TAT) | TAT + hits × T − now ≤ burst × T | do not move the TAT |
//!
//! A check with 0 hits takes nothing. For the fixed window it answers as the
//! reference does (over once the count exceeds the limit); for the other
//! algorithms it answers whether one more hit would be allowed now.

use std::time::Duration;

/// Which algorithm a limit uses (a rule's `algorithm:`; a capacity rule,
/// set by a `capacity:` block, is none of these: see [`super::capacity`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Algorithm {
    /// Counts per window aligned to the Unix epoch (the reference's).
    FixedWindow,
    /// The weighted two-window estimate of a sliding window.
    SlidingWindow,
    /// A bucket of `burst` tokens refilled at `limit` per `period`.
    TokenBucket,
    /// The generic cell rate algorithm (a leaky bucket as a meter).
    Gcra,
}

impl Algorithm {
    /// Parses the YAML name.
    pub fn parse(name: &str) -> Option<Algorithm> {
        Some(match name {
            "fixed_window" => Algorithm::FixedWindow,
            "sliding_window" => Algorithm::SlidingWindow,
            "token_bucket" => Algorithm::TokenBucket,
            "gcra" => Algorithm::Gcra,
            _ => return None,
        })
    }

    /// The YAML name.
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::FixedWindow => "fixed_window",
            Algorithm::SlidingWindow => "sliding_window",
            Algorithm::TokenBucket => "token_bucket",
            Algorithm::Gcra => "gcra",
        }
    }

    /// True for the algorithms that take a `burst`.
    pub fn has_burst(self) -> bool {
        matches!(self, Algorithm::TokenBucket | Algorithm::Gcra)
    }
}

/// A rate: `limit` hits per `period`, with a `burst` for the bucket algorithms.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Rate {
    /// Hits per period.
    pub limit: u64,
    /// The period (the unit times its multiplier), in milliseconds.
    pub period_ms: f64,
    /// Bucket size (token bucket) or burst tolerance (GCRA), in hits.
    pub burst: u64,
}

/// What one check decided.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Outcome {
    /// The hits were allowed (and taken).
    pub allowed: bool,
    /// Hits still allowed right now.
    pub remaining: u64,
    /// Fixed and sliding window: time until the current window ends. Token
    /// bucket and GCRA: when allowed, time until the bucket is full again;
    /// when rejected, time until these hits would be allowed.
    pub reset_after: Duration,
    /// A capacity check's verdict and the limit that applied (`None` for
    /// the other algorithms).
    pub capacity: Option<super::capacity::Decided>,
}

/// Tokens (or hits) short by floating-point rounding alone still count.
const SLACK: f64 = 1e-9;

/// GCRA: a hit due within this many ms counts as due (1 µs; the stored TAT
/// is rounded to about 0.2 µs at today's epoch).
const TIME_SLACK_MS: f64 = 1e-3;

fn millis(ms: f64) -> Duration {
    Duration::try_from_secs_f64(ms.max(0.0) / 1_000.0).unwrap_or(Duration::MAX)
}

/// A limit of 0 (or a bucket of 0) admits nothing: every hit is rejected
/// and the state is left as it is.
fn banned(rate: Rate) -> Option<Outcome> {
    (rate.limit == 0 || rate.burst == 0).then(|| Outcome {
        allowed: false,
        remaining: 0,
        reset_after: millis(rate.period_ms),
        capacity: None,
    })
}

/// Fixed window: `count` is the window's count after adding the hits.
pub fn fixed_window(count: u64, limit: u64, reset_after: Duration) -> Outcome {
    Outcome {
        allowed: count <= limit,
        remaining: limit.saturating_sub(count),
        reset_after,
        capacity: None,
    }
}

/// Sliding window state: counts of the window that contains `now` and of the one before.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct SlidingCounts {
    /// Hits counted in the previous window.
    pub previous: u64,
    /// Hits counted in the current window.
    pub current: u64,
}

/// Sliding window: the previous window's count weighs in proportion to how
/// much of it still overlaps the sliding period ending now. Returns the
/// outcome and the current window's count to store (unchanged on rejection).
pub fn sliding_window(state: SlidingCounts, rate: Rate, now_ms: f64, hits: u64) -> (Outcome, u64) {
    let start = (now_ms / rate.period_ms).floor() * rate.period_ms;
    let elapsed = now_ms - start;
    let weight = (rate.period_ms - elapsed) / rate.period_ms;
    let estimate = state.previous as f64 * weight + state.current as f64;
    let wanted = hits.max(1) as f64;
    let limit = rate.limit as f64;
    let allowed = estimate + wanted <= limit;
    let (taken, current) = if allowed && hits > 0 {
        (estimate + hits as f64, state.current + hits)
    } else {
        (estimate, state.current)
    };
    let outcome = Outcome {
        allowed,
        remaining: (limit - taken).max(0.0).floor() as u64,
        reset_after: millis(start + rate.period_ms - now_ms),
        capacity: None,
    };
    (outcome, current)
}

/// Token bucket state. A bucket that was never used is full.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Bucket {
    /// Tokens at `at_ms`.
    pub tokens: f64,
    /// When `tokens` was computed.
    pub at_ms: f64,
}

/// Token bucket of `rate.burst` tokens refilled at `rate.limit` per period.
/// Returns the outcome and the state to store.
pub fn token_bucket(
    state: Option<Bucket>,
    rate: Rate,
    now_ms: f64,
    hits: u64,
) -> (Outcome, Bucket) {
    if let Some(ban) = banned(rate) {
        return (
            ban,
            state.unwrap_or(Bucket {
                tokens: 0.0,
                at_ms: now_ms,
            }),
        );
    }
    let capacity = rate.burst as f64;
    let per_ms = rate.limit as f64 / rate.period_ms;
    let tokens = match state {
        None => capacity,
        Some(b) => (b.tokens + (now_ms - b.at_ms).max(0.0) * per_ms).min(capacity),
    };
    let wanted = hits.max(1) as f64;
    // Refill rates rarely divide exactly (1 per hour is 1/3,600,000 per ms)
    // and timestamps round at the epoch's magnitude: a token that is short by
    // rounding alone (what 1 µs of refill brings) still counts.
    let slack = SLACK.max(TIME_SLACK_MS * per_ms);
    let allowed = tokens + slack >= wanted;
    let left = if allowed {
        (tokens - hits as f64).max(0.0)
    } else {
        tokens
    };
    let reset_ms = if allowed {
        (capacity - left) / per_ms
    } else {
        // More hits than the bucket holds never fit: report when it is full.
        (wanted.min(capacity) - tokens).max(0.0) / per_ms
    };
    let outcome = Outcome {
        allowed,
        remaining: (left + SLACK).floor() as u64,
        reset_after: millis(reset_ms),
        capacity: None,
    };
    (
        outcome,
        Bucket {
            tokens: left,
            at_ms: now_ms,
        },
    )
}

/// How long a token bucket's state must live: until it would be full again.
pub fn token_bucket_ttl(bucket: Bucket, rate: Rate, now_ms: f64) -> Duration {
    if banned(rate).is_some() {
        return millis(rate.period_ms);
    }
    let per_ms = rate.limit as f64 / rate.period_ms;

    millis((rate.burst as f64 - bucket.tokens) / per_ms + (bucket.at_ms - now_ms))
        .max(Duration::from_millis(1))
}

/// GCRA with emission interval `T = period / limit` and tolerance
/// `burst × T`. `tat_ms` is the stored theoretical arrival time (absent: now).
/// Returns the outcome and the TAT to store (unchanged on rejection).
pub fn gcra(tat_ms: Option<f64>, rate: Rate, now_ms: f64, hits: u64) -> (Outcome, f64) {
    if let Some(ban) = banned(rate) {
        return (ban, tat_ms.unwrap_or(now_ms));
    }
    let interval = rate.period_ms / rate.limit as f64;
    let tolerance = interval * rate.burst as f64;
    // Work in time ahead of now: `tat - now` is exact, while `tat + x - now`
    // rounds at the epoch's magnitude (1.7e12 ms) and can flip a decision
    // that sits exactly on its bound. TIME_SLACK absorbs the rounding of the
    // stored TAT itself.
    let ahead = tat_ms.map_or(0.0, |t| (t - now_ms).max(0.0));
    let wanted = hits.max(1) as f64;
    let allowed = ahead + wanted * interval <= tolerance + TIME_SLACK_MS;
    let new_ahead = if allowed {
        ahead + hits as f64 * interval
    } else {
        ahead
    };
    let remaining = ((tolerance - new_ahead) / interval + SLACK)
        .max(0.0)
        .floor() as u64;
    let reset_ms = if allowed {
        new_ahead
    } else {
        // More hits than the burst never fit: report when the meter is empty.
        (ahead + wanted.min(rate.burst as f64) * interval - tolerance).max(0.0)
    };
    (
        Outcome {
            allowed,
            remaining,
            reset_after: millis(reset_ms),
            capacity: None,
        },
        now_ms + new_ahead,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: f64 = 60_000.0;

    fn rate(limit: u64, burst: u64) -> Rate {
        Rate {
            limit,
            period_ms: MIN,
            burst,
        }
    }

    #[test]
    fn fixed_window_is_over_when_the_count_exceeds_the_limit() {
        let reset = Duration::from_secs(5);
        assert_eq!(
            fixed_window(3, 3, reset),
            Outcome {
                allowed: true,
                remaining: 0,
                reset_after: reset,
                capacity: None,
            }
        );
        assert!(!fixed_window(4, 3, reset).allowed);
    }

    #[test]
    fn sliding_window_weighs_the_previous_window_by_its_overlap() {
        let r = rate(10, 0);
        // 15 s into a window, the previous window (8 hits) still weighs 3/4: 6 + 3 = 9.
        let state = SlidingCounts {
            previous: 8,
            current: 3,
        };
        let (o, current) = sliding_window(state, r, 100.0 * MIN + 15_000.0, 1);
        assert!(o.allowed);
        assert_eq!((o.remaining, current), (0, 4));
        assert_eq!(o.reset_after, Duration::from_secs(45));
        let (o, current) = sliding_window(
            SlidingCounts {
                previous: 8,
                current: 4,
            },
            r,
            100.0 * MIN + 15_000.0,
            1,
        );
        assert!(!o.allowed, "6 + 4 + 1 > 10");
        assert_eq!(current, 4, "rejected hits are not counted");
    }

    #[test]
    fn sliding_window_check_only_asks_about_one_more_hit() {
        let full = SlidingCounts {
            previous: 0,
            current: 10,
        };
        let (o, current) = sliding_window(full, rate(10, 0), 100.0 * MIN, 0);
        assert!(!o.allowed);
        assert_eq!(current, 10);
    }

    #[test]
    fn token_bucket_starts_full_refills_and_rejects_without_taking() {
        let r = rate(60, 10); // one token per second, 10 at most
        let (o, b) = token_bucket(None, r, 0.0, 10);
        assert!(o.allowed);
        assert_eq!(o.remaining, 0);
        assert_eq!(o.reset_after, Duration::from_secs(10), "10 s to refill");
        let (o, b2) = token_bucket(Some(b), r, 500.0, 1);
        assert!(!o.allowed);
        assert_eq!(b2.tokens, 0.5, "nothing taken");
        assert_eq!(
            o.reset_after,
            Duration::from_millis(500),
            "the next token in 0.5 s"
        );
        let (o, _) = token_bucket(Some(b2), r, 1_000.0, 1);
        assert!(o.allowed);
        let (o, b) = token_bucket(Some(b), r, 100_000.0, 1);
        assert!(o.allowed);
        assert_eq!(
            (o.remaining, b.tokens),
            (9, 9.0),
            "refill stops at the capacity"
        );
    }

    #[test]
    fn gcra_spaces_hits_by_the_emission_interval_after_the_burst() {
        let r = rate(60, 3); // T = 1 s, 3 at once
        let mut tat = None;
        for left in [2, 1, 0] {
            let (o, t) = gcra(tat, r, 0.0, 1);
            assert!(o.allowed);
            assert_eq!(o.remaining, left);
            tat = Some(t);
        }
        let (o, t) = gcra(tat, r, 0.0, 1);
        assert!(!o.allowed);
        assert_eq!(
            o.reset_after,
            Duration::from_secs(1),
            "exactly one interval to wait"
        );
        assert_eq!(t, 3_000.0, "a rejection does not move the TAT");
        let (o, _) = gcra(tat, r, 1_000.0, 1);
        assert!(o.allowed);
    }

    #[test]
    fn gcra_and_token_bucket_agree_on_admissions_for_integer_rates() {
        let r = rate(120, 5);
        let (mut tat, mut bucket) = (None, None);
        for step in 0..2_000u32 {
            // Irregular, monotonic arrivals (steps of 26 to 54 ms), 0 to 2 hits each.
            let now = f64::from(step) * 40.0 + f64::from(step % 3) * 7.0;
            let hits = u64::from(step % 3);
            let (g, t) = gcra(tat, r, now, hits);
            let (b, s) = token_bucket(bucket, r, now, hits);
            assert_eq!(g.allowed, b.allowed, "step {step} at {now}");
            tat = Some(t);
            bucket = Some(s);
        }
    }

    #[test]
    fn a_zero_limit_bans_without_dividing_by_zero() {
        let r = rate(0, 0);
        assert!(!token_bucket(None, r, 0.0, 1).0.allowed);
        assert!(!gcra(None, r, 0.0, 1).0.allowed);
        assert!(
            !sliding_window(SlidingCounts::default(), r, 0.0, 1)
                .0
                .allowed
        );
        assert_eq!(
            token_bucket_ttl(
                Bucket {
                    tokens: 0.0,
                    at_ms: 0.0
                },
                r,
                0.0
            ),
            Duration::from_secs(60)
        );
    }

    /// At today's epoch, `now + interval - now` is not `interval`: these
    /// limits used to reject forever (6 per second with burst 1, ...).
    #[test]
    fn gcra_and_token_bucket_decide_right_at_the_epochs_magnitude() {
        let now = 1_763_900_000_123.0;
        for limit in 1..=200u64 {
            for period in [1_000.0, 60_000.0, 3_600_000.0] {
                let r = Rate {
                    limit,
                    period_ms: period,
                    burst: 1,
                };
                let (first, tat) = gcra(None, r, now, 1);
                assert!(first.allowed, "gcra {limit} per {period} ms: the first hit");
                assert!(
                    !gcra(Some(tat), r, now, 1).0.allowed,
                    "gcra {limit} per {period} ms: a second at once"
                );
                let later = now + period / limit as f64;
                assert!(
                    gcra(Some(tat), r, later, 1).0.allowed,
                    "gcra {limit} per {period} ms: one interval later"
                );
                let (taken, bucket) = token_bucket(None, r, now, 1);
                assert!(taken.allowed);
                assert!(
                    token_bucket(Some(bucket), r, later, 1).0.allowed,
                    "bucket {limit} per {period} ms: one interval later"
                );
                let full = Rate { burst: limit, ..r };
                assert!(
                    gcra(None, full, now, limit).0.allowed,
                    "gcra: a whole burst at once on an idle key"
                );
            }
        }
    }

    #[test]
    fn more_hits_than_the_bucket_holds_report_when_it_is_full() {
        let r = rate(60, 5); // one per second, 5 at most
        let (o, b) = token_bucket(None, r, 0.0, 3);
        assert!(o.allowed);
        let (o, _) = token_bucket(Some(b), r, 0.0, 9);
        assert!(!o.allowed);
        assert_eq!(
            o.reset_after,
            Duration::from_secs(3),
            "full again in 3 s, though 9 never fit"
        );
        let (o, _) = gcra(None, r, 0.0, 9);
        assert!(!o.allowed);
        assert_eq!(
            o.reset_after,
            Duration::ZERO,
            "an idle meter is already empty"
        );
    }
}
