//! The Redis counter store: counters shared by every server instance.
//!
//! Each algorithm is one Lua function (`scripts/algorithms/*.lua`, each with
//! its contract); three drivers built from them run checks in **one**
//! `EVALSHA` (one round trip, one command, whatever the mix of algorithms):
//! `apply.lua` applies each check, `all_or_nothing.lua` commits them as a
//! group, `peek.lua` only looks. Scripts are loaded at connect (on every
//! primary of a cluster) and reloaded on `NOSCRIPT`.
//!
//! [`settings`] says what to connect to (one node, Sentinel or Cluster, as a
//! [`RedisTopology`]), validated once by [`crate::config`]; [`connection`]
//! reaches Redis in each topology (following a Sentinel failover in
//! `sentinel.rs`); a failed attempt is a [`ConnectError`] (`error.rs`). On a
//! single node or a Sentinel-managed master a request is one `EVALSHA` over
//! all its keys; on Redis Cluster it is one `EVALSHA` per hash slot, sent concurrently
//! (`cluster.rs`). Under load, concurrent calls share one `EVALSHA`
//! (`batch.rs`: nothing waits to fill a batch): one per batch on a single
//! node or Sentinel, one per primary per batch on a cluster (Redis 7 and
//! later: `apply_node.lua`).

mod batch;
mod cluster;
pub mod connection;
mod error;
mod sentinel;
pub mod settings;

use std::hash::{BuildHasher, RandomState};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use self::connection::{Connection, connect, install_crypto_provider};
pub use self::error::ConnectError;
pub use self::settings::{
    ClientCertificate, RedisMode, RedisSettings, RedisTopology, Secret, TlsFiles,
};
use super::{
    Applied, CallOptions, Check, Commit, CounterStore, Limit, StoreError, StoreFuture, WindowCount,
};
use crate::clock::Clock;
use crate::model::algorithm::Outcome;
use crate::model::capacity::{Decided, Verdict};

/// Counters in Redis: one node, a Sentinel-managed master, or a cluster.
#[derive(Clone)]
pub struct RedisStore {
    connection: Connection,
    scripts: Scripts,
    jitter_max_secs: u64,
    jitter: RandomState,
    endpoint: String,
    mode: RedisMode,
    /// Where the bucket and sliding-window scripts take "now" from: Redis's
    /// own TIME (`None`, always in production) or this clock (tests).
    local_time: Option<Clock>,
    /// Most checks one coalesced EVALSHA carries (1: no coalescing).
    batch_max: usize,
    /// The coalescing task's handle, started by the first call (inside the
    /// runtime) and shared by the store's clones.
    batch: Arc<OnceLock<Arc<batch::Batcher>>>,
    /// Cluster: `apply_node.lua` loaded on every primary (Redis 7 and
    /// later), so coalescing sends one script per primary.
    per_node: bool,
    /// Cluster: which primary serves each slot, fetched when first needed
    /// and dropped when a script met a key its node does not serve.
    owners: Arc<std::sync::Mutex<Option<Arc<cluster::SlotOwners>>>>,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("mode", &self.mode)
            .field("endpoint", &self.endpoint)
            .finish_non_exhaustive()
    }
}

impl RedisStore {
    /// Connects to Redis and loads the scripts. The error says whether a
    /// later attempt may succeed (Redis not up yet) or not (bad settings,
    /// wrong password, untrusted certificate).
    pub async fn connect(settings: &RedisSettings) -> Result<Self, ConnectError> {
        install_crypto_provider();
        let connection = connect(settings).await?;
        let endpoint = settings.endpoints();
        let store = RedisStore {
            connection,
            scripts: Scripts::default(),
            jitter_max_secs: settings.expiration_jitter_max.as_secs(),
            jitter: RandomState::new(),
            endpoint,
            mode: settings.mode(),
            local_time: None,
            batch_max: settings.batch_max,
            batch: Arc::default(),
            per_node: false,
            owners: Arc::default(),
        };
        // Load the scripts up front so that the first burst of calls does
        // not race into NOSCRIPT; after a Redis restart, NOSCRIPT reloads them.
        store.load_scripts().await.map_err(|e| {
            error::classify(
                &format!(
                    "cannot load the counter scripts into Redis at {}",
                    store.endpoint
                ),
                &e,
            )
        })?;
        Ok(store.with_per_node().await)
    }

    /// On a cluster, loads `apply_node.lua` on every primary; where that
    /// fails (Redis before 7), coalescing stays off and each call sends
    /// one script per slot, as before.
    async fn with_per_node(mut self) -> Self {
        if self.mode == RedisMode::Cluster && self.batch_max > 1 {
            match self.load_on(&self.scripts.apply_node, Primaries::All).await {
                Ok(()) => self.per_node = true,
                Err(e) => tracing::warn!(
                    error = %e,
                    "Redis Cluster: cannot load the per-node script (Redis 7 or later needed): \
                     calls are not coalesced"
                ),
            }
        }
        self
    }

    /// The coalescing task (single node, Sentinel, and a cluster whose
    /// primaries took `apply_node.lua`), started on first use over a copy
    /// of this store that sends each batch itself. Called from a call, so
    /// always inside the runtime.
    fn batcher(&self) -> Option<&Arc<batch::Batcher>> {
        if self.batch_max <= 1 || (self.mode == RedisMode::Cluster && !self.per_node) {
            return None;
        }
        Some(self.batch.get_or_init(|| {
            let sender = RedisStore {
                batch_max: 1,
                batch: Arc::default(),
                ..self.clone()
            };
            batch::Batcher::start(sender, self.batch_max)
        }))
    }

    /// A test knob: the scripts take "now" from `clock` instead of Redis's
    /// TIME, so a test can pin and move time. Production never sets it:
    /// Redis's clock is what lets instances with skewed clocks agree.
    pub fn with_local_time(mut self, clock: Clock) -> Self {
        self.local_time = Some(clock);
        // A batcher started before holds a copy without this clock.
        self.batch = Arc::default();
        self
    }

    /// The Redis addresses, without credentials.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// The fixed window's key TTL: the window plus a jitter.
    fn ttl_secs(&self, key: &str, period_ms: f64) -> u64 {
        // A hash of the key is as good as a random number here and needs no
        // RNG: it spreads expiries evenly and is stable per key.
        let jitter = match self.jitter_max_secs {
            0 => 0,
            max => self.jitter.hash_one(key) % max,
        };
        (period_ms / 1_000.0).ceil().max(1.0) as u64 + jitter
    }

    /// Loads every driver: on the node, or on every primary of a cluster
    /// (replicas get scripts through replication, and one that is down must
    /// not block startup).
    async fn load_scripts(&self) -> redis::RedisResult<()> {
        for driver in self.scripts.all() {
            self.load_on(driver, Primaries::All).await?;
        }
        Ok(())
    }

    /// Loads one driver where `on` says (only a cluster has a choice).
    async fn load_on(&self, driver: &Driver, on: Primaries<'_>) -> redis::RedisResult<()> {
        use redis::cluster_routing::{
            MultipleNodeRoutingInfo, ResponsePolicy, Route, RoutingInfo, SingleNodeRoutingInfo,
            SlotAddr,
        };
        let mut cmd = redis::cmd("SCRIPT");
        cmd.arg("LOAD").arg(driver.code);
        match &self.connection {
            Connection::Cluster(cluster) => {
                let routing = match on {
                    Primaries::All => RoutingInfo::MultiNode((
                        MultipleNodeRoutingInfo::AllMasters,
                        Some(ResponsePolicy::AllSucceeded),
                    )),
                    Primaries::OfKey(key) => RoutingInfo::SingleNode(
                        SingleNodeRoutingInfo::SpecificNode(Route::with_key(key, SlotAddr::Master)),
                    ),
                };
                cluster.clone().route_command(cmd, routing).await.map(drop)
            }
            _ => self.query::<redis::Value>(&cmd).await.map(drop),
        }
    }

    /// Sends `cmd` on this mode's connection.
    async fn query<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> redis::RedisResult<T> {
        match &self.connection {
            Connection::Single(manager) => cmd.query_async(&mut manager.clone()).await,
            Connection::Sentinel(sentinel) => {
                // PING and SCRIPT LOAD may simply run again on a new master.
                let idempotent = matches!(
                    cmd.args_iter().next(),
                    Some(redis::Arg::Simple(b"PING" | b"SCRIPT"))
                );
                sentinel.query(cmd, idempotent).await
            }
            Connection::Cluster(cluster) => cmd.query_async(&mut cluster.clone()).await,
        }
    }

    /// One EVALSHA of `driver` over `checks` (layout in `scripts/common.lua`).
    fn command<'c>(
        &self,
        driver: &Driver,
        checks: impl Iterator<Item = &'c Check> + Clone,
    ) -> redis::Cmd {
        let mut cmd = redis::cmd("EVALSHA");
        cmd.arg(&driver.hash).arg(checks.clone().count());
        for check in checks.clone() {
            cmd.arg(check.key.as_str());
        }
        self.push_now(&mut cmd);
        for check in checks {
            self.push_check(&mut cmd, check);
        }
        cmd
    }

    /// One EVALSHA of `apply_node.lua` over `checks` (layout in that
    /// script): the first key declared, every key after the checks.
    fn node_command(&self, checks: &[&Check]) -> redis::Cmd {
        let mut cmd = redis::cmd("EVALSHA");
        cmd.arg(&self.scripts.apply_node.hash).arg(1);
        cmd.arg(checks.first().map_or("", |c| c.key.as_str()));
        self.push_now(&mut cmd);
        for check in checks {
            self.push_check(&mut cmd, check);
        }
        for check in checks {
            cmd.arg(check.key.as_str());
        }
        cmd
    }

    /// The scripts' "now": Redis's TIME (empty) or the test clock.
    fn push_now(&self, cmd: &mut redis::Cmd) {
        match &self.local_time {
            Some(clock) => cmd.arg((clock.now().as_secs_f64() * 1_000.0).to_string()),
            None => cmd.arg(""),
        };
    }

    /// One check's eight arguments (layout in `scripts/common.lua`). Only
    /// the fixed window takes a TTL and a reset time (the other algorithms
    /// set their own TTLs and get 0 for both); a capacity check uses the
    /// slots its own way (see `capacity.lua`).
    fn push_check(&self, cmd: &mut redis::Cmd, check: &Check) {
        let veto = if check.veto { "1" } else { "0" };
        let (code, rate) = match &check.limit {
            Limit::FixedWindow {
                limit,
                period_ms,
                reset_after,
            } => {
                cmd.arg("f")
                    .arg(check.hits)
                    .arg(*limit)
                    .arg(*period_ms)
                    // Unused by the fixed window: the limit, as ever.
                    .arg(*limit)
                    .arg(self.ttl_secs(&check.key, *period_ms))
                    .arg(reset_after.as_millis() as u64)
                    .arg(veto);
                return;
            }
            Limit::Capacity(call) => {
                let mut params = format!(
                    "{} {} {}",
                    call.weight, call.class, call.rule.limits.guaranteed_share
                );
                for share in &call.rule.limits.class_max_share {
                    params.push(' ');
                    params.push_str(&share.to_string());
                }
                cmd.arg("c")
                    .arg(check.hits)
                    .arg(call.rule.limits.total)
                    .arg(call.period_ms())
                    .arg(call.rule.limits.max_clients)
                    .arg(call.client.as_str())
                    .arg(params)
                    .arg(veto);
                return;
            }
            Limit::SlidingWindow(rate) => ("s", rate),
            Limit::TokenBucket(rate) => ("t", rate),
            Limit::Gcra(rate) => ("g", rate),
        };
        cmd.arg(code)
            .arg(check.hits)
            .arg(rate.limit)
            .arg(rate.period_ms)
            .arg(rate.burst)
            .arg(0)
            .arg(0)
            .arg(veto);
    }

    /// Runs `driver` over `checks` (which share a slot on a cluster), with
    /// one reload and retry on NOSCRIPT. A check the script could not run
    /// (its key holds something else) fails the call with
    /// [`StoreError::Counter`].
    async fn eval<'c>(
        &self,
        driver: &Driver,
        checks: impl Iterator<Item = &'c Check> + Clone,
    ) -> Result<Vec<Outcome>, StoreError> {
        let results = self.eval_each(driver, checks).await?;
        // All-or-nothing answers the checks it did not run with an empty
        // message: report the one that failed.
        let failed = results.iter().find_map(|r| match r {
            Err(e @ StoreError::Counter { detail, .. }) if !detail.is_empty() => Some(e.clone()),
            _ => None,
        });
        match failed {
            Some(e) => Err(e),
            None => results.into_iter().collect(),
        }
    }

    /// [`Self::eval`], with each check's own result: `apply.lua` answers a
    /// check it could not run with `{-1, message}` and runs the others.
    async fn eval_each<'c>(
        &self,
        driver: &Driver,
        checks: impl Iterator<Item = &'c Check> + Clone,
    ) -> Result<Vec<Result<Outcome, StoreError>>, StoreError> {
        let cmd = self.command(driver, checks.clone());
        self.run_each(driver, &cmd, checks).await
    }

    /// Sends `cmd`, an EVALSHA of `driver` over `checks`, with one reload
    /// and retry on NOSCRIPT; each check's own result.
    async fn run_each<'c>(
        &self,
        driver: &Driver,
        cmd: &redis::Cmd,
        checks: impl Iterator<Item = &'c Check> + Clone,
    ) -> Result<Vec<Result<Outcome, StoreError>>, StoreError> {
        let expected = checks.clone().count();
        let first = checks.clone().next();
        let replies: Vec<Vec<redis::Value>> = match self.query(cmd).await {
            Err(e) if e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript) => {
                // Redis restarted, failed over or flushed its scripts: load
                // this driver where the keys live, then run it again.
                let key = first.map_or(&[][..], |c| c.key.as_bytes());
                self.load_on(driver, Primaries::OfKey(key))
                    .await
                    .map_err(store_error)?;
                self.query(cmd).await.map_err(store_error)?
            }
            other => other.map_err(store_error)?,
        };
        if replies.len() != expected {
            return Err(StoreError::Protocol(format!(
                "script returned {} results for {expected} keys",
                replies.len()
            )));
        }
        replies
            .into_iter()
            .zip(checks)
            .map(|(reply, check)| {
                Ok(outcome(reply)?.map_err(|detail| StoreError::Counter {
                    key: check.key.clone(),
                    detail,
                }))
            })
            .collect()
    }

    /// Runs `driver` over each slot group at once and puts the outcomes back
    /// in the checks' order.
    async fn eval_groups(
        &self,
        driver: &Driver,
        checks: &[Check],
        groups: &[cluster::Group],
    ) -> Result<Vec<Outcome>, StoreError> {
        let replies = futures_util::future::join_all(
            groups
                .iter()
                .map(|group| self.eval(driver, group.iter().map(|&i| &checks[i]))),
        )
        .await;
        let sent = replies.iter().filter(|r| r.is_ok()).count();
        let mut replies_ok = Vec::with_capacity(replies.len());
        for reply in replies {
            match reply {
                Ok(outcomes) => replies_ok.push(outcomes),
                // Other slots counted this request: running it again would
                // count them twice, so this is no longer "not sent".
                Err(StoreError::NotSent(e)) if sent > 0 => {
                    return Err(StoreError::Unavailable(e));
                }
                Err(e) => return Err(e),
            }
        }
        let replies = replies_ok;
        let mut out = vec![Outcome::default(); checks.len()];
        for (group, outcomes) in groups.iter().zip(replies) {
            for (&i, outcome) in group.iter().zip(outcomes) {
                out[i] = outcome;
            }
        }
        Ok(out)
    }

    /// All-or-nothing over several slots: peek everywhere, then apply what
    /// the group's verdict allows (see [`cluster`] for the trade-off). The
    /// verdicts match `all_or_nothing.lua`: if any vetoing check would be
    /// rejected, the rejected checks are rejected (a fixed window still
    /// counts their hits) and the others take nothing and report allowed.
    async fn all_or_nothing_across_slots(
        &self,
        checks: &[Check],
        groups: &[cluster::Group],
    ) -> Result<Vec<Outcome>, StoreError> {
        let peeked = self.eval_groups(&self.scripts.peek, checks, groups).await?;
        let all = checks
            .iter()
            .zip(&peeked)
            .all(|(check, outcome)| outcome.allowed || !check.veto);
        if all {
            return self.eval_groups(&self.scripts.apply, checks, groups).await;
        }
        let adjusted: Vec<Check> = checks
            .iter()
            .zip(&peeked)
            .map(|(check, outcome)| Check {
                hits: if !outcome.allowed && matches!(check.limit, Limit::FixedWindow { .. }) {
                    check.hits
                } else {
                    0
                },
                ..check.clone()
            })
            .collect();
        let mut out = self
            .eval_groups(&self.scripts.apply, &adjusted, groups)
            .await?;
        for (outcome, before) in out.iter_mut().zip(&peeked) {
            // The peek's verdict stands, even if time moved on since.
            outcome.allowed = before.allowed;
            if !before.allowed && before.capacity.is_some() {
                // Applied with 0 hits, a capacity check answers for one
                // hit: the rejection is the peek's. (Its demand is not
                // counted on this path: see the README.)
                outcome.capacity = before.capacity;
                outcome.remaining = 0;
            }
        }
        Ok(out)
    }

    /// Runs the checks: one EVALSHA on a single node or Sentinel, one per
    /// slot on a cluster; when coalescing, shared with concurrent calls
    /// (one per primary on a cluster).
    async fn apply_checks(
        &self,
        checks: &[Check],
        commit: Commit,
    ) -> Result<Vec<Outcome>, StoreError> {
        if checks.is_empty() {
            return Ok(Vec::new());
        }
        let driver = self.scripts.get(commit);
        if commit == Commit::Each
            && let Some(batch) = self.batcher()
        {
            return batch.apply(checks).await;
        }
        if !matches!(self.connection, Connection::Cluster(_)) {
            return self.eval(driver, checks.iter()).await;
        }
        let groups = cluster::by_slot(checks);
        match (groups.len(), commit) {
            (1, _) => self.eval(driver, checks.iter()).await,
            (_, Commit::Each) => self.eval_groups(driver, checks, &groups).await,
            (_, Commit::AllOrNothing) => self.all_or_nothing_across_slots(checks, &groups).await,
        }
    }
}

/// Where a cluster loads a script.
#[derive(Clone, Copy)]
enum Primaries<'k> {
    /// Every primary (at connect).
    All,
    /// The primary that serves this key (on NOSCRIPT).
    OfKey(&'k [u8]),
}

fn store_error(e: redis::RedisError) -> StoreError {
    use redis::ServerErrorKind as S;
    let transient = e.is_timeout()
        || e.is_io_error()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
        || e.is_cluster_error()
        || matches!(
            e.kind(),
            redis::ErrorKind::Server(S::ReadOnly | S::MasterDown | S::BusyLoading)
                | redis::ErrorKind::ClusterConnectionNotFound
                | redis::ErrorKind::MasterNameNotFoundBySentinel
        );
    let not_sent = e.is_connection_refusal()
        || matches!(
            e.kind(),
            redis::ErrorKind::Server(S::ReadOnly | S::MasterDown | S::BusyLoading)
                | redis::ErrorKind::ClusterConnectionNotFound
                | redis::ErrorKind::MasterNameNotFoundBySentinel
        );
    if not_sent {
        StoreError::NotSent(e.to_string())
    } else if transient {
        StoreError::Unavailable(e.to_string())
    } else {
        StoreError::Protocol(e.to_string())
    }
}

/// The algorithms, one Lua function each (`scripts/algorithms/*.lua`, with
/// their contracts), and what the drivers share (`scripts/common.lua`).
macro_rules! with_algorithms {
    ($driver:literal) => {
        concat!(
            include_str!("scripts/algorithms/fixed_window.lua"),
            include_str!("scripts/algorithms/sliding_window.lua"),
            include_str!("scripts/algorithms/token_bucket.lua"),
            include_str!("scripts/algorithms/gcra.lua"),
            include_str!("scripts/algorithms/capacity.lua"),
            include_str!("scripts/common.lua"),
            include_str!($driver),
        )
    };
}

/// One check's reply: `{allowed, remaining, microseconds until reset}`, or
/// `{-1, message}` for a check the script could not run (the outer error is
/// a reply that is neither: the call fails).
fn outcome(reply: Vec<redis::Value>) -> Result<Result<Outcome, String>, StoreError> {
    let int = |v: &redis::Value| match v {
        redis::Value::Int(n) => Some(*n),
        _ => None,
    };
    let unexpected = || StoreError::Protocol(format!("unexpected script reply {reply:?}"));
    match reply.as_slice() {
        [allowed, remaining, reset_us, rest @ ..] if rest.len() != 1 => {
            let (Some(allowed), Some(remaining), Some(reset_us)) =
                (int(allowed), int(remaining), int(reset_us))
            else {
                return Err(unexpected());
            };
            let remaining = remaining.max(0) as u64;
            // A capacity check's {limit, verdict}.
            let capacity = match rest {
                [] => None,
                [limit, verdict] => {
                    let decided = int(limit).zip(int(verdict).and_then(Verdict::from_code));
                    let Some((limit, verdict)) = decided else {
                        return Err(unexpected());
                    };
                    Some(Decided {
                        verdict,
                        limit: limit.max(0) as u64,
                        remaining,
                    })
                }
                _ => return Err(unexpected()),
            };
            Ok(Ok(Outcome {
                allowed: allowed == 1,
                remaining,
                reset_after: Duration::from_micros(reset_us.max(0) as u64),
                capacity,
            }))
        }
        [code, message] if int(code) == Some(-1) => Ok(Err(match message {
            redis::Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
            redis::Value::SimpleString(s) => s.clone(),
            other => format!("{other:?}"),
        })),
        _ => Err(unexpected()),
    }
}

/// One driver script: its source and SHA-1.
#[derive(Clone, Debug)]
struct Driver {
    code: &'static str,
    hash: String,
}

impl Driver {
    fn new(code: &'static str) -> Self {
        Driver {
            code,
            hash: redis::Script::new(code).get_hash().to_owned(),
        }
    }
}

/// The drivers: every check on its own, all or nothing, or only look.
#[derive(Clone, Debug)]
struct Scripts {
    apply: Driver,
    all_or_nothing: Driver,
    peek: Driver,
    /// `apply` over the slots of one cluster primary (Redis 7: the
    /// shebang's flag must be the script's first line).
    apply_node: Driver,
}

impl Default for Scripts {
    fn default() -> Self {
        Scripts {
            apply: Driver::new(with_algorithms!("scripts/apply.lua")),
            all_or_nothing: Driver::new(with_algorithms!("scripts/all_or_nothing.lua")),
            peek: Driver::new(with_algorithms!("scripts/peek.lua")),
            apply_node: Driver::new(concat!(
                "#!lua flags=allow-cross-slot-keys\n",
                with_algorithms!("scripts/apply_node.lua")
            )),
        }
    }
}

impl Scripts {
    fn get(&self, commit: Commit) -> &Driver {
        match commit {
            Commit::Each => &self.apply,
            Commit::AllOrNothing => &self.all_or_nothing,
        }
    }

    fn all(&self) -> [&Driver; 3] {
        [&self.apply, &self.all_or_nothing, &self.peek]
    }
}

impl CounterStore for RedisStore {
    /// Applies the checks in Redis; there is no failure policy to override.
    fn apply<'a>(&'a self, checks: &'a [Check], options: CallOptions) -> StoreFuture<'a, Applied> {
        Box::pin(async move {
            Ok(Applied {
                outcomes: self.apply_checks(checks, options.commit).await?,
                ..Applied::default()
            })
        })
    }

    /// Adds through the fixed-window script (`INCRBY`, with the window's
    /// TTL on a new key), under a limit no count reaches: the hits were
    /// decided already, so the script's verdict is not read.
    fn add<'a>(&'a self, counts: &'a [WindowCount]) -> StoreFuture<'a, ()> {
        let checks: Vec<Check> = counts
            .iter()
            .map(|count| Check {
                key: count.key.clone(),
                hits: count.hits,
                limit: Limit::FixedWindow {
                    limit: u64::from(u32::MAX),
                    period_ms: count.reset_after.as_secs_f64() * 1_000.0,
                    reset_after: count.reset_after,
                },
                veto: false,
            })
            .collect();
        Box::pin(async move { self.apply_checks(&checks, Commit::Each).await.map(drop) })
    }

    fn reset<'a>(&'a self, keys: &'a [String]) -> StoreFuture<'a, u64> {
        Box::pin(async move {
            // One DEL per key: on a cluster each goes to its key's primary.
            let deletes = keys.iter().map(|key| {
                let mut cmd = redis::cmd("DEL");
                cmd.arg(key.as_str());
                async move { self.query::<u64>(&cmd).await }
            });
            let counts = futures_util::future::try_join_all(deletes)
                .await
                .map_err(store_error)?;
            Ok(counts.into_iter().sum())
        })
    }

    fn ping(&self) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            // On a cluster, PING goes to every primary.
            self.query::<redis::Value>(&redis::cmd("PING"))
                .await
                .map(drop)
                .map_err(store_error)
        })
    }

    fn kind(&self) -> &'static str {
        "redis"
    }

    fn quota<'a>(
        &'a self,
        call: &'a super::quota::QuotaCall,
    ) -> StoreFuture<'a, super::quota::QuotaApplied> {
        Box::pin(async move {
            let cmd = self.quota_command(call);
            let reply: Vec<redis::Value> = match self.query(&cmd).await {
                Err(e)
                    if e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript) =>
                {
                    let key = Primaries::OfKey(call.key.as_bytes());
                    self.load_on(&QUOTA_DRIVER, key)
                        .await
                        .map_err(store_error)?;
                    self.query(&cmd).await.map_err(store_error)?
                }
                other => other.map_err(store_error)?,
            };
            Ok(super::quota::QuotaApplied {
                answer: super::quota::QuotaAnswer::Share(quota_share(&reply)?),
                degraded: false,
            })
        })
    }
}

/// The RLQS report script (`scripts/quota.lua`), run by `EVALSHA` and
/// loaded where the key lives on `NOSCRIPT` (as the other scripts).
static QUOTA_DRIVER: std::sync::LazyLock<Driver> =
    std::sync::LazyLock::new(|| Driver::new(include_str!("scripts/quota.lua")));

impl RedisStore {
    /// The `EVALSHA` of [`QUOTA_DRIVER`] for `call`.
    fn quota_command(&self, call: &super::quota::QuotaCall) -> redis::Cmd {
        let now_ms = self
            .local_time
            .as_ref()
            .map_or(0.0, |clock| clock.now().as_secs_f64() * 1_000.0);
        let demand = if call.demand.is_finite() {
            call.demand.max(0.0)
        } else {
            0.0
        };
        let mut cmd = redis::cmd("EVALSHA");
        cmd.arg(&QUOTA_DRIVER.hash)
            .arg(1)
            .arg(call.key.as_str())
            .arg(call.instance.as_str())
            .arg(call.allowed.min(crate::model::MAX_COUNT))
            .arg(demand)
            .arg(now_ms)
            .arg(call.limit)
            .arg(call.window_ms.max(1.0))
            .arg(call.stale_ms.max(0.0))
            .arg(crate::model::quota::MAX_INSTANCES)
            .arg(match call.op {
                super::quota::QuotaOp::Report => "report",
                super::quota::QuotaOp::Peek => "peek",
                super::quota::QuotaOp::Leave => "leave",
            });
        cmd
    }
}

/// The quota script's reply as a share.
fn quota_share(reply: &[redis::Value]) -> Result<crate::model::quota::Share, StoreError> {
    let unexpected = || StoreError::Protocol(format!("unexpected RLQS script reply {reply:?}"));
    let int = |v: &redis::Value| match v {
        redis::Value::Int(n) => Some(*n),
        _ => None,
    };
    let [used, rate, instances, left] = reply else {
        return Err(unexpected());
    };
    let rate = match rate {
        redis::Value::BulkString(b) => std::str::from_utf8(b).ok().and_then(|s| s.parse().ok()),
        _ => None,
    };
    let (Some(used), Some(rate), Some(instances), Some(left)) =
        (int(used), rate, int(instances), int(left))
    else {
        return Err(unexpected());
    };
    Ok(crate::model::quota::Share {
        used: used.max(0) as u64,
        rate,
        instances: u32::try_from(instances.max(0)).unwrap_or(u32::MAX),
        window_left_ms: left.max(0) as f64,
    })
}
