//! What any caller can send to the service's two doors, gRPC
//! `ShouldRateLimit` and HTTP `POST /json`, and what it gets back: an
//! undecodable message is `INVALID_ARGUMENT` (HTTP 400), `/json` takes only
//! `application/json` (415 otherwise, so a browser's cross-origin
//! `text/plain` POST decides nothing), and every refusal is counted in
//! `floodgate_calls_total`.

#![allow(clippy::unwrap_used)] // Tests: a failed unwrap is a failed test.

use floodgate_e2e::{
    TestServer, config_with_rules, http_get, http_post, request, rules_dir, user_rules,
};
use floodgate_proto::RateLimitResponse;
use floodgate_proto::rate_limit_response::Code;
use prost::Message;
use prost::bytes::BufMut;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::transport::Channel;

// ---------------------------------------------------------------------------
// A gRPC client that sends any bytes as the request message

/// Sends raw bytes as the (framed) message; decodes the answer as a
/// `RateLimitResponse`.
#[derive(Debug, Clone, Copy, Default)]
struct RawCodec;

#[derive(Debug)]
struct RawEncoder;

#[derive(Debug)]
struct ResponseDecoder;

impl Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = RateLimitResponse;
    type Encoder = RawEncoder;
    type Decoder = ResponseDecoder;

    fn encoder(&mut self) -> RawEncoder {
        RawEncoder
    }

    fn decoder(&mut self) -> ResponseDecoder {
        ResponseDecoder
    }
}

impl Encoder for RawEncoder {
    type Item = Vec<u8>;
    type Error = tonic::Status;

    fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), tonic::Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for ResponseDecoder {
    type Item = RateLimitResponse;
    type Error = tonic::Status;

    fn decode(
        &mut self,
        src: &mut DecodeBuf<'_>,
    ) -> Result<Option<RateLimitResponse>, tonic::Status> {
        // DATA_LOSS, not INTERNAL: this is the test's own verdict on the
        // server's answer, kept apart from any status the server sends.
        RateLimitResponse::decode(src)
            .map(Some)
            .map_err(|e| tonic::Status::data_loss(format!("the answer does not decode: {e}")))
    }
}

/// One `ShouldRateLimit` call whose message is `bytes`.
async fn raw_call(channel: Channel, bytes: Vec<u8>) -> Result<RateLimitResponse, tonic::Status> {
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready()
        .await
        .map_err(|e| tonic::Status::unavailable(format!("not ready: {e}")))?;
    let path = http::uri::PathAndQuery::from_static(
        "/envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit",
    );
    grpc.unary(tonic::Request::new(bytes), path, RawCodec)
        .await
        .map(tonic::Response::into_inner)
}

async fn channel(addr: std::net::SocketAddr) -> Channel {
    Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap()
}

/// The value of one series in a Prometheus text page.
fn value(page: &str, series: &str) -> Option<u64> {
    page.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

async fn invalid_calls(http: std::net::SocketAddr) -> Option<u64> {
    let (status, page) = http_get(&format!("http://{http}/metrics")).await;
    assert_eq!(status, 200);
    value(&page, "floodgate_calls_total{code=\"invalid_argument\"}")
}

const JSON: &str = "application/json";

fn alice() -> &'static [u8] {
    br#"{"domain":"edge","descriptors":[{"entries":[{"key":"user","value":"alice"}]}]}"#
}

// ---------------------------------------------------------------------------
// Item 10: undecodable requests are the caller's error, and are counted

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_undecodable_grpc_message_is_invalid_argument_and_counted() {
    let rules = rules_dir(&[("edge.yaml", &user_rules(5))]);
    let server = TestServer::start(config_with_rules(rules.path())).await;
    // Field 1 (domain, a string) whose bytes are not UTF-8.
    let not_utf8 = vec![0x0a, 0x02, 0xff, 0xfe];
    // A length prefix running past the end of the message.
    let truncated = vec![0x0a, 0x7f, b'e'];
    for bytes in [not_utf8, truncated] {
        let status = raw_call(channel(server.grpc_addr).await, bytes.clone())
            .await
            .unwrap_err();
        assert_eq!(
            status.code(),
            tonic::Code::InvalidArgument,
            "{bytes:x?}: {status:?}"
        );
        assert!(
            status
                .message()
                .starts_with("cannot decode RateLimitRequest: "),
            "{status:?}"
        );
    }
    assert_eq!(invalid_calls(server.http_addr).await, Some(2));
    // A good message on the same path is still decided.
    let mut good = Vec::new();
    request("edge", &[("user", "alice")])
        .encode(&mut good)
        .unwrap();
    let answer = raw_call(channel(server.grpc_addr).await, good)
        .await
        .unwrap();
    assert_eq!(answer.overall_code(), Code::Ok);
    assert_eq!(answer.statuses[0].limit_remaining, 4);
    server.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unparsable_json_is_400_and_counted() {
    let rules = rules_dir(&[("edge.yaml", &user_rules(5))]);
    let server = TestServer::start(config_with_rules(rules.path())).await;
    let url = format!("http://{}/json", server.http_addr);
    for body in [
        &b"{\"domain\": "[..],
        b"[1, 2]",
        br#"{"domain":"edge","descriptors":"not a list"}"#,
        br#"{"domain":"edge"} trailing"#,
        b"\xff\xfe",
    ] {
        let (status, answer) = http_post(&url, Some(JSON), body).await;
        assert_eq!(status, 400, "{:?}: {answer}", String::from_utf8_lossy(body));
        assert!(
            answer.starts_with("invalid RateLimitRequest JSON: "),
            "{answer}"
        );
    }
    assert_eq!(invalid_calls(server.http_addr).await, Some(5));
    server.stop().await.unwrap();
}

// ---------------------------------------------------------------------------
// Item 11: /json decides only application/json

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_decides_only_application_json_and_counts_the_rest_as_invalid() {
    let rules = rules_dir(&[("edge.yaml", &user_rules(5))]);
    let server = TestServer::start(config_with_rules(rules.path())).await;
    let url = format!("http://{}/json", server.http_addr);
    // What a browser may send cross-origin without a preflight, and no
    // content type at all: refused, and alice's counter is not touched.
    for content_type in [
        Some("text/plain"),
        Some("text/plain;charset=UTF-8"),
        Some("application/x-www-form-urlencoded"),
        Some("multipart/form-data; boundary=x"),
        Some("application/jsonp"),
        Some("json"),
        None,
    ] {
        let (status, answer) = http_post(&url, content_type, alice()).await;
        assert_eq!(status, 415, "{content_type:?}: {answer}");
        assert!(answer.contains("application/json"), "{answer}");
    }
    assert_eq!(invalid_calls(server.http_addr).await, Some(7));
    // application/json, in any case, with parameters: decided.
    let mut left = Vec::new();
    for content_type in [
        JSON,
        "application/json; charset=utf-8",
        "Application/JSON",
        " application/json ;charset=UTF-8",
    ] {
        let (status, answer) = http_post(&url, Some(content_type), alice()).await;
        assert_eq!(status, 200, "{content_type:?}: {answer}");
        let answer: serde_json::Value = serde_json::from_str(&answer).unwrap();
        left.push(answer["statuses"][0]["limitRemaining"].as_u64());
    }
    assert_eq!(
        left,
        [Some(4), Some(3), Some(2), Some(1)],
        "only the application/json calls counted"
    );
    assert_eq!(invalid_calls(server.http_addr).await, Some(7));
    server.stop().await.unwrap();
}
