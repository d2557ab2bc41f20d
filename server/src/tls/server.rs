//! The server side of TLS, one [`ServerTls`] per listener that has it:
//! [`crate::transport`] calls [`ServerTls::accept`] on each new connection
//! before HTTP/2 sees a byte, with the listener's current certificate.
//!
//! - **Handshake**: TLS 1.3 and 1.2, ALPN as the listener speaks, bounded by
//!   the listener's `header_read_timeout`. A client the listener turns away
//!   (no certificate when one is required, one the client CA did not sign,
//!   an identity off the allow-list) gets a TLS alert, never a decision;
//!   every failed handshake is counted by reason.
//! - **Identities**: with `L_tls_client_names`, the client certificate's SAN
//!   DNS names and URIs (SPIFFE IDs) must include one of the names.
//! - **Rotation**: [`watch()`] re-reads the files every `tls_reload_interval`;
//!   files that changed and form a valid pair are used for new connections
//!   (open ones keep theirs); a broken pair is logged and counted once and
//!   the last good one stays.

use std::fmt::Write as _;
use std::io;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ServerConfig, WebPkiClientVerifier};
use rustls::sign::SingleCertAndKey;
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, SignatureScheme};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

use super::files::{ClientAuth, Contents, ListenerTls, Material, TlsFileError, setting};
use crate::metrics::Family;

/// Why a handshake failed (the `reason` label).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Failure {
    /// A client certificate was required and none was presented.
    NoClientCertificate,
    /// The client certificate is not one the client CA signed, or is expired.
    BadClientCertificate,
    /// The client certificate names no identity on the allow-list.
    ClientNotAllowed,
    /// The handshake did not finish within `header_read_timeout`.
    Timeout,
    /// The client closed the connection before finishing the handshake.
    Closed,
    /// Anything else: not TLS, no common version or cipher, a bad message.
    Other,
}

impl Failure {
    /// Its place in [`Failure::ALL`] (and in each listener's counters):
    /// the declaration order, which `ALL` follows.
    fn index(self) -> usize {
        self as usize
    }

    const ALL: [Failure; 6] = [
        Failure::NoClientCertificate,
        Failure::BadClientCertificate,
        Failure::ClientNotAllowed,
        Failure::Timeout,
        Failure::Closed,
        Failure::Other,
    ];

    /// The `reason` label.
    pub fn as_str(self) -> &'static str {
        match self {
            Failure::NoClientCertificate => "no_client_certificate",
            Failure::BadClientCertificate => "bad_client_certificate",
            Failure::ClientNotAllowed => "client_not_allowed",
            Failure::Timeout => "timeout",
            Failure::Closed => "closed",
            Failure::Other => "other",
        }
    }

    /// The failure a handshake error stands for.
    fn of(e: &io::Error) -> Failure {
        if e.kind() == io::ErrorKind::UnexpectedEof {
            return Failure::Closed;
        }
        match e.get_ref().and_then(|e| e.downcast_ref::<rustls::Error>()) {
            Some(rustls::Error::NoCertificatesPresented) => Failure::NoClientCertificate,
            Some(rustls::Error::InvalidCertificate(
                CertificateError::ApplicationVerificationFailure,
            )) => Failure::ClientNotAllowed,
            Some(rustls::Error::InvalidCertificate(_)) => Failure::BadClientCertificate,
            _ => Failure::Other,
        }
    }
}

/// What one listener's TLS counted.
#[derive(Debug, Default)]
struct Counters {
    failures: [AtomicU64; Failure::ALL.len()],
    reloads_ok: AtomicU64,
    reloads_failed: AtomicU64,
    not_after: AtomicI64,
}

/// What a reload found.
#[derive(Debug, PartialEq, Eq)]
pub enum Reloaded {
    /// The files read as last time.
    Unchanged,
    /// New files, in use for new connections: the new leaf's serial.
    Replaced(String),
    /// New files that cannot be used: the last good ones stay.
    Refused(TlsFileError),
}

/// The files as last read, or the error reading them gave.
#[derive(Debug, PartialEq, Eq)]
enum Seen {
    Read(Contents),
    Failed(TlsFileError),
}

/// One listener's TLS: its settings, the server config in use, counters.
#[derive(Debug)]
pub struct ServerTls {
    tls: ListenerTls,
    alpn: Vec<Vec<u8>>,
    provider: Arc<CryptoProvider>,
    current: RwLock<Arc<ServerConfig>>,
    seen: Mutex<Seen>,
    counters: Counters,
}

impl ServerTls {
    /// Reads and checks the files of `tls` (as startup does: an error names
    /// the setting and the file); `alpn`: the protocols offered, preferred
    /// first.
    pub fn new(tls: ListenerTls, alpn: &[&[u8]]) -> Result<ServerTls, TlsFileError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let contents = Material::read(&tls)?;
        let material = Material::parse(&tls, &contents, &provider, SystemTime::now())?;
        let alpn: Vec<Vec<u8>> = alpn.iter().map(|p| p.to_vec()).collect();
        let config = server_config(&tls, &material, &provider, &alpn)?;
        let counters = Counters::default();
        counters
            .not_after
            .store(material.not_after, Ordering::Relaxed);
        Ok(ServerTls {
            tls,
            alpn,
            provider,
            current: RwLock::new(config),
            seen: Mutex::new(Seen::Read(contents)),
            counters,
        })
    }

    /// The listener (`grpc`, `http` or `admin`).
    pub fn listener(&self) -> &'static str {
        self.tls.listener
    }

    /// The settings.
    pub fn settings(&self) -> &ListenerTls {
        &self.tls
    }

    fn current(&self) -> Arc<ServerConfig> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Runs the server side of the handshake on `tcp` with the current
    /// certificate, within `timeout`; `None` (counted) if it failed.
    pub async fn accept(&self, tcp: TcpStream, timeout: Duration) -> Option<TlsStream<TcpStream>> {
        let acceptor = TlsAcceptor::from(self.current());
        let failure = match tokio::time::timeout(timeout, acceptor.accept(tcp)).await {
            Ok(Ok(stream)) => return Some(stream),
            Ok(Err(e)) => {
                let failure = Failure::of(&e);
                tracing::debug!(listener = self.tls.listener, reason = failure.as_str(), error = %e, "TLS handshake failed");
                failure
            }
            Err(_) => Failure::Timeout,
        };
        self.counters.failures[failure.index()].fetch_add(1, Ordering::Relaxed);
        None
    }

    /// Reads the files again: if they changed and are good as of `now`, new
    /// connections use them. Refused files are logged once.
    pub fn reload(&self, now: SystemTime) -> Reloaded {
        let read = Material::read(&self.tls);
        let seen = match &read {
            Ok(contents) => Seen::Read(contents.clone()),
            Err(e) => Seen::Failed(e.clone()),
        };
        {
            let mut last = self.seen.lock().unwrap_or_else(|p| p.into_inner());
            if *last == seen {
                return Reloaded::Unchanged;
            }
            *last = seen;
        }
        let loaded = read.and_then(|contents| {
            let material = Material::parse(&self.tls, &contents, &self.provider, now)?;
            let config = server_config(&self.tls, &material, &self.provider, &self.alpn)?;
            Ok((material, config))
        });
        match loaded {
            Ok((material, config)) => {
                *self.current.write().unwrap_or_else(|p| p.into_inner()) = config;
                self.counters
                    .not_after
                    .store(material.not_after, Ordering::Relaxed);
                self.counters.reloads_ok.fetch_add(1, Ordering::Relaxed);
                tracing::info!(
                    listener = self.tls.listener,
                    serial = %material.serial,
                    not_after = %super::files::rfc3339(material.not_after),
                    "TLS certificate reloaded: new connections use it"
                );
                Reloaded::Replaced(material.serial)
            }
            Err(e) => {
                self.counters.reloads_failed.fetch_add(1, Ordering::Relaxed);
                tracing::error!(listener = self.tls.listener, error = %e, "TLS files changed but cannot be used: keeping the last good certificate");
                Reloaded::Refused(e)
            }
        }
    }

    /// How many handshakes failed for `reason`.
    pub fn failures(&self, reason: Failure) -> u64 {
        self.counters.failures[reason.index()].load(Ordering::Relaxed)
    }
}

/// The rustls server config for `material`: versions, client verifier,
/// certificate, ALPN.
fn server_config(
    tls: &ListenerTls,
    material: &Material,
    provider: &Arc<CryptoProvider>,
    alpn: &[Vec<u8>],
) -> Result<Arc<ServerConfig>, TlsFileError> {
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| TlsFileError {
            setting: setting(tls.listener, "cert"),
            path: tls.cert_file.clone(),
            reason: format!("no TLS version to serve it with: {e}"),
        })?;
    let builder = match (&tls.client, &material.client_roots) {
        (Some(client), Some(roots)) => {
            let mut verifier =
                WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone());
            if client.auth == ClientAuth::Optional {
                verifier = verifier.allow_unauthenticated();
            }
            let verifier = verifier.build().map_err(|e| TlsFileError {
                setting: setting(tls.listener, "client_ca"),
                path: client.ca_file.clone(),
                reason: format!("cannot verify clients with it: {e}"),
            })?;
            let verifier: Arc<dyn ClientCertVerifier> = if client.names.is_empty() {
                verifier
            } else {
                Arc::new(AllowedNames {
                    inner: verifier,
                    names: client.names.clone(),
                })
            };
            builder.with_client_cert_verifier(verifier)
        }
        _ => builder.with_no_client_auth(),
    };
    let mut config =
        builder.with_cert_resolver(Arc::new(SingleCertAndKey::from(material.key.clone())));
    config.alpn_protocols = alpn.to_vec();
    Ok(Arc::new(config))
}

/// The identities a certificate names: its SAN DNS names and URIs.
pub fn identities(der: &[u8]) -> Vec<String> {
    use x509_parser::extensions::GeneralName;
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(der) else {
        return Vec::new();
    };
    let Ok(Some(san)) = cert.subject_alternative_name() else {
        return Vec::new();
    };
    san.value
        .general_names
        .iter()
        .filter_map(|name| match name {
            GeneralName::DNSName(n) | GeneralName::URI(n) => Some((*n).to_owned()),
            _ => None,
        })
        .collect()
}

/// A client verifier that, past the CA's checks, lets in only certificates
/// naming an allowed identity.
#[derive(Debug)]
struct AllowedNames {
    inner: Arc<dyn ClientCertVerifier>,
    names: Vec<String>,
}

impl ClientCertVerifier for AllowedNames {
    fn offer_client_auth(&self) -> bool {
        self.inner.offer_client_auth()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.inner.client_auth_mandatory()
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let verified = self
            .inner
            .verify_client_cert(end_entity, intermediates, now)?;
        if identities(end_entity)
            .iter()
            .any(|id| self.names.contains(id))
        {
            Ok(verified)
        } else {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::ApplicationVerificationFailure,
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// Re-reads every listener's files each `every` until `drain` turns true
/// (see [`ServerTls::reload`]); with `every` `None`, never.
pub async fn watch(
    listeners: Vec<Arc<ServerTls>>,
    every: Option<Duration>,
    mut drain: watch::Receiver<bool>,
) {
    let Some(every) = every.filter(|_| !listeners.is_empty()) else {
        return;
    };
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tokio::select! {
            () = async { let _ = drain.wait_for(|d| *d).await; } => return,
            _ = tick.tick() => {
                for tls in &listeners {
                    let tls = tls.clone();
                    // Small files, but file reads block: off the runtime.
                    let _ = tokio::task::spawn_blocking(move || tls.reload(SystemTime::now())).await;
                }
            }
        }
    }
}

/// Appends every listener's TLS series, in the Prometheus text format.
pub fn render(listeners: &[Arc<ServerTls>], out: &mut String) {
    if listeners.is_empty() {
        return;
    }
    Family::counter(
        "floodgate_tls_handshake_failures_total",
        "TLS handshakes that failed, by listener and reason (the client got an alert or a closed connection, never a decision).",
    )
    .header(out);
    for tls in listeners {
        for (failure, count) in Failure::ALL.iter().zip(&tls.counters.failures) {
            let _ = writeln!(
                out,
                "floodgate_tls_handshake_failures_total{{listener=\"{}\",reason=\"{}\"}} {}",
                tls.tls.listener,
                failure.as_str(),
                count.load(Ordering::Relaxed)
            );
        }
    }
    Family::counter(
        "floodgate_tls_certificate_reloads_total",
        "Changed TLS files taken (ok) or refused, keeping the last good certificate (error).",
    )
    .header(out);
    for tls in listeners {
        for (result, count) in [
            ("ok", &tls.counters.reloads_ok),
            ("error", &tls.counters.reloads_failed),
        ] {
            let _ = writeln!(
                out,
                "floodgate_tls_certificate_reloads_total{{listener=\"{}\",result=\"{result}\"}} {}",
                tls.tls.listener,
                count.load(Ordering::Relaxed)
            );
        }
    }
    Family::gauge(
        "floodgate_tls_certificate_not_after_seconds",
        "When the certificate a listener serves expires, in seconds since the Unix epoch.",
    )
    .header(out);
    for tls in listeners {
        let _ = writeln!(
            out,
            "floodgate_tls_certificate_not_after_seconds{{listener=\"{}\"}} {}",
            tls.tls.listener,
            tls.counters.not_after.load(Ordering::Relaxed)
        );
    }
}
