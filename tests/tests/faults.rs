//! Faults under load through a real Envoy. The collector is SIGKILLed again and again while
//! clients keep sending: afterwards every record the filter saw acknowledged is stored, none
//! twice, and every request served is either stored or counted by the filter as summarized or
//! dropped. The collector stops answering (SIGSTOP) for a while: clients see no errors, the
//! filter's buffer stays within its configured bounds, and nothing goes unaccounted for.
//!
//! `make test` runs them shortened (4 kills in about 10 s; a 5 s stall). `make soak`
//! (`WARDEN_SOAK=1`, `scripts/soak.sh`) runs them at full length: 10 kills in two minutes, and a
//! 60 s stall compared with 60 s of healthy traffic in the same run, where Envoy's p99 request
//! time while the collector is stopped must stay within 1 ms of the healthy one. A stall longer
//! than an Export call's timeout lets the collector store, when it resumes, batches whose calls
//! the filter saw time out; the filter sheds such a batch only when nothing else is left, so no
//! record is both stored and summarized and the sum is exact in both lengths.

use serde_json::json;
use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};
use warden_e2e::measure::{
    EnvoyMemory, Histogram, Stats, mib, soak_mode, template_flushing_stats_on_admin,
};
use warden_e2e::{Client, Stack, eventually};

const CLIENTS: u8 = 4;

/// How many times the collector is killed, and how often.
struct KillPlan {
    kills: usize,
    /// From one kill to the next (the collector is down for `down` of it, then restarts).
    every: Duration,
    down: Duration,
}

fn kill_plan() -> KillPlan {
    if soak_mode() {
        KillPlan {
            kills: 10,
            every: Duration::from_secs(12),
            down: Duration::from_millis(500),
        }
    } else {
        KillPlan {
            kills: 4,
            every: Duration::from_millis(2500),
            down: Duration::from_millis(500),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collector_killed_under_load_loses_no_acknowledged_record_and_stores_none_twice() {
    let plan = kill_plan();
    let mut stack = Stack::start_with(|o| {
        o.concurrency = 2;
    })
    .await;
    let running = Arc::new(AtomicBool::new(true));
    let served = Arc::new(AtomicU64::new(0));
    let mut load = Vec::new();
    for c in 0..CLIENTS {
        let (running, served) = (Arc::clone(&running), Arc::clone(&served));
        let client = Client::from(&format!("127.0.0.{}", 100 + c));
        let url = stack.envoy.url(&format!("/k/{c}/"));
        load.push(tokio::spawn(async move {
            let mut n = 0u64;
            while running.load(Ordering::Relaxed) {
                n += 1;
                let r = client.try_get_with(&format!("{url}{n}"), &[]).await;
                assert!(
                    r.is_ok_and(|r| r.status == 200),
                    "a client request failed while the collector was killed"
                );
                served.fetch_add(1, Ordering::Relaxed);
                // Paces the load (at most 200 requests a second per client).
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }));
    }
    // The pauses here are the fault plan (time up, time down), not waits for a condition; the
    // last one lets the load run a second against the restarted collector.
    let started = Instant::now();
    for _ in 0..plan.kills {
        tokio::time::sleep(plan.every - plan.down).await;
        stack.collector.kill();
        tokio::time::sleep(plan.down).await;
        stack.collector.restart().await;
    }
    tokio::time::sleep(Duration::from_millis(1000)).await;
    running.store(false, Ordering::Relaxed);
    for l in load {
        l.await.unwrap();
    }
    let load_time = started.elapsed();
    let served = served.load(Ordering::Relaxed);

    // The filter settles: every record it built is acknowledged, summarized or dropped.
    let Settled {
        sent,
        summarized,
        dropped,
    } = settled(&stack, served).await;
    let records = stack
        .collector
        .all_records("path_prefix=/k/")
        .await
        .unwrap();
    let ids: HashSet<&str> = records
        .iter()
        .map(|r| r["request_id"].as_str().unwrap_or_default())
        .collect();
    let stored = records.len() as u64;
    eprintln!(
        "kills: {} kills in {:.0} s: {served} requests served, {sent} records acknowledged, \
         {stored} stored ({} acknowledged but missing), {summarized} summarized and \
         {dropped} dropped by the filter, {} duplicates; generated {served}, stored + \
         summarized + dropped {}",
        plan.kills,
        load_time.as_secs_f64(),
        sent.saturating_sub(stored),
        records.len() - ids.len(),
        stored + summarized + dropped,
    );
    assert_eq!(ids.len(), records.len(), "no record stored twice");
    assert_eq!(stored, sent, "every acknowledged record is stored");
    assert_eq!(
        stored + summarized + dropped,
        served,
        "generated = stored + summarized + dropped"
    );
}

/// What the filter did with the records of the requests it served.
struct Settled {
    /// Acknowledged by the collector.
    sent: u64,
    /// Shed from the full buffer into summaries (counted, detail lost).
    summarized: u64,
    /// Shed when the summary table was full too (only counted).
    dropped: u64,
}

/// Waits until the filter has every record of the `served` requests acknowledged, summarized
/// or dropped (none refused).
async fn settled(stack: &Stack, served: u64) -> Settled {
    eventually("the filter to deliver or count every record", || async {
        let stats = stack.envoy.stats().await?;
        let settled = Settled {
            sent: stats.value("warden.records_sent"),
            summarized: stats.value("warden.records_summarized"),
            dropped: stats.value("warden.records_dropped"),
        };
        let rejected = stats.value("warden.records_rejected");
        if settled.sent + settled.summarized + settled.dropped + rejected == served && rejected == 0
        {
            Ok(settled)
        } else {
            Err(format!(
                "served {served}, sent {}, summarized {}, dropped {}, rejected {rejected}",
                settled.sent, settled.summarized, settled.dropped
            ))
        }
    })
    .await
}

/// Latency percentile `q` of `samples` (sorted in place), in ms.
fn percentile(samples: &mut [Duration], q: f64) -> f64 {
    samples.sort();
    let i = ((samples.len() as f64 - 1.0) * q).round() as usize;
    samples[i].as_secs_f64() * 1000.0
}

/// Sends requests from `source` for `how_long`, returning each latency; every one must succeed.
async fn requests_for(client: &Client, url: &str, how_long: Duration) -> Vec<Duration> {
    let started = Instant::now();
    let mut latencies = Vec::new();
    let mut n = 0;
    while started.elapsed() < how_long {
        n += 1;
        let sent = Instant::now();
        let r = client.try_get_with(&format!("{url}{n}"), &[]).await;
        assert!(
            r.is_ok_and(|r| r.status == 200),
            "a request failed while the collector did not answer"
        );
        latencies.push(sent.elapsed());
    }
    latencies
}

/// The filter's buffer bounds in the stall test, set explicitly so that the test states what it
/// checks (the defaults are 10,000 records and 8 MiB).
const MAX_PENDING_RECORDS: u64 = 5_000;
const MAX_PENDING_BYTES: u64 = 4 * 1024 * 1024;

/// The filter adds its counts to Envoy's counters on its 50 ms tick, so records it already
/// shed may still look pending for a tick: a few hundred at the rate one client sends here.
const COUNTER_LAG_RECORDS: u64 = 500;

/// How long the healthy and the stalled phases last, and how many times each is sampled.
struct StallPlan {
    healthy: Duration,
    stalled: Duration,
    samples_per_phase: u32,
}

fn stall_plan() -> StallPlan {
    if soak_mode() {
        StallPlan {
            healthy: Duration::from_secs(60),
            stalled: Duration::from_secs(60),
            samples_per_phase: 6,
        }
    } else {
        StallPlan {
            healthy: Duration::from_secs(3),
            stalled: Duration::from_secs(5),
            samples_per_phase: 1,
        }
    }
}

/// The filter's buffer and Envoy's memory at one moment of the stall test.
struct Sample {
    label: String,
    served: u64,
    stats: Stats,
    memory: EnvoyMemory,
}

impl Sample {
    async fn take(stack: &Stack, label: String, served: u64) -> Sample {
        Sample {
            label,
            served,
            stats: stack.envoy.stats().await.unwrap(),
            memory: stack.envoy.memory().await.unwrap(),
        }
    }

    /// Records of served requests neither acknowledged nor shed nor refused: what the filter
    /// holds (waiting or in flight), up to the counters' lag. The filter exports no gauge of its
    /// buffer, so this is derived from its counters.
    fn pending_records(&self) -> u64 {
        let accounted = self.stats.value("warden.records_sent")
            + self.stats.value("warden.records_summarized")
            + self.stats.value("warden.records_dropped")
            + self.stats.value("warden.records_rejected");
        self.served.saturating_sub(accounted)
    }
}

fn print_samples(samples: &[Sample]) {
    eprintln!(
        "stall: {:<14} {:>8} {:>8} {:>10} {:>8} {:>9} {:>9} {:>9} {:>9}",
        "phase",
        "served",
        "sent",
        "summarized",
        "dropped",
        "pending*",
        "alloc MiB",
        "heap MiB",
        "RSS MiB"
    );
    for s in samples {
        eprintln!(
            "stall: {:<14} {:>8} {:>8} {:>10} {:>8} {:>9} {:>9.1} {:>9.1} {:>9.1}",
            s.label,
            s.served,
            s.stats.value("warden.records_sent"),
            s.stats.value("warden.records_summarized"),
            s.stats.value("warden.records_dropped"),
            s.pending_records(),
            mib(s.memory.allocated),
            mib(s.memory.heap_size),
            mib(s.memory.rss),
        );
    }
    eprintln!(
        "stall: pending* = served - sent - summarized - dropped - rejected (the filter exports \
         no gauge of its buffer, so its bytes, bound {MAX_PENDING_BYTES}, are not seen); bound \
         {MAX_PENDING_RECORDS} records"
    );
}

/// Waits until the summaries the collector stored for `client` (`GET /api/v1/summaries`) count
/// all `summarized` requests; returns that count and the one of the collector's accounting
/// (`GET /api/v1/filters`), which should be the same.
async fn summarized_requests_stored(stack: &Stack, client: &Client, summarized: u64) -> (u64, u64) {
    let base = stack.collector.base_url();
    let stored = eventually("the summaries to be stored", || async {
        let body = stack
            .collector
            .get_json(&format!("{base}/api/v1/summaries?ip={}", client.source))
            .await?;
        let requests: u64 = body["summaries"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|s| s["requests"].as_u64())
            .sum();
        if requests == summarized {
            Ok(requests)
        } else {
            Err(format!("{requests} of {summarized} in {body}"))
        }
    })
    .await;
    let body = stack.collector.filters().await.unwrap();
    let node = stack.envoy.options.node_id.as_str();
    let accounted = body["accounting"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|row| row["node_id"] == node)
        .filter_map(|row| row["summaries"]["requests"].as_u64())
        .sum();
    (stored, accounted)
}

/// Waits until Envoy's request-time histogram holds `count` requests, and returns it.
async fn request_times(stack: &Stack, count: u64) -> Histogram {
    eventually(
        &format!("Envoy's histogram to hold {count} requests"),
        || async {
            let h = stack
                .envoy
                .histogram("http.ingress.downstream_rq_time")
                .await?;
            if h.count() == count {
                Ok(h)
            } else {
                Err(format!("{} requests in {h:?}", h.count()))
            }
        },
    )
    .await
}

/// Sends requests from `client` to `url` for `how_long`, sampling the filter and Envoy
/// `samples` times along the way; `served` counts the requests of the whole test.
async fn phase(
    stack: &Stack,
    client: &Client,
    name: &str,
    how_long: Duration,
    samples: u32,
    served: &mut u64,
    table: &mut Vec<Sample>,
) -> Vec<Duration> {
    let url = stack.envoy.url(&format!("/stall/{name}/"));
    let slice = how_long / samples;
    let mut latencies = Vec::new();
    for i in 1..=samples {
        let more = requests_for(client, &format!("{url}{i}-"), slice).await;
        *served += more.len() as u64;
        latencies.extend(more);
        let label = format!("{name} +{}s", (slice * i).as_secs());
        table.push(Sample::take(stack, label, *served).await);
    }
    latencies
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collector_that_stops_answering_costs_clients_nothing_and_loses_nothing() {
    let plan = stall_plan();
    let dir = tempfile::tempdir().unwrap();
    // One worker: a single VM holds every record, so the bounds apply to the whole buffer.
    let stack = Stack::start_with(|o| {
        o.template = template_flushing_stats_on_admin(&o.template, dir.path());
        o.filter_config = json!({ "batch": {
            "flush_interval_ms": 100,
            "max_pending_records": MAX_PENDING_RECORDS,
            "max_pending_bytes": MAX_PENDING_BYTES,
        } });
    })
    .await;
    let client = Client::from("127.0.0.110");
    let mut served = 0;
    let mut table = vec![Sample::take(&stack, "before".into(), served).await];
    let before = request_times(&stack, 0).await;

    let mut healthy = phase(
        &stack,
        &client,
        "healthy",
        plan.healthy,
        plan.samples_per_phase,
        &mut served,
        &mut table,
    )
    .await;
    let after_healthy = request_times(&stack, served).await;
    // SIGSTOP: the collector's sockets stay open but nothing answers (a hung process, a
    // saturated disk), unlike a crash.
    let pid = stack.collector.pid().unwrap().to_string();
    let signal = |s: &str| {
        let status = std::process::Command::new("kill")
            .args([s, &pid])
            .status()
            .unwrap();
        assert!(status.success());
    };
    signal("-STOP");
    let mut stalled = phase(
        &stack,
        &client,
        "stalled",
        plan.stalled,
        plan.samples_per_phase,
        &mut served,
        &mut table,
    )
    .await;
    signal("-CONT");
    let after_stall = request_times(&stack, served).await;
    let Settled {
        sent,
        summarized,
        dropped,
    } = settled(&stack, served).await;
    table.push(Sample::take(&stack, "settled".into(), served).await);

    print_samples(&table);
    let (healthy_n, stalled_n) = (healthy.len(), stalled.len());
    eprintln!(
        "stall: client-side: healthy p50 {:.2} ms p99 {:.2} ms ({healthy_n} requests); \
         collector stopped p50 {:.2} ms p99 {:.2} ms ({stalled_n} requests)",
        percentile(&mut healthy, 0.5),
        percentile(&mut healthy, 0.99),
        percentile(&mut stalled, 0.5),
        percentile(&mut stalled, 0.99),
    );
    let (envoy_healthy, envoy_stalled) = (
        after_healthy.since(&before),
        after_stall.since(&after_healthy),
    );
    let ms = |h: &Histogram, q| h.quantile(q).unwrap_or(f64::NAN);
    eprintln!(
        "stall: Envoy downstream_rq_time (whole ms): healthy p50 {} ms p99 {} ms ({} requests); \
         collector stopped p50 {} ms p99 {} ms ({} requests)",
        ms(&envoy_healthy, 0.5),
        ms(&envoy_healthy, 0.99),
        envoy_healthy.count(),
        ms(&envoy_stalled, 0.5),
        ms(&envoy_stalled, 0.99),
        envoy_stalled.count(),
    );

    for s in &table {
        assert!(
            s.pending_records() <= MAX_PENDING_RECORDS + COUNTER_LAG_RECORDS,
            "{}: the filter holds {} records, beyond its bound of {MAX_PENDING_RECORDS}",
            s.label,
            s.pending_records()
        );
    }
    let mut records = stack
        .collector
        .all_records("path_prefix=/stall/healthy/")
        .await
        .unwrap();
    records.extend(
        stack
            .collector
            .all_records("path_prefix=/stall/stalled/")
            .await
            .unwrap(),
    );
    let ids: HashSet<&str> = records
        .iter()
        .map(|r| r["request_id"].as_str().unwrap_or_default())
        .collect();
    let stored = records.len() as u64;
    let (in_summaries, in_accounting) =
        summarized_requests_stored(&stack, &client, summarized).await;
    // An Export that timed out while the collector was stopped still sits in its socket, and
    // the collector stores it when it resumes. If the filter meanwhile shed that batch to stay
    // within its bounds, its records are stored *and* counted as summarized or dropped.
    let counted_twice = (stored + summarized + dropped).saturating_sub(served);
    eprintln!(
        "stall: {served} requests served, {sent} records acknowledged, {stored} stored, \
         {summarized} summarized ({in_summaries} requests in the summaries stored, \
         {in_accounting} in the collector's accounting), {dropped} dropped, {} duplicates; \
         {counted_twice} records both stored and counted as shed",
        records.len() - ids.len(),
    );
    assert_eq!(ids.len(), records.len(), "no record stored twice");
    assert!(stored >= sent, "every acknowledged record is stored");
    assert!(
        stored + summarized + dropped >= served,
        "every record is stored, summarized or counted as dropped"
    );
    // A batch whose call timed out may still be stored when the collector resumes: the filter
    // keeps such batches and sheds newer ones, so no record is both stored and summarized.
    assert_eq!(
        stored + summarized + dropped,
        served,
        "generated = stored + summarized + dropped"
    );
    if soak_mode() {
        assert!(
            ms(&envoy_stalled, 0.99) <= ms(&envoy_healthy, 0.99) + 1.0,
            "Envoy's p99 while the collector is stopped is within 1 ms of the healthy p99"
        );
    }
}
