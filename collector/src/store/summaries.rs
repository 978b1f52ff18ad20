//! Record summaries: what a filter's buffer could not keep as records during an outage, counted
//! per client address, host, status class, decision and minute (see the filter's `summary`
//! module). They are stored in the record store's database, in the same transaction as the
//! records of the group commit (so an acknowledgement means durable for both), once per filter
//! instance and summary sequence (a retried summary batch is recognised by its key), linked into
//! their own hash chain in that transaction (`crate::trail`), and deleted by retention with the
//! records.
//!
//! Queries add up the summaries of every filter instance for the same key.

use crate::error::Error;
use crate::store::query::{host_matches, parse_field, parse_limit};
use crate::target::Target;
use crate::time::TimeBound;
use rusqlite::{Connection, Transaction, params};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::net::IpAddr;
use warden_proto::pb::{FilterIdentity, Mechanism, RecordSummary, Verdict};

pub(crate) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS record_summaries (
    filter_node TEXT NOT NULL,
    filter_worker INTEGER NOT NULL,
    filter_instance TEXT NOT NULL,
    sequence INTEGER NOT NULL,
    minute_ms INTEGER NOT NULL,
    client_address TEXT NOT NULL,
    authority TEXT NOT NULL,
    status_class INTEGER NOT NULL,
    verdict INTEGER NOT NULL,
    mechanism INTEGER NOT NULL,
    requests INTEGER NOT NULL,
    request_bytes INTEGER NOT NULL,
    response_bytes INTEGER NOT NULL,
    received_ms INTEGER NOT NULL,
    PRIMARY KEY (filter_node, filter_worker, filter_instance, sequence)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS record_summaries_by_minute ON record_summaries(minute_ms);
";

/// What storing a batch's summaries did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SummaryOutcome {
    /// Summaries newly stored.
    pub accepted: u32,
    /// Summaries already stored (same filter instance and summary sequence).
    pub duplicates: u32,
    /// Requests the newly stored summaries count.
    pub requests: u64,
}

fn int(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// Stores `summaries` of filter `f` inside the group's transaction.
pub(crate) fn insert(
    tx: &Transaction<'_>,
    f: &FilterIdentity,
    summaries: &[RecordSummary],
    received_ms: i64,
) -> Result<SummaryOutcome, Error> {
    let mut outcome = SummaryOutcome::default();
    if summaries.is_empty() {
        return Ok(outcome);
    }
    let mut stmt = tx.prepare_cached(
        "INSERT OR IGNORE INTO record_summaries (filter_node, filter_worker, filter_instance,
            sequence, minute_ms, client_address, authority, status_class, verdict, mechanism,
            requests, request_bytes, response_bytes, received_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)",
    )?;
    for s in summaries {
        let inserted = stmt.execute(params![
            f.node_id,
            f.worker,
            f.instance_id,
            int(s.sequence),
            s.minute_ms,
            s.client_address,
            s.authority,
            s.status_class,
            s.verdict,
            s.mechanism,
            int(s.requests),
            int(s.request_bytes),
            int(s.response_bytes),
            received_ms,
        ])?;
        if inserted == 1 {
            let worker = i64::from(f.worker);
            let sequence = int(s.sequence);
            crate::trail::link_summary(tx, (&f.node_id, worker, &f.instance_id, sequence))?;
            outcome.accepted += 1;
            outcome.requests = outcome.requests.saturating_add(s.requests);
        } else {
            outcome.duplicates += 1;
        }
    }
    Ok(outcome)
}

/// Deletes summaries of minutes that ended before `before_ms` (retention); their links stay in
/// the chain, marked as pruned.
pub(crate) fn prune(tx: &Transaction<'_>, before_ms: i64) -> Result<usize, Error> {
    let before_minute = before_ms.saturating_sub(60_000);
    crate::trail::prune_summary_links(tx, before_minute, crate::time::now_ms())?;
    Ok(tx.execute(
        "DELETE FROM record_summaries WHERE minute_ms < ?1",
        params![before_minute],
    )?)
}

/// Default and maximum rows of a summary query.
const DEFAULT_LIMIT: usize = 1000;

/// A summary query: minutes in a time range, a client network, a host.
#[derive(Debug, Clone, Default)]
pub struct SummaryQuery {
    /// Minutes at or after this time.
    pub since: Option<TimeBound>,
    /// Minutes before this time.
    pub until: Option<TimeBound>,
    /// Client address inside this network.
    pub ip: Option<Target>,
    /// Authority equal to this host (with or without a port).
    pub host: Option<String>,
    /// Maximum number of rows.
    pub limit: usize,
}

impl SummaryQuery {
    /// Builds a query from HTTP query parameters; unknown parameters are refused, so a typo
    /// never silently widens a query.
    pub fn from_params(params: &HashMap<String, String>, max_limit: usize) -> Result<Self, Error> {
        let mut q = SummaryQuery {
            limit: DEFAULT_LIMIT.min(max_limit),
            ..Default::default()
        };
        for (key, value) in params {
            match key.as_str() {
                "since" => q.since = Some(parse_field(key, value)?),
                "until" => q.until = Some(parse_field(key, value)?),
                "ip" => q.ip = Some(parse_field(key, value)?),
                "host" if value.is_empty() => {
                    return Err(Error::invalid(key, "must not be empty"));
                }
                "host" => q.host = Some(value.to_ascii_lowercase()),
                "limit" => q.limit = parse_limit(value, max_limit)?,
                other => return Err(Error::invalid(other, "unknown parameter")),
            }
        }
        Ok(q)
    }
}

/// Requests counted for one client, host, status class, decision and minute, all filter
/// instances together.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[schema(as = Summary)]
pub struct StoredSummary {
    /// Start of the minute, RFC 3339.
    pub minute: String,
    /// Start of the minute, ms since the epoch.
    pub minute_ms: i64,
    /// Client address.
    pub client_address: String,
    /// Host (authority).
    pub authority: String,
    /// Status class: `2xx`, `4xx`, ... (`none` when no response was sent).
    pub status_class: String,
    /// `allow`, `deny` or `unspecified`.
    pub verdict: String,
    /// The mechanism that decided (`rbac`, `warden_deny_list`, ...).
    pub mechanism: String,
    /// Requests counted.
    pub requests: u64,
    /// Request bytes.
    pub request_bytes: u64,
    /// Response bytes.
    pub response_bytes: u64,
}

fn status_class_name(class: i64) -> String {
    if class == 0 {
        "none".into()
    } else {
        format!("{class}xx")
    }
}

fn verdict_name(v: i32) -> String {
    Verdict::try_from(v).map_or_else(
        |_| format!("unknown({v})"),
        |v| {
            v.as_str_name()
                .trim_start_matches("VERDICT_")
                .to_ascii_lowercase()
        },
    )
}

fn mechanism_name(m: i32) -> String {
    Mechanism::try_from(m).map_or_else(
        |_| format!("unknown({m})"),
        |m| {
            m.as_str_name()
                .trim_start_matches("MECHANISM_")
                .to_ascii_lowercase()
        },
    )
}

fn u(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

/// Summaries matching `q` resolved at `now_ms`, newest minute first, then most requests.
pub fn query(
    conn: &Connection,
    q: &SummaryQuery,
    now_ms: i64,
) -> Result<Vec<StoredSummary>, Error> {
    let since = q.since.map_or(i64::MIN, |b| b.resolve(now_ms));
    let until = q.until.map_or(i64::MAX, |b| b.resolve(now_ms));
    let mut stmt = conn.prepare_cached(
        "SELECT minute_ms, client_address, authority, status_class, verdict, mechanism,
                SUM(requests), SUM(request_bytes), SUM(response_bytes)
         FROM record_summaries
         WHERE minute_ms >= ?1 AND minute_ms < ?2
         GROUP BY minute_ms, client_address, authority, status_class, verdict, mechanism
         ORDER BY minute_ms DESC, SUM(requests) DESC, client_address, authority",
    )?;
    let mut rows = stmt.query(params![since, until])?;
    let mut out = Vec::new();
    while let Some(row) = rows.next()? {
        let client_address: String = row.get(1)?;
        let authority: String = row.get(2)?;
        let in_network = q.ip.is_none_or(|net| {
            client_address
                .parse::<IpAddr>()
                .is_ok_and(|ip| net.net().contains(&ip))
        });
        let on_host = q
            .host
            .as_deref()
            .is_none_or(|h| host_matches(&authority, h));
        if !in_network || !on_host {
            continue;
        }
        let minute_ms: i64 = row.get(0)?;
        out.push(StoredSummary {
            minute: crate::time::rfc3339(minute_ms),
            minute_ms,
            client_address,
            authority,
            status_class: status_class_name(row.get(3)?),
            verdict: verdict_name(row.get(4)?),
            mechanism: mechanism_name(row.get(5)?),
            requests: u(row.get(6)?),
            request_bytes: u(row.get(7)?),
            response_bytes: u(row.get(8)?),
        });
        if out.len() >= q.limit {
            break;
        }
    }
    Ok(out)
}
