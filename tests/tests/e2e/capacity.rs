//! Capacity protection (issue 10) through the whole decision path: a
//! `capacity:` rule in YAML → match → limiter → store → statuses, in the
//! memory store and in a real `redis-server` (its script's clock pinned to
//! the test's manual clock, so windows of one second are exact), and the
//! same traffic on the wire through a running server.
//!
//! The scenarios are the issue's: T = 100 per second shared by four clients
//! of which one floods; 2 × T offered over three priority classes; one
//! client alone. A property test then runs random traffic through both
//! stores call by call: the Lua script must decide exactly as the Rust code.

#![allow(clippy::unwrap_used)] // Tests: a failed unwrap is a failed test.

use std::sync::Arc;
use std::time::Duration;

use floodgate_e2e::{
    RedisCluster, RedisServer, TestServer, config_with_rules, http_get, metric_value, request,
    rules_dir,
};
use floodgate_proto::rate_limit_response::Code as WireCode;
use floodgate_server::clock::Clock;
use floodgate_server::limiter::{Code, Limiter, LimiterOptions, Request, RequestLimits, Status};
use floodgate_server::model::capacity::{Capacity, CapacityRule, LimitNames};
use floodgate_server::rules::{Rules, Unit, load_files};
use floodgate_server::store::key::CacheKey;
use floodgate_server::store::memory::MemoryStore;
use floodgate_server::store::redis::{RedisSettings, RedisStore, RedisTopology};
use floodgate_server::store::{CapacityCall, Check, Commit, CounterStore, Limit};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};

/// A whole second, 100 ms in.
const START_MS: u64 = 1_700_000_000_100;

const RULES: &str = r#"
domain: shop
descriptors:
  - key: service
    value: checkout
    capacity:
      requests_per_unit: 100
      unit: second
      share_by: client
  - key: service
    value: search
    capacity:
      name: search
      requests_per_unit: 300
      unit: second
      share_by: client
      guaranteed_share: 0
      priority_by: priority
      classes:
        - name: critical
        - name: default
          max_share: 0.9
        - name: sheddable
          max_share: 0.7
  - key: service
    value: api
    capacity:
      requests_per_unit: 30
      unit: second
      share_by: client
      priority_by: priority
      classes:
        - name: critical
        - name: default
          max_share: 0.9
        - name: sheddable
          max_share: 0.5
"#;

/// A limiter over [`RULES`] counting in `store`, on `clock`.
fn limiter(store: Arc<dyn CounterStore>, clock: Clock) -> Limiter {
    let rules = Rules::new(load_files(&[("shop.yaml".into(), RULES.into())], false).unwrap());
    Limiter::new(
        rules,
        store,
        CacheKey::new("cap:"),
        clock,
        LimiterOptions::default(),
    )
}

/// The memory store and a Redis store, each with its limiter, on one manual
/// clock. The Redis server lives as long as the value.
struct Both {
    clock: Clock,
    stores: Vec<(&'static str, Limiter)>,
    _redis: RedisServer,
    _cluster: Option<RedisCluster>,
}

async fn both() -> Both {
    let clock = Clock::manual(Duration::from_millis(START_MS));
    let server = RedisServer::start();
    let redis = RedisStore::connect(&RedisSettings::single(server.url()))
        .await
        .unwrap()
        .with_local_time(clock.clone());
    let memory = MemoryStore::new(10_000, clock.clone());
    Both {
        stores: vec![
            ("memory", limiter(Arc::new(memory), clock.clone())),
            ("redis", limiter(Arc::new(redis), clock.clone())),
        ],
        clock,
        _redis: server,
        _cluster: None,
    }
}

/// The memory store, a single Redis and a 3-primary Redis Cluster, each
/// with its limiter, on one manual clock.
async fn all_three() -> Both {
    let mut both = both().await;
    let cluster = RedisCluster::start();
    let settings = RedisSettings {
        topology: RedisTopology::Cluster(
            cluster.seed_urls().split(',').map(str::to_owned).collect(),
        ),
        ..RedisSettings::single("")
    };
    let store = RedisStore::connect(&settings)
        .await
        .unwrap()
        .with_local_time(both.clock.clone());
    both.stores
        .push(("cluster", limiter(Arc::new(store), both.clock.clone())));
    both._cluster = Some(cluster);
    both
}

/// One call of one hit; its status.
async fn call(limiter: &Limiter, entries: &[(&str, &str)]) -> Status {
    let proto = request("shop", entries);
    let request = Request::parse(&proto, &RequestLimits::default()).unwrap();
    let mut decision = limiter.decide(&request).await.unwrap();
    decision.statuses.remove(0)
}

/// Sends each sender's calls for one window, interleaved (one call per
/// sender per turn, as concurrent clients would); returns what each got.
async fn window(limiter: &Limiter, senders: &[(Vec<(&str, &str)>, u64)]) -> Vec<u64> {
    let mut admitted = vec![0; senders.len()];
    for turn in 0..senders.iter().map(|s| s.1).max().unwrap_or(0) {
        for (i, (entries, calls)) in senders.iter().enumerate() {
            if turn < *calls && call(limiter, entries).await.code == Code::Ok {
                admitted[i] += 1;
            }
        }
    }
    admitted
}

fn checkout(client: &str) -> Vec<(&str, &str)> {
    vec![("service", "checkout"), ("client", client)]
}

fn search<'a>(client: &'a str, priority: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![
        ("service", "search"),
        ("client", client),
        ("priority", priority),
    ]
}

#[tokio::test]
async fn an_abusive_client_cannot_starve_the_others() {
    let both = both().await;
    for (store, limiter) in &both.stores {
        for second in 0..3 {
            // T = 100; "bad" sends 10 × T, three good clients 20 each.
            let senders = [
                (checkout("bad"), 1_000),
                (checkout("a"), 20),
                (checkout("b"), 20),
                (checkout("c"), 20),
            ];
            let got = window(limiter, &senders).await;
            println!(
                "{store}, second {second}: bad {}, good {:?}",
                got[0],
                &got[1..]
            );
            assert_eq!(
                &got[1..],
                &[20, 20, 20],
                "{store}: the good ones get all they ask"
            );
            // Its guarantee (0.8 × 100 / 4 = 20) and the priority part
            // (the other 20): T is used, and no more.
            assert_eq!(got[0], 40, "{store}: the abusive one");
            assert_eq!(got.iter().sum::<u64>(), 100, "{store}: all of T");
            // Still rejected at the end of the window, and the status says
            // by what: the total, until the window ends.
            let status = call(limiter, &checkout("bad")).await;
            assert_eq!(status.code, Code::OverLimit);
            let limit = status.limit.unwrap();
            assert_eq!(
                (limit.requests_per_unit, limit.unit, limit.name.as_deref()),
                (100, Unit::Second, Some("capacity.total")),
                "{store}"
            );
            assert!(status.reset_after.unwrap() <= Duration::from_millis(900));
            both.clock.advance(Duration::from_secs(1));
        }
    }
}

#[tokio::test]
async fn with_no_guarantees_the_least_important_traffic_is_shed_first() {
    let both = both().await;
    for (store, limiter) in &both.stores {
        let classes = ["critical", "default", "sheddable"];
        let (mut offered, mut admitted) = ([0u64; 3], [0u64; 3]);
        for second in 0..10 {
            // 2 × T (T = 300, guaranteed_share 0: pure priority), evenly
            // over the three classes, from six clients (two per class).
            let senders: Vec<_> = classes
                .iter()
                .flat_map(|class| [search("x", class), search("y", class)])
                .map(|entries| (entries, 100))
                .collect();
            let got = window(limiter, &senders).await;
            assert!(
                got.iter().sum::<u64>() <= 300,
                "{store}: never past T: {got:?}"
            );
            let per_class: Vec<u64> = (0..3).map(|k| got[2 * k] + got[2 * k + 1]).collect();
            if second == 0 {
                // Before any history, the class caps alone shed: sheddable
                // stops at 70% of T, default at 90%, critical takes the rest.
                assert_eq!(per_class, [130, 100, 70], "{store}");
            } else if second == 1 {
                // Then what critical could have been admitted a second
                // before is held for it. The first second was seen from
                // 100 ms on, so its demand counts as a rate over 0.9 s:
                // 200 / 0.9 = 222 for critical, and default gets the 78 left.
                assert_eq!(per_class, [200, 78, 0], "{store}, second {second}");
            } else {
                // From then on, critical's 200 and default's 100.
                assert_eq!(per_class, [200, 100, 0], "{store}, second {second}");
            }
            for k in 0..3 {
                offered[k] += 200;
                admitted[k] += per_class[k];
            }
            // A shed call says which class cap shed it.
            let status = call(limiter, &search("x", "sheddable")).await;
            assert_eq!(status.code, Code::OverLimit);
            let name = status.limit.unwrap().name.unwrap();
            assert!(
                name.starts_with("search.class.sheddable") || &*name == "search.total",
                "{store}: {name}"
            );
            both.clock.advance(Duration::from_secs(1));
        }
        println!("{store}: admitted of 2,000 offered per class over 10 s: {admitted:?}");
        assert_eq!(admitted, [1_930, 978, 70], "{store}");
    }
}

/// The issue's first scenario, a second at a time: T = 30; `bad` sends 100
/// claiming `critical`; d1 and d2 (`default`) and s1 (`sheddable`) send 5
/// each. Returns what each got per second.
async fn flooder_claiming_critical(limiter: &Limiter, clock: &Clock) -> Vec<Vec<u64>> {
    let mut seconds = Vec::new();
    for _ in 0..4 {
        let senders = [
            (api("bad", "critical"), 100),
            (api("d1", "default"), 5),
            (api("d2", "default"), 5),
            (api("s1", "sheddable"), 5),
        ];
        seconds.push(window(limiter, &senders).await);
        clock.advance(Duration::from_secs(1));
    }
    seconds
}

#[tokio::test]
async fn a_flooder_claiming_critical_takes_no_ones_guarantee_and_nothing_is_idle() {
    let stores = all_three().await;
    for (store, limiter) in &stores.stores {
        let seconds = flooder_claiming_critical(limiter, &stores.clock).await;
        println!("{store}: bad, d1, d2, s1 per second: {seconds:?}");
        for (second, got) in seconds.iter().enumerate().skip(1) {
            // Their guarantees are 0.8 × 30 / 4 = 6 each: all 5 get through.
            assert_eq!(&got[1..], &[5, 5, 5], "{store}, second {second}");
            // bad: its 6 and the 9 the others leave.
            assert_eq!(got[0], 15, "{store}, second {second}");
            let total: u64 = got.iter().sum();
            assert!(
                (27..=30).contains(&total),
                "{store}, second {second}: {total}"
            );
        }
    }
}

#[tokio::test]
async fn distinct_clients_per_class_are_admitted_in_order_of_importance() {
    let stores = all_three().await;
    for (store, limiter) in &stores.stores {
        let classes = ["critical", "default", "sheddable"];
        for second in 0..4 {
            // Six clients, two per class, 10 a second each: 2 × T.
            let senders: Vec<_> = classes
                .iter()
                .enumerate()
                .flat_map(|(k, class)| {
                    [
                        (api(CLIENTS[2 * k], class), 10),
                        (api(CLIENTS[2 * k + 1], class), 10),
                    ]
                })
                .collect();
            let got = window(limiter, &senders).await;
            let per_class: Vec<u64> = (0..3).map(|k| got[2 * k] + got[2 * k + 1]).collect();
            println!("{store}, second {second}: per client {got:?}, per class {per_class:?}");
            stores.clock.advance(Duration::from_secs(1));
            if second == 0 {
                continue;
            }
            let total: u64 = per_class.iter().sum();
            assert!(
                (27..=30).contains(&total),
                "{store}, second {second}: {total}"
            );
            // 20 offered per class: the ratios are in the counts' order.
            assert!(
                per_class[0] >= per_class[1] && per_class[1] >= per_class[2],
                "{store}, second {second}: {per_class:?}"
            );
            // Guarantees of 4 each (0.8 × 30 / 6), and the 6 that are left
            // go to critical.
            assert_eq!(per_class, [14, 8, 8], "{store}, second {second}");
        }
    }
}

const CLIENTS: [&str; 6] = ["c1", "c2", "d1", "d2", "s1", "s2"];

fn api<'a>(client: &'a str, priority: &'a str) -> Vec<(&'a str, &'a str)> {
    vec![
        ("service", "api"),
        ("client", client),
        ("priority", priority),
    ]
}

#[tokio::test]
async fn a_lone_client_may_use_all_of_the_capacity() {
    let both = both().await;
    for (store, limiter) in &both.stores {
        for _ in 0..2 {
            let got = window(limiter, &[(checkout("solo"), 150)]).await;
            assert_eq!(got, [100], "{store}");
            both.clock.advance(Duration::from_secs(1));
        }
    }
}

#[tokio::test]
async fn the_priority_entry_is_optional_and_unknown_classes_are_the_default() {
    let both = both().await;
    for (store, limiter) in &both.stores {
        // No priority entry, or an unknown one: the default class, here the
        // last (sheddable), which stops at 70% of 300.
        let senders = [
            (vec![("service", "search"), ("client", "x")], 200),
            (search("y", "platinum"), 200),
        ];
        let got = window(limiter, &senders).await;
        assert_eq!(got.iter().sum::<u64>(), 210, "{store}: {got:?}");
        both.clock.advance(Duration::from_secs(1));
    }
}

/// One random call: (ms to advance, client, class, hits, how: 0 alone, 1
/// all-or-nothing beside a small fixed window, 2 a peek first).
type Step = (u64, usize, usize, u64, u8);

fn steps() -> impl Strategy<Value = (u64, f64, Vec<f64>, Vec<Step>)> {
    (
        1u64..40,
        prop_oneof![Just(0.0), Just(0.5), Just(0.8), Just(1.0), 0.0f64..=1.0],
        prop_oneof![
            Just(vec![1.0]),
            Just(vec![1.0, 0.9, 0.7]),
            Just(vec![1.0, 0.5]),
            Just(vec![0.8, 0.8, 0.25]),
        ],
        proptest::collection::vec((0u64..400, 0usize..6, 0usize..4, 0u64..4, 0u8..3), 1..80),
    )
}

/// A current-thread runtime, a `redis-server` with a store on it, and a
/// proptest runner of `cases` cases (`CAPACITY_CASES` overrides it).
fn on_redis(cases: u32) -> (tokio::runtime::Runtime, RedisServer, RedisStore, TestRunner) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let server = RedisServer::start();
    let redis = runtime
        .block_on(RedisStore::connect(&RedisSettings::single(server.url())))
        .unwrap();
    let cases = std::env::var("CAPACITY_CASES")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(cases);
    let runner = TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    });
    (runtime, server, redis, runner)
}

/// A rule over `limits` whose clients are named by `client` and weighed by
/// `weights`; its calls name their class by index.
fn rule_by_client(
    limits: Capacity,
    weights: std::collections::HashMap<Box<str>, f64>,
) -> Arc<CapacityRule> {
    Arc::new(CapacityRule {
        limits,
        unit: Unit::Second,
        unit_multiplier: 1,
        share_by: "client".into(),
        priority_by: None,
        classes: Vec::new(),
        default_class: 0,
        weights,
        name: None,
        names: LimitNames::new(None, &[]),
    })
}

#[test]
fn redis_decides_exactly_as_the_memory_store() {
    let (runtime, _server, redis, mut runner) = on_redis(64);
    let cases = std::sync::atomic::AtomicU64::new(0);
    runner
        .run(&steps(), |(total, guaranteed_share, shares, steps)| {
            let n = cases.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let clock = Clock::manual(Duration::from_millis(START_MS));
            let memory = MemoryStore::new(1_000, clock.clone());
            let redis = redis.clone().with_local_time(clock.clone());
            // Weights 1, 2 and 0.5, and at most 4 clients of 6 tracked.
            let limits = Capacity {
                total,
                guaranteed_share,
                class_max_share: shares,
                max_clients: 4,
            };
            let weights = [("c1".into(), 2.0), ("c2".into(), 0.5)];
            let rule = rule_by_client(limits, weights.into_iter().collect());
            for (i, (advance, client, class, hits, how)) in steps.into_iter().enumerate() {
                clock.advance(Duration::from_millis(advance));
                let client = format!("c{client}");
                let check = Check {
                    key: format!("prop{n}"),
                    hits,
                    veto: true,
                    // The rule's window is 1 s; the memory store computes
                    // the reset time itself.
                    limit: Limit::Capacity(CapacityCall {
                        weight: rule.weight_of(&client),
                        rule: rule.clone(),
                        client,
                        class,
                        reset_after: Duration::ZERO,
                    }),
                };
                let (checks, commit) = match how {
                    // Beside a fixed window of 2 per second, all or nothing
                    // (all_or_nothing.lua against MemoryStore::all_or_nothing).
                    1 => {
                        // A fixed window's key and reset come from the limiter's clock.
                        let now_ms = clock.now().as_millis() as u64;
                        let small = Check {
                            key: format!("prop{n}_fw_{}", now_ms / 1_000),
                            limit: Limit::FixedWindow {
                                limit: 2,
                                period_ms: 1_000.0,
                                reset_after: Duration::from_millis(1_000 - now_ms % 1_000),
                            },
                            ..check.clone()
                        };
                        (vec![check.clone(), small], Commit::AllOrNothing)
                    }
                    _ => (vec![check.clone()], Commit::Each),
                };
                if how == 2 {
                    // A peek: answers for one hit, writes nothing.
                    let peek = [Check {
                        hits: 0,
                        ..check.clone()
                    }];
                    let m = runtime
                        .block_on(memory.apply(&peek, Commit::Each.into()))
                        .unwrap()
                        .outcomes;
                    let r = runtime
                        .block_on(redis.apply(&peek, Commit::Each.into()))
                        .unwrap()
                        .outcomes;
                    prop_assert_eq!(&m, &r, "peek at step {}", i);
                }
                let m = runtime
                    .block_on(memory.apply(&checks, commit.into()))
                    .unwrap()
                    .outcomes;
                let r = runtime
                    .block_on(redis.apply(&checks, commit.into()))
                    .unwrap()
                    .outcomes;
                for (m, r) in m.iter().zip(&r) {
                    prop_assert_eq!(
                        (m.allowed, m.remaining, m.capacity),
                        (r.allowed, r.remaining, r.capacity),
                        "step {} ({:?}): {:?}",
                        i,
                        commit,
                        &check.limit
                    );
                    prop_assert!(m.reset_after.abs_diff(r.reset_after) <= Duration::from_millis(1));
                }
            }
            Ok::<(), TestCaseError>(())
        })
        .unwrap();
}

#[tokio::test]
async fn statuses_and_metrics_on_the_wire() {
    let rules = rules_dir(&[("shop.yaml", RULES)]);
    let clock = Clock::manual(Duration::from_millis(START_MS));
    let server = TestServer::start_with_clock(config_with_rules(rules.path()), clock).await;
    let mut client = server.client().await;
    // "bad" and "good" alternate for 20 calls each, then "bad" sends 80 more.
    let mut last = None;
    for i in 0..120 {
        let who = if i < 40 && i % 2 == 1 { "good" } else { "bad" };
        let response = client
            .should_rate_limit(request("shop", &checkout(who)))
            .await
            .unwrap()
            .into_inner();
        if who == "bad" {
            last = Some(response);
        }
    }
    // "bad" got its guarantee, 40 (0.8 × 100 / 2), and the priority part
    // that is not held for good's guarantee (the 20 good has not used): 20.
    // The last 40 of bad's 100 were rejected by its guarantee.
    let response = last.unwrap();
    assert_eq!(response.overall_code, WireCode::OverLimit as i32);
    let status = &response.statuses[0];
    let limit = status.current_limit.as_ref().unwrap();
    assert_eq!(
        (limit.requests_per_unit, limit.name.as_str()),
        (40, "capacity.share")
    );
    assert_eq!(
        limit.unit,
        floodgate_proto::rate_limit_response::rate_limit::Unit::Second as i32
    );
    assert!(status.duration_until_reset.is_some());

    let (code, body) = http_get(&format!("http://{}/metrics", server.http_addr)).await;
    assert_eq!(code, 200);
    let line = |series: &str| {
        metric_value::<u64>(&body, series).unwrap_or_else(|| panic!("no {series} in\n{body}"))
    };
    let key = r#"domain="shop",key="service_checkout""#;
    assert_eq!(
        line(&format!(
            r#"floodgate_capacity_client_hits_total{{{key},client="bad",admitted="true"}}"#
        )),
        60
    );
    assert_eq!(
        line(&format!(
            r#"floodgate_capacity_client_hits_total{{{key},client="bad",admitted="false"}}"#
        )),
        40
    );
    assert_eq!(
        line(&format!(
            r#"floodgate_capacity_hits_total{{{key},class="",verdict="over_share"}}"#
        )),
        40
    );
    // 40 of bad's and 20 of good's within their guarantees; 20 borrowed.
    assert_eq!(
        line(&format!(
            r#"floodgate_capacity_hits_total{{{key},class="",verdict="guaranteed"}}"#
        )),
        60
    );
    assert_eq!(
        line(&format!(
            r#"floodgate_capacity_hits_total{{{key},class="",verdict="borrowed"}}"#
        )),
        20
    );
    server.stop().await.unwrap();
}

/// A random rule and its traffic: T, g, the class caps, and per steady
/// client its weight, class and demand per window; maybe a fickle client
/// (its weight and class), which asks for 1 in even windows and floods
/// with 3 × T in odd ones; a seed for the order of arrivals.
type Layout = (
    u64,
    f64,
    Vec<f64>,
    Vec<(f64, usize, u64)>,
    Option<(f64, usize)>,
    u64,
);

/// Weights the clients of [`layouts`] have.
fn weights() -> impl Strategy<Value = f64> {
    prop_oneof![Just(0.5), Just(1.0), Just(2.0), Just(3.0)]
}

fn layouts() -> impl Strategy<Value = Layout> {
    (10u64..120).prop_flat_map(|total| {
        let demand = prop_oneof![
            0..=total / 4,
            total / 4..=total,
            // Flooders, in any class.
            Just(3 * total),
        ];
        (
            Just(total),
            prop_oneof![Just(0.0), Just(0.5), Just(0.8), Just(1.0), 0.0f64..=1.0],
            prop_oneof![
                Just(vec![1.0]),
                Just(vec![1.0, 0.9, 0.5]),
                Just(vec![1.0, 0.5]),
                Just(vec![0.8, 0.8, 0.25]),
            ],
            proptest::collection::vec((weights(), 0usize..3, demand), 1..7),
            prop_oneof![Just(None), (weights(), 0usize..3).prop_map(Some)],
            any::<u64>(),
        )
    })
}

/// The calls of one window of `demands`, spread through it as steady
/// senders would: sender `i`'s `j`-th call at `(j + phase_i) / demand_i` of
/// the window, with a random phase per sender; in time order, as (offset
/// from the window's start, sender).
fn spread(demands: &[u64], rng: &mut fastrand::Rng) -> Vec<(Duration, usize)> {
    let mut calls: Vec<(Duration, usize)> = Vec::new();
    for (i, demand) in demands.iter().enumerate() {
        let phase = rng.f64();
        for j in 0..*demand {
            // Whole microseconds: the manual clock's unit.
            let at = (j as f64 + phase) / *demand as f64;
            calls.push((Duration::from_micros((at * 1e6) as u64), i));
        }
    }
    calls.sort();
    calls
}

/// One window of `clients`' traffic through `store`, one hit a call,
/// spread through the window ([`spread`]), the clock moved to each call;
/// what each client got. The clock must be at the window's start.
async fn steady_window(
    store: &dyn CounterStore,
    (key, clock): (&str, &Clock),
    rule: &Arc<CapacityRule>,
    clients: &[(f64, usize, u64)],
    rng: &mut fastrand::Rng,
) -> Vec<u64> {
    let mut admitted = vec![0; clients.len()];
    let demands: Vec<u64> = clients.iter().map(|c| c.2).collect();
    let mut at = Duration::ZERO;
    for (offset, i) in spread(&demands, rng) {
        clock.advance(offset - at);
        at = offset;
        let (weight, class, _) = clients[i];
        let check = Check {
            key: key.to_owned(),
            hits: 1,
            veto: true,
            limit: Limit::Capacity(CapacityCall {
                weight,
                rule: rule.clone(),
                client: format!("c{i}"),
                class,
                reset_after: Duration::ZERO,
            }),
        };
        let outcome = store.apply(&[check], Commit::Each.into()).await.unwrap();
        if outcome.outcomes[0].allowed {
            admitted[i] += 1;
        }
    }
    clock.advance(Duration::from_secs(1) - at);
    admitted
}

/// Properties 1 to 4 of the model for one window of `clients`: never past
/// T; all of min(offered, 0.9 × T) admitted; every client at least min(its
/// demand, its guarantee); above the guarantees, no class admitted at a
/// higher ratio than a more important one. With a `fickle` client (its
/// index), 1, and 3 for the steady clients: the model promises nothing to
/// a client whose demand rose past its expectation, and a class that
/// stopped asking leaves its reservation unused for a window (the README's
/// "What remains").
fn check_properties(
    (total, g, shares): (&u64, &f64, &[f64]),
    clients: &[(f64, usize, u64)],
    fickle: Option<usize>,
    got: &[u64],
) -> Result<(), TestCaseError> {
    let offered: u64 = clients.iter().map(|c| c.2).sum();
    let admitted: u64 = got.iter().sum();
    prop_assert!(admitted <= *total, "past T: {admitted}");
    let floor = (offered as f64).min(0.9 * *total as f64);
    prop_assert!(
        fickle.is_some() || admitted as f64 >= floor,
        "idle: {admitted} of {offered}"
    );
    let active: f64 = clients.iter().filter(|c| c.2 > 0).map(|c| c.0).sum();
    let mut beyond = vec![(0u64, 0u64); shares.len()];
    for (i, (weight, class, demand)) in clients.iter().enumerate() {
        if fickle == Some(i) {
            continue;
        }
        let guarantee = (g * *total as f64 * weight / active).floor() as u64;
        let owed = (*demand).min(guarantee);
        prop_assert!(got[i] >= owed, "client {i} got {} of {owed}", got[i]);
        let class = (*class).min(shares.len() - 1);
        beyond[class].0 += got[i] - owed;
        beyond[class].1 += demand - owed;
    }
    if offered > *total && fickle.is_none() {
        let ratios: Vec<f64> = beyond
            .iter()
            .filter(|b| b.1 > 0)
            .map(|b| b.0 as f64 / b.1 as f64)
            .collect();
        prop_assert!(
            ratios.windows(2).all(|r| r[0] >= r[1]),
            "priority out of order: {beyond:?}"
        );
    }
    Ok(())
}

#[test]
fn the_models_properties_hold_in_every_window_after_the_first() {
    let (runtime, _server, redis, mut runner) = on_redis(32);
    let cases = std::sync::atomic::AtomicU64::new(0);
    runner
        .run(&layouts(), |layout| {
            let n = cases.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let (total, guaranteed_share, shares, steady, fickle, seed) = layout.clone();
            // At a second's start: the windows are whole seconds.
            let clock = Clock::manual(Duration::from_millis(START_MS - 100));
            let memory = MemoryStore::new(1_000, clock.clone());
            let redis = redis.clone().with_local_time(clock.clone());
            let limits = Capacity {
                total,
                guaranteed_share,
                class_max_share: shares.clone(),
                max_clients: 100,
            };
            let rule = rule_by_client(limits, Default::default());
            let stores: [(&str, &dyn CounterStore); 2] = [("memory", &memory), ("redis", &redis)];
            for (name, store) in stores {
                let mut rng = fastrand::Rng::with_seed(seed);
                let key = format!("props{n}");
                for window in 0..4 {
                    // The fickle client, last: 1 in even windows, 3 × T in odd.
                    let mut clients = steady.clone();
                    if let Some((weight, class)) = fickle {
                        let demand = if window % 2 == 0 { 1 } else { 3 * total };
                        clients.push((weight, class, demand));
                    }
                    let got = runtime.block_on(steady_window(
                        store,
                        (&key, &clock),
                        &rule,
                        &clients,
                        &mut rng,
                    ));
                    if window > 0 {
                        let fickle = fickle.map(|_| steady.len());
                        let rule = (&total, &guaranteed_share, shares.as_slice());
                        check_properties(rule, &clients, fickle, &got).map_err(|e| {
                            TestCaseError::fail(format!(
                                "{name}, window {window}: {e}; got {got:?}"
                            ))
                        })?;
                    }
                }
                // The next store starts from a fresh window.
                clock.advance(Duration::from_secs(5));
            }
            Ok::<(), TestCaseError>(())
        })
        .unwrap();
}
