//! The decision: step three of the request path. For a validated
//! [`Request`], the limiter finds each descriptor's limit in the rules (or
//! the caller's override), drops limits that another matched limit
//! `replaces`, sends one [`CounterHit`] per remaining limit to the store in a
//! single call, and turns the counts into a [`Decision`].
//!
//! Counting is a fixed window aligned to the Unix epoch: the window of a
//! limit with unit `u` starts at `floor(now / len(u)) * len(u)`. A hit is over
//! the limit when the count after it is strictly greater than the limit.

pub mod algorithm;
mod request;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

pub use request::{Descriptor, MAX_HITS, Override, Request, RequestError, RequestLimits};

use crate::clock::Clock;
use crate::rules::{Allowance, Domain, Node, Rules, Unit};
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

/// A descriptor's match in the rules, or the caller's override.
struct Matched<'r> {
    /// `None` for an allow-list node (no `rate_limit`).
    allowance: Option<Allowance>,
    name: Option<Arc<str>>,
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
                .map(|d| Self::find(domain, d))
                .collect(),
        };
        drop_replaced(&mut matched);

        // Windows are whole seconds, as in the reference: a window of length
        // `len` starts at floor(now / len) * len and resets `len - now % len`
        // seconds from now (so never 0).
        let now = self.clock.now().as_secs();
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
                    return Plan::NoLimit(None);
                };
                let (requests_per_unit, unit) = match allowance {
                    None => return Plan::NoLimit(node),
                    Some(Allowance::Unlimited) => return Plan::Unlimited(node),
                    Some(Allowance::PerUnit {
                        requests_per_unit,
                        unit,
                    }) => (requests_per_unit, unit),
                };
                let window = unit.window();
                let len = window.as_secs();
                let start = now / len * len;
                let entries = descriptor.pairs().enumerate().map(|(i, (k, v))| {
                    let shared = shared.iter().find(|(at, _)| *at == i);
                    (k, shared.map_or(v, |(_, pattern)| *pattern))
                });
                hits.push(CounterHit {
                    key: self.keys.build(request.domain, entries, start),
                    hits: descriptor.hits,
                    window,
                    reset_after: Duration::from_secs(start + len - now),
                });
                let limit = AppliedLimit {
                    requests_per_unit,
                    unit,
                    name,
                };
                Plan::Count {
                    limit,
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
        if counts.len() != hits.len() {
            return Err(StoreError::Protocol(format!(
                "the store returned {} counts for {} counters",
                counts.len(),
                hits.len()
            ))
            .into());
        }
        Ok(self.conclude(plans, &hits, &counts))
    }

    /// The rule (or override) that applies to `d` in `domain`, if any.
    fn find<'r>(domain: &'r Domain, d: &Descriptor<'_>) -> Option<Matched<'r>> {
        if d.negative {
            // Giving budget back is not supported yet: not counted, no limit.
            return None;
        }
        if let Some(o) = d.limit_override {
            // A caller's override wins over the rules, in a known domain.
            let allowance = Allowance::PerUnit {
                requests_per_unit: o.requests_per_unit,
                unit: o.unit,
            };
            return Some(Matched {
                allowance: Some(allowance),
                name: None,
                node: None,
                shared: Vec::new(),
            });
        }
        let m = domain.find(d.pairs())?;
        let limit = m.node.rate_limit.as_ref();
        Some(Matched {
            allowance: limit.map(|l| l.allowance),
            name: limit.and_then(|l| l.name.clone()),
            node: Some(m.node),
            shared: m.shared,
        })
    }

    fn conclude(&self, plans: Vec<Plan<'_>>, hits: &[CounterHit], counts: &[u64]) -> Decision {
        let metadata = |node: Option<&Node>| node.and_then(|n| n.metadata.clone());
        let statuses: Vec<Status> = plans
            .into_iter()
            .map(|plan| match plan {
                Plan::NoLimit(node) => Status {
                    metadata: metadata(node),
                    ..Status::no_limit()
                },
                Plan::Unlimited(node) => Status {
                    remaining: u32::MAX,
                    metadata: metadata(node),
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
                        // At most `allowed`, which is a u32.
                        remaining: allowed.saturating_sub(count) as u32,
                        reset_after: Some(hits[hit].reset_after),
                        quota_mode: node.is_some_and(|n| n.quota_mode),
                        metadata: metadata(node),
                        limit: Some(limit),
                    }
                }
            })
            .collect();
        let (mut plain_over, mut quota, mut quota_over) = (false, 0, 0);
        for s in &statuses {
            let over = s.code == Code::OverLimit;
            if s.quota_mode {
                quota += 1;
                quota_over += usize::from(over);
            } else {
                plain_over |= over;
            }
        }
        let over = plain_over || (quota > 0 && quota_over == quota);
        let overall = if over && !self.options.global_shadow_mode {
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
