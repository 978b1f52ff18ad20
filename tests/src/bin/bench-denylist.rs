//! Deny-list benchmark for the closing note of the inline-blocking issue (not a test):
//!
//! 1. Propagation: for each of N bans, a client sends requests continuously through Envoy from
//!    its own address; the figure is the time from the ban API call returning to the first 403
//!    that client sees. Prints p50 / p99 / max.
//! 2. Scale: two Envoys (each `--concurrency 1`) run side by side, one subscribed to a collector
//!    with an empty list, one to a collector holding 1,000,000 entries (exact IPv4, IPv6 /64s and
//!    IPv4 CIDRs mixed). Prints the time a fresh Envoy takes to receive and apply the snapshot,
//!    Envoy's memory growth, and wrk requests/s through each (runs alternate).
//!
//! Run with `scripts/bench-denylist.sh` (builds optimized binaries and sets WARDEN_BIN).
//! Environment: BANS (default 50), ENTRIES (default 1000000), WRK_SECONDS (default 10).

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};
use std::time::{Duration, Instant};
use warden_e2e::{Client, Collector, Envoy, EnvoyOptions};

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[tokio::main]
async fn main() -> Result<()> {
    let bans = env_number("BANS", 50) as usize;
    let entries = env_number("ENTRIES", 1_000_000) as usize;
    let wrk_seconds = env_number("WRK_SECONDS", 10);
    let upstream = warden_e2e::upstream::spawn("127.0.0.1:0".parse()?).await?;

    propagation(upstream, bans).await?;
    scale(upstream, entries, wrk_seconds).await?;
    Ok(())
}

fn http() -> Result<reqwest::Client> {
    Ok(reqwest::Client::builder().no_proxy().build()?)
}

async fn post_json(url: &str, body: &Value) -> Result<Value> {
    let response = http()?
        .post(url)
        .json(body)
        .send()
        .await
        .with_context(|| format!("POST {url}"))?;
    let status = response.status();
    let text = response.text().await?;
    if !status.is_success() {
        bail!("POST {url}: {status}: {text}");
    }
    Ok(serde_json::from_str(&text)?)
}

async fn propagation(upstream: std::net::SocketAddr, bans: usize) -> Result<()> {
    let collector = Collector::start().await;
    let mut options = EnvoyOptions::new(collector.grpc, upstream);
    options.concurrency = 2;
    let envoy = Envoy::start(options).await;
    wait_all_acked(&collector, 3).await?;

    let mut latencies = Vec::with_capacity(bans);
    let mut from_call = Vec::with_capacity(bans);
    for i in 0..bans {
        let source = format!("127.0.{}.{}", 20 + i / 250, 1 + i % 250);
        let client = Client::from(&source);
        let url = envoy.url("/anything/propagation");
        // The sender runs until it sees a 403 and reports when.
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        let sender = tokio::spawn(async move {
            let mut ready = Some(ready_tx);
            loop {
                let response = client.try_get_with(&url, &[]).await?;
                if response.status == 403 {
                    return Ok::<Instant, String>(Instant::now());
                }
                if let Some(ready) = ready.take() {
                    let _ = ready.send(());
                }
            }
        });
        ready_rx
            .await
            .context("sender stopped before its first response")?;
        let called = Instant::now();
        post_json(
            &format!("{}/api/v1/decisions", collector.base_url()),
            &json!({ "target": source, "reason": "propagation benchmark", "actor": "bench" }),
        )
        .await?;
        let returned = Instant::now();
        let blocked = tokio::time::timeout(Duration::from_secs(10), sender)
            .await
            .context("no 403 within 10 s of the ban")??
            .map_err(anyhow::Error::msg)?;
        latencies.push(blocked.saturating_duration_since(returned));
        from_call.push(blocked.saturating_duration_since(called));
    }
    // The ban API answers once the decision is committed and handed to every stream, so the
    // second figure (from the call) includes the commit.
    let what = format!("propagation over {bans} bans (Envoy --concurrency 2)");
    report(&format!("{what}, ban API return -> first 403"), latencies);
    report(&format!("{what}, ban API call -> first 403"), from_call);
    Ok(())
}

fn report(what: &str, mut latencies: Vec<Duration>) {
    latencies.sort();
    let pick = |q: f64| latencies[((latencies.len() as f64 - 1.0) * q).round() as usize];
    println!(
        "{what}: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        ms(pick(0.50)),
        ms(pick(0.99)),
        ms(*latencies.last().unwrap_or(&Duration::ZERO))
    );
}

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

/// Waits until at least `count` filters are connected and all acked the collector's version.
async fn wait_all_acked(collector: &Collector, count: usize) -> Result<Duration> {
    let started = Instant::now();
    loop {
        let body = collector
            .get_json(&format!("{}/api/v1/filters", collector.base_url()))
            .await;
        if let Ok(body) = body {
            let version = body["version"].as_u64();
            let filters = body["filters"].as_array().cloned().unwrap_or_default();
            let acked = filters
                .iter()
                .filter(|f| f["version_acked"].as_u64() == version)
                .count();
            if filters.len() >= count && acked == filters.len() {
                return Ok(started.elapsed());
            }
        }
        if started.elapsed() > Duration::from_secs(600) {
            bail!("filters did not ack the collector's version within 600 s");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The benchmark list: 60% exact IPv4, 30% IPv6 /64s, 10% IPv4 /24 CIDRs; none covers 127/8.
fn generate_targets(entries: usize) -> Vec<String> {
    let exact = entries * 6 / 10;
    let v6 = entries * 3 / 10;
    let cidrs = entries - exact - v6;
    let mut targets = Vec::with_capacity(entries);
    for i in 0..exact as u32 {
        let ip = std::net::Ipv4Addr::from(0x0A00_0000u32 + i * 7);
        targets.push(ip.to_string());
    }
    for i in 0..v6 as u64 {
        targets.push(format!(
            "2001:db8:{:x}:{:x}::/64",
            (i >> 16) & 0xffff,
            i & 0xffff
        ));
    }
    for i in 0..cidrs as u32 {
        let ip = std::net::Ipv4Addr::from(0x6440_0000u32 + (i << 8));
        targets.push(format!("{ip}/24"));
    }
    targets
}

fn rss_kib(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .context("VmRSS not found")
}

fn wrk(url: &str, seconds: u64) -> Result<f64> {
    let output = std::process::Command::new("wrk")
        .args(["-t1", "-c32", &format!("-d{seconds}s"), url])
        .output()
        .context("run wrk (installed by scripts/setup.sh)")?;
    let text = String::from_utf8_lossy(&output.stdout);
    text.lines()
        .find_map(|line| line.strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse().ok())
        .with_context(|| format!("no Requests/sec in wrk output: {text}"))
}

async fn scale(upstream: std::net::SocketAddr, entries: usize, wrk_seconds: u64) -> Result<()> {
    let empty = Collector::start().await;
    let full = Collector::start().await;
    let mut options = EnvoyOptions::new(empty.grpc, upstream);
    options.concurrency = 1;
    let envoy_empty = Envoy::start(options).await;
    let mut options = EnvoyOptions::new(full.grpc, upstream);
    options.concurrency = 1;
    let envoy_full = Envoy::start(options.clone()).await;
    wait_all_acked(&empty, 2).await?;
    wait_all_acked(&full, 2).await?;
    let pid = envoy_full.pid().context("envoy pid")?;
    let rss_before = rss_kib(pid)?;

    let targets = generate_targets(entries);
    let load_started = Instant::now();
    for chunk in targets.chunks(100_000) {
        post_json(
            &format!("{}/api/v1/decisions/bulk", full.base_url()),
            &json!({ "targets": chunk, "reason": "scale benchmark", "actor": "bench" }),
        )
        .await?;
    }
    let load = load_started.elapsed();
    let deltas = wait_all_acked(&full, 2).await?;
    let rss_after = rss_kib(pid)?;
    println!(
        "loaded {entries} entries in {:.1} s (bulk API, 100k per call); a connected Envoy applied the \
         deltas {:.1} s after the last call",
        load.as_secs_f64(),
        deltas.as_secs_f64()
    );
    println!(
        "Envoy --concurrency 1 (2 Wasm VMs) RSS: {} MiB before, {} MiB with {entries} entries (+{} MiB)",
        rss_before / 1024,
        rss_after / 1024,
        rss_after.saturating_sub(rss_before) / 1024
    );

    // A fresh Envoy: time from ready to every VM having applied the snapshot.
    let fresh_started = Instant::now();
    let mut fresh_options = options.clone();
    fresh_options.node_id = format!("{}-fresh", options.node_id);
    let fresh = Envoy::start(fresh_options).await;
    let ready = fresh_started.elapsed();
    wait_all_acked(&full, 4).await?;
    let fresh_rss = rss_kib(fresh.pid().context("fresh envoy pid")?)?;
    let empty_rss = rss_kib(envoy_empty.pid().context("empty envoy pid")?)?;
    println!(
        "fresh Envoy --concurrency 1 with the {entries}-entry snapshot: RSS {} MiB vs {} MiB for \
         the same Envoy with an empty list (+{} MiB)",
        fresh_rss / 1024,
        empty_rss / 1024,
        fresh_rss.saturating_sub(empty_rss) / 1024
    );
    println!(
        "fresh Envoy: ready after {:.2} s, snapshot of {entries} entries received and applied by every VM \
         {:.2} s after start",
        ready.as_secs_f64(),
        fresh_started.elapsed().as_secs_f64()
    );
    drop(fresh);

    let mut empty_runs = Vec::new();
    let mut full_runs = Vec::new();
    for _ in 0..2 {
        empty_runs.push(wrk(&envoy_empty.url("/"), wrk_seconds)?);
        full_runs.push(wrk(&envoy_full.url("/"), wrk_seconds)?);
    }
    let mean = |runs: &[f64]| runs.iter().sum::<f64>() / runs.len() as f64;
    let (e, f) = (mean(&empty_runs), mean(&full_runs));
    println!(
        "wrk -t1 -c32 -d{wrk_seconds}s through Envoy --concurrency 1: empty list {e:.0} req/s, \
         {entries} entries {f:.0} req/s (means of alternating runs), ratio {:.3} (runs: {empty_runs:?} / {full_runs:?})",
        f / e
    );
    Ok(())
}
