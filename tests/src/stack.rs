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
        Self::start_with_collector_config("", configure).await
    }

    /// Starts everything with `config` as the collector's `warden.toml`, letting `configure`
    /// adjust Envoy's options first.
    pub async fn start_with_collector_config(
        config: &str,
        configure: impl FnOnce(&mut EnvoyOptions),
    ) -> Self {
        let upstream = crate::upstream::spawn("127.0.0.1:0".parse().expect("addr"))
            .await
            .expect("start upstream");
        let collector = Collector::start_with_config(config).await;
        let mut options = EnvoyOptions::new(&collector, upstream);
        configure(&mut options);
        let envoy = Envoy::start(options).await;
        let stack = Stack {
            collector,
            envoy,
            upstream,
        };
        stack.wait_for_filters().await;
        stack
    }

    /// Waits until every filter VM that enforces (the main thread's and one per worker) has
    /// subscribed to the deny list and acknowledged the collector's current version, so a test
    /// that bans or attacks measures the push, not the filter's start-up.
    pub async fn wait_for_filters(&self) {
        let expected = self.envoy.options.concurrency as usize + 1;
        let node = self.envoy.options.node_id.clone();
        eventually(
            &format!("{expected} filters of {node} subscribed"),
            || async {
                let body = self.collector.filters().await?;
                let version = body["version"].as_u64();
                let filters: Vec<&Value> = body["filters"]
                    .as_array()
                    .map(|all| {
                        all.iter()
                            .filter(|f| f["node_id"] == node.as_str())
                            .collect()
                    })
                    .unwrap_or_default();
                let acked = filters
                    .iter()
                    .all(|f| f["version_acked"].as_u64() == version);
                if filters.len() >= expected && acked {
                    Ok(())
                } else {
                    Err(format!("{body}"))
                }
            },
        )
        .await;
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
