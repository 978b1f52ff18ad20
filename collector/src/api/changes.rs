//! `POST /api/v1/k8s-audit`: the Kubernetes API server's audit webhook; and
//! `GET /api/v1/changes`: the stored ingress-policy changes, optionally those that preceded the
//! latest spike of denials on a host.

use super::model::{ChangesPage, ChangesParams, ErrorBody, IngestSummary};
use super::{AppState, blocking, flag};
use crate::error::Error;
use crate::metrics::K8S_AUDIT_BODIES;
use crate::policy_changes::spike::{self, SpikeRule};
use crate::policy_changes::store::ChangeQuery;
use crate::security::credentials::Pattern;
use crate::store::query::{parse_field, parse_limit};
use crate::time::{TimeBound, now_ms, parse_duration};
use axum::Json;
use axum::body::Bytes;
use axum::extract::{Query, State};
use std::collections::HashMap;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

/// Default period of a change query.
const DEFAULT_SINCE: Duration = Duration::from_secs(7 * 86_400);

fn count(s: &AppState, result: &str) {
    if let Some(i) = K8S_AUDIT_BODIES.iter().position(|r| *r == result) {
        s.metrics.k8s_audit_bodies[i].fetch_add(1, Relaxed);
    }
}

/// Receives one `audit.k8s.io/v1` `EventList` from the API server's webhook backend. The answer
/// comes after the kept events are committed; a retried body stores nothing twice.
#[utoipa::path(
    post,
    path = "/api/v1/k8s-audit",
    operation_id = "k8s_audit.ingest",
    tag = "changes",
    request_body(content = serde_json::Value, description = "An audit.k8s.io/v1 EventList", content_type = "application/json"),
    responses(
        (status = 200, description = "Stored (or already stored, or dropped by the keep list); invalid items are refused one by one and listed", body = IngestSummary),
        (status = 400, description = "Not an EventList; the error names the problem; nothing is stored", body = ErrorBody),
        (status = 413, description = "More bytes or events than [k8s_audit] allows", body = ErrorBody),
        (status = 503, description = "The store failed; the API server retries", body = ErrorBody),
        super::Refusals,
    )
)]
pub(super) async fn k8s_audit(
    State(s): State<AppState>,
    body: Bytes,
) -> Result<Json<IngestSummary>, Error> {
    let Some(log) = s.changes.clone() else {
        return Err(Error::PermissionDenied(
            "the Kubernetes audit webhook is disabled: set [k8s_audit] enabled = true".into(),
        ));
    };
    let max_events = log.config().max_events;
    let parsed = blocking(move || Ok(warden_k8s_audit::parse_event_batch(&body))).await?;
    let batch = match parsed {
        Ok(batch) => batch,
        Err(warden_k8s_audit::ParseError::TooLarge { size, max }) => {
            count(&s, "too_large");
            return Err(Error::TooLarge(format!(
                "body: {size} bytes, more than the {max} accepted"
            )));
        }
        // More events than the parser takes at all is a size, not a malformation.
        Err(warden_k8s_audit::ParseError::Invalid { field, problem })
            if field == "items" && problem.starts_with("more than") =>
        {
            count(&s, "too_large");
            return Err(Error::TooLarge(format!(
                "body: {problem} ([k8s_audit] max_events; or lower the API server's --audit-webhook-batch-max-size)"
            )));
        }
        Err(problem) => {
            count(&s, "malformed");
            return Err(Error::invalid("body", problem.to_string()));
        }
    };
    let items = batch.events.len() + batch.rejected.len();
    if items > max_events {
        count(&s, "too_large");
        return Err(Error::TooLarge(format!(
            "body: {items} events, more than the {max_events} accepted at once ([k8s_audit] max_events; or lower the API server's --audit-webhook-batch-max-size)"
        )));
    }
    // An item that fails validation is left out, not the body: its fields (audit id, object
    // name) can come from any Kubernetes client, which must not get other users' events
    // refused with it.
    let rejected: Vec<String> = batch.rejected.iter().map(ToString::to_string).collect();
    if !rejected.is_empty() {
        s.metrics.k8s_audit_events[crate::metrics::K8S_AUDIT_REJECTED]
            .fetch_add(rejected.len() as u64, Relaxed);
        tracing::warn!(
            rejected = rejected.len(),
            first = %rejected[0],
            "Kubernetes audit events refused one by one"
        );
    }
    let events = batch.events;
    match log.ingest(events).await {
        Ok(mut summary) => {
            count(&s, "stored");
            summary.received += rejected.len();
            summary.rejected = rejected.len();
            summary.problems = rejected.into_iter().take(10).collect();
            Ok(Json(summary))
        }
        Err(e) => {
            count(&s, "failed");
            Err(e)
        }
    }
}

fn duration(key: &str, value: &str) -> Result<Duration, Error> {
    let d = parse_duration(value).map_err(|e| Error::invalid(key, e))?;
    if d.is_zero() {
        return Err(Error::invalid(key, "must be greater than 0"));
    }
    Ok(d)
}

/// Stored changes, newest first: who changed which object, how, when, what it changed, and what
/// the change rules found.
#[utoipa::path(
    get,
    path = "/api/v1/changes",
    operation_id = "changes.list",
    tag = "changes",
    params(ChangesParams),
    responses(
        (status = 200, description = "The changes", body = ChangesPage),
        (status = 400, description = "An invalid or unknown parameter", body = ErrorBody),
        (status = 403, description = "Policy-change auditing is disabled", body = ErrorBody),
        (status = 503, description = "The store failed; retry", body = ErrorBody),
        super::Refusals,
    )
)]
pub(super) async fn list(
    State(s): State<AppState>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Json<ChangesPage>, Error> {
    let now = now_ms();
    let mut q = ChangeQuery {
        limit: 100,
        ..Default::default()
    };
    let mut since = TimeBound::Ago(DEFAULT_SINCE);
    let (mut before_spike, mut rule) = (false, SpikeRule::default());
    let mut lookback = Duration::from_secs(3600);
    for (key, value) in &params {
        match key.as_str() {
            "since" => since = parse_field::<TimeBound, _>(key, value)?,
            "until" => q.until_ms = Some(parse_field::<TimeBound, _>(key, value)?.resolve(now)),
            "resource" => q.resource = Some(super::text(key, Some(value.clone()), "")?),
            "namespace" => q.namespace = Some(super::text(key, Some(value.clone()), "")?),
            "user" => q.user = Some(parse_field::<Pattern, _>(key, value)?),
            "host" => q.host = Some(super::text(key, Some(value.clone()), "")?),
            "before_spike" => before_spike = flag(key, value)?,
            "bucket" => rule.bucket = duration(key, value)?,
            "lookback" => lookback = duration(key, value)?,
            "findings" => q.with_findings = flag(key, value)?,
            "all_stages" => q.all_stages = flag(key, value)?,
            "limit" => q.limit = parse_limit(value, s.max_query_limit)?,
            other => return Err(Error::invalid(other, "unknown parameter")),
        }
    }
    let Some(log) = s.changes.clone() else {
        return Err(Error::PermissionDenied(
            "policy-change auditing is disabled: set [k8s_audit] enabled = true".into(),
        ));
    };
    q.since_ms = Some(since.resolve(now));
    let mut found = None;
    if before_spike {
        let host = q
            .host
            .clone()
            .ok_or_else(|| Error::invalid("before_spike", "needs host"))?;
        let host = crate::policy_changes::store::bare_host(&host);
        let Some(spike) = spike::find(&s.store, &host, since, rule, now).await? else {
            return Ok(Json(ChangesPage::default()));
        };
        let bucket_ms = i64::try_from(rule.bucket.as_millis()).unwrap_or(i64::MAX);
        let lookback_ms = i64::try_from(lookback.as_millis()).unwrap_or(i64::MAX);
        q.since_ms = Some(spike.start_ms.saturating_sub(lookback_ms));
        q.until_ms = Some(spike.start_ms.saturating_add(bucket_ms));
        // The likeliest causes name no host: an AuthorizationPolicy, a WasmPlugin.
        q.include_hostless = true;
        found = Some(spike);
    }
    let changes = log.query(q).await?;
    Ok(Json(ChangesPage {
        changes,
        spike: found,
    }))
}
