//! `/api/v1/decisions`: list the deny list, ban one target, unban; `/api/v1/decisions/bulk`: ban
//! many targets as one change. A change is answered once every connected filter was handed it
//! (or the propagation wait ran out, which the answer's `propagated` says).

use super::model::{
    self, BanBody, BulkBanBody, BulkBanResult, DecisionChange, DecisionList, ErrorBody, ListParams,
    RemovalParams, Skipped,
};
use super::{AppState, blocking, body, text};
use crate::decisions::{BanRequest, Decision, DecisionAction, Decisions, Origin};
use crate::error::Error;
use crate::security::api_auth::Caller;
use crate::store::query::{parse_field, parse_limit};
use crate::target::Target;
use crate::time::Ttl;
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use std::collections::HashMap;
use std::sync::Arc;

/// Default and maximum number of decisions listed.
const DEFAULT_LIST_LIMIT: usize = 10_000;
const MAX_LIST_LIMIT: usize = 2_000_000;

/// The deny list: decisions in force.
#[utoipa::path(
    get,
    path = "/api/v1/decisions",
    operation_id = "decisions.list",
    tag = "decisions",
    params(ListParams),
    responses(
        (status = 200, description = "The deny list", body = DecisionList),
        (status = 400, description = "An invalid or unknown parameter", body = ErrorBody),
        (status = 503, description = "The store failed; retry", body = ErrorBody),
        super::Refusals,
    )
)]
pub(super) async fn list(
    State(s): State<AppState>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Json<DecisionList>, Error> {
    let (decisions, total, version) = listed(&s, &params, false).await?;
    Ok(Json(DecisionList {
        version,
        total,
        decisions,
    }))
}

/// The deny list (`allow = false`) or the allowlist: the entries listed, how many are in force,
/// and the version.
pub(super) async fn listed(
    s: &AppState,
    params: &HashMap<String, String>,
    allow: bool,
) -> Result<(Vec<model::Decision>, usize, u64), Error> {
    let limit = list_limit(params)?;
    let d = Arc::clone(&s.decisions);
    let (items, total, version) = blocking(move || {
        let (items, total) = d.list(allow, limit)?;
        Ok((items, total, d.version()))
    })
    .await?;
    Ok((
        items.iter().map(model::Decision::from).collect(),
        total,
        version,
    ))
}

fn list_limit(params: &HashMap<String, String>) -> Result<usize, Error> {
    for key in params.keys() {
        if key != "limit" {
            return Err(Error::invalid(key, "unknown parameter"));
        }
    }
    params
        .get("limit")
        .map_or(Ok(DEFAULT_LIST_LIMIT), |v| parse_limit(v, MAX_LIST_LIMIT))
}

/// A body's `actor` field: the audit trail names the authenticated caller, never a name the
/// request chose.
pub(super) fn no_actor(actor: &Option<String>) -> Result<(), Error> {
    match actor {
        None => Ok(()),
        Some(_) => Err(Error::invalid(
            "actor",
            "is not accepted: the audit trail names the authenticated caller",
        )),
    }
}

/// Refuses a target wider than the configured minimum prefix: `0.0.0.0/1` would block (or
/// allowlist) half the Internet.
pub(super) fn narrow_enough(s: &AppState, field: &str, target: &Target) -> Result<(), Error> {
    let (len, min) = match target.net() {
        ipnet::IpNet::V4(n) => (n.prefix_len(), s.min_prefix_v4),
        ipnet::IpNet::V6(n) => (n.prefix_len(), s.min_prefix_v6),
    };
    if len < min {
        return Err(Error::invalid(
            field,
            format!("{target} covers more than a /{min} (limits.min_prefix_v4 / min_prefix_v6)"),
        ));
    }
    Ok(())
}

/// What a ban and a bulk ban share, parsed; absent fields take their defaults.
struct BanFields {
    action: DecisionAction,
    ttl: Ttl,
    reason: String,
    actor: String,
    origin: Origin,
}

impl BanFields {
    fn parse(
        action: Option<&str>,
        ttl: Option<&str>,
        reason: Option<String>,
        caller: &Caller,
        origin: Option<&str>,
    ) -> Result<BanFields, Error> {
        let origin: Origin = origin.map_or(Ok(Origin::manual()), |o| parse_field("origin", o))?;
        if origin.as_str().starts_with("rule:") {
            return Err(Error::PermissionDenied(format!(
                "origin {:?} is reserved for the detection rules",
                origin.as_str()
            )));
        }
        Ok(BanFields {
            action: action.map_or(Ok(DecisionAction::Deny), |a| parse_field("action", a))?,
            ttl: ttl.map_or(Ok(Ttl(None)), |t| parse_field("ttl", t))?,
            reason: text("reason", reason, "")?,
            actor: caller.name.clone(),
            origin,
        })
    }
}

/// Answers a change once every connected filter stream has been handed `version` (or the
/// propagation wait ran out, which the answer's `propagated` says): `warden ban` returning means
/// the decision is on its way to every Envoy.
pub(super) async fn answer_change(
    s: &AppState,
    status: StatusCode,
    decision: &Decision,
    version: u64,
) -> (StatusCode, Json<DecisionChange>) {
    let propagated = s.registry.wait_sent(version, s.propagation_wait).await;
    (
        status,
        Json(DecisionChange {
            decision: decision.into(),
            version,
            propagated,
        }),
    )
}

/// Denies or throttles one address or CIDR; a new ban of the same target replaces the old one.
#[utoipa::path(
    post,
    path = "/api/v1/decisions",
    operation_id = "decisions.ban",
    tag = "decisions",
    request_body = BanBody,
    responses(
        (status = 201, description = "The decision made", body = DecisionChange),
        (status = 400, description = "An invalid field, an unknown field, or a target wider than the configured minimum prefix", body = ErrorBody),
        (status = 409, description = "The target is covered by an allowlist entry", body = ErrorBody),
        (status = 503, description = "The store failed; nothing changed", body = ErrorBody),
        super::Refusals,
    )
)]
pub(super) async fn ban(
    State(s): State<AppState>,
    Extension(caller): Extension<Caller>,
    bytes: Bytes,
) -> Result<(StatusCode, Json<DecisionChange>), Error> {
    let b: BanBody = body(&bytes)?;
    no_actor(&b.actor)?;
    let f = BanFields::parse(
        b.action.as_deref(),
        b.ttl.as_deref(),
        b.reason,
        &caller,
        b.origin.as_deref(),
    )?;
    let target: Target = parse_field("target", &b.target)?;
    narrow_enough(&s, "target", &target)?;
    let req = BanRequest {
        target,
        action: f.action,
        ttl: f.ttl,
        reason: f.reason,
        actor: f.actor,
        origin: f.origin,
    };
    let d = Arc::clone(&s.decisions);
    let (decision, version) = blocking(move || d.ban(req)).await?;
    tracing::info!(target = %decision.target, action = decision.action.as_str(), actor = %decision.actor, version, "ban");
    Ok(answer_change(&s, StatusCode::CREATED, &decision, version).await)
}

/// Bans many targets as one change (one version); targets the allowlist covers are skipped.
#[utoipa::path(
    post,
    path = "/api/v1/decisions/bulk",
    operation_id = "decisions.ban_bulk",
    tag = "decisions",
    request_body = BulkBanBody,
    responses(
        (status = 201, description = "The targets banned and skipped", body = BulkBanResult),
        (status = 400, description = "An invalid field (`targets[i]` names the target), or an unknown field", body = ErrorBody),
        (status = 503, description = "The store failed; nothing changed", body = ErrorBody),
        super::Refusals,
    )
)]
pub(super) async fn ban_bulk(
    State(s): State<AppState>,
    Extension(caller): Extension<Caller>,
    bytes: Bytes,
) -> Result<(StatusCode, Json<BulkBanResult>), Error> {
    let b: BulkBanBody = body(&bytes)?;
    no_actor(&b.actor)?;
    let mut targets = Vec::with_capacity(b.targets.len());
    for (i, t) in b.targets.iter().enumerate() {
        let field = format!("targets[{i}]");
        let target = parse_field::<Target, _>(&field, t)?;
        narrow_enough(&s, &field, &target)?;
        targets.push(target);
    }
    let f = BanFields::parse(
        b.action.as_deref(),
        b.ttl.as_deref(),
        b.reason,
        &caller,
        b.origin.as_deref(),
    )?;
    let d = Arc::clone(&s.decisions);
    let started = std::time::Instant::now();
    let (added, skipped, version) =
        blocking(move || d.ban_many(targets, f.action, f.ttl, &f.reason, &f.actor, &f.origin))
            .await?;
    tracing::info!(
        added,
        skipped = skipped.len(),
        version,
        millis = started.elapsed().as_millis() as u64,
        "bulk ban"
    );
    let propagated = s.registry.wait_sent(version, s.propagation_wait).await;
    let skipped = skipped
        .iter()
        .map(|(t, a)| Skipped {
            target: t.to_string(),
            allow: a.to_string(),
        })
        .collect();
    Ok((
        StatusCode::CREATED,
        Json(BulkBanResult {
            added,
            skipped,
            version,
            propagated,
        }),
    ))
}

/// `target` and `reason` from a DELETE query string.
fn removal_params(params: &HashMap<String, String>) -> Result<(Target, String), Error> {
    for key in params.keys() {
        match key.as_str() {
            "target" | "reason" => {}
            "actor" => no_actor(&Some(String::new()))?,
            _ => return Err(Error::invalid(key, "unknown parameter")),
        }
    }
    let target = params
        .get("target")
        .ok_or_else(|| Error::invalid("target", "required"))
        .and_then(|t| parse_field("target", t))?;
    Ok((target, text("reason", params.get("reason").cloned(), "")?))
}

/// Removes the decision on a target.
#[utoipa::path(
    delete,
    path = "/api/v1/decisions",
    operation_id = "decisions.unban",
    tag = "decisions",
    params(RemovalParams),
    responses(
        (status = 200, description = "The decision removed", body = DecisionChange),
        (status = 400, description = "An invalid, missing or unknown parameter", body = ErrorBody),
        (status = 404, description = "No decision on that target", body = ErrorBody),
        (status = 503, description = "The store failed; nothing changed", body = ErrorBody),
        super::Refusals,
    )
)]
pub(super) async fn unban(
    State(s): State<AppState>,
    Extension(caller): Extension<Caller>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<(StatusCode, Json<DecisionChange>), Error> {
    removal(&s, &caller, &params, Decisions::unban, "unban").await
}

/// [`Decisions::unban`] or [`Decisions::allow_remove`]: target, reason, actor.
pub(super) type Removal = fn(&Decisions, Target, &str, &str) -> Result<(Decision, u64), Error>;

/// The decision or allowlist entry removal named by `params`, answered once it reached the
/// filters.
pub(super) async fn removal(
    s: &AppState,
    caller: &Caller,
    params: &HashMap<String, String>,
    remove: Removal,
    what: &'static str,
) -> Result<(StatusCode, Json<DecisionChange>), Error> {
    let (target, reason) = removal_params(params)?;
    let actor = caller.name.clone();
    let d = Arc::clone(&s.decisions);
    let (decision, version) = blocking(move || remove(&d, target, &reason, &actor)).await?;
    tracing::info!(%target, version, "{what}");
    Ok(answer_change(s, StatusCode::OK, &decision, version).await)
}
