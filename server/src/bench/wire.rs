//! The load generator's client: gRPC unary `ShouldRateLimit` written
//! straight on `h2` (HTTP/2 with prior knowledge, as Envoy and h2load speak
//! it), so that the generator costs less CPU per call than the servers it
//! measures.
//!
//! A tonic `Channel` sends every call through a tower buffer (a queue and a
//! worker task) and a body-forwarding task; on a 2-core machine shared with
//! the server that made the generator the bottleneck (about half of what
//! h2load reaches against the same constant-OK server). Here a call is one
//! HEADERS and one DATA frame out, the answer read in place: no task, no
//! queue, no per-call allocation beyond the request body and headers.

use bytes::{BufMut, Bytes, BytesMut};
use floodgate_proto::{RateLimitRequest, RateLimitResponse};
use h2::client::SendRequest;
use http::{HeaderMap, HeaderValue, Method, Request, StatusCode, Uri};
use prost::Message;
use tokio::net::TcpStream;

/// The RPC's path.
const PATH: &str = "/envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit";

/// A server to call: where to connect and the URI every request carries.
#[derive(Clone, Debug)]
pub(super) struct Target {
    /// `host:port` to connect to.
    authority: String,
    /// `http://host:port/envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit`.
    uri: Uri,
}

impl Target {
    /// Parses `http://host:port` or `host:port`. TLS is not spoken: the
    /// generator measures the service, on loopback.
    pub(super) fn parse(text: &str) -> Result<Target, String> {
        let bare = match text.split_once("://") {
            Some(("http", rest)) => rest,
            Some((scheme, _)) => {
                return Err(format!(
                    "--target {text}: only http:// (HTTP/2 without TLS) is supported, not {scheme}://"
                ));
            }
            None => text,
        };
        let authority = bare.trim_end_matches('/');
        let uri: Uri = format!("http://{authority}{PATH}")
            .parse()
            .map_err(|e| format!("--target {text}: {e}"))?;
        match uri.port_u16() {
            Some(_) if !authority.contains('/') => Ok(Target {
                authority: authority.to_owned(),
                uri,
            }),
            _ => Err(format!(
                "--target {text}: expected http://host:port, e.g. http://127.0.0.1:8081"
            )),
        }
    }
}

/// Streams opened on a new connection before the server's SETTINGS say
/// how many it allows (RFC 9113 asks servers to allow at least 100). Past
/// its limit, h2 queues a call until a stream closes: a caller waits for
/// its turn instead of being refused.
const STREAMS_BEFORE_SETTINGS: usize = 100;

/// Opens one HTTP/2 connection for `streams` concurrent calls. The returned
/// future drives it and must be polled (spawned) for calls to make
/// progress; it ends when every handle is dropped or the connection fails.
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
    h2::client::Builder::new()
        .initial_max_send_streams(STREAMS_BEFORE_SETTINGS)
        // h2 closes the connection (GOAWAY ENHANCE_YOUR_CALM, its defence
        // against floods of small DATA frames) when the small frames it
        // holds unread exceed this budget, 32 KiB by default: about 150
        // answers arriving at once. Room for four frames per stream.
        .data_frame_budget((streams * 4 * 256).max(32 * 1024))
        .handshake(tcp)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_parse_and_reject_what_the_generator_cannot_speak() {
        let t = Target::parse("http://127.0.0.1:8081").unwrap();
        assert_eq!(t.authority, "127.0.0.1:8081");
        assert_eq!(
            t.uri.to_string(),
            "http://127.0.0.1:8081/envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit"
        );
        assert_eq!(
            Target::parse("localhost:9000/").unwrap().authority,
            "localhost:9000"
        );
        for bad in [
            "https://127.0.0.1:8081",
            "127.0.0.1",
            "http://",
            "http://h:1/x",
        ] {
            assert!(Target::parse(bad).is_err(), "{bad}");
        }
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
