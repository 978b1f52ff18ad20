//! `GET /api/v1/filters`: the filters connected for deny-list push, and the accounting of every
//! filter instance since the collector started.

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
pub use crate::ingest::ledger::{DroppedByReason, SummaryCounts};

pub use crate::ingest::ledger::LedgerRow as FilterAccounting;
