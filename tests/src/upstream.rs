//! The demo upstream: a small real HTTP server that Envoy routes to in the demo and in the
//! end-to-end tests.
//!
//! - `GET /anything...` echoes the request (method, path, query, non-secret headers) as JSON.
//! - `/status/{code}` answers with that status code.
//! - `/login` answers 401 unless the request carries the demo basic credentials `demo:demo`.
//! - `/authz/...` is an ext_authz HTTP authorizer for `envoy/auth.yaml.tmpl`: 200 with the
//!   identity in `x-auth-user` when `x-demo-user` names anyone but `mallory`, else 403.
//! - every other path answers 200 with a short text body.

use axum::{
    Json, Router,
    body::Body,
    extract::{Path, Request},
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Response},
    routing::any,
};
use serde_json::json;
use std::net::SocketAddr;
use tokio::net::TcpListener;

/// Header names the echo never reflects back, so that secrets never leave the request.
const SECRET_HEADERS: [&str; 4] = [
    "authorization",
    "cookie",
    "proxy-authorization",
    "x-api-key",
];

/// `Authorization` value of the demo's only valid credentials, `demo:demo`.
const DEMO_BASIC_CREDENTIALS: &str = "Basic ZGVtbzpkZW1v";

/// Builds the upstream's routes.
pub fn router() -> Router {
    Router::new()
        .route("/status/{code}", any(status))
        .route("/login", any(login))
        .route("/authz/{*rest}", any(authorize))
        .route("/anything", any(echo))
        .route("/anything/{*rest}", any(echo))
        .fallback(any(hello))
}

/// Serves the upstream on an already bound listener until the task is dropped.
pub async fn serve(listener: TcpListener) -> std::io::Result<()> {
    axum::serve(listener, router()).await
}

/// Binds `addr` (port 0 for an ephemeral port), starts serving in the background and returns the
/// bound address.
pub async fn spawn(addr: SocketAddr) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    tokio::spawn(async move {
        if let Err(error) = serve(listener).await {
            eprintln!("demo upstream stopped: {error}");
        }
    });
    Ok(bound)
}

async fn status(Path(code): Path<u16>) -> Response {
    match StatusCode::from_u16(code) {
        Ok(status) => (status, format!("status {code}\n")).into_response(),
        Err(_) => (
            StatusCode::BAD_REQUEST,
            format!("{code} is not an HTTP status\n"),
        )
            .into_response(),
    }
}

async fn login(headers: HeaderMap) -> Response {
    let authorized = headers
        .get(header::AUTHORIZATION)
        .is_some_and(|value| value.as_bytes() == DEMO_BASIC_CREDENTIALS.as_bytes());
    if authorized {
        (StatusCode::OK, "welcome, demo\n").into_response()
    } else {
        Response::builder()
            .status(StatusCode::UNAUTHORIZED)
            .header(header::WWW_AUTHENTICATE, "Basic realm=\"warden-demo\"")
            .body(Body::from("bad credentials\n"))
            .unwrap_or_else(|_| StatusCode::UNAUTHORIZED.into_response())
    }
}

/// The user the demo authorizer refuses.
const REFUSED_USER: &str = "mallory";

async fn authorize(headers: HeaderMap) -> Response {
    let user = headers
        .get("x-demo-user")
        .and_then(|v| v.to_str().ok())
        .filter(|u| !u.is_empty() && *u != REFUSED_USER);
    match user {
        Some(user) => Response::builder()
            .status(StatusCode::OK)
            .header("x-auth-user", user)
            .body(Body::empty())
            .unwrap_or_else(|_| StatusCode::OK.into_response()),
        None => (StatusCode::FORBIDDEN, "not authorized\n").into_response(),
    }
}

async fn echo(request: Request) -> Json<serde_json::Value> {
    let headers: serde_json::Map<String, serde_json::Value> = request
        .headers()
        .iter()
        .filter(|(name, _)| !SECRET_HEADERS.contains(&name.as_str()))
        .map(|(name, value)| {
            (
                name.to_string(),
                json!(String::from_utf8_lossy(value.as_bytes())),
            )
        })
        .collect();
    Json(json!({
        "method": request.method().as_str(),
        "path": request.uri().path(),
        "query": request.uri().query(),
        "headers": headers,
    }))
}

async fn hello() -> &'static str {
    "hello from the warden demo upstream\n"
}
