//! `GET /healthz` and `GET /metrics` (Prometheus text).

use super::AppState;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};

/// Liveness: `ok`, with a warning when a listener is insecure.
#[utoipa::path(
    get,
    path = "/healthz",
    operation_id = "health",
    tag = "operations",
    security(()),
    responses((status = 200, description = "The collector is serving", body = String, content_type = "text/plain"))
)]
pub(super) async fn health(State(s): State<AppState>) -> String {
    s.health.clone()
}

/// Counters and gauges in the Prometheus text format.
#[utoipa::path(
    get,
    path = "/metrics",
    operation_id = "metrics",
    tag = "operations",
    security((), ("bearer" = [])),
    responses(
        (status = 200, description = "Prometheus text exposition format 0.0.4", body = String, content_type = "text/plain; version=0.0.4"),
        super::Refusals,
    )
)]
pub(super) async fn metrics(State(s): State<AppState>) -> Response {
    let mut text = s.metrics.render();
    // Totals only: a label per filter instance would grow Prometheus' series without bound.
    text.push_str(&format!(
        "# HELP warden_filter_sequence_gaps Sequence numbers below each filter's highest neither stored, refused nor reported dropped (in flight, or lost uncounted).\n# TYPE warden_filter_sequence_gaps gauge\nwarden_filter_sequence_gaps {}\n",
        s.ledger.total_gaps()
    ));
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}
