//! The HTTP API (axum): one module per resource — [`records`], [`summaries`], [`report`],
//! [`decisions`] (deny list, bans, bulk bans, unbans), [`allowlist`], [`filters`], [`audit`]
//! (decision changes and API calls), [`rules`] (rules in force, reload, [`replay`], rule
//! decisions), [`explain`], [`changes`] (the Kubernetes audit webhook and the policy-change
//! trail) and [`health`] (health and metrics). Requests and answers are the
//! types of [`model`], which the CLI parses too. Every failure answers `{"error": "..."}`
//! ([`model::ErrorBody`]) with the status from [`crate::error::Error`].
//!
//! Each handler carries its description (`#[utoipa::path]`), and the router is built from those
//! descriptions ([`utoipa_axum::routes!`]): a route cannot be served without appearing in the
//! OpenAPI document ([`openapi`], `warden openapi`, `docs/openapi.json`).

pub mod allowlist;
pub mod audit;
pub mod changes;
pub mod decisions;
pub mod explain;
pub mod filters;
pub mod health;
pub mod model;
pub mod records;
pub mod replay;
pub mod report;
pub mod rules;
pub mod summaries;

use crate::db::ReadPool;
use crate::decisions::Decisions;
use crate::decisions::push::Registry;
use crate::detection::Detection;
use crate::error::Error;
use crate::metrics::Metrics;
use crate::security::audit_log::ApiAudit;
use crate::store::Store;
use axum::body::Bytes;
use axum::extract::DefaultBodyLimit;
use model::ErrorBody;
use serde::de::DeserializeOwned;
use std::sync::Arc;
use std::time::Duration;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_axum::router::{OpenApiRouter, UtoipaMethodRouterExt};
use utoipa_axum::routes;

/// Longest accepted reason, actor or origin text.
const MAX_TEXT: usize = 1024;
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
    /// Kubernetes policy changes; `None` when `[k8s_audit]` is disabled.
    pub changes: Option<Arc<crate::policy_changes::ChangeLog>>,
    /// What `/healthz` answers (`ok`, with a warning when a listener is insecure).
    pub health: String,
}

/// Builds the router. Who may call what is decided in front of it, by
/// [`crate::security::guard::ENDPOINTS`].
pub fn router(state: AppState) -> axum::Router {
    let (router, _) = described_routes().split_for_parts();
    router
        .fallback(|| async { Error::NotFound("no such endpoint".into()) })
        .with_state(state)
}

/// The OpenAPI document of the API, generated from the handlers' descriptions and the
/// [`model`] types (`warden openapi` prints it; `docs/openapi.json` is a checked-in copy).
pub fn openapi() -> utoipa::openapi::OpenApi {
    described_routes().into_openapi()
}

/// Every route with its description. Handlers sharing a path are registered together (that is
/// how `routes!` merges their methods).
fn described_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(health::health))
        .routes(routes!(health::metrics))
        .routes(routes!(records::records))
        .routes(routes!(report::report))
        .routes(routes!(summaries::summaries))
        .routes(routes!(decisions::list, decisions::ban, decisions::unban))
        // A list of a million targets is ~20 MB of JSON; the default 2 MB limit stays elsewhere.
        .routes(routes!(decisions::ban_bulk).layer(DefaultBodyLimit::max(BULK_BODY_LIMIT)))
        .routes(routes!(allowlist::list, allowlist::add, allowlist::remove))
        .routes(routes!(filters::filters))
        .routes(routes!(audit::decisions_audit))
        .routes(routes!(audit::api_audit))
        .routes(routes!(rules::list))
        .routes(routes!(rules::reload))
        .routes(routes!(rules::replay).layer(DefaultBodyLimit::max(REPLAY_BODY_LIMIT)))
        .routes(routes!(rules::rule_decisions))
        .routes(routes!(explain::explain))
        .routes(routes!(changes::list))
        // The gate has already read the body within `[k8s_audit] max_body_bytes`.
        .routes(routes!(changes::k8s_audit).layer(DefaultBodyLimit::disable()))
}

/// The document's header: what the API is, how callers authenticate, the shared error shape.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "Warden API",
        description = "Access auditing and inline blocking for Envoy: stored access records, \
            reports, deny-list decisions and the allowlist, detection rules, audit trails. Every \
            call but `/healthz` (and `/metrics` when so configured) needs a bearer token, a \
            client certificate or an OIDC JWT whose role covers the endpoint; every failure \
            answers `{\"error\": \"...\"}`."
    ),
    modifiers(&BearerAuth),
    components(schemas(ErrorBody)),
    tags(
        (name = "records", description = "Stored access records and record summaries"),
        (name = "report", description = "Who accessed what"),
        (name = "decisions", description = "The deny list: bans and unbans"),
        (name = "allowlist", description = "Targets never blocked"),
        (name = "filters", description = "Connected filters and their accounting"),
        (name = "audit", description = "Who changed or read what"),
        (name = "rules", description = "Detection rules and their decisions"),
        (name = "changes", description = "Kubernetes ingress-policy changes: the API server's audit webhook and the change trail"),
        (name = "operations", description = "Health and metrics"),
    )
)]
struct ApiDoc;

/// Declares the bearer scheme and requires it everywhere; the open endpoints say otherwise.
struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
        openapi.security = Some(vec![utoipa::openapi::security::SecurityRequirement::new(
            "bearer",
            Vec::<String>::new(),
        )]);
    }
}

/// What the gate in front of every authenticated endpoint may answer instead of the handler
/// ([`crate::security::guard`]).
#[derive(utoipa::IntoResponses)]
pub enum Refusals {
    /// No valid credential (the answer carries `WWW-Authenticate: Bearer`).
    #[response(status = 401)]
    Unauthenticated(ErrorBody),
    /// The credential's role does not cover the endpoint, or the request failed a cross-site
    /// check (`Host`, `Origin`, content type).
    #[response(status = 403)]
    Forbidden(ErrorBody),
    /// Too many failed authentications from the address, or too many concurrent expensive
    /// calls for the role.
    #[response(status = 429)]
    TooManyRequests(ErrorBody),
}

/// A JSON body as `T`; a malformed body or an unknown field is an invalid `body`.
fn body<T: DeserializeOwned>(bytes: &Bytes) -> Result<T, Error> {
    serde_json::from_slice(bytes).map_err(|e| Error::invalid("body", e.to_string()))
}

/// A free-text field (`reason`, `actor`, ...), `default` when absent, at most [`MAX_TEXT`] bytes.
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

/// A boolean parameter: `true`/`1` or `false`/`0`.
fn flag(key: &str, value: &str) -> Result<bool, Error> {
    match value {
        "true" | "1" => Ok(true),
        "false" | "0" => Ok(false),
        _ => Err(Error::invalid(key, "must be true or false")),
    }
}

/// Runs SQLite work on the blocking pool.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, Error> + Send + 'static,
) -> Result<T, Error> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::Storage(format!("task failed: {e}")))?
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::security::guard::ENDPOINTS;
    use std::collections::BTreeSet;

    /// Every (method, path, operation id) the OpenAPI document describes.
    fn described() -> BTreeSet<(String, String, String)> {
        let mut ops = BTreeSet::new();
        for (path, item) in openapi().paths.paths {
            for (method, op) in [
                ("GET", &item.get),
                ("POST", &item.post),
                ("PUT", &item.put),
                ("DELETE", &item.delete),
                ("PATCH", &item.patch),
                ("HEAD", &item.head),
                ("OPTIONS", &item.options),
                ("TRACE", &item.trace),
            ] {
                if let Some(op) = op {
                    let id = op.operation_id.clone().unwrap_or_default();
                    ops.insert((method.to_string(), path.clone(), id));
                }
            }
        }
        ops
    }

    /// The gate's table: what can be reached at all, and the operation's name in the audit
    /// trail (which the document uses as operation id).
    fn reachable() -> BTreeSet<(String, String, String)> {
        ENDPOINTS
            .iter()
            .map(|e| {
                (
                    e.method.to_string(),
                    e.path.to_string(),
                    e.operation.to_string(),
                )
            })
            .collect()
    }

    // The router is built from the described handlers only (`described_routes`), so what it
    // serves is described; the gate's table is what can be reached at all. The two tests below
    // hold the three together: a route added to the gate without a description, or described
    // but unreachable, fails here.
    #[test]
    fn every_endpoint_the_gate_lets_through_is_described() {
        let described = described();
        for e in reachable() {
            assert!(
                described.contains(&e),
                "{} {} ({}) is served but missing from the OpenAPI document: describe its \
                 handler with #[utoipa::path] (operation_id = the gate's operation name) and \
                 register it in api::described_routes",
                e.0,
                e.1,
                e.2
            );
        }
    }

    #[test]
    fn every_described_operation_is_an_endpoint_of_the_gate() {
        let reachable = reachable();
        for op in described() {
            assert!(
                reachable.contains(&op),
                "{} {} ({}) is described but not in security::guard::ENDPOINTS, so never reached",
                op.0,
                op.1,
                op.2
            );
        }
    }

    #[test]
    fn every_operation_documents_its_errors() {
        for (path, item) in openapi().paths.paths {
            for op in [&item.get, &item.post, &item.delete].into_iter().flatten() {
                let statuses: Vec<&String> = op.responses.responses.keys().collect();
                assert!(
                    path == "/healthz" || statuses.iter().any(|s| s.as_str() == "401"),
                    "{path}: {statuses:?}"
                );
            }
        }
    }
}
