//! Prometheus metrics, served as text on `GET /metrics` of the HTTP port.
//!
//! Beside the request path rather than on it: the limiter records each
//! descriptor's outcome under its rule ([`Metrics::record_rule`]), the RPC
//! layer each call's code and latency, the store layer its latency and
//! errors, the reloader each reload. Counters are atomics; a rule's series
//! is found under a read lock and created under a write lock once.
//!
//! Cardinality is bounded. `detailed_metric`, `value_to_metric` and
//! overrides put request values in a rule's `key` label, so each domain keeps
//! at most `max_series_per_domain` keys; hits of any further key are counted
//! under `key="__overflow__"`. Unknown domains (the caller's text) are
//! bounded the same way for `domain_not_found`.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use crate::model::capacity::Verdict;

/// The `key` (or `domain`) label of series past the cap.
pub const OVERFLOW: &str = "__overflow__";
/// Most unknown domains counted by name.
const MAX_UNKNOWN_DOMAINS: usize = 100;
/// Histogram bucket bounds, in seconds.
const BUCKETS: [f64; 14] = [
    0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

/// Metric settings.
#[derive(Clone, Debug, PartialEq)]
pub struct MetricsSettings {
    /// Hits above `floor(limit × ratio)` and within the limit count as
    /// `near_limit` (default 0.8).
    pub near_limit_ratio: f64,
    /// Rule series (`key` labels) per domain before `__overflow__`.
    pub max_series_per_domain: usize,
}

impl Default for MetricsSettings {
    fn default() -> Self {
        MetricsSettings {
            near_limit_ratio: 0.8,
            max_series_per_domain: 1_000,
        }
    }
}

/// One rule's counters (the reference's stats, in hits).
#[derive(Debug, Default)]
pub struct RuleCounters {
    total_hits: AtomicU64,
    over_limit: AtomicU64,
    near_limit: AtomicU64,
    within_limit: AtomicU64,
    shadow_mode: AtomicU64,
    over_limit_with_local_cache: AtomicU64,
}

/// What happened to one descriptor under its rule.
#[derive(Clone, Copy, Debug)]
pub struct RuleOutcome {
    /// Hits asked for.
    pub hits: u64,
    /// The store allowed them.
    pub allowed: bool,
    /// The rule is in shadow mode (a rejection was answered OK).
    pub shadow: bool,
    /// The rejection came from the local over-limit cache.
    pub from_local_cache: bool,
    /// The limit (hits per window), for `near_limit`; `None` where the
    /// limit is not one number (a capacity rule's share, which the client
    /// may go past by borrowing): not counted as near.
    pub limit: Option<u64>,
    /// Hits left after this one.
    pub remaining: u64,
}

/// Where a capacity decision is counted.
#[derive(Clone, Copy, Debug)]
pub struct CapacityKey<'a> {
    /// The domain.
    pub domain: &'a str,
    /// The rule's stat key (as for `floodgate_rule_*`).
    pub key: &'a str,
    /// The key carries request values (capped).
    pub dynamic: bool,
    /// The priority class (empty without classes).
    pub class: &'a str,
    /// The client (empty without a client entry).
    pub client: &'a str,
}

/// A call's outcome, for `floodgate_calls_total{code}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CallCode {
    /// Answered OK.
    Ok,
    /// Answered OVER_LIMIT.
    OverLimit,
    /// The request was invalid.
    InvalidArgument,
    /// Shed under load.
    Overloaded,
    /// No decision could be made (store error, deadline).
    Error,
}

impl CallCode {
    const ALL: [CallCode; 5] = [
        CallCode::Ok,
        CallCode::OverLimit,
        CallCode::InvalidArgument,
        CallCode::Overloaded,
        CallCode::Error,
    ];

    fn label(self) -> &'static str {
        match self {
            CallCode::Ok => "ok",
            CallCode::OverLimit => "over_limit",
            CallCode::InvalidArgument => "invalid_argument",
            CallCode::Overloaded => "overloaded",
            CallCode::Error => "error",
        }
    }
}

/// A latency histogram with fixed buckets.
#[derive(Debug, Default)]
struct Histogram {
    /// One per bound, and one past the last (`+Inf`): the count is their
    /// sum, so `+Inf` and `_count` always agree with the buckets.
    buckets: [AtomicU64; BUCKETS.len() + 1],
    sum_nanos: AtomicU64,
}

impl Histogram {
    fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        let i = BUCKETS
            .iter()
            .position(|b| secs <= *b)
            .unwrap_or(BUCKETS.len());
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        self.sum_nanos.fetch_add(
            u64::try_from(d.as_nanos()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        let mut cumulative = 0;
        for (bound, bucket) in BUCKETS.iter().zip(&self.buckets) {
            cumulative += bucket.load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {cumulative}");
        }
        let count = cumulative + self.buckets[BUCKETS.len()].load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
        let sum = self.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9;
        let _ = writeln!(out, "{name}_sum {sum}\n{name}_count {count}");
    }
}

/// What a metric family is, as its `# TYPE` line says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Only goes up.
    Counter,
    /// Goes up and down.
    Gauge,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
        }
    }
}

/// A metric family: its name, help text and kind (the `# HELP` and `# TYPE`
/// lines above its series).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Family {
    /// The metric name.
    pub name: &'static str,
    /// The `# HELP` text.
    pub help: &'static str,
    /// The `# TYPE`.
    pub kind: Kind,
}

impl Family {
    /// A counter family.
    pub const fn counter(name: &'static str, help: &'static str) -> Self {
        Family {
            name,
            help,
            kind: Kind::Counter,
        }
    }

    /// A gauge family.
    pub const fn gauge(name: &'static str, help: &'static str) -> Self {
        Family {
            name,
            help,
            kind: Kind::Gauge,
        }
    }

    /// Appends the family's `# HELP` and `# TYPE` lines.
    pub fn header(&self, out: &mut String) {
        header(out, self.name, self.help, self.kind);
    }
}

/// A family's one unlabelled value, read when `/metrics` is scraped.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Sample {
    /// What the value is.
    pub family: Family,
    /// The value now.
    pub value: f64,
}

/// Values read from elsewhere when `/metrics` is scraped (the store's
/// breaker and mode, [`crate::resilience::store`]).
pub type SampleSource = Arc<dyn Fn() -> Vec<Sample> + Send + Sync>;

/// Series written by another part at each scrape, in the text format
/// (the listeners' connection counters, [`crate::transport`]).
pub type TextSource = Arc<dyn Fn(&mut String) + Send + Sync>;

/// One domain's rule series.
#[derive(Debug, Default)]
struct DomainSeries {
    /// By `key` label.
    named: HashMap<Box<str>, Arc<RuleCounters>>,
    /// How many of them carry request values (the capped kind).
    dynamic: usize,
    /// Where request-valued keys past the cap are counted.
    overflow: Option<Arc<RuleCounters>>,
}
/// One of a rule's counters.
type Field = fn(&RuleCounters) -> &AtomicU64;

/// Every metric of one server.
pub struct Metrics {
    settings: MetricsSettings,
    rules: RwLock<HashMap<Arc<str>, DomainSeries>>,
    domain_not_found: Mutex<HashMap<Box<str>, u64>>,
    calls: [AtomicU64; 5],
    call_latency: Histogram,
    store_latency: Histogram,
    store_errors: AtomicU64,
    degraded_answers: AtomicU64,
    reloads_ok: AtomicU64,
    reloads_failed: AtomicU64,
    rules_version: RwLock<String>,
    samples: RwLock<Vec<SampleSource>>,
    texts: RwLock<Vec<TextSource>>,
    capacity: Mutex<CapacitySeries>,
}

/// Capacity rules' hits: per (domain, rule key), by class and verdict, and
/// by client and admitted or not.
#[derive(Debug, Default)]
struct CapacitySeries {
    domains: HashMap<Box<str>, CapacityDomain>,
}

/// One domain's capacity series. Keys built from request values
/// (`detailed_metric`, `value_to_metric`) and clients are each capped at
/// `max_series_per_domain`.
#[derive(Debug, Default)]
struct CapacityDomain {
    keys: HashMap<Box<str>, CapacityRuleSeries>,
    /// Keys built from request values.
    dynamic: usize,
    /// Client series over every key.
    clients: usize,
}

#[derive(Debug, Default)]
struct CapacityRuleSeries {
    /// Class → hits per verdict (by [`Verdict::code`]).
    classes: HashMap<Box<str>, [u64; Verdict::COUNT]>,
    /// Client → [admitted, rejected] hits.
    clients: HashMap<Box<str>, [u64; 2]>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new(MetricsSettings::default())
    }
}

/// Reads through a poisoned lock: every update under these locks is a
/// single insert or assignment, so the data stays consistent.
fn read<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(|p| p.into_inner())
}

fn write<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(|p| p.into_inner())
}

impl Metrics {
    /// Empty metrics.
    pub fn new(settings: MetricsSettings) -> Self {
        Metrics {
            settings,
            rules: RwLock::default(),
            domain_not_found: Mutex::default(),
            calls: Default::default(),
            call_latency: Histogram::default(),
            store_latency: Histogram::default(),
            store_errors: AtomicU64::new(0),
            degraded_answers: AtomicU64::new(0),
            reloads_ok: AtomicU64::new(0),
            reloads_failed: AtomicU64::new(0),
            rules_version: RwLock::default(),
            samples: RwLock::default(),
            texts: RwLock::default(),
            capacity: Mutex::default(),
        }
    }

    /// The counters of rule `key` in `domain`. A `dynamic` key (one built
    /// from request values) past the domain's cap gets the overflow series;
    /// configured keys are bounded by the rules and never capped.
    fn rule(&self, domain: &str, key: &str, dynamic: bool) -> Arc<RuleCounters> {
        let cap = self.settings.max_series_per_domain;
        if let Some(series) = read(&self.rules).get(domain) {
            if let Some(c) = series.named.get(key) {
                return c.clone();
            }
            // Full: the common case under a flood of values, on the read lock.
            if dynamic
                && series.dynamic >= cap
                && let Some(overflow) = &series.overflow
            {
                return overflow.clone();
            }
        }
        let mut rules = write(&self.rules);
        if !rules.contains_key(domain) {
            rules.insert(Arc::from(domain), DomainSeries::default());
        }
        let Some(series) = rules.get_mut(domain) else {
            return Arc::default();
        };
        if let Some(c) = series.named.get(key) {
            return c.clone();
        }
        if dynamic && series.dynamic >= cap {
            return series.overflow.get_or_insert_with(Arc::default).clone();
        }
        series.dynamic += usize::from(dynamic);
        series.named.entry(Box::from(key)).or_default().clone()
    }

    /// Counts one descriptor's hits under its rule; `dynamic` says the key
    /// carries request values (`detailed_metric`, `value_to_metric`, an
    /// override), which the per-domain cap bounds.
    pub fn record_rule(&self, domain: &str, key: &str, dynamic: bool, o: RuleOutcome) {
        let c = self.rule(domain, key, dynamic);
        let add = |counter: &AtomicU64, n: u64| {
            if n > 0 {
                counter.fetch_add(n, Ordering::Relaxed);
            }
        };
        add(&c.total_hits, o.hits);
        if o.allowed {
            add(&c.within_limit, o.hits);
            if let Some(limit) = o.limit {
                let threshold = (limit as f64 * self.settings.near_limit_ratio).floor() as u64;
                let used_after = limit.saturating_sub(o.remaining);
                let used_before = used_after.saturating_sub(o.hits);
                add(
                    &c.near_limit,
                    used_after.saturating_sub(threshold.max(used_before)),
                );
            }
        } else {
            add(&c.over_limit, o.hits);
            if o.shadow {
                add(&c.shadow_mode, o.hits);
            }
            if o.from_local_cache {
                add(&c.over_limit_with_local_cache, o.hits);
            }
        }
    }

    /// Counts a capacity rule's hits by class and verdict, and by client.
    /// Per domain, client series and `dynamic` keys (built from request
    /// values) are each capped at `max_series_per_domain`; hits past the cap
    /// count under `client="__overflow__"` or `key="__overflow__"`. A call
    /// without a client entry counts under `client=""`.
    pub fn record_capacity(&self, key: CapacityKey<'_>, verdict: Verdict, hits: u64) {
        let cap = self.settings.max_series_per_domain;
        let mut all = self.capacity.lock().unwrap_or_else(|p| p.into_inner());
        if !all.domains.contains_key(key.domain) {
            all.domains
                .insert(key.domain.into(), CapacityDomain::default());
        }
        let Some(domain) = all.domains.get_mut(key.domain) else {
            return;
        };
        let CapacityDomain {
            keys,
            dynamic,
            clients,
        } = domain;
        let name = if keys.contains_key(key.key) || !key.dynamic {
            key.key
        } else if *dynamic < cap {
            *dynamic += 1;
            key.key
        } else {
            OVERFLOW
        };
        if !keys.contains_key(name) {
            keys.insert(name.into(), CapacityRuleSeries::default());
        }
        let Some(series) = keys.get_mut(name) else {
            return;
        };
        let (class, client) = (key.class, key.client);
        // Looked up by &str first: a Box<str> only for a new class.
        match series.classes.get_mut(class) {
            Some(counts) => counts[verdict.code()] += hits,
            None => {
                let mut counts = [0; Verdict::COUNT];
                counts[verdict.code()] = hits;
                series.classes.insert(class.into(), counts);
            }
        }
        let slot = usize::from(!verdict.admitted());
        if let Some(counts) = series.clients.get_mut(client) {
            counts[slot] += hits;
            return;
        }
        let name = if *clients < cap {
            *clients += 1;
            client
        } else {
            OVERFLOW
        };
        series.clients.entry(name.into()).or_default()[slot] += hits;
    }

    /// Counts a call to a domain that no rules file defines.
    pub fn record_domain_not_found(&self, domain: &str) {
        let mut map = self
            .domain_not_found
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(n) = map.get_mut(domain) {
            *n += 1;
            return;
        }
        let named = map.len() - usize::from(map.contains_key(OVERFLOW));
        let key = if named < MAX_UNKNOWN_DOMAINS {
            domain
        } else {
            OVERFLOW
        };
        *map.entry(Box::from(key)).or_default() += 1;
    }

    /// Counts a finished call and its latency.
    pub fn record_call(&self, code: CallCode, took: Duration) {
        if let Some(i) = CallCode::ALL.iter().position(|c| *c == code) {
            self.calls[i].fetch_add(1, Ordering::Relaxed);
        }
        self.call_latency.observe(took);
    }

    /// Counts one store call: its latency, and whether it failed or was
    /// answered without the real store.
    pub fn record_store(&self, took: Duration, failed: bool, degraded: bool) {
        self.store_latency.observe(took);
        if failed {
            self.store_errors.fetch_add(1, Ordering::Relaxed);
        }
        if degraded {
            self.degraded_answers.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Counts a rules reload; on success, `version` is the new rules'.
    pub fn record_reload(&self, result: Result<&str, ()>) {
        match result {
            Ok(version) => {
                self.reloads_ok.fetch_add(1, Ordering::Relaxed);
                *write(&self.rules_version) = version.to_owned();
            }
            Err(()) => {
                self.reloads_failed.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Sets the version of the rules in force (at startup).
    pub fn set_rules_version(&self, version: &str) {
        *write(&self.rules_version) = version.to_owned();
    }

    /// Adds values read at each scrape (the store's breaker and mode).
    pub fn add_samples(&self, source: SampleSource) {
        write(&self.samples).push(source);
    }

    /// Adds series written at each scrape.
    pub fn add_text(&self, source: TextSource) {
        write(&self.texts).push(source);
    }

    /// The Prometheus text exposition of everything.
    pub fn render(&self) -> String {
        let mut out = String::new();
        self.render_rules(&mut out);
        self.render_capacity(&mut out);
        self.render_domain_not_found(&mut out);
        self.render_calls(&mut out);
        self.render_reloads(&mut out);
        for source in read(&self.samples).iter() {
            for Sample { family, value } in source() {
                family.header(&mut out);
                let _ = writeln!(out, "{} {value}", family.name);
            }
        }
        for source in read(&self.texts).iter() {
            source(&mut out);
        }
        out
    }

    fn render_domain_not_found(&self, out: &mut String) {
        let map = self
            .domain_not_found
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let mut domains: Vec<_> = map.iter().collect();
        domains.sort();
        header(
            out,
            "floodgate_domain_not_found_total",
            "Calls to a domain no rules file defines.",
            Kind::Counter,
        );
        for (domain, n) in domains {
            let _ = writeln!(
                out,
                "floodgate_domain_not_found_total{{domain=\"{}\"}} {n}",
                escape(domain)
            );
        }
    }

    /// Calls by outcome, their latency and the store step's.
    fn render_calls(&self, out: &mut String) {
        header(
            out,
            "floodgate_calls_total",
            "ShouldRateLimit calls (gRPC and /json), by outcome.",
            Kind::Counter,
        );
        for (code, n) in CallCode::ALL.iter().zip(&self.calls) {
            let _ = writeln!(
                out,
                "floodgate_calls_total{{code=\"{}\"}} {}",
                code.label(),
                n.load(Ordering::Relaxed)
            );
        }
        self.call_latency.render(
            out,
            "floodgate_call_duration_seconds",
            "Time to answer a call.",
        );
        self.store_latency.render(
            out,
            "floodgate_store_duration_seconds",
            "Time of the store step of a call (local over-limit cache and fallback included).",
        );
        counter(
            out,
            "floodgate_store_call_errors_total",
            "Store steps that ended a call in an error (no failure policy answered).",
            self.store_errors.load(Ordering::Relaxed),
        );
        counter(
            out,
            "floodgate_degraded_answers_total",
            "Calls answered without the real store (fallback, allow or deny policy).",
            self.degraded_answers.load(Ordering::Relaxed),
        );
    }

    /// Rules reloads and the version in force.
    fn render_reloads(&self, out: &mut String) {
        header(
            out,
            "floodgate_rules_reloads_total",
            "Rules reloads, by result.",
            Kind::Counter,
        );
        let _ = writeln!(
            out,
            "floodgate_rules_reloads_total{{result=\"success\"}} {}\nfloodgate_rules_reloads_total{{result=\"failure\"}} {}",
            self.reloads_ok.load(Ordering::Relaxed),
            self.reloads_failed.load(Ordering::Relaxed)
        );
        header(
            out,
            "floodgate_rules_info",
            "The rules in force: their version (a content hash).",
            Kind::Gauge,
        );
        let _ = writeln!(
            out,
            "floodgate_rules_info{{version=\"{}\"}} 1",
            escape(&read(&self.rules_version))
        );
    }

    /// Capacity hits by class and verdict, then by client (nothing before
    /// the first capacity hit).
    fn render_capacity(&self, out: &mut String) {
        let (classes, clients) = self.capacity_snapshot();
        if classes.is_empty() {
            return;
        }
        header(
            out,
            "floodgate_capacity_hits_total",
            "Hits under a capacity rule, by priority class and verdict (guaranteed, borrowed, over_total, over_class, over_share).",
            Kind::Counter,
        );
        for ((domain, key, class, verdict), n) in classes {
            let _ = writeln!(
                out,
                "floodgate_capacity_hits_total{{domain=\"{}\",key=\"{}\",class=\"{}\",verdict=\"{verdict}\"}} {n}",
                escape(&domain),
                escape(&key),
                escape(&class)
            );
        }
        header(
            out,
            "floodgate_capacity_client_hits_total",
            "Hits under a capacity rule, by client and whether they were admitted (clients past metrics_max_series_per_domain count as __overflow__).",
            Kind::Counter,
        );
        for ((domain, key, client, admitted), n) in clients {
            let _ = writeln!(
                out,
                "floodgate_capacity_client_hits_total{{domain=\"{}\",key=\"{}\",client=\"{}\",admitted=\"{admitted}\"}} {n}",
                escape(&domain),
                escape(&key),
                escape(&client)
            );
        }
    }

    /// The capacity series, sorted, copied out of the lock: (domain, key,
    /// class, verdict) and (domain, key, client, admitted), each with its hits.
    #[allow(clippy::type_complexity)]
    fn capacity_snapshot(
        &self,
    ) -> (
        Vec<((Box<str>, Box<str>, Box<str>, &'static str), u64)>,
        Vec<((Box<str>, Box<str>, Box<str>, &'static str), u64)>,
    ) {
        let mut classes = Vec::new();
        let mut clients = Vec::new();
        {
            let all = self.capacity.lock().unwrap_or_else(|p| p.into_inner());
            for (domain, series) in &all.domains {
                for (key, series) in &series.keys {
                    for (class, counts) in &series.classes {
                        for (verdict, n) in Verdict::all().zip(counts) {
                            if *n > 0 {
                                let labels =
                                    (domain.clone(), key.clone(), class.clone(), verdict.name());
                                classes.push((labels, *n));
                            }
                        }
                    }
                    for (client, counts) in &series.clients {
                        for (admitted, n) in ["true", "false"].iter().zip(counts) {
                            let labels = (domain.clone(), key.clone(), client.clone(), *admitted);
                            clients.push((labels, *n));
                        }
                    }
                }
            }
        }
        classes.sort();
        clients.sort();
        (classes, clients)
    }

    fn render_rules(&self, out: &mut String) {
        // A snapshot of the series (cheap clones), formatted without the
        // lock, so a scrape never holds up the request path.
        let mut series: Vec<(Arc<str>, Box<str>, Arc<RuleCounters>)> = Vec::new();
        for (domain, s) in read(&self.rules).iter() {
            for (key, c) in &s.named {
                series.push((domain.clone(), key.clone(), c.clone()));
            }
            if let Some(c) = &s.overflow {
                series.push((domain.clone(), OVERFLOW.into(), c.clone()));
            }
        }
        series.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
        let metrics: [(&str, &str, Field); 6] = [
            ("total_hits", "Hits counted under a rule.", |c| {
                &c.total_hits
            }),
            ("over_limit", "Hits over a rule's limit.", |c| &c.over_limit),
            (
                "near_limit",
                "Hits within a rule's limit but above its near-limit threshold.",
                |c| &c.near_limit,
            ),
            ("within_limit", "Hits within a rule's limit.", |c| {
                &c.within_limit
            }),
            (
                "shadow_mode",
                "Hits over a shadow-mode rule's limit (answered OK).",
                |c| &c.shadow_mode,
            ),
            (
                "over_limit_with_local_cache",
                "Hits over a limit, answered from the local over-limit cache.",
                |c| &c.over_limit_with_local_cache,
            ),
        ];
        for (name, help, field) in metrics {
            let name = format!("floodgate_rule_{name}_total");
            header(out, &name, help, Kind::Counter);
            for (domain, key, c) in &series {
                let _ = writeln!(
                    out,
                    "{name}{{domain=\"{}\",key=\"{}\"}} {}",
                    escape(domain),
                    escape(key),
                    field(c).load(Ordering::Relaxed)
                );
            }
        }
    }

    /// Series of rules in `domain`, the overflow included (for tests).
    pub fn rule_series(&self, domain: &str) -> usize {
        read(&self.rules)
            .get(domain)
            .map_or(0, |s| s.named.len() + usize::from(s.overflow.is_some()))
    }
}

fn header(out: &mut String, name: &str, help: &str, kind: Kind) {
    let kind = kind.as_str();
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

fn counter(out: &mut String, name: &str, help: &str, value: u64) {
    header(out, name, help, Kind::Counter);
    let _ = writeln!(out, "{name} {value}");
}

/// A label value as the text format wants it.
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome(hits: u64, allowed: bool, limit: u64, remaining: u64) -> RuleOutcome {
        RuleOutcome {
            hits,
            allowed,
            shadow: false,
            from_local_cache: false,
            limit: Some(limit),
            remaining,
        }
    }

    fn value(text: &str, series: &str) -> Option<u64> {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
    }

    #[test]
    fn rule_counters_follow_the_reference() {
        let m = Metrics::default();
        // Limit 10, near threshold 8: hits taking the count 7 → 9 are one
        // hit within (8) and one near (9)... in hits: 2 within, 1 near.
        m.record_rule("d", "k", false, outcome(2, true, 10, 1));
        m.record_rule("d", "k", false, outcome(3, false, 10, 0));
        let text = m.render();
        let s = |name: &str| {
            value(
                &text,
                &format!("floodgate_rule_{name}_total{{domain=\"d\",key=\"k\"}}"),
            )
        };
        assert_eq!(s("total_hits"), Some(5));
        assert_eq!(s("within_limit"), Some(2));
        assert_eq!(s("near_limit"), Some(1));
        assert_eq!(s("over_limit"), Some(3));
        assert_eq!(s("shadow_mode"), Some(0));
    }

    #[test]
    fn series_per_domain_are_capped() {
        let m = Metrics::new(MetricsSettings {
            max_series_per_domain: 3,
            ..MetricsSettings::default()
        });
        for i in 0..100 {
            m.record_rule("d", &format!("user_{i}"), true, outcome(1, true, 10, 9));
        }
        m.record_rule("other", "k", true, outcome(1, true, 10, 9));
        assert_eq!(m.rule_series("d"), 4, "3 named + overflow");
        // A configured key is never folded, full or not.
        m.record_rule("d", "path_/login", false, outcome(1, true, 10, 9));
        assert_eq!(m.rule_series("d"), 5);
        let text = m.render();
        assert_eq!(
            value(
                &text,
                "floodgate_rule_total_hits_total{domain=\"d\",key=\"__overflow__\"}"
            ),
            Some(97)
        );
        assert_eq!(m.rule_series("other"), 1);
    }

    #[test]
    fn unknown_domains_are_capped_and_escaped() {
        let m = Metrics::default();
        for i in 0..150 {
            m.record_domain_not_found(&format!("d{i}"));
        }
        m.record_domain_not_found("d0");
        let text = m.render();
        assert_eq!(
            value(&text, "floodgate_domain_not_found_total{domain=\"d0\"}"),
            Some(2)
        );
        assert_eq!(
            value(
                &text,
                "floodgate_domain_not_found_total{domain=\"__overflow__\"}"
            ),
            Some(50)
        );
        assert_eq!(escape("a\"b\\c\n"), "a\\\"b\\\\c\\n");
    }

    #[test]
    fn histograms_are_cumulative() {
        let m = Metrics::default();
        m.record_call(CallCode::Ok, Duration::from_micros(50));
        m.record_call(CallCode::OverLimit, Duration::from_millis(3));
        let text = m.render();
        let s = |series: &str| value(&text, series);
        assert_eq!(
            s("floodgate_call_duration_seconds_bucket{le=\"0.0001\"}"),
            Some(1)
        );
        assert_eq!(
            s("floodgate_call_duration_seconds_bucket{le=\"0.005\"}"),
            Some(2)
        );
        assert_eq!(
            s("floodgate_call_duration_seconds_bucket{le=\"+Inf\"}"),
            Some(2)
        );
        assert_eq!(s("floodgate_calls_total{code=\"over_limit\"}"), Some(1));
    }
}
