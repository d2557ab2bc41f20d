//! RLQS end to end: real Envoy 1.40 processes with the `rate_limit_quota`
//! filter pointing at Floodgate's gRPC port, which answers
//! `envoy.service.rate_limit_quota.v3.RateLimitQuotaService` from the same
//! rules as `ShouldRateLimit`; and the stream itself, from a tonic client.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use floodgate_e2e::{
    RedisServer, TestServer, config_with_redis, config_with_rules, http_get, metric, metric_value,
    rules_dir,
};
use tokio::time::Instant;

use crate::envoy::{Envoy, get, start_backend, wait_ready};

/// L = 60 per minute for user `u`; other users unlimited.
const RULES: &str = "domain: edge
descriptors:
  - key: user
    value: u
    rate_limit: {unit: minute, requests_per_unit: 60}
  - key: user
";

/// The reporting interval Envoy 1.40 uses: 5 s, hard-coded
/// (`filter_persistence.cc`), whatever `reporting_interval` says.
const INTERVAL_SECS: u64 = 5;

/// An Envoy bootstrap whose `rate_limit_quota` filter puts each request in
/// the bucket `{user: <x-user header>}`, reports every [`INTERVAL_SECS`] to
/// the RLQS server at `rlqs_port`, and routes what it admits to a backend.
pub(crate) fn rlqs_bootstrap(rlqs_port: u16, backend_port: u16) -> String {
    rlqs_bootstrap_with(rlqs_port, backend_port, &[])
}

/// [`rlqs_bootstrap`], with text of the example filter replaced.
fn rlqs_bootstrap_with(rlqs_port: u16, backend_port: u16, replace: &[(&str, &str)]) -> String {
    format!(
        r#"
admin:
  address:
    socket_address: {{address: 127.0.0.1, port_value: 0}}
static_resources:
  listeners:
    - name: ingress
      address:
        socket_address: {{address: 127.0.0.1, port_value: 0}}
      filter_chains:
        - filters:
            - name: envoy.filters.network.http_connection_manager
              typed_config:
                "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
                stat_prefix: ingress
                route_config:
                  name: local
                  virtual_hosts:
                    - name: all
                      domains: ["*"]
                      routes:
                        - match: {{prefix: "/"}}
                          route: {{cluster: backend}}
                http_filters:
{filter}
                  - name: envoy.filters.http.router
                    typed_config:
                      "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
  clusters:
    - name: rlqs
      type: STATIC
      connect_timeout: 1s
      typed_extension_protocol_options:
        envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
          "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
          explicit_http_config:
            http2_protocol_options: {{}}
      load_assignment:
        cluster_name: rlqs
        endpoints:
          - lb_endpoints:
              - endpoint:
                  address:
                    socket_address: {{address: 127.0.0.1, port_value: {rlqs_port}}}
    - name: backend
      type: STATIC
      connect_timeout: 1s
      load_assignment:
        cluster_name: backend
        endpoints:
          - lb_endpoints:
              - endpoint:
                  address:
                    socket_address: {{address: 127.0.0.1, port_value: {backend_port}}}
"#,
        filter = filter_config(replace)
    )
}

/// The `rate_limit_quota` filter, as `examples/envoy/rlqs-filter.yaml` has
/// it (with `replace`'s texts replaced), indented for [`rlqs_bootstrap`].
fn filter_config(replace: &[(&str, &str)]) -> String {
    let example = std::fs::read_to_string(
        floodgate_e2e::workspace_root().join("examples/envoy/rlqs-filter.yaml"),
    )
    .expect("examples/envoy/rlqs-filter.yaml");
    let example = replace.iter().fold(example, |f, (from, to)| {
        assert!(f.contains(from), "the example filter has {from:?}");
        f.replace(from, to)
    });
    example
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .map(|l| format!("                  {l}\n"))
        .collect()
}

/// Requests admitted (with when they were sent) and denied by one Envoy.
#[derive(Debug, Default)]
struct Tally {
    admitted_at: Mutex<Vec<Instant>>,
    denied: AtomicU64,
    other: AtomicU64,
}

impl Tally {
    fn admitted(&self) -> u64 {
        self.admitted_at.lock().unwrap().len() as u64
    }

    /// Admitted requests sent in `[from, to)`.
    fn admitted_between(&self, from: Instant, to: Instant) -> u64 {
        let at = self.admitted_at.lock().unwrap();
        at.iter().filter(|t| **t >= from && **t < to).count() as u64
    }
}

/// Sends `GET /` as user `u` to `port` `per_second` times a second for
/// `secs` seconds (on a fixed schedule), counting the answers.
async fn drive(port: u16, per_second: u64, secs: u64, tally: Arc<Tally>) {
    let start = Instant::now();
    let every = Duration::from_millis(1_000 / per_second);
    let mut sent = Vec::new();
    for i in 0..(per_second * secs) {
        tokio::time::sleep_until(start + every * u32::try_from(i).unwrap()).await;
        let tally = tally.clone();
        sent.push(tokio::spawn(async move {
            let at = Instant::now();
            match get(port, "/", &[("x-user", "u")]).await {
                Ok(r) if r.status == 200 && r.body == "backend" => {
                    tally.admitted_at.lock().unwrap().push(at)
                }
                Ok(r) if r.status == 429 => {
                    tally.denied.fetch_add(1, Ordering::Relaxed);
                }
                _ => {
                    tally.other.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    for s in sent {
        s.await.unwrap();
    }
}

/// An Envoy started on `rlqs_port`, and its ingress port.
async fn envoy(dir: &Path, rlqs_port: u16, backend_port: u16) -> (Envoy, u16) {
    envoy_with(dir, &rlqs_bootstrap(rlqs_port, backend_port)).await
}

/// An Envoy started with `bootstrap`, and its ingress port.
async fn envoy_with(dir: &Path, bootstrap: &str) -> (Envoy, u16) {
    let mut envoy = Envoy::start_with(
        dir,
        bootstrap,
        &["--component-log-level", "rate_limit_quota:debug"],
    );
    let (_, port) = wait_ready(&mut envoy, dir).await;
    (envoy, port)
}

/// The acceptance, with the two Envoys on `rlqs_ports` (one Floodgate each,
/// or both on one): 5 requests a second to each for `secs`; returns the
/// total admitted.
async fn two_envoys(rlqs_ports: [u16; 2], secs: u64) -> (u64, [Arc<Tally>; 2]) {
    let (backend_port, backend) = start_backend().await;
    let (d1, d2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (mut e1, p1) = envoy(d1.path(), rlqs_ports[0], backend_port).await;
    let (mut e2, p2) = envoy(d2.path(), rlqs_ports[1], backend_port).await;
    let tallies = [Arc::new(Tally::default()), Arc::new(Tally::default())];
    tokio::join!(
        drive(p1, 5, secs, tallies[0].clone()),
        drive(p2, 5, secs, tallies[1].clone())
    );
    e1.assert_running();
    e2.assert_running();
    backend.abort();
    let total = tallies[0].admitted() + tallies[1].admitted();
    eprintln!(
        "admitted {total} of {} in {secs} s: envoy 1 {} (denied {}), envoy 2 {} (denied {})",
        10 * secs,
        tallies[0].admitted(),
        tallies[0].denied.load(Ordering::Relaxed),
        tallies[1].admitted(),
        tallies[1].denied.load(Ordering::Relaxed),
    );
    (total, tallies)
}

/// `ShouldRateLimit` calls Floodgate answered, by its `/metrics`.
async fn should_rate_limit_calls(server: &TestServer) -> u64 {
    let mut calls = 0;
    for code in [
        "ok",
        "over_limit",
        "invalid_argument",
        "error",
        "overloaded",
    ] {
        let series = format!("floodgate_calls_total{{code=\"{code}\"}}");
        calls += metric::<u64>(server.http_addr, &series).await.unwrap_or(0);
    }
    calls
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_envoys_hold_a_global_limit_of_60_a_minute() {
    let rules = rules_dir(&[("edge.yaml", RULES)]);
    let server = TestServer::start(config_with_rules(rules.path())).await;
    let port = server.grpc_addr.port();
    let (total, _) = two_envoys([port, port], 60).await;
    assert!((51..=69).contains(&total), "admitted {total}, not 60 ± 15%");
    assert_eq!(
        should_rate_limit_calls(&server).await,
        0,
        "no ShouldRateLimit call"
    );
    let (_, page) = http_get(&format!("http://{}/metrics", server.http_addr)).await;
    let reports: u64 = metric_value(&page, "floodgate_rlqs_reports_total").unwrap();
    // Envoy 1.40 reports every 5 s, whatever reporting_interval says (1 s).
    assert!(
        (20..=40).contains(&reports),
        "two Envoys reported every 5 s:\n{page}"
    );
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_one_envoy_stops_the_other_gets_its_share_within_two_intervals() {
    let rules = rules_dir(&[("edge.yaml", RULES)]);
    let server = TestServer::start(config_with_rules(rules.path())).await;
    let port = server.grpc_addr.port();
    let (backend_port, backend) = start_backend().await;
    let (d1, d2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (e1, p1) = envoy(d1.path(), port, backend_port).await;
    let (mut e2, p2) = envoy(d2.path(), port, backend_port).await;
    let (t1, t2) = (Arc::new(Tally::default()), Arc::new(Tally::default()));
    // Both for 12 s, then envoy 2 alone for 18 s more.
    let started = Instant::now();
    tokio::join!(drive(p1, 5, 12, t1.clone()), drive(p2, 5, 30, t2.clone()));
    e2.assert_running();
    backend.abort();
    let s = |secs| started + Duration::from_secs(secs);
    let interval = Duration::from_secs(INTERVAL_SECS);
    let both = t2.admitted_between(s(6), s(12));
    let alone = t2.admitted_between(s(12) + 2 * interval, s(30));
    eprintln!(
        "envoy 2 admitted {both} in 6 s beside envoy 1 ({} admitted), then {alone} in {} s alone",
        t1.admitted(),
        30 - 12 - 2 * INTERVAL_SECS
    );
    // Half of 1/s beside envoy 1 (3 in 6 s), all of it alone from two
    // intervals after envoy 1 stopped (8 in 8 s; 4 at the old share).
    let logs = || format!("{}\n----\n{}", e1.log(), e2.log());
    assert!(
        (1..=5).contains(&both),
        "beside envoy 1: {both} in 6 s\n{}",
        logs()
    );
    assert!(
        (6..=11).contains(&alone),
        "alone: {alone} in 8 s\n{}",
        logs()
    );
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_floodgates_on_one_redis_hold_the_limit_for_two_envoys() {
    let redis = RedisServer::start();
    let rules = rules_dir(&[("edge.yaml", RULES)]);
    let config = || config_with_redis(rules.path(), redis.url(), Duration::from_secs(1));
    let (f1, f2) = (
        TestServer::start(config()).await,
        TestServer::start(config()).await,
    );
    let ports = [f1.grpc_addr.port(), f2.grpc_addr.port()];
    let (total, _) = two_envoys(ports, 60).await;
    assert!((51..=69).contains(&total), "admitted {total}, not 60 ± 15%");
    for f in [&f1, &f2] {
        assert_eq!(
            should_rate_limit_calls(f).await,
            0,
            "no ShouldRateLimit call"
        );
        let degraded = metric::<u64>(f.http_addr, "floodgate_store_degraded").await;
        assert_eq!(degraded, Some(0), "both counted in Redis");
    }
    f1.stop().await.unwrap();
    f2.stop().await.unwrap();
}

/// One Envoy at 5 requests a second for 18 s, its expired-assignment
/// fallback replaced by `fallback` (`None`: the example's); Floodgate, with
/// a 6 s assignment TTL, stops at 7 s. Returns the requests admitted in
/// [7.5 s, 10.5 s) (the assignment still holds: Envoy reported at 0 s and
/// 5 s, each report refreshing the TTL) and in [12.5 s, 18 s) (expired).
async fn floodgate_stops(fallback: Option<&str>) -> (u64, u64, Envoy) {
    let rules = rules_dir(&[("edge.yaml", RULES)]);
    let mut config = config_with_rules(rules.path());
    config.rlqs.assignment_ttl = Duration::from_secs(6);
    let server = TestServer::start(config).await;
    let (backend_port, backend) = start_backend().await;
    let dir = tempfile::tempdir().unwrap();
    let example = "expired_assignment_behavior_timeout: 600s
                    fallback_rate_limit:
                      token_bucket: {max_tokens: 1, tokens_per_fill: 1, fill_interval: 1s}
";
    let replaced = fallback
        .map(|f| format!("expired_assignment_behavior_timeout: 600s\n                    {f}\n"));
    let replace: Vec<(&str, &str)> = replaced.iter().map(|r| (example, r.as_str())).collect();
    let bootstrap = rlqs_bootstrap_with(server.grpc_addr.port(), backend_port, &replace);
    let (mut envoy, port) = envoy_with(dir.path(), &bootstrap).await;
    let tally = Arc::new(Tally::default());
    let started = Instant::now();
    let traffic = tokio::spawn(drive(port, 5, 18, tally.clone()));
    tokio::time::sleep_until(started + Duration::from_secs(7)).await;
    server.stop().await.unwrap();
    traffic.await.unwrap();
    envoy.assert_running();
    backend.abort();
    let s = |secs: f64| started + Duration::from_secs_f64(secs);
    let kept = tally.admitted_between(s(7.5), s(10.5));
    let expired = tally.admitted_between(s(12.5), s(18.0));
    eprintln!("admitted {kept} in 3 s after Floodgate stopped, then {expired} in 5.5 s");
    (kept, expired, envoy)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_floodgate_envoy_keeps_its_assignment_until_the_ttl_then_falls_back() {
    // The fallback denies all here, so that the expiry shows.
    let (kept, expired, envoy) =
        floodgate_stops(Some("fallback_rate_limit: {blanket_rule: DENY_ALL}")).await;
    assert!(
        (1..=4).contains(&kept),
        "the 1/s assignment holds: {kept}\n{}",
        envoy.log()
    );
    assert_eq!(
        expired,
        0,
        "expired: deny all, the fallback\n{}",
        envoy.log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_examples_token_bucket_fallback_holds_an_expired_assignment() {
    let (kept, expired, envoy) = floodgate_stops(None).await;
    assert!(
        (1..=4).contains(&kept),
        "the 1/s assignment holds: {kept}\n{}",
        envoy.log()
    );
    // One a second (not the 5 a second of allow-all), and Envoy is up.
    assert!(
        (4..=7).contains(&expired),
        "the fallback: {expired}\n{}",
        envoy.log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_floodgate_unreachable_the_example_admits_and_envoy_stays_up() {
    let (backend_port, backend) = start_backend().await;
    let dir = tempfile::tempdir().unwrap();
    // Nothing listens on the RLQS port: no bucket ever gets an assignment.
    let closed = floodgate_e2e::free_port();
    let (mut envoy, port) = envoy(dir.path(), closed, backend_port).await;
    let tally = Arc::new(Tally::default());
    drive(port, 5, 3, tally.clone()).await;
    envoy.assert_running();
    backend.abort();
    // no_assignment_behavior, ALLOW_ALL (a token bucket there crashes
    // Envoy 1.40 at the bucket's second request).
    assert_eq!(tally.admitted(), 15, "{tally:?}\n{}", envoy.log());
}

mod store {
    //! The RLQS state through `CounterStore::quota`: memory and Redis agree,
    //! and the resilient store answers by its policy when Redis is away.

    use std::sync::Arc;

    use floodgate_server::clock::Clock;
    use floodgate_server::model::quota::Share;
    use floodgate_server::resilience::store::{ResilienceSettings, ResilientStore};
    use floodgate_server::store::memory::MemoryStore;
    use floodgate_server::store::quota::{QuotaAnswer, QuotaCall, QuotaOp};
    use floodgate_server::store::redis::{RedisSettings, RedisStore};
    use floodgate_server::store::{CounterStore, FailurePolicy};

    use super::*;

    fn call(key: &str, instance: &str, (allowed, demand): (u64, f64), op: QuotaOp) -> QuotaCall {
        QuotaCall {
            key: key.into(),
            instance: instance.into(),
            allowed,
            demand,
            now_ms: 0.0,
            limit: 60,
            window_ms: 60_000.0,
            stale_ms: 3_000.0,
            on_failure: None,
            op,
        }
    }

    /// A scripted sequence of reports, 500 ms apart by `clock`: the shares.
    async fn shares(store: &dyn CounterStore, clock: &Clock, key: &str) -> Vec<Share> {
        let steps = [
            ("a", (3, 5.0), QuotaOp::Report),
            ("b", (2, 5.0), QuotaOp::Report),
            ("c", (0, 0.2), QuotaOp::Report),
            ("b", (0, 0.0), QuotaOp::Peek),
            ("a", (1, 0.0), QuotaOp::Report),
            ("b", (4, 6.0), QuotaOp::Report),
            // c leaves; 3.5 s later a is stale: b alone.
            ("c", (0, 0.0), QuotaOp::Leave),
            ("b", (1, 6.0), QuotaOp::Report),
        ];
        let mut out = Vec::new();
        for (i, (who, usage, op)) in steps.into_iter().enumerate() {
            clock.advance(Duration::from_millis(if i == 7 { 3_500 } else { 500 }));
            let mut c = call(key, who, usage, op);
            c.now_ms = clock.now().as_secs_f64() * 1_000.0;
            let QuotaAnswer::Share(share) = store.quota(&c).await.unwrap().answer else {
                panic!("a share")
            };
            out.push(share);
        }
        out
    }

    #[tokio::test]
    async fn memory_and_redis_give_the_same_shares() {
        let start = Duration::from_secs(1_700_000_000);
        let clock = Clock::manual(start);
        let memory = MemoryStore::new(100, clock.clone());
        let in_memory = shares(&memory, &clock, "k").await;
        let redis = RedisServer::start();
        let clock = Clock::manual(start);
        let store = RedisStore::connect(&RedisSettings::single(redis.url()))
            .await
            .unwrap()
            .with_local_time(clock.clone());
        let in_redis = shares(&store, &clock, "k").await;
        assert_eq!(in_memory, in_redis);
        // The script is run by its SHA (loaded on NOSCRIPT), not sent whole.
        let mut cli = redis::Client::open(redis.url())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap();
        let stats: String = redis::cmd("INFO")
            .arg("commandstats")
            .query_async(&mut cli)
            .await
            .unwrap();
        assert!(
            stats.contains("cmdstat_evalsha:calls=9,") && !stats.contains("cmdstat_eval:"),
            "{stats}"
        );
        let rates: Vec<f64> = in_redis
            .iter()
            .map(|s| (s.rate * 1e6).round() / 1e6)
            .collect();
        assert_eq!(
            rates,
            [1.0, 0.5, 0.2, 0.4, 0.0, 0.8, 0.0, 1.0],
            "{in_redis:?}"
        );
        assert_eq!(in_redis[5].used, 10, "a peek counts nothing");
        assert_eq!(in_redis[7].instances, 1);
    }

    /// One instance past `MAX_INSTANCES`, all reported at the same (not
    /// whole) ms: the report's share, then whether each of the first ids
    /// is still there (a peek of one that was dropped counts one more).
    async fn crowded(store: &dyn CounterStore, now_ms: f64) -> (Share, Vec<u32>) {
        let max = floodgate_server::model::quota::MAX_INSTANCES;
        let at = |who: &str, op| {
            let mut c = call("k", who, (0, 1.0), op);
            c.now_ms = now_ms;
            c
        };
        let share = |applied: floodgate_server::store::quota::QuotaApplied| match applied.answer {
            QuotaAnswer::Share(share) => share,
            other => panic!("a share: {other:?}"),
        };
        // In reverse, so that Lua's `pairs` order is not id order.
        for i in (0..max).rev() {
            store
                .quota(&at(&format!("i{i:03}"), QuotaOp::Report))
                .await
                .unwrap();
        }
        let z = share(store.quota(&at("z", QuotaOp::Report)).await.unwrap());
        let mut counts = Vec::new();
        for i in 0..4 {
            let peeked = store
                .quota(&at(&format!("i{i:03}"), QuotaOp::Peek))
                .await
                .unwrap();
            counts.push(share(peeked).instances);
        }
        (z, counts)
    }

    #[tokio::test]
    async fn memory_and_redis_drop_the_same_instance_and_count_whole_ms() {
        let start = Duration::from_micros(1_700_000_000_000_500);
        let now_ms = start.as_secs_f64() * 1_000.0;
        let clock = Clock::manual(start);
        let memory = MemoryStore::new(100, clock.clone());
        let in_memory = crowded(&memory, now_ms).await;
        let redis = RedisServer::start();
        let store = RedisStore::connect(&RedisSettings::single(redis.url()))
            .await
            .unwrap()
            .with_local_time(clock);
        let in_redis = crowded(&store, now_ms).await;
        assert_eq!(in_memory, in_redis);
        assert_eq!(in_redis.1, [257, 256, 256, 256], "i000 went, ties by id");
        assert_eq!(in_redis.0.window_left_ms.fract(), 0.0);
    }

    #[tokio::test]
    async fn without_redis_the_failure_policy_answers() {
        let redis = RedisServer::start();
        let primary = RedisStore::connect(&RedisSettings::single(redis.url()))
            .await
            .unwrap();
        let fallback = Arc::new(MemoryStore::new(100, Clock::System));
        let settings = ResilienceSettings {
            store_deadline: Duration::from_millis(200),
            ..ResilienceSettings::default()
        };
        let store = ResilientStore::new(Arc::new(primary), fallback, settings);
        let now_ms = Clock::System.now().as_secs_f64() * 1_000.0;
        let mut c = call("k", "a", (1, 5.0), QuotaOp::Report);
        c.now_ms = now_ms;
        let up = store.quota(&c).await.unwrap();
        assert!(!up.degraded && matches!(up.answer, QuotaAnswer::Share(_)));
        redis.pause();
        let down = store.quota(&c).await.unwrap();
        assert!(down.degraded, "{down:?}");
        assert!(
            matches!(down.answer, QuotaAnswer::Share(_)),
            "fallback: a local share"
        );
        c.on_failure = Some(FailurePolicy::Deny);
        assert_eq!(store.quota(&c).await.unwrap().answer, QuotaAnswer::DenyAll);
        c.on_failure = Some(FailurePolicy::Allow);
        assert_eq!(store.quota(&c).await.unwrap().answer, QuotaAnswer::AllowAll);
        redis.resume();
    }
}

mod stream {
    //! The stream itself, from a tonic client: what each report gets back.

    use std::collections::HashMap;

    use floodgate_proto::envoy::r#type::v3::rate_limit_strategy::{BlanketRule, Strategy};
    use floodgate_proto::envoy::service::rate_limit_quota::v3::rate_limit_quota_response::bucket_action::BucketAction as Action;
    use floodgate_proto::envoy::service::rate_limit_quota::v3::rate_limit_quota_service_client::RateLimitQuotaServiceClient;
    use floodgate_proto::envoy::service::rate_limit_quota::v3::{
        BucketId, RateLimitQuotaResponse, RateLimitQuotaUsageReports,
        rate_limit_quota_usage_reports::BucketQuotaUsage,
    };
    use tokio::sync::mpsc;
    use tokio_stream::wrappers::ReceiverStream;
    use tonic::Streaming;

    use super::*;

    /// One client stream: send reports, read answers.
    pub(super) struct Client {
        tx: mpsc::Sender<RateLimitQuotaUsageReports>,
        rx: Streaming<RateLimitQuotaResponse>,
    }

    impl Client {
        pub(super) async fn open(port: u16) -> Client {
            let mut client =
                RateLimitQuotaServiceClient::connect(format!("http://127.0.0.1:{port}"))
                    .await
                    .unwrap();
            let (tx, reports) = mpsc::channel(8);
            let rx = client
                .stream_rate_limit_quotas(ReceiverStream::new(reports))
                .await
                .unwrap()
                .into_inner();
            Client { tx, rx }
        }

        /// Reports `(allowed, denied)` for each `user` bucket.
        pub(super) async fn report(&mut self, domain: &str, usages: &[(&str, u64, u64)]) {
            let usages = usages
                .iter()
                .map(|(user, allowed, denied)| BucketQuotaUsage {
                    bucket_id: Some(user_bucket(user)),
                    time_elapsed: None,
                    num_requests_allowed: *allowed,
                    num_requests_denied: *denied,
                })
                .collect();
            self.tx
                .send(RateLimitQuotaUsageReports {
                    domain: domain.to_owned(),
                    bucket_quota_usages: usages,
                })
                .await
                .unwrap();
        }

        /// The next answer (within 5 s).
        pub(super) async fn answer(&mut self) -> Result<RateLimitQuotaResponse, tonic::Status> {
            tokio::time::timeout(Duration::from_secs(5), self.rx.message())
                .await
                .expect("an answer within 5 s")
                .and_then(|m| m.ok_or_else(|| tonic::Status::unknown("the stream ended")))
        }

        /// No answer within `wait`.
        pub(super) async fn silent(&mut self, wait: Duration) -> bool {
            tokio::time::timeout(wait, self.rx.message()).await.is_err()
        }
    }

    pub(super) fn user_bucket(user: &str) -> BucketId {
        BucketId {
            bucket: HashMap::from([("user".to_owned(), user.to_owned())]),
        }
    }

    /// An action in words: `tb <tokens_per_fill>/<fill>s max <max> ttl <ttl>s`,
    /// `deny ttl <ttl>s`, `allow ttl <ttl>s`, `abandon`.
    pub(super) fn describe(r: &RateLimitQuotaResponse) -> Vec<String> {
        r.bucket_action
            .iter()
            .map(|a| {
                let user = &a.bucket_id.as_ref().unwrap().bucket["user"];
                let what = match a.bucket_action.as_ref().unwrap() {
                    Action::AbandonAction(_) => "abandon".to_owned(),
                    Action::QuotaAssignmentAction(q) => {
                        let ttl = q.assignment_time_to_live.unwrap().seconds;
                        match q
                            .rate_limit_strategy
                            .as_ref()
                            .unwrap()
                            .strategy
                            .as_ref()
                            .unwrap()
                        {
                            Strategy::TokenBucket(tb) => format!(
                                "tb {}/{}s max {} ttl {ttl}s",
                                tb.tokens_per_fill.unwrap(),
                                tb.fill_interval.unwrap().seconds,
                                tb.max_tokens
                            ),
                            Strategy::BlanketRule(r) if *r == BlanketRule::DenyAll as i32 => {
                                format!("deny ttl {ttl}s")
                            }
                            Strategy::BlanketRule(_) => format!("allow ttl {ttl}s"),
                            other => format!("{other:?}"),
                        }
                    }
                };
                format!("{user}: {what}")
            })
            .collect()
    }

    #[tokio::test]
    async fn reports_get_shares_of_the_rule_and_free_shares_move() {
        let rules = rules_dir(&[("edge.yaml", RULES)]);
        let server = TestServer::start(config_with_rules(rules.path())).await;
        let port = server.grpc_addr.port();
        let (mut a, mut b) = (Client::open(port).await, Client::open(port).await);
        a.report("edge", &[("u", 1, 29), ("other", 1, 0)]).await;
        assert_eq!(
            describe(&a.answer().await.unwrap()),
            ["u: tb 60/60s max 1 ttl 60s", "other: allow ttl 60s"],
            "alone, a gets all of 60 a minute; an unlimited bucket is allowed"
        );
        // b joins: each gets half, and a is told at once.
        b.report("edge", &[("u", 1, 29)]).await;
        assert_eq!(
            describe(&b.answer().await.unwrap()),
            ["u: tb 30/60s max 1 ttl 60s"]
        );
        assert_eq!(
            describe(&a.answer().await.unwrap()),
            ["u: tb 30/60s max 1 ttl 60s"]
        );
        // a stops asking: it keeps one token a minute, and b is sent a's
        // share at once, without reporting.
        tokio::time::sleep(Duration::from_millis(300)).await;
        a.report("", &[("u", 0, 0)]).await;
        assert_eq!(
            describe(&a.answer().await.unwrap()),
            ["u: tb 1/60s max 1 ttl 60s"]
        );
        assert_eq!(
            describe(&b.answer().await.unwrap()),
            ["u: tb 60/60s max 1 ttl 60s"]
        );
        // An unchanged assignment is not sent again.
        tokio::time::sleep(Duration::from_millis(300)).await;
        a.report("", &[("u", 0, 0)]).await;
        assert!(
            a.silent(Duration::from_millis(300)).await,
            "nothing new for a"
        );
        server.stop().await.unwrap();
    }

    #[tokio::test]
    async fn a_used_up_window_is_denied_to_its_end_and_idle_buckets_are_abandoned() {
        let rules = rules_dir(&[("edge.yaml", RULES)]);
        let mut config = config_with_rules(rules.path());
        config.rlqs.abandon_after = Duration::from_millis(500);
        let server = TestServer::start(config).await;
        let mut a = Client::open(server.grpc_addr.port()).await;
        a.report("edge", &[("u", 60, 0)]).await;
        let answer = describe(&a.answer().await.unwrap());
        let ttl: u64 = answer[0]
            .strip_prefix("u: deny ttl ")
            .and_then(|t| t.strip_suffix('s'))
            .and_then(|t| t.parse().ok())
            .unwrap_or_else(|| panic!("deny-all: {answer:?}"));
        let left = 60 - floodgate_server::clock::Clock::System.now().as_secs() % 60;
        assert!(
            ttl.abs_diff(left) <= 1,
            "to the window's end: {ttl} s, {left} s left"
        );
        let ratio = "floodgate_rlqs_admitted_ratio{domain=\"edge\",bucket=\"user=u\"}";
        assert_eq!(metric::<f64>(server.http_addr, ratio).await, Some(1.0));
        tokio::time::sleep(Duration::from_millis(600)).await;
        a.report("", &[("u", 0, 0)]).await;
        assert_eq!(describe(&a.answer().await.unwrap()), ["u: abandon"]);
        let page = http_get(&format!("http://{}/metrics", server.http_addr))
            .await
            .1;
        for (series, value) in [
            ("floodgate_rlqs_streams", 1),
            ("floodgate_rlqs_buckets", 0),
            ("floodgate_rlqs_reports_total", 2),
            ("floodgate_rlqs_assignments_total{kind=\"deny_all\"}", 1),
            ("floodgate_rlqs_assignments_total{kind=\"abandon\"}", 1),
        ] {
            assert_eq!(
                metric_value::<u64>(&page, series),
                Some(value),
                "{series}\n{page}"
            );
        }
        assert_eq!(
            metric_value::<f64>(&page, ratio),
            None,
            "an abandoned bucket's series goes\n{page}"
        );
        // A stream that ends takes its buckets' series with it.
        let mut b = Client::open(server.grpc_addr.port()).await;
        b.report("edge", &[("u", 0, 1)]).await;
        b.answer().await.unwrap();
        assert!(metric::<f64>(server.http_addr, ratio).await.is_some());
        drop(b);
        let streams = || metric::<u64>(server.http_addr, "floodgate_rlqs_streams");
        let deadline = Instant::now() + Duration::from_secs(3);
        while streams().await != Some(1) && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(streams().await, Some(1), "b's stream ended");
        assert_eq!(metric::<f64>(server.http_addr, ratio).await, None);
        server.stop().await.unwrap();
    }

    /// A bucket named twice in one message is one report of the sum: one
    /// store call, one action.
    #[tokio::test]
    async fn a_bucket_named_twice_in_a_message_is_reported_once() {
        let rules = rules_dir(&[("edge.yaml", RULES)]);
        let server = TestServer::start(config_with_rules(rules.path())).await;
        let mut c = Client::open(server.grpc_addr.port()).await;
        c.report("edge", &[("u", 30, 0), ("u", 30, 0)]).await;
        let answer = describe(&c.answer().await.unwrap());
        assert!(
            answer.len() == 1 && answer[0].starts_with("u: deny ttl "),
            "60 of 60 used, one action: {answer:?}"
        );
        let reports = metric::<u64>(server.http_addr, "floodgate_rlqs_reports_total").await;
        assert_eq!(reports, Some(1));
        server.stop().await.unwrap();
    }

    /// A client that sends reports but never reads its answers (an HTTP/2
    /// window of 0) has its stream ended after `send_timeout`: the stream's
    /// slot is free again.
    #[tokio::test]
    async fn a_client_that_does_not_read_loses_its_stream() {
        use prost::Message;
        let rules = rules_dir(&[("edge.yaml", RULES)]);
        let mut config = config_with_rules(rules.path());
        config.rlqs.max_streams = 1;
        config.rlqs.send_timeout = Duration::from_millis(300);
        let server = TestServer::start(config).await;
        let tcp = tokio::net::TcpStream::connect(server.grpc_addr)
            .await
            .unwrap();
        let (send, conn) = h2::client::Builder::new()
            .initial_window_size(0)
            .handshake::<_, bytes::Bytes>(tcp)
            .await
            .unwrap();
        let driver = tokio::spawn(conn);
        let head = http::Request::post(format!(
            "http://{}/envoy.service.rate_limit_quota.v3.RateLimitQuotaService/StreamRateLimitQuotas",
            server.grpc_addr
        ))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(())
        .unwrap();
        let (answer, mut body) = send
            .ready()
            .await
            .unwrap()
            .send_request(head, false)
            .unwrap();
        // Each report names a new bucket: 40 answers, none read.
        for i in 0..40 {
            let user = format!("v{i}");
            let message = RateLimitQuotaUsageReports {
                domain: "edge".into(),
                bucket_quota_usages: vec![BucketQuotaUsage {
                    bucket_id: Some(user_bucket(&user)),
                    time_elapsed: None,
                    num_requests_allowed: 1,
                    num_requests_denied: 0,
                }],
            }
            .encode_to_vec();
            let mut framed = vec![0];
            framed.extend_from_slice(&(message.len() as u32).to_be_bytes());
            framed.extend_from_slice(&message);
            body.send_data(framed.into(), false).unwrap();
        }
        let _answer = answer.await.unwrap();
        let streams = || metric::<u64>(server.http_addr, "floodgate_rlqs_streams");
        let deadline = Instant::now() + Duration::from_secs(3);
        while streams().await != Some(0) && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(streams().await, Some(0), "the stream ended");
        let mut c = Client::open(server.grpc_addr.port()).await;
        c.report("edge", &[("u", 1, 0)]).await;
        assert_eq!(
            describe(&c.answer().await.unwrap()),
            ["u: tb 60/60s max 1 ttl 60s"],
            "its slot (rlqs_max_streams = 1) is free"
        );
        driver.abort();
        server.stop().await.unwrap();
    }

    #[tokio::test]
    async fn the_service_has_a_health_name() {
        let rules = rules_dir(&[("edge.yaml", RULES)]);
        let server = TestServer::start(config_with_rules(rules.path())).await;
        let channel =
            tonic::transport::Endpoint::from_shared(format!("http://{}", server.grpc_addr))
                .unwrap()
                .connect()
                .await
                .unwrap();
        let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
        let status = health
            .check(tonic_health::pb::HealthCheckRequest {
                service: "envoy.service.rate_limit_quota.v3.RateLimitQuotaService".into(),
            })
            .await
            .unwrap()
            .into_inner()
            .status();
        assert_eq!(
            status,
            tonic_health::pb::health_check_response::ServingStatus::Serving
        );
        server.stop().await.unwrap();
    }

    #[tokio::test]
    async fn global_shadow_mode_allows_all() {
        let rules = rules_dir(&[("edge.yaml", RULES)]);
        let mut config = config_with_rules(rules.path());
        config.limiter.global_shadow_mode = true;
        let server = TestServer::start(config).await;
        let mut c = Client::open(server.grpc_addr.port()).await;
        c.report("edge", &[("u", 100, 0)]).await;
        assert_eq!(describe(&c.answer().await.unwrap()), ["u: allow ttl 60s"]);
        server.stop().await.unwrap();
    }

    #[tokio::test]
    async fn streams_are_bounded_and_end_on_drain() {
        let rules = rules_dir(&[("edge.yaml", RULES)]);
        let mut config = config_with_rules(rules.path());
        config.rlqs.max_streams = 1;
        let server = TestServer::start(config).await;
        let port = server.grpc_addr.port();
        let mut first = Client::open(port).await;
        first.report("edge", &[("u", 1, 0)]).await;
        first.answer().await.unwrap();
        let mut client = RateLimitQuotaServiceClient::connect(format!("http://127.0.0.1:{port}"))
            .await
            .unwrap();
        let (_tx, reports) = mpsc::channel(1);
        let second = client
            .stream_rate_limit_quotas(ReceiverStream::new(reports))
            .await
            .expect_err("one stream at most");
        assert_eq!(second.code(), tonic::Code::ResourceExhausted);
        assert_eq!(
            second.message(),
            "more than rlqs_max_streams (1) RLQS streams"
        );
        // On drain, the open stream ends UNAVAILABLE (Envoy opens another).
        let stopping = tokio::spawn(server.stop());
        let end = first.answer().await.expect_err("the stream ends");
        assert_eq!(end.code(), tonic::Code::Unavailable, "{end:?}");
        stopping.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn invalid_reports_end_the_stream_with_a_clear_error() {
        let rules = rules_dir(&[("edge.yaml", RULES)]);
        let mut config = config_with_rules(rules.path());
        config.rlqs.max_buckets_per_stream = 2;
        let server = TestServer::start(config).await;
        let port = server.grpc_addr.port();
        let refused = |r: Result<RateLimitQuotaResponse, tonic::Status>| {
            let status = r.expect_err("the stream ends with an error");
            format!("{:?}: {}", status.code(), status.message())
        };

        let mut c = Client::open(port).await;
        c.report("", &[("u", 1, 0)]).await;
        assert_eq!(
            refused(c.answer().await),
            "InvalidArgument: the first usage reports message of a stream must name the domain"
        );

        let mut c = Client::open(port).await;
        c.report("edge", &[("u", 1, 0)]).await;
        c.answer().await.unwrap();
        c.report("other", &[("u", 1, 0)]).await;
        assert!(
            refused(c.answer().await)
                .starts_with("InvalidArgument: the stream's domain is \"edge\"")
        );

        let mut c = Client::open(port).await;
        c.tx.send(RateLimitQuotaUsageReports {
            domain: "edge".into(),
            bucket_quota_usages: vec![BucketQuotaUsage::default()],
        })
        .await
        .unwrap();
        assert_eq!(
            refused(c.answer().await),
            "InvalidArgument: a bucket usage report has no bucket_id entries"
        );

        let mut c = Client::open(port).await;
        c.report("edge", &[("a", 1, 0), ("b", 1, 0)]).await;
        c.answer().await.unwrap();
        c.report("edge", &[("c", 1, 0)]).await;
        assert_eq!(
            refused(c.answer().await),
            "ResourceExhausted: the stream reports more than rlqs_max_buckets_per_stream (2) buckets"
        );

        // One message may not name more usages than a stream may have
        // buckets, even one bucket over and over.
        let mut c = Client::open(port).await;
        c.report("edge", &[("u", 1, 0), ("u", 1, 0), ("u", 1, 0)])
            .await;
        assert_eq!(
            refused(c.answer().await),
            "InvalidArgument: a usage reports message has 3 bucket usages, more than rlqs_max_buckets_per_stream (2)"
        );

        let mut c = Client::open(port).await;
        let huge = "x".repeat(5 * 1024 * 1024);
        c.report("edge", &[(huge.as_str(), 1, 0)]).await;
        let status = c.answer().await.expect_err("too large");
        assert_eq!(status.code(), tonic::Code::OutOfRange, "{status:?}");

        // The server is still up and answers a good stream.
        let mut c = Client::open(port).await;
        c.report("edge", &[("u", 1, 0)]).await;
        assert_eq!(
            describe(&c.answer().await.unwrap()),
            ["u: tb 60/60s max 1 ttl 60s"]
        );
        let errors = metric::<u64>(server.http_addr, "floodgate_rlqs_stream_errors_total").await;
        assert_eq!(errors, Some(6));
        server.stop().await.unwrap();
    }

    /// A stream is a request in flight for as long as it lives: past
    /// `idle_timeout` (and the `header_read_timeout` a GOAWAY'd connection
    /// gets), it still answers; a connection idle after a call is closed.
    #[tokio::test]
    async fn a_stream_keeps_its_connection_busy_past_idle_timeout() {
        let rules = rules_dir(&[("edge.yaml", RULES)]);
        let mut config = config_with_rules(rules.path());
        config.listeners.idle_timeout = Duration::from_millis(400);
        config.listeners.header_read_timeout = Duration::from_millis(300);
        let server = TestServer::start(config).await;
        let port = server.grpc_addr.port();
        let mut c = Client::open(port).await;
        // Another connection, idle after one call.
        let channel =
            tonic::transport::Endpoint::from_shared(format!("http://{}", server.grpc_addr))
                .unwrap()
                .connect()
                .await
                .unwrap();
        let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
        health
            .check(tonic_health::pb::HealthCheckRequest::default())
            .await
            .unwrap();
        // Each report names a new (unlimited) bucket, so each gets an answer.
        let start = Instant::now();
        for i in 0..8 {
            tokio::time::sleep(Duration::from_millis(250)).await;
            let user = format!("v{i}");
            c.report("edge", &[(user.as_str(), 1, 0)]).await;
            let answer = c
                .answer()
                .await
                .map(|a| describe(&a))
                .map_err(|e| format!("{e:?}"));
            assert_eq!(
                answer,
                Ok(vec![format!("{user}: allow ttl 60s")]),
                "answer {i}, {:?} after the stream opened",
                start.elapsed()
            );
        }
        let idle = "floodgate_connection_timeouts_total{listener=\"grpc\",kind=\"idle\"}";
        assert_eq!(
            metric::<u64>(server.http_addr, idle).await,
            Some(1),
            "the health check's connection, not the stream's"
        );
        server.stop().await.unwrap();
    }
}
