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

use std::sync::Arc;

use futures_util::StreamExt;
use futures_util::future::join_all;
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

/// One call's checks and where its outcomes go.
struct Pending {
    checks: Vec<Check>,
    reply: oneshot::Sender<Result<Vec<Outcome>, StoreError>>,
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

/// Runs one batch and answers each of its calls.
async fn send(store: &RedisStore, batch: Vec<Pending>) {
    let checks: Vec<&Check> = batch.iter().flat_map(|p| p.checks.iter()).collect();
    let mut results = eval_batch(store, &checks).await.into_iter();
    for pending in batch {
        // A check the script could not run fails its own call only. Take
        // all of this call's results first: collecting into a Result stops
        // at an error and would shift the next call's.
        let mine: Vec<_> = results.by_ref().take(pending.checks.len()).collect();
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
        let _ = pending.reply.send(mine);
    }
}

/// Each check's result: one `apply.lua` over them all on a single node or
/// Sentinel; on a cluster one `apply_node.lua` per primary, all at once
/// (see [`per_node`]).
async fn eval_batch(store: &RedisStore, checks: &[&Check]) -> Vec<Result<Outcome, StoreError>> {
    if !matches!(store.connection, Connection::Cluster(_)) {
        let driver = store.scripts.get(Commit::Each);
        let result = store.eval_each(driver, checks.iter().copied()).await;
        return spread(result, checks.len());
    }
    per_node(store, checks).await
}

/// A result for all `n` checks, or its error for each.
fn spread(
    result: Result<Vec<Result<Outcome, StoreError>>, StoreError>,
    n: usize,
) -> Vec<Result<Outcome, StoreError>> {
    result.unwrap_or_else(|e| vec![Err(e); n])
}

/// Cluster: the checks grouped by the primary that serves their slot (as
/// [`slot_owners`] last said), one `apply_node.lua` per group, all sent at
/// once. A check whose key its node did not serve (the slot moved) wrote
/// nothing: it goes again on its own, through redis-rs's routing (which
/// follows MOVED and ASK), and the slot map is fetched again next time.
/// Without a slot map, every check goes on its own.
async fn per_node(store: &RedisStore, checks: &[&Check]) -> Vec<Result<Outcome, StoreError>> {
    let groups = match slot_owners(store).await {
        Some(owners) => owners.by_node(checks.iter().copied()),
        None => (0..checks.len()).map(|i| vec![i]).collect(),
    };
    let replies = join_all(groups.iter().map(|group| {
        let group: Vec<&Check> = group.iter().map(|&i| checks[i]).collect();
        async move {
            let cmd = store.node_command(&group);
            let result = store.run_each(&store.scripts.apply_node, &cmd, group.iter().copied());
            spread(result.await, group.len())
        }
    }))
    .await;
    let mut out: Vec<Option<Result<Outcome, StoreError>>> = checks.iter().map(|_| None).collect();
    let mut moved = Vec::new();
    for (group, results) in groups.iter().zip(replies) {
        for (&i, result) in group.iter().zip(results) {
            match result {
                Err(StoreError::Counter { detail, .. }) if detail.contains(NOT_LOCAL) => {
                    moved.push(i);
                }
                r => out[i] = Some(r),
            }
        }
    }
    if !moved.is_empty() {
        *owners_slot(store) = None;
        let driver = store.scripts.get(Commit::Each);
        let again = join_all(
            moved
                .iter()
                .map(|&i| store.eval_each(driver, [checks[i]].into_iter())),
        );
        for (&i, result) in moved.iter().zip(again.await) {
            out[i] = Some(spread(result, 1).remove(0));
        }
    }
    out.into_iter()
        .map(|r| r.unwrap_or_else(|| Err(StoreError::Protocol("a check got no result".into()))))
        .collect()
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
