//! A TLS-only `redis-server` with ACL users ([`TlsRedis`]), with the test
//! certificates of [`crate::pki`]. Killed on drop.

use std::path::PathBuf;
use std::process::{Command, Stdio};

use crate::pki::write_test_pki;
use crate::redis_node::{Node, Ready, launch};

/// A TLS-only `redis-server` (`port 0`, `tls-port P`) with ACLs: the user
/// [`TlsRedis::USER`] (password [`TlsRedis::PASSWORD`], all keys, channels
/// and commands) and `requirepass` [`TlsRedis::DEFAULT_PASSWORD`] for the
/// `default` user. Its certificates are generated at start with rcgen, in a
/// temporary directory. Killed on drop.
///
/// Readiness is checked without a TLS client: the TLS port accepts TCP
/// connections and the log says "Ready to accept connections" (the listener
/// is opened before that line is written).
#[derive(Debug)]
pub struct TlsRedis {
    node: Node,
    certs: tempfile::TempDir,
    require_client_cert: bool,
}

impl TlsRedis {
    /// The ACL user.
    pub const USER: &'static str = "floodgate";
    /// The ACL user's password.
    pub const PASSWORD: &'static str = "s3cret-pw";
    /// The `default` user's password (`requirepass`).
    pub const DEFAULT_PASSWORD: &'static str = "default-pw";

    /// Generates the certificates and starts the server; with
    /// `require_client_cert`, clients must present a certificate signed by
    /// the CA (`tls-auth-clients yes`), otherwise they may
    /// (`tls-auth-clients optional`).
    pub fn start(require_client_cert: bool) -> TlsRedis {
        let certs = tempfile::Builder::new()
            .prefix("floodgate-tls-certs-")
            .tempdir()
            .expect("temp dir");
        if let Err(e) = write_test_pki(certs.path()) {
            panic!("generating test certificates failed: {e}");
        }
        let certs_dir = certs.path().to_path_buf();
        let node = launch("tls", Ready::Log, |port, dir| {
            let file = |name: &str| certs_dir.join(name).display().to_string();
            let text = format!(
                "port 0\n\
                 tls-port {port}\n\
                 bind 127.0.0.1\n\
                 dir \"{dir}\"\n\
                 logfile \"{log}\"\n\
                 save \"\"\n\
                 appendonly no\n\
                 tls-cert-file \"{cert}\"\n\
                 tls-key-file \"{key}\"\n\
                 tls-ca-cert-file \"{ca}\"\n\
                 tls-auth-clients {auth}\n\
                 requirepass {default_pw}\n\
                 user {user} on >{pw} ~* &* +@all\n",
                dir = dir.display(),
                log = dir.join("redis.log").display(),
                cert = file("server.pem"),
                key = file("server.key"),
                ca = file("ca.pem"),
                auth = if require_client_cert {
                    "yes"
                } else {
                    "optional"
                },
                default_pw = Self::DEFAULT_PASSWORD,
                user = Self::USER,
                pw = Self::PASSWORD,
            );
            let conf = dir.join("redis.conf");
            std::fs::write(&conf, text).expect("write redis.conf");
            vec![conf.into()]
        });
        TlsRedis {
            node,
            certs,
            require_client_cert,
        }
    }

    /// The TLS port (the server has no plain-text port).
    pub fn port(&self) -> u16 {
        self.node.port
    }

    /// Whether clients must present a certificate.
    pub fn requires_client_cert(&self) -> bool {
        self.require_client_cert
    }

    /// `rediss://USER:PASSWORD@127.0.0.1:P` for the ACL user.
    pub fn url(&self) -> String {
        self.url_with(Self::USER, Self::PASSWORD)
    }

    /// `rediss://user:password@127.0.0.1:P` (not percent-encoded).
    pub fn url_with(&self, user: &str, password: &str) -> String {
        format!("rediss://{user}:{password}@127.0.0.1:{}", self.port())
    }

    fn cert(&self, name: &str) -> PathBuf {
        self.certs.path().join(name)
    }

    /// The CA that signed the server and client certificates (PEM).
    pub fn ca_file(&self) -> PathBuf {
        self.cert("ca.pem")
    }

    /// An unrelated CA (PEM) that signed neither: trusting only it must fail.
    pub fn other_ca_file(&self) -> PathBuf {
        self.cert("other-ca.pem")
    }

    /// A client certificate signed by the CA (PEM; CN = [`TlsRedis::USER`]).
    pub fn client_cert_file(&self) -> PathBuf {
        self.cert("client.pem")
    }

    /// The key of [`TlsRedis::client_cert_file`] (PKCS#8 PEM).
    pub fn client_key_file(&self) -> PathBuf {
        self.cert("client.key")
    }

    /// A client certificate signed by the unrelated CA: the server must
    /// reject it.
    pub fn untrusted_client_cert_file(&self) -> PathBuf {
        self.cert("untrusted-client.pem")
    }

    /// The key of [`TlsRedis::untrusted_client_cert_file`].
    pub fn untrusted_client_key_file(&self) -> PathBuf {
        self.cert("untrusted-client.key")
    }

    /// The server certificate (PEM, for 127.0.0.1 and localhost).
    pub fn server_cert_file(&self) -> PathBuf {
        self.cert("server.pem")
    }

    /// A trusted `redis-cli`: `redis-cli --tls -h 127.0.0.1 -p P --cacert
    /// CA --cert CLIENT --key CLIENT_KEY`, to add credentials (`--user`,
    /// `--pass`, `--no-auth-warning`) and a command to.
    pub fn cli(&self) -> Command {
        let mut cli = self.cli_bare();
        cli.arg("--cacert")
            .arg(self.ca_file())
            .arg("--cert")
            .arg(self.client_cert_file())
            .arg("--key")
            .arg(self.client_key_file());
        cli
    }

    /// `redis-cli --tls -h 127.0.0.1 -p P` with nothing to trust or present
    /// yet: for the negative cases (add `--cacert`, `--cert`, `--key`).
    pub fn cli_bare(&self) -> Command {
        let mut cli = Command::new("redis-cli");
        cli.args(["--tls", "-h", "127.0.0.1", "-p", &self.port().to_string()])
            .stdin(Stdio::null());
        cli
    }

    /// The tail of the server's log.
    pub fn log_tail(&self) -> String {
        self.node.log_tail()
    }
}
