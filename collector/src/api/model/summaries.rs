//! `GET /api/v1/summaries`: the requests filters could not keep as records during an outage,
//! counted per client, host, status class, decision and minute.

use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

/// The filters of a summary query; unknown parameters refused.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SummariesParams {
    /// Only minutes since: a duration ago (`15m`, `24h`) or an RFC 3339 time.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub since: Option<String>,
    /// Only minutes before: a duration ago or an RFC 3339 time.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub until: Option<String>,
    /// Client address or CIDR.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ip: Option<String>,
    /// Host (authority), with or without port.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// Maximum number of rows (default 100).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit: Option<usize>,
}

/// The summaries matching a query.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct SummariesPage {
    /// Newest minute first, then most requests.
    pub summaries: Vec<Summary>,
}

pub use crate::store::summaries::StoredSummary as Summary;
