//! Server settings: read once at startup, validated once, passed down.
//!
//! Layers, later ones winning: built-in defaults, a YAML file (`--config`),
//! `FLOODGATE_*` environment variables (e.g. `FLOODGATE_REDIS_URL`), then
//! command-line flags. [`Settings`] is the layered form, typed where it is
//! read ([`value`]: durations, counts of at least 1, modes, policies);
//! [`Config`] is the validated form the server runs with (addresses, header
//! names, settings that depend on each other, the Redis topology), built
//! once and passed down. Every default comes from the part of the server
//! that reads the setting; the README lists each with its default, and a
//! test keeps the two in step.

pub mod compat;
pub mod value;

use std::net::SocketAddr;
use std::num::{NonZeroU32, NonZeroUsize};
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use self::value::{HumanDuration, NonZeroDuration};

use crate::grpc::{HeaderNames, ResponseOptions};
use crate::limiter::{LimiterOptions, RequestLimits};
use crate::metrics::MetricsSettings;
use crate::resilience::breaker::BreakerSettings;
use crate::resilience::retry::RetrySettings;
use crate::resilience::store::{FailurePolicy, ResilienceSettings};
use crate::store::redis::settings as redis_defaults;
use crate::store::redis::{
    ClientCertificate, RedisMode, RedisSettings, RedisTopology, Secret, TlsFiles,
};
pub use crate::telemetry::LogFormat;
use crate::tls::TlsSettings;
use crate::tls::client::{ALPN_H2, ClientTls, ClientTlsError, TlsFlags, host_of};
use crate::tls::files::{self as tls_files, ClientAuth, ClientCerts, ListenerTls};
use crate::transport::ListenerLimits;
use crate::xds::XdsSettings;
use tonic::metadata::{AsciiMetadataKey, AsciiMetadataValue};

/// Prefix of the environment variables that set [`Settings`].
pub const ENV_PREFIX: &str = "FLOODGATE";

/// Settings as written by the operator, before validation.
/// Typed where it is read: a value of the wrong shape (a duration, a count
/// of at least 1, a mode or policy) is refused by [`Settings::load`].
///
/// (No `Debug`: it holds secrets as given, URLs with passwords included;
/// [`Config`]'s `Debug` redacts them. `Serialize` writes every setting as
/// the README's table shows it, passwords redacted.)
#[derive(Clone, Deserialize, Serialize)]
#[serde(default)]
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
    #[serde(serialize_with = "value::redacted")]
    pub redis_url: Option<String>,
    /// `single`, `sentinel` or `cluster`.
    #[serde(with = "value::redis_mode")]
    pub redis_mode: RedisMode,
    /// Sentinel mode: the master's name in the sentinels' configuration.
    pub redis_sentinel_master: Option<String>,
    /// ACL user for the data nodes (overrides one in the URL).
    pub redis_username: Option<String>,
    /// Password for the data nodes (overrides one in the URL). Prefer
    /// `FLOODGATE_REDIS_PASSWORD` or `redis_password_file`; never logged.
    #[serde(serialize_with = "value::redacted")]
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
    #[serde(with = "value::failure_policy")]
    pub on_store_failure: FailurePolicy,
    /// The longest a decision waits for the store, retries included.
    pub store_deadline: NonZeroDuration,
    /// Failures in a row that open the circuit breaker.
    #[serde(deserialize_with = "value::at_least_1")]
    pub breaker_failure_threshold: NonZeroU32,
    /// How long the breaker stays open before trial calls.
    pub breaker_reset_timeout: NonZeroDuration,
    /// Trial successes in a row that close the breaker.
    #[serde(deserialize_with = "value::at_least_1")]
    pub breaker_success_threshold: NonZeroU32,
    /// Attempts per store call, the first included.
    #[serde(deserialize_with = "value::at_least_1")]
    pub retry_max_attempts: NonZeroU32,
    /// First retry wait bound.
    pub retry_initial_backoff: HumanDuration,
    /// Largest retry wait bound.
    pub retry_max_backoff: HumanDuration,
    /// Growth of the retry wait bound.
    pub retry_backoff_multiplier: f64,
    /// Random retry waits up to the bound.
    pub retry_use_jitter: bool,
    /// How often the store is pinged.
    pub health_check_interval: NonZeroDuration,
    /// How long a ping may take.
    pub health_check_timeout: NonZeroDuration,
    /// Bound of the in-memory fallback store.
    #[serde(deserialize_with = "value::at_least_1")]
    pub fallback_max_entries: NonZeroUsize,
    /// How often the fallback store drops ended windows.
    pub fallback_sweep_interval: NonZeroDuration,
    /// Header marking degraded answers (empty: none).
    pub degraded_header: String,
    /// Bound of the local over-limit cache (0: off).
    pub over_limit_cache_entries: usize,
    /// Redis connect timeout.
    pub redis_connect_timeout: NonZeroDuration,
    /// Redis command timeout.
    pub redis_command_timeout: NonZeroDuration,
    /// Most checks one coalesced EVALSHA carries (1: every call on its own).
    #[serde(deserialize_with = "value::at_least_1")]
    pub redis_batch_max: NonZeroUsize,
    /// Prefix of every counter key.
    pub cache_key_prefix: String,
    /// Upper bound of the random extra TTL on Redis keys.
    pub expiration_jitter_max: HumanDuration,
    /// Most counters the memory store holds.
    #[serde(deserialize_with = "value::at_least_1")]
    pub memory_max_entries: NonZeroUsize,
    /// How often the memory store drops ended windows.
    pub memory_sweep_interval: NonZeroDuration,
    /// Most descriptors per request.
    #[serde(deserialize_with = "value::at_least_1")]
    pub max_descriptors: NonZeroUsize,
    /// Most entries per descriptor.
    #[serde(deserialize_with = "value::at_least_1")]
    pub max_entries: NonZeroUsize,
    /// Longest domain, key or value in bytes.
    #[serde(deserialize_with = "value::at_least_1")]
    pub max_value_bytes: NonZeroUsize,
    /// Calls decided at once; more are shed with RESOURCE_EXHAUSTED.
    #[serde(deserialize_with = "value::at_least_1")]
    pub max_in_flight: NonZeroUsize,
    /// RLQS: how long an assignment holds in Envoy without a refresh.
    pub rlqs_assignment_ttl: NonZeroDuration,
    /// RLQS: a bucket with no requests for this long is abandoned.
    pub rlqs_abandon_after: NonZeroDuration,
    /// RLQS: most buckets one stream reports.
    #[serde(deserialize_with = "value::at_least_1")]
    pub rlqs_max_buckets_per_stream: NonZeroUsize,
    /// RLQS: most streams open at once.
    #[serde(deserialize_with = "value::at_least_1")]
    pub rlqs_max_streams: NonZeroUsize,
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
    pub shutdown_grace: HumanDuration,
    /// How long to keep serving after health turns NOT_SERVING.
    pub shutdown_delay: HumanDuration,
    /// `text` or `json`.
    #[serde(with = "value::log_format")]
    pub log_format: LogFormat,
    /// Test knob: shift this server's clock by this many milliseconds (to
    /// show instances with skewed clocks agree). Keep it 0 in production.
    pub clock_offset_ms: i64,
    /// A tracing filter, e.g. `info` or `floodgate_server=debug`.
    pub log_level: String,
    /// `near_limit` counts hits above `floor(limit × ratio)` (the
    /// reference's `NEAR_LIMIT_RATIO`).
    pub near_limit_ratio: f64,
    /// Rule series per domain in `/metrics` before `__overflow__`.
    #[serde(deserialize_with = "value::at_least_1")]
    pub metrics_max_series_per_domain: NonZeroUsize,
    /// A listener of its own for `/metrics` (`host:port`); empty: none
    /// (`/metrics` is on the HTTP listener either way).
    pub metrics_addr: String,
    /// The path the metrics listener serves the metrics on.
    pub metrics_path: String,
    /// How often the rules directory is checked for changes (`0s`: never;
    /// `SIGHUP` still reloads).
    pub rules_reload_interval: HumanDuration,
    /// Admin listener (counter state and reset), loopback by default; empty
    /// turns it off.
    pub admin_addr: String,
    /// Bearer token the admin endpoints require (empty: none).
    #[serde(serialize_with = "value::redacted_text")]
    pub admin_token: String,
    /// Share of traces sampled when exporting over OTLP (0 to 1; a caller's
    /// sampled trace context is always followed).
    pub trace_sampling_ratio: f64,
    /// Connections each listener (gRPC, HTTP, admin) holds at once.
    #[serde(deserialize_with = "value::at_least_1")]
    pub max_connections: NonZeroUsize,
    /// HTTP/2 streams one connection may have open at once.
    #[serde(deserialize_with = "value::at_least_1")]
    pub max_concurrent_streams: NonZeroU32,
    /// Largest request header block, in bytes.
    #[serde(deserialize_with = "value::at_least_1")]
    pub max_header_list_bytes: NonZeroU32,
    /// A new connection's first request, and an HTTP/1.1 request's
    /// headers, must arrive within this.
    pub header_read_timeout: NonZeroDuration,
    /// A request must be read and answered within this.
    pub request_timeout: NonZeroDuration,
    /// A connection with no request in flight for this long is closed.
    pub idle_timeout: NonZeroDuration,
    /// Each listener's accept queue (capped by `net.core.somaxconn`).
    #[serde(deserialize_with = "value::at_least_1")]
    pub listen_backlog: NonZeroU32,
    /// gRPC listener: certificate chain (PEM, leaf first); unset: plaintext.
    pub grpc_tls_cert_file: Option<PathBuf>,
    /// gRPC listener: the certificate's private key (PEM).
    pub grpc_tls_key_file: Option<PathBuf>,
    /// gRPC listener: CA bundle (PEM) client certificates must chain to
    /// (mTLS); unset: no client certificate asked.
    pub grpc_tls_client_ca_file: Option<PathBuf>,
    /// gRPC listener, with a client CA: `require` or `optional`.
    #[serde(with = "value::client_auth")]
    pub grpc_tls_client_auth: ClientAuth,
    /// gRPC listener, with a client CA: the client identities (SAN DNS
    /// names or URIs, comma-separated) let in; empty: any the CA signed.
    pub grpc_tls_client_names: String,
    /// HTTP listener: certificate chain (PEM, leaf first); unset: plaintext.
    pub http_tls_cert_file: Option<PathBuf>,
    /// HTTP listener: the certificate's private key (PEM).
    pub http_tls_key_file: Option<PathBuf>,
    /// HTTP listener: CA bundle (PEM) client certificates must chain to
    /// (mTLS); unset: no client certificate asked.
    pub http_tls_client_ca_file: Option<PathBuf>,
    /// HTTP listener, with a client CA: `require` or `optional`.
    #[serde(with = "value::client_auth")]
    pub http_tls_client_auth: ClientAuth,
    /// HTTP listener, with a client CA: the client identities (SAN DNS
    /// names or URIs, comma-separated) let in; empty: any the CA signed.
    pub http_tls_client_names: String,
    /// admin listener: certificate chain (PEM, leaf first); unset: plaintext.
    pub admin_tls_cert_file: Option<PathBuf>,
    /// admin listener: the certificate's private key (PEM).
    pub admin_tls_key_file: Option<PathBuf>,
    /// admin listener: CA bundle (PEM) client certificates must chain to
    /// (mTLS); unset: no client certificate asked.
    pub admin_tls_client_ca_file: Option<PathBuf>,
    /// admin listener, with a client CA: `require` or `optional`.
    #[serde(with = "value::client_auth")]
    pub admin_tls_client_auth: ClientAuth,
    /// admin listener, with a client CA: the client identities (SAN DNS
    /// names or URIs, comma-separated) let in; empty: any the CA signed.
    pub admin_tls_client_names: String,
    /// How often the listeners' TLS files are re-read (`0s`: never).
    pub tls_reload_interval: HumanDuration,
    /// The xDS management server (`host:port`) the rules come from; empty:
    /// the rules come from the `rules` files.
    pub rules_xds_server: String,
    /// The node id sent to the management server.
    pub rules_xds_node_id: String,
    /// The node's metadata, `key=value` pairs, comma-separated.
    pub rules_xds_node_metadata: String,
    /// gRPC metadata sent on the stream, `name:value` pairs, comma-separated.
    pub rules_xds_headers: String,
    /// CA bundle (PEM) that signs the management server's certificate; set:
    /// TLS to it.
    pub rules_xds_ca_file: Option<PathBuf>,
    /// Client certificate chain (PEM) to present to the management server (mTLS).
    pub rules_xds_cert_file: Option<PathBuf>,
    /// The client certificate's private key (PEM).
    pub rules_xds_key_file: Option<PathBuf>,
    /// The name the management server's certificate must hold (default:
    /// the host of `rules_xds_server`).
    pub rules_xds_server_name: String,
    /// The first wait before reopening a broken stream.
    pub rules_xds_retry_initial: NonZeroDuration,
    /// The longest wait before reopening a broken stream.
    pub rules_xds_retry_max: NonZeroDuration,
    /// The largest response accepted from the management server, in bytes.
    #[serde(deserialize_with = "value::at_least_1")]
    pub rules_xds_max_message_bytes: NonZeroUsize,
}

impl Default for Settings {
    /// The built-in defaults: those of the settings each part of the server
    /// takes ([`ResilienceSettings`], the Redis store's, [`ListenerLimits`],
    /// ...), and the server's own. One flat table, on purpose; the README's
    /// table is checked against it by a test.
    fn default() -> Self {
        let (headers, limits, metrics) = (
            HeaderNames::default(),
            RequestLimits::default(),
            MetricsSettings::default(),
        );
        let (r, listeners) = (ResilienceSettings::default(), ListenerLimits::default());
        let rlqs = crate::rlqs::RlqsSettings::default();
        let positive = NonZeroDuration::or_shortest;
        Settings {
            rules: PathBuf::from("/etc/floodgate/rules"),
            merge_domains: false,
            grpc_addr: "0.0.0.0:8081".into(),
            http_addr: "0.0.0.0:8080".into(),
            redis_url: None,
            redis_mode: RedisMode::Single,
            redis_sentinel_master: None,
            redis_username: None,
            redis_password: None,
            redis_password_file: None,
            redis_tls_ca_file: None,
            redis_tls_cert_file: None,
            redis_tls_key_file: None,
            on_store_failure: r.on_failure,
            store_deadline: positive(r.store_deadline),
            breaker_failure_threshold: value::count_u32(r.breaker.failure_threshold),
            breaker_reset_timeout: positive(r.breaker.reset_timeout),
            breaker_success_threshold: value::count_u32(r.breaker.success_threshold),
            retry_max_attempts: value::count_u32(r.retry.max_attempts),
            retry_initial_backoff: HumanDuration(r.retry.initial_backoff),
            retry_max_backoff: HumanDuration(r.retry.max_backoff),
            retry_backoff_multiplier: r.retry.backoff_multiplier,
            retry_use_jitter: r.retry.use_jitter,
            health_check_interval: positive(r.check_interval),
            health_check_timeout: positive(r.check_timeout),
            fallback_max_entries: value::count(r.fallback_max_entries),
            fallback_sweep_interval: positive(r.fallback_sweep_interval),
            degraded_header: "x-floodgate-degraded".into(),
            over_limit_cache_entries: r.over_limit_cache_entries,
            redis_connect_timeout: positive(redis_defaults::DEFAULT_CONNECT_TIMEOUT),
            redis_command_timeout: positive(redis_defaults::DEFAULT_COMMAND_TIMEOUT),
            redis_batch_max: value::count(redis_defaults::DEFAULT_BATCH_MAX),
            cache_key_prefix: String::new(),
            expiration_jitter_max: HumanDuration(redis_defaults::DEFAULT_EXPIRATION_JITTER_MAX),
            memory_max_entries: value::count(1_000_000),
            memory_sweep_interval: positive(Duration::from_secs(10)),
            max_descriptors: value::count(limits.max_descriptors),
            max_entries: value::count(limits.max_entries),
            max_value_bytes: value::count(limits.max_value_bytes),
            max_in_flight: value::count(crate::grpc::DEFAULT_MAX_IN_FLIGHT),
            rlqs_assignment_ttl: positive(rlqs.assignment_ttl),
            rlqs_abandon_after: positive(rlqs.abandon_after),
            rlqs_max_buckets_per_stream: value::count(rlqs.max_buckets_per_stream),
            rlqs_max_streams: value::count(rlqs.max_streams),
            shadow_mode: false,
            stop_increment_when_over_limit: false,
            response_headers: false,
            limit_header: headers.limit,
            remaining_header: headers.remaining,
            reset_header: headers.reset,
            dynamic_metadata: false,
            shutdown_grace: HumanDuration(Duration::from_secs(10)),
            shutdown_delay: HumanDuration(Duration::ZERO),
            log_format: LogFormat::Text,
            clock_offset_ms: 0,
            log_level: "info".into(),
            near_limit_ratio: metrics.near_limit_ratio,
            metrics_max_series_per_domain: value::count(metrics.max_series_per_domain),
            metrics_addr: String::new(),
            metrics_path: "/metrics".into(),
            rules_reload_interval: HumanDuration(Duration::from_millis(500)),
            admin_addr: "127.0.0.1:6070".into(),
            admin_token: String::new(),
            trace_sampling_ratio: 1.0,
            max_connections: value::count(listeners.max_connections),
            max_concurrent_streams: value::count_u32(listeners.max_concurrent_streams),
            max_header_list_bytes: value::count_u32(listeners.max_header_list_bytes),
            header_read_timeout: positive(listeners.header_read_timeout),
            request_timeout: positive(listeners.request_timeout),
            idle_timeout: positive(listeners.idle_timeout),
            listen_backlog: value::count_u32(listeners.listen_backlog),
            grpc_tls_cert_file: None,
            grpc_tls_key_file: None,
            grpc_tls_client_ca_file: None,
            grpc_tls_client_auth: ClientAuth::default(),
            grpc_tls_client_names: String::new(),
            http_tls_cert_file: None,
            http_tls_key_file: None,
            http_tls_client_ca_file: None,
            http_tls_client_auth: ClientAuth::default(),
            http_tls_client_names: String::new(),
            admin_tls_cert_file: None,
            admin_tls_key_file: None,
            admin_tls_client_ca_file: None,
            admin_tls_client_auth: ClientAuth::default(),
            admin_tls_client_names: String::new(),
            tls_reload_interval: HumanDuration(Duration::from_secs(2)),
            rules_xds_server: String::new(),
            rules_xds_node_id: "floodgate".into(),
            rules_xds_node_metadata: String::new(),
            rules_xds_headers: String::new(),
            rules_xds_ca_file: None,
            rules_xds_cert_file: None,
            rules_xds_key_file: None,
            rules_xds_server_name: String::new(),
            rules_xds_retry_initial: positive(Duration::from_secs(1)),
            rules_xds_retry_max: positive(Duration::from_secs(30)),
            rules_xds_max_message_bytes: NonZeroUsize::MIN.saturating_add(4 * 1024 * 1024 - 1),
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
    /// A value of the wrong shape for its setting, refused where the
    /// settings are read (`detail`: `"VALUE": REASON`).
    #[error("invalid setting {name} = {detail}")]
    Value {
        /// The setting's name.
        name: String,
        /// What was given and what is wrong with it.
        detail: String,
    },
    /// A setting that applies only to Redis, given without `redis_url`:
    /// it would be ignored, silently.
    #[error(
        "{0} is set but redis_url is not: it applies only to Redis (without redis_url, counters live in memory)"
    )]
    WithoutRedis(&'static str),
    /// A `FLOODGATE_*` variable that names no setting (a typo would
    /// otherwise be dropped, silently).
    #[error("unknown variable {name}: no setting is called {setting}{hint}")]
    UnknownVariable {
        /// The variable.
        name: String,
        /// The setting it would name.
        setting: String,
        /// `: did you mean ...?`, or nothing.
        hint: String,
    },
    /// A key of the settings file that names no setting.
    #[error("unknown setting {key} in {file}{hint}")]
    UnknownKey {
        /// The key.
        key: String,
        /// The settings file.
        file: String,
        /// `: did you mean ...?`, or nothing.
        hint: String,
    },
    /// envoyproxy/ratelimit's environment asks for what cannot be.
    #[error(transparent)]
    Compat(#[from] compat::CompatError),
}

impl ConfigError {
    /// A settings-reading error: a value a typed setting refused names its
    /// setting, the way [`ConfigError::Invalid`] does.
    fn read(e: config::ConfigError) -> ConfigError {
        match e {
            config::ConfigError::At {
                error,
                key: Some(name),
                ..
            } if matches!(*error, config::ConfigError::Message(_)) => ConfigError::Value {
                name,
                detail: error.to_string(),
            },
            e => ConfigError::Read(e),
        }
    }
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
    /// The RLQS service's bounds and timings.
    pub rlqs: crate::rlqs::RlqsSettings,
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
    /// The metrics listener, if any, and its path.
    pub metrics_listener: MetricsListener,
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
    /// Each listener's TLS, if any.
    pub tls: TlsSettings,
    /// The xDS management server the rules come from, if any (then the
    /// `rules` files are not read).
    pub rules_xds: Option<XdsSettings>,
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
        let known = Settings::names();
        unknown_variables(&env, &known)?;
        builder = builder.add_source(
            config::Environment::with_prefix(ENV_PREFIX)
                .try_parsing(false)
                .source(Some(env)),
        );
        for (name, value) in overrides {
            builder = builder.set_override_option(*name, value.clone())?;
        }
        if let Some(file) = file {
            unknown_keys(file, &known)?;
        }
        builder
            .build()?
            .try_deserialize()
            .map_err(ConfigError::read)
    }

    /// Every setting's name (the keys [`Settings`] serializes to).
    pub fn names() -> Vec<String> {
        match serde_json::to_value(Settings::default()) {
            Ok(serde_json::Value::Object(map)) => map.keys().cloned().collect(),
            _ => Vec::new(),
        }
    }
}

/// Variables that start with `FLOODGATE_` yet are not settings: the
/// `floodgate admin` client's, the test harness's.
const NOT_SETTINGS: &[&str] = &[
    "FLOODGATE_ADMIN_TLS_CA",
    "FLOODGATE_ADMIN_TLS_CERT",
    "FLOODGATE_ADMIN_TLS_KEY",
    "FLOODGATE_ADMIN_TLS_SERVER_NAME",
    "FLOODGATE_TEST_VENV",
];

/// Whether `name` is one of the variables Kubernetes sets for a Service
/// called `floodgate` (`FLOODGATE_SERVICE_HOST`, `FLOODGATE_PORT_8081_TCP`,
/// ...), which are not settings either.
fn service_link(name: &str) -> bool {
    let rest = name.trim_start_matches("FLOODGATE_");
    rest == "PORT"
        || rest.starts_with("SERVICE_HOST")
        || rest.starts_with("SERVICE_PORT")
        || rest
            .strip_prefix("PORT_")
            .is_some_and(|p| p.starts_with(|c: char| c.is_ascii_digit()))
}

/// `: did you mean X?` for the known name closest to `name`, if close.
fn did_you_mean(name: &str, known: &[String], render: impl Fn(&str) -> String) -> String {
    let distance = |a: &str, b: &str| -> usize {
        let b: Vec<char> = b.chars().collect();
        let mut row: Vec<usize> = (0..=b.len()).collect();
        for (i, ca) in a.chars().enumerate() {
            let mut last = row[0];
            row[0] = i + 1;
            for (j, cb) in b.iter().enumerate() {
                let next = (row[j + 1] + 1)
                    .min(row[j] + 1)
                    .min(last + usize::from(ca != *cb));
                last = row[j + 1];
                row[j + 1] = next;
            }
        }
        row[b.len()]
    };
    known
        .iter()
        .map(|k| (distance(name, k), k))
        .filter(|(d, _)| *d <= 3)
        .min()
        .map(|(_, k)| format!(": did you mean {}?", render(k)))
        .unwrap_or_default()
}

/// Refuses a `FLOODGATE_*` variable that names no setting.
fn unknown_variables(
    env: &std::collections::HashMap<String, String>,
    known: &[String],
) -> Result<(), ConfigError> {
    let prefix = format!("{ENV_PREFIX}_");
    let mut names: Vec<&String> = env.keys().filter(|k| k.starts_with(&prefix)).collect();
    names.sort();
    for name in names {
        let setting = name[prefix.len()..].to_ascii_lowercase();
        if known.contains(&setting) || NOT_SETTINGS.contains(&name.as_str()) || service_link(name) {
            continue;
        }
        let hint = did_you_mean(&setting, known, |k| {
            format!("{prefix}{}", k.to_ascii_uppercase())
        });
        return Err(ConfigError::UnknownVariable {
            name: name.clone(),
            setting,
            hint,
        });
    }
    Ok(())
}

/// Refuses a key of the settings file that names no setting.
fn unknown_keys(file: &std::path::Path, known: &[String]) -> Result<(), ConfigError> {
    use config::Source as _;
    let values = config::File::from(file)
        .format(config::FileFormat::Yaml)
        .required(true)
        .collect()?;
    let mut keys: Vec<&String> = values.keys().collect();
    keys.sort();
    for key in keys {
        if !known.contains(key) {
            return Err(ConfigError::UnknownKey {
                key: key.clone(),
                file: file.display().to_string(),
                hint: did_you_mean(key, known, str::to_owned),
            });
        }
    }
    Ok(())
}

/// The bounds on a request (and on an RLQS bucket id).
fn request_limits(s: &Settings) -> RequestLimits {
    RequestLimits {
        max_descriptors: s.max_descriptors.get(),
        max_entries: s.max_entries.get(),
        max_value_bytes: s.max_value_bytes.get(),
    }
}

/// The RLQS settings.
fn rlqs_settings(s: &Settings) -> crate::rlqs::RlqsSettings {
    crate::rlqs::RlqsSettings {
        assignment_ttl: s.rlqs_assignment_ttl.get(),
        abandon_after: s.rlqs_abandon_after.get(),
        max_buckets_per_stream: s.rlqs_max_buckets_per_stream.get(),
        max_streams: s.rlqs_max_streams.get(),
        ..crate::rlqs::RlqsSettings::default()
    }
}

impl TryFrom<Settings> for Config {
    type Error = ConfigError;

    /// Checks what the types cannot say (addresses, header names, ratios,
    /// settings that depend on each other) and builds each part's settings.
    fn try_from(s: Settings) -> Result<Self, ConfigError> {
        let redis = redis_settings(&s)?;
        if s.redis_mode == RedisMode::Cluster
            && redis.is_some()
            && s.cache_key_prefix.contains(['{', '}'])
        {
            return Err(invalid(
                "cache_key_prefix",
                &s.cache_key_prefix,
                "must not contain { or } with Redis Cluster: a hash tag there would put every key on one shard",
            ));
        }
        let tls = tls_settings(&s)?;
        Ok(Config {
            rules_xds: xds_settings(&s)?,
            grpc_addr: address("grpc_addr", &s.grpc_addr)?,
            http_addr: address("http_addr", &s.http_addr)?,
            redis,
            memory_max_entries: s.memory_max_entries.get(),
            memory_sweep_interval: s.memory_sweep_interval.get(),
            limits: request_limits(&s),
            limiter: LimiterOptions {
                global_shadow_mode: s.shadow_mode,
                stop_increment_when_over_limit: s.stop_increment_when_over_limit,
            },
            response: response_options(&s)?,
            resilience: resilience_settings(&s)?,
            max_in_flight: s.max_in_flight.get(),
            rlqs: rlqs_settings(&s),
            shutdown_grace: s.shutdown_grace.get(),
            shutdown_delay: s.shutdown_delay.get(),
            log_format: s.log_format,
            clock_offset_ms: s.clock_offset_ms,
            metrics: MetricsSettings {
                near_limit_ratio: ratio("near_limit_ratio", s.near_limit_ratio)?,
                max_series_per_domain: s.metrics_max_series_per_domain.get(),
            },
            metrics_listener: metrics_listener(&s.metrics_addr, &s.metrics_path)?,
            rules_reload_interval: Some(s.rules_reload_interval.get()).filter(|d| !d.is_zero()),
            admin_addr: admin_addr(
                &s.admin_addr,
                &s.admin_token,
                tls.admin
                    .as_ref()
                    .is_some_and(ListenerTls::requires_client_certificates),
            )?,
            trace_sampling_ratio: ratio("trace_sampling_ratio", s.trace_sampling_ratio)?,
            listeners: listener_limits(&s),
            tls,
            admin_token: (!s.admin_token.is_empty()).then(|| Secret::new(s.admin_token)),
            rules: s.rules,
            merge_domains: s.merge_domains,
            cache_key_prefix: s.cache_key_prefix,
            log_level: s.log_level,
        })
    }
}

/// The xDS rules source, if `rules_xds_server` is set; its TLS files are
/// read and checked here, once.
fn xds_settings(s: &Settings) -> Result<Option<XdsSettings>, ConfigError> {
    let server = s.rules_xds_server.trim();
    if server.is_empty() {
        if let Some((name, value)) = xds_tls_given(s).into_iter().find(|(_, v)| v.is_some()) {
            return Err(ConfigError::Invalid {
                name,
                value: value.unwrap_or_default(),
                reason: "is set but rules_xds_server is not (it applies to rules over xDS)".into(),
            });
        }
        return Ok(None);
    }
    let server = server.strip_prefix("http://").unwrap_or(server);
    if host_of(server) == server || server.contains('/') {
        return Err(invalid(
            "rules_xds_server",
            server,
            "must be host:port (e.g. envoy-gateway:18001)",
        ));
    }
    let tls = xds_tls(s, server)?;
    let retry_initial = s.rules_xds_retry_initial.get();
    let retry_max = s.rules_xds_retry_max.get();
    if retry_max < retry_initial {
        return Err(invalid(
            "rules_xds_retry_max",
            &format!("{retry_max:?}"),
            "must be at least rules_xds_retry_initial",
        ));
    }
    Ok(Some(XdsSettings {
        server: server.to_owned(),
        node_id: s.rules_xds_node_id.clone(),
        node_metadata: pairs("rules_xds_node_metadata", &s.rules_xds_node_metadata, '=')?,
        headers: xds_headers(&s.rules_xds_headers)?,
        tls,
        retry_initial,
        retry_max,
        max_message_bytes: s.rules_xds_max_message_bytes.get(),
    }))
}

/// TLS to the management server: on with a CA file.
fn xds_tls(s: &Settings, server: &str) -> Result<Option<ClientTls>, ConfigError> {
    let Some(ca) = &s.rules_xds_ca_file else {
        if let Some((name, value)) = xds_tls_given(s).into_iter().find(|(_, v)| v.is_some()) {
            return Err(ConfigError::Invalid {
                name,
                value: value.unwrap_or_default(),
                reason: "is set but rules_xds_ca_file is not (TLS to the management server \
                         needs the CA that signs its certificate)"
                    .into(),
            });
        }
        return Ok(None);
    };
    let flags = TlsFlags {
        ca: Some(ca.clone()),
        cert: s.rules_xds_cert_file.clone(),
        key: s.rules_xds_key_file.clone(),
        server_name: Some(s.rules_xds_server_name.clone()).filter(|n| !n.is_empty()),
    };
    ClientTls::new(&flags, &[ALPN_H2], host_of(server))
        .map(Some)
        .map_err(|e| ConfigError::Invalid {
            name: "rules_xds_ca_file",
            value: ca.display().to_string(),
            reason: xds_tls_reason(&e),
        })
}

/// The xDS TLS settings given, as (name, value), CA first.
fn xds_tls_given(s: &Settings) -> [(&'static str, Option<String>); 4] {
    let path = |p: &Option<PathBuf>| p.as_ref().map(|p| p.display().to_string());
    [
        ("rules_xds_ca_file", path(&s.rules_xds_ca_file)),
        ("rules_xds_cert_file", path(&s.rules_xds_cert_file)),
        ("rules_xds_key_file", path(&s.rules_xds_key_file)),
        (
            "rules_xds_server_name",
            Some(s.rules_xds_server_name.clone()).filter(|n| !n.is_empty()),
        ),
    ]
}

/// A client TLS error in the settings' words rather than the flags'.
fn xds_tls_reason(e: &ClientTlsError) -> String {
    [
        ("--tls-ca", "rules_xds_ca_file"),
        ("--tls-cert", "rules_xds_cert_file"),
        ("--tls-key", "rules_xds_key_file"),
        ("--tls-server-name", "rules_xds_server_name"),
    ]
    .iter()
    .fold(e.to_string(), |text, (flag, setting)| {
        text.replace(flag, setting)
    })
}

/// `key<sep>value` pairs, comma-separated (empty entries skipped).
fn pairs(name: &'static str, text: &str, sep: char) -> Result<Vec<(String, String)>, ConfigError> {
    text.split(',')
        .map(str::trim)
        .filter(|entry| !entry.is_empty())
        .map(|entry| match entry.split_once(sep) {
            Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_owned(), v.trim().to_owned())),
            _ => Err(invalid(
                name,
                text,
                &format!("each entry must be key{sep}value"),
            )),
        })
        .collect()
}

/// `rules_xds_headers` as gRPC metadata.
fn xds_headers(text: &str) -> Result<Vec<(AsciiMetadataKey, AsciiMetadataValue)>, ConfigError> {
    let name = "rules_xds_headers";
    pairs(name, text, ':')?
        .into_iter()
        .map(|(k, v)| {
            let key = AsciiMetadataKey::from_bytes(k.to_ascii_lowercase().as_bytes())
                .map_err(|_| invalid(name, text, &format!("{k:?} is not a header name")))?;
            let value = AsciiMetadataValue::try_from(v.as_str()).map_err(|_| {
                invalid(
                    name,
                    text,
                    &format!("the value of {k:?} is not a header value"),
                )
            })?;
            Ok((key, value))
        })
        .collect()
}

/// The response options; every header name must be a valid one.
fn response_options(s: &Settings) -> Result<ResponseOptions, ConfigError> {
    for (name, value) in [
        ("limit_header", &s.limit_header),
        ("remaining_header", &s.remaining_header),
        ("reset_header", &s.reset_header),
    ] {
        if http::HeaderName::from_bytes(value.as_bytes()).is_err() {
            return Err(invalid(name, value, "is not a valid HTTP header name"));
        }
    }
    Ok(ResponseOptions {
        headers: s.response_headers.then(|| HeaderNames {
            limit: s.limit_header.clone(),
            remaining: s.remaining_header.clone(),
            reset: s.reset_header.clone(),
        }),
        dynamic_metadata: s.dynamic_metadata,
        degraded_header: degraded_header(&s.degraded_header)?,
    })
}

/// The listeners' limits (each at least 1 by its type).
fn listener_limits(s: &Settings) -> ListenerLimits {
    ListenerLimits {
        max_connections: s.max_connections.get(),
        max_concurrent_streams: s.max_concurrent_streams.get(),
        max_header_list_bytes: s.max_header_list_bytes.get(),
        header_read_timeout: s.header_read_timeout.get(),
        request_timeout: s.request_timeout.get(),
        idle_timeout: s.idle_timeout.get(),
        listen_backlog: s.listen_backlog.get(),
    }
}

/// Where the metrics are served besides the HTTP listener.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MetricsListener {
    /// The listener's address; `None`: no metrics listener.
    pub addr: Option<SocketAddr>,
    /// The one path it answers (`GET`); anything else is 404.
    pub path: String,
}

/// The metrics listener: `addr` is `host:port` or empty (none); `path` is a
/// URL path (`/` then visible ASCII but `?` and `#`), checked even without
/// a listener.
fn metrics_listener(addr: &str, path: &str) -> Result<MetricsListener, ConfigError> {
    let visible = |c: char| c.is_ascii_graphic() && c != '?' && c != '#';
    if !path.starts_with('/') || !path.chars().all(visible) {
        return Err(invalid(
            "metrics_path",
            path,
            "must be a URL path: / then visible ASCII characters but ? and #, e.g. /metrics",
        ));
    }
    let addr = match addr.trim() {
        "" => None,
        addr => Some(address("metrics_addr", addr)?),
    };
    Ok(MetricsListener {
        addr,
        path: path.to_owned(),
    })
}

/// The admin listener's address. Anyone who reaches it can reset
/// counters, so off loopback it needs a token or required client
/// certificates.
fn admin_addr(addr: &str, token: &str, mtls: bool) -> Result<Option<SocketAddr>, ConfigError> {
    if addr.is_empty() {
        return Ok(None);
    }
    let parsed = address("admin_addr", addr)?;
    if !parsed.ip().is_loopback() && token.is_empty() && !mtls {
        return Err(invalid(
            "admin_addr",
            addr,
            "is not a loopback address: set admin_token, or admin_tls_client_ca_file with admin_tls_client_auth = require, or anyone who reaches it can reset counters",
        ));
    }
    Ok(Some(parsed))
}

/// One listener's TLS settings, as given.
struct TlsGiven<'a> {
    listener: &'static str,
    cert: &'a Option<PathBuf>,
    key: &'a Option<PathBuf>,
    ca: &'a Option<PathBuf>,
    auth: ClientAuth,
    names: &'a str,
}

/// Every listener's TLS: complete, and its files usable now.
fn tls_settings(s: &Settings) -> Result<TlsSettings, ConfigError> {
    let given = |listener, cert, key, ca, auth, names| TlsGiven {
        listener,
        cert,
        key,
        ca,
        auth,
        names,
    };
    Ok(TlsSettings {
        grpc: listener_tls(&given(
            "grpc",
            &s.grpc_tls_cert_file,
            &s.grpc_tls_key_file,
            &s.grpc_tls_client_ca_file,
            s.grpc_tls_client_auth,
            &s.grpc_tls_client_names,
        ))?,
        http: listener_tls(&given(
            "http",
            &s.http_tls_cert_file,
            &s.http_tls_key_file,
            &s.http_tls_client_ca_file,
            s.http_tls_client_auth,
            &s.http_tls_client_names,
        ))?,
        admin: listener_tls(&given(
            "admin",
            &s.admin_tls_cert_file,
            &s.admin_tls_key_file,
            &s.admin_tls_client_ca_file,
            s.admin_tls_client_auth,
            &s.admin_tls_client_names,
        ))?,
        reload_interval: Some(s.tls_reload_interval.get()).filter(|d| !d.is_zero()),
    })
}

/// One listener's TLS, or `None` for plaintext. A certificate comes with
/// its key; client settings need a client CA, which needs TLS. The files
/// are read and checked here, so that a bad one stops startup with the
/// setting's name.
fn listener_tls(g: &TlsGiven<'_>) -> Result<Option<ListenerTls>, ConfigError> {
    let set = |p: &Option<PathBuf>| p.clone().filter(|p| !p.as_os_str().is_empty());
    let (cert, key, ca) = (set(g.cert), set(g.key), set(g.ca));
    let name = |part| tls_files::setting(g.listener, part);
    let names: Vec<String> = g
        .names
        .split(',')
        .map(str::trim)
        .filter(|n| !n.is_empty())
        .map(str::to_owned)
        .collect();
    if ca.is_none() {
        client_settings_alone(g, &names)?;
    }
    let (cert_file, key_file) = match (cert, key, ca.as_ref()) {
        (Some(cert), Some(key), _) => (cert, key),
        (None, None, None) => return Ok(None),
        (None, None, Some(ca)) => {
            let reason = format!(
                "client certificates need TLS: set {} and {} too",
                name("cert"),
                name("key")
            );
            return Err(invalid(
                name("client_ca"),
                &ca.display().to_string(),
                &reason,
            ));
        }
        (cert, _, _) => {
            let reason = format!("{} and {} go together", name("cert"), name("key"));
            return Err(invalid(
                name(if cert.is_some() { "key" } else { "cert" }),
                "",
                &reason,
            ));
        }
    };
    let tls = ListenerTls {
        listener: g.listener,
        cert_file,
        key_file,
        client: ca.map(|ca_file| ClientCerts {
            ca_file,
            auth: g.auth,
            names,
        }),
    };
    let provider = rustls::crypto::ring::default_provider();
    tls_files::Material::load(&tls, &provider, std::time::SystemTime::now()).map_err(|e| {
        ConfigError::Invalid {
            name: e.setting,
            value: e.path.display().to_string(),
            reason: e.reason,
        }
    })?;
    Ok(Some(tls))
}

/// Client certificate settings given without a client CA: an error, as
/// they would be ignored.
fn client_settings_alone(g: &TlsGiven<'_>, names: &[String]) -> Result<(), ConfigError> {
    let ca = tls_files::setting(g.listener, "client_ca");
    if !names.is_empty() {
        return Err(invalid(
            tls_files::setting(g.listener, "names"),
            g.names,
            &format!("needs {ca}: identities are read from verified client certificates"),
        ));
    }
    if g.auth == ClientAuth::Optional {
        return Err(invalid(
            tls_files::setting(g.listener, "auth"),
            "optional",
            &format!("needs {ca}: without it no client certificate is asked for"),
        ));
    }
    Ok(())
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
    if !(s.retry_backoff_multiplier >= 1.0 && s.retry_backoff_multiplier <= 100.0) {
        return Err(invalid(
            "retry_backoff_multiplier",
            &s.retry_backoff_multiplier.to_string(),
            "must be between 1 and 100",
        ));
    }
    if s.retry_max_backoff < s.retry_initial_backoff {
        return Err(invalid(
            "retry_max_backoff",
            &value::render_duration(s.retry_max_backoff.get()),
            "must not be below retry_initial_backoff",
        ));
    }
    if s.health_check_timeout > s.health_check_interval {
        return Err(invalid(
            "health_check_timeout",
            &value::render_duration(s.health_check_timeout.get()),
            "must not exceed health_check_interval",
        ));
    }
    Ok(ResilienceSettings {
        on_failure: s.on_store_failure,
        store_deadline: s.store_deadline.get(),
        breaker: BreakerSettings {
            failure_threshold: s.breaker_failure_threshold.get(),
            reset_timeout: s.breaker_reset_timeout.get(),
            success_threshold: s.breaker_success_threshold.get(),
        },
        retry: RetrySettings {
            max_attempts: s.retry_max_attempts.get(),
            initial_backoff: s.retry_initial_backoff.get(),
            max_backoff: s.retry_max_backoff.get(),
            backoff_multiplier: s.retry_backoff_multiplier,
            use_jitter: s.retry_use_jitter,
        },
        check_interval: s.health_check_interval.get(),
        check_timeout: s.health_check_timeout.get(),
        fallback_max_entries: s.fallback_max_entries.get(),
        fallback_sweep_interval: s.fallback_sweep_interval.get(),
        over_limit_cache_entries: s.over_limit_cache_entries,
    })
}

/// The Redis settings, if a URL is set.
fn redis_settings(s: &Settings) -> Result<Option<RedisSettings>, ConfigError> {
    let Some(url) = s.redis_url.as_deref().filter(|u| !u.trim().is_empty()) else {
        return match redis_only_setting(s) {
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
    let topology = redis_topology(s.redis_mode, urls, s.redis_sentinel_master.as_deref())?;
    Ok(Some(RedisSettings {
        topology,
        username: s.redis_username.clone().filter(|u| !u.is_empty()),
        password: redis_password(s)?,
        tls: redis_tls(s)?,
        connect_timeout: s.redis_connect_timeout.get(),
        command_timeout: s.redis_command_timeout.get(),
        expiration_jitter_max: s.expiration_jitter_max.get(),
        batch_max: s.redis_batch_max.get(),
    }))
}

/// The data nodes' password: from the setting or from a file, not both.
fn redis_password(s: &Settings) -> Result<Option<Secret>, ConfigError> {
    match (&s.redis_password, &s.redis_password_file) {
        (Some(_), Some(file)) => Err(invalid(
            "redis_password_file",
            &file.display().to_string(),
            "set redis_password or redis_password_file, not both",
        )),
        (Some(password), None) => Ok(Some(password.clone())),
        (None, Some(file)) => {
            let text = std::fs::read_to_string(file).map_err(|e| {
                invalid(
                    "redis_password_file",
                    &file.display().to_string(),
                    &e.to_string(),
                )
            })?;
            Ok(Some(Secret::new(text.trim_end_matches(['\r', '\n']))))
        }
        (None, None) => Ok(None),
    }
}

/// The TLS files: each must exist, and a client certificate comes with its key.
fn redis_tls(s: &Settings) -> Result<TlsFiles, ConfigError> {
    let client = match (&s.redis_tls_cert_file, &s.redis_tls_key_file) {
        (Some(cert), Some(key)) => Some(ClientCertificate {
            cert: cert.clone(),
            key: key.clone(),
        }),
        (None, None) => None,
        _ => {
            return Err(invalid(
                "redis_tls_cert_file",
                "",
                "redis_tls_cert_file and redis_tls_key_file go together",
            ));
        }
    };
    for (name, path) in [
        ("redis_tls_ca_file", &s.redis_tls_ca_file),
        ("redis_tls_cert_file", &s.redis_tls_cert_file),
        ("redis_tls_key_file", &s.redis_tls_key_file),
    ] {
        if let Some(path) = path
            && !path.is_file()
        {
            return Err(invalid(name, &path.display().to_string(), "no such file"));
        }
    }
    Ok(TlsFiles {
        ca: s.redis_tls_ca_file.clone(),
        client,
    })
}

/// The deployment `mode` names, with its `urls`: one for a single node, a
/// master's name for Sentinel.
fn redis_topology(
    mode: RedisMode,
    urls: Vec<String>,
    sentinel_master: Option<&str>,
) -> Result<RedisTopology, ConfigError> {
    match mode {
        RedisMode::Single => match <[String; 1]>::try_from(urls) {
            Ok([url]) => Ok(RedisTopology::Single(url)),
            Err(urls) => Err(invalid(
                "redis_url",
                &urls.len().to_string(),
                "single mode takes one URL; use redis_mode cluster or sentinel for several",
            )),
        },
        RedisMode::Sentinel => match sentinel_master.filter(|m| !m.is_empty()) {
            Some(master) => Ok(RedisTopology::Sentinel {
                master: master.to_owned(),
                sentinels: urls,
            }),
            None => Err(invalid(
                "redis_sentinel_master",
                "",
                "sentinel mode needs the master's name (--redis-sentinel-master)",
            )),
        },
        RedisMode::Cluster => Ok(RedisTopology::Cluster(urls)),
    }
}

/// The first setting that applies only to Redis and is given (not empty,
/// not its default), if any.
fn redis_only_setting(s: &Settings) -> Option<&'static str> {
    let d = Settings::default();
    let text = |v: &Option<String>| v.as_deref().is_some_and(|v| !v.is_empty());
    let file = |v: &Option<PathBuf>| v.as_ref().is_some_and(|p| !p.as_os_str().is_empty());
    [
        ("redis_mode", s.redis_mode != d.redis_mode),
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

/// Parses `250ms`, `10s`, `5m`, `1h` (a bare number is seconds); an error
/// names the setting `name`.
pub fn duration(name: &'static str, value: &str) -> Result<Duration, ConfigError> {
    value::parse_duration(value).map_err(|e| invalid(name, value, e.reason))
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
        let e = flag("max_concurrent_streams", "0").unwrap_err().to_string();
        assert!(e.contains("max_concurrent_streams"), "{e}");
        assert_eq!(
            e,
            "invalid setting max_concurrent_streams = \"0\": must be at least 1"
        );
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
        let zero = Settings::load(
            None,
            [],
            &[
                ("redis_url", Some("redis://x".into())),
                ("redis_command_timeout", Some("0s".into())),
            ],
        );
        assert!(
            zero.and_then(Config::try_from)
                .unwrap_err()
                .to_string()
                .contains("must be more than 0")
        );
        // Every way a value arrives: a YAML number is seconds, text from
        // the environment or a flag is parsed the same.
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("floodgate.yaml");
        std::fs::write(&file, "store_deadline: 2\nshutdown_grace: 250ms\n").unwrap();
        let env = [("FLOODGATE_IDLE_TIMEOUT".to_owned(), "5m".to_owned())];
        let s = Settings::load(Some(&file), env, &[("request_timeout", Some("1h".into()))]);
        let c = Config::try_from(s.unwrap()).unwrap();
        assert_eq!(c.resilience.store_deadline, Duration::from_secs(2));
        assert_eq!(c.shutdown_grace, Duration::from_millis(250));
        assert_eq!(c.listeners.idle_timeout, Duration::from_secs(300));
        assert_eq!(c.listeners.request_timeout, Duration::from_secs(3_600));
        let e = flag("store_deadline", "ten").unwrap_err().to_string();
        assert_eq!(
            e,
            "invalid setting store_deadline = \"ten\": expected a duration such as 250ms, 10s, 5m or 1h"
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
    fn an_unknown_floodgate_variable_or_file_key_is_refused_by_name() {
        let env = |name: &str| [(name.to_owned(), "x".to_owned())];
        let e = Settings::load(None, env("FLOODGATE_REDIS_URLL"), &[])
            .err()
            .unwrap()
            .to_string();
        assert_eq!(
            e,
            "unknown variable FLOODGATE_REDIS_URLL: no setting is called redis_urll: did you mean FLOODGATE_REDIS_URL?"
        );
        let e = Settings::load(None, env("FLOODGATE_NOTHING_LIKE_IT"), &[])
            .err()
            .unwrap()
            .to_string();
        assert_eq!(
            e,
            "unknown variable FLOODGATE_NOTHING_LIKE_IT: no setting is called nothing_like_it"
        );
        // Not settings, and not mistakes: the admin client's variables,
        // the test harness's, and those Kubernetes sets for a Service
        // called floodgate.
        for name in [
            "FLOODGATE_ADMIN_TLS_CA",
            "FLOODGATE_TEST_VENV",
            "FLOODGATE_SERVICE_HOST",
            "FLOODGATE_SERVICE_PORT_GRPC",
            "FLOODGATE_PORT",
            "FLOODGATE_PORT_8081_TCP_ADDR",
        ] {
            assert!(Settings::load(None, env(name), &[]).is_ok(), "{name}");
        }
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("floodgate.yaml");
        std::fs::write(&file, "grpc_addr: 127.0.0.1:1\nshadow_mod: true\n").unwrap();
        let e = Settings::load(Some(&file), [], &[])
            .err()
            .unwrap()
            .to_string();
        assert_eq!(
            e,
            format!(
                "unknown setting shadow_mod in {}: did you mean shadow_mode?",
                file.display()
            )
        );
    }

    #[test]
    fn invalid_values_name_the_setting() {
        let s = Settings {
            grpc_addr: "nowhere".into(),
            ..Settings::default()
        };
        let e = Config::try_from(s).unwrap_err().to_string();
        assert!(e.contains("grpc_addr") && e.contains("nowhere"), "{e}");
        assert!(
            flag("log_format", "xml")
                .unwrap_err()
                .to_string()
                .contains("log_format")
        );
        let e = flag("on_store_failure", "panic").unwrap_err().to_string();
        assert_eq!(
            e,
            "invalid setting on_store_failure = \"panic\": must be fallback, allow or deny"
        );
        assert_eq!(
            flag("log_format", "JSON").unwrap().log_format,
            LogFormat::Json
        );
    }

    /// The defaults with one setting given as a flag (text, as from the
    /// command line or the environment).
    fn flag(name: &str, value: &str) -> Result<Config, ConfigError> {
        Settings::load(None, [], &[(name, Some(value.to_owned()))]).and_then(Config::try_from)
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

    fn xds(extra: impl FnOnce(&mut Settings)) -> Result<Config, ConfigError> {
        let mut s = Settings {
            rules_xds_server: "envoy-gateway:18001".into(),
            ..Settings::default()
        };
        extra(&mut s);
        Config::try_from(s)
    }

    #[test]
    fn xds_settings_are_validated_once() {
        let config = xds(|s| {
            s.rules_xds_node_metadata = "zone=a, team = edge".into();
            s.rules_xds_headers = "X-Tenant:blue".into();
        })
        .unwrap();
        let x = config.rules_xds.unwrap();
        assert_eq!(x.server, "envoy-gateway:18001");
        assert_eq!(x.node_id, "floodgate");
        assert_eq!(x.node_metadata[1], ("team".into(), "edge".into()));
        assert_eq!(x.headers[0].0.as_str(), "x-tenant");
        assert!(Config::default().rules_xds.is_none());
        for (setting, value, says) in [
            ("rules_xds_server", "envoy-gateway", "must be host:port"),
            (
                "rules_xds_node_metadata",
                "zone",
                "each entry must be key=value",
            ),
            ("rules_xds_headers", "bad header:v", "is not a header name"),
            (
                "rules_xds_retry_max",
                "100ms",
                "must be at least rules_xds_retry_initial",
            ),
            (
                "rules_xds_cert_file",
                "/c.pem",
                "is set but rules_xds_ca_file is not",
            ),
            (
                "rules_xds_ca_file",
                "/no/such/ca.pem",
                "rules_xds_ca_file /no/such/ca.pem",
            ),
        ] {
            let text = error(xds(|s| match setting {
                "rules_xds_server" => s.rules_xds_server = value.into(),
                "rules_xds_node_metadata" => s.rules_xds_node_metadata = value.into(),
                "rules_xds_headers" => s.rules_xds_headers = value.into(),
                "rules_xds_retry_max" => {
                    s.rules_xds_retry_max = NonZeroDuration::or_shortest(Duration::from_millis(100))
                }
                "rules_xds_cert_file" => s.rules_xds_cert_file = Some(value.into()),
                _ => s.rules_xds_ca_file = Some(value.into()),
            }));
            assert!(
                text.contains(setting) && text.contains(says),
                "{setting}: {text}"
            );
        }
        let text = error(flag("rules_xds_ca_file", "/ca.pem"));
        assert!(
            text.contains("is set but rules_xds_server is not"),
            "{text}"
        );
    }

    #[test]
    fn redis_modes_are_validated_once() {
        let c = redis("redis://a:1,redis://b:2", |s| {
            s.redis_mode = RedisMode::Cluster
        })
        .unwrap();
        let r = c.redis.unwrap();
        assert!(
            r.topology == RedisTopology::Cluster(vec!["redis://a:1".into(), "redis://b:2".into()])
        );

        let e = error(redis("redis://a:1,redis://b:2", |_| {}));
        assert!(e.contains("single mode takes one URL"), "{e}");
        let e = error(
            Settings::load(
                None,
                [],
                &[
                    ("redis_url", Some("redis://a:1".into())),
                    ("redis_mode", Some("proxy".into())),
                ],
            )
            .and_then(Config::try_from),
        );
        assert!(e.contains("single, sentinel or cluster"), "{e}");
        let e = error(redis("redis://a:26379", |s| {
            s.redis_mode = RedisMode::Sentinel
        }));
        assert!(e.contains("redis_sentinel_master"), "{e}");
        let e = error(redis("http://a:1", |_| {}));
        assert!(e.contains("redis:// or rediss://"), "{e}");
        let e = error(redis("redis://a:1", |s| {
            s.redis_mode = RedisMode::Cluster;
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
    fn the_metrics_listener_takes_host_port_and_a_url_path() {
        let off = Config::try_from(Settings::default())
            .unwrap()
            .metrics_listener;
        assert_eq!(off.addr, None, "no metrics listener by default");
        assert_eq!(off.path, "/metrics");
        let env = [
            (
                "FLOODGATE_METRICS_ADDR".to_owned(),
                "0.0.0.0:19001".to_owned(),
            ),
            (
                "FLOODGATE_METRICS_PATH".to_owned(),
                "/stats/prometheus".to_owned(),
            ),
        ];
        let on = Settings::load(None, env, &[]).and_then(Config::try_from);
        let on = on.unwrap().metrics_listener;
        assert_eq!(on.addr, Some("0.0.0.0:19001".parse().unwrap()));
        assert_eq!(on.path, "/stats/prometheus");
        // Our setting is host:port: Go's `:19001` is compat's to translate.
        for bad in [":19001", "metrics:19001", "127.0.0.1", "127.0.0.1:99999"] {
            assert_eq!(
                error(flag("metrics_addr", bad)),
                format!(
                    "invalid setting metrics_addr = {bad:?}: expected host:port, e.g. 0.0.0.0:8081"
                ),
            );
        }
        let reason =
            "must be a URL path: / then visible ASCII characters but ? and #, e.g. /metrics";
        for bad in ["metrics", "", "/a b", "/metrics?x=1", "/m#x", "/é"] {
            assert_eq!(
                error(flag("metrics_path", bad)),
                format!("invalid setting metrics_path = {bad:?}: {reason}"),
            );
        }
        // Checked without a listener too, so a bad value never waits for one.
        assert!(error(flag("metrics_path", "m")).contains("metrics_path"));
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
        let e = error(flag("redis_mode", "bogus"));
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
            ("redis_mode", |s, _| s.redis_mode = RedisMode::Sentinel),
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
                s.redis_connect_timeout = "5s".parse().unwrap()
            }),
            ("redis_command_timeout", |s, _| {
                s.redis_command_timeout = "5s".parse().unwrap()
            }),
            ("redis_batch_max", |s, _| {
                s.redis_batch_max = NonZeroUsize::MIN
            }),
            ("expiration_jitter_max", |s, _| {
                s.expiration_jitter_max = HumanDuration(Duration::ZERO)
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

    /// The README's Configuration table (`| setting | env | flag | default
    /// | meaning |`) against [`Settings::default`], both ways: every setting
    /// has a row, every row names a setting, every default is the code's,
    /// rendered as the README writes it (`none`, `empty`, `10s`, `250ms`).
    #[test]
    fn the_readme_states_every_default_as_the_code_does() {
        let readme = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md"));
        let code = serde_json::to_value(Settings::default()).unwrap();
        let code = code.as_object().unwrap();
        let render = |v: &serde_json::Value| match v {
            serde_json::Value::Null => "none".to_owned(),
            serde_json::Value::String(s) if s.is_empty() => "empty".to_owned(),
            serde_json::Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        let ticked = |cell: &str| -> Vec<String> {
            cell.split('`')
                .skip(1)
                .step_by(2)
                .map(str::to_owned)
                .collect()
        };
        let mut seen = std::collections::BTreeSet::new();
        let rows = readme
            .lines()
            .skip_while(|l| !l.starts_with("| setting (file key) | env | flag | default |"))
            .skip(2)
            .take_while(|l| l.starts_with('|'));
        for row in rows {
            let cells: Vec<&str> = row.split('|').map(str::trim).collect();
            let (names, default) = (ticked(cells[1]), cells[4]);
            let defaults = match default.split_whitespace().next() {
                Some(word @ ("none" | "empty")) => vec![word.to_owned(); names.len()],
                _ => ticked(default),
            };
            assert_eq!(names.len(), defaults.len(), "README row: {row}");
            for (name, default) in names.iter().zip(defaults) {
                let value = code.get(name.as_str());
                assert!(value.is_some(), "README names an unknown setting {name}");
                assert_eq!(render(value.unwrap()), default, "default of {name}");
                assert!(seen.insert(name.clone()), "{name} twice in the README");
            }
        }
        let missing: Vec<_> = code.keys().filter(|k| !seen.contains(*k)).collect();
        assert!(
            missing.is_empty(),
            "settings missing from the README: {missing:?}"
        );
    }
}
