//! What the client commands print: aligned tables, JSON lines and short text answers, built from
//! the [`crate::api::model`] types. Every string that came from the server is shown as data
//! ([`crate::safe_text::terminal`]): stored values carry whatever clients sent (hosts, paths, user
//! names), and an escape sequence or a line break in one must not repaint the terminal or forge a
//! line.

use crate::api::model::{
    ApiAuditEntry, AuditEntry, BulkBanResult, ChangeSummary, ChangesPage, Decision, DecisionChange,
    Explanation, FiltersResponse, Record, ReplayResult, ReportRow, RulesStatus, Summary,
};
use serde::Serialize;
use std::fmt::Write;

/// A server string as terminal text.
fn safe(s: &str) -> String {
    crate::safe_text::terminal(s).into_owned()
}

/// An optional server string; `-` when absent.
fn opt(s: Option<&str>) -> String {
    s.map_or_else(|| "-".into(), safe)
}

/// A duration in milliseconds, readable (`15m`); `-` when absent.
fn ms_text(ms: Option<u64>) -> String {
    ms.map_or_else(
        || "-".into(),
        |ms| warden_rules::config::fmt_duration(std::time::Duration::from_millis(ms)),
    )
}

/// One API object as a JSON line. serde_json escapes control characters, so the line is safe as
/// it is.
pub fn json_line(item: &impl Serialize) -> String {
    // The model types serialize infallibly (string map keys only); an empty line would show it.
    let mut line = serde_json::to_string(item).unwrap_or_default();
    line.push('\n');
    line
}

/// API objects as JSON lines.
pub fn json_lines<T: Serialize>(items: &[T]) -> String {
    items.iter().map(json_line).collect()
}

/// A list as JSON lines, or as a table with one `row` per item.
fn list_out<T: Serialize>(
    items: &[T],
    as_json: bool,
    headers: &[&str],
    row: impl Fn(&T) -> Vec<String>,
) -> String {
    if as_json {
        return json_lines(items);
    }
    let rows: Vec<Vec<String>> = items.iter().map(row).collect();
    table(headers, &rows)
}

/// Formats microseconds for the table: 850µs, 12.3ms, 1.20s.
pub fn duration(us: u64) -> String {
    if us < 1000 {
        format!("{us}µs")
    } else if us < 1_000_000 {
        format!("{:.1}ms", us as f64 / 1000.0)
    } else {
        format!("{:.2}s", us as f64 / 1e6)
    }
}

/// Renders an aligned text table.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    // Every cell is shown as data, whoever built it: an escape sequence or a line break in a
    // stored value must not repaint the terminal or forge a row.
    let rows: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            r.iter()
                .map(|c| crate::safe_text::terminal(c).into_owned())
                .collect()
        })
        .collect();
    let rows = rows.as_slice();
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: Vec<&str>| {
        let mut l = String::new();
        for (i, (cell, w)) in cells.iter().zip(&widths).enumerate() {
            if i + 1 == cells.len() {
                l.push_str(cell);
            } else {
                let _ = write!(l, "{cell:<w$}  ");
            }
        }
        out.push_str(l.trim_end());
        out.push('\n');
    };
    line(headers.to_vec());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
    out
}

/// The columns of `warden query`.
pub const RECORD_HEADERS: [&str; 9] = [
    "TIME",
    "CLIENT",
    "METHOD",
    "HOST",
    "PATH",
    "STATUS",
    "DURATION",
    "PRINCIPAL",
    "DECISION",
];

/// One record as a table row.
pub fn record_row(r: &Record) -> Vec<String> {
    vec![
        safe(&r.time),
        safe(&r.client_address),
        safe(&r.method),
        safe(&r.authority),
        safe(&r.path),
        r.status.to_string(),
        duration(r.duration_us),
        principal_cell(r),
        opt(r.decision.as_deref()),
    ]
}

/// The PRINCIPAL cell: the verified principal, else what the client only claimed, marked so
/// that it never reads as an identity.
fn principal_cell(r: &Record) -> String {
    match (&r.principal, &r.claimed_user) {
        (Some(p), _) => safe(p),
        (None, None) => "-".into(),
        (None, Some(claimed)) => format!("(claimed) {}", safe(claimed)),
    }
}

/// `warden summaries`.
pub fn summaries_out(items: &[Summary], as_json: bool) -> String {
    list_out(
        items,
        as_json,
        &[
            "MINUTE",
            "CLIENT",
            "HOST",
            "STATUS",
            "VERDICT",
            "MECHANISM",
            "REQUESTS",
            "BYTES IN",
            "BYTES OUT",
        ],
        |s| {
            vec![
                safe(&s.minute),
                safe(&s.client_address),
                safe(&s.authority),
                safe(&s.status_class),
                safe(&s.verdict),
                safe(&s.mechanism),
                s.requests.to_string(),
                s.request_bytes.to_string(),
                s.response_bytes.to_string(),
            ]
        },
    )
}

/// `warden ban <target>`.
pub fn banned(v: &DecisionChange) -> String {
    let d = &v.decision;
    format!(
        "banned {} ({}, expires {}, id {}, version {})\n",
        safe(&d.target),
        d.action.as_str(),
        d.expires_at.as_deref().map_or_else(|| "never".into(), safe),
        d.id,
        v.version
    )
}

/// `warden ban --file`.
pub fn bulk_banned(name: &str, v: &BulkBanResult) -> String {
    let mut out = format!(
        "banned {} targets from {name} (version {})\n",
        v.added, v.version
    );
    for s in &v.skipped {
        let _ = writeln!(
            out,
            "skipped {}: covered by allowlist entry {}",
            safe(&s.target),
            safe(&s.allow)
        );
    }
    out
}

/// `warden unban`, `warden allow add|remove`: `{verb} {target}{what} (version N)`.
pub fn changed(verb: &str, v: &DecisionChange, what: &str) -> String {
    format!(
        "{verb} {}{what} (version {})\n",
        safe(&v.decision.target),
        v.version
    )
}

/// `warden decisions`, `warden allow list`.
pub fn decisions_out(list: &[Decision], as_json: bool) -> String {
    list_out(
        list,
        as_json,
        &[
            "ID", "TARGET", "ACTION", "EXPIRES", "REASON", "ORIGIN", "ACTOR", "CREATED",
        ],
        |d| {
            vec![
                d.id.to_string(),
                safe(&d.target),
                d.action.as_str().to_string(),
                d.expires_at.as_deref().map_or_else(|| "never".into(), safe),
                safe(&d.reason),
                safe(&d.origin),
                safe(&d.actor),
                safe(&d.created_at),
            ]
        },
    )
}

/// `warden filters`: the connected filters (only them with `--json`), then the accounting.
pub fn filters_out(v: &FiltersResponse, as_json: bool) -> String {
    let list = list_out(
        &v.filters,
        as_json,
        &[
            "NODE",
            "WORKER",
            "INSTANCE",
            "CREDENTIAL",
            "PEER",
            "CONNECTED SINCE",
            "SENT",
            "ACKED",
            "LAST ACK",
        ],
        |f| {
            vec![
                safe(&f.node_id),
                f.worker.to_string(),
                safe(&f.instance_id),
                safe(&f.credential),
                safe(&f.peer),
                safe(&f.connected_since),
                f.version_sent.to_string(),
                f.version_acked.to_string(),
                opt(f.last_ack.as_deref()),
            ]
        },
    );
    if as_json {
        return list;
    }
    let accounting = list_out(
        &v.accounting,
        false,
        &[
            "NODE",
            "WORKER",
            "INSTANCE",
            "RECEIVED",
            "STORED",
            "REPEATED",
            "REFUSED",
            "SUMMARIZED",
            "DROPPED",
            "SUMMARIES",
            "GAPS",
            "LAST SEEN",
        ],
        |a| {
            vec![
                safe(&a.node_id),
                a.worker.to_string(),
                safe(&a.instance_id),
                a.received.to_string(),
                a.stored.to_string(),
                a.duplicates.to_string(),
                a.refused.to_string(),
                a.dropped.summarized.to_string(),
                (a.dropped.buffer_full + a.dropped.batch_refused).to_string(),
                format!("{} ({} requests)", a.summaries.stored, a.summaries.requests),
                a.gaps.to_string(),
                safe(&a.last_seen),
            ]
        },
    );
    format!(
        "deny-list version {}\n{list}\nrecords by filter instance since the collector started (SUMMARIZED: buffer full, counted in record summaries (`warden summaries`); DROPPED: only counted (buffer and summary table full, or a batch refused); GAPS: sequence numbers not accounted for yet)\n{accounting}",
        v.version
    )
}

/// `warden audit`.
pub fn audit_out(list: &[AuditEntry], as_json: bool) -> String {
    list_out(
        list,
        as_json,
        &[
            "TIME",
            "ACTOR",
            "OPERATION",
            "TARGET",
            "ACTION",
            "EXPIRES",
            "REASON",
            "VERSION",
        ],
        |e| {
            vec![
                safe(&e.time),
                safe(&e.actor),
                safe(&e.operation),
                safe(&e.target),
                opt(e.action.as_deref()),
                opt(e.expires_at.as_deref()),
                safe(&e.reason),
                e.version.to_string(),
            ]
        },
    )
}

/// What a change did, in one line: `hosts shop.example.com; +hosts *.example.com; tls
/// shop/web-tls; cert expires 2026-12-05T00:00:00Z; auth removed: ...; fields spec.rules[0].host`.
pub fn change_summary_text(s: &ChangeSummary) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut list = |label: &str, items: &[String]| {
        if !items.is_empty() {
            parts.push(format!("{label} {}", items.join(",")));
        }
    };
    list("hosts", &s.hosts);
    list("+hosts", &s.hosts_added);
    list("-hosts", &s.hosts_removed);
    list("paths", &s.paths);
    list("backends", &s.backends);
    list("tls-hosts", &s.tls_hosts);
    list("tls", &s.tls_secrets);
    list("no-tls", &s.listeners_without_tls);
    list("+rules", &s.rules_added);
    list("-rules", &s.rules_removed);
    list("fields", &s.changed_fields);
    list("notes", &s.notes);
    if let Some(t) = &s.secret_type {
        parts.push(format!("type {t}"));
    }
    if let Some(c) = &s.certificate {
        parts.push(format!(
            "cert sha256 {}… expires {}",
            c.sha256.chars().take(16).collect::<String>(),
            c.not_after
        ));
    }
    if let Some(a) = &s.auth_removed {
        parts.push(format!("auth removed: {a}"));
    }
    if let Some(p) = &s.plugin {
        let state = if p.removed {
            "removed".to_string()
        } else if p.fail_open {
            "fail open".to_string()
        } else {
            p.failure_policy
                .clone()
                .unwrap_or_else(|| "fail closed".into())
        };
        parts.push(format!(
            "{} {} ({state})",
            p.kind,
            p.url.as_deref().unwrap_or("-")
        ));
    }
    if parts.is_empty() {
        "-".into()
    } else {
        parts.join("; ")
    }
}

/// `warden changes`: the changes, and with `--before-spike` the spike they preceded.
pub fn changes_out(
    page: &ChangesPage,
    before_spike_of: Option<&str>,
    since: &str,
    as_json: bool,
) -> String {
    let table = list_out(
        &page.changes,
        as_json,
        &[
            "TIME", "USER", "VERB", "RESOURCE", "OBJECT", "RESULT", "SUMMARY", "FINDINGS",
        ],
        |c| {
            let r = &c.change;
            let user = match &r.impersonated_user {
                Some(as_user) => format!("{} as {as_user}", r.user),
                None => r.user.clone(),
            };
            let object = if r.namespace.is_empty() {
                r.name.clone()
            } else {
                format!("{}/{}", r.namespace, r.name)
            };
            let result = match r.response_code {
                Some(code) => format!("{} {code}", r.outcome),
                None => r.outcome.clone(),
            };
            let findings: Vec<String> = c
                .findings
                .iter()
                .map(|f| {
                    let dry = if f.dry_run { " (dry run)" } else { "" };
                    format!("{}:{}{dry}", f.rule, f.condition)
                })
                .collect();
            vec![
                safe(&c.time),
                safe(&user),
                safe(&r.verb),
                safe(&r.resource),
                safe(&object),
                safe(&result),
                safe(&change_summary_text(&r.summary)),
                opt(Some(findings.join(","))
                    .filter(|f| !f.is_empty())
                    .as_deref()),
            ]
        },
    );
    let Some(host) = before_spike_of else {
        return table;
    };
    if as_json {
        // The spike first, as its own line, so a script sees what the changes preceded.
        let head = page
            .spike
            .as_ref()
            .map(|s| json_line(&serde_json::json!({ "spike": s })))
            .unwrap_or_default();
        return head + &table;
    }
    match &page.spike {
        None => format!(
            "no spike of denials on {} since {}\n",
            safe(host),
            safe(since)
        ),
        Some(s) => format!(
            "denials on {} spiked at {}: {} in {}s (mean {} per bucket in the hour before); changes that touched it before:\n{table}",
            safe(&s.host),
            safe(&s.start),
            s.denials,
            s.bucket_seconds,
            s.baseline_mean
        ),
    }
}

/// `warden audit --api`.
pub fn api_audit_out(list: &[ApiAuditEntry], as_json: bool) -> String {
    list_out(
        list,
        as_json,
        &[
            "TIME",
            "ACTOR",
            "KIND",
            "ROLE",
            "OPERATION",
            "SOURCE",
            "STATUS",
            "OUTCOME",
        ],
        |e| {
            vec![
                safe(&e.time),
                opt(Some(e.actor.as_str()).filter(|a| !a.is_empty())),
                safe(&e.actor_kind),
                opt(e.role.as_deref()),
                safe(&e.operation),
                safe(&e.source),
                e.status.to_string(),
                safe(&e.outcome),
            ]
        },
    )
}

/// `warden report access --format table`.
pub fn report_table(rows: &[ReportRow]) -> String {
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            vec![
                r.subject.clone(),
                r.host.clone(),
                r.path.clone(),
                r.requests.to_string(),
                r.denied.to_string(),
                r.first_seen.clone(),
                r.last_seen.clone(),
            ]
        })
        .collect();
    table(
        &[
            "SUBJECT",
            "HOST",
            "PATH",
            "REQUESTS",
            "DENIED",
            "FIRST SEEN",
            "LAST SEEN",
        ],
        &cells,
    )
}

/// `warden rules reload`.
pub fn reloaded(status: Option<&RulesStatus>) -> String {
    let (source, rules) = status.map_or((String::new(), 0), |s| (safe(&s.source), s.rules.len()));
    format!("rules reloaded from {source} ({rules} rules)\n")
}

/// `warden rules list`.
pub fn rules_out(v: &RulesStatus) -> String {
    let mut out = format!(
        "source: {}\nloaded: {}\n",
        safe(&v.source),
        safe(&v.loaded_at)
    );
    let rows: Vec<Vec<String>> = v
        .rules
        .iter()
        .map(|r| vec![safe(&r.name), safe(&r.kind), safe(&r.summary)])
        .collect();
    out.push_str(&table(&["NAME", "KIND", "RULE"], &rows));
    if let Some(error) = &v.last_error {
        let _ = writeln!(
            out,
            "last reload refused at {} (rules above still in force):\n{}",
            v.last_error_at.as_deref().map_or_else(String::new, safe),
            safe(error)
        );
    }
    out
}

/// `warden rules replay`.
pub fn replay_out(v: &ReplayResult) -> String {
    let rows: Vec<Vec<String>> = v
        .decisions
        .iter()
        .map(|d| {
            vec![
                crate::time::rfc3339(d.at_ms),
                safe(&d.rule),
                safe(&d.target),
                format!(
                    "{}{}",
                    d.action.as_str(),
                    if d.dry_run { " (dry run)" } else { "" }
                ),
                ms_text(d.ttl_ms),
                format!("{}/{}", d.observed, d.threshold),
                safe(&d.reason),
            ]
        })
        .collect();
    let mut out = table(
        &[
            "TIME",
            "RULE",
            "TARGET",
            "ACTION",
            "TTL",
            "OBSERVED/THRESHOLD",
            "REASON",
        ],
        &rows,
    );
    let _ = writeln!(
        out,
        "{} decision(s) over {} record(s) from {} to {}{}",
        v.decisions.len(),
        v.records,
        safe(&v.since),
        safe(&v.until),
        if v.truncated { " (truncated)" } else { "" }
    );
    out
}

/// `warden explain`.
pub fn explain_out(v: &Explanation) -> String {
    let mut out = String::new();
    let ip = safe(&v.ip);
    if !v.allowlist.is_empty() {
        let _ = writeln!(out, "{ip} is ALLOWLISTED (never blocked):");
        for a in &v.allowlist {
            let _ = writeln!(
                out,
                "  {} (id {}): {}",
                safe(&a.target),
                a.id,
                safe(&a.reason)
            );
        }
    }
    if v.decisions.is_empty() {
        let _ = writeln!(out, "{ip} is not blocked now.");
    } else {
        let verb = if v.allowlist.is_empty() {
            "is BLOCKED"
        } else {
            "has decisions (overridden by the allowlist)"
        };
        let _ = writeln!(out, "{ip} {verb} by:");
        for d in &v.decisions {
            let _ = writeln!(
                out,
                "  {} {} (id {}, origin {}, by {}, until {}): {}",
                d.action.as_str(),
                safe(&d.target),
                d.id,
                safe(&d.origin),
                safe(&d.actor),
                d.expires_at
                    .as_deref()
                    .map_or_else(|| "forever".into(), safe),
                safe(&d.reason)
            );
        }
    }
    if !v.would_block_dry_run.is_empty() {
        let _ = writeln!(out, "Would be blocked by dry-run rule(s):");
        for d in &v.would_block_dry_run {
            let _ = writeln!(
                out,
                "  {}: {}",
                safe(&d.decision.rule),
                safe(&d.decision.reason)
            );
        }
    }
    if !v.rule_decisions.is_empty() {
        let _ = writeln!(out, "Rule decisions (newest first):");
        for h in &v.rule_decisions {
            let d = &h.decision;
            let samples: Vec<String> = d.samples.iter().map(|s| safe(s)).collect();
            let _ = writeln!(
                out,
                "  {} {} -> {} [{}]: observed {} / threshold {} in {}, repeat {}, ttl {}\n    {}\n    samples: {}",
                safe(&h.time),
                safe(&d.rule),
                safe(&d.target),
                h.outcome.as_str(),
                d.observed,
                d.threshold,
                ms_text(Some(d.window_ms)),
                d.repeat,
                ms_text(d.ttl_ms),
                safe(&d.reason),
                if samples.is_empty() {
                    "-".into()
                } else {
                    samples.join(", ")
                }
            );
        }
    }
    if !v.audit.is_empty() {
        let _ = writeln!(out, "Admin changes (newest first):");
        for e in &v.audit {
            let _ = writeln!(
                out,
                "  {} {} {} {} by {} ({}): {}",
                safe(&e.time),
                safe(&e.operation),
                safe(&e.target),
                opt(e.action.as_deref()),
                safe(&e.actor),
                safe(&e.origin),
                safe(&e.reason)
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_columns() {
        let t = table(&["A", "LONGER"], &[vec!["xxxx".into(), "y".into()]]);
        assert_eq!(t, "A     LONGER\nxxxx  y\n");
    }

    #[test]
    fn durations_are_readable() {
        assert_eq!(duration(850), "850µs");
        assert_eq!(duration(12_300), "12.3ms");
        assert_eq!(duration(1_200_000), "1.20s");
    }

    #[test]
    fn stored_strings_never_reach_the_terminal_raw() {
        let record = Record {
            path: "/\u{1b}[2J\nforged".into(),
            claimed_user: Some("\u{202e}eve".into()),
            ..Default::default()
        };
        let row = record_row(&record).join(" ");
        assert!(!row.chars().any(char::is_control), "{row:?}");
        assert!(row.contains("(claimed) \\u{202e}eve"), "{row:?}");
    }
}
