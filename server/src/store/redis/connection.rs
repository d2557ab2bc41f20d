//! How the Redis store reaches Redis: one connection per topology (the
//! settings, validated once by [`crate::config`], are in `settings.rs`), and
//! which connect failures are worth retrying.
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

use std::path::Path;
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClientBuilder;
use redis::cluster_async::ClusterConnection;
use redis::{
    ClientTlsConfig, ConnectionAddr, ConnectionInfo, IntoConnectionInfo, RedisError,
    TlsCertificates, TlsMode,
};

use super::sentinel::SentinelConnection;
use super::settings::{RedisSettings, RedisTopology, TlsFiles, redact};

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

/// Connects to `settings.topology`; the error says what went wrong and whether to retry.
pub(super) async fn connect(settings: &RedisSettings) -> Result<Connection, ConnectError> {
    let endpoints = settings.endpoints();
    let certs = certificates(&settings.tls)?;
    let fail = |what: &str, e: RedisError| classify(&format!("{what} {endpoints}"), &e);
    match &settings.topology {
        RedisTopology::Single(url) => {
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
        RedisTopology::Cluster(urls) => {
            let nodes = urls
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
        RedisTopology::Sentinel { master, sentinels } => {
            let connection =
                SentinelConnection::connect(settings, master, sentinels, certs).await?;
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
    let read = |what: &str, path: &Path| {
        std::fs::read(path).map_err(|e| {
            ConnectError::Rejected(format!(
                "cannot read the Redis TLS {what} {}: {e}",
                path.display()
            ))
        })
    };
    let root_cert = tls.ca.as_deref().map(|p| read("CA file", p)).transpose()?;
    let client_tls = match &tls.client {
        Some(client) => Some(ClientTlsConfig {
            client_cert: read("client certificate", &client.cert)?,
            client_key: read("client key", &client.key)?,
        }),
        None => None,
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
    use crate::store::redis::settings::Secret;

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
}
