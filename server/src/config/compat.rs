//! envoyproxy/ratelimit's environment, read when Floodgate stands in for it
//! (started as `/bin/ratelimit`, or `floodgate serve --compat
//! envoy-ratelimit`). Off the request path: it runs once, before the
//! settings are loaded ([`super::Settings::load`]).
//!
//! Each of their variables that Floodgate honours becomes the `FLOODGATE_*`
//! variable of the setting it means, under the variables already set (an
//! explicit `FLOODGATE_*` variable wins). Each one Floodgate cannot honour is
//! reported by name with why ([`Translated::ignored`], logged as a warning);
//! each one that has no effect in envoyproxy/ratelimit either (a TLS file
//! without `GRPC_SERVER_USE_TLS`, `RUNTIME_*` under xDS) is reported too
//! ([`Translated::unused`], logged at info). None is silently ignored. A
//! value that does not parse the way Go parses it (`strconv.ParseBool`,
//! `time.ParseDuration`, `strconv.ParseInt`, envconfig's maps) is a
//! [`CompatError`] naming the variable, as envoyproxy/ratelimit refuses it.
//!
//! [`VARIABLES`] is the one list: it drives the checks here and the README's
//! table, and a test holds it to envoyproxy/ratelimit's `settings.go`.

mod go;
mod variables;

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use self::go::{go_bool, go_duration, go_float, go_int, parses, shown};
use self::variables::NO_STATSD;
pub use self::variables::{Fate, Kind, Unless, VARIABLES, Variable};

/// Which service's environment to read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Compat {
    /// envoyproxy/ratelimit's (`GRPC_SERVER_USE_TLS`, ...).
    EnvoyRatelimit,
}

/// What the compatibility layer made of the environment.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Translated {
    /// `FLOODGATE_*` variables to add (none of them already set).
    pub variables: Vec<(String, String)>,
    /// One line per variable Floodgate cannot honour, and why (a warning).
    pub ignored: Vec<String>,
    /// One line per variable that has no effect in envoyproxy/ratelimit
    /// either with the rest of this environment, and why (info).
    pub unused: Vec<String>,
}

/// A variable whose value envoyproxy/ratelimit would refuse, or that asks
/// for something Floodgate cannot start with.
#[derive(Debug, thiserror::Error)]
#[error("invalid {name}={value:?}: {reason}")]
pub struct CompatError {
    /// The variable.
    pub name: &'static str,
    /// Its value (secrets redacted).
    pub value: String,
    /// What is wrong.
    pub reason: String,
}

/// The variable named `name` in [`VARIABLES`].
fn variable(name: &str) -> Option<&'static Variable> {
    VARIABLES.iter().find(|v| v.name == name)
}

/// Whether a not-honoured variable's value asks for nothing Floodgate lacks.
fn moot(unless: Unless, value: &str) -> bool {
    match unless {
        Unless::Never => false,
        Unless::False => go_bool(value) == Some(false),
        Unless::True => go_bool(value) == Some(true),
        Unless::Zero => {
            go_int(value) == Some(0) || go_duration(value).is_some_and(|(_, d)| d.is_zero())
        }
        Unless::Empty => value.trim().is_empty(),
        Unless::Is(v) => value.eq_ignore_ascii_case(v),
    }
}

/// The translation under way.
struct Out<'a> {
    env: &'a HashMap<String, String>,
    done: HashSet<&'static str>,
    t: Translated,
}

impl<'a> Out<'a> {
    /// `name`'s value, if set; marks it handled.
    fn take(&mut self, name: &'static str) -> Option<&'a str> {
        self.done.insert(name);
        self.env.get(name).map(String::as_str)
    }

    /// `name`'s value without marking it handled.
    fn peek(&self, name: &str) -> Option<&'a str> {
        self.env.get(name).map(String::as_str)
    }

    fn bool(&mut self, name: &'static str) -> Option<bool> {
        self.take(name).and_then(go_bool)
    }

    fn line(name: &str, value: &str, why: &str) -> String {
        let kind = variable(name).map_or(Kind::Text, |v| v.kind);
        format!("{name}={}: {why}", shown(kind, value))
    }

    /// Reports `names` that are set as having no effect, as in
    /// envoyproxy/ratelimit.
    fn unused(&mut self, names: &[&'static str], why: &str) {
        for name in names {
            if let Some(value) = self.take(name) {
                self.t.unused.push(Self::line(name, value, why));
            }
        }
    }

    /// Reports `name`, if set, as not honoured.
    fn ignore(&mut self, name: &'static str, why: &str) {
        if let Some(value) = self.take(name) {
            self.t.ignored.push(Self::line(name, value, why));
        }
    }

    /// Whether the `FLOODGATE_*` variable of `setting` is set.
    fn explicit(&self, setting: &str) -> bool {
        self.env.contains_key(&Self::ours(setting))
    }

    fn ours(setting: &str) -> String {
        format!("{}_{}", super::ENV_PREFIX, setting.to_ascii_uppercase())
    }

    /// Sets `setting` to `value`, from the variables `from` (those set are
    /// named if an explicit `FLOODGATE_*` variable wins instead).
    fn set(&mut self, from: &[&'static str], setting: &str, value: String) {
        let ours = Self::ours(setting);
        let winner = if self.env.contains_key(&ours) {
            Some(format!("{ours} is set and wins"))
        } else if self.t.variables.iter().any(|(k, _)| *k == ours) {
            Some(format!("{ours} already comes from another variable"))
        } else {
            None
        };
        match winner {
            None => self.t.variables.push((ours, value)),
            Some(why) => {
                for name in from {
                    if let Some(value) = self.peek(name) {
                        self.t.ignored.push(Self::line(name, value, &why));
                    }
                }
            }
        }
    }

    fn refuse(&self, name: &'static str, reason: impl Into<String>) -> CompatError {
        let value = self.peek(name).unwrap_or_default();
        let kind = variable(name).map_or(Kind::Text, |v| v.kind);
        CompatError {
            name,
            value: shown(kind, value),
            reason: reason.into(),
        }
    }
}

/// envoyproxy/ratelimit's variables in `env`, as Floodgate's, or the first
/// one whose value envoyproxy/ratelimit (or Floodgate) would refuse.
pub fn envoy_ratelimit(env: &HashMap<String, String>) -> Result<Translated, CompatError> {
    let mut out = Out {
        env,
        done: HashSet::new(),
        t: Translated::default(),
    };
    for v in VARIABLES {
        if let Some(value) = env.get(v.name) {
            parses(v.kind, value).map_err(|reason| out.refuse(v.name, reason))?;
        }
    }
    listeners(&mut out)?;
    logs(&mut out)?;
    grpc_tls(&mut out);
    rules(&mut out)?;
    redis(&mut out)?;
    statistics(&mut out)?;
    limits(&mut out)?;
    tracing(&mut out);
    // Every other variable that is set: not honoured, unless moot.
    for v in VARIABLES {
        if out.done.contains(v.name) {
            continue;
        }
        if let Some(value) = env.get(v.name) {
            let why = match v.fate {
                Fate::Logged(_, unless) if moot(unless, value) => continue,
                Fate::Logged(why, _) => why,
                Fate::Setting(_) => "not read (a gap in compat.rs)",
            };
            out.t.ignored.push(Out::line(v.name, value, why));
        }
    }
    Ok(out.t)
}

/// `host:port`, bracketing an IPv6 host.
fn join_host_port(host: &str, port: i64) -> String {
    let host = if host.is_empty() { "0.0.0.0" } else { host };
    if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

fn listeners(out: &mut Out<'_>) -> Result<(), CompatError> {
    for (host, port, default_port, setting) in [
        ("HOST", "PORT", 8080, "http_addr"),
        ("GRPC_HOST", "GRPC_PORT", 8081, "grpc_addr"),
    ] {
        let (h, p) = (out.take(host), out.take(port));
        if h.is_none() && p.is_none() {
            continue;
        }
        let port_number = p.and_then(go_int).unwrap_or(default_port);
        if !(0..=65535).contains(&port_number) {
            return Err(out.refuse(port, "not a TCP port (0 to 65535)"));
        }
        let value = join_host_port(h.unwrap_or("0.0.0.0"), port_number);
        out.set(&[host, port], setting, value);
    }
    Ok(())
}

fn logs(out: &mut Out<'_>) -> Result<(), CompatError> {
    if let Some(level) = out.take("LOG_LEVEL") {
        // logrus.ParseLevel: any case.
        let ours = match level.to_ascii_lowercase().as_str() {
            "panic" | "fatal" | "error" => "error",
            "warn" | "warning" => "warn",
            "info" => "info",
            "debug" => "debug",
            "trace" => "trace",
            _ => {
                return Err(out.refuse(
                    "LOG_LEVEL",
                    "not a level (panic, fatal, error, warn, info, debug, trace)",
                ));
            }
        };
        out.set(&["LOG_LEVEL"], "log_level", ours.to_owned());
    }
    if let Some(format) = out.take("LOG_FORMAT") {
        let ours = if format.eq_ignore_ascii_case("json") {
            "json"
        } else {
            "text"
        };
        out.set(&["LOG_FORMAT"], "log_format", ours.to_owned());
    }
    Ok(())
}

/// The gRPC listener's TLS, as envoyproxy/ratelimit and Envoy Gateway set it.
fn grpc_tls(out: &mut Out<'_>) {
    let files = [
        ("GRPC_SERVER_TLS_CERT", "grpc_tls_cert_file"),
        ("GRPC_SERVER_TLS_KEY", "grpc_tls_key_file"),
        // envoyproxy/ratelimit reads the client CA from GRPC_CLIENT_TLS_CACERT;
        // Envoy Gateway sets GRPC_SERVER_TLS_CA_CERT. Either asks for
        // client certificates (required, as envoyproxy/ratelimit does).
        ("GRPC_CLIENT_TLS_CACERT", "grpc_tls_client_ca_file"),
        ("GRPC_SERVER_TLS_CA_CERT", "grpc_tls_client_ca_file"),
        ("GRPC_CLIENT_TLS_SAN", "grpc_tls_client_names"),
    ];
    let names = files.map(|(theirs, _)| theirs);
    match out.take("GRPC_SERVER_USE_TLS").map(go_bool) {
        Some(Some(true)) => {
            for (theirs, setting) in files {
                if let Some(value) = out.take(theirs) {
                    out.set(&[theirs], setting, value.to_owned());
                }
            }
        }
        Some(_) => out.unused(&names, "GRPC_SERVER_USE_TLS is not true"),
        None => out.unused(&names, "GRPC_SERVER_USE_TLS is not set"),
    }
}

/// `parts` joined as Go's `filepath.Join` joins them (an absolute part
/// does not start over).
fn join_path(parts: &[&str]) -> String {
    let mut path = String::new();
    for (i, part) in parts.iter().enumerate() {
        let part = if i == 0 {
            part.trim_end_matches('/')
        } else {
            part.trim_matches('/')
        };
        if part.is_empty() && i > 0 {
            continue;
        }
        if i > 0 && !path.ends_with('/') {
            path.push('/');
        }
        path.push_str(part);
    }
    if path.is_empty() {
        "/".to_owned()
    } else {
        path
    }
}

const RUNTIME: [&str; 5] = [
    "RUNTIME_ROOT",
    "RUNTIME_SUBDIRECTORY",
    "RUNTIME_APPDIRECTORY",
    "RUNTIME_IGNOREDOTFILES",
    "RUNTIME_WATCH_ROOT",
];

const XDS: [&str; 14] = [
    "CONFIG_GRPC_XDS_NODE_ID",
    "CONFIG_GRPC_XDS_NODE_METADATA",
    "CONFIG_GRPC_XDS_SERVER_URL",
    "CONFIG_GRPC_XDS_SERVER_CONNECT_RETRY_INTERVAL",
    "CONFIG_GRPC_XDS_CLIENT_ADDITIONAL_HEADERS",
    "CONFIG_GRPC_XDS_SERVER_USE_TLS",
    "CONFIG_GRPC_XDS_CLIENT_TLS_CERT",
    "CONFIG_GRPC_XDS_CLIENT_TLS_KEY",
    "CONFIG_GRPC_XDS_SERVER_TLS_CACERT",
    "CONFIG_GRPC_XDS_SERVER_TLS_SAN",
    "XDS_CLIENT_BACKOFF_INITIAL_INTERVAL",
    "XDS_CLIENT_BACKOFF_MAX_INTERVAL",
    "XDS_CLIENT_BACKOFF_RANDOM_FACTOR",
    "XDS_CLIENT_BACKOFF_JITTER",
];

/// A duration as Floodgate's settings read it (whole milliseconds, rounded up).
fn millis(d: Duration) -> String {
    format!("{}ms", d.as_nanos().div_ceil(1_000_000))
}

/// Where the rules come from: files (`RUNTIME_*`) or xDS.
fn rules(out: &mut Out<'_>) -> Result<(), CompatError> {
    match out.take("CONFIG_TYPE").unwrap_or("FILE") {
        "FILE" => {
            out.unused(&XDS, "CONFIG_TYPE is FILE");
            out.unused(&["XDS_CLIENT_MAX_MSG_SIZE_IN_BYTES"], "CONFIG_TYPE is FILE");
            out.unused(
                &["FORCE_START_WITHOUT_INITIAL_CONFIG"],
                "CONFIG_TYPE is FILE: the files are read at startup",
            );
            let root = out
                .take("RUNTIME_ROOT")
                .unwrap_or("/srv/runtime_data/current");
            let sub = out.take("RUNTIME_SUBDIRECTORY").unwrap_or("");
            let app = out.take("RUNTIME_APPDIRECTORY").unwrap_or("config");
            out.take("RUNTIME_WATCH_ROOT");
            let path = join_path(&[root, sub, app]);
            out.set(
                &[
                    "RUNTIME_ROOT",
                    "RUNTIME_SUBDIRECTORY",
                    "RUNTIME_APPDIRECTORY",
                ],
                "rules",
                path,
            );
            Ok(())
        }
        "GRPC_XDS_SOTW" => {
            out.unused(&RUNTIME, "CONFIG_TYPE is GRPC_XDS_SOTW");
            xds(out)
        }
        _ => Err(out.refuse("CONFIG_TYPE", "must be FILE or GRPC_XDS_SOTW")),
    }
}

fn xds(out: &mut Out<'_>) -> Result<(), CompatError> {
    let server = out
        .take("CONFIG_GRPC_XDS_SERVER_URL")
        .unwrap_or("localhost:18000");
    out.set(
        &["CONFIG_GRPC_XDS_SERVER_URL"],
        "rules_xds_server",
        server.to_owned(),
    );
    let node = out.take("CONFIG_GRPC_XDS_NODE_ID").unwrap_or("default");
    out.set(
        &["CONFIG_GRPC_XDS_NODE_ID"],
        "rules_xds_node_id",
        node.to_owned(),
    );
    if let Some(metadata) = out.take("CONFIG_GRPC_XDS_NODE_METADATA") {
        let pairs: Vec<&str> = metadata.split(',').filter(|e| e.contains('=')).collect();
        if !pairs.is_empty() {
            let from = ["CONFIG_GRPC_XDS_NODE_METADATA"];
            out.set(&from, "rules_xds_node_metadata", pairs.join(","));
        }
    }
    if let Some(headers) = out.take("CONFIG_GRPC_XDS_CLIENT_ADDITIONAL_HEADERS")
        && !headers.trim().is_empty()
    {
        let from = ["CONFIG_GRPC_XDS_CLIENT_ADDITIONAL_HEADERS"];
        out.set(&from, "rules_xds_headers", headers.to_owned());
    }
    xds_tls(out)?;
    for (theirs, setting) in [
        (
            "XDS_CLIENT_BACKOFF_INITIAL_INTERVAL",
            "rules_xds_retry_initial",
        ),
        ("XDS_CLIENT_BACKOFF_MAX_INTERVAL", "rules_xds_retry_max"),
    ] {
        if let Some((negative, d)) = out.take(theirs).and_then(go_duration) {
            if negative || d.is_zero() {
                return Err(out.refuse(theirs, "Floodgate needs a backoff above 0"));
            }
            out.set(&[theirs], setting, millis(d));
        }
    }
    if let Some(size) = out
        .take("XDS_CLIENT_MAX_MSG_SIZE_IN_BYTES")
        .and_then(go_int)
    {
        if size < 0 {
            return Err(out.refuse("XDS_CLIENT_MAX_MSG_SIZE_IN_BYTES", "must not be negative"));
        }
        if size > 0 {
            let from = ["XDS_CLIENT_MAX_MSG_SIZE_IN_BYTES"];
            out.set(&from, "rules_xds_max_message_bytes", size.to_string());
        }
    }
    Ok(())
}

/// TLS to the management server.
fn xds_tls(out: &mut Out<'_>) -> Result<(), CompatError> {
    let tls = [
        ("CONFIG_GRPC_XDS_SERVER_TLS_CACERT", "rules_xds_ca_file"),
        ("CONFIG_GRPC_XDS_CLIENT_TLS_CERT", "rules_xds_cert_file"),
        ("CONFIG_GRPC_XDS_CLIENT_TLS_KEY", "rules_xds_key_file"),
        ("CONFIG_GRPC_XDS_SERVER_TLS_SAN", "rules_xds_server_name"),
    ];
    if out.bool("CONFIG_GRPC_XDS_SERVER_USE_TLS") == Some(true) {
        if out
            .peek("CONFIG_GRPC_XDS_SERVER_TLS_CACERT")
            .is_none_or(str::is_empty)
            && !out.explicit("rules_xds_ca_file")
        {
            return Err(out.refuse(
                "CONFIG_GRPC_XDS_SERVER_USE_TLS",
                "Floodgate needs CONFIG_GRPC_XDS_SERVER_TLS_CACERT (the CA that signs the management server's certificate) for TLS",
            ));
        }
        for (theirs, setting) in tls {
            if let Some(value) = out.take(theirs).filter(|v| !v.is_empty()) {
                out.set(&[theirs], setting, value.to_owned());
            }
        }
    } else {
        out.unused(
            &tls.map(|(theirs, _)| theirs),
            "CONFIG_GRPC_XDS_SERVER_USE_TLS is not true",
        );
    }
    Ok(())
}

const REDIS_ONLY: [&str; 12] = [
    "REDIS_SOCKET_TYPE",
    "REDIS_TYPE",
    "REDIS_AUTH",
    "REDIS_TLS",
    "REDIS_TLS_CLIENT_CERT",
    "REDIS_TLS_CLIENT_KEY",
    "REDIS_TLS_CACERT",
    "REDIS_SENTINEL_AUTH",
    "REDIS_TIMEOUT",
    "EXPIRATION_JITTER_MAX_SECONDS",
    "REDIS_TLS_SKIP_HOSTNAME_VERIFICATION",
    "REDIS_POOL_SIZE",
];

/// `user:password@` for a URL, each part percent-encoded.
fn userinfo(user: &str, password: &str) -> String {
    let encode = |s: &str| {
        s.bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                    (b as char).to_string()
                }
                _ => format!("%{b:02X}"),
            })
            .collect::<String>()
    };
    format!("{}:{}@", encode(user), encode(password))
}

/// `address` as a `redis://` (or, with TLS, `rediss://`) URL, with
/// `credentials` (`user:password@`) if it has none.
fn redis_url(address: &str, tls: bool, credentials: Option<&str>) -> String {
    let address = address.trim();
    let (scheme, rest) = match address.split_once("://") {
        Some(("rediss", rest)) => ("rediss", rest),
        Some((_, rest)) => (if tls { "rediss" } else { "redis" }, rest),
        None => (if tls { "rediss" } else { "redis" }, address),
    };
    match credentials {
        Some(c) if !rest.contains('@') => format!("{scheme}://{c}{rest}"),
        _ => format!("{scheme}://{rest}"),
    }
}

fn redis(out: &mut Out<'_>) -> Result<(), CompatError> {
    match out.take("BACKEND_TYPE").unwrap_or("redis") {
        "redis" | "" => {}
        "memcache" => {
            return Err(out.refuse(
                "BACKEND_TYPE",
                "Floodgate has no memcached store: use BACKEND_TYPE=redis with REDIS_URL",
            ));
        }
        _ => return Err(out.refuse("BACKEND_TYPE", "must be redis or memcache")),
    }
    if let Some(prefix) = out.take("CACHE_KEY_PREFIX") {
        out.set(&["CACHE_KEY_PREFIX"], "cache_key_prefix", prefix.to_owned());
    }
    let url = out.take("REDIS_URL");
    let explicit_url = out.explicit("redis_url");
    if url.is_none() && !explicit_url {
        out.t.ignored.push(
            "REDIS_URL is not set: envoyproxy/ratelimit would dial /var/run/nutcracker/ratelimit.sock; Floodgate counts in memory, per instance"
                .to_owned(),
        );
        out.unused(&REDIS_ONLY, "REDIS_URL is not set");
        return Ok(());
    }
    let kind = out.take("REDIS_TYPE").unwrap_or("SINGLE");
    let Some(mode) = crate::store::redis::RedisMode::parse(kind) else {
        return Err(out.refuse("REDIS_TYPE", "must be SINGLE, SENTINEL or CLUSTER"));
    };
    out.set(&["REDIS_TYPE"], "redis_mode", mode.as_str().to_owned());
    redis_urls(out, url, explicit_url, mode)?;
    redis_auth_tls(out)?;
    if out.bool("REDIS_PERSECOND") != Some(true) {
        let names: Vec<&'static str> = VARIABLES
            .iter()
            .map(|v| v.name)
            .filter(|n| n.starts_with("REDIS_PERSECOND_"))
            .collect();
        out.unused(&names, "REDIS_PERSECOND is not true");
    }
    Ok(())
}

/// Credentials, TLS files, timeouts, jitter, the per-second Redis.
fn redis_auth_tls(out: &mut Out<'_>) -> Result<(), CompatError> {
    let tls = out.peek("REDIS_TLS").and_then(go_bool) == Some(true);
    if let Some(auth) = out.take("REDIS_AUTH").filter(|a| !a.is_empty()) {
        match auth.split_once(':') {
            Some((user, password)) => {
                out.set(&["REDIS_AUTH"], "redis_username", user.to_owned());
                out.set(&["REDIS_AUTH"], "redis_password", password.to_owned());
            }
            None => out.set(&["REDIS_AUTH"], "redis_password", auth.to_owned()),
        }
    }
    let files = [
        ("REDIS_TLS_CACERT", "redis_tls_ca_file"),
        ("REDIS_TLS_CLIENT_CERT", "redis_tls_cert_file"),
        ("REDIS_TLS_CLIENT_KEY", "redis_tls_key_file"),
    ];
    if tls {
        let set = |out: &Out<'_>, n| out.peek(n).is_some_and(|v| !v.is_empty());
        let pair = set(out, "REDIS_TLS_CLIENT_CERT") && set(out, "REDIS_TLS_CLIENT_KEY");
        for (theirs, setting) in files {
            let Some(value) = out.take(theirs).filter(|v| !v.is_empty()) else {
                continue;
            };
            if theirs == "REDIS_TLS_CACERT" || pair {
                out.set(&[theirs], setting, value.to_owned());
            } else {
                out.t.unused.push(Out::line(
                    theirs,
                    value,
                    "a client certificate needs both REDIS_TLS_CLIENT_CERT and REDIS_TLS_CLIENT_KEY",
                ));
            }
        }
    } else {
        out.unused(&files.map(|(theirs, _)| theirs), "REDIS_TLS is not true");
    }
    if let Some((negative, timeout)) = out.take("REDIS_TIMEOUT").and_then(go_duration) {
        if negative || timeout.is_zero() {
            return Err(out.refuse("REDIS_TIMEOUT", "Floodgate needs a timeout above 0"));
        }
        out.set(&["REDIS_TIMEOUT"], "redis_connect_timeout", millis(timeout));
        out.set(&["REDIS_TIMEOUT"], "redis_command_timeout", millis(timeout));
    }
    if let Some(seconds) = out.take("EXPIRATION_JITTER_MAX_SECONDS").and_then(go_int) {
        let from = ["EXPIRATION_JITTER_MAX_SECONDS"];
        out.set(
            &from,
            "expiration_jitter_max",
            format!("{}s", seconds.max(0)),
        );
    }
    Ok(())
}

/// `REDIS_URL` (with `REDIS_SOCKET_TYPE`, `REDIS_TLS`, `REDIS_SENTINEL_AUTH`)
/// as `redis_url` and `redis_sentinel_master`.
fn redis_urls(
    out: &mut Out<'_>,
    url: Option<&str>,
    explicit_url: bool,
    mode: crate::store::redis::RedisMode,
) -> Result<(), CompatError> {
    let tls = out.bool("REDIS_TLS") == Some(true);
    let sentinel_auth = out.take("REDIS_SENTINEL_AUTH").filter(|a| !a.is_empty());
    if let Some(url) = url.filter(|_| !explicit_url) {
        use crate::store::redis::RedisMode;
        redis_socket(out, mode, url)?;
        let mut addresses: Vec<&str> = url.split(',').collect();
        if mode == RedisMode::Sentinel {
            if addresses.len() < 2 {
                return Err(out.refuse(
                    "REDIS_URL",
                    "with REDIS_TYPE=SENTINEL: the master's name, then the sentinels: master,host:port,...",
                ));
            }
            let master = addresses.remove(0);
            out.set(&["REDIS_URL"], "redis_sentinel_master", master.to_owned());
        }
        let credentials = match (mode, sentinel_auth) {
            (RedisMode::Sentinel, Some(auth)) => Some(userinfo("", auth)),
            _ => None,
        };
        let urls: Vec<String> = addresses
            .iter()
            .map(|a| redis_url(a, tls, credentials.as_deref()))
            .collect();
        out.set(&["REDIS_URL"], "redis_url", urls.join(","));
        if mode != RedisMode::Sentinel && sentinel_auth.is_some() {
            out.unused(&["REDIS_SENTINEL_AUTH"], "REDIS_TYPE is not SENTINEL");
        }
    } else {
        for name in [
            "REDIS_URL",
            "REDIS_SOCKET_TYPE",
            "REDIS_TLS",
            "REDIS_SENTINEL_AUTH",
        ] {
            out.ignore(name, "FLOODGATE_REDIS_URL is set and wins");
        }
    }
    Ok(())
}

/// `REDIS_SOCKET_TYPE`: TCP for a single Redis (sentinels and clusters are
/// dialled over TCP whatever it says).
fn redis_socket(
    out: &mut Out<'_>,
    mode: crate::store::redis::RedisMode,
    url: &str,
) -> Result<(), CompatError> {
    use crate::store::redis::RedisMode;
    let given = out.take("REDIS_SOCKET_TYPE");
    let socket = given.unwrap_or("unix");
    match mode {
        RedisMode::Single if !matches!(socket, "tcp" | "tcp4" | "tcp6") => {
            return Err(out.refuse(
                "REDIS_SOCKET_TYPE",
                format!(
                    "Floodgate dials Redis over TCP only: set REDIS_SOCKET_TYPE=tcp and REDIS_URL=host:port (unset, it is unix; REDIS_URL={} is a socket path then)",
                    shown(Kind::Text, url)
                ),
            ));
        }
        RedisMode::Single => {}
        _ => out.unused(&["REDIS_SOCKET_TYPE"], "only a single Redis uses it"),
    }
    Ok(())
}

const STATSD: [&str; 5] = [
    "STATSD_HOST",
    "STATSD_PORT",
    "USE_DOG_STATSD_MOGRIFIERS",
    "STATS_FLUSH_INTERVAL",
    "EXTRA_TAGS",
];

const PROMETHEUS: [&str; 4] = [
    "PROMETHEUS_ADDR",
    "PROMETHEUS_PATH",
    "PROMETHEUS_MAPPER_YAML",
    "PROMETHEUS_RESPONSE_TIME_AS_MILLISECONDS",
];

fn statistics(out: &mut Out<'_>) -> Result<(), CompatError> {
    let statsd = out.peek("USE_STATSD").map(go_bool);
    let dog = out.peek("USE_DOG_STATSD").and_then(go_bool) == Some(true);
    if statsd.is_none() {
        out.t.ignored.push(format!(
            "USE_STATSD is not set (envoyproxy/ratelimit's default: true): {NO_STATSD}"
        ));
    }
    if statsd == Some(Some(false)) && !dog {
        out.take("USE_STATSD");
        out.unused(&STATSD, "USE_STATSD is false");
    }
    if out.bool("USE_PROMETHEUS") != Some(true) {
        out.unused(&PROMETHEUS, "USE_PROMETHEUS is not true");
        return Ok(());
    }
    // Their Prometheus sink listens on PROMETHEUS_ADDR (Go's form: `:port`
    // is every interface) and serves PROMETHEUS_PATH there.
    let addr = out.take("PROMETHEUS_ADDR").unwrap_or(":9090");
    let Some(addr) = go_listen_addr(addr) else {
        return Err(out.refuse(
            "PROMETHEUS_ADDR",
            "Floodgate listens on host:port with an IP address or localhost as host (or :port for every interface)",
        ));
    };
    out.set(&["PROMETHEUS_ADDR"], "metrics_addr", addr);
    if let Some(path) = out.take("PROMETHEUS_PATH") {
        if !path.starts_with('/') {
            return Err(out.refuse("PROMETHEUS_PATH", "must start with /"));
        }
        out.set(&["PROMETHEUS_PATH"], "metrics_path", path.to_owned());
    }
    Ok(())
}

/// A Go listen address (`:9090`, `0.0.0.0:9090`, `[::1]:9090`,
/// `localhost:9090`) as Floodgate's `host:port`, or `None`.
fn go_listen_addr(addr: &str) -> Option<String> {
    let (host, port) = addr.rsplit_once(':')?;
    let port: u16 = port.parse().ok()?;
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    let host = if host == "localhost" {
        "127.0.0.1"
    } else {
        host
    };
    let joined = join_host_port(host, port.into());
    joined.parse::<std::net::SocketAddr>().ok().map(|_| joined)
}

fn limits(out: &mut Out<'_>) -> Result<(), CompatError> {
    for (theirs, setting) in [
        (
            "STOP_CACHE_KEY_INCREMENT_WHEN_OVERLIMIT",
            "stop_increment_when_over_limit",
        ),
        ("SHADOW_MODE", "shadow_mode"),
        ("MERGE_DOMAIN_CONFIG", "merge_domains"),
        ("RESPONSE_DYNAMIC_METADATA", "dynamic_metadata"),
        ("LIMIT_RESPONSE_HEADERS_ENABLED", "response_headers"),
    ] {
        if let Some(on) = out.bool(theirs) {
            out.set(&[theirs], setting, on.to_string());
        }
    }
    for (theirs, setting) in [
        ("LIMIT_LIMIT_HEADER", "limit_header"),
        ("LIMIT_REMAINING_HEADER", "remaining_header"),
        ("LIMIT_RESET_HEADER", "reset_header"),
    ] {
        if let Some(name) = out.take(theirs) {
            out.set(&[theirs], setting, name.to_owned());
        }
    }
    if let Some(ratio) = out.take("NEAR_LIMIT_RATIO").and_then(go_float) {
        if !(0.0..=1.0).contains(&ratio) {
            return Err(out.refuse("NEAR_LIMIT_RATIO", "must be between 0 and 1"));
        }
        out.set(&["NEAR_LIMIT_RATIO"], "near_limit_ratio", ratio.to_string());
    }
    if let Some(bytes) = out.take("LOCAL_CACHE_SIZE_IN_BYTES").and_then(go_int) {
        if bytes <= 0 {
            let from = ["LOCAL_CACHE_SIZE_IN_BYTES"];
            out.set(&from, "over_limit_cache_entries", "0".to_owned());
        } else {
            out.t.ignored.push(Out::line(
                "LOCAL_CACHE_SIZE_IN_BYTES",
                &bytes.to_string(),
                "the over-limit cache is bounded in entries (over_limit_cache_entries), not bytes",
            ));
        }
    }
    Ok(())
}

const TRACING_NAMES: [&str; 3] = [
    "TRACING_SERVICE_NAME",
    "TRACING_SERVICE_NAMESPACE",
    "TRACING_SERVICE_INSTANCE_ID",
];

fn tracing(out: &mut Out<'_>) {
    let endpoint = [
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    ]
    .iter()
    .any(|n| out.peek(n).is_some_and(|v| !v.trim().is_empty()));
    if out.bool("TRACING_ENABLED") == Some(true) {
        out.take("OTEL_EXPORTER_OTLP_ENDPOINT");
        if !endpoint {
            out.t.ignored.push(
                "TRACING_ENABLED=true: OTEL_EXPORTER_OTLP_ENDPOINT is not set, and Floodgate exports traces only to a set endpoint"
                    .to_owned(),
            );
        }
        if let Some(rate) = out.take("TRACING_SAMPLING_RATE").and_then(go_float) {
            let ratio = if rate.is_nan() {
                0.0
            } else {
                rate.clamp(0.0, 1.0)
            };
            let from = ["TRACING_SAMPLING_RATE"];
            out.set(&from, "trace_sampling_ratio", ratio.to_string());
        }
        if out.peek("TRACING_EXPORTER_PROTOCOL").is_none() {
            out.t.ignored.push(format!(
                "TRACING_EXPORTER_PROTOCOL is not set (envoyproxy/ratelimit's default: http): {}",
                "Floodgate exports OTLP over gRPC only: point OTEL_EXPORTER_OTLP_ENDPOINT at the collector's gRPC port (4317)"
            ));
        }
    } else {
        let mut names = TRACING_NAMES.to_vec();
        names.extend(["TRACING_SAMPLING_RATE", "TRACING_EXPORTER_PROTOCOL"]);
        out.unused(&names, "TRACING_ENABLED is not true");
        out.ignore(
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            "TRACING_ENABLED is not true, but Floodgate exports traces whenever it is set: unset it, or set OTEL_SDK_DISABLED=true",
        );
    }
}

#[cfg(test)]
mod tests;
