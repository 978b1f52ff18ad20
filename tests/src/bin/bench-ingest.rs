//! Collector ingest benchmark through the real gRPC path, for the closing note of the detection
//! rules issue (not a test): the real `warden serve` binary, pinned to CPU 0, receives
//! `AuditService.Export` batches from this process, pinned to CPU 1 (so the sender's encoding
//! and HTTP/2 work does not count against the collector's core).
//!
//! Two runs: with the 20 rules of `collector/tests/bench.rs` active, and without rules. The
//! figure is records per second from the first send until every record is acknowledged (stored,
//! group commit with `synchronous = "full"`) and, with rules, evaluated (read from `/metrics`;
//! a skipped record fails the run).
//!
//! Each runs once per batch size: the filter seals a batch at 1,000 records under load and sends
//! smaller ones (what gathered in its flush interval) when traffic is light, so both ends are
//! measured.
//!
//! With `COMPARE_TLS=1`, instead: the same with 20 rules, plaintext against mTLS on the gRPC
//! listener (the senders present a filter certificate, the collector verifies it and maps it to
//! a credential, as with Envoy), ROUNDS rounds per batch size, variants alternating and their
//! order rotated; the median records/s of each and the median of the per-round ratios.
//!
//! Run with `scripts/bench-ingest.sh` (builds optimized binaries and sets WARDEN_BIN).
//! Environment: RECORDS (default 1000000), SENDERS (8), BATCH (comma-separated sizes, "100,1000"),
//! COMPARE_TLS (unset), ROUNDS (5).

use anyhow::{Context, Result, bail};
use std::sync::Arc;
use std::time::{Duration, Instant};
use warden_e2e::Collector;
use warden_e2e::auth::{mtls_collector_config, warden_init};
use warden_e2e::measure::{env_number, pin};
use warden_e2e::workload::{batch, twenty_rules};
use warden_proto::pb::ExportRequest;
use warden_proto::pb::audit_service_client::AuditServiceClient;

/// A counter from the collector's Prometheus text.
async fn metric(collector: &Collector, name: &str) -> Result<u64> {
    let text = reqwest::Client::builder()
        .no_proxy()
        .build()?
        .get(format!("{}/metrics", collector.base_url()))
        .send()
        .await?
        .text()
        .await?;
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .with_context(|| format!("{name} not in /metrics"))
}

/// How the senders reach the gRPC listener.
enum Transport<'a> {
    Plaintext,
    /// mTLS with the certificates `warden init` wrote here.
    Mtls(&'a std::path::Path),
}

async fn run(
    label: &str,
    rules: &str,
    transport: &Transport<'_>,
    records: u64,
    senders: u64,
    batch_size: u64,
) -> Result<f64> {
    let config = match transport {
        Transport::Plaintext => rules.to_string(),
        // Rules first: the TLS tables must not swallow the top-level `rules` array.
        Transport::Mtls(pki) => format!("{rules}\n{}", mtls_collector_config(pki, "\"*\"")),
    };
    let collector = Collector::start_with_config(&config).await;
    pin(collector.pid().context("collector pid")?, 0).map_err(anyhow::Error::msg)?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_millis();
    let now = i64::try_from(now)?;
    let per_sender = records / senders / batch_size;
    let work: Vec<Vec<ExportRequest>> = (0..senders)
        .map(|w| {
            (0..per_sender)
                .map(|b| {
                    batch(
                        u32::try_from(w).unwrap_or(0),
                        b * batch_size + 1,
                        batch_size,
                        now,
                    )
                })
                .collect()
        })
        .collect();
    let total = senders * per_sender * batch_size;
    let mut clients = Vec::new();
    for _ in 0..senders {
        let endpoint = match transport {
            Transport::Plaintext => {
                tonic::transport::Endpoint::from_shared(format!("http://{}", collector.grpc))?
            }
            Transport::Mtls(pki) => {
                let read = |f: &str| std::fs::read(pki.join(f));
                let tls = tonic::transport::ClientTlsConfig::new()
                    .ca_certificate(tonic::transport::Certificate::from_pem(read("ca.pem")?))
                    .identity(tonic::transport::Identity::from_pem(
                        read("filter.pem")?,
                        read("filter-key.pem")?,
                    ))
                    .domain_name("localhost");
                tonic::transport::Endpoint::from_shared(format!(
                    "https://localhost:{}",
                    collector.grpc.port()
                ))?
                .tls_config(tls)?
            }
        };
        let channel = endpoint.tcp_nodelay(true).connect().await?;
        // The plaintext collector's local filter token; with mTLS the certificate is the
        // credential and no token file exists.
        let token = collector.filter_token();
        let bearer: Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>> =
            if token.is_empty() {
                None
            } else {
                Some(format!("Bearer {token}").parse()?)
            };
        clients.push(
            AuditServiceClient::with_interceptor(channel, move |mut req: tonic::Request<()>| {
                if let Some(bearer) = &bearer {
                    req.metadata_mut().insert("authorization", bearer.clone());
                }
                Ok(req)
            })
            .max_encoding_message_size(64 << 20),
        );
    }
    let started = Instant::now();
    let mut tasks = Vec::new();
    for (mut client, batches) in clients.into_iter().zip(work) {
        tasks.push(tokio::spawn(async move {
            for b in batches {
                client.export(b).await?;
            }
            Ok::<_, tonic::Status>(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    let acked = started.elapsed();
    let with_rules = !rules.is_empty();
    if with_rules {
        // Polled every 5 ms, not with `eventually`'s back-off, because the time it ends at is
        // the measurement; the deadline is a benchmark's, not a test's.
        let deadline = Instant::now() + Duration::from_secs(600);
        while metric(&collector, "warden_rules_records_evaluated_total").await?
            + metric(&collector, "warden_rules_records_skipped_total").await?
            < total
        {
            if Instant::now() > deadline {
                bail!("the rules engine did not evaluate all {total} records within 600 s");
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let skipped = metric(&collector, "warden_rules_records_skipped_total").await?;
        if skipped > 0 {
            bail!("{skipped} records were not evaluated");
        }
    }
    let done = started.elapsed();
    let stored = metric(&collector, "warden_records_stored_total").await?;
    if stored != total {
        bail!("{stored} of {total} records stored");
    }
    let rate = total as f64 / done.as_secs_f64();
    println!(
        "{label}: {total} records over gRPC ({senders} senders, batches of {batch_size}): acknowledged in {:.2}s, {}done in {:.2}s: {rate:.0} records/s",
        acked.as_secs_f64(),
        if with_rules { "evaluated and " } else { "" },
        done.as_secs_f64(),
    );
    Ok(rate)
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// Plaintext against mTLS, alternating (see the module documentation).
async fn compare_tls(rules: &str, records: u64, senders: u64, sizes: &[u64]) -> Result<()> {
    let rounds = env_number("ROUNDS", 5).max(1);
    let dir = tempfile::tempdir()?;
    let pki = warden_init(&dir.path().join("pki"), &[]).map_err(anyhow::Error::msg)?;
    let transports = [Transport::Plaintext, Transport::Mtls(&pki)];
    for &batch_size in sizes {
        let mut rates: [Vec<f64>; 2] = [Vec::new(), Vec::new()];
        let mut ratios = Vec::new();
        for round in 0..rounds {
            let order = if round % 2 == 0 { [0, 1] } else { [1, 0] };
            let mut this = [0.0; 2];
            for variant in order {
                let label = format!(
                    "round {} {}",
                    round + 1,
                    if variant == 0 { "plaintext" } else { "mTLS" }
                );
                this[variant] = run(
                    &label,
                    rules,
                    &transports[variant],
                    records,
                    senders,
                    batch_size,
                )
                .await?;
                rates[variant].push(this[variant]);
            }
            ratios.push(this[1] / this[0]);
        }
        let [plain, tls] = rates;
        println!(
            "batches of {batch_size}, {rounds} rounds: plaintext median {:.0} records/s, mTLS median {:.0} records/s, mTLS/plaintext median ratio {:.3} (per round {:.3?})",
            median(plain),
            median(tls),
            median(ratios.clone()),
            ratios
        );
    }
    Ok(())
}

#[tokio::main]
async fn main() -> Result<()> {
    pin(std::process::id(), 1).map_err(anyhow::Error::msg)?;
    let records = env_number("RECORDS", 1_000_000);
    let senders = env_number("SENDERS", 8);
    let sizes = std::env::var("BATCH").unwrap_or_else(|_| "100,1000".into());
    let rules = Arc::new(twenty_rules(true));
    let mut batch_sizes = Vec::new();
    for size in sizes.split(',') {
        let batch_size: u64 = size
            .trim()
            .parse()
            .with_context(|| format!("BATCH: {size:?} is not a number"))?;
        if batch_size == 0 {
            bail!("BATCH: a batch holds at least one record");
        }
        batch_sizes.push(batch_size);
    }
    if std::env::var_os("COMPARE_TLS").is_some() {
        return compare_tls(&rules, records, senders, &batch_sizes).await;
    }
    for batch_size in batch_sizes {
        let plain = Transport::Plaintext;
        run(
            "20 rules + storage",
            &rules,
            &plain,
            records,
            senders,
            batch_size,
        )
        .await?;
        run("storage only", "", &plain, records, senders, batch_size).await?;
    }
    Ok(())
}
