//! TLS and mTLS on our own listeners, under [`crate::transport`]: before a
//! connection reaches HTTP/2, [`server`] runs its TLS handshake with the
//! listener's current certificate (and, with a client CA, checks the
//! client's certificate and identity). [`files`] reads and checks the PEM
//! files; [`client`] is the client side that `floodgate bench` and
//! `floodgate admin` speak.

pub mod client;
pub mod files;
pub mod server;

#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::time::Duration;

use self::files::ListenerTls;
use self::server::ServerTls;

/// ALPN of the gRPC listener: HTTP/2 only.
pub const GRPC_ALPN: &[&[u8]] = &[b"h2"];
/// ALPN of the HTTP and admin listeners.
pub const HTTP_ALPN: &[&[u8]] = &[b"h2", b"http/1.1"];

/// Every listener's TLS settings (`None`: plaintext), and how often their
/// files are re-read.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TlsSettings {
    /// The gRPC listener's.
    pub grpc: Option<ListenerTls>,
    /// The HTTP listener's.
    pub http: Option<ListenerTls>,
    /// The admin listener's.
    pub admin: Option<ListenerTls>,
    /// How often the files are re-read (`None`: never).
    pub reload_interval: Option<Duration>,
}

/// The listeners' TLS, loaded (each `None` when plaintext).
#[derive(Clone, Debug, Default)]
pub struct Tls {
    /// The gRPC listener's.
    pub grpc: Option<Arc<ServerTls>>,
    /// The HTTP listener's.
    pub http: Option<Arc<ServerTls>>,
    /// The admin listener's.
    pub admin: Option<Arc<ServerTls>>,
}

impl Tls {
    /// Loads each listener's files (startup: any error stops it).
    pub fn load(settings: &TlsSettings) -> Result<Tls, files::TlsFileError> {
        let load = |tls: &Option<ListenerTls>, alpn| {
            tls.clone()
                .map(|t| ServerTls::new(t, alpn).map(Arc::new))
                .transpose()
        };
        Ok(Tls {
            grpc: load(&settings.grpc, GRPC_ALPN)?,
            http: load(&settings.http, HTTP_ALPN)?,
            admin: load(&settings.admin, HTTP_ALPN)?,
        })
    }

    /// The listeners that have TLS.
    pub fn all(&self) -> Vec<Arc<ServerTls>> {
        [&self.grpc, &self.http, &self.admin]
            .into_iter()
            .flatten()
            .cloned()
            .collect()
    }
}
