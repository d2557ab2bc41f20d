//! A store that is still connecting: what the resilient store wraps while
//! Redis is not up yet at startup. Every call fails fast (so the failure
//! policy answers, and `floodgate.store` health says NOT_SERVING) until
//! [`connect_redis`], a background task of [`crate::run`], hands over the
//! connected store; from then on calls go straight to it. [`open_redis`]
//! decides at startup which of the two the server starts with.

use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Duration;

use tokio::sync::watch;

use super::redis::{ConnectError, RedisSettings, RedisStore};
use super::{Applied, CallOptions, Check, CounterStore, StoreError, StoreFuture, WindowCount};
use crate::backoff::{Backoff, Jitter};

/// Connects to Redis once. Settings that Redis rejects (wrong password,
/// untrusted certificate) are an error; a Redis that is not up yet is not:
/// the answer is then a [`Connecting`] store, to hand to [`connect_redis`].
pub async fn open_redis(
    settings: &RedisSettings,
) -> Result<(Arc<dyn CounterStore>, Option<Arc<Connecting>>), ConnectError> {
    match RedisStore::connect(settings).await {
        Ok(connected) => {
            tracing::info!(mode = ?settings.mode(), endpoint = connected.endpoint(), "connected to Redis");
            Ok((Arc::new(connected), None))
        }
        Err(e) if e.is_transient() => {
            tracing::warn!(error = %e, "Redis is not reachable yet; answering in degraded mode until it is");
            let connecting = Arc::new(Connecting::new("redis", e.to_string()));
            Ok((connecting.clone(), Some(connecting)))
        }
        Err(e) => Err(e),
    }
}

/// Connects to Redis in the background after a failed first attempt:
/// retries with exponential backoff (100 ms doubling to 5 s, plus up to a
/// quarter more), then hands the store over (the health check then routes
/// calls to it). Returns an error, which stops the server, only if Redis
/// rejects the settings; stops quietly when `drain` turns true.
pub async fn connect_redis(
    connecting: Arc<Connecting>,
    settings: RedisSettings,
    mut drain: watch::Receiver<bool>,
) -> Result<(), ConnectError> {
    let backoff = Backoff::new(
        Duration::from_millis(100),
        Duration::from_secs(5),
        2.0,
        Jitter::UpToAQuarterMore,
    );
    let mut attempts = 1u32;
    loop {
        tokio::select! {
            () = tokio::time::sleep(backoff.wait(attempts)) => {}
            _ = drain.wait_for(|d| *d) => return Ok(()),
        }
        attempts += 1;
        match RedisStore::connect(&settings).await {
            Ok(store) => {
                tracing::info!(attempts, endpoint = store.endpoint(), "connected to Redis");
                connecting.connected(Arc::new(store));
                return Ok(());
            }
            Err(e) if e.is_transient() => {
                tracing::warn!(attempts, error = %e, retry_in = ?backoff.bound(attempts), "Redis still not reachable");
                connecting.failed(e.to_string());
            }
            Err(e) => return Err(e),
        }
    }
}

/// Stands in for a store until it is connected.
#[derive(Debug)]
pub struct Connecting {
    store: OnceLock<Arc<dyn CounterStore>>,
    last_error: Mutex<String>,
    kind: &'static str,
}

impl Connecting {
    /// Not connected yet; `error` says why.
    pub fn new(kind: &'static str, error: String) -> Self {
        Connecting {
            store: OnceLock::new(),
            last_error: Mutex::new(error),
            kind,
        }
    }

    /// Records the latest failed attempt.
    pub fn failed(&self, error: String) {
        *self
            .last_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = error;
    }

    /// Hands over the connected store.
    pub fn connected(&self, store: Arc<dyn CounterStore>) {
        // A second store would be a bug in the connector; keep the first.
        let _ = self.store.set(store);
    }

    /// True once connected.
    pub fn is_connected(&self) -> bool {
        self.store.get().is_some()
    }

    fn not_yet(&self) -> StoreError {
        let last = self
            .last_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        StoreError::NotSent(format!("not connected yet: {last}"))
    }
}

impl CounterStore for Connecting {
    fn apply<'a>(&'a self, checks: &'a [Check], options: CallOptions) -> StoreFuture<'a, Applied> {
        match self.store.get() {
            Some(store) => store.apply(checks, options),
            None => {
                let e = self.not_yet();
                Box::pin(async move { Err(e) })
            }
        }
    }

    fn add<'a>(&'a self, counts: &'a [WindowCount]) -> StoreFuture<'a, ()> {
        match self.store.get() {
            Some(store) => store.add(counts),
            None => {
                let e = self.not_yet();
                Box::pin(async move { Err(e) })
            }
        }
    }

    fn reset<'a>(&'a self, keys: &'a [String]) -> StoreFuture<'a, u64> {
        match self.store.get() {
            Some(store) => store.reset(keys),
            None => {
                let e = self.not_yet();
                Box::pin(async move { Err(e) })
            }
        }
    }

    fn quota<'a>(
        &'a self,
        call: &'a super::quota::QuotaCall,
    ) -> StoreFuture<'a, super::quota::QuotaApplied> {
        match self.store.get() {
            Some(store) => store.quota(call),
            None => {
                let e = self.not_yet();
                Box::pin(async move { Err(e) })
            }
        }
    }

    fn ping(&self) -> StoreFuture<'_, ()> {
        match self.store.get() {
            Some(store) => store.ping(),
            None => {
                let e = self.not_yet();
                Box::pin(async move { Err(e) })
            }
        }
    }

    fn kind(&self) -> &'static str {
        self.kind
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::Clock;
    use crate::store::Commit;
    use crate::store::memory::MemoryStore;

    #[tokio::test]
    async fn fails_fast_until_connected_then_delegates() {
        let connecting = Connecting::new("redis", "connection refused".into());
        let err = connecting.ping().await.unwrap_err();
        assert!(err.is_transient());
        assert!(
            err.to_string()
                .contains("not connected yet: connection refused"),
            "{err}"
        );
        connecting.failed("timed out".into());
        assert!(
            connecting
                .apply(&[], Commit::Each.into())
                .await
                .unwrap_err()
                .to_string()
                .contains("timed out")
        );
        assert!(!connecting.is_connected());
        connecting.connected(Arc::new(MemoryStore::new(10, Clock::System)));
        assert!(connecting.is_connected());
        connecting.ping().await.unwrap();
        assert_eq!(
            connecting.apply(&[], Commit::Each.into()).await.unwrap(),
            Applied::default()
        );
    }
}
