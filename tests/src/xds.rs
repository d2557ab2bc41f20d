//! An xDS management server for the tests: the aggregated
//! state-of-the-world stream (`StreamAggregatedResources`) serving
//! `RateLimitConfig` resources, as Envoy Gateway's rate-limit config server
//! (go-control-plane) does. The test pushes snapshots ([`XdsServer::push`]);
//! every request a client sends is kept ([`XdsServer::requests`]), so a test
//! can wait for an ACK or a NACK of a given nonce. Only streams whose node id
//! is the expected one are answered (a snapshot cache keys on it).

use std::net::SocketAddr;
use std::path::Path;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use floodgate_proto::RATE_LIMIT_CONFIG_TYPE_URL;
use floodgate_proto::envoy::service::discovery::v3::aggregated_discovery_service_server::{
    AggregatedDiscoveryService, AggregatedDiscoveryServiceServer,
};
use floodgate_proto::envoy::service::discovery::v3::{DiscoveryRequest, DiscoveryResponse};
use floodgate_proto::ratelimit::config::ratelimit::v3::{
    RateLimitConfig, RateLimitDescriptor, RateLimitPolicy, RateLimitUnit,
};
use prost::Message;
use tokio::sync::{Notify, watch};
use tokio_stream::Stream;
use tonic::transport::{Certificate, Identity, Server, ServerTlsConfig};
use tonic::{Request, Response, Status, Streaming};

/// A request the server received, with the gRPC metadata of its stream.
#[derive(Clone, Debug)]
pub struct Received {
    /// The request.
    pub request: DiscoveryRequest,
    /// The stream's `x-*` headers, as (name, value).
    pub headers: Vec<(String, String)>,
}

#[derive(Debug, Default)]
struct Shared {
    requests: Mutex<Vec<Received>>,
    arrived: Notify,
    /// Bumped by [`XdsServer::stop`]: every open stream ends.
    stops: watch::Sender<u64>,
}

/// The management server, stopped on drop.
#[derive(Debug)]
pub struct XdsServer {
    /// Where it listens.
    pub addr: SocketAddr,
    snapshot: watch::Sender<Option<DiscoveryResponse>>,
    shared: Arc<Shared>,
    task: Option<tokio::task::JoinHandle<()>>,
    node_id: String,
    tls: Option<ServerTlsConfig>,
}

impl XdsServer {
    /// Starts on a free loopback port, answering node `node_id`, with TLS
    /// from `tls` (`(dir with the test PKI)`: `server.pem`, `server.key`,
    /// client certificates from `ca.pem` required) if given.
    pub async fn start(node_id: &str, tls: Option<&Path>) -> XdsServer {
        let tls = tls.map(|dir| {
            let read = |f: &str| std::fs::read(dir.join(f)).expect("read test PKI");
            ServerTlsConfig::new()
                .identity(Identity::from_pem(read("server.pem"), read("server.key")))
                .client_ca_root(Certificate::from_pem(read("ca.pem")))
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the xDS server");
        let addr = listener.local_addr().expect("address");
        let mut server = XdsServer {
            addr,
            snapshot: watch::Sender::new(None),
            shared: Arc::default(),
            task: None,
            node_id: node_id.to_owned(),
            tls,
        };
        server.serve(listener);
        server
    }

    fn serve(&mut self, listener: tokio::net::TcpListener) {
        let service = Ads {
            snapshot: self.snapshot.subscribe(),
            shared: self.shared.clone(),
            node_id: self.node_id.clone(),
        };
        let mut builder = Server::builder();
        if let Some(tls) = &self.tls {
            builder = builder.tls_config(tls.clone()).expect("TLS config");
        }
        let router = builder.add_service(AggregatedDiscoveryServiceServer::new(service));
        let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
        self.task = Some(tokio::spawn(async move {
            let _ = router.serve_with_incoming(incoming).await;
        }));
    }

    /// Stops serving (every stream breaks), as a management server that
    /// restarts does.
    pub fn stop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
        self.shared.stops.send_modify(|n| *n += 1);
    }

    /// Serves again on the same address, with the same snapshot.
    pub async fn restart(&mut self) {
        self.stop();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        let listener = loop {
            match tokio::net::TcpListener::bind(self.addr).await {
                Ok(listener) => break listener,
                Err(e) if tokio::time::Instant::now() < deadline => {
                    let _ = e;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => panic!("rebind {}: {e}", self.addr),
            }
        };
        self.serve(listener);
    }

    /// Sends `configs` as version `version` (nonce `n-<version>`) to every
    /// stream, now and on each new one.
    pub fn push(&self, version: &str, configs: &[RateLimitConfig]) {
        let resources = configs
            .iter()
            .map(|c| prost_types::Any {
                type_url: RATE_LIMIT_CONFIG_TYPE_URL.to_owned(),
                value: c.encode_to_vec(),
            })
            .collect();
        self.snapshot.send_replace(Some(DiscoveryResponse {
            version_info: version.to_owned(),
            resources,
            type_url: RATE_LIMIT_CONFIG_TYPE_URL.to_owned(),
            nonce: format!("n-{version}"),
            ..Default::default()
        }));
    }

    /// Settings that take Floodgate's rules from this server as node
    /// `node_id`, reconnecting quickly (100 ms to 1 s).
    pub fn settings(&self, node_id: &str) -> floodgate_server::xds::XdsSettings {
        floodgate_server::xds::XdsSettings {
            server: self.addr.to_string(),
            node_id: node_id.to_owned(),
            node_metadata: Vec::new(),
            headers: Vec::new(),
            tls: None,
            retry_initial: Duration::from_millis(100),
            retry_max: Duration::from_secs(1),
            max_message_bytes: 4 << 20,
        }
    }

    /// Every request received so far.
    pub fn requests(&self) -> Vec<Received> {
        self.shared.requests.lock().expect("requests").clone()
    }

    /// Waits (up to 10 s) for a request that answers `version`'s nonce.
    pub async fn answer_to(&self, version: &str) -> Received {
        let nonce = format!("n-{version}");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let arrived = self.shared.arrived.notified();
            if let Some(found) = self
                .requests()
                .into_iter()
                .find(|r| r.request.response_nonce == nonce)
            {
                return found;
            }
            if tokio::time::timeout_at(deadline, arrived).await.is_err() {
                panic!(
                    "no answer to version {version} within 10 s; requests: {:?}",
                    self.requests()
                );
            }
        }
    }
}

impl Drop for XdsServer {
    fn drop(&mut self) {
        self.stop();
    }
}

struct Ads {
    snapshot: watch::Receiver<Option<DiscoveryResponse>>,
    shared: Arc<Shared>,
    node_id: String,
}

type Responses = Pin<Box<dyn Stream<Item = Result<DiscoveryResponse, Status>> + Send>>;

#[tonic::async_trait]
impl AggregatedDiscoveryService for Ads {
    type StreamAggregatedResourcesStream = Responses;

    async fn stream_aggregated_resources(
        &self,
        request: Request<Streaming<DiscoveryRequest>>,
    ) -> Result<Response<Responses>, Status> {
        let headers = request
            .metadata()
            .iter()
            .filter_map(|entry| match entry {
                tonic::metadata::KeyAndValueRef::Ascii(k, v) if k.as_str().starts_with("x-") => {
                    Some((k.to_string(), v.to_str().unwrap_or_default().to_owned()))
                }
                _ => None,
            })
            .collect::<Vec<_>>();
        let mut requests = request.into_inner();
        let Some(first) = requests.message().await? else {
            return Err(Status::invalid_argument("no request"));
        };
        let node = first
            .node
            .as_ref()
            .map(|n| n.id.clone())
            .unwrap_or_default();
        record(&self.shared, first, &headers);
        if node != self.node_id {
            return Err(Status::permission_denied(format!(
                "no snapshot for node {node:?}"
            )));
        }
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        let shared = self.shared.clone();
        tokio::spawn(async move {
            while let Ok(Some(request)) = requests.message().await {
                record(&shared, request, &headers);
            }
        });
        let mut snapshot = self.snapshot.clone();
        let mut stops = self.shared.stops.subscribe();
        tokio::spawn(async move {
            loop {
                let current = snapshot.borrow_and_update().clone();
                if let Some(response) = current
                    && tx.send(Ok(response)).await.is_err()
                {
                    return;
                }
                tokio::select! {
                    changed = snapshot.changed() => if changed.is_err() { return },
                    // Stopped: the stream ends (tx dropped).
                    _ = stops.changed() => return,
                }
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }
}

fn record(shared: &Shared, request: DiscoveryRequest, headers: &[(String, String)]) {
    shared.requests.lock().expect("requests").push(Received {
        request,
        headers: headers.to_vec(),
    });
    shared.arrived.notify_waiters();
}

/// Domain `domain`, key `key`: `per_minute` requests per minute, as the
/// resource `name`.
pub fn per_minute(name: &str, domain: &str, key: &str, per_minute: u32) -> RateLimitConfig {
    RateLimitConfig {
        name: name.to_owned(),
        domain: domain.to_owned(),
        descriptors: vec![RateLimitDescriptor {
            key: key.to_owned(),
            rate_limit: Some(RateLimitPolicy {
                unit: RateLimitUnit::Minute as i32,
                requests_per_unit: per_minute,
                ..Default::default()
            }),
            ..Default::default()
        }],
    }
}
