//! The rule-decision history: every rule decision with its explanation and outcome in the
//! durable `rule_decisions` table, and the query `warden explain` and the API read it with.

use crate::error::Error;
use crate::target::Target;
use crate::target::ip_key;
use crate::time::rfc3339;
use rusqlite::{Connection, params};
use serde::Serialize;
use warden_rules::RuleDecision;

pub(super) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS rule_decisions (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    time_ms INTEGER NOT NULL,
    rule TEXT NOT NULL,
    target TEXT NOT NULL,
    target_lo BLOB NOT NULL,
    target_hi BLOB NOT NULL,
    action TEXT NOT NULL,
    outcome TEXT NOT NULL,
    dry_run INTEGER NOT NULL,
    decision_id INTEGER,
    detail TEXT,
    decision TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS rule_decisions_time ON rule_decisions(time_ms);
CREATE INDEX IF NOT EXISTS rule_decisions_target ON rule_decisions(target_lo);
";

/// A rule decision and what came of it, to be recorded and notified.
pub(super) struct Acted {
    pub(super) decision: RuleDecision,
    pub(super) target: Target,
    pub(super) outcome: Outcome,
    pub(super) decision_id: Option<u64>,
    pub(super) ban_expires: Option<i64>,
    pub(super) detail: Option<String>,
    pub(super) at_ms: i64,
}

/// What the collector did with a rule decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// A deny/throttle decision was made and pushed to the filters.
    Banned,
    /// The rule is in dry run: recorded, not enforced.
    DryRun,
    /// The rule's action is `alert`: recorded and notified, not enforced.
    Alert,
    /// The target is covered by the allowlist: no decision was made.
    Allowlisted,
    /// An equal or stronger decision on the target was already in force and was kept (a rule
    /// never shortens or weakens a ban, e.g. a manual permanent one).
    Existing,
    /// Making the decision failed (storage); see `detail`.
    Error,
}

impl Outcome {
    /// The stored and JSON name.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Banned => "banned",
            Outcome::DryRun => "dry_run",
            Outcome::Alert => "alert",
            Outcome::Allowlisted => "allowlisted",
            Outcome::Existing => "existing",
            Outcome::Error => "error",
        }
    }
}

/// Writes the history rows of `acted` in one transaction.
pub(super) fn record_all(conn: &Connection, acted: &[Acted]) -> Result<(), Error> {
    let tx = conn.unchecked_transaction()?;
    for a in acted {
        record(&tx, a)?;
    }
    tx.commit()?;
    Ok(())
}

pub(super) fn record(conn: &Connection, a: &Acted) -> Result<(), Error> {
    let d = &a.decision;
    let (lo, hi) = a.target.key_range();
    let json = serde_json::to_string(d).map_err(|e| Error::Storage(e.to_string()))?;
    conn.prepare_cached(
        "INSERT INTO rule_decisions (time_ms, rule, target, target_lo, target_hi, action, outcome, dry_run, decision_id, detail, decision)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
    )?
    .execute(params![
        a.at_ms,
        d.rule,
        a.target.to_string(),
        &lo[..],
        &hi[..],
        d.action.as_str(),
        a.outcome.as_str(),
        d.dry_run,
        a.decision_id.and_then(|i| i64::try_from(i).ok()),
        a.detail,
        json,
    ])?;
    Ok(())
}

/// Rule decisions whose target contains `ip` (or all, when `ip` is `None`), newest first, as
/// JSON: the engine's explanation plus `id`, `time`, `outcome`, `decision_id`, `detail`.
pub fn query_rule_decisions(
    conn: &Connection,
    ip: Option<std::net::IpAddr>,
    since_ms: Option<i64>,
    limit: usize,
) -> Result<Vec<serde_json::Value>, Error> {
    let key = ip.map(ip_key);
    let mut stmt = conn.prepare(
        "SELECT id, time_ms, outcome, decision_id, detail, decision FROM rule_decisions
         WHERE (?1 IS NULL OR (target_lo <= ?1 AND target_hi >= ?1)) AND time_ms >= ?2
         ORDER BY id DESC LIMIT ?3",
    )?;
    let rows = stmt.query_map(
        params![
            key.as_ref().map(|k| &k[..]),
            since_ms.unwrap_or(i64::MIN),
            i64::try_from(limit).unwrap_or(i64::MAX)
        ],
        |r| {
            let time_ms: i64 = r.get(1)?;
            let text: String = r.get(5)?;
            let mut v: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
            if let Some(obj) = v.as_object_mut() {
                obj.insert("id".into(), r.get::<_, i64>(0)?.into());
                obj.insert("time".into(), rfc3339(time_ms).into());
                obj.insert("time_ms".into(), time_ms.into());
                obj.insert("outcome".into(), r.get::<_, String>(2)?.into());
                obj.insert("decision_id".into(), r.get::<_, Option<i64>>(3)?.into());
                obj.insert("detail".into(), r.get::<_, Option<String>>(4)?.into());
            }
            Ok(v)
        },
    )?;
    rows.collect::<Result<Vec<_>, _>>().map_err(Error::from)
}
