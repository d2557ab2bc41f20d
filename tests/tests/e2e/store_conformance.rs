//! One conformance suite for every `CounterStore`: the same scenario runs
//! against the memory store and against a real `redis-server` started by the
//! harness. Backend-specific guarantees (TTLs, script reload, pipelining)
//! follow in their own tests.

#![allow(clippy::unwrap_used)] // Tests: a failed unwrap is a failed test.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use floodgate_e2e::redis_command::{command, info_number};
use floodgate_e2e::{RedisCluster, RedisServer, key_slot};
use floodgate_server::clock::Clock;
use floodgate_server::limiter::MAX_HITS;
use floodgate_server::model::algorithm::{Algorithm, Rate};
use floodgate_server::store::memory::MemoryStore;
use floodgate_server::store::redis::{RedisSettings, RedisStore, RedisTopology};
use floodgate_server::store::{Check, Commit, CounterStore, Limit, MAX_COUNT, StoreError};
use redis::AsyncCommands;

/// A fixed-window limit so high it is never reached: the outcome's
/// `remaining` then tells the count.
const LIMIT: u64 = 1 << 52;

fn hit(key: &str, hits: u64) -> Check {
    Check {
        key: key.into(),
        hits,
        limit: fixed_window(LIMIT),
        veto: true,
    }
}

/// A fixed window of `limit` a minute, 30 s from its end.
fn fixed_window(limit: u64) -> Limit {
    Limit::FixedWindow {
        limit,
        period_ms: 60_000.0,
        reset_after: Duration::from_secs(30),
    }
}

/// Fixed-window counts through `CounterStore::apply`.
trait Counts {
    fn increment<'a>(
        &'a self,
        checks: &'a [Check],
    ) -> impl Future<Output = Result<Vec<u64>, StoreError>> + Send + 'a;
}

impl<S: CounterStore + ?Sized> Counts for S {
    async fn increment<'a>(&'a self, checks: &'a [Check]) -> Result<Vec<u64>, StoreError> {
        Ok(self
            .apply(checks, Commit::Each.into())
            .await?
            .outcomes
            .iter()
            .map(|o| LIMIT - o.remaining)
            .collect())
    }
}

/// What every store must do.
async fn conformance(store: &dyn CounterStore, prefix: &str) {
    let k = |name: &str| format!("{prefix}{name}");

    assert_eq!(
        store.increment(&[]).await.unwrap(),
        Vec::<u64>::new(),
        "an empty call is fine"
    );

    // Counts accumulate per key and come back in call order.
    assert_eq!(store.increment(&[hit(&k("a"), 1)]).await.unwrap(), [1]);
    assert_eq!(store.increment(&[hit(&k("a"), 2)]).await.unwrap(), [3]);
    assert_eq!(
        store
            .increment(&[hit(&k("b"), 5), hit(&k("a"), 1), hit(&k("c"), 1)])
            .await
            .unwrap(),
        [5, 4, 1]
    );

    // Zero hits read without creating.
    assert_eq!(store.increment(&[hit(&k("a"), 0)]).await.unwrap(), [4]);
    assert_eq!(store.increment(&[hit(&k("never"), 0)]).await.unwrap(), [0]);
    assert_eq!(store.increment(&[hit(&k("never"), 0)]).await.unwrap(), [0]);

    // The same key twice in one call sees both hits, in order.
    assert_eq!(
        store
            .increment(&[hit(&k("d"), 1), hit(&k("d"), 1)])
            .await
            .unwrap(),
        [1, 2]
    );

    // Large hit counts (LLM-token style quotas).
    assert_eq!(
        store
            .increment(&[hit(&k("big"), 4_000_000_000)])
            .await
            .unwrap(),
        [4_000_000_000]
    );
    assert_eq!(
        store
            .increment(&[hit(&k("big"), 4_000_000_000)])
            .await
            .unwrap(),
        [8_000_000_000]
    );

    store.ping().await.expect("ping");
}

/// Concurrent increments of one key are never lost or duplicated.
async fn concurrent_increments_are_exact(store: Arc<dyn CounterStore>, key: String) {
    let tasks: Vec<_> = (0..50)
        .map(|_| {
            let store = store.clone();
            let key = key.clone();
            tokio::spawn(async move {
                let mut seen = Vec::new();
                for _ in 0..20 {
                    seen.push(store.increment(&[hit(&key, 1)]).await.unwrap()[0]);
                }
                seen
            })
        })
        .collect();
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    all.sort_unstable();
    assert_eq!(
        all,
        (1..=1000).collect::<Vec<u64>>(),
        "every increment saw a distinct count"
    );
}

fn redis_settings(server: &RedisServer) -> RedisSettings {
    redis_settings_for(&server.url())
}

fn redis_settings_for(url: &str) -> RedisSettings {
    RedisSettings {
        connect_timeout: Duration::from_secs(2),
        command_timeout: Duration::from_secs(2),
        expiration_jitter_max: Duration::from_secs(300),
        ..RedisSettings::single(url)
    }
}

async fn raw(server: &RedisServer) -> redis::aio::MultiplexedConnection {
    redis::Client::open(server.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

#[tokio::test]
async fn memory_store_conforms() {
    let store = MemoryStore::new(10_000, Clock::System);
    conformance(&store, "").await;
}

#[tokio::test]
async fn redis_store_conforms() {
    let server = RedisServer::start();
    let store = RedisStore::connect(&redis_settings(&server)).await.unwrap();
    conformance(&store, "conformance:").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_store_counts_exactly_under_concurrency() {
    concurrent_increments_are_exact(
        Arc::new(MemoryStore::new(10_000, Clock::System)),
        "hot".into(),
    )
    .await;
}

/// 1,000 calls from 50 concurrent callers on one key, with `batch_max`;
/// checks they count exactly on one multiplexed connection, without
/// NOSCRIPT round trips and with one EXPIRE, and returns the EVALSHA count.
async fn concurrent_calls_on_one_connection(batch_max: usize) -> u64 {
    let server = RedisServer::start();
    let settings = RedisSettings {
        batch_max,
        ..redis_settings(&server)
    };
    let store = Arc::new(RedisStore::connect(&settings).await.unwrap());
    concurrent_increments_are_exact(store.clone(), "hot".into()).await;
    let port = server.port();
    // 1,000 concurrent calls shared one multiplexed connection (plus the
    // one INFO arrives on): they were pipelined, not spread over a pool.
    let clients = info_number(port, "clients", "connected_clients", None);
    assert_eq!(clients, 2, "connections");
    let stat = |name: &str, field: &str| {
        info_number(
            port,
            "commandstats",
            &format!("cmdstat_{name}"),
            Some(field),
        )
    };
    assert_eq!(
        stat("evalsha", "failed_calls"),
        0,
        "no NOSCRIPT round trips"
    );
    assert_eq!(
        stat("expire", "calls"),
        1,
        "the TTL is set once, when the key is created"
    );
    stat("evalsha", "calls")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_coalescing_every_call_is_one_evalsha() {
    assert_eq!(concurrent_calls_on_one_connection(1).await, 1_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_calls_are_coalesced_into_fewer_evalsha_and_count_exactly() {
    // 50 callers, at most 4 batches on the wire: the rest queue and go
    // together. Exact counts are checked inside.
    let evalsha = concurrent_calls_on_one_connection(64).await;
    eprintln!("1,000 concurrent calls in {evalsha} EVALSHA");
    assert!(
        (16..=500).contains(&evalsha),
        "1,000 calls in {evalsha} EVALSHA: at least 2 calls each on average, at most 64"
    );
}

/// The EVALSHA each primary of `cluster` ran, and how many failed.
fn evalsha_per_primary(cluster: &RedisCluster) -> Vec<(u64, u64)> {
    let stat =
        |port: u16, field: &str| info_number(port, "commandstats", "cmdstat_evalsha", Some(field));
    cluster
        .primary_ports()
        .into_iter()
        .map(|port| (stat(port, "calls"), stat(port, "failed_calls")))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_calls_on_a_cluster_are_coalesced_per_primary_and_count_exactly() {
    let cluster = RedisCluster::start();
    let settings = RedisSettings {
        topology: RedisTopology::Cluster(
            cluster.seed_urls().split(',').map(str::to_owned).collect(),
        ),
        ..redis_settings_for("")
    };
    let store = Arc::new(RedisStore::connect(&settings).await.unwrap());
    // 50 callers, each on its own key (keys of many slots, on all three
    // primaries), 20 calls each: 1,000 calls.
    let tasks: Vec<_> = (0..50)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                let key = format!("caller{i}");
                let mut seen = Vec::new();
                for _ in 0..20 {
                    seen.push(store.increment(&[hit(&key, 1)]).await.unwrap()[0]);
                }
                (key, seen)
            })
        })
        .collect();
    for t in tasks {
        let (key, seen) = t.await.unwrap();
        assert_eq!(seen, (1..=20).collect::<Vec<u64>>(), "{key}");
    }
    let per_primary = evalsha_per_primary(&cluster);
    let evalsha: u64 = per_primary.iter().map(|(calls, _)| calls).sum();
    eprintln!("1,000 concurrent calls on 3 primaries in {evalsha} EVALSHA: {per_primary:?}");
    assert!(
        per_primary
            .iter()
            .all(|&(calls, failed)| calls > 0 && failed == 0),
        "every primary ran scripts, none failed (no NOSCRIPT): {per_primary:?}"
    );
    assert!(
        evalsha <= 500,
        "1,000 calls in {evalsha} EVALSHA: at least 2 calls per script on average"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_cluster_a_check_whose_slot_moved_goes_again_where_the_slot_is_now() {
    let cluster = RedisCluster::start();
    let settings = RedisSettings {
        topology: RedisTopology::Cluster(
            cluster.seed_urls().split(',').map(str::to_owned).collect(),
        ),
        ..redis_settings_for("")
    };
    let store = RedisStore::connect(&settings).await.unwrap();
    // Two keys of two slots, both on the first primary.
    let (from, to) = (cluster.primary_ports()[0], cluster.primary_ports()[1]);
    let mut keys = (0..)
        .map(|n| format!("key{n}"))
        .filter(|k| cluster.primary_for_key(k.as_bytes()) == from);
    let stay = keys.next().unwrap();
    let moves = keys
        .find(|k| key_slot(k.as_bytes()) != key_slot(stay.as_bytes()))
        .unwrap();
    // The first call fetches the store's slot map.
    assert_eq!(store.increment(&[hit(&stay, 1)]).await.unwrap(), [1]);
    // Then the (empty) slot of `moves` goes to the second primary.
    let to_id = cluster
        .cluster_nodes()
        .into_iter()
        .find(|n| n.port == to)
        .unwrap()
        .id;
    let slot = key_slot(moves.as_bytes()).to_string();
    for port in [to, from, cluster.primary_ports()[2]] {
        command(port, &["CLUSTER", "SETSLOT", &slot, "NODE", &to_id]).unwrap();
    }
    // One call, both keys: one script on the first primary (the stale map
    // says both are there), which refuses `moves`; `moves` goes again alone.
    assert_eq!(
        store
            .increment(&[hit(&stay, 1), hit(&moves, 1)])
            .await
            .unwrap(),
        [2, 1]
    );
    assert_eq!(
        store
            .increment(&[hit(&stay, 1), hit(&moves, 1)])
            .await
            .unwrap(),
        [3, 2]
    );
    let get = |port: u16, key: &str| {
        command(port, &["GET", key])
            .ok()
            .and_then(|v| floodgate_e2e::redis_command::text(&v))
    };
    assert_eq!(
        get(to, &moves).as_deref(),
        Some("2"),
        "counted where its slot is now"
    );
    assert_eq!(get(from, &stay).as_deref(), Some("3"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_holding_something_else_fails_only_its_own_call_when_coalesced() {
    let server = RedisServer::start();
    let store = Arc::new(RedisStore::connect(&redis_settings(&server)).await.unwrap());
    raw(&server)
        .await
        .set::<_, _, ()>("text", "hello")
        .await
        .unwrap();
    let tasks: Vec<_> = (0..40)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                // Caller 0 hits the poisoned key; the others their own.
                let key = if i == 0 {
                    "text".to_owned()
                } else {
                    format!("k{i}")
                };
                let mut results = Vec::new();
                for _ in 0..25 {
                    results.push(store.increment(&[hit(&key, 1)]).await);
                }
                (i, results)
            })
        })
        .collect();
    for t in tasks {
        let (i, results) = t.await.unwrap();
        if i == 0 {
            assert!(
                results.iter().all(|r| {
                    r.as_ref().is_err_and(|e| {
                        e.to_string().contains("counter text: ")
                            && e.to_string().contains("not an integer")
                    })
                }),
                "{results:?}"
            );
        } else {
            let counts: Vec<u64> = results.into_iter().map(|r| r.unwrap()[0]).collect();
            assert_eq!(counts, (1..=25).collect::<Vec<u64>>(), "caller {i}");
        }
    }
    let evalsha = info_number(
        server.port(),
        "commandstats",
        "cmdstat_evalsha",
        Some("calls"),
    );
    assert!(
        evalsha < 1_000,
        "the calls were coalesced: {evalsha} EVALSHA"
    );
}

#[tokio::test]
async fn redis_keys_always_carry_a_ttl_of_window_plus_jitter() {
    let server = RedisServer::start();
    let store = RedisStore::connect(&redis_settings(&server)).await.unwrap();
    let mut con = raw(&server).await;
    for i in 0..50 {
        store
            .increment(&[hit(&format!("ttl:{i}"), 1)])
            .await
            .unwrap();
    }
    let mut ttls = Vec::new();
    for i in 0..50 {
        let ttl: i64 = con.ttl(format!("ttl:{i}")).await.unwrap();
        assert!(
            (59..=360).contains(&ttl),
            "TTL {ttl} outside window (60 s) + jitter (< 300 s)"
        );
        ttls.push(ttl);
    }
    ttls.sort_unstable();
    ttls.dedup();
    assert!(ttls.len() > 10, "jitter spreads expiries: {ttls:?}");

    // A later hit never pushes the TTL back; a zero-hit read never creates a key.
    con.expire::<_, ()>("ttl:0", 100).await.unwrap();
    store.increment(&[hit("ttl:0", 1)]).await.unwrap();
    let ttl: i64 = con.ttl("ttl:0").await.unwrap();
    assert!(ttl <= 100, "TTL was reset to {ttl}");
    store.increment(&[hit("ttl:none", 0)]).await.unwrap();
    let exists: bool = con.exists("ttl:none").await.unwrap();
    assert!(!exists);
    // No key in the whole database is without a TTL.
    let keys: Vec<String> = con.keys("*").await.unwrap();
    for key in keys {
        let ttl: i64 = con.ttl(&key).await.unwrap();
        assert!(ttl > 0, "{key} has no TTL ({ttl})");
    }
}

#[tokio::test]
async fn redis_script_is_reloaded_after_script_flush() {
    let server = RedisServer::start();
    let store = RedisStore::connect(&redis_settings(&server)).await.unwrap();
    assert_eq!(store.increment(&[hit("flush", 1)]).await.unwrap(), [1]);
    redis::cmd("SCRIPT")
        .arg("FLUSH")
        .query_async::<()>(&mut raw(&server).await)
        .await
        .unwrap();
    assert_eq!(
        store.increment(&[hit("flush", 1)]).await.unwrap(),
        [2],
        "NOSCRIPT → SCRIPT LOAD → retry"
    );
}

#[tokio::test]
async fn redis_down_is_a_transient_store_error_not_a_hang() {
    let server = RedisServer::start();
    let mut settings = redis_settings(&server);
    settings.command_timeout = Duration::from_millis(300);
    settings.connect_timeout = Duration::from_millis(300);
    let store = RedisStore::connect(&settings).await.unwrap();
    drop(server);
    let started = tokio::time::Instant::now();
    let err = store.increment(&[hit("down", 1)]).await.unwrap_err();
    assert!(err.is_transient(), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn redis_gives_a_ttl_to_keys_another_writer_left_without_one() {
    // envoyproxy/ratelimit's pipelined INCRBY + EXPIRE can leave such keys,
    // and both services may share one Redis during a migration.
    let server = RedisServer::start();
    let store = RedisStore::connect(&redis_settings(&server)).await.unwrap();
    let mut con = raw(&server).await;
    con.set::<_, _, ()>("legacy", 5).await.unwrap();
    assert_eq!(con.ttl::<_, i64>("legacy").await.unwrap(), -1);
    assert_eq!(store.increment(&[hit("legacy", 1)]).await.unwrap(), [6]);
    let ttl: i64 = con.ttl("legacy").await.unwrap();
    assert!((59..=360).contains(&ttl), "TTL {ttl}");
}

#[tokio::test]
async fn redis_reports_a_counter_key_holding_something_else() {
    let server = RedisServer::start();
    let store = RedisStore::connect(&redis_settings(&server)).await.unwrap();
    raw(&server)
        .await
        .set::<_, _, ()>("text", "hello")
        .await
        .unwrap();
    raw(&server)
        .await
        .set::<_, _, ()>("fraction", "1.5")
        .await
        .unwrap();
    for (key, hits, commit) in [
        ("text", 0, Commit::Each),
        ("text", 1, Commit::Each),
        ("text", 1, Commit::AllOrNothing),
        ("fraction", 1, Commit::Each),
        ("fraction", 0, Commit::AllOrNothing),
    ] {
        let err = store
            .apply(&[hit("ok", 1), hit(key, hits)], commit.into())
            .await
            .unwrap_err();
        // The call's own error, naming the counter: no verdict on Redis.
        assert!(
            matches!(&err, StoreError::Counter { key: k, .. } if k == key),
            "{key} {hits} {commit:?}: {err:?}"
        );
        assert!(!err.is_transient(), "{err}");
        assert!(
            err.to_string().contains("not an integer")
                || err.to_string().contains("does not hold an integer"),
            "{err}"
        );
    }
}

/// Counts saturate at `MAX_COUNT` (2^53 - 1) in every store: 1,030 calls of
/// `MAX_HITS` each (past 2^63 in all) neither fail nor wrap, and every store
/// answers each call alike.
async fn huge_counts(store: &dyn CounterStore, prefix: &str) -> Vec<(bool, u64)> {
    let key = format!("{prefix}huge");
    let mut seen = Vec::new();
    for limit in 1..=1_030u64 {
        let check = Check {
            limit: fixed_window(limit),
            ..hit(&key, MAX_HITS)
        };
        for commit in [Commit::Each, Commit::AllOrNothing] {
            let outcome = store
                .apply(std::slice::from_ref(&check), commit.into())
                .await;
            let outcome = outcome
                .unwrap_or_else(|e| panic!("call {limit}: {e}"))
                .outcomes[0];
            seen.push((outcome.allowed, outcome.remaining));
        }
    }
    // At the ceiling, a limit just under it still rejects, and a check of
    // 0 hits reads the count without adding.
    let at = |limit: u64, hits: u64| Check {
        limit: fixed_window(limit),
        ..hit(&key, hits)
    };
    for check in [at(MAX_COUNT - 1, 0), at(MAX_COUNT, 0), at(MAX_COUNT, 1)] {
        let outcome = store
            .apply(&[check], Commit::Each.into())
            .await
            .unwrap()
            .outcomes[0];
        seen.push((outcome.allowed, outcome.remaining));
    }
    assert_eq!(&seen[seen.len() - 3..], [(false, 0), (true, 0), (true, 0)]);
    seen
}

#[tokio::test]
async fn huge_counts_saturate_alike_in_memory_and_in_redis() {
    let memory = MemoryStore::new(100, Clock::System);
    let server = RedisServer::start();
    let redis = RedisStore::connect(&redis_settings(&server)).await.unwrap();
    let in_memory = huge_counts(&memory, "").await;
    assert_eq!(in_memory, huge_counts(&redis, "").await);
    let stored: u64 = raw(&server).await.get("huge").await.unwrap();
    assert_eq!(stored, MAX_COUNT);
    let ttl: i64 = raw(&server).await.ttl("huge").await.unwrap();
    assert!(ttl > 0, "the saturated key keeps a TTL: {ttl}");
    let windows = memory.take_windows();
    assert_eq!(
        windows
            .iter()
            .map(|w| (w.key.as_str(), w.hits))
            .collect::<Vec<_>>(),
        [("huge", MAX_COUNT)]
    );
}

/// All or nothing: when one check rejects, the others take nothing; a
/// rejected fixed window still counts (as the reference does).
async fn all_or_nothing(store: &dyn CounterStore, prefix: &str) {
    let k = |name: &str| format!("{prefix}{name}");
    let fixed = |key: &str, limit: u64| Check {
        limit: fixed_window(limit),
        ..hit(key, 1)
    };
    let bucket = |key: &str| Check {
        limit: Limit::TokenBucket(Rate {
            limit: 1,
            period_ms: 3_600_000.0,
            burst: 5,
        }),
        ..hit(key, 1)
    };
    let group = |tight: &str| {
        vec![
            fixed(&k(tight), 1),
            fixed(&k("roomy"), 100),
            bucket(&k("tb")),
        ]
    };

    let first = store
        .apply(&group("tight"), Commit::AllOrNothing.into())
        .await
        .unwrap()
        .outcomes;
    assert!(first.iter().all(|o| o.allowed), "{first:?}");
    assert_eq!(
        first.iter().map(|o| o.remaining).collect::<Vec<_>>(),
        [0, 99, 4]
    );

    let second = store
        .apply(&group("tight"), Commit::AllOrNothing.into())
        .await
        .unwrap()
        .outcomes;
    assert_eq!(
        second.iter().map(|o| o.allowed).collect::<Vec<_>>(),
        [false, true, true]
    );
    assert_eq!(
        second.iter().map(|o| o.remaining).collect::<Vec<_>>(),
        [0, 99, 4],
        "nothing taken from the others"
    );

    // The rejected fixed window was counted (2 now); the others were not.
    let peek = [
        Check {
            hits: 0,
            ..fixed(&k("tight"), 1)
        },
        Check {
            hits: 0,
            ..fixed(&k("roomy"), 100)
        },
    ];
    let counts = store
        .apply(&peek, Commit::Each.into())
        .await
        .unwrap()
        .outcomes;
    assert_eq!((counts[0].allowed, counts[1].remaining), (false, 99));

    // Without all-or-nothing, the others do take their hits.
    let each = store
        .apply(&group("tight"), Commit::Each.into())
        .await
        .unwrap()
        .outcomes;
    assert_eq!(
        each.iter().map(|o| o.remaining).collect::<Vec<_>>(),
        [0, 98, 3]
    );
}

#[tokio::test]
async fn memory_store_commits_all_or_nothing() {
    all_or_nothing(&MemoryStore::new(1_000, Clock::System), "").await;
}

#[tokio::test]
async fn redis_store_commits_all_or_nothing() {
    let server = RedisServer::start();
    let store = RedisStore::connect(&redis_settings(&server)).await.unwrap();
    all_or_nothing(&store, "aon:").await;
}

/// At today's epoch `now + interval - now` is not `interval`; limits such as
/// 6 per second with burst 1 once rejected forever. Real time, both stores.
async fn rounding_at_the_epoch(store: &dyn CounterStore, prefix: &str) {
    for algorithm in [Algorithm::Gcra, Algorithm::TokenBucket] {
        for limit in [6u64, 7, 9, 11, 13, 200] {
            let check = |key: &str, hits: u64, burst: u64| Check {
                key: format!("{prefix}{key}_{}_{limit}", algorithm.name()),
                hits,
                limit: Limit::of(
                    algorithm,
                    Rate {
                        limit,
                        period_ms: 1_000.0,
                        burst,
                    },
                    Duration::ZERO,
                ),
                veto: true,
            };
            let first = store
                .apply(&[check("one", 1, 1)], Commit::Each.into())
                .await
                .unwrap()
                .outcomes[0];
            assert!(
                first.allowed,
                "{algorithm:?} {limit}/s burst 1: the first hit"
            );
            let whole = store
                .apply(&[check("burst", limit, limit)], Commit::Each.into())
                .await
                .unwrap()
                .outcomes[0];
            assert!(
                whole.allowed,
                "{algorithm:?} {limit}/s: a whole burst on an idle key"
            );
        }
    }
}

#[tokio::test]
async fn memory_store_decides_right_at_the_epochs_magnitude() {
    rounding_at_the_epoch(&MemoryStore::new(1_000, Clock::System), "").await;
}

#[tokio::test]
async fn redis_store_decides_right_at_the_epochs_magnitude() {
    let server = RedisServer::start();
    let store = RedisStore::connect(&redis_settings(&server)).await.unwrap();
    rounding_at_the_epoch(&store, "").await;
}
