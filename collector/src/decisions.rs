//! Deny-list decisions and the allowlist: durable in SQLite, mirrored in memory, versioned.
//!
//! Every change (ban, unban, expiry, allowlist add/remove, bulk load) commits in one transaction
//! together with the bumped version and an admin-audit row, then updates memory, appends to the
//! bounded change log and is broadcast to the Subscribe streams — all under one lock, so a stream
//! that takes a snapshot and subscribes under that lock never misses or double-applies a change.

use crate::error::Error;
use crate::metrics::Metrics;
use crate::target::Target;
use crate::time::{Ttl, now_ms, rfc3339};
use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;
use std::collections::{BTreeSet, HashMap, VecDeque};
use std::str::FromStr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::broadcast;
use warden_proto::pb::{Action, EntryKey, ListEntry, SnapshotChunk};

const SCHEMA: &str = "
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

/// What a decision does to matching clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DecisionAction {
    /// Refuse (403).
    Deny,
    /// Rate-limit (429).
    Throttle,
    /// Allowlist: never blocked.
    Allow,
}

impl DecisionAction {
    /// The stored and JSON name.
    pub fn as_str(self) -> &'static str {
        match self {
            DecisionAction::Deny => "deny",
            DecisionAction::Throttle => "throttle",
            DecisionAction::Allow => "allow",
        }
    }

    fn proto(self) -> Action {
        match self {
            DecisionAction::Deny => Action::Deny,
            DecisionAction::Throttle => Action::Throttle,
            DecisionAction::Allow => Action::Allow,
        }
    }

    fn list(self) -> List {
        if self == DecisionAction::Allow {
            List::Allow
        } else {
            List::Deny
        }
    }
}

impl FromStr for DecisionAction {
    type Err = String;

    /// Parses a ban action; `allow` is not one (use the allowlist).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "deny" => Ok(DecisionAction::Deny),
            "throttle" => Ok(DecisionAction::Throttle),
            _ => Err(format!("{s:?} is not an action (deny or throttle)")),
        }
    }
}

/// Which table an entry lives in. One entry per (list, target): a new ban of the same target
/// replaces the old one, as the filter's deny list does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum List {
    Deny,
    Allow,
}

impl List {
    fn as_str(self) -> &'static str {
        match self {
            List::Deny => "deny",
            List::Allow => "allow",
        }
    }
}

type Key = (List, Target);

/// Where a decision came from: `manual`, `rule:<name>` or `list:<file>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin(String);

impl Origin {
    /// A decision made by hand (CLI or API).
    pub fn manual() -> Origin {
        Origin("manual".into())
    }

    /// A decision loaded from a list file.
    pub fn list(file: &str) -> Origin {
        Origin(format!("list:{file}"))
    }

    /// The origin text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for Origin {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let ok = s == "manual"
            || s.strip_prefix("rule:").is_some_and(|n| !n.is_empty())
            || s.strip_prefix("list:").is_some_and(|n| !n.is_empty());
        if ok && s.len() <= 256 {
            Ok(Origin(s.to_string()))
        } else {
            Err(format!(
                "{s:?} is not an origin (manual, rule:<name> or list:<file>)"
            ))
        }
    }
}

/// One deny, throttle or allow decision.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    /// Unique id; a replaced decision gets a new one.
    pub id: u64,
    /// The normalized network.
    pub target: Target,
    /// What to do.
    pub action: DecisionAction,
    /// When it stops applying, ms since the epoch; `None` means never.
    pub expires_at_ms: Option<i64>,
    /// Why.
    pub reason: Arc<str>,
    /// Where it came from.
    pub origin: Arc<str>,
    /// Who made it.
    pub actor: Arc<str>,
    /// When it was made, ms since the epoch.
    pub created_ms: i64,
}

/// The JSON shape of a [`Decision`].
#[derive(Debug, Serialize)]
pub struct DecisionView<'a> {
    /// Decision id.
    pub id: u64,
    /// Network, e.g. `203.0.113.7/32`.
    pub target: String,
    /// `deny`, `throttle` or `allow`.
    pub action: &'static str,
    /// RFC 3339 or null.
    pub expires_at: Option<String>,
    /// ms since the epoch or null.
    pub expires_at_ms: Option<i64>,
    /// Why.
    pub reason: &'a str,
    /// Origin.
    pub origin: &'a str,
    /// Who.
    pub actor: &'a str,
    /// RFC 3339.
    pub created_at: String,
    /// ms since the epoch.
    pub created_ms: i64,
}

impl Decision {
    /// The JSON view.
    pub fn view(&self) -> DecisionView<'_> {
        DecisionView {
            id: self.id,
            target: self.target.to_string(),
            action: self.action.as_str(),
            expires_at: self.expires_at_ms.map(rfc3339),
            expires_at_ms: self.expires_at_ms,
            reason: &self.reason,
            origin: &self.origin,
            actor: &self.actor,
            created_at: rfc3339(self.created_ms),
            created_ms: self.created_ms,
        }
    }

    fn key(&self) -> Key {
        (self.action.list(), self.target)
    }

    fn list_entry(&self) -> ListEntry {
        ListEntry {
            address: self.target.address_bytes(),
            prefix_len: self.target.prefix_len(),
            action: self.action.proto() as i32,
            expires_at_ms: self.expires_at_ms.unwrap_or(0),
            decision_id: self.id,
            reason: self.reason.to_string(),
            origin: self.origin.to_string(),
        }
    }
}

fn entry_key(key: &Key) -> EntryKey {
    EntryKey {
        address: key.1.address_bytes(),
        prefix_len: key.1.prefix_len(),
        action: if key.0 == List::Allow {
            Action::Allow
        } else {
            Action::Deny
        } as i32,
    }
}

/// A request to ban one target.
#[derive(Debug, Clone)]
pub struct BanRequest {
    /// The network.
    pub target: Target,
    /// `deny` or `throttle`.
    pub action: DecisionAction,
    /// Lifetime.
    pub ttl: Ttl,
    /// Why.
    pub reason: String,
    /// Who.
    pub actor: String,
    /// Where from.
    pub origin: Origin,
}

/// A bulk load's result: how many were added, which targets were skipped with the allowlist
/// entry covering each, and the new version.
pub type BulkOutcome = (usize, Vec<(Target, Target)>, u64);

/// One committed version's changes, as broadcast to the Subscribe streams.
#[derive(Debug)]
pub struct Change {
    /// The version before.
    pub from_version: u64,
    /// The version after.
    pub version: u64,
    /// Added or replaced entries.
    pub upserts: Vec<ListEntry>,
    /// Removed entries.
    pub removals: Vec<EntryKey>,
    /// Set when the change was too large to keep or send as a delta (a bulk load): streams send
    /// a chunked snapshot instead, and the entry lists are empty.
    pub oversized: bool,
}

/// A full deny-list state, chunked for sending.
#[derive(Debug)]
pub struct Snapshot {
    /// The version it represents.
    pub version: u64,
    /// Chunks with `first`/`last` set; at least one, even when empty.
    pub chunks: Vec<SnapshotChunk>,
    /// Total entries.
    pub entries: usize,
}

/// What a (re)subscribing filter needs first.
#[derive(Debug)]
pub enum Catchup {
    /// Already current; the version is repeated in an empty delta.
    UpToDate(u64),
    /// The merged changes since the filter's version.
    Delta(Change),
    /// Everything.
    Snapshot(Arc<Snapshot>),
}

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

struct State {
    conn: Connection,
    version: u64,
    entries: HashMap<Key, Decision>,
    expiry: BTreeSet<(i64, Key)>,
    log: VecDeque<Arc<Change>>,
    snapshot: Option<Arc<Snapshot>>,
}

/// The decision store. Share it behind an `Arc`; blocking methods do SQLite I/O and belong on
/// the blocking pool (the async wrappers do that).
pub struct Decisions {
    state: Mutex<State>,
    changes: broadcast::Sender<Arc<Change>>,
    log_versions: usize,
    chunk_entries: usize,
    metrics: Arc<Metrics>,
}

struct AuditRow<'a> {
    actor: &'a str,
    operation: &'a str,
    target: String,
    action: Option<&'a str>,
    expires_at_ms: Option<i64>,
    reason: &'a str,
    origin: &'a str,
    decision_id: Option<u64>,
    count: u64,
}

fn storage(e: rusqlite::Error) -> Error {
    Error::Storage(e.to_string())
}

fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn to_u64(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
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

    fn lock(&self) -> Result<MutexGuard<'_, State>, Error> {
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

fn covering_allow<'a>(state: &'a State, target: &Target) -> Option<&'a Decision> {
    state
        .entries
        .values()
        .filter(|d| d.action == DecisionAction::Allow)
        .find(|d| d.target.contains(target))
}

fn allow_conflict(target: &Target, allow: &Decision) -> Error {
    Error::Conflict(format!(
        "{target} is covered by allowlist entry {} (id {}, reason {:?}); remove it first with `warden allow remove {}`",
        allow.target, allow.id, &*allow.reason, allow.target
    ))
}

/// A deny, throttle or allow entry about to be added.
struct NewEntry<'a> {
    target: Target,
    action: DecisionAction,
    expires_at_ms: Option<i64>,
    reason: &'a str,
    origin: &'a str,
    actor: &'a str,
    now: i64,
}

fn insert_decision(
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

fn write_audit(
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

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::config::Synchronous;
    use std::path::Path;
    use std::time::Duration;

    pub(crate) fn open(dir: &Path) -> Arc<Decisions> {
        let conn = crate::db::open_connection(&dir.join("warden.db"), Synchronous::Normal).unwrap();
        Decisions::open(conn, 100, 1000, Arc::new(Metrics::default())).unwrap()
    }

    pub(crate) fn ban(target: &str, ttl: Option<Duration>) -> BanRequest {
        BanRequest {
            target: target.parse().unwrap(),
            action: DecisionAction::Deny,
            ttl: Ttl(ttl),
            reason: "scanner".into(),
            actor: "ops@host".into(),
            origin: Origin::manual(),
        }
    }

    #[test]
    fn decisions_survive_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let d = open(dir.path());
        let (ban1, v1) = d.ban(ban("203.0.113.7", None)).unwrap();
        assert_eq!(v1, 1);
        d.allow_add("10.0.0.0/8".parse().unwrap(), "office", "ops")
            .unwrap();
        drop(d);
        let d = open(dir.path());
        assert_eq!(d.version(), 2);
        let (deny, _) = d.list(false, 100).unwrap();
        assert_eq!(deny, vec![ban1]);
        let (allow, total) = d.list(true, 100).unwrap();
        assert_eq!(total, 1);
        assert_eq!(allow[0].target.to_string(), "10.0.0.0/8");
    }

    #[test]
    fn expired_decisions_are_removed_as_a_new_version() {
        let dir = tempfile::tempdir().unwrap();
        let d = open(dir.path());
        let (b, _) = d
            .ban(ban("203.0.113.7", Some(Duration::from_secs(60))))
            .unwrap();
        d.ban(ban("203.0.113.8", None)).unwrap();
        assert_eq!(d.expire_due(now_ms()).unwrap(), 0);
        let at = b.expires_at_ms.unwrap();
        assert_eq!(d.expire_due(at).unwrap(), 1);
        assert_eq!(d.version(), 3);
        let (left, _) = d.list(false, 10).unwrap();
        assert_eq!(left.len(), 1);
        assert_eq!(left[0].target.to_string(), "203.0.113.8/32");
        let audit = d.audit(None, 10).unwrap();
        assert_eq!(audit[0].operation, "expire");
        assert_eq!(audit[0].actor, "warden");
    }

    #[test]
    fn a_ban_inside_an_allowlist_entry_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let d = open(dir.path());
        d.allow_add("10.0.0.0/8".parse().unwrap(), "office", "ops")
            .unwrap();
        let e = d.ban(ban("10.1.2.3", None)).unwrap_err();
        assert_eq!(e.http_status(), axum::http::StatusCode::CONFLICT);
        assert!(
            e.to_string()
                .contains("covered by allowlist entry 10.0.0.0/8"),
            "{e}"
        );
        assert_eq!(d.version(), 1, "nothing changed");
        // A wider ban is accepted; the filter's allow entry still wins for the allowed range.
        d.ban(ban("0.0.0.0/0", None)).unwrap();
    }

    #[test]
    fn unban_of_an_unknown_target_is_not_found() {
        let dir = tempfile::tempdir().unwrap();
        let d = open(dir.path());
        let e = d
            .unban("198.51.100.1".parse().unwrap(), "", "ops")
            .unwrap_err();
        assert_eq!(e.http_status(), axum::http::StatusCode::NOT_FOUND);
        assert_eq!(d.version(), 0);
    }

    #[test]
    fn each_change_is_audited() {
        let dir = tempfile::tempdir().unwrap();
        let d = open(dir.path());
        d.ban(ban("203.0.113.7", None)).unwrap();
        d.unban("203.0.113.7".parse().unwrap(), "false positive", "bob")
            .unwrap();
        let audit = d.audit(None, 10).unwrap();
        assert_eq!(audit.len(), 2);
        assert_eq!(
            (
                audit[0].operation.as_str(),
                audit[0].actor.as_str(),
                audit[0].reason.as_str()
            ),
            ("unban", "bob", "false positive")
        );
        assert_eq!((audit[1].operation.as_str(), audit[1].version), ("ban", 1));
    }

    #[test]
    fn catch_up_sends_deltas_when_known_and_snapshots_otherwise() {
        let dir = tempfile::tempdir().unwrap();
        let d = open(dir.path());
        d.ban(ban("203.0.113.1", None)).unwrap();
        d.ban(ban("203.0.113.2", None)).unwrap();
        d.unban("203.0.113.1".parse().unwrap(), "", "ops").unwrap();
        match d.catch_up(1).unwrap().0 {
            Catchup::Delta(c) => {
                assert_eq!((c.from_version, c.version), (1, 3));
                assert_eq!(c.upserts.len(), 1);
                assert_eq!(c.upserts[0].address, vec![203, 0, 113, 2]);
                assert_eq!(c.removals.len(), 1);
                assert_eq!(c.removals[0].address, vec![203, 0, 113, 1]);
            }
            other => panic!("expected a delta, got {other:?}"),
        }
        assert!(matches!(d.catch_up(3).unwrap().0, Catchup::UpToDate(3)));
        match d.catch_up(0).unwrap().0 {
            Catchup::Snapshot(s) => {
                assert_eq!((s.version, s.entries, s.chunks.len()), (3, 1, 1));
                assert!(s.chunks[0].first && s.chunks[0].last);
            }
            other => panic!("expected a snapshot, got {other:?}"),
        }
        assert!(
            matches!(d.catch_up(99).unwrap().0, Catchup::Snapshot(_)),
            "a version from the future"
        );
        // After a restart the log is empty: an old version gets a snapshot.
        drop(d);
        let d = open(dir.path());
        assert!(matches!(d.catch_up(1).unwrap().0, Catchup::Snapshot(_)));
        assert!(matches!(d.catch_up(3).unwrap().0, Catchup::UpToDate(3)));
    }

    #[test]
    fn bulk_loads_are_one_version_and_skip_allowed_targets() {
        let dir = tempfile::tempdir().unwrap();
        let d = open(dir.path());
        d.allow_add("192.168.0.0/16".parse().unwrap(), "lan", "ops")
            .unwrap();
        let targets: Vec<Target> = (0..2000u32)
            .map(|i| Target::from_parts(&(0x0a00_0000 + i).to_be_bytes(), 32).unwrap())
            .chain(["192.168.1.1".parse().unwrap()])
            .collect();
        let (added, skipped, version) = d
            .ban_many(
                targets,
                DecisionAction::Deny,
                Ttl(None),
                "feed",
                "ops",
                &Origin::list("bad.txt"),
            )
            .unwrap();
        assert_eq!((added, skipped.len(), version), (2000, 1, 2));
        let (mut rx_catchup, _) = d.catch_up(1).unwrap();
        assert!(
            matches!(rx_catchup, Catchup::Snapshot(_)),
            "oversized change → snapshot"
        );
        if let Catchup::Snapshot(s) = &mut rx_catchup {
            assert_eq!(s.entries, 2001);
            assert_eq!(s.chunks.len(), 3);
            assert!(s.chunks[0].first && !s.chunks[0].last && s.chunks[2].last);
        }
    }

    #[test]
    fn origins_parse() {
        assert!("manual".parse::<Origin>().is_ok());
        assert!("rule:scanner".parse::<Origin>().is_ok());
        assert!("list:bad.txt".parse::<Origin>().is_ok());
        assert!("rule:".parse::<Origin>().is_err());
        assert!("robot".parse::<Origin>().is_err());
        assert_eq!(
            "allow".parse::<DecisionAction>().unwrap_err(),
            "\"allow\" is not an action (deny or throttle)"
        );
    }
}
