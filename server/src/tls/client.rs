//! The client side of TLS, off the request path: what `floodgate bench`
//! ([`crate::bench`]) and `floodgate admin` ([`crate::admin::post`]) speak
//! to a listener that serves TLS or mTLS.
//!
//! [`TlsFlags`] are the command-line flags (`--tls-ca`, `--tls-cert`,
//! `--tls-key`, `--tls-server-name`); [`ClientTls::new`] reads and checks
//! their files once, before any connection, and fails with a
//! [`ClientTlsError`] that names the flag and the file; then
//! [`ClientTls::connect`] runs the handshake on each connected socket.
//!
//! Only the CA given with `--tls-ca` is trusted: the server crate carries no
//! system roots (these tools talk to one's own servers, whose CA one holds),
//! so TLS without `--tls-ca` is an error that says so. TLS 1.2 and 1.3, with
//! rustls' ring provider (never the process-wide default).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, RootCertStore};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use super::files;

/// ALPN for HTTP/2 (what `floodgate bench` offers: gRPC).
pub const ALPN_H2: &[u8] = b"h2";
/// ALPN for HTTP/1.1 (what `floodgate admin` offers).
pub const ALPN_HTTP1: &[u8] = b"http/1.1";

/// The client's TLS files and the server name to verify, as the command
/// line gives them. All empty: no TLS.
#[derive(Clone, Debug, Default, clap::Args)]
pub struct TlsFlags {
    /// Speak TLS, trusting the CA certificate(s) in FILE (PEM) to sign the
    /// server's certificate.
    #[arg(id = "tls_ca", long = "tls-ca", value_name = "FILE")]
    pub ca: Option<PathBuf>,
    /// mTLS: the client certificate chain to present (PEM), with --tls-key.
    #[arg(id = "tls_cert", long = "tls-cert", value_name = "FILE")]
    pub cert: Option<PathBuf>,
    /// mTLS: the client certificate's private key (PEM), with --tls-cert.
    #[arg(id = "tls_key", long = "tls-key", value_name = "FILE")]
    pub key: Option<PathBuf>,
    /// The name to send (SNI) and to find in the server's certificate
    /// [default: the target's host; an IP address matches an IP SAN].
    #[arg(id = "tls_server_name", long = "tls-server-name", value_name = "NAME")]
    pub server_name: Option<String>,
}

impl TlsFlags {
    /// Whether any flag is given (then the client speaks TLS).
    pub fn any(&self) -> bool {
        self.ca.is_some() || self.cert.is_some() || self.key.is_some() || self.server_name.is_some()
    }
}

/// Why the client's TLS settings cannot work. Each message names the flag,
/// and the file when there is one.
#[derive(Debug, thiserror::Error)]
pub enum ClientTlsError {
    /// TLS was asked for without a CA to trust.
    #[error(
        "TLS needs --tls-ca FILE: the CA certificate(s) that signed the server's certificate \
         (no system roots are trusted)"
    )]
    NoCa,
    /// One of `--tls-cert` and `--tls-key` without the other.
    #[error(
        "--{given} {} without --{missing}: a client certificate needs both --tls-cert FILE and --tls-key FILE",
        .path.display()
    )]
    HalfPair {
        /// The flag given.
        given: &'static str,
        /// The flag missing.
        missing: &'static str,
        /// The file given.
        path: PathBuf,
    },
    /// A file that cannot be read.
    #[error("--{flag} {}: {reason}", .path.display())]
    Unreadable {
        /// The flag.
        flag: &'static str,
        /// The file.
        path: PathBuf,
        /// "no such file", or the system's error.
        reason: String,
    },
    /// A file without a PEM certificate (or key), with a PEM section that
    /// does not decode, or with a certificate that cannot be a CA.
    #[error("--{flag} {}: {reason}", .path.display())]
    Invalid {
        /// The flag.
        flag: &'static str,
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The client certificate and key do not go together.
    #[error("--tls-cert {} with --tls-key {}: {reason}", .cert.display(), .key.display())]
    Pair {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The name to verify is neither a DNS name nor an IP address.
    #[error("{0}")]
    ServerName(String),
    /// rustls refused the configuration.
    #[error("TLS settings: {0}")]
    Config(#[from] rustls::Error),
}

/// A checked client TLS configuration: the trusted CA, the optional client
/// certificate, the ALPN protocols and the server name. Cheap to clone.
#[derive(Clone)]
pub struct ClientTls {
    connector: TlsConnector,
    server_name: ServerName<'static>,
}

impl std::fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientTls")
            .field("server_name", &self.server_name)
            .finish_non_exhaustive()
    }
}

impl ClientTls {
    /// Reads and checks the files `flags` name; `alpn` is what the caller
    /// speaks ([`ALPN_H2`], [`ALPN_HTTP1`]); `host` is the target's host,
    /// the server name unless `--tls-server-name` says otherwise.
    pub fn new(flags: &TlsFlags, alpn: &[&[u8]], host: &str) -> Result<ClientTls, ClientTlsError> {
        let server_name = server_name(flags.server_name.as_deref(), host)?;
        let identity = match (&flags.cert, &flags.key) {
            (Some(cert), Some(key)) => Some((cert, key)),
            (Some(cert), None) => return Err(half_pair("tls-cert", "tls-key", cert)),
            (None, Some(key)) => return Err(half_pair("tls-key", "tls-cert", key)),
            (None, None) => None,
        };
        let ca = flags.ca.as_deref().ok_or(ClientTlsError::NoCa)?;
        let builder =
            ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()?
                .with_root_certificates(roots(ca)?);
        let mut config = match identity {
            Some((cert, key)) => {
                let chain = certificates("tls-cert", cert)?;
                builder
                    .with_client_auth_cert(chain, private_key(key)?)
                    .map_err(|e| pair_error(cert, key, &e))?
            }
            None => builder.with_no_client_auth(),
        };
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Ok(ClientTls {
            connector: TlsConnector::from(Arc::new(config)),
            server_name,
        })
    }

    /// The name the server's certificate must hold.
    pub fn server_name(&self) -> String {
        self.server_name.to_str().into_owned()
    }

    /// Runs the handshake on `tcp`: the server's certificate is checked
    /// against the CA and the server name; the client's is presented if
    /// there is one.
    pub async fn connect(&self, tcp: TcpStream) -> std::io::Result<TlsStream<TcpStream>> {
        self.connector.connect(self.server_name.clone(), tcp).await
    }
}

/// The host of `host:port` (`[v6]:port` gives `v6`), or `authority` whole
/// if it has no port.
pub fn host_of(authority: &str) -> &str {
    let host = match authority.rsplit_once(':') {
        // A bare IPv6 address has colons but no brackets: no port.
        Some((host, port))
            if port.bytes().all(|b| b.is_ascii_digit())
                && (!host.contains(':') || host.ends_with(']')) =>
        {
            host
        }
        _ => authority,
    };
    host.trim_start_matches('[').trim_end_matches(']')
}

fn server_name(flag: Option<&str>, host: &str) -> Result<ServerName<'static>, ClientTlsError> {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let (name, what) = match flag {
        Some(name) => (name, format!("--tls-server-name {name}")),
        None => (
            host,
            format!("the target's host {host:?} (give --tls-server-name NAME)"),
        ),
    };
    ServerName::try_from(name.to_owned())
        .map_err(|_| ClientTlsError::ServerName(format!("{what}: not a DNS name or an IP address")))
}

fn half_pair(given: &'static str, missing: &'static str, path: &Path) -> ClientTlsError {
    ClientTlsError::HalfPair {
        given,
        missing,
        path: path.to_owned(),
    }
}

fn read(flag: &'static str, path: &Path) -> Result<Vec<u8>, ClientTlsError> {
    std::fs::read(path).map_err(|e| ClientTlsError::Unreadable {
        flag,
        path: path.to_owned(),
        reason: match e.kind() {
            std::io::ErrorKind::NotFound => "no such file".to_owned(),
            std::io::ErrorKind::IsADirectory => "a directory, not a file".to_owned(),
            _ => format!("cannot read: {e}"),
        },
    })
}

fn invalid(flag: &'static str, path: &Path, reason: String) -> ClientTlsError {
    ClientTlsError::Invalid {
        flag,
        path: path.to_owned(),
        reason,
    }
}

/// Every PEM certificate in `path` (at least one), parsed as the
/// listeners' files are ([`super::files`]).
fn certificates(
    flag: &'static str,
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, ClientTlsError> {
    files::certificates(&read(flag, path)?).map_err(|reason| invalid(flag, path, reason))
}

/// The trust store: every certificate in the CA file.
fn roots(path: &Path) -> Result<RootCertStore, ClientTlsError> {
    files::roots(&read("tls-ca", path)?).map_err(|reason| invalid("tls-ca", path, reason))
}

fn private_key(path: &Path) -> Result<PrivateKeyDer<'static>, ClientTlsError> {
    files::private_key(&read("tls-key", path)?).map_err(|reason| invalid("tls-key", path, reason))
}

fn pair_error(cert: &Path, key: &Path, e: &rustls::Error) -> ClientTlsError {
    let reason = match e {
        rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch) => {
            "the key does not match the certificate".to_owned()
        }
        e => e.to_string(),
    };
    ClientTlsError::Pair {
        cert: cert.to_owned(),
        key: key.to_owned(),
        reason,
    }
}

/// Test certificates (rcgen) and a tiny TLS server, shared by the tests of
/// the clients that use this module.
#[cfg(test)]
pub(crate) mod testing {
    use std::path::{Path, PathBuf};
    use std::sync::Arc;

    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
        KeyPair, KeyUsagePurpose,
    };
    use rustls::RootCertStore;
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    use rustls::server::WebPkiClientVerifier;
    use tokio_rustls::TlsAcceptor;

    use super::TlsFlags;

    /// A CA, a server certificate for `127.0.0.1` and `localhost`, a client
    /// certificate (`bench.client`) from that CA, and a client certificate
    /// from another CA, as files in a temporary directory.
    pub(crate) struct Pki {
        pub(crate) dir: tempfile::TempDir,
    }

    fn ca(name: &str) -> (String, Issuer<'static, KeyPair>) {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate().unwrap();
        let pem = params.self_signed(&key).unwrap().pem();
        (pem, Issuer::new(params, key))
    }

    fn leaf(
        sans: &[&str],
        usage: ExtendedKeyUsagePurpose,
        issuer: &Issuer<'static, KeyPair>,
    ) -> (String, String) {
        let sans: Vec<String> = sans.iter().map(|s| (*s).to_owned()).collect();
        let mut params = CertificateParams::new(sans).unwrap();
        params.extended_key_usages = vec![usage];
        let key = KeyPair::generate().unwrap();
        let pem = params.signed_by(&key, issuer).unwrap().pem();
        (pem, key.serialize_pem())
    }

    impl Pki {
        pub(crate) fn new() -> Pki {
            let dir = tempfile::tempdir().unwrap();
            let write =
                |name: &str, text: &str| std::fs::write(dir.path().join(name), text).unwrap();
            let (ca_pem, issuer) = ca("test CA");
            let (other_pem, other) = ca("other CA");
            write("ca.pem", &ca_pem);
            write("other-ca.pem", &other_pem);
            for (name, sans, usage, issuer) in [
                (
                    "server",
                    &["127.0.0.1", "localhost"][..],
                    ExtendedKeyUsagePurpose::ServerAuth,
                    &issuer,
                ),
                (
                    "client",
                    &["bench.client"][..],
                    ExtendedKeyUsagePurpose::ClientAuth,
                    &issuer,
                ),
                (
                    "stranger",
                    &["stranger.client"][..],
                    ExtendedKeyUsagePurpose::ClientAuth,
                    &other,
                ),
            ] {
                let (cert, key) = leaf(sans, usage, issuer);
                write(&format!("{name}.pem"), &cert);
                write(&format!("{name}.key"), &key);
            }
            Pki { dir }
        }

        pub(crate) fn path(&self, name: &str) -> PathBuf {
            self.dir.path().join(name)
        }

        /// Flags trusting the CA, with `client` (e.g. `client`,
        /// `stranger`) as the client certificate if given.
        pub(crate) fn flags(&self, client: Option<&str>) -> TlsFlags {
            TlsFlags {
                ca: Some(self.path("ca.pem")),
                cert: client.map(|c| self.path(&format!("{c}.pem"))),
                key: client.map(|c| self.path(&format!("{c}.key"))),
                server_name: None,
            }
        }

        /// A server with the server certificate, speaking `alpn`; with
        /// `client_ca`, it requires a client certificate from the CA.
        pub(crate) fn acceptor(&self, alpn: &[&[u8]], client_ca: bool) -> TlsAcceptor {
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
                .with_safe_default_protocol_versions()
                .unwrap();
            let builder = if client_ca {
                let mut roots = RootCertStore::empty();
                roots
                    .add(CertificateDer::from_pem_file(self.path("ca.pem")).unwrap())
                    .unwrap();
                let verifier =
                    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                        .build()
                        .unwrap();
                builder.with_client_cert_verifier(verifier)
            } else {
                builder.with_no_client_auth()
            };
            let mut config = builder
                .with_single_cert(
                    certs(&self.path("server.pem")),
                    PrivateKeyDer::from_pem_file(self.path("server.key")).unwrap(),
                )
                .unwrap();
            config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
            TlsAcceptor::from(Arc::new(config))
        }
    }

    fn certs(path: &Path) -> Vec<CertificateDer<'static>> {
        CertificateDer::pem_file_iter(path)
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    }

    /// The DNS names of the client certificate a server connection saw.
    pub(crate) fn peer_names(
        stream: &tokio_rustls::server::TlsStream<tokio::net::TcpStream>,
    ) -> Vec<String> {
        let Some(chain) = stream.get_ref().1.peer_certificates() else {
            return Vec::new();
        };
        let (_, cert) = x509_parser::parse_x509_certificate(&chain[0]).unwrap();
        cert.subject_alternative_name()
            .unwrap()
            .map(|san| {
                san.value
                    .general_names
                    .iter()
                    .map(|n| n.to_string())
                    .collect()
            })
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::testing::Pki;
    use super::*;

    fn error(flags: &TlsFlags) -> String {
        ClientTls::new(flags, &[ALPN_H2], "127.0.0.1")
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn the_ca_alone_and_the_ca_with_a_client_certificate_are_accepted() {
        let pki = Pki::new();
        let tls = ClientTls::new(&pki.flags(None), &[ALPN_H2], "127.0.0.1").unwrap();
        assert_eq!(tls.server_name(), "127.0.0.1");
        let tls = ClientTls::new(&pki.flags(Some("client")), &[ALPN_HTTP1], "[::1]").unwrap();
        assert_eq!(tls.server_name(), "::1");
        let named = TlsFlags {
            server_name: Some("localhost".into()),
            ..pki.flags(None)
        };
        let tls = ClientTls::new(&named, &[ALPN_H2], "10.0.0.1").unwrap();
        assert_eq!(tls.server_name(), "localhost", "the flag wins");
    }

    #[test]
    fn tls_without_a_ca_says_so() {
        let pki = Pki::new();
        let flags = TlsFlags {
            ca: None,
            ..pki.flags(Some("client"))
        };
        assert_eq!(
            error(&flags),
            "TLS needs --tls-ca FILE: the CA certificate(s) that signed the server's certificate \
             (no system roots are trusted)"
        );
    }

    #[test]
    fn a_certificate_without_its_key_names_both_flags() {
        let pki = Pki::new();
        let cert = pki.path("client.pem");
        let key = pki.path("client.key");
        let flags = TlsFlags {
            key: None,
            ..pki.flags(Some("client"))
        };
        assert_eq!(
            error(&flags),
            format!(
                "--tls-cert {} without --tls-key: a client certificate needs both --tls-cert FILE and --tls-key FILE",
                cert.display()
            )
        );
        let flags = TlsFlags {
            cert: None,
            ..pki.flags(Some("client"))
        };
        assert_eq!(
            error(&flags),
            format!(
                "--tls-key {} without --tls-cert: a client certificate needs both --tls-cert FILE and --tls-key FILE",
                key.display()
            )
        );
    }

    #[test]
    fn a_missing_file_is_named_with_its_flag() {
        let pki = Pki::new();
        let gone = pki.path("gone.pem");
        for (flags, flag) in [
            (
                TlsFlags {
                    ca: Some(gone.clone()),
                    ..pki.flags(None)
                },
                "tls-ca",
            ),
            (
                TlsFlags {
                    cert: Some(gone.clone()),
                    ..pki.flags(Some("client"))
                },
                "tls-cert",
            ),
            (
                TlsFlags {
                    key: Some(gone.clone()),
                    ..pki.flags(Some("client"))
                },
                "tls-key",
            ),
        ] {
            assert_eq!(
                error(&flags),
                format!("--{flag} {}: no such file", gone.display())
            );
        }
        let dir = TlsFlags {
            ca: Some(pki.dir.path().to_owned()),
            ..pki.flags(None)
        };
        assert_eq!(
            error(&dir),
            format!(
                "--tls-ca {}: a directory, not a file",
                pki.dir.path().display()
            )
        );
    }

    #[test]
    fn a_file_without_a_pem_certificate_or_key_says_which() {
        let pki = Pki::new();
        let text = pki.path("notes.txt");
        std::fs::write(&text, "not a certificate\n").unwrap();
        let ca = TlsFlags {
            ca: Some(text.clone()),
            ..pki.flags(None)
        };
        assert_eq!(
            error(&ca),
            format!(
                "--tls-ca {}: holds no PEM certificate (-----BEGIN CERTIFICATE-----)",
                text.display()
            )
        );
        // A key where the certificate should be: PEM, but no certificate.
        let cert = TlsFlags {
            cert: Some(pki.path("client.key")),
            ..pki.flags(Some("client"))
        };
        assert_eq!(
            error(&cert),
            format!(
                "--tls-cert {}: holds no PEM certificate (-----BEGIN CERTIFICATE-----)",
                pki.path("client.key").display()
            )
        );
        // And a certificate where the key should be.
        let key = TlsFlags {
            key: Some(pki.path("client.pem")),
            ..pki.flags(Some("client"))
        };
        assert_eq!(
            error(&key),
            format!(
                "--tls-key {}: holds no PEM private key (-----BEGIN PRIVATE KEY-----, RSA PRIVATE KEY or EC PRIVATE KEY)",
                pki.path("client.pem").display()
            )
        );
        let broken = pki.path("broken.pem");
        std::fs::write(&broken, "-----BEGIN CERTIFICATE-----\n@@@\n").unwrap();
        let ca = TlsFlags {
            ca: Some(broken.clone()),
            ..pki.flags(None)
        };
        let e = error(&ca);
        assert!(
            e.starts_with(&format!("--tls-ca {}: is not PEM: ", broken.display())),
            "{e}"
        );
    }

    #[test]
    fn a_key_that_does_not_match_the_certificate_is_refused() {
        let pki = Pki::new();
        let flags = TlsFlags {
            key: Some(pki.path("stranger.key")),
            ..pki.flags(Some("client"))
        };
        assert_eq!(
            error(&flags),
            format!(
                "--tls-cert {} with --tls-key {}: the key does not match the certificate",
                pki.path("client.pem").display(),
                pki.path("stranger.key").display()
            )
        );
    }

    #[test]
    fn a_server_name_that_is_no_name_is_refused() {
        let pki = Pki::new();
        let flags = TlsFlags {
            server_name: Some("not a name".into()),
            ..pki.flags(None)
        };
        assert_eq!(
            error(&flags),
            "--tls-server-name not a name: not a DNS name or an IP address"
        );
        let e = ClientTls::new(&pki.flags(None), &[ALPN_H2], "bad host!")
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "the target's host \"bad host!\" (give --tls-server-name NAME): not a DNS name or an IP address"
        );
    }

    #[test]
    fn hosts_come_out_of_authorities() {
        assert_eq!(host_of("127.0.0.1:8081"), "127.0.0.1");
        assert_eq!(host_of("floodgate.infra:6070"), "floodgate.infra");
        assert_eq!(host_of("[::1]:6070"), "::1");
        assert_eq!(host_of("localhost"), "localhost");
        assert_eq!(host_of("::1"), "::1");
    }

    #[tokio::test]
    async fn the_handshake_checks_the_server_and_presents_the_client_certificate() {
        let pki = Pki::new();
        let acceptor = pki.acceptor(&[ALPN_H2], true);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.unwrap();
            let tls = acceptor.accept(tcp).await.unwrap();
            super::testing::peer_names(&tls)
        });
        let tls = ClientTls::new(&pki.flags(Some("client")), &[ALPN_H2], "127.0.0.1").unwrap();
        let stream = tls
            .connect(TcpStream::connect(addr).await.unwrap())
            .await
            .unwrap();
        assert_eq!(stream.get_ref().1.alpn_protocol(), Some(ALPN_H2));
        assert_eq!(server.await.unwrap(), vec!["DNSName(bench.client)"]);

        // A server whose certificate the CA did not sign: refused.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let acceptor = pki.acceptor(&[ALPN_H2], false);
        tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.unwrap();
            let _ = acceptor.accept(tcp).await;
        });
        let other = TlsFlags {
            ca: Some(pki.path("other-ca.pem")),
            ..pki.flags(None)
        };
        let tls = ClientTls::new(&other, &[ALPN_H2], "127.0.0.1").unwrap();
        let e = tls
            .connect(TcpStream::connect(addr).await.unwrap())
            .await
            .unwrap_err();
        assert!(e.to_string().contains("UnknownIssuer"), "{e}");
    }
}
