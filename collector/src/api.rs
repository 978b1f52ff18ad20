//! The HTTP API (axum): record queries, the access report, decisions, the allowlist, connected
//! filters, the admin audit, health and metrics. Every failure answers `{"error": "..."}` with
//! the status from [`crate::error::Error`].

use crate::db::ReadPool;
use crate::decisions::{BanRequest, Decision, DecisionAction, DecisionView, Decisions, Origin};
use crate::detection::{Detection, query_rule_decisions};
use crate::error::Error;
use crate::metrics::Metrics;
use crate::decisions::push::Registry;
use crate::store::query::{RecordQuery, parse_field, parse_limit};
use crate::report::{ReportFormat, ReportQuery, ReportResponse, access_report, to_csv};
use crate::security::api_auth::Caller;
use crate::security::audit_log::{ApiAudit, AuditQuery};
use crate::store::Store;
use crate::target::Target;
use crate::time::{TimeBound, Ttl, now_ms};
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::json;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// Longest accepted reason, actor or origin text.
const MAX_TEXT: usize = 1024;
/// Default and maximum number of decisions listed.
const DEFAULT_LIST_LIMIT: usize = 10_000;
const MAX_LIST_LIMIT: usize = 2_000_000;
/// Largest replay body (a rules file with inline lists).
const REPLAY_BODY_LIMIT: usize = 16 << 20;
/// Largest bulk-ban body.
const BULK_BODY_LIMIT: usize = 256 << 20;

/// What the handlers share.
#[derive(Clone)]
pub struct AppState {
    /// Record store.
    pub store: Arc<Store>,
    /// Read connections to `warden.db` (rule decisions).
    pub main_db: Arc<ReadPool>,
    /// Decision store.
    pub decisions: Arc<Decisions>,
    /// Connected filters.
    pub registry: Arc<Registry>,
    /// Accounting per filter identity.
    pub ledger: Arc<crate::ingest::ledger::Ledger>,
    /// Counters.
    pub metrics: Arc<Metrics>,
    /// Largest record query.
    pub max_query_limit: usize,
    /// Shortest IPv4 prefix a ban or allowlist entry may cover.
    pub min_prefix_v4: u8,
    /// Shortest IPv6 prefix a ban or allowlist entry may cover.
    pub min_prefix_v6: u8,
    /// How long a change waits to be handed to every connected filter before answering.
    pub propagation_wait: Duration,
    /// The rules runtime.
    pub detection: Arc<Detection>,
    /// The API audit trail.
    pub audit: Arc<ApiAudit>,
    /// What `/healthz` answers (`ok`, with a warning when a listener is insecure).
    pub health: String,
}

/// Builds the router. Who may call what is decided in front of it, by
/// [`crate::security::guard::ENDPOINTS`].
pub fn router(state: AppState) -> axum::Router {
    axum::Router::new()
        .route("/healthz", get(health))
        .route("/metrics", get(metrics))
        .route("/api/v1/records", get(records))
        .route("/api/v1/report/access", get(report))
        .route("/api/v1/summaries", get(summaries))
        .route(
            "/api/v1/decisions",
            get(list_decisions).post(ban).delete(unban),
        )
        // A list of a million targets is ~20 MB of JSON; the default 2 MB limit stays elsewhere.
        .route(
            "/api/v1/decisions/bulk",
            post(ban_bulk).layer(DefaultBodyLimit::max(BULK_BODY_LIMIT)),
        )
        .route(
            "/api/v1/allowlist",
            get(list_allow).post(allow_add).delete(allow_remove),
        )
        .route("/api/v1/filters", get(filters))
        .route("/api/v1/audit", get(audit))
        .route("/api/v1/audit/api", get(api_audit))
        .route("/api/v1/rules", get(rules))
        .route("/api/v1/rules/reload", post(reload_rules))
        .route(
            "/api/v1/rules/replay",
            post(replay).layer(DefaultBodyLimit::max(REPLAY_BODY_LIMIT)),
        )
        .route("/api/v1/rule-decisions", get(rule_decisions))
        .route("/api/v1/explain", get(explain))
        .fallback(|| async { Error::NotFound("no such endpoint".into()) })
        .with_state(state)
}

async fn health(State(s): State<AppState>) -> String {
    s.health.clone()
}

async fn metrics(State(s): State<AppState>) -> Response {
    let mut text = s.metrics.render();
    // Totals only: a label per filter instance would grow Prometheus' series without bound.
    text.push_str(&format!(
        "# HELP warden_filter_sequence_gaps Sequence numbers below each filter's highest neither stored, refused nor reported dropped (in flight, or lost uncounted).\n# TYPE warden_filter_sequence_gaps gauge\nwarden_filter_sequence_gaps {}\n",
        s.ledger.total_gaps()
    ));
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}

async fn records(
    State(s): State<AppState>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Response, Error> {
    let q = RecordQuery::from_params(&params, s.max_query_limit)?;
    let (records, next) = s.store.query_page(q).await?;
    let next_cursor = next.map(|c| c.to_string());
    Ok(Json(json!({ "records": records, "next_cursor": next_cursor })).into_response())
}

async fn summaries(
    State(s): State<AppState>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Response, Error> {
    let q = crate::store::summaries::SummaryQuery::from_params(&params, s.max_query_limit)?;
    let summaries = s.store.query_summaries(q).await?;
    Ok(Json(json!({ "summaries": summaries })).into_response())
}

async fn report(
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
        ReportFormat::Json | ReportFormat::Table => {
            Json(ReportResponse::new(&q, rows)).into_response()
        }
    })
}

fn body<T: DeserializeOwned>(bytes: &Bytes) -> Result<T, Error> {
    serde_json::from_slice(bytes).map_err(|e| Error::invalid("body", e.to_string()))
}

fn text(field: &str, value: Option<String>, default: &str) -> Result<String, Error> {
    let v = value.unwrap_or_else(|| default.to_string());
    if v.len() > MAX_TEXT {
        return Err(Error::invalid(
            field,
            format!("is longer than {MAX_TEXT} bytes"),
        ));
    }
    Ok(v)
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, Error> + Send + 'static,
) -> Result<T, Error> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::Storage(format!("task failed: {e}")))?
}

/// A decision plus the version its change produced and whether every connected filter was
/// handed that version before the answer.
fn changed(d: &Decision, version: u64, propagated: bool) -> serde_json::Value {
    let mut v = serde_json::to_value(d.view()).unwrap_or_default();
    if let Some(obj) = v.as_object_mut() {
        obj.insert("version".into(), json!(version));
        obj.insert("propagated".into(), json!(propagated));
    }
    v
}

/// Answers a change once every connected filter stream has been handed `version` (or the
/// propagation wait ran out, which the answer's `propagated` says): `warden ban` returning means
/// the decision is on its way to every Envoy.
async fn answer_change(
    s: &AppState,
    status: StatusCode,
    decision: &Decision,
    version: u64,
) -> Response {
    let propagated = s.registry.wait_sent(version, s.propagation_wait).await;
    (status, Json(changed(decision, version, propagated))).into_response()
}

fn listed(version: u64, total: usize, key: &str, items: &[Decision]) -> Response {
    let views: Vec<DecisionView<'_>> = items.iter().map(Decision::view).collect();
    Json(json!({ "version": version, "total": total, key: views })).into_response()
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

async fn list_decisions(
    State(s): State<AppState>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Response, Error> {
    list(&s, &params, false, "decisions").await
}

async fn list_allow(
    State(s): State<AppState>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Response, Error> {
    list(&s, &params, true, "entries").await
}

/// The deny list (`allow = false`) or the allowlist, under `key`.
async fn list(
    s: &AppState,
    params: &HashMap<String, String>,
    allow: bool,
    key: &str,
) -> Result<Response, Error> {
    let limit = list_limit(params)?;
    let d = Arc::clone(&s.decisions);
    let (items, total, version) = blocking(move || {
        let (items, total) = d.list(allow, limit)?;
        Ok((items, total, d.version()))
    })
    .await?;
    Ok(listed(version, total, key, &items))
}

/// A body's `actor` field: the audit trail names the authenticated caller, never a name the
/// request chose.
fn no_actor(actor: &Option<String>) -> Result<(), Error> {
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
fn narrow_enough(s: &AppState, field: &str, target: &Target) -> Result<(), Error> {
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

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BanBody {
    target: String,
    ttl: Option<String>,
    reason: Option<String>,
    action: Option<String>,
    actor: Option<String>,
    origin: Option<String>,
}

async fn ban(
    State(s): State<AppState>,
    Extension(caller): Extension<Caller>,
    bytes: Bytes,
) -> Result<Response, Error> {
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

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BulkBody {
    targets: Vec<String>,
    ttl: Option<String>,
    reason: Option<String>,
    action: Option<String>,
    actor: Option<String>,
    origin: Option<String>,
}

async fn ban_bulk(
    State(s): State<AppState>,
    Extension(caller): Extension<Caller>,
    bytes: Bytes,
) -> Result<Response, Error> {
    let b: BulkBody = body(&bytes)?;
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
    let skipped: Vec<_> = skipped
        .iter()
        .map(|(t, a)| json!({ "target": t.to_string(), "allow": a.to_string() }))
        .collect();
    Ok((
        StatusCode::CREATED,
        Json(json!({ "added": added, "skipped": skipped, "version": version, "propagated": propagated })),
    )
        .into_response())
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

async fn unban(
    State(s): State<AppState>,
    Extension(caller): Extension<Caller>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Response, Error> {
    removal(&s, &caller, &params, Decisions::unban, "unban").await
}

/// [`Decisions::unban`] or [`Decisions::allow_remove`]: target, reason, actor.
type Removal = fn(&Decisions, Target, &str, &str) -> Result<(Decision, u64), Error>;

/// The decision or allowlist entry removal named by `params`, answered once it reached the
/// filters.
async fn removal(
    s: &AppState,
    caller: &Caller,
    params: &HashMap<String, String>,
    remove: Removal,
    what: &'static str,
) -> Result<Response, Error> {
    let (target, reason) = removal_params(params)?;
    let actor = caller.name.clone();
    let d = Arc::clone(&s.decisions);
    let (decision, version) = blocking(move || remove(&d, target, &reason, &actor)).await?;
    tracing::info!(%target, version, "{what}");
    Ok(answer_change(s, StatusCode::OK, &decision, version).await)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AllowBody {
    target: String,
    reason: Option<String>,
    actor: Option<String>,
}

async fn allow_add(
    State(s): State<AppState>,
    Extension(caller): Extension<Caller>,
    bytes: Bytes,
) -> Result<Response, Error> {
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

async fn allow_remove(
    State(s): State<AppState>,
    Extension(caller): Extension<Caller>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Response, Error> {
    removal(
        &s,
        &caller,
        &params,
        Decisions::allow_remove,
        "allowlist remove",
    )
    .await
}

async fn filters(State(s): State<AppState>) -> Response {
    Json(json!({
        "version": s.decisions.version(),
        "filters": s.registry.list(),
        "accounting": s.ledger.rows(),
    }))
    .into_response()
}

async fn audit(
    State(s): State<AppState>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Response, Error> {
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
    Ok(Json(json!({ "entries": entries })).into_response())
}

async fn api_audit(
    State(s): State<AppState>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Response, Error> {
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
            "refused" => {
                q.refused = match value.as_str() {
                    "true" | "1" => true,
                    "false" | "0" => false,
                    _ => return Err(Error::invalid("refused", "must be true or false")),
                };
            }
            other => return Err(Error::invalid(other, "unknown parameter")),
        }
    }
    let entries = s.audit.query(q).await?;
    Ok(Json(json!({ "entries": entries })).into_response())
}

async fn reload_rules(State(s): State<AppState>) -> Result<Response, Error> {
    let status = s.detection.reload_now().await?;
    Ok(Json(status).into_response())
}

async fn rules(State(s): State<AppState>) -> Result<Response, Error> {
    let status = s
        .detection
        .status()
        .ok_or_else(|| Error::Storage("rules status unavailable".into()))?;
    Ok(Json(status).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReplayBody {
    rules_toml: String,
    since: Option<String>,
    until: Option<String>,
}

async fn replay(State(s): State<AppState>, bytes: Bytes) -> Result<Response, Error> {
    let b: ReplayBody = body(&bytes)?;
    let since: TimeBound = parse_field("since", b.since.as_deref().unwrap_or("24h"))?;
    let until: Option<TimeBound> = b
        .until
        .as_deref()
        .map(|u| parse_field("until", u))
        .transpose()?;
    let started = std::time::Instant::now();
    let result = crate::replay::replay(&s.store, &b.rules_toml, since, until).await?;
    tracing::info!(
        records = result.records,
        decisions = result.decisions.len(),
        millis = started.elapsed().as_millis() as u64,
        "rules replay"
    );
    Ok(Json(result).into_response())
}

async fn rule_decisions(
    State(s): State<AppState>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Response, Error> {
    let (mut ip, mut since, mut limit) = (None, None, 100);
    for (key, value) in &params {
        match key.as_str() {
            "ip" => ip = Some(parse_field::<std::net::IpAddr, _>(key, value)?),
            "since" => since = Some(parse_field::<TimeBound, _>(key, value)?.resolve(now_ms())),
            "limit" => limit = parse_limit(value, 100_000)?,
            other => return Err(Error::invalid(other, "unknown parameter")),
        }
    }
    let entries = s
        .main_db
        .read(move |conn| query_rule_decisions(conn, ip, since, limit))
        .await?;
    Ok(Json(json!({ "rule_decisions": entries })).into_response())
}

async fn explain(
    State(s): State<AppState>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Response, Error> {
    for key in params.keys() {
        if key != "ip" {
            return Err(Error::invalid(key, "unknown parameter"));
        }
    }
    let ip = params
        .get("ip")
        .ok_or_else(|| Error::invalid("ip", "required"))
        .and_then(|v| parse_field::<std::net::IpAddr, _>("ip", v))?;
    let v = crate::explain::explain(&s.main_db, &s.decisions, ip).await?;
    Ok(Json(v).into_response())
}
