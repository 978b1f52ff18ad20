//! Tests of the module as a whole.

#![allow(unused_imports)]
use super::{history::*, reconcile::*, runtime::*, source::*};
use crate::config::Config;
use crate::decisions::{BanRequest, Decision, DecisionAction, Decisions, Origin};
use crate::detection::alerts::{Alert, Alerter};
use crate::error::Error;
use crate::metrics::Metrics;
use crate::store::sequences::{FilterKey, SequenceLog};
use crate::target::{Target, ip_key};
use crate::time::{Ttl, now_ms, rfc3339};
use rusqlite::{Connection, params};
use serde::Serialize;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::mpsc;
use tokio::sync::mpsc::error::SendTimeoutError;
use warden_proto::pb::{AccessRecord, FilterIdentity};
use warden_rules::{Action, Engine, Rule, RuleDecision, RuleKind, RuleSet, RulesErrors};

use super::*;
use crate::config::Synchronous;
use crate::db::open_connection;

#[test]
fn summaries_read_as_one_line() {
    let rules = RuleSet::from_toml_str(
            "[[rules]]\nname = \"b\"\nkind = \"auth_failures\"\nthreshold = 10\nwindow = \"1m\"\naction = \"deny\"\nban_ttl = \"15m\"\n",
            "r.toml",
        )
        .unwrap();
    assert_eq!(
        summarize(&rules.rules()[0]),
        "auth failures >= 10 in 1m -> deny for 15m"
    );
}

#[test]
fn a_re_cut_retry_is_evaluated_once_record_by_record() {
    // The hole found in review: the engine deduplicated by a batch's first and last
    // sequence, so a retry the filter re-cut (1..=8 then 5..=12) was evaluated again.
    let f = FilterIdentity {
        node_id: "n".into(),
        ..Default::default()
    };
    let batch = |seqs: std::ops::RangeInclusive<u64>| -> Vec<AccessRecord> {
        seqs.map(|sequence| AccessRecord {
            sequence,
            ..Default::default()
        })
        .collect()
    };
    let mut evaluated = Evaluated {
        log: SequenceLog::default(),
        heard_ms: HashMap::new(),
    };
    assert_eq!(evaluated.fresh(&f, &batch(1..=8)), vec![true; 8]);
    assert_eq!(evaluated.fresh(&f, &batch(1..=8)), vec![false; 8]);
    let recut = evaluated.fresh(&f, &batch(5..=12));
    assert_eq!(recut, [[false; 4], [true; 4]].concat());
    let other = FilterIdentity {
        worker: 1,
        ..f.clone()
    };
    assert_eq!(evaluated.fresh(&other, &batch(1..=2)), vec![true; 2]);
}

#[test]
fn inline_and_file_rules_merge_and_duplicates_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
            dir.path().join("r.toml"),
            "[[rules]]\nname = \"a\"\nkind = \"distinct_paths\"\nthreshold = 5\nwindow = \"1m\"\naction = \"deny\"\n",
        )
        .unwrap();
    let text = "rules_file = \"r.toml\"\n[[rules]]\nname = \"b\"\nkind = \"distinct_paths\"\nthreshold = 5\nwindow = \"1m\"\naction = \"alert\"\n";
    std::fs::write(dir.path().join("warden.toml"), text).unwrap();
    let config = Config::parse(text, &dir.path().join("warden.toml")).unwrap();
    let rules = RulesSource::from_config(&config).load().unwrap();
    assert_eq!(rules.rules().len(), 2);
    let text = text.replace("name = \"b\"", "name = \"a\"");
    let config = Config::parse(&text, &dir.path().join("warden.toml")).unwrap();
    let e = RulesSource::from_config(&config).load().unwrap_err();
    assert!(e.to_string().contains("duplicate"), "{e}");
}

// Holding the engine's lock across awaits is how this test stalls the engine thread.
#[allow(clippy::await_holding_lock)]
#[tokio::test(flavor = "multi_thread")]
async fn a_busy_engine_slows_ingest_and_only_a_stalled_one_skips() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("warden.db");
    let metrics = Arc::new(Metrics::default());
    let decisions = Decisions::open(
        open_connection(&db, Synchronous::Off).unwrap(),
        100,
        100,
        Arc::clone(&metrics),
    )
    .unwrap();
    let rules = RuleSet::from_toml_str(
            "[[rules]]\nname = \"a\"\nkind = \"auth_failures\"\nthreshold = 10\nwindow = \"1m\"\naction = \"deny\"\n",
            "r.toml",
        )
        .unwrap();
    let detection = Detection::start(
        RulesSource::default(),
        rules,
        open_connection(&db, Synchronous::Off).unwrap(),
        decisions,
        Arc::clone(&metrics),
        Alerter::disabled(Arc::clone(&metrics)),
        SequenceLog::default(),
    )
    .unwrap();
    let filter = FilterIdentity::default();
    let mut sequence = 0u64;
    let mut next_batch = || {
        sequence += 1;
        Arc::new(vec![AccessRecord {
            sequence,
            time_ms: 1,
            ..Default::default()
        }])
    };
    let queue = detection.tx.lock().unwrap().clone().unwrap();

    // Hold the engine: it takes one batch and waits; then the queue fills up.
    let engine = detection.shared.engine.lock().unwrap();
    let mut sent = 0u64;
    while queue.capacity() > 0 {
        detection.submit(&filter, &next_batch()).await;
        sent += 1;
    }
    // One more waits for room, and gets it once the engine moves again.
    let waiting = next_batch();
    tokio::join!(detection.submit(&filter, &waiting), async {
        tokio::time::sleep(Duration::from_millis(200)).await;
        drop(engine);
    });
    sent += 1;
    let evaluated = || metrics.rules_records_evaluated.load(Relaxed);
    while evaluated() < sent {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(metrics.rules_records_skipped.load(Relaxed), 0);

    // An engine stalled past the patience: the batch is skipped (and counted), not held.
    // At most the queue's worth and the one the engine holds get in; the next one waits out
    // the patience and is skipped.
    let engine = detection.shared.engine.lock().unwrap();
    let mut attempts = 0;
    while metrics.rules_records_skipped.load(Relaxed) == 0 {
        attempts += 1;
        assert!(attempts <= QUEUE_BATCHES + 2, "nothing was skipped");
        detection.submit(&filter, &next_batch()).await;
    }
    assert_eq!(metrics.rules_records_skipped.load(Relaxed), 1);
    drop(engine);
    drop(queue);
    detection.close().await;
}
