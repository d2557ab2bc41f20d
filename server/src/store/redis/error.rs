//! Why connecting to Redis failed, and whether trying again may help: the
//! one error type of the Redis store's connect step (`connection.rs` and
//! `sentinel.rs` both return it), which the startup loop in
//! [`crate::store::connecting`] retries (`Unreachable`) or gives up on
//! (`Rejected`).

use redis::RedisError;

use super::settings::redact;

/// Why a connection attempt failed, and whether trying again may help.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// Redis is not reachable yet (refused, timed out, no master yet, cluster
    /// not formed): retried with backoff.
    #[error("{0}")]
    Unreachable(String),
    /// The settings or credentials are wrong (bad URL, wrong password,
    /// untrusted certificate): retrying will not help.
    #[error("{0}")]
    Rejected(String),
}

impl ConnectError {
    /// True if a later attempt may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(self, ConnectError::Unreachable(_))
    }
}

/// The settings name a URL that is not a Redis URL.
pub(super) fn invalid_url(url: &str, e: &RedisError) -> ConnectError {
    ConnectError::Rejected(format!("invalid Redis URL {}: {e}", redact(url)))
}

/// Sorts a connect failure: the cause in words, and whether to retry.
pub(super) fn classify(context: &str, e: &RedisError) -> ConnectError {
    if let Some(tls) = tls_error(e) {
        return ConnectError::Rejected(format!(
            "{context}: TLS handshake failed: {tls} (check redis_tls_ca_file and the server's certificate)"
        ));
    }
    // redis-rs reports a rejected password differently per mode: a
    // WRONGPASS reply (single), AuthenticationFailed, or an I/O error that
    // wraps it ("Failed to create initial connections ... authentication
    // failed", cluster). Look at the kind, the code and the text.
    let text = format!("{e} {}", e.detail().unwrap_or_default()).to_ascii_lowercase();
    let auth = matches!(e.kind(), redis::ErrorKind::AuthenticationFailed)
        || matches!(e.code(), Some("WRONGPASS" | "NOAUTH" | "NOPERM"))
        || [
            "wrongpass",
            "noauth",
            "noperm",
            "authentication failed",
            "authentication required",
        ]
        .iter()
        .any(|needle| text.contains(needle));
    if auth {
        return ConnectError::Rejected(format!(
            "{context}: authentication failed ({e}); check redis_username and redis_password"
        ));
    }
    if matches!(
        e.kind(),
        redis::ErrorKind::InvalidClientConfig | redis::ErrorKind::EmptySentinelList
    ) {
        return ConnectError::Rejected(format!("{context}: {e}"));
    }
    ConnectError::Unreachable(format!("{context}: {e}"))
}

/// The rustls error under `e`, if the failure was a TLS one.
fn tls_error(e: &RedisError) -> Option<String> {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = source {
        if let Some(tls) = err.downcast_ref::<rustls::Error>() {
            return Some(tls.to_string());
        }
        if let Some(io) = err.downcast_ref::<std::io::Error>()
            && let Some(tls) = io.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>())
        {
            return Some(tls.to_string());
        }
        source = err.source();
    }
    // redis-rs may carry the rustls error as text only. Only verdicts on
    // certificates count: a connection closed mid-handshake ("tls handshake
    // eof", a proxy without a backend yet) may well work on the next try.
    let text = e.to_string();
    let lower = text.to_ascii_lowercase();
    (lower.contains("certificate") || lower.contains("fatal alert")).then_some(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejected_credentials_and_certificates_are_final_the_rest_is_retried() {
        use redis::ErrorKind;
        let final_ = |e: RedisError| !classify("ctx", &e).is_transient();
        // Cluster mode wraps a wrong password in an I/O error.
        assert!(final_(RedisError::from((
            ErrorKind::Io,
            "Failed to create initial connections",
            "Io: Password authentication failed - AuthenticationFailed".to_owned(),
        ))));
        assert!(final_(RedisError::from((
            ErrorKind::AuthenticationFailed,
            "Password authentication failed"
        ))));
        let unknown_issuer = std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer),
        );
        assert!(final_(RedisError::from(unknown_issuer)));
        // Not up yet, or a proxy closing mid-handshake: try again.
        let refused = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        assert!(!final_(RedisError::from(refused)));
        let eof = std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "tls handshake eof");
        assert!(!final_(RedisError::from(eof)));
    }
}
