//! Accounting per filter identity (node, worker, instance), since the collector started: what
//! it sent, what was stored, repeated, refused, what it reports having dropped, and the
//! sequence numbers still unexplained, so that nothing is lost without being counted
//! (`warden filters`, `GET /api/v1/filters`, `/metrics`).
//!
//! Only authenticated filters get here, and the table is bounded: past [`MAX_IDENTITIES`] the
//! tenth heard from least recently is forgotten.

use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::Mutex;
use warden_proto::pb::{DropCounts, FilterIdentity};

/// Identities accounted at most.
pub const MAX_IDENTITIES: usize = 100_000;

type Key = (String, u32, String);

#[derive(Debug, Clone, Copy, Default)]
struct Entry {
    received: u64,
    stored: u64,
    duplicates: u64,
    refused: u64,
    reported_dropped: u64,
    dropped: DropCounts,
    summaries: SummaryCounts,
    highest_sequence: u64,
    last_seen_ms: i64,
}

/// Records a filter reports not sending one by one, by reason (its latest cumulative counts).
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct DroppedByReason {
    /// Folded into record summaries (detail lost, the requests counted).
    pub summarized: u64,
    /// The buffer and the summary table were full: only counted.
    pub buffer_full: u64,
    /// In batches the collector refused as a whole.
    pub batch_refused: u64,
}

/// Record summaries received from a filter.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct SummaryCounts {
    /// Summaries received (retries included).
    pub received: u64,
    /// Newly stored.
    pub stored: u64,
    /// Received again and not stored twice.
    pub duplicates: u64,
    /// Refused one by one.
    pub refused: u64,
    /// Requests the stored summaries count.
    pub requests: u64,
}

/// One identity's accounting.
#[derive(Debug, Clone, Serialize, PartialEq, Eq, Deserialize, utoipa::ToSchema)]
#[schema(as = FilterAccounting)]
pub struct LedgerRow {
    /// Envoy node id.
    pub node_id: String,
    /// Worker index.
    pub worker: u32,
    /// VM instance id.
    pub instance_id: String,
    /// Records received in batches (retries included).
    pub received: u64,
    /// Records newly stored.
    pub stored: u64,
    /// Records received again (a retry) and not stored twice.
    pub duplicates: u64,
    /// Records refused one by one (they broke the record contract or carried an impossible time).
    pub refused: u64,
    /// Records the filter reports not sending one by one (all reasons).
    pub reported_dropped: u64,
    /// The same, by reason.
    pub dropped: DroppedByReason,
    /// Record summaries received.
    pub summaries: SummaryCounts,
    /// Highest sequence number seen.
    pub highest_sequence: u64,
    /// Sequence numbers up to the highest neither stored, refused nor reported dropped: records
    /// still in flight or lost without being counted. Transient while batches are in flight;
    /// one that stays is a loss to investigate.
    pub gaps: u64,
    /// When the identity last sent a batch, RFC 3339.
    pub last_seen: String,
}

/// The accounting table.
#[derive(Debug, Default)]
pub struct Ledger(Mutex<HashMap<Key, Entry>>);

/// What one batch did, for [`Ledger::record`].
#[derive(Debug, Clone, Copy, Default)]
pub struct BatchCounts {
    /// Records in the batch.
    pub received: u64,
    /// Newly stored.
    pub stored: u64,
    /// Already stored.
    pub duplicates: u64,
    /// Refused one by one.
    pub refused: u64,
    /// Highest sequence in the batch.
    pub highest_sequence: u64,
    /// The batch's record summaries.
    pub summaries: SummaryCounts,
}

impl Entry {
    /// Sequence numbers up to the highest neither stored, refused nor reported dropped.
    fn gaps(&self) -> u64 {
        self.highest_sequence
            .saturating_sub(self.stored + self.refused + self.reported_dropped)
    }
}

impl Ledger {
    fn with_entry(&self, f: &FilterIdentity, now_ms: i64, update: impl FnOnce(&mut Entry)) {
        let Ok(mut map) = self.0.lock() else {
            return;
        };
        if map.len() >= MAX_IDENTITIES {
            let mut ages: Vec<i64> = map.values().map(|e| e.last_seen_ms).collect();
            ages.sort_unstable();
            let cutoff = ages[ages.len() / 10];
            map.retain(|_, e| e.last_seen_ms > cutoff);
        }
        let entry = map
            .entry((f.node_id.clone(), f.worker, f.instance_id.clone()))
            .or_default();
        entry.last_seen_ms = now_ms;
        update(entry);
    }

    /// Counts one batch.
    pub fn record(&self, f: &FilterIdentity, counts: BatchCounts, now_ms: i64) {
        self.with_entry(f, now_ms, |e| {
            e.received += counts.received;
            e.stored += counts.stored;
            e.duplicates += counts.duplicates;
            e.refused += counts.refused;
            e.summaries.received += counts.summaries.received;
            e.summaries.stored += counts.summaries.stored;
            e.summaries.duplicates += counts.summaries.duplicates;
            e.summaries.refused += counts.summaries.refused;
            e.summaries.requests += counts.summaries.requests;
            e.highest_sequence = e.highest_sequence.max(counts.highest_sequence);
        });
    }

    /// Takes a filter's reported drop total and its split by reason (they only grow; an older
    /// report arriving late changes nothing); returns by how much each grew, for `/metrics`.
    pub fn report_dropped(
        &self,
        f: &FilterIdentity,
        dropped_total: u64,
        by_reason: DropCounts,
        now_ms: i64,
    ) -> (u64, DropCounts) {
        let mut grew = (0, DropCounts::default());
        self.with_entry(f, now_ms, |e| {
            if dropped_total > e.reported_dropped {
                grew.0 = dropped_total - e.reported_dropped;
                e.reported_dropped = dropped_total;
                grew.1 = DropCounts {
                    summarized: by_reason.summarized.saturating_sub(e.dropped.summarized),
                    buffer_full: by_reason.buffer_full.saturating_sub(e.dropped.buffer_full),
                    batch_refused: by_reason
                        .batch_refused
                        .saturating_sub(e.dropped.batch_refused),
                };
                e.dropped = DropCounts {
                    summarized: e.dropped.summarized.max(by_reason.summarized),
                    buffer_full: e.dropped.buffer_full.max(by_reason.buffer_full),
                    batch_refused: e.dropped.batch_refused.max(by_reason.batch_refused),
                };
            }
        });
        grew
    }

    /// Every identity, most recently heard from first.
    pub fn rows(&self) -> Vec<LedgerRow> {
        let Ok(map) = self.0.lock() else {
            return Vec::new();
        };
        let mut rows: Vec<(i64, LedgerRow)> = map
            .iter()
            .map(|((node, worker, instance), e)| {
                (
                    e.last_seen_ms,
                    LedgerRow {
                        node_id: node.clone(),
                        worker: *worker,
                        instance_id: instance.clone(),
                        received: e.received,
                        stored: e.stored,
                        duplicates: e.duplicates,
                        refused: e.refused,
                        reported_dropped: e.reported_dropped,
                        dropped: DroppedByReason {
                            summarized: e.dropped.summarized,
                            buffer_full: e.dropped.buffer_full,
                            batch_refused: e.dropped.batch_refused,
                        },
                        summaries: e.summaries,
                        highest_sequence: e.highest_sequence,
                        gaps: e.gaps(),
                        last_seen: crate::time::rfc3339(e.last_seen_ms),
                    },
                )
            })
            .collect();
        rows.sort_by_key(|r| std::cmp::Reverse(r.0));
        rows.into_iter().map(|(_, r)| r).collect()
    }

    /// Sum of every identity's gaps (`/metrics`).
    pub fn total_gaps(&self) -> u64 {
        let Ok(map) = self.0.lock() else {
            return 0;
        };
        map.values().map(Entry::gaps).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filter() -> FilterIdentity {
        FilterIdentity {
            node_id: "n".into(),
            worker: 1,
            instance_id: "i".into(),
            filter_version: String::new(),
        }
    }

    #[test]
    fn every_sequence_number_is_explained_or_counted_as_a_gap() {
        let l = Ledger::default();
        let f = filter();
        // 1..=10 sent: 9 stored, 1 refused.
        l.record(
            &f,
            BatchCounts {
                received: 10,
                stored: 9,
                refused: 1,
                highest_sequence: 10,
                ..Default::default()
            },
            1,
        );
        // A retry of 6..=10 (5 duplicates), then 16..=20: 11..=15 are missing.
        l.record(
            &f,
            BatchCounts {
                received: 5,
                duplicates: 5,
                highest_sequence: 10,
                ..Default::default()
            },
            2,
        );
        l.record(
            &f,
            BatchCounts {
                received: 5,
                stored: 5,
                highest_sequence: 20,
                ..Default::default()
            },
            3,
        );
        assert_eq!(l.rows()[0].gaps, 5);
        // The filter reports it dropped three of them: two are still unexplained.
        let reasons = DropCounts {
            summarized: 2,
            buffer_full: 1,
            batch_refused: 0,
        };
        assert_eq!(l.report_dropped(&f, 3, reasons, 4).0, 3);
        assert_eq!(
            l.report_dropped(&f, 3, reasons, 5).0,
            0,
            "a total, not an increment"
        );
        assert_eq!(
            l.rows()[0].dropped,
            DroppedByReason {
                summarized: 2,
                buffer_full: 1,
                batch_refused: 0
            }
        );
        let row = &l.rows()[0];
        assert_eq!(
            (
                row.received,
                row.stored,
                row.duplicates,
                row.refused,
                row.reported_dropped,
                row.gaps
            ),
            (20, 14, 5, 1, 3, 2)
        );
    }
}
