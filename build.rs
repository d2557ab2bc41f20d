//! Compiles `proto/` into Rust types and tonic stubs with pure-Rust tools
//! (`protox` parses, `tonic-prost-build` generates): no system `protoc`.
//! Also writes the file descriptor set that gRPC reflection and the `/json`
//! endpoint's proto3-JSON mapping read at run time.

use std::path::PathBuf;

const PROTOS: &[&str] = &[
    "proto/envoy/service/ratelimit/v3/rls.proto",
    "proto/envoy/extensions/common/ratelimit/v3/ratelimit.proto",
    "proto/envoy/type/v3/ratelimit_unit.proto",
    "proto/envoy/type/v3/ratelimit_strategy.proto",
    "proto/envoy/type/v3/token_bucket.proto",
    "proto/envoy/service/rate_limit_quota/v3/rlqs.proto",
    "proto/envoy/config/core/v3/base.proto",
    "proto/envoy/service/discovery/v3/discovery.proto",
    "proto/envoy/service/discovery/v3/ads.proto",
    "proto/google/rpc/status.proto",
    "proto/ratelimit/config/ratelimit/v3/rls_conf.proto",
    "proto/ratelimit/service/ratelimit/v3/rls_conf_ds.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    let fds = protox::compile(PROTOS, ["proto"])?;
    std::fs::write(
        out.join("floodgate_descriptor.bin"),
        prost::Message::encode_to_vec(&fds),
    )?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .compile_fds(fds)?;
    Ok(())
}
