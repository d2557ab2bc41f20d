//! The end-to-end harness: real processes on loopback, started and stopped by
//! the tests themselves. One module per topology or job:
//!
//! - [`host`]: the repository root, free ports, tools from the Python venv
//!   that the test command creates (`envoy`, `python`), found without
//!   relying on `PATH`.
//! - [`redis_single`]: [`RedisServer`], a `redis-server` on a free port, in a
//!   temporary directory, killed on drop.
//! - [`redis_cluster`], [`redis_sentinel`], [`redis_tls`]: Redis topologies
//!   ([`RedisCluster`], [`RedisSentinel`], [`TlsRedis`] with ACLs) on free
//!   loopback ports, built from the processes of [`redis_node`].
//! - [`pki`]: test certificates (CA, servers, clients with identities).
//! - [`redis_command`]: one command to one node, through the `redis` crate.
//! - [`server`]: Floodgate itself, in-process ([`TestServer`], drained on
//!   [`TestServer::stop`]) or as the `floodgate` binary ([`ServerProcess`]).
//! - [`xds`]: [`xds::XdsServer`], an xDS management server that pushes
//!   `RateLimitConfig` resources and records each ACK and NACK.
//! - [`rpc`]: requests, descriptors and minimal HTTP calls, as a client
//!   makes them; [`load`]: many calls at once, for the topology tests.
//!
//! Nothing here skips: a missing `redis-server` or venv tool is a test
//! failure that says how to install it (the README's test command does).

pub mod host;
pub mod load;
pub mod pki;
pub mod redis_cluster;
pub mod redis_command;
pub mod redis_node;
pub mod redis_sentinel;
pub mod redis_single;
pub mod redis_tls;
pub mod rpc;
pub mod server;
pub mod xds;

pub use host::{
    free_port, venv_bin, with_time_left_in_minute, with_time_left_in_window, workspace_root,
};
pub use redis_cluster::{RedisCluster, key_slot};
pub use redis_node::Failover;
pub use redis_sentinel::RedisSentinel;
pub use redis_single::RedisServer;
pub use redis_tls::TlsRedis;
pub use rpc::{degraded, descriptor, http_get, http_post, metric, metric_value, request};
pub use server::{
    BENCH_RULES, ServerProcess, TestServer, config_with_redis, config_with_rules, floodgate_bin,
    rules_dir, user_rules, wait_until_listening,
};
