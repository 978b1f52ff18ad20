//! The API audit trail: every call to the HTTP API, reads included, and every refused
//! authentication: who (credential name, certificate or JWT subject), how they authenticated,
//! their role, the operation and its parameters (never a credential), the source address, the
//! status and the outcome.
//!
//! Entries live in `audit.db` beside the other databases (so that auditing every read never
//! delays a ban's commit in `warden.db`). A writer thread commits them in groups; a call's
//! answer waits for its entry's commit, so nothing is served that is not audited.

use crate::config::Synchronous;
use crate::db::{ReadPool, open_connection};
use crate::error::Error;
use crate::time::rfc3339;
use rusqlite::{Connection, params};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use tokio::sync::oneshot;

/// The audit database inside the data directory.
pub const AUDIT_DB_FILE: &str = "audit.db";

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS api_audit (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    time_ms INTEGER NOT NULL,
    actor TEXT NOT NULL,
    actor_kind TEXT NOT NULL,
    role TEXT,
    operation TEXT NOT NULL,
    method TEXT NOT NULL,
    path TEXT NOT NULL,
    params TEXT NOT NULL,
    source TEXT NOT NULL,
    status INTEGER NOT NULL,
    outcome TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS api_audit_time ON api_audit (time_ms);
CREATE INDEX IF NOT EXISTS api_audit_actor ON api_audit (actor, time_ms);
";

/// One audited call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ApiAuditEntry {
    /// Row id (0 before it is stored).
    pub id: u64,
    /// When the call was answered, ms since the epoch.
    #[serde(skip)]
    pub time_ms: i64,
    /// RFC 3339 of `time_ms`.
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

type Job = (ApiAuditEntry, oneshot::Sender<Result<(), Error>>);

/// Writes and reads the API audit trail.
pub struct ApiAudit {
    tx: std::sync::Mutex<Option<mpsc::Sender<Job>>>,
    reads: ReadPool,
    writer: std::sync::Mutex<Option<std::thread::JoinHandle<()>>>,
}

fn insert(conn: &Connection, e: &ApiAuditEntry) -> rusqlite::Result<()> {
    conn.execute(
        "INSERT INTO api_audit (time_ms, actor, actor_kind, role, operation, method, path, params, source, status, outcome)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
        params![
            e.time_ms,
            e.actor,
            e.actor_kind,
            e.role,
            e.operation,
            e.method,
            e.path,
            e.params.to_string(),
            e.source,
            i64::from(e.status),
            e.outcome
        ],
    )?;
    Ok(())
}

fn write_loop(mut conn: Connection, rx: mpsc::Receiver<Job>) {
    while let Ok(first) = rx.recv() {
        let mut jobs = vec![first];
        while jobs.len() < 512 {
            match rx.try_recv() {
                Ok(j) => jobs.push(j),
                Err(_) => break,
            }
        }
        let result = (|| -> rusqlite::Result<()> {
            let tx = conn.transaction()?;
            for (entry, _) in &jobs {
                insert(&tx, entry)?;
            }
            tx.commit()
        })();
        for (_, done) in jobs {
            let _ = done.send(
                result
                    .as_ref()
                    .map(|_| ())
                    .map_err(|e| Error::Storage(format!("audit log: {e}"))),
            );
        }
    }
}

/// Filters of an audit query.
#[derive(Debug, Clone, Default)]
pub struct AuditQuery {
    /// Only this actor.
    pub actor: Option<String>,
    /// Only operations starting with this (`decisions.` for every decision change).
    pub operation: Option<String>,
    /// Only entries since, ms since the epoch.
    pub since_ms: Option<i64>,
    /// Only refused calls (status 401/403/429).
    pub refused: bool,
    /// At most this many, newest first.
    pub limit: usize,
}

impl ApiAudit {
    /// Opens (creating) `audit.db` in `data_dir` and starts the writer.
    pub fn open(data_dir: &Path, sync: Synchronous) -> Result<ApiAudit, Error> {
        let path: PathBuf = data_dir.join(AUDIT_DB_FILE);
        let conn = open_connection(&path, sync)?;
        conn.execute_batch(SCHEMA)?;
        let (tx, rx) = mpsc::channel();
        let writer = std::thread::Builder::new()
            .name("warden-audit".into())
            .spawn(move || write_loop(conn, rx))
            .map_err(|e| Error::Storage(format!("cannot start the audit writer: {e}")))?;
        Ok(ApiAudit {
            tx: std::sync::Mutex::new(Some(tx)),
            reads: ReadPool::new(path),
            writer: std::sync::Mutex::new(Some(writer)),
        })
    }

    /// Stores `entry`; resolves once it is committed.
    pub async fn record(&self, entry: ApiAuditEntry) -> Result<(), Error> {
        let (done, wait) = oneshot::channel();
        let sent = self
            .tx
            .lock()
            .ok()
            .and_then(|tx| tx.as_ref().map(|tx| tx.send((entry, done)).is_ok()))
            .unwrap_or(false);
        if !sent {
            return Err(Error::ShuttingDown);
        }
        wait.await.map_err(|_| Error::ShuttingDown)?
    }

    /// Entries matching `q`, newest first.
    pub async fn query(&self, q: AuditQuery) -> Result<Vec<ApiAuditEntry>, Error> {
        self.reads
            .read(move |conn| {
                let mut stmt = conn.prepare(
                    "SELECT id, time_ms, actor, actor_kind, role, operation, method, path, params, source, status, outcome
                     FROM api_audit
                     WHERE time_ms >= ?1 AND (?2 IS NULL OR actor = ?2) AND (?3 IS NULL OR substr(operation, 1, length(?3)) = ?3)
                       AND (?4 = 0 OR status IN (401, 403, 429))
                     ORDER BY id DESC LIMIT ?5",
                )?;
                let rows = stmt.query_map(
                    params![
                        q.since_ms.unwrap_or(i64::MIN),
                        q.actor,
                        q.operation,
                        i64::from(q.refused),
                        i64::try_from(q.limit).unwrap_or(i64::MAX)
                    ],
                    |r| {
                        let time_ms: i64 = r.get(1)?;
                        let params: String = r.get(8)?;
                        let status: i64 = r.get(10)?;
                        Ok(ApiAuditEntry {
                            id: u64::try_from(r.get::<_, i64>(0)?).unwrap_or(0),
                            time_ms,
                            time: rfc3339(time_ms),
                            actor: r.get(2)?,
                            actor_kind: r.get(3)?,
                            role: r.get(4)?,
                            operation: r.get(5)?,
                            method: r.get(6)?,
                            path: r.get(7)?,
                            params: serde_json::from_str(&params).unwrap_or(serde_json::Value::Null),
                            source: r.get(9)?,
                            status: u16::try_from(status).unwrap_or(0),
                            outcome: r.get(11)?,
                        })
                    },
                )?;
                Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
            })
            .await
    }

    /// Stops the writer after the entries already queued.
    pub fn close(&self) {
        if let Ok(mut tx) = self.tx.lock() {
            tx.take();
        }
        if let Some(w) = self.writer.lock().ok().and_then(|mut w| w.take()) {
            let _ = w.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(actor: &str, operation: &str, status: u16) -> ApiAuditEntry {
        ApiAuditEntry {
            id: 0,
            time_ms: 1_700_000_000_000,
            time: String::new(),
            actor: actor.into(),
            actor_kind: "token".into(),
            role: Some("viewer".into()),
            operation: operation.into(),
            method: "GET".into(),
            path: "/api/v1/records".into(),
            params: serde_json::json!({"query": {"since": "1h"}}),
            source: "127.0.0.1:5000".into(),
            status,
            outcome: "ok".into(),
        }
    }

    #[tokio::test]
    async fn entries_are_stored_and_filtered() {
        let dir = tempfile::tempdir().unwrap();
        let audit = ApiAudit::open(dir.path(), Synchronous::Normal).unwrap();
        audit
            .record(entry("alice", "records.query", 200))
            .await
            .unwrap();
        audit
            .record(entry("bob", "decisions.ban", 201))
            .await
            .unwrap();
        audit.record(entry("", "decisions.ban", 401)).await.unwrap();
        let all = audit
            .query(AuditQuery {
                limit: 10,
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(all.len(), 3);
        assert_eq!(all[0].status, 401, "newest first");
        let bans = audit
            .query(AuditQuery {
                operation: Some("decisions.".into()),
                limit: 10,
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(bans.len(), 2);
        let alice = audit
            .query(AuditQuery {
                actor: Some("alice".into()),
                limit: 10,
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(alice[0].params["query"]["since"], "1h");
        let refused = audit
            .query(AuditQuery {
                refused: true,
                limit: 10,
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(refused.len(), 1);
        audit.close();
        assert!(audit.record(entry("x", "y", 200)).await.is_err());
    }
}
