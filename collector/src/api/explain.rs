//! `GET /api/v1/explain?ip=`: why an address is (or is not) blocked — the decisions in force that
//! cover it (CIDRs included), allowlist entries, dry-run rule decisions that would block it, and
//! its history of rule decisions and admin changes.

use super::model::{self, ErrorBody, ExplainParams, Explanation, RuleAction};
use super::{AppState, blocking};
use crate::db::ReadPool;
use crate::decisions::Decisions;
use crate::error::Error;
use crate::store::query::parse_field;
use crate::target::Target;
use crate::time::now_ms;
use axum::Json;
use axum::extract::{Query, State};
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

/// Rule decisions and audit entries listed at most.
pub const HISTORY_LIMIT: usize = 200;
/// Admin-audit entries scanned for targets covering the address.
const AUDIT_SCAN: usize = 10_000;

/// Why an address is (or is not) blocked.
#[utoipa::path(
    get,
    path = "/api/v1/explain",
    operation_id = "explain",
    tag = "decisions",
    params(ExplainParams),
    responses(
        (status = 200, description = "The explanation", body = Explanation),
        (status = 400, description = "A missing, invalid or unknown parameter", body = ErrorBody),
        (status = 503, description = "The store failed; retry", body = ErrorBody),
        super::Refusals,
    )
)]
pub(super) async fn explain(
    State(s): State<AppState>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Json<Explanation>, Error> {
    for key in params.keys() {
        if key != "ip" {
            return Err(Error::invalid(key, "unknown parameter"));
        }
    }
    let ip = params
        .get("ip")
        .ok_or_else(|| Error::invalid("ip", "required"))
        .and_then(|v| parse_field::<IpAddr, _>("ip", v))?;
    Ok(Json(explanation(&s.main_db, &s.decisions, ip).await?))
}

/// Builds the explanation of `ip`.
pub async fn explanation(
    main_db: &ReadPool,
    decisions: &Arc<Decisions>,
    ip: IpAddr,
) -> Result<Explanation, Error> {
    let target = Target::from(ipnet::IpNet::from(ip));
    let d = Arc::clone(decisions);
    let (deny, allow, audit) = blocking(move || {
        let (deny, allow) = d.covering(&target)?;
        let audit = d.audit(None, AUDIT_SCAN)?;
        Ok((deny, allow, audit))
    })
    .await?;
    let history = super::rules::history(main_db, Some(ip), None, HISTORY_LIMIT).await?;
    let now = now_ms();
    // A dry-run decision "would block" the address while the ban it stands for would still run.
    let dry_run = history
        .iter()
        .filter(|h| {
            h.decision.dry_run
                && h.decision.action != RuleAction::Alert
                && h.decision.expires_at_ms.is_none_or(|at| at > now)
        })
        .cloned()
        .collect();
    let audit = audit
        .into_iter()
        .filter(|e| {
            e.target
                .parse::<Target>()
                .is_ok_and(|t| t.contains(&target))
        })
        .take(HISTORY_LIMIT)
        .collect();
    let views = |ds: &[crate::decisions::Decision]| {
        ds.iter().map(model::Decision::from).collect::<Vec<_>>()
    };
    Ok(Explanation {
        ip: ip.to_string(),
        blocked: !deny.is_empty() && allow.is_empty(),
        allowlisted: !allow.is_empty(),
        decisions: views(&deny),
        allowlist: views(&allow),
        would_block_dry_run: dry_run,
        rule_decisions: history,
        audit,
    })
}
