//! The `floodgate` command line: `serve`, `check`, `bench` and `admin`. `main.rs` only calls
//! [`main`]; everything else lives here so it can be tested.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use floodgate_proto::rate_limit_descriptor::Entry;

pub use crate::bench::entry;
use crate::config::{Config, Settings};
use crate::tls::client::{ALPN_HTTP1, ClientTls, ClientTlsError, TlsFlags, host_of};
use crate::{Listeners, rules};

/// Floodgate: a rate-limit service for Envoy and everything else.
#[derive(Debug, Parser)]
#[command(name = "floodgate", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve ShouldRateLimit over gRPC, plus the HTTP endpoints.
    Serve(Box<ServeArgs>),
    /// Validate rules files; print every error; exit 1 if there is any.
    Check(CheckArgs),
    /// Load any Envoy RLS server and report calls/s and latency percentiles.
    Bench(crate::bench::BenchArgs),
    /// Read or reset a descriptor's counters through a server's admin listener.
    Admin(AdminArgs),
    /// Serve a constant-OK Envoy RLS (no rules, no store): the ceiling
    /// `bench/run` measures servers against, built with Floodgate's profile.
    Ceiling(CeilingArgs),
}

/// `floodgate ceiling`.
#[derive(Debug, Args)]
pub struct CeilingArgs {
    /// Where to serve gRPC.
    #[arg(long, default_value = "127.0.0.1:9081")]
    pub addr: String,
    /// Run on tokio's default scheduling (the task woken last runs first)
    /// instead of the servers' (see `server_runtime`), to compare the two.
    #[arg(long)]
    pub tokio_default_scheduling: bool,
}

/// `floodgate admin`.
#[derive(Debug, Args)]
pub struct AdminArgs {
    /// What to do.
    #[command(subcommand)]
    pub action: AdminAction,
    /// The server's admin listener.
    #[arg(
        long,
        global = true,
        default_value = "127.0.0.1:6070",
        env = "FLOODGATE_ADMIN_ADDR"
    )]
    pub addr: String,
    /// The admin token, if the server requires one.
    #[arg(
        long,
        global = true,
        env = "FLOODGATE_ADMIN_TOKEN",
        hide_env_values = true
    )]
    pub token: Option<String>,
    /// Speak TLS, trusting the CA certificate(s) in FILE (PEM) to sign the
    /// admin listener's certificate.
    #[arg(
        long = "tls-ca",
        global = true,
        value_name = "FILE",
        env = "FLOODGATE_ADMIN_TLS_CA"
    )]
    pub tls_ca: Option<PathBuf>,
    /// mTLS: the client certificate chain to present (PEM), with --tls-key.
    #[arg(
        long = "tls-cert",
        global = true,
        value_name = "FILE",
        env = "FLOODGATE_ADMIN_TLS_CERT"
    )]
    pub tls_cert: Option<PathBuf>,
    /// mTLS: the client certificate's private key (PEM), with --tls-cert.
    #[arg(
        long = "tls-key",
        global = true,
        value_name = "FILE",
        env = "FLOODGATE_ADMIN_TLS_KEY"
    )]
    pub tls_key: Option<PathBuf>,
    /// The name to send (SNI) and to find in the listener's certificate
    /// [default: the host of --addr; an IP address matches an IP SAN].
    #[arg(
        long = "tls-server-name",
        global = true,
        value_name = "NAME",
        env = "FLOODGATE_ADMIN_TLS_SERVER_NAME"
    )]
    pub tls_server_name: Option<String>,
}

impl AdminArgs {
    /// The client TLS the flags ask for (any of them: TLS), or `None`.
    pub fn tls(&self) -> Result<Option<ClientTls>, ClientTlsError> {
        let flags = TlsFlags {
            ca: self.tls_ca.clone(),
            cert: self.tls_cert.clone(),
            key: self.tls_key.clone(),
            server_name: self.tls_server_name.clone(),
        };
        if !flags.any() {
            return Ok(None);
        }
        ClientTls::new(&flags, &[ALPN_HTTP1], host_of(&self.addr)).map(Some)
    }
}

/// `floodgate admin` actions.
#[derive(Debug, Subcommand)]
pub enum AdminAction {
    /// Show a descriptor's counters (limit, remaining, reset); counts nothing.
    Get(DescriptorArgs),
    /// Delete a descriptor's counters, so that its next call starts afresh.
    Reset(DescriptorArgs),
}

/// One descriptor of a domain.
#[derive(Debug, Args)]
pub struct DescriptorArgs {
    /// The rules domain.
    #[arg(long)]
    pub domain: String,
    /// The descriptor's entries, from the most general: KEY=VALUE ...
    #[arg(required = true, value_name = "KEY=VALUE", value_parser = entry)]
    pub entries: Vec<Entry>,
}

/// `floodgate serve`. Each flag overrides the config file and `FLOODGATE_*`
/// environment variables; see the README for every setting.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// YAML settings file.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Also read another service's environment variables (under the
    /// `FLOODGATE_*` ones): `envoy-ratelimit` for envoyproxy/ratelimit's.
    #[arg(long, value_name = "SERVICE")]
    pub compat: Option<crate::config::compat::Compat>,
    /// Rules directory (every *.yaml / *.yml file in it) or file.
    #[arg(long, value_name = "DIR")]
    pub rules: Option<PathBuf>,
    /// Redis URL (`redis://[user:password@]host:port[/db]`, `rediss://` for TLS);
    /// comma-separated seed nodes (cluster) or sentinels (sentinel). Without
    /// it, counters live in memory.
    #[arg(long, value_name = "URL")]
    pub redis_url: Option<String>,
    /// Redis deployment: single, sentinel or cluster [default: single].
    #[arg(long, value_name = "MODE")]
    pub redis_mode: Option<String>,
    /// Sentinel mode: the master's name.
    #[arg(long, value_name = "NAME")]
    pub redis_sentinel_master: Option<String>,
    /// Without Redis: fallback (count in memory), allow or deny [default: fallback].
    #[arg(long, value_name = "POLICY")]
    pub on_store_failure: Option<String>,
    /// gRPC listen address [default: 0.0.0.0:8081].
    #[arg(long, value_name = "ADDR")]
    pub grpc_addr: Option<String>,
    /// HTTP listen address [default: 0.0.0.0:8080].
    #[arg(long, value_name = "ADDR")]
    pub http_addr: Option<String>,
    /// Admin listen address, empty for none [default: 127.0.0.1:6070].
    #[arg(long, value_name = "ADDR")]
    pub admin_addr: Option<String>,
    /// Prefix of every counter key.
    #[arg(long, value_name = "PREFIX")]
    pub cache_key_prefix: Option<String>,
    /// Let several rules files share a domain.
    #[arg(long)]
    pub merge_domains: bool,
    /// Log filter, e.g. info or floodgate_server=debug [default: info].
    #[arg(long, value_name = "FILTER")]
    pub log_level: Option<String>,
    /// Log format: text or json [default: text].
    #[arg(long, value_name = "FORMAT")]
    pub log_format: Option<String>,
    /// gRPC listener over TLS: certificate chain (PEM).
    #[arg(long, value_name = "FILE")]
    pub grpc_tls_cert_file: Option<PathBuf>,
    /// gRPC listener over TLS: the certificate's private key (PEM).
    #[arg(long, value_name = "FILE")]
    pub grpc_tls_key_file: Option<PathBuf>,
    /// gRPC listener: CA bundle (PEM) for client certificates (mTLS).
    #[arg(long, value_name = "FILE")]
    pub grpc_tls_client_ca_file: Option<PathBuf>,
    /// HTTP listener over TLS: certificate chain (PEM).
    #[arg(long, value_name = "FILE")]
    pub http_tls_cert_file: Option<PathBuf>,
    /// HTTP listener over TLS: the certificate's private key (PEM).
    #[arg(long, value_name = "FILE")]
    pub http_tls_key_file: Option<PathBuf>,
    /// HTTP listener: CA bundle (PEM) for client certificates (mTLS).
    #[arg(long, value_name = "FILE")]
    pub http_tls_client_ca_file: Option<PathBuf>,
    /// admin listener over TLS: certificate chain (PEM).
    #[arg(long, value_name = "FILE")]
    pub admin_tls_cert_file: Option<PathBuf>,
    /// admin listener over TLS: the certificate's private key (PEM).
    #[arg(long, value_name = "FILE")]
    pub admin_tls_key_file: Option<PathBuf>,
    /// admin listener: CA bundle (PEM) for client certificates (mTLS).
    #[arg(long, value_name = "FILE")]
    pub admin_tls_client_ca_file: Option<PathBuf>,
}

/// `floodgate check`.
#[derive(Debug, Args)]
pub struct CheckArgs {
    /// Rules directories or files.
    #[arg(required = true, value_name = "DIR_OR_FILE")]
    pub paths: Vec<PathBuf>,
    /// Let several rules files share a domain.
    #[arg(long)]
    pub merge_domains: bool,
}

/// Runs the command line; the process exit code is the result.
pub fn main() -> ExitCode {
    let cli = Cli::parse_from(arguments(std::env::args_os()));
    match cli.command {
        Command::Check(args) => check(&args, &mut std::io::stdout(), &mut std::io::stderr()),
        Command::Serve(args) => serve(*args),
        Command::Bench(args) => bench(&args),
        Command::Admin(args) => admin(&args),
        Command::Ceiling(args) => ceiling(&args),
    }
}

/// `floodgate ceiling`: serves [`crate::bench::AlwaysOk`] until Ctrl-C or
/// SIGTERM.
fn ceiling(args: &CeilingArgs) -> ExitCode {
    let runtime = if args.tokio_default_scheduling {
        runtime(None)
    } else {
        server_runtime()
    };
    let Some(runtime) = runtime else {
        return ExitCode::FAILURE;
    };
    match runtime.block_on(crate::bench::serve_ceiling(&args.addr)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("floodgate ceiling: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The command line to parse: as given, or, when the binary was started
/// as `ratelimit` (`/bin/ratelimit`, as Envoy Gateway starts
/// envoyproxy/ratelimit), `serve --compat envoy-ratelimit` followed by any
/// arguments given (envoyproxy/ratelimit takes none).
pub fn arguments(args: impl IntoIterator<Item = std::ffi::OsString>) -> Vec<std::ffi::OsString> {
    let mut args: Vec<std::ffi::OsString> = args.into_iter().collect();
    let as_ratelimit = args
        .first()
        .and_then(|argv0| std::path::Path::new(argv0).file_name())
        .is_some_and(|name| name == "ratelimit");
    if as_ratelimit {
        let serve = ["floodgate", "serve", "--compat", "envoy-ratelimit"];
        args.splice(0..1, serve.map(std::ffi::OsString::from));
    }
    args
}

/// `floodgate admin get|reset`: one call to the admin listener; prints its
/// answer; exit 1 unless it succeeded.
fn admin(args: &AdminArgs) -> ExitCode {
    let (path, d) = match &args.action {
        AdminAction::Get(d) => ("/counters/get", d),
        AdminAction::Reset(d) => ("/counters/reset", d),
    };
    let entries: Vec<_> = d
        .entries
        .iter()
        .map(|e| serde_json::json!({ "key": e.key, "value": e.value }))
        .collect();
    let body = serde_json::json!({
        "domain": d.domain,
        "descriptors": [{ "entries": entries }],
    })
    .to_string();
    let tls = match args.tls() {
        Ok(tls) => tls,
        Err(e) => {
            eprintln!("floodgate admin: {e}");
            return ExitCode::FAILURE;
        }
    };
    let Some(runtime) = runtime(Some(1)) else {
        return ExitCode::FAILURE;
    };
    match runtime.block_on(crate::admin::post(
        &args.addr,
        path,
        args.token.as_deref(),
        &body,
        tls.as_ref(),
    )) {
        Ok((200, answer)) => {
            print!("{answer}");
            ExitCode::SUCCESS
        }
        Ok((status, answer)) => {
            eprint!("floodgate admin: HTTP {status}: {answer}");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("floodgate admin: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `floodgate check`: writes a summary to `out` and each error to `err`.
pub fn check(
    args: &CheckArgs,
    out: &mut dyn std::io::Write,
    err: &mut dyn std::io::Write,
) -> ExitCode {
    match rules::load_paths(&args.paths, args.merge_domains) {
        Ok(set) => {
            let _ = writeln!(out, "OK: {} domain(s)", set.len());
            ExitCode::SUCCESS
        }
        Err(errors) => {
            let _ = writeln!(err, "{}", rules::report(&errors));
            ExitCode::FAILURE
        }
    }
}

/// The runtime (multi-threaded, or one thread when `threads` is 1), or
/// `None` after saying why not.
fn runtime(threads: Option<usize>) -> Option<tokio::runtime::Runtime> {
    let builder = match threads {
        Some(1) => tokio::runtime::Builder::new_current_thread(),
        Some(n) => {
            let mut builder = tokio::runtime::Builder::new_multi_thread();
            builder.worker_threads(n);
            builder
        }
        None => tokio::runtime::Builder::new_multi_thread(),
    };
    build(builder)
}

/// The runtime a server (`serve`, `ceiling`) runs on: one worker per core,
/// woken tasks run in the order they were woken.
///
/// Tokio's default runs the task woken last first (its "LIFO slot"). On a
/// server that answers many HTTP/2 streams, that is the wrong order: when
/// a Redis reply answers a batch of calls, each call's stream task wakes
/// its connection's task, which then runs at once and writes that one
/// response. In order, every woken stream queues its response first and
/// each connection writes them together: on this project's machine
/// (`perf stat`, h2load 16x16 on a single Redis) 0.83 `writev`s per call
/// became 0.10, and a fifth more calls were answered. The switch is an
/// unstable tokio API, so
/// the workspace builds with `--cfg tokio_unstable` (`.cargo/config.toml`);
/// a build without it keeps tokio's default (a test says so).
fn server_runtime() -> Option<tokio::runtime::Runtime> {
    build(server_builder())
}

/// [`server_runtime`]'s settings.
fn server_builder() -> tokio::runtime::Builder {
    #[cfg_attr(not(tokio_unstable), allow(unused_mut))]
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    #[cfg(tokio_unstable)]
    builder.disable_lifo_slot();
    builder
}

/// Builds a runtime with its I/O and timers, or says why not.
fn build(mut builder: tokio::runtime::Builder) -> Option<tokio::runtime::Runtime> {
    match builder.enable_all().build() {
        Ok(runtime) => Some(runtime),
        Err(e) => {
            eprintln!("floodgate: cannot start the async runtime: {e}");
            None
        }
    }
}

/// `floodgate bench`: runs the load and prints the summary (text or JSON).
fn bench(args: &crate::bench::BenchArgs) -> ExitCode {
    if args.threads == 0 {
        eprintln!("floodgate bench: --threads must be at least 1");
        return ExitCode::FAILURE;
    }
    let Some(runtime) = runtime(Some(args.threads)) else {
        return ExitCode::FAILURE;
    };
    match runtime.block_on(crate::bench::run(args)) {
        Ok(summary) if args.json => match serde_json::to_string_pretty(&summary) {
            Ok(json) => {
                println!("{json}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("floodgate bench: {e}");
                ExitCode::FAILURE
            }
        },
        Ok(summary) => {
            print!("{}", crate::bench::render(&summary));
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("floodgate bench: {e}");
            ExitCode::FAILURE
        }
    }
}

fn serve(args: ServeArgs) -> ExitCode {
    let (config, ignored) = match serve_config(args) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("floodgate: {e}");
            return ExitCode::from(2);
        }
    };
    let Some(runtime) = server_runtime() else {
        return ExitCode::FAILURE;
    };
    // The OTLP exporter's client lives on this runtime; `telemetry` flushes
    // the last spans when dropped, after the server has stopped.
    let telemetry = {
        let _runtime = runtime.enter();
        crate::telemetry::init(
            config.log_format,
            &config.log_level,
            config.trace_sampling_ratio,
        )
    };
    let _telemetry = match telemetry {
        Ok(telemetry) => telemetry,
        Err(e) => {
            eprintln!("floodgate: {e}");
            return ExitCode::from(2);
        }
    };
    for line in &ignored.ignored {
        tracing::warn!("{line} (envoyproxy/ratelimit variable not honoured)");
    }
    for line in &ignored.unused {
        tracing::info!("{line} (envoyproxy/ratelimit variable without effect there either)");
    }
    runtime.block_on(async move {
        // Signal handlers first: a SIGTERM or SIGHUP during startup must not
        // kill the process.
        let shutdown = crate::shutdown::signal();
        let listeners = match bind_listeners(&config) {
            Ok(listeners) => listeners,
            Err(e) => {
                tracing::error!("{e}");
                return ExitCode::FAILURE;
            }
        };
        let clock = clock(&config);
        match crate::run_with_clock(config, listeners, shutdown, clock).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                tracing::error!("{e}");
                ExitCode::FAILURE
            }
        }
    })
}

/// The settings: the file, then the environment (with another service's
/// variables under `FLOODGATE_*` ones, with `--compat`), then the flags.
/// Also: what the other service's variables came to (the lines saying
/// which have no effect, to log).
fn serve_config(
    args: ServeArgs,
) -> Result<(Config, crate::config::compat::Translated), crate::config::ConfigError> {
    let mut env: std::collections::HashMap<String, String> = std::env::vars().collect();
    let ignored = match args.compat {
        Some(crate::config::compat::Compat::EnvoyRatelimit) => {
            let mut translated = crate::config::compat::envoy_ratelimit(&env)?;
            env.extend(std::mem::take(&mut translated.variables));
            translated
        }
        None => crate::config::compat::Translated::default(),
    };
    let path = |p: Option<PathBuf>| p.map(|p| p.display().to_string());
    let overrides = [
        ("rules", args.rules.map(|p| p.display().to_string())),
        ("redis_url", args.redis_url),
        ("redis_mode", args.redis_mode),
        ("redis_sentinel_master", args.redis_sentinel_master),
        ("on_store_failure", args.on_store_failure),
        ("grpc_addr", args.grpc_addr),
        ("http_addr", args.http_addr),
        ("admin_addr", args.admin_addr),
        ("cache_key_prefix", args.cache_key_prefix),
        (
            "merge_domains",
            args.merge_domains.then(|| "true".to_owned()),
        ),
        ("log_level", args.log_level),
        ("log_format", args.log_format),
        ("grpc_tls_cert_file", path(args.grpc_tls_cert_file)),
        ("grpc_tls_key_file", path(args.grpc_tls_key_file)),
        (
            "grpc_tls_client_ca_file",
            path(args.grpc_tls_client_ca_file),
        ),
        ("http_tls_cert_file", path(args.http_tls_cert_file)),
        ("http_tls_key_file", path(args.http_tls_key_file)),
        (
            "http_tls_client_ca_file",
            path(args.http_tls_client_ca_file),
        ),
        ("admin_tls_cert_file", path(args.admin_tls_cert_file)),
        ("admin_tls_key_file", path(args.admin_tls_key_file)),
        (
            "admin_tls_client_ca_file",
            path(args.admin_tls_client_ca_file),
        ),
    ];
    let config =
        Settings::load(args.config.as_deref(), env, &overrides).and_then(Config::try_from)?;
    Ok((config, ignored))
}

/// Binds the gRPC, HTTP and (if set) admin and metrics listeners.
fn bind_listeners(config: &Config) -> Result<Listeners, String> {
    let backlog = config.listeners.listen_backlog;
    let bind = |addr| {
        crate::transport::bind(addr, backlog).map_err(|e| format!("cannot listen on {addr}: {e}"))
    };
    let admin = match config.admin_addr {
        Some(addr) => bind(addr).map(Some),
        None => Ok(None),
    };
    let metrics = match config.metrics_listener.addr {
        Some(addr) => bind(addr).map(Some),
        None => Ok(None),
    };
    match (
        bind(config.grpc_addr),
        bind(config.http_addr),
        admin,
        metrics,
    ) {
        (Ok(grpc), Ok(http), Ok(admin), Ok(metrics)) => Ok(Listeners {
            grpc,
            http,
            admin,
            metrics,
        }),
        (Err(e), ..) | (_, Err(e), ..) | (.., Err(e), _) | (.., Err(e)) => Err(e),
    }
}

/// The system clock, skewed by `clock_offset_ms` if set (for tests).
fn clock(config: &Config) -> crate::clock::Clock {
    match config.clock_offset_ms {
        0 => crate::clock::Clock::System,
        offset => {
            tracing::warn!(
                offset_ms = offset,
                "clock_offset_ms is set: this server's clock is skewed on purpose"
            );
            crate::clock::Clock::Offset(offset)
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::{Cli, Command};
    use crate::tls::client::testing::Pki;

    fn parse(args: &[&str]) -> Command {
        let argv = ["floodgate"].iter().chain(args);
        Cli::try_parse_from(argv).unwrap().command
    }

    #[test]
    fn started_as_ratelimit_it_serves_with_envoy_ratelimits_environment() {
        use super::arguments;
        let as_given = |argv: &[&str]| -> Vec<String> {
            arguments(argv.iter().map(std::ffi::OsString::from))
                .iter()
                .map(|a| a.to_string_lossy().into_owned())
                .collect()
        };
        let serve = ["floodgate", "serve", "--compat", "envoy-ratelimit"];
        assert_eq!(as_given(&["/bin/ratelimit"]), serve);
        assert_eq!(as_given(&["ratelimit"]), serve);
        assert_eq!(
            as_given(&["/bin/ratelimit", "--log-level", "debug"]),
            [&serve[..], &["--log-level", "debug"]].concat()
        );
        let Command::Serve(args) =
            Cli::try_parse_from(arguments(["/bin/ratelimit"].map(std::ffi::OsString::from)))
                .unwrap()
                .command
        else {
            panic!("not serve");
        };
        assert_eq!(
            args.compat,
            Some(crate::config::compat::Compat::EnvoyRatelimit)
        );
        // Any other name is the floodgate command line.
        let other = ["/usr/local/bin/floodgate", "check", "rules"];
        assert_eq!(as_given(&other), other);
        assert_eq!(as_given(&["/bin/ratelimit-x"])[0], "/bin/ratelimit-x");
    }

    #[test]
    fn a_servers_runtime_runs_woken_tasks_in_the_order_they_were_woken() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        use std::sync::{Arc, Mutex};
        use tokio::sync::oneshot;
        // One worker: no other worker steals, the order is the scheduler's.
        let mut builder = super::server_builder();
        builder.worker_threads(1);
        let runtime = super::build(builder).unwrap();
        let order = Arc::new(Mutex::new(Vec::new()));
        let (ran, waiting) = (order.clone(), Arc::new(AtomicUsize::new(0)));
        runtime.block_on(async move {
            // From a task on the worker, as a Redis reply wakes the calls.
            tokio::spawn(async move {
                let mut wakers = Vec::new();
                let mut tasks = Vec::new();
                for name in ["first", "second", "third"] {
                    let (wake, woken) = oneshot::channel::<()>();
                    let (ran, waiting) = (ran.clone(), waiting.clone());
                    wakers.push(wake);
                    tasks.push(tokio::spawn(async move {
                        waiting.fetch_add(1, Ordering::SeqCst);
                        let _ = woken.await;
                        ran.lock().unwrap().push(name);
                    }));
                }
                while waiting.load(Ordering::SeqCst) < 3 {
                    tokio::task::yield_now().await;
                }
                for wake in wakers {
                    wake.send(()).unwrap();
                }
                for task in tasks {
                    task.await.unwrap();
                }
            })
            .await
            .unwrap();
        });
        // Tokio's default (the LIFO slot) runs "third" first.
        assert_eq!(*order.lock().unwrap(), ["first", "second", "third"]);
    }

    #[test]
    fn no_two_flags_of_a_command_clash() {
        // clap checks every command's arguments (ids, names, globals).
        <Cli as clap::CommandFactory>::command().debug_assert();
    }

    #[test]
    fn admin_tls_flags_go_anywhere_and_make_a_client_config() {
        let pki = Pki::new();
        let ca = pki.path("ca.pem").display().to_string();
        let cert = pki.path("client.pem").display().to_string();
        let key = pki.path("client.key").display().to_string();
        // Global, like --addr: before or after the action.
        let Command::Admin(admin) = parse(&[
            "admin",
            "--tls-ca",
            &ca,
            "get",
            "--domain",
            "edge",
            "user=a",
            "--tls-cert",
            &cert,
            "--tls-key",
            &key,
            "--addr",
            "[::1]:6070",
        ]) else {
            panic!("not admin");
        };
        let tls = admin.tls().unwrap().unwrap();
        assert_eq!(tls.server_name(), "::1", "the host of --addr");

        let Command::Admin(plain) = parse(&["admin", "get", "--domain", "edge", "user=a"]) else {
            panic!("not admin");
        };
        assert!(plain.tls().unwrap().is_none(), "no flag: no TLS");

        let Command::Admin(half) = parse(&[
            "admin",
            "reset",
            "--domain",
            "edge",
            "user=a",
            "--tls-ca",
            &ca,
            "--tls-key",
            &key,
        ]) else {
            panic!("not admin");
        };
        assert_eq!(
            half.tls().unwrap_err().to_string(),
            format!(
                "--tls-key {key} without --tls-cert: a client certificate needs both --tls-cert FILE and --tls-key FILE"
            )
        );
    }

    #[test]
    fn bench_takes_the_same_tls_flags() {
        let Command::Bench(bench) = parse(&[
            "bench",
            "--target",
            "https://localhost:8081",
            "--tls-ca",
            "ca.pem",
            "--tls-cert",
            "c.pem",
            "--tls-key",
            "c.key",
            "--tls-server-name",
            "floodgate.infra",
        ]) else {
            panic!("not bench");
        };
        assert_eq!(bench.tls.ca.unwrap().display().to_string(), "ca.pem");
        assert_eq!(bench.tls.cert.unwrap().display().to_string(), "c.pem");
        assert_eq!(bench.tls.key.unwrap().display().to_string(), "c.key");
        assert_eq!(bench.tls.server_name.as_deref(), Some("floodgate.infra"));
    }
}
