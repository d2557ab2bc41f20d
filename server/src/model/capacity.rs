//! Capacity protection: a service takes `total` hits per window; every
//! client active in the window is guaranteed its weighted share of it; above
//! its share a client may borrow capacity the others leave unused; and near
//! the total, the least important traffic is shed first.
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
//! 1. Never past `total`.
//! 2. The class cap: classes are ordered from the most important; class `k`
//!    may fill the window up to `max_share(k) × total`, less what the more
//!    important classes are still expected to need in this window (their
//!    demand in the previous window, less what they have been admitted in
//!    this one). So at the start of a busy window the least important class
//!    is already held back for the traffic that will follow.
//! 3. The share: `share(c) = total × w / active`, where `active` is the
//!    larger of the weights of the clients seen in this window and in the
//!    previous one (so shares do not swing at each window's start). A client
//!    within its share is admitted (within 1 and 2). Above it, it borrows only
//!    what leaves every other client its unused share: the borrow must fit
//!    under the class cap together with `total − share(c) − (hits the others
//!    were admitted within their shares)`.
//!
//! Every step is O(1) in the number of clients (sums kept as the window
//! fills), so a decision costs the same with 10 clients or 10,000; and the
//! clients tracked per window are bounded (`max_clients`): past the bound,
//! new clients are counted together as one client, [`OTHER_CLIENTS`].

use std::collections::HashMap;
use std::sync::Arc;

use super::Unit;

/// The name under which clients past the bound are counted together.
pub const OTHER_CLIENTS: &str = "\u{0}other";

/// What the decision needs of a capacity rule.
#[derive(Clone, Debug, PartialEq)]
pub struct Capacity {
    /// Hits the service takes per window.
    pub total: u64,
    /// Per class, from the most important: the share of `total` the window
    /// may reach with that class's traffic (e.g. 1.0, 0.9, 0.7). One class
    /// of 1.0 when the rule has no priorities.
    pub class_max_share: Vec<f64>,
    /// Most clients tracked per window.
    pub max_clients: usize,
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
    /// share_by=client priority_by=priority classes=critical:1,default:0.9`.
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
        write!(f, " share_by={}", self.share_by)?;
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
    /// The client's share (with nothing left to borrow).
    Share,
}

/// Why a call was admitted or rejected.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Verdict {
    /// Within the client's guaranteed share.
    Guaranteed,
    /// Above the share, on capacity the others leave unused.
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
    /// The limit that applied, in hits per window: the client's share when
    /// admitted; when rejected, the bound that rejected it (the total, the
    /// class cap or the share).
    pub limit: u64,
    /// Hits the client may still make in this window, as things stand.
    pub remaining: u64,
}

/// One client's use of a window.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct ClientUse {
    /// Hits admitted.
    pub used: u64,
    /// Of those, hits admitted within the share.
    pub guaranteed: u64,
}

/// One window of a capacity rule, and what the previous one left.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct WindowState {
    /// Hits admitted in this window.
    pub total: u64,
    /// Hits admitted within their clients' shares, summed over clients.
    pub guaranteed: u64,
    /// The weights of the clients seen in this window, summed.
    pub weight: f64,
    /// The same sum for the previous window.
    pub previous_weight: f64,
    /// Per client seen in this window.
    pub clients: HashMap<String, ClientUse>,
    /// Per class: hits admitted in this window.
    pub class_admitted: Vec<u64>,
    /// Per class: hits asked for in this window.
    pub class_demand: Vec<u64>,
    /// Per class: hits asked for in the previous window.
    pub previous_class_demand: Vec<u64>,
}

impl WindowState {
    /// Moves to the next window (`consecutive`: it directly follows this
    /// one; otherwise nothing of this one carries over).
    pub fn roll(&mut self, consecutive: bool) {
        let demand = std::mem::take(&mut self.class_demand);
        let weight = self.weight;
        *self = WindowState::default();
        if consecutive {
            self.previous_class_demand = demand;
            self.previous_weight = weight;
        }
    }

    /// Class `class`'s cap: its share of the total, less what the more
    /// important classes are still expected to need in this window.
    fn class_cap(&self, rule: &Capacity, class: usize) -> f64 {
        let total = rule.total as f64;
        let reserved = (0..class)
            .map(|j| self.previous_class_demand[j].saturating_sub(self.class_admitted[j]) as f64)
            .sum::<f64>()
            .min(total);
        let max_share = rule.class_max_share.get(class).copied().unwrap_or(1.0);
        (max_share * total - reserved).max(0.0)
    }

    /// Counts a decided call of `hits` from `client` in `class`: its demand
    /// always, its hits when admitted. `joined`: the active weight with
    /// this client, when the client is new to the window.
    fn record(
        &mut self,
        client: &str,
        joined: Option<f64>,
        class: usize,
        verdict: Verdict,
        hits: u64,
    ) {
        // Demand counts every ask: it saturates like a fixed-window count.
        self.class_demand[class] = self.class_demand[class]
            .saturating_add(hits)
            .min(super::MAX_COUNT);
        if let Some(weight) = joined {
            self.weight = weight;
            self.clients.insert(client.to_owned(), ClientUse::default());
        }
        let entry = self.clients.get_mut(client);
        if let (true, Some(entry)) = (verdict.admitted(), entry) {
            self.total = self.total.saturating_add(hits);
            self.class_admitted[class] += hits;
            entry.used += hits;
            if verdict == Verdict::Guaranteed {
                entry.guaranteed += hits;
                self.guaranteed += hits;
            }
        }
    }

    fn fit(&mut self, classes: usize) {
        for v in [
            &mut self.class_admitted,
            &mut self.class_demand,
            &mut self.previous_class_demand,
        ] {
            v.resize(classes.max(v.len()), 0);
        }
    }
}

/// Decides a call of `hits` from `client` (with `weight`) in class `class`
/// (0: the most important; out of range: the least), and counts it in
/// `state` when `commit`: its demand either way, its hits if admitted. A
/// call of 0 hits answers whether one hit would be admitted now and changes
/// nothing.
///
/// Longer than the house's 60 lines on purpose: the steps mirror
/// `capacity.lua` in order, on the same doubles, so the two read side by
/// side; only the class cap and the bookkeeping are split out.
pub fn decide(
    rule: &Capacity,
    state: &mut WindowState,
    client: &str,
    weight: f64,
    class: usize,
    hits: u64,
    commit: bool,
) -> Decided {
    let take = commit && hits > 0;
    let hits = hits.max(1);
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
    let total = rule.total as f64;
    let after = state.total.saturating_add(hits);

    // 2. The class cap, less what more important classes still need.
    let class_cap = state.class_cap(rule, class);
    // 3. The share, and what the others' unused shares hold back.
    let share = total * weight / active;
    let held = ((total - share) - (state.guaranteed - you.guaranteed) as f64).max(0.0);

    let verdict = if after > rule.total {
        Verdict::Rejected(Bound::Total)
    } else if after as f64 > class_cap {
        Verdict::Rejected(Bound::Class)
    } else if (you.used + hits) as f64 <= share {
        Verdict::Guaranteed
    } else if after as f64 + held > class_cap {
        Verdict::Rejected(Bound::Share)
    } else {
        Verdict::Borrowed
    };
    let limit = match verdict {
        Verdict::Rejected(Bound::Total) => rule.total,
        Verdict::Rejected(Bound::Class) => class_cap.floor() as u64,
        _ => share.floor() as u64,
    };
    let (used, total_after) = if verdict.admitted() && take {
        (you.used + hits, after)
    } else {
        (you.used, state.total)
    };
    let remaining = if verdict.admitted() {
        let room = (class_cap - total_after as f64).max(0.0);
        let own = (share - used as f64).max(0.0);
        let borrow = (room - held).max(0.0);
        own.max(borrow).min(room).floor() as u64
    } else {
        0
    };
    if take {
        let joined = seen.is_none().then_some(weight_now);
        state.record(client, joined, class, verdict, hits);
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
            class_max_share: classes.to_vec(),
            max_clients: 1_000,
        }
    }

    /// Sends each client's calls for one window, interleaved (one call per
    /// client per turn, as concurrent clients would), one hit each; returns
    /// the admitted count per client.
    fn window(
        rule: &Capacity,
        state: &mut WindowState,
        clients: &[(&str, usize, u64)],
    ) -> Vec<u64> {
        let mut admitted = vec![0; clients.len()];
        let mut left: Vec<u64> = clients.iter().map(|c| c.2).collect();
        while left.iter().any(|l| *l > 0) {
            for (i, (name, class, _)) in clients.iter().enumerate() {
                if left[i] > 0 {
                    left[i] -= 1;
                    if decide(rule, state, name, 1.0, *class, 1, true)
                        .verdict
                        .admitted()
                    {
                        admitted[i] += 1;
                    }
                }
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
            assert!(admitted[0] <= 40, "the abusive one: {}", admitted[0]);
            println!(
                "admitted per window: bad {}, good {:?}",
                admitted[0],
                &admitted[1..]
            );
            assert!(admitted.iter().sum::<u64>() <= 100);
            state.roll(true);
        }
    }

    #[test]
    fn a_lone_client_may_use_all_of_the_capacity() {
        let rule = rule(100, &[1.0]);
        let mut state = WindowState::default();
        assert_eq!(window(&rule, &mut state, &[("solo", 0, 150)]), [100]);
        state.roll(true);
        // The next window too: it is the only client, past or present.
        assert_eq!(window(&rule, &mut state, &[("solo", 0, 150)]), [100]);
    }

    #[test]
    fn the_least_important_traffic_is_shed_first() {
        // 2 × T offered, evenly over critical, default and sheddable.
        let rule = rule(300, &[1.0, 0.9, 0.7]);
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
            state.roll(true);
        }
        let rate = |k: usize| admitted[k] as f64 / offered[k] as f64;
        println!("admitted of 2,000 offered per class over 10 windows: {admitted:?}");
        assert!(rate(0) >= 0.95, "critical: {}", rate(0));
        assert!(rate(2) < rate(1) && rate(1) < rate(0), "{admitted:?}");
    }

    #[test]
    fn weights_set_the_shares() {
        let mut rule = rule(90, &[1.0]);
        rule.max_clients = 10;
        let mut state = WindowState::default();
        let mut got = [0u64; 2];
        // "gold" weighs 2, "bronze" 1: 60 and 30 when both flood.
        for _ in 0..200 {
            for (i, (name, w)) in [("gold", 2.0), ("bronze", 1.0)].iter().enumerate() {
                if decide(&rule, &mut state, name, *w, 0, 1, true)
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
            decide(&rule, &mut state, &format!("c{i}"), 1.0, 0, 1, true);
        }
        assert_eq!(state.clients.len(), 3 + 1);
        assert_eq!(state.clients[OTHER_CLIENTS].used, 97);
    }

    #[test]
    fn a_rejection_names_the_limit_that_applied() {
        let rule = rule(10, &[1.0, 0.5]);
        let mut state = WindowState::default();
        for _ in 0..5 {
            assert!(
                decide(&rule, &mut state, "x", 1.0, 1, 1, true)
                    .verdict
                    .admitted()
            );
        }
        let d = decide(&rule, &mut state, "x", 1.0, 1, 1, true);
        assert_eq!((d.verdict, d.limit), (Verdict::Rejected(Bound::Class), 5));
        for _ in 0..5 {
            assert!(
                decide(&rule, &mut state, "x", 1.0, 0, 1, true)
                    .verdict
                    .admitted()
            );
        }
        let d = decide(&rule, &mut state, "x", 1.0, 0, 1, true);
        assert_eq!((d.verdict, d.limit), (Verdict::Rejected(Bound::Total), 10));
    }

    #[test]
    fn a_borrower_is_stopped_by_the_others_unused_share() {
        let rule = rule(100, &[1.0]);
        let mut state = WindowState::default();
        // Two clients seen: 50 each. "a" uses 10, "b" takes its 50 and then
        // borrows up to the 40 that "a" has not used... less nothing.
        assert!(
            decide(&rule, &mut state, "a", 1.0, 0, 10, true)
                .verdict
                .admitted()
        );
        let d = decide(&rule, &mut state, "b", 1.0, 0, 50, true);
        assert_eq!((d.verdict, d.limit), (Verdict::Guaranteed, 50));
        assert_eq!(d.remaining, 0, "a's unused 40 are held for it");
        let d = decide(&rule, &mut state, "b", 1.0, 0, 1, true);
        assert_eq!((d.verdict, d.limit), (Verdict::Rejected(Bound::Share), 50));
        // "a" may still use its share, then borrow nothing more (b is full).
        let d = decide(&rule, &mut state, "a", 1.0, 0, 40, true);
        assert_eq!(d.verdict, Verdict::Guaranteed);
        assert_eq!(state.total, 100);
    }

    #[test]
    fn a_call_of_zero_hits_changes_nothing() {
        let rule = rule(10, &[1.0, 0.5]);
        let mut state = WindowState::default();
        decide(&rule, &mut state, "a", 1.0, 0, 3, true);
        let before = state.clone();
        let d = decide(&rule, &mut state, "newcomer", 1.0, 1, 0, true);
        assert_eq!(state, before);
        assert_eq!(d.verdict, Verdict::Guaranteed);
        assert_eq!(d.remaining, 2, "class cap 5, 3 taken");
    }

    #[test]
    fn only_a_consecutive_window_carries_over() {
        let rule = rule(100, &[1.0]);
        let mut state = WindowState::default();
        decide(&rule, &mut state, "a", 1.0, 0, 5, true);
        decide(&rule, &mut state, "b", 1.0, 0, 5, true);
        let mut next = state.clone();
        next.roll(true);
        assert_eq!((next.previous_weight, next.total), (2.0, 0));
        // "a" alone now, but "b" was active a window ago: a's share is 50.
        let d = decide(&rule, &mut next, "a", 1.0, 0, 1, true);
        assert_eq!(d.limit, 50);
        state.roll(false);
        assert_eq!(state, WindowState::default());
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
