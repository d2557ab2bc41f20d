//! How the Redis store reaches Redis: one connection per topology (the
//! settings, validated once by [`crate::config`], are in `settings.rs`;
//! which connect failures are worth retrying is in `error.rs`).
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
    ClientTlsConfig, ConnectionInfo, IntoConnectionInfo, RedisError, TlsCertificates, TlsMode,
};

use super::error::{ConnectError, classify, invalid_url};
use super::sentinel::SentinelConnection;
use super::settings::{RedisSettings, RedisTopology, TlsFiles};

/// A live connection in one of the modes.
#[derive(Clone)]
pub(super) enum Connection {
    Single(ConnectionManager),
    Sentinel(SentinelConnection),
    Cluster(ClusterConnection),
}

/// Connects to `settings.topology`; the error says what went wrong and whether to retry.
pub(super) async fn connect(settings: &RedisSettings) -> Result<Connection, ConnectError> {
    let certs = certificates(&settings.tls)?;
    match &settings.topology {
        RedisTopology::Single(url) => connect_single(settings, url, certs).await,
        RedisTopology::Cluster(urls) => connect_cluster(settings, urls, certs).await,
        RedisTopology::Sentinel { master, sentinels } => {
            let connection =
                SentinelConnection::connect(settings, master, sentinels, certs).await?;
            Ok(Connection::Sentinel(connection))
        }
    }
}

/// A failed step, with the endpoints it was for.
fn failed(settings: &RedisSettings, what: &str, e: &RedisError) -> ConnectError {
    classify(&format!("{what} {}", settings.endpoints()), e)
}

/// One node, through a `ConnectionManager` that reconnects by itself.
async fn connect_single(
    settings: &RedisSettings,
    url: &str,
    certs: Option<TlsCertificates>,
) -> Result<Connection, ConnectError> {
    let info = node_info(url, settings)?;
    let client = match certs {
        Some(certs) => redis::Client::build_with_tls(info, certs),
        None => redis::Client::open(info),
    }
    .map_err(|e| failed(settings, "invalid Redis URL", &e))?;
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(settings.connect_timeout))
        .set_response_timeout(Some(settings.command_timeout))
        .set_number_of_retries(3)
        .set_min_delay(Duration::from_millis(50))
        .set_max_delay(Duration::from_secs(2));
    let manager = client
        .get_connection_manager_with_config(config)
        .await
        .map_err(|e| failed(settings, "cannot connect to Redis at", &e))?;
    Ok(Connection::Single(manager))
}

/// A cluster, from its seed nodes.
async fn connect_cluster(
    settings: &RedisSettings,
    urls: &[String],
    certs: Option<TlsCertificates>,
) -> Result<Connection, ConnectError> {
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
        .map_err(|e| failed(settings, "invalid Redis Cluster settings for", &e))?;
    let connection = client
        .get_async_connection()
        .await
        .map_err(|e| failed(settings, "cannot connect to Redis Cluster at", &e))?;
    Ok(Connection::Cluster(connection))
}

/// A data node's connection info: the URL with the configured credentials.
pub(super) fn node_info(
    url: &str,
    settings: &RedisSettings,
) -> Result<ConnectionInfo, ConnectError> {
    let info = url
        .into_connection_info()
        .map_err(|e| invalid_url(url, &e))?;
    let mut redis = info.redis_settings().clone();
    if let Some(user) = &settings.username {
        redis = redis.set_username(user);
    }
    if let Some(password) = &settings.password {
        redis = redis.set_password(password.expose());
    }
    Ok(info.set_redis_settings(redis))
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
    fn configured_credentials_override_the_url() {
        let mut s = RedisSettings::single("redis://old:pw@h:1");
        s.username = Some("floodgate".into());
        s.password = Some(Secret::new("new"));
        let info = node_info("redis://old:pw@h:1", &s).unwrap();
        assert_eq!(info.redis_settings().username(), Some("floodgate"));
        assert_eq!(info.redis_settings().password(), Some("new"));
    }
}
