//! The decision: step three of the request path. For a validated
//! [`Request`], the limiter finds each descriptor's limit in the rules (or
//! the caller's override), drops limits that another matched limit
//! `replaces`, sends one [`CounterHit`] per remaining limit to the store in a
//! single call, and turns the counts into a [`Decision`].
//!
//! Counting is a fixed window aligned to the Unix epoch: the window of a
//! limit with unit `u` starts at `floor(now / len(u)) * len(u)`. A hit is over
//! the limit when the count after it is strictly greater than the limit.

mod request;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

pub use request::{Descriptor, Override, Request, RequestError, RequestLimits};

use crate::clock::Clock;
use crate::rules::{Allowance, Node, Rules, Unit};
use crate::store::key::CacheKey;
use crate::store::{CounterHit, CounterStore, StoreError};

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
}

/// Decides requests against the rules in force, counting in a store.
#[derive(Debug, Clone)]
pub struct Limiter {
    rules: Rules,
    store: Arc<dyn CounterStore>,
    keys: CacheKey,
    clock: Clock,
    options: LimiterOptions,
}

/// A descriptor's limit, found in the rules or sent by the caller.
struct Matched<'r> {
    allowance: Allowance,
    name: Option<Arc<str>>,
    /// The rules node, `None` for an override.
    node: Option<&'r Node>,
    /// Entries counted under their wildcard pattern (`share_threshold`).
    shared: Vec<(usize, &'r str)>,
}

/// What a descriptor needs, before counting.
enum Plan<'r> {
    NoLimit,
    Unlimited,
    Count {
        limit: AppliedLimit,
        node: Option<&'r Node>,
        hit: usize,
    },
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
        }
    }

    /// The rules in force.
    pub fn rules(&self) -> &Rules {
        &self.rules
    }

    /// The counter store.
    pub fn store(&self) -> &Arc<dyn CounterStore> {
        &self.store
    }

    /// Decides a validated request.
    pub async fn decide(&self, request: &Request<'_>) -> Result<Decision, LimiterError> {
        let rules = self.rules.current();
        let mut matched: Vec<Option<Matched<'_>>> = match rules.domain(request.domain) {
            None => request.descriptors.iter().map(|_| None).collect(),
            Some(domain) => request
                .descriptors
                .iter()
                .map(|d| match d.limit_override {
                    // A caller's override wins over the rules, in a known domain.
                    Some(o) => Some(Matched {
                        allowance: Allowance::PerUnit {
                            requests_per_unit: o.requests_per_unit,
                            unit: o.unit,
                        },
                        name: None,
                        node: None,
                        shared: Vec::new(),
                    }),
                    None => domain.find(d.pairs()).and_then(|m| {
                        let limit = m.node.rate_limit.as_ref()?;
                        Some(Matched {
                            allowance: limit.allowance.clone(),
                            name: limit.name.clone(),
                            node: Some(m.node),
                            shared: m.shared,
                        })
                    }),
                })
                .collect(),
        };
        drop_replaced(&mut matched);

        let now = self.clock.now();
        let mut hits = Vec::new();
        let plans: Vec<Plan<'_>> = request
            .descriptors
            .iter()
            .zip(matched)
            .map(|(descriptor, m)| {
                let Some(Matched {
                    allowance,
                    name,
                    node,
                    shared,
                }) = m
                else {
                    return Plan::NoLimit;
                };
                let Allowance::PerUnit {
                    requests_per_unit,
                    unit,
                } = allowance
                else {
                    return Plan::Unlimited;
                };
                let window = unit.window();
                let start = now.as_secs() / window.as_secs() * window.as_secs();
                let entries = descriptor.pairs().enumerate().map(|(i, (k, v))| {
                    (
                        k,
                        shared
                            .iter()
                            .find(|(at, _)| *at == i)
                            .map_or(v, |(_, pattern)| *pattern),
                    )
                });
                hits.push(CounterHit {
                    key: self.keys.build(request.domain, entries, start),
                    hits: descriptor.hits,
                    window,
                    reset_after: Duration::from_secs(start + window.as_secs()).saturating_sub(now),
                });
                Plan::Count {
                    limit: AppliedLimit {
                        requests_per_unit,
                        unit,
                        name,
                    },
                    node,
                    hit: hits.len() - 1,
                }
            })
            .collect();

        let counts = if hits.is_empty() {
            Vec::new()
        } else {
            self.store.increment(&hits).await?
        };
        Ok(self.conclude(plans, &hits, &counts))
    }

    fn conclude(&self, plans: Vec<Plan<'_>>, hits: &[CounterHit], counts: &[u64]) -> Decision {
        let statuses: Vec<Status> = plans
            .into_iter()
            .map(|plan| match plan {
                Plan::NoLimit => Status::no_limit(),
                Plan::Unlimited => Status {
                    remaining: u32::MAX,
                    ..Status::no_limit()
                },
                Plan::Count { limit, node, hit } => {
                    let count = counts[hit];
                    let allowed = u64::from(limit.requests_per_unit);
                    let over = count > allowed;
                    let shadow = node.is_some_and(|n| n.shadow_mode);
                    Status {
                        code: if over && !shadow {
                            Code::OverLimit
                        } else {
                            Code::Ok
                        },
                        remaining: allowed.saturating_sub(count) as u32,
                        reset_after: Some(hits[hit].reset_after),
                        quota_mode: node.is_some_and(|n| n.quota_mode),
                        metadata: node.and_then(|n| n.metadata.clone()),
                        limit: Some(limit),
                    }
                }
            })
            .collect();
        let over = |s: &&Status| s.code == Code::OverLimit;
        let any_plain_over = statuses.iter().filter(|s| !s.quota_mode).any(|s| over(&s));
        let quota: Vec<&Status> = statuses.iter().filter(|s| s.quota_mode).collect();
        let all_quota_over = !quota.is_empty() && quota.iter().all(over);
        let overall = if (any_plain_over || all_quota_over) && !self.options.global_shadow_mode {
            Code::OverLimit
        } else {
            Code::Ok
        };
        Decision { overall, statuses }
    }
}

/// Drops every configured limit whose name another matched limit
/// `replaces`: it is not counted and answers OK with no limit.
fn drop_replaced(matched: &mut [Option<Matched<'_>>]) {
    let replaced: HashSet<Arc<str>> = matched
        .iter()
        .flatten()
        .filter_map(|m| m.node?.rate_limit.as_ref())
        .flat_map(|limit| limit.replaces.iter().cloned())
        .collect();
    if replaced.is_empty() {
        return;
    }
    for slot in matched.iter_mut() {
        let is_replaced = slot.as_ref().is_some_and(|m| {
            m.node.is_some() && m.name.as_ref().is_some_and(|n| replaced.contains(n))
        });
        if is_replaced {
            *slot = None;
        }
    }
}
