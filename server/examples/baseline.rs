//! The "no work at all" baseline for benchmarks: an Envoy RLS server that
//! answers every call OK at once, on the same tonic stack as Floodgate. Every
//! figure in the README's performance table is a ratio to this server,
//! measured in the same run on the same machine.
//!
//! `cargo run --release -p floodgate-server --example baseline -- 127.0.0.1:9081`

use floodgate_proto::rate_limit_response::Code;
use floodgate_proto::{
    RateLimitRequest, RateLimitResponse, RateLimitService, RateLimitServiceServer,
};

struct AlwaysOk;

#[tonic::async_trait]
impl RateLimitService for AlwaysOk {
    async fn should_rate_limit(
        &self,
        _: tonic::Request<RateLimitRequest>,
    ) -> Result<tonic::Response<RateLimitResponse>, tonic::Status> {
        Ok(tonic::Response::new(RateLimitResponse {
            overall_code: Code::Ok as i32,
            ..Default::default()
        }))
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:9081".to_owned());
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    tonic::transport::Server::builder()
        .add_service(RateLimitServiceServer::new(AlwaysOk))
        .serve_with_incoming_shutdown(
            tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true)),
            async {
                let _ = tokio::signal::ctrl_c().await;
            },
        )
        .await?;
    Ok(())
}
