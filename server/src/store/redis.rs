//! The Redis counter store: counters shared by every server instance.
//!
//! Each algorithm is one Lua script (`scripts/*.lua`, each with its
//! KEYS/ARGV/return contract). A request's checks are grouped by algorithm
//! and sent as one pipeline: one round trip, one `EVALSHA` per algorithm
//! present (usually one). Scripts are loaded at connect and reloaded on
//! `NOSCRIPT`. Requests share one multiplexed connection (redis-rs
//! `ConnectionManager`, which reconnects by itself), so concurrent calls are
//! pipelined on it rather than queued for a pool.

use std::hash::{BuildHasher, RandomState};
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use super::{Check, CounterStore, StoreError, StoreFuture};
use crate::clock::Clock;
use crate::limiter::algorithm::{self, Algorithm, Outcome};

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

    fn ttl_secs(&self, check: &Check) -> u64 {
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

/// The scripts, one per algorithm.
#[derive(Clone, Debug)]
struct Scripts {
    fixed_window: redis::Script,
    sliding_window: redis::Script,
    token_bucket: redis::Script,
    gcra: redis::Script,
}

impl Default for Scripts {
    fn default() -> Self {
        Scripts {
            fixed_window: redis::Script::new(include_str!("scripts/fixed_window.lua")),
            sliding_window: redis::Script::new(include_str!("scripts/sliding_window.lua")),
            token_bucket: redis::Script::new(include_str!("scripts/token_bucket.lua")),
            gcra: redis::Script::new(include_str!("scripts/gcra.lua")),
        }
    }
}

impl Scripts {
    fn get(&self, algorithm: Algorithm) -> &redis::Script {
        match algorithm {
            Algorithm::FixedWindow => &self.fixed_window,
            Algorithm::SlidingWindow => &self.sliding_window,
            Algorithm::TokenBucket => &self.token_bucket,
            Algorithm::Gcra => &self.gcra,
        }
    }

    async fn load(&self, connection: &mut ConnectionManager) -> redis::RedisResult<()> {
        for script in [
            &self.fixed_window,
            &self.sliding_window,
            &self.token_bucket,
            &self.gcra,
        ] {
            script.load_async(connection).await?;
        }
        Ok(())
    }
}

const ALGORITHMS: [Algorithm; 4] = [
    Algorithm::FixedWindow,
    Algorithm::SlidingWindow,
    Algorithm::TokenBucket,
    Algorithm::Gcra,
];

/// What one script call returns per key.
enum Reply {
    Counts(Vec<i64>),
    Outcomes(Vec<(i64, i64, i64)>),
}

impl RedisStore {
    /// One pipeline: an EVALSHA per algorithm present, in [`ALGORITHMS`] order.
    fn pipeline(&self, checks: &[Check]) -> redis::Pipeline {
        let mut pipe = redis::pipe();
        for algorithm in ALGORITHMS {
            let group: Vec<&Check> = checks.iter().filter(|c| c.algorithm == algorithm).collect();
            if group.is_empty() {
                continue;
            }
            let cmd = pipe
                .cmd("EVALSHA")
                .arg(self.scripts.get(algorithm).get_hash())
                .arg(group.len());
            for check in &group {
                cmd.arg(check.key.as_str());
            }
            if algorithm != Algorithm::FixedWindow {
                // ARGV[1]: now in ms, or empty for Redis's TIME.
                match &self.local_time {
                    Some(clock) => cmd.arg((clock.now().as_secs_f64() * 1_000.0).to_string()),
                    None => cmd.arg(""),
                };
            }

            for check in &group {
                cmd.arg(check.hits);
                match algorithm {
                    Algorithm::FixedWindow => cmd.arg(self.ttl_secs(check)),
                    Algorithm::SlidingWindow => cmd.arg(check.rate.limit).arg(check.rate.period_ms),
                    Algorithm::TokenBucket | Algorithm::Gcra => cmd
                        .arg(check.rate.limit)
                        .arg(check.rate.period_ms)
                        .arg(check.rate.burst),
                };
            }
        }
        pipe
    }

    async fn run(&self, checks: &[Check]) -> Result<Vec<redis::Value>, StoreError> {
        let pipe = self.pipeline(checks);
        let mut connection = self.connection.clone();
        match pipe.query_async(&mut connection).await {
            Err(e) if e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript) => {
                // Redis restarted or its scripts were flushed: load and retry once.
                self.scripts
                    .load(&mut connection)
                    .await
                    .map_err(store_error)?;
                pipe.query_async(&mut connection).await.map_err(store_error)
            }
            other => other.map_err(store_error),
        }
    }
}

fn millis_micros(us: i64) -> Duration {
    Duration::from_micros(us.max(0) as u64)
}

impl CounterStore for RedisStore {
    fn apply<'a>(&'a self, checks: &'a [Check]) -> StoreFuture<'a, Vec<Outcome>> {
        Box::pin(async move {
            if checks.is_empty() {
                return Ok(Vec::new());
            }
            let replies = self.run(checks).await?;
            let mut replies = replies.into_iter();
            let mut outcomes: Vec<Option<Outcome>> = vec![None; checks.len()];
            for algorithm in ALGORITHMS {
                let at: Vec<usize> = (0..checks.len())
                    .filter(|&i| checks[i].algorithm == algorithm)
                    .collect();
                if at.is_empty() {
                    continue;
                }
                let value = replies
                    .next()
                    .ok_or_else(|| StoreError::Protocol("missing script reply".into()))?;
                let reply = match algorithm {
                    Algorithm::FixedWindow => redis::from_redis_value(value).map(Reply::Counts),
                    _ => redis::from_redis_value(value).map(Reply::Outcomes),
                }
                .map_err(|e| StoreError::Protocol(format!("unexpected script reply: {e}")))?;
                let got = match &reply {
                    Reply::Counts(c) => c.len(),
                    Reply::Outcomes(o) => o.len(),
                };
                if got != at.len() {
                    return Err(StoreError::Protocol(format!(
                        "script returned {got} results for {} keys",
                        at.len()
                    )));
                }
                for (n, &i) in at.iter().enumerate() {
                    let check = &checks[i];
                    outcomes[i] = Some(match &reply {
                        Reply::Counts(c) => algorithm::fixed_window(
                            c[n].max(0) as u64,
                            check.rate.limit,
                            check.reset_after,
                        ),
                        Reply::Outcomes(o) => {
                            let (allowed, remaining, reset_us) = o[n];
                            Outcome {
                                allowed: allowed == 1,
                                remaining: remaining.max(0) as u64,
                                reset_after: millis_micros(reset_us),
                            }
                        }
                    });
                }
            }
            outcomes
                .into_iter()
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| StoreError::Protocol("a check got no result".into()))
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
