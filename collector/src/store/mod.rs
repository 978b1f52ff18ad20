//! The record store: one SQLite database in WAL mode holding records in compressed blocks.
//!
//! Writes go through a single dedicated thread that owns the write connection and does group
//! commit: it drains every queued batch into one transaction and answers each caller only after
//! that transaction committed, so an acknowledgement always means "durable". A group becomes one
//! or more [`block`]s; retries are recognised by [`sequences`]; reads run [`scan`]s on their own
//! connections (WAL lets them run beside the writer).

pub mod block;
mod compaction;
pub mod query;
mod retention;
pub mod scan;
pub mod sequences;
pub mod summaries;
mod writer;

pub use compaction::compaction_task;
pub use retention::retention_task;
use writer::*;

use crate::config::Synchronous;
use crate::db::{ReadPool, open_connection};
use crate::error::Error;
use crate::metrics::Metrics;
use crate::store::query::{Cursor, RecordFilter, RecordQuery, StoredRecord};
use rusqlite::Connection;
use scan::{Order, ScanRange};
use std::ops::ControlFlow;
use std::path::Path;
use std::sync::{Arc, Mutex};
use summaries::{StoredSummary, SummaryOutcome, SummaryQuery};
use tokio::sync::{mpsc, oneshot};
use warden_proto::pb::{AccessRecord, FilterIdentity, RecordSummary};

/// The record store's database inside the data directory (see [`crate::db`] for why it is not
/// `warden.db`).
pub const RECORDS_DB_FILE: &str = "records.db";

/// Queued jobs before callers wait (backpressure towards the filters).
const QUEUE_DEPTH: usize = 1024;

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
    /// Opens (creating if needed) `data_dir/records.db` and starts the writer thread.
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
    #[cfg(test)]
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

    /// Merges small blocks (see `compaction::COMPACT_BELOW`) written before `written_before_ms` until none
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

#[cfg(test)]
pub(crate) mod tests;
