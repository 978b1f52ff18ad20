//! The Warden collector: receives access records from the Envoy filter over gRPC, stores them in
//! SQLite, answers queries over HTTP, and pushes deny-list decisions back to the filters.
//!
//! The `warden` binary (`main.rs`) is a thin shell over these modules so that the integration
//! tests can start the same services in-process.

pub mod api;
pub mod cli;
pub mod config;
pub mod db;
pub mod decisions;
pub mod detection;
pub mod error;
pub mod ingest;
pub mod metrics;
pub mod policy_changes;
pub mod safe_text;
pub mod security;
pub mod server;
pub mod store;
pub mod target;
pub mod time;
pub mod trail;
