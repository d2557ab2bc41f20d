//! The load generator's client: gRPC unary `ShouldRateLimit` written
//! straight on `h2` (HTTP/2 with prior knowledge, as Envoy and h2load speak
//! it, or over TLS with ALPN `h2` through [`crate::tls::client`]), so that
//! the generator costs less CPU per call than the servers it measures.
//!
//! A tonic `Channel` sends every call through a tower buffer (a queue and a
//! worker task) and a body-forwarding task; on a 2-core machine shared with
//! the server that made the generator the bottleneck (about half of what
//! h2load reaches against the same constant-OK server). Here a call is one
//! HEADERS and one DATA frame out, the answer read in place: no task, no
//! queue, no per-call allocation beyond the request body and headers.

use bytes::{BufMut, Bytes, BytesMut};
use floodgate_proto::{RateLimitRequest, RateLimitResponse};
use futures_util::future::Either;
use h2::client::SendRequest;
use http::{HeaderMap, HeaderValue, Method, Request, StatusCode, Uri};
use prost::Message;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use crate::tls::client::{ALPN_H2, ClientTls, TlsFlags, host_of};

/// The RPC's path.
const PATH: &str = "/envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit";

/// A server to call: where to connect, the URI every request carries, and
/// the TLS to speak, if any.
#[derive(Clone, Debug)]
pub(super) struct Target {
    /// `host:port` to connect to.
    authority: String,
    /// `http(s)://host:port/envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit`.
    uri: Uri,
    /// TLS (ALPN `h2`) when the target is `https://` or a `--tls-*` flag is given.
    tls: Option<ClientTls>,
}

impl Target {
    /// Parses `http://host:port`, `https://host:port` or `host:port`.
    /// `https://` or any `--tls-*` flag in `tls` speaks TLS, which needs
    /// `--tls-ca`; its files are read and checked here, once.
    pub(super) fn parse(text: &str, tls: &TlsFlags) -> Result<Target, String> {
        let (bare, https) = match text.split_once("://") {
            Some(("http", rest)) => (rest, false),
            Some(("https", rest)) => (rest, true),
            Some((scheme, _)) => {
                return Err(format!(
                    "--target {text}: only http:// (HTTP/2 without TLS) or https:// (with TLS) is supported, not {scheme}://"
                ));
            }
            None => (text, false),
        };
        let authority = bare.trim_end_matches('/');
        let secure = https || tls.any();
        let scheme = if secure { "https" } else { "http" };
        let uri: Uri = format!("{scheme}://{authority}{PATH}")
            .parse()
            .map_err(|e| format!("--target {text}: {e}"))?;
        if uri.port_u16().is_none() || authority.contains('/') {
            return Err(format!(
                "--target {text}: expected http://host:port or https://host:port, e.g. http://127.0.0.1:8081"
            ));
        }
        let tls = match secure {
            true => Some(
                ClientTls::new(tls, &[ALPN_H2], host_of(authority))
                    .map_err(|e| format!("--target {text}: {e}"))?,
            ),
            false => None,
        };
        Ok(Target {
            authority: authority.to_owned(),
            uri,
            tls,
        })
    }
}

/// Streams opened on a new connection before the server's SETTINGS say
/// how many it allows (RFC 9113 asks servers to allow at least 100). Past
/// its limit, h2 queues a call until a stream closes: a caller waits for
/// its turn instead of being refused.
const STREAMS_BEFORE_SETTINGS: usize = 100;

/// Opens one HTTP/2 connection for `streams` concurrent calls, over TLS if
/// the target says so (the TLS handshake is done when this returns: a
/// caller times its calls after it). The returned future drives the
/// connection and must be polled (spawned) for calls to make progress; it
/// ends when every handle is dropped or the connection fails. Without TLS
/// the connection is h2's on the `TcpStream` itself, as before TLS existed.
pub(super) async fn connect(
    target: &Target,
    streams: usize,
) -> Result<
    (
        SendRequest<Bytes>,
        impl Future<Output = Result<(), h2::Error>> + Send + 'static,
    ),
    String,
> {
    let tcp = TcpStream::connect(&target.authority)
        .await
        .map_err(|e| format!("cannot connect to {}: {e}", target.authority))?;
    tcp.set_nodelay(true)
        .map_err(|e| format!("TCP_NODELAY on {}: {e}", target.authority))?;
    Ok(match &target.tls {
        None => {
            let (send, connection) = handshake(tcp, target, streams).await?;
            (send, Either::Left(connection))
        }
        Some(tls) => {
            let stream = tls.connect(tcp).await.map_err(|e| {
                format!(
                    "TLS handshake with {} (as {}): {e}",
                    target.authority,
                    tls.server_name()
                )
            })?;
            let (send, connection) = handshake(stream, target, streams).await?;
            (send, Either::Right(connection))
        }
    })
}

/// The HTTP/2 handshake on `io`.
async fn handshake<T: AsyncRead + AsyncWrite + Unpin>(
    io: T,
    target: &Target,
    streams: usize,
) -> Result<(SendRequest<Bytes>, h2::client::Connection<T, Bytes>), String> {
    h2::client::Builder::new()
        .initial_max_send_streams(STREAMS_BEFORE_SETTINGS)
        // h2 closes the connection (GOAWAY ENHANCE_YOUR_CALM, its defence
        // against floods of small DATA frames) when the small frames it
        // holds unread exceed this budget, 32 KiB by default: about 150
        // answers arriving at once. Room for four frames per stream.
        .data_frame_budget((streams * 4 * 256).max(32 * 1024))
        .handshake(io)
        .await
        .map_err(|e| format!("HTTP/2 handshake with {}: {e}", target.authority))
}

/// Why a call failed: the gRPC status code's name (`Unavailable`,
/// `InvalidArgument`, ...) or `transport` for a broken stream or connection.
pub(super) type CallError = String;

/// A failed call, and whether its connection is gone with it (closed,
/// reset, or a GOAWAY that refuses new streams): then no call can go
/// through it again.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Failure {
    /// Why the call failed.
    pub(super) error: CallError,
    /// The connection must be replaced.
    pub(super) connection_lost: bool,
}

impl From<CallError> for Failure {
    fn from(error: CallError) -> Self {
        Failure {
            error,
            connection_lost: false,
        }
    }
}

/// A transport error as a [`Failure`].
fn transport(e: h2::Error, connection_lost: bool) -> Failure {
    let error = match e.reason() {
        Some(reason) => format!("transport ({reason})"),
        None => "transport".to_owned(),
    };
    Failure {
        error,
        connection_lost: connection_lost || e.is_go_away() || e.is_io(),
    }
}

/// The request as a gRPC message: an uncompressed 5-byte frame header and
/// the protobuf bytes.
pub(super) fn frame(request: &RateLimitRequest) -> Bytes {
    let len = request.encoded_len();
    let mut buf = BytesMut::with_capacity(5 + len);
    buf.put_u8(0);
    // A request over 4 GiB is not a rate-limit request; saturate.
    buf.put_u32(u32::try_from(len).unwrap_or(u32::MAX));
    // The buffer holds `len` more bytes: encoding cannot run out of room.
    let _ = request.encode(&mut buf);
    buf.freeze()
}

/// One `ShouldRateLimit` call on `send` with a body from [`frame`]. The
/// answer's `x-floodgate-degraded` header and code are read by the caller.
pub(super) async fn call(
    send: &mut SendRequest<Bytes>,
    target: &Target,
    body: Bytes,
) -> Result<RateLimitResponse, Failure> {
    // Not ready: the connection itself has failed.
    let ready = send.clone().ready().await.map_err(|e| transport(e, true))?;
    *send = ready;
    let mut request = Request::new(());
    *request.method_mut() = Method::POST;
    *request.uri_mut() = target.uri.clone();
    let headers = request.headers_mut();
    headers.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    headers.insert(http::header::TE, HeaderValue::from_static("trailers"));
    let failed = |e| transport(e, false);
    let (response, mut stream) = send.send_request(request, false).map_err(failed)?;
    stream.send_data(body, true).map_err(failed)?;
    let response = response.await.map_err(failed)?;
    if response.status() != StatusCode::OK {
        return Err(format!("HTTP {}", response.status().as_u16()).into());
    }
    // A trailers-only answer carries grpc-status in the headers.
    if let Some(code) = grpc_status(response.headers()) {
        return Err(code.into());
    }
    let mut body = response.into_body();
    let mut message = BytesMut::new();
    while let Some(chunk) = body.data().await {
        let chunk = chunk.map_err(failed)?;
        // Give the window back so that long runs never stall on flow control.
        let _ = body.flow_control().release_capacity(chunk.len());
        message.extend_from_slice(&chunk);
    }
    match body.trailers().await.map_err(failed)? {
        Some(trailers) => match grpc_status(&trailers) {
            Some(code) => return Err(code.into()),
            None if trailers.contains_key("grpc-status") => {}
            None => return Err(String::from("Internal (no grpc-status)").into()),
        },
        None => return Err(String::from("Internal (no trailers)").into()),
    }
    Ok(decode(&message)?)
}

/// The status code's name when `grpc-status` is present and not OK.
fn grpc_status(headers: &HeaderMap) -> Option<CallError> {
    let value = headers.get("grpc-status")?;
    let code = value
        .to_str()
        .ok()
        .and_then(|v| v.parse::<i32>().ok())
        .map(tonic::Code::from_i32);
    match code {
        Some(tonic::Code::Ok) => None,
        Some(code) => Some(format!("{code:?}")),
        None => Some("Internal (bad grpc-status)".to_owned()),
    }
}

/// The response message from a gRPC frame.
fn decode(message: &[u8]) -> Result<RateLimitResponse, CallError> {
    let bad = |what: &str| format!("Internal ({what})");
    let (header, rest) = message
        .split_at_checked(5)
        .ok_or_else(|| bad("short frame"))?;
    if header[0] != 0 {
        return Err(bad("compressed answer"));
    }
    let len = u32::from_be_bytes([header[1], header[2], header[3], header[4]]) as usize;
    let payload = rest.get(..len).ok_or_else(|| bad("truncated frame"))?;
    RateLimitResponse::decode(payload).map_err(|e| bad(&format!("decode: {e}")))
}

/// A tiny gRPC server over TLS for the tests: answers every
/// `ShouldRateLimit` OK, and records the client certificate's names of each
/// connection.
#[cfg(test)]
pub(super) mod test_server {
    use std::net::SocketAddr;
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use bytes::Bytes;
    use floodgate_proto::RateLimitResponse;
    use http::{HeaderMap, HeaderValue, Response};
    use tokio_rustls::TlsAcceptor;

    use crate::tls::client::testing::peer_names;

    /// A running server: stops when dropped.
    pub(in crate::bench) struct Server {
        pub(in crate::bench) addr: SocketAddr,
        clients: Arc<Mutex<Vec<Vec<String>>>>,
        task: tokio::task::JoinHandle<()>,
    }

    impl Server {
        /// The client names of every connection that completed its
        /// handshake.
        pub(in crate::bench) fn clients(&self) -> Vec<Vec<String>> {
            self.clients.lock().unwrap().clone()
        }
    }

    impl Drop for Server {
        fn drop(&mut self) {
            self.task.abort();
        }
    }

    /// Serves on a loopback port; each connection waits `delay` before its
    /// TLS handshake (a slow server), refuses a client that does not speak
    /// `h2` by ALPN, and, with `calls_per_connection`, sends GOAWAY after
    /// that many calls (the client must connect again).
    pub(in crate::bench) async fn serve(
        acceptor: TlsAcceptor,
        delay: Duration,
        calls_per_connection: Option<usize>,
    ) -> Server {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let clients = Arc::new(Mutex::new(Vec::new()));
        let seen = clients.clone();
        let task = tokio::spawn(async move {
            // Dropped with this task: every connection ends with the server.
            let mut connections = tokio::task::JoinSet::new();
            loop {
                let (tcp, _) = listener.accept().await.unwrap();
                let (acceptor, seen) = (acceptor.clone(), seen.clone());
                connections.spawn(async move {
                    tokio::time::sleep(delay).await;
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    if tls.get_ref().1.alpn_protocol() != Some(b"h2") {
                        return;
                    }
                    seen.lock().unwrap().push(peer_names(&tls));
                    serve_connection(tls, calls_per_connection).await;
                });
            }
        });
        Server {
            addr,
            clients,
            task,
        }
    }

    /// Answers the calls of one connection, each OK.
    async fn serve_connection(
        tls: tokio_rustls::server::TlsStream<tokio::net::TcpStream>,
        calls: Option<usize>,
    ) {
        let mut connection = h2::server::handshake(tls).await.unwrap();
        let mut answered = 0;
        while let Some(Ok((request, mut respond))) = connection.accept().await {
            answered += 1;
            if Some(answered) == calls {
                connection.graceful_shutdown();
            }
            tokio::spawn(async move {
                let mut body = request.into_body();
                while let Some(Ok(chunk)) = body.data().await {
                    let _ = body.flow_control().release_capacity(chunk.len());
                }
                let head = Response::builder()
                    .header("content-type", "application/grpc")
                    .body(())
                    .unwrap();
                let Ok(mut stream) = respond.send_response(head, false) else {
                    return;
                };
                let answer = RateLimitResponse {
                    overall_code: 1,
                    ..Default::default()
                };
                let mut message = vec![0, 0, 0, 0, 0];
                prost::Message::encode(&answer, &mut message).unwrap();
                let len = (message.len() - 5) as u32;
                message[1..5].copy_from_slice(&len.to_be_bytes());
                let _ = stream.send_data(Bytes::from(message), false);
                let mut trailers = HeaderMap::new();
                trailers.insert("grpc-status", HeaderValue::from_static("0"));
                let _ = stream.send_trailers(trailers);
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::tls::client::testing::Pki;

    #[test]
    fn targets_parse_and_reject_what_the_generator_cannot_speak() {
        let plain = TlsFlags::default();
        let t = Target::parse("http://127.0.0.1:8081", &plain).unwrap();
        assert_eq!(t.authority, "127.0.0.1:8081");
        assert_eq!(
            t.uri.to_string(),
            "http://127.0.0.1:8081/envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit"
        );
        assert!(t.tls.is_none());
        assert_eq!(
            Target::parse("localhost:9000/", &plain).unwrap().authority,
            "localhost:9000"
        );
        for bad in ["127.0.0.1", "http://", "http://h:1/x", "ftp://h:1"] {
            assert!(Target::parse(bad, &plain).is_err(), "{bad}");
        }
    }

    #[test]
    fn https_or_any_tls_flag_speaks_tls_and_needs_the_ca() {
        assert_eq!(
            Target::parse("https://127.0.0.1:8081", &TlsFlags::default()).unwrap_err(),
            "--target https://127.0.0.1:8081: TLS needs --tls-ca FILE: the CA certificate(s) \
             that signed the server's certificate (no system roots are trusted)"
        );
        let pki = Pki::new();
        let t = Target::parse("https://localhost:8081", &pki.flags(None)).unwrap();
        assert_eq!(t.uri.scheme_str(), Some("https"));
        assert_eq!(t.tls.unwrap().server_name(), "localhost");
        let t = Target::parse("127.0.0.1:8081", &pki.flags(Some("client"))).unwrap();
        assert_eq!(t.uri.scheme_str(), Some("https"));
        assert_eq!(t.tls.unwrap().server_name(), "127.0.0.1");
        // A file error names the target, the flag and the file.
        let gone = TlsFlags {
            ca: Some(pki.path("gone.pem")),
            ..TlsFlags::default()
        };
        assert_eq!(
            Target::parse("https://127.0.0.1:1", &gone).unwrap_err(),
            format!(
                "--target https://127.0.0.1:1: --tls-ca {}: no such file",
                pki.path("gone.pem").display()
            )
        );
    }

    #[tokio::test]
    async fn calls_go_through_over_tls_and_mtls() {
        let pki = Pki::new();
        for (client, client_ca) in [(None, false), (Some("client"), true)] {
            let server =
                test_server::serve(pki.acceptor(&[ALPN_H2], client_ca), Duration::ZERO, None).await;
            let target =
                Target::parse(&format!("https://{}", server.addr), &pki.flags(client)).unwrap();
            let (mut send, driver) = connect(&target, 4).await.unwrap();
            tokio::spawn(driver);
            let request = RateLimitRequest {
                domain: "edge".into(),
                ..Default::default()
            };
            for _ in 0..3 {
                let answer = call(&mut send, &target, frame(&request)).await.unwrap();
                assert_eq!(answer.overall_code, 1, "OK");
            }
            let expected = match client {
                Some(_) => vec!["DNSName(bench.client)".to_owned()],
                None => Vec::new(),
            };
            assert_eq!(
                server.clients(),
                vec![expected],
                "one connection, the client's names"
            );
        }
    }

    #[tokio::test]
    async fn a_server_that_wants_a_client_certificate_fails_the_calls_of_a_client_without() {
        let pki = Pki::new();
        let server = test_server::serve(pki.acceptor(&[ALPN_H2], true), Duration::ZERO, None).await;
        let target = Target::parse(&format!("https://{}", server.addr), &pki.flags(None)).unwrap();
        // TLS 1.3: the client finishes its side before the server refuses.
        let failed = match connect(&target, 1).await {
            Err(e) => e,
            Ok((mut send, driver)) => {
                tokio::spawn(driver);
                let answer = call(&mut send, &target, frame(&RateLimitRequest::default())).await;
                answer.unwrap_err().error
            }
        };
        assert!(
            failed.contains("transport") || failed.contains("TLS"),
            "{failed}"
        );
        assert!(server.clients().is_empty(), "no connection got through");
    }

    #[test]
    fn frames_round_trip_and_bad_frames_are_named() {
        let request = RateLimitRequest {
            domain: "edge".into(),
            hits_addend: 3,
            ..Default::default()
        };
        let framed = frame(&request);
        assert_eq!(framed[0], 0);
        assert_eq!(
            u32::from_be_bytes([framed[1], framed[2], framed[3], framed[4]]) as usize,
            framed.len() - 5
        );
        assert_eq!(RateLimitRequest::decode(&framed[5..]).unwrap(), request);

        let response = RateLimitResponse {
            overall_code: 2,
            ..Default::default()
        };
        let mut body = vec![0, 0, 0, 0, 0];
        response.encode(&mut body).unwrap();
        let len = (body.len() - 5) as u32;
        body[1..5].copy_from_slice(&len.to_be_bytes());
        assert_eq!(decode(&body).unwrap(), response);
        assert_eq!(decode(&[0, 0]).unwrap_err(), "Internal (short frame)");
        assert_eq!(
            decode(&[1, 0, 0, 0, 0]).unwrap_err(),
            "Internal (compressed answer)"
        );
        assert_eq!(
            decode(&[0, 0, 0, 0, 9, 1]).unwrap_err(),
            "Internal (truncated frame)"
        );
    }

    #[test]
    fn grpc_status_names_the_code() {
        let mut headers = HeaderMap::new();
        assert_eq!(grpc_status(&headers), None);
        headers.insert("grpc-status", HeaderValue::from_static("0"));
        assert_eq!(grpc_status(&headers), None);
        headers.insert("grpc-status", HeaderValue::from_static("3"));
        assert_eq!(grpc_status(&headers).unwrap(), "InvalidArgument");
        headers.insert("grpc-status", HeaderValue::from_static("x"));
        assert_eq!(grpc_status(&headers).unwrap(), "Internal (bad grpc-status)");
    }
}
