//! The engine at run time: a dedicated thread evaluates every ingested batch once (records
//! already evaluated are skipped by sequence), turns rule decisions into deny-list decisions,
//! and reports its status. Ingest hands each batch over before its commit; the queue is bounded
//! and a full queue slows ingest down before anything is skipped.

use super::{history::*, reconcile::*, source::*};
use crate::decisions::{BanRequest, Decision, DecisionAction, Decisions, Origin};
use crate::detection::alerts::{Alert, Alerter};
use crate::error::Error;
use crate::metrics::Metrics;
use crate::store::sequences::{FilterKey, SequenceLog};
use crate::target::Target;
use crate::time::{Ttl, now_ms, rfc3339};
use rusqlite::Connection;
use serde::Serialize;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio::sync::mpsc::error::SendTimeoutError;
use warden_proto::pb::{AccessRecord, FilterIdentity};
use warden_rules::{Action, Engine, RuleDecision, RuleSet, RulesErrors};

/// Batches waiting for the engine. At the default 1,000-record batches this is 256k records of
/// slack before ingest starts skipping evaluation.
pub(super) const QUEUE_BATCHES: usize = 256;
/// How long a batch waits for room in the engine's queue. Under overload ingest slows to the
/// engine's pace (filters buffer meanwhile), so every record is evaluated and a flood cannot
/// blind the rules to an attack hidden in it. Only an engine stalled this long (a reload holding
/// it) makes the collector skip evaluation rather than hold acknowledgements.
pub(super) const SUBMIT_PATIENCE: Duration = Duration::from_secs(1);
/// At most one "queue full" warning per this period.
pub(super) const SKIP_WARN_EVERY: Duration = Duration::from_secs(10);
/// What `GET /api/v1/rules` answers.
#[derive(Debug, Clone, Serialize)]
pub struct RulesStatus {
    /// Where the rules in force came from.
    pub source: String,
    /// When they were loaded (RFC 3339).
    pub loaded_at: String,
    /// The rules in force.
    pub rules: Vec<RuleSummary>,
    /// Why the latest reload was refused (the rules above stayed in force); null after a
    /// successful load.
    pub last_error: Option<String>,
    /// When that reload was refused.
    pub last_error_at: Option<String>,
}

pub(super) struct Shared {
    pub(super) source: Mutex<RulesSource>,
    pub(super) engine: Mutex<Engine>,
    /// The rules in force, apart from the engine: change rules are evaluated on the
    /// policy-change writer's thread, which must not wait for the engine's batch in progress.
    pub(super) in_force: Mutex<Arc<RuleSet>>,
    pub(super) status: Mutex<RulesStatus>,
    pub(super) watched: Mutex<Vec<PathBuf>>,
    pub(super) decisions: Arc<Decisions>,
    pub(super) metrics: Arc<Metrics>,
    alerts: Alerter,
    last_skip_warning: Mutex<Option<Instant>>,
}

pub(super) type Batch = (FilterIdentity, Arc<Vec<AccessRecord>>);

/// The running detection: hand batches to it with [`Detection::submit`].
pub struct Detection {
    pub(super) shared: Arc<Shared>,
    pub(super) tx: Mutex<Option<mpsc::Sender<Batch>>>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl Detection {
    /// Creates the `rule_decisions` table, reconciles `ip_list` decisions and starts the engine
    /// thread with `rules` (already validated: `warden serve` refuses to start otherwise).
    /// `conn`: the main database, where rule decisions are recorded; `evaluated`: the records
    /// already evaluated (the store's sequences at start).
    pub fn start(
        source: RulesSource,
        rules: RuleSet,
        conn: Connection,
        decisions: Arc<Decisions>,
        metrics: Arc<Metrics>,
        alerts: Alerter,
        evaluated: SequenceLog,
    ) -> Result<Arc<Detection>, Error> {
        conn.execute_batch(SCHEMA)?;
        let status = RulesStatus {
            source: source.describe(),
            loaded_at: rfc3339(now_ms()),
            rules: summaries(&rules),
            last_error: None,
            last_error_at: None,
        };
        let watched = source.watched(&rules);
        let shared = Arc::new(Shared {
            source: Mutex::new(source),
            engine: Mutex::new(Engine::new(rules.clone())),
            in_force: Mutex::new(Arc::new(rules.clone())),
            status: Mutex::new(status),
            watched: Mutex::new(watched),
            decisions,
            metrics,
            alerts,
            last_skip_warning: Mutex::new(None),
        });
        reconcile_lists(&shared.decisions, &rules);
        let (tx, mut rx) = mpsc::channel(QUEUE_BATCHES);
        let thread_shared = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("warden-rules".into())
            .spawn(move || engine_loop(&thread_shared, &conn, &mut rx, evaluated))
            .map_err(|e| Error::Storage(format!("cannot start the rules thread: {e}")))?;
        Ok(Arc::new(Detection {
            shared,
            tx: Mutex::new(Some(tx)),
            thread: Mutex::new(Some(thread)),
        }))
    }

    /// Queues a validated batch for evaluation, waiting up to `SUBMIT_PATIENCE` for room;
    /// past that the batch is skipped (stored, not evaluated) and counted.
    pub async fn submit(&self, filter: &FilterIdentity, records: &Arc<Vec<AccessRecord>>) {
        let Some(tx) = self.tx.lock().ok().and_then(|guard| guard.clone()) else {
            return;
        };
        let n = records.len() as u64;
        let batch = (filter.clone(), Arc::clone(records));
        match tx.send_timeout(batch, SUBMIT_PATIENCE).await {
            Ok(()) => {}
            Err(SendTimeoutError::Timeout(_)) => {
                self.shared
                    .metrics
                    .rules_records_skipped
                    .fetch_add(n, Relaxed);
                let Ok(mut last) = self.shared.last_skip_warning.lock() else {
                    return;
                };
                if last.is_none_or(|t| t.elapsed() >= SKIP_WARN_EVERY) {
                    *last = Some(Instant::now());
                    tracing::warn!(
                        skipped_total = self.shared.metrics.rules_records_skipped.load(Relaxed),
                        "rules engine stalled; records skipped (not evaluated, still stored)"
                    );
                }
            }
            Err(SendTimeoutError::Closed(_)) => {}
        }
    }

    /// Loads the rules again; on success swaps them in (unchanged rules keep their counters) and
    /// reconciles `ip_list` decisions; on failure keeps the rules in force and records why.
    /// Blocking: call it from the blocking pool.
    pub fn reload(&self) -> Result<(), RulesErrors> {
        reload(&self.shared)
    }

    /// Reloads now (the API's `rules/reload`): the rules in force afterwards, or every problem
    /// of the file that was refused (the previous rules stay in force).
    pub async fn reload_now(self: &Arc<Self>) -> Result<Option<RulesStatus>, crate::error::Error> {
        let me = Arc::clone(self);
        let result = tokio::task::spawn_blocking(move || me.reload())
            .await
            .map_err(|e| crate::error::Error::Storage(format!("reload task failed: {e}")))?;
        match result {
            Ok(()) => Ok(self.status()),
            Err(errors) => Err(crate::error::Error::invalid(
                "rules",
                format!("not reloaded; the rules in force stay:\n{errors}"),
            )),
        }
    }

    /// The rules in force (what change rules are evaluated with).
    pub fn rules_in_force(&self) -> Arc<RuleSet> {
        self.shared
            .in_force
            .lock()
            .map(|r| Arc::clone(&r))
            .unwrap_or_default()
    }

    /// The rules in force and the latest reload error.
    pub fn status(&self) -> Option<RulesStatus> {
        self.shared.status.lock().ok().map(|s| s.clone())
    }

    /// Stops the engine thread after it has evaluated what is queued.
    pub async fn close(&self) {
        if let Ok(mut tx) = self.tx.lock() {
            tx.take();
        }
        let handle = self.thread.lock().ok().and_then(|mut h| h.take());
        if let Some(handle) = handle {
            let _ = tokio::task::spawn_blocking(move || handle.join()).await;
        }
    }

    /// Reloads on SIGHUP and whenever a watched file (config, rules file, list files) changes,
    /// until `stop` fires.
    ///
    /// Files are polled (modification time and size, once a second) rather than watched with
    /// inotify: it needs no extra dependency, works the same on bind mounts, NFS and Kubernetes
    /// ConfigMap symlink swaps (where inotify misses the change), and a handful of `stat` calls a
    /// second costs nothing. A change is seen within about a second.
    pub async fn watch(self: Arc<Self>, mut stop: tokio::sync::watch::Receiver<bool>) {
        #[cfg(unix)]
        let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
        let mut last = fingerprints(&self.watched());
        let mut tick = tokio::time::interval(WATCH_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            #[cfg(unix)]
            let hangup = async {
                match hup.as_mut() {
                    Some(s) => {
                        s.recv().await;
                    }
                    None => std::future::pending::<()>().await,
                }
            };
            #[cfg(not(unix))]
            let hangup = std::future::pending::<()>();
            let why = tokio::select! {
                _ = stop.changed() => return,
                _ = hangup => "SIGHUP",
                _ = tick.tick() => {
                    let now = fingerprints(&self.watched());
                    if now == last { continue; }
                    "a rules file changed"
                }
            };
            tracing::info!(trigger = why, "reloading rules");
            let me = Arc::clone(&self);
            let _ = tokio::task::spawn_blocking(move || me.reload()).await;
            last = fingerprints(&self.watched());
        }
    }

    pub(super) fn watched(&self) -> Vec<PathBuf> {
        self.shared
            .watched
            .lock()
            .map(|w| w.clone())
            .unwrap_or_default()
    }
}

/// Most filter identities whose evaluated sequences the engine remembers; beyond it the ones
/// heard from least recently are forgotten (the store keeps its own, persisted, copy).
pub(super) const MAX_EVALUATED_IDENTITIES: usize = 100_000;

/// Which records the engine has evaluated, by filter identity and sequence: the same type the
/// store deduplicates with, so a record is evaluated once however the filter re-cuts its
/// retries (an urgent flush or a partial requeue gives a retried record a new batch), and,
/// loaded from the store at start, once across collector restarts too.
pub(super) struct Evaluated {
    pub(super) log: SequenceLog,
    pub(super) heard_ms: HashMap<FilterKey, i64>,
}

impl Evaluated {
    /// For each record, whether it is new to the engine (and now marked evaluated).
    pub(super) fn fresh(&mut self, f: &FilterIdentity, records: &[AccessRecord]) -> Vec<bool> {
        let key = FilterKey::of(f);
        self.heard_ms.insert(key.clone(), now_ms());
        if self.log.len() > MAX_EVALUATED_IDENTITIES {
            let mut heard: Vec<(FilterKey, i64)> =
                self.heard_ms.iter().map(|(k, t)| (k.clone(), *t)).collect();
            heard.sort_by_key(|(_, t)| *t);
            for (k, _) in heard.iter().take(heard.len() / 10) {
                self.log.remove(k);
                self.heard_ms.remove(k);
            }
        }
        let sequences: Vec<u64> = records.iter().map(|r| r.sequence).collect();
        self.log.accept(&key, &sequences)
    }
}

pub(super) fn engine_loop(
    shared: &Shared,
    conn: &Connection,
    rx: &mut mpsc::Receiver<Batch>,
    evaluated: SequenceLog,
) {
    let mut evaluated = Evaluated {
        log: evaluated,
        heard_ms: HashMap::new(),
    };
    let mut out = Vec::new();
    while let Some((filter, records)) = rx.blocking_recv() {
        let fresh = evaluated.fresh(&filter, &records);
        let mut observed = 0u64;
        {
            let Ok(mut engine) = shared.engine.lock() else {
                return;
            };
            for (r, _) in records.iter().zip(&fresh).filter(|(_, new)| **new) {
                engine.observe_into(r, &mut out);
                observed += 1;
            }
        }
        shared
            .metrics
            .rules_records_evaluated
            .fetch_add(observed, Relaxed);
        let repeated = records.len() as u64 - observed;
        if repeated > 0 {
            shared
                .metrics
                .rules_records_repeated
                .fetch_add(repeated, Relaxed);
        }
        if out.is_empty() {
            continue;
        }
        // Bans are committed and pushed one by one as they are decided; the history rows of the
        // whole batch then go in one transaction (a flood of decisions costs one fsync, not one
        // each), and the alerts follow.
        let acted: Vec<Acted> = out.drain(..).map(|d| act(shared, d)).collect();
        if let Err(e) = record_all(conn, &acted) {
            tracing::warn!(error = %e, decisions = acted.len(), "cannot record rule decisions");
        }
        for a in acted {
            shared.alerts.notify(Alert {
                outcome: a.outcome.as_str(),
                ban_expires_at_ms: a.ban_expires,
                at_ms: a.at_ms,
                decision: a.decision,
            });
        }
    }
    tracing::debug!("rules engine stopped");
}

/// Turns one rule decision into its outcome: a ban (committed and pushed now), a kept existing
/// decision, a dry run, an alert, or an error.
pub(super) fn act(shared: &Shared, d: RuleDecision) -> Acted {
    let target = Target::from(d.target);
    let mut decision_id = None;
    let mut ban_expires = None;
    let mut detail = None;
    let outcome = if d.dry_run {
        Outcome::DryRun
    } else {
        match d.action {
            Action::Alert => Outcome::Alert,
            Action::Deny | Action::Throttle => {
                let action = if d.action == Action::Deny {
                    DecisionAction::Deny
                } else {
                    DecisionAction::Throttle
                };
                let ttl = Ttl(d.ttl_ms.map(Duration::from_millis));
                let expires = ttl.expires_at(now_ms());
                match shared.decisions.current(&target) {
                    Ok(Some(existing)) if stronger_or_equal(&existing, action, expires) => {
                        decision_id = Some(existing.id);
                        ban_expires = existing.expires_at_ms;
                        detail = Some(format!(
                            "kept decision {} ({} until {})",
                            existing.id,
                            existing.action.as_str(),
                            existing
                                .expires_at_ms
                                .map_or_else(|| "forever".into(), rfc3339)
                        ));
                        Outcome::Existing
                    }
                    _ => ban(
                        shared,
                        &d,
                        target,
                        action,
                        ttl,
                        &mut decision_id,
                        &mut ban_expires,
                        &mut detail,
                    ),
                }
            }
        }
    };
    shared.metrics.rule_decisions.fetch_add(1, Relaxed);
    match outcome {
        Outcome::Banned => {
            tracing::info!(rule = %d.rule, target = %target, action = d.action.as_str(), ttl_ms = ?d.ttl_ms, repeat = d.repeat, "rule banned a client")
        }
        Outcome::Error => {
            tracing::warn!(rule = %d.rule, target = %target, detail = ?detail, "rule decision failed")
        }
        _ => {
            tracing::info!(rule = %d.rule, target = %target, outcome = outcome.as_str(), "rule decision")
        }
    }
    Acted {
        decision: d,
        target,
        outcome,
        decision_id,
        ban_expires,
        detail,
        at_ms: now_ms(),
    }
}

pub(super) fn stronger_or_equal(
    existing: &Decision,
    action: DecisionAction,
    expires: Option<i64>,
) -> bool {
    let lasts = match (existing.expires_at_ms, expires) {
        (None, _) => true,
        (Some(_), None) => false,
        (Some(a), Some(b)) => a >= b,
    };
    lasts && (existing.action == DecisionAction::Deny || action == DecisionAction::Throttle)
}

#[allow(clippy::too_many_arguments)]
pub(super) fn ban(
    shared: &Shared,
    d: &RuleDecision,
    target: Target,
    action: DecisionAction,
    ttl: Ttl,
    decision_id: &mut Option<u64>,
    ban_expires: &mut Option<i64>,
    detail: &mut Option<String>,
) -> Outcome {
    let origin = match d.origin.parse::<Origin>() {
        Ok(o) => o,
        Err(e) => {
            *detail = Some(e);
            return Outcome::Error;
        }
    };
    let req = BanRequest {
        target,
        action,
        ttl,
        reason: d.reason.clone(),
        actor: format!("rule:{}", d.rule),
        origin,
    };
    match shared.decisions.ban(req) {
        Ok((made, _version)) => {
            *decision_id = Some(made.id);
            *ban_expires = made.expires_at_ms;
            Outcome::Banned
        }
        Err(Error::Conflict(why)) => {
            *detail = Some(why);
            Outcome::Allowlisted
        }
        Err(e) => {
            *detail = Some(e.to_string());
            Outcome::Error
        }
    }
}

pub(super) fn reload(shared: &Shared) -> Result<(), RulesErrors> {
    let loaded = {
        let Ok(mut source) = shared.source.lock() else {
            return Ok(());
        };
        source
            .refresh()
            .and_then(|()| source.load())
            .map(|rules| (rules, source.describe(), source.clone()))
    };
    match loaded {
        Ok((rules, described, source)) => {
            let summary = match shared.engine.lock() {
                Ok(mut engine) => engine.reload(rules.clone()),
                Err(_) => return Ok(()),
            };
            if let Ok(mut in_force) = shared.in_force.lock() {
                *in_force = Arc::new(rules.clone());
            }
            tracing::info!(
                kept = ?summary.kept, changed = ?summary.changed, added = ?summary.added,
                removed = ?summary.removed, "rules reloaded"
            );
            if let Ok(mut status) = shared.status.lock() {
                *status = RulesStatus {
                    source: described,
                    loaded_at: rfc3339(now_ms()),
                    rules: summaries(&rules),
                    last_error: None,
                    last_error_at: None,
                };
            }
            if let Ok(mut w) = shared.watched.lock() {
                *w = source.watched(&rules);
            }
            reconcile_lists(&shared.decisions, &rules);
            Ok(())
        }
        Err(errors) => {
            shared.metrics.rules_reload_failures.fetch_add(1, Relaxed);
            tracing::error!(errors = %errors, "invalid rules; keeping the rules in force");
            if let Ok(mut status) = shared.status.lock() {
                status.last_error = Some(errors.to_string());
                status.last_error_at = Some(rfc3339(now_ms()));
            }
            // Keep watching the same files (and any list file of the rules in force), so fixing
            // the file triggers the next reload.
            if let (Ok(source), Ok(engine), Ok(mut w)) = (
                shared.source.lock(),
                shared.engine.lock(),
                shared.watched.lock(),
            ) {
                *w = source.watched(engine.rules());
            }
            Err(errors)
        }
    }
}
