//! The whole system for one test: a real upstream, the collector and an Envoy running the filter.

use crate::{Collector, Envoy, EnvoyOptions, eventually};
use serde_json::Value;
use std::net::SocketAddr;

/// Upstream + collector + Envoy, each on ephemeral ports.
pub struct Stack {
    /// The collector.
    pub collector: Collector,
    /// The Envoy in front of the upstream.
    pub envoy: Envoy,
    /// The upstream's address.
    pub upstream: SocketAddr,
}

impl Stack {
    /// Starts everything with default options.
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    /// Starts everything, letting `configure` adjust Envoy's options first.
    pub async fn start_with(configure: impl FnOnce(&mut EnvoyOptions)) -> Self {
        let upstream = crate::upstream::spawn("127.0.0.1:0".parse().expect("addr"))
            .await
            .expect("start upstream");
        let collector = Collector::start().await;
        let mut options = EnvoyOptions::new(collector.grpc, upstream);
        configure(&mut options);
        let envoy = Envoy::start(options).await;
        Stack {
            collector,
            envoy,
            upstream,
        }
    }

    /// Waits until the records matching `query` number exactly `count`, and returns them.
    pub async fn wait_for_records(&self, query: &str, count: usize) -> Vec<Value> {
        eventually(&format!("{count} record(s) matching {query:?}"), || async {
            let records = self.collector.records(query).await?;
            if records.len() == count {
                Ok(records)
            } else {
                Err(format!("{} record(s): {records:?}", records.len()))
            }
        })
        .await
    }
}
