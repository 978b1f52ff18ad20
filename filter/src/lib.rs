//! Warden's proxy-wasm filter for Envoy: records every completed HTTP request as an
//! `AccessRecord`, ships them in batches to the collector over gRPC, and enforces the deny list
//! the collector pushes.
//!
//! The logic lives in plain modules tested on the host ([`config`], [`record`], [`batch`],
//! [`denylist`], [`identity`], [`response_flags`]); [`host`], [`root_context`] and
//! [`http_context`] adapt it to proxy-wasm and are kept thin.

pub mod batch;
pub mod config;
pub mod denylist;
pub mod http_context;
pub mod identity;
pub mod record;
pub mod response_flags;
pub mod root_context;

pub mod host;

pub use warden_proto::pb;

/// The entry point Envoy calls when the VM starts (`_initialize`). Registering the root context
/// is all it does; `set_log_level` also installs the SDK's panic hook, which logs a panic at
/// critical level (a panic is still a bug: it aborts the VM, and `failure_policy: FAIL_OPEN`
/// lets traffic pass).
#[allow(missing_docs)]
mod entry {
    proxy_wasm::main! {{
        proxy_wasm::set_log_level(proxy_wasm::types::LogLevel::Info);
        proxy_wasm::set_root_context(|_| -> Box<dyn proxy_wasm::traits::RootContext> {
            Box::new(crate::root_context::WardenRoot::new())
        });
    }}
}
