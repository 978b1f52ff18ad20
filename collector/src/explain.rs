//! `GET /api/v1/explain?ip=`: why an address is (or is not) blocked — the decisions in force that
//! cover it (CIDRs included), allowlist entries, dry-run rule decisions that would block it, and
//! its history of rule decisions and admin changes.

use crate::db::ReadPool;
use crate::decisions::{Decision, Decisions};
use crate::detection::query_rule_decisions;
use crate::error::Error;
use crate::target::Target;
use crate::time::now_ms;
use serde_json::{Value, json};
use std::net::IpAddr;
use std::sync::Arc;

/// Rule decisions and audit entries listed at most.
pub const HISTORY_LIMIT: usize = 200;
/// Admin-audit entries scanned for targets covering the address.
const AUDIT_SCAN: usize = 10_000;

/// Builds the explanation of `ip`.
pub async fn explain(
    main_db: &ReadPool,
    decisions: &Arc<Decisions>,
    ip: IpAddr,
) -> Result<Value, Error> {
    let target = Target::from(ipnet::IpNet::from(ip));
    let d = Arc::clone(decisions);
    let (deny, allow, audit) = tokio::task::spawn_blocking(move || {
        let (deny, allow) = d.covering(&target)?;
        let audit = d.audit(None, AUDIT_SCAN)?;
        Ok::<_, Error>((deny, allow, audit))
    })
    .await
    .map_err(|e| Error::Storage(format!("task failed: {e}")))??;
    let history = main_db
        .read(move |conn| query_rule_decisions(conn, Some(ip), None, HISTORY_LIMIT))
        .await?;
    let now = now_ms();
    // A dry-run decision "would block" the address while the ban it stands for would still run.
    let dry_run: Vec<&Value> = history
        .iter()
        .filter(|h| {
            h["dry_run"].as_bool() == Some(true)
                && h["action"] != "alert"
                && h["expires_at_ms"].as_i64().is_none_or(|at| at > now)
        })
        .collect();
    let audit: Vec<_> = audit
        .into_iter()
        .filter(|e| {
            e.target
                .parse::<Target>()
                .is_ok_and(|t| t.contains(&target))
        })
        .take(HISTORY_LIMIT)
        .collect();
    let views = |ds: &[Decision]| {
        ds.iter()
            .map(Decision::view)
            .map(|v| json!(v))
            .collect::<Vec<_>>()
    };
    let blocked = !deny.is_empty() && allow.is_empty();
    Ok(json!({
        "ip": ip.to_string(),
        "blocked": blocked,
        "allowlisted": !allow.is_empty(),
        "decisions": views(&deny),
        "allowlist": views(&allow),
        "would_block_dry_run": dry_run,
        "rule_decisions": history,
        "audit": audit,
    }))
}
