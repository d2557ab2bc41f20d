//! The "no work at all" baseline for benchmarks: an Envoy RLS server that
//! answers every call OK at once, on the same tonic stack as Floodgate. Every
//! figure in the README's performance table is a ratio to this server,
//! measured in the same run on the same machine.
//!
//! `cargo run --release -p floodgate-server --example baseline -- 127.0.0.1:9081`

use floodgate_proto::RateLimitServiceServer;
use floodgate_server::bench::AlwaysOk;

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
