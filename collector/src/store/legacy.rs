//! One-time upgrade of a warden 0.1 data directory: the `records` table of `warden.db` (one row
//! per record) is moved into blocks in `records.db` when the store opens (attached as `legacy`).
//! Blocks and sequences commit together, and a record whose sequence is already known is not
//! moved again, so a crash at any point loses nothing and duplicates nothing.

use super::block::{BLOCK_RECORDS, EncodedBlock};
use super::sequences::{FilterKey, SequenceLog};
use crate::error::Error;
use crate::query::{deny_kind_name, mechanism_name, principal_source_name, verdict_name};
use rusqlite::{Connection, Row};
use std::collections::HashSet;
use warden_proto::pb::{AccessRecord, AuthDecision, FilterIdentity, Principal};

/// The columns read, in [`row_to_record`] order.
const COLUMNS: &str = "filter_node, filter_worker, filter_instance, sequence, time_ms, request_id,
    client_address, client_port, x_forwarded_for, tls_sni, tls_version, authority, method, path,
    protocol, status, response_code_details, response_flags, route_name, upstream_cluster,
    upstream_host, duration_us, request_bytes, response_bytes, user_agent, principal,
    principal_source, principal_issuer, principal_audiences, principal_claims, cert_uri_san,
    cert_dns_san, cert_subject, cert_fingerprint, decision, mechanism, deny_kind, reason, policy,
    warden_decision_id, captured_headers, received_ms";

/// Whether the attached `legacy` database still has the 0.1 `records` table.
pub fn needs_migration(conn: &Connection) -> Result<bool, Error> {
    let n: i64 = conn.query_row(
        "SELECT COUNT(*) FROM legacy.sqlite_master WHERE type = 'table' AND name = 'records'",
        [],
        |r| r.get(0),
    )?;
    Ok(n > 0)
}

/// Moves every row of `legacy.records` not yet known to `sequences` into blocks (via
/// `store_block`, inside the caller's transaction) and marks its sequence. Returns the number of
/// records moved and the identities touched.
pub fn migrate(
    conn: &Connection,
    sequences: &mut SequenceLog,
    mut store_block: impl FnMut(&EncodedBlock, i64) -> Result<(), Error>,
) -> Result<(usize, HashSet<FilterKey>), Error> {
    let mut stmt = conn.prepare(&format!("SELECT {COLUMNS} FROM legacy.records ORDER BY id"))?;
    let mut rows = stmt.query([])?;
    let mut moved = 0usize;
    let mut touched = HashSet::new();
    let mut chunk: Vec<(FilterIdentity, AccessRecord, i64)> = Vec::with_capacity(BLOCK_RECORDS);
    loop {
        let row = rows.next()?;
        if let Some(row) = row {
            chunk.push(row_to_record(row)?);
        }
        if chunk.len() == BLOCK_RECORDS || (row.is_none() && !chunk.is_empty()) {
            let mut group = super::Gathered::default();
            let mut received_ms = i64::MAX;
            for (filter, record, received) in &chunk {
                let key = FilterKey::of(filter);
                if sequences.accept(&key, &[record.sequence]) != [true] {
                    continue;
                }
                touched.insert(key);
                let index = group.filter(filter);
                group.entries.push((index, record));
                received_ms = received_ms.min(*received);
                moved += 1;
            }
            for block in group.encode() {
                store_block(&block, received_ms)?;
            }
            chunk.clear();
        }
        if row.is_none() {
            break;
        }
    }
    Ok((moved, touched))
}

/// Finds the proto enum value whose API name is `name`.
fn value_named(name: Option<String>, name_of: fn(i32) -> Option<&'static str>) -> i32 {
    name.and_then(|n| (0..32).find(|v| name_of(*v) == Some(n.as_str())))
        .unwrap_or(0)
}

fn json<T: serde::de::DeserializeOwned + Default>(text: Option<String>) -> T {
    text.and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or_default()
}

fn u64_at(row: &Row<'_>, i: usize) -> rusqlite::Result<u64> {
    Ok(u64::try_from(row.get::<_, i64>(i)?).unwrap_or(0))
}

/// Rebuilds the record (and its filter identity and arrival time) from a 0.1 row.
fn row_to_record(row: &Row<'_>) -> Result<(FilterIdentity, AccessRecord, i64), Error> {
    let filter = FilterIdentity {
        node_id: row.get(0)?,
        worker: row.get(1)?,
        instance_id: row.get(2)?,
        filter_version: String::new(),
    };
    let principal_name: Option<String> = row.get(25)?;
    let principal_source = value_named(row.get(26)?, principal_source_name);
    let issuer: String = row.get(27)?;
    let audiences: Vec<String> = json(row.get(28)?);
    let claims: std::collections::HashMap<String, String> = json(row.get(29)?);
    let certs: [String; 4] = [row.get(30)?, row.get(31)?, row.get(32)?, row.get(33)?];
    let has_principal = principal_name.is_some()
        || principal_source != 0
        || !issuer.is_empty()
        || !audiences.is_empty()
        || !claims.is_empty()
        || certs.iter().any(|c| !c.is_empty());
    let [cert_uri_san, cert_dns_san, cert_subject, cert_fingerprint] = certs;
    let principal = has_principal.then(|| Principal {
        source: principal_source,
        name: principal_name.unwrap_or_default(),
        issuer,
        audiences,
        claims,
        cert_uri_san,
        cert_dns_san,
        cert_subject,
        cert_fingerprint,
    });
    let verdict = value_named(row.get(34)?, verdict_name);
    let mechanism = value_named(row.get(35)?, mechanism_name);
    let deny_kind = value_named(row.get(36)?, deny_kind_name);
    let reason: String = row.get(37)?;
    let policy: String = row.get(38)?;
    let warden_decision_id = u64_at(row, 39)?;
    let has_decision = verdict != 0
        || mechanism != 0
        || deny_kind != 0
        || !reason.is_empty()
        || !policy.is_empty()
        || warden_decision_id != 0;
    let decision = has_decision.then_some(AuthDecision {
        verdict,
        mechanism,
        deny_kind,
        reason,
        policy,
        warden_decision_id,
    });
    let record = AccessRecord {
        sequence: u64_at(row, 3)?,
        time_ms: row.get(4)?,
        request_id: row.get(5)?,
        client_address: row.get(6)?,
        client_port: row.get(7)?,
        x_forwarded_for: row.get(8)?,
        tls_sni: row.get(9)?,
        tls_version: row.get(10)?,
        authority: row.get(11)?,
        method: row.get(12)?,
        path: row.get(13)?,
        protocol: row.get(14)?,
        status: row.get(15)?,
        response_code_details: row.get(16)?,
        response_flags: row.get(17)?,
        route_name: row.get(18)?,
        upstream_cluster: row.get(19)?,
        upstream_host: row.get(20)?,
        duration_us: u64_at(row, 21)?,
        request_bytes: u64_at(row, 22)?,
        response_bytes: u64_at(row, 23)?,
        user_agent: row.get(24)?,
        principal,
        decision,
        captured_headers: json(row.get(40)?),
        claimed_user: String::new(),
    };
    Ok((filter, record, row.get(41)?))
}

#[cfg(test)]
mod tests {
    use crate::config::Synchronous;
    use crate::db::{MAIN_DB_FILE, open_connection};
    use crate::metrics::Metrics;
    use crate::query::RecordQuery;
    use crate::store::Store;
    use std::sync::Arc;

    /// The warden 0.1 table, as it was created.
    const V01_SCHEMA: &str = "
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
";

    #[tokio::test]
    async fn a_0_1_database_is_moved_into_blocks_with_nothing_lost() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(MAIN_DB_FILE);
        let conn = open_connection(&path, Synchronous::Normal).unwrap();
        conn.execute_batch(V01_SCHEMA).unwrap();
        let rows =
            "INSERT INTO records (filter_node, filter_worker, filter_instance, sequence, time_ms,
                request_id, client_address, client_port, x_forwarded_for, tls_sni, tls_version,
                authority, method, path, protocol, status, response_code_details, response_flags,
                route_name, upstream_cluster, upstream_host, duration_us, request_bytes,
                response_bytes, user_agent, principal, principal_source, principal_issuer,
                principal_audiences, principal_claims, cert_uri_san, cert_dns_san, cert_subject,
                cert_fingerprint, decision, mechanism, deny_kind, reason, policy,
                warden_decision_id, captured_headers, received_ms)
             VALUES
               ('envoy-1', 0, 'i-1', 1, 1000, 'r1', '10.0.0.1', 4000, '', '', '', 'app', 'GET',
                '/admin', 'HTTP/1.1', 401, 'jwt_authn_access_denied', '', 'r', 'c', '', 10, 1, 2,
                'curl', NULL, NULL, '', NULL, NULL, '', '', '', '', 'deny', 'jwt_authn',
                'authentication', 'Jwt is expired', '', 0, '{\"x-tenant\":\"t1\"}', 1001),
               ('envoy-1', 0, 'i-1', 2, 2000, 'r2', '10.0.0.1', 4001, '', '', '', 'app', 'GET',
                '/admin', 'HTTP/1.1', 200, 'via_upstream', '', 'r', 'c', 'u', 10, 1, 2,
                'curl', 'alice', 'jwt', 'https://idp', '[\"api\"]', '{\"email\":\"a@x\"}',
                '', '', '', '', 'allow', 'jwt_authn', NULL, '', 'p', 0, NULL, 2001);";
        conn.execute_batch(rows).unwrap();
        drop(conn);
        let open_store = || {
            Store::open(
                dir.path(),
                Synchronous::Normal,
                1000,
                Arc::new(Metrics::default()),
            )
            .unwrap()
        };

        let store = open_store();
        let got = store
            .query_records(RecordQuery {
                limit: 10,
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(got.len(), 2);
        let (alice, denied) = (&got[0], &got[1]);
        assert_eq!(alice.principal.as_deref(), Some("alice"));
        assert_eq!(alice.principal_source.as_deref(), Some("jwt"));
        assert_eq!(alice.principal_audiences, vec!["api".to_string()]);
        assert_eq!(alice.principal_claims["email"], "a@x");
        assert_eq!(alice.decision.as_deref(), Some("allow"));
        assert_eq!(alice.policy, "p");
        assert_eq!(denied.principal, None);
        assert_eq!(denied.deny_kind.as_deref(), Some("authentication"));
        assert_eq!(denied.reason, "Jwt is expired");
        assert_eq!(denied.captured_headers["x-tenant"], "t1");
        assert_eq!(denied.filter_node, "envoy-1");
        // The old table is gone and its sequences still recognise a retry.
        let out = store
            .write_batch(
                warden_proto::pb::FilterIdentity {
                    node_id: "envoy-1".into(),
                    worker: 0,
                    instance_id: "i-1".into(),
                    filter_version: String::new(),
                },
                vec![warden_proto::pb::AccessRecord {
                    sequence: 2,
                    time_ms: 2000,
                    ..Default::default()
                }],
            )
            .await
            .unwrap();
        assert_eq!(out.duplicates, 1);
        store.close().await;
        drop(store);
        let has_table = |conn: &rusqlite::Connection| -> i64 {
            conn.query_row(
                "SELECT COUNT(*) FROM sqlite_master WHERE name = 'records'",
                [],
                |r| r.get(0),
            )
            .unwrap()
        };
        let conn = open_connection(&path, Synchronous::Normal).unwrap();
        assert_eq!(has_table(&conn), 0, "the 0.1 table is dropped");

        // A crash after the move committed but before the drop: the table is back, and the
        // next start moves nothing twice.
        conn.execute_batch(V01_SCHEMA).unwrap();
        conn.execute_batch(rows).unwrap();
        drop(conn);
        let store = open_store();
        let all = RecordQuery {
            limit: 10,
            ..Default::default()
        };
        assert_eq!(store.query_records(all).await.unwrap().len(), 2);
        store.close().await;
        let conn = open_connection(&path, Synchronous::Normal).unwrap();
        assert_eq!(has_table(&conn), 0);
    }
}
