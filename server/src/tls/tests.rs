//! TLS files, handshakes, identities and reloads, against certificates
//! rcgen makes for each test.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType, SerialNumber,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::files::{ClientAuth, ClientCerts, ListenerTls};
use super::server::{Failure, Reloaded, ServerTls};
use crate::config::{Config, Settings};

/// A CA, and leaf certificates it (or an unrelated CA) signs, as PEM files
/// in a temporary directory.
struct Pki {
    dir: tempfile::TempDir,
    ca: Issuer<'static, KeyPair>,
    other: Issuer<'static, KeyPair>,
}

fn new_ca(name: &str) -> (Issuer<'static, KeyPair>, String) {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let key = KeyPair::generate().unwrap();
    let pem = params.self_signed(&key).unwrap().pem();
    (Issuer::new(params, key), pem)
}

/// How a leaf certificate differs from a fresh server certificate.
#[derive(Default)]
struct Leaf<'a> {
    serial: u64,
    client: bool,
    uri: Option<&'a str>,
    expired: bool,
    untrusted: bool,
}

impl Pki {
    fn new() -> Pki {
        let dir = tempfile::tempdir().unwrap();
        let (ca, pem) = new_ca("Floodgate test CA");
        std::fs::write(dir.path().join("ca.pem"), pem).unwrap();
        let (other, pem) = new_ca("Unrelated CA");
        std::fs::write(dir.path().join("other-ca.pem"), pem).unwrap();
        Pki { dir, ca, other }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Writes `NAME.pem` and `NAME.key`; returns their paths.
    fn leaf(&self, name: &str, leaf: &Leaf<'_>) -> (PathBuf, PathBuf) {
        let mut params =
            CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params.serial_number = Some(SerialNumber::from(leaf.serial.max(1)));
        if let Some(uri) = leaf.uri {
            params
                .subject_alt_names
                .push(SanType::URI(uri.try_into().unwrap()));
        }
        params.extended_key_usages = vec![if leaf.client {
            ExtendedKeyUsagePurpose::ClientAuth
        } else {
            ExtendedKeyUsagePurpose::ServerAuth
        }];
        if leaf.expired {
            params.not_before = rcgen::date_time_ymd(2020, 1, 1);
            params.not_after = rcgen::date_time_ymd(2021, 1, 1);
        }
        let key = KeyPair::generate().unwrap();
        let issuer = if leaf.untrusted {
            &self.other
        } else {
            &self.ca
        };
        let cert = params.signed_by(&key, issuer).unwrap();
        let (pem, key_file) = (
            self.path(&format!("{name}.pem")),
            self.path(&format!("{name}.key")),
        );
        std::fs::write(&pem, cert.pem()).unwrap();
        std::fs::write(&key_file, key.serialize_pem()).unwrap();
        (pem, key_file)
    }

    fn server(&self, serial: u64) -> ListenerTls {
        let (cert_file, key_file) = self.leaf(
            &format!("server-{serial}"),
            &Leaf {
                serial,
                ..Leaf::default()
            },
        );
        ListenerTls {
            listener: "grpc",
            cert_file,
            key_file,
            client: None,
        }
    }

    fn mtls(&self, auth: ClientAuth, names: &[&str]) -> ListenerTls {
        ListenerTls {
            client: Some(ClientCerts {
                ca_file: self.path("ca.pem"),
                auth,
                names: names.iter().map(|n| (*n).to_owned()).collect(),
            }),
            ..self.server(1)
        }
    }
}

/// A rustls client trusting the test CA, presenting `identity` if given.
fn client(pki: &Pki, identity: Option<(PathBuf, PathBuf)>) -> tokio_rustls::TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_file(pki.path("ca.pem")).unwrap())
        .unwrap();
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots);
    let mut config = match identity {
        Some((cert, key)) => builder
            .with_client_auth_cert(
                vec![CertificateDer::from_pem_file(cert).unwrap()],
                PrivateKeyDer::from_pem_file(key).unwrap(),
            )
            .unwrap(),
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"h2".to_vec()];
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

/// One connection through `tls`: the client writes a byte that the server
/// echoes back. `Ok`: the serial of the certificate the client saw and the
/// ALPN protocol; `Err`: the handshake failed on the server's side.
async fn connect(
    tls: &Arc<ServerTls>,
    connector: tokio_rustls::TlsConnector,
) -> Result<(String, Option<Vec<u8>>), ()> {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = {
        let tls = tls.clone();
        tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.unwrap();
            let mut stream = tls.accept(tcp, Duration::from_secs(5)).await?;
            let mut byte = [0u8; 1];
            stream.read_exact(&mut byte).await.ok()?;
            stream.write_all(&byte).await.ok()?;
            stream.flush().await.ok()
        })
    };
    let tcp = TcpStream::connect(addr).await.unwrap();
    let name = ServerName::try_from("localhost").unwrap();
    let client = async {
        let mut stream = connector.connect(name, tcp).await.ok()?;
        stream.write_all(b"x").await.ok()?;
        let mut byte = [0u8; 1];
        stream.read_exact(&mut byte).await.ok()?;
        let (_, session) = stream.get_ref();
        let leaf = session.peer_certificates()?.first()?.clone();
        let (_, cert) = x509_parser::parse_x509_certificate(leaf.as_ref()).ok()?;
        Some((
            cert.raw_serial_as_string(),
            session.alpn_protocol().map(<[u8]>::to_vec),
        ))
    }
    .await;
    match (server.await.unwrap(), client) {
        (Some(()), Some(seen)) => Ok(seen),
        _ => Err(()),
    }
}

fn settings_error(s: Settings) -> String {
    Config::try_from(s).unwrap_err().to_string()
}

fn with_grpc_tls(cert: &Path, key: &Path, ca: Option<&Path>) -> Settings {
    Settings {
        grpc_tls_cert_file: Some(cert.to_owned()),
        grpc_tls_key_file: Some(key.to_owned()),
        grpc_tls_client_ca_file: ca.map(Path::to_owned),
        ..Settings::default()
    }
}

#[test]
fn a_missing_file_is_named_at_startup() {
    let pki = Pki::new();
    let (_, key) = pki.leaf("server", &Leaf::default());
    let missing = pki.path("missing.pem");
    assert_eq!(
        settings_error(with_grpc_tls(&missing, &key, None)),
        format!("invalid setting grpc_tls_cert_file = {missing:?}: no such file")
    );
}

#[test]
fn an_unreadable_file_is_named_at_startup() {
    let pki = Pki::new();
    let (cert, _) = pki.leaf("server", &Leaf::default());
    // A directory: it exists, and cannot be read as a file (even by root,
    // which file modes do not stop).
    let dir = pki.path("");
    assert_eq!(
        settings_error(with_grpc_tls(&cert, &dir, None)),
        format!(
            "invalid setting grpc_tls_key_file = {dir:?}: cannot read it: Is a directory (os error 21)"
        )
    );
}

#[test]
fn a_key_that_does_not_match_the_certificate_is_refused_at_startup() {
    let pki = Pki::new();
    let (cert, _) = pki.leaf("server", &Leaf::default());
    let (_, other_key) = pki.leaf("other", &Leaf::default());
    assert_eq!(
        settings_error(with_grpc_tls(&cert, &other_key, None)),
        format!(
            "invalid setting grpc_tls_key_file = {other_key:?}: does not match the certificate in grpc_tls_cert_file = {cert:?}"
        )
    );
}

#[test]
fn an_expired_certificate_is_refused_at_startup() {
    let pki = Pki::new();
    let (cert, key) = pki.leaf(
        "old",
        &Leaf {
            serial: 0x2a,
            expired: true,
            ..Leaf::default()
        },
    );
    assert_eq!(
        settings_error(with_grpc_tls(&cert, &key, None)),
        format!(
            "invalid setting grpc_tls_cert_file = {cert:?}: the certificate (serial 2a) expired at 2021-01-01T00:00:00Z"
        )
    );
}

#[test]
fn a_ca_file_with_no_certificate_is_refused_at_startup() {
    let pki = Pki::new();
    let (cert, key) = pki.leaf("server", &Leaf::default());
    // A key where the CA bundle should be: PEM, but no certificate.
    assert_eq!(
        settings_error(with_grpc_tls(&cert, &key, Some(&key))),
        format!(
            "invalid setting grpc_tls_client_ca_file = {key:?}: holds no PEM certificate (-----BEGIN CERTIFICATE-----)"
        )
    );
}

#[test]
fn text_that_is_not_pem_is_refused_at_startup() {
    let pki = Pki::new();
    let (cert, _) = pki.leaf("server", &Leaf::default());
    let text = pki.path("text.key");
    std::fs::write(&text, "not a key\n").unwrap();
    assert_eq!(
        settings_error(with_grpc_tls(&cert, &text, None)),
        format!(
            "invalid setting grpc_tls_key_file = {text:?}: holds no PEM private key (-----BEGIN PRIVATE KEY-----, RSA PRIVATE KEY or EC PRIVATE KEY)"
        )
    );
}

#[test]
fn incomplete_tls_settings_say_what_goes_with_what() {
    let pki = Pki::new();
    let (cert, _) = pki.leaf("server", &Leaf::default());
    let only_cert = Settings {
        http_tls_cert_file: Some(cert.clone()),
        ..Settings::default()
    };
    assert_eq!(
        settings_error(only_cert),
        "invalid setting http_tls_key_file = \"\": http_tls_cert_file and http_tls_key_file go together"
    );
    let ca_alone = Settings {
        admin_tls_client_ca_file: Some(pki.path("ca.pem")),
        ..Settings::default()
    };
    assert!(settings_error(ca_alone).contains(
        "client certificates need TLS: set admin_tls_cert_file and admin_tls_key_file too"
    ),);
    let names_alone = Settings {
        grpc_tls_client_names: "spiffe://a".into(),
        ..Settings::default()
    };
    assert_eq!(
        settings_error(names_alone),
        "invalid setting grpc_tls_client_names = \"spiffe://a\": needs grpc_tls_client_ca_file: identities are read from verified client certificates"
    );
}

#[test]
fn the_admin_listener_off_loopback_takes_required_client_certificates_instead_of_a_token() {
    let pki = Pki::new();
    let (cert, key) = pki.leaf("server", &Leaf::default());
    let admin = |auth| Settings {
        admin_addr: "0.0.0.0:6070".into(),
        admin_tls_cert_file: Some(cert.clone()),
        admin_tls_key_file: Some(key.clone()),
        admin_tls_client_ca_file: Some(pki.path("ca.pem")),
        admin_tls_client_auth: auth,
        ..Settings::default()
    };
    assert!(Config::try_from(admin(ClientAuth::Require)).is_ok());
    let e = settings_error(admin(ClientAuth::Optional));
    assert!(e.contains("is not a loopback address"), "{e}");
}

#[tokio::test]
async fn a_handshake_serves_the_certificate_with_alpn_h2() {
    let pki = Pki::new();
    let tls = Arc::new(ServerTls::new(pki.server(7), super::GRPC_ALPN).unwrap());
    let (serial, alpn) = connect(&tls, client(&pki, None)).await.unwrap();
    assert_eq!(serial, "07");
    assert_eq!(alpn.as_deref(), Some(&b"h2"[..]));
}

#[tokio::test]
async fn required_client_certificates_turn_away_clients_without_one_or_with_an_untrusted_one() {
    let pki = Pki::new();
    let tls =
        Arc::new(ServerTls::new(pki.mtls(ClientAuth::Require, &[]), super::GRPC_ALPN).unwrap());
    assert!(connect(&tls, client(&pki, None)).await.is_err());
    assert_eq!(tls.failures(Failure::NoClientCertificate), 1);
    let untrusted = pki.leaf(
        "mallory",
        &Leaf {
            client: true,
            untrusted: true,
            ..Leaf::default()
        },
    );
    assert!(connect(&tls, client(&pki, Some(untrusted))).await.is_err());
    assert_eq!(tls.failures(Failure::BadClientCertificate), 1);
    let good = pki.leaf(
        "envoy",
        &Leaf {
            client: true,
            ..Leaf::default()
        },
    );
    assert!(connect(&tls, client(&pki, Some(good))).await.is_ok());
}

#[tokio::test]
async fn an_allow_list_lets_in_only_the_identities_on_it() {
    let pki = Pki::new();
    let allowed = "spiffe://cluster.local/ns/gw/sa/envoy";
    let tls = Arc::new(
        ServerTls::new(pki.mtls(ClientAuth::Require, &[allowed]), super::GRPC_ALPN).unwrap(),
    );
    let envoy = pki.leaf(
        "envoy",
        &Leaf {
            client: true,
            uri: Some(allowed),
            ..Leaf::default()
        },
    );
    assert!(connect(&tls, client(&pki, Some(envoy))).await.is_ok());
    let other = pki.leaf(
        "other",
        &Leaf {
            client: true,
            uri: Some("spiffe://cluster.local/ns/x/sa/other"),
            ..Leaf::default()
        },
    );
    assert!(connect(&tls, client(&pki, Some(other))).await.is_err());
    assert_eq!(tls.failures(Failure::ClientNotAllowed), 1);
}

#[tokio::test]
async fn optional_client_certificates_let_in_clients_without_one_but_not_untrusted_ones() {
    let pki = Pki::new();
    let tls =
        Arc::new(ServerTls::new(pki.mtls(ClientAuth::Optional, &[]), super::HTTP_ALPN).unwrap());
    assert!(connect(&tls, client(&pki, None)).await.is_ok());
    let untrusted = pki.leaf(
        "mallory",
        &Leaf {
            client: true,
            untrusted: true,
            ..Leaf::default()
        },
    );
    assert!(connect(&tls, client(&pki, Some(untrusted))).await.is_err());
    assert_eq!(tls.failures(Failure::BadClientCertificate), 1);
}

#[tokio::test(start_paused = true)]
async fn a_client_that_never_finishes_its_handshake_is_cut_at_the_deadline() {
    let pki = Pki::new();
    let tls = Arc::new(ServerTls::new(pki.server(1), super::GRPC_ALPN).unwrap());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent = TcpStream::connect(listener.local_addr().unwrap())
        .await
        .unwrap();
    let (tcp, _) = listener.accept().await.unwrap();
    let started = tokio::time::Instant::now();
    assert!(tls.accept(tcp, Duration::from_secs(5)).await.is_none());
    assert_eq!(started.elapsed(), Duration::from_secs(5));
    assert_eq!(tls.failures(Failure::Timeout), 1);
    drop(silent);
}

/// Points `link` at `target` the way Kubernetes swaps a Secret's `..data`.
fn swap(link: &Path, target: &Path) {
    let next = link.with_file_name("..data_tmp");
    std::os::unix::fs::symlink(target, &next).unwrap();
    std::fs::rename(&next, link).unwrap();
}

#[tokio::test]
async fn new_files_serve_new_connections_and_a_broken_pair_keeps_the_last_good_one() {
    let pki = Pki::new();
    let (old_cert, old_key) = pki.leaf(
        "v1",
        &Leaf {
            serial: 0x11,
            ..Leaf::default()
        },
    );
    let (new_cert, new_key) = pki.leaf(
        "v2",
        &Leaf {
            serial: 0x22,
            ..Leaf::default()
        },
    );
    // The mount: tls.crt -> ..data/tls.crt, ..data -> a versioned directory.
    let mount = pki.path("mount");
    let versions = [pki.path("v1-dir"), pki.path("v2-dir"), pki.path("bad-dir")];
    for (dir, (cert, key)) in versions.iter().zip([
        (&old_cert, &old_key),
        (&new_cert, &new_key),
        (&new_cert, &old_key),
    ]) {
        std::fs::create_dir_all(dir).unwrap();
        std::fs::copy(cert, dir.join("tls.crt")).unwrap();
        std::fs::copy(key, dir.join("tls.key")).unwrap();
    }
    std::fs::create_dir_all(&mount).unwrap();
    swap(&mount.join("..data"), &versions[0]);
    for file in ["tls.crt", "tls.key"] {
        std::os::unix::fs::symlink(Path::new("..data").join(file), mount.join(file)).unwrap();
    }
    let settings = ListenerTls {
        listener: "grpc",
        cert_file: mount.join("tls.crt"),
        key_file: mount.join("tls.key"),
        client: None,
    };
    let tls = Arc::new(ServerTls::new(settings, super::GRPC_ALPN).unwrap());
    let now = SystemTime::now();
    assert_eq!(tls.reload(now), Reloaded::Unchanged);
    assert_eq!(connect(&tls, client(&pki, None)).await.unwrap().0, "11");

    swap(&mount.join("..data"), &versions[2]);
    match tls.reload(now) {
        Reloaded::Refused(e) => assert!(e.reason.contains("does not match"), "{e}"),
        other => panic!("a mismatched pair was not refused: {other:?}"),
    }
    assert_eq!(
        tls.reload(now),
        Reloaded::Unchanged,
        "refused once, not on every check"
    );
    assert_eq!(connect(&tls, client(&pki, None)).await.unwrap().0, "11");

    swap(&mount.join("..data"), &versions[1]);
    assert_eq!(tls.reload(now), Reloaded::Replaced("22".into()));
    assert_eq!(connect(&tls, client(&pki, None)).await.unwrap().0, "22");
}
