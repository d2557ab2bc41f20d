//! Capacity protection: a service takes `T` hits per window. A fraction
//! `g` of it (`guaranteed_share`) is split among the clients active in the
//! window by weight, whatever class they claim, and is theirs to use; the
//! rest, and whatever of the guarantees their clients do not ask for, goes
//! by priority: the most important class first.
//!
//! On the request path this is what a [`Check`](crate::store::Check) whose
//! limit is [`Limit::Capacity`](crate::store::Limit::Capacity) decides in
//! the store: the limiter resolves the descriptor's client and priority class
//! ([`CapacityRule::class_of`], [`CapacityRule::weight_of`]), and the store
//! runs [`decide`] over the rule's [`WindowState`] atomically: under the
//! memory store's shard lock, or in Redis as `scripts/algorithms/capacity.lua`,
//! which performs the same arithmetic in the same order on the same doubles.
//!
//! The rules, for a call of `hits` from client `c` (weight `w`) in class `k`:
//!
//! 1. Never past `T`.
//! 2. The guarantee: `guarantee(c) = g × T × w / active`, where `active` is
//!    the larger of the weights of the clients seen in this window and in
//!    the previous one (so guarantees do not swing at each window's start).
//!    A call that keeps the client's guaranteed hits within it is admitted
//!    (within 1), whatever its class: within the client's expectation
//!    (below) always, past it only if the window still leaves what is held
//!    for the others.
//! 3. The priority part: any other call is admitted if the window, with it,
//!    stays under class `k`'s cap by the guaranteed hits held for the others
//!    (each client of the previous window is expected to ask for what it
//!    asked for then, with a tenth of its guarantee as headroom, within its
//!    guarantee; held: those expectations less the guaranteed hits admitted
//!    within them; never more than the unused guarantees). Class
//!    `k`'s cap is `T` less what the more important classes could have been
//!    admitted above their guarantees in the previous window and have not
//!    been yet in this one (demand that could have been admitted, never
//!    rejected hits). Without a previous window, when nothing is known of
//!    the demand, the cap is `max_share(k) × T` and all of the guaranteed
//!    pool is held.
//!
//! Every step is O(classes), whatever the number of clients, and the
//! clients tracked per window are bounded (`max_clients`): past the bound,
//! new clients are counted together as one client, [`OTHER_CLIENTS`]. A new
//! window costs O(clients of the ended one), once.

use std::collections::HashMap;
use std::sync::Arc;

use super::Unit;

/// The name under which clients past the bound are counted together.
pub const OTHER_CLIENTS: &str = "\u{0}other";

/// What the decision needs of a capacity rule.
#[derive(Clone, Debug, PartialEq)]
pub struct Capacity {
    /// Hits the service takes per window (`T`).
    pub total: u64,
    /// The guaranteed fraction `g` of `total`: split among the window's
    /// active clients by weight, whatever their class. The rest goes by
    /// priority.
    pub guaranteed_share: f64,
    /// Per class, from the most important: the share of `total` the window
    /// may reach with that class's priority hits while nothing is known of
    /// the demand (a window without a previous one). One class of 1.0 when
    /// the rule has no priorities.
    pub class_max_share: Vec<f64>,
    /// Most clients tracked per window.
    pub max_clients: usize,
}

impl Capacity {
    /// The guaranteed pool, `g × T`, in hits.
    fn pool(&self) -> f64 {
        self.guaranteed_share * self.total as f64
    }
}

/// A capacity rule as the rules file states it (the `capacity:` block of a
/// descriptor).
#[derive(Clone, Debug, PartialEq)]
pub struct CapacityRule {
    /// Total, class shares and the client bound.
    pub limits: Capacity,
    /// The window's unit.
    pub unit: Unit,
    /// The window is this many units.
    pub unit_multiplier: u32,
    /// The descriptor key whose value names the client.
    pub share_by: Box<str>,
    /// The descriptor key whose value names the priority class, if any.
    pub priority_by: Option<Box<str>>,
    /// Class names, from the most important (empty: no priorities).
    pub classes: Vec<Arc<str>>,
    /// The class of a call without a priority entry, or with a value that
    /// names no class.
    pub default_class: usize,
    /// Per client value: its weight (1 for clients not listed).
    pub weights: HashMap<Box<str>, f64>,
    /// The rule's `name`, if any.
    pub name: Option<Arc<str>>,
    /// What statuses call its bounds, made once from `name` and `classes`.
    pub names: LimitNames,
}

/// A capacity rule's bounds as statuses name them (`current_limit.name`):
/// `<name or "capacity">.share`, `.total` and `.class.<class>`.
#[derive(Clone, Debug, PartialEq)]
pub struct LimitNames {
    share: Arc<str>,
    total: Arc<str>,
    /// Per class (one, `.class`, for a rule without classes).
    classes: Vec<Arc<str>>,
}

impl LimitNames {
    /// The names for a rule called `name` with `classes`.
    pub fn new(name: Option<&str>, classes: &[Arc<str>]) -> Self {
        let base = name.unwrap_or("capacity");
        let mut per_class: Vec<Arc<str>> = classes
            .iter()
            .map(|c| format!("{base}.class.{c}").into())
            .collect();
        if per_class.is_empty() {
            per_class.push(format!("{base}.class").into());
        }
        LimitNames {
            share: format!("{base}.share").into(),
            total: format!("{base}.total").into(),
            classes: per_class,
        }
    }

    /// The name of the bound behind `verdict` for a call in `class`: the
    /// share when admitted.
    pub fn of(&self, verdict: Verdict, class: usize) -> &Arc<str> {
        match verdict {
            Verdict::Rejected(Bound::Total) => &self.total,
            Verdict::Rejected(Bound::Class) => self
                .classes
                .get(class)
                .or(self.classes.last())
                .unwrap_or(&self.share),
            _ => &self.share,
        }
    }
}

impl CapacityRule {
    /// The class index of a call whose priority entry is `value`.
    pub fn class_of(&self, value: Option<&str>) -> usize {
        value
            .and_then(|v| self.classes.iter().position(|c| **c == *v))
            .unwrap_or(self.default_class)
    }

    /// The weight of `client`.
    pub fn weight_of(&self, client: &str) -> f64 {
        self.weights.get(client).copied().unwrap_or(1.0)
    }

    /// The class's name (`None` for a rule without classes).
    pub fn class_name(&self, class: usize) -> Option<&Arc<str>> {
        self.classes.get(class)
    }

    /// The window length in seconds.
    pub fn window_secs(&self) -> u64 {
        self.unit.window().as_secs() * u64::from(self.unit_multiplier)
    }
}

impl std::fmt::Display for CapacityRule {
    /// As `/rlconfig` lists it: `capacity requests_per_unit=100 unit=SECOND
    /// share_by=client guaranteed_share=0.8 priority_by=priority classes=critical:1,default:0.9`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "capacity requests_per_unit={} unit={}",
            self.limits.total,
            self.unit.name()
        )?;
        if self.unit_multiplier != 1 {
            write!(f, " unit_multiplier={}", self.unit_multiplier)?;
        }
        write!(
            f,
            " share_by={} guaranteed_share={}",
            self.share_by, self.limits.guaranteed_share
        )?;
        if let Some(priority_by) = &self.priority_by {
            let classes: Vec<String> = self
                .classes
                .iter()
                .zip(&self.limits.class_max_share)
                .map(|(name, share)| format!("{name}:{share}"))
                .collect();
            write!(
                f,
                " priority_by={priority_by} classes={}",
                classes.join(",")
            )?;
        }
        if let Some(name) = &self.name {
            write!(f, " name={name}")?;
        }
        Ok(())
    }
}

/// What bounded a call.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Bound {
    /// The service's total.
    Total,
    /// The call's class cap.
    Class,
    /// The client's guarantee: the priority part that is left is held for
    /// the guarantees the others are still expected to use.
    Share,
}

/// Why a call was admitted or rejected.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Verdict {
    /// Within the client's guarantee.
    Guaranteed,
    /// Above the guarantee, in the priority part.
    Borrowed,
    /// Rejected by this bound.
    Rejected(Bound),
}

impl Verdict {
    /// True when admitted.
    pub fn admitted(self) -> bool {
        !matches!(self, Verdict::Rejected(_))
    }

    /// How many verdicts there are: their codes are `0..COUNT`.
    pub const COUNT: usize = 5;

    /// The wire code the Redis script returns for it (`capacity.lua`).
    pub fn code(self) -> usize {
        match self {
            Verdict::Guaranteed => 0,
            Verdict::Borrowed => 1,
            Verdict::Rejected(Bound::Total) => 2,
            Verdict::Rejected(Bound::Class) => 3,
            Verdict::Rejected(Bound::Share) => 4,
        }
    }

    /// Every verdict, in code order.
    pub fn all() -> impl Iterator<Item = Verdict> {
        (0..Self::COUNT as i64).filter_map(Self::from_code)
    }

    /// The verdict a wire code stands for.
    pub fn from_code(code: i64) -> Option<Verdict> {
        Some(match code {
            0 => Verdict::Guaranteed,
            1 => Verdict::Borrowed,
            2 => Verdict::Rejected(Bound::Total),
            3 => Verdict::Rejected(Bound::Class),
            4 => Verdict::Rejected(Bound::Share),
            _ => return None,
        })
    }

    /// A short name, for metrics (`guaranteed`, `borrowed`, `over_total`,
    /// `over_class`, `over_share`).
    pub fn name(self) -> &'static str {
        match self {
            Verdict::Guaranteed => "guaranteed",
            Verdict::Borrowed => "borrowed",
            Verdict::Rejected(Bound::Total) => "over_total",
            Verdict::Rejected(Bound::Class) => "over_class",
            Verdict::Rejected(Bound::Share) => "over_share",
        }
    }
}

/// A decision: the verdict, the limit that applied and what is left.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Decided {
    /// Admitted (and how) or rejected (and by what).
    pub verdict: Verdict,
    /// The limit that applied, in hits per window: the client's guarantee
    /// when admitted; when rejected, the bound that rejected it (the total,
    /// the class cap or the guarantee).
    pub limit: u64,
    /// Hits the client may still make in this window, as things stand.
    pub remaining: u64,
}

/// One client's use of a window.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct ClientUse {
    /// Hits admitted.
    pub used: u64,
    /// Of those, hits admitted within the guarantee.
    pub guaranteed: u64,
    /// Hits asked for, admitted or not.
    pub demand: u64,
    /// The client's weight when it joined the window.
    pub weight: f64,
    /// The class of its last call.
    pub class: usize,
}

/// One window of a capacity rule, and what the previous one left.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct WindowState {
    /// Hits admitted in this window.
    pub total: u64,
    /// Hits admitted within their clients' guarantees, summed over clients.
    pub guaranteed: u64,
    /// The weights of the clients seen in this window, summed.
    pub weight: f64,
    /// The same sum for the previous window (0: no previous window, or one
    /// without calls: nothing is known of the demand).
    pub previous_weight: f64,
    /// The guaranteed hits the previous window's clients are expected to
    /// ask for in this one (see `expected_next`).
    pub expected_guaranteed: u64,
    /// The same per client of the previous window: what each is expected
    /// to ask for within its guarantee.
    pub expected_of: HashMap<String, u64>,
    /// Guaranteed hits admitted beyond their clients' expectations (a
    /// client of the previous window that asks for more of its guarantee
    /// than it was expected to): they come out of the unused guarantees,
    /// not out of what is held for the others.
    pub guaranteed_beyond: u64,
    /// How far into the window (0 to 1) its first counted call came.
    pub first_elapsed: f64,
    /// Per client seen in this window.
    pub clients: HashMap<String, ClientUse>,
    /// Per class: hits admitted above their clients' guarantees (the
    /// priority part).
    pub class_borrowed: Vec<u64>,
    /// Per class: hits asked for above their clients' guarantees (as each
    /// call found its guarantee).
    pub class_wanted: Vec<u64>,
    /// Per class: what the previous window's priority demand could have
    /// been admitted (most important class first), held back from the less
    /// important classes in this one.
    pub class_reserved: Vec<u64>,
}

impl WindowState {
    /// Moves to the next window (`consecutive`: it directly follows this
    /// one; otherwise nothing of this one carries over). What carries over:
    /// the active weight, the guaranteed hits the clients are expected to
    /// ask for, and per class the priority demand that could have been
    /// admitted: the room the guarantees leave, given to the classes in
    /// order of importance.
    pub fn roll(&mut self, rule: &Capacity, consecutive: bool) {
        let carried = consecutive.then(|| {
            let (expected, scale, over, expected_of) = self.expected_next(rule);
            let mut room = rule.total.saturating_sub(expected);
            let reserved: Vec<u64> = self
                .class_wanted
                .iter()
                .zip(over)
                .map(|(wanted, over)| {
                    let wanted = ((*wanted as f64 * scale).floor() as u64).saturating_add(over);
                    let reserve = wanted.min(room);
                    room -= reserve;
                    reserve
                })
                .collect();
            (self.weight, expected, reserved, expected_of)
        });
        *self = WindowState::default();
        if let Some((weight, expected, reserved, expected_of)) = carried {
            self.previous_weight = weight;
            self.expected_guaranteed = expected;
            self.class_reserved = reserved;
            self.expected_of = expected_of;
        }
    }

    /// The guaranteed hits this window's clients are expected to ask for
    /// in the next: per client, its demand and a tenth of its guarantee as
    /// headroom for demand that rises, within its guarantee. Each guarantee
    /// is taken at the window's final active weight; whole hits, so the sums
    /// are the same in any order, as in Lua. Also the scale of the window's
    /// demand: a window without a previous one was seen only from its first
    /// call on, so its demand counts as a rate over the part seen (and if
    /// less than half was seen, the whole guarantees are expected). And per
    /// class, the guaranteed hits admitted above those final guarantees
    /// (while guarantees shrank as clients came; a client's, in the class
    /// of its last call): priority demand too. And each client's own
    /// expected hits.
    fn expected_next(&self, rule: &Capacity) -> (u64, f64, Vec<u64>, HashMap<String, u64>) {
        let classes = rule.class_max_share.len().max(1);
        let mut over = vec![0u64; classes];
        let (scale, partial) = if self.previous_weight > 0.0 {
            (1.0, false)
        } else {
            let seen_from = self.first_elapsed;
            (1.0 / (1.0 - seen_from.min(0.5)), seen_from > 0.5)
        };
        let mut expected_of = HashMap::with_capacity(self.clients.len());
        if self.weight <= 0.0 {
            return (0, scale, over, expected_of);
        }
        let pool = rule.pool();
        let mut expected = 0u64;
        for (name, c) in &self.clients {
            let guarantee = pool * c.weight / self.weight;
            let whole = guarantee.floor() as u64;
            let asked = ((c.demand as f64 * scale).floor() as u64).min(super::MAX_COUNT);
            let headroom = (guarantee / 10.0).floor() as u64;
            let expects = if partial {
                whole
            } else {
                whole.min(asked.saturating_add(headroom))
            };
            expected = expected.saturating_add(expects);
            expected_of.insert(name.clone(), expects);
            let class = c.class.min(classes - 1);
            over[class] = over[class].saturating_add(c.guaranteed.saturating_sub(whole));
        }
        (expected, scale, over, expected_of)
    }

    /// Class `class`'s cap on priority hits. With a previous window to go
    /// by: the total, less what the more important classes could have been
    /// admitted above their guarantees then and have not been yet now.
    /// Without one: the class's `max_share` of the total.
    fn class_cap(&self, rule: &Capacity, class: usize) -> f64 {
        let total = rule.total as f64;
        if self.previous_weight <= 0.0 {
            let max_share = rule.class_max_share.get(class).copied().unwrap_or(1.0);
            return max_share * total;
        }
        let reserved = (0..class)
            .map(|j| self.class_reserved[j].saturating_sub(self.class_borrowed[j]) as f64)
            .sum::<f64>()
            .min(total);
        total - reserved
    }

    /// The guaranteed hits held back from the priority part: the
    /// guarantees not used yet, `g × T − G`, but no more than what the
    /// previous window's clients are expected to ask for within their
    /// guarantees ([`WindowState::expected_guaranteed`]; plus the full
    /// guarantees of weight that joined beyond the previous window's), less
    /// what has been admitted within those expectations (a client's hits
    /// beyond its own expectation do not use up the others'). Without a
    /// previous window, all of the unused guarantees are held.
    ///
    /// Returns its two bounds, `(unused, expected left)` (the second
    /// infinite without a previous window): a guaranteed hit takes one from
    /// the first, and from the second only within its client's expectation.
    fn held(&self, rule: &Capacity, (weight_now, active): (f64, f64)) -> (f64, f64) {
        let pool = rule.pool();
        let unused = (pool - self.guaranteed as f64).max(0.0);
        if self.previous_weight <= 0.0 {
            return (unused, f64::INFINITY);
        }
        let expected = self.expected_guaranteed as f64
            + pool * (weight_now - self.previous_weight).max(0.0) / active;
        let within = self.guaranteed.saturating_sub(self.guaranteed_beyond);
        (unused, (expected - within as f64).max(0.0))
    }

    /// Of `hits` guaranteed hits for a client that has `guaranteed` so far,
    /// how many are within its expectation (all of them for a client the
    /// previous window did not see).
    fn within_expected(&self, client: &str, guaranteed: u64, hits: u64) -> u64 {
        match self.expected_of.get(client) {
            Some(expects) => hits.min(expects.saturating_sub(guaranteed)),
            None => hits,
        }
    }

    /// Counts a decided call of `hits` from `client` in `class`: its demand
    /// and class always (and as priority demand unless it was `eligible` for
    /// the guarantee), its hits when admitted. `joined`: the client's weight
    /// and the active weight with it, when the client is new to the window.
    fn record(
        &mut self,
        client: &str,
        joined: Option<(f64, f64)>,
        (class, eligible): (usize, bool),
        verdict: Verdict,
        hits: u64,
    ) {
        if !eligible {
            let wanted = &mut self.class_wanted[class];
            *wanted = wanted.saturating_add(hits).min(super::MAX_COUNT);
        }
        if let Some((weight, weight_now)) = joined {
            self.weight = weight_now;
            let new = ClientUse {
                weight,
                ..ClientUse::default()
            };
            self.clients.insert(client.to_owned(), new);
        }
        let Some(before) = self.clients.get(client).map(|c| c.guaranteed) else {
            return;
        };
        let within = self.within_expected(client, before, hits);
        let Some(entry) = self.clients.get_mut(client) else {
            return;
        };
        // Demand counts every ask: it saturates like a fixed-window count.
        entry.demand = entry.demand.saturating_add(hits).min(super::MAX_COUNT);
        entry.class = class;
        if verdict.admitted() {
            self.total = self.total.saturating_add(hits);
            entry.used += hits;
            if verdict == Verdict::Guaranteed {
                self.guaranteed_beyond += hits - within;
                entry.guaranteed += hits;
                self.guaranteed += hits;
            } else {
                self.class_borrowed[class] += hits;
            }
        }
    }

    fn fit(&mut self, classes: usize) {
        for v in [
            &mut self.class_borrowed,
            &mut self.class_wanted,
            &mut self.class_reserved,
        ] {
            v.resize(classes.max(v.len()), 0);
        }
    }
}

/// Decides a call of `hits` from `client` (with `weight`) in class `class`
/// (0: the most important; out of range: the least), `elapsed` (0 to 1)
/// into the window (the first counted call's is kept), and counts it in `state` when `commit`: its demand
/// either way, its hits if admitted. A call of 0 hits answers whether one
/// hit would be admitted now and changes nothing.
///
/// Longer than the house's 60 lines, and with as many arguments as the
/// script, on purpose: the steps mirror `capacity.lua` in order, on the
/// same doubles, so the two read side by side; only the class cap, the
/// held guarantees and the bookkeeping are split out.
#[allow(clippy::too_many_arguments)]
pub fn decide(
    rule: &Capacity,
    state: &mut WindowState,
    client: &str,
    weight: f64,
    class: usize,
    hits: u64,
    elapsed: f64,
    commit: bool,
) -> Decided {
    let take = commit && hits > 0;
    let hits = hits.max(1);
    let elapsed = if elapsed.is_nan() {
        0.0
    } else {
        elapsed.clamp(0.0, 1.0)
    };
    let classes = rule.class_max_share.len().max(1);
    let class = class.min(classes - 1);
    state.fit(classes);
    let weight = if weight.is_finite() && weight > 0.0 {
        weight
    } else {
        1.0
    };
    let client = if state.clients.contains_key(client) || state.clients.len() < rule.max_clients {
        client
    } else {
        OTHER_CLIENTS
    };
    let seen = state.clients.get(client).copied();
    let you = seen.unwrap_or_default();
    // The active weight, with this client in it.
    let weight_now = if seen.is_some() {
        state.weight
    } else {
        state.weight + weight
    };
    let active = weight_now.max(state.previous_weight);
    let after = state.total.saturating_add(hits);

    // The guarantee: the client's weighted part of g × T.
    let guarantee = rule.pool() * weight / active;
    let eligible = (you.guaranteed + hits) as f64 <= guarantee;
    // The priority part: under the class cap, leaving the guaranteed hits
    // the others are still expected to ask for.
    let class_cap = state.class_cap(rule, class);
    let (unused, left) = state.held(rule, (weight_now, active));
    let held = unused.min(left);
    // A guaranteed call's hits beyond its client's expectation must leave
    // what is held for the others: what would be held after it.
    let expects = state.expected_of.get(client).copied();
    let within = state.within_expected(client, you.guaranteed, hits);
    let held_if_guaranteed = (unused - hits as f64)
        .max(0.0)
        .min((left - within as f64).max(0.0));

    let verdict = if after > rule.total {
        Verdict::Rejected(Bound::Total)
    } else if eligible && (within == hits || after as f64 + held_if_guaranteed <= rule.total as f64)
    {
        Verdict::Guaranteed
    } else if eligible {
        // Its demand rose past its expectation, into the others' part.
        Verdict::Rejected(Bound::Share)
    } else if after as f64 > class_cap {
        Verdict::Rejected(Bound::Class)
    } else if after as f64 + held > class_cap {
        Verdict::Rejected(Bound::Share)
    } else {
        Verdict::Borrowed
    };
    let limit = match verdict {
        Verdict::Rejected(Bound::Total) => rule.total,
        Verdict::Rejected(Bound::Class) => class_cap.floor() as u64,
        _ => guarantee.floor() as u64,
    };
    let remaining = if verdict.admitted() {
        // What is left after this call: its own guarantee, or a borrow.
        let (mine, total_after, held_after) = match (take, verdict) {
            (true, Verdict::Guaranteed) => (you.guaranteed + hits, after, held_if_guaranteed),
            (true, _) => (you.guaranteed, after, held),
            _ => (you.guaranteed, state.total, held),
        };
        let room = rule.total.saturating_sub(total_after) as f64;
        let mut own = (guarantee - mine as f64).max(0.0);
        if let Some(expects) = expects {
            // Past its expectation, only what the others' part leaves.
            let free = expects.saturating_sub(mine) as f64 + (room - held_after).max(0.0);
            own = own.min(free);
        }
        let borrow = (class_cap - total_after as f64 - held_after).max(0.0);
        own.max(borrow).min(room).floor() as u64
    } else {
        0
    };
    if take {
        if state.clients.is_empty() {
            state.first_elapsed = elapsed;
        }
        let joined = seen.is_none().then_some((weight, weight_now));
        state.record(client, joined, (class, eligible), verdict, hits);
    }
    Decided {
        verdict,
        limit,
        remaining,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(total: u64, classes: &[f64]) -> Capacity {
        Capacity {
            total,
            guaranteed_share: 0.8,
            class_max_share: classes.to_vec(),
            max_clients: 1_000,
        }
    }

    fn with_g(g: f64, rule: Capacity) -> Capacity {
        Capacity {
            guaranteed_share: g,
            ..rule
        }
    }

    /// Sends each client's calls for one window, interleaved (one call per
    /// client per turn, as concurrent clients would), one hit each, all at
    /// the window's start; returns the admitted count per client.
    fn window(
        rule: &Capacity,
        state: &mut WindowState,
        clients: &[(&str, usize, u64)],
    ) -> Vec<u64> {
        let turns = clients.iter().map(|c| c.2).max().unwrap_or(0);
        let calls = (0..turns).flat_map(|turn| {
            (0..clients.len())
                .filter(move |&i| turn < clients[i].2)
                .map(|i| (0.0, i))
        });
        send(rule, state, clients, calls)
    }

    /// Sends `calls`, each `(elapsed, client index)`, one hit each; returns
    /// the admitted count per client.
    fn send(
        rule: &Capacity,
        state: &mut WindowState,
        clients: &[(&str, usize, u64)],
        calls: impl Iterator<Item = (f64, usize)>,
    ) -> Vec<u64> {
        let mut admitted = vec![0; clients.len()];
        for (elapsed, i) in calls {
            let (name, class, _) = clients[i];
            if decide(rule, state, name, 1.0, class, 1, elapsed, true)
                .verdict
                .admitted()
            {
                admitted[i] += 1;
            }
        }
        admitted
    }

    #[test]
    fn an_abusive_client_cannot_starve_the_others() {
        // T = 100; one client sends 10 × T, three send 20 each.
        let rule = rule(100, &[1.0]);
        let mut state = WindowState::default();
        for _ in 0..5 {
            let clients = [("bad", 0, 1_000), ("a", 0, 20), ("b", 0, 20), ("c", 0, 20)];
            let admitted = window(&rule, &mut state, &clients);
            assert_eq!(&admitted[1..], &[20, 20, 20], "the three get all they ask");
            // Its guarantee (0.8 × 100 / 4) and the priority part: 20 + 20.
            assert_eq!(admitted[0], 40, "the abusive one");
            println!(
                "admitted per window: bad {}, good {:?}",
                admitted[0],
                &admitted[1..]
            );
            assert_eq!(admitted.iter().sum::<u64>(), 100, "all of T, no more");
            state.roll(&rule, true);
        }
    }

    /// As [`window`], but the calls spread through the window as steady
    /// senders would (client `i`'s `j`-th call of `n` at `(j + 0.5) / n` of
    /// it; ties in the clients' order).
    fn steady_window(
        rule: &Capacity,
        state: &mut WindowState,
        clients: &[(&str, usize, u64)],
    ) -> Vec<u64> {
        let mut calls: Vec<(f64, usize)> = clients
            .iter()
            .enumerate()
            .flat_map(|(i, c)| (0..c.2).map(move |j| ((j as f64 + 0.5) / c.2 as f64, i)))
            .collect();
        calls.sort_by(|a, b| a.partial_cmp(b).unwrap());
        send(rule, state, clients, calls.into_iter())
    }

    #[test]
    fn a_client_that_asked_little_takes_its_guarantee_from_the_unused_not_the_others() {
        // T = 100, guarantees of 20 among four. "bad" asks for 7 in one
        // window (a client-side memo hid the rest), then floods: its
        // guarantee past the 9 it was expected to ask for comes out of the
        // guarantees no one uses, never out of the 17 held for each of the
        // others, who send 15 throughout.
        let rule = rule(100, &[1.0]);
        let mut state = WindowState::default();
        let mut admitted = Vec::new();
        for bad in [7, 7, 1_000, 7, 1_000] {
            let clients = [("bad", 0, bad), ("a", 0, 15), ("b", 0, 15), ("c", 0, 15)];
            admitted.push(steady_window(&rule, &mut state, &clients));
            state.roll(&rule, true);
        }
        for (n, got) in admitted.iter().enumerate() {
            assert_eq!(&got[1..], &[15, 15, 15], "window {n}: {admitted:?}");
        }
        // Flooding: its 20, and the priority part but what is held for
        // the others (17 each: 15 and a tenth of 20).
        assert_eq!(admitted[2][0], 100 - 3 * 17, "{admitted:?}");
    }

    #[test]
    fn a_lone_client_may_use_all_of_the_capacity() {
        let rule = rule(100, &[1.0]);
        let mut state = WindowState::default();
        assert_eq!(window(&rule, &mut state, &[("solo", 0, 150)]), [100]);
        state.roll(&rule, true);
        // The next window too: it is the only client, past or present.
        assert_eq!(window(&rule, &mut state, &[("solo", 0, 150)]), [100]);
    }

    #[test]
    fn the_least_important_traffic_is_shed_first() {
        // 2 × T offered, evenly over critical, default and sheddable; no
        // guarantees (g = 0): pure priority.
        let rule = with_g(0.0, rule(300, &[1.0, 0.9, 0.7]));
        let mut state = WindowState::default();
        let (mut offered, mut admitted) = ([0u64; 3], [0u64; 3]);
        for _ in 0..10 {
            let clients = [("svc", 0, 200), ("svc", 1, 200), ("svc", 2, 200)];
            let got = window(&rule, &mut state, &clients);
            assert!(got.iter().sum::<u64>() <= 300, "never past T: {got:?}");
            for k in 0..3 {
                offered[k] += 200;
                admitted[k] += got[k];
            }
            state.roll(&rule, true);
        }
        let rate = |k: usize| admitted[k] as f64 / offered[k] as f64;
        println!("admitted of 2,000 offered per class over 10 windows: {admitted:?}");
        // The first window by the static caps (critical 130, default 100,
        // sheddable 70); then critical's 200 and default's 100 are held.
        assert_eq!(admitted, [130 + 9 * 200, 100 + 9 * 100, 70], "{admitted:?}");
        assert!(rate(2) < rate(1) && rate(1) < rate(0), "{admitted:?}");
    }

    #[test]
    fn weights_set_the_shares() {
        let mut rule = with_g(1.0, rule(90, &[1.0]));
        rule.max_clients = 10;
        let mut state = WindowState::default();
        let mut got = [0u64; 2];
        // "gold" weighs 2, "bronze" 1: 60 and 30 when both flood.
        for _ in 0..200 {
            for (i, (name, w)) in [("gold", 2.0), ("bronze", 1.0)].iter().enumerate() {
                if decide(&rule, &mut state, name, *w, 0, 1, 0.0, true)
                    .verdict
                    .admitted()
                {
                    got[i] += 1;
                }
            }
        }
        assert_eq!(got, [60, 30]);
    }

    #[test]
    fn clients_past_the_bound_share_one_slot() {
        let mut rule = rule(1_000, &[1.0]);
        rule.max_clients = 3;
        let mut state = WindowState::default();
        for i in 0..100 {
            decide(&rule, &mut state, &format!("c{i}"), 1.0, 0, 1, 0.0, true);
        }
        assert_eq!(state.clients.len(), 3 + 1);
        assert_eq!(state.clients[OTHER_CLIENTS].used, 97);
    }

    #[test]
    fn a_rejection_names_the_limit_that_applied() {
        let rule = with_g(0.0, rule(10, &[1.0, 0.5]));
        let mut state = WindowState::default();
        for _ in 0..5 {
            assert!(
                decide(&rule, &mut state, "x", 1.0, 1, 1, 0.0, true)
                    .verdict
                    .admitted()
            );
        }
        let d = decide(&rule, &mut state, "x", 1.0, 1, 1, 0.0, true);
        assert_eq!((d.verdict, d.limit), (Verdict::Rejected(Bound::Class), 5));
        for _ in 0..5 {
            assert!(
                decide(&rule, &mut state, "x", 1.0, 0, 1, 0.0, true)
                    .verdict
                    .admitted()
            );
        }
        let d = decide(&rule, &mut state, "x", 1.0, 0, 1, 0.0, true);
        assert_eq!((d.verdict, d.limit), (Verdict::Rejected(Bound::Total), 10));
    }

    #[test]
    fn a_borrower_is_stopped_by_the_others_unused_share() {
        let rule = with_g(1.0, rule(100, &[1.0]));
        let mut state = WindowState::default();
        // Two clients seen: 50 each. "a" uses 10, "b" takes its 50 and then
        // borrows up to the 40 that "a" has not used... less nothing.
        assert!(
            decide(&rule, &mut state, "a", 1.0, 0, 10, 0.0, true)
                .verdict
                .admitted()
        );
        let d = decide(&rule, &mut state, "b", 1.0, 0, 50, 0.0, true);
        assert_eq!((d.verdict, d.limit), (Verdict::Guaranteed, 50));
        assert_eq!(d.remaining, 0, "a's unused 40 are held for it");
        let d = decide(&rule, &mut state, "b", 1.0, 0, 1, 0.0, true);
        assert_eq!((d.verdict, d.limit), (Verdict::Rejected(Bound::Share), 50));
        // "a" may still use its share, then borrow nothing more (b is full).
        let d = decide(&rule, &mut state, "a", 1.0, 0, 40, 0.0, true);
        assert_eq!(d.verdict, Verdict::Guaranteed);
        assert_eq!(state.total, 100);
    }

    #[test]
    fn a_call_of_zero_hits_changes_nothing() {
        let rule = rule(10, &[1.0, 0.5]);
        let mut state = WindowState::default();
        decide(&rule, &mut state, "a", 1.0, 0, 3, 0.0, true);
        let before = state.clone();
        let d = decide(&rule, &mut state, "newcomer", 1.0, 1, 0, 0.0, true);
        assert_eq!(state, before);
        assert_eq!(d.verdict, Verdict::Guaranteed);
        assert_eq!(d.remaining, 4, "its guarantee: 0.8 × 10 / 2");
    }

    #[test]
    fn only_a_consecutive_window_carries_over() {
        let rule = rule(100, &[1.0]);
        let mut state = WindowState::default();
        decide(&rule, &mut state, "a", 1.0, 0, 5, 0.0, true);
        decide(&rule, &mut state, "b", 1.0, 0, 5, 0.0, true);
        let mut next = state.clone();
        next.roll(&rule, true);
        assert_eq!((next.previous_weight, next.total), (2.0, 0));
        assert_eq!(
            next.expected_guaranteed, 18,
            "both asked 5, each with 4 of headroom (a tenth of 40)"
        );
        // "a" alone now, but "b" was active a window ago: its guarantee is
        // 0.8 × 100 / 2.
        let d = decide(&rule, &mut next, "a", 1.0, 0, 1, 0.0, true);
        assert_eq!(d.limit, 40);
        state.roll(&rule, false);
        assert_eq!(state, WindowState::default());
    }

    #[test]
    fn a_reservation_counts_only_demand_that_could_have_been_admitted() {
        // T = 30, g = 0.8: "bad" floods the critical class with 100, "d"
        // asks 5 as default. Guarantees of 12 each (0.8 × 30 / 2).
        let rule = rule(30, &[1.0, 0.9, 0.5]);
        let mut state = WindowState::default();
        for i in 0..100 {
            decide(&rule, &mut state, "bad", 1.0, 0, 1, 0.0, true);
            if i < 5 {
                decide(&rule, &mut state, "d", 1.0, 1, 1, 0.0, true);
            }
        }
        state.roll(&rule, true);
        // Expected guaranteed hits: bad's 12, and d's 5 with 1 of headroom.
        assert_eq!(state.expected_guaranteed, 18);
        // bad asked 88 above its guarantee; the room the guarantees leave
        // is 12: that is what is reserved, not the 76 it could never get.
        assert_eq!(state.class_reserved, [12, 0, 0]);
    }

    #[test]
    fn a_window_seen_for_less_than_half_holds_whole_guarantees_next() {
        let rule = rule(100, &[1.0]);
        for (elapsed, expected) in [(0.25, 18), (0.75, 80)] {
            let mut state = WindowState::default();
            // Two clients, 4 calls each, first seen `elapsed` into a window
            // without a previous one.
            for _ in 0..4 {
                decide(&rule, &mut state, "a", 1.0, 0, 1, elapsed, true);
                decide(&rule, &mut state, "b", 1.0, 0, 1, elapsed, true);
            }
            state.roll(&rule, true);
            // A quarter missed: 4 calls count as 5 (4 / 0.75), with 4 of
            // headroom each. Three quarters missed: the whole 40 each.
            assert_eq!(state.expected_guaranteed, expected, "{elapsed}");
        }
    }

    #[test]
    fn verdict_codes_round_trip_and_name_each_bound() {
        let codes: Vec<usize> = Verdict::all().map(Verdict::code).collect();
        assert_eq!(codes, (0..Verdict::COUNT).collect::<Vec<_>>());
        let names = LimitNames::new(Some("checkout"), &["critical".into(), "bulk".into()]);
        let name = |v, class| names.of(v, class).to_string();
        assert_eq!(name(Verdict::Borrowed, 1), "checkout.share");
        assert_eq!(name(Verdict::Rejected(Bound::Share), 0), "checkout.share");
        assert_eq!(name(Verdict::Rejected(Bound::Total), 1), "checkout.total");
        assert_eq!(
            name(Verdict::Rejected(Bound::Class), 1),
            "checkout.class.bulk"
        );
        let plain = LimitNames::new(None, &[]);
        assert_eq!(
            &**plain.of(Verdict::Rejected(Bound::Class), 0),
            "capacity.class"
        );
    }
}
