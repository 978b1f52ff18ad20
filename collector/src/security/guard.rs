//! The HTTP API's gate, in front of every handler: which role each endpoint needs (one table,
//! [`ENDPOINTS`]; a path not in it is never routed), authentication, per-address limits on
//! failed authentications, cross-site protections (expected `Host`, same or allowed `Origin`,
//! JSON bodies only), body size and concurrent expensive calls per role, and the audit entry of
//! every call, committed before the answer leaves.

use super::api_auth::{ApiAuth, Caller};
use super::audit_log::{ApiAudit, ApiAuditEntry};
use super::conn::ConnInfo;
use super::credentials::Role;
use crate::config::{MetricsAccess, PerRole};
use crate::error::Error;
use crate::time::{now_ms, rfc3339};
use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use governor::{Quota, RateLimiter};
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;

/// Who may call an endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Anyone (health).
    Open,
    /// `/metrics`: open or authenticated, as configured.
    Metrics,
    /// Callers with at least this role.
    Role(Role),
    /// Callers with exactly this role (the audit webhook: no other role may post events, so
    /// no API credential can forge the change trail).
    Only(Role),
}

/// One endpoint of the API.
#[derive(Debug, Clone, Copy)]
pub struct Endpoint {
    /// HTTP method.
    pub method: &'static str,
    /// Exact path.
    pub path: &'static str,
    /// The operation's name in the audit trail.
    pub operation: &'static str,
    /// Who may call it.
    pub access: Access,
    /// Counted against the role's cap of concurrent expensive calls.
    pub expensive: bool,
    /// The JSON body's fields go into the audit entry's parameters. Not for audit events: they
    /// are the API server's own trail (and could carry objects), so only their size is noted.
    pub body_in_audit: bool,
}

const fn ep(
    method: &'static str,
    path: &'static str,
    operation: &'static str,
    access: Access,
    expensive: bool,
) -> Endpoint {
    Endpoint {
        method,
        path,
        operation,
        access,
        expensive,
        body_in_audit: true,
    }
}

/// The Kubernetes audit webhook's path.
pub const K8S_AUDIT_PATH: &str = "/api/v1/k8s-audit";

use Access::{Metrics as M, Open as O};
const VIEWER: Access = Access::Role(Role::Viewer);
const OPERATOR: Access = Access::Role(Role::Operator);
const ADMIN: Access = Access::Role(Role::Admin);

/// Every endpoint and the role it needs: the one place that says who may do what.
pub const ENDPOINTS: &[Endpoint] = &[
    ep("GET", "/healthz", "health", O, false),
    ep("GET", "/metrics", "metrics", M, false),
    ep("GET", "/api/v1/records", "records.query", VIEWER, true),
    ep("GET", "/api/v1/summaries", "summaries.query", VIEWER, true),
    ep(
        "GET",
        "/api/v1/report/access",
        "report.access",
        VIEWER,
        true,
    ),
    ep("GET", "/api/v1/explain", "explain", VIEWER, false),
    ep("GET", "/api/v1/decisions", "decisions.list", VIEWER, false),
    ep("GET", "/api/v1/allowlist", "allowlist.list", VIEWER, false),
    ep("GET", "/api/v1/filters", "filters.list", VIEWER, false),
    ep("GET", "/api/v1/rules", "rules.list", VIEWER, false),
    ep(
        "GET",
        "/api/v1/rule-decisions",
        "rule_decisions.list",
        VIEWER,
        false,
    ),
    ep(
        "POST",
        "/api/v1/decisions",
        "decisions.ban",
        OPERATOR,
        false,
    ),
    ep(
        "DELETE",
        "/api/v1/decisions",
        "decisions.unban",
        OPERATOR,
        false,
    ),
    ep(
        "POST",
        "/api/v1/decisions/bulk",
        "decisions.ban_bulk",
        OPERATOR,
        true,
    ),
    ep(
        "POST",
        "/api/v1/allowlist",
        "allowlist.add",
        OPERATOR,
        false,
    ),
    ep(
        "DELETE",
        "/api/v1/allowlist",
        "allowlist.remove",
        OPERATOR,
        false,
    ),
    ep("GET", "/api/v1/changes", "changes.list", VIEWER, true),
    Endpoint {
        method: "POST",
        path: K8S_AUDIT_PATH,
        operation: "k8s_audit.ingest",
        access: Access::Only(Role::K8sAudit),
        expensive: false,
        body_in_audit: false,
    },
    ep("GET", "/api/v1/audit", "audit.decisions", ADMIN, false),
    ep("GET", "/api/v1/audit/api", "audit.api", ADMIN, false),
    ep("POST", "/api/v1/rules/reload", "rules.reload", ADMIN, false),
    ep("POST", "/api/v1/rules/replay", "rules.replay", ADMIN, true),
];

/// The endpoint for a method and path.
pub fn endpoint(method: &Method, path: &str) -> Option<&'static Endpoint> {
    ENDPOINTS
        .iter()
        .find(|e| e.path == path && e.method == method.as_str())
}

/// Refusals, by reason (for `/metrics`).
#[derive(Debug, Default)]
pub struct GuardCounters {
    /// No or invalid credentials.
    pub unauthenticated: AtomicU64,
    /// Authenticated without the role.
    pub forbidden: AtomicU64,
    /// Refused while over the failed-authentication limit, or over a concurrency cap.
    pub rate_limited: AtomicU64,
    /// Foreign `Host` or `Origin`, or a body that is not JSON.
    pub cross_site: AtomicU64,
    /// A body over the role's (or the audit webhook's) limit: 413.
    pub too_large: AtomicU64,
}

/// Which `Host` values the API answers to.
#[derive(Debug, Clone)]
enum Hosts {
    Any,
    Names(Vec<String>),
}

/// Addresses over their failed-authentication budget, and until when.
struct FailureLimiter {
    limiter: governor::DefaultKeyedRateLimiter<IpAddr>,
    blocked: Mutex<HashMap<IpAddr, Instant>>,
}

impl FailureLimiter {
    fn new(per_minute: u32) -> Self {
        let quota =
            Quota::per_minute(NonZeroU32::new(per_minute.max(1)).unwrap_or(NonZeroU32::MIN));
        FailureLimiter {
            limiter: RateLimiter::keyed(quota),
            blocked: Mutex::new(HashMap::new()),
        }
    }

    /// How long `ip` must still wait, when it is blocked.
    fn blocked_for(&self, ip: IpAddr) -> Option<Duration> {
        let mut b = self.blocked.lock().ok()?;
        let until = *b.get(&ip)?;
        let now = Instant::now();
        if until > now {
            return Some(until - now);
        }
        b.remove(&ip);
        None
    }

    /// Counts a failure; returns the wait when it exhausted the budget.
    fn failed(&self, ip: IpAddr) -> Option<Duration> {
        if self.limiter.len() > 100_000 {
            self.limiter.retain_recent();
        }
        let Err(not_until) = self.limiter.check_key(&ip) else {
            return None;
        };
        let wait = not_until
            .wait_time_from(governor::clock::Clock::now(
                &governor::clock::DefaultClock::default(),
            ))
            .max(Duration::from_secs(1));
        if let Ok(mut b) = self.blocked.lock() {
            let now = Instant::now();
            if b.len() > 100_000 {
                b.retain(|_, until| *until > now);
            }
            b.insert(ip, now + wait);
        }
        Some(wait)
    }
}

/// The gate's state.
pub struct Guard {
    auth: ApiAuth,
    audit: Arc<ApiAudit>,
    metrics_access: MetricsAccess,
    hosts: Hosts,
    origins: Vec<String>,
    body_limits: PerRole,
    k8s_audit_body_limit: usize,
    expensive_limits: PerRole,
    expensive: [Arc<Semaphore>; 3],
    failures: FailureLimiter,
    /// Refusals.
    pub counters: GuardCounters,
}

/// The gate's settings.
pub struct GuardSettings {
    /// Who callers are.
    pub auth: ApiAuth,
    /// Where calls are recorded.
    pub audit: Arc<ApiAudit>,
    /// Who reads `/metrics`.
    pub metrics_access: MetricsAccess,
    /// The bound address (its host names are always accepted on loopback).
    pub listen: SocketAddr,
    /// Configured host names.
    pub allowed_hosts: Vec<String>,
    /// Configured origins.
    pub allowed_origins: Vec<String>,
    /// Failed authentications per address per minute.
    pub auth_failures_per_minute: u32,
    /// Body size per role.
    pub max_body_bytes: PerRole,
    /// Expensive calls per role.
    pub max_expensive_calls: PerRole,
    /// Body size of the audit webhook (`[k8s_audit] max_body_bytes`).
    pub k8s_audit_max_body_bytes: usize,
}

fn strip_port(host: &str) -> &str {
    if let Some(rest) = host.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match host.rsplit_once(':') {
        Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) && !h.contains(':') => h,
        _ => host,
    }
}

impl Guard {
    /// Builds the gate.
    pub fn new(s: GuardSettings) -> Guard {
        let hosts = if s.listen.ip().is_loopback() || !s.allowed_hosts.is_empty() {
            let mut names: Vec<String> = s
                .allowed_hosts
                .iter()
                .map(|h| strip_port(h).to_ascii_lowercase())
                .collect();
            names.push(s.listen.ip().to_string());
            if s.listen.ip().is_loopback() {
                names.extend(["localhost", "127.0.0.1", "::1"].map(String::from));
            }
            Hosts::Names(names)
        } else {
            // A wildcard bind with no names configured: the operator has not said which names
            // to expect, and the listener is not on loopback (where DNS rebinding bites).
            Hosts::Any
        };
        let semaphore = |role| Arc::new(Semaphore::new(s.max_expensive_calls.get(role)));
        Guard {
            auth: s.auth,
            audit: s.audit,
            metrics_access: s.metrics_access,
            hosts,
            origins: s.allowed_origins,
            body_limits: s.max_body_bytes,
            k8s_audit_body_limit: s.k8s_audit_max_body_bytes,
            expensive_limits: s.max_expensive_calls,
            expensive: [
                semaphore(Role::Viewer),
                semaphore(Role::Operator),
                semaphore(Role::Admin),
            ],
            failures: FailureLimiter::new(s.auth_failures_per_minute),
            counters: GuardCounters::default(),
        }
    }

    fn host_allowed(&self, host: Option<&str>) -> bool {
        match &self.hosts {
            Hosts::Any => true,
            Hosts::Names(names) => host
                .map(|h| strip_port(h).to_ascii_lowercase())
                .is_some_and(|h| names.contains(&h)),
        }
    }

    /// A browser sends `Origin` with cross-site requests; only the API's own origin and the
    /// configured ones may call it.
    fn origin_allowed(&self, origin: Option<&str>, host: Option<&str>) -> bool {
        let Some(origin) = origin else {
            return true;
        };
        if self.origins.iter().any(|o| o.eq_ignore_ascii_case(origin)) {
            return true;
        }
        let origin_host = origin
            .split_once("://")
            .map(|(_, rest)| rest.trim_end_matches('/'));
        matches!((origin_host, host), (Some(o), Some(h)) if o.eq_ignore_ascii_case(h))
    }
}

/// Shortens a parameter value for the audit trail.
fn short(v: &serde_json::Value) -> serde_json::Value {
    match v {
        serde_json::Value::String(s) if s.chars().count() > 200 => {
            serde_json::Value::String(format!(
                "{}… ({} bytes)",
                s.chars().take(200).collect::<String>(),
                s.len()
            ))
        }
        serde_json::Value::Array(a) if a.len() > 10 => {
            serde_json::json!(format!("[{} items]", a.len()))
        }
        serde_json::Value::Object(o) => {
            serde_json::Value::Object(o.iter().map(|(k, v)| (k.clone(), short(v))).collect())
        }
        other => other.clone(),
    }
}

/// The call's parameters: the query string and the JSON body's fields.
fn params(query: Option<&str>, body: &[u8]) -> serde_json::Value {
    let mut out = serde_json::Map::new();
    if let Some(q) = query.filter(|q| !q.is_empty()) {
        let pairs: serde_json::Map<String, serde_json::Value> = q
            .split('&')
            .map(|pair| {
                let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
                (
                    percent_decode(k),
                    short(&serde_json::Value::String(percent_decode(v))),
                )
            })
            .collect();
        out.insert("query".into(), serde_json::Value::Object(pairs));
    }
    if !body.is_empty() {
        let v = serde_json::from_slice::<serde_json::Value>(body)
            .map(|v| short(&v))
            .unwrap_or_else(|_| serde_json::json!(format!("({} bytes, not JSON)", body.len())));
        out.insert("body".into(), v);
    }
    serde_json::Value::Object(out)
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'+' {
            out.push(b' ');
            i += 1;
            continue;
        }
        if b == b'%'
            && let Some(hex) = bytes.get(i + 1..i + 3)
            && hex.iter().all(u8::is_ascii_hexdigit)
            && let Ok(v) = u8::from_str_radix(&String::from_utf8_lossy(hex), 16)
        {
            out.push(v);
            i += 3;
            continue;
        }
        out.push(b);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn refuse(error: Error) -> Response {
    error.into_response()
}

/// 429 with `Retry-After`, so well-behaved clients know how long the block lasts.
fn refuse_for(reason: String, wait: std::time::Duration) -> Response {
    let seconds = wait.as_secs().max(1);
    let mut r = refuse(Error::TooManyRequests(format!(
        "{reason}; retry in {seconds} s"
    )));
    r.headers_mut()
        .insert(header::RETRY_AFTER, header::HeaderValue::from(seconds));
    r
}

struct Call<'a> {
    guard: &'a Guard,
    endpoint: Option<&'static Endpoint>,
    method: String,
    path: String,
    source: SocketAddr,
    params: serde_json::Value,
}

impl Call<'_> {
    /// Records the call; a failure to record replaces the answer with 503.
    async fn audited(&self, caller: Option<&Caller>, response: Response) -> Response {
        let status = response.status();
        let (response, outcome) = if status.is_client_error() || status.is_server_error() {
            let (parts, body) = response.into_parts();
            let bytes = axum::body::to_bytes(body, 64 * 1024)
                .await
                .unwrap_or_default();
            let message = serde_json::from_slice::<serde_json::Value>(&bytes)
                .ok()
                .and_then(|v| v["error"].as_str().map(str::to_string))
                .unwrap_or_else(|| status.canonical_reason().unwrap_or("error").to_string());
            (Response::from_parts(parts, Body::from(bytes)), message)
        } else {
            (response, "ok".to_string())
        };
        let now = now_ms();
        let entry = ApiAuditEntry {
            id: 0,
            time_ms: now,
            time: rfc3339(now),
            actor: caller.map(|c| c.name.clone()).unwrap_or_default(),
            actor_kind: caller.map_or("none", |c| c.kind.as_str()).into(),
            role: caller.map(|c| c.role.as_str().to_string()),
            operation: self.endpoint.map_or("unknown", |e| e.operation).into(),
            method: self.method.clone(),
            path: self.path.clone(),
            params: self.params.clone(),
            source: self.source.to_string(),
            status: status.as_u16(),
            outcome,
        };
        match self.guard.audit.record(entry).await {
            Ok(()) => response,
            Err(e) => {
                tracing::error!(error = %e, "cannot write the API audit trail; refusing the call");
                refuse(Error::Storage(
                    "the audit trail is unavailable; nothing is served unaudited".into(),
                ))
            }
        }
    }
}

/// The middleware.
pub async fn guard(
    State(g): State<Arc<Guard>>,
    ConnectInfo(conn): ConnectInfo<ConnInfo>,
    request: Request,
    next: Next,
) -> Response {
    let endpoint = endpoint(request.method(), request.uri().path());
    let host = request
        .headers()
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .or_else(|| request.uri().authority().map(|a| a.to_string()));
    let mut call = Call {
        guard: &g,
        endpoint,
        method: request.method().to_string(),
        path: request.uri().path().chars().take(256).collect(),
        source: conn.remote,
        params: params(request.uri().query(), &[]),
    };
    let Some(endpoint) = endpoint else {
        let known_path = ENDPOINTS.iter().any(|e| e.path == request.uri().path());
        let status = if known_path {
            StatusCode::METHOD_NOT_ALLOWED
        } else {
            StatusCode::NOT_FOUND
        };
        return (status, axum::Json(serde_json::json!({ "error": format!("no such endpoint: {} {}", call.method, call.path) }))).into_response();
    };
    // `/healthz` and an open `/metrics` answer any Host: kubelet probes and Prometheus address
    // the pod by IP, and those answers carry nothing a DNS-rebinding page could use.
    let open = match endpoint.access {
        Access::Open => true,
        Access::Metrics => g.metrics_access == MetricsAccess::Open,
        Access::Role(_) | Access::Only(_) => false,
    };
    if !open && !g.host_allowed(host.as_deref()) {
        g.counters.cross_site.fetch_add(1, Relaxed);
        let e = Error::PermissionDenied(format!(
            "Host {:?} is not a name of this API (add it to http.allowed_hosts)",
            host.unwrap_or_default()
        ));
        return call.audited(None, refuse(e)).await;
    }
    let origin = request
        .headers()
        .get(header::ORIGIN)
        .and_then(|v| v.to_str().ok());
    if !g.origin_allowed(origin, host.as_deref()) {
        g.counters.cross_site.fetch_add(1, Relaxed);
        let e = Error::PermissionDenied(format!(
            "cross-site request from origin {:?} refused (add it to http.allowed_origins)",
            origin.unwrap_or_default()
        ));
        return call.audited(None, refuse(e)).await;
    }
    let open = match endpoint.access {
        Access::Open => true,
        Access::Metrics => g.metrics_access == MetricsAccess::Open,
        Access::Role(_) | Access::Only(_) => false,
    };
    if open {
        return next.run(request).await;
    }
    if let Some(wait) = g.failures.blocked_for(conn.remote.ip()) {
        // Not audited one by one: a flood of refused guesses must not fill the audit trail;
        // the refusal that started the block was.
        g.counters.rate_limited.fetch_add(1, Relaxed);
        return refuse_for(
            format!("too many failed authentications from {}", conn.remote.ip()),
            wait,
        );
    }
    let caller = match g.auth.authenticate(request.headers(), &conn) {
        Ok(c) => c,
        Err(e) => {
            g.counters.unauthenticated.fetch_add(1, Relaxed);
            let response = match g.failures.failed(conn.remote.ip()) {
                Some(wait) => {
                    g.counters.rate_limited.fetch_add(1, Relaxed);
                    refuse_for(
                        format!(
                            "{e}; too many failed authentications from {}",
                            conn.remote.ip()
                        ),
                        wait,
                    )
                }
                None => refuse(e),
            };
            return call.audited(None, response).await;
        }
    };
    let needed = match endpoint.access {
        Access::Role(needed) if caller.role < needed => Some(needed),
        Access::Only(needed) if caller.role != needed => Some(needed),
        _ => None,
    };
    if let Some(needed) = needed {
        g.counters.forbidden.fetch_add(1, Relaxed);
        let e = Error::PermissionDenied(format!(
            "{} {} needs the {needed} role; {:?} has {}",
            call.method, call.path, caller.name, caller.role
        ));
        return call.audited(Some(&caller), refuse(e)).await;
    }
    let (parts, body) = request.into_parts();
    let limit = match caller.role {
        Role::K8sAudit => g.k8s_audit_body_limit,
        role => g.body_limits.get(role),
    };
    let too_large = || {
        let hint = if caller.role == Role::K8sAudit {
            " ([k8s_audit] max_body_bytes; or lower the API server's --audit-webhook-batch-max-size)"
        } else {
            ""
        };
        Error::TooLarge(format!(
            "body: larger than the {limit} bytes allowed for the {} role{hint}",
            caller.role
        ))
    };
    let declared = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit) {
        g.counters.too_large.fetch_add(1, Relaxed);
        return call.audited(Some(&caller), refuse(too_large())).await;
    }
    let bytes = match axum::body::to_bytes(body, limit).await {
        Ok(b) => b,
        Err(_) => {
            g.counters.too_large.fetch_add(1, Relaxed);
            return call.audited(Some(&caller), refuse(too_large())).await;
        }
    };
    if !bytes.is_empty() && !is_json(&parts.headers) {
        g.counters.cross_site.fetch_add(1, Relaxed);
        let r = (
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            axum::Json(serde_json::json!({ "error": "the body must be sent as Content-Type: application/json" })),
        )
            .into_response();
        return call.audited(Some(&caller), r).await;
    }
    call.params = if endpoint.body_in_audit {
        params(parts.uri.query(), &bytes)
    } else {
        let mut p = params(parts.uri.query(), &[]);
        if let Some(o) = p.as_object_mut() {
            o.insert(
                "body".into(),
                serde_json::json!(format!("({} bytes)", bytes.len())),
            );
        }
        p
    };
    let _permit = if endpoint.expensive {
        let semaphore = &g.expensive[match caller.role {
            // The webhook's one endpoint is not expensive; were one, it would share the
            // viewers' cap rather than have none.
            Role::K8sAudit | Role::Viewer => 0,
            Role::Operator => 1,
            Role::Admin => 2,
        }];
        match Arc::clone(semaphore).try_acquire_owned() {
            Ok(p) => Some(p),
            Err(_) => {
                g.counters.rate_limited.fetch_add(1, Relaxed);
                let e = Error::TooManyRequests(format!(
                    "the {} role already has its {} expensive calls (queries, reports, bulk bans, replays) in progress",
                    caller.role,
                    g.expensive_limits.get(caller.role)
                ));
                return call.audited(Some(&caller), refuse(e)).await;
            }
        }
    } else {
        None
    };
    let mut request = Request::from_parts(parts, Body::from(bytes));
    request.extensions_mut().insert(caller.clone());
    let response = next.run(request).await;
    call.audited(Some(&caller), response).await
}

fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/json"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_endpoint_is_listed_once() {
        let mut seen = std::collections::HashSet::new();
        for e in ENDPOINTS {
            assert!(
                seen.insert((e.method, e.path)),
                "{} {} twice",
                e.method,
                e.path
            );
            assert!(e.path == "/healthz" || e.path == "/metrics" || e.path.starts_with("/api/v1/"));
        }
        assert_eq!(
            endpoint(&Method::POST, "/api/v1/decisions").unwrap().access,
            OPERATOR
        );
        assert!(endpoint(&Method::PUT, "/api/v1/decisions").is_none());
    }

    #[test]
    fn hosts_are_compared_without_ports() {
        assert_eq!(strip_port("localhost:9090"), "localhost");
        assert_eq!(strip_port("[::1]:9090"), "::1");
        assert_eq!(strip_port("::1"), "::1");
        assert_eq!(strip_port("warden.example"), "warden.example");
    }

    #[test]
    fn parameters_are_summarised_for_the_audit() {
        let p = params(
            Some("since=1h&ip=10.0.0.0%2F8"),
            br#"{"target":"1.2.3.4","targets":[1,2,3,4,5,6,7,8,9,10,11]}"#,
        );
        assert_eq!(p["query"]["ip"], "10.0.0.0/8");
        assert_eq!(p["body"]["target"], "1.2.3.4");
        assert_eq!(p["body"]["targets"], "[11 items]");
        let long = format!(r#"{{"rules_toml":"{}"}}"#, "x".repeat(5000));
        let p = params(None, long.as_bytes());
        assert!(
            p["body"]["rules_toml"]
                .as_str()
                .unwrap()
                .ends_with("(5000 bytes)")
        );
        assert_eq!(percent_decode("a%2"), "a%2");
        assert_eq!(percent_decode("%41%zz"), "A%zz");
    }
}
