//! End-to-end test harness for Warden: starts a real Envoy running the built filter, the real
//! `warden` collector binary and a real upstream, all on ephemeral loopback ports.
//!
//! Every child process is killed when its handle drops; when a test panics, the handles print the
//! child's log so the failure can be read without re-running.
//!
//! What every test needs has one home here: waiting for something asynchronous
//! ([`eventually`](mod@eventually), always with a deadline), running the `warden` CLI ([`cli`]),
//! and looking for secrets where none may be ([`secrets`]).

pub mod auth;
pub mod cli;
pub mod client;
pub mod collector;
pub mod envoy;
pub mod eventually;
pub mod k8s_events;
pub mod measure;
pub mod paths;
pub mod secrets;
pub mod stack;
pub mod upstream;
pub mod workload;

pub use cli::{Cli, CliOutput};
pub use client::{Client, Response};
pub use collector::Collector;
pub use envoy::{CollectorTls, Envoy, EnvoyOptions};
pub use eventually::{eventually, eventually_within};
pub use stack::Stack;
