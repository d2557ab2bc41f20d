//! The `floodgate-client` crate against real servers on loopback: Floodgate
//! itself (typed decisions, the over-limit memo, adaptive throttling, the
//! HTTP layer's headers), and small fake RLS servers where a test needs a
//! service that fails, hangs, counts its calls or speaks TLS.

#![allow(clippy::unwrap_used)] // Tests: a failed unwrap is a failed test.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use floodgate_client::proto::rate_limit_response::Code;
use floodgate_client::proto::{
    RateLimitRequest, RateLimitResponse, RateLimitService, RateLimitServiceClient,
    RateLimitServiceServer,
};
use floodgate_client::{
    Certificate, Client, ClientTlsConfig, Descriptor, FailurePolicy, RateLimitLayer, RetryPolicy,
    Source,
};
use floodgate_e2e::{TestServer, config_with_rules, free_port, rules_dir, user_rules};
use floodgate_server::clock::Clock;
use tonic::transport::Channel;
use tower::ServiceExt;

/// A whole second, and the start of an hour (1_699_999_200 = 472_222 h).
const HOUR_START: u64 = 1_699_999_200;

fn user(id: &str) -> Descriptor {
    Descriptor::new().entry("user", id)
}

// ---------------------------------------------------------------------------
// Fake services

/// What a fake RLS server does with each call.
#[derive(Clone)]
enum Behaviour {
    /// Fails the first `n` calls with `code`, then answers OK.
    FailFirst(u32, tonic::Code),
    /// Never answers.
    Hang,
    /// Forwards to a real server.
    Forward(RateLimitServiceClient<Channel>),
}

#[derive(Clone)]
struct Fake {
    calls: Arc<AtomicU32>,
    behaviour: Behaviour,
}

#[tonic::async_trait]
impl RateLimitService for Fake {
    async fn should_rate_limit(
        &self,
        request: tonic::Request<RateLimitRequest>,
    ) -> Result<tonic::Response<RateLimitResponse>, tonic::Status> {
        let n = self.calls.fetch_add(1, Ordering::SeqCst);
        match &self.behaviour {
            Behaviour::FailFirst(failures, code) if n < *failures => {
                Err(tonic::Status::new(*code, "fake failure"))
            }
            Behaviour::FailFirst(..) => Ok(tonic::Response::new(RateLimitResponse {
                overall_code: Code::Ok as i32,
                ..RateLimitResponse::default()
            })),
            Behaviour::Hang => std::future::pending().await,
            Behaviour::Forward(upstream) => {
                upstream
                    .clone()
                    .should_rate_limit(request.into_inner())
                    .await
            }
        }
    }
}

/// A fake server on a free loopback port; its call count; its address.
async fn fake(behaviour: Behaviour) -> (Arc<AtomicU32>, SocketAddr) {
    fake_with(behaviour, None).await
}

async fn fake_with(
    behaviour: Behaviour,
    tls: Option<tonic::transport::ServerTlsConfig>,
) -> (Arc<AtomicU32>, SocketAddr) {
    let calls = Arc::new(AtomicU32::new(0));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    serve_fake(listener, calls.clone(), behaviour, tls);
    (calls, addr)
}

/// Serves a fake on `listener`, counting calls in `calls`.
fn serve_fake(
    listener: tokio::net::TcpListener,
    calls: Arc<AtomicU32>,
    behaviour: Behaviour,
    tls: Option<tonic::transport::ServerTlsConfig>,
) {
    let mut server = tonic::transport::Server::builder();
    if let Some(tls) = tls {
        server = server.tls_config(tls).unwrap();
    }
    let router = server.add_service(RateLimitServiceServer::new(Fake { calls, behaviour }));
    tokio::spawn(router.serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)));
}

/// Floodgate with `rules` on a clock pinned at `unix_secs`, behind a proxy
/// that counts the calls reaching it. Returns the server (keep it alive),
/// the clock, the call count and the proxy's endpoint.
async fn counted_floodgate(
    rules: &str,
    unix: Duration,
) -> (TestServer, tempfile::TempDir, Clock, Arc<AtomicU32>, String) {
    let dir = rules_dir(&[("edge.yaml", rules)]);
    let clock = Clock::manual(unix);
    let server = TestServer::start_with_clock(config_with_rules(dir.path()), clock.clone()).await;
    let (calls, addr) = fake(Behaviour::Forward(server.client().await)).await;
    (server, dir, clock, calls, format!("http://{addr}"))
}

// ---------------------------------------------------------------------------
// Typed calls

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_crate_gets_typed_decisions() {
    let rules = rules_dir(&[("edge.yaml", user_rules(3).as_str())]);
    let server = TestServer::start(config_with_rules(rules.path())).await;
    let client = Client::connect(format!("http://{}", server.grpc_addr))
        .await
        .unwrap();
    let first = client
        .should_rate_limit("edge", [user("zoe")])
        .await
        .unwrap();
    assert!(first.allowed && !first.degraded);
    assert_eq!(first.source, Source::Service);
    assert_eq!(
        (first.statuses[0].limit, first.statuses[0].remaining),
        (Some(3), 2)
    );
    assert_eq!(first.retry_after(), None);
    let over = client
        .should_rate_limit("edge", [user("zoe").hits(5)])
        .await
        .unwrap();
    assert!(!over.allowed);
    assert_eq!(over.source, Source::Service);
    let retry = over.retry_after().expect("a retry time");
    assert!(
        retry > Duration::ZERO && retry <= Duration::from_secs(3_600),
        "{retry:?}"
    );
    let err = client
        .should_rate_limit("", [user("zoe")])
        .await
        .unwrap_err();
    assert!(
        matches!(&err, floodgate_client::Error::Status(s) if s.code() == tonic::Code::InvalidArgument),
        "{err}"
    );
    // Each call reached the service once; nothing was answered locally.
    let stats = client.stats();
    assert_eq!(
        (stats.service_calls, stats.memo_answers, stats.throttled),
        (3, 0, 0)
    );
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_endpoints_are_named() {
    for bad in ["ftp://127.0.0.1:1", "no scheme", ""] {
        let err = Client::builder([bad]).build().unwrap_err();
        assert!(
            err.to_string().contains("invalid endpoint"),
            "{bad:?}: {err}"
        );
    }
    let none: [&str; 0] = [];
    assert!(
        Client::builder(none)
            .build()
            .unwrap_err()
            .to_string()
            .contains("no endpoints")
    );
}

// ---------------------------------------------------------------------------
// Retries and the failure policy

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transient_errors_are_retried_and_invalid_argument_is_not() {
    let (calls, addr) = fake(Behaviour::FailFirst(2, tonic::Code::Unavailable)).await;
    let client = Client::builder([format!("http://{addr}")]).build().unwrap();
    let decision = client.should_rate_limit("edge", [user("a")]).await.unwrap();
    assert_eq!(decision.source, Source::Service);
    assert!(decision.allowed);
    assert_eq!(
        calls.load(Ordering::SeqCst),
        3,
        "two failures, then success"
    );
    assert_eq!(client.stats().service_calls, 1, "one call, three attempts");

    let (calls, addr) = fake(Behaviour::FailFirst(u32::MAX, tonic::Code::InvalidArgument)).await;
    let client = Client::builder([format!("http://{addr}")]).build().unwrap();
    let err = client
        .should_rate_limit("edge", [user("a")])
        .await
        .unwrap_err();
    assert!(
        matches!(&err, floodgate_client::Error::Status(s) if s.code() == tonic::Code::InvalidArgument)
    );
    assert_eq!(calls.load(Ordering::SeqCst), 1, "never retried");

    // Load shedding: RESOURCE_EXHAUSTED until the attempts run out, then
    // the failure policy answers.
    let (calls, addr) = fake(Behaviour::FailFirst(
        u32::MAX,
        tonic::Code::ResourceExhausted,
    ))
    .await;
    let client = Client::builder([format!("http://{addr}")])
        .retry(RetryPolicy {
            max_attempts: 4,
            ..RetryPolicy::default()
        })
        .build()
        .unwrap();
    let decision = client.should_rate_limit("edge", [user("a")]).await.unwrap();
    assert!(
        matches!(&decision.source, Source::FailurePolicy { cause } if cause.contains("fake failure"))
    );
    assert_eq!(calls.load(Ordering::SeqCst), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_service_gets_the_failure_policy() {
    let nowhere = format!("http://127.0.0.1:{}", free_port());
    let allow = Client::builder([nowhere.as_str()]).build().unwrap();
    let decision = allow
        .should_rate_limit("edge", [user("a"), user("b")])
        .await
        .unwrap();
    assert!(decision.allowed && decision.degraded);
    assert_eq!(decision.statuses.len(), 2);
    assert!(
        matches!(decision.source, Source::FailurePolicy { .. }),
        "{decision:?}"
    );

    let deny = Client::builder([nowhere.as_str()])
        .failure_policy(FailurePolicy::Deny)
        .build()
        .unwrap();
    let decision = deny.should_rate_limit("edge", [user("a")]).await.unwrap();
    assert!(!decision.allowed && decision.degraded);
    assert_eq!(deny.stats().failure_policy, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_service_never_throttles_a_key() {
    // With the service down, a busy key gets the failure policy (allow)
    // every time: the service's failures are not the key's rejections.
    let nowhere = format!("http://127.0.0.1:{}", free_port());
    let client = Client::builder([nowhere.as_str()])
        .retry(RetryPolicy::none())
        .build()
        .unwrap();
    for _ in 0..100 {
        let d = client
            .should_rate_limit("edge", [user("busy")])
            .await
            .unwrap();
        assert!(d.allowed, "{d:?}");
        assert!(matches!(d.source, Source::FailurePolicy { .. }), "{d:?}");
    }
    let stats = client.stats();
    assert_eq!((stats.throttled, stats.failure_policy), (0, 100));
    // And the service's own throttle stopped calling it for most of them.
    assert!(stats.service_calls < 100, "{stats:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelled_calls_count_for_nothing() {
    // Callers that give up (an HTTP client disconnecting behind the layer)
    // must not teach the throttle that the service is failing.
    let (calls, addr) = fake(Behaviour::Hang).await;
    let client = Client::builder([format!("http://{addr}")])
        .deadline(Duration::from_secs(30))
        .build()
        .unwrap();
    for _ in 0..100 {
        let call = client.should_rate_limit("edge", [user("a")]);
        assert!(
            tokio::time::timeout(Duration::from_millis(20), call)
                .await
                .is_err()
        );
    }
    let sent = calls.load(Ordering::SeqCst);
    let d = client
        .should_rate_limit_within("edge", [user("a")], Duration::from_millis(100))
        .await
        .unwrap();
    // Called (not skipped by the service's throttle), then cut at the deadline.
    assert!(
        matches!(&d.source, Source::FailurePolicy { cause } if cause.contains("deadline")),
        "{d:?}"
    );
    assert_eq!(client.stats().failure_policy, 1);
    assert_eq!(client.stats().throttled, 0);
    assert!(calls.load(Ordering::SeqCst) <= sent + 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_service_is_cut_at_the_deadline() {
    let (calls, addr) = fake(Behaviour::Hang).await;
    let client = Client::builder([format!("http://{addr}")])
        .deadline(Duration::from_millis(200))
        .build()
        .unwrap();
    let started = tokio::time::Instant::now();
    let decision = client.should_rate_limit("edge", [user("a")]).await.unwrap();
    // A bound, not a timing: the call must not wait for the hung server.
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(
        matches!(&decision.source, Source::FailurePolicy { cause } if cause.contains("deadline")),
        "{decision:?}"
    );
    // One attempt at most (none if connecting alone took the deadline).
    // (A per-call deadline shorter than the client's: the test above, whose
    // client waits 30 s.)
    assert!(calls.load(Ordering::SeqCst) <= 1);
}

// ---------------------------------------------------------------------------
// Endpoints: balancing, DNS, TLS

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_are_balanced_over_several_endpoints() {
    let (a_calls, a) = fake(Behaviour::FailFirst(0, tonic::Code::Ok)).await;
    let (b_calls, b) = fake(Behaviour::FailFirst(0, tonic::Code::Ok)).await;
    let client = Client::builder([format!("http://{a}"), format!("http://{b}")])
        .build()
        .unwrap();
    for _ in 0..200 {
        let d = client.should_rate_limit("edge", [user("a")]).await.unwrap();
        assert_eq!(d.source, Source::Service);
    }
    let (a_calls, b_calls) = (
        a_calls.load(Ordering::SeqCst),
        b_calls.load(Ordering::SeqCst),
    );
    assert_eq!(a_calls + b_calls, 200);
    assert!(a_calls > 20 && b_calls > 20, "{a_calls} / {b_calls}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dns_name_is_resolved_and_used() {
    let (calls, addr) = fake(Behaviour::FailFirst(0, tonic::Code::Ok)).await;
    // `localhost` may also name ::1: serve there too when the host has IPv6,
    // so that every address the name resolves to answers.
    if let Ok(v6) = tokio::net::TcpListener::bind(("::1", addr.port())).await {
        serve_fake(
            v6,
            calls.clone(),
            Behaviour::FailFirst(0, tonic::Code::Ok),
            None,
        );
    }
    let client = Client::builder([format!("http://localhost:{}", addr.port())])
        .resolve_every(Duration::from_millis(200))
        .deadline(Duration::from_secs(2))
        .build()
        .unwrap();
    for _ in 0..10 {
        let d = client.should_rate_limit("edge", [user("a")]).await.unwrap();
        assert_eq!(d.source, Source::Service, "{d:?}");
    }
    assert_eq!(calls.load(Ordering::SeqCst), 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_endpoints_are_verified_against_the_given_ca() {
    let pki = tempfile::tempdir().unwrap();
    floodgate_e2e::pki::write_test_pki(pki.path()).unwrap();
    let read = |name: &str| std::fs::read(pki.path().join(name)).unwrap();
    let identity = tonic::transport::Identity::from_pem(read("server.pem"), read("server.key"));
    let (calls, addr) = fake_with(
        Behaviour::FailFirst(0, tonic::Code::Ok),
        Some(tonic::transport::ServerTlsConfig::new().identity(identity)),
    )
    .await;
    let endpoint = format!("https://localhost:{}", addr.port());
    let trusted = Client::builder([endpoint.as_str()])
        .tls(ClientTlsConfig::new().ca_certificate(Certificate::from_pem(read("ca.pem"))))
        .build()
        .unwrap();
    let d = trusted
        .should_rate_limit("edge", [user("a")])
        .await
        .unwrap();
    assert_eq!(d.source, Source::Service, "{d:?}");
    assert_eq!(calls.load(Ordering::SeqCst), 1);

    // A CA that did not sign the server's certificate: no call gets through.
    let untrusted = Client::builder([endpoint.as_str()])
        .tls(ClientTlsConfig::new().ca_certificate(Certificate::from_pem(read("other-ca.pem"))))
        .retry(RetryPolicy::none())
        .build()
        .unwrap();
    let d = untrusted
        .should_rate_limit("edge", [user("a")])
        .await
        .unwrap();
    assert!(matches!(d.source, Source::FailurePolicy { .. }), "{d:?}");
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mtls_from_files_is_one_call_and_a_client_without_a_certificate_gets_no_answer() {
    let pki = tempfile::tempdir().unwrap();
    floodgate_e2e::pki::write_test_pki(pki.path()).unwrap();
    let file = |name: &str| pki.path().join(name);
    let read = |name: &str| std::fs::read(file(name)).unwrap();
    let server_tls = tonic::transport::ServerTlsConfig::new()
        .identity(tonic::transport::Identity::from_pem(
            read("server.pem"),
            read("server.key"),
        ))
        .client_ca_root(Certificate::from_pem(read("ca.pem")));
    let (calls, addr) = fake_with(Behaviour::FailFirst(0, tonic::Code::Ok), Some(server_tls)).await;
    let endpoint = format!("https://127.0.0.1:{}", addr.port());
    let client = Client::builder([endpoint.as_str()])
        .mtls_files(file("ca.pem"), file("client.pem"), file("client.key"))
        .build()
        .unwrap();
    let d = client.should_rate_limit("edge", [user("a")]).await.unwrap();
    assert_eq!(d.source, Source::Service, "{d:?}");
    assert_eq!(calls.load(Ordering::SeqCst), 1);

    // The server's CA alone, no client certificate: the server refuses the
    // handshake, the failure policy answers and says why.
    for builder in [
        Client::builder([endpoint.as_str()]).tls_ca_file(file("ca.pem")),
        // A certificate from a CA the server does not trust.
        Client::builder([endpoint.as_str()]).mtls_files(
            file("ca.pem"),
            file("untrusted-client.pem"),
            file("untrusted-client.key"),
        ),
    ] {
        let refused = builder.retry(RetryPolicy::none()).build().unwrap();
        let d = refused
            .should_rate_limit("edge", [user("a")])
            .await
            .unwrap();
        match &d.source {
            Source::FailurePolicy { cause } => assert!(!cause.is_empty(), "{d:?}"),
            other => panic!("answered without a trusted client certificate: {other:?}"),
        }
    }
    assert_eq!(calls.load(Ordering::SeqCst), 1, "no other call got through");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_files_that_cannot_work_fail_the_build_naming_the_file() {
    let pki = tempfile::tempdir().unwrap();
    floodgate_e2e::pki::write_test_pki(pki.path()).unwrap();
    let file = |name: &str| pki.path().join(name);
    let endpoint = "https://127.0.0.1:1";
    let build = |ca: &str, cert: &str, key: &str| {
        Client::builder([endpoint])
            .mtls_files(file(ca), file(cert), file(key))
            .build()
            .unwrap_err()
            .to_string()
    };
    assert_eq!(
        build("gone.pem", "client.pem", "client.key"),
        format!("TLS CA file {}: no such file", file("gone.pem").display())
    );
    assert_eq!(
        build("ca.key", "client.pem", "client.key"),
        format!(
            "TLS CA file {}: no PEM certificate in it (expected -----BEGIN CERTIFICATE-----)",
            file("ca.key").display()
        )
    );
    assert_eq!(
        build("ca.pem", "client.key", "client.key"),
        format!(
            "TLS certificate file {}: no PEM certificate in it (expected -----BEGIN CERTIFICATE-----)",
            file("client.key").display()
        )
    );
    assert_eq!(
        build("ca.pem", "client.pem", "client.pem"),
        format!(
            "TLS key file {}: no PEM private key in it (expected -----BEGIN PRIVATE KEY-----, or an RSA or EC key)",
            file("client.pem").display()
        )
    );
    // A key that is not the certificate's: tonic refuses the pair.
    let mismatch = build("ca.pem", "client.pem", "untrusted-client.key");
    assert!(mismatch.starts_with("cannot connect: "), "{mismatch}");
    // TLS settings with an http:// endpoint would go without TLS: refused.
    let plain = Client::builder(["http://127.0.0.1:1"])
        .tls_ca_file(file("ca.pem"))
        .build()
        .unwrap_err()
        .to_string();
    assert_eq!(
        plain,
        "invalid endpoint \"http://127.0.0.1:1\": TLS settings are given: the scheme must be https://"
    );
}

// ---------------------------------------------------------------------------
// The over-limit memo and adaptive throttling

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_over_limit_key_is_answered_locally_until_its_reset() {
    let (server, _rules, _clock, calls, endpoint) = counted_floodgate(
        &user_rules(2),
        Duration::from_millis(HOUR_START * 1_000 + 600_000),
    )
    .await;
    let client = Client::builder([endpoint.as_str()])
        .no_throttle()
        .build()
        .unwrap();
    for _ in 0..2 {
        let d = client
            .should_rate_limit("edge", [user("mallory")])
            .await
            .unwrap();
        assert!(d.allowed);
    }
    let over = client
        .should_rate_limit("edge", [user("mallory")])
        .await
        .unwrap();
    assert_eq!((over.allowed, &over.source), (false, &Source::Service));
    // 50 minutes left in the hour.
    assert_eq!(over.retry_after(), Some(Duration::from_secs(3_000)));
    for _ in 0..20 {
        let d = client
            .should_rate_limit("edge", [user("mallory")])
            .await
            .unwrap();
        assert_eq!((d.allowed, &d.source), (false, &Source::OverLimitMemo));
        let reset = d.retry_after().unwrap();
        assert!(reset <= Duration::from_secs(3_000) && reset > Duration::from_secs(2_990));
        assert_eq!(d.statuses[0].limit, Some(2));
    }
    assert_eq!(calls.load(Ordering::SeqCst), 3, "the memo made no calls");
    // Other keys still ask the service; a zero-hit check is never memoized.
    let other = client
        .should_rate_limit("edge", [user("alice")])
        .await
        .unwrap();
    assert_eq!((other.allowed, &other.source), (true, &Source::Service));
    let peek = client
        .should_rate_limit("edge", [user("mallory").hits(0)])
        .await
        .unwrap();
    assert_eq!(peek.source, Source::Service);
    assert_eq!(calls.load(Ordering::SeqCst), 5);

    // With the memo off, every call reaches the service.
    let plain = Client::builder([endpoint.as_str()])
        .no_throttle()
        .over_limit_memo(0)
        .build()
        .unwrap();
    for _ in 0..5 {
        let d = plain
            .should_rate_limit("edge", [user("mallory")])
            .await
            .unwrap();
        assert_eq!((d.allowed, &d.source), (false, &Source::Service));
    }
    assert_eq!(calls.load(Ordering::SeqCst), 10);
    server.stop().await.unwrap();
}

/// Pushes 10× a per-second limit of 20 for `windows` seconds of the
/// server's (manual) clock; returns (calls that reached the server, calls
/// the server allowed).
async fn push_ten_times_the_limit(
    client: &Client,
    clock: &Clock,
    calls: &AtomicU32,
    id: &str,
    windows: u32,
) -> (u32, u32) {
    let before = calls.load(Ordering::SeqCst);
    let mut accepted = 0;
    for _ in 0..windows {
        for _ in 0..200 {
            let d = client.should_rate_limit("edge", [user(id)]).await.unwrap();
            if d.allowed {
                assert_eq!(d.source, Source::Service);
                accepted += 1;
            }
        }
        clock.advance(Duration::from_secs(1));
    }
    (calls.load(Ordering::SeqCst) - before, accepted)
}

// One thread, and the random draws seeded: the same run every time.
#[tokio::test]
async fn adaptive_throttling_halves_the_calls_for_the_same_accepted_count() {
    fastrand::seed(20_261_123);
    let rules = "domain: edge\ndescriptors:\n  - key: user\n    rate_limit: {unit: second, requests_per_unit: 20}\n";
    let (server, _rules, clock, calls, endpoint) =
        counted_floodgate(rules, Duration::from_secs(HOUR_START)).await;
    // The memo off in both runs: this measures the throttle alone.
    let off = Client::builder([endpoint.as_str()])
        .no_throttle()
        .over_limit_memo(0)
        .build()
        .unwrap();
    let on = Client::builder([endpoint.as_str()])
        .over_limit_memo(0)
        .build()
        .unwrap();

    let (sent_off, accepted_off) = push_ten_times_the_limit(&off, &clock, &calls, "off", 5).await;
    let (sent_on, accepted_on) = push_ten_times_the_limit(&on, &clock, &calls, "on", 5).await;
    println!(
        "throttle off: {sent_off} calls sent, {accepted_off} accepted; on: {sent_on} sent, {accepted_on} accepted"
    );
    assert_eq!((sent_off, accepted_off), (1_000, 100));
    assert_eq!(
        accepted_on, accepted_off,
        "the throttle cost no accepted request"
    );
    assert!(
        sent_on * 2 <= sent_off,
        "at least 50% fewer calls: {sent_on} vs {sent_off}"
    );
    assert_eq!(u64::from(1_000 - sent_on), on.stats().throttled);
    server.stop().await.unwrap();
}

// ---------------------------------------------------------------------------
// The HTTP layer

fn app(client: Client) -> axum::Router {
    axum::Router::new()
        .route("/", axum::routing::get(|| async { "hello" }))
        .layer(RateLimitLayer::new(
            client,
            "edge",
            |head: &http::request::Parts| match head
                .headers
                .get("x-user")
                .and_then(|v| v.to_str().ok())
            {
                Some(id) => vec![user(id)],
                None => Vec::new(),
            },
        ))
}

async fn get(app: &axum::Router, user: Option<&str>) -> http::Response<axum::body::Body> {
    let mut request = http::Request::get("/");
    if let Some(id) = user {
        request = request.header("x-user", id);
    }
    app.clone()
        .oneshot(request.body(axum::body::Body::empty()).unwrap())
        .await
        .unwrap()
}

/// The response's header names, but for the body's own `content-*`
/// headers (axum adds those to every answer, the layer's 429 included).
fn header_names(response: &http::Response<axum::body::Body>) -> Vec<String> {
    let mut names: Vec<String> = response
        .headers()
        .keys()
        .map(|k| k.as_str().to_owned())
        .filter(|k| !k.starts_with("content-"))
        .collect();
    names.sort();
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_layer_answers_429_with_ratelimit_headers_and_retry_after() {
    // 42.3 s before the hour ends: the service says 42.3 s until reset.
    let now = Duration::from_millis((HOUR_START + 3_600) * 1_000 - 42_300);
    let dir = rules_dir(&[("edge.yaml", user_rules(2).as_str())]);
    let server =
        TestServer::start_with_clock(config_with_rules(dir.path()), Clock::manual(now)).await;
    let endpoint = format!("http://{}", server.grpc_addr);
    let app = app(Client::builder([endpoint.as_str()]).build().unwrap());

    let first = get(&app, Some("carol")).await;
    assert_eq!(first.status(), http::StatusCode::OK);
    assert_eq!(
        header_names(&first),
        ["ratelimit-limit", "ratelimit-remaining", "ratelimit-reset"]
    );
    assert_eq!(first.headers()["ratelimit-limit"], "2");
    assert_eq!(first.headers()["ratelimit-remaining"], "1");
    assert_eq!(first.headers()["ratelimit-reset"], "43");
    let second = get(&app, Some("carol")).await;
    assert_eq!(second.headers()["ratelimit-remaining"], "0");

    let rejected = get(&app, Some("carol")).await;
    assert_eq!(rejected.status(), http::StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(
        header_names(&rejected),
        [
            "ratelimit-limit",
            "ratelimit-remaining",
            "ratelimit-reset",
            "retry-after"
        ]
    );
    assert_eq!(rejected.headers()["ratelimit-limit"], "2");
    assert_eq!(rejected.headers()["ratelimit-remaining"], "0");
    // Retry-After is the service's duration_until_reset, rounded up.
    let mut direct = server.client().await;
    let answer = direct
        .should_rate_limit(RateLimitRequest {
            domain: "edge".into(),
            descriptors: vec![floodgate_client::proto::RateLimitDescriptor {
                hits_addend: Some(0),
                ..floodgate_e2e::descriptor(&[("user", "carol")])
            }],
            hits_addend: 0,
        })
        .await
        .unwrap()
        .into_inner();
    let reset = answer.statuses[0].duration_until_reset.unwrap();
    let reset_secs = reset.seconds + i64::from(reset.nanos > 0);
    assert_eq!(reset_secs, 43, "42.3 s until the hour ends: {reset:?}");
    assert_eq!(
        rejected.headers()["retry-after"],
        reset_secs.to_string().as_str()
    );
    assert_eq!(rejected.headers()["ratelimit-reset"], "43");

    // Requests the descriptor function leaves out are not limited.
    let anonymous = get(&app, None).await;
    assert_eq!(anonymous.status(), http::StatusCode::OK);
    assert_eq!(header_names(&anonymous), Vec::<String>::new());
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_layer_follows_the_failure_policy_when_the_service_is_down() {
    let nowhere = format!("http://127.0.0.1:{}", free_port());
    let open = app(Client::builder([nowhere.as_str()]).build().unwrap());
    let response = get(&open, Some("dave")).await;
    assert_eq!(response.status(), http::StatusCode::OK);
    assert_eq!(header_names(&response), Vec::<String>::new());

    let closed = app(Client::builder([nowhere.as_str()])
        .failure_policy(FailurePolicy::Deny)
        .build()
        .unwrap());
    let response = get(&closed, Some("dave")).await;
    assert_eq!(response.status(), http::StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(header_names(&response), ["retry-after"]);
    assert_eq!(response.headers()["retry-after"], "1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_a_tonic_server_the_layer_rejects_with_resource_exhausted() {
    let rules = rules_dir(&[("edge.yaml", user_rules(2).as_str())]);
    let floodgate = TestServer::start(config_with_rules(rules.path())).await;
    let limiter = Client::builder([format!("http://{}", floodgate.grpc_addr)])
        .build()
        .unwrap();
    // A gRPC service (any would do; this one answers OK) behind the layer,
    // limited per `x-user` metadata.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let protected = tonic::transport::Server::builder()
        .layer(RateLimitLayer::new(
            limiter,
            "edge",
            |head: &http::request::Parts| match head.headers.get("x-user") {
                Some(id) => vec![user(id.to_str().unwrap())],
                None => Vec::new(),
            },
        ))
        .add_service(RateLimitServiceServer::new(Fake {
            calls: Arc::new(AtomicU32::new(0)),
            behaviour: Behaviour::FailFirst(0, tonic::Code::Ok),
        }))
        .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener));
    tokio::spawn(protected);

    let mut grpc = RateLimitServiceClient::connect(format!("http://{addr}"))
        .await
        .unwrap();
    let call = || {
        let mut request = tonic::Request::new(RateLimitRequest {
            domain: "anything".into(),
            ..RateLimitRequest::default()
        });
        request
            .metadata_mut()
            .insert("x-user", "erin".parse().unwrap());
        request
    };
    for remaining in ["1", "0"] {
        let ok = grpc.should_rate_limit(call()).await.unwrap();
        assert_eq!(ok.metadata().get("ratelimit-remaining").unwrap(), remaining);
    }
    let status = grpc.should_rate_limit(call()).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");
    assert_eq!(status.message(), "rate limited");
    let metadata = status.metadata();
    assert_eq!(metadata.get("ratelimit-limit").unwrap(), "2");
    assert_eq!(metadata.get("ratelimit-remaining").unwrap(), "0");
    let retry_after: u64 = metadata
        .get("retry-after")
        .unwrap()
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=3_600).contains(&retry_after), "{retry_after}");
    assert_eq!(
        metadata.get("ratelimit-reset").unwrap().to_str().unwrap(),
        retry_after.to_string()
    );
    floodgate.stop().await.unwrap();
}
