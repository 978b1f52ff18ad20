//! Detection rules at run time: loads and reloads the rules, evaluates every ingested batch on a
//! dedicated engine thread, turns rule decisions into deny-list decisions, records each one with
//! its explanation in the durable `rule_decisions` table, and keeps `ip_list` decisions in step
//! with their lists.
//!
//! Latency: ingest hands each validated batch to the engine *before* it is committed (the batch is
//! shared, not copied), so a ban is decided while the batch's fsync is still running. Ingest
//! never waits for the engine: the queue is bounded and, when it is full, the batch is skipped
//! and counted (`warden_rules_records_skipped_total`).

use crate::alerts::{Alert, Alerter};
use crate::config::Config;
use crate::decisions::{BanRequest, Decision, DecisionAction, Decisions, Origin};
use crate::error::Error;
use crate::metrics::Metrics;
use crate::store::sequences::{FilterKey, SequenceLog};
use crate::target::{Target, ip_key};
use crate::time::{Ttl, now_ms, rfc3339};
use rusqlite::{Connection, params};
use serde::Serialize;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::mpsc;
use tokio::sync::mpsc::error::SendTimeoutError;
use warden_proto::pb::{AccessRecord, FilterIdentity};
use warden_rules::{Action, Engine, Rule, RuleDecision, RuleKind, RuleSet, RulesErrors};

/// Batches waiting for the engine. At the default 1,000-record batches this is 256k records of
/// slack before ingest starts skipping evaluation.
const QUEUE_BATCHES: usize = 256;
/// How long a batch waits for room in the engine's queue. Under overload ingest slows to the
/// engine's pace (filters buffer meanwhile), so every record is evaluated and a flood cannot
/// blind the rules to an attack hidden in it. Only an engine stalled this long (a reload holding
/// it) makes the collector skip evaluation rather than hold acknowledgements.
const SUBMIT_PATIENCE: Duration = Duration::from_secs(1);
/// At most one "queue full" warning per this period.
const SKIP_WARN_EVERY: Duration = Duration::from_secs(10);
/// Actor prefix of decisions made by `ip_list` rules; the reconciler owns exactly these.
pub const LIST_ACTOR_PREFIX: &str = "ip_list:";
/// How often rule and list files are checked for changes.
pub const WATCH_INTERVAL: Duration = Duration::from_secs(1);

const SCHEMA: &str = "
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

/// Where the rules come from: `[[rules]]` in `warden.toml` and/or `rules_file`.
#[derive(Debug, Clone, Default)]
pub struct RulesSource {
    config_path: Option<PathBuf>,
    inline: Option<toml::Value>,
    rules_file: Option<PathBuf>,
}

fn read_error(file: &Path, reason: impl ToString) -> RulesErrors {
    RulesErrors(vec![warden_rules::RuleError::Read {
        file: file.display().to_string(),
        reason: reason.to_string(),
    }])
}

impl RulesSource {
    /// The rules named by a loaded configuration.
    pub fn from_config(config: &Config) -> RulesSource {
        RulesSource {
            config_path: config.source_path.clone(),
            inline: config.rules.clone(),
            rules_file: config.rules_file.clone(),
        }
    }

    fn base_dir(&self) -> Option<&Path> {
        self.config_path.as_deref().and_then(Path::parent)
    }

    fn resolved_rules_file(&self) -> Option<PathBuf> {
        let f = self.rules_file.as_ref()?;
        Some(match self.base_dir() {
            Some(dir) if f.is_relative() => dir.join(f),
            _ => f.clone(),
        })
    }

    /// Re-reads `warden.toml` (if there is one) for its `rules` and `rules_file`, so a reload
    /// sees edits to either.
    fn refresh(&mut self) -> Result<(), RulesErrors> {
        let Some(path) = self.config_path.clone() else {
            return Ok(());
        };
        let text = std::fs::read_to_string(&path).map_err(|e| read_error(&path, e))?;
        let table: toml::Table = toml::from_str(&text).map_err(|e| {
            RulesErrors(vec![warden_rules::RuleError::Syntax {
                file: path.display().to_string(),
                reason: e.to_string().trim_end().to_string(),
            }])
        })?;
        self.inline = table.get("rules").cloned();
        self.rules_file = table
            .get("rules_file")
            .and_then(|v| v.as_str())
            .map(PathBuf::from);
        Ok(())
    }

    /// Loads and validates every rule; all problems are reported at once.
    pub fn load(&self) -> Result<RuleSet, RulesErrors> {
        let mut sets = Vec::new();
        let mut errors = Vec::new();
        if let Some(inline) = &self.inline {
            let name = self
                .config_path
                .as_ref()
                .map_or_else(|| "warden.toml".to_string(), |p| p.display().to_string());
            match RuleSet::from_toml_value(inline, &name, self.base_dir()) {
                Ok(s) => sets.push(s),
                Err(e) => errors.extend(e.0),
            }
        }
        if let Some(file) = self.resolved_rules_file() {
            match RuleSet::load(&file) {
                Ok(s) => sets.push(s),
                Err(e) => errors.extend(e.0),
            }
        }
        if !errors.is_empty() {
            return Err(RulesErrors(errors));
        }
        RuleSet::merge(sets)
    }

    /// What `GET /api/v1/rules` reports as the source.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if self.inline.is_some() {
            parts.push(
                self.config_path
                    .as_ref()
                    .map_or_else(|| "warden.toml".into(), |p| p.display().to_string()),
            );
        }
        if let Some(f) = self.resolved_rules_file() {
            parts.push(f.display().to_string());
        }
        if parts.is_empty() {
            "none".into()
        } else {
            parts.join(" + ")
        }
    }

    /// Files whose change triggers a reload: the config file, the rules file and every list.
    fn watched(&self, rules: &RuleSet) -> Vec<PathBuf> {
        let mut out: Vec<PathBuf> = self.config_path.iter().cloned().collect();
        out.extend(self.resolved_rules_file());
        out.extend(rules.list_files());
        out.sort();
        out.dedup();
        out
    }
}

/// A rule as `GET /api/v1/rules` lists it.
#[derive(Debug, Clone, Serialize)]
pub struct RuleSummary {
    /// Unique name.
    pub name: String,
    /// `rate`, `auth_failures`, ...
    pub kind: &'static str,
    /// `deny`, `throttle` or `alert`.
    pub action: &'static str,
    /// Recorded but never enforced.
    pub dry_run: bool,
    /// One line: what triggers it and what it does.
    pub summary: String,
    /// The rule's description, if any.
    pub description: Option<String>,
}

/// One line describing a rule, e.g. `auth_failures >= 10 in 1m -> deny for 15m (x2 up to 24h)`.
pub fn summarize(rule: &Rule) -> String {
    use warden_rules::config::fmt_duration;
    let trigger = match &rule.kind {
        RuleKind::Rate { limit, period, key } => format!(
            "rate > {limit} per {} by {}",
            fmt_duration(*period),
            key.as_str()
        ),
        RuleKind::AuthFailures { threshold, window } => {
            format!("auth failures >= {threshold} in {}", fmt_duration(*window))
        }
        RuleKind::StatusFlood {
            status_class,
            threshold,
            window,
        } => format!(
            "{status_class} responses >= {threshold} in {}",
            fmt_duration(*window)
        ),
        RuleKind::DistinctPaths { threshold, window } => {
            format!("distinct paths >= {threshold} in {}", fmt_duration(*window))
        }
        RuleKind::IpList { nets, files } => {
            format!(
                "{} listed networks from {} file(s)",
                nets.len(),
                files.len()
            )
        }
    };
    let mut out = format!("{trigger} -> {}", rule.action.as_str());
    if !matches!(rule.kind, RuleKind::IpList { .. }) {
        out.push_str(&format!(" for {}", fmt_duration(rule.ban_ttl)));
        if let Some(e) = &rule.escalation {
            out.push_str(&format!(
                " (x{} per repeat within {}, up to {})",
                e.factor,
                fmt_duration(e.period),
                fmt_duration(e.max_ttl)
            ));
        }
    }
    if rule.dry_run {
        out.push_str(" [dry run]");
    }
    out
}

fn summaries(rules: &RuleSet) -> Vec<RuleSummary> {
    rules
        .rules()
        .iter()
        .map(|r| RuleSummary {
            name: r.name.to_string(),
            kind: r.kind.name().as_str(),
            action: r.action.as_str(),
            dry_run: r.dry_run,
            summary: summarize(r),
            description: r.description.clone(),
        })
        .collect()
}

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

struct Shared {
    source: Mutex<RulesSource>,
    engine: Mutex<Engine>,
    status: Mutex<RulesStatus>,
    watched: Mutex<Vec<PathBuf>>,
    decisions: Arc<Decisions>,
    metrics: Arc<Metrics>,
    alerts: Alerter,
    last_skip_warning: Mutex<Option<Instant>>,
}

type Batch = (FilterIdentity, Arc<Vec<AccessRecord>>);

/// The running detection: hand batches to it with [`Detection::submit`].
pub struct Detection {
    shared: Arc<Shared>,
    tx: Mutex<Option<mpsc::Sender<Batch>>>,
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

    /// Queues a validated batch for evaluation, waiting up to [`SUBMIT_PATIENCE`] for room;
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

    fn watched(&self) -> Vec<PathBuf> {
        self.shared
            .watched
            .lock()
            .map(|w| w.clone())
            .unwrap_or_default()
    }
}

type Fingerprint = Option<(SystemTime, u64)>;

fn fingerprints(paths: &[PathBuf]) -> Vec<Fingerprint> {
    paths
        .iter()
        .map(|p| {
            let m = std::fs::metadata(p).ok()?;
            Some((m.modified().ok()?, m.len()))
        })
        .collect()
}

fn reload(shared: &Shared) -> Result<(), RulesErrors> {
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

/// Brings the `ip_list` decisions (actor `ip_list:<rule>`) in line with the lists: adds what is
/// missing (one bulk version per origin and action), removes what is no longer listed (one
/// version). Dry-run and `alert` list rules enforce nothing.
pub fn reconcile_lists(decisions: &Decisions, rules: &RuleSet) {
    let wanted_list = warden_rules::list_decisions(rules, now_ms());
    let mut wanted: HashMap<Target, (DecisionAction, String, String, String)> = HashMap::new();
    for d in wanted_list {
        let action = match d.action {
            Action::Deny => DecisionAction::Deny,
            Action::Throttle => DecisionAction::Throttle,
            Action::Alert => continue,
        };
        if d.dry_run {
            continue;
        }
        wanted.entry(Target::from(d.target)).or_insert((
            action,
            d.origin,
            format!("{LIST_ACTOR_PREFIX}{}", d.rule),
            d.reason,
        ));
    }
    let existing = match decisions.by_actor_prefix(LIST_ACTOR_PREFIX) {
        Ok(e) => e,
        Err(e) => {
            tracing::warn!(error = %e, "cannot reconcile list decisions");
            return;
        }
    };
    let existing: HashMap<Target, Decision> = existing.into_iter().map(|d| (d.target, d)).collect();
    let stale: Vec<Target> = existing
        .iter()
        .filter(|(t, d)| {
            wanted.get(t).is_none_or(|(action, origin, actor, _)| {
                d.action != *action || &*d.origin != origin || &*d.actor != actor
            })
        })
        .map(|(t, _)| *t)
        .collect();
    let mut missing: HashMap<(DecisionAction, String, String), (Vec<Target>, String)> =
        HashMap::new();
    for (t, (action, origin, actor, reason)) in &wanted {
        let present = existing
            .get(t)
            .is_some_and(|d| d.action == *action && &*d.origin == origin && &*d.actor == actor);
        if !present {
            missing
                .entry((*action, origin.clone(), actor.clone()))
                .or_insert_with(|| (Vec::new(), reason.clone()))
                .0
                .push(*t);
        }
    }
    // Removals first: a target whose action or list changed is removed, then added again.
    if !stale.is_empty() {
        match decisions.unban_many(&stale, "no longer listed", "warden") {
            Ok(n) => tracing::info!(removed = n, "list decisions no longer listed removed"),
            Err(e) => tracing::warn!(error = %e, "cannot remove stale list decisions"),
        }
    }
    for ((action, origin, actor), (targets, reason)) in missing {
        let Ok(origin_parsed) = origin.parse::<Origin>() else {
            continue;
        };
        let n = targets.len();
        // One reason for the whole bulk load: the per-entry notes stay in the list file.
        let reason = reason
            .split(';')
            .next()
            .map_or_else(String::new, |r| r.trim().to_string());
        match decisions.ban_many(targets, action, Ttl(None), &reason, &actor, &origin_parsed) {
            Ok((added, skipped, version)) => tracing::info!(
                %origin, wanted = n, added, allowlisted = skipped.len(), version,
                "list decisions loaded"
            ),
            Err(e) => tracing::warn!(error = %e, %origin, "cannot load list decisions"),
        }
    }
}

/// Most filter identities whose evaluated sequences the engine remembers; beyond it the ones
/// heard from least recently are forgotten (the store keeps its own, persisted, copy).
const MAX_EVALUATED_IDENTITIES: usize = 100_000;

/// Which records the engine has evaluated, by filter identity and sequence: the same type the
/// store deduplicates with, so a record is evaluated once however the filter re-cuts its
/// retries (an urgent flush or a partial requeue gives a retried record a new batch), and,
/// loaded from the store at start, once across collector restarts too.
struct Evaluated {
    log: SequenceLog,
    heard_ms: HashMap<FilterKey, i64>,
}

impl Evaluated {
    /// For each record, whether it is new to the engine (and now marked evaluated).
    fn fresh(&mut self, f: &FilterIdentity, records: &[AccessRecord]) -> Vec<bool> {
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

fn engine_loop(
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

/// A rule decision and what came of it, to be recorded and notified.
struct Acted {
    decision: RuleDecision,
    target: Target,
    outcome: Outcome,
    decision_id: Option<u64>,
    ban_expires: Option<i64>,
    detail: Option<String>,
    at_ms: i64,
}

/// Turns one rule decision into its outcome: a ban (committed and pushed now), a kept existing
/// decision, a dry run, an alert, or an error.
fn act(shared: &Shared, d: RuleDecision) -> Acted {
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

/// Writes the history rows of `acted` in one transaction.
fn record_all(conn: &Connection, acted: &[Acted]) -> Result<(), Error> {
    let tx = conn.unchecked_transaction()?;
    for a in acted {
        record(&tx, a)?;
    }
    tx.commit()?;
    Ok(())
}

fn stronger_or_equal(existing: &Decision, action: DecisionAction, expires: Option<i64>) -> bool {
    let lasts = match (existing.expires_at_ms, expires) {
        (None, _) => true,
        (Some(_), None) => false,
        (Some(a), Some(b)) => a >= b,
    };
    lasts && (existing.action == DecisionAction::Deny || action == DecisionAction::Throttle)
}

#[allow(clippy::too_many_arguments)]
fn ban(
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

fn record(conn: &Connection, a: &Acted) -> Result<(), Error> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Synchronous;
    use crate::db::open_connection;

    #[test]
    fn summaries_read_as_one_line() {
        let rules = RuleSet::from_toml_str(
            "[[rules]]\nname = \"b\"\nkind = \"auth_failures\"\nthreshold = 10\nwindow = \"1m\"\naction = \"deny\"\nban_ttl = \"15m\"\n",
            "r.toml",
        )
        .unwrap();
        assert_eq!(
            summarize(&rules.rules()[0]),
            "auth failures >= 10 in 1m -> deny for 15m"
        );
    }

    #[test]
    fn a_re_cut_retry_is_evaluated_once_record_by_record() {
        // The hole found in review: the engine deduplicated by a batch's first and last
        // sequence, so a retry the filter re-cut (1..=8 then 5..=12) was evaluated again.
        let f = FilterIdentity {
            node_id: "n".into(),
            ..Default::default()
        };
        let batch = |seqs: std::ops::RangeInclusive<u64>| -> Vec<AccessRecord> {
            seqs.map(|sequence| AccessRecord {
                sequence,
                ..Default::default()
            })
            .collect()
        };
        let mut evaluated = Evaluated {
            log: SequenceLog::default(),
            heard_ms: HashMap::new(),
        };
        assert_eq!(evaluated.fresh(&f, &batch(1..=8)), vec![true; 8]);
        assert_eq!(evaluated.fresh(&f, &batch(1..=8)), vec![false; 8]);
        let recut = evaluated.fresh(&f, &batch(5..=12));
        assert_eq!(recut, [[false; 4], [true; 4]].concat());
        let other = FilterIdentity {
            worker: 1,
            ..f.clone()
        };
        assert_eq!(evaluated.fresh(&other, &batch(1..=2)), vec![true; 2]);
    }

    #[test]
    fn inline_and_file_rules_merge_and_duplicates_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("r.toml"),
            "[[rules]]\nname = \"a\"\nkind = \"distinct_paths\"\nthreshold = 5\nwindow = \"1m\"\naction = \"deny\"\n",
        )
        .unwrap();
        let text = "rules_file = \"r.toml\"\n[[rules]]\nname = \"b\"\nkind = \"distinct_paths\"\nthreshold = 5\nwindow = \"1m\"\naction = \"alert\"\n";
        std::fs::write(dir.path().join("warden.toml"), text).unwrap();
        let config = Config::parse(text, &dir.path().join("warden.toml")).unwrap();
        let rules = RulesSource::from_config(&config).load().unwrap();
        assert_eq!(rules.rules().len(), 2);
        let text = text.replace("name = \"b\"", "name = \"a\"");
        let config = Config::parse(&text, &dir.path().join("warden.toml")).unwrap();
        let e = RulesSource::from_config(&config).load().unwrap_err();
        assert!(e.to_string().contains("duplicate"), "{e}");
    }

    // Holding the engine's lock across awaits is how this test stalls the engine thread.
    #[allow(clippy::await_holding_lock)]
    #[tokio::test(flavor = "multi_thread")]
    async fn a_busy_engine_slows_ingest_and_only_a_stalled_one_skips() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("warden.db");
        let metrics = Arc::new(Metrics::default());
        let decisions = Decisions::open(
            open_connection(&db, Synchronous::Off).unwrap(),
            100,
            100,
            Arc::clone(&metrics),
        )
        .unwrap();
        let rules = RuleSet::from_toml_str(
            "[[rules]]\nname = \"a\"\nkind = \"auth_failures\"\nthreshold = 10\nwindow = \"1m\"\naction = \"deny\"\n",
            "r.toml",
        )
        .unwrap();
        let detection = Detection::start(
            RulesSource::default(),
            rules,
            open_connection(&db, Synchronous::Off).unwrap(),
            decisions,
            Arc::clone(&metrics),
            Alerter::disabled(Arc::clone(&metrics)),
            SequenceLog::default(),
        )
        .unwrap();
        let filter = FilterIdentity::default();
        let mut sequence = 0u64;
        let mut next_batch = || {
            sequence += 1;
            Arc::new(vec![AccessRecord {
                sequence,
                time_ms: 1,
                ..Default::default()
            }])
        };
        let queue = detection.tx.lock().unwrap().clone().unwrap();

        // Hold the engine: it takes one batch and waits; then the queue fills up.
        let engine = detection.shared.engine.lock().unwrap();
        let mut sent = 0u64;
        while queue.capacity() > 0 {
            detection.submit(&filter, &next_batch()).await;
            sent += 1;
        }
        // One more waits for room, and gets it once the engine moves again.
        let waiting = next_batch();
        tokio::join!(detection.submit(&filter, &waiting), async {
            tokio::time::sleep(Duration::from_millis(200)).await;
            drop(engine);
        });
        sent += 1;
        let evaluated = || metrics.rules_records_evaluated.load(Relaxed);
        while evaluated() < sent {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(metrics.rules_records_skipped.load(Relaxed), 0);

        // An engine stalled past the patience: the batch is skipped (and counted), not held.
        // At most the queue's worth and the one the engine holds get in; the next one waits out
        // the patience and is skipped.
        let engine = detection.shared.engine.lock().unwrap();
        let mut attempts = 0;
        while metrics.rules_records_skipped.load(Relaxed) == 0 {
            attempts += 1;
            assert!(attempts <= QUEUE_BATCHES + 2, "nothing was skipped");
            detection.submit(&filter, &next_batch()).await;
        }
        assert_eq!(metrics.rules_records_skipped.load(Relaxed), 1);
        drop(engine);
        drop(queue);
        detection.close().await;
    }
}
