//! envoyproxy/ratelimit's variables, one entry each ([`VARIABLES`]): how
//! each parses, its default there, and what Floodgate does with it. The
//! translation ([`super::envoy_ratelimit`]) and the README's table both read
//! this list; a test holds it to `settings.go`.

/// How envoyproxy/ratelimit parses a variable (with envconfig).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Any text.
    Text,
    /// Secret text: never printed.
    Secret,
    /// `strconv.ParseBool`.
    Bool,
    /// `strconv.ParseInt(value, 0, 64)`.
    Int,
    /// `strconv.ParseFloat`.
    Float,
    /// `time.ParseDuration`.
    Duration,
    /// envconfig's map: `k:v,k2:v2`.
    Map,
    /// envconfig's list: `a,b`.
    List,
}

/// When a variable Floodgate does not honour asks for nothing Floodgate
/// lacks (so it is not logged).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unless {
    /// Always logged.
    Never,
    /// Not logged when false.
    False,
    /// Not logged when true.
    True,
    /// Not logged when zero (a number or a duration).
    Zero,
    /// Not logged when empty.
    Empty,
    /// Not logged when it is this (any case).
    Is(&'static str),
}

/// What Floodgate does with a variable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fate {
    /// Honoured: becomes the setting(s) this says (README text).
    Setting(&'static str),
    /// Not honoured: logged (unless its value asks for nothing Floodgate
    /// lacks), with why.
    Logged(&'static str, Unless),
}

/// One of envoyproxy/ratelimit's variables.
#[derive(Clone, Copy, Debug)]
pub struct Variable {
    /// Its name.
    pub name: &'static str,
    /// How it is parsed.
    pub kind: Kind,
    /// envoyproxy/ratelimit's default, as the README shows it.
    pub default: &'static str,
    /// What Floodgate does with it.
    pub fate: Fate,
}

impl Variable {
    /// The README's cell for what Floodgate does with it.
    pub fn floodgate(&self) -> String {
        match self.fate {
            Fate::Setting(text) => text.to_owned(),
            Fate::Logged(why, unless) => {
                let unless = match unless {
                    Unless::Never => String::new(),
                    Unless::False => " unless false".to_owned(),
                    Unless::True => " unless true".to_owned(),
                    Unless::Zero => " unless 0".to_owned(),
                    Unless::Empty => " unless empty".to_owned(),
                    Unless::Is(v) => format!(" unless `{v}`"),
                };
                format!("logged{unless}, not honoured: {why}")
            }
        }
    }
}

const fn var(name: &'static str, kind: Kind, default: &'static str, fate: Fate) -> Variable {
    Variable {
        name,
        kind,
        default,
        fate,
    }
}

use Fate::{Logged, Setting};
use Kind::{Bool, Duration as Dur, Float, Int, List, Map, Secret, Text};

pub(super) const NO_STATSD: &str = "Floodgate sends no statsd; its metrics are Prometheus series at `/metrics` on the HTTP listener";
const NO_MEMCACHE: &str = "Floodgate has no memcached store (`BACKEND_TYPE=memcache` is refused)";
const NO_PER_SECOND_REDIS: &str =
    "Floodgate keeps per-second counters in `REDIS_URL` with the others (no second Redis)";
const REDIS_IN_BACKGROUND: &str = "Floodgate starts without Redis and keeps connecting in the background, answering per `on_store_failure` meanwhile";
const NO_POOL: &str =
    "Floodgate multiplexes one connection per Redis node and coalesces calls (`redis_batch_max`)";

/// Every variable envoyproxy/ratelimit reads (`src/settings/settings.go`),
/// plus those Envoy Gateway sets that it does not (`GRPC_SERVER_TLS_CA_CERT`,
/// `OTEL_EXPORTER_OTLP_ENDPOINT`), and what Floodgate does with each.
pub const VARIABLES: &[Variable] = &[
    var(
        "HOST",
        Text,
        "0.0.0.0",
        Setting("`http_addr` (`HOST:PORT`)"),
    ),
    var("PORT", Int, "8080", Setting("`http_addr` (`HOST:PORT`)")),
    var(
        "DEBUG_HOST",
        Text,
        "0.0.0.0",
        Logged(
            "no debug (pprof) listener; the admin listener (`admin_addr`) serves counters",
            Unless::Never,
        ),
    ),
    var(
        "DEBUG_PORT",
        Int,
        "6070",
        Logged(
            "no debug (pprof) listener; the admin listener (`admin_addr`) serves counters",
            Unless::Never,
        ),
    ),
    var(
        "GRPC_UDS",
        Text,
        "empty",
        Logged(
            "Floodgate listens on TCP only (`GRPC_HOST:GRPC_PORT`)",
            Unless::Empty,
        ),
    ),
    var(
        "GRPC_HOST",
        Text,
        "0.0.0.0",
        Setting("`grpc_addr` (`GRPC_HOST:GRPC_PORT`)"),
    ),
    var(
        "GRPC_PORT",
        Int,
        "8081",
        Setting("`grpc_addr` (`GRPC_HOST:GRPC_PORT`)"),
    ),
    var(
        "GRPC_MAX_CONNECTION_AGE",
        Dur,
        "24h",
        Logged(
            "connections are not closed by age; `idle_timeout` closes idle ones",
            Unless::Never,
        ),
    ),
    var(
        "GRPC_MAX_CONNECTION_AGE_GRACE",
        Dur,
        "1h",
        Logged(
            "connections are not closed by age; `idle_timeout` closes idle ones",
            Unless::Never,
        ),
    ),
    var(
        "GRPC_SERVER_USE_TLS",
        Bool,
        "false",
        Setting("true: the gRPC listener's TLS from the four variables below"),
    ),
    var(
        "GRPC_SERVER_TLS_CERT",
        Text,
        "empty",
        Setting("`grpc_tls_cert_file` (with `GRPC_SERVER_USE_TLS`)"),
    ),
    var(
        "GRPC_SERVER_TLS_KEY",
        Text,
        "empty",
        Setting("`grpc_tls_key_file` (with `GRPC_SERVER_USE_TLS`)"),
    ),
    var(
        "GRPC_CLIENT_TLS_CACERT",
        Text,
        "empty",
        Setting(
            "`grpc_tls_client_ca_file`: client certificates required (with `GRPC_SERVER_USE_TLS`)",
        ),
    ),
    var(
        "GRPC_SERVER_TLS_CA_CERT",
        Text,
        "not read",
        Setting(
            "set by Envoy Gateway: read as `GRPC_CLIENT_TLS_CACERT` (its Envoy presents a certificate)",
        ),
    ),
    var(
        "GRPC_CLIENT_TLS_SAN",
        Text,
        "empty",
        Setting("`grpc_tls_client_names` (with `GRPC_SERVER_USE_TLS`)"),
    ),
    var(
        "LOG_LEVEL",
        Text,
        "WARN",
        Setting("`log_level` (`panic`/`fatal` become `error`); unset: Floodgate's `info`"),
    ),
    var(
        "LOG_FORMAT",
        Text,
        "text",
        Setting("`log_format`: `json` (any case), else `text`"),
    ),
    var(
        "CONFIG_TYPE",
        Text,
        "FILE",
        Setting(
            "`FILE`: `rules` from `RUNTIME_*`; `GRPC_XDS_SOTW`: the `rules_xds_*` settings; anything else is refused",
        ),
    ),
    var(
        "FORCE_START_WITHOUT_INITIAL_CONFIG",
        Bool,
        "false",
        Logged(
            "`true` is what Floodgate always does: with rules over xDS it answers before the first \
             push (every call `OK` until then); waiting for the first push is not available",
            Unless::True,
        ),
    ),
    var(
        "CONFIG_GRPC_XDS_NODE_ID",
        Text,
        "default",
        Setting("`rules_xds_node_id`; unset: `default`, as theirs"),
    ),
    var(
        "CONFIG_GRPC_XDS_NODE_METADATA",
        Text,
        "empty",
        Setting(
            "`rules_xds_node_metadata` (`k=v,k2=v2`; an entry without `=` is dropped, as theirs)",
        ),
    ),
    var(
        "CONFIG_GRPC_XDS_SERVER_URL",
        Text,
        "localhost:18000",
        Setting("`rules_xds_server`; unset: `localhost:18000`, as theirs"),
    ),
    var(
        "CONFIG_GRPC_XDS_SERVER_CONNECT_RETRY_INTERVAL",
        Dur,
        "3s",
        Logged(
            "one reconnect backoff: `XDS_CLIENT_BACKOFF_*` (`rules_xds_retry_*`)",
            Unless::Never,
        ),
    ),
    var(
        "CONFIG_GRPC_XDS_CLIENT_ADDITIONAL_HEADERS",
        Map,
        "empty",
        Setting("`rules_xds_headers` (`k:v,k2:v2`)"),
    ),
    var(
        "CONFIG_GRPC_XDS_SERVER_USE_TLS",
        Bool,
        "false",
        Setting(
            "true: TLS to the management server, which needs `CONFIG_GRPC_XDS_SERVER_TLS_CACERT` (refused without)",
        ),
    ),
    var(
        "CONFIG_GRPC_XDS_CLIENT_TLS_CERT",
        Text,
        "empty",
        Setting("`rules_xds_cert_file` (with `CONFIG_GRPC_XDS_SERVER_USE_TLS`)"),
    ),
    var(
        "CONFIG_GRPC_XDS_CLIENT_TLS_KEY",
        Text,
        "empty",
        Setting("`rules_xds_key_file` (with `CONFIG_GRPC_XDS_SERVER_USE_TLS`)"),
    ),
    var(
        "CONFIG_GRPC_XDS_SERVER_TLS_CACERT",
        Text,
        "empty",
        Setting("`rules_xds_ca_file` (with `CONFIG_GRPC_XDS_SERVER_USE_TLS`)"),
    ),
    var(
        "CONFIG_GRPC_XDS_SERVER_TLS_SAN",
        Text,
        "empty",
        Setting("`rules_xds_server_name` (with `CONFIG_GRPC_XDS_SERVER_USE_TLS`)"),
    ),
    var(
        "XDS_CLIENT_BACKOFF_INITIAL_INTERVAL",
        Dur,
        "10s",
        Setting("`rules_xds_retry_initial`; unset: Floodgate's `1s`"),
    ),
    var(
        "XDS_CLIENT_BACKOFF_MAX_INTERVAL",
        Dur,
        "60s",
        Setting("`rules_xds_retry_max`; unset: Floodgate's `30s`"),
    ),
    var(
        "XDS_CLIENT_BACKOFF_RANDOM_FACTOR",
        Float,
        "0.5",
        Logged(
            "Floodgate's backoff doubles, with full jitter",
            Unless::Never,
        ),
    ),
    var(
        "XDS_CLIENT_BACKOFF_JITTER",
        Bool,
        "true",
        Logged("Floodgate's backoff always jitters", Unless::True),
    ),
    var(
        "XDS_CLIENT_MAX_MSG_SIZE_IN_BYTES",
        Int,
        "unset (4 MiB)",
        Setting("`rules_xds_max_message_bytes` (0: unchanged)"),
    ),
    var(
        "USE_DOG_STATSD",
        Bool,
        "false",
        Logged(NO_STATSD, Unless::False),
    ),
    var(
        "USE_DOG_STATSD_MOGRIFIERS",
        List,
        "empty",
        Logged(NO_STATSD, Unless::Empty),
    ),
    var("USE_STATSD", Bool, "true", Logged(NO_STATSD, Unless::False)),
    var(
        "STATSD_HOST",
        Text,
        "localhost",
        Logged(NO_STATSD, Unless::Never),
    ),
    var("STATSD_PORT", Int, "8125", Logged(NO_STATSD, Unless::Never)),
    var(
        "EXTRA_TAGS",
        Map,
        "empty",
        Logged("Floodgate's series carry fixed labels", Unless::Empty),
    ),
    var(
        "STATS_FLUSH_INTERVAL",
        Dur,
        "10s",
        Logged(NO_STATSD, Unless::Never),
    ),
    var(
        "DISABLE_STATS",
        Bool,
        "false",
        Logged("Floodgate always serves `/metrics`", Unless::False),
    ),
    var(
        "USE_PROMETHEUS",
        Bool,
        "false",
        Setting(
            "true: a metrics listener at `PROMETHEUS_ADDR` (`metrics_addr`); `/metrics` is on the HTTP listener (`http_addr`) either way",
        ),
    ),
    var(
        "PROMETHEUS_ADDR",
        Text,
        ":9090",
        Setting(
            "`metrics_addr` (with `USE_PROMETHEUS`; `:port` is every interface, `0.0.0.0:port`; the host must be an IP address or `localhost`)",
        ),
    ),
    var(
        "PROMETHEUS_PATH",
        Text,
        "/metrics",
        Setting("`metrics_path` (with `USE_PROMETHEUS`)"),
    ),
    var(
        "PROMETHEUS_MAPPER_YAML",
        Text,
        "empty",
        Logged(
            "Floodgate's series names are fixed (see the metrics mapping)",
            Unless::Empty,
        ),
    ),
    var(
        "PROMETHEUS_RESPONSE_TIME_AS_MILLISECONDS",
        Bool,
        "false",
        Logged("Floodgate's durations are in seconds", Unless::False),
    ),
    var(
        "RUNTIME_ROOT",
        Text,
        "/srv/runtime_data/current",
        Setting(
            "`rules` = `RUNTIME_ROOT/RUNTIME_SUBDIRECTORY/RUNTIME_APPDIRECTORY` (with `CONFIG_TYPE=FILE`; their defaults apply)",
        ),
    ),
    var(
        "RUNTIME_SUBDIRECTORY",
        Text,
        "empty",
        Setting("`rules` (see `RUNTIME_ROOT`)"),
    ),
    var(
        "RUNTIME_APPDIRECTORY",
        Text,
        "config",
        Setting("`rules` (see `RUNTIME_ROOT`): its `*.yaml`/`*.yml` files, not its subdirectories"),
    ),
    var(
        "RUNTIME_IGNOREDOTFILES",
        Bool,
        "false",
        Logged(
            "Floodgate always skips dotfiles (a ConfigMap's `..data` is never read twice)",
            Unless::True,
        ),
    ),
    var(
        "RUNTIME_WATCH_ROOT",
        Bool,
        "true",
        Setting(
            "none needed: `rules_reload_interval` polls the rules directory by path, so both a swap of `RUNTIME_ROOT` (true) and edits in the directory (false) are seen",
        ),
    ),
    var(
        "EXPIRATION_JITTER_MAX_SECONDS",
        Int,
        "300",
        Setting("`expiration_jitter_max` (seconds; 0 or less: `0s`)"),
    ),
    var(
        "LOCAL_CACHE_SIZE_IN_BYTES",
        Int,
        "0",
        Setting(
            "0: `over_limit_cache_entries` = 0 (off); more is logged, not honoured: the cache is bounded in entries (`over_limit_cache_entries`), not bytes; unset: Floodgate's cache is on",
        ),
    ),
    var(
        "NEAR_LIMIT_RATIO",
        Float,
        "0.8",
        Setting("`near_limit_ratio`"),
    ),
    var(
        "CACHE_KEY_PREFIX",
        Text,
        "empty",
        Setting("`cache_key_prefix`"),
    ),
    var(
        "BACKEND_TYPE",
        Text,
        "redis",
        Setting("`redis`: Redis; `memcache` is refused (no memcached store)"),
    ),
    var(
        "STOP_CACHE_KEY_INCREMENT_WHEN_OVERLIMIT",
        Bool,
        "false",
        Setting("`stop_increment_when_over_limit`"),
    ),
    var(
        "LIMIT_RESPONSE_HEADERS_ENABLED",
        Bool,
        "false",
        Setting("`response_headers`"),
    ),
    var(
        "LIMIT_LIMIT_HEADER",
        Text,
        "RateLimit-Limit",
        Setting("`limit_header`"),
    ),
    var(
        "LIMIT_REMAINING_HEADER",
        Text,
        "RateLimit-Remaining",
        Setting("`remaining_header`"),
    ),
    var(
        "LIMIT_RESET_HEADER",
        Text,
        "RateLimit-Reset",
        Setting("`reset_header`"),
    ),
    var(
        "HEALTHY_WITH_AT_LEAST_ONE_CONFIG_LOADED",
        Bool,
        "false",
        Logged(
            "no such switch (with rules files, Floodgate does not start without valid rules)",
            Unless::False,
        ),
    ),
    var(
        "REDIS_SOCKET_TYPE",
        Text,
        "unix",
        Setting(
            "`tcp`: TCP; `unix` (their default) is refused for a single Redis: Floodgate dials TCP only",
        ),
    ),
    var(
        "REDIS_TYPE",
        Text,
        "SINGLE",
        Setting(
            "`redis_mode` (`SINGLE`, `SENTINEL`: `master,host:port,...` gives `redis_sentinel_master`, `CLUSTER`: `host:port,...`)",
        ),
    ),
    var(
        "REDIS_URL",
        Text,
        "/var/run/nutcracker/ratelimit.sock",
        Setting(
            "`redis_url` (`host:port` becomes `redis://host:port`, `rediss://` with `REDIS_TLS`); unset: logged, counters live in memory",
        ),
    ),
    var("REDIS_POOL_SIZE", Int, "10", Logged(NO_POOL, Unless::Never)),
    var(
        "REDIS_AUTH",
        Secret,
        "empty",
        Setting("`redis_password`, or `redis_username` and `redis_password` from `user:password`"),
    ),
    var(
        "REDIS_TLS",
        Bool,
        "false",
        Setting("true: `rediss://` URLs"),
    ),
    var(
        "REDIS_TLS_CLIENT_CERT",
        Text,
        "empty",
        Setting("`redis_tls_cert_file` (with `REDIS_TLS` and `REDIS_TLS_CLIENT_KEY`)"),
    ),
    var(
        "REDIS_TLS_CLIENT_KEY",
        Text,
        "empty",
        Setting("`redis_tls_key_file` (with `REDIS_TLS` and `REDIS_TLS_CLIENT_CERT`)"),
    ),
    var(
        "REDIS_TLS_CACERT",
        Text,
        "empty",
        Setting("`redis_tls_ca_file` (with `REDIS_TLS`)"),
    ),
    var(
        "REDIS_TLS_SKIP_HOSTNAME_VERIFICATION",
        Bool,
        "false",
        Logged(
            "Floodgate always checks the Redis server's name",
            Unless::False,
        ),
    ),
    var(
        "REDIS_PIPELINE_WINDOW",
        Dur,
        "0",
        Logged(NO_POOL, Unless::Zero),
    ),
    var(
        "REDIS_PIPELINE_LIMIT",
        Int,
        "0",
        Logged(
            "deprecated, no effect in envoyproxy/ratelimit either",
            Unless::Zero,
        ),
    ),
    var(
        "REDIS_CLUSTER_PIPELINE_PARALLELISM",
        Int,
        "1",
        Logged(
            "Floodgate sends each hash slot's script at once",
            Unless::Never,
        ),
    ),
    var(
        "REDIS_PERSECOND",
        Bool,
        "false",
        Logged(NO_PER_SECOND_REDIS, Unless::False),
    ),
    var(
        "REDIS_PERSECOND_SOCKET_TYPE",
        Text,
        "unix",
        Logged(NO_PER_SECOND_REDIS, Unless::Never),
    ),
    var(
        "REDIS_PERSECOND_TYPE",
        Text,
        "SINGLE",
        Logged(NO_PER_SECOND_REDIS, Unless::Never),
    ),
    var(
        "REDIS_PERSECOND_URL",
        Text,
        "/var/run/nutcracker/ratelimitpersecond.sock",
        Logged(NO_PER_SECOND_REDIS, Unless::Never),
    ),
    var(
        "REDIS_PERSECOND_POOL_SIZE",
        Int,
        "10",
        Logged(NO_PER_SECOND_REDIS, Unless::Never),
    ),
    var(
        "REDIS_PERSECOND_AUTH",
        Secret,
        "empty",
        Logged(NO_PER_SECOND_REDIS, Unless::Never),
    ),
    var(
        "REDIS_PERSECOND_TLS",
        Bool,
        "false",
        Logged(NO_PER_SECOND_REDIS, Unless::Never),
    ),
    var(
        "REDIS_SENTINEL_AUTH",
        Secret,
        "empty",
        Setting("the sentinels' password, in each sentinel URL (with `REDIS_TYPE=SENTINEL`)"),
    ),
    var(
        "REDIS_PERSECOND_SENTINEL_AUTH",
        Secret,
        "empty",
        Logged(NO_PER_SECOND_REDIS, Unless::Never),
    ),
    var(
        "REDIS_PERSECOND_PIPELINE_WINDOW",
        Dur,
        "0",
        Logged(NO_PER_SECOND_REDIS, Unless::Never),
    ),
    var(
        "REDIS_PERSECOND_PIPELINE_LIMIT",
        Int,
        "0",
        Logged(NO_PER_SECOND_REDIS, Unless::Never),
    ),
    var(
        "REDIS_PERSECOND_CLUSTER_PIPELINE_PARALLELISM",
        Int,
        "1",
        Logged(NO_PER_SECOND_REDIS, Unless::Never),
    ),
    var(
        "REDIS_HEALTH_CHECK_ACTIVE_CONNECTION",
        Bool,
        "false",
        Logged(
            "health stays SERVING without Redis (answers follow `on_store_failure`); the `floodgate.store` health service reports Redis",
            Unless::False,
        ),
    ),
    var(
        "REDIS_TIMEOUT",
        Dur,
        "10s",
        Setting(
            "`redis_connect_timeout` and `redis_command_timeout` (0 is refused); unset: Floodgate's `2s` and `1s`",
        ),
    ),
    var(
        "REDIS_PERSECOND_TIMEOUT",
        Dur,
        "10s",
        Logged(NO_PER_SECOND_REDIS, Unless::Never),
    ),
    var(
        "REDIS_POOL_ON_EMPTY_BEHAVIOR",
        Text,
        "WAIT",
        Logged(NO_POOL, Unless::Is("WAIT")),
    ),
    var(
        "REDIS_PERSECOND_POOL_ON_EMPTY_BEHAVIOR",
        Text,
        "WAIT",
        Logged(NO_PER_SECOND_REDIS, Unless::Never),
    ),
    var(
        "REDIS_STARTUP_INITIAL_INTERVAL",
        Dur,
        "1s",
        Logged(REDIS_IN_BACKGROUND, Unless::Never),
    ),
    var(
        "REDIS_STARTUP_MAX_INTERVAL",
        Dur,
        "30s",
        Logged(REDIS_IN_BACKGROUND, Unless::Never),
    ),
    var(
        "REDIS_STARTUP_MAX_ELAPSED_TIME",
        Dur,
        "0",
        Logged(REDIS_IN_BACKGROUND, Unless::Zero),
    ),
    var(
        "MEMCACHE_HOST_PORT",
        List,
        "empty",
        Logged(NO_MEMCACHE, Unless::Never),
    ),
    var(
        "MEMCACHE_MAX_IDLE_CONNS",
        Int,
        "2",
        Logged(NO_MEMCACHE, Unless::Never),
    ),
    var(
        "MEMCACHE_SRV",
        Text,
        "empty",
        Logged(NO_MEMCACHE, Unless::Never),
    ),
    var(
        "MEMCACHE_SRV_REFRESH",
        Dur,
        "0",
        Logged(NO_MEMCACHE, Unless::Never),
    ),
    var(
        "MEMCACHE_TLS",
        Bool,
        "false",
        Logged(NO_MEMCACHE, Unless::Never),
    ),
    var(
        "MEMCACHE_TLS_CLIENT_CERT",
        Text,
        "empty",
        Logged(NO_MEMCACHE, Unless::Never),
    ),
    var(
        "MEMCACHE_TLS_CLIENT_KEY",
        Text,
        "empty",
        Logged(NO_MEMCACHE, Unless::Never),
    ),
    var(
        "MEMCACHE_TLS_CACERT",
        Text,
        "empty",
        Logged(NO_MEMCACHE, Unless::Never),
    ),
    var(
        "MEMCACHE_TLS_SKIP_HOSTNAME_VERIFICATION",
        Bool,
        "false",
        Logged(NO_MEMCACHE, Unless::Never),
    ),
    var("SHADOW_MODE", Bool, "false", Setting("`shadow_mode`")),
    var(
        "QUOTA_MODE",
        Bool,
        "false",
        Logged("no quota mode", Unless::False),
    ),
    var(
        "RESPONSE_DYNAMIC_METADATA",
        Bool,
        "false",
        Setting("`dynamic_metadata`"),
    ),
    var(
        "MERGE_DOMAIN_CONFIG",
        Bool,
        "false",
        Setting("`merge_domains`"),
    ),
    var(
        "TRACING_ENABLED",
        Bool,
        "false",
        Setting(
            "true: traces exported to `OTEL_EXPORTER_OTLP_ENDPOINT` (logged when that is unset: Floodgate exports only to a set endpoint)",
        ),
    ),
    var(
        "TRACING_SERVICE_NAME",
        Text,
        "RateLimit",
        Logged("set `OTEL_SERVICE_NAME` instead", Unless::Never),
    ),
    var(
        "TRACING_SERVICE_NAMESPACE",
        Text,
        "empty",
        Logged(
            "set `OTEL_RESOURCE_ATTRIBUTES=service.namespace=...` instead",
            Unless::Never,
        ),
    ),
    var(
        "TRACING_SERVICE_INSTANCE_ID",
        Text,
        "empty",
        Logged(
            "set `OTEL_RESOURCE_ATTRIBUTES=service.instance.id=...` instead",
            Unless::Never,
        ),
    ),
    var(
        "TRACING_EXPORTER_PROTOCOL",
        Text,
        "http",
        Logged(
            "Floodgate exports OTLP over gRPC only: point `OTEL_EXPORTER_OTLP_ENDPOINT` at the collector's gRPC port (4317)",
            Unless::Is("grpc"),
        ),
    ),
    var(
        "TRACING_SAMPLING_RATE",
        Float,
        "1",
        Setting("`trace_sampling_ratio` (clamped to 0..1, as theirs)"),
    ),
    var(
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        Text,
        "unset",
        Setting(
            "read as it is by Floodgate's OTLP exporter; logged when `TRACING_ENABLED` is not true: Floodgate exports whenever it is set",
        ),
    ),
];
