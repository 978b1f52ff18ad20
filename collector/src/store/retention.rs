//! Retention: whole blocks older than the retention period are deleted from the old end (their
//! chain links with them, the last kept as the anchor), and idle filters' sequence state is
//! forgotten.

use super::sequences::SequenceLog;
use super::writer::*;
use super::*;
use crate::error::Error;
use rusqlite::params;
use std::sync::Arc;

/// Blocks deleted per retention step, so ingest is never blocked for long.
pub(super) const PRUNE_BLOCKS: i64 = 64;

impl Writer {
    /// Deletes up to [`PRUNE_BLOCKS`] blocks entirely older than `before_ms`.
    pub(super) fn prune(&mut self, before_ms: i64) -> Result<usize, Error> {
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
    pub(super) fn forget_idle(&mut self, before_ms: i64) -> Result<usize, Error> {
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
