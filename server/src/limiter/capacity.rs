//! Capacity protection (issue 10, first part: the decision itself; the
//! rules extension, the stores and the Lua script come next): a service
//! takes `total` hits per window; every client active in the window is
//! guaranteed its weighted share of it; above its share a client may borrow
//! capacity the others leave unused; and near the total, the least
//! important traffic is shed first.
//!
//! This module is the decision as a pure function over one window's state
//! ([`WindowState`]), so that the memory store and the Redis script can
//! implement the same rules and be tested against it.
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
//! 3. The share: the clients active in this window or the previous one
//!    share `total` by weight. A client under its share is admitted (within
//!    1 and 2). Above it, it borrows only what leaves every other active
//!    client its unused share.
//!
//! Active clients are bounded (`max_clients`): past the bound, new clients
//! are counted together under one shared client.

use std::collections::HashMap;

/// The name under which clients past the bound are counted together.
pub const OTHER_CLIENTS: &str = "\u{0}other";

/// A capacity rule.
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

/// Why a call was admitted or rejected.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Verdict {
    /// Within the client's guaranteed share.
    Guaranteed,
    /// Above the share, on capacity the others leave unused.
    Borrowed,
    /// Rejected; `limit` is the limit that rejected it (the total, the
    /// class cap or the client's share, in hits per window).
    Rejected {
        /// The limit that applied.
        limit: u64,
    },
}

impl Verdict {
    /// True when admitted.
    pub fn admitted(self) -> bool {
        !matches!(self, Verdict::Rejected { .. })
    }
}

/// One window of a capacity rule, and what the previous one left.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct WindowState {
    /// Hits admitted in this window.
    pub total: u64,
    /// Per client active in this window: (weight, hits admitted).
    pub clients: HashMap<String, (f64, u64)>,
    /// Clients active in the previous window, with their weights.
    pub previous_clients: HashMap<String, f64>,
    /// Per class: hits admitted in this window.
    pub class_admitted: Vec<u64>,
    /// Per class: hits asked for in this window.
    pub class_demand: Vec<u64>,
    /// Per class: hits asked for in the previous window.
    pub previous_class_demand: Vec<u64>,
}

impl WindowState {
    /// Moves to the next window: this window's clients and demand become
    /// the previous ones; counts start from zero.
    pub fn roll(&mut self) {
        self.previous_clients = self
            .clients
            .drain()
            .map(|(name, (weight, _))| (name, weight))
            .collect();
        self.previous_class_demand = std::mem::take(&mut self.class_demand);
        self.class_admitted.clear();
        self.total = 0;
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
/// `state` if admitted (its demand is counted either way).
pub fn decide(
    rule: &Capacity,
    state: &mut WindowState,
    client: &str,
    weight: f64,
    class: usize,
    hits: u64,
) -> Verdict {
    let classes = rule.class_max_share.len().max(1);
    let class = class.min(classes - 1);
    state.fit(classes);
    state.class_demand[class] = state.class_demand[class].saturating_add(hits);
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
    let used = state
        .clients
        .entry(client.to_owned())
        .or_insert((weight, 0))
        .1;
    let total = rule.total as f64;
    let after = (state.total + hits) as f64;

    // 1. The total.
    if after > total {
        return Verdict::Rejected { limit: rule.total };
    }
    // 2. The class cap, less what more important classes still need.
    let reserved: f64 = (0..class)
        .map(|j| state.previous_class_demand[j].saturating_sub(state.class_admitted[j]) as f64)
        .sum::<f64>()
        .min(total);
    let max_share = rule.class_max_share.get(class).copied().unwrap_or(1.0);
    let class_cap = (max_share * total - reserved).max(0.0);
    if after > class_cap {
        return Verdict::Rejected {
            limit: class_cap.floor() as u64,
        };
    }
    // 3. The share, among the clients active now or in the last window.
    let mut weights: HashMap<&str, f64> = state
        .previous_clients
        .iter()
        .map(|(name, w)| (name.as_str(), *w))
        .collect();
    for (name, (w, _)) in &state.clients {
        weights.insert(name.as_str(), *w);
    }
    let all: f64 = weights.values().sum();
    let share_of = |w: f64| total * w / all;
    let share = share_of(weight);
    let verdict = if (used + hits) as f64 <= share {
        Verdict::Guaranteed
    } else {
        // Borrow only what leaves every other active client its unused share.
        let unused_by_others: f64 = weights
            .iter()
            .filter(|(name, _)| **name != client)
            .map(|(name, w)| {
                let used = state.clients.get(*name).map_or(0, |(_, u)| *u) as f64;
                (share_of(*w) - used).max(0.0)
            })
            .sum();
        if after + unused_by_others > class_cap {
            return Verdict::Rejected {
                limit: share.floor() as u64,
            };
        }
        Verdict::Borrowed
    };
    state.total += hits;
    state.class_admitted[class] += hits;
    if let Some(entry) = state.clients.get_mut(client) {
        entry.1 += hits;
    }
    verdict
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
                    if decide(rule, state, name, 1.0, *class, 1).admitted() {
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
            state.roll();
        }
    }

    #[test]
    fn a_lone_client_may_use_all_of_the_capacity() {
        let rule = rule(100, &[1.0]);
        let mut state = WindowState::default();
        assert_eq!(window(&rule, &mut state, &[("solo", 0, 150)]), [100]);
        state.roll();
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
            state.roll();
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
                if decide(&rule, &mut state, name, *w, 0, 1).admitted() {
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
            decide(&rule, &mut state, &format!("c{i}"), 1.0, 0, 1);
        }
        assert_eq!(state.clients.len(), 3 + 1);
        assert_eq!(state.clients[OTHER_CLIENTS].1, 97);
    }

    #[test]
    fn a_rejection_names_the_limit_that_applied() {
        let rule = rule(10, &[1.0, 0.5]);
        let mut state = WindowState::default();
        for _ in 0..5 {
            assert!(decide(&rule, &mut state, "x", 1.0, 1, 1).admitted());
        }
        assert_eq!(
            decide(&rule, &mut state, "x", 1.0, 1, 1),
            Verdict::Rejected { limit: 5 },
            "the class cap"
        );
        for _ in 0..5 {
            assert!(decide(&rule, &mut state, "x", 1.0, 0, 1).admitted());
        }
        assert_eq!(
            decide(&rule, &mut state, "x", 1.0, 0, 1),
            Verdict::Rejected { limit: 10 },
            "the total"
        );
    }
}
