//! Quick local measurements, ignored by default. Run with
//! `cargo test -p warden-collector --release --test bench -- --ignored --nocapture`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::Instant;
use warden_collector::config::Synchronous;
use warden_collector::db::open_connection;
use warden_collector::decisions::{Catchup, DecisionAction, Decisions, Origin};
use warden_collector::ingest::Ingest;
use warden_collector::metrics::Metrics;
use warden_collector::store::Store;
use warden_collector::target::Target;
use warden_collector::time::Ttl;
use warden_proto::pb::{AccessRecord, ExportRequest};

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A record store in `dir` (`synchronous = normal`) and the ingest service in front of it, with
/// default limits and no authentication, as the query and verify measurements use them.
fn store_and_ingest(dir: &std::path::Path) -> (Arc<Store>, Ingest) {
    let metrics = Arc::new(Metrics::default());
    let store =
        Arc::new(Store::open(dir, Synchronous::Normal, 100_000, Arc::clone(&metrics)).unwrap());
    let ingest = Ingest::new(
        Arc::clone(&store),
        Default::default(),
        Default::default(),
        metrics,
    );
    (store, ingest)
}

fn batch(worker: u32, first_seq: u64, n: usize, now: i64) -> ExportRequest {
    warden_e2e::workload::batch(worker, first_seq, n as u64, now)
}

/// The ingest benchmarks' knobs: BENCH_RECORDS records from BENCH_CLIENTS concurrent
/// "filters" in batches of BENCH_BATCH, synchronous=FULL unless BENCH_SYNC=normal.
struct Knobs {
    clients: usize,
    per_client: usize,
    batch_size: usize,
    sync: Synchronous,
}

impl Knobs {
    fn from_env() -> Knobs {
        let clients = env_or("BENCH_CLIENTS", 8);
        let batch_size = env_or("BENCH_BATCH", 1000);
        let sync = if std::env::var("BENCH_SYNC").as_deref() == Ok("normal") {
            Synchronous::Normal
        } else {
            Synchronous::Full
        };
        Knobs {
            clients,
            per_client: env_or("BENCH_RECORDS", 400_000) / clients / batch_size,
            batch_size,
            sync,
        }
    }

    /// Records sent in all.
    fn records(&self) -> usize {
        self.clients * self.per_client * self.batch_size
    }

    /// Builds every batch first (so the measurement is the collector, not the generator), then
    /// sends them from one task per client; returns when all are acknowledged.
    async fn send_all(&self, ingest: &Arc<Ingest>) -> Instant {
        let now = chrono::Utc::now().timestamp_millis();
        let work: Vec<Vec<ExportRequest>> = (0..self.clients)
            .map(|w| {
                (0..self.per_client)
                    .map(|b| {
                        batch(
                            w as u32,
                            (b * self.batch_size + 1) as u64,
                            self.batch_size,
                            now,
                        )
                    })
                    .collect()
            })
            .collect();
        let started = Instant::now();
        let mut tasks = Vec::new();
        for batches in work {
            let ingest = Arc::clone(ingest);
            tasks.push(tokio::spawn(async move {
                for b in batches {
                    ingest.export(b).await.unwrap();
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        started
    }
}

/// Stores the workload through the Export path (validation + group commit). See [`Knobs`].
#[tokio::test(flavor = "multi_thread")]
#[ignore]
async fn ingest_throughput() {
    let k = Knobs::from_env();
    let dir = tempfile::tempdir().unwrap();
    let metrics = Arc::new(Metrics::default());
    let store = Arc::new(Store::open(dir.path(), k.sync, 100_000, Arc::clone(&metrics)).unwrap());
    let ingest = Arc::new(Ingest::new(
        Arc::clone(&store),
        Default::default(),
        Default::default(),
        metrics,
    ));
    let started = k.send_all(&ingest).await;
    let secs = started.elapsed().as_secs_f64();
    let n = k.records();
    println!(
        "stored {n} records in {secs:.2}s: {:.0} records/s ({:?}, {} clients, batches of {})",
        n as f64 / secs,
        k.sync,
        k.clients,
        k.batch_size
    );
    store.close().await;
}

/// Loads BENCH_DECISIONS decisions, then times a snapshot build and a reload from disk.
#[test]
#[ignore]
fn million_decisions_snapshot() {
    let n = env_or("BENCH_DECISIONS", 1_000_000);
    let dir = tempfile::tempdir().unwrap();
    let open = || {
        let conn = open_connection(&dir.path().join("warden.db"), Synchronous::Full).unwrap();
        Decisions::open(conn, 10_000, 10_000, Arc::new(Metrics::default())).unwrap()
    };
    let d = open();
    let targets: Vec<Target> = (0..n as u32)
        .map(|i| Target::from_parts(&(0x0b00_0000 + i).to_be_bytes(), 32).unwrap())
        .collect();
    let t = Instant::now();
    let (added, _, _) = d
        .ban_many(
            targets,
            DecisionAction::Deny,
            Ttl(None),
            "feed",
            "bench",
            &Origin::list("feed.txt"),
        )
        .unwrap();
    println!(
        "bulk ban of {added} decisions committed in {:.2}s",
        t.elapsed().as_secs_f64()
    );
    let t = Instant::now();
    let (c, _) = d.catch_up(0).unwrap();
    let Catchup::Snapshot(s) = c else {
        panic!("snapshot")
    };
    println!(
        "snapshot of {} entries in {} chunks built in {:.2}s",
        s.entries,
        s.chunks.len(),
        t.elapsed().as_secs_f64()
    );
    drop(s);
    drop(d);
    let t = Instant::now();
    let d = open();
    println!(
        "reloaded {} decisions from disk in {:.2}s",
        d.list(false, 0).unwrap().1,
        t.elapsed().as_secs_f64()
    );
}

/// The workload's twenty rules (`distinct_paths` as dry-run alerts).
fn twenty_rules() -> warden_rules::RuleSet {
    let rules =
        warden_rules::RuleSet::from_toml_str(&warden_e2e::workload::twenty_rules(true), "bench")
            .unwrap();
    assert_eq!(rules.rules().len(), 20);
    rules
}

fn rss_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// Ingest with 20 rules active: every record stored (group commit) and evaluated. Ingest waits
/// for room in the engine's queue, so the figure is the rate at which records are both stored
/// and evaluated ("skipped" must be 0).
/// Pin to one core with `taskset -c 0`. Same knobs as `ingest_throughput`.
#[tokio::test(flavor = "multi_thread")]
#[ignore]
async fn ingest_throughput_with_rules() {
    use warden_collector::detection::alerts::Alerter;
    use warden_collector::detection::{Detection, RulesSource};
    let k = Knobs::from_env();
    let sync = k.sync;
    let dir = tempfile::tempdir().unwrap();
    let metrics = Arc::new(Metrics::default());
    let store = Arc::new(Store::open(dir.path(), sync, 100_000, Arc::clone(&metrics)).unwrap());
    let decisions = Decisions::open(
        open_connection(&dir.path().join("warden.db"), sync).unwrap(),
        10_000,
        10_000,
        Arc::clone(&metrics),
    )
    .unwrap();
    let detection = Detection::start(
        RulesSource::default(),
        twenty_rules(),
        warden_collector::db::open_connection(&dir.path().join("warden.db"), sync).unwrap(),
        decisions,
        Arc::clone(&metrics),
        Alerter::disabled(Arc::clone(&metrics)),
        warden_collector::store::sequences::SequenceLog::default(),
    )
    .unwrap();
    let ingest = Arc::new(
        Ingest::new(
            Arc::clone(&store),
            Default::default(),
            Default::default(),
            Arc::clone(&metrics),
        )
        .with_detection(Arc::clone(&detection)),
    );
    let n = k.records();
    let started = k.send_all(&ingest).await;
    let stored_secs = started.elapsed().as_secs_f64();
    use std::sync::atomic::Ordering::Relaxed;
    while metrics.rules_records_evaluated.load(Relaxed)
        + metrics.rules_records_skipped.load(Relaxed)
        < n as u64
    {
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "20 rules + storage: {n} records stored in {stored_secs:.2}s and evaluated in {secs:.2}s: {:.0} records/s \
         ({sync:?}, {} clients, batches of {}); skipped {}, rule decisions {}",
        n as f64 / secs,
        k.clients,
        k.batch_size,
        metrics.rules_records_skipped.load(Relaxed),
        metrics.rule_decisions.load(Relaxed),
    );
    detection.close().await;
    store.close().await;
}

/// The engine alone with 20 rules (no storage), then memory after 1,000,000 distinct client
/// addresses (BENCH_DISTINCT). Pin to one core with `taskset -c 0`.
#[test]
#[ignore]
fn rules_engine_throughput_and_memory() {
    let total = env_or("BENCH_RECORDS", 2_000_000);
    let now = chrono::Utc::now().timestamp_millis();
    let records: Vec<AccessRecord> = (0..total / 1000)
        .flat_map(|b| batch((b % 8) as u32, (b * 1000 + 1) as u64, 1000, now + b as i64).records)
        .collect();
    let mut engine = warden_rules::Engine::new(twenty_rules());
    let mut out = Vec::new();
    let t = Instant::now();
    for r in &records {
        engine.observe_into(r, &mut out);
    }
    let secs = t.elapsed().as_secs_f64();
    println!(
        "20 rules, no storage: {} records in {secs:.2}s: {:.0} records/s ({} decisions)",
        records.len(),
        records.len() as f64 / secs,
        out.len()
    );
    drop(records);

    let distinct = env_or("BENCH_DISTINCT", 1_000_000);
    let mut engine = warden_rules::Engine::new(twenty_rules());
    let before = rss_kib("VmRSS:");
    let t = Instant::now();
    let mut r = AccessRecord {
        request_id: "6f1c0000-4a7e-9b1d-3c2e5f8a0b7d".into(),
        authority: "shop.example.com".into(),
        method: "GET".into(),
        path: "/api/items/1".into(),
        status: 404,
        ..Default::default()
    };
    for i in 0..distinct as u32 {
        // Spread over 50 s of record time: every key is still inside the 1 min windows.
        r.time_ms = now + i64::from(i / 20_000) * 1000;
        r.client_address = std::net::Ipv4Addr::from(0x0b00_0000 + i).to_string();
        engine.observe_into(&r, &mut out);
    }
    println!(
        "{distinct} distinct clients in {:.2}s: {} tracked keys, RSS +{} MiB (peak {} MiB)",
        t.elapsed().as_secs_f64(),
        engine.tracked_keys(),
        rss_kib("VmRSS:").saturating_sub(before) / 1024,
        rss_kib("VmHWM:") / 1024
    );
}

/// Query latency over BENCH_RECORDS records (default 2,000,000) spread over the last hour from
/// 8 filters, stored through the Export path: the newest 100, a recent status filter, a client
/// seen once (block summaries skip the rest), a rare path prefix (no summary help: every block
/// in range is read), the access report and a 20-rule replay over the hour.
#[tokio::test(flavor = "multi_thread")]
#[ignore]
async fn query_latency() {
    use warden_collector::api::model::ReportFormat;
    use warden_collector::api::report::{ReportQuery, access_report};
    use warden_collector::store::query::{RecordQuery, StatusFilter};
    use warden_collector::time::TimeBound;
    let total = env_or("BENCH_RECORDS", 2_000_000);
    let dir = tempfile::tempdir().unwrap();
    let (store, ingest) = store_and_ingest(dir.path());
    let now = chrono::Utc::now().timestamp_millis();
    let batches = total / 1000;
    let step_ms = 3_600_000 / batches as i64;
    let t = Instant::now();
    for b in 0..batches {
        let start = now - 3_600_000 + b as i64 * step_ms;
        let mut req = batch((b % 8) as u32, (b / 8 * 1000 + 1) as u64, 1000, start);
        if b == batches / 2 {
            req.records[0].client_address = "192.0.2.77".into();
            req.records[0].path = "/admin/export".into();
        }
        ingest.export(req).await.unwrap();
    }
    println!(
        "stored {total} records over 1h of record time in {:.2}s",
        t.elapsed().as_secs_f64()
    );
    let minutes = |m: u64| Some(TimeBound::Ago(std::time::Duration::from_secs(m * 60)));
    let cases: Vec<(&str, RecordQuery)> = vec![
        (
            "newest 100, no filter",
            RecordQuery {
                limit: 100,
                ..Default::default()
            },
        ),
        (
            "status 4xx in the last 5 min, limit 1000",
            RecordQuery {
                since: minutes(5),
                status: Some(StatusFilter::Class(4)),
                limit: 1000,
                ..Default::default()
            },
        ),
        (
            "one client seen once, last hour",
            RecordQuery {
                since: minutes(61),
                ip: Some("192.0.2.77".parse().unwrap()),
                limit: 100,
                ..Default::default()
            },
        ),
        (
            "rare path prefix, last hour (reads every block)",
            RecordQuery {
                since: minutes(61),
                path_prefix: Some("/admin".into()),
                limit: 100,
                ..Default::default()
            },
        ),
    ];
    for (name, q) in cases {
        let t = Instant::now();
        let got = store.query_records(q).await.unwrap();
        println!(
            "query {name}: {} records in {:.1} ms",
            got.len(),
            t.elapsed().as_secs_f64() * 1000.0
        );
    }
    let t = Instant::now();
    let rows = access_report(
        &store,
        &ReportQuery {
            since: minutes(61).unwrap(),
            until: None,
            principal: None,
            host: None,
            format: ReportFormat::Json,
        },
    )
    .await
    .unwrap();
    println!(
        "access report over the hour: {} rows in {:.2}s",
        rows.len(),
        t.elapsed().as_secs_f64()
    );
    let rules = warden_e2e::workload::twenty_rules(false);
    let t = Instant::now();
    let replayed =
        warden_collector::api::replay::replay(&store, &rules, minutes(61).unwrap(), None)
            .await
            .unwrap();
    println!(
        "replay of 20 rules over the hour: {} records, {} decisions in {:.2}s",
        replayed.records,
        replayed.decisions.len(),
        t.elapsed().as_secs_f64()
    );
    let db_bytes: u64 = std::fs::read_dir(dir.path())
        .unwrap()
        .filter_map(|e| e.ok()?.metadata().ok())
        .map(|m| m.len())
        .sum();
    println!(
        "database files: {:.1} MiB ({:.0} bytes per record)",
        db_bytes as f64 / 1048576.0,
        db_bytes as f64 / total as f64
    );
    store.close().await;
}

/// How long a ban's commit takes while records are ingested as fast as they come (8 senders,
/// batches of 1000, synchronous=FULL): BENCH_BANS bans (default 200), one every 5 ms, timed from
/// the call to its return (after that the push to the filters follows at once).
#[tokio::test(flavor = "multi_thread")]
#[ignore]
async fn ban_latency_under_ingest() {
    use warden_collector::decisions::BanRequest;
    let bans = env_or("BENCH_BANS", 200);
    let dir = tempfile::tempdir().unwrap();
    let metrics = Arc::new(Metrics::default());
    let store = Arc::new(
        Store::open(dir.path(), Synchronous::Full, 100_000, Arc::clone(&metrics)).unwrap(),
    );
    let decisions = Decisions::open(
        open_connection(&dir.path().join("warden.db"), Synchronous::Full).unwrap(),
        10_000,
        10_000,
        Arc::clone(&metrics),
    )
    .unwrap();
    let ingest = Arc::new(Ingest::new(
        Arc::clone(&store),
        Default::default(),
        Default::default(),
        metrics,
    ));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let now = chrono::Utc::now().timestamp_millis();
    let mut senders = Vec::new();
    for w in 0..8u32 {
        let ingest = Arc::clone(&ingest);
        let stop = Arc::clone(&stop);
        senders.push(tokio::spawn(async move {
            let mut seq = 1u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                ingest.export(batch(w, seq, 1000, now)).await.unwrap();
                seq += 1000;
            }
        }));
    }
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let mut latencies = Vec::new();
    for i in 0..bans as u32 {
        let decisions = Arc::clone(&decisions);
        let target = Target::from_parts(&(0x0c00_0000 + i).to_be_bytes(), 32).unwrap();
        let t = Instant::now();
        tokio::task::spawn_blocking(move || {
            decisions
                .ban(BanRequest {
                    target,
                    action: DecisionAction::Deny,
                    ttl: Ttl(None),
                    reason: "bench".into(),
                    actor: "bench".into(),
                    origin: Origin::manual(),
                })
                .unwrap()
        })
        .await
        .unwrap();
        latencies.push(t.elapsed().as_secs_f64() * 1000.0);
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for s in senders {
        s.await.unwrap();
    }
    latencies.sort_by(f64::total_cmp);
    let at = |q: f64| latencies[((latencies.len() - 1) as f64 * q) as usize];
    println!(
        "ban commit under ingest: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms ({} bans)",
        at(0.5),
        at(0.99),
        at(1.0),
        latencies.len()
    );
    store.close().await;
}

/// `warden verify`'s time per million records: `BENCH_RECORDS` (1,000,000) records stored in
/// batches of 1,000, compacted and sealed into the block chain as the running collector does,
/// then the whole trail verified `ROUNDS` (5) times; the median, scaled to a million records.
#[tokio::test(flavor = "multi_thread")]
#[ignore]
async fn verify_time_per_million_records() {
    let total = env_or("BENCH_RECORDS", 1_000_000);
    let rounds = env_or("ROUNDS", 5);
    let dir = tempfile::tempdir().unwrap();
    // The decisions database too, as `warden serve` creates it: verify walks its audit chain.
    let main = open_connection(&dir.path().join("warden.db"), Synchronous::Normal).unwrap();
    drop(Decisions::open(main, 10_000, 10_000, Arc::new(Metrics::default())).unwrap());
    let (store, ingest) = store_and_ingest(dir.path());
    let now = chrono::Utc::now().timestamp_millis();
    for b in 0..total / 1000 {
        let req = batch(
            (b % 8) as u32,
            (b / 8 * 1000 + 1) as u64,
            1000,
            now - 3_600_000,
        );
        ingest.export(req).await.unwrap();
    }
    while store.compact(i64::MAX).await.unwrap() > 0 {}
    store.close().await;
    let mut times = Vec::new();
    let mut report = None;
    for _ in 0..rounds {
        let t = Instant::now();
        let r = warden_collector::trail::verify(dir.path()).unwrap();
        times.push(t.elapsed().as_secs_f64());
        report = Some(r);
    }
    let report = report.unwrap();
    assert!(report.problems.is_empty(), "{}", report.render());
    assert_eq!(report.records as usize, total, "{}", report.render());
    times.sort_by(f64::total_cmp);
    let median = times[times.len() / 2];
    println!(
        "warden verify: {} records in {} sealed blocks: median {:.3} s over {rounds} rounds (min {:.3}, max {:.3}): {:.3} s per million records",
        report.records,
        report.blocks,
        median,
        times[0],
        times[times.len() - 1],
        median * 1e6 / report.records as f64
    );
}
