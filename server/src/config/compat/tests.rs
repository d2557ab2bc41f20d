use super::*;

fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn translate(pairs: &[(&str, &str)]) -> Translated {
    envoy_ratelimit(&env(pairs)).unwrap()
}

fn refused(pairs: &[(&str, &str)]) -> String {
    envoy_ratelimit(&env(pairs)).unwrap_err().to_string()
}

/// Envoy Gateway's environment for the rate-limit container, exactly as
/// `internal/infrastructure/kubernetes/ratelimit/resource.go` writes it
/// (its `testdata/deployments/default.yaml`), with or without the TLS
/// variables.
fn envoy_gateway(tls: bool) -> Vec<(&'static str, &'static str)> {
    let mut env = vec![
        ("RUNTIME_ROOT", "/data"),
        ("RUNTIME_SUBDIRECTORY", "ratelimit"),
        ("RUNTIME_IGNOREDOTFILES", "true"),
        ("RUNTIME_WATCH_ROOT", "false"),
        ("LOG_LEVEL", "info"),
        ("USE_STATSD", "false"),
        ("CONFIG_TYPE", "GRPC_XDS_SOTW"),
        ("CONFIG_GRPC_XDS_SERVER_URL", "envoy-gateway:18001"),
        ("CONFIG_GRPC_XDS_NODE_ID", "envoy-ratelimit"),
    ];
    if tls {
        env.extend([
            ("GRPC_SERVER_USE_TLS", "true"),
            ("GRPC_SERVER_TLS_CERT", "/certs/tls.crt"),
            ("GRPC_SERVER_TLS_KEY", "/certs/tls.key"),
            ("GRPC_SERVER_TLS_CA_CERT", "/certs/ca.crt"),
            ("CONFIG_GRPC_XDS_SERVER_USE_TLS", "true"),
            ("CONFIG_GRPC_XDS_CLIENT_TLS_CERT", "/certs/tls.crt"),
            ("CONFIG_GRPC_XDS_CLIENT_TLS_KEY", "/certs/tls.key"),
            ("CONFIG_GRPC_XDS_SERVER_TLS_CACERT", "/certs/ca.crt"),
        ]);
    }
    env.extend([
        ("FORCE_START_WITHOUT_INITIAL_CONFIG", "true"),
        ("REDIS_SOCKET_TYPE", "tcp"),
        ("REDIS_URL", "redis.redis.svc:6379"),
        ("USE_PROMETHEUS", "true"),
        ("PROMETHEUS_ADDR", ":19001"),
        ("PROMETHEUS_MAPPER_YAML", "/etc/statsd-exporter/conf.yaml"),
    ]);
    env
}

const EG_UNUSED: [&str; 4] = [
    "RUNTIME_ROOT=/data: CONFIG_TYPE is GRPC_XDS_SOTW",
    "RUNTIME_SUBDIRECTORY=ratelimit: CONFIG_TYPE is GRPC_XDS_SOTW",
    "RUNTIME_IGNOREDOTFILES=true: CONFIG_TYPE is GRPC_XDS_SOTW",
    "RUNTIME_WATCH_ROOT=false: CONFIG_TYPE is GRPC_XDS_SOTW",
];

const EG_IGNORED: [&str; 1] = [
    "PROMETHEUS_MAPPER_YAML=/etc/statsd-exporter/conf.yaml: Floodgate's series names are fixed (see the metrics mapping)",
];

#[test]
fn envoy_gateways_environment_with_tls() {
    let t = translate(&envoy_gateway(true));
    assert_eq!(
        t.variables,
        pairs(&[
            ("FLOODGATE_LOG_LEVEL", "info"),
            ("FLOODGATE_GRPC_TLS_CERT_FILE", "/certs/tls.crt"),
            ("FLOODGATE_GRPC_TLS_KEY_FILE", "/certs/tls.key"),
            ("FLOODGATE_GRPC_TLS_CLIENT_CA_FILE", "/certs/ca.crt"),
            ("FLOODGATE_RULES_XDS_SERVER", "envoy-gateway:18001"),
            ("FLOODGATE_RULES_XDS_NODE_ID", "envoy-ratelimit"),
            ("FLOODGATE_RULES_XDS_CA_FILE", "/certs/ca.crt"),
            ("FLOODGATE_RULES_XDS_CERT_FILE", "/certs/tls.crt"),
            ("FLOODGATE_RULES_XDS_KEY_FILE", "/certs/tls.key"),
            ("FLOODGATE_REDIS_MODE", "single"),
            ("FLOODGATE_REDIS_URL", "redis://redis.redis.svc:6379"),
            ("FLOODGATE_METRICS_ADDR", "0.0.0.0:19001"),
        ])
    );
    assert_eq!(t.unused, EG_UNUSED);
    assert_eq!(t.ignored, EG_IGNORED);
}

#[test]
fn envoy_gateways_environment_without_tls() {
    let t = translate(&envoy_gateway(false));
    assert_eq!(
        t.variables,
        pairs(&[
            ("FLOODGATE_LOG_LEVEL", "info"),
            ("FLOODGATE_RULES_XDS_SERVER", "envoy-gateway:18001"),
            ("FLOODGATE_RULES_XDS_NODE_ID", "envoy-ratelimit"),
            ("FLOODGATE_REDIS_MODE", "single"),
            ("FLOODGATE_REDIS_URL", "redis://redis.redis.svc:6379"),
            ("FLOODGATE_METRICS_ADDR", "0.0.0.0:19001"),
        ])
    );
    assert_eq!(t.unused, EG_UNUSED);
    assert_eq!(t.ignored, EG_IGNORED);
}

#[test]
fn prometheus_addr_and_path_make_the_metrics_listener_with_use_prometheus() {
    let base = [
        ("USE_STATSD", "false"),
        ("REDIS_URL", "r:1"),
        ("REDIS_SOCKET_TYPE", "tcp"),
    ];
    let metrics = |extra: &[(&str, &str)]| {
        let t = translate(&[&base[..], extra].concat());
        let ours: Vec<(String, String)> = t
            .variables
            .iter()
            .filter(|(k, _)| k.starts_with("FLOODGATE_METRICS_"))
            .cloned()
            .collect();
        (ours, t.ignored, t.unused)
    };
    // Go's `:port` is every interface; their default address is `:9090`.
    for (given, ours) in [
        (":19001", "0.0.0.0:19001"),
        ("127.0.0.1:9100", "127.0.0.1:9100"),
        ("[::1]:9100", "[::1]:9100"),
        ("localhost:9100", "127.0.0.1:9100"),
    ] {
        let extra = [("USE_PROMETHEUS", "true"), ("PROMETHEUS_ADDR", given)];
        assert_eq!(
            metrics(&extra),
            (pairs(&[("FLOODGATE_METRICS_ADDR", ours)]), vec![], vec![]),
            "{given}"
        );
    }
    assert_eq!(
        metrics(&[("USE_PROMETHEUS", "1"), ("PROMETHEUS_PATH", "/stats")]).0,
        pairs(&[
            ("FLOODGATE_METRICS_ADDR", "0.0.0.0:9090"),
            ("FLOODGATE_METRICS_PATH", "/stats"),
        ])
    );
    // Without USE_PROMETHEUS they serve nothing there either: said at info.
    let off = [("PROMETHEUS_ADDR", ":19001"), ("PROMETHEUS_PATH", "/stats")];
    assert_eq!(
        metrics(&off),
        (
            vec![],
            vec![],
            vec![
                "PROMETHEUS_ADDR=:19001: USE_PROMETHEUS is not true".to_owned(),
                "PROMETHEUS_PATH=/stats: USE_PROMETHEUS is not true".to_owned(),
            ]
        )
    );
    assert_eq!(
        metrics(&[("USE_PROMETHEUS", "false"), off[0]]).2,
        ["PROMETHEUS_ADDR=:19001: USE_PROMETHEUS is not true"]
    );
    // An explicit FLOODGATE_METRICS_ADDR wins.
    let (ours, ignored, _) = metrics(&[
        ("USE_PROMETHEUS", "true"),
        ("PROMETHEUS_ADDR", ":19001"),
        ("FLOODGATE_METRICS_ADDR", "127.0.0.1:1"),
    ]);
    assert!(ours.is_empty(), "{ours:?}");
    assert_eq!(
        ignored,
        ["PROMETHEUS_ADDR=:19001: FLOODGATE_METRICS_ADDR is set and wins"]
    );
    // What Floodgate cannot listen on is refused by name.
    for bad in ["nowhere", "metrics.svc:9090", ":http", "1.2.3.4:70000"] {
        assert_eq!(
            refused(&[("USE_PROMETHEUS", "true"), ("PROMETHEUS_ADDR", bad)]),
            format!(
                "invalid PROMETHEUS_ADDR={bad:?}: Floodgate listens on host:port with an IP address or localhost as host (or :port for every interface)"
            )
        );
    }
    assert_eq!(
        refused(&[("USE_PROMETHEUS", "true"), ("PROMETHEUS_PATH", "metrics")]),
        "invalid PROMETHEUS_PATH=\"metrics\": must start with /"
    );
}

#[test]
fn envoy_gateways_environment_with_redis_tls_and_auth() {
    // testdata/deployments/redis-tls-settings.yaml: REDIS_TLS with a client
    // certificate, REDIS_AUTH from the container's extra env, USE_STATSD on.
    let mut eg = envoy_gateway(true);
    eg.retain(|(k, _)| *k != "USE_STATSD");
    eg.extend([
        ("USE_STATSD", "true"),
        ("REDIS_TLS", "true"),
        ("REDIS_TLS_CLIENT_CERT", "/redis-certs/tls.crt"),
        ("REDIS_TLS_CLIENT_KEY", "/redis-certs/tls.key"),
        ("REDIS_AUTH", "redis_auth_password"),
    ]);
    let t = translate(&eg);
    let redis: Vec<_> = t
        .variables
        .iter()
        .filter(|(k, _)| k.starts_with("FLOODGATE_REDIS"))
        .cloned()
        .collect();
    assert_eq!(
        redis,
        pairs(&[
            ("FLOODGATE_REDIS_MODE", "single"),
            ("FLOODGATE_REDIS_URL", "rediss://redis.redis.svc:6379"),
            ("FLOODGATE_REDIS_PASSWORD", "redis_auth_password"),
            ("FLOODGATE_REDIS_TLS_CERT_FILE", "/redis-certs/tls.crt"),
            ("FLOODGATE_REDIS_TLS_KEY_FILE", "/redis-certs/tls.key"),
        ])
    );
    let mut ignored = EG_IGNORED.map(str::to_owned).to_vec();
    ignored.insert(0, format!("USE_STATSD=true: {NO_STATSD}"));
    assert_eq!(t.ignored, ignored);
    assert!(
        !format!("{t:?}").contains("redis_auth_password=")
            && !t.ignored.concat().contains("redis_auth_password")
    );
}

#[test]
fn envoy_gateways_environment_with_tracing() {
    // testdata/deployments/enable-tracing.yaml.
    let mut eg = envoy_gateway(true);
    eg.extend([
        ("TRACING_ENABLED", "true"),
        ("TRACING_SERVICE_NAME", "envoy-ratelimit"),
        ("TRACING_SERVICE_NAMESPACE", "envoy-gateway-system"),
        (
            "TRACING_SERVICE_INSTANCE_ID",
            "envoy-ratelimit-5d9f7c-abcde",
        ),
        ("TRACING_SAMPLING_RATE", "1.0"),
        (
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            "http://trace-collector.envoy-gateway-system.svc.cluster.local:4318",
        ),
    ]);
    let t = translate(&eg);
    assert_eq!(
        t.variables.last().unwrap(),
        &("FLOODGATE_TRACE_SAMPLING_RATIO".to_owned(), "1".to_owned())
    );
    let mut ignored = vec![
        "TRACING_EXPORTER_PROTOCOL is not set (envoyproxy/ratelimit's default: http): Floodgate exports OTLP over gRPC only: point OTEL_EXPORTER_OTLP_ENDPOINT at the collector's gRPC port (4317)".to_owned(),
    ];
    ignored.extend(EG_IGNORED.map(str::to_owned));
    ignored.extend([
        "TRACING_SERVICE_NAME=envoy-ratelimit: set `OTEL_SERVICE_NAME` instead".to_owned(),
        "TRACING_SERVICE_NAMESPACE=envoy-gateway-system: set `OTEL_RESOURCE_ATTRIBUTES=service.namespace=...` instead".to_owned(),
        "TRACING_SERVICE_INSTANCE_ID=envoy-ratelimit-5d9f7c-abcde: set `OTEL_RESOURCE_ATTRIBUTES=service.instance.id=...` instead".to_owned(),
    ]);
    assert_eq!(t.ignored, ignored);

    // Without TRACING_ENABLED, they export nothing; Floodgate would export
    // to the endpoint, so that is said.
    let t = translate(&[
        ("USE_STATSD", "false"),
        ("REDIS_URL", "r:1"),
        ("REDIS_SOCKET_TYPE", "tcp"),
        ("TRACING_SAMPLING_RATE", "0.5"),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4317"),
    ]);
    assert_eq!(
        t.ignored,
        [
            "OTEL_EXPORTER_OTLP_ENDPOINT=http://c:4317: TRACING_ENABLED is not true, but Floodgate exports traces whenever it is set: unset it, or set OTEL_SDK_DISABLED=true"
        ]
    );
    assert_eq!(
        t.unused,
        ["TRACING_SAMPLING_RATE=0.5: TRACING_ENABLED is not true"]
    );
}

#[test]
fn file_rules_come_from_the_runtime_directories_as_envoyproxy_ratelimit_reads_them() {
    let rules = |pairs: &[(&str, &str)]| -> String {
        let t = translate(pairs);
        let found = t.variables.iter().find(|(k, _)| k == "FLOODGATE_RULES");
        found.map(|(_, v)| v.clone()).unwrap_or_default()
    };
    // Their defaults.
    assert_eq!(rules(&[]), "/srv/runtime_data/current/config");
    // Unset REDIS_URL and USE_STATSD ask for what Floodgate does not do.
    assert_eq!(
        translate(&[]).ignored,
        [
            "REDIS_URL is not set: envoyproxy/ratelimit would dial /var/run/nutcracker/ratelimit.sock; Floodgate counts in memory, per instance".to_owned(),
            format!("USE_STATSD is not set (envoyproxy/ratelimit's default: true): {NO_STATSD}"),
        ]
    );
    assert_eq!(
        rules(&[
            ("RUNTIME_ROOT", "/data"),
            ("RUNTIME_SUBDIRECTORY", "ratelimit")
        ]),
        "/data/ratelimit/config"
    );
    assert_eq!(
        rules(&[
            ("RUNTIME_ROOT", "/data/"),
            ("RUNTIME_SUBDIRECTORY", "/rl/"),
            ("RUNTIME_APPDIRECTORY", "rules"),
            ("RUNTIME_WATCH_ROOT", "false"),
        ]),
        "/data/rl/rules"
    );
    // RUNTIME_IGNOREDOTFILES=false is the one not honoured.
    let t = translate(&[("RUNTIME_IGNOREDOTFILES", "false"), ("USE_STATSD", "0")]);
    assert_eq!(
        t.ignored[1..],
        [
            "RUNTIME_IGNOREDOTFILES=false: Floodgate always skips dotfiles (a ConfigMap's `..data` is never read twice)"
        ]
    );
    // An explicit FLOODGATE_RULES wins, and the losers are named.
    let t = translate(&[("RUNTIME_ROOT", "/data"), ("FLOODGATE_RULES", "/r")]);
    assert!(!t.variables.iter().any(|(k, _)| k == "FLOODGATE_RULES"));
    assert!(
        t.ignored
            .contains(&"RUNTIME_ROOT=/data: FLOODGATE_RULES is set and wins".to_owned())
    );
    // xDS variables under FILE have no effect there either.
    let t = translate(&[("CONFIG_GRPC_XDS_NODE_ID", "n")]);
    assert_eq!(t.unused, ["CONFIG_GRPC_XDS_NODE_ID=n: CONFIG_TYPE is FILE"]);
}

#[test]
fn xds_defaults_are_theirs_and_tls_needs_a_ca() {
    let t = translate(&[("CONFIG_TYPE", "GRPC_XDS_SOTW"), ("USE_STATSD", "false")]);
    assert_eq!(
        t.variables,
        pairs(&[
            ("FLOODGATE_RULES_XDS_SERVER", "localhost:18000"),
            ("FLOODGATE_RULES_XDS_NODE_ID", "default"),
        ])
    );
    let t = translate(&[
        ("CONFIG_TYPE", "GRPC_XDS_SOTW"),
        ("CONFIG_GRPC_XDS_NODE_METADATA", "zone=a,bad,team=x=y"),
        (
            "CONFIG_GRPC_XDS_CLIENT_ADDITIONAL_HEADERS",
            "authorization:Bearer t,x-a:b",
        ),
        ("XDS_CLIENT_BACKOFF_INITIAL_INTERVAL", "1m30s"),
        ("XDS_CLIENT_BACKOFF_MAX_INTERVAL", "1.5h"),
        ("XDS_CLIENT_MAX_MSG_SIZE_IN_BYTES", "0x800000"),
    ]);
    assert_eq!(
        t.variables[2..],
        pairs(&[
            ("FLOODGATE_RULES_XDS_NODE_METADATA", "zone=a,team=x=y"),
            (
                "FLOODGATE_RULES_XDS_HEADERS",
                "authorization:Bearer t,x-a:b"
            ),
            ("FLOODGATE_RULES_XDS_RETRY_INITIAL", "90000ms"),
            ("FLOODGATE_RULES_XDS_RETRY_MAX", "5400000ms"),
            ("FLOODGATE_RULES_XDS_MAX_MESSAGE_BYTES", "8388608"),
        ])
    );
    assert_eq!(
        refused(&[
            ("CONFIG_TYPE", "GRPC_XDS_SOTW"),
            ("CONFIG_GRPC_XDS_SERVER_USE_TLS", "true"),
        ]),
        "invalid CONFIG_GRPC_XDS_SERVER_USE_TLS=\"true\": Floodgate needs CONFIG_GRPC_XDS_SERVER_TLS_CACERT (the CA that signs the management server's certificate) for TLS"
    );
    assert_eq!(
        refused(&[("CONFIG_TYPE", "file")]),
        "invalid CONFIG_TYPE=\"file\": must be FILE or GRPC_XDS_SOTW"
    );
}

#[test]
fn redis_topologies_credentials_and_timeouts() {
    let redis = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
        translate(pairs)
            .variables
            .into_iter()
            .filter(|(k, _)| k.starts_with("FLOODGATE_REDIS") || k.contains("TIMEOUT"))
            .collect()
    };
    assert_eq!(
        redis(&[
            ("REDIS_TYPE", "sentinel"),
            ("REDIS_URL", "mymaster,s1:26379,s2:26379"),
            ("REDIS_SENTINEL_AUTH", "p@ss"),
            ("REDIS_AUTH", "app:secret:x"),
            ("REDIS_TIMEOUT", "500ms"),
        ]),
        pairs(&[
            ("FLOODGATE_REDIS_MODE", "sentinel"),
            ("FLOODGATE_REDIS_SENTINEL_MASTER", "mymaster"),
            (
                "FLOODGATE_REDIS_URL",
                "redis://:p%40ss@s1:26379,redis://:p%40ss@s2:26379"
            ),
            ("FLOODGATE_REDIS_USERNAME", "app"),
            ("FLOODGATE_REDIS_PASSWORD", "secret:x"),
            ("FLOODGATE_REDIS_CONNECT_TIMEOUT", "500ms"),
            ("FLOODGATE_REDIS_COMMAND_TIMEOUT", "500ms"),
        ])
    );
    assert_eq!(
        redis(&[
            ("REDIS_TYPE", "CLUSTER"),
            ("REDIS_URL", "a:7000,b:7001"),
            ("REDIS_TLS", "1"),
            ("REDIS_TLS_CACERT", "/ca.pem"),
        ]),
        pairs(&[
            ("FLOODGATE_REDIS_MODE", "cluster"),
            ("FLOODGATE_REDIS_URL", "rediss://a:7000,rediss://b:7001"),
            ("FLOODGATE_REDIS_TLS_CA_FILE", "/ca.pem"),
        ])
    );
    let t = translate(&[("REDIS_TYPE", "CLUSTER"), ("REDIS_URL", "a:7000")]);
    assert!(t.unused.is_empty(), "{:?}", t.unused);
    // Unset, REDIS_SOCKET_TYPE is unix for them: a socket path we cannot dial.
    let e = refused(&[("REDIS_URL", "/var/run/redis.sock")]);
    assert!(
        e.starts_with("invalid REDIS_SOCKET_TYPE=\"\": Floodgate dials Redis over TCP only"),
        "{e}"
    );
    assert_eq!(
        refused(&[
            ("REDIS_SOCKET_TYPE", "tcp"),
            ("REDIS_URL", "a:1"),
            ("REDIS_TIMEOUT", "0")
        ]),
        "invalid REDIS_TIMEOUT=\"0\": Floodgate needs a timeout above 0"
    );
    assert_eq!(
        refused(&[("BACKEND_TYPE", "memcache")]),
        "invalid BACKEND_TYPE=\"memcache\": Floodgate has no memcached store: use BACKEND_TYPE=redis with REDIS_URL"
    );
    // No REDIS_URL: said, and the Redis-only variables are unused.
    let t = translate(&[("REDIS_AUTH", "hunter2"), ("USE_STATSD", "false")]);
    assert_eq!(
        t.ignored,
        [
            "REDIS_URL is not set: envoyproxy/ratelimit would dial /var/run/nutcracker/ratelimit.sock; Floodgate counts in memory, per instance"
        ]
    );
    assert_eq!(t.unused, ["REDIS_AUTH=<redacted>: REDIS_URL is not set"]);
    // Secrets never show, even in a URL.
    let t = translate(&[
        ("FLOODGATE_REDIS_URL", "redis://x:1"),
        ("REDIS_URL", "redis://u:hunter2@h:1"),
        ("REDIS_PERSECOND_AUTH", "hunter3"),
    ]);
    let all = format!("{:?}{:?}", t.ignored, t.unused);
    assert!(!all.contains("hunter"), "{all}");
    assert!(
        all.contains("REDIS_URL=redis://<redacted>@h:1: FLOODGATE_REDIS_URL is set and wins"),
        "{all}"
    );
}

#[test]
fn values_parse_as_go_parses_them_or_are_refused_by_name() {
    assert_eq!(go_duration("1m30s"), Some((false, Duration::from_secs(90))));
    assert_eq!(
        go_duration("1.5h"),
        Some((false, Duration::from_secs(5400)))
    );
    assert_eq!(go_duration("-2us"), Some((true, Duration::from_micros(2))));
    assert_eq!(go_duration("0"), Some((false, Duration::ZERO)));
    assert_eq!(
        go_duration(".5s"),
        Some((false, Duration::from_millis(500)))
    );
    for bad in ["", "10", "1d", "s", "1..5s", "1s2", "ten"] {
        assert_eq!(go_duration(bad), None, "{bad}");
    }
    assert_eq!(go_int("8080"), Some(8080));
    assert_eq!(go_int("0x1F90"), Some(8080));
    assert_eq!(go_int("017"), Some(15));
    assert_eq!(go_int("0b1_0"), Some(2));
    assert_eq!(go_int("-5"), Some(-5));
    for bad in ["", "1_000", "8080 ", "08", "1e3", "9223372036854775808"] {
        assert_eq!(go_int(bad), None, "{bad}");
    }
    // A not-honoured variable (REDIS_POOL_SIZE) is checked too, as they check it.
    for (name, value, message) in [
        (
            "SHADOW_MODE",
            "yes",
            "invalid SHADOW_MODE=\"yes\": not a boolean (1, t, T, TRUE, true, True, 0, f, F, FALSE, false, False)",
        ),
        (
            "REDIS_TIMEOUT",
            "10",
            "invalid REDIS_TIMEOUT=\"10\": not a Go duration such as 300ms, 10s, 1m30s or 2h",
        ),
        ("PORT", "http", "invalid PORT=\"http\": not an integer"),
        (
            "PORT",
            "70000",
            "invalid PORT=\"70000\": not a TCP port (0 to 65535)",
        ),
        (
            "EXTRA_TAGS",
            "a:b,c",
            "invalid EXTRA_TAGS=\"a:b,c\": not a map of k:v pairs separated by commas",
        ),
        (
            "LOG_LEVEL",
            "verbose",
            "invalid LOG_LEVEL=\"verbose\": not a level (panic, fatal, error, warn, info, debug, trace)",
        ),
        (
            "REDIS_POOL_SIZE",
            "ten",
            "invalid REDIS_POOL_SIZE=\"ten\": not an integer",
        ),
    ] {
        assert_eq!(refused(&[(name, value)]), message);
    }
}

#[test]
fn listeners_logs_and_limits_map_to_their_settings() {
    let t = translate(&[
        ("HOST", "127.0.0.1"),
        ("PORT", "9080"),
        ("GRPC_HOST", "::1"),
        ("LOG_LEVEL", "WARNING"),
        ("LOG_FORMAT", "JSON"),
        ("SHADOW_MODE", "T"),
        ("STOP_CACHE_KEY_INCREMENT_WHEN_OVERLIMIT", "true"),
        ("MERGE_DOMAIN_CONFIG", "1"),
        ("RESPONSE_DYNAMIC_METADATA", "true"),
        ("LIMIT_RESPONSE_HEADERS_ENABLED", "true"),
        ("LIMIT_REMAINING_HEADER", "X-Left"),
        ("NEAR_LIMIT_RATIO", "0.9"),
        ("LOCAL_CACHE_SIZE_IN_BYTES", "0"),
        ("CACHE_KEY_PREFIX", "rl_"),
        ("EXPIRATION_JITTER_MAX_SECONDS", "60"),
        ("REDIS_SOCKET_TYPE", "tcp"),
        ("REDIS_URL", "127.0.0.1:6379"),
        ("USE_STATSD", "false"),
    ]);
    let mut got = t.variables.clone();
    got.sort();
    let mut want = pairs(&[
        ("FLOODGATE_HTTP_ADDR", "127.0.0.1:9080"),
        ("FLOODGATE_GRPC_ADDR", "[::1]:8081"),
        ("FLOODGATE_LOG_LEVEL", "warn"),
        ("FLOODGATE_LOG_FORMAT", "json"),
        ("FLOODGATE_RULES", "/srv/runtime_data/current/config"),
        ("FLOODGATE_CACHE_KEY_PREFIX", "rl_"),
        ("FLOODGATE_REDIS_MODE", "single"),
        ("FLOODGATE_REDIS_URL", "redis://127.0.0.1:6379"),
        ("FLOODGATE_EXPIRATION_JITTER_MAX", "60s"),
        ("FLOODGATE_STOP_INCREMENT_WHEN_OVER_LIMIT", "true"),
        ("FLOODGATE_SHADOW_MODE", "true"),
        ("FLOODGATE_MERGE_DOMAINS", "true"),
        ("FLOODGATE_DYNAMIC_METADATA", "true"),
        ("FLOODGATE_RESPONSE_HEADERS", "true"),
        ("FLOODGATE_REMAINING_HEADER", "X-Left"),
        ("FLOODGATE_NEAR_LIMIT_RATIO", "0.9"),
        ("FLOODGATE_OVER_LIMIT_CACHE_ENTRIES", "0"),
    ]);
    want.sort();
    assert_eq!(got, want);
    assert!(t.ignored.is_empty(), "{:?}", t.ignored);
    assert!(t.unused.is_empty(), "{:?}", t.unused);
}

#[test]
fn tls_files_without_use_tls_are_reported_not_used() {
    let t = translate(&[
        ("GRPC_SERVER_USE_TLS", "false"),
        ("GRPC_SERVER_TLS_CERT", "/certs/tls.crt"),
        ("USE_STATSD", "false"),
    ]);
    assert!(!t.variables.iter().any(|(k, _)| k.contains("TLS")));
    assert_eq!(
        t.unused,
        ["GRPC_SERVER_TLS_CERT=/certs/tls.crt: GRPC_SERVER_USE_TLS is not true"]
    );
}

#[test]
fn an_explicit_floodgate_variable_wins() {
    let t = translate(&[
        ("GRPC_SERVER_USE_TLS", "1"),
        ("GRPC_SERVER_TLS_CERT", "/a"),
        ("GRPC_CLIENT_TLS_SAN", "spiffe://x"),
        ("FLOODGATE_GRPC_TLS_CERT_FILE", "/b"),
    ]);
    assert!(t.variables.contains(&(
        "FLOODGATE_GRPC_TLS_CLIENT_NAMES".to_owned(),
        "spiffe://x".to_owned()
    )));
    assert!(
        !t.variables
            .iter()
            .any(|(k, _)| k == "FLOODGATE_GRPC_TLS_CERT_FILE")
    );
    assert!(t.ignored.contains(
        &"GRPC_SERVER_TLS_CERT=/a: FLOODGATE_GRPC_TLS_CERT_FILE is set and wins".to_owned()
    ));
}

#[test]
fn every_variable_set_is_mapped_or_reported() {
    // Each variable alone, at a value that asks for something: it becomes
    // a setting, or it is reported; never dropped.
    for v in VARIABLES {
        let value = match v.kind {
            Kind::Bool => "true",
            Kind::Int => "7",
            Kind::Float => "0.5",
            Kind::Duration => "7s",
            Kind::Map => "a:b",
            _ => "x,y",
        };
        let mut env = vec![
            (v.name, value),
            ("USE_STATSD", "false"),
            ("REDIS_SOCKET_TYPE", "tcp"),
        ];
        if v.name == "USE_STATSD" || v.name == "REDIS_SOCKET_TYPE" {
            env.remove(if v.name == "USE_STATSD" { 1 } else { 2 });
        }
        let fixed = match v.name {
            "CONFIG_TYPE" => vec![("CONFIG_TYPE", "GRPC_XDS_SOTW")],
            "BACKEND_TYPE" => vec![("BACKEND_TYPE", "redis")],
            "REDIS_TYPE" => vec![("REDIS_TYPE", "CLUSTER")],
            "LOG_LEVEL" => vec![("LOG_LEVEL", "debug")],
            _ => vec![],
        };
        env.retain(|(k, _)| !fixed.iter().any(|(f, _)| f == k));
        env.extend(fixed);
        let t = envoy_ratelimit(
            &env.iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        )
        .unwrap_or_else(|e| panic!("{}: {e}", v.name));
        let said = t
            .ignored
            .iter()
            .chain(&t.unused)
            .any(|l| l.contains(v.name));
        let mapped = !t.variables.is_empty();
        assert!(said || mapped, "{} is silently dropped: {t:?}", v.name);
        assert!(
            !said || !t.ignored.concat().contains("a gap in compat.rs"),
            "{}: {t:?}",
            v.name
        );
    }
}

#[test]
fn the_table_covers_every_variable_of_envoyproxy_ratelimits_settings() {
    let theirs: Vec<&str> = include_str!("envoy_ratelimit_settings.txt")
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .collect();
    assert_eq!(theirs.len(), 114);
    let ours: Vec<&str> = VARIABLES.iter().map(|v| v.name).collect();
    let missing: Vec<_> = theirs.iter().filter(|n| !ours.contains(n)).collect();
    assert!(missing.is_empty(), "not in VARIABLES: {missing:?}");
    let mut seen = HashSet::new();
    for name in &ours {
        assert!(seen.insert(name), "{name} twice");
    }
    // Plus what Envoy Gateway sets that settings.go does not read.
    let extra: Vec<_> = ours.iter().filter(|n| !theirs.contains(n)).collect();
    assert_eq!(
        extra,
        [&"GRPC_SERVER_TLS_CA_CERT", &"OTEL_EXPORTER_OTLP_ENDPOINT"]
    );
}

/// The README's table (section "Its environment variables"), row for row.
pub(crate) fn readme_rows() -> Vec<String> {
    VARIABLES
        .iter()
        .map(|v| {
            let default = match v.default {
                "empty" | "unset" | "not read" => v.default.to_owned(),
                d if d.starts_with("unset") => d.to_owned(),
                d => format!("`{d}`"),
            };
            format!("| `{}` | {default} | {} |", v.name, v.floodgate())
        })
        .collect()
}

#[test]
fn the_readme_lists_exactly_the_variables_compat_knows() {
    let readme = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md"));
    let rows: Vec<String> = readme
        .lines()
        .skip_while(|l| !l.starts_with("| envoyproxy/ratelimit variable | their default |"))
        .skip(2)
        .take_while(|l| l.starts_with('|'))
        .map(str::to_owned)
        .collect();
    let want = readme_rows();
    for (got, want) in rows.iter().zip(&want) {
        assert_eq!(got, want);
    }
    assert_eq!(rows.len(), want.len(), "README rows:\n{}", want.join("\n"));
}
