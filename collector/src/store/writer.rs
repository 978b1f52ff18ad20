//! The store's single writer thread: takes batches from the queue, commits a group of them in one
//! transaction (blocks, sequences, summaries and their chain links together), and answers each
//! batch only after the commit. Every other write (compaction, retention) runs on this thread too,
//! so no two writers ever contend for the database.

use super::block::{BLOCK_RECORDS, CODEC_PROTOBUF_LZ4, Entry};
use super::sequences::{FilterKey, SequenceLog};
use super::*;
use crate::error::Error;
use crate::metrics::Metrics;
use rusqlite::{Connection, OptionalExtension, params};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::{mpsc, oneshot};
use warden_proto::pb::{AccessRecord, FilterIdentity, RecordSummary};

/// Widest time range one block covers. A record far from the others (a clock gone wrong, a
/// filter replaying an old buffer) gets a block of its own instead of widening its group's, so
/// time-bounded scans stay narrow.
pub(super) const MAX_BLOCK_SPAN_MS: i64 = 15 * 60 * 1000;

pub(super) type QueuedBatch = (
    FilterIdentity,
    Arc<Vec<AccessRecord>>,
    Vec<RecordSummary>,
    oneshot::Sender<Result<BatchOutcome, Error>>,
);

/// The writer thread's state: the write connection, the stored sequences, the widest block.
pub(super) struct Writer {
    pub(super) conn: Connection,
    pub(super) sequences: SequenceLog,
    pub(super) max_block_span_ms: i64,
    max_group_records: usize,
    /// Every block with an id at or below this is final (compaction starts after it).
    pub(super) compacted_through: i64,
}

impl Writer {
    pub(super) fn load(conn: Connection, max_group_records: usize) -> Result<Self, Error> {
        let sequences = SequenceLog::load(&conn)?;
        let meta = |key: &str| -> Result<i64, Error> {
            Ok(conn
                .query_row("SELECT value FROM store_meta WHERE key = ?1", [key], |r| {
                    r.get(0)
                })
                .optional()?
                .unwrap_or(0))
        };
        let max_block_span_ms = meta("max_block_span_ms")?;
        let compacted_through = meta("compacted_through")?;
        Ok(Writer {
            conn,
            sequences,
            max_block_span_ms,
            max_group_records,
            compacted_through,
        })
    }

    pub(super) fn run(mut self, mut rx: mpsc::Receiver<Job>, metrics: &Metrics) {
        while let Some(first) = rx.blocking_recv() {
            let mut batches = Vec::new();
            let mut compaction = None;
            let mut closing = false;
            let mut queued_records = 0usize;
            let mut next = Some(first);
            // Group commit: take everything already queued (up to a bound) into one transaction.
            while let Some(job) = next.take() {
                match job {
                    Job::Batch {
                        filter,
                        records,
                        summaries,
                        reply,
                    } => {
                        queued_records += records.len() + summaries.len();
                        batches.push((filter, records, summaries, reply));
                    }
                    Job::Prune { before_ms, reply } => {
                        let _ = reply.send(self.prune(before_ms));
                    }
                    Job::ForgetIdle { before_ms, reply } => {
                        let _ = reply.send(self.forget_idle(before_ms));
                    }
                    // Runs after this group's commit, never ahead of queued records.
                    Job::Compact {
                        written_before_ms,
                        reply,
                    } => compaction = Some((written_before_ms, reply)),
                    Job::Close => {
                        closing = true;
                        break;
                    }
                }
                if queued_records < self.max_group_records {
                    next = rx.try_recv().ok();
                }
            }
            if !batches.is_empty() {
                let started = Instant::now();
                let result = self.commit_group(&batches);
                metrics.observe_commit(started.elapsed().as_secs_f64());
                match result {
                    Ok(outcomes) => {
                        for ((_, _, _, reply), outcome) in batches.into_iter().zip(outcomes) {
                            let _ = reply.send(Ok(outcome));
                        }
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "record store commit failed");
                        for (_, _, _, reply) in batches {
                            let _ = reply.send(Err(Error::Storage(e.to_string())));
                        }
                    }
                }
            }
            if let Some((written_before_ms, reply)) = compaction {
                let _ = reply.send(self.compact(written_before_ms, || !rx.is_empty()));
            }
            if closing {
                break;
            }
        }
        tracing::debug!("record store writer stopped");
    }

    /// Stores a group in one transaction; on failure the sequence log is as it was before.
    fn commit_group(&mut self, batches: &[QueuedBatch]) -> Result<Vec<BatchOutcome>, Error> {
        let keys: Vec<FilterKey> = batches
            .iter()
            .map(|(f, _, _, _)| FilterKey::of(f))
            .collect();
        let checkpoint = self.sequences.checkpoint(keys.iter());
        let span_before = self.max_block_span_ms;
        let result = self.write_group(batches, &keys);
        if result.is_err() {
            self.sequences.restore(checkpoint);
            self.max_block_span_ms = span_before;
        }
        result
    }

    fn write_group(
        &mut self,
        batches: &[QueuedBatch],
        keys: &[FilterKey],
    ) -> Result<Vec<BatchOutcome>, Error> {
        let mut group = Gathered::default();
        let mut outcomes = Vec::with_capacity(batches.len());
        for ((filter, records, _, _), key) in batches.iter().zip(keys) {
            let index = group.filter(filter);
            let sequences: Vec<u64> = records.iter().map(|r| r.sequence).collect();
            let fresh = self.sequences.accept(key, &sequences);
            let mut outcome = BatchOutcome::default();
            for (record, is_new) in records.iter().zip(fresh) {
                if is_new {
                    group.entries.push((index, record));
                    outcome.accepted += 1;
                } else {
                    outcome.duplicates += 1;
                }
            }
            outcomes.push(outcome);
        }
        let received_ms = crate::time::now_ms();
        let tx = self.conn.transaction()?;
        for block in group.encode() {
            insert_block(&tx, None, &block, received_ms, &mut self.max_block_span_ms)?;
        }
        for ((filter, _, batch_summaries, _), outcome) in batches.iter().zip(&mut outcomes) {
            outcome.summaries = summaries::insert(&tx, filter, batch_summaries, received_ms)?;
        }
        let touched: std::collections::HashSet<&FilterKey> = keys.iter().collect();
        self.sequences
            .persist(&tx, touched.into_iter(), received_ms)?;
        tx.commit()?;
        Ok(outcomes)
    }
}

/// Records gathered for one or more blocks, with each filter identity listed once.
#[derive(Default)]
pub(super) struct Gathered<'a> {
    filters: Vec<&'a FilterIdentity>,
    index: HashMap<&'a FilterIdentity, u32>,
    pub(super) entries: Vec<Entry<'a>>,
}

impl<'a> Gathered<'a> {
    /// The index of `f` (all of it, the filter version too) in the identity list, adding it if
    /// new.
    pub(super) fn filter(&mut self, f: &'a FilterIdentity) -> u32 {
        let filters = &mut self.filters;
        *self.index.entry(f).or_insert_with(|| {
            filters.push(f);
            u32::try_from(filters.len() - 1).unwrap_or(u32::MAX)
        })
    }

    /// Sorts the records by time (stable: equal times keep their order) and encodes them as
    /// blocks of at most [`BLOCK_RECORDS`] records spanning at most [`MAX_BLOCK_SPAN_MS`].
    pub(super) fn encode(&mut self) -> Vec<block::EncodedBlock> {
        self.entries.sort_by_key(|(_, r)| r.time_ms);
        let mut blocks = Vec::new();
        let mut rest = self.entries.as_slice();
        while let Some((_, first)) = rest.first() {
            let limit = first.time_ms.saturating_add(MAX_BLOCK_SPAN_MS);
            let len = rest
                .iter()
                .take(BLOCK_RECORDS)
                .take_while(|(_, r)| r.time_ms <= limit)
                .count();
            let (chunk, tail) = rest.split_at(len);
            blocks.push(block::encode(&self.filters, chunk));
            rest = tail;
        }
        blocks
    }
}

/// Inserts a block (under `id`, or a new one) and keeps the widest block span.
pub(super) fn insert_block(
    conn: &Connection,
    id: Option<i64>,
    b: &block::EncodedBlock,
    received_ms: i64,
    max_span_ms: &mut i64,
) -> Result<(), Error> {
    let mut insert = conn.prepare_cached(
        "INSERT INTO record_blocks (id, min_time_ms, max_time_ms, records, received_ms, summary, codec, body)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    )?;
    insert.execute(params![
        id,
        b.min_time_ms,
        b.max_time_ms,
        b.records,
        received_ms,
        b.summary,
        CODEC_PROTOBUF_LZ4,
        b.body
    ])?;
    note_span(conn, max_span_ms, b)
}

/// Keeps the widest block span in `store_meta` (scans use it to bound their index ranges).
pub(super) fn note_span(
    conn: &Connection,
    max_span_ms: &mut i64,
    b: &block::EncodedBlock,
) -> Result<(), Error> {
    let span = b.max_time_ms.saturating_sub(b.min_time_ms);
    if span > *max_span_ms {
        conn.execute(
            "INSERT INTO store_meta (key, value) VALUES ('max_block_span_ms', ?1)
             ON CONFLICT DO UPDATE SET value = excluded.value",
            [span],
        )?;
        // Callers restore the old value if their transaction does not commit.
        *max_span_ms = span;
    }
    Ok(())
}
