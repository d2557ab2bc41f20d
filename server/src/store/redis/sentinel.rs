//! Sentinel mode: one multiplexed connection to the master that the
//! sentinels name, replaced when it stops being the master.
//!
//! redis-rs resolves a master through the sentinels (and checks its `ROLE`)
//! but does not follow failovers on an open connection. So this wrapper does:
//! when a command fails in a way that means "this is no longer the master"
//! (connection refused or dropped, `READONLY`, `MASTERDOWN`), the next caller
//! asks the sentinels again, once for everyone (single flight, keyed by a
//! connection generation). A command is retried on the new master only when
//! the failure proves it was not applied (refused, `READONLY`), so a retry
//! never counts a hit twice.
//!
//! While the sentinels still name a dead master, every attempt fails; the
//! failure is shared for [`RETRY_AFTER`] so that callers fail fast instead
//! of queueing one full attempt each, and no caller waits for the attempt
//! in progress longer than the command timeout.

/// How long a failed attempt to reach the master answers for everyone.
const RETRY_AFTER: Duration = Duration::from_millis(100);

use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use tokio::time::Instant;

use redis::aio::MultiplexedConnection;
use redis::sentinel::{SentinelClient, SentinelClientBuilder, SentinelServerType};
use redis::{
    AsyncConnectionConfig, Cmd, ConnectionAddr, ConnectionInfo, FromRedisValue, IntoConnectionInfo,
    RedisError, TlsCertificates, TlsMode,
};

use super::error::{ConnectError, classify, invalid_url};
use super::settings::RedisSettings;

/// The current master connection, re-resolved through the sentinels on failover.
#[derive(Clone)]
pub(crate) struct SentinelConnection {
    inner: Arc<Inner>,
}

struct Inner {
    /// Asks the sentinels; the lock makes re-resolution single-flight.
    client: tokio::sync::Mutex<SentinelClient>,
    /// The generation and connection in use.
    current: RwLock<Option<(u64, MultiplexedConnection)>>,
    config: AsyncConnectionConfig,
    context: String,
    /// The last failed attempt, shared for [`RETRY_AFTER`].
    last_failure: Mutex<Option<(Instant, RedisError)>>,
    /// Longest wait for another caller's attempt.
    wait: Duration,
}

impl SentinelConnection {
    /// Builds the sentinel client and connects to the current master.
    pub(crate) async fn connect(
        settings: &RedisSettings,
        master: &str,
        urls: &[String],
        certs: Option<TlsCertificates>,
    ) -> Result<Self, ConnectError> {
        let client = client(settings, master, urls, certs)?;
        let connection = SentinelConnection {
            inner: Arc::new(Inner {
                client: tokio::sync::Mutex::new(client),
                current: RwLock::new(None),
                config: AsyncConnectionConfig::new()
                    .set_connection_timeout(Some(settings.connect_timeout))
                    .set_response_timeout(Some(settings.command_timeout)),
                last_failure: Mutex::new(None),
                wait: settings.command_timeout,
                context: format!(
                    "cannot reach master {master:?} through the sentinels at {}",
                    settings.endpoints()
                ),
            }),
        };
        connection
            .reconnect(None)
            .await
            .map_err(|e| classify(&connection.inner.context, &e))?;
        Ok(connection)
    }

    /// Runs `cmd` on the master, following a failover if the master changed.
    /// `idempotent` commands (PING, SCRIPT LOAD) are always run again on the
    /// new master; others only when the failure proves they did not run.
    pub(crate) async fn query<T: FromRedisValue>(
        &self,
        cmd: &Cmd,
        idempotent: bool,
    ) -> Result<T, RedisError> {
        let (generation, mut connection) = match self.current() {
            Some(current) => current,
            None => self.reconnect(None).await?,
        };
        match cmd.query_async(&mut connection).await {
            Err(e) if master_changed(&e) => {
                tracing::warn!(error = %e, "Redis master lost; asking the sentinels for the new one");
                let (_, mut connection) = self.reconnect(Some(generation)).await?;
                if idempotent || not_applied(&e) {
                    cmd.query_async(&mut connection).await
                } else {
                    Err(e)
                }
            }
            other => other,
        }
    }

    fn last_failure(&self) -> Option<(Instant, RedisError)> {
        self.inner
            .last_failure
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn current(&self) -> Option<(u64, MultiplexedConnection)> {
        self.inner
            .current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Connects to the master the sentinels name now, unless another caller
    /// already replaced generation `stale`.
    async fn reconnect(
        &self,
        stale: Option<u64>,
    ) -> Result<(u64, MultiplexedConnection), RedisError> {
        let Ok(mut client) = tokio::time::timeout(self.inner.wait, self.inner.client.lock()).await
        else {
            return Err(RedisError::from(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "timed out waiting for the sentinels to name the master",
            )));
        };
        if let Some((generation, connection)) = self.current()
            && Some(generation) != stale
        {
            return Ok((generation, connection));
        }
        if let Some((at, e)) = self.last_failure()
            && at.elapsed() < RETRY_AFTER
        {
            return Err(e);
        }
        let connection = match client
            .get_async_connection_with_config(&self.inner.config)
            .await
        {
            Ok(connection) => connection,
            Err(e) => {
                *self
                    .inner
                    .last_failure
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner) = Some((Instant::now(), e.clone()));
                return Err(e);
            }
        };
        let mut current = self
            .inner
            .current
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        let generation = current.as_ref().map_or(0, |(g, _)| g + 1);
        *current = Some((generation, connection.clone()));
        if generation > 0 {
            tracing::info!(generation, "connected to the new Redis master");
        }
        Ok((generation, connection))
    }
}

/// The client that asks the sentinels for `master`, with the credentials
/// and TLS settings for both the sentinels and the data nodes.
fn client(
    settings: &RedisSettings,
    master: &str,
    urls: &[String],
    certs: Option<TlsCertificates>,
) -> Result<SentinelClient, ConnectError> {
    let (sentinels, sentinel_auth) = sentinels(urls)?;
    let tls = settings.uses_tls().then_some(TlsMode::Secure);
    let mut builder = SentinelClientBuilder::new(sentinels, master, SentinelServerType::Master)
        .map_err(|e| classify("invalid sentinel settings", &e))?;
    if let Some((user, password)) = sentinel_auth {
        if let Some(user) = user {
            builder = builder.set_client_to_sentinel_username(user);
        }
        if let Some(password) = password {
            builder = builder.set_client_to_sentinel_password(password);
        }
    }
    if let Some(user) = &settings.username {
        builder = builder.set_client_to_redis_username(user);
    }
    if let Some(password) = &settings.password {
        builder = builder.set_client_to_redis_password(password.expose());
    }
    if let Some(tls) = tls {
        builder = builder
            .set_client_to_redis_tls_mode(tls)
            .set_client_to_sentinel_tls_mode(tls);
    }
    if let Some(certs) = certs {
        builder = builder
            .set_client_to_redis_certificates(certs.clone())
            .set_client_to_sentinel_certificates(certs);
    }
    builder
        .build()
        .map_err(|e| classify("invalid sentinel settings", &e))
}

/// A sentinel's username and password (either may be absent).
type SentinelAuth = (Option<String>, Option<String>);

/// The sentinels' addresses, and the credentials of the first sentinel URL
/// that has a password.
fn sentinels(urls: &[String]) -> Result<(Vec<ConnectionAddr>, Option<SentinelAuth>), ConnectError> {
    let mut sentinels = Vec::with_capacity(urls.len());
    let mut sentinel_auth = None;
    for url in urls {
        let (addr, info) = address(url)?;
        let r = info.redis_settings();
        if sentinel_auth.is_none() && r.password().is_some() {
            sentinel_auth = Some((
                r.username().map(str::to_owned),
                r.password().map(str::to_owned),
            ));
        }
        sentinels.push(addr);
    }
    Ok((sentinels, sentinel_auth))
}

/// The address part of a URL (sentinels).
fn address(url: &str) -> Result<(ConnectionAddr, ConnectionInfo), ConnectError> {
    let info = url
        .into_connection_info()
        .map_err(|e| invalid_url(url, &e))?;
    Ok((info.addr().clone(), info))
}

/// The connection no longer leads to a writable master.
fn master_changed(e: &RedisError) -> bool {
    e.is_connection_dropped()
        || e.is_connection_refusal()
        || e.is_io_error()
        || matches!(
            e.kind(),
            redis::ErrorKind::Server(
                redis::ServerErrorKind::ReadOnly | redis::ServerErrorKind::MasterDown
            )
        )
}

/// The command certainly did not run, so running it again counts nothing twice.
fn not_applied(e: &RedisError) -> bool {
    e.is_connection_refusal()
        || matches!(
            e.kind(),
            redis::ErrorKind::Server(redis::ServerErrorKind::ReadOnly)
        )
}
