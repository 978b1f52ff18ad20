//! `GET /api/v1/audit` (who changed which decision, when and why) and `GET /api/v1/audit/api`
//! (every API call, refused ones included).

use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

/// The decisions audit's parameters; unknown parameters refused.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AuditParams {
    /// Only entries since: a duration ago or an RFC 3339 time.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub since: Option<String>,
    /// Entries at most (default 100, at most 100000).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit: Option<usize>,
}

/// Decision changes, newest first.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct AuditEntries {
    /// The entries.
    pub entries: Vec<AuditEntry>,
}

pub use crate::decisions::AuditEntry;

/// The API audit's parameters; unknown parameters refused.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ApiAuditParams {
    /// Only calls since: a duration ago or an RFC 3339 time.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub since: Option<String>,
    /// Entries at most (default 100, at most 100000).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit: Option<usize>,
    /// Only this actor.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub actor: Option<String>,
    /// Only operations starting with this, e.g. `decisions.`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub operation: Option<String>,
    /// Only refused calls (401, 403, 429): `true`/`1` or `false`/`0`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refused: Option<bool>,
}

/// Audited API calls, newest first.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ApiAuditEntries {
    /// The entries.
    pub entries: Vec<ApiAuditEntry>,
}

pub use crate::security::audit_log::ApiAuditEntry;
