//! `GET /api/v1/report/access`: who (principal, or client address when nobody was identified)
//! reached which host and path, how often, when first and last, and how many of those attempts
//! were denied. The report is an aggregation over the record store made for this endpoint, so it
//! lives with its handler; its wire types ([`ReportRow`], [`ReportResponse`], the CSV form) are in
//! [`super::model::report`], shared with the CLI.

use super::AppState;
use super::model::report::DEFAULT_SINCE;
use super::model::{ErrorBody, ReportFormat, ReportParams, ReportResponse, ReportRow, to_csv};
use crate::error::Error;
use crate::store::query::{RecordFilter, RecordQuery, parse_field};
use crate::store::scan::Order;
use crate::store::{Store, scan_matching};
use crate::time::{TimeBound, rfc3339};
use axum::Json;
use axum::extract::{Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use std::collections::{BTreeMap, HashMap};
use std::ops::ControlFlow;
use warden_proto::pb::Verdict;

/// Who reached which host and path, as JSON (default) or CSV.
#[utoipa::path(
    get,
    path = "/api/v1/report/access",
    operation_id = "report.access",
    tag = "report",
    params(ReportParams),
    responses(
        (status = 200, description = "The report: JSON, or CSV with `format=csv`", content(
            (ReportResponse = "application/json"),
            (String = "text/csv"),
        )),
        (status = 400, description = "An invalid or unknown parameter", body = ErrorBody),
        (status = 503, description = "The store failed; retry", body = ErrorBody),
        super::Refusals,
    )
)]
pub(super) async fn report(
    State(s): State<AppState>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Response, Error> {
    let q = ReportQuery::from_params(&params)?;
    let rows = access_report(&s.store, &q).await?;
    Ok(match q.format {
        ReportFormat::Csv => (
            [(header::CONTENT_TYPE, "text/csv; charset=utf-8")],
            to_csv(&rows),
        )
            .into_response(),
        ReportFormat::Json | ReportFormat::Table => Json(response(&q, rows)).into_response(),
    })
}

/// Wraps rows with the resolved window.
fn response(q: &ReportQuery, rows: Vec<ReportRow>) -> ReportResponse {
    let now = crate::time::now_ms();
    ReportResponse {
        since: rfc3339(q.since.resolve(now)),
        until: rfc3339(q.until.map_or(now, |u| u.resolve(now))),
        rows,
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
            since: parse_field("since", DEFAULT_SINCE)?,
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Synchronous;
    use crate::metrics::Metrics;
    use crate::store::tests::{filter, record};
    use std::sync::Arc;
    use warden_proto::pb::{AuthDecision, Principal, Verdict};

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
