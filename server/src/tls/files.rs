//! A listener's TLS files, read and checked: the certificate chain and its
//! key (which must match, and whose certificate must be valid now), and the
//! optional client CA bundle. [`Material::load`] is what startup and every
//! reload run, so a file that startup would refuse is refused on reload
//! too; each error names the setting, the file and what is wrong.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use rustls::RootCertStore;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;

/// Whether a listener with a client CA turns away clients without a
/// certificate (`L_tls_client_auth`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ClientAuth {
    /// A client must present a certificate the CA signed.
    #[default]
    Require,
    /// A client may connect without one; a certificate it presents must
    /// still be one the CA signed (and, with an allow-list, be on it).
    Optional,
}

impl ClientAuth {
    /// `require` or `optional`, any case.
    pub fn parse(text: &str) -> Option<ClientAuth> {
        match text.to_ascii_lowercase().as_str() {
            "require" => Some(ClientAuth::Require),
            "optional" => Some(ClientAuth::Optional),
            _ => None,
        }
    }

    /// The name in the settings.
    pub fn as_str(self) -> &'static str {
        match self {
            ClientAuth::Require => "require",
            ClientAuth::Optional => "optional",
        }
    }
}

/// Which client certificates a listener takes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientCerts {
    /// The CA bundle client certificates must chain to.
    pub ca_file: PathBuf,
    /// Whether a client must present one.
    pub auth: ClientAuth,
    /// Identities (SAN DNS names or URIs) allowed in; empty: any.
    pub names: Vec<String>,
}

/// One listener's TLS settings, checked for completeness (the files are
/// read by [`Material::load`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListenerTls {
    /// `grpc`, `http` or `admin`: the settings' prefix, and the metrics'
    /// `listener` label.
    pub listener: &'static str,
    /// The certificate chain, leaf first (PEM).
    pub cert_file: PathBuf,
    /// The leaf's private key (PEM: PKCS#8, PKCS#1 or SEC1).
    pub key_file: PathBuf,
    /// Client certificates (mTLS), if asked for.
    pub client: Option<ClientCerts>,
}

impl ListenerTls {
    /// Whether every client must present a certificate the CA signed.
    pub fn requires_client_certificates(&self) -> bool {
        self.client
            .as_ref()
            .is_some_and(|c| c.auth == ClientAuth::Require)
    }
}

/// A TLS file that cannot be used: the setting, the file, what is wrong.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid setting {setting} = {path:?}: {reason}")]
pub struct TlsFileError {
    /// The setting naming the file, e.g. `grpc_tls_cert_file`.
    pub setting: &'static str,
    /// The file.
    pub path: PathBuf,
    /// What is wrong with it.
    pub reason: String,
}

/// The setting of a listener's TLS `part`: `cert`, `key` or `client_ca`
/// (its files), `auth` or `names` (its client settings).
pub fn setting(listener: &str, part: &str) -> &'static str {
    const PARTS: [&str; 5] = ["cert", "key", "client_ca", "auth", "names"];
    const SETTINGS: [[&str; 5]; 3] = [
        [
            "grpc_tls_cert_file",
            "grpc_tls_key_file",
            "grpc_tls_client_ca_file",
            "grpc_tls_client_auth",
            "grpc_tls_client_names",
        ],
        [
            "http_tls_cert_file",
            "http_tls_key_file",
            "http_tls_client_ca_file",
            "http_tls_client_auth",
            "http_tls_client_names",
        ],
        [
            "admin_tls_cert_file",
            "admin_tls_key_file",
            "admin_tls_client_ca_file",
            "admin_tls_client_auth",
            "admin_tls_client_names",
        ],
    ];
    let row = match listener {
        "grpc" => 0,
        "http" => 1,
        _ => 2,
    };
    let column = PARTS.iter().position(|p| *p == part).unwrap_or(2);
    SETTINGS[row][column]
}

/// The bytes of a listener's files, as last read: a reload that reads the
/// same bytes has nothing to do.
pub type Contents = [Vec<u8>; 3];

/// A listener's files, read, parsed and checked.
#[derive(Debug)]
pub struct Material {
    /// The chain and its signing key, which match.
    pub key: Arc<CertifiedKey>,
    /// The client CA's certificates, if asked for.
    pub client_roots: Option<Arc<RootCertStore>>,
    /// The leaf certificate's serial number, in hex (for the logs).
    pub serial: String,
    /// When the leaf certificate expires, in seconds since the Unix epoch.
    pub not_after: i64,
}

impl Material {
    /// Reads the files of `tls`.
    pub fn read(tls: &ListenerTls) -> Result<Contents, TlsFileError> {
        let part = |p| setting(tls.listener, p);
        Ok([
            read(part("cert"), &tls.cert_file)?,
            read(part("key"), &tls.key_file)?,
            match &tls.client {
                Some(c) => read(part("client_ca"), &c.ca_file)?,
                None => Vec::new(),
            },
        ])
    }

    /// Reads and checks the files of `tls`, as of `now`.
    pub fn load(
        tls: &ListenerTls,
        provider: &CryptoProvider,
        now: SystemTime,
    ) -> Result<Material, TlsFileError> {
        Material::parse(tls, &Material::read(tls)?, provider, now)
    }

    /// Checks `contents`, read from the files of `tls`, as of `now`.
    pub fn parse(
        tls: &ListenerTls,
        contents: &Contents,
        provider: &CryptoProvider,
        now: SystemTime,
    ) -> Result<Material, TlsFileError> {
        let error = |part: &str, path: &Path, reason: String| TlsFileError {
            setting: setting(tls.listener, part),
            path: path.to_owned(),
            reason,
        };
        let [cert_pem, key_pem, ca_pem] = contents;
        let chain = certificates(cert_pem).map_err(|r| error("cert", &tls.cert_file, r))?;
        let leaf = Leaf::of(&chain[0]).map_err(|r| error("cert", &tls.cert_file, r))?;
        leaf.valid_at(now)
            .map_err(|r| error("cert", &tls.cert_file, r))?;
        let key = private_key(key_pem).map_err(|r| error("key", &tls.key_file, r))?;
        let key = CertifiedKey::from_der(chain, key, provider).map_err(|e| {
            let reason = match e {
                rustls::Error::InconsistentKeys(_) => format!(
                    "does not match the certificate in {} = {:?}",
                    setting(tls.listener, "cert"),
                    tls.cert_file
                ),
                e => format!("cannot use this private key: {e}"),
            };
            error("key", &tls.key_file, reason)
        })?;
        let client_roots = match &tls.client {
            Some(c) => Some(Arc::new(
                roots(ca_pem).map_err(|r| error("client_ca", &c.ca_file, r))?,
            )),
            None => None,
        };
        Ok(Material {
            key: Arc::new(key),
            client_roots,
            serial: leaf.serial,
            not_after: leaf.not_after,
        })
    }
}

/// A file's bytes; "no such file" and other read errors said plainly.
fn read(setting: &'static str, path: &Path) -> Result<Vec<u8>, TlsFileError> {
    std::fs::read(path).map_err(|e| TlsFileError {
        setting,
        path: path.to_owned(),
        reason: match e.kind() {
            std::io::ErrorKind::NotFound => "no such file".to_owned(),
            _ => format!("cannot read it: {e}"),
        },
    })
}

/// Every PEM certificate in `pem`, at least one.
pub(super) fn certificates(text: &[u8]) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_slice_iter(text)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("is not PEM: {e}"))?;
    if certs.is_empty() {
        return Err("holds no PEM certificate (-----BEGIN CERTIFICATE-----)".to_owned());
    }
    Ok(certs)
}

/// The first PEM private key in `pem`.
pub(super) fn private_key(text: &[u8]) -> Result<PrivateKeyDer<'static>, String> {
    PrivateKeyDer::from_pem_slice(text).map_err(|e| match e {
        pem::Error::NoItemsFound => "holds no PEM private key (-----BEGIN PRIVATE KEY-----, \
                                     RSA PRIVATE KEY or EC PRIVATE KEY)"
            .to_owned(),
        e => format!("is not PEM: {e}"),
    })
}

/// A CA bundle: at least one certificate, each usable as a trust anchor.
pub(super) fn roots(text: &[u8]) -> Result<RootCertStore, String> {
    let mut roots = RootCertStore::empty();
    for cert in certificates(text)? {
        roots
            .add(cert)
            .map_err(|e| format!("holds a certificate that cannot be a CA: {e}"))?;
    }
    Ok(roots)
}

/// What the logs and checks need of a leaf certificate.
struct Leaf {
    serial: String,
    not_before: i64,
    not_after: i64,
}

impl Leaf {
    fn of(der: &CertificateDer<'_>) -> Result<Leaf, String> {
        let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref())
            .map_err(|e| format!("holds a certificate that cannot be parsed: {e}"))?;
        let validity = cert.validity();
        Ok(Leaf {
            serial: cert.raw_serial_as_string().replace(':', ""),
            not_before: validity.not_before.timestamp(),
            not_after: validity.not_after.timestamp(),
        })
    }

    /// The certificate is valid at `now` (to the second).
    fn valid_at(&self, now: SystemTime) -> Result<(), String> {
        let now = now
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
        if now > self.not_after {
            return Err(format!(
                "the certificate (serial {}) expired at {}",
                self.serial,
                rfc3339(self.not_after)
            ));
        }
        if now < self.not_before {
            return Err(format!(
                "the certificate (serial {}) is not valid before {}",
                self.serial,
                rfc3339(self.not_before)
            ));
        }
        Ok(())
    }
}

/// `2026-12-02T15:04:05Z`, from seconds since the Unix epoch.
pub fn rfc3339(unix: i64) -> String {
    match x509_parser::time::ASN1Time::from_timestamp(unix) {
        Ok(t) => {
            let t = t.to_datetime();
            format!(
                "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
                t.year(),
                u8::from(t.month()),
                t.day(),
                t.hour(),
                t.minute(),
                t.second()
            )
        }
        Err(_) => format!("{unix} (Unix time)"),
    }
}
