//! How the Redis store reaches Redis: the settings (mode, addresses,
//! credentials, TLS, timeouts), one connection per mode, and which connect
//! failures are worth retrying.
//!
//! - `single`: one node through redis-rs's `ConnectionManager`, which
//!   reconnects by itself with exponential backoff.
//! - `sentinel`: the master that the sentinels name, re-resolved after a
//!   failover (`sentinel.rs`).
//! - `cluster`: redis-rs's cluster client from seed nodes; it follows MOVED
//!   and ASK and refreshes the slot map when the topology changes.
//!
//! All three share one multiplexed connection per node, so concurrent calls
//! are pipelined on it rather than queued for a pool.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClientBuilder;
use redis::cluster_async::ClusterConnection;
use redis::{
    ClientTlsConfig, ConnectionAddr, ConnectionInfo, IntoConnectionInfo, RedisError,
    TlsCertificates, TlsMode,
};

use super::sentinel::SentinelConnection;

/// Which Redis deployment the store talks to.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum RedisMode {
    /// One node (primary), possibly behind a proxy.
    #[default]
    Single,
    /// A master found through Redis Sentinel.
    Sentinel,
    /// Redis Cluster.
    Cluster,
}

impl RedisMode {
    /// Parses `single`, `sentinel` or `cluster`.
    pub fn parse(s: &str) -> Option<RedisMode> {
        match s.to_ascii_lowercase().as_str() {
            "single" => Some(RedisMode::Single),
            "sentinel" => Some(RedisMode::Sentinel),
            "cluster" => Some(RedisMode::Cluster),
            _ => None,
        }
    }
}

/// A password: never printed (`Debug` shows `<redacted>`).
#[derive(Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret.
    pub fn new(s: impl Into<String>) -> Self {
        Secret(s.into())
    }

    /// The secret itself, for the one place that sends it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// TLS files for `rediss://` connections (PEM). With none set, the
/// platform's trust store verifies the server.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TlsFiles {
    /// CA certificate(s) that sign the server's certificate.
    pub ca: Option<PathBuf>,
    /// Client certificate, for servers that require one (`tls-auth-clients`).
    pub cert: Option<PathBuf>,
    /// The client certificate's private key.
    pub key: Option<PathBuf>,
}

/// Redis connection settings, validated by [`crate::config`]. `Debug`
/// shows the URLs without credentials.
#[derive(Clone)]
pub struct RedisSettings {
    /// Single, Sentinel or Cluster.
    pub mode: RedisMode,
    /// `redis://` or `rediss://` URLs: the node (single), the sentinels
    /// (sentinel) or the seed nodes (cluster). Credentials in a URL apply to
    /// that node; [`RedisSettings::username`] and [`RedisSettings::password`]
    /// override them for data nodes.
    pub urls: Vec<String>,
    /// Sentinel mode: the master's name in the sentinels' configuration.
    pub sentinel_master: Option<String>,
    /// ACL user for data nodes (none: `default`).
    pub username: Option<String>,
    /// Password for data nodes (from the setting, `FLOODGATE_REDIS_PASSWORD`
    /// or `redis_password_file`).
    pub password: Option<Secret>,
    /// TLS files, used with `rediss://` URLs.
    pub tls: TlsFiles,
    /// Longest wait for a connection.
    pub connect_timeout: Duration,
    /// Longest wait for a command's answer.
    pub command_timeout: Duration,
    /// A key's TTL is its window plus a random jitter below this, so that
    /// keys of one window do not all expire at the same instant.
    pub expiration_jitter_max: Duration,
    /// Most checks one coalesced EVALSHA carries; 1 sends every call on its
    /// own (single node and Sentinel; see `store/redis/batch.rs`).
    pub batch_max: usize,
}

impl RedisSettings {
    /// Settings for one plain node at `url`, with the defaults of
    /// [`crate::config`] (tests and benchmarks).
    pub fn single(url: impl Into<String>) -> Self {
        RedisSettings {
            mode: RedisMode::Single,
            urls: vec![url.into()],
            sentinel_master: None,
            username: None,
            password: None,
            tls: TlsFiles::default(),
            connect_timeout: Duration::from_secs(2),
            command_timeout: Duration::from_secs(1),
            expiration_jitter_max: Duration::ZERO,
            batch_max: 64,
        }
    }

    /// The addresses, without credentials, for logs and errors.
    pub fn endpoints(&self) -> String {
        self.urls
            .iter()
            .map(|u| redact(u))
            .collect::<Vec<_>>()
            .join(",")
    }

    fn uses_tls(&self) -> bool {
        self.urls.iter().any(|u| u.starts_with("rediss://"))
    }
}

impl fmt::Debug for RedisSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisSettings")
            .field("mode", &self.mode)
            .field("urls", &self.endpoints())
            .field("sentinel_master", &self.sentinel_master)
            .field("username", &self.username)
            .field("password", &self.password)
            .field("tls", &self.tls)
            .field("connect_timeout", &self.connect_timeout)
            .field("command_timeout", &self.command_timeout)
            .finish_non_exhaustive()
    }
}

/// `url` without its credentials.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            format!("{}{}", &url[..scheme + 3], &url[at + 1..])
        }
        _ => url.to_owned(),
    }
}

/// Why a connection attempt failed, and whether trying again may help.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// Redis is not reachable yet (refused, timed out, no master yet, cluster
    /// not formed): retried with backoff.
    #[error("{0}")]
    Unreachable(String),
    /// The settings or credentials are wrong (bad URL, wrong password,
    /// untrusted certificate): retrying will not help.
    #[error("{0}")]
    Rejected(String),
}

impl ConnectError {
    /// True if a later attempt may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(self, ConnectError::Unreachable(_))
    }
}

/// A live connection in one of the modes.
#[derive(Clone)]
pub(super) enum Connection {
    Single(ConnectionManager),
    Sentinel(SentinelConnection),
    Cluster(ClusterConnection),
}

/// Connects in `settings.mode`; the error says what went wrong and whether to retry.
pub(super) async fn connect(settings: &RedisSettings) -> Result<Connection, ConnectError> {
    let endpoints = settings.endpoints();
    let certs = certificates(&settings.tls)?;
    let fail = |what: &str, e: RedisError| classify(&format!("{what} {endpoints}"), &e);
    match settings.mode {
        RedisMode::Single => {
            let [url] = settings.urls.as_slice() else {
                return Err(ConnectError::Rejected(format!(
                    "single mode takes one Redis URL, got {}",
                    settings.urls.len()
                )));
            };
            let info = node_info(url, settings)?;
            let client = match certs {
                Some(certs) => redis::Client::build_with_tls(info, certs),
                None => redis::Client::open(info),
            }
            .map_err(|e| fail("invalid Redis URL", e))?;
            let config = ConnectionManagerConfig::new()
                .set_connection_timeout(Some(settings.connect_timeout))
                .set_response_timeout(Some(settings.command_timeout))
                .set_number_of_retries(3)
                .set_min_delay(Duration::from_millis(50))
                .set_max_delay(Duration::from_secs(2));
            let manager = client
                .get_connection_manager_with_config(config)
                .await
                .map_err(|e| fail("cannot connect to Redis at", e))?;
            Ok(Connection::Single(manager))
        }
        RedisMode::Cluster => {
            let nodes = settings
                .urls
                .iter()
                .map(|u| node_info(u, settings))
                .collect::<Result<Vec<_>, _>>()?;
            let mut builder = ClusterClientBuilder::new(nodes)
                .connection_timeout(settings.connect_timeout)
                .response_timeout(settings.command_timeout)
                // The whole call, redirects and retries included.
                .overall_response_timeout(Some(settings.command_timeout))
                // While a primary fails over, commands to its slots wait
                // and retry: about 50 ms, 100 ms, ... up to 1 s between tries.
                .retries(6)
                .min_retry_wait(50)
                .max_retry_wait(1_000);
            if let Some(user) = &settings.username {
                builder = builder.username(user);
            }
            if let Some(password) = &settings.password {
                builder = builder.password(password.expose());
            }
            if settings.uses_tls() {
                builder = builder.tls(TlsMode::Secure);
            }
            if let Some(certs) = certs {
                builder = builder.certs(certs);
            }
            let client = builder
                .build()
                .map_err(|e| fail("invalid Redis Cluster settings for", e))?;
            let connection = client
                .get_async_connection()
                .await
                .map_err(|e| fail("cannot connect to Redis Cluster at", e))?;
            Ok(Connection::Cluster(connection))
        }
        RedisMode::Sentinel => {
            let master = settings.sentinel_master.as_deref().ok_or_else(|| {
                ConnectError::Rejected("sentinel mode needs redis_sentinel_master".into())
            })?;
            let connection = SentinelConnection::connect(settings, master, certs).await?;
            Ok(Connection::Sentinel(connection))
        }
    }
}

/// A data node's connection info: the URL with the configured credentials.
pub(super) fn node_info(
    url: &str,
    settings: &RedisSettings,
) -> Result<ConnectionInfo, ConnectError> {
    let info = url
        .into_connection_info()
        .map_err(|e| ConnectError::Rejected(format!("invalid Redis URL {}: {e}", redact(url))))?;
    let mut redis = info.redis_settings().clone();
    if let Some(user) = &settings.username {
        redis = redis.set_username(user);
    }
    if let Some(password) = &settings.password {
        redis = redis.set_password(password.expose());
    }
    Ok(info.set_redis_settings(redis))
}

/// The address part of a URL (sentinels).
pub(super) fn address(url: &str) -> Result<(ConnectionAddr, ConnectionInfo), ConnectError> {
    let info = url
        .into_connection_info()
        .map_err(|e| ConnectError::Rejected(format!("invalid Redis URL {}: {e}", redact(url))))?;
    Ok((info.addr().clone(), info))
}

/// Reads the TLS files, if any are set.
pub(super) fn certificates(tls: &TlsFiles) -> Result<Option<TlsCertificates>, ConnectError> {
    let read = |what: &str, path: &PathBuf| {
        std::fs::read(path).map_err(|e| {
            ConnectError::Rejected(format!(
                "cannot read the Redis TLS {what} {}: {e}",
                path.display()
            ))
        })
    };
    let root_cert = tls.ca.as_ref().map(|p| read("CA file", p)).transpose()?;
    let client_tls = match (&tls.cert, &tls.key) {
        (Some(cert), Some(key)) => Some(ClientTlsConfig {
            client_cert: read("client certificate", cert)?,
            client_key: read("client key", key)?,
        }),
        (None, None) => None,
        _ => {
            return Err(ConnectError::Rejected(
                "redis_tls_cert_file and redis_tls_key_file go together".into(),
            ));
        }
    };
    if root_cert.is_none() && client_tls.is_none() {
        return Ok(None);
    }
    Ok(Some(TlsCertificates {
        client_tls,
        root_cert,
    }))
}

/// Sorts a connect failure: the cause in words, and whether to retry.
pub(super) fn classify(context: &str, e: &RedisError) -> ConnectError {
    if let Some(tls) = tls_error(e) {
        return ConnectError::Rejected(format!(
            "{context}: TLS handshake failed: {tls} (check redis_tls_ca_file and the server's certificate)"
        ));
    }
    // redis-rs reports a rejected password differently per mode: a
    // WRONGPASS reply (single), AuthenticationFailed, or an I/O error that
    // wraps it ("Failed to create initial connections ... authentication
    // failed", cluster). Look at the kind, the code and the text.
    let text = format!("{e} {}", e.detail().unwrap_or_default()).to_ascii_lowercase();
    let auth = matches!(e.kind(), redis::ErrorKind::AuthenticationFailed)
        || matches!(e.code(), Some("WRONGPASS" | "NOAUTH" | "NOPERM"))
        || [
            "wrongpass",
            "noauth",
            "noperm",
            "authentication failed",
            "authentication required",
        ]
        .iter()
        .any(|needle| text.contains(needle));
    if auth {
        return ConnectError::Rejected(format!(
            "{context}: authentication failed ({e}); check redis_username and redis_password"
        ));
    }
    if matches!(
        e.kind(),
        redis::ErrorKind::InvalidClientConfig | redis::ErrorKind::EmptySentinelList
    ) {
        return ConnectError::Rejected(format!("{context}: {e}"));
    }
    ConnectError::Unreachable(format!("{context}: {e}"))
}

/// The rustls error under `e`, if the failure was a TLS one.
fn tls_error(e: &RedisError) -> Option<String> {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = source {
        if let Some(tls) = err.downcast_ref::<rustls::Error>() {
            return Some(tls.to_string());
        }
        if let Some(io) = err.downcast_ref::<std::io::Error>()
            && let Some(tls) = io.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>())
        {
            return Some(tls.to_string());
        }
        source = err.source();
    }
    // redis-rs may carry the rustls error as text only. Only verdicts on
    // certificates count: a connection closed mid-handshake ("tls handshake
    // eof", a proxy without a backend yet) may well work on the next try.
    let text = e.to_string();
    let lower = text.to_ascii_lowercase();
    (lower.contains("certificate") || lower.contains("fatal alert")).then_some(text)
}

/// Installs the process's TLS crypto provider (ring) once; redis-rs brings
/// rustls without one.
pub(super) fn install_crypto_provider() {
    // Err means a provider is installed already, which is as good.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_never_reach_logs() {
        assert_eq!(
            redact("redis://user:pw@127.0.0.1:6379/0"),
            "redis://127.0.0.1:6379/0"
        );
        assert_eq!(redact("rediss://127.0.0.1:6380"), "rediss://127.0.0.1:6380");
        assert_eq!(format!("{:?}", Secret::new("hunter2")), "<redacted>");
        let mut s = RedisSettings::single("redis://a:b@h:1");
        s.password = Some(Secret::new("hunter2"));
        s.urls = vec!["redis://a:pw-in-url@h:1".into()];
        let shown = format!("{s:?} {}", s.endpoints());
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(!shown.contains("pw-in-url"), "{shown}");
        s.urls = vec!["redis://a:b@h:1".into()];
        assert!(s.endpoints() == "redis://h:1");
    }

    #[test]
    fn rejected_credentials_and_certificates_are_final_the_rest_is_retried() {
        use redis::ErrorKind;
        let final_ = |e: RedisError| !classify("ctx", &e).is_transient();
        // Cluster mode wraps a wrong password in an I/O error.
        assert!(final_(RedisError::from((
            ErrorKind::Io,
            "Failed to create initial connections",
            "Io: Password authentication failed - AuthenticationFailed".to_owned(),
        ))));
        assert!(final_(RedisError::from((
            ErrorKind::AuthenticationFailed,
            "Password authentication failed"
        ))));
        let unknown_issuer = std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer),
        );
        assert!(final_(RedisError::from(unknown_issuer)));
        // Not up yet, or a proxy closing mid-handshake: try again.
        let refused = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        assert!(!final_(RedisError::from(refused)));
        let eof = std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "tls handshake eof");
        assert!(!final_(RedisError::from(eof)));
    }

    #[test]
    fn configured_credentials_override_the_url() {
        let mut s = RedisSettings::single("redis://old:pw@h:1");
        s.username = Some("floodgate".into());
        s.password = Some(Secret::new("new"));
        let info = node_info("redis://old:pw@h:1", &s).unwrap();
        assert_eq!(info.redis_settings().username(), Some("floodgate"));
        assert_eq!(info.redis_settings().password(), Some("new"));
    }

    #[test]
    fn modes() {
        assert_eq!(RedisMode::parse("Cluster"), Some(RedisMode::Cluster));
        assert_eq!(RedisMode::parse("sentinel"), Some(RedisMode::Sentinel));
        assert_eq!(RedisMode::parse("single"), Some(RedisMode::Single));
        assert_eq!(RedisMode::parse("proxy"), None);
    }
}
