//! Rules over xDS: instead of files, the rules come from a management
//! server (Envoy Gateway's, or any xDS server) on the aggregated
//! state-of-the-world stream, `envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources`,
//! as resources of type [`RATE_LIMIT_CONFIG_TYPE_URL`]: what
//! envoyproxy/ratelimit's `CONFIG_TYPE=GRPC_XDS_SOTW` reads.
//!
//! Off the request path, beside it: a background task ([`XdsRules::run`])
//! holds the stream, turns each response into rules files
//! ([`convert`]) and compiles them with the same step as files
//! ([`crate::rules::load_files`]). A set that compiles replaces the rules
//! in force (a request sees one whole set, old or new) and is ACKed; one
//! that does not is NACKed with the messages `floodgate check` prints, and
//! the last good rules stay. A broken stream is reopened after an
//! exponential backoff with jitter ([`crate::backoff`]); the rules in force
//! stay meanwhile.

pub mod convert;

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use floodgate_proto::RATE_LIMIT_CONFIG_TYPE_URL;
use floodgate_proto::envoy::config::core::v3::{Node, node};
use floodgate_proto::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use floodgate_proto::envoy::service::discovery::v3::{DiscoveryRequest, DiscoveryResponse};
use floodgate_proto::google::rpc::Status as RpcStatus;
use floodgate_proto::ratelimit::config::ratelimit::v3::RateLimitConfig;
use prost::Message;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};
use tonic::metadata::{AsciiMetadataKey, AsciiMetadataValue};
use tonic::transport::{Channel, Endpoint};

use crate::backoff::{Backoff, Jitter};
use crate::metrics::{Family, Metrics};
use crate::rules::{LoadError, RuleSet, Rules, load_files, report};
use crate::tls::client::ClientTls;

/// How long a connection to the management server may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// How often an idle stream is pinged.
const KEEPALIVE: Duration = Duration::from_secs(30);

/// How long a ping may go unanswered before the stream is reopened.
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);

/// `google.rpc.Code.INVALID_ARGUMENT`, the code of a NACK.
const INVALID_ARGUMENT: i32 = 3;

/// Where the rules come from and how to reach it, validated by
/// [`crate::config`].
#[derive(Clone, Debug)]
pub struct XdsSettings {
    /// The management server, `host:port`.
    pub server: String,
    /// The node id the server keys its snapshots on.
    pub node_id: String,
    /// The node's metadata, as (key, string value) pairs.
    pub node_metadata: Vec<(String, String)>,
    /// gRPC metadata sent with the stream.
    pub headers: Vec<(AsciiMetadataKey, AsciiMetadataValue)>,
    /// TLS (and mTLS) to the server, if any.
    pub tls: Option<ClientTls>,
    /// The first wait before reconnecting.
    pub retry_initial: Duration,
    /// The longest wait before reconnecting.
    pub retry_max: Duration,
    /// The largest response accepted.
    pub max_message_bytes: usize,
}

impl XdsSettings {
    /// How `/rlconfig` names this source.
    pub fn describe(&self) -> String {
        let scheme = if self.tls.is_some() { "xds+tls" } else { "xds" };
        format!("{scheme}://{} node {}", self.server, self.node_id)
    }
}

/// Why a stream to the management server ended.
#[derive(Debug, thiserror::Error)]
pub enum XdsError {
    /// No connection.
    #[error("cannot connect to {server}: {reason}")]
    Connect {
        /// The server.
        server: String,
        /// Why.
        reason: String,
    },
    /// The server ended the stream, or it broke.
    #[error("the stream ended: {0}")]
    Stream(String),
}

/// The task that keeps the rules in step with the management server.
#[derive(Debug)]
pub struct XdsRules {
    /// Where to connect.
    settings: XdsSettings,
    /// The rules in force, replaced on each accepted response.
    rules: Rules,
    /// Let several resources share a domain.
    merge_domains: bool,
    /// Counts accepted and refused updates.
    metrics: Arc<Metrics>,
    /// Whether a stream is open now (`floodgate_rules_xds_connected`).
    connected: Arc<AtomicBool>,
}

/// The gauge of an open stream.
const CONNECTED: Family = Family::gauge(
    "floodgate_rules_xds_connected",
    "1 while the stream to the xDS management server the rules come from is open, else 0.",
);

impl XdsRules {
    /// The task for `settings`, feeding `rules`; `metrics` gets its
    /// updates (`floodgate_rules_reloads_total`) and the
    /// `floodgate_rules_xds_connected` gauge.
    pub fn new(
        settings: XdsSettings,
        rules: Rules,
        merge_domains: bool,
        metrics: Arc<Metrics>,
    ) -> Self {
        let connected = Arc::new(AtomicBool::new(false));
        let gauge = connected.clone();
        metrics.add_text(Arc::new(move |out: &mut String| {
            CONNECTED.header(out);
            let up = u8::from(gauge.load(Ordering::Relaxed));
            let _ = writeln!(out, "{} {up}", CONNECTED.name);
        }));
        XdsRules {
            settings,
            rules,
            merge_domains,
            metrics,
            connected,
        }
    }

    /// Holds a stream to the server until `drain` turns true, reopening it
    /// after a backoff whenever it fails.
    pub async fn run(self, mut drain: watch::Receiver<bool>) {
        let backoff = Backoff::new(
            self.settings.retry_initial,
            self.settings.retry_max,
            2.0,
            Jitter::Full,
        );
        // The version of the last response accepted: sent again on reconnect.
        let mut accepted = String::new();
        let mut failures = 0u32;
        loop {
            let mut answered = false;
            let ended = tokio::select! {
                _ = drain.changed() => return,
                ended = self.stream(&mut accepted, &mut answered) => ended,
            };
            self.connected.store(false, Ordering::Relaxed);
            if *drain.borrow() {
                return;
            }
            failures = if answered {
                1
            } else {
                failures.saturating_add(1)
            };
            let wait = backoff.wait(failures);
            tracing::warn!(
                server = %self.settings.server,
                error = %ended,
                retry_in = ?wait,
                "xDS rules stream down; the rules in force stay"
            );
            tokio::select! {
                _ = drain.changed() => return,
                () = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// One stream: subscribe, then ACK or NACK each response until it ends.
    /// `answered` turns true once the server has sent a response.
    async fn stream(&self, accepted: &mut String, answered: &mut bool) -> XdsError {
        let channel = match self.connect().await {
            Ok(channel) => channel,
            Err(e) => return e,
        };
        let mut client = AggregatedDiscoveryServiceClient::new(channel)
            .max_decoding_message_size(self.settings.max_message_bytes);
        // Requests go out one per response: a small bound is plenty.
        let (tx, rx) = mpsc::channel(4);
        let first = self.request(accepted, String::new(), None);
        if tx.send(first).await.is_err() {
            return XdsError::Stream("the request stream closed".into());
        }
        let mut request = tonic::Request::new(tokio_stream::wrappers::ReceiverStream::new(rx));
        for (key, value) in &self.settings.headers {
            request.metadata_mut().insert(key.clone(), value.clone());
        }
        let mut responses = match client.stream_aggregated_resources(request).await {
            Ok(response) => response.into_inner(),
            Err(status) => return XdsError::Stream(status.to_string()),
        };
        self.connected.store(true, Ordering::Relaxed);
        tracing::info!(server = %self.settings.server, node = %self.settings.node_id, "xDS rules stream open");
        loop {
            let response = match responses.message().await {
                Ok(Some(response)) => response,
                Ok(None) => return XdsError::Stream("closed by the server".into()),
                Err(status) => return XdsError::Stream(status.to_string()),
            };
            *answered = true;
            if response.type_url != RATE_LIMIT_CONFIG_TYPE_URL {
                tracing::debug!(type_url = %response.type_url, "xDS response of another type ignored");
                continue;
            }
            let reply = match self.apply(&response) {
                Ok(()) => {
                    accepted.clone_from(&response.version_info);
                    self.request(accepted, response.nonce, None)
                }
                Err(message) => self.request(
                    accepted,
                    response.nonce,
                    Some(RpcStatus {
                        code: INVALID_ARGUMENT,
                        message,
                        details: Vec::new(),
                    }),
                ),
            };
            if tx.send(reply).await.is_err() {
                return XdsError::Stream("the request stream closed".into());
            }
        }
    }

    /// Compiles a response and puts it in force, or says why not (the
    /// NACK's message).
    fn apply(&self, response: &DiscoveryResponse) -> Result<(), String> {
        let version = &response.version_info;
        match compile(response, self.merge_domains, &self.settings.describe()) {
            Ok(set) => {
                let hash = set.version().to_owned();
                self.rules.replace(set);
                self.metrics.record_reload(Ok(&hash));
                tracing::info!(xds_version = %version, version = %hash, "rules from xDS in force");
                Ok(())
            }
            Err(errors) => {
                self.metrics.record_reload(Err(()));
                let message = report(&errors);
                tracing::error!(
                    xds_version = %version,
                    errors = %message,
                    "rules from xDS refused (NACK); the last good rules stay in force"
                );
                Err(message)
            }
        }
    }

    fn request(
        &self,
        version: &str,
        nonce: String,
        error_detail: Option<RpcStatus>,
    ) -> DiscoveryRequest {
        DiscoveryRequest {
            version_info: version.to_owned(),
            node: Some(node(&self.settings)),
            resource_names: Vec::new(),
            type_url: RATE_LIMIT_CONFIG_TYPE_URL.to_owned(),
            response_nonce: nonce,
            error_detail,
        }
    }

    async fn connect(&self) -> Result<Channel, XdsError> {
        let failed = |reason: String| XdsError::Connect {
            server: self.settings.server.clone(),
            reason,
        };
        let endpoint = Endpoint::from_shared(format!("http://{}", self.settings.server))
            .map_err(|e| failed(e.to_string()))?
            .connect_timeout(CONNECT_TIMEOUT)
            // A server that vanishes without closing the connection is
            // noticed within KEEPALIVE + KEEPALIVE_TIMEOUT.
            .http2_keep_alive_interval(KEEPALIVE)
            .keep_alive_timeout(KEEPALIVE_TIMEOUT)
            .keep_alive_while_idle(true);
        let server = self.settings.server.clone();
        let tls = self.settings.tls.clone();
        let connector = tower::service_fn(move |_: http::Uri| {
            let server = server.clone();
            let tls = tls.clone();
            async move { dial(&server, tls.as_ref()).await }
        });
        endpoint
            .connect_with_connector(connector)
            .await
            .map_err(|e| failed(error_chain(&e)))
    }
}

/// A connected socket, plain or TLS.
trait Io: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Io for T {}

async fn dial(
    server: &str,
    tls: Option<&ClientTls>,
) -> std::io::Result<hyper_util::rt::TokioIo<Box<dyn Io>>> {
    let tcp = TcpStream::connect(server).await?;
    tcp.set_nodelay(true)?;
    let io: Box<dyn Io> = match tls {
        Some(tls) => Box::new(tls.connect(tcp).await?),
        None => Box::new(tcp),
    };
    Ok(hyper_util::rt::TokioIo::new(io))
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

fn node(settings: &XdsSettings) -> Node {
    let fields = settings
        .node_metadata
        .iter()
        .map(|(k, v)| {
            let value = prost_types::Value {
                kind: Some(prost_types::value::Kind::StringValue(v.clone())),
            };
            (k.clone(), value)
        })
        .collect();
    Node {
        id: settings.node_id.clone(),
        metadata: Some(prost_types::Struct { fields }),
        user_agent_name: "floodgate".to_owned(),
        user_agent_version_type: Some(node::UserAgentVersionType::UserAgentVersion(
            env!("CARGO_PKG_VERSION").to_owned(),
        )),
        ..Default::default()
    }
}

/// The rules a response carries: each resource as one file named for it.
/// A resource of another type, or one that does not decode, is an error.
pub fn compile(
    response: &DiscoveryResponse,
    merge_domains: bool,
    source: &str,
) -> Result<RuleSet, Vec<LoadError>> {
    let mut files = Vec::with_capacity(response.resources.len());
    let mut errors = Vec::new();
    for (i, resource) in response.resources.iter().enumerate() {
        if resource.type_url != RATE_LIMIT_CONFIG_TYPE_URL {
            errors.push(LoadError::resource(
                format!("resource {i}"),
                format!(
                    "type {:?} is not {RATE_LIMIT_CONFIG_TYPE_URL}",
                    resource.type_url
                ),
            ));
            continue;
        }
        match RateLimitConfig::decode(resource.value.as_slice()) {
            Ok(config) => {
                files.push((convert::file_name(&config, i), convert::rules_text(&config)))
            }
            Err(e) => errors.push(LoadError::resource(
                format!("resource {i}"),
                format!("not a RateLimitConfig: {e}"),
            )),
        }
    }
    let set = load_files(&files, merge_domains);
    match set {
        Ok(set) if errors.is_empty() => {
            Ok(set.with_source(format!("{source} version {}", response.version_info)))
        }
        Ok(_) => Err(errors),
        Err(more) => {
            errors.extend(more);
            Err(errors)
        }
    }
}

#[cfg(test)]
mod tests;
