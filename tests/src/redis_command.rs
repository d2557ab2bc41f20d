//! Commands to one Redis node on loopback, for the harness's topologies
//! and for tests that look inside Redis: [`command`] sends one command
//! through the `redis` crate's blocking client (RESP2), one connection per
//! call, with bounded waits; a Redis error is a reply
//! (`Value::ServerError`), not an `Err`.

use std::collections::HashMap;
use std::time::Duration;

use redis::{ConnectionLike, IntoConnectionInfo, RedisResult, Value};

/// How long a command may take to connect.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// How long a command may take to be sent and answered.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a readiness probe waits for `PONG`.
const PROBE_TIMEOUT: Duration = Duration::from_millis(200);

/// Sends one command to `127.0.0.1:port` on a new connection and reads its
/// reply. A Redis error is `Ok(Value::ServerError(..))` (see
/// [`error_text`]); `Err` is a connection or protocol failure (1 s to
/// connect, 2 s to answer).
pub fn command(port: u16, args: &[&str]) -> RedisResult<Value> {
    connect(port, ANSWER_TIMEOUT)?.req_command(&to_cmd(args))
}

/// A number from `INFO section`: the value of `name` (`connected_clients`),
/// or one field of it (`cmdstat_evalsha`, `calls`). A command Redis has not
/// run yet has no line: 0.
pub fn info_number(port: u16, section: &str, name: &str, field: Option<&str>) -> u64 {
    let text = command(port, &["INFO", section])
        .ok()
        .and_then(|r| text(&r))
        .unwrap_or_else(|| panic!("INFO {section} from port {port}"));
    let Some(value) = text
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
    else {
        return 0;
    };
    let value = match field {
        None => Some(value.trim()),
        Some(f) => value
            .split(',')
            .find_map(|kv| kv.strip_prefix(f)?.strip_prefix('=')),
    };
    value
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("INFO {section}: {name} {field:?} in {text}"))
}

/// Sends `commands` on one new connection (e.g. `AUTH` then the command) and
/// reads one reply per command, in order.
pub fn pipeline(port: u16, commands: &[&[&str]]) -> RedisResult<Vec<Value>> {
    let mut connection = connect(port, ANSWER_TIMEOUT)?;
    commands
        .iter()
        .map(|args| connection.req_command(&to_cmd(args)))
        .collect()
}

/// A blocking RESP2 connection to `127.0.0.1:port` that sends nothing of its
/// own (no `CLIENT SETINFO`: the node sees only the caller's commands).
fn connect(port: u16, answer_within: Duration) -> RedisResult<redis::Connection> {
    let info = ("127.0.0.1", port).into_connection_info()?;
    let settings = info.redis_settings().clone().set_skip_set_lib_name();
    let client = redis::Client::open(info.set_redis_settings(settings))?;
    let connection = client.get_connection_with_timeout(CONNECT_TIMEOUT)?;
    connection.set_read_timeout(Some(answer_within))?;
    connection.set_write_timeout(Some(answer_within))?;
    Ok(connection)
}

fn to_cmd(args: &[&str]) -> redis::Cmd {
    let mut cmd = redis::Cmd::new();
    for arg in args {
        cmd.arg(*arg);
    }
    cmd
}

/// The text of a simple-string (`OK` included) or bulk reply (bulk bytes
/// decoded lossily).
pub fn text(reply: &Value) -> Option<String> {
    match reply {
        Value::SimpleString(s) => Some(s.clone()),
        Value::Okay => Some("OK".to_owned()),
        Value::BulkString(b) => Some(String::from_utf8_lossy(b).into_owned()),
        _ => None,
    }
}

/// An error reply as the server wrote it, without the `-`
/// (`MOVED 12182 127.0.0.1:7001`); `None` for any other reply.
pub fn error_text(reply: &Value) -> Option<String> {
    let Value::ServerError(error) = reply else {
        return None;
    };
    Some(match error.details() {
        Some(details) => format!("{} {details}", error.code()),
        None => error.code().to_owned(),
    })
}

/// `command`, with Redis errors and connection failures both as a message.
pub(crate) fn query(port: u16, args: &[&str]) -> Result<Value, String> {
    match command(port, args) {
        Ok(reply) => match error_text(&reply) {
            Some(e) => Err(format!("port {port}: {args:?} -> -{e}")),
            None => Ok(reply),
        },
        Err(e) => Err(format!("port {port}: {args:?} -> {e}")),
    }
}

/// `query` for a command answering text (INFO, CLUSTER NODES, ...).
pub(crate) fn query_text(port: u16, args: &[&str]) -> Result<String, String> {
    let reply = query(port, args)?;
    text(&reply).ok_or_else(|| format!("port {port}: {args:?} -> unexpected {reply:?}"))
}

/// `query` for a reply that must be `+OK`.
pub(crate) fn query_ok(port: u16, args: &[&str]) -> Result<(), String> {
    match query(port, args)? {
        Value::Okay => Ok(()),
        other => Err(format!("port {port}: {args:?} -> unexpected {other:?}")),
    }
}

/// A field of an `INFO` section (`name:value` lines).
pub(crate) fn info_field<'a>(info: &'a str, name: &str) -> Option<&'a str> {
    info.lines().find_map(|line| {
        line.strip_prefix(name)
            .and_then(|rest| rest.strip_prefix(':'))
            .map(str::trim)
    })
}

/// The first element of `ROLE`: `master`, `slave` or `sentinel`.
pub(crate) fn role(port: u16) -> Result<String, String> {
    let reply = query(port, &["ROLE"])?;
    reply
        .as_sequence()
        .and_then(|items| items.first())
        .and_then(text)
        .ok_or_else(|| format!("port {port}: ROLE -> unexpected {reply:?}"))
}

/// A flat `[field, value, field, value, ...]` array (SENTINEL replies) as a map.
pub(crate) fn flat_map(reply: &Value) -> HashMap<String, String> {
    let items = reply.as_sequence().unwrap_or_default();
    items
        .chunks(2)
        .filter_map(|pair| Some((text(pair.first()?)?, text(pair.get(1)?)?)))
        .collect()
}

/// Whether `127.0.0.1:port` answers like a Redis server (within 200 ms):
/// `+PONG`, or `-NOAUTH` when it requires a password.
pub(crate) fn answers(port: u16) -> bool {
    let ping = connect(port, PROBE_TIMEOUT).and_then(|mut c| c.req_command(&to_cmd(&["PING"])));
    let Ok(reply) = ping else {
        return false;
    };
    matches!(&reply, Value::SimpleString(s) if s == "PONG")
        || error_text(&reply).is_some_and(|e| e.starts_with("NOAUTH"))
}

/// The one key of the Redis at `url` matching `pattern`, with its count and
/// TTL in seconds; panics (a failed test) unless exactly one key matches.
pub async fn the_counter(url: &str, pattern: &str) -> (String, u64, i64) {
    use redis::AsyncCommands as _;
    let mut redis = redis::Client::open(url)
        .expect("Redis URL")
        .get_multiplexed_async_connection()
        .await
        .expect("connect to Redis");
    let keys: Vec<String> = redis.keys(pattern).await.expect("KEYS");
    assert_eq!(keys.len(), 1, "one key matches {pattern}: {keys:?}");
    let count: u64 = redis.get(&keys[0]).await.expect("GET");
    let ttl: i64 = redis.ttl(&keys[0]).await.expect("TTL");
    (keys[0].clone(), count, ttl)
}
