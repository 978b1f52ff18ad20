//! Tests of the module as a whole.

#![allow(unused_imports)]
use super::{compaction::*, retention::*, writer::*};

use super::block::{BLOCK_RECORDS, CODEC_PROTOBUF_LZ4, Entry};
use super::scan::{Order, ScanRange};
use super::sequences::{FilterKey, SequenceLog};
use super::summaries::{StoredSummary, SummaryOutcome, SummaryQuery};
use crate::config::Synchronous;
use crate::db::{ReadPool, open_connection};
use crate::error::Error;
use crate::metrics::Metrics;
use crate::store::query::{Cursor, RecordFilter, RecordQuery, StoredRecord};
use rusqlite::{Connection, OptionalExtension, params};
use std::collections::HashMap;
use std::ops::ControlFlow;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Instant;
use tokio::sync::{mpsc, oneshot};
use warden_proto::pb::{AccessRecord, FilterIdentity, RecordSummary};

use super::*;
use crate::store::query::StatusFilter;
use warden_proto::pb::{AuthDecision, DenyKind, Mechanism, Principal, PrincipalSource, Verdict};

pub(crate) fn filter() -> FilterIdentity {
    FilterIdentity {
        node_id: "envoy-1".into(),
        worker: 0,
        instance_id: "i-1".into(),
        filter_version: "0.1.0".into(),
    }
}

pub(crate) fn record(seq: u64, time_ms: i64) -> AccessRecord {
    AccessRecord {
        sequence: seq,
        time_ms,
        request_id: format!("req-{seq}"),
        client_address: "203.0.113.7".into(),
        client_port: 40000,
        authority: "app.example.com".into(),
        method: "GET".into(),
        path: "/api/items".into(),
        protocol: "HTTP/1.1".into(),
        status: 200,
        duration_us: 1500,
        ..Default::default()
    }
}

async fn open(dir: &Path) -> Store {
    Store::open(
        dir,
        Synchronous::Full,
        100_000,
        Arc::new(Metrics::default()),
    )
    .unwrap()
}

fn all() -> RecordQuery {
    RecordQuery {
        limit: 1000,
        ..Default::default()
    }
}

#[tokio::test]
async fn acknowledged_batches_are_readable_after_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).await;
    let out = store
        .write_batch(filter(), vec![record(1, 1000), record(2, 2000)])
        .await
        .unwrap();
    assert_eq!(
        out,
        BatchOutcome {
            accepted: 2,
            duplicates: 0,
            ..BatchOutcome::default()
        }
    );
    store.close().await;
    drop(store);
    let store = open(dir.path()).await;
    let got = store.query_records(all()).await.unwrap();
    assert_eq!(got.len(), 2);
    assert_eq!(got[0].sequence, 2, "newest first");
    assert_eq!(got[0].time, "1970-01-01T00:00:02.000Z");
    assert_eq!(got[0].filter_node, "envoy-1");
    // The sequences survived too: a retry after the restart is a duplicate.
    let out = store
        .write_batch(filter(), vec![record(2, 2000), record(3, 3000)])
        .await
        .unwrap();
    assert_eq!((out.accepted, out.duplicates), (1, 1));
}

#[tokio::test]
async fn a_retried_batch_is_stored_once() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).await;
    store
        .write_batch(filter(), vec![record(1, 1000), record(2, 1000)])
        .await
        .unwrap();
    let out = store
        .write_batch(
            filter(),
            vec![record(1, 1000), record(2, 1000), record(3, 1000)],
        )
        .await
        .unwrap();
    assert_eq!(
        out,
        BatchOutcome {
            accepted: 1,
            duplicates: 2,
            ..BatchOutcome::default()
        }
    );
    // Another VM's sequence 1 is a different record.
    let mut other = filter();
    other.worker = 1;
    let out = store
        .write_batch(other, vec![record(1, 1000)])
        .await
        .unwrap();
    assert_eq!(out.accepted, 1);
    assert_eq!(store.query_records(all()).await.unwrap().len(), 4);
}

#[tokio::test]
async fn writes_after_close_fail_as_shutting_down() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).await;
    store.close().await;
    let err = store
        .write_batch(filter(), vec![record(1, 1)])
        .await
        .unwrap_err();
    assert_eq!(err.grpc_code(), tonic::Code::Unavailable);
}

#[tokio::test]
async fn principal_decision_and_maps_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).await;
    let mut r = record(1, 1000);
    r.principal = Some(Principal {
        source: PrincipalSource::Jwt as i32,
        name: "alice".into(),
        issuer: "https://idp".into(),
        audiences: vec!["api".into()],
        claims: [("email".to_string(), "a@x".to_string())].into(),
        ..Default::default()
    });
    r.decision = Some(AuthDecision {
        verdict: Verdict::Deny as i32,
        mechanism: Mechanism::JwtAuthn as i32,
        deny_kind: DenyKind::Authentication as i32,
        reason: "jwt_authn_access_denied{Jwt is expired}".into(),
        ..Default::default()
    });
    r.captured_headers = [("x-tenant".to_string(), "t1".to_string())].into();
    store.write_batch(filter(), vec![r]).await.unwrap();
    let got = &store.query_records(all()).await.unwrap()[0];
    assert_eq!(got.principal.as_deref(), Some("alice"));
    assert_eq!(got.principal_source.as_deref(), Some("jwt"));
    assert_eq!(got.principal_audiences, vec!["api".to_string()]);
    assert_eq!(
        got.principal_claims.get("email").map(String::as_str),
        Some("a@x")
    );
    assert_eq!(got.decision.as_deref(), Some("deny"));
    assert_eq!(got.mechanism.as_deref(), Some("jwt_authn"));
    assert_eq!(got.deny_kind.as_deref(), Some("authentication"));
    assert_eq!(
        got.captured_headers.get("x-tenant").map(String::as_str),
        Some("t1")
    );
    let plain = record(2, 1000);
    store.write_batch(filter(), vec![plain]).await.unwrap();
    let got = store
        .query_records(RecordQuery { limit: 1, ..all() })
        .await
        .unwrap();
    assert_eq!(got[0].principal, None);
    assert_eq!(got[0].decision, None);
}

#[tokio::test]
async fn each_filter_narrows_the_query() {
    let dir = tempfile::tempdir().unwrap();
    let now = crate::time::now_ms();
    let mut rs = Vec::new();
    for i in 1..=6u64 {
        rs.push(record(i, now - 1000 * i64::try_from(i).unwrap()));
    }
    rs[0].client_address = "10.1.2.3".into();
    rs[1].client_address = "2001:db8::5".into();
    rs[2].authority = "other.example.com:8443".into();
    rs[3].path = "/admin/users".into();
    rs[4].status = 404;
    rs[5].method = "POST".into();
    rs[5].principal = Some(Principal {
        name: "bob".into(),
        ..Default::default()
    });
    rs[5].decision = Some(AuthDecision {
        verdict: Verdict::Deny as i32,
        ..Default::default()
    });
    rs[5].time_ms = now - 3_600_000 * 2;
    // Once in one block (the record test decides), once a block per record (the summary
    // test decides which blocks are read).
    let cases: &[(&str, &str, &[u64])] = &[
        ("ip", "10.0.0.0/8", &[1]),
        ("ip", "2001:db8::/32", &[2]),
        ("ip", "203.0.113.7", &[3, 4, 5, 6]),
        ("host", "other.example.com", &[3]),
        ("path_prefix", "/admin", &[4]),
        ("status", "4xx", &[5]),
        ("status", "200", &[1, 2, 3, 4, 6]),
        ("method", "post", &[6]),
        ("principal", "bob", &[6]),
        ("decision", "deny", &[6]),
        ("since", "1h", &[1, 2, 3, 4, 5]),
        ("until", "1h", &[6]),
        ("limit", "2", &[1, 2]),
    ];
    let one_block = open(dir.path()).await;
    one_block.write_batch(filter(), rs.clone()).await.unwrap();
    let other_dir = tempfile::tempdir().unwrap();
    let many_blocks = open(other_dir.path()).await;
    for r in rs {
        many_blocks.write_batch(filter(), vec![r]).await.unwrap();
    }
    for store in [&one_block, &many_blocks] {
        for (key, value, expected) in cases {
            let params = [(key.to_string(), value.to_string())].into();
            let q = RecordQuery::from_params(&params, 1000).unwrap();
            let got: Vec<u64> = store
                .query_records(q)
                .await
                .unwrap()
                .iter()
                .map(|r| r.sequence)
                .collect();
            assert_eq!(&got, expected, "{key}={value}");
        }
    }
}

#[tokio::test]
async fn idle_filters_are_forgotten_and_recent_ones_still_deduplicate() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).await;
    let outcome = store
        .write_batch(filter(), vec![record(1, 1000)])
        .await
        .unwrap();
    assert_eq!(outcome.accepted, 1);
    // Written just now: a cut-off in the past keeps it, a retry is a duplicate.
    assert_eq!(store.forget_idle_filters(1).await.unwrap(), 0);
    let retry = store
        .write_batch(filter(), vec![record(1, 1000)])
        .await
        .unwrap();
    assert_eq!(retry.duplicates, 1);
    // Idle past the window: forgotten, in memory and on disk.
    let later = crate::time::now_ms() + 1;
    assert_eq!(store.forget_idle_filters(later).await.unwrap(), 1);
    drop(store);
    let store = open(dir.path()).await;
    assert_eq!(store.forget_idle_filters(later).await.unwrap(), 0);
}

#[tokio::test]
async fn final_blocks_are_sealed_and_verify_through_compaction_and_retention() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).await;
    crate::decisions::tests::open(dir.path());
    for seq in 1..=3 {
        store
            .write_batch(filter(), vec![record(seq, 1000 + seq as i64)])
            .await
            .unwrap();
    }
    // A large block behind the small ones makes them final once merged.
    let large: Vec<AccessRecord> = (4..4 + COMPACT_BELOW as u64)
        .map(|seq| record(seq, 5000))
        .collect();
    store.write_batch(filter(), large).await.unwrap();
    store.compact(i64::MAX).await.unwrap();
    let report = crate::trail::verify(dir.path()).unwrap();
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    assert_eq!(
        (report.blocks, report.records),
        (2, 3 + COMPACT_BELOW as u64)
    );
    // Retention removes the old merged block: recorded, not tampering.
    store.prune(2000).await.unwrap();
    let report = crate::trail::verify(dir.path()).unwrap();
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    assert_eq!((report.blocks, report.pruned_blocks), (1, 0));
}

/// `warden verify`'s cost, for the closing note (not a timed test: run it with
/// `cargo test --release -p warden-collector --lib -- --ignored verify_cost --nocapture`).
#[tokio::test]
#[ignore = "a measurement, not a test"]
async fn verify_cost_per_million_records() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(
        dir.path(),
        Synchronous::Off,
        100_000,
        Arc::new(Metrics::default()),
    )
    .unwrap();
    crate::decisions::tests::open(dir.path());
    for b in 0..1000u64 {
        let batch: Vec<AccessRecord> = (0..1000)
            .map(|i| record(b * 1000 + i + 1, 1_000_000 + (b * 1000 + i) as i64))
            .collect();
        store.write_batch(filter(), batch).await.unwrap();
    }
    while store.compact(i64::MAX).await.unwrap() > 0 {}
    let started = std::time::Instant::now();
    let report = crate::trail::verify(dir.path()).unwrap();
    let took = started.elapsed();
    let bytes = std::fs::metadata(dir.path().join(RECORDS_DB_FILE))
        .unwrap()
        .len();
    println!(
        "warden verify: {} records in {} sealed blocks ({} unsealed), records.db {} MB: {:.2} s",
        report.records,
        report.blocks,
        report.unsealed_blocks,
        bytes / 1_000_000,
        took.as_secs_f64()
    );
    assert!(report.problems.is_empty());
}

#[tokio::test]
async fn prune_deletes_only_old_blocks() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).await;
    store
        .write_batch(filter(), vec![record(1, 1000), record(2, 5000)])
        .await
        .unwrap();
    store
        .write_batch(filter(), vec![record(3, 1500)])
        .await
        .unwrap();
    // The first block holds a record newer than the cut-off: blocks go whole.
    assert_eq!(store.prune(2000).await.unwrap(), 1);
    assert_eq!(store.prune(2000).await.unwrap(), 0);
    let left: Vec<u64> = store
        .query_records(all())
        .await
        .unwrap()
        .iter()
        .map(|r| r.sequence)
        .collect();
    assert_eq!(left, vec![2, 1]);
}

fn sequences(records: &[StoredRecord]) -> Vec<u64> {
    records.iter().map(|r| r.sequence).collect()
}

async fn oldest_first(store: &Store) -> Vec<u64> {
    let filter = RecordFilter::new(&all(), crate::time::now_ms());
    store
        .read(move |conn| {
            let mut out = Vec::new();
            scan_matching(conn, &filter, Order::OldestFirst, |_, r| {
                out.push(r.sequence);
                ControlFlow::Continue(())
            })?;
            Ok(out)
        })
        .await
        .unwrap()
}

async fn block_sizes(store: &Store) -> Vec<i64> {
    store
        .read(|conn| {
            let mut stmt = conn.prepare("SELECT records FROM record_blocks ORDER BY id")?;
            let sizes = stmt.query_map([], |r| r.get(0))?;
            sizes.collect::<Result<Vec<i64>, _>>().map_err(Error::from)
        })
        .await
        .unwrap()
}

#[tokio::test]
async fn overlapping_blocks_read_back_in_time_order_both_ways() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).await;
    // Two commits whose times interleave (two filters shipping with different delays).
    store
        .write_batch(
            filter(),
            vec![record(1, 1000), record(2, 5000), record(3, 9000)],
        )
        .await
        .unwrap();
    let mut other = filter();
    other.worker = 1;
    store
        .write_batch(
            other,
            vec![record(11, 9000), record(12, 2000), record(13, 3000)],
        )
        .await
        .unwrap();
    let newest = store.query_records(all()).await.unwrap();
    // Equal times: the later block first going backwards, the earlier going forwards.
    assert_eq!(sequences(&newest), vec![11, 3, 2, 13, 12, 1]);
    assert_eq!(newest[0].filter_worker, 1);
    assert_eq!(oldest_first(&store).await, vec![1, 12, 13, 2, 3, 11]);
    let top = store
        .query_records(RecordQuery { limit: 2, ..all() })
        .await
        .unwrap();
    assert_eq!(sequences(&top), vec![11, 3]);
}

#[tokio::test]
async fn a_large_group_is_split_into_time_ordered_blocks() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).await;
    let n = BLOCK_RECORDS as u64 * 2 + 100;
    // Times run backwards against sequences, so the store must sort.
    let records: Vec<AccessRecord> = (1..=n)
        .map(|seq| record(seq, 1_000_000 - i64::try_from(seq).unwrap()))
        .collect();
    let out = store.write_batch(filter(), records).await.unwrap();
    assert_eq!(out.accepted as u64, n);
    assert_eq!(block_sizes(&store).await, vec![8192, 8192, 100]);
    let top = store
        .query_records(RecordQuery { limit: 3, ..all() })
        .await
        .unwrap();
    assert_eq!(sequences(&top), vec![1, 2, 3]);
    let all_oldest = oldest_first(&store).await;
    assert_eq!(all_oldest.len() as u64, n);
    assert_eq!(all_oldest.first(), Some(&n));
    assert!(all_oldest.windows(2).all(|w| w[0] == w[1] + 1));
}

#[tokio::test]
async fn small_blocks_are_merged_without_changing_any_answer() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).await;
    let mut seq = 0u64;
    let mut small_batch = |store_time: i64| {
        let batch: Vec<AccessRecord> = (0..3)
            .map(|i| {
                seq += 1;
                let mut r = record(seq, store_time + i);
                r.status = if seq.is_multiple_of(4) { 404 } else { 200 };
                r
            })
            .collect();
        batch
    };
    for i in 0..40 {
        store
            .write_batch(filter(), small_batch(1000 + i * 2))
            .await
            .unwrap();
    }
    // A block too large to merge, then more small ones after it.
    let big: Vec<AccessRecord> = (0..COMPACT_BELOW as u64)
        .map(|i| record(10_000 + i, 500))
        .collect();
    store.write_batch(filter(), big).await.unwrap();
    for i in 0..5 {
        store
            .write_batch(filter(), small_batch(3000 + i))
            .await
            .unwrap();
    }
    let before = store
        .query_records(RecordQuery {
            limit: 5000,
            ..all()
        })
        .await
        .unwrap();
    let fours = RecordQuery {
        status: Some(StatusFilter::Code(404)),
        limit: 5000,
        ..all()
    };
    let before_404 = store.query_records(fours.clone()).await.unwrap();
    assert_eq!(block_sizes(&store).await.len(), 46);

    // Nothing was written before this time: nothing is touched.
    assert_eq!(store.compact(0).await.unwrap(), 0);
    let merges = store.compact(crate::time::now_ms() + 1000).await.unwrap();
    assert_eq!(merges, 2);
    assert_eq!(
        block_sizes(&store).await,
        vec![120, COMPACT_BELOW, 15],
        "small runs merged on each side of the large block, which stays"
    );
    assert_eq!(
        store
            .query_records(RecordQuery {
                limit: 5000,
                ..all()
            })
            .await
            .unwrap(),
        before
    );
    assert_eq!(store.query_records(fours).await.unwrap(), before_404);

    // A merged block that is still small takes in later small blocks.
    store
        .write_batch(filter(), small_batch(4000))
        .await
        .unwrap();
    assert_eq!(
        store.compact(crate::time::now_ms() + 1000).await.unwrap(),
        1
    );
    assert_eq!(block_sizes(&store).await, vec![120, COMPACT_BELOW, 18]);
    assert_eq!(
        store.compact(crate::time::now_ms() + 1000).await.unwrap(),
        0
    );
    // Retries of merged records are still recognised.
    let out = store
        .write_batch(filter(), vec![record(1, 1000)])
        .await
        .unwrap();
    assert_eq!(out.duplicates, 1);
}

#[tokio::test]
async fn a_record_far_from_its_batch_gets_its_own_block() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).await;
    let day = 86_400_000;
    store
        .write_batch(
            filter(),
            vec![record(1, 10 * day), record(2, day), record(3, 10 * day + 5)],
        )
        .await
        .unwrap();
    store
        .write_batch(filter(), vec![record(4, 10 * day + 9)])
        .await
        .unwrap();
    assert_eq!(block_sizes(&store).await, vec![1, 2, 1]);
    // Merging keeps the bound too: only the two blocks close in time are merged.
    assert_eq!(
        store.compact(crate::time::now_ms() + 1000).await.unwrap(),
        1
    );
    assert_eq!(block_sizes(&store).await, vec![1, 3]);
    let span: i64 = store
        .read(|conn| {
            conn.query_row(
                "SELECT value FROM store_meta WHERE key = 'max_block_span_ms'",
                [],
                |r| r.get(0),
            )
            .map_err(Error::from)
        })
        .await
        .unwrap();
    assert_eq!(span, 9);
    assert_eq!(oldest_first(&store).await, vec![2, 1, 3, 4]);
}

use crate::time::TimeBound;

/// Ingest only checks `time_ms > 0`, so a filter with a broken clock can store the last
/// representable time; the newest-first index bound must not overflow past it.
#[tokio::test]
async fn a_block_ending_at_the_last_representable_time_is_still_read() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).await;
    store
        .write_batch(filter(), vec![record(1, i64::MAX - 1), record(2, i64::MAX)])
        .await
        .unwrap();
    // Record 2 can never match (`until` is exclusive); record 1 must, in both orders.
    assert_eq!(oldest_first(&store).await, vec![1]);
    assert_eq!(
        sequences(&store.query_records(all()).await.unwrap()),
        vec![1]
    );
}

/// A merge that fails after raising the widest span must not keep the raised value in memory:
/// a later block between the two spans would never be recorded, and scans would miss it.
#[tokio::test]
async fn a_failed_merge_does_not_leave_a_span_that_hides_later_blocks() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).await;
    store
        .write_batch(filter(), vec![record(1, 1000), record(2, 1001)])
        .await
        .unwrap(); // span 1 (persisted)
    store
        .write_batch(filter(), vec![record(3, 1005)])
        .await
        .unwrap();
    // Fault injection standing in for a full disk / I/O error during the merge transaction.
    let admin = open_connection(store.path(), Synchronous::Full).unwrap();
    admin
        .execute_batch(
            "CREATE TRIGGER fail_span BEFORE INSERT ON store_meta
                 WHEN NEW.key = 'max_block_span_ms' BEGIN SELECT RAISE(ABORT, 'injected'); END;",
        )
        .unwrap();
    assert!(store.compact(crate::time::now_ms() + 1000).await.is_err());
    admin.execute_batch("DROP TRIGGER fail_span").unwrap();
    // Span 4: wider than the persisted 1, narrower than the 5 the failed merge left in memory.
    store
        .write_batch(filter(), vec![record(4, 100_000), record(5, 100_004)])
        .await
        .unwrap();
    let q = RecordQuery {
        until: Some(TimeBound::At(100_001)),
        ..all()
    };
    assert_eq!(
        sequences(&store.query_records(q).await.unwrap()),
        vec![4, 3, 2, 1]
    );
}

/// Retention can delete the block with the highest id; its id must not be handed out again
/// below the compaction mark, or new small blocks would count as final.
#[tokio::test]
async fn compaction_continues_after_retention_deletes_the_newest_blocks() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).await;
    let big: Vec<AccessRecord> = (1..=COMPACT_BELOW as u64)
        .map(|i| record(i, 1000))
        .collect();
    store.write_batch(filter(), big).await.unwrap();
    assert_eq!(
        store.compact(crate::time::now_ms() + 1000).await.unwrap(),
        0
    );
    assert_eq!(store.prune(2000).await.unwrap(), COMPACT_BELOW as usize);
    let now = crate::time::now_ms();
    store
        .write_batch(filter(), vec![record(100_001, now)])
        .await
        .unwrap();
    store
        .write_batch(filter(), vec![record(100_002, now)])
        .await
        .unwrap();
    assert_eq!(block_sizes(&store).await, vec![1, 1]);
    assert_eq!(
        store.compact(crate::time::now_ms() + 1000).await.unwrap(),
        1,
        "two settled small neighbours should merge"
    );
}

/// Randomised: scans equal a sort by (time, write order) in both directions, over random
/// ranges (including unbounded ones), before and after compaction.
#[tokio::test]
async fn scans_match_a_sorted_model_in_both_orders_before_and_after_compaction() {
    let mut seed: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut rnd = move |n: u64| {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (seed >> 33) % n
    };
    for round in 0..3 {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path()).await;
        let mut model: Vec<(i64, u64)> = Vec::new();
        let mut seq = 0u64;
        for _ in 0..(20 + rnd(30)) {
            let n = if rnd(10) == 0 { 8200 } else { 1 + rnd(20) };
            let mut batch = Vec::new();
            for _ in 0..n {
                seq += 1;
                let t = 1 + (rnd(40) as i64) * 60_000 + rnd(3) as i64;
                model.push((t, seq));
                let mut r = record(seq, t);
                r.status = if rnd(3) == 0 { 404 } else { 200 };
                batch.push(r);
            }
            store.write_batch(filter(), batch).await.unwrap();
        }
        for phase in 0..2 {
            if phase == 1 {
                store.compact(crate::time::now_ms() + 1000).await.unwrap();
            }
            for _ in 0..8 {
                let since = if rnd(4) == 0 {
                    i64::MIN
                } else {
                    rnd(42 * 60_000) as i64
                };
                let until = if rnd(4) == 0 {
                    i64::MAX
                } else {
                    since.max(0) + rnd(20 * 60_000) as i64
                };
                let mut want: Vec<(i64, u64)> = model
                    .iter()
                    .copied()
                    .filter(|(t, _)| *t >= since && *t < until)
                    .collect();
                want.sort();
                let want_old: Vec<u64> = want.iter().map(|x| x.1).collect();
                let want_new: Vec<u64> = want_old.iter().rev().copied().collect();
                let q = RecordQuery {
                    since: Some(TimeBound::At(since)),
                    until: Some(TimeBound::At(until)),
                    limit: 1_000_000,
                    ..Default::default()
                };
                let f = RecordFilter::new(&q, 0);
                for order in [Order::OldestFirst, Order::NewestFirst] {
                    let f = f.clone();
                    let got = store
                        .read(move |conn| {
                            let mut out = Vec::new();
                            scan_matching(conn, &f, order, |_, r| {
                                out.push(r.sequence);
                                ControlFlow::Continue(())
                            })?;
                            Ok(out)
                        })
                        .await
                        .unwrap();
                    let want = if order == Order::OldestFirst {
                        &want_old
                    } else {
                        &want_new
                    };
                    assert!(
                        got == *want,
                        "round {round} phase {phase} {order:?} {since}..{until}: got {} want {}",
                        got.len(),
                        want.len()
                    );
                }
            }
        }
    }
}

#[tokio::test]
async fn pages_follow_each_other_without_gaps_or_repeats() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).await;
    // Equal times within and across blocks, so pages end in the middle of a tie.
    let mut seq = 0u64;
    for batch in 0..6i64 {
        let records: Vec<AccessRecord> = (0..7i64)
            .map(|i| {
                seq += 1;
                let mut r = record(seq, 1000 + (batch + i) / 3);
                r.status = if seq.is_multiple_of(3) { 404 } else { 200 };
                r
            })
            .collect();
        store.write_batch(filter(), records).await.unwrap();
    }
    for (status, page_size) in [(None, 4), (None, 1), (Some(StatusFilter::Code(404)), 3)] {
        let query = |cursor| RecordQuery {
            status,
            limit: page_size,
            cursor,
            ..all()
        };
        let whole = sequences(
            &store
                .query_records(RecordQuery {
                    limit: 1000,
                    ..query(None)
                })
                .await
                .unwrap(),
        );
        let mut paged = Vec::new();
        let mut cursor = None;
        for pages in 1.. {
            assert!(pages <= whole.len() + 1, "paging does not end: {paged:?}");
            let (page, next) = store.query_page(query(cursor)).await.unwrap();
            assert!(page.len() <= page_size);
            paged.extend(sequences(&page));
            match next {
                Some(c) => cursor = Some(c.to_string().parse().unwrap()),
                None => break,
            }
        }
        assert_eq!(paged, whole, "status {status:?}, pages of {page_size}");
        // Merging blocks keeps the order pages rely on.
        store.compact(crate::time::now_ms() + 1000).await.unwrap();
    }
}
