//! `changes.db`: the change records, the last known state of each audited object (for the next
//! change's diff), and the Secrets that ingress objects name as their certificates. One writer
//! thread owns the connection, so the snapshots a batch reads are those its own earlier events
//! wrote; readers use their own connections.

use crate::config::Synchronous;
use crate::db::open_connection;
use crate::error::Error;
use crate::security::credentials::Pattern;
use crate::time::{now_ms, rfc3339};
use rusqlite::{Connection, OptionalExtension, params};
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::path::Path;
use std::sync::{Arc, mpsc};
use tokio::sync::oneshot;
use warden_k8s_audit::{
    ChangeRecord, DropReason, Event, KeepDecision, KeepList, ObjectKey, Snapshot, change_record,
};
use warden_rules::{ChangeFacts, RuleSet};

/// The change database inside the data directory.
pub const CHANGES_DB_FILE: &str = "changes.db";

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS k8s_changes (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    -- What makes a retried event the same event (see `dedupe_key`).
    dedupe_key TEXT NOT NULL UNIQUE,
    audit_id TEXT NOT NULL,
    stage TEXT NOT NULL,
    time_ms INTEGER NOT NULL,
    received_ms INTEGER NOT NULL,
    namespace TEXT NOT NULL,
    record TEXT NOT NULL,
    findings TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS k8s_changes_time ON k8s_changes (time_ms);
CREATE INDEX IF NOT EXISTS k8s_changes_audit_id ON k8s_changes (audit_id, stage);
CREATE TABLE IF NOT EXISTS k8s_objects (
    api_group TEXT NOT NULL,
    resource TEXT NOT NULL,
    namespace TEXT NOT NULL,
    name TEXT NOT NULL,
    -- NULL once the object was deleted (a tombstone, so that a late event cannot bring it back).
    snapshot TEXT,
    -- The time of the change that produced it (not when it was received).
    updated_ms INTEGER NOT NULL,
    PRIMARY KEY (api_group, resource, namespace, name)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS k8s_tls_secrets (
    namespace TEXT NOT NULL,
    name TEXT NOT NULL,
    PRIMARY KEY (namespace, name)
) WITHOUT ROWID;
";

/// Stages after which the API server has answered: change rules are evaluated on these only,
/// so a change logged at both `RequestReceived` and `ResponseComplete` alerts once.
const FINAL_STAGES: [&str; 2] = ["ResponseComplete", "Panic"];

/// One condition of a `change` rule that held on a change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Finding {
    /// The rule's name.
    pub rule: String,
    /// The condition that held (`allowed_users`, `listener_without_tls`, ...).
    pub condition: String,
    /// The rule is in dry-run: recorded and reported, flagged as such.
    pub dry_run: bool,
    /// What held, in one line.
    pub reason: String,
}

/// A stored change record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct StoredChange {
    /// Row id, increasing in storage order.
    pub id: i64,
    /// When the change happened (the event's stage time), RFC 3339.
    pub time: String,
    /// When Warden stored it, RFC 3339.
    pub received: String,
    /// Who changed what, and the summary of the change.
    pub change: ChangeRecord,
    /// Findings of the change rules in force when it was stored.
    pub findings: Vec<Finding>,
}

impl StoredChange {
    /// The fields an alert about this change carries.
    pub fn alert_context(&self) -> serde_json::Value {
        let c = &self.change;
        serde_json::json!({
            "id": self.id,
            "audit_id": c.audit_id,
            "time": self.time,
            "user": c.effective_user(),
            "verb": c.verb,
            "api_group": c.api_group,
            "resource": c.resource,
            "namespace": c.namespace,
            "name": c.name,
            "outcome": c.outcome,
            "response_code": c.response_code,
        })
    }

    /// Hosts the change touched, lower-case: the object's hosts, those added and removed, and
    /// its TLS hosts.
    pub fn hosts(&self) -> impl Iterator<Item = &str> {
        let s = &self.change.summary;
        s.hosts
            .iter()
            .chain(&s.hosts_added)
            .chain(&s.hosts_removed)
            .chain(&s.tls_hosts)
            .map(String::as_str)
    }
}

/// What the writer did with one body.
#[derive(Debug, Default)]
pub struct BatchOutcome {
    /// The records stored, with their findings.
    pub stored: Vec<StoredChange>,
    /// Events already stored.
    pub duplicates: usize,
    /// Events dropped, in the order of [`DropReason::ALL`].
    pub dropped: [usize; 4],
}

/// Work for the writer thread.
pub enum Job {
    /// Store the kept events of one body.
    Ingest(Vec<Event>, oneshot::Sender<Result<BatchOutcome, Error>>),
    /// Delete changes recorded before this time.
    Prune(i64, oneshot::Sender<Result<usize, Error>>),
}

/// The writer: its connection, the keep list, and the TLS Secret names learnt so far.
pub struct Writer {
    conn: Connection,
    keep: KeepList,
    tls_secrets: HashSet<(String, String)>,
}

impl Writer {
    /// Opens `path`, creating the tables, and loads the TLS Secret names.
    pub fn open(path: &Path, sync: Synchronous, keep: KeepList) -> Result<Writer, Error> {
        let conn = open_connection(path, sync)?;
        conn.execute_batch(SCHEMA)?;
        let tls_secrets = {
            let mut stmt = conn.prepare("SELECT namespace, name FROM k8s_tls_secrets")?;
            stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect::<rusqlite::Result<HashSet<_>>>()?
        };
        Ok(Writer {
            conn,
            keep,
            tls_secrets,
        })
    }

    /// Serves jobs until the channel closes; `rules` gives the rules in force.
    pub fn run(mut self, rx: &mpsc::Receiver<Job>, rules: &dyn Fn() -> Arc<RuleSet>) {
        while let Ok(job) = rx.recv() {
            match job {
                Job::Ingest(events, done) => {
                    let rules = rules();
                    let result = self.store(&events, &rules);
                    drop(events);
                    if let Err(e) = &result {
                        tracing::error!(error = %e, "cannot store Kubernetes audit events");
                    }
                    let _ = done.send(result);
                }
                Job::Prune(before_ms, done) => {
                    let result = self
                        .conn
                        .execute(
                            "DELETE FROM k8s_changes WHERE time_ms < ?1",
                            params![before_ms],
                        )
                        .map_err(Error::from);
                    let _ = done.send(result);
                }
            }
        }
    }

    /// Stores one body's kept events in one transaction.
    fn store(&mut self, events: &[Event], rules: &RuleSet) -> Result<BatchOutcome, Error> {
        let mut out = BatchOutcome::default();
        let received_ms = now_ms();
        let tx = self.conn.transaction()?;
        // Secret names learnt in this transaction join the set only once it commits.
        let mut learnt: Vec<(String, String)> = Vec::new();
        for ev in events {
            let decision = {
                let known = |ns: &str, name: &str| {
                    let key = (ns.to_string(), name.to_string());
                    self.tls_secrets.contains(&key) || learnt.contains(&key)
                };
                self.keep.decide(ev, &known)
            };
            if let KeepDecision::Drop(reason) = decision {
                if let Some(i) = DropReason::ALL.iter().position(|r| *r == reason) {
                    out.dropped[i] += 1;
                }
                continue;
            }
            let key = ev.object_key();
            let previous = match &key {
                Some(k) => load_snapshot(&tx, k)?,
                None => None,
            };
            let event_ms = ev.stage_timestamp.or(ev.request_received_timestamp);
            // The API server sends batches concurrently and retries them: an event older than
            // the state on record is not diffed against that later state.
            let late = matches!((&previous, event_ms), (Some((_, at)), Some(t)) if t < *at);
            let base = match &previous {
                Some((snapshot, _)) if !late => snapshot.as_ref(),
                _ => None,
            };
            let (mut record, snapshot) = change_record(ev, base);
            if late {
                record
                    .summary
                    .notes
                    .push("arrived after a later change of this object: not diffed".into());
            }
            let dedupe = dedupe_key(&record);
            let known_tls = {
                let k = (record.namespace.clone(), record.name.clone());
                record.resource == "secrets"
                    && (self.tls_secrets.contains(&k) || learnt.contains(&k))
            };
            // Dry runs change nothing; the rules judge what happened (and attempts).
            let findings: Vec<Finding> =
                if FINAL_STAGES.contains(&record.stage.as_str()) && record.outcome != "dry_run" {
                    rules
                        .evaluate_change(&facts(&record, known_tls))
                        .into_iter()
                        .map(|f| Finding {
                            rule: f.rule,
                            condition: f.condition.to_string(),
                            dry_run: f.dry_run,
                            reason: f.reason,
                        })
                        .collect()
                } else {
                    Vec::new()
                };
            let record_json = serde_json::to_string(&record)
                .map_err(|e| Error::Storage(format!("cannot encode a change record: {e}")))?;
            let findings_json = serde_json::to_string(&findings)
                .map_err(|e| Error::Storage(format!("cannot encode findings: {e}")))?;
            // OR IGNORE: a retry is recognised by its key, and no event can fail the batch.
            let inserted = tx
                .prepare_cached(
                    "INSERT OR IGNORE INTO k8s_changes (dedupe_key, audit_id, stage, time_ms, received_ms, namespace, record, findings)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                )?
                .execute(params![
                    dedupe,
                    record.audit_id,
                    record.stage,
                    record.time_ms,
                    received_ms,
                    record.namespace,
                    record_json,
                    findings_json
                ])?;
            if inserted == 0 {
                out.duplicates += 1;
                continue;
            }
            let id = tx.last_insert_rowid();
            if let Some(k) = &key {
                update_snapshot(&tx, k, &record, snapshot.as_ref())?;
            }
            // Only applied changes teach names: a refused or dry-run change names what it wanted.
            let teaches = record.outcome == "applied";
            for secret in record.summary.tls_secrets.iter().filter(|_| teaches) {
                let (ns, name) = match secret.split_once('/') {
                    Some((ns, name)) => (ns.to_string(), name.to_string()),
                    None => (record.namespace.clone(), secret.clone()),
                };
                tx.prepare_cached(
                    "INSERT OR IGNORE INTO k8s_tls_secrets (namespace, name) VALUES (?1, ?2)",
                )?
                .execute(params![ns, name])?;
                learnt.push((ns, name));
            }
            out.stored.push(StoredChange {
                id,
                time: rfc3339(record.time_ms),
                received: rfc3339(received_ms),
                change: record,
                findings,
            });
        }
        tx.commit()?;
        self.tls_secrets.extend(learnt);
        Ok(out)
    }
}

/// The object's last known state and the time of the change that left it (`None` as the state
/// once the object was deleted).
fn load_snapshot(
    conn: &Connection,
    k: &ObjectKey,
) -> Result<Option<(Option<Snapshot>, i64)>, Error> {
    let row: Option<(Option<String>, i64)> = conn
        .prepare_cached(
            "SELECT snapshot, updated_ms FROM k8s_objects
             WHERE api_group = ?1 AND resource = ?2 AND namespace = ?3 AND name = ?4",
        )?
        .query_row(params![k.api_group, k.resource, k.namespace, k.name], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .optional()?;
    Ok(row.map(|(text, at)| {
        let snapshot = text
            .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
            .map(Snapshot);
        (snapshot, at)
    }))
}

/// What identifies one event across the API server's retries: its audit id and stage, and what
/// it says happened. The audit id alone comes from the client's `Audit-ID` header, so a client
/// reusing another event's id must not get its own change taken for a retry.
fn dedupe_key(r: &ChangeRecord) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    for part in [
        r.audit_id.as_str(),
        r.stage.as_str(),
        &r.time_ms.to_string(),
        r.verb.as_str(),
        r.user.as_str(),
        r.impersonated_user.as_deref().unwrap_or(""),
        r.api_group.as_str(),
        r.resource.as_str(),
        r.subresource.as_str(),
        r.namespace.as_str(),
        r.name.as_str(),
        &r.response_code.map(|c| c.to_string()).unwrap_or_default(),
    ] {
        h.update(part.as_bytes());
        h.update([0u8]);
    }
    crate::security::tls::hex(&h.finalize())
}

/// Keeps the object's new state: replaced when the event revealed it, removed when the object
/// was deleted, left as it was when the event did not show it (Metadata level, a refusal).
fn update_snapshot(
    conn: &Connection,
    k: &ObjectKey,
    record: &ChangeRecord,
    snapshot: Option<&Snapshot>,
) -> Result<(), Error> {
    // The API server sends batches concurrently and retries them, so events can arrive out of
    // order: a snapshot is replaced only by the state of a change that happened later.
    let at = record.time_ms;
    let deleted = record.verb == "delete" && record.outcome == "applied";
    let state = if deleted {
        None
    } else {
        match snapshot {
            Some(s) => Some(s.0.to_string()),
            None => return Ok(()),
        }
    };
    conn.prepare_cached(
        "INSERT INTO k8s_objects (api_group, resource, namespace, name, snapshot, updated_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)
         ON CONFLICT (api_group, resource, namespace, name)
         DO UPDATE SET snapshot = excluded.snapshot, updated_ms = excluded.updated_ms
         WHERE excluded.updated_ms >= k8s_objects.updated_ms",
    )?
    .execute(params![
        k.api_group,
        k.resource,
        k.namespace,
        k.name,
        state,
        at
    ])?;
    Ok(())
}

/// What the change rules see of a record. A Secret the ingress objects named as a certificate
/// counts as a TLS Secret even when the event (Metadata level) does not show its type.
pub fn facts(r: &ChangeRecord, known_tls_secret: bool) -> ChangeFacts {
    let s = &r.summary;
    let plugin = s.plugin.as_ref();
    ChangeFacts {
        time_ms: r.time_ms,
        user: r.effective_user().to_string(),
        authenticated_user: r.user.clone(),
        verb: r.verb.clone(),
        api_group: r.api_group.clone(),
        resource: r.resource.clone(),
        namespace: r.namespace.clone(),
        name: r.name.clone(),
        applied: r.outcome == "applied",
        listeners_without_tls: s.listeners_without_tls.clone(),
        auth_removed: s.auth_removed.clone(),
        secret_type: s
            .secret_type
            .clone()
            .or_else(|| known_tls_secret.then(|| "kubernetes.io/tls".to_string())),
        certificate_not_after_ms: s.certificate.as_ref().map(|c| c.not_after_ms),
        plugin_is_warden: plugin.is_some_and(|p| p.is_warden),
        plugin_removed: plugin.is_some_and(|p| p.removed),
        plugin_fail_open: plugin.is_some_and(|p| p.turned_fail_open),
        hosts_added: s.hosts_added.clone(),
    }
}

/// Filters of a change query; every one optional.
#[derive(Debug, Clone, Default)]
pub struct ChangeQuery {
    /// Changes at or after, ms since the epoch.
    pub since_ms: Option<i64>,
    /// Changes before, ms since the epoch.
    pub until_ms: Option<i64>,
    /// A resource as kubectl names it: plural, singular or kind (`ingresses`, `ingress`,
    /// `HTTPRoute`), optionally `.group`.
    pub resource: Option<String>,
    /// Exactly this namespace.
    pub namespace: Option<String>,
    /// The effective or authenticated user, `*` wildcards allowed.
    pub user: Option<Pattern>,
    /// A host the change touched (wildcard hosts of the change match it).
    pub host: Option<String>,
    /// With `host`: also changes that name no host at all (authorization policies, plugins,
    /// peer authentication apply to whatever their selector covers).
    pub include_hostless: bool,
    /// Also the `RequestReceived` rows of changes whose answer was logged too.
    pub all_stages: bool,
    /// Only changes with a finding.
    pub with_findings: bool,
    /// At most this many, newest first.
    pub limit: usize,
}

/// Whether `resource` (plural, lower-case, of `group`) is what the caller named.
pub fn resource_matches(wanted: &str, resource: &str, group: &str) -> bool {
    let wanted = wanted.to_ascii_lowercase();
    let (name, wanted_group) = match wanted.split_once('.') {
        Some((n, g)) => (n.to_string(), Some(g.to_string())),
        None => (wanted, None),
    };
    if wanted_group.is_some_and(|g| g != group) {
        return false;
    }
    let plural_y = name
        .strip_suffix('y')
        .map(|stem| format!("{stem}ies"))
        .unwrap_or_default();
    resource == name
        || resource == format!("{name}s")
        || resource == format!("{name}es")
        || resource == plural_y
}

/// Whether a host of a change (`*.example.com` included) covers the host asked about.
pub fn host_matches(change_host: &str, wanted: &str) -> bool {
    let change_host = change_host.to_ascii_lowercase();
    match change_host.strip_prefix("*.") {
        Some(suffix) => wanted
            .strip_suffix(suffix)
            .is_some_and(|head| head.ends_with('.') && head.len() > 1),
        None => change_host == wanted || change_host == "*",
    }
}

/// The host part of `host[:port]`, lower-case.
pub fn bare_host(host: &str) -> String {
    let h = host.trim().to_ascii_lowercase();
    if h.starts_with('[') {
        return h;
    }
    match h.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name.to_string(),
        _ => h,
    }
}

/// Stored changes matching `q`, newest first.
pub fn query(conn: &Connection, q: &ChangeQuery) -> Result<Vec<StoredChange>, Error> {
    let mut stmt = conn.prepare(
        "SELECT c.id, c.time_ms, c.received_ms, c.record, c.findings FROM k8s_changes c
         WHERE c.time_ms >= ?1 AND c.time_ms < ?2 AND (?3 IS NULL OR c.namespace = ?3)
           AND (?4 = 1 OR c.stage != 'RequestReceived' OR NOT EXISTS
                (SELECT 1 FROM k8s_changes l WHERE l.audit_id = c.audit_id AND l.stage != 'RequestReceived'))
           AND (?5 = 0 OR c.findings != '[]')
         ORDER BY c.time_ms DESC, c.id DESC",
    )?;
    let mut rows = stmt.query(params![
        q.since_ms.unwrap_or(i64::MIN),
        q.until_ms.unwrap_or(i64::MAX),
        q.namespace,
        i64::from(q.all_stages),
        i64::from(q.with_findings),
    ])?;
    let host = q.host.as_deref().map(bare_host);
    let mut out = Vec::new();
    while let Some(row) = rows.next()? {
        if out.len() >= q.limit {
            break;
        }
        let record: String = row.get(3)?;
        let Ok(change) = serde_json::from_str::<ChangeRecord>(&record) else {
            return Err(Error::Storage(format!(
                "change {} cannot be read back",
                row.get::<_, i64>(0)?
            )));
        };
        let findings: String = row.get(4)?;
        let stored = StoredChange {
            id: row.get(0)?,
            time: rfc3339(row.get(1)?),
            received: rfc3339(row.get(2)?),
            change,
            findings: serde_json::from_str(&findings).unwrap_or_default(),
        };
        let c = &stored.change;
        if q.resource
            .as_deref()
            .is_some_and(|r| !resource_matches(r, &c.resource, &c.api_group))
        {
            continue;
        }
        if q.user
            .as_ref()
            .is_some_and(|p| !p.matches(c.effective_user()) && !p.matches(&c.user))
        {
            continue;
        }
        if let Some(h) = host.as_deref() {
            let hostless = stored.hosts().next().is_none();
            if !(stored.hosts().any(|ch| host_matches(ch, h)) || q.include_hostless && hostless) {
                continue;
            }
        }
        out.push(stored);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resources_are_named_as_kubectl_does() {
        assert!(resource_matches(
            "ingress",
            "ingresses",
            "networking.k8s.io"
        ));
        assert!(resource_matches(
            "Ingresses",
            "ingresses",
            "networking.k8s.io"
        ));
        assert!(resource_matches(
            "HTTPRoute",
            "httproutes",
            "gateway.networking.k8s.io"
        ));
        assert!(resource_matches(
            "authorizationpolicy",
            "authorizationpolicies",
            "security.istio.io"
        ));
        assert!(resource_matches(
            "gateways.networking.istio.io",
            "gateways",
            "networking.istio.io"
        ));
        assert!(!resource_matches(
            "gateways.networking.istio.io",
            "gateways",
            "gateway.networking.k8s.io"
        ));
        assert!(!resource_matches(
            "ingress",
            "ingressclasses",
            "networking.k8s.io"
        ));
    }

    #[test]
    fn wildcard_hosts_cover_one_label_or_more() {
        assert!(host_matches("shop.example.com", "shop.example.com"));
        assert!(host_matches("SHOP.example.com", "shop.example.com"));
        assert!(host_matches("*.example.com", "shop.example.com"));
        assert!(!host_matches("*.example.com", "example.com"));
        assert!(!host_matches("*.example.com", "shopexample.com"));
        assert!(host_matches("*", "anything.example"));
        assert_eq!(bare_host("Shop.Example.com:8443"), "shop.example.com");
        assert_eq!(bare_host("[::1]:80"), "[::1]:80");
    }
}
