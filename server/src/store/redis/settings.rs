//! What the Redis store is told to connect to: the topology (one node, a
//! Sentinel-managed master, or a cluster), credentials, TLS files, timeouts,
//! and the defaults of every Redis setting.
//!
//! [`crate::config`] builds a [`RedisSettings`] once, validated; the types
//! make the invalid shapes unwritable (a single node with two URLs, Sentinel
//! without a master name, a client certificate without its key), so
//! `connection.rs` and `sentinel.rs` use them as they are.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

/// Default of `redis_connect_timeout`.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Default of `redis_command_timeout`.
pub const DEFAULT_COMMAND_TIMEOUT: Duration = Duration::from_secs(1);
/// Default of `expiration_jitter_max`.
pub const DEFAULT_EXPIRATION_JITTER_MAX: Duration = Duration::from_secs(300);
/// Default of `redis_batch_max`.
pub const DEFAULT_BATCH_MAX: usize = 64;

/// Which kind of Redis deployment the store talks to (the `redis_mode`
/// setting); [`RedisTopology`] carries the addresses that go with it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum RedisMode {
    /// One node (primary), possibly behind a proxy.
    #[default]
    Single,
    /// A master found through Redis Sentinel.
    Sentinel,
    /// Redis Cluster.
    Cluster,
}

impl RedisMode {
    /// Parses `single`, `sentinel` or `cluster` (any case).
    pub fn parse(s: &str) -> Option<RedisMode> {
        match s.to_ascii_lowercase().as_str() {
            "single" => Some(RedisMode::Single),
            "sentinel" => Some(RedisMode::Sentinel),
            "cluster" => Some(RedisMode::Cluster),
            _ => None,
        }
    }

    /// The name as written in the settings.
    pub fn as_str(self) -> &'static str {
        match self {
            RedisMode::Single => "single",
            RedisMode::Sentinel => "sentinel",
            RedisMode::Cluster => "cluster",
        }
    }
}

/// Where the data lives, with the addresses each deployment needs. Every
/// address is a `redis://` or `rediss://` URL; credentials in a URL apply
/// to that node (for sentinels: to the sentinels themselves).
#[derive(Clone, PartialEq, Eq)]
pub enum RedisTopology {
    /// One node.
    Single(String),
    /// The master named `master` in the configuration of `sentinels`.
    Sentinel {
        /// The master's name in the sentinels' configuration.
        master: String,
        /// The sentinels' URLs (at least one).
        sentinels: Vec<String>,
    },
    /// Seed nodes of a Redis Cluster (at least one).
    Cluster(Vec<String>),
}

impl RedisTopology {
    /// Which kind of deployment this is.
    pub fn mode(&self) -> RedisMode {
        match self {
            RedisTopology::Single(_) => RedisMode::Single,
            RedisTopology::Sentinel { .. } => RedisMode::Sentinel,
            RedisTopology::Cluster(_) => RedisMode::Cluster,
        }
    }

    /// Every URL: the node, the sentinels or the seed nodes.
    pub fn urls(&self) -> &[String] {
        match self {
            RedisTopology::Single(url) => std::slice::from_ref(url),
            RedisTopology::Sentinel { sentinels, .. } => sentinels,
            RedisTopology::Cluster(nodes) => nodes,
        }
    }
}

/// A password: never printed (`Debug` shows `<redacted>`).
#[derive(Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret.
    pub fn new(s: impl Into<String>) -> Self {
        Secret(s.into())
    }

    /// The secret itself, for the one place that sends it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// TLS files for `rediss://` connections (PEM). With none set, the
/// platform's trust store verifies the server.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TlsFiles {
    /// CA certificate(s) that sign the server's certificate.
    pub ca: Option<PathBuf>,
    /// Client certificate and key, for servers that require one
    /// (`tls-auth-clients`).
    pub client: Option<ClientCertificate>,
}

/// A client certificate and its private key: one is no use without the other.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientCertificate {
    /// The certificate.
    pub cert: PathBuf,
    /// Its private key.
    pub key: PathBuf,
}

/// Redis connection settings, validated by [`crate::config`]. `Debug`
/// shows the URLs without credentials.
#[derive(Clone)]
pub struct RedisSettings {
    /// One node, Sentinel or Cluster, with its URLs. [`RedisSettings::username`]
    /// and [`RedisSettings::password`] override URL credentials for data nodes.
    pub topology: RedisTopology,
    /// ACL user for data nodes (none: `default`).
    pub username: Option<String>,
    /// Password for data nodes (from the setting, `FLOODGATE_REDIS_PASSWORD`
    /// or `redis_password_file`).
    pub password: Option<Secret>,
    /// TLS files, used with `rediss://` URLs.
    pub tls: TlsFiles,
    /// Longest wait for a connection.
    pub connect_timeout: Duration,
    /// Longest wait for a command's answer.
    pub command_timeout: Duration,
    /// A key's TTL is its window plus a random jitter below this, so that
    /// keys of one window do not all expire at the same instant.
    pub expiration_jitter_max: Duration,
    /// Most checks one coalesced EVALSHA carries; 1 sends every call on its
    /// own (single node and Sentinel; see `store/redis/batch.rs`).
    pub batch_max: usize,
}

impl RedisSettings {
    /// Settings for one plain node at `url`, with the defaults every other
    /// setting has in [`crate::config`] (tests and benchmarks).
    pub fn single(url: impl Into<String>) -> Self {
        RedisSettings {
            topology: RedisTopology::Single(url.into()),
            username: None,
            password: None,
            tls: TlsFiles::default(),
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            command_timeout: DEFAULT_COMMAND_TIMEOUT,
            expiration_jitter_max: DEFAULT_EXPIRATION_JITTER_MAX,
            batch_max: DEFAULT_BATCH_MAX,
        }
    }

    /// Which kind of deployment the settings name.
    pub fn mode(&self) -> RedisMode {
        self.topology.mode()
    }

    /// The addresses, without credentials, for logs and errors.
    pub fn endpoints(&self) -> String {
        self.topology
            .urls()
            .iter()
            .map(|u| redact(u))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// True if any URL asks for TLS (`rediss://`).
    pub(super) fn uses_tls(&self) -> bool {
        self.topology
            .urls()
            .iter()
            .any(|u| u.starts_with("rediss://"))
    }
}

impl fmt::Debug for RedisSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let master = match &self.topology {
            RedisTopology::Sentinel { master, .. } => Some(master),
            _ => None,
        };
        f.debug_struct("RedisSettings")
            .field("mode", &self.mode())
            .field("urls", &self.endpoints())
            .field("sentinel_master", &master)
            .field("username", &self.username)
            .field("password", &self.password)
            .field("tls", &self.tls)
            .field("connect_timeout", &self.connect_timeout)
            .field("command_timeout", &self.command_timeout)
            .finish_non_exhaustive()
    }
}

/// `url` without its credentials.
pub(super) fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            format!("{}{}", &url[..scheme + 3], &url[at + 1..])
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_never_reach_logs() {
        assert_eq!(
            redact("redis://user:pw@127.0.0.1:6379/0"),
            "redis://127.0.0.1:6379/0"
        );
        assert_eq!(redact("rediss://127.0.0.1:6380"), "rediss://127.0.0.1:6380");
        assert_eq!(format!("{:?}", Secret::new("hunter2")), "<redacted>");
        let mut s = RedisSettings::single("redis://a:b@h:1");
        s.password = Some(Secret::new("hunter2"));
        s.topology = RedisTopology::Single("redis://a:pw-in-url@h:1".into());
        let shown = format!("{s:?} {}", s.endpoints());
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(!shown.contains("pw-in-url"), "{shown}");
        s.topology = RedisTopology::Single("redis://a:b@h:1".into());
        assert!(s.endpoints() == "redis://h:1");
    }

    #[test]
    fn modes() {
        assert_eq!(RedisMode::parse("Cluster"), Some(RedisMode::Cluster));
        assert_eq!(RedisMode::parse("sentinel"), Some(RedisMode::Sentinel));
        assert_eq!(RedisMode::parse("single"), Some(RedisMode::Single));
        assert_eq!(RedisMode::parse("proxy"), None);
        for mode in [RedisMode::Single, RedisMode::Sentinel, RedisMode::Cluster] {
            assert_eq!(RedisMode::parse(mode.as_str()), Some(mode));
        }
        let sentinel = RedisTopology::Sentinel {
            master: "m".into(),
            sentinels: vec!["redis://a:1".into(), "redis://b:2".into()],
        };
        assert_eq!(sentinel.mode(), RedisMode::Sentinel);
        assert_eq!(sentinel.urls().len(), 2);
    }
}
