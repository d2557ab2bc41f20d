//! A store that is still connecting: what the resilient store wraps while
//! Redis is not up yet at startup. Every call fails fast (so the failure
//! policy answers, and `floodgate.store` health says NOT_SERVING) until the
//! connector in [`crate::run`] hands over the connected store; from then on
//! calls go straight to it.

use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use super::{Applied, CallOptions, Check, CounterStore, StoreError, StoreFuture, WindowCount};

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
