//! The Redis counter store: counters shared by every server instance.
//!
//! All of a request's counters go to Redis in one `EVALSHA` of
//! `scripts/fixed_window.lua` (one round trip, one command), which increments
//! each key and sets its TTL in the same atomic step. The script is sent by
//! hash and loaded on `NOSCRIPT`. Requests share one multiplexed connection
//! (redis-rs `ConnectionManager`, which reconnects by itself), so concurrent
//! calls are pipelined on it rather than queued for a pool.

use std::hash::{BuildHasher, RandomState};
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use super::{CounterHit, CounterStore, StoreError, StoreFuture};

/// Redis connection settings.
#[derive(Clone, Debug)]
pub struct RedisSettings {
    /// `redis://[user:password@]host:port[/db]`.
    pub url: String,
    /// Longest wait for a connection.
    pub connect_timeout: Duration,
    /// Longest wait for a command's answer.
    pub command_timeout: Duration,
    /// A key's TTL is its window plus a random jitter below this, so that
    /// keys of one window do not all expire at the same instant.
    pub expiration_jitter_max: Duration,
}

/// Fixed-window counters in a single Redis node.
#[derive(Clone)]
pub struct RedisStore {
    connection: ConnectionManager,
    script: redis::Script,
    jitter_max_secs: u64,
    jitter: RandomState,
    endpoint: String,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("endpoint", &self.endpoint)
            .finish_non_exhaustive()
    }
}

impl RedisStore {
    /// Connects to Redis. Fails if the URL is invalid or Redis cannot be reached.
    pub async fn connect(settings: &RedisSettings) -> Result<Self, StoreError> {
        let client = redis::Client::open(settings.url.as_str())
            .map_err(|e| StoreError::Protocol(format!("invalid Redis URL: {e}")))?;
        let endpoint = client.get_connection_info().addr().to_string();
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(settings.connect_timeout))
            .set_response_timeout(Some(settings.command_timeout))
            .set_number_of_retries(2);
        let mut connection = client
            .get_connection_manager_with_config(config)
            .await
            .map_err(|e| {
                StoreError::Unavailable(format!("cannot connect to Redis at {endpoint}: {e}"))
            })?;
        // Load the script up front so that the first burst of calls does not
        // race into NOSCRIPT; after a Redis restart, EVALSHA's NOSCRIPT path
        // reloads it.
        let script = redis::Script::new(include_str!("scripts/fixed_window.lua"));
        script.load_async(&mut connection).await.map_err(|e| {
            StoreError::Unavailable(format!(
                "cannot load the counter script into Redis at {endpoint}: {e}"
            ))
        })?;
        Ok(RedisStore {
            connection,
            script,
            jitter_max_secs: settings.expiration_jitter_max.as_secs(),
            jitter: RandomState::new(),
            endpoint,
        })
    }

    /// The Redis address (host:port), without credentials.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    fn ttl_secs(&self, hit: &CounterHit) -> u64 {
        // A hash of the key is as good as a random number here and needs no
        // RNG: it spreads expiries evenly and is stable per key.
        let jitter = match self.jitter_max_secs {
            0 => 0,
            max => self.jitter.hash_one(hit.key.as_str()) % max,
        };
        hit.window.as_secs().max(1) + jitter
    }
}

fn store_error(e: redis::RedisError) -> StoreError {
    if e.is_timeout() || e.is_io_error() || e.is_connection_dropped() || e.is_connection_refusal() {
        StoreError::Unavailable(e.to_string())
    } else {
        StoreError::Protocol(e.to_string())
    }
}

impl CounterStore for RedisStore {
    fn increment<'a>(&'a self, hits: &'a [CounterHit]) -> StoreFuture<'a, Vec<u64>> {
        Box::pin(async move {
            if hits.is_empty() {
                return Ok(Vec::new());
            }
            let mut invocation = self.script.prepare_invoke();
            for hit in hits {
                invocation
                    .key(hit.key.as_str())
                    .arg(hit.hits)
                    .arg(self.ttl_secs(hit));
            }
            let mut connection = self.connection.clone();
            let counts: Vec<i64> = invocation
                .invoke_async(&mut connection)
                .await
                .map_err(store_error)?;
            if counts.len() != hits.len() {
                return Err(StoreError::Protocol(format!(
                    "script returned {} counts for {} keys",
                    counts.len(),
                    hits.len()
                )));
            }
            Ok(counts.into_iter().map(|c| c.max(0) as u64).collect())
        })
    }

    fn ping(&self) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            let mut connection = self.connection.clone();
            redis::cmd("PING")
                .query_async::<()>(&mut connection)
                .await
                .map_err(store_error)
        })
    }

    fn kind(&self) -> &'static str {
        "redis"
    }
}
