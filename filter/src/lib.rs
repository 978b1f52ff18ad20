//! Warden's proxy-wasm filter for Envoy: records every completed HTTP request as an
//! `AccessRecord`, ships them in batches to the collector over gRPC, and enforces the deny list
//! the collector pushes.
//!
//! The logic lives in plain modules tested on the host: configuration ([`config`]), what a
//! request costs Envoy to describe ([`attributes`], [`headers`]), the record and its encoding
//! ([`record`], [`request`], [`identity`], [`response_flags`]), batching ([`batch`]), the deny
//! list, its stream and its reply ([`denylist`], [`subscribe`], [`deny_reply`]), counters
//! ([`metrics`]) and the VM's callbacks ([`vm`]). They reach Envoy only through the
//! [`host::Host`] trait; `abi.rs` implements it over the proxy-wasm ABI and exports the
//! callbacks, and is the only code compiled for wasm32 alone.

pub mod attributes;
pub mod batch;
pub mod config;
pub mod deny_reply;
pub mod denylist;
pub mod headers;
pub mod host;
pub mod identity;
pub mod metrics;
pub mod record;
pub mod request;
pub mod response_flags;
pub mod subscribe;
pub mod summary;
pub mod vm;

#[cfg(target_arch = "wasm32")]
mod abi;
#[cfg(test)]
mod fake_host;

pub use warden_proto::pb;
