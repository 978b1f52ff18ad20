//! `GET /api/v1/filters`: the filters connected for deny-list push, and the accounting of every
//! filter instance since the collector started.

use crate::ingest::ledger::LedgerRow;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// The connected filters and the accounting per filter instance.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct FiltersResponse {
    /// The current deny-list version.
    pub version: u64,
    /// Connected streams, ordered by node, worker and stream.
    pub filters: Vec<ConnectedFilter>,
    /// Every filter instance heard from, most recently first.
    pub accounting: Vec<FilterAccounting>,
}

pub use crate::decisions::push::FilterInfo as ConnectedFilter;

/// Records a filter reports not sending one by one, by reason.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct DroppedByReason {
    /// Folded into record summaries (detail lost, the requests counted).
    pub summarized: u64,
    /// The buffer and the summary table were full: only counted.
    pub buffer_full: u64,
    /// In batches the collector refused as a whole.
    pub batch_refused: u64,
}

/// Record summaries received from a filter.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
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

/// One filter instance's accounting.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct FilterAccounting {
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
    /// Records refused one by one.
    pub refused: u64,
    /// Records the filter reports not sending one by one (all reasons).
    pub reported_dropped: u64,
    /// The same, by reason.
    pub dropped: DroppedByReason,
    /// Record summaries received.
    pub summaries: SummaryCounts,
    /// Highest sequence number seen.
    pub highest_sequence: u64,
    /// Sequence numbers up to the highest neither stored, refused nor reported dropped: in
    /// flight, or lost without being counted.
    pub gaps: u64,
    /// When the instance last sent a batch, RFC 3339.
    pub last_seen: String,
}

impl From<LedgerRow> for FilterAccounting {
    fn from(r: LedgerRow) -> Self {
        let LedgerRow {
            node_id,
            worker,
            instance_id,
            received,
            stored,
            duplicates,
            refused,
            reported_dropped,
            dropped,
            summaries,
            highest_sequence,
            gaps,
            last_seen,
        } = r;
        let crate::ingest::ledger::DroppedByReason {
            summarized,
            buffer_full,
            batch_refused,
        } = dropped;
        let crate::ingest::ledger::SummaryCounts {
            received: summaries_received,
            stored: summaries_stored,
            duplicates: summaries_duplicates,
            refused: summaries_refused,
            requests,
        } = summaries;
        FilterAccounting {
            node_id,
            worker,
            instance_id,
            received,
            stored,
            duplicates,
            refused,
            reported_dropped,
            dropped: DroppedByReason {
                summarized,
                buffer_full,
                batch_refused,
            },
            summaries: SummaryCounts {
                received: summaries_received,
                stored: summaries_stored,
                duplicates: summaries_duplicates,
                refused: summaries_refused,
                requests,
            },
            highest_sequence,
            gaps,
            last_seen,
        }
    }
}
