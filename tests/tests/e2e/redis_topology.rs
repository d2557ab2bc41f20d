//! The Redis topologies of the harness really start and behave: a cluster of
//! 3 primaries with a replica each fails over when a primary dies, sentinels
//! promote the replica when the master dies, and the TLS server answers only
//! clients that trust its CA (and, when it requires one, present a
//! certificate it trusts), with its ACL users' passwords.

#![allow(clippy::unwrap_used)] // Tests: a failed unwrap is a failed test.

use std::collections::HashSet;
use std::path::Path;
use std::process::Output;
use std::time::Duration;

use redis::Value;
use tokio::time::Instant;

use floodgate_e2e::redis_cluster::{CLUSTER_SLOTS, crc16};
use floodgate_e2e::redis_command::{command, error_text, pipeline, text};
use floodgate_e2e::{RedisCluster, RedisSentinel, RedisServer, TlsRedis, key_slot};

#[test]
fn key_slot_matches_known_values() {
    assert_eq!(crc16(b"123456789"), 0x31C3);
    assert_eq!(key_slot(b"foo"), 12182);
    assert_eq!(key_slot(b"bar"), 5061);
    assert_eq!(key_slot(b"hello"), 866);
    assert_eq!(key_slot(b""), 0);
    assert_eq!(
        key_slot(b"{user1000}.following"),
        key_slot(b"{user1000}.followers")
    );
    assert_eq!(key_slot(b"{user1000}.following"), key_slot(b"user1000"));
    // Only the first `{` and the first `}` after it count; an empty tag
    // means the whole key is hashed.
    assert_eq!(key_slot(b"foo{bar}{zap}"), key_slot(b"bar"));
    assert_eq!(key_slot(b"foo{{bar}}zap"), key_slot(b"{bar"));
    assert_eq!(
        key_slot(b"foo{}{bar}"),
        crc16(b"foo{}{bar}") % CLUSTER_SLOTS
    );
    assert_eq!(key_slot(b"foo{bar"), crc16(b"foo{bar") % CLUSTER_SLOTS);
}

fn error_of(reply: Value) -> String {
    error_text(&reply).unwrap_or_else(|| panic!("expected an error, got {reply:?}"))
}

#[test]
fn cluster_has_three_replicated_primaries_and_fails_over() {
    let started = Instant::now();
    let cluster = RedisCluster::start();
    eprintln!("cluster started in {:?}", started.elapsed());

    // 3 primaries, each with one replica, covering every slot exactly once.
    let nodes = cluster.cluster_nodes();
    assert_eq!(nodes.len(), 6, "{nodes:?}");
    let primaries: Vec<_> = nodes.iter().filter(|n| n.is_primary()).collect();
    assert_eq!(primaries.len(), 3, "{nodes:?}");
    let mut slots = HashSet::new();
    for primary in &primaries {
        let replicas = nodes
            .iter()
            .filter(|n| n.primary_id.as_deref() == Some(primary.id.as_str()))
            .count();
        assert_eq!(replicas, 1, "primary {}: {nodes:?}", primary.port);
        for slot in primary.slots.iter().flat_map(|r| r.clone()) {
            assert!(slots.insert(slot), "slot {slot} served twice");
        }
    }
    assert_eq!(slots.len(), usize::from(CLUSTER_SLOTS));
    assert_eq!(cluster.primary_ports(), cluster.ports()[..3]);
    assert_eq!(cluster.replica_ports().len(), 3);
    let seeds = cluster.seed_urls();
    assert_eq!(seeds.split(',').count(), 3, "{seeds}");
    assert!(
        seeds
            .split(',')
            .all(|u| u.starts_with("redis://127.0.0.1:"))
    );

    // key_slot agrees with the server.
    let any = cluster.ports()[0];
    for key in [
        "foo",
        "{user1000}.following",
        "a{}b",
        "x{{y}}z",
        "rl_edge_user_alice_1",
    ] {
        let server = command(any, &["CLUSTER", "KEYSLOT", key]).unwrap();
        assert_eq!(
            server,
            Value::Int(i64::from(key_slot(key.as_bytes()))),
            "{key}"
        );
    }

    // The slot's owner takes the key; another primary redirects.
    let owner = cluster.primary_for_key(b"foo");
    let other = *cluster
        .primary_ports()
        .iter()
        .find(|&&p| p != owner)
        .unwrap();
    assert_eq!(command(owner, &["SET", "foo", "1"]).unwrap(), Value::Okay);
    let moved = error_of(command(other, &["GET", "foo"]).unwrap());
    assert_eq!(moved, format!("MOVED 12182 127.0.0.1:{owner}"));

    // flushall and script_flush reach the owner.
    cluster.flushall();
    assert_eq!(command(owner, &["GET", "foo"]).unwrap(), Value::Nil);
    let sha = text(&command(owner, &["SCRIPT", "LOAD", "return 7"]).unwrap()).unwrap();
    assert_eq!(
        command(owner, &["EVALSHA", &sha, "0"]).unwrap(),
        Value::Int(7)
    );
    cluster.script_flush();
    let noscript = error_of(command(owner, &["EVALSHA", &sha, "0"]).unwrap());
    assert!(noscript.starts_with("NOSCRIPT"), "{noscript}");

    // Killing the owner promotes its replica.
    let owner_id = &nodes.iter().find(|n| n.port == owner).unwrap().id;
    let replica = nodes
        .iter()
        .find(|n| n.primary_id.as_ref() == Some(owner_id))
        .unwrap()
        .port;
    cluster.kill_node(owner);
    let new = cluster.wait_for_failover(owner, Duration::from_secs(15));
    let failover = cluster.last_failover().unwrap();
    eprintln!(
        "cluster failover: promoted after {:?}, settled after {:?}",
        failover.promotion_delay(),
        failover.settle_delay()
    );
    assert_eq!(new, replica);
    assert_eq!((failover.old_port, failover.new_port), (owner, new));
    assert_eq!(cluster.primary_for_slot(key_slot(b"foo")), new);
    assert_eq!(command(new, &["SET", "foo", "2"]).unwrap(), Value::Okay);
    assert_eq!(cluster.primary_ports().len(), 3);

    // The old primary comes back as a replica of the new one.
    let restarted = Instant::now();
    cluster.restart_node(owner);
    eprintln!("cluster node rejoined in {:?}", restarted.elapsed());
    assert!(cluster.replica_ports().contains(&owner));
    assert_eq!(cluster.primary_for_slot(key_slot(b"foo")), new);
}

#[test]
fn sentinels_promote_the_replica_when_the_master_dies() {
    let started = Instant::now();
    let sentinel = RedisSentinel::start();
    eprintln!("sentinel topology started in {:?}", started.elapsed());

    assert_eq!(sentinel.master_name(), "mymaster");
    let urls = sentinel.sentinel_urls();
    assert_eq!(urls.split(',').count(), 3, "{urls}");
    let [master, replica] = sentinel.data_ports()[..] else {
        panic!("two data nodes expected");
    };
    assert_eq!(sentinel.master_port(), master);
    assert_eq!(sentinel.replica_ports(), [replica]);
    let role = |port| command(port, &["ROLE"]).unwrap().as_sequence().unwrap()[0].clone();
    assert_eq!(role(master), Value::BulkString(b"master".to_vec()));
    assert_eq!(role(replica), Value::BulkString(b"slave".to_vec()));

    assert_eq!(sentinel.kill_master(), master);
    let new = sentinel.wait_for_failover(Duration::from_secs(15));
    let failover = sentinel.last_failover().unwrap();
    eprintln!(
        "sentinel failover: promoted after {:?}, all sentinels agreed after {:?}",
        failover.promotion_delay(),
        failover.settle_delay()
    );
    assert_eq!(new, replica);
    assert_eq!(role(new), Value::BulkString(b"master".to_vec()));
    assert_eq!(sentinel.master_port(), new);
    assert_eq!(command(new, &["SET", "k", "v"]).unwrap(), Value::Okay);
}

/// `redis-cli --tls ... [--cert CERT --key KEY] --user USER --pass PW PING`.
fn tls_ping(
    redis: &TlsRedis,
    ca: &Path,
    client: Option<(&Path, &Path)>,
    user: &str,
    password: &str,
) -> Output {
    let mut cli = redis.cli_bare();
    cli.arg("--cacert").arg(ca);
    if let Some((cert, key)) = client {
        cli.arg("--cert").arg(cert).arg("--key").arg(key);
    }
    cli.args([
        "--user",
        user,
        "--pass",
        password,
        "--no-auth-warning",
        "PING",
    ])
    .output()
    .expect("run redis-cli")
}

fn ponged(output: &Output) -> bool {
    String::from_utf8_lossy(&output.stdout).trim() == "PONG"
}

#[test]
fn tls_redis_answers_clients_that_trust_its_ca() {
    let redis = TlsRedis::start(false);
    assert!(!redis.requires_client_cert());
    assert_eq!(
        redis.url(),
        format!("rediss://floodgate:s3cret-pw@127.0.0.1:{}", redis.port())
    );
    let ca = redis.ca_file();
    let (user, pw, default_pw) = (
        TlsRedis::USER,
        TlsRedis::PASSWORD,
        TlsRedis::DEFAULT_PASSWORD,
    );

    let ok = tls_ping(&redis, &ca, None, user, pw);
    assert!(ponged(&ok), "{ok:?}\n{}", redis.log_tail());
    let ok = tls_ping(&redis, &ca, None, "default", default_pw);
    assert!(ponged(&ok), "{ok:?}");
    let client = (redis.client_cert_file(), redis.client_key_file());
    let ok = tls_ping(&redis, &ca, Some((&client.0, &client.1)), user, pw);
    assert!(ponged(&ok), "{ok:?}");

    let wrong_password = tls_ping(&redis, &ca, None, user, "nope");
    assert!(!ponged(&wrong_password), "{wrong_password:?}");
    assert!(
        String::from_utf8_lossy(&wrong_password.stderr).contains("WRONGPASS"),
        "{wrong_password:?}"
    );
    let untrusted = tls_ping(&redis, &redis.other_ca_file(), None, user, pw);
    assert!(!ponged(&untrusted), "{untrusted:?}");
    assert!(
        String::from_utf8_lossy(&untrusted.stderr).contains("certificate verify failed"),
        "{untrusted:?}"
    );

    // No plain-text port: a RESP PING on the TLS port gets no PONG.
    assert!(!matches!(
        command(redis.port(), &["PING"]),
        Ok(Value::SimpleString(s)) if s == "PONG"
    ));
}

#[test]
fn tls_redis_can_require_a_trusted_client_certificate() {
    let redis = TlsRedis::start(true);
    assert!(redis.requires_client_cert());
    let ca = redis.ca_file();
    let (user, pw) = (TlsRedis::USER, TlsRedis::PASSWORD);
    let (cert, key) = (redis.client_cert_file(), redis.client_key_file());
    let ok = tls_ping(&redis, &ca, Some((&cert, &key)), user, pw);
    assert!(ponged(&ok), "{ok:?}\n{}", redis.log_tail());

    let without = tls_ping(&redis, &ca, None, user, pw);
    assert!(
        !ponged(&without) && !without.status.success(),
        "{without:?}"
    );
    let (bad_cert, bad_key) = (
        redis.untrusted_client_cert_file(),
        redis.untrusted_client_key_file(),
    );
    let untrusted = tls_ping(&redis, &ca, Some((&bad_cert, &bad_key)), user, pw);
    assert!(
        !ponged(&untrusted) && !untrusted.status.success(),
        "{untrusted:?}"
    );
}

#[test]
fn a_plain_redis_server_can_require_a_password() {
    let redis = RedisServer::start_with_args(&["--requirepass", "pw"]);
    let noauth = error_of(command(redis.port(), &["PING"]).unwrap());
    assert!(noauth.starts_with("NOAUTH"), "{noauth}");
    let replies = pipeline(redis.port(), &[&["AUTH", "pw"], &["PING"]]).unwrap();
    assert_eq!(replies, [Value::Okay, Value::SimpleString("PONG".into())]);
}
