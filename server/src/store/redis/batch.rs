//! Coalescing: concurrent calls' checks go to Redis in one `EVALSHA`.
//!
//! On the request path this sits between [`super::RedisStore::apply`] and
//! the connection, for calls whose checks each stand alone
//! ([`Commit::Each`](crate::store::Commit::Each)). A call hands its checks
//! to the batching task through a bounded queue and waits for its
//! outcomes. The task takes every call already queued (up to `max_checks`
//! checks) and runs them as one `apply.lua`, which treats each check on its
//! own exactly as it would in a call of its own; then it splits the
//! outcomes back.
//!
//! On a Redis Cluster a script may declare keys of one slot only, so the
//! batch is grouped by the primary that serves each check's slot (the
//! cluster's `CLUSTER SLOTS`, fetched once) and each group is one
//! `apply_node.lua`: flagged `allow-cross-slot-keys` (Redis 7), it runs
//! checks of every slot of its node. A check whose slot moved since (a
//! resharding, a failover) fails on that node before it writes anything;
//! it goes again on its own through the cluster client's routing, and the
//! slot map is fetched again.
//!
//! Nothing waits to fill a batch: a call that finds the task idle goes out
//! at once, alone. Batches form only while earlier ones are on the wire (up
//! to `MAX_IN_FLIGHT` of them), that is under load, where they save Redis a
//! script dispatch and both sides a round trip's I/O per call.
//!
//! The trade-off: a failed batch fails every call in it (each then gets its
//! failure policy, as it would alone), and the calls of one batch are
//! counted atomically together, which no caller can observe.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use tokio::sync::{mpsc, oneshot};

use super::RedisStore;
use super::cluster::{NOT_LOCAL, SlotOwners};
use super::connection::Connection;
use crate::model::algorithm::Outcome;
use crate::store::{Check, Commit, StoreError};

/// Batches on the wire at once; more calls wait in the queue and form the
/// next batch.
const MAX_IN_FLIGHT: usize = 4;

/// Calls waiting for the task; past this, callers wait for room (their
/// deadline still bounds them).
const QUEUE: usize = 4_096;

/// Where a call's outcomes go.
type Reply = oneshot::Sender<Result<Vec<Outcome>, StoreError>>;

/// One call's checks and where its outcomes go.
struct Pending {
    checks: Vec<Check>,
    reply: Reply,
}

/// The handle calls use; the task ends when the last handle is dropped
/// (after answering the batches on the wire).
#[derive(Debug)]
pub(super) struct Batcher {
    queue: mpsc::Sender<Pending>,
}

impl Batcher {
    /// Starts the batching task over `store` (which must not batch itself).
    pub(super) fn start(store: RedisStore, max_checks: usize) -> Arc<Batcher> {
        let (queue, rx) = mpsc::channel(QUEUE);
        tokio::spawn(run(store, rx, max_checks.max(1)));
        Arc::new(Batcher { queue })
    }

    /// Applies `checks` in the next batch.
    pub(super) async fn apply(&self, checks: &[Check]) -> Result<Vec<Outcome>, StoreError> {
        let (reply, outcomes) = oneshot::channel();
        let pending = Pending {
            checks: checks.to_vec(),
            reply,
        };
        self.queue
            .send(pending)
            .await
            .map_err(|_| StoreError::NotSent("the Redis batching task has stopped".into()))?;
        outcomes.await.map_err(|_| {
            StoreError::Unavailable("the Redis batching task dropped the call".into())
        })?
    }
}

/// The task: takes what is queued, sends it, repeats. A batch holds at
/// most `max_checks` checks (a call with more goes alone); a call whose
/// caller stopped waiting (its deadline passed, and its failure policy
/// answered) is dropped, not sent: it must not count.
async fn run(store: RedisStore, mut rx: mpsc::Receiver<Pending>, max_checks: usize) {
    let mut in_flight = FuturesUnordered::new();
    // A call that did not fit in the last batch: the next one starts with it.
    let mut held: Option<Pending> = None;
    loop {
        tokio::select! {
            first = async { match held.take() {
                Some(p) => Some(p),
                None => rx.recv().await,
            } }, if in_flight.len() < MAX_IN_FLIGHT => {
                let Some(first) = first else { break };
                let mut size = first.checks.len();
                let mut batch: Vec<Pending> = vec![first];
                while size < max_checks {
                    let Ok(next) = rx.try_recv() else { break };
                    if next.reply.is_closed() {
                        continue;
                    }
                    if size + next.checks.len() > max_checks {
                        held = Some(next);
                        break;
                    }
                    size += next.checks.len();
                    batch.push(next);
                }
                batch.retain(|p| !p.reply.is_closed());
                if !batch.is_empty() {
                    in_flight.push(send(&store, batch));
                }
            }
            Some(()) = in_flight.next(), if !in_flight.is_empty() => {}
        }
    }
    // The handles are gone: finish what is on the wire.
    while in_flight.next().await.is_some() {}
}

/// Runs one batch and answers each of its calls: on a single node or
/// Sentinel when its one script returns; on a cluster as soon as the
/// scripts of the primaries its own checks went to have returned.
async fn send(store: &RedisStore, batch: Vec<Pending>) {
    let (checks, replies): (Vec<Vec<Check>>, Vec<_>) =
        batch.into_iter().map(|p| (p.checks, p.reply)).unzip();
    let mut answers = Answers::new(&checks, replies);
    let checks: Vec<&Check> = checks.iter().flatten().collect();
    if matches!(store.connection, Connection::Cluster(_)) {
        per_node(store, &checks, &mut answers).await;
        return;
    }
    let driver = store.scripts.get(Commit::Each);
    let results = spread(
        store.eval_each(driver, checks.iter().copied()).await,
        checks.len(),
    );
    for (i, result) in results.into_iter().enumerate() {
        answers.record(i, result);
    }
}

/// A result for all `n` checks, or its error for each.
fn spread(
    result: Result<Vec<Result<Outcome, StoreError>>, StoreError>,
    n: usize,
) -> Vec<Result<Outcome, StoreError>> {
    result.unwrap_or_else(|e| vec![Err(e); n])
}

/// Where a batch's results go: each call is answered when the last of its
/// checks has its result.
struct Answers {
    replies: Vec<Option<Reply>>,
    /// Per call, its checks' indexes in the batch.
    ranges: Vec<std::ops::Range<usize>>,
    /// Per check, its call.
    call_of: Vec<usize>,
    /// Per call, its checks still without a result.
    left: Vec<usize>,
    results: Vec<Option<Result<Outcome, StoreError>>>,
}

impl Answers {
    fn new(checks: &[Vec<Check>], replies: Vec<Reply>) -> Answers {
        let mut ranges = Vec::with_capacity(checks.len());
        let mut call_of = Vec::new();
        for (call, checks) in checks.iter().enumerate() {
            ranges.push(call_of.len()..call_of.len() + checks.len());
            call_of.extend(std::iter::repeat_n(call, checks.len()));
        }
        Answers {
            replies: replies.into_iter().map(Some).collect(),
            left: checks.iter().map(Vec::len).collect(),
            results: call_of.iter().map(|_| None).collect(),
            ranges,
            call_of,
        }
    }

    /// Check `i`'s result; answers its call if it was the last one.
    fn record(&mut self, i: usize, result: Result<Outcome, StoreError>) {
        let (Some(slot), Some(&call)) = (self.results.get_mut(i), self.call_of.get(i)) else {
            return;
        };
        *slot = Some(result);
        self.left[call] -= 1;
        if self.left[call] > 0 {
            return;
        }
        // A check the script could not run fails its own call only.
        let mine: Vec<_> = self.results[self.ranges[call].clone()]
            .iter_mut()
            .map(|r| {
                r.take()
                    .unwrap_or_else(|| Err(StoreError::Protocol("no result".into())))
            })
            .collect();
        // Some of this call's checks counted (on a cluster, on another
        // primary): the call can no longer be sent again as if not sent.
        let counted = mine.iter().any(Result::is_ok);
        let mine: Result<Vec<Outcome>, StoreError> = mine
            .into_iter()
            .map(|r| match r {
                Err(StoreError::NotSent(e)) if counted => Err(StoreError::Unavailable(e)),
                r => r,
            })
            .collect();
        // A caller that gave up no longer listens.
        if let Some(reply) = self.replies[call].take() {
            let _ = reply.send(mine);
        }
    }
}

/// One script's checks (indexes in the batch), their results, and whether
/// it was a check sent again on its own.
type Run<'a> =
    Pin<Box<dyn Future<Output = (Vec<usize>, Vec<Result<Outcome, StoreError>>, bool)> + Send + 'a>>;

/// Cluster: the checks grouped by the primary that serves their slot (as
/// [`slot_owners`] last said), one `apply_node.lua` per group, all sent at
/// once; each call is answered when its own groups have returned. A check
/// whose key its node did not serve (the slot moved) wrote nothing: it
/// goes again on its own, through redis-rs's routing (which follows MOVED
/// and ASK), and the slot map is fetched again next time. Without a slot
/// map, every check goes on its own.
async fn per_node(store: &RedisStore, checks: &[&Check], answers: &mut Answers) {
    let groups = match slot_owners(store).await {
        Some(owners) => owners.by_node(checks.iter().copied()),
        None => (0..checks.len()).map(|i| vec![i]).collect(),
    };
    let node = |group: Vec<usize>| -> Run<'_> {
        Box::pin(async move {
            let mine: Vec<&Check> = group.iter().map(|&i| checks[i]).collect();
            let cmd = store.node_command(&mine);
            let result = store.run_each(&store.scripts.apply_node, &cmd, mine.iter().copied());
            let results = spread(result.await, mine.len());
            (group, results, false)
        })
    };
    let alone = |i: usize| -> Run<'_> {
        Box::pin(async move {
            let driver = store.scripts.get(Commit::Each);
            let result = store.eval_each(driver, std::iter::once(checks[i])).await;
            (vec![i], spread(result, 1), true)
        })
    };
    let mut running: FuturesUnordered<Run<'_>> = groups.into_iter().map(node).collect();
    while let Some((group, results, again)) = running.next().await {
        for (i, result) in group.into_iter().zip(results) {
            match result {
                Err(StoreError::Counter { detail, .. }) if !again && detail.contains(NOT_LOCAL) => {
                    *owners_slot(store) = None;
                    running.push(alone(i));
                }
                result => answers.record(i, result),
            }
        }
    }
}

/// The store's slot map: the last one fetched, or `CLUSTER SLOTS` now.
/// `None` if the cluster does not answer it usefully.
async fn slot_owners(store: &RedisStore) -> Option<Arc<SlotOwners>> {
    if let Some(owners) = owners_slot(store).clone() {
        return Some(owners);
    }
    let mut cmd = redis::cmd("CLUSTER");
    cmd.arg("SLOTS");
    let reply: redis::Value = store.query(&cmd).await.ok()?;
    let owners = Arc::new(SlotOwners::parse(&reply)?);
    *owners_slot(store) = Some(owners.clone());
    Some(owners)
}

/// The slot map's cell (a poisoned lock still holds a whole value).
fn owners_slot(store: &RedisStore) -> std::sync::MutexGuard<'_, Option<Arc<SlotOwners>>> {
    store.owners.lock().unwrap_or_else(|p| p.into_inner())
}
