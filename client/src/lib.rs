//! A Rust client for Floodgate, or for any service that speaks Envoy's Rate
//! Limit Service v3 (`envoy.service.ratelimit.v3.RateLimitService`).
//!
//! This is the typed core: one multiplexed HTTP/2 channel, descriptors built
//! with a small builder, and a typed [`Decision`]. Retries, adaptive
//! throttling and the tower layer come on top of it.
//!
//! ```no_run
//! use floodgate_client::{Client, Descriptor};
//!
//! # async fn example() -> Result<(), floodgate_client::Error> {
//! let mut client = Client::connect("http://127.0.0.1:8081").await?;
//! let decision = client
//!     .should_rate_limit("edge", [Descriptor::new().entry("user", "alice")])
//!     .await?;
//! if decision.allowed {
//!     println!("allowed, {} left", decision.statuses[0].remaining);
//! } else {
//!     println!("over the limit, retry in {:?}", decision.retry_after());
//! }
//! # Ok(())
//! # }
//! ```

use std::time::Duration;

use floodgate_proto::rate_limit_descriptor::Entry;
use floodgate_proto::rate_limit_response::Code;
use floodgate_proto::{RateLimitDescriptor, RateLimitRequest, RateLimitServiceClient};
use tonic::transport::Channel;

/// The generated wire types, for anything the typed API does not cover.
pub use floodgate_proto as proto;

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The endpoint is invalid or cannot be reached.
    #[error("cannot connect: {0}")]
    Connect(#[from] tonic::transport::Error),
    /// The service answered with an error status (e.g. `INVALID_ARGUMENT`).
    #[error("rate limit service error: {0}")]
    Status(#[from] tonic::Status),
}

/// One descriptor: ordered key/value entries, optionally with its own hit count.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Descriptor {
    entries: Vec<(String, String)>,
    hits: Option<u64>,
}

impl Descriptor {
    /// An empty descriptor; add entries with [`Descriptor::entry`].
    pub fn new() -> Self {
        Descriptor::default()
    }

    /// Appends an entry (from the most general to the most specific).
    pub fn entry(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.entries.push((key.into(), value.into()));
        self
    }

    /// Counts `hits` for this descriptor (0 checks without consuming).
    pub fn hits(mut self, hits: u64) -> Self {
        self.hits = Some(hits);
        self
    }

    fn into_proto(self) -> RateLimitDescriptor {
        RateLimitDescriptor {
            entries: self
                .entries
                .into_iter()
                .map(|(key, value)| Entry { key, value })
                .collect(),
            hits_addend: self.hits,
            ..RateLimitDescriptor::default()
        }
    }
}

/// The decision for one descriptor.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DescriptorDecision {
    /// False when this descriptor is over its limit.
    pub allowed: bool,
    /// Requests per unit of the limit that applied, if any.
    pub limit: Option<u32>,
    /// Hits left in the current window.
    pub remaining: u32,
    /// Time until the window resets, if a limit applied.
    pub reset_after: Option<Duration>,
}

/// The decision for a whole request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    /// False when the request is over a limit.
    pub allowed: bool,
    /// One entry per descriptor, in request order.
    pub statuses: Vec<DescriptorDecision>,
}

impl Decision {
    /// When to try again after a rejection: the longest reset among the
    /// descriptors that are over their limit.
    pub fn retry_after(&self) -> Option<Duration> {
        self.statuses
            .iter()
            .filter(|s| !s.allowed)
            .filter_map(|s| s.reset_after)
            .max()
    }
}

/// A client over one multiplexed HTTP/2 channel. Cloning is cheap and
/// shares the channel.
#[derive(Clone, Debug)]
pub struct Client {
    inner: RateLimitServiceClient<Channel>,
}

impl Client {
    /// Connects to `endpoint`, e.g. `http://127.0.0.1:8081`.
    pub async fn connect(endpoint: impl Into<String>) -> Result<Self, Error> {
        let channel = tonic::transport::Endpoint::from_shared(endpoint.into())?
            .connect()
            .await?;
        Ok(Client {
            inner: RateLimitServiceClient::new(channel),
        })
    }

    /// Asks whether a request described by `descriptors` in `domain` is
    /// within its limits, counting one hit per descriptor (unless a
    /// descriptor says otherwise).
    pub async fn should_rate_limit(
        &mut self,
        domain: &str,
        descriptors: impl IntoIterator<Item = Descriptor>,
    ) -> Result<Decision, Error> {
        let request = RateLimitRequest {
            domain: domain.to_owned(),
            descriptors: descriptors
                .into_iter()
                .map(Descriptor::into_proto)
                .collect(),
            hits_addend: 0,
        };
        let response = self.inner.should_rate_limit(request).await?.into_inner();
        let statuses = response
            .statuses
            .iter()
            .map(|s| DescriptorDecision {
                allowed: s.code() != Code::OverLimit,
                limit: s.current_limit.as_ref().map(|l| l.requests_per_unit),
                remaining: s.limit_remaining,
                reset_after: s
                    .duration_until_reset
                    .map(|d| Duration::new(d.seconds.max(0) as u64, d.nanos.max(0) as u32)),
            })
            .collect();
        Ok(Decision {
            allowed: response.overall_code() != Code::OverLimit,
            statuses,
        })
    }
}
