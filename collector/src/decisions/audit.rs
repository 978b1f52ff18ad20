//! The decisions audit: one row per change (who, what, why, which version), written by the store
//! in the change's own transaction and linked into the tamper-evident audit chain; read back by
//! `Decisions::audit`.

use super::model::to_i64;
use rusqlite::params;
use serde::{Deserialize, Serialize};

/// One admin-audit entry: who changed what, when and why.
#[derive(Debug, Clone, Serialize, PartialEq, Eq, Deserialize, utoipa::ToSchema)]
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

pub(super) struct AuditRow<'a> {
    pub(super) actor: &'a str,
    pub(super) operation: &'a str,
    pub(super) target: String,
    pub(super) action: Option<&'a str>,
    pub(super) expires_at_ms: Option<i64>,
    pub(super) reason: &'a str,
    pub(super) origin: &'a str,
    pub(super) decision_id: Option<u64>,
    pub(super) count: u64,
}

pub(super) fn write_audit(
    tx: &rusqlite::Transaction<'_>,
    now: i64,
    version: u64,
    row: &AuditRow<'_>,
) -> Result<(), rusqlite::Error> {
    tx.prepare_cached(
        "INSERT INTO admin_audit (time_ms, actor, operation, target, action, expires_at_ms, reason, origin, decision_id, version, count)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
    )?
    .execute(params![
        now,
        row.actor,
        row.operation,
        row.target,
        row.action,
        row.expires_at_ms,
        row.reason,
        row.origin,
        row.decision_id.map(to_i64),
        to_i64(version),
        to_i64(row.count),
    ])?;
    // Linked into the audit chain in the same transaction (`warden verify`).
    crate::trail::link_audit_entry(tx, tx.last_insert_rowid())
}
