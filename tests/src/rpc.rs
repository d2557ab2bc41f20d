//! Calls as a client makes them: RLS requests and descriptors, and minimal
//! HTTP/1.1 GET and POST over loopback (one connection per call), and what
//! a caller reads back: the degraded marker, `/metrics` values.

use std::net::SocketAddr;
use std::str::FromStr;

use floodgate_proto::rate_limit_descriptor::Entry;
use floodgate_proto::{RateLimitDescriptor, RateLimitRequest, RateLimitResponse};

/// A minimal HTTP/1.1 GET over loopback: (status, body).
pub async fn http_get(url: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let rest = url.strip_prefix("http://").expect("HTTP GET");
    let (host, path) = rest.split_once('/').expect("HTTP GET");
    let mut stream = tokio::net::TcpStream::connect(host)
        .await
        .expect("HTTP GET");
    stream
        .write_all(
            format!("GET /{path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .expect("HTTP GET");
    let mut text = String::new();
    stream.read_to_string(&mut text).await.expect("HTTP GET");
    let code = text
        .get(9..12)
        .and_then(|c| c.parse().ok())
        .expect("an HTTP status line");
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (code, body)
}

/// A descriptor of `(key, value)` entries.
pub fn descriptor(entries: &[(&str, &str)]) -> RateLimitDescriptor {
    RateLimitDescriptor {
        entries: entries
            .iter()
            .map(|(key, value)| Entry {
                key: (*key).into(),
                value: (*value).into(),
            })
            .collect(),
        ..RateLimitDescriptor::default()
    }
}

/// A request for `domain` with one descriptor of `(key, value)` entries.
pub fn request(domain: &str, entries: &[(&str, &str)]) -> RateLimitRequest {
    RateLimitRequest {
        domain: domain.into(),
        descriptors: vec![descriptor(entries)],
        hits_addend: 0,
    }
}

/// A minimal HTTP/1.1 POST of `body` over loopback, with `content_type` as
/// the `Content-Type` header (none if `None`): (status, body, lossily
/// decoded). One connection per call, closed after the answer.
pub async fn http_post(url: &str, content_type: Option<&str>, body: &[u8]) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let rest = url.strip_prefix("http://").expect("HTTP POST");
    let (host, path) = rest.split_once('/').expect("HTTP POST");
    let mut stream = tokio::net::TcpStream::connect(host)
        .await
        .expect("HTTP POST");
    let content_type = content_type
        .map(|t| format!("Content-Type: {t}\r\n"))
        .unwrap_or_default();
    let head = format!(
        "POST /{path} HTTP/1.1\r\nHost: {host}\r\n{content_type}Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.expect("HTTP POST");
    stream.write_all(body).await.expect("HTTP POST");
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await.expect("HTTP POST");
    let text = String::from_utf8_lossy(&answer);
    let code = text
        .get(9..12)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP answer: {text:?}"));
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (code, body)
}

/// Floodgate marked the answer as made without Redis (the
/// `x-floodgate-degraded` header).
pub fn degraded(resp: &RateLimitResponse) -> bool {
    resp.response_headers_to_add
        .iter()
        .any(|h| h.key == "x-floodgate-degraded")
}

/// The value of `series` (its name and labels, exactly as printed) on a
/// Prometheus text page; `None` if it is not there.
pub fn metric_value<T: FromStr>(page: &str, series: &str) -> Option<T> {
    page.lines().find_map(|l| {
        l.strip_prefix(series)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}

/// The value of `series` on the `/metrics` page served at `http_addr` (see
/// [`metric_value`]).
pub async fn metric<T: FromStr>(http_addr: SocketAddr, series: &str) -> Option<T> {
    let (_, page) = http_get(&format!("http://{http_addr}/metrics")).await;
    metric_value(&page, series)
}
