//! The record store: one SQLite database in WAL mode holding records in compressed blocks.
//!
//! Writes go through a single dedicated thread that owns the write connection and does group
//! commit: it drains every queued batch into one transaction and answers each caller only after
//! that transaction committed, so an acknowledgement always means "durable". A group becomes one
//! or more [`block`]s; retries are recognised by [`sequences`]; reads run [`scan`]s on their own
//! connections (WAL lets them run beside the writer).

pub mod block;
pub mod query;
pub mod scan;
pub mod sequences;
pub mod summaries;

use crate::config::Synchronous;
use crate::db::{ReadPool, open_connection};
use crate::error::Error;
use crate::metrics::Metrics;
use crate::store::query::{Cursor, RecordFilter, RecordQuery, StoredRecord};
use block::{BLOCK_RECORDS, CODEC_PROTOBUF_LZ4, Entry};
use rusqlite::{Connection, OptionalExtension, params};
use scan::{Order, ScanRange};
use sequences::{FilterKey, SequenceLog};
use std::collections::HashMap;
use std::ops::ControlFlow;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Instant;
use summaries::{StoredSummary, SummaryOutcome, SummaryQuery};
use tokio::sync::{mpsc, oneshot};
use warden_proto::pb::{AccessRecord, FilterIdentity, RecordSummary};

/// The record store's database inside the data directory (see [`crate::db`] for why it is not
/// `warden.db`).
pub const RECORDS_DB_FILE: &str = "records.db";

/// Queued jobs before callers wait (backpressure towards the filters).
const QUEUE_DEPTH: usize = 1024;

/// Blocks deleted per retention step, so ingest is never blocked for long.
const PRUNE_BLOCKS: i64 = 64;

/// Widest time range one block covers. A record far from the others (a clock gone wrong, a
/// filter replaying an old buffer) gets a block of its own instead of widening its group's, so
/// time-bounded scans stay narrow.
const MAX_BLOCK_SPAN_MS: i64 = 15 * 60 * 1000;

/// Blocks holding fewer records than this are merged with their neighbours (in write order) once
/// settled. At low traffic every group commit writes a small block; merging keeps the number of
/// blocks a query must consider proportional to records, not to commits.
const COMPACT_BELOW: i64 = (BLOCK_RECORDS / 2) as i64;
/// A block is left as written for this long, so merges never touch the blocks fresh queries read.
const COMPACT_AFTER_MS: i64 = 10_000;
/// Blocks looked at per compaction step.
const COMPACT_SCAN: i64 = 1024;
/// Merges per compaction request, at most; the writer also stops as soon as a batch is queued.
const COMPACT_STEPS: usize = 256;
/// How often the background task asks for compaction.
const COMPACT_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

pub(crate) const SCHEMA: &str = "
-- AUTOINCREMENT: ids are never reused after retention deletes the newest blocks, so the
-- compaction mark (every block at or below it is final) stays true.
CREATE TABLE IF NOT EXISTS record_blocks (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    min_time_ms INTEGER NOT NULL,
    max_time_ms INTEGER NOT NULL,
    records INTEGER NOT NULL,
    received_ms INTEGER NOT NULL,
    -- Read for every block a query considers, so it comes before the large body.
    summary BLOB NOT NULL,
    codec INTEGER NOT NULL,
    body BLOB NOT NULL
);
-- Covering indexes for the two scan orders (see store/scan.rs).
CREATE INDEX IF NOT EXISTS record_blocks_by_min ON record_blocks(min_time_ms, max_time_ms);
CREATE INDEX IF NOT EXISTS record_blocks_by_max ON record_blocks(max_time_ms, min_time_ms);
CREATE TABLE IF NOT EXISTS filter_sequences (
    filter_node TEXT NOT NULL,
    filter_worker INTEGER NOT NULL,
    filter_instance TEXT NOT NULL,
    ranges BLOB NOT NULL,
    updated_ms INTEGER NOT NULL,
    PRIMARY KEY (filter_node, filter_worker, filter_instance)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS store_meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID;
";

/// The decompressed body of every stored block of the record store `path` (a `records.db`),
/// protobuf-encoded, opened read-only: for checks that must search what is stored rather than
/// the compressed bytes, where a string can hide inside an LZ4 back-reference (the "no secret in
/// the database" tests).
pub fn decoded_block_bodies(path: &Path) -> Result<Vec<Vec<u8>>, Error> {
    let conn = crate::db::open_read_only(path)?;
    let mut stmt = conn.prepare("SELECT codec, body FROM record_blocks ORDER BY id")?;
    let mut rows = stmt.query([])?;
    let mut bodies = Vec::new();
    while let Some(row) = rows.next()? {
        let codec: i64 = row.get(0)?;
        let body: Vec<u8> = row.get(1)?;
        bodies.push(prost::Message::encode_to_vec(&block::decode_body(
            codec, &body,
        )?));
    }
    Ok(bodies)
}

/// The outcome of storing one batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct BatchOutcome {
    /// Records newly stored.
    pub accepted: u32,
    /// Records already present (same filter identity and sequence).
    pub duplicates: u32,
    /// What became of the batch's record summaries.
    pub summaries: SummaryOutcome,
}

enum Job {
    Batch {
        filter: FilterIdentity,
        records: Arc<Vec<AccessRecord>>,
        summaries: Vec<RecordSummary>,
        reply: oneshot::Sender<Result<BatchOutcome, Error>>,
    },
    Prune {
        before_ms: i64,
        reply: oneshot::Sender<Result<usize, Error>>,
    },
    ForgetIdle {
        before_ms: i64,
        reply: oneshot::Sender<Result<usize, Error>>,
    },
    Compact {
        written_before_ms: i64,
        reply: oneshot::Sender<Result<usize, Error>>,
    },
    Close,
}

/// Handle to the record store. Cheap to share behind an `Arc`.
pub struct Store {
    jobs: mpsc::Sender<Job>,
    readers: ReadPool,
    writer: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl Store {
    /// Opens (creating if needed) `data_dir/warden.db` and starts the writer thread.
    pub fn open(
        data_dir: &Path,
        sync: Synchronous,
        max_group_records: usize,
        metrics: Arc<Metrics>,
    ) -> Result<Store, Error> {
        std::fs::create_dir_all(data_dir).map_err(|e| {
            Error::Storage(format!(
                "cannot create data directory {}: {e}",
                data_dir.display()
            ))
        })?;
        let path = data_dir.join(RECORDS_DB_FILE);
        let conn = open_connection(&path, sync)?;
        conn.execute_batch(SCHEMA)?;
        conn.execute_batch(summaries::SCHEMA)?;
        conn.execute_batch(crate::trail::BLOCK_CHAIN_SCHEMA)?;
        conn.execute_batch(crate::trail::SUMMARY_CHAIN_SCHEMA)?;
        let writer_state = Writer::load(conn, max_group_records)?;
        let (tx, rx) = mpsc::channel(QUEUE_DEPTH);
        let writer = std::thread::Builder::new()
            .name("warden-store-writer".into())
            .spawn(move || writer_state.run(rx, &metrics))
            .map_err(|e| Error::Storage(format!("cannot start the writer thread: {e}")))?;
        Ok(Store {
            jobs: tx,
            readers: ReadPool::new(path),
            writer: Mutex::new(Some(writer)),
        })
    }

    /// The record store's database file.
    pub fn path(&self) -> &Path {
        self.readers.path()
    }

    /// Stores a validated batch; resolves only after the transaction holding it committed.
    /// The records are shared (`Arc`) so the rules engine can read the same batch while it is
    /// being written.
    pub async fn write_batch(
        &self,
        filter: FilterIdentity,
        records: impl Into<Arc<Vec<AccessRecord>>>,
    ) -> Result<BatchOutcome, Error> {
        self.write_export(filter, records, Vec::new()).await
    }

    /// Stores a validated batch with its record summaries, in one transaction.
    pub async fn write_export(
        &self,
        filter: FilterIdentity,
        records: impl Into<Arc<Vec<AccessRecord>>>,
        summaries: Vec<RecordSummary>,
    ) -> Result<BatchOutcome, Error> {
        let records = records.into();
        self.ask(|reply| Job::Batch {
            filter,
            records,
            summaries,
            reply,
        })
        .await
    }

    /// Record summaries matching `q`, newest minute first.
    pub async fn query_summaries(&self, q: SummaryQuery) -> Result<Vec<StoredSummary>, Error> {
        let now_ms = crate::time::now_ms();
        self.read(move |conn| summaries::query(conn, &q, now_ms))
            .await
    }

    /// Queues the job `make` builds around a reply channel and waits for the writer's answer.
    async fn ask<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<T, Error>>) -> Job,
    ) -> Result<T, Error> {
        let (reply, rx) = oneshot::channel();
        self.jobs
            .send(make(reply))
            .await
            .map_err(|_| Error::ShuttingDown)?;
        rx.await.map_err(|_| Error::ShuttingDown)?
    }

    /// Deletes blocks whose newest record is older than `before_ms`, a slice at a time so
    /// ingest is never blocked for long; returns the number of records deleted (0 when done).
    pub async fn prune(&self, before_ms: i64) -> Result<usize, Error> {
        self.ask(|reply| Job::Prune { before_ms, reply }).await
    }

    /// Forgets the deduplication state of filter identities that sent nothing since
    /// `before_ms`; returns how many were forgotten.
    pub async fn forget_idle_filters(&self, before_ms: i64) -> Result<usize, Error> {
        self.ask(|reply| Job::ForgetIdle { before_ms, reply }).await
    }

    /// Merges small blocks (see [`COMPACT_BELOW`]) written before `written_before_ms` until none
    /// are left or a batch is waiting; returns the number of merges.
    pub async fn compact(&self, written_before_ms: i64) -> Result<usize, Error> {
        self.ask(|reply| Job::Compact {
            written_before_ms,
            reply,
        })
        .await
    }

    /// Runs `f` on a read connection to the record store.
    pub async fn read<T, F>(&self, f: F) -> Result<T, Error>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, Error> + Send + 'static,
    {
        self.readers.read(f).await
    }

    /// Records matching `q`, newest first.
    pub async fn query_records(&self, q: RecordQuery) -> Result<Vec<StoredRecord>, Error> {
        Ok(self.query_page(q).await?.0)
    }

    /// A page of records matching `q`, newest first, and the cursor of the next page when this
    /// one is full.
    pub async fn query_page(
        &self,
        q: RecordQuery,
    ) -> Result<(Vec<StoredRecord>, Option<Cursor>), Error> {
        let filter = RecordFilter::new(&q, crate::time::now_ms());
        let limit = q.limit;
        let cursor = q.cursor;
        self.read(move |conn| {
            let mut out: Vec<StoredRecord> = Vec::new();
            if limit == 0 {
                return Ok((out, None));
            }
            // The records at the cursor's time that earlier pages returned come first.
            let mut skip = cursor.map_or(0, |c| c.skip);
            scan_matching(conn, &filter, Order::NewestFirst, |f, r| {
                if skip > 0 && cursor.is_some_and(|c| c.time_ms == r.time_ms) {
                    skip -= 1;
                    return ControlFlow::Continue(());
                }
                out.push(StoredRecord::new(f, r));
                if out.len() >= limit {
                    ControlFlow::Break(())
                } else {
                    ControlFlow::Continue(())
                }
            })?;
            let next = (out.len() >= limit)
                .then(|| out.last().map(|last| last.time_ms))
                .flatten()
                .map(|time_ms| {
                    let on_page = out.iter().filter(|r| r.time_ms == time_ms).count() as u64;
                    let before = cursor
                        .filter(|c| c.time_ms == time_ms)
                        .map_or(0, |c| c.skip);
                    Cursor {
                        time_ms,
                        skip: before + on_page,
                    }
                });
            Ok((out, next))
        })
        .await
    }

    /// Finishes the queued writes and stops the writer thread. Later writes fail with
    /// [`Error::ShuttingDown`].
    pub async fn close(&self) {
        let _ = self.jobs.send(Job::Close).await;
        let handle = self.writer.lock().ok().and_then(|mut h| h.take());
        if let Some(handle) = handle {
            let _ = tokio::task::spawn_blocking(move || handle.join()).await;
        }
    }
}

/// Calls `visit` with every stored record `filter` matches, in `order`, until it breaks. Runs in
/// one read transaction, so the scan sees one consistent state of the store.
pub fn scan_matching(
    conn: &Connection,
    filter: &RecordFilter,
    order: Order,
    mut visit: impl FnMut(&FilterIdentity, &AccessRecord) -> ControlFlow<()>,
) -> Result<(), Error> {
    let snapshot = conn.unchecked_transaction()?;
    let may_match = |s: &block::BlockSummary| filter.may_match(s);
    let range = ScanRange {
        since_ms: filter.since_ms,
        until_ms: filter.until_ms,
        may_match: &may_match,
    };
    scan::scan(&snapshot, &range, order, |f, r| {
        if filter.matches(r) {
            visit(f, r)
        } else {
            ControlFlow::Continue(())
        }
    })?;
    snapshot.finish()?;
    Ok(())
}

type QueuedBatch = (
    FilterIdentity,
    Arc<Vec<AccessRecord>>,
    Vec<RecordSummary>,
    oneshot::Sender<Result<BatchOutcome, Error>>,
);

/// The writer thread's state: the write connection, the stored sequences, the widest block.
struct Writer {
    conn: Connection,
    sequences: SequenceLog,
    max_block_span_ms: i64,
    max_group_records: usize,
    /// Every block with an id at or below this is final (compaction starts after it).
    compacted_through: i64,
}

impl Writer {
    fn load(conn: Connection, max_group_records: usize) -> Result<Self, Error> {
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

    fn run(mut self, mut rx: mpsc::Receiver<Job>, metrics: &Metrics) {
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

    /// Merges runs of small blocks written before `written_before_ms` until none is left,
    /// [`COMPACT_STEPS`] merges were done, or `interrupted` says a batch is waiting.
    fn compact(
        &mut self,
        written_before_ms: i64,
        interrupted: impl Fn() -> bool,
    ) -> Result<usize, Error> {
        let mut merges = 0;
        while merges < COMPACT_STEPS && !interrupted() {
            let Some(run) = self.next_compaction_run(written_before_ms)? else {
                break;
            };
            let first = self.merge_blocks(&run)?;
            merges += 1;
            tracing::debug!(
                blocks = run.len(),
                into = first,
                "merged small record blocks"
            );
        }
        Ok(merges)
    }

    /// The next run of consecutive small blocks to merge (at least two, at most
    /// [`BLOCK_RECORDS`] records), moving the final-block mark past blocks that will stay.
    fn next_compaction_run(&mut self, settled_ms: i64) -> Result<Option<Vec<i64>>, Error> {
        loop {
            let blocks: Vec<CompactionCandidate> = {
                let mut stmt = self.conn.prepare_cached(
                    "SELECT id, records, received_ms, min_time_ms, max_time_ms FROM record_blocks
                     WHERE id > ?1 ORDER BY id LIMIT ?2",
                )?;
                stmt.query_map(params![self.compacted_through, COMPACT_SCAN], |r| {
                    Ok(CompactionCandidate {
                        id: r.get(0)?,
                        records: r.get(1)?,
                        received_ms: r.get(2)?,
                        min_time_ms: r.get(3)?,
                        max_time_ms: r.get(4)?,
                    })
                })?
                .collect::<Result<_, _>>()?
            };
            let scanned_all = blocks.len() < usize::try_from(COMPACT_SCAN).unwrap_or(usize::MAX);
            let mut run: Vec<&CompactionCandidate> = Vec::new();
            let mut final_through = self.compacted_through;
            for b in &blocks {
                if b.received_ms >= settled_ms {
                    break;
                }
                if b.records >= COMPACT_BELOW {
                    if run.len() >= 2 {
                        break;
                    }
                    // A large block, and a lone small one before it: both stay as they are.
                    final_through = b.id;
                    run.clear();
                    continue;
                }
                if run.is_empty() || fits(&run, b) {
                    run.push(b);
                    continue;
                }
                if run.len() >= 2 {
                    break;
                }
                // A lone small block that cannot take its neighbour in: it stays.
                final_through = run.first().map_or(final_through, |r| r.id);
                run = vec![b];
            }
            self.mark_final(final_through)?;
            if run.len() >= 2 {
                return Ok(Some(run.iter().map(|b| b.id).collect()));
            }
            // Unsettled blocks, or the end of the table: nothing more to do now.
            if scanned_all || blocks.iter().any(|b| b.received_ms >= settled_ms) {
                return Ok(None);
            }
        }
    }

    /// Moves the final-block mark and seals the blocks it passed into the hash chain
    /// (`crate::trail`): a final block is never rewritten by compaction again.
    fn mark_final(&mut self, through: i64) -> Result<(), Error> {
        if through > self.compacted_through {
            let tx = self.conn.transaction()?;
            tx.execute(
                "INSERT INTO store_meta (key, value) VALUES ('compacted_through', ?1)
                 ON CONFLICT DO UPDATE SET value = excluded.value",
                [through],
            )?;
            crate::trail::seal_blocks(&tx, through)?;
            tx.commit()?;
            self.compacted_through = through;
        }
        Ok(())
    }

    /// Replaces the blocks `ids` (consecutive, in id order) by one block with the first id, in
    /// one transaction. Returns that id.
    fn merge_blocks(&mut self, ids: &[i64]) -> Result<i64, Error> {
        let span_before = self.max_block_span_ms;
        let merged = self.write_merged(ids);
        if merged.is_err() {
            // The transaction rolled back, and with it the span it may have raised.
            self.max_block_span_ms = span_before;
        }
        merged
    }

    fn write_merged(&mut self, ids: &[i64]) -> Result<i64, Error> {
        let first = ids.first().copied().unwrap_or_default();
        let tx = self.conn.transaction()?;
        let mut bodies = Vec::with_capacity(ids.len());
        let mut received_ms = i64::MAX;
        {
            let mut read = tx.prepare_cached(
                "SELECT codec, body, received_ms FROM record_blocks WHERE id = ?1",
            )?;
            for id in ids {
                let (codec, bytes, received): (i64, Vec<u8>, i64) =
                    read.query_row([id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
                bodies.push(block::decode_body(codec, &bytes)?);
                received_ms = received_ms.min(received);
            }
        }
        let mut merged = Gathered::default();
        for body in &bodies {
            for (i, record) in body.records.iter().enumerate() {
                let index = merged.filter(body.filter_of(i));
                merged.entries.push((index, record));
            }
        }
        {
            let mut delete = tx.prepare_cached("DELETE FROM record_blocks WHERE id = ?1")?;
            for id in ids {
                delete.execute([id])?;
            }
        }
        // The run holds at most BLOCK_RECORDS records: one block, under the run's first id.
        for (i, block) in merged.encode().iter().enumerate() {
            let id = (i == 0).then_some(first);
            insert_block(&tx, id, block, received_ms, &mut self.max_block_span_ms)?;
        }
        tx.commit()?;
        Ok(first)
    }

    /// Deletes up to [`PRUNE_BLOCKS`] blocks entirely older than `before_ms`.
    fn prune(&mut self, before_ms: i64) -> Result<usize, Error> {
        let tx = self.conn.transaction()?;
        let gone: Vec<(i64, i64)> = {
            let mut stmt = tx.prepare_cached(
                "DELETE FROM record_blocks WHERE id IN
                    (SELECT id FROM record_blocks WHERE max_time_ms < ?1 ORDER BY max_time_ms LIMIT ?2)
                 RETURNING id, records",
            )?;
            stmt.query_map(params![before_ms, PRUNE_BLOCKS], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })?
            .collect::<Result<_, _>>()?
        };
        let ids: Vec<i64> = gone.iter().map(|(id, _)| *id).collect();
        // Retention's deletions are recorded in the chain, so `warden verify` tells them from
        // tampering.
        crate::trail::prune_block_links(&tx, &ids, crate::time::now_ms())?;
        summaries::prune(&tx, before_ms)?;
        tx.commit()?;
        let deleted: i64 = gone.iter().map(|(_, n)| n).sum();
        Ok(usize::try_from(deleted).unwrap_or(0))
    }

    /// Forgets the sequences of filters that have sent nothing since `before_ms`.
    fn forget_idle(&mut self, before_ms: i64) -> Result<usize, Error> {
        let tx = self.conn.transaction()?;
        let forgotten = self.sequences.forget_idle(&tx, before_ms);
        match forgotten.and_then(|n| tx.commit().map(|()| n).map_err(Error::from)) {
            Ok(n) => Ok(n),
            Err(e) => {
                // The in-memory log may have forgotten identities the database still has; reload.
                self.sequences = SequenceLog::load(&self.conn)?;
                Err(e)
            }
        }
    }
}

/// A block considered for merging.
struct CompactionCandidate {
    id: i64,
    records: i64,
    received_ms: i64,
    min_time_ms: i64,
    max_time_ms: i64,
}

/// Whether `next` can join `run` within the block bounds (records and time span).
fn fits(run: &[&CompactionCandidate], next: &CompactionCandidate) -> bool {
    let records: i64 = run.iter().map(|b| b.records).sum::<i64>() + next.records;
    let min = run
        .iter()
        .map(|b| b.min_time_ms)
        .fold(next.min_time_ms, i64::min);
    let max = run
        .iter()
        .map(|b| b.max_time_ms)
        .fold(next.max_time_ms, i64::max);
    records <= BLOCK_RECORDS as i64 && max.saturating_sub(min) <= MAX_BLOCK_SPAN_MS
}

/// Records gathered for one or more blocks, with each filter identity listed once.
#[derive(Default)]
struct Gathered<'a> {
    filters: Vec<&'a FilterIdentity>,
    index: HashMap<&'a FilterIdentity, u32>,
    entries: Vec<Entry<'a>>,
}

impl<'a> Gathered<'a> {
    /// The index of `f` (all of it, the filter version too) in the identity list, adding it if
    /// new.
    fn filter(&mut self, f: &'a FilterIdentity) -> u32 {
        let filters = &mut self.filters;
        *self.index.entry(f).or_insert_with(|| {
            filters.push(f);
            u32::try_from(filters.len() - 1).unwrap_or(u32::MAX)
        })
    }

    /// Sorts the records by time (stable: equal times keep their order) and encodes them as
    /// blocks of at most [`BLOCK_RECORDS`] records spanning at most [`MAX_BLOCK_SPAN_MS`].
    fn encode(&mut self) -> Vec<block::EncodedBlock> {
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
fn insert_block(
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
fn note_span(
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

/// Asks the writer to merge small blocks every few seconds.
pub async fn compaction_task(store: Arc<Store>, mut stop: tokio::sync::watch::Receiver<bool>) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(COMPACT_EVERY) => {}
            _ = stop.changed() => return,
        }
        let settled = crate::time::now_ms().saturating_sub(COMPACT_AFTER_MS);
        if let Err(e) = store.compact(settled).await {
            tracing::warn!(error = %e, "merging small record blocks failed");
        }
    }
}

/// Once an hour (and once at start): deletes records older than `retention` (never when it
/// is zero) and forgets the deduplication state of filter identities idle for `dedup_window`.
pub async fn retention_task(
    store: Arc<Store>,
    retention: std::time::Duration,
    dedup_window: std::time::Duration,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let millis = |d: std::time::Duration| i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
    loop {
        let now = crate::time::now_ms();
        match store
            .forget_idle_filters(now.saturating_sub(millis(dedup_window)))
            .await
        {
            Ok(0) => {}
            Ok(n) => tracing::info!(filters = n, "forgot the sequences of idle filters"),
            Err(e) => tracing::warn!(error = %e, "forgetting idle filters failed"),
        }
        let before = now.saturating_sub(millis(retention));
        let mut total = 0usize;
        while !retention.is_zero() {
            match store.prune(before).await {
                Ok(0) => break,
                Ok(n) => total += n,
                Err(e) => {
                    tracing::warn!(error = %e, "retention pruning failed");
                    break;
                }
            }
        }
        if total > 0 {
            tracing::info!(
                deleted = total,
                "deleted records older than the retention period"
            );
        }
        tokio::select! {
            _ = tokio::time::sleep(std::time::Duration::from_secs(3600)) => {}
            _ = stop.changed() => return,
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::store::query::StatusFilter;
    use warden_proto::pb::{
        AuthDecision, DenyKind, Mechanism, Principal, PrincipalSource, Verdict,
    };

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
}
