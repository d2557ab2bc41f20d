//! Floodgate where envoyproxy/ratelimit ran: the real binary started through
//! a link named `ratelimit` (as the image's `/bin/ratelimit`), with
//! envoyproxy/ratelimit's environment and nothing else, against a real
//! `redis-server`; and the Dockerfile that ships that link.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use floodgate_e2e::{RedisServer, floodgate_bin, free_port, request, wait_until_listening};
use floodgate_proto::RateLimitServiceClient;

/// Starts `ratelimit` (a link to floodgate in `dir`) with `env` only (plus
/// `PATH`), its stderr in `dir/stderr`.
fn start(dir: &Path, env: &[(&str, String)]) -> std::process::Child {
    let link = dir.join("ratelimit");
    if !link.exists() {
        std::os::unix::fs::symlink(floodgate_bin(), &link).unwrap();
    }
    let stderr = std::fs::File::create(dir.join("stderr")).unwrap();
    let mut command = std::process::Command::new(&link);
    command
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr);
    for (name, value) in env {
        command.env(name, value);
    }
    command.spawn().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn started_as_ratelimit_with_its_environment_it_limits_in_that_redis() {
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    // Laid out as they read it: RUNTIME_ROOT/RUNTIME_SUBDIRECTORY/config,
    // with a ConfigMap-like dotfile directory beside the file.
    let runtime = dir.path().join("runtime");
    let config = runtime.join("ratelimit").join("config");
    std::fs::create_dir_all(config.join("..2024_01_01")).unwrap();
    let rules = "domain: edge\ndescriptors:\n  - key: user\n    rate_limit: {unit: minute, requests_per_unit: 3}\n";
    std::fs::write(config.join("edge.yaml"), rules).unwrap();
    std::fs::write(config.join(".hidden.yaml"), "not: [yaml").unwrap();
    let (port, grpc_port) = (free_port(), free_port());
    let env = [
        ("CONFIG_TYPE", "FILE".to_owned()),
        ("RUNTIME_ROOT", runtime.display().to_string()),
        ("RUNTIME_SUBDIRECTORY", "ratelimit".to_owned()),
        ("RUNTIME_IGNOREDOTFILES", "true".to_owned()),
        ("REDIS_SOCKET_TYPE", "tcp".to_owned()),
        ("REDIS_URL", format!("127.0.0.1:{}", redis.port())),
        ("HOST", "127.0.0.1".to_owned()),
        ("PORT", port.to_string()),
        ("GRPC_HOST", "127.0.0.1".to_owned()),
        ("GRPC_PORT", grpc_port.to_string()),
        ("USE_STATSD", "false".to_owned()),
        ("LOG_LEVEL", "info".to_owned()),
        // Not honoured: logged once.
        ("REDIS_POOL_SIZE", "20".to_owned()),
        // Ours beside theirs: no admin listener (its default port may be taken).
        ("FLOODGATE_ADMIN_ADDR", String::new()),
    ];
    let mut child = start(dir.path(), &env);
    let addr = format!("127.0.0.1:{grpc_port}").parse().unwrap();
    wait_until_listening(addr, || match child.try_wait() {
        Ok(Some(status)) => Some(format!(
            "ratelimit exited: {status}: {}",
            std::fs::read_to_string(dir.path().join("stderr")).unwrap_or_default()
        )),
        _ => None,
    })
    .await;
    let mut client = RateLimitServiceClient::connect(format!("http://{addr}"))
        .await
        .unwrap();
    let mut codes = Vec::new();
    for _ in 0..4 {
        let call = request("edge", &[("user", "alice")]);
        let answer = client.should_rate_limit(call).await.unwrap().into_inner();
        codes.push(answer.overall_code);
    }
    assert_eq!(codes, [1, 1, 1, 2], "OK, OK, OK, OVER_LIMIT");
    // The counter is in that Redis, under envoyproxy/ratelimit's key.
    let (key, count, _) =
        floodgate_e2e::redis_command::the_counter(&redis.url(), "edge_user_alice_*").await;
    assert!(count >= 3, "{key} = {count}");
    // The HTTP listener is on HOST:PORT.
    let (status, _) =
        floodgate_e2e::http_get(&format!("http://127.0.0.1:{port}/healthcheck")).await;
    assert_eq!(status, 200);

    let _ = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = tokio::time::timeout(Duration::from_secs(15), async {
        while child.try_wait().ok().flatten().is_none() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    let _ = child.kill();
    let log = std::fs::read_to_string(dir.path().join("stderr")).unwrap();
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("REDIS_POOL_SIZE"))
        .collect();
    assert_eq!(lines.len(), 1, "logged once:\n{log}");
    assert!(
        lines[0].contains("WARN") && lines[0].contains("REDIS_POOL_SIZE=20: Floodgate multiplexes"),
        "{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_value_go_would_not_parse_stops_ratelimit_naming_the_variable() {
    let dir = tempfile::tempdir().unwrap();
    let env = [
        ("SHADOW_MODE", "yes".to_owned()),
        ("USE_STATSD", "false".to_owned()),
    ];
    let mut child = start(dir.path(), &env);
    let status = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("ratelimit stops at once");
    let log = std::fs::read_to_string(dir.path().join("stderr")).unwrap();
    assert_eq!(status.code(), Some(2), "{log}");
    assert!(
        log.contains("invalid SHADOW_MODE=\"yes\": not a boolean"),
        "{log}"
    );
}

#[test]
fn the_image_ships_bin_ratelimit_as_a_link_to_floodgate() {
    let dockerfile =
        std::fs::read_to_string(floodgate_e2e::workspace_root().join("Dockerfile")).unwrap();
    let lines: Vec<&str> = dockerfile.lines().map(str::trim).collect();
    // Made in the build stage (distroless has no shell to make it)...
    let build = lines
        .iter()
        .position(|l| l.starts_with("FROM ") && l.ends_with(" AS build"));
    let runtime = lines.iter().rposition(|l| l.starts_with("FROM "));
    let (build, runtime) = (build.unwrap(), runtime.unwrap());
    assert!(build < runtime);
    assert!(
        lines[build..runtime]
            .iter()
            .any(|l| l.contains("ln -s /usr/local/bin/floodgate /out/bin/ratelimit")),
        "{dockerfile}"
    );
    // ... and its directory copied into /bin, so the link stays a link.
    assert!(
        lines[runtime..].contains(&"COPY --from=build /out/bin/ /bin/"),
        "{dockerfile}"
    );
    assert!(
        lines[runtime..]
            .contains(&"COPY --from=build /usr/local/bin/floodgate /usr/local/bin/floodgate")
    );
}
