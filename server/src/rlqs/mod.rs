//! The Rate Limit Quota Service (RLQS,
//! `envoy.service.rate_limit_quota.v3.RateLimitQuotaService`), off the
//! request path: each Envoy's `rate_limit_quota` filter groups requests
//! into buckets, reports their usage on one stream, and enforces locally
//! the assignments this server sends back.
//!
//! - [`bucket`]: a report's `BucketId` as a descriptor (entries in key
//!   order) and the rule it matches in the same rules as `ShouldRateLimit`.
//! - `stream`: one stream's buckets, and the actions one reports message
//!   gets: a token bucket sized from the instance's share
//!   ([`crate::model::quota`], the state shared through the store,
//!   [`crate::store::quota`]), deny-all once the window's limit is used up,
//!   allow-all for a bucket no rule limits, abandon for a bucket idle for
//!   [`RlqsSettings::abandon_after`].
//! - [`metrics`]: streams, buckets, reports, assignments, admitted/limit.
//!
//! Each stream is bounded: the number of streams, buckets per stream,
//! message size, and each bucket id's entries and lengths (the request
//! bounds of `ShouldRateLimit`); an invalid report ends the stream with
//! `INVALID_ARGUMENT` and a message saying what is wrong.

pub mod bucket;
pub mod metrics;
mod stream;

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use floodgate_proto::envoy::service::rate_limit_quota::v3::rate_limit_quota_service_server::{
    RateLimitQuotaService, RateLimitQuotaServiceServer,
};
use floodgate_proto::envoy::service::rate_limit_quota::v3::{
    RateLimitQuotaResponse, RateLimitQuotaUsageReports,
};
use tokio::sync::{Semaphore, broadcast, mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;

use crate::limiter::{Limiter, RequestLimits};
use metrics::RlqsMetrics;
pub use stream::StreamError;
use stream::StreamState;

/// Moves a stream may fall behind on before it skips some (it then
/// learns the split at its next report, as across server instances).
const MOVED_BACKLOG: usize = 1_024;

/// The RLQS bounds and timings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RlqsSettings {
    /// How long a token bucket or allow-all assignment holds in Envoy
    /// without a refresh (it is sent again half way through).
    pub assignment_ttl: Duration,
    /// A bucket with no requests for this long is abandoned.
    pub abandon_after: Duration,
    /// Most buckets one stream reports.
    pub max_buckets_per_stream: usize,
    /// Most streams open at once.
    pub max_streams: usize,
    /// Largest reports message, in bytes.
    pub max_message_bytes: usize,
    /// How long an answer may wait for a client that does not read its
    /// stream (the stream is then ended).
    pub send_timeout: Duration,
}

impl Default for RlqsSettings {
    fn default() -> Self {
        RlqsSettings {
            assignment_ttl: Duration::from_secs(60),
            abandon_after: Duration::from_secs(300),
            max_buckets_per_stream: 10_000,
            max_streams: 10_000,
            max_message_bytes: 4 * 1024 * 1024,
            send_timeout: Duration::from_secs(10),
        }
    }
}

/// What every stream shares.
#[derive(Debug)]
pub struct Shared {
    limiter: Limiter,
    limits: RequestLimits,
    settings: RlqsSettings,
    metrics: Arc<RlqsMetrics>,
    streams: Arc<Semaphore>,
    /// This server instance's id, in every stream id.
    server: String,
    /// A report moved the split of the state under this key (sent by the
    /// stream named second): the other streams read their shares again.
    moved: broadcast::Sender<(Arc<str>, String)>,
    /// Turns true when the server drains: every stream ends.
    drain: watch::Receiver<bool>,
    next_stream: AtomicU64,
}

/// The RLQS service over a limiter's rules and store.
#[derive(Clone, Debug)]
pub struct Rlqs {
    shared: Arc<Shared>,
}

impl Rlqs {
    /// Serves the rules and store of `limiter`, with `limits` on bucket
    /// ids; every stream ends (`UNAVAILABLE`, so that Envoy opens a new one,
    /// to another instance) when `drain` turns true.
    pub fn new(
        limiter: Limiter,
        limits: RequestLimits,
        settings: RlqsSettings,
        drain: watch::Receiver<bool>,
    ) -> Self {
        let metrics = Arc::new(RlqsMetrics::default());
        limiter.metrics().add_text(metrics.text_source());
        let started = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos();
        Rlqs {
            shared: Arc::new(Shared {
                limiter,
                limits,
                streams: Arc::new(Semaphore::new(
                    settings.max_streams.clamp(1, Semaphore::MAX_PERMITS),
                )),
                settings,
                metrics,
                server: format!("{:x}-{started:x}", std::process::id()),
                moved: broadcast::channel(MOVED_BACKLOG).0,
                drain,
                next_stream: AtomicU64::new(0),
            }),
        }
    }

    /// The tonic service.
    pub fn service(&self) -> RateLimitQuotaServiceServer<Rlqs> {
        RateLimitQuotaServiceServer::new(self.clone())
            .max_decoding_message_size(self.shared.settings.max_message_bytes)
    }

    /// The metrics.
    pub fn metrics(&self) -> &Arc<RlqsMetrics> {
        &self.shared.metrics
    }
}

type Responses =
    Pin<Box<dyn tokio_stream::Stream<Item = Result<RateLimitQuotaResponse, tonic::Status>> + Send>>;

#[tonic::async_trait]
impl RateLimitQuotaService for Rlqs {
    type StreamRateLimitQuotasStream = Responses;

    async fn stream_rate_limit_quotas(
        &self,
        request: tonic::Request<tonic::Streaming<RateLimitQuotaUsageReports>>,
    ) -> Result<tonic::Response<Responses>, tonic::Status> {
        let Ok(permit) = self.shared.streams.clone().try_acquire_owned() else {
            self.shared.metrics.error();
            return Err(tonic::Status::resource_exhausted(format!(
                "more than rlqs_max_streams ({}) RLQS streams",
                self.shared.settings.max_streams
            )));
        };
        let n = self.shared.next_stream.fetch_add(1, Ordering::Relaxed);
        let state = StreamState::new(format!("{}-{n}", self.shared.server));
        let (tx, rx) = mpsc::channel(16);
        let shared = self.shared.clone();
        let inbound = request.into_inner();
        tokio::spawn(async move {
            let ended = run(&shared, state, inbound, &tx).await;
            drop(permit);
            if let Some(status) = ended {
                // Bounded: the client may not be reading.
                let _ = tx
                    .send_timeout(Err(status), shared.settings.send_timeout)
                    .await;
            }
        });
        Ok(tonic::Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

/// What a stream does next.
enum Next {
    /// Send this answer.
    Send(RateLimitQuotaResponse),
    /// Nothing to send.
    Nothing,
    /// The client ended the stream.
    End,
}

impl From<Option<RateLimitQuotaResponse>> for Next {
    fn from(answer: Option<RateLimitQuotaResponse>) -> Self {
        answer.map_or(Next::Nothing, Next::Send)
    }
}

/// Answers one stream's reports until it ends; drain ends it at any point,
/// an answer the client does not take within `send_timeout` too. The status
/// to end the stream with, if not OK.
async fn run(
    shared: &Shared,
    mut state: StreamState,
    mut inbound: tonic::Streaming<RateLimitQuotaUsageReports>,
    tx: &mpsc::Sender<Result<RateLimitQuotaResponse, tonic::Status>>,
) -> Option<tonic::Status> {
    shared.metrics.stream(true);
    let mut moved = shared.moved.subscribe();
    let drained = draining(shared.drain.clone());
    tokio::pin!(drained);
    let wait = shared.settings.send_timeout;
    let ended = loop {
        let next = tokio::select! {
            () = &mut drained => break Some(StreamError::Draining),
            next = next(shared, &mut state, &mut inbound, &mut moved) => next,
        };
        match next {
            Ok(Next::Nothing) => {}
            Ok(Next::End) => break None,
            Ok(Next::Send(response)) => tokio::select! {
                () = &mut drained => break Some(StreamError::Draining),
                sent = tx.send_timeout(Ok(response), wait) => match sent {
                    Ok(()) => {}
                    Err(mpsc::error::SendTimeoutError::Closed(_)) => break None,
                    Err(mpsc::error::SendTimeoutError::Timeout(_)) => {
                        break Some(StreamError::NotReading(wait));
                    }
                },
            },
            Err(e) => break Some(e),
        }
    };
    state.leave(shared).await;
    shared.metrics.buckets(false, state.len() as u64);
    shared.metrics.stream(false);
    let e = ended?;
    if !matches!(e, StreamError::Draining) {
        shared.metrics.error();
    }
    let status = e.status();
    tracing::debug!(error = %status.message(), "RLQS stream ended");
    Some(status)
}

/// The next message's answer, or the answer to another stream's move.
async fn next(
    shared: &Shared,
    state: &mut StreamState,
    inbound: &mut tonic::Streaming<RateLimitQuotaUsageReports>,
    moved: &mut broadcast::Receiver<(Arc<str>, String)>,
) -> Result<Next, StreamError> {
    tokio::select! {
        message = inbound.message() => match message {
            Ok(Some(reports)) => state.answer(shared, &reports).await.map(Next::from),
            Ok(None) => Ok(Next::End),
            // A message over the size bound, or bytes that are not one:
            // said back to the client (who may be gone already).
            Err(status) => Err(StreamError::Inbound(status)),
        },
        key = moved.recv() => match key {
            Ok((key, from)) if from != state.id() => Ok(state.moved(shared, &key).await.into()),
            _ => Ok(Next::Nothing),
        },
    }
}

/// Resolves once `drain` is true (never, if its sender is gone first).
async fn draining(mut drain: watch::Receiver<bool>) {
    loop {
        if *drain.borrow_and_update() {
            return;
        }
        if drain.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::time::Duration;

    use floodgate_proto::envoy::service::rate_limit_quota::v3::BucketId;
    use floodgate_proto::envoy::service::rate_limit_quota::v3::rate_limit_quota_response::bucket_action::BucketAction as Action;
    use floodgate_proto::envoy::service::rate_limit_quota::v3::rate_limit_quota_usage_reports::BucketQuotaUsage;
    use floodgate_proto::envoy::r#type::v3::rate_limit_strategy::Strategy;

    use super::*;
    use crate::clock::Clock;
    use crate::limiter::LimiterOptions;
    use crate::rules::{Rules, load_files};
    use crate::store::key::CacheKey;
    use crate::store::memory::MemoryStore;

    const RULES: &str = "domain: edge\ndescriptors:\n  - key: user\n    rate_limit: {unit: minute, requests_per_unit: 60}\n";

    fn shared(clock: &Clock) -> Arc<Shared> {
        let rules = load_files(&[("edge.yaml".into(), RULES.into())], false)
            .unwrap_or_else(|e| panic!("{e:?}"));
        let limiter = Limiter::new(
            Rules::new(rules),
            Arc::new(MemoryStore::new(100, clock.clone())),
            CacheKey::new(""),
            clock.clone(),
            LimiterOptions::default(),
        );
        let (_, drain) = watch::channel(false);
        let rlqs = Rlqs::new(
            limiter,
            RequestLimits::default(),
            RlqsSettings::default(),
            drain,
        );
        rlqs.shared
    }

    fn reports(allowed: u64, denied: u64) -> RateLimitQuotaUsageReports {
        RateLimitQuotaUsageReports {
            domain: "edge".into(),
            bucket_quota_usages: vec![BucketQuotaUsage {
                bucket_id: Some(BucketId {
                    bucket: HashMap::from([("user".to_owned(), "u".to_owned())]),
                }),
                time_elapsed: None,
                num_requests_allowed: allowed,
                num_requests_denied: denied,
            }],
        }
    }

    /// The token bucket's (tokens_per_fill, max_tokens) in `r`, if any.
    fn bucket(r: Option<RateLimitQuotaResponse>) -> Option<(u32, u32)> {
        let action = r?.bucket_action.pop()?.bucket_action?;
        let Action::QuotaAssignmentAction(q) = action else {
            return None;
        };
        match q.rate_limit_strategy?.strategy? {
            Strategy::TokenBucket(tb) => Some((tb.tokens_per_fill?, tb.max_tokens)),
            _ => None,
        }
    }

    async fn answer(
        shared: &Shared,
        s: &mut StreamState,
        r: RateLimitQuotaUsageReports,
    ) -> Option<RateLimitQuotaResponse> {
        s.answer(shared, &r)
            .await
            .unwrap_or_else(|e| panic!("{e:?}"))
    }

    /// Two instances every 5 s: halves; one falls silent (its stream not
    /// ended) and no longer counts after three of its intervals.
    #[tokio::test(start_paused = true)]
    async fn a_silent_instance_stops_counting_after_three_intervals() {
        let clock = Clock::manual(Duration::from_secs(1_700_000_000));
        let shared = shared(&clock);
        let (mut a, mut b) = (StreamState::new("a".into()), StreamState::new("b".into()));
        let tick = |by: Duration| {
            clock.advance(by);
            tokio::time::advance(by)
        };
        assert_eq!(
            bucket(answer(&shared, &mut a, reports(1, 9)).await),
            Some((60, 1))
        );
        assert_eq!(
            bucket(answer(&shared, &mut b, reports(1, 9)).await),
            Some((30, 1))
        );
        for _ in 0..2 {
            tick(Duration::from_secs(5)).await;
            answer(&shared, &mut a, reports(2, 23)).await;
            answer(&shared, &mut b, reports(2, 23)).await;
        }
        // b's measured interval is 5 s: it counts for 15 s after its last report.
        tick(Duration::from_secs(14)).await;
        assert_eq!(
            bucket(answer(&shared, &mut a, reports(2, 23)).await),
            None,
            "still halves"
        );
        tick(Duration::from_secs(2)).await;
        assert_eq!(
            bucket(answer(&shared, &mut a, reports(2, 23)).await),
            Some((60, 1))
        );
    }
}
