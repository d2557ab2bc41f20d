//! The client's error: what a call or the builder reports when the failure
//! policy does not apply. Every other client module may use it; it uses none.

/// Why a call failed (only errors the failure policy does not cover: a
/// caller's mistake, or settings that cannot work).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An endpoint or TLS setting is invalid, or (with
    /// [`Client::connect`](crate::Client::connect)) the endpoint cannot be reached.
    #[error("cannot connect: {0}")]
    Connect(#[from] tonic::transport::Error),
    /// An endpoint is not a valid `http://` or `https://` URL.
    #[error("invalid endpoint {endpoint:?}: {reason}")]
    Endpoint {
        /// The endpoint as given.
        endpoint: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A TLS file given to [`ClientBuilder::mtls_files`](crate::ClientBuilder::mtls_files)
    /// or [`ClientBuilder::tls_ca_file`](crate::ClientBuilder::tls_ca_file)
    /// is missing, unreadable, or holds no PEM certificate or key.
    #[error("TLS {what} {}: {reason}", .path.display())]
    TlsFile {
        /// Which file: `CA file`, `certificate file` or `key file`.
        what: &'static str,
        /// The file as given.
        path: std::path::PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The service rejected the call itself (e.g. `INVALID_ARGUMENT` for an
    /// empty domain): retrying cannot help.
    #[error("rate limit service error: {0}")]
    Status(#[from] tonic::Status),
}
