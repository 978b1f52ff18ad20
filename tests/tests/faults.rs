//! Faults under load through a real Envoy (shortened for `make test`): the collector is
//! SIGKILLed several times while clients keep sending; afterwards every record the filter saw
//! acknowledged is stored, none twice, and every request served is either stored or counted
//! as dropped by the filter.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;
use warden_e2e::{Client, Stack, eventually};

const KILLS: usize = 4;
const CLIENTS: u8 = 4;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collector_killed_under_load_loses_no_acknowledged_record_and_stores_none_twice() {
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
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }));
    }
    for _ in 0..KILLS {
        tokio::time::sleep(Duration::from_millis(2000)).await;
        stack.collector.kill();
        tokio::time::sleep(Duration::from_millis(500)).await;
        stack.collector.restart().await;
    }
    tokio::time::sleep(Duration::from_millis(1000)).await;
    running.store(false, Ordering::Relaxed);
    for l in load {
        l.await.unwrap();
    }
    let served = served.load(Ordering::Relaxed);

    // The filter settles: every record it built is acknowledged or counted as dropped.
    let (sent, dropped) = settled(&stack, served).await;
    let records = stack
        .collector
        .records("path_prefix=/k/&limit=10000")
        .await
        .unwrap();
    assert!(records.len() < 10_000, "one page holds them all");
    let ids: HashSet<&str> = records
        .iter()
        .map(|r| r["request_id"].as_str().unwrap_or_default())
        .collect();
    eprintln!(
        "{KILLS} kills: {served} requests served, {sent} records acknowledged, {} stored, {dropped} dropped by the filter, {} duplicates",
        records.len(),
        records.len() - ids.len()
    );
    assert_eq!(ids.len(), records.len(), "no record stored twice");
    assert_eq!(
        records.len() as u64,
        sent,
        "every acknowledged record is stored"
    );
    assert_eq!(
        records.len() as u64 + dropped,
        served,
        "generated = stored + dropped"
    );
}

/// Waits until the filter has every record of the `served` requests acknowledged or counted as
/// dropped (none refused), and returns (acknowledged, dropped).
async fn settled(stack: &Stack, served: u64) -> (u64, u64) {
    eventually("the filter to deliver or count every record", || async {
        let stat = |name: &'static str| async move { stack.envoy.stat(name).await.unwrap_or(0) };
        let sent = stat("warden.records_sent").await;
        let dropped = stat("warden.records_dropped").await;
        let rejected = stat("warden.records_rejected").await;
        if sent + dropped + rejected == served && rejected == 0 {
            Ok((sent, dropped))
        } else {
            Err(format!(
                "served {served}, sent {sent}, dropped {dropped}, rejected {rejected}"
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
    let started = std::time::Instant::now();
    let mut latencies = Vec::new();
    let mut n = 0;
    while started.elapsed() < how_long {
        n += 1;
        let sent = std::time::Instant::now();
        let r = client.try_get_with(&format!("{url}{n}"), &[]).await;
        assert!(
            r.is_ok_and(|r| r.status == 200),
            "a request failed while the collector did not answer"
        );
        latencies.push(sent.elapsed());
    }
    latencies
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collector_that_stops_answering_costs_clients_nothing_and_loses_nothing() {
    let stack = Stack::start().await;
    let client = Client::from("127.0.0.110");
    let healthy_url = stack.envoy.url("/stall/healthy/");
    let mut healthy = requests_for(&client, &healthy_url, Duration::from_secs(3)).await;
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
    let stalled_url = stack.envoy.url("/stall/stalled/");
    let mut stalled = requests_for(&client, &stalled_url, Duration::from_secs(5)).await;
    signal("-CONT");
    let (healthy_n, stalled_n) = (healthy.len(), stalled.len());
    // Reported, not asserted: timing on a shared machine is a benchmark's job.
    eprintln!(
        "stall: healthy p50 {:.2} ms p99 {:.2} ms ({healthy_n} requests); collector stopped p50 {:.2} ms p99 {:.2} ms ({stalled_n} requests)",
        percentile(&mut healthy, 0.5),
        percentile(&mut healthy, 0.99),
        percentile(&mut stalled, 0.5),
        percentile(&mut stalled, 0.99),
    );
    let served = (healthy_n + stalled_n) as u64;
    settled(&stack, served).await;
    let mut stored = 0;
    for part in ["healthy", "stalled"] {
        let page = stack
            .collector
            .records(&format!("path_prefix=/stall/{part}/&limit=10000"))
            .await
            .unwrap();
        assert!(page.len() < 10_000, "one page holds them all");
        stored += page.len() as u64;
    }
    let dropped = stack
        .envoy
        .stat("warden.records_dropped")
        .await
        .unwrap_or(0);
    assert_eq!(stored + dropped, served, "generated = stored + dropped");
}
