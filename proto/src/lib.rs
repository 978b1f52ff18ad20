//! The gRPC contract between the Warden filter and the Warden collector.
//!
//! `pb` holds the prost messages (they build for wasm32, which the filter needs); with the `grpc`
//! feature it also holds the tonic client and server stubs the collector and tests use.

pub mod contract;

/// Generated from `proto/warden/v1/warden.proto`.
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod pb {
    include!(concat!(env!("OUT_DIR"), "/warden.v1.rs"));
}
