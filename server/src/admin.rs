//! The admin listener: an operator reads a descriptor's counters and resets
//! them (to unblock a customer at 3 a.m.). Off the request path, on its own
//! listener, bound to loopback by default (`admin_addr`), optionally behind a
//! bearer token (`admin_token`). `floodgate admin get|reset` calls it.
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

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing;

use crate::grpc::RateLimiter;
use crate::http::JsonCodec;
use crate::store::redis::Secret;

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
        .route_layer(middleware::from_fn_with_state(state.clone(), authorize))
        .with_state(state)
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
/// (what `floodgate admin` sends): (status, body).
pub async fn post(
    addr: &str,
    path: &str,
    token: Option<&str>,
    body: &str,
) -> Result<(u16, String), String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        tokio::net::TcpStream::connect(addr),
    )
    .await
    .map_err(|_| format!("cannot reach {addr}: no answer within 5 s"))?
    .map_err(|e| format!("cannot reach {addr}: {e}"))?;
    let auth = token.map_or_else(String::new, |t| format!("Authorization: Bearer {t}\r\n"));
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n{auth}\r\n{body}",
        body.len()
    );
    let mut reply = Vec::new();
    let exchange = async {
        stream.write_all(request.as_bytes()).await?;
        stream.read_to_end(&mut reply).await
    };
    tokio::time::timeout(std::time::Duration::from_secs(30), exchange)
        .await
        .map_err(|_| format!("{addr}: no answer within 30 s"))?
        .map_err(|e| format!("{addr}: {e}"))?;
    let split = reply
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| format!("{addr}: not an HTTP answer"))?;
    let (head, body) = (
        String::from_utf8_lossy(&reply[..split]),
        &reply[split + 4..],
    );
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("{addr}: not an HTTP answer"))?;
    let chunked = head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked");
    let body = if chunked {
        dechunk(body)
    } else {
        body.to_vec()
    };
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

/// The body of a chunked HTTP/1.1 answer (stops at anything malformed).
fn dechunk(mut body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(line_end) = body.windows(2).position(|w| w == b"\r\n") {
        let size = String::from_utf8_lossy(&body[..line_end]);
        // A chunk size may carry extensions: `5;name=value`.
        let size = size.split(';').next().unwrap_or_default().trim();
        let Ok(size) = usize::from_str_radix(size, 16) else {
            break;
        };
        let rest = &body[line_end + 2..];
        let Some(chunk) = rest.get(..size).filter(|_| size > 0) else {
            break;
        };
        out.extend_from_slice(chunk);
        body = rest.get(size..).unwrap_or_default();
        body = body.strip_prefix(b"\r\n").unwrap_or(body);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::{dechunk, same};

    #[test]
    fn chunked_bodies_are_joined() {
        assert_eq!(dechunk(b"5\r\nhello\r\n1;x=y\r\n!\r\n0\r\n\r\n"), b"hello!");
        // A chunk cut short, or a multibyte character split across chunks.
        assert_eq!(dechunk(b"9\r\nhel"), b"");
        assert_eq!(dechunk("1\r\n\u{e9}".as_bytes()), &"\u{e9}".as_bytes()[..1]);
    }

    #[test]
    fn tokens_compare_whole() {
        assert!(same(b"secret", b"secret"));
        assert!(!same(b"secret", b"secreT"));
        assert!(!same(b"secret", b"secret2"));
        assert!(!same(b"", b"x"));
    }
}
