//! The wire: code generated from `proto/` (the single source of truth), the proto3 JSON mapping of
//! every message, and frame encoding for both WebSocket flavours.
//!
//! This crate holds no logic beyond encoding and decoding.

pub mod v1 {
    #![allow(clippy::all, clippy::pedantic)]
    include!(concat!(env!("OUT_DIR"), "/parley.v1.rs"));
    include!(concat!(env!("OUT_DIR"), "/parley.v1.serde.rs"));
}

/// The cluster's internal gRPC API (proto/parley/cluster/v1/cluster.proto).
#[cfg(feature = "grpc")]
pub mod cluster {
    pub mod v1 {
        #![allow(clippy::all, clippy::pedantic)]
        include!(concat!(env!("OUT_DIR"), "/parley.cluster.v1.rs"));
    }
}

/// The server API for app backends over gRPC (proto/parley/server/v1/server.proto).
#[cfg(feature = "grpc")]
pub mod server {
    pub mod v1 {
        #![allow(clippy::all, clippy::pedantic)]
        include!(concat!(env!("OUT_DIR"), "/parley.server.v1.rs"));
    }
}

#[cfg(feature = "grpc")]
pub mod cluster_auth;
mod codec;
#[cfg(feature = "grpc")]
pub mod grpc_error;

pub use codec::Codec;
pub use codec::DecodeError;
pub use codec::Frame;
pub use codec::SUBPROTOCOL_JSON;
pub use codec::SUBPROTOCOL_PROTO;
pub use codec::SharedFrame;
pub use codec::Utf8;
