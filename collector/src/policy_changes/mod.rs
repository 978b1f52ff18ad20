//! Ingress policy-change auditing: the Kubernetes API server's audit webhook batches
//! (`POST /api/v1/k8s-audit`) become durable change records, evaluated by the `change` rules.
//!
//! The path of one body: the HTTP gate authenticates the API server (the `k8s-audit` role) and
//! bounds the body; [`warden_k8s_audit::parse_event_batch`] validates it (a body that is not an
//! EventList is refused whole, naming the problem, before anything is stored; an invalid item
//! alone, named in the answer); the writer thread ([`store`]) then, in one transaction, decides
//! for each event whether to keep it (the keep list; reads, status updates and unlisted kinds
//! are dropped and counted), builds the change record with its summary against the object's
//! previous snapshot (not diffed when the event is older than it), skips retries already stored
//! (by a key of the audit id, stage and what the event says happened), evaluates the change
//! rules on applied and refused changes at their final stage and stores the record with their
//! findings. The body is acknowledged only after that commit; the findings are then
//! announced through the alert webhooks and Alertmanager.
//!
//! Nothing of a Secret's data is stored: the records and snapshots are built by
//! `warden-k8s-audit`, which reads a TLS Secret's certificate for its fingerprint and expiry and
//! nothing else; the raw events are dropped after the commit.

pub mod spike;
pub mod store;

use crate::config::{K8sAuditConfig, Synchronous};
use crate::db::ReadPool;
use crate::detection::Detection;
use crate::detection::alerts::{Alerter, ChangeAlert};
use crate::error::Error;
use crate::metrics::Metrics;
use crate::time::now_ms;
use std::path::Path;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex, mpsc};
use store::{BatchOutcome, ChangeQuery, Job, StoredChange};
use tokio::sync::oneshot;
use warden_k8s_audit::{Event, KeepList};

pub use store::CHANGES_DB_FILE;

/// What one webhook body came to.
#[derive(
    Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema,
)]
pub struct IngestSummary {
    /// Events in the body.
    pub received: usize,
    /// Change records newly stored.
    pub stored: usize,
    /// Events already stored (the API server retried the body).
    pub duplicates: usize,
    /// Events not kept (reads, unlisted kinds, status updates, Secrets not known to be TLS).
    pub dropped: usize,
    /// Findings of change rules on the stored records.
    pub findings: usize,
    /// Events refused one by one (an invalid item never costs the others).
    pub rejected: usize,
    /// Why, for the first ten: `items[3].auditID: missing`.
    pub problems: Vec<String>,
}

/// The change log: its writer thread and read connections.
pub struct ChangeLog {
    tx: Mutex<Option<mpsc::Sender<Job>>>,
    reads: ReadPool,
    writer: Mutex<Option<std::thread::JoinHandle<()>>>,
    metrics: Arc<Metrics>,
    alerter: Alerter,
    config: K8sAuditConfig,
}

impl ChangeLog {
    /// Opens (creating) `changes.db` in `data_dir` and starts the writer. Change rules are
    /// taken from `detection` (the rules in force) for each body.
    pub fn open(
        data_dir: &Path,
        sync: Synchronous,
        config: &K8sAuditConfig,
        detection: Arc<Detection>,
        metrics: Arc<Metrics>,
        alerter: Alerter,
    ) -> Result<ChangeLog, Error> {
        let keep: KeepList = config
            .keep_list()
            .map_err(|e| Error::invalid("k8s_audit.keep", e))?;
        let path = data_dir.join(CHANGES_DB_FILE);
        let writer = store::Writer::open(&path, sync, keep)?;
        let (tx, rx) = mpsc::channel();
        let handle = std::thread::Builder::new()
            .name("warden-changes".into())
            .spawn(move || writer.run(&rx, &|| detection.rules_in_force()))
            .map_err(|e| Error::Storage(format!("cannot start the change-log writer: {e}")))?;
        Ok(ChangeLog {
            tx: Mutex::new(Some(tx)),
            reads: ReadPool::new(path),
            writer: Mutex::new(Some(handle)),
            metrics,
            alerter,
            config: config.clone(),
        })
    }

    /// The `[k8s_audit]` settings.
    pub fn config(&self) -> &K8sAuditConfig {
        &self.config
    }

    /// Stores the kept events of one parsed body; resolves once they are committed. Findings
    /// are announced after the commit.
    pub async fn ingest(&self, events: Vec<Event>) -> Result<IngestSummary, Error> {
        let received = events.len();
        let (done, wait) = oneshot::channel();
        self.send(Job::Ingest(events, done))?;
        let outcome: BatchOutcome = wait.await.map_err(|_| Error::ShuttingDown)??;
        let m = &self.metrics;
        m.k8s_audit_events[0].fetch_add(outcome.stored.len() as u64, Relaxed);
        m.k8s_audit_events[1].fetch_add(outcome.duplicates as u64, Relaxed);
        for (i, n) in outcome.dropped.iter().enumerate() {
            m.k8s_audit_events[2 + i].fetch_add(*n as u64, Relaxed);
        }
        let mut findings = 0;
        let at_ms = now_ms();
        for change in &outcome.stored {
            for finding in &change.findings {
                findings += 1;
                self.alerter.notify_change(ChangeAlert {
                    finding: finding.clone(),
                    change: change.alert_context(),
                    outcome: if finding.dry_run { "dry_run" } else { "alert" },
                    at_ms,
                });
            }
        }
        m.change_findings.fetch_add(findings as u64, Relaxed);
        Ok(IngestSummary {
            received,
            stored: outcome.stored.len(),
            duplicates: outcome.duplicates,
            dropped: outcome.dropped.iter().sum(),
            findings,
            rejected: 0,
            problems: Vec::new(),
        })
    }

    /// Stored changes matching `q`, newest first.
    pub async fn query(&self, q: ChangeQuery) -> Result<Vec<StoredChange>, Error> {
        self.reads.read(move |conn| store::query(conn, &q)).await
    }

    /// Deletes changes older than `before_ms` (retention: the records they explain are gone).
    pub async fn prune(&self, before_ms: i64) -> Result<usize, Error> {
        let (done, wait) = oneshot::channel();
        self.send(Job::Prune(before_ms, done))?;
        wait.await.map_err(|_| Error::ShuttingDown)?
    }

    fn send(&self, job: Job) -> Result<(), Error> {
        let sent = self
            .tx
            .lock()
            .ok()
            .and_then(|tx| tx.as_ref().map(|tx| tx.send(job).is_ok()))
            .unwrap_or(false);
        if sent {
            Ok(())
        } else {
            Err(Error::ShuttingDown)
        }
    }

    /// Stops the writer after the bodies already queued.
    pub fn close(&self) {
        if let Ok(mut tx) = self.tx.lock() {
            tx.take();
        }
        if let Some(w) = self.writer.lock().ok().and_then(|mut w| w.take()) {
            let _ = w.join();
        }
    }
}

/// Deletes changes older than `retention` once an hour (never with a zero retention), until
/// `stop` fires: the changes explain traffic, so they are kept as long as the records.
pub async fn retention_task(
    log: Arc<ChangeLog>,
    retention: std::time::Duration,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    if retention.is_zero() {
        return;
    }
    let millis = i64::try_from(retention.as_millis()).unwrap_or(i64::MAX);
    loop {
        match log.prune(now_ms().saturating_sub(millis)).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(changes = n, "retention deleted old policy changes"),
            Err(e) => tracing::warn!(error = %e, "policy-change retention failed"),
        }
        tokio::select! {
            _ = tokio::time::sleep(std::time::Duration::from_secs(3600)) => {}
            _ = stop.changed() => return,
        }
    }
}
