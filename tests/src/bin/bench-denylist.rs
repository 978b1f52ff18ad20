//! Deny-list benchmark for the closing note of the inline-blocking issue (not a test):
//!
//! 1. Propagation: for each of N bans, a client sends requests continuously through Envoy from
//!    its own address; the figure is the time from the ban API call returning to the first 403
//!    that client sees. Prints p50, p90, max, and p99 only when at least 100 samples stand
//!    behind it (with fewer, the "p99" would be the maximum under another name).
//! 2. Scale: two Envoys (each `--concurrency 1`) run side by side, one subscribed to a collector
//!    with a one-entry list, one to a collector holding 1,000,000 entries (exact IPv4, IPv6 /64s
//!    and IPv4 CIDRs mixed). Prints the time a fresh Envoy takes to receive and apply the
//!    snapshot and Envoy's memory growth. Then the same lookups against both lists, missing (the
//!    client is not listed: the request is proxied) and hitting (127.0.0.1, wrk's address, is
//!    banned on both: Envoy answers 403): requests/s and Envoy CPU per request, rounds
//!    alternating, medians.
//!
//! 3. With `COMPARE_TLS=1`, only this: propagation with the push path over mTLS (the filter's
//!    client certificate, the collector's certificate verified) against plaintext, ROUNDS rounds,
//!    the variants alternating and their order rotated, a fresh collector and Envoy per run;
//!    p50/p90/p99 per variant over every sample, and the median of the per-round ratios of the
//!    p50 from the ban call (the API returns once the change is handed to the streams, so the
//!    time from its return is mostly the next request's round trip).
//!
//! Run with `scripts/bench-denylist.sh` (builds optimized binaries and sets WARDEN_BIN).
//! Environment: BANS (default 200), ENTRIES (default 1000000), WRK_SECONDS (default 5),
//! ROUNDS (default 5), COMPARE_TLS (unset).

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};
use std::time::{Duration, Instant};
use warden_e2e::auth::{mtls_collector_config, warden_init};
use warden_e2e::measure::env_number;
use warden_e2e::{Client, Collector, CollectorTls, Envoy, EnvoyOptions};

#[tokio::main]
async fn main() -> Result<()> {
    let bans = env_number("BANS", 200) as usize;
    let entries = env_number("ENTRIES", 1_000_000) as usize;
    let wrk_seconds = env_number("WRK_SECONDS", 5);
    let rounds = env_number("ROUNDS", 5).max(1) as usize;
    let upstream = warden_e2e::upstream::spawn("127.0.0.1:0".parse()?).await?;
    if std::env::var_os("COMPARE_TLS").is_some() {
        return compare_tls(upstream, bans, rounds).await;
    }

    propagation(upstream, bans).await?;
    scale(upstream, entries, wrk_seconds, rounds).await?;
    Ok(())
}

async fn post_json(collector: &Collector, path: &str, body: &Value) -> Result<Value> {
    let url = format!("{}{path}", collector.base_url());
    let response = collector
        .http()
        .post(&url)
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
    let mut options = EnvoyOptions::new(&collector, upstream);
    options.concurrency = 2;
    let (latencies, from_call) = propagation_samples(&collector, options, bans).await?;
    // The ban API answers once the decision is committed and handed to every stream, so the
    // second figure (from the call) includes the commit.
    let what = format!("propagation over {bans} bans (Envoy --concurrency 2)");
    report(&format!("{what}, ban API return -> first 403"), latencies);
    report(&format!("{what}, ban API call -> first 403"), from_call);
    Ok(())
}

/// Bans `bans` addresses one after another, each while a client at that address sends requests
/// through an Envoy started with `options`; returns (ban API return -> first 403, ban API call
/// -> first 403) for each.
async fn propagation_samples(
    collector: &Collector,
    options: EnvoyOptions,
    bans: usize,
) -> Result<(Vec<Duration>, Vec<Duration>)> {
    let workers = options.concurrency as usize;
    let envoy = Envoy::start(options).await;
    wait_all_acked(collector, workers + 1).await?;

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
            collector,
            "/api/v1/decisions",
            &json!({ "target": source, "reason": "propagation benchmark" }),
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
    Ok((latencies, from_call))
}

/// Propagation with the push path over mTLS versus plaintext (see the module documentation).
async fn compare_tls(upstream: std::net::SocketAddr, bans: usize, rounds: usize) -> Result<()> {
    let dir = tempfile::tempdir()?;
    let pki = warden_init(&dir.path().join("pki"), &[]).map_err(anyhow::Error::msg)?;
    // Both figures per variant: from the ban API's return (the decision already committed and
    // handed to the streams) and from the call (commit, push, TLS record, filter, next request).
    let mut returned: [Vec<Duration>; 2] = [Vec::new(), Vec::new()];
    let mut called: [Vec<Duration>; 2] = [Vec::new(), Vec::new()];
    let mut ratios = Vec::new();
    for round in 0..rounds {
        let order = if round % 2 == 0 { [0, 1] } else { [1, 0] };
        let mut p50 = [0.0; 2];
        for variant in order {
            let tls = variant == 1;
            let collector = if tls {
                Collector::start_with_config(&mtls_collector_config(&pki, "\"*\"")).await
            } else {
                Collector::start().await
            };
            let mut options = EnvoyOptions::new(&collector, upstream);
            options.concurrency = 2;
            if tls {
                options.filter_token = None;
                options.collector_tls = Some(CollectorTls {
                    ca: pki.join("ca.pem"),
                    cert: pki.join("filter.pem"),
                    key: pki.join("filter-key.pem"),
                    sni: "localhost".into(),
                });
            }
            let (from_return, mut from_call) =
                propagation_samples(&collector, options, bans).await?;
            from_call.sort();
            p50[variant] = ms(from_call[from_call.len() / 2]);
            println!(
                "round {} {}: ban API call -> first 403 p50 {:.2} ms over {} bans",
                round + 1,
                if tls { "mTLS" } else { "plaintext" },
                p50[variant],
                from_call.len()
            );
            returned[variant].extend(from_return);
            called[variant].extend(from_call);
        }
        ratios.push(p50[1] / p50[0]);
    }
    for (variant, name) in ["plaintext", "mTLS"].iter().enumerate() {
        let what = format!("{name} push path");
        report(
            &format!("{what}, ban API return -> first 403"),
            std::mem::take(&mut returned[variant]),
        );
        report(
            &format!("{what}, ban API call -> first 403"),
            std::mem::take(&mut called[variant]),
        );
    }
    ratios.sort_by(f64::total_cmp);
    println!(
        "mTLS / plaintext, ban API call -> first 403 p50, median over {rounds} rounds: {:.2} (per round, sorted: {ratios:.2?})",
        ratios[ratios.len() / 2]
    );
    Ok(())
}

/// Samples below which a p99 is not reported: with fewer than 100, no sample lies above the
/// 99th percentile and the "p99" is only the maximum.
const MIN_SAMPLES_FOR_P99: usize = 100;

fn report(what: &str, mut latencies: Vec<Duration>) {
    latencies.sort();
    let n = latencies.len();
    if n == 0 {
        println!("{what}: no samples");
        return;
    }
    let pick = |q: f64| latencies[((n as f64 - 1.0) * q).round() as usize];
    let p99 = if n >= MIN_SAMPLES_FOR_P99 {
        format!("p99 {:.2} ms", ms(pick(0.99)))
    } else {
        format!("no p99 ({n} samples; {MIN_SAMPLES_FOR_P99} needed)")
    };
    println!(
        "{what}: {n} samples, p50 {:.2} ms, p90 {:.2} ms, {p99}, max {:.2} ms",
        ms(pick(0.50)),
        ms(pick(0.90)),
        ms(latencies[n - 1])
    );
}

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

/// Waits until at least `count` filters are connected and all acked the collector's version.
async fn wait_all_acked(collector: &Collector, count: usize) -> Result<Duration> {
    let started = Instant::now();
    loop {
        let body = collector.filters().await;
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

/// Envoy's CPU time so far (utime + stime), seconds.
fn cpu_seconds(pid: u32) -> Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks = |i: usize| -> Result<f64> {
        Ok(fields.get(i).context("short /proc stat")?.parse::<f64>()?)
    };
    // Linux reports in clock ticks of 1/100 s (USER_HZ) on every architecture Envoy ships for.
    Ok((ticks(11)? + ticks(12)?) / 100.0)
}

/// One wrk run: (requests/s, Envoy CPU µs per request).
fn wrk(url: &str, seconds: u64, envoy_pid: u32) -> Result<(f64, f64)> {
    let cpu0 = cpu_seconds(envoy_pid)?;
    let output = std::process::Command::new("wrk")
        .args(["-t1", "-c32", &format!("-d{seconds}s"), url])
        .output()
        .context("run wrk (installed by scripts/setup.sh)")?;
    let cpu1 = cpu_seconds(envoy_pid)?;
    let text = String::from_utf8_lossy(&output.stdout);
    let number = |prefix: &str| -> Option<f64> {
        text.lines().find_map(|line| {
            let rest = line.trim_start();
            rest.strip_prefix(prefix)
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse().ok())
        })
    };
    let rps = number("Requests/sec:")
        .with_context(|| format!("no Requests/sec in wrk output: {text}"))?;
    let requests = text
        .lines()
        .find_map(|l| {
            l.trim()
                .split_once(" requests in")
                .and_then(|(n, _)| n.parse::<f64>().ok())
        })
        .with_context(|| format!("no request count in wrk output: {text}"))?;
    Ok((rps, (cpu1 - cpu0) / requests * 1e6))
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(f64::NAN)
}

async fn ban(collector: &Collector, target: &str) -> Result<()> {
    post_json(
        collector,
        "/api/v1/decisions",
        &json!({ "target": target, "reason": "lookup benchmark" }),
    )
    .await?;
    Ok(())
}

async fn unban(collector: &Collector, target: &str) -> Result<()> {
    let url = format!("{}/api/v1/decisions?target={target}", collector.base_url());
    let response = collector.http().delete(&url).send().await?;
    if !response.status().is_success() {
        bail!("DELETE {url}: {}", response.status());
    }
    Ok(())
}

async fn scale(
    upstream: std::net::SocketAddr,
    entries: usize,
    wrk_seconds: u64,
    rounds: usize,
) -> Result<()> {
    let empty = Collector::start().await;
    let full = Collector::start().await;
    let mut options = EnvoyOptions::new(&empty, upstream);
    options.concurrency = 1;
    let envoy_empty = Envoy::start(options).await;
    let mut options = EnvoyOptions::new(&full, upstream);
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
            &full,
            "/api/v1/decisions/bulk",
            &json!({ "targets": chunk, "reason": "scale benchmark" }),
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

    // The small list holds one entry that never matches, so that both Envoys do the lookup.
    ban(&empty, "192.0.2.1").await?;
    wait_all_acked(&empty, 2).await?;
    let small_pid = envoy_empty.pid().context("small-list envoy pid")?;
    let full_pid = envoy_full.pid().context("full-list envoy pid")?;
    let mut cells: Vec<(&str, Vec<f64>, Vec<f64>)> = Vec::new();
    for name in ["miss, 1 entry", "miss, 1M", "hit, 1 entry", "hit, 1M"] {
        cells.push((name, Vec::new(), Vec::new()));
    }
    for round in 0..rounds {
        for hit in [false, true] {
            if hit {
                ban(&empty, "127.0.0.1").await?;
                ban(&full, "127.0.0.1").await?;
                wait_all_acked(&empty, 2).await?;
                wait_all_acked(&full, 2).await?;
            }
            // Alternate which list goes first, so drift hits both.
            let order = if round % 2 == 0 { [0, 1] } else { [1, 0] };
            for which in order {
                let (envoy, pid) = if which == 0 {
                    (&envoy_empty, small_pid)
                } else {
                    (&envoy_full, full_pid)
                };
                let (rps, cpu) = wrk(&envoy.url("/"), wrk_seconds, pid)?;
                let cell = &mut cells[usize::from(hit) * 2 + which];
                cell.1.push(rps);
                cell.2.push(cpu);
            }
            if hit {
                unban(&empty, "127.0.0.1").await?;
                unban(&full, "127.0.0.1").await?;
                wait_all_acked(&empty, 2).await?;
                wait_all_acked(&full, 2).await?;
            }
        }
    }
    println!(
        "lookups through Envoy --concurrency 1, wrk -t1 -c32 -d{wrk_seconds}s, {rounds} rounds, medians \
         (miss: proxied to the upstream; hit: answered 403 by the filter):"
    );
    for (name, rps, cpu) in cells {
        println!(
            "  {name:>14}: {:>8.0} req/s, Envoy CPU {:>6.1} µs/request (runs: {:?})",
            median(rps.clone()),
            median(cpu),
            rps.iter().map(|r| r.round()).collect::<Vec<_>>()
        );
    }
    Ok(())
}
