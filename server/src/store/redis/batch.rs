//! Coalescing: concurrent calls' checks go to Redis in one `EVALSHA`.
//!
//! On the request path this sits between [`super::RedisStore::apply`] and
//! the connection, for calls whose checks each stand alone
//! ([`Commit::Each`](crate::store::Commit::Each)) on a single node or a
//! Sentinel-managed master. A call hands its checks to the batching task
//! through a bounded queue and waits for its outcomes. The task takes every
//! call already queued (up to `max_checks` checks) and runs them as one
//! `apply.lua`, which treats each check on its own exactly as it would in a
//! call of its own; then it splits the outcomes back.
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
use futures_util::stream::FuturesUnordered;
use tokio::sync::{mpsc, oneshot};

use super::RedisStore;
use crate::model::algorithm::Outcome;
use crate::store::{Check, StoreError};

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
    let driver = store.scripts.get(crate::store::Commit::Each);
    let result = store
        .eval_each(driver, batch.iter().flat_map(|p| p.checks.iter()))
        .await;
    match result {
        Ok(outcomes) => {
            let mut outcomes = outcomes.into_iter();
            for pending in batch {
                // A check the script could not run fails its own call only.
                // Take all of this call's results first: collecting into a
                // Result stops at an error and would shift the next call's.
                let mine: Vec<_> = outcomes.by_ref().take(pending.checks.len()).collect();
                let mine: Result<Vec<Outcome>, StoreError> = mine.into_iter().collect();
                // A caller that gave up no longer listens.
                let _ = pending.reply.send(mine);
            }
        }
        Err(e) => {
            for pending in batch {
                let _ = pending.reply.send(Err(e.clone()));
            }
        }
    }
}
