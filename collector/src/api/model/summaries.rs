//! `GET /api/v1/summaries`: the requests filters could not keep as records during an outage,
//! counted per client, host, status class, decision and minute.

use crate::store::summaries::StoredSummary;
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

/// Requests counted for one client, host, status class, decision and minute, all filter
/// instances together.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Summary {
    /// Start of the minute, RFC 3339.
    pub minute: String,
    /// Start of the minute, ms since the epoch.
    pub minute_ms: i64,
    /// Client address.
    pub client_address: String,
    /// Host (authority).
    pub authority: String,
    /// Status class: `2xx`, `4xx`, ... (`none` when no response was sent).
    pub status_class: String,
    /// `allow`, `deny` or `unspecified`.
    pub verdict: String,
    /// The mechanism that decided (`rbac`, `warden_deny_list`, ...).
    pub mechanism: String,
    /// Requests counted.
    pub requests: u64,
    /// Request bytes.
    pub request_bytes: u64,
    /// Response bytes.
    pub response_bytes: u64,
}

impl From<StoredSummary> for Summary {
    fn from(s: StoredSummary) -> Self {
        let StoredSummary {
            minute,
            minute_ms,
            client_address,
            authority,
            status_class,
            verdict,
            mechanism,
            requests,
            request_bytes,
            response_bytes,
        } = s;
        Summary {
            minute,
            minute_ms,
            client_address,
            authority,
            status_class,
            verdict,
            mechanism,
            requests,
            request_bytes,
            response_bytes,
        }
    }
}
