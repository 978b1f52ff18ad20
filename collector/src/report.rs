//! The access report (`warden report access`, `GET /api/v1/report/access`): who (principal, or
//! client address when nobody was identified) reached which host and path, how often, when first
//! and last, and how many of those attempts were denied.

use crate::error::Error;
use crate::store::query::{RecordFilter, RecordQuery, parse_field};
use crate::store::scan::Order;
use crate::store::{Store, scan_matching};
use crate::time::{TimeBound, rfc3339};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::fmt::Write;
use std::ops::ControlFlow;
use std::str::FromStr;
use warden_proto::pb::Verdict;

/// The default reporting window.
pub const DEFAULT_SINCE: &str = "30d";

/// One (subject, host, path) group.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReportRow {
    /// The principal name, or the client address when no principal was identified.
    pub subject: String,
    /// `principal` or `client`.
    pub subject_kind: String,
    /// Host (authority).
    pub host: String,
    /// Path without query string.
    pub path: String,
    /// Requests in the window.
    pub requests: u64,
    /// Of which denied.
    pub denied: u64,
    /// First request, RFC 3339.
    pub first_seen: String,
    /// Last request, RFC 3339.
    pub last_seen: String,
}

/// Output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReportFormat {
    /// Aligned text table (CLI only).
    Table,
    /// Comma-separated values with a header row.
    Csv,
    /// JSON.
    Json,
}

impl FromStr for ReportFormat {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "table" => Ok(ReportFormat::Table),
            "csv" => Ok(ReportFormat::Csv),
            "json" => Ok(ReportFormat::Json),
            _ => Err(format!("{s:?} is not a format (table, csv or json)")),
        }
    }
}

/// A validated report request.
#[derive(Debug, Clone, PartialEq)]
pub struct ReportQuery {
    /// Window start.
    pub since: TimeBound,
    /// Window end (default: now).
    pub until: Option<TimeBound>,
    /// Only this principal.
    pub principal: Option<String>,
    /// Only this host.
    pub host: Option<String>,
    /// Requested format.
    pub format: ReportFormat,
}

impl ReportQuery {
    /// Parses HTTP parameters (`since`, `until`, `principal`, `host`, `format`).
    pub fn from_params(params: &HashMap<String, String>) -> Result<Self, Error> {
        let mut q = ReportQuery {
            since: TimeBound::Ago(std::time::Duration::from_secs(30 * 86_400)),
            until: None,
            principal: None,
            host: None,
            format: ReportFormat::Json,
        };
        for (key, value) in params {
            match key.as_str() {
                "since" => q.since = parse_field(key, value)?,
                "until" => q.until = Some(parse_field(key, value)?),
                "principal" if !value.is_empty() => q.principal = Some(value.clone()),
                "host" if !value.is_empty() => q.host = Some(value.to_ascii_lowercase()),
                "principal" | "host" => return Err(Error::invalid(key, "must not be empty")),
                "format" => q.format = parse_field(key, value)?,
                other => return Err(Error::invalid(other, "unknown parameter")),
            }
        }
        Ok(q)
    }
}

/// One group while the report is being added up.
struct Tally {
    requests: u64,
    denied: u64,
    first_ms: i64,
    last_ms: i64,
}

/// Runs the report.
pub async fn access_report(store: &Store, q: &ReportQuery) -> Result<Vec<ReportRow>, Error> {
    let filter = RecordFilter::new(
        &RecordQuery {
            since: Some(q.since),
            until: q.until,
            principal: q.principal.clone(),
            host: q.host.clone(),
            ..Default::default()
        },
        crate::time::now_ms(),
    );
    store
        .read(move |conn| {
            // Keyed (subject, host, path, named): rows come out ordered by subject, host, path.
            let mut groups: BTreeMap<(String, String, String, bool), Tally> = BTreeMap::new();
            scan_matching(conn, &filter, Order::OldestFirst, |_, r| {
                let principal = r.principal.as_ref().map(|p| p.name.as_str());
                let (subject, named) = match principal.filter(|n| !n.is_empty()) {
                    Some(name) => (name, true),
                    None => (r.client_address.as_str(), false),
                };
                let path = r.path.split_once('?').map_or(r.path.as_str(), |(p, _)| p);
                let key = (
                    subject.to_string(),
                    r.authority.to_ascii_lowercase(),
                    path.to_string(),
                    named,
                );
                let tally = groups.entry(key).or_insert(Tally {
                    requests: 0,
                    denied: 0,
                    first_ms: r.time_ms,
                    last_ms: r.time_ms,
                });
                tally.requests += 1;
                if r.decision
                    .as_ref()
                    .is_some_and(|d| d.verdict == Verdict::Deny as i32)
                {
                    tally.denied += 1;
                }
                tally.first_ms = tally.first_ms.min(r.time_ms);
                tally.last_ms = tally.last_ms.max(r.time_ms);
                ControlFlow::Continue(())
            })?;
            Ok(groups
                .into_iter()
                .map(|((subject, host, path, named), t)| ReportRow {
                    subject,
                    subject_kind: if named { "principal" } else { "client" }.to_string(),
                    host,
                    path,
                    requests: t.requests,
                    denied: t.denied,
                    first_seen: rfc3339(t.first_ms),
                    last_seen: rfc3339(t.last_ms),
                })
                .collect())
        })
        .await
}

use crate::safe_text::csv_cell as csv_field;

/// Renders rows as CSV with a header.
pub fn to_csv(rows: &[ReportRow]) -> String {
    let mut out =
        String::from("subject,subject_kind,host,path,requests,denied,first_seen,last_seen\n");
    for r in rows {
        let _ = writeln!(
            out,
            "{},{},{},{},{},{},{},{}",
            csv_field(&r.subject),
            r.subject_kind,
            csv_field(&r.host),
            csv_field(&r.path),
            r.requests,
            r.denied,
            r.first_seen,
            r.last_seen
        );
    }
    out
}

/// The JSON answer of the HTTP endpoint.
#[derive(Debug, Serialize, Deserialize)]
pub struct ReportResponse {
    /// Window start, RFC 3339.
    pub since: String,
    /// Window end, RFC 3339.
    pub until: String,
    /// The groups.
    pub rows: Vec<ReportRow>,
}

impl ReportResponse {
    /// Wraps rows with the resolved window.
    pub fn new(q: &ReportQuery, rows: Vec<ReportRow>) -> Self {
        let now = crate::time::now_ms();
        ReportResponse {
            since: rfc3339(q.since.resolve(now)),
            until: rfc3339(q.until.map_or(now, |u| u.resolve(now))),
            rows,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Synchronous;
    use crate::metrics::Metrics;
    use crate::store::tests::{filter, record};
    use std::sync::Arc;
    use warden_proto::pb::{AuthDecision, Principal, Verdict};

    #[test]
    fn csv_quotes_when_needed() {
        let row = ReportRow {
            subject: "alice".into(),
            subject_kind: "principal".into(),
            host: "a.example".into(),
            path: "/x,y".into(),
            requests: 2,
            denied: 1,
            first_seen: "t1".into(),
            last_seen: "t2".into(),
        };
        assert_eq!(
            to_csv(&[row]),
            "subject,subject_kind,host,path,requests,denied,first_seen,last_seen\nalice,principal,a.example,\"/x,y\",2,1,t1,t2\n"
        );
    }

    #[test]
    fn params_are_validated() {
        let p = |k: &str, v: &str| HashMap::from([(k.to_string(), v.to_string())]);
        assert_eq!(
            ReportQuery::from_params(&p("format", "csv"))
                .unwrap()
                .format,
            ReportFormat::Csv
        );
        assert_eq!(
            ReportQuery::from_params(&p("format", "xml"))
                .unwrap_err()
                .to_string(),
            "format: \"xml\" is not a format (table, csv or json)"
        );
        assert!(
            ReportQuery::from_params(&p("since", "1x"))
                .unwrap_err()
                .to_string()
                .starts_with("since: ")
        );
    }

    #[tokio::test]
    async fn groups_by_subject_host_and_path_without_query() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(
            dir.path(),
            Synchronous::Off,
            1000,
            Arc::new(Metrics::default()),
        )
        .unwrap();
        let now = crate::time::now_ms();
        let alice = |seq: u64, t: i64, path: &str, deny: bool| {
            let mut r = record(seq, t);
            r.path = path.into();
            r.principal = Some(Principal {
                name: "alice".into(),
                ..Default::default()
            });
            r.decision = Some(AuthDecision {
                verdict: if deny { Verdict::Deny } else { Verdict::Allow } as i32,
                ..Default::default()
            });
            r
        };
        let old = now - 40 * 86_400_000;
        store
            .write_batch(
                filter(),
                vec![
                    alice(1, now - 3000, "/admin?x=1", true),
                    alice(2, now - 2000, "/admin", false),
                    alice(3, now - 1000, "/home", false),
                    record(4, now - 500),
                    alice(5, old, "/admin", true),
                ],
            )
            .await
            .unwrap();
        let q = ReportQuery::from_params(&HashMap::new()).unwrap();
        let rows = access_report(&store, &q).await.unwrap();
        assert_eq!(rows.len(), 3, "{rows:?}");
        let admin = &rows[1];
        assert_eq!(
            (admin.subject.as_str(), admin.path.as_str()),
            ("alice", "/admin")
        );
        assert_eq!((admin.requests, admin.denied), (2, 1));
        assert_eq!(admin.first_seen, rfc3339(now - 3000));
        assert_eq!(admin.last_seen, rfc3339(now - 2000));
        assert_eq!(rows[0].subject, "203.0.113.7");
        assert_eq!(rows[0].subject_kind, "client");
        let q = ReportQuery {
            principal: Some("alice".into()),
            ..q
        };
        assert_eq!(access_report(&store, &q).await.unwrap().len(), 2);
        let q = ReportQuery {
            principal: None,
            host: Some("nope.example".into()),
            ..q
        };
        assert!(access_report(&store, &q).await.unwrap().is_empty());
    }
}
