//! Server settings: read once at startup, validated once, passed down.
//!
//! Layers, later ones winning: built-in defaults, a YAML file (`--config`),
//! `FLOODGATE_*` environment variables (e.g. `FLOODGATE_REDIS_URL`), then
//! command-line flags. [`Settings`] is the raw, layered form; [`Config`] is
//! the validated form the server runs with. Every setting is listed with its
//! default in the README.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::grpc::{HeaderNames, ResponseOptions};
use crate::limiter::{LimiterOptions, RequestLimits};
use crate::metrics::MetricsSettings;
use crate::resilience::breaker::BreakerSettings;
use crate::resilience::retry::RetrySettings;
use crate::resilience::store::{FailurePolicy, ResilienceSettings};
use crate::store::redis::{RedisMode, RedisSettings, Secret, TlsFiles};
pub use crate::telemetry::LogFormat;
use crate::transport::ListenerLimits;

/// Prefix of the environment variables that set [`Settings`].
pub const ENV_PREFIX: &str = "FLOODGATE";

/// Settings as written by the operator, before validation.
#[derive(Clone, Deserialize)]
#[serde(default)]
/// (No `Debug`: it holds secrets as given, URLs with passwords included;
/// [`Config`]'s `Debug` redacts them.)
pub struct Settings {
    /// Rules directory (or file).
    pub rules: PathBuf,
    /// Let several files share a domain.
    pub merge_domains: bool,
    /// gRPC listen address.
    pub grpc_addr: String,
    /// HTTP listen address (`/healthcheck`, `/json`, `/rlconfig`).
    pub http_addr: String,
    /// Redis URL; absent means the in-memory store.
    pub redis_url: Option<String>,
    /// `single`, `sentinel` or `cluster`.
    pub redis_mode: String,
    /// Sentinel mode: the master's name in the sentinels' configuration.
    pub redis_sentinel_master: Option<String>,
    /// ACL user for the data nodes (overrides one in the URL).
    pub redis_username: Option<String>,
    /// Password for the data nodes (overrides one in the URL). Prefer
    /// `FLOODGATE_REDIS_PASSWORD` or `redis_password_file`; never logged.
    pub redis_password: Option<Secret>,
    /// A file holding the password (trailing newline ignored), e.g. a
    /// mounted Kubernetes secret.
    pub redis_password_file: Option<PathBuf>,
    /// CA certificate file (PEM) that signs the Redis server's certificate.
    pub redis_tls_ca_file: Option<PathBuf>,
    /// Client certificate (PEM), for Redis with `tls-auth-clients yes`.
    pub redis_tls_cert_file: Option<PathBuf>,
    /// The client certificate's key (PEM).
    pub redis_tls_key_file: Option<PathBuf>,
    /// Without the store: `fallback` (count in memory), `allow` or `deny`.
    pub on_store_failure: String,
    /// The longest a decision waits for the store, retries included.
    pub store_deadline: String,
    /// Failures in a row that open the circuit breaker.
    pub breaker_failure_threshold: u32,
    /// How long the breaker stays open before trial calls.
    pub breaker_reset_timeout: String,
    /// Trial successes in a row that close the breaker.
    pub breaker_success_threshold: u32,
    /// Attempts per store call, the first included.
    pub retry_max_attempts: u32,
    /// First retry wait bound.
    pub retry_initial_backoff: String,
    /// Largest retry wait bound.
    pub retry_max_backoff: String,
    /// Growth of the retry wait bound.
    pub retry_backoff_multiplier: f64,
    /// Random retry waits up to the bound.
    pub retry_use_jitter: bool,
    /// How often the store is pinged.
    pub health_check_interval: String,
    /// How long a ping may take.
    pub health_check_timeout: String,
    /// Bound of the in-memory fallback store.
    pub fallback_max_entries: usize,
    /// How often the fallback store drops ended windows.
    pub fallback_sweep_interval: String,
    /// Header marking degraded answers (empty: none).
    pub degraded_header: String,
    /// Bound of the local over-limit cache (0: off).
    pub over_limit_cache_entries: usize,
    /// Redis connect timeout.
    pub redis_connect_timeout: String,
    /// Redis command timeout.
    pub redis_command_timeout: String,
    /// Most checks one coalesced EVALSHA carries (1: every call on its own).
    pub redis_batch_max: usize,
    /// Prefix of every counter key.
    pub cache_key_prefix: String,
    /// Upper bound of the random extra TTL on Redis keys.
    pub expiration_jitter_max: String,
    /// Most counters the memory store holds.
    pub memory_max_entries: usize,
    /// How often the memory store drops ended windows.
    pub memory_sweep_interval: String,
    /// Most descriptors per request.
    pub max_descriptors: usize,
    /// Most entries per descriptor.
    pub max_entries: usize,
    /// Longest domain, key or value in bytes.
    pub max_value_bytes: usize,
    /// Calls decided at once; more are shed with RESOURCE_EXHAUSTED.
    pub max_in_flight: usize,
    /// Answer every request OK, whatever the statuses say.
    pub shadow_mode: bool,
    /// When one limit of a request rejects, the others take nothing.
    pub stop_increment_when_over_limit: bool,
    /// Add `RateLimit-*` headers to responses.
    pub response_headers: bool,
    /// Name of the limit header.
    pub limit_header: String,
    /// Name of the remaining header.
    pub remaining_header: String,
    /// Name of the reset header.
    pub reset_header: String,
    /// Fill `dynamic_metadata` in responses.
    pub dynamic_metadata: bool,
    /// How long shutdown waits for calls in flight.
    pub shutdown_grace: String,
    /// How long to keep serving after health turns NOT_SERVING.
    pub shutdown_delay: String,
    /// `text` or `json`.
    pub log_format: String,
    /// Test knob: shift this server's clock by this many milliseconds (to
    /// show instances with skewed clocks agree). Keep it 0 in production.
    pub clock_offset_ms: i64,
    /// A tracing filter, e.g. `info` or `floodgate_server=debug`.
    pub log_level: String,
    /// `near_limit` counts hits above `floor(limit × ratio)` (the
    /// reference's `NEAR_LIMIT_RATIO`).
    pub near_limit_ratio: f64,
    /// Rule series per domain in `/metrics` before `__overflow__`.
    pub metrics_max_series_per_domain: usize,
    /// How often the rules directory is checked for changes (`0s`: never;
    /// `SIGHUP` still reloads).
    pub rules_reload_interval: String,
    /// Admin listener (counter state and reset), loopback by default; empty
    /// turns it off.
    pub admin_addr: String,
    /// Bearer token the admin endpoints require (empty: none).
    pub admin_token: String,
    /// Share of traces sampled when exporting over OTLP (0 to 1; a caller's
    /// sampled trace context is always followed).
    pub trace_sampling_ratio: f64,
    /// Connections each listener (gRPC, HTTP, admin) holds at once.
    pub max_connections: usize,
    /// HTTP/2 streams one connection may have open at once.
    pub max_concurrent_streams: u32,
    /// Largest request header block, in bytes.
    pub max_header_list_bytes: u32,
    /// A new connection's first request, and an HTTP/1.1 request's
    /// headers, must arrive within this.
    pub header_read_timeout: String,
    /// A request must be read and answered within this.
    pub request_timeout: String,
    /// A connection with no request in flight for this long is closed.
    pub idle_timeout: String,
    /// Each listener's accept queue (capped by `net.core.somaxconn`).
    pub listen_backlog: u32,
}

impl Default for Settings {
    fn default() -> Self {
        let headers = HeaderNames::default();
        let limits = RequestLimits::default();
        Settings {
            rules: PathBuf::from("/etc/floodgate/rules"),
            merge_domains: false,
            grpc_addr: "0.0.0.0:8081".into(),
            http_addr: "0.0.0.0:8080".into(),
            redis_url: None,
            redis_mode: "single".into(),
            redis_sentinel_master: None,
            redis_username: None,
            redis_password: None,
            redis_password_file: None,
            redis_tls_ca_file: None,
            redis_tls_cert_file: None,
            redis_tls_key_file: None,
            on_store_failure: "fallback".into(),
            store_deadline: "50ms".into(),
            breaker_failure_threshold: 3,
            breaker_reset_timeout: "10s".into(),
            breaker_success_threshold: 2,
            retry_max_attempts: 3,
            retry_initial_backoff: "100ms".into(),
            retry_max_backoff: "1s".into(),
            retry_backoff_multiplier: 2.0,
            retry_use_jitter: true,
            health_check_interval: "5s".into(),
            health_check_timeout: "500ms".into(),
            fallback_max_entries: 10_000,
            fallback_sweep_interval: "60s".into(),
            degraded_header: "x-floodgate-degraded".into(),
            over_limit_cache_entries: ResilienceSettings::default().over_limit_cache_entries,
            redis_connect_timeout: "2s".into(),
            redis_command_timeout: "1s".into(),
            cache_key_prefix: String::new(),
            expiration_jitter_max: "300s".into(),
            redis_batch_max: 64,
            memory_max_entries: 1_000_000,
            memory_sweep_interval: "10s".into(),
            max_descriptors: limits.max_descriptors,
            max_entries: limits.max_entries,
            max_value_bytes: limits.max_value_bytes,
            max_in_flight: crate::grpc::DEFAULT_MAX_IN_FLIGHT,
            shadow_mode: false,
            stop_increment_when_over_limit: false,
            response_headers: false,
            limit_header: headers.limit,
            remaining_header: headers.remaining,
            reset_header: headers.reset,
            dynamic_metadata: false,
            shutdown_grace: "10s".into(),
            shutdown_delay: "0s".into(),
            log_format: "text".into(),
            clock_offset_ms: 0,
            log_level: "info".into(),
            near_limit_ratio: 0.8,
            metrics_max_series_per_domain: 1_000,
            rules_reload_interval: "500ms".into(),
            admin_addr: "127.0.0.1:6070".into(),
            admin_token: String::new(),
            trace_sampling_ratio: 1.0,
            max_connections: 4_096,
            max_concurrent_streams: 1_024,
            max_header_list_bytes: 16_384,
            header_read_timeout: "5s".into(),
            request_timeout: "2s".into(),
            idle_timeout: "60s".into(),
            listen_backlog: 1_024,
        }
    }
}

/// A setting that does not make sense.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The layers could not be read or combined.
    #[error("cannot read settings: {0}")]
    Read(#[from] config::ConfigError),
    /// One setting is invalid.
    #[error("invalid setting {name} = {value:?}: {reason}")]
    Invalid {
        /// The setting's name.
        name: &'static str,
        /// What was given.
        value: String,
        /// What is wrong.
        reason: String,
    },
    /// A setting that applies only to Redis, given without `redis_url`:
    /// it would be ignored, silently.
    #[error(
        "{0} is set but redis_url is not: it applies only to Redis (without redis_url, counters live in memory)"
    )]
    WithoutRedis(&'static str),
}

/// Validated settings.
#[derive(Clone, Debug)]
pub struct Config {
    /// Rules directory (or file).
    pub rules: PathBuf,
    /// Let several files share a domain.
    pub merge_domains: bool,
    /// gRPC listen address.
    pub grpc_addr: SocketAddr,
    /// HTTP listen address.
    pub http_addr: SocketAddr,
    /// Redis, if configured; otherwise the memory store.
    pub redis: Option<RedisSettings>,
    /// Deadline, retries, breaker, health check and failure policy around Redis.
    pub resilience: ResilienceSettings,
    /// Calls decided at once; more are shed.
    pub max_in_flight: usize,
    /// Prefix of every counter key.
    pub cache_key_prefix: String,
    /// Most counters the memory store holds.
    pub memory_max_entries: usize,
    /// How often the memory store drops ended windows.
    pub memory_sweep_interval: Duration,
    /// Request bounds.
    pub limits: RequestLimits,
    /// Decision options.
    pub limiter: LimiterOptions,
    /// Response options.
    pub response: ResponseOptions,
    /// How long shutdown waits for calls in flight.
    pub shutdown_grace: Duration,
    /// How long to keep serving after health turns NOT_SERVING, so load
    /// balancers stop sending before the listeners close.
    pub shutdown_delay: Duration,
    /// Log format.
    pub log_format: LogFormat,
    /// Test knob: the server's clock runs this many milliseconds off.
    pub clock_offset_ms: i64,
    /// Log filter.
    pub log_level: String,
    /// `/metrics` settings.
    pub metrics: MetricsSettings,
    /// How often the rules are checked for changes; `None`: only on SIGHUP.
    pub rules_reload_interval: Option<Duration>,
    /// The admin listener's address; `None`: no admin listener.
    pub admin_addr: Option<SocketAddr>,
    /// The bearer token admin calls must carry, if any.
    pub admin_token: Option<Secret>,
    /// Share of new traces sampled (OTLP export).
    pub trace_sampling_ratio: f64,
    /// Connection, stream and timeout limits of every listener.
    pub listeners: ListenerLimits,
}

impl Default for Config {
    fn default() -> Self {
        // The built-in defaults are valid by construction (a unit test checks it).
        Config::try_from(Settings::default())
            .unwrap_or_else(|e| unreachable!("default settings are valid: {e}"))
    }
}

impl Settings {
    /// Layers defaults, the optional YAML `file`, `FLOODGATE_*` variables from
    /// `env`, and `overrides` (flag name → value).
    pub fn load(
        file: Option<&std::path::Path>,
        env: impl IntoIterator<Item = (String, String)>,
        overrides: &[(&str, Option<String>)],
    ) -> Result<Settings, ConfigError> {
        let mut builder = config::Config::builder();
        if let Some(file) = file {
            builder = builder.add_source(
                config::File::from(file)
                    .format(config::FileFormat::Yaml)
                    .required(true),
            );
        }
        let env: std::collections::HashMap<String, String> = env.into_iter().collect();
        builder = builder.add_source(
            config::Environment::with_prefix(ENV_PREFIX)
                .try_parsing(false)
                .source(Some(env)),
        );
        for (name, value) in overrides {
            builder = builder.set_override_option(*name, value.clone())?;
        }
        Ok(builder.build()?.try_deserialize()?)
    }
}

impl TryFrom<Settings> for Config {
    type Error = ConfigError;

    fn try_from(s: Settings) -> Result<Self, ConfigError> {
        let redis = redis_settings(&s)?;
        let resilience = resilience_settings(&s)?;
        if redis.as_ref().is_some_and(|r| r.mode == RedisMode::Cluster)
            && s.cache_key_prefix.contains(['{', '}'])
        {
            return Err(invalid(
                "cache_key_prefix",
                &s.cache_key_prefix,
                "must not contain { or } with Redis Cluster: a hash tag there would put every key on one shard",
            ));
        }
        let log_format = match s.log_format.to_ascii_lowercase().as_str() {
            "text" => LogFormat::Text,
            "json" => LogFormat::Json,
            _ => return Err(invalid("log_format", &s.log_format, "must be text or json")),
        };
        for (name, value) in [
            ("limit_header", &s.limit_header),
            ("remaining_header", &s.remaining_header),
            ("reset_header", &s.reset_header),
        ] {
            if http::HeaderName::from_bytes(value.as_bytes()).is_err() {
                return Err(invalid(name, value, "is not a valid HTTP header name"));
            }
        }
        let sweep = nonzero("memory_sweep_interval", &s.memory_sweep_interval)?;
        let listeners = listener_limits(&s)?;
        Ok(Config {
            rules: s.rules,
            merge_domains: s.merge_domains,
            grpc_addr: address("grpc_addr", &s.grpc_addr)?,
            http_addr: address("http_addr", &s.http_addr)?,
            redis,
            cache_key_prefix: s.cache_key_prefix,
            memory_max_entries: positive("memory_max_entries", s.memory_max_entries)?,
            memory_sweep_interval: sweep,
            limits: RequestLimits {
                max_descriptors: positive("max_descriptors", s.max_descriptors)?,
                max_entries: positive("max_entries", s.max_entries)?,
                max_value_bytes: positive("max_value_bytes", s.max_value_bytes)?,
            },
            limiter: LimiterOptions {
                global_shadow_mode: s.shadow_mode,
                stop_increment_when_over_limit: s.stop_increment_when_over_limit,
            },

            response: ResponseOptions {
                headers: s.response_headers.then_some(HeaderNames {
                    limit: s.limit_header,
                    remaining: s.remaining_header,
                    reset: s.reset_header,
                }),
                dynamic_metadata: s.dynamic_metadata,
                degraded_header: degraded_header(&s.degraded_header)?,
            },
            resilience,
            max_in_flight: positive("max_in_flight", s.max_in_flight)?,
            shutdown_grace: duration("shutdown_grace", &s.shutdown_grace)?,
            shutdown_delay: duration("shutdown_delay", &s.shutdown_delay)?,
            log_format,
            log_level: s.log_level,
            clock_offset_ms: s.clock_offset_ms,
            metrics: MetricsSettings {
                near_limit_ratio: ratio("near_limit_ratio", s.near_limit_ratio)?,
                max_series_per_domain: positive(
                    "metrics_max_series_per_domain",
                    s.metrics_max_series_per_domain,
                )?,
            },
            rules_reload_interval: Some(duration(
                "rules_reload_interval",
                &s.rules_reload_interval,
            )?)
            .filter(|d| !d.is_zero()),
            admin_addr: admin_addr(&s.admin_addr, &s.admin_token)?,
            admin_token: (!s.admin_token.is_empty()).then(|| Secret::new(s.admin_token)),
            trace_sampling_ratio: ratio("trace_sampling_ratio", s.trace_sampling_ratio)?,
            listeners,
        })
    }
}

/// The listeners' limits; every one must be at least 1.
fn listener_limits(s: &Settings) -> Result<ListenerLimits, ConfigError> {
    let count = |name, value: u32| positive(name, value as usize).map(|_| value);
    Ok(ListenerLimits {
        max_connections: positive("max_connections", s.max_connections)?,
        max_concurrent_streams: count("max_concurrent_streams", s.max_concurrent_streams)?,
        max_header_list_bytes: count("max_header_list_bytes", s.max_header_list_bytes)?,
        header_read_timeout: nonzero("header_read_timeout", &s.header_read_timeout)?,
        request_timeout: nonzero("request_timeout", &s.request_timeout)?,
        idle_timeout: nonzero("idle_timeout", &s.idle_timeout)?,
        listen_backlog: count("listen_backlog", s.listen_backlog)?,
    })
}

/// The admin listener's address. Anyone who reaches it can reset
/// counters, so off loopback it needs a token.
fn admin_addr(addr: &str, token: &str) -> Result<Option<SocketAddr>, ConfigError> {
    if addr.is_empty() {
        return Ok(None);
    }
    let parsed = address("admin_addr", addr)?;
    if !parsed.ip().is_loopback() && token.is_empty() {
        return Err(invalid(
            "admin_addr",
            addr,
            "is not a loopback address: set admin_token too, or anyone who reaches it can reset counters",
        ));
    }
    Ok(Some(parsed))
}

/// A ratio setting: between 0 and 1.
fn ratio(name: &'static str, v: f64) -> Result<f64, ConfigError> {
    if (0.0..=1.0).contains(&v) {
        Ok(v)
    } else {
        Err(invalid(name, &v.to_string(), "must be between 0 and 1"))
    }
}

/// The degraded-answer header name, if any.
fn degraded_header(name: &str) -> Result<Option<String>, ConfigError> {
    if name.is_empty() {
        return Ok(None);
    }
    if http::HeaderName::from_bytes(name.as_bytes()).is_err() {
        return Err(invalid(
            "degraded_header",
            name,
            "is not a valid HTTP header name",
        ));
    }
    Ok(Some(name.to_ascii_lowercase()))
}

/// Deadline, retries, breaker, health check and failure policy.
fn resilience_settings(s: &Settings) -> Result<ResilienceSettings, ConfigError> {
    let at_least_1 = |name: &'static str, v: u32| {
        if v == 0 {
            Err(invalid(name, "0", "must be at least 1"))
        } else {
            Ok(v)
        }
    };
    if !(s.retry_backoff_multiplier >= 1.0 && s.retry_backoff_multiplier <= 100.0) {
        return Err(invalid(
            "retry_backoff_multiplier",
            &s.retry_backoff_multiplier.to_string(),
            "must be between 1 and 100",
        ));
    }
    let initial = duration("retry_initial_backoff", &s.retry_initial_backoff)?;
    let max_backoff = duration("retry_max_backoff", &s.retry_max_backoff)?;
    if max_backoff < initial {
        return Err(invalid(
            "retry_max_backoff",
            &s.retry_max_backoff,
            "must not be below retry_initial_backoff",
        ));
    }
    let interval = nonzero("health_check_interval", &s.health_check_interval)?;
    let check_timeout = nonzero("health_check_timeout", &s.health_check_timeout)?;
    if check_timeout > interval {
        return Err(invalid(
            "health_check_timeout",
            &s.health_check_timeout,
            "must not exceed health_check_interval",
        ));
    }
    Ok(ResilienceSettings {
        on_failure: FailurePolicy::parse(&s.on_store_failure).ok_or_else(|| {
            invalid(
                "on_store_failure",
                &s.on_store_failure,
                "must be fallback, allow or deny",
            )
        })?,
        store_deadline: nonzero("store_deadline", &s.store_deadline)?,
        breaker: BreakerSettings {
            failure_threshold: at_least_1(
                "breaker_failure_threshold",
                s.breaker_failure_threshold,
            )?,
            reset_timeout: nonzero("breaker_reset_timeout", &s.breaker_reset_timeout)?,
            success_threshold: at_least_1(
                "breaker_success_threshold",
                s.breaker_success_threshold,
            )?,
        },
        retry: RetrySettings {
            max_attempts: at_least_1("retry_max_attempts", s.retry_max_attempts)?,
            initial_backoff: initial,
            max_backoff,
            backoff_multiplier: s.retry_backoff_multiplier,
            use_jitter: s.retry_use_jitter,
        },
        check_interval: interval,
        check_timeout,
        fallback_max_entries: if s.fallback_max_entries == 0 {
            return Err(invalid("fallback_max_entries", "0", "must be at least 1"));
        } else {
            s.fallback_max_entries
        },
        fallback_sweep_interval: nonzero("fallback_sweep_interval", &s.fallback_sweep_interval)?,
        over_limit_cache_entries: s.over_limit_cache_entries,
    })
}

/// The Redis settings, if a URL is set.
fn redis_settings(s: &Settings) -> Result<Option<RedisSettings>, ConfigError> {
    let mode = RedisMode::parse(&s.redis_mode).ok_or_else(|| {
        invalid(
            "redis_mode",
            &s.redis_mode,
            "must be single, sentinel or cluster",
        )
    })?;
    let Some(url) = s.redis_url.as_deref().filter(|u| !u.trim().is_empty()) else {
        return match redis_only_setting(s, mode) {
            Some(name) => Err(ConfigError::WithoutRedis(name)),
            None => Ok(None),
        };
    };
    let urls: Vec<String> = url
        .split(',')
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .map(str::to_owned)
        .collect();
    let shown = || urls.len().to_string();
    if let Some(bad) = urls
        .iter()
        .find(|u| !(u.starts_with("redis://") || u.starts_with("rediss://")))
    {
        return Err(invalid(
            "redis_url",
            bad.split('@').next_back().unwrap_or_default(),
            "each URL must start with redis:// or rediss:// (TLS)",
        ));
    }
    if mode == RedisMode::Single && urls.len() != 1 {
        return Err(invalid(
            "redis_url",
            &shown(),
            "single mode takes one URL; use redis_mode cluster or sentinel for several",
        ));
    }
    let sentinel_master = s.redis_sentinel_master.clone().filter(|m| !m.is_empty());
    if mode == RedisMode::Sentinel && sentinel_master.is_none() {
        return Err(invalid(
            "redis_sentinel_master",
            "",
            "sentinel mode needs the master's name (--redis-sentinel-master)",
        ));
    }
    let password = match (&s.redis_password, &s.redis_password_file) {
        (Some(_), Some(file)) => {
            return Err(invalid(
                "redis_password_file",
                &file.display().to_string(),
                "set redis_password or redis_password_file, not both",
            ));
        }
        (Some(password), None) => Some(password.clone()),
        (None, Some(file)) => {
            let text = std::fs::read_to_string(file).map_err(|e| {
                invalid(
                    "redis_password_file",
                    &file.display().to_string(),
                    &e.to_string(),
                )
            })?;
            Some(Secret::new(text.trim_end_matches(['\r', '\n'])))
        }
        (None, None) => None,
    };
    let tls = TlsFiles {
        ca: s.redis_tls_ca_file.clone(),
        cert: s.redis_tls_cert_file.clone(),
        key: s.redis_tls_key_file.clone(),
    };
    if tls.cert.is_some() != tls.key.is_some() {
        return Err(invalid(
            "redis_tls_cert_file",
            "",
            "redis_tls_cert_file and redis_tls_key_file go together",
        ));
    }
    for (name, path) in [
        ("redis_tls_ca_file", &tls.ca),
        ("redis_tls_cert_file", &tls.cert),
        ("redis_tls_key_file", &tls.key),
    ] {
        if let Some(path) = path
            && !path.is_file()
        {
            return Err(invalid(name, &path.display().to_string(), "no such file"));
        }
    }
    Ok(Some(RedisSettings {
        mode,
        urls,
        sentinel_master,
        username: s.redis_username.clone().filter(|u| !u.is_empty()),
        password,
        tls,
        connect_timeout: nonzero("redis_connect_timeout", &s.redis_connect_timeout)?,
        command_timeout: nonzero("redis_command_timeout", &s.redis_command_timeout)?,
        expiration_jitter_max: duration("expiration_jitter_max", &s.expiration_jitter_max)?,
        batch_max: positive("redis_batch_max", s.redis_batch_max)?,
    }))
}

/// The first setting that applies only to Redis and is given (not empty,
/// not its default), if any.
fn redis_only_setting(s: &Settings, mode: RedisMode) -> Option<&'static str> {
    let d = Settings::default();
    let text = |v: &Option<String>| v.as_deref().is_some_and(|v| !v.is_empty());
    let file = |v: &Option<PathBuf>| v.as_ref().is_some_and(|p| !p.as_os_str().is_empty());
    [
        ("redis_mode", mode != RedisMode::Single),
        ("redis_sentinel_master", text(&s.redis_sentinel_master)),
        ("redis_username", text(&s.redis_username)),
        (
            "redis_password",
            s.redis_password
                .as_ref()
                .is_some_and(|p| !p.expose().is_empty()),
        ),
        ("redis_password_file", file(&s.redis_password_file)),
        ("redis_tls_ca_file", file(&s.redis_tls_ca_file)),
        ("redis_tls_cert_file", file(&s.redis_tls_cert_file)),
        ("redis_tls_key_file", file(&s.redis_tls_key_file)),
        (
            "redis_connect_timeout",
            s.redis_connect_timeout != d.redis_connect_timeout,
        ),
        (
            "redis_command_timeout",
            s.redis_command_timeout != d.redis_command_timeout,
        ),
        ("redis_batch_max", s.redis_batch_max != d.redis_batch_max),
        (
            "expiration_jitter_max",
            s.expiration_jitter_max != d.expiration_jitter_max,
        ),
    ]
    .into_iter()
    .find_map(|(name, given)| given.then_some(name))
}

/// A count that must be at least 1.
fn positive(name: &'static str, value: usize) -> Result<usize, ConfigError> {
    if value == 0 {
        Err(invalid(name, "0", "must be at least 1"))
    } else {
        Ok(value)
    }
}

fn invalid(name: &'static str, value: &str, reason: &str) -> ConfigError {
    ConfigError::Invalid {
        name,
        value: value.to_owned(),
        reason: reason.to_owned(),
    }
}

fn address(name: &'static str, value: &str) -> Result<SocketAddr, ConfigError> {
    value
        .parse()
        .map_err(|_| invalid(name, value, "expected host:port, e.g. 0.0.0.0:8081"))
}

/// Parses `250ms`, `10s`, `5m`, `1h` (a bare number is seconds).
pub fn duration(name: &'static str, value: &str) -> Result<Duration, ConfigError> {
    let v = value.trim();
    let split = v.find(|c: char| !c.is_ascii_digit()).unwrap_or(v.len());
    let (digits, unit) = v.split_at(split);
    let bad = || {
        invalid(
            name,
            value,
            "expected a duration such as 250ms, 10s, 5m or 1h",
        )
    };
    let n: u64 = digits.parse().map_err(|_| bad())?;
    let seconds = |factor: u64| {
        n.checked_mul(factor)
            .map(Duration::from_secs)
            .ok_or_else(bad)
    };
    match unit {
        "ms" => Ok(Duration::from_millis(n)),
        "" | "s" => seconds(1),
        "m" => seconds(60),
        "h" => seconds(3_600),
        _ => Err(bad()),
    }
}

/// A duration that must be more than zero.
fn nonzero(name: &'static str, value: &str) -> Result<Duration, ConfigError> {
    match duration(name, value)? {
        d if d.is_zero() => Err(invalid(name, value, "must be more than 0")),
        d => Ok(d),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        let c = Config::try_from(Settings::default()).unwrap();
        assert_eq!(c.grpc_addr.port(), 8081);
        assert_eq!(c.http_addr.port(), 8080);
        assert!(c.redis.is_none());
        assert_eq!(c.listeners, ListenerLimits::default());
        let s = Settings {
            max_concurrent_streams: 0,
            ..Settings::default()
        };
        let e = Config::try_from(s).unwrap_err().to_string();
        assert!(e.contains("max_concurrent_streams"), "{e}");
    }

    #[test]
    fn durations() {
        assert_eq!(duration("x", "250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(duration("x", "10s").unwrap(), Duration::from_secs(10));
        assert_eq!(duration("x", "10").unwrap(), Duration::from_secs(10));
        assert_eq!(duration("x", "2m").unwrap(), Duration::from_secs(120));
        assert!(duration("x", "ten").is_err());
        assert!(duration("x", "1y").is_err());
        assert!(
            duration("x", "18446744073709551615h").is_err(),
            "overflow is an error, not a panic"
        );
        let zero = Settings {
            redis_url: Some("redis://x".into()),
            redis_command_timeout: "0s".into(),
            ..Settings::default()
        };
        assert!(
            Config::try_from(zero)
                .unwrap_err()
                .to_string()
                .contains("must be more than 0")
        );
    }

    #[test]
    fn env_overrides_file_and_flags_override_env() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("floodgate.yaml");
        std::fs::write(
            &file,
            "grpc_addr: 127.0.0.1:1000\nhttp_addr: 127.0.0.1:2000\ncache_key_prefix: file\n",
        )
        .unwrap();
        let env = [
            (
                "FLOODGATE_HTTP_ADDR".to_owned(),
                "127.0.0.1:3000".to_owned(),
            ),
            ("FLOODGATE_CACHE_KEY_PREFIX".to_owned(), "env".to_owned()),
            ("FLOODGATE_RESPONSE_HEADERS".to_owned(), "true".to_owned()),
            ("UNRELATED".to_owned(), "x".to_owned()),
        ];
        let s = Settings::load(
            Some(&file),
            env,
            &[("cache_key_prefix", Some("flag".into())), ("rules", None)],
        )
        .unwrap();
        let c = Config::try_from(s).unwrap();
        assert_eq!(c.grpc_addr.to_string(), "127.0.0.1:1000");
        assert_eq!(c.http_addr.to_string(), "127.0.0.1:3000");
        assert_eq!(c.cache_key_prefix, "flag");
        assert_eq!(c.response.headers, Some(HeaderNames::default()));
    }

    #[test]
    fn invalid_values_name_the_setting() {
        let s = Settings {
            grpc_addr: "nowhere".into(),
            ..Settings::default()
        };
        let e = Config::try_from(s).unwrap_err().to_string();
        assert!(e.contains("grpc_addr") && e.contains("nowhere"), "{e}");
        let s = Settings {
            log_format: "xml".into(),
            ..Settings::default()
        };
        assert!(
            Config::try_from(s)
                .unwrap_err()
                .to_string()
                .contains("log_format")
        );
    }

    fn redis(url: &str, extra: impl FnOnce(&mut Settings)) -> Result<Config, ConfigError> {
        let mut s = Settings {
            redis_url: Some(url.into()),
            ..Settings::default()
        };
        extra(&mut s);
        Config::try_from(s)
    }

    fn error(r: Result<Config, ConfigError>) -> String {
        r.unwrap_err().to_string()
    }

    #[test]
    fn redis_modes_are_validated_once() {
        let c = redis("redis://a:1,redis://b:2", |s| {
            s.redis_mode = "cluster".into()
        })
        .unwrap();
        let r = c.redis.unwrap();
        assert_eq!(r.mode, RedisMode::Cluster);
        assert_eq!(r.urls, vec!["redis://a:1", "redis://b:2"]);

        let e = error(redis("redis://a:1,redis://b:2", |_| {}));
        assert!(e.contains("single mode takes one URL"), "{e}");
        let e = error(redis("redis://a:1", |s| s.redis_mode = "proxy".into()));
        assert!(e.contains("single, sentinel or cluster"), "{e}");
        let e = error(redis("redis://a:26379", |s| {
            s.redis_mode = "sentinel".into()
        }));
        assert!(e.contains("redis_sentinel_master"), "{e}");
        let e = error(redis("http://a:1", |_| {}));
        assert!(e.contains("redis:// or rediss://"), "{e}");
        let e = error(redis("redis://a:1", |s| {
            s.redis_mode = "cluster".into();
            s.cache_key_prefix = "{fg}:".into();
        }));
        assert!(e.contains("one shard"), "{e}");
    }

    #[test]
    fn redis_password_from_a_file_or_the_setting_never_both() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("password");
        std::fs::write(&file, "from-file\n").unwrap();
        let c = redis("redis://a:1", |s| {
            s.redis_password_file = Some(file.clone())
        })
        .unwrap();
        assert_eq!(c.redis.unwrap().password.unwrap().expose(), "from-file");
        let e = error(redis("redis://a:1", |s| {
            s.redis_password_file = Some(file.clone());
            s.redis_password = Some(Secret::new("x"));
        }));
        assert!(e.contains("not both"), "{e}");
        let e = error(redis("redis://a:1", |s| {
            s.redis_password_file = Some(dir.path().join("missing"));
        }));
        assert!(e.contains("redis_password_file"), "{e}");
        let e = error(redis("rediss://a:1", |s| {
            s.redis_tls_cert_file = Some(file.clone());
        }));
        assert!(e.contains("go together"), "{e}");
        let e = error(redis("rediss://a:1", |s| {
            s.redis_tls_ca_file = Some(dir.path().join("no-ca.pem"));
        }));
        assert!(
            e.contains("redis_tls_ca_file") && e.contains("no such file"),
            "{e}"
        );
    }

    #[test]
    fn the_password_comes_from_the_environment_and_is_never_printed() {
        let env = [("FLOODGATE_REDIS_PASSWORD".to_owned(), "hunter2".to_owned())];
        let url = Some("redis://u:url-pw@a:1".into());
        let s = Settings::load(None, env, &[("redis_url", url)]).unwrap();
        let c = Config::try_from(s).unwrap();
        assert!(!format!("{c:?}").contains("hunter2"));
        assert!(!format!("{c:?}").contains("url-pw"));
        assert_eq!(c.redis.unwrap().password.unwrap().expose(), "hunter2");
        // A numeric password stays a string (env values are not parsed
        // as numbers first); numeric settings still read from text.
        let env = [
            ("FLOODGATE_REDIS_PASSWORD".to_owned(), "0123".to_owned()),
            ("FLOODGATE_MAX_DESCRIPTORS".to_owned(), "7".to_owned()),
            ("FLOODGATE_CLOCK_OFFSET_MS".to_owned(), "-5".to_owned()),
            ("FLOODGATE_SHADOW_MODE".to_owned(), "true".to_owned()),
        ];
        let s = Settings::load(None, env, &[("redis_url", Some("redis://a:1".into()))]).unwrap();
        let c = Config::try_from(s).unwrap();
        assert_eq!(c.limits.max_descriptors, 7);
        assert_eq!(c.clock_offset_ms, -5);
        assert!(c.limiter.global_shadow_mode);
        assert_eq!(c.redis.unwrap().password.unwrap().expose(), "0123");
    }

    #[test]
    fn an_admin_listener_off_loopback_needs_a_token() {
        let open = Settings {
            admin_addr: "0.0.0.0:6070".into(),
            ..Settings::default()
        };
        let err = Config::try_from(open.clone()).err().unwrap().to_string();
        assert!(
            err.contains("admin_addr") && err.contains("admin_token"),
            "{err}"
        );
        let guarded = Settings {
            admin_token: "t".into(),
            ..open
        };
        assert!(Config::try_from(guarded).is_ok());
        let off = Settings {
            admin_addr: String::new(),
            ..Settings::default()
        };
        assert!(Config::try_from(off).unwrap().admin_addr.is_none());
    }

    #[test]
    fn redis_mode_is_validated_without_a_url() {
        let s = Settings {
            redis_mode: "bogus".into(),
            ..Settings::default()
        };
        let e = error(Config::try_from(s));
        assert_eq!(
            e,
            "invalid setting redis_mode = \"bogus\": must be single, sentinel or cluster"
        );
    }

    #[test]
    fn redis_settings_without_a_redis_url_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f.pem");
        std::fs::write(&file, "x").unwrap();
        type Set = fn(&mut Settings, &std::path::Path);
        let cases: [(&str, Set); 12] = [
            ("redis_mode", |s, _| s.redis_mode = "sentinel".into()),
            ("redis_sentinel_master", |s, _| {
                s.redis_sentinel_master = Some("mymaster".into())
            }),
            ("redis_username", |s, _| s.redis_username = Some("u".into())),
            ("redis_password", |s, _| {
                s.redis_password = Some(Secret::new("hunter2"))
            }),
            ("redis_password_file", |s, f| {
                s.redis_password_file = Some(f.into())
            }),
            ("redis_tls_ca_file", |s, f| {
                s.redis_tls_ca_file = Some(f.into())
            }),
            ("redis_tls_cert_file", |s, f| {
                s.redis_tls_cert_file = Some(f.into())
            }),
            ("redis_tls_key_file", |s, f| {
                s.redis_tls_key_file = Some(f.into())
            }),
            ("redis_connect_timeout", |s, _| {
                s.redis_connect_timeout = "5s".into()
            }),
            ("redis_command_timeout", |s, _| {
                s.redis_command_timeout = "5s".into()
            }),
            ("redis_batch_max", |s, _| s.redis_batch_max = 1),
            ("expiration_jitter_max", |s, _| {
                s.expiration_jitter_max = "0s".into()
            }),
        ];
        for (name, set) in cases {
            for url in [None, Some(String::new())] {
                let mut s = Settings {
                    redis_url: url,
                    ..Settings::default()
                };
                set(&mut s, &file);
                let e = error(Config::try_from(s));
                assert_eq!(
                    e,
                    format!(
                        "{name} is set but redis_url is not: it applies only to Redis (without redis_url, counters live in memory)"
                    )
                );
                assert!(!e.contains("hunter2"));
            }
        }
        // The defaults, given explicitly, are not a mistake.
        let s = Settings::load(None, [], &[("redis_mode", Some("single".into()))]).unwrap();
        assert!(Config::try_from(s).unwrap().redis.is_none());
    }
}
