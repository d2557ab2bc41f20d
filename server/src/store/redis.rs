//! The Redis counter store: counters shared by every server instance.
//!
//! Each algorithm is one Lua function (`scripts/algorithms/*.lua`, each with
//! its contract); two drivers built from them run a request's checks in
//! **one** `EVALSHA` (one round trip, one command, whatever the mix of
//! algorithms): `apply.lua` applies each check, `all_or_nothing.lua` commits
//! them as a group. Scripts are loaded at connect and reloaded on `NOSCRIPT`.
//! Requests share one multiplexed connection (redis-rs `ConnectionManager`,
//! which reconnects by itself), so concurrent calls are pipelined on it
//! rather than queued for a pool.

use std::hash::{BuildHasher, RandomState};
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use super::{Check, Commit, CounterStore, StoreError, StoreFuture};
use crate::clock::Clock;
use crate::limiter::algorithm::{Algorithm, Outcome};

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
    scripts: Scripts,
    jitter_max_secs: u64,
    jitter: RandomState,
    endpoint: String,
    /// Where the bucket and sliding-window scripts take "now" from: Redis's
    /// own TIME (`None`, always in production) or this clock (tests).
    local_time: Option<Clock>,
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
        // Load the scripts up front so that the first burst of calls does
        // not race into NOSCRIPT; after a Redis restart, NOSCRIPT reloads them.
        let scripts = Scripts::default();
        scripts.load(&mut connection).await.map_err(|e| {
            StoreError::Unavailable(format!(
                "cannot load the counter scripts into Redis at {endpoint}: {e}"
            ))
        })?;
        Ok(RedisStore {
            connection,
            scripts,
            jitter_max_secs: settings.expiration_jitter_max.as_secs(),
            jitter: RandomState::new(),
            endpoint,
            local_time: None,
        })
    }

    /// A test knob: the scripts take "now" from `clock` instead of Redis's
    /// TIME, so a test can pin and move time. Production never sets it:
    /// Redis's clock is what lets instances with skewed clocks agree.
    pub fn with_local_time(mut self, clock: Clock) -> Self {
        self.local_time = Some(clock);
        self
    }

    /// The Redis address (host:port), without credentials.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// The fixed window's key TTL (the other algorithms set their own TTLs
    /// in their scripts and ignore this argument, so it costs nothing there).
    fn ttl_secs(&self, check: &Check) -> u64 {
        if check.algorithm != Algorithm::FixedWindow {
            return 0;
        }
        // A hash of the key is as good as a random number here and needs no
        // RNG: it spreads expiries evenly and is stable per key.
        let jitter = match self.jitter_max_secs {
            0 => 0,
            max => self.jitter.hash_one(check.key.as_str()) % max,
        };
        (check.rate.period_ms / 1_000.0).ceil().max(1.0) as u64 + jitter
    }
}

fn store_error(e: redis::RedisError) -> StoreError {
    if e.is_timeout() || e.is_io_error() || e.is_connection_dropped() || e.is_connection_refusal() {
        StoreError::Unavailable(e.to_string())
    } else {
        StoreError::Protocol(e.to_string())
    }
}

/// The algorithms, one Lua function each (`scripts/algorithms/*.lua`, with
/// their contracts), and what both drivers share (`scripts/common.lua`).
macro_rules! with_algorithms {
    ($driver:literal) => {
        concat!(
            include_str!("scripts/algorithms/fixed_window.lua"),
            include_str!("scripts/algorithms/sliding_window.lua"),
            include_str!("scripts/algorithms/token_bucket.lua"),
            include_str!("scripts/algorithms/gcra.lua"),
            include_str!("scripts/common.lua"),
            include_str!($driver),
        )
    };
}

/// The two drivers: every check on its own, or all or nothing.
#[derive(Clone, Debug)]
struct Scripts {
    apply: redis::Script,
    all_or_nothing: redis::Script,
}

impl Default for Scripts {
    fn default() -> Self {
        Scripts {
            apply: redis::Script::new(with_algorithms!("scripts/apply.lua")),
            all_or_nothing: redis::Script::new(with_algorithms!("scripts/all_or_nothing.lua")),
        }
    }
}

impl Scripts {
    fn get(&self, commit: Commit) -> &redis::Script {
        match commit {
            Commit::Each => &self.apply,
            Commit::AllOrNothing => &self.all_or_nothing,
        }
    }

    async fn load(&self, connection: &mut ConnectionManager) -> redis::RedisResult<()> {
        self.apply.load_async(connection).await?;
        self.all_or_nothing.load_async(connection).await?;
        Ok(())
    }
}

impl RedisStore {
    /// One EVALSHA for all of a request's checks (layout in `scripts/common.lua`).
    fn command(&self, checks: &[Check], commit: Commit) -> redis::Cmd {
        let mut cmd = redis::cmd("EVALSHA");
        cmd.arg(self.scripts.get(commit).get_hash())
            .arg(checks.len());
        for check in checks {
            cmd.arg(check.key.as_str());
        }
        match &self.local_time {
            Some(clock) => cmd.arg((clock.now().as_secs_f64() * 1_000.0).to_string()),
            None => cmd.arg(""),
        };
        for check in checks {
            let code = match check.algorithm {
                Algorithm::FixedWindow => "f",
                Algorithm::SlidingWindow => "s",
                Algorithm::TokenBucket => "t",
                Algorithm::Gcra => "g",
            };
            cmd.arg(code)
                .arg(check.hits)
                .arg(check.rate.limit)
                .arg(check.rate.period_ms)
                .arg(check.rate.burst)
                .arg(self.ttl_secs(check))
                .arg(check.reset_after.as_millis() as u64)
                .arg(if check.veto { "1" } else { "0" });
        }
        cmd
    }

    async fn run(
        &self,
        checks: &[Check],
        commit: Commit,
    ) -> Result<Vec<(i64, i64, i64)>, StoreError> {
        let cmd = self.command(checks, commit);
        let mut connection = self.connection.clone();
        match cmd.query_async(&mut connection).await {
            Err(e) if e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript) => {
                // Redis restarted or its scripts were flushed: load and retry once.
                self.scripts
                    .load(&mut connection)
                    .await
                    .map_err(store_error)?;
                cmd.query_async(&mut connection).await.map_err(store_error)
            }
            other => other.map_err(store_error),
        }
    }
}

fn millis_micros(us: i64) -> Duration {
    Duration::from_micros(us.max(0) as u64)
}

impl CounterStore for RedisStore {
    fn apply<'a>(&'a self, checks: &'a [Check], commit: Commit) -> StoreFuture<'a, Vec<Outcome>> {
        Box::pin(async move {
            if checks.is_empty() {
                return Ok(Vec::new());
            }
            let replies = self.run(checks, commit).await?;
            if replies.len() != checks.len() {
                let n = replies.len();
                return Err(StoreError::Protocol(format!(
                    "script returned {n} results for {} keys",
                    checks.len()
                )));
            }
            Ok(replies
                .into_iter()
                .map(|(allowed, remaining, reset_us)| Outcome {
                    allowed: allowed == 1,
                    remaining: remaining.max(0) as u64,
                    reset_after: millis_micros(reset_us),
                })
                .collect())
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
