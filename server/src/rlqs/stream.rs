//! One RLQS stream: its domain, the buckets it reported, and what each was
//! last assigned. [`StreamState::answer`] turns one usage reports message
//! into the bucket actions to send back (none when nothing changed).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use floodgate_proto::envoy::service::rate_limit_quota::v3::{
    RateLimitQuotaResponse, RateLimitQuotaUsageReports, rate_limit_quota_response::BucketAction,
    rate_limit_quota_response::bucket_action,
};
use floodgate_proto::envoy::r#type::v3::{
    RateLimitStrategy, TokenBucket as TokenBucketProto, rate_limit_strategy,
};
use tokio::time::Instant;

use super::Shared;
use super::bucket::{self, Entries, Target};
use super::metrics::Sent;
use crate::model::quota::{self, Assignment, TokenBucket};
use crate::store::quota::{QuotaAnswer, QuotaCall, QuotaOp};

/// The reporting interval assumed before a bucket's second report: the one
/// Envoy 1.40 uses whatever the bucket's `reporting_interval` says (it is
/// hard-coded in `filter_persistence.cc`).
const FIRST_INTERVAL: Duration = Duration::from_secs(5);
/// Bounds on a measured reporting interval.
const INTERVAL_BOUNDS: (Duration, Duration) = (Duration::from_millis(100), Duration::from_secs(60));
/// A new token bucket within this fraction of the current one's rate (and
/// the same size) is not sent: Envoy starts a replaced bucket full, so
/// every change hands out a bucket's worth of tokens.
const KEEP_WITHIN: f64 = 0.1;

/// Why a stream ends with an error.
#[derive(Debug)]
pub enum StreamError {
    /// The report is invalid (INVALID_ARGUMENT).
    Invalid(String),
    /// A bound is exceeded (RESOURCE_EXHAUSTED).
    Exhausted(String),
    /// The server drains (UNAVAILABLE).
    Draining,
    /// Reading the next message failed (too large, not a message, the
    /// connection broke): tonic's status.
    Inbound(tonic::Status),
    /// The client did not take an answer within this long (its
    /// `send_timeout`).
    NotReading(Duration),
}

impl StreamError {
    /// The status the stream ends with.
    pub fn status(self) -> tonic::Status {
        match self {
            StreamError::Invalid(m) => tonic::Status::invalid_argument(m),
            StreamError::Exhausted(m) => tonic::Status::resource_exhausted(m),
            StreamError::Draining => tonic::Status::unavailable("the server is shutting down"),
            StreamError::Inbound(status) => status,
            StreamError::NotReading(wait) => tonic::Status::deadline_exceeded(format!(
                "the client did not read an answer within {wait:?}"
            )),
        }
    }
}

/// What the stream last told Envoy for one bucket.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Told {
    TokenBucket(TokenBucket),
    DenyAll,
    AllowAll,
}

#[derive(Debug)]
struct BucketState {
    last_report: Instant,
    interval: Duration,
    last_active: Instant,
    told: Option<(Told, Instant, Duration)>,
    /// The state key of its rule, once matched.
    key: Option<Arc<str>>,
    /// Its last demand, requests per second.
    demand: f64,
    /// Its last share's rate.
    rate: Option<f64>,
}

/// One stream's state.
#[derive(Debug)]
pub(super) struct StreamState {
    /// This stream's id in the shared state (unique per server instance).
    id: String,
    domain: Option<String>,
    buckets: HashMap<Entries, BucketState>,
}

/// One message's usages, at most `max_buckets_per_stream` of them, with
/// the counts of a bucket named twice summed: `(bucket, allowed, allowed +
/// denied)` in the order first named.
fn merged(
    reports: &RateLimitQuotaUsageReports,
    shared: &Shared,
) -> Result<Vec<(Entries, u64, u64)>, StreamError> {
    let max = shared.settings.max_buckets_per_stream;
    let usages = &reports.bucket_quota_usages;
    if usages.len() > max {
        return Err(StreamError::Invalid(format!(
            "a usage reports message has {} bucket usages, more than rlqs_max_buckets_per_stream ({max})",
            usages.len()
        )));
    }
    let mut index: HashMap<Entries, usize> = HashMap::new();
    let mut out: Vec<(Entries, u64, u64)> = Vec::new();
    for usage in usages {
        let entries = Entries::parse(usage.bucket_id.as_ref(), &shared.limits)
            .map_err(StreamError::Invalid)?;
        let (allowed, denied) = (usage.num_requests_allowed, usage.num_requests_denied);
        let count = allowed.saturating_add(denied);
        match index.get(&entries).and_then(|&i| out.get_mut(i)) {
            Some(seen) => {
                seen.1 = seen.1.saturating_add(allowed);
                seen.2 = seen.2.saturating_add(count);
            }
            None => {
                index.insert(entries.clone(), out.len());
                out.push((entries, allowed, count));
            }
        }
    }
    Ok(out)
}

impl StreamState {
    /// A stream called `id`.
    pub(super) fn new(id: String) -> Self {
        StreamState {
            id,
            domain: None,
            buckets: HashMap::new(),
        }
    }

    /// Buckets tracked.
    pub(super) fn len(&self) -> usize {
        self.buckets.len()
    }

    /// The actions for one reports message (`None`: nothing to send).
    pub(super) async fn answer(
        &mut self,
        shared: &Shared,
        reports: &RateLimitQuotaUsageReports,
    ) -> Result<Option<RateLimitQuotaResponse>, StreamError> {
        let domain = self.domain(&reports.domain, shared)?.to_owned();
        let now = Instant::now();
        let rules = shared.limiter.rules().current();
        let mut actions = Vec::new();
        for (entries, allowed, count) in merged(reports, shared)? {
            shared.metrics.report();
            if !self.buckets.contains_key(&entries)
                && self.buckets.len() >= shared.settings.max_buckets_per_stream
            {
                return Err(StreamError::Exhausted(format!(
                    "the stream reports more than rlqs_max_buckets_per_stream ({}) buckets",
                    shared.settings.max_buckets_per_stream
                )));
            }
            let (state, elapsed) = self.track(shared, &entries, now, count > 0);
            if now.duration_since(state.last_active) >= shared.settings.abandon_after {
                self.buckets.remove(&entries);
                shared.metrics.buckets(false, 1);
                shared.metrics.release(&domain, &entries.to_string());
                shared.metrics.sent(Sent::Abandon);
                actions.push(abandon(&entries));
                continue;
            }
            let demand = count as f64 / elapsed.as_secs_f64();
            // Global shadow mode limits nothing: allow-all.
            let target = bucket::target(&rules, shared.limiter.keys(), &domain, &entries)
                .filter(|_| !shared.limiter.shadow_mode());
            let call = target
                .as_ref()
                .map(|t| self.call(shared, t, &entries, (allowed, demand)));
            if let Some(action) = self.settle(shared, &domain, &entries, call, now).await {
                actions.push(action);
            }
        }
        Ok((!actions.is_empty()).then_some(RateLimitQuotaResponse {
            bucket_action: actions,
        }))
    }

    /// The actions for the buckets whose rule's state is under `key`, after
    /// another stream's report moved its split: each share read again
    /// (counting nothing), sent where it changed.
    pub(super) async fn moved(
        &mut self,
        shared: &Shared,
        key: &str,
    ) -> Option<RateLimitQuotaResponse> {
        let domain = self.domain.clone()?;
        let rules = shared.limiter.rules().current();
        let now = Instant::now();
        let buckets: Vec<Entries> = self
            .buckets
            .iter()
            .filter(|(_, b)| b.key.as_deref() == Some(key))
            .map(|(e, _)| e.clone())
            .collect();
        let mut actions = Vec::new();
        for entries in buckets {
            let Some(t) = bucket::target(&rules, shared.limiter.keys(), &domain, &entries) else {
                continue;
            };
            let demand = self.buckets.get(&entries).map_or(0.0, |b| b.demand);
            let mut call = self.call(shared, &t, &entries, (0, demand));
            call.op = QuotaOp::Peek;
            if let Some(action) = self
                .settle(shared, &domain, &entries, Some(call), now)
                .await
            {
                actions.push(action);
            }
        }
        (!actions.is_empty()).then_some(RateLimitQuotaResponse {
            bucket_action: actions,
        })
    }

    /// The bucket's assignment from `call` (allow-all without one), the
    /// action to send if it changed, and, for a report whose share moved,
    /// word to the other streams.
    async fn settle(
        &mut self,
        shared: &Shared,
        domain: &str,
        entries: &Entries,
        call: Option<QuotaCall>,
        now: Instant,
    ) -> Option<BucketAction> {
        let Some(call) = call else {
            return self.tell(
                shared,
                entries,
                (Told::AllowAll, shared.settings.assignment_ttl),
                now,
            );
        };
        let (told, ttl, rate) = self.assign(shared, &call, domain, entries).await?;
        let key: Arc<str> = Arc::from(call.key.as_str());
        if let Some(state) = self.buckets.get_mut(entries) {
            let moved = match (state.rate, rate) {
                (Some(old), Some(new)) => (new - old).abs() > KEEP_WITHIN * old,
                (None, Some(_)) => true,
                _ => false,
            };
            if call.op == QuotaOp::Report {
                state.demand = call.demand;
                if moved {
                    let _ = shared.moved.send((key.clone(), self.id.clone()));
                }
            }
            state.key = Some(key);
            state.rate = rate.or(state.rate);
        }
        self.tell(shared, entries, (told, ttl), now)
    }

    /// The stream ended: it leaves each bucket's shared state (so that its
    /// share goes to the other instances now, not once it is stale), and
    /// the other streams are told.
    pub(super) async fn leave(&mut self, shared: &Shared) {
        let Some(domain) = self.domain.clone() else {
            return;
        };
        for entries in self.buckets.keys() {
            shared.metrics.release(&domain, &entries.to_string());
        }
        let rules = shared.limiter.rules().current();
        for entries in self.buckets.keys() {
            let Some(t) = bucket::target(&rules, shared.limiter.keys(), &domain, entries) else {
                continue;
            };
            let mut call = self.call(shared, &t, entries, (0, 0.0));
            call.op = QuotaOp::Leave;
            if shared.limiter.store().quota(&call).await.is_ok() {
                let _ = shared
                    .moved
                    .send((Arc::from(call.key.as_str()), self.id.clone()));
            }
        }
    }

    /// This stream's id.
    pub(super) fn id(&self) -> &str {
        &self.id
    }

    /// The stream's domain: named by the first message, the same (or
    /// empty) in every later one.
    fn domain(&mut self, sent: &str, shared: &Shared) -> Result<&str, StreamError> {
        match &self.domain {
            None if sent.is_empty() => Err(StreamError::Invalid(
                "the first usage reports message of a stream must name the domain".to_owned(),
            )),
            None if sent.len() > shared.limits.max_value_bytes => {
                Err(StreamError::Invalid(format!(
                    "the domain is longer than max_value_bytes ({})",
                    shared.limits.max_value_bytes
                )))
            }
            Some(d) if !sent.is_empty() && sent != d => Err(StreamError::Invalid(format!(
                "the stream's domain is {d:?}; a report names {sent:?} (open a new stream for another domain)"
            ))),
            _ => Ok(self.domain.get_or_insert_with(|| sent.to_owned())),
        }
    }

    /// The bucket's state, updated for a report now (with requests in it
    /// when `active`), and the time the report covers.
    fn track(
        &mut self,
        shared: &Shared,
        entries: &Entries,
        now: Instant,
        active: bool,
    ) -> (&BucketState, Duration) {
        let domain = self.domain.as_deref().unwrap_or_default();
        let state = self.buckets.entry(entries.clone()).or_insert_with(|| {
            shared.metrics.buckets(true, 1);
            shared.metrics.hold(domain, &entries.to_string());
            BucketState {
                last_report: now,
                interval: FIRST_INTERVAL,
                last_active: now,
                told: None,
                key: None,
                demand: 0.0,
                rate: None,
            }
        });
        let since = now.duration_since(state.last_report);
        let elapsed = if state.told.is_none() && since.is_zero() {
            FIRST_INTERVAL
        } else {
            since.clamp(INTERVAL_BOUNDS.0, INTERVAL_BOUNDS.1)
        };
        if !since.is_zero() {
            state.interval = elapsed;
        }
        state.last_report = now;
        if active {
            state.last_active = now;
        }
        (state, elapsed)
    }

    /// The store call for a report of `allowed` requests at `demand`.
    fn call(
        &self,
        shared: &Shared,
        t: &Target,
        entries: &Entries,
        (allowed, demand): (u64, f64),
    ) -> QuotaCall {
        // An instance silent for three reporting intervals no longer counts.
        let interval = self.interval_of_bucket(entries);
        QuotaCall {
            key: t.key.clone(),
            instance: self.id.clone(),
            allowed,
            demand,
            now_ms: shared.limiter.clock().now().as_secs_f64() * 1_000.0,
            limit: t.limit,
            window_ms: t.window_ms,
            stale_ms: (interval.as_secs_f64() * 3_000.0).max(2_000.0),
            on_failure: t.on_failure,
            op: QuotaOp::Report,
        }
    }

    /// The assignment for `call`, with its time to live and the share's
    /// rate; `None` when the store failed (the bucket keeps what it has).
    async fn assign(
        &self,
        shared: &Shared,
        call: &QuotaCall,
        domain: &str,
        entries: &Entries,
    ) -> Option<(Told, Duration, Option<f64>)> {
        let applied = match shared.limiter.store().quota(call).await {
            Ok(applied) => applied,
            Err(e) => {
                tracing::warn!(domain, bucket = %entries, error = %e, "RLQS report not counted");
                return None;
            }
        };
        let ttl = shared.settings.assignment_ttl;
        Some(match applied.answer {
            QuotaAnswer::AllowAll => (Told::AllowAll, ttl, None),
            QuotaAnswer::DenyAll => (Told::DenyAll, ttl, None),
            QuotaAnswer::Share(share) => {
                shared
                    .metrics
                    .ratio(domain, &entries.to_string(), share.used, call.limit);
                let interval = self.interval_of_bucket(entries);
                let rate = Some(share.rate);
                match quota::assign(&share, call.limit, interval.as_secs_f64()) {
                    Assignment::TokenBucket(tb) => (Told::TokenBucket(tb), ttl, rate),
                    Assignment::DenyAll { ttl_secs } => {
                        (Told::DenyAll, Duration::from_secs(ttl_secs), rate)
                    }
                }
            }
        })
    }

    /// The bucket's measured reporting interval.
    fn interval_of_bucket(&self, entries: &Entries) -> Duration {
        self.buckets
            .get(entries)
            .map_or(FIRST_INTERVAL, |b| b.interval)
    }

    /// The action to send for `told`, unless Envoy has it already and it
    /// is not half way to its end; records what was sent.
    fn tell(
        &mut self,
        shared: &Shared,
        entries: &Entries,
        (told, ttl): (Told, Duration),
        now: Instant,
    ) -> Option<BucketAction> {
        let state = self.buckets.get_mut(entries)?;
        let told = match (state.told, told) {
            (Some((Told::TokenBucket(old), ..)), Told::TokenBucket(new)) if close(&old, &new) => {
                Told::TokenBucket(old)
            }
            _ => told,
        };
        if let Some((old, at, old_ttl)) = state.told
            && old == told
            && now.duration_since(at) < old_ttl / 2
        {
            return None;
        }
        state.told = Some((told, now, ttl));
        shared.metrics.sent(match told {
            Told::TokenBucket(_) => Sent::TokenBucket,
            Told::DenyAll => Sent::DenyAll,
            Told::AllowAll => Sent::AllowAll,
        });
        Some(assignment(entries, told, ttl))
    }
}

/// The same size, and a rate within [`KEEP_WITHIN`].
fn close(old: &TokenBucket, new: &TokenBucket) -> bool {
    old.max_tokens == new.max_tokens && (new.rate() - old.rate()).abs() <= KEEP_WITHIN * old.rate()
}

fn abandon(entries: &Entries) -> BucketAction {
    BucketAction {
        bucket_id: Some(entries.to_proto()),
        bucket_action: Some(bucket_action::BucketAction::AbandonAction(
            bucket_action::AbandonAction {},
        )),
    }
}

fn assignment(entries: &Entries, told: Told, ttl: Duration) -> BucketAction {
    use rate_limit_strategy::{BlanketRule, Strategy};
    let strategy = match told {
        Told::AllowAll => Strategy::BlanketRule(BlanketRule::AllowAll as i32),
        Told::DenyAll => Strategy::BlanketRule(BlanketRule::DenyAll as i32),
        Told::TokenBucket(tb) => Strategy::TokenBucket(TokenBucketProto {
            max_tokens: tb.max_tokens,
            tokens_per_fill: Some(tb.tokens_per_fill),
            fill_interval: Some(seconds(u64::from(tb.fill_interval_secs))),
        }),
    };
    BucketAction {
        bucket_id: Some(entries.to_proto()),
        bucket_action: Some(bucket_action::BucketAction::QuotaAssignmentAction(
            bucket_action::QuotaAssignmentAction {
                // Envoy reads whole seconds of the TTL only (0 expires at
                // once): at least one.
                assignment_time_to_live: Some(seconds(ttl.as_secs().max(1))),
                rate_limit_strategy: Some(RateLimitStrategy {
                    strategy: Some(strategy),
                }),
            },
        )),
    }
}

fn seconds(secs: u64) -> prost_types::Duration {
    prost_types::Duration {
        seconds: i64::try_from(secs).unwrap_or(i64::MAX),
        nanos: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tb(max_tokens: u32, tokens_per_fill: u32) -> TokenBucket {
        TokenBucket {
            max_tokens,
            tokens_per_fill,
            fill_interval_secs: quota::FILL_INTERVAL_SECS,
        }
    }

    #[test]
    fn a_bucket_within_a_tenth_of_the_rate_at_the_same_size_is_kept() {
        assert!(close(&tb(1, 30), &tb(1, 32)));
        assert!(close(&tb(1, 30), &tb(1, 28)));
        assert!(!close(&tb(1, 30), &tb(1, 34)));
        assert!(!close(&tb(1, 30), &tb(2, 30)), "another size");
    }
}
