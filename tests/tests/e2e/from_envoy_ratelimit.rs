//! Coming from envoyproxy/ratelimit (issue 19, item 4): one Redis and one
//! key space during a rolling switch, and the README's stat-to-series table.
//!
//! envoyproxy/ratelimit's side is played here with plain Redis commands,
//! exactly as its source issues them (the Go lines are quoted), against the
//! same real `redis-server` a real Floodgate counts in. Its key is built by
//! [`reference_key`], a line-by-line copy of `GenerateCacheKey`, and every
//! test also asserts the literal key names, so a drift of our format (or of
//! the copy) fails here.

use std::time::Duration;

use floodgate_e2e::{RedisServer, TestServer, config_with_redis, request, rules_dir};
use floodgate_proto::RateLimitRequest;
use floodgate_proto::rate_limit_response::Code;
use floodgate_server::clock::Clock;
use redis::AsyncCommands as _;

/// The time both sides read: envoyproxy/ratelimit's `timeSource.UnixNow()`
/// and Floodgate's clock, pinned 45 s into a minute.
const NOW: u64 = 1_700_000_045;

/// `CACHE_KEY_PREFIX` on their side, `cache_key_prefix` on ours.
const PREFIX: &str = "rl:";

/// The jitter their `JitterRand.Int63n(EXPIRATION_JITTER_MAX_SECONDS)`
/// drew (any value below the default 300 would do; fixed so the test is
/// repeatable).
const THEIR_JITTER: u64 = 120;

/// One YAML file both services load unchanged: a two-entry descriptor
/// (minute), a `share_threshold` wildcard (hour) and a per-second limit.
const RULES: &str = "\
domain: shared
descriptors:
  - key: tenant
    descriptors:
      - key: user
        rate_limit: {unit: minute, requests_per_unit: 5}
  - key: path
    value: \"/files/*\"
    share_threshold: true
    rate_limit: {unit: hour, requests_per_unit: 4}
  - key: ip
    rate_limit: {unit: second, requests_per_unit: 3}
";

/// `utils.UnitToDivider` for the units used here.
const SECOND: u64 = 1;
const MINUTE: u64 = 60;
const HOUR: u64 = 3_600;

/// `CacheKeyGenerator.GenerateCacheKey` (src/limiter/cache_key.go), line by
/// line. `shared[i]` is `limit.ShareThresholdKeyPattern[i]`.
fn reference_key(entries: &[(&str, &str)], shared: &[&str], divider: u64) -> String {
    let mut b = String::new();
    b.push_str(PREFIX); // b.WriteString(this.prefix)
    b.push_str("shared"); // b.WriteString(domain)
    b.push('_'); // b.WriteByte('_')
    for (i, (key, value)) in entries.iter().enumerate() {
        b.push_str(key); // b.WriteString(entry.Key)
        b.push('_'); // b.WriteByte('_')
        // valueToUse := entry.Value, or the wildcard pattern under share_threshold
        let value = shared.get(i).filter(|p| !p.is_empty()).unwrap_or(value);
        b.push_str(value); // b.WriteString(valueToUse)
        b.push('_'); // b.WriteByte('_')
    }
    // b.WriteString(strconv.FormatInt((now/divider)*divider, 10))
    b.push_str(&(NOW / divider * divider).to_string());
    b
}

/// One call of envoyproxy/ratelimit's `fixedRateLimitCacheImpl.DoLimit` for
/// one descriptor (src/redis/fixed_cache_impl.go, one Redis: `REDIS_PERSECOND`
/// false, so `perSecondClient` is nil and per-second keys go to `client` too;
/// `STOP_CACHE_KEY_INCREMENT_WHEN_OVERLIMIT` false; no local cache). Returns
/// the count after the increment and the code it answers.
async fn their_hit(
    redis: &mut redis::aio::MultiplexedConnection,
    key: &str,
    hits: u64,
    limit: u64,
    divider: u64,
) -> (u64, Code) {
    // expirationSeconds := utils.UnitToDivider(limits[i].Limit.Unit)
    // expirationSeconds += this.baseRateLimiter.JitterRand.Int63n(...ExpirationJitterMaxSeconds)
    let expiration_seconds = divider + THEIR_JITTER;
    // pipelineAppend: one pipeline (not MULTI), sent by PipeDo:
    let (after, _): (u64, bool) = redis::pipe()
        // client.PipeAppend(*pipeline, result, "INCRBY", key, hitsAddend)
        .cmd("INCRBY")
        .arg(key)
        .arg(hits)
        // client.PipeAppend(*pipeline, nil, "EXPIRE", key, expirationSeconds)
        .cmd("EXPIRE")
        .arg(key)
        .arg(expiration_seconds)
        .query_async(redis)
        .await
        .unwrap();
    // GetResponseDescriptorStatus (src/limiter/base_limiter.go):
    // if limitInfo.limitAfterIncrease > limitInfo.overLimitThreshold { OVER_LIMIT }
    let code = if after > limit {
        Code::OverLimit
    } else {
        Code::Ok
    };
    (after, code)
}

async fn redis_connection(redis: &RedisServer) -> redis::aio::MultiplexedConnection {
    redis::Client::open(redis.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

/// Floodgate counting in `redis`, with the prefix, its clock pinned at [`NOW`].
async fn floodgate(redis: &RedisServer, rules: &std::path::Path) -> TestServer {
    let mut config = config_with_redis(rules, redis.url(), Duration::from_millis(500));
    config.cache_key_prefix = PREFIX.to_owned();
    TestServer::start_with_clock(config, Clock::manual(Duration::from_secs(NOW))).await
}

/// Floodgate's answer to one call: overall code and the remaining count.
async fn floodgate_hit(server: &TestServer, request: RateLimitRequest) -> (Code, u32) {
    let resp = server
        .client()
        .await
        .should_rate_limit(request)
        .await
        .unwrap()
        .into_inner();
    assert!(!floodgate_e2e::degraded(&resp), "answered without Redis");
    (resp.overall_code(), resp.statuses[0].limit_remaining)
}

/// `keys`, sorted.
fn sorted(keys: [&String; 3]) -> Vec<String> {
    let mut keys: Vec<String> = keys.into_iter().cloned().collect();
    keys.sort();
    keys
}

/// All keys of the Redis, sorted.
async fn all_keys(redis: &mut redis::aio::MultiplexedConnection) -> Vec<String> {
    let mut keys: Vec<String> = redis.keys("*").await.unwrap();
    keys.sort();
    keys
}

/// (a) Hits that envoyproxy/ratelimit counted are seen by Floodgate: after
/// their hits, Floodgate allows exactly what is left of the shared limit
/// and then answers OVER_LIMIT, for a two-entry descriptor, a
/// `share_threshold` wildcard and a per-second limit, under a prefix.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hits_counted_by_envoy_ratelimit_are_seen_by_floodgate() {
    let redis = RedisServer::start();
    let rules = rules_dir(&[("shared.yaml", RULES)]);
    let server = floodgate(&redis, rules.path()).await;
    let mut conn = redis_connection(&redis).await;

    let user = reference_key(&[("tenant", "acme"), ("user", "alice")], &[], MINUTE);
    let files = reference_key(&[("path", "/files/a")], &["/files/*"], HOUR);
    let ip = reference_key(&[("ip", "10.0.0.1")], &[], SECOND);
    // Their documented format, literally: a drift on either side fails here.
    assert_eq!(user, "rl:shared_tenant_acme_user_alice_1700000040");
    assert_eq!(files, "rl:shared_path_/files/*_1699999200");
    assert_eq!(ip, "rl:shared_ip_10.0.0.1_1700000045");

    // envoyproxy/ratelimit takes all but one of each limit.
    assert_eq!(
        their_hit(&mut conn, &user, 4, 5, MINUTE).await,
        (4, Code::Ok)
    );
    assert_eq!(
        their_hit(&mut conn, &files, 3, 4, HOUR).await,
        (3, Code::Ok)
    );
    assert_eq!(their_hit(&mut conn, &ip, 2, 3, SECOND).await, (2, Code::Ok));

    // Floodgate allows the last one, then refuses.
    let cases = [
        request("shared", &[("tenant", "acme"), ("user", "alice")]),
        // Another value under the same shared wildcard: the same counter.
        request("shared", &[("path", "/files/b")]),
        request("shared", &[("ip", "10.0.0.1")]),
    ];
    for case in cases {
        let what = format!("{:?}", case.descriptors[0].entries);
        assert_eq!(
            floodgate_hit(&server, case.clone()).await,
            (Code::Ok, 0),
            "{what}: the last hit of the shared limit"
        );
        assert_eq!(
            floodgate_hit(&server, case).await.0,
            Code::OverLimit,
            "{what}: over the shared limit"
        );
    }

    // Floodgate wrote to their keys and made no others.
    assert_eq!(all_keys(&mut conn).await, sorted([&user, &files, &ip]));
    let counts: Vec<u64> = redis::cmd("MGET")
        .arg(&user)
        .arg(&files)
        .arg(&ip)
        .query_async(&mut conn)
        .await
        .unwrap();
    // Every taken hit is counted, the refused one too, as they do.
    assert_eq!(counts, [6, 5, 4]);
    server.stop().await.unwrap();
}

/// (b) Hits that Floodgate counted are seen by envoyproxy/ratelimit: the
/// test reads the key their code would read (by incrementing it, as they
/// do) and makes their decision: OK for what is left, then OVER_LIMIT.
/// The keys Floodgate creates carry a TTL in their range (window, window +
/// jitter), so neither side keeps the other's keys alive forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hits_counted_by_floodgate_are_seen_by_envoy_ratelimit() {
    let redis = RedisServer::start();
    let rules = rules_dir(&[("shared.yaml", RULES)]);
    let server = floodgate(&redis, rules.path()).await;
    let mut conn = redis_connection(&redis).await;

    // Floodgate takes all but one of each limit.
    let cases = [
        (request("shared", &[("tenant", "acme"), ("user", "bob")]), 4),
        (request("shared", &[("path", "/files/x")]), 3),
        (request("shared", &[("ip", "10.0.0.2")]), 2),
    ];
    for (case, calls) in cases {
        for _ in 0..calls {
            assert_eq!(floodgate_hit(&server, case.clone()).await.0, Code::Ok);
        }
    }

    let user = reference_key(&[("tenant", "acme"), ("user", "bob")], &[], MINUTE);
    let files = reference_key(&[("path", "/files/y")], &["/files/*"], HOUR);
    let ip = reference_key(&[("ip", "10.0.0.2")], &[], SECOND);
    assert_eq!(user, "rl:shared_tenant_acme_user_bob_1700000040");
    assert_eq!(files, "rl:shared_path_/files/*_1699999200");
    assert_eq!(ip, "rl:shared_ip_10.0.0.2_1700000045");
    // Floodgate created exactly the keys they read, each with a TTL of
    // its window plus a jitter below `expiration_jitter_max` (300 s).
    assert_eq!(all_keys(&mut conn).await, sorted([&user, &files, &ip]));
    for (key, window) in [(&user, MINUTE), (&files, HOUR), (&ip, SECOND)] {
        let ttl: i64 = conn.ttl(key).await.unwrap();
        let ttl = u64::try_from(ttl).unwrap_or_else(|_| panic!("{key}: TTL {ttl}"));
        assert!(
            (window.saturating_sub(1)..=window + 300).contains(&ttl),
            "{key}: TTL {ttl} outside [{window}, {window} + 300]"
        );
    }

    // Their next call is the last one allowed, the one after is refused.
    for (key, limit, divider) in [(&user, 5, MINUTE), (&files, 4, HOUR), (&ip, 3, SECOND)] {
        assert_eq!(
            their_hit(&mut conn, key, 1, limit, divider).await,
            (limit, Code::Ok),
            "{key}"
        );
        assert_eq!(
            their_hit(&mut conn, key, 1, limit, divider).await,
            (limit + 1, Code::OverLimit),
            "{key}"
        );
    }
    server.stop().await.unwrap();
}

/// Rules with one outcome each: within, near and over the limit (then
/// from the local over-limit cache), and a shadow-mode rule over its limit.
const STATS_RULES: &str = "\
domain: stats
descriptors:
  - key: user
    rate_limit: {unit: hour, requests_per_unit: 5}
  - key: trial
    shadow_mode: true
    rate_limit: {unit: hour, requests_per_unit: 1}
";

/// The README's stat table ("Its statistics, as Floodgate's series"): the
/// `floodgate_*` series it names (in any column), as (name, labels), where a
/// label is `name` (present, any value) or `name="value"`.
fn stats_table_series() -> Vec<(String, Vec<String>)> {
    let readme = std::fs::read_to_string(floodgate_e2e::workspace_root().join("README.md"))
        .expect("README.md");
    let section = readme
        .split_once("### Its statistics, as Floodgate's series")
        .expect("the README's stats section")
        .1;
    let section = section.split("\n#").next().unwrap_or_default();
    let mut series = Vec::new();
    for row in section.lines().filter(|l| l.starts_with("| `")) {
        for quoted in row.split('`').skip(1).step_by(2) {
            let Some(rest) = quoted.strip_prefix("floodgate_") else {
                continue;
            };
            let (name, labels) = match rest.split_once('{') {
                Some((name, labels)) => (name, labels.trim_end_matches('}')),
                None => (rest, ""),
            };
            let labels = labels
                .split(',')
                .filter(|l| !l.is_empty())
                .map(str::to_owned)
                .collect();
            series.push((format!("floodgate_{name}"), labels));
        }
    }
    series
}

/// Whether a sample line of `page` is the series `name` (or, for a
/// histogram, its `_count`) with every label of `labels`.
fn served(page: &str, name: &str, labels: &[String]) -> bool {
    page.lines().filter(|l| !l.starts_with('#')).any(|line| {
        let series = line.split(' ').next().unwrap_or_default();
        let (sample, sample_labels) = series.split_once('{').unwrap_or((series, ""));
        let named = sample == name || sample == format!("{name}_count");
        let sample_labels: Vec<&str> = sample_labels.trim_end_matches('}').split(',').collect();
        named
            && labels.iter().all(|want| {
                sample_labels.iter().any(|have| match want.split_once('=') {
                    Some(_) => have == want,
                    None => have.split_once('=').is_some_and(|(k, _)| k == want),
                })
            })
    })
}

/// Every `floodgate_*` series the README's stat table names is served
/// after one call of each outcome (so the table cannot drift from
/// `/metrics`), and the differences it states hold: `over_limit` counts
/// every hit of a rejected call, the load at startup is no reload, and
/// the over-limit local cache answers with the default settings.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_series_of_the_stats_table_is_served() {
    let redis = RedisServer::start();
    let rules = rules_dir(&[("stats.yaml", STATS_RULES)]);
    let server = TestServer::start(config_with_redis(
        rules.path(),
        redis.url(),
        Duration::from_millis(500),
    ))
    .await;
    let client = server.client().await;
    let call = |request: RateLimitRequest| {
        let mut client = client.clone();
        async move { client.should_rate_limit(request).await }
    };
    // Within the limit (4 hits), then 3 hits at once: a count of 7 over a
    // limit of 5. Then over again, from the local over-limit cache.
    let mut alice = request("stats", &[("user", "alice")]);
    alice.descriptors[0].hits_addend = Some(4);
    assert_eq!(
        call(alice.clone())
            .await
            .unwrap()
            .into_inner()
            .overall_code(),
        Code::Ok
    );
    alice.descriptors[0].hits_addend = Some(3);
    assert_eq!(
        call(alice.clone())
            .await
            .unwrap()
            .into_inner()
            .overall_code(),
        Code::OverLimit
    );
    alice.descriptors[0].hits_addend = Some(1);
    assert_eq!(
        call(alice).await.unwrap().into_inner().overall_code(),
        Code::OverLimit
    );
    // Near the limit: the 5th hit of a limit of 5 (threshold floor(5 × 0.8) = 4).
    for _ in 0..5 {
        let resp = call(request("stats", &[("user", "bob")])).await.unwrap();
        assert_eq!(resp.into_inner().overall_code(), Code::Ok);
    }
    // A shadow-mode rule over its limit, an unknown domain, an invalid call.
    for _ in 0..2 {
        let resp = call(request("stats", &[("trial", "t")])).await.unwrap();
        assert_eq!(resp.into_inner().overall_code(), Code::Ok);
    }
    call(request("nope", &[("user", "x")])).await.unwrap();
    let err = call(request("", &[("user", "x")])).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);

    let (status, page) =
        floodgate_e2e::http_get(&format!("http://{}/metrics", server.http_addr)).await;
    assert_eq!(status, 200);
    let table = stats_table_series();
    assert!(table.len() >= 15, "the table names the series: {table:?}");
    let missing: Vec<_> = table
        .iter()
        .filter(|(name, labels)| !served(&page, name, labels))
        .collect();
    assert!(
        missing.is_empty(),
        "named in the README, not served: {missing:?}\n{page}"
    );

    let value = |series: &str| floodgate_e2e::metric_value::<u64>(&page, series);
    let rule = |stat: &str, key: &str| {
        value(&format!(
            "floodgate_rule_{stat}_total{{domain=\"stats\",key=\"{key}\"}}"
        ))
    };
    // Each outcome was seen.
    assert_eq!(rule("within_limit", "user"), Some(4 + 5));
    assert_eq!(rule("near_limit", "user"), Some(1), "bob's 5th hit");
    assert_eq!(rule("shadow_mode", "trial"), Some(1));
    assert_eq!(
        value("floodgate_domain_not_found_total{domain=\"nope\"}"),
        Some(1)
    );
    // The over-limit local cache is on by default: alice's last call.
    assert_eq!(rule("over_limit_with_local_cache", "user"), Some(1));
    // All 3 hits of the rejected call (theirs: 7 - 5 = 2), and the cached one.
    assert_eq!(rule("over_limit", "user"), Some(3 + 1));
    // The load at startup is not a reload (theirs counts config_load_success).
    assert_eq!(
        value("floodgate_rules_reloads_total{result=\"success\"}"),
        Some(0)
    );
    server.stop().await.unwrap();
}
