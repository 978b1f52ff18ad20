//! The Kubernetes audit webhook's capacity, for the closing note of the policy-change issue (not
//! a test): the real `warden serve` binary, pinned to CPU 0, receives `EventList` bodies of 400
//! events over HTTPS with the API server's client certificate from this process, pinned to CPU 1.
//!
//! The events are what the shipped audit policy sends: mutations of ingress-policy kinds at
//! `RequestResponse` (with their objects) and TLS Secrets at `Metadata`, over 200 objects (so
//! each change is diffed against a previous snapshot), with eight `change` rules in force.
//!
//! 1. Throughput: ROUNDS rounds (5) of BATCHES bodies (50 × 400 events), two in flight (the API
//!    server's batch backend sends batches concurrently); events stored per second from the first
//!    send to the last answer; median, minimum and maximum of the rounds.
//! 2. The API server's path at 1,000 events/s: a body of 400 events every 400 ms for DURATION
//!    seconds (60), open loop (a slow answer does not delay the next send); the answer latency's
//!    p50, p99 and maximum with the number of samples, and the most events sent but not yet
//!    answered at once (the API server buffers 10,000 by default; past that it drops).
//!
//! Every body must be answered 200 and every event stored: a failure fails the run.
//! Run with `scripts/bench-k8s-audit.sh`.

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
use std::time::{Duration, Instant};
use warden_e2e::Collector;
use warden_e2e::auth::{issue_from_warden_ca, warden_init};
use warden_e2e::k8s_events::{self as k8s, EventBuilder, event_list};
use warden_e2e::measure::{env_number, pin};

const EVENTS_PER_BODY: usize = 400;

const RULES: &str = r#"
[[rules]]
name = "strangers"
kind = "change"
allowed_users = ["alice@example.com", "system:serviceaccount:argocd:*"]
[[rules]]
name = "office-hours"
kind = "change"
allowed_hours = "00:00-23:59"
[[rules]]
name = "plaintext"
kind = "change"
listener_without_tls = true
[[rules]]
name = "auth-dropped"
kind = "change"
auth_removed = true
[[rules]]
name = "cert-deleted"
kind = "change"
tls_secret_deleted = true
[[rules]]
name = "cert-expiring"
kind = "change"
certificate_expires_within = "14d"
[[rules]]
name = "plugin-weakened"
kind = "change"
warden_plugin_weakened = true
[[rules]]
name = "wildcards"
kind = "change"
wildcard_host_added = true
"#;

/// Event `i` of the workload: one of six kinds, one of 200 objects.
fn event(i: u64, now_ms: i64) -> Value {
    let object = i % 200;
    let ns = format!("team-{}", object % 20);
    let name = format!("app-{object}");
    let host = format!("app-{object}.example.com");
    let secret = format!("app-{object}-tls");
    let b = |verb: &str, group: &str, version: &str, resource: &str| {
        EventBuilder::new(verb, group, version, resource, &ns, &name).time_ms(now_ms)
    };
    let with = |b: EventBuilder, obj: Value| b.request_object(obj.clone()).response_object(obj);
    match i % 6 {
        0 => with(
            b("update", "networking.k8s.io", "v1", "ingresses"),
            k8s::ingress(
                &ns,
                &name,
                &[&host, &format!("api-{object}.example.com")],
                Some((&[host.as_str()][..], secret.as_str())),
            ),
        )
        .build(),
        1 => with(
            b("update", "gateway.networking.k8s.io", "v1", "httproutes"),
            k8s::http_route(&ns, &name, &[&host], &format!("/v{}", i % 3), "web"),
        )
        .build(),
        2 => with(
            b("update", "security.istio.io", "v1", "authorizationpolicies"),
            k8s::authorization_policy(
                &ns,
                &name,
                "ALLOW",
                vec![json!({"to": [{"operation": {"paths": [format!("/api/{}", i % 4)]}}]})],
            ),
        )
        .build(),
        3 => EventBuilder::new("update", "", "v1", "secrets", &ns, &secret)
            .time_ms(now_ms)
            .level("Metadata")
            .build(),
        4 => with(
            b("patch", "extensions.istio.io", "v1alpha1", "wasmplugins"),
            k8s::wasm_plugin(
                &ns,
                &name,
                "oci://registry.example/warden-filter:1.0",
                "FAIL_CLOSE",
            ),
        )
        .build(),
        _ => with(
            b("update", "gateway.networking.k8s.io", "v1", "gateways"),
            k8s::gateway(
                &ns,
                &name,
                &[(
                    "https",
                    "HTTPS",
                    443,
                    Some(host.as_str()),
                    Some(secret.as_str()),
                )],
            ),
        )
        .build(),
    }
}

fn body(first: u64, now_ms: i64) -> Vec<u8> {
    let events: Vec<Value> = (first..first + EVENTS_PER_BODY as u64)
        .map(|i| event(i, now_ms))
        .collect();
    event_list(&events)
}

async fn post(client: &reqwest::Client, url: &str, body: Vec<u8>) -> Result<Value> {
    let response = client
        .post(url)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .context("POST")?;
    let status = response.status();
    let text = response.text().await?;
    if !status.is_success() {
        bail!("HTTP {status}: {text}");
    }
    Ok(serde_json::from_str(&text)?)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    // Nearest rank.
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

#[tokio::main]
async fn main() -> Result<()> {
    let rounds = env_number("ROUNDS", 5);
    let batches = env_number("BATCHES", 50);
    let duration = Duration::from_secs(env_number("DURATION", 60));
    let dir = tempfile::tempdir()?;
    let pki = warden_init(&dir.path().join("pki"), &[]).map_err(anyhow::Error::msg)?;
    let p = |f: &str| pki.join(f).display().to_string();
    let config = format!(
        "[http.tls]\ncert = \"{}\"\nkey = \"{}\"\nclient_ca = \"{}\"\n[[http.credentials]]\nname = \"kube-apiserver\"\nrole = \"k8s-audit\"\ncertificate = \"kube-apiserver-audit\"\n[k8s_audit]\nenabled = true\n{RULES}",
        p("collector.pem"),
        p("collector-key.pem"),
        p("ca.pem")
    );
    let collector = Collector::start_with_config(&config).await;
    pin(collector.pid().context("collector pid")?, 0).map_err(anyhow::Error::msg)?;
    pin(std::process::id(), 1).map_err(anyhow::Error::msg)?;
    let cert =
        issue_from_warden_ca(&pki, &[], &[], "kube-apiserver-audit").map_err(anyhow::Error::msg)?;
    let client = reqwest::Client::builder()
        .no_proxy()
        .add_root_certificate(reqwest::Certificate::from_pem(&std::fs::read(
            pki.join("ca.pem"),
        )?)?)
        .identity(reqwest::Identity::from_pem(cert.identity_pem().as_bytes())?)
        .build()?;
    let url = format!("{}/api/v1/k8s-audit", collector.base_url());
    let now_ms = warden_e2e::auth::now_secs() * 1000;
    let next = Arc::new(AtomicU64::new(0));
    let stored = Arc::new(AtomicU64::new(0));
    // Warm-up: the first snapshots of every object.
    for _ in 0..2 {
        let first = next.fetch_add(EVENTS_PER_BODY as u64, SeqCst);
        post(&client, &url, body(first, now_ms)).await?;
    }

    println!("## Kubernetes audit webhook: events stored per second on one core\n");
    println!(
        "{rounds} rounds of {batches} bodies × {EVENTS_PER_BODY} events, two in flight, `synchronous = \"full\"`, 8 change rules\n"
    );
    let mut rates = Vec::new();
    for round in 1..=rounds {
        let started = Instant::now();
        let before = stored.load(SeqCst);
        let mut senders = Vec::new();
        let per_sender = batches / 2;
        for _ in 0..2 {
            let (client, url, next, stored) = (
                client.clone(),
                url.clone(),
                Arc::clone(&next),
                Arc::clone(&stored),
            );
            senders.push(tokio::spawn(async move {
                for _ in 0..per_sender {
                    let first = next.fetch_add(EVENTS_PER_BODY as u64, SeqCst);
                    let answer = post(&client, &url, body(first, now_ms)).await?;
                    let n = answer["stored"].as_u64().unwrap_or(0);
                    if n != EVENTS_PER_BODY as u64 {
                        bail!("a body stored {n} of {EVENTS_PER_BODY} events: {answer}");
                    }
                    stored.fetch_add(n, SeqCst);
                }
                Ok(())
            }));
        }
        for s in senders {
            s.await??;
        }
        let elapsed = started.elapsed();
        let events = stored.load(SeqCst) - before;
        let rate = events as f64 / elapsed.as_secs_f64();
        println!("- round {round}: {events} events in {elapsed:.2?}: {rate:.0} events/s");
        rates.push(rate);
    }
    rates.sort_by(f64::total_cmp);
    println!(
        "\nmedian {:.0} events/s (min {:.0}, max {:.0})\n",
        rates[rates.len() / 2],
        rates[0],
        rates[rates.len() - 1]
    );

    println!("## The API server's path at 1,000 events/s\n");
    let interval = Duration::from_millis(400);
    let sends = (duration.as_millis() / interval.as_millis()) as usize;
    let outstanding = Arc::new(AtomicU64::new(0));
    let peak = Arc::new(AtomicU64::new(0));
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut tasks = Vec::new();
    for _ in 0..sends {
        tick.tick().await;
        let first = next.fetch_add(EVENTS_PER_BODY as u64, SeqCst);
        let payload = body(first, now_ms);
        let (client, url, outstanding, peak) = (
            client.clone(),
            url.clone(),
            Arc::clone(&outstanding),
            Arc::clone(&peak),
        );
        tasks.push(tokio::spawn(async move {
            let now =
                outstanding.fetch_add(EVENTS_PER_BODY as u64, SeqCst) + EVENTS_PER_BODY as u64;
            peak.fetch_max(now, SeqCst);
            let started = Instant::now();
            let answer = post(&client, &url, payload).await;
            let latency = started.elapsed();
            outstanding.fetch_sub(EVENTS_PER_BODY as u64, SeqCst);
            answer.map(|_| latency)
        }));
    }
    let mut latencies = Vec::new();
    for t in tasks {
        latencies.push(t.await??);
    }
    latencies.sort();
    println!(
        "{} bodies of {EVENTS_PER_BODY} events, one every {} ms for {} s: answer p50 {}, p99 {} (nearest rank of {} samples), max {}; at most {} events sent and not yet answered at once (the API server's buffer holds 10,000)",
        latencies.len(),
        interval.as_millis(),
        duration.as_secs(),
        ms(percentile(&latencies, 50.0)),
        ms(percentile(&latencies, 99.0)),
        latencies.len(),
        ms(latencies.last().copied().unwrap_or_default()),
        peak.load(SeqCst),
    );
    let text = reqwest::Client::builder()
        .no_proxy()
        .add_root_certificate(reqwest::Certificate::from_pem(&std::fs::read(
            pki.join("ca.pem"),
        )?)?)
        .build()?
        .get(format!("{}/metrics", collector.base_url()))
        .send()
        .await?
        .text()
        .await?;
    println!("\nCollector counters at the end:\n");
    for line in text
        .lines()
        .filter(|l| l.starts_with("warden_k8s_audit") || l.starts_with("warden_change_findings"))
    {
        println!("    {line}");
    }
    Ok(())
}
