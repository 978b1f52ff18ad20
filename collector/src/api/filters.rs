//! `GET /api/v1/filters`: the filters connected for deny-list push and the accounting of every
//! filter instance since the collector started.

use super::AppState;
use super::model::FiltersResponse;
use axum::Json;
use axum::extract::State;

/// Connected filters, what each was sent and acknowledged, and what each instance sent, stored
/// and dropped.
#[utoipa::path(
    get,
    path = "/api/v1/filters",
    operation_id = "filters.list",
    tag = "filters",
    responses(
        (status = 200, description = "The connected filters and the accounting", body = FiltersResponse),
        super::Refusals,
    )
)]
pub(super) async fn filters(State(s): State<AppState>) -> Json<FiltersResponse> {
    Json(FiltersResponse {
        version: s.decisions.version(),
        filters: s.registry.list(),
        accounting: s.ledger.rows(),
    })
}
