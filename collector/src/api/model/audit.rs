//! `GET /api/v1/audit` (who changed which decision, when and why) and `GET /api/v1/audit/api`
//! (every API call, refused ones included).

use crate::security::audit_log;
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

/// One decision change: who changed what, when and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct AuditEntry {
    /// Entry id.
    pub id: u64,
    /// RFC 3339.
    pub time: String,
    /// ms since the epoch.
    pub time_ms: i64,
    /// Who (`warden` for automatic expiry).
    pub actor: String,
    /// `ban`, `ban_bulk`, `unban`, `expire`, `allow_add`, `allow_remove`.
    pub operation: String,
    /// The network (or a summary for bulk operations).
    pub target: String,
    /// `deny`, `throttle`, `allow` or null.
    pub action: Option<String>,
    /// Expiry of the decision made, RFC 3339 or null.
    pub expires_at: Option<String>,
    /// Why.
    pub reason: String,
    /// Origin.
    pub origin: String,
    /// Decision id affected (null for bulk).
    pub decision_id: Option<u64>,
    /// The deny-list version this change produced.
    pub version: u64,
    /// Targets affected.
    pub count: u64,
}

impl From<crate::decisions::AuditEntry> for AuditEntry {
    fn from(e: crate::decisions::AuditEntry) -> Self {
        let crate::decisions::AuditEntry {
            id,
            time,
            time_ms,
            actor,
            operation,
            target,
            action,
            expires_at,
            reason,
            origin,
            decision_id,
            version,
            count,
        } = e;
        AuditEntry {
            id,
            time,
            time_ms,
            actor,
            operation,
            target,
            action,
            expires_at,
            reason,
            origin,
            decision_id,
            version,
            count,
        }
    }
}

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

/// One audited call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ApiAuditEntry {
    /// Row id.
    pub id: u64,
    /// When the call was answered, RFC 3339.
    pub time: String,
    /// Who: the credential's name, the JWT's subject; empty when authentication failed.
    pub actor: String,
    /// `token`, `certificate`, `jwt`, or `none`.
    pub actor_kind: String,
    /// The caller's role, when authenticated.
    pub role: Option<String>,
    /// What was done (`records.query`, `decisions.ban`, ...).
    pub operation: String,
    /// HTTP method.
    pub method: String,
    /// Request path.
    pub path: String,
    /// The parameters: query string and JSON body fields, long values shortened.
    pub params: serde_json::Value,
    /// The caller's address.
    pub source: String,
    /// HTTP status of the answer.
    pub status: u16,
    /// `ok`, or why the call failed.
    pub outcome: String,
}

impl From<audit_log::ApiAuditEntry> for ApiAuditEntry {
    fn from(e: audit_log::ApiAuditEntry) -> Self {
        let audit_log::ApiAuditEntry {
            id,
            // Not on the wire: `time` says the same.
            time_ms: _,
            time,
            actor,
            actor_kind,
            role,
            operation,
            method,
            path,
            params,
            source,
            status,
            outcome,
        } = e;
        ApiAuditEntry {
            id,
            time,
            actor,
            actor_kind,
            role,
            operation,
            method,
            path,
            params,
            source,
            status,
            outcome,
        }
    }
}
