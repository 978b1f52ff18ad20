//! `GET /api/v1/audit` (ban, unban, expiry and allowlist changes) and `GET /api/v1/audit/api`
//! (every API call, refused ones included).

use super::model::{ApiAuditEntries, ApiAuditParams, AuditEntries, AuditParams, ErrorBody};
use super::{AppState, blocking, text};
use crate::error::Error;
use crate::security::audit_log::AuditQuery;
use crate::store::query::{parse_field, parse_limit};
use crate::time::{TimeBound, now_ms};
use axum::Json;
use axum::extract::{Query, State};
use std::collections::HashMap;
use std::sync::Arc;

/// Decision changes, newest first: who, what, when, why.
#[utoipa::path(
    get,
    path = "/api/v1/audit",
    operation_id = "audit.decisions",
    tag = "audit",
    params(AuditParams),
    responses(
        (status = 200, description = "The decision changes", body = AuditEntries),
        (status = 400, description = "An invalid or unknown parameter", body = ErrorBody),
        (status = 503, description = "The store failed; retry", body = ErrorBody),
        super::Refusals,
    )
)]
pub(super) async fn decisions_audit(
    State(s): State<AppState>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Json<AuditEntries>, Error> {
    let mut since = None;
    let mut limit = 100;
    for (key, value) in &params {
        match key.as_str() {
            "since" => since = Some(parse_field::<TimeBound, _>(key, value)?.resolve(now_ms())),
            "limit" => limit = parse_limit(value, 100_000)?,
            other => return Err(Error::invalid(other, "unknown parameter")),
        }
    }
    let d = Arc::clone(&s.decisions);
    let entries = blocking(move || d.audit(since, limit)).await?;
    Ok(Json(AuditEntries { entries }))
}

/// Audited API calls, newest first: who read or changed what, refused attempts included.
#[utoipa::path(
    get,
    path = "/api/v1/audit/api",
    operation_id = "audit.api",
    tag = "audit",
    params(ApiAuditParams),
    responses(
        (status = 200, description = "The audited calls", body = ApiAuditEntries),
        (status = 400, description = "An invalid or unknown parameter", body = ErrorBody),
        (status = 503, description = "The audit store failed; retry", body = ErrorBody),
        super::Refusals,
    )
)]
pub(super) async fn api_audit(
    State(s): State<AppState>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Json<ApiAuditEntries>, Error> {
    let mut q = AuditQuery {
        limit: 100,
        ..Default::default()
    };
    for (key, value) in &params {
        match key.as_str() {
            "since" => {
                q.since_ms = Some(parse_field::<TimeBound, _>(key, value)?.resolve(now_ms()));
            }
            "limit" => q.limit = parse_limit(value, 100_000)?,
            "actor" => q.actor = Some(text("actor", Some(value.clone()), "")?),
            "operation" => q.operation = Some(text("operation", Some(value.clone()), "")?),
            "refused" => q.refused = super::flag(key, value)?,
            other => return Err(Error::invalid(other, "unknown parameter")),
        }
    }
    let entries = s.audit.query(q).await?;
    Ok(Json(ApiAuditEntries { entries }))
}
