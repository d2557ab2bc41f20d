//! Envoy Rate Limit Service v3 wire types and gRPC stubs, generated from the
//! self-contained definitions in `proto/` by the root `build.rs`.
//!
//! This crate holds generated code only. The server (`floodgate-server`) and
//! the client (`floodgate-client`) both build on it, so there is exactly one
//! copy of the wire types in the workspace.

#![allow(missing_docs, unreachable_pub, clippy::all, rust_2018_idioms)]

/// Generated packages, mirroring the protobuf package tree.
pub mod envoy {
    /// `envoy.config.*`
    pub mod config {
        /// `envoy.config.core`
        pub mod core {
            /// `envoy.config.core.v3`
            pub mod v3 {
                tonic::include_proto!("envoy.config.core.v3");
            }
        }
    }
    /// `envoy.extensions.*`
    pub mod extensions {
        /// `envoy.extensions.common`
        pub mod common {
            /// `envoy.extensions.common.ratelimit`
            pub mod ratelimit {
                /// `envoy.extensions.common.ratelimit.v3`
                pub mod v3 {
                    tonic::include_proto!("envoy.extensions.common.ratelimit.v3");
                }
            }
        }
    }
    /// `envoy.service.*`
    pub mod service {
        /// `envoy.service.discovery`
        pub mod discovery {
            /// `envoy.service.discovery.v3`: xDS (rules over ADS).
            pub mod v3 {
                tonic::include_proto!("envoy.service.discovery.v3");
            }
        }
        /// `envoy.service.rate_limit_quota`
        pub mod rate_limit_quota {
            /// `envoy.service.rate_limit_quota.v3`: the Rate Limit Quota Service (RLQS).
            pub mod v3 {
                tonic::include_proto!("envoy.service.rate_limit_quota.v3");
            }
        }
        /// `envoy.service.ratelimit`
        pub mod ratelimit {
            /// `envoy.service.ratelimit.v3`
            pub mod v3 {
                tonic::include_proto!("envoy.service.ratelimit.v3");
            }
        }
    }
    /// `envoy.type.*`
    pub mod r#type {
        /// `envoy.type.v3`
        pub mod v3 {
            tonic::include_proto!("envoy.r#type.v3");
        }
    }
}

/// `google.*`
pub mod google {
    /// `google.rpc`
    pub mod rpc {
        tonic::include_proto!("google.rpc");
    }
}

/// `ratelimit.*`: the rate limit service's rules as an xDS resource.
pub mod ratelimit {
    /// `ratelimit.config`
    pub mod config {
        /// `ratelimit.config.ratelimit`
        pub mod ratelimit {
            /// `ratelimit.config.ratelimit.v3`
            pub mod v3 {
                tonic::include_proto!("ratelimit.config.ratelimit.v3");
            }
        }
    }
    /// `ratelimit.service`
    pub mod service {
        /// `ratelimit.service.ratelimit`
        pub mod ratelimit {
            /// `ratelimit.service.ratelimit.v3`
            pub mod v3 {
                tonic::include_proto!("ratelimit.service.ratelimit.v3");
            }
        }
    }
}

/// The type URL of a [`ratelimit::config::ratelimit::v3::RateLimitConfig`]
/// resource in xDS.
pub const RATE_LIMIT_CONFIG_TYPE_URL: &str =
    "type.googleapis.com/ratelimit.config.ratelimit.v3.RateLimitConfig";

pub use envoy::extensions::common::ratelimit::v3::{RateLimitDescriptor, rate_limit_descriptor};
pub use envoy::service::ratelimit::v3::{
    RateLimitRequest, RateLimitResponse, rate_limit_response,
    rate_limit_service_client::RateLimitServiceClient,
    rate_limit_service_server::{RateLimitService, RateLimitServiceServer},
};

/// The encoded `FileDescriptorSet` of everything in `proto/` (plus the
/// well-known types it imports), for gRPC reflection and proto3-JSON mapping.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/floodgate_descriptor.bin"));
