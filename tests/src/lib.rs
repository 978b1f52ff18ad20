//! End-to-end test harness for Warden: starts a real Envoy running the built filter, the real
//! `warden` collector binary and a real upstream, all on ephemeral loopback ports.
//!
//! Every child process is killed when its handle drops; when a test panics, the handles print the
//! child's log so the failure can be read without re-running.

pub mod auth;
pub mod client;
pub mod collector;
pub mod envoy;
pub mod eventually;
pub mod measure;
pub mod paths;
pub mod stack;
pub mod upstream;
pub mod workload;

pub use client::{Client, Response};
pub use collector::Collector;
pub use envoy::{CollectorTls, Envoy, EnvoyOptions};
pub use eventually::eventually;
pub use stack::Stack;
