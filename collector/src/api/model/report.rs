//! `GET /api/v1/report/access`: who (principal, or client address when nobody was identified)
//! reached which host and path, how often, when first and last, and how many attempts were
//! denied — as JSON or CSV.

use crate::safe_text::csv_cell;
use serde::{Deserialize, Serialize};
use std::fmt::Write;
use std::str::FromStr;
use utoipa::{IntoParams, ToSchema};

/// The default reporting window.
pub const DEFAULT_SINCE: &str = "30d";

/// The report's parameters; unknown parameters refused.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ReportParams {
    /// Window start: a duration ago or an RFC 3339 time (default `30d`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub since: Option<String>,
    /// Window end (default: now).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub until: Option<String>,
    /// Only this principal.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub principal: Option<String>,
    /// Only this host.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// `json` (default) or `csv` (`table` answers JSON: tables are drawn by the CLI).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub format: Option<String>,
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

/// One (subject, host, path) group.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
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

/// The JSON answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ReportResponse {
    /// Window start, RFC 3339.
    pub since: String,
    /// Window end, RFC 3339.
    pub until: String,
    /// The groups, ordered by subject, host and path.
    pub rows: Vec<ReportRow>,
}

/// The CSV answer (`format=csv`), also what `warden report access --format csv` prints: a header,
/// then one line per row; client-supplied cells are neutralised for spreadsheets
/// ([`crate::safe_text::csv_cell`]).
pub fn to_csv(rows: &[ReportRow]) -> String {
    let mut out =
        String::from("subject,subject_kind,host,path,requests,denied,first_seen,last_seen\n");
    for r in rows {
        let _ = writeln!(
            out,
            "{},{},{},{},{},{},{},{}",
            csv_cell(&r.subject),
            r.subject_kind,
            csv_cell(&r.host),
            csv_cell(&r.path),
            r.requests,
            r.denied,
            r.first_seen,
            r.last_seen
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
