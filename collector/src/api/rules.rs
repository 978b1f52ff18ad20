//! `/api/v1/rules`: the rules in force and their reload; `/api/v1/rules/replay`: what a rules
//! file would have decided over stored records ([`super::replay`]); `/api/v1/rule-decisions`:
//! what the rules decided.

use super::model::{
    ErrorBody, ReplayBody, ReplayResult, RuleDecisionEntry, RuleDecisionHistory,
    RuleDecisionsParams, RulesStatus,
};
use super::{AppState, body};
use crate::db::ReadPool;
use crate::detection::history::query_rule_decisions;
use crate::error::Error;
use crate::store::query::{parse_field, parse_limit};
use crate::time::{TimeBound, now_ms};
use axum::Json;
use axum::body::Bytes;
use axum::extract::{Query, State};
use std::collections::HashMap;
use std::net::IpAddr;

/// The rules in force and the latest reload error.
#[utoipa::path(
    get,
    path = "/api/v1/rules",
    operation_id = "rules.list",
    tag = "rules",
    responses(
        (status = 200, description = "The rules in force", body = RulesStatus),
        (status = 503, description = "The rules status is unavailable", body = ErrorBody),
        super::Refusals,
    )
)]
pub(super) async fn list(State(s): State<AppState>) -> Result<Json<RulesStatus>, Error> {
    let status = s
        .detection
        .status()
        .ok_or_else(|| Error::Storage("rules status unavailable".into()))?;
    Ok(Json(status.into()))
}

/// Reloads the rules now. A file with problems is refused as a whole and the rules in force
/// stay.
#[utoipa::path(
    post,
    path = "/api/v1/rules/reload",
    operation_id = "rules.reload",
    tag = "rules",
    responses(
        (status = 200, description = "The rules in force after the reload (null if their status is unavailable)", body = Option<RulesStatus>),
        (status = 400, description = "`rules: not reloaded; ...` and every problem of the file", body = ErrorBody),
        (status = 503, description = "The reload could not run", body = ErrorBody),
        super::Refusals,
    )
)]
pub(super) async fn reload(State(s): State<AppState>) -> Result<Json<Option<RulesStatus>>, Error> {
    let status = s.detection.reload_now().await?;
    Ok(Json(status.map(RulesStatus::from)))
}

/// What a rules file would have decided over the stored records of a window; changes nothing.
#[utoipa::path(
    post,
    path = "/api/v1/rules/replay",
    operation_id = "rules.replay",
    tag = "rules",
    request_body = ReplayBody,
    responses(
        (status = 200, description = "The decisions the rules would have made", body = ReplayResult),
        (status = 400, description = "An invalid field, an unknown field, or an invalid rules file (every problem listed)", body = ErrorBody),
        (status = 503, description = "The store failed; retry", body = ErrorBody),
        super::Refusals,
    )
)]
pub(super) async fn replay(
    State(s): State<AppState>,
    bytes: Bytes,
) -> Result<Json<ReplayResult>, Error> {
    let b: ReplayBody = body(&bytes)?;
    let since: TimeBound = parse_field("since", b.since.as_deref().unwrap_or("24h"))?;
    let until: Option<TimeBound> = b
        .until
        .as_deref()
        .map(|u| parse_field("until", u))
        .transpose()?;
    let started = std::time::Instant::now();
    let result = super::replay::replay(&s.store, &b.rules_toml, since, until).await?;
    tracing::info!(
        records = result.records,
        decisions = result.decisions.len(),
        millis = started.elapsed().as_millis() as u64,
        "rules replay"
    );
    Ok(Json(result))
}

/// Rule decisions, newest first, with what became of each.
#[utoipa::path(
    get,
    path = "/api/v1/rule-decisions",
    operation_id = "rule_decisions.list",
    tag = "rules",
    params(RuleDecisionsParams),
    responses(
        (status = 200, description = "The rule decisions", body = RuleDecisionHistory),
        (status = 400, description = "An invalid or unknown parameter", body = ErrorBody),
        (status = 503, description = "The store failed; retry", body = ErrorBody),
        super::Refusals,
    )
)]
pub(super) async fn rule_decisions(
    State(s): State<AppState>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Json<RuleDecisionHistory>, Error> {
    let (mut ip, mut since, mut limit) = (None, None, 100);
    for (key, value) in &params {
        match key.as_str() {
            "ip" => ip = Some(parse_field::<IpAddr, _>(key, value)?),
            "since" => since = Some(parse_field::<TimeBound, _>(key, value)?.resolve(now_ms())),
            "limit" => limit = parse_limit(value, 100_000)?,
            other => return Err(Error::invalid(other, "unknown parameter")),
        }
    }
    Ok(Json(RuleDecisionHistory {
        rule_decisions: history(&s.main_db, ip, since, limit).await?,
    }))
}

/// Rule decisions whose target covers `ip` (all when `None`), newest first.
pub(super) async fn history(
    main_db: &ReadPool,
    ip: Option<IpAddr>,
    since_ms: Option<i64>,
    limit: usize,
) -> Result<Vec<RuleDecisionEntry>, Error> {
    let rows = main_db
        .read(move |conn| query_rule_decisions(conn, ip, since_ms, limit))
        .await?;
    // A row is the engine's decision as it was serialized when made. One that no longer reads
    // as a decision (written by another version, or damaged) is left out and logged rather than
    // failing the whole history: the rest still explains the address.
    Ok(rows
        .into_iter()
        .filter_map(|row| match RuleDecisionEntry::from_stored(row) {
            Ok(entry) => Some(entry),
            Err(e) => {
                tracing::warn!(error = %e, "a rule-decision history row does not read as a rule decision; left out");
                None
            }
        })
        .collect())
}
