//! Listeners and connections: the first step of the request path, before
//! [`crate::grpc`] and [`crate::http`] see a request.
//!
//! Every listener (gRPC, HTTP, admin) is bound by [`bind`] with its own
//! accept queue (`listen_backlog`) and served by [`serve`], which owns one
//! task per connection and holds each connection to [`ListenerLimits`]:
//!
//! - at most `max_connections` at once; one more first closes a connection
//!   with no request in flight (the one idle longest), and is refused
//!   (closed at once) only when every connection is busy;
//! - HTTP/2: `max_concurrent_streams` streams per connection (advertised as
//!   `SETTINGS_MAX_CONCURRENT_STREAMS`) and `max_header_list_bytes` of
//!   headers (`SETTINGS_MAX_HEADER_LIST_SIZE`; for HTTP/1.1, the head);
//! - on a listener with TLS, a new connection first finishes its handshake
//!   ([`crate::tls::server`]) within `header_read_timeout`;
//! - a new connection must start its first request, and an HTTP/1.1
//!   request finish its headers, within `header_read_timeout`;
//! - a request must be read and answered within `request_timeout` (a stalled
//!   body included): past it, gRPC answers `DEADLINE_EXCEEDED` and HTTP 408;
//! - a connection with no request in flight for `idle_timeout` is closed
//!   (HTTP/2: `GOAWAY` first). A request is in flight until its response
//!   body has been sent, so a long gRPC stream (RLQS) keeps its connection
//!   busy: neither closed as idle nor evicted.
//!
//! Each limit that bites is counted ([`TransportMetrics`], on `/metrics`).
//! When draining starts, [`serve`] closes its listening socket, asks every
//! connection to finish (HTTP/2 `GOAWAY`) and returns once they are closed;
//! [`crate::run`] bounds that wait with `shutdown_grace`.

use std::collections::HashMap;
use std::convert::Infallible;
use std::fmt::Write as _;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::response::IntoResponse;
use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::{Notify, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::metrics::Family;
use crate::tls::server::ServerTls;

/// Limits every listener holds its connections to (see the module docs).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListenerLimits {
    /// Connections one listener holds at once.
    pub max_connections: usize,
    /// HTTP/2 streams one connection may have open at once.
    pub max_concurrent_streams: u32,
    /// Largest request header block, in bytes.
    pub max_header_list_bytes: u32,
    /// Deadline of a new connection's first request, and of an HTTP/1.1
    /// request's headers.
    pub header_read_timeout: Duration,
    /// Deadline of a request, from its headers to its answer.
    pub request_timeout: Duration,
    /// A connection with no request in flight this long is closed.
    pub idle_timeout: Duration,
    /// The accept queue's length (the kernel caps it at `somaxconn`).
    pub listen_backlog: u32,
}

impl Default for ListenerLimits {
    fn default() -> Self {
        ListenerLimits {
            max_connections: 4_096,
            max_concurrent_streams: 1_024,
            max_header_list_bytes: 16_384,
            header_read_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(2),
            idle_timeout: Duration::from_secs(60),
            listen_backlog: 1_024,
        }
    }
}

/// Binds `addr` with an accept queue of `backlog` connections (the kernel
/// caps it at `net.core.somaxconn`); `SO_REUSEADDR` as tokio's own bind.
pub fn bind(addr: SocketAddr, backlog: u32) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    #[cfg(unix)]
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(backlog)
}

/// What a listener speaks, and so how a timed-out request is answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    /// gRPC: HTTP/2 only; a timed-out call gets `DEADLINE_EXCEEDED`.
    Grpc,
    /// HTTP/1.1 and HTTP/2; a timed-out request gets 408.
    Http,
}

/// Why a request got no answer from its handler.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// The request was not read and answered within `request_timeout`.
    #[error("request not read and answered within {0:?} (request_timeout)")]
    RequestTimeout(Duration),
}

/// One listener's counters.
#[derive(Debug, Default)]
pub struct ListenerCounters {
    open: AtomicU64,
    rejected: AtomicU64,
    evicted: AtomicU64,
    header_read: AtomicU64,
    idle: AtomicU64,
    request: AtomicU64,
}

/// A family's series: labels beside `listener`, and the counter.
type Series = &'static [(&'static str, fn(&ListenerCounters) -> &AtomicU64)];

/// The listeners' counters, rendered on `/metrics`.
#[derive(Debug, Default)]
pub struct TransportMetrics {
    listeners: Mutex<Vec<(&'static str, Arc<ListenerCounters>)>>,
}

impl TransportMetrics {
    /// The counters of listener `name` (`grpc`, `http`, `admin`).
    pub fn listener(&self, name: &'static str) -> Arc<ListenerCounters> {
        let mut all = self.listeners.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((_, c)) = all.iter().find(|(n, _)| *n == name) {
            return c.clone();
        }
        let counters = Arc::new(ListenerCounters::default());
        all.push((name, counters.clone()));
        counters
    }

    /// Appends every series, in the Prometheus text format.
    pub fn render(&self, out: &mut String) {
        let all = self
            .listeners
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let families: [(Family, Series); 4] = [
            (
                Family::gauge(
                    "floodgate_open_connections",
                    "Connections open, by listener.",
                ),
                &[("", |c| &c.open)],
            ),
            (
                Family::counter(
                    "floodgate_connections_rejected_total",
                    "Connections closed at accept: max_connections reached and none idle.",
                ),
                &[("reason=\"max_connections\"", |c| &c.rejected)],
            ),
            (
                Family::counter(
                    "floodgate_connections_evicted_total",
                    "Idle connections closed to make room for a new one at max_connections.",
                ),
                &[("", |c| &c.evicted)],
            ),
            (
                Family::counter(
                    "floodgate_connection_timeouts_total",
                    "Connections closed, or requests answered, by a listener timeout.",
                ),
                &[
                    ("kind=\"header_read\"", |c| &c.header_read),
                    ("kind=\"idle\"", |c| &c.idle),
                    ("kind=\"request\"", |c| &c.request),
                ],
            ),
        ];
        for (family, series) in families {
            family.header(out);
            let name = family.name;
            for (listener, counters) in &all {
                for (label, field) in series {
                    let sep = if label.is_empty() { "" } else { "," };
                    let _ = writeln!(
                        out,
                        "{name}{{listener=\"{listener}\"{sep}{label}}} {}",
                        field(counters).load(Ordering::Relaxed)
                    );
                }
            }
        }
    }
}

fn add(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// One connection, as the accept loop sees it.
#[derive(Debug)]
struct Conn {
    /// Requests in flight.
    active: watch::Sender<usize>,
    /// When it last had none (for choosing whom to evict).
    idle_since: Mutex<Instant>,
    /// Told to close (at most once).
    evict: Notify,
}

impl Conn {
    fn is_idle(&self) -> bool {
        *self.active.borrow() == 0
    }

    fn idle_since(&self) -> Instant {
        *self.idle_since.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A request in flight on a connection; ends when dropped.
struct InFlight(Arc<Conn>);

impl InFlight {
    fn start(conn: &Arc<Conn>) -> InFlight {
        // The connection's idle watcher cares only about idle and busy:
        // woken when the count leaves 0 or comes back to it, not per call.
        conn.active.send_if_modified(|n| {
            *n += 1;
            *n == 1
        });
        InFlight(conn.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let idle = self.0.active.send_if_modified(|n| {
            *n = n.saturating_sub(1);
            *n == 0
        });
        if idle {
            *self.0.idle_since.lock().unwrap_or_else(|p| p.into_inner()) = Instant::now();
        }
    }
}

/// The live connections of one listener (those not being evicted).
#[derive(Debug, Default)]
struct Registry {
    next: u64,
    conns: HashMap<u64, Arc<Conn>>,
}

impl Registry {
    /// Makes room for one more under `max`: evicts the connection idle the
    /// longest if full. `false`: full, and every connection is busy.
    fn make_room(&mut self, max: usize) -> Option<bool> {
        if self.conns.len() < max {
            return Some(false);
        }
        let (id, _) = self
            .conns
            .iter()
            .filter(|(_, c)| c.is_idle())
            .min_by_key(|(_, c)| c.idle_since())?;
        let id = *id;
        if let Some(conn) = self.conns.remove(&id) {
            conn.evict.notify_one();
        }
        Some(true)
    }
}

/// One listener to serve: its name (the `listener` label), socket, routes,
/// protocol, and TLS if it has it.
pub type Served = (
    &'static str,
    TcpListener,
    Router,
    Protocol,
    Option<Arc<ServerTls>>,
);

/// Serves each listener on its own task (see [`serve`]), all under
/// `limits`; their counters are added to `metrics`.
pub fn serve_all(
    listeners: impl IntoIterator<Item = Option<Served>>,
    limits: &ListenerLimits,
    metrics: &crate::metrics::Metrics,
    drain: &watch::Receiver<bool>,
) -> JoinSet<Result<(), String>> {
    let transport = Arc::new(TransportMetrics::default());
    let rendered = transport.clone();
    metrics.add_text(Arc::new(move |out: &mut String| rendered.render(out)));
    let mut servers = JoinSet::new();
    for (name, listener, router, protocol, tls) in listeners.into_iter().flatten() {
        servers.spawn(serve(
            listener,
            (router, protocol, tls),
            limits.clone(),
            transport.listener(name),
            drain.clone(),
        ));
    }
    servers
}

/// Serves `router` on `listener` (speaking `protocol`, over TLS if `tls`)
/// under `limits` until `drain` turns true, then waits for its connections
/// to finish.
pub async fn serve(
    listener: TcpListener,
    (router, protocol, tls): (Router, Protocol, Option<Arc<ServerTls>>),
    limits: ListenerLimits,
    counters: Arc<ListenerCounters>,
    drain: watch::Receiver<bool>,
) -> Result<(), String> {
    let mut draining = drain.clone();
    let builder = Arc::new(builder(protocol, &limits));
    let limits = Arc::new(limits);
    let registry = Arc::new(Mutex::new(Registry::default()));
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            () = until_draining(&mut draining) => break,
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
            accepted = listener.accept() => {
                let tcp = match accepted {
                    Ok((tcp, _)) => tcp,
                    Err(e) => {
                        // Out of file descriptors, most likely: wait rather
                        // than spin.
                        tracing::warn!(error = %e, "cannot accept a connection");
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        continue;
                    }
                };
                let Some(conn) = admit(&registry, limits.max_connections, &counters) else {
                    continue;
                };
                let task = Connection {
                    router: router.clone(),
                    protocol,
                    tls: tls.clone(),
                    limits: limits.clone(),
                    counters: counters.clone(),
                    registry: registry.clone(),
                    drain: drain.clone(),
                };
                conns.spawn(task.run(tcp, builder.clone(), conn));
            }
        }
    }
    // Stop accepting: closing the socket makes the kernel refuse new
    // connections rather than queue them.
    drop(listener);
    while conns.join_next().await.is_some() {}
    Ok(())
}

/// Registers a new connection under `max` (evicting the connection idle
/// the longest if full); `None`, counted as rejected, when every
/// connection is busy.
fn admit(
    registry: &Mutex<Registry>,
    max: usize,
    counters: &ListenerCounters,
) -> Option<(u64, Arc<Conn>)> {
    let mut registry = registry.lock().unwrap_or_else(|p| p.into_inner());
    let Some(evicted) = registry.make_room(max) else {
        add(&counters.rejected);
        tracing::debug!("max_connections reached, every connection busy: connection refused");
        return None;
    };
    if evicted {
        add(&counters.evicted);
    }
    let conn = Arc::new(Conn {
        active: watch::Sender::new(0),
        idle_since: Mutex::new(Instant::now()),
        evict: Notify::new(),
    });
    registry.next += 1;
    let id = registry.next;
    registry.conns.insert(id, conn.clone());
    Some((id, conn))
}

/// Resolves once draining starts (or the sender is gone, which also means
/// stop).
async fn until_draining(drain: &mut watch::Receiver<bool>) {
    let _ = drain.wait_for(|d| *d).await;
}

/// The HTTP/1.1 and HTTP/2 settings of one listener.
fn builder(protocol: Protocol, limits: &ListenerLimits) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    if protocol == Protocol::Grpc {
        builder = builder.http2_only();
    }
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        // hyper's smallest buffer is 8 KiB; the head must fit in it.
        .max_buf_size((limits.max_header_list_bytes as usize).max(8_192));
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(limits.max_concurrent_streams)
        .max_header_list_size(limits.max_header_list_bytes);
    builder
}

/// What a connection's task needs.
struct Connection {
    router: Router,
    protocol: Protocol,
    tls: Option<Arc<ServerTls>>,
    limits: Arc<ListenerLimits>,
    counters: Arc<ListenerCounters>,
    registry: Arc<Mutex<Registry>>,
    drain: watch::Receiver<bool>,
}

/// Why a connection is being closed by the server.
enum Closing {
    Idle(&'static str),
    Evicted,
    Draining,
}

impl Connection {
    async fn run(
        self,
        tcp: TcpStream,
        builder: Arc<auto::Builder<TokioExecutor>>,
        conn: (u64, Arc<Conn>),
    ) {
        let (id, conn) = conn;
        let counters = self.counters.clone();
        counters.open.fetch_add(1, Ordering::Relaxed);
        if let Err(e) = tcp.set_nodelay(true) {
            // Without it, an answer written in several frames waits ~40 ms
            // for the client's delayed ACK.
            tracing::debug!(error = %e, "cannot set TCP_NODELAY");
        }
        match self.tls.clone() {
            None => self.serve(tcp, &builder, &conn).await,
            Some(tls) => {
                // The handshake is the first thing a new connection must
                // finish: it gets the first request's deadline.
                if let Some(stream) = tls.accept(tcp, self.limits.header_read_timeout).await {
                    self.serve(stream, &builder, &conn).await;
                }
            }
        }
        self.registry
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .conns
            .remove(&id);
        counters.open.fetch_sub(1, Ordering::Relaxed);
    }

    /// Serves HTTP on `io` (TCP, or TLS over it) until it ends or is closed.
    async fn serve<I>(&self, io: I, builder: &auto::Builder<TokioExecutor>, conn: &Arc<Conn>)
    where
        I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let counters = &self.counters;
        let service = ConnService {
            router: self.router.clone(),
            conn: conn.clone(),
            protocol: self.protocol,
            timeout: self.limits.request_timeout,
            counters: counters.clone(),
        };
        let served = builder.serve_connection(TokioIo::new(io), service);
        tokio::pin!(served);
        let mut active = conn.active.subscribe();
        let mut drain = self.drain.clone();
        let closing = tokio::select! {
            ended = served.as_mut() => {
                self.ended(ended);
                None
            }
            kind = idle(&mut active, &self.limits) => Some(Closing::Idle(kind)),
            () = conn.evict.notified() => Some(Closing::Evicted),
            () = until_draining(&mut drain) => Some(Closing::Draining),
        };
        if let Some(closing) = closing {
            served.as_mut().graceful_shutdown();
            match closing {
                Closing::Idle(kind) => {
                    add(if kind == "idle" {
                        &counters.idle
                    } else {
                        &counters.header_read
                    });
                    let _ = tokio::time::timeout(self.limits.header_read_timeout, served).await;
                }
                Closing::Evicted => {
                    let _ = tokio::time::timeout(self.limits.header_read_timeout, served).await;
                }
                // Calls in flight finish; `run` bounds the wait.
                Closing::Draining => self.ended(served.await),
            }
        }
    }

    /// Counts hyper's own HTTP/1.1 header read timeout.
    fn ended(&self, ended: Result<(), Box<dyn std::error::Error + Send + Sync>>) {
        if let Err(e) = ended {
            if e.downcast_ref::<hyper::Error>()
                .is_some_and(hyper::Error::is_timeout)
            {
                add(&self.counters.header_read);
            }
            tracing::debug!(error = %e, "connection ended with an error");
        }
    }
}

/// Resolves when the connection has had no request in flight for too long:
/// `header_read_timeout` before its first request, `idle_timeout` after.
async fn idle(active: &mut watch::Receiver<usize>, limits: &ListenerLimits) -> &'static str {
    let mut first = true;
    loop {
        if *active.borrow_and_update() == 0 {
            let (wait, kind) = if first {
                (limits.header_read_timeout, "header_read")
            } else {
                (limits.idle_timeout, "idle")
            };
            tokio::select! {
                () = tokio::time::sleep(wait) => return kind,
                changed = active.changed() => if changed.is_err() { std::future::pending::<()>().await },
            }
        } else if active.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
        first = false;
    }
}

/// The per-connection service: counts requests in flight and bounds each
/// with `request_timeout`.
#[derive(Clone)]
struct ConnService {
    router: Router,
    conn: Arc<Conn>,
    protocol: Protocol,
    timeout: Duration,
    counters: Arc<ListenerCounters>,
}

type ResponseFuture =
    Pin<Box<dyn Future<Output = Result<Response<axum::body::Body>, Infallible>> + Send>>;

impl hyper::service::Service<Request<Incoming>> for ConnService {
    type Response = Response<axum::body::Body>;
    type Error = Infallible;
    type Future = ResponseFuture;

    fn call(&self, request: Request<Incoming>) -> Self::Future {
        let in_flight = InFlight::start(&self.conn);
        let call = TowerToHyperService::new(self.router.clone()).call(request);
        let (timeout, protocol, counters) = (self.timeout, self.protocol, self.counters.clone());
        Box::pin(async move {
            let response = match tokio::time::timeout(timeout, call).await {
                Ok(Ok(answered)) => answered,
                Ok(Err(never)) => match never {},
                Err(_) => {
                    add(&counters.request);
                    let e = TransportError::RequestTimeout(timeout);
                    match protocol {
                        Protocol::Grpc => tonic::Status::from(e).into_http(),
                        Protocol::Http => (e.http_status(), format!("{e}\n")).into_response(),
                    }
                }
            };
            // The request is in flight until its body is sent: a gRPC
            // stream (RLQS) is busy for as long as it lives.
            Ok(response.map(|inner| {
                axum::body::Body::new(Guarded {
                    inner,
                    _in_flight: in_flight,
                })
            }))
        })
    }
}

/// A response body that keeps its request in flight until it is dropped
/// (hyper drops it once sent, or when the stream is reset).
struct Guarded {
    inner: axum::body::Body,
    _in_flight: InFlight,
}

impl hyper::body::Body for Guarded {
    type Data = bytes::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<bytes::Bytes>, axum::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}
