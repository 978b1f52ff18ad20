//! The record store: one SQLite database in WAL mode.
//!
//! Writes go through a single dedicated thread that owns the write connection and does group
//! commit: it drains every queued batch into one transaction and answers each caller only after
//! that transaction committed, so an acknowledgement always means "durable". Reads use their own
//! connections (WAL lets them run beside the writer).

use crate::config::Synchronous;
use crate::error::Error;
use crate::metrics::Metrics;
use crate::query::{RecordQuery, StoredRecord};
use crate::target::ip_key;
use rusqlite::{Connection, OpenFlags, params};
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;
use tokio::sync::{mpsc, oneshot};
use warden_proto::pb::{
    AccessRecord, DenyKind, FilterIdentity, Mechanism, PrincipalSource, Verdict,
};

/// The database file inside the data directory.
pub const DB_FILE: &str = "warden.db";

/// Queued jobs before callers wait (backpressure towards the filters).
const QUEUE_DEPTH: usize = 1024;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS records (
    id INTEGER PRIMARY KEY,
    filter_node TEXT NOT NULL,
    filter_worker INTEGER NOT NULL,
    filter_instance TEXT NOT NULL,
    sequence INTEGER NOT NULL,
    time_ms INTEGER NOT NULL,
    request_id TEXT NOT NULL,
    client_address TEXT NOT NULL,
    client_ip BLOB,
    client_port INTEGER NOT NULL,
    x_forwarded_for TEXT NOT NULL,
    tls_sni TEXT NOT NULL,
    tls_version TEXT NOT NULL,
    authority TEXT NOT NULL,
    method TEXT NOT NULL,
    path TEXT NOT NULL,
    protocol TEXT NOT NULL,
    status INTEGER NOT NULL,
    response_code_details TEXT NOT NULL,
    response_flags TEXT NOT NULL,
    route_name TEXT NOT NULL,
    upstream_cluster TEXT NOT NULL,
    upstream_host TEXT NOT NULL,
    duration_us INTEGER NOT NULL,
    request_bytes INTEGER NOT NULL,
    response_bytes INTEGER NOT NULL,
    user_agent TEXT NOT NULL,
    principal TEXT,
    principal_source TEXT,
    principal_issuer TEXT NOT NULL,
    principal_audiences TEXT,
    principal_claims TEXT,
    cert_uri_san TEXT NOT NULL,
    cert_dns_san TEXT NOT NULL,
    cert_subject TEXT NOT NULL,
    cert_fingerprint TEXT NOT NULL,
    decision TEXT,
    mechanism TEXT,
    deny_kind TEXT,
    reason TEXT NOT NULL,
    policy TEXT NOT NULL,
    warden_decision_id INTEGER NOT NULL,
    captured_headers TEXT,
    received_ms INTEGER NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS records_identity
    ON records(filter_node, filter_worker, filter_instance, sequence);
-- Single-column indexes on purpose: within one key value rows arrive in rowid order, so each
-- insert appends; composite (key, time_ms) indexes measured 2.3x slower ingest.
CREATE INDEX IF NOT EXISTS records_time ON records(time_ms);
CREATE INDEX IF NOT EXISTS records_client ON records(client_ip);
CREATE INDEX IF NOT EXISTS records_authority ON records(authority);
CREATE INDEX IF NOT EXISTS records_status ON records(status);
-- Partial: most traffic has no principal, and `principal = ?` implies NOT NULL, so queries
-- still use it (measured: see collector/README.md, Storage).
CREATE INDEX IF NOT EXISTS records_principal ON records(principal) WHERE principal IS NOT NULL;
";

const INSERT: &str = "INSERT OR IGNORE INTO records (
    filter_node, filter_worker, filter_instance, sequence, time_ms, request_id,
    client_address, client_ip, client_port, x_forwarded_for, tls_sni, tls_version,
    authority, method, path, protocol, status, response_code_details, response_flags,
    route_name, upstream_cluster, upstream_host, duration_us, request_bytes, response_bytes,
    user_agent, principal, principal_source, principal_issuer, principal_audiences,
    principal_claims, cert_uri_san, cert_dns_san, cert_subject, cert_fingerprint,
    decision, mechanism, deny_kind, reason, policy, warden_decision_id, captured_headers,
    received_ms
) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18,
    ?19, ?20, ?21, ?22, ?23, ?24, ?25, ?26, ?27, ?28, ?29, ?30, ?31, ?32, ?33, ?34, ?35, ?36,
    ?37, ?38, ?39, ?40, ?41, ?42, ?43)";

/// The columns `SELECT`ed for a [`StoredRecord`], in [`row_to_record`] order.
pub const RECORD_COLUMNS: &str = "sequence, time_ms, request_id, client_address, client_port,
    x_forwarded_for, tls_sni, tls_version, authority, method, path, protocol, status,
    response_code_details, response_flags, route_name, upstream_cluster, upstream_host,
    duration_us, request_bytes, response_bytes, user_agent, principal, principal_source,
    principal_issuer, principal_audiences, principal_claims, cert_uri_san, cert_dns_san,
    cert_subject, cert_fingerprint, decision, mechanism, deny_kind, reason, policy,
    warden_decision_id, captured_headers, filter_node, filter_worker, filter_instance";

/// The outcome of storing one batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct BatchOutcome {
    /// Records newly stored.
    pub accepted: u32,
    /// Records already present (same filter identity and sequence).
    pub duplicates: u32,
}

enum Job {
    Batch {
        filter: FilterIdentity,
        records: Arc<Vec<AccessRecord>>,
        reply: oneshot::Sender<Result<BatchOutcome, Error>>,
    },
    Prune {
        before_ms: i64,
        reply: oneshot::Sender<Result<usize, Error>>,
    },
    Close,
}

/// Handle to the record store. Cheap to share behind an `Arc`.
pub struct Store {
    path: PathBuf,
    jobs: mpsc::Sender<Job>,
    readers: Arc<Mutex<Vec<Connection>>>,
    writer: Mutex<Option<std::thread::JoinHandle<()>>>,
}

/// Opens a connection to the database with the pragmas every connection needs.
pub fn open_connection(path: &Path, sync: Synchronous) -> Result<Connection, Error> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", sync.pragma())?;
    conn.pragma_update(None, "cache_size", -65_536)?;
    conn.pragma_update(None, "temp_store", "MEMORY")?;
    Ok(conn)
}

impl Store {
    /// Opens (creating if needed) `data_dir/warden.db` and starts the writer thread.
    pub fn open(
        data_dir: &Path,
        sync: Synchronous,
        max_group_records: usize,
        metrics: Arc<Metrics>,
    ) -> Result<Store, Error> {
        std::fs::create_dir_all(data_dir).map_err(|e| {
            Error::Storage(format!(
                "cannot create data directory {}: {e}",
                data_dir.display()
            ))
        })?;
        let path = data_dir.join(DB_FILE);
        let conn = open_connection(&path, sync)?;
        conn.execute_batch(SCHEMA)?;
        let (tx, rx) = mpsc::channel(QUEUE_DEPTH);
        let writer = std::thread::Builder::new()
            .name("warden-store-writer".into())
            .spawn(move || writer_loop(conn, rx, max_group_records, &metrics))
            .map_err(|e| Error::Storage(format!("cannot start the writer thread: {e}")))?;
        Ok(Store {
            path,
            jobs: tx,
            readers: Arc::new(Mutex::new(Vec::new())),
            writer: Mutex::new(Some(writer)),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Stores a validated batch; resolves only after the transaction holding it committed.
    /// The records are shared (`Arc`) so the rules engine can read the same batch while it is
    /// being written.
    pub async fn write_batch(
        &self,
        filter: FilterIdentity,
        records: impl Into<Arc<Vec<AccessRecord>>>,
    ) -> Result<BatchOutcome, Error> {
        let records = records.into();
        let (reply, rx) = oneshot::channel();
        self.jobs
            .send(Job::Batch {
                filter,
                records,
                reply,
            })
            .await
            .map_err(|_| Error::ShuttingDown)?;
        rx.await.map_err(|_| Error::ShuttingDown)?
    }

    /// Deletes records older than `before_ms`, in slices so ingest is never blocked for long.
    pub async fn prune(&self, before_ms: i64) -> Result<usize, Error> {
        let (reply, rx) = oneshot::channel();
        self.jobs
            .send(Job::Prune { before_ms, reply })
            .await
            .map_err(|_| Error::ShuttingDown)?;
        rx.await.map_err(|_| Error::ShuttingDown)?
    }

    /// Runs `f` on a read connection on the blocking pool.
    pub async fn read<T, F>(&self, f: F) -> Result<T, Error>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, Error> + Send + 'static,
    {
        let readers = Arc::clone(&self.readers);
        let path = self.path.clone();
        tokio::task::spawn_blocking(move || {
            let pooled = readers.lock().ok().and_then(|mut v| v.pop());
            let conn = match pooled {
                Some(c) => c,
                None => {
                    let c = Connection::open_with_flags(
                        &path,
                        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
                    )?;
                    c.busy_timeout(std::time::Duration::from_secs(10))?;
                    c
                }
            };
            let result = f(&conn);
            if let Ok(mut v) = readers.lock() {
                v.push(conn);
            }
            result
        })
        .await
        .map_err(|e| Error::Storage(format!("query task failed: {e}")))?
    }

    /// Records matching `q`, newest first.
    pub async fn query_records(&self, q: RecordQuery) -> Result<Vec<StoredRecord>, Error> {
        let now = crate::time::now_ms();
        self.read(move |conn| {
            let (clause, params) = q.where_clause(now);
            let sql = format!(
                "SELECT {RECORD_COLUMNS} FROM records WHERE {clause} ORDER BY time_ms DESC, id DESC LIMIT {}",
                q.limit
            );
            let mut stmt = conn.prepare(&sql)?;
            let rows = stmt.query_map(rusqlite::params_from_iter(params), row_to_record)?;
            rows.collect::<Result<Vec<_>, _>>().map_err(Error::from)
        })
        .await
    }

    /// Finishes the queued writes and stops the writer thread. Later writes fail with
    /// [`Error::ShuttingDown`].
    pub async fn close(&self) {
        let _ = self.jobs.send(Job::Close).await;
        let handle = self.writer.lock().ok().and_then(|mut h| h.take());
        if let Some(handle) = handle {
            let _ = tokio::task::spawn_blocking(move || handle.join()).await;
        }
    }
}

fn writer_loop(
    mut conn: Connection,
    mut rx: mpsc::Receiver<Job>,
    max_group_records: usize,
    metrics: &Metrics,
) {
    while let Some(first) = rx.blocking_recv() {
        let mut batches = Vec::new();
        let mut closing = false;
        let mut queued_records = 0usize;
        let mut next = Some(first);
        // Group commit: take everything already queued (up to a bound) into one transaction.
        while let Some(job) = next.take() {
            match job {
                Job::Batch {
                    filter,
                    records,
                    reply,
                } => {
                    queued_records += records.len();
                    batches.push((filter, records, reply));
                }
                Job::Prune { before_ms, reply } => {
                    let _ = reply.send(prune(&conn, before_ms));
                }
                Job::Close => {
                    closing = true;
                    break;
                }
            }
            if queued_records < max_group_records {
                next = rx.try_recv().ok();
            }
        }
        if !batches.is_empty() {
            let started = Instant::now();
            let result = commit_group(&mut conn, &batches);
            metrics.observe_commit(started.elapsed().as_secs_f64());
            match result {
                Ok(outcomes) => {
                    for ((_, _, reply), outcome) in batches.into_iter().zip(outcomes) {
                        let _ = reply.send(Ok(outcome));
                    }
                }
                Err(e) => {
                    tracing::error!(error = %e, "record store commit failed");
                    for (_, _, reply) in batches {
                        let _ = reply.send(Err(Error::Storage(e.to_string())));
                    }
                }
            }
        }
        if closing {
            break;
        }
    }
    tracing::debug!("record store writer stopped");
}

type QueuedBatch = (
    FilterIdentity,
    Arc<Vec<AccessRecord>>,
    oneshot::Sender<Result<BatchOutcome, Error>>,
);

fn commit_group(
    conn: &mut Connection,
    batches: &[QueuedBatch],
) -> Result<Vec<BatchOutcome>, Error> {
    let tx = conn.transaction()?;
    let mut outcomes = Vec::with_capacity(batches.len());
    {
        let mut stmt = tx.prepare_cached(INSERT)?;
        let received = crate::time::now_ms();
        for (filter, records, _) in batches {
            let mut outcome = BatchOutcome::default();
            for r in records.iter() {
                if insert_record(&mut stmt, filter, r, received)? {
                    outcome.accepted += 1;
                } else {
                    outcome.duplicates += 1;
                }
            }
            outcomes.push(outcome);
        }
    }
    tx.commit()?;
    Ok(outcomes)
}

fn saturating_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn json_or_null<T: serde::Serialize>(value: &T, empty: bool) -> Option<String> {
    if empty {
        None
    } else {
        serde_json::to_string(value).ok()
    }
}

/// The API name of a principal source.
pub fn principal_source_name(v: i32) -> Option<&'static str> {
    match PrincipalSource::try_from(v).ok()? {
        PrincipalSource::Unspecified => None,
        PrincipalSource::Jwt => Some("jwt"),
        PrincipalSource::Mtls => Some("mtls"),
        PrincipalSource::BasicAuth => Some("basic_auth"),
        PrincipalSource::ApiKey => Some("api_key"),
        PrincipalSource::ExtAuthz => Some("ext_authz"),
    }
}

/// The API name of a verdict.
pub fn verdict_name(v: i32) -> Option<&'static str> {
    match Verdict::try_from(v).ok()? {
        Verdict::Unspecified => None,
        Verdict::Allow => Some("allow"),
        Verdict::Deny => Some("deny"),
    }
}

/// The API name of a mechanism.
pub fn mechanism_name(v: i32) -> Option<&'static str> {
    match Mechanism::try_from(v).ok()? {
        Mechanism::Unspecified => None,
        Mechanism::None => Some("none"),
        Mechanism::JwtAuthn => Some("jwt_authn"),
        Mechanism::Rbac => Some("rbac"),
        Mechanism::ExtAuthz => Some("ext_authz"),
        Mechanism::BasicAuth => Some("basic_auth"),
        Mechanism::WardenDenyList => Some("warden_deny_list"),
        Mechanism::Upstream => Some("upstream"),
    }
}

/// The API name of a deny kind.
pub fn deny_kind_name(v: i32) -> Option<&'static str> {
    match DenyKind::try_from(v).ok()? {
        DenyKind::Unspecified => None,
        DenyKind::Authentication => Some("authentication"),
        DenyKind::Authorization => Some("authorization"),
        DenyKind::Blocked => Some("blocked"),
        DenyKind::Throttled => Some("throttled"),
    }
}

/// Inserts one record; `Ok(false)` when it was already stored.
fn insert_record(
    stmt: &mut rusqlite::CachedStatement<'_>,
    f: &FilterIdentity,
    r: &AccessRecord,
    received_ms: i64,
) -> Result<bool, Error> {
    let client_ip = r.client_address.parse::<IpAddr>().ok().map(ip_key);
    let p = r.principal.as_ref();
    let d = r.decision.as_ref();
    let principal_name = p.map(|p| p.name.as_str()).filter(|n| !n.is_empty());
    let audiences = p.and_then(|p| json_or_null(&p.audiences, p.audiences.is_empty()));
    let claims = p.and_then(|p| {
        let sorted: BTreeMap<_, _> = p.claims.iter().collect();
        json_or_null(&sorted, sorted.is_empty())
    });
    let headers = {
        let sorted: BTreeMap<_, _> = r.captured_headers.iter().collect();
        json_or_null(&sorted, sorted.is_empty())
    };
    let empty = "";
    let changed = stmt.execute(params![
        f.node_id,
        f.worker,
        f.instance_id,
        saturating_i64(r.sequence),
        r.time_ms,
        r.request_id,
        r.client_address,
        client_ip.as_ref().map(|k| &k[..]),
        r.client_port,
        r.x_forwarded_for,
        r.tls_sni,
        r.tls_version,
        r.authority.to_ascii_lowercase(),
        r.method,
        r.path,
        r.protocol,
        r.status,
        r.response_code_details,
        r.response_flags,
        r.route_name,
        r.upstream_cluster,
        r.upstream_host,
        saturating_i64(r.duration_us),
        saturating_i64(r.request_bytes),
        saturating_i64(r.response_bytes),
        r.user_agent,
        principal_name,
        p.and_then(|p| principal_source_name(p.source)),
        p.map_or(empty, |p| p.issuer.as_str()),
        audiences,
        claims,
        p.map_or(empty, |p| p.cert_uri_san.as_str()),
        p.map_or(empty, |p| p.cert_dns_san.as_str()),
        p.map_or(empty, |p| p.cert_subject.as_str()),
        p.map_or(empty, |p| p.cert_fingerprint.as_str()),
        d.and_then(|d| verdict_name(d.verdict)),
        d.and_then(|d| mechanism_name(d.mechanism)),
        d.and_then(|d| deny_kind_name(d.deny_kind)),
        d.map_or(empty, |d| d.reason.as_str()),
        d.map_or(empty, |d| d.policy.as_str()),
        d.map_or(0, |d| saturating_i64(d.warden_decision_id)),
        headers,
        received_ms,
    ])?;
    Ok(changed == 1)
}

fn prune(conn: &Connection, before_ms: i64) -> Result<usize, Error> {
    // Small slices keep each write lock short; the caller loops until nothing is left.
    let n = conn.execute(
        "DELETE FROM records WHERE id IN (SELECT id FROM records WHERE time_ms < ?1 LIMIT 10000)",
        [before_ms],
    )?;
    Ok(n)
}

fn u64_col(row: &rusqlite::Row<'_>, i: usize) -> rusqlite::Result<u64> {
    Ok(u64::try_from(row.get::<_, i64>(i)?).unwrap_or(0))
}

fn json_col<T: serde::de::DeserializeOwned + Default>(
    row: &rusqlite::Row<'_>,
    i: usize,
) -> rusqlite::Result<T> {
    let text: Option<String> = row.get(i)?;
    Ok(text
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or_default())
}

/// Maps a row selected with [`RECORD_COLUMNS`] to a [`StoredRecord`].
pub fn row_to_record(row: &rusqlite::Row<'_>) -> rusqlite::Result<StoredRecord> {
    let time_ms: i64 = row.get(1)?;
    Ok(StoredRecord {
        sequence: u64_col(row, 0)?,
        time_ms,
        time: crate::time::rfc3339(time_ms),
        request_id: row.get(2)?,
        client_address: row.get(3)?,
        client_port: row.get(4)?,
        x_forwarded_for: row.get(5)?,
        tls_sni: row.get(6)?,
        tls_version: row.get(7)?,
        authority: row.get(8)?,
        method: row.get(9)?,
        path: row.get(10)?,
        protocol: row.get(11)?,
        status: row.get(12)?,
        response_code_details: row.get(13)?,
        response_flags: row.get(14)?,
        route_name: row.get(15)?,
        upstream_cluster: row.get(16)?,
        upstream_host: row.get(17)?,
        duration_us: u64_col(row, 18)?,
        request_bytes: u64_col(row, 19)?,
        response_bytes: u64_col(row, 20)?,
        user_agent: row.get(21)?,
        principal: row.get(22)?,
        principal_source: row.get(23)?,
        principal_issuer: row.get(24)?,
        principal_audiences: json_col(row, 25)?,
        principal_claims: json_col(row, 26)?,
        cert_uri_san: row.get(27)?,
        cert_dns_san: row.get(28)?,
        cert_subject: row.get(29)?,
        cert_fingerprint: row.get(30)?,
        decision: row.get(31)?,
        mechanism: row.get(32)?,
        deny_kind: row.get(33)?,
        reason: row.get(34)?,
        policy: row.get(35)?,
        warden_decision_id: u64_col(row, 36)?,
        captured_headers: json_col(row, 37)?,
        filter_node: row.get(38)?,
        filter_worker: row.get(39)?,
        filter_instance: row.get(40)?,
    })
}

/// Deletes records older than `retention` once an hour (and once at start).
pub async fn retention_task(
    store: Arc<Store>,
    retention: std::time::Duration,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    if retention.is_zero() {
        return;
    }
    let retention_ms = i64::try_from(retention.as_millis()).unwrap_or(i64::MAX);
    loop {
        let before = crate::time::now_ms().saturating_sub(retention_ms);
        let mut total = 0usize;
        loop {
            match store.prune(before).await {
                Ok(0) => break,
                Ok(n) => total += n,
                Err(e) => {
                    tracing::warn!(error = %e, "retention pruning failed");
                    break;
                }
            }
        }
        if total > 0 {
            tracing::info!(
                deleted = total,
                "deleted records older than the retention period"
            );
        }
        tokio::select! {
            _ = tokio::time::sleep(std::time::Duration::from_secs(3600)) => {}
            _ = stop.changed() => return,
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::query::{DecisionFilter, StatusFilter};
    use crate::time::TimeBound;
    use warden_proto::pb::{AuthDecision, Principal};

    pub(crate) fn filter() -> FilterIdentity {
        FilterIdentity {
            node_id: "envoy-1".into(),
            worker: 0,
            instance_id: "i-1".into(),
            filter_version: "0.1.0".into(),
        }
    }

    pub(crate) fn record(seq: u64, time_ms: i64) -> AccessRecord {
        AccessRecord {
            sequence: seq,
            time_ms,
            request_id: format!("req-{seq}"),
            client_address: "203.0.113.7".into(),
            client_port: 40000,
            authority: "app.example.com".into(),
            method: "GET".into(),
            path: "/api/items".into(),
            protocol: "HTTP/1.1".into(),
            status: 200,
            duration_us: 1500,
            ..Default::default()
        }
    }

    async fn open(dir: &Path) -> Store {
        Store::open(
            dir,
            Synchronous::Full,
            100_000,
            Arc::new(Metrics::default()),
        )
        .unwrap()
    }

    fn all() -> RecordQuery {
        RecordQuery {
            limit: 1000,
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn acknowledged_batches_are_readable_after_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path()).await;
        let out = store
            .write_batch(filter(), vec![record(1, 1000), record(2, 2000)])
            .await
            .unwrap();
        assert_eq!(
            out,
            BatchOutcome {
                accepted: 2,
                duplicates: 0
            }
        );
        store.close().await;
        drop(store);
        let store = open(dir.path()).await;
        let got = store.query_records(all()).await.unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].sequence, 2, "newest first");
        assert_eq!(got[0].time, "1970-01-01T00:00:02.000Z");
        assert_eq!(got[0].filter_node, "envoy-1");
    }

    #[tokio::test]
    async fn a_retried_batch_is_stored_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path()).await;
        store
            .write_batch(filter(), vec![record(1, 1000), record(2, 1000)])
            .await
            .unwrap();
        let out = store
            .write_batch(
                filter(),
                vec![record(1, 1000), record(2, 1000), record(3, 1000)],
            )
            .await
            .unwrap();
        assert_eq!(
            out,
            BatchOutcome {
                accepted: 1,
                duplicates: 2
            }
        );
        // Another VM's sequence 1 is a different record.
        let mut other = filter();
        other.worker = 1;
        let out = store
            .write_batch(other, vec![record(1, 1000)])
            .await
            .unwrap();
        assert_eq!(out.accepted, 1);
        assert_eq!(store.query_records(all()).await.unwrap().len(), 4);
    }

    #[tokio::test]
    async fn writes_after_close_fail_as_shutting_down() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path()).await;
        store.close().await;
        let err = store
            .write_batch(filter(), vec![record(1, 1)])
            .await
            .unwrap_err();
        assert_eq!(err.grpc_code(), tonic::Code::Unavailable);
    }

    #[tokio::test]
    async fn principal_decision_and_maps_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path()).await;
        let mut r = record(1, 1000);
        r.principal = Some(Principal {
            source: PrincipalSource::Jwt as i32,
            name: "alice".into(),
            issuer: "https://idp".into(),
            audiences: vec!["api".into()],
            claims: [("email".to_string(), "a@x".to_string())].into(),
            ..Default::default()
        });
        r.decision = Some(AuthDecision {
            verdict: Verdict::Deny as i32,
            mechanism: Mechanism::JwtAuthn as i32,
            deny_kind: DenyKind::Authentication as i32,
            reason: "jwt_authn_access_denied{Jwt is expired}".into(),
            ..Default::default()
        });
        r.captured_headers = [("x-tenant".to_string(), "t1".to_string())].into();
        store.write_batch(filter(), vec![r]).await.unwrap();
        let got = &store.query_records(all()).await.unwrap()[0];
        assert_eq!(got.principal.as_deref(), Some("alice"));
        assert_eq!(got.principal_source.as_deref(), Some("jwt"));
        assert_eq!(got.principal_audiences, vec!["api".to_string()]);
        assert_eq!(
            got.principal_claims.get("email").map(String::as_str),
            Some("a@x")
        );
        assert_eq!(got.decision.as_deref(), Some("deny"));
        assert_eq!(got.mechanism.as_deref(), Some("jwt_authn"));
        assert_eq!(got.deny_kind.as_deref(), Some("authentication"));
        assert_eq!(
            got.captured_headers.get("x-tenant").map(String::as_str),
            Some("t1")
        );
        let plain = record(2, 1000);
        store.write_batch(filter(), vec![plain]).await.unwrap();
        let got = store
            .query_records(RecordQuery { limit: 1, ..all() })
            .await
            .unwrap();
        assert_eq!(got[0].principal, None);
        assert_eq!(got[0].decision, None);
    }

    #[tokio::test]
    async fn each_filter_narrows_the_query() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path()).await;
        let now = crate::time::now_ms();
        let mut rs = Vec::new();
        for i in 1..=6u64 {
            rs.push(record(i, now - 1000 * i64::try_from(i).unwrap()));
        }
        rs[0].client_address = "10.1.2.3".into();
        rs[1].client_address = "2001:db8::5".into();
        rs[2].authority = "other.example.com:8443".into();
        rs[3].path = "/admin/users".into();
        rs[4].status = 404;
        rs[5].method = "POST".into();
        rs[5].principal = Some(Principal {
            name: "bob".into(),
            ..Default::default()
        });
        rs[5].decision = Some(AuthDecision {
            verdict: Verdict::Deny as i32,
            ..Default::default()
        });
        rs[5].time_ms = now - 3_600_000 * 2;
        store.write_batch(filter(), rs).await.unwrap();
        let count = |q: RecordQuery| {
            let store = &store;
            async move {
                store
                    .query_records(q)
                    .await
                    .unwrap()
                    .into_iter()
                    .map(|r| r.sequence)
                    .collect::<Vec<_>>()
            }
        };
        assert_eq!(
            count(RecordQuery {
                ip: Some("10.0.0.0/8".parse().unwrap()),
                ..all()
            })
            .await,
            vec![1]
        );
        assert_eq!(
            count(RecordQuery {
                ip: Some("2001:db8::/32".parse().unwrap()),
                ..all()
            })
            .await,
            vec![2]
        );
        assert_eq!(
            count(RecordQuery {
                ip: Some("203.0.113.7".parse().unwrap()),
                ..all()
            })
            .await,
            vec![3, 4, 5, 6]
        );
        assert_eq!(
            count(RecordQuery {
                host: Some("other.example.com".into()),
                ..all()
            })
            .await,
            vec![3]
        );
        assert_eq!(
            count(RecordQuery {
                path_prefix: Some("/admin".into()),
                ..all()
            })
            .await,
            vec![4]
        );
        assert_eq!(
            count(RecordQuery {
                status: Some(StatusFilter::Class(4)),
                ..all()
            })
            .await,
            vec![5]
        );
        assert_eq!(
            count(RecordQuery {
                status: Some(StatusFilter::Code(200)),
                ..all()
            })
            .await,
            vec![1, 2, 3, 4, 6]
        );
        assert_eq!(
            count(RecordQuery {
                method: Some("POST".into()),
                ..all()
            })
            .await,
            vec![6]
        );
        assert_eq!(
            count(RecordQuery {
                principal: Some("bob".into()),
                ..all()
            })
            .await,
            vec![6]
        );
        assert_eq!(
            count(RecordQuery {
                decision: Some(DecisionFilter::Deny),
                ..all()
            })
            .await,
            vec![6]
        );
        let hour = TimeBound::Ago(std::time::Duration::from_secs(3600));
        assert_eq!(
            count(RecordQuery {
                since: Some(hour),
                ..all()
            })
            .await,
            vec![1, 2, 3, 4, 5]
        );
        assert_eq!(
            count(RecordQuery {
                until: Some(hour),
                ..all()
            })
            .await,
            vec![6]
        );
        assert_eq!(count(RecordQuery { limit: 2, ..all() }).await, vec![1, 2]);
    }

    #[tokio::test]
    async fn prune_deletes_only_old_records() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path()).await;
        store
            .write_batch(filter(), vec![record(1, 1000), record(2, 5000)])
            .await
            .unwrap();
        assert_eq!(store.prune(2000).await.unwrap(), 1);
        assert_eq!(store.query_records(all()).await.unwrap().len(), 1);
    }
}
