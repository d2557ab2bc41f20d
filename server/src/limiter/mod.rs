//! The decision: steps four and six of the request path (see the crate
//! docs). For a validated [`Request`] (step two, [`Request::parse`]), the limiter
//! finds each descriptor's limit in the rules (step three) or the caller's
//! override, drops limits that another matched limit `replaces`, and sends
//! one [`Check`] per remaining limit to the store in a single call (step
//! four); then it turns the outcomes into a [`Decision`] (step six).
//!
//! Each check carries its limit's algorithm ([`Limit`]): the reference's
//! fixed window aligned to the Unix epoch (the window of a limit with unit
//! `u` starts at `floor(now / len(u)) * len(u)`; a hit is over the limit
//! when the count after it is strictly greater than the limit), a sliding
//! window, a token bucket, GCRA, or a capacity rule's shares and classes.
//! The arithmetic of each is in [`crate::model`].

mod request;

use std::borrow::Cow;
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use tracing::Instrument as _;

pub use request::{Descriptor, MAX_HITS, Override, Request, RequestError, RequestLimits};

use crate::clock::Clock;
use crate::metrics::{CapacityKey, Metrics, RuleOutcome};
use crate::model::FailurePolicy;
use crate::model::Unit;
use crate::model::algorithm::{Algorithm, Outcome, Rate};
use crate::model::capacity::{CapacityRule, Verdict};
use crate::rules::{Allowance, CapacityMatch, Domain, Node, Rules};
use crate::store::key::CacheKey;
use crate::store::key::KeySuffix;
use crate::store::{
    Applied, CallOptions, CapacityCall, Check, Commit, CounterStore, Limit, StoreError,
};

/// A decision code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Code {
    /// Within every limit.
    Ok,
    /// Over a limit.
    OverLimit,
}

/// The limit that applied to a descriptor.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AppliedLimit {
    /// Hits allowed per window.
    pub requests_per_unit: u32,
    /// The window unit.
    pub unit: Unit,
    /// The rule's `name`, if any.
    pub name: Option<Arc<str>>,
}

/// The decision for one descriptor.
#[derive(Clone, Debug, PartialEq)]
pub struct Status {
    /// OK or over the limit.
    pub code: Code,
    /// The limit that applied; `None` for no limit or `unlimited`.
    pub limit: Option<AppliedLimit>,
    /// Hits left in the window (`u32::MAX` for `unlimited`).
    pub remaining: u32,
    /// Time until the window resets.
    pub reset_after: Option<Duration>,
    /// The rule is in quota mode.
    pub quota_mode: bool,
    /// The rule's YAML `metadata`.
    pub metadata: Option<Arc<serde_json::Map<String, serde_json::Value>>>,
}

impl Status {
    fn no_limit() -> Self {
        Status {
            code: Code::Ok,
            limit: None,
            remaining: 0,
            reset_after: None,
            quota_mode: false,
            metadata: None,
        }
    }
}

/// The decision for a whole request.
#[derive(Clone, Debug, PartialEq)]
pub struct Decision {
    /// OVER_LIMIT if any non-quota descriptor is over, or if every quota-mode
    /// descriptor is over; otherwise OK. Global shadow mode forces OK.
    pub overall: Code,
    /// One status per descriptor, in request order.
    pub statuses: Vec<Status>,
    /// Decided without the real store (see [`crate::resilience`]).
    pub degraded: bool,
}

/// Why no decision could be made.
#[derive(Debug, thiserror::Error)]
pub enum LimiterError {
    /// The counter store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Decision settings.
#[derive(Clone, Debug, Default)]
pub struct LimiterOptions {
    /// Every overall code is OK (statuses still show what would happen).
    pub global_shadow_mode: bool,
    /// When one limit of a request rejects, the others take nothing (the
    /// reference's `STOP_CACHE_KEY_INCREMENT_WHEN_OVERLIMIT`), atomically.
    pub stop_increment_when_over_limit: bool,
}

/// Decides requests against the rules in force, counting in a store.
#[derive(Debug, Clone)]
pub struct Limiter {
    rules: Rules,
    store: Arc<dyn CounterStore>,
    keys: CacheKey,
    clock: Clock,
    options: LimiterOptions,
    metrics: Arc<Metrics>,
}

/// A descriptor's match in the rules, or the caller's override.
struct Matched<'r> {
    /// Set when the node is a capacity rule.
    capacity: Option<(&'r Arc<CapacityRule>, CapacityMatch)>,
    /// The limits to apply: (index in the rule's list, allowance, name).
    /// The index names the limit's key, so it survives `replaces` dropping
    /// a sibling. Empty for an allow-list node.
    limits: Vec<(usize, Allowance, Option<Arc<str>>)>,
    /// The rules node, `None` for an override.
    node: Option<&'r Node>,
    /// Entries counted under their wildcard pattern (`share_threshold`).
    shared: Vec<(usize, &'r str)>,
}

/// What a descriptor needs, before counting. The node, when there is one,
/// supplies the rule's flags and metadata.
enum Plan<'r> {
    NoLimit(Option<&'r Node>),
    Unlimited(Option<&'r Node>),
    /// Every limit must pass: (limit, index of its check).
    Count {
        limits: Vec<(AppliedLimit, usize)>,
        node: Option<&'r Node>,
        /// A capacity rule's client and class.
        capacity: Option<CapacityPlan<'r>>,
    },
}

/// Who asked a capacity rule, for the status and the metrics.
struct CapacityPlan<'r> {
    rule: &'r CapacityRule,
    class: usize,
    /// The client's entry, if the descriptor has one.
    client_at: Option<usize>,
}

impl Limiter {
    /// A limiter over `rules`, counting in `store` under keys from `keys`.
    pub fn new(
        rules: Rules,
        store: Arc<dyn CounterStore>,
        keys: CacheKey,
        clock: Clock,
        options: LimiterOptions,
    ) -> Self {
        Limiter {
            rules,
            store,
            keys,
            clock,
            options,
            metrics: Arc::new(Metrics::default()),
        }
    }

    /// Records into `metrics` (each limiter has its own otherwise).
    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> Self {
        self.metrics = metrics;
        self
    }

    /// The metrics this limiter records into.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// The rules in force.
    pub fn rules(&self) -> &Rules {
        &self.rules
    }

    /// The counter store.
    pub fn store(&self) -> &Arc<dyn CounterStore> {
        &self.store
    }

    /// Global shadow mode: every answer is OK.
    pub fn shadow_mode(&self) -> bool {
        self.options.global_shadow_mode
    }

    /// The counter key builder.
    pub fn keys(&self) -> &CacheKey {
        &self.keys
    }

    /// The clock decisions read.
    pub fn clock(&self) -> &Clock {
        &self.clock
    }

    /// Decides a validated request.
    pub async fn decide(&self, request: &Request<'_>) -> Result<Decision, LimiterError> {
        let rules = self.rules.current();
        let domain = rules.domain(request.domain);
        if domain.is_none() {
            self.metrics.record_domain_not_found(request.domain);
        }
        let (plans, checks) = self.plan(domain, request);

        let Applied {
            outcomes,
            degraded,
            from_local_cache,
        } = if checks.is_empty() {
            Applied::default()
        } else {
            let on_failure = domain.and_then(|d| d.on_store_failure());
            let started = tokio::time::Instant::now();
            let span = tracing::debug_span!(
                "store.apply",
                store = self.store.kind(),
                checks = checks.len()
            );
            let applied = self
                .store
                .apply(&checks, self.options(checks.len(), on_failure))
                .instrument(span)
                .await;
            self.metrics.record_store(
                started.elapsed(),
                applied.is_err(),
                applied.as_ref().is_ok_and(|a| a.degraded),
            );
            applied?
        };
        if outcomes.len() != checks.len() {
            return Err(StoreError::Protocol(format!(
                "the store returned {} outcomes for {} checks",
                outcomes.len(),
                checks.len()
            ))
            .into());
        }
        let mut decision = self.conclude(request, plans, &outcomes, &from_local_cache);
        decision.degraded = degraded;
        Ok(decision)
    }

    /// Matches each descriptor and lays out the store checks its limits
    /// need now (the plan says which checks speak for which descriptor).
    fn plan<'r>(
        &self,
        domain: Option<&'r Domain>,
        request: &Request<'_>,
    ) -> (Vec<Plan<'r>>, Vec<Check>) {
        let _span =
            tracing::debug_span!("rules.match", descriptors = request.descriptors.len()).entered();
        let mut matched: Vec<Option<Matched<'r>>> = match domain {
            None => request.descriptors.iter().map(|_| None).collect(),
            Some(domain) => request
                .descriptors
                .iter()
                .map(|d| Self::find(domain, d))
                .collect(),
        };
        drop_replaced(&mut matched);
        let now = self.clock.now().as_secs();
        let mut checks = Vec::new();
        let plans: Vec<Plan<'_>> = request
            .descriptors
            .iter()
            .zip(matched)
            .map(|(descriptor, m)| match m {
                None => Plan::NoLimit(None),
                Some(m) => self.plan_one(request.domain, descriptor, m, now, &mut checks),
            })
            .collect();
        (plans, checks)
    }

    /// One matched descriptor's plan, its checks pushed onto `checks`.
    fn plan_one<'r>(
        &self,
        domain: &str,
        descriptor: &Descriptor<'_>,
        m: Matched<'r>,
        now: u64,
        checks: &mut Vec<Check>,
    ) -> Plan<'r> {
        let Matched {
            limits,
            node,
            shared,
            capacity,
        } = m;
        // Only a rejection that rejects the request may stop the
        // others from taking (stop_increment_when_over_limit).
        let veto = !self.options.global_shadow_mode
            && !node.is_some_and(|n| n.shadow_mode || n.quota_mode);
        // The key names the entries down to the rule's node (for a
        // capacity rule, not its client and priority entries).
        let depth = capacity.map_or(usize::MAX, |(_, at)| at.depth);
        let entries = descriptor
            .pairs()
            .take(depth)
            .enumerate()
            .map(|(i, (k, v))| {
                let shared = shared.iter().find(|(at, _)| *at == i);
                (k, shared.map_or(v, |(_, pattern)| *pattern))
            });
        if let Some(capacity) = capacity {
            let key = self.keys.build(domain, entries, KeySuffix::Capacity);
            return Self::plan_capacity(descriptor, node, capacity, (key, veto), now, checks);
        }
        match limits.first() {
            None => return Plan::NoLimit(node),
            Some((_, Allowance::Unlimited, _)) => return Plan::Unlimited(node),
            Some(_) => {}
        }
        let applied = self.plan_windows(domain, descriptor, limits, entries, (veto, now), checks);
        Plan::Count {
            limits: applied,
            node,
            capacity: None,
        }
    }

    /// The checks of a descriptor's per-unit limits (keyed by `entries`),
    /// pushed onto `checks`; each limit that applies, with its check's index.
    fn plan_windows<'e>(
        &self,
        domain: &str,
        descriptor: &Descriptor<'_>,
        limits: Vec<(usize, Allowance, Option<Arc<str>>)>,
        entries: impl Iterator<Item = (&'e str, &'e str)> + Clone,
        (veto, now): (bool, u64),
        checks: &mut Vec<Check>,
    ) -> Vec<(AppliedLimit, usize)> {
        let mut applied = Vec::with_capacity(limits.len());
        for (index, allowance, name) in limits {
            let Allowance::PerUnit {
                requests_per_unit,
                unit,
                unit_multiplier,
                algorithm,
                burst,
            } = allowance
            else {
                continue;
            };
            // Fixed windows are whole seconds, as in the reference: a window
            // of length `len` starts at floor(now / len) * len and resets
            // `len - now % len` seconds from now (so never 0).
            let len = unit.window().as_secs() * u64::from(unit_multiplier);
            let start = now / len * len;
            // The first limit keeps the reference's key; further ones
            // (rate_limits) and other algorithms get a suffix.
            let suffix = match (algorithm, index) {
                (Algorithm::FixedWindow, 0) => KeySuffix::Window(start),
                (Algorithm::FixedWindow, i) => KeySuffix::WindowIndex(start, i),
                (a, i) => KeySuffix::Algorithm(a, i),
            };
            let rate = Rate {
                limit: u64::from(requests_per_unit),
                period_ms: (len * 1_000) as f64,
                burst: u64::from(burst.unwrap_or(requests_per_unit)),
            };
            checks.push(Check {
                key: self.keys.build(domain, entries.clone(), suffix),
                hits: descriptor.hits,
                limit: Limit::of(algorithm, rate, Duration::from_secs(start + len - now)),
                veto,
            });
            let limit = AppliedLimit {
                requests_per_unit,
                unit,
                name,
            };
            applied.push((limit, checks.len() - 1));
        }
        applied
    }

    /// A capacity rule's check for `descriptor` (under `key`): who asks, in
    /// which class.
    fn plan_capacity<'r>(
        descriptor: &Descriptor<'_>,
        node: Option<&'r Node>,
        (rule, at): (&'r Arc<CapacityRule>, CapacityMatch),
        (key, veto): (String, bool),
        now: u64,
        checks: &mut Vec<Check>,
    ) -> Plan<'r> {
        let value = |at: Option<usize>| {
            at.and_then(|i| descriptor.entries.get(i))
                .map(|e| e.value.as_str())
        };
        let client = value(at.client_at).unwrap_or_default();
        let class = rule.class_of(value(at.class_at));
        let len = rule.window_secs();
        checks.push(Check {
            key,
            hits: descriptor.hits,
            limit: Limit::Capacity(CapacityCall {
                rule: rule.clone(),
                client: client.to_owned(),
                weight: rule.weight_of(client),
                class,
                reset_after: Duration::from_secs(len - now % len),
            }),
            veto,
        });
        let limit = AppliedLimit {
            requests_per_unit: u32::try_from(rule.limits.total).unwrap_or(u32::MAX),
            unit: rule.unit,
            name: rule.name.clone(),
        };
        Plan::Count {
            limits: vec![(limit, checks.len() - 1)],
            node,
            capacity: Some(CapacityPlan {
                rule,
                class,
                client_at: at.client_at,
            }),
        }
    }

    /// Reads the state of `request`'s counters without counting anything
    /// (an operator's view): the decision as if each descriptor asked for
    /// zero hits.
    pub async fn peek(&self, request: &Request<'_>) -> Result<Decision, LimiterError> {
        let mut request = request.clone();
        for d in &mut request.descriptors {
            d.hits = 0;
        }
        self.decide(&request).await
    }

    /// Deletes the counters `request`'s descriptors use now (every limit
    /// that applies to them), so their next call starts afresh. Returns
    /// how many counters existed.
    pub async fn reset(&self, request: &Request<'_>) -> Result<u64, LimiterError> {
        let rules = self.rules.current();
        let Some(domain) = rules.domain(request.domain) else {
            return Ok(0);
        };
        let (_, checks) = self.plan(Some(domain), request);
        let keys: Vec<String> = checks.into_iter().map(|c| c.key).collect();
        if keys.is_empty() {
            return Ok(0);
        }
        Ok(self.store.reset(&keys).await?)
    }

    /// How a request's checks commit, and the domain's failure policy.
    fn options(&self, checks: usize, on_failure: Option<FailurePolicy>) -> CallOptions {
        let commit = if self.options.stop_increment_when_over_limit && checks > 1 {
            Commit::AllOrNothing
        } else {
            Commit::Each
        };
        CallOptions { commit, on_failure }
    }

    /// The rule (or override) that applies to `d` in `domain`, if any.
    fn find<'r>(domain: &'r Domain, d: &Descriptor<'_>) -> Option<Matched<'r>> {
        if d.negative {
            // Giving budget back is not supported yet: not counted, no limit.
            return None;
        }
        if let Some(o) = d.limit_override {
            // A caller's override wins over the rules, in a known domain.
            let limits = vec![(0, Allowance::fixed(o.requests_per_unit, o.unit), None)];
            return Some(Matched {
                limits,
                node: None,
                shared: Vec::new(),
                capacity: None,
            });
        }
        let m = domain.find(d.pairs())?;
        let limits = m
            .node
            .rate_limits
            .iter()
            .enumerate()
            .map(|(i, l)| (i, l.allowance, l.name.clone()))
            .collect();
        Some(Matched {
            limits,
            node: Some(m.node),
            shared: m.shared,
            capacity: m.node.capacity.as_ref().zip(m.capacity),
        })
    }

    /// Counts a descriptor's hits under its rule's metrics key, with the
    /// outcome of the limit that speaks for it.
    fn record(
        &self,
        domain: &str,
        descriptor: &Descriptor<'_>,
        (key, node): (&Cow<'_, str>, Option<&Node>),
        limit: &AppliedLimit,
        outcome: Outcome,
        from_local_cache: bool,
    ) {
        self.metrics.record_rule(
            domain,
            key,
            matches!(key, Cow::Owned(_)),
            RuleOutcome {
                hits: descriptor.hits,
                allowed: outcome.allowed,
                shadow: node.is_some_and(|n| n.shadow_mode),
                from_local_cache,
                limit: (outcome.capacity.is_none()).then_some(u64::from(limit.requests_per_unit)),
                remaining: outcome.remaining,
            },
        );
    }

    /// The limit a capacity decision reports: the client's share when
    /// admitted; when rejected, the bound that rejected it, named so
    /// ([`crate::model::capacity::LimitNames`]).
    fn capacity_limit(plan: &CapacityPlan<'_>, verdict: Verdict, limit: u64) -> AppliedLimit {
        AppliedLimit {
            requests_per_unit: u32::try_from(limit).unwrap_or(u32::MAX),
            unit: plan.rule.unit,
            name: Some(plan.rule.names.of(verdict, plan.class).clone()),
        }
    }

    /// Counts a capacity decision by class and by client.
    fn record_capacity(
        &self,
        domain: &str,
        descriptor: &Descriptor<'_>,
        (key, dynamic): (&str, bool),
        plan: &CapacityPlan<'_>,
        verdict: Verdict,
    ) {
        if descriptor.hits == 0 {
            // A peek: nothing to count, and no series to make.
            return;
        }
        let client = plan
            .client_at
            .and_then(|i| descriptor.entries.get(i))
            .map_or("", |e| e.value.as_str());
        let class = plan.rule.class_name(plan.class).map_or("", |c| &**c);
        let at = CapacityKey {
            domain,
            key,
            dynamic,
            class,
            client,
        };
        self.metrics.record_capacity(at, verdict, descriptor.hits);
    }

    /// The decision from the outcomes; each counted descriptor is recorded
    /// in the metrics on the way.
    fn conclude(
        &self,
        request: &Request<'_>,
        plans: Vec<Plan<'_>>,
        outcomes: &[Outcome],
        from_local_cache: &[bool],
    ) -> Decision {
        let metadata = |node: Option<&Node>| node.and_then(|n| n.metadata.clone());
        let statuses: Vec<Status> = plans
            .into_iter()
            .zip(&request.descriptors)
            .map(|(plan, descriptor)| match plan {
                Plan::NoLimit(node) => Status {
                    metadata: metadata(node),
                    ..Status::no_limit()
                },
                Plan::Unlimited(node) => Status {
                    remaining: u32::MAX,
                    metadata: metadata(node),
                    ..Status::no_limit()
                },
                Plan::Count {
                    limits,
                    node,
                    capacity,
                } => {
                    let counted = Counted {
                        limits: &limits,
                        node,
                        capacity: capacity.as_ref(),
                    };
                    self.counted_status(
                        request.domain,
                        descriptor,
                        counted,
                        outcomes,
                        from_local_cache,
                    )
                }
            })
            .collect();
        Decision {
            overall: self.overall(&statuses),
            statuses,
            degraded: false,
        }
    }

    /// The status of a counted descriptor: its most restrictive limit's
    /// outcome, recorded in the metrics.
    fn counted_status(
        &self,
        domain: &str,
        descriptor: &Descriptor<'_>,
        Counted {
            limits,
            node,
            capacity,
        }: Counted<'_, '_>,
        outcomes: &[Outcome],
        from_local_cache: &[bool],
    ) -> Status {
        let Some((limit, at)) = most_restrictive(limits, outcomes) else {
            return Status::no_limit();
        };
        let (mut limit, outcome) = (limit.clone(), outcomes[*at]);
        let cached = from_local_cache.get(*at).copied().unwrap_or(false);
        let key = stat_key(descriptor, node);
        if let (Some(plan), Some(decided)) = (capacity, outcome.capacity) {
            limit = Self::capacity_limit(plan, decided.verdict, decided.limit);
            let at = (&*key, matches!(key, Cow::Owned(_)));
            self.record_capacity(domain, descriptor, at, plan, decided.verdict);
        }
        self.record(domain, descriptor, (&key, node), &limit, outcome, cached);
        let shadow = node.is_some_and(|n| n.shadow_mode);
        Status {
            code: if !outcome.allowed && !shadow {
                Code::OverLimit
            } else {
                Code::Ok
            },
            remaining: u32::try_from(outcome.remaining).unwrap_or(u32::MAX),
            reset_after: Some(outcome.reset_after),
            quota_mode: node.is_some_and(|n| n.quota_mode),
            metadata: node.and_then(|n| n.metadata.clone()),
            limit: Some(limit),
        }
    }

    /// OVER_LIMIT if any non-quota descriptor is over, or if every
    /// quota-mode descriptor is over, unless in global shadow mode.
    fn overall(&self, statuses: &[Status]) -> Code {
        let (mut plain_over, mut quota, mut quota_over) = (false, 0, 0);
        for s in statuses {
            let over = s.code == Code::OverLimit;
            if s.quota_mode {
                quota += 1;
                quota_over += usize::from(over);
            } else {
                plain_over |= over;
            }
        }
        let over = plain_over || (quota > 0 && quota_over == quota);
        if over && !self.options.global_shadow_mode {
            Code::OverLimit
        } else {
            Code::Ok
        }
    }
}

/// A counted descriptor's plan, borrowed for [`Limiter::counted_status`].
struct Counted<'p, 'r> {
    limits: &'p [(AppliedLimit, usize)],
    node: Option<&'r Node>,
    capacity: Option<&'p CapacityPlan<'r>>,
}

/// A descriptor's key in the metrics: its rule's stat key (a capacity
/// rule's stops at its node), or for an override every entry's value, as
/// the reference names it. Owned when built from request values.
fn stat_key<'n>(descriptor: &Descriptor<'_>, node: Option<&'n Node>) -> Cow<'n, str> {
    match node {
        Some(node) => node.stat_key(descriptor.pairs()),
        None => {
            let mut key = String::new();
            for (i, (k, v)) in descriptor.pairs().enumerate() {
                if i > 0 {
                    key.push('.');
                }
                key.push_str(k);
                key.push('_');
                key.push_str(v);
            }
            Cow::Owned(key)
        }
    }
}

/// The limit that speaks for a descriptor: a rejecting one (the longest
/// wait), else the one with the least remaining.
fn most_restrictive<'l>(
    limits: &'l [(AppliedLimit, usize)],
    outcomes: &[Outcome],
) -> Option<&'l (AppliedLimit, usize)> {
    limits.iter().max_by(|(_, a), (_, b)| {
        let (a, b) = (&outcomes[*a], &outcomes[*b]);
        (
            !a.allowed,
            a.allowed.then_some(std::cmp::Reverse(a.remaining)),
            a.reset_after,
        )
            .cmp(&(
                !b.allowed,
                b.allowed.then_some(std::cmp::Reverse(b.remaining)),
                b.reset_after,
            ))
    })
}

/// Drops every configured limit whose name another matched limit
/// `replaces`: it is not counted and answers OK with no limit.
fn drop_replaced(matched: &mut [Option<Matched<'_>>]) {
    let replaced: HashSet<Arc<str>> = matched
        .iter()
        .flatten()
        .filter_map(|m| m.node)
        .flat_map(|node| {
            node.rate_limits
                .iter()
                .flat_map(|l| l.replaces.iter().cloned())
        })
        .collect();
    if replaced.is_empty() {
        return;
    }
    for m in matched.iter_mut().flatten() {
        if m.node.is_some() {
            m.limits
                .retain(|(_, _, name)| !name.as_ref().is_some_and(|n| replaced.contains(n)));
        }
    }
}
