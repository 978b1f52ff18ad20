//! `/api/v1/allowlist`: targets never blocked — list, add, remove.

use super::decisions::{answer_change, listed, narrow_enough, no_actor, removal};
use super::model::{AllowBody, AllowList, DecisionChange, ErrorBody, ListParams, RemovalParams};
use super::{AppState, blocking, body, text};
use crate::decisions::Decisions;
use crate::error::Error;
use crate::security::api_auth::Caller;
use crate::store::query::parse_field;
use crate::target::Target;
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use std::collections::HashMap;
use std::sync::Arc;

/// The allowlist.
#[utoipa::path(
    get,
    path = "/api/v1/allowlist",
    operation_id = "allowlist.list",
    tag = "allowlist",
    params(ListParams),
    responses(
        (status = 200, description = "The allowlist", body = AllowList),
        (status = 400, description = "An invalid or unknown parameter", body = ErrorBody),
        (status = 503, description = "The store failed; retry", body = ErrorBody),
        super::Refusals,
    )
)]
pub(super) async fn list(
    State(s): State<AppState>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Json<AllowList>, Error> {
    let (entries, total, version) = listed(&s, &params, true).await?;
    Ok(Json(AllowList {
        version,
        total,
        entries,
    }))
}

/// Adds an address or CIDR to the allowlist: never blocked, whatever a ban or rule says.
#[utoipa::path(
    post,
    path = "/api/v1/allowlist",
    operation_id = "allowlist.add",
    tag = "allowlist",
    request_body = AllowBody,
    responses(
        (status = 201, description = "The entry added", body = DecisionChange),
        (status = 400, description = "An invalid field, an unknown field, or a target wider than the configured minimum prefix", body = ErrorBody),
        (status = 503, description = "The store failed; nothing changed", body = ErrorBody),
        super::Refusals,
    )
)]
pub(super) async fn add(
    State(s): State<AppState>,
    Extension(caller): Extension<Caller>,
    bytes: Bytes,
) -> Result<(StatusCode, Json<DecisionChange>), Error> {
    let b: AllowBody = body(&bytes)?;
    no_actor(&b.actor)?;
    let target: Target = parse_field("target", &b.target)?;
    narrow_enough(&s, "target", &target)?;
    let reason = text("reason", b.reason, "")?;
    let actor = caller.name.clone();
    let d = Arc::clone(&s.decisions);
    let (decision, version) = blocking(move || d.allow_add(target, &reason, &actor)).await?;
    tracing::info!(%target, version, "allowlist add");
    Ok(answer_change(&s, StatusCode::CREATED, &decision, version).await)
}

/// Removes an allowlist entry.
#[utoipa::path(
    delete,
    path = "/api/v1/allowlist",
    operation_id = "allowlist.remove",
    tag = "allowlist",
    params(RemovalParams),
    responses(
        (status = 200, description = "The entry removed", body = DecisionChange),
        (status = 400, description = "An invalid, missing or unknown parameter", body = ErrorBody),
        (status = 404, description = "No allowlist entry for that target", body = ErrorBody),
        (status = 503, description = "The store failed; nothing changed", body = ErrorBody),
        super::Refusals,
    )
)]
pub(super) async fn remove(
    State(s): State<AppState>,
    Extension(caller): Extension<Caller>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<(StatusCode, Json<DecisionChange>), Error> {
    removal(
        &s,
        &caller,
        &params,
        Decisions::allow_remove,
        "allowlist remove",
    )
    .await
}
