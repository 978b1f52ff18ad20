//! Warden's proxy-wasm filter for Envoy: records every completed HTTP request as an
//! `AccessRecord`, ships them in batches to the collector over gRPC, and enforces the deny list
//! the collector pushes.
//!
//! The logic lives in plain modules tested on the host: configuration ([`config`]), what a
//! request costs Envoy to describe ([`attributes`], [`headers`]), the record and its encoding
//! ([`record`], [`request`], [`identity`], `response_flags`), batching ([`batch`]) and the
//! retry backoff it shares with the deny-list stream (`backoff`), the deny list, its stream and
//! its reply ([`denylist`], `subscribe`, `deny_reply`), counters (`metrics`) and the VM's
//! callbacks (`vm`). They reach Envoy only through the `Host` trait ([`host`]); `abi.rs`
//! implements it over the proxy-wasm ABI and exports the callbacks, and is the only code
//! compiled for wasm32 alone.
//!
//! What is public is what the fuzz targets (`fuzz/fuzz_targets`) and `examples/` use; everything
//! else is `pub(crate)` or private, so the compiler reports code that nothing calls.

pub mod attributes;
mod backoff;
pub mod batch;
pub mod config;
mod deny_reply;
pub mod denylist;
pub mod headers;
pub mod host;
pub mod identity;
mod metrics;
pub mod record;
pub mod request;
mod response_flags;
mod subscribe;
mod summary;
// On the host only the tests drive the VM: its caller, `abi`, exists on wasm32 alone, where
// `scripts/build-filter.sh clippy` checks the VM for dead code.
#[cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]
mod vm;

#[cfg(target_arch = "wasm32")]
mod abi;
#[cfg(test)]
mod fake_host;

pub use warden_proto::pb;
