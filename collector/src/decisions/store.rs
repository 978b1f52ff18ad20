//! The decision store: decisions and the allowlist durable in SQLite and mirrored in memory,
//! every change committed in one transaction with its version and audit row, expiry.

use super::{audit::*, changes::*, model::*};
use crate::error::Error;
use crate::metrics::Metrics;
use crate::target::Target;
use crate::time::{Ttl, now_ms, rfc3339};
use rusqlite::{Connection, OptionalExtension, params};
use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::broadcast;
use warden_proto::pb::{Action, EntryKey, ListEntry, SnapshotChunk};

pub(super) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS decisions (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    list TEXT NOT NULL,
    target TEXT NOT NULL,
    action TEXT NOT NULL,
    expires_at_ms INTEGER,
    reason TEXT NOT NULL,
    origin TEXT NOT NULL,
    actor TEXT NOT NULL,
    created_ms INTEGER NOT NULL,
    UNIQUE (list, target)
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS admin_audit (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    time_ms INTEGER NOT NULL,
    actor TEXT NOT NULL,
    operation TEXT NOT NULL,
    target TEXT NOT NULL,
    action TEXT,
    expires_at_ms INTEGER,
    reason TEXT NOT NULL,
    origin TEXT NOT NULL,
    decision_id INTEGER,
    version INTEGER NOT NULL,
    count INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS admin_audit_time ON admin_audit(time_ms);
";

pub(super) struct State {
    pub(super) conn: Connection,
    pub(super) version: u64,
    pub(super) entries: HashMap<Key, Decision>,
    expiry: BTreeSet<(i64, Key)>,
    pub(super) log: VecDeque<Arc<Change>>,
    pub(super) snapshot: Option<Arc<Snapshot>>,
}

/// The decision store. Share it behind an `Arc`; blocking methods do SQLite I/O and belong on
/// the blocking pool (the async wrappers do that).
pub struct Decisions {
    state: Mutex<State>,
    pub(super) changes: broadcast::Sender<Arc<Change>>,
    log_versions: usize,
    pub(super) chunk_entries: usize,
    metrics: Arc<Metrics>,
}

pub(super) fn storage(e: rusqlite::Error) -> Error {
    Error::Storage(e.to_string())
}

impl Decisions {
    /// Opens the decision tables on `conn` (a write connection to the shared database) and
    /// loads every decision into memory.
    pub fn open(
        conn: Connection,
        log_versions: usize,
        chunk_entries: usize,
        metrics: Arc<Metrics>,
    ) -> Result<Arc<Decisions>, Error> {
        conn.execute_batch(SCHEMA)?;
        conn.execute_batch(crate::trail::AUDIT_CHAIN_SCHEMA)?;
        let version: u64 = conn
            .query_row("SELECT value FROM meta WHERE key = 'version'", [], |r| {
                r.get::<_, i64>(0)
            })
            .optional()?
            .map_or(0, to_u64);
        let mut entries = HashMap::new();
        let mut expiry = BTreeSet::new();
        {
            let mut interned: HashMap<String, Arc<str>> = HashMap::new();
            let mut intern = |s: String| -> Arc<str> {
                interned
                    .entry(s)
                    .or_insert_with_key(|k| Arc::from(k.as_str()))
                    .clone()
            };
            let mut stmt = conn.prepare(
                "SELECT id, target, action, expires_at_ms, reason, origin, actor, created_ms FROM decisions",
            )?;
            let mut rows = stmt.query([])?;
            while let Some(row) = rows.next()? {
                let target_text: String = row.get(1)?;
                let action_text: String = row.get(2)?;
                let Ok(target) = target_text.parse::<Target>() else {
                    tracing::warn!(target = %target_text, "skipping a stored decision with an unreadable target");
                    continue;
                };
                let action = match action_text.as_str() {
                    "allow" => DecisionAction::Allow,
                    "throttle" => DecisionAction::Throttle,
                    _ => DecisionAction::Deny,
                };
                let d = Decision {
                    id: to_u64(row.get(0)?),
                    target,
                    action,
                    expires_at_ms: row.get(3)?,
                    reason: intern(row.get(4)?),
                    origin: intern(row.get(5)?),
                    actor: intern(row.get(6)?),
                    created_ms: row.get(7)?,
                };
                if let Some(at) = d.expires_at_ms {
                    expiry.insert((at, d.key()));
                }
                entries.insert(d.key(), d);
            }
        }
        metrics.decisions_version.store(version, Relaxed);
        metrics
            .decisions_entries
            .store(entries.len() as u64, Relaxed);
        let (changes, _) = broadcast::channel(1024);
        Ok(Arc::new(Decisions {
            state: Mutex::new(State {
                conn,
                version,
                entries,
                expiry,
                log: VecDeque::new(),
                snapshot: None,
            }),
            changes,
            log_versions,
            chunk_entries,
            metrics,
        }))
    }

    pub(super) fn lock(&self) -> Result<MutexGuard<'_, State>, Error> {
        self.state
            .lock()
            .map_err(|_| Error::Storage("decision state poisoned by an earlier failure".into()))
    }

    /// The current version.
    pub fn version(&self) -> u64 {
        self.lock().map_or(0, |s| s.version)
    }

    /// Decisions of the deny list (`allow == false`) or the allowlist, ordered by target, at most
    /// `limit`, plus the total count.
    pub fn list(&self, allow: bool, limit: usize) -> Result<(Vec<Decision>, usize), Error> {
        let state = self.lock()?;
        let want = if allow { List::Allow } else { List::Deny };
        // The expiry sweep runs on an interval; a decision past its expiry is already lifted in
        // every filter, so it is not listed even before the sweep removes it.
        let now = crate::time::now_ms();
        let mut all: Vec<&Decision> = state
            .entries
            .values()
            .filter(|d| d.action.list() == want && d.expires_at_ms.is_none_or(|at| at > now))
            .collect();
        let total = all.len();
        all.sort_by_key(|d| d.target);
        Ok((all.into_iter().take(limit).cloned().collect(), total))
    }

    /// Bans one target. Refused with [`Error::Conflict`] when an allowlist entry covers it.
    pub fn ban(&self, req: BanRequest) -> Result<(Decision, u64), Error> {
        let mut state = self.lock()?;
        if let Some(allow) = covering_allow(&state, &req.target) {
            return Err(allow_conflict(&req.target, allow));
        }
        let now = now_ms();
        let entry = NewEntry {
            target: req.target,
            action: req.action,
            expires_at_ms: req.ttl.expires_at(now),
            reason: &req.reason,
            origin: req.origin.as_str(),
            actor: &req.actor,
            now,
        };
        self.add_one(&mut state, &entry, "ban")
    }

    /// Adds one entry as one version, with its admin-audit row.
    fn add_one(
        &self,
        state: &mut State,
        entry: &NewEntry<'_>,
        operation: &str,
    ) -> Result<(Decision, u64), Error> {
        self.commit(state, |tx, version| {
            let d = insert_decision(tx, entry)?;
            write_audit(
                tx,
                entry.now,
                version,
                &AuditRow {
                    actor: entry.actor,
                    operation,
                    target: entry.target.to_string(),
                    action: Some(entry.action.as_str()),
                    expires_at_ms: entry.expires_at_ms,
                    reason: entry.reason,
                    origin: entry.origin,
                    decision_id: Some(d.id),
                    count: 1,
                },
            )?;
            Ok((vec![d.clone()], vec![], d))
        })
    }

    /// Bans many targets in one version (a list load). Targets covered by the allowlist are
    /// skipped and returned with the covering entry.
    pub fn ban_many(
        &self,
        targets: Vec<Target>,
        action: DecisionAction,
        ttl: Ttl,
        reason: &str,
        actor: &str,
        origin: &Origin,
    ) -> Result<BulkOutcome, Error> {
        let mut state = self.lock()?;
        let allows: Vec<Target> = state
            .entries
            .keys()
            .filter(|k| k.0 == List::Allow)
            .map(|k| k.1)
            .collect();
        let mut skipped = Vec::new();
        let mut wanted = Vec::with_capacity(targets.len());
        for t in targets {
            match allows.iter().find(|a| a.contains(&t)) {
                Some(a) => skipped.push((t, *a)),
                None => wanted.push(t),
            }
        }
        let now = now_ms();
        let expires = ttl.expires_at(now);
        let (added, version) = self.commit(&mut state, |tx, version| {
            let reason_arc: Arc<str> = Arc::from(reason);
            let origin_arc: Arc<str> = Arc::from(origin.as_str());
            let actor_arc: Arc<str> = Arc::from(actor);
            let mut stmt = tx.prepare(
                "INSERT OR REPLACE INTO decisions (list, target, action, expires_at_ms, reason, origin, actor, created_ms)
                 VALUES ('deny', ?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )?;
            let mut added = Vec::with_capacity(wanted.len());
            for t in &wanted {
                stmt.execute(params![t.to_string(), action.as_str(), expires, reason, origin.as_str(), actor, now])?;
                added.push(Decision {
                    id: to_u64(tx.last_insert_rowid()),
                    target: *t,
                    action,
                    expires_at_ms: expires,
                    reason: Arc::clone(&reason_arc),
                    origin: Arc::clone(&origin_arc),
                    actor: Arc::clone(&actor_arc),
                    created_ms: now,
                });
            }
            write_audit(tx, now, version, &AuditRow {
                actor,
                operation: "ban_bulk",
                target: format!("{} targets", added.len()),
                action: Some(action.as_str()),
                expires_at_ms: expires,
                reason,
                origin: origin.as_str(),
                decision_id: None,
                count: added.len() as u64,
            })?;
            let n = added.len();
            Ok((added, vec![], n))
        })?;
        Ok((added, skipped, version))
    }

    /// The deny/throttle decision on exactly `target`, if one is in force.
    pub fn current(&self, target: &Target) -> Result<Option<Decision>, Error> {
        let state = self.lock()?;
        let now = now_ms();
        Ok(state
            .entries
            .get(&(List::Deny, *target))
            .filter(|d| d.expires_at_ms.is_none_or(|at| at > now))
            .cloned())
    }

    /// Deny/throttle decisions and allowlist entries in force whose network contains `target`.
    pub fn covering(&self, target: &Target) -> Result<(Vec<Decision>, Vec<Decision>), Error> {
        let state = self.lock()?;
        let now = now_ms();
        let (mut deny, mut allow) = (Vec::new(), Vec::new());
        for d in state.entries.values() {
            if d.target.contains(target) && d.expires_at_ms.is_none_or(|at| at > now) {
                if d.action == DecisionAction::Allow {
                    allow.push(d.clone());
                } else {
                    deny.push(d.clone());
                }
            }
        }
        deny.sort_by_key(|d| d.target);
        allow.sort_by_key(|d| d.target);
        Ok((deny, allow))
    }

    /// Deny/throttle decisions whose actor starts with `prefix` (the decisions an owner such as
    /// the `ip_list` reconciler manages).
    pub fn by_actor_prefix(&self, prefix: &str) -> Result<Vec<Decision>, Error> {
        let state = self.lock()?;
        Ok(state
            .entries
            .values()
            .filter(|d| d.action != DecisionAction::Allow && d.actor.starts_with(prefix))
            .cloned()
            .collect())
    }

    /// Removes the deny decisions on `targets` (those that exist) as one version; returns how
    /// many were removed (0 changes nothing).
    pub fn unban_many(
        &self,
        targets: &[Target],
        reason: &str,
        actor: &str,
    ) -> Result<usize, Error> {
        let mut state = self.lock()?;
        let keys: Vec<Key> = targets
            .iter()
            .map(|t| (List::Deny, *t))
            .filter(|k| state.entries.contains_key(k))
            .collect();
        if keys.is_empty() {
            return Ok(0);
        }
        let now = now_ms();
        let n = keys.len();
        self.commit(&mut state, |tx, version| {
            let mut del =
                tx.prepare("DELETE FROM decisions WHERE list = 'deny' AND target = ?1")?;
            for k in &keys {
                del.execute(params![k.1.to_string()])?;
            }
            write_audit(
                tx,
                now,
                version,
                &AuditRow {
                    actor,
                    operation: "unban_bulk",
                    target: format!("{n} targets"),
                    action: None,
                    expires_at_ms: None,
                    reason,
                    origin: "list",
                    decision_id: None,
                    count: n as u64,
                },
            )?;
            Ok((vec![], keys.clone(), ()))
        })?;
        Ok(n)
    }

    /// Removes the deny decision on exactly `target`; [`Error::NotFound`] when there is none.
    pub fn unban(
        &self,
        target: Target,
        reason: &str,
        actor: &str,
    ) -> Result<(Decision, u64), Error> {
        self.remove((List::Deny, target), "unban", reason, actor)
    }

    /// Adds (or replaces) an allowlist entry.
    pub fn allow_add(
        &self,
        target: Target,
        reason: &str,
        actor: &str,
    ) -> Result<(Decision, u64), Error> {
        let mut state = self.lock()?;
        let entry = NewEntry {
            target,
            action: DecisionAction::Allow,
            expires_at_ms: None,
            reason,
            origin: "manual",
            actor,
            now: now_ms(),
        };
        self.add_one(&mut state, &entry, "allow_add")
    }

    /// Removes an allowlist entry; [`Error::NotFound`] when there is none.
    pub fn allow_remove(
        &self,
        target: Target,
        reason: &str,
        actor: &str,
    ) -> Result<(Decision, u64), Error> {
        self.remove((List::Allow, target), "allow_remove", reason, actor)
    }

    fn remove(
        &self,
        key: Key,
        operation: &str,
        reason: &str,
        actor: &str,
    ) -> Result<(Decision, u64), Error> {
        let mut state = self.lock()?;
        let Some(existing) = state.entries.get(&key).cloned() else {
            let what = if key.0 == List::Allow {
                "allowlist entry"
            } else {
                "decision"
            };
            return Err(Error::NotFound(format!("no {what} for {}", key.1)));
        };
        let now = now_ms();
        self.commit(&mut state, |tx, version| {
            tx.execute(
                "DELETE FROM decisions WHERE list = ?1 AND target = ?2",
                params![key.0.as_str(), key.1.to_string()],
            )?;
            write_audit(
                tx,
                now,
                version,
                &AuditRow {
                    actor,
                    operation,
                    target: key.1.to_string(),
                    action: Some(existing.action.as_str()),
                    expires_at_ms: existing.expires_at_ms,
                    reason,
                    origin: &existing.origin,
                    decision_id: Some(existing.id),
                    count: 1,
                },
            )?;
            Ok((vec![], vec![key], existing.clone()))
        })
    }

    /// Removes every decision whose expiry is at or before `now`, as one version. Returns the
    /// number removed.
    pub fn expire_due(&self, now: i64) -> Result<usize, Error> {
        let mut state = self.lock()?;
        let due: Vec<Key> = state
            .expiry
            .iter()
            .take_while(|(at, _)| *at <= now)
            .map(|(_, k)| *k)
            .collect();
        if due.is_empty() {
            return Ok(0);
        }
        let existing: Vec<Decision> = due
            .iter()
            .filter_map(|k| state.entries.get(k).cloned())
            .collect();
        self.commit(&mut state, |tx, version| {
            let mut del = tx.prepare("DELETE FROM decisions WHERE list = ?1 AND target = ?2")?;
            for d in &existing {
                del.execute(params![d.action.list().as_str(), d.target.to_string()])?;
                write_audit(
                    tx,
                    now,
                    version,
                    &AuditRow {
                        actor: "warden",
                        operation: "expire",
                        target: d.target.to_string(),
                        action: Some(d.action.as_str()),
                        expires_at_ms: d.expires_at_ms,
                        reason: "ttl elapsed",
                        origin: &d.origin,
                        decision_id: Some(d.id),
                        count: 1,
                    },
                )?;
            }
            Ok((vec![], due.clone(), ()))
        })?;
        Ok(existing.len())
    }

    /// Commits one change: `f` writes its rows inside the transaction and returns the decisions
    /// added and the keys removed; then the version is bumped, memory updated and the change
    /// broadcast. Nothing changes in memory if the commit fails.
    fn commit<T>(
        &self,
        state: &mut State,
        f: impl FnOnce(
            &rusqlite::Transaction<'_>,
            u64,
        ) -> Result<(Vec<Decision>, Vec<Key>, T), rusqlite::Error>,
    ) -> Result<(T, u64), Error> {
        let from_version = state.version;
        let version = from_version + 1;
        let tx = state.conn.transaction().map_err(storage)?;
        let (added, removed, out) = f(&tx, version).map_err(storage)?;
        tx.execute(
            "INSERT INTO meta (key, value) VALUES ('version', ?1) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            [to_i64(version)],
        )
        .map_err(storage)?;
        tx.commit().map_err(storage)?;

        let oversized = added.len() + removed.len() > self.chunk_entries;
        let mut change = Change {
            from_version,
            version,
            upserts: Vec::new(),
            removals: Vec::new(),
            oversized,
        };
        for key in &removed {
            if let Some(at) = state.entries.remove(key).and_then(|old| old.expires_at_ms) {
                state.expiry.remove(&(at, *key));
            }
            if !oversized {
                change.removals.push(entry_key(key));
            }
        }
        for d in added {
            let key = d.key();
            if let Some(at) = state.entries.get(&key).and_then(|old| old.expires_at_ms) {
                state.expiry.remove(&(at, key));
            }
            if let Some(at) = d.expires_at_ms {
                state.expiry.insert((at, key));
            }
            if !oversized {
                change.upserts.push(d.list_entry());
            }
            state.entries.insert(key, d);
        }
        state.version = version;
        state.snapshot = None;
        let change = Arc::new(change);
        state.log.push_back(Arc::clone(&change));
        while state.log.len() > self.log_versions {
            state.log.pop_front();
        }
        // No receivers is fine: no filter is connected.
        let _ = self.changes.send(change);
        self.metrics.decisions_version.store(version, Relaxed);
        self.metrics
            .decisions_entries
            .store(state.entries.len() as u64, Relaxed);
        Ok((out, version))
    }
}

pub(super) fn covering_allow<'a>(state: &'a State, target: &Target) -> Option<&'a Decision> {
    state
        .entries
        .values()
        .filter(|d| d.action == DecisionAction::Allow)
        .find(|d| d.target.contains(target))
}

pub(super) fn allow_conflict(target: &Target, allow: &Decision) -> Error {
    Error::Conflict(format!(
        "{target} is covered by allowlist entry {} (id {}, reason {:?}); remove it first with `warden allow remove {}`",
        allow.target, allow.id, &*allow.reason, allow.target
    ))
}

/// A deny, throttle or allow entry about to be added.
pub(super) struct NewEntry<'a> {
    target: Target,
    action: DecisionAction,
    expires_at_ms: Option<i64>,
    reason: &'a str,
    origin: &'a str,
    actor: &'a str,
    now: i64,
}

pub(super) fn insert_decision(
    tx: &rusqlite::Transaction<'_>,
    e: &NewEntry<'_>,
) -> Result<Decision, rusqlite::Error> {
    // INSERT OR REPLACE gives a replaced decision a fresh id, so records blocked by the old and
    // the new decision stay distinguishable.
    tx.execute(
        "INSERT OR REPLACE INTO decisions (list, target, action, expires_at_ms, reason, origin, actor, created_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        params![e.action.list().as_str(), e.target.to_string(), e.action.as_str(), e.expires_at_ms, e.reason, e.origin, e.actor, e.now],
    )?;
    Ok(Decision {
        id: to_u64(tx.last_insert_rowid()),
        target: e.target,
        action: e.action,
        expires_at_ms: e.expires_at_ms,
        reason: Arc::from(e.reason),
        origin: Arc::from(e.origin),
        actor: Arc::from(e.actor),
        created_ms: e.now,
    })
}

/// Removes expired decisions every `interval` until `stop` fires.
pub async fn expiry_task(
    decisions: Arc<Decisions>,
    interval: std::time::Duration,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = stop.changed() => return,
        }
        let d = Arc::clone(&decisions);
        match tokio::task::spawn_blocking(move || d.expire_due(now_ms())).await {
            Ok(Ok(0)) => {}
            Ok(Ok(n)) => tracing::info!(expired = n, "removed expired decisions"),
            Ok(Err(e)) => tracing::warn!(error = %e, "expiring decisions failed"),
            Err(e) => tracing::warn!(error = %e, "expiry task failed"),
        }
    }
}

/// The change log and snapshots the Subscribe streams are fed from (types in `changes`).
impl Decisions {
    /// What a filter that has `known_version` needs, plus a receiver for every later change.
    /// Taken under the lock so nothing falls between the two.
    pub fn catch_up(
        &self,
        known_version: u64,
    ) -> Result<(Catchup, broadcast::Receiver<Arc<Change>>), Error> {
        let mut state = self.lock()?;
        let rx = self.changes.subscribe();
        let current = state.version;
        if known_version == current && known_version != 0 {
            return Ok((Catchup::UpToDate(current), rx));
        }
        if known_version != 0
            && known_version < current
            && let Some(delta) = self.merged_since(&state, known_version)
        {
            return Ok((Catchup::Delta(delta), rx));
        }
        Ok((Catchup::Snapshot(self.snapshot(&mut state)), rx))
    }

    /// The changes after `known` merged into one delta, if the log still holds them all and
    /// they are small enough to send as one message.
    fn merged_since(&self, state: &State, known: u64) -> Option<Change> {
        let first = state.log.front()?;
        if first.from_version > known {
            return None;
        }
        let mut merged: HashMap<(Vec<u8>, u32, i32), Option<ListEntry>> = HashMap::new();
        for change in state.log.iter().filter(|c| c.from_version >= known) {
            if change.oversized {
                return None;
            }
            for k in &change.removals {
                merged.insert((k.address.clone(), k.prefix_len, k.action), None);
            }
            for e in &change.upserts {
                let table = if e.action == Action::Allow as i32 {
                    Action::Allow
                } else {
                    Action::Deny
                } as i32;
                merged.insert((e.address.clone(), e.prefix_len, table), Some(e.clone()));
            }
            if merged.len() > self.chunk_entries {
                return None;
            }
        }
        let mut delta = Change {
            from_version: known,
            version: state.version,
            upserts: Vec::new(),
            removals: Vec::new(),
            oversized: false,
        };
        for ((address, prefix_len, action), entry) in merged {
            match entry {
                Some(e) => delta.upserts.push(e),
                None => delta.removals.push(EntryKey {
                    address,
                    prefix_len,
                    action,
                }),
            }
        }
        Some(delta)
    }

    fn snapshot(&self, state: &mut State) -> Arc<Snapshot> {
        if let Some(s) = &state.snapshot {
            return Arc::clone(s);
        }
        let started = std::time::Instant::now();
        let version = state.version;
        let mut chunks = Vec::new();
        let mut current = Vec::with_capacity(self.chunk_entries.min(state.entries.len()));
        for d in state.entries.values() {
            current.push(d.list_entry());
            if current.len() == self.chunk_entries {
                chunks.push(SnapshotChunk {
                    version,
                    first: chunks.is_empty(),
                    last: false,
                    entries: std::mem::take(&mut current),
                });
            }
        }
        if !current.is_empty() || chunks.is_empty() {
            chunks.push(SnapshotChunk {
                version,
                first: chunks.is_empty(),
                last: false,
                entries: current,
            });
        }
        if let Some(last) = chunks.last_mut() {
            last.last = true;
        }
        let snapshot = Arc::new(Snapshot {
            version,
            chunks,
            entries: state.entries.len(),
        });
        tracing::info!(
            version,
            entries = snapshot.entries,
            chunks = snapshot.chunks.len(),
            millis = started.elapsed().as_millis() as u64,
            "built deny-list snapshot"
        );
        state.snapshot = Some(Arc::clone(&snapshot));
        snapshot
    }
}

/// The decisions audit (types in `audit`).
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
