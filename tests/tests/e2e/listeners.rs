//! Issue 16, items 2, 3, 4 and 12: transport limits on every listener.
//! Stalled HTTP/2 streams are bounded per connection and time out; idle and
//! slowloris connections are closed; `max_connections` holds and idle
//! sockets cannot lock callers out; `/healthcheck` turns 500 as soon as a
//! drain starts; a connect burst fits in the listen backlog. Each limit is
//! read back from `/metrics` when it bites.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use floodgate_e2e::{
    ServerProcess, TestServer, config_with_rules, http_get, metric, metric_value, request,
    rules_dir, user_rules,
};
use floodgate_proto::rate_limit_response::Code;
use floodgate_server::config::Config;
use floodgate_server::transport::ListenerLimits;
use prost::Message;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

fn server_config(rules: &std::path::Path, limits: ListenerLimits) -> Config {
    Config {
        listeners: limits,
        ..config_with_rules(rules)
    }
}

type H2 = h2::client::Connection<TcpStream, Bytes>;

/// Runs `f` while driving the HTTP/2 connection.
async fn driving<T>(conn: &mut H2, f: impl Future<Output = T>) -> T {
    tokio::select! {
        out = f => out,
        ended = &mut *conn => panic!("the connection ended first: {ended:?}"),
    }
}

/// A ShouldRateLimit request's headers (the body is sent separately).
fn grpc_head(addr: SocketAddr) -> http::Request<()> {
    http::Request::post(format!(
        "http://{addr}/envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit"
    ))
    .header("content-type", "application/grpc")
    .header("te", "trailers")
    .body(())
    .expect("request head")
}

/// A gRPC message: the 5-byte prefix and the encoded request.
fn grpc_body(user: &str) -> Bytes {
    let message = request("edge", &[("user", user)]).encode_to_vec();
    let mut body = vec![0];
    body.extend_from_slice(&(message.len() as u32).to_be_bytes());
    body.extend_from_slice(&message);
    Bytes::from(body)
}

/// The `grpc-status` of a response: from its headers (trailers-only) or its
/// trailers.
async fn grpc_status(response: http::Response<h2::RecvStream>) -> String {
    if let Some(status) = response.headers().get("grpc-status") {
        return status.to_str().unwrap_or_default().to_owned();
    }
    let mut body = response.into_body();
    while let Some(chunk) = body.data().await {
        let chunk = chunk.expect("response body");
        let _ = body.flow_control().release_capacity(chunk.len());
    }
    let trailers = body.trailers().await.expect("trailers").expect("trailers");
    trailers["grpc-status"]
        .to_str()
        .unwrap_or_default()
        .to_owned()
}

/// One complete ShouldRateLimit call for `user` on an open HTTP/2
/// connection: its `grpc-status`.
async fn complete_call(
    conn: &mut H2,
    send: &h2::client::SendRequest<Bytes>,
    addr: SocketAddr,
    user: &str,
) -> String {
    let mut ready = driving(conn, send.clone().ready()).await.expect("ready");
    let (answer, mut body) = ready.send_request(grpc_head(addr), false).expect("send");
    body.send_data(grpc_body(user), true).expect("body");
    let answer = driving(conn, answer).await.expect("answer");
    driving(conn, grpc_status(answer)).await
}

/// Item 2: the gRPC listener advertises SETTINGS_MAX_CONCURRENT_STREAMS, and
/// streams whose body never ends are answered DEADLINE_EXCEEDED after
/// `request_timeout` (freeing their slots), counted on `/metrics`.
#[tokio::test]
async fn stalled_grpc_streams_are_bounded_per_connection_and_time_out() {
    let rules = rules_dir(&[("edge.yaml", &user_rules(1_000))]);
    let limits = ListenerLimits {
        request_timeout: Duration::from_millis(300),
        ..ListenerLimits::default()
    };
    let server = TestServer::start(server_config(rules.path(), limits)).await;
    let tcp = TcpStream::connect(server.grpc_addr).await.expect("connect");
    let (send, mut conn) = h2::client::handshake(tcp).await.expect("h2 handshake");

    // A complete call: answered OK (and the server's settings are in).
    assert_eq!(
        complete_call(&mut conn, &send, server.grpc_addr, "a").await,
        "0"
    );
    assert_eq!(
        conn.max_concurrent_send_streams(),
        ListenerLimits::default().max_concurrent_streams as usize,
        "the server must advertise SETTINGS_MAX_CONCURRENT_STREAMS"
    );

    // Twenty streams with headers and half a body, never finished.
    let started = Instant::now();
    let mut stalled = Vec::new();
    for _ in 0..20 {
        let mut ready = driving(&mut conn, send.clone().ready())
            .await
            .expect("ready");
        let (answer, mut body) = ready
            .send_request(grpc_head(server.grpc_addr), false)
            .expect("send");
        body.send_data(grpc_body("b").slice(..8), false)
            .expect("body");
        stalled.push((answer, body));
    }
    for (answer, _body) in stalled {
        let answered = driving(
            &mut conn,
            tokio::time::timeout(Duration::from_secs(3), answer),
        )
        .await;
        let answer = answered
            .expect("a stalled stream got no answer within 3 s")
            .expect("answer");
        assert_eq!(
            driving(&mut conn, grpc_status(answer)).await,
            "4",
            "DEADLINE_EXCEEDED"
        );
    }
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert_eq!(
        metric::<u64>(
            server.http_addr,
            "floodgate_connection_timeouts_total{listener=\"grpc\",kind=\"request\"}"
        )
        .await,
        Some(20)
    );

    // The connection still serves calls.
    assert_eq!(
        complete_call(&mut conn, &send, server.grpc_addr, "c").await,
        "0"
    );

    // A header list over max_header_list_bytes is refused.
    let mut ready = driving(&mut conn, send.clone().ready())
        .await
        .expect("ready");
    let mut head = grpc_head(server.grpc_addr);
    head.headers_mut()
        .insert("x-padding", "p".repeat(32 * 1024).parse().expect("header"));
    match ready.send_request(head, false) {
        Err(_) => {}
        Ok((answer, mut body)) => {
            body.send_data(grpc_body("d"), true).expect("body");
            if let Ok(answer) = driving(&mut conn, answer).await {
                assert_ne!(
                    answer.status(),
                    http::StatusCode::OK,
                    "a 32 KiB header list must be refused"
                );
            }
        }
    }
    drop(send);
    server.stop().await.expect("clean stop");
}

/// Reads from `tcp` until the server closes it; panics if it is still open
/// after `within`.
async fn closed_within(tcp: &mut TcpStream, within: Duration, what: &str) {
    let mut buf = [0u8; 1024];
    let deadline = Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, tcp.read(&mut buf)).await {
            Err(_) => panic!("{what}: still open after {within:?}"),
            Ok(Ok(0) | Err(_)) => return,
            Ok(Ok(_)) => {}
        }
    }
}

/// Item 3: on every listener, a socket that sends nothing and a slowloris
/// request whose headers never end (a byte every 100 ms) are closed after
/// `header_read_timeout`; a connection idle after a call, after
/// `idle_timeout`. Each is counted.
#[tokio::test]
async fn idle_and_slowloris_connections_are_closed_on_every_listener() {
    let rules = rules_dir(&[("edge.yaml", &user_rules(1_000))]);
    let limits = ListenerLimits {
        header_read_timeout: Duration::from_millis(300),
        idle_timeout: Duration::from_millis(600),
        ..ListenerLimits::default()
    };
    let server = TestServer::start(server_config(rules.path(), limits)).await;
    let within = Duration::from_secs(2);
    for (name, addr) in [
        ("grpc", server.grpc_addr),
        ("http", server.http_addr),
        ("admin", server.admin_addr),
    ] {
        let mut silent = TcpStream::connect(addr).await.expect("connect");
        let mut slow = TcpStream::connect(addr).await.expect("connect");
        let slowloris = async {
            slow.write_all(b"GET /healthcheck HTTP/1.1\r\nHost: x\r\n")
                .await
                .expect("write");
            let started = Instant::now();
            // One header byte every 100 ms, until the server gives up.
            while started.elapsed() < within {
                if slow.write_all(b"x").await.is_err() {
                    return;
                }
                let mut buf = [0u8; 256];
                let read = tokio::time::timeout(Duration::from_millis(100), slow.read(&mut buf));
                if let Ok(Ok(0) | Err(_)) = read.await {
                    return;
                }
            }
            panic!("{name}: slowloris request still open after {within:?}");
        };
        let what = format!("{name}: silent socket");
        tokio::join!(closed_within(&mut silent, within, &what), slowloris);
    }
    let page = http_get(&format!("http://{}/metrics", server.http_addr))
        .await
        .1;
    // gRPC speaks HTTP/2 only: it closes the HTTP/1.1 slowloris at once
    // (a bad preface), so only its silent socket times out.
    for (name, expected) in [("grpc", 1), ("http", 2), ("admin", 2)] {
        let n = metric_value::<u64>(
            &page,
            &format!(
                "floodgate_connection_timeouts_total{{listener=\"{name}\",kind=\"header_read\"}}"
            ),
        );
        assert_eq!(n, Some(expected), "{name}: header_read timeouts\n{page}");
    }

    // A gRPC connection idle after a call is closed (GOAWAY) after idle_timeout.
    let tcp = TcpStream::connect(server.grpc_addr).await.expect("connect");
    let (send, mut conn) = h2::client::handshake(tcp).await.expect("h2 handshake");
    assert_eq!(
        complete_call(&mut conn, &send, server.grpc_addr, "a").await,
        "0"
    );
    let idle_from = Instant::now();
    tokio::time::timeout(within, &mut conn)
        .await
        .expect("an idle gRPC connection still open after 2 s")
        .expect("closed cleanly");
    assert!(idle_from.elapsed() >= Duration::from_millis(500));
    assert_eq!(
        metric::<u64>(
            server.http_addr,
            "floodgate_connection_timeouts_total{listener=\"grpc\",kind=\"idle\"}"
        )
        .await,
        Some(1)
    );
    server.stop().await.expect("clean stop");
}

/// Item 3: with `max_connections` idle sockets open, a real caller still
/// gets answers at once (the idle longest is closed to make room); with
/// every connection busy, one more is closed at once. Counted, and the open
/// connections gauge never passes the limit.
#[tokio::test]
async fn max_connections_holds_and_idle_sockets_cannot_lock_callers_out() {
    const MAX: usize = 8;
    let rules = rules_dir(&[("edge.yaml", &user_rules(1_000))]);
    let limits = ListenerLimits {
        max_connections: MAX,
        header_read_timeout: Duration::from_secs(30),
        request_timeout: Duration::from_secs(30),
        ..ListenerLimits::default()
    };
    let server = TestServer::start(server_config(rules.path(), limits)).await;
    // `TestServer::start` probed the gRPC port once; let that one go.
    let mut idle = Vec::new();
    for _ in 0..MAX {
        idle.push(TcpStream::connect(server.grpc_addr).await.expect("connect"));
    }
    let called = tokio::time::timeout(Duration::from_secs(2), async {
        let mut client = server.client().await;
        client
            .should_rate_limit(request("edge", &[("user", "a")]))
            .await
    })
    .await
    .expect("a caller locked out by idle sockets")
    .expect("call");
    assert_eq!(called.into_inner().overall_code(), Code::Ok);
    let evicted = metric::<u64>(
        server.http_addr,
        "floodgate_connections_evicted_total{listener=\"grpc\"}",
    )
    .await;
    assert!(evicted >= Some(1), "evicted: {evicted:?}");
    let open = metric::<u64>(
        server.http_addr,
        "floodgate_open_connections{listener=\"grpc\"}",
    )
    .await;
    assert!(
        open <= Some(MAX as u64) && open >= Some(1),
        "open: {open:?}"
    );

    // Admin: MAX connections each with a request in flight (a body that
    // never ends); one more is closed at once.
    let mut busy = Vec::new();
    for _ in 0..MAX {
        let mut tcp = TcpStream::connect(server.admin_addr)
            .await
            .expect("connect");
        tcp.write_all(
            b"POST /counters/get HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"domain\"",
        )
        .await
        .expect("write");
        busy.push(tcp);
    }
    // Let the server read every head (the in-flight count is what protects
    // a busy connection).
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut extra = TcpStream::connect(server.admin_addr)
        .await
        .expect("connect");
    let _ = extra
        .write_all(b"GET /counters/get HTTP/1.1\r\nHost: x\r\n\r\n")
        .await;
    closed_within(
        &mut extra,
        Duration::from_secs(1),
        "a connection past max_connections",
    )
    .await;
    assert_eq!(
        metric::<u64>(
            server.http_addr,
            "floodgate_connections_rejected_total{listener=\"admin\",reason=\"max_connections\"}"
        )
        .await,
        Some(1)
    );
    assert_eq!(
        metric::<u64>(
            server.http_addr,
            "floodgate_open_connections{listener=\"admin\"}"
        )
        .await,
        Some(MAX as u64)
    );
    drop(busy);
    drop(idle);
    server.stop().await.expect("clean stop");
}

/// Item 4: `/healthcheck` answers 500 from the moment shutdown starts,
/// during `shutdown_delay`, while calls are still answered.
#[tokio::test]
async fn healthcheck_fails_as_soon_as_shutdown_starts_while_calls_are_answered() {
    let rules = rules_dir(&[("edge.yaml", &user_rules(1_000))]);
    let config = Config {
        shutdown_delay: Duration::from_secs(3),
        ..config_with_rules(rules.path())
    };
    let server = TestServer::start(config).await;
    let health = format!("http://{}/healthcheck", server.http_addr);
    assert_eq!(http_get(&health).await.0, 200);
    let mut client = server.client().await;
    let started = Instant::now();
    let stopped = tokio::spawn(server.stop());
    let mut status = 200;
    while started.elapsed() < Duration::from_secs(1) {
        status = http_get(&health).await.0;
        if status == 500 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        status, 500,
        "/healthcheck still {status} 1 s into a 3 s shutdown_delay"
    );
    let answer = client
        .should_rate_limit(request("edge", &[("user", "a")]))
        .await
        .expect("a call during shutdown_delay");
    assert_eq!(answer.into_inner().overall_code(), Code::Ok);
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "still within the delay"
    );
    stopped.await.expect("stop").expect("clean stop");
}

/// Item 12: a burst of 600 connects to a server that is not accepting
/// (frozen) all complete at once: they fit in the listen backlog (1,024 by
/// default; tokio's bind gives 128, past which the kernel drops SYNs and
/// clients retry after 1 s).
#[tokio::test]
async fn a_connect_burst_fits_in_the_listen_backlog() {
    const BURST: usize = 600;
    let rules = rules_dir(&[("edge.yaml", &user_rules(1_000))]);
    let server = ServerProcess::start(rules.path(), &[], &[]).await;
    server.pause();
    let connects: Vec<_> = (0..BURST)
        .map(|_| {
            let addr = server.grpc_addr;
            tokio::spawn(async move {
                tokio::time::timeout(Duration::from_millis(500), TcpStream::connect(addr))
                    .await
                    .is_ok_and(|c| c.is_ok())
            })
        })
        .collect();
    let mut connected = 0;
    for c in connects {
        connected += usize::from(c.await.expect("connect task"));
    }
    server.resume();
    assert_eq!(
        connected, BURST,
        "connects completed within 500 ms while the server was not accepting"
    );
    // And the server serves them all once it runs again.
    let mut client = server.client().await;
    let answer = client
        .should_rate_limit(request("edge", &[("user", "a")]))
        .await
        .expect("call");
    assert_eq!(answer.into_inner().overall_code(), Code::Ok);
}
