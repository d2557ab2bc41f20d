//! The end-to-end suite, as one test binary: one module per area, each
//! starting the real processes it needs (`redis-server`s, Redis topologies,
//! Envoy, `floodgate serve`, Floodgate in-process) through the harness, the
//! `floodgate-e2e` library (`tests/src`). One binary links the world once
//! instead of once per file; a test's name is its module path
//! (`redis_cluster::...`), so `cargo test -p floodgate-e2e --test e2e
//! redis_cluster::` runs one area.
//!
//! The tests share the process and run in parallel threads (one per core
//! unless `--test-threads` says otherwise): nothing here sets environment
//! variables or installs a global subscriber, every port is a free one, and
//! every child process is stopped when its owner is dropped.

#![allow(clippy::unwrap_used)] // Tests: a failed unwrap is a failed test.

mod algorithms;
mod algorithms_e2e;
mod bench;
mod capacity;
mod capacity_envoy;
mod client;
mod counters;
mod envoy;
mod envoy_example;
mod envoy_ratelimit_env;
mod envoy_types_client;
mod from_envoy_ratelimit;
mod k8s_examples;
mod listeners;
mod metrics_listener;
mod monitoring;
mod operations;
mod python_client;
mod readme;
mod redis_cluster;
mod redis_connection;
mod redis_server;
mod redis_topology;
mod resilience;
mod rlqs;
mod store_conformance;
mod surface;
mod tls;
mod tls_clients;
mod traces;
mod xds;
