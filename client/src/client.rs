//! The client: settings ([`ClientBuilder`]), the channel, and the path of
//! one call: memo → per-key throttle → service throttle → retries within the
//! deadline → decision (or the failure policy).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use floodgate_proto::{RateLimitRequest, RateLimitResponse, RateLimitServiceClient};
use tokio::time::Instant;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

use crate::balance::{self, Resolver};
use crate::decision::{Decision, DescriptorDecision, Source};
use crate::descriptor::Descriptor;
use crate::error::Error;
use crate::memo::OverLimitMemo;
use crate::retry::{self, RetryPolicy};
use crate::throttle::{AdaptiveThrottle, KeyedThrottles, ThrottleSettings};

/// What to answer when the service cannot be reached (after retries), or
/// when the client has stopped calling it because it keeps failing.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum FailurePolicy {
    /// Let the request through (the default): a rate limiter that is down
    /// should not take the service down with it.
    #[default]
    Allow,
    /// Reject the request.
    Deny,
}

/// Counts of how calls were answered since the client was built.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Calls that reached the service (each counted once, however many
    /// attempts it took).
    pub service_calls: u64,
    /// Answered by the over-limit memo.
    pub memo_answers: u64,
    /// Dropped by a key's adaptive throttle.
    pub throttled: u64,
    /// Answered by the failure policy.
    pub failure_policy: u64,
}

#[derive(Debug, Default)]
struct Counters {
    service_calls: AtomicU64,
    memo_answers: AtomicU64,
    throttled: AtomicU64,
    failure_policy: AtomicU64,
}

/// The longest deadline a call can have (longer ones are cut to this).
const MAX_DEADLINE: Duration = Duration::from_secs(86_400);

/// Settings of a [`Client`]; start with [`Client::builder`].
#[derive(Clone, Debug)]
pub struct ClientBuilder {
    endpoints: Vec<String>,
    resolve_every: Option<Duration>,
    tls: Option<ClientTlsConfig>,
    tls_files: Option<TlsFiles>,
    connect_timeout: Duration,
    deadline: Duration,
    retry: RetryPolicy,
    failure_policy: FailurePolicy,
    throttle: Option<ThrottleSettings>,
    throttle_max_keys: usize,
    memo_max_entries: usize,
    degraded_header: Option<String>,
}

impl ClientBuilder {
    fn new(endpoints: Vec<String>) -> Self {
        ClientBuilder {
            endpoints,
            resolve_every: None,
            tls: None,
            tls_files: None,
            connect_timeout: Duration::from_secs(1),
            deadline: Duration::from_millis(500),
            retry: RetryPolicy::default(),
            failure_policy: FailurePolicy::Allow,
            throttle: Some(ThrottleSettings::default()),
            throttle_max_keys: 10_000,
            memo_max_entries: 10_000,
            degraded_header: Some("x-floodgate-degraded".to_owned()),
        }
    }

    /// Re-resolves each endpoint's host name this often and balances calls
    /// over every address it resolves to (e.g. a Kubernetes headless
    /// service). Without it, several endpoints are balanced as given and one
    /// endpoint is one connection. With it, TLS names the server by the
    /// endpoint's host (a `domain_name` set in [`ClientBuilder::tls`] is
    /// replaced).
    pub fn resolve_every(mut self, every: Duration) -> Self {
        self.resolve_every = Some(every.max(Duration::from_millis(100)));
        self
    }

    /// TLS settings (CA, client identity, server name). `https://`
    /// endpoints without this use the system's root certificates. With
    /// TLS settings, an `http://` endpoint is an error (it would go
    /// without TLS). For PEM files, [`ClientBuilder::mtls_files`] and
    /// [`ClientBuilder::tls_ca_file`] are one call.
    pub fn tls(mut self, tls: ClientTlsConfig) -> Self {
        self.tls = Some(tls);
        self.tls_files = None;
        self
    }

    /// mTLS from PEM files, e.g. the three files of a cert-manager Secret:
    /// trusts only the CA certificate(s) in `ca` (`ca.crt`) and presents the
    /// certificate chain in `cert` (`tls.crt`) with its private key `key`
    /// (`tls.key`). The server is named by the endpoint's host (an IP
    /// address matches an IP SAN). [`ClientBuilder::build`] reads the files
    /// and fails with [`Error::TlsFile`] naming a file that is missing or
    /// holds no PEM certificate or key, or with [`Error::Connect`] if the key
    /// does not match the certificate. Replaces [`ClientBuilder::tls`].
    ///
    /// ```no_run
    /// # fn example() -> Result<(), floodgate_client::Error> {
    /// let client = floodgate_client::Client::builder(["https://floodgate.infra:8081"])
    ///     .mtls_files("/etc/floodgate-tls/ca.crt", "/etc/floodgate-tls/tls.crt", "/etc/floodgate-tls/tls.key")
    ///     .build()?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn mtls_files(
        mut self,
        ca: impl Into<PathBuf>,
        cert: impl Into<PathBuf>,
        key: impl Into<PathBuf>,
    ) -> Self {
        self.tls = None;
        self.tls_files = Some(TlsFiles {
            ca: ca.into(),
            identity: Some((cert.into(), key.into())),
        });
        self
    }

    /// TLS trusting only the CA certificate(s) in the PEM file `ca`, with no
    /// client certificate; read as by [`ClientBuilder::mtls_files`].
    pub fn tls_ca_file(mut self, ca: impl Into<PathBuf>) -> Self {
        self.tls = None;
        self.tls_files = Some(TlsFiles {
            ca: ca.into(),
            identity: None,
        });
        self
    }

    /// How long to wait for a connection (default 1 s).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// The deadline of each call, all attempts included (default 500 ms).
    /// [`Client::should_rate_limit_within`] overrides it per call.
    pub fn deadline(mut self, deadline: Duration) -> Self {
        self.deadline = deadline;
        self
    }

    /// Retries on transient errors (default: 3 attempts, 10 ms backoff
    /// doubling to 200 ms, full jitter). [`RetryPolicy::none`] turns them off.
    pub fn retry(mut self, policy: RetryPolicy) -> Self {
        self.retry = policy;
        self
    }

    /// What to answer when the service cannot be reached (default allow).
    pub fn failure_policy(mut self, policy: FailurePolicy) -> Self {
        self.failure_policy = policy;
        self
    }

    /// Adaptive throttling settings (on by default with
    /// [`ThrottleSettings::default`]).
    pub fn throttle(mut self, settings: ThrottleSettings) -> Self {
        self.throttle = Some(settings);
        self
    }

    /// Turns adaptive throttling off.
    pub fn no_throttle(mut self) -> Self {
        self.throttle = None;
        self
    }

    /// Most keys with a throttle of their own (default 10,000); past it, new
    /// keys go unthrottled until idle ones are forgotten.
    pub fn throttle_max_keys(mut self, max: usize) -> Self {
        self.throttle_max_keys = max.max(1);
        self
    }

    /// Most descriptors the over-limit memo holds (default 10,000); 0 turns
    /// the memo off.
    pub fn over_limit_memo(mut self, max_entries: usize) -> Self {
        self.memo_max_entries = max_entries;
        self
    }

    /// The response header by which the service marks degraded answers
    /// (default `x-floodgate-degraded`, Floodgate's); `None` ignores it.
    pub fn degraded_header(mut self, name: Option<String>) -> Self {
        self.degraded_header = name;
        self
    }

    /// The endpoint for `url`; `tls_domain` names the server for TLS when
    /// `url` holds a resolved address rather than the name.
    fn endpoint(&self, url: &str, tls_domain: Option<&str>) -> Result<Endpoint, Error> {
        let invalid = |reason: &str| Error::Endpoint {
            endpoint: url.to_owned(),
            reason: reason.to_owned(),
        };
        let uri: http::Uri = url.parse().map_err(|e| invalid(&format!("{e}")))?;
        let tls = match uri.scheme_str() {
            Some("http") if self.tls.is_some() => {
                return Err(invalid(
                    "TLS settings are given: the scheme must be https://",
                ));
            }
            Some("http") => None,
            Some("https") => {
                let tls = self
                    .tls
                    .clone()
                    .unwrap_or_else(|| ClientTlsConfig::new().with_enabled_roots());
                Some(match tls_domain {
                    Some(domain) => tls.domain_name(domain),
                    None => tls,
                })
            }
            _ => return Err(invalid("the scheme must be http:// or https://")),
        };
        if uri.host().is_none() {
            return Err(invalid("no host"));
        }
        let mut endpoint = Endpoint::from(uri)
            .connect_timeout(self.connect_timeout)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(30))
            .keep_alive_timeout(Duration::from_secs(10));
        if let Some(tls) = tls {
            endpoint = endpoint.tls_config(tls)?;
        }
        Ok(endpoint)
    }

    /// Builds the client. Connections are made on first use, so a service
    /// that is down now does not stop the caller from starting: its calls
    /// get the failure policy until it is up. Fails only on invalid
    /// settings (TLS files included: they are read now). Must be called
    /// inside a tokio runtime.
    pub fn build(mut self) -> Result<Client, Error> {
        if let Some(files) = self.tls_files.take() {
            self.tls = Some(files.read()?);
        }
        if self.endpoints.is_empty() {
            return Err(Error::Endpoint {
                endpoint: String::new(),
                reason: "no endpoints given".to_owned(),
            });
        }
        let endpoints = self
            .endpoints
            .iter()
            .map(|url| self.endpoint(url, None))
            .collect::<Result<Vec<_>, _>>()?;
        let (channel, resolver) = match self.resolve_every {
            Some(every) => {
                let settings = self.clone();
                let (channel, resolver) =
                    balance::resolving(&endpoints, every, move |url, host| {
                        settings.endpoint(url, Some(host))
                    });
                (channel, Some(resolver))
            }
            None if endpoints.len() == 1 => {
                let mut endpoints = endpoints;
                (endpoints.remove(0).connect_lazy(), None)
            }
            None => (Channel::balance_list(endpoints.into_iter()), None),
        };
        Ok(self.with_channel(channel, resolver))
    }

    fn with_channel(self, channel: Channel, resolver: Option<Resolver>) -> Client {
        let memo = (self.memo_max_entries > 0).then(|| OverLimitMemo::new(self.memo_max_entries));
        Client {
            inner: Arc::new(Inner {
                rpc: RateLimitServiceClient::new(channel),
                deadline: self.deadline,
                retry: self.retry,
                failure_policy: self.failure_policy,
                keyed: self
                    .throttle
                    .clone()
                    .map(|s| KeyedThrottles::new(s, self.throttle_max_keys)),
                service: self.throttle.map(AdaptiveThrottle::new),
                memo,
                degraded_header: self.degraded_header,
                counters: Counters::default(),
                _resolver: resolver,
            }),
        }
    }
}

/// PEM files for TLS, read by [`ClientBuilder::build`].
#[derive(Clone, Debug)]
struct TlsFiles {
    ca: PathBuf,
    /// The client certificate chain and its key, for mTLS.
    identity: Option<(PathBuf, PathBuf)>,
}

impl TlsFiles {
    fn read(&self) -> Result<ClientTlsConfig, Error> {
        let ca = pem_file("CA file", &self.ca, Pem::Certificate)?;
        let tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca));
        Ok(match &self.identity {
            Some((cert, key)) => tls.identity(Identity::from_pem(
                pem_file("certificate file", cert, Pem::Certificate)?,
                pem_file("key file", key, Pem::PrivateKey)?,
            )),
            None => tls,
        })
    }
}

/// What a PEM file must hold.
#[derive(Clone, Copy)]
enum Pem {
    Certificate,
    PrivateKey,
}

/// The file's bytes, if it holds a PEM section of the kind `want` (tonic
/// parses it when the client is built).
fn pem_file(what: &'static str, path: &Path, want: Pem) -> Result<Vec<u8>, Error> {
    let failed = |reason: String| Error::TlsFile {
        what,
        path: path.to_owned(),
        reason,
    };
    let bytes = std::fs::read(path).map_err(|e| {
        failed(match e.kind() {
            std::io::ErrorKind::NotFound => "no such file".to_owned(),
            _ => format!("cannot read: {e}"),
        })
    })?;
    let text = String::from_utf8_lossy(&bytes);
    let mut begins = text
        .lines()
        .filter_map(|l| l.trim_end().strip_prefix("-----BEGIN "));
    let found = match want {
        Pem::Certificate => begins.any(|l| l == "CERTIFICATE-----"),
        Pem::PrivateKey => begins.any(|l| l.ends_with("PRIVATE KEY-----")),
    };
    match (found, want) {
        (true, _) => Ok(bytes),
        (false, Pem::Certificate) => Err(failed(
            "no PEM certificate in it (expected -----BEGIN CERTIFICATE-----)".to_owned(),
        )),
        (false, Pem::PrivateKey) => Err(failed(
            "no PEM private key in it (expected -----BEGIN PRIVATE KEY-----, or an RSA or EC key)"
                .to_owned(),
        )),
    }
}

#[derive(Debug)]
struct Inner {
    rpc: RateLimitServiceClient<Channel>,
    deadline: Duration,
    retry: RetryPolicy,
    failure_policy: FailurePolicy,
    /// One throttle per request key: OVER_LIMIT answers are its rejections.
    keyed: Option<KeyedThrottles>,
    /// One throttle for the service: errors are its rejections.
    service: Option<AdaptiveThrottle>,
    memo: Option<OverLimitMemo>,
    degraded_header: Option<String>,
    counters: Counters,
    /// Stops re-resolving when the last clone of the client is dropped.
    _resolver: Option<Resolver>,
}

/// A client of an Envoy RLS v3 service over HTTP/2 (one multiplexed
/// connection per endpoint). Cloning is cheap and shares everything:
/// connections, throttles, the memo and the stats.
#[derive(Clone, Debug)]
pub struct Client {
    inner: Arc<Inner>,
}

impl Client {
    /// Settings for a client of `endpoints` (`http://host:port` or
    /// `https://...`; several are balanced).
    pub fn builder<I, S>(endpoints: I) -> ClientBuilder
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        ClientBuilder::new(endpoints.into_iter().map(Into::into).collect())
    }

    /// A client of one endpoint with default settings, connected now: fails
    /// if the endpoint cannot be reached (unlike [`ClientBuilder::build`]).
    pub async fn connect(endpoint: impl Into<String>) -> Result<Self, Error> {
        let builder = Client::builder([endpoint.into()]);
        let channel = builder
            .endpoint(&builder.endpoints[0], None)?
            .connect()
            .await?;
        Ok(builder.with_channel(channel, None))
    }

    /// How calls were answered so far.
    pub fn stats(&self) -> Stats {
        let c = &self.inner.counters;
        Stats {
            service_calls: c.service_calls.load(Ordering::Relaxed),
            memo_answers: c.memo_answers.load(Ordering::Relaxed),
            throttled: c.throttled.load(Ordering::Relaxed),
            failure_policy: c.failure_policy.load(Ordering::Relaxed),
        }
    }

    /// Asks whether a request described by `descriptors` in `domain` is
    /// within its limits, counting one hit per descriptor (unless a
    /// descriptor says otherwise), within the client's deadline.
    ///
    /// Returns `Err` only when the service refuses the call itself (e.g. an
    /// empty domain: `INVALID_ARGUMENT`; or `UNIMPLEMENTED`,
    /// `PERMISSION_DENIED`, `UNAUTHENTICATED`: a misconfigured client); when
    /// it cannot be reached or fails (`UNAVAILABLE`, `INTERNAL`, a deadline
    /// passed...), the failure policy answers and says so in
    /// [`Decision::source`].
    pub async fn should_rate_limit(
        &self,
        domain: &str,
        descriptors: impl IntoIterator<Item = Descriptor>,
    ) -> Result<Decision, Error> {
        self.should_rate_limit_within(domain, descriptors, self.inner.deadline)
            .await
    }

    /// [`Client::should_rate_limit`] with this call's own deadline.
    pub async fn should_rate_limit_within(
        &self,
        domain: &str,
        descriptors: impl IntoIterator<Item = Descriptor>,
        deadline: Duration,
    ) -> Result<Decision, Error> {
        let inner = &*self.inner;
        let descriptors: Vec<Descriptor> = descriptors.into_iter().collect();
        let now = Instant::now();
        let deadline = now + deadline.min(MAX_DEADLINE);
        let keys: Vec<String> = if inner.memo.is_some() || inner.keyed.is_some() {
            descriptors.iter().map(|d| d.memo_key(domain)).collect()
        } else {
            Vec::new()
        };
        // 1.-3. The memo and the throttles may answer without a call.
        let throttle = match self.answer_locally(&descriptors, &keys, now) {
            Ok(throttle) => throttle,
            Err(decision) => return Ok(decision),
        };
        // 4. The call, retried within the deadline.
        let response = match self.call(domain, &descriptors, deadline).await {
            Ok(response) => response,
            // The service answered, but no answer can come of this call.
            Err(Answered::Yes(status)) => return Err(Error::Status(status)),
            // The service failed: the key's throttle counts nothing.
            Err(Answered::No(status)) => {
                return Ok(self.policy_answer(descriptors.len(), status.to_string()));
            }
        };
        let decision = Decision::from_response(&response, inner.degraded_header.as_deref());
        if let Some(t) = &throttle {
            t.record(decision.allowed);
        }
        self.remember_exhausted(&descriptors, keys, &decision, now);
        Ok(decision)
    }

    /// Steps 1 to 3 of a call: the memo's answer, or a throttle's drop
    /// (`Err`); else the request's throttle, to tell the outcome (`Ok`).
    fn answer_locally(
        &self,
        descriptors: &[Descriptor],
        keys: &[String],
        now: Instant,
    ) -> Result<Option<Arc<AdaptiveThrottle>>, Decision> {
        let inner = &*self.inner;
        let counters = &inner.counters;
        // 1. The memo: a descriptor the service said is exhausted.
        if let Some(memo) = &inner.memo
            && let Some(decision) = memo_answer(memo, descriptors, keys, now)
        {
            counters.memo_answers.fetch_add(1, Ordering::Relaxed);
            return Err(decision);
        }
        // 2. This request's throttle: its key has been over the limit a lot.
        // Throttles count a request once its outcome is known, so a call
        // the caller cancels counts for nothing either way.
        let throttle = inner
            .keyed
            .as_ref()
            .and_then(|keyed| keyed.get(&request_key(keys)));
        if let Some(t) = &throttle
            && t.would_drop()
        {
            t.record(false);
            counters.throttled.fetch_add(1, Ordering::Relaxed);
            return Err(Decision::local(descriptors.len(), false, Source::Throttled));
        }
        // 3. The service's throttle: it has been failing a lot.
        if let Some(service) = &inner.service
            && service.would_drop()
        {
            service.record(false);
            return Err(self.policy_answer(
                descriptors.len(),
                "not called: most recent calls to the service failed".to_owned(),
            ));
        }
        Ok(throttle)
    }

    /// Step 4: the call, retried within `deadline`; the service's throttle
    /// learns whether the service answered.
    async fn call(
        &self,
        domain: &str,
        descriptors: &[Descriptor],
        deadline: Instant,
    ) -> Result<RateLimitResponse, Answered> {
        let inner = &*self.inner;
        inner.counters.service_calls.fetch_add(1, Ordering::Relaxed);
        let request = RateLimitRequest {
            domain: domain.to_owned(),
            descriptors: descriptors.iter().map(Descriptor::to_proto).collect(),
            hits_addend: 0,
        };
        let result = retry::run(&inner.retry, deadline, |left| {
            let mut rpc = inner.rpc.clone();
            let mut call = tonic::Request::new(request.clone());
            call.set_timeout(left);
            async move { rpc.should_rate_limit(call).await }
        })
        .await;
        let answered = match &result {
            Ok(_) => true,
            Err(status) => is_callers_mistake(status.code()),
        };
        if let Some(service) = &inner.service {
            service.record(answered);
        }
        match result {
            Ok(response) => Ok(response.into_inner()),
            Err(status) if answered => Err(Answered::Yes(status)),
            Err(status) => Err(Answered::No(status)),
        }
    }

    /// Puts each exhausted descriptor of `decision` in the memo.
    fn remember_exhausted(
        &self,
        descriptors: &[Descriptor],
        keys: Vec<String>,
        decision: &Decision,
        now: Instant,
    ) {
        let Some(memo) = &self.inner.memo else {
            return;
        };
        for ((d, status), key) in descriptors.iter().zip(&decision.statuses).zip(keys) {
            // Exhausted: nothing left for any hit before the reset. The
            // reset is counted from before the call, to end no later
            // than the service's.
            if let (false, 0, Some(reset)) = (status.allowed, status.remaining, status.reset_after)
                && !d.is_check_only()
            {
                memo.insert(key, now, reset, status.limit, d.hits_or_one());
            }
        }
    }

    /// What the client answers when the service cannot be reached.
    pub fn failure_policy(&self) -> FailurePolicy {
        self.inner.failure_policy
    }

    /// The failure policy's answer for a request of `descriptors`, counted.
    pub(crate) fn policy_answer(&self, descriptors: usize, cause: String) -> Decision {
        self.inner
            .counters
            .failure_policy
            .fetch_add(1, Ordering::Relaxed);
        let allowed = self.inner.failure_policy == FailurePolicy::Allow;
        Decision::local(descriptors, allowed, Source::FailurePolicy { cause })
    }
}

/// A call the service refused as such: retrying or another instance cannot
/// help, and the service is up. Anything else is the service failing.
fn is_callers_mistake(code: tonic::Code) -> bool {
    use tonic::Code::*;
    matches!(
        code,
        InvalidArgument
            | NotFound
            | AlreadyExists
            | PermissionDenied
            | Unauthenticated
            | FailedPrecondition
            | OutOfRange
            | Unimplemented
    )
}

/// A failed call: whether the service answered it (a caller's mistake,
/// which no retry or policy can fix) or not (the failure policy answers).
enum Answered {
    Yes(tonic::Status),
    No(tonic::Status),
}

/// The key of a whole request for its throttle: its descriptors' keys,
/// each length-prefixed like their parts.
fn request_key(keys: &[String]) -> String {
    crate::descriptor::length_prefixed(keys.iter().map(String::as_str))
}

/// The memo's answer for a request, if any of its descriptors is memoized.
fn memo_answer(
    memo: &OverLimitMemo,
    descriptors: &[Descriptor],
    keys: &[String],
    now: Instant,
) -> Option<Decision> {
    let found: Vec<_> = descriptors
        .iter()
        .zip(keys)
        .map(|(d, key)| {
            (!d.is_check_only())
                .then(|| memo.get(key, d.hits_or_one(), now))
                .flatten()
        })
        .collect();
    if found.iter().all(Option::is_none) {
        return None;
    }
    let statuses = found
        .into_iter()
        .map(|m| match m {
            Some(m) => DescriptorDecision {
                allowed: false,
                limit: m.limit,
                remaining: 0,
                reset_after: Some(m.until.saturating_duration_since(now)),
            },
            None => DescriptorDecision {
                allowed: true,
                limit: None,
                remaining: 0,
                reset_after: None,
            },
        })
        .collect();
    Some(Decision {
        allowed: false,
        statuses,
        source: Source::OverLimitMemo,
        degraded: false,
    })
}
