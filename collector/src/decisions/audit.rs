//! The decisions audit: one row per change (who, what, why, which version), written in the
//! change's transaction and linked into the tamper-evident audit chain.

use super::store::*;
use crate::error::Error;
use crate::time::rfc3339;
use rusqlite::params;
use serde::Serialize;

/// One admin-audit entry: who changed what, when and why.
#[derive(Debug, Clone, Serialize)]
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

impl Decisions {
    /// Admin-audit entries, newest first.
    pub fn audit(&self, since_ms: Option<i64>, limit: usize) -> Result<Vec<AuditEntry>, Error> {
        let state = self.lock()?;
        let mut stmt = state.conn.prepare(
            "SELECT id, time_ms, actor, operation, target, action, expires_at_ms, reason, origin, decision_id, version, count
             FROM admin_audit WHERE time_ms >= ?1 ORDER BY id DESC LIMIT ?2",
        )?;
        let rows = stmt.query_map(
            params![since_ms.unwrap_or(i64::MIN), to_i64(limit as u64)],
            |r| {
                let time_ms: i64 = r.get(1)?;
                Ok(AuditEntry {
                    id: to_u64(r.get(0)?),
                    time: rfc3339(time_ms),
                    time_ms,
                    actor: r.get(2)?,
                    operation: r.get(3)?,
                    target: r.get(4)?,
                    action: r.get(5)?,
                    expires_at: r.get::<_, Option<i64>>(6)?.map(rfc3339),
                    reason: r.get(7)?,
                    origin: r.get(8)?,
                    decision_id: r.get::<_, Option<i64>>(9)?.map(to_u64),
                    version: to_u64(r.get(10)?),
                    count: to_u64(r.get(11)?),
                })
            },
        )?;
        rows.collect::<Result<Vec<_>, _>>().map_err(Error::from)
    }
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
