//! Test certificates, made with rcgen at test time ([`write_test_pki`]): a
//! CA, server certificates (two serials, for rotation), client certificates
//! with SPIFFE-style identities, and an unrelated CA for the "untrusted
//! certificate" cases, and `dual` (server and client use in one, as Envoy
//! Gateway mounts it). Redis over TLS, Floodgate's listeners, Envoy and the
//! clients all use them.

use std::path::Path;

use crate::TlsRedis;

/// The serial number of `server.pem`.
pub const SERVER_SERIAL: u64 = 0x5e_01;
/// The serial number of `server-2.pem`.
pub const SERVER_2_SERIAL: u64 = 0x5e_02;
/// The identity (URI SAN) of `client.pem` and `untrusted-client.pem`.
pub const CLIENT_ID: &str = "spiffe://floodgate.test/ns/gateway/sa/envoy";
/// The identity (URI SAN) of `other-client.pem`.
pub const OTHER_CLIENT_ID: &str = "spiffe://floodgate.test/ns/other/sa/job";

/// The serial number of the certificate `der`, in hex (`5e01`).
pub fn serial_of(der: &[u8]) -> String {
    match x509_parser::parse_x509_certificate(der) {
        Ok((_, cert)) => cert.raw_serial_as_string().replace(':', ""),
        Err(e) => format!("(not a certificate: {e})"),
    }
}

/// Test certificates, generated with rcgen into `dir`:
/// `ca.pem` (+ `ca.key`), `server.pem`/`server.key` (127.0.0.1, localhost,
/// serial [`SERVER_SERIAL`], signed by the CA), `server-2.pem`/`.key` (the
/// same names, serial [`SERVER_2_SERIAL`]: the rotated certificate),
/// `client.pem`/`client.key` (URI SAN [`CLIENT_ID`], signed by the CA),
/// `other-client.pem`/`.key` (URI SAN [`OTHER_CLIENT_ID`], signed by the
/// CA), `other-ca.pem` (an unrelated CA), `untrusted-client.pem`/`.key`
/// (signed by the unrelated CA) and `dual.pem`/`dual.key` (127.0.0.1,
/// localhost, for server and client use, signed by the CA).
pub fn write_test_pki(dir: &Path) -> Result<(), rcgen::Error> {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
        KeyPair, KeyUsagePurpose, SanType, SerialNumber,
    };
    let write = |name: &str, text: String| {
        std::fs::write(dir.join(name), text).expect("write test certificate");
    };
    let ca = |file: &str, name: &str| -> Result<Issuer<'static, KeyPair>, rcgen::Error> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate()?;
        write(&format!("{file}.pem"), params.self_signed(&key)?.pem());
        write(&format!("{file}.key"), key.serialize_pem());
        Ok(Issuer::new(params, key))
    };
    let leaf = |file: &str,
                (name, serial): (&str, u64),
                sans: &[&str],
                usage: &[ExtendedKeyUsagePurpose],
                issuer: &Issuer<'static, KeyPair>|
     -> Result<(), rcgen::Error> {
        let (uris, names): (Vec<&str>, Vec<&str>) = sans.iter().partition(|s| s.contains("://"));
        let names: Vec<String> = names.iter().map(|s| (*s).to_owned()).collect();
        let mut params = CertificateParams::new(names)?;
        for uri in uris {
            params.subject_alt_names.push(SanType::URI(uri.try_into()?));
        }
        params.serial_number = Some(SerialNumber::from(serial));
        params.distinguished_name.push(DnType::CommonName, name);
        params.use_authority_key_identifier_extension = true;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = usage.to_vec();
        let key = KeyPair::generate()?;
        write(
            &format!("{file}.pem"),
            params.signed_by(&key, issuer)?.pem(),
        );
        write(&format!("{file}.key"), key.serialize_pem());
        Ok(())
    };
    let trusted = ca("ca", "Floodgate test CA")?;
    let other = ca("other-ca", "Floodgate untrusted CA")?;
    for (file, serial) in [("server", SERVER_SERIAL), ("server-2", SERVER_2_SERIAL)] {
        leaf(
            file,
            ("localhost", serial),
            &["127.0.0.1", "localhost"],
            &[ExtendedKeyUsagePurpose::ServerAuth],
            &trusted,
        )?;
    }
    for (file, id, issuer) in [
        ("client", CLIENT_ID, &trusted),
        ("other-client", OTHER_CLIENT_ID, &trusted),
        ("untrusted-client", CLIENT_ID, &other),
    ] {
        leaf(
            file,
            (TlsRedis::USER, 0x100),
            &[id],
            &[ExtendedKeyUsagePurpose::ClientAuth],
            issuer,
        )?;
    }
    // One certificate for both ends, as Envoy Gateway mounts it for its
    // rate limit deployment: the gRPC server's and the xDS client's.
    leaf(
        "dual",
        ("envoy-ratelimit", 0x5e03),
        &["127.0.0.1", "localhost"],
        &[
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ],
        &trusted,
    )?;
    Ok(())
}

/// Writes `expired.pem`/`expired.key`: a self-signed certificate for
/// localhost, serial `0x5e00`, valid only in 2020.
pub fn write_expired(dir: &Path) -> Result<(), rcgen::Error> {
    let mut params = rcgen::CertificateParams::new(vec!["localhost".to_owned()])?;
    params.serial_number = Some(rcgen::SerialNumber::from(0x5e00_u64));
    params.not_before = rcgen::date_time_ymd(2020, 1, 1);
    params.not_after = rcgen::date_time_ymd(2021, 1, 1);
    let key = rcgen::KeyPair::generate()?;
    let cert = params.self_signed(&key)?;
    std::fs::write(dir.join("expired.pem"), cert.pem()).expect("write test certificate");
    std::fs::write(dir.join("expired.key"), key.serialize_pem()).expect("write test key");
    Ok(())
}
