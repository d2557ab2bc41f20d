//! A Rust client for Floodgate, or for any service that speaks Envoy's Rate
//! Limit Service v3 (`envoy.service.ratelimit.v3.RateLimitService`), with
//! what a client needs during a flood: retries with jitter, client-side
//! adaptive throttling, an over-limit memo, a failure policy, and a tower
//! layer that puts all of it in front of an HTTP service.
//!
//! The path of one [`Client::should_rate_limit`] call:
//!
//! 1. [`memo`]: a descriptor the service said is over its limit until a reset
//!    still to come is answered locally, without a call;
//! 2. [`throttle`]: the request's own adaptive throttle may drop it locally,
//!    when the service has been rejecting most of that key's requests; the
//!    service's throttle may skip the call when calls have been failing;
//! 3. [`retry`]: the call, over one multiplexed HTTP/2 connection per
//!    endpoint ([`balance`] spreads calls over several, or over a DNS name's
//!    addresses), retried with backoff and full jitter on transient errors,
//!    within the call's deadline;
//! 4. [`decision`]: the typed answer, or the [`FailurePolicy`]'s when the
//!    service cannot be reached.
//!
//! [`layer`] wraps it as HTTP middleware answering 429 with `RateLimit-*`
//! and `Retry-After` headers.
//!
//! ```no_run
//! use std::time::Duration;
//!
//! use floodgate_client::{Client, Descriptor, FailurePolicy, Source};
//!
//! # async fn example() -> Result<(), floodgate_client::Error> {
//! let client = Client::builder(["http://127.0.0.1:8081"])
//!     .deadline(Duration::from_millis(100))
//!     .failure_policy(FailurePolicy::Allow)
//!     .build()?;
//! let decision = client
//!     .should_rate_limit("edge", [Descriptor::new().entry("user", "alice")])
//!     .await?;
//! if decision.allowed {
//!     println!("allowed, {} left", decision.statuses[0].remaining);
//! } else {
//!     println!("over the limit, retry in {:?}", decision.retry_after());
//! }
//! if let Source::FailurePolicy { cause } = &decision.source {
//!     println!("the service could not be reached: {cause}");
//! }
//! # Ok(())
//! # }
//! ```
//!
//! Over mTLS, from the three PEM files of a cert-manager Secret (`ca.crt`,
//! `tls.crt`, `tls.key`): one call. The files are read by `build`, which
//! names a file that is missing or holds no PEM certificate or key; only the
//! given CA is trusted, and the server is named by the endpoint's host.
//! [`ClientBuilder::tls_ca_file`] is TLS without a client certificate;
//! [`ClientBuilder::tls`] takes tonic's [`ClientTlsConfig`] for anything
//! else ([`Certificate::from_pem`], [`Identity::from_pem`], `domain_name`).
//!
//! ```no_run
//! # fn example() -> Result<(), floodgate_client::Error> {
//! let client = floodgate_client::Client::builder(["https://floodgate.infra:8081"])
//!     .mtls_files(
//!         "/etc/floodgate-tls/ca.crt",
//!         "/etc/floodgate-tls/tls.crt",
//!         "/etc/floodgate-tls/tls.key",
//!     )
//!     .build()?;
//! # Ok(())
//! # }
//! ```
//!
//! Behind an axum router:
//!
//! ```no_run
//! use floodgate_client::{Client, Descriptor, RateLimitLayer};
//!
//! # fn example(router: axum::Router) -> Result<axum::Router, floodgate_client::Error> {
//! let client = Client::builder(["http://127.0.0.1:8081"]).build()?;
//! let router = router.layer(RateLimitLayer::new(client, "edge", |head: &http::request::Parts| {
//!     match head.headers.get("x-user").and_then(|v| v.to_str().ok()) {
//!         Some(user) => vec![Descriptor::new().entry("user", user)],
//!         None => Vec::new(), // not limited
//!     }
//! }));
//! # Ok(router)
//! # }
//! ```

pub mod balance;
pub mod client;
pub mod decision;
pub mod descriptor;
pub mod error;
pub mod layer;
pub mod memo;
pub mod retry;
pub mod throttle;

pub use client::{Client, ClientBuilder, FailurePolicy, Stats};
pub use decision::{Decision, DescriptorDecision, Source};
pub use descriptor::Descriptor;
pub use error::Error;
pub use layer::{RateLimit, RateLimitLayer};
pub use retry::RetryPolicy;
pub use throttle::{AdaptiveThrottle, ThrottleSettings};
/// TLS settings for [`ClientBuilder::tls`] (tonic's, with the `tls-ring`
/// feature; `tls-native-roots` gives `https://` endpoints without settings
/// the system's roots).
pub use tonic::transport::{Certificate, ClientTlsConfig, Identity};

/// The generated wire types, for anything the typed API does not cover.
pub use floodgate_proto as proto;
