//! Compaction: small blocks (a quiet filter's frequent commits) that have settled are merged into
//! larger ones without changing any answer, then marked final and sealed into the block chain.

use super::block::BLOCK_RECORDS;
use super::writer::*;
use super::*;
use crate::error::Error;
use rusqlite::params;
use std::sync::Arc;

/// Blocks holding fewer records than this are merged with their neighbours (in write order) once
/// settled. At low traffic every group commit writes a small block; merging keeps the number of
/// blocks a query must consider proportional to records, not to commits.
pub(super) const COMPACT_BELOW: i64 = (BLOCK_RECORDS / 2) as i64;
/// A block is left as written for this long, so merges never touch the blocks fresh queries read.
pub(super) const COMPACT_AFTER_MS: i64 = 10_000;
/// Blocks looked at per compaction step.
pub(super) const COMPACT_SCAN: i64 = 1024;
/// Merges per compaction request, at most; the writer also stops as soon as a batch is queued.
pub(super) const COMPACT_STEPS: usize = 256;
/// How often the background task asks for compaction.
pub(super) const COMPACT_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

impl Writer {
    /// Merges runs of small blocks written before `written_before_ms` until none is left,
    /// [`COMPACT_STEPS`] merges were done, or `interrupted` says a batch is waiting.
    pub(super) fn compact(
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
}

/// A block considered for merging.
pub(super) struct CompactionCandidate {
    id: i64,
    records: i64,
    received_ms: i64,
    min_time_ms: i64,
    max_time_ms: i64,
}

/// Whether `next` can join `run` within the block bounds (records and time span).
pub(super) fn fits(run: &[&CompactionCandidate], next: &CompactionCandidate) -> bool {
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
