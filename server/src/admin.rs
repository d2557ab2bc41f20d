//! The admin listener: an operator reads a descriptor's counters and resets
//! them (to unblock a customer at 3 a.m.). Off the request path, on its own
//! listener, bound to loopback by default (`admin_addr`), optionally behind a
//! bearer token (`admin_token`). `floodgate admin get|reset` calls it
//! ([`post`]), over TLS when given `--tls-ca` (and, for mTLS, `--tls-cert`
//! and `--tls-key`).
//!
//! Both endpoints take the request body `/json` takes (a proto3-JSON
//! `RateLimitRequest`: a domain and its descriptors):
//!
//! - `POST /counters/get`: the decision as if each descriptor asked for zero
//!   hits: limit, hits remaining, time to reset. Nothing is counted.
//! - `POST /counters/reset`: deletes the counters every limit of those
//!   descriptors uses now (in Redis, in the fallback store and in the local
//!   over-limit cache); answers `{"reset": <counters that existed>}`.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::grpc::RateLimiter;
use crate::http::JsonCodec;
use crate::store::redis::Secret;
use crate::tls::client::ClientTls;

/// What the admin handlers share.
#[derive(Clone, Debug)]
pub struct AdminState {
    /// The decision path (its limiter holds the store).
    pub service: RateLimiter,
    /// JSON mapping.
    pub codec: Arc<JsonCodec>,
    /// The bearer token calls must carry, if any.
    pub token: Option<Secret>,
}

/// The admin routes.
pub fn router(state: AdminState) -> Router {
    Router::new()
        .route("/counters/get", routing::post(get))
        .route("/counters/reset", routing::post(reset))
        .route_layer(middleware::from_fn(require_json))
        .route_layer(middleware::from_fn_with_state(state.clone(), authorize))
        .with_state(state)
}

/// Refuses bodies that are not `application/json` (415): a browser sends a
/// cross-origin form or `text/plain` POST without a CORS preflight, so
/// without this a web page open on the server's host could reset counters
/// on a loopback admin listener that has no token.
async fn require_json(request: Request, next: Next) -> Response {
    if !crate::http::is_json(request.headers().get(header::CONTENT_TYPE)) {
        return (
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "admin calls take Content-Type: application/json\n",
        )
            .into_response();
    }
    next.run(request).await
}

/// Refuses calls without the configured bearer token.
async fn authorize(State(state): State<AdminState>, request: Request, next: Next) -> Response {
    if let Some(token) = &state.token {
        let given = request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                // The scheme is case-insensitive.
                let (scheme, token) = v.split_once(' ')?;
                scheme
                    .eq_ignore_ascii_case("bearer")
                    .then_some(token.trim())
            });
        if !given.is_some_and(|g| same(g.as_bytes(), token.expose().as_bytes())) {
            return (
                StatusCode::UNAUTHORIZED,
                [(header::WWW_AUTHENTICATE, "Bearer")],
                "admin calls need the admin token: Authorization: Bearer <token>\n",
            )
                .into_response();
        }
    }
    next.run(request).await
}

/// Compares without stopping at the first difference.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn bad_json(e: String) -> Response {
    (
        StatusCode::BAD_REQUEST,
        format!("invalid RateLimitRequest JSON: {e}\n"),
    )
        .into_response()
}

async fn get(State(state): State<AdminState>, body: Bytes) -> Response {
    let request = match state.codec.request(&body) {
        Ok(request) => request,
        Err(e) => return bad_json(e),
    };
    match state.service.peek(&request).await {
        Ok(response) => match state.codec.response(&response) {
            Ok(body) => ([(header::CONTENT_TYPE, "application/json")], body).into_response(),
            Err(e) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("cannot encode response: {e}\n"),
            )
                .into_response(),
        },
        Err(e) => (e.http_status(), format!("{}\n", e.public_message())).into_response(),
    }
}

async fn reset(State(state): State<AdminState>, body: Bytes) -> Response {
    let request = match state.codec.request(&body) {
        Ok(request) => request,
        Err(e) => return bad_json(e),
    };
    match state.service.reset(&request).await {
        Ok(n) => (
            [(header::CONTENT_TYPE, "application/json")],
            format!("{{\"reset\":{n}}}\n"),
        )
            .into_response(),
        Err(e) => (e.http_status(), format!("{}\n", e.public_message())).into_response(),
    }
}

/// One HTTP/1.1 POST of `body` to `path` on the admin listener at `addr`
/// (what `floodgate admin` sends), over TLS when `tls` is given (ALPN
/// `http/1.1`; see [`crate::tls::client`]): (status, body). HTTP is hyper's:
/// this only connects, with a 5 s limit for the connection and the TLS
/// handshake, and bounds the exchange to 30 s.
pub async fn post(
    addr: &str,
    path: &str,
    token: Option<&str>,
    body: &str,
    tls: Option<&ClientTls>,
) -> Result<(u16, String), String> {
    let connect = async {
        let tcp = TcpStream::connect(addr)
            .await
            .map_err(|e| format!("cannot reach {addr}: {e}"))?;
        match tls {
            None => Ok(Stream::Plain(tcp)),
            Some(tls) => tls
                .connect(tcp)
                .await
                .map(|s| Stream::Tls(Box::new(s)))
                .map_err(|e| format!("{addr}: TLS handshake (as {}): {e}", tls.server_name())),
        }
    };
    let stream = tokio::time::timeout(Duration::from_secs(5), connect)
        .await
        .map_err(|_| format!("cannot reach {addr}: no answer within 5 s"))??;
    let mut request = http::Request::post(path)
        .header(header::HOST, addr)
        .header(header::CONTENT_TYPE, "application/json");
    if let Some(token) = token {
        request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
    }
    let request = request
        .body(body.to_owned())
        .map_err(|e| format!("{addr}: {e}"))?;
    let answer = async move {
        match stream {
            Stream::Plain(tcp) => exchange(tcp, request).await,
            Stream::Tls(tls) => exchange(*tls, request).await,
        }
    };
    tokio::time::timeout(Duration::from_secs(30), answer)
        .await
        .map_err(|_| format!("{addr}: no answer within 30 s"))?
        .map_err(|e| format!("{addr}: {e}"))
}

/// The connection [`post`] sends on.
enum Stream {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

/// Sends `request` on `stream` and reads the whole answer.
async fn exchange<T>(
    stream: T,
    request: http::Request<String>,
) -> Result<(u16, String), axum::BoxError>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    let call = async move {
        let response = sender.send_request(request).await?;
        let status = response.status().as_u16();
        // An answer is one RateLimitResponse: far below 16 MiB.
        let body = axum::body::to_bytes(Body::new(response.into_body()), 16 << 20).await?;
        Ok::<_, axum::BoxError>((status, String::from_utf8_lossy(&body).into_owned()))
    };
    // The connection ends once the call is done (its sender dropped).
    let (answer, _) = tokio::join!(call, connection);
    answer
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::{post, same};
    use crate::tls::client::testing::{Pki, peer_names};
    use crate::tls::client::{ALPN_H2, ALPN_HTTP1, ClientTls};

    #[tokio::test]
    async fn chunked_answers_are_joined() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let server = tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.unwrap();
            let mut seen = Vec::new();
            let mut buf = [0; 1024];
            while !String::from_utf8_lossy(&seen).ends_with("{}") {
                let n = stream.read(&mut buf).await.unwrap();
                seen.extend_from_slice(&buf[..n]);
            }
            let answer = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n1;x=y\r\n!\r\n0\r\n\r\n";
            stream.write_all(answer.as_bytes()).await.unwrap();
            String::from_utf8(seen).unwrap()
        });
        let answer = post(&addr, "/counters/get", Some("t0ken"), "{}", None).await;
        assert_eq!(answer, Ok((200, "hello!".to_owned())));
        let request = server.await.unwrap().to_ascii_lowercase();
        assert!(
            request.starts_with("post /counters/get http/1.1\r\n"),
            "{request}"
        );
        for header in [
            "host: 127.0.0.1:",
            "content-type: application/json",
            "content-length: 2",
            "authorization: bearer t0ken",
        ] {
            assert!(request.contains(header), "{header} in {request}");
        }
    }

    #[tokio::test]
    async fn an_answer_that_is_not_http_is_an_error() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.unwrap();
            let _ = stream.write_all(b"+OK\r\n").await;
        });
        let e = post(&addr, "/counters/get", None, "{}", None)
            .await
            .unwrap_err();
        assert!(e.starts_with(&format!("{addr}: ")), "{e}");
    }

    #[tokio::test]
    async fn posts_go_over_mtls_as_http1() {
        let pki = Pki::new();
        let acceptor = pki.acceptor(&[ALPN_H2, ALPN_HTTP1], true);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let server = tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.unwrap();
            let mut stream = acceptor.accept(tcp).await.unwrap();
            let alpn = stream.get_ref().1.alpn_protocol().map(<[u8]>::to_vec);
            let names = peer_names(&stream);
            let mut seen = Vec::new();
            let mut buf = [0; 1024];
            while !String::from_utf8_lossy(&seen).ends_with("{}") {
                let n = stream.read(&mut buf).await.unwrap();
                seen.extend_from_slice(&buf[..n]);
            }
            let answer = "HTTP/1.1 200 OK\r\nContent-Length: 12\r\n\r\n{\"reset\":1}\n";
            stream.write_all(answer.as_bytes()).await.unwrap();
            stream.shutdown().await.unwrap();
            (alpn, names, String::from_utf8(seen).unwrap())
        });
        let tls = ClientTls::new(&pki.flags(Some("client")), &[ALPN_HTTP1], "127.0.0.1").unwrap();
        let answer = post(&addr, "/counters/reset", None, "{}", Some(&tls)).await;
        assert_eq!(answer, Ok((200, "{\"reset\":1}\n".to_owned())));
        let (alpn, names, request) = server.await.unwrap();
        assert_eq!(alpn.as_deref(), Some(ALPN_HTTP1), "HTTP/1.1 chosen by ALPN");
        assert_eq!(names, vec!["DNSName(bench.client)"]);
        assert!(
            request.starts_with("POST /counters/reset HTTP/1.1\r\n"),
            "{request}"
        );
    }

    #[tokio::test]
    async fn a_server_the_ca_did_not_sign_is_refused_with_the_reason() {
        let pki = Pki::new();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let acceptor = pki.acceptor(&[ALPN_HTTP1], false);
        tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.unwrap();
            let _ = acceptor.accept(tcp).await;
        });
        let other = crate::tls::client::TlsFlags {
            ca: Some(pki.path("other-ca.pem")),
            ..pki.flags(None)
        };
        let tls = ClientTls::new(&other, &[ALPN_HTTP1], "127.0.0.1").unwrap();
        let e = post(&addr, "/counters/get", None, "{}", Some(&tls))
            .await
            .unwrap_err();
        assert!(
            e.starts_with(&format!(
                "{addr}: TLS handshake (as 127.0.0.1): invalid peer certificate: UnknownIssuer"
            )),
            "{e}"
        );
    }

    #[test]
    fn tokens_compare_whole() {
        assert!(same(b"secret", b"secret"));
        assert!(!same(b"secret", b"secreT"));
        assert!(!same(b"secret", b"secret2"));
        assert!(!same(b"", b"x"));
    }
}
